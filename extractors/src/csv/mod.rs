//! `type: csv`: ingest the CSV files of a folder.
//!
//! Each file matching `glob` in `path` is read on a blocking thread (UTF-8, `delimiter`, a header
//! line or `columns`), each line becomes a record (an object of typed columns, per `types`) that
//! the `destination` maps and queues. Every `batch-size` rows the file's progress (size, modified
//! time, rows done) is checkpointed and the queues send what they hold while reading goes on
//! (the checkpoint goes to the state store once CDF settled the rows before it); a file is *done*
//! once all its rows were accepted, and is then skipped, or moved to `done-folder`. A changed
//! file (other size or modified time) is read again from the start.
//!
//! A malformed line (wrong number of fields, invalid UTF-8, a value that is not its column's
//! type, a record its destination cannot take) is reported with file and line; that file stays
//! not done (the rows before it are delivered), the other files go on, and the run fails.

pub mod config;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use extractor_runtime::text::Shown;
use extractor_runtime::upload::{Refusals, Upload};
use extractor_runtime::{Extractor, Rejection, RunContext, TaskError};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::destination::{Cell, Destination, SendError, Written};
pub use config::{ColumnType, CsvConfig};

/// Lines handed from the reading thread to the run at a time.
const CHUNK: usize = 1_000;

/// The `csv` extractor.
#[derive(Debug)]
pub struct Csv {
    config: Arc<CsvConfig>,
    delimiter: u8,
    destination: Destination,
}

impl Csv {
    /// Checks the config.
    pub fn new(config: CsvConfig) -> Result<Self, Rejection> {
        let mut problems = Rejection::new();
        let delimiter = match config.delimiter.as_bytes() {
            [b] if b.is_ascii() && *b != b'"' && *b != b'\n' && *b != b'\r' => *b,
            _ => {
                problems.push(
                    "delimiter",
                    format!(
                        "must be one ASCII character other than a quote or a line break, not `{}`",
                        config.delimiter.escape_debug()
                    ),
                );
                b','
            }
        };
        if let Some(encoding) = &config.encoding {
            let e = encoding.to_ascii_lowercase().replace('_', "-");
            if e != "utf-8" && e != "utf8" {
                problems.push(
                    "encoding",
                    format!("only `utf-8` is read, not `{encoding}`; convert the files first (iconv -f {encoding} -t utf-8)"),
                );
            }
        }
        if let Err(e) = glob::Pattern::new(&config.glob) {
            problems.push("glob", format!("`{}` is not a glob: {e}", config.glob));
        }
        match &config.columns {
            None if !config.header => {
                problems.push("", "`header: false` needs `columns` to name the columns")
            }
            Some(columns) => {
                let mut seen = std::collections::BTreeSet::new();
                for (i, c) in columns.iter().enumerate() {
                    if c.trim().is_empty() {
                        problems.push(format!("columns[{i}]"), "must not be empty");
                    } else if !seen.insert(c.as_str()) {
                        problems.push(format!("columns[{i}]"), format!("`{c}` appears twice"));
                    }
                }
                for name in config.types.keys() {
                    if !seen.contains(name.as_str()) {
                        problems.push(
                            format!("types.{name}"),
                            format!(
                                "`{name}` is not one of `columns`{}",
                                extractor_runtime::Rejection::suggest(
                                    name,
                                    &columns.iter().map(String::as_str).collect::<Vec<_>>()
                                )
                            ),
                        );
                    }
                }
            }
            None => {}
        }
        if config.batch_size == 0 {
            problems.push("batch-size", "must be at least 1");
        }
        let destination = match Destination::new(&config.destination) {
            Ok(d) => Some(d),
            Err(r) => {
                problems.extend_under("destination", r);
                None
            }
        };
        match destination {
            Some(destination) if problems.is_empty() => Ok(Csv {
                config: Arc::new(config),
                delimiter,
                destination,
            }),
            _ => Err(problems),
        }
    }

    /// The files to read, sorted (listed on a blocking thread).
    async fn files(&self) -> Result<crate::folder::Listing, TaskError> {
        let config = self.config.clone();
        blocking(move || crate::folder::files(&config.path, &config.glob, config.min_age.get()))
            .await?
    }

