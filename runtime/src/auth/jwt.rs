//! Reading the non-secret claims of a JWT access token (no signature check: display only).

use base64::Engine as _;
use serde::Deserialize;

/// The claims of an access token that are safe to show.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[non_exhaustive]
pub struct Claims {
    /// Audience.
    #[serde(default)]
    pub aud: Option<serde_json::Value>,
    /// Issuer.
    #[serde(default)]
    pub iss: Option<String>,
    /// Expiry, Unix seconds.
    #[serde(default)]
    pub exp: Option<i64>,
    /// Entra ID tenant.
    #[serde(default)]
    pub tid: Option<String>,
    /// Entra ID v1 application id.
    #[serde(default)]
    pub appid: Option<String>,
    /// Authorized party (v2 application id).
    #[serde(default)]
    pub azp: Option<String>,
    /// App roles.
    #[serde(default)]
    pub roles: Option<Vec<String>>,
    /// Subject.
    #[serde(default)]
    pub sub: Option<String>,
    /// Entra ID object id of the user or application.
    #[serde(default)]
    pub oid: Option<String>,
    /// Entra ID user principal name (a person's sign-in name).
    #[serde(default)]
    pub upn: Option<String>,
    /// The user's sign-in name in OpenID Connect.
    #[serde(default)]
    pub preferred_username: Option<String>,
}

/// The claims of `token` if it is a JWT.
pub(crate) fn decode_claims(token: &str) -> Option<Claims> {
    let mut parts = token.split('.');
    let (_header, payload, _sig) = (parts.next()?, parts.next()?, parts.next()?);
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_claims_and_ignores_non_jwts() {
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(r#"{"aud":"api://x","iss":"https://issuer","exp":1700000000,"tid":"t","azp":"app","roles":["r1"]}"#);
        let claims = decode_claims(&format!("e30.{payload}.sig")).unwrap();
        assert_eq!(claims.iss.as_deref(), Some("https://issuer"));
        assert_eq!(claims.exp, Some(1_700_000_000));
        assert_eq!(claims.roles, Some(vec!["r1".to_owned()]));
        assert_eq!(decode_claims("opaque-token"), None);
    }
}
