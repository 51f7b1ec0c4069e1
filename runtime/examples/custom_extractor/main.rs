//! A production binary with a custom extractor type: the whole command line (`run [--once]`,
//! `check-config`, `schema`, `token`, `login`, `logout`, `healthcheck`), signals and exit codes
//! come from the library.
//!
//! `cargo run -p extractor-runtime --example custom_extractor -- run --once -c config-examples/custom-extractor/config.yaml`

mod hello;

fn main() -> std::process::ExitCode {
    let mut registry = extractor_runtime::extractor::Registry::new();
    hello::register(&mut registry);
    extractor_runtime::cli::main(registry)
}
