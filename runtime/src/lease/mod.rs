//! Active/standby by lease (`high-availability:`, DESIGN.md section 8).
//!
//! One [`LeaseBackend`] trait, one file per backend: [`kubernetes`] (a `coordination.k8s.io/v1`
//! Lease with optimistic concurrency), [`redis`] (a key, compare-and-set by script) and
//! [`raw`] (heartbeat rows in CDF RAW). The [`Elector`] drives a backend as client-go's
//! leaderelection does:
//!
//! - a standby tries to take the lease every `retry-period`;
//! - the leader renews it every `retry-period`; each renewal that succeeds opens the
//!   [`Fence`] until `renew-deadline` after the renewal *started*;
//! - a leader whose fence closes (no renewal within `renew-deadline`, or another holder seen)
//!   has lost the lease: its runs are cancelled and it writes no more state. Since
//!   `renew-deadline < lease-duration`, it has stopped before a standby can take over;
//! - a graceful stop releases the lease, so a standby takes over at its next try.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{HighAvailabilityConfig, LeaseBackendKind};
use crate::fence::Fence;

pub mod kubernetes;
pub mod raw;
pub mod redis;

/// A boxed future, as the backends' methods return (the trait is used as `dyn`).
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// What one try to take or renew the lease found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// We hold it now. `previous`: who held it before, when we just took it from another
    /// holder (expired or released).
    Held {
        /// The previous holder, if we took it over.
        previous: Option<String>,
    },
    /// Someone else holds it (`None`: a holder we cannot name, or a record not yet trusted
    /// free).
    HeldBy(Option<String>),
}

/// A failed try: the backend could not be reached or answered something unusable. Transient:
/// the elector tries again at the next `retry-period`.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{backend} lease: {message}")]
pub struct LeaseError {
    /// The backend (`redis`, `kubernetes`, `raw`).
    pub backend: &'static str,
    /// What went wrong (no secret: URLs are shown without credentials).
    pub message: String,
}

impl LeaseError {
    pub(crate) fn new(backend: &'static str, message: impl Into<String>) -> Self {
        LeaseError {
            backend,
            message: message.into(),
        }
    }
}

/// Where a lease is kept. A custom backend is one impl of this trait.
pub trait LeaseBackend: Send + Sync + std::fmt::Debug {
    /// Takes the lease for `identity` if it is free (never held, released, or expired), renews
    /// it if `identity` holds it, and says who holds it otherwise. `duration` is how long the
    /// lease holds after this call.
    fn try_acquire_or_renew<'a>(
        &'a self,
        identity: &'a str,
        duration: Duration,
    ) -> BoxFuture<'a, Result<Attempt, LeaseError>>;

    /// Gives the lease up if `identity` holds it, so that a standby takes it at its next try.
    fn release<'a>(&'a self, identity: &'a str) -> BoxFuture<'a, Result<(), LeaseError>>;

    /// What and where, for logs (no credentials).
    fn describe(&self) -> String;
}

/// The lease metrics.
#[derive(Clone, Debug)]
struct LeaseMetrics {
    leader: IntGauge,
    transitions: IntCounterVec,
    renew_seconds: Histogram,
    failures: IntCounter,
}

impl LeaseMetrics {
    fn register(registry: &prometheus::Registry) -> prometheus::Result<LeaseMetrics> {
        let leader = IntGauge::new(
            "extractor_leader",
            "1 while this replica holds the high-availability lease and runs the tasks, 0 while it stands by.",
        )?;
        let transitions = IntCounterVec::new(
            Opts::new(
                "extractor_leader_transitions_total",
                "Changes of this replica's role: to=leader when it took the lease, to=standby when it lost or released it.",
            ),
            &["to"],
        )?;
        for to in ["leader", "standby"] {
            transitions.with_label_values(&[to]);
        }
        let renew_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "extractor_lease_renew_seconds",
                "How long each try to take or renew the lease took (answered tries).",
            )
            .buckets(vec![0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]),
        )?;
        let failures = IntCounter::new(
            "extractor_lease_renew_failures_total",
            "Tries to take or renew the lease that failed (the backend unreachable, or a conflict).",
        )?;
        registry.register(Box::new(leader.clone()))?;
        registry.register(Box::new(transitions.clone()))?;
        registry.register(Box::new(renew_seconds.clone()))?;
        registry.register(Box::new(failures.clone()))?;
        Ok(LeaseMetrics {
            leader,
            transitions,
            renew_seconds,
            failures,
        })
    }
}

