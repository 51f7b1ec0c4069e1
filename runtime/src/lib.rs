//! # extractor-runtime
//!
//! Runs data extractors for Cognite Data Fusion (CDF) in production: one YAML config, one shared
//! client-credentials token manager, a scheduler for pluggable extractor tasks, upload queues into
//! CDF, durable incremental state, and Prometheus metrics.
//!
//! This crate is the library; the `extractor-runtime` binary in the `extractors` crate registers
//! the built-in extractors and provides the CLI.
//!
//! ## Modules
//! - [`config`]: load and validate the YAML config, with `file:line:column: key.path` errors.
//! - [`auth`]: the shared client-credentials [`TokenManager`](auth::TokenManager).
//! - [`cdf`]: the [`CdfClient`](cdf::CdfClient): authenticated, retried requests, or dry-run NDJSON.
//! - [`net`]: the CA roots and proxy every outbound HTTP client shares.
//! - [`cli`]: the whole command line (`cli::main(registry)`), for any extractor binary.
//! - [`logging`]: set up `tracing` from `logger:`.
//! - [`metrics`]: every metric's definition.
//! - [`queues`]: bounded upload queues into CDF (at-least-once, split at the API's limits).
//! - [`state`]: incremental state (watermarks) kept durably.
//! - [`extractor`]: the [`Extractor`](extractor::Extractor) plug-in trait and its registry.
//! - [`scheduler`]: runs tasks on their schedules.
//! - [`runtime`]: puts the pieces together and runs them.
//! - [`shard`]: splitting tasks across replicas (rendezvous hashing).
//! - [`retry`]: the one retry policy (a classifier, and backoff with full jitter).
//! - [`Secret`]: a string that never prints itself.

#![deny(missing_docs)]

pub mod auth;

pub mod cdf;
mod certificate;
pub mod cli;
pub mod config;
mod deadline;
pub mod extractor;
pub mod logging;
pub mod metrics;
pub mod net;
mod percent;
pub mod queues;
pub mod retry;
pub mod runtime;
pub mod scheduler;
mod secret;
pub mod shard;
pub mod state;
mod task_error;

pub use config::{Config, ConfigError, ConfigErrors, Duration};
pub use secret::{REDACTED, Secret, redact_url};

/// Crates whose types are in this crate's signatures, re-exported so that an extractor's crate
/// uses the same versions without naming them: `prometheus` ([`extractor::RunContext::metrics`]
/// is a `prometheus::Registry`), `schemars` (a config type derives `JsonSchema` for
/// [`extractor::Registry::register`]; with this re-export, add
/// `#[schemars(crate = "extractor_runtime::schemars")]`), `serde_json` (watermarks and records
/// are JSON values) and `CancellationToken` ([`extractor::RunContext::cancellation_token`]).
pub use {prometheus, schemars, serde_json, tokio_util::sync::CancellationToken};
