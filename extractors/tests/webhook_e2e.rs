//! The `webhook` extractor through the binary, with a disk buffer, against the stateful fake
//! CDF: a sender's mistakes get the right answers (401, 404, 405, 400 with the position, 413,
//! 422), and 500 records POSTed while CDF answers 503 get `200` once they are on disk, survive
//! a SIGKILL, and all arrive, once, after a restart with CDF up.

use std::path::Path;
use std::time::{Duration, Instant};

mod util;

#[path = "../../runtime/tests/support/fake_cdf.rs"]
mod fake_cdf;

use fake_cdf::FakeCdf;

fn config(dir: &Path, cdf: &FakeCdf, port: u16) -> std::path::PathBuf {
    util::write_config(
        dir,
        &format!(
            "{header}  connection: {{max-retries: 1, max-retry-backoff: 1s}}
upload-queue:
  max-upload-interval: 1s
  buffer: {{type: disk, path: '{buffer}'}}
shutdown-grace: 5s
tasks:
  - name: hooks
    type: webhook
    schedule: {{type: continuous}}
    config:
      listen: 127.0.0.1:{port}
      path: /records
      token: ${{HOOK_TOKEN}}
      max-body-size: 64KiB
      destination: {{type: raw, database: saas, table: events, key: '{{id}}'}}
",
            header = util::cognite_header(&cdf.uri()),
            buffer = dir.join("buffer").display(),
        ),
    )
}

/// POSTs `body` to the listener: status and body.
async fn post(port: u16, path: &str, token: Option<&str>, body: String) -> (u16, String) {
    let mut req = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}{path}"))
        .body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn wait_listening(port: u16) {
    let started = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(started.elapsed() < Duration::from_secs(20), "not listening");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ndjson(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| format!("{{\"id\": \"e-{i}\", \"kind\": \"order\", \"n\": {i}}}\n"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_answered_200_while_cdf_is_down_survive_a_kill() {
    let cdf = FakeCdf::start(&[]).await;
    cdf.with(|c| c.down = true);
    let dir = tempfile::tempdir().unwrap();
    let port = util::free_port();
    let config = config(dir.path(), &cdf, port);
    let mut child = util::spawn_run(&config, &[("HOOK_TOKEN", "hook-secret")]);
    wait_listening(port).await;
    let token = Some("hook-secret");

    // What a sender gets wrong.
    let (status, _) = post(port, "/records", None, ndjson(0, 1)).await;
    assert_eq!(status, 401);
    let (status, _) = post(port, "/records", Some("hook-secreT"), ndjson(0, 1)).await;
    assert_eq!(status, 401);
    let (status, _) = post(port, "/other", token, ndjson(0, 1)).await;
    assert_eq!(status, 404);
    let (status, body) = post(
        port,
        "/records",
        token,
        "{\"id\": \"a\"}\n{\"id\": }\n".into(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(body.contains("line 2, column 8"), "{body}");
    let (status, _) = post(port, "/records", token, ndjson(0, 2000)).await;
    assert_eq!(status, 413);
    let (status, body) = post(
        port,
        "/records",
        token,
        "[{\"id\": \"a\"}, {\"no\": 1}]".into(),
    )
    .await;
    assert_eq!(status, 422);
    assert!(body.contains("record 2"), "{body}");
    let get = reqwest::get(format!("http://127.0.0.1:{port}/records"))
        .await
        .unwrap();
    assert_eq!(get.status().as_u16(), 405);

    // 500 records, 100 a request, while CDF is down: each request is answered once on disk.
    for i in 0..5 {
        let (status, body) = post(port, "/records", token, ndjson(i * 100, 100)).await;
        assert_eq!((status, body.as_str()), (200, "{\"accepted\":100}"));
    }
    child.kill(); // SIGKILL, by PID
    assert!(cdf.with(|c| c.rows.is_empty()), "CDF was down");

    cdf.with(|c| c.down = false);
    let mut child = util::spawn_run(&config, &[("HOOK_TOKEN", "hook-secret")]);
    let started = Instant::now();
    while cdf.with(|c| c.rows.len()) < 500 && started.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill();
    cdf.with(|c| {
        assert_eq!(c.rows.len(), 500, "every record answered 200 arrived");
        assert!(
            c.rows.keys().all(|k| k.starts_with("e-")),
            "none of the refused ones"
        );
        assert_eq!(c.rows.values().sum::<usize>(), 500, "each once");
    });
}
