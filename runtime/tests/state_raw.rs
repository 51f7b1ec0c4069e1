//! The RAW state store against a fake CDF (wiremock): paged load, a missing table, save.

use extractor_runtime::auth::TokenManager;
use extractor_runtime::cdf::CdfClient;
use extractor_runtime::state::{RawStateStore, StateError, Watermarks};
use serde_json::json;
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

mod support;

use support::mount_token_endpoint;

const ROWS: &str = "/api/v1/projects/demo/raw/dbs/state%20db/tables/states/rows";

async fn make_client(server: &MockServer) -> (CdfClient, TokenManager) {
    mount_token_endpoint(server, "t").await;
    let cognite = support::cognite(&server.uri(), ", connection: {max-retries: 0}");
    let tokens = support::token_manager(&server.uri());
    (
        CdfClient::new(
            &cognite,
            Some(tokens.clone()),
            None,
            &prometheus::Registry::new(),
        )
        .unwrap(),
        tokens,
    )
}

#[tokio::test]
async fn loads_every_page_and_saves_every_key() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(ROWS))
        .and(query_param("cursor", "page-2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "items": [{"key": "b", "columns": {"low": null, "high": "2026-11-01"}}]
        })))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(ROWS))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "items": [{"key": "a", "columns": {"low": 1, "high": 10}}],
            "nextCursor": "page-2"
        })))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(ROWS))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({})))
        .mount(&server)
        .await;
    let (client, tokens) = make_client(&server).await;
    let store = RawStateStore::open(client, "state db", "states", false)
        .await
        .unwrap();
    assert_eq!(
        store.get("a"),
        Some(Watermarks {
            low: Some(json!(1)),
            high: Some(json!(10))
        })
    );
    assert_eq!(
        store.get("b"),
        Some(Watermarks {
            low: None,
            high: Some(json!("2026-11-01"))
        })
    );
    store.set(
        "c",
        Watermarks {
            low: Some(json!(0)),
            high: Some(json!(5)),
        },
    );
    store.save().await.unwrap();
    let saved = server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.method.as_str() == "POST" && r.url.path() == ROWS)
        .expect("a save");
    assert_eq!(saved.url.query(), Some("ensureParent=true"));
    let body = support::json_body(&saved);
    let keys: Vec<&str> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["a", "b", "c"]);
    assert_eq!(body["items"][2]["columns"], json!({"low": 0, "high": 5}));
    tokens.shutdown();
}

#[tokio::test]
async fn a_missing_table_is_an_empty_state_and_other_errors_stop() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(ROWS))
        .respond_with(
            ResponseTemplate::new(404)
                .set_body_json(json!({"error": {"code": 404, "message": "Table not found"}})),
        )
        .mount(&server)
        .await;
    let (client, tokens) = make_client(&server).await;
    let store = RawStateStore::open(client, "state db", "states", false)
        .await
        .unwrap();
    assert_eq!(store.get("a"), None);
    tokens.shutdown();

    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(ROWS))
        .respond_with(ResponseTemplate::new(403))
        .mount(&server)
        .await;
    let (client, tokens) = make_client(&server).await;
    let err = RawStateStore::open(client, "state db", "states", false)
        .await
        .unwrap_err();
    assert!(matches!(err, StateError::Raw(_)), "{err}");
    assert!(err.to_string().contains("HTTP 403"), "{err}");
    tokens.shutdown();
}

/// A peer whose cursor repeats (or never ends in empty pages) ends the load with an error
/// naming the table, after a bounded number of requests: it looped (~70 000 requests in 15 s).
#[tokio::test]
async fn a_repeating_cursor_or_endless_empty_pages_end_the_load() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(ROWS))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "items": [{"key": "a", "columns": {"high": 1}}],
            "nextCursor": "same"
        })))
        .mount(&server)
        .await;
    let (client, tokens) = make_client(&server).await;
    let err = RawStateStore::open(client, "state db", "states", false)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("state db/states") && err.contains("a cursor it had returned before"),
        "{err}"
    );
    let gets = |rs: Vec<wiremock::Request>| {
        rs.iter()
            .filter(|r| r.method == wiremock::http::Method::GET)
            .count()
    };
    assert_eq!(gets(server.received_requests().await.unwrap()), 2);
    tokens.shutdown();

    // Fresh cursors, empty pages, forever.
    let server = MockServer::start().await;
    let n = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    Mock::given(method("GET"))
        .and(path(ROWS))
        .respond_with(move |_: &wiremock::Request| {
            let i = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            ResponseTemplate::new(200)
                .set_body_json(json!({"items": [], "nextCursor": format!("c{i}")}))
        })
        .mount(&server)
        .await;
    let (client, tokens) = make_client(&server).await;
    let err = RawStateStore::open(client, "state db", "states", false)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("100 pages in a row were empty"), "{err}");
    assert_eq!(gets(server.received_requests().await.unwrap()), 100);
    tokens.shutdown();
}
