//! The token manager against an in-process fake token endpoint (wiremock), with faults injected.
//!
//! Delays are scaled down (backoff 20-200 ms, permanent retry 1 s) so the suite runs in seconds;
//! the refresh policy itself is tested on exact numbers in `auth::policy`.

use std::ops::Add as _;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use extractor_runtime::Secret;
use extractor_runtime::auth::{AuthErrorKind, TokenManager, TokenManagerOptions};
use extractor_runtime::config::{AuthMethod, IdpAuthenticationConfig};
use wiremock::matchers::{body_string_contains, header, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

mod support;

#[derive(Clone, Debug)]
enum Fault {
    Status(u16),
    TooMany { retry_after: u64 },
    Json(u16, &'static str),
    Hang,
    Malformed,
    ExpiresAsString,
}

/// A fake token endpoint: counts requests and answers with the fault currently set.
struct FakeIdp {
    server: support::fake_cdf::Server,
    requests: Arc<AtomicUsize>,
    fault: Arc<Mutex<Option<Fault>>>,
}

impl FakeIdp {
    async fn start(expires_in: u64, delay: Duration) -> FakeIdp {
        Self::start_on(MockServer::start().await, expires_in, delay).await
    }

    async fn start_on(server: MockServer, expires_in: u64, delay: Duration) -> FakeIdp {
        let requests = Arc::new(AtomicUsize::new(0));
        let fault: Arc<Mutex<Option<Fault>>> = Arc::new(Mutex::new(None));
        let (r, f) = (requests.clone(), fault.clone());
        Mock::given(method("POST"))
            .and(path("/token"))
            .and(body_string_contains("grant_type=client_credentials"))
            .respond_with(move |_: &Request| {
                let n = r.fetch_add(1, Ordering::SeqCst) + 1;
                let ok = |expires: serde_json::Value| {
                    ResponseTemplate::new(200)
                        .set_body_json(serde_json::json!({
                            "access_token": format!("token-{n}"),
                            "token_type": "Bearer",
                            "expires_in": expires,
                        }))
                        .set_delay(delay)
                };
                match f.lock().unwrap().clone() {
                    None => ok(serde_json::json!(expires_in)),
                    Some(Fault::ExpiresAsString) => ok(serde_json::json!(expires_in.to_string())),
                    Some(Fault::Status(s)) => {
                        ResponseTemplate::new(s).set_body_string("upstream trouble")
                    }
                    Some(Fault::TooMany { retry_after }) => ResponseTemplate::new(429)
                        .insert_header("Retry-After", retry_after.to_string().as_str()),
                    Some(Fault::Json(s, body)) => ResponseTemplate::new(s)
                        .insert_header("Content-Type", "application/json")
                        .set_body_string(body),
                    Some(Fault::Hang) => {
                        ResponseTemplate::new(200).set_delay(Duration::from_secs(30))
                    }
                    Some(Fault::Malformed) => {
                        ResponseTemplate::new(200).set_body_string("{\"access_token\": \"x\", ")
                    }
                }
            })
            .mount(&server)
            .await;
        FakeIdp {
            server: support::fake_cdf::Server::new(server),
            requests,
            fault,
        }
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    fn set(&self, fault: Option<Fault>) {
        *self.fault.lock().unwrap() = fault;
    }

    fn url(&self) -> String {
        format!("{}/token", self.server.uri())
    }
}

const SECRET: &str = "client-secret-never-shown";

fn idp_config(token_url: String) -> IdpAuthenticationConfig {
    IdpAuthenticationConfig {
        min_ttl: Duration::from_secs(1).into(),
        ..IdpAuthenticationConfig::new(
            "my-client",
            Secret::new(SECRET),
            token_url,
            vec!["https://api.cognitedata.com/.default".into()],
        )
    }
}

fn fast_options() -> TokenManagerOptions {
    TokenManagerOptions {
        request_timeout: Duration::from_millis(500),
        wait_timeout: Duration::from_secs(3),
        min_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        permanent_retry: Duration::from_secs(1),
        // These tests force refreshes of tokens just issued.
        min_forced_refresh: Duration::ZERO,
        ..TokenManagerOptions::default()
    }
}

/// Waits (real time, bounded) until `cond` holds.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..200 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// The common fault scenario: a token is served; the fault starts; a forced refresh fails with
/// `expect`; the old token keeps being served; the fault clears; the manager recovers on its own.
async fn fault_scenario(fault: Fault, expect: AuthErrorKind) -> (FakeIdp, String) {
    let idp = FakeIdp::start(3600, Duration::ZERO).await;
    let tokens = TokenManager::spawn(&idp_config(idp.url()), fast_options(), None).unwrap();
    let first = tokens.get().await.unwrap();
    assert_eq!(first.access_token().expose_secret(), "token-1");
    assert_eq!(idp.requests(), 1);

    idp.set(Some(fault.clone()));
    let err = tokens.force_refresh(&first).await.unwrap_err();
    assert_eq!(err.kind(), expect, "{fault:?}: {err}");
    let message = err.to_string();
    assert!(!message.contains(SECRET), "{message}");
    assert!(idp.requests() >= 2);

    // The old token is still valid, so readers keep getting it without waiting.
    let served = tokens.get().await.unwrap();
    assert_eq!(
        served.access_token().expose_secret(),
        "token-1",
        "{fault:?}"
    );
    assert!(tokens.try_get().is_some());

    idp.set(None);
    // No caller needs to ask again: the background task retries and picks up a new token.
    eventually("recovery", || {
        tokens
            .try_get()
            .is_some_and(|t| t.access_token().expose_secret() != "token-1")
    })
    .await;
    let after = tokens.force_refresh(&first).await.unwrap();
    assert_ne!(after.access_token().expose_secret(), "token-1");
    tokens.shutdown();
    (idp, message)
}

#[tokio::test]
async fn http_503_is_transient_and_recovers() {
    let (idp, msg) = fault_scenario(Fault::Status(503), AuthErrorKind::Transient).await;
    assert!(msg.contains("HTTP 503"), "{msg}");
    assert!(idp.requests() >= 3);
}

#[tokio::test]
async fn http_500_is_transient_and_recovers() {
    let (_, msg) = fault_scenario(Fault::Status(500), AuthErrorKind::Transient).await;
    assert!(msg.contains("HTTP 500"), "{msg}");
}

#[tokio::test]
async fn malformed_json_is_transient_and_recovers() {
    let (_, msg) = fault_scenario(Fault::Malformed, AuthErrorKind::Transient).await;
    assert!(msg.contains("malformed JSON"), "{msg}");
}

#[tokio::test]
async fn a_hanging_endpoint_times_out_as_transient_and_recovers() {
    let (_, msg) = fault_scenario(Fault::Hang, AuthErrorKind::Transient).await;
    assert!(msg.contains("timed out"), "{msg}");
}

#[tokio::test]
async fn invalid_scope_is_permanent() {
    let body = r#"{"error":"invalid_scope","error_description":"AADSTS70011: The provided value for scope is not valid.","error_codes":[70011],"trace_id":"t-70011","correlation_id":"c-70011"}"#;
    let (_, msg) = fault_scenario(Fault::Json(400, body), AuthErrorKind::Permanent).await;
    assert!(
        msg.contains("AADSTS70011") && msg.contains("trace id t-70011"),
        "{msg}"
    );
}

#[tokio::test]
async fn http_429_honours_retry_after() {
    let idp = FakeIdp::start(3600, Duration::ZERO).await;
    let tokens = TokenManager::spawn(&idp_config(idp.url()), fast_options(), None).unwrap();
    let first = tokens.get().await.unwrap();
    idp.set(Some(Fault::TooMany { retry_after: 2 }));
    let err = tokens.force_refresh(&first).await.unwrap_err();
    assert_eq!(err.kind(), AuthErrorKind::Throttled);
    assert_eq!(err.retry_after(), Some(Duration::from_secs(2)));
    assert_eq!(idp.requests(), 2);
    idp.set(None);
    // Callers keep asking, but nobody calls the endpoint again before Retry-After has passed.
    for _ in 0..10 {
        let waited =
            tokio::time::timeout(Duration::from_millis(100), tokens.force_refresh(&first)).await;
        assert!(
            waited.is_err(),
            "callers wait for the throttled refresh: {waited:?}"
        );
    }
    assert_eq!(idp.requests(), 2, "a request went out during Retry-After");
    assert_eq!(
        tokens.try_get().unwrap().access_token().expose_secret(),
        "token-1"
    );
    eventually("recovery after Retry-After", || idp.requests() == 3).await;
    let t = tokens.force_refresh(&first).await.unwrap();
    assert_eq!(t.access_token().expose_secret(), "token-3");
    tokens.shutdown();
}

#[tokio::test]
async fn bad_secret_fails_fast_with_its_codes_and_recovers_slowly() {
    let idp = FakeIdp::start(3600, Duration::ZERO).await;
    idp.set(Some(Fault::Json(
        401,
        r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value.","error_codes":[7000215],"trace_id":"trace-abc","correlation_id":"corr-def"}"#,
    )));
    let tokens = TokenManager::spawn(&idp_config(idp.url()), fast_options(), None).unwrap();
    let started = std::time::Instant::now();
    let err = tokens.get().await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "a permanent failure returns at once"
    );
    assert!(err.is_permanent());
    assert_eq!(err.aadsts_code(), Some(7000215));
    assert_eq!(err.oauth_error(), Some("invalid_client"));
    assert_eq!(err.trace_id(), Some("trace-abc"));
    assert_eq!(err.correlation_id(), Some("corr-def"));
    assert!(tokens.has_permanent_failure() && !tokens.is_ready());
    // No quick retries: the permanent retry interval (1 s here, 5 min by default) is kept.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(idp.requests(), 1);
    // The secret is fixed (the endpoint stops refusing): the manager recovers without restart.
    idp.set(None);
    eventually("recovery", || tokens.is_ready()).await;
    assert_eq!(idp.requests(), 2);
    tokens.shutdown();
}

#[tokio::test]
async fn expires_in_as_a_string_is_accepted() {
    let idp = FakeIdp::start(3600, Duration::ZERO).await;
    idp.set(Some(Fault::ExpiresAsString));
    let tokens = TokenManager::spawn(&idp_config(idp.url()), fast_options(), None).unwrap();
    let t = tokens.get().await.unwrap();
    let remaining = t.remaining();
    assert!(
        remaining > Duration::from_secs(3590) && remaining <= Duration::from_secs(3600),
        "{remaining:?}"
    );
    tokens.shutdown();
}

#[tokio::test]
async fn connection_refused_is_transient_then_recovers_when_the_endpoint_comes_up() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let options = TokenManagerOptions {
        wait_timeout: Duration::from_millis(700),
        ..fast_options()
    };
    let tokens =
        TokenManager::spawn(&idp_config(format!("http://{addr}/token")), options, None).unwrap();
    let err = tokens.get().await.unwrap_err();
    assert_eq!(err.kind(), AuthErrorKind::NoValidToken, "{err}");
    let last = err.last_error().expect("the last failure is attached");
    assert_eq!(last.kind(), AuthErrorKind::Transient);
    assert!(err.to_string().contains("could not connect"), "{err}");
    assert!(!tokens.has_permanent_failure());

    let listener = std::net::TcpListener::bind(addr).unwrap();
    let idp = FakeIdp::start_on(
        MockServer::builder().listener(listener).start().await,
        3600,
        Duration::ZERO,
    )
    .await;
    let t = tokens.get().await.unwrap();
    assert_eq!(t.access_token().expose_secret(), "token-1");
    assert_eq!(idp.requests(), 1);
    tokens.shutdown();
}

#[tokio::test]
async fn refreshes_in_the_background_before_expiry() {
    // 3 s tokens with min-ttl 1 s: refreshed 1.35-1.5 s after each fetch.
    let idp = FakeIdp::start(3, Duration::ZERO).await;
    let tokens = TokenManager::spawn(&idp_config(idp.url()), fast_options(), None).unwrap();
    let first = tokens.get().await.unwrap();
    assert_eq!(idp.requests(), 1);
    tokio::time::sleep(Duration::from_millis(1700)).await;
    assert_eq!(idp.requests(), 2, "one background refresh");
    let second = tokens.try_get().expect("a valid token without waiting");
    assert!(second.expires_at() > first.expires_at());
    tokens.shutdown();
}

/// Regression: a fake dropped by a task that had spent tokio's cooperative budget (after awaiting
/// a thousand ready join handles) spun for ever inside wiremock's `Drop` (two tests here hung
/// until the watchdog). The wrapper drops it with the budget lifted.
#[tokio::test]
async fn a_fake_dropped_with_the_budget_spent_returns() {
    let idp = FakeIdp::start(3600, Duration::ZERO).await;
    while tokio::task::coop::has_budget_remaining() {
        tokio::task::coop::consume_budget().await;
    }
    // A hang cannot fail an assertion: the watchdog ends the process instead.
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if done_rx.recv_timeout(Duration::from_secs(10)).is_err() {
            eprintln!("dropping the fake with the budget spent spun for 10 s");
            std::process::abort();
        }
    });
    drop(idp);
    done_tx.send(()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_callers_cause_one_request() {
    // The endpoint is slow, so every caller arrives while the refresh is in flight.
    let idp = FakeIdp::start(3600, Duration::from_millis(200)).await;
    let tokens = TokenManager::spawn(&idp_config(idp.url()), fast_options(), None).unwrap();
    let first = tokens.get().await.unwrap();
    assert_eq!(idp.requests(), 1);
    let mut handles = Vec::new();
    for i in 0..1000 {
        let tokens = tokens.clone();
        let first = first.clone();
        handles.push(tokio::spawn(async move {
            if i % 2 == 0 {
                tokens.force_refresh(&first).await.unwrap()
            } else {
                tokens.get().await.unwrap()
            }
        }));
    }
    let mut refreshed = 0;
    for h in handles {
        let t = h.await.unwrap();
        if t.access_token().expose_secret() == "token-2" {
            refreshed += 1;
        }
    }
    assert!(
        refreshed >= 500,
        "every force_refresh caller got the new token ({refreshed})"
    );
    assert_eq!(idp.requests(), 2, "exactly one refresh request");
    tokens.shutdown();
}

#[tokio::test]
async fn basic_auth_sends_an_authorization_header_and_no_secret_in_the_body() {
    let server = MockServer::start().await;
    // base64("my%3Aclient:p%40ss+word") with the id and secret form-urlencoded first.
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(header(
            "Authorization",
            "Basic bXklM0FjbGllbnQ6cCU0MHNzK3dvcmQ=",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "access_token": "basic-ok", "expires_in": 3600
        })))
        .mount(&server)
        .await;
    let mut config = idp_config(format!("{}/token", server.uri()));
    config.client_id = "my:client".into();
    config.secret = Some(Secret::new("p@ss word"));
    config.auth_method = AuthMethod::Basic;
    config.audience = Some("aud-1".into());
    let tokens = TokenManager::spawn(&config, fast_options(), None).unwrap();
    let t = tokens.get().await.unwrap();
    assert_eq!(t.access_token().expose_secret(), "basic-ok");
    let received = server.received_requests().await.unwrap();
    let body = String::from_utf8_lossy(&received[0].body).into_owned();
    assert!(
        !body.contains("client_secret") && !body.contains("p%40ss"),
        "{body}"
    );
    assert!(
        body.contains("audience=aud-1") && body.contains("scope=https"),
        "{body}"
    );
    tokens.shutdown();
}

