//! Extraction pipeline runs: `POST /extpipes/runs`, one run a request.

use prometheus::IntCounterVec;

use super::{CdfClient, CdfError};

/// The longest message a run may carry.
pub const MAX_MESSAGE_CHARS: usize = 1000;

/// A run's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunStatus {
    /// The extraction succeeded.
    Success,
    /// The extraction failed.
    Failure,
    /// The extractor is alive (long-running processes, every `seen-interval`).
    Seen,
}

impl RunStatus {
    fn as_str(self) -> &'static str {
        match self {
            RunStatus::Success => "success",
            RunStatus::Failure => "failure",
            RunStatus::Seen => "seen",
        }
    }
}

/// Reports runs of one extraction pipeline. A failure to report is counted and returned for
/// logging; it is never fatal.
#[derive(Clone, Debug)]
pub struct PipelineReporter {
    client: CdfClient,
    external_id: String,
    reports: IntCounterVec,
    /// Reports are sent only while it is held (the high-availability lease).
    fence: crate::fence::Fence,
}

/// `message` cut to [`MAX_MESSAGE_CHARS`] characters (with `...` when cut).
pub fn truncate_message(message: &str) -> String {
    if message.chars().count() <= MAX_MESSAGE_CHARS {
        message.to_owned()
    } else {
        let mut cut: String = message.chars().take(MAX_MESSAGE_CHARS - 3).collect();
        cut.push_str("...");
        cut
    }
}

impl PipelineReporter {
    /// A reporter for the pipeline `external_id`; registers
    /// `extractor_pipeline_reports_total{status,result}`.
    pub fn new(
        client: CdfClient,
        external_id: &str,
        registry: &prometheus::Registry,
    ) -> prometheus::Result<Self> {
        let reports = crate::metrics::pipeline_reports(registry)?;
        Ok(PipelineReporter {
            client,
            external_id: external_id.to_owned(),
            reports,
            fence: crate::fence::Fence::open(),
        })
    }

    /// The same reporter, sending only while `fence` is held.
    pub(crate) fn with_fence(mut self, fence: crate::fence::Fence) -> Self {
        self.fence = fence;
        self
    }

    /// Reports one run.
    ///
    /// # Cancel safety
    ///
    /// Cancelling may leave the report unsent.
    pub async fn report(&self, status: RunStatus, message: Option<&str>) -> Result<(), CdfError> {
        if let Err(e) = self.fence.check("the pipeline run report") {
            return Err(CdfError::new(
                crate::cdf::CdfErrorKind::Fenced,
                "/extpipes/runs",
                e.to_string(),
            ));
        }
        let mut run =
            serde_json::json!({"externalId": self.external_id, "status": status.as_str()});
        if let Some(m) = message {
            run["message"] = serde_json::Value::String(truncate_message(m));
        }
        let result = self
            .client
            .post(
                "/extpipes/runs",
                "/extpipes/runs",
                &serde_json::json!({ "items": [run] }),
            )
            .await
            .map(|_| ());
        let label = if result.is_ok() { "success" } else { "failure" };
        self.reports
            .with_label_values(&[status.as_str(), label])
            .inc();
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_cut_at_1000_characters() {
        assert_eq!(truncate_message("short"), "short");
        let long = "é".repeat(1500);
        let cut = truncate_message(&long);
        assert_eq!(cut.chars().count(), 1000);
        assert!(cut.ends_with("..."));
    }
}
