//! The error answer of an OAuth2 token endpoint (Microsoft Entra ID's fields included), read
//! the same way by the token manager and the Key Vault client.

use serde::Deserialize;

use crate::secret::Secret;

/// An identity provider's error body.
#[derive(Deserialize, Default)]
pub(crate) struct ErrorBody {
    pub(crate) error: Option<String>,
    pub(crate) error_description: Option<String>,
    #[serde(default)]
    pub(crate) error_codes: Vec<u32>,
    pub(crate) trace_id: Option<String>,
    pub(crate) correlation_id: Option<String>,
}

impl ErrorBody {
    /// The body of an answer; an empty one when it is not such JSON.
    pub(crate) fn parse(body: &[u8]) -> ErrorBody {
        serde_json::from_slice(body).unwrap_or_default()
    }

    /// The first line of `error_description`, with `secret` (if any) replaced by `***`.
    pub(crate) fn description(&self, secret: Option<&Secret>) -> Option<String> {
        let d = self.error_description.as_deref()?;
        let line = d.lines().next().unwrap_or(d);
        Some(match secret {
            Some(s) if !s.is_empty() => line.replace(s.expose_secret(), crate::secret::REDACTED),
            _ => line.to_owned(),
        })
    }

    /// The `AADSTS` code: the first of `error_codes`, else the one in `description`.
    pub(crate) fn aadsts(&self, description: Option<&str>) -> Option<u32> {
        self.error_codes
            .first()
            .copied()
            .or_else(|| description.and_then(aadsts_from_text))
    }
}

/// The code of `AADSTS<digits>` in `text`.
pub(crate) fn aadsts_from_text(text: &str) -> Option<u32> {
    let start = text.find("AADSTS")? + "AADSTS".len();
    let digits: String = text[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// A refused token request in one line, as the token manager words it: the description, then
/// `(error e, AADSTS<code>, HTTP s, trace id t, correlation id c)`.
pub(crate) fn describe(status: u16, body: &[u8], secret: Option<&Secret>) -> String {
    let parsed = ErrorBody::parse(body);
    let description = parsed.description(secret);
    let mut details = Vec::new();
    if let Some(e) = &parsed.error {
        details.push(format!("error {e}"));
    }
    if let Some(code) = parsed.aadsts(description.as_deref()) {
        details.push(format!("AADSTS{code}"));
    }
    details.push(format!("HTTP {status}"));
    if let Some(t) = &parsed.trace_id {
        details.push(format!("trace id {t}"));
    }
    if let Some(c) = &parsed.correlation_id {
        details.push(format!("correlation id {c}"));
    }
    format!(
        "{} ({})",
        description.as_deref().unwrap_or("no description"),
        details.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entra_refusal_names_its_code_and_ids_and_never_the_secret() {
        let body = br#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided: hunter2.\r\nTrace ID: x","error_codes":[7000215],"trace_id":"t-1","correlation_id":"c-1"}"#;
        let shown = describe(401, body, Some(&Secret::new("hunter2")));
        assert_eq!(
            shown,
            "AADSTS7000215: Invalid client secret provided: ***. (error invalid_client, AADSTS7000215, HTTP 401, trace id t-1, correlation id c-1)"
        );
        assert_eq!(describe(502, b"<html>", None), "no description (HTTP 502)");
    }
}
