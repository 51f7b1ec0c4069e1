//! The `extractor-runtime` command line. Parsing and exit codes only; the work is in `cli`.

use std::process::ExitCode;

use clap::Parser;

mod cli;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(outcome) => outcome.exit_code(),
        Err(err) => {
            eprintln!("error: {:#}", err.error);
            ExitCode::from(err.code as u8)
        }
    }
}
