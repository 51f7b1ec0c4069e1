//! What happened inside the runtime, one struct per event (Vector's internal events): its
//! `emit()` writes the log line and updates the metrics, so the logic only says what happened.
//! Names are `<Noun><PastVerb>[Error]`; the metrics themselves are defined in
//! [`metrics`](crate::metrics). Events carry plain data, so this module depends on `metrics`
//! only.

use std::time::Duration;

use crate::metrics::{CdfMetrics, TaskSeries, TokenMetrics};

/// A token request succeeded.
pub(crate) struct TokenRefreshed<'a> {
    pub(crate) metrics: Option<&'a TokenMetrics>,
    pub(crate) generation: u64,
    pub(crate) expires_in: Duration,
    pub(crate) refresh_in: Duration,
    pub(crate) took: Duration,
    /// Unix time at which the token expires.
    pub(crate) expiry_unix: f64,
}

impl TokenRefreshed<'_> {
    pub(crate) fn emit(self) {
        if let Some(m) = self.metrics {
            m.refresh_total.with_label_values(&["success"]).inc();
            m.refresh_duration.observe(self.took.as_secs_f64());
            m.expiry_timestamp.set(self.expiry_unix);
            m.consecutive_failures.set(0);
        }
        tracing::info!(
            target: "extractor_runtime::auth",
            generation = self.generation,
            expires_in_s = self.expires_in.as_secs_f64(),
            refresh_in_s = self.refresh_in.as_secs_f64(),
            took_ms = self.took.as_millis() as u64,
            "token refreshed"
        );
    }
}

/// A token request failed; the identity provider's error codes, never the secret.
pub(crate) struct TokenRefreshError<'a> {
    pub(crate) metrics: Option<&'a TokenMetrics>,
    /// `transient`, `throttled` or `permanent`.
    pub(crate) kind: &'static str,
    pub(crate) oauth_error: &'a str,
    pub(crate) aadsts: Option<u32>,
    pub(crate) trace_id: &'a str,
    pub(crate) correlation_id: &'a str,
    /// The error, as it displays.
    pub(crate) error: &'a dyn std::fmt::Display,
    pub(crate) took: Duration,
    pub(crate) consecutive_failures: u64,
    pub(crate) retry_in: Duration,
    pub(crate) still_serving_old_token: bool,
}

impl TokenRefreshError<'_> {
    pub(crate) fn emit(self) {
        if let Some(m) = self.metrics {
            m.refresh_total.with_label_values(&[self.kind]).inc();
            m.refresh_duration.observe(self.took.as_secs_f64());
            m.consecutive_failures
                .set(i64::try_from(self.consecutive_failures).unwrap_or(i64::MAX));
        }
        tracing::warn!(
            target: "extractor_runtime::auth",
            kind = self.kind,
            error = self.oauth_error,
            aadsts = self.aadsts.map(|c| format!("AADSTS{c}")).unwrap_or_default(),
            trace_id = self.trace_id,
            correlation_id = self.correlation_id,
            consecutive_failures = self.consecutive_failures,
            retry_in_s = self.retry_in.as_secs_f64(),
            still_serving_old_token = self.still_serving_old_token,
            "token refresh failed: {}",
            self.error
        );
    }
}

/// A request to CDF got an answer (`status`) or none (`error`), after `took`.
pub(crate) struct CdfRequestCompleted<'a> {
    pub(crate) metrics: &'a CdfMetrics,
    pub(crate) endpoint: &'static str,
    /// The HTTP status, or `None` when no answer came.
    pub(crate) status: Option<u16>,
    pub(crate) took: Duration,
}

impl CdfRequestCompleted<'_> {
    pub(crate) fn emit(self) {
        let status = self
            .status
            .map_or_else(|| "error".to_owned(), |s| s.to_string());
        self.metrics
            .requests
            .with_label_values(&[self.endpoint, &status])
            .inc();
        self.metrics
            .duration
            .with_label_values(&[self.endpoint])
            .observe(self.took.as_secs_f64());
    }
}

/// A request to CDF is tried again: after `reason` (`408`, `429`, `5xx`, `timeout`, `connect`,
/// `auto_retryable`, or `401` for the one retry with a fresh token), in `delay`.
pub(crate) struct CdfRequestRetried<'a> {
    pub(crate) metrics: &'a CdfMetrics,
    pub(crate) endpoint: &'static str,
    pub(crate) reason: &'static str,
    /// The retry's number and its delay; `None` for the retry with a fresh token, at once.
    pub(crate) retry: Option<(u32, Duration)>,
    pub(crate) error: &'a dyn std::fmt::Display,
}

impl CdfRequestRetried<'_> {
    pub(crate) fn emit(self) {
        self.metrics
            .retries
            .with_label_values(&[self.endpoint, self.reason])
            .inc();
        if let Some((retry, delay)) = self.retry {
            tracing::warn!(target: "extractor_runtime::cdf", endpoint = self.endpoint, reason = self.reason, retry, retry_in_s = delay.as_secs_f64(), "CDF request failed, retrying: {}", self.error);
        }
    }
}

