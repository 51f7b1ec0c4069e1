//! Metrics with the real tools: promtool checks a scrape of the running binary and the alert
//! rules, a real Prometheus scrapes it, a real Pushgateway receives a batch job's results.
//!
//! Needs Debian's `prometheus` and `prometheus-pushgateway` packages (`.ci/run` installs them).
//! Where they are missing the tests say that they skipped; with `CI=true` they fail instead.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod util;

use util::{bin, repo};

/// Whether `tools` are all on PATH; prints why not (and fails under CI).
fn have(tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| {
            Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .output()
                .map(|o| !o.status.success())
                .unwrap_or(true)
        })
        .collect();
    util::available(
        missing.is_empty(),
        &format!("{missing:?}"),
        "apt-get install prometheus prometheus-pushgateway",
    )
}

/// A child process stopped by its PID when the test ends.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A plain HTTP/1.0 GET on loopback: status, headers, body.
fn get(port: u16, path: &str) -> Option<(u16, String, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, head.to_owned(), body.to_owned()))
}

/// promtool: no errors and no warnings (it prints lint findings and exits non-zero).
fn promtool_check_metrics(scrape: &str) {
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(scrape.as_bytes())
        .unwrap();
    let Output {
        status,
        stdout,
        stderr,
    } = promtool.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&stdout),
        String::from_utf8_lossy(&stderr)
    );
    assert!(
        status.success() && said.trim().is_empty(),
        "promtool check metrics: {said}"
    );
}

fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out waiting for {what}");
}

fn service_config(dir: &Path, port: u16) -> PathBuf {
    let path = dir.join("config.yaml");
    std::fs::write(
        &path,
        format!(
            "version: 1\ncognite: {{project: demo, dry-run: true}}\n\
             metrics: {{server: {{host: 127.0.0.1, port: {port}}}}}\ntasks:\n\
             \x20 - {{name: ok, type: command, schedule: {{type: interval, expression: 1s}}, config: {{command: ['true']}}}}\n\
             \x20 - {{name: bad, type: command, schedule: {{type: interval, expression: 1s}}, config: {{command: [sh, -c, 'exit 3']}}}}\n"
        ),
    )
    .unwrap();
    path
}