#[tokio::test]
async fn metrics_count_results_and_nothing_renders_a_secret() {
    let idp = FakeIdp::start(3600, Duration::ZERO).await;
    let registry = prometheus::Registry::new();
    let tokens =
        TokenManager::spawn(&idp_config(idp.url()), fast_options(), Some(&registry)).unwrap();
    let first = tokens.get().await.unwrap();
    idp.set(Some(Fault::Status(503)));
    let _ = tokens.force_refresh(&first).await.unwrap_err();
    let text = support::metrics_text(&registry);
    assert!(
        text.contains("extractor_token_refresh_total{result=\"success\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("extractor_token_refresh_total{result=\"transient\"}"),
        "{text}"
    );
    assert!(
        text.contains("extractor_token_consecutive_failures "),
        "{text}"
    );
    assert!(
        text.contains("extractor_token_expiry_timestamp_seconds "),
        "{text}"
    );
    for rendered in [text, format!("{tokens:?}"), format!("{first:?}")] {
        assert!(
            !rendered.contains(SECRET) && !rendered.contains("token-1"),
            "{rendered}"
        );
    }
    tokens.shutdown();
    let err = tokens.get().await;
    // After shutdown the still-valid token may be served; a caller never hangs.
    if let Err(e) = err {
        assert!(
            matches!(e.kind(), AuthErrorKind::ShutDown | AuthErrorKind::Transient),
            "{e}"
        );
    }
}

/// Regression: a waiter that looked at the token just before a refresh landed, then subscribed to
/// the status after it, slept through the wake-up and timed out (found by the herd benchmark).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_to_back_herds_with_a_fast_endpoint_lose_no_wakeup() {
    let idp = FakeIdp::start(3600, Duration::ZERO).await;
    let tokens = TokenManager::spawn(&idp_config(idp.url()), fast_options(), None).unwrap();
    let herds = 100;
    for i in 0..herds {
        let rejected = tokens.get().await.unwrap();
        let handles: Vec<_> = (0..1000)
            .map(|_| {
                let (tokens, rejected) = (tokens.clone(), rejected.clone());
                tokio::spawn(async move { tokens.force_refresh(&rejected).await })
            })
            .collect();
        for h in handles {
            let t = h.await.unwrap().unwrap_or_else(|e| panic!("herd {i}: {e}"));
            assert!(t.access_token().expose_secret() != rejected.access_token().expose_secret());
        }
    }
    assert_eq!(idp.requests(), 1 + herds, "one request per herd");
    tokens.shutdown();
}

