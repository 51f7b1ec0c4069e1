//! `extractor-runtime run`.

use std::path::Path;

use crate::runtime::{Mode, Runtime};
use crate::supervisor::{ReloadHandle, Trigger};
use tokio_util::sync::CancellationToken;

use super::{CliError, Code, Outcome};

pub(crate) fn run(
    registry: crate::extractor::Registry,
    path: &Path,
    once: bool,
    dry_run: bool,
    reset_state: bool,
    shard: Option<&str>,
) -> Result<Outcome, CliError> {
    let options = crate::config::LoadOptions {
        force_dry_run: dry_run,
        versions: registry.versions().to_vec(),
    };
    let mut config = super::load_quiet(path, &options)?;
    let shard = super::shard(shard)?;
    let all = super::apply_shard(&mut config, shard);
    crate::logging::init(&config.logger).map_err(|e| CliError::new(Code::Config, e))?;
    match config.remote() {
        Some(remote) => tracing::info!(
            config = %path.display(),
            project = %config.cognite.project,
            source = %crate::source::remote_name(remote),
            "remote config file loaded; fetching the config from CDF"
        ),
        None => tracing::info!(
            config = %path.display(),
            project = %config.cognite.project,
            dry_run = config.cognite.dry_run,
            tasks = config.tasks.len(),
            "config loaded"
        ),
    }
    if let Some(shard) = shard {
        tracing::info!(%shard, tasks = config.tasks.len(), of = all, "running this shard's tasks");
    }
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    if let Some(warning) = super::certificate_warning(&config) {
        tracing::warn!("{warning}");
    }
    let registry = std::sync::Arc::new(registry);
    let (runtime, reload) = Runtime::build(config, &registry)?
        .with_reset_state(reset_state)
        .reloadable(registry, path, shard, options);
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::new(Code::Config, e))?;
    let mode = if once { Mode::Once } else { Mode::Service };
    let report = tokio.block_on(async {
        let shutdown = CancellationToken::new();
        let reload = (mode == Mode::Service).then_some(reload);
        tokio::spawn(on_signals(shutdown.clone(), reload));
        runtime.run(mode, shutdown).await
    });
    let report = report?;
    let summary = report.summary;
    let failed = summary.failed;
    tracing::info!(
        runs = summary.total,
        failed,
        unsent = report.unsent,
        refused = report.refused,
        "stopped"
    );
    if report.refused > 0 {
        let kept = match &report.dead_letter {
            Some(path) => format!("written to {}", path.display()),
            None => "not kept: set upload-queue.dead-letter to keep them".to_owned(),
        };
        eprintln!(
            "{} item(s) were refused by CDF ({kept}); the logs name them",
            report.refused
        );
    }
    if let Some(lost) = &report.lease_lost {
        return Err(CliError::new(
            Code::Standby,
            anyhow::anyhow!(
                "stopped leading: {lost}; another replica takes over (restart this one to stand by again)"
            ),
        ));
    }
    if let Some(e) = &report.state_error {
        eprintln!("the state could not be saved: {e}; the next start re-reads what was delivered");
        return Ok(Outcome::TaskFailed);
    }
    match mode {
        Mode::Once if summary.any_authentication_failure() => Err(CliError::new(
            Code::Auth,
            anyhow::anyhow!(
                "a task failed to authenticate: the identity provider refused the credentials"
            ),
        )),
        Mode::Once if failed > 0 || report.unsent > 0 || report.refused > 0 => {
            Ok(Outcome::TaskFailed)
        }
        _ => Ok(Outcome::Success),
    }
}

/// The first SIGTERM or SIGINT starts a graceful shutdown; a second one exits at once. SIGHUP
/// (by default fatal, skipping every shutdown step) reloads the config; with `--once` it is
/// logged and ignored.
async fn on_signals(shutdown: CancellationToken, reload: Option<ReloadHandle>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot listen for signals");
        return;
    };
    tracing::debug!("listening for SIGTERM, SIGINT and SIGHUP");
    let mut stops = 0;
    loop {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
            _ = hup.recv() => {
                match &reload {
                    Some(r) => {
                        tracing::info!(signal = "SIGHUP", "signal received: reloading the config");
                        r.trigger(Trigger::Signal);
                    }
                    None => tracing::warn!(signal = "SIGHUP", "SIGHUP ignored: a --once run does not reload its config"),
                }
                continue;
            }
        };
        stops += 1;
        if stops == 1 {
            tracing::info!(
                signal = name,
                "signal received: stopping the scheduler and cancelling runs (send it again to exit at once)"
            );
            shutdown.cancel();
        } else {
            tracing::warn!(signal = name, "second signal: exiting at once");
            std::process::exit(1);
        }
    }
}
