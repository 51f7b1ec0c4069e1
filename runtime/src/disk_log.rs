//! [`DiskLog`]: a durable FIFO of records in segment files, the storage of a disk buffer
//! (`upload-queue.buffer: {type: disk}`).
//!
//! Records are appended to the newest segment file (`<first seq>.seg`, 20 digits, so names sort
//! by age) as `length u32 | crc32 u32 | seq u64 | written-at ms i64 | payload`, all little-endian,
//! the CRC over everything after it. An [`append`](DiskLog::append) returns once its record is
//! written and `fdatasync`ed; appends that arrive while a write is in progress are written and
//! synced together by the next one (group commit), so many producers share each fsync. A
//! segment file is deleted once every record in it is acknowledged
//! ([`ack`](DiskLog::ack)); the lowest unacknowledged sequence number is kept in `ledger`
//! (rewritten by rename, not synced: a stale ledger replays more, it never loses anything).
//!
//! Opening replays what was not acknowledged, in order ([`Reader`]). A torn tail (a crash in
//! the middle of a write) is truncated with a warning and counted, never a refusal to start; a
//! record whose checksum does not match is skipped and counted, and a record whose length is
//! impossible ends its segment (the rest of it is counted as corrupt). The files hold at most
//! `max-size` bytes: past it, or on a full disk, [`WhenFull::Block`] makes the producer wait for
//! acknowledgements and [`WhenFull::DropNewest`] refuses the record (counted).
//!
//! Like Vector's disk buffer v2, the data files are append-only and deleted whole; unlike it,
//! the acknowledgement state is one small file whose loss costs duplicates only, and a damaged
//! file is cut or skipped instead of stopping the process.

use std::collections::{BTreeSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{Notify, oneshot};

/// Bytes before each record's payload: length, checksum, sequence number, time written.
pub const HEADER: usize = 4 + 4 + 8 + 8;
/// The largest payload of one record.
pub const MAX_RECORD: usize = 64 * 1024 * 1024;
/// How often the ledger is rewritten at most while acknowledgements come in.
const LEDGER_EVERY: Duration = Duration::from_millis(100);
/// How long a blocked producer waits before trying a full disk again.
const FULL_DISK_RETRY: Duration = Duration::from_millis(500);
/// The newest file is removed too once every record is settled and it holds this much (or a
/// write found the disk full): otherwise a disk smaller than `segment-size` stays full after
/// CDF took everything, and the settled bytes count against `max-size`.
const RETIRE_SETTLED: u64 = 1024 * 1024;

/// What to do when the buffer holds `max-size` bytes, or the disk is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhenFull {
    /// The producer waits until acknowledgements free room (backpressure to the source).
    Block,
    /// The record is refused and counted.
    DropNewest,
}

/// How a [`DiskLog`] keeps its files.
#[derive(Clone, Debug)]
pub struct Options {
    /// The most bytes all segment files may hold.
    pub max_size: u64,
    /// A new segment file is started when the current one would grow past this.
    pub segment_size: u64,
    /// Past `max_size` or on a full disk.
    pub when_full: WhenFull,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_size: 1024 * 1024 * 1024,
            segment_size: 32 * 1024 * 1024,
            when_full: WhenFull::Block,
        }
    }
}

/// Why a record was not appended.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The buffer is full and `when-full` is `drop-newest`.
    #[error("the disk buffer is full ({0}); the record was dropped (when-full: drop-newest)")]
    Dropped(&'static str),
    /// The payload is larger than [`MAX_RECORD`].
    #[error("a record of {0} bytes is larger than the disk buffer takes ({MAX_RECORD} bytes)")]
    TooLarge(usize),
    /// The file could not be written (other than a full disk).
    #[error("cannot write the disk buffer in {}: {source}", .dir.display())]
    Io {
        /// The buffer's folder.
        dir: PathBuf,
        /// Why.
        #[source]
        source: Arc<std::io::Error>,
    },
}

/// What opening found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Records not acknowledged before, to be read again (an upper bound: skipped sequence
    /// numbers count).
    pub unacknowledged: u64,
    /// Bytes of a torn tail cut off the newest segment.
    pub truncated_bytes: u64,
    /// Segment files found.
    pub segments: usize,
}

/// A record read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Its sequence number: [`ack`](DiskLog::ack) it once it is settled.
    pub seq: u64,
    /// When it was appended, milliseconds since the Unix epoch.
    pub written_ms: i64,
    /// What was appended.
    pub payload: Bytes,
}

/// The buffer's figures, for metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Bytes in segment files (and being written).
    pub bytes: u64,
    /// Records appended and not acknowledged.
    pub records: u64,
    /// When the oldest segment holding unacknowledged records was started, ms since the epoch.
    pub oldest_ms: Option<i64>,
    /// Records refused by `drop-newest`.
    pub dropped: u64,
    /// Records skipped or cut as corrupt (torn tails included).
    pub corrupt: u64,
    /// `fdatasync` calls.
    pub fsyncs: u64,
}

