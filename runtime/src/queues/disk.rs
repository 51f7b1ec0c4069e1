//! A queue's disk buffer (`upload-queue.buffer: {type: disk}`): items are appended to a
//! [`DiskLog`] and the producer is told they are accepted only once they are synced to disk;
//! a feeding task reads them back into the queue's memory as it has room (what a crash left
//! unsettled first, in order), and each item's record is acknowledged once the item settles
//! (accepted by CDF, handled by its policy, or written to the dead-letter file). So a backlog
//! while CDF is down lives on disk, up to `max-size`, and memory stays at the queue's capacity.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
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
/// In a record's first byte: a task name follows (one length byte, then the name).
const WITH_TASK: u8 = 0x80;

/// A record's payload: its policy, the task that queued it, and the encoded item.
fn split_record(payload: &[u8]) -> Result<(Policy, Option<&str>, &[u8]), String> {
    let (&first, rest) = payload.split_first().ok_or("an empty record")?;
    if first & WITH_TASK == 0 {
        return Ok((policy_of(first), None, rest));
    }
    let (&len, rest) = rest.split_first().ok_or("a record cut after its policy")?;
    let (name, item) = rest
        .split_at_checked(len as usize)
        .ok_or("a record cut in its task name")?;
    let name = std::str::from_utf8(name).map_err(|_| "a task name that is not UTF-8")?;
    Ok((policy_of(first), Some(name), item))
}

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
    /// `task` (the task that queued it, up to 255 bytes of its name) is kept with it, for the
    /// refusal log and the dead-letter file.
    pub(super) async fn append<K: Kind>(
        &self,
        item: &K::Stored,
        policy: Policy,
        task: Option<&str>,
    ) -> Result<(), CdfError> {
        let mut bytes = Vec::with_capacity(128);
        match task {
            Some(task) => {
                let mut end = task.len().min(255);
                while !task.is_char_boundary(end) {
                    end -= 1;
                }
                let name = &task[..end];
                bytes.push(policy_byte(policy) | WITH_TASK);
                bytes.push(name.len() as u8);
                bytes.extend_from_slice(name.as_bytes());
            }
            None => bytes.push(policy_byte(policy)),
        }
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

/// Task names read from records, shared (one allocation per task, not per record).
#[derive(Default)]
struct TaskNames(std::collections::HashMap<Box<str>, Arc<str>>);

impl TaskNames {
    fn intern(&mut self, name: &str) -> Arc<str> {
        if let Some(a) = self.0.get(name) {
            return a.clone();
        }
        // Bounded whatever the files hold.
        if self.0.len() >= 4096 {
            self.0.clear();
        }
        let a: Arc<str> = Arc::from(name);
        self.0.insert(name.into(), a.clone());
        a
    }
}

/// Feeds the queue's memory from its log while the queue exists: waits for room (flushing
/// when the memory is full), reads as many records as fit, decodes them and queues them. A
/// record that cannot be decoded (written by another version) is logged, counted and
/// acknowledged: it never blocks the rest.
pub(super) async fn feed<K: Kind>(queue: Weak<Inner<K>>, mut reader: Reader) {
    let mut tasks = TaskNames::default();
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
            let decoded = split_record(&r.payload).and_then(|(policy, task, item)| {
                K::decode(item)
                    .map(|item| (item, policy, task))
                    .map_err(|e| e.to_string())
            });
            match decoded {
                Ok((item, policy, task)) => entries.push(Entry {
                    seq: 0,
                    item,
                    tag: None,
                    policy,
                    disk: Some(r.seq),
                    task: task.map(|t| tasks.intern(t)),
                }),
                Err(e) => {
                    tracing::error!(target: "extractor_runtime::disk_buffer", queue = K::NAME, seq = r.seq, "a disk buffer record cannot be read as an item ({e}); skipped");
                    disk.log.ack(r.seq);
                }
            }
        }
        {
            let mut slots = inner.slots.lock().expect("queue lock");
            for entry in entries {
                slots.push(entry);
            }
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


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_keeps_its_policy_and_task() {
        let policy = Policy {
            create_missing: true,
            on_duplicate: super::super::OnDuplicate::Skip,
        };
        let mut with = vec![policy_byte(policy) | WITH_TASK, 8];
        with.extend_from_slice(b"readings{}");
        let (p, task, item) = split_record(&with).unwrap();
        assert_eq!((p, task, item), (policy, Some("readings"), &b"{}"[..]));
        // Records written without a task read as before.
        let without = [policy_byte(policy), b'{', b'}'];
        let (p, task, item) = split_record(&without).unwrap();
        assert_eq!((p, task, item), (policy, None, &b"{}"[..]));
        // Cut or damaged ones are errors, never a panic.
        assert!(split_record(&[]).is_err());
        assert!(split_record(&[WITH_TASK]).is_err());
        assert!(split_record(&[WITH_TASK, 9, b'a']).is_err());
        assert!(split_record(&[WITH_TASK, 1, 0xff]).is_err());
    }
}