    /// Moves `file` to the done folder (on a blocking thread).
    async fn move_done(&self, file: &Path) -> Result<(), FileError> {
        let (config, file) = (self.config.clone(), file.to_owned());
        blocking(move || {
            crate::folder::move_done(&config.path, config.done_folder.as_deref(), &file)
        })
        .await
        .map_err(FileError::Task)?
        .map_err(|(path, e)| FileError::io(&path, e))
    }

    async fn ingest(
        &self,
        ctx: &RunContext,
        upload: &Upload,
        refused: &mut Refusals,
        file: &Path,
    ) -> Result<Outcome, FileError> {
        let path = file.to_owned();
        let meta = match blocking(move || std::fs::metadata(path))
            .await
            .map_err(FileError::Task)?
        {
            Ok(meta) => meta,
            // Gone since the folder was listed (another consumer, an operator): nothing to do.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::info!(task = %ctx.task(), file = %Shown(file), "the file is gone; skipped");
                return Ok(Outcome::Unchanged);
            }
            Err(e) => {
                return Err(FileError::Unreadable {
                    path: file.to_owned(),
                    message: e.to_string(),
                });
            }
        };
        let size = meta.len();
        let modified = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as u64);
        // The file's path, lossless whatever its encoding (`text::path_text`): UTF-8 paths keep
        // the keys they always had.
        let key = extractor_runtime::text::path_text(file).into_owned();
        let progress = |rows: u64, done: bool| Progress {
            size,
            modified,
            rows,
            done,
        };
        let mut skip = 0;
        if let Some(mark) = upload.resume::<Progress>(&key).map_err(FileError::Task)?
            && mark.size == size
            && mark.modified == modified
        {
            if mark.done {
                self.move_done(file).await?;
                return Ok(Outcome::Unchanged);
            }
            skip = mark.rows;
        }

        let (tx, mut rx) = mpsc::channel(4);
        let reader = Reader {
            path: file.to_owned(),
            delimiter: self.delimiter,
            header: self.config.header,
            columns: self.config.columns.clone(),
            types: self.config.types.clone(),
            skip,
            max_line: self.config.max_line_size,
            destination: self.destination.clone(),
        };
        let thread = tokio::task::spawn_blocking(move || reader.read(tx));

        let mut rows = skip;
        let mut result = Ok(());
        'read: while let Some(chunk) = rx.recv().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(bad) => {
                    if matches!(bad, FileError::Bad { .. }) {
                        ctx.records_rejected(1);
                    }
                    result = Err(bad);
                    break;
                }
            };
            for (line, record) in chunk {
                let sent = match record {
                    Record::Json(record) => self.destination.send(ctx, upload, record).await,
                    Record::Written(w) => self.destination.queue_written(ctx, upload, w).await,
                };
                match sent {
                    Ok(()) => rows += 1,
                    Err(SendError::Record(e)) => {
                        result = Err(FileError::Bad {
                            path: file.to_owned(),
                            line,
                            message: e.to_string(),
                        });
                        break 'read;
                    }
                    Err(SendError::Queue(e)) => return Err(FileError::Task(e.into())),
                }
                if rows % self.config.batch_size as u64 == 0 {
                    // The checkpoint becomes durable once CDF settled every row before it.
                    upload.checkpoint(&key, &progress(rows, false));
                }
                if rows % SEND_AHEAD_EVERY == 0 || rows % self.config.batch_size as u64 == 0 {
                    // Sent while the next rows are read.
                    refused.merge(upload.send_ahead().await.map_err(FileError::Task)?);
                }
            }
            if ctx.is_cancelled() {
                result = Err(FileError::Task(TaskError::transient(format!(
                    "cancelled while reading `{}` at row {rows}",
                    Shown(file)
                ))));
                break;
            }
        }
        drop(rx);
        let _ = thread.await;
        // What was read before a bad line or a cancel is delivered and remembered; rows CDF
        // refused are dead-lettered and do not keep the file from being done.
        upload.checkpoint(&key, &progress(rows, result.is_ok()));
        refused.merge(upload.deliver().await.map_err(FileError::Task)?);
        result?;
        self.move_done(file).await?;
        Ok(Outcome::Ingested(rows - skip))
    }
}

