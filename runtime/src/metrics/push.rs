//! Pushing to a Prometheus Pushgateway, for batch jobs: on an interval, and once more at the end.

use crate::percent::encode_segment;
use std::time::Duration;

use base64::Engine as _;
use prometheus::IntCounterVec;
use tokio_util::sync::CancellationToken;

use super::MetricsRegistry;
use super::server::METRICS_CONTENT_TYPE;
use crate::config::PushGatewayConfig;
use crate::secret::Secret;

/// Pushes retry twice (three attempts) on a transient failure, from 0.5 s.
const RETRY: crate::retry::RetryPolicy =
    crate::retry::RetryPolicy::new(Duration::from_millis(500), Duration::from_secs(5))
        .with_max_retries(2);

/// Pushes one registry to one Pushgateway.
#[derive(Clone)]
pub struct Pusher {
    client: reqwest::Client,
    url: String,
    /// `url` as logs and errors show it (a password in it as `***`).
    shown_url: String,
    host: String,
    auth: Option<(String, Option<Secret>)>,
    interval: Duration,
    clear_after: Option<Duration>,
    registry: MetricsRegistry,
    pushes: IntCounterVec,
}

impl std::fmt::Debug for Pusher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pusher")
            .field("url", &self.shown_url)
            .finish_non_exhaustive()
    }
}

/// A push to (or a delete at) a Pushgateway that failed, after its retries. The URL is shown
/// without a password.
#[derive(Clone, Debug)]
pub struct PushError {
    what: &'static str,
    url: String,
    attempts: u32,
    cause: String,
}

impl std::fmt::Display for PushError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} failed", self.what, self.url)?;
        if self.attempts > 1 {
            write!(f, " after {} attempts", self.attempts)?;
        }
        write!(f, ": {}", self.cause)
    }
}

impl std::error::Error for PushError {}

impl Pusher {
    /// One pusher per `metrics.push-gateways[]` entry. `pushes` is
    /// `extractor_push_total{gateway,result}` (see [`push_total`](super::push_total)).
    pub fn new(
        config: &PushGatewayConfig,
        registry: MetricsRegistry,
        pushes: IntCounterVec,
        network: &crate::net::Network,
    ) -> Result<Self, reqwest::Error> {
        let address = config.host.trim_end_matches('/').to_owned();
        // What logs, labels and errors show: without a password in the URL.
        let host = crate::secret::redact_url(&address);
        let client = network
            .client_builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        for result in ["success", "failure"] {
            pushes.with_label_values(&[&host, result]);
        }
        let url = format!("{address}/metrics/job/{}", encode_segment(&config.job_name));
        Ok(Pusher {
            client,
            shown_url: crate::secret::redact_url(&url),
            url,
            host,
            auth: config
                .username
                .clone()
                .map(|u| (u, config.password.clone())),
            interval: config.push_interval.get(),
            clear_after: config.clear_after.map(|d| d.get()),
            registry,
            pushes,
        })
    }

    fn request(&self, method: reqwest::Method) -> reqwest::RequestBuilder {
        let mut request = self.client.request(method, &self.url);
        if let Some((user, password)) = &self.auth {
            let pair = format!(
                "{user}:{}",
                password.as_ref().map(Secret::expose_secret).unwrap_or("")
            );
            let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
            request = request.header("Authorization", format!("Basic {encoded}"));
        }
        request
    }

