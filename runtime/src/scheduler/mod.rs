//! Runs tasks on their schedules (DESIGN.md section 4).
//!
//! - `interval` (first run at start unless `run-on-start: false`), `cron` (croner, in an IANA
//!   time zone via jiff, DST by the cron spec), `continuous` (restarted with backoff 5 s to 60 s,
//!   reset after 10 min healthy), `startup` (all finish before the others start).
//! - `overlap`: `forbid` skips a run due while one runs (counted), `allow` runs up to
//!   `max-concurrent`, `replace` cancels the running one.
//! - Missed runs (the process was late): at most one catch-up run, and only within
//!   `starting-deadline` when one is set; the rest are skipped and counted.
//! - `jitter` delays each run randomly; `timeout` cancels the run, waits `timeout-grace`, then
//!   aborts it; transient failures are retried per `retry`; a panic is a failed run.
//! - Shutdown: stop scheduling, cancel runs, wait `shutdown-grace`, abort what is left.

mod clock;
mod run;
mod task_list;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use clock::Clock;
pub use run::RunResult;

use crate::config::{OverlapPolicy, RetryConfig, Schedule, TaskConfig};
use task_list::TaskList;
use crate::extractor::{DynExtractor, TaskErrorKind};
use crate::metrics::{MetricsRegistry, SchedulerMetrics, TaskMetrics};

/// Restart delays of a continuous task.
const CONTINUOUS_MIN_BACKOFF: Duration = Duration::from_secs(5);
const CONTINUOUS_MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A continuous run that lasted this long resets the restart backoff.
const CONTINUOUS_HEALTHY: Duration = Duration::from_secs(600);

/// The largest start offset of an interval task.
const MAX_START_OFFSET: Duration = Duration::from_secs(1);

/// With more tasks than this in the process, interval tasks are spread by [`start_offset`];
/// up to this many start together (a herd of 16 runs is none).
const SPREAD_ABOVE: usize = 16;

/// A stable offset (from a hash of the task's name) of up to a second, at most the interval,
/// by which an interval task's schedule is shifted when the process runs more than
/// [`SPREAD_ABOVE`] tasks (`spread`). Thousands of tasks with the same interval then wake
/// spread over a second instead of in the same millisecond, as Prometheus spreads its scrapes;
/// each task still runs exactly `every` apart. A few tasks start at once.
fn start_offset(name: &str, every: Duration, spread: bool) -> Duration {
    if !spread {
        return Duration::ZERO;
    }
    let hash = crate::fnv::hash(name.as_bytes());
    let window = every.min(MAX_START_OFFSET).as_micros().max(1) as u64;
    Duration::from_micros(hash % window)
}

/// A new task's ledger: its acknowledgements and pending checkpoints.
fn ledger(
    name: &str,
    state: &Option<crate::state::StateStore>,
    metrics: &TaskMetrics,
) -> Arc<crate::queues::ledger::Ledger> {
    crate::queues::ledger::Ledger::new(name.into(), state.clone(), Some(metrics.series.clone()))
}

/// A task ready to run: its extractor and its policies.
pub struct Task {
    name: Arc<str>,
    extractor: Arc<dyn DynExtractor>,
    schedule: Schedule,
    overlap: OverlapPolicy,
    max_concurrent: u32,
    timeout: Option<Duration>,
    timeout_grace: Duration,
    starting_deadline: Option<Duration>,
    jitter: Option<Duration>,
    retry: Option<RetryConfig>,
    metrics: TaskMetrics,
    /// The task's acknowledgements and pending checkpoints, shared by its runs.
    ledger: Arc<crate::queues::ledger::Ledger>,
    /// The runs in progress: id, cancellation token, abort handle.
    running: Mutex<Vec<RunningRun>>,
    /// The task's runs, to wait for them when the task is stopped alone (a reload).
    runs: TaskTracker,
    /// Stops the task's driver (its schedule), not its runs.
    stop: CancellationToken,
}

impl std::fmt::Debug for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Task")
            .field("name", &self.name)
            .field("schedule", &self.schedule)
            .field("overlap", &self.overlap)
            .finish_non_exhaustive()
    }
}

