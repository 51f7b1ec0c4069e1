//! [`Runtime`]: builds the pieces from a [`Config`] and runs the tasks until done or shut down.

use crate::net::Network;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::auth::{AuthError, TokenManager, TokenManagerOptions};
use std::path::Path;

use crate::cdf::extpipes::{PipelineReporter, RunStatus};
use crate::cdf::{CdfClient, DryRunSink};
use crate::config::StateStoreConfig;
use crate::config::{Config, ConfigErrors};
use crate::deadline::Deadline;
use crate::extractor::Registry;
use crate::metrics::push::Pusher;
use crate::metrics::server::MetricsServer;
use crate::metrics::{Health, MetricsRegistry};
use crate::queues::{DeadLetter, Queues};
use crate::scheduler::{Clock, Scheduler, SchedulerOptions, Summary};
use crate::state::{LocalStateStore, RawStateStore, StateStore};

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
    /// The state store could not be loaded.
    #[error(transparent)]
    State(#[from] crate::state::StateError),
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
    /// Items still queued when the process stopped: not uploaded.
    pub unsent: usize,
    /// Items CDF refused for good (logged and counted; in the dead-letter file if one is set).
    pub refused: usize,
    /// Where refused items were written, if anywhere.
    pub dead_letter: Option<std::path::PathBuf>,
    /// Why the last state save failed, if it did (the process should exit non-zero: the next
    /// start re-reads what this run delivered).
    pub state_error: Option<String>,
}

