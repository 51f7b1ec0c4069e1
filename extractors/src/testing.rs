//! Test helpers for the built-ins: a run context whose CDF is a dry-run sink that captures the
//! requests, and can be made to fail like an unreachable CDF.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use extractor_runtime::cdf::{CdfClient, DryRunSink};
use extractor_runtime::config::{Config, LoadOptions};
use extractor_runtime::extractor::RunContext;
use extractor_runtime::queues::Queues;
use extractor_runtime::state::{LocalStateStore, StateStore};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// The requests "sent" to CDF.
#[derive(Clone, Default)]
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
        self.0.buffer.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    /// Every request body, in order.
    pub fn bodies(&self) -> Vec<Value> {
        let buffer = self.buffer.lock().unwrap();
        buffer
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice::<Value>(l).unwrap()["body"].take())
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
            .map(|i| i["key"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Makes CDF fail (or work again).
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// Forgets what was captured.
    pub fn clear(&self) {
        self.buffer.lock().unwrap().clear();
    }
}

/// A run context for `task` with dry-run queues of `capacity` and, with `state` given, a local
/// state store in that file.
pub fn context(task: &str, state: Option<&Path>, capacity: usize) -> (RunContext, Capture) {
    let config = Config::from_yaml(
        "version: 1\ncognite: {project: test, dry-run: true, connection: {max-retries: 0}}\ntasks: []\n",
        None,
        &|_| None,
        &LoadOptions::default(),
    )
    .unwrap();
    let capture = Capture::default();
    let registry = prometheus::Registry::new();
    let client = CdfClient::new(
        &config.cognite,
        None,
        Some(DryRunSink::to_writer(Sink(capture.clone()))),
        &registry,
    )
    .unwrap();
    let queues = Queues::new(client, capacity, &registry).unwrap();
    let mut ctx = RunContext::new(task, CancellationToken::new()).with_queues(queues);
    if let Some(path) = state {
        ctx = ctx.with_state(StateStore::Local(
            LocalStateStore::open(path, false).unwrap(),
        ));
    }
    (ctx, capture)
}

/// `base` with the keys of `extra` set over it (a config with a few settings changed).
pub fn merged(mut base: Value, extra: Value) -> Value {
    for (k, v) in extra.as_object().expect("extra is an object") {
        base[k] = v.clone();
    }
    base
}

/// `base` with `extra` over it, read as an extractor's config type.
pub fn config_of<T: serde::de::DeserializeOwned>(base: Value, extra: Value) -> T {
    serde_json::from_value(merged(base, extra)).unwrap()
}
