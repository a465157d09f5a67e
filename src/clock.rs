//! Time as the job sees it: a monotonic clock for timers (barrier interval,
//! idle timeout, backoff) and the wall clock for detection times and
//! `updated_at`. Never for event time.
//!
//! The job reads time only through [`Clock`], so a simulation can run the
//! job's logic under a clock it controls (see `sim`), where a "sleep" only
//! advances simulated time.

use std::time::{Duration, Instant};

pub trait Clock: Send + Sync {
    /// Monotonic time since an arbitrary origin.
    fn now(&self) -> Duration;

    /// Wall-clock time, epoch milliseconds.
    fn wall_ms(&self) -> i64;

    /// Waits `d` (or, simulated, lets `d` pass).
    fn sleep(&self, d: Duration);
}

/// The machine's clocks.
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    pub fn new() -> Self {
        SystemClock {
            origin: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    fn wall_ms(&self) -> i64 {
        crate::time::now_ms()
    }

    fn sleep(&self, d: Duration) {
        std::thread::sleep(d);
    }
}

/// A clock that only moves when told to (or slept on): for tests and
/// deterministic simulation. Wall time is `wall_origin_ms` plus its time.
pub struct ManualClock {
    now: std::sync::Mutex<Duration>,
    wall_origin_ms: i64,
}

impl ManualClock {
    pub fn new(wall_origin_ms: i64) -> Self {
        ManualClock {
            now: std::sync::Mutex::new(Duration::ZERO),
            wall_origin_ms,
        }
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        let mut now = self.now.lock().unwrap_or_else(|e| e.into_inner());
        *now += d;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        *self.now.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wall_ms(&self) -> i64 {
        self.wall_origin_ms + self.now().as_millis() as i64
    }

    fn sleep(&self, d: Duration) {
        self.advance(d);
    }
}
