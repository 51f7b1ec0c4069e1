//! Bounded upload queues into CDF: backpressure, requests split at the API's limits, and
//! at-least-once delivery (items leave the queue only after CDF settled them).
//!
//! A queue holds items of one [`Kind`]; [`UploadQueue::add`] waits while the queue is full
//! (it never grows without bound and never drops), and [`UploadQueue::flush`] sends what is
//! queued, several requests in flight at once (`upload-queue.max-in-flight`, so a round trip to
//! CDF is hidden behind the next requests), and [`UploadQueue::send_ahead`] starts sending the
//! full requests in the background while a producer goes on. Each item leaves the queue once
//! CDF *settled* it:
//!
//! - accepted;
//! - named in CDF's `missing` or `duplicated` list and handled by the task's [`Policy`]
//!   (missing time series created and the datapoints sent again; duplicated events updated or
//!   skipped), or refused;
//! - part of a request CDF refused without naming items (400/422): the request is split in
//!   halves until the culprits stand alone (a few extra requests per bad item), and only they
//!   are refused; a request too large (413) is split the same way.
//!
//! A refused item is written to the dead-letter file (`upload-queue.dead-letter`), logged
//! and counted, and never blocks the items behind it. Transient failures (408, 429, 5xx,
//! network), a missing token and answers that concern every item (401, 403, 404) keep the items
//! queued for the next flush, in order, and the flush returns the error (the requests already in
//! flight are settled first; no new one starts). Requests may be answered out of order: an item
//! that goes back goes back to its place in the queue, and a task's watermark moves only past
//! items whose predecessors are all settled (see [`ledger`]).
//!
//! Extractors use a task's [`Upload`] handle, which tags every item with the task's ledger, so a
//! checkpoint becomes durable once CDF settled everything that task queued before it.

mod datapoints;
mod dead_letter;
mod deliver;
mod disk;
mod events;
mod instances;
pub(crate) mod ledger;
mod policy;
mod protobuf;
mod raw;
mod upload;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use prometheus::IntCounterVec;
use tokio::sync::Notify;

pub use datapoints::{
    COGNITE_TIME_SERIES, Datapoint, Datapoints, NewSeries, StoredPoint, Value as DatapointValue,
};
pub use dead_letter::DeadLetter;
pub use events::{Event, Events};
pub use instances::{
    EdgeEnds, InstanceRef, Instances, MAX_INSTANCES_PER_REQUEST, Node, StoredNode, ViewRef,
};
pub use ledger::Refusals;
pub use policy::{OnDuplicate, Policy};
pub use raw::{RawRow, RawRows, StoredRow};
pub use upload::Upload;
#[cfg(feature = "testing")]
pub use protobuf::{insertion_request_json, insertion_request_points};

use crate::cdf::{CdfClient, CdfError};
pub use crate::metrics::QueueMetrics;
use deliver::Outcome;
use ledger::{Ledger, Settled, Tag};

/// One request a batch of items becomes.
#[derive(Debug)]
pub struct Request {
    /// The endpoint template, for metrics.
    pub endpoint: &'static str,
    /// The path, with its query string.
    pub path: String,
    /// The JSON body, serialized once when the request is built (no copy of the items as
    /// `serde_json::Value`s; cheap to clone for a retry).
    pub body: bytes::Bytes,
    /// How many queued items the request carries (the first ones).
    pub items: usize,
}

impl Request {
    /// The body parsed back (for tests and tools).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a request body is JSON")
    }
}

/// `{"items": items}` serialized.
pub(crate) fn items_body<T: serde::Serialize>(items: &[T]) -> bytes::Bytes {
    #[derive(serde::Serialize)]
    struct Items<'a, T> {
        items: &'a [T],
    }
    serde_json::to_vec(&Items { items })
        .expect("queue items serialize")
        .into()
}