impl Task {
    /// A task from its config and its extractor, with its metric series and ledger (those of
    /// the task it replaces, on a reload, so its counters and pending checkpoints carry on).
    fn new(
        config: &TaskConfig,
        extractor: Arc<dyn DynExtractor>,
        metrics: TaskMetrics,
        ledger: Arc<crate::queues::ledger::Ledger>,
    ) -> Task {
        Task {
            name: config.name.as_str().into(),
            extractor,
            schedule: config.schedule.clone(),
            overlap: config.overlap,
            max_concurrent: config.max_concurrent.unwrap_or(1).max(1),
            timeout: config.timeout.map(|d| d.get()),
            timeout_grace: config.timeout_grace.get(),
            starting_deadline: config.starting_deadline.map(|d| d.get()),
            jitter: config.jitter.map(|d| d.get()),
            retry: config.retry.clone(),
            metrics,
            ledger,
            running: Mutex::new(Vec::new()),
            runs: TaskTracker::new(),
            stop: CancellationToken::new(),
        }
    }

    /// The task's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

struct RunningRun {
    id: u64,
    cancel: CancellationToken,
    abort: tokio::task::AbortHandle,
}

/// What every run shares.
pub(crate) struct Shared {
    clock: Clock,
    cdf: crate::cdf::CdfClient,
    queues: crate::queues::Queues,
    tracker: TaskTracker,
    next_run_id: std::sync::atomic::AtomicU64,
    health: Option<crate::metrics::Health>,
    network: crate::net::Network,
    events: Option<crate::checkin::Recorder>,
}

/// Settings of a [`Scheduler`].
#[derive(Clone, Debug)]
pub struct SchedulerOptions {
    /// The metrics registry.
    pub registry: MetricsRegistry,
    /// The CDF client runs get; without one, a dry-run client that discards its lines.
    pub cdf: Option<crate::cdf::CdfClient>,
    /// The upload queues runs get; without them, queues of 100 000 items on the CDF client.
    pub queues: Option<crate::queues::Queues>,
    /// The state store runs get, if any.
    pub state: Option<crate::state::StateStore>,
    /// Where wall-clock time comes from.
    pub clock: Clock,
    /// Keep every run's result in the [`Summary`] in service mode too (tests). Batch mode
    /// always keeps them.
    pub keep_runs: bool,
    /// Where the scheduler reports that it is alive (`/healthz`); `None`: no heartbeat.
    pub health: Option<crate::metrics::Health>,
    /// The CA roots and proxy runs build their HTTP clients with ([`RunContext::network`]).
    ///
    /// [`RunContext::network`]: crate::extractor::RunContext::network
    pub network: crate::net::Network,
    /// Where runs are reported for the Integrations check-ins (started, ended, failures), if
    /// anywhere.
    pub events: Option<crate::checkin::Recorder>,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        SchedulerOptions {
            registry: MetricsRegistry::new(),
            cdf: None,
            queues: None,
            state: None,
            clock: Clock::System,
            keep_runs: false,
            health: None,
            network: crate::net::Network::default(),
            events: None,
        }
    }
}

/// `run --once` with continuous tasks that never finish by themselves.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "--once cannot run continuous task(s) {} (they never finish by themselves); \
     run without --once, or give them an interval or cron schedule",
    .tasks.join(", ")
)]
pub struct NeverFinishes {
    /// The tasks.
    pub tasks: Vec<String>,
}

/// The results of the runs a scheduler made.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// Every finished run, task name and result: in batch mode only (a service would grow this
    /// without bound), plus runs aborted at shutdown.
    pub runs: Vec<(String, RunResult)>,
    /// Runs finished, in any mode.
    pub total: u64,
    /// Runs that did not succeed, in any mode.
    pub failed: u64,
    /// Runs that failed on authentication, in any mode.
    pub authentication_failures: u64,
    /// Runs cancelled (by the stop, or `overlap: replace`), in any mode; counted in `failed`
    /// too.
    pub cancelled: u64,
}

impl Summary {
    /// Whether any run failed.
    pub fn any_failed(&self) -> bool {
        self.failed > 0
    }

    /// Whether any run failed because the identity provider refused the credentials.
    pub fn any_authentication_failure(&self) -> bool {
        self.authentication_failures > 0
    }

    fn record(&mut self, task: &str, result: RunResult, keep: bool) {
        self.total += 1;
        if !result.is_success() {
            self.failed += 1;
        }
        if result == RunResult::Failure(TaskErrorKind::Authentication) {
            self.authentication_failures += 1;
        }
        if result == RunResult::Cancelled {
            self.cancelled += 1;
        }
        if keep {
            self.runs.push((task.to_owned(), result));
        }
    }
}

