//! Per-task series, kept in plain atomics and written straight to the text format.
//!
//! With thousands of tasks, the prometheus crate's `gather()` (which builds a protobuf-shaped
//! copy of every series on every scrape) dominated `/metrics`; these families skip it. They
//! render in the same text format 0.0.4 and pass `promtool check metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use super::{RUN_RESULTS, SKIP_REASONS};

/// Upper bounds of `extractor_task_run_duration_seconds` (plus `+Inf`).
pub(crate) const DURATION_BUCKETS: [f64; 5] = [0.1, 1.0, 10.0, 60.0, 600.0];

/// A gauge of an `f64`.
#[derive(Debug, Default)]
pub(crate) struct GaugeCell(AtomicU64);

impl GaugeCell {
    pub(crate) fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

/// An integer gauge.
#[derive(Debug, Default)]
pub(crate) struct IntGaugeCell(AtomicI64);

impl IntGaugeCell {
    pub(crate) fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A histogram: cumulative buckets are computed when rendering.
#[derive(Debug, Default)]
pub(crate) struct HistogramCell {
    buckets: [AtomicU64; DURATION_BUCKETS.len()],
    count: AtomicU64,
    sum: GaugeCell,
}

impl HistogramCell {
    pub(crate) fn observe(&self, v: f64) {
        if let Some(i) = DURATION_BUCKETS.iter().position(|b| v <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let mut old = self.sum.0.load(Ordering::Relaxed);
        loop {
            let new = (f64::from_bits(old) + v).to_bits();
            match self
                .sum
                .0
                .compare_exchange_weak(old, new, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(actual) => old = actual,
            }
        }
    }
}

/// One task's series.
#[derive(Debug)]
pub(crate) struct TaskSeries {
    task: Box<str>,
    runs: [AtomicU64; RUN_RESULTS.len()],
    /// Which results have happened; `success` and `failure` are always shown.
    runs_seen: AtomicU8,
    skipped: [AtomicU64; SKIP_REASONS.len()],
    retries: AtomicU64,
    /// Records an extractor queued for CDF, and records it could not take.
    records: [AtomicU64; 2],
    pub(crate) duration: HistogramCell,
    pub(crate) last_success: GaugeCell,
    pub(crate) next_run: GaugeCell,
    pub(crate) interval: GaugeCell,
    pub(crate) running: IntGaugeCell,
}

impl TaskSeries {
    fn new(task: &str) -> Self {
        TaskSeries {
            task: task.into(),
            runs: Default::default(),
            runs_seen: AtomicU8::new(0b11),
            skipped: Default::default(),
            retries: AtomicU64::new(0),
            records: Default::default(),
            duration: HistogramCell::default(),
            last_success: GaugeCell::default(),
            next_run: GaugeCell::default(),
            interval: GaugeCell::default(),
            running: IntGaugeCell::default(),
        }
    }

    /// Counts a finished run; `result` is one of [`RUN_RESULTS`].
    pub(crate) fn run_finished(&self, result: &str) {
        let i = RUN_RESULTS.iter().position(|r| *r == result).unwrap_or(1);
        self.runs[i].fetch_add(1, Ordering::Relaxed);
        self.runs_seen.fetch_or(1 << i, Ordering::Relaxed);
    }

    /// Counts skipped planned runs; `reason` is one of [`SKIP_REASONS`].
    pub(crate) fn skipped(&self, reason: &str, count: u64) {
        let i = SKIP_REASONS.iter().position(|r| *r == reason).unwrap_or(0);
        self.skipped[i].fetch_add(count, Ordering::Relaxed);
    }

