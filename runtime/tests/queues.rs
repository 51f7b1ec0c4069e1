//! Upload queues against an in-process fake CDF (wiremock): splitting, at-least-once delivery
//! when CDF fails mid-flush, and backpressure.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use extractor_runtime::Secret;
use extractor_runtime::auth::{TokenManager, TokenManagerOptions};
use extractor_runtime::cdf::CdfClient;
use extractor_runtime::config::IdpAuthenticationConfig;
use extractor_runtime::queues::{QueueMetrics, RawRow, RawRows, UploadQueue};
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

mod support;

use support::mount_token_endpoint;

/// A fake CDF that records the keys of every accepted RAW request; requests listed in `fail`
/// (by their 0-based number) get a 500.
struct FakeCdf {
    server: MockServer,
    accepted: Arc<Mutex<Vec<Vec<String>>>>,
}

async fn fake_cdf(fail: &'static [usize], delay: Duration) -> FakeCdf {
    let server = MockServer::start().await;
    mount_token_endpoint(&server, "t").await;
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let (a, n) = (accepted.clone(), Arc::new(AtomicUsize::new(0)));
    Mock::given(method("POST"))
        .and(path("/api/v1/projects/demo/raw/dbs/db/tables/t/rows"))
        .respond_with(move |req: &Request| {
            let i = n.fetch_add(1, Ordering::SeqCst);
            if fail.contains(&i) {
                return ResponseTemplate::new(500);
            }
            let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
            let keys = body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["key"].as_str().unwrap().to_owned())
                .collect();
            a.lock().unwrap().push(keys);
            ResponseTemplate::new(201)
                .set_body_json(json!({}))
                .set_delay(delay)
        })
        .mount(&server)
        .await;
    FakeCdf { server, accepted }
}

fn queue(
    cdf: &FakeCdf,
    capacity: usize,
    registry: &prometheus::Registry,
) -> (UploadQueue<RawRows>, TokenManager) {
    let cognite = support::cognite(&cdf.server.uri(), ", connection: {max-retries: 0}");
    let idp = IdpAuthenticationConfig::new(
        "c",
        Secret::new("s"),
        format!("{}/token", cdf.server.uri()),
        vec!["s".into()],
    );
    let tokens = TokenManager::spawn(&idp, TokenManagerOptions::default(), None).unwrap();
    let client = CdfClient::new(&cognite, Some(tokens.clone()), None, registry).unwrap();
    (
        UploadQueue::new(client, capacity, &QueueMetrics::register(registry).unwrap()),
        tokens,
    )
}

fn row(i: usize) -> RawRow {
    let mut columns = serde_json::Map::new();
    columns.insert("i".into(), json!(i));
    RawRow {
        database: "db".into(),
        table: "t".into(),
        key: format!("k{i}"),
        columns,
    }
}

#[tokio::test]
async fn a_flush_splits_at_ten_thousand_rows() {
    let cdf = fake_cdf(&[], Duration::ZERO).await;
    let registry = prometheus::Registry::new();
    let (q, tokens) = queue(&cdf, 100_000, &registry);
    for i in 0..25_000 {
        q.add(row(i)).await.unwrap();
    }
    assert_eq!(q.flush().await.unwrap(), 25_000);
    let sizes: Vec<usize> = cdf.accepted.lock().unwrap().iter().map(Vec::len).collect();
    assert_eq!(sizes, [10_000, 10_000, 5_000]);
    assert!(q.is_empty());
    let text = support::metrics_text(&registry);
    assert!(
        text.contains("extractor_upload_items_total{queue=\"raw\",result=\"uploaded\"} 25000"),
        "{text}"
    );
    assert!(
        text.contains("extractor_upload_queue_size{queue=\"raw\"} 0"),
        "{text}"
    );
    tokens.shutdown();
}

#[tokio::test]
async fn rows_stay_queued_when_cdf_fails_mid_flush_and_none_is_lost() {
    // The second request fails (retries exhausted at once).
    let cdf = fake_cdf(&[1], Duration::ZERO).await;
    let registry = prometheus::Registry::new();
    let (q, tokens) = queue(&cdf, 100_000, &registry);
    for i in 0..25_000 {
        q.add(row(i)).await.unwrap();
    }
    let err = q.flush().await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert_eq!(
        q.len(),
        15_000,
        "the accepted first 10 000 left; the rest stayed"
    );
    assert_eq!(q.flush().await.unwrap(), 15_000);
    let accepted: Vec<String> = cdf
        .accepted
        .lock()
        .unwrap()
        .iter()
        .flatten()
        .cloned()
        .collect();
    let expected: Vec<String> = (0..25_000).map(|i| format!("k{i}")).collect();
    assert_eq!(accepted, expected, "every row accepted once, in order");
    tokens.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_makes_the_producer_wait() {
    let cdf = fake_cdf(&[], Duration::from_millis(50)).await;
    let registry = prometheus::Registry::new();
    let (q, tokens) = queue(&cdf, 100, &registry);
    let watcher = {
        let q = q.clone();
        tokio::spawn(async move {
            let mut most = 0;
            for _ in 0..400 {
                most = most.max(q.len());
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            most
        })
    };
    for i in 0..1_000 {
        q.add(row(i)).await.unwrap();
    }
    q.flush().await.unwrap();
    let most = watcher.await.unwrap();
    assert!(most <= 100, "the queue held {most} rows, more than its 100");
    let accepted: usize = cdf.accepted.lock().unwrap().iter().map(Vec::len).sum();
    assert_eq!(accepted, 1_000);
    assert!(
        cdf.accepted.lock().unwrap().len() >= 10,
        "flushed as it filled up, 100 at a time"
    );
    tokens.shutdown();
}

#[tokio::test]
async fn a_flush_cancelled_mid_request_keeps_its_rows_for_the_next_one() {
    // CDF takes 2 s to answer; the flush is dropped after 100 ms.
    let cdf = fake_cdf(&[], Duration::from_secs(2)).await;
    let registry = prometheus::Registry::new();
    let (q, tokens) = queue(&cdf, 100_000, &registry);
    for i in 0..500 {
        q.add(row(i)).await.unwrap();
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(100), q.flush())
            .await
            .is_err()
    );
    assert_eq!(q.len(), 500, "an unanswered request removes nothing");
    assert_eq!(q.flush().await.unwrap(), 500);
    assert!(q.is_empty());
    tokens.shutdown();
}
