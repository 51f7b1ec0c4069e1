//! The one-task service of issue 29, through the built binary: a fake IdP and CDF on loopback,
//! one interval task (1 s) writing one RAW row a run. Prints the time from spawn to the first
//! row in CDF (median of several starts), then, over one longer run, RSS and PSS and the CPU
//! time per minute.
//!
//! Run: `cargo bench -p extractors --bench startup` (`BENCH_RUNS`, default 11;
//! `BENCH_SECONDS` for the long run, default 30; `BENCH_BINARY` to measure another build, such
//! as an older one, beside this one).

use std::path::Path;
use std::time::{Duration, Instant};

#[path = "../../runtime/tests/support/fake_cdf.rs"]
mod fake_cdf;
#[path = "../tests/util/mod.rs"]
mod util;

/// `run -c path` of the measured build, its output dropped; killed when dropped.
fn spawn(path: &Path) -> util::Running {
    let child = util::measured_bin()
        .args(["run", "-c"])
        .arg(path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    util::Running(child)
}

fn config(dir: &Path, uri: &str) -> std::path::PathBuf {
    let text = format!(
        "{}logger: {{console: {{level: error}}}}
tasks:
  - name: beat
    type: command
    schedule: {{type: interval, expression: 1s}}
    config:
      command: [sh, -c, 'echo {{\\\"k\\\": \\\"$(date +%s%N)\\\"}}']
      records: ndjson
      destination: {{type: raw, database: d, table: t, key: '{{k}}'}}
",
        util::cognite_header(uri)
    );
    let path = dir.join("startup.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(11);
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let dir = tempfile::tempdir().unwrap();
    let mut firsts = Vec::new();
    for _ in 0..runs {
        let cdf = fake_cdf::FakeCdf::start(&[]).await;
        let path = config(dir.path(), &cdf.uri());
        let spawned = Instant::now();
        let mut child = spawn(&path);
        while cdf.with(|s| s.rows.is_empty()) {
            assert!(
                spawned.elapsed() < Duration::from_secs(20),
                "no row within 20 s"
            );
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        firsts.push(spawned.elapsed().as_secs_f64() * 1000.0);
        child.kill();
    }
    let min = firsts.iter().copied().fold(f64::MAX, f64::min);
    let max = firsts.iter().copied().fold(0.0, f64::max);
    println!(
        "spawn to first RAW row: median {:.1} ms (min {min:.1}, max {max:.1}, {runs} starts)",
        median(firsts.clone())
    );

    let cdf = fake_cdf::FakeCdf::start(&[]).await;
    let path = config(dir.path(), &cdf.uri());
    let mut child = spawn(&path);
    let pid = child.0.id();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cpu_start = extractor_runtime::testing::cpu_seconds(pid);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let cpu = extractor_runtime::testing::cpu_seconds(pid) - cpu_start;
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "after {seconds} s: RSS {:.1} MiB (peak {:.1} MiB), PSS {:.1} MiB, CPU {:.3} s per minute, {} rows",
        util::rss_kib(pid) as f64 / 1024.0,
        util::memory_kib(pid, "VmHWM") as f64 / 1024.0,
        util::memory_kib_in(pid, "smaps_rollup", "Pss") as f64 / 1024.0,
        cpu * 60.0 / elapsed,
        cdf.with(|s| s.rows.len())
    );
    child.kill();
}
