//! The composition root, in two parts:
//!
//! - [`Runtime::build`] builds what needs no I/O from a [`Config`] and a [`Registry`]: every
//!   task's extractor (its `config:` block checked, once), the metrics registry, the network
//!   settings. `check-config` stops there; `run` goes on with the same extractors.
//! - [`Runtime::run`] is the one lifecycle: it opens the state, starts the token manager, the
//!   CDF client, the queues and the background services (metrics server, Pushgateway pushes,
//!   periodic flushes and saves, the pipeline's `seen` reports) under one root cancellation
//!   token, runs the scheduler until done or until `shutdown` fires, then stops in order within
//!   `shutdown-grace`: runs, final upload, state save and pipeline report, last push, server.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{AuthError, TokenManager, TokenManagerOptions};
use crate::checkin::{Recorder, Reporter, Revision};
use crate::source::{Buffer, Document, SourceError};
use crate::supervisor::{CurrentTokens, ReloadHandle, ReloadMetrics, Reloading, Supervisor, Trigger};
use crate::cdf::extpipes::{PipelineReporter, RunStatus};
use crate::cdf::{CdfClient, DryRunSink};
use crate::config::{Config, ConfigErrors, StateStoreConfig};
use crate::deadline::Deadline;
use crate::fence::Fence;
use crate::lease::Elector;
use crate::extractor::{Built, Registry};
use crate::metrics::push::Pusher;
use crate::metrics::server::MetricsServer;
use crate::metrics::{Health, MetricsRegistry};
use crate::net::{Network, NetworkError};
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
    /// The config is not runnable: an unknown task type, or a bad `config:` block.
    #[error(transparent)]
    Config(#[from] ConfigErrors),
    /// `cognite.connection` cannot be used (an unreadable CA file, a bad proxy).
    #[error(transparent)]
    Network(#[from] NetworkError),
    /// `--once` with continuous tasks that never finish by themselves.
    #[error(transparent)]
    NeverFinishes(#[from] crate::scheduler::NeverFinishes),
    /// A file the config names cannot be opened (the dry-run output, the dead-letter file).
    #[error("{key}: cannot open {}: {source}", .path.display())]
    Open {
        /// The config key that names it.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A data set or extraction pipeline named by the other kind of id could not be looked up
    /// at start (it does not exist, or CDF could not be reached).
    #[error("{key}: the lookup in CDF failed")]
    Lookup {
        /// The config key of what was looked up.
        key: &'static str,
        /// Why.
        #[source]
        source: crate::cdf::CdfError,
    },
    /// A part could not be set up (a metric that cannot be registered, an HTTP client that
    /// cannot be built).
    #[error("cannot set up {what}")]
    Setup {
        /// The part.
        what: &'static str,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// In `--once`, no token could be had before the tasks started.
    #[error("{0}")]
    Auth(#[from] AuthError),
    /// The state store could not be loaded.
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    /// A `type: remote` config could not be had: CDF refused it, or it does not validate, or
    /// CDF could not be reached and no last good copy is kept.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// `run --once` with `high-availability:`: another replica held the lease for all of
    /// `once-timeout`.
    #[error("the high-availability lease `{lease}` was held by another replica for all of {}s (high-availability.once-timeout): not run", .waited.as_secs_f64())]
    Standby {
        /// The lease.
        lease: String,
        /// How long this process waited.
        waited: Duration,
    },
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

impl RuntimeError {
    fn setup(what: &'static str, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        RuntimeError::Setup {
            what,
            source: Box::new(source),
        }
    }
}

/// What a finished run of the runtime reports.
#[derive(Debug, Default)]
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
    /// Why the runs stopped early, when this replica lost its high-availability lease (the
    /// process should exit, so its supervisor restarts it as a standby).
    pub lease_lost: Option<String>,
}

/// What the runs of a leading replica are fenced by, and the takeover to report.
struct Leading {
    fence: Fence,
    /// "`b` took the lease over from `a`", when this replica took it from another.
    takeover: Option<String>,
}

/// The runtime: a checked config, its tasks' extractors, the metrics registry and the network
/// settings, ready to [`run`](Runtime::run).
pub struct Runtime {
    config: Config,
    built: Vec<Built>,
    metrics: MetricsRegistry,
    network: Network,
    reset_state: bool,
    reloading: Option<Reloading>,
    reload_metrics: ReloadMetrics,
    /// The remote revision the config was fetched from (`None`: a local file).
    document: Option<Document>,
}

impl Runtime {
    /// Builds what `config` needs that takes no I/O: each task's extractor (its type
    /// registered in `registry`, its `config:` block valid for it; every problem gathered),
    /// the metrics registry with the process metrics, and the network settings.
    pub fn build(config: Config, registry: &Registry) -> Result<Runtime, RuntimeError> {
        let metrics = MetricsRegistry::new();
        if let Err(e) = crate::metrics::register_process_and_build_info(metrics.prometheus()) {
            tracing::warn!("cannot register process metrics: {e}");
        }
        let built = build_tasks(registry, &config, &metrics)?;
        let network = config.cognite.connection.network()?;
        let reload_metrics = ReloadMetrics::register(metrics.prometheus())
            .map_err(|e| RuntimeError::setup("the reload metrics", e))?;
        Ok(Runtime {
            config,
            built,
            metrics,
            network,
            reset_state: false,
            reloading: None,
            reload_metrics,
            document: None,
        })
    }

    /// Reloads the config from `file` while it runs (service mode): on SIGHUP (through the
    /// returned handle), on a change of the file, and every `reload.interval` (a remote config's
    /// new revisions). Also what a `type: remote` config needs to start: `registry` builds the
    /// fetched config's tasks. `shard` and `options` apply to every config read.
    pub fn reloadable(
        mut self,
        registry: Arc<Registry>,
        file: &Path,
        shard: Option<crate::shard::Shard>,
        options: crate::config::LoadOptions,
    ) -> (Runtime, ReloadHandle) {
        let (sender, triggers) = tokio::sync::mpsc::channel(4);
        self.reloading = Some(Reloading {
            local_hash: self.config.source_hash,
            registry,
            file: file.to_owned(),
            shard,
            options,
            triggers,
            sender: sender.clone(),
        });
        (self, ReloadHandle(sender))
    }

    /// Start from empty state even if the state file exists (`--reset-state`); the file is
    /// replaced at the first save.
    pub fn with_reset_state(mut self, reset: bool) -> Self {
        self.reset_state = reset;
        self
    }

    /// The config it runs.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The config back, the rest dropped (`check-config`: built, checked, not run).
    pub fn into_config(self) -> Config {
        self.config
    }

    /// The metrics registry every part registers in.
    pub fn metrics(&self) -> &MetricsRegistry {
        &self.metrics
    }

    /// Runs until done (`Once`) or until `shutdown` fires (`Service`), then stops within
    /// `shutdown-grace`.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: cancel through `shutdown` instead.
    pub async fn run(
        mut self,
        mode: Mode,
        shutdown: CancellationToken,
    ) -> Result<Report, RuntimeError> {
        // A `type: remote` config: the real one first, with the clients of its `cognite:`.
        let early = match self.config.remote() {
            Some(_) => Some(self.fetch_remote(&shutdown).await?),
            None => None,
        };
        // The root of every background service; the scheduler's runs stop on `shutdown`.
        let root = CancellationToken::new();
        let services = TaskTracker::new();
        let health = Health::new();
        health.set_config_loaded();
        // Bind first: a port in use is a startup error, before any token request or task.
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
            services.spawn(server.serve(root.child_token()));
        }
        let pushers = self.pushers()?;
        let pushing = root.child_token();
        for pusher in &pushers {
            let (pusher, stop) = (pusher.clone(), pushing.clone());
            services.spawn(async move { pusher.run(stop).await });
        }
        let deadline = Deadline::new(shutdown.clone(), self.config.shutdown_grace.get());
        let result = self.lead_and_run(mode, &shutdown, &root, health, early).await;
        pushing.cancel();
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
        root.cancel();
        services.close();
        services.wait().await;
        result
    }

    /// Runs the tasks: at once, or with `high-availability:` once this replica holds the lease
    /// (standing by until then: live, ready and serving metrics), until it stops or loses the
    /// lease. A graceful stop releases the lease after the last state save.
    async fn lead_and_run(
        self,
        mode: Mode,
        shutdown: &CancellationToken,
        root: &CancellationToken,
        health: Health,
        early: Option<(Option<TokenManager>, CdfClient)>,
    ) -> Result<Report, RuntimeError> {
        let grace = self.config.shutdown_grace.get();
        let Some(ha) = self.config.high_availability.clone() else {
            let deadline = Deadline::new(shutdown.clone(), grace);
            let leading = Leading {
                fence: Fence::open(),
                takeover: None,
            };
            return self
                .run_tasks(mode, shutdown, &deadline, root, health, early, leading)
                .await;
        };
        // The RAW backend writes through the CDF client the tasks use.
        let early = match (ha.backend, early) {
            (crate::config::LeaseBackendKind::Raw, None) => Some(self.clients()?),
            (_, early) => early,
        };
        let stop_clients = |early: Option<(Option<TokenManager>, CdfClient)>| {
            if let Some((Some(tokens), _)) = early {
                tokens.shutdown();
            }
        };
        let shard = self.reloading.as_ref().and_then(|r| r.shard);
        let elector = match Elector::new(
            &ha,
            shard,
            early.as_ref().map(|(_, cdf)| cdf),
            self.metrics.prometheus(),
        ) {
            Ok(e) => e,
            Err(e) => {
                stop_clients(early);
                return Err(RuntimeError::setup("high-availability", e));
            }
        };
        // A standby is alive and ready: each try for the lease beats for the scheduler it has
        // not started (a stuck elector stops beating, and `/healthz` says so).
        health.set_standby(true);
        let acquiring = elector.acquire(shutdown, || health.beat());
        let acquired = match mode {
            Mode::Service => acquiring.await,
            Mode::Once => match tokio::time::timeout(ha.once_timeout.get(), acquiring).await {
                Ok(acquired) => acquired,
                Err(_) => {
                    stop_clients(early);
                    return Err(RuntimeError::Standby {
                        lease: elector.name().to_owned(),
                        waited: ha.once_timeout.get(),
                    });
                }
            },
        };
        let Some(previous) = acquired else {
            // Stopped while standing by: nothing ran, nothing to release.
            stop_clients(early);
            return Ok(Report::default());
        };
        health.set_standby(false);
        // A standby may have stood by for days: the config it read at start is read again at
        // once (the same diff as a reload; unchanged, nothing happens).
        if let Some(reloading) = &self.reloading {
            let _ = reloading.sender.try_send(crate::supervisor::Trigger::Signal);
        }
        // The runs stop on a stop or when the lease is lost; the stop's grace counts from either.
        let runs_stop = shutdown.child_token();
        let deadline = Deadline::new(runs_stop.clone(), grace);
        let holding_stop = CancellationToken::new();
        let holding = {
            let (elector, holding_stop, runs_stop) =
                (elector.clone(), holding_stop.clone(), runs_stop.clone());
            tokio::spawn(async move {
                let lost = elector.hold(&holding_stop).await;
                if lost.is_some() {
                    runs_stop.cancel();
                }
                lost
            })
        };
        let leading = Leading {
            fence: elector.fence(),
            takeover: previous.map(|p| {
                format!(
                    "{} took the high-availability lease `{}` over from {p}",
                    elector.identity(),
                    elector.name()
                )
            }),
        };
        let result = self
            .run_tasks(mode, &runs_stop, &deadline, root, health, early, leading)
            .await;
        holding_stop.cancel();
        match holding.await.ok().flatten() {
            Some(lost) => result.map(|mut report| {
                report.lease_lost = Some(format!("lease `{}`: {lost}", elector.name()));
                report
            }),
            None => {
                elector.release().await;
                result
            }
        }
    }

    /// The config a `type: remote` file points to: the latest revision from CDF, or, when CDF
    /// cannot be reached, the last good one kept in the buffer file (with a warning and
    /// `extractor_config_from_buffer` 1). Refusals (403, 404, bad credentials) and a revision
    /// that does not validate are errors. Returns the clients it fetched with.
    async fn fetch_remote(
        &mut self,
        shutdown: &CancellationToken,
    ) -> Result<(Option<TokenManager>, CdfClient), RuntimeError> {
        let remote = self.config.remote().cloned().expect("called for a remote config");
        let Some(reloading) = &self.reloading else {
            return Err(RuntimeError::setup(
                "a remote config",
                std::io::Error::other("a `type: remote` config needs Runtime::reloadable"),
            ));
        };
        let (registry, file) = (reloading.registry.clone(), reloading.file.clone());
        let (shard, options) = (reloading.shard, reloading.options.clone());
        let (tokens, cdf) = self.clients()?;
        let name = crate::source::remote_name(&remote);
        let fetched = tokio::select! {
            r = tokio::time::timeout(START_FETCH_TIMEOUT, crate::source::fetch_latest(&cdf, &remote)) => {
                r.unwrap_or_else(|_| Err(SourceError::unanswered(&remote, format!("no answer within {}s", START_FETCH_TIMEOUT.as_secs()))))
            }
            () = shutdown.cancelled() => Err(SourceError::unanswered(&remote, "stopped")),
        };
        let buffer = Buffer::of(&remote);
        let (document, from_buffer) = match fetched {
            Ok(d) => (d, false),
            Err(e) if e.is_unreachable() => match buffer.read(&remote) {
                Ok(Some(kept)) => {
                    tracing::warn!(target: "extractor_runtime::reload", buffer = %buffer.path().display(), revision = %kept.revision, "{e}; running from the last good config kept on disk until CDF answers");
                    (kept, true)
                }
                Ok(None) => {
                    return Err(RuntimeError::Source(e));
                }
                Err(why) => {
                    tracing::error!(target: "extractor_runtime::reload", "{why}");
                    return Err(RuntimeError::Source(e));
                }
            },
            Err(e) => {
                if let Some(t) = &tokens {
                    t.shutdown();
                }
                return Err(RuntimeError::Source(e));
            }
        };
        let mut config = crate::source::config_of(&document, &file, Some(&remote), &options)?;
        for warning in config.warnings() {
            tracing::warn!(target: "extractor_runtime::reload", "{warning}");
        }
        if let Some(shard) = shard {
            config.tasks.retain(|t| shard.owns(&t.name));
        }
        let built = build_tasks(&registry, &config, &self.metrics)?;
        if !from_buffer && let Err(e) = buffer.write(&remote, &document) {
            tracing::warn!(target: "extractor_runtime::reload", "cannot keep the config in {}: {e}", buffer.path().display());
        }
        self.reload_metrics.from_buffer.set(i64::from(from_buffer));
        crate::logging::set_level(&config.logger);
        tracing::info!(target: "extractor_runtime::reload", source = %name, revision = %document.revision, tasks = config.tasks.len(), from_buffer, "remote config loaded");
        self.network = config.cognite.connection.network()?;
        self.config = config;
        self.built = built;
        self.document = Some(document);
        Ok((tokens, cdf))
    }

    /// One [`Pusher`] per `metrics.push-gateways` entry.
    fn pushers(&self) -> Result<Vec<Pusher>, RuntimeError> {
        if self.config.metrics.push_gateways.is_empty() {
            return Ok(Vec::new());
        }
        let counter = crate::metrics::push_total(self.metrics.prometheus())
            .map_err(|e| RuntimeError::setup("the push metrics", e))?;
        self.config
            .metrics
            .push_gateways
            .iter()
            .map(|g| {
                Pusher::new(g, self.metrics.clone(), counter.clone(), &self.network)
                    .map_err(|e| RuntimeError::setup("a Pushgateway", e))
            })
            .collect()
    }

    /// The state store of `state-store:`, if any. A local file is opened (and locked) before
    /// any network I/O, so a corrupt one stops the process first; RAW is read once `cdf` is.
    fn open_local_state(&self) -> Result<Option<LocalStateStore>, RuntimeError> {
        Ok(match &self.config.state_store {
            Some(StateStoreConfig::Local(local)) => Some(LocalStateStore::open_locked(
                Path::new(&local.path),
                self.reset_state,
            )?),
            _ => None,
        })
    }

    /// The token manager (none in dry-run or without `idp-authentication`) and the CDF client.
    fn clients(&self) -> Result<(Option<TokenManager>, CdfClient), RuntimeError> {
        let cognite = &self.config.cognite;
        let tokens = match (&cognite.idp_authentication, cognite.dry_run) {
            (Some(idp), false) => Some(TokenManager::spawn(
                idp,
                self.token_options(),
                Some(self.metrics.prometheus()),
            )?),
            _ => None,
        };
        let dry_run = match (cognite.dry_run, &cognite.dry_run_output) {
            (false, _) => None,
            (true, None) => Some(DryRunSink::stdout()),
            (true, Some(path)) => Some(DryRunSink::to_writer(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| RuntimeError::Open {
                        key: "cognite.dry-run-output",
                        path: path.into(),
                        source,
                    })?,
            )),
        };
        let cdf = CdfClient::new(cognite, tokens.clone(), dry_run, self.metrics.prometheus())
            .map_err(|e| RuntimeError::setup("the CDF client", e))?;
        Ok((tokens, cdf))
    }

    /// The token manager's settings: one token request, the proxy hop included, within
    /// `connection.timeout`.
    fn token_options(&self) -> TokenManagerOptions {
        TokenManagerOptions {
            request_timeout: self.network.timeout(),
            network: self.network.clone(),
            ..TokenManagerOptions::default()
        }
    }

    /// The check-in recorder and reporter of `cognite.integration`, if it is set (and this is
    /// not a dry run).
    fn checkins(
        &self,
        cdf: &CdfClient,
        revision: Revision,
    ) -> Result<(Option<Recorder>, Option<Reporter>), RuntimeError> {
        let Some(integration) = &self.config.cognite.integration else {
            return Ok((None, None));
        };
        if self.config.cognite.dry_run {
            return Ok((None, None));
        }
        let recorder = Recorder::new(self.metrics.prometheus())
            .map_err(|e| RuntimeError::setup("the check-in metrics", e))?;
        recorder.set_revision(revision);
        let reporter = Reporter::new(
            cdf.clone(),
            &integration.external_id,
            "extractor-runtime",
            env!("CARGO_PKG_VERSION"),
            recorder.clone(),
        );
        Ok((Some(recorder), Some(reporter)))
    }

    /// The upload queues, with the dead-letter file of `upload-queue.dead-letter`.
    fn queues(&self, cdf: &CdfClient) -> Result<Queues, RuntimeError> {
        let dead_letter = match &self.config.upload_queue.dead_letter {
            Some(path) => Some(
                DeadLetter::open_rotated(
                    Path::new(path),
                    self.config.upload_queue.dead_letter_max_size,
                    self.config.upload_queue.dead_letter_retention,
                )
                .map_err(|source| {
                RuntimeError::Open {
                    key: "upload-queue.dead-letter",
                    path: path.into(),
                    source,
                }
            })?),
            None => None,
        };
        let queue = &self.config.upload_queue;
        match &queue.buffer {
            crate::config::BufferConfig::Memory => Queues::with_dead_letter(
                cdf.clone(),
                queue.max_queue_size,
                self.metrics.prometheus(),
                dead_letter,
            )
            .map(|q| q.with_in_flight(queue.max_in_flight))
            .map_err(|e| RuntimeError::setup("the upload queues", e)),
            crate::config::BufferConfig::Disk {
                path,
                max_size,
                when_full,
            } => Queues::with_disk_buffer(
                cdf.clone(),
                queue.max_queue_size,
                self.metrics.prometheus(),
                dead_letter,
                Path::new(path),
                crate::disk_log::Options {
                    max_size: *max_size,
                    when_full: match when_full {
                        crate::config::WhenFull::Block => crate::disk_log::WhenFull::Block,
                        crate::config::WhenFull::DropNewest => {
                            crate::disk_log::WhenFull::DropNewest
                        }
                    },
                    ..crate::disk_log::Options::default()
                },
                queue.max_in_flight,
            )
            .map_err(|e| RuntimeError::setup("the upload queues' disk buffer", e)),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_tasks(
        mut self,
        mode: Mode,
        shutdown: &CancellationToken,
        deadline: &Deadline,
        root: &CancellationToken,
        health: Health,
        early: Option<(Option<TokenManager>, CdfClient)>,
        leading: Leading,
    ) -> Result<Report, RuntimeError> {
        let local_state = self.open_local_state()?;
        let (tokens, cdf) = match early {
            Some(clients) => clients,
            None => self.clients()?,
        };
        let current_tokens = CurrentTokens::default();
        current_tokens.0.store(tokens.clone().map(Arc::new));
        if tokens.is_some() {
            health.add_check(current_tokens.clone());
        }
        let revision = self
            .document
            .as_ref()
            .map_or(Revision::Local, |d| d.revision);
        self.reload_metrics.applied(revision, false);
        let (recorder, reporter) = self.checkins(&cdf, revision)?;
        // State in RAW before any task: unreadable state stops the process.
        let state = match (local_state, &self.config.state_store) {
            (Some(local), _) => Some(StateStore::Local(local)),
            (None, Some(StateStoreConfig::Raw(raw))) => Some(StateStore::Raw(
                RawStateStore::open(cdf.clone(), &raw.database, &raw.table, self.reset_state)
                    .await?,
            )),
            (None, _) => None,
        };
        if let Some(state) = &state {
            state.set_fence(leading.fence.clone());
        }
        let mut queues = self.queues(&cdf)?;
        queues.fence = leading.fence.clone();
        cdf.resolve_defaults(&self.config.cognite)
            .await
            .map_err(|source| RuntimeError::Lookup {
                key: "cognite.data-set",
                source,
            })?;
        let pipeline = match self
            .config
            .cognite
            .extraction_pipeline
            .as_ref()
            .and_then(|p| p.either_id())
        {
            Some(id) => {
                let external_id = crate::cdf::pipeline_external_id(&cdf, &id)
                    .await
                    .map_err(|source| RuntimeError::Lookup {
                        key: "cognite.extraction-pipeline.id",
                        source,
                    })?;
                Some(
                    PipelineReporter::new(cdf.clone(), &external_id, self.metrics.prometheus())
                        .map_err(|e| RuntimeError::setup("the extraction pipeline reports", e))?
                        .with_fence(leading.fence.clone()),
                )
            }
            None => None,
        };
        let cognite_metrics = match &self.config.metrics.cognite {
            Some(m) => Some(
                crate::cognite_metrics::CognitePusher::start(
                    m,
                    &cdf,
                    queues.clone(),
                    self.metrics.clone(),
                )
                .await
                .map_err(|(key, source)| RuntimeError::Lookup { key, source })?,
            ),
            None => None,
        };
        let scheduler = Scheduler::new(
            &self.config.tasks,
            self.built.iter().map(|b| b.extractor.clone()).collect(),
            SchedulerOptions {
                registry: self.metrics.clone(),
                cdf: Some(cdf.clone()),
                queues: Some(queues.clone()),
                state: state.clone(),
                clock: Clock::System,
                keep_runs: false,
                health: Some(health),
                network: self.network.clone(),
                events: recorder.clone(),
            },
        )
        .map_err(|e| RuntimeError::setup("the scheduler", e))?;
        if mode == Mode::Once {
            scheduler.check_once()?;
            if let Some(tokens) = &tokens {
                // Batch jobs fail fast on bad credentials, before any task runs.
                tokio::select! {
                    r = tokens.get() => { r?; }
                    () = shutdown.cancelled() => {}
                }
            }
        }
        let background = root.child_token();
        let saves = match &state {
            Some(store) => Some(
                Saves::new(
                    store.clone(),
                    &self.config,
                    self.metrics.prometheus(),
                    recorder.clone(),
                    shutdown.clone(),
                )
                .map_err(|e| RuntimeError::setup("the state metrics", e))?,
            ),
            None => None,
        };
        let periodic = self.start_periodic(mode, &queues, &saves, &pipeline, &background);
        if let Some(message) = &leading.takeover {
            if let Some(recorder) = &recorder {
                recorder.error(crate::checkin::Level::Warning, message, None, None);
            }
            if let Some(p) = &pipeline {
                let (p, message) = (p.clone(), message.clone());
                periodic.spawn(async move {
                    if let Err(e) = p.report(RunStatus::Seen, Some(&message)).await {
                        tracing::warn!(target: "extractor_runtime::cdf", "cannot report the takeover to the extraction pipeline: {e}");
                    }
                });
            }
        }
        if let (Some(pusher), Some(m)) = (&cognite_metrics, &self.config.metrics.cognite) {
            periodic.spawn(pusher.clone().run(m.push_interval.get(), background.clone()));
        }
        if let Some(reporter) = &reporter {
            let tasks = crate::supervisor::task_infos(&self.config);
            let reporter = reporter.clone();
            periodic.spawn(async move {
                if let Err(e) = reporter.startup(&tasks).await {
                    tracing::warn!(target: "extractor_runtime::checkin", "cannot report the start to the integration: {e}");
                }
            });
        }
        if let (Some(reporter), Some(every)) = (
            &reporter,
            self.config.cognite.integration.as_ref().map(|i| i.checkin_interval.get()),
        ) {
            let (reporter, recorder) = (reporter.clone(), reporter.recorder().clone());
            let trigger = self
                .reloading
                .as_ref()
                .map(|r| ReloadHandle(r.sender.clone()));
            let sample = sampler(queues.clone(), current_tokens.clone());
            periodic.spawn(reporter.run(
                every,
                move || recorder.revision().number(),
                move |n| {
                    if let Some(t) = &trigger {
                        t.trigger(Trigger::Revision(n));
                    }
                },
                sample,
                background.clone(),
            ));
        }

        // One deadline for the whole stop: the runs get the grace less a reserve, which the
        // final flush, the state save and the pipeline report share.
        let reserve = deadline.reserve();
        let runs_grace = self.config.shutdown_grace.get().saturating_sub(reserve);
        let summary = match (mode, self.reloading.take()) {
            (Mode::Once, _) => scheduler.run_once(shutdown.clone(), runs_grace).await,
            (Mode::Service, None) => scheduler.run(shutdown.clone(), runs_grace).await,
            (Mode::Service, Some(reloading)) => {
                let token_options = self.token_options();
                let built = self
                    .config
                    .tasks
                    .iter()
                    .map(|t| t.name.to_string())
                    .zip(self.built)
                    .collect();
                let supervisor = Supervisor {
                    reloading,
                    metrics: self.metrics.clone(),
                    scheduler: scheduler.clone(),
                    config: self.config,
                    built,
                    cdf: cdf.clone(),
                    tokens: current_tokens.clone(),
                    token_options,
                    document: self.document.clone().unwrap_or(Document {
                        text: String::new(),
                        revision: Revision::Local,
                    }),
                    reload_metrics: self.reload_metrics.clone(),
                    reporter: reporter.clone(),
                    recorder: recorder.clone(),
                    last_rejected: None,
                };
                let (summary, ()) = tokio::join!(
                    scheduler.run(shutdown.clone(), runs_grace),
                    supervisor.run(shutdown.clone()),
                );
                summary
            }
        };
        // The periodic flushes and saves stop before the final ones.
        background.cancel();
        periodic.close();
        periodic.wait().await;
        // The metrics' last values go with the final flush (`--once` ends here too).
        if let Some(pusher) = &cognite_metrics
            && let Some(Err(e)) = deadline
                .bound("the last metrics push", reserve, pusher.push())
                .await
        {
            tracing::warn!(target: "extractor_runtime::metrics", "metrics.cognite: cannot queue the last metrics: {e}");
        }
        let unsent = final_upload(&queues, deadline, reserve).await;
        let stopped = shutdown.is_cancelled();
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
        let checkin = async {
            let Some(r) = &reporter else { return };
            if let Some(Err(e)) = deadline
                .bound("the final check-in", Duration::ZERO, r.checkin())
                .await
            {
                tracing::warn!(target: "extractor_runtime::checkin", "cannot check in to the integration at the stop: {e}");
            }
        };
        let (state_error, (), ()) =
            tokio::join!(final_save(state.as_ref(), deadline), report, checkin);
        if let Some(tokens) = tokens {
            tokens.shutdown();
        }
        Ok(Report {
            summary,
            unsent,
            refused: queues.refused(),
            dead_letter: queues.dead_letter().map(Path::to_path_buf),
            state_error,
            lease_lost: None,
        })
    }

    /// The periodic flushes and state saves, and in service mode the pipeline's `seen` reports,
    /// until `stop` fires.
    fn start_periodic(
        &self,
        mode: Mode,
        queues: &Queues,
        saves: &Option<Saves>,
        pipeline: &Option<PipelineReporter>,
        stop: &CancellationToken,
    ) -> TaskTracker {
        let services = TaskTracker::new();
        services.spawn(flush_periodically(
            queues.clone(),
            saves.clone(),
            self.config.upload_queue.max_upload_interval.get(),
            stop.clone(),
        ));
        if let Some(saves) = saves {
            let every = match &self.config.state_store {
                Some(StateStoreConfig::Local(l)) => l.save_interval.get(),
                Some(StateStoreConfig::Raw(r)) => r.upload_interval.get(),
                None => Duration::from_secs(30),
            };
            services.spawn(save_periodically(saves.clone(), every, stop.clone()));
        }
        if let (Some(p), Mode::Service) = (pipeline, mode) {
            let every = self
                .config
                .cognite
                .extraction_pipeline
                .as_ref()
                .map(|p| p.seen_interval.get())
                .unwrap_or(Duration::from_secs(600));
            services.spawn(report_seen(p.clone(), every, stop.clone()));
        }
        services
    }
}

/// What each check-in samples: items CDF refused since the last one, and a token manager that
/// turned from working to failing (noted once per failure, not at every check-in).
fn sampler(queues: Queues, tokens: CurrentTokens) -> impl FnMut(&Recorder) + Send {
    let (mut refused, mut failing) = (0, false);
    move |recorder: &Recorder| {
        let now = queues.refused();
        if now > refused {
            let kept = match queues.dead_letter() {
                Some(path) => format!("kept in {}", path.display()),
                None => "not kept: set upload-queue.dead-letter to keep them".to_owned(),
            };
            recorder.error(
                crate::checkin::Level::Error,
                &format!("CDF refused {} item(s) for good", now - refused),
                Some(&format!("the log names them; {kept}")),
                None,
            );
            refused = now;
        }
        let failure = tokens.0.load().as_ref().and_then(|t| t.failure());
        let now_failing = failure.is_some();
        if let Some(why) = failure.filter(|_| !failing) {
            recorder.error(
                crate::checkin::Level::Error,
                "no access token: the identity provider fails",
                Some(&why.to_string()),
                None,
            );
        }
        failing = now_failing;
    }
}

/// How long a start waits for a remote config before it uses the buffer file.
const START_FETCH_TIMEOUT: Duration = Duration::from_secs(30);

/// Every task's extractor, built (each `config:` block checked; every problem gathered), its
/// own metrics installed.
fn build_tasks(
    registry: &Registry,
    config: &Config,
    metrics: &MetricsRegistry,
) -> Result<Vec<Built>, ConfigErrors> {
    let mut built = Vec::with_capacity(config.tasks.len());
    let mut errors = Vec::new();
    for (i, task) in config.tasks.iter().enumerate() {
        match registry.build(i, task, metrics) {
            Ok(b) => built.push(b),
            Err(ConfigErrors(mut e)) => errors.append(&mut e),
        }
    }
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    for (task, b) in config.tasks.iter().zip(&mut built) {
        metrics.install_extractor(&task.name, b.metrics.take());
    }
    Ok(built)
}

/// What the runs queued goes out now; items it cannot send stay unsent (the state does not
/// move past them: the next start sends them again). Returns how many are unsent.
async fn final_upload(queues: &Queues, deadline: &Deadline, reserve: Duration) -> usize {
    let flushed = deadline
        .bound("the final upload", reserve / 2, queues.flush())
        .await;
    if queues.is_durable() {
        queues.sync_buffers();
        let left = queues.pending();
        if left > 0 {
            tracing::warn!(target: "extractor_runtime::queues", pending = left, "items not uploaded yet stay in the disk buffer and are sent at the next start");
        }
    }
    match flushed {
        Some(Ok(_)) => {
            let held = queues.held();
            if held > 0 {
                tracing::error!(target: "extractor_runtime::queues", held, "refused items could not be kept in the dead-letter file ({}); the state did not move past them, so a source that re-reads (csv, http, postgres) reads them again at the next start", queues.dead_letter_failure().unwrap_or_default());
            }
            held
        }
        Some(Err(e)) => {
            tracing::error!(target: "extractor_runtime::queues", pending = queues.pending(), "the final upload failed; these items were not uploaded: {e}");
            queues.pending()
        }
        None => {
            tracing::error!(target: "extractor_runtime::queues", pending = queues.pending(), "the final upload did not finish within the shutdown grace; these items were not uploaded");
            queues.pending()
        }
    }
}

/// The last state save; why it failed, if it did.
async fn final_save(state: Option<&StateStore>, deadline: &Deadline) -> Option<String> {
    let store = state?;
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
    saves: Option<Saves>,
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
                if let Some(saves) = &saves {
                    saves.save().await;
                }
            }
            Err(e) => {
                tracing::warn!(target: "extractor_runtime::queues", pending = queues.pending(), "upload failed; the items stay queued: {e}");
            }
        }
    }
}

async fn save_periodically(saves: Saves, every: Duration, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = stop.cancelled() => return,
        }
        saves.save().await;
    }
}

