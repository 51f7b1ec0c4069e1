//! Every metric of the runtime, defined once, here: names, help texts and labels (the token
//! manager's, the CDF client's, the upload queues', the pipeline reports', the pushes', and in
//! `tasks.rs` the per-task series); the metrics server ([`server`]), health ([`Health`]) and
//! Pushgateway pushes ([`push`]). The parts of the runtime hold the typed handles.

mod health;
pub mod push;
pub mod server;
mod tasks;
pub(crate) use tasks::TaskSeries;

use tasks::TaskFamilies;

pub use health::{Check, Health, ReadinessCheck};

use prometheus::{
    Gauge, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

/// Registers the process metrics (`process_resident_memory_bytes`, `process_cpu_seconds_total`,
/// `process_open_fds`, `process_start_time_seconds`, ...), `extractor_build_info{version}`,
/// `extractor_log_lines_dropped_total` and `extractor_log_messages_total{level}`.
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
    registry.register(Box::new(build))?;
    registry.register(Box::new(crate::log_file::DROPPED.clone()))?;
    registry.register(Box::new(crate::logging::MESSAGES.clone()))
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

/// The CDF client's metrics.
#[derive(Clone, Debug)]
pub(crate) struct CdfMetrics {
    /// `extractor_cdf_requests_total{endpoint,status}`.
    pub(crate) requests: IntCounterVec,
    /// `extractor_cdf_request_duration_seconds{endpoint}`.
    pub(crate) duration: HistogramVec,
    /// `extractor_cdf_retries_total{endpoint,reason}`.
    pub(crate) retries: IntCounterVec,
}

impl CdfMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub(crate) fn register(registry: &Registry) -> prometheus::Result<Self> {
        let m = CdfMetrics {
            requests: IntCounterVec::new(
                Opts::new(
                    "extractor_cdf_requests_total",
                    "Requests to CDF, by endpoint template and HTTP status (`error` when no answer came).",
                ),
                &["endpoint", "status"],
            )?,
            duration: HistogramVec::new(
                HistogramOpts::new(
                    "extractor_cdf_request_duration_seconds",
                    "Time of one request to CDF.",
                )
                .buckets(vec![0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
                &["endpoint"],
            )?,
            retries: IntCounterVec::new(
                Opts::new(
                    "extractor_cdf_retries_total",
                    "Requests to CDF retried, by endpoint and reason.",
                ),
                &["endpoint", "reason"],
            )?,
        };
        registry.register(Box::new(m.requests.clone()))?;
        registry.register(Box::new(m.duration.clone()))?;
        registry.register(Box::new(m.retries.clone()))?;
        Ok(m)
    }
}

/// `extractor_upload_queue_size{queue}` and `extractor_upload_items_total{queue,result}`.
#[derive(Clone, Debug)]
pub struct QueueMetrics {
    pub(crate) size: IntGaugeVec,
    pub(crate) items: IntCounterVec,
    /// Items refused for good since the metrics were registered, in every queue.
    pub(crate) refused: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Refused items held in memory because the dead-letter file cannot be written.
    pub(crate) dead_letter_held: IntGaugeVec,
    /// Failed writes of the dead-letter file.
    pub(crate) dead_letter_failures: prometheus::IntCounter,
    /// The disk buffer's figures, by queue (`upload-queue.buffer: {type: disk}`): bytes,
    /// records, age of the oldest record, records dropped and corrupt.
    pub(crate) buffer: BufferMetrics,
}

/// `extractor_buffer_*{queue}`: the disk buffer of each queue.
#[derive(Clone, Debug)]
pub(crate) struct BufferMetrics {
    pub(crate) bytes: IntGaugeVec,
    pub(crate) records: IntGaugeVec,
    pub(crate) oldest_age: prometheus::GaugeVec,
    pub(crate) dropped: IntCounterVec,
    pub(crate) corrupt: IntCounterVec,
    pub(crate) fsyncs: IntCounterVec,
}

impl BufferMetrics {
    fn new() -> prometheus::Result<Self> {
        Ok(BufferMetrics {
            bytes: IntGaugeVec::new(
                Opts::new("extractor_buffer_bytes", "Bytes in a queue's disk buffer files."),
                &["queue"],
            )?,
            records: IntGaugeVec::new(
                Opts::new(
                    "extractor_buffer_records",
                    "Records in a queue's disk buffer not settled yet (accepted by CDF or dead-lettered).",
                ),
                &["queue"],
            )?,
            oldest_age: prometheus::GaugeVec::new(
                Opts::new(
                    "extractor_buffer_oldest_record_age_seconds",
                    "Age of the oldest disk buffer file holding unsettled records (0: none).",
                ),
                &["queue"],
            )?,
            dropped: IntCounterVec::new(
                Opts::new(
                    "extractor_buffer_dropped_total",
                    "Records refused because the disk buffer was full (when-full: drop-newest).",
                ),
                &["queue"],
            )?,
            fsyncs: IntCounterVec::new(
                Opts::new(
                    "extractor_buffer_fsyncs_total",
                    "Syncs of a queue's disk buffer to the disk (one covers every record appended since the last).",
                ),
                &["queue"],
            )?,
            corrupt: IntCounterVec::new(
                Opts::new(
                    "extractor_buffer_corrupt_total",
                    "Records of the disk buffer skipped or cut as corrupt (a torn tail after a crash, a damaged file).",
                ),
                &["queue"],
            )?,
        })
    }

    fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.bytes.clone()))?;
        registry.register(Box::new(self.records.clone()))?;
        registry.register(Box::new(self.oldest_age.clone()))?;
        registry.register(Box::new(self.dropped.clone()))?;
        registry.register(Box::new(self.corrupt.clone()))?;
        registry.register(Box::new(self.fsyncs.clone()))
    }
}