struct Segment {
    first: u64,
    path: PathBuf,
    /// Bytes written and synced: what a reader may read.
    bytes: u64,
    /// When its first record was written.
    first_ms: Option<i64>,
}

/// The segment being appended to.
struct Writer {
    file: File,
    first: u64,
    bytes: u64,
}

struct State {
    segments: VecDeque<Segment>,
    next_seq: u64,
    low: u64,
    acked: BTreeSet<u64>,
    size: u64,
    pending: Vec<u8>,
    pending_first: u64,
    pending_count: u64,
    pending_first_ms: Option<i64>,
    waiters: Vec<oneshot::Sender<Result<(), Arc<std::io::Error>>>>,
    flushing: bool,
    ledger_low: u64,
    ledger_at: Instant,
    /// A write found the disk full since the files were last all removed.
    full_seen: bool,
    stats: Stats,
}

struct Inner {
    dir: PathBuf,
    options: Options,
    state: Mutex<State>,
    writer: Mutex<Option<Writer>>,
    /// Acknowledgements freed room.
    space: Notify,
    /// Records became readable.
    readable: Notify,
}

/// A durable FIFO of records (see the module). Cheap to clone.
#[derive(Clone)]
pub struct DiskLog {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for DiskLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskLog")
            .field("dir", &self.inner.dir)
            .field("stats", &self.stats())
            .finish()
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.seg"))
}

fn encode(out: &mut Vec<u8>, seq: u64, written_ms: i64, payload: &[u8]) {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&seq.to_le_bytes());
    hasher.update(&written_ms.to_le_bytes());
    hasher.update(payload);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&hasher.finalize().to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&written_ms.to_le_bytes());
    out.extend_from_slice(payload);
}

/// One record decoded at the front of `buf`.
enum Decoded {
    /// A good record and its encoded length.
    Record(Record, usize),
    /// A record whose checksum does not match, and its encoded length.
    Corrupt(usize),
    /// Not a whole record: a torn tail, or an impossible length.
    Torn,
}

fn decode(buf: &[u8]) -> Decoded {
    if buf.len() < HEADER {
        return Decoded::Torn;
    }
    let len = u32::from_le_bytes(buf[0..4].try_into().expect("4 bytes")) as usize;
    if len > MAX_RECORD || buf.len() < HEADER + len {
        return Decoded::Torn;
    }
    let crc = u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes"));
    if crc32fast::hash(&buf[8..HEADER + len]) != crc {
        return Decoded::Corrupt(HEADER + len);
    }
    let seq = u64::from_le_bytes(buf[8..16].try_into().expect("8 bytes"));
    let written_ms = i64::from_le_bytes(buf[16..24].try_into().expect("8 bytes"));
    Decoded::Record(
        Record {
            seq,
            written_ms,
            payload: Bytes::copy_from_slice(&buf[HEADER..HEADER + len]),
        },
        HEADER + len,
    )
}

fn read_ledger(dir: &Path) -> Option<u64> {
    let bytes = std::fs::read(dir.join("ledger")).ok()?;
    if bytes.len() != 12 {
        return None;
    }
    let low = u64::from_le_bytes(bytes[0..8].try_into().ok()?);
    let crc = u32::from_le_bytes(bytes[8..12].try_into().ok()?);
    (crc32fast::hash(&bytes[0..8]) == crc).then_some(low)
}

fn write_ledger(dir: &Path, low: u64) -> std::io::Result<()> {
    let mut bytes = low.to_le_bytes().to_vec();
    bytes.extend_from_slice(&crc32fast::hash(&low.to_le_bytes()).to_le_bytes());
    let tmp = dir.join("ledger.tmp");
    std::fs::write(&tmp, bytes).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })?;
    std::fs::rename(tmp, dir.join("ledger"))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

