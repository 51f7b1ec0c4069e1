//! The supervisor (DESIGN.md section 8): owns the running config snapshot and, on a trigger
//! (SIGHUP, the config file changing, a poll, a newer remote revision), reads the config again,
//! validates all of it (every extractor built), and applies it as a diff by task name:
//!
//! - an unchanged task (same keys, and a `config:` block equal by its type's `PartialEq`) is
//!   not touched: its schedule phase, state, queue and running run go on;
//! - a changed task's run finishes (or, after `shutdown-grace`, is cancelled), then it starts
//!   with the new config;
//! - a removed task stops the same way; what it queued is delivered;
//! - a new task starts.
//!
//! A changed `cognite:` section gets a new token manager and CDF client, swapped in only once
//! the new one has a token. `logger:`'s level changes live; `metrics:`, `state-store:`,
//! `upload-queue:` and `shutdown-grace` are read at start only (a change is logged and waits
//! for a restart). A config with any error is rejected whole: the old one runs on, the error is
//! logged (file:line:column, or the remote revision), counted and reported in the next
//! check-in, and the same document is not tried again.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use prometheus::{IntCounterVec, IntGauge, Opts};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::auth::{TokenManager, TokenManagerOptions};
use crate::cdf::CdfClient;
use crate::checkin::{Level, Recorder, Reporter, Revision, TaskInfo};
use crate::config::{Config, ConfigErrors, LoadOptions, Schedule};
use crate::extractor::{Built, Registry};
use crate::metrics::MetricsRegistry;
use crate::scheduler::Scheduler;
use crate::shard::Shard;
use crate::source::{self, Buffer, Document, SourceError};

/// How long a new token manager gets to fetch its first token before a reload that changed
/// `cognite:` is rejected.
const NEW_TOKEN_TIMEOUT: Duration = Duration::from_secs(60);
/// File events within this long are one change (an editor writes, renames, chmods).
const DEBOUNCE: Duration = Duration::from_millis(250);

/// Why the config is read again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// SIGHUP: read again now (a remote config is fetched again).
    Signal,
    /// Something changed in the config file's directory.
    File,
    /// The `reload.interval` poll.
    Poll,
    /// A check-in answered that this revision exists.
    Revision(i64),
}

/// Sends reload triggers to the running process (SIGHUP does). Cheap to clone.
#[derive(Clone, Debug)]
pub struct ReloadHandle(pub(crate) mpsc::Sender<Trigger>);

impl ReloadHandle {
    /// Asks for a reload; `false` when one is already waiting or the process is stopping.
    pub fn trigger(&self, trigger: Trigger) -> bool {
        self.0.try_send(trigger).is_ok()
    }
}

/// The reload metrics.
#[derive(Clone, Debug)]
pub(crate) struct ReloadMetrics {
    reloads: IntCounterVec,
    revision: IntGauge,
    last_reload: prometheus::Gauge,
    /// 1 while the process runs from the buffer file (CDF could not be reached at start).
    pub(crate) from_buffer: IntGauge,
}

impl ReloadMetrics {
    pub(crate) fn register(registry: &prometheus::Registry) -> prometheus::Result<ReloadMetrics> {
        let reloads = IntCounterVec::new(
            Opts::new(
                "extractor_config_reloads_total",
                "Config reloads, by result: applied, or rejected (the old config runs on).",
            ),
            &["result"],
        )?;
        for result in ["applied", "rejected"] {
            reloads.with_label_values(&[result]);
        }
        let revision = IntGauge::new(
            "extractor_config_revision",
            "The config revision running: the remote revision, 0 for a local file.",
        )?;
        let last_reload = prometheus::Gauge::new(
            "extractor_config_last_reload_timestamp_seconds",
            "When a config was last applied (the start, or a reload), Unix time.",
        )?;
        let from_buffer = IntGauge::new(
            "extractor_config_from_buffer",
            "1 while running from the last good remote config kept on disk, because CDF could not be reached at start.",
        )?;
        registry.register(Box::new(reloads.clone()))?;
        registry.register(Box::new(revision.clone()))?;
        registry.register(Box::new(last_reload.clone()))?;
        registry.register(Box::new(from_buffer.clone()))?;
        Ok(ReloadMetrics {
            reloads,
            revision,
            last_reload,
            from_buffer,
        })
    }