    /// Counts a retried attempt.
    pub(crate) fn retried(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts records queued (`rejected` false) or rejected as malformed.
    pub(crate) fn records(&self, rejected: bool, count: u64) {
        self.records[usize::from(rejected)].fetch_add(count, Ordering::Relaxed);
    }
}

/// A gauge family: name, help, and how to read it from a task's series.
type GaugeFamily = (&'static str, &'static str, fn(&TaskSeries) -> f64);

/// Every task's series, rendered family by family.
#[derive(Clone, Debug, Default)]
pub(crate) struct TaskFamilies {
    tasks: Arc<RwLock<Vec<Arc<TaskSeries>>>>,
}

fn float(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(out, "{v}");
    }
}

impl TaskFamilies {
    /// Adds a task's series.
    pub(crate) fn add(&self, task: &str) -> Arc<TaskSeries> {
        let series = Arc::new(TaskSeries::new(task));
        self.tasks
            .write()
            .expect("task series lock")
            .push(series.clone());
        series
    }

    /// Removes the series of a task that no longer runs (a reload removed it).
    pub(crate) fn remove(&self, series: &Arc<TaskSeries>) {
        self.tasks
            .write()
            .expect("task series lock")
            .retain(|s| !Arc::ptr_eq(s, series));
    }

    /// Writes every family in the text format 0.0.4.
    pub(crate) fn write_text(&self, out: &mut String) {
        let tasks = self.tasks.read().expect("task series lock");
        if tasks.is_empty() {
            return;
        }
        let header = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };

        header(
            out,
            "extractor_task_runs_total",
            "counter",
            "Finished task runs, by result.",
        );
        for t in tasks.iter() {
            let seen = t.runs_seen.load(Ordering::Relaxed);
            for (i, result) in RUN_RESULTS.iter().enumerate() {
                if seen & (1 << i) != 0 {
                    let _ = writeln!(
                        out,
                        "extractor_task_runs_total{{result=\"{result}\",task=\"{}\"}} {}",
                        t.task,
                        t.runs[i].load(Ordering::Relaxed)
                    );
                }
            }
        }

        let skipped: Vec<_> = tasks
            .iter()
            .flat_map(|t| {
                SKIP_REASONS
                    .iter()
                    .enumerate()
                    .map(move |(i, r)| (t, i, *r))
            })
            .filter(|(t, i, _)| t.skipped[*i].load(Ordering::Relaxed) > 0)
            .collect();
        if !skipped.is_empty() {
            header(
                out,
                "extractor_task_skipped_total",
                "counter",
                "Planned runs that did not start, by reason (overlap, missed).",
            );
            for (t, i, reason) in skipped {
                let _ = writeln!(
                    out,
                    "extractor_task_skipped_total{{reason=\"{reason}\",task=\"{}\"}} {}",
                    t.task,
                    t.skipped[i].load(Ordering::Relaxed)
                );
            }
        }

        if tasks.iter().any(|t| t.retries.load(Ordering::Relaxed) > 0) {
            header(
                out,
                "extractor_task_retries_total",
                "counter",
                "Attempts retried after a transient failure.",
            );
            for t in tasks
                .iter()
                .filter(|t| t.retries.load(Ordering::Relaxed) > 0)
            {
                let _ = writeln!(
                    out,
                    "extractor_task_retries_total{{task=\"{}\"}} {}",
                    t.task,
                    t.retries.load(Ordering::Relaxed)
                );
            }
        }

        // Only tasks whose extractor reports records (the built-ins do) have the family.
        let reporting: Vec<_> = tasks
            .iter()
            .filter(|t| t.records.iter().any(|r| r.load(Ordering::Relaxed) > 0))
            .collect();
        if !reporting.is_empty() {
            header(
                out,
                "extractor_task_records_total",
                "counter",
                "Records a task's extractor queued for CDF (queued) or could not deliver (rejected: malformed, unmappable, or refused by CDF).",
            );
            for t in reporting {
                for (i, result) in ["queued", "rejected"].iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "extractor_task_records_total{{result=\"{result}\",task=\"{}\"}} {}",
                        t.task,
                        t.records[i].load(Ordering::Relaxed)
                    );
                }
            }
        }

