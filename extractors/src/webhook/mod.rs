//! The `webhook` extractor (`schedule: {type: continuous}`): an HTTP listener that takes
//! records POSTed as one JSON object, an array of objects, or NDJSON (one object a line), maps
//! them with the shared `destination:` block and answers `200` only once every record of the
//! request is accepted by the upload queue: on disk, with `upload-queue.buffer: {type: disk}`.
//!
//! Answers: `401` without the right `Authorization: Bearer <token>` (compared in constant
//! time), `404` another path, `405` another method, `413` a body over `max-body-size`, `400`
//! malformed JSON naming its line and column, `422` a record the destination cannot map
//! (naming it; nothing of that request is queued), `503` with `Retry-After` while the buffer
//! refuses items (full, with `when-full: drop-newest`). A sender retries what did not get a
//! `200`; a retried request may be delivered twice (at least once).

pub mod config;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use extractor_runtime::upload::Upload;
use extractor_runtime::{CdfErrorKind, Extractor, Rejection, RunContext, TaskError};
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};

pub use config::WebhookConfig;

use crate::destination::{Destination, Item, SendError};

/// The `webhook` extractor.
#[derive(Debug)]
pub struct Webhook {
    config: WebhookConfig,
    destination: Arc<Destination>,
}

impl Webhook {
    /// Checks the config: the address, the path and the destination.
    pub fn new(config: WebhookConfig) -> Result<Self, Rejection> {
        let mut problems = Rejection::new();
        if config.listen.parse::<std::net::SocketAddr>().is_err() {
            problems.push(
                "listen",
                format!("`{}` is not an address like `0.0.0.0:8080`", config.listen),
            );
        }
        if !config.path.starts_with('/') {
            problems.push("path", "must start with `/`");
        }
        if config.token.as_ref().is_some_and(|t| t.is_empty()) {
            problems.push("token", "must not be empty (leave it out for no token)");
        }
        if config.max_body_size == 0 {
            problems.push("max-body-size", "must be more than 0");
        }
        let destination = Destination::new(&config.destination)
            .map_err(|r| problems.extend_under("destination", r))
            .ok();
        match destination {
            Some(destination) if problems.is_empty() => Ok(Webhook {
                config,
                destination: Arc::new(destination),
            }),
            _ => Err(problems),
        }
    }
}

/// What every request of a run shares.
struct Shared {
    config: WebhookConfig,
    destination: Arc<Destination>,
    ctx: RunContext,
    upload: Upload,
}

impl Extractor for Webhook {
    async fn run(&self, ctx: RunContext) -> Result<(), TaskError> {
        let listener = tokio::net::TcpListener::bind(&self.config.listen)
            .await
            .map_err(|e| {
                TaskError::transient(format!("cannot listen on {}: {e}", self.config.listen))
            })?;
        let tls = match &self.config.tls {
            Some(tls) => Some(
                tls.acceptor()
                    .map_err(|e| TaskError::permanent(format!("tls: {e}")))?,
            ),
            None => None,
        };
        tracing::info!(task = %ctx.task(), listen = %self.config.listen, path = %self.config.path, tls = tls.is_some(), "webhook listening");
        let shared = Arc::new(Shared {
            config: self.config.clone(),
            destination: self.destination.clone(),
            upload: self.destination.upload(&ctx),
            ctx: ctx.clone(),
        });
        let connections = tokio_util::task::TaskTracker::new();
        loop {
            let (stream, _) = tokio::select! {
                () = ctx.cancellation_token().cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(task = %ctx.task(), "webhook: cannot accept a connection: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let shared = shared.clone();
            let stop = ctx.cancellation_token().clone();
            let tls = tls.clone();
            connections.spawn(async move {
                match tls {
                    None => serve(stream, shared, stop).await,
                    // The handshake in the connection's own task, bounded: a client that
                    // stalls in it holds up no one.
                    Some(acceptor) => match tokio::time::timeout(
                        HANDSHAKE_TIMEOUT,
                        acceptor.accept(stream),
                    )
                    .await
                    {
                        Ok(Ok(stream)) => serve(stream, shared, stop).await,
                        Ok(Err(e)) => {
                            tracing::debug!(task = %shared.ctx.task(), "webhook: a TLS handshake failed: {e}");
                        }
                        Err(_) => {
                            tracing::debug!(task = %shared.ctx.task(), "webhook: a TLS handshake took longer than 10 s; dropped");
                        }
                    },
                }
            });
        }
        connections.close();
        // Requests in flight get to finish (their senders are told what became of them).
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), connections.wait()).await;
        Ok(())
    }
}

/// Records of one request being queued at once.
const QUEUED_AT_ONCE: usize = 256;

/// How long a client gets for its TLS handshake.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves one connection's requests until it closes, or gracefully once `stop` is cancelled.
async fn serve<S>(stream: S, shared: Arc<Shared>, stop: tokio_util::sync::CancellationToken)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(answer(&shared, req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        () = stop.cancelled() => conn.as_mut().graceful_shutdown(),
    }
}

