//! [`Runtime`]: builds the pieces from a [`Config`] and runs the tasks until done or shut down.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::auth::{AuthError, TokenManager, TokenManagerOptions};
use crate::config::{Config, ConfigErrors};
use crate::extractor::Registry;
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
    metrics: prometheus::Registry,
}

impl Runtime {
    /// A runtime for `config` with the extractor types of `registry`.
    pub fn new(config: Config, registry: Registry) -> Self {
        Runtime {
            config,
            registry,
            metrics: prometheus::Registry::new(),
        }
    }

    /// The metrics registry every part registers in.
    pub fn metrics(&self) -> &prometheus::Registry {
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
        let tokens = match (
            &self.config.cognite.idp_authentication,
            self.config.cognite.dry_run,
        ) {
            (Some(idp), false) => Some(TokenManager::spawn(
                idp,
                TokenManagerOptions::default(),
                Some(&self.metrics),
            )?),
            _ => None,
        };
        let scheduler = Scheduler::new(
            &self.config.tasks,
            extractors,
            SchedulerOptions {
                registry: self.metrics.clone(),
                tokens: tokens.clone(),
                clock: Clock::System,
                keep_runs: false,
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
