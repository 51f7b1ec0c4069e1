//! The disk buffer (`upload-queue.buffer: {type: disk}`) through the binary, against the
//! stateful fake CDF: while CDF answers 503, a csv task's rows are accepted once they are on
//! disk, so its watermark moves and is saved; the process is killed with SIGKILL; restarted
//! after CDF recovers, it sends every row from the buffer, once, and the csv is not read again.

use std::path::Path;
use std::time::{Duration, Instant};

mod util;

#[path = "../../runtime/tests/support/fake_cdf.rs"]
mod fake_cdf;

use fake_cdf::FakeCdf;

const ROWS: usize = 2000;

fn config(dir: &Path, cdf: &FakeCdf) -> std::path::PathBuf {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let mut csv = String::from("key,value\n");
    for i in 0..ROWS {
        csv.push_str(&format!("row-{i},{i}\n"));
    }
    std::fs::write(data.join("readings.csv"), csv).unwrap();
    util::write_config(
        dir,
        &format!(
            "{header}  connection: {{max-retries: 1, max-retry-backoff: 1s}}
state-store:
  local: {{path: '{state}', save-interval: 1s}}
upload-queue:
  max-queue-size: 100
  max-upload-interval: 1s
  buffer: {{type: disk, path: '{buffer}', max-size: 64MiB}}
shutdown-grace: 5s
tasks:
  - name: readings
    type: csv
    schedule: {{type: interval, expression: 1h}}
    config:
      path: '{data}'
      destination: {{type: raw, database: plant, table: readings, key: '{{key}}'}}
",
            header = util::cognite_header(&cdf.uri()),
            state = dir.join("state.json").display(),
            buffer = dir.join("buffer").display(),
            data = data.display(),
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_accepted_while_cdf_is_down_survive_a_kill() {
    let cdf = FakeCdf::start(&[]).await;
    cdf.with(|c| c.down = true);
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &cdf);
    let state = dir.path().join("state.json");

    let mut child = util::spawn_run(&config, &[]);
    // The whole file was read and its watermark saved: every row is on disk.
    let started = Instant::now();
    loop {
        let saved = std::fs::read_to_string(&state).unwrap_or_default();
        if saved.contains("readings.csv") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no state saved: {saved}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill(); // SIGKILL, by PID
    assert!(cdf.with(|c| c.rows.is_empty()), "CDF was down");
    assert!(
        cdf.requests("/raw/dbs/plant/tables/readings/rows") > 0,
        "it tried"
    );

    cdf.with(|c| c.down = false);
    let mut child = util::spawn_run(&config, &[]);
    let started = Instant::now();
    while cdf.with(|c| c.rows.len()) < ROWS && started.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill();
    cdf.with(|c| {
        assert_eq!(c.rows.len(), ROWS, "every row arrived");
        let sent: usize = c.rows.values().sum();
        assert_eq!(sent, ROWS, "each once: the csv was not read again");
    });
}
