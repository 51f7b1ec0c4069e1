//! One token request (client credentials with a secret or a certificate, a refresh token, a
//! device code), and the classification of its answer.

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use serde::Deserialize;

use super::error::{AuthError, AuthErrorKind};
use super::user::{DEVICE_CODE_GRANT, LOGIN_HINT, RefreshCache, user_scopes};
use crate::certificate::ClientCertificate;
use crate::config::{AuthMethod, IdpAuthenticationConfig};
use crate::secret::Secret;

/// What a token request returned.
#[derive(Debug)]
pub(crate) struct TokenResponse {
    pub(crate) access_token: Secret,
    pub(crate) token_type: String,
    pub(crate) expires_in: Duration,
    pub(crate) refresh_in: Option<Duration>,
    /// A (new) refresh token, in user flows.
    pub(crate) refresh_token: Option<Secret>,
    /// The ID token, in user flows (for the claims `login` and `token` show).
    pub(crate) id_token: Option<Secret>,
}

/// The identity provider's endpoint and our credentials, ready to send.
#[derive(Clone, Debug)]
pub(crate) struct TokenRequest {
    pub(crate) url: String,
    client_id: String,
    credential: Credential,
    scope: String,
    resource: Option<String>,
    audience: Option<String>,
    method: AuthMethod,
}

/// How the client proves who it is.
#[derive(Clone, Debug)]
enum Credential {
    /// A client secret (`client_secret_post` or `client_secret_basic`).
    Secret(Secret),
    /// A certificate: a signed `client_assertion` per request (`private_key_jwt`).
    Certificate(std::sync::Arc<ClientCertificate>),
    /// A person signed in with `login`: the refresh token in its cache file.
    Refresh(std::sync::Arc<RefreshCache>),
    /// `login` polling for a device code (RFC 8628).
    DeviceCode(Secret),
    /// `login` redeeming an authorization code with its PKCE verifier.
    AuthorizationCode {
        code: Secret,
        verifier: Secret,
        redirect_uri: String,
    },
}

impl TokenRequest {
    /// The request for `config`; reads and checks the certificate file when there is one.
    pub(crate) fn from_config(config: &IdpAuthenticationConfig) -> Result<Self, AuthError> {
        let credential = match (&config.certificate, &config.secret) {
            _ if config.flow.is_user() => {
                Credential::Refresh(std::sync::Arc::new(RefreshCache::open(config)?))
            }
            (Some(c), _) => Credential::Certificate(c.load().map_err(|e| {
                AuthError::new(
                    AuthErrorKind::Permanent,
                    format!(
                        "cognite.idp-authentication.certificate.{}: {}",
                        e.key, e.message
                    ),
                )
            })?),
            (None, Some(secret)) => Credential::Secret(secret.clone()),
            (None, None) => {
                return Err(AuthError::new(
                    AuthErrorKind::Permanent,
                    "cognite.idp-authentication: neither `secret` nor `certificate` is set",
                ));
            }
        };
        Ok(TokenRequest {
            url: config.token_endpoint(),
            client_id: config.client_id.clone(),
            scope: match credential {
                Credential::Refresh(_) => user_scopes(config),
                _ => config.scopes.join(" "),
            },
            credential,
            resource: config.resource.clone(),
            audience: config.audience.clone(),
            method: config.auth_method,
        })
    }

    /// The polling request of the device authorization grant.
    pub(crate) fn device_code(config: &IdpAuthenticationConfig, device_code: Secret) -> Self {
        Self::login(config, Credential::DeviceCode(device_code))
    }

    /// The redemption of an authorization code (with its PKCE verifier).
    pub(crate) fn authorization_code(
        config: &IdpAuthenticationConfig,
        code: Secret,
        verifier: Secret,
        redirect_uri: String,
    ) -> Self {
        Self::login(
            config,
            Credential::AuthorizationCode {
                code,
                verifier,
                redirect_uri,
            },
        )
    }