/// The timings of a lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timings {
    /// How long the lease holds after a renewal.
    pub lease_duration: Duration,
    /// How long the leader goes on without a renewal before it stops.
    pub renew_deadline: Duration,
    /// How often the leader renews and a standby tries.
    pub retry_period: Duration,
}

/// Why a leader stopped leading.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lost {
    /// No renewal succeeded within `renew-deadline`; the last error.
    Deadline(String),
    /// Another replica holds the lease.
    TakenBy(Option<String>),
}

impl std::fmt::Display for Lost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lost::Deadline(why) => write!(f, "no renewal within renew-deadline ({why})"),
            Lost::TakenBy(Some(who)) => write!(f, "`{who}` holds it now"),
            Lost::TakenBy(None) => f.write_str("another replica holds it now"),
        }
    }
}

/// Takes, holds and releases one lease for this process. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Elector {
    backend: Arc<dyn LeaseBackend>,
    identity: Arc<str>,
    name: Arc<str>,
    timings: Timings,
    fence: Fence,
    metrics: LeaseMetrics,
    /// The other holder last seen (logged once per change).
    seen: Arc<Mutex<Option<Option<String>>>>,
}

/// Why an elector could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// The backend's settings cannot be used (an unreadable service account, a bad URL).
    #[error("high-availability: {0}")]
    Backend(String),
    /// The metrics could not be registered.
    #[error("cannot register the lease metrics")]
    Metrics(#[from] prometheus::Error),
}

/// This host's name: `$HOSTNAME` (in Kubernetes, the pod name), else the kernel's.
pub fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "extractor-runtime".to_owned())
}

impl Elector {
    /// The elector of `config` (the lease `<lease-name>-<i>` with `--shard i/n`). `cdf` is the
    /// client the `raw` backend writes with.
    pub fn new(
        config: &HighAvailabilityConfig,
        shard: Option<crate::shard::Shard>,
        cdf: Option<&crate::cdf::CdfClient>,
        registry: &prometheus::Registry,
    ) -> Result<Elector, SetupError> {
        let name = match shard {
            Some(s) => format!("{}-{}", config.lease_name, s.index()),
            None => config.lease_name.clone(),
        };
        let backend: Arc<dyn LeaseBackend> = match config.backend {
            LeaseBackendKind::Redis => {
                let c = config.redis.as_ref().ok_or_else(|| {
                    SetupError::Backend("`backend: redis` needs `redis:`".into())
                })?;
                Arc::new(redis::RedisLease::new(c, &name).map_err(|e| SetupError::Backend(e.to_string()))?)
            }
            LeaseBackendKind::Kubernetes => Arc::new(
                kubernetes::KubernetesLease::new(
                    &config.kubernetes.clone().unwrap_or_default(),
                    &name,
                )
                .map_err(|e| SetupError::Backend(e.to_string()))?,
            ),
            LeaseBackendKind::Raw => {
                let c = config.raw.as_ref().ok_or_else(|| {
                    SetupError::Backend("`backend: raw` needs `raw:`".into())
                })?;
                let cdf = cdf.ok_or_else(|| {
                    SetupError::Backend("`backend: raw` needs a CDF client".into())
                })?;
                Arc::new(raw::RawLease::new(cdf.clone(), c, &name))
            }
        };
        let identity = config.identity.clone().unwrap_or_else(host_name);
        Ok(Elector::with_backend(
            backend,
            &identity,
            &name,
            Timings {
                lease_duration: config.lease_duration.get(),
                renew_deadline: config.renew_deadline.get(),
                retry_period: config.retry_period.get(),
            },
            registry,
        )?)
    }

