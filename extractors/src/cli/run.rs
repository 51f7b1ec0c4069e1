//! `extractor-runtime run`.

use std::path::Path;

use super::{CliError, Code, Outcome};

pub fn run(path: &Path, once: bool, dry_run: bool) -> Result<Outcome, CliError> {
    let config = super::load(path, dry_run)?;
    extractor_runtime::logging::init(&config.logger).map_err(|e| CliError::new(Code::Config, e))?;
    tracing::info!(
        config = %path.display(),
        project = %config.cognite.project,
        dry_run = config.cognite.dry_run,
        tasks = config.tasks.len(),
        "config loaded"
    );
    if once {
        tracing::info!("--once: no scheduler in this version, exiting");
        return Ok(Outcome::Success);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::new(Code::Config, e))?;
    runtime
        .block_on(wait_for_signal())
        .map_err(|e| CliError::new(Code::Config, e))?;
    tracing::info!("shutting down");
    Ok(Outcome::Success)
}

async fn wait_for_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tracing::info!("waiting for SIGTERM or SIGINT (task scheduling is not implemented yet)");
    tokio::select! {
        _ = term.recv() => tracing::info!(signal = "SIGTERM", "signal received"),
        _ = int.recv() => tracing::info!(signal = "SIGINT", "signal received"),
    }
    Ok(())
}
