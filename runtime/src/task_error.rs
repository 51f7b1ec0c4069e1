//! [`TaskError`]: why a run failed, and how (transient, permanent, authentication), which
//! decides whether the scheduler retries it and which exit code `run --once` gives.

use std::fmt;

use crate::auth::AuthError;
use crate::cdf::CdfError;

/// How a run failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TaskErrorKind {
    /// May succeed when tried again (a network error, a 503): retried per the task's `retry`.
    Transient,
    /// Will fail again (bad data, bad settings): not retried.
    Permanent,
    /// The identity provider refused the credentials: not retried; `run --once` exits 3.
    Authentication,
}

/// Why a run failed: a kind, a message, and the underlying error (its
/// [`source`](std::error::Error::source)).
#[derive(Debug)]
pub struct TaskError {
    kind: TaskErrorKind,
    /// What failed; `None` when the source says it all (a CDF or identity-provider error).
    message: Option<String>,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl TaskError {
    /// A failure that may pass.
    pub fn transient(message: impl fmt::Display) -> Self {
        TaskError {
            kind: TaskErrorKind::Transient,
            message: Some(message.to_string()),
            source: None,
        }
    }

    /// A failure that will not pass by retrying.
    pub fn permanent(message: impl fmt::Display) -> Self {
        TaskError {
            kind: TaskErrorKind::Permanent,
            message: Some(message.to_string()),
            source: None,
        }
    }

    /// The identity provider refused the credentials: not retried; `run --once` exits 3.
    pub fn authentication(message: impl fmt::Display) -> Self {
        TaskError {
            kind: TaskErrorKind::Authentication,
            message: Some(message.to_string()),
            source: None,
        }
    }

    /// Attaches the underlying error.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// How the run failed.
    pub fn kind(&self) -> TaskErrorKind {
        self.kind
    }

    /// Whether retrying may help.
    pub fn is_transient(&self) -> bool {
        self.kind == TaskErrorKind::Transient
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.message, &self.source) {
            (Some(m), Some(s)) => write!(f, "{m}: {s}"),
            (Some(m), None) => f.write_str(m),
            (None, Some(s)) => write!(f, "{s}"),
            (None, None) => f.write_str("the run failed"),
        }
    }
}

impl std::error::Error for TaskError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<AuthError> for TaskError {
    fn from(e: AuthError) -> Self {
        let kind = if e.is_permanent() {
            TaskErrorKind::Authentication
        } else {
            TaskErrorKind::Transient
        };
        TaskError {
            kind,
            message: Some("authentication failed".to_owned()),
            source: Some(Box::new(e)),
        }
    }
}

/// A CDF request failed: `Authentication` when the identity provider refused the credentials
/// for good, `Transient` when retrying may help, else `Permanent`. The CDF error is the
/// source, and the whole message.
impl From<CdfError> for TaskError {
    fn from(e: CdfError) -> Self {
        let kind = if e.auth_error().is_some_and(AuthError::is_permanent) {
            TaskErrorKind::Authentication
        } else if e.is_transient() {
            TaskErrorKind::Transient
        } else {
            TaskErrorKind::Permanent
        };
        TaskError {
            kind,
            message: None,
            source: Some(Box::new(e)),
        }
    }
}
