//! Says at WARN when a large share of what the job reads is `late_event`:
//! the anomaly log keeps every such record, but an operator should not have
//! to find out from its size. A share that high means a watermark ahead of
//! the producers (a wrong clock that got through, see `intake`), a producer
//! far behind the others, or settings too tight for the topic's disorder.

use std::time::Duration;

use crate::engine::Counters;

/// Share of the records read since the last look above which the job warns.
pub const LATE_SHARE_WARN: f64 = 0.10;
/// Fewer late records than this since the last look never warn.
const LATE_MIN: u64 = 100;
/// At most one warning per this long.
const EVERY: Duration = Duration::from_secs(60);

/// What the job had read and found late when it last looked.
#[derive(Debug, Default)]
pub struct LateWatch {
    read: u64,
    late: u64,
    since: Duration,
    warned_at: Option<Duration>,
}

/// What went late since the last look, when it is worth a warning.
#[derive(Debug, PartialEq)]
pub struct LateShare {
    pub late: u64,
    pub read: u64,
    pub over: Duration,
}

impl LateWatch {
    /// Looks at the counters at `now` (job clock): `Some` when more than
    /// [`LATE_SHARE_WARN`] of the records read since the last look (and at
    /// least 100) were late and the last warning is a minute old. Every look
    /// starts a new span.
    pub fn look(&mut self, counters: &Counters, now: Duration) -> Option<LateShare> {
        let read = counters.read.saturating_sub(self.read);
        let late = counters.late.saturating_sub(self.late);
        let over = now.saturating_sub(self.since);
        (self.read, self.late, self.since) = (counters.read, counters.late, now);
        let due = self
            .warned_at
            .is_none_or(|w| now.saturating_sub(w) >= EVERY);
        if late >= LATE_MIN && late as f64 > LATE_SHARE_WARN * read as f64 && due {
            self.warned_at = Some(now);
            Some(LateShare { late, read, over })
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(read: u64, late: u64) -> Counters {
        Counters {
            read,
            late,
            ..Counters::default()
        }
    }

    #[test]
    fn warns_on_a_high_share_at_most_once_a_minute() {
        let s = Duration::from_secs;
        let mut w = LateWatch::default();
        assert_eq!(w.look(&at(10_000, 99), s(5)), None, "too few");
        assert_eq!(w.look(&at(20_000, 1_099), s(10)), None, "10 %, not more");
        assert_eq!(
            w.look(&at(30_000, 2_200), s(15)),
            Some(LateShare {
                late: 1_101,
                read: 10_000,
                over: s(5)
            })
        );
        assert_eq!(w.look(&at(40_000, 9_000), s(20)), None, "warned 5 s ago");
        assert!(
            w.look(&at(50_000, 19_000), s(75)).is_some(),
            "a minute later"
        );
    }
}
