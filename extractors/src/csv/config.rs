//! The `csv` extractor's `config:` block.

use extractor_runtime::Duration;
use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::destination::DestinationConfig;

/// `tasks[].config` for `type: csv`.
#[derive(Clone, Debug, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CsvConfig {
    /// The folder the files are in (relative paths are from the working directory).
    pub path: PathBuf,
    /// Which files in `path` to read; `**` descends into subfolders.
    #[serde(default = "default_glob")]
    pub glob: String,
    /// The field separator: one character.
    #[serde(default = "default_delimiter")]
    pub delimiter: String,
    /// Whether the first line names the columns.
    #[serde(default = "default_header")]
    pub header: bool,
    /// Column names: required without a header; with one, they replace its names.
    #[serde(default)]
    pub columns: Option<Vec<String>>,
    /// The files' encoding; only `utf-8` is read.
    #[serde(default)]
    pub encoding: Option<String>,
    /// Per-column types; columns not named here are `auto`.
    #[serde(default)]
    pub types: BTreeMap<String, ColumnType>,
    /// Leave a file alone until it has not changed for this long (a file still being written).
    #[serde(default)]
    pub min_age: Duration,
    /// Move each file here once CDF accepted all its rows.
    #[serde(default)]
    pub done_folder: Option<PathBuf>,
    /// The longest line read (`16MiB` by default): a longer one is reported as
    /// `file:line` like a malformed line, never held whole.
    #[serde(
        default = "default_max_line_size",
        deserialize_with = "extractor_runtime::size::deserialize_size"
    )]
    #[schemars(with = "extractor_runtime::size::SizeSchema")]
    pub max_line_size: u64,
    /// Rows between checkpoints (flush, then record progress in the state store).
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Where the rows go.
    pub destination: DestinationConfig,
}

/// How a column's text becomes a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ColumnType {
    /// An integer if it reads as one, else a float, `true`/`false`, or the text; empty is null.
    Auto,
    /// The text as it is.
    String,
    /// A 64-bit integer; empty is null.
    Integer,
    /// A 64-bit float; empty is null.
    Float,
    /// `true`/`false` (any case), `1`/`0`; empty is null.
    Boolean,
    /// Milliseconds since the epoch from RFC 3339 or `YYYY-MM-DD[ HH:MM:SS]` (UTC); empty is null.
    Timestamp,
}

fn default_glob() -> String {
    "*.csv".to_owned()
}

fn default_delimiter() -> String {
    ",".to_owned()
}

fn default_header() -> bool {
    true
}

fn default_max_line_size() -> u64 {
    16 << 20
}

fn default_batch_size() -> usize {
    10_000
}
