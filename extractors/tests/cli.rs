//! The real `extractor-runtime` binary: exit codes, stderr, and what it refuses to do.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod util;

use util::{bin, repo, run, write_config};

const GOOD: &str = r#"
version: 1
cognite:
  project: demo
  host: http://127.0.0.1:PORT
  idp-authentication:
    client-id: my-client
    secret: very-secret-value-42
    token-url: http://127.0.0.1:PORT/token
    scopes: [https://api.cognitedata.com/.default]
logger:
  console: {level: debug, format: json}
tasks:
  - name: t1
    type: command
    schedule: {type: interval, expression: 30s}
    config: {command: [echo, hello]}
"#;

#[test]
fn bad_config_corpus_gives_the_expected_errors() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad-configs");
    let expected = std::fs::read_to_string(dir.join("expected-errors.txt")).unwrap();
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        files += 1;
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let wanted: Vec<&str> = expected
            .lines()
            .filter_map(|l| l.strip_prefix(&format!("{name}: ")))
            .collect();
        assert!(
            !wanted.is_empty(),
            "{name} has no line in expected-errors.txt"
        );
        let (code, stdout, stderr) = run(bin()
            .args(["check-config", "-c"])
            .arg(&path)
            .env("EXTRACTOR_TEST_PORT", "abc"));
        assert_eq!(code, 2, "{name}: exit code; stderr: {stderr}");
        assert!(stdout.is_empty(), "{name}: nothing on stdout, got {stdout}");
        for line in wanted {
            let full = format!("{}:{line}", path.display());
            assert!(
                stderr.contains(&full),
                "{name}: expected\n  {full}\nin\n  {stderr}"
            );
        }
        for secret in ["s3cr3t-value", "hunter2"] {
            assert!(
                !stderr.contains(secret),
                "{name}: stderr shows a secret: {stderr}"
            );
        }
    }
    assert!(files >= 40, "the corpus has only {files} bad configs");
}

#[test]
fn cognite_api_key_is_refused_by_every_command_before_any_network_io() {
    let tmp = tempfile::tempdir().unwrap();
    // Every URL in the config points at this listener: a connection would show up here.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let config = write_config(tmp.path(), &GOOD.replace("PORT", &port));
    for value in ["", "some-api-key"] {
        for args in [
            vec!["run", "-c"],
            vec!["run", "--once", "-c"],
            vec!["run", "--dry-run", "-c"],
            vec!["check-config", "-c"],
        ] {
            let (code, stdout, stderr) =
                run(bin().args(&args).arg(&config).env("COGNITE_API_KEY", value));
            assert_eq!(code, 2, "{args:?}: {stderr}");
            assert!(stdout.is_empty());
            assert!(stderr.contains("COGNITE_API_KEY is set"), "{stderr}");
            assert!(stderr.contains("unset COGNITE_API_KEY"), "{stderr}");
            assert!(
                !stderr.contains("some-api-key"),
                "the key's value is not repeated"
            );
        }
    }
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("something connected: {other:?}"),
    }
}

#[test]
fn check_config_summarises_without_showing_secrets() {
    let tmp = tempfile::tempdir().unwrap();
    let text = format!(
        "{}metrics:\n  push-gateways: [{{host: 'http://ops:gw-secret-7@127.0.0.1:9091', job-name: j}}]\n",
        GOOD.replace("PORT", "9")
    );
    let config = write_config(tmp.path(), &text);
    let (code, stdout, stderr) = run(bin().args(["check-config", "-c"]).arg(&config));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("project demo"), "{stdout}");
    assert!(
        stdout.contains("push to http://ops:***@127.0.0.1:9091 as job j")
            && !stdout.contains("gw-secret-7"),
        "{stdout}"
    );
    assert!(stdout.contains("client my-client (secret ***)"), "{stdout}");
    assert!(
        stdout.contains("t1 (command): every 30s, first run at start"),
        "{stdout}"
    );
    assert!(!stdout.contains("very-secret-value-42") && !stderr.contains("very-secret-value-42"));
}

#[test]
fn every_config_example_passes_check_config() {
    let dir = tempfile::tempdir().unwrap();
    let Some(certificate) = util::openssl_client_pem(dir.path(), "client") else {
        return;
    };
    let mut checked = 0;
    for entry in std::fs::read_dir(repo().join("config-examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml")
            && !path.to_string_lossy().contains("rules")
        {
            // What the examples' comments say to set.
            let (code, stdout, stderr) = run(bin()
                .args(["check-config", "-c"])
                .arg(&path)
                .env("API_URL", "https://api.example.com/v1/readings")
                .env("API_TOKEN", "token")
                .env("POSTGRES_CONNECTION", "host=127.0.0.1 user=u dbname=d")
                .env("COGNITE_CERTIFICATE", &certificate));
            assert_eq!(code, 0, "{}: {stderr}", path.display());
            assert!(stdout.contains("is valid"), "{stdout}");
            checked += 1;
        }
    }
    assert!(checked >= 3);
}

