//! Per-partition watermarks and the job watermark (SPEC §4).
//!
//! Each partition's watermark is the highest event time seen on it minus the
//! out-of-orderness bound. The job watermark is the minimum over the
//! partitions that may still deliver data at or below it:
//!
//! * a partition that has seen nothing yet holds the job watermark at -inf;
//! * a partition at the end of a bounded input (*ended*) still holds it at
//!   its clock, as it would if more of its data existed: a later run on the
//!   same state may bring that data, and must find it on time, exactly as one
//!   run over all the data would. It no longer paces watermark alignment
//!   ([`Watermarks::alignment_floor`]), so the other partitions read on;
//! * at the end of the whole bounded input every partition is *finished* and
//!   the watermark is +inf (what that emits is not state, see `job`);
//! * a partition that is caught up to the end of what its source has (live
//!   input) for longer than the idle timeout stops holding it back until it
//!   has data again. A partition with a backlog is never idle, however long it
//!   waits its turn, which is what makes replays and restarts after an outage
//!   compute the same windows as a live run.
//!
//! Finished and idle are runtime facts, never checkpointed: a later run on the
//! same state (more data appended after a bounded run, a restart) re-learns
//! them from its own source. Only the event-time clocks and the watermark
//! reached are state.
//!
//! # Partition discovery
//!
//! A source whose partitions can be added while it runs (Kafka) discovers them
//! periodically. The watermark may only rest on records that were in their
//! partitions when the last completed discovery started: a record produced
//! to a partition that discovery did not find was produced after all of
//! them, so an in-order producer's record there is never behind the
//! watermark. The job notes, per partition, the end offset when a discovery
//! starts; when it reads past it, [`Watermarks::cap`] freezes that
//! partition's part of the watermark at its highest event time so far, and
//! the next completed discovery lifts every cap ([`Watermarks::uncap_all`]).
//! A backlog that was there when a discovery started (a restart after an
//! outage) therefore moves the watermark record by record, exactly as a
//! bounded run over it does; only records produced since wait, for at most
//! one discovery interval.
//!
//! # The ceiling
//!
//! [`Watermarks::set_ceiling`] caps the job watermark as a whole: the job
//! keeps it below records that wait for confirmation (see `job::intake`).
//!
//! `i64::MIN` stands for -inf and `i64::MAX` for +inf.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionClock {
    /// Highest event time seen, or `i64::MIN` before any event.
    pub max_event_ms: i64,
    /// No more data will come in this run (bounded input at its end).
    /// Runtime-only: the next run on the same state may find more.
    #[serde(skip)]
    pub finished: bool,
    /// This partition's part of a bounded input is read; others may still
    /// be reading. Runtime-only.
    #[serde(skip)]
    pub ended: bool,
    /// Excluded from the minimum because caught up for the idle timeout.
    /// Runtime-only: a restarted job re-learns idleness.
    #[serde(skip)]
    pub idle: bool,
    /// Partition discovery: the highest event time of the records that were
    /// in the partition when the last completed discovery started, once the
    /// job has read past them; the partition's part of the watermark stays
    /// at or below it (see the module docs). Runtime-only.
    #[serde(skip)]
    pub cap: Option<i64>,
}

impl Default for PartitionClock {
    fn default() -> Self {
        PartitionClock {
            max_event_ms: i64::MIN,
            finished: false,
            ended: false,
            idle: false,
            cap: None,
        }
    }
}

#[derive(Clone)]
pub struct Watermarks {
    bound_ms: i64,
    clocks: Vec<PartitionClock>,
    current: i64,
    /// The watermark does not move past this (see the module docs).
    ceiling: i64,
    /// See [`Watermarks::alignment_floor`].
    alignment_floor: i64,
}

impl Watermarks {
    pub fn new(bound_ms: i64, partitions: usize) -> Self {
        Self::restore(
            bound_ms,
            vec![PartitionClock::default(); partitions],
            i64::MIN,
        )
    }