    /// Pushes the registry (PUT: replaces the job's group), retrying with backoff. A failure is
    /// counted and returned; it never fails the extractor.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe.
    pub async fn push(&self) -> Result<(), PushError> {
        let mut delays = RETRY.backoff();
        let mut attempts = 0;
        let last = loop {
            attempts += 1;
            let body = self.registry.render();
            let result = self
                .request(reqwest::Method::PUT)
                .header("Content-Type", METRICS_CONTENT_TYPE)
                .body(body)
                .send()
                .await;
            let (last, retryable, retry_after) = match result {
                Ok(r) if r.status().is_success() => {
                    self.pushes
                        .with_label_values(&[&self.host, "success"])
                        .inc();
                    return Ok(());
                }
                Ok(r) => (
                    format!("HTTP {}", r.status()),
                    crate::retry::retryable_status(r.status().as_u16(), false).is_some(),
                    crate::retry::retry_after(r.headers()),
                ),
                Err(e) => {
                    let retryable = crate::retry::retryable_error(&e).is_some();
                    (crate::net::explain(e), retryable, None)
                }
            };
            match delays.next_delay(retry_after) {
                Some(delay) if retryable => tokio::time::sleep(delay).await,
                _ => break last,
            }
        };
        self.pushes
            .with_label_values(&[&self.host, "failure"])
            .inc();
        Err(PushError {
            what: "push to",
            url: self.shown_url.clone(),
            attempts,
            cause: last,
        })
    }

    /// Deletes the job's group from the gateway.
    pub async fn delete(&self) -> Result<(), PushError> {
        let cause = match self.request(reqwest::Method::DELETE).send().await {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => format!("HTTP {}", r.status()),
            Err(e) => crate::net::explain(e),
        };
        Err(PushError {
            what: "delete at",
            url: self.shown_url.clone(),
            attempts: 1,
            cause,
        })
    }

    /// Pushes every `push-interval` until `stop` fires.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe.
    pub async fn run(&self, stop: CancellationToken) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(self.interval) => {}
                () = stop.cancelled() => return,
            }
            if let Err(e) = self.push().await {
                tracing::warn!(target: "extractor_runtime::metrics", "{e}");
            }
        }
    }

    /// The final push at shutdown or at the end of `run --once`; then, with `clear-after`,
    /// waits that long and deletes the job's group. Logs failures; never fails.
    pub async fn finish(&self) {
        match self.push().await {
            Ok(()) => {
                tracing::info!(target: "extractor_runtime::metrics", gateway = %self.host, "final metrics pushed")
            }
            Err(e) => tracing::warn!(target: "extractor_runtime::metrics", "final {e}"),
        }
        if let Some(after) = self.clear_after {
            tokio::time::sleep(after).await;
            match self.delete().await {
                Ok(()) => {
                    tracing::info!(target: "extractor_runtime::metrics", gateway = %self.host, "metrics cleared from the gateway")
                }
                Err(e) => tracing::warn!(target: "extractor_runtime::metrics", "{e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A password in the gateway's URL is used, but never shown: not in the `gateway` label,
    /// `Debug`, or a failed push's error.
    #[tokio::test]
    async fn a_password_in_the_gateway_url_is_never_shown() {
        let yaml = "version: 1\ncognite: {project: p, dry-run: true}\nmetrics:\n  push-gateways: [{host: 'http://ops:pw-secret-9@127.0.0.1:1/', job-name: j}]\n";
        let config = crate::config::Config::from_yaml(
            yaml,
            None,
            &|_: &str| None,
            &crate::config::LoadOptions::default(),
        )
        .unwrap();
        let registry = MetricsRegistry::new();
        let counter = crate::metrics::push_total(registry.prometheus()).unwrap();
        let pusher = Pusher::new(
            &config.metrics.push_gateways[0],
            registry.clone(),
            counter,
            &crate::net::Network::default(),
        )
        .unwrap();
        let e = pusher.push().await.unwrap_err();
        let rendered = String::from_utf8(registry.render()).unwrap();
        let e = e.to_string();
        for shown in [e.clone(), format!("{pusher:?}"), rendered.clone()] {
            assert!(!shown.contains("pw-secret-9"), "{shown}");
        }
        assert!(
            e.contains("http://ops:***@127.0.0.1:1/metrics/job/j"),
            "{e}"
        );
        assert!(
            rendered.contains("gateway=\"http://ops:***@127.0.0.1:1\",result=\"failure\"} 1"),
            "{rendered}"
        );
    }
}
