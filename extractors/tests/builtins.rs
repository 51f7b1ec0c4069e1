//! The built-in extractors' example configs, run by the real binary; and a kill -9 in the middle
//! of an upload that loses nothing.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

mod util;

use util::{bin, repo, run};

/// Runs the binary off the async runtime (the fake servers live on it).
async fn run_bin(mut cmd: std::process::Command) -> (i32, String, String) {
    tokio::task::spawn_blocking(move || run(&mut cmd))
        .await
        .unwrap()
}

fn ndjson_items(stdout: &str, endpoint: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .filter(|l| l["endpoint"] == endpoint)
        .flat_map(|l| l["body"]["items"].as_array().unwrap().clone())
        .collect()
}

/// `config-examples/http.yaml` against a local API with two pages: datapoints on stdout, the
/// watermark in the state file, and `since` sent on the next run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_example_runs() {
    let api = MockServer::start().await;
    let reading = |id: &str, q: &str, t: &str, v: f64, updated: &str| json!({"sensor": {"id": id, "quantity": q}, "time": t, "value": v, "updatedAt": updated});
    Mock::given(method("GET"))
        .and(path("/v1/readings"))
        .and(header("authorization", "Bearer api-token-123"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "data": [reading("p-1", "pressure", "2026-11-27T10:00:00Z", 1.5, "2026-11-27T10:00:05Z")],
            "links": {"next": "/v1/readings/page/2"},
        })))
        .mount(&api)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/readings/page/2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "data": [
                reading("p-1", "pressure", "2026-11-27T10:01:00Z", 1.75, "2026-11-27T10:01:05Z"),
                reading("t-9", "temperature", "2026-11-27T10:01:00Z", 20.0, "2026-11-27T10:01:02Z"),
            ],
            "links": {"next": null},
        })))
        .mount(&api)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let command = || {
        let mut cmd = bin();
        cmd.args(["run", "--once", "-c"])
            .arg(repo().join("config-examples/http.yaml"))
            .env("API_URL", format!("{}/v1/readings", api.uri()))
            .env("API_TOKEN", "api-token-123")
            .current_dir(dir.path());
        cmd
    };
    let (code, stdout, stderr) = run_bin(command()).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("api-token-123"), "{stderr}");
    let items = ndjson_items(&stdout, "/timeseries/data");
    assert_eq!(
        items,
        [
            json!({"externalId": "p-1:pressure", "datapoints": [
                {"timestamp": 1_795_773_600_000_i64, "value": 1.5},
                {"timestamp": 1_795_773_660_000_i64, "value": 1.75}]}),
            json!({"externalId": "t-9:temperature", "datapoints": [
                {"timestamp": 1_795_773_660_000_i64, "value": 20.0}]}),
        ]
    );
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("http-state.json")).unwrap())
            .unwrap();
    assert_eq!(
        state["states"]["api-readings"]["high"], "2026-11-27T10:01:05Z",
        "{state}"
    );

    let (code, _, stderr) = run_bin(command()).await;
    assert_eq!(code, 0, "{stderr}");
    let requests = api.received_requests().await.unwrap();
    let first_pages: Vec<_> = requests
        .iter()
        .filter(|r| r.url.path() == "/v1/readings")
        .map(|r| r.url.query().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        first_pages,
        [
            "limit=500&since=2026-01-01T00%3A00%3A00Z",
            "limit=500&since=2026-11-27T10%3A01%3A05Z"
        ]
    );
}

