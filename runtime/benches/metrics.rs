//! Rendering `/metrics` with 1 000 tasks' series, and what those series cost in memory.
//! Run: `cargo bench -p extractor-runtime --bench metrics`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use extractor_runtime::metrics::MetricsRegistry;
use extractor_runtime::scheduler::{Scheduler, SchedulerOptions};
use tokio_util::sync::CancellationToken;

mod common;
use common::rss_kib;

fn tasks_registry(tasks: usize) -> MetricsRegistry {
    let mut yaml = String::from("version: 1\ncognite: {project: bench, dry-run: true}\ntasks:\n");
    for i in 0..tasks {
        yaml.push_str(&format!(
            "  - {{name: task-{i}, type: trivial, schedule: {{type: startup}}}}\n"
        ));
    }
    let metrics = MetricsRegistry::new();
    let (config, extractors) = common::build(&yaml, &metrics);
    extractor_runtime::metrics::register_process_and_build_info(metrics.prometheus()).unwrap();
    let before = rss_kib();
    let scheduler = Scheduler::new(
        &config.tasks,
        extractors,
        SchedulerOptions {
            registry: metrics.clone(),
            ..SchedulerOptions::default()
        },
    )
    .unwrap();
    // One run each, so every task has its run, duration and last-success series filled.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(scheduler.run_once(CancellationToken::new(), std::time::Duration::from_secs(5)));
    let after = rss_kib();
    let text = String::from_utf8(metrics.render()).unwrap();
    let series = text.lines().filter(|l| !l.starts_with('#')).count();
    println!(
        "metrics bench: {tasks} tasks -> {series} series, {} KiB of text, ~{} KiB RSS for the scheduler and its series ({:.1} KiB per task)",
        text.len() / 1024,
        after.saturating_sub(before),
        after.saturating_sub(before) as f64 / tasks as f64
    );
    metrics
}

fn render_metrics(c: &mut Criterion) {
    let registry = tasks_registry(1000);
    c.bench_function("render /metrics, 1000 tasks", |b| {
        b.iter(|| black_box(registry.render()))
    });
    c.bench_function("gather only, 1000 tasks", |b| {
        b.iter(|| black_box(registry.prometheus().gather()))
    });
    // metrics.cognite's push reads what /metrics serves: the series and their external ids.
    use extractor_runtime::cognite_metrics::{MAX_SERIES, external_id, series};
    let text = String::from_utf8(registry.render()).unwrap();
    c.bench_function("metrics.cognite series and external ids, 1000 tasks", |b| {
        b.iter(|| {
            let (all, _) = series(black_box(&text), MAX_SERIES);
            let ids: usize = all.iter().map(|s| external_id("m:", &s.name).len()).sum();
            black_box((all.len(), ids))
        })
    });
}

criterion_group!(benches, render_metrics);
criterion_main!(benches);