/// A kind of item and how items become requests.
pub trait Kind: Send + Sync + 'static {
    /// The item, as producers add it.
    type Item: Send + 'static;
    /// The item as the queue keeps it (smaller: a RAW row's columns are kept serialized).
    type Stored: Send + Sync + 'static;
    /// The `queue` label.
    const NAME: &'static str;
    /// With a disk buffer, the items read ahead into memory at most (a request's worth being
    /// sent and about the next one's), whatever `max-queue-size` says: the backlog stays on
    /// disk, and memory does not hold `max-queue-size` items of it.
    const READ_AHEAD: usize;
    /// Items one request carries at most (the API's limit).
    const MAX_ITEMS: usize;

    /// Turns an added item into what the queue keeps.
    fn store(item: Self::Item) -> Self::Stored;

    /// How many items from the front of the queue one request carries: never more than the API
    /// allows in one request.
    fn batch_len<'a>(items: impl Iterator<Item = &'a Self::Stored>) -> usize;

    /// The request that sends `items` (at most one batch).
    fn request(items: &[&Self::Stored]) -> Request;

    /// The same request as protocol buffers (`Content-Type: application/protobuf`), where the
    /// API takes this kind so (datapoints); `None` where it does not.
    fn protobuf_request(_items: &[&Self::Stored]) -> Option<Request> {
        None
    }

    /// The id CDF names an item by in its `missing` and `duplicated` lists (an external id, a
    /// row key).
    fn id(item: &Self::Stored) -> Option<std::borrow::Cow<'_, str>>;

    /// The item as JSON, for the dead-letter file.
    fn to_json(item: &Self::Stored) -> serde_json::Value;

    /// An item from its dead-letter JSON ([`to_json`](Self::to_json)), to send it again
    /// (`replay`).
    fn from_json(value: serde_json::Value) -> Result<Self::Stored, String>;

    /// The item as the disk buffer keeps it (JSON).
    fn encode(item: &Self::Stored) -> Vec<u8>;

    /// An item from [`encode`](Self::encode)'s bytes.
    fn decode(bytes: &[u8]) -> Result<Self::Stored, serde_json::Error>;

    /// Requests that create what `items` refer to but CDF does not have (`create-missing`),
    /// with the data set and security categories of `defaults`; empty when this kind cannot.
    fn create_missing(_items: &[&Self::Stored], _defaults: &crate::cdf::Defaults) -> Vec<Request> {
        Vec::new()
    }

    /// Requests that update what CDF has already with `items` (`on-duplicate: update`); `None`
    /// when this kind cannot.
    fn update(_items: &[&Self::Stored]) -> Option<Vec<Request>> {
        None
    }

    /// The first request for the front of `items`.
    fn next_request(items: &VecDeque<Self::Stored>) -> Request {
        let n = Self::batch_len(items.iter());
        let front: Vec<&Self::Stored> = items.iter().take(n).collect();
        Self::request(&front)
    }
}

#[derive(Clone)]
struct Metrics {
    size: prometheus::IntGauge,
    items: IntCounterVec,
    refused: Arc<AtomicUsize>,
    held: prometheus::IntGauge,
    write_failures: prometheus::IntCounter,
}

impl Metrics {
    fn count(&self, queue: &str, result: &str, n: usize) {
        if n > 0 {
            self.items
                .with_label_values(&[queue, result])
                .inc_by(n as u64);
        }
    }
}

/// An item in a queue, with the ledger of the task that added it and that task's policy.
pub(crate) struct Entry<S> {
    /// Its place in the queue's order (given when it is queued): an item whose request failed
    /// goes back to this place, whatever was answered meanwhile.
    pub(crate) seq: u64,
    pub(crate) item: S,
    pub(crate) tag: Option<Tag>,
    pub(crate) policy: Policy,
    /// With a disk buffer: the record's sequence number, acknowledged once the item settles.
    pub(crate) disk: Option<u64>,
    /// With a disk buffer: the task that queued it (its ledger, in `tag`, is not kept on disk).
    pub(crate) task: Option<Arc<str>>,
}

impl<S> Entry<S> {
    /// The task that queued it; empty when none did (items added outside a task).
    pub(crate) fn task(&self) -> &str {
        match (&self.tag, &self.task) {
            (Some(tag), _) => tag.ledger.task(),
            (None, Some(task)) => task,
            (None, None) => "",
        }
    }
}

struct Slots<S> {
    items: VecDeque<Entry<S>>,
    /// The `seq` of the next item queued.
    next_seq: u64,
    /// Items taken out by the requests in flight (they count against the capacity).
    in_flight: usize,
    /// Refused items whose dead-letter line could not be written (a full disk), with that
    /// line: held aside (counted against the capacity, so bounded), never sent again, written
    /// by a later flush. Their task's watermark does not move past them until then.
    held: Vec<(Entry<S>, Vec<u8>)>,
}

impl<S> Slots<S> {
    /// Everything that counts against the capacity.
    fn len(&self) -> usize {
        self.items.len() + self.in_flight + self.held.len()
    }

    /// Queues `entry` last.
    pub(crate) fn push(&mut self, mut entry: Entry<S>) {
        entry.seq = self.next_seq;
        self.next_seq += 1;
        self.items.push_back(entry);
    }

    /// Puts the entries of one request (in order) back to their place: before every item queued
    /// after them. Only items of other requests that went back can be older, so this walks
    /// at most the window's items, not the queue.
    fn put_back(&mut self, entries: Vec<Entry<S>>) {
        let Some(first) = entries.first() else {
            return;
        };
        let at = self.items.partition_point(|e| e.seq < first.seq);
        let older: Vec<Entry<S>> = self.items.drain(..at).collect();
        for entry in older.into_iter().chain(entries).rev() {
            self.items.push_front(entry);
        }
    }
}

/// What a [`UploadQueue::send`] takes from the queue.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Take {
    /// Everything queued.
    All,
    /// Only requests as full as they can be (more items wait behind them): what a producer
    /// still adding would not make larger; any request once half the queue's capacity waits.
    Full,
}

