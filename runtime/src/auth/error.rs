//! [`AuthError`]: why no token could be had, classified so that callers ask instead of parsing.

use std::fmt;
use std::time::Duration;

/// How a failed token request should be treated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthErrorKind {
    /// The identity provider refused the credentials or the request for good (bad or expired
    /// secret, unknown client, invalid scope, unknown tenant). Retrying soon will not help.
    Permanent,
    /// The identity provider asked us to slow down (HTTP 429 or `Retry-After`).
    Throttled,
    /// A passing problem: 5xx, 408, `temporarily_unavailable`, a timeout, a refused connection,
    /// a malformed answer.
    Transient,
    /// No valid token was available within the wait bound.
    NoValidToken,
    /// The token manager has stopped.
    ShutDown,
}

impl AuthErrorKind {
    /// The `result` label of `extractor_token_refresh_total`.
    pub fn as_label(self) -> &'static str {
        match self {
            AuthErrorKind::Permanent => "permanent",
            AuthErrorKind::Throttled => "throttled",
            AuthErrorKind::Transient => "transient",
            AuthErrorKind::NoValidToken => "no_valid_token",
            AuthErrorKind::ShutDown => "shut_down",
        }
    }
}

/// A failure to get a token, with what the identity provider said about it.
///
/// Never contains the client secret or a token.
///
/// Opaque and small (one pointer), like `reqwest::Error`: ask it questions.
#[derive(Clone, Debug)]
pub struct AuthError(pub(crate) Box<Details>);

/// The fields behind an [`AuthError`].
#[derive(Clone, Debug)]
pub(crate) struct Details {
    pub(crate) kind: AuthErrorKind,
    pub(crate) message: String,
    pub(crate) status: Option<u16>,
    pub(crate) oauth_error: Option<String>,
    pub(crate) aadsts_code: Option<u32>,
    pub(crate) trace_id: Option<String>,
    pub(crate) correlation_id: Option<String>,
    pub(crate) retry_after: Option<Duration>,
    pub(crate) last_error: Option<Box<AuthError>>,
}

impl AuthError {
    pub(crate) fn new(kind: AuthErrorKind, message: impl Into<String>) -> Self {
        AuthError(Box::new(Details {
            kind,
            // The identity provider's description is outside text: a few KiB at most.
            message: crate::text::cut_message(message),
            status: None,
            oauth_error: None,
            aadsts_code: None,
            trace_id: None,
            correlation_id: None,
            retry_after: None,
            last_error: None,
        }))
    }

    /// How to treat the failure.
    pub fn kind(&self) -> AuthErrorKind {
        self.0.kind
    }

    /// Whether retrying soon is pointless: the credentials or request are wrong.
    pub fn is_permanent(&self) -> bool {
        self.0.kind == AuthErrorKind::Permanent
            || self.0.last_error.as_ref().is_some_and(|e| e.is_permanent())
    }

    /// The HTTP status of the identity provider's answer, if there was one.
    pub fn status(&self) -> Option<u16> {
        self.0.status
    }

    /// The OAuth2 `error` field (`invalid_client`, ...).
    pub fn oauth_error(&self) -> Option<&str> {
        self.0.oauth_error.as_deref()
    }

    /// The Entra ID error code (7000215 for AADSTS7000215, a bad secret).
    pub fn aadsts_code(&self) -> Option<u32> {
        self.0.aadsts_code
    }

    /// The identity provider's trace id.
    pub fn trace_id(&self) -> Option<&str> {
        self.0.trace_id.as_deref()
    }

    /// The identity provider's correlation id.
    pub fn correlation_id(&self) -> Option<&str> {
        self.0.correlation_id.as_deref()
    }

    /// How long the identity provider asked us to wait.
    pub fn retry_after(&self) -> Option<Duration> {
        self.0.retry_after
    }

    /// For [`AuthErrorKind::NoValidToken`]: the failure of the last refresh attempt.
    pub fn last_error(&self) -> Option<&AuthError> {
        self.0.last_error.as_deref()
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.message)?;
        let mut details = Vec::new();
        if let Some(e) = &self.0.oauth_error {
            details.push(format!("error {e}"));
        }
        if let Some(code) = self.0.aadsts_code {
            details.push(format!("AADSTS{code}"));
        }
        if let Some(s) = self.0.status {
            details.push(format!("HTTP {s}"));
        }
        if let Some(t) = &self.0.trace_id {
            details.push(format!("trace id {t}"));
        }
        if let Some(c) = &self.0.correlation_id {
            details.push(format!("correlation id {c}"));
        }
        if let Some(r) = self.0.retry_after {
            details.push(format!("retry after {}s", r.as_secs()));
        }
        if !details.is_empty() {
            write!(f, " ({})", details.join(", "))?;
        }
        if let Some(last) = &self.0.last_error {
            write!(f, "; last refresh failure: {last}")?;
        }
        Ok(())
    }
}

/// The source is the last refresh failure behind this one, if any (its text is in this one's
/// too; the command line prints a chain without repeating it).
impl std::error::Error for AuthError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0
            .last_error
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}