    fn login(config: &IdpAuthenticationConfig, credential: Credential) -> Self {
        TokenRequest {
            url: config.token_endpoint(),
            client_id: config.client_id.clone(),
            credential,
            scope: user_scopes(config),
            resource: None,
            audience: None,
            method: AuthMethod::Post,
        }
    }

    /// Sends the request. The error never contains the secret.
    pub(crate) async fn send(
        &self,
        client: &super::IdpClient,
    ) -> Result<TokenResponse, AuthError> {
        let mut request = client
            .http
            .post(&self.url)
            .header("Accept", "application/json");
        // What is never repeated in an error: the secret, the assertion, or the token sent.
        let sent_secret: Secret;
        let mut form: Vec<(&str, &str)> = Vec::new();
        match &self.credential {
            Credential::Secret(_) | Credential::Certificate(_) => {
                form.push(("grant_type", "client_credentials"));
                form.push(("scope", &self.scope));
                if let Some(r) = &self.resource {
                    form.push(("resource", r));
                }
                if let Some(a) = &self.audience {
                    form.push(("audience", a));
                }
            }
            Credential::Refresh(_) => {
                form.push(("grant_type", "refresh_token"));
                form.push(("scope", &self.scope));
            }
            Credential::DeviceCode(_) => form.push(("grant_type", DEVICE_CODE_GRANT)),
            Credential::AuthorizationCode { redirect_uri, .. } => {
                form.push(("grant_type", "authorization_code"));
                form.push(("redirect_uri", redirect_uri));
            }
        }
        match &self.credential {
            Credential::Certificate(cert) => {
                sent_secret = cert
                    .assertion(&self.url, &self.client_id)
                    .map_err(|e| AuthError::new(AuthErrorKind::Permanent, e))?;
                form.push(("client_id", &self.client_id));
                form.push(("client_assertion_type", JWT_BEARER));
                form.push(("client_assertion", sent_secret.expose_secret()));
            }
            Credential::Refresh(cache) => {
                sent_secret = cache.current()?;
                form.push(("client_id", &self.client_id));
                form.push(("refresh_token", sent_secret.expose_secret()));
            }
            Credential::DeviceCode(code) => {
                sent_secret = code.clone();
                form.push(("client_id", &self.client_id));
                form.push(("device_code", sent_secret.expose_secret()));
            }
            Credential::AuthorizationCode { code, verifier, .. } => {
                sent_secret = code.clone();
                form.push(("client_id", &self.client_id));
                form.push(("code", sent_secret.expose_secret()));
                form.push(("code_verifier", verifier.expose_secret()));
            }
            Credential::Secret(secret) => {
                sent_secret = secret.clone();
                match self.method {
                    AuthMethod::Post => {
                        form.push(("client_id", &self.client_id));
                        form.push(("client_secret", sent_secret.expose_secret()));
                    }
                    AuthMethod::Basic => {
                        // RFC 6749 2.3.1: form-urlencode id and secret, then base64 "id:secret".
                        let pair = format!(
                            "{}:{}",
                            form_urlencode(&self.client_id),
                            form_urlencode(sent_secret.expose_secret())
                        );
                        let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
                        request = request.header("Authorization", format!("Basic {encoded}"));
                    }
                }
            }
        }
        let response = request
            .form(&form)
            .send()
            .await
            .map_err(|e| transport_error("token request", &self.url, e, client))?;
        let status = response.status();
        if status.is_redirection() {
            let to = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                // Without its query, and without a password in it: errors are logged.
                .map(|l| crate::secret::redact_url(l.split(['?', '#']).next().unwrap_or(l)))
                .unwrap_or_else(|| "nowhere".to_owned());
            let mut e = AuthError::new(
                AuthErrorKind::Permanent,
                format!(
                    "the token endpoint answered HTTP {} redirecting to {to}; not followed, so the client secret goes only to the configured token-url (set token-url to the final address)",
                    status.as_u16()
                ),
            );
            e.0.status = Some(status.as_u16());
            return Err(e);
        }
        let retry_after = crate::retry::retry_after(response.headers());
        let body = read_answer(response, client).await?;
        let answer = classify(status.as_u16(), retry_after, &body, &sent_secret);
        match (&self.credential, answer) {
            (Credential::Refresh(cache), Ok(answer)) => {
                // Providers rotate refresh tokens: keep the new one, or the next refresh fails.
                if let Some(new) = &answer.refresh_token
                    && let Err(e) = cache.store(new.clone())
                {
                    tracing::warn!(target: "extractor_runtime::auth", error = %e, "the new refresh token is kept in memory only");
                }
                Ok(answer)
            }
            (Credential::Refresh(_), Err(mut e)) if e.oauth_error() == Some("invalid_grant") => {
                e.0.message = format!(
                    "the sign-in has expired or was revoked ({}); {LOGIN_HINT}",
                    e.0.message
                );
                Err(e)
            }
            (_, answer) => answer,
        }
    }

}