struct Inner<K: Kind> {
    slots: std::sync::Mutex<Slots<K::Stored>>,
    capacity: usize,
    /// Requests in flight at most.
    window: usize,
    /// Woken by [`UploadQueue::send_ahead`]: items were added while a sender runs.
    more: Notify,
    /// Items one request carries at most (besides the API's limits): the capacity shared by
    /// the window, so several requests fit in the queue at once.
    per_request: usize,
    space: Notify,
    /// Held by the one sender (a flush, or the background sender).
    flushing: tokio::sync::Mutex<()>,
    /// Flushes waiting for `flushing`: while there are any, the background sender takes
    /// everything, not only full requests, so the last partial request goes out beside the
    /// full ones in flight instead of after all of them are answered.
    flushes_waiting: std::sync::atomic::AtomicUsize,
    /// The error that stopped the background sender, until a producer takes it.
    ahead_error: std::sync::Mutex<Option<CdfError>>,
    client: CdfClient,
    dead_letter: Option<Arc<DeadLetter>>,
    metrics: Metrics,
    /// `upload-queue.buffer: {type: disk}`: items are accepted once on disk, and fed from it.
    disk: Option<disk::Disk>,
}

/// A bounded upload queue. Cheap to clone; clones share the queue.
pub struct UploadQueue<K: Kind> {
    inner: Arc<Inner<K>>,
}

impl<K: Kind> Clone for UploadQueue<K> {
    fn clone(&self) -> Self {
        UploadQueue {
            inner: self.inner.clone(),
        }
    }
}

impl<K: Kind> UploadQueue<K> {
    /// A queue of at most `capacity` items that uploads through `client`; refused items are
    /// logged and counted (see [`with_dead_letter`](Self::with_dead_letter)).
    pub fn new(client: CdfClient, capacity: usize, metrics: &QueueMetrics) -> Self {
        Self::with_dead_letter(client, capacity, metrics, None)
    }

    /// A queue whose refused items are also appended to `dead_letter`.
    pub fn with_dead_letter(
        client: CdfClient,
        capacity: usize,
        metrics: &QueueMetrics,
        dead_letter: Option<Arc<DeadLetter>>,
    ) -> Self {
        for result in ["uploaded", "failed", "rejected", "skipped"] {
            metrics.items.with_label_values(&[K::NAME, result]);
        }
        UploadQueue {
            inner: Arc::new(Inner {
                slots: std::sync::Mutex::new(Slots {
                    items: VecDeque::new(),
                    next_seq: 0,
                    in_flight: 0,
                    held: Vec::new(),
                }),
                capacity: capacity.max(1),
                window: 1,
                more: Notify::new(),
                per_request: usize::MAX,
                space: Notify::new(),
                flushing: tokio::sync::Mutex::new(()),
                flushes_waiting: std::sync::atomic::AtomicUsize::new(0),
                ahead_error: std::sync::Mutex::new(None),
                client,
                dead_letter,
                metrics: Metrics {
                    size: metrics.size.with_label_values(&[K::NAME]),
                    items: metrics.items.clone(),
                    refused: metrics.refused.clone(),
                    held: metrics.dead_letter_held.with_label_values(&[K::NAME]),
                    write_failures: metrics.dead_letter_failures.clone(),
                },
                disk: None,
            }),
        }
    }

    /// A queue whose items are kept in `log` (a disk buffer): an item is accepted once it is
    /// on disk, and the queue's memory is fed from the log (what was not settled before a
    /// restart first, in order). Starts the feeding task: call within a Tokio runtime.
    pub(crate) fn with_disk(
        client: CdfClient,
        capacity: usize,
        metrics: &QueueMetrics,
        dead_letter: Option<Arc<DeadLetter>>,
        log: crate::disk_log::DiskLog,
        window: usize,
    ) -> Self {
        let mut queue =
            Self::with_dead_letter(client, capacity, metrics, dead_letter).with_in_flight(window);
        let reader = log.reader();
        let inner = Arc::get_mut(&mut queue.inner).expect("a new queue has one owner");
        inner.disk = Some(disk::Disk::new(log, metrics, K::NAME));
        tokio::spawn(disk::feed(Arc::downgrade(&queue.inner), reader));
        queue
    }

    /// The same queue keeping up to `window` requests in flight (1, one request at a time, by
    /// default). A request then carries at most `2 * capacity / (3 * window)` items (never
    /// fewer than [`MIN_PER_REQUEST`], nor more than the API allows), so the window's requests
    /// fit in two thirds of the queue, and a producer [sending ahead](Upload::send_ahead)
    /// further keeps the window full. Call before the queue is shared.
    pub fn with_in_flight(mut self, window: usize) -> Self {
        let inner = Arc::get_mut(&mut self.inner).expect("a new queue has one owner");
        inner.window = window.max(1);
        inner.per_request = if inner.window == 1 {
            usize::MAX
        } else {
            (inner.capacity * 2 / (3 * inner.window)).max(MIN_PER_REQUEST)
        };
        self
    }

    /// Items waiting (including those of a flush in progress, and refused items held until
    /// the dead-letter file can be written).
    pub fn len(&self) -> usize {
        match &self.inner.disk {
            // Every item not settled is a record on disk (those in memory too).
            Some(disk) => disk.unsettled(),
            None => self.inner.slots.lock().expect("queue lock").len(),
        }
    }

