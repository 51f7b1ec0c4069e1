//! The delivery contract against a stateful fake CDF that refuses items as CDF does (400
//! `missing`, 409 `duplicated`, a bare 400, 413): good items are delivered once, refused ones
//! land in the dead-letter file, the queue never sticks, extra requests stay bounded, and a
//! task's checkpoint becomes durable once everything it queued before is settled.

use std::path::Path;

use extractor_runtime::RunContext;
use extractor_runtime::cdf::CdfClient;
use extractor_runtime::queues::{
    Datapoint, DatapointValue, DeadLetter, Event, OnDuplicate, Policy, Queues, RawRow, Refusals,
    Upload,
};
use extractor_runtime::state::{LocalStateStore, StateStore};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

mod support;

use support::fake_cdf::{BAD, FakeCdf};

struct Setup {
    ctx: RunContext,
    queues: Queues,
    registry: prometheus::Registry,
    tokens: extractor_runtime::auth::TokenManager,
    _dir: tempfile::TempDir,
    dead_letter: std::path::PathBuf,
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.tokens.shutdown();
    }
}

/// A task `task` with a state file, uploading to `cdf` with a dead-letter file.
fn setup(cdf: &FakeCdf, task: &str, capacity: usize) -> Setup {
    setup_with(cdf, task, capacity, "")
}

/// [`setup`] with more `cognite.connection` keys (`, key: value`).
fn setup_with(cdf: &FakeCdf, task: &str, capacity: usize, connection: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let dead_letter = dir.path().join("refused/dead-letter.ndjson");
    let registry = prometheus::Registry::new();
    let (queues, tokens) = queues(
        cdf,
        capacity,
        &registry,
        Some(DeadLetter::open(&dead_letter).unwrap()),
        connection,
    );
    let state =
        StateStore::Local(LocalStateStore::open(&dir.path().join("state.json"), false).unwrap());
    let ctx = RunContext::new(task, CancellationToken::new(), queues.clone(), Some(state));
    Setup {
        ctx,
        queues,
        registry,
        tokens,
        _dir: dir,
        dead_letter,
    }
}

fn queues(
    cdf: &FakeCdf,
    capacity: usize,
    registry: &prometheus::Registry,
    dead_letter: Option<DeadLetter>,
    connection: &str,
) -> (Queues, extractor_runtime::auth::TokenManager) {
    let cognite = support::cognite(
        &cdf.uri(),
        &format!(", connection: {{max-retries: 0{connection}}}"),
    );
    let tokens = support::token_manager(&cdf.uri());
    let client = CdfClient::new(&cognite, Some(tokens.clone()), None, registry).unwrap();
    (
        Queues::with_dead_letter(client, capacity, registry, dead_letter).unwrap(),
        tokens,
    )
}