/// A failed request (`label`, like "token request") to `url`, as a transient error.
pub(crate) fn transport_error(
    label: &str,
    url: &str,
    e: reqwest::Error,
    client: &super::IdpClient,
) -> AuthError {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "failed"
    };
    // A proxy that wants other credentials refuses every attempt alike.
    let kind = if crate::net::refused_by_proxy(&e) {
        AuthErrorKind::Permanent
    } else {
        AuthErrorKind::Transient
    };
    let chain = client.network.explain(e);
    AuthError::new(
        kind,
        format!("{label} to {url} {what}: {chain}"),
    )
}

/// The body of an identity provider's answer. An answer is a few KiB: a peer that sends more
/// than [`MAX_ANSWER_BYTES`] is cut off, not buffered. A 407 is no answer of the identity
/// provider's but a proxy's refusal, named as such.
pub(crate) async fn read_answer(
    response: reqwest::Response,
    client: &super::IdpClient,
) -> Result<Vec<u8>, AuthError> {
    let status = response.status().as_u16();
    if status == 407 {
        let mut error = AuthError::new(AuthErrorKind::Permanent, client.network.proxy_refused());
        error.0.status = Some(status);
        return Err(error);
    }
    let url = response.url().clone();
    crate::net::read_capped(response, MAX_ANSWER_BYTES as u64)
        .await
        .map_err(|e| match e {
            crate::net::ReadError::Transport(e) => {
                transport_error("reading the answer of", url.as_str(), e, client)
            }
            crate::net::ReadError::TooLarge { .. } => {
                let mut e = AuthError::new(
                    AuthErrorKind::Transient,
                    format!(
                        "the identity provider's answer (HTTP {status}) is larger than {} KiB; not read",
                        MAX_ANSWER_BYTES / 1024
                    ),
                );
                e.0.status = Some(status);
                e
            }
        })
}

