//! Incremental state: per-key low/high watermarks that survive restarts, in a local file
//! ([`LocalStateStore`]) or a CDF RAW table ([`RawStateStore`]), behind one handle
//! ([`StateStore`]).
//!
//! [`LocalStateStore`] keeps them in a JSON file, written atomically (a temporary file in the
//! same folder, fsync, rename, fsync of the folder), so a crash leaves either the old or the new
//! file, never a torn one. A file that cannot be read or parsed is an error naming the path,
//! never a silent start from empty; `reset` (the `--reset-state` flag) is the explicit way out.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

mod raw;

pub use raw::RawStateStore;

/// The process's state store, whichever kind `state-store:` configures. Cheap to clone.
#[derive(Clone, Debug)]
pub enum StateStore {
    /// A local JSON file.
    Local(LocalStateStore),
    /// A CDF RAW table.
    Raw(RawStateStore),
}

impl StateStore {
    /// The watermarks of `key`.
    pub fn get(&self, key: &str) -> Option<Watermarks> {
        match self {
            StateStore::Local(s) => s.get(key),
            StateStore::Raw(s) => s.get(key),
        }
    }

    /// Sets the watermarks of `key` in memory. Call it only after the data they cover was
    /// accepted by CDF; [`save`](Self::save) makes it durable.
    pub fn set(&self, key: &str, watermarks: Watermarks) {
        match self {
            StateStore::Local(s) => s.set(key, watermarks),
            StateStore::Raw(s) => s.set(key, watermarks),
        }
    }

    /// Only while `fence` is held are saves written (a replica that lost its lease must not
    /// move the state another replica now moves).
    pub fn set_fence(&self, fence: crate::fence::Fence) {
        match self {
            StateStore::Local(s) => s.states.set_fence(fence),
            StateStore::Raw(s) => s.states.set_fence(fence),
        }
    }

    /// Writes the state out.
    ///
    /// # Cancel safety
    ///
    /// Cancelling a RAW save may leave some rows written; the next save writes them all again.
    pub async fn save(&self) -> Result<(), StateError> {
        match self {
            // Writing and fsyncing a file blocks: not on an async worker.
            StateStore::Local(s) => {
                let store = s.clone();
                tokio::task::spawn_blocking(move || store.save())
                    .await
                    .unwrap_or_else(|e| {
                        Err(StateError::Write {
                            path: s.path.clone(),
                            source: std::io::Error::other(e),
                        })
                    })
            }
            StateStore::Raw(s) => s.save().await,
        }
    }
}

/// One key's watermarks.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Watermarks {
    /// The lowest value extracted so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub low: Option<serde_json::Value>,
    /// The highest value extracted so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub high: Option<serde_json::Value>,
}

/// Why state could not be loaded or saved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// The file exists but cannot be read.
    #[error(
        "cannot read the state file {path}: {source} (fix or remove it, or start with --reset-state)"
    )]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a state file.
    #[error(
        "the state file {path} is corrupt: {message} (fix or remove it, or start with --reset-state)"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// This replica lost its high-availability lease: the state is not written.
    #[error(transparent)]
    Fenced(crate::fence::Fenced),
    /// Reading or writing the RAW table failed.
    #[error("state in CDF RAW: {0}")]
    Raw(#[source] crate::cdf::CdfError),
    /// Writing failed; the previous file is intact.
    #[error("cannot save the state file {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Another process holds the state file's lock: two processes on one file would overwrite
    /// each other's progress.
    #[error(
        "the state file {path} is in use by another process (it holds {lock}); two processes on one state file would overwrite each other: give each its own `state-store.local.path`"
    )]
    Locked {
        /// The state file.
        path: PathBuf,
        /// The lock file.
        lock: PathBuf,
    },
    /// The save was cut short by the shutdown deadline; what was saved before stays.
    #[error("the state upload did not finish within the shutdown grace")]
    Cut,
}

#[derive(Serialize, Deserialize)]
struct File {
    version: u32,
    states: BTreeMap<String, Watermarks>,
}

