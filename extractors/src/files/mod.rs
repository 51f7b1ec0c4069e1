//! The `files` extractor: uploads the files of a folder to CDF Files, as classic files or as
//! CogniteFile nodes, each once per change (state by size and modification time).
//!
//! Small files go in one PUT to the upload URL CDF hands out; larger ones in parts of
//! `part-size` (CDF's multipart upload), read from disk one part at a time, so memory stays at
//! one part whatever the file's size. The upload's progress (its id, the part URLs, the parts
//! done) is saved in the state store after each part: after a crash or a restart the upload
//! goes on from the first part not done, and is completed once. Upload URLs are another host:
//! they get the file's bytes and nothing else (no CDF token).

pub mod config;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use extractor_runtime::CdfClient;
use extractor_runtime::retry::{self, RetryPolicy};
use extractor_runtime::text::{Shown, path_text};
use extractor_runtime::{Extractor, Rejection, RunContext, TaskError};
use serde_json::{Value, json};

use crate::destination::Field;
pub use config::{FilesConfig, TargetConfig, TargetKind};

/// CDF's smallest part (all but the last) and largest.
const MIN_PART: u64 = 5 * 1024 * 1024;
const MAX_PART: u64 = 4000 * 1024 * 1024;
/// CDF's most parts in one multipart upload.
const MAX_PARTS: u64 = 250;
/// Attempts of one PUT to an upload URL.
const PUT_ATTEMPTS: usize = 4;
/// The delays between them (and the longest `Retry-After` honoured).
const PUT_RETRY: RetryPolicy =
    RetryPolicy::new(Duration::from_millis(500), Duration::from_secs(30))
        .with_max_retries(PUT_ATTEMPTS - 1);

/// The `files` extractor.
pub struct Files {
    config: Arc<FilesConfig>,
    external_id: Field,
    name: Field,
    mime_type: Option<Field>,
    metadata: Vec<(String, Field)>,
    /// The HTTP client for upload URLs (no CDF credentials), built at the first run.
    client: extractor_runtime::net::ClientCell,
}

impl std::fmt::Debug for Files {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Files")
            .field("path", &self.config.path)
            .field("target", &self.config.target.kind)
            .finish_non_exhaustive()
    }
}

/// One file to upload.
struct Source {
    path: PathBuf,
    /// Relative to `path`, `/`-separated: the state key.
    relative: String,
    size: u64,
    modified_ms: i64,
    /// What the target's templates read.
    record: Value,
}

/// Where a file's content goes, once CDF knows the file.
enum Link {
    /// One PUT.
    Single(String),
    /// Parts, then a completion request naming `file` and `upload_id`.
    Multi {
        file: Value,
        upload_id: String,
        urls: Vec<String>,
        next: usize,
    },
}

impl Files {
    /// Checks the config.
    pub fn new(config: FilesConfig) -> Result<Self, Rejection> {
        let mut problems = Rejection::new();
        if let Err(e) = glob::Pattern::new(&config.glob) {
            problems.push("glob", format!("`{}` is not a glob: {e}", config.glob));
        }
        if !(MIN_PART..=MAX_PART).contains(&config.part_size) {
            problems.push(
                "part-size",
                format!(
                    "must be from 5 MiB to 4000 MiB (CDF's part sizes), not {}",
                    extractor_runtime::size::show_size(config.part_size)
                ),
            );
        }
        let t = &config.target;
        let mut field = |key: &str, text: &str| match Field::parse(text) {
            Ok(f) => Some(f),
            Err(e) => {
                problems.push(format!("target.{key}"), e);
                None
            }
        };
        let external_id = field("external-id", t.external_id.as_deref().unwrap_or("{path}"));
        let name = field("name", t.name.as_deref().unwrap_or("{name}"));
        let mime_type = t.mime_type.as_deref().and_then(|m| field("mime-type", m));
        let metadata: Vec<(String, Field)> = t
            .metadata
            .iter()
            .filter_map(|(k, v)| field(&format!("metadata.{k}"), v).map(|f| (k.clone(), f)))
            .collect();
        match (t.kind, &t.space) {
            (TargetKind::CogniteFile, None) => {
                problems.push("target", "`type: cognite-file` needs `space`")
            }
            (TargetKind::Classic, Some(_)) => problems.push(
                "target.space",
                "`space` applies to `type: cognite-file` (a node), not `classic`",
            ),
            _ => {}
        }
        if t.kind == TargetKind::CogniteFile && !t.metadata.is_empty() {
            problems.push(
                "target.metadata",
                "the core data model's CogniteFile has no metadata; use `classic`, or leave it out",
            );
        }
        match (external_id, name) {
            (Some(external_id), Some(name)) if problems.is_empty() => Ok(Files {
                config: Arc::new(config),
                external_id,
                name,
                mime_type,
                metadata,
                client: extractor_runtime::net::ClientCell::new(),
            }),
            _ => Err(problems),
        }
    }