impl DiskLog {
    /// Opens (or makes) the buffer in `dir`: cuts a torn tail off the newest segment and
    /// positions reading at the first record not acknowledged.
    pub fn open(dir: &Path, options: Options) -> std::io::Result<(DiskLog, Recovered)> {
        std::fs::create_dir_all(dir)?;
        let mut firsts: Vec<u64> = std::fs::read_dir(dir)?
            .filter_map(|e| {
                let name = e.ok()?.file_name();
                name.to_str()?.strip_suffix(".seg")?.parse().ok()
            })
            .collect();
        firsts.sort_unstable();
        let mut segments = VecDeque::new();
        let mut recovered = Recovered {
            segments: firsts.len(),
            ..Recovered::default()
        };
        let mut stats = Stats::default();
        let mut next_seq = 0;
        for (i, first) in firsts.iter().copied().enumerate() {
            let path = segment_path(dir, first);
            let mut bytes = std::fs::read(&path)?;
            let mut first_ms = None;
            if i + 1 == firsts.len() {
                // The newest: find where its whole records end, and the next sequence number.
                let mut at = 0;
                next_seq = first;
                loop {
                    match decode(&bytes[at..]) {
                        Decoded::Record(r, n) => {
                            first_ms.get_or_insert(r.written_ms);
                            next_seq = r.seq + 1;
                            at += n;
                        }
                        // Counted when the reader skips it.
                        Decoded::Corrupt(n) => at += n,
                        Decoded::Torn => break,
                    }
                }
                if at < bytes.len() {
                    let cut = (bytes.len() - at) as u64;
                    tracing::warn!(target: "extractor_runtime::disk_buffer", file = %path.display(), bytes = cut, "the disk buffer's newest file ends in a torn record (a crash while writing); cut off");
                    recovered.truncated_bytes += cut;
                    stats.corrupt += 1;
                    let file = OpenOptions::new().write(true).open(&path)?;
                    file.set_len(at as u64)?;
                    file.sync_all()?;
                    bytes.truncate(at);
                }
            } else if let Decoded::Record(r, _) = decode(&bytes) {
                first_ms = Some(r.written_ms);
            }
            segments.push_back(Segment {
                first,
                path,
                bytes: bytes.len() as u64,
                first_ms,
            });
        }
        let ledger = read_ledger(dir);
        let low = match firsts.first() {
            // A ledger older than the oldest file (files deleted after it was written) or newer
            // than the last record (damaged) is brought within them.
            Some(&oldest) => ledger.unwrap_or(oldest).clamp(oldest, next_seq.max(oldest)),
            None => {
                next_seq = ledger.unwrap_or(0);
                next_seq
            }
        };
        recovered.unacknowledged = next_seq.saturating_sub(low);
        let size = segments.iter().map(|s| s.bytes).sum();
        let writer = match segments.back() {
            Some(s) => Some(Writer {
                file: OpenOptions::new().append(true).open(&s.path)?,
                first: s.first,
                bytes: s.bytes,
            }),
            None => None,
        };
        let log = DiskLog {
            inner: Arc::new(Inner {
                dir: dir.to_owned(),
                options,
                state: Mutex::new(State {
                    segments,
                    next_seq,
                    low,
                    acked: BTreeSet::new(),
                    size,
                    pending: Vec::new(),
                    pending_first: next_seq,
                    pending_count: 0,
                    pending_first_ms: None,
                    waiters: Vec::new(),
                    flushing: false,
                    ledger_low: low,
                    ledger_at: Instant::now(),
                    full_seen: false,
                    stats,
                }),
                writer: Mutex::new(writer),
                space: Notify::new(),
                readable: Notify::new(),
            }),
        };
        Ok((log, recovered))
    }

    /// A reader from the first record not acknowledged (one reader per log).
    pub fn reader(&self) -> Reader {
        let st = self.inner.state.lock().expect("disk log lock");
        Reader {
            log: self.inner.clone(),
            segment: st.segments.front().map_or(st.next_seq, |s| s.first),
            offset: 0,
            file: None,
            expect: st.low,
        }
    }

    /// The buffer's figures now.
    pub fn stats(&self) -> Stats {
        let st = self.inner.state.lock().expect("disk log lock");
        // The segment holding the first unacknowledged record.
        let oldest_ms = st
            .segments
            .iter()
            .rfind(|s| s.first <= st.low)
            .or(st.segments.front())
            .filter(|_| st.next_seq > st.low)
            .and_then(|s| s.first_ms);
        Stats {
            bytes: st.size,
            records: st.next_seq.saturating_sub(st.low),
            oldest_ms,
            ..st.stats.clone()
        }
    }

