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
//!
//! # Modes
//!
//! * The job's (the default): watermarks move with the events, windows fire
//!   as they pass, state stays bounded.
//! * Replay ([`Engine::replaying`]): the watermark holds at -inf until
//!   [`Engine::end_of_input`], so nothing is late, no window fires early and
//!   no id is forgotten: every valid, deduplicated event of a bounded range
//!   counts, whenever it arrived. That is what `streamforge replay`
//!   recomputes; the same parsing, cleaning, storable range, dedup rule and
//!   window arithmetic as the job, by construction.
//!
//! # Checkpoints
//!
//! [`Engine::snapshot`] copies the whole state (a checkpoint's base).
//! The job does not stop for that at every barrier: its engine tracks what
//! changes ([`Engine::track_changes`]), and [`Engine::take_delta`] hands
//! over the small state in full and, of the big tables, only the users and
//! ids added since the previous call, in time proportional to the number of
//! panes. [`Engine::restore_chain`] rebuilds the state from a base and the
//! deltas after it; [`Engine::apply_delta`] is the one step both recovery
//! and the checkpoint committer's replica use.

mod chain;
mod lookahead;

use chain::restore_tables;
#[cfg(test)]
use chain::PARALLEL_RESTORE_IDS;
pub use lookahead::{Lookahead, LOOKAHEAD};

use serde::{Deserialize, Serialize};

use crate::dedup::{fingerprint, new_seed, Dedup, DedupDelta, DedupSnapshot, Fp};
use crate::dims::{EventDims, GroupingSpec, Groups, GroupsState};
use crate::event::{parse_event, Reason};
use crate::watermark::{PartitionClock, Watermarks};
use crate::window::{WindowRow, WindowSpec, Windows, WindowsDelta, WindowsSnapshot};

/// What happened to one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accepted,
    Duplicate,
    /// The event time is known for `late_event` (useful for replays).
    Anomaly(Reason, Option<i64>),
}

/// The payload-only part of an engine ([`Engine::parser`]): parses,
/// cleans and fingerprints a payload without touching the state, on any
/// thread.
#[derive(Debug, Clone, Copy)]
pub struct Parser {
    spec: WindowSpec,
    storable: (i64, i64),
    seed: u64,
    /// Whether the event's dimension values are kept (groupings on).
    dims: bool,
}

impl Parser {
    /// See [`Engine::parse`].
    #[inline]
    pub fn parse(&self, payload: &[u8]) -> Prepared {
        let event = match parse_event(payload) {
            Ok(e) => e,
            Err(reason) => return Prepared(Err(reason)),
        };
        if event.event_time_ms < self.storable.0 || event.event_time_ms > self.storable.1 {
            return Prepared(Err(Reason::EventTimeOutOfRange));
        }
        let dims = self.dims.then(|| {
            Box::new(EventDims {
                city: event.city.as_ref().into(),
                category: event.category.as_ref().into(),
            })
        });
        Prepared(Ok(Parsed {
            dims,
            event_time_ms: event.event_time_ms,
            pane: self.spec.pane_of(event.event_time_ms),
            amount_cents: event.amount_cents,
            id: fingerprint(self.seed, &event.event_id),
            user: fingerprint(self.seed, &event.user_id),
        }))
    }
}

/// A payload parsed and fingerprinted by [`Engine::prepare`], waiting for
/// [`Engine::apply`]. Small: it holds no borrow of the payload (with
/// groupings configured, a copy of the event's dimension values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared(Result<Parsed, Reason>);

impl Prepared {
    /// A record already judged an anomaly before the engine (for example by
    /// the job's wrong-clock guard): `apply` counts and returns it as such.
    pub fn rejected(reason: Reason) -> Self {
        Prepared(Err(reason))
    }

    /// The event time of a valid event; `None` for an anomaly.
    #[inline]
    pub fn event_time_ms(&self) -> Option<i64> {
        self.0.as_ref().ok().map(|e| e.event_time_ms)
    }
}

/// What the stateful steps need of an event.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Parsed {
    /// The dimension values, only when the engine has groupings.
    dims: Option<Box<EventDims>>,
    event_time_ms: i64,
    /// `spec.pane_of(event_time_ms)`, worked out once.
    pane: i64,
    amount_cents: u64,
    id: Fp,
    user: Fp,
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
    /// Windows not emitted because retention deleted part of their input
    /// before this state began (see [`Engine::mark_truncated`]).
    pub windows_incomplete: u64,
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
    /// Windows starting before this (ms) may miss records retention deleted
    /// before the state began: they are never emitted. `i64::MIN`: none.
    pub incomplete_before_ms: i64,
    /// Partitions whose first remaining record decides
    /// `incomplete_before_ms`, not read yet.
    pub awaiting_first: Vec<u32>,
    /// Seed of the id and user fingerprints in this state.
    pub seed: u64,
    /// The grouped state (empty without groupings).
    pub groups: GroupsState,
}

