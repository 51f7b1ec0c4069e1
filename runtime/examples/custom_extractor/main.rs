//! A production binary with a custom extractor type: every subcommand, the signals and the exit
//! codes come from the library. `cargo run -p extractor-runtime --example custom_extractor --
//! run --once -c config-examples/custom-extractor/config.yaml`

mod hello;

fn main() -> std::process::ExitCode {
    let mut registry = extractor_runtime::Registry::new();
    registry.register_with_setup("hello", hello::new);
    extractor_runtime::cli::main(registry)
}