    /// Appends `payload` and returns its sequence number once it is on disk (synced). Waits
    /// while the buffer is full with [`WhenFull::Block`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: a cancelled append may still be written (and read back later).
    pub async fn append(&self, payload: &[u8]) -> Result<u64, AppendError> {
        if payload.len() > MAX_RECORD {
            return Err(AppendError::TooLarge(payload.len()));
        }
        let need = (HEADER + payload.len()) as u64;
        loop {
            let freed = self.inner.space.notified();
            tokio::pin!(freed);
            // Registered before the size is read: room freed after that wakes it.
            freed.as_mut().enable();
            let queued = {
                let mut st = self.inner.state.lock().expect("disk log lock");
                if st.size + need > self.inner.options.max_size && st.size > 0 {
                    if self.inner.options.when_full == WhenFull::DropNewest {
                        st.stats.dropped += 1;
                        return Err(AppendError::Dropped("max-size reached"));
                    }
                    None
                } else {
                    Some(queue(&mut st, payload, need))
                }
            };
            let Some((seq, rx, lead)) = queued else {
                freed.await;
                continue;
            };
            if lead {
                // A task of its own: a cancelled producer never strands the others' writes.
                let log = self.clone();
                tokio::spawn(async move { log.flush().await });
            }
            match rx.await {
                Ok(Ok(())) => return Ok(seq),
                Ok(Err(e)) if is_full_disk(&e) => match self.inner.options.when_full {
                    WhenFull::DropNewest => {
                        self.inner.state.lock().expect("disk log lock").stats.dropped += 1;
                        return Err(AppendError::Dropped("the disk is full"));
                    }
                    WhenFull::Block => tokio::time::sleep(FULL_DISK_RETRY).await,
                },
                Ok(Err(source)) => {
                    return Err(AppendError::Io {
                        dir: self.inner.dir.clone(),
                        source,
                    });
                }
                Err(_) => {
                    return Err(AppendError::Io {
                        dir: self.inner.dir.clone(),
                        source: Arc::new(std::io::Error::other("the writer went away")),
                    });
                }
            }
        }
    }

    /// Writes and syncs what is pending, batch after batch, until nothing is.
    async fn flush(&self) {
        loop {
            let (buf, first, count, first_ms, waiters) = {
                let mut st = self.inner.state.lock().expect("disk log lock");
                if st.pending.is_empty() {
                    st.flushing = false;
                    return;
                }
                let count = st.pending_count;
                st.pending_count = 0;
                (
                    std::mem::take(&mut st.pending),
                    st.pending_first,
                    count,
                    st.pending_first_ms.take(),
                    std::mem::take(&mut st.waiters),
                )
            };
            let inner = self.inner.clone();
            let len = buf.len() as u64;
            let written = tokio::task::spawn_blocking(move || inner.write(&buf, first, first_ms))
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
            let result = {
                let mut st = self.inner.state.lock().expect("disk log lock");
                match written {
                    Ok(()) => {
                        st.stats.fsyncs += 1;
                        Ok(())
                    }
                    Err(e) => {
                        // Not on disk: their sequence numbers are passed over.
                        st.size -= len;
                        for seq in first..first + count {
                            st.acked.insert(seq);
                        }
                        advance(&mut st);
                        if is_full_disk(&e) {
                            st.full_seen = true;
                            // Settled files may be what fills it.
                            if self.inner.retire_settled(&mut st) {
                                self.inner.space.notify_waiters();
                            }
                        }
                        Err(Arc::new(e))
                    }
                }
            };
            self.inner.readable.notify_waiters();
            for w in waiters {
                let _ = w.send(result.clone());
            }
        }
    }

    /// Marks record `seq` settled; deletes segment files whose records all are.
    pub fn ack(&self, seq: u64) {
        self.inner.ack(seq);
    }

    /// Writes the ledger now (at a stop): the next open replays from the first record not
    /// acknowledged.
    pub fn sync_ledger(&self) {
        let mut st = self.inner.state.lock().expect("disk log lock");
        self.inner.write_ledger(&mut st);
    }

}

/// The receiver of a queued record's write result.
type Written = oneshot::Receiver<Result<(), Arc<std::io::Error>>>;

/// Adds `payload` to the pending batch: its sequence number, the receiver of its write's
/// result, and whether the caller is to start the flush.
fn queue(st: &mut State, payload: &[u8], need: u64) -> (u64, Written, bool) {
    let seq = st.next_seq;
    st.next_seq += 1;
    if st.pending_count == 0 {
        st.pending_first = seq;
    }
    let ms = now_ms();
    st.pending_first_ms.get_or_insert(ms);
    encode(&mut st.pending, seq, ms, payload);
    st.pending_count += 1;
    st.size += need;
    let (tx, rx) = oneshot::channel();
    st.waiters.push(tx);
    let lead = !st.flushing;
    st.flushing = true;
    (seq, rx, lead)
}

/// Moves `low` past every acknowledged sequence number after it.
fn advance(st: &mut State) {
    while st.acked.remove(&st.low) {
        st.low += 1;
    }
}

fn is_full_disk(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull || e.raw_os_error() == Some(28)
}

