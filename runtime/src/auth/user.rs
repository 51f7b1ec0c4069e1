//! A person signs in once (`extractor-runtime login`, RFC 8628 device authorization); the
//! refresh token goes to a cache file (mode 0600) that the token manager refreshes from.
//!
//! Nothing here prints or logs a token: the refresh token lives in a [`Secret`] and in the
//! cache file only.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::error::{AuthError, AuthErrorKind};
use crate::config::IdpAuthenticationConfig;
use crate::secret::Secret;

/// RFC 8628's grant type.
pub(crate) const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// The hint every "sign in again" error carries.
pub const LOGIN_HINT: &str = "run `extractor-runtime login -c <config>` to sign in again";

/// The largest cache file read.
const MAX_CACHE_BYTES: u64 = 64 * 1024;

/// The scopes a user flow asks for: the config's, plus `offline_access` (without it Entra and
/// other providers issue no refresh token) and `openid profile` (for the ID token that says who
/// signed in), as MSAL adds them.
pub(crate) fn user_scopes(config: &IdpAuthenticationConfig) -> String {
    let mut scopes = config.scopes.clone();
    for extra in ["openid", "profile", "offline_access"] {
        if !scopes.iter().any(|s| s == extra) {
            scopes.push(extra.to_owned());
        }
    }
    scopes.join(" ")
}

/// Where `login` keeps the refresh token of `config`.
pub fn cache_path(config: &IdpAuthenticationConfig) -> PathBuf {
    if let Some(path) = &config.cache_file {
        return PathBuf::from(path);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    let key = format!("{}\n{}", config.token_endpoint(), config.client_id);
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key.as_bytes());
    let name: String = digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    base.join("extractor-runtime")
        .join(format!("login-{name}.json"))
}

#[derive(serde::Serialize, Deserialize)]
struct CacheFile {
    token_url: String,
    client_id: String,
    refresh_token: String,
}

/// The refresh token in its cache file. The file is the source of truth: a `login` while the
/// runtime runs (after an expired or revoked sign-in) is picked up at the next refresh.
#[derive(Debug)]
pub(crate) struct RefreshCache {
    path: PathBuf,
    token_url: String,
    client_id: String,
    current: std::sync::Mutex<Loaded>,
}

/// The token in memory, and the file's modification time when we last read or wrote it.
#[derive(Debug, Default)]
struct Loaded {
    token: Option<Secret>,
    modified: Option<std::time::SystemTime>,
}