/// `config-examples/postgres.yaml` against the real PostgreSQL server (see the postgres
/// extractor's tests for `EXTRACTOR_TEST_POSTGRES`): every row, then only the new ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_example_runs() {
    let conn = match std::env::var("EXTRACTOR_TEST_POSTGRES") {
        Ok(s) if !s.is_empty() => s,
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true but EXTRACTOR_TEST_POSTGRES is not set")
        }
        _ => {
            eprintln!("skipped: no PostgreSQL server (set EXTRACTOR_TEST_POSTGRES)");
            return;
        }
    };
    let (db, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    db.batch_execute(
        "DROP TABLE IF EXISTS work_orders;
         CREATE TABLE work_orders (id serial PRIMARY KEY, site text, description text,
             created_at timestamptz, priority int);
         INSERT INTO work_orders (site, description, created_at, priority)
         SELECT 'site-' || (i % 3), 'order ' || i, '2026-11-01'::timestamptz + i * interval '1 minute', i % 5
         FROM generate_series(1, 25000) AS i;",
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let command = || {
        let mut cmd = bin();
        cmd.args(["run", "--once", "-c"])
            .arg(repo().join("config-examples/postgres.yaml"))
            .env("POSTGRES_CONNECTION", &conn)
            .current_dir(dir.path());
        cmd
    };
    let (code, stdout, stderr) = run_bin(command()).await;
    assert_eq!(code, 0, "{stderr}");
    let password = conn
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("password="))
        .unwrap_or("no password");
    assert!(!stderr.contains(password) && !stdout.contains(password));
    let rows = ndjson_items(&stdout, "/raw/dbs/{db}/tables/{table}/rows");
    assert_eq!(rows.len(), 25_000);
    assert_eq!(
        rows[0],
        json!({"key": "1", "columns": {"id": 1, "site": "site-1", "description": "order 1",
            "created_at": "2026-11-01T00:01:00Z", "priority": 1}})
    );

    db.batch_execute(
        "INSERT INTO work_orders (site, description, created_at, priority)
         VALUES ('site-9', 'new', now(), 1), ('site-9', 'newer', now(), 2)",
    )
    .await
    .unwrap();
    let (code, stdout, stderr) = run_bin(command()).await;
    assert_eq!(code, 0, "{stderr}");
    let keys: Vec<Value> = ndjson_items(&stdout, "/raw/dbs/{db}/tables/{table}/rows")
        .iter()
        .map(|r| r["key"].clone())
        .collect();
    assert_eq!(keys, [json!("25001"), json!("25002")]);
    db.batch_execute("DROP TABLE work_orders").await.unwrap();
}

/// A fake CDF: a token endpoint, and RAW rows that take `delay` to be accepted.
async fn slow_cdf(delay: Duration) -> MockServer {
    let cdf = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"access_token": "t", "token_type": "Bearer", "expires_in": 3600}),
        ))
        .mount(&cdf)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/v1/projects/demo/raw/dbs/db/tables/t/rows"))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(json!({}))
                .set_delay(delay),
        )
        .mount(&cdf)
        .await;
    cdf
}