    /// An elector on any backend (a custom one, or a test's).
    pub fn with_backend(
        backend: Arc<dyn LeaseBackend>,
        identity: &str,
        name: &str,
        timings: Timings,
        registry: &prometheus::Registry,
    ) -> prometheus::Result<Elector> {
        Ok(Elector {
            backend,
            identity: identity.into(),
            name: name.into(),
            timings,
            fence: Fence::closed(),
            metrics: LeaseMetrics::register(registry)?,
            seen: Arc::default(),
        })
    }

    /// The fence this elector keeps open while it leads.
    pub fn fence(&self) -> Fence {
        self.fence.clone()
    }

    /// This replica's identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The lease's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// One try, bounded by `limit`; on success the fence opens until `renew-deadline` after
    /// the try started.
    async fn attempt(&self, limit: Duration) -> Result<Attempt, String> {
        let started = Instant::now();
        let tried = tokio::time::timeout(
            limit,
            self.backend
                .try_acquire_or_renew(&self.identity, self.timings.lease_duration),
        )
        .await;
        match tried {
            Ok(Ok(attempt)) => {
                self.metrics
                    .renew_seconds
                    .observe(started.elapsed().as_secs_f64());
                if matches!(attempt, Attempt::Held { .. }) {
                    self.fence
                        .hold_until(started + self.timings.renew_deadline);
                }
                Ok(attempt)
            }
            Ok(Err(e)) => {
                self.metrics.failures.inc();
                Err(e.to_string())
            }
            Err(_) => {
                self.metrics.failures.inc();
                Err(format!(
                    "{}: no answer within {:?}",
                    self.backend.describe(),
                    limit
                ))
            }
        }
    }

    /// Waits until this replica holds the lease; `None` when `stop` fires first. Returns the
    /// previous holder (`Some(None)`: nobody held it). `on_try` is called after every try (a
    /// standby's liveness beat).
    pub async fn acquire(
        &self,
        stop: &CancellationToken,
        mut on_try: impl FnMut(),
    ) -> Option<Option<String>> {
        tracing::info!(target: "extractor_runtime::lease", lease = %self.name, identity = %self.identity, backend = %self.backend.describe(), "standing by until this replica holds the lease");
        let mut failing = false;
        loop {
            let started = Instant::now();
            let tried = self.attempt(self.timings.retry_period).await;
            on_try();
            match tried {
                Ok(Attempt::Held { previous }) => {
                    self.metrics.leader.set(1);
                    self.metrics.transitions.with_label_values(&["leader"]).inc();
                    let previous = previous.or_else(|| self.seen.lock().expect("lock").clone().flatten());
                    match &previous {
                        Some(p) => tracing::info!(target: "extractor_runtime::lease", lease = %self.name, identity = %self.identity, previous = %p, "took the lease over: this replica leads now"),
                        None => tracing::info!(target: "extractor_runtime::lease", lease = %self.name, identity = %self.identity, "took the lease: this replica leads now"),
                    }
                    *self.seen.lock().expect("lock") = None;
                    return Some(previous);
                }
                Ok(Attempt::HeldBy(holder)) => {
                    failing = false;
                    let mut seen = self.seen.lock().expect("lock");
                    if seen.as_ref() != Some(&holder) {
                        tracing::info!(target: "extractor_runtime::lease", lease = %self.name, holder = holder.as_deref().unwrap_or("(not yet free)"), "another replica holds the lease; standing by");
                        *seen = Some(holder);
                    }
                }
                Err(why) => {
                    if !failing {
                        tracing::warn!(target: "extractor_runtime::lease", lease = %self.name, "cannot reach the lease; trying again every {:?}: {why}", self.timings.retry_period);
                    }
                    failing = true;
                }
            }
            tokio::select! {
                () = tokio::time::sleep_until(started + self.timings.retry_period) => {}
                () = stop.cancelled() => return None,
            }
        }
    }

