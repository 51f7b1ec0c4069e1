//! A binary with a custom extractor type: `cargo run -p extractor-runtime --example
//! custom_extractor -- config-examples/custom-extractor/config.yaml`.

mod hello;

use std::process::ExitCode;

use extractor_runtime::config::{Config, LoadOptions};
use extractor_runtime::extractor::Registry;
use extractor_runtime::runtime::{Mode, Runtime};

#[tokio::main]
async fn main() -> ExitCode {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "config-examples/custom-extractor/config.yaml".into());
    let config = match Config::load(path.as_ref(), &LoadOptions::default()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let _ = extractor_runtime::logging::init(&config.logger);
    let mut registry = Registry::new();
    hello::register(&mut registry);
    match Runtime::new(config, registry)
        .run(Mode::Once, Default::default())
        .await
    {
        Ok(report) if !report.summary.any_failed() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
