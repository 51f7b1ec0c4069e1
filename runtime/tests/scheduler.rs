//! The scheduler's semantics on a paused tokio clock: no test sleeps in real time.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use extractor_runtime::config::{Config, LoadOptions};
use extractor_runtime::metrics::MetricsRegistry;
use extractor_runtime::scheduler::{Clock, RunResult, Scheduler, SchedulerOptions, Summary};
use extractor_runtime::{Extractor, Registry, RunContext, TaskError};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What a probe run does.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ProbeConfig {
    /// How long a run takes.
    #[serde(default)]
    sleep_s: u64,
    /// Keep running when cancelled.
    #[serde(default)]
    ignore_cancel: bool,
    /// `transient`, `permanent`, `auth` or `panic`.
    #[serde(default)]
    fail: Option<String>,
    /// Fail only the first N attempts.
    #[serde(default)]
    fail_first: Option<usize>,
    #[serde(default)]
    ends_by_itself: bool,
}

#[derive(Clone, Debug)]
struct Record {
    task: String,
    started: Instant,
    wall: jiff::Timestamp,
}

#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<Record>>>);

impl Log {
    fn starts(&self, task: &str, origin: Instant) -> Vec<u64> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.task == task)
            .map(|r| (r.started - origin).as_secs())
            .collect()
    }
}

struct Probe {
    config: ProbeConfig,
    log: Log,
    clock: Clock,
    attempts: Mutex<usize>,
}

impl Extractor for Probe {
    async fn run(&self, ctx: RunContext) -> Result<(), TaskError> {
        self.log.0.lock().unwrap().push(Record {
            task: ctx.task().to_owned(),
            started: Instant::now(),
            wall: self.clock.now(),
        });
        let attempt = {
            let mut a = self.attempts.lock().unwrap();
            *a += 1;
            *a
        };
        let sleep = tokio::time::sleep(Duration::from_secs(self.config.sleep_s));
        if self.config.ignore_cancel {
            sleep.await;
        } else {
            tokio::select! {
                () = sleep => {}
                () = ctx.cancelled() => return Err(TaskError::transient("cancelled")),
            }
        }
        let failing = self.config.fail_first.is_none_or(|n| attempt <= n);
        match self.config.fail.as_deref() {
            Some("transient") if failing => Err(TaskError::transient("flaky source")),
            Some("permanent") if failing => Err(TaskError::permanent("bad data")),
            Some("auth") if failing => Err(TaskError::authentication("bad secret")),
            Some("panic") if failing => panic!("probe panicked on purpose"),
            _ => Ok(()),
        }
    }

    fn finishes_by_itself(&self) -> bool {
        self.config.ends_by_itself
    }
}

/// `Scheduler::add` of a config's task by its index.
type AddAgain = Box<dyn Fn(&Scheduler, usize) -> bool>;

struct Harness {
    scheduler: Scheduler,
    /// Adds the config's task `i` again (`Scheduler::add` with its config and extractor).
    add_again: AddAgain,
    log: Log,
    registry: MetricsRegistry,
    origin: Instant,
}