/// Rows between calls of [`Upload::send_ahead`], whatever `batch-size` is: the queues start
/// each full request soon, and the read never runs far past the room it was given.
const SEND_AHEAD_EVERY: u64 = 1_000;

/// Runs blocking file work off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, TaskError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| TaskError::transient(format!("file work failed: {e}")))
}

enum Outcome {
    Unchanged,
    Ingested(u64),
}

/// A file's watermark: the file it was (size and modification time, in ms), the rows read from
/// it, and whether all of it is done.
#[derive(serde::Serialize, serde::Deserialize)]
struct Progress {
    size: u64,
    modified: u64,
    rows: u64,
    done: bool,
}

#[derive(Debug)]
enum FileError {
    /// A malformed line: the file stays not done, the run goes on with the other files.
    Bad {
        path: PathBuf,
        line: u64,
        message: String,
    },
    /// The file cannot be read (opened, or read further): the rows before are delivered, the
    /// file stays not done, the run goes on with the other files.
    Unreadable { path: PathBuf, message: String },
    /// The run cannot go on (CDF, cancellation, the done folder).
    Task(TaskError),
}

impl FileError {
    fn io(path: &Path, e: std::io::Error) -> FileError {
        FileError::Task(TaskError::transient(format!("`{}`: {e}", Shown(path))))
    }
}

impl Extractor for Csv {
    async fn run(&self, ctx: RunContext) -> Result<(), TaskError> {
        let upload = self.destination.upload(&ctx);
        let mut refused = Refusals::default();
        // What an earlier run queued goes first: a file is moved only once its rows are
        // settled, and a pending "done" checkpoint is not durable yet.
        if upload.outstanding() > 0 {
            refused.merge(upload.deliver().await?);
        }
        let crate::folder::Listing { files, clashes } = self.files().await?;
        let mut bad = clashes;
        let (mut ingested, mut rows) = (0, 0);
        for file in &files {
            match self.ingest(&ctx, &upload, &mut refused, file).await {
                Ok(Outcome::Unchanged) => {}
                Ok(Outcome::Ingested(n)) => {
                    tracing::info!(task = %ctx.task(), file = %Shown(file), rows = n, "file ingested");
                    ingested += 1;
                    rows += n;
                }
                Err(FileError::Bad {
                    path,
                    line,
                    message,
                }) => {
                    let e = format!("{}:{line}: {message}", Shown(&path));
                    tracing::error!(task = %ctx.task(), "malformed line, the file is not done: {e}");
                    bad.push(e);
                }
                Err(FileError::Unreadable { path, message }) => {
                    let e = format!("{}: cannot read: {message}", Shown(&path));
                    tracing::error!(task = %ctx.task(), "skipped, the file is not done: {e}");
                    bad.push(e);
                }
                Err(FileError::Task(e)) => return Err(e),
            }
        }
        tracing::info!(
            task = %ctx.task(),
            files = files.len(),
            ingested,
            rows,
            malformed = bad.len(),
            "csv run done"
        );
        let refused = upload.refused_error(&refused);
        match (bad.is_empty(), refused) {
            (true, None) => Ok(()),
            (true, Some(refused)) => Err(refused),
            (false, refused) => Err(TaskError::permanent(format!(
                "{} file(s) with a malformed line or unreadable: {}{}",
                bad.len(),
                bad.join("; "),
                refused.map_or_else(String::new, |r| format!("; {r}"))
            ))),
        }
    }
}

type Chunk = Result<Vec<(u64, Record)>, FileError>;

/// A line as the reading thread hands it on.
enum Record {
    /// A record for the destination to map.
    Json(Value),
    /// An item made straight from the line's cells ([`Destination::row_writer`]).
    Written(Written),
}

/// Reads one file on a blocking thread and sends typed records in chunks.
struct Reader {
    path: PathBuf,
    delimiter: u8,
    header: bool,
    columns: Option<Vec<String>>,
    types: std::collections::BTreeMap<String, ColumnType>,
    skip: u64,
    max_line: u64,
    destination: Destination,
}

