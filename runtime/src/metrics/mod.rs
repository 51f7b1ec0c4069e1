//! Every metric of the runtime, defined once: names, help texts and labels; the metrics server
//! ([`server`]), health ([`Health`]) and Pushgateway pushes ([`push`]).

mod health;
pub mod push;
pub mod server;

pub use health::{Check, Health};

use prometheus::{Gauge, Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry};

/// Registers the process metrics (`process_resident_memory_bytes`, `process_cpu_seconds_total`,
/// `process_open_fds`, `process_start_time_seconds`, ...) and `extractor_build_info{version}`.
pub fn register_process_and_build_info(registry: &Registry) -> prometheus::Result<()> {
    registry.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ))?;
    let build = prometheus::IntGaugeVec::new(
        Opts::new(
            "extractor_build_info",
            "Always 1; the labels say which build runs.",
        ),
        &["version"],
    )?;
    build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
    registry.register(Box::new(build))
}

/// The token manager's metrics.
#[derive(Clone, Debug)]
pub struct TokenMetrics {
    /// `extractor_token_refresh_total{result}`.
    pub(crate) refresh_total: IntCounterVec,
    /// `extractor_token_refresh_duration_seconds`.
    pub(crate) refresh_duration: Histogram,
    /// `extractor_token_expiry_timestamp_seconds`.
    pub(crate) expiry_timestamp: Gauge,
    /// `extractor_token_consecutive_failures`.
    pub(crate) consecutive_failures: IntGauge,
}

impl TokenMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let m = TokenMetrics {
            refresh_total: IntCounterVec::new(
                Opts::new(
                    "extractor_token_refresh_total",
                    "Token requests to the identity provider, by result (success, transient, throttled, permanent).",
                ),
                &["result"],
            )?,
            refresh_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "extractor_token_refresh_duration_seconds",
                    "Time taken by one token request.",
                )
                .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
            )?,
            expiry_timestamp: Gauge::new(
                "extractor_token_expiry_timestamp_seconds",
                "Unix time at which the current access token expires.",
            )?,
            consecutive_failures: IntGauge::new(
                "extractor_token_consecutive_failures",
                "Token requests that failed since the last success.",
            )?,
        };
        for result in ["success", "transient", "throttled", "permanent"] {
            m.refresh_total.with_label_values(&[result]);
        }
        registry.register(Box::new(m.refresh_total.clone()))?;
        registry.register(Box::new(m.refresh_duration.clone()))?;
        registry.register(Box::new(m.expiry_timestamp.clone()))?;
        registry.register(Box::new(m.consecutive_failures.clone()))?;
        Ok(m)
    }
}

/// The scheduler's metrics, for all tasks.
#[derive(Clone, Debug)]
pub struct SchedulerMetrics {
    runs_total: IntCounterVec,
    run_duration: prometheus::HistogramVec,
    last_success: prometheus::GaugeVec,
    next_run: prometheus::GaugeVec,
    interval: prometheus::GaugeVec,
    running: prometheus::IntGaugeVec,
    skipped_total: IntCounterVec,
    retries_total: IntCounterVec,
    pub(crate) schedule_lag: Histogram,
}

/// The result labels of `extractor_task_runs_total`.
pub const RUN_RESULTS: &[&str] = &["success", "failure", "timeout", "panic", "cancelled"];

/// The reason labels of `extractor_task_skipped_total`.
pub const SKIP_REASONS: &[&str] = &["overlap", "missed"];