fn form_urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// RFC 7523's `client_assertion_type` for a JWT.
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The largest token answer read (Entra's are about 2-4 KiB).
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// The longest `expires_in` believed: a year. Longer is an error (1e19 s overflowed the clock).
const MAX_LIFETIME_SECS: f64 = 365.0 * 24.0 * 3600.0;

#[derive(Deserialize)]
struct SuccessBody {
    access_token: Option<String>,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
    #[serde(default)]
    refresh_in: Option<serde_json::Value>,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    id_token: Option<String>,
}

/// OAuth `error` values that retrying will not fix.
const PERMANENT_ERRORS: &[&str] = &[
    "invalid_client",
    "unauthorized_client",
    "invalid_scope",
    "invalid_request",
    "invalid_grant",
    "unsupported_grant_type",
    "access_denied",
];

fn seconds(value: &serde_json::Value) -> Option<f64> {
    match value {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Turns the identity provider's answer into a token or a classified error.
///
/// Classification follows the HTTP status and the `error` field, never the description text.
pub(crate) fn classify(
    status: u16,
    retry_after: Option<Duration>,
    body: &[u8],
    secret: &Secret,
) -> Result<TokenResponse, AuthError> {
    if (200..300).contains(&status) {
        let parsed: SuccessBody = serde_json::from_slice(body).map_err(|e| {
            AuthError::new(
                AuthErrorKind::Transient,
                format!("the token endpoint answered HTTP {status} with malformed JSON: {e}"),
            )
        })?;
        let bad = |what: &str| {
            let mut e = AuthError::new(
                AuthErrorKind::Transient,
                format!("the token endpoint's answer {what}"),
            );
            e.0.status = Some(status);
            e
        };
        let access_token = parsed
            .access_token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| bad("has no `access_token`"))?;
        let expires_in = match parsed.expires_in.as_ref().map(seconds) {
            None => return Err(bad("has no `expires_in`")),
            Some(None) => return Err(bad("has an `expires_in` that is not a number")),
            Some(Some(s)) if s <= 0.0 || !s.is_finite() => {
                return Err(bad(&format!("has a non-positive `expires_in` ({s})")));
            }
            Some(Some(s)) if s > MAX_LIFETIME_SECS => {
                return Err(bad(&format!(
                    "has an absurd `expires_in` ({s} s, more than a year)"
                )));
            }
            Some(Some(s)) => Duration::from_secs_f64(s),
        };
        let refresh_in = parsed
            .refresh_in
            .as_ref()
            .and_then(seconds)
            .filter(|s| *s > 0.0 && *s <= MAX_LIFETIME_SECS)
            .map(Duration::from_secs_f64)
            .filter(|r| *r < expires_in);
        return Ok(TokenResponse {
            access_token: Secret::new(access_token),
            token_type: parsed.token_type.unwrap_or_else(|| "Bearer".to_owned()),
            expires_in,
            refresh_in,
            refresh_token: parsed
                .refresh_token
                .filter(|t| !t.is_empty())
                .map(Secret::new),
            id_token: parsed.id_token.filter(|t| !t.is_empty()).map(Secret::new),
        });
    }

    let parsed = crate::idp_error::ErrorBody::parse(body);
    let oauth_error = parsed.error.clone();
    let description = parsed.description(Some(secret));
    let aadsts_code = parsed.aadsts(description.as_deref());
    let kind = if status == 429 || retry_after.is_some() {
        AuthErrorKind::Throttled
    } else if crate::retry::retryable_status(status, false).is_some()
        || oauth_error.as_deref() == Some("temporarily_unavailable")
    {
        AuthErrorKind::Transient
    } else if oauth_error
        .as_deref()
        .is_some_and(|e| PERMANENT_ERRORS.contains(&e))
        || matches!(status, 400 | 401 | 403 | 404)
    {
        AuthErrorKind::Permanent
    } else {
        AuthErrorKind::Transient
    };
    let headline = match kind {
        AuthErrorKind::Permanent => "the identity provider refused the token request",
        AuthErrorKind::Throttled => "the identity provider is throttling token requests",
        _ => "the token request failed",
    };
    let message = match &description {
        Some(d) => format!("{headline}: {d}"),
        None => headline.to_owned(),
    };
    let mut error = AuthError::new(kind, message);
    error.0.status = Some(status);
    error.0.oauth_error = oauth_error;
    error.0.aadsts_code = aadsts_code;
    error.0.trace_id = parsed.trace_id;
    error.0.correlation_id = parsed.correlation_id;
    error.0.retry_after = retry_after;
    Err(error)
}

/// The wall-clock time `expires_in` after now, for display and the expiry metric.
pub(crate) fn wall_clock_after(d: Duration) -> SystemTime {
    SystemTime::now() + d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> Secret {
        Secret::new("the-secret")
    }

    #[test]
    fn expires_in_as_number_or_string() {
        let ok = classify(
            200,
            None,
            br#"{"access_token":"t","expires_in":"3599","token_type":"Bearer"}"#,
            &secret(),
        )
        .unwrap();
        assert_eq!(ok.expires_in, Duration::from_secs(3599));
        let ok = classify(
            200,
            None,
            br#"{"access_token":"t","expires_in":60.5,"refresh_in":30}"#,
            &secret(),
        )
        .unwrap();
        assert_eq!(ok.expires_in, Duration::from_millis(60_500));
        assert_eq!(ok.refresh_in, Some(Duration::from_secs(30)));
    }

    #[test]
    fn missing_or_non_positive_expiry_is_an_error() {
        for body in [
            &br#"{"access_token":"t"}"#[..],
            br#"{"access_token":"t","expires_in":0}"#,
            br#"{"access_token":"t","expires_in":-5}"#,
            br#"{"access_token":"t","expires_in":"soon"}"#,
            // Absurd lifetimes overflowed the clock and killed the refresh task for good.
            br#"{"access_token":"t","expires_in":1e19}"#,
            br#"{"access_token":"t","expires_in":"1e30"}"#,
        ] {
            let e = classify(200, None, body, &secret()).unwrap_err();
            assert_eq!(e.kind(), AuthErrorKind::Transient);
            assert!(e.to_string().contains("expires_in"), "{e}");
        }
        // An absurd refresh_in is ignored (the policy's own refresh point is used).
        let ok = classify(
            200,
            None,
            br#"{"access_token":"t","expires_in":3600,"refresh_in":1e30}"#,
            &secret(),
        )
        .unwrap();
        assert_eq!(ok.refresh_in, None);
        let e = classify(200, None, b"<html>", &secret()).unwrap_err();
        assert!(e.to_string().contains("malformed JSON"), "{e}");
    }

    #[test]
    fn entra_bad_secret_is_permanent_with_its_codes() {
        let body = br#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided. Ensure the secret being sent is the-secret.\r\nTrace ID: abc","error_codes":[7000215],"trace_id":"trace-1","correlation_id":"corr-2"}"#;
        let e = classify(401, None, body, &secret()).unwrap_err();
        assert!(e.is_permanent());
        assert_eq!(e.aadsts_code(), Some(7000215));
        assert_eq!(e.oauth_error(), Some("invalid_client"));
        assert_eq!(e.trace_id(), Some("trace-1"));
        assert_eq!(e.correlation_id(), Some("corr-2"));
        let text = e.to_string();
        assert!(
            text.contains("AADSTS7000215")
                && text.contains("trace id trace-1")
                && text.contains("correlation id corr-2"),
            "{text}"
        );
        assert!(!text.contains("the-secret"), "{text}");
    }

    #[test]
    fn classification_by_status_and_error_field() {
        let kind =
            |status, body: &[u8], ra| classify(status, ra, body, &secret()).unwrap_err().kind();
        assert_eq!(kind(503, b"", None), AuthErrorKind::Transient);
        assert_eq!(kind(500, b"{}", None), AuthErrorKind::Transient);
        assert_eq!(kind(408, b"", None), AuthErrorKind::Transient);
        assert_eq!(kind(429, b"", None), AuthErrorKind::Throttled);
        assert_eq!(
            kind(503, b"", Some(Duration::from_secs(5))),
            AuthErrorKind::Throttled
        );
        assert_eq!(
            kind(400, br#"{"error":"invalid_scope"}"#, None),
            AuthErrorKind::Permanent
        );
        assert_eq!(
            kind(400, br#"{"error":"temporarily_unavailable"}"#, None),
            AuthErrorKind::Transient
        );
        assert_eq!(
            kind(
                400,
                br#"{"error":"invalid_request","error_codes":[90002]}"#,
                None
            ),
            AuthErrorKind::Permanent
        );
        assert_eq!(kind(401, b"not json", None), AuthErrorKind::Permanent);
    }

    #[test]
    fn basic_auth_urlencodes_before_base64() {
        assert_eq!(form_urlencode("a b:c/d%é"), "a+b%3Ac%2Fd%25%C3%A9");
    }
}
