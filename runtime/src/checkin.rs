//! Integrations check-ins (`cognite.integration`): `POST /integrations/startup` at start and
//! after every applied reload (the extractor, its tasks, the active config revision), and
//! `POST /integrations/checkin` every `checkin-interval` with what happened since: task events
//! (a run started, a run ended, with a message when it failed) and errors (a failed run, items
//! CDF refused, a token failure, a rejected config).
//!
//! What waits to be sent is bounded ([`MAX_PENDING`] events and as many errors): past it the
//! oldest are dropped and counted, so a long CDF outage costs a fixed amount of memory. A
//! request carries at most [`MAX_PER_REQUEST`] of each (CDF's limit); more are split. A failed
//! check-in puts what it took back, in order, for the next one.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::cdf::{CdfClient, CdfError};

/// Task events, and errors, kept at most while CDF cannot be reached.
pub const MAX_PENDING: usize = 10_000;
/// Task events, and errors, in one check-in at most.
pub const MAX_PER_REQUEST: usize = 1000;
/// The longest text of a message, description or details (CDF's limits are of this order;
/// a longer one is cut, never refused).
const MAX_TEXT_CHARS: usize = 1000;

/// The config revision a process runs: a remote revision, or a local file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Revision {
    /// A local config file.
    Local,
    /// A revision of the config in CDF.
    Remote(i64),
}

impl Revision {
    fn to_json(self) -> serde_json::Value {
        match self {
            Revision::Local => serde_json::Value::from("local"),
            Revision::Remote(n) => serde_json::Value::from(n),
        }
    }

    /// The number for `extractor_config_revision`: 0 for a local file.
    pub fn number(self) -> i64 {
        match self {
            Revision::Local => 0,
            Revision::Remote(n) => n,
        }
    }

    fn from_number(n: i64) -> Revision {
        if n <= 0 {
            Revision::Local
        } else {
            Revision::Remote(n)
        }
    }
}

impl std::fmt::Display for Revision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Revision::Local => f.write_str("local"),
            Revision::Remote(n) => write!(f, "revision {n}"),
        }
    }
}