#[test]
fn schema_matches_the_checked_in_copy() {
    let (code, stdout, _) = run(bin().arg("schema"));
    assert_eq!(code, 0);
    let path = repo().join("config.schema.json");
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &stdout).unwrap();
    }
    let printed: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let checked_in: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(
        printed, checked_in,
        "config.schema.json is stale: UPDATE_SCHEMA=1 cargo test -p extractors --test cli schema"
    );
    assert_eq!(printed["title"], "extractor-runtime config");
    // The built-ins' blocks are described, not free-form.
    let rules = printed["$defs"]["TaskConfig"]["allOf"].as_array().unwrap();
    let kinds: Vec<&str> = rules
        .iter()
        .map(|r| r["if"]["properties"]["type"]["const"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "command", "csv", "files", "http", "mqtt", "postgres", "webhook"
        ]
    );
}

/// Every example validates against the schema (Python's `jsonschema`, as an editor's YAML
/// language server would), and a misspelled key inside a built-in's block does not.
#[test]
fn the_examples_validate_against_the_schema_and_a_typo_does_not() {
    let probe = Command::new("python3")
        .args(["-c", "import jsonschema, yaml"])
        .output();
    if !util::available(
        probe.is_ok_and(|o| o.status.success()),
        "python3 with jsonschema and PyYAML",
        "pip install jsonschema pyyaml",
    ) {
        return;
    }
    let script = r#"
import glob, json, sys, yaml, jsonschema
schema = json.load(sys.stdin)
v = jsonschema.Draft202012Validator(schema)
checked = 0
for f in sorted(glob.glob("config-examples/**/*.yaml", recursive=True)):
    if "prometheus" in f or "/compat/" in f:
        # compat/ holds python-extractor-utils' spellings and tags, which the schema (for
        # editors) does not describe.
        continue
    errors = [f"{f}: {'/'.join(map(str, e.absolute_path))}: {e.message}" for e in v.iter_errors(yaml.safe_load(open(f)))]
    if errors:
        sys.exit(chr(10).join(errors))
    checked += 1
bad = yaml.safe_load(open("config-examples/quickstart.yaml"))
bad["tasks"][0]["config"]["delimeter"] = ";"
messages = [e.message for e in v.iter_errors(bad)]
print(checked, messages)
"#;
    let (_, schema, _) = run(bin().arg("schema"));
    let mut child = Command::new("python3")
        .args(["-c", script])
        .current_dir(repo())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(schema.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (checked, messages) = stdout.trim().split_once(' ').unwrap();
    assert!(checked.parse::<u32>().unwrap() >= 7, "{stdout}");
    assert!(
        messages.contains("Additional properties are not allowed ('delimeter' was unexpected)"),
        "{stdout}"
    );
}

#[test]
fn version_help_and_usage_errors() {
    let (code, stdout, _) = run(bin().arg("--version"));
    assert_eq!(code, 0);
    assert_eq!(
        stdout.trim(),
        format!("extractor-runtime {}", env!("CARGO_PKG_VERSION"))
    );

    let (code, stdout, _) = run(bin().args(["run", "--help"]));
    assert_eq!(code, 0);
    assert!(stdout.contains("a second signal exits at once"), "{stdout}");
    assert!(
        stdout.contains("--once") && stdout.contains("--dry-run"),
        "{stdout}"
    );

    let (code, stdout, _) = run(bin().arg("--help"));
    assert_eq!(code, 0);
    assert!(
        stdout.contains("3 permanent authentication failure"),
        "{stdout}"
    );

    let (code, _, stderr) = run(bin().args(["run", "--bogus"]));
    assert_eq!(code, 2, "{stderr}");

    let (code, _, stderr) = run(bin().args(["check-config", "-c", "/nonexistent/config.yaml"]));
    assert_eq!(code, 2);
    assert!(
        stderr.contains("/nonexistent/config.yaml: cannot read the config file"),
        "{stderr}"
    );
}

#[test]
fn run_logs_json_runs_tasks_and_exits_zero_on_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let marker = tmp.path().join("ran");
    let text = format!(
        "version: 1\ncognite: {{project: demo, dry-run: true}}\nlogger: {{console: {{level: debug, format: json}}}}\n\
         shutdown-grace: 20s\ntasks:\n\
         \x20 - {{name: boot, type: command, schedule: {{type: startup}}, config: {{command: [touch, '{}']}}}}\n\
         \x20 - {{name: long, type: command, schedule: {{type: interval, expression: 1h}}, config: {{command: [sleep, '600']}}}}\n",
        marker.display()
    );
    let config = write_config(tmp.path(), &text);
    let mut child = spawn_service(&config);
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let (mut listening, mut boot_done, mut long_started) = (false, false, false);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(listening && boot_done && long_started) {
        assert!(
            Instant::now() < deadline,
            "no readiness in the log: {seen:?}"
        );
        let line = lines.next().expect("the process logs").unwrap();
        let event: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        for field in ["timestamp", "level", "target", "message"] {
            assert!(event.get(field).is_some(), "{field} missing in {line}");
        }
        listening |= event["message"] == "listening for SIGTERM, SIGINT and SIGHUP";
        boot_done |= event["message"] == "run succeeded" && event["task"] == "boot";
        long_started |= event["message"] == "run started" && event["task"] == "long";
        seen.push(event);
    }
    assert!(marker.exists(), "the startup task ran");
    let loaded = seen
        .iter()
        .find(|e| e["message"] == "config loaded")
        .expect("config loaded");
    assert_eq!(loaded["project"], "demo");
    assert_eq!(loaded["tasks"], 2);
    // SIGHUP (fatal by default) reloads the config; the file did not change, so nothing
    // changes: the process keeps running, and the long run goes on.
    let status = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    loop {
        let line = lines
            .next()
            .expect("the process logs after SIGHUP")
            .unwrap();
        assert!(
            !line.contains("config reloaded"),
            "an unchanged file reloaded: {line}"
        );
        if line.contains("reloading the config") {
            break;
        }
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "still running after SIGHUP"
    );
    let sent = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let exit = child.wait().unwrap();
    assert_eq!(exit.code(), Some(0), "{rest:?}");
    // The running `sleep 600` was cancelled at once, not waited for.
    assert!(
        sent.elapsed() < Duration::from_secs(10),
        "shutdown took {:?}",
        sent.elapsed()
    );
    assert!(rest.iter().any(|l| l.contains("SIGTERM")), "{rest:?}");
    assert!(
        rest.iter()
            .any(|l| l.contains("\"task\":\"long\"") && l.contains("cancelled")),
        "{rest:?}"
    );
}

