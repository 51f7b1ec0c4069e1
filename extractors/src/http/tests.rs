use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use extractor_runtime::{Extractor, TaskErrorKind};
use serde_json::json;
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use super::*;
use crate::testing::{config_of, context};

fn config(extra: serde_json::Value) -> HttpConfig {
    config_of(
        json!({
            "url": "http://127.0.0.1:1/items",
            "items": "/data",
            "retries": {"initial-backoff": "10ms", "max-backoff": "2s", "max-retries": 3},
            "destination": {"type": "raw", "database": "db", "table": "t", "key": "id"},
        }),
        extra,
    )
}

fn problems(extra: serde_json::Value) -> Vec<(String, String)> {
    Http::new(config(extra)).unwrap_err().problems().to_vec()
}

/// Why the config's deserializer refuses `extra` over the base config (key path and message).
fn refused(extra: serde_json::Value) -> String {
    let json = serde_json::to_string(&crate::testing::merged(
        json!({
            "url": "http://127.0.0.1:1/items",
            "destination": {"type": "raw", "database": "db", "table": "t", "key": "id"},
        }),
        extra,
    ))
    .unwrap();
    let e = extractor_runtime::testing::config::<HttpConfig>(&json).unwrap_err();
    let text = e.to_string();
    // `line:column: key.path: message`: the position is of the composed test file.
    text.splitn(3, ": ").skip(1).collect::<Vec<_>>().join(": ")
}

/// Answers the n-th request (counted per path) with `responses[n]`, then with the last one.
fn sequence(responses: Vec<ResponseTemplate>) -> impl Fn(&Request) -> ResponseTemplate {
    let n = Arc::new(AtomicUsize::new(0));
    move |_: &Request| {
        let i = n.fetch_add(1, Ordering::SeqCst);
        responses[i.min(responses.len() - 1)].clone()
    }
}

fn page(items: serde_json::Value, next: serde_json::Value) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({"data": items, "links": {"next": next}}))
}

#[test]
fn checks_the_config_with_key_paths() {
    assert_eq!(
        problems(json!({"url": "ftp://x/y"}))[0],
        ("url".into(), "must be http or https, not `ftp`".into())
    );
    assert_eq!(problems(json!({"url": "not a url"}))[0].0, "url");
    assert_eq!(problems(json!({"items": "data"}))[0].0, "items");
    assert_eq!(
        refused(json!({"pagination": {"type": "cursor", "pointer": "/next"}})),
        "tasks[0].config.pagination.param: `type: cursor` needs `param`"
    );
    assert_eq!(
        problems(json!({"pagination": {"type": "next-link", "pointer": "next"}}))[0].0,
        "pagination.pointer"
    );
    assert_eq!(
        refused(json!({"auth": {"type": "bearer"}})),
        "tasks[0].config.auth.token: `type: bearer` needs `token`"
    );
    assert_eq!(
        refused(json!({"auth": {"password": "p"}})),
        "tasks[0].config.auth.type: missing required key `type` (one of `none`, `bearer`, `basic`)"
    );
    assert_eq!(
        refused(json!({"auth": {"type": "bearer", "token": "t", "password": "p"}})),
        "tasks[0].config.auth.password: `password` does not apply to `type: bearer`"
    );
    assert_eq!(
        problems(json!({"body": {"a": 1}}))[0],
        ("body".into(), "a body needs `method: POST`".into())
    );
    assert_eq!(
        problems(json!({"incremental": {"field": "/a~", "param": "since"}}))[0].0,
        "incremental.field"
    );
    let p = problems(json!({"headers": {"X-Key": "secret-123\n"}}));
    assert_eq!(p[0].0, "headers.X-Key");
    assert!(!format!("{p:?}").contains("secret-123"));
    assert_eq!(
        problems(json!({"destination": {"type": "events"}}))[0].0,
        "destination"
    );
}

#[test]
fn secrets_stay_out_of_debug_output() {
    let http = Http::new(config(json!({
        "url": "https://u:url-secret-3@api.example.com/items?token=query-secret-4",
        "query": {"key": "query-secret-5"},
        "headers": {"X-Api-Key": "header-secret-1"},
        "auth": {"type": "basic", "username": "u", "password": "basic-secret-2"},
    })))
    .unwrap();
    let debug = format!("{http:?}");
    assert!(debug.contains("X-Api-Key"), "{debug}");
    assert!(
        debug.contains("https://u:***@api.example.com/items?"),
        "{debug}"
    );
    for secret in [
        "header-secret-1",
        "basic-secret-2",
        "url-secret-3",
        "query-secret-4",
        "query-secret-5",
    ] {
        assert!(!debug.contains(secret), "{debug}");
    }
}

