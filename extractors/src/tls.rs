//! TLS settings the built-in extractors share: a client's trust (a CA file or the system's
//! roots) and certificate, and a server's certificate. Files are read when a run starts, so a
//! renewed certificate is taken by the next run.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A client's `tls:` block: whom to trust, and the certificate to show (mutual TLS).
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ClientTls {
    /// A PEM file of the CA certificates to trust instead of the system's roots (a private
    /// CA).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// A PEM file with this client's certificate (and its chain), for servers that ask for
    /// one; with `key-file`.
    #[serde(default)]
    pub certificate_file: Option<PathBuf>,
    /// The PEM file with the private key of `certificate-file` (PKCS#8, PKCS#1 or SEC1,
    /// unencrypted).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

/// A server's `tls:` block: the certificate it shows.
#[derive(Clone, Debug, PartialEq, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServerTls {
    /// A PEM file with the server's certificate and its chain.
    pub certificate_file: PathBuf,
    /// The PEM file with its private key (PKCS#8, PKCS#1 or SEC1, unencrypted).
    pub key_file: PathBuf,
}

impl ClientTls {
    /// Config problems (`certificate-file` without `key-file`, or the other way), as
    /// (key, message).
    pub fn problems(&self) -> Vec<(&'static str, &'static str)> {
        match (&self.certificate_file, &self.key_file) {
            (Some(_), None) => vec![("key-file", "`certificate-file` needs `key-file`")],
            (None, Some(_)) => vec![("certificate-file", "`key-file` needs `certificate-file`")],
            _ => Vec::new(),
        }
    }

    /// The rustls client config: the server is checked against `ca-file` or the system's
    /// roots; the client certificate is shown when the server asks. Errors name the file.
    pub fn client_config(&self) -> Result<rustls::ClientConfig, String> {
        let builder = match &self.ca_file {
            Some(path) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in certificates(path)? {
                    roots.add(cert).map_err(|e| {
                        format!("`{}`: a certificate is not usable: {e}", path.display())
                    })?;
                }
                rustls::ClientConfig::builder().with_root_certificates(roots)
            }
            None => {
                use rustls_platform_verifier::BuilderVerifierExt;
                rustls::ClientConfig::builder()
                    .with_platform_verifier()
                    .map_err(|e| format!("cannot load the system's certificates: {e}"))?
            }
        };
        match (&self.certificate_file, &self.key_file) {
            (Some(cert), Some(key)) => builder
                .with_client_auth_cert(certificates(cert)?, private_key(key)?)
                .map_err(|e| {
                    format!(
                        "`{}` and `{}` do not make a client certificate: {e}",
                        cert.display(),
                        key.display()
                    )
                }),
            _ => Ok(builder.with_no_client_auth()),
        }
    }
}

impl ServerTls {
    /// A TLS acceptor with this certificate and key. Errors name the file.
    pub fn acceptor(&self) -> Result<tokio_rustls::TlsAcceptor, String> {
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                certificates(&self.certificate_file)?,
                private_key(&self.key_file)?,
            )
            .map_err(|e| {
                format!(
                    "`{}` and `{}` do not make a server certificate: {e}",
                    self.certificate_file.display(),
                    self.key_file.display()
                )
            })?;
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }
}

/// The certificates of a PEM file: at least one.
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("`{}` is not PEM certificates: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("`{}` holds no certificate", path.display()));
    }
    Ok(certs)
}

/// The private key of a PEM file.
fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        format!(
            "`{}` holds no usable private key (PEM, unencrypted): {e}",
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_that_are_missing_or_not_pem_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let tls = ClientTls {
            ca_file: Some(junk.clone()),
            ..ClientTls::default()
        };
        let e = tls.client_config().unwrap_err();
        assert!(
            e.contains("junk.pem") && e.contains("no certificate"),
            "{e}"
        );
        let tls = ClientTls {
            ca_file: Some(dir.path().join("missing.pem")),
            ..ClientTls::default()
        };
        let e = tls.client_config().unwrap_err();
        assert!(
            e.contains("cannot read") && e.contains("missing.pem"),
            "{e}"
        );
        let server = ServerTls {
            certificate_file: junk.clone(),
            key_file: junk,
        };
        assert!(server.acceptor().err().unwrap().contains("junk.pem"));
        let half = ClientTls {
            certificate_file: Some(dir.path().join("c.pem")),
            ..ClientTls::default()
        };
        assert_eq!(half.problems()[0].0, "key-file");
    }

    #[test]
    fn a_generated_certificate_makes_a_server_and_a_client_that_trusts_it() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (c, k) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        ServerTls {
            certificate_file: c.clone(),
            key_file: k.clone(),
        }
        .acceptor()
        .unwrap();
        ClientTls {
            ca_file: Some(c.clone()),
            certificate_file: Some(c),
            key_file: Some(k),
        }
        .client_config()
        .unwrap();
    }
}
