//! The `files` extractor's `config:` block.

use extractor_runtime::Duration;
use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

/// `tasks[].config` for `type: files`.
#[derive(Clone, Debug, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FilesConfig {
    /// The folder the files are in (relative paths are from the working directory).
    pub path: PathBuf,
    /// Which files in `path` to upload; `**` descends into subfolders.
    #[serde(default = "default_glob")]
    pub glob: String,
    /// Leave a file alone until it has not changed for this long (a file still being written).
    #[serde(default)]
    pub min_age: Duration,
    /// Move each file here once CDF has all of it.
    #[serde(default)]
    pub done_folder: Option<PathBuf>,
    /// Files larger than this go in parts of this size (multipart upload, resumed after a
    /// restart); at least 5 MiB (CDF's smallest part), at most 4000 MiB. Default 64 MiB.
    #[serde(
        default = "default_part_size",
        deserialize_with = "extractor_runtime::size::deserialize_size"
    )]
    #[schemars(with = "String")]
    pub part_size: u64,
    /// What each file becomes in CDF.
    pub target: TargetConfig,
}

/// `config.target`: a classic CDF file, or a CogniteFile node. Its fields are templates over
/// the file: `{name}` (`report.pdf`), `{stem}` (`report`), `{extension}` (`pdf`), `{path}`
/// (relative to `path`, `/`-separated), `{size}` (bytes), `{modified}` (RFC 3339).
#[derive(Clone, Debug, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TargetConfig {
    /// `classic` (`/files`) or `cognite-file` (a node of `cdf_cdm:CogniteFile/v1`).
    #[serde(rename = "type")]
    pub kind: TargetKind,
    /// The file's external id (default `{path}`).
    #[serde(default)]
    pub external_id: Option<String>,
    /// The file's name (default `{name}`).
    #[serde(default)]
    pub name: Option<String>,
    /// `cognite-file`: the node's space.
    #[serde(default)]
    pub space: Option<String>,
    /// The MIME type (default: from the extension, else none).
    #[serde(default)]
    pub mime_type: Option<String>,
    /// `classic`: metadata, key to template.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// Where file content goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TargetKind {
    /// A classic CDF file (`/files`, by external id, overwritten when it changes).
    Classic,
    /// A CogniteFile node of the core data model (`/models/instances`, then its content).
    CogniteFile,
}

fn default_glob() -> String {
    "*".to_owned()
}

fn default_part_size() -> u64 {
    64 * 1024 * 1024
}