/// Runs tasks. Cheap to clone: a handle over the tasks and their runs.
#[derive(Clone)]
pub struct Scheduler {
    core: Arc<Core>,
}

struct Core {
    /// The tasks, in config order (tasks a reload adds come last).
    tasks: Mutex<TaskList>,
    shared: Arc<Shared>,
    summary: Arc<Mutex<Summary>>,
    /// Keep every run's result in the summary (batch mode).
    keep_runs: std::sync::atomic::AtomicBool,
    metrics: SchedulerMetrics,
    state: Option<crate::state::StateStore>,
    /// While [`Scheduler::run`] runs: its shutdown token and its drivers, so that a task added
    /// then is driven too.
    live: Mutex<Option<Live>>,
}

struct Live {
    shutdown: CancellationToken,
    drivers: TaskTracker,
}

impl Scheduler {
    /// Builds the scheduler from the tasks' configs and their extractors (from
    /// [`Registry::build_all`](crate::extractor::Registry::build_all)).
    pub fn new(
        configs: &[TaskConfig],
        extractors: Vec<Arc<dyn DynExtractor>>,
        options: SchedulerOptions,
    ) -> prometheus::Result<Scheduler> {
        let metrics = SchedulerMetrics::register(&options.registry)?;
        let cdf = options
            .cdf
            .unwrap_or_else(crate::cdf::CdfClient::discarding);
        let queues = match options.queues {
            Some(queues) => queues,
            None => {
                crate::queues::Queues::new(cdf.clone(), 100_000, options.registry.prometheus())?
            }
        };
        let tasks = configs
            .iter()
            .zip(extractors)
            .map(|(config, extractor)| {
                let metrics = metrics.for_task(&config.name);
                let ledger = ledger(&config.name, &options.state, &metrics);
                Arc::new(Task::new(config, extractor, metrics, ledger))
            })
            .collect();
        Ok(Scheduler {
            core: Arc::new(Core {
                tasks: Mutex::new(TaskList::new(tasks)),
                shared: Arc::new(Shared {
                    clock: options.clock,
                    cdf,
                    queues,
                    tracker: TaskTracker::new(),
                    next_run_id: std::sync::atomic::AtomicU64::new(0),
                    health: options.health,
                    network: options.network,
                    events: options.events,
                }),
                summary: Arc::new(Mutex::new(Summary::default())),
                keep_runs: std::sync::atomic::AtomicBool::new(options.keep_runs),
                metrics,
                state: options.state,
                live: Mutex::new(None),
            }),
        })
    }

    /// The tasks, in config order (tasks a reload added last).
    pub fn tasks(&self) -> Vec<Arc<Task>> {
        self.core.tasks.lock().expect("tasks lock").to_vec()
    }

    /// The task named `name`, if there is one.
    pub fn task(&self, name: &str) -> Option<Arc<Task>> {
        self.core.find(name)
    }

    /// Adds a task. While [`run`](Scheduler::run) runs it is scheduled at once (a `startup`
    /// task runs once now); otherwise it runs with the others. `false` (and nothing added) when
    /// a task of that name exists.
    pub fn add(&self, config: &TaskConfig, extractor: Arc<dyn DynExtractor>) -> bool {
        if self.core.find(&config.name).is_some() {
            return false;
        }
        let metrics = self.core.metrics.for_task(&config.name);
        let ledger = ledger(&config.name, &self.core.state, &metrics);
        self.core
            .insert(Arc::new(Task::new(config, extractor, metrics, ledger)));
        true
    }

