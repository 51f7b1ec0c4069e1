//! A private CA and a TLS server certificate it signed for 127.0.0.1, for tests of `ca-file`, and
//! a TLS front that puts a plain HTTP fake behind it. Shared by the integration tests and benches
//! (`util::tls`) and the postgres unit tests (`#[path]`).

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

#[allow(dead_code)] // the postgres unit tests include this file for `test_ca` only
/// A TLS front on 127.0.0.1 (the certificate of `acceptor`) for the plain HTTP server `target`:
/// each connection is accepted, decrypted and copied to `target`.
pub async fn tls_front(
    target: std::net::SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(client).await else {
                    return; // the client refused our certificate
                };
                let Ok(mut server) = tokio::net::TcpStream::connect(target).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut server).await;
            });
        }
    });
    addr
}

#[allow(dead_code)] // the postgres unit tests include this file for `test_ca` only
/// PEM files of a private CA, a server certificate it signed for 127.0.0.1, and a client
/// certificate it signed: what a broker or a listener and their clients are given.
pub struct Pki {
    /// The CA's certificate.
    pub ca: std::path::PathBuf,
    /// The server's certificate and key.
    pub server_cert: std::path::PathBuf,
    /// The server's key.
    pub server_key: std::path::PathBuf,
    /// The client's certificate.
    pub client_cert: std::path::PathBuf,
    /// The client's key.
    pub client_key: std::path::PathBuf,
}

#[allow(dead_code)]
/// Writes a new [`Pki`] into `dir` (readable by all: a broker started as root reads them as
/// its own user).
pub fn pki(dir: &std::path::Path) -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    use std::os::unix::fs::PermissionsExt as _;
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // OpenSSL (the broker) finds a chain by names and wants a CA to say it signs certificates.
    params
        .distinguished_name
        .push(DnType::CommonName, "extractor test CA");
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        path
    };
    let signed = |name: &str| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.signed_by(&key, &ca).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = signed("127.0.0.1");
    let (client_cert, client_key) = signed("extractor");
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    Pki {
        ca: write("ca.pem", ca.pem()),
        server_cert: write("server.pem", server_cert),
        server_key: write("server.key", server_key),
        client_cert: write("client.pem", client_cert),
        client_key: write("client.key", client_key),
    }
}
