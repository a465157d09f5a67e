//! Where each partition stands, as the watermark needs it (SPEC §4).
//!
//! Idleness is decided from what the source says about each partition now,
//! never from a flag left over from an earlier batch:
//!
//! * a partition with a record in the batch being processed has data: before
//!   any record of the batch is processed, it stops being idle, so partitions
//!   waking up together (or one drained within one poll) never see each
//!   other's records move the watermark past them;
//! * a partition's idle timer restarts at each record that carries an event
//!   time, and only then: records that cannot move its clock (malformed
//!   ones, and the offsets transaction markers and aborted records take) do
//!   not keep it from going idle;
//! * a partition the source calls caught up is idle once it has been for the
//!   idle timeout with no record since;
//! * a partition with a backlog is never idle;
//! * a partition at the end of a bounded input still holds the watermark at
//!   its clock (a later run may bring more of its data, see `watermark`) but
//!   no longer paces alignment; one that never had data is simply idle.
//!
//! A partition whose held records wait for its own next records (the first
//! one unconfirmed, and too few records after it to decide, see `intake`)
//! is caught up for this purpose: waiting for the others cannot decide what
//! it holds. Held records that could go on (an unconfirmed record its
//! followers decide, records held by alignment) are a backlog, also behind
//! an unconfirmed record: their partition never goes idle and keeps pacing
//! alignment, so the watermark cannot pass them while they wait their turn.
//!
//! Live Kafka runs also look for partitions added to the topic (see
//! `watermark` for why the watermark is capped at each discovery).

use std::time::Duration;

use tracing::{debug, info};

use super::{Job, Slot};
use crate::source::{PartitionState, RecordBatch};

/// A partition with new records still counts as caught up for readiness
/// when it was caught up this recently: under steady production a live
/// partition has new records most of the time, between moments with none;
/// one working through a backlog has none.
const READY_SLACK: Duration = Duration::from_secs(5);

