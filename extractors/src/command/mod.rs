//! `command`: runs a program on the task's schedule, like Telegraf's `exec` or a cron job, with
//! the runtime's scheduling, timeouts, retries, metrics and shutdown.
//!
//! ```yaml
//! - name: nightly-cleanup
//!   type: command
//!   schedule: {type: cron, expression: "0 3 * * *"}
//!   config:
//!     command: ["/usr/local/bin/cleanup", "--older-than", "7d"]
//!     env: {MODE: nightly}
//! ```
//!
//! Exit status 0 is a successful run; 75 (`EX_TEMPFAIL`) is a transient failure, retried per the
//! task's `retry`; any other status, or death by a signal, is a permanent failure. Standard
//! output and error are logged line by line. A cancelled run (timeout, shutdown) kills the
//! program.

pub mod config;

use std::process::Stdio;

use extractor_runtime::extractor::{Extractor, ExtractorFuture, Rejection, RunContext, TaskError};
use tokio::io::{AsyncBufReadExt, BufReader};

pub use config::CommandConfig;

/// Exit status meaning "try again later" (sysexits.h).
const EX_TEMPFAIL: i32 = 75;

/// The `command` extractor.
pub struct Command {
    config: CommandConfig,
}

impl Command {
    /// Checks the config: a program must be named.
    pub fn new(config: CommandConfig) -> Result<Self, Rejection> {
        match config.command.first() {
            Some(program) if !program.trim().is_empty() => Ok(Command { config }),
            _ => Err(Rejection::at(
                "command",
                "must name a program, like [\"/bin/echo\", \"hello\"]",
            )),
        }
    }
}

async fn log_lines(task: String, stream: &'static str, reader: impl tokio::io::AsyncRead + Unpin) {
    let mut lines = BufReader::new(reader).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::info!(target: "extractors::command", task = %task, stream, "{line}");
    }
}

impl Extractor for Command {
    fn run(&self, ctx: RunContext) -> ExtractorFuture<'_> {
        Box::pin(async move {
            let program = &self.config.command[0];
            let mut cmd = tokio::process::Command::new(program);
            cmd.args(&self.config.command[1..])
                .envs(&self.config.env)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true);
            if let Some(dir) = &self.config.working_dir {
                cmd.current_dir(dir);
            }
            let mut child = cmd.spawn().map_err(|e| {
                TaskError::permanent(format!("cannot start `{program}`")).with_source(e)
            })?;
            let out = child
                .stdout
                .take()
                .map(|s| log_lines(ctx.task().to_owned(), "stdout", s));
            let err = child
                .stderr
                .take()
                .map(|s| log_lines(ctx.task().to_owned(), "stderr", s));
            let logging = async {
                if let Some(o) = out {
                    o.await;
                }
            };
            let logging_err = async {
                if let Some(e) = err {
                    e.await;
                }
            };
            let wait = async {
                let (status, (), ()) = tokio::join!(child.wait(), logging, logging_err);
                status
            };
            let status = tokio::select! {
                s = wait => s.map_err(|e| TaskError::transient("waiting for the program failed").with_source(e))?,
                () = ctx.cancelled() => {
                    return Err(TaskError::transient(format!("cancelled; `{program}` was killed")));
                }
            };
            match status.code() {
                Some(0) => Ok(()),
                Some(EX_TEMPFAIL) => Err(TaskError::transient(format!(
                    "`{program}` exited with {EX_TEMPFAIL} (try again later)"
                ))),
                Some(code) => Err(TaskError::permanent(format!(
                    "`{program}` exited with status {code}"
                ))),
                None => Err(TaskError::permanent(format!(
                    "`{program}` was killed by a signal"
                ))),
            }
        })
    }

    fn finishes_by_itself(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests;
