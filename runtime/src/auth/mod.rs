//! The client-credentials token manager: one per process, shared by every task and request.
//!
//! A background task fetches a token at start and refreshes it ahead of expiry (see
//! [`policy`](self) in DESIGN.md section 3), so readers find a valid token without waiting:
//! [`TokenManager::get`] is a lock-free load on its fast path. Failures are retried with
//! exponential backoff and full jitter, `Retry-After` is honoured, and while the old token is
//! still valid it keeps being served. [`TokenManager::force_refresh`] (after a 401 from CDF)
//! joins the refresh in flight, so any number of callers cause one request.
//!
//! # Examples
//!
//! ```no_run
//! # async fn demo(config: &extractor_runtime::config::IdpAuthenticationConfig) -> Result<(), extractor_runtime::auth::AuthError> {
//! use extractor_runtime::auth::{TokenManager, TokenManagerOptions};
//!
//! let tokens = TokenManager::spawn(config, TokenManagerOptions::default(), None)?;
//! let token = tokens.get().await?;
//! let header = format!("Bearer {}", token.access_token().expose_secret());
//! # let _ = header;
//! tokens.shutdown();
//! # Ok(()) }
//! ```

mod browser;
mod error;
mod jwt;
mod policy;
mod refresh;
mod request;
mod user;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use error::{AuthError, AuthErrorKind};

pub use browser::login_interactive;
pub use jwt::Claims;
pub use user::{LOGIN_HINT, LoginOutcome, cache_path, login_device_code, logout};

use crate::config::IdpAuthenticationConfig;
use crate::metrics::TokenMetrics;
use crate::secret::Secret;
use request::TokenRequest;

/// An access token and when it expires.
pub struct Token {
    access_token: Secret,
    token_type: String,
    expires_at: Instant,
    expires_at_wall: SystemTime,
    refresh_at: Instant,
    /// Handed out while at least this much life is left: `min-ttl`, or a quarter of the
    /// lifetime for tokens that live no longer than `min-ttl`.
    min_ttl: Duration,
    generation: u64,
}

impl Token {
    /// The token itself. Put it in an `Authorization` header and nowhere else.
    pub fn access_token(&self) -> &Secret {
        &self.access_token
    }

    /// The token type, normally `Bearer`.
    pub fn token_type(&self) -> &str {
        &self.token_type
    }

    /// When the token expires (on tokio's clock).
    pub fn expires_at(&self) -> Instant {
        self.expires_at
    }

    /// When the token expires, as wall-clock time.
    pub fn expires_at_wall(&self) -> SystemTime {
        self.expires_at_wall
    }

    /// When the background task plans to replace it.
    pub fn refresh_at(&self) -> Instant {
        self.refresh_at
    }

    /// How much life the token has left.
    pub fn remaining(&self) -> Duration {
        self.expires_at.saturating_duration_since(Instant::now())
    }

    /// The token's claims, if it is a JWT (the signature is not checked).
    pub fn claims(&self) -> Option<Claims> {
        jwt::decode_claims(self.access_token.expose_secret())
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("access_token", &self.access_token)
            .field("token_type", &self.token_type)
            .field("remaining", &self.remaining())
            .field("generation", &self.generation)
            .finish()
    }
}

/// Tunables of the [`TokenManager`].
///
/// # Default
///
/// `min_ttl: 30s` (overridden by the config's `min-ttl`), `request_timeout: 30s`,
/// `wait_timeout: 30s`, `min_backoff: 1s`, `max_backoff: 60s`, `permanent_retry: 5min`,
/// `max_retry_after: 1h`.
#[derive(Clone, Debug)]
pub struct TokenManagerOptions {
    /// A token with less life left is never handed out.
    pub min_ttl: Duration,
    /// One token request gives up after this long (a transient failure).
    pub request_timeout: Duration,
    /// How long [`TokenManager::get`] waits for a valid token before it returns an error.
    pub wait_timeout: Duration,
    /// The first retry delay after a transient failure.
    pub min_backoff: Duration,
    /// The largest retry delay after transient failures.
    pub max_backoff: Duration,
    /// The retry delay after a permanent failure, so that a fixed secret recovers.
    pub permanent_retry: Duration,
    /// The cap on a `Retry-After` delay.
    pub max_retry_after: Duration,
    /// At most one forced refresh (after a 401 from CDF) per this interval: CDF keeps
    /// rejecting fresh tokens when the credentials lack access to the project, and asking again
    /// at every request would hammer the identity provider.
    pub min_forced_refresh: Duration,
    /// The CA roots and proxy of the token requests (`cognite.connection`).
    pub network: crate::net::Network,
}

