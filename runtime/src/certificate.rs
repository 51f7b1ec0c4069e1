//! Certificate client credentials: a `client_assertion` JWT (RFC 7523) signed with the
//! certificate's RSA key, as Entra ID and other OAuth2 providers accept instead of a secret.
//!
//! The header carries `x5t#S256` (the SHA-256 thumbprint Entra requires for PS256) and `x5t`
//! (SHA-1, for providers that only know that one); the claims are `aud` (the token endpoint),
//! `iss` and `sub` (the client id), a random `jti`, `iat`, `nbf` and `exp` (10 minutes).

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SecureRandom as _;
use aws_lc_rs::signature::{KeyPair as _, RsaKeyPair};
use base64::Engine as _;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::secret::Secret;

/// How long an assertion is valid (Entra accepts up to 10 minutes of clock skew anyway).
const ASSERTION_LIFETIME: Duration = Duration::from_secs(600);

/// The largest certificate file read (a PEM or PKCS#12 file is a few KiB).
const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// A loaded certificate and its private key. `Debug` shows the thumbprint, never the key.
pub(crate) struct ClientCertificate {
    key: RsaKeyPair,
    /// base64url(SHA-256(certificate DER)).
    x5t_s256: String,
    /// base64url(SHA-1(certificate DER)).
    x5t: String,
    /// RSASSA-PSS (PS256) rather than PKCS#1 v1.5 (RS256).
    pss: bool,
    path: String,
    /// The certificate's validity (`notBefore`, `notAfter`), if it could be read.
    validity: Option<(jiff::Timestamp, jiff::Timestamp)>,
}

impl fmt::Debug for ClientCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCertificate")
            .field("path", &self.path)
            .field("x5t#S256", &self.x5t_s256)
            .field("alg", &if self.pss { "PS256" } else { "RS256" })
            .finish_non_exhaustive()
    }
}

/// Why a certificate could not be loaded: the key under `certificate` and the message (which
/// names the file, never the password or key material).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CertificateError {
    pub(crate) key: &'static str,
    pub(crate) message: String,
}

fn problem(key: &'static str, message: impl Into<String>) -> CertificateError {
    CertificateError {
        key,
        message: message.into(),
    }
}

impl ClientCertificate {
    /// Reads `config.path`: PKCS#12 (`.pfx`, `.p12`, or any file that is not PEM) with
    /// `password`, else PEM with a `CERTIFICATE` block and an RSA `PRIVATE KEY` block. Checks
    /// that the key belongs to the (first) certificate.
    pub(crate) fn load(
        path: &str,
        password: Option<&Secret>,
        pss: bool,
    ) -> Result<ClientCertificate, CertificateError> {
        let size = std::fs::metadata(path)
            .map_err(|e| problem("path", format!("cannot read `{path}`: {e}")))?
            .len();
        if size > MAX_FILE_BYTES {
            return Err(problem(
                "path",
                format!("`{path}` is {size} bytes; a certificate file is at most 1 MiB"),
            ));
        }
        let bytes = std::fs::read(path)
            .map_err(|e| problem("path", format!("cannot read `{path}`: {e}")))?;
        let is_pem = bytes.windows(11).any(|w| w == b"-----BEGIN ");
        let (cert, key) = if is_pem {
            if password.is_some() {
                return Err(problem(
                    "password",
                    format!(
                        "`{path}` is PEM; `password` applies to PKCS#12 files (.pfx/.p12) only (encrypted PEM keys are not supported: export the key unencrypted, or use a .pfx)"
                    ),
                ));
            }
            from_pem(path, &bytes)?
        } else {
            from_pkcs12(path, &bytes, password.map_or("", Secret::expose_secret))?
        };
        let public = key.public_key().as_ref();
        // The certificate's subjectPublicKey holds exactly the key's RSAPublicKey DER.
        if !cert.windows(public.len()).any(|w| w == public) {
            return Err(problem(
                "path",
                format!("`{path}`: the private key does not belong to the certificate"),
            ));
        }
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let sha256 = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &cert);
        let sha1 = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, &cert);
        Ok(ClientCertificate {
            key,
            x5t_s256: b64.encode(sha256.as_ref()),
            x5t: b64.encode(sha1.as_ref()),
            pss,
            path: path.to_owned(),
            validity: validity(&cert),
        })
    }

    /// Why the certificate is refused at `now` (expired, or not valid yet), naming the file and
    /// the date: the identity provider refuses an assertion signed with it (Entra:
    /// AADSTS700027), but only when a token is asked for.
    pub(crate) fn validity_problem(&self, now: jiff::Timestamp) -> Option<String> {
        let (not_before, not_after) = self.validity?;
        if now > not_after {
            Some(format!(
                "the certificate `{}` expired at {not_after} (notAfter); the identity provider refuses it (Entra: AADSTS700027): renew it and upload the new one to the app registration",
                self.path
            ))
        } else if now < not_before {
            Some(format!(
                "the certificate `{}` is not valid before {not_before} (notBefore); the identity provider refuses it until then (or this machine's clock is wrong)",
                self.path
            ))
        } else {
            None
        }
    }

    /// A fresh signed assertion for `audience` (the token endpoint) and `client_id`.
    pub(crate) fn assertion(&self, audience: &str, client_id: &str) -> Result<Secret, String> {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let (alg, encoding): (&str, &'static dyn aws_lc_rs::signature::RsaEncoding) = if self.pss {
            ("PS256", &aws_lc_rs::signature::RSA_PSS_SHA256)
        } else {
            ("RS256", &aws_lc_rs::signature::RSA_PKCS1_SHA256)
        };
        let header = serde_json::json!({
            "alg": alg,
            "typ": "JWT",
            "x5t#S256": self.x5t_s256,
            "x5t": self.x5t,
        });
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let mut jti = [0u8; 16];
        rng.fill(&mut jti)
            .map_err(|_| "the system random source failed".to_owned())?;
        let claims = serde_json::json!({
            "aud": audience,
            "iss": client_id,
            "sub": client_id,
            "jti": jti.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            "iat": now,
            "nbf": now,
            "exp": now + ASSERTION_LIFETIME.as_secs(),
        });
        let signing_input = format!(
            "{}.{}",
            b64.encode(header.to_string()),
            b64.encode(claims.to_string())
        );
        let mut signature = vec![0u8; self.key.public_modulus_len()];
        self.key
            .sign(encoding, &rng, signing_input.as_bytes(), &mut signature)
            .map_err(|_| format!("cannot sign the client assertion with `{}`", self.path))?;
        Ok(Secret::new(format!(
            "{signing_input}.{}",
            b64.encode(signature)
        )))
    }
}

