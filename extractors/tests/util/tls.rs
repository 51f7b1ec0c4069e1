//! A private CA and a TLS server certificate it signed for 127.0.0.1, for tests of `ca-file`.
//! Shared by the integration tests (`util::tls`) and the postgres unit tests (`#[path]`).

use std::sync::Arc;

/// A CA, and a server certificate it signed for 127.0.0.1.
pub struct TestCa {
    /// The CA's certificate, PEM: what a `ca-file` holds.
    pub ca_pem: String,
    /// Accepts TLS with the server certificate.
    pub server: tokio_rustls::TlsAcceptor,
}

/// A new CA and server certificate (rcgen, fresh keys).
pub fn test_ca() -> TestCa {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
    TestCa {
        ca_pem: ca.pem(),
        server: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
    }
}