/// A line longer than `max-line-size`, at this (1-based, physical) line.
#[derive(Debug)]
struct LineTooLong {
    line: u64,
    max: u64,
}

impl std::fmt::Display for LineTooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the line is longer than max-line-size ({})",
            extractor_runtime::size::show_size(self.max)
        )
    }
}

impl std::error::Error for LineTooLong {}

/// A reader that fails with [`LineTooLong`] as soon as a line outgrows `max`, so a huge line
/// is never buffered whole (the csv parser would keep growing its record).
struct LineBound<R> {
    inner: R,
    max: u64,
    /// Bytes of the current line so far.
    run: u64,
    /// Newlines seen.
    lines: u64,
}

impl<R: std::io::Read> std::io::Read for LineBound<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut segments = buf[..n].split(|b| *b == b'\n');
        if let Some(first) = segments.next() {
            self.run += first.len() as u64;
        }
        for segment in segments {
            if self.run > self.max {
                break;
            }
            self.lines += 1;
            self.run = segment.len() as u64;
        }
        if self.run > self.max {
            return Err(std::io::Error::other(LineTooLong {
                line: self.lines + 1,
                max: self.max,
            }));
        }
        Ok(n)
    }
}

impl Reader {
    fn read(self, tx: mpsc::Sender<Chunk>) {
        let mut chunk = Vec::with_capacity(CHUNK);
        let result = self.try_read(&tx, &mut chunk);
        // The lines before a bad one are good: they go first.
        if !chunk.is_empty() && tx.blocking_send(Ok(chunk)).is_err() {
            return;
        }
        if let Err(e) = result {
            let _ = tx.blocking_send(Err(e));
        }
    }

    fn bad(&self, line: u64, message: impl Into<String>) -> FileError {
        FileError::Bad {
            path: self.path.clone(),
            line,
            message: message.into(),
        }
    }

    fn try_read(
        &self,
        tx: &mpsc::Sender<Chunk>,
        chunk: &mut Vec<(u64, Record)>,
    ) -> Result<(), FileError> {
        let mut reader = ::csv::ReaderBuilder::new()
            .delimiter(self.delimiter)
            .has_headers(self.header)
            .from_reader(LineBound {
                inner: std::fs::File::open(&self.path).map_err(|e| FileError::Unreadable {
                    path: self.path.clone(),
                    message: e.to_string(),
                })?,
                max: self.max_line,
                run: 0,
                lines: 0,
            });
        let names: Vec<String> = match &self.columns {
            Some(c) => c.clone(),
            None => reader
                .headers()
                .map_err(|e| self.csv_error(&e, 1))?
                .iter()
                .map(str::to_owned)
                .collect(),
        };
        let types: Vec<ColumnType> = names
            .iter()
            .map(|n| self.types.get(n).copied().unwrap_or(ColumnType::Auto))
            .collect();
        let writer = self.destination.row_writer(&names);
        // The cells of a line, kept between lines for their allocation (`recycle`).
        let mut spare: Vec<Cell<'static>> = Vec::with_capacity(names.len());
        let mut record = ::csv::StringRecord::new();
        let mut n = 0u64;
        loop {
            let line = reader.position().line();
            match reader.read_record(&mut record) {
                Ok(false) => break,
                Ok(true) => {}
                Err(e) => return Err(self.csv_error(&e, line)),
            }
            let line = record.position().map_or(line, |p| p.line());
            n += 1;
            if n <= self.skip {
                continue;
            }
            if record.len() != names.len() {
                return Err(self.bad(
                    line,
                    format!(
                        "{} fields, expected {} ({})",
                        record.len(),
                        names.len(),
                        names.join(",")
                    ),
                ));
            }
            let mut cells = recycle(std::mem::take(&mut spare));
            for ((name, ty), text) in names.iter().zip(&types).zip(record.iter()) {
                let cell =
                    cell(text, *ty).map_err(|m| self.bad(line, format!("column `{name}`: {m}")))?;
                cells.push(cell);
            }
            let record = match &writer {
                Some(writer) => Record::Written(
                    writer
                        .write(&cells)
                        .map_err(|e| self.bad(line, e.to_string()))?,
                ),
                None => {
                    let mut object = serde_json::Map::new();
                    for (name, cell) in names.iter().zip(cells.drain(..)) {
                        object.insert(name.clone(), cell.into_value());
                    }
                    Record::Json(Value::Object(object))
                }
            };
            cells.clear();
            spare = recycle(cells);
            chunk.push((line, record));
            if chunk.len() == CHUNK
                && tx
                    .blocking_send(Ok(std::mem::replace(chunk, Vec::with_capacity(CHUNK))))
                    .is_err()
            {
                return Ok(()); // the run stopped listening
            }
        }
        Ok(())
    }

