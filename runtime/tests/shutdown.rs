//! A stop honours `shutdown-grace` as one deadline even when CDF or the identity provider is
//! down (runs, the periodic and final flushes, the state save, the pipeline report and the last
//! push all within it), and a normal stop that cancels a run, with nothing lost, reports no
//! failure.

use std::time::{Duration, Instant};

use extractor_runtime::config::{Config, LoadOptions};
use extractor_runtime::queues::RawRow;
use extractor_runtime::runtime::{Mode, Report, Runtime};
use extractor_runtime::{Extractor, Registry, RunContext, TaskError};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, ResponseTemplate};

mod support;

use support::fake_cdf::FakeCdf;

/// Queues `rows` RAW rows, delivers them, then (with `linger`) waits for the stop.
struct Rows {
    rows: usize,
    linger: bool,
}

impl Extractor for Rows {
    async fn run(&self, ctx: RunContext) -> Result<(), TaskError> {
        let upload = ctx.upload();
        for i in 0..self.rows {
            let mut columns = serde_json::Map::new();
            columns.insert("i".into(), json!(i));
            upload
                .raw(RawRow {
                    database: "db".into(),
                    table: "t".into(),
                    key: format!("k{i}"),
                    columns,
                })
                .await?;
        }
        upload.checkpoint("", &json!(self.rows));
        upload.settled().await?;
        if self.linger {
            ctx.cancelled().await;
            return Err(extractor_runtime::TaskError::transient("stopped"));
        }
        Ok(())
    }
}

/// A service of one task against `cdf`, with patient retries (as in production), a pipeline,
/// a Pushgateway at `gateway` and `grace` to stop.
fn runtime(
    cdf: &FakeCdf,
    dir: &std::path::Path,
    grace: &str,
    rows: usize,
    linger: bool,
) -> Runtime {
    let uri = cdf.uri();
    let yaml = format!(
        "version: 1\ncognite:\n  project: demo\n  host: '{uri}'\n  connection: {{max-retries: 10, max-retry-backoff: 30s}}\n  idp-authentication: {{client-id: c, secret: s, token-url: '{uri}/token', scopes: [s]}}\n  extraction-pipeline: {{external-id: p}}\nmetrics:\n  push-gateways: [{{host: '{uri}/gateway', job-name: j}}]\nstate-store: {{local: {{path: '{}'}}}}\nupload-queue: {{max-upload-interval: 100ms}}\nshutdown-grace: {grace}\ntasks:\n  - {{name: rows, type: rows, schedule: {{type: interval, expression: 1h}}}}\n",
        dir.join("state.json").display()
    );
    let config = Config::from_yaml(&yaml, None, &|_: &str| None, &LoadOptions::default()).unwrap();
    let mut registry = Registry::new();
    registry.register("rows", move |_: Value| Ok(Rows { rows, linger }));
    Runtime::build(config, &registry).unwrap()
}

/// Runs `runtime` as a service, stops it once `ready` holds, and returns the report and how
/// long the stop took.
async fn stop_when(runtime: Runtime, ready: impl AsyncFn() -> bool) -> (Report, Duration) {
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(runtime.run(Mode::Service, shutdown.clone()));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ready().await {
        assert!(Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stopped = Instant::now();
    shutdown.cancel();
    let report = run.await.unwrap().unwrap();
    let took = stopped.elapsed();
    eprintln!("the stop took {took:?}");
    (report, took)
}

/// A Pushgateway that takes a minute to answer.
async fn hanging_gateway(cdf: &FakeCdf) {
    Mock::given(path_regex("^/gateway/"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(60)))
        .mount(&cdf.server)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_with_cdf_down_ends_within_the_grace() {
    let cdf = FakeCdf::start(&[]).await;
    cdf.with(|c| c.down = true);
    let dir = tempfile::tempdir().unwrap();
    // The run waits on its rows, which CDF keeps refusing with 503 (retried up to 10 times,
    // up to 30 s apart); the final flush and the pipeline report would retry as long.
    hanging_gateway(&cdf).await;
    let (report, took) = stop_when(runtime(&cdf, dir.path(), "2s", 50, false), async || {
        cdf.requests("/raw/") >= 2
    })
    .await;
    assert!(
        took < Duration::from_secs(3),
        "the stop took {took:?} with a 2 s grace"
    );
    assert_eq!(
        report.unsent, 50,
        "nothing lost: the rows are reported unsent"
    );
    assert_eq!(report.summary.cancelled, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_with_the_identity_provider_down_ends_within_the_grace() {
    let cdf = FakeCdf::start(&[]).await;
    // A token endpoint that answers 503 before the fake's working one is consulted.
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(503))
        .with_priority(1)
        .mount(&cdf.server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let (report, took) = stop_when(runtime(&cdf, dir.path(), "2s", 50, false), async || {
        let requests = cdf.server.received_requests().await.unwrap();
        let asked = requests.iter().any(|r| r.url.path() == "/token");
        // The run has queued its rows and waits on a token by now.
        tokio::time::sleep(Duration::from_millis(500)).await;
        asked
    })
    .await;
    assert!(
        took < Duration::from_secs(3),
        "the stop took {took:?} with a 2 s grace"
    );
    assert_eq!(report.unsent, 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_normal_stop_that_cancels_a_run_reports_no_failure() {
    let cdf = FakeCdf::start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let (report, took) = stop_when(runtime(&cdf, dir.path(), "5s", 20, true), async || {
        cdf.with(|c| c.rows.len() == 20)
    })
    .await;
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!((report.unsent, report.summary.cancelled), (0, 1));
    let runs = cdf.with(|c| c.pipeline_runs.clone());
    let last = runs.last().unwrap();
    assert_eq!(last["status"], "success", "{runs:?}");
    assert!(
        last["message"]
            .as_str()
            .unwrap()
            .contains("1 cancelled by the stop, nothing lost"),
        "{last}"
    );
}
