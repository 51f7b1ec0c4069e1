//! # extractor-runtime
//!
//! Runs data extractors for Cognite Data Fusion (CDF) in production: one YAML config, one shared
//! client-credentials token manager, a scheduler for pluggable extractor tasks, upload queues into
//! CDF, durable incremental state, and Prometheus metrics.
//!
//! An extractor is a type that implements [`Extractor`]; a [`Registry`] maps a task's `type`
//! to its constructor; [`cli::main`] is the whole command line (`run [--once] [--dry-run]`,
//! `check-config`, `schema`, `token`, `login`, `logout`, `healthcheck`), with the signals and
//! exit codes of the built-in binary.
//!
//! # Examples
//!
//! A complete extractor binary, registered under `type: hello`:
//!
//! ```no_run
//! use extractor_runtime::{Extractor, Registry, RunContext, TaskError};
//!
//! #[derive(Clone, PartialEq, serde::Deserialize, schemars::JsonSchema)]
//! #[serde(deny_unknown_fields, rename_all = "kebab-case")]
//! struct HelloConfig {
//!     greeting: String,
//! }
//!
//! struct Hello(HelloConfig);
//!
//! impl Extractor for Hello {
//!     async fn run(&self, ctx: RunContext) -> Result<(), TaskError> {
//!         let runs: u64 = ctx.upload().resume("")?.unwrap_or(0);
//!         tracing::info!(task = ctx.task(), runs, "{}", self.0.greeting);
//!         ctx.upload().checkpoint("", &(runs + 1));
//!         ctx.upload().settled().await
//!     }
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     let mut registry = Registry::new();
//!     registry.register("hello", |config: HelloConfig| Ok(Hello(config)));
//!     extractor_runtime::cli::main(registry)
//! }
//! ```
//!
//! # The public API
//! - The plug-in: [`Extractor`], [`RunContext`], [`TaskError`], [`Registry`], [`Rejection`],
//!   [`Setup`] (metrics at construction).
//! - What a run sends: the [`upload`] module ([`Upload`](upload::Upload), the item types), and
//!   [`CdfClient`] for the requests that are not items.
//! - What a config type uses: [`Duration`], [`Secret`].
//! - What an extractor's own HTTP uses: [`net`] (the CA roots and proxy of
//!   `cognite.connection`) and [`retry`] (the retry policy every request of the runtime uses).
//! - What an extractor shows or keeps of outside text: [`text`] (file names as lossless keys,
//!   escaped control characters, cut messages).
//! - Crates in these signatures, re-exported so an extractor's crate uses the same versions:
//!   [`prometheus`], [`reqwest`], [`schemars`], [`serde_json`], [`CancellationToken`].
//!
//! # Features
//! - `testing`: the `testing` module, helpers to run an extractor in a test against a dry-run
//!   CDF that records what would be sent. It also makes the runtime's building blocks public
//!   (`auth`, `cdf`, `config`, `metrics`, `queues`, `runtime`, `scheduler`, `shard`, `state`,
//!   `logging`): this repository's integration tests and benches drive them directly. Those
//!   modules carry no stability promise.

#![deny(missing_docs)]

/// A method of a public type that only the runtime and this repository's tests call: `pub`
/// with the `testing` feature, `pub(crate)` without.
macro_rules! testing_pub {
    ($(#[$meta:meta])* fn $($rest:tt)*) => {
        $(#[$meta])*
        #[cfg(feature = "testing")]
        pub fn $($rest)*
        $(#[$meta])*
        #[cfg(not(feature = "testing"))]
        pub(crate) fn $($rest)*
    };
    ($(#[$meta:meta])* async fn $($rest:tt)*) => {
        $(#[$meta])*
        #[cfg(feature = "testing")]
        pub async fn $($rest)*
        $(#[$meta])*
        #[cfg(not(feature = "testing"))]
        pub(crate) async fn $($rest)*
    };
}

/// The runtime's building blocks: crate-private, and public with the `testing` feature (for
/// this repository's integration tests and benches; no stability promise). Without the feature,
/// what only those tests call (accessors, constructors for tests) is unused: allowed here, and
/// nowhere else.
macro_rules! building_blocks {
    ($($(#[$meta:meta])* mod $name:ident;)*) => {$(
        $(#[$meta])*
        #[cfg(feature = "testing")]
        pub mod $name;
        $(#[$meta])*
        #[cfg(not(feature = "testing"))]
        #[allow(dead_code, unused_imports)]
        pub(crate) mod $name;
    )*};
}

building_blocks! {
    /// The shared token manager (client credentials, certificates, device code, browser).
    mod auth;
    /// The CDF client: authenticated, retried requests, or dry-run NDJSON.
    mod cdf;
    /// Integrations check-ins: startup, task events and errors.
    mod checkin;
    /// A durable FIFO of records in segment files: the storage of a disk buffer.
    mod disk_log;
    /// `metrics.cognite`: the metrics as CDF time series, through the datapoints queue.
    mod cognite_metrics;
    /// Whether this replica may still write (its high-availability lease).
    mod fence;
    /// Active/standby by lease: the elector and its backends (Kubernetes, Redis, RAW).
    mod lease;
    /// Loading and checking the YAML config, with `file:line:column: key.path` errors.
    mod config;
    /// `tracing` set up from `logger:`.
    mod logging;
    /// Every metric's definition, the metrics server, health and Pushgateway pushes.
    mod metrics;
    /// Bounded upload queues into CDF (at-least-once, split at the API's limits).
    mod queues;
    /// The composition root: builds the services from a config and runs them.
    mod runtime;
    /// Runs tasks on their schedules.
    mod scheduler;
    /// Splitting tasks across replicas (rendezvous hashing).
    mod shard;
    /// Where a config comes from: a local file, or a revision in CDF (and its buffer file).
    mod source;
    /// Incremental state (watermarks) kept durably.
    mod state;
    /// Owns the running config and applies a new one as a diff by task name.
    mod supervisor;
}

mod certificate;
pub mod cli;
mod deadline;
mod error_chain;
mod extractor;
mod fnv;
mod idp_error;
mod internal_events;
mod keyvault;
mod log_file;
pub mod net;
mod percent;
pub mod retry;
mod secret;
pub mod size;
mod task_error;
#[cfg(feature = "testing")]
pub mod testing;
pub mod text;
pub mod upload;

pub use cdf::{CdfClient, CdfError, CdfErrorKind};
pub use config::Duration;
pub use extractor::{Extractor, Registry, Rejection, RunContext, Setup};
pub use secret::Secret;
pub use task_error::{TaskError, TaskErrorKind};

/// Crates whose types are in this crate's signatures, re-exported so that an extractor's crate
/// uses the same versions without naming them: `prometheus` ([`Setup::metrics`] is a
/// `prometheus::Registry`), `reqwest` ([`net::Network::client_builder`]), `schemars` (a config
/// type derives `JsonSchema` for [`Registry::register`]; with this re-export, add
/// `#[schemars(crate = "extractor_runtime::schemars")]`), `serde_json` (records and
/// watermarks are JSON values) and `CancellationToken` ([`RunContext::cancellation_token`]).
pub use {prometheus, reqwest, schemars, serde_json, tokio_util::sync::CancellationToken};
