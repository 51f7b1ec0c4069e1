//! The one-task service of issue 29, through the built binary: a fake IdP and CDF on loopback,
//! one interval task (1 s) writing one RAW row a run. Prints, for each variant, the time from
//! spawn to the first row in CDF (median of several starts), then, over one longer run, RSS and
//! PSS and the CPU time per minute. Variants: `http` (a `command` task, the IdP and CDF over
//! plain HTTP) and `tls` (an `http` task reading a source over TLS, the IdP and CDF over TLS,
//! all three trusting a private CA through `cognite.connection.ca-file`: three clients, one
//! TLS config).
//!
//! Run: `cargo bench -p extractors --bench startup` (`BENCH_RUNS`, default 11;
//! `BENCH_SECONDS` for the long run, default 30; `BENCH_VARIANT`, `http` or `tls`, for one;
//! `BENCH_BINARY` to measure another build, such as an older one, beside this one).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use wiremock::matchers::{method, path};
use wiremock::{Mock, Request, ResponseTemplate};

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

/// A fake CDF (and IdP) and the config of the one task, as `variant` says.
struct Setup {
    cdf: fake_cdf::FakeCdf,
    config: PathBuf,
}

async fn setup(dir: &Path, variant: &str) -> Setup {
    let cdf = fake_cdf::FakeCdf::start(&[]).await;
    let text = if variant == "tls" {
        // Each GET of the source answers a new key, so every run writes a new row.
        let n = Arc::new(AtomicU64::new(0));
        Mock::given(method("GET"))
            .and(path("/source"))
            .respond_with(move |_: &Request| {
                let k = n.fetch_add(1, Ordering::SeqCst);
                ResponseTemplate::new(200).set_body_json(serde_json::json!([{ "k": k }]))
            })
            .mount(&cdf.server)
            .await;
        let ca = util::tls::test_ca();
        let target = *cdf.server.address();
        let (idp, host, source) = (
            util::tls::tls_front(target, ca.server.clone()).await,
            util::tls::tls_front(target, ca.server.clone()).await,
            util::tls::tls_front(target, ca.server.clone()).await,
        );
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, &ca.ca_pem).unwrap();
        format!(
            "version: 1
cognite:
  project: demo
  host: https://{host}
  idp-authentication: {{client-id: c, secret: s, token-url: 'https://{idp}/token', scopes: [s]}}
  connection: {{ca-file: '{}'}}
logger: {{console: {{level: error}}}}
tasks:
  - name: beat
    type: http
    schedule: {{type: interval, expression: 1s}}
    config:
      url: https://{source}/source
      destination: {{type: raw, database: d, table: t, key: k}}
",
            ca_file.display()
        )
    } else {
        format!(
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
            util::cognite_header(&cdf.uri())
        )
    };
    let config = dir.join(format!("startup-{variant}.yaml"));
    std::fs::write(&config, text).unwrap();
    Setup { cdf, config }
}

/// Drops the measured binary's pages from the page cache (GNU dd: `iflag=nocache count=0`
/// advises the kernel to drop the whole file); says so if it cannot.
fn evict_binary() {
    let path = std::env::var_os("BENCH_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_extractor-runtime")));
    let dropped = std::process::Command::new("dd")
        .arg(format!("if={}", path.display()))
        .args(["iflag=nocache", "count=0", "status=none"])
        .status()
        .is_ok_and(|s| s.success());
    if !dropped {
        eprintln!(
            "could not drop {} from the page cache: RSS may read high",
            path.display()
        );
    }
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
    let variants = match std::env::var("BENCH_VARIANT") {
        Ok(v) => vec![v],
        Err(_) => vec!["http".to_owned(), "tls".to_owned()],
    };
    for variant in &variants {
        measure(variant, runs, seconds).await;
    }
}

async fn measure(variant: &str, runs: usize, seconds: u64) {
    let dir = tempfile::tempdir().unwrap();
    let mut firsts = Vec::new();
    for _ in 0..runs {
        let Setup { cdf, config } = setup(dir.path(), variant).await;
        let spawned = Instant::now();
        let mut child = spawn(&config);
        while cdf.with(|s| s.rows.is_empty()) {
            assert!(
                spawned.elapsed() < Duration::from_secs(20),
                "{variant}: no row within 20 s"
            );
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        firsts.push(spawned.elapsed().as_secs_f64() * 1000.0);
        child.kill();
    }
    let min = firsts.iter().copied().fold(f64::MAX, f64::min);
    let max = firsts.iter().copied().fold(0.0, f64::max);
    println!(
        "{variant}: spawn to first RAW row: median {:.1} ms (min {min:.1}, max {max:.1}, {runs} starts)",
        median(firsts.clone())
    );

    let Setup { cdf, config } = setup(dir.path(), variant).await;
    // A cold start, as a new container's: the binary's pages out of the page cache. A binary
    // just built or copied has every page cached, and the kernel then maps the cached pages
    // around each one touched: the same build measured 0.4-0.7 MiB more RSS so.
    evict_binary();
    let mut child = spawn(&config);
    let pid = child.0.id();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cpu_start = extractor_runtime::testing::cpu_seconds(pid);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let cpu = extractor_runtime::testing::cpu_seconds(pid) - cpu_start;
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "{variant}: after {seconds} s: RSS {:.1} MiB (peak {:.1} MiB, anonymous {:.1} MiB), PSS {:.1} MiB, CPU {:.3} s per minute, {} rows",
        util::rss_kib(pid) as f64 / 1024.0,
        util::memory_kib(pid, "VmHWM") as f64 / 1024.0,
        util::memory_kib(pid, "RssAnon") as f64 / 1024.0,
        util::memory_kib_in(pid, "smaps_rollup", "Pss") as f64 / 1024.0,
        cpu * 60.0 / elapsed,
        cdf.with(|s| s.rows.len())
    );
    child.kill();
}