impl Job<'_> {
    /// Marks every partition with data as having it, before any record of
    /// `batch` moves the watermark: those with a record in the batch, and
    /// idle ones the source says have a backlog now (after a pause of the
    /// process, several partitions have records waiting and one poll may
    /// return only some of them).
    pub(super) fn wake(&mut self, batch: &RecordBatch) {
        let mut last = u32::MAX;
        let now_s = self.clock.wall_ms() / 1000;
        for (meta, _) in batch.iter() {
            if meta.partition == last {
                continue;
            }
            last = meta.partition;
            let p = meta.partition as usize;
            if p < self.slots.len() {
                self.engine.set_idle(p, false, now_s, &mut self.emitted);
            }
        }
        for p in 0..self.slots.len() {
            let idle = self.engine.clock(p).is_some_and(|c| c.idle);
            if idle && self.source.state(p as u32) == PartitionState::Backlog {
                self.engine.set_idle(p, false, now_s, &mut self.emitted);
            }
        }
    }

    /// After a batch: caught-up partitions go idle after the timeout,
    /// finished ones (bounded) stop holding the watermark, and the
    /// readiness flag follows: recovered, every partition caught up within
    /// [`READY_SLACK`], and the sink taking writes.
    pub(super) fn update_partitions(&mut self) {
        let now = self.clock.now();
        let now_s = self.clock.wall_ms() / 1000;
        let idle_after = self.cfg.window.idle_timeout.0;
        let mut caught_up = true;
        for p in 0..self.slots.len() {
            let holds_backlog = !self.slots[p].held.is_empty() && !self.waits_for_input(p);
            let state = match self.source.state(p as u32) {
                // Records the source is done with but the job still holds
                // (alignment) are a backlog.
                PartitionState::Finished | PartitionState::CaughtUp if holds_backlog => {
                    PartitionState::Backlog
                }
                state => state,
            };
            if state != PartitionState::Backlog {
                self.slots[p].last_caught_up = Some(now);
            }
            match state {
                PartitionState::Finished => {
                    let seen_nothing = self
                        .engine
                        .clock(p)
                        .is_none_or(|c| c.max_event_ms == i64::MIN);
                    if seen_nothing {
                        self.engine.set_idle(p, true, now_s, &mut self.emitted);
                    } else {
                        self.engine.end_partition(p, now_s, &mut self.emitted);
                    }
                }
                PartitionState::CaughtUp => {
                    let since = *self.slots[p].caught_up_since.get_or_insert(now);
                    if now.saturating_sub(since) >= idle_after {
                        self.engine.set_idle(p, true, now_s, &mut self.emitted);
                    }
                }
                PartitionState::Backlog => {
                    caught_up &= self.slots[p]
                        .last_caught_up
                        .is_some_and(|at| now.saturating_sub(at) <= READY_SLACK);
                    self.engine.set_idle(p, false, now_s, &mut self.emitted);
                }
            }
        }
        // Ready: recovered, caught up with the input, and the sink takes writes.
        let sink_ok = self.sink_waiting_since.is_none() && self.sink_failed.is_none();
        let ready = caught_up && sink_ok;
        let why = if !sink_ok {
            crate::telemetry::NotReady::SinkWaiting
        } else {
            crate::telemetry::NotReady::Backlog
        };
        self.metrics
            .not_ready
            .store(why as u8, std::sync::atomic::Ordering::Relaxed);
        self.metrics
            .ready
            .store(ready, std::sync::atomic::Ordering::Relaxed);
        self.publish_held();
        // Idleness may have moved the watermark without a record.
        self.metrics.observe(&self.engine);
    }

    /// A bounded run has read everything: every partition is at its end and
    /// holds nothing but records waiting for a confirmation that no further
    /// input can bring.
    pub(super) fn input_done(&self) -> bool {
        (0..self.slots.len()).all(|p| {
            self.source.state(p as u32) == PartitionState::Finished
                && (self.slots[p].held.is_empty() || self.waits_for_input(p))
        })
    }

    /// At the discovery interval: asks the source for new partitions; each
    /// one found is read from its earliest offset and holds the watermark
    /// until it has data or goes idle.
    pub(super) fn discover_partitions(&mut self) {
        let now = self.clock.now();
        let Some(discovery) = self.discovery.as_mut() else {
            return;
        };
        if discovery
            .last
            .is_some_and(|last| now.saturating_sub(last) < discovery.interval)
        {
            return;
        }
        discovery.last = Some(now);
        // Before the metadata request: every record below these offsets was
        // in its partition before any partition this discovery misses was
        // created. Records read are below the known end; without one, what
        // is processed is all that is known.
        let ends: Vec<u64> = (0..self.slots.len())
            .map(|p| {
                let processed = self.slots[p].next_offset;
                self.source
                    .known_end(p as u32)
                    .map_or(processed, |e| e.max(processed))
            })
            .collect();
        match self.source.discover() {
            Ok(count) => {
                for (slot, end) in self.slots.iter_mut().zip(ends) {
                    slot.discovered_end = Some(end);
                    slot.capped = false;
                }
                if count > self.slots.len() {
                    for p in self.slots.len()..count {
                        let start = self.source.log_start(p as u32);
                        let slot = Slot {
                            next_offset: start,
                            // Found now: its records count from the next
                            // discovery on.
                            discovered_end: Some(start),
                            ..Slot::default()
                        };
                        info!(
                            partition = p,
                            from_offset = slot.next_offset,
                            "new partition taking part in the watermark"
                        );
                        self.slots.push(slot);
                    }
                    self.engine.grow(count);
                    self.changed = true;
                }
                let now_s = self.clock.wall_ms() / 1000;
                self.engine.uncap_partitions(now_s, &mut self.emitted);
                self.refresh_ceiling();
            }
            Err(e) => {
                // Partitions read past their discovered end stay capped
                // until a discovery succeeds: nothing is known meanwhile.
                debug!(error = %e, "partition discovery failed; retrying at the next interval");
            }
        }
    }

    /// Publishes how many records are held, and why.
    fn publish_held(&self) {
        let (mut alignment, mut unconfirmed) = (0usize, 0usize);
        for slot in &self.slots {
            if slot.held.unconfirmed_at().is_some() {
                unconfirmed += slot.held.len();
            } else {
                alignment += slot.held.len();
            }
        }
        self.metrics.set_held(alignment, unconfirmed);
    }
}