impl Inner {
    /// [`DiskLog::ack`].
    fn ack(&self, seq: u64) {
        let mut deleted = false;
        {
            let mut st = self.state.lock().expect("disk log lock");
            if seq < st.low || seq >= st.next_seq {
                return;
            }
            st.acked.insert(seq);
            advance(&mut st);
            while st.segments.len() > 1 && st.segments[1].first <= st.low {
                let s = st.segments.pop_front().expect("two segments");
                if let Err(e) = std::fs::remove_file(&s.path) {
                    tracing::warn!(target: "extractor_runtime::disk_buffer", file = %s.path.display(), "cannot remove a settled disk buffer file: {e}");
                }
                st.size -= s.bytes;
                deleted = true;
            }
            deleted |= self.retire_settled(&mut st);
            if st.low != st.ledger_low && st.ledger_at.elapsed() >= LEDGER_EVERY {
                self.write_ledger(&mut st);
            }
        }
        if deleted {
            self.space.notify_waiters();
        }
    }

    /// Removes every file, the newest too, when every record is settled and the newest holds
    /// [`RETIRE_SETTLED`] bytes or the disk was found full; the next write starts a new file
    /// (the reader moves on to it). Whether files were removed.
    fn retire_settled(&self, st: &mut State) -> bool {
        let Some(newest) = st.segments.back() else {
            return false;
        };
        if st.low != st.next_seq
            || st.pending_count > 0
            || !(newest.bytes >= RETIRE_SETTLED || st.full_seen)
        {
            return false;
        }
        // `write` holds the writer and then takes the state: never wait for it here. A write
        // under way would hold records not settled yet, so this seldom fails.
        let Ok(mut writer) = self.writer.try_lock() else {
            return false;
        };
        *writer = None;
        for s in std::mem::take(&mut st.segments) {
            if let Err(e) = std::fs::remove_file(&s.path) {
                tracing::warn!(target: "extractor_runtime::disk_buffer", file = %s.path.display(), "cannot remove a settled disk buffer file: {e}");
            }
            st.size -= s.bytes;
        }
        st.full_seen = false;
        // The reader lets go of the file it has open (its space is freed only then).
        self.readable.notify_waiters();
        // A restart with no files goes on numbering from here.
        self.write_ledger(st);
        true
    }

    fn write_ledger(&self, st: &mut State) {
        match write_ledger(&self.dir, st.low) {
            Ok(()) => {
                st.ledger_low = st.low;
                st.ledger_at = Instant::now();
            }
            Err(e) => {
                tracing::warn!(target: "extractor_runtime::disk_buffer", dir = %self.dir.display(), "cannot write the disk buffer's ledger (more is replayed after a restart): {e}");
            }
        }
    }

    /// Appends `buf` (records from `first` on) to the newest segment, or a new one when it
    /// would grow past `segment-size`, and syncs it. On failure the file is cut back.
    fn write(&self, buf: &[u8], first: u64, first_ms: Option<i64>) -> std::io::Result<()> {
        let mut writer = self.writer.lock().expect("disk log writer lock");
        let rotate = match &*writer {
            None => true,
            Some(w) => w.bytes > 0 && w.bytes + buf.len() as u64 > self.options.segment_size,
        };
        if rotate {
            let path = segment_path(&self.dir, first);
            let file = OpenOptions::new().create(true).append(true).open(&path)?;
            sync_dir(&self.dir)?;
            *writer = Some(Writer {
                file,
                first,
                bytes: 0,
            });
            let mut st = self.state.lock().expect("disk log lock");
            st.segments.push_back(Segment {
                first,
                path,
                bytes: 0,
                first_ms,
            });
        }
        let w = writer.as_mut().expect("a writer");
        let result = w.file.write_all(buf).and_then(|()| w.file.sync_data());
        if let Err(e) = result {
            let _ = w.file.set_len(w.bytes);
            return Err(e);
        }
        w.bytes += buf.len() as u64;
        let mut st = self.state.lock().expect("disk log lock");
        if let Some(s) = st.segments.iter_mut().rfind(|s| s.first == w.first) {
            s.bytes = w.bytes;
            s.first_ms = s.first_ms.or(first_ms);
        }
        Ok(())
    }
}

/// Reads a [`DiskLog`]'s records in order, from the first one not acknowledged, waiting for
/// new ones at the end.
pub struct Reader {
    log: Arc<Inner>,
    /// The first sequence number of the segment being read.
    segment: u64,
    offset: u64,
    file: Option<File>,
    /// The sequence number the next record should have: the ones passed over (corrupt, or cut
    /// with a damaged file) are acknowledged, so that they never hold settling up.
    expect: u64,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("segment", &self.segment)
            .field("offset", &self.offset)
            .finish()
    }
}

