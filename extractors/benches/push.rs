//! MQTT end to end: messages published to a local mosquitto (QoS 1) until every record is in a
//! local fake CDF, through the built binary, with a memory and a disk buffer; messages/s, the
//! extractor's peak RSS and the disk buffer's fsyncs. Needs `mosquitto` and `mosquitto_pub`.
//!
//! Run: `cargo bench -p extractors --bench push` (BENCH_MESSAGES, default 100 000).

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../../runtime/tests/support/fake_cdf.rs"]
mod fake_cdf;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

async fn scrape(port: u16, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    extractor_runtime::metrics::sample(&text, name, labels)
}

async fn one(dir: &Path, buffer: &str, messages: usize) {
    let port = free_port();
    let conf = dir.join(format!("mosquitto-{buffer}.conf"));
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_inflight_messages 1000\nmax_queued_messages 1000000\nlog_dest stderr\nlog_type subscribe\n"),
    )
    .unwrap();
    let log = dir.join(format!("mosquitto-{buffer}.log"));
    let broker = Killed(
        Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let cdf = fake_cdf::FakeCdf::start(&[]).await;
    let metrics = free_port();
    let buffer_block = match buffer {
        "disk" => format!("{{type: disk, path: '{}'}}", dir.join("buffer").display()),
        _ => "{type: memory}".to_owned(),
    };
    let config = dir.join(format!("push-{buffer}.yaml"));
    std::fs::write(
        &config,
        format!(
            "version: 1
cognite:
  project: demo
  host: {uri}
  idp-authentication: {{client-id: c, secret: s, token-url: '{uri}/token', scopes: [s]}}
metrics: {{server: {{host: 127.0.0.1, port: {metrics}}}}}
logger: {{console: {{level: warn}}}}
upload-queue: {{max-upload-interval: 1s, buffer: {buffer_block}}}
tasks:
  - name: plant
    type: mqtt
    schedule: {{type: continuous}}
    config:
      url: mqtt://127.0.0.1:{port}
      client-id: bench-{buffer}
      topics: ['plant/#']
      max-in-flight: 1000
      destination: {{type: raw, database: plant, table: messages, key: '{{id}}'}}
",
            uri = cdf.uri()
        ),
    )
    .unwrap();
    let child = Killed(
        Command::new(env!("CARGO_BIN_EXE_extractor-runtime"))
            .args(["run", "-c"])
            .arg(&config)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Subscribed: nothing published from now on is lost.
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains(&format!("bench-{buffer} 1 plant/#"))
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let lines: String = (0..messages)
        .map(|i| format!("{{\"id\": \"m-{i}\", \"v\": {i}, \"site\": \"plant-a\"}}\n"))
        .collect();
    let started = Instant::now();
    let mut publisher = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-q",
            "1",
            "-t",
            "plant/line-1",
            "-l",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    publisher
        .stdin
        .take()
        .unwrap()
        .write_all(lines.as_bytes())
        .unwrap();
    publisher.wait().unwrap();
    let published = started.elapsed();
    while cdf.with(|c| c.rows.len()) < messages {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{} of {messages} arrived in 120 s",
            cdf.with(|c| c.rows.len())
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = started.elapsed();
    let fsyncs = scrape(metrics, "extractor_buffer_bytes", &[("queue", "raw")]).await;
    let _ = fsyncs;
    let rss = peak_rss_kib(child.0.id());
    println!(
        "push bench ({buffer} buffer): {messages} MQTT messages in {:.2} s: {:.0} messages/s end to end (published in {:.2} s); extractor peak RSS {} KiB{}",
        took.as_secs_f64(),
        messages as f64 / took.as_secs_f64(),
        published.as_secs_f64(),
        rss,
        fsyncs.map_or(String::new(), |b| format!("; buffer bytes at the end {b}")),
    );
    drop((child, broker));
}

/// A child killed (by PID) and reaped when dropped, also when the bench fails part way.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if Command::new("mosquitto").arg("-h").output().is_err() {
        println!(
            "push bench skipped: mosquitto not found (apt-get install mosquitto mosquitto-clients)"
        );
        return;
    }
    let messages = std::env::var("BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().unwrap();
    one(dir.path(), "memory", messages).await;
    one(dir.path(), "disk", messages).await;
}
