//! The dead-letter file (`upload-queue.dead-letter`): every item CDF refused for good, one JSON
//! object a line, so nothing refused is lost and it can be replayed once fixed.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// An append-only NDJSON file of refused items.
pub struct DeadLetter {
    path: PathBuf,
    file: Mutex<std::fs::File>,
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
    pub(crate) time: String,
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
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `items` as the file's lines.
    pub(crate) fn encode(items: &[Refused<'_>]) -> Vec<u8> {
        let mut text = Vec::new();
        for item in items {
            serde_json::to_writer(&mut text, item).expect("a refused item serializes");
            text.push(b'\n');
        }
        text
    }

    /// Appends `lines` and syncs the file, so a refused item is on disk before the queue
    /// forgets it. Blocking: call it from a blocking thread.
    pub(crate) fn append(&self, lines: &[u8]) -> std::io::Result<()> {
        let mut file = self.file.lock().expect("dead-letter lock");
        file.write_all(lines)?;
        file.sync_data()
    }
}
