//! [`Upload`]: a task's handle on the upload queues and its incremental state.

use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::ledger::Ledger;
use super::{
    Datapoint, Datapoints, Event, Events, Instances, Kind, NewSeries, Node, Policy, Queues, RawRow,
    RawRows, Refusals, StoredPoint, StoredRow, UploadQueue,
};
use crate::cdf::CdfError;
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
/// # async fn run(ctx: extractor_runtime::RunContext) -> Result<(), extractor_runtime::TaskError> {
/// use extractor_runtime::upload::{Datapoint, DatapointValue};
/// let upload = ctx.upload();
/// let since: i64 = upload.resume("")?.unwrap_or(0);
/// for t in since + 1..=since + 10 {
///     upload
///         .datapoint(Datapoint { external_id: "pump-1".into(), timestamp: t, value: DatapointValue::Numeric(1.0) })
///         .await?;
/// }
/// upload.checkpoint("", &(since + 10));
/// upload.settled().await // fails naming the items CDF refused, if any
/// # }
/// ```
#[derive(Clone)]
pub struct Upload {
    queues: Queues,
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
    pub(crate) fn new(queues: Queues, ledger: Arc<Ledger>) -> Self {
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

    /// `cognite.data-set`, `external-id-prefix` and `security-categories`, as the CDF client
    /// holds them now.
    fn defaults(&self) -> Arc<crate::cdf::Defaults> {
        self.queues.client().defaults()
    }

    /// The process's queues.
    pub(crate) fn queues(&self) -> &Queues {
        &self.queues
    }

    /// Queues `item` on `queue` for this task, while this replica may queue items (always,
    /// without `high-availability:`; a replica that lost its lease queues nothing more).
    async fn queue<K: Kind>(
        &self,
        queue: &UploadQueue<K>,
        item: K::Stored,
    ) -> Result<(), CdfError> {
        self.queues.fence.check("the item").map_err(|e| {
            CdfError::new(crate::cdf::CdfErrorKind::Fenced, "upload queue", e.to_string())
        })?;
        queue.add_entry(item, Some(&self.ledger), self.policy).await
    }

    /// The process's state store, if `state-store:` configures one.
    pub(crate) fn state(&self) -> Option<&crate::state::StateStore> {
        self.ledger.state()
    }

    /// Queues a RAW row (waits while the queue is full).
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe: a cancelled call has not queued the row.
    pub async fn raw(&self, row: RawRow) -> Result<(), CdfError> {
        self.queue(&self.queues.raw, RawRows::store(row)).await
    }

    /// Queues a RAW row whose columns are JSON already ([`StoredRow::new`]; waits while the
    /// queue is full): for a producer that writes its rows' JSON itself instead of building a
    /// map per row.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe: a cancelled call has not queued the row.
    pub async fn raw_stored(&self, row: StoredRow) -> Result<(), CdfError> {
        self.queue(&self.queues.raw, row).await
    }

    /// Queues a datapoint (waits while the queue is full). `cognite.external-id-prefix` is put
    /// before its external id.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe: a cancelled call has not queued the datapoint.
    pub async fn datapoint(&self, mut datapoint: Datapoint) -> Result<(), CdfError> {
        self.defaults().prefix(&mut datapoint.external_id);
        self.queue(&self.queues.datapoints, Datapoints::store(datapoint)).await
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
        let mut datapoint = datapoint;
        self.defaults().prefix(&mut datapoint.external_id);
        let stored = StoredPoint {
            point: datapoint,
            series: Some(series),
            node: None,
        };
        self.queue(&self.queues.datapoints, stored).await
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
        let stored = StoredPoint {
            node: Some(space),
            point: datapoint,
            series,
        };
        self.queue(&self.queues.datapoints, stored).await
    }

    /// Queues an event (waits while the queue is full). `cognite.external-id-prefix` is put
    /// before its external id, and `cognite.data-set` becomes its data set unless it names one.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe: a cancelled call has not queued the event.
    pub async fn event(&self, mut event: Event) -> Result<(), CdfError> {
        let defaults = self.defaults();
        if let Some(x) = &mut event.external_id {
            defaults.prefix(x);
        }
        if event.data_set_id.is_none() {
            event.data_set_id = defaults.data_set_id;
        }
        self.queue(&self.queues.events, Events::store(event)).await
    }

    /// Queues a Data Modeling node (waits while the queue is full).
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe: a cancelled call has not queued the node.
    pub async fn node(&self, node: Node) -> Result<(), CdfError> {
        self.queue(&self.queues.instances, Instances::store(node)).await
    }

    /// The state key of `key` for this task.
    fn key(&self, key: &str) -> String {
        if key.is_empty() {
            self.ledger.task().to_owned()
        } else {
            format!("{}:{key}", self.ledger.task())
        }
    }

    /// Where reading resumes for `key`, as a `T` (any serde type: a number, a timestamp, a
    /// struct of your own; `serde_json::Value` takes anything): the newest checkpoint this
    /// process made that is not durable yet (its items are still queued), else the state
    /// store's high watermark; `None` the first time. A stored value that is not a `T` is a
    /// permanent error naming the key.
    pub fn resume<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, TaskError> {
        let key = self.key(key);
        let Some(value) = self
            .ledger
            .pending(&key)
            .or_else(|| self.ledger.state()?.get(&key)?.high)
        else {
            return Ok(None);
        };
        serde_json::from_value(value).map(Some).map_err(|e| {
            TaskError::permanent(format!(
                "the state of `{key}` is not what this extractor stores: {e}; \
                 fix or remove it, or start with --reset-state"
            ))
        })
    }

    /// Records that everything up to `value` for `key` is queued: it becomes the state's high
    /// watermark once CDF settled every item this task queued before this call.
    pub fn checkpoint<T: Serialize + ?Sized>(&self, key: &str, value: &T) {
        let value = serde_json::to_value(value).expect("a watermark serializes to JSON");
        self.ledger.checkpoint(self.key(key), value);
    }

    /// Writes the state store out now (it is also saved every `save-interval`, after each
    /// flush and at shutdown): for a checkpoint that must survive a crash right away, such as
    /// an upload's progress. Nothing to do without a state store.
    ///
    /// # Cancel safety
    ///
    /// Cancelling a RAW save may leave some rows written; the next save writes them all again.
    pub async fn save_state(&self) -> Result<(), TaskError> {
        match self.ledger.state() {
            Some(state) => state
                .save()
                .await
                .map_err(|e| TaskError::transient("cannot save the state").with_source(e)),
            None => Ok(()),
        }
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
        let flushed = self.queues.flush().await.map(|_| ());
        match (self.ledger.outstanding(), flushed) {
            (0, _) => Ok(self.ledger.take_refusals()),
            (_, Err(e)) => Err(e.into()),
            (n, Ok(())) => Err(TaskError::transient(match self.queues.dead_letter_failure() {
                Some(e) => format!(
                    "{n} item(s) of this task are still queued: CDF refused some, and the dead-letter file cannot be written ({e}); they are held in memory and written at a later flush"
                ),
                None => format!("{n} item(s) of this task are still queued"),
            })),
        }
    }

    /// Lets a source go on reading while what it queued is being sent: starts sending the
    /// queues' full requests in the background (several in flight, see
    /// `upload-queue.max-in-flight`) and returns at once, with what CDF refused since the last
    /// call, as [`deliver`](Self::deliver) does. While more than seven eighths of a queue's
    /// worth of this task's items is not settled yet it waits for CDF to settle some (the
    /// source reads at most that far ahead, and does not fill the queues by itself). When a
    /// background send stopped on an error (CDF down) and items of this task are queued, it is
    /// [`deliver`](Self::deliver): waits, and fails as that does.
    ///
    /// Call it often during a long read (every thousand items or so: a producer that adds more
    /// than an eighth of a queue between calls may wait in the queue while CDF is down instead
    /// of failing); call [`deliver`](Self::deliver) (or [`settled`](Self::settled)) at the end.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe: the items stay queued and the checkpoints pending.
    pub async fn send_ahead(&self) -> Result<Refusals, TaskError> {
        // The window's requests fit in two thirds of a queue; more waits ready, so an answer is
        // followed by the next request at once; the last eighth is for other producers.
        let capacity = self.queues.capacity();
        let ahead = capacity - capacity / 8;
        loop {
            if self.queues.take_ahead_error().is_some() && self.ledger.outstanding() > 0 {
                return self.deliver().await;
            }
            let settled = self.ledger.settled.notified();
            tokio::pin!(settled);
            // Registered before the check: an item settled after it wakes us.
            settled.as_mut().enable();
            self.queues.send_ahead();
            if self.ledger.outstanding() <= ahead {
                return Ok(self.ledger.take_refusals());
            }
            tokio::select! {
                () = settled => {}
                // A background send that stopped on an error settles nothing, so nothing wakes
                // this: look at the error again every second.
                () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            }
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
        let kept = match self.queues.dead_letter() {
            Some(path) => format!("written to {}", path.display()),
            None => "not kept (no upload-queue.dead-letter)".to_owned(),
        };
        Some(TaskError::permanent(format!(
            "CDF refused {} item(s) of this task: {refused}; {kept}",
            refused.count
        )))
    }
}
