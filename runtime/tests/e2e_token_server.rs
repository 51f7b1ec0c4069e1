//! End to end against a real third-party OAuth2 server: oauth2-mock-server from npm, wrapped by
//! `../shared/tools/token-server.mjs` (real RS256 JWTs). Tokens live 5 s; the manager runs for
//! 60 s while a reader takes tokens every 50 ms.
//!
//! Needs `../shared` and the npm packages (`.ci/run` installs them and sets
//! `TOKEN_SERVER_NODE_MODULES`). Where they are absent (a user's clone) the test says that it
//! skipped; with `CI=true` it fails instead.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use extractor_runtime::Secret;
use extractor_runtime::auth::{TokenManager, TokenManagerOptions};
use extractor_runtime::config::IdpAuthenticationConfig;

mod support;

async fn stats(port: u16) -> serde_json::Value {
    reqwest::get(format!("http://127.0.0.1:{port}/__stats"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_second_tokens_over_a_minute() {
    let scope = "https://api.cognitedata.com/.default";
    let run_for = Duration::from_secs(
        std::env::var("E2E_TOKEN_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(60),
    );
    let Some((server, port)) = support::prism::token_server(&[
        "--expires-in",
        "5",
        "--client-id",
        "e2e-client",
        "--client-secret",
        "e2e-secret",
        "--scope",
        scope,
    ]) else {
        return;
    };

    let min_ttl = Duration::from_secs(1);
    let config = IdpAuthenticationConfig {
        min_ttl: min_ttl.into(),
        ..IdpAuthenticationConfig::new(
            "e2e-client",
            Secret::new("e2e-secret"),
            format!("http://127.0.0.1:{port}/token"),
            vec![scope.into()],
        )
    };
    let tokens = TokenManager::spawn(&config, TokenManagerOptions::default(), None).unwrap();
    let start = tokio::time::Instant::now();
    let mut handed_out = 0u64;
    let mut least_remaining = Duration::MAX;
    while start.elapsed() < run_for {
        let token = tokens.get().await.expect("a token every time");
        let remaining = token.remaining();
        assert!(
            remaining > min_ttl,
            "handed out a token with {remaining:?} left"
        );
        // Check against the JWT's own exp claim too (whole seconds, so allow one).
        let exp = token.claims().and_then(|c| c.exp).expect("a JWT with exp");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            exp as f64 - now > min_ttl.as_secs_f64() - 1.0,
            "JWT exp {exp} too close to now {now}"
        );
        least_remaining = least_remaining.min(remaining);
        handed_out += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let requests = stats(port).await["requests"].as_u64().unwrap();
    tokens.shutdown();
    drop(server);

    // Refresh 2.5 s after each fetch (5 min before expiry, clamped to half the 5 s life), minus
    // 0-10 % of the 2.5 s lead: 2.375 s apart on average. The ideal is a whole number of
    // requests: the first fetch plus every full interval that fits (26 in 60 s). Jitter alone
    // spans 25 (all intervals 2.5 s) to 27 (all 2.25 s).
    let ideal = (1.0 + elapsed / 2.375).floor();
    eprintln!(
        "e2e: {requests} token requests in {elapsed:.1}s (ideal {ideal:.2}), {handed_out} tokens handed out, least remaining {least_remaining:?}"
    );
    assert!(
        (requests as f64 - ideal).abs() <= 1.0,
        "{requests} requests, ideal {ideal:.2}"
    );
}
