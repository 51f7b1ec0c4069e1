//! [`CdfClient`]: authenticated, retried requests to the CDF API, or NDJSON lines in dry-run.
//!
//! Every attempt carries the shared token manager's current token, so a retry after a refresh
//! uses the new one. Retried: 408, 429, 5xx, answers with `cdf-is-auto-retryable: true`,
//! connection errors and timeouts, with exponential backoff and full jitter up to
//! `cognite.connection.max-retry-backoff`, `Retry-After` honoured. A 401 gets one forced token
//! refresh and one more try, then fails: never a loop.

mod defaults;
mod error;
pub mod extpipes;
pub mod gzip;
pub mod raw;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};


pub use defaults::{Defaults, EitherId, data_set_id, pipeline_external_id};
pub use error::{CdfError, CdfErrorKind, ClientError};

use crate::auth::TokenManager;
use crate::internal_events::{CdfRequestCompleted, CdfRequestRetried};
use crate::config::{CogniteConfig, ConnectionConfig};

/// The content type of JSON bodies.
pub(crate) const JSON: &str = "application/json";
/// The content type of protocol buffer bodies (datapoint inserts).
pub(crate) const PROTOBUF: &str = "application/protobuf";
/// The longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);
/// The largest CDF answer read (a page of 1 000 items is well under it): a larger one, from a
/// misbehaving gateway or proxy, is an error, never held in memory.
pub const MAX_ANSWER_BYTES: u64 = 8 * 1024 * 1024;
/// The largest error answer read: its `missing` and `duplicated` lists name at most the
/// request's items.
const MAX_ERROR_BYTES: u64 = 2 * 1024 * 1024;

/// What a request needs of a successful answer.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// The JSON answer (at most [`MAX_ANSWER_BYTES`]).
    Json,
    /// Nothing (the upload queues): the answer is read and dropped chunk by chunk, so the
    /// connection is kept, and never held whole.
    Ignored,
}

/// Where dry-run writes the requests it does not send: one JSON object per line,
/// `{"endpoint": ..., "path": ..., "body": ...}`.
pub struct DryRunSink(Mutex<Box<dyn Write + Send>>);

impl DryRunSink {
    /// Lines go to standard output.
    pub fn stdout() -> Self {
        DryRunSink(Mutex::new(Box::new(std::io::stdout())))
    }

    /// Lines go to `writer` (a file, or a buffer in tests).
    pub fn to_writer(writer: impl Write + Send + 'static) -> Self {
        DryRunSink(Mutex::new(Box::new(writer)))
    }

    /// `body` is JSON text, written as it is.
    fn write(&self, endpoint: &str, path: &str, body: &[u8]) -> std::io::Result<()> {
        let mut line = Vec::with_capacity(body.len() + endpoint.len() + path.len() + 40);
        line.extend_from_slice(b"{\"endpoint\":");
        serde_json::to_writer(&mut line, endpoint)?;
        line.extend_from_slice(b",\"path\":");
        serde_json::to_writer(&mut line, path)?;
        line.extend_from_slice(b",\"body\":");
        line.extend_from_slice(body);
        line.extend_from_slice(b"}\n");
        let mut w = self.0.lock().expect("dry-run sink lock");
        w.write_all(&line)?;
        w.flush()
    }
}

/// `x-cdp-sdk`: this library and its version.
const SDK_HEADER: &str = concat!("extractor-runtime:", env!("CARGO_PKG_VERSION"));

struct Inner {
    http: reqwest::Client,
    /// What `http` goes through (its proxy is named when it refuses a request).
    network: crate::net::Network,
    base: String,
    tokens: Option<TokenManager>,
    dry_run: Option<Arc<DryRunSink>>,
    connection: ConnectionConfig,
    metrics: crate::metrics::CdfMetrics,
    /// What created items get; a data set named by external id is resolved by
    /// [`CdfClient::resolve_defaults`].
    defaults: arc_swap::ArcSwap<Defaults>,
}