#[test]
fn run_once_exit_codes_follow_the_task_results() {
    let tmp = tempfile::tempdir().unwrap();
    let task = |cmd: &str| {
        format!(
            "version: 1\ncognite: {{project: demo, dry-run: true}}\ntasks:\n\
             \x20 - {{name: boot, type: command, schedule: {{type: startup}}, config: {{command: [true]}}}}\n\
             \x20 - {{name: job, type: command, schedule: {{type: cron, expression: '0 3 * * *'}}, config: {{command: [sh, -c, '{cmd}']}}}}\n"
        )
    };
    let ok = write_config(tmp.path(), &task("exit 0"));
    let (code, _, stderr) = run(bin().args(["run", "--once", "-c"]).arg(&ok));
    assert_eq!(code, 0, "{stderr}");
    let failing = write_config(tmp.path(), &task("echo broken >&2; exit 4"));
    let (code, _, stderr) = run(bin()
        .args(["run", "--once", "-c"])
        .arg(&failing)
        .env("RUST_LOG", "info"));
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("status 4") && stderr.contains("broken"),
        "{stderr}"
    );
}

/// Without a `logger:` section a failing `--once` still says why on stderr (info by default),
/// and a state that cannot be saved at the end exits 1 naming the file (it exited 0).
#[test]
fn a_state_that_cannot_be_saved_exits_1_and_says_so_without_a_logger_section() {
    let tmp = tempfile::tempdir().unwrap();
    // The task removes the state file's folder (as an operator might): the final save fails.
    let folder = tmp.path().join("state-folder");
    let state = folder.join("state.json");
    let text = format!(
        "version: 1\ncognite: {{project: demo, dry-run: true}}\nstate-store: {{local: {{path: '{}'}}}}\ntasks:\n\
         \x20 - {{name: job, type: command, schedule: {{type: interval, expression: 1h}}, config: {{command: [rm, -rf, '{}']}}}}\n",
        state.display(),
        folder.display()
    );
    let config = write_config(tmp.path(), &text);
    let (code, _, stderr) = run(bin().args(["run", "--once", "-c"]).arg(&config));
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("run succeeded task=job"),
        "info logs by default: {stderr}"
    );
    assert!(
        stderr.contains("the state could not be saved: cannot save the state file")
            && stderr.contains("state-folder/state.json"),
        "{stderr}"
    );
}