    /// Refused items held until the dead-letter file can be written.
    pub fn held(&self) -> usize {
        self.inner.slots.lock().expect("queue lock").held.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queues an item that belongs to no task (no ledger, the default [`Policy`]). When the
    /// queue is full it first flushes; if the flush fails it waits for space (another flush)
    /// instead of dropping anything: backpressure.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe: a cancelled `add` has not queued the item.
    pub async fn add(&self, item: K::Item) -> Result<(), CdfError> {
        self.add_entry(K::store(item), None, Policy::default())
            .await
    }

    /// Queues an item of the task whose ledger is `ledger`, handled by `policy` if CDF refuses
    /// it. Cancel safe as [`add`](Self::add): the ledger counts the item only once queued.
    pub(crate) async fn add_entry(
        &self,
        item: K::Stored,
        ledger: Option<&Arc<Ledger>>,
        policy: Policy,
    ) -> Result<(), CdfError> {
        // A producer whose adds never wait would hold its worker thread for as long as it
        // reads: the sender it woke (kept in that worker's next-task slot, which no other
        // worker takes) would not start the next request until then. Yield now and then.
        tokio::task::coop::consume_budget().await;
        if let Some(disk) = &self.inner.disk {
            disk.append::<K>(&item, policy, ledger.map(|l| l.task()))
                .await?;
            // On disk, it survives a crash: its task's watermark may move past it.
            if let Some(ledger) = ledger {
                let tag = ledger.enter();
                ledger.settle(&tag, Settled::Accepted, None);
            }
            return Ok(());
        }
        loop {
            {
                let mut slots = self.inner.slots.lock().expect("queue lock");
                if slots.len() < self.inner.capacity {
                    let tag = ledger.map(Ledger::enter);
                    slots.push(Entry {
                        seq: 0,
                        item,
                        tag,
                        policy,
                        disk: None,
                        task: None,
                    });
                    self.inner.metrics.size.set(slots.len() as i64);
                    return Ok(());
                }
            }
            let space = self.inner.space.notified();
            tokio::pin!(space);
            // Registered before the check: room freed after it wakes us.
            space.as_mut().enable();
            {
                let slots = self.inner.slots.lock().expect("queue lock");
                if slots.len() < self.inner.capacity {
                    continue;
                }
            }
            // A flush under way frees room as each of its requests is settled, and takes what
            // producers add meanwhile into its next request: wait for that room. Queuing
            // behind it for a flush of our own instead made every producer send a request of
            // the one or two items that had come meanwhile (about 1 item per request against a
            // slow CDF once the queue was full).
            if self.inner.flushing.try_lock().is_err() {
                tokio::select! {
                    () = &mut space => {}
                    () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                }
                continue;
            }
            if let Err(e) = self.flush().await {
                // Keep everything, wait for space (another flush) or try again in a second.
                tracing::warn!(target: "extractor_runtime::queues", queue = K::NAME, "the queue is full and the flush failed; waiting: {e}");
                tokio::select! {
                    () = &mut space => {}
                    () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                }
            }
        }
    }

    /// Sends everything queued. Each item leaves the queue once CDF settled it (accepted,
    /// handled by its policy, or refused to the dead-letter file); after a failure that concerns
    /// every item (transient, auth, permissions) the rest stays queued, in order, and the error
    /// is returned. Returns how many items left the queue in this flush's own requests: a
    /// background send ([`send_ahead`](Self::send_ahead)) under way takes the rest at once,
    /// beside its requests in flight, and the flush waits for it to end.
    ///
    /// # Cancel safety
    ///
    /// Cancelling may leave a request in flight; its items go back to the queue and are sent
    /// again by the next flush (at-least-once).
    pub async fn flush(&self) -> Result<usize, CdfError> {
        use std::sync::atomic::Ordering::SeqCst;
        let _sender = match self.inner.flushing.try_lock() {
            Ok(sender) => sender,
            Err(_) => {
                // A background sender runs: it takes the rest too, while it waits for answers.
                struct Waiting<'a>(&'a std::sync::atomic::AtomicUsize);
                impl Drop for Waiting<'_> {
                    fn drop(&mut self) {
                        self.0.fetch_sub(1, SeqCst);
                    }
                }
                self.inner.flushes_waiting.fetch_add(1, SeqCst);
                let _waiting = Waiting(&self.inner.flushes_waiting);
                self.inner.more.notify_one();
                self.inner.flushing.lock().await
            }
        };
        self.inner.send(Take::All).await
    }

    /// Starts sending, in the background, the requests of this queue that are as full as they
    /// can be (a producer that goes on adding would not make them larger), unless a flush or an
    /// earlier background send is under way; returns at once. Its error, if it stopped on one,
    /// is kept for [`take_ahead_error`](Self::take_ahead_error); the items stay queued.
    /// Call within a Tokio runtime.
    pub fn send_ahead(&self) {
        if self.inner.slots.lock().expect("queue lock").items.is_empty() {
            return;
        }
        if self.inner.flushing.try_lock().is_err() {
            // The running sender looks for full requests again.
            self.inner.more.notify_one();
            return;
        }
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let Ok(_sender) = inner.flushing.try_lock() else {
                return;
            };
            if let Err(e) = inner.send(Take::Full).await {
                tracing::debug!(target: "extractor_runtime::queues", queue = K::NAME, "sending ahead stopped: {e}");
                *inner.ahead_error.lock().expect("queue lock") = Some(e);
            }
        });
    }

    /// The error that stopped the last background send (see [`send_ahead`](Self::send_ahead)),
    /// if one did since the last call.
    pub fn take_ahead_error(&self) -> Option<CdfError> {
        self.inner.ahead_error.lock().expect("queue lock").take()
    }
}