impl QueueMetrics {
    /// Creates and registers the queue metrics.
    pub fn register(registry: &prometheus::Registry) -> prometheus::Result<Self> {
        let m = QueueMetrics {
            size: IntGaugeVec::new(
                Opts::new(
                    "extractor_upload_queue_size",
                    "Items waiting in an upload queue.",
                ),
                &["queue"],
            )?,
            items: IntCounterVec::new(
                Opts::new(
                    "extractor_upload_items_total",
                    "Items leaving an upload queue, by result: uploaded, skipped (on-duplicate: skip), rejected (refused by CDF for good), failed (a transient failure: still queued).",
                ),
                &["queue", "result"],
            )?,
            refused: std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            dead_letter_held: IntGaugeVec::new(
                Opts::new(
                    "extractor_dead_letter_held_items",
                    "Refused items held in memory because the dead-letter file cannot be written (a full disk); written at a later flush.",
                ),
                &["queue"],
            )?,
            dead_letter_failures: prometheus::IntCounter::new(
                "extractor_dead_letter_write_failures_total",
                "Writes of the dead-letter file that failed (nothing of a failed write is kept in the file).",
            )?,
            buffer: BufferMetrics::new()?,
        };
        registry.register(Box::new(m.size.clone()))?;
        registry.register(Box::new(m.items.clone()))?;
        registry.register(Box::new(m.dead_letter_held.clone()))?;
        registry.register(Box::new(m.dead_letter_failures.clone()))?;
        m.buffer.register(registry)?;
        Ok(m)
    }

    /// Items CDF refused for good, in every queue of these metrics.
    pub fn refused(&self) -> usize {
        self.refused.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// `extractor_pipeline_reports_total{status,result}`: extraction pipeline runs reported.
pub(crate) fn pipeline_reports(registry: &Registry) -> prometheus::Result<IntCounterVec> {
    let reports = IntCounterVec::new(
        Opts::new(
            "extractor_pipeline_reports_total",
            "Extraction pipeline runs reported, by status and result (success, failure).",
        ),
        &["status", "result"],
    )?;
    registry.register(Box::new(reports.clone()))?;
    Ok(reports)
}

/// `extractor_push_total{gateway,result}`: pushes to a Pushgateway.
pub fn push_total(registry: &Registry) -> prometheus::Result<IntCounterVec> {
    let c = IntCounterVec::new(
        Opts::new(
            "extractor_push_total",
            "Pushes to a Pushgateway, by gateway and result (success, failure).",
        ),
        &["gateway", "result"],
    )?;
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

/// The result labels of `extractor_task_runs_total`.
pub const RUN_RESULTS: [&str; 5] = ["success", "failure", "timeout", "panic", "cancelled"];

/// The reason labels of `extractor_task_skipped_total`.
pub const SKIP_REASONS: [&str; 2] = ["overlap", "missed"];

/// Where every metric of the process lives: a prometheus [`Registry`] (token, push, process
/// and extractors' own metrics) and the per-task series, which are kept apart so that a scrape
/// of thousands of tasks stays fast. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct MetricsRegistry {
    registry: Registry,
    tasks: TaskFamilies,
    /// One registry per task for the extractors' own metrics, each adding `task="<name>"`.
    extractors: std::sync::Arc<std::sync::Mutex<Vec<(String, Registry)>>>,
}

impl MetricsRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        MetricsRegistry::default()
    }