impl Inner {
    fn new(
        config: &CogniteConfig,
        tokens: Option<TokenManager>,
        dry_run: Option<Arc<DryRunSink>>,
        metrics: crate::metrics::CdfMetrics,
    ) -> Result<Inner, ClientError> {
        let network = config.connection.network()?;
        let mut builder = network.client_builder().timeout(network.timeout());
        if let Some(pool) = config.connection.max_connection_pool_size {
            builder = builder.pool_max_idle_per_host(pool);
        }
        let http = builder.build().map_err(ClientError::Http)?;
        if dry_run.is_none() && tokens.is_none() {
            return Err(ClientError::NoTokens);
        }
        Ok(Inner {
            http,
            network,
            base: format!(
                "{}/api/v1/projects/{}",
                config.host.trim_end_matches('/'),
                config.project
            ),
            tokens,
            dry_run,
            connection: config.connection.clone(),
            metrics,
            defaults: arc_swap::ArcSwap::from_pointee(Defaults::of(config)),
        })
    }
}

/// The process's CDF client. Cheap to clone; every clone follows the runtime's swap to new
/// credentials (a reload that changed `cognite:`).
#[derive(Clone)]
pub struct CdfClient {
    inner: Arc<arc_swap::ArcSwap<Inner>>,
}

impl std::fmt::Debug for CdfClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.inner.load();
        f.debug_struct("CdfClient")
            .field("base", &inner.base)
            .field("dry_run", &inner.dry_run.is_some())
            .finish()
    }
}

impl CdfClient {
    testing_pub! {
        /// A client for `config`'s project. With `dry_run` set, nothing is sent and no token is
        /// used: each request becomes a line in the sink.
        fn new(
            config: &CogniteConfig,
            tokens: Option<TokenManager>,
            dry_run: Option<DryRunSink>,
            registry: &prometheus::Registry,
        ) -> Result<Self, ClientError> {
            if dry_run.is_none() && tokens.is_none() {
                return Err(ClientError::NoTokens);
            }
            let metrics = crate::metrics::CdfMetrics::register(registry)?;
            Ok(CdfClient::of(Inner::new(config, tokens, dry_run.map(Arc::new), metrics)?))
        }
    }

    fn of(inner: Inner) -> CdfClient {
        CdfClient {
            inner: Arc::new(arc_swap::ArcSwap::from_pointee(inner)),
        }
    }

    /// A client for a changed `cognite:` section with new `tokens`, sharing this one's metrics
    /// and dry-run sink; it becomes live for every clone of `self` only at `replace_with`.
    pub(crate) fn rebuilt(
        &self,
        config: &CogniteConfig,
        tokens: Option<TokenManager>,
    ) -> Result<CdfClient, ClientError> {
        let now = self.inner.load();
        Ok(CdfClient::of(Inner::new(
            config,
            tokens,
            now.dry_run.clone(),
            now.metrics.clone(),
        )?))
    }

    /// Makes every clone of `self` send as `other` does from now on (requests in flight finish
    /// as they started).
    pub(crate) fn replace_with(&self, other: &CdfClient) {
        self.inner.store(other.inner.load_full());
    }

    /// A dry-run client whose lines go nowhere: what runs get from a scheduler built without a
    /// CDF client (tests, benches).
    pub(crate) fn discarding() -> Self {
        CdfClient::of(Inner {
            http: reqwest::Client::new(),
            network: crate::net::Network::default(),
            base: "http://127.0.0.1:9/api/v1/projects/none".to_owned(),
            tokens: None,
            dry_run: Some(Arc::new(DryRunSink::to_writer(std::io::sink()))),
            connection: crate::config::ConnectionConfig::default(),
            metrics: crate::metrics::CdfMetrics::register(&prometheus::Registry::new())
                .expect("fresh metrics register"),
            defaults: Default::default(),
        })
    }

    /// What the runtime puts on what it creates in CDF (`cognite.data-set`,
    /// `external-id-prefix`, `security-categories`): see [`Defaults`].
    pub fn defaults(&self) -> Arc<Defaults> {
        self.inner.load().defaults.load_full()
    }

