//! Rows per second and peak RSS of each built-in extractor into the dry-run sink (the requests
//! are built and serialized as for CDF, then discarded), each case in its own process so peak
//! RSS is its own:
//!
//! - `csv`: one file of 1 000 000 rows (4 columns, a float type hint) to RAW;
//! - `postgres`: a table of 100 000 rows (5 columns) to RAW, incremental, batches of 10 000
//!   (needs `EXTRACTOR_TEST_POSTGRES`, as the tests; skipped without it);
//! - `http`: 100 pages of 1 000 items from a local server to datapoints;
//! - `csv-huge-line`: a 2 GiB file whose third line is 2 GiB long, with the default
//!   `max-line-size` (16 MiB): peak RSS while it is refused;
//! - `http-huge`: a 1 GiB answer (chunked, no Content-Length) from a local server, with the
//!   default `max-response-size` (64 MiB): peak RSS while it is refused;
//! - `files-2gib`: a 2 GiB file (sparse) uploaded by the `files` extractor in 64 MiB parts to a
//!   local server playing CDF and the upload URLs: MB/s and peak RSS.
//!
//! `cargo bench -p extractors --bench builtins` (`BENCH_CASE=csv` for one).

use std::time::{Duration, Instant};

use extractor_runtime::cdf::{CdfClient, DryRunSink};
use extractor_runtime::config::{Config, LoadOptions};
use extractor_runtime::queues::Queues;
use extractor_runtime::{Extractor, RunContext};
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// `VmHWM` (peak RSS) or `VmRSS` of this process, KiB.
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A run context like the runtime's in dry-run: default queue size (100 000), NDJSON to nowhere.
fn context() -> RunContext {
    let config = Config::from_yaml(
        "version: 1\ncognite: {project: bench, dry-run: true}\ntasks: []\n",
        None,
        &|_| None,
        &LoadOptions::default(),
    )
    .unwrap();
    let registry = prometheus::Registry::new();
    let client = CdfClient::new(
        &config.cognite,
        None,
        Some(DryRunSink::to_writer(std::io::sink())),
        &registry,
    )
    .unwrap();
    let queues = Queues::new(
        client.clone(),
        config.upload_queue.max_queue_size,
        &registry,
    )
    .unwrap();
    RunContext::new("bench", CancellationToken::new(), queues, None)
}

async fn measure(name: &str, rows: u64, extractor: &impl Extractor) {
    measure_run(name, rows, extractor, true).await;
}

async fn measure_run(name: &str, rows: u64, extractor: &impl Extractor, succeeds: bool) {
    let before = status_kib("VmRSS:");
    // Reset the peak to now, so it is this run's (Linux: "5" to clear_refs).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let started = Instant::now();
    let result = extractor.run(context()).await;
    match (&result, succeeds) {
        (Ok(()), true) => {}
        (Err(e), false) => println!("{name}: refused as it should be: {e}"),
        (r, _) => panic!("{name}: unexpected {r:?}"),
    }
    let took = started.elapsed();
    let peak = status_kib("VmHWM:");
    println!(
        "{name}: {rows} rows in {:.2} s = {:.0} rows/s; peak RSS {:.1} MiB (+{:.1} MiB over the {:.1} MiB before the run)",
        took.as_secs_f64(),
        rows as f64 / took.as_secs_f64(),
        peak as f64 / 1024.0,
        peak.saturating_sub(before) as f64 / 1024.0,
        before as f64 / 1024.0,
    );
}

const CSV_ROWS: u64 = 1_000_000;

/// Writes the CSV file (in the parent process, so the child's RSS is the extractor's own).
fn write_csv(dir: &std::path::Path) {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(dir.join("big.csv")).unwrap());
    writeln!(out, "id,time,sensor,value").unwrap();
    for i in 0..CSV_ROWS {
        writeln!(
            out,
            "{i},2026-11-27T{:02}:{:02}:{:02}Z,sensor-{},{}.{}",
            i / 3600 % 24,
            i / 60 % 60,
            i % 60,
            i % 100,
            i % 1000,
            i % 10
        )
        .unwrap();
    }
    out.flush().unwrap();
}

async fn csv() {
    let dir = std::path::PathBuf::from(std::env::var("BENCH_CSV_DIR").unwrap());
    let rows = CSV_ROWS;
    let config = serde_json::from_value(json!({
        "path": dir,
        "types": {"value": "float"},
        "destination": {"type": "raw", "database": "db", "table": "t", "key": "id"},
    }))
    .unwrap();
    let csv = extractors::csv::Csv::new(config).unwrap();
    measure("csv", rows, &csv).await;
}

