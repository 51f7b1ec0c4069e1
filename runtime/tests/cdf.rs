//! The CDF client against in-process fakes (wiremock) of the token endpoint and of CDF:
//! retries, Retry-After, the 401 refresh, errors, metrics and dry-run.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use extractor_runtime::auth::TokenManager;
use extractor_runtime::cdf::{CdfClient, CdfErrorKind, DryRunSink};
use extractor_runtime::config::CogniteConfig;
use extractor_runtime::{TaskError, TaskErrorKind};
use serde_json::json;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

mod support;

const ROWS: &str = "/raw/dbs/{db}/tables/{table}/rows";

/// A token endpoint that hands out `token-1`, `token-2`, ...
async fn idp() -> (MockServer, Arc<AtomicUsize>) {
    let server = MockServer::start().await;
    let issued = support::counting_token_endpoint(&server, 3600).await;
    (server, issued)
}

fn cognite(host: &str, max_retries: u32) -> CogniteConfig {
    support::cognite(
        host,
        &format!(
            ", connection: {{max-retries: {max_retries}, max-retry-backoff: 1s, timeout: 2s}}"
        ),
    )
}

async fn make_client(
    cdf: &MockServer,
    idp: &MockServer,
    max_retries: u32,
    registry: &prometheus::Registry,
) -> (CdfClient, TokenManager) {
    let tokens = support::token_manager(&idp.uri());
    let client = CdfClient::new(
        &cognite(&cdf.uri(), max_retries),
        Some(tokens.clone()),
        None,
        registry,
    )
    .unwrap();
    (client, tokens)
}

/// CDF answers in turn with `statuses` (then 200), recording each request's Authorization.
async fn cdf_answering(
    statuses: Vec<(u16, Option<&'static str>)>,
) -> (MockServer, Arc<Mutex<Vec<String>>>) {
    let server = MockServer::start().await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (s, calls) = (seen.clone(), Arc::new(AtomicUsize::new(0)));
    Mock::given(method("POST"))
        .and(path("/api/v1/projects/demo/raw/dbs/db/tables/t/rows"))
        .respond_with(move |req: &Request| {
            let auth = req
                .headers
                .get("authorization")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            s.lock().unwrap().push(auth);
            let i = calls.fetch_add(1, Ordering::SeqCst);
            match statuses.get(i) {
                Some((status, retry_after)) => {
                    let mut r = ResponseTemplate::new(*status)
                        .insert_header("x-request-id", format!("req-{i}").as_str())
                        .set_body_json(
                            json!({"error": {"code": status, "message": format!("failure {i}")}}),
                        );
                    if let Some(ra) = retry_after {
                        r = r.insert_header("Retry-After", *ra);
                    }
                    r
                }
                None => ResponseTemplate::new(200).set_body_json(json!({})),
            }
        })
        .mount(&server)
        .await;
    (server, seen)
}

fn body() -> serde_json::Value {
    json!({"items": [{"key": "k1", "columns": {"v": 1}}]})
}

fn metric(registry: &prometheus::Registry, name: &str, labels: &[(&str, &str)]) -> f64 {
    let text = support::metrics_text(registry);
    text.lines()
        .filter(|l| {
            l.starts_with(name)
                && labels
                    .iter()
                    .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

#[tokio::test]
async fn retries_5xx_and_429_with_retry_after_then_succeeds() {
    let (idp, _) = idp().await;
    let (cdf, seen) = cdf_answering(vec![(503, None), (429, Some("1")), (500, None)]).await;
    let registry = prometheus::Registry::new();
    let (client, tokens) = make_client(&cdf, &idp, 5, &registry).await;
    let started = std::time::Instant::now();
    let answer = client
        .post(ROWS, "/raw/dbs/db/tables/t/rows?ensureParent=true", &body())
        .await
        .unwrap();
    assert_eq!(answer, json!({}));
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 was honoured"
    );
    assert_eq!(seen.lock().unwrap().len(), 4);
    assert!(seen.lock().unwrap().iter().all(|a| a == "Bearer token-1"));
    assert_eq!(
        metric(
            &registry,
            "extractor_cdf_retries_total",
            &[("endpoint", ROWS), ("reason", "5xx")]
        ),
        2.0
    );
    assert_eq!(
        metric(
            &registry,
            "extractor_cdf_retries_total",
            &[("reason", "429")]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &registry,
            "extractor_cdf_requests_total",
            &[("status", "200")]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &registry,
            "extractor_cdf_requests_total",
            &[("status", "503")]
        ),
        1.0
    );
    tokens.shutdown();
}

#[tokio::test]
async fn an_auto_retryable_answer_is_retried_and_a_plain_400_is_not() {
    let (idp, _) = idp().await;
    let server = MockServer::start().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    Mock::given(method("POST"))
        .respond_with(move |_: &Request| match c.fetch_add(1, Ordering::SeqCst) {
            0 => ResponseTemplate::new(409).insert_header("cdf-is-auto-retryable", "true"),
            1 => ResponseTemplate::new(400)
                .insert_header("x-request-id", "req-400")
                .set_body_json(json!({"error": {"code": 400, "message": "Invalid key"}})),
            _ => ResponseTemplate::new(200),
        })
        .mount(&server)
        .await;
    let registry = prometheus::Registry::new();
    let (client, tokens) = make_client(&server, &idp, 5, &registry).await;
    let err = client
        .post(ROWS, "/raw/dbs/db/tables/t/rows", &body())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), &CdfErrorKind::Rejected);
    assert_eq!(
        (err.status(), err.request_id()),
        (Some(400), Some("req-400"))
    );
    assert!(
        err.to_string().contains("Invalid key") && err.to_string().contains("request id req-400"),
        "{err}"
    );
    assert!(!err.is_transient());
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "the 409 was retried once, the 400 not at all"
    );
    let task: TaskError = err.into();
    assert_eq!(task.kind(), TaskErrorKind::Permanent);
    tokens.shutdown();
}