fn rsa_key(path: &str, key: &PrivateKeyDer<'_>) -> Result<RsaKeyPair, CertificateError> {
    let parsed = match key {
        PrivateKeyDer::Pkcs8(der) => RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()),
        PrivateKeyDer::Pkcs1(der) => RsaKeyPair::from_der(der.secret_pkcs1_der()),
        _ => {
            return Err(problem(
                "path",
                format!("`{path}`: the private key is not an RSA key (only RSA is supported)"),
            ));
        }
    };
    parsed.map_err(|e| {
        problem(
            "path",
            format!("`{path}`: the private key is not a usable RSA key (2048 to 8192 bits): {e}"),
        )
    })
}

/// A DER element at the front of `der`: its tag, its contents and what follows it.
fn der_element(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// A DER UTCTime (`YYMMDDHHMMSSZ`, years 1950-2049) or GeneralizedTime (`YYYYMMDDHHMMSSZ`).
fn der_time(tag: u8, text: &[u8]) -> Option<jiff::Timestamp> {
    let text = std::str::from_utf8(text).ok()?.strip_suffix('Z')?;
    let full = match (tag, text.len()) {
        (0x17, 12) => {
            let yy: u32 = text[..2].parse().ok()?;
            format!("{}{text}", if yy < 50 { "20" } else { "19" })
        }
        (0x18, 14) => text.to_owned(),
        _ => return None,
    };
    let n = |r: std::ops::Range<usize>| full.get(r)?.parse::<i16>().ok();
    let civil = jiff::civil::datetime(
        n(0..4)?,
        n(4..6)? as i8,
        n(6..8)? as i8,
        n(8..10)? as i8,
        n(10..12)? as i8,
        n(12..14)? as i8,
        0,
    );
    civil
        .to_zoned(jiff::tz::TimeZone::UTC)
        .ok()
        .map(|z| z.timestamp())
}

/// The validity (`notBefore`, `notAfter`) of an X.509 certificate in DER: the fifth element of
/// its `tbsCertificate` (after the optional `[0]` version, the serial number, the signature
/// algorithm and the issuer).
fn validity(cert: &[u8]) -> Option<(jiff::Timestamp, jiff::Timestamp)> {
    let (_, certificate, _) = der_element(cert)?;
    let (_, tbs, _) = der_element(certificate)?;
    let mut rest = tbs;
    if rest.first() == Some(&0xa0) {
        rest = der_element(rest)?.2;
    }
    for _ in 0..3 {
        rest = der_element(rest)?.2; // serial, signature algorithm, issuer
    }
    let (_, validity, _) = der_element(rest)?;
    let (tag, not_before, rest) = der_element(validity)?;
    let not_before = der_time(tag, not_before)?;
    let (tag, not_after, _) = der_element(rest)?;
    Some((not_before, der_time(tag, not_after)?))
}

fn from_pem(path: &str, bytes: &[u8]) -> Result<(Vec<u8>, RsaKeyPair), CertificateError> {
    if bytes
        .windows(9)
        .any(|w| w == b"ENCRYPTED" || w == b"Proc-Type")
    {
        return Err(problem(
            "path",
            format!(
                "`{path}`: the private key is encrypted; export it unencrypted (`openssl pkcs8 -nocrypt`), or use a .pfx with `password`"
            ),
        ));
    }
    let cert = CertificateDer::pem_slice_iter(bytes)
        .next()
        .and_then(Result::ok)
        .ok_or_else(|| {
            problem(
                "path",
                format!("`{path}` holds no `-----BEGIN CERTIFICATE-----` block"),
            )
        })?;
    let key = PrivateKeyDer::from_pem_slice(bytes).map_err(|_| {
        problem(
            "path",
            format!(
                "`{path}` holds no private key (expected a `PRIVATE KEY` or `RSA PRIVATE KEY` block next to the certificate)"
            ),
        )
    })?;
    Ok((cert.to_vec(), rsa_key(path, &key)?))
}

fn from_pkcs12(
    path: &str,
    bytes: &[u8],
    password: &str,
) -> Result<(Vec<u8>, RsaKeyPair), CertificateError> {
    let store = p12_keystore::KeyStore::from_pkcs12(
        bytes,
        password,
        p12_keystore::Pkcs12ImportPolicy::Relaxed,
    )
    .map_err(|e| {
        let text = e.to_string();
        if text.to_ascii_lowercase().contains("mac") {
            problem(
                "password",
                format!(
                    "`{path}`: wrong password for the PKCS#12 file (its integrity check failed)"
                ),
            )
        } else {
            problem(
                "path",
                format!("`{path}` is neither PEM nor a readable PKCS#12 file: {text}"),
            )
        }
    })?;
    let (_, chain) = store.private_key_chain().ok_or_else(|| {
        problem(
            "path",
            format!("`{path}`: the PKCS#12 file holds no private key"),
        )
    })?;
    let cert = chain.certs().first().ok_or_else(|| {
        problem(
            "path",
            format!("`{path}`: the PKCS#12 file holds no certificate for its private key"),
        )
    })?;
    let key = PrivateKeyDer::Pkcs8(chain.key().as_der().to_vec().into());
    Ok((cert.as_der().to_vec(), rsa_key(path, &key)?))
}

#[cfg(test)]
#[path = "../tests/support/certs.rs"]
mod test_certs;

#[cfg(test)]
mod tests {
    use super::*;

    use super::test_certs::rsa_pem_pair as pem_pair;

    /// Loads `path` as an RS256 PEM (no password).
    fn load(path: &std::path::Path) -> Result<ClientCertificate, CertificateError> {
        ClientCertificate::load(&path.display().to_string(), None, false)
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, _) = pem_pair();
        let (_, other_key) = pem_pair();
        let path = dir.path().join("mixed.pem");
        std::fs::write(&path, format!("{cert}{other_key}")).unwrap();
        let e = load(&path).unwrap_err();
        assert!(
            e.message.contains("does not belong to the certificate"),
            "{e:?}"
        );
    }

    #[test]
    fn the_validity_is_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = pem_pair();
        let path = dir.path().join("client.pem");
        std::fs::write(&path, format!("{cert}{key}")).unwrap();
        let loaded = load(&path).unwrap();
        // rcgen's defaults: 1975-01-01 (UTCTime) to 4096-01-01 (GeneralizedTime).
        let (not_before, not_after) = loaded.validity.unwrap();
        assert_eq!(not_before.to_string(), "1975-01-01T00:00:00Z");
        assert_eq!(not_after.to_string(), "4096-01-01T00:00:00Z");
        assert_eq!(loaded.validity_problem(jiff::Timestamp::now()), None);
        let late: jiff::Timestamp = "4100-01-01T00:00:00Z".parse().unwrap();
        let e = loaded.validity_problem(late).unwrap();
        assert!(e.contains("expired at 4096-01-01T00:00:00Z"), "{e}");
        let early: jiff::Timestamp = "1970-01-02T00:00:00Z".parse().unwrap();
        assert!(
            loaded
                .validity_problem(early)
                .unwrap()
                .contains("not valid before")
        );
        // Truncated DER is no certificate, not a panic.
        assert_eq!(validity(&[0x30, 0x82, 0xff]), None);
    }

    #[test]
    fn debug_shows_the_thumbprint_not_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = pem_pair();
        let path = dir.path().join("client.pem");
        std::fs::write(&path, format!("{cert}{key}")).unwrap();
        let loaded = load(&path).unwrap();
        let shown = format!("{loaded:?}");
        assert!(shown.contains(&loaded.x5t_s256), "{shown}");
        let key_body = key.lines().nth(1).unwrap();
        assert!(!shown.contains(key_body), "{shown}");
    }

    #[test]
    fn missing_and_garbage_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let e = load(&dir.path().join("nope.pem")).unwrap_err();
        assert_eq!(e.key, "path");
        assert!(e.message.contains("nope.pem"), "{e:?}");
        let garbage = dir.path().join("garbage.pfx");
        std::fs::write(&garbage, b"\x00\x01not pkcs12").unwrap();
        let e = load(&garbage).unwrap_err();
        assert!(e.message.contains("neither PEM nor"), "{e:?}");
    }
}