fn modified(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl RefreshCache {
    /// The cache of `config`; reads the file when it exists.
    pub(crate) fn open(config: &IdpAuthenticationConfig) -> Result<RefreshCache, AuthError> {
        let cache = RefreshCache {
            path: cache_path(config),
            token_url: config.token_endpoint(),
            client_id: config.client_id.clone(),
            current: std::sync::Mutex::new(Loaded::default()),
        };
        let modified = modified(&cache.path);
        let token = cache.read()?;
        *cache.current.lock().unwrap_or_else(|p| p.into_inner()) = Loaded { token, modified };
        Ok(cache)
    }

    #[cfg(test)]
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    fn read(&self) -> Result<Option<Secret>, AuthError> {
        let shown = self.path.display();
        let size = match std::fs::metadata(&self.path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(permanent(format!(
                    "cannot read the sign-in cache {shown}: {e}"
                )));
            }
        };
        if size > MAX_CACHE_BYTES {
            return Err(permanent(format!(
                "the sign-in cache {shown} is {size} bytes, not a cache file; {LOGIN_HINT}"
            )));
        }
        let text = std::fs::read(&self.path)
            .map_err(|e| permanent(format!("cannot read the sign-in cache {shown}: {e}")))?;
        let file: CacheFile = serde_json::from_slice(&text).map_err(|e| {
            permanent(format!(
                "the sign-in cache {shown} is not readable ({e}); {LOGIN_HINT}"
            ))
        })?;
        if file.token_url != self.token_url || file.client_id != self.client_id {
            return Err(permanent(format!(
                "the sign-in cache {shown} belongs to client {} at {}, not this config's; {LOGIN_HINT}",
                file.client_id, file.token_url
            )));
        }
        Ok(Some(Secret::new(file.refresh_token)))
    }

    /// The refresh token (read again when another process, `login`, wrote the file since), or
    /// a permanent error asking to sign in.
    pub(crate) fn current(&self) -> Result<Secret, AuthError> {
        let mut loaded = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let now = modified(&self.path);
        if now.is_some() && now != loaded.modified {
            let token = self.read()?;
            *loaded = Loaded {
                token,
                modified: now,
            };
        }
        loaded.token.clone().ok_or_else(|| {
            permanent(format!(
                "not signed in (no refresh token in {}); {LOGIN_HINT}",
                self.path.display()
            ))
        })
    }

    /// Keeps `token` (a rotated refresh token): in memory, and in the file (mode 0600, written
    /// to a temporary file and renamed, so a crash leaves the old or the new one).
    pub(crate) fn store(&self, token: Secret) -> Result<(), AuthError> {
        let shown = self.path.display();
        let file = CacheFile {
            token_url: self.token_url.clone(),
            client_id: self.client_id.clone(),
            refresh_token: token.expose_secret().to_owned(),
        };
        let dir = self.path.parent().unwrap_or(Path::new("."));
        create_private_dir(dir)
            .map_err(|e| permanent(format!("cannot create {}: {e}", dir.display())))?;
        let tmp = self.path.with_extension("json.tmp");
        let write = || -> std::io::Result<()> {
            use std::io::Write as _;
            let _ = std::fs::remove_file(&tmp);
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut out = options.open(&tmp)?;
            out.write_all(&serde_json::to_vec(&file).map_err(std::io::Error::other)?)?;
            out.sync_all()?;
            std::fs::rename(&tmp, &self.path)
        };
        let mut loaded = self.current.lock().unwrap_or_else(|p| p.into_inner());
        // Kept in memory even when the file cannot be written (the old one is used up).
        loaded.token = Some(token);
        write().map_err(|e| permanent(format!("cannot write the sign-in cache {shown}: {e}")))?;
        loaded.modified = modified(&self.path);
        Ok(())
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

pub(crate) fn permanent(message: String) -> AuthError {
    AuthError::new(AuthErrorKind::Permanent, message)
}

/// Removes the cache file of `config`. `Ok(Some(path))` when there was one.
pub fn logout(config: &IdpAuthenticationConfig) -> std::io::Result<Option<PathBuf>> {
    let path = cache_path(config);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(Some(path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Saves the refresh token of a finished sign-in and reads who signed in.
pub(crate) fn finish_login(
    config: &IdpAuthenticationConfig,
    answer: &super::request::TokenResponse,
) -> Result<LoginOutcome, AuthError> {
    let refresh = answer.refresh_token.clone().ok_or_else(|| {
        permanent(
            "signed in, but the identity provider issued no refresh token (allow `offline_access` for this client)".into(),
        )
    })?;
    let cache = RefreshCache {
        path: cache_path(config),
        token_url: config.token_endpoint(),
        client_id: config.client_id.clone(),
        current: std::sync::Mutex::new(Loaded::default()),
    };
    cache.store(refresh)?;
    let claims = answer
        .id_token
        .as_ref()
        .and_then(|t| super::jwt::decode_claims(t.expose_secret()))
        .or_else(|| super::jwt::decode_claims(answer.access_token.expose_secret()));
    Ok(LoginOutcome {
        cache_file: cache.path,
        claims,
    })
}

/// What the device authorization endpoint answered (RFC 8628 3.2).
#[derive(Deserialize)]
struct DeviceAuthorization {
    device_code: String,
    user_code: String,
    /// Entra v1 and some providers say `verification_url`.
    #[serde(alias = "verification_url")]
    verification_uri: String,
    #[serde(default)]
    verification_uri_complete: Option<String>,
    /// RFC 8628 types both as numbers: a provider may send `1.5`.
    expires_in: f64,
    #[serde(default)]
    interval: Option<f64>,
}

/// Seconds from the device authorization answer as a duration within `[min, max]` (what is not
/// a finite number is `min`).
fn seconds(value: f64, min: f64, max: f64) -> Duration {
    let v = if value.is_finite() { value.clamp(min, max) } else { min };
    Duration::from_secs_f64(v)
}

/// What `login` tells the person, and what it did.
#[derive(Debug)]
pub struct LoginOutcome {
    /// Where the refresh token was saved.
    pub cache_file: PathBuf,
    /// The signed-in user's claims, from the ID token or the access token when it is a JWT.
    pub claims: Option<super::Claims>,
}

/// Signs a person in with the device authorization grant: shows where to go and which code to
/// enter (through `show`), polls the token endpoint at the interval the provider asks for
/// (`slow_down` adds 5 s), and saves the refresh token. Gives up when the code expires.
pub async fn login_device_code(
    config: &IdpAuthenticationConfig,
    network: &crate::net::Network,
    show: &mut (dyn FnMut(&str) + Send),
) -> Result<LoginOutcome, AuthError> {
    let device_url = config.device_endpoint().ok_or_else(|| {
        permanent("no device authorization endpoint: set device-authorization-url".into())
    })?;
    let client = super::http_client(network, network.timeout())?;
    let scope = user_scopes(config);
    let response = client
        .http
        .post(&device_url)
        .header("Accept", "application/json")
        .form(&[("client_id", config.client_id.as_str()), ("scope", &scope)])
        .send()
        .await
        .map_err(|e| {
            AuthError::new(
                AuthErrorKind::Transient,
                format!(
                    "device authorization request to {device_url} failed: {}",
                    client.network.explain(e)
                ),
            )
        })?;
    let status = response.status().as_u16();
    let body = super::request::read_answer(response, &client).await?;
    if !(200..300).contains(&status) {
        let error = super::request::classify(status, None, &body, &Secret::new(""))
            .err()
            .unwrap_or_else(|| {
                AuthError::new(
                    AuthErrorKind::Permanent,
                    format!("the device authorization endpoint answered HTTP {status}"),
                )
            });
        return Err(error);
    }
    let device: DeviceAuthorization = serde_json::from_slice(&body).map_err(|e| {
        permanent(format!(
            "the device authorization endpoint's answer is not RFC 8628 JSON: {e}"
        ))
    })?;
    // What the provider sends is shown escaped: a spoofed endpoint must not clear the screen,
    // retitle the window or hide the real URL with escape sequences.
    let esc = crate::text::escape;
    show(&format!(
        "To sign in, open {} and enter the code {}",
        esc(&device.verification_uri),
        esc(&device.user_code)
    ));
    if let Some(complete) = &device.verification_uri_complete {
        show(&format!("(or open {})", esc(complete)));
    }
    let request =
        super::request::TokenRequest::device_code(config, Secret::new(device.device_code));
    let mut interval = seconds(device.interval.unwrap_or(5.0), 1.0, 60.0);
    let give_up = tokio::time::Instant::now() + seconds(device.expires_in, 0.0, 3600.0);
    loop {
        // Never past the code's expiry: the last poll is at `expires_in` at the latest.
        let left = give_up.saturating_duration_since(tokio::time::Instant::now());
        tokio::time::sleep(interval.min(left)).await;
        match request.send(&client).await {
            Ok(answer) => return finish_login(config, &answer),
            Err(e) => match e.oauth_error() {
                Some("authorization_pending") => {}
                Some("slow_down") => interval += Duration::from_secs(5),
                Some("expired_token") => {
                    return Err(permanent(
                        "the code expired before the sign-in was finished; run `extractor-runtime login` again".into(),
                    ));
                }
                Some("access_denied") => {
                    return Err(permanent("the sign-in was declined (access_denied)".into()));
                }
                _ if e.kind() == AuthErrorKind::Transient => {
                    show(&format!("waiting for the sign-in: {e}; trying again"));
                }
                _ => return Err(e),
            },
        }
        if tokio::time::Instant::now() >= give_up {
            return Err(permanent(
                "the code expired before the sign-in was finished; run `extractor-runtime login` again".into(),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> IdpAuthenticationConfig {
        let mut c = IdpAuthenticationConfig::new(
            "app",
            Secret::new("unused"),
            "https://login.example.com/t/oauth2/v2.0/token",
            vec!["api".into()],
        );
        c.cache_file = Some(dir.join("sub/login.json").display().to_string());
        c
    }

    #[test]
    fn the_cache_is_private_and_belongs_to_its_client() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(dir.path());
        let cache = RefreshCache::open(&c).unwrap();
        assert!(
            cache
                .current()
                .unwrap_err()
                .to_string()
                .contains(LOGIN_HINT)
        );
        cache.store(Secret::new("rt-1")).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(cache.path()), 0o600);
            assert_eq!(mode(cache.path().parent().unwrap()), 0o700);
        }
        assert_eq!(
            RefreshCache::open(&c)
                .unwrap()
                .current()
                .unwrap()
                .expose_secret(),
            "rt-1"
        );
        let mut other = c.clone_for_test();
        other.client_id = "another-app".into();
        let e = RefreshCache::open(&other).unwrap_err().to_string();
        assert!(e.contains("belongs to client app"), "{e}");
        // A `login` by another process while this one runs is picked up.
        let running = RefreshCache::open(&c).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        RefreshCache::open(&c)
            .unwrap()
            .store(Secret::new("rt-2"))
            .unwrap();
        assert_eq!(running.current().unwrap().expose_secret(), "rt-2");
        assert_eq!(logout(&c).unwrap(), Some(cache.path().to_path_buf()));
        assert_eq!(logout(&c).unwrap(), None);
    }

    #[test]
    fn offline_access_and_openid_are_asked_for_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(dir.path());
        assert_eq!(user_scopes(&c), "api openid profile offline_access");
        c.scopes.push("offline_access".into());
        assert_eq!(user_scopes(&c), "api offline_access openid profile");
        assert_eq!(
            c.device_endpoint().as_deref(),
            Some("https://login.example.com/t/oauth2/v2.0/devicecode")
        );
    }

    impl IdpAuthenticationConfig {
        fn clone_for_test(&self) -> IdpAuthenticationConfig {
            let mut c = IdpAuthenticationConfig::new(
                self.client_id.clone(),
                Secret::new("unused"),
                self.token_endpoint(),
                self.scopes.clone(),
            );
            c.cache_file = self.cache_file.clone();
            c
        }
    }
}