/// A token endpoint that redirects (307 keeps the POST body, so a client that followed would
/// re-send the secret) is never followed: a permanent error naming where it pointed, and the
/// other host receives nothing. An endless answer is cut off, not buffered.
#[tokio::test]
async fn redirects_are_not_followed_and_huge_answers_are_not_read() {
    let elsewhere = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"access_token": "stolen", "expires_in": 3600})),
        )
        .mount(&elsewhere)
        .await;
    let idp = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(
            ResponseTemplate::new(307).insert_header(
                "Location",
                // A password in the Location is never repeated in the error.
                elsewhere
                    .uri()
                    .replace("http://", "http://u:pw-in-location@")
                    .add("/collect?x=1")
                    .as_str(),
            ),
        )
        .mount(&idp)
        .await;
    let err = first_token_error(&idp).await;
    assert_eq!(err.kind(), AuthErrorKind::Permanent, "{err}");
    let text = err.to_string();
    assert!(
        text.contains("HTTP 307 redirecting to")
            && text.contains("/collect;")
            && !text.contains("x=1")
            && !text.contains("pw-in-location"),
        "{text}"
    );
    assert!(!text.contains(SECRET));
    assert!(
        elsewhere.received_requests().await.unwrap().is_empty(),
        "the secret never left for the other host"
    );

    let huge = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(200).set_body_string("x".repeat(3 * 1024 * 1024)))
        .mount(&huge)
        .await;
    let err = first_token_error(&huge).await;
    let last = err.last_error().unwrap_or(&err).to_string();
    assert!(last.contains("larger than 1024 KiB"), "{err}");
}

