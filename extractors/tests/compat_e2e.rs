//! python-extractor-utils' `cognite:` keys through the built binary, against the stateful fake
//! CDF: `data-set` (by external id, looked up once), `external-id-prefix` and
//! `security-categories` land on what the runtime creates and writes (time series, events,
//! classic files), and `extraction-pipeline: {id}` reports to the pipeline it names.

use std::path::{Path, PathBuf};

mod util;

#[path = "../../runtime/tests/support/fake_cdf.rs"]
mod fake_cdf;

use fake_cdf::FakeCdf;
use util::{bin, repo, run};

/// A data folder with the delivery example's readings and alarms, and a file to upload.
fn data(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    std::fs::create_dir_all(data.join("files")).unwrap();
    for f in ["readings.csv", "alarms.csv"] {
        std::fs::copy(
            repo().join("config-examples/delivery-data").join(f),
            data.join(f),
        )
        .unwrap();
    }
    std::fs::write(data.join("files/report.txt"), b"monthly report").unwrap();
    data
}

/// A config in python-extractor-utils' shape with `cognite_keys` under `cognite:`, a csv task
/// creating time series, one writing events and a files task.
fn config(dir: &Path, cdf: &FakeCdf, cognite_keys: &str) -> PathBuf {
    let data = data(dir);
    let text = format!(
        r#"cognite:
  project: demo
  host: {uri}
  idp_authentication:
    client_id: c
    secret: s
    token_url: {uri}/token
    scopes: [s]
{cognite_keys}
tasks:
  - name: readings
    type: csv
    schedule: {{type: interval, expression: 1h}}
    config:
      path: {data}
      glob: "readings*.csv"
      types: {{value: float, time: timestamp}}
      destination:
        type: datapoints
        external-id: "{{sensor}}:temperature"
        timestamp: time
        value: value
        create-missing: true
  - name: alarms
    type: csv
    schedule: {{type: interval, expression: 1h}}
    config:
      path: {data}
      glob: "alarms*.csv"
      types: {{time: timestamp}}
      destination:
        type: events
        external-id: "alarm:{{sensor}}@{{time}}"
        start-time: time
  - name: reports
    type: files
    schedule: {{type: interval, expression: 1h}}
    config: {{path: {files}, target: {{type: classic}}}}
"#,
        uri = cdf.uri(),
        data = data.display(),
        files = data.join("files").display(),
    );
    util::write_config(dir, &text)
}

