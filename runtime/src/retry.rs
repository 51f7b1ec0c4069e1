//! The one retry policy of every outbound request (CDF, the identity provider, the Pushgateway,
//! the built-ins' own HTTP) and of task retries.
//!
//! Two parts, kept apart as tower's `Policy` and backon's builders are:
//! - a pure classifier: [`retryable_status`] and [`retryable_error`] say whether an answer is
//!   worth another attempt, and why (a bounded metrics label), [`retry_after`] reads the peer's
//!   `Retry-After`;
//! - the delays: a [`RetryPolicy`] (backon's exponential backoff with full jitter, AWS's "full
//!   jitter") hands out a [`Backoff`], whose [`next_delay`](Backoff::next_delay) stretches a
//!   delay to the peer's `Retry-After`, never past the policy's cap, and says when no retry is
//!   left.
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//! use extractor_runtime::retry::{RetryPolicy, retryable_status};
//!
//! let policy = RetryPolicy::new(Duration::from_millis(100), Duration::from_secs(10))
//!     .with_max_retries(3)
//!     .with_max_retry_after(Duration::from_secs(30));
//! let mut backoff = policy.backoff();
//! assert_eq!(retryable_status(503, false), Some("5xx"));
//! assert_eq!(retryable_status(400, false), None);
//! // The peer asked for 20 s: honoured, as it is within the 30 s cap.
//! assert_eq!(backoff.next_delay(Some(Duration::from_secs(20))), Some(Duration::from_secs(20)));
//! // A minute is cut to the cap.
//! assert_eq!(backoff.next_delay(Some(Duration::from_secs(60))), Some(Duration::from_secs(30)));
//! assert!(backoff.next_delay(None).unwrap() <= Duration::from_millis(400));
//! assert_eq!(backoff.next_delay(None), None, "three retries, then no more");
//! ```

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// Whether an HTTP status is worth another attempt: `408`, `429` and `5xx` are, and with
/// `auto_retryable` (CDF's `cdf-is-auto-retryable: true`) any status is. The answer is the
/// `reason` label of the retry metrics.
pub fn retryable_status(status: u16, auto_retryable: bool) -> Option<&'static str> {
    match status {
        408 => Some("408"),
        429 => Some("429"),
        500..=599 => Some("5xx"),
        _ if auto_retryable => Some("auto_retryable"),
        _ => None,
    }
}

/// Whether a request that got no answer is worth another attempt: a timeout (`timeout`), or a
/// connection, TLS or body error (`connect`). A redirect the client refused, or a request that
/// could not be built, is not; nor is a proxy's 407 to CONNECT (it wants other credentials).
pub fn retryable_error(e: &reqwest::Error) -> Option<&'static str> {
    if crate::net::refused_by_proxy(e) {
        None
    } else if e.is_timeout() {
        Some("timeout")
    } else if e.is_connect() || e.is_request() || e.is_body() {
        Some("connect")
    } else {
        None
    }
}

/// The wait a `Retry-After` header asks for: delay-seconds, or an HTTP date (a date in the past
/// is no wait). `None` when there is no such header, or it is neither.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    parse_retry_after(value)
}

/// `Retry-After`'s value: delay-seconds or an HTTP date, as a wait from now.
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = jiff::fmt::rfc2822::parse(value).ok()?.timestamp();
    Some(
        when.duration_since(jiff::Timestamp::now())
            .try_into()
            .unwrap_or(Duration::ZERO),
    )
}

/// When to try again: exponential backoff with full jitter (the `n`th delay is drawn uniformly
/// from zero to `min_delay * 2^n`, capped at `max_delay`), a `Retry-After` honoured up to
/// `max_retry_after`, and at most `max_retries` retries.
///
/// # Default
///
/// `min_delay: 1s`, `max_delay: 60s`, `max_retry_after: 60s` (the `max_delay`), no limit on
/// retries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    min_delay: Duration,
    max_delay: Duration,
    max_retry_after: Option<Duration>,
    max_retries: Option<usize>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy::new(Duration::from_secs(1), Duration::from_secs(60))
    }
}

impl RetryPolicy {
    /// Delays from about `min_delay`, doubling up to `max_delay`; a `Retry-After` is honoured up
    /// to `max_delay`; retries without end.
    pub const fn new(min_delay: Duration, max_delay: Duration) -> Self {
        RetryPolicy {
            min_delay,
            max_delay,
            max_retry_after: None,
            max_retries: None,
        }
    }