/// Three pages by next link (relative, then absolute), a 429 with Retry-After on page 2 and a
/// 500 on page 3: every item arrives once, in order; the watermark is the highest `updated` and
/// goes out as `since` on the next run.
#[tokio::test]
async fn follows_next_links_through_429_and_500_and_keeps_a_watermark() {
    let server = MockServer::start().await;
    let base = server.uri();
    Mock::given(method("GET"))
        .and(path("/items"))
        .and(header("x-api-key", "k-1"))
        .and(header("authorization", "Bearer t-1"))
        .respond_with(sequence(vec![page(
            json!([{"id": "a", "updated": 3}, {"id": "b", "updated": 9}]),
            json!("/items/p2?x=1"),
        )]))
        .expect(2) // this run and the next
        .mount(&server)
        .await;
    Mock::given(path("/items/p2"))
        .respond_with(sequence(vec![
            ResponseTemplate::new(429).insert_header("retry-after", "1"),
            page(
                json!([{"id": "c", "updated": 5}]),
                json!(format!("{base}/items/p3")),
            ),
        ]))
        .expect(3)
        .mount(&server)
        .await;
    Mock::given(path("/items/p3"))
        .respond_with(sequence(vec![
            ResponseTemplate::new(500).set_body_string("oops"),
            page(json!([{"id": "d", "updated": 7}]), json!(null)),
        ]))
        .expect(3)
        .mount(&server)
        .await;

    let dir = tempfile::tempdir().unwrap();
    let http = Http::new(config(json!({
        "url": format!("{base}/items"),
        "headers": {"X-Api-Key": "k-1"},
        "auth": {"type": "bearer", "token": "t-1"},
        "pagination": {"type": "next-link", "pointer": "/links/next"},
        "incremental": {"field": "updated", "param": "since"},
    })))
    .unwrap();
    let (ctx, capture) = context("api", Some(&dir.path().join("s.json")), 100);
    let started = std::time::Instant::now();
    http.run(ctx.clone()).await.unwrap();
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(1),
        "Retry-After: 1 honoured"
    );
    assert_eq!(capture.raw_keys(), ["a", "b", "c", "d"]);
    assert_eq!(
        ctx.state().unwrap().get("api").unwrap().high,
        Some(json!(9))
    );

    capture.clear();
    http.run(ctx.clone()).await.unwrap();
    let requests = server.received_requests().await.unwrap();
    let last_first_page = requests.iter().rfind(|r| r.url.path() == "/items").unwrap();
    assert_eq!(last_first_page.url.query(), Some("since=9"));
    assert_eq!(
        capture.raw_keys(),
        ["a", "b", "c", "d"],
        "the fake API ignores `since`"
    );
}

#[tokio::test]
async fn follows_a_cursor_and_keeps_the_query() {
    let server = MockServer::start().await;
    Mock::given(path("/events"))
        .and(query_param("cursor", "c2"))
        .and(query_param("limit", "2"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"items": [{"id": 3}], "nextCursor": null})),
        )
        .mount(&server)
        .await;
    Mock::given(path("/events"))
        .and(query_param("limit", "2"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"items": [{"id": 1}, {"id": 2}], "nextCursor": "c2"})),
        )
        .mount(&server)
        .await;
    let http = Http::new(config(json!({
        "url": format!("{}/events", server.uri()),
        "query": {"limit": "2"},
        "items": "/items",
        "pagination": {"type": "cursor", "pointer": "/nextCursor", "param": "cursor"},
        "destination": {"type": "events", "external-id": "ev-{id}"},
    })))
    .unwrap();
    let (ctx, capture) = context("api", None, 100);
    http.run(ctx).await.unwrap();
    let ids: Vec<_> = capture
        .items()
        .iter()
        .map(|e| e["externalId"].clone())
        .collect();
    assert_eq!(ids, [json!("ev-1"), json!("ev-2"), json!("ev-3")]);
}

