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