    /// Restores from checkpointed clocks and the watermark reached then. The
    /// watermark is restored as is, not recomputed: idleness is not
    /// checkpointed, and windows fired under it must never be un-fired.
    pub fn restore(bound_ms: i64, clocks: Vec<PartitionClock>, current: i64) -> Self {
        let mut w = Watermarks {
            bound_ms,
            clocks,
            current,
            ceiling: i64::MAX,
            alignment_floor: i64::MAX,
        };
        w.recompute();
        // Only the alignment floor: the watermark moves at the job's first
        // recompute, which fires the windows it passes (moving it here
        // fired none of them until it moved again).
        w.current = current;
        w
    }

    /// The job watermark.
    #[inline]
    pub fn current(&self) -> i64 {
        self.current
    }

    /// Notes an event time on `partition`. Returns true when the job
    /// watermark moved.
    #[inline]
    pub fn observe(&mut self, partition: usize, t_ms: i64) -> bool {
        let Some(clock) = self.clocks.get_mut(partition) else {
            return false;
        };
        let was_idle = clock.idle;
        clock.idle = false;
        if t_ms <= clock.max_event_ms && !was_idle {
            return false;
        }
        clock.max_event_ms = clock.max_event_ms.max(t_ms);
        self.recompute()
    }

    /// Marks a partition finished (end of bounded input). Returns true when
    /// the job watermark moved.
    pub fn set_finished(&mut self, partition: usize) -> bool {
        match self.clocks.get_mut(partition) {
            Some(c) if !c.finished => {
                c.finished = true;
                self.recompute()
            }
            _ => false,
        }
    }

    /// Marks a partition's part of a bounded input read (see the module
    /// docs). Returns true when the job watermark moved.
    pub fn set_ended(&mut self, partition: usize) -> bool {
        match self.clocks.get_mut(partition) {
            Some(c) if !c.ended => {
                c.ended = true;
                self.recompute()
            }
            _ => false,
        }
    }

    /// The highest event time of the slowest partition still delivering
    /// (neither idle nor ended), `i64::MIN` while one has seen nothing, and
    /// `i64::MAX` when none is delivering: what watermark alignment paces
    /// the partitions by.
    #[inline]
    pub fn alignment_floor(&self) -> i64 {
        self.alignment_floor
    }

    /// Marks a partition idle (caught up for the idle timeout) or active.
    /// Returns true when the job watermark moved.
    pub fn set_idle(&mut self, partition: usize, idle: bool) -> bool {
        match self.clocks.get_mut(partition) {
            Some(c) if c.idle != idle => {
                c.idle = idle;
                self.recompute()
            }
            _ => false,
        }
    }

    /// Adds partitions (discovered while running) until there are
    /// `partitions`. A new partition has seen nothing, so it holds the job
    /// watermark where it is until it has data or goes idle.
    pub fn grow(&mut self, partitions: usize) {
        if partitions > self.clocks.len() {
            self.clocks.resize(partitions, PartitionClock::default());
            self.recompute();
        }
    }

    /// Caps the job watermark (see the module docs). Returns true when the
    /// job watermark moved.
    pub fn set_ceiling(&mut self, ceiling: i64) -> bool {
        self.ceiling = ceiling;
        self.recompute()
    }

    pub fn clocks(&self) -> &[PartitionClock] {
        &self.clocks
    }

    /// Freezes `partition`'s part of the watermark at its highest event time
    /// so far, if not frozen yet (the job read past what was there when the
    /// last discovery started). Never moves the watermark.
    pub fn cap(&mut self, partition: usize) {
        if let Some(c) = self.clocks.get_mut(partition) {
            c.cap.get_or_insert(c.max_event_ms);
        }
    }

    /// Lifts every cap (a discovery completed). Returns true when the job
    /// watermark moved.
    pub fn uncap_all(&mut self) -> bool {
        let mut any = false;
        for c in &mut self.clocks {
            any |= c.cap.take().is_some();
        }
        any && self.recompute()
    }

    /// The highest event time the watermark may rest on.
    #[inline]
    fn usable_max(c: &PartitionClock) -> i64 {
        c.cap.map_or(c.max_event_ms, |cap| cap.min(c.max_event_ms))
    }

    fn partition_watermark(&self, c: &PartitionClock) -> Option<i64> {
        let max = Self::usable_max(c);
        if c.finished || c.idle {
            None
        } else if max == i64::MIN {
            Some(i64::MIN)
        } else {
            Some(max.saturating_sub(self.bound_ms))
        }
    }

