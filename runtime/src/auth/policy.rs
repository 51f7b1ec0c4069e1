//! When to refresh a token (DESIGN.md section 3, refresh policy).

use std::time::Duration;

/// Tokens living this long or more are refreshed at half-life.
const LONG_LIVED: Duration = Duration::from_secs(2 * 3600);
/// Otherwise refresh this long before expiry (at most half the lifetime).
const LEAD: Duration = Duration::from_secs(5 * 60);
/// The largest share of the lead time taken off as jitter.
pub(crate) const MAX_JITTER_FRACTION: f64 = 0.10;

/// How long after the request was sent to refresh a token that lives `expires_in`.
///
/// `refresh_in` when the identity provider gave it; else half-life for tokens of 2 h or more;
/// else 5 min before expiry, clamped to half the lifetime. Never later than `min_ttl` before
/// expiry. Then `jitter` (0.0 to 1.0, scaled to 0-10 %) of the lead time is taken off, so that
/// many processes started together do not refresh together.
pub(crate) fn refresh_after(
    expires_in: Duration,
    refresh_in: Option<Duration>,
    min_ttl: Duration,
    jitter: f64,
) -> Duration {
    let planned = match refresh_in {
        Some(r) if r < expires_in => r,
        _ if expires_in >= LONG_LIVED => expires_in / 2,
        _ => expires_in - LEAD.min(expires_in / 2),
    };
    let latest = expires_in.saturating_sub(min_ttl);
    let planned = planned.min(latest);
    let lead = expires_in - planned;
    let jitter = jitter.clamp(0.0, 1.0) * MAX_JITTER_FRACTION;
    planned.saturating_sub(lead.mul_f64(jitter))
}

/// The margin a token is handed out with: `min_ttl`, or a quarter of the lifetime when the
/// token lives no longer than `min_ttl` (a 10 s token with the default 30 s is used while it has
/// 2.5 s left, instead of never).
pub(crate) fn effective_min_ttl(expires_in: Duration, min_ttl: Duration) -> Duration {
    if expires_in <= min_ttl {
        expires_in / 4
    } else {
        min_ttl
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN_TTL: Duration = Duration::from_secs(30);

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn short_tokens_get_a_quarter_of_their_life_as_margin() {
        assert_eq!(
            effective_min_ttl(secs(10), MIN_TTL),
            Duration::from_millis(2_500)
        );
        assert_eq!(
            effective_min_ttl(secs(30), MIN_TTL),
            Duration::from_millis(7_500)
        );
        assert_eq!(effective_min_ttl(secs(31), MIN_TTL), MIN_TTL);
        // A 10 s token is refreshed before its margin: at 5 s less up to 10 % of the lead.
        assert_eq!(refresh_after(secs(10), None, secs(2), 0.0), secs(5));
    }

    #[test]
    fn one_minute_token_refreshes_at_half_life() {
        // lead = min(5 min, 30 s) = 30 s; min-ttl allows 30 s too.
        assert_eq!(refresh_after(secs(60), None, MIN_TTL, 0.0), secs(30));
        // Full jitter takes 10 % of the 30 s lead.
        assert_eq!(refresh_after(secs(60), None, MIN_TTL, 1.0), secs(27));
    }

    #[test]
    fn one_hour_token_refreshes_five_minutes_early() {
        assert_eq!(refresh_after(secs(3600), None, MIN_TTL, 0.0), secs(3300));
        assert_eq!(refresh_after(secs(3600), None, MIN_TTL, 1.0), secs(3270));
    }

    #[test]
    fn day_long_token_refreshes_at_half_life() {
        assert_eq!(
            refresh_after(secs(86_400), None, MIN_TTL, 0.0),
            secs(43_200)
        );
        assert_eq!(
            refresh_after(secs(86_400), None, MIN_TTL, 1.0),
            secs(43_200 - 4_320)
        );
    }

    #[test]
    fn refresh_in_wins_when_given() {
        assert_eq!(
            refresh_after(secs(3600), Some(secs(1800)), MIN_TTL, 0.0),
            secs(1800)
        );
        assert_eq!(
            refresh_after(secs(86_400), Some(secs(3600)), MIN_TTL, 0.0),
            secs(3600)
        );
        assert_eq!(
            refresh_after(secs(60), Some(secs(20)), MIN_TTL, 0.0),
            secs(20)
        );
        // A refresh_in at or past expiry is ignored.
        assert_eq!(
            refresh_after(secs(3600), Some(secs(4000)), MIN_TTL, 0.0),
            secs(3300)
        );
    }

    #[test]
    fn never_later_than_min_ttl_before_expiry() {
        // 1 h token, min-ttl 10 min: refresh at 50 min at the latest.
        assert_eq!(refresh_after(secs(3600), None, secs(600), 0.0), secs(3000));
        // refresh_in past the min-ttl margin is pulled in too.
        assert_eq!(
            refresh_after(secs(60), Some(secs(50)), MIN_TTL, 0.0),
            secs(30)
        );
    }

    #[test]
    fn jitter_stays_within_ten_percent_of_the_lead() {
        for lifetime in [60, 600, 3600, 7200, 86_400] {
            let expires = secs(lifetime);
            let base = refresh_after(expires, None, MIN_TTL, 0.0);
            let lead = expires - base;
            for i in 0..=100 {
                let r = refresh_after(expires, None, MIN_TTL, f64::from(i) / 100.0);
                assert!(r <= base, "{lifetime}: {r:?} after {base:?}");
                assert!(
                    base - r <= lead.mul_f64(0.1) + Duration::from_nanos(1),
                    "{lifetime}: jitter too large"
                );
            }
        }
    }
}
