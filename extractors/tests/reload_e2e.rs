//! Live reload and remote config through the built binary, with `/metrics` as the witness:
//!
//! - a local config reloads on SIGHUP, on a file renamed over it, and on a Kubernetes
//!   ConfigMap-style `..data` symlink swap; only the difference is applied (an unchanged task
//!   is not rerun and keeps its next-run time; a changed one restarts; a removed one goes; a new
//!   one starts); a broken config (YAML, schema, an extractor's constructor) is rejected while
//!   the old one runs on;
//! - a `type: remote` config (a stateful fake CDF serving revisions) picks up a new revision
//!   within one reload interval, rejects a broken one and reports it in a check-in, and keeps
//!   the last good copy (0600) to start from when CDF is down; a 403 is an error, never a
//!   fallback. Every config and integrations request it made is then replayed to Prism serving
//!   Cognite's spec (strict), where `../shared` is present.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod util;

#[path = "../../runtime/tests/support/fake_cdf.rs"]
mod fake_cdf;
#[path = "../../runtime/tests/support/prism.rs"]
mod prism;

use fake_cdf::FakeCdf;
use util::bin;

/// The binary running a service; killed when dropped. Its stderr is collected.
struct Service {
    child: Child,
    log: Arc<Mutex<String>>,
    port: u16,
}