/// A run of `task` started.
pub(crate) struct TaskRunStarted<'a> {
    pub(crate) series: &'a TaskSeries,
    pub(crate) task: &'a str,
}

impl TaskRunStarted<'_> {
    pub(crate) fn emit(self) {
        self.series.running.inc();
        tracing::debug!(target: "extractor_runtime::scheduler", task = %self.task, "run started");
    }
}

/// An attempt of a run failed with a transient error; the next one is in `delay`.
pub(crate) struct TaskRunRetried<'a> {
    pub(crate) series: &'a TaskSeries,
    pub(crate) task: &'a str,
    pub(crate) attempt: u32,
    pub(crate) delay: Duration,
    pub(crate) error: &'a str,
}

impl TaskRunRetried<'_> {
    pub(crate) fn emit(self) {
        tracing::warn!(
            target: "extractor_runtime::scheduler",
            task = %self.task, attempt = self.attempt, retry_in_s = self.delay.as_secs_f64(),
            "run failed with a transient error, retrying: {}", self.error
        );
        self.series.retried();
    }
}

/// A run of `task` ended: `result` is the `result` label, `error` why it failed.
pub(crate) struct TaskRunFinished<'a> {
    pub(crate) series: &'a TaskSeries,
    pub(crate) task: &'a str,
    pub(crate) result: &'static str,
    pub(crate) error: Option<&'a str>,
    pub(crate) took: Duration,
    pub(crate) attempts: u32,
    /// Unix time now, for `extractor_task_last_success_timestamp_seconds`.
    pub(crate) now_unix: f64,
}

impl TaskRunFinished<'_> {
    pub(crate) fn emit(self) {
        let series = self.series;
        series.running.dec();
        series.run_finished(self.result);
        series.duration.observe(self.took.as_secs_f64());
        let took_ms = self.took.as_millis() as u64;
        if self.result == "success" {
            series.last_success.set(self.now_unix.max(0.0));
            tracing::info!(target: "extractor_runtime::scheduler", task = %self.task, took_ms, attempts = self.attempts, "run succeeded");
        } else {
            tracing::warn!(
                target: "extractor_runtime::scheduler",
                task = %self.task, result = self.result, took_ms, attempts = self.attempts,
                "run failed: {}", self.error.unwrap_or(self.result)
            );
        }
    }
}

/// Planned runs of `task` were not started: `reason` is `overlap` or `missed`.
pub(crate) struct TaskRunSkipped<'a> {
    pub(crate) series: &'a TaskSeries,
    pub(crate) task: &'a str,
    pub(crate) reason: &'static str,
    pub(crate) count: u64,
}

impl TaskRunSkipped<'_> {
    pub(crate) fn emit(self) {
        self.series.skipped(self.reason, self.count);
        tracing::info!(target: "extractor_runtime::scheduler", task = %self.task, count = self.count,
            reason = self.reason, "planned run skipped");
    }
}

/// A run outlived the shutdown grace and was aborted: it counts as `cancelled`.
pub(crate) struct TaskRunAborted<'a> {
    pub(crate) series: &'a TaskSeries,
}

impl TaskRunAborted<'_> {
    pub(crate) fn emit(self) {
        self.series.running.dec();
        self.series.run_finished("cancelled");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cdf_events_count_by_endpoint_status_and_reason() {
        let registry = crate::metrics::MetricsRegistry::new();
        let metrics = CdfMetrics::register(registry.prometheus()).unwrap();
        let endpoint = "/events";
        for status in [None, Some(503), Some(503), Some(200)] {
            CdfRequestCompleted {
                metrics: &metrics,
                endpoint,
                status,
                took: Duration::from_millis(20),
            }
            .emit();
        }
        let error = "HTTP 503";
        for retry in [None, Some((1, Duration::from_secs(1)))] {
            CdfRequestRetried {
                metrics: &metrics,
                endpoint,
                reason: if retry.is_some() { "5xx" } else { "401" },
                retry,
                error: &error,
            }
            .emit();
        }
        let value = |name: &str, labels: &[(&str, &str)]| registry.value(name, labels);
        let requests = "extractor_cdf_requests_total";
        assert_eq!(
            value(requests, &[("endpoint", endpoint), ("status", "error")]),
            Some(1.0)
        );
        assert_eq!(
            value(requests, &[("endpoint", endpoint), ("status", "503")]),
            Some(2.0)
        );
        assert_eq!(
            value(requests, &[("endpoint", endpoint), ("status", "200")]),
            Some(1.0)
        );
        assert_eq!(
            value(
                "extractor_cdf_request_duration_seconds_count",
                &[("endpoint", endpoint)]
            ),
            Some(4.0)
        );
        for reason in ["401", "5xx"] {
            assert_eq!(
                value(
                    "extractor_cdf_retries_total",
                    &[("endpoint", endpoint), ("reason", reason)]
                ),
                Some(1.0)
            );
        }
    }
}
