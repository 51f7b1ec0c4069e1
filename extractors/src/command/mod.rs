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
//! output and error are logged line by line, as bytes (non-UTF-8 shown lossily, lines cut at
//! 16 KiB). The program runs in its own process group, killed when the run ends (children it
//! left behind), times out or is cancelled.

pub mod config;

use std::process::Stdio;

use extractor_runtime::{Extractor, Rejection, RunContext, TaskError};
use tokio::io::{AsyncBufReadExt, BufReader};

pub use config::{CommandConfig, Records};

use crate::destination::{Destination, SendError};

/// Exit status meaning "try again later" (sysexits.h).
const EX_TEMPFAIL: i32 = 75;

/// The `command` extractor.
pub struct Command {
    config: CommandConfig,
    /// With `records: ndjson`.
    destination: Option<Destination>,
}

impl Command {
    /// Checks the config: a program must be named; `records: ndjson` needs a `destination`.
    pub fn new(config: CommandConfig) -> Result<Self, Rejection> {
        let mut problems = Rejection::new();
        if config.command.first().is_none_or(|p| p.trim().is_empty()) {
            problems.push(
                "command",
                "must name a program, like [\"/bin/echo\", \"hello\"]",
            );
        }
        let destination = match (config.records, &config.destination) {
            (Records::Ndjson, Some(d)) => Destination::new(d)
                .map_err(|r| problems.extend_under("destination", r))
                .ok(),
            (Records::Ndjson, None) => {
                problems.push(
                    "destination",
                    "`records: ndjson` needs a `destination` for the records",
                );
                None
            }
            (Records::None, Some(_)) => {
                problems.push(
                    "destination",
                    "a `destination` applies to `records: ndjson`",
                );
                None
            }
            (Records::None, None) => None,
        };
        if problems.is_empty() {
            Ok(Command {
                config,
                destination,
            })
        } else {
            Err(problems)
        }
    }
}

/// The longest record line read; a longer one is rejected (counted), never held whole.
const MAX_RECORD_LINE: usize = 1024 * 1024;

/// Sends each line of `reader` (a JSON object) through `destination`; a line that is not one
/// is logged with its number and counted as rejected. Reads to the end, so the program never
/// dies of SIGPIPE. `Err` when the queue refused a record.
async fn send_lines(
    ctx: &RunContext,
    destination: &Destination,
    reader: impl tokio::io::AsyncRead + Unpin,
) -> Result<(), TaskError> {
    let upload = destination.upload(ctx);
    let mut lines = BoundedLines::new(reader, MAX_RECORD_LINE);
    let mut number = 0u64;
    while let Some((line, cut)) = lines.next().await {
        number += 1;
        send_line(ctx, destination, &upload, line, number, cut > 0).await?;
    }
    Ok(())
}

/// A stream read line by line, keeping at most `max` bytes of each line (the rest is counted,
/// never held): memory stays bounded whatever the program prints.
struct BoundedLines<R> {
    reader: BufReader<R>,
    line: Vec<u8>,
    cut: usize,
    max: usize,
    ended: bool,
}

impl<R: tokio::io::AsyncRead + Unpin> BoundedLines<R> {
    fn new(reader: R, max: usize) -> Self {
        BoundedLines {
            reader: BufReader::new(reader),
            line: Vec::new(),
            cut: 0,
            max,
            ended: false,
        }
    }

    /// The next line, without its newline, and how many of its bytes were cut; a last line
    /// without a newline too. `None` at the end of the stream (or a read error).
    async fn next(&mut self) -> Option<(&[u8], usize)> {
        self.line.clear();
        self.cut = 0;
        while !self.ended {
            let buf = match self.reader.fill_buf().await {
                Ok([]) | Err(_) => {
                    self.ended = true;
                    break;
                }
                Ok(buf) => buf,
            };
            let (part, end) = match buf.iter().position(|b| *b == b'\n') {
                Some(i) => (&buf[..i], Some(i + 1)),
                None => (buf, None),
            };
            let room = self.max.saturating_sub(self.line.len());
            self.line.extend_from_slice(&part[..part.len().min(room)]);
            self.cut += part.len().saturating_sub(room);
            let used = end.unwrap_or(buf.len());
            self.reader.consume(used);
            if end.is_some() {
                return Some((&self.line, self.cut));
            }
        }
        (!self.line.is_empty() || self.cut > 0).then_some((&self.line[..], self.cut))
    }
}

