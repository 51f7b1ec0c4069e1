//! Incremental progress shared by the built-ins: a watermark moves to the state store only after
//! the upload queues flushed what was read up to it, so state never runs ahead of CDF.
//!
//! Between the two, the extractor remembers what it already queued, so a run that failed after
//! queueing (CDF down) does not read and queue the same records again in this process: the queue
//! still holds them. After a restart the queue is gone and reading resumes from the state store
//! (at-least-once).

use std::collections::BTreeMap;
use std::sync::Mutex;

use extractor_runtime::extractor::{RunContext, TaskError};
use extractor_runtime::queues::Queues;
use extractor_runtime::state::Watermarks;
use serde_json::Value;

/// Per state key: the newest watermark queued but not yet written to the state store.
#[derive(Debug, Default)]
pub struct Checkpoints {
    queued: Mutex<BTreeMap<String, Value>>,
}

impl Checkpoints {
    /// The start of a run: the run's queues, after delivering (and recording) what an earlier
    /// run queued, so nothing new is read while older records wait.
    pub async fn begin<'c>(&self, ctx: &'c RunContext) -> Result<&'c Queues, TaskError> {
        let queues = queues(ctx)?;
        self.commit(ctx, queues).await?;
        Ok(queues)
    }

    /// Where reading resumes for `key`: what this process already queued, else the state store's
    /// high watermark.
    pub fn resume(&self, ctx: &RunContext, key: &str) -> Option<Value> {
        if let Some(v) = self.queued.lock().expect("checkpoints").get(key) {
            return Some(v.clone());
        }
        ctx.state()?.get(key)?.high
    }

    /// Records that everything up to `value` for `key` is in the upload queues.
    pub fn queued(&self, key: &str, value: Value) {
        self.queued
            .lock()
            .expect("checkpoints")
            .insert(key.to_owned(), value);
    }

    /// Flushes the queues, then writes every queued watermark to the state store (it is saved by
    /// the runtime: periodically, and at the end).
    pub async fn commit(&self, ctx: &RunContext, queues: &Queues) -> Result<(), TaskError> {
        let marks: Vec<(String, Value)> = {
            let queued = self.queued.lock().expect("checkpoints");
            queued.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        queues.flush().await?;
        if let Some(state) = ctx.state() {
            for (key, value) in &marks {
                let low = state.get(key).and_then(|w| w.low).or(Some(value.clone()));
                state.set(
                    key,
                    Watermarks {
                        low,
                        high: Some(value.clone()),
                    },
                );
            }
        }
        let mut queued = self.queued.lock().expect("checkpoints");
        for (key, value) in marks {
            if queued.get(&key) == Some(&value) {
                queued.remove(&key);
            }
        }
        Ok(())
    }
}

/// The run's upload queues, or a permanent error when the runtime gave none.
fn queues(ctx: &RunContext) -> Result<&Queues, TaskError> {
    ctx.queues()
        .ok_or_else(|| TaskError::permanent("this run has no upload queues (no CDF client)"))
}
