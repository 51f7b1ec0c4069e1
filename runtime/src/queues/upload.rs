//! [`Upload`]: a task's handle on the upload queues and its incremental state.

use std::sync::Arc;

use serde_json::Value;

use super::ledger::Ledger;
use super::{
    Datapoint, Datapoints, Event, Events, Instances, Kind, NewSeries, Node, Policy, Queues, RawRow,
    RawRows, Refusals, StoredPoint,
};
use crate::cdf::{CdfError, CdfErrorKind};
use crate::task_error::TaskError;

/// A task's handle on the upload queues and its state: what every extractor uses to send data
/// and to move its watermarks. Cheap to clone.
///
/// Items are tagged with the task, so a [`checkpoint`](Upload::checkpoint) becomes durable (is
/// written to the state store, which the runtime saves) once CDF settled everything this task
/// queued before it: accepted it, handled it by the task's [`Policy`], or refused it to the
/// dead-letter file. It never waits on, nor flushes for, other tasks' items; items still queued
/// when a run ends are acknowledged when a later flush delivers them.
///
/// State keys are the task's own: `checkpoint("a.csv", ..)` of task `plant` is stored under
/// `plant:a.csv`, and `checkpoint("", ..)` under `plant`.
///
/// # Examples
///
/// ```no_run
/// # async fn run(ctx: extractor_runtime::extractor::RunContext) -> Result<(), extractor_runtime::extractor::TaskError> {
/// use extractor_runtime::queues::{Datapoint, DatapointValue};
/// let upload = ctx.upload();
/// let since = upload.resume("").and_then(|v| v.as_i64()).unwrap_or(0);
/// for t in since + 1..=since + 10 {
///     upload
///         .datapoint(Datapoint { external_id: "pump-1".into(), timestamp: t, value: DatapointValue::Numeric(1.0) })
///         .await?;
/// }
/// upload.checkpoint("", (since + 10).into());
/// upload.settled().await // fails naming the items CDF refused, if any
/// # }
/// ```
#[derive(Clone)]
pub struct Upload {
    queues: Option<Queues>,
    ledger: Arc<Ledger>,
    policy: Policy,
}

impl std::fmt::Debug for Upload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upload")
            .field("task", &self.ledger.task())
            .field("outstanding", &self.ledger.outstanding())
            .field("policy", &self.policy)
            .finish()
    }
}

impl Upload {
    pub(crate) fn new(queues: Option<Queues>, ledger: Arc<Ledger>) -> Self {
        Upload {
            queues,
            ledger,
            policy: Policy::default(),
        }
    }

    /// The same handle, whose items CDF refuses are handled by `policy`.
    pub fn with_policy(&self, policy: Policy) -> Upload {
        Upload {
            policy,
            ..self.clone()
        }
    }

    /// The process's queues; `None` when the runtime has no CDF client (tests, tools).
    pub fn queues(&self) -> Option<&Queues> {
        self.queues.as_ref()
    }

    fn require(&self) -> Result<&Queues, CdfError> {
        self.queues.as_ref().ok_or_else(|| {
            CdfError::new(
                CdfErrorKind::Rejected,
                "queues",
                "this run has no upload queues (no CDF client)",
            )
        })
    }

    /// Queues a RAW row (waits while the queue is full).
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe: a cancelled call has not queued the row.
    pub async fn raw(&self, row: RawRow) -> Result<(), CdfError> {
        let q = self.require()?;
        q.raw
            .add_entry(RawRows::store(row), Some(&self.ledger), self.policy)
            .await
    }

    /// Queues a datapoint (waits while the queue is full).
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe: a cancelled call has not queued the datapoint.
    pub async fn datapoint(&self, datapoint: Datapoint) -> Result<(), CdfError> {
        let q = self.require()?;
        q.datapoints
            .add_entry(
                Datapoints::store(datapoint),
                Some(&self.ledger),
                self.policy,
            )
            .await
    }

    /// Queues a datapoint whose time series, if CDF does not have it and the policy has
    /// `create_missing`, is created as `series` says (name, unit, description, metadata)
    /// instead of with its external id as its name. Share one `Arc` among the datapoints of a
    /// series.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe: a cancelled call has not queued the datapoint.
    pub async fn datapoint_of_series(
        &self,
        datapoint: Datapoint,
        series: Arc<NewSeries>,
    ) -> Result<(), CdfError> {
        let q = self.require()?;
        let stored = StoredPoint {
            point: datapoint,
            series: Some(series),
            node: None,
        };
        q.datapoints
            .add_entry(stored, Some(&self.ledger), self.policy)
            .await
    }

