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
//!    whether the jump is real. Each of them within `max_time_jump` below
//!    it or above *agrees* (the partition's time moved on), each further
//!    below *disagrees* (it did not); a straggler more than `max_time_jump`
//!    behind the partition's own clock (a late retry) says nothing. The
//!    jump is confirmed once the agreeing ones outnumber the others by
//!    [`JUMP_LEAD`], rejected as `implausible_event_time` once the others
//!    outnumber them by [`JUMP_REJECT`] (a wrong clock, also one that
//!    sends many records interleaved with right ones: its own later
//!    records agree, the right ones between them do not). An agreeing
//!    record a further `max_time_jump` ahead of it, while the agreeing
//!    ones lead, confirms it too: time has moved on past it (a sparse
//!    partition, a record a minute or more, never makes five records in a
//!    short while, and a wrong clock among right ones never stays ahead
//!    that long). A partition's first record (it has no clock yet) is
//!    confirmed by the first of its next records that agrees and rejected
//!    by two that do not. The rest of the job catching up with it (the
//!    watermark reaching its time minus `max_time_jump`) also confirms it;
//!    the watermark is capped there meanwhile, so a confirmed record is never
//!    late for having waited. At the end of a bounded input, a record still
//!    unconfirmed is decided by the records after it, a tie confirming;
//!    with none, it is confirmed unless,
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

/// By how many the records after an unconfirmed jump that agree with it
/// must outnumber those that do not for its partition to confirm it. A
/// wrong clock at a share `s` of a partition's records (`r = (1 - s) / s`)
/// is taken for real time with a chance of about `(r^2 - 1) / (r^7 - 1)`
/// per wrong record (a random walk reaching +5 before -2): 5e-6 at 8 %,
/// 2e-5 at 10 %, 9e-4 at 20 %. A real jump waits for five records of its
/// partition, or for the rest of the job to catch up with it.
pub const JUMP_LEAD: i32 = 5;

/// By how many the records after an unconfirmed jump that do not agree
/// with it must outnumber those that do for its partition to reject it:
/// two, so that one late copy right after a real jump does not reject it.
pub const JUMP_REJECT: i32 = 2;

/// After this many records that speak to an unconfirmed jump without
/// deciding it (its partition's records split about evenly), the jump is
/// decided by which side leads, a tie rejecting: the partition's clock
/// stays, and at most the wrong side's records are lost, not every record
/// of the right side made late.
const JUMP_LOOKAHEAD: i32 = 64;

/// What the guard decides for an unconfirmed record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Not enough is known yet: keep waiting.
    Wait,
    /// The jump is real; why, for the log.
    Confirm(Why),
    Reject,
}

/// Which rule confirmed a jump (the WARN line names it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// [`JUMP_LEAD`] more of the partition's records agree than disagree.
    Lead,
    /// An agreeing record a further `max_time_jump` ahead while the
    /// agreeing side leads: the partition's time moved on past it.
    MovedOn,
    /// The partition's first record, and the first record that agrees.
    FirstAgrees,
    /// [`JUMP_LOOKAHEAD`] records split about evenly, the agreeing side
    /// ahead.
    Lookahead,
    /// The end of a bounded input, the agreeing side ahead or tied.
    EndOfInput,
    /// The end of a bounded input, nothing after it that votes.
    Unopposed,
}

