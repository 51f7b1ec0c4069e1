//! Bounded upload queues into CDF: backpressure, requests split at the API's limits, and
//! at-least-once delivery (items leave the queue only after CDF accepted them).
//!
//! A queue holds items of one [`Kind`]; [`UploadQueue::add`] waits while the queue is full
//! (it never grows without bound and never drops), and [`UploadQueue::flush`] sends what is
//! queued, request by request, removing each request's items only once CDF accepted them. A
//! failed flush keeps the rest for the next one and returns the error.

mod datapoints;
mod events;
mod raw;

use std::collections::VecDeque;
use std::sync::Arc;

use prometheus::{IntCounterVec, IntGaugeVec, Opts};
use tokio::sync::Notify;

pub use datapoints::{Datapoint, Datapoints, Value as DatapointValue};
pub use events::{Event, Events};
pub use raw::{RawRow, RawRows, StoredRow};

use crate::cdf::{CdfClient, CdfError};

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
    type Stored: Send + 'static;
    /// The `queue` label.
    const NAME: &'static str;
    /// The first request for the front of `items`: it carries a prefix of them, never more than
    /// the API allows in one request.
    fn next_request(items: &VecDeque<Self::Stored>) -> Request;

    /// Turns an added item into what the queue keeps.
    fn store(item: Self::Item) -> Self::Stored;
}

#[derive(Clone)]
struct Metrics {
    size: prometheus::IntGauge,
    items: IntCounterVec,
}

/// `extractor_upload_queue_size{queue}` and `extractor_upload_items_total{queue,result}`.
#[derive(Clone, Debug)]
pub struct QueueMetrics {
    size: IntGaugeVec,
    items: IntCounterVec,
}

impl QueueMetrics {
    /// Creates and registers the queue metrics.
    pub fn register(registry: &prometheus::Registry) -> prometheus::Result<Self> {
        let m = QueueMetrics {
            size: IntGaugeVec::new(
                Opts::new(
                    "extractor_upload_queue_size",
                    "Items waiting in an upload queue.",
                ),
                &["queue"],
            )?,
            items: IntCounterVec::new(
                Opts::new(
                    "extractor_upload_items_total",
                    "Items leaving an upload queue, by result (uploaded, failed: still queued).",
                ),
                &["queue", "result"],
            )?,
        };
        registry.register(Box::new(m.size.clone()))?;
        registry.register(Box::new(m.items.clone()))?;
        Ok(m)
    }
}

struct Inner<K: Kind> {
    items: std::sync::Mutex<VecDeque<K::Stored>>,
    capacity: usize,
    space: Notify,
    flushing: tokio::sync::Mutex<()>,
    client: CdfClient,
    metrics: Metrics,
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
    /// A queue of at most `capacity` items that uploads through `client`.
    pub fn new(client: CdfClient, capacity: usize, metrics: &QueueMetrics) -> Self {
        for result in ["uploaded", "failed"] {
            metrics.items.with_label_values(&[K::NAME, result]);
        }
        UploadQueue {
            inner: Arc::new(Inner {
                items: std::sync::Mutex::new(VecDeque::new()),
                capacity: capacity.max(1),
                space: Notify::new(),
                flushing: tokio::sync::Mutex::new(()),
                client,
                metrics: Metrics {
                    size: metrics.size.with_label_values(&[K::NAME]),
                    items: metrics.items.clone(),
                },
            }),
        }
    }

    /// Items waiting.
    pub fn len(&self) -> usize {
        self.inner.items.lock().expect("queue lock").len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queues an item. When the queue is full it first flushes; if the flush fails it waits for
    /// space (another flush) instead of dropping anything: backpressure.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe: a cancelled `add` has not queued the item.
    pub async fn add(&self, item: K::Item) -> Result<(), CdfError> {
        let item = K::store(item);
        loop {
            {
                let mut items = self.inner.items.lock().expect("queue lock");
                if items.len() < self.inner.capacity {
                    items.push_back(item);
                    self.inner.metrics.size.set(items.len() as i64);
                    return Ok(());
                }
            }
            let space = self.inner.space.notified();
            if let Err(e) = self.flush().await {
                // Keep everything, wait for space (another flush) or try again in a second.
                tracing::warn!(target: "extractor_runtime::queues", queue = K::NAME, "the queue is full and the flush failed; waiting: {e}");
                tokio::select! {
                    () = space => {}
                    () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                }
            }
        }
    }

    /// Sends everything queued. Each request's items leave the queue only after CDF accepted
    /// them; on a failure the rest stays queued and the error is returned.
    ///
    /// # Cancel safety
    ///
    /// Cancelling may leave a request in flight whose items stay queued: they are sent again by
    /// the next flush (at-least-once).
    pub async fn flush(&self) -> Result<usize, CdfError> {
        let _one_at_a_time = self.inner.flushing.lock().await;
        let mut sent = 0;
        loop {
            let request = {
                let items = self.inner.items.lock().expect("queue lock");
                if items.is_empty() {
                    return Ok(sent);
                }
                K::next_request(&items)
            };
            match self
                .inner
                .client
                .post_body(request.endpoint, &request.path, request.body.clone())
                .await
            {
                Ok(_) => {
                    let mut items = self.inner.items.lock().expect("queue lock");
                    let done = request.items.min(items.len());
                    items.drain(..done);
                    self.inner.metrics.size.set(items.len() as i64);
                    drop(items);
                    self.inner
                        .metrics
                        .items
                        .with_label_values(&[K::NAME, "uploaded"])
                        .inc_by(request.items as u64);
                    self.inner.space.notify_waiters();
                    sent += request.items;
                }
                Err(e) => {
                    self.inner
                        .metrics
                        .items
                        .with_label_values(&[K::NAME, "failed"])
                        .inc_by(request.items as u64);
                    return Err(e);
                }
            }
        }
    }
}

/// The process's three queues, shared by every task run.
#[derive(Clone)]
pub struct Queues {
    /// RAW rows.
    pub raw: UploadQueue<RawRows>,
    /// Datapoints.
    pub datapoints: UploadQueue<Datapoints>,
    /// Events.
    pub events: UploadQueue<Events>,
}

impl std::fmt::Debug for Queues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queues")
            .field("pending", &self.pending())
            .finish()
    }
}

impl Queues {
    /// Queues of `capacity` items each, uploading through `client`.
    pub fn new(
        client: CdfClient,
        capacity: usize,
        registry: &prometheus::Registry,
    ) -> prometheus::Result<Self> {
        let metrics = QueueMetrics::register(registry)?;
        Ok(Queues {
            raw: UploadQueue::new(client.clone(), capacity, &metrics),
            datapoints: UploadQueue::new(client.clone(), capacity, &metrics),
            events: UploadQueue::new(client, capacity, &metrics),
        })
    }

    /// Items waiting in all queues.
    pub fn pending(&self) -> usize {
        self.raw.len() + self.datapoints.len() + self.events.len()
    }

    /// Flushes every queue; returns the items sent, or the first error (the other queues are
    /// still flushed, and what failed stays queued).
    ///
    /// # Cancel safety
    ///
    /// As [`UploadQueue::flush`]: nothing is lost, items may be sent twice.
    pub async fn flush(&self) -> Result<usize, CdfError> {
        let (raw, datapoints, events) = tokio::join!(
            self.raw.flush(),
            self.datapoints.flush(),
            self.events.flush()
        );
        let mut sent = 0;
        let mut first_error = None;
        for r in [raw, datapoints, events] {
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
