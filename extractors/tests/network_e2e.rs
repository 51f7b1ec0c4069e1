//! `cognite.connection.{ca-file, proxy, no-proxy}` and `HTTPS_PROXY`, through the built binary,
//! a real forward proxy (Debian's tinyproxy) and TLS servers whose certificate a private CA
//! signed: the identity provider, CDF, the http extractor's source and the Pushgateway.
//!
//! Where tinyproxy is missing the tests say that they skipped; with `CI=true` they fail instead
//! (`.ci/run` installs it).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

mod util;

use util::tls::{TestCa, test_ca, tls_front};
use util::{bin, run};

/// A tinyproxy on 127.0.0.1, stopped by its PID when dropped.
struct Tinyproxy {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Tinyproxy {
    /// Starts tinyproxy in the foreground; `None` (after saying why) where it is not installed.
    fn start(dir: &Path) -> Option<Tinyproxy> {
        if !util::available(
            Command::new("tinyproxy").arg("-v").output().is_ok(),
            "tinyproxy",
            "apt-get install tinyproxy",
        ) {
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = dir.join("tinyproxy.log");
        let conf = dir.join("tinyproxy.conf");
        // No ConnectPort line: CONNECT is allowed to any port (the TLS servers' are random).
        std::fs::write(
            &conf,
            format!(
                "Port {port}\nListen 127.0.0.1\nTimeout 30\nLogLevel Connect\nLogFile \"{}\"\nMaxClients 50\nAllow 127.0.0.1\n",
                log.display()
            ),
        )
        .unwrap();
        let child = Command::new("tinyproxy")
            .arg("-d")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let proxy = Tinyproxy { child, port, log };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "tinyproxy did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(proxy)
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The `host:port`s it was asked to CONNECT to.
    fn connects(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once("CONNECT 127.0.0.1:"))
            .filter_map(|(_, rest)| rest.split_whitespace().next())
            .map(|port| format!("127.0.0.1:{port}"))
            .collect()
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// One plain server behind four TLS fronts: the IdP, CDF, the http source, the Pushgateway.
struct Peers {
    server: MockServer,
    ca: TestCa,
    idp: SocketAddr,
    cdf: SocketAddr,
    source: SocketAddr,
    push: SocketAddr,
}

async fn peers() -> Peers {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"access_token": "tok-behind-proxy", "token_type": "Bearer", "expires_in": 3600}),
        ))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/source"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!([{"id": "a", "v": 1}, {"id": "b", "v": 2}])),
        )
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/v1/projects/demo/raw/dbs/d/tables/t/rows"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path("/metrics/job/proxied"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let ca = test_ca();
    let target = *server.address();
    Peers {
        idp: tls_front(target, ca.server.clone()).await,
        cdf: tls_front(target, ca.server.clone()).await,
        source: tls_front(target, ca.server.clone()).await,
        push: tls_front(target, ca.server.clone()).await,
        server,
        ca,
    }
}

impl Peers {
    /// Requests the plain server received, by path.
    async fn received(&self, p: &str) -> usize {
        self.server
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .filter(|r| r.url.path() == p)
            .count()
    }