impl Service {
    fn start(config: &Path, port: u16, envs: &[(&str, &str)]) -> Service {
        let mut cmd = bin();
        cmd.args(["run", "-c"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        Service { child, log, port }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// One sample of `/metrics`, or `None` before the server answers.
    fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .ok()?;
        let mut text = String::new();
        stream.read_to_string(&mut text).ok()?;
        extractor_runtime::metrics::sample(&text, name, labels)
    }

    fn runs(&self, task: &str) -> f64 {
        self.metric(
            "extractor_task_runs_total",
            &[("task", task), ("result", "success")],
        )
        .unwrap_or(0.0)
    }

    /// Waits (up to 30 s) until `check` holds; panics with the log otherwise.
    fn wait_for(&self, what: &str, check: impl Fn(&Service) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !check(self) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// SIGTERM, then the exit code.
    fn stop(mut self) -> (i32, String) {
        self.signal("TERM");
        let code = self.child.wait().unwrap().code().unwrap_or(-1);
        std::thread::sleep(Duration::from_millis(100));
        (code, self.log())
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A command task that runs once at start, then hourly (so every later run is a restart).
fn task(name: &str, word: &str) -> String {
    format!(
        "  - {{name: {name}, type: command, schedule: {{type: interval, expression: 1h}}, config: {{command: [echo, {word}]}}}}\n"
    )
}

fn local_config(port: u16, watch: bool, tasks: &[String]) -> String {
    format!(
        "version: 1\ncognite: {{project: demo, dry-run: true}}\n\
         metrics: {{server: {{host: 127.0.0.1, port: {port}}}}}\n\
         reload: {{watch: {watch}, interval: 1h}}\n\
         shutdown-grace: 5s\ntasks:\n{}",
        tasks.concat()
    )
}

/// Writes `text` to a temporary file beside `path` and renames it over `path` (as editors,
/// `kubectl cp` and config management tools do).
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn next_run(s: &Service, task: &str) -> f64 {
    s.metric(
        "extractor_task_next_run_timestamp_seconds",
        &[("task", task)],
    )
    .unwrap_or(-1.0)
}

fn reloads(s: &Service, result: &str) -> f64 {
    s.metric("extractor_config_reloads_total", &[("result", result)])
        .unwrap_or(-1.0)
}

/// The diff: after a change, `keep` was not rerun and its next run did not move; `change`
/// restarted (its second run); `gone` left `/metrics`; `new` ran.
fn assert_only_the_difference_applied(s: &Service, keep_next: f64) {
    s.wait_for("the changed and the new task to run", |s| {
        s.runs("change") >= 2.0 && s.runs("new") >= 1.0
    });
    assert_eq!(s.runs("keep"), 1.0, "the unchanged task ran again");
    assert_eq!(
        next_run(s, "keep"),
        keep_next,
        "the unchanged task's next run moved"
    );
    assert_eq!(s.runs("change"), 2.0);
    assert_eq!(
        s.metric("extractor_task_runs_total", &[("task", "gone")]),
        None,
        "a removed task's series stays in /metrics"
    );
}

/// A service on a local config of `keep`, `change` and `gone`, each run once: its folder, the
/// config's path, the metrics port, the service, and `keep`'s next-run time.
fn three_tasks(watch: bool) -> (tempfile::TempDir, PathBuf, u16, Service, f64) {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let path = tmp.path().join("config.yaml");
    let first = [task("keep", "a"), task("change", "b"), task("gone", "c")];
    std::fs::write(&path, local_config(port, watch, &first)).unwrap();
    let s = Service::start(&path, port, &[]);
    s.wait_for("the first runs", |s| {
        ["keep", "change", "gone"].iter().all(|t| s.runs(t) == 1.0)
    });
    let keep_next = next_run(&s, "keep");
    assert!(keep_next > 0.0);
    (tmp, path, port, s, keep_next)
}

#[test]
fn sighup_applies_only_the_difference_and_rejects_broken_configs_at_each_stage() {
    let (_tmp, path, port, s, keep_next) = three_tasks(false);

    // watch: false: the file changing alone does nothing; SIGHUP applies it.
    let second = [task("keep", "a"), task("change", "B"), task("new", "d")];
    std::fs::write(&path, local_config(port, false, &second)).unwrap();
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(reloads(&s, "applied"), 0.0, "reloaded without a trigger");
    s.signal("HUP");
    s.wait_for("the reload", |s| reloads(s, "applied") == 1.0);
    assert_only_the_difference_applied(&s, keep_next);

    // Broken at each stage: YAML, schema, an extractor's constructor. Each is rejected, named
    // with file:line:column, and the running tasks go on untouched.
    let broken = [
        (
            local_config(port, false, &second) + "  - {name: x\n",
            "invalid YAML",
        ),
        (
            local_config(port, false, &second).replace(
                "expression: 1h}, config: {command: [echo, d]",
                "expression: 1h}, confg: {command: [echo, d]",
            ),
            "unknown key `confg`",
        ),
        (
            local_config(port, false, &second).replace("[echo, d]", "[\"\"]"),
            "must name a program",
        ),
    ];
    for (i, (text, says)) in broken.iter().enumerate() {
        std::fs::write(&path, text).unwrap();
        s.signal("HUP");
        s.wait_for("the rejection", |s| {
            reloads(s, "rejected") == (i + 1) as f64
        });
        let log = s.log();
        let line = log
            .lines()
            .filter(|l| l.contains("the new config was rejected"))
            .nth(i)
            .unwrap();
        assert!(line.contains(says), "{says}: {line}");
        assert!(line.contains(&format!("{}:", path.display())), "{line}");
    }
    assert_eq!(reloads(&s, "applied"), 1.0);
    assert_eq!(s.runs("keep"), 1.0);
    assert_eq!(s.runs("new"), 1.0);
    assert_eq!(next_run(&s, "keep"), keep_next);
    let (code, log) = s.stop();
    assert_eq!(code, 0, "{log}");
}

#[test]
fn a_file_renamed_over_the_config_is_applied_without_a_signal() {
    let (_tmp, path, port, s, keep_next) = three_tasks(true);
    replace(
        &path,
        &local_config(
            port,
            true,
            &[task("keep", "a"), task("change", "B"), task("new", "d")],
        ),
    );
    s.wait_for("the reload", |s| reloads(s, "applied") == 1.0);
    assert_only_the_difference_applied(&s, keep_next);
    // A second rename over the same path: the directory watch survives the first.
    replace(&path, &local_config(port, true, &[task("keep", "a")]));
    s.wait_for("the second reload", |s| reloads(s, "applied") == 2.0);
    assert_eq!(
        s.metric("extractor_task_runs_total", &[("task", "new")]),
        None
    );
    assert_eq!(s.runs("keep"), 1.0);
    let (code, log) = s.stop();
    assert_eq!(code, 0, "{log}");
}

#[test]
fn a_configmap_symlink_swap_is_applied() {
    // Kubernetes mounts a ConfigMap as `config.yaml -> ..data/config.yaml`, `..data ->
    // ..<timestamp>`, and updates it by renaming a new `..data` link over the old one: the
    // file's own name is never in an event.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let port = free_port();
    let version = |n: u32, text: &str| {
        let v = dir.join(format!("..v{n}"));
        std::fs::create_dir(&v).unwrap();
        std::fs::write(v.join("config.yaml"), text).unwrap();
        let link = dir.join(format!("..data_tmp{n}"));
        std::os::unix::fs::symlink(format!("..v{n}"), &link).unwrap();
        std::fs::rename(&link, dir.join("..data")).unwrap();
    };
    version(
        1,
        &local_config(port, true, &[task("keep", "a"), task("gone", "c")]),
    );
    std::os::unix::fs::symlink("..data/config.yaml", dir.join("config.yaml")).unwrap();
    let s = Service::start(&dir.join("config.yaml"), port, &[]);
    s.wait_for("the first runs", |s| {
        s.runs("keep") == 1.0 && s.runs("gone") == 1.0
    });
    version(
        2,
        &local_config(port, true, &[task("keep", "a"), task("new", "d")]),
    );
    s.wait_for("the reload", |s| reloads(s, "applied") == 1.0);
    s.wait_for("the new task", |s| s.runs("new") == 1.0);
    assert_eq!(s.runs("keep"), 1.0);
    assert_eq!(
        s.metric("extractor_task_runs_total", &[("task", "gone")]),
        None
    );
    let (code, log) = s.stop();
    assert_eq!(code, 0, "{log}");
}

/// A remote config's revision: two hourly command tasks and the given extra ones.
fn revision(port: u16, tasks: &[String]) -> String {
    format!(
        "version: 1\nmetrics: {{server: {{host: 127.0.0.1, port: {port}}}}}\nshutdown-grace: 5s\ntasks:\n{}",
        tasks.concat()
    )
}

/// `config-examples/remote.yaml`, copied to `dir` (its buffer file lands beside it), with no
/// retries and with check-ins and polls every second.
fn remote_file(dir: &Path) -> PathBuf {
    let path = dir.join("remote.yaml");
    let example =
        std::fs::read_to_string(util::repo().join("config-examples/remote.yaml")).unwrap();
    let mut text = example.clone();
    for (from, to) in [
        ("max-retries: 10", "max-retries: 0"),
        ("checkin-interval: 30s", "checkin-interval: 1s"),
        ("reload: {interval: 5m}", "reload: {interval: 1s}"),
    ] {
        assert!(text.contains(from), "the example no longer says {from}");
        text = text.replace(from, to);
    }
    std::fs::write(&path, text).unwrap();
    path
}

/// The example's variables for the fake CDF.
fn remote_env(cdf: &FakeCdf) -> Vec<(&'static str, String)> {
    vec![
        ("COGNITE_BASE_URL", cdf.uri()),
        ("COGNITE_TOKEN_URL", format!("{}/token", cdf.uri())),
        ("COGNITE_PROJECT", "demo".into()),
    ]
}

/// The binary with [`remote_env`].
fn remote_bin(cdf: &FakeCdf) -> std::process::Command {
    let mut cmd = bin();
    cmd.envs(remote_env(cdf));
    cmd
}

fn start_remote(path: &Path, port: u16, cdf: &FakeCdf) -> Service {
    let env = remote_env(cdf);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Service::start(path, port, &env)
}

fn revision_gauge(s: &Service) -> f64 {
    s.metric("extractor_config_revision", &[]).unwrap_or(-1.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_config_follows_its_revisions_checks_in_and_starts_from_its_last_good_copy() {
    let cdf = FakeCdf::start(&[]).await;
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    cdf.with(|s| {
        s.configs
            .push(revision(port, &[task("keep", "a"), task("change", "b")]))
    });
    let path = remote_file(tmp.path());
    let buffer = tmp.path().join("remote.yaml.last-good.json");

    let s = tokio::task::block_in_place(|| {
        let s = start_remote(&path, port, &cdf);
        s.wait_for("the first runs", |s| {
            s.runs("keep") == 1.0 && s.runs("change") == 1.0
        });
        s
    });
    assert_eq!(revision_gauge(&s), 1.0);
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&buffer).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the buffer file may hold secrets");
    let kept: serde_json::Value = serde_json::from_slice(&std::fs::read(&buffer).unwrap()).unwrap();
    assert_eq!(kept["revision"], 1);

    // Revision 2 changes one task and adds one: picked up within the 1 s reload interval.
    let keep_next = next_run(&s, "keep");
    cdf.with(|st| {
        st.configs.push(revision(
            port,
            &[task("keep", "a"), task("change", "B"), task("new", "n")],
        ))
    });
    tokio::task::block_in_place(|| {
        s.wait_for("revision 2", |s| revision_gauge(s) == 2.0);
        s.wait_for("the changed and the new task", |s| {
            s.runs("change") == 2.0 && s.runs("new") == 1.0
        });
    });
    assert_eq!(s.runs("keep"), 1.0, "the unchanged task ran again");
    assert_eq!(next_run(&s, "keep"), keep_next);

    // Revision 3 is broken (its extractor's constructor refuses it): rejected, revision 2
    // runs on, and the next check-in says so.
    cdf.with(|st| {
        st.configs
            .push(revision(port, &[task("keep", "a")]).replace("[echo, a]", "[\"\"]"))
    });
    tokio::task::block_in_place(|| {
        s.wait_for("the rejection", |s| reloads(s, "rejected") >= 1.0);
    });
    assert_eq!(revision_gauge(&s), 2.0);
    let reported = |cdf: &FakeCdf| {
        cdf.with(|st| {
            st.checkins.iter().any(|c| {
                c["errors"].as_array().is_some_and(|errors| {
                    errors.iter().any(|e| {
                        e["description"].as_str().unwrap_or("").contains("rejected")
                            && e["details"]
                                .as_str()
                                .unwrap_or("")
                                .contains("extraction pipeline `my-pipeline` revision 3")
                            && e["activeConfigRevision"] == 2
                    })
                })
            })
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !reported(&cdf) {
        assert!(
            Instant::now() < deadline,
            "no check-in reported the rejection: {:?}; log:\n{}",
            cdf.with(|s| s.checkins.clone()),
            s.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Polled again (every second), the same broken revision is not tried or logged again.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(reloads(&s, "rejected"), 1.0);
    let (code, log) = tokio::task::block_in_place(|| s.stop());
    assert_eq!(code, 0, "{log}");
    let kept: serde_json::Value = serde_json::from_slice(&std::fs::read(&buffer).unwrap()).unwrap();
    assert_eq!(
        kept["revision"], 2,
        "the buffer keeps the last good revision, not the rejected one"
    );

    // Check-ins: a startup at start and after the reload, with the tasks and the revision;
    // task events for the runs.
    let startups = cdf.with(|s| s.startups.clone());
    let revisions: Vec<&serde_json::Value> = startups
        .iter()
        .map(|s| &s["activeConfigRevision"])
        .collect();
    assert!(
        revisions.contains(&&serde_json::json!(1)) && revisions.contains(&&serde_json::json!(2)),
        "{startups:?}"
    );
    let last = startups
        .iter()
        .find(|s| s["activeConfigRevision"] == 2)
        .unwrap();
    assert_eq!(last["externalId"], "my-integration");
    assert_eq!(last["extractor"]["externalId"], "extractor-runtime");
    let names: Vec<&str> = last["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(
        last["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["type"] == "batch")
    );
    let events: Vec<serde_json::Value> = cdf.with(|s| {
        s.checkins
            .iter()
            .flat_map(|c| c["taskEvents"].as_array().cloned().unwrap_or_default())
            .collect()
    });
    for (kind, task) in [
        ("started", "keep"),
        ("ended", "keep"),
        ("started", "new"),
        ("ended", "new"),
    ] {
        assert!(
            events
                .iter()
                .any(|e| e["type"] == kind && e["name"] == task),
            "{kind} {task}: {events:?}"
        );
    }

    // CDF down at start: the last good copy runs, said in the log and in a metric.
    cdf.with(|s| s.down = true);
    let port2 = port;
    let s = tokio::task::block_in_place(|| {
        let s = start_remote(&path, port2, &cdf);
        s.wait_for("the runs from the buffer", |s| {
            s.runs("new") == 1.0 && s.runs("keep") == 1.0
        });
        s
    });
    assert_eq!(s.metric("extractor_config_from_buffer", &[]), Some(1.0));
    assert_eq!(revision_gauge(&s), 2.0);
    assert!(
        s.log()
            .contains("running from the last good config kept on disk"),
        "{}",
        s.log()
    );
    drop(s);

    // A refusal (403) is an error naming the pipeline, never a fallback to the buffer.
    cdf.with(|s| {
        s.down = false;
        s.config_status = Some(403);
    });
    let (code, _, stderr) = tokio::task::block_in_place(|| {
        util::run(remote_bin(&cdf).args(["run", "--once", "-c"]).arg(&path))
    });
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("CDF refused the config of extraction pipeline `my-pipeline`"),
        "{stderr}"
    );

    // `source: integration` reads the integration's config instead; `--once` runs it once.
    cdf.with(|s| {
        s.config_status = None;
        s.configs.push(revision(port, &[task("keep", "a")]));
    });
    let text = std::fs::read_to_string(&path).unwrap() + "source: integration\n";
    let integration = tmp.path().join("integration.yaml");
    std::fs::write(&integration, text).unwrap();
    let (code, _, stderr) = tokio::task::block_in_place(|| {
        util::run(
            remote_bin(&cdf)
                .env("BUFFER_FILE", "integration.yaml.last-good.json")
                .args(["run", "--once", "-c"])
                .arg(&integration),
        )
    });
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("remote config loaded") && stderr.contains("integration `my-integration`"),
        "{stderr}"
    );
    assert!(
        tmp.path().join("integration.yaml.last-good.json").exists(),
        "buffer-file names where the last good copy goes"
    );

    // check-config: offline, the local part; with --fetch, the latest revision too.
    let (code, out, err) = util::run(remote_bin(&cdf).args(["check-config", "-c"]).arg(&path));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("remote:   the config is extraction pipeline `my-pipeline`'s latest revision"),
        "{out}"
    );
    let (code, out, err) = tokio::task::block_in_place(|| {
        util::run(
            remote_bin(&cdf)
                .args(["check-config", "--fetch", "-c"])
                .arg(&path),
        )
    });
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("fetched extraction pipeline `my-pipeline` revision 4"),
        "{out}"
    );
    assert!(out.contains("  - keep (command)"), "{out}");
    let no_pipeline = tmp.path().join("no-pipeline.yaml");
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "  extraction-pipeline: {external-id: \"${PIPELINE:-my-pipeline}\"}\n",
        "",
    );
    std::fs::write(&no_pipeline, text).unwrap();
    let (code, _, err) = util::run(
        remote_bin(&cdf)
            .args(["check-config", "-c"])
            .arg(&no_pipeline),
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no-pipeline.yaml:18:3: cognite: a `type: remote` config needs cognite.extraction-pipeline.external-id"), "{err}");

    // Every config and integrations request, replayed to Prism serving Cognite's spec.
    let recorded = cdf.with(|s| s.recorded.clone());
    assert!(
        recorded
            .iter()
            .any(|(_, p, _)| p.starts_with("/extpipes/config?"))
    );
    assert!(
        recorded
            .iter()
            .any(|(_, p, _)| p.starts_with("/extpipes/config/revisions?"))
    );
    let Some(prism) = prism::Prism::start().await else {
        return;
    };
    let seen = prism.replay(&recorded).await;
    for endpoint in [
        "/extpipes/config",
        "/extpipes/config/revisions",
        "/integrations/startup",
        "/integrations/checkin",
    ] {
        assert!(
            seen.contains(endpoint),
            "{endpoint} not exercised: {seen:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_ins_report_failed_runs_and_refused_items() {
    let cdf = FakeCdf::start(&[]).await;
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("rows.csv"), "key,v\nok-1,1\nbad-2,2\nok-3,3\n").unwrap();
    let text = format!(
        "version: 1\n\
         cognite:\n  project: demo\n  host: {host}\n\
         \x20 idp-authentication: {{client-id: c, secret: s, token-url: '{host}/token', scopes: [s]}}\n\
         \x20 connection: {{max-retries: 0}}\n\
         \x20 integration: {{external-id: my-integration, checkin-interval: 1s}}\n\
         metrics: {{server: {{host: 127.0.0.1, port: {port}}}}}\n\
         upload-queue: {{max-upload-interval: 1s}}\n\
         tasks:\n\
         \x20 - {{name: rows, type: csv, schedule: {{type: interval, expression: 1h}}, config: {{path: '{data}', glob: '*.csv', destination: {{type: raw, database: d, table: t, key: '{{key}}'}}}}}}\n\
         \x20 - {{name: broken, type: command, schedule: {{type: interval, expression: 1h}}, config: {{command: [sh, -c, 'exit 3']}}}}\n",
        host = cdf.uri(),
        data = data.display()
    );
    let path = tmp.path().join("config.yaml");
    std::fs::write(&path, text).unwrap();
    let s = tokio::task::block_in_place(|| Service::start(&path, port, &[]));
    let errors = |cdf: &FakeCdf| -> Vec<serde_json::Value> {
        cdf.with(|st| {
            st.checkins
                .iter()
                .flat_map(|c| c["errors"].as_array().cloned().unwrap_or_default())
                .collect()
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let errors = errors(&cdf);
        let refused = errors
            .iter()
            .any(|e| e["description"] == "CDF refused 1 item(s) for good" && e["level"] == "error");
        let failed = errors.iter().any(|e| {
            e["task"] == "broken"
                && e["description"] == "a run of task broken failed"
                && e["activeConfigRevision"] == "local"
        });
        if refused && failed {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "check-ins: {errors:?}; log:\n{}",
            s.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let startups = cdf.with(|st| st.startups.clone());
    assert_eq!(startups[0]["activeConfigRevision"], "local");
    let (code, log) = tokio::task::block_in_place(|| s.stop());
    assert_eq!(code, 0, "{log}");
    assert_eq!(cdf.with(|st| st.rows.get("ok-1").copied()), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_credentials_are_swapped_in_only_once_they_have_a_token() {
    use wiremock::matchers::{body_string_contains, method, path};
    let cdf = FakeCdf::start(&[]).await;
    // The rotated client's token endpoint answers slowly: meanwhile requests keep the old token.
    wiremock::Mock::given(method("POST"))
        .and(path("/token-rotated"))
        .and(body_string_contains("client_secret=s2"))
        .respond_with(
            wiremock::ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"access_token": "rotated", "expires_in": 3600}))
                .set_delay(Duration::from_millis(1500)),
        )
        .mount(&cdf.server)
        .await;
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = |token_path: &str, secret: &str| {
        format!(
            "version: 1\n\
             cognite:\n  project: demo\n  host: {host}\n\
             \x20 idp-authentication: {{client-id: c, secret: {secret}, token-url: '{host}/{token_path}', scopes: [s]}}\n\
             \x20 integration: {{external-id: my-integration, checkin-interval: 200ms}}\n\
             metrics: {{server: {{host: 127.0.0.1, port: {port}}}}}\n\
             tasks:\n{}",
            task("keep", "a"),
            host = cdf.uri()
        )
    };
    let path = tmp.path().join("config.yaml");
    std::fs::write(&path, config("token", "s1")).unwrap();
    let s = tokio::task::block_in_place(|| {
        let s = Service::start(&path, port, &[]);
        s.wait_for("the first run", |s| s.runs("keep") == 1.0);
        s
    });
    tokio::time::sleep(Duration::from_millis(600)).await;
    replace(&path, &config("token-rotated", "s2"));
    tokio::task::block_in_place(|| {
        s.wait_for("the reload", |s| reloads(s, "applied") == 1.0);
    });
    let rotated_at = cdf.with(|st| st.bearers.len());
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (code, log) = tokio::task::block_in_place(|| s.stop());
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("cognite: changed"), "{log}");
    let bearers = cdf.with(|st| st.bearers.clone());
    assert!(
        bearers
            .iter()
            .all(|b| b == "Bearer t" || b == "Bearer rotated"),
        "{bearers:?}"
    );
    let first_new = bearers
        .iter()
        .position(|b| b == "Bearer rotated")
        .expect("the new token is used");
    assert!(bearers[..first_new].iter().all(|b| b == "Bearer t"));
    assert!(
        bearers[first_new..].iter().all(|b| b == "Bearer rotated"),
        "the old token came back: {bearers:?}"
    );
    assert!(
        first_new > 2,
        "requests went on with the old token while the new one was fetched: {bearers:?}"
    );
    assert!(
        bearers.len() > rotated_at,
        "requests after the swap: {bearers:?}"
    );
    assert_eq!(
        s_runs_after(&log),
        1,
        "the unchanged task was not rerun by a credentials change"
    );
}

/// How often `keep` ran, from the log.
fn s_runs_after(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("run succeeded") && l.contains("task=keep"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_in_that_names_a_newer_revision_triggers_the_reload() {
    let cdf = FakeCdf::start(&[]).await;
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    cdf.with(|s| s.configs.push(revision(port, &[task("keep", "a")])));
    let path = remote_file(tmp.path());
    // No revision polls within the test: only the check-in can tell of revision 2.
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("reload: {interval: 1s}", "reload: {interval: 1h}");
    std::fs::write(&path, text).unwrap();
    let s = tokio::task::block_in_place(|| {
        let s = start_remote(&path, port, &cdf);
        s.wait_for("the first run", |s| s.runs("keep") == 1.0);
        s
    });
    cdf.with(|st| {
        st.configs
            .push(revision(port, &[task("keep", "a"), task("new", "n")]))
    });
    tokio::task::block_in_place(|| {
        s.wait_for("revision 2", |s| {
            revision_gauge(s) == 2.0 && s.runs("new") == 1.0
        });
    });
    assert_eq!(cdf.requests("/extpipes/config/revisions"), 0);
    assert_eq!(s.runs("keep"), 1.0);
    let (code, log) = tokio::task::block_in_place(|| s.stop());
    assert_eq!(code, 0, "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reads_a_secret_file_again_though_the_config_text_is_unchanged() {
    let cdf = FakeCdf::start(&[]).await;
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let secret = tmp.path().join("secret");
    std::fs::write(&secret, "s3cr3t-one\n").unwrap();
    let text = format!(
        "version: 1\n\
         cognite:\n  project: demo\n  host: {host}\n\
         \x20 idp-authentication: {{client-id: c, secret: !file '{}', token-url: '{host}/token', scopes: [s]}}\n\
         metrics: {{server: {{host: 127.0.0.1, port: {port}}}}}\n\
         reload: {{watch: false, interval: 1h}}\n\
         tasks:\n{}",
        secret.display(),
        task("keep", "a"),
        host = cdf.uri()
    );
    let path = tmp.path().join("config.yaml");
    std::fs::write(&path, text).unwrap();
    let s = tokio::task::block_in_place(|| {
        let s = Service::start(&path, port, &[]);
        s.wait_for("the first run", |s| s.runs("keep") == 1.0);
        // Nothing changed: SIGHUP applies nothing.
        s.signal("HUP");
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(reloads(&s, "applied"), 0.0);
        // The mounted secret rotates; the config text does not: SIGHUP applies it.
        std::fs::write(&secret, "s3cr3t-two\n").unwrap();
        s.signal("HUP");
        s.wait_for("the reload", |s| reloads(s, "applied") == 1.0);
        s
    });
    assert_eq!(s.runs("keep"), 1.0, "a credentials change restarts no task");
    let (code, log) = tokio::task::block_in_place(|| s.stop());
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("cognite: changed"), "{log}");
    assert!(
        !log.contains("first") && !log.contains("second"),
        "a secret was logged: {log}"
    );
}
