//! [`Network`]: what every outbound HTTP client shares: extra CA roots (`cognite.connection.ca-file`)
//! and the forward proxy (`cognite.connection.proxy`, `no-proxy`, or `HTTPS_PROXY`/`NO_PROXY`).
//!
//! The identity provider, CDF, the Pushgateway and the http extractor all build their clients
//! from [`Network::client_builder`], so a TLS-inspecting corporate proxy with a private CA is
//! configured once.

use std::fmt;

use crate::secret::Secret;

/// The network settings every outbound HTTP client is built with.
///
/// The default trusts the system's roots and honours `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`
/// and `NO_PROXY` (upper or lower case), as curl does.
#[derive(Clone, Default)]
pub struct Network {
    /// Where the extra roots came from, for messages.
    ca_file: Option<String>,
    /// Roots added to the system's (never replacing them).
    ca: Vec<rustls_pki_types::CertificateDer<'static>>,
    /// The TLS client config every client of this network (and of its clones) shares, built
    /// with the first client: the system's roots are loaded once, not once per client.
    tls: std::sync::Arc<std::sync::OnceLock<Option<rustls::ClientConfig>>>,
    /// The proxy URL without its password, for messages.
    proxy_shown: Option<String>,
    /// The configured proxy; `None` means the environment's.
    proxy: Option<reqwest::Proxy>,
    /// `cognite.connection.timeout`: one request's limit, the proxy hop included.
    timeout: Option<std::time::Duration>,
}

impl fmt::Debug for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Network")
            .field("ca_file", &self.ca_file)
            .field("ca_certificates", &self.ca.len())
            .field("proxy", &self.proxy_shown)
            .finish()
    }
}

impl Network {
    /// Reads `ca_file` (a PEM bundle) and checks `proxy` (with `no_proxy`), as
    /// `cognite.connection` gives them ([`ConnectionConfig::network`]). The error names the key
    /// and the file; it never shows a proxy password.
    ///
    /// [`ConnectionConfig::network`]: crate::config::ConnectionConfig::network
    pub(crate) fn new(
        ca_file: Option<&str>,
        proxy_url: Option<&Secret>,
        no_proxy: &[String],
    ) -> Result<Network, NetworkError> {
        let mut network = Network::default();
        let mut problems = Vec::new();
        if let Some(path) = ca_file {
            match read_ca_file(path) {
                Ok(ca) => {
                    network.ca = ca;
                    network.ca_file = Some(path.to_owned());
                }
                Err(message) => problems.push(("ca-file", message)),
            }
        }
        match proxy_url {
            Some(url) => match proxy(url.expose_secret(), no_proxy) {
                Ok(proxy) => {
                    network.proxy = Some(proxy);
                    network.proxy_shown = Some(crate::secret::redact_url(url.expose_secret()));
                }
                Err(message) => problems.push(("proxy", message)),
            },
            None if !no_proxy.is_empty() => problems.push((
                "no-proxy",
                "`no-proxy` applies to `proxy`, which is not set; with a proxy from HTTPS_PROXY use the NO_PROXY variable".into(),
            )),
            None => {}
        }
        if problems.is_empty() {
            Ok(network)
        } else {
            Err(NetworkError { problems })
        }
    }

    /// This network with `timeout` for the runtime's own requests (`cognite.connection.timeout`).
    pub(crate) fn with_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// `cognite.connection.timeout` (30 s when unknown): the whole of one request, from the
    /// connection (through the proxy, whose CONNECT may never be answered) to the last byte.
    pub(crate) fn timeout(&self) -> std::time::Duration {
        self.timeout.unwrap_or(std::time::Duration::from_secs(30))
    }

    /// The proxy requests go through, for messages, without its password: the configured one,
    /// else the environment's.
    fn proxy_name(&self) -> Option<String> {
        match &self.proxy_shown {
            Some(p) => Some(format!("{p} (cognite.connection.proxy)")),
            None => env_proxy().map(|p| format!("{} (HTTPS_PROXY)", crate::secret::redact_url(&p))),
        }
    }