#[tokio::test]
async fn a_401_gets_one_refresh_and_one_more_try() {
    let (idp, issued) = idp().await;
    let (cdf, seen) = cdf_answering(vec![(401, None)]).await;
    let registry = prometheus::Registry::new();
    let (client, tokens) = make_client(&cdf, &idp, 5, &registry).await;
    client
        .post(ROWS, "/raw/dbs/db/tables/t/rows", &body())
        .await
        .unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        ["Bearer token-1", "Bearer token-2"],
        "the retry used the new token"
    );
    assert_eq!(issued.load(Ordering::SeqCst), 2);
    tokens.shutdown();

    // 401 twice: one refresh, then a clear error; never a loop.
    let (cdf, seen) = cdf_answering(vec![(401, None), (401, None), (401, None)]).await;
    let (client, tokens) = make_client(&cdf, &idp, 5, &prometheus::Registry::new()).await;
    let err = client
        .post(ROWS, "/raw/dbs/db/tables/t/rows", &body())
        .await
        .unwrap_err();
    assert_eq!(
        (err.kind(), err.status()),
        (&CdfErrorKind::Rejected, Some(401))
    );
    assert_eq!(seen.lock().unwrap().len(), 2);
    tokens.shutdown();
}

/// CDF that rejects every token (the client lacks access to the project): the identity
/// provider is asked for a new token at most once per `min-forced-refresh` (30 s), not at
/// every request (it was ~21 requests/s).
#[tokio::test]
async fn a_persistent_401_asks_the_identity_provider_at_most_once_per_interval() {
    let (idp, issued) = idp().await;
    let (cdf, seen) = cdf_answering(vec![(401, None); 1_000]).await;
    let (client, tokens) = make_client(&cdf, &idp, 5, &prometheus::Registry::new()).await;
    for _ in 0..50 {
        let err = client
            .post(ROWS, "/raw/dbs/db/tables/t/rows", &body())
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(401));
    }
    assert_eq!(
        issued.load(Ordering::SeqCst),
        2,
        "the first token and one forced refresh, for 50 rejected requests"
    );
    assert_eq!(
        seen.lock().unwrap().len(),
        100,
        "each request tried twice, never more"
    );
    tokens.shutdown();
}