    fn csv_error(&self, e: &::csv::Error, line: u64) -> FileError {
        let line = e.position().map_or(line, |p| p.line());
        match e.kind() {
            ::csv::ErrorKind::Utf8 { err, .. } => self.bad(
                line,
                format!("field {} is not valid UTF-8", err.field() + 1),
            ),
            ::csv::ErrorKind::UnequalLengths {
                expected_len, len, ..
            } => self.bad(line, format!("{len} fields, expected {expected_len}")),
            ::csv::ErrorKind::Io(io)
                if let Some(long) = io.get_ref().and_then(|e| e.downcast_ref::<LineTooLong>()) =>
            {
                self.bad(long.line, long.to_string())
            }
            ::csv::ErrorKind::Io(io) => FileError::Unreadable {
                path: self.path.clone(),
                message: format!("at line {line}: {io}"),
            },
            _ => self.bad(line, e.to_string()),
        }
    }
}

/// A field's text as a value of its column's type.
pub fn convert(text: &str, ty: ColumnType) -> Result<Value, String> {
    cell(text, ty).map(Cell::into_value)
}

/// A field's text as a cell of its column's type (a text cell borrows the field).
fn cell(text: &str, ty: ColumnType) -> Result<Cell<'_>, String> {
    if text.is_empty() && ty != ColumnType::String {
        return Ok(Cell::Null);
    }
    let number = |v: f64| {
        serde_json::Number::from_f64(v)
            .map(Cell::Number)
            .ok_or_else(|| format!("`{text}` is not a finite number"))
    };
    match ty {
        ColumnType::String => Ok(Cell::Text(text)),
        ColumnType::Integer => text
            .trim()
            .parse::<i64>()
            .map(|i| Cell::Number(i.into()))
            .map_err(|_| format!("`{text}` is not an integer")),
        ColumnType::Float => match text.trim().parse::<f64>() {
            Ok(v) => number(v),
            Err(_) => Err(format!("`{text}` is not a number")),
        },
        ColumnType::Boolean => match text.trim().to_ascii_lowercase().as_str() {
            "true" | "1" => Ok(Cell::Bool(true)),
            "false" | "0" => Ok(Cell::Bool(false)),
            _ => Err(format!("`{text}` is not true or false")),
        },
        ColumnType::Timestamp => crate::destination::parse_time(text)
            .map(|ms| Cell::Number(ms.into()))
            .ok_or_else(|| format!("`{text}` is not a time (RFC 3339 or YYYY-MM-DD HH:MM:SS)")),
        ColumnType::Auto => {
            if let Ok(i) = text.parse::<i64>() {
                Ok(Cell::Number(i.into()))
            } else if let Ok(v) = text.parse::<f64>()
                && v.is_finite()
            {
                number(v)
            } else if text == "true" || text == "false" {
                Ok(Cell::Bool(text == "true"))
            } else {
                Ok(Cell::Text(text))
            }
        }
    }
}

/// An empty vector of cells of any lifetime, reusing `spare`'s allocation (collecting an empty
/// vector into one of a type of the same layout keeps its buffer): a line's cells borrow the
/// line, so the vector outlives each line's borrow only emptied.
fn recycle<'b>(spare: Vec<Cell<'_>>) -> Vec<Cell<'b>> {
    debug_assert!(spare.is_empty());
    spare.into_iter().map(|_| unreachable!("emptied")).collect()
}