        header(
            out,
            "extractor_task_run_duration_seconds",
            "histogram",
            "Duration of task runs, retries included.",
        );
        for t in tasks.iter() {
            let mut cumulative = 0;
            for (i, bound) in DURATION_BUCKETS.iter().enumerate() {
                cumulative += t.duration.buckets[i].load(Ordering::Relaxed);
                let _ = write!(
                    out,
                    "extractor_task_run_duration_seconds_bucket{{task=\"{}\",le=\"",
                    t.task
                );
                float(out, *bound);
                let _ = writeln!(out, "\"}} {cumulative}");
            }
            let count = t.duration.count.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "extractor_task_run_duration_seconds_bucket{{task=\"{}\",le=\"+Inf\"}} {count}",
                t.task
            );
            let _ = write!(
                out,
                "extractor_task_run_duration_seconds_sum{{task=\"{}\"}} ",
                t.task
            );
            float(out, t.duration.sum.get());
            let _ = writeln!(
                out,
                "\nextractor_task_run_duration_seconds_count{{task=\"{}\"}} {count}",
                t.task
            );
        }

        let gauges: [GaugeFamily; 4] = [
            (
                "extractor_task_last_success_timestamp_seconds",
                "Unix time at which the task last finished a run successfully.",
                |t| t.last_success.get(),
            ),
            (
                "extractor_task_next_run_timestamp_seconds",
                "Unix time of the task's next planned run.",
                |t| t.next_run.get(),
            ),
            (
                "extractor_task_interval_seconds",
                "The time between the task's planned runs (for cron, between the next two), for alerts like 'no success within 3 intervals'.",
                |t| t.interval.get(),
            ),
            (
                "extractor_task_running",
                "Runs of the task in progress.",
                |t| t.running.0.load(Ordering::Relaxed) as f64,
            ),
        ];
        for (name, help, value) in gauges {
            header(out, name, "gauge", help);
            for t in tasks.iter() {
                let _ = write!(out, "{name}{{task=\"{}\"}} ", t.task);
                float(out, value(t));
                out.push('\n');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_text_format() {
        let families = TaskFamilies::default();
        let t = families.add("load");
        t.run_finished("success");
        t.run_finished("timeout");
        t.skipped("overlap", 2);
        t.duration.observe(0.05);
        t.duration.observe(5.0);
        t.duration.observe(5000.0);
        t.next_run.set(1_700_000_000.5);
        t.running.inc();
        let mut out = String::new();
        families.write_text(&mut out);
        for line in [
            "extractor_task_runs_total{result=\"success\",task=\"load\"} 1",
            "extractor_task_runs_total{result=\"failure\",task=\"load\"} 0",
            "extractor_task_runs_total{result=\"timeout\",task=\"load\"} 1",
            "extractor_task_skipped_total{reason=\"overlap\",task=\"load\"} 2",
            "extractor_task_run_duration_seconds_bucket{task=\"load\",le=\"0.1\"} 1",
            "extractor_task_run_duration_seconds_bucket{task=\"load\",le=\"10\"} 2",
            "extractor_task_run_duration_seconds_bucket{task=\"load\",le=\"600\"} 2",
            "extractor_task_run_duration_seconds_bucket{task=\"load\",le=\"+Inf\"} 3",
            "extractor_task_run_duration_seconds_sum{task=\"load\"} 5005.05",
            "extractor_task_run_duration_seconds_count{task=\"load\"} 3",
            "extractor_task_next_run_timestamp_seconds{task=\"load\"} 1700000000.5",
            "extractor_task_running{task=\"load\"} 1",
        ] {
            assert!(out.lines().any(|l| l == line), "missing {line} in\n{out}");
        }
        assert!(
            !out.contains("result=\"panic\""),
            "unseen results are not shown"
        );
        assert!(
            !out.contains("extractor_task_retries_total"),
            "no retries, no family"
        );
    }
}
