//! Helpers shared by the runtime's integration tests: the `../shared` test peers, processes
//! stopped by PID, and a fake token endpoint.
#![allow(dead_code)] // each test binary uses a subset

use extractor_runtime::config::{CogniteConfig, Config, LoadOptions};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// Mounts `POST /token` on `server`, answering `access_token` for an hour.
pub async fn mount_token_endpoint(server: &MockServer, access_token: &str) {
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(
                serde_json::json!({"access_token": access_token, "expires_in": 3600}),
            ),
        )
        .mount(server)
        .await;
}

/// Mounts `POST /token` on `server`, handing out `token-1`, `token-2`, ... that live
/// `expires_in` seconds; returns how many it handed out.
pub async fn counting_token_endpoint(
    server: &MockServer,
    expires_in: u64,
) -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let issued = std::sync::Arc::new(AtomicUsize::new(0));
    let n = issued.clone();
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(move |_: &wiremock::Request| {
            let i = n.fetch_add(1, Ordering::SeqCst) + 1;
            ResponseTemplate::new(200).set_body_json(
                serde_json::json!({"access_token": format!("token-{i}"), "expires_in": expires_in}),
            )
        })
        .mount(server)
        .await;
    issued
}

/// The `cognite:` section for project `demo` at `host`, in dry-run (so no credentials are
/// needed to load it), with `extra` YAML (flow style) added to it.
pub fn cognite(host: &str, extra: &str) -> CogniteConfig {
    let yaml =
        format!("version: 1\ncognite: {{project: demo, host: '{host}', dry-run: true{extra}}}\n");
    let env = |_: &str| None;
    Config::from_yaml(&yaml, None, &env, &LoadOptions::default())
        .unwrap()
        .cognite
}

/// What `registry` serves at `/metrics`, as text.
pub fn metrics_text(registry: &prometheus::Registry) -> String {
    prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .unwrap()
}

/// A token manager for client `c` with secret `s` at `{idp}/token` (see [`mount_token_endpoint`]).
pub fn token_manager(idp: &str) -> extractor_runtime::auth::TokenManager {
    let config = extractor_runtime::config::IdpAuthenticationConfig::new(
        "c",
        extractor_runtime::Secret::new("s"),
        format!("{idp}/token"),
        vec!["s".into()],
    );
    extractor_runtime::auth::TokenManager::spawn(
        &config,
        extractor_runtime::auth::TokenManagerOptions::default(),
        None,
    )
    .unwrap()
}
pub mod fake_cdf;
pub mod prism;

#[allow(unused_imports)] // each test binary uses a subset
pub use prism::{Proc, shared_peers};

#[allow(clippy::duplicate_mod)] // fake_cdf.rs loads it too
mod body;
#[allow(unused_imports)] // each test binary uses a subset
pub use body::json_body;