fn reply(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn error(status: StatusCode, message: impl Into<String>) -> Response<Full<Bytes>> {
    reply(status, json!({"error": message.into()}))
}

/// `a == b` in time that depends on their lengths only.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn answer(shared: &Shared, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    if req.uri().path() != shared.config.path {
        return error(
            StatusCode::NOT_FOUND,
            format!("records go to {}", shared.config.path),
        );
    }
    if req.method() != Method::POST {
        return error(StatusCode::METHOD_NOT_ALLOWED, "POST records here");
    }
    if let Some(token) = &shared.config.token {
        let given = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
            .unwrap_or_default();
        if !same(given, token.expose_secret().as_bytes()) {
            return error(StatusCode::UNAUTHORIZED, "a bearer token is required");
        }
    }
    let max = shared.config.max_body_size;
    let body = match Limited::new(req.into_body(), max as usize).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is larger than max-body-size ({max} bytes)"),
            );
        }
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("cannot read the body: {e}"),
            );
        }
    };
    let records = match records(&body) {
        Ok(r) => r,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    // Every record is mapped before any is queued: a bad one refuses the request whole.
    let mut items: Vec<Item> = Vec::with_capacity(records.len());
    for (i, record) in records.into_iter().enumerate() {
        match shared.destination.map(record) {
            Ok(item) => items.push(item),
            Err(e) => {
                shared.ctx.records_rejected(1);
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("record {}: {e}; nothing of this request was queued", i + 1),
                );
            }
        }
    }
    let n = items.len();
    // Queued concurrently, first polled in order (so queued in order while there is room): a
    // disk buffer syncs them with a few fsyncs instead of one each (one at a time, a 1 000
    // record request took 1 000 fsyncs: 8 500 records/s from four senders).
    use futures_util::StreamExt as _;
    let mut queued = futures_util::stream::iter(items)
        .map(|item| shared.destination.queue(&shared.ctx, &shared.upload, item))
        .buffered(QUEUED_AT_ONCE);
    while let Some(result) = queued.next().await {
        match result {
            Ok(()) => {}
            Err(SendError::Queue(e)) if *e.kind() == CdfErrorKind::Buffer => {
                let mut r = error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("{e}; send again later"),
                );
                r.headers_mut().insert(
                    hyper::header::RETRY_AFTER,
                    hyper::header::HeaderValue::from_static("5"),
                );
                return r;
            }
            Err(e) => {
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("{e}; send again later"),
                );
            }
        }
    }
    reply(StatusCode::OK, json!({"accepted": n}))
}

/// The records of a body: one JSON object, an array of objects, or NDJSON. The error names
/// where the JSON is malformed.
fn records(body: &[u8]) -> Result<Vec<Value>, String> {
    let whole = serde_json::from_slice::<Value>(body);
    let values = match whole {
        Ok(Value::Array(items)) => items,
        Ok(v) => vec![v],
        // More than one value: NDJSON.
        Err(e) if e.to_string().starts_with("trailing characters") => {
            // NDJSON: one value a line.
            let text =
                std::str::from_utf8(body).map_err(|e| format!("the body is not UTF-8: {e}"))?;
            let mut values = Vec::new();
            for (i, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                values.push(serde_json::from_str(line).map_err(|e| {
                    format!(
                        "malformed JSON at line {}, column {}: {e}",
                        i + 1,
                        e.column()
                    )
                })?);
            }
            values
        }
        Err(e) => {
            return Err(format!(
                "malformed JSON at line {}, column {}: {e}",
                e.line(),
                e.column()
            ));
        }
    };
    for (i, v) in values.iter().enumerate() {
        if !v.is_object() {
            return Err(format!("record {} is not a JSON object", i + 1));
        }
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_object_an_array_and_ndjson_are_records() {
        assert_eq!(records(br#"{"a": 1}"#).unwrap(), vec![json!({"a": 1})]);
        assert_eq!(records(br#"[{"a": 1}, {"a": 2}]"#).unwrap().len(), 2);
        assert_eq!(records(b"{\"a\": 1}\n\n{\"a\": 2}\n").unwrap().len(), 2);
        let e = records(b"{\"a\": 1}\n{\"a\": }\n").unwrap_err();
        assert!(e.contains("line 2, column 7"), "{e}");
        let e = records(b"{\"a\": tru}").unwrap_err();
        assert!(e.contains("line 1, column"), "{e}");
        assert_eq!(
            records(b"[1]").unwrap_err(),
            "record 1 is not a JSON object"
        );
    }

    #[test]
    fn tokens_are_compared_whole() {
        assert!(same(b"secret", b"secret"));
        assert!(!same(b"secret", b"secreT"));
        assert!(!same(b"secret", b"secre"));
        assert!(!same(b"", b"x"));
    }
}