    /// What a 407 from this network's proxy means, naming the proxy (never its password).
    pub(crate) fn proxy_refused(&self) -> String {
        let name = self
            .proxy_name()
            .unwrap_or_else(|| "on the way (none is configured here)".to_owned());
        format!(
            "the proxy {name} refused the request (HTTP 407 Proxy Authentication Required): check the proxy's user and password"
        )
    }

    /// [`explain`], naming this network's proxy when it refused the connection.
    pub(crate) fn explain(&self, e: reqwest::Error) -> String {
        let refused = refused_by_proxy(&e);
        let chain = crate::error_chain::render(&e.without_url());
        if refused {
            return format!("{} ({chain})", self.proxy_refused());
        }
        with_hints(chain)
    }

    /// A client builder with the network's TLS config (the system's roots and the extra ones,
    /// shared by every client of the network), the proxy and our `User-Agent`. Callers add
    /// their timeouts and redirect policy, then build.
    pub fn client_builder(&self) -> reqwest::ClientBuilder {
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("extractor-runtime/", env!("CARGO_PKG_VERSION")));
        match self.tls.get_or_init(|| self.tls_config()) {
            Some(tls) => builder = builder.tls_backend_preconfigured(tls.clone()),
            // reqwest builds its own and reports what failed when the client is built.
            None if !self.ca.is_empty() => {
                builder = builder.tls_certs_merge(
                    self.ca
                        .iter()
                        .filter_map(|c| reqwest::Certificate::from_der(c).ok()),
                );
            }
            None => {}
        }
        if let Some(proxy) = &self.proxy {
            builder = builder.proxy(proxy.clone());
        }
        builder
    }

    /// What reqwest would build for a client trusting the system's roots plus `ca` (the
    /// platform verifier, TLS 1.2 and 1.3, HTTP/1.1 by ALPN), built once. `None` when the
    /// verifier cannot be made.
    fn tls_config(&self) -> Option<rustls::ClientConfig> {
        let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier = if self.ca.is_empty() {
            rustls_platform_verifier::Verifier::new(provider.clone())
        } else {
            rustls_platform_verifier::Verifier::new_with_extra_roots(
                self.ca.iter().cloned(),
                provider.clone(),
            )
        };
        let verifier = match verifier {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!("cannot build the shared TLS config: {e}");
                return None;
            }
        };
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .ok()?
            .dangerous()
            .with_custom_certificate_verifier(std::sync::Arc::new(verifier))
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Some(tls)
    }

    testing_pub! {
        /// What `check-config` prints: where the roots come from and which proxy is used.
        fn describe(&self) -> String {
            let roots = match &self.ca_file {
                Some(path) => format!(
                    "system roots + {} certificate(s) from {path}",
                    self.ca.len()
                ),
                None => "system roots".to_owned(),
            };
            let proxy = match &self.proxy_shown {
                Some(p) => p.clone(),
                None => match env_proxy() {
                    Some(p) => format!("{} (from the environment)", crate::secret::redact_url(&p)),
                    None => "none".to_owned(),
                },
            };
            format!("TLS roots: {roots}; proxy: {proxy}")
        }
    }
}

/// An HTTP client that an extractor builds at its first run, when the runtime's [`Network`]
/// is known (a constructor only checks config), and then keeps for its connection pool.
#[derive(Debug, Default)]
pub struct ClientCell(std::sync::OnceLock<reqwest::Client>);

impl ClientCell {
    /// An empty cell.
    pub fn new() -> Self {
        ClientCell::default()
    }