async fn run_once(config: &Path) -> (i32, String) {
    let mut cmd = bin();
    cmd.args(["run", "--once", "-c"]).arg(config);
    let (code, _, stderr) = tokio::task::spawn_blocking(move || run(&mut cmd))
        .await
        .unwrap();
    (code, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_set_prefix_and_security_categories_land_on_what_is_created() {
    // boiler-1's series exists (under the prefix); boiler-7's readings are out of range.
    let cdf = FakeCdf::start(&["site-a:boiler-1:temperature"]).await;
    cdf.with(|c| {
        c.data_sets.insert("plant-data".into(), 991);
        c.pipelines.insert(77, "plant-pipeline".into());
    });
    let dir = tempfile::tempdir().unwrap();
    let config = config(
        dir.path(),
        &cdf,
        "  data_set:\n    external_id: plant-data\n  external_id_prefix: 'site-a:'\n  security_categories: [3, 4]\n  extraction_pipeline:\n    id: 77",
    );
    let (code, stderr) = run_once(&config).await;
    assert_eq!(code, 1, "boiler-7 is refused: {stderr}");
    cdf.with(|c| {
        assert_eq!(c.requests["/datasets/byids"], 1, "looked up once");
        assert_eq!(c.requests["/extpipes/byids"], 1);
        let created = &c.series["site-a:boiler-2:temperature"];
        assert_eq!(created["dataSetId"], 991, "{created}");
        assert_eq!(created["securityCategories"], serde_json::json!([3, 4]));
        assert_eq!(c.datapoints["site-a:boiler-1:temperature"].len(), 3);
        assert!(
            c.series.keys().all(|k| k.starts_with("site-a:")),
            "{:?}",
            c.series.keys()
        );
        assert_eq!(c.events.len(), 2);
        for (id, event) in &c.events {
            assert!(id.starts_with("site-a:alarm:"), "{id}");
            assert_eq!(event["dataSetId"], 991, "{event}");
        }
        let file = &c.files["site-a:report.txt"].meta;
        assert_eq!(file["dataSetId"], 991, "{file}");
        assert_eq!(file["securityCategories"], serde_json::json!([3, 4]));
        assert!(
            c.pipeline_runs
                .iter()
                .all(|r| r["externalId"] == "plant-pipeline"),
            "{:?}",
            c.pipeline_runs
        );
        assert!(!c.pipeline_runs.is_empty());
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_set_that_does_not_exist_stops_the_start_naming_it() {
    let cdf = FakeCdf::start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &cdf, "  data-set-external-id: nowhere");
    let (code, stderr) = run_once(&config).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("cognite.data-set")
            && stderr.contains("external id `nowhere` does not exist"),
        "{stderr}"
    );
    // The older spelling is read, with a warning naming the newer one.
    assert!(
        stderr.contains("write `data-set: {external-id: ..}`"),
        "{stderr}"
    );
    cdf.with(|c| {
        assert!(c.series.is_empty() && c.events.is_empty() && c.files.is_empty());
        assert!(!c.requests.contains_key("/timeseries/data"));
    });
}

/// `metrics.cognite` as python-extractor-utils writes it: each metric becomes a time series
/// `<prefix><name>{labels}` created once (named, described by its help text, under the asset,
/// in the data set), and each run's values arrive as datapoints at the end of `--once`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_become_time_series_created_once_with_datapoints_each_run() {
    let cdf = FakeCdf::start(&["site-a:boiler-1:temperature"]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(
        dir.path(),
        &cdf,
        "  external-id-prefix: 'site-a:'\nmetrics:\n  cognite:\n    external_id_prefix: 'extractor-metrics:'\n    asset_name: Plant extractor\n    asset_external_id: plant-extractor\n    data_set:\n      id: 55\n    push_interval: 1h\nlogger:\n  metrics: true\n  console:\n    level: INFO",
    );
    let (code, stderr) = run_once(&config).await;
    assert_eq!(code, 1, "boiler-7 is refused: {stderr}");
    let runs = "extractor-metrics:extractor_task_runs_total{result=\"failure\",task=\"readings\"}";
    let created = cdf.with(|c| {
        let asset = &c.assets["plant-extractor"];
        assert_eq!(asset["name"], "Plant extractor");
        let series = &c.series[runs];
        assert_eq!(
            series["name"],
            runs.trim_start_matches("extractor-metrics:"),
            "{series}"
        );
        assert_eq!(series["assetId"], asset["id"], "{series}");
        assert_eq!(series["dataSetId"], 55, "its own data set: {series}");
        assert!(
            series["description"]
                .as_str()
                .is_some_and(|d| !d.is_empty()),
            "the help text: {series}"
        );
        assert_eq!(c.datapoints[runs].len(), 1, "one value per push");
        // logger.metrics: the log messages counted by level, pushed with the rest.
        assert!(
            c.series
                .contains_key("extractor-metrics:extractor_log_messages_total{level=\"info\"}"),
            "{:?}",
            c.series
                .keys()
                .filter(|k| k.contains("log"))
                .collect::<Vec<_>>()
        );
        assert!(
            !c.series
                .keys()
                .any(|k| k.starts_with("site-a:extractor-metrics")),
            "cognite.external-id-prefix does not apply to the metrics' own prefix"
        );
        c.series
            .keys()
            .filter(|k| k.starts_with("extractor-metrics:"))
            .count()
    });
    assert!(created > 10, "{created} series");

    // A second run: nothing created again (the asset neither), one more value each.
    let (code, stderr) = run_once(&config).await;
    assert_eq!(code, 1, "{stderr}");
    cdf.with(|c| {
        assert_eq!(c.assets.len(), 1);
        assert_eq!(c.requests["/assets"], 2, "asked twice, created once");
        assert_eq!(c.datapoints[runs].len(), 2);
        let now = c
            .series
            .keys()
            .filter(|k| k.starts_with("extractor-metrics:"))
            .count();
        assert!(now >= created, "{now} {created}");
    });
}