    /// At most `retries` retries (attempts less one).
    pub const fn with_max_retries(mut self, retries: usize) -> Self {
        self.max_retries = Some(retries);
        self
    }

    /// Honour a peer's `Retry-After` up to `cap` (it may be longer than `max_delay`: a token
    /// endpoint that throttles for half an hour is waited for).
    pub const fn with_max_retry_after(mut self, cap: Duration) -> Self {
        self.max_retry_after = Some(cap);
        self
    }

    /// The delays of one request (or one run): start a new one for each.
    pub fn backoff(&self) -> Backoff {
        let delays = ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_factor(2.0);
        let delays = match self.max_retries {
            Some(retries) => delays.with_max_times(retries),
            None => delays.without_max_times(),
        };
        Backoff {
            delays: delays.build(),
            max_retry_after: self.max_retry_after.unwrap_or(self.max_delay),
        }
    }
}

/// The delays of one request: see [`RetryPolicy`].
#[derive(Debug)]
pub struct Backoff {
    /// backon's delays, before the jitter; it ends when no retry is left.
    delays: backon::ExponentialBackoff,
    max_retry_after: Duration,
}

impl Backoff {
    /// The wait before the next attempt, or `None` when no retry is left: the next jittered
    /// delay, or the peer's `retry_after` when that is longer (at most the policy's cap).
    pub fn next_delay(&mut self, retry_after: Option<Duration>) -> Option<Duration> {
        let backoff = self.delays.next()?.mul_f64(fastrand::f64());
        Some(match retry_after {
            Some(asked) => asked.min(self.max_retry_after).max(backoff),
            None => backoff,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_delay_is_within_its_doubling_cap() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(1));
        for _ in 0..200 {
            let mut backoff = RetryPolicy::new(min, max).backoff();
            for n in 0..8 {
                let d = backoff.next_delay(None).unwrap();
                let cap = (min * 2u32.pow(n)).min(max);
                assert!(d <= cap, "delay {n}: {d:?} > {cap:?}");
            }
        }
        // Jittered: not every first delay is the same.
        let firsts: std::collections::BTreeSet<Duration> = (0..50)
            .map(|_| {
                RetryPolicy::new(min, max)
                    .backoff()
                    .next_delay(None)
                    .unwrap()
            })
            .collect();
        assert!(firsts.len() > 1);
    }

    #[test]
    fn retry_after_is_honoured_up_to_the_cap_and_never_shortens_the_backoff() {
        let policy = RetryPolicy::new(Duration::from_secs(10), Duration::from_secs(10));
        let mut backoff = policy.backoff();
        // Capped at max_delay by default.
        assert_eq!(
            backoff.next_delay(Some(Duration::from_secs(3600))),
            Some(Duration::from_secs(10))
        );
        let mut backoff = policy
            .with_max_retry_after(Duration::from_secs(3600))
            .backoff();
        assert_eq!(
            backoff.next_delay(Some(Duration::from_secs(1800))),
            Some(Duration::from_secs(1800))
        );
        // A zero Retry-After does not skip the backoff.
        for _ in 0..100 {
            let d = backoff.next_delay(Some(Duration::ZERO)).unwrap();
            assert!(d <= Duration::from_secs(10));
        }
    }

    #[test]
    fn retries_run_out() {
        let mut backoff = RetryPolicy::default().with_max_retries(2).backoff();
        assert!(backoff.next_delay(None).is_some());
        assert!(backoff.next_delay(None).is_some());
        assert_eq!(backoff.next_delay(None), None);
        assert_eq!(backoff.next_delay(None), None);
        let mut none = RetryPolicy::default().with_max_retries(0).backoff();
        assert_eq!(none.next_delay(None), None);
    }

    #[test]
    fn statuses() {
        for (status, auto, reason) in [
            (408, false, Some("408")),
            (429, false, Some("429")),
            (500, false, Some("5xx")),
            (503, false, Some("5xx")),
            (599, false, Some("5xx")),
            (400, false, None),
            (401, false, None),
            (404, false, None),
            (409, true, Some("auto_retryable")),
        ] {
            assert_eq!(retryable_status(status, auto), reason, "{status}");
        }
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        assert_eq!(parse_retry_after("120"), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
        let mut headers = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(reqwest::header::RETRY_AFTER, " 7 ".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
    }
}
