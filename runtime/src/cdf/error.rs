//! [`CdfError`]: why a request to CDF failed, classified for callers.

use std::fmt;

use crate::auth::AuthError;

/// How a CDF request failed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CdfErrorKind {
    /// No token could be had.
    Auth,
    /// CDF answered with an error status that retrying will not fix (400, 403, 404, 409, 422,
    /// or 401 again after a fresh token).
    Rejected,
    /// Retryable failures (408, 429, 5xx, `cdf-is-auto-retryable`, connection errors,
    /// timeouts) went on past `max-retries`.
    RetriesExhausted,
    /// The answer was not JSON.
    BadResponse,
    /// The queue's disk buffer did not take the item (full with `when-full: drop-newest`, or
    /// its files cannot be written).
    Buffer,
    /// This replica no longer holds its high-availability lease: nothing more is queued.
    Fenced,
}

/// Why a CDF client could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// `cognite.connection` cannot be used.
    #[error(transparent)]
    Network(#[from] crate::net::NetworkError),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client")]
    Http(#[source] reqwest::Error),
    /// A client that sends requests needs a token manager.
    #[error("a CDF client that sends requests needs a token manager")]
    NoTokens,
    /// Its metrics could not be registered.
    #[error("cannot register the CDF client's metrics")]
    Metrics(#[from] prometheus::Error),
}

/// A failed CDF request: what CDF said, and its request id for Cognite support.
#[derive(Clone, Debug)]
pub struct CdfError(pub(crate) Box<Details>);

#[derive(Clone, Debug)]
pub(crate) struct Details {
    pub(crate) kind: CdfErrorKind,
    pub(crate) endpoint: &'static str,
    pub(crate) status: Option<u16>,
    pub(crate) message: String,
    pub(crate) request_id: Option<String>,
    pub(crate) auth: Option<AuthError>,
    /// The items CDF named in `error.missing` (`{"externalId": ..}` objects).
    pub(crate) missing: Vec<serde_json::Value>,
    /// The items CDF named in `error.duplicated`.
    pub(crate) duplicated: Vec<serde_json::Value>,
}

impl CdfError {
    pub(crate) fn new(
        kind: CdfErrorKind,
        endpoint: &'static str,
        message: impl Into<String>,
    ) -> Self {
        CdfError(Box::new(Details {
            kind,
            endpoint,
            status: None,
            // CDF's message, or a proxy's page: a few KiB at most in a log, a dead-letter line
            // (once per refused item) or a pipeline run.
            message: crate::text::cut_message(message),
            request_id: None,
            auth: None,
            missing: Vec::new(),
            duplicated: Vec::new(),
        }))
    }

    /// How the request failed.
    pub fn kind(&self) -> &CdfErrorKind {
        &self.0.kind
    }

    /// The HTTP status of CDF's last answer, if any.
    pub fn status(&self) -> Option<u16> {
        self.0.status
    }

    /// CDF's `x-request-id` of the last answer.
    pub fn request_id(&self) -> Option<&str> {
        self.0.request_id.as_deref()
    }

    /// The token manager's error, for [`CdfErrorKind::Auth`].
    pub(crate) fn auth_error(&self) -> Option<&AuthError> {
        self.0.auth.as_ref()
    }

    /// The items CDF named as missing (`error.missing` of its answer): objects such as
    /// `{"externalId": "x"}`.
    pub fn missing(&self) -> &[serde_json::Value] {
        &self.0.missing
    }

    /// The items CDF named as duplicated (`error.duplicated` of its answer).
    pub fn duplicated(&self) -> &[serde_json::Value] {
        &self.0.duplicated
    }

    /// The endpoint template of the request.
    pub fn endpoint(&self) -> &'static str {
        self.0.endpoint
    }

    /// CDF's message.
    pub fn message(&self) -> &str {
        &self.0.message
    }

    /// Whether trying again later may succeed (the data should be kept for the next flush).
    pub fn is_transient(&self) -> bool {
        match self.0.kind {
            CdfErrorKind::RetriesExhausted | CdfErrorKind::BadResponse => true,
            CdfErrorKind::Auth => !self.0.auth.as_ref().is_some_and(AuthError::is_permanent),
            _ => false,
        }
    }
}

impl fmt::Display for CdfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CDF request to {} failed: {}",
            self.0.endpoint, self.0.message
        )?;
        if let Some(s) = self.0.status {
            write!(f, " (HTTP {s}")?;
            if let Some(id) = &self.0.request_id {
                write!(f, ", request id {id}")?;
            }
            f.write_str(")")?;
        }
        if let Some(a) = &self.0.auth {
            write!(f, ": {a}")?;
        }
        Ok(())
    }
}

/// The source is the identity provider's error, when no token could be had.
impl std::error::Error for CdfError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0
            .auth
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}
