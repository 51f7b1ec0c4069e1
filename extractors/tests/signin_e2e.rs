//! The sign-in flows against a real, certified OpenID provider (npm `oidc-provider`, pinned in
//! `tools/oidc-provider/`, shaped like Entra ID's endpoints), through the built binary:
//! - device code: `login -c config-examples/device-code.yaml` approved through the provider's
//!   own pages (`approve.mjs` submits them like a person), then `run --once`, `token`, a revoked
//!   refresh token (exit 3 and the hint), `logout`;
//! - refresh-token rotation over several short lifetimes with the ideal number of requests;
//! - certificates (`private_key_jwt`): `config-examples/certificate.yaml` accepted, a key the
//!   provider does not know refused.
//!
//! Where node or the provider's modules are missing the tests say that they skipped; with
//! `CI=true` they fail instead (`.ci/run` installs them).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

mod util;

use util::{bin, repo, run};

/// `tools/oidc-provider/provider.mjs` on 127.0.0.1, stopped by its PID when dropped.
struct Provider {
    child: Child,
    issuer: String,
}

impl Provider {
    /// `None` (after saying why) where node or the modules are missing.
    fn start(dir: &Path, access_ttl: u32, certificate: Option<&Path>) -> Option<Provider> {
        Self::start_with(dir, access_ttl, certificate, None)
    }

    /// With `redirect_port`, also a `browser-app` client (authorization code + PKCE) whose
    /// redirect URI is `http://localhost:<port>`.
    fn start_with(
        dir: &Path,
        access_ttl: u32,
        certificate: Option<&Path>,
        redirect_port: Option<u16>,
    ) -> Option<Provider> {
        let tools = repo().join("tools/oidc-provider");
        if !util::available(
            Command::new("node").arg("--version").output().is_ok()
                && tools.join("node_modules/oidc-provider").exists(),
            "node or tools/oidc-provider/node_modules",
            "npm ci --prefix tools/oidc-provider",
        ) {
            return None;
        }
        let mut clients = vec![json!({
            "client_id": "device-app",
            "token_endpoint_auth_method": "none",
            "grant_types": ["urn:ietf:params:oauth:grant-type:device_code", "refresh_token"],
            "redirect_uris": [],
            "response_types": [],
        })];
        if let Some(cert) = certificate {
            clients.push(json!({
                "client_id": "cert-app",
                "token_endpoint_auth_method": "private_key_jwt",
                "certificate_pem_file": cert,
                "grant_types": ["client_credentials"],
                "redirect_uris": [],
                "response_types": [],
            }));
        }
        if let Some(port) = redirect_port {
            clients.push(json!({
                "client_id": "browser-app",
                "token_endpoint_auth_method": "none",
                "application_type": "native",
                "grant_types": ["authorization_code", "refresh_token"],
                "redirect_uris": [format!("http://localhost:{port}")],
                "response_types": ["code"],
            }));
        }
        let file = dir.join("clients.json");
        std::fs::write(&file, Value::Array(clients).to_string()).unwrap();
        let mut child = Command::new("node")
            .arg(tools.join("provider.mjs"))
            .args(["--tenant", "tenant-1", "--access-ttl"])
            .arg(access_ttl.to_string())
            .arg("--clients")
            .arg(&file)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        stdout.read_line(&mut line).unwrap();
        // Keep the pipe open and drained: node dies of EPIPE when it writes to a closed one.
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        let issuer = line
            .trim()
            .strip_prefix("oidc-provider listening ")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_owned();
        Some(Provider { child, issuer })
    }

    /// `{grant_type: count}` of successful (`grants`) or failed (`errors`) token requests.
    async fn stats(&self, which: &str, grant: &str) -> u64 {
        let body: Value = reqwest::get(format!("{}/__stats", self.issuer))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body[which][grant].as_u64().unwrap_or(0)
    }

