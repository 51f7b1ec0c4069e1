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
    /// Rotate before the file would grow past this (`None`: never).
    max_size: Option<u64>,
    /// Rotated files kept (`<path>.1` the newest).
    retention: usize,
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
        Self::open_rotated(path, None, 0)
    }

    /// As [`open`](Self::open), rotating the file before it would grow past `max_size`: it
    /// becomes `<path>.1` (the older ones `.2`, ...), `retention` of them are kept, and a line
    /// is never split between files.
    pub fn open_rotated(path: &Path, max_size: Option<u64>, retention: usize) -> std::io::Result<Self> {
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
            max_size,
            retention,
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
        let mut before = file.metadata()?;
        if let Some(max) = self.max_size
            && before.is_file()
            && before.len() > 0
            && before.len() + lines.len() as u64 > max
        {
            *file = self.rotate()?;
            before = file.metadata()?;
        }
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

    /// Shifts `<path>.N` to `<path>.N+1` (dropping what passes `retention`), moves the file to
    /// `<path>.1` and opens a new one.
    fn rotate(&self) -> std::io::Result<std::fs::File> {
        let numbered = |n: usize| {
            let mut name = self.path.as_os_str().to_owned();
            name.push(format!(".{n}"));
            PathBuf::from(name)
        };
        if self.retention == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            let _ = std::fs::remove_file(numbered(self.retention));
            for n in (1..self.retention).rev() {
                let from = numbered(n);
                if from.exists() {
                    std::fs::rename(&from, numbered(n + 1))?;
                }
            }
            std::fs::rename(&self.path, numbered(1))?;
        }
        tracing::info!(target: "extractor_runtime::queues", file = %crate::text::Shown(&self.path), "the dead-letter file reached its max-size and was rotated");
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_file_is_rotated_whole_lines_only_and_retention_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("refused.ndjson");
        let d = DeadLetter::open_rotated(&path, Some(25), 2).unwrap();
        for i in 0..7 {
            d.append(format!("{{\"line\": {i:04}}}\n").as_bytes()).unwrap();
        }
        // 15-byte lines, at most 25 bytes a file: one line each; the newest three kept.
        let read = |p: &Path| std::fs::read_to_string(p).unwrap();
        assert_eq!(read(&path), "{\"line\": 0006}\n");
        assert_eq!(read(&dir.path().join("refused.ndjson.1")), "{\"line\": 0005}\n");
        assert_eq!(read(&dir.path().join("refused.ndjson.2")), "{\"line\": 0004}\n");
        assert!(!dir.path().join("refused.ndjson.3").exists());
    }
}
