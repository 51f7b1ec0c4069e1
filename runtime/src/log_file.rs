//! `logger.file`: a log file rotated daily at midnight UTC (as python-extractor-utils'
//! `TimedRotatingFileHandler`), hourly, or by size, keeping `retention` rotated files.
//!
//! A rotated file is renamed `<name>.<period>`: `app.log.2026-12-06` (daily),
//! `app.log.2026-12-06_14` (hourly), `app.log.2026-12-06T14-05-09.123456` (size), so the names
//! sort by age and the oldest beyond `retention` are removed. A write that fails (a full disk)
//! never stops the process: the line is dropped and counted
//! (`extractor_log_lines_dropped_total`), and writing goes on when there is room again.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use crate::config::LogRotation;

/// Log lines the file could not take (a full disk, a removed directory):
/// `extractor_log_lines_dropped_total`, registered with the process metrics.
pub(crate) static DROPPED: LazyLock<prometheus::IntCounter> = LazyLock::new(|| {
    prometheus::IntCounter::new(
        "extractor_log_lines_dropped_total",
        "Log lines the log file could not take (a full disk): dropped, never blocking.",
    )
    .expect("a valid metric")
});

/// The log file and its rotation.
pub(crate) struct RotatingFile {
    path: PathBuf,
    file: Option<File>,
    size: u64,
    rotation: LogRotation,
    max_size: u64,
    retention: usize,
    /// The period the open file belongs to (`2026-12-06`, `2026-12-06_14`); for size rotation
    /// unused.
    period: String,
    now: fn() -> jiff::Timestamp,
}

impl RotatingFile {
    /// Opens (appending to) `path`, creating its directory; an error says why it cannot be
    /// written at all (a config error at start).
    pub(crate) fn open(
        path: &Path,
        rotation: LogRotation,
        max_size: u64,
        retention: usize,
        now: fn() -> jiff::Timestamp,
    ) -> std::io::Result<RotatingFile> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        // A file left by an earlier process belongs to the period it was last written in.
        let modified = file
            .metadata()
            .ok()
            .filter(|m| m.len() > 0)
            .and_then(|m| m.modified().ok())
            .and_then(|t| jiff::Timestamp::try_from(t).ok())
            .unwrap_or_else(now);
        Ok(RotatingFile {
            path: path.to_owned(),
            file: Some(file),
            size,
            rotation,
            max_size,
            retention,
            period: period_of(rotation, modified),
            now,
        })
    }

    /// Rotates when the period changed, or when `incoming` more bytes would pass `max-size`.
    fn rotate_if_due(&mut self, incoming: usize) {
        let now = (self.now)();
        let due = match self.rotation {
            LogRotation::Size => self.size > 0 && self.size + incoming as u64 > self.max_size,
            _ => period_of(self.rotation, now) != self.period,
        };
        if !due {
            return;
        }
        let suffix = match self.rotation {
            LogRotation::Size => now.strftime("%Y-%m-%dT%H-%M-%S.%6f").to_string(),
            _ => self.period.clone(),
        };
        self.file = None;
        let mut target = rotated_name(&self.path, &suffix);
        let mut n = 1;
        while target.exists() {
            target = rotated_name(&self.path, &format!("{suffix}.{n}"));
            n += 1;
        }
        let _ = std::fs::rename(&self.path, &target);
        self.prune();
        self.period = period_of(self.rotation, now);
        self.size = 0;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .ok();
    }

    /// Removes the oldest rotated files beyond `retention`.
    fn prune(&self) {
        let Some(dir) = self.path.parent().map(|d| {
            if d.as_os_str().is_empty() {
                Path::new(".")
            } else {
                d
            }
        }) else {
            return;
        };
        let Some(name) = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
        else {
            return;
        };
        let prefix = format!("{name}.");
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let mut rotated: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
            })
            .collect();
        rotated.sort();
        let extra = rotated.len().saturating_sub(self.retention);
        for old in &rotated[..extra] {
            let _ = std::fs::remove_file(old);
        }
    }
}

fn rotated_name(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".");
    name.push(suffix);
    path.with_file_name(name)
}

/// The period `at` falls in, in UTC.
fn period_of(rotation: LogRotation, at: jiff::Timestamp) -> String {
    let utc = at.to_zoned(jiff::tz::TimeZone::UTC);
    match rotation {
        LogRotation::Daily => utc.strftime("%Y-%m-%d").to_string(),
        LogRotation::Hourly => utc.strftime("%Y-%m-%d_%H").to_string(),
        LogRotation::Size => String::new(),
    }
}

impl Write for RotatingFile {
    /// Takes every line: one that cannot be written is dropped and counted, never an error
    /// (a logger that fails would stop nothing but could block what logs).
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.rotate_if_due(buf.len());
        if self.file.is_none() {
            // Reopened after a failure (the directory removed, the disk was full).
            self.file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .ok();
        }
        let written = match &mut self.file {
            Some(file) => file.write_all(buf).is_ok(),
            None => false,
        };
        if written {
            self.size += buf.len() as u64;
        } else {
            DROPPED.inc();
            self.file = None;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if let Some(file) = &mut self.file {
            let _ = file.flush();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    static NOW: Mutex<i64> = Mutex::new(0);

    fn fake_now() -> jiff::Timestamp {
        jiff::Timestamp::from_second(*NOW.lock().unwrap()).unwrap()
    }

    fn rotated(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("app.log."))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn daily_rotation_at_midnight_utc_keeps_retention_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/app.log");
        let start: jiff::Timestamp = "2026-12-06T23:59:00Z".parse().unwrap();
        *NOW.lock().unwrap() = start.as_second();
        let mut file = RotatingFile::open(&path, LogRotation::Daily, 0, 2, fake_now).unwrap();
        file.write_all(b"day one\n").unwrap();
        for day in 1..=3 {
            *NOW.lock().unwrap() = start.as_second() + day * 86_400;
            file.write_all(format!("day {}\n", day + 1).as_bytes())
                .unwrap();
        }
        let logs = path.parent().unwrap();
        assert_eq!(
            rotated(logs),
            ["app.log.2026-12-07", "app.log.2026-12-08"],
            "days 6, 7 and 8 were rotated; the two newest are kept"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "day 4\n");
        assert_eq!(
            std::fs::read_to_string(logs.join("app.log.2026-12-08")).unwrap(),
            "day 3\n"
        );
    }

    #[test]
    fn size_rotation_starts_a_new_file_before_it_would_pass_max_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        *NOW.lock().unwrap() = 1_796_601_540;
        let mut file =
            RotatingFile::open(&path, LogRotation::Size, 20, 3, jiff::Timestamp::now).unwrap();
        for i in 0..10 {
            file.write_all(format!("line {i:04}\n").as_bytes()).unwrap(); // 10 bytes
        }
        assert_eq!(rotated(dir.path()).len(), 3, "{:?}", rotated(dir.path()));
        assert!(std::fs::metadata(&path).unwrap().len() <= 20);
    }
}