    /// A config whose every peer is one of the TLS fronts, with `connection` as given.
    fn config(&self, dir: &Path, connection: &str) -> PathBuf {
        let text = format!(
            "version: 1
cognite:
  project: demo
  host: https://{cdf}
  idp-authentication:
    client-id: me
    secret: s3cret-behind-proxy
    token-url: https://{idp}/token
    scopes: [https://{cdf}/.default]
  connection: {connection}
metrics:
  push-gateways: [{{host: 'https://{push}', job-name: proxied}}]
tasks:
  - name: api
    type: http
    schedule: {{type: interval, expression: 1h}}
    config:
      url: https://{source}/source
      retries: {{max-retries: 0}}
      destination: {{type: raw, database: d, table: t, key: id}}
",
            cdf = self.cdf,
            idp = self.idp,
            push = self.push,
            source = self.source,
        );
        util::write_config(dir, &text)
    }

    fn ca_file(&self, dir: &Path) -> PathBuf {
        let path = dir.join("corp-ca.pem");
        std::fs::write(&path, &self.ca.ca_pem).unwrap();
        path
    }
}

async fn run_bin(mut cmd: Command) -> (i32, String, String) {
    tokio::task::spawn_blocking(move || run(&mut cmd))
        .await
        .unwrap()
}

/// `run --once` with `ca-file` and `proxy`: the token request, the http source, the RAW rows
/// and the last Pushgateway push all go through the proxy (one CONNECT to each TLS peer) and
/// trust the private CA; the secret and the token never reach the output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_connection_goes_through_the_proxy_and_trusts_the_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let Some(proxy) = Tinyproxy::start(dir.path()) else {
        return;
    };
    let peers = peers().await;
    let ca = peers.ca_file(dir.path());
    let config = peers.config(
        dir.path(),
        &format!("{{ca-file: '{}', proxy: '{}'}}", ca.display(), proxy.url()),
    );
    let mut cmd = bin();
    cmd.args(["run", "--once", "-c"]).arg(&config);
    let (code, stdout, stderr) = run_bin(cmd).await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    for shown in [&stdout, &stderr] {
        assert!(!shown.contains("s3cret-behind-proxy") && !shown.contains("tok-behind-proxy"));
    }
    assert_eq!(peers.received("/token").await, 1);
    assert_eq!(peers.received("/source").await, 1);
    assert_eq!(
        peers
            .received("/api/v1/projects/demo/raw/dbs/d/tables/t/rows")
            .await,
        1
    );
    assert!(peers.received("/metrics/job/proxied").await >= 1);
    let connects = proxy.connects();
    for (who, addr) in [
        ("the identity provider", peers.idp),
        ("CDF", peers.cdf),
        ("the http source", peers.source),
        ("the Pushgateway", peers.push),
    ] {
        assert!(
            connects.contains(&addr.to_string()),
            "{who} ({addr}) was reached without the proxy: {connects:?}"
        );
    }
}

/// Without `ca-file` the private CA's certificate is refused, naming the certificate problem;
/// nothing reaches the identity provider's handler.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_ca_file_the_private_ca_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let Some(proxy) = Tinyproxy::start(dir.path()) else {
        return;
    };
    let peers = peers().await;
    let config = peers.config(dir.path(), &format!("{{proxy: '{}'}}", proxy.url()));
    let mut cmd = bin();
    cmd.args(["token", "-c"]).arg(&config);
    let (code, stdout, stderr) = run_bin(cmd).await;
    assert_ne!(code, 0, "{stdout}");
    assert!(
        stderr.contains("invalid peer certificate: UnknownIssuer")
            && stderr.contains("set cognite.connection.ca-file to its CA certificate"),
        "{stderr}"
    );
    assert_eq!(peers.received("/token").await, 0);
    assert!(
        proxy.connects().contains(&peers.idp.to_string()),
        "the proxy was not used: {:?}",
        proxy.connects()
    );
}

/// `HTTPS_PROXY` from the environment is honoured when the config names no proxy, and
/// `NO_PROXY` bypasses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_proxy_and_no_proxy_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let Some(proxy) = Tinyproxy::start(dir.path()) else {
        return;
    };
    let peers = peers().await;
    let ca = peers.ca_file(dir.path());
    let config = peers.config(dir.path(), &format!("{{ca-file: '{}'}}", ca.display()));

    let mut cmd = bin();
    cmd.args(["token", "-c"])
        .arg(&config)
        .env("HTTPS_PROXY", proxy.url());
    let (code, stdout, stderr) = run_bin(cmd).await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(!stdout.contains("tok-behind-proxy"), "{stdout}");
    assert_eq!(proxy.connects(), vec![peers.idp.to_string()]);

    let mut cmd = bin();
    cmd.args(["token", "-c"])
        .arg(&config)
        .env("HTTPS_PROXY", proxy.url())
        .env("NO_PROXY", "127.0.0.1");
    let (code, stdout, stderr) = run_bin(cmd).await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert_eq!(peers.received("/token").await, 2);
    assert_eq!(
        proxy.connects().len(),
        1,
        "NO_PROXY=127.0.0.1 still used the proxy"
    );

    let mut cmd = bin();
    cmd.args(["check-config", "-c"])
        .arg(&config)
        .env("HTTPS_PROXY", "http://ops:pr0xy-pw@127.0.0.1:9");
    let (code, stdout, _) = run_bin(cmd).await;
    assert_eq!(code, 0);
    assert!(
        stdout.contains("network:  TLS roots: system roots + 1 certificate(s) from")
            && stdout.contains("proxy: http://ops:***@127.0.0.1:9 (from the environment)")
            && !stdout.contains("pr0xy-pw"),
        "{stdout}"
    );
}