    /// A config was applied: the start's, or a reload's.
    pub(crate) fn applied(&self, revision: Revision, counted: bool) {
        if counted {
            self.reloads.with_label_values(&["applied"]).inc();
        }
        self.revision.set(revision.number());
        self.last_reload
            .set(jiff::Timestamp::now().as_millisecond() as f64 / 1000.0);
    }
}

/// The token manager in use: `/readyz` asks whichever one runs now.
#[derive(Clone, Debug, Default)]
pub(crate) struct CurrentTokens(pub(crate) Arc<ArcSwapOption<TokenManager>>);

impl crate::metrics::ReadinessCheck for CurrentTokens {
    fn name(&self) -> &'static str {
        "token"
    }

    fn check(&self) -> (bool, String) {
        match &*self.0.load() {
            Some(tokens) => crate::metrics::ReadinessCheck::check(&**tokens),
            None => (true, "no token needed".to_owned()),
        }
    }
}

/// What [`Supervisor`] needs besides the running parts.
pub(crate) struct Reloading {
    pub(crate) registry: Arc<Registry>,
    pub(crate) file: PathBuf,
    pub(crate) shard: Option<Shard>,
    pub(crate) options: LoadOptions,
    pub(crate) triggers: mpsc::Receiver<Trigger>,
    pub(crate) sender: mpsc::Sender<Trigger>,
    /// The hash of the config file's text as last applied (for a remote config, of the local
    /// file that points to it).
    pub(crate) local_hash: u64,
}

/// The running config and the parts it configures.
pub(crate) struct Supervisor {
    pub(crate) reloading: Reloading,
    pub(crate) metrics: MetricsRegistry,
    pub(crate) scheduler: Scheduler,
    pub(crate) config: Config,
    /// The running tasks' builds, by name.
    pub(crate) built: HashMap<String, Built>,
    pub(crate) cdf: CdfClient,
    pub(crate) tokens: CurrentTokens,
    pub(crate) token_options: TokenManagerOptions,
    /// The running document: a remote revision's text, or (a local config) only `Local`, the
    /// file's hash being [`Reloading::local_hash`].
    pub(crate) document: Document,
    pub(crate) reload_metrics: ReloadMetrics,
    pub(crate) reporter: Option<Reporter>,
    pub(crate) recorder: Option<Recorder>,
    /// The hash of the last document rejected: it is not tried (and logged) again.
    pub(crate) last_rejected: Option<u64>,
}

/// A checked new config, ready to apply.
struct Plan {
    config: Config,
    document: Document,
    local_hash: u64,
    /// For each of `config.tasks`: its new build, or `None` when it runs unchanged.
    builds: Vec<Option<Built>>,
    removed: Vec<String>,
    /// A new token manager and CDF client (a changed `cognite:`), already holding a token.
    clients: Option<(Option<TokenManager>, CdfClient)>,
}

/// The tasks as `/integrations/startup` lists them.
pub(crate) fn task_infos(config: &Config) -> Vec<TaskInfo> {
    config
        .tasks
        .iter()
        .map(|t| TaskInfo {
            kind: match t.schedule {
                Schedule::Continuous => "continuous",
                _ => "batch",
            },
            name: t.name.to_string(),
        })
        .collect()
}