/// Two processes on one local state file would overwrite each other's progress: the second
/// refuses to start (exit 2, naming the file); once the first is gone, even by kill -9, the
/// file is free again.
#[test]
fn a_second_process_on_the_same_state_file_refuses_to_start() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state/state.json");
    let text = format!(
        "version: 1\ncognite: {{project: demo, dry-run: true}}\nstate-store: {{local: {{path: '{}'}}}}\ntasks:\n\
         \x20 - {{name: job, type: command, schedule: {{type: interval, expression: 1h}}, config: {{command: ['true']}}}}\n",
        state.display()
    );
    let config = write_config(tmp.path(), &text);
    let mut first = spawn_service(&config);
    // Started (and holding the lock) once it has logged its first run.
    let mut lines = BufReader::new(first.stderr.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "the first process did not start");
        let line = lines.next().expect("the process logs").unwrap();
        if line.contains("run succeeded") {
            break;
        }
    }
    let (code, _, stderr) = run(bin().args(["run", "--once", "-c"]).arg(&config));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("state/state.json is in use by another process")
            && stderr.contains("state.json.lock"),
        "{stderr}"
    );
    first.kill().unwrap(); // SIGKILL, by PID: no clean shutdown
    first.wait().unwrap();
    let (code, _, stderr) = run(bin().args(["run", "--once", "-c"]).arg(&config));
    assert_eq!(code, 0, "the lock went with the process: {stderr}");
}

#[test]
fn unknown_task_types_and_bad_task_configs_stop_every_command_with_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let text = "version: 1\ncognite: {project: demo, dry-run: true}\ntasks:\n  - name: a\n    type: comand\n    schedule: {type: startup}\n  - name: b\n    type: command\n    schedule: {type: startup}\n    config: {command: []}\n";
    let config = write_config(tmp.path(), text);
    for args in [
        vec!["check-config", "-c"],
        vec!["run", "--once", "-c"],
        vec!["run", "-c"],
    ] {
        let (code, _, stderr) = run(bin().args(&args).arg(&config));
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(
            stderr.contains(
                ":5:11: tasks[0].type: unknown extractor type `comand`, did you mean `command`?"
            ),
            "{stderr}"
        );
        assert!(
            stderr.contains(":10:23: tasks[1].config.command: must name a program"),
            "{stderr}"
        );
    }
}

#[test]
fn rust_log_overrides_the_configured_level_and_text_is_the_default_format() {
    let tmp = tempfile::tempdir().unwrap();
    let text = GOOD
        .replace("PORT", "9")
        .replace("{level: debug, format: json}", "{level: error}");
    let config = write_config(tmp.path(), &text);
    let (code, _, stderr) = run(bin()
        .args(["run", "--once", "--dry-run", "-c"])
        .arg(&config));
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.is_empty(), "level error logs nothing here: {stderr}");
    let (code, _, stderr) = run(bin()
        .args(["run", "--once", "--dry-run", "-c"])
        .arg(&config)
        .env("RUST_LOG", "info"));
    assert_eq!(code, 0);
    assert!(
        stderr.contains(" INFO ") && stderr.contains("config loaded"),
        "{stderr}"
    );
    assert!(serde_json::from_str::<serde_json::Value>(stderr.lines().next().unwrap()).is_err());
}

mod token_command {
    use super::*;
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    fn config_for(dir: &Path, server: &MockServer) -> PathBuf {
        let text = GOOD
            .replace(
                "http://127.0.0.1:PORT/token",
                &format!("{}/token", server.uri()),
            )
            .replace("PORT", "9");
        write_config(dir, &text)
    }