async fn send_line(
    ctx: &RunContext,
    destination: &Destination,
    upload: &extractor_runtime::upload::Upload,
    line: &[u8],
    number: u64,
    too_long: bool,
) -> Result<(), TaskError> {
    let text = String::from_utf8_lossy(line);
    let text = text.trim();
    if text.is_empty() && !too_long {
        return Ok(());
    }
    let record = match serde_json::from_str::<serde_json::Value>(text) {
        _ if too_long => Err(format!("longer than {MAX_RECORD_LINE} bytes")),
        Ok(v) if v.is_object() => Ok(v),
        Ok(_) => Err("not a JSON object".to_owned()),
        Err(e) => Err(format!("not JSON: {e}")),
    };
    match record {
        Ok(record) => match destination.send(ctx, upload, record).await {
            Ok(()) => Ok(()),
            Err(SendError::Record(e)) => {
                tracing::warn!(target: "extractors::command", task = %ctx.task(), line = number, "an output record the destination cannot map: {e}; skipped");
                Ok(())
            }
            Err(e) => Err(e.into()),
        },
        Err(why) => {
            ctx.records_rejected(1);
            tracing::warn!(target: "extractors::command", task = %ctx.task(), line = number, "an output line is {why}; skipped");
            Ok(())
        }
    }
}

/// The longest output line logged; the rest of a longer line is counted, not kept.
const MAX_LINE: usize = 16 * 1024;

/// How long output is still read after the program exited (from children it left behind,
/// which are killed with its process group).
const OUTPUT_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Logs a stream line by line, as bytes: non-UTF-8 is shown lossily, a line longer than
/// [`MAX_LINE`] is cut (memory stays bounded whatever the program prints), and the stream is
/// read to its end so the program never dies of SIGPIPE.
async fn log_lines(task: String, stream: &'static str, reader: impl tokio::io::AsyncRead + Unpin) {
    let mut lines = BoundedLines::new(reader, MAX_LINE);
    while let Some((line, cut)) = lines.next().await {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches('\r');
        if cut > 0 {
            tracing::info!(target: "extractors::command", task = %task, stream, "{text} ... ({cut} more bytes cut)");
        } else {
            tracing::info!(target: "extractors::command", task = %task, stream, "{text}");
        }
    }
}

/// The program's process group, killed when dropped: children it left behind (a `&` in a
/// script) end with the run, whether it ended, timed out or was cancelled.
struct Group(Option<rustix::process::Pid>);

impl Drop for Group {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            // Gone already is fine.
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
}

impl Extractor for Command {
    async fn run(&self, ctx: RunContext) -> Result<(), TaskError> {
        let program = &self.config.command[0];
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(&self.config.command[1..])
            .envs(&self.config.env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so that the whole group can be killed.
            .process_group(0)
            .kill_on_drop(true);
        if let Some(dir) = &self.config.working_dir {
            cmd.current_dir(dir);
        }
        let mut child = cmd.spawn().map_err(|e| {
            TaskError::permanent(format!("cannot start `{program}`")).with_source(e)
        })?;
        let group = Group(
            child
                .id()
                .and_then(|id| rustix::process::Pid::from_raw(id as i32)),
        );
        let stdout = child.stdout.take();
        let err = child
            .stderr
            .take()
            .map(|s| log_lines(ctx.task().to_owned(), "stderr", s));
        let sent = std::sync::Mutex::new(Ok(()));
        let logging = async {
            let (out, err) = (
                async {
                    match (stdout, &self.destination) {
                        (Some(o), Some(d)) => {
                            let r = send_lines(&ctx, d, o).await;
                            *sent.lock().expect("sent lock") = r;
                        }
                        (Some(o), None) => log_lines(ctx.task().to_owned(), "stdout", o).await,
                        (None, _) => {}
                    }
                },
                async {
                    if let Some(e) = err {
                        e.await;
                    }
                },
            );
            tokio::join!(out, err);
        };
        let mut logging = std::pin::pin!(logging);
        let wait = async {
            // Output is read while the program runs (a full pipe would block it), and for
            // a moment after it exits; then its group is killed.
            let mut logged = false;
            let status = tokio::select! {
                status = child.wait() => status,
                () = &mut logging => {
                    logged = true;
                    child.wait().await
                }
            };
            if !logged {
                if self.destination.is_some() {
                    // Every record the program printed is read (the pipe ends when it does;
                    // the task's timeout bounds a child that keeps it open).
                    (&mut logging).await;
                } else {
                    let _ = tokio::time::timeout(OUTPUT_GRACE, &mut logging).await;
                }
            }
            status
        };
        let status = tokio::select! {
            s = wait => s.map_err(|e| TaskError::transient("waiting for the program failed").with_source(e))?,
            () = ctx.cancelled() => {
                return Err(TaskError::transient(format!("cancelled; `{program}` was killed")));
            }
        };
        drop(group);
        std::mem::replace(&mut *sent.lock().expect("sent lock"), Ok(()))?;
        if let Some(d) = &self.destination {
            // The records are on their way: the run succeeds once CDF settled them.
            d.upload(&ctx).settled().await?;
        }
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
    }

    fn finishes_by_itself(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests;
