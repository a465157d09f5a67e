//! The path of one record to the engine: a batch's records parsed ahead,
//! held back while their partition runs ahead or their time waits for
//! confirmation (see `intake`), handled in offset order, anomalies to the
//! log.

use super::intake::{Decision, HeldRecord, Why};
use super::{Job, RecordCtx, HOLD_BEFORE_PAUSE};
use crate::engine::{Lookahead, Prepared, Verdict};
use crate::source::{RecordBatch, RecordMeta};
use crate::time::format_rfc3339_ms;

use anyhow::bail;
use std::collections::BTreeMap;

/// The smallest batch parsed on the pool: below it, handing the work over
/// costs more than it saves.
const PARALLEL_PARSE_MIN: usize = 1024;

/// Records per chunk of a pipelined batch: the first chunk's parse is the
/// only one the job thread waits for whole.
const PARSE_CHUNK: usize = 512;

impl Job<'_> {
    pub(super) fn process(&mut self, batch: &RecordBatch) -> anyhow::Result<()> {
        let now = self.clock.wall_ms();
        let ctx = RecordCtx {
            now_s: now / 1000,
            detected_at: format_rfc3339_ms(now),
        };
        // Every partition with a record in this batch has data: none of
        // them may stay idle while the records of another move the
        // watermark.
        self.wake(batch);
        let mut processed = self.release_held(&ctx, false)?;
        // Each record's state is prefetched a few records ahead of its turn,
        // so the state lookups of several records overlap (see
        // `Lookahead`); a record held back keeps its parse result. A big
        // batch is parsed on both cores first (parsing reads no state).
        if self.parallel_parse && batch.len() >= PARALLEL_PARSE_MIN {
            processed += self.process_pipelined(batch, &ctx)?;
        } else {
            let parser = self.engine.parser();
            let mut records = Lookahead::new(
                batch
                    .iter()
                    .map(|(meta, payload)| ((meta, payload), parser.parse(payload))),
            );
            while let Some(((meta, payload), prepared)) = records.next(&self.engine) {
                processed += self.route(meta, payload, prepared, &ctx)?;
            }
        }
        // A record held above may be confirmed by the records after it.
        processed += self.release_held(&ctx, false)?;
        if processed == 0 {
            return Ok(());
        }
        self.engine.flush_updates(ctx.now_s, &mut self.emitted);
        self.records_since_barrier += processed as u64;
        self.changed = true;
        self.metrics.observe_batch(&self.engine, processed);
        self.metrics
            .set_offsets(self.slots.iter().map(|s| s.next_offset));
        Ok(())
    }

    /// A big batch in chunks: the pool parses every chunk (in parallel,
    /// in order as far as it can) while this thread applies the chunks
    /// already parsed, in input order. Parsing reads no state, so the
    /// verdicts are those of parsing each record in turn. Returns the
    /// records handled.
    fn process_pipelined(&mut self, batch: &RecordBatch, ctx: &RecordCtx) -> anyhow::Result<usize> {
        let records: Vec<(RecordMeta, &[u8])> = batch.iter().collect();
        let chunks: Vec<&[(RecordMeta, &[u8])]> = records.chunks(PARSE_CHUNK).collect();
        let parser = self.engine.parser();
        let (tx, rx) = std::sync::mpsc::channel::<(usize, Vec<Prepared>)>();
        rayon::in_place_scope(|scope| {
            for (k, chunk) in chunks.iter().enumerate() {
                let tx = tx.clone();
                scope.spawn(move |_| {
                    let parsed = chunk
                        .iter()
                        .map(|(_, payload)| parser.parse(payload))
                        .collect();
                    // The receiver goes away only when applying failed.
                    let _ = tx.send((k, parsed));
                });
            }
            drop(tx);
            let mut ready: BTreeMap<usize, Vec<Prepared>> = BTreeMap::new();
            let mut processed = 0;
            for (k, chunk) in chunks.iter().enumerate() {
                let parsed = loop {
                    if let Some(parsed) = ready.remove(&k) {
                        break parsed;
                    }
                    let (i, parsed) = rx.recv().expect("every chunk's parse is sent");
                    ready.insert(i, parsed);
                };
                let mut items = Lookahead::new(chunk.iter().copied().zip(parsed));
                while let Some(((meta, payload), prepared)) = items.next(&self.engine) {
                    processed += self.route(meta, payload, prepared, ctx)?;
                }
            }
            Ok(processed)
        })
    }

    /// A record read: held back (returns 0), or handled (returns 1).
    #[inline]
    fn route(
        &mut self,
        meta: RecordMeta,
        payload: &[u8],
        prepared: Prepared,
        ctx: &RecordCtx,
    ) -> anyhow::Result<usize> {
        let p = meta.partition as usize;
        let prepared = self.guard.against_record_time(prepared, meta.timestamp_ms);
        if p >= self.slots.len() {
            bail!(
                "the source delivered a record of partition {p}, which the job does not know \
                 (a bug: please report it with the log)"
            );
        }
        if prepared.event_time_ms().is_some() {
            self.slots[p].caught_up_since = None;
        }
        if !self.slots[p].held.is_empty() || self.is_ahead(p) || self.is_unconfirmed(p, &prepared) {
            self.hold(p, &meta, payload, prepared);
            return Ok(0);
        }
        self.handle(p, meta.offset, payload, prepared, ctx)?;
        Ok(1)
    }

    /// One record through the engine; its anomaly, if any, to the log.
    pub(super) fn handle(
        &mut self,
        p: usize,
        offset: u64,
        payload: &[u8],
        prepared: Prepared,
        ctx: &RecordCtx,
    ) -> anyhow::Result<()> {
        if let Some(slot) = self.slots.get_mut(p) {
            if !slot.capped && slot.discovered_end.is_some_and(|end| offset >= end) {
                slot.capped = true;
                self.engine.cap_partition(p);
            }
        }
        if let Verdict::Anomaly(reason, event_time) =
            self.engine.apply(p, prepared, ctx.now_s, &mut self.emitted)
        {
            self.anomalies
                .append(
                    reason,
                    self.source.source_name(p as u32),
                    // Group mode: the job's one partition is the topic's
                    // owned one.
                    self.source.owned_partition().unwrap_or(p as u32),
                    offset,
                    payload,
                    event_time,
                    &ctx.detected_at,
                )
                .map_err(|e| {
                    anyhow::anyhow!(crate::anomaly_log::io_failure(
                        "append to",
                        self.anomalies.path(),
                        &e
                    ))
                })?;
            self.metrics.anomaly(reason);
        }
        if let Some(slot) = self.slots.get_mut(p) {
            slot.next_offset = offset + 1;
        }
        Ok(())
    }

    /// Event-time alignment: a partition whose clock runs more than
    /// `alignment_drift` ahead of the slowest partition still delivering
    /// waits (its records are held and the source pauses it) until the
    /// others catch up. Partitions then advance together, as in a live run,
    /// so whether an event is late does not depend on how the source happened
    /// to interleave its partitions.
    #[inline]
    pub(super) fn is_ahead(&self, p: usize) -> bool {
        let floor = self.engine.alignment_floor();
        if floor == i64::MAX {
            return false;
        }
        let Some(clock) = self.engine.clock(p) else {
            return false;
        };
        if clock.max_event_ms == i64::MIN || clock.finished {
            return false;
        }
        clock.max_event_ms > floor.saturating_add(self.cfg.window.alignment_drift.ms())
    }

    /// Whether a valid event must wait for confirmation (see `intake`).
    fn is_unconfirmed(&self, p: usize, prepared: &Prepared) -> bool {
        let Some(t) = prepared.event_time_ms() else {
            return false;
        };
        self.guard.is_unconfirmed(t, self.known_time(p))
    }

    /// Whether what partition `p` holds can only move once its source
    /// delivers more: its first held record waits for confirmation and the
    /// records after it are too few to decide it. Records that could go on
    /// now (held by alignment, or behind a record its followers decide) are
    /// a backlog instead (see `partitions`).
    pub(super) fn waits_for_input(&self, p: usize) -> bool {
        let held = &self.slots[p].held;
        let Some(head) = held.front() else {
            return false;
        };
        let Some(t) = head.prepared.event_time_ms() else {
            return false;
        };
        held.unconfirmed_at().is_some()
            && self.is_unconfirmed(p, &head.prepared)
            && self.guard.decide(
                t,
                head.record_ms,
                held.later_times(),
                (self.known_time(p), self.own_time(p)),
                self.decided_by_its_end(p),
            ) == Decision::Wait
    }

    /// Whether what partition `p` holds runs to the offset this bounded run
    /// stops at, with records behind its waiting one: nothing more comes
    /// in this run, so they decide it now rather than at the end of every
    /// partition (its old clock would meanwhile hold the watermark back
    /// while the others went on). A waiting record with nothing behind it
    /// is left to the end, which is not state.
    fn decided_by_its_end(&self, p: usize) -> bool {
        let held = &self.slots[p].held;
        let end = self.bounded_end.as_ref().and_then(|e| e.get(&(p as u32)));
        let last = held.last_offset();
        held.later_times().next().is_some()
            && matches!((end, last), (Some(end), Some(last)) if last + 1 >= *end)
    }

    /// What the job knows of event time at partition `p`: the larger of its
    /// clock and the job watermark (`i64::MIN`: nothing).
    fn known_time(&self, p: usize) -> i64 {
        self.own_time(p).max(self.engine.watermark())
    }

    /// Partition `p`'s clock: its highest event time (`i64::MIN`: none yet).
    fn own_time(&self, p: usize) -> i64 {
        self.engine.clock(p).map_or(i64::MIN, |c| c.max_event_ms)
    }

    fn hold(&mut self, p: usize, meta: &RecordMeta, payload: &[u8], prepared: Prepared) {
        let first = self.slots[p].held.is_empty();
        let unconfirmed = first && self.is_unconfirmed(p, &prepared);
        let time = prepared.event_time_ms();
        let slot = &mut self.slots[p];
        slot.held.push(HeldRecord {
            offset: meta.offset,
            record_ms: meta.timestamp_ms,
            payload: payload.to_vec(),
            prepared,
        });
        if unconfirmed {
            if let Some(t) = time {
                slot.held.mark_unconfirmed(t);
            }
            self.refresh_ceiling();
        } else if let (Some(waiting), Some(t)) = (slot.held.unconfirmed_at(), time) {
            // A record behind the unconfirmed one that does not agree with
            // it caps the watermark too.
            if self.guard.speaks_against(waiting, t, self.own_time(p)) {
                self.refresh_ceiling();
            }
        }
        // Pausing a Kafka partition drops what librdkafka prefetched and
        // costs a fetch round trip on resume: hold a good amount first,
        // pause only to bound memory.
        let slot = &mut self.slots[p];
        if slot.held.len() >= HOLD_BEFORE_PAUSE && !slot.paused {
            slot.paused = true;
            self.source.set_paused(p as u32, true);
        }
    }

    /// Processes the held records that may go on: those of partitions no
    /// longer ahead, and unconfirmed ones the guard can decide now (every
    /// one of them when `end_of_input`). Resumes paused partitions that are
    /// no longer ahead. Returns the records processed.
    pub(super) fn release_held(
        &mut self,
        ctx: &RecordCtx,
        end_of_input: bool,
    ) -> anyhow::Result<usize> {
        let mut processed = 0;
        // Releasing one partition moves the watermark, which may release
        // another: go round until nothing moves.
        loop {
            let before = processed;
            for p in 0..self.slots.len() {
                processed += self.release_partition(p, ctx, end_of_input)?;
            }
            if processed == before {
                break;
            }
        }
        for p in 0..self.slots.len() {
            if self.slots[p].paused && !self.is_ahead(p) {
                self.slots[p].paused = false;
                self.source.set_paused(p as u32, false);
            }
        }
        self.refresh_ceiling();
        Ok(processed)
    }

    fn release_partition(
        &mut self,
        p: usize,
        ctx: &RecordCtx,
        end_of_input: bool,
    ) -> anyhow::Result<usize> {
        let mut processed = 0;
        while let Some(head) = self.slots[p].held.front() {
            if !end_of_input && self.is_ahead(p) {
                break;
            }
            let mut rejected = false;
            if self.is_unconfirmed(p, &head.prepared) {
                let t = head.prepared.event_time_ms().unwrap_or(i64::MIN);
                let (known, own) = (self.known_time(p), self.own_time(p));
                let ended = end_of_input || self.decided_by_its_end(p);
                let held = &self.slots[p].held;
                match self
                    .guard
                    .decide(t, head.record_ms, held.later_times(), (known, own), ended)
                {
                    Decision::Wait => {
                        if held.unconfirmed_at().is_none() {
                            self.slots[p].held.mark_unconfirmed(t);
                            self.refresh_ceiling();
                        }
                        break;
                    }
                    Decision::Confirm(why) => {
                        // Confirmed by records of its own partition.
                        if own != i64::MIN && held.later_times().next().is_some() {
                            self.log_confirmed_jump(p, head.offset, (t, known), why);
                        }
                    }
                    Decision::Reject => rejected = true,
                }
            }
            let decided = self.slots[p].held.unconfirmed_at().is_some();
            let Some(record) = self.slots[p].held.pop() else {
                break;
            };
            let prepared = if rejected {
                Prepared::rejected(crate::event::Reason::ImplausibleEventTime)
            } else {
                record.prepared
            };
            self.handle(p, record.offset, &record.payload, prepared, ctx)?;
            processed += 1;
            if decided {
                // Its cap on the watermark goes now, not after the whole
                // pass: the records behind it must not be judged under it.
                self.refresh_ceiling();
            }
        }
        Ok(processed)
    }

    /// Says that partition `p`'s own records confirmed a jump of event time
    /// at `offset` (to `t_ms`, `known` before), and by which rule: the
    /// watermark follows it, so if it was a wrong clock after all, the
    /// partition's right records will be `late_event`.
    #[cold]
    fn log_confirmed_jump(&self, p: usize, offset: u64, (t_ms, known): (i64, i64), why: Why) {
        tracing::warn!(
            source = %self.source.source_name(p as u32),
            partition = self.source.owned_partition().unwrap_or(p as u32),
            offset,
            event_time = %format_rfc3339_ms(t_ms),
            ahead_s = (t_ms - known) / 1000,
            "event time jumped ahead: {}, so its watermark follows. If a producer's clock is \
             wrong, the right records after it will be late_event (docs/semantics.md, Wrong clocks)",
            why.describe()
        );
    }

    /// Caps the watermark below every record waiting for confirmation (so
    /// that a confirmed one is never late for having waited), at the first
    /// valid record held behind it that does not agree with it, minus the
    /// bound (what that record would allow had it been read: it is never
    /// late for having waited either, also when its partition goes idle).
    /// Records that agree need no cap of their own (the first one caps the
    /// watermark below all of them), and must not have one: the watermark
    /// reaching the waiting record's time minus `max_time_jump` is what
    /// confirms it when its partition has nothing more to say.
    pub(super) fn refresh_ceiling(&mut self) {
        let jump = self.guard.max_jump_ms;
        let bound = self.engine.spec().out_of_orderness_ms;
        let mut ceiling = i64::MAX;
        for (p, slot) in self.slots.iter().enumerate() {
            if let Some(t) = slot.held.unconfirmed_at() {
                let agreed = t.saturating_sub(jump);
                ceiling = ceiling.min(agreed);
                // A straggler (more than `max_time_jump` behind its
                // partition's clock: a late retry) caps nothing, as it votes
                // nothing: it is beyond the out-of-orderness bound whether it
                // waited or not, and a cap at its time would let other
                // partitions' late records through.
                let own = self.own_time(p);
                if let Some(behind) = slot
                    .held
                    .later_times()
                    .find(|v| self.guard.speaks_against(t, *v, own))
                {
                    ceiling = ceiling.min(behind.saturating_sub(bound));
                }
            }
        }
        let now_s = self.clock.wall_ms() / 1000;
        self.engine
            .set_watermark_ceiling(ceiling, now_s, &mut self.emitted);
    }
}
