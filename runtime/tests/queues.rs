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
    /// When each RAW request arrived (failed ones too).
    arrivals: Arc<Mutex<Vec<std::time::Instant>>>,
}

async fn fake_cdf(fail: &'static [usize], delay: Duration) -> FakeCdf {
    let server = MockServer::start().await;
    mount_token_endpoint(&server, "t").await;
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let (a, n, t) = (
        accepted.clone(),
        Arc::new(AtomicUsize::new(0)),
        arrivals.clone(),
    );
    Mock::given(method("POST"))
        .and(path("/api/v1/projects/demo/raw/dbs/db/tables/t/rows"))
        .respond_with(move |req: &Request| {
            t.lock().unwrap().push(std::time::Instant::now());
            let i = n.fetch_add(1, Ordering::SeqCst);
            if fail.contains(&i) {
                return ResponseTemplate::new(500);
            }
            let body = support::json_body(req);
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
    FakeCdf {
        server,
        accepted,
        arrivals,
    }
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

/// Waits (up to 20 s) until `done`.
async fn wait_until(what: &str, done: impl Fn() -> bool) {
    for _ in 0..2_000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("not within 20 s: {what}");
}

/// `(0..n)`'s row keys.
fn keys(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("k{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_keeps_several_requests_in_flight() {
    // Each answer takes 2 s: with 4 requests in flight, all 4 are sent before the first answer.
    let cdf = fake_cdf(&[], Duration::from_secs(2)).await;
    let registry = prometheus::Registry::new();
    let (q, tokens) = queue(&cdf, 100_000, &registry);
    let q = q.with_in_flight(4);
    for i in 0..40_000 {
        q.add(row(i)).await.unwrap();
    }
    assert_eq!(q.flush().await.unwrap(), 40_000);
    let arrivals = cdf.arrivals.lock().unwrap().clone();
    assert_eq!(arrivals.len(), 4, "10 000 rows a request");
    let spread = *arrivals.iter().max().unwrap() - *arrivals.iter().min().unwrap();
    assert!(
        spread < Duration::from_secs(1),
        "the 4 requests were not in flight together: sent over {spread:?}, answers take 2 s"
    );
    let mut accepted = cdf.accepted.lock().unwrap().clone();
    accepted.sort_by_key(|keys| keys[0][1..].parse::<usize>().unwrap());
    assert_eq!(accepted.concat(), keys(0..40_000), "each row once");
    assert!(q.is_empty());
    tokens.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_during_a_background_send_sends_the_rest_beside_the_requests_in_flight() {
    // Each answer takes 2 s. The background send takes the two full requests; the flush that
    // follows gets its 5 000-row rest sent at once, not after their answers (the last
    // request's round trip is then not added to the end of a long read).
    let cdf = fake_cdf(&[], Duration::from_secs(2)).await;
    let registry = prometheus::Registry::new();
    let (q, tokens) = queue(&cdf, 100_000, &registry);
    let q = q.with_in_flight(4);
    for i in 0..25_000 {
        q.add(row(i)).await.unwrap();
    }
    q.send_ahead();
    // The background send is under way (both full requests sent) before the flush.
    for _ in 0..200 {
        if cdf.arrivals.lock().unwrap().len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        cdf.arrivals.lock().unwrap().len(),
        2,
        "the two full requests"
    );
    assert_eq!(
        q.flush().await.unwrap(),
        0,
        "the background send took the rest; the flush found nothing left"
    );
    let arrivals = cdf.arrivals.lock().unwrap().clone();
    assert_eq!(arrivals.len(), 3);
    let spread = arrivals[2] - arrivals[0];
    assert!(
        spread < Duration::from_secs(1),
        "the rest waited for the answers in flight: sent {spread:?} after the first, answers take 2 s"
    );
    let mut accepted = cdf.accepted.lock().unwrap().clone();
    accepted.sort_by_key(|keys| keys[0][1..].parse::<usize>().unwrap());
    assert_eq!(accepted.concat(), keys(0..25_000), "each row once");
    assert!(q.is_empty());
    tokens.shutdown();
}

#[tokio::test]
async fn a_request_failing_in_the_window_loses_nothing_and_starts_no_more() {
    // Of 3 requests in flight, the second fails: the first and third are settled, the second's
    // rows stay queued (ahead of the rows not sent yet) and no further request starts.
    let cdf = fake_cdf(&[1], Duration::from_millis(200)).await;
    let registry = prometheus::Registry::new();
    let (q, tokens) = queue(&cdf, 100_000, &registry);
    let q = q.with_in_flight(3);
    for i in 0..50_000 {
        q.add(row(i)).await.unwrap();
    }
    let err = q.flush().await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert_eq!(
        cdf.arrivals.lock().unwrap().len(),
        3,
        "no request after the failure"
    );
    assert_eq!(q.len(), 30_000, "two of three requests settled");
    assert_eq!(q.flush().await.unwrap(), 30_000);
    let mut accepted = cdf.accepted.lock().unwrap().concat();
    accepted.sort_by_key(|k| k[1..].parse::<usize>().unwrap());
    assert_eq!(accepted, keys(0..50_000), "every row accepted once");
    tokens.shutdown();
}

#[tokio::test]
async fn a_flush_cancelled_with_a_window_in_flight_keeps_every_row() {
    let cdf = fake_cdf(&[], Duration::from_secs(2)).await;
    let registry = prometheus::Registry::new();
    let (q, tokens) = queue(&cdf, 100_000, &registry);
    let q = q.with_in_flight(3);
    for i in 0..30_000 {
        q.add(row(i)).await.unwrap();
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(300), q.flush())
            .await
            .is_err()
    );
    assert_eq!(q.len(), 30_000, "unanswered requests remove nothing");
    assert_eq!(q.flush().await.unwrap(), 30_000);
    assert!(q.is_empty());
    tokens.shutdown();
}

#[tokio::test]
async fn a_window_shares_the_capacity_among_its_requests() {
    // 5 in flight in a queue of 30 000: requests of 4 000 rows (not RAW's 10 000), so all 5 fit
    // in two thirds of the queue.
    let cdf = fake_cdf(&[], Duration::ZERO).await;
    let registry = prometheus::Registry::new();
    let (q, tokens) = queue(&cdf, 30_000, &registry);
    let q = q.with_in_flight(5);
    for i in 0..30_000 {
        q.add(row(i)).await.unwrap();
    }
    assert_eq!(q.flush().await.unwrap(), 30_000);
    let mut accepted = cdf.accepted.lock().unwrap().clone();
    // Answers come in any order: sorted by their first row.
    accepted.sort_by_key(|keys| keys[0][1..].parse::<usize>().unwrap());
    let sizes: Vec<usize> = accepted.iter().map(Vec::len).collect();
    assert_eq!(
        sizes,
        [4_000, 4_000, 4_000, 4_000, 4_000, 4_000, 4_000, 2_000]
    );
    assert_eq!(accepted.concat(), keys(0..30_000), "each row once");
    tokens.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sending_ahead_sends_only_full_requests_while_the_producer_goes_on() {
    let cdf = fake_cdf(&[], Duration::from_millis(50)).await;
    let registry = prometheus::Registry::new();
    let (q, tokens) = queue(&cdf, 100_000, &registry);
    let q = q.with_in_flight(2);
    for i in 0..25_000 {
        q.add(row(i)).await.unwrap();
    }
    q.send_ahead();
    wait_until("two full requests are answered", || {
        cdf.accepted.lock().unwrap().len() == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        q.len(),
        5_000,
        "the last 5 000 rows wait for more or for a flush"
    );
    assert_eq!(cdf.arrivals.lock().unwrap().len(), 2);
    assert_eq!(q.flush().await.unwrap(), 5_000);
    assert!(q.take_ahead_error().is_none());
    tokens.shutdown();
}

#[tokio::test]
async fn a_failed_send_ahead_keeps_its_error_for_the_producer() {
    let cdf = fake_cdf(&[0], Duration::ZERO).await;
    let registry = prometheus::Registry::new();
    let (q, tokens) = queue(&cdf, 100_000, &registry);
    for i in 0..15_000 {
        q.add(row(i)).await.unwrap();
    }
    q.send_ahead();
    wait_until("the background send fails", || {
        cdf.arrivals.lock().unwrap().len() == 1
    })
    .await;
    let mut error = None;
    for _ in 0..100 {
        error = q.take_ahead_error();
        if error.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(error.expect("the error is kept").is_transient());
    assert_eq!(q.len(), 15_000, "nothing lost");
    assert_eq!(q.flush().await.unwrap(), 15_000);
    tokens.shutdown();
}
