//! Records on their way to the engine: the wrong-clock guard, and the
//! records a partition holds back until their turn.
//!
//! # Wrong clocks (docs/semantics.md, "Wrong clocks")
//!
//! A partition's watermark follows the highest event time it has seen, so
//! one record stamped years ahead (a device with a wrong clock) would move
//! it for good: every later in-order record of the partition would be late,
//! or held by watermark alignment forever. Two rules keep a single record
//! from doing that, both decided from the input alone, so a restart, a
//! replay and a clean run give the same verdict:
//!
//! 1. *Against the record's own timestamp* (Kafka's `CreateTime` or
//!    `LogAppendTime`, the generator's send time): an event time more than
//!    `max_ahead_of_record_time` ahead of it is `implausible_event_time` at
//!    once.
//! 2. *Against everything else seen*: an event time more than
//!    `max_time_jump` ahead of both its partition's clock and the job
//!    watermark is *unconfirmed*. It is held, with every record of its
//!    partition behind it, until the partition's next valid records say
//!    whether the jump is real: the first or the second of them within
//!    `max_time_jump` below it confirms it; two further below reject it as
//!    `implausible_event_time`. The rest of the job catching up with it (the
//!    watermark reaching its time minus `max_time_jump`) also confirms it;
//!    the watermark is capped there meanwhile, so a confirmed record is never
//!    late for having waited. At the end of a bounded input, a record still
//!    unconfirmed is confirmed, unless a later record contradicts it or,
//!    with nothing after it and no record timestamp of its own, it is
//!    further ahead of what the job has seen than `max_ahead_of_record_time`.
//!    A record timestamp that rule 1 accepted vouches for a last record: a
//!    partition's only order after a quiet hour is real far more often than
//!    a wrong clock whose producer copied it into the record timestamp, and
//!    nothing after it can be made late by it. That end is not state (see
//!    `job`), so a later run with more data decides it again. A partition's
//!    first record with no watermark to compare with is unconfirmed too.
//!
//! The default `max_time_jump` (out-of-orderness + window size − slide +
//! allowed lateness, 65 s) is the largest jump that can never make an
//! in-order record after it late, so such jumps never wait.
//!
//! # Holding
//!
//! A partition's records wait, in offset order, while its event time runs
//! ahead of the others (alignment, see `job`) or while its first waiting
//! record is unconfirmed. A held record keeps its parse result. The job's
//! next offset for the partition stays at the first held record, so a
//! checkpoint never covers a record that was not processed.

use std::collections::VecDeque;

use crate::config::WindowConfig;
use crate::engine::Prepared;
use crate::event::Reason;
use crate::window::WindowSpec;

/// What the guard decides for an unconfirmed record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Not enough is known yet: keep waiting.
    Wait,
    Confirm,
    Reject,
}

/// The wrong-clock rules (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeGuard {
    /// Rule 1 bound, ms; `i64::MAX` turns it off.
    pub max_ahead_of_record_ms: i64,
    /// Rule 2 bound, ms; `i64::MAX` turns it off.
    pub max_jump_ms: i64,
}

impl TimeGuard {
    /// The wrong-clock rules the `window` settings ask for; a bound of zero
    /// turns its rule off.
    pub fn of(window: &WindowConfig) -> TimeGuard {
        let off_if_zero = |ms: i64| if ms == 0 { i64::MAX } else { ms };
        TimeGuard {
            max_ahead_of_record_ms: off_if_zero(window.max_ahead_of_record_time.ms()),
            max_jump_ms: match window.max_time_jump {
                Some(d) => off_if_zero(d.ms()),
                None => TimeGuard::default_max_jump_ms(&window.spec()),
            },
        }
    }

    /// The largest jump ahead that can never make an in-order record after
    /// it late: the default `max_time_jump`.
    pub fn default_max_jump_ms(spec: &WindowSpec) -> i64 {
        spec.out_of_orderness_ms + spec.size_ms - spec.slide_ms + spec.allowed_lateness_ms
    }

    /// Rule 1: a valid event stamped too far ahead of its record's own
    /// timestamp (`i64::MIN`: none) becomes `implausible_event_time`.
    #[inline]
    pub fn against_record_time(&self, prepared: Prepared, record_ms: i64) -> Prepared {
        match prepared.event_time_ms() {
            Some(t)
                if record_ms != i64::MIN
                    && t > record_ms.saturating_add(self.max_ahead_of_record_ms) =>
            {
                Prepared::rejected(Reason::ImplausibleEventTime)
            }
            _ => prepared,
        }
    }

    /// Rule 2: whether an event at `t_ms` must wait for confirmation, given
    /// `known`, the larger of its partition's clock and the job watermark
    /// (`i64::MIN` when nothing is known: a partition's first event waits
    /// too, even with a record timestamp, which producers often copy from
    /// the event time itself).
    #[inline]
    pub fn is_unconfirmed(&self, t_ms: i64, known: i64) -> bool {
        if known == i64::MIN {
            return self.max_jump_ms != i64::MAX;
        }
        t_ms > known.saturating_add(self.max_jump_ms)
    }

