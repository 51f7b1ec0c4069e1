//! The runtime end to end against a fake CDF (wiremock): an extractor queues RAW rows, flushes,
//! and only then advances its state; the pipeline run is reported; when CDF fails, the state
//! does not advance, the rows are reported unsent, and the pipeline run says failure.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use extractor_runtime::config::{Config, LoadOptions};
use extractor_runtime::queues::RawRow;
use extractor_runtime::runtime::{Mode, Runtime};
use extractor_runtime::state::{LocalStateStore, Watermarks};
use extractor_runtime::{Extractor, Registry, RunContext, TaskError};
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

mod support;

use support::mount_token_endpoint;

/// Queues rows `high+1 ..= high+n` and moves the watermark once CDF accepted them.
struct Counter {
    rows: u64,
}

impl Extractor for Counter {
    async fn run(&self, ctx: RunContext) -> Result<(), TaskError> {
        let (queues, state) = (ctx.queues(), ctx.state().unwrap());
        let high = state
            .get(ctx.task())
            .and_then(|w| w.high)
            .and_then(|v| v.as_u64())
            .unwrap_or(0);
        for i in high + 1..=high + self.rows {
            let mut columns = serde_json::Map::new();
            columns.insert("n".into(), json!(i));
            queues
                .raw
                .add(RawRow {
                    database: "db".into(),
                    table: "t".into(),
                    key: format!("k{i}"),
                    columns,
                })
                .await?;
        }
        queues.flush().await?;
        state.set(
            ctx.task(),
            Watermarks {
                low: Some(json!(1)),
                high: Some(json!(high + self.rows)),
            },
        );
        Ok::<(), TaskError>(())
    }
}

struct FakeCdf {
    server: MockServer,
    fail_rows: Arc<AtomicBool>,
}

async fn fake_cdf() -> FakeCdf {
    let server = MockServer::start().await;
    mount_token_endpoint(&server, "t").await;
    let fail_rows = Arc::new(AtomicBool::new(false));
    let fail = fail_rows.clone();
    Mock::given(method("POST"))
        .and(path("/api/v1/projects/demo/raw/dbs/db/tables/t/rows"))
        .respond_with(move |_: &Request| {
            if fail.load(Ordering::SeqCst) {
                ResponseTemplate::new(503)
            } else {
                ResponseTemplate::new(201).set_body_json(json!({}))
            }
        })
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/v1/projects/demo/extpipes/runs"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"items": []})))
        .mount(&server)
        .await;
    FakeCdf { server, fail_rows }
}

fn runtime(cdf: &FakeCdf, state: &std::path::Path) -> Runtime {
    runtime_with(cdf, state, "")
}

/// `extra` is added to the `cognite:` section.
fn runtime_with(cdf: &FakeCdf, state: &std::path::Path, extra: &str) -> Runtime {
    let uri = cdf.server.uri();
    let yaml = format!(
        "version: 1\ncognite:\n  project: demo\n  host: '{uri}'\n  connection: {{max-retries: 1, max-retry-backoff: 1s}}\n  idp-authentication:\n    client-id: c\n    secret: s\n    token-url: '{uri}/token'\n    scopes: [s]\n  extraction-pipeline: {{external-id: my-pipeline}}\n{extra}state-store:\n  local: {{path: '{}'}}\nshutdown-grace: 5s\ntasks:\n  - {{name: counter, type: counter, schedule: {{type: interval, expression: 1h}}}}\n",
        state.display()
    );
    let env = |_: &str| None;
    let config = Config::from_yaml(&yaml, None, &env, &LoadOptions::default()).unwrap();
    let mut registry = Registry::new();
    registry.register("counter", |_: serde_json::Value| {
        Ok(Counter { rows: 25_000 })
    });
    Runtime::build(config, &registry).unwrap()
}

async fn rows_received(cdf: &FakeCdf) -> Vec<usize> {
    cdf.server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path().ends_with("/rows"))
        .map(|r| support::json_body(r)["items"].as_array().unwrap().len())
        .collect()
}

