//! `replay`: sends the items of a dead-letter file again, once the cause is fixed (the time
//! series created, the permission granted). The file is only read; what CDF refuses again is
//! written to a new file beside it (`<file>.again-<time>.ndjson`), so a replay can be repeated
//! on what is left.

use std::io::{BufRead as _, Read as _};
use std::path::{Path, PathBuf};

use super::{CliError, Code, Outcome};
use crate::queues::{
    Datapoints, DeadLetter, Events, Instances, Kind, Policy, Queues, RawRows, UploadQueue,
};

/// The longest line read; a longer one is counted as unreadable.
const MAX_LINE: usize = 64 * 1024 * 1024;

/// Where the items refused again go.
fn again_path(file: &Path) -> PathBuf {
    let stamp = jiff::Timestamp::now()
        .strftime("%Y%m%dT%H%M%SZ")
        .to_string();
    let mut name = file.file_name().unwrap_or_default().to_owned();
    name.push(format!(".again-{stamp}.ndjson"));
    file.with_file_name(name)
}

/// Queues one dead-letter line's item; the error says why it cannot be read.
async fn queue_line(queues: &Queues, line: &[u8]) -> Result<(), String> {
    let mut v: serde_json::Value =
        serde_json::from_slice(line).map_err(|e| format!("not JSON: {e}"))?;
    let item = v["item"].take();
    async fn add<K: Kind>(queue: &UploadQueue<K>, item: serde_json::Value) -> Result<(), String> {
        let stored = K::from_json(item)?;
        queue
            .add_entry(stored, None, Policy::default())
            .await
            .map_err(|e| e.to_string())
    }
    match v["queue"].as_str() {
        Some(q) if q == RawRows::NAME => add(&queues.raw, item).await,
        Some(q) if q == Datapoints::NAME => add(&queues.datapoints, item).await,
        Some(q) if q == Events::NAME => add(&queues.events, item).await,
        Some(q) if q == Instances::NAME => add(&queues.instances, item).await,
        other => Err(format!("unknown queue {other:?}")),
    }
}

/// Replays `file` through the CDF project of the config at `path`.
pub(crate) fn replay(
    path: &Path,
    file: &Path,
    options: &crate::config::LoadOptions,
) -> Result<Outcome, CliError> {
    let config = super::load(path, options)?;
    let reader = std::fs::File::open(file)
        .map(std::io::BufReader::new)
        .map_err(|e| {
            CliError::new(
                Code::Config,
                anyhow::anyhow!("cannot read {}: {e}", file.display()),
            )
        })?;
    let again = again_path(file);
    let network = super::network(path, &config)?;
    super::current_thread()?.block_on(async {
        let tokens = match (&config.cognite.idp_authentication, config.cognite.dry_run) {
            (Some(idp), false) => Some(super::token_manager(idp, &network)?),
            _ => None,
        };
        let registry = prometheus::Registry::new();
        let dry_run = config.cognite.dry_run.then(crate::cdf::DryRunSink::stdout);
        let cdf = crate::cdf::CdfClient::new(&config.cognite, tokens.clone(), dry_run, &registry)
            .map_err(|e| CliError::new(Code::Config, e))?;
        let dead_letter = DeadLetter::open(&again).map_err(|e| {
            CliError::new(
                Code::Config,
                anyhow::anyhow!("cannot create {}: {e}", again.display()),
            )
        })?;
        let queues = Queues::with_dead_letter(
            cdf,
            config.upload_queue.max_queue_size,
            &registry,
            Some(dead_letter),
        )
        .map_err(|e| CliError::new(Code::Config, e))?;
        let (mut read, mut unreadable) = (0usize, Vec::new());
        let mut reader = reader;
        let mut line = Vec::new();
        let mut number = 0;
        loop {
            line.clear();
            let n = (&mut reader)
                .take(MAX_LINE as u64 + 1)
                .read_until(b'\n', &mut line)
                .map_err(|e| {
                    CliError::new(
                        Code::Config,
                        anyhow::anyhow!("cannot read {}: {e}", file.display()),
                    )
                })?;
            if n == 0 {
                break;
            }
            number += 1;
            if line.len() > MAX_LINE {
                unreadable.push(format!("line {number}: longer than {MAX_LINE} bytes"));
                // The rest of the line.
                let mut rest = Vec::new();
                let _ = reader.read_until(b'\n', &mut rest);
                continue;
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match queue_line(&queues, &line).await {
                Ok(()) => read += 1,
                Err(e) => unreadable.push(format!("line {number}: {e}")),
            }
        }
        let flushed = queues.flush().await;
        if let Some(t) = &tokens {
            t.shutdown();
        }
        let refused = queues.refused();
        let pending = queues.pending();
        if refused == 0 {
            let _ = std::fs::remove_file(&again);
        }
        println!(
            "replayed {read} item(s) from {}: {} accepted, {refused} refused again{}{}",
            file.display(),
            read - refused - pending,
            if refused > 0 {
                format!(" (written to {})", again.display())
            } else {
                String::new()
            },
            if pending > 0 {
                format!(", {pending} not sent")
            } else {
                String::new()
            },
        );
        for u in unreadable.iter().take(10) {
            eprintln!("warning: {}: {u}", file.display());
        }
        if let Err(e) = flushed {
            return Err(CliError::new(
                Code::TaskFailed,
                anyhow::anyhow!("{pending} item(s) could not be sent: {e}"),
            ));
        }
        Ok(if refused > 0 || !unreadable.is_empty() {
            Outcome::TaskFailed
        } else {
            Outcome::Success
        })
    })
}
