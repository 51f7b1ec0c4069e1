//! The one retry schedule of the runtime (token refresh, CDF requests, task retries) and of the
//! built-ins: exponential backoff with full jitter (AWS's "full jitter").

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// Endless delays: the `n`th is drawn uniformly from zero to `min * 2^n`, capped at `max`.
/// `.take(n)` for at most `n` retries.
pub fn full_jitter(min: Duration, max: Duration) -> impl Iterator<Item = Duration> + Send + use<> {
    ExponentialBuilder::default()
        .with_min_delay(min)
        .with_max_delay(max)
        .with_factor(2.0)
        .without_max_times()
        .build()
        .map(|d| d.mul_f64(fastrand::f64()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_delay_is_within_its_doubling_cap() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(1));
        for _ in 0..200 {
            let delays: Vec<Duration> = full_jitter(min, max).take(8).collect();
            for (n, d) in delays.iter().enumerate() {
                let cap = (min * 2u32.pow(n as u32)).min(max);
                assert!(*d <= cap, "delay {n}: {d:?} > {cap:?}");
            }
        }
        // Jittered: not every first delay is the same.
        let firsts: std::collections::BTreeSet<Duration> = (0..50)
            .map(|_| full_jitter(min, max).next().unwrap())
            .collect();
        assert!(firsts.len() > 1);
    }
}