    /// Revokes a refresh token (RFC 7009), as an admin revoking a user's sessions would.
    async fn revoke(&self, refresh_token: &str) {
        let response = reqwest::Client::new()
            .post(format!("{}/tenant-1/oauth2/v2.0/revoke", self.issuer))
            .form(&[("token", refresh_token), ("client_id", "device-app")])
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{}", response.status());
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// The environment `config-examples/*.yaml` read: the provider as the authority, the fake CDF
/// as the host, and a private cache dir.
fn example_env(cmd: &mut Command, provider: &Provider, cdf: &str, cache: &Path, client: &str) {
    cmd.current_dir(repo())
        .env("COGNITE_PROJECT", "demo")
        .env("COGNITE_BASE_URL", cdf)
        .env("COGNITE_CLIENT_ID", client)
        .env("COGNITE_TENANT_ID", "tenant-1")
        .env("COGNITE_AUTHORITY", format!("{}/", provider.issuer))
        .env("COGNITE_SCOPE", "api")
        .env("XDG_CACHE_HOME", cache);
}

/// A fake CDF that accepts RAW rows and keeps the `Authorization` headers it saw.
async fn cdf() -> (MockServer, Arc<Mutex<Vec<String>>>) {
    let server = MockServer::start().await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    Mock::given(method("POST"))
        .and(path(
            "/api/v1/projects/demo/raw/dbs/quickstart/tables/readings/rows",
        ))
        .respond_with(move |r: &Request| {
            let auth = r
                .headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            s.lock().unwrap().push(auth);
            ResponseTemplate::new(200).set_body_json(json!({}))
        })
        .mount(&server)
        .await;
    (server, seen)
}

/// `login` with the device code, approved through the provider's pages by `approve.mjs`.
fn login(cmd: Command) -> (i32, String, String) {
    login_with(cmd, "approve.mjs", |line| {
        line.strip_prefix("(or open ")
            .map(|rest| rest.trim_end_matches(')').to_owned())
    })
}

/// `login`: waits for the URL on stderr (`url_of` picks it from a line), has the person's side
/// (`tools/oidc-provider/<person>`) act on it, waits for `login` to finish. Returns (exit code,
/// stdout, stderr).
fn login_with(
    mut cmd: Command,
    person: &str,
    url_of: impl Fn(&str) -> Option<String>,
) -> (i32, String, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut shown = String::new();
    let url = loop {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "login ended: {shown}"
        );
        shown.push_str(&line);
        if let Some(url) = url_of(line.trim()) {
            break url;
        }
    };
    assert!(shown.contains("To sign in, open "), "{shown}");
    let approve = Command::new("node")
        .arg(repo().join("tools/oidc-provider").join(person))
        .arg(&url)
        .output()
        .unwrap();
    assert!(
        approve.status.success(),
        "{}",
        String::from_utf8_lossy(&approve.stderr)
    );
    let output = child.wait_with_output().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    (
        output.status.code().unwrap(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        shown + &rest,
    )
}

/// The single cache file under `cache`, and its refresh token.
fn cached(cache: &Path) -> (PathBuf, String) {
    let dir = cache.join("extractor-runtime");
    let files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let content: Value = serde_json::from_slice(&std::fs::read(&files[0]).unwrap()).unwrap();
    (
        files[0].clone(),
        content["refresh_token"].as_str().unwrap().to_owned(),
    )
}

async fn run_bin(mut cmd: Command) -> (i32, String, String) {
    tokio::task::spawn_blocking(move || run(&mut cmd))
        .await
        .unwrap()
}

/// The device code flow as a person uses it, from `login` to `logout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_code_login_run_revoke_logout() {
    let dir = tempfile::tempdir().unwrap();
    let Some(provider) = Provider::start(dir.path(), 3600, None) else {
        return;
    };
    let (cdf, authorizations) = cdf().await;
    let cache = dir.path().join("cache");
    let example = repo().join("config-examples/device-code.yaml");
    let command = |args: &[&str]| {
        let mut cmd = bin();
        cmd.args(args).arg("-c").arg(&example);
        example_env(&mut cmd, &provider, &cdf.uri(), &cache, "device-app");
        cmd
    };

    // Not signed in yet: `run` says what to do, exit 3, no network call to CDF.
    let (code, _, stderr) = run_bin(command(&["run", "--once"])).await;
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains("not signed in") && stderr.contains("extractor-runtime login"),
        "{stderr}"
    );