/// Items a request carries at least when a queue's capacity is shared by its window (a smaller
/// queue keeps fewer requests in flight instead of sending small ones).
pub const MIN_PER_REQUEST: usize = 1_000;

/// The answer to one request: its batch, what became of each item, and why it stopped.
type Answered<'q, K> = (InFlight<'q, K>, Vec<Outcome>, Result<(), CdfError>);

impl<K: Kind> Inner<K> {
    /// Sends what `take` says, up to `window` requests in flight, settling each as it is
    /// answered. After a failure that concerns every item no new request starts; those in
    /// flight are settled, and the first error is returned. The caller holds `flushing`.
    async fn send(&self, take: Take) -> Result<usize, CdfError> {
        use futures_util::StreamExt;
        // Refused items held since a dead-letter write failed go first.
        let mut sent = match self.write_held().await {
            Some(Ok(n)) => n,
            _ => 0,
        };
        let mut requests = futures_util::stream::FuturesUnordered::new();
        let mut stopped = None;
        loop {
            while stopped.is_none() && requests.len() < self.window {
                let Some(batch) = self.take(take) else { break };
                tracing::trace!(target: "extractor_runtime::queues", queue = K::NAME, items = batch.taken, in_flight = requests.len() + 1, "request sent");
                requests.push(self.deliver(batch));
            }
            let next = if requests.is_empty() {
                None
            } else {
                // Woken by an answer, or by a producer that queued more meanwhile.
                tokio::select! {
                    answered = requests.next() => answered,
                    () = self.more.notified(), if stopped.is_none() && requests.len() < self.window => continue,
                }
            };
            let Some((mut batch, outcomes, result)) = next else {
                // Nothing in flight and nothing to take. With a disk buffer, records not yet
                // in memory are fed in while this waits.
                if stopped.is_some() || take == Take::Full || !self.wait_for_feed().await {
                    break;
                }
                continue;
            };
            sent += batch.settle(outcomes).await;
            if let Err(e) = result {
                stopped.get_or_insert(e);
            }
        }
        match stopped {
            Some(e) => Err(e),
            None => Ok(sent),
        }
    }

    /// The next request's items, taken out of the queue (see [`Take`]).
    fn take(&self, take: Take) -> Option<InFlight<'_, K>> {
        let take = if self.flushes_waiting.load(std::sync::atomic::Ordering::SeqCst) > 0 {
            Take::All
        } else {
            take
        };
        let mut slots = self.slots.lock().expect("queue lock");
        if slots.items.is_empty() {
            return None;
        }
        let items = slots.items.iter().take(self.per_request).map(|e| &e.item);
        let n = K::batch_len(items).max(1);
        let full = n < slots.items.len() || n >= self.per_request.min(K::MAX_ITEMS);
        if take == Take::Full && !full && slots.items.len() * 2 < self.capacity {
            return None;
        }
        let entries: Vec<Entry<K::Stored>> = slots.items.drain(..n).collect();
        slots.in_flight += n;
        Some(InFlight {
            inner: self,
            entries,
            taken: n,
        })
    }

    /// Sends one batch; dropped before it is answered, its items go back to the queue.
    async fn deliver<'q>(&'q self, batch: InFlight<'q, K>) -> Answered<'q, K> {
        let mut outcomes = vec![Outcome::Pending; batch.entries.len()];
        let result = deliver::deliver::<K>(&self.client, &batch.entries, &mut outcomes).await;
        (batch, outcomes, result)
    }

    /// With a disk buffer whose records are not all in memory (the queue being empty): waits
    /// until some are fed in; `false` when there is nothing to wait for, or none came in time.
    async fn wait_for_feed(&self) -> bool {
        let Some(disk) = &self.disk else {
            return false;
        };
        let fed = disk.fed.notified();
        {
            let slots = self.slots.lock().expect("queue lock");
            if !slots.items.is_empty() {
                return true;
            }
            if disk.unsettled() <= slots.len() {
                return false;
            }
        }
        tokio::time::timeout(disk::FEED_WAIT, fed).await.is_ok()
    }

    /// Acknowledges a settled entry's record to the disk buffer, if it has one.
    fn ack(&self, entry: &Entry<K::Stored>) {
        if let (Some(disk), Some(seq)) = (&self.disk, entry.disk) {
            disk.log.ack(seq);
        }
    }

    /// Writes the dead-letter lines of every held refused item, oldest first, in one write
    /// (whole or not at all). Written, they are settled as refused; otherwise they stay held
    /// for a later flush, and the first failure of a burst is logged. `None` when nothing is
    /// held.
    async fn write_held(&self) -> Option<std::io::Result<usize>> {
        let file = self.dead_letter.clone()?;
        let held = {
            let mut slots = self.slots.lock().expect("queue lock");
            if slots.held.is_empty() {
                return None;
            }
            std::mem::take(&mut slots.held)
        };
        let (entries, lines): (Vec<_>, Vec<_>) = held.into_iter().unzip();
        let n = entries.len();
        let written = write(&file, lines.concat()).await;
        let mut slots = self.slots.lock().expect("queue lock");
        match &written {
            Ok(()) => {
                if file.succeeded() {
                    tracing::warn!(target: "extractor_runtime::queues", queue = K::NAME, file = %crate::text::Shown(file.path()), "the dead-letter file can be written again: {n} refused item(s) held in memory are written to it");
                }
                for entry in &entries {
                    if let Some(tag) = &entry.tag {
                        tag.ledger
                            .settle(tag, Settled::Refused, K::id(&entry.item).as_deref());
                    }
                    self.ack(entry);
                }
                for ledger in Ledger::of(entries.iter().map(|e| e.tag.as_ref())) {
                    ledger.wake();
                }
                self.metrics.count(K::NAME, "rejected", n);
                self.metrics.refused.fetch_add(n, Ordering::Relaxed);
            }
            Err(e) => {
                self.metrics.write_failures.inc();
                if file.failed(e) {
                    tracing::error!(target: "extractor_runtime::queues", queue = K::NAME, file = %crate::text::Shown(file.path()), "cannot write the dead-letter file: {e}; refused items are held in memory (the other items go on) and written at a later flush");
                }
                let newer = std::mem::take(&mut slots.held);
                slots.held = entries.into_iter().zip(lines).chain(newer).collect();
            }
        }
        self.metrics.held.set(slots.held.len() as i64);
        self.metrics.size.set(slots.len() as i64);
        drop(slots);
        self.space.notify_waiters();
        Some(written.map(|()| n))
    }
}

