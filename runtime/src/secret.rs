//! [`Secret`]: a string that never shows itself in `Debug`, `Display`, logs or errors.

use std::fmt;

use serde::{Deserialize, Deserializer};

/// What a [`Secret`] prints instead of its value.
pub const REDACTED: &str = "***";

/// A sensitive string: a client secret, an access token, a password.
///
/// `Debug` and `Display` print `***`. There is no `Serialize` implementation, so a secret cannot
/// leak through a serialized config either. The value is reachable only through
/// [`Secret::expose_secret`], a loud name that is easy to grep for in review.
///
/// # Examples
///
/// ```
/// use extractor_runtime::Secret;
///
/// let secret = Secret::new("hunter2");
/// assert_eq!(format!("{secret:?}"), "Secret(***)");
/// assert_eq!(secret.to_string(), "***");
/// assert_eq!(secret.expose_secret(), "hunter2");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Box<str>);

impl Secret {
    /// Wraps a sensitive value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into().into_boxed_str())
    }

    /// The secret value itself. Call it only where the value must leave the process (an HTTP
    /// request to the identity provider, a basic-auth header).
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// Whether the secret is the empty string.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({REDACTED})")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret::new)
    }
}

impl schemars::JsonSchema for Secret {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Secret".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A sensitive value. Prefer `${ENV_VAR}` over writing it into the file.",
            "writeOnly": true
        })
    }
}

/// `url` with the password of its user info (`https://user:pass@host`) shown as `***`, for logs,
/// metric labels and summaries. Text that is not a URL is returned as it is.
pub(crate) fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some(REDACTED));
            let shown = parsed.to_string().replace("%2A%2A%2A", REDACTED);
            // Url adds a `/` to a bare host; keep the text as written otherwise.
            if url.ends_with('/') || parsed.path() != "/" {
                shown
            } else {
                shown.trim_end_matches('/').to_owned()
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn redact_url_hides_only_the_password() {
        assert_eq!(
            redact_url("http://ops:hunter2@gw:9091/x"),
            "http://ops:***@gw:9091/x"
        );
        assert_eq!(redact_url("http://gw:9091"), "http://gw:9091");
    }

    use super::*;

    #[test]
    fn hides_content_in_debug_and_display() {
        let s = Secret::new("s3cr3t-value");
        assert!(!format!("{s:?}").contains("s3cr3t"));
        assert!(!format!("{s:#?}").contains("s3cr3t"));
        assert!(!format!("{s}").contains("s3cr3t"));
        assert!(!format!("{:?}", Some(&s)).contains("s3cr3t"));
        assert_eq!(s.expose_secret(), "s3cr3t-value");
    }
}