    /// The client: built on the first call from `network`'s builder with `configure` applied
    /// (timeouts, redirect policy), the same one afterwards.
    pub fn get(
        &self,
        network: &Network,
        configure: impl FnOnce(reqwest::ClientBuilder) -> reqwest::ClientBuilder,
    ) -> Result<&reqwest::Client, reqwest::Error> {
        if let Some(client) = self.0.get() {
            return Ok(client);
        }
        let client = configure(network.client_builder()).build()?;
        Ok(self.0.get_or_init(|| client))
    }
}

/// A failed request's error for a message: the whole cause chain, without the URL (its query
/// may hold secrets; callers name the URL themselves, redacted), and a hint where the peer's
/// certificate is signed by a CA we do not trust (the usual TLS-inspecting corporate proxy),
/// or where a proxy refused the connection (407, naming the environment's proxy).
///
/// ```
/// # async fn demo() {
/// let e = reqwest::get("http://127.0.0.1:9/").await.unwrap_err();
/// let shown = extractor_runtime::net::explain(e);
/// assert!(shown.contains("Connect"), "{shown}");
/// # }
/// ```
pub fn explain(e: reqwest::Error) -> String {
    Network::default().explain(e)
}

/// Whether a proxy answered the connection's CONNECT with 407 (an https URL through a proxy
/// that wants other credentials): no retry brings them.
pub(crate) fn refused_by_proxy(e: &reqwest::Error) -> bool {
    // hyper's words for it; the error has no kind of its own.
    crate::error_chain::render(e).contains("proxy authorization required")
}

/// `chain` with a hint for the failures an operator can fix in the config.
fn with_hints(mut chain: String) -> String {
    if chain.contains("UnknownIssuer") {
        chain.push_str(
            " (the certificate's issuer is not trusted: behind a TLS-inspecting proxy or with a private CA, set cognite.connection.ca-file to its CA certificate)",
        );
    }
    chain
}

/// Why [`read_capped`] returned no body.
#[derive(Debug)]
pub enum ReadError {
    /// The answer is larger than the cap: it was not read further (nor kept).
    TooLarge {
        /// The cap, in bytes.
        max: u64,
    },
    /// The connection failed while the answer was read.
    Transport(reqwest::Error),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::TooLarge { max } => {
                write!(f, "the answer is larger than {} KiB; not read", max / 1024)
            }
            ReadError::Transport(e) => write!(
                f,
                "reading the answer failed: {}",
                crate::error_chain::render(e)
            ),
        }
    }
}

impl std::error::Error for ReadError {}

/// The body of `response`, streamed, at most `max` bytes: a larger answer (announced by its
/// `Content-Length` or found while reading) is refused without being kept, so a misbehaving
/// peer or proxy cannot make the process hold more than `max` of it.
pub async fn read_capped(mut response: reqwest::Response, max: u64) -> Result<Vec<u8>, ReadError> {
    if response.content_length().is_some_and(|n| n > max) {
        return Err(ReadError::TooLarge { max });
    }
    let mut body = Vec::new();
    // Without the URL: its query may hold a secret (the http built-in's), and errors are logged.
    let transport = |e: reqwest::Error| ReadError::Transport(e.without_url());
    while let Some(chunk) = response.chunk().await.map_err(transport)? {
        if (body.len() + chunk.len()) as u64 > max {
            return Err(ReadError::TooLarge { max });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The proxy the environment names for https URLs, as reqwest reads it.
fn env_proxy() -> Option<String> {
    ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
}

/// The proxy for every URL but those `no_proxy` names. The error never shows the password.
fn proxy(url: &str, no_proxy: &[String]) -> Result<reqwest::Proxy, String> {
    let shown = crate::secret::redact_url(url);
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("`{shown}` is not a URL: {e}"))?;
    match parsed.scheme() {
        "http" | "https" => {}
        "socks5" | "socks5h" => {
            return Err(format!(
                "`{shown}`: SOCKS proxies are not supported by this build; use an HTTP CONNECT proxy"
            ));
        }
        other => {
            return Err(format!(
                "`{shown}`: the proxy's scheme must be http:// or https://, not `{other}`"
            ));
        }
    }
    let proxy = reqwest::Proxy::all(url).map_err(|e| format!("`{shown}`: {}", e.without_url()))?;
    Ok(proxy.no_proxy(reqwest::NoProxy::from_string(&no_proxy.join(","))))
}

fn read_ca_file(path: &str) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, String> {
    use rustls_pki_types::pem::PemObject as _;
    let bytes =
        std::fs::read(path).map_err(|e| format!("cannot read the CA file `{path}`: {e}"))?;
    let certs = rustls_pki_types::CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("`{path}` is not a PEM certificate bundle: {e}"))?;
    if certs.is_empty() {
        return Err(format!(
            "`{path}` holds no PEM certificate (expected `-----BEGIN CERTIFICATE-----` blocks)"
        ));
    }
    Ok(certs)
}

/// The problems with `cognite.connection`'s network keys.
#[derive(Debug, Clone)]
pub struct NetworkError {
    /// Each problem: the key under `cognite.connection`, and what is wrong with it (naming the
    /// file, or the URL without its password).
    pub problems: Vec<(&'static str, String)>,
}

impl fmt::Display for NetworkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (key, message)) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "cognite.connection.{key}: {message}")?;
        }
        Ok(())
    }
}