/// Appends `lines` to `file` on a blocking thread.
async fn write(file: &Arc<DeadLetter>, lines: Vec<u8>) -> std::io::Result<()> {
    let file = file.clone();
    tokio::task::spawn_blocking(move || file.append(&lines))
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
}

/// The batch a flush took out of the queue. Dropped before it is settled (the flush was
/// cancelled), it puts every item back at the front, in order.
struct InFlight<'q, K: Kind> {
    inner: &'q Inner<K>,
    entries: Vec<Entry<K::Stored>>,
    /// How many items it took (counted in `in_flight` until it is settled or dropped).
    taken: usize,
}

impl<K: Kind> InFlight<'_, K> {
    /// Removes the settled items (acknowledging them to their ledgers) and puts the pending
    /// ones back at the front of the queue. Refused items join the held ones, which are then
    /// written to the dead-letter file (see [`Inner::write_held`]): nothing refused is
    /// forgotten before it is on disk, and nothing refused is sent again. Without a dead-letter
    /// file they are settled at once. Returns how many items left the queue.
    async fn settle(&mut self, outcomes: Vec<Outcome>) -> usize {
        let entries = std::mem::take(&mut self.entries);
        let dead_letter = self.inner.dead_letter.clone();
        let refusals = deliver::RefusalLog::of::<K>(&entries, &outcomes);
        let mut lines = match &dead_letter {
            Some(_) if !refusals.is_empty() => deliver::dead_letter_lines::<K>(&entries, &outcomes),
            _ => Vec::new(),
        }
        .into_iter();
        let metrics = &self.inner.metrics;
        let mut counts = [0usize; 4];
        let (mut pending, mut held) = (Vec::new(), Vec::new());
        let woken = Ledger::of(entries.iter().map(|e| e.tag.as_ref()));
        for (entry, outcome) in entries.into_iter().zip(outcomes) {
            let (how, slot) = match outcome {
                Outcome::Pending => {
                    pending.push(entry);
                    counts[3] += 1;
                    continue;
                }
                Outcome::Refused(_) if dead_letter.is_some() => {
                    held.push((entry, lines.next().expect("a line per refused item")));
                    continue;
                }
                Outcome::Accepted => (Settled::Accepted, 0),
                Outcome::Skipped => (Settled::Skipped, 1),
                Outcome::Refused(_) => (Settled::Refused, 2),
            };
            counts[slot] += 1;
            if let Some(tag) = &entry.tag {
                tag.ledger.settle(tag, how, K::id(&entry.item).as_deref());
            }
            self.inner.ack(&entry);
        }
        for (i, result) in ["uploaded", "skipped", "rejected", "failed"]
            .iter()
            .enumerate()
        {
            metrics.count(K::NAME, result, counts[i]);
        }
        metrics.refused.fetch_add(counts[2], Ordering::Relaxed);
        {
            let mut slots = self.inner.slots.lock().expect("queue lock");
            slots.put_back(pending);
            slots.held.extend(held);
            slots.in_flight -= std::mem::take(&mut self.taken);
            metrics.size.set(slots.len() as i64);
        }
        if let Some(disk) = &self.inner.disk {
            disk.update_metrics();
        }
        self.inner.space.notify_waiters();
        for ledger in woken {
            ledger.wake();
        }
        let mut left = counts[0] + counts[1] + counts[2];
        if refusals.is_empty() {
            return left;
        }
        let destination = match &dead_letter {
            None => "not kept: set upload-queue.dead-letter to keep them".to_owned(),
            Some(file) => match self.inner.write_held().await.unwrap_or(Ok(0)) {
                Ok(n) => {
                    left += n;
                    format!("written to {}", crate::text::Shown(file.path()))
                }
                Err(e) => format!(
                    "NOT written to {} ({e}): held in memory, written at a later flush",
                    crate::text::Shown(file.path())
                ),
            },
        };
        refusals.log(K::NAME, &destination);
        left
    }
}