    /// The prometheus registry, for metrics of the prometheus crate.
    pub fn prometheus(&self) -> &Registry {
        &self.registry
    }

    /// A registry for the own metrics of task `task`'s extractor ([`crate::Setup::metrics`]):
    /// each of its metrics carries `task="<task>"`, and is rendered with the others.
    ///
    /// Made apart and rendered once [`install_extractor`](Self::install_extractor) installs it:
    /// an extractor a reload builds and then rejects leaves nothing behind.
    pub fn for_extractor(&self, task: &str) -> Registry {
        let labels = std::collections::HashMap::from([("task".to_owned(), task.to_owned())]);
        Registry::new_custom(None, Some(labels)).expect("a task name is a valid label value")
    }

    /// Renders `registry` as task `task`'s extractor metrics, in place of any earlier one of the
    /// task (`None`: the task has none any more).
    pub fn install_extractor(&self, task: &str, registry: Option<Registry>) {
        let mut extractors = self.extractors.lock().expect("extractor registries lock");
        extractors.retain(|(t, _)| t != task);
        if let Some(registry) = registry {
            extractors.push((task.to_owned(), registry));
        }
    }

    /// Every family of the prometheus registries: the runtime's, then the extractors' (the
    /// same metric of two tasks merged into one family).
    fn gather(&self) -> Vec<prometheus::proto::MetricFamily> {
        let mut families = self.registry.gather();
        for (_, registry) in self.extractors.lock().expect("extractor registries lock").iter() {
            for mut family in registry.gather() {
                match families.iter_mut().find(|f| f.name() == family.name()) {
                    Some(same) => same.mut_metric().extend(family.take_metric()),
                    None => families.push(family),
                }
            }
        }
        families
    }

    /// Everything, in the text format 0.0.4: what `/metrics` serves and Pushgateways receive.
    pub fn render(&self) -> Vec<u8> {
        use prometheus::Encoder as _;
        let mut buffer = Vec::with_capacity(64 * 1024);
        if let Err(e) = prometheus::TextEncoder::new().encode(&self.gather(), &mut buffer)
        {
            tracing::warn!(target: "extractor_runtime::metrics", "cannot encode metrics: {e}");
        }
        let mut text = String::from_utf8(buffer).unwrap_or_default();
        self.tasks.write_text(&mut text);
        text.into_bytes()
    }

    /// The value of one series in [`render`](Self::render)'s output, found by name and labels
    /// (for tests and tools).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        sample(&String::from_utf8(self.render()).ok()?, name, labels)
    }
}

/// The value of one series in text-format `text` (a scrape of `/metrics`), found by name and
/// labels (for tests and tools).
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            let (series, _) = l.rsplit_once(' ').unwrap_or((l, ""));
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit_once(' '))
        .and_then(|(_, v)| v.parse().ok())
}

/// The scheduler's metrics, for all tasks.
#[derive(Clone, Debug)]
pub(crate) struct SchedulerMetrics {
    tasks: TaskFamilies,
    schedule_lag: Histogram,
}

impl SchedulerMetrics {
    /// Creates the metrics: the lag histogram in the prometheus registry, the task families
    /// beside it.
    pub(crate) fn register(metrics: &MetricsRegistry) -> prometheus::Result<Self> {
        let schedule_lag = Histogram::with_opts(
            HistogramOpts::new(
                "extractor_task_schedule_lag_seconds",
                "How late runs started versus their planned time (all tasks).",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0,
            ]),
        )?;
        metrics.registry.register(Box::new(schedule_lag.clone()))?;
        Ok(SchedulerMetrics {
            tasks: metrics.tasks.clone(),
            schedule_lag,
        })
    }

    /// One task's series. `success` and `failure` start at 0 (so `rate()` and `increase()` see
    /// the first run); rarer results and skip reasons appear when they first happen.
    pub(crate) fn for_task(&self, task: &str) -> TaskMetrics {
        TaskMetrics {
            series: self.tasks.add(task),
            lag: self.schedule_lag.clone(),
        }
    }

    /// Drops a removed task's series from `/metrics`.
    pub(crate) fn remove(&self, task: &TaskMetrics) {
        self.tasks.remove(&task.series);
    }
}

/// One task's metric handles.
#[derive(Clone, Debug)]
pub(crate) struct TaskMetrics {
    pub(crate) series: std::sync::Arc<tasks::TaskSeries>,
    pub(crate) lag: Histogram,
}

impl std::ops::Deref for TaskMetrics {
    type Target = tasks::TaskSeries;

    fn deref(&self) -> &tasks::TaskSeries {
        &self.series
    }
}
