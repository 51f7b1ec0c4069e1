//! Helpers shared by the runtime's integration tests: the `../shared` test peers, processes
//! stopped by PID, and a fake token endpoint.
#![allow(dead_code)] // each test binary uses a subset

use std::path::PathBuf;
use std::process::Child;

use extractor_runtime::config::{CogniteConfig, Config, LoadOptions};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// `../shared` (or `$EXTRACTOR_SHARED_DIR`) and the npm packages installed from it
/// (`$TOKEN_SERVER_NODE_MODULES`), when both hold `needed` (paths relative to each). Where they
/// are missing the test should return: this prints that it skipped; with `CI=true` it panics.
pub fn shared_peers(needed_in_shared: &str, needed_in_modules: &str) -> Option<(PathBuf, PathBuf)> {
    let shared = std::env::var_os("EXTRACTOR_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
    let modules = std::env::var_os("TOKEN_SERVER_NODE_MODULES").map(PathBuf::from);
    match modules {
        Some(m) if shared.join(needed_in_shared).exists() && m.join(needed_in_modules).exists() => {
            Some((shared, m))
        }
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => panic!(
            "CI=true but {} or $TOKEN_SERVER_NODE_MODULES/{needed_in_modules} is missing",
            shared.join(needed_in_shared).display()
        ),
        _ => {
            eprintln!(
                "skipped: needs {} and TOKEN_SERVER_NODE_MODULES with {needed_in_modules} (run `bash .ci/run`, which installs them)",
                shared.join(needed_in_shared).display()
            );
            None
        }
    }
}

/// A child process, killed and reaped by its PID when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

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