    /// The watermark the clocks allow (within their caps), before the
    /// ceiling and before the rule that the watermark never goes back.
    pub fn frontier(&self) -> i64 {
        let mut min: Option<i64> = None;
        let mut any_idle = false;
        for c in &self.clocks {
            any_idle |= c.idle && !c.finished;
            if let Some(w) = self.partition_watermark(c) {
                min = Some(min.map_or(w, |m: i64| m.min(w)));
            }
        }
        match min {
            Some(w) => w,
            // Every partition finished: the input is over.
            None if !any_idle => i64::MAX,
            // Every partition idle: nothing to wait for, but the input may
            // resume, so advance only to what was seen.
            None => self
                .clocks
                .iter()
                .filter(|c| !c.finished)
                .map(Self::usable_max)
                .filter(|max| *max != i64::MIN)
                .map(|max| max.saturating_sub(self.bound_ms))
                .max()
                .unwrap_or(i64::MIN),
        }
    }

    fn recompute(&mut self) -> bool {
        self.alignment_floor = self
            .clocks
            .iter()
            .filter(|c| !c.idle && !c.ended && !c.finished)
            .map(|c| c.max_event_ms)
            .min()
            .unwrap_or(i64::MAX);
        let next = self.frontier().min(self.ceiling);
        // The watermark never goes back (a partition leaving idleness must
        // not un-fire windows).
        if next > self.current {
            self.current = next;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_watermark_is_the_minimum_over_partitions() {
        let mut w = Watermarks::new(5_000, 2);
        assert!(!w.observe(0, 100_000));
        assert_eq!(w.current(), i64::MIN, "partition 1 has seen nothing");
        assert!(w.observe(1, 50_000));
        assert_eq!(w.current(), 45_000);
        w.observe(1, 200_000);
        assert_eq!(w.current(), 95_000);
    }

    #[test]
    fn a_capped_partition_holds_it_until_the_caps_are_lifted() {
        let mut w = Watermarks::new(5_000, 2);
        w.observe(0, 100_000);
        w.observe(1, 100_000);
        assert_eq!(w.current(), 95_000);
        w.cap(0);
        w.cap(0); // A second cap keeps the first's time.
        assert!(!w.observe(0, 200_000) && !w.observe(1, 200_000));
        assert_eq!(
            w.current(),
            95_000,
            "partition 0 rests on 100 s until uncapped"
        );
        assert!(w.uncap_all());
        assert_eq!(w.current(), 195_000);
        assert!(!w.uncap_all(), "nothing left to lift");
        // Every partition idle: the highest usable clock, within its cap.
        w.cap(1);
        w.observe(1, 300_000);
        w.set_idle(0, true);
        w.set_idle(1, true);
        assert_eq!(w.current(), 195_000);
        assert!(w.uncap_all());
        assert_eq!(w.current(), 295_000);
    }

    #[test]
    fn out_of_order_events_do_not_move_it_back() {
        let mut w = Watermarks::new(5_000, 1);
        w.observe(0, 100_000);
        assert!(!w.observe(0, 97_000));
        assert_eq!(w.current(), 95_000);
    }

    #[test]
    fn finished_partitions_release_it_and_all_finished_is_infinity() {
        let mut w = Watermarks::new(5_000, 2);
        w.observe(0, 100_000);
        w.set_finished(1);
        assert_eq!(w.current(), 95_000);
        w.set_finished(0);
        assert_eq!(w.current(), i64::MAX);
    }

    #[test]
    fn an_idle_partition_stops_holding_it_back_until_it_has_data() {
        let mut w = Watermarks::new(5_000, 2);
        w.observe(0, 100_000);
        w.observe(1, 10_000);
        assert_eq!(w.current(), 5_000);
        w.set_idle(1, true);
        assert_eq!(w.current(), 95_000);
        // New data on partition 1 brings it back; the watermark stays.
        w.observe(1, 11_000);
        assert_eq!(w.current(), 95_000);
        w.observe(0, 300_000);
        assert_eq!(w.current(), 95_000, "partition 1 now holds it at 6 s");
        w.observe(1, 301_000);
        assert_eq!(w.current(), 295_000);
    }
}
