//! The stop's one deadline: `shutdown-grace` after the stop was asked for, every step of a
//! shutdown (draining runs, the final flush, the state save, the pipeline report, the last
//! metrics push) finishes or is cut short, so an orchestrator's kill never comes first.

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// `grace` after `shutdown` fires. Before it fires there is no deadline: a batch job that ends
/// by itself finishes its last steps unhurried (each is bounded by its own retries).
#[derive(Clone, Debug)]
pub(crate) struct Deadline {
    shutdown: CancellationToken,
    grace: Duration,
    fired: Arc<OnceLock<Instant>>,
}

impl Deadline {
    /// Starts watching `shutdown` (spawns a task: call within a runtime).
    pub(crate) fn new(shutdown: CancellationToken, grace: Duration) -> Self {
        let deadline = Deadline {
            shutdown,
            grace,
            fired: Arc::new(OnceLock::new()),
        };
        let watch = deadline.clone();
        tokio::spawn(async move {
            watch.shutdown.cancelled().await;
            watch.fired.get_or_init(Instant::now);
        });
        deadline
    }

    /// Completes `reserve` before the deadline (never while no stop was asked for).
    async fn reached(&self, reserve: Duration) {
        self.shutdown.cancelled().await;
        let at = *self.fired.get_or_init(Instant::now) + self.grace.saturating_sub(reserve);
        tokio::time::sleep_until(at).await;
    }

    /// Runs `step` until it finishes or the deadline (less `reserve`) passes; `None` then, and
    /// a warning naming `what`. `step` must be cancel safe.
    pub(crate) async fn bound<T>(
        &self,
        what: &str,
        reserve: Duration,
        step: impl Future<Output = T>,
    ) -> Option<T> {
        tokio::select! {
            biased;
            r = step => Some(r),
            () = self.reached(reserve) => {
                tracing::warn!(target: "extractor_runtime::runtime", grace_s = self.grace.as_secs_f64(), "{what} did not finish within the shutdown grace; cut short");
                None
            }
        }
    }

    /// What a step gets held back for the steps after it: a quarter of the grace, at most
    /// 10 s.
    pub(crate) fn reserve(&self) -> Duration {
        (self.grace / 4).min(Duration::from_secs(10))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn no_deadline_until_the_stop_then_grace_after_it() {
        let stop = CancellationToken::new();
        let d = Deadline::new(stop.clone(), Duration::from_secs(8));
        // Without a stop, a slow step runs to its end.
        let slow = tokio::time::sleep(Duration::from_secs(100));
        assert_eq!(d.bound("slow", Duration::ZERO, slow).await, Some(()));

        stop.cancel();
        tokio::task::yield_now().await;
        tokio::time::advance(Duration::from_secs(3)).await;
        let start = Instant::now();
        let never = std::future::pending::<()>();
        assert_eq!(d.bound("never", d.reserve(), never).await, None);
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(3),
            "cut at grace - reserve (8 - 2)"
        );
        let never = std::future::pending::<()>();
        assert_eq!(d.bound("never", Duration::ZERO, never).await, None);
        assert_eq!(start.elapsed(), Duration::from_secs(5), "cut at the grace");
    }
}
