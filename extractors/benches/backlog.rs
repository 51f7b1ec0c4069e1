//! A disk buffer's backlog, through the built binary: webhook records (1 KB each) are POSTed
//! while the fake CDF answers 503 until the buffer holds the backlog; the process is killed
//! (SIGKILL) and restarted with CDF up, and the clock and the extractor's RSS run until every
//! record is in CDF. Run with two backlog sizes to see whether memory follows the backlog.
//!
//! Run: `cargo bench -p extractors --bench backlog` (BENCH_BACKLOG_MIB, default `256,1024`).

use std::path::Path;
use std::time::{Duration, Instant};

#[path = "../../runtime/tests/support/fake_cdf.rs"]
mod fake_cdf;
#[path = "../tests/util/mod.rs"]
mod util;

use util::free_port;

const RECORDS_PER_POST: usize = 1000;

async fn one(dir: &Path, mib: usize) {
    let cdf = fake_cdf::FakeCdf::start(&[]).await;
    cdf.with(|c| c.down = true);
    let hook = free_port();
    let buffer = dir.join(format!("buffer-{mib}"));
    let config = dir.join(format!("backlog-{mib}.yaml"));
    std::fs::write(
        &config,
        format!(
            "{header}  connection: {{max-retries: 0}}
logger: {{console: {{level: error}}}}
upload-queue: {{max-upload-interval: 1s, buffer: {{type: disk, path: '{buffer}', max-size: 4GiB}}}}
tasks:
  - name: hooks
    type: webhook
    schedule: {{type: continuous}}
    config:
      listen: 127.0.0.1:{hook}
      max-body-size: 64MiB
      destination: {{type: raw, database: saas, table: events, key: '{{id}}'}}
",
            header = util::cognite_header(&cdf.uri()),
            buffer = buffer.display(),
        ),
    )
    .unwrap();
    let spawn = || util::spawn_run(&config, &[]);
    let child = spawn();
    let pad = "x".repeat(1000);
    let posts = mib * 1024 * 1024 / (RECORDS_PER_POST * 1024);
    let records = posts * RECORDS_PER_POST;
    let client = reqwest::Client::new();
    let started = Instant::now();
    // Four senders at once.
    let mut senders = Vec::new();
    for s in 0..4 {
        let (client, pad) = (client.clone(), pad.clone());
        senders.push(tokio::spawn(async move {
            for p in (s..posts).step_by(4) {
                let body: String = (p * RECORDS_PER_POST..(p + 1) * RECORDS_PER_POST)
                    .map(|i| format!("{{\"id\": \"r-{i}\", \"pad\": \"{pad}\"}}\n"))
                    .collect();
                loop {
                    match client
                        .post(format!("http://127.0.0.1:{hook}/"))
                        .body(body.clone())
                        .send()
                        .await
                    {
                        Ok(r) if r.status().is_success() => break,
                        Ok(r) => panic!("POST answered {}", r.status()),
                        Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
            }
        }));
    }
    for s in senders {
        s.await.unwrap();
    }
    let filled = started.elapsed();
    let on_disk: u64 = std::fs::read_dir(buffer.join("raw"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    let filling_rss = util::rss_kib(child.0.id());
    drop(child); // SIGKILL with the backlog on disk

    cdf.with(|c| c.down = false);
    let started = Instant::now();
    let child = spawn();
    let mut peak = 0;
    while cdf.with(|c| c.rows.len()) < records {
        peak = peak.max(util::rss_kib(child.0.id()));
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "{} of {records} arrived in 600 s",
            cdf.with(|c| c.rows.len())
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let drained = started.elapsed();
    println!(
        "backlog bench: {records} records ({:.0} MiB on disk) buffered in {:.1} s ({:.0} records/s, {:.0} MiB/s; RSS then {filling_rss} KiB); after a SIGKILL and a restart with CDF up, all in CDF in {:.1} s ({:.0} records/s), peak RSS {peak} KiB",
        on_disk as f64 / 1048576.0,
        filled.as_secs_f64(),
        records as f64 / filled.as_secs_f64(),
        on_disk as f64 / 1048576.0 / filled.as_secs_f64(),
        drained.as_secs_f64(),
        records as f64 / drained.as_secs_f64(),
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let sizes: Vec<usize> = std::env::var("BENCH_BACKLOG_MIB")
        .unwrap_or_else(|_| "256,1024".to_owned())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    for mib in sizes {
        let dir = tempfile::tempdir().unwrap();
        one(dir.path(), mib).await;
    }
}