impl Reader {
    /// Up to `max` records (at least one: waits for it), in order; acknowledged ones (a
    /// replay) and corrupt ones are passed over.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe while it waits for records.
    pub async fn next(&mut self, max: usize) -> std::io::Result<Vec<Record>> {
        loop {
            // Registered before the files are looked at: a write after that wakes it.
            let log = self.log.clone();
            let readable = log.readable.notified();
            tokio::pin!(readable);
            readable.as_mut().enable();
            let found = {
                let st = self.log.state.lock().expect("disk log lock");
                st.segments
                    .iter()
                    .position(|s| s.first >= self.segment)
                    .map(|i| {
                        (
                            st.segments[i].first,
                            st.segments[i].bytes,
                            st.segments.get(i + 1).map(|s| s.first),
                            st.low,
                        )
                    })
            };
            let Some((first, limit, next, low)) = found else {
                // Every file was removed (all settled): an open one would keep its space.
                self.file = None;
                readable.await;
                continue;
            };
            if first != self.segment {
                // Our segment is gone (settled while we were past it): go on from here.
                self.segment = first;
                self.offset = 0;
                self.file = None;
                continue;
            }
            if self.offset < limit {
                let records = self.read(limit, max, low)?;
                if !records.is_empty() {
                    return Ok(records);
                }
                continue;
            }
            match next {
                Some(first) => {
                    self.segment = first;
                    self.offset = 0;
                    self.file = None;
                }
                None => readable.await,
            }
        }
    }