impl<K: Kind> Drop for InFlight<'_, K> {
    fn drop(&mut self) {
        if self.taken == 0 {
            return;
        }
        let mut slots = self.inner.slots.lock().expect("queue lock");
        slots.put_back(std::mem::take(&mut self.entries));
        slots.in_flight -= self.taken;
    }
}

/// Why the disk buffer could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    /// Its folder or files cannot be opened.
    #[error("upload-queue.buffer: cannot open the disk buffer {}: {source}", .path.display())]
    Open {
        /// The queue's folder.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Its metrics cannot be registered.
    #[error("cannot register the queue metrics")]
    Metrics(#[source] prometheus::Error),
}

/// The process's queues, one per kind of item, shared by every task run.
#[derive(Clone)]
pub struct Queues {
    /// RAW rows.
    pub raw: UploadQueue<RawRows>,
    /// Datapoints.
    pub datapoints: UploadQueue<Datapoints>,
    /// Events.
    pub events: UploadQueue<Events>,
    /// Data Modeling nodes.
    pub instances: UploadQueue<Instances>,
    dead_letter: Option<Arc<DeadLetter>>,
    metrics: QueueMetrics,
    /// Items from tasks are queued only while it is held (the high-availability lease).
    pub(crate) fence: crate::fence::Fence,
}

impl std::fmt::Debug for Queues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queues")
            .field("pending", &self.pending())
            .finish()
    }
}

impl Queues {
    /// The CDF client they upload through.
    pub fn client(&self) -> &CdfClient {
        &self.raw.inner.client
    }

    /// Queues of `capacity` items each, uploading through `client`.
    pub fn new(
        client: CdfClient,
        capacity: usize,
        registry: &prometheus::Registry,
    ) -> prometheus::Result<Self> {
        Self::with_dead_letter(client, capacity, registry, None)
    }

    /// Queues of `capacity` items each whose refused items are also appended to `dead_letter`.
    pub fn with_dead_letter(
        client: CdfClient,
        capacity: usize,
        registry: &prometheus::Registry,
        dead_letter: Option<DeadLetter>,
    ) -> prometheus::Result<Self> {
        let metrics = QueueMetrics::register(registry)?;
        let dead_letter = dead_letter.map(Arc::new);
        Ok(Queues {
            raw: UploadQueue::with_dead_letter(
                client.clone(),
                capacity,
                &metrics,
                dead_letter.clone(),
            ),
            datapoints: UploadQueue::with_dead_letter(
                client.clone(),
                capacity,
                &metrics,
                dead_letter.clone(),
            ),
            events: UploadQueue::with_dead_letter(
                client.clone(),
                capacity,
                &metrics,
                dead_letter.clone(),
            ),
            instances: UploadQueue::with_dead_letter(
                client,
                capacity,
                &metrics,
                dead_letter.clone(),
            ),
            dead_letter,
            metrics,
            fence: crate::fence::Fence::open(),
        })
    }

    /// The same queues, each keeping up to `window` requests in flight (see
    /// [`UploadQueue::with_in_flight`]). Call before they are shared.
    pub fn with_in_flight(self, window: usize) -> Self {
        Queues {
            raw: self.raw.with_in_flight(window),
            datapoints: self.datapoints.with_in_flight(window),
            events: self.events.with_in_flight(window),
            instances: self.instances.with_in_flight(window),
            ..self
        }
    }

    /// Queues as [`with_dead_letter`](Self::with_dead_letter) whose items are kept on disk
    /// under `dir` (a folder per queue) until CDF settles them; what a crash or a stop left
    /// there is sent first; each keeps up to `window` requests in flight. Call within a Tokio
    /// runtime (each queue starts its feeding task).
    pub(crate) fn with_disk_buffer(
        client: CdfClient,
        capacity: usize,
        registry: &prometheus::Registry,
        dead_letter: Option<DeadLetter>,
        dir: &std::path::Path,
        options: crate::disk_log::Options,
        window: usize,
    ) -> Result<Self, BufferError> {
        let metrics = QueueMetrics::register(registry).map_err(BufferError::Metrics)?;
        let dead_letter = dead_letter.map(Arc::new);
        fn queue<K: Kind>(
            client: &CdfClient,
            capacity: usize,
            metrics: &QueueMetrics,
            dead_letter: &Option<Arc<DeadLetter>>,
            dir: &std::path::Path,
            options: &crate::disk_log::Options,
            window: usize,
        ) -> Result<UploadQueue<K>, BufferError> {
            let path = dir.join(K::NAME);
            let (log, recovered) = disk::open(dir, K::NAME, options.clone())
                .map_err(|source| BufferError::Open { path: path.clone(), source })?;
            if recovered.unacknowledged > 0 || recovered.truncated_bytes > 0 {
                tracing::info!(target: "extractor_runtime::disk_buffer", queue = K::NAME, records = recovered.unacknowledged, truncated_bytes = recovered.truncated_bytes, "the disk buffer holds items not yet settled; they are sent first");
            }
            Ok(UploadQueue::with_disk(
                client.clone(),
                capacity,
                metrics,
                dead_letter.clone(),
                log,
                window,
            ))
        }
        Ok(Queues {
            raw: queue(&client, capacity, &metrics, &dead_letter, dir, &options, window)?,
            datapoints: queue(&client, capacity, &metrics, &dead_letter, dir, &options, window)?,
            events: queue(&client, capacity, &metrics, &dead_letter, dir, &options, window)?,
            instances: queue(&client, capacity, &metrics, &dead_letter, dir, &options, window)?,
            dead_letter,
            metrics,
            fence: crate::fence::Fence::open(),
        })
    }

