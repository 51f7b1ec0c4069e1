//! Test helpers for extractor authors (the `testing` feature): run an extractor in a test
//! against a dry-run CDF that records what would have been sent, with a state file if you like,
//! and read an extractor's config type from YAML as the runtime reads it.
//!
//! ```toml
//! [dev-dependencies]
//! extractor-runtime = { version = "0.1", features = ["testing"] }
//! ```
//!
//! # Examples
//!
//! ```
//! use extractor_runtime::upload::RawRow;
//! use extractor_runtime::{Extractor, RunContext, TaskError, testing};
//!
//! struct OneRow;
//!
//! impl Extractor for OneRow {
//!     async fn run(&self, ctx: RunContext) -> Result<(), TaskError> {
//!         let row = RawRow {
//!             database: "db".into(),
//!             table: "t".into(),
//!             key: "k".into(),
//!             columns: serde_json::Map::new(),
//!         };
//!         ctx.upload().raw(row).await?;
//!         ctx.upload().settled().await
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let (ctx, capture) = testing::context("one-row", None, 1000);
//! OneRow.run(ctx).await.unwrap();
//! assert_eq!(capture.raw_keys(), ["k"]);
//! # }
//! ```

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::RunContext;
use crate::cdf::{CdfClient, DryRunSink};
use crate::config::{Config, ConfigErrors, LoadOptions};
use crate::queues::Queues;
use crate::state::{LocalStateStore, StateStore};

pub use crate::extractor::DynExtractor;

/// The requests a [`context`] "sent" to CDF (its dry-run lines), and a switch that makes CDF
/// fail like an unreachable one. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Capture {
    buffer: Arc<Mutex<Vec<u8>>>,
    failing: Arc<AtomicBool>,
}

struct Sink(Capture);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.failing.load(Ordering::SeqCst) {
            return Err(std::io::Error::other("CDF is down (test)"));
        }
        self.0
            .buffer
            .lock()
            .expect("capture lock")
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    /// Every request, in order: `{"endpoint", "path", "body"}`.
    pub fn requests(&self) -> Vec<Value> {
        let buffer = self.buffer.lock().expect("capture lock");
        buffer
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice::<Value>(l).expect("a dry-run line is JSON"))
            .collect()
    }

    /// Every request body, in order.
    pub fn bodies(&self) -> Vec<Value> {
        self.requests()
            .into_iter()
            .map(|mut r| r["body"].take())
            .collect()
    }

    /// Every item of every request, in order.
    pub fn items(&self) -> Vec<Value> {
        self.bodies()
            .into_iter()
            .flat_map(|mut b| match b["items"].take() {
                Value::Array(items) => items,
                _ => Vec::new(),
            })
            .collect()
    }

    /// The keys of the RAW rows, in order.
    pub fn raw_keys(&self) -> Vec<String> {
        self.items()
            .iter()
            .filter_map(|i| i["key"].as_str().map(str::to_owned))
            .collect()
    }

    /// Makes CDF fail (or work again): every request fails as a network error would.
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// Forgets what was captured.
    pub fn clear(&self) {
        self.buffer.lock().expect("capture lock").clear();
    }
}

/// A run context for `task`: upload queues of `capacity` items on a dry-run CDF that records
/// every request in the returned [`Capture`] (no retries), and with `state` given, a local
/// state store in that file (read with [`RunContext::state`]).
pub fn context(task: &str, state: Option<&Path>, capacity: usize) -> (RunContext, Capture) {
    let config = Config::from_yaml(
        "version: 1\ncognite: {project: test, dry-run: true, connection: {max-retries: 0}}\ntasks: []\n",
        None,
        &|_| None,
        &LoadOptions::default(),
    )
    .expect("the test config is valid");
    let capture = Capture::default();
    let registry = prometheus::Registry::new();
    let client = CdfClient::new(
        &config.cognite,
        None,
        Some(DryRunSink::to_writer(Sink(capture.clone()))),
        &registry,
    )
    .expect("a dry-run client builds");
    let queues = Queues::new(client.clone(), capacity, &registry).expect("fresh queue metrics");
    let state = state.map(|path| {
        StateStore::Local(LocalStateStore::open(path, false).expect("the state file opens"))
    });
    let ctx = RunContext::new(task, CancellationToken::new(), queues, state);
    (ctx, capture)
}

/// Reads an extractor's config type from the YAML of a task's `config:` block, as the runtime
/// does (`${VAR}` is not substituted); errors name `tasks[0].config.<key>`.
///
/// ```
/// #[derive(Debug, serde::Deserialize)]
/// #[serde(deny_unknown_fields)]
/// struct Poll { every: extractor_runtime::Duration }
///
/// let poll: Poll = extractor_runtime::testing::config("every: 5m").unwrap();
/// assert_eq!(poll.every.as_secs(), 300);
/// let err = extractor_runtime::testing::config::<Poll>("evry: 5m").unwrap_err();
/// assert!(err.to_string().contains("tasks[0].config.evry: unknown key `evry`, did you mean `every`?"), "{err}");
/// ```
pub fn config<C: DeserializeOwned>(yaml: &str) -> Result<C, ConfigErrors> {
    let indented: String = yaml.lines().map(|l| format!("      {l}\n")).collect();
    let text = format!(
        "version: 1\ncognite: {{project: test, dry-run: true}}\ntasks:\n  - name: test\n    type: test\n    schedule: {{type: startup}}\n    config:\n{indented}"
    );
    let config = Config::from_yaml(&text, None, &|_| None, &LoadOptions::default())?;
    config.tasks[0].config.parse()
}

/// The CPU time (`utime + stime`) process `pid` has used, in seconds (Linux; 0 once it is gone):
/// for benches that measure a process's CPU per minute.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name (which may hold spaces) in parentheses.
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // USER_HZ is 100 on Linux.
    (ticks(11) + ticks(12)) / 100.0
}

#[cfg(test)]
mod cpu_tests {
    #[test]
    fn cpu_seconds_counts_this_process_and_nothing_for_no_process() {
        let before = super::cpu_seconds(std::process::id());
        let started = std::time::Instant::now();
        let mut x = 0u64;
        while started.elapsed() < std::time::Duration::from_millis(300) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let used = super::cpu_seconds(std::process::id()) - before;
        assert!(used >= 0.1, "300 ms of spinning counted as {used} s");
        assert_eq!(super::cpu_seconds(u32::MAX), 0.0);
    }
}
