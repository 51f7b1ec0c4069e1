//! 10 000 interval tasks of trivial work in one process: scheduling lag (p50, p99), CPU and
//! RSS. Not a criterion bench: it measures a steady state over a fixed time.
//! Run: `cargo bench -p extractor-runtime --bench scheduler` (`BENCH_SECONDS`, `BENCH_TASKS`).

use std::time::Duration;

use extractor_runtime::scheduler::{Scheduler, SchedulerOptions};
use tokio_util::sync::CancellationToken;

mod common;

fn rusage() -> (f64, u64) {
    // utime + stime in seconds, and the peak RSS in KiB, from /proc/self.
    let cpu = extractor_runtime::testing::cpu_seconds(std::process::id());
    (cpu, common::status_kib("VmHWM:"))
}

fn main() {
    let tasks: usize = std::env::var("BENCH_TASKS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let mut yaml = String::from("version: 1\ncognite: {project: bench, dry-run: true}\ntasks:\n");
    for i in 0..tasks {
        // Intervals of 1-5 s, so about 6 000 runs a second start at spread-out times.
        yaml.push_str(&format!(
            "  - {{name: t{i}, type: trivial, schedule: {{type: interval, expression: {}s}}}}\n",
            1 + i % 5
        ));
    }
    let rss = |step: &str| {
        let kib = common::rss_kib();
        println!("  rss after {step}: {:.1} MiB", kib as f64 / 1024.0);
    };
    rss("building the YAML");
    let metrics = extractor_runtime::metrics::MetricsRegistry::new();
    let (config, extractors) = common::build(&yaml, &metrics);
    drop(yaml);
    rss("loading the config and building the extractors");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (cpu_before, _) = rusage();
    let lags = rt.block_on(async {
        let scheduler = Scheduler::new(
            &config.tasks,
            extractors,
            SchedulerOptions {
                registry: metrics.clone(),
                ..SchedulerOptions::default()
            },
        )
        .unwrap();
        rss("creating the scheduler (metrics)");
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(seconds)).await;
            stop.cancel();
        });
        let summary = scheduler.run(shutdown, Duration::from_secs(5)).await;
        summary.total
    });
    let (cpu_after, peak_kib) = rusage();
    // The lag histogram: read p50/p99 from its buckets.
    let families = metrics.prometheus().gather();
    let lag = families
        .iter()
        .find(|f| f.name() == "extractor_task_schedule_lag_seconds")
        .unwrap();
    let h = lag.get_metric()[0].get_histogram();
    let count = h.get_sample_count();
    let quantile = |q: f64| {
        let target = (count as f64 * q).ceil() as u64;
        h.get_bucket()
            .iter()
            .find(|b| b.cumulative_count() >= target)
            .map(|b| b.upper_bound())
            .unwrap_or(f64::INFINITY)
    };
    // As Prometheus' histogram_quantile: linear within the bucket the quantile falls in.
    let interpolated = |q: f64| {
        let target = count as f64 * q;
        let (mut lower, mut below) = (0.0, 0u64);
        for b in h.get_bucket() {
            if b.cumulative_count() as f64 >= target {
                let within = (b.cumulative_count() - below).max(1) as f64;
                return lower + (b.upper_bound() - lower) * (target - below as f64) / within;
            }
            (lower, below) = (b.upper_bound(), b.cumulative_count());
        }
        f64::INFINITY
    };
    println!(
        "scheduler bench: {tasks} tasks, {seconds}s: {lags} runs ({:.0}/s), lag p50 <= {}s, p99 <= {}s (histogram bucket bounds; interpolated as histogram_quantile does: p50 {:.4}s, p99 {:.4}s), mean lag {:.6}s, CPU {:.2}s ({:.0}% of one core), peak RSS {:.1} MiB",
        lags as f64 / seconds as f64,
        quantile(0.50),
        quantile(0.99),
        interpolated(0.50),
        interpolated(0.99),
        h.get_sample_sum() / count.max(1) as f64,
        cpu_after - cpu_before,
        100.0 * (cpu_after - cpu_before) / seconds as f64,
        peak_kib as f64 / 1024.0,
    );
}