    /// The client for upload URLs: the runtime's CA roots and proxy, no redirects, no CDF
    /// credentials.
    fn client(&self, ctx: &RunContext) -> Result<&reqwest::Client, TaskError> {
        self.client
            .get(ctx.network(), |builder| {
                builder
                    .connect_timeout(Duration::from_secs(30))
                    .read_timeout(Duration::from_secs(300))
                    .redirect(reqwest::redirect::Policy::none())
            })
            .map_err(|e| TaskError::permanent(format!("cannot build an HTTP client: {e}")))
    }

    /// The files to upload, with what the templates read (on a blocking thread), and the
    /// files whose names clash (see [`Listing`](crate::folder::Listing)).
    async fn sources(&self) -> Result<(Vec<Source>, Vec<String>), TaskError> {
        let config = self.config.clone();
        tokio::task::spawn_blocking(move || {
            let listing = crate::folder::files(&config.path, &config.glob, config.min_age.get())?;
            let sources = listing
                .files
                .into_iter()
                .filter_map(|path| {
                    let meta = std::fs::metadata(&path).ok()?;
                    let modified = meta.modified().ok()?;
                    let modified_ms = jiff::Timestamp::try_from(modified).ok()?.as_millisecond();
                    // Names as lossless text: a name that is not UTF-8 has `\xNN` for its
                    // odd bytes (the state key, and what the templates read).
                    let text = |p: &std::ffi::OsStr| path_text(Path::new(p)).into_owned();
                    let relative = path
                        .strip_prefix(&config.path)
                        .unwrap_or(&path)
                        .components()
                        .map(|c| text(c.as_os_str()))
                        .collect::<Vec<_>>()
                        .join("/");
                    let record = json!({
                        "name": text(path.file_name()?),
                        "stem": path.file_stem().map(text),
                        "extension": path.extension().map(text).unwrap_or_default(),
                        "path": relative,
                        "size": meta.len(),
                        "modified": jiff::Timestamp::from_millisecond(modified_ms).ok()?.to_string(),
                    });
                    Some(Source {
                        path,
                        relative,
                        size: meta.len(),
                        modified_ms,
                        record,
                    })
                })
                .collect();
            Ok((sources, listing.clashes))
        })
        .await
        .map_err(|e| TaskError::transient(format!("listing the files failed: {e}")))?
    }

    /// The target's fields for `file`: external id, name, MIME type.
    fn describe(&self, file: &Source) -> Result<(String, String, Option<String>), String> {
        let render = |f: &Field, key: &str| {
            f.render(&file.record)
                .map_err(|e| format!("target.{key}: `{e}` is not a file field (name, stem, extension, path, size, modified)"))
        };
        let external_id = render(&self.external_id, "external-id")?;
        let name = render(&self.name, "name")?;
        let mime = match &self.mime_type {
            Some(f) => Some(render(f, "mime-type")?),
            None => guess_mime(&file.path).map(str::to_owned),
        };
        Ok((external_id, name, mime))
    }