impl Default for TokenManagerOptions {
    fn default() -> Self {
        TokenManagerOptions {
            min_ttl: Duration::from_secs(30),
            request_timeout: Duration::from_secs(30),
            wait_timeout: Duration::from_secs(30),
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            permanent_retry: Duration::from_secs(300),
            max_retry_after: Duration::from_secs(3600),
            min_forced_refresh: Duration::from_secs(30),
            network: crate::net::Network::default(),
        }
    }
}

/// What the background task has done so far.
#[derive(Clone, Debug, Default)]
pub(crate) struct Status {
    /// Tokens fetched so far; the current token's `generation`.
    pub(crate) generation: u64,
    /// Failed requests so far.
    pub(crate) failures: u64,
    /// Failed requests since the last success.
    pub(crate) consecutive_failures: u64,
    /// The last failure, if the last request failed.
    pub(crate) last_error: Option<AuthError>,
    /// The background task has stopped.
    pub(crate) stopped: bool,
    /// The last token lived no longer than `min-ttl`: its lifetime.
    pub(crate) short_lived: Option<Duration>,
}

pub(crate) struct Inner {
    current: ArcSwapOption<Token>,
    request: TokenRequest,
    client: IdpClient,
    options: TokenManagerOptions,
    metrics: Option<TokenMetrics>,
    /// The generation some caller needs; the background task refreshes while it is ahead.
    wanted: AtomicU64,
    wake: Notify,
    status: watch::Sender<Status>,
    cancel: CancellationToken,
    /// When the last forced refresh was asked for.
    last_forced: std::sync::Mutex<Option<Instant>>,
    /// Tests: the refresh task panics once at its next turn.
    #[cfg(test)]
    panic_once: std::sync::atomic::AtomicBool,
}

/// The process's one token manager. Cheap to clone; every clone shares the same token.
#[derive(Clone)]
pub struct TokenManager {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TokenManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = self.inner.status.borrow();
        f.debug_struct("TokenManager")
            .field("token_url", &self.inner.request.url)
            .field("has_valid_token", &self.try_get().is_some())
            .field("generation", &status.generation)
            .field("consecutive_failures", &status.consecutive_failures)
            .finish()
    }
}

impl TokenManager {
    /// Builds the manager from the config and starts its background task on the current tokio
    /// runtime. The first token request starts at once. `options.min_ttl` is replaced by the
    /// config's `min-ttl`. Metrics are registered in `registry` when given.
    pub fn spawn(
        config: &IdpAuthenticationConfig,
        options: TokenManagerOptions,
        registry: Option<&prometheus::Registry>,
    ) -> Result<TokenManager, AuthError> {
        let options = TokenManagerOptions {
            min_ttl: config.min_ttl.get(),
            ..options
        };
        let metrics = registry
            .map(TokenMetrics::register)
            .transpose()
            .map_err(|e| {
                AuthError::new(
                    AuthErrorKind::Permanent,
                    format!("cannot register token metrics: {e}"),
                )
            })?;
        TokenManager::spawn_with(config, options, metrics)
    }

    /// A manager for changed credentials (a reload), reporting in this one's metrics. It starts
    /// fetching at once; this one runs on until it is [shut down](TokenManager::shutdown).
    pub fn successor(
        &self,
        config: &IdpAuthenticationConfig,
        options: TokenManagerOptions,
    ) -> Result<TokenManager, AuthError> {
        let options = TokenManagerOptions {
            min_ttl: config.min_ttl.get(),
            ..options
        };
        TokenManager::spawn_with(config, options, self.inner.metrics.clone())
    }

    fn spawn_with(
        config: &IdpAuthenticationConfig,
        options: TokenManagerOptions,
        metrics: Option<TokenMetrics>,
    ) -> Result<TokenManager, AuthError> {
        let client = http_client(&options.network, options.request_timeout)?;
        let inner = Arc::new(Inner {
            current: ArcSwapOption::empty(),
            request: TokenRequest::from_config(config)?,
            client,
            options,
            metrics,
            wanted: AtomicU64::new(1),
            wake: Notify::new(),
            status: watch::Sender::new(Status::default()),
            cancel: CancellationToken::new(),
            last_forced: std::sync::Mutex::new(None),
            #[cfg(test)]
            panic_once: std::sync::atomic::AtomicBool::new(false),
        });
        tokio::spawn(refresh::supervise(inner.clone()));
        Ok(TokenManager { inner })
    }