    /// Looks up the internal id of `cognite.data-set` when it is named by external id (one
    /// request), so that [`defaults`](Self::defaults) carries it. Nothing is sent in dry-run
    /// (the data set is then left out, with a warning).
    pub(crate) async fn resolve_defaults(&self, config: &CogniteConfig) -> Result<(), CdfError> {
        let Some(EitherId::ExternalId(external_id)) = config.data_set() else {
            return Ok(());
        };
        if self.is_dry_run() {
            tracing::warn!(data_set = %external_id, "dry-run: the data set named by external id is not looked up, so nothing written carries it");
            return Ok(());
        }
        let id = data_set_id(self, &EitherId::ExternalId(external_id.clone())).await?;
        let inner = self.inner.load();
        let mut defaults = Defaults::clone(&inner.defaults.load());
        defaults.data_set_id = Some(id);
        inner.defaults.store(Arc::new(defaults));
        tracing::info!(data_set = %external_id, id, "data set resolved");
        Ok(())
    }

    /// Whether requests are written to the dry-run sink instead of sent.
    pub fn is_dry_run(&self) -> bool {
        self.inner.load().dry_run.is_some()
    }

    /// POSTs `body` to `path` (relative to `/api/v1/projects/{project}`, with any query string)
    /// and returns CDF's JSON answer (`null` for an empty one). `endpoint` is the path's
    /// template (`/raw/dbs/{db}/tables/{table}/rows`), used as the metrics label.
    ///
    /// # Cancel safety
    ///
    /// Cancelling drops the request in flight; CDF may or may not have applied it.
    pub async fn post(
        &self,
        endpoint: &'static str,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, CdfError> {
        let body = serde_json::to_vec(body).expect("a JSON value serializes");
        self.post_body(endpoint, path, body.into()).await
    }

    testing_pub! {
        /// POSTs `body`, JSON text already serialized (as the upload queues build it), with the
        /// retries of [`post`](Self::post).
        ///
        /// # Cancel safety
        ///
        /// Cancelling drops the request in flight; CDF may or may not have applied it.
        async fn post_body(
            &self,
            endpoint: &'static str,
            path: &str,
            body: bytes::Bytes,
        ) -> Result<serde_json::Value, CdfError> {
            self.post_as(endpoint, path, (body, JSON), Answer::Json).await
        }
    }

    /// POSTs items already serialized (the upload queues): as [`post_body`](Self::post_body),
    /// but the answer is not kept (only whether CDF accepted them matters).
    pub(crate) async fn post_items(
        &self,
        endpoint: &'static str,
        path: &str,
        body: bytes::Bytes,
    ) -> Result<(), CdfError> {
        self.post_items_as(endpoint, path, body, JSON).await
    }

    /// [`post_items`](Self::post_items) of a body of `content_type` ([`JSON`], or
    /// [`PROTOBUF`] when [`sends_protobuf`](Self::sends_protobuf)).
    pub(crate) async fn post_items_as(
        &self,
        endpoint: &'static str,
        path: &str,
        body: bytes::Bytes,
        content_type: &'static str,
    ) -> Result<(), CdfError> {
        self.post_as(endpoint, path, (body, content_type), Answer::Ignored)
            .await
            .map(|_| ())
    }

    /// Whether datapoints go as protocol buffers (`cognite.connection.protobuf-datapoints`,
    /// and not a dry run, whose lines are JSON).
    pub(crate) fn sends_protobuf(&self) -> bool {
        let inner = self.inner.load();
        inner.connection.protobuf_datapoints && inner.dry_run.is_none()
    }

