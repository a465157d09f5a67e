//! The pure processing core: one payload in, one verdict out, windows fired
//! as the watermark moves. No I/O happens here, so the same code runs in the
//! job, in the benchmarks and in the replay and verify commands.
//!
//! Per record, in this order:
//! 1. parse and clean (`event`): a broken payload is an anomaly;
//! 2. the event time feeds its partition's watermark;
//! 3. an event that can no longer change any window is `late_event`;
//! 4. an id already accepted is a duplicate (dropped, counted);
//! 5. otherwise the event is accepted into its pane.
//!
//! Checking lateness before duplicates keeps the two consistent: a dedup id is
//! forgotten exactly when its event would be late, so a copy arriving after
//! that is always `late_event`, never silently accepted twice.

use serde::{Deserialize, Serialize};

use crate::dedup::{fingerprint, new_seed, Dedup, DedupSnapshot};
use crate::event::{parse_event, Reason};
use crate::watermark::{PartitionClock, Watermarks};
use crate::window::{WindowRow, WindowSpec, Windows, WindowsSnapshot};

/// What happened to one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accepted,
    Duplicate,
    /// The event time is known for `late_event` (useful for replays).
    Anomaly(Reason, Option<i64>),
}

/// Counters since the job started (not checkpointed: they describe this
/// process, the sink and the anomaly log describe the data).
#[derive(Debug, Default, Clone, Copy)]
pub struct Counters {
    pub read: u64,
    pub accepted: u64,
    pub duplicates: u64,
    pub anomalies: u64,
    pub late: u64,
    pub windows_emitted: u64,
    pub windows_re_emitted: u64,
}

/// Checkpointed engine state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineSnapshot {
    pub spec: WindowSpec,
    pub windows: WindowsSnapshot,
    pub dedup: DedupSnapshot,
    pub clocks: Vec<PartitionClock>,
    /// The job watermark when the snapshot was taken.
    pub watermark: i64,
    /// Seed of the id and user fingerprints in this state.
    pub seed: u64,
}

pub struct Engine {
    spec: WindowSpec,
    windows: Windows,
    dedup: Dedup,
    watermarks: Watermarks,
    seed: u64,
    /// Cached `windows.next_fire_at()`, so the hot path compares two integers.
    next_fire_at: i64,
    pub counters: Counters,
}

impl Engine {
    pub fn new(spec: WindowSpec, partitions: usize) -> Self {
        Self::with_seed(spec, partitions, new_seed())
    }

    /// A fresh engine with a given fingerprint seed (reproducible snapshots
    /// for tests and benchmarks).
    pub fn with_seed(spec: WindowSpec, partitions: usize, seed: u64) -> Self {
        Self::assemble(
            spec,
            Windows::new(spec),
            Dedup::default(),
            Watermarks::new(spec.out_of_orderness_ms, partitions),
            seed,
        )
    }

    fn assemble(
        spec: WindowSpec,
        windows: Windows,
        dedup: Dedup,
        watermarks: Watermarks,
        seed: u64,
    ) -> Self {
        let mut engine = Engine {
            spec,
            windows,
            dedup,
            watermarks,
            seed,
            next_fire_at: i64::MAX,
            counters: Counters::default(),
        };
        engine.refresh_next_fire();
        engine
    }

    /// Restores from a checkpoint. Fails when the window geometry changed
    /// since the checkpoint, because pane state cannot be re-sliced.
    pub fn restore(
        spec: WindowSpec,
        partitions: usize,
        snap: EngineSnapshot,
    ) -> Result<Self, String> {
        if snap.spec != spec {
            return Err(format!(
                "the checkpoint was taken with window settings {:?}, the config now says {:?}; \
                 restore the old settings, or start from a fresh state directory and replay",
                snap.spec, spec
            ));
        }
        let mut clocks = snap.clocks;
        if clocks.len() > partitions {
            return Err(format!(
                "the checkpoint knows {} partitions, the source now has {}; partitions cannot be removed",
                clocks.len(),
                partitions
            ));
        }
        clocks.resize(partitions, PartitionClock::default());
        Ok(Self::assemble(
            spec,
            Windows::restore(spec, snap.windows),
            Dedup::restore(snap.dedup),
            Watermarks::restore(spec.out_of_orderness_ms, clocks, snap.watermark),
            snap.seed,
        ))
    }

    pub fn snapshot(&self) -> EngineSnapshot {
        EngineSnapshot {
            spec: self.spec,
            windows: self.windows.snapshot(),
            dedup: self.dedup.snapshot(),
            clocks: self.watermarks.clocks().to_vec(),
            watermark: self.watermarks.current(),
            seed: self.seed,
        }
    }

    pub fn watermark(&self) -> i64 {
        self.watermarks.current()
    }

    /// The clock of one partition.
    pub fn clock(&self, partition: usize) -> Option<&PartitionClock> {
        self.watermarks.clocks().get(partition)
    }

    pub fn spec(&self) -> &WindowSpec {
        &self.spec
    }

    /// Live state sizes: (panes, user entries, dedup ids).
    pub fn state_stats(&self) -> (usize, usize, usize) {
        let (panes, users) = self.windows.stats();
        (panes, users, self.dedup.len())
    }