#[tokio::test]
async fn retries_end_after_max_retries_with_a_transient_error() {
    let (idp, _) = idp().await;
    let (cdf, seen) = cdf_answering(vec![(503, None); 10]).await;
    let registry = prometheus::Registry::new();
    let (client, tokens) = make_client(&cdf, &idp, 2, &registry).await;
    let err = client
        .post(ROWS, "/raw/dbs/db/tables/t/rows", &body())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), &CdfErrorKind::RetriesExhausted);
    assert!(
        err.is_transient(),
        "the batch should be kept for the next flush"
    );
    assert_eq!(seen.lock().unwrap().len(), 3, "1 try + 2 retries");
    let task: TaskError = err.into();
    assert_eq!(task.kind(), TaskErrorKind::Transient);
    tokens.shutdown();
}

#[tokio::test]
async fn connection_errors_are_retried() {
    let (idp, _) = idp().await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = cognite(&format!("http://{dead}"), 1);
    let tokens = support::token_manager(&idp.uri());
    let registry = prometheus::Registry::new();
    let client = CdfClient::new(&config, Some(tokens.clone()), None, &registry).unwrap();
    let err = client
        .post(ROWS, "/raw/dbs/db/tables/t/rows", &body())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), &CdfErrorKind::RetriesExhausted);
    assert_eq!(
        metric(
            &registry,
            "extractor_cdf_retries_total",
            &[("reason", "connect")]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &registry,
            "extractor_cdf_requests_total",
            &[("status", "error")]
        ),
        2.0
    );
    tokens.shutdown();
}