    /// Renews the lease every `retry-period` while this replica leads; returns why it lost it,
    /// or `None` when `stop` fired (the lease is still held: [`release`](Self::release) it).
    /// The fence closes the moment `renew-deadline` passes without a renewal, whether or not
    /// this loop ran then.
    pub async fn hold(&self, stop: &CancellationToken) -> Option<Lost> {
        let mut last_error = String::from("no renewal was tried in time: the process was stopped or starved");
        loop {
            let next = Instant::now() + self.timings.retry_period;
            let left = self.fence.remaining().unwrap_or(Duration::MAX);
            if left.is_zero() {
                return Some(self.lost(Lost::Deadline(last_error)));
            }
            tokio::select! {
                () = tokio::time::sleep_until(next) => {}
                () = tokio::time::sleep(left) => {
                    return Some(self.lost(Lost::Deadline(last_error)));
                }
                () = stop.cancelled() => return None,
            }
            let left = self.fence.remaining().unwrap_or(Duration::MAX);
            if left.is_zero() {
                return Some(self.lost(Lost::Deadline(last_error)));
            }
            let tried = tokio::select! {
                r = self.attempt(self.timings.retry_period.min(left)) => r,
                () = stop.cancelled() => return None,
            };
            match tried {
                Ok(Attempt::Held { .. }) => {}
                Ok(Attempt::HeldBy(holder)) => {
                    self.fence.revoke();
                    return Some(self.lost(Lost::TakenBy(holder)));
                }
                Err(why) => {
                    tracing::warn!(target: "extractor_runtime::lease", lease = %self.name, left_ms = self.fence.remaining().unwrap_or_default().as_millis() as u64, "cannot renew the lease: {why}");
                    last_error = why;
                }
            }
        }
    }

    fn lost(&self, why: Lost) -> Lost {
        self.fence.revoke();
        self.metrics.leader.set(0);
        self.metrics.transitions.with_label_values(&["standby"]).inc();
        tracing::error!(target: "extractor_runtime::lease", lease = %self.name, identity = %self.identity, "lost the lease: {why}; runs are cancelled and no more state is written");
        why
    }