    /// Processes one payload from `partition`. Windows that the watermark
    /// completes on the way are appended to `out`.
    #[inline]
    pub fn process(
        &mut self,
        partition: usize,
        payload: &[u8],
        now_s: i64,
        out: &mut Vec<WindowRow>,
    ) -> Verdict {
        self.counters.read += 1;
        let event = match parse_event(payload) {
            Ok(e) => e,
            Err(reason) => {
                self.counters.anomalies += 1;
                return Verdict::Anomaly(reason, None);
            }
        };
        let t = event.event_time_ms;
        if self.watermarks.observe(partition, t) {
            self.on_watermark(now_s, out);
        }
        let wm = self.watermarks.current();
        if self.spec.is_late(t, wm) {
            self.counters.anomalies += 1;
            self.counters.late += 1;
            return Verdict::Anomaly(Reason::LateEvent, Some(t));
        }
        let pane = self.spec.pane_of(t);
        if !self
            .dedup
            .insert(fingerprint(self.seed, &event.event_id), pane)
        {
            self.counters.duplicates += 1;
            return Verdict::Duplicate;
        }
        self.windows.add(
            t,
            fingerprint(self.seed, &event.user_id),
            event.amount_cents,
            wm,
        );
        if self.next_fire_at == i64::MAX {
            self.refresh_next_fire();
        }
        self.counters.accepted += 1;
        Verdict::Accepted
    }

    /// Marks a partition finished (bounded input at its end).
    pub fn finish_partition(&mut self, partition: usize, now_s: i64, out: &mut Vec<WindowRow>) {
        if self.watermarks.set_finished(partition) {
            self.on_watermark(now_s, out);
        }
    }

    /// Marks a partition idle or active again.
    pub fn set_idle(&mut self, partition: usize, idle: bool, now_s: i64, out: &mut Vec<WindowRow>) {
        if self.watermarks.set_idle(partition, idle) {
            self.on_watermark(now_s, out);
        }
    }

    /// Emits windows updated by events within the allowed lateness. Called
    /// once per batch, so a burst of late events costs one emission.
    pub fn flush_updates(&mut self, now_s: i64, out: &mut Vec<WindowRow>) {
        let before = out.len();
        self.windows.emit_dirty(now_s, out);
        self.counters.windows_re_emitted += (out.len() - before) as u64;
    }

    fn on_watermark(&mut self, now_s: i64, out: &mut Vec<WindowRow>) {
        let wm = self.watermarks.current();
        if wm >= self.next_fire_at || wm == i64::MAX {
            let before = out.len();
            self.windows.advance(wm, now_s, out);
            for row in &out[before..] {
                if row.version > 1 {
                    self.counters.windows_re_emitted += 1;
                } else {
                    self.counters.windows_emitted += 1;
                }
            }
            self.dedup.purge_before(self.windows.first_live_pane(wm));
            self.refresh_next_fire();
        }
    }

    fn refresh_next_fire(&mut self) {
        self.next_fire_at = self.windows.next_fire_at().unwrap_or(i64::MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: WindowSpec = WindowSpec::DEFAULT;

    fn ev(id: &str, user: &str, amount: &str, t: i64) -> Vec<u8> {
        format!(r#"{{"event_id":"{id}","order_id":"o","user_id":"{user}","amount":{amount},"event_time":{t}}}"#)
            .into_bytes()
    }

    #[test]
    fn verdicts_follow_the_documented_order() {
        let mut e = Engine::new(SPEC, 1);
        let mut out = Vec::new();
        assert_eq!(
            e.process(0, &ev("a", "u1", "1.00", 10_000), 0, &mut out),
            Verdict::Accepted
        );
        assert_eq!(
            e.process(0, &ev("a", "u1", "1.00", 10_000), 0, &mut out),
            Verdict::Duplicate
        );
        assert!(matches!(
            e.process(0, b"{", 0, &mut out),
            Verdict::Anomaly(Reason::MalformedJson, None)
        ));
        // Move the watermark far ahead: the old event is now late, and so is
        // its copy (its dedup id was forgotten with its windows).
        assert_eq!(
            e.process(0, &ev("b", "u2", "1.00", 1_000_000), 0, &mut out),
            Verdict::Accepted
        );
        assert_eq!(
            e.process(0, &ev("a", "u1", "1.00", 10_000), 0, &mut out),
            Verdict::Anomaly(Reason::LateEvent, Some(10_000))
        );
        assert_eq!(out.len(), 2, "the two windows of event a fired");
        assert!(out.iter().all(|r| r.order_cnt == 1 && r.gmv_cents == 100));
    }

    #[test]
    fn snapshot_and_restore_continue_identically() {
        let events: Vec<Vec<u8>> = (0..400)
            .map(|i| {
                ev(
                    &format!("e{}", i % 350),
                    &format!("u{}", i % 13),
                    "2.50",
                    i * 997,
                )
            })
            .collect();
        let mut straight = Engine::new(SPEC, 1);
        let mut out_a = Vec::new();
        for p in &events {
            straight.process(0, p, 0, &mut out_a);
        }
        straight.finish_partition(0, 0, &mut out_a);

        let mut first = Engine::new(SPEC, 1);
        let mut out_b = Vec::new();
        for p in &events[..200] {
            first.process(0, p, 0, &mut out_b);
        }
        let mut second = Engine::restore(SPEC, 1, first.snapshot()).unwrap();
        for p in &events[200..] {
            second.process(0, p, 0, &mut out_b);
        }
        second.finish_partition(0, 0, &mut out_b);
        assert_eq!(out_a, out_b);
    }

    #[test]
    fn restore_refuses_changed_window_settings() {
        let e = Engine::new(SPEC, 1);
        let other = WindowSpec {
            size_ms: 120_000,
            ..SPEC
        };
        assert!(Engine::restore(other, 1, e.snapshot()).is_err());
    }
}
