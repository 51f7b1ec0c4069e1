//! The dead-letter file (`upload-queue.dead-letter`): every item CDF refused for good, one JSON
//! object a line, so nothing refused is lost and it can be replayed once fixed.
//!
//! A write is whole or not at all: a write that fails part way (a full disk) is truncated back,
//! so the file never holds a torn line. The queues hold the refused items whose write failed
//! aside and write them at a later flush; they never block the other items.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// An append-only NDJSON file of refused items.
pub struct DeadLetter {
    path: PathBuf,
    file: Mutex<std::fs::File>,
    /// The error of the write failures in progress (the first of a burst is logged, the others
    /// counted); cleared by the next write that succeeds.
    failing: Mutex<Option<String>>,
}

impl std::fmt::Debug for DeadLetter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetter")
            .field("path", &self.path)
            .finish()
    }
}

/// One refused item, as a line of the file.
#[derive(Debug, serde::Serialize)]
pub(crate) struct Refused<'a> {
    pub(crate) time: &'a str,
    pub(crate) task: &'a str,
    pub(crate) queue: &'a str,
    pub(crate) endpoint: &'a str,
    pub(crate) status: Option<u16>,
    pub(crate) message: &'a str,
    pub(crate) request_id: Option<&'a str>,
    pub(crate) item: serde_json::Value,
}

impl DeadLetter {
    /// Opens `path` for appending (creating it and its folder if needed).
    pub fn open(path: &Path) -> std::io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(DeadLetter {
            path: path.to_owned(),
            file: Mutex::new(file),
            failing: Mutex::new(None),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `item` as a line of the file.
    pub(crate) fn encode(item: &Refused<'_>) -> Vec<u8> {
        let mut line = serde_json::to_vec(item).expect("a refused item serializes");
        line.push(b'\n');
        line
    }

    /// Appends `lines` and syncs the file, so a refused item is on disk before the queue
    /// forgets it. All or nothing: after a failure the file is truncated back to where it was.
    /// Blocking: call it from a blocking thread.
    pub(crate) fn append(&self, lines: &[u8]) -> std::io::Result<()> {
        let mut file = self.file.lock().expect("dead-letter lock");
        // Where the file ends (a regular file; a device such as /dev/full has no end).
        let before = file.metadata()?;
        let before = before.is_file().then_some(before.len());
        let written = file.write_all(lines).and_then(|()| file.sync_data());
        if let Err(e) = written {
            // A torn line would make the file unreadable as NDJSON: take it back.
            let Some(before) = before else {
                return Err(e);
            };
            if let Err(t) = file.set_len(before).and_then(|()| file.sync_data()) {
                tracing::error!(target: "extractor_runtime::queues", file = %crate::text::Shown(&self.path), "cannot truncate the dead-letter file back after a failed write ({e}): {t}; its last line may be torn");
            }
            return Err(e);
        }
        Ok(())
    }

    /// Records a failed write; `true` when it starts a burst of failures (log it then).
    pub(crate) fn failed(&self, e: &std::io::Error) -> bool {
        self.failing
            .lock()
            .expect("dead-letter lock")
            .replace(e.to_string())
            .is_none()
    }

    /// Records a write that succeeded; `true` when it ends a burst of failures.
    pub(crate) fn succeeded(&self) -> bool {
        self.failing.lock().expect("dead-letter lock").take().is_some()
    }

    /// The error of the write failures in progress, if writes fail.
    pub(crate) fn failure(&self) -> Option<String> {
        self.failing.lock().expect("dead-letter lock").clone()
    }
}