    /// Gives the lease up (a graceful stop), within `retry-period`.
    pub async fn release(&self) {
        self.fence.revoke();
        let released = tokio::time::timeout(
            self.timings.retry_period,
            self.backend.release(&self.identity),
        )
        .await;
        self.metrics.leader.set(0);
        self.metrics.transitions.with_label_values(&["standby"]).inc();
        match released {
            Ok(Ok(())) => tracing::info!(target: "extractor_runtime::lease", lease = %self.name, identity = %self.identity, "released the lease"),
            Ok(Err(e)) => tracing::warn!(target: "extractor_runtime::lease", lease = %self.name, "cannot release the lease (a standby takes it when it expires): {e}"),
            Err(_) => tracing::warn!(target: "extractor_runtime::lease", lease = %self.name, "the lease release got no answer (a standby takes it when it expires)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A lease in memory; `down` makes every call fail.
    #[derive(Debug, Default)]
    struct Memory {
        holder: Mutex<Option<(String, Instant)>>,
        down: AtomicBool,
    }

    impl LeaseBackend for Memory {
        fn try_acquire_or_renew<'a>(
            &'a self,
            identity: &'a str,
            duration: Duration,
        ) -> BoxFuture<'a, Result<Attempt, LeaseError>> {
            Box::pin(async move {
                if self.down.load(Ordering::SeqCst) {
                    return Err(LeaseError::new("memory", "down"));
                }
                let mut h = self.holder.lock().unwrap();
                let now = Instant::now();
                match &*h {
                    Some((who, until)) if who != identity && *until > now => {
                        Ok(Attempt::HeldBy(Some(who.clone())))
                    }
                    other => {
                        let previous = other
                            .as_ref()
                            .map(|(w, _)| w.clone())
                            .filter(|w| w != identity);
                        *h = Some((identity.to_owned(), now + duration));
                        Ok(Attempt::Held { previous })
                    }
                }
            })
        }

        fn release<'a>(&'a self, identity: &'a str) -> BoxFuture<'a, Result<(), LeaseError>> {
            Box::pin(async move {
                let mut h = self.holder.lock().unwrap();
                if h.as_ref().is_some_and(|(w, _)| w == identity) {
                    *h = None;
                }
                Ok(())
            })
        }

        fn describe(&self) -> String {
            "memory".into()
        }
    }

    fn timings() -> Timings {
        Timings {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    fn elector(backend: &Arc<Memory>, id: &str) -> (Elector, prometheus::Registry) {
        let registry = prometheus::Registry::new();
        let e = Elector::with_backend(backend.clone(), id, "test", timings(), &registry).unwrap();
        (e, registry)
    }

    #[tokio::test(start_paused = true)]
    async fn a_standby_takes_over_when_the_leader_stops_renewing() {
        let backend = Arc::new(Memory::default());
        let (a, _ra) = elector(&backend, "a");
        let (b, rb) = elector(&backend, "b");
        let stop = CancellationToken::new();
        assert_eq!(a.acquire(&stop, || {}).await, Some(None));
        assert!(a.fence().held());
        let start = Instant::now();
        // `a` is frozen: it never renews. `b` takes over once the lease expired.
        assert_eq!(b.acquire(&stop, || {}).await, Some(Some("a".into())));
        let waited = start.elapsed();
        assert!(waited >= Duration::from_secs(15) && waited <= Duration::from_secs(17), "{waited:?}");
        assert!(!a.fence().held(), "a's fence closed at its renew deadline, before b took over");
        assert!(b.fence().held());
        let leader = rb.gather().into_iter().find(|m| m.name() == "extractor_leader").unwrap();
        assert_eq!(leader.get_metric()[0].get_gauge().get_value(), 1.0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_that_cannot_renew_steps_down_at_the_renew_deadline() {
        let backend = Arc::new(Memory::default());
        let (a, registry) = elector(&backend, "a");
        let stop = CancellationToken::new();
        a.acquire(&stop, || {}).await.unwrap();
        backend.down.store(true, Ordering::SeqCst);
        let start = Instant::now();
        let lost = a.hold(&stop).await.unwrap();
        assert!(matches!(lost, Lost::Deadline(_)), "{lost:?}");
        assert!(start.elapsed() <= Duration::from_secs(10), "{:?}", start.elapsed());
        assert!(!a.fence().held());
        let mut text = Vec::new();
        prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &registry.gather(), &mut text).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(text.contains("extractor_leader 0"), "{text}");
        assert!(text.contains("extractor_leader_transitions_total{to=\"standby\"} 1"), "{text}");
        assert!(text.contains("extractor_lease_renew_failures_total"), "{text}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_keeps_the_lease_while_it_renews_and_hands_it_over_on_release() {
        let backend = Arc::new(Memory::default());
        let (a, _r) = elector(&backend, "a");
        let (b, _rb) = elector(&backend, "b");
        let stop = CancellationToken::new();
        a.acquire(&stop, || {}).await.unwrap();
        let holding = CancellationToken::new();
        let held = {
            let (a, holding) = (a.clone(), holding.clone());
            tokio::spawn(async move { a.hold(&holding).await })
        };
        // b stands by as long as a renews.
        let mut tries = 0;
        let standby =
            tokio::time::timeout(Duration::from_secs(60), b.acquire(&stop, || tries += 1)).await;
        assert!(standby.is_err(), "b must not lead while a renews");
        assert!((29..=31).contains(&tries), "a try (and a beat) every 2 s: {tries} in 60 s");
        assert!(a.fence().held());
        holding.cancel();
        assert_eq!(held.await.unwrap(), None, "stopped, not lost");
        a.release().await;
        assert!(!a.fence().held());
        let start = Instant::now();
        assert_eq!(b.acquire(&stop, || {}).await, Some(Some("a".into())));
        assert!(start.elapsed() <= Duration::from_secs(2), "within one retry period");
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_that_sees_another_holder_steps_down_at_once() {
        let backend = Arc::new(Memory::default());
        let (a, _r) = elector(&backend, "a");
        let stop = CancellationToken::new();
        a.acquire(&stop, || {}).await.unwrap();
        *backend.holder.lock().unwrap() =
            Some(("z".into(), Instant::now() + Duration::from_secs(60)));
        let lost = a.hold(&stop).await.unwrap();
        assert_eq!(lost, Lost::TakenBy(Some("z".into())));
        assert!(!a.fence().held());
    }
}