/// The state saves a running process makes (periodic, after flushes): a failure is logged,
/// counted (`extractor_state_save_failures_total`) and noted for the next check-in; with
/// `max-failures`, that many in a row stop the process (the final save is tried again, and the
/// exit code is 1).
#[derive(Clone)]
struct Saves {
    store: StateStore,
    failures: prometheus::IntCounter,
    in_a_row: Arc<std::sync::atomic::AtomicU32>,
    max: Option<u32>,
    recorder: Option<Recorder>,
    stop_process: CancellationToken,
}

impl Saves {
    fn new(
        store: StateStore,
        config: &Config,
        registry: &prometheus::Registry,
        recorder: Option<Recorder>,
        stop_process: CancellationToken,
    ) -> prometheus::Result<Saves> {
        let failures = prometheus::IntCounter::new(
            "extractor_state_save_failures_total",
            "State saves (periodic, after flushes) that failed.",
        )?;
        registry.register(Box::new(failures.clone()))?;
        let max = match &config.state_store {
            Some(StateStoreConfig::Local(l)) => l.max_failures,
            Some(StateStoreConfig::Raw(r)) => r.max_failures,
            None => None,
        };
        Ok(Saves {
            store,
            failures,
            in_a_row: Arc::default(),
            max,
            recorder,
            stop_process,
        })
    }

