//! The custom-extractor example (`runtime/examples/custom_extractor/`) with its config from
//! `config-examples/custom-extractor/`, run once through the public API.

#[path = "../examples/custom_extractor/hello.rs"]
mod hello;

use std::path::Path;

use extractor_runtime::Registry;
use extractor_runtime::config::{Config, LoadOptions};
use extractor_runtime::runtime::{Mode, Runtime};
use extractor_runtime::scheduler::RunResult;

fn example_config(edit: impl Fn(String) -> String) -> Config {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../config-examples/custom-extractor/config.yaml");
    let text = edit(std::fs::read_to_string(&path).unwrap());
    let env = |_: &str| None;
    Config::from_yaml(&text, Some(&path), &env, &LoadOptions::default()).unwrap()
}

fn registry() -> Registry {
    let mut registry = Registry::new();
    registry.register_with_setup("hello", hello::new);
    registry
}

#[tokio::test]
async fn the_example_runs_once() {
    let runtime = Runtime::build(example_config(|t| t), &registry()).unwrap();
    let report = runtime.run(Mode::Once, Default::default()).await.unwrap();
    assert_eq!(
        report.summary.runs,
        vec![("greet".to_owned(), RunResult::Success)]
    );
}

#[tokio::test]
async fn its_config_is_validated_by_its_own_type() {
    let built = Runtime::build(
        example_config(|t| {
            t.replace(
                "greeting: \"Hello from a custom extractor\"",
                "greeting: ''",
            )
        }),
        &registry(),
    );
    let err = built.err().unwrap().to_string();
    assert!(
        err.contains(
            "custom-extractor/config.yaml:15:7: tasks[0].config: `greeting` must not be empty"
        ),
        "{err}"
    );
    let built = Runtime::build(
        example_config(|t| t.replace("greeting:", "greting:")),
        &registry(),
    );
    let err = built.err().unwrap().to_string();
    assert!(
        err.contains("tasks[0].config.greting: unknown key `greting`, did you mean `greeting`?"),
        "{err}"
    );
}

/// The example built as the binary a user ships (`cargo build --example custom_extractor`).
fn example_binary() -> std::path::PathBuf {
    static BUILT: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            // With the workspace's features, as the test build has them: nothing to compile
            // after `cargo test` (which builds the examples too).
            let status = std::process::Command::new(env!("CARGO"))
                .args([
                    "build",
                    "-q",
                    "--workspace",
                    "--example",
                    "custom_extractor",
                ])
                .status()
                .unwrap();
            assert!(status.success(), "the example builds");
            // target/<profile>/deps/<this test> -> target/<profile>/examples/custom_extractor
            let deps = std::env::current_exe().unwrap();
            let profile = deps.parent().unwrap().parent().unwrap();
            let binary = profile.join("examples/custom_extractor");
            assert!(binary.exists(), "{} is missing", binary.display());
            binary
        })
        .clone()
}

/// The example's config with a local state file in `dir` and `extra` YAML appended to the task.
fn example_file(dir: &Path, extra: &str) -> std::path::PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../config-examples/custom-extractor/config.yaml");
    let text = std::fs::read_to_string(path).unwrap().replace(
        "tasks:",
        &format!(
            "state-store: {{local: {{path: '{}'}}}}\ntasks:",
            dir.join("state.json").display()
        ),
    ) + extra;
    let file = dir.join("config.yaml");
    std::fs::write(&file, text).unwrap();
    file
}

fn example(args: &[&str], config: &Path) -> std::process::Output {
    std::process::Command::new(example_binary())
        .args(args)
        .arg("-c")
        .arg(config)
        .env_remove("COGNITE_API_KEY")
        .output()
        .unwrap()
}