impl Why {
    /// The reason in words, for the WARN line.
    pub fn describe(self) -> &'static str {
        match self {
            Why::Lead => "the partition's next records agree with it (5 more than disagree)",
            Why::MovedOn => {
                "the partition's time moved on past it (a record a further max_time_jump ahead, \
                 with more records agreeing than not)"
            }
            Why::FirstAgrees => "the partition's first record, and the next record agrees with it",
            Why::Lookahead => {
                "the partition's next 64 records split about evenly, more of them agreeing with it"
            }
            Why::EndOfInput => {
                "the bounded input ends with as many or more of the partition's records after it \
                 agreeing with it as not"
            }
            Why::Unopposed => "the bounded input ends with no record after it that disagrees",
        }
    }
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
    /// valid records after it in its partition (`later`, in offset order),
    /// given `known` (the larger of the partition's clock and the job
    /// watermark) and `own` (the partition's clock; `i64::MIN`: it has
    /// none yet):
    ///
    /// * a jump of a partition under way: confirmed once the records after
    ///   it that agree (at most `max_time_jump` below it, or above)
    ///   outnumber those that do not by [`JUMP_LEAD`], or once one that
    ///   agrees is more than `max_time_jump` above it while they lead;
    ///   rejected once those that do not outnumber them by
    ///   [`JUMP_REJECT`]; after
    ///   [`JUMP_LOOKAHEAD`] undecided, the side that leads decides. A
    ///   straggler more than `max_time_jump` behind the partition's clock
    ///   (a late retry) says nothing either way;
    /// * a partition's first record: the first record after it that agrees
    ///   confirms it, two that do not reject it.
    ///
    /// At the end of the input, the records after it decide by which side
    /// leads, a tie confirming; with none after it, the record is confirmed
    /// if its own record timestamp vouches for it (rule 1 already held it
    /// to that), else unless it is further ahead of `known` than a record
    /// timestamp would allow.
    /// Whether a record at `v` held behind one waiting at `waiting` speaks
    /// against it: further than `max_time_jump` below it, and not a
    /// straggler more than `max_time_jump` behind the partition's clock
    /// `own` (`i64::MIN`: none, so no stragglers). Such a record votes
    /// against the jump and caps the watermark while it waits.
    #[inline]
    pub fn speaks_against(&self, waiting: i64, v: i64, own: i64) -> bool {
        v < waiting.saturating_sub(self.max_jump_ms) && !self.is_straggler(v, own)
    }

    #[inline]
    fn is_straggler(&self, v: i64, own: i64) -> bool {
        own != i64::MIN && v < own.saturating_sub(self.max_jump_ms)
    }

    pub fn decide(
        &self,
        t_ms: i64,
        record_ms: i64,
        later: impl Iterator<Item = i64>,
        (known, own): (i64, i64),
        end_of_input: bool,
    ) -> Decision {
        let agrees = |v: i64| v >= t_ms.saturating_sub(self.max_jump_ms);
        let straggler = |v: i64| self.is_straggler(v, own);
        let first = own == i64::MIN;
        // `lead`: records that agree minus those that do not; `seen`: both.
        let (mut lead, mut seen) = (0i32, 0i32);
        for v in later.filter(|v| !straggler(*v)) {
            lead += if agrees(v) { 1 } else { -1 };
            seen += 1;
            // A partition's first record: one that agrees decides. Time
            // moved on a further jump past it while the agreeing side leads
            // (a sparse partition): so does that.
            let moved_on = lead > 0 && v > t_ms.saturating_add(self.max_jump_ms);
            if first && lead > -seen {
                return Decision::Confirm(Why::FirstAgrees);
            }
            if moved_on {
                return Decision::Confirm(Why::MovedOn);
            }
            if lead >= JUMP_LEAD {
                return Decision::Confirm(Why::Lead);
            }
            if lead <= -JUMP_REJECT {
                return Decision::Reject;
            }
            if seen >= JUMP_LOOKAHEAD {
                return if lead > 0 {
                    Decision::Confirm(Why::Lookahead)
                } else {
                    Decision::Reject
                };
            }
        }
        if !end_of_input {
            Decision::Wait
        } else if seen > 0 {
            if lead >= 0 {
                Decision::Confirm(Why::EndOfInput)
            } else {
                Decision::Reject
            }
        } else if record_ms != i64::MIN
            || known == i64::MIN
            || t_ms <= known.saturating_add(self.max_ahead_of_record_ms)
        {
            Decision::Confirm(Why::Unopposed)
        } else {
            Decision::Reject
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

    /// The offset of the last record held.
    pub fn last_offset(&self) -> Option<u64> {
        self.queue.back().map(|r| r.offset)
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
        let d = |later: &[i64], end| {
            GUARD.decide(
                t,
                none,
                later.iter().copied(),
                (t - 100_000, t - 100_000),
                end,
            )
        };
        assert_eq!(d(&[], false), Decision::Wait);
        assert_eq!(d(&[], true), Decision::Confirm(Why::Unopposed));
        let far =
            |known, record_ms| GUARD.decide(t, record_ms, std::iter::empty(), (known, known), true);
        assert_eq!(far(t - 3_600_000, none), Decision::Confirm(Why::Unopposed));
        assert_eq!(
            far(t - 3_600_001, none),
            Decision::Reject,
            "alone at the end, far ahead, nothing vouching for it"
        );
        assert_eq!(
            far(t - 3_600_001, t - 1_000),
            Decision::Confirm(Why::Unopposed),
            "alone at the end after a quiet hour, its own record timestamp vouching for it"
        );
        assert_eq!(
            GUARD.decide(
                t,
                t,
                [t - 65_001].into_iter(),
                (t - 100_000, t - 100_000),
                true
            ),
            Decision::Reject,
            "a record timestamp does not outvote a record after it"
        );
        assert_eq!(
            far(none, none),
            Decision::Confirm(Why::Unopposed),
            "nothing to compare with"
        );
        // Records that agree (A, at most 65 s below t) against those that
        // do not (B, further below): five more A than B confirm, two more B
        // than A reject.
        let (a, b) = (t - 65_000, t - 65_001);
        assert_eq!(d(&[a], false), Decision::Wait);
        assert_eq!(d(&[a, t + 5, t, a], false), Decision::Wait);
        assert_eq!(d(&[a, t + 5, t, a, t], false), Decision::Confirm(Why::Lead));
        assert_eq!(
            d(&[a, t + 5, t, a, t, 0, 0], false),
            Decision::Confirm(Why::Lead)
        );
        assert_eq!(d(&[b], false), Decision::Wait);
        assert_eq!(d(&[b, b], false), Decision::Reject);
        assert_eq!(
            d(&[t, b, t, t, t, t, t], false),
            Decision::Confirm(Why::Lead),
            "a real jump with one late copy right after it"
        );
        assert_eq!(d(&[t, b, t, t, t, t], false), Decision::Wait);
        assert_eq!(
            d(&[t + 5, b, b, t, b, b], false),
            Decision::Reject,
            "the same wrong clock's records interleaved with right ones"
        );
        assert_eq!(d(&[t, b, b, b], false), Decision::Reject);
        // An agreeing record a further jump ahead, while the agreeing side
        // leads, confirms: time moved on (a sparse partition).
        let on = t + 65_001;
        assert_eq!(d(&[on], false), Decision::Confirm(Why::MovedOn));
        assert_eq!(d(&[t, t + 65_000], false), Decision::Wait);
        assert_eq!(d(&[t, b, t, on], false), Decision::Confirm(Why::MovedOn));
        assert_eq!(
            d(&[b, on], false),
            Decision::Wait,
            "not while those that disagree lead or tie"
        );
        assert_eq!(d(&[b, on, b, b], false), Decision::Reject);
        // Split evenly for JUMP_LOOKAHEAD records: the side that leads
        // decides, a tie rejects.
        let split: Vec<i64> = (0..64).map(|i| if i % 2 == 0 { t } else { b }).collect();
        assert_eq!(d(&split[..63], false), Decision::Wait);
        assert_eq!(d(&split, false), Decision::Reject);
        let mut leaning = split.clone();
        leaning[63] = t;
        assert_eq!(d(&leaning, false), Decision::Confirm(Why::Lookahead));
        // At the end of the input, the side that leads decides, a tie
        // confirming.
        assert_eq!(d(&[a], true), Decision::Confirm(Why::EndOfInput));
        assert_eq!(d(&[t, t + 1], true), Decision::Confirm(Why::EndOfInput));
        assert_eq!(d(&[t, b], true), Decision::Confirm(Why::EndOfInput));
        assert_eq!(d(&[b, t, b], true), Decision::Reject);
        assert_eq!(d(&[b], true), Decision::Reject);
        // A straggler far behind the partition's clock (t - 100 s) is
        // neither for nor against.
        let s = t - 165_001;
        assert_eq!(
            d(&[s, t, s, t, t, s, t, t], false),
            Decision::Confirm(Why::Lead)
        );
        assert_eq!(d(&[s, b, s, s, b], false), Decision::Reject);
        assert_eq!(d(&[s], true), Decision::Confirm(Why::Unopposed));

        // A partition's first record: the first of two that agrees decides.
        let first =
            |later: &[i64], end| GUARD.decide(t, none, later.iter().copied(), (none, none), end);
        assert_eq!(first(&[0], false), Decision::Wait);
        assert_eq!(
            first(&[0, t], false),
            Decision::Confirm(Why::FirstAgrees),
            "a producer behind the others at the start"
        );
        assert_eq!(first(&[t], false), Decision::Confirm(Why::FirstAgrees));
        assert_eq!(first(&[0, 1], false), Decision::Reject);
        assert_eq!(first(&[0], true), Decision::Reject);
    }
}
