//! [`Health`]: what `/healthz` and `/readyz` report.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A heartbeat older than this makes `/healthz` fail.
pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(30);

/// Liveness and readiness of the process, shared by the scheduler and the metrics server.
#[derive(Clone, Debug, Default)]
pub struct Health {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    config_loaded: AtomicBool,
    /// Unix milliseconds of the scheduler's last heartbeat; 0 before it started.
    heartbeat_ms: AtomicU64,
    stopped: AtomicBool,
    /// A high-availability standby: alive and ready, its scheduler not started.
    standby: AtomicBool,
    checks: std::sync::Mutex<Vec<Box<dyn ReadinessCheck>>>,
}

/// A readiness check that a part of the process adds to `/readyz` (the token manager's: a
/// valid token, no permanent refusal).
pub trait ReadinessCheck: Send + Sync + 'static {
    /// The check's name in `/readyz`.
    fn name(&self) -> &'static str;

    /// Whether it passes, and why in a few words.
    fn check(&self) -> (bool, String);
}

impl std::fmt::Debug for dyn ReadinessCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// One readiness check's state, as `/readyz` reports it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Check {
    /// The check's name.
    pub name: &'static str,
    /// Whether it passes.
    pub ok: bool,
    /// Why, in a few words.
    pub detail: String,
}

impl Health {
    /// A fresh state: nothing loaded, nothing running.
    pub fn new() -> Self {
        Health::default()
    }

    /// Records that the config was loaded and checked.
    pub fn set_config_loaded(&self) {
        self.inner.config_loaded.store(true, Ordering::Relaxed);
    }

    /// Adds `check` to the readiness checks.
    pub fn add_check(&self, check: impl ReadinessCheck) {
        self.inner
            .checks
            .lock()
            .expect("health checks lock")
            .push(Box::new(check));
    }

    /// Called by the scheduler's heartbeat task.
    pub fn beat(&self) {
        self.inner.heartbeat_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// A high-availability standby (`true`) beats for itself until it leads (`false`): it is
    /// alive and ready while another replica runs the tasks.
    pub fn set_standby(&self, standby: bool) {
        self.inner.standby.store(standby, Ordering::Relaxed);
        if standby {
            self.beat();
        }
    }

    /// Records that the scheduler has stopped (shutdown).
    pub fn set_stopped(&self) {
        self.inner.stopped.store(true, Ordering::Relaxed);
    }

    /// Liveness: the scheduler's heartbeat is recent.
    pub fn is_alive(&self) -> bool {
        let beat = self.inner.heartbeat_ms.load(Ordering::Relaxed);
        beat > 0
            && !self.inner.stopped.load(Ordering::Relaxed)
            && now_ms().saturating_sub(beat) < HEARTBEAT_TIMEOUT.as_millis() as u64
    }

    /// Readiness checks: config loaded, scheduler alive, and every added check (a valid token
    /// and no permanent authentication failure, when CDF is configured).
    pub fn checks(&self) -> Vec<Check> {
        let mut checks = vec![
            Check {
                name: "config",
                ok: self.inner.config_loaded.load(Ordering::Relaxed),
                detail: if self.inner.config_loaded.load(Ordering::Relaxed) {
                    "loaded".into()
                } else {
                    "not loaded".into()
                },
            },
            Check {
                name: "scheduler",
                ok: self.is_alive(),
                detail: if self.is_alive() && self.inner.standby.load(Ordering::Relaxed) {
                    "standing by (another replica holds the lease)".into()
                } else if self.is_alive() {
                    "running".into()
                } else {
                    "not running".into()
                },
            },
        ];
        for check in self.inner.checks.lock().expect("health checks lock").iter() {
            let (ok, detail) = check.check();
            checks.push(Check {
                name: check.name(),
                ok,
                detail,
            });
        }
        checks
    }
}
