//! The `extractor-runtime` binary: the library's command line with the built-in extractors.

use std::process::ExitCode;

fn main() -> ExitCode {
    extractor_runtime::cli::main(extractors::builtins())
}
