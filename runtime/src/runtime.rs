//! [`Runtime`]: builds the pieces from a [`Config`] and runs the tasks until done or shut down.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::auth::{AuthError, TokenManager, TokenManagerOptions};
use crate::cdf::{CdfClient, DryRunSink};
use crate::config::{Config, ConfigErrors};
use crate::extractor::Registry;
use crate::metrics::push::Pusher;
use crate::metrics::server::MetricsServer;
use crate::metrics::{Health, MetricsRegistry};
use crate::scheduler::{Clock, Scheduler, SchedulerOptions, Summary};

/// How to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Long-running: every task on its schedule until shutdown.
    Service,
    /// Batch (`run --once`): startup tasks, then every other task once.
    Once,
}

/// Why the runtime could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// The config is not runnable: an unknown task type, a bad `config:` block, or `--once`
    /// with a continuous task.
    #[error("{0}")]
    Config(String),
    /// In `--once`, no token could be had before the tasks started.
    #[error("{0}")]
    Auth(#[from] AuthError),
    /// The metrics server could not bind its address.
    #[error("cannot serve metrics on {address}")]
    Bind {
        /// `host:port`.
        address: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl From<ConfigErrors> for RuntimeError {
    fn from(e: ConfigErrors) -> Self {
        RuntimeError::Config(e.to_string())
    }
}

/// What a finished run of the runtime reports.
#[derive(Debug)]
pub struct Report {
    /// Every run the scheduler made.
    pub summary: Summary,
}

/// The runtime: config, registry, token manager and scheduler.
pub struct Runtime {
    config: Config,
    registry: Registry,
    metrics: MetricsRegistry,
}

impl Runtime {
    /// A runtime for `config` with the extractor types of `registry`.
    pub fn new(config: Config, registry: Registry) -> Self {
        let metrics = MetricsRegistry::new();
        if let Err(e) = crate::metrics::register_process_and_build_info(metrics.prometheus()) {
            tracing::warn!("cannot register process metrics: {e}");
        }
        Runtime {
            config,
            registry,
            metrics,
        }
    }

    /// The metrics registry every part registers in.
    pub fn metrics(&self) -> &MetricsRegistry {
        &self.metrics
    }

    /// Checks what config loading cannot: every task's type is registered and its `config:`
    /// block is valid for that type. No network I/O.
    pub fn check(&self) -> Result<(), ConfigErrors> {
        self.registry.build_all(&self.config.tasks).map(|_| ())
    }

    /// Runs until done (`Once`) or until `shutdown` fires (`Service`), then drains within
    /// `shutdown-grace`.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: cancel through `shutdown` instead.
    pub async fn run(
        self,
        mode: Mode,
        shutdown: CancellationToken,
    ) -> Result<Report, RuntimeError> {
        let extractors = self.registry.build_all(&self.config.tasks)?;
        let health = Health::new();
        health.set_config_loaded();
        // Bind first: a port in use is a startup error, before any token request or task.
        let server_stop = CancellationToken::new();
        if let Some(s) = &self.config.metrics.server {
            let server = MetricsServer::bind(&s.host, s.port, self.metrics.clone(), health.clone())
                .await
                .map_err(|source| RuntimeError::Bind {
                    address: format!("{}:{}", s.host, s.port),
                    source,
                })?;
            if let Ok(addr) = server.local_addr() {
                tracing::info!(target: "extractor_runtime::metrics", %addr, "serving /metrics, /healthz and /readyz");
            }
            tokio::spawn(server.serve(server_stop.clone()));
        }
        let pushers: Vec<Pusher> = if self.config.metrics.push_gateways.is_empty() {
            Vec::new()
        } else {
            let counter = Pusher::counter(self.metrics.prometheus())
                .map_err(|e| RuntimeError::Config(e.to_string()))?;
            self.config
                .metrics
                .push_gateways
                .iter()
                .map(|g| Pusher::new(g, self.metrics.clone(), counter.clone()))
                .collect()
        };
        let push_stop = CancellationToken::new();
        for pusher in &pushers {
            let (pusher, stop) = (pusher.clone(), push_stop.clone());
            tokio::spawn(async move { pusher.run(stop).await });
        }
        let result = self.run_tasks(mode, shutdown, extractors, health).await;
        push_stop.cancel();
        // Always one last push, so a batch job's final results are never lost.
        let mut finishing = tokio::task::JoinSet::new();
        for pusher in pushers {
            finishing.spawn(async move { pusher.finish().await });
        }
        finishing.join_all().await;
        server_stop.cancel();
        result
    }

    async fn run_tasks(
        &self,
        mode: Mode,
        shutdown: CancellationToken,
        extractors: Vec<std::sync::Arc<dyn crate::extractor::Extractor>>,
        health: Health,
    ) -> Result<Report, RuntimeError> {
        let tokens = match (
            &self.config.cognite.idp_authentication,
            self.config.cognite.dry_run,
        ) {
            (Some(idp), false) => Some(TokenManager::spawn(
                idp,
                TokenManagerOptions::default(),
                Some(self.metrics.prometheus()),
            )?),
            _ => None,
        };
        if let Some(t) = &tokens {
            health.set_tokens(t.clone());
        }
        let dry_run = self.config.cognite.dry_run.then(DryRunSink::stdout);
        let cdf = CdfClient::new(
            &self.config.cognite,
            tokens.clone(),
            dry_run,
            self.metrics.prometheus(),
        )
        .map_err(RuntimeError::Config)?;
        let scheduler = Scheduler::new(
            &self.config.tasks,
            extractors,
            SchedulerOptions {
                registry: self.metrics.clone(),
                tokens: tokens.clone(),
                cdf: Some(cdf),
                clock: Clock::System,
                keep_runs: false,
                health: Some(health),
            },
        )
        .map_err(RuntimeError::Config)?;
        let grace: Duration = self.config.shutdown_grace;
        let summary = match mode {
            Mode::Once => {
                scheduler.check_once().map_err(RuntimeError::Config)?;
                if let Some(tokens) = &tokens {
                    // Batch jobs fail fast on bad credentials, before any task runs.
                    tokio::select! {
                        r = tokens.get() => { r?; }
                        () = shutdown.cancelled() => {}
                    }
                }
                scheduler.run_once(shutdown, grace).await
            }
            Mode::Service => scheduler.run(shutdown, grace).await,
        };
        if let Some(tokens) = tokens {
            tokens.shutdown();
        }
        Ok(Report { summary })
    }
}