impl SchedulerMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let m = SchedulerMetrics {
            runs_total: IntCounterVec::new(
                Opts::new(
                    "extractor_task_runs_total",
                    "Finished task runs, by result.",
                ),
                &["task", "result"],
            )?,
            run_duration: prometheus::HistogramVec::new(
                HistogramOpts::new(
                    "extractor_task_run_duration_seconds",
                    "Duration of task runs, retries included.",
                )
                .buckets(vec![0.1, 1.0, 10.0, 60.0, 600.0]),
                &["task"],
            )?,
            last_success: prometheus::GaugeVec::new(
                Opts::new(
                    "extractor_task_last_success_timestamp_seconds",
                    "Unix time at which the task last finished a run successfully.",
                ),
                &["task"],
            )?,
            next_run: prometheus::GaugeVec::new(
                Opts::new(
                    "extractor_task_next_run_timestamp_seconds",
                    "Unix time of the task's next planned run.",
                ),
                &["task"],
            )?,
            interval: prometheus::GaugeVec::new(
                Opts::new(
                    "extractor_task_interval_seconds",
                    "The time between the task's planned runs (for cron, between the next two), for alerts like 'no success within 3 intervals'.",
                ),
                &["task"],
            )?,
            running: prometheus::IntGaugeVec::new(
                Opts::new("extractor_task_running", "Runs of the task in progress."),
                &["task"],
            )?,
            skipped_total: IntCounterVec::new(
                Opts::new(
                    "extractor_task_skipped_total",
                    "Planned runs that did not start, by reason (overlap, missed).",
                ),
                &["task", "reason"],
            )?,
            retries_total: IntCounterVec::new(
                Opts::new(
                    "extractor_task_retries_total",
                    "Attempts retried after a transient failure.",
                ),
                &["task"],
            )?,
            schedule_lag: Histogram::with_opts(
                HistogramOpts::new(
                    "extractor_task_schedule_lag_seconds",
                    "How late runs started versus their planned time (all tasks).",
                )
                .buckets(vec![
                    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0,
                ]),
            )?,
        };
        registry.register(Box::new(m.runs_total.clone()))?;
        registry.register(Box::new(m.run_duration.clone()))?;
        registry.register(Box::new(m.last_success.clone()))?;
        registry.register(Box::new(m.next_run.clone()))?;
        registry.register(Box::new(m.running.clone()))?;
        registry.register(Box::new(m.interval.clone()))?;
        registry.register(Box::new(m.skipped_total.clone()))?;
        registry.register(Box::new(m.retries_total.clone()))?;
        registry.register(Box::new(m.schedule_lag.clone()))?;
        Ok(m)
    }

    /// Handles for one task, looked up once so that runs touch no label maps. The `success`
    /// and `failure` series start at 0 (so `rate()` and `increase()` see the first run); the
    /// rarer results and skip reasons appear when they first happen, which keeps 10 000 tasks'
    /// series affordable.
    pub(crate) fn for_task(&self, task: &str) -> TaskMetrics {
        for result in ["success", "failure"] {
            self.runs_total.with_label_values(&[task, result]);
        }
        TaskMetrics {
            task: task.into(),
            runs_total: self.runs_total.clone(),
            skipped_total: self.skipped_total.clone(),
            duration: self.run_duration.with_label_values(&[task]),
            last_success: self.last_success.with_label_values(&[task]),
            next_run: self.next_run.with_label_values(&[task]),
            interval: self.interval.with_label_values(&[task]),
            running: self.running.with_label_values(&[task]),
            retries: self.retries_total.with_label_values(&[task]),
            lag: self.schedule_lag.clone(),
        }
    }
}

/// One task's metric handles.
#[derive(Clone, Debug)]
pub(crate) struct TaskMetrics {
    task: std::sync::Arc<str>,
    runs_total: IntCounterVec,
    skipped_total: IntCounterVec,
    pub(crate) duration: Histogram,
    pub(crate) last_success: Gauge,
    pub(crate) next_run: Gauge,
    pub(crate) interval: Gauge,
    pub(crate) running: IntGauge,
    pub(crate) retries: prometheus::IntCounter,
    pub(crate) lag: Histogram,
}

impl TaskMetrics {
    /// Counts a finished run with `result` (one of [`RUN_RESULTS`]).
    pub(crate) fn run_finished(&self, result: &str) {
        self.runs_total
            .with_label_values(&[&self.task, result])
            .inc();
    }

    /// Counts `count` planned runs skipped for `reason` (one of [`SKIP_REASONS`]).
    pub(crate) fn skipped(&self, reason: &str, count: u64) {
        self.skipped_total
            .with_label_values(&[&self.task, reason])
            .inc_by(count);
    }
}