    /// A POST of a body and its content type, or its dry-run line (always JSON: a client that
    /// writes one never [`sends_protobuf`](Self::sends_protobuf)), with what is needed of the
    /// answer.
    async fn post_as(
        &self,
        endpoint: &'static str,
        path: &str,
        (body, content_type): (bytes::Bytes, &'static str),
        answer: Answer,
    ) -> Result<serde_json::Value, CdfError> {
        if let Some(sink) = &self.inner.load().dry_run {
            sink.write(endpoint, path, &body).map_err(|e| {
                CdfError::new(
                    CdfErrorKind::BadResponse,
                    endpoint,
                    format!("cannot write the dry-run line: {e}"),
                )
            })?;
            return Ok(serde_json::Value::Null);
        }
        self.send(
            reqwest::Method::POST,
            endpoint,
            path,
            Some((body, content_type)),
            answer,
        )
        .await
    }

    /// GETs `path` and returns CDF's JSON answer, with the same retries as [`post`](Self::post).
    /// In dry-run nothing is sent and the answer is `null`.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe.
    pub async fn get(
        &self,
        endpoint: &'static str,
        path: &str,
    ) -> Result<serde_json::Value, CdfError> {
        if self.inner.load().dry_run.is_some() {
            return Ok(serde_json::Value::Null);
        }
        self.send(reqwest::Method::GET, endpoint, path, None, Answer::Json)
            .await
    }

    async fn send(
        &self,
        method: reqwest::Method,
        endpoint: &'static str,
        path: &str,
        body: Option<(bytes::Bytes, &'static str)>,
        answer: Answer,
    ) -> Result<serde_json::Value, CdfError> {
        let inner = &*self.inner.load_full();
        let tokens = inner.tokens.as_ref().expect("checked in new()");
        let url = format!("{}{path}", inner.base);
        let mut delays = crate::retry::RetryPolicy::new(
            Duration::from_millis(500),
            inner.connection.max_retry_backoff.get(),
        )
        .with_max_retries(inner.connection.max_retries as usize)
        .with_max_retry_after(MAX_RETRY_AFTER)
        .backoff();
        let mut refreshed = false;
        let mut retries = 0;
        // Retries of requests that got no answer, when `max-retries-connect` counts them apart.
        let mut connect_retries = 0;
        let mut token = tokens.get().await.map_err(|e| auth_error(endpoint, e))?;
        // Compressed once: every retry sends the same bytes.
        let body = body.map(|(b, content_type)| {
            let (b, encoding) = gzip::encode(b, inner.connection.disable_gzip);
            (b, content_type, encoding)
        });
        loop {
            let started = Instant::now();
            let mut request = inner
                .http
                .request(method.clone(), &url)
                .bearer_auth(token.access_token().expose_secret())
                // How CDF tells clients apart in its request logs (as Cognite's SDKs do).
                .header("x-cdp-sdk", SDK_HEADER)
                .header("x-cdp-app", "extractor-runtime");
            if let Some((body, content_type, encoding)) = &body {
                request = request
                    .header(reqwest::header::CONTENT_TYPE, *content_type)
                    .body(body.clone());
                if let Some(encoding) = encoding {
                    request = request.header(reqwest::header::CONTENT_ENCODING, *encoding);
                }
            }
            let result = request.send().await;
            CdfRequestCompleted {
                metrics: &inner.metrics,
                endpoint,
                status: result.as_ref().ok().map(|r| r.status().as_u16()),
                took: started.elapsed(),
            }
            .emit();
            let (reason, retry_after, last) = match result {
                Err(e) => {
                    // A request that got no answer is tried again, as CDF's SDKs do, unless it
                    // can never succeed (a refused redirect).
                    let Some(reason) = crate::retry::retryable_error(&e) else {
                        return Err(CdfError::new(
                            CdfErrorKind::Rejected,
                            endpoint,
                            inner.network.explain(e),
                        ));
                    };
                    if let Some(max) = inner.connection.max_retries_connect {
                        if connect_retries >= max {
                            return Err(CdfError::new(
                                CdfErrorKind::RetriesExhausted,
                                endpoint,
                                inner.network.explain(e),
                            ));
                        }
                        connect_retries += 1;
                    }
                    (
                        reason,
                        None,
                        CdfError::new(
                            CdfErrorKind::RetriesExhausted,
                            endpoint,
                            inner.network.explain(e),
                        ),
                    )
                }
                Ok(response) => {
                    let status = response.status().as_u16();
                    let headers = response.headers().clone();
                    let request_id = headers
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    if response.status().is_success() {
                        if answer == Answer::Ignored {
                            drain(response).await;
                            return Ok(serde_json::Value::Null);
                        }
                        let bytes = crate::net::read_capped(response, MAX_ANSWER_BYTES)
                            .await
                            .map_err(|e| {
                                let mut err =
                                    CdfError::new(CdfErrorKind::BadResponse, endpoint, e.to_string());
                                err.0.status = Some(status);
                                err.0.request_id = request_id.clone();
                                err
                            })?;
                        if bytes.is_empty() {
                            return Ok(serde_json::Value::Null);
                        }
                        return serde_json::from_slice(&bytes).map_err(|e| {
                            let mut err = CdfError::new(
                                CdfErrorKind::BadResponse,
                                endpoint,
                                format!("the answer is not JSON: {e}"),
                            );
                            err.0.status = Some(status);
                            err.0.request_id = request_id;
                            err
                        });
                    }
                    let auto = headers
                        .get("cdf-is-auto-retryable")
                        .and_then(|v| v.to_str().ok())
                        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
                    let retry_after = crate::retry::retry_after(&headers);
                    let text = match crate::net::read_capped(response, MAX_ERROR_BYTES).await {
                        Ok(body) => String::from_utf8_lossy(&body).into_owned(),
                        Err(e) => format!("HTTP {status}; {e}"),
                    };
                    let answer = serde_json::from_str::<serde_json::Value>(&text).ok();
                    let message = match answer
                        .as_ref()
                        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
                    {
                        Some(message) => message,
                        None if status == 407 => inner.network.proxy_refused(),
                        None => text.chars().take(300).collect(),
                    };
                    let retryable = retryable(&inner.connection, status, auto);
                    let kind = if retryable.is_some() {
                        CdfErrorKind::RetriesExhausted
                    } else {
                        CdfErrorKind::Rejected
                    };
                    let mut err = CdfError::new(kind, endpoint, message);
                    err.0.status = Some(status);
                    err.0.request_id = request_id;
                    if let Some(mut answer) = answer {
                        let mut list = |name: &str| match answer["error"][name].take() {
                            serde_json::Value::Array(items) => items,
                            _ => Vec::new(),
                        };
                        err.0.missing = list("missing");
                        err.0.duplicated = list("duplicated");
                    }
                    if status == 401 && !refreshed {
                        // One forced refresh and one more try; a second 401 is final.
                        refreshed = true;
                        CdfRequestRetried {
                            metrics: &inner.metrics,
                            endpoint,
                            reason: "401",
                            retry: None,
                            error: &err,
                        }
                        .emit();
                        token = tokens
                            .force_refresh(&token)
                            .await
                            .map_err(|e| auth_error(endpoint, e))?;
                        continue;
                    }
                    match retryable {
                        Some(reason) => (reason, retry_after, err),
                        None => return Err(err),
                    }
                }
            };
            let Some(delay) = delays.next_delay(retry_after) else {
                return Err(last);
            };
            retries += 1;
            CdfRequestRetried {
                metrics: &inner.metrics,
                endpoint,
                reason,
                retry: Some((retries, delay)),
                error: &last,
            }
            .emit();
            tokio::time::sleep(delay).await;
            // The token may have been refreshed in the meantime.
            token = tokens.get().await.map_err(|e| auth_error(endpoint, e))?;
        }
    }
}

/// Whether a CDF answer with `status` is tried again: a status of `connection.status-forcelist`
/// when one is given, else 408, 429 and 5xx; and any answer CDF marks auto-retryable.
fn retryable(connection: &ConnectionConfig, status: u16, auto: bool) -> Option<&'static str> {
    match &connection.status_forcelist {
        None => crate::retry::retryable_status(status, auto),
        Some(list) if list.contains(&status) => {
            Some(crate::retry::retryable_status(status, false).unwrap_or("forcelist"))
        }
        Some(_) => auto.then_some("auto_retryable"),
    }
}

/// Reads an answer that is not needed and drops it chunk by chunk (so the connection can be
/// used again), up to [`MAX_ANSWER_BYTES`]; past that the connection is closed instead.
async fn drain(mut response: reqwest::Response) {
    let mut read = 0u64;
    while let Ok(Some(chunk)) = response.chunk().await {
        read += chunk.len() as u64;
        if read > MAX_ANSWER_BYTES {
            tracing::warn!(target: "extractor_runtime::cdf", url = %response.url().path(), "CDF's answer is larger than {} MiB; not read further", MAX_ANSWER_BYTES >> 20);
            return;
        }
    }
}

fn auth_error(endpoint: &'static str, e: crate::auth::AuthError) -> CdfError {
    let mut err = CdfError::new(CdfErrorKind::Auth, endpoint, "no access token");
    err.0.auth = Some(e);
    err
}
