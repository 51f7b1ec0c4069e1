//! A reload among 10 000 interval tasks (1-5 s, trivial work) that changes one task: how long
//! the reload takes from its trigger to the applied diff (read, parse, build every extractor,
//! diff, restart the one task), and the scheduling lag of the other tasks while it happens,
//! against a window of the same length without a reload. Not a criterion bench: it measures a
//! running service. Run: `cargo bench -p extractor-runtime --bench reload` (`BENCH_TASKS`,
//! `BENCH_RELOADS`, `BENCH_WORKERS`; `BENCH_RENAME=1`: every reload renames every task, so it
//! removes and adds them all).

use std::sync::Arc;
use std::time::{Duration, Instant};

use extractor_runtime::config::{Config, LoadOptions};
use extractor_runtime::runtime::{Mode, Runtime};
use extractor_runtime::supervisor::Trigger;
use tokio_util::sync::CancellationToken;

mod common;

fn yaml(tasks: usize, changed: usize, generation: usize) -> String {
    let mut yaml = String::from(
        "version: 1\ncognite: {project: bench, dry-run: true}\nlogger: {console: {level: warn}}\nreload: {watch: false, interval: 1h}\ntasks:\n",
    );
    for i in 0..tasks {
        // The changed task gets another interval each generation.
        let every = if i == changed {
            format!("{}ms", 1000 + generation)
        } else {
            format!("{}s", 1 + i % 5)
        };
        // BENCH_RENAME: every task gets another name each generation (the reload removes and
        // adds them all).
        let name = if std::env::var_os("BENCH_RENAME").is_some() {
            format!("g{generation}-t{i}")
        } else {
            format!("t{i}")
        };
        yaml.push_str(&format!(
            "  - {{name: {name}, type: trivial, schedule: {{type: interval, expression: {every}}}}}\n"
        ));
    }
    yaml
}

/// The lag histogram's cumulative bucket counts (`le`, count), and the applied reloads.
fn sample(registry: &prometheus::Registry) -> (Vec<(f64, u64)>, f64) {
    let mut buckets = Vec::new();
    let mut applied = 0.0;
    for family in registry.gather() {
        match family.name() {
            "extractor_task_schedule_lag_seconds" => {
                let h = family.get_metric()[0].get_histogram();
                buckets = h
                    .get_bucket()
                    .iter()
                    .map(|b| (b.upper_bound(), b.cumulative_count()))
                    .collect();
                buckets.push((f64::INFINITY, h.get_sample_count()));
            }
            "extractor_config_reloads_total" => {
                for m in family.get_metric() {
                    if m.get_label().iter().any(|l| l.value() == "applied") {
                        applied = m.get_counter().get_value();
                    }
                }
            }
            _ => {}
        }
    }
    (buckets, applied)
}

/// Runs started between two samples, and the bucket bound their p50 and p99 lag are under.
fn window(before: &[(f64, u64)], after: &[(f64, u64)]) -> (u64, f64, f64) {
    let diff: Vec<(f64, u64)> = before
        .iter()
        .zip(after)
        .map(|((le, a), (_, b))| (*le, b - a))
        .collect();
    let total = diff.last().map_or(0, |d| d.1);
    let quantile = |q: f64| {
        diff.iter()
            .find(|(_, n)| *n as f64 >= q * total as f64)
            .map_or(f64::NAN, |(le, _)| *le)
    };
    (total, quantile(0.5), quantile(0.99))
}

fn ms(s: f64) -> String {
    if s.is_infinite() {
        "> 5000 ms".to_owned()
    } else {
        format!("<= {} ms", s * 1000.0)
    }
}

fn main() {
    let tasks: usize = std::env::var("BENCH_TASKS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let reloads: usize = std::env::var("BENCH_RELOADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, yaml(tasks, tasks / 2, 0)).unwrap();
    let config = Config::from_yaml(
        &std::fs::read_to_string(&path).unwrap(),
        Some(&path),
        &|_| None,
        &LoadOptions::default(),
    )
    .unwrap();
    if std::env::var_os("RUST_LOG").is_some() {
        // The reload's own timings (read, check): RUST_LOG=extractor_runtime::reload=info.
        extractor_runtime::logging::init(&config.logger).unwrap();
    }
    let registry = Arc::new(common::trivial_registry());
    let runtime = Runtime::build(config, &registry).unwrap();
    let metrics = runtime.metrics().clone();
    let (runtime, reload) = runtime.reloadable(registry, &path, None, LoadOptions::default());
    // BENCH_WORKERS=1: a one-CPU container, where a reload that held the worker would hold
    // every task's schedule.
    let workers: usize = std::env::var("BENCH_WORKERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap();
    let shutdown = CancellationToken::new();
    let running = rt.spawn(runtime.run(Mode::Service, shutdown.clone()));
    let prom = metrics.prometheus().clone();
    // Past the first runs (spread over the first second) into the steady state.
    std::thread::sleep(Duration::from_secs(6));

    println!(
        "{tasks} interval tasks (1-5 s) on {workers} worker thread(s), {reloads} reloads each {}",
        if std::env::var_os("BENCH_RENAME").is_some() {
            "renaming every task"
        } else {
            "changing one task"
        }
    );
    let mut applies = Vec::new();
    for generation in 1..=reloads {
        // A quiet window first, as long as the reload's.
        let (quiet_start, _) = sample(&prom);
        std::thread::sleep(Duration::from_secs(2));
        let (quiet_end, applied_before) = sample(&prom);

        std::fs::write(&path, yaml(tasks, tasks / 2, generation)).unwrap();
        let (start, _) = sample(&prom);
        let triggered = Instant::now();
        assert!(reload.trigger(Trigger::Signal));
        let took = loop {
            let (_, applied) = sample(&prom);
            if applied > applied_before {
                break triggered.elapsed();
            }
            assert!(
                triggered.elapsed() < Duration::from_secs(60),
                "no reload applied"
            );
            std::thread::sleep(Duration::from_millis(1));
        };
        std::thread::sleep(Duration::from_secs(2).saturating_sub(took));
        let (end, _) = sample(&prom);
        let (quiet_runs, quiet_p50, quiet_p99) = window(&quiet_start, &quiet_end);
        let (runs, p50, p99) = window(&start, &end);
        println!(
            "  reload {generation}: applied in {:.1} ms; lag of {runs} runs around it p50 {} p99 {}; quiet 2 s before: {quiet_runs} runs p50 {} p99 {}",
            took.as_secs_f64() * 1000.0,
            ms(p50),
            ms(p99),
            ms(quiet_p50),
            ms(quiet_p99)
        );
        applies.push(took);
    }
    applies.sort();
    println!(
        "apply: median {:.1} ms, max {:.1} ms; rss {:.1} MiB",
        applies[applies.len() / 2].as_secs_f64() * 1000.0,
        applies.last().unwrap().as_secs_f64() * 1000.0,
        common::rss_kib() as f64 / 1024.0
    );
    shutdown.cancel();
    let report = rt.block_on(running).unwrap().unwrap();
    assert_eq!(report.summary.failed, 0);
}
