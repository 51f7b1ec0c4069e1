//! The custom-extractor example (`runtime/examples/custom_extractor/`) with its config from
//! `config-examples/custom-extractor/`, run once through the public API.

#[path = "../examples/custom_extractor/hello.rs"]
mod hello;

use std::path::Path;

use extractor_runtime::config::{Config, LoadOptions};
use extractor_runtime::extractor::Registry;
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
    hello::register(&mut registry);
    registry
}

#[tokio::test]
async fn the_example_runs_once() {
    let runtime = Runtime::new(example_config(|t| t), registry());
    runtime.check().unwrap();
    let report = runtime.run(Mode::Once, Default::default()).await.unwrap();
    assert_eq!(
        report.summary.runs,
        vec![("greet".to_owned(), RunResult::Success)]
    );
}

#[tokio::test]
async fn its_config_is_validated_by_its_own_type() {
    let runtime = Runtime::new(
        example_config(|t| {
            t.replace(
                "greeting: \"Hello from a custom extractor\"",
                "greeting: ''",
            )
        }),
        registry(),
    );
    let err = runtime.check().unwrap_err().to_string();
    assert!(
        err.contains(
            "custom-extractor/config.yaml:15:7: tasks[0].config: `greeting` must not be empty"
        ),
        "{err}"
    );
    let runtime = Runtime::new(
        example_config(|t| t.replace("greeting:", "greting:")),
        registry(),
    );
    let err = runtime.check().unwrap_err().to_string();
    assert!(
        err.contains("tasks[0].config.greting: unknown key `greting`, did you mean `greeting`?"),
        "{err}"
    );
}