    #[tokio::test]
    async fn prints_expiry_and_claims_never_the_token() {
        let server = MockServer::start().await;
        // header {"alg":"none"}, payload with the claims below, no signature check.
        let payload = "eyJhdWQiOiJodHRwczovL2FwaS5jb2duaXRlZGF0YS5jb20iLCJpc3MiOiJodHRwczovL2lzc3Vlci5leGFtcGxlIiwiZXhwIjoxNzAwMDAwMDAwLCJ0aWQiOiJ0ZW5hbnQtMSIsImFwcGlkIjoiYXBwLTEiLCJyb2xlcyI6WyJyZWFkZXIiXX0";
        let jwt = format!("eyJhbGciOiJub25lIn0.{payload}.c2ln");
        Mock::given(method("POST"))
            .and(path("/token"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "access_token": jwt, "token_type": "Bearer", "expires_in": 3600
            })))
            .mount(&server)
            .await;
        let tmp = tempfile::tempdir().unwrap();
        let config = config_for(tmp.path(), &server);
        let (code, stdout, stderr) =
            tokio::task::spawn_blocking(move || run(bin().args(["token", "-c"]).arg(&config)))
                .await
                .unwrap();
        assert_eq!(code, 0, "{stderr}");
        assert!(stdout.contains("token type:     Bearer"), "{stdout}");
        assert!(
            stdout.contains("refresh:        3300s after fetching"),
            "{stdout}"
        );
        assert!(stdout.contains("iss:   https://issuer.example"), "{stdout}");
        assert!(
            stdout.contains("tid:   tenant-1") && stdout.contains("roles: reader"),
            "{stdout}"
        );
        assert!(
            !stdout.contains(payload) && !stderr.contains(payload),
            "the token was printed"
        );
    }

    #[tokio::test]
    async fn run_once_with_a_bad_secret_exits_3_before_any_task_runs() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/token"))
            .respond_with(ResponseTemplate::new(401).set_body_json(serde_json::json!({
                "error": "invalid_client",
                "error_description": "AADSTS7000222: The provided client secret keys are expired.",
                "error_codes": [7000222], "trace_id": "tr-9", "correlation_id": "co-9"
            })))
            .mount(&server)
            .await;
        let tmp = tempfile::tempdir().unwrap();
        let marker = tmp.path().join("task-ran");
        let text = GOOD
            .replace(
                "http://127.0.0.1:PORT/token",
                &format!("{}/token", server.uri()),
            )
            .replace("PORT", "9")
            .replace(
                "config: {command: [echo, hello]}",
                &format!("config: {{command: [touch, '{}']}}", marker.display()),
            );
        let config = write_config(tmp.path(), &text);
        let (code, _, stderr) = tokio::task::spawn_blocking(move || {
            run(bin().args(["run", "--once", "-c"]).arg(&config))
        })
        .await
        .unwrap();
        assert_eq!(code, 3, "{stderr}");
        assert!(
            stderr.contains("AADSTS7000222") && stderr.contains("correlation id co-9"),
            "{stderr}"
        );
        assert!(
            !marker.exists(),
            "no task ran with credentials the identity provider refused"
        );
        assert!(!stderr.contains("very-secret-value-42"));
    }

    #[tokio::test]
    async fn a_bad_secret_exits_3_with_the_aadsts_code() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/token"))
            .respond_with(ResponseTemplate::new(401).set_body_json(serde_json::json!({
                "error": "invalid_client",
                "error_description": "AADSTS7000215: Invalid client secret provided.",
                "error_codes": [7000215], "trace_id": "tr-1", "correlation_id": "co-1"
            })))
            .mount(&server)
            .await;
        let tmp = tempfile::tempdir().unwrap();
        let config = config_for(tmp.path(), &server);
        let (code, _, stderr) =
            tokio::task::spawn_blocking(move || run(bin().args(["token", "-c"]).arg(&config)))
                .await
                .unwrap();
        assert_eq!(code, 3, "{stderr}");
        assert!(stderr.contains("AADSTS7000215"), "{stderr}");
        assert!(
            stderr.contains("trace id tr-1") && stderr.contains("correlation id co-1"),
            "{stderr}"
        );
        assert!(!stderr.contains("very-secret-value-42"), "{stderr}");
    }
}

/// The README's first command, exactly as written there (`cargo run --release -- run --once -c
/// config-examples/quickstart.yaml`, through `sh` from the repository root): the csv quickstart
/// prints its NDJSON batches on stdout and exits 0. `.ci/run` builds the release binary first.
#[test]
fn the_readme_quickstart_runs() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let line = readme
        .lines()
        .find(|l| l.starts_with("cargo run --release -- "))
        .expect("the README's first command");
    let command = line.split('#').next().unwrap().trim();
    assert_eq!(
        command,
        "cargo run --release -- run --once -c config-examples/quickstart.yaml"
    );
    let (code, stdout, stderr) = run(Command::new("sh")
        .args(["-c", command])
        .current_dir(repo())
        .env_remove("COGNITE_API_KEY")
        .env_remove("RUST_LOG"));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("run succeeded task=temperatures")
            && stderr.contains("run succeeded task=readings-to-raw")
            && stderr.contains("serving /metrics, /healthz and /readyz addr=127.0.0.1:9000"),
        "{stderr}"
    );
    // Every sample line arrives: 10 datapoints and 10 RAW rows, in NDJSON batches.
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let mut points = 0;
    let mut rows = Vec::new();
    for line in &lines {
        for item in line["body"]["items"].as_array().unwrap() {
            match line["endpoint"].as_str().unwrap() {
                "/timeseries/data" => points += item["datapoints"].as_array().unwrap().len(),
                "/raw/dbs/{db}/tables/{table}/rows" => {
                    rows.push(item["key"].as_str().unwrap().to_owned())
                }
                other => panic!("unexpected endpoint {other}"),
            }
        }
    }
    assert_eq!(points, 10, "{stdout}");
    assert_eq!(rows.len(), 10, "{stdout}");
    assert!(rows.contains(&"boiler-1@2026-11-27T09:00:00Z".to_owned()));
    assert!(
        stdout.contains(r#"{"timestamp":1795770000000,"value":95.5}"#),
        "{stdout}"
    );
}

