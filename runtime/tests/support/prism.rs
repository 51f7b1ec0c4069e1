//! Test peers from `../shared`: finding them, processes stopped by PID, the OAuth2 token server,
//! and Prism serving Cognite's own OpenAPI spec (derived with `--strict --fix-oneof --uniform-422`), its canary
//! passed. A standalone file: the runtime's tests use it through `support`, the built-ins'
//! tests `#[path]`-include it.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `../shared` (or `$EXTRACTOR_SHARED_DIR`) and the npm packages installed from it
/// (`$TOKEN_SERVER_NODE_MODULES`), when both hold `needed` (paths relative to each). Where they
/// are missing the test should return: this prints that it skipped; with `CI=true` it panics.
pub fn shared_peers(needed_in_shared: &str, needed_in_modules: &str) -> Option<(PathBuf, PathBuf)> {
    let shared = std::env::var_os("EXTRACTOR_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
    let modules = std::env::var_os("TOKEN_SERVER_NODE_MODULES").map(PathBuf::from);
    match modules {
        Some(m) if shared.join(needed_in_shared).exists() && m.join(needed_in_modules).exists() => {
            Some((shared, m))
        }
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => panic!(
            "CI=true but {} or $TOKEN_SERVER_NODE_MODULES/{needed_in_modules} is missing",
            shared.join(needed_in_shared).display()
        ),
        _ => {
            eprintln!(
                "skipped: needs {} and TOKEN_SERVER_NODE_MODULES with {needed_in_modules} (run `bash .ci/run`, which installs them)",
                shared.join(needed_in_shared).display()
            );
            None
        }
    }
}

/// A child process, killed and reaped by its PID when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `../shared/tools/token-server.mjs` (oauth2-mock-server) on 127.0.0.1 with `args` (client id,
/// secret, scope, expiry): its process and port. `None` (after saying why) where `../shared` or
/// the npm packages are missing.
pub fn token_server(args: &[&str]) -> Option<(Proc, u16)> {
    let (shared, modules) = shared_peers("tools/token-server.mjs", "oauth2-mock-server")?;
    let dir = tempfile::tempdir().unwrap();
    let port_file = dir.path().join("port");
    let server = Proc(
        Command::new("node")
            .arg(shared.join("tools/token-server.mjs"))
            .arg("--node-modules")
            .arg(&modules)
            .args(["--port", "0"])
            .args(args)
            .arg("--port-file")
            .arg(&port_file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("node runs"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(port) = std::fs::read_to_string(&port_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            return Some((server, port));
        }
        assert!(Instant::now() < deadline, "the token server wrote no port");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Prism mocking CDF on 127.0.0.1, validating every request against Cognite's spec; stopped
/// when dropped.
pub struct Prism {
    /// `http://127.0.0.1:port`: a CDF host for `CdfClient`.
    pub base: String,
    _process: Proc,
    _dir: tempfile::TempDir,
}

impl Prism {
    /// Derives the spec, starts Prism and runs the canary (a mock that accepts anything cannot
    /// pass it). `None` (after saying why) where `../shared` or the npm packages are missing.
    pub async fn start() -> Option<Prism> {
        let (shared, modules) = shared_peers("specs/cdf-api-v1.openapi.json", ".bin/prism")?;
        let tmp = tempfile::tempdir().unwrap();
        let spec = tmp.path().join("cdf.json");
        let derive = Command::new("node")
            .arg(shared.join("tools/cdf-prism-spec.mjs"))
            .arg(shared.join("specs/cdf-api-v1.openapi.json"))
            .arg(&spec)
            .args(["--strict", "--fix-oneof", "--uniform-422"])
            .output()
            .unwrap();
        assert!(
            derive.status.success(),
            "{}",
            String::from_utf8_lossy(&derive.stderr)
        );
        // One repair of Cognite's spec: a Data Modeling property value (RawPropertyValueV3) is a
        // oneOf whose "object" (any JSON object) and "direct relation" branches are both plain
        // objects, so a direct relation {space, externalId} matches two branches and no object
        // value can pass. anyOf keeps every branch's rules and accepts what CDF accepts.
        let mut derived: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&spec).unwrap()).unwrap();
        let value = &mut derived["components"]["schemas"]["RawPropertyValueV3"];
        let branches = value
            .as_object_mut()
            .and_then(|o| o.remove("oneOf"))
            .expect("RawPropertyValueV3 is a oneOf in the spec; drop this repair if it changed");
        value["anyOf"] = branches;
        std::fs::write(&spec, serde_json::to_vec(&derived).unwrap()).unwrap();

        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let process = Proc(
            Command::new(modules.join(".bin/prism"))
                .args(["mock", "-h", "127.0.0.1", "-p", &port.to_string()])
                .arg(&spec)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "Prism did not start");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }

        // The canary first: valid bodies pass, invalid ones and a missing token are refused.
        let canary = Command::new("bash")
            .arg(shared.join("tools/cdf-prism-canary.sh"))
            .args([&base, "demo"])
            .env("STRICT", "1")
            .output()
            .unwrap();
        assert!(
            canary.status.success(),
            "canary: {}",
            String::from_utf8_lossy(&canary.stdout)
        );

        Some(Prism {
            base,
            _process: process,
            _dir: tmp,
        })
    }

    /// Replays recorded requests, `(method, path and query after the project, body)`, with a
    /// token; fails naming the first one the spec refuses. Returns the paths sent, without
    /// query.
    pub async fn replay(
        &self,
        requests: &[(String, String, serde_json::Value)],
    ) -> std::collections::BTreeSet<String> {
        let client = reqwest::Client::new();
        let mut seen = std::collections::BTreeSet::new();
        for (method, path, body) in requests {
            let endpoint = path.split('?').next().unwrap().to_owned();
            let url = format!("{}/api/v1/projects/demo{path}", self.base);
            let request = match method.as_str() {
                "GET" => client.get(&url),
                _ => client.post(&url).json(body),
            };
            let answer = request.bearer_auth("t").send().await.unwrap();
            let status = answer.status().as_u16();
            let text = answer.text().await.unwrap();
            assert!(
                status < 400,
                "Prism refused {method} {path} {body}: {status} {text}"
            );
            seen.insert(endpoint);
        }
        seen
    }
}