    /// Asks CDF for the file and where its content goes.
    async fn link(
        &self,
        cdf: &CdfClient,
        file: &Source,
        parts: u64,
        (external_id, name, mime): &(String, String, Option<String>),
    ) -> Result<Option<Link>, Failure> {
        let multi = parts > 1;
        let answer = match self.config.target.kind {
            TargetKind::Classic => {
                // `cognite.external-id-prefix`, `data-set` and `security-categories`.
                let defaults = cdf.defaults();
                let mut body = json!({"externalId": defaults.prefixed(external_id), "name": name});
                if let Some(m) = &mime {
                    body["mimeType"] = json!(m);
                }
                if let Some(id) = defaults.data_set_id {
                    body["dataSetId"] = json!(id);
                }
                if !defaults.security_categories.is_empty() {
                    body["securityCategories"] = json!(defaults.security_categories);
                }
                if !self.metadata.is_empty() {
                    let mut metadata = serde_json::Map::new();
                    for (k, f) in &self.metadata {
                        let v = f.render(&file.record).map_err(|e| {
                            TaskError::permanent(format!(
                                "target.metadata.{k}: `{e}` is not a file field"
                            ))
                        })?;
                        metadata.insert(k.clone(), json!(v));
                    }
                    body["metadata"] = Value::Object(metadata);
                }
                if multi {
                    cdf.post(
                        "/files/initmultipartupload",
                        &format!("/files/initmultipartupload?overwrite=true&parts={parts}"),
                        &body,
                    )
                    .await
                    .map_err(Failure::cdf)?
                } else {
                    cdf.post("/files", "/files?overwrite=true", &body)
                        .await
                        .map_err(Failure::cdf)?
                }
            }
            TargetKind::CogniteFile => {
                let space = self.config.target.space.as_deref().unwrap_or_default();
                let mut properties = json!({"name": name, "sourceId": file.relative});
                if let Some(m) = &mime {
                    properties["mimeType"] = json!(m);
                }
                let node = json!({"items": [{
                    "instanceType": "node", "space": space, "externalId": external_id,
                    "sources": [{"source": {"type": "view", "space": "cdf_cdm", "externalId": "CogniteFile", "version": "v1"},
                                 "properties": properties}]
                }]});
                cdf.post("/models/instances", "/models/instances", &node)
                    .await
                    .map_err(Failure::cdf)?;
                let ids =
                    json!({"items": [{"instanceId": {"space": space, "externalId": external_id}}]});
                let answer = if multi {
                    cdf.post(
                        "/files/multiuploadlink",
                        &format!("/files/multiuploadlink?parts={parts}"),
                        &ids,
                    )
                    .await
                    .map_err(Failure::cdf)?
                } else {
                    cdf.post("/files/uploadlink", "/files/uploadlink", &ids)
                        .await
                        .map_err(Failure::cdf)?
                };
                match answer {
                    Value::Null => Value::Null,
                    mut a => {
                        let mut item = a["items"][0].take();
                        item["instanceId"] = json!({"space": space, "externalId": external_id});
                        item
                    }
                }
            }
        };
        if answer.is_null() {
            return Ok(None); // dry-run: nothing is uploaded
        }
        let bad = |what: &str| {
            TaskError::transient(format!(
                "CDF's answer for `{}` has no {what}",
                file.relative
            ))
        };
        if multi {
            let urls: Vec<String> = answer["uploadUrls"]
                .as_array()
                .ok_or_else(|| bad("`uploadUrls`"))?
                .iter()
                .filter_map(|u| u.as_str().map(str::to_owned))
                .collect();
            if urls.len() as u64 != parts {
                return Err(bad(&format!("{parts} upload URLs (it has {})", urls.len())).into());
            }
            let upload_id = answer["uploadId"]
                .as_str()
                .ok_or_else(|| bad("`uploadId`"))?
                .to_owned();
            let file_ref = match answer.get("instanceId") {
                Some(id) => json!({"instanceId": id}),
                None => json!({"id": answer["id"].as_i64().ok_or_else(|| bad("`id`"))?}),
            };
            Ok(Some(Link::Multi {
                file: file_ref,
                upload_id,
                urls,
                next: 0,
            }))
        } else {
            let url = answer["uploadUrl"]
                .as_str()
                .ok_or_else(|| bad("`uploadUrl`"))?
                .to_owned();
            Ok(Some(Link::Single(url)))
        }
    }