impl std::error::Error for NetworkError {}

#[cfg(test)]
mod tests {
    use crate::Secret;
    use crate::config::ConnectionConfig;

    fn connection() -> ConnectionConfig {
        ConnectionConfig::default()
    }

    #[test]
    fn a_missing_ca_file_is_named() {
        let mut c = connection();
        c.ca_file = Some("/nonexistent/corp-ca.pem".into());
        let e = c.network().unwrap_err();
        assert_eq!(e.problems[0].0, "ca-file");
        let text = e.to_string();
        assert!(text.starts_with("cognite.connection.ca-file: "), "{text}");
        assert!(text.contains("/nonexistent/corp-ca.pem"), "{text}");
    }

    #[test]
    fn a_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let mut c = connection();
        c.ca_file = Some(path.display().to_string());
        let e = c.network().unwrap_err();
        assert!(e.to_string().contains("holds no PEM certificate"), "{e}");
    }

    #[test]
    fn the_proxy_password_never_shows() {
        let mut c = connection();
        c.proxy = Some(Secret::new("http://alice:pr0xy-pw@proxy.corp:3128"));
        c.no_proxy = vec!["localhost".into(), ".internal".into()];
        let n = c.network().unwrap();
        for shown in [format!("{n:?}"), n.describe()] {
            assert!(!shown.contains("pr0xy-pw"), "{shown}");
            assert!(shown.contains("proxy.corp:3128"), "{shown}");
        }
        c.proxy = Some(Secret::new("ftp://alice:pr0xy-pw@proxy.corp"));
        let e = c.network().unwrap_err().to_string();
        assert!(e.contains("scheme") && !e.contains("pr0xy-pw"), "{e}");
    }

    #[tokio::test]
    async fn the_clients_of_a_network_share_one_tls_config() {
        let network = connection().network().unwrap();
        let clone = network.clone();
        assert!(
            network.tls.get().is_none(),
            "built with the first client, not before"
        );
        network.client_builder().build().unwrap();
        clone.client_builder().build().unwrap();
        assert!(std::sync::Arc::ptr_eq(&network.tls, &clone.tls));
        assert!(
            matches!(clone.tls.get(), Some(Some(tls)) if tls.alpn_protocols == [b"http/1.1"]),
            "one config, built once, offering HTTP/1.1"
        );
    }

    #[test]
    fn no_proxy_without_a_proxy_points_to_the_variable() {
        let mut c = connection();
        c.no_proxy = vec!["localhost".into()];
        let e = c.network().unwrap_err();
        assert_eq!(e.problems[0].0, "no-proxy");
        assert!(e.problems[0].1.contains("NO_PROXY"), "{e}");
    }
}