    /// The current token, if it has at least `min-ttl` of life left. Never waits, never does
    /// I/O: a lock-free load.
    pub fn try_get(&self) -> Option<Arc<Token>> {
        let guard = self.inner.current.load();
        match &*guard {
            Some(token) if self.inner.is_valid(token) => Some(Arc::clone(token)),
            _ => None,
        }
    }

    /// A token with at least `min-ttl` of life left.
    ///
    /// Returns at once when the current token is valid, which is the normal case since the
    /// background task refreshes ahead of expiry. Otherwise asks for a refresh and waits for it,
    /// at most `wait_timeout`; a permanent failure (a bad secret) is returned at once.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe.
    pub async fn get(&self) -> Result<Arc<Token>, AuthError> {
        if let Some(token) = self.try_get() {
            return Ok(token);
        }
        let generation = self.inner.status.borrow().generation;
        self.wait_for(generation + 1, None).await
    }

    /// When the identity provider issues tokens that live no longer than `min-ttl`: their
    /// lifetime (they are used with a quarter of it as margin; lower `min-ttl`).
    pub fn short_lived(&self) -> Option<Duration> {
        self.inner.status.borrow().short_lived
    }

    /// Replaces a token that CDF rejected (HTTP 401), and returns the new one.
    ///
    /// When a newer token than `rejected` already exists it is returned without a request; so
    /// is `rejected` itself within
    /// [`min_forced_refresh`](TokenManagerOptions::min_forced_refresh) of the last forced
    /// refresh (at most one forced request per that interval, however many requests CDF
    /// rejects); otherwise the caller joins the refresh in flight or starts one: any number of concurrent
    /// callers holding the same rejected token cause one request. Fails with the refresh's error
    /// if that request fails.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe.
    pub async fn force_refresh(&self, rejected: &Token) -> Result<Arc<Token>, AuthError> {
        let inner = &self.inner;
        let current = inner.current.load_full();
        if let Some(current) =
            current.filter(|t| t.generation == rejected.generation && inner.is_valid(t))
        {
            let mut last = inner.last_forced.lock().expect("last_forced lock");
            match *last {
                Some(at) if at.elapsed() < inner.options.min_forced_refresh => {
                    // CDF rejects tokens as fast as they come: another would be rejected too.
                    tracing::warn!(target: "extractor_runtime::auth", min_s = inner.options.min_forced_refresh.as_secs_f64(), "CDF rejected the token again (401); not asking for another yet: check that the client has access to the project and that the scopes or audience match the CDF cluster");
                    return Ok(current);
                }
                _ => *last = Some(Instant::now()),
            }
        }
        let failures = self.inner.status.borrow().failures;
        self.wait_for(rejected.generation + 1, Some(failures)).await
    }

    /// Waits until a token of at least `generation` exists and is valid. With `fail_after`,
    /// returns the error of any failed request after that many failures.
    async fn wait_for(
        &self,
        generation: u64,
        fail_after: Option<u64>,
    ) -> Result<Arc<Token>, AuthError> {
        let inner = &self.inner;
        let mut status = inner.status.subscribe();
        let deadline = Instant::now() + inner.options.wait_timeout;
        inner.wanted.fetch_max(generation, Ordering::AcqRel);
        inner.wake.notify_one();
        loop {
            // Mark the status seen *before* looking at the token: a refresh that lands after
            // this point then wakes `changed()` below, so no wake-up is lost.
            let (stopped, error) = {
                let s = status.borrow_and_update();
                let failed_since = fail_after.is_some_and(|f| s.failures > f);
                let error = s
                    .last_error
                    .as_ref()
                    .filter(|e| e.is_permanent() || failed_since)
                    .cloned();
                (s.stopped, error)
            };
            let current = inner.current.load_full();
            if let Some(token) = current.filter(|t| t.generation >= generation && inner.is_valid(t))
            {
                return Ok(token);
            }
            if stopped {
                return Err(AuthError::new(
                    AuthErrorKind::ShutDown,
                    "the token manager has stopped",
                ));
            }
            if let Some(e) = error {
                return Err(e);
            }
            match tokio::time::timeout_at(deadline, status.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    return Err(AuthError::new(
                        AuthErrorKind::ShutDown,
                        "the token manager has stopped",
                    ));
                }
                Err(_) => {
                    let mut e = AuthError::new(
                        AuthErrorKind::NoValidToken,
                        format!(
                            "no valid token within {}s",
                            inner.options.wait_timeout.as_secs_f64()
                        ),
                    );
                    e.0.last_error = status.borrow().last_error.clone().map(Box::new);
                    return Err(e);
                }
            }
        }
    }

    /// Whether a valid token is at hand and the last request did not fail permanently: what
    /// `/readyz` reports (see [`ReadinessCheck`](crate::metrics::ReadinessCheck)).
    pub fn is_ready(&self) -> bool {
        self.try_get().is_some() && !self.has_permanent_failure()
    }

    /// Whether the last token request failed permanently (a bad secret, say).
    pub fn has_permanent_failure(&self) -> bool {
        self.inner
            .status
            .borrow()
            .last_error
            .as_ref()
            .is_some_and(AuthError::is_permanent)
    }

    /// Why tokens are failing now, if they are: the last request's error, when it failed for
    /// good or no valid token is left.
    pub fn failure(&self) -> Option<AuthError> {
        let last = self.inner.status.borrow().last_error.clone()?;
        (last.is_permanent() || self.try_get().is_none()).then_some(last)
    }

    /// Stops the background task. Callers waiting for a token get [`AuthErrorKind::ShutDown`].
    pub fn shutdown(&self) {
        self.inner.cancel.cancel();
    }
}