    /// Stops the task named `name` and removes it: no run is planned any more (at once, before
    /// the returned future is polled); a run in progress gets `grace` to finish, then is
    /// cancelled and, after the task's `timeout-grace`, aborted. The future ends once none of
    /// its runs is left (`false`: no such task). What its runs queued stays queued and is
    /// delivered; its metric series go.
    pub fn remove(
        &self,
        name: &str,
        grace: Duration,
    ) -> impl Future<Output = bool> + Send + 'static {
        let core = self.core.clone();
        let task = core.take(name);
        async move {
            let Some(task) = task else { return false };
            core.retire(&task, grace).await;
            core.metrics.remove(&task.metrics);
            true
        }
    }

    /// Replaces the task of `config`'s name with one built from `config` and `extractor`: the
    /// old one stops as in [`remove`](Scheduler::remove) (at once), then, once its runs are
    /// over, the new one starts with the same metric series and pending checkpoints. Without
    /// such a task, adds it.
    pub fn replace(
        &self,
        config: &TaskConfig,
        extractor: Arc<dyn DynExtractor>,
        grace: Duration,
    ) -> impl Future<Output = ()> + Send + 'static {
        let core = self.core.clone();
        let old = core.take(&config.name);
        let (metrics, ledger) = match &old {
            Some(old) => (old.metrics.clone(), old.ledger.clone()),
            None => {
                let metrics = core.metrics.for_task(&config.name);
                let ledger = ledger(&config.name, &core.state, &metrics);
                (metrics, ledger)
            }
        };
        let task = Arc::new(Task::new(config, extractor, metrics, ledger));
        async move {
            if let Some(old) = old {
                core.retire(&old, grace).await;
            }
            core.insert(task);
        }
    }

    /// Checks that `run --once` can run every task: a continuous task must finish by itself.
    pub fn check_once(&self) -> Result<(), NeverFinishes> {
        let tasks: Vec<String> = self
            .tasks()
            .iter()
            .filter(|t| {
                matches!(t.schedule, Schedule::Continuous) && !t.extractor.finishes_by_itself()
            })
            .map(|t| t.name.to_string())
            .collect();
        if tasks.is_empty() {
            Ok(())
        } else {
            Err(NeverFinishes { tasks })
        }
    }

    /// Batch mode: the startup tasks, then every other task once. Returns when all finished,
    /// or when `shutdown` fires and the runs have drained (at most `grace`).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: cancel through `shutdown` instead.
    pub async fn run_once(&self, shutdown: CancellationToken, grace: Duration) -> Summary {
        let beating = self.heartbeat();
        let summary = self.core.run_once(shutdown, grace).await;
        beating.cancel();
        if let Some(h) = &self.core.shared.health {
            h.set_stopped();
        }
        summary
    }

    /// Beats every second while the scheduler runs, so `/healthz` can tell a live process from
    /// a stuck one.
    fn heartbeat(&self) -> CancellationToken {
        let stop = CancellationToken::new();
        let Some(health) = self.core.shared.health.clone() else {
            return stop;
        };
        let done = stop.clone();
        health.beat();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = tick.tick() => health.beat(),
                    () = done.cancelled() => return,
                }
            }
        });
        stop
    }

    /// Service mode: the startup tasks, then every task on its schedule until `shutdown` fires;
    /// then the runs get `grace` to finish.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: cancel through `shutdown` instead.
    pub async fn run(&self, shutdown: CancellationToken, grace: Duration) -> Summary {
        let beating = self.heartbeat();
        let summary = self.core.clone().run(shutdown, grace).await;
        beating.cancel();
        if let Some(h) = &self.core.shared.health {
            h.set_stopped();
        }
        summary
    }
}

impl Core {
    async fn run_once(&self, shutdown: CancellationToken, grace: Duration) -> Summary {
        self.keep_runs
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.run_startup(&shutdown).await;
        if !shutdown.is_cancelled() {
            let handles: Vec<_> = self
                .snapshot()
                .iter()
                .filter(|t| !matches!(t.schedule, Schedule::Startup))
                .map(|t| self.spawn_run(t.clone(), &shutdown))
                .collect();
            let all = async {
                for h in handles {
                    let _ = h.await;
                }
            };
            tokio::select! {
                () = all => {}
                () = shutdown.cancelled() => {}
            }
        }
        self.drain(grace).await;
        self.summary.lock().expect("summary lock").clone()
    }

    async fn run(self: Arc<Self>, shutdown: CancellationToken, grace: Duration) -> Summary {
        self.run_startup(&shutdown).await;
        let drivers = TaskTracker::new();
        if !shutdown.is_cancelled() {
            // Under the live lock: a task added meanwhile is either in this list or driven by
            // `insert`, never both, never neither.
            let mut live = self.live.lock().expect("live lock");
            for task in self
                .snapshot()
                .iter()
                .filter(|t| !matches!(t.schedule, Schedule::Startup))
            {
                self.spawn_driver(&drivers, task.clone(), &shutdown);
            }
            *live = Some(Live {
                shutdown: shutdown.clone(),
                drivers: drivers.clone(),
            });
        }
        shutdown.cancelled().await;
        self.live.lock().expect("live lock").take();
        drivers.close();
        drivers.wait().await;
        self.drain(grace).await;
        self.summary.lock().expect("summary lock").clone()
    }