    let cmd = command(&["login"]);
    let (code, stdout, stderr) = tokio::task::spawn_blocking(move || login(cmd))
        .await
        .unwrap();
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("signed in as operator@example.com"),
        "{stdout}"
    );
    let (file, refresh_token) = cached(&cache);
    assert!(
        stdout.contains(&format!("refresh token saved to {}", file.display())),
        "{stdout}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the cache file is private");
    }
    let mut outputs = vec![stdout, stderr];

    let (code, stdout, stderr) = run_bin(command(&["run", "--once"])).await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    outputs.extend([stdout, stderr]);
    let seen = authorizations.lock().unwrap().clone();
    assert!(
        !seen.is_empty() && seen.iter().all(|a| a.starts_with("Bearer ")),
        "{seen:?}"
    );

    let (code, stdout, stderr) = run_bin(command(&["token"])).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("flow:           device code"), "{stdout}");
    assert!(
        stdout.contains(&format!("sign-in cache:  {}", file.display())),
        "{stdout}"
    );
    outputs.extend([stdout, stderr]);

    // No token, refresh token or access token in anything printed.
    let (_, rotated) = cached(&cache);
    for out in &outputs {
        for secret in [&refresh_token, &rotated] {
            assert!(
                !out.contains(secret.as_str()),
                "a refresh token was printed: {out}"
            );
        }
        for bearer in &seen {
            let token = bearer.trim_start_matches("Bearer ");
            assert!(!out.contains(token), "an access token was printed: {out}");
        }
    }

    // Revoked: exit 3 with the hint.
    provider.revoke(&rotated).await;
    let (code, _, stderr) = run_bin(command(&["run", "--once"])).await;
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains("invalid_grant") && stderr.contains("run `extractor-runtime login"),
        "{stderr}"
    );

    let (code, stdout, _) = run_bin(command(&["logout"])).await;
    assert_eq!(code, 0);
    assert!(
        stdout.contains(&format!("signed out: removed {}", file.display())),
        "{stdout}"
    );
    assert!(!file.exists());
    let (code, stdout, _) = run_bin(command(&["logout"])).await;
    assert_eq!(code, 0);
    assert!(stdout.contains("not signed in"), "{stdout}");
}