    /// Queues a datapoint of the Data Modeling time series (a CogniteTimeSeries node)
    /// `space:datapoint.external_id`, sent by `instanceId`. If CDF does not have it and the
    /// policy has `create_missing`, the node is created as `series` says (name, description,
    /// unit as `sourceUnit`). Share one `Arc` of the space among a task's datapoints.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe: a cancelled call has not queued the datapoint.
    pub async fn datapoint_of_node(
        &self,
        datapoint: Datapoint,
        space: Arc<str>,
        series: Option<Arc<NewSeries>>,
    ) -> Result<(), CdfError> {
        let q = self.require()?;
        let stored = StoredPoint {
            node: Some(space),
            point: datapoint,
            series,
        };
        q.datapoints
            .add_entry(stored, Some(&self.ledger), self.policy)
            .await
    }

    /// Queues an event (waits while the queue is full).
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe: a cancelled call has not queued the event.
    pub async fn event(&self, event: Event) -> Result<(), CdfError> {
        let q = self.require()?;
        q.events
            .add_entry(Events::store(event), Some(&self.ledger), self.policy)
            .await
    }

    /// Queues a Data Modeling node (waits while the queue is full).
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe: a cancelled call has not queued the node.
    pub async fn node(&self, node: Node) -> Result<(), CdfError> {
        let q = self.require()?;
        q.instances
            .add_entry(Instances::store(node), Some(&self.ledger), self.policy)
            .await
    }

    /// The state key of `key` for this task.
    fn key(&self, key: &str) -> String {
        if key.is_empty() {
            self.ledger.task().to_owned()
        } else {
            format!("{}:{key}", self.ledger.task())
        }
    }

    /// Where reading resumes for `key`: the newest checkpoint this process made that is not
    /// durable yet (its items are still queued), else the state store's high watermark.
    pub fn resume(&self, key: &str) -> Option<Value> {
        let key = self.key(key);
        self.ledger
            .pending(&key)
            .or_else(|| self.ledger.state()?.get(&key)?.high)
    }

    /// Records that everything up to `value` for `key` is queued: it becomes the state's high
    /// watermark once CDF settled every item this task queued before this call.
    pub fn checkpoint(&self, key: &str, value: Value) {
        self.ledger.checkpoint(self.key(key), value);
    }

    /// Items this task queued that CDF has not settled yet.
    pub fn outstanding(&self) -> usize {
        self.ledger.outstanding()
    }

    /// Flushes the queues until CDF settled everything this task queued, and returns what it
    /// refused since the last call (dead-lettered: those never hold the state back). Fails with
    /// the flush's error only when some of this task's items are still queued: another task's
    /// failing items do not fail it.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe: the items stay queued and the checkpoints pending.
    pub async fn deliver(&self) -> Result<Refusals, TaskError> {
        let flushed = match &self.queues {
            Some(q) => q.flush().await.map(|_| ()),
            None => Ok(()),
        };
        match (self.ledger.outstanding(), flushed) {
            (0, _) => Ok(self.ledger.take_refusals()),
            (_, Err(e)) => Err(e.into()),
            (n, Ok(())) => Err(TaskError::transient(format!(
                "{n} item(s) of this task are still queued"
            ))),
        }
    }

    /// [`deliver`](Self::deliver), then fails (permanently) naming the first ids CDF refused
    /// and where they went.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe: the items stay queued and the checkpoints pending.
    pub async fn settled(&self) -> Result<(), TaskError> {
        let refused = self.deliver().await?;
        match self.refused_error(&refused) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The run's error for `refused` items (`None` when there are none): how many, the first
    /// ids, and where they went.
    pub fn refused_error(&self, refused: &Refusals) -> Option<TaskError> {
        if refused.count == 0 {
            return None;
        }
        let kept = match self.queues.as_ref().and_then(Queues::dead_letter) {
            Some(path) => format!("written to {}", path.display()),
            None => "not kept (no upload-queue.dead-letter)".to_owned(),
        };
        Some(TaskError::permanent(format!(
            "CDF refused {} item(s) of this task: {refused}; {kept}",
            refused.count
        )))
    }
}