    fn snapshot(&self) -> Vec<Arc<Task>> {
        self.tasks.lock().expect("tasks lock").to_vec()
    }

    fn find(&self, name: &str) -> Option<Arc<Task>> {
        self.tasks.lock().expect("tasks lock").get(name).cloned()
    }

    /// Takes the task out of the list and stops its schedule.
    fn take(&self, name: &str) -> Option<Arc<Task>> {
        let task = self.tasks.lock().expect("tasks lock").remove(name)?;
        task.stop.cancel();
        Some(task)
    }

    /// Lists a task and, while the scheduler runs, drives it (a startup task runs once).
    fn insert(self: &Arc<Self>, task: Arc<Task>) {
        // The live lock first, as in `run`: the task is driven exactly once.
        let live = self.live.lock().expect("live lock");
        self.tasks.lock().expect("tasks lock").push(task.clone());
        if let Some(live) = &*live {
            if matches!(task.schedule, Schedule::Startup) {
                drop(self.spawn_run(task, &live.shutdown));
            } else {
                self.spawn_driver(&live.drivers, task, &live.shutdown);
            }
        }
    }

    /// Drives `task` on `drivers` until shutdown or until the task is stopped alone.
    fn spawn_driver(self: &Arc<Self>, drivers: &TaskTracker, task: Arc<Task>, shutdown: &CancellationToken) {
        let stop = task.stop.clone();
        let driving = self.clone().drive(task, shutdown.clone());
        drivers.spawn(async move {
            tokio::select! {
                () = driving => {}
                () = stop.cancelled() => {}
            }
        });
    }

    /// Waits up to `grace` for the runs of a task already taken out, then cancels them, then
    /// after its `timeout-grace` aborts them (each counted as cancelled).
    async fn retire(&self, task: &Task, grace: Duration) {
        task.runs.close();
        if tokio::time::timeout(grace, task.runs.wait()).await.is_ok() {
            return;
        }
        tracing::info!(target: "extractor_runtime::scheduler", task = %task.name, grace_s = grace.as_secs_f64(), "the run of a changed or removed task did not finish within the grace; cancelling it");
        for run in task.running.lock().expect("running lock").iter() {
            run.cancel.cancel();
        }
        if tokio::time::timeout(task.timeout_grace, task.runs.wait())
            .await
            .is_ok()
        {
            return;
        }
        let aborted: Vec<RunningRun> = task.running.lock().expect("running lock").drain(..).collect();
        {
            let mut summary = self.summary.lock().expect("summary lock");
            for run in aborted {
                run.abort.abort();
                crate::internal_events::TaskRunAborted {
                    series: &task.metrics.series,
                }
                .emit();
                summary.record(&task.name, RunResult::Cancelled, true);
            }
        }
        task.runs.wait().await;
    }

    async fn run_startup(&self, shutdown: &CancellationToken) {
        let handles: Vec<_> = self
            .snapshot()
            .iter()
            .filter(|t| matches!(t.schedule, Schedule::Startup))
            .map(|t| self.spawn_run(t.clone(), shutdown))
            .collect();
        for h in handles {
            tokio::select! {
                _ = h => {}
                () = shutdown.cancelled() => return,
            }
        }
    }