/// The runtime: config, registry, token manager and scheduler.
pub struct Runtime {
    config: Config,
    registry: Registry,
    metrics: MetricsRegistry,
    reset_state: bool,
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
            reset_state: false,
        }
    }

    /// Start from empty state even if the state file exists (`--reset-state`); the file is
    /// replaced at the first save.
    pub fn with_reset_state(mut self, reset: bool) -> Self {
        self.reset_state = reset;
        self
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
        let network = self
            .config
            .cognite
            .connection
            .network()
            .map_err(|e| RuntimeError::Config(e.to_string()))?;
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
                .map(|g| Pusher::new(g, self.metrics.clone(), counter.clone(), &network))
                .collect::<Result<_, _>>()
                .map_err(RuntimeError::Config)?
        };
        let push_stop = CancellationToken::new();
        for pusher in &pushers {
            let (pusher, stop) = (pusher.clone(), push_stop.clone());
            tokio::spawn(async move { pusher.run(stop).await });
        }
        let deadline = Deadline::new(shutdown.clone(), self.config.shutdown_grace.get());
        let result = self
            .run_tasks(mode, shutdown, &deadline, extractors, health, network)
            .await;
        push_stop.cancel();
        // Always one last push, so a batch job's final results are never lost; within the
        // stop's deadline.
        let mut finishing = tokio::task::JoinSet::new();
        for pusher in pushers {
            finishing.spawn(async move { pusher.finish().await });
        }
        deadline
            .bound(
                "the last metrics push",
                Duration::ZERO,
                finishing.join_all(),
            )
            .await;
        server_stop.cancel();
        result
    }

    async fn run_tasks(
        &self,
        mode: Mode,
        shutdown: CancellationToken,
        deadline: &Deadline,
        extractors: Vec<std::sync::Arc<dyn crate::extractor::DynExtractor>>,
        health: Health,
        network: Network,
    ) -> Result<Report, RuntimeError> {
        // A local state file first: a corrupt one stops the process before any network I/O.
        let local_state = match self
            .config
            .state_store
            .as_ref()
            .and_then(|s| s.local.as_ref())
        {
            Some(local) => Some(LocalStateStore::open_locked(
                Path::new(&local.path),
                self.reset_state,
            )?),
            None => None,
        };
        let tokens = match (
            &self.config.cognite.idp_authentication,
            self.config.cognite.dry_run,
        ) {
            (Some(idp), false) => Some(TokenManager::spawn(
                idp,
                TokenManagerOptions {
                    network: network.clone(),
                    ..TokenManagerOptions::default()
                },
                Some(self.metrics.prometheus()),
            )?),
            _ => None,
        };
        if let Some(t) = &tokens {
            health.add_check(t.clone());
        }
        let dry_run = match (
            self.config.cognite.dry_run,
            &self.config.cognite.dry_run_output,
        ) {
            (false, _) => None,
            (true, None) => Some(DryRunSink::stdout()),
            (true, Some(path)) => Some(DryRunSink::to_writer(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| {
                        RuntimeError::Config(format!("cannot open the dry-run output {path}: {e}"))
                    })?,
            )),
        };
        let cdf = CdfClient::new(
            &self.config.cognite,
            tokens.clone(),
            dry_run,
            self.metrics.prometheus(),
        )
        .map_err(RuntimeError::Config)?;
        // State in RAW before any task: unreadable state stops the process.
        let state = match &self.config.state_store {
            _ if local_state.is_some() => local_state.map(StateStore::Local),
            Some(StateStoreConfig { raw: Some(raw), .. }) => Some(StateStore::Raw(
                RawStateStore::open(cdf.clone(), &raw.database, &raw.table, self.reset_state)
                    .await?,
            )),
            _ => None,
        };
        let prometheus = self.metrics.prometheus();
        let dead_letter = match &self.config.upload_queue.dead_letter {
            Some(path) => Some(DeadLetter::open(Path::new(path)).map_err(|e| {
                RuntimeError::Config(format!("upload-queue.dead-letter: cannot open {path}: {e}"))
            })?),
            None => None,
        };
        let queues = Queues::with_dead_letter(
            cdf.clone(),
            self.config.upload_queue.max_queue_size,
            prometheus,
            dead_letter,
        )
        .map_err(|e| RuntimeError::Config(e.to_string()))?;
        let pipeline = match &self.config.cognite.extraction_pipeline {
            Some(p) => Some(
                PipelineReporter::new(cdf.clone(), &p.external_id, prometheus)
                    .map_err(|e| RuntimeError::Config(e.to_string()))?,
            ),
            None => None,
        };
        let scheduler = Scheduler::new(
            &self.config.tasks,
            extractors,
            SchedulerOptions {
                registry: self.metrics.clone(),
                tokens: tokens.clone(),
                cdf: Some(cdf),
                queues: Some(queues.clone()),
                state: state.clone(),
                clock: Clock::System,
                keep_runs: false,
                health: Some(health),
                network,
            },
        )
        .map_err(RuntimeError::Config)?;
        if mode == Mode::Once {
            scheduler.check_once().map_err(RuntimeError::Config)?;
            if let Some(tokens) = &tokens {
                // Batch jobs fail fast on bad credentials, before any task runs.
                tokio::select! {
                    r = tokens.get() => { r?; }
                    () = shutdown.cancelled() => {}
                }
            }
        }
        let background = CancellationToken::new();
        let tracker = tokio_util::task::TaskTracker::new();
        tracker.spawn(flush_periodically(
            queues.clone(),
            state.clone(),
            self.config.upload_queue.max_upload_interval.get(),
            background.clone(),
        ));
        if let Some(store) = &state {
            let every = match (&self.config.state_store, store) {
                (Some(c), StateStore::Local(_)) => c.local.as_ref().map(|l| l.save_interval.get()),
                (Some(c), StateStore::Raw(_)) => c.raw.as_ref().map(|r| r.upload_interval.get()),
                (None, _) => None,
            }
            .unwrap_or(Duration::from_secs(30));
            tracker.spawn(save_periodically(store.clone(), every, background.clone()));
        }
        if let (Some(p), Mode::Service) = (&pipeline, mode) {
            let every = self
                .config
                .cognite
                .extraction_pipeline
                .as_ref()
                .map(|p| p.seen_interval.get())
                .unwrap_or(Duration::from_secs(600));
            tracker.spawn(report_seen(p.clone(), every, background.clone()));
        }

        // One deadline for the whole stop: the runs get the grace less a reserve, which the
        // final flush, the state save and the pipeline report share.
        let reserve = deadline.reserve();
        let runs_grace = self.config.shutdown_grace.saturating_sub(reserve);
        let summary = match mode {
            Mode::Once => scheduler.run_once(shutdown.clone(), runs_grace).await,
            Mode::Service => scheduler.run(shutdown.clone(), runs_grace).await,
        };
        background.cancel();
        tracker.close();
        tracker.wait().await;

        // What the runs queued goes out now; items it cannot send stay unsent (the state does
        // not move past them: the next start sends them again).
        let unsent = match deadline
            .bound("the final upload", reserve / 2, queues.flush())
            .await
        {
            Some(Ok(_)) => 0,
            Some(Err(e)) => {
                tracing::error!(target: "extractor_runtime::queues", pending = queues.pending(), "the final upload failed; these items were not uploaded: {e}");
                queues.pending()
            }
            None => {
                tracing::error!(target: "extractor_runtime::queues", pending = queues.pending(), "the final upload did not finish within the shutdown grace; these items were not uploaded");
                queues.pending()
            }
        };
        let stopped = shutdown.is_cancelled();
        let save = async {
            let Some(store) = &state else {
                return None;
            };
            let saved = match store {
                // A local save takes milliseconds and is never cut short.
                StateStore::Local(_) => store.save().await,
                StateStore::Raw(_) => deadline
                    .bound("the state upload", Duration::ZERO, store.save())
                    .await
                    .unwrap_or(Err(crate::state::StateError::Cut)),
            };
            saved.err().map(|e| {
                tracing::error!(target: "extractor_runtime::state", "{e}");
                e.to_string()
            })
        };
        let report = async {
            let Some(p) = &pipeline else { return };
            let (status, message) = run_report(&summary, unsent, stopped);
            let reported = deadline
                .bound(
                    "the pipeline run report",
                    Duration::ZERO,
                    p.report(status, Some(&message)),
                )
                .await;
            if let Some(Err(e)) = reported {
                tracing::warn!(target: "extractor_runtime::cdf", "cannot report the extraction pipeline run: {e}");
            }
        };
        let (state_error, ()) = tokio::join!(save, report);
        if let Some(tokens) = tokens {
            tokens.shutdown();
        }
        Ok(Report {
            summary,
            unsent,
            refused: queues.refused(),
            dead_letter: queues.dead_letter().map(Path::to_path_buf),
            state_error,
        })
    }
}