async fn pipeline_runs(cdf: &FakeCdf) -> Vec<serde_json::Value> {
    cdf.server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path().ends_with("/extpipes/runs"))
        .map(|r| support::json_body(r)["items"][0].clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_are_delivered_before_the_state_advances() {
    let cdf = fake_cdf().await;
    let dir = tempfile::tempdir().unwrap();
    let state_file = dir.path().join("states.json");

    let report = runtime(&cdf, &state_file)
        .run(Mode::Once, Default::default())
        .await
        .unwrap();
    assert_eq!((report.summary.failed, report.unsent), (0, 0));
    assert_eq!(rows_received(&cdf).await.iter().sum::<usize>(), 25_000);
    let saved = LocalStateStore::open(&state_file, false).unwrap();
    assert_eq!(saved.get("counter").unwrap().high, Some(json!(25_000)));
    let runs = pipeline_runs(&cdf).await;
    assert_eq!(runs.len(), 1);
    assert_eq!(
        (runs[0]["externalId"].as_str(), runs[0]["status"].as_str()),
        (Some("my-pipeline"), Some("success"))
    );

    // CDF now fails: the run fails, the watermark stays, the rows are reported unsent.
    cdf.fail_rows.store(true, Ordering::SeqCst);
    let report = runtime(&cdf, &state_file)
        .run(Mode::Once, Default::default())
        .await
        .unwrap();
    assert_eq!(report.summary.failed, 1);
    assert_eq!(
        report.unsent, 25_000,
        "nothing was accepted, nothing was dropped"
    );
    let saved = LocalStateStore::open(&state_file, false).unwrap();
    assert_eq!(
        saved.get("counter").unwrap().high,
        Some(json!(25_000)),
        "the state did not advance"
    );
    let runs = pipeline_runs(&cdf).await;
    assert_eq!(runs[1]["status"], "failure");
    let message = runs[1]["message"].as_str().unwrap();
    assert!(
        message.contains("1 of 1 runs failed")
            && message.contains("25000 items were not uploaded")
            && message.contains("counter (failure)"),
        "{message}"
    );
}

#[tokio::test]
async fn a_corrupt_state_file_stops_the_runtime_unless_reset() {
    let cdf = fake_cdf().await;
    let dir = tempfile::tempdir().unwrap();
    let state_file = dir.path().join("states.json");
    std::fs::write(&state_file, "not json").unwrap();
    let err = runtime(&cdf, &state_file)
        .run(Mode::Once, Default::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("states.json is corrupt"), "{err}");
    assert!(rows_received(&cdf).await.is_empty(), "nothing ran");
    let report = runtime(&cdf, &state_file)
        .with_reset_state(true)
        .run(Mode::Once, Default::default())
        .await
        .unwrap();
    assert_eq!(report.summary.failed, 0);
    assert!(LocalStateStore::open(&state_file, false).is_ok());
}

#[tokio::test]
async fn dry_run_writes_every_batch_as_ndjson_and_fetches_no_token() {
    let cdf = fake_cdf().await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("batches.ndjson");
    let extra = format!("  dry-run: true\n  dry-run-output: '{}'\n", out.display());
    let report = runtime_with(&cdf, &dir.path().join("states.json"), &extra)
        .run(Mode::Once, Default::default())
        .await
        .unwrap();
    assert_eq!((report.summary.failed, report.unsent), (0, 0));
    assert!(
        cdf.server.received_requests().await.unwrap().is_empty(),
        "no token request, no CDF request"
    );
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let rows: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["endpoint"] == "/raw/dbs/{db}/tables/{table}/rows")
        .collect();
    assert_eq!(rows.len(), 3, "25 000 rows in 3 batches");
    assert_eq!(
        rows.iter()
            .map(|l| l["body"]["items"].as_array().unwrap().len())
            .sum::<usize>(),
        25_000
    );
    assert_eq!(
        rows[0]["path"],
        "/raw/dbs/db/tables/t/rows?ensureParent=true"
    );
    let pipeline = lines
        .iter()
        .find(|l| l["endpoint"] == "/extpipes/runs")
        .expect("the pipeline run, as NDJSON too");
    assert_eq!(pipeline["body"]["items"][0]["status"], "success");
}