    /// Waits up to `grace` for runs in progress (already told to stop), then aborts them.
    async fn drain(&self, grace: Duration) {
        let tracker = &self.shared.tracker;
        tracker.close();
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            let left = tracker.len();
            tracing::warn!(target: "extractor_runtime::scheduler", runs = left, grace_s = grace.as_secs_f64(), "runs did not stop within the shutdown grace; aborting them");
            let mut summary = self.summary.lock().expect("summary lock");
            for task in &self.snapshot() {
                for run in task.running.lock().expect("running lock").drain(..) {
                    run.abort.abort();
                    crate::internal_events::TaskRunAborted {
                        series: &task.metrics.series,
                    }
                    .emit();
                    summary.record(&task.name, RunResult::Cancelled, true);
                }
            }
        }
    }

    /// Starts one run of `task` on the tracker; its token is a child of `parent`.
    fn spawn_run(
        &self,
        task: Arc<Task>,
        parent: &CancellationToken,
    ) -> tokio::task::JoinHandle<RunResult> {
        let cancel = parent.child_token();
        let id = self
            .shared
            .next_run_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let shared = self.shared.clone();
        let summary = self.summary.clone();
        let keep = self.keep_runs.load(std::sync::atomic::Ordering::Relaxed);
        let run_task = task.clone();
        let run_cancel = cancel.clone();
        // Hold the lock while spawning, so the run cannot finish (and remove itself) before it
        // is listed.
        let mut running = task.running.lock().expect("running lock");
        let handle = self.shared.tracker.spawn(task.runs.track_future(async move {
            let result = run::execute(shared, run_task.clone(), run_cancel).await;
            let mut running = run_task.running.lock().expect("running lock");
            let before = running.len();
            running.retain(|r| r.id != id);
            let listed = running.len() < before;
            drop(running);
            if listed {
                summary
                    .lock()
                    .expect("summary lock")
                    .record(&run_task.name, result, keep);
            }
            result
        }));
        running.push(RunningRun {
            id,
            cancel,
            abort: handle.abort_handle(),
        });
        handle
    }

    fn skip(&self, task: &Task, reason: usize, count: u64) {
        if count > 0 {
            crate::internal_events::TaskRunSkipped {
                series: &task.metrics.series,
                task: &task.name,
                reason: crate::metrics::SKIP_REASONS[reason],
                count,
            }
            .emit();
        }
    }

    /// Plans and starts the runs of one task until shutdown.
    async fn drive(self: Arc<Self>, task: Arc<Task>, shutdown: CancellationToken) {
        if matches!(task.schedule, Schedule::Continuous) {
            return self.drive_continuous(task, shutdown).await;
        }
        let clock = self.shared.clock;
        // The next planned run: tokio instant and wall-clock time.
        let mut planned = match &task.schedule {
            Schedule::Interval {
                every,
                run_on_start,
            } => {
                let every = every.get().get();
                let spread = self.tasks.lock().expect("tasks lock").len() > SPREAD_ABOVE;
                let origin = Instant::now() + start_offset(&task.name, every, spread);
                if *run_on_start {
                    origin
                } else {
                    origin + every
                }
            }
            _ => match self.next_cron(&task, clock.now()) {
                Some(at) => clock.instant_of(at),
                None => return,
            },
        };
        loop {
            task.metrics.next_run.set(clock.unix_of(planned));
            task.metrics.interval.set(self.period(&task).as_secs_f64());
            tokio::select! {
                () = tokio::time::sleep_until(planned) => {}
                () = shutdown.cancelled() => return,
            }
            let now = Instant::now();
            // The planned runs that are due now: this one, and any later ones already past. At
            // most one catch-up run: the latest one due, within the starting deadline.
            let (following, missed, latest_due) = self.following(&task, planned, now);
            self.skip(&task, 1, missed);
            let late = now.saturating_duration_since(latest_due);
            if task.starting_deadline.is_some_and(|d| late > d) {
                self.skip(&task, 1, 1);
            } else {
                if let Some(jitter) = task.jitter.filter(|j| !j.is_zero()) {
                    let delay = jitter.mul_f64(fastrand::f64());
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = shutdown.cancelled() => return,
                    }
                }
                task.metrics.lag.observe(late.as_secs_f64());
                self.start_with_overlap(&task, &shutdown);
            }
            planned = match following {
                Some(p) => p,
                None => return,
            };
        }
    }

    /// After a run planned at `planned`: the next planned time after `now`, how many planned
    /// times after `planned` are already past, and the latest planned time that is due.
    fn following(
        &self,
        task: &Task,
        planned: Instant,
        now: Instant,
    ) -> (Option<Instant>, u64, Instant) {
        match &task.schedule {
            Schedule::Interval { every, .. } => {
                let every = every.get().get();
                let behind = now.saturating_duration_since(planned);
                let missed = (behind.as_nanos() / every.as_nanos().max(1)) as u32;
                let latest = planned + every.saturating_mul(missed);
                (Some(latest + every), u64::from(missed), latest)
            }
            _ => {
                let clock = self.shared.clock;
                let now_wall = clock.now();
                let behind = now.saturating_duration_since(planned);
                let mut at = now_wall
                    .checked_sub(jiff::SignedDuration::try_from(behind).unwrap_or_default())
                    .unwrap_or(now_wall);
                let mut latest = planned;
                let mut missed = 0;
                loop {
                    match self.next_cron(task, at) {
                        Some(next) if next <= now_wall && missed < 10_000 => {
                            missed += 1;
                            at = next;
                            let ago: Duration =
                                now_wall.duration_since(next).try_into().unwrap_or_default();
                            latest = now.checked_sub(ago).unwrap_or(now);
                        }
                        Some(next) => return (Some(clock.instant_of(next)), missed, latest),
                        None => return (None, missed, latest),
                    }
                }
            }
        }
    }

    /// The time between planned runs: the interval, or for cron the gap between the next two.
    fn period(&self, task: &Task) -> Duration {
        match &task.schedule {
            Schedule::Interval { every, .. } => every.get().get(),
            _ => {
                let now = self.shared.clock.now();
                match self
                    .next_cron(task, now)
                    .and_then(|a| Some((a, self.next_cron(task, a)?)))
                {
                    Some((a, b)) => b.duration_since(a).try_into().unwrap_or_default(),
                    None => Duration::ZERO,
                }
            }
        }
    }

    fn next_cron(&self, task: &Task, after: jiff::Timestamp) -> Option<jiff::Timestamp> {
        let Schedule::Cron { cron, timezone } = &task.schedule else {
            return None;
        };
        let zoned = after.to_zoned(timezone.clone());
        cron.find_next_occurrence(&zoned, false)
            .ok()
            .map(|z| z.timestamp())
    }

    /// Starts a run unless the overlap policy says otherwise.
    fn start_with_overlap(&self, task: &Arc<Task>, shutdown: &CancellationToken) {
        let running = task.running.lock().expect("running lock").len() as u32;
        match task.overlap {
            OverlapPolicy::Forbid if running > 0 => return self.skip(task, 0, 1),
            OverlapPolicy::Allow if running >= task.max_concurrent => return self.skip(task, 0, 1),
            OverlapPolicy::Replace if running > 0 => {
                tracing::info!(target: "extractor_runtime::scheduler", task = %task.name, "replacing the run in progress");
                for run in task.running.lock().expect("running lock").iter() {
                    run.cancel.cancel();
                }
            }
            _ => {}
        }
        drop(self.spawn_run(task.clone(), shutdown));
    }

    async fn drive_continuous(&self, task: Arc<Task>, shutdown: CancellationToken) {
        let mut backoff = CONTINUOUS_MIN_BACKOFF;
        loop {
            let started = Instant::now();
            let handle = self.spawn_run(task.clone(), &shutdown);
            let _ = handle.await;
            if shutdown.is_cancelled() {
                return;
            }
            if started.elapsed() >= CONTINUOUS_HEALTHY {
                backoff = CONTINUOUS_MIN_BACKOFF;
            }
            tracing::info!(target: "extractor_runtime::scheduler", task = %task.name, restart_in_s = backoff.as_secs(), "continuous task ended; restarting");
            task.metrics
                .next_run
                .set(self.shared.clock.unix_of(Instant::now() + backoff));
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = shutdown.cancelled() => return,
            }
            backoff = (backoff * 2).min(CONTINUOUS_MAX_BACKOFF);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_offsets_are_stable_bounded_and_spread() {
        let every = Duration::from_secs(30);
        assert_eq!(
            start_offset("weather", every, true),
            start_offset("weather", every, true)
        );
        let offsets: std::collections::BTreeSet<Duration> = (0..1000)
            .map(|i| start_offset(&format!("t{i}"), every, true))
            .collect();
        assert!(offsets.iter().all(|o| *o < MAX_START_OFFSET));
        assert!(
            offsets.len() > 990,
            "1000 names spread over a second: {} distinct",
            offsets.len()
        );
        // Never more than the interval itself.
        assert!((0..100).all(
            |i| start_offset(&format!("t{i}"), Duration::from_millis(50), true)
                < Duration::from_millis(50)
        ));
        // A few tasks are no herd: they start at once.
        assert_eq!(start_offset("weather", every, false), Duration::ZERO);
    }
}