#[tokio::test]
async fn a_permanent_auth_failure_is_an_authentication_task_error() {
    let idp = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(401)
                .set_body_json(json!({"error": "invalid_client", "error_codes": [7000215]})),
        )
        .mount(&idp)
        .await;
    let cdf = MockServer::start().await;
    let (client, tokens) = make_client(&cdf, &idp, 1, &prometheus::Registry::new()).await;
    let err = client
        .post(ROWS, "/raw/dbs/db/tables/t/rows", &body())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), &CdfErrorKind::Auth);
    assert!(err.to_string().contains("AADSTS7000215"), "{err}");
    assert!(
        cdf.received_requests().await.unwrap().is_empty(),
        "nothing reached CDF"
    );
    let task: TaskError = err.into();
    assert_eq!(task.kind(), TaskErrorKind::Authentication);
    tokens.shutdown();
}

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Buffer {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn dry_run_writes_ndjson_and_sends_nothing() {
    let cdf = MockServer::start().await;
    Mock::given(method("POST"))
        .and(header("authorization", "Bearer x"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&cdf)
        .await;
    let buffer = Buffer::default();
    let registry = prometheus::Registry::new();
    let client = CdfClient::new(
        &cognite(&cdf.uri(), 3),
        None,
        Some(DryRunSink::to_writer(buffer.clone())),
        &registry,
    )
    .unwrap();
    assert!(client.is_dry_run());
    for i in 0..3 {
        let answer = client
            .post(
                ROWS,
                "/raw/dbs/db/tables/t/rows?ensureParent=true",
                &json!({"items": [{"key": i}]}),
            )
            .await
            .unwrap();
        assert_eq!(answer, serde_json::Value::Null);
    }
    let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(
        lines[2],
        json!({"endpoint": ROWS, "path": "/raw/dbs/db/tables/t/rows?ensureParent=true", "body": {"items": [{"key": 2}]}})
    );
    assert!(cdf.received_requests().await.unwrap().is_empty());
}

/// Every request to CDF names the client as Cognite's SDKs do (`x-cdp-sdk`, `x-cdp-app`).
#[tokio::test]
async fn requests_identify_the_client() {
    let (idp, _) = idp().await;
    let cdf = MockServer::start().await;
    Mock::given(method("POST"))
        .and(header(
            "x-cdp-sdk",
            concat!("extractor-runtime:", env!("CARGO_PKG_VERSION")),
        ))
        .and(header("x-cdp-app", "extractor-runtime"))
        .and(header("authorization", "Bearer token-1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
        .expect(1)
        .mount(&cdf)
        .await;
    let (client, tokens) = make_client(&cdf, &idp, 0, &prometheus::Registry::new()).await;
    client
        .post(ROWS, "/raw/dbs/db/tables/t/rows", &body())
        .await
        .expect("the headers matched");
    tokens.shutdown();
}

/// A client with `connection` (flow-style YAML keys) for `cdf`.
fn client_with(
    cdf: &str,
    idp: &MockServer,
    connection: &str,
    registry: &prometheus::Registry,
) -> (CdfClient, TokenManager) {
    let tokens = support::token_manager(&idp.uri());
    let config = support::cognite(
        cdf,
        &format!(", connection: {{max-retry-backoff: 10ms, timeout: 2s, {connection}}}"),
    );
    let client = CdfClient::new(&config, Some(tokens.clone()), None, registry).unwrap();
    (client, tokens)
}

#[tokio::test]
async fn status_forcelist_and_max_retries_decide_what_is_retried() {
    let (idp, _) = idp().await;
    // Default: 500 is retried (max-retries 2: three requests in all).
    let (cdf, seen) = cdf_answering(vec![(500, None), (500, None), (500, None)]).await;
    let registry = prometheus::Registry::new();
    let (client, tokens) = client_with(&cdf.uri(), &idp, "max-retries: 2", &registry);
    let err = client
        .post(ROWS, "/raw/dbs/db/tables/t/rows", &body())
        .await
        .unwrap_err();
    assert_eq!(*err.kind(), CdfErrorKind::RetriesExhausted);
    assert_eq!(seen.lock().unwrap().len(), 3);
    tokens.shutdown();

    // python-extractor-utils' status-forcelist without 500: not retried, refused at once.
    let (cdf, seen) = cdf_answering(vec![(500, None), (500, None)]).await;
    let registry = prometheus::Registry::new();
    let (client, tokens) = client_with(
        &cdf.uri(),
        &idp,
        "max-retries: 2, status-forcelist: [429, 502, 503, 504]",
        &registry,
    );
    let err = client
        .post(ROWS, "/raw/dbs/db/tables/t/rows", &body())
        .await
        .unwrap_err();
    assert_eq!(*err.kind(), CdfErrorKind::Rejected);
    assert_eq!(seen.lock().unwrap().len(), 1);
    tokens.shutdown();

    // A status on the list is retried, even one outside the default (418).
    let (cdf, seen) = cdf_answering(vec![(418, None), (418, None)]).await;
    let registry = prometheus::Registry::new();
    let (client, tokens) = client_with(
        &cdf.uri(),
        &idp,
        "max-retries: 3, status_forcelist: [418]",
        &registry,
    );
    client
        .post(ROWS, "/raw/dbs/db/tables/t/rows", &body())
        .await
        .unwrap();
    assert_eq!(seen.lock().unwrap().len(), 3, "two 418s retried, then 200");
    assert_eq!(
        metric(
            &registry,
            "extractor_cdf_retries_total",
            &[("reason", "forcelist")]
        ),
        2.0
    );
    tokens.shutdown();
}

#[tokio::test]
async fn max_retries_connect_counts_requests_that_got_no_answer() {
    let (idp, _) = idp().await;
    // Nothing listens on this port: every attempt fails to connect.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    for (connect, retried) in [(0, 0.0), (2, 2.0)] {
        let registry = prometheus::Registry::new();
        let (client, tokens) = client_with(
            &closed,
            &idp,
            &format!("max-retries: 5, max-retries-connect: {connect}"),
            &registry,
        );
        let err = client
            .post(ROWS, "/raw/dbs/db/tables/t/rows", &body())
            .await
            .unwrap_err();
        assert_eq!(*err.kind(), CdfErrorKind::RetriesExhausted);
        assert_eq!(
            metric(&registry, "extractor_cdf_retries_total", &[]),
            retried,
            "max-retries-connect: {connect}"
        );
        tokens.shutdown();
    }
}

#[tokio::test]
async fn large_bodies_go_gzipped_and_retried_as_sent_unless_disabled() {
    let (idp, _) = idp().await;
    // A bulk request: 2 000 RAW rows, about 90 KiB of JSON.
    let rows: Vec<_> = (0..2_000)
        .map(|i| json!({"key": format!("k{i}"), "columns": {"n": i, "sensor": format!("s-{}", i % 9)}}))
        .collect();
    let large = json!({ "items": rows });
    let small = json!({"items": [{"key": "k", "columns": {}}]});
    for disabled in [false, true] {
        let cdf = MockServer::start().await;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        Mock::given(method("POST"))
            .and(path("/api/v1/projects/demo/raw/dbs/db/tables/t/rows"))
            .respond_with(move |req: &Request| {
                let mut seen = s.lock().unwrap();
                seen.push((
                    req.headers
                        .get("content-encoding")
                        .map(|v| v.to_str().unwrap().to_owned()),
                    req.body.len(),
                    support::json_body(req),
                ));
                // The first large body fails once: its retry must carry the same bytes.
                ResponseTemplate::new(if seen.len() == 1 { 503 } else { 200 })
                    .set_body_json(json!({}))
            })
            .mount(&cdf)
            .await;
        let connection = if disabled {
            ", connection: {max-retries: 2, max-retry-backoff: 1s, disable-gzip: true}"
        } else {
            ", connection: {max-retries: 2, max-retry-backoff: 1s}"
        };
        let tokens = support::token_manager(&idp.uri());
        let client = CdfClient::new(
            &support::cognite(&cdf.uri(), connection),
            Some(tokens.clone()),
            None,
            &prometheus::Registry::new(),
        )
        .unwrap();
        let path = "/raw/dbs/db/tables/t/rows";
        client.post(ROWS, path, &large).await.unwrap();
        client.post(ROWS, path, &small).await.unwrap();
        let seen = seen.lock().unwrap();
        let plain = serde_json::to_vec(&large).unwrap().len();
        let encodings: Vec<Option<&str>> = seen.iter().map(|(e, ..)| e.as_deref()).collect();
        if disabled {
            assert_eq!(encodings, [None, None, None]);
            assert_eq!(seen[0].1, plain);
        } else {
            // Large: gzipped (and its retry too); small: as it is.
            assert_eq!(encodings, [Some("gzip"), Some("gzip"), None]);
            assert!(seen[0].1 * 4 < plain, "{} bytes of {plain}", seen[0].1);
            assert_eq!(seen[0].1, seen[1].1);
        }
        assert_eq!(seen[0].2, large);
        assert_eq!(seen[1].2, large);
        assert_eq!(seen[2].2, small);
        tokens.shutdown();
    }
}

#[tokio::test]
async fn a_dry_run_writes_datapoints_as_json_with_protobuf_datapoints_on() {
    use extractor_runtime::queues::{Datapoint, DatapointValue, Queues};
    let buffer = Buffer::default();
    let registry = prometheus::Registry::new();
    let client = CdfClient::new(
        &support::cognite(
            "http://127.0.0.1:9",
            ", connection: {max-retries: 0, protobuf-datapoints: true}",
        ),
        None,
        Some(DryRunSink::to_writer(buffer.clone())),
        &registry,
    )
    .unwrap();
    let queues = Queues::new(client, 100, &registry).unwrap();
    queues
        .datapoints
        .add(Datapoint {
            external_id: "s".into(),
            timestamp: 5,
            value: DatapointValue::Numeric(1.5),
        })
        .await
        .unwrap();
    assert_eq!(queues.flush().await.unwrap(), 1);
    let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    let line: serde_json::Value = serde_json::from_str(text.trim()).expect("a JSON line");
    assert_eq!(
        line["body"],
        json!({"items": [{"externalId": "s", "datapoints": [{"timestamp": 5, "value": 1.5}]}]})
    );
}