/// Issue 15: the example is a complete production binary: every subcommand and exit code of
/// the built-in one, from `cli::main`.
#[test]
fn the_example_binary_has_every_subcommand_and_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let config = example_file(dir.path(), "");
    let text = |o: &std::process::Output| {
        String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr)
    };

    let checked = example(&["check-config"], &config);
    assert_eq!(checked.status.code(), Some(0), "{}", text(&checked));
    assert!(text(&checked).contains("greet"), "{}", text(&checked));

    // Two batch runs: the typed watermark survives in the state file.
    for runs in ["runs=0", "runs=1"] {
        let run = example(&["run", "--once"], &config);
        assert_eq!(run.status.code(), Some(0), "{}", text(&run));
        assert!(text(&run).contains("Hello from a custom extractor"));
        assert!(text(&run).contains(runs), "{runs}: {}", text(&run));
    }
    let state = std::fs::read_to_string(dir.path().join("state.json")).unwrap();
    assert!(state.contains("\"greet:runs\""), "{state}");

    let schema = std::process::Command::new(example_binary())
        .arg("schema")
        .output()
        .unwrap();
    assert_eq!(schema.status.code(), Some(0));
    let schema: serde_json::Value = serde_json::from_slice(&schema.stdout).unwrap();
    assert!(
        schema.to_string().contains("\"greeting\""),
        "the hello block's schema is in: {schema}"
    );

    // COGNITE_API_KEY: refused before anything else, exit 2.
    let refused = std::process::Command::new(example_binary())
        .args(["run", "--once", "-c"])
        .arg(&config)
        .env("COGNITE_API_KEY", "")
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    assert!(
        text(&refused).contains("COGNITE_API_KEY"),
        "{}",
        text(&refused)
    );

    // A failing task: exit 1. A config its type rejects: exit 2, naming the key.
    let failing = example_file(dir.path(), "      fail: true\n");
    let failed = example(&["run", "--once"], &failing);
    assert_eq!(failed.status.code(), Some(1), "{}", text(&failed));
    let bad = example_file(dir.path(), "      greting: typo\n");
    let rejected = example(&["check-config"], &bad);
    assert_eq!(rejected.status.code(), Some(2), "{}", text(&rejected));
    assert!(
        text(&rejected).contains("tasks[0].config.greting: unknown key `greting`"),
        "{}",
        text(&rejected)
    );
    // `token` on a dry-run config is a usage error.
    let token = example(&["token"], &config);
    assert_eq!(token.status.code(), Some(2), "{}", text(&token));
}

/// As a service, SIGTERM stops it within the grace with exit 0, after one run.
#[test]
fn the_example_binary_stops_on_sigterm() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let config = example_file(dir.path(), "");
    let mut child = std::process::Command::new(example_binary())
        .args(["run", "-c"])
        .arg(&config)
        .env_remove("COGNITE_API_KEY")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        assert!(std::time::Instant::now() < deadline, "no run in the log");
        let line = lines.next().expect("the process logs").unwrap();
        if line.contains("run succeeded") {
            break;
        }
    }
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let exit = child.wait().unwrap();
    assert_eq!(exit.code(), Some(0), "{rest:?}");
    assert!(rest.iter().any(|l| l.contains("SIGTERM")), "{rest:?}");
}

/// Issue 15: an extractor's own metric, registered at construction through `Setup`, is served
/// with the runtime's, once per task (the `task` label keeps two tasks of one type apart).
#[tokio::test]
async fn an_extractors_own_metric_is_labelled_with_its_task() {
    let config = example_config(|t| {
        t + "  - name: greet-again\n    type: hello\n    schedule: {type: interval, expression: 1m}\n    config: {greeting: again}\n"
    });
    let runtime = Runtime::build(config, &registry()).unwrap();
    let metrics = runtime.metrics().clone();
    let report = runtime.run(Mode::Once, Default::default()).await.unwrap();
    assert_eq!(report.summary.failed, 0);
    let text = String::from_utf8(metrics.render()).unwrap();
    assert!(
        text.contains("# TYPE hello_greetings_total counter"),
        "{text}"
    );
    assert_eq!(
        text.matches("# TYPE hello_greetings_total").count(),
        1,
        "one family: {text}"
    );
    for task in ["greet", "greet-again"] {
        assert_eq!(
            metrics.value("hello_greetings_total", &[("task", task)]),
            Some(1.0),
            "{task}: {text}"
        );
    }
}

/// Issue 15: watermarks are typed; a stored value of another type is a permanent error naming
/// the key, never a silent start from scratch.
#[tokio::test]
async fn a_watermark_of_another_type_is_an_error_naming_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let (ctx, _capture) =
        extractor_runtime::testing::context("plant", Some(&dir.path().join("s.json")), 100);
    let upload = ctx.upload();
    assert_eq!(upload.resume::<u64>("pump").unwrap(), None);
    upload.checkpoint("pump", &"not a number");
    upload.settled().await.unwrap();
    assert_eq!(
        upload.resume::<String>("pump").unwrap().as_deref(),
        Some("not a number")
    );
    let e = upload.resume::<u64>("pump").unwrap_err();
    assert_eq!(e.kind(), extractor_runtime::TaskErrorKind::Permanent);
    assert!(e.to_string().contains("`plant:pump`"), "{e}");
    // A struct of the extractor's own round-trips.
    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Mark {
        offset: u64,
        etag: String,
    }
    let mark = Mark {
        offset: 7,
        etag: "x".into(),
    };
    upload.checkpoint("file", &mark);
    assert_eq!(upload.resume::<Mark>("file").unwrap(), Some(mark));
}