/// Malformed JSON on page 2: a permanent failure naming the URL and the position; page 1's items
/// were queued, but the watermark does not move, so the next run reads from the old one.
#[tokio::test]
async fn malformed_json_fails_the_run_without_moving_the_watermark() {
    let server = MockServer::start().await;
    let base = server.uri();
    Mock::given(path("/items"))
        .respond_with(page(json!([{"id": "a", "updated": 1}]), json!("/items/p2")))
        .mount(&server)
        .await;
    Mock::given(path("/items/p2"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_raw(r#"{"data": [{"id": "b",}"#, "application/json"),
        )
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let http = Http::new(config(json!({
        "url": format!("{base}/items"),
        "pagination": {"type": "next-link", "pointer": "/links/next"},
        "incremental": {"field": "updated", "param": "since", "initial": 0},
    })))
    .unwrap();
    let (ctx, capture) = context("api", Some(&dir.path().join("s.json")), 100);
    let e = http.run(ctx.clone()).await.unwrap_err();
    assert_eq!(e.kind(), TaskErrorKind::Permanent);
    let message = e.to_string();
    assert!(
        message.starts_with(&format!(
            "GET {base}/items/p2: the answer is not JSON: trailing comma at line 1 column 22"
        )),
        "{message}"
    );
    // Page 1's item is delivered, but the watermark does not move: items need not be sorted,
    // so the next run reads every page again.
    assert_eq!((ctx.queues().pending(), capture.raw_keys().len()), (0, 1));
    assert_eq!(ctx.state().unwrap().get("api"), None);
    let first = &server.received_requests().await.unwrap()[0];
    assert_eq!(
        first.url.query(),
        Some("since=0"),
        "`initial` is the first watermark"
    );
}

#[tokio::test]
async fn client_errors_are_permanent_and_retries_run_out() {
    let server = MockServer::start().await;
    Mock::given(path("/denied"))
        .respond_with(ResponseTemplate::new(401).set_body_string("bad key"))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path("/down"))
        .respond_with(ResponseTemplate::new(503))
        .expect(4)
        .mount(&server)
        .await;
    Mock::given(path("/object"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": {"id": 1}})))
        .mount(&server)
        .await;
    let (ctx, _) = context("api", None, 100);
    let run = |p: &str, extra: serde_json::Value| {
        let base = json!({"url": format!("{}{p}", server.uri()), "auth": {"type": "basic", "username": "u", "password": "pw-secret"}});
        Http::new(config(crate::testing::merged(base, extra))).unwrap()
    };
    let e = run("/denied", json!({}))
        .run(ctx.clone())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), TaskErrorKind::Permanent);
    assert!(
        e.to_string()
            .ends_with("/denied: 401 Unauthorized: bad key"),
        "{e}"
    );
    assert!(!e.to_string().contains("pw-secret"));
    let e = run("/down", json!({})).run(ctx.clone()).await.unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert!(
        e.to_string().starts_with("gave up after 4 attempts: GET "),
        "{e}"
    );
    let e = run("/object", json!({}))
        .run(ctx.clone())
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .ends_with("`items: \"/data\"` points to an object, not to an array"),
        "{e}"
    );
    // Connection refused is retried, then transient.
    let e = run("/x", json!({"url": "http://127.0.0.1:9/x"}))
        .run(ctx)
        .await
        .unwrap_err();
    assert!(e.is_transient(), "{e}");
}

#[tokio::test]
async fn posts_a_json_body() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/search"))
        .and(wiremock::matchers::body_json(
            json!({"filter": {"site": "oslo"}}),
        ))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!([{"t": 1000, "v": 2.5, "s": "x"}])),
        )
        .mount(&server)
        .await;
    let http = Http::new(config(json!({
        "url": format!("{}/search", server.uri()),
        "method": "POST",
        "body": {"filter": {"site": "oslo"}},
        "items": "",
        "destination": {"type": "datapoints", "external-id": "s", "timestamp": "t", "value": "v"},
    })))
    .unwrap();
    let (ctx, capture) = context("api", None, 100);
    http.run(ctx).await.unwrap();
    assert_eq!(
        capture.items(),
        [json!({"externalId": "x", "datapoints": [{"timestamp": 1000, "value": 2.5}]})]
    );
}