/// The in-memory watermarks behind every store. Cheap to clone; clones share the map.
#[derive(Clone, Debug, Default)]
pub(crate) struct Marks(
    Arc<Mutex<BTreeMap<String, Watermarks>>>,
    /// Saves are allowed only while it is held (the high-availability lease).
    Arc<std::sync::OnceLock<crate::fence::Fence>>,
);

impl Marks {
    pub(crate) fn new(states: BTreeMap<String, Watermarks>) -> Self {
        Marks(Arc::new(Mutex::new(states)), Arc::default())
    }

    /// Fences every later save of this store (and its clones) with `fence`.
    pub(crate) fn set_fence(&self, fence: crate::fence::Fence) {
        let _ = self.1.set(fence);
    }

    /// `Ok` while a save may be written.
    pub(crate) fn fenced(&self) -> Result<(), StateError> {
        match self.1.get() {
            Some(fence) => fence.check("the state").map_err(StateError::Fenced),
            None => Ok(()),
        }
    }

    pub(crate) fn get(&self, key: &str) -> Option<Watermarks> {
        self.0.lock().expect("state lock").get(key).cloned()
    }

    pub(crate) fn set(&self, key: &str, watermarks: Watermarks) {
        self.0
            .lock()
            .expect("state lock")
            .insert(key.to_owned(), watermarks);
    }

    /// A copy to write out, so that the lock is not held during I/O.
    pub(crate) fn snapshot(&self) -> BTreeMap<String, Watermarks> {
        self.0.lock().expect("state lock").clone()
    }
}

/// Watermarks in a local JSON file. Cheap to clone.
#[derive(Clone, Debug)]
pub struct LocalStateStore {
    path: PathBuf,
    states: Marks,
    /// One save at a time, so an older snapshot never replaces a newer one.
    saving: Arc<Mutex<()>>,
    /// The lock file, locked while this store (and its clones) live: see [`Self::open_locked`].
    _lock: Option<Arc<std::fs::File>>,
}

impl LocalStateStore {
    /// Loads the file at `path` (a missing file is an empty state). With `reset`, an existing
    /// file is ignored (and replaced at the next save).
    pub fn open(path: &Path, reset: bool) -> Result<Self, StateError> {
        let states = if reset {
            BTreeMap::new()
        } else {
            match std::fs::read(path) {
                Ok(bytes) => {
                    let file: File =
                        serde_json::from_slice(&bytes).map_err(|e| StateError::Corrupt {
                            path: path.to_owned(),
                            message: e.to_string(),
                        })?;
                    if file.version != 1 {
                        return Err(StateError::Corrupt {
                            path: path.to_owned(),
                            message: format!("unknown version {}", file.version),
                        });
                    }
                    file.states
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
                Err(source) => {
                    return Err(StateError::Read {
                        path: path.to_owned(),
                        source,
                    });
                }
            }
        };
        remove_stale_temporaries(path);
        Ok(LocalStateStore {
            path: path.to_owned(),
            states: Marks::new(states),
            saving: Arc::new(Mutex::new(())),
            _lock: None,
        })
    }

    /// [`open`](Self::open) (creating the file's folder if needed), holding an exclusive lock on `<path>.lock` for as long as the store
    /// lives, so a second process on the same state file refuses to start
    /// ([`StateError::Locked`]) instead of silently overwriting this one's progress. The lock
    /// is the operating system's (`flock`): it goes away with the process, even after kill -9.
    pub fn open_locked(path: &Path, reset: bool) -> Result<Self, StateError> {
        let mut name = path.as_os_str().to_owned();
        name.push(".lock");
        let lock = PathBuf::from(name);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StateError::Write {
                path: path.to_owned(),
                source,
            })?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock)
            .map_err(|source| StateError::Write {
                path: lock.clone(),
                source,
            })?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StateError::Locked {
                    path: path.to_owned(),
                    lock,
                });
            }
            Err(std::fs::TryLockError::Error(source)) => {
                return Err(StateError::Write { path: lock, source });
            }
        }
        let mut store = Self::open(path, reset)?;
        store._lock = Some(Arc::new(file));
        Ok(store)
    }

    /// The watermarks of `key`.
    pub fn get(&self, key: &str) -> Option<Watermarks> {
        self.states.get(key)
    }

    /// Sets the watermarks of `key` (in memory; [`save`](Self::save) writes them). Call it only
    /// after the data they cover was accepted by CDF.
    pub fn set(&self, key: &str, watermarks: Watermarks) {
        self.states.set(key, watermarks);
    }

    /// Writes the state atomically: temporary file, fsync, rename, fsync of the folder.
    /// Blocking; saves are serialized.
    pub fn save(&self) -> Result<(), StateError> {
        let _one_at_a_time = self.saving.lock().unwrap_or_else(|e| e.into_inner());
        self.states.fenced()?;
        let file = File {
            version: 1,
            states: self.states.snapshot(),
        };
        let bytes = serde_json::to_vec_pretty(&file).expect("state serializes");
        let err = |source| StateError::Write {
            path: self.path.clone(),
            source,
        };
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => PathBuf::from("."),
        };
        let mut tmp = tempfile::Builder::new()
            .prefix(&temp_prefix(&self.path))
            .suffix(".tmp")
            .tempfile_in(&dir)
            .map_err(err)?;
        tmp.write_all(&bytes).map_err(err)?;
        tmp.as_file().sync_all().map_err(err)?;
        // Checked again after the fsync, which can take long: a save that lost the lease on the
        // way leaves the old file.
        self.states.fenced()?;
        tmp.persist(&self.path).map_err(|e| err(e.error))?;
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(err)?;
        Ok(())
    }
}