    /// Decides an unconfirmed event at `t_ms` (record timestamp
    /// `record_ms`, epoch ms; `i64::MIN`: none) from the event times of the
    /// valid records after it in its partition (`later`, in offset order).
    /// At the end of the input with nothing after it, the record is
    /// confirmed if its own record timestamp vouches for it (rule 1 already
    /// held it to that), else unless it is further ahead of `known` (what
    /// the job had seen) than a record timestamp would allow.
    pub fn decide(
        &self,
        t_ms: i64,
        record_ms: i64,
        mut later: impl Iterator<Item = i64>,
        known: i64,
        end_of_input: bool,
    ) -> Decision {
        let agrees = |v: i64| v >= t_ms.saturating_sub(self.max_jump_ms);
        match (later.next(), later.next()) {
            (Some(a), _) if agrees(a) => Decision::Confirm,
            (Some(_), Some(b)) if agrees(b) => Decision::Confirm,
            (Some(_), Some(_)) => Decision::Reject,
            (Some(_), None) if end_of_input => Decision::Reject,
            (None, None) if end_of_input => {
                if record_ms != i64::MIN
                    || known == i64::MIN
                    || t_ms <= known.saturating_add(self.max_ahead_of_record_ms)
                {
                    Decision::Confirm
                } else {
                    Decision::Reject
                }
            }
            _ => Decision::Wait,
        }
    }
}

/// A record waiting its turn.
#[derive(Debug, Clone)]
pub struct HeldRecord {
    pub offset: u64,
    /// The record's own timestamp, epoch ms (`i64::MIN`: none).
    pub record_ms: i64,
    pub payload: Vec<u8>,
    /// Parsed when it was read; rule 1 already applied.
    pub prepared: Prepared,
}

/// The records one partition holds, in offset order.
#[derive(Debug, Default)]
pub struct Held {
    queue: VecDeque<HeldRecord>,
    /// Set when the first record was found unconfirmed: its time, for the
    /// watermark cap and the metrics.
    unconfirmed_at: Option<i64>,
}

impl Held {
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn push(&mut self, record: HeldRecord) {
        self.queue.push_back(record);
    }

    pub fn front(&self) -> Option<&HeldRecord> {
        self.queue.front()
    }

    pub fn pop(&mut self) -> Option<HeldRecord> {
        self.unconfirmed_at = None;
        self.queue.pop_front()
    }

    /// The event times of the valid records after the first, for
    /// [`TimeGuard::decide`].
    pub fn later_times(&self) -> impl Iterator<Item = i64> + '_ {
        self.queue
            .iter()
            .skip(1)
            .filter_map(|r| r.prepared.event_time_ms())
    }

    /// Notes that the first record is unconfirmed, at `t_ms`.
    pub fn mark_unconfirmed(&mut self, t_ms: i64) {
        self.unconfirmed_at = Some(t_ms);
    }

    /// The first record's event time while it waits for confirmation.
    pub fn unconfirmed_at(&self) -> Option<i64> {
        self.unconfirmed_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUARD: TimeGuard = TimeGuard {
        max_ahead_of_record_ms: 3_600_000,
        max_jump_ms: 65_000,
    };

    #[test]
    fn the_default_jump_is_the_largest_that_never_makes_a_follower_late() {
        let spec = WindowSpec::DEFAULT;
        let jump = TimeGuard::default_max_jump_ms(&spec);
        assert_eq!(jump, 65_000);
        // A follower at t, in order for the old clock c (t >= c), is late
        // when the watermark reaches the end of its last window plus the
        // lateness. After a jump to c + j the watermark is c + j - bound.
        let late_after_jump = |c: i64, j: i64| {
            let wm = c + j - spec.out_of_orderness_ms;
            (c..c + 120_000).any(|t| spec.is_late(t, wm))
        };
        for c in (0..200_000).step_by(997) {
            assert!(!late_after_jump(c, jump), "c {c}");
        }
        // One millisecond more can: c just before a pane boundary.
        assert!(late_after_jump(29_999, jump + 1));
    }

    #[test]
    fn record_time_rule() {
        let ok = GUARD.against_record_time(Prepared::rejected(Reason::BadAmount), 0);
        assert_eq!(ok, Prepared::rejected(Reason::BadAmount));
        assert!(GUARD.is_unconfirmed(200_000, 100_000));
        assert!(!GUARD.is_unconfirmed(165_000, 100_000));
        assert!(GUARD.is_unconfirmed(1, i64::MIN), "nothing known yet");
    }

    #[test]
    fn decisions() {
        let t = 1_000_000;
        let none = i64::MIN;
        let d = |later: &[i64], end| GUARD.decide(t, none, later.iter().copied(), t - 100_000, end);
        assert_eq!(d(&[], false), Decision::Wait);
        assert_eq!(d(&[], true), Decision::Confirm);
        let far = |known, record_ms| GUARD.decide(t, record_ms, std::iter::empty(), known, true);
        assert_eq!(far(t - 3_600_000, none), Decision::Confirm);
        assert_eq!(
            far(t - 3_600_001, none),
            Decision::Reject,
            "alone at the end, far ahead, nothing vouching for it"
        );
        assert_eq!(
            far(t - 3_600_001, t - 1_000),
            Decision::Confirm,
            "alone at the end after a quiet hour, its own record timestamp vouching for it"
        );
        assert_eq!(
            GUARD.decide(t, t, [t - 65_001].into_iter(), t - 100_000, true),
            Decision::Reject,
            "a record timestamp does not outvote a record after it"
        );
        assert_eq!(
            far(none, none),
            Decision::Confirm,
            "nothing to compare with"
        );
        assert_eq!(d(&[t - 65_000], false), Decision::Confirm);
        assert_eq!(d(&[t - 65_001], false), Decision::Wait);
        assert_eq!(d(&[t - 65_001], true), Decision::Reject);
        assert_eq!(d(&[0, t + 5], false), Decision::Confirm);
        assert_eq!(d(&[0, 1], false), Decision::Reject);
    }
}