    /// Reads `len` bytes at `offset` of `file`: one part in memory, never the whole file.
    async fn read_part(path: &Path, offset: u64, len: u64) -> Result<Vec<u8>, TaskError> {
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || {
            use std::io::{Read as _, Seek as _};
            let io = |e: std::io::Error| TaskError::transient(format!("`{}`: {e}", Shown(&path)));
            let mut f = std::fs::File::open(&path).map_err(io)?;
            f.seek(std::io::SeekFrom::Start(offset)).map_err(io)?;
            let mut buf = vec![0u8; len as usize];
            f.read_exact(&mut buf).map_err(io)?;
            Ok(buf)
        })
        .await
        .map_err(|e| TaskError::transient(format!("reading a file failed: {e}")))?
    }

    /// PUTs `bytes` to an upload URL, retrying 408/429/5xx and connection failures.
    /// The `Content-Type` is the file's MIME type (signed upload URLs may be bound to the type
    /// the file was created with), else `application/octet-stream`.
    async fn put(
        &self,
        ctx: &RunContext,
        url: &str,
        bytes: Vec<u8>,
        mime: Option<&str>,
        single: bool,
    ) -> Result<(), Failure> {
        let client = self.client(ctx).map_err(Failure::Run)?;
        let shown = url.split('?').next().unwrap_or(url).to_owned();
        let bytes = bytes::Bytes::from(bytes);
        let mut delays = PUT_RETRY.backoff();
        loop {
            let mut request = client
                .put(url)
                .header(
                    reqwest::header::CONTENT_TYPE,
                    mime.unwrap_or("application/octet-stream"),
                )
                .body(bytes.clone());
            if single && url.contains(".blob.core.windows.net") {
                // Azure's single-shot upload needs it; harmless elsewhere, but sent only there.
                request = request.header("x-ms-blob-type", "BlockBlob");
            }
            let (last, retry_after) = tokio::select! {
                r = request.send() => match r {
                    Ok(r) if r.status().is_success() => return Ok(()),
                    Ok(r) if retry::retryable_status(r.status().as_u16(), false).is_some() => {
                        (format!("HTTP {}", r.status()), retry::retry_after(r.headers()))
                    }
                    Ok(r) => {
                        return Err(TaskError::permanent(format!(
                            "the upload URL {shown} answered HTTP {}",
                            r.status()
                        ))
                        .into());
                    }
                    Err(e) => (extractor_runtime::net::explain(e), None),
                },
                () = ctx.cancellation_token().cancelled() => {
                    return Err(Failure::Run(TaskError::transient("cancelled during an upload (it resumes at the next run)")));
                }
            };
            match delays.next_delay(retry_after) {
                Some(d) => tokio::time::sleep(d).await,
                None => {
                    return Err(TaskError::transient(format!(
                        "uploading to {shown} failed {PUT_ATTEMPTS} times: {last}"
                    ))
                    .into());
                }
            }
        }
    }

    /// Uploads one file; `resumed` is an upload in progress from an earlier run.
    async fn upload(
        &self,
        ctx: &RunContext,
        file: &Source,
        resumed: Option<Link>,
    ) -> Result<(), Failure> {
        let cdf = ctx.cdf();
        let part = self.config.part_size;
        let parts = file.size.div_ceil(part).max(1);
        if parts > MAX_PARTS {
            return Err(TaskError::permanent(format!(
                "`{}` is {}: more than {MAX_PARTS} parts of {}; raise part-size",
                file.relative,
                extractor_runtime::size::show_size(file.size),
                extractor_runtime::size::show_size(part)
            ))
            .into());
        }
        let described = self.describe(file).map_err(TaskError::permanent)?;
        let mime = described.2.clone();
        let link = match resumed {
            Some(link) => link,
            None => match self.link(cdf, file, parts, &described).await? {
                Some(link) => link,
                None => {
                    tracing::info!(task = %ctx.task(), file = %file.relative, bytes = file.size, "dry-run: the file's content is not sent");
                    return Ok(());
                }
            },
        };
        match link {
            Link::Single(url) => {
                let bytes = Self::read_part(&file.path, 0, file.size).await?;
                self.put(ctx, &url, bytes, mime.as_deref(), true).await?;
                Ok(Self::unchanged_since_listed(file)?)
            }
            Link::Multi {
                file: id,
                upload_id,
                urls,
                next,
            } => {
                for (i, url) in urls.iter().enumerate().skip(next) {
                    let offset = i as u64 * part;
                    let len = part.min(file.size - offset);
                    let bytes = Self::read_part(&file.path, offset, len).await?;
                    self.put(ctx, url, bytes, mime.as_deref(), false).await?;
                    // Durable before the next part: a restart goes on from here.
                    self.save_progress(ctx, file, &id, &upload_id, &urls, i + 1)
                        .await
                        .map_err(Failure::Run)?;
                }
                // Parts of two versions must not be joined into one file.
                Self::unchanged_since_listed(file)?;
                let mut done = id.clone();
                done["uploadId"] = json!(upload_id);
                cdf.post(
                    "/files/completemultipartupload",
                    "/files/completemultipartupload",
                    &done,
                )
                .await
                .map_err(Failure::cdf)?;
                Ok(())
            }
        }
    }

    /// An error when `file` changed while it was being uploaded: it is not marked done, and
    /// the next run uploads it again from the start (its size or time no longer match).
    fn unchanged_since_listed(file: &Source) -> Result<(), TaskError> {
        let now = std::fs::metadata(&file.path).ok().and_then(|m| {
            let ms = jiff::Timestamp::try_from(m.modified().ok()?)
                .ok()?
                .as_millisecond();
            Some((m.len(), ms))
        });
        if now == Some((file.size, file.modified_ms)) {
            Ok(())
        } else {
            Err(TaskError::transient(format!(
                "`{}` changed while it was being uploaded; it is uploaded again at the next run (raise min-age if it is still being written)",
                file.relative
            )))
        }
    }

    async fn save_progress(
        &self,
        ctx: &RunContext,
        file: &Source,
        id: &Value,
        upload_id: &str,
        urls: &[String],
        next: usize,
    ) -> Result<(), TaskError> {
        ctx.upload().checkpoint(
            &file.relative,
            &json!({"size": file.size, "modified": file.modified_ms,
                   "upload": {"file": id, "uploadId": upload_id, "urls": urls, "next": next}}),
        );
        ctx.upload().save_state().await
    }
}

