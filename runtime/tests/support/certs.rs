//! A self-signed certificate and its RSA key (aws-lc-rs makes the key, rcgen signs), as PEM:
//! for the certificate sign-in's tests. A standalone file: `support` has it, and the
//! certificate module's unit tests `#[path]`-include it.
#![allow(dead_code)]

/// `(certificate, private key)`, both PEM.
pub fn rsa_pem_pair() -> (String, String) {
    use aws_lc_rs::encoding::AsDer as _;
    let rsa = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let der = rsa.as_der().unwrap();
    let key = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
        &der.as_ref().to_vec().into(),
        &rcgen::PKCS_RSA_SHA256,
    )
    .unwrap();
    let cert = rcgen::CertificateParams::new(vec!["client".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    (cert.pem(), key.serialize_pem())
}