fn harness_at(tasks_yaml: &str, clock: Clock) -> Harness {
    let yaml = format!("version: 1\ncognite: {{project: p, dry-run: true}}\ntasks:\n{tasks_yaml}");
    let env = |_: &str| None;
    let config = Config::from_yaml(&yaml, None, &env, &LoadOptions::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let log = Log::default();
    let mut reg = Registry::new();
    let l = log.clone();
    reg.register("probe", move |config: ProbeConfig| {
        Ok(Probe {
            config,
            log: l.clone(),
            clock,
            attempts: Mutex::new(0),
        })
    });
    let extractors = reg
        .build_all(
            &config.tasks,
            &extractor_runtime::metrics::MetricsRegistry::new(),
        )
        .unwrap();
    let registry = MetricsRegistry::new();
    let options = SchedulerOptions {
        registry: registry.clone(),
        clock,
        keep_runs: true,
        ..SchedulerOptions::default()
    };
    let scheduler = Scheduler::new(&config.tasks, extractors.clone(), options).unwrap();
    Harness {
        scheduler,
        add_again: Box::new(move |s: &Scheduler, i: usize| {
            s.add(&config.tasks[i], extractors[i].clone())
        }),
        log,
        registry,
        origin: Instant::now(),
    }
}

fn harness(tasks_yaml: &str) -> Harness {
    harness_at(tasks_yaml, Clock::System)
}

impl Harness {
    /// Runs in service mode for `secs` of (paused) time, then shuts down with `grace`.
    async fn run_for(&self, secs: u64, grace: u64) -> Summary {
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(secs)).await;
            stop.cancel();
        });
        self.scheduler
            .run(shutdown, Duration::from_secs(grace))
            .await
    }

    fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.registry
            .value(name, labels)
            .unwrap_or_else(|| panic!("no metric {name} {labels:?}"))
    }

    fn results(summary: &Summary, task: &str) -> Vec<RunResult> {
        summary
            .runs
            .iter()
            .filter(|(t, _)| t == task)
            .map(|(_, r)| *r)
            .collect()
    }
}

#[tokio::test(start_paused = true)]
async fn interval_runs_on_start_and_then_every_interval() {
    let h = harness(
        "  - {name: a, type: probe, schedule: {type: interval, expression: 10s}}\n\
         \x20 - {name: b, type: probe, schedule: {type: interval, expression: 10s, run-on-start: false}}\n",
    );
    let summary = h.run_for(35, 5).await;
    assert_eq!(h.log.starts("a", h.origin), [0, 10, 20, 30]);
    assert_eq!(h.log.starts("b", h.origin), [10, 20, 30]);
    assert_eq!(Harness::results(&summary, "a"), [RunResult::Success; 4]);
    assert_eq!(
        h.metric(
            "extractor_task_runs_total",
            &[("task", "a"), ("result", "success")]
        ),
        4.0
    );
    // The next run is planned at 40 s (wall clock, Unix seconds).
    let next = h.metric(
        "extractor_task_next_run_timestamp_seconds",
        &[("task", "a")],
    );
    assert!(next > 1.7e9, "{next}");
}