/// The upload in progress that `state` describes, if it is for this very file.
fn resumable(state: &Value, file: &Source) -> Option<Link> {
    if state["size"].as_u64() != Some(file.size)
        || state["modified"].as_i64() != Some(file.modified_ms)
    {
        return None;
    }
    let u = state.get("upload")?;
    Some(Link::Multi {
        file: u["file"].clone(),
        upload_id: u["uploadId"].as_str()?.to_owned(),
        urls: u["urls"]
            .as_array()?
            .iter()
            .filter_map(|x| x.as_str().map(str::to_owned))
            .collect(),
        next: usize::try_from(u["next"].as_u64()?).ok()?,
    })
}

/// Why a file was not uploaded.
enum Failure {
    /// This file's own problem (its upload URL failed, it changed or went away, CDF refused
    /// it, CDF's answer for it is short): the run goes on with the other files.
    File(TaskError),
    /// The run cannot go on (CDF cannot be reached, the state cannot be saved, cancelled).
    Run(TaskError),
}

impl Failure {
    /// A failed CDF request: a transient one concerns every file (CDF is down), a permanent
    /// one this file (CDF refused it).
    fn cdf(e: extractor_runtime::CdfError) -> Failure {
        let e = TaskError::from(e);
        if e.is_transient() {
            Failure::Run(e)
        } else {
            Failure::File(e)
        }
    }
}

