//! Helpers shared by the binary's integration tests.
#![allow(dead_code)] // each test binary uses a subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub mod ha;
pub mod kube;
pub mod mqtt;
pub mod tls;

#[path = "../../../runtime/tests/support/openssl.rs"]
mod openssl;

/// The built `extractor-runtime`, with `COGNITE_API_KEY`, `RUST_LOG` and the proxy variables
/// removed (tests talk to 127.0.0.1 directly unless they set a proxy themselves).
pub fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_extractor-runtime"));
    cmd.env_remove("COGNITE_API_KEY").env_remove("RUST_LOG");
    for var in ["HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY"] {
        cmd.env_remove(var).env_remove(var.to_ascii_lowercase());
    }
    cmd
}

/// The build a bench measures: `BENCH_BINARY` (another build, such as an older one, to measure
/// beside this one) or this one ([`bin`]).
pub fn measured_bin() -> Command {
    match std::env::var_os("BENCH_BINARY") {
        Some(path) => {
            let mut cmd = Command::new(path);
            cmd.env_remove("COGNITE_API_KEY").env_remove("RUST_LOG");
            cmd
        }
        None => bin(),
    }
}

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs `cmd`: exit code, stdout, stderr.
pub fn run(cmd: &mut Command) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("binary runs");
    (
        status.code().expect("exited, not killed"),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

/// Writes `config.yaml` in `dir`.
pub fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("config.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Whether a test peer (`what`) is here. Where it is not, the test should return: this says
/// that it skipped and how to get it (`install`); with `CI=true` it fails instead, since
/// `.ci/run` installs every peer.
pub fn available(present: bool, what: &str, install: &str) -> bool {
    if !present {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "CI=true but {what} is missing (.ci/run installs it)"
        );
        eprintln!("skipped: {what} not found ({install})");
    }
    present
}

/// Writes `cert` then `key` into `pem`: one file, as `certificate.path` takes it.
fn pem_of(cert: &Path, key: &Path, pem: &Path) {
    let both = std::fs::read_to_string(cert).unwrap() + &std::fs::read_to_string(key).unwrap();
    std::fs::write(pem, both).unwrap();
}

/// A self-signed certificate and its RSA key in one PEM file, made by the `openssl` command
/// (as an operator makes one); `None`, after saying why, where openssl is missing (CI fails).
pub fn openssl_client_pem(dir: &Path, name: &str) -> Option<PathBuf> {
    if !openssl::available() {
        return None;
    }
    let (key, cert) = (format!("{name}.key"), format!("{name}.crt"));
    openssl::self_signed(dir, &key, &cert);
    let pem = dir.join(format!("{name}.pem"));
    pem_of(&dir.join(&cert), &dir.join(&key), &pem);
    Some(pem)
}

/// A self-signed certificate valid only through 2020 (expired), and its RSA key, in one PEM
/// file, made by `openssl ca` with explicit dates (OpenSSL 3.0's `req` cannot back-date).
pub fn openssl_expired_pem(dir: &Path) -> Option<PathBuf> {
    if !openssl::available() {
        return None;
    }
    let ca = dir.join("expired-ca");
    std::fs::create_dir_all(&ca).unwrap();
    std::fs::write(ca.join("index.txt"), "").unwrap();
    std::fs::write(ca.join("serial"), "01\n").unwrap();
    std::fs::write(
        ca.join("ca.cnf"),
        "[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\nserial = serial\nnew_certs_dir = .\ndefault_md = sha256\npolicy = p\n[p]\ncommonName = supplied\n",
    )
    .unwrap();
    openssl::run(
        &ca,
        &[
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=expired",
            "-keyout",
            "key.pem",
            "-out",
            "req.csr",
        ],
    );
    openssl::run(
        &ca,
        &[
            "ca",
            "-batch",
            "-notext",
            "-config",
            "ca.cnf",
            "-selfsign",
            "-keyfile",
            "key.pem",
            "-in",
            "req.csr",
            "-startdate",
            "20200101000000Z",
            "-enddate",
            "20210101000000Z",
            "-out",
            "cert.pem",
        ],
    );
    let pem = dir.join("expired.pem");
    pem_of(&ca.join("cert.pem"), &ca.join("key.pem"), &pem);
    Some(pem)
}

/// A child process killed (SIGKILL, by PID) and reaped when dropped: a test that fails part
/// way leaves nothing running.
pub struct Running(pub std::process::Child);

impl Running {
    /// SIGKILL now, by PID, and reap it.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A loopback port nobody listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `run -c config` as a service with `envs`, its output dropped; killed when dropped.
pub fn spawn_run(config: &Path, envs: &[(&str, &str)]) -> Running {
    Running(
        bin()
            .args(["run", "-c"])
            .arg(config)
            .envs(envs.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// The config's first lines: `version: 1` and a `cognite:` block for the fake CDF at `uri`
/// (its token endpoint too).
pub fn cognite_header(uri: &str) -> String {
    format!(
        "version: 1
cognite:
  project: demo
  host: {uri}
  idp-authentication: {{client-id: c, secret: s, token-url: '{uri}/token', scopes: [s]}}
"
    )
}

/// A process's resident memory now (`VmRSS`), in KiB; 0 once it is gone.
pub fn rss_kib(pid: u32) -> u64 {
    memory_kib(pid, "VmRSS")
}

/// A `/proc/<pid>/status` figure in KiB (`VmRSS`: now, `VmHWM`: the peak); 0 once it is gone.
pub fn memory_kib(pid: u32, field: &str) -> u64 {
    memory_kib_in(pid, "status", field)
}

/// A figure in KiB from `/proc/<pid>/<file>` (`status`, or `smaps_rollup` for `Pss`); 0 once
/// it is gone.
pub fn memory_kib_in(pid: u32, file: &str, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Waits until `ready` says so, polling every 50 ms; fails after `secs` naming `what`.
pub async fn wait_for(what: &str, secs: u64, mut ready: impl AsyncFnMut() -> bool) {
    let started = std::time::Instant::now();
    while !ready().await {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(secs),
            "waited {secs} s for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A GET of `url` (a test peer: no proxy, 2 s at most): status and body; `None` while it does
/// not answer.
pub async fn get(url: &str) -> Option<(u16, String)> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(std::time::Duration::from_secs(2))
        .build()
        .unwrap();
    let answer = client.get(url).send().await.ok()?;
    let status = answer.status().as_u16();
    Some((status, answer.text().await.ok()?))
}

/// The sample `name{labels}` from the metrics server at `address` (`host:port`); `None` while
/// it does not answer or has no such sample.
pub async fn metric(address: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let (_, text) = get(&format!("http://{address}/metrics")).await?;
    extractor_runtime::metrics::sample(&text, name, labels)
}

/// The sample `name{queue="raw"}` from the metrics server on `port`.
pub async fn raw_queue_metric(port: u16, name: &str) -> Option<f64> {
    metric(&format!("127.0.0.1:{port}"), name, &[("queue", "raw")]).await
}

// Also loaded by the runtime's test support, which some test binaries include beside this.
#[allow(clippy::duplicate_mod)]
#[path = "../../../runtime/tests/support/body.rs"]
mod body;
#[allow(unused_imports)] // each test binary uses a subset
pub use body::{body_of, json_body};