impl Supervisor {
    /// Reads, checks and applies configs on every trigger until `shutdown` fires.
    pub(crate) async fn run(mut self, shutdown: CancellationToken) {
        let _watcher = if self.config.reload.watch {
            watch(&self.reloading.file, self.reloading.sender.clone())
        } else {
            None
        };
        let mut every = self.config.reload.interval.get();
        let mut poll = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let trigger = tokio::select! {
                t = self.reloading.triggers.recv() => match t {
                    Some(t) => t,
                    None => return,
                },
                _ = poll.tick() => Trigger::Poll,
                () = shutdown.cancelled() => return,
            };
            let mut trigger = trigger;
            if trigger == Trigger::File {
                // One change, however many events it made.
                tokio::select! {
                    () = tokio::time::sleep(DEBOUNCE) => {}
                    () = shutdown.cancelled() => return,
                }
                while let Ok(next) = self.reloading.triggers.try_recv() {
                    if next != Trigger::File {
                        trigger = next;
                    }
                }
            }
            tokio::select! {
                () = self.reload(trigger) => {}
                () = shutdown.cancelled() => return,
            }
            let now = self.config.reload.interval.get();
            if now != every {
                every = now;
                poll = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            }
        }
    }

    /// One reload: read, check, apply; or reject and keep the running config.
    pub(crate) async fn reload(&mut self, trigger: Trigger) {
        let started = std::time::Instant::now();
        let read = match self.read(trigger).await {
            Ok(Some(read)) => read,
            Ok(None) => return,
            Err((error, hash)) => return self.reject(&error, hash),
        };
        let (document, local_hash, hash, config) = read;
        let config = match config {
            Ok(config) => {
                for warning in config.warnings() {
                    tracing::warn!(target: "extractor_runtime::reload", "{warning}");
                }
                config
            }
            Err(e) => return self.reject(&e.to_string(), Some(hash)),
        };
        let read_ms = started.elapsed().as_secs_f64() * 1000.0;
        match self.check(config, document, local_hash).await {
            Ok(plan) => {
                let check_ms = started.elapsed().as_secs_f64() * 1000.0 - read_ms;
                let summary = self.apply(plan).await;
                tracing::info!(target: "extractor_runtime::reload", trigger = ?trigger, revision = %self.document.revision, took_ms = started.elapsed().as_secs_f64() * 1000.0, read_ms, check_ms, "config reloaded: {summary}");
            }
            Err(e) => self.reject(&e, Some(hash)),
        }
    }

    fn reject(&mut self, why: &str, hash: Option<u64>) {
        if hash.is_some() {
            self.last_rejected = hash;
        }
        tracing::error!(target: "extractor_runtime::reload", running = %self.document.revision, "the new config was rejected; the running config is kept: {why}");
        self.reload_metrics
            .reloads
            .with_label_values(&["rejected"])
            .inc();
        if let Some(r) = &self.recorder {
            r.error(Level::Error, "a new config was rejected; the running config is kept", Some(why), None);
        }
    }

    /// The new document, the local file's hash, the hash that identifies what was read (the
    /// local file; for a remote config, the revision's text with the local file), and its
    /// config; or `None` when nothing changed (or it is what was rejected last).
    #[allow(clippy::type_complexity)]
    async fn read(
        &mut self,
        trigger: Trigger,
    ) -> Result<Option<(Document, u64, u64, Result<Config, ConfigErrors>)>, (String, Option<u64>)>
    {
        let file = self.reloading.file.clone();
        let local = source::read_local(&file).map_err(|e| (e.to_string(), None))?;
        let local_hash = local.hash();
        let Some(remote) = self.config.remote().cloned() else {
            let same_text = local_hash == self.reloading.local_hash;
            // SIGHUP reads `!file` and `!env` secrets again even when the text is unchanged.
            let reread = same_text && trigger == Trigger::Signal;
            if (same_text && !reread) || Some(local_hash) == self.last_rejected {
                return Ok(None);
            }
            let config = parse(&local, &file, None, &self.reloading.options).await;
            if reread
                && config
                    .as_ref()
                    .is_ok_and(|c| c.same_document(&self.config))
            {
                return Ok(None);
            }
            if let Ok(c) = &config
                && c.remote().is_some()
            {
                return Err((format!("{}: the file now says `type: remote`; switching between a local and a remote config needs a restart", file.display()), Some(local_hash)));
            }
            return Ok(Some((local, local_hash, local_hash, config)));
        };
        // A remote config: its local file may have changed (credentials, reload settings).
        let local_changed = local_hash != self.reloading.local_hash;
        let remote = if local_changed {
            match parse(&local, &file, None, &self.reloading.options).await {
                Ok(c) => match c.remote() {
                    Some(r) => r.clone(),
                    None => {
                        return Err((format!("{}: the file no longer says `type: remote`; switching between a remote and a local config needs a restart", file.display()), Some(local_hash)));
                    }
                },
                Err(e) => {
                    if Some(local_hash) == self.last_rejected {
                        return Ok(None);
                    }
                    return Err((e.to_string(), Some(local_hash)));
                }
            }
        } else {
            remote
        };
        let running = self.document.revision.number();
        let fetch = match trigger {
            Trigger::Signal => true,
            Trigger::File => local_changed,
            Trigger::Revision(n) => n > running,
            Trigger::Poll => {
                match source::latest_revision(&self.cdf, &remote).await {
                    Ok(Some(n)) => n > running || local_changed,
                    Ok(None) => local_changed,
                    Err(e) => {
                        tracing::warn!(target: "extractor_runtime::reload", "cannot poll the config revisions: {e}");
                        false
                    }
                }
            }
        };
        if !fetch {
            return Ok(None);
        }
        let document = match source::fetch_latest(&self.cdf, &remote).await {
            Ok(d) => d,
            Err(SourceError::Config(e)) => return Err((e.to_string(), None)),
            Err(e) => {
                tracing::warn!(target: "extractor_runtime::reload", "cannot fetch the config; the running config is kept: {e}");
                return Ok(None);
            }
        };
        let hash = document.hash() ^ local_hash.rotate_left(1);
        if (!local_changed && document == self.document) || Some(hash) == self.last_rejected {
            return Ok(None);
        }
        let config = parse(&document, &file, Some(&remote), &self.reloading.options)
            .await
            .map_err(|e| (e.to_string(), Some(hash)));
        match config {
            Ok(c) => Ok(Some((document, local_hash, hash, Ok(c)))),
            Err(e) => Err(e),
        }
    }

    /// Checks a new config fully: its tasks for this shard, every extractor built, a new token
    /// for changed credentials. Nothing running is touched.
    async fn check(
        &self,
        mut config: Config,
        document: Document,
        local_hash: u64,
    ) -> Result<Plan, String> {
        if let Some(shard) = self.reloading.shard {
            config.tasks.retain(|t| shard.owns(&t.name));
        }
        let running: HashMap<&str, usize> = self
            .config
            .tasks
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.as_str(), i))
            .collect();
        let mut builds = Vec::with_capacity(config.tasks.len());
        let mut errors = Vec::new();
        for (i, task) in config.tasks.iter().enumerate() {
            if i % 256 == 255 {
                // Thousands of builds take tens of milliseconds: let the schedules run between.
                tokio::task::yield_now().await;
            }
            match self.reloading.registry.build(i, task, &self.metrics) {
                Ok(built) => {
                    let unchanged = running.get(task.name.as_str()).is_some_and(|&old| {
                        config.same_task_settings(i, &self.config, old)
                            && self.built.get(task.name.as_str()).is_some_and(|b| b.same_config(&built))
                    });
                    builds.push((!unchanged).then_some(built));
                }
                Err(ConfigErrors(mut e)) => errors.append(&mut e),
            }
        }
        if !errors.is_empty() {
            return Err(ConfigErrors(errors).to_string());
        }
        let kept: std::collections::HashSet<&str> =
            config.tasks.iter().map(|t| t.name.as_str()).collect();
        let removed = self
            .config
            .tasks
            .iter()
            .filter(|t| !kept.contains(t.name.as_str()))
            .map(|t| t.name.to_string())
            .collect();
        let clients = if self.config.same_section(&config, "cognite") {
            None
        } else {
            Some(self.new_clients(&config).await?)
        };
        Ok(Plan {
            config,
            document,
            local_hash,
            builds,
            removed,
            clients,
        })
    }

    /// A token manager and CDF client for a changed `cognite:`, with a first token in hand.
    async fn new_clients(&self, config: &Config) -> Result<(Option<TokenManager>, CdfClient), String> {
        let cognite = &config.cognite;
        if cognite.dry_run != self.config.cognite.dry_run {
            return Err("cognite.dry-run changed: that needs a restart".to_owned());
        }
        let network = cognite.connection.network().map_err(|e| e.to_string())?;
        let tokens = match (&cognite.idp_authentication, cognite.dry_run) {
            (Some(idp), false) => {
                let options = TokenManagerOptions {
                    request_timeout: network.timeout(),
                    network,
                    ..self.token_options.clone()
                };
                let new = match &*self.tokens.0.load() {
                    Some(old) => old.successor(idp, options),
                    None => TokenManager::spawn(idp, options, None),
                }
                .map_err(|e| format!("cognite.idp-authentication: {e}"))?;
                let first = tokio::time::timeout(NEW_TOKEN_TIMEOUT, new.get()).await;
                match first {
                    Ok(Ok(_)) => Some(new),
                    Ok(Err(e)) => {
                        new.shutdown();
                        return Err(format!("the changed cognite.idp-authentication gets no token: {e}"));
                    }
                    Err(_) => {
                        new.shutdown();
                        return Err(format!("the changed cognite.idp-authentication got no token within {}s", NEW_TOKEN_TIMEOUT.as_secs()));
                    }
                }
            }
            _ => None,
        };
        let shut = |tokens: &Option<TokenManager>| {
            if let Some(t) = tokens {
                t.shutdown();
            }
        };
        let cdf = match self.cdf.rebuilt(cognite, tokens.clone()) {
            Ok(cdf) => cdf,
            Err(e) => {
                shut(&tokens);
                return Err(format!("cognite: {e}"));
            }
        };
        if let Err(e) = cdf.resolve_defaults(cognite).await {
            shut(&tokens);
            return Err(format!("cognite.data-set: {e}"));
        }
        Ok((tokens, cdf))
    }

    /// Applies a checked plan; returns what it did, in a few words.
    async fn apply(&mut self, plan: Plan) -> String {
        let Plan {
            config,
            document,
            local_hash,
            builds,
            removed,
            clients,
        } = plan;
        if let Some((tokens, cdf)) = clients {
            self.cdf.replace_with(&cdf);
            let old = self.tokens.0.swap(tokens.map(Arc::new));
            if let Some(old) = old {
                old.shutdown();
            }
            tracing::info!(target: "extractor_runtime::reload", "cognite: changed; requests use the new credentials from now on");
        }
        for (key, what) in [
            ("metrics", "metrics:"),
            ("state-store", "state-store:"),
            ("upload-queue", "upload-queue:"),
            ("shutdown-grace", "shutdown-grace"),
            ("high-availability", "high-availability:"),
        ] {
            if !self.config.same_section(&config, key) {
                tracing::warn!(target: "extractor_runtime::reload", "{what} changed: it is read at start only, and applies at the next restart");
            }
        }
        if self.config.reload.watch != config.reload.watch {
            tracing::warn!(target: "extractor_runtime::reload", "reload.watch changed: it applies at the next restart");
        }
        if !self.config.same_section(&config, "logger") && !crate::logging::set_level(&config.logger) {
            tracing::warn!(target: "extractor_runtime::reload", "logger: changed, but the level is set by RUST_LOG (or logging is not ours): the rest applies at the next restart");
        }

        let grace = self.config.shutdown_grace.get();
        let mut stopping = tokio::task::JoinSet::new();
        for name in &removed {
            stopping.spawn(self.scheduler.remove(name, grace));
            self.metrics.install_extractor(name, None);
            self.built.remove(name);
        }
        let (mut changed, mut added, mut unchanged) = (0, 0, 0);
        for (task, build) in config.tasks.iter().zip(builds) {
            let Some(mut build) = build else {
                unchanged += 1;
                continue;
            };
            self.metrics
                .install_extractor(&task.name, build.metrics.take());
            if self.built.contains_key(task.name.as_str()) {
                changed += 1;
                let replacing = self.scheduler.replace(task, build.extractor.clone(), grace);
                stopping.spawn(async move {
                    replacing.await;
                    true
                });
            } else {
                added += 1;
                self.scheduler.add(task, build.extractor.clone());
            }
            self.built.insert(task.name.to_string(), build);
        }
        stopping.join_all().await;

        if let (Some(remote), Revision::Remote(_)) = (config.remote(), document.revision)
            && let Err(e) = Buffer::of(remote).write(remote, &document)
        {
            tracing::warn!(target: "extractor_runtime::reload", "cannot keep the config in {}: {e}", remote.buffer_file.display());
        }
        let old = std::mem::replace(&mut self.config, config);
        // Freeing thousands of tasks' trees takes milliseconds: not on a runtime worker.
        tokio::task::spawn_blocking(move || drop(old));
        self.document = document;
        self.reloading.local_hash = local_hash;
        self.last_rejected = None;
        self.reload_metrics.applied(self.document.revision, true);
        if let Some(r) = &self.recorder {
            r.set_revision(self.document.revision);
        }
        if let Some(reporter) = &self.reporter {
            let (reporter, tasks) = (reporter.clone(), task_infos(&self.config));
            tokio::spawn(async move {
                if let Err(e) = reporter.startup(&tasks).await {
                    tracing::warn!(target: "extractor_runtime::checkin", "cannot report the new config to the integration: {e}");
                }
            });
        }
        format!(
            "{unchanged} task(s) unchanged, {changed} changed, {added} added, {} removed",
            removed.len()
        )
    }
}

