//! Where a config comes from (DESIGN.md section 8, `ConfigSource`): a local file, or a config
//! revision in CDF (`type: remote`: the extraction pipeline's `GET /extpipes/config`, or the
//! integration's `GET /integrations/config`), with the last good remote document kept in a
//! 0600 buffer file to start from when CDF cannot be reached.
//!
//! A source only reads. Validating a document fully (building every extractor) and applying
//! it is the supervisor's: a document is written to the buffer file only once it was applied.

use std::path::{Path, PathBuf};

use crate::cdf::{CdfClient, CdfError, CdfErrorKind};
use crate::checkin::Revision;
use crate::config::{Config, ConfigError, ConfigErrorKind, ConfigErrors, LoadOptions, Remote, RemoteSource};

/// A config document as read, before it is checked. Its `Debug` shows the revision and the
/// text's size and hash, never the text (a config may hold secrets written in it).
#[derive(Clone, PartialEq, Eq)]
pub struct Document {
    /// The YAML text.
    pub text: String,
    /// Its revision: a remote revision, or `Local`.
    pub revision: Revision,
}

impl Document {
    /// A stable hash of the text: a reload of the same text is no change.
    pub fn hash(&self) -> u64 {
        crate::fnv::hash(self.text.as_bytes())
    }
}

impl std::fmt::Debug for Document {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Document")
            .field("revision", &self.revision)
            .field("bytes", &self.text.len())
            .field("hash", &self.hash())
            .finish()
    }
}

/// Why a config could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The config is wrong (a file that does not load, a revision that does not validate).
    #[error(transparent)]
    Config(#[from] ConfigErrors),
    /// CDF could not be reached (connection errors, timeouts, 5xx past the retries, the identity
    /// provider unreachable): a start may use the buffer file.
    #[error("cannot reach CDF for the config of {what}: {source}")]
    Unreachable {
        /// The pipeline or integration.
        what: String,
        /// Why.
        #[source]
        source: CdfError,
    },
    /// CDF refused (403, 404: no such pipeline, or no access; bad credentials): never a silent
    /// fallback to the buffer file.
    #[error("CDF refused the config of {what}: {source}")]
    Refused {
        /// The pipeline or integration.
        what: String,
        /// Why.
        #[source]
        source: CdfError,
    },
}

impl SourceError {
    /// CDF gave no answer for `remote`'s config (`why`: a timeout, a stop).
    pub(crate) fn unanswered(remote: &Remote, why: impl Into<String>) -> SourceError {
        SourceError::Unreachable {
            what: remote_name(remote),
            source: CdfError::new(CdfErrorKind::RetriesExhausted, endpoints(remote.source).0, why),
        }
    }

    /// Whether starting from the buffer file is right: CDF could not be reached at all.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, SourceError::Unreachable { .. })
    }
}

/// How a remote config is named in messages: `extraction pipeline `x``.
pub fn remote_name(remote: &Remote) -> String {
    match remote.source {
        RemoteSource::ExtractionPipeline => format!("extraction pipeline `{}`", remote.external_id),
        RemoteSource::Integration => format!("integration `{}`", remote.external_id),
    }
}

/// How errors name a revision of it: `extraction pipeline `x` revision 7`.
pub fn revision_name(remote: &Remote, revision: Revision) -> String {
    format!("{} {revision}", remote_name(remote))
}

fn classify(remote: &Remote, e: CdfError) -> SourceError {
    let what = remote_name(remote);
    let unreachable = match e.kind() {
        CdfErrorKind::RetriesExhausted => true,
        CdfErrorKind::Auth => e.0.auth.as_ref().is_some_and(|a| !a.is_permanent()),
        _ => false,
    };
    if unreachable {
        SourceError::Unreachable { what, source: e }
    } else {
        SourceError::Refused { what, source: e }
    }
}

fn endpoints(source: RemoteSource) -> (&'static str, &'static str) {
    match source {
        RemoteSource::ExtractionPipeline => ("/extpipes/config", "/extpipes/config/revisions"),
        RemoteSource::Integration => ("/integrations/config", "/integrations/config/revisions"),
    }
}

/// `GET endpoint?externalId=<remote's>` plus `more` of the query.
async fn ask(
    cdf: &CdfClient,
    remote: &Remote,
    endpoint: &'static str,
    more: &str,
) -> Result<serde_json::Value, SourceError> {
    let path = format!(
        "{endpoint}?externalId={}{more}",
        crate::percent::encode_segment(&remote.external_id)
    );
    cdf.get(endpoint, &path)
        .await
        .map_err(|e| classify(remote, e))
}