/// How bad an error is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Something went wrong, nothing was lost (a rejected config: the old one runs on).
    Warning,
    /// A failed run, refused items, a token failure.
    Error,
    /// The process stops.
    Fatal,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct TaskEvent {
    #[serde(rename = "type")]
    kind: &'static str,
    name: String,
    timestamp: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ErrorReport {
    level: Level,
    description: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    task: Option<String>,
    start_time: i64,
    end_time: i64,
    active_config_revision: serde_json::Value,
}

#[derive(Debug, Default)]
struct Pending {
    events: VecDeque<TaskEvent>,
    errors: VecDeque<ErrorReport>,
}

/// Where runs, refusals and config rejections are noted for the next check-in. Cheap to
/// clone; bounded.
#[derive(Clone, Debug)]
pub struct Recorder {
    pending: Arc<Mutex<Pending>>,
    revision: Arc<AtomicI64>,
    dropped: prometheus::IntCounter,
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

fn cut(text: &str) -> String {
    if text.chars().count() <= MAX_TEXT_CHARS {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(MAX_TEXT_CHARS - 3).collect();
    cut.push_str("...");
    cut
}

/// Pushes `item` onto a bounded queue; the oldest goes when it is full. Whether one went.
fn push_bounded<T>(queue: &mut VecDeque<T>, item: T) -> bool {
    let full = queue.len() >= MAX_PENDING;
    if full {
        queue.pop_front();
    }
    queue.push_back(item);
    full
}

impl Recorder {
    /// A recorder; registers `extractor_checkin_dropped_total` (what was dropped unsent).
    pub fn new(registry: &prometheus::Registry) -> prometheus::Result<Recorder> {
        let dropped = prometheus::IntCounter::new(
            "extractor_checkin_dropped_total",
            "Task events and errors dropped unsent because the check-in backlog was full.",
        )?;
        registry.register(Box::new(dropped.clone()))?;
        Ok(Recorder {
            pending: Arc::default(),
            revision: Arc::new(AtomicI64::new(0)),
            dropped,
        })
    }

    /// The config revision the process runs now (reported with each error).
    pub fn revision(&self) -> Revision {
        Revision::from_number(self.revision.load(Ordering::Relaxed))
    }

    /// Sets the config revision the process runs.
    pub fn set_revision(&self, revision: Revision) {
        self.revision.store(revision.number(), Ordering::Relaxed);
    }

    fn event(&self, kind: &'static str, task: &Arc<str>, message: Option<String>) {
        let event = TaskEvent {
            kind,
            name: task.to_string(),
            timestamp: now_ms(),
            message: message.as_deref().map(cut),
        };
        if push_bounded(&mut self.pending.lock().expect("check-in lock").events, event) {
            self.dropped.inc();
        }
    }

    /// A run of `task` started.
    pub fn run_started(&self, task: &Arc<str>) {
        self.event("started", task, None);
    }

    /// A run of `task` ended; `failure` is why it failed, if it did (also noted as an error).
    pub fn run_ended(&self, task: &Arc<str>, started_ms: i64, failure: Option<&str>) {
        self.event("ended", task, failure.map(str::to_owned));
        if let Some(why) = failure {
            self.error_between(
                Level::Error,
                &format!("a run of task {task} failed"),
                Some(why),
                Some(task),
                started_ms,
            );
        }
    }

    /// An error for the next check-in, happening now.
    pub fn error(&self, level: Level, description: &str, details: Option<&str>, task: Option<&str>) {
        self.error_between(level, description, details, task, now_ms());
    }

    fn error_between(
        &self,
        level: Level,
        description: &str,
        details: Option<&str>,
        task: Option<&str>,
        start_ms: i64,
    ) {
        let report = ErrorReport {
            level,
            description: cut(description),
            details: details.map(cut),
            task: task.map(str::to_owned),
            start_time: start_ms.max(0),
            end_time: now_ms().max(start_ms).max(0),
            active_config_revision: self.revision().to_json(),
        };
        if push_bounded(&mut self.pending.lock().expect("check-in lock").errors, report) {
            self.dropped.inc();
        }
    }

    /// Task events and errors waiting to be sent.
    pub fn pending(&self) -> (usize, usize) {
        let p = self.pending.lock().expect("check-in lock");
        (p.events.len(), p.errors.len())
    }

    /// Takes up to [`MAX_PER_REQUEST`] of each.
    fn take(&self) -> (Vec<TaskEvent>, Vec<ErrorReport>) {
        let mut p = self.pending.lock().expect("check-in lock");
        let events = p.events.len().min(MAX_PER_REQUEST);
        let errors = p.errors.len().min(MAX_PER_REQUEST);
        (
            p.events.drain(..events).collect(),
            p.errors.drain(..errors).collect(),
        )
    }

    /// Puts what a failed check-in took back in front, as far as there is room.
    fn put_back(&self, events: Vec<TaskEvent>, errors: Vec<ErrorReport>) {
        let mut p = self.pending.lock().expect("check-in lock");
        let mut lost = 0;
        for e in events.into_iter().rev() {
            if p.events.len() < MAX_PENDING {
                p.events.push_front(e);
            } else {
                lost += 1;
            }
        }
        for e in errors.into_iter().rev() {
            if p.errors.len() < MAX_PENDING {
                p.errors.push_front(e);
            } else {
                lost += 1;
            }
        }
        self.dropped.inc_by(lost);
    }
}

/// A task as `/integrations/startup` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TaskInfo {
    /// `continuous` (runs all the time) or `batch` (runs and ends).
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The task's name.
    pub name: String,
}

/// Sends the check-ins of one integration. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Reporter {
    client: CdfClient,
    integration: String,
    extractor: String,
    version: String,
    recorder: Recorder,
}

impl Reporter {
    /// A reporter for the integration `integration` (its external id), as the extractor
    /// `extractor` at `version`.
    pub fn new(
        client: CdfClient,
        integration: &str,
        extractor: &str,
        version: &str,
        recorder: Recorder,
    ) -> Reporter {
        Reporter {
            client,
            integration: integration.to_owned(),
            extractor: extractor.to_owned(),
            version: version.to_owned(),
            recorder,
        }
    }

    /// The recorder whose notes it sends.
    pub fn recorder(&self) -> &Recorder {
        &self.recorder
    }

    /// CDF's `lastConfigRevision` in a check-in's answer, if it gave one.
    fn last_revision(answer: &serde_json::Value) -> Option<i64> {
        answer.get("lastConfigRevision")?.as_i64()
    }

    /// `POST /integrations/startup`: the extractor, `tasks` and the active revision. Returns
    /// CDF's `lastConfigRevision`, if it gave one.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: nothing is taken from the recorder.
    pub async fn startup(&self, tasks: &[TaskInfo]) -> Result<Option<i64>, CdfError> {
        let body = serde_json::json!({
            "externalId": self.integration,
            "extractor": {"externalId": self.extractor, "version": self.version},
            "tasks": tasks,
            "activeConfigRevision": self.recorder.revision().to_json(),
            "timestamp": now_ms(),
        });
        let answer = self
            .client
            .post("/integrations/startup", "/integrations/startup", &body)
            .await?;
        Ok(Reporter::last_revision(&answer))
    }

    /// `POST /integrations/checkin` with everything noted since the last one (split into
    /// requests of at most [`MAX_PER_REQUEST`] of each; one request when there is nothing, as
    /// a heartbeat). Returns CDF's `lastConfigRevision`, if it gave one.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: a dropped request's notes are lost. The runtime cancels it only at the
    /// end of the shutdown grace.
    pub async fn checkin(&self) -> Result<Option<i64>, CdfError> {
        let mut last = None;
        loop {
            let (events, errors) = self.recorder.take();
            let more = {
                let (e, r) = self.recorder.pending();
                e > 0 || r > 0
            };
            let mut body = serde_json::json!({"externalId": self.integration});
            if !events.is_empty() {
                body["taskEvents"] = serde_json::to_value(&events).expect("events serialize");
            }
            if !errors.is_empty() {
                body["errors"] = serde_json::to_value(&errors).expect("errors serialize");
            }
            match self
                .client
                .post("/integrations/checkin", "/integrations/checkin", &body)
                .await
            {
                Ok(answer) => last = Reporter::last_revision(&answer).or(last),
                Err(e) => {
                    self.recorder.put_back(events, errors);
                    return Err(e);
                }
            }
            if !more {
                return Ok(last);
            }
        }
    }

    /// Checks in every `every` until `stop` fires; each `lastConfigRevision` above `active()`
    /// is handed to `newer` (a reload trigger).
    ///
    /// `before` runs before each check-in: it notes what is sampled rather than reported as
    /// it happens (items CDF refused, a failing token).
    pub async fn run(
        self,
        every: Duration,
        active: impl Fn() -> i64 + Send,
        newer: impl Fn(i64) + Send,
        mut before: impl FnMut(&Recorder) + Send,
        stop: CancellationToken,
    ) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = stop.cancelled() => return,
            }
            before(&self.recorder);
            let answered = tokio::select! {
                r = self.checkin() => r,
                () = stop.cancelled() => return,
            };
            match answered {
                Ok(Some(last)) if last > active() => newer(last),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(target: "extractor_runtime::checkin", "cannot check in to the integration: {e}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backlog_is_bounded_and_drops_the_oldest() {
        let registry = prometheus::Registry::new();
        let recorder = Recorder::new(&registry).unwrap();
        let task: Arc<str> = "t".into();
        for _ in 0..MAX_PENDING + 5 {
            recorder.run_started(&task);
        }
        assert_eq!(recorder.pending(), (MAX_PENDING, 0));
        assert_eq!(recorder.dropped.get(), 5);
        let (events, _) = recorder.take();
        assert_eq!(events.len(), MAX_PER_REQUEST);
        recorder.put_back(events, Vec::new());
        assert_eq!(recorder.pending().0, MAX_PENDING);
    }

    #[test]
    fn a_failed_run_is_an_event_and_an_error_with_the_revision() {
        let registry = prometheus::Registry::new();
        let recorder = Recorder::new(&registry).unwrap();
        recorder.set_revision(Revision::Remote(7));
        let task: Arc<str> = "weather".into();
        recorder.run_ended(&task, now_ms(), Some(&"x".repeat(5000)));
        let (events, errors) = recorder.take();
        let event = serde_json::to_value(&events[0]).unwrap();
        assert_eq!(event["type"], "ended");
        assert_eq!(event["message"].as_str().unwrap().chars().count(), MAX_TEXT_CHARS);
        let error = serde_json::to_value(&errors[0]).unwrap();
        assert_eq!(error["level"], "error");
        assert_eq!(error["task"], "weather");
        assert_eq!(error["activeConfigRevision"], 7);
        recorder.set_revision(Revision::Local);
        recorder.error(Level::Warning, "rejected", None, None);
        let (_, errors) = recorder.take();
        assert_eq!(serde_json::to_value(&errors[0]).unwrap()["activeConfigRevision"], "local");
    }
}