/// `config-examples/dry-run.yaml` (command tasks) still runs.
#[test]
fn the_command_example_runs() {
    let (code, _, stderr) = run(bin()
        .args(["run", "--once", "-c", "config-examples/dry-run.yaml"])
        .current_dir(repo()));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("run succeeded") && stderr.contains("task=nightly"),
        "{stderr}"
    );
}

mod sharding_and_healthcheck {
    use super::*;

    fn twelve_tasks(dir: &Path) -> PathBuf {
        let mut text =
            String::from("version: 1\ncognite: {project: demo, dry-run: true}\ntasks:\n");
        for i in 0..12 {
            text.push_str(&format!(
                "  - {{name: task-{i}, type: command, schedule: {{type: startup}}, config: {{command: ['true']}}}}\n"
            ));
        }
        write_config(dir, &text)
    }

    fn tasks_of(stdout: &str) -> Vec<String> {
        stdout
            .lines()
            .filter_map(|l| l.trim().strip_prefix("- "))
            .map(|l| l.split_whitespace().next().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn shards_split_the_tasks_without_overlap_or_gaps() {
        let tmp = tempfile::tempdir().unwrap();
        let config = twelve_tasks(tmp.path());
        let mut seen = Vec::new();
        for i in 0..3 {
            let (code, stdout, stderr) = run(bin()
                .args(["check-config", "--shard", &format!("{i}/3"), "-c"])
                .arg(&config));
            assert_eq!(code, 0, "{stderr}");
            let tasks = tasks_of(&stdout);
            assert!(
                stdout.contains(&format!("shard {i}/3 runs {} of the 12 tasks", tasks.len())),
                "{stdout}"
            );
            seen.extend(tasks);
        }
        seen.sort();
        let mut all: Vec<String> = (0..12).map(|i| format!("task-{i}")).collect();
        all.sort();
        assert_eq!(seen, all, "every task on exactly one shard");

        // A StatefulSet pod `extractor-2` with EXTRACTOR_SHARD_COUNT=3 is shard 2/3.
        let (_, by_flag, _) = run(bin()
            .args(["check-config", "--shard", "2/3", "-c"])
            .arg(&config));
        let (code, by_env, stderr) = run(bin()
            .args(["check-config", "-c"])
            .arg(&config)
            .env("EXTRACTOR_SHARD_COUNT", "3")
            .env("HOSTNAME", "extractor-2"));
        assert_eq!(code, 0, "{stderr}");
        assert_eq!(tasks_of(&by_flag), tasks_of(&by_env));

        let (code, _, stderr) = run(bin()
            .args(["run", "--once", "--shard", "3/3", "-c"])
            .arg(&config));
        assert_eq!(code, 2);
        assert!(
            stderr.contains("shard index 3 is out of range for 3 shards"),
            "{stderr}"
        );
    }

    #[test]
    fn healthcheck_asks_healthz() {
        let tmp = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = write_config(
            tmp.path(),
            &format!(
                "version: 1\ncognite: {{project: demo, dry-run: true}}\nmetrics: {{server: {{host: 127.0.0.1, port: {port}}}}}\ntasks:\n  - {{name: t, type: command, schedule: {{type: interval, expression: 1h}}, config: {{command: ['true']}}}}\n"
            ),
        );
        let url = format!("http://127.0.0.1:{port}/healthz");
        let (code, _, stderr) = run(bin().args(["healthcheck", "--url", &url]));
        assert_eq!(code, 1, "nothing listens yet: {stderr}");
        let mut child = bin()
            .args(["run", "-c"])
            .arg(&config)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut code = 1;
        while Instant::now() < deadline {
            code = run(bin().args(["healthcheck", "--url", &url])).0;
            if code == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let _ = child.wait();
        assert_eq!(code, 0, "healthcheck against a running process");
    }
}

/// The configs in `deploy/kubernetes/configmap.yaml` and `deployment-ha.yaml` are valid with
/// the pods' environment.
#[test]
fn the_kubernetes_configmaps_hold_valid_configs() {
    for (file, expected) in [
        (
            "configmap.yaml",
            "state:    RAW extractor-state/cdf-extractor",
        ),
        (
            "deployment-ha.yaml",
            "lease:    `cdf-extractor` in a Kubernetes Lease as cdf-extractor-ha-7d9f-x2x4q",
        ),
    ] {
        let manifest =
            std::fs::read_to_string(repo().join("deploy/kubernetes").join(file)).unwrap();
        let (_, block) = manifest
            .split_once("  config.yaml: |\n")
            .expect("a config.yaml key");
        let block = block.split("\n---").next().unwrap();
        let config: String = block
            .lines()
            .map(|l| l.strip_prefix("    ").unwrap_or(l))
            .map(|l| format!("{l}\n"))
            .collect();
        let tmp = tempfile::tempdir().unwrap();
        let path = write_config(tmp.path(), &config);
        let (code, stdout, stderr) = run(bin()
            .args(["check-config", "-c"])
            .arg(&path)
            .env("COGNITE_PROJECT", "p")
            .env("COGNITE_CLIENT_ID", "id")
            .env("COGNITE_CLIENT_SECRET", "from-the-secret")
            .env("COGNITE_TENANT_ID", "tenant")
            .env("POD_NAME", "cdf-extractor-ha-7d9f-x2x4q")
            .env(
                "POSTGRES_CONNECTION",
                "host=db user=reader password=db-secret-pw dbname=plant sslmode=require",
            ));
        assert_eq!(code, 0, "{file}: {stderr}");
        assert!(!stdout.contains("db-secret-pw") && !stderr.contains("db-secret-pw"));
        assert!(
            stdout.contains("work-orders (postgres)") && stdout.contains(expected),
            "{file}: {stdout}"
        );
        assert!(!stdout.contains("from-the-secret"));
    }
}

#[test]
fn logger_file_is_rotated_by_size_keeps_its_retention_and_has_its_own_level() {
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("logs");
    let text = format!(
        "version: 1\ncognite: {{project: demo, dry-run: true}}\n\
         logger:\n  console: {{level: error}}\n\
         \x20 file: {{path: '{}', level: debug, rotation: size, max-size: 2KiB, retention: 2, format: json}}\n\
         tasks:\n\
         \x20 - {{name: chatty, type: command, schedule: {{type: interval, expression: 50ms}}, config: {{command: [echo, hello]}}}}\n",
        logs.join("app.log").display()
    );
    let config = write_config(tmp.path(), &text);
    let child = spawn_service(&config);
    // Enough runs to fill several 2 KiB files with debug lines.
    let deadline = Instant::now() + Duration::from_secs(20);
    let rotated = |logs: &Path| {
        std::fs::read_dir(logs)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with("app.log."))
                    .count()
            })
            .unwrap_or(0)
    };
    while rotated(&logs) < 2 {
        assert!(Instant::now() < deadline, "no rotation");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    // The console's level is its own: nothing below error there.
    let console = String::from_utf8_lossy(&out.stderr);
    assert!(!console.contains("run succeeded"), "{console}");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&logs)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    assert_eq!(
        files.len(),
        3,
        "app.log and two rotated files (retention 2): {files:?}"
    );
    let mut lines = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        assert!(
            text.len() <= 2048,
            "{} has {} bytes",
            file.display(),
            text.len()
        );
        for line in text.lines() {
            let event: serde_json::Value = serde_json::from_str(line).unwrap();
            assert!(event.get("level").is_some(), "{line}");
            lines += 1;
        }
    }
    assert!(lines > 10);
    let all: String = files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect();
    assert!(
        all.contains("\"level\":\"DEBUG\""),
        "the file's level is debug"
    );

    // A log file that cannot be written is a config error at start.
    let blocked = tmp.path().join("not-a-dir");
    std::fs::write(&blocked, "a file").unwrap();
    let text = format!(
        "version: 1\ncognite: {{project: demo, dry-run: true}}\nlogger: {{file: {{path: '{}'}}}}\n",
        blocked.join("app.log").display()
    );
    let config = write_config(tmp.path(), &text);
    let (code, _, stderr) = run(bin().args(["run", "--once", "-c"]).arg(&config));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("logger.file.path: cannot write the log file"),
        "{stderr}"
    );
}

