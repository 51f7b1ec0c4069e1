//! The metrics server (hyper 1): `/metrics`, `/healthz`, `/readyz`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::{Health, MetricsRegistry};

/// The `Content-Type` of `/metrics`: the Prometheus text format 0.0.4.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A bound, not yet serving, metrics server.
pub struct MetricsServer {
    listener: TcpListener,
    registry: MetricsRegistry,
    health: Health,
}

impl MetricsServer {
    /// Binds `host:port`. Fails at once (port in use, bad address), before anything else starts.
    pub async fn bind(
        host: &str,
        port: u16,
        registry: MetricsRegistry,
        health: Health,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind((host, port)).await?;
        Ok(MetricsServer {
            listener,
            registry,
            health,
        })
    }

    /// The bound address (the real port when 0 was asked for).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` fires.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe: dropping it stops accepting connections.
    pub async fn serve(self, shutdown: CancellationToken) {
        let open = Connections::default();
        loop {
            let (stream, _) = tokio::select! {
                r = self.listener.accept() => match r {
                    Ok(s) => s,
                    Err(e) => {
                        // Out of file descriptors, say: close the oldest connection and back
                        // off instead of spinning.
                        tracing::warn!(target: "extractor_runtime::metrics", "accept failed: {e}");
                        open.close_oldest();
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                () = shutdown.cancelled() => return,
            };
            // At the limit, the oldest connection (idle, most likely: answers take
            // milliseconds) makes room, so a new scrape or probe is always answered.
            while open.len() >= MAX_CONNECTIONS {
                open.close_oldest();
            }
            let (id, close) = open.add();
            let registry = self.registry.clone();
            let health = self.health.clone();
            let service = service_fn(move |req| {
                let response = respond(&req, &registry, &health);
                async move { Ok::<_, Infallible>(response) }
            });
            let open = open.clone();
            tokio::spawn(async move {
                let mut builder = http1::Builder::new();
                builder
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .max_buf_size(MAX_REQUEST_BUFFER);
                let connection = builder.serve_connection(TokioIo::new(stream), service);
                tokio::select! {
                    _ = connection => {}
                    () = close.cancelled() => {}
                    () = tokio::time::sleep(MAX_CONNECTION_LIFETIME) => {}
                }
                open.remove(id);
            });
        }
    }
}

/// Connections served at once, at most; more close the oldest.
const MAX_CONNECTIONS: usize = 64;
/// A connection that sends no complete request head within this is closed (also between
/// requests of a kept-alive connection).
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection is closed after this long, whatever it does.
const MAX_CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// The largest request head read (a GET with a few headers needs a few hundred bytes).
const MAX_REQUEST_BUFFER: usize = 16 * 1024;

/// The last id given, and the open connections, oldest first, each with the token that closes
/// it.
type Open = (u64, VecDeque<(u64, CancellationToken)>);

/// The open connections.
#[derive(Clone, Default)]
struct Connections {
    inner: std::sync::Arc<std::sync::Mutex<Open>>,
}

impl Connections {
    fn len(&self) -> usize {
        self.inner.lock().expect("connections lock").1.len()
    }

    fn add(&self) -> (u64, CancellationToken) {
        let mut inner = self.inner.lock().expect("connections lock");
        inner.0 += 1;
        let (id, token) = (inner.0, CancellationToken::new());
        inner.1.push_back((id, token.clone()));
        (id, token)
    }

    fn remove(&self, id: u64) {
        self.inner
            .lock()
            .expect("connections lock")
            .1
            .retain(|(i, _)| *i != id);
    }

    fn close_oldest(&self) {
        if let Some((_, token)) = self.inner.lock().expect("connections lock").1.pop_front() {
            token.cancel();
        }
    }
}

fn text(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("Content-Type", content_type)
        .body(Full::new(body.into()))
        .expect("a valid response")
}

fn respond(
    req: &Request<Incoming>,
    registry: &MetricsRegistry,
    health: &Health,
) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "only GET\n");
    }
    match req.uri().path() {
        "/metrics" => text(StatusCode::OK, METRICS_CONTENT_TYPE, registry.render()),
        "/healthz" => {
            if health.is_alive() {
                text(StatusCode::OK, "text/plain", "ok\n")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "the scheduler is not running\n",
                )
            }
        }
        "/readyz" => {
            let checks = health.checks();
            let ready = checks.iter().all(|c| c.ok);
            let body = serde_json::json!({ "ready": ready, "checks": checks });
            let status = if ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            text(status, "application/json", body.to_string())
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /metrics, /healthz or /readyz\n",
        ),
    }
}
