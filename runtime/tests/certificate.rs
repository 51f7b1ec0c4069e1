//! Certificate client credentials: the Entra request shape (RFC 7523 `client_assertion`), checked
//! with wiremock on files made by the `openssl` command line (PEM, and PKCS#12 with a password),
//! and the signature verified with the certificate's public key.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use extractor_runtime::auth::{TokenManager, TokenManagerOptions, fetch_once};
use extractor_runtime::config::{Config, LoadOptions};
use extractor_runtime::net::Network;
use serde_json::Value;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

#[path = "support/openssl.rs"]
mod openssl;

/// A key and self-signed certificate (PEM) and the same as a `.pfx` with a password, made by
/// `openssl`; `None` (after saying why) where openssl is missing.
struct Files {
    pem: PathBuf,
    pfx: PathBuf,
    key: PathBuf,
    cert_der: Vec<u8>,
}

fn files(dir: &Path) -> Option<Files> {
    if !openssl::available() {
        return None;
    }
    openssl::self_signed(dir, "key.pem", "cert.pem");
    openssl::run(
        dir,
        &[
            "pkcs12",
            "-export",
            "-inkey",
            "key.pem",
            "-in",
            "cert.pem",
            "-passout",
            "pass:pfx-pw-81",
            "-out",
            "client.pfx",
        ],
    );
    openssl::run(
        dir,
        &[
            "x509", "-in", "cert.pem", "-outform", "der", "-out", "cert.der",
        ],
    );
    let pem = dir.join("client.pem");
    let both = std::fs::read_to_string(dir.join("cert.pem")).unwrap()
        + &std::fs::read_to_string(dir.join("key.pem")).unwrap();
    std::fs::write(&pem, both).unwrap();
    Some(Files {
        pem,
        pfx: dir.join("client.pfx"),
        key: dir.join("key.pem"),
        cert_der: std::fs::read(dir.join("cert.der")).unwrap(),
    })
}

fn load(yaml: &str) -> Result<Config, String> {
    Config::from_yaml(yaml, None, &|_: &str| None, &LoadOptions::default())
        .map_err(|e| e.to_string())
}

fn config(token_url: &str, certificate: &str) -> Config {
    load(&format!(
        "version: 1\ncognite:\n  project: p\n  idp-authentication:\n    client-id: app-1234\n    token-url: '{token_url}'\n    scopes: [https://api.cognitedata.com/.default]\n    certificate: {certificate}\n"
    ))
    .unwrap()
}

/// A token endpoint that keeps every request's form.
async fn idp() -> (MockServer, Arc<Mutex<Vec<Vec<(String, String)>>>>) {
    let server = MockServer::start().await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    Mock::given(method("POST"))
        .and(path("/tenant-1/oauth2/v2.0/token"))
        .respond_with(move |r: &Request| {
            let form = parse_form(&String::from_utf8_lossy(&r.body));
            s.lock().unwrap().push(form);
            ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "access_token": "tok", "token_type": "Bearer", "expires_in": 3600
            }))
        })
        .mount(&server)
        .await;
    (server, seen)
}

/// `application/x-www-form-urlencoded`, decoded.
fn parse_form(body: &str) -> Vec<(String, String)> {
    let decode = |s: &str| {
        let bytes = s.replace('+', " ").into_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' && i + 2 < bytes.len() {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        String::from_utf8(out).unwrap()
    };
    body.split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

fn field<'a>(form: &'a [(String, String)], key: &str) -> Option<&'a str> {
    form.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// Decodes and checks one assertion: header, claims, signature. Returns the `jti`.
fn check_assertion(assertion: &str, files: &Files, token_url: &str, pss: bool) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts: Vec<&str> = assertion.split('.').collect();
    assert_eq!(parts.len(), 3, "a compact JWS");
    let header: Value = serde_json::from_slice(&b64.decode(parts[0]).unwrap()).unwrap();
    let claims: Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
    let sha256 = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &files.cert_der);
    let sha1 = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
        &files.cert_der,
    );
    assert_eq!(header["alg"], if pss { "PS256" } else { "RS256" });
    assert_eq!(header["typ"], "JWT");
    assert_eq!(header["x5t#S256"], b64.encode(sha256.as_ref()));
    assert_eq!(header["x5t"], b64.encode(sha1.as_ref()));
    assert_eq!(claims["aud"], token_url);
    assert_eq!(claims["iss"], "app-1234");
    assert_eq!(claims["sub"], "app-1234");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let iat = claims["iat"].as_u64().unwrap();
    assert!(iat.abs_diff(now) < 60, "iat {iat} vs now {now}");
    assert_eq!(claims["nbf"].as_u64(), Some(iat));
    assert_eq!(claims["exp"].as_u64(), Some(iat + 600));
    let jti = claims["jti"].as_str().unwrap().to_owned();
    assert_eq!(jti.len(), 32);

    // The signature, with the public key of the key openssl made.
    use aws_lc_rs::signature::KeyPair as _;
    use rustls_pki_types::pem::PemObject as _;
    let key = rustls_pki_types::PrivateKeyDer::from_pem_file(&files.key).unwrap();
    let pair = aws_lc_rs::signature::RsaKeyPair::from_pkcs8(key.secret_der()).unwrap();
    let algorithm = if pss {
        &aws_lc_rs::signature::RSA_PSS_2048_8192_SHA256
    } else {
        &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256
    };
    let public =
        aws_lc_rs::signature::UnparsedPublicKey::new(algorithm, pair.public_key().as_ref());
    let signed = format!("{}.{}", parts[0], parts[1]);
    public
        .verify(signed.as_bytes(), &b64.decode(parts[2]).unwrap())
        .expect("the signature verifies with the certificate's key");
    jti
}

