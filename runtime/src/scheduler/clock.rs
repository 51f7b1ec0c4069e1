//! Wall-clock time that follows tokio's clock, so cron schedules work on a paused test clock.

use std::time::Duration;

use jiff::Timestamp;
use tokio::time::Instant;

/// Where the scheduler reads wall-clock time.
#[derive(Clone, Copy, Debug)]
pub enum Clock {
    /// The system clock.
    System,
    /// A wall clock that started at `wall` when tokio's clock read `at`, and moves with tokio's
    /// clock (paused and advanced by hand in tests).
    Simulated {
        /// Wall time at `at`.
        wall: Timestamp,
        /// Tokio's clock at `wall`.
        at: Instant,
    },
}

impl Clock {
    /// A simulated clock that reads `wall` now.
    pub fn starting_at(wall: Timestamp) -> Clock {
        Clock::Simulated {
            wall,
            at: Instant::now(),
        }
    }

    /// The current wall-clock time.
    pub fn now(&self) -> Timestamp {
        match self {
            Clock::System => Timestamp::now(),
            Clock::Simulated { wall, at } => {
                let elapsed = jiff::SignedDuration::try_from(at.elapsed()).unwrap_or_default();
                wall.saturating_add(elapsed).unwrap_or(*wall)
            }
        }
    }

    /// The tokio instant at which the wall clock reads `when` (now, if that is past).
    pub fn instant_of(&self, when: Timestamp) -> Instant {
        let now_wall = self.now();
        let now = Instant::now();
        let ahead: Duration = when
            .duration_since(now_wall)
            .try_into()
            .unwrap_or(Duration::ZERO);
        now + ahead
    }

    /// Unix seconds of the wall-clock time at tokio instant `at`.
    pub fn unix_of(&self, at: Instant) -> f64 {
        let now = Instant::now();
        let wall = self.now().as_duration().as_secs_f64();
        if at >= now {
            wall + (at - now).as_secs_f64()
        } else {
            wall - (now - at).as_secs_f64()
        }
    }
}