async fn postgres() {
    let Ok(conn) = std::env::var("EXTRACTOR_TEST_POSTGRES") else {
        println!("postgres: skipped (set EXTRACTOR_TEST_POSTGRES)");
        return;
    };
    let (db, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let rows = 100_000;
    db.batch_execute(&format!(
        "DROP TABLE IF EXISTS bench_rows;
         CREATE TABLE bench_rows (id bigint PRIMARY KEY, site text, value double precision,
             at timestamptz, note text);
         INSERT INTO bench_rows SELECT i, 'site-' || (i % 10), i * 0.5,
             '2026-11-01'::timestamptz + i * interval '1 second', 'row number ' || i
         FROM generate_series(1, {rows}) AS i;
         ANALYZE bench_rows;"
    ))
    .await
    .unwrap();
    let config = serde_json::from_value(json!({
        "connection-string": conn,
        "query": "SELECT id, site, value, at, note FROM bench_rows WHERE id > $1 ORDER BY id",
        "incremental-field": "id",
        "initial-value": 0,
        "destination": {"type": "raw", "database": "db", "table": "t", "key": "id"},
    }))
    .unwrap();
    let pg = extractors::postgres::Postgres::new(config).unwrap();
    measure("postgres", rows, &pg).await;
    db.batch_execute("DROP TABLE bench_rows").await.unwrap();
}

async fn http() {
    use wiremock::matchers::path_regex;
    use wiremock::{Mock, MockServer, Request, ResponseTemplate};
    let server = MockServer::start().await;
    let (pages, per_page) = (100u64, 1_000u64);
    let base = server.uri();
    Mock::given(path_regex("^/readings/[0-9]+$"))
        .respond_with(move |r: &Request| {
            let page: u64 = r.url.path().rsplit('/').next().unwrap().parse().unwrap();
            let items: Vec<_> = (0..per_page)
                .map(|i| {
                    let n = page * per_page + i;
                    json!({"sensor": format!("s-{}", n % 50), "time": 1_795_000_000_000_u64 + n * 1000, "value": n as f64 / 3.0})
                })
                .collect();
            let next = (page + 1 < pages).then(|| format!("{base}/readings/{}", page + 1));
            ResponseTemplate::new(200).set_body_json(json!({"items": items, "next": next}))
        })
        .mount(&server)
        .await;
    let config = serde_json::from_value(json!({
        "url": format!("{}/readings/0", server.uri()),
        "items": "/items",
        "pagination": {"type": "next-link", "pointer": "/next"},
        "destination": {"type": "datapoints", "external-id": "sensor", "timestamp": "time", "value": "value"},
    }))
    .unwrap();
    let http = extractors::http::Http::new(config).unwrap();
    measure("http", pages * per_page, &http).await;
}

/// A 2 GiB file: a header, two rows, then one line of 2 GiB.
fn write_huge_line(dir: &std::path::Path) {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(dir.join("huge.csv")).unwrap());
    write!(out, "id,v\nr1,1\nr2,").unwrap();
    let block = vec![b'x'; 1 << 20];
    for _ in 0..2048 {
        out.write_all(&block).unwrap();
    }
    writeln!(out).unwrap();
    out.flush().unwrap();
}

async fn csv_huge_line() {
    let dir = std::path::PathBuf::from(std::env::var("BENCH_HUGE_DIR").unwrap());
    let config = serde_json::from_value(json!({
        "path": dir,
        "destination": {"type": "raw", "database": "db", "table": "t", "key": "id"},
    }))
    .unwrap();
    let csv = extractors::csv::Csv::new(config).unwrap();
    measure_run(
        "csv-huge-line (2 GiB line, max-line-size 16 MiB)",
        2,
        &csv,
        false,
    )
    .await;
}

async fn http_huge() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request).await;
                let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
                if stream.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = vec![b' '; 1 << 20];
                for _ in 0..1024 {
                    let frame =
                        [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
                    if stream.write_all(&frame).await.is_err() {
                        return; // the client hung up: refused
                    }
                }
                let _ = stream.write_all(b"0\r\n\r\n").await;
            });
        }
    });
    let config = serde_json::from_value(json!({
        "url": format!("http://{addr}/huge"),
        "destination": {"type": "raw", "database": "db", "table": "t", "key": "id"},
    }))
    .unwrap();
    let http = extractors::http::Http::new(config).unwrap();
    measure_run(
        "http-huge (1 GiB answer, max-response-size 64 MiB)",
        0,
        &http,
        false,
    )
    .await;
}