/// The pipeline run that sums up a finished run of the runtime.
///
/// Runs a stop cancelled are no failure when nothing was lost (every queued item was
/// uploaded): what they did not read is read by the next start.
fn run_report(summary: &Summary, unsent: usize, stopped: bool) -> (RunStatus, String) {
    let cancelled = if stopped { summary.cancelled } else { 0 };
    if summary.failed == cancelled && unsent == 0 {
        let succeeded = summary.total - cancelled;
        let mut message = format!("{succeeded} runs succeeded");
        if cancelled > 0 {
            message.push_str(&format!(
                "; {cancelled} cancelled by the stop, nothing lost"
            ));
        }
        return (RunStatus::Success, message);
    }
    let mut message = format!("{} of {} runs failed", summary.failed, summary.total);
    if unsent > 0 {
        message.push_str(&format!("; {unsent} items were not uploaded"));
    }
    let failed: Vec<String> = summary
        .runs
        .iter()
        .filter(|(_, r)| !r.is_success())
        .map(|(t, r)| format!("{t} ({})", r.as_label()))
        .collect();
    if !failed.is_empty() {
        message.push_str(": ");
        message.push_str(&failed.join(", "));
    }
    (RunStatus::Failure, message)
}

/// Flushes every `every`; after a flush that sent something, saves the state too.
async fn flush_periodically(
    queues: Queues,
    state: Option<StateStore>,
    every: Duration,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = stop.cancelled() => return,
        }
        // A flush is cancel safe: the stop does not wait for its retries.
        let flushed = tokio::select! {
            r = queues.flush() => r,
            () = stop.cancelled() => return,
        };
        match flushed {
            Ok(0) => {}
            Ok(_) => {
                if let Some(store) = &state
                    && let Err(e) = store.save().await
                {
                    tracing::error!(target: "extractor_runtime::state", "{e}");
                }
            }
            Err(e) => {
                tracing::warn!(target: "extractor_runtime::queues", pending = queues.pending(), "upload failed; the items stay queued: {e}");
            }
        }
    }
}

async fn save_periodically(store: StateStore, every: Duration, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = stop.cancelled() => return,
        }
        if let Err(e) = store.save().await {
            tracing::error!(target: "extractor_runtime::state", "{e}");
        }
    }
}

async fn report_seen(pipeline: PipelineReporter, every: Duration, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = stop.cancelled() => return,
        }
        let reported = tokio::select! {
            r = pipeline.report(RunStatus::Seen, None) => r,
            () = stop.cancelled() => return,
        };
        if let Err(e) = reported {
            tracing::warn!(target: "extractor_runtime::cdf", "cannot report the extraction pipeline as seen: {e}");
        }
    }
}