fn keys_received(requests: &[wiremock::Request]) -> Vec<u64> {
    requests
        .iter()
        .filter(|r| r.url.path().ends_with("/rows"))
        .flat_map(|r| {
            let body = util::json_body(r);
            body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["key"].as_str().unwrap().parse::<u64>().unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn csv_config(dir: &Path, cdf: &str) -> std::path::PathBuf {
    let text = format!(
        "version: 1
cognite:
  project: demo
  host: {cdf}
  idp-authentication: {{client-id: c, secret: s, token-url: '{cdf}/token', scopes: [x]}}
state-store:
  local: {{path: '{state}'}}
tasks:
  - name: files
    type: csv
    schedule: {{type: interval, expression: 1h}}
    config:
      path: '{data}'
      batch-size: 10000
      destination: {{type: raw, database: db, table: t, key: id}}
",
        state = dir.join("state.json").display(),
        data = dir.join("in").display(),
    );
    let path = dir.join("config.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// kill -9 while CDF is still answering the first batch's upload: the state file never says
/// more than CDF accepted, and the next run delivers every row (at-least-once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_an_upload_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("in")).unwrap();
    let mut text = String::from("id,value\n");
    for i in 1..=30_000 {
        text.push_str(&format!("{i},{}\n", i % 7));
    }
    std::fs::write(dir.path().join("in/rows.csv"), text).unwrap();

    let slow = slow_cdf(Duration::from_secs(30)).await;
    let config = csv_config(dir.path(), &slow.uri());
    let mut child = bin()
        .args(["run", "-c"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        let requests = slow.received_requests().await.unwrap();
        if requests.iter().any(|r| r.url.path().ends_with("/rows")) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no upload started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap(); // SIGKILL, by the child's PID
    child.wait().unwrap();
    let state = std::fs::read_to_string(dir.path().join("state.json")).unwrap_or_default();
    assert!(
        !state.contains("\"rows\""),
        "nothing was accepted, so no progress may be stored: {state}"
    );

    let fast = slow_cdf(Duration::ZERO).await;
    let config = csv_config(dir.path(), &fast.uri());
    let mut cmd = bin();
    cmd.args(["run", "--once", "-c"]).arg(&config);
    let (code, _, stderr) = run_bin(cmd).await;
    assert_eq!(code, 0, "{stderr}");
    let mut keys = keys_received(&fast.received_requests().await.unwrap());
    keys.sort_unstable();
    assert_eq!(keys, (1..=30_000).collect::<Vec<_>>(), "every row, once");
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("state.json")).unwrap())
            .unwrap();
    let mark = state["states"]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap()["high"]
        .clone();
    assert_eq!(
        (mark["rows"].clone(), mark["done"].clone()),
        (json!(30_000), json!(true)),
        "{state}"
    );
}

/// Under a 1 GB address-space cap (`ulimit -v`) and 128 file descriptors, in one `--once` run:
/// a 600 MiB csv line, a 1 GiB http answer, a `self -> .` symlink under `**`, an unreadable
/// file, and a command that prints a non-UTF-8 byte and 600 MiB without a newline and leaves a
/// child behind. Each bad input is refused with an error naming it, everything else goes on,
/// and the process ends normally (exit 1). Without the limits it aborted (exit 134), and again
/// after every restart; the symlink hung it; the command died of SIGPIPE or held the run open.
#[test]
fn huge_inputs_under_a_memory_cap_are_refused_not_fatal() {
    use std::io::{Read, Write};
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    {
        let mut f =
            std::io::BufWriter::new(std::fs::File::create(data.join("1-huge.csv")).unwrap());
        f.write_all(b"id,v\nr1,1\nr2,").unwrap();
        let block = vec![b'x'; 1 << 20];
        for _ in 0..600 {
            f.write_all(&block).unwrap();
        }
        f.write_all(b"\nr3,3\n").unwrap();
    }
    std::fs::write(data.join("2-fine.csv"), "id,v\nf1,1\n").unwrap();
    std::os::unix::fs::symlink(&data, data.join("self")).unwrap();
    // Reading /proc/self/mem at offset 0 fails (EIO) even for root, as a bad disk would.
    std::os::unix::fs::symlink("/proc/self/mem", data.join("3-unreadable.csv")).unwrap();
    let script = tmp.path().join("noisy.sh");
    std::fs::write(
        &script,
        "printf 'caf\\351\\n'\nhead -c 629145600 /dev/zero | tr '\\0' x\necho\n(sleep 60 &)\necho end\n",
    )
    .unwrap();

    // An endless JSON answer, chunked (no Content-Length), until the client hangs up.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { return };
            std::thread::spawn(move || {
                let mut request = [0u8; 4096];
                let _ = s.read(&mut request);
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
                );
                let chunk = vec![b' '; 1 << 20];
                for _ in 0..1024 {
                    let frame =
                        [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
                    if s.write_all(&frame).is_err() {
                        return;
                    }
                }
            });
        }
    });

    let config = tmp.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "version: 1\ncognite: {{project: demo, dry-run: true}}\ntasks:\n\
             \x20 - {{name: files, type: csv, schedule: {{type: interval, expression: 1h}}, config: {{path: '{}', glob: '**/*.csv', destination: {{type: raw, database: d, table: t, key: id}}}}}}\n\
             \x20 - {{name: api, type: http, schedule: {{type: interval, expression: 1h}}, config: {{url: 'http://127.0.0.1:{port}/huge', destination: {{type: raw, database: d, table: t, key: id}}}}}}\n\
             \x20 - {{name: noisy, type: command, schedule: {{type: interval, expression: 1h}}, config: {{command: [sh, '{}']}}}}\n",
            data.display(),
            script.display()
        ),
    )
    .unwrap();
    let exe = env!("CARGO_BIN_EXE_extractor-runtime");
    let (code, stdout, stderr) = run(std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -v 1000000 && ulimit -n 128 && exec '{exe}' run --once -c '{}'",
            config.display()
        ))
        .env_remove("COGNITE_API_KEY")
        .env_remove("RUST_LOG"));
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("1-huge.csv:3: the line is longer than max-line-size (16 MiB)"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "GET http://127.0.0.1:{port}/huge: the answer is larger than max-response-size (64 MiB)"
        )),
        "{stderr}"
    );
    let keys: Vec<String> = ndjson_items(&stdout, "/raw/dbs/{db}/tables/{table}/rows")
        .iter()
        .map(|i| i["key"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        keys,
        ["r1", "f1"],
        "the rows before the huge line, and the other file"
    );
    assert!(stderr.contains("3-unreadable.csv: cannot read"), "{stderr}");
    assert!(
        stderr.contains("run succeeded task=noisy") && stderr.contains("more bytes cut"),
        "{stderr}"
    );
    assert!(
        stderr.contains("caf\u{FFFD}"),
        "non-UTF-8 shown lossily: {stderr}"
    );
}