    async fn save(&self) {
        use std::sync::atomic::Ordering;
        let Err(e) = self.store.save().await else {
            self.in_a_row.store(0, Ordering::Relaxed);
            return;
        };
        self.failures.inc();
        let n = self.in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::error!(target: "extractor_runtime::state", failed_in_a_row = n, "{e}");
        if let Some(r) = &self.recorder {
            r.error(
                crate::checkin::Level::Error,
                "the state could not be saved",
                Some(&e.to_string()),
                None,
            );
        }
        if self.max.is_some_and(|max| n >= max) {
            tracing::error!(target: "extractor_runtime::state", "state saves failed {n} times in a row (state-store max-failures): stopping, so that no more is read than can be kept");
            self.stop_process.cancel();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_check_in_notes_a_token_failure_once() {
        use wiremock::matchers::method;
        let idp = wiremock::MockServer::start().await;
        wiremock::Mock::given(method("POST"))
            .respond_with(wiremock::ResponseTemplate::new(401).set_body_json(
                serde_json::json!({"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided."}),
            ))
            .mount(&idp)
            .await;
        let yaml = format!(
            "version: 1\ncognite:\n  project: demo\n  idp-authentication: {{client-id: c, secret: s, token-url: '{}/token', scopes: [s]}}\n",
            idp.uri()
        );
        let config = Config::from_yaml(&yaml, None, &|_| None, &Default::default()).unwrap();
        let idp_config = config.cognite.idp_authentication.as_ref().unwrap();
        let tokens = TokenManager::spawn(idp_config, TokenManagerOptions::default(), None).unwrap();
        let registry = prometheus::Registry::new();
        let recorder = Recorder::new(&registry).unwrap();
        let queues = Queues::new(CdfClient::discarding(), 10, &registry).unwrap();
        let current = CurrentTokens::default();
        current.0.store(Some(Arc::new(tokens.clone())));
        let mut sample = sampler(queues, current);
        while tokens.failure().is_none() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        sample(&recorder);
        sample(&recorder);
        assert_eq!(recorder.pending(), (0, 1), "one failure, noted once");
        tokens.shutdown();
    }
}