/// PEM (certificate + key): the token manager sends Entra's request shape, no secret, and a new
/// `jti` at every request.
#[tokio::test]
async fn a_pem_certificate_signs_an_rs256_assertion_in_entras_shape() {
    let dir = tempfile::tempdir().unwrap();
    let Some(files) = files(dir.path()) else {
        return;
    };
    let (server, seen) = idp().await;
    let token_url = format!("{}/tenant-1/oauth2/v2.0/token", server.uri());
    let config = config(&token_url, &format!("{{path: '{}'}}", files.pem.display()));
    let idp = config.cognite.idp_authentication.as_ref().unwrap();
    let tokens = TokenManager::spawn(idp, TokenManagerOptions::default(), None).unwrap();
    let token = tokens.get().await.unwrap();
    assert_eq!(token.access_token().expose_secret(), "tok");
    fetch_once(idp, &Network::default()).await.unwrap();
    tokens.shutdown();

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    let mut jtis = Vec::new();
    for form in &seen {
        assert_eq!(field(form, "grant_type"), Some("client_credentials"));
        assert_eq!(field(form, "client_id"), Some("app-1234"));
        assert_eq!(
            field(form, "client_assertion_type"),
            Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
        );
        assert_eq!(
            field(form, "scope"),
            Some("https://api.cognitedata.com/.default")
        );
        assert_eq!(field(form, "client_secret"), None);
        jtis.push(check_assertion(
            field(form, "client_assertion").unwrap(),
            &files,
            &token_url,
            false,
        ));
    }
    assert_ne!(jtis[0], jtis[1], "every assertion has its own jti");
}

/// A `.pfx` made by openssl 3 (AES-256, PBKDF2) with its password, signing with PS256; the token
/// endpoint comes from `authority-url`.
#[tokio::test]
async fn a_pfx_with_a_password_signs_ps256_at_the_authority_url() {
    let dir = tempfile::tempdir().unwrap();
    let Some(files) = files(dir.path()) else {
        return;
    };
    let (server, seen) = idp().await;
    let authority = format!("{}/tenant-1", server.uri());
    let config = load(&format!(
        "version: 1\ncognite:\n  project: p\n  idp-authentication:\n    client-id: app-1234\n    scopes: [s]\n    certificate: {{path: '{}', password: pfx-pw-81, authority-url: '{authority}/', algorithm: ps256}}\n",
        files.pfx.display()
    ))
    .unwrap();
    let idp = config.cognite.idp_authentication.as_ref().unwrap();
    let token_url = format!("{authority}/oauth2/v2.0/token");
    assert_eq!(idp.token_endpoint(), token_url);
    fetch_once(idp, &Network::default()).await.unwrap();
    let seen = seen.lock().unwrap().clone();
    check_assertion(
        field(&seen[0], "client_assertion").unwrap(),
        &files,
        &token_url,
        true,
    );
    assert!(!format!("{config:?}").contains("pfx-pw-81"));
}

/// Wrong password, a secret next to a certificate, and no credential: config errors at the key
/// they concern, naming the file, never showing the password.
#[test]
fn certificate_problems_are_config_errors_at_their_key() {
    let dir = tempfile::tempdir().unwrap();
    let Some(files) = files(dir.path()) else {
        return;
    };
    let base = "version: 1\ncognite:\n  project: p\n  idp-authentication:\n    client-id: c\n    token-url: https://login.example.com/token\n    scopes: [s]\n";
    let e = load(&format!(
        "{base}    certificate: {{path: '{}', password: not-the-pw-77}}\n",
        files.pfx.display()
    ))
    .unwrap_err();
    assert!(
        e.starts_with("8:")
            && e.contains(": cognite.idp-authentication.certificate.password: ")
            && e.contains("wrong password")
            && e.contains("client.pfx")
            && !e.contains("not-the-pw-77"),
        "{e}"
    );
    // Both: the certificate is used, as python-extractor-utils does, and the load says so.
    let env = |_: &str| None;
    let both = Config::from_yaml(
        &format!(
            "{base}    secret: s\n    certificate: {{path: '{}'}}\n",
            files.pem.display()
        ),
        None,
        &env,
        &LoadOptions::default(),
    )
    .unwrap();
    assert!(
        both.warnings()[0].contains("cognite.idp-authentication.secret: both `secret` and `certificate` are given: the certificate is used"),
        "{:?}",
        both.warnings()
    );
    assert!(
        both.cognite
            .idp_authentication
            .unwrap()
            .certificate
            .is_some()
    );
    let e = load(base).unwrap_err();
    assert!(
        e.contains(
            "cognite.idp-authentication.secret: missing required key `secret` (or `certificate`"
        ),
        "{e}"
    );
    let e = load(&format!(
        "{base}    certificate: {{path: '{}', password: x}}\n",
        files.pem.display()
    ))
    .unwrap_err();
    assert!(
        e.contains("certificate.password: ") && e.contains("applies to PKCS#12 files"),
        "{e}"
    );
}