    /// Writes the disk buffers' ledgers (at a stop): the next start sends only what was not
    /// settled.
    pub(crate) fn sync_buffers(&self) {
        self.raw.sync_buffer();
        self.datapoints.sync_buffer();
        self.events.sync_buffer();
        self.instances.sync_buffer();
    }

    /// Items each queue holds at most.
    pub fn capacity(&self) -> usize {
        self.raw.inner.capacity
    }

    /// [`UploadQueue::send_ahead`] of every queue.
    pub fn send_ahead(&self) {
        self.raw.send_ahead();
        self.datapoints.send_ahead();
        self.events.send_ahead();
        self.instances.send_ahead();
    }

    /// The first of the queues' [`UploadQueue::take_ahead_error`]s (each queue's is taken).
    pub fn take_ahead_error(&self) -> Option<CdfError> {
        [
            self.raw.take_ahead_error(),
            self.datapoints.take_ahead_error(),
            self.events.take_ahead_error(),
            self.instances.take_ahead_error(),
        ]
        .into_iter()
        .flatten()
        .next()
    }

    /// Whether items are kept on disk until CDF settles them.
    pub fn is_durable(&self) -> bool {
        self.raw.is_durable()
    }

    /// The dead-letter file, if one is configured.
    pub fn dead_letter(&self) -> Option<&std::path::Path> {
        self.dead_letter.as_deref().map(DeadLetter::path)
    }

    /// Why the dead-letter file cannot be written, while it cannot (refused items are held).
    pub fn dead_letter_failure(&self) -> Option<String> {
        self.dead_letter.as_deref().and_then(DeadLetter::failure)
    }

    /// Refused items held in memory until the dead-letter file can be written.
    pub fn held(&self) -> usize {
        self.raw.held() + self.datapoints.held() + self.events.held() + self.instances.held()
    }

    /// Items CDF refused for good since these queues were made (logged, counted and, with a
    /// dead-letter file, kept there).
    pub fn refused(&self) -> usize {
        self.metrics.refused()
    }

    /// Items waiting in all queues.
    pub fn pending(&self) -> usize {
        self.raw.len() + self.datapoints.len() + self.events.len() + self.instances.len()
    }

    /// Flushes every queue; returns the items that left them, or the first error (the other queues are
    /// still flushed, and what failed stays queued).
    ///
    /// # Cancel safety
    ///
    /// As [`UploadQueue::flush`]: nothing is lost, items may be sent twice.
    pub async fn flush(&self) -> Result<usize, CdfError> {
        let (raw, datapoints, events, instances) = tokio::join!(
            self.raw.flush(),
            self.datapoints.flush(),
            self.events.flush(),
            self.instances.flush()
        );
        let mut sent = 0;
        let mut first_error = None;
        for r in [raw, datapoints, events, instances] {
            match r {
                Ok(n) => sent += n,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(sent),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(n: u64) -> Slots<u64> {
        let mut slots = Slots {
            items: VecDeque::new(),
            next_seq: 0,
            in_flight: 0,
            held: Vec::new(),
        };
        for i in 0..n {
            slots.push(Entry {
                seq: 0,
                item: i,
                tag: None,
                policy: Policy::default(),
                disk: None,
                task: None,
            });
        }
        slots
    }

    fn take(slots: &mut Slots<u64>, n: usize) -> Vec<Entry<u64>> {
        slots.items.drain(..n).collect()
    }

    fn order(slots: &Slots<u64>) -> Vec<u64> {
        slots.items.iter().map(|e| e.item).collect()
    }

    #[test]
    fn requests_put_back_in_any_order_restore_the_queue_order() {
        // Three requests of 2 taken; the second and then the first fail; the third succeeds.
        let mut s = slots(8);
        let (a, b, _c) = (take(&mut s, 2), take(&mut s, 2), take(&mut s, 2));
        s.push(Entry {
            seq: 0,
            item: 8,
            tag: None,
            policy: Policy::default(),
            disk: None,
            task: None,
        });
        s.put_back(b);
        assert_eq!(order(&s), [2, 3, 6, 7, 8]);
        s.put_back(a);
        assert_eq!(order(&s), [0, 1, 2, 3, 6, 7, 8]);
        // Taken again and put back last-first.
        let (a, b) = (take(&mut s, 2), take(&mut s, 3));
        s.put_back(a);
        s.put_back(b);
        assert_eq!(order(&s), [0, 1, 2, 3, 6, 7, 8]);
    }

    #[test]
    fn putting_back_nothing_changes_nothing() {
        let mut s = slots(3);
        s.put_back(Vec::new());
        assert_eq!(order(&s), [0, 1, 2]);
    }
}