/// The error of the first `get()` from a manager on `idp`'s `/token`.
async fn first_token_error(idp: &MockServer) -> extractor_runtime::auth::AuthError {
    let tokens = TokenManager::spawn(
        &idp_config(format!("{}/token", idp.uri())),
        fast_options(),
        None,
    )
    .unwrap();
    let err = tokens.get().await.unwrap_err();
    tokens.shutdown();
    err
}

/// Tokens that live no longer than `min-ttl` (10 s with the default 30 s) are used, with a
/// quarter of their life as margin, instead of stalling every task; `short_lived()` says why
/// (for `/readyz`), and they are refreshed before they run out.
#[tokio::test]
async fn tokens_shorter_than_min_ttl_are_used_not_refused() {
    let idp = MockServer::start().await;
    let issued = support::counting_token_endpoint(&idp, 2).await;
    // The default min-ttl (30 s) is far above the tokens' 2 s.
    let config = IdpAuthenticationConfig {
        min_ttl: Duration::from_secs(30).into(),
        ..idp_config(format!("{}/token", idp.uri()))
    };
    let tokens = TokenManager::spawn(&config, fast_options(), None).unwrap();
    let first = tokens.get().await.expect("a 2 s token is used");
    assert_eq!(tokens.short_lived(), Some(Duration::from_secs(2)));
    // /readyz's token check passes and names the cause.
    let health = extractor_runtime::metrics::Health::new();
    health.add_check(tokens.clone());
    let check = health
        .checks()
        .into_iter()
        .find(|c| c.name == "token")
        .unwrap();
    assert!(check.ok, "{}", check.detail);
    assert!(
        check
            .detail
            .contains("tokens live only 2s, no longer than min-ttl: lower min-ttl"),
        "{}",
        check.detail
    );
    // Refreshed ahead of its end: a later get() hands out a newer, valid token at once.
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let later = tokens.get().await.unwrap();
    assert_ne!(
        later.access_token().expose_secret(),
        first.access_token().expose_secret()
    );
    assert!(issued.load(Ordering::SeqCst) >= 2);
    tokens.shutdown();
}
