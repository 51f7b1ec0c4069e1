//! The background task: fetch, refresh ahead of expiry, retry failures.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, UNIX_EPOCH};

use tokio::time::Instant;

use super::error::{AuthError, AuthErrorKind};
use super::{Inner, Token, policy, request};
use crate::internal_events::{TokenRefreshError, TokenRefreshed};

/// Token requests retry without end (in the background), honouring `Retry-After` up to
/// `max_retry_after`.
fn backoff(inner: &Inner) -> crate::retry::Backoff {
    crate::retry::RetryPolicy::new(inner.options.min_backoff, inner.options.max_backoff)
        .with_max_retry_after(inner.options.max_retry_after)
        .backoff()
}

/// Runs the refresh task, and starts it again if it panics (a bug must not leave the process
/// serving a token until it expires, with `/healthz` green, and never refreshing again).
pub(crate) async fn supervise(inner: Arc<Inner>) {
    loop {
        match tokio::spawn(run(inner.clone())).await {
            Err(e) if e.is_panic() && !inner.cancel.is_cancelled() => {
                tracing::error!(target: "extractor_runtime::auth", "the token refresh task panicked; starting it again in 1 s");
                tokio::select! {
                    () = inner.cancel.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
            _ => return,
        }
    }
}

pub(crate) async fn run(inner: Arc<Inner>) {
    #[cfg(test)]
    if inner.panic_once.swap(false, Ordering::SeqCst) {
        panic!("injected by a test");
    }
    let mut delays = backoff(&inner);
    // When the next request is planned, and the earliest a caller's request may bring it
    // forward to (after a failure, the backoff or Retry-After is honoured).
    let mut next_attempt = Instant::now();
    let mut earliest = Instant::now();
    loop {
        tokio::select! {
            () = inner.cancel.cancelled() => break,
            () = tokio::time::sleep_until(next_attempt) => {}
            () = inner.wake.notified() => {
                if Instant::now() < earliest || !needs_refresh(&inner) {
                    continue;
                }
            }
        }
        let sent = Instant::now();
        let result = tokio::select! {
            () = inner.cancel.cancelled() => break,
            r = inner.request.send(&inner.client) => r,
        };
        let took = sent.elapsed();
        match result {
            Ok(response) => {
                let min_ttl = policy::effective_min_ttl(response.expires_in, inner.options.min_ttl);
                let short = response.expires_in <= inner.options.min_ttl;
                if short && inner.status.borrow().short_lived.is_none() {
                    tracing::warn!(
                        target: "extractor_runtime::auth",
                        lifetime_s = response.expires_in.as_secs_f64(),
                        min_ttl_s = inner.options.min_ttl.as_secs_f64(),
                        "the identity provider issues tokens that live no longer than min-ttl; using them while a quarter of their life is left: lower min-ttl"
                    );
                }
                inner.status.send_modify(|s| {
                    s.short_lived = short.then_some(response.expires_in);
                });
                let refresh_after = policy::refresh_after(
                    response.expires_in,
                    response.refresh_in,
                    min_ttl,
                    fastrand::f64(),
                );
                let generation = inner.status.borrow().generation + 1;
                let token = Token {
                    access_token: response.access_token,
                    token_type: response.token_type,
                    expires_at: sent + response.expires_in,
                    expires_at_wall: request::wall_clock_after(response.expires_in),
                    refresh_at: sent + refresh_after,
                    min_ttl,
                    generation,
                };
                next_attempt = token.refresh_at;
                earliest = Instant::now();
                delays = backoff(&inner);
                record_success(&inner, token, took, response.expires_in, refresh_after);
            }
            Err(e) => {
                let delay = match e.kind() {
                    AuthErrorKind::Permanent => inner.options.permanent_retry,
                    _ => delays
                        .next_delay(e.retry_after())
                        .unwrap_or(inner.options.max_backoff),
                };
                record_failure(&inner, e, took, delay);
                next_attempt = Instant::now() + delay;
                earliest = next_attempt;
            }
        }
    }
    inner.status.send_modify(|s| s.stopped = true);
}

/// Whether a caller wants a newer token, or the current one is no longer valid.
fn needs_refresh(inner: &Inner) -> bool {
    let generation = inner.status.borrow().generation;
    if inner.wanted.load(Ordering::Acquire) > generation {
        return true;
    }
    match &*inner.current.load() {
        Some(token) => !inner.is_valid(token),
        None => true,
    }
}

fn record_success(
    inner: &Inner,
    token: Token,
    took: Duration,
    expires_in: Duration,
    refresh_after: Duration,
) {
    let expiry_unix = token
        .expires_at_wall
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default();
    let generation = token.generation;
    inner.current.store(Some(Arc::new(token)));
    inner.status.send_modify(|s| {
        s.generation = generation;
        s.consecutive_failures = 0;
        s.last_error = None;
    });
    TokenRefreshed {
        metrics: inner.metrics.as_ref(),
        generation,
        expires_in,
        refresh_in: refresh_after,
        took,
        expiry_unix,
    }
    .emit();
}

fn record_failure(inner: &Inner, error: AuthError, took: Duration, retry_in: Duration) {
    let still_valid = inner
        .current
        .load()
        .as_ref()
        .is_some_and(|t| inner.is_valid(t));
    let mut consecutive = 0;
    inner.status.send_modify(|s| {
        s.failures += 1;
        s.consecutive_failures += 1;
        consecutive = s.consecutive_failures;
        s.last_error = Some(error.clone());
    });
    TokenRefreshError {
        metrics: inner.metrics.as_ref(),
        kind: error.kind().as_label(),
        oauth_error: error.oauth_error().unwrap_or(""),
        aadsts: error.aadsts_code(),
        trace_id: error.trace_id().unwrap_or(""),
        correlation_id: error.correlation_id().unwrap_or(""),
        error: &error,
        took,
        consecutive_failures: consecutive,
        retry_in,
        still_serving_old_token: still_valid,
    }
    .emit();
}