/// [`source::config_of`] on a blocking thread: parsing thousands of tasks takes a few hundred
/// milliseconds, which must not hold a runtime worker (with one CPU, every task's schedule).
async fn parse(
    document: &Document,
    file: &std::path::Path,
    remote: Option<&crate::config::Remote>,
    options: &LoadOptions,
) -> Result<Config, ConfigErrors> {
    let (document, file, remote, options) = (
        document.clone(),
        file.to_owned(),
        remote.cloned(),
        options.clone(),
    );
    tokio::task::spawn_blocking(move || {
        source::config_of(&document, &file, remote.as_ref(), &options)
    })
    .await
    .unwrap_or_else(|e| {
        Err(ConfigErrors(vec![crate::config::ConfigError::new(
            crate::config::ConfigErrorKind::Invalid,
            format!("the config parser failed: {e}"),
        )]))
    })
}

/// Watches the directory of `file` (a watch on the file itself ends at the first rename over
/// it, and a Kubernetes ConfigMap's `..data` swap never names the file) and sends
/// [`Trigger::File`] on any event there; the supervisor reads the file and compares.
fn watch(file: &std::path::Path, sender: mpsc::Sender<Trigger>) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher as _;
    let dir = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."))
        .to_owned();
    let mut watcher = match notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            let _ = sender.try_send(Trigger::File);
        }
    }) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(target: "extractor_runtime::reload", "cannot watch the config file (reloads on SIGHUP and every reload.interval only): {e}");
            return None;
        }
    };
    if let Err(e) = watcher.watch(&dir, notify::RecursiveMode::NonRecursive) {
        tracing::warn!(target: "extractor_runtime::reload", dir = %dir.display(), "cannot watch the config file's directory (reloads on SIGHUP and every reload.interval only): {e}");
        return None;
    }
    tracing::debug!(target: "extractor_runtime::reload", dir = %dir.display(), "watching the config file's directory");
    Some(watcher)
}
