//! The metrics server (hyper 1): `/metrics`, `/healthz`, `/readyz`.

use std::convert::Infallible;
use std::net::SocketAddr;

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
        loop {
            let (stream, _) = tokio::select! {
                r = self.listener.accept() => match r {
                    Ok(s) => s,
                    Err(e) => {
                        // Out of file descriptors, say: back off instead of spinning.
                        tracing::warn!(target: "extractor_runtime::metrics", "accept failed: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                },
                () = shutdown.cancelled() => return,
            };
            let registry = self.registry.clone();
            let health = self.health.clone();
            let service = service_fn(move |req| {
                let response = respond(&req, &registry, &health);
                async move { Ok::<_, Infallible>(response) }
            });
            tokio::spawn(async move {
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
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
