//! The delivery contract through the built binary: `config-examples/delivery.yaml` against a
//! stateful fake CDF that refuses as CDF does. One `--once` run with readings of a known, an
//! unknown and a bad sensor, a RAW task and an events task: exit 1 naming the refused ids; the
//! good readings, rows and events arrive; the unknown series is created (`create-missing:
//! true`) or dead-lettered (`false`); the bad reading is isolated; replayed events are updated.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

mod util;

#[path = "../../runtime/tests/support/fake_cdf.rs"]
mod fake_cdf;

use fake_cdf::FakeCdf;
use util::{bin, repo, run};

struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Files {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        for f in ["readings.csv", "alarms.csv"] {
            std::fs::copy(
                repo().join("config-examples/delivery-data").join(f),
                data.join(f),
            )
            .unwrap();
        }
        Files { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn dead_letters(&self) -> Vec<Value> {
        std::fs::read_to_string(self.path("refused.ndjson"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// Runs `run --once -c config` (plus `extra` arguments) against `cdf` with `files`.
async fn run_once(cdf: &FakeCdf, files: &Files, config: &Path, extra: &[&str]) -> (i32, String) {
    let mut cmd: Command = bin();
    cmd.args(["run", "--once", "-c"])
        .arg(config)
        .args(extra)
        .current_dir(repo())
        .env("COGNITE_BASE_URL", cdf.uri())
        .env("COGNITE_TOKEN_URL", format!("{}/token", cdf.uri()))
        .env("COGNITE_PROJECT", "demo")
        .env("STATE_FILE", files.path("state.json"))
        .env("DEAD_LETTER", files.path("refused.ndjson"))
        .env("DATA_DIR", files.path("data"));
    let (code, _, stderr) = tokio::task::spawn_blocking(move || run(&mut cmd))
        .await
        .unwrap();
    (code, stderr)
}

fn example() -> PathBuf {
    repo().join("config-examples/delivery.yaml")
}

/// The example with `create-missing: false` (and without its `new-series` block), in `files`.
fn without_create_missing(files: &Files) -> PathBuf {
    let example = std::fs::read_to_string(example()).unwrap();
    let new_series = example.find("        # How a created series").unwrap();
    let end = example.find("metadata: [sensor]\n").unwrap() + "metadata: [sensor]\n".len();
    let text = format!("{}{}", &example[..new_series], &example[end..])
        .replace("create-missing: true", "create-missing: false");
    let config = files.path("delivery.yaml");
    std::fs::write(&config, text).unwrap();
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_items_never_block_the_rest_and_the_run_names_them() {
    let cdf = FakeCdf::start(&["boiler-1:temperature"]).await;
    let files = Files::new();
    let (code, stderr) = run_once(&cdf, &files, &example(), &[]).await;

    assert_eq!(code, 1, "{stderr}");
    // No logger section: the failure is on stderr, naming the refused id and where it went.
    assert!(
        stderr.contains("CDF refused 1 item(s) of this task: boiler-7:temperature")
            && stderr.contains("refused.ndjson"),
        "{stderr}"
    );
    assert!(
        stderr.contains("1 item(s) were refused by CDF (written to"),
        "{stderr}"
    );
    cdf.with(|c| {
        assert_eq!(c.datapoints["boiler-1:temperature"].len(), 3);
        assert_eq!(
            c.datapoints["boiler-2:temperature"].len(),
            2,
            "the unknown series was created and its readings sent again"
        );
        assert_eq!(
            c.series["boiler-2:temperature"],
            serde_json::json!({"externalId": "boiler-2:temperature", "name": "boiler-2 temperature",
                "isString": false, "unit": "C", "metadata": {"sensor": "boiler-2"}})
        );
        assert!(!c.datapoints.contains_key("boiler-7:temperature"));
        assert_eq!(c.rows.len(), 6, "every reading as a RAW row: {:?}", c.rows);
        assert!(c.rows.values().all(|n| *n == 1));
        assert_eq!(c.events.len(), 2);
    });
    let refused = files.dead_letters();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["task"], "readings");
    assert_eq!(refused[0]["status"], 400);
    assert_eq!(refused[0]["item"]["externalId"], "boiler-7:temperature");
    assert_eq!(refused[0]["item"]["value"], 1e101);

    // The state moved past the refused reading: a second run sends nothing again.
    let before = cdf.requests("/timeseries/data");
    let (code, stderr) = run_once(&cdf, &files, &example(), &[]).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(cdf.requests("/timeseries/data"), before);

    // A replay (state reset): the alarms CDF has already are updated, not refused.
    let (code, stderr) = run_once(&cdf, &files, &example(), &["--reset-state"]).await;
    assert_eq!(code, 1, "boiler-7 is refused again: {stderr}");
    cdf.with(|c| {
        assert_eq!(c.event_updates, 2, "both alarms updated");
        assert_eq!(c.events.len(), 2);
        assert_eq!(
            c.rows.values().sum::<usize>(),
            12,
            "RAW rows upserted again"
        );
    });
    assert_eq!(files.dead_letters().len(), 2, "only boiler-7, once per run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_create_missing_the_unknown_series_goes_to_the_dead_letter_file() {
    let cdf = FakeCdf::start(&["boiler-1:temperature"]).await;
    let files = Files::new();
    let config = without_create_missing(&files);
    let (code, stderr) = run_once(&cdf, &files, &config, &[]).await;

    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("CDF refused 3 item(s) of this task: boiler-2:temperature, boiler-7:temperature (3 items)"),
        "{stderr}"
    );
    cdf.with(|c| {
        assert_eq!(c.datapoints["boiler-1:temperature"].len(), 3);
        assert!(!c.series.contains_key("boiler-2:temperature"));
        assert_eq!(c.rows.len(), 6);
    });
    let refused = files.dead_letters();
    let ids: Vec<&str> = refused
        .iter()
        .map(|r| r["item"]["externalId"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids.iter().filter(|i| **i == "boiler-2:temperature").count(),
        2
    );
    assert!(ids.contains(&"boiler-7:temperature"));
    let missing = refused
        .iter()
        .find(|r| r["item"]["externalId"] == "boiler-2:temperature")
        .unwrap();
    assert!(
        missing["message"]
            .as_str()
            .unwrap()
            .contains("create-missing is off"),
        "{missing}"
    );
}

/// kill -9 while requests are in flight (CDF applied them, the answers never came), then a
/// restart: every good item arrives, the refused one is dead-lettered once, and replayed events
/// are updated, not duplicated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_with_items_in_flight_loses_nothing_and_duplicates_no_event() {
    let cdf = FakeCdf::start(&["boiler-1:temperature"]).await;
    cdf.with(|c| c.delay = std::time::Duration::from_secs(60));
    let files = Files::new();
    let mut cmd = bin();
    cmd.args(["run", "-c"])
        .arg(example())
        .current_dir(repo())
        .env("COGNITE_BASE_URL", cdf.uri())
        .env("COGNITE_TOKEN_URL", format!("{}/token", cdf.uri()))
        .env("STATE_FILE", files.path("state.json"))
        .env("DEAD_LETTER", files.path("refused.ndjson"))
        .env("DATA_DIR", files.path("data"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while cdf.requests("/timeseries/data") + cdf.requests("/raw/") + cdf.requests("/events") < 3 {
        assert!(std::time::Instant::now() < deadline, "no requests");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    child.kill().unwrap(); // SIGKILL, by PID
    child.wait().unwrap();
    assert!(files.dead_letters().is_empty());

    cdf.with(|c| c.delay = std::time::Duration::ZERO);
    let (code, stderr) = run_once(&cdf, &files, &example(), &[]).await;
    assert_eq!(code, 1, "{stderr}");
    cdf.with(|c| {
        for (series, n) in [("boiler-1:temperature", 3), ("boiler-2:temperature", 2)] {
            let mut seen = c.datapoints.get(series).cloned().unwrap_or_default();
            seen.dedup();
            seen.sort();
            seen.dedup();
            assert_eq!(seen.len(), n, "{series}: {:?}", c.datapoints);
        }
        assert_eq!(c.rows.len(), 6);
        assert_eq!(
            c.events.len(),
            2,
            "replayed alarms were updated, not duplicated"
        );
    });
    let refused = files.dead_letters();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["item"]["externalId"], "boiler-7:temperature");
}

/// Data Modeling through the binary against the fake CDF: the instances example's assets become
/// nodes, and datapoints by `instanceId` create their CogniteTimeSeries nodes (`create-missing`)
/// and then arrive, every reading once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_modeling_nodes_and_their_time_series_arrive() {
    let cdf = FakeCdf::start(&[]).await;
    let files = Files::new();
    let config = files.path("dm.yaml");
    std::fs::write(
        &config,
        format!(
            "version: 1
cognite:
  project: demo
  host: {uri}
  idp-authentication: {{client-id: c, secret: s, token-url: '{uri}/token', scopes: [s]}}
tasks:
  - name: assets
    type: csv
    schedule: {{type: interval, expression: 1h}}
    config:
      path: config-examples/instances-data
      glob: assets.csv
      destination:
        type: instances
        space: plant
        view: {{space: cdf_cdm, external-id: CogniteAsset, version: v1}}
        external-id: id
        properties: {{name: name, parent: {{space: plant, external-id: parent}}}}
  - name: temperatures
    type: csv
    schedule: {{type: interval, expression: 1h}}
    config:
      path: config-examples/quickstart-data
      glob: readings-*.csv
      types: {{temperature: float, time: timestamp}}
      destination:
        type: datapoints
        instance-id: {{space: plant, external-id: '{{sensor}}:temperature'}}
        timestamp: time
        value: temperature
        create-missing: true
        new-series: {{name: '{{sensor}} temperature', unit: \"'degC'\"}}
",
            uri = cdf.uri()
        ),
    )
    .unwrap();
    let (code, stderr) = run_once(&cdf, &files, &config, &[]).await;
    assert_eq!(code, 0, "{stderr}");
    cdf.with(|state| {
        assert_eq!(
            state.nodes["plant:boiler-1"].0["parent"]["externalId"],
            "boiler-house"
        );
        assert!(state.nodes["plant:plant-oslo"].0.get("parent").is_none());
        let (series, _) = &state.nodes["plant:boiler-2:temperature"];
        assert_eq!(series["type"], "numeric");
        assert_eq!(series["name"], "boiler-2 temperature");
        assert_eq!(series["sourceUnit"], "degC");
        let points: usize = ["plant:boiler-1:temperature", "plant:boiler-2:temperature"]
            .iter()
            .map(|s| state.datapoints[*s].len())
            .sum();
        assert_eq!(points, 10, "the two files' 10 readings, each once");
    });
}

/// `replay` after the cause is fixed: the unknown series' readings were dead-lettered
/// (`create-missing: false`); once the series exists, a replay of the file sends them, and the
/// out-of-range reading, refused again, goes to a new file beside it (the file itself is left
/// as it is).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_sends_what_was_refused_once_the_cause_is_fixed() {
    let cdf = FakeCdf::start(&["boiler-1:temperature"]).await;
    let files = Files::new();
    let config = without_create_missing(&files);
    let (code, stderr) = run_once(&cdf, &files, &config, &[]).await;
    assert_eq!(code, 1, "{stderr}");
    let dead = files.path("refused.ndjson");
    let before = std::fs::read_to_string(&dead).unwrap();
    assert_eq!(files.dead_letters().len(), 3);

    // The cause is fixed: the series exists now.
    cdf.with(|c| {
        c.series
            .insert("boiler-2:temperature".into(), serde_json::json!({}));
    });
    let mut cmd = bin();
    cmd.args(["replay", "-c"])
        .arg(&config)
        .arg(&dead)
        .current_dir(repo())
        .env("COGNITE_BASE_URL", cdf.uri())
        .env("COGNITE_TOKEN_URL", format!("{}/token", cdf.uri()));
    let (code, out, err) = tokio::task::spawn_blocking(move || run(&mut cmd))
        .await
        .unwrap();
    assert_eq!(code, 1, "boiler-7 is refused again: {out}\n{err}");
    assert!(
        out.contains("replayed 3 item(s)") && out.contains("2 accepted, 1 refused again"),
        "{out}"
    );
    cdf.with(|c| assert_eq!(c.datapoints["boiler-2:temperature"].len(), 2));
    assert_eq!(
        std::fs::read_to_string(&dead).unwrap(),
        before,
        "the file is only read"
    );
    let again: Vec<PathBuf> = std::fs::read_dir(files.dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains(".again-"))
        .collect();
    assert_eq!(again.len(), 1, "{again:?}");
    let lines = std::fs::read_to_string(&again[0]).unwrap();
    assert_eq!(lines.lines().count(), 1);
    assert!(lines.contains("boiler-7:temperature"), "{lines}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_disk_buffer_a_refused_item_is_dead_lettered_under_its_task() {
    let cdf = FakeCdf::start(&["boiler-1:temperature"]).await;
    let files = Files::new();
    let example = std::fs::read_to_string(example()).unwrap();
    let config = files.path("delivery-disk.yaml");
    std::fs::write(
        &config,
        example.replace(
            "upload-queue:\n",
            &format!(
                "upload-queue:\n  buffer: {{type: disk, path: '{}'}}\n",
                files.path("buffer").display()
            ),
        ),
    )
    .unwrap();
    let (_, stderr) = run_once(&cdf, &files, &config, &[]).await;
    cdf.with(|c| assert_eq!(c.datapoints["boiler-1:temperature"].len(), 3));
    // The run ended once its items were on disk; the refusal is logged and dead-lettered
    // naming the task that queued it (kept with the record on disk).
    let refused = files.dead_letters();
    assert_eq!(refused.len(), 1, "{refused:?}\n{stderr}");
    assert_eq!(refused[0]["task"], "readings");
    assert_eq!(refused[0]["item"]["externalId"], "boiler-7:temperature");
    assert!(
        stderr.contains("task=\"readings\""),
        "the log names the task: {stderr}"
    );
}

/// A config whose one csv task reads `data/big.csv` into RAW with a state store, the queue
/// holding `queue` items and keeping 3 requests in flight; `connection` is put in `cognite:`.
fn long_read(files: &Files, cdf: &FakeCdf, rows: usize, queue: usize, connection: &str) -> PathBuf {
    use std::io::Write;
    let mut out = std::fs::File::create(files.path("data/big.csv")).unwrap();
    writeln!(out, "id,value").unwrap();
    for i in 0..rows {
        writeln!(out, "r{i},{i}").unwrap();
    }
    let config = files.path("long.yaml");
    std::fs::write(
        &config,
        format!(
            "{header}  connection: {{{connection}}}
state-store: {{local: {{path: {state}}}}}
upload-queue: {{max-queue-size: {queue}, max-in-flight: 3}}
tasks:
  - name: bulk
    type: csv
    schedule: {{type: interval, expression: 1h}}
    config:
      path: {data}
      glob: big.csv
      destination: {{type: raw, database: db, table: t, key: id}}
",
            header = util::cognite_header(&cdf.uri()),
            state = files.path("state.json").display(),
            data = files.path("data").display(),
        ),
    )
    .unwrap();
    config
}

/// The csv task's progress of `big.csv` in the state file (`None` before any).
fn progress(files: &Files) -> Option<Value> {
    let text = std::fs::read_to_string(files.path("state.json")).ok()?;
    let state: Value = serde_json::from_str(&text).unwrap();
    state["states"]
        .as_object()?
        .iter()
        .find(|(k, _)| k.ends_with("big.csv"))
        .map(|(_, v)| v.clone())
}

/// A read longer than the queue is sent while it is read (several requests in flight,
/// answered slowly): every row arrives once, and the file's watermark says it is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_read_is_sent_while_it_is_read_and_arrives_once() {
    let cdf = FakeCdf::start(&[]).await;
    cdf.with(|s| s.delay = std::time::Duration::from_millis(100));
    let files = Files::new();
    let config = long_read(&files, &cdf, 40_000, 30_000, "max-retries: 0");
    let (code, stderr) = run_once(&cdf, &files, &config, &[]).await;
    assert_eq!(code, 0, "{stderr}");
    cdf.with(|s| {
        assert_eq!(s.rows.len(), 40_000, "every row arrived");
        assert!(s.rows.values().all(|n| *n == 1), "each once");
        // 2 * 30 000 / (3 * 3) = 6 666 rows a request.
        assert_eq!(s.requests["/raw/dbs/db/tables/t/rows"], 7);
    });
    let progress = progress(&files).expect("the file's progress is stored");
    assert_eq!(progress["high"]["rows"], 40_000, "{progress}");
    assert_eq!(progress["high"]["done"], true, "{progress}");
}

/// CDF down during a long read: the run fails (it does not wait for ever on a full queue) and
/// the file's watermark does not move past what CDF settled (nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_read_while_cdf_is_down_fails_and_moves_no_watermark() {
    let cdf = FakeCdf::start(&[]).await;
    cdf.with(|s| s.down = true);
    let files = Files::new();
    let config = long_read(&files, &cdf, 40_000, 20_000, "max-retries: 0");
    let (code, stderr) = run_once(&cdf, &files, &config, &[]).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("503"),
        "the error names CDF's answer: {stderr}"
    );
    assert!(cdf.with(|s| s.rows.is_empty()));
    let progress = progress(&files);
    assert!(
        progress.as_ref().is_none_or(|p| p["high"]["rows"] == 0),
        "no progress past what CDF settled: {progress:?}"
    );
}