/// Query values from the config (an API key in `query:` or in `url`) never reach errors or
/// logs: they show as `***`; the pagination cursor and the watermark stay readable.
#[tokio::test]
async fn query_secrets_stay_out_of_errors() {
    let server = MockServer::start().await;
    Mock::given(path("/denied"))
        .respond_with(ResponseTemplate::new(401).set_body_string("bad key"))
        .mount(&server)
        .await;
    let (ctx, _) = context("api", None, 100);
    let http = Http::new(config(json!({
        "url": format!("{}/denied?token=url-secret-1", server.uri()),
        "query": {"api_key": "qk-secret-9"},
        "incremental": {"field": "t", "param": "since", "initial": 5},
    })))
    .unwrap();
    assert!(!format!("{http:?}").contains("qk-secret-9"));
    let e = http.run(ctx.clone()).await.unwrap_err().to_string();
    assert!(
        e.contains("/denied?token=***&api_key=***&since=5: 401 Unauthorized"),
        "{e}"
    );
    let refused = Http::new(config(json!({
        "url": "http://127.0.0.1:9/x",
        "query": {"api_key": "qk-secret-9"},
    })))
    .unwrap();
    let e = refused.run(ctx).await.unwrap_err().to_string();
    assert!(
        e.contains("api_key=***") && !e.contains("qk-secret-9"),
        "{e}"
    );
    // The request itself carried the real values.
    let sent = &server.received_requests().await.unwrap()[0];
    assert_eq!(
        sent.url.query(),
        Some("token=url-secret-1&api_key=qk-secret-9&since=5")
    );
}

/// The API key, the bearer token and query secrets go only to the configured origin: a next
/// link or a redirect to another host is refused with an error naming it, and that host never
/// sees a request. A redirect within the origin is followed.
#[tokio::test]
async fn credentials_never_follow_a_next_link_or_redirect_to_another_host() {
    let api = MockServer::start().await;
    let elsewhere = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(page(json!([{"id": "stolen"}]), json!(null)))
        .mount(&elsewhere)
        .await;
    Mock::given(path("/items"))
        .respond_with(page(
            json!([{"id": "a"}]),
            json!(format!("{}/items/p2", elsewhere.uri())),
        ))
        .mount(&api)
        .await;
    Mock::given(path("/moved"))
        .respond_with(
            ResponseTemplate::new(307)
                .insert_header("location", format!("{}/items", elsewhere.uri()).as_str()),
        )
        .mount(&api)
        .await;
    Mock::given(path("/here"))
        .respond_with(ResponseTemplate::new(301).insert_header("location", "/items/p3"))
        .mount(&api)
        .await;
    Mock::given(path("/items/p3"))
        .respond_with(page(json!([{"id": "b"}]), json!(null)))
        .mount(&api)
        .await;
    let http = |at: &str| {
        Http::new(config(json!({
            "url": format!("{}{at}?key=s3cr3t", api.uri()),
            "headers": {"X-Api-Key": "k-1"},
            "auth": {"type": "bearer", "token": "t-1"},
            "pagination": {"type": "next-link", "pointer": "/links/next"},
        })))
        .unwrap()
    };
    let (ctx, capture) = context("api", None, 100);

    let e = http("/items").run(ctx.clone()).await.unwrap_err();
    assert_eq!(e.kind(), TaskErrorKind::Permanent, "{e}");
    let text = e.to_string();
    assert!(
        text.contains(&format!("the next link points to {}", elsewhere.uri()))
            && !text.contains("s3cr3t"),
        "{text}"
    );
    assert_eq!(capture.raw_keys(), ["a"], "the page before it is delivered");

    let e = http("/moved")
        .run(ctx.clone())
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("another origin") && !e.contains("s3cr3t"), "{e}");
    assert!(
        elsewhere.received_requests().await.unwrap().is_empty(),
        "the other host got nothing"
    );

    capture.clear();
    http("/here").run(ctx).await.unwrap();
    assert_eq!(
        capture.raw_keys(),
        ["b"],
        "a redirect within the origin is followed"
    );
}

/// A page larger than `max-response-size` fails the run naming its URL and the limit, and is
/// never held whole; the pages before it are delivered.
#[tokio::test]
async fn a_page_over_max_response_size_is_refused() {
    let server = MockServer::start().await;
    Mock::given(path("/items"))
        .respond_with(page(json!([{"id": "a"}]), json!("/big")))
        .mount(&server)
        .await;
    let huge = format!(r#"{{"data": [{{"id": "{}"}}]}}"#, "x".repeat(3 << 20));
    Mock::given(path("/big"))
        .respond_with(ResponseTemplate::new(200).set_body_string(huge))
        .mount(&server)
        .await;
    let http = Http::new(config(json!({
        "url": format!("{}/items", server.uri()),
        "max-response-size": "1MiB",
        "pagination": {"type": "next-link", "pointer": "/links/next"},
    })))
    .unwrap();
    let (ctx, capture) = context("api", None, 100);
    let e = http.run(ctx).await.unwrap_err();
    assert_eq!(e.kind(), TaskErrorKind::Permanent);
    assert!(
        e.to_string()
            .contains("/big: the answer is larger than max-response-size (1 MiB)"),
        "{e}"
    );
    assert_eq!(capture.raw_keys(), ["a"]);
}
