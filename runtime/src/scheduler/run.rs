//! One run of a task: attempts with retry, timeout (cancel, grace, abort), panics caught.

use std::sync::Arc;
use tokio_util::task::AbortOnDropHandle;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Shared, Task};
use crate::internal_events::{TaskRunFinished, TaskRunRetried, TaskRunStarted};
use crate::extractor::{RunContext, TaskErrorKind};

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RunResult {
    /// The extractor returned `Ok`.
    Success,
    /// The extractor returned an error (after any retries).
    Failure(TaskErrorKind),
    /// The run outlived its `timeout`.
    Timeout,
    /// The extractor panicked.
    Panic,
    /// The run was cancelled (shutdown or `overlap: replace`) and returned an error.
    Cancelled,
}

impl RunResult {
    /// The `result` label.
    pub fn as_label(self) -> &'static str {
        match self {
            RunResult::Success => "success",
            RunResult::Failure(_) => "failure",
            RunResult::Timeout => "timeout",
            RunResult::Panic => "panic",
            RunResult::Cancelled => "cancelled",
        }
    }

    /// Whether the run succeeded.
    pub fn is_success(self) -> bool {
        self == RunResult::Success
    }
}

/// The delays between a run's attempts, by the one retry policy: `retry:`'s, with
/// `max-attempts` less one retries; without `retry:`, none.
fn retry_delays(task: &Task) -> crate::retry::Backoff {
    match &task.retry {
        Some(r) => crate::retry::RetryPolicy::new(r.initial_backoff.get(), r.max_backoff.get())
            .with_max_retries(r.max_attempts.max(1) as usize - 1),
        None => crate::retry::RetryPolicy::default().with_max_retries(0),
    }
    .backoff()
}

/// Runs `task` once (with its retries), records metrics and logs the result.
pub(crate) async fn execute(
    shared: Arc<Shared>,
    task: Arc<Task>,
    cancel: CancellationToken,
) -> RunResult {
    let series = &task.metrics.series;
    TaskRunStarted {
        series,
        task: &task.name,
    }
    .emit();
    let started = Instant::now();
    let started_ms = shared.clock.now().as_millisecond();
    if let Some(events) = &shared.events {
        events.run_started(&task.name);
    }
    let mut delays = retry_delays(&task);
    let mut attempt = 1;
    let result = loop {
        let result = attempt_once(&shared, &task, &cancel, attempt).await;
        let transient = matches!(result, (RunResult::Failure(TaskErrorKind::Transient), _));
        let delay = match delays.next_delay(None) {
            Some(delay) if transient && !cancel.is_cancelled() => delay,
            _ => break result,
        };
        TaskRunRetried {
            series,
            task: &task.name,
            attempt,
            delay,
            error: result.1.as_deref().unwrap_or(""),
        }
        .emit();
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = cancel.cancelled() => break result,
        }
        attempt += 1;
    };
    let (result, error) = result;
    if let Some(events) = &shared.events {
        let failed = !matches!(result, RunResult::Success | RunResult::Cancelled);
        let why = error.as_deref().unwrap_or(result.as_label());
        events.run_ended(&task.name, started_ms, failed.then_some(why));
    }
    TaskRunFinished {
        series,
        task: &task.name,
        result: result.as_label(),
        error: error.as_deref(),
        took: started.elapsed(),
        attempts: attempt,
        now_unix: shared.clock.now().as_duration().as_secs_f64(),
    }
    .emit();
    result
}

/// One attempt: the extractor runs in its own tokio task so that a panic is caught.
async fn attempt_once(
    shared: &Shared,
    task: &Task,
    cancel: &CancellationToken,
    attempt: u32,
) -> (RunResult, Option<String>) {
    let run_cancel = cancel.child_token();
    let ctx = RunContext {
        task: task.name.clone(),
        cancel: run_cancel.clone(),
        attempt,
        series: Some(task.metrics.series.clone()),
        cdf: shared.cdf.clone(),
        upload: crate::queues::Upload::new(shared.queues.clone(), task.ledger.clone()),
        network: shared.network.clone(),
    };
    let extractor = task.extractor.clone();
    // Aborts the spawned extractor future when the run itself is dropped (aborted at shutdown).
    let mut handle =
        AbortOnDropHandle::new(tokio::spawn(async move { extractor.run_boxed(ctx).await }));
    let finished = match task.timeout {
        None => (&mut handle).await,
        Some(limit) => match tokio::time::timeout(limit, &mut handle).await {
            Ok(r) => r,
            Err(_) => {
                run_cancel.cancel();
                if tokio::time::timeout(task.timeout_grace, &mut handle)
                    .await
                    .is_err()
                {
                    handle.abort();
                }
                return (
                    RunResult::Timeout,
                    Some(format!("timed out after {}s", limit.as_secs_f64())),
                );
            }
        },
    };
    match finished {
        Ok(Ok(())) => (RunResult::Success, None),
        Ok(Err(e)) if cancel.is_cancelled() => (RunResult::Cancelled, Some(e.to_string())),
        Ok(Err(e)) => (RunResult::Failure(e.kind()), Some(e.to_string())),
        Err(join) if join.is_panic() => {
            let payload = join.into_panic();
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".to_owned());
            (RunResult::Panic, Some(format!("panicked: {message}")))
        }
        Err(_) => (RunResult::Cancelled, Some("aborted".to_owned())),
    }
}
