//! `flow: interactive`: a person signs in in a browser (OAuth2 authorization code with PKCE
//! S256, RFC 7636) and the browser is sent back to a single-use listener on the loopback
//! interface (RFC 8252 7.3), which checks `state` and hands the code over.

use std::time::Duration;

use aws_lc_rs::rand::SecureRandom as _;
use base64::Engine as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

use super::error::{AuthError, AuthErrorKind};
use super::user::{LoginOutcome, finish_login, permanent, user_scopes};
use crate::config::IdpAuthenticationConfig;
use crate::secret::Secret;

/// How long `login` waits for the browser to come back.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(300);

/// The largest request head the listener reads from a browser.
const MAX_REQUEST_BYTES: usize = 16 * 1024;

fn random_b64(len: usize) -> Result<String, AuthError> {
    let mut bytes = vec![0u8; len];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| permanent("the system random source failed".into()))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// `authorize` with `params` added to its query (form-encoded, as OAuth2 reads them).
fn with_query(authorize: &str, params: &[(&str, &str)]) -> Result<String, AuthError> {
    let mut url = reqwest::Url::parse(authorize)
        .map_err(|e| permanent(format!("`{authorize}` is not a URL: {e}")))?;
    url.query_pairs_mut().extend_pairs(params);
    Ok(url.into())
}

/// The value of `name` in the query of a request target (`/?code=...&state=...`), decoded.
fn query_param(target: &str, name: &str) -> Option<String> {
    let url = reqwest::Url::parse("http://localhost/")
        .ok()?
        .join(target)
        .ok()?;
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Signs a person in in a browser: binds `127.0.0.1:<redirect-port>`, shows the authorization
/// URL through `show` (and opens it with `$BROWSER` when set), waits for the one redirect that
/// carries our `state`, and redeems the code with the PKCE verifier.
pub async fn login_interactive(
    config: &IdpAuthenticationConfig,
    network: &crate::net::Network,
    show: &mut (dyn FnMut(&str) + Send),
) -> Result<LoginOutcome, AuthError> {
    let authorize = config
        .authorization_endpoint()
        .ok_or_else(|| permanent("no authorization endpoint: set authorization-url".into()))?;
    let listener = TcpListener::bind(("127.0.0.1", config.redirect_port))
        .await
        .map_err(|e| {
            permanent(format!(
                "cannot listen on 127.0.0.1:{} for the browser's redirect: {e} (set redirect-port to a free port registered as http://localhost:<port>)",
                config.redirect_port
            ))
        })?;
    let redirect_uri = format!("http://localhost:{}", config.redirect_port);
    let verifier = Secret::new(random_b64(32)?);
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(
        aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            verifier.expose_secret().as_bytes(),
        )
        .as_ref(),
    );
    let state = random_b64(16)?;
    let url = with_query(
        &authorize,
        &[
            ("client_id", &config.client_id),
            ("response_type", "code"),
            ("redirect_uri", &redirect_uri),
            ("scope", &user_scopes(config)),
            ("state", &state),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
            ("prompt", "consent"),
        ],
    )?;
    show(&format!("To sign in, open this URL in a browser:\n{url}"));
    open_browser(&url, show);
    show(&format!(
        "Waiting for the browser to come back to {redirect_uri} (5 minutes at most)..."
    ));
    let code = tokio::time::timeout(LOGIN_TIMEOUT, wait_for_code(&listener, &state))
        .await
        .map_err(|_| {
            permanent(format!(
                "no sign-in came back to {redirect_uri} within {} minutes; run `extractor-runtime login` again",
                LOGIN_TIMEOUT.as_secs() / 60
            ))
        })??;
    // Single use: nothing more is accepted on the redirect port.
    drop(listener);
    let client = super::http_client(network, network.timeout())?;
    let answer =
        super::request::TokenRequest::authorization_code(config, code, verifier, redirect_uri)
            .send(&client)
            .await?;
    finish_login(config, &answer)
}

/// The command that opens a URL here: `$BROWSER` (as Python's `webbrowser` reads it), else
/// `open` on macOS, else `xdg-open` when there is a display; `None` on a headless machine.
fn browser_command() -> Option<String> {
    if let Some(browser) = std::env::var("BROWSER")
        .ok()
        .filter(|b| !b.trim().is_empty())
    {
        return Some(browser);
    }
    if cfg!(target_os = "macos") {
        return Some("open".to_owned());
    }
    let display = ["DISPLAY", "WAYLAND_DISPLAY"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|d| !d.is_empty()));
    display.then(|| "xdg-open".to_owned())
}