fn dead_letters(path: &Path) -> Vec<Value> {
    match std::fs::read_to_string(path) {
        Ok(text) => text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn metric(registry: &prometheus::Registry, queue: &str, result: &str) -> f64 {
    let text = support::metrics_text(registry);
    let prefix = format!("extractor_upload_items_total{{queue=\"{queue}\",result=\"{result}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0.0, |v| v.parse().unwrap())
}

fn point(series: &str, t: i64) -> Datapoint {
    Datapoint {
        external_id: series.into(),
        timestamp: t,
        value: DatapointValue::Numeric(t as f64),
    }
}

fn row(key: &str) -> RawRow {
    let mut columns = serde_json::Map::new();
    columns.insert("v".into(), json!(key));
    RawRow {
        database: "db".into(),
        table: "t".into(),
        key: key.into(),
        columns,
    }
}

fn event(id: &str, description: &str) -> Event {
    Event {
        external_id: Some(id.into()),
        start_time: Some(1),
        description: Some(description.into()),
        ..Event::default()
    }
}

/// Known, unknown and bad readings, each series interleaved; checkpoint after all of them.
async fn readings(upload: &Upload) {
    for t in 1..=5 {
        upload.datapoint(point("known", t)).await.unwrap();
        if t <= 3 {
            upload.datapoint(point("unknown", t)).await.unwrap();
        }
        if t == 2 {
            upload.datapoint(point("bad-sensor", t)).await.unwrap();
        }
    }
    upload.checkpoint("", &json!(5));
}

#[tokio::test]
async fn datapoints_of_an_unknown_series_are_dead_lettered_and_the_rest_delivered() {
    let cdf = FakeCdf::start(&["known", "bad-sensor"]).await;
    let s = setup(&cdf, "plant", 1_000);
    let upload = s.ctx.upload();
    readings(upload).await;

    let refused = upload.deliver().await.unwrap();
    assert_eq!(refused.count, 4, "{refused}");
    assert_eq!(refused.to_string(), "unknown, bad-sensor (4 items)");
    let e = upload.refused_error(&refused).unwrap().to_string();
    assert!(
        e.contains("CDF refused 4 item(s)") && e.contains("dead-letter.ndjson"),
        "{e}"
    );

    // The good readings arrived once; the queue is empty; the checkpoint is durable.
    cdf.with(|c| {
        assert_eq!(c.datapoints["known"], [1, 2, 3, 4, 5]);
        assert!(!c.datapoints.contains_key("unknown") && !c.series.contains_key("unknown"));
        assert!(!c.datapoints.contains_key("bad-sensor"));
    });
    assert_eq!(s.queues.pending(), 0);
    assert_eq!(
        s.ctx.state().unwrap().get("plant").unwrap().high,
        Some(json!(5))
    );

    // Each refused item is in the dead-letter file with CDF's reason and request id.
    let lines = dead_letters(&s.dead_letter);
    assert_eq!(lines.len(), 4);
    let unknown: Vec<&Value> = lines
        .iter()
        .filter(|l| l["item"]["externalId"] == "unknown")
        .collect();
    assert_eq!(unknown.len(), 3);
    assert_eq!(unknown[0]["status"], 400);
    assert_eq!(unknown[0]["task"], "plant");
    assert_eq!(unknown[0]["queue"], "datapoints");
    assert_eq!(unknown[0]["endpoint"], "/timeseries/data");
    assert!(
        unknown[0]["message"]
            .as_str()
            .unwrap()
            .contains("create-missing is off")
    );
    assert!(
        unknown[0]["request_id"]
            .as_str()
            .unwrap()
            .starts_with("req-")
    );
    assert!(unknown[0]["time"].as_str().unwrap().ends_with('Z'));
    let bad = lines
        .iter()
        .find(|l| l["item"]["externalId"] == "bad-sensor")
        .unwrap();
    assert_eq!(bad["message"], "Invalid datapoint value");
    assert_eq!(
        bad["item"],
        json!({"externalId": "bad-sensor", "timestamp": 2, "value": 2.0})
    );

    assert_eq!(metric(&s.registry, "datapoints", "rejected"), 4.0);
    assert_eq!(metric(&s.registry, "datapoints", "uploaded"), 5.0);
    assert_eq!(s.queues.refused(), 4);

    // The queue is not stuck: the next readings go straight through.
    upload.datapoint(point("known", 6)).await.unwrap();
    assert_eq!(upload.deliver().await.unwrap().count, 0);
    cdf.with(|c| assert_eq!(c.datapoints["known"], [1, 2, 3, 4, 5, 6]));
}

#[tokio::test]
async fn create_missing_creates_the_series_and_sends_its_datapoints_again() {
    create_missing_sends_again("").await;
}

#[tokio::test]
async fn datapoints_as_protocol_buffers_are_refused_and_created_as_json_ones_are() {
    // The same refusals (a missing series, a bad one, one split out), with every insert sent
    // as protocol buffers.
    let cdf = create_missing_sends_again(", protobuf-datapoints: true").await;
    cdf.with(|c| {
        assert!(c.protobuf >= 3, "{} protobuf inserts", c.protobuf);
        assert_eq!(c.protobuf, c.requests["/timeseries/data"]);
    });
}

/// Creates missing series (`connection`: more `cognite.connection` keys); returns the fake.
async fn create_missing_sends_again(connection: &str) -> FakeCdf {
    let cdf = FakeCdf::start(&["known", "bad-sensor"]).await;
    let s = setup_with(&cdf, "plant", 1_000, connection);
    let upload = s.ctx.upload().with_policy(Policy {
        create_missing: true,
        ..Policy::default()
    });
    readings(&upload).await;
    upload
        .datapoint(Datapoint {
            external_id: "status".into(),
            timestamp: 1,
            value: DatapointValue::String("on".into()),
        })
        .await
        .unwrap();

    let refused = upload.deliver().await.unwrap();
    assert_eq!(refused.to_string(), "bad-sensor", "only the bad one");
    cdf.with(|c| {
        assert_eq!(c.datapoints["known"], [1, 2, 3, 4, 5]);
        assert_eq!(c.datapoints["unknown"], [1, 2, 3]);
        assert_eq!(c.datapoints["status"], [1]);
        assert_eq!(
            c.series["unknown"],
            json!({"externalId": "unknown", "name": "unknown", "isString": false})
        );
        assert_eq!(c.series["status"]["isString"], true);
        assert_eq!(
            c.requests["/timeseries"], 1,
            "both series in one create request"
        );
    });
    assert_eq!(metric(&s.registry, "datapoints", "uploaded"), 9.0);
    assert_eq!(metric(&s.registry, "datapoints", "rejected"), 1.0);
    cdf
}

#[tokio::test]
async fn replayed_events_are_updated_or_skipped_by_policy() {
    let cdf = FakeCdf::start(&[]).await;
    let s = setup(&cdf, "alarms", 1_000);
    let upload = s.ctx.upload();
    for id in ["e1", "e2"] {
        upload.event(event(id, "first")).await.unwrap();
    }
    assert_eq!(upload.deliver().await.unwrap().count, 0);

    // A replay after a crash: e1 and e2 again (changed), e3 new. Updated, so replays are
    // idempotent.
    for id in ["e1", "e2", "e3"] {
        upload.event(event(id, "second")).await.unwrap();
    }
    assert_eq!(upload.deliver().await.unwrap().count, 0);
    cdf.with(|c| {
        assert_eq!(c.events.len(), 3);
        assert!(
            c.events.values().all(|e| e["description"] == "second"),
            "{:?}",
            c.events
        );
        assert_eq!(c.event_updates, 2);
    });
    assert_eq!(metric(&s.registry, "events", "uploaded"), 5.0);

    // on-duplicate: skip keeps what CDF has.
    let skip = upload.with_policy(Policy {
        on_duplicate: OnDuplicate::Skip,
        ..Policy::default()
    });
    for id in ["e1", "e4"] {
        skip.event(event(id, "third")).await.unwrap();
    }
    assert_eq!(skip.deliver().await.unwrap().count, 0);
    cdf.with(|c| {
        assert_eq!(c.events["e1"]["description"], "second");
        assert_eq!(c.events["e4"]["description"], "third");
        assert_eq!(c.event_updates, 2);
    });
    assert_eq!(metric(&s.registry, "events", "skipped"), 1.0);
    assert!(dead_letters(&s.dead_letter).is_empty());
}

#[tokio::test]
async fn one_bad_row_in_ten_thousand_is_isolated_in_a_few_requests() {
    let cdf = FakeCdf::start(&[]).await;
    let s = setup(&cdf, "rows", 20_000);
    let upload = s.ctx.upload();
    for i in 0..10_000 {
        let key = if i == 6_543 {
            format!("{BAD}{i}")
        } else {
            format!("k{i}")
        };
        upload.raw(row(&key)).await.unwrap();
    }
    upload.checkpoint("", &json!(10_000));
    let refused = upload.deliver().await.unwrap();
    assert_eq!(refused.to_string(), "bad-6543");

    let requests = cdf.requests("/raw/");
    // Bisecting 10 000 rows to one: two requests per level, 14 levels, plus the first.
    assert!(
        requests <= 1 + 2 * 14,
        "{requests} requests for one bad row"
    );
    cdf.with(|c| {
        assert_eq!(c.rows.len(), 9_999);
        assert!(c.rows.values().all(|n| *n == 1), "each good row once");
    });
    let lines = dead_letters(&s.dead_letter);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["item"]["key"], "bad-6543");
    assert_eq!(lines[0]["item"]["columns"]["v"], "bad-6543");
    assert_eq!(lines[0]["endpoint"], "/raw/dbs/{db}/tables/{table}/rows");
    assert_eq!(
        s.ctx.state().unwrap().get("rows").unwrap().high,
        Some(json!(10_000))
    );
}

#[tokio::test]
async fn a_request_too_large_is_split_until_it_fits_and_an_item_too_large_is_refused() {
    let cdf = FakeCdf::start(&[]).await;
    cdf.with(|c| c.max_body = 20_000);
    let s = setup(&cdf, "rows", 10_000);
    let upload = s.ctx.upload();
    for i in 0..1_000 {
        upload.raw(row(&format!("k{i:04}"))).await.unwrap();
    }
    let mut huge = row("huge");
    huge.columns
        .insert("blob".into(), json!("x".repeat(30_000)));
    upload.raw(huge).await.unwrap();
    let refused = upload.deliver().await.unwrap();
    assert_eq!(refused.to_string(), "huge");
    cdf.with(|c| {
        assert_eq!(c.rows.len(), 1_000);
        assert!(c.rows.values().all(|n| *n == 1));
    });
    let lines = dead_letters(&s.dead_letter);
    assert_eq!(lines[0]["status"], 413);
    assert!(cdf.requests("/raw/") < 40, "{}", cdf.requests("/raw/"));
    // The first requests went gzipped (over 16 KiB of JSON): the limit is on what they hold.
    assert!(cdf.with(|c| c.gzipped) > 0);
}

#[tokio::test]
async fn other_tasks_items_do_not_hold_a_checkpoint_back() {
    let cdf = FakeCdf::start(&["known"]).await;
    let s = setup(&cdf, "a", 1_000);
    let other = RunContext::new(
        "b",
        CancellationToken::new(),
        s.queues.clone(),
        Some(s.ctx.state().unwrap().clone()),
    );
    // Two tasks share the queues; a's checkpoint depends only on a's items.
    let a = s.ctx.upload();
    let b = other.upload();
    a.datapoint(point("known", 1)).await.unwrap();
    a.checkpoint("", &json!(1));
    b.raw(row(&format!("{BAD}b"))).await.unwrap();
    b.checkpoint("", &json!("b1"));
    // a delivers: its checkpoint is durable and a is not blamed for b's refused row.
    assert_eq!(a.deliver().await.unwrap().count, 0);
    let state = s.ctx.state().unwrap();
    assert_eq!(state.get("a").unwrap().high, Some(json!(1)));
    // b's refusal is b's, and b's state moved past it.
    let refused: Refusals = b.deliver().await.unwrap();
    assert_eq!(refused.to_string(), "bad-b");
    assert_eq!(state.get("b").unwrap().high, Some(json!("b1")));
    assert_eq!(dead_letters(&s.dead_letter)[0]["task"], "b");
}

#[tokio::test]
async fn a_checkpoint_waits_while_its_items_stay_queued() {
    let cdf = FakeCdf::start(&["known"]).await;
    let s = setup(&cdf, "plant", 1_000);
    let upload = s.ctx.upload();
    upload.datapoint(point("known", 1)).await.unwrap();
    upload.checkpoint("", &json!(1));
    cdf.with(|c| c.down = true);
    let e = upload.deliver().await.unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert_eq!(upload.outstanding(), 1);
    assert_eq!(s.ctx.state().unwrap().get("plant"), None, "not durable");
    assert_eq!(
        upload.resume::<Value>("").unwrap(),
        Some(json!(1)),
        "but reading resumes after it"
    );
    cdf.with(|c| c.down = false);
    upload.deliver().await.unwrap();
    assert_eq!(
        s.ctx.state().unwrap().get("plant").unwrap().high,
        Some(json!(1))
    );
}

/// A refused item whose dead-letter line cannot be written is held aside: never sent again,
/// never blocking the other items, counted, and its task's watermark does not pass it.
#[tokio::test]
async fn a_dead_letter_file_that_cannot_be_written_holds_the_refused_items_aside() {
    let cdf = FakeCdf::start(&[]).await;
    let registry = prometheus::Registry::new();
    // Writes to /dev/full fail with ENOSPC, as a full disk would.
    let (queues, tokens) = queues(
        &cdf,
        100,
        &registry,
        Some(DeadLetter::open(Path::new("/dev/full")).unwrap()),
        "",
    );
    queues.raw.add(row("good")).await.unwrap();
    queues.raw.add(row(&format!("{BAD}1"))).await.unwrap();
    assert_eq!(
        queues.flush().await.unwrap(),
        1,
        "the good row left the queue"
    );
    assert_eq!(queues.raw.len(), 1, "the refused row is not forgotten");
    assert_eq!(queues.held(), 1);
    assert_eq!(
        queues.refused(),
        0,
        "not refused for good until it is on disk"
    );
    let failure = queues.dead_letter_failure().unwrap();
    assert!(failure.contains("No space left on device"), "{failure}");
    cdf.with(|c| assert_eq!(c.rows.len(), 1, "the good row went through"));
    let sent = cdf.requests("/raw");
    // Later flushes deliver new rows and do not send the held one again.
    queues.raw.add(row("later")).await.unwrap();
    queues.flush().await.unwrap();
    queues.flush().await.unwrap();
    cdf.with(|c| assert_eq!(c.rows.len(), 2));
    assert_eq!(
        cdf.requests("/raw"),
        sent + 1,
        "the refused row is not sent again"
    );
    assert_eq!(queues.held(), 1);
    let metrics = support::metrics_text(&registry);
    assert!(
        metrics.contains("extractor_dead_letter_held_items{queue=\"raw\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("extractor_dead_letter_write_failures_total 3"),
        "{metrics}"
    );
    tokens.shutdown();
}

/// Queues rows `{prefix}{run}-{i}`; its first run also queues a row CDF refuses. Checkpoints the
/// run number and fails naming what CDF refused.
struct Rows {
    prefix: &'static str,
    poison: bool,
}

impl extractor_runtime::Extractor for Rows {
    async fn run(&self, ctx: RunContext) -> Result<(), extractor_runtime::TaskError> {
        let upload = ctx.upload();
        let run = upload.resume::<u64>("")?.unwrap_or(0) + 1;
        for i in 0..3 {
            upload
                .raw(row(&format!("{}{run}-{i}", self.prefix)))
                .await?;
        }
        if self.poison && run == 1 {
            upload
                .raw(row(&format!("{BAD}{}{run}", self.prefix)))
                .await?;
        }
        upload.checkpoint("", &json!(run));
        upload.settled().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_service_mode_a_poisoned_task_does_not_stop_another_tasks_rows() {
    use extractor_runtime::Registry;
    use extractor_runtime::config::{Config, LoadOptions};
    use extractor_runtime::runtime::{Mode, Runtime};

    let cdf = FakeCdf::start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let (state, dead) = (
        dir.path().join("state.json"),
        dir.path().join("dead.ndjson"),
    );
    let uri = cdf.uri();
    let yaml = format!(
        "version: 1\ncognite:\n  project: demo\n  host: '{uri}'\n  connection: {{max-retries: 0}}\n  idp-authentication: {{client-id: c, secret: s, token-url: '{uri}/token', scopes: [s]}}\n  extraction-pipeline: {{external-id: p}}\nstate-store: {{local: {{path: '{}', save-interval: 100ms}}}}\nupload-queue: {{max-upload-interval: 100ms, dead-letter: '{}'}}\nshutdown-grace: 5s\ntasks:\n  - {{name: poisoned, type: poisoned, schedule: {{type: interval, expression: 200ms}}}}\n  - {{name: clean, type: clean, schedule: {{type: interval, expression: 200ms}}}}\n",
        state.display(),
        dead.display()
    );
    let config = Config::from_yaml(&yaml, None, &|_: &str| None, &LoadOptions::default()).unwrap();
    let mut registry = Registry::new();
    registry.register("poisoned", |_: Value| {
        Ok(Rows {
            prefix: "p",
            poison: true,
        })
    });
    registry.register("clean", |_: Value| {
        Ok(Rows {
            prefix: "c",
            poison: false,
        })
    });
    let shutdown = CancellationToken::new();
    let runtime = Runtime::build(config, &registry).unwrap();
    let metrics = runtime.metrics().clone();
    let run = tokio::spawn(runtime.run(Mode::Service, shutdown.clone()));

    // Both tasks keep running: the poisoned one past its refused row, the clean one throughout.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while cdf.with(|c| !(c.rows.contains_key("p3-0") && c.rows.contains_key("c3-0"))) {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            cdf.with(|c| c.rows.clone())
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    shutdown.cancel();
    let report = run.await.unwrap().unwrap();
    assert_eq!(report.refused, 1);
    assert_eq!(report.unsent, 0);
    assert!(report.summary.failed >= 1, "the poisoned run failed");
    cdf.with(|c| {
        for key in ["p1-0", "p1-2", "p2-0", "c1-0", "c2-0", "c3-0"] {
            assert_eq!(c.rows.get(key), Some(&1), "{key}: {:?}", c.rows);
        }
        assert!(!c.rows.contains_key("bad-p1"));
    });
    let lines = dead_letters(&dead);
    assert_eq!(lines.len(), 1);
    assert_eq!(
        (lines[0]["task"].as_str(), lines[0]["item"]["key"].as_str()),
        (Some("poisoned"), Some("bad-p1"))
    );
    // Counted per queue and per task.
    let text = String::from_utf8(metrics.render()).unwrap();
    for line in [
        "extractor_upload_items_total{queue=\"raw\",result=\"rejected\"} 1",
        "extractor_task_records_total{result=\"rejected\",task=\"poisoned\"} 1",
    ] {
        assert!(text.contains(line), "{line} in\n{text}");
    }
    assert!(
        !text.contains("result=\"rejected\",task=\"clean\""),
        "{text}"
    );
    // The state moved past the refused row.
    let saved = LocalStateStore::open(&state, false).unwrap();
    assert!(
        saved
            .get("poisoned")
            .unwrap()
            .high
            .unwrap()
            .as_u64()
            .unwrap()
            >= 3
    );
}

/// Data Modeling nodes: a node CDF refuses (a bare 400) is isolated and dead-lettered, the rest
/// are written; a node written twice goes in two requests, in order, so the later write wins.
#[tokio::test]
async fn nodes_are_isolated_when_refused_and_never_sent_twice_in_one_request() {
    use extractor_runtime::queues::{Node, ViewRef};
    let cdf = FakeCdf::start(&[]).await;
    let s = setup(&cdf, "assets", 10_000);
    let view = std::sync::Arc::new(ViewRef {
        space: "cdf_cdm".into(),
        external_id: "CogniteAsset".into(),
        version: "v1".into(),
    });
    let node = |id: &str, name: &str| {
        let mut properties = serde_json::Map::new();
        properties.insert("name".into(), json!(name));
        Node {
            space: "plant".into(),
            external_id: id.into(),
            edge: None,
            view: Some(view.clone()),
            properties,
        }
    };
    let upload = s.ctx.upload();
    for (id, name) in [
        ("pump-1", "Pump 1"),
        ("bad-node", "refused"),
        ("pump-2", "Pump 2"),
        ("pump-1", "Pump 1, renamed"),
    ] {
        upload.node(node(id, name)).await.unwrap();
    }
    let refused: Refusals = upload.deliver().await.unwrap();
    assert_eq!(refused.count, 1, "{refused:?}");
    let letters = dead_letters(&s.dead_letter);
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0]["queue"], "instances");
    assert_eq!(letters[0]["item"]["externalId"], "bad-node");
    cdf.with(|state| {
        assert_eq!(state.nodes["plant:pump-1"].0["name"], "Pump 1, renamed");
        assert_eq!(state.nodes["plant:pump-1"].1, 2);
        assert_eq!(state.nodes["plant:pump-2"].1, 1);
        assert!(!state.nodes.contains_key("plant:bad-node"));
    });
    assert_eq!(metric(&s.registry, "instances", "rejected"), 1.0);
    assert_eq!(s.queues.pending(), 0);
}

/// Datapoints by `instanceId`: a CogniteTimeSeries CDF does not have is created as a node
/// through the core model's view (`type` from the value, the `new-series` name and unit) with
/// `create-missing`, and its datapoints are sent again; without it they are dead-lettered.
#[tokio::test]
async fn datapoints_by_instance_id_create_their_cognite_time_series() {
    let cdf = FakeCdf::start(&[]).await;
    let s = setup(&cdf, "sensors", 10_000);
    let space: std::sync::Arc<str> = "plant".into();
    let series = std::sync::Arc::new(extractor_runtime::queues::NewSeries {
        name: Some("Boiler 1 temperature".into()),
        unit: Some("degC".into()),
        ..Default::default()
    });
    let create = s.ctx.upload().with_policy(Policy {
        create_missing: true,
        ..Policy::default()
    });
    for t in 1..=3 {
        create
            .datapoint_of_node(
                point("boiler-1:temperature", t),
                space.clone(),
                Some(series.clone()),
            )
            .await
            .unwrap();
    }
    let text = Datapoint {
        external_id: "boiler-1:status".into(),
        timestamp: 1,
        value: DatapointValue::String("ok".into()),
    };
    create
        .datapoint_of_node(text, space.clone(), None)
        .await
        .unwrap();
    let refused = create.deliver().await.unwrap();
    assert_eq!(refused.count, 0, "{refused:?}");
    cdf.with(|state| {
        let (temperature, _) = &state.nodes["plant:boiler-1:temperature"];
        assert_eq!(
            *temperature,
            json!({"type": "numeric", "isStep": false, "name": "Boiler 1 temperature", "sourceUnit": "degC"})
        );
        assert_eq!(state.nodes["plant:boiler-1:status"].0["type"], "string");
        assert_eq!(state.datapoints["plant:boiler-1:temperature"], [1, 2, 3]);
        assert_eq!(state.datapoints["plant:boiler-1:status"], [1]);
    });

    // Without create-missing: refused, named by instance id, dead-lettered.
    let plain = s.ctx.upload();
    plain
        .datapoint_of_node(point("boiler-9:temperature", 5), space, None)
        .await
        .unwrap();
    let refused = plain.deliver().await.unwrap();
    assert_eq!(refused.count, 1);
    let letters = dead_letters(&s.dead_letter);
    assert_eq!(
        letters.last().unwrap()["item"]["instanceId"],
        json!({"space": "plant", "externalId": "boiler-9:temperature"})
    );
}

/// A refusal whose message is a MiB long (a proxy's page, a hostile peer) reaches the
/// dead-letter line and the run's error cut to a few KiB, once per refused item.
#[tokio::test]
async fn a_huge_error_message_is_cut_before_it_is_kept() {
    let cdf = FakeCdf::start(&[]).await;
    let s = setup(&cdf, "plant", 100);
    let message = "y".repeat(1 << 20);
    let body = json!({"error": {"code": 400, "message": message}}).to_string();
    cdf.with(|c| c.body_override = Some(std::sync::Arc::new(body.into_bytes())));
    let upload = s.ctx.upload();
    upload.raw(row(&format!("{BAD}1"))).await.unwrap();
    let e = upload.settled().await.unwrap_err().to_string();
    assert!(e.len() < 4096, "{} bytes", e.len());
    let lines = dead_letters(&s.dead_letter);
    assert_eq!(lines.len(), 1);
    let kept = lines[0]["message"].as_str().unwrap();
    assert!(kept.len() < 2100, "{} bytes", kept.len());
    assert!(kept.ends_with("bytes cut)"), "{}", &kept[kept.len() - 40..]);
}