/// `config-examples/interactive.yaml`: a real headless Chromium (Debian's, driven by
/// playwright-core) opens the printed authorization URL, fills in the provider's login form,
/// consents, and lands on the single-use loopback listener; the code is redeemed with the PKCE
/// verifier; `run --once` then works from the saved refresh token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interactive_login_in_a_real_browser_then_run_once() {
    if !util::available(
        Path::new("/usr/bin/chromium").exists(),
        "/usr/bin/chromium",
        "apt-get install chromium",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let Some(provider) = Provider::start_with(dir.path(), 3600, None, Some(port)) else {
        return;
    };
    let (cdf, authorizations) = cdf().await;
    let cache = dir.path().join("cache");
    // The example as written, on a free port instead of 53000.
    let text = std::fs::read_to_string(repo().join("config-examples/interactive.yaml")).unwrap();
    assert!(text.contains("redirect-port: 53000"));
    let example = dir.path().join("interactive.yaml");
    std::fs::write(
        &example,
        text.replace("redirect-port: 53000", &format!("redirect-port: {port}")),
    )
    .unwrap();
    let command = |args: &[&str]| {
        let mut cmd = bin();
        cmd.args(args).arg("-c").arg(&example);
        example_env(&mut cmd, &provider, &cdf.uri(), &cache, "browser-app");
        // No browser of the machine's: the test's Chromium opens the printed URL.
        cmd.env_remove("BROWSER")
            .env_remove("DISPLAY")
            .env_remove("WAYLAND_DISPLAY");
        cmd
    };
    let cmd = command(&["login"]);
    let (code, stdout, stderr) = tokio::task::spawn_blocking(move || {
        login_with(cmd, "browser-login.mjs", |line| {
            line.starts_with("http://").then(|| line.to_owned())
        })
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("signed in as browser-user@example.com"),
        "{stdout}"
    );
    assert!(
        stderr.contains("code_challenge_method=S256") && stderr.contains("&state="),
        "{stderr}"
    );
    let (file, refresh_token) = cached(&cache);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    // Single use: the redirect port is free again once `login` is done.
    assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
    let (code, run_out, run_err) = run_bin(command(&["run", "--once"])).await;
    assert_eq!(code, 0, "{run_out}\n{run_err}");
    assert!(!authorizations.lock().unwrap().is_empty());
    assert_eq!(provider.stats("grants", "authorization_code").await, 1);
    for out in [&stdout, &stderr, &run_out, &run_err] {
        assert!(
            !out.contains(&refresh_token),
            "a refresh token was printed: {out}"
        );
    }
}

/// 4 s access tokens for 10 s: the token manager refreshes with the (rotated) refresh token at
/// about half-life, one request each time, and readers always find a valid token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_tokens_rotate_over_short_lifetimes_with_the_ideal_call_count() {
    let dir = tempfile::tempdir().unwrap();
    let Some(provider) = Provider::start(dir.path(), 4, None) else {
        return;
    };
    let cache = dir.path().join("cache");
    let example = repo().join("config-examples/device-code.yaml");
    let mut cmd = bin();
    cmd.arg("login").arg("-c").arg(&example);
    example_env(
        &mut cmd,
        &provider,
        "http://127.0.0.1:9",
        &cache,
        "device-app",
    );
    let (code, stdout, stderr) = tokio::task::spawn_blocking(move || login(cmd))
        .await
        .unwrap();
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let (file, first) = cached(&cache);

    let yaml = format!(
        "version: 1\ncognite:\n  project: demo\n  host: http://127.0.0.1:9\n  idp-authentication:\n    flow: device-code\n    client-id: device-app\n    tenant: tenant-1\n    authority: {}/\n    scopes: [api]\n    cache-file: '{}'\n",
        provider.issuer,
        file.display()
    );
    let config = extractor_runtime::config::Config::from_yaml(
        &yaml,
        None,
        &|_: &str| None,
        &extractor_runtime::config::LoadOptions::default(),
    )
    .unwrap();
    let idp = config.cognite.idp_authentication.as_ref().unwrap();
    let before = provider.stats("grants", "refresh_token").await;
    let tokens = extractor_runtime::auth::TokenManager::spawn(
        idp,
        extractor_runtime::auth::TokenManagerOptions::default(),
        None,
    )
    .unwrap();
    tokens.get().await.unwrap();
    let start = Instant::now();
    let mut gaps = 0;
    while start.elapsed() < Duration::from_secs(10) {
        if tokens.try_get().is_none() {
            gaps += 1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokens.shutdown();
    let refreshes = provider.stats("grants", "refresh_token").await - before;
    eprintln!("{refreshes} refresh_token requests in 10 s of 4 s tokens");
    // The first token, then one refresh per ~2 s (half of 4 s, minus up to 10 % jitter).
    assert!(
        (5..=7).contains(&refreshes),
        "{refreshes} refresh requests in 10 s of 4 s tokens (ideal: 6)"
    );
    assert_eq!(provider.stats("errors", "refresh_token").await, 0);
    assert_eq!(gaps, 0, "readers found no valid token {gaps} times");
    let (_, last) = cached(&cache);
    assert_ne!(first, last, "the rotated refresh token was saved");
}

/// `config-examples/certificate.yaml` against the provider's `private_key_jwt`: accepted; a
/// certificate the client was not registered with is refused (exit 3, `invalid_client`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_sign_in_is_accepted_and_a_wrong_key_refused() {
    let dir = tempfile::tempdir().unwrap();
    let Some(registered) = util::openssl_client_pem(dir.path(), "registered") else {
        return;
    };
    let other = util::openssl_client_pem(dir.path(), "other").unwrap();
    let Some(provider) =
        Provider::start(dir.path(), 3600, Some(&dir.path().join("registered.crt")))
    else {
        return;
    };
    let (cdf, authorizations) = cdf().await;
    let example = repo().join("config-examples/certificate.yaml");
    let cache = dir.path().join("cache");
    let command = |args: &[&str], certificate: &Path| {
        let mut cmd = bin();
        cmd.args(args).arg("-c").arg(&example);
        example_env(&mut cmd, &provider, &cdf.uri(), &cache, "cert-app");
        cmd.env("COGNITE_CERTIFICATE", certificate);
        cmd
    };
    let (code, stdout, stderr) = run_bin(command(&["token"], &registered)).await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("flow:           client credentials (certificate)"),
        "{stdout}"
    );
    let (code, stdout, stderr) = run_bin(command(&["run", "--once"], &registered)).await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(!authorizations.lock().unwrap().is_empty());
    assert_eq!(provider.stats("grants", "client_credentials").await, 2);

    let (code, _, stderr) = run_bin(command(&["token"], &other)).await;
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("invalid_client"), "{stderr}");
    assert_eq!(provider.stats("errors", "client_credentials").await, 1);
}