#[test]
fn state_saves_failing_max_failures_times_in_a_row_stop_the_process() {
    let tmp = tempfile::tempdir().unwrap();
    let state_dir = tmp.path().join("state");
    std::fs::create_dir(&state_dir).unwrap();
    let text = format!(
        "version: 1\ncognite: {{project: demo, dry-run: true}}\n\
         state-store: {{local: {{path: '{}', save-interval: 200ms, max-failures: 3}}}}\n\
         tasks:\n\
         \x20 - {{name: t, type: command, schedule: {{type: interval, expression: 1h}}, config: {{command: [echo, hi]}}}}\n",
        state_dir.join("state.json").display()
    );
    let config = write_config(tmp.path(), &text);
    let child = spawn_service(&config);
    // A save writes beside the file and renames: without the folder every save fails.
    std::thread::sleep(Duration::from_millis(500));
    std::fs::remove_dir_all(&state_dir).unwrap();
    let started = Instant::now();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(started.elapsed() < Duration::from_secs(15), "{stderr}");
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("state saves failed 3 times in a row (state-store max-failures): stopping"),
        "{stderr}"
    );
    assert!(stderr.contains("failed_in_a_row=2"), "{stderr}");
}

#[test]
fn the_python_extractor_utils_shaped_configs_pass_check_config() {
    let tmp = tempfile::tempdir().unwrap();
    let secret = tmp.path().join("client-secret");
    std::fs::write(&secret, "from-a-file\n").unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut checked = 0;
    // An unencrypted certificate and key, as `openssl` makes them (None where it is missing).
    let certificate = util::openssl_client_pem(tmp.path(), "client");
    for entry in std::fs::read_dir(repo().join("config-examples/compat")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        if path.ends_with("certificate.yaml") && certificate.is_none() {
            continue;
        }
        let (code, out, err) = run(bin()
            .args(["check-config", "-c"])
            .arg(&path)
            .env("CLIENT_SECRET_FILE", &secret)
            .env("CERTIFICATE_FILE", certificate.clone().unwrap_or_default())
            .env("COGNITE_CLIENT_ID", "c"));
        assert_eq!(code, 0, "{}: {err}", path.display());
        assert!(out.contains("is valid"), "{out}");
        assert!(!out.contains("from-a-file") && !err.contains("from-a-file"));
        if path.ends_with("python-extractor-utils.yaml") {
            assert!(out.contains("version:  not given; read as 1"), "{out}");
            assert!(
                err.contains("`token-url` is used (as python-extractor-utils does)"),
                "{err}"
            );
            assert!(out.contains("pipeline: my-pipeline"), "{out}");
        }
        if path.ends_with("every-key.yaml") {
            assert!(
                out.contains("data set: external id `plant-data` (its id is looked up at start)")
                    && out.contains("prefix:   plant-a:")
                    && out
                        .contains("push to CDF as time series plant-a-metrics:<metric> every 30s"),
                "{out}"
            );
        }
        if path.ends_with("certificate.yaml") {
            assert!(out.contains("(certificate "), "{out}");
            assert!(
                err.contains("the certificate is used (as python-extractor-utils does)"),
                "{err}"
            );
        }
        if path.ends_with("older-spellings.yaml") {
            assert!(
                out.contains("pipeline: id 42 (its external id is looked up at start)"),
                "{out}"
            );
            assert!(err.contains("write `data-set: {id: ..}`"), "{err}");
        }
        checked += 1;
    }
    assert!(checked >= 5, "{checked} files");
}

