//! Every metric of the runtime, defined once: names, help texts and labels.

use prometheus::{Gauge, Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry};

/// The token manager's metrics.
#[derive(Clone, Debug)]
pub struct TokenMetrics {
    /// `extractor_token_refresh_total{result}`.
    pub(crate) refresh_total: IntCounterVec,
    /// `extractor_token_refresh_duration_seconds`.
    pub(crate) refresh_duration: Histogram,
    /// `extractor_token_expiry_timestamp_seconds`.
    pub(crate) expiry_timestamp: Gauge,
    /// `extractor_token_consecutive_failures`.
    pub(crate) consecutive_failures: IntGauge,
}

impl TokenMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let m = TokenMetrics {
            refresh_total: IntCounterVec::new(
                Opts::new(
                    "extractor_token_refresh_total",
                    "Token requests to the identity provider, by result (success, transient, throttled, permanent).",
                ),
                &["result"],
            )?,
            refresh_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "extractor_token_refresh_duration_seconds",
                    "Time taken by one token request.",
                )
                .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
            )?,
            expiry_timestamp: Gauge::new(
                "extractor_token_expiry_timestamp_seconds",
                "Unix time at which the current access token expires.",
            )?,
            consecutive_failures: IntGauge::new(
                "extractor_token_consecutive_failures",
                "Token requests that failed since the last success.",
            )?,
        };
        for result in ["success", "transient", "throttled", "permanent"] {
            m.refresh_total.with_label_values(&[result]);
        }
        registry.register(Box::new(m.refresh_total.clone()))?;
        registry.register(Box::new(m.refresh_duration.clone()))?;
        registry.register(Box::new(m.expiry_timestamp.clone()))?;
        registry.register(Box::new(m.consecutive_failures.clone()))?;
        Ok(m)
    }
}