/// `.states.json.` for `states.json`: the prefix of its temporary files.
fn temp_prefix(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!(".{name}.")
}

/// Removes temporary files a killed process left behind (best effort).
fn remove_stale_temporaries(path: &Path) {
    let prefix = temp_prefix(path);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(&prefix) && name.ends_with(".tmp") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("states.json");
        let store = LocalStateStore::open(&path, false).unwrap();
        assert_eq!(store.get("a"), None);
        store.set(
            "a",
            Watermarks {
                low: Some(1.into()),
                high: Some("2026-01-01".into()),
            },
        );
        store.save().unwrap();
        let again = LocalStateStore::open(&path, false).unwrap();
        assert_eq!(again.get("a").unwrap().high, Some("2026-01-01".into()));
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file is left"
        );
    }

    /// A replica that lost its lease leaves the file as the last save that held it wrote it.
    #[tokio::test]
    async fn a_fenced_store_writes_nothing_once_the_lease_is_lost() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("states.json");
        let store = StateStore::Local(LocalStateStore::open(&path, false).unwrap());
        let fence = crate::fence::Fence::closed();
        store.set_fence(fence.clone());
        fence.hold_until(tokio::time::Instant::now() + std::time::Duration::from_secs(60));
        store.set("a", Watermarks { low: None, high: Some(1.into()) });
        store.save().await.unwrap();
        fence.revoke();
        store.set("a", Watermarks { low: None, high: Some(2.into()) });
        let e = store.save().await.unwrap_err();
        assert!(matches!(e, StateError::Fenced(_)), "{e}");
        assert!(e.to_string().contains("no longer holds the high-availability lease"), "{e}");
        let kept = LocalStateStore::open(&path, false).unwrap();
        assert_eq!(kept.get("a").unwrap().high, Some(1.into()), "the fenced save left the file");
    }

    #[test]
    fn a_corrupt_file_is_an_error_naming_the_path_unless_reset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("states.json");
        std::fs::write(&path, "{\"version\": 1, \"states\": {\"a\": ").unwrap();
        let e = LocalStateStore::open(&path, false).unwrap_err().to_string();
        assert!(
            e.contains(&path.display().to_string())
                && e.contains("corrupt")
                && e.contains("--reset-state"),
            "{e}"
        );
        let store = LocalStateStore::open(&path, true).unwrap();
        assert_eq!(store.get("a"), None);
        store.save().unwrap();
        assert!(LocalStateStore::open(&path, false).is_ok());
    }
}
