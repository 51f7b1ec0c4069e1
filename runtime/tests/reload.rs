//! Reloads through the library API: a custom extractor's config type's `PartialEq` decides
//! whether its task changed (here `note` is left out of equality, so a reload that changes only
//! `note` leaves the task running untouched, and one that changes `greeting` restarts it); and
//! what a removed task queued is still delivered.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use extractor_runtime::config::{Config, LoadOptions};
use extractor_runtime::runtime::{Mode, Runtime};
use extractor_runtime::supervisor::Trigger;
use extractor_runtime::{Extractor, Registry, RunContext, TaskError};

mod support;

#[derive(Clone, Debug, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct Greeting {
    greeting: String,
    /// Documentation only: not part of what the task does (so never read).
    #[serde(default)]
    #[allow(dead_code)]
    note: String,
}

impl PartialEq for Greeting {
    fn eq(&self, other: &Self) -> bool {
        self.greeting == other.greeting
    }
}

/// Runs, by task and greeting.
type Runs = Arc<Mutex<BTreeMap<(String, String), usize>>>;

struct Greeter {
    greeting: String,
    runs: Runs,
}

impl Extractor for Greeter {
    async fn run(&self, ctx: RunContext) -> Result<(), TaskError> {
        *self
            .runs
            .lock()
            .unwrap()
            .entry((ctx.task().to_owned(), self.greeting.clone()))
            .or_default() += 1;
        Ok(())
    }
}

fn config(greeting: &str, note: &str) -> String {
    format!(
        "version: 1\ncognite: {{project: demo, dry-run: true}}\nreload: {{watch: false, interval: 1h}}\ntasks:\n\
         \x20 - {{name: greet, type: greeter, schedule: {{type: interval, expression: 1h}}, config: {{greeting: '{greeting}', note: '{note}'}}}}\n\
         \x20 - {{name: other, type: greeter, schedule: {{type: interval, expression: 1h}}, config: {{greeting: constant}}}}\n"
    )
}

/// A service running the config at `path`, reloadable.
struct Service {
    metrics: extractor_runtime::metrics::MetricsRegistry,
    reload: extractor_runtime::supervisor::ReloadHandle,
    shutdown: extractor_runtime::CancellationToken,
    running: tokio::task::JoinHandle<
        Result<extractor_runtime::runtime::Report, extractor_runtime::runtime::RuntimeError>,
    >,
}

impl Service {
    fn start(registry: Arc<Registry>, path: &std::path::Path) -> Service {
        let env = |_: &str| None;
        let loaded = Config::from_yaml(
            &std::fs::read_to_string(path).unwrap(),
            Some(path),
            &env,
            &LoadOptions::default(),
        )
        .unwrap();
        let runtime = Runtime::build(loaded, &registry).unwrap();
        let metrics = runtime.metrics().clone();
        let (runtime, reload) = runtime.reloadable(registry, path, None, LoadOptions::default());
        let shutdown = extractor_runtime::CancellationToken::new();
        let running = tokio::spawn(runtime.run(Mode::Service, shutdown.clone()));
        Service {
            metrics,
            reload,
            shutdown,
            running,
        }
    }
}