/// A minimal CDF and upload-URL server: the token, a multipart start whose URLs point back
/// here, PUTs that are read and counted (never kept), and the completion. One request per
/// connection. Returns its address and the bytes PUT so far.
async fn upload_sink() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicU64>,
) {
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = received.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut stream = tokio::io::BufReader::new(stream);
                let mut line = String::new();
                let _ = stream.read_line(&mut line).await;
                let target = line.split(' ').nth(1).unwrap_or("").to_owned();
                let mut length = 0u64;
                loop {
                    let mut header = String::new();
                    if stream.read_line(&mut header).await.unwrap_or(0) == 0 || header == "\r\n" {
                        break;
                    }
                    if let Some(v) = header.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
                // Read the body in 1 MiB pieces, counting; never kept whole.
                let mut buf = vec![0u8; 1 << 20];
                let mut left = length;
                while left > 0 {
                    let n = stream
                        .read(&mut buf[..left.min(1 << 20) as usize])
                        .await
                        .unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    left -= n as u64;
                }
                let body = if target == "/token" {
                    r#"{"access_token":"t","expires_in":3600}"#.to_owned()
                } else if target.contains("/files/initmultipartupload") {
                    let parts: usize = target
                        .rsplit("parts=")
                        .next()
                        .and_then(|p| p.parse().ok())
                        .unwrap_or(1);
                    let urls: Vec<String> = (0..parts)
                        .map(|i| format!("http://{addr}/upload/{i}"))
                        .collect();
                    json!({"id": 1, "uploadId": "u", "uploadUrls": urls}).to_string()
                } else {
                    if target.starts_with("/upload/") {
                        counter.fetch_add(length - left, Ordering::Relaxed);
                    }
                    "{}".to_owned()
                };
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.get_mut().write_all(answer.as_bytes()).await;
            });
        }
    });
    (addr, received)
}

async fn files_2gib() {
    let dir = tempfile::tempdir().unwrap();
    let size: u64 = 2 << 30;
    std::fs::File::create(dir.path().join("big.bin"))
        .unwrap()
        .set_len(size)
        .unwrap();
    let (addr, received) = upload_sink().await;
    let config = Config::from_yaml(
        &format!("version: 1\ncognite: {{project: bench, host: 'http://{addr}', idp-authentication: {{client-id: c, secret: s, token-url: 'http://{addr}/token', scopes: [s]}}}}\ntasks: []\n"),
        None,
        &|_| None,
        &LoadOptions::default(),
    )
    .unwrap();
    let idp = config.cognite.idp_authentication.as_ref().unwrap();
    let tokens = extractor_runtime::auth::TokenManager::spawn(
        idp,
        extractor_runtime::auth::TokenManagerOptions::default(),
        None,
    )
    .unwrap();
    let client = CdfClient::new(
        &config.cognite,
        Some(tokens.clone()),
        None,
        &prometheus::Registry::new(),
    )
    .unwrap();
    let files = extractors::files::Files::new(
        serde_json::from_value(json!({"path": dir.path(), "target": {"type": "classic"}})).unwrap(),
    )
    .unwrap();
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let before = status_kib("VmRSS:");
    let started = Instant::now();
    let queues = Queues::new(client.clone(), 1000, &prometheus::Registry::new()).unwrap();
    files
        .run(RunContext::new(
            "bench",
            CancellationToken::new(),
            queues,
            None,
        ))
        .await
        .unwrap();
    let took = started.elapsed().as_secs_f64();
    let got = received.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(got, size, "every byte arrived");
    let peak = status_kib("VmHWM:");
    println!(
        "files-2gib: {} MiB in {took:.2} s = {:.0} MB/s in 32 parts of 64 MiB; peak RSS {:.1} MiB (+{:.1} MiB over the {:.1} MiB before the run)",
        size >> 20,
        size as f64 / 1e6 / took,
        peak as f64 / 1024.0,
        peak.saturating_sub(before) as f64 / 1024.0,
        before as f64 / 1024.0,
    );
    tokens.shutdown();
}

fn main() {
    let case = std::env::var("BENCH_CASE").ok();
    // `cargo bench` passes `--bench`; run each case in a child process of this binary.
    if case.is_none() {
        let dir = tempfile::tempdir().unwrap();
        write_csv(dir.path());
        let huge = tempfile::tempdir().unwrap();
        write_huge_line(huge.path());
        for case in [
            "csv",
            "postgres",
            "http",
            "csv-huge-line",
            "http-huge",
            "files-2gib",
        ] {
            let status = std::process::Command::new(std::env::current_exe().unwrap())
                .env("BENCH_CASE", case)
                .env("BENCH_CSV_DIR", dir.path())
                .env("BENCH_HUGE_DIR", huge.path())
                .status()
                .unwrap();
            assert!(status.success(), "{case}: {status}");
        }
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        match case.as_deref() {
            Some("csv") => csv().await,
            Some("postgres") => postgres().await,
            Some("http") => http().await,
            Some("csv-huge-line") => csv_huge_line().await,
            Some("http-huge") => http_huge().await,
            Some("files-2gib") => files_2gib().await,
            other => panic!("unknown BENCH_CASE {other:?}"),
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
}
