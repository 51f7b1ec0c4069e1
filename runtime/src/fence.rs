//! Fencing (DESIGN.md section 8): whether this replica may still write. With
//! `high-availability:`, the lease elector keeps a [`Fence`] open until a deadline a little
//! before the lease could pass to another replica, and moves it at every renewal; every state
//! save, pipeline report and newly queued item checks it against the monotonic clock, so a
//! process frozen past its lease (SIGSTOP, a VM pause, a long GC-like stall) writes nothing when
//! it wakes, before its elector has even run again. Without `high-availability:` the fence is
//! always open.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Where the deadlines are counted from (process-wide, monotonic).
fn base() -> Instant {
    static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

/// Milliseconds since [`base`], plus one, so that 0 means "closed".
fn millis(at: Instant) -> u64 {
    at.saturating_duration_since(base())
        .as_millis()
        .try_into()
        .unwrap_or(u64::MAX - 1)
        + 1
}

/// Whether this replica may write: always, or until a deadline its lease sets. Cheap to clone;
/// clones share the deadline.
#[derive(Clone, Debug, Default)]
pub struct Fence(Option<Arc<AtomicU64>>);

/// A write refused because this replica no longer holds its lease.
#[derive(Clone, Debug, thiserror::Error)]
#[error(
    "this replica no longer holds the high-availability lease (another replica may lead now): {0} not written"
)]
pub struct Fenced(pub &'static str);

impl Fence {
    /// A fence that is always open (no `high-availability:`).
    pub fn open() -> Fence {
        Fence(None)
    }

    /// A fence closed until [`hold_until`](Self::hold_until) opens it.
    pub(crate) fn closed() -> Fence {
        Fence(Some(Arc::new(AtomicU64::new(0))))
    }

    /// Whether writes are allowed now.
    pub fn held(&self) -> bool {
        match &self.0 {
            None => true,
            Some(deadline) => millis(Instant::now()) < deadline.load(Ordering::Acquire),
        }
    }

    /// `Ok` while [`held`](Self::held); else an error naming `what` was not written.
    pub fn check(&self, what: &'static str) -> Result<(), Fenced> {
        if self.held() {
            Ok(())
        } else {
            Err(Fenced(what))
        }
    }

    /// Opens the fence until `until` (a renewal that started at `until - renew-deadline`).
    pub(crate) fn hold_until(&self, until: Instant) {
        if let Some(deadline) = &self.0 {
            deadline.store(millis(until), Ordering::Release);
        }
    }

    /// Closes it now (the lease was lost or released).
    pub(crate) fn revoke(&self) {
        if let Some(deadline) = &self.0 {
            deadline.store(0, Ordering::Release);
        }
    }

    /// How long it stays open from now (`None`: always open; zero: closed).
    pub(crate) fn remaining(&self) -> Option<Duration> {
        let deadline = self.0.as_ref()?.load(Ordering::Acquire);
        let now = millis(Instant::now());
        Some(Duration::from_millis(deadline.saturating_sub(now)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_fence_is_always_held() {
        assert!(Fence::open().held());
        assert!(Fence::open().check("the state").is_ok());
        assert_eq!(Fence::open().remaining(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_fence_closes_at_its_deadline_and_clones_share_it() {
        let fence = Fence::closed();
        assert!(!fence.held(), "closed until a lease opens it");
        let clone = fence.clone();
        fence.hold_until(Instant::now() + Duration::from_secs(10));
        assert!(clone.held());
        tokio::time::advance(Duration::from_millis(9_990)).await;
        assert!(clone.held());
        tokio::time::advance(Duration::from_millis(20)).await;
        assert!(!clone.held(), "past the deadline without a renewal");
        let e = clone.check("the state").unwrap_err();
        assert!(e.to_string().contains("the state not written"), "{e}");
        fence.hold_until(Instant::now() + Duration::from_secs(10));
        assert!(clone.held());
        fence.revoke();
        assert!(!clone.held());
        assert_eq!(clone.remaining(), Some(Duration::ZERO));
    }
}
