//! Throughput that hides CDF's round trip (issue 29, item 0), through the built binary: one csv
//! file of 1 000 000 rows, sent once to datapoints and once to RAW by `run --once`, against a
//! lean fake CDF on loopback that answers every request at once, then with 50 ms added to every
//! answer (a WAN round trip). Prints items per second (spawn to exit), the requests, and the
//! delayed rate as a share of the undelayed one.
//!
//! The fake only counts what it receives (parsing each body just enough to count the items), so
//! its own CPU stays small beside the binary's; it answers over http (the delay, not TLS, is
//! what is measured here).
//!
//! Run: `cargo bench -p extractors --bench throughput` (`BENCH_RUNS`, default 3, the median is
//! printed; `BENCH_ROWS`, default 1 000 000; `BENCH_DELAY_MS`, default 50; `BENCH_CASE`,
//! `datapoints` or `raw`, for one; `BENCH_IN_FLIGHT` and `BENCH_QUEUE` set
//! `upload-queue.max-in-flight` and `max-queue-size`; `BENCH_GZIP=0` sets
//! `cognite.connection.disable-gzip`, `BENCH_PROTOBUF=1` `protobuf-datapoints`; `BENCH_BINARY` to measure another build, such as an
//! older one, beside this one; `BENCH_VERBOSE` prints every run's rate, `BENCH_TIME` each
//! run's CPU seconds and peak RSS, `BENCH_LOG` is the binary's `RUST_LOG`). Each line also
//! says how many bytes of request bodies CDF received (gzipped ones as sent).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::de::IgnoredAny;
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

#[path = "../tests/util/mod.rs"]
mod util;

/// What the lean fake received.
#[derive(Default)]
struct Counts {
    items: AtomicUsize,
    requests: AtomicUsize,
    /// Body bytes as received (gzipped ones compressed).
    bytes: AtomicUsize,
}

/// The datapoints or RAW rows a request body carries.
fn items(req: &Request, body: &[u8]) -> usize {
    if req.headers.get("content-type").map(|v| v.as_bytes()) == Some(b"application/protobuf") {
        return extractor_runtime::queues::insertion_request_points(body).expect("protobuf");
    }
    #[derive(serde::Deserialize)]
    struct Body {
        items: Vec<Item>,
    }
    #[derive(serde::Deserialize)]
    struct Item {
        datapoints: Option<Vec<IgnoredAny>>,
    }
    let body: Body = serde_json::from_slice(body).expect("a request body is JSON");
    body.items
        .iter()
        .map(|i| i.datapoints.as_ref().map_or(1, Vec::len))
        .sum()
}

/// A fake CDF that takes a token and counts the datapoints and RAW rows it receives, answering
/// each request after `delay`.
async fn fake_cdf(delay: Duration, counts: Arc<Counts>) -> MockServer {
    let server = MockServer::builder()
        .disable_request_recording()
        .start()
        .await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"access_token": "t", "expires_in": 3600})),
        )
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path_regex("^/api/v1/projects/demo/(timeseries/data|raw/)"))
        .respond_with(move |req: &Request| {
            counts.bytes.fetch_add(req.body.len(), Ordering::Relaxed);
            counts.items.fetch_add(
                items(req, &util::body_of(req).expect("a gzip body")),
                Ordering::Relaxed,
            );
            counts.requests.fetch_add(1, Ordering::Relaxed);
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({}))
                .set_delay(delay)
        })
        .mount(&server)
        .await;
    server
}

fn write_csv(dir: &Path, rows: usize) {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(dir.join("big.csv")).unwrap());
    writeln!(out, "id,time,sensor,value").unwrap();
    for i in 0..rows {
        writeln!(
            out,
            "{i},{},sensor-{},{}.{}",
            1_700_000_000_000u64 + i as u64,
            i % 100,
            i % 1000,
            i % 10
        )
        .unwrap();
    }
    out.flush().unwrap();
}