#[test]
fn a_scrape_passes_promtool_and_a_real_prometheus_sees_the_tasks() {
    if !have(&["promtool", "prometheus"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = service_config(tmp.path(), port);
    let _extractor = Proc(
        bin()
            .args(["run", "-c"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("/readyz", 30, || {
        get(port, "/readyz").is_some_and(|(s, _, _)| s == 200)
    });
    let (status, _, body) = get(port, "/healthz").unwrap();
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (_, _, ready) = get(port, "/readyz").unwrap();
    let ready: serde_json::Value = serde_json::from_str(&ready).unwrap();
    assert_eq!(ready["ready"], true, "{ready}");
    wait_for("both tasks to have run", 30, || {
        get(port, "/metrics").is_some_and(|(_, _, b)| {
            b.contains("extractor_task_runs_total{result=\"failure\",task=\"bad\"} 1")
                || b.contains("extractor_task_runs_total{result=\"failure\",task=\"bad\"} 2")
        })
    });
    let (status, head, scrape) = get(port, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(
        head.to_lowercase()
            .contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
        "{head}"
    );
    for name in [
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_start_time_seconds",
        "extractor_build_info{version=",
        "extractor_task_next_run_timestamp_seconds{task=\"ok\"}",
    ] {
        assert!(scrape.contains(name), "{name} missing from the scrape");
    }

    promtool_check_metrics(&scrape);

    // A real Prometheus scrapes it every second.
    let prom_port = free_port();
    let prom_config = tmp.path().join("prometheus.yml");
    std::fs::write(
        &prom_config,
        format!("global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nscrape_configs:\n  - job_name: cdf-extractor\n    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n"),
    )
    .unwrap();
    let _prometheus = Proc(
        Command::new("prometheus")
            .arg(format!("--config.file={}", prom_config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                tmp.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let query = |q: &str| -> Option<serde_json::Value> {
        let encoded: String = q
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"_-.".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        let (status, _, body) = get(prom_port, &format!("/api/v1/query?query={encoded}"))?;
        (status == 200).then(|| serde_json::from_str::<serde_json::Value>(&body).ok())?
    };
    let value = |v: &serde_json::Value| {
        v["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|s| s.parse::<f64>().ok())
    };
    wait_for("Prometheus to scrape the extractor (up == 1)", 60, || {
        query("up{job=\"cdf-extractor\"}").as_ref().and_then(value) == Some(1.0)
    });
    wait_for("task series in Prometheus", 30, || {
        let ok = query(
            "extractor_task_runs_total{job=\"cdf-extractor\",task=\"ok\",result=\"success\"}",
        );
        let bad = query(
            "extractor_task_runs_total{job=\"cdf-extractor\",task=\"bad\",result=\"failure\"}",
        );
        ok.as_ref().and_then(value).is_some_and(|v| v >= 1.0)
            && bad.as_ref().and_then(value).is_some_and(|v| v >= 1.0)
    });
    let skipped = query("extractor_task_runs_total{task=\"bad\",result=\"success\"}").unwrap();
    assert_eq!(
        value(&skipped),
        Some(0.0),
        "the success series of a failing task exists at 0: {skipped}"
    );

    // Every metric the dashboard charts is in this scrape, or comes from a part this config
    // does not use (the token manager, pushes), the CDF client (issue 6), or is a family whose
    // series appear only when the event first happens (skips, retries).
    let dashboard =
        std::fs::read_to_string(repo().join("config-examples/grafana/dashboard.json")).unwrap();
    let _: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    let not_in_this_scrape = [
        "extractor_token_",
        "extractor_push_total",
        "extractor_cdf_",
        "extractor_upload_",
        "extractor_task_skipped_total",
        "extractor_task_retries_total",
        "extractor_task_records_total", // reported by the built-ins; this config runs `command`
    ];
    let mut checked = 0;
    for word in dashboard.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if !(word.starts_with("extractor_") || word.starts_with("process_")) {
            continue;
        }
        let name = word.trim_end_matches("_bucket");
        if not_in_this_scrape.iter().any(|p| name.starts_with(p)) {
            continue;
        }
        assert!(
            scrape.contains(&format!("\n{name}")) || scrape.contains(&format!("# TYPE {name} ")),
            "the dashboard charts {name}, which the scrape lacks"
        );
        checked += 1;
    }
    assert!(checked >= 8, "only {checked} dashboard metrics checked");
}

#[test]
fn run_once_pushes_its_final_results_to_a_real_pushgateway() {
    if !have(&["prometheus-pushgateway"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let gw_port = free_port();
    let _gateway = Proc(
        Command::new("prometheus-pushgateway")
            .arg(format!("--web.listen-address=127.0.0.1:{gw_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("the Pushgateway", 30, || {
        get(gw_port, "/-/ready").is_some_and(|(s, _, _)| s == 200)
    });
    let config = tmp.path().join("batch.yaml");
    std::fs::write(
        &config,
        format!(
            "version: 1\ncognite: {{project: demo, dry-run: true}}\n\
             metrics: {{push-gateways: [{{host: 'http://127.0.0.1:{gw_port}', job-name: nightly-batch, push-interval: 1h}}]}}\ntasks:\n\
             \x20 - {{name: load, type: command, schedule: {{type: cron, expression: '0 2 * * *'}}, config: {{command: ['true']}}}}\n\
             \x20 - {{name: broken, type: command, schedule: {{type: cron, expression: '0 3 * * *'}}, config: {{command: [sh, -c, 'exit 9']}}}}\n"
        ),
    )
    .unwrap();
    let out = bin()
        .args(["run", "--once", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "a task failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The push happened before the process exited: the gateway holds the final results.
    let (_, _, metrics) = get(gw_port, "/metrics").unwrap();
    let line = |task: &str, result: &str| {
        metrics.lines().find(|l| {
            l.starts_with("extractor_task_runs_total{")
                && l.contains("job=\"nightly-batch\"")
                && l.contains(&format!("task=\"{task}\""))
                && l.contains(&format!("result=\"{result}\""))
        })
    };
    assert!(
        line("load", "success").is_some_and(|l| l.ends_with(" 1")),
        "{metrics}"
    );
    assert!(
        line("broken", "failure").is_some_and(|l| l.ends_with(" 1")),
        "{metrics}"
    );
}

#[test]
fn a_gateway_that_is_down_does_not_change_the_exit_code() {
    let tmp = tempfile::tempdir().unwrap();
    let dead = free_port();
    let config = tmp.path().join("batch.yaml");
    std::fs::write(
        &config,
        format!(
            "version: 1\ncognite: {{project: demo, dry-run: true}}\nlogger: {{console: {{level: info}}}}\n\
             metrics: {{push-gateways: [{{host: 'http://127.0.0.1:{dead}', job-name: j}}]}}\ntasks:\n\
             \x20 - {{name: load, type: command, schedule: {{type: startup}}, config: {{command: ['true']}}}}\n"
        ),
    )
    .unwrap();
    let out = bin()
        .args(["run", "--once", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "final push to http://127.0.0.1:{dead}/metrics/job/j failed after 3 attempts"
        )),
        "{stderr}"
    );
}

#[test]
fn a_metrics_port_in_use_is_a_startup_error() {
    let tmp = tempfile::tempdir().unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let config = service_config(tmp.path(), port);
    let out = bin()
        .args(["run", "--once", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot serve metrics on 127.0.0.1:{port}: Address already in use"
        )),
        "{stderr}"
    );
}

#[test]
fn the_alert_rules_pass_promtool_check_and_their_unit_tests() {
    if !have(&["promtool"]) {
        return;
    }
    let dir = repo().join("config-examples/prometheus");
    let check = Command::new("promtool")
        .args(["check", "rules", "alerts.yml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    assert!(String::from_utf8_lossy(&check.stdout).contains("SUCCESS: 6 rules found"));
    let test = Command::new("promtool")
        .args(["test", "rules", "alerts.test.yml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        test.status.success(),
        "{}{}",
        String::from_utf8_lossy(&test.stdout),
        String::from_utf8_lossy(&test.stderr)
    );
}

/// A built-in's records show per task: a csv task with 3 good rows and a malformed line has
/// `extractor_task_records_total{result="queued"} 3` and `{result="rejected"} 1`, and the scrape
/// passes promtool.
#[test]
fn built_ins_count_their_records_per_task() {
    if !have(&["promtool"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("in");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("a.csv"), "id\na1\na2\n").unwrap();
    std::fs::write(data.join("b.csv"), "id,v\nb1,1\nb2\n").unwrap();
    let port = free_port();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "version: 1\ncognite: {{project: demo, dry-run: true}}\n\
             metrics: {{server: {{host: 127.0.0.1, port: {port}}}}}\ntasks:\n\
             \x20 - {{name: files, type: csv, schedule: {{type: interval, expression: 1h}},\n\
             \x20     config: {{path: '{}', destination: {{type: raw, database: d, table: t, key: id}}}}}}\n",
            data.display()
        ),
    )
    .unwrap();
    let _proc = Proc(
        bin()
            .args(["run", "-c"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut scrape = String::new();
    wait_for("the csv run to be counted", 30, || {
        scrape = get(port, "/metrics").map(|(_, _, b)| b).unwrap_or_default();
        scrape.contains("extractor_task_runs_total{result=\"failure\",task=\"files\"} 1")
    });
    assert!(
        scrape.contains("extractor_task_records_total{result=\"queued\",task=\"files\"} 3")
            && scrape
                .contains("extractor_task_records_total{result=\"rejected\",task=\"files\"} 1"),
        "{scrape}"
    );
    promtool_check_metrics(&scrape);
}

/// 1 000 idle connections to the metrics server of a process limited to 128 file descriptors:
/// `/healthz` is still answered (the oldest connections make room, and a connection that sends
/// no request is closed after 5 s), and the state keeps being saved (it failed with "Too many
/// open files").
#[test]
fn healthz_answers_under_a_thousand_idle_connections_with_few_file_descriptors() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let state = tmp.path().join("state.json");
    let config = tmp.path().join("config.yaml");
    let log = tmp.path().join("stderr.log");
    std::fs::write(
        &config,
        format!(
            "version: 1\ncognite: {{project: demo, dry-run: true}}\nmetrics: {{server: {{host: 127.0.0.1, port: {port}}}}}\n\
             state-store: {{local: {{path: '{}', save-interval: 200ms}}}}\ntasks:\n\
             \x20 - {{name: job, type: command, schedule: {{type: interval, expression: 1h}}, config: {{command: ['true']}}}}\n",
            state.display()
        ),
    )
    .unwrap();
    let exe = env!("CARGO_BIN_EXE_extractor-runtime");
    let child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -n 128 && exec '{exe}' run -c '{}'",
            config.display()
        ))
        .env_remove("COGNITE_API_KEY")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let _process = Proc(child);
    wait_for("the metrics server", 30, || get(port, "/healthz").is_some());

    let mut idle = Vec::new();
    for _ in 0..1_000 {
        if let Ok(s) =
            TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
        {
            idle.push(s);
        }
    }
    assert!(idle.len() > 500, "only {} connections opened", idle.len());
    wait_for("/healthz under 1 000 idle connections", 15, || {
        get(port, "/healthz").is_some_and(|(status, _, _)| status == 200)
    });
    // Saves every 200 ms went on meanwhile, without running out of file descriptors.
    std::thread::sleep(Duration::from_millis(600));
    drop(idle);
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(!said.contains("cannot save the state file"), "{said}");
    assert!(state.exists());
}