impl From<TaskError> for Failure {
    fn from(e: TaskError) -> Self {
        Failure::File(e)
    }
}

/// The MIME type of common extensions.
fn guess_mime(path: &Path) -> Option<&'static str> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    Some(match ext.as_str() {
        "pdf" => "application/pdf",
        "csv" => "text/csv",
        "txt" | "log" => "text/plain",
        "json" => "application/json",
        "xml" => "application/xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "zip" => "application/zip",
        _ => return None,
    })
}

impl Extractor for Files {
    async fn run(&self, ctx: RunContext) -> Result<(), TaskError> {
        let upload = ctx.upload();
        let (sources, clashes) = self.sources().await?;
        let (mut sent, mut bytes) = (0, 0u64);
        // One file's failure never stops the others: each is named at the end.
        let (mut failed, mut transient) = (clashes, false);
        for file in &sources {
            let state = upload
                .resume::<Value>(&file.relative)?
                .unwrap_or(Value::Null);
            let unchanged = state["size"].as_u64() == Some(file.size)
                && state["modified"].as_i64() == Some(file.modified_ms)
                && state["done"] == json!(true);
            if !unchanged {
                let resumed = resumable(&state, file);
                if resumed.is_some() {
                    tracing::info!(task = %ctx.task(), file = %file.relative, "resuming the upload");
                }
                match self.upload(&ctx, file, resumed).await {
                    Ok(()) => {
                        upload.checkpoint(
                            &file.relative,
                            &json!({"size": file.size, "modified": file.modified_ms, "done": true}),
                        );
                        tracing::info!(task = %ctx.task(), file = %file.relative, bytes = file.size, "file uploaded");
                        sent += 1;
                        bytes += file.size;
                        ctx.records_queued(1);
                    }
                    Err(Failure::Run(e)) => return Err(e),
                    // This file only: the others go on; it is tried again next run.
                    Err(Failure::File(e)) => {
                        tracing::error!(task = %ctx.task(), file = %file.relative, "not uploaded: {e}");
                        // An upload CDF or its storage refused (expired part URLs, say) is
                        // not resumed: the next run starts the file again. One that failed
                        // for a while (its upload URL answered 5xx) goes on from its parts.
                        if !e.is_transient() && state.get("upload").is_some() {
                            upload.checkpoint(
                                &file.relative,
                                &json!({"size": file.size, "modified": file.modified_ms}),
                            );
                        }
                        ctx.records_rejected(1);
                        transient |= e.is_transient();
                        failed.push(format!("{}: {e}", file.relative));
                        continue;
                    }
                }
            }
            let (root, done, path) = (
                self.config.path.clone(),
                self.config.done_folder.clone(),
                file.path.clone(),
            );
            if done.is_some() {
                upload.save_state().await?;
                let moved = tokio::task::spawn_blocking(move || {
                    crate::folder::move_done(&root, done.as_deref(), &path)
                })
                .await
                .map_err(|e| TaskError::transient(format!("moving a file failed: {e}")))?;
                if let Err((p, e)) = moved {
                    let e = format!(
                        "{}: cannot move it to the done folder: `{}`: {e}",
                        file.relative,
                        Shown(&p)
                    );
                    tracing::error!(task = %ctx.task(), "{e}");
                    transient = true;
                    failed.push(e);
                }
            }
        }
        tracing::info!(task = %ctx.task(), files = sources.len(), uploaded = sent, bytes, failed = failed.len(), "files done");
        if failed.is_empty() {
            return Ok(());
        }
        let message = format!(
            "{} file(s) not uploaded: {}",
            failed.len(),
            failed.join("; ")
        );
        // A file that may go through when tried again (its upload URL failed for a while, it
        // changed) makes the run's error transient, so the task's retries apply.
        Err(if transient {
            TaskError::transient(message)
        } else {
            TaskError::permanent(message)
        })
    }
}
