//! RAW rows per second through the queue and the CDF client to a local endpoint that accepts
//! everything, and the RSS of a full queue of 100 000 rows.
//! Run: `cargo bench -p extractor-runtime --bench upload` (`BENCH_ROWS`, default 1 000 000).

use std::convert::Infallible;
use std::time::Instant;

use extractor_runtime::queues::{QueueMetrics, RawRow, RawRows, UploadQueue};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

mod common;
use common::rss_kib;

/// Answers `/token` with a token and everything else with 201 `{}`, reading each body fully.
async fn accept_everything() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let service = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    let is_token = req.uri().path() == "/token";
                    let _ = req.into_body().collect().await;
                    let body = if is_token {
                        r#"{"access_token":"t","expires_in":3600}"#
                    } else {
                        "{}"
                    };
                    Ok::<_, Infallible>(
                        hyper::Response::builder()
                            .status(if is_token { 200 } else { 201 })
                            .body(Full::new(Bytes::from(body)))
                            .unwrap(),
                    )
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn row(i: usize) -> RawRow {
    let mut columns = serde_json::Map::new();
    columns.insert("value".into(), serde_json::json!(i as f64 * 0.5));
    columns.insert("unit".into(), serde_json::json!("kPa"));
    columns.insert(
        "source".into(),
        serde_json::json!("plant-7/line-2/sensor-19"),
    );
    RawRow {
        database: "bench".into(),
        table: "readings".into(),
        key: format!("row-{i:09}"),
        columns,
    }
}

fn main() {
    let rows: usize = std::env::var("BENCH_ROWS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let addr = accept_everything().await;
        let registry = prometheus::Registry::new();
        let (client, tokens) = common::cdf_client(&format!("http://{addr}"), "bench", &registry);
        let metrics = QueueMetrics::register(&registry).unwrap();

        // RSS of a full queue: 100 000 rows queued, none sent yet.
        let before = rss_kib();
        let full: UploadQueue<RawRows> = UploadQueue::new(client.clone(), 100_001, &metrics);
        for i in 0..100_000 {
            full.add(row(i)).await.unwrap();
        }
        let queued = rss_kib();
        full.flush().await.unwrap();

        // Throughput: `rows` rows through a 100 000-row queue.
        let queue: UploadQueue<RawRows> = UploadQueue::new(client, 100_000, &metrics);
        let started = Instant::now();
        for i in 0..rows {
            queue.add(row(i)).await.unwrap();
        }
        queue.flush().await.unwrap();
        let took = started.elapsed().as_secs_f64();
        println!(
            "upload bench: {rows} RAW rows in {took:.2}s = {:.0} rows/s (requests of 10 000 rows to a local endpoint); \
             a full queue of 100 000 rows: +{:.1} MiB RSS ({} B/row); peak RSS now {:.1} MiB",
            rows as f64 / took,
            queued.saturating_sub(before) as f64 / 1024.0,
            queued.saturating_sub(before) * 1024 / 100_000,
            rss_kib() as f64 / 1024.0
        );
        tokens.shutdown();
    });
}