    /// Records of the current segment between `offset` and `limit`.
    fn read(&mut self, limit: u64, max: usize, low: u64) -> std::io::Result<Vec<Record>> {
        if self.file.is_none() {
            self.file = Some(File::open(segment_path(&self.log.dir, self.segment))?);
        }
        let file = self.file.as_mut().expect("opened");
        // About what `max` records take (1 KiB each, 64 KiB to 8 MiB; more when one record is
        // larger): what is read past them is read again by the next call, so a read sized for
        // the whole window while the queue has room for a few records reads the file many times.
        let window = (max.max(1) as u64)
            .saturating_mul(1024)
            .clamp(64 * 1024, 8 * 1024 * 1024);
        let want = (limit - self.offset).min(window);
        file.seek(SeekFrom::Start(self.offset))?;
        let mut buf = vec![0; want as usize];
        file.read_exact(&mut buf)?;
        let mut at = 0;
        let mut out = Vec::new();
        let mut corrupt = 0;
        while out.len() < max.max(1) && at < buf.len() {
            match decode(&buf[at..]) {
                Decoded::Record(r, n) => {
                    at += n;
                    for lost in self.expect.max(low)..r.seq {
                        self.log.ack(lost);
                    }
                    self.expect = self.expect.max(r.seq + 1);
                    if r.seq >= low {
                        out.push(r);
                    }
                }
                Decoded::Corrupt(n) => {
                    at += n;
                    corrupt += 1;
                }
                // The read ended inside a record: the next read starts with it.
                Decoded::Torn if at > 0 => break,
                Decoded::Torn => {
                    let left = limit - self.offset;
                    let len = buf
                        .get(0..4)
                        .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as u64);
                    match len {
                        // One record larger than a read: read it whole.
                        Some(len)
                            if len as usize <= MAX_RECORD
                                && HEADER as u64 + len <= left
                                && (buf.len() as u64) < left =>
                        {
                            let mut whole = vec![0; HEADER + len as usize];
                            file.seek(SeekFrom::Start(self.offset))?;
                            file.read_exact(&mut whole)?;
                            buf = whole;
                        }
                        // A damaged length inside written data: the rest of the file is lost.
                        _ => {
                            tracing::warn!(target: "extractor_runtime::disk_buffer", segment = self.segment, "a damaged record length in the disk buffer; the rest of its file is skipped");
                            at = left as usize;
                            corrupt += 1;
                            break;
                        }
                    }
                }
            }
        }
        self.offset += at as u64;
        if corrupt > 0 {
            self.log.state.lock().expect("disk log lock").stats.corrupt += corrupt;
            tracing::warn!(target: "extractor_runtime::disk_buffer", segment = self.segment, corrupt, "corrupt records in the disk buffer were skipped");
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(max_size: u64, segment_size: u64, when_full: WhenFull) -> Options {
        Options {
            max_size,
            segment_size,
            when_full,
        }
    }

    async fn append_all(log: &DiskLog, n: usize) -> Vec<u64> {
        let mut seqs = Vec::new();
        for i in 0..n {
            seqs.push(log.append(format!("record {i}").as_bytes()).await.unwrap());
        }
        seqs
    }

    async fn read_n(reader: &mut Reader, n: usize) -> Vec<Record> {
        let mut out = Vec::new();
        while out.len() < n {
            let got = tokio::time::timeout(Duration::from_secs(5), reader.next(n - out.len()))
                .await
                .expect("records within 5 s")
                .unwrap();
            out.extend(got);
        }
        out
    }

    fn payloads(records: &[Record]) -> Vec<String> {
        records
            .iter()
            .map(|r| String::from_utf8(r.payload.to_vec()).unwrap())
            .collect()
    }

    fn files(dir: &Path) -> Vec<PathBuf> {
        let mut f: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "seg"))
            .collect();
        f.sort();
        f
    }

    #[tokio::test]
    async fn records_come_back_in_order_and_settled_files_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let (log, recovered) =
            DiskLog::open(dir.path(), options(1 << 30, 200, WhenFull::Block)).unwrap();
        assert_eq!(recovered, Recovered::default());
        let seqs = append_all(&log, 20).await;
        assert_eq!(seqs, (0..20).collect::<Vec<_>>());
        assert!(files(dir.path()).len() > 3, "small segments rotate");
        let mut reader = log.reader();
        let records = read_n(&mut reader, 20).await;
        assert_eq!(payloads(&records)[..2], ["record 0", "record 1"]);
        assert_eq!(records.iter().map(|r| r.seq).collect::<Vec<_>>(), seqs);
        assert_eq!(log.stats().records, 20);
        // Out of order: nothing settles until 0 is acknowledged.
        for seq in (0..20).rev() {
            log.ack(seq);
        }
        assert_eq!(files(dir.path()).len(), 1, "only the file being written stays");
        let stats = log.stats();
        assert_eq!((stats.records, stats.oldest_ms), (0, None));
    }

    #[tokio::test]
    async fn a_restart_replays_what_was_not_acknowledged_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (log, _) = DiskLog::open(dir.path(), options(1 << 30, 150, WhenFull::Block)).unwrap();
            append_all(&log, 10).await;
            for seq in 0..4 {
                log.ack(seq);
            }
            log.sync_ledger();
            // Dropped without more: a crash after the ledger was written.
        }
        let (log, recovered) =
            DiskLog::open(dir.path(), options(1 << 30, 150, WhenFull::Block)).unwrap();
        assert_eq!(recovered.unacknowledged, 6);
        let mut reader = log.reader();
        let records = read_n(&mut reader, 6).await;
        assert_eq!(records.iter().map(|r| r.seq).collect::<Vec<_>>(), (4..10).collect::<Vec<_>>());
        // New records go after them, numbered on.
        assert_eq!(log.append(b"after").await.unwrap(), 10);
        let more = read_n(&mut reader, 1).await;
        assert_eq!(payloads(&more), ["after"]);
    }

    #[tokio::test]
    async fn without_a_ledger_everything_in_the_files_is_replayed() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (log, _) = DiskLog::open(dir.path(), Options::default()).unwrap();
            append_all(&log, 5).await;
            log.ack(0);
        }
        let _ = std::fs::remove_file(dir.path().join("ledger"));
        let (log, recovered) = DiskLog::open(dir.path(), Options::default()).unwrap();
        assert_eq!(recovered.unacknowledged, 5, "at least once: the acknowledged one too");
        assert_eq!(read_n(&mut log.reader(), 5).await.len(), 5);
    }

    #[tokio::test]
    async fn a_torn_tail_is_cut_and_counted_never_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (log, _) = DiskLog::open(dir.path(), Options::default()).unwrap();
            append_all(&log, 3).await;
        }
        let file = files(dir.path()).pop().unwrap();
        let len = std::fs::metadata(&file).unwrap().len();
        OpenOptions::new().write(true).open(&file).unwrap().set_len(len - 3).unwrap();
        let (log, recovered) = DiskLog::open(dir.path(), Options::default()).unwrap();
        assert!(recovered.truncated_bytes > 0, "{recovered:?}");
        assert_eq!(recovered.unacknowledged, 2);
        assert_eq!(log.stats().corrupt, 1);
        assert_eq!(log.append(b"next").await.unwrap(), 2, "the torn record's number is reused");
        let records = read_n(&mut log.reader(), 3).await;
        assert_eq!(payloads(&records), ["record 0", "record 1", "next"]);
    }

    #[tokio::test]
    async fn a_flipped_bit_skips_that_record_only() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (log, _) = DiskLog::open(dir.path(), Options::default()).unwrap();
            append_all(&log, 3).await;
        }
        let file = files(dir.path()).pop().unwrap();
        let mut bytes = std::fs::read(&file).unwrap();
        let second = HEADER + "record 0".len() + HEADER + 2;
        bytes[second] ^= 0x10;
        std::fs::write(&file, bytes).unwrap();
        let (log, _) = DiskLog::open(dir.path(), Options::default()).unwrap();
        let mut reader = log.reader();
        let records = read_n(&mut reader, 2).await;
        assert_eq!(payloads(&records), ["record 0", "record 2"]);
        assert_eq!(log.stats().corrupt, 1);
        // Its number is settled by the reader: it never holds the others up.
        log.ack(0);
        log.ack(2);
        assert_eq!(log.stats().records, 0);
    }

    #[tokio::test]
    async fn a_damaged_length_ends_its_file_and_the_next_file_is_read() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (log, _) = DiskLog::open(dir.path(), options(1 << 30, 100, WhenFull::Block)).unwrap();
            append_all(&log, 8).await;
        }
        let first = files(dir.path()).remove(0);
        let mut bytes = std::fs::read(&first).unwrap();
        bytes[3] = 0x7f; // the first record's length: 2 GiB
        std::fs::write(&first, bytes).unwrap();
        let (log, _) = DiskLog::open(dir.path(), options(1 << 30, 100, WhenFull::Block)).unwrap();
        let mut reader = log.reader();
        let records = tokio::time::timeout(Duration::from_secs(5), reader.next(100))
            .await
            .unwrap()
            .unwrap();
        assert!(!records.is_empty() && records[0].seq > 0, "{records:?}");
        assert_eq!(log.stats().corrupt, 1);
        // The records lost with the damaged file are settled by the reader; the rest by us.
        let mut last = records.last().unwrap().seq;
        for r in &records {
            log.ack(r.seq);
        }
        while last < 7 {
            for r in read_n(&mut reader, 1).await {
                log.ack(r.seq);
                last = r.seq;
            }
        }
        assert_eq!(log.stats().records, 0);
        assert_eq!(files(dir.path()).len(), 1, "the damaged file is deleted once settled");
    }

    #[tokio::test]
    async fn the_newest_file_goes_too_once_everything_in_it_is_settled() {
        let dir = tempfile::tempdir().unwrap();
        // One file for everything (a segment larger than the disk, say).
        let (log, _) = DiskLog::open(dir.path(), options(1 << 30, 1 << 30, WhenFull::Block)).unwrap();
        let mut reader = log.reader();
        let big = vec![b'x'; 64 * 1024];
        for _ in 0..20 {
            log.append(&big).await.unwrap();
        }
        let records = read_n(&mut reader, 20).await;
        for r in &records[..19] {
            log.ack(r.seq);
        }
        assert_eq!(files(dir.path()).len(), 1, "a record is not settled yet");
        log.ack(records[19].seq);
        assert!(files(dir.path()).is_empty(), "{:?}", files(dir.path()));
        assert_eq!(log.stats().bytes, 0);
        // Writing and reading go on in a new file, numbered on.
        let seq = log.append(b"after").await.unwrap();
        assert_eq!(seq, 20);
        let next = read_n(&mut reader, 1).await;
        assert_eq!(payloads(&next), ["after"]);
        drop((log, reader));
        let (log, recovered) = DiskLog::open(dir.path(), Options::default()).unwrap();
        assert_eq!(recovered.unacknowledged, 1);
        assert_eq!(payloads(&read_n(&mut log.reader(), 1).await), ["after"]);
        // Under 1 MiB settled, the file stays (no new file for every small batch).
        log.ack(20);
        assert_eq!(files(dir.path()).len(), 1);
    }

    #[tokio::test]
    async fn past_max_size_drop_newest_refuses_and_block_waits_for_room() {
        let dir = tempfile::tempdir().unwrap();
        let record = (HEADER + "record 0".len()) as u64;
        let (log, _) =
            DiskLog::open(dir.path(), options(record * 3, record, WhenFull::DropNewest)).unwrap();
        append_all(&log, 3).await;
        assert!(matches!(
            log.append(b"one too many").await,
            Err(AppendError::Dropped(_))
        ));
        assert_eq!(log.stats().dropped, 1);

        let dir = tempfile::tempdir().unwrap();
        let (log, _) =
            DiskLog::open(dir.path(), options(record * 3, record, WhenFull::Block)).unwrap();
        append_all(&log, 3).await;
        let blocked = tokio::spawn({
            let log = log.clone();
            async move { log.append(b"record 3").await }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!blocked.is_finished(), "waits while full");
        log.ack(0);
        log.ack(1);
        let seq = tokio::time::timeout(Duration::from_secs(5), blocked)
            .await
            .expect("room was freed")
            .unwrap()
            .unwrap();
        assert_eq!(seq, 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_share_fsyncs() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = DiskLog::open(dir.path(), Options::default()).unwrap();
        let tasks: Vec<_> = (0..500)
            .map(|i| {
                let log = log.clone();
                tokio::spawn(async move { log.append(format!("r{i}").as_bytes()).await.unwrap() })
            })
            .collect();
        let mut seqs = Vec::new();
        for t in tasks {
            seqs.push(t.await.unwrap());
        }
        seqs.sort_unstable();
        assert_eq!(seqs, (0..500).collect::<Vec<_>>());
        let fsyncs = log.stats().fsyncs;
        assert!(fsyncs < 500, "{fsyncs} fsyncs for 500 appends");
        assert_eq!(read_n(&mut log.reader(), 500).await.len(), 500);
    }
}