async fn until(what: &str, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_config_types_partial_eq_decides_what_a_reload_restarts() {
    let runs: Runs = Runs::default();
    let mut registry = Registry::new();
    let r = runs.clone();
    registry.register("greeter", move |c: Greeting| {
        Ok(Greeter {
            greeting: c.greeting,
            runs: r.clone(),
        })
    });
    let registry = Arc::new(registry);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, config("hello", "first")).unwrap();
    let Service {
        metrics,
        reload,
        shutdown,
        running,
    } = Service::start(registry, &path);
    let count = |task: &str, greeting: &str| {
        runs.lock()
            .unwrap()
            .get(&(task.to_owned(), greeting.to_owned()))
            .copied()
            .unwrap_or(0)
    };
    until("the first runs", || {
        count("greet", "hello") == 1 && count("other", "constant") == 1
    })
    .await;
    let applied = || {
        metrics
            .value("extractor_config_reloads_total", &[("result", "applied")])
            .unwrap_or(0.0)
    };

    // Only `note` changed: equal by the type's PartialEq, so nothing restarts.
    std::fs::write(&path, config("hello", "second")).unwrap();
    assert!(reload.trigger(Trigger::Signal));
    until("the first reload", || applied() == 1.0).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        count("greet", "hello"),
        1,
        "an equal config restarted the task"
    );

    // `greeting` changed: the task restarts with it; the other task is untouched.
    std::fs::write(&path, config("bonjour", "second")).unwrap();
    assert!(reload.trigger(Trigger::Signal));
    until("the restart", || count("greet", "bonjour") == 1).await;
    assert_eq!(applied(), 2.0);
    assert_eq!(count("greet", "hello"), 1);
    assert_eq!(count("other", "constant"), 1);

    shutdown.cancel();
    let report = running.await.unwrap().unwrap();
    assert_eq!(report.summary.failed, 0);
}

/// Queues one RAW row and returns without waiting for it to be delivered.
struct Queuer;

impl Extractor for Queuer {
    async fn run(&self, ctx: RunContext) -> Result<(), TaskError> {
        let row = extractor_runtime::upload::RawRow {
            database: "db".into(),
            table: "t".into(),
            key: format!("from-{}", ctx.task()),
            columns: serde_json::Map::new(),
        };
        ctx.upload().raw(row).await?;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_tasks_queued_items_still_arrive() {
    let cdf = support::fake_cdf::FakeCdf::start(&[]).await;
    let mut registry = Registry::new();
    registry.register("queuer", |_: serde_json::Value| Ok(Queuer));
    let registry = Arc::new(registry);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    let config = |tasks: &str| {
        format!(
            "version: 1\ncognite:\n  project: demo\n  host: {host}\n  idp-authentication: {{client-id: c, secret: s, token-url: '{host}/token', scopes: [s]}}\n\
             upload-queue: {{max-upload-interval: 3s}}\nreload: {{watch: false, interval: 1h}}\ntasks:\n{tasks}",
            host = cdf.uri()
        )
    };
    let queuer = |name: &str| {
        format!(
            "  - {{name: {name}, type: queuer, schedule: {{type: interval, expression: 1h}}}}\n"
        )
    };
    std::fs::write(&path, config(&(queuer("stays") + &queuer("goes")))).unwrap();
    let Service {
        metrics,
        reload,
        shutdown,
        running,
    } = Service::start(registry, &path);
    let runs = |task: &str| {
        metrics
            .value(
                "extractor_task_runs_total",
                &[("task", task), ("result", "success")],
            )
            .unwrap_or(0.0)
    };
    until("both tasks ran", || {
        runs("stays") == 1.0 && runs("goes") == 1.0
    })
    .await;
    std::fs::write(&path, config(&queuer("stays"))).unwrap();
    assert!(reload.trigger(Trigger::Signal));
    until("the reload", || {
        metrics
            .value("extractor_config_reloads_total", &[("result", "applied")])
            .unwrap_or(0.0)
            == 1.0
    })
    .await;
    assert_eq!(
        metrics.value(
            "extractor_task_runs_total",
            &[("task", "goes"), ("result", "success")]
        ),
        None,
        "the removed task is gone"
    );
    assert_eq!(
        cdf.with(|s| s.rows.get("from-goes").copied()),
        None,
        "the row was still queued when its task was removed"
    );
    until("the removed task's row arrives", || {
        cdf.with(|s| s.rows.get("from-goes").copied()) == Some(1)
    })
    .await;
    shutdown.cancel();
    let report = running.await.unwrap().unwrap();
    assert_eq!(report.unsent, 0);
}