impl Inner {
    fn is_valid(&self, token: &Token) -> bool {
        Instant::now() + token.min_ttl < token.expires_at
    }
}

/// The identity provider's HTTP client, and the network it goes through (whose proxy its errors
/// name).
#[derive(Clone)]
pub(crate) struct IdpClient {
    pub(crate) http: reqwest::Client,
    pub(crate) network: crate::net::Network,
}

pub(crate) fn http_client(
    network: &crate::net::Network,
    timeout: Duration,
) -> Result<IdpClient, AuthError> {
    let http = network
        .client_builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        // A redirect would carry the client secret to another URL (maybe another host, maybe
        // in clear text): never followed; the answer is an error naming where it pointed.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| {
            AuthError::new(
                AuthErrorKind::Permanent,
                format!("cannot build the HTTP client: {e}"),
            )
        })?;
    Ok(IdpClient {
        http,
        network: network.clone(),
    })
}

/// Fetches one token without starting a manager (the `token` command). Returns the token and
/// how long after sending the background task would have refreshed it (without jitter).
pub async fn fetch_once(
    config: &IdpAuthenticationConfig,
    network: &crate::net::Network,
) -> Result<(Token, Duration), AuthError> {
    let client = http_client(network, network.timeout())?;
    let request = TokenRequest::from_config(config)?;
    let sent = Instant::now();
    let response = request.send(&client).await?;
    let refresh_after = policy::refresh_after(
        response.expires_in,
        response.refresh_in,
        config.min_ttl.get(),
        0.0,
    );
    Ok((
        Token {
            access_token: response.access_token,
            token_type: response.token_type,
            expires_at: sent + response.expires_in,
            expires_at_wall: request::wall_clock_after(response.expires_in),
            refresh_at: sent + refresh_after,
            min_ttl: policy::effective_min_ttl(response.expires_in, config.min_ttl.get()),
            generation: 1,
        },
        refresh_after,
    ))
}

/// `/readyz`'s `token` check: a valid token at hand, and no permanent refusal.
impl crate::metrics::ReadinessCheck for TokenManager {
    fn name(&self) -> &'static str {
        "token"
    }

    fn check(&self) -> (bool, String) {
        if !self.is_ready() {
            let why = if self.has_permanent_failure() {
                "the identity provider refused the credentials"
            } else {
                "no valid token yet"
            };
            return (false, why.to_owned());
        }
        match self.short_lived() {
            Some(life) => (
                true,
                format!(
                    "valid token, but tokens live only {}s, no longer than min-ttl: lower min-ttl",
                    life.as_secs_f64()
                ),
            ),
            None => (true, "valid token".to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    #[tokio::test]
    async fn a_panicked_refresh_task_is_started_again() {
        let idp = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/token"))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(serde_json::json!({"access_token": "t", "expires_in": 3600})),
            )
            .mount(&idp)
            .await;
        let config = IdpAuthenticationConfig::new(
            "c",
            crate::Secret::new("s"),
            format!("{}/token", idp.uri()),
            vec!["s".into()],
        );
        let tokens = TokenManager::spawn(&config, TokenManagerOptions::default(), None).unwrap();
        // Current-thread runtime: the task has not run yet, so it panics at its first turn.
        tokens.inner.panic_once.store(true, Ordering::SeqCst);
        let token = tokens
            .get()
            .await
            .expect("the restarted task fetched a token");
        assert_eq!(token.access_token().expose_secret(), "t");
        assert!(
            !tokens.inner.panic_once.load(Ordering::SeqCst),
            "it did panic"
        );
        tokens.shutdown();
    }
}
