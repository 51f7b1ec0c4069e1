//! A folder of input files, as the `csv` and `files` extractors read it: a glob (`**` descends),
//! `min-age` for files still being written, symlink loops not followed, each real file once,
//! and a done folder to move finished files to.
//!
//! Names are bytes: a file whose name is not UTF-8 (Latin-1 on an SMB or NFS share) is listed,
//! read and moved like any other; its key (state, CDF name) is its lossless
//! [`path_text`](extractor_runtime::text::path_text), and logs show it escaped.

use std::path::{Path, PathBuf};
use std::time::Duration;

use extractor_runtime::TaskError;
use extractor_runtime::text::{Shown, path_text};

/// What a folder holds for a run.
#[derive(Debug, Default)]
pub(crate) struct Listing {
    /// The files to read, sorted.
    pub(crate) files: Vec<PathBuf>,
    /// Files that cannot be told apart by their key (a UTF-8 name spelling the `\xNN` escape of
    /// another file's name): neither is read, and the run fails naming them.
    pub(crate) clashes: Vec<String>,
}

/// The files under `dir` that `glob` matches, not modified within `min_age`, sorted; each real
/// file once. Blocking.
pub(crate) fn files(dir: &Path, glob: &str, min_age: Duration) -> Result<Listing, TaskError> {
    if !dir.is_dir() {
        return Err(TaskError::permanent(format!(
            "`{}` is not a folder",
            Shown(dir)
        )));
    }
    let pattern = glob::Pattern::new(glob)
        .map_err(|e| TaskError::permanent(format!("`{glob}` is not a glob: {e}")))?;
    let options = glob::MatchOptions {
        require_literal_separator: true,
        ..glob::MatchOptions::new()
    };
    // Without `**`, no deeper than the pattern's own folders.
    let max_depth = if glob.contains("**") {
        usize::MAX
    } else {
        glob.matches('/').count()
    };
    let mut found = Vec::new();
    walk(dir, Path::new(""), max_depth, &mut Vec::new(), &mut found);
    // Each real file once, under its first name (a symlink to a file read already is skipped).
    found.sort();
    let mut seen = std::collections::HashSet::new();
    let files: Vec<PathBuf> = found
        .into_iter()
        // The glob sees a name that is not UTF-8 with U+FFFD in place of its odd bytes (glob
        // matches text only, and `matches_path` is false for every such name).
        .filter(|relative| pattern.matches_with(&relative.to_string_lossy(), options))
        .map(|relative| dir.join(relative))
        .filter(|p| {
            // One stat: a file, and not modified within `min-age` (it may still be being
            // written).
            std::fs::metadata(p).is_ok_and(|m| {
                let age = m.modified().ok().and_then(|t| t.elapsed().ok());
                m.is_file() && (min_age.is_zero() || age.is_some_and(|a| a >= min_age))
            })
        })
        .filter(|p| seen.insert(std::fs::canonicalize(p).unwrap_or_else(|_| p.clone())))
        .collect();
    Ok(unique_keys(files))
}

/// Takes out the files whose keys clash (see [`Listing::clashes`]).
fn unique_keys(files: Vec<PathBuf>) -> Listing {
    let keys: Vec<String> = files.iter().map(|f| path_text(f).into_owned()).collect();
    let mut count: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for key in &keys {
        *count.entry(key).or_default() += 1;
    }
    let mut listing = Listing::default();
    for (f, key) in files.into_iter().zip(&keys) {
        if count[key.as_str()] > 1 {
            let message = format!(
                "`{}`: another file in the folder has the same name once its bytes that are not UTF-8 are written \\xNN; rename one of them",
                Shown(&f)
            );
            tracing::error!("not read: {message}");
            listing.clashes.push(message);
        } else {
            listing.files.push(f);
        }
    }
    listing
}

/// Collects the paths (relative to the root) under `dir`, `depth` folders deep at most,
/// following symlinked folders but never into a folder it is already inside (a `self -> .`
/// link or any other loop). Unreadable folders are skipped with a warning.
fn walk(
    dir: &Path,
    relative: &Path,
    depth: usize,
    inside: &mut Vec<(u64, u64)>,
    found: &mut Vec<PathBuf>,
) {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(meta) = std::fs::metadata(dir) else {
        return;
    };
    let id = (meta.dev(), meta.ino());
    if inside.contains(&id) {
        tracing::warn!(folder = %Shown(dir), "a symlink loops back to a folder it is in; not followed");
        return;
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            tracing::warn!(folder = %Shown(dir), "cannot list the folder; skipped: {e}");
            return;
        }
    };
    inside.push(id);
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                tracing::warn!(folder = %Shown(dir), "cannot read an entry of the folder; skipped: {e}");
                continue;
            }
        };
        let path = entry.path();
        let name = relative.join(entry.file_name());
        let is_dir = std::fs::metadata(&path).is_ok_and(|m| m.is_dir());
        if is_dir {
            if depth > 0 {
                walk(&path, &name, depth - 1, inside, found);
            }
        } else {
            found.push(name);
        }
    }
    inside.pop();
}

/// Moves `file` (under `root`) to the same place under `done` (if there is one). Blocking.
pub(crate) fn move_done(
    root: &Path,
    done: Option<&Path>,
    file: &Path,
) -> Result<(), (PathBuf, std::io::Error)> {
    let Some(done) = done else {
        return Ok(());
    };
    let relative = file.strip_prefix(root).unwrap_or(file);
    let target = done.join(relative);
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(|e| (parent.to_path_buf(), e))?;
    }
    if std::fs::rename(file, &target).is_err() {
        // Another file system: copy, then remove.
        std::fs::copy(file, &target).map_err(|e| (target.clone(), e))?;
        std::fs::remove_file(file).map_err(|e| (file.to_path_buf(), e))?;
    }
    tracing::info!(file = %Shown(file), to = %Shown(&target), "moved to the done folder");
    Ok(())
}