/// `Clone` copies the tables as they are (a memory copy, no rehashing).
#[derive(Clone)]
pub struct Engine {
    spec: WindowSpec,
    /// `spec.storable_event_times()`: valid event times outside are
    /// `event_time_out_of_range`.
    storable: (i64, i64),
    /// How long after its start a pane's last window is final:
    /// `window_final_at(k) == k * slide + pane_final_after_ms`. Kept so that
    /// the lateness test of every event is a multiply and a compare.
    pane_final_after_ms: i64,
    windows: Windows,
    /// Per window and dimension values (see [`crate::dims`]).
    groups: Groups,
    dedup: Dedup,
    watermarks: Watermarks,
    seed: u64,
    /// See [`EngineSnapshot::incomplete_before_ms`].
    incomplete_before_ms: i64,
    /// Per partition: its first record is still to come and decides
    /// `incomplete_before_ms`. `any_awaiting` keeps the hot path to one test.
    awaiting_first: Vec<bool>,
    any_awaiting: bool,
    /// Replay mode: event times never move the watermark (see the module
    /// docs).
    hold_watermark: bool,
    pub counters: Counters,
}

/// What changed in an engine between two checkpoints (see the module docs):
/// the fields of [`EngineSnapshot`], with the windows and dedup ids as
/// changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineDelta {
    pub spec: WindowSpec,
    pub windows: WindowsDelta,
    pub dedup: DedupDelta,
    pub clocks: Vec<PartitionClock>,
    pub watermark: i64,
    pub incomplete_before_ms: i64,
    pub awaiting_first: Vec<u32>,
    pub seed: u64,
    /// The grouped state's changes (see [`crate::dims`]).
    pub groups: GroupsState,
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
            Dedup::new(spec.panes_per_window()),
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
        Engine {
            spec,
            storable: spec.storable_event_times(),
            pane_final_after_ms: spec.window_final_at(0),
            windows,
            groups: Groups::default(),
            dedup,
            watermarks,
            seed,
            incomplete_before_ms: i64::MIN,
            awaiting_first: Vec::new(),
            any_awaiting: false,
            hold_watermark: false,
            counters: Counters::default(),
        }
    }

    /// Computes the grouped results of `spec` too (see [`crate::dims`]).
    /// Only for an engine that has taken no event yet, before
    /// [`Engine::track_changes`].
    pub fn set_groupings(&mut self, spec: GroupingSpec) {
        self.groups = Groups::new(spec);
    }

    /// Window rows carry their distinct users from now on (group mode; see
    /// [`crate::window::Windows::carry_user_sets`]).
    pub fn carry_user_sets(&mut self) {
        self.windows.carry_user_sets();
    }

    /// The fingerprint seed of this state: user and event ids are keyed
    /// with it (see [`crate::dedup`]).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The groupings this state computes (empty: none).
    pub fn groupings(&self) -> &GroupingSpec {
        self.groups.spec()
    }

    /// Per grouping: windows emitted with values folded into `other`, and
    /// the events counted there (this process's counters).
    pub fn folding(&self) -> (&[u64], &[u64]) {
        (&self.groups.folded_windows, &self.groups.folded_events)
    }

    /// An engine in replay mode (see the module docs), for a bounded range
    /// read with its own state: one clock, a watermark that moves only at
    /// [`Engine::end_of_input`].
    pub fn replaying(spec: WindowSpec) -> Self {
        let mut engine = Self::new(spec, 1);
        engine.hold_watermark = true;
        engine
    }

    /// Restores from a checkpoint. Fails when the window geometry changed
    /// since the checkpoint, because pane state cannot be re-sliced.
    pub fn restore(
        spec: WindowSpec,
        partitions: usize,
        snap: EngineSnapshot,
    ) -> Result<Self, String> {
        Self::restore_chain(spec, partitions, &snap, &[])
    }

    /// Restores from a checkpoint stored as a base and the deltas after it,
    /// oldest first (see the module docs).
    pub fn restore_chain(
        spec: WindowSpec,
        partitions: usize,
        base: &EngineSnapshot,
        deltas: &[EngineDelta],
    ) -> Result<Self, String> {
        if base.spec != spec {
            return Err(format!(
                "the checkpoint was taken with window settings `{}`, the config now says `{}`; \
                 restore the old settings, or start from a fresh state directory and replay",
                base.spec, spec
            ));
        }
        if base
            .awaiting_first
            .iter()
            .any(|p| *p as usize >= base.clocks.len())
        {
            return Err("the checkpoint awaits a partition it has no clock for".into());
        }
        let known = deltas.last().map_or(&base.clocks, |d| &d.clocks).len();
        if known > partitions {
            return Err(format!(
                "the checkpoint knows {known} partitions, the source now has {partitions}; partitions cannot be removed",
            ));
        }
        base.groups.check()?;
        for delta in deltas {
            delta.check_for(spec, base.seed, &base.groups.spec)?;
        }
        let mut clocks = base.clocks.clone();
        clocks.resize(partitions.max(clocks.len()), PartitionClock::default());
        let (windows, dedup) = restore_tables(spec, base, deltas);
        let mut engine = Self::assemble(
            spec,
            windows,
            dedup,
            Watermarks::restore(spec.out_of_orderness_ms, clocks, base.watermark),
            base.seed,
        );
        engine.set_awaiting(base.incomplete_before_ms, &base.awaiting_first);
        engine.groups = Groups::restore(&base.groups);
        for delta in deltas {
            engine.groups.apply_delta(&delta.groups);
        }
        // The small state is whole in every delta: the last one's is it.
        if let Some(last) = deltas.last() {
            engine.set_small_state(last);
        }
        Ok(engine)
    }

    /// An empty engine for the settings and seed `delta` was taken with: what
    /// a delta of a fresh state applies to.
    pub fn empty_for(delta: &EngineDelta) -> Self {
        let mut engine = Self::with_seed(delta.spec, delta.clocks.len(), delta.seed);
        engine.set_groupings(delta.groups.spec.clone());
        engine
    }

    /// Starts tracking what changes, for [`Engine::take_delta`]: the next
    /// delta holds the changes from now on.
    pub fn track_changes(&mut self) {
        self.windows.track_changes();
        self.groups.track_changes();
        self.dedup.track_changes();
    }

    /// The changes since the last call, or since [`Engine::track_changes`]
    /// (see the module docs). Cheap: no table is copied.
    pub fn take_delta(&mut self) -> EngineDelta {
        EngineDelta {
            spec: self.spec,
            windows: self.windows.take_delta(),
            dedup: self.dedup.take_delta(),
            clocks: self.watermarks.clocks().to_vec(),
            watermark: self.watermarks.current(),
            incomplete_before_ms: self.incomplete_before_ms,
            awaiting_first: self.awaiting_partitions(),
            seed: self.seed,
            groups: self.groups.take_delta(),
        }
    }

    /// Replays `delta` on this state. Fails, changing nothing, when it was
    /// taken from another state (other settings or seed) or is not in order.
    pub fn apply_delta(&mut self, delta: &EngineDelta) -> Result<(), String> {
        delta.check_for(self.spec, self.seed, self.groups.spec())?;
        self.windows.apply_delta(&delta.windows);
        self.groups.apply_delta(&delta.groups);
        self.dedup.apply_delta(&delta.dedup);
        self.set_small_state(delta);
        Ok(())
    }

    /// Takes the clocks, watermark and partitions awaiting their first
    /// record from `delta`.
    fn set_small_state(&mut self, delta: &EngineDelta) {
        // As read back from a frame: idleness and the end of a bounded input
        // are not state (see `watermark`), so the base a committer builds
        // holds exactly what recovery would.
        let mut clocks: Vec<PartitionClock> = delta
            .clocks
            .iter()
            .map(|c| PartitionClock {
                max_event_ms: c.max_event_ms,
                ..PartitionClock::default()
            })
            .collect();
        clocks.resize(
            self.partitions().max(clocks.len()),
            PartitionClock::default(),
        );
        self.watermarks =
            Watermarks::restore(self.spec.out_of_orderness_ms, clocks, delta.watermark);
        self.set_awaiting(delta.incomplete_before_ms, &delta.awaiting_first);
    }

    fn set_awaiting(&mut self, incomplete_before_ms: i64, awaiting: &[u32]) {
        self.incomplete_before_ms = incomplete_before_ms;
        self.awaiting_first.clear();
        self.any_awaiting = false;
        for p in awaiting {
            self.mark_truncated(*p as usize);
        }
    }

    fn awaiting_partitions(&self) -> Vec<u32> {
        (0..self.awaiting_first.len())
            .filter(|p| self.awaiting_first[*p])
            .map(|p| p as u32)
            .collect()
    }

    pub fn snapshot(&self) -> EngineSnapshot {
        EngineSnapshot {
            spec: self.spec,
            windows: self.windows.snapshot(),
            dedup: self.dedup.snapshot(),
            clocks: self.watermarks.clocks().to_vec(),
            watermark: self.watermarks.current(),
            incomplete_before_ms: self.incomplete_before_ms,
            awaiting_first: self.awaiting_partitions(),
            seed: self.seed,
            groups: self.groups.snapshot(),
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

    /// Entries of the big tables: pane user-set entries and dedup ids (what
    /// decides when the checkpoint chain is compacted). O(panes).
    pub fn live_entries(&self) -> usize {
        let (_, users, ids) = self.state_stats();
        users + ids
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
        let prepared = self.prepare(payload);
        self.apply(partition, prepared, now_s, out)
    }

    /// [`Engine::parse`], then [`Engine::prefetch`] of the one record.
    #[inline]
    pub fn prepare(&self, payload: &[u8]) -> Prepared {
        let prepared = self.parse(payload);
        self.prefetch(std::iter::once(&prepared));
        prepared
    }

    /// The part of processing a payload that depends on the payload alone:
    /// parsing, cleaning, fingerprinting, and the event's pane. It reads no
    /// state, so records can be parsed ahead of their turn (see
    /// [`Lookahead`]), or on another thread ([`Engine::parser`]).
    #[inline]
    pub fn parse(&self, payload: &[u8]) -> Prepared {
        self.parser().parse(payload)
    }

    /// What [`Engine::parse`] needs, detached from the state: it can parse
    /// on other threads while the engine applies records.
    #[inline]
    pub fn parser(&self) -> Parser {
        Parser {
            spec: self.spec,
            storable: self.storable,
            seed: self.seed,
            dims: self.groups.active(),
        }
    }

    /// Starts loading the dedup slots, then the user-set slots, that
    /// applying `block` will touch. A hint only: it changes no state.
    ///
    /// The prefetches are issued back to back on purpose. The dedup table
    /// is far larger than what the TLB maps, so nearly every id is on a page
    /// the TLB does not hold, and a prefetch cannot retire before its page
    /// walk ends. With one prefetch per parsed record, a thousand
    /// instructions apart, the walks ran one after another and the core
    /// waited on each (a third of the processing time under `perf`); issued
    /// together, they overlap.
    #[inline]
    pub fn prefetch<'p>(&self, block: impl Iterator<Item = &'p Prepared> + Clone) {
        let events = block.filter_map(|p| p.0.as_ref().ok());
        for event in events.clone() {
            self.dedup.prefetch(event.id);
        }
        for event in events {
            self.windows.prefetch(event.pane, event.user);
        }
    }

    /// Runs a prepared record from `partition` through watermark, lateness,
    /// dedup and windows, in that order.
    #[inline]
    pub fn apply(
        &mut self,
        partition: usize,
        prepared: Prepared,
        now_s: i64,
        out: &mut Vec<WindowRow>,
    ) -> Verdict {
        self.counters.read += 1;
        let event = match prepared.0 {
            Ok(e) => e,
            Err(reason) => {
                self.counters.anomalies += 1;
                return Verdict::Anomaly(reason, None);
            }
        };
        let t = event.event_time_ms;
        if self.any_awaiting {
            self.note_first_record(partition, t);
        }
        if !self.hold_watermark && self.watermarks.observe(partition, t) {
            self.on_watermark(now_s, out);
        }
        let wm = self.watermarks.current();
        if wm
            >= event
                .pane
                .saturating_mul(self.spec.slide_ms)
                .saturating_add(self.pane_final_after_ms)
        {
            self.counters.anomalies += 1;
            self.counters.late += 1;
            return Verdict::Anomaly(Reason::LateEvent, Some(t));
        }
        if !self.dedup.insert(event.id, event.pane) {
            self.counters.duplicates += 1;
            return Verdict::Duplicate;
        }
        self.windows
            .add_to_pane(event.pane, event.user, event.amount_cents, wm);
        if let Some(dims) = &event.dims {
            self.groups
                .add(event.pane, dims, event.user, event.amount_cents);
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

    /// The end of a bounded input: every partition finished, the watermark
    /// at +inf, every window with data emitted. What this changes is not
    /// meant to be checkpointed: take the snapshot or delta before, and
    /// record the rows with [`EngineDelta::note_emitted`].
    pub fn end_of_input(&mut self, now_s: i64, out: &mut Vec<WindowRow>) {
        for p in 0..self.watermarks.clocks().len() {
            self.watermarks.set_finished(p);
        }
        self.watermarks.set_ceiling(i64::MAX);
        self.flush_updates(now_s, out);
        self.on_watermark(now_s, out);
    }

    /// Takes part of partitions discovered while running, up to
    /// `partitions` in all (see `watermark`).
    pub fn grow(&mut self, partitions: usize) {
        self.watermarks.grow(partitions);
    }

    /// The watermark the partition clocks allow, before the ceiling.
    pub fn frontier(&self) -> i64 {
        self.watermarks.frontier()
    }

    /// Freezes `partition`'s part of the watermark where it is: the job read
    /// past what the partition held when the last discovery started (see
    /// `watermark`).
    pub fn cap_partition(&mut self, partition: usize) {
        self.watermarks.cap(partition);
    }

    /// A discovery completed: lifts every partition's cap, firing the
    /// windows the watermark then passes.
    pub fn uncap_partitions(&mut self, now_s: i64, out: &mut Vec<WindowRow>) {
        if self.watermarks.uncap_all() {
            self.on_watermark(now_s, out);
        }
    }

    /// Caps the job watermark (records waiting for confirmation).
    pub fn set_watermark_ceiling(&mut self, ceiling: i64, now_s: i64, out: &mut Vec<WindowRow>) {
        if self.watermarks.set_ceiling(ceiling) {
            self.on_watermark(now_s, out);
        }
    }

    /// Number of partitions the engine keeps a clock for.
    pub fn partitions(&self) -> usize {
        self.watermarks.clocks().len()
    }

    /// Marks a partition's part of a bounded input read: it still holds the
    /// watermark, but no longer paces alignment (see `watermark`).
    pub fn end_partition(&mut self, partition: usize, now_s: i64, out: &mut Vec<WindowRow>) {
        if self.watermarks.set_ended(partition) {
            self.on_watermark(now_s, out);
        }
    }

    /// The event time alignment paces partitions by (see `watermark`).
    #[inline]
    pub fn alignment_floor(&self) -> i64 {
        self.watermarks.alignment_floor()
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
        self.count_emitted(out, before);
        self.emit_grouped(out, before);
    }

    /// Numbers versions above `base` (see [`Windows::set_version_base`]):
    /// only for a state that has emitted nothing yet.
    pub fn set_version_base(&mut self, base: u64) {
        self.windows.set_version_base(base);
    }

    /// Retention deleted the beginning of `partition` before this state
    /// began reading it: records deleted there have event times up to its
    /// first remaining record's plus the bound, so windows before that may
    /// be partial and are never emitted (a table row from a run that saw
    /// them whole must not be replaced by a part; `replay` follows the same
    /// rule).
    pub fn mark_truncated(&mut self, partition: usize) {
        if self.awaiting_first.len() <= partition {
            self.awaiting_first.resize(partition + 1, false);
        }
        self.awaiting_first[partition] = true;
        self.any_awaiting = true;
    }

    #[cold]
    fn note_first_record(&mut self, partition: usize, t_ms: i64) {
        if let Some(slot @ true) = self.awaiting_first.get_mut(partition) {
            *slot = false;
            self.incomplete_before_ms = self
                .incomplete_before_ms
                .max(t_ms.saturating_add(self.spec.out_of_orderness_ms + 1));
            self.any_awaiting = self.awaiting_first.iter().any(|a| *a);
        }
    }

    /// Counts the rows emitted from `out[before..]`, dropping those of
    /// windows that may be incomplete (see [`Engine::mark_truncated`]). A
    /// window found empty when it fired and updated within the allowed
    /// lateness is emitted for the first time: not a re-emission.
    fn count_emitted(&mut self, out: &mut Vec<WindowRow>, before: usize) {
        if self.incomplete_before_ms != i64::MIN {
            let floor = self.incomplete_before_ms;
            let fresh = out.split_off(before);
            let kept = fresh.len();
            out.extend(
                fresh
                    .into_iter()
                    .filter(|r| r.window_start.saturating_mul(1000) >= floor),
            );
            self.counters.windows_incomplete += (kept - (out.len() - before)) as u64;
        }
        let first = self.windows.version_base() + 1;
        for row in &out[before..] {
            if row.version > first {
                self.counters.windows_re_emitted += 1;
            } else {
                self.counters.windows_emitted += 1;
            }
        }
    }

    /// Appends the grouped rows of each window row in `out[before..]`,
    /// with its version (see [`crate::dims`]).
    fn emit_grouped(&mut self, out: &mut Vec<WindowRow>, before: usize) {
        if !self.groups.active() {
            return;
        }
        let n = self.spec.panes_per_window();
        for i in before..out.len() {
            if out[i].group.is_some() {
                continue;
            }
            let w = self.spec.window_of_start(out[i].window_start);
            for f in self.groups.window(w, n) {
                out.push(WindowRow {
                    order_cnt: f.order_cnt,
                    gmv_cents: f.gmv_cents,
                    user_cnt: f.user_cnt,
                    group: Some(f.key),
                    users: None,
                    ..out[i].clone()
                });
            }
        }
    }

    fn on_watermark(&mut self, now_s: i64, out: &mut Vec<WindowRow>) {
        let wm = self.watermarks.current();
        // The next window to fire is derived, not cached: an accepted event
        // may move it (the first one sets it, an earlier one read after it
        // moves it back), and deriving it is as cheap as a cached compare.
        if wm == i64::MAX || self.windows.next_fire_at().is_some_and(|at| wm >= at) {
            let before = out.len();
            self.windows.advance(wm, now_s, out);
            self.count_emitted(out, before);
            self.emit_grouped(out, before);
            let first_live = self.windows.first_live_pane(wm);
            self.groups.purge(first_live);
            self.dedup.purge_before(first_live);
        }
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
            e.process(0, &ev("a", "u1", "1.00", 100_000), 0, &mut out),
            Verdict::Accepted
        );
        assert_eq!(
            e.process(0, &ev("a", "u1", "1.00", 100_000), 0, &mut out),
            Verdict::Duplicate
        );
        assert!(matches!(
            e.process(0, b"{", 0, &mut out),
            Verdict::Anomaly(Reason::MalformedJson, None)
        ));
        // Move the watermark far ahead: the old event is now late, and so is
        // its copy (its dedup id was forgotten with its windows).
        assert_eq!(
            e.process(0, &ev("b", "u2", "1.00", 2_000_000), 0, &mut out),
            Verdict::Accepted
        );
        assert_eq!(
            e.process(0, &ev("a", "u1", "1.00", 100_000), 0, &mut out),
            Verdict::Anomaly(Reason::LateEvent, Some(100_000))
        );
        assert_eq!(out.len(), 2, "the two windows of event a fired");
        assert!(out.iter().all(|r| r.order_cnt == 1 && r.gmv_cents == 100));
    }

    #[test]
    fn only_events_whose_windows_a_datetime_holds_are_accepted() {
        let mut e = Engine::new(SPEC, 1);
        let mut out = Vec::new();
        let (first, last) = SPEC.storable_event_times();
        assert_eq!(
            first, 30_000,
            "[0, 30 s) also belongs to the window at -30 s"
        );
        // The last window holding `last` ends at or before the last second
        // a DateTime holds, and the next one would not.
        let end = SPEC.pane_of(last) * SPEC.slide_ms + SPEC.size_ms;
        let max_ms = (u32::MAX as i64) * 1000;
        assert!(end <= max_ms && end + SPEC.slide_ms > max_ms, "{end}");
        // Before 2106 the parser's own range (up to 2099) applies first.
        let max = crate::time::MAX_EVENT_TIME_MS;
        assert!(max < last);
        let out_of_range = Verdict::Anomaly(Reason::EventTimeOutOfRange, None);
        for (t, want) in [
            (0, out_of_range),
            (29_999, out_of_range),
            (30_000, Verdict::Accepted),
            (max, Verdict::Accepted),
            (max + 1, Verdict::Anomaly(Reason::BadEventTime, None)),
        ] {
            let verdict = e.process(0, &ev(&format!("e{t}"), "u", "1.00", t), 0, &mut out);
            assert_eq!(verdict, want, "t = {t}");
        }
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
    fn lookahead_gives_exactly_the_verdicts_and_rows_of_one_by_one() {
        use crate::source::generator::GeneratorConfig;
        // Broken, duplicate and late events over three partitions, with the
        // windows firing along the way: every step of `apply` is taken.
        let gen = GeneratorConfig {
            partitions: 3,
            anomaly_share: 0.05,
            duplicate_share: 0.1,
            late_share: 0.02,
            users: 500,
            rate: 20,
            ..GeneratorConfig::default()
        };
        let mut records = Vec::new();
        for offset in 0..20_000u64 {
            let p = (offset % 3) as u32;
            let mut payload = Vec::new();
            gen.payload(p, offset / 3, &mut payload);
            records.push((p as usize, payload));
        }
        let (mut one, mut ahead) = (Engine::with_seed(SPEC, 3, 9), Engine::with_seed(SPEC, 3, 9));
        let (mut out_one, mut out_ahead) = (Vec::new(), Vec::new());
        let mut verdicts_one = Vec::new();
        for (p, payload) in &records {
            verdicts_one.push(one.process(*p, payload, 0, &mut out_one));
        }
        let mut verdicts_ahead = Vec::new();
        let parser = ahead.parser();
        let mut input = Lookahead::new(
            records
                .iter()
                .map(|(p, payload)| (*p, parser.parse(payload))),
        );
        while let Some((p, prepared)) = input.next(&ahead) {
            verdicts_ahead.push(ahead.apply(p, prepared, 0, &mut out_ahead));
        }
        assert_eq!(verdicts_ahead, verdicts_one);
        let kinds = |v: &[Verdict]| {
            let dup = v.iter().filter(|v| **v == Verdict::Duplicate).count();
            let anomalies = v
                .iter()
                .filter(|v| matches!(v, Verdict::Anomaly(..)))
                .count();
            (dup, anomalies)
        };
        let (dup, anomalies) = kinds(&verdicts_one);
        assert!(dup > 100 && anomalies > 100, "{dup} {anomalies}");
        assert!(out_one.len() > 10);
        assert_eq!(out_ahead, out_one);
        assert_eq!(ahead.snapshot(), one.snapshot());
    }

    /// The producer's live stream (event time = wall clock, disorder 3 s
    /// within a 5 s bound, partitions round-robin), starting 1 s after a pane
    /// boundary, so the first event read is later than many read after it.
    /// Every window must be emitted once, when the watermark reaches its end,
    /// with the figures an independent count of the input gives.
    #[test]
    fn a_live_start_fires_every_window_once_on_time_with_exact_figures() {
        use crate::source::generator::GeneratorConfig;
        use std::collections::{BTreeMap, HashSet};
        let spec = WindowSpec {
            size_ms: 10_000,
            slide_ms: 5_000,
            ..SPEC
        };
        let gen = GeneratorConfig {
            partitions: 4,
            events_per_partition: None,
            rate: 500,
            start_time_ms: 1_795_656_670_000 + 1_000,
            anomaly_share: 0.0,
            ..Default::default()
        };
        let mut e = Engine::with_seed(spec, 4, 1);
        let mut out = Vec::new();
        let mut payload = Vec::new();
        // Independent figures per window start (s): events, cents, users.
        type Figures = (u64, u128, HashSet<String>);
        let mut expected: BTreeMap<i64, Figures> = BTreeMap::new();
        let mut ids = HashSet::new();
        let mut emitted = HashSet::new();
        for i in 0..(4 * 500 * 30u64) {
            let p = (i % 4) as u32;
            payload.clear();
            gen.payload(p, i / 4, &mut payload);
            let v: serde_json::Value = serde_json::from_slice(&payload).unwrap();
            if ids.insert(v["event_id"].as_str().unwrap().to_string()) {
                let t = v["event_time"].as_i64().unwrap();
                let cents = (v["amount"].as_f64().unwrap() * 100.0).round() as u128;
                let user = v["user_id"].as_str().unwrap().to_string();
                let s = t.div_euclid(5_000) * 5;
                for start in [s, s - 5] {
                    let f = expected.entry(start).or_default();
                    f.0 += 1;
                    f.1 += cents;
                    f.2.insert(user.clone());
                }
            }
            let before = out.len();
            e.process(p as usize, &payload, 0, &mut out);
            // A batch every 16 records, as the job flushes updates per batch.
            if i % 16 == 15 {
                e.flush_updates(0, &mut out);
            }
            for row in &out[before..] {
                assert!(
                    row.window_end * 1000 <= e.watermark(),
                    "window [{}, {}) v{} emitted at watermark {}",
                    row.window_start,
                    row.window_end,
                    row.version,
                    e.watermark()
                );
                emitted.insert(row.window_start);
            }
            // ... and not later than that either.
            for start in expected.keys() {
                if (start + 10) * 1000 <= e.watermark() {
                    assert!(
                        emitted.contains(start),
                        "window {start} not emitted at watermark {}",
                        e.watermark()
                    );
                }
            }
        }
        for p in 0..4 {
            e.finish_partition(p, 0, &mut out);
        }
        let got: Vec<(i64, u64, u128, u64, u64)> = out
            .iter()
            .map(|r| {
                (
                    r.window_start,
                    r.order_cnt,
                    r.gmv_cents,
                    r.user_cnt,
                    r.version,
                )
            })
            .collect();
        let want: Vec<(i64, u64, u128, u64, u64)> = expected
            .iter()
            .map(|(s, f)| (*s, f.0, f.1, f.2.len() as u64, 1))
            .collect();
        assert_eq!(got, want);
        assert_eq!(e.counters.windows_re_emitted, 0);
        assert_eq!(e.counters.windows_emitted, want.len() as u64);
    }

    mod deltas {
        use super::*;
        use proptest::prelude::*;

        const SMALL: WindowSpec = WindowSpec {
            size_ms: 4_000,
            slide_ms: 2_000,
            out_of_orderness_ms: 1_000,
            allowed_lateness_ms: 2_000,
        };

        #[derive(Debug, Clone)]
        enum Op {
            /// An order on a partition: id and user from small pools, event
            /// time moved by a step (back within the bound, or far ahead).
            Order(usize, u8, u8, i64),
            Idle(usize, bool),
            Grow,
            Truncated(usize),
            /// Partition discovery caps the watermark this far below the
            /// frontier.
            Ceiling(i64),
            Delta,
            /// A new base from the live state (a compaction).
            Base,
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                12 => (0usize..4, any::<u8>(), 0u8..24, prop_oneof![
                    8 => -1_500i64..800,
                    1 => 3_000i64..30_000,
                ]).prop_map(|(p, id, user, dt)| Op::Order(p, id, user, dt)),
                1 => (0usize..4, any::<bool>()).prop_map(|(p, idle)| Op::Idle(p, idle)),
                1 => Just(Op::Grow),
                1 => (0usize..4).prop_map(Op::Truncated),
                1 => (0i64..5_000).prop_map(Op::Ceiling),
                3 => Just(Op::Delta),
                1 => Just(Op::Base),
            ]
        }

        /// `state` as a frame holds it: without what is not state.
        fn stored(mut state: EngineSnapshot) -> EngineSnapshot {
            for c in &mut state.clocks {
                *c = PartitionClock {
                    max_event_ms: c.max_event_ms,
                    ..PartitionClock::default()
                };
            }
            state
        }

        proptest! {
            /// Against the live engine's own whole snapshot, restored (what
            /// recovery did before deltas): a base and the deltas after it
            /// restore to exactly that, and so does the replica that applies
            /// each delta as it comes (the committer's), at every step.
            #[test]
            fn a_base_and_its_deltas_restore_the_live_state(
                ops in proptest::collection::vec(op(), 1..300),
            ) {
                let mut live = Engine::with_seed(SMALL, 2, 3);
                live.track_changes();
                let mut base = stored(live.snapshot());
                let mut deltas: Vec<EngineDelta> = Vec::new();
                let mut replica = Engine::with_seed(SMALL, 2, 3);
                let mut out = Vec::new();
                let mut t = 1_800_000_000_000i64;
                for op in ops {
                    match op {
                        Op::Order(p, id, user, dt) => {
                            t += dt;
                            let p = p % live.partitions();
                            let payload = ev(&format!("e{id}"), &format!("u{user}"), "0.10", t);
                            live.process(p, &payload, 0, &mut out);
                            live.flush_updates(0, &mut out);
                        }
                        Op::Idle(p, idle) => {
                            let p = p % live.partitions();
                            live.set_idle(p, idle, 0, &mut out);
                        }
                        Op::Grow => live.grow(live.partitions() + 1),
                        Op::Truncated(p) => live.mark_truncated(p % live.partitions()),
                        Op::Ceiling(below) => {
                            let ceiling = live.frontier().saturating_sub(below);
                            live.set_watermark_ceiling(ceiling, 0, &mut out);
                        }
                        Op::Delta => {
                            let delta = live.take_delta();
                            replica.apply_delta(&delta).unwrap();
                            deltas.push(delta);
                            let parts = live.partitions();
                            let want = Engine::restore(SMALL, parts, stored(live.snapshot()))
                                .unwrap()
                                .snapshot();
                            prop_assert_eq!(&replica.snapshot(), &want);
                            let restored = Engine::restore_chain(SMALL, parts, &base, &deltas).unwrap();
                            prop_assert_eq!(restored.snapshot(), want);
                        }
                        Op::Base => {
                            replica.apply_delta(&live.take_delta()).unwrap();
                            base = stored(replica.snapshot());
                            deltas.clear();
                        }
                    }
                }
            }
        }

        fn feed_orders(engine: &mut Engine, from: i64, to: i64, out: &mut Vec<WindowRow>) {
            for i in from..to {
                let user = format!("u{}", i % 30_000);
                let payload = ev(&format!("e{i}"), &user, "1.00", 1_800_000_000_000 + 2 * i);
                engine.process((i % 2) as usize, &payload, 0, out);
            }
        }

        /// Big enough for the two-thread restore: the same state as the
        /// live engine's own snapshot, restored.
        #[test]
        fn a_big_chain_restores_on_two_threads_to_the_live_state() {
            let mut live = Engine::with_seed(SPEC, 2, 5);
            live.track_changes();
            let mut out = Vec::new();
            feed_orders(&mut live, 0, 60_000, &mut out);
            let base = stored(live.snapshot());
            live.take_delta();
            feed_orders(&mut live, 60_000, 120_000, &mut out);
            let delta = live.take_delta();
            let ids: usize = base.dedup.expiry.iter().map(|e| e.1.len()).sum();
            assert!(ids + delta.dedup.counted.len() >= PARALLEL_RESTORE_IDS);
            let restored = Engine::restore_chain(SPEC, 2, &base, &[delta]).unwrap();
            let want = Engine::restore(SPEC, 2, stored(live.snapshot())).unwrap();
            assert_eq!(restored.snapshot(), want.snapshot());
        }

        #[test]
        fn a_delta_of_another_state_is_refused() {
            let mut a = Engine::with_seed(SPEC, 1, 1);
            a.track_changes();
            let delta = a.take_delta();
            let mut other_seed = Engine::with_seed(SPEC, 1, 2);
            assert!(other_seed.apply_delta(&delta).is_err());
            let spec = WindowSpec {
                size_ms: 120_000,
                ..SPEC
            };
            let mut other_spec = Engine::with_seed(spec, 1, 1);
            assert!(other_spec.apply_delta(&delta).is_err());
            let mut shuffled = delta.clone();
            shuffled.windows.panes = vec![(2, 1, 1, vec![]), (1, 1, 1, vec![])];
            assert!(Engine::with_seed(SPEC, 1, 1)
                .apply_delta(&shuffled)
                .is_err());
        }

        #[test]
        fn taking_a_delta_copies_no_table() {
            let mut e = Engine::with_seed(SPEC, 1, 1);
            e.track_changes();
            let mut out = Vec::new();
            for i in 0..5_000 {
                e.process(
                    0,
                    &ev(
                        &format!("e{i}"),
                        &format!("u{}", i % 700),
                        "1.00",
                        100_000 + i,
                    ),
                    0,
                    &mut out,
                );
            }
            let first = e.take_delta();
            assert_eq!(first.dedup.counted.len(), 5_000);
            assert_eq!(first.changes(), 5_700);
            e.process(0, &ev("e-new", "u1", "1.00", 105_000), 0, &mut out);
            let second = e.take_delta();
            assert_eq!(second.changes(), 1, "only the id: u1 was known");
            assert_eq!(e.take_delta().changes(), 0);
        }
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
