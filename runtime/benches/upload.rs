//! RAW rows per second through the queue and the CDF client to a local endpoint that accepts
//! everything, and the RSS of a full queue of 100 000 rows; then Data Modeling nodes per second
//! (`/models/instances`, 1 000 a request) and datapoints per second by `instanceId`.
//! Run: `cargo bench -p extractor-runtime --bench upload` (`BENCH_ROWS`, default 1 000 000;
//! nodes: a fifth of that; datapoints by instanceId: as many as rows, over 100 series).

use std::convert::Infallible;
use std::time::Instant;

use extractor_runtime::queues::{
    Datapoint, DatapointValue, Instances, Node, QueueMetrics, RawRow, RawRows, UploadQueue, ViewRef,
};
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
        let queue: UploadQueue<RawRows> = UploadQueue::new(client.clone(), 100_000, &metrics);
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

        // Data Modeling nodes through a view, three properties each.
        let nodes = rows / 5;
        let view = std::sync::Arc::new(ViewRef {
            space: "cdf_cdm".into(),
            external_id: "CogniteAsset".into(),
            version: "v1".into(),
        });
        let queue: UploadQueue<Instances> = UploadQueue::new(client.clone(), 100_000, &metrics);
        let started = Instant::now();
        for i in 0..nodes {
            let mut properties = serde_json::Map::new();
            properties.insert("name".into(), serde_json::json!(format!("Asset {i}")));
            properties.insert("description".into(), serde_json::json!("pump, line 2"));
            properties.insert(
                "parent".into(),
                serde_json::json!({"space": "plant", "externalId": format!("area-{}", i / 100)}),
            );
            queue
                .add(Node {
                    space: "plant".into(),
                    external_id: format!("asset-{i:08}"),
                    edge: None,
                    view: Some(view.clone()),
                    properties,
                })
                .await
                .unwrap();
        }
        queue.flush().await.unwrap();
        let took = started.elapsed().as_secs_f64();
        println!(
            "upload bench: {nodes} nodes in {took:.2}s = {:.0} instances/s (requests of 1 000 nodes)",
            nodes as f64 / took
        );

        // Datapoints by instanceId, through a task's upload handle.
        let queues =
            extractor_runtime::queues::Queues::new(client, 100_000, &prometheus::Registry::new())
                .unwrap();
        let ctx = extractor_runtime::RunContext::new(
            "bench",
            tokio_util::sync::CancellationToken::new(),
            queues,
            None,
        );
        let upload = ctx.upload();
        let space: std::sync::Arc<str> = "plant".into();
        let started = Instant::now();
        for i in 0..rows {
            upload
                .datapoint_of_node(
                    Datapoint {
                        external_id: format!("sensor-{}:temperature", i % 100),
                        timestamp: 1_700_000_000_000 + i as i64,
                        value: DatapointValue::Numeric(i as f64 * 0.1),
                    },
                    space.clone(),
                    None,
                )
                .await
                .unwrap();
        }
        upload.deliver().await.unwrap();
        let took = started.elapsed().as_secs_f64();
        println!(
            "upload bench: {rows} datapoints by instanceId in {took:.2}s = {:.0} datapoints/s; peak RSS now {:.1} MiB",
            rows as f64 / took,
            rss_kib() as f64 / 1024.0
        );
        tokens.shutdown();
    });
}