/// Opens `url` with [`browser_command`]; without one the printed URL is all there is.
fn open_browser(url: &str, show: &mut (dyn FnMut(&str) + Send)) {
    let Some(browser) = browser_command() else {
        return;
    };
    let mut parts = browser.split_whitespace();
    let Some(program) = parts.next() else { return };
    let args: Vec<&str> = parts.collect();
    match std::process::Command::new(program)
        .args(&args)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
    {
        Ok(_) => show(&format!("(opened with {program})")),
        Err(e) => show(&format!("(could not start the browser `{program}`: {e})")),
    }
}

/// Accepts browsers until one comes back with our `state`: its `code`, or the error the
/// provider sent. Requests without `code`/`error` (a favicon) get 404 and are ignored.
async fn wait_for_code(listener: &TcpListener, state: &str) -> Result<Secret, AuthError> {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let mut head = Vec::new();
        let mut buf = [0u8; 2048];
        let read = tokio::time::timeout(Duration::from_secs(10), async {
            while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST_BYTES {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await;
        if read.is_err() {
            continue;
        }
        let line = String::from_utf8_lossy(&head);
        let target = line
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("GET "))
            .and_then(|l| l.split(' ').next())
            .unwrap_or("");
        let param = |name: &str| query_param(target, name);
        let (code, error) = (param("code"), param("error"));
        if code.is_none() && error.is_none() {
            let _ = respond(&mut stream, 404, "Not found.").await;
            continue;
        }
        if param("state").as_deref() != Some(state) {
            let _ = respond(
                &mut stream,
                400,
                "This sign-in answer is not for this login (wrong state).",
            )
            .await;
            return Err(permanent(
                "the browser came back with the wrong `state` (another sign-in, or a forged request); run `extractor-runtime login` again".into(),
            ));
        }
        if let Some(error) = error {
            let description = param("error_description").unwrap_or_default();
            let _ = respond(&mut stream, 400, "The sign-in failed; see the terminal.").await;
            let mut e = AuthError::new(
                AuthErrorKind::Permanent,
                format!(
                    "the sign-in failed: {error}: {}",
                    description.lines().next().unwrap_or("")
                ),
            );
            e.0.oauth_error = Some(error);
            return Err(e);
        }
        let _ = respond(
            &mut stream,
            200,
            "Signed in to extractor-runtime. You can close this window.",
        )
        .await;
        return Ok(Secret::new(code.unwrap_or_default()));
    }
}

async fn respond(
    stream: &mut tokio::net::TcpStream,
    status: u16,
    text: &str,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        _ => "Not Found",
    };
    let body = format!(
        "<!DOCTYPE html><html><head><title>extractor-runtime</title></head><body><p>{text}</p></body></html>"
    );
    let answer = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\ncache-control: no-store\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(answer.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_decode() {
        assert_eq!(
            query_param("/?v=a%20b+c%2Fd", "v").as_deref(),
            Some("a b c/d")
        );
        assert_eq!(query_param("/?v=100%", "v").as_deref(), Some("100%"));
        let url = with_query(
            "https://login.example.com/t/authorize?p=1",
            &[("redirect_uri", "http://localhost:53000")],
        )
        .unwrap();
        assert!(
            url.ends_with("?p=1&redirect_uri=http%3A%2F%2Flocalhost%3A53000"),
            "{url}"
        );
    }

    #[tokio::test]
    async fn the_listener_takes_only_its_own_state() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let get = |path: String| async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        let waiting = tokio::spawn(async move { wait_for_code(&listener, "st-1").await });
        assert!(get("/favicon.ico".into()).await.starts_with("HTTP/1.1 404"));
        assert!(
            get("/?code=c%2B1&state=st-1".into())
                .await
                .starts_with("HTTP/1.1 200")
        );
        assert_eq!(waiting.await.unwrap().unwrap().expose_secret(), "c+1");

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let waiting = tokio::spawn(async move { wait_for_code(&listener, "st-1").await });
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /?code=stolen&state=forged HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        let e = waiting.await.unwrap().unwrap_err();
        assert!(e.to_string().contains("wrong `state`"), "{e}");
    }
}
