//! What the runtime's benches share.
#![allow(dead_code)] // each bench uses a part

use extractor_runtime::config::{Config, LoadOptions};
use extractor_runtime::testing::DynExtractor;
use extractor_runtime::{Extractor, Registry, RunContext, TaskError};
use std::sync::Arc;

/// A field of `/proc/self/status` in KiB: `"VmRSS:"` (now) or `"VmHWM:"` (peak).
pub fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Resident memory now, KiB.
pub fn rss_kib() -> u64 {
    status_kib("VmRSS:")
}

/// An extractor that does nothing.
pub struct Trivial;

impl Extractor for Trivial {
    async fn run(&self, _ctx: RunContext) -> Result<(), TaskError> {
        Ok(())
    }
}

/// A registry with `type: trivial`.
pub fn trivial_registry() -> Registry {
    let mut registry = Registry::new();
    registry.register("trivial", |_: serde_json::Value| Ok(Trivial));
    registry
}

/// The tasks of `yaml`, built with [`trivial_registry`], their own metrics in `metrics` (as the
/// runtime builds them).
pub fn build(
    yaml: &str,
    metrics: &extractor_runtime::metrics::MetricsRegistry,
) -> (Config, Vec<Arc<dyn DynExtractor>>) {
    let config = Config::from_yaml(yaml, None, &|_| None, &LoadOptions::default()).unwrap();
    let extractors = trivial_registry()
        .build_all(&config.tasks, metrics)
        .unwrap();
    (config, extractors)
}

/// A CDF client for project `project` at `host` (no retries), with a token manager asking
/// `{host}/token`. Stop the manager when done.
pub fn cdf_client(
    host: &str,
    project: &str,
    registry: &prometheus::Registry,
) -> (
    extractor_runtime::cdf::CdfClient,
    extractor_runtime::auth::TokenManager,
) {
    let yaml = format!(
        "version: 1\ncognite: {{project: {project}, host: '{host}', dry-run: true, connection: {{max-retries: 0}}}}\n"
    );
    let cognite = Config::from_yaml(&yaml, None, &|_| None, &LoadOptions::default())
        .unwrap()
        .cognite;
    let idp = extractor_runtime::config::IdpAuthenticationConfig::new(
        "c",
        extractor_runtime::Secret::new("s"),
        format!("{host}/token"),
        vec!["s".into()],
    );
    let tokens = extractor_runtime::auth::TokenManager::spawn(
        &idp,
        extractor_runtime::auth::TokenManagerOptions::default(),
        None,
    )
    .unwrap();
    let client =
        extractor_runtime::cdf::CdfClient::new(&cognite, Some(tokens.clone()), None, registry)
            .unwrap();
    (client, tokens)
}