/// Every key of python-extractor-utils' BaseConfig family (its `configtools` elements:
/// CogniteConfig, AuthenticatorConfig, CertificateConfig, ConnectionConfig, LoggingConfig,
/// MetricsConfig, StateStoreConfig, and the azure-keyvault loader) appears in a file of
/// `config-examples/compat/`, which the test above checks with check-config.
#[test]
fn the_compat_examples_cover_every_python_extractor_utils_key() {
    const KEYS: &[&str] = &[
        "type",
        "version",
        "azure-keyvault",
        "keyvault-name",
        "authentication-method",
        "tenant-id",
        "cognite",
        "project",
        "host",
        "idp-authentication",
        "client-id",
        "secret",
        "tenant",
        "token-url",
        "resource",
        "audience",
        "authority",
        "min-ttl",
        "scopes",
        "certificate",
        "authority-url",
        "data-set",
        "data-set-id",
        "external-id",
        "extraction-pipeline",
        "id",
        "timeout",
        "connection",
        "disable-gzip",
        "status-forcelist",
        "max-retries",
        "max-retries-connect",
        "max-retry-backoff",
        "max-connection-pool-size",
        "disable-ssl",
        "proxies",
        "security-categories",
        "external-id-prefix",
        "logger",
        "console",
        "level",
        "file",
        "path",
        "retention",
        "metrics",
        "push-gateways",
        "job-name",
        "username",
        "password",
        "clear-after",
        "push-interval",
        "asset-name",
        "asset-external-id",
        "server",
        "port",
        "state-store",
        "raw",
        "database",
        "table",
        "upload-interval",
        "local",
        "save-interval",
    ];
    let mut text = String::new();
    for entry in std::fs::read_dir(repo().join("config-examples/compat")).unwrap() {
        text += &std::fs::read_to_string(entry.unwrap().path()).unwrap();
    }
    let missing: Vec<&&str> = KEYS
        .iter()
        .filter(|k| {
            let underscored = k.replace('-', "_");
            !text.lines().any(|l| {
                let l = l.trim_start().trim_start_matches("- ");
                l.starts_with(&format!("{k}:")) || l.starts_with(&format!("{underscored}:"))
            })
        })
        .collect();
    assert!(missing.is_empty(), "not in any compat example: {missing:?}");
}

/// `run -c config` as a service, its standard error piped (stop it with a signal).
fn spawn_service(config: &Path) -> std::process::Child {
    bin()
        .args(["run", "-c"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}