/// `config-examples/instances.yaml` through the binary (dry-run): the CSV hierarchy becomes
/// CogniteAsset nodes in one `/models/instances` request, parents as direct relations, the root
/// without one.
#[test]
fn the_instances_example_runs() {
    let (code, stdout, stderr) = run(bin()
        .args(["run", "--once", "-c", "config-examples/instances.yaml"])
        .current_dir(repo())
        .env_remove("DM_SPACE"));
    assert_eq!(code, 0, "{stderr}");
    let nodes = ndjson_items(&stdout, "/models/instances");
    let ids: Vec<&str> = nodes
        .iter()
        .map(|n| n["externalId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["plant-oslo", "boiler-house", "boiler-1", "boiler-2"]);
    for n in &nodes {
        assert_eq!(n["instanceType"], "node");
        assert_eq!(n["space"], "plant");
        assert_eq!(
            n["sources"][0]["source"],
            json!({"type": "view", "space": "cdf_cdm", "externalId": "CogniteAsset", "version": "v1"})
        );
    }
    let props = |i: usize| &nodes[i]["sources"][0]["properties"];
    assert_eq!(props(0)["parent"], Value::Null, "the root has no parent");
    assert_eq!(props(0)["name"], "Oslo plant");
    assert_eq!(
        props(2)["parent"],
        json!({"space": "plant", "externalId": "boiler-house"})
    );
    assert_eq!(props(2)["sourceId"], "csv:boiler-1");
    assert!(
        props(1).get("description").is_none(),
        "an empty cell is left out"
    );
}

/// `config-examples/datapoints-dm.yaml` through the binary (dry-run): datapoints addressed by
/// the CogniteTimeSeries nodes' `instanceId`, grouped per node.
#[test]
fn the_datapoints_by_instance_id_example_runs() {
    let (code, stdout, stderr) = run(bin()
        .args(["run", "--once", "-c", "config-examples/datapoints-dm.yaml"])
        .current_dir(repo())
        .env_remove("DM_SPACE"));
    assert_eq!(code, 0, "{stderr}");
    let series = ndjson_items(&stdout, "/timeseries/data");
    let ids: Vec<&Value> = series.iter().map(|s| &s["instanceId"]).collect();
    assert!(
        ids.contains(&&json!({"space": "plant", "externalId": "boiler-1:temperature"}))
            && ids.contains(&&json!({"space": "plant", "externalId": "boiler-2:temperature"})),
        "{ids:?}"
    );
    assert!(series.iter().all(|s| s.get("externalId").is_none()));
    let points: usize = series
        .iter()
        .map(|s| s["datapoints"].as_array().unwrap().len())
        .sum();
    let lines: usize = ["readings-2026-11-26.csv", "readings-2026-11-27.csv"]
        .iter()
        .map(|f| {
            std::fs::read_to_string(repo().join("config-examples/quickstart-data").join(f))
                .unwrap()
                .lines()
                .count()
                - 1
        })
        .sum();
    assert_eq!(points, lines, "every reading is a datapoint");
}

/// `config-examples/files.yaml` through the binary (dry-run): one `/files` metadata request
/// per file, with its templates filled in; the content is not sent in dry-run.
#[test]
fn the_files_example_runs() {
    let data = repo().join("config-examples/files-data");
    // Older than the example's `min-age`, whenever the checkout happened.
    let old = std::time::SystemTime::now() - Duration::from_secs(60);
    for f in ["reports/2026-11-26.txt", "site.json"] {
        std::fs::File::options()
            .write(true)
            .open(data.join(f))
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    let (code, stdout, stderr) = run(bin()
        .args(["run", "--once", "-c", "config-examples/files.yaml"])
        .current_dir(repo()));
    assert_eq!(code, 0, "{stderr}");
    let requests: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l["endpoint"] == "/files")
        .map(|l| l["body"].clone())
        .collect();
    assert_eq!(requests.len(), 2, "{stdout}");
    assert_eq!(requests[0]["externalId"], "docs:reports/2026-11-26.txt");
    assert_eq!(requests[0]["name"], "2026-11-26.txt");
    assert_eq!(requests[0]["mimeType"], "text/plain");
    assert_eq!(
        requests[0]["metadata"]["folder-path"],
        "reports/2026-11-26.txt"
    );
    assert_eq!(requests[1]["externalId"], "docs:site.json");
    assert_eq!(requests[1]["mimeType"], "application/json");
    assert!(
        stderr.contains("dry-run: the file's content is not sent"),
        "{stderr}"
    );
}
