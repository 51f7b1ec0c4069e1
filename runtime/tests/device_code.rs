//! The device authorization grant's polling rules (RFC 8628 3.5) against a scripted token
//! endpoint: `authorization_pending` waits the interval, `slow_down` adds 5 s, `access_denied`
//! and `expired_token` end the sign-in with what to do; the refresh token lands in the cache.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use extractor_runtime::Secret;
use extractor_runtime::auth::login_device_code;
use extractor_runtime::config::{Flow, IdpAuthenticationConfig};
use extractor_runtime::net::Network;
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

/// A provider whose token endpoint answers `script` in turn (the last one again after that);
/// returns the instants of the polls.
async fn provider(script: Vec<(u16, serde_json::Value)>) -> (MockServer, Arc<Mutex<Vec<Instant>>>) {
    provider_with(
        json!({
            "device_code": "dc-secret-1", "user_code": "ABCD-EFGH",
            "verification_uri": "https://microsoft.com/devicelogin",
            "expires_in": 900, "interval": 1,
            "message": "To sign in, use a web browser"
        }),
        script,
    )
    .await
}

/// [`provider`] with this device authorization answer.
async fn provider_with(
    device: serde_json::Value,
    script: Vec<(u16, serde_json::Value)>,
) -> (MockServer, Arc<Mutex<Vec<Instant>>>) {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/t/oauth2/v2.0/devicecode"))
        .respond_with(ResponseTemplate::new(200).set_body_json(device))
        .mount(&server)
        .await;
    let polls = Arc::new(Mutex::new(Vec::new()));
    let p = polls.clone();
    Mock::given(method("POST"))
        .and(path("/t/oauth2/v2.0/token"))
        .respond_with(move |r: &Request| {
            let body = String::from_utf8_lossy(&r.body).into_owned();
            assert!(
                body.contains("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Adevice_code"),
                "{body}"
            );
            assert!(
                body.contains("device_code=dc-secret-1") && body.contains("client_id=public-app"),
                "{body}"
            );
            let mut polls = p.lock().unwrap();
            polls.push(Instant::now());
            let (status, answer) = script[(polls.len() - 1).min(script.len() - 1)].clone();
            ResponseTemplate::new(status).set_body_json(answer)
        })
        .mount(&server)
        .await;
    (server, polls)
}

fn config(server: &MockServer, cache: &std::path::Path) -> IdpAuthenticationConfig {
    let mut c = IdpAuthenticationConfig::new(
        "public-app",
        Secret::new(""),
        format!("{}/t/oauth2/v2.0/token", server.uri()),
        vec!["api".into()],
    );
    c.secret = None;
    c.flow = Flow::DeviceCode;
    c.cache_file = Some(cache.join("login.json").display().to_string());
    c
}

/// Signs in through `server` with the cache in `dir`: the outcome, and the lines shown.
async fn sign_in(
    server: &MockServer,
    dir: &std::path::Path,
) -> (
    Result<extractor_runtime::auth::LoginOutcome, extractor_runtime::auth::AuthError>,
    Vec<String>,
) {
    let mut shown = Vec::new();
    let outcome = login_device_code(&config(server, dir), &Network::default(), &mut |l: &str| {
        shown.push(l.to_owned())
    })
    .await;
    (outcome, shown)
}

fn pending(error: &str) -> (u16, serde_json::Value) {
    (
        400,
        json!({"error": error, "error_description": format!("AADSTS70016: {error}")}),
    )
}

#[tokio::test]
async fn pending_waits_and_slow_down_adds_five_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let (server, polls) = provider(vec![
        pending("authorization_pending"),
        pending("slow_down"),
        (
            200,
            json!({"access_token": "at", "token_type": "Bearer", "expires_in": 3600,
                     "refresh_token": "rt-secret-9"}),
        ),
    ])
    .await;
    let (outcome, shown) = sign_in(&server, dir.path()).await;
    let outcome = outcome.unwrap();
    assert_eq!(
        shown,
        ["To sign in, open https://microsoft.com/devicelogin and enter the code ABCD-EFGH"]
    );
    let polls = polls.lock().unwrap().clone();
    assert_eq!(polls.len(), 3);
    let gap = |i: usize| polls[i] - polls[i - 1];
    assert!(
        gap(1) >= Duration::from_secs(1) && gap(1) < Duration::from_secs(3),
        "{:?}",
        gap(1)
    );
    assert!(
        gap(2) >= Duration::from_secs(6),
        "slow_down: 1 s + 5 s, was {:?}",
        gap(2)
    );
    let saved = std::fs::read_to_string(&outcome.cache_file).unwrap();
    assert!(saved.contains("rt-secret-9"));
}

#[tokio::test]
async fn declined_and_expired_sign_ins_say_what_happened() {
    for (error, expected) in [
        ("access_denied", "the sign-in was declined"),
        (
            "expired_token",
            "the code expired before the sign-in was finished",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (server, _) = provider(vec![pending(error)]).await;
        let e = sign_in(&server, dir.path()).await.0.unwrap_err();
        assert!(e.is_permanent());
        assert!(e.to_string().contains(expected), "{e}");
        assert!(!e.to_string().contains("dc-secret-1"));
        assert!(!dir.path().join("login.json").exists());
    }
}

/// A spoofed provider's answer cannot drive the terminal: escape sequences in the URL and the
/// code are shown escaped. A fractional `interval` (RFC 8628 types it as a number) is used.
#[tokio::test]
async fn a_hostile_answer_is_shown_escaped_and_a_fractional_interval_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (server, polls) = provider_with(
        json!({
            "device_code": "dc-secret-1", "user_code": "AB\x1b[31mCD",
            "verification_uri": "https://evil.example/\x1b[2J\x1b]0;Microsoft\x07\r\nhttps://microsoft.com/devicelogin",
            "expires_in": 900, "interval": 1.5
        }),
        vec![
            pending("authorization_pending"),
            (200, json!({"access_token": "at", "token_type": "Bearer", "expires_in": 3600, "refresh_token": "rt"})),
        ],
    )
    .await;
    let (outcome, shown) = sign_in(&server, dir.path()).await;
    outcome.unwrap();
    assert_eq!(
        shown,
        [
            r"To sign in, open https://evil.example/\u{1b}[2J\u{1b}]0;Microsoft\u{7}\r\nhttps://microsoft.com/devicelogin and enter the code AB\u{1b}[31mCD"
        ]
    );
    let polls = polls.lock().unwrap().clone();
    assert_eq!(polls.len(), 2);
    let gap = polls[1] - polls[0];
    assert!(
        gap >= Duration::from_millis(1500) && gap < Duration::from_millis(2500),
        "{gap:?}"
    );
}

/// An `interval` longer than the code lives is cut to the time left: the sign-in ends at
/// `expires_in`, not a whole interval later.
#[tokio::test]
async fn polling_ends_when_the_code_expires_not_an_interval_later() {
    let dir = tempfile::tempdir().unwrap();
    let (server, polls) = provider_with(
        json!({
            "device_code": "dc-secret-1", "user_code": "ABCD",
            "verification_uri": "https://microsoft.com/devicelogin",
            "expires_in": 2, "interval": 60
        }),
        vec![pending("authorization_pending")],
    )
    .await;
    let started = Instant::now();
    let e = sign_in(&server, dir.path()).await.0.unwrap_err();
    assert!(e.to_string().contains("the code expired"), "{e}");
    assert_eq!(polls.lock().unwrap().len(), 1, "one poll, at expiry");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}