/// A config with one csv task reading `data` into `destination`.
fn config(dir: &Path, data: &Path, uri: &str, destination: &str) -> PathBuf {
    // The defaults unless BENCH_IN_FLIGHT / BENCH_QUEUE set them.
    let settings: Vec<String> = [
        ("max-in-flight", "BENCH_IN_FLIGHT"),
        ("max-queue-size", "BENCH_QUEUE"),
    ]
    .into_iter()
    .filter_map(|(key, var)| Some(format!("{key}: {}", std::env::var(var).ok()?)))
    .collect();
    let queue = format!("upload-queue: {{{}}}\n", settings.join(", "));
    let connection: Vec<&str> = [
        ("BENCH_GZIP", "0", "disable-gzip: true"),
        ("BENCH_PROTOBUF", "1", "protobuf-datapoints: true"),
    ]
    .into_iter()
    .filter(|(var, on, _)| std::env::var(var).is_ok_and(|v| v == *on))
    .map(|(_, _, key)| key)
    .collect();
    let gzip = format!("  connection: {{{}}}\n", connection.join(", "));
    let text = format!(
        "{}{gzip}{queue}logger: {{console: {{level: error}}}}
tasks:
  - name: bulk
    type: csv
    schedule: {{type: startup}}
    config:
      path: {}
      types: {{value: float, time: integer}}
      destination: {destination}
",
        util::cognite_header(uri),
        data.display()
    );
    let path = dir.join("throughput.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// One `run --once`: items per second from spawn to exit, and the requests the fake answered.
async fn once(
    dir: &Path,
    data: &Path,
    destination: &str,
    delay: Duration,
    rows: usize,
) -> (f64, usize, usize) {
    let counts = Arc::new(Counts::default());
    let server = fake_cdf(delay, counts.clone()).await;
    let path = config(dir, data, &server.uri(), destination);
    let started = Instant::now();
    let status = tokio::task::spawn_blocking(move || {
        let mut cmd = util::measured_bin();
        if std::env::var_os("BENCH_TIME").is_some() {
            // CPU seconds of the run, on standard error.
            let program = cmd.get_program().to_owned();
            cmd = std::process::Command::new("/usr/bin/time");
            cmd.args(["-f", "cpu %U user %S sys %e wall, peak RSS %M KiB"])
                .arg(program);
            cmd.env_remove("COGNITE_API_KEY").env_remove("RUST_LOG");
        }
        cmd.args(["run", "--once", "-c"])
            .arg(&path)
            .stdout(std::process::Stdio::null())
            .envs(std::env::var("BENCH_LOG").map(|l| ("RUST_LOG", l)))
            .status()
            .unwrap()
    })
    .await
    .unwrap();
    let seconds = started.elapsed().as_secs_f64();
    assert!(status.success(), "the run failed: {status}");
    let received = counts.items.load(Ordering::Relaxed);
    assert!(received >= rows, "CDF received {received} of {rows} items");
    (
        rows as f64 / seconds,
        counts.requests.load(Ordering::Relaxed),
        counts.bytes.load(Ordering::Relaxed),
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let env = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default)
    };
    let runs = env("BENCH_RUNS", 3);
    let rows = env("BENCH_ROWS", 1_000_000);
    let delay = Duration::from_millis(env("BENCH_DELAY_MS", 50) as u64);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    write_csv(&data, rows);
    for (name, destination) in [
        (
            "datapoints",
            "{type: datapoints, external-id: sensor, timestamp: time, value: value}",
        ),
        ("raw", "{type: raw, database: db, table: t, key: id}"),
    ] {
        if std::env::var("BENCH_CASE").is_ok_and(|case| case != name) {
            continue;
        }
        let mut rates = [Vec::new(), Vec::new()];
        let mut requests = [0, 0];
        let mut bytes = 0;
        for _ in 0..runs {
            for (i, d) in [Duration::ZERO, delay].into_iter().enumerate() {
                let (rate, n, b) = once(dir.path(), &data, destination, d, rows).await;
                rates[i].push(rate);
                requests[i] = n;
                bytes = b;
            }
        }
        if std::env::var_os("BENCH_VERBOSE").is_some() {
            eprintln!(
                "{name}: runs without delay {:.0?}, with {:.0?}",
                rates[0], rates[1]
            );
        }
        let [fast, slow] = rates.map(median);
        println!(
            "{name}: {fast:.0}/s without delay ({} requests), {slow:.0}/s with {} ms ({} requests): {:.0} %; {:.1} MB of bodies",
            requests[0],
            delay.as_millis(),
            requests[1],
            100.0 * slow / fast,
            bytes as f64 / 1e6
        );
    }
}