/// Fetches the latest config revision of `remote`.
///
/// # Cancel safety
///
/// Cancel safe.
pub async fn fetch_latest(cdf: &CdfClient, remote: &Remote) -> Result<Document, SourceError> {
    let (endpoint, _) = endpoints(remote.source);
    let answer = ask(cdf, remote, endpoint, "").await?;
    let bad = |message: String| {
        SourceError::Config(ConfigErrors(vec![
            ConfigError::new(ConfigErrorKind::Invalid, message)
                .in_file(Some(PathBuf::from(remote_name(remote)))),
        ]))
    };
    let revision = answer
        .get("revision")
        .and_then(serde_json::Value::as_i64)
        .ok_or_else(|| bad("CDF's answer has no revision number".to_owned()))?;
    let text = answer
        .get("config")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| bad(format!("revision {revision} has no config text")))?;
    Ok(Document {
        text: text.to_owned(),
        revision: Revision::Remote(revision),
    })
}

/// The newest revision number of `remote`'s config (`GET .../revisions?limit=1`), if any.
///
/// # Cancel safety
///
/// Cancel safe.
pub async fn latest_revision(cdf: &CdfClient, remote: &Remote) -> Result<Option<i64>, SourceError> {
    let (_, endpoint) = endpoints(remote.source);
    let answer = ask(cdf, remote, endpoint, "&limit=1").await?;
    Ok(answer
        .get("items")
        .and_then(serde_json::Value::as_array)
        .and_then(|items| {
            items
                .iter()
                .filter_map(|i| i.get("revision").and_then(serde_json::Value::as_i64))
                .max()
        }))
}

/// The config of a document: a local file's text, or a remote revision with `remote`'s
/// `cognite:` injected. Errors name the file, or the revision, with line and column.
pub fn config_of(
    document: &Document,
    file: &Path,
    remote: Option<&Remote>,
    options: &LoadOptions,
) -> Result<Config, ConfigErrors> {
    let env = crate::config::process_env;
    match (remote, document.revision) {
        (Some(remote), revision @ Revision::Remote(_)) => Config::from_remote(
            &document.text,
            &revision_name(remote, revision),
            remote,
            &env,
            options,
        ),
        _ => Config::from_yaml(&document.text, Some(file), &env, options),
    }
}

/// Reads a local config file's text.
pub fn read_local(file: &Path) -> Result<Document, SourceError> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        ConfigErrors(vec![
            ConfigError::new(
                ConfigErrorKind::Io,
                format!("cannot read the config file: {e}"),
            )
            .in_file(Some(file.to_owned())),
        ])
    })?;
    Ok(Document {
        text,
        revision: Revision::Local,
    })
}

/// The last good remote document, kept beside the local file (mode 0600: a config may hold
/// secrets).
#[derive(Clone, Debug)]
pub struct Buffer {
    path: PathBuf,
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Buffered {
    external_id: String,
    revision: i64,
    config: String,
}

impl Buffer {
    /// The buffer file of `remote`.
    pub fn of(remote: &Remote) -> Buffer {
        Buffer {
            path: remote.buffer_file.clone(),
        }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The document kept for `remote`, if there is one (one kept for another pipeline or
    /// integration is not used).
    pub fn read(&self, remote: &Remote) -> Result<Option<Document>, String> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read {}: {e}", self.path.display())),
        };
        let kept: Buffered = serde_json::from_slice(&bytes)
            .map_err(|e| format!("{} is not a config buffer: {e}", self.path.display()))?;
        if kept.external_id != remote.external_id {
            return Ok(None);
        }
        Ok(Some(Document {
            text: kept.config,
            revision: Revision::Remote(kept.revision),
        }))
    }

    /// Keeps `document` (a remote revision just applied): written to a temporary file (0600),
    /// synced, renamed over the old one.
    pub fn write(&self, remote: &Remote, document: &Document) -> std::io::Result<()> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let kept = Buffered {
            external_id: remote.external_id.clone(),
            revision: document.revision.number(),
            config: document.text.clone(),
        };
        let dir = self.path.parent().filter(|p| !p.as_os_str().is_empty());
        let dir = dir.unwrap_or(Path::new("."));
        let mut name = self.path.file_name().unwrap_or_default().to_owned();
        name.push(".tmp");
        let tmp = dir.join(name);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        // An older file made with other permissions keeps them at open: set them.
        use std::os::unix::fs::PermissionsExt as _;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        file.write_all(&serde_json::to_vec(&kept).expect("a buffer serializes"))?;
        file.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_documents_debug_never_shows_its_text() {
        let document = Document {
            text: "cognite: {idp-authentication: {secret: written-in-the-config}}".into(),
            revision: Revision::Remote(3),
        };
        let shown = format!("{document:?}");
        assert!(!shown.contains("written-in-the-config"), "{shown}");
        assert!(shown.contains("Remote(3)"), "{shown}");
    }
}
