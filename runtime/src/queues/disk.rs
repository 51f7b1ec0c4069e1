//! A queue's disk buffer (`upload-queue.buffer: {type: disk}`): items are appended to a
//! [`DiskLog`] and the producer is told they are accepted only once they are synced to disk;
//! a feeding task reads them back into the queue's memory as it has room (what a crash left
//! unsettled first, in order), and each item's record is acknowledged once the item settles
//! (accepted by CDF, handled by its policy, or written to the dead-letter file). So a backlog
//! while CDF is down lives on disk, up to `max-size`, and memory stays at the queue's capacity.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Weak;
use std::time::Duration;

use tokio::sync::Notify;

use super::{Entry, Inner, Kind, Policy, QueueMetrics, UploadQueue};
use crate::cdf::{CdfError, CdfErrorKind};
use crate::disk_log::{DiskLog, Reader};
use crate::metrics::BufferMetrics;

/// How long a flush waits for the feeder to bring records from disk before it returns.
pub(super) const FEED_WAIT: Duration = Duration::from_millis(200);

/// The disk side of a queue.
pub(super) struct Disk {
    pub(super) log: DiskLog,
    /// Records were fed into memory.
    pub(super) fed: Notify,
    queue: &'static str,
    metrics: BufferMetrics,
    /// The dropped, corrupt and fsync counts already added to the counters.
    counted: [AtomicU64; 3],
}

/// The first byte of a record: the item's policy.
fn policy_byte(p: Policy) -> u8 {
    u8::from(p.create_missing) | (u8::from(p.on_duplicate == super::OnDuplicate::Skip) << 1)
}

fn policy_of(b: u8) -> Policy {
    Policy {
        create_missing: b & 1 != 0,
        on_duplicate: if b & 2 != 0 {
            super::OnDuplicate::Skip
        } else {
            super::OnDuplicate::Update
        },
    }
}

impl Disk {
    pub(super) fn new(log: DiskLog, metrics: &QueueMetrics, queue: &'static str) -> Self {
        let disk = Disk {
            log,
            fed: Notify::new(),
            queue,
            metrics: metrics.buffer.clone(),
            counted: [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)],
        };
        disk.update_metrics();
        disk
    }

    /// Records not settled.
    pub(super) fn unsettled(&self) -> usize {
        self.log.stats().records as usize
    }

    /// Appends `item` with its policy; returns once it is on disk.
    pub(super) async fn append<K: Kind>(&self, item: &K::Stored, policy: Policy) -> Result<(), CdfError> {
        let mut bytes = Vec::with_capacity(128);
        bytes.push(policy_byte(policy));
        bytes.extend_from_slice(&K::encode(item));
        // The metrics are refreshed per batch (fed, settled) and on a refusal, not per item.
        self.log.append(&bytes).await.map(|_| ()).map_err(|e| {
            self.update_metrics();
            CdfError::new(CdfErrorKind::Buffer, "disk buffer", e.to_string())
        })
    }

    /// Sets the `extractor_buffer_*` metrics from the log's figures.
    pub(super) fn update_metrics(&self) {
        let stats = self.log.stats();
        let q = [self.queue];
        self.metrics.bytes.with_label_values(&q).set(stats.bytes as i64);
        self.metrics.records.with_label_values(&q).set(stats.records as i64);
        let age = stats.oldest_ms.map_or(0.0, |ms| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis() as i64;
            (now - ms).max(0) as f64 / 1000.0
        });
        self.metrics.oldest_age.with_label_values(&q).set(age);
        for (i, (total, counter)) in [
            (stats.dropped, &self.metrics.dropped),
            (stats.corrupt, &self.metrics.corrupt),
            (stats.fsyncs, &self.metrics.fsyncs),
        ]
        .into_iter()
        .enumerate()
        {
            let before = self.counted[i].swap(total, Ordering::Relaxed);
            if total > before {
                counter.with_label_values(&q).inc_by(total - before);
            }
        }
    }
}

/// Feeds the queue's memory from its log while the queue exists: waits for room (flushing
/// when the memory is full), reads as many records as fit, decodes them and queues them. A
/// record that cannot be decoded (written by another version) is logged, counted and
/// acknowledged: it never blocks the rest.
pub(super) async fn feed<K: Kind>(queue: Weak<Inner<K>>, mut reader: Reader) {
    loop {
        let room = {
            let Some(inner) = queue.upgrade() else { return };
            loop {
                let space = inner.space.notified();
                tokio::pin!(space);
                space.as_mut().enable();
                let room = {
                    let slots = inner.slots.lock().expect("queue lock");
                    inner.capacity.min(K::READ_AHEAD).saturating_sub(slots.len())
                };
                if room > 0 {
                    break room;
                }
                // Full (CDF slow or down): the backlog on disk grows meanwhile.
                inner.disk.as_ref().expect("a disk queue").update_metrics();
                let full = UploadQueue {
                    inner: inner.clone(),
                };
                if full.flush().await.is_err() {
                    tokio::select! {
                        () = &mut space => {}
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        };
        let records = match reader.next(room).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(target: "extractor_runtime::disk_buffer", queue = K::NAME, "cannot read the disk buffer: {e}; trying again in a second");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let Some(inner) = queue.upgrade() else { return };
        let disk = inner.disk.as_ref().expect("a disk queue");
        let mut entries = Vec::with_capacity(records.len());
        for r in records {
            let decoded = r
                .payload
                .split_first()
                .ok_or_else(|| "an empty record".to_owned())
                .and_then(|(policy, item)| {
                    K::decode(item)
                        .map(|item| (item, policy_of(*policy)))
                        .map_err(|e| e.to_string())
                });
            match decoded {
                Ok((item, policy)) => entries.push(Entry {
                    item,
                    tag: None,
                    policy,
                    disk: Some(r.seq),
                }),
                Err(e) => {
                    tracing::error!(target: "extractor_runtime::disk_buffer", queue = K::NAME, seq = r.seq, "a disk buffer record cannot be read as an item ({e}); skipped");
                    disk.log.ack(r.seq);
                }
            }
        }
        {
            let mut slots = inner.slots.lock().expect("queue lock");
            slots.items.extend(entries);
            inner.metrics.size.set(slots.len() as i64);
        }
        disk.update_metrics();
        disk.fed.notify_waiters();
    }
}

/// Opens the disk buffer of queue `name` under `dir` (one folder per queue).
pub(crate) fn open(
    dir: &std::path::Path,
    name: &str,
    options: crate::disk_log::Options,
) -> std::io::Result<(DiskLog, crate::disk_log::Recovered)> {
    DiskLog::open(&dir.join(name), options)
}

impl<K: Kind> UploadQueue<K> {
    /// Writes the disk buffer's ledger (at a stop), if there is one.
    pub(crate) fn sync_buffer(&self) {
        if let Some(disk) = &self.inner.disk {
            disk.log.sync_ledger();
            disk.update_metrics();
        }
    }

    /// Whether items of this queue are kept on disk.
    pub fn is_durable(&self) -> bool {
        self.inner.disk.is_some()
    }
}