/// Runs a cron task in Oslo for three days from `start`; the local times of its runs.
async fn oslo_runs(start: &str, expression: &str) -> Vec<String> {
    let start: jiff::Timestamp = start.parse().unwrap();
    let h = harness_at(
        &format!(
            "  - {{name: d, type: probe, schedule: {{type: cron, expression: '{expression}', timezone: Europe/Oslo}}}}\n"
        ),
        Clock::starting_at(start),
    );
    h.run_for(3 * 86_400, 5).await;
    let oslo = jiff::tz::TimeZone::get("Europe/Oslo").unwrap();
    let log = h.log.0.lock().unwrap();
    log.iter()
        .map(|r| {
            r.wall
                .to_zoned(oslo.clone())
                .strftime("%F %H:%M %Z")
                .to_string()
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn daily_cron_runs_once_across_spring_forward() {
    // Oslo moves from 02:00 to 03:00 on 2026-03-29: 02:30 does not exist that day.
    let runs = oslo_runs("2026-03-28T11:00:00Z", "0 30 2 * * *").await;
    assert_eq!(
        runs,
        [
            "2026-03-29 03:00 CEST",
            "2026-03-30 02:30 CEST",
            "2026-03-31 02:30 CEST"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn daily_cron_runs_once_across_fall_back() {
    // Oslo moves from 03:00 back to 02:00 on 2026-10-25: 02:30 happens twice that day.
    let runs = oslo_runs("2026-10-24T10:00:00Z", "30 2 * * *").await;
    assert_eq!(
        runs,
        [
            "2026-10-25 02:30 CEST",
            "2026-10-26 02:30 CET",
            "2026-10-27 02:30 CET"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn continuous_restarts_with_backoff_and_resets_after_healthy_runs() {
    let h = harness("  - {name: c, type: probe, schedule: {type: continuous}}\n");
    h.run_for(200, 5).await;
    // Ends at once each time: restarted after 5, 10, 20, 40, 60, 60 s.
    assert_eq!(h.log.starts("c", h.origin), [0, 5, 15, 35, 75, 135, 195]);

    let h = harness(
        "  - {name: c, type: probe, schedule: {type: continuous}, config: {sleep-s: 660}}\n",
    );
    h.run_for(2000, 5).await;
    // Each run is healthy for 11 min, so the backoff stays at 5 s.
    assert_eq!(h.log.starts("c", h.origin), [0, 665, 1330, 1995]);
}

#[tokio::test(start_paused = true)]
async fn startup_tasks_finish_before_scheduled_tasks_start() {
    let h = harness(
        "  - {name: s1, type: probe, schedule: {type: startup}, config: {sleep-s: 30}}\n\
         \x20 - {name: s2, type: probe, schedule: {type: startup}, config: {sleep-s: 12}}\n\
         \x20 - {name: i, type: probe, schedule: {type: interval, expression: 1m}}\n",
    );
    h.run_for(100, 5).await;
    assert_eq!(h.log.starts("s1", h.origin), [0]);
    assert_eq!(h.log.starts("s2", h.origin), [0]);
    assert_eq!(h.log.starts("i", h.origin), [30, 90]);
}

#[tokio::test(start_paused = true)]
async fn overlap_forbid_skips_and_counts() {
    let h = harness(
        "  - {name: f, type: probe, schedule: {type: interval, expression: 10s}, config: {sleep-s: 25}}\n",
    );
    h.run_for(45, 30).await;
    assert_eq!(h.log.starts("f", h.origin), [0, 30]);
    assert_eq!(
        h.metric(
            "extractor_task_skipped_total",
            &[("task", "f"), ("reason", "overlap")]
        ),
        3.0
    );
}

#[tokio::test(start_paused = true)]
async fn overlap_allow_runs_up_to_max_concurrent() {
    let h = harness(
        "  - {name: a, type: probe, overlap: allow, max-concurrent: 2, schedule: {type: interval, expression: 10s}, config: {sleep-s: 25}}\n",
    );
    h.run_for(45, 30).await;
    // 0-25 and 10-35 run together; at 20 both are running (skip); at 30 and 40 one slot is free.
    assert_eq!(h.log.starts("a", h.origin), [0, 10, 30, 40]);
    assert_eq!(
        h.metric(
            "extractor_task_skipped_total",
            &[("task", "a"), ("reason", "overlap")]
        ),
        1.0
    );
}

#[tokio::test(start_paused = true)]
async fn overlap_replace_cancels_the_running_run() {
    let h = harness(
        "  - {name: r, type: probe, overlap: replace, schedule: {type: interval, expression: 10s}, config: {sleep-s: 25}}\n",
    );
    let summary = h.run_for(25, 30).await;
    assert_eq!(h.log.starts("r", h.origin), [0, 10, 20]);
    let results = Harness::results(&summary, "r");
    assert_eq!(
        results
            .iter()
            .filter(|r| **r == RunResult::Cancelled)
            .count(),
        3,
        "{results:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn missed_runs_get_one_catch_up_within_the_starting_deadline() {
    let h = harness(
        "  - {name: m, type: probe, starting-deadline: 30s, schedule: {type: interval, expression: 1m, run-on-start: false}}\n",
    );
    let shutdown = CancellationToken::new();
    let run = {
        let shutdown = shutdown.clone();
        let s = &h.scheduler;
        async move { s.run(shutdown, Duration::from_secs(5)).await }
    };
    let test = async {
        tokio::task::yield_now().await;
        // The process stalls for 290 s (as if suspended): runs due at 60..240 s are missed, and
        // the latest (240 s) is 50 s late, past the 30 s deadline: no catch-up.
        tokio::time::advance(Duration::from_secs(290)).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(h.log.starts("m", h.origin).is_empty());
        assert_eq!(
            h.metric(
                "extractor_task_skipped_total",
                &[("task", "m"), ("reason", "missed")]
            ),
            4.0
        );
        // Back on schedule: the 300 s run starts on time. Then a stall from 301 s to 435 s:
        // the 360 s run is missed (counted), and the 420 s run, 15 s late and so within the
        // deadline, is the one catch-up run.
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(h.log.starts("m", h.origin), [300]);
        tokio::time::advance(Duration::from_secs(134)).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(h.log.starts("m", h.origin), [300, 435]);
        assert_eq!(
            h.metric(
                "extractor_task_skipped_total",
                &[("task", "m"), ("reason", "missed")]
            ),
            5.0
        );
        shutdown.cancel();
    };
    let (_, ()) = tokio::join!(run, test);
}

#[tokio::test(start_paused = true)]
async fn timeout_cancels_waits_the_grace_then_aborts() {
    let h = harness(
        "  - {name: polite, type: probe, timeout: 10s, schedule: {type: startup}, config: {sleep-s: 100}}\n\
         \x20 - {name: stubborn, type: probe, timeout: 10s, timeout-grace: 5s, schedule: {type: startup}, config: {sleep-s: 100, ignore-cancel: true}}\n",
    );
    let start = Instant::now();
    let summary = h
        .scheduler
        .run_once(CancellationToken::new(), Duration::from_secs(30))
        .await;
    assert_eq!(Harness::results(&summary, "polite"), [RunResult::Timeout]);
    assert_eq!(Harness::results(&summary, "stubborn"), [RunResult::Timeout]);
    // The stubborn one was aborted after 10 s + 5 s grace, not left to run 100 s.
    assert_eq!(start.elapsed(), Duration::from_secs(15));
    assert_eq!(
        h.metric(
            "extractor_task_runs_total",
            &[("task", "stubborn"), ("result", "timeout")]
        ),
        1.0
    );
}

#[tokio::test(start_paused = true)]
async fn transient_failures_are_retried_and_permanent_ones_are_not() {
    let h = harness(
        "  - {name: flaky, type: probe, retry: {max-attempts: 3, initial-backoff: 2s, max-backoff: 4s}, schedule: {type: startup}, config: {fail: transient, fail-first: 2}}\n\
         \x20 - {name: broken, type: probe, retry: {max-attempts: 3}, schedule: {type: startup}, config: {fail: permanent}}\n\
         \x20 - {name: hopeless, type: probe, retry: {max-attempts: 2, initial-backoff: 1s}, schedule: {type: startup}, config: {fail: transient}}\n",
    );
    let summary = h
        .scheduler
        .run_once(CancellationToken::new(), Duration::from_secs(30))
        .await;
    assert_eq!(Harness::results(&summary, "flaky"), [RunResult::Success]);
    assert_eq!(h.log.starts("flaky", h.origin).len(), 3);
    assert_eq!(
        h.metric("extractor_task_retries_total", &[("task", "flaky")]),
        2.0
    );
    assert_eq!(h.log.starts("broken", h.origin).len(), 1);
    assert!(matches!(
        Harness::results(&summary, "broken")[..],
        [RunResult::Failure(_)]
    ));
    assert_eq!(h.log.starts("hopeless", h.origin).len(), 2);
    assert!(summary.any_failed());
}

#[tokio::test(start_paused = true)]
async fn a_panic_is_a_failed_run_and_the_scheduler_goes_on() {
    let h = harness(
        "  - {name: p, type: probe, schedule: {type: interval, expression: 10s}, config: {fail: panic}}\n",
    );
    let summary = h.run_for(25, 5).await;
    assert_eq!(Harness::results(&summary, "p"), [RunResult::Panic; 3]);
    assert_eq!(
        h.metric(
            "extractor_task_runs_total",
            &[("task", "p"), ("result", "panic")]
        ),
        3.0
    );
}

#[tokio::test(start_paused = true)]
async fn jitter_delays_each_run_within_its_bound() {
    let h = harness(
        "  - {name: j, type: probe, jitter: 4s, schedule: {type: interval, expression: 1m}}\n",
    );
    h.run_for(600, 5).await;
    let starts = h
        .log
        .0
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.started - h.origin)
        .collect::<Vec<_>>();
    assert_eq!(starts.len(), 10);
    // Planned at offset + 60 s * i (the task's stable start offset is under a second), then
    // delayed by up to the 4 s jitter.
    let delays: Vec<Duration> = starts
        .iter()
        .enumerate()
        .map(|(i, s)| *s - Duration::from_secs(60 * i as u64))
        .collect();
    for (i, d) in delays.iter().enumerate() {
        assert!(*d <= Duration::from_secs(5), "run {i} delayed {d:?}");
    }
    let (min, max) = (delays.iter().min().unwrap(), delays.iter().max().unwrap());
    assert!(
        *max - *min > Duration::from_millis(100),
        "the jitter varies: {delays:?}"
    );
    assert!(
        *max - *min <= Duration::from_secs(4),
        "at most the 4 s jitter apart: {delays:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn run_once_runs_startup_then_each_task_once_and_reports_auth_failures() {
    let h = harness(
        "  - {name: boot, type: probe, schedule: {type: startup}, config: {sleep-s: 7}}\n\
         \x20 - {name: every, type: probe, schedule: {type: interval, expression: 1m}}\n\
         \x20 - {name: nightly, type: probe, schedule: {type: cron, expression: '0 2 * * *'}}\n\
         \x20 - {name: login, type: probe, schedule: {type: cron, expression: '0 3 * * *'}, config: {fail: auth}}\n",
    );
    let summary = h
        .scheduler
        .run_once(CancellationToken::new(), Duration::from_secs(30))
        .await;
    assert_eq!(h.log.starts("boot", h.origin), [0]);
    assert_eq!(h.log.starts("every", h.origin), [7]);
    assert_eq!(h.log.starts("nightly", h.origin), [7]);
    assert_eq!(summary.runs.len(), 4);
    assert!(summary.any_authentication_failure());
}

#[tokio::test(start_paused = true)]
async fn run_once_refuses_continuous_tasks_that_never_end() {
    let h = harness("  - {name: c, type: probe, schedule: {type: continuous}}\n");
    let e = h.scheduler.check_once().unwrap_err();
    assert!(e.to_string().contains("continuous task(s) c"), "{e}");
    let h = harness(
        "  - {name: c, type: probe, schedule: {type: continuous}, config: {ends-by-itself: true}}\n",
    );
    assert!(h.scheduler.check_once().is_ok());
}

#[tokio::test(start_paused = true)]
async fn shutdown_cancels_runs_and_aborts_those_that_outlive_the_grace() {
    let h = harness(
        "  - {name: polite, type: probe, schedule: {type: interval, expression: 1h}, config: {sleep-s: 1000}}\n\
         \x20 - {name: stubborn, type: probe, schedule: {type: interval, expression: 1h}, config: {sleep-s: 1000, ignore-cancel: true}}\n",
    );
    let start = Instant::now();
    let summary = h.run_for(10, 20).await;
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(30),
        "10 s running + the 20 s grace"
    );
    assert_eq!(Harness::results(&summary, "polite"), [RunResult::Cancelled]);
    assert_eq!(
        Harness::results(&summary, "stubborn"),
        [RunResult::Cancelled]
    );
    assert_eq!(
        h.metric("extractor_task_running", &[("task", "stubborn")]),
        0.0
    );
}

#[test]
fn unknown_types_and_bad_task_configs_are_config_errors_with_key_paths() {
    let yaml = "version: 1\ncognite: {project: p, dry-run: true}\ntasks:\n  - name: a\n    type: prbe\n    schedule: {type: startup}\n  - name: b\n    type: probe\n    schedule: {type: startup}\n    config: {sleep-s: soon}\n";
    let env = |_: &str| None;
    let config = Config::from_yaml(
        yaml,
        Some(std::path::Path::new("c.yaml")),
        &env,
        &LoadOptions::default(),
    )
    .unwrap();
    let mut reg = Registry::new();
    reg.register("probe", |config: ProbeConfig| {
        Ok(Probe {
            config,
            log: Log::default(),
            clock: Clock::System,
            attempts: Mutex::new(0),
        })
    });
    let err = reg
        .build_all(
            &config.tasks,
            &extractor_runtime::metrics::MetricsRegistry::new(),
        )
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains(
            "c.yaml:5:11: tasks[0].type: unknown extractor type `prbe`, did you mean `probe`?"
        ),
        "{err}"
    );
    assert!(
        err.contains(
            "c.yaml:10:23: tasks[1].config.sleep-s: expected a number, found the string `soon`"
        ),
        "{err}"
    );
}

/// A few tasks start at once (no spread offset: the first write is not delayed); past 16 tasks
/// the interval tasks' starts are spread over up to a second, so thousands do not wake in the
/// same millisecond.
#[tokio::test(start_paused = true)]
async fn a_few_tasks_start_at_once_and_many_are_spread() {
    let first_starts = |h: &Harness| -> Vec<Duration> {
        let log = h.log.0.lock().unwrap();
        let mut seen = std::collections::BTreeMap::new();
        for r in log.iter() {
            seen.entry(r.task.clone()).or_insert(r.started - h.origin);
        }
        seen.into_values().collect()
    };
    let h = harness("  - {name: only, type: probe, schedule: {type: interval, expression: 10s}}\n");
    h.run_for(2, 1).await;
    assert_eq!(first_starts(&h), [Duration::ZERO], "one task runs at start");

    let many: String = (0..40)
        .map(|i| {
            format!(
                "  - {{name: t{i}, type: probe, schedule: {{type: interval, expression: 10s}}}}\n"
            )
        })
        .collect();
    let h = harness(&many);
    h.run_for(2, 1).await;
    let starts = first_starts(&h);
    assert_eq!(starts.len(), 40);
    assert!(starts.iter().all(|s| *s < Duration::from_secs(1)));
    let distinct: std::collections::BTreeSet<_> = starts.iter().collect();
    assert!(
        distinct.len() > 30,
        "40 tasks spread: {} distinct starts",
        distinct.len()
    );
}

#[tokio::test]
async fn thousands_of_tasks_removed_and_added_keep_their_order_and_names() {
    let yaml: String = (0..2_000)
        .map(|i| {
            format!(
                "  - {{name: t{i}, type: probe, schedule: {{type: interval, expression: 1h}}}}\n"
            )
        })
        .collect();
    let h = harness(&yaml);
    // Every task but each tenth goes (the list compacts on the way), then two come back.
    for i in (0..2_000).filter(|i| i % 10 != 0) {
        assert!(h.scheduler.remove(&format!("t{i}"), Duration::ZERO).await);
    }
    assert!(
        !h.scheduler.remove("t1", Duration::ZERO).await,
        "already gone"
    );
    for i in [7, 3] {
        assert!((h.add_again)(&h.scheduler, i));
        assert!(!(h.add_again)(&h.scheduler, i), "a name is listed once");
    }
    let names: Vec<String> = h
        .scheduler
        .tasks()
        .iter()
        .map(|t| t.name().to_owned())
        .collect();
    let mut expected: Vec<String> = (0..2_000).step_by(10).map(|i| format!("t{i}")).collect();
    expected.extend(["t7".to_owned(), "t3".to_owned()]);
    assert_eq!(names, expected, "config order, added ones last");
    for name in &expected {
        assert_eq!(h.scheduler.task(name).unwrap().name(), name);
    }
    assert!(h.scheduler.task("t11").is_none());
}
