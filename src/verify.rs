//! `verify`: recompute the final windows from the input with an independent,
//! deliberately simple model, and diff them against what the sink holds.
//!
//! The point is a second opinion. The engine is built for an unbounded stream
//! with bounded memory: panes, 128-bit fingerprints, dedup ids that expire with
//! their panes, watermarks with idleness, alignment that holds partitions back,
//! checkpoints, restarts. This module shares none of that. It uses only
//! [`crate::event::parse_event`] (the input rules of SPEC §1, which are not
//! what is being checked here), [`WindowRow`] as the row type,
//! [`crate::event::format_cents`] and the time formatting of the report.
//!
//! # The model
//!
//! 1. Read the whole input: start the source with no resume offsets and
//!    `bounded = true`, poll until every partition is finished. Every record is
//!    parsed once and kept, per partition, in offset order.
//! 2. Replay the partitions as an **event-time-aligned merge**: repeatedly take
//!    the next record of the partition whose highest event time seen so far is
//!    the smallest (ties: the lower partition number). This is the interleaving
//!    that the job's watermark alignment (`window.alignment_drift`)
//!    approximates: no partition runs ahead of the others in event time.
//! 3. Per partition, the highest event time seen; the watermark is the minimum
//!    over partitions that still have records of (highest - out_of_orderness),
//!    `-inf` for a partition that has not shown an event yet, `+inf` once
//!    everything is replayed.
//! 4. An event is late when `watermark >= floor(t / slide) * slide + size +
//!    allowed_lateness` (the last window holding it is final).
//! 5. Dedup: a `HashMap` from every accepted `event_id`, as full strings, to
//!    the slide index of the copy that counted, never forgotten (the input is
//!    bounded, so memory is not a concern here); a copy less than
//!    `size / slide` slides away is a duplicate, a farther one replaces it.
//! 6. Event times whose windows a ClickHouse `DateTime` cannot hold (a window
//!    starting before 1970, or ending after 2106-02-07T06:28:15Z) are
//!    `event_time_out_of_range`.
//! 7. Wrong clocks: an event time more than `max_ahead_of_record` ahead of the
//!    record's own timestamp is `implausible_event_time`; one more than
//!    `max_jump` ahead of both its partition's highest event time and the
//!    watermark (or the first of its partition before any watermark) is
//!    judged by the next valid events of its partition, read ahead in the
//!    model's copy of the input: each that is at most `max_jump` below it
//!    (or above) votes for it, each further below against; once the votes
//!    for lead by 5 it stands, once those against lead by 2 it does not;
//!    a vote for it more than `max_jump` above it while the votes for
//!    lead lets it stand too (time moved on past it); after 64 votes, or
//!    when they run out, the side that leads decides (a tie: against
//!    after 64, for when they ran out); records more than
//!    `max_jump` behind the partition's highest time are stragglers and
//!    do not vote (a partition's first record: the first vote for it lets
//!    it stand, two against reject it); with none after it, it stands if
//!    it has a record timestamp (which the first rule already held it
//!    to), else unless it is more than `max_ahead_of_record` ahead of what
//!    was known.
//! 8. Windows: a `BTreeMap` from window start to (count, cents, set of user
//!    ids as full strings); each accepted event is added to every window that
//!    holds it and is not final yet (`watermark < start + size +
//!    allowed_lateness`): an event whose earlier window is final counts in
//!    the later one only, as in the engine. The result is the map, as rows sorted by `window_start`
//!    (`version` and `updated_at` are 0: only the figures are compared).
//! 9. Grouped results (`dimensions.groupings`): each accepted event is also
//!    added to its windows per grouping and exact dimension values
//!    (`verify/grouped.rs`); the limit is applied at the end to each
//!    window's whole set of values, by the definition in docs/semantics.md.
//!    The sink's grouped rows with orders are compared on the same figures.
//!
//! # Where it is simpler than the engine, and why the results still agree
//!
//! * **No firing, no versions, no lateness updates.** The model computes the
//!   final state of every window directly. The engine emits a window when the
//!   watermark passes its end, re-emits it for events within the allowed
//!   lateness, and the sink keeps the highest version; its final row is
//!   therefore the sum of every accepted event that came before it was
//!   final, which is what the model sums.
//! * **Exact strings instead of fingerprints.** The engine keeps 128-bit
//!   hashes of event ids and user ids; the model keeps the strings. They agree
//!   unless two strings collide (probability ~n²/2¹²⁹).
//! * **Ids are never forgotten.** The engine forgets an id once its windows are
//!   final. Because it checks lateness before duplicates, a copy arriving after
//!   that is `late_event` in the engine, and it is late in the model too (same
//!   check, same order), so forgetting changes nothing.
//! * **No idleness, no pauses, no batches, no restarts.** The model's
//!   interleaving is one fixed, ideal merge; the job's actual interleaving
//!   depends on batch sizes, alignment (a partition may run up to
//!   `alignment_drift` ahead in event time) and where it was killed. That only
//!   matters for the late check, and only for events near the threshold:
//!   - with per-partition disorder within `out_of_orderness` (SPEC §4's
//!     determinism condition), no event is late under any interleaving, and
//!     the windows are the same;
//!   - an event far behind its stream (more than `alignment_drift +
//!     out_of_orderness` beyond `size + allowed_lateness`) is late under every
//!     interleaving the job can produce, so both call it `late_event`.
//!
//!   Events in between (the job's watermark at that moment could be on either
//!   side of their threshold) are counted as `borderline`: their fate depends
//!   on the interleaving, in the job as in any event-time system. When the
//!   report shows differences and `borderline > 0`, look there first.
//! * **Grouped results (point 9).** With `dimensions.groupings`, each
//!   accepted event is also added, per grouping, to its windows' figures by
//!   the exact values of its dimensions (`verify/grouped.rs`); the limit is
//!   applied at the end, to each window's whole set of values, by the
//!   definition in docs/semantics.md. The engine bounds each pane instead
//!   and emits retractions; the sink's rows with orders must still equal
//!   the model's.
//! * **Restarts are invisible.** The model reads the input once. That is the
//!   point: the exactly-once promise is that the sink holds what one
//!   uninterrupted run computes, however often the job was killed.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};

mod grouped;
mod report;

pub use report::{diff, Stats, VerifyReport};

use crate::dims::GroupingSpec;
use crate::event::parse_event;
use crate::sink::Sink;
use crate::source::{PartitionState, RecordBatch, Source};
use crate::window::{WindowRow, WindowSpec};

/// One input record, parsed once.
enum Rec {
    Anomaly(&'static str),
    Event {
        t_ms: i64,
        /// The record's own timestamp (Kafka, generator); `i64::MIN`: none.
        record_ms: i64,
        event_id: Box<str>,
        user_id: Box<str>,
        cents: u64,
        city: Box<str>,
        category: Box<str>,
    },
}

/// The wrong-clock bounds of the model (point 7), ms; `i64::MAX`: off.
#[derive(Debug, Clone, Copy)]
pub struct ClockBounds {
    pub max_ahead_of_record_ms: i64,
    pub max_jump_ms: i64,
}

impl ClockBounds {
    /// The job's defaults, written out again here on purpose: one hour
    /// ahead of the record timestamp; a jump of out-of-orderness + size -
    /// slide + allowed lateness.
    pub fn defaults(spec: &WindowSpec) -> Self {
        ClockBounds {
            max_ahead_of_record_ms: 3_600_000,
            max_jump_ms: spec.out_of_orderness_ms + spec.size_ms - spec.slide_ms
                + spec.allowed_lateness_ms,
        }
    }
}

/// Give up when a source reports transient errors for this long in a row.
const TRANSIENT_LIMIT: Duration = Duration::from_secs(120);
/// Give up when a source neither delivers nor finishes for this long.
const STALL_LIMIT: Duration = Duration::from_secs(300);

/// Reads every partition to its end; records per partition in offset order.
fn read_all(source: &mut dyn Source) -> anyhow::Result<Vec<Vec<(u64, Rec)>>> {
    source
        .start(&BTreeMap::new(), true)
        .map_err(|e| anyhow!("verify: cannot start the source {}: {e}", source.id()))?;
    let mut parts: Vec<Vec<(u64, Rec)>> =
        (0..source.partition_count()).map(|_| Vec::new()).collect();
    let mut batch = RecordBatch::default();
    let mut failing_since: Option<Instant> = None;
    let mut last_progress = Instant::now();
    loop {
        let finished = (0..source.partition_count())
            .all(|p| source.state(p as u32) == PartitionState::Finished);
        if finished {
            break;
        }
        batch.clear();
        match source.poll(&mut batch, 8192, Duration::from_millis(200)) {
            Ok(()) => failing_since = None,
            Err(e) if e.is_transient() => {
                let since = *failing_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= TRANSIENT_LIMIT {
                    bail!("verify: the source {} keeps failing: {e}", source.id());
                }
                std::thread::sleep(Duration::from_millis(500));
                continue;
            }
            Err(e) => bail!("verify: reading {}: {e}", source.id()),
        }
        if batch.is_empty() {
            if last_progress.elapsed() >= STALL_LIMIT {
                bail!(
                    "verify: the source {} delivered nothing for {:?} and is not finished",
                    source.id(),
                    STALL_LIMIT
                );
            }
            continue;
        }
        last_progress = Instant::now();
        for (meta, payload) in batch.iter() {
            let rec = match parse_event(payload) {
                Ok(ev) => Rec::Event {
                    t_ms: ev.event_time_ms,
                    record_ms: meta.timestamp_ms,
                    event_id: ev.event_id.into(),
                    user_id: ev.user_id.into(),
                    cents: ev.amount_cents,
                    city: ev.city.into(),
                    category: ev.category.into(),
                },
                Err(reason) => Rec::Anomaly(reason.as_str()),
            };
            let p = meta.partition as usize;
            if p >= parts.len() {
                parts.resize_with(p + 1, Vec::new);
            }
            parts[p].push((meta.offset, rec));
        }
    }
    for part in &mut parts {
        // Sources deliver in offset order; make it a fact, and drop any
        // record delivered twice.
        part.sort_by_key(|(offset, _)| *offset);
        part.dedup_by_key(|(offset, _)| *offset);
    }
    Ok(parts)
}

/// Recomputes the final windows of the whole input with the simple model of
/// the module documentation. `alignment_drift_ms` only serves to count
/// [`Stats::borderline`] events.
pub fn recompute(
    source: &mut dyn Source,
    spec: WindowSpec,
    alignment_drift_ms: i64,
) -> anyhow::Result<(Vec<WindowRow>, Stats)> {
    recompute_with(
        source,
        spec,
        alignment_drift_ms,
        ClockBounds::defaults(&spec),
    )
}

/// [`recompute`] with the wrong-clock bounds the job was configured with.
pub fn recompute_with(
    source: &mut dyn Source,
    spec: WindowSpec,
    alignment_drift_ms: i64,
    bounds: ClockBounds,
) -> anyhow::Result<(Vec<WindowRow>, Stats)> {
    let (rows, _, stats) = recompute_grouped(
        source,
        spec,
        alignment_drift_ms,
        bounds,
        GroupingSpec::default(),
    )?;
    Ok((rows, stats))
}

/// [`recompute_with`], and the grouped rows of `groupings` (point 9).
pub fn recompute_grouped(
    source: &mut dyn Source,
    spec: WindowSpec,
    alignment_drift_ms: i64,
    bounds: ClockBounds,
    groupings: GroupingSpec,
) -> anyhow::Result<(Vec<WindowRow>, Vec<WindowRow>, Stats)> {
    spec.validate().map_err(|e| anyhow!("verify: {e}"))?;
    let parts = read_all(source)?;
    let mut model = Model {
        spec,
        bounds,
        margin: alignment_drift_ms
            .max(0)
            .saturating_add(spec.out_of_orderness_ms),
        accepted_ids: HashMap::new(),
        windows: BTreeMap::new(),
        grouped: grouped::GroupedModel::new(groupings),
        stats: Stats {
            partitions: parts.len(),
            ..Stats::default()
        },
    };

    // The aligned merge: a min-heap of (highest event time seen, partition)
    // over partitions with records left.
    let mut max_seen = vec![i64::MIN; parts.len()];
    let mut cursor = vec![0usize; parts.len()];
    let mut heap: BinaryHeap<Reverse<(i64, usize)>> = (0..parts.len())
        .filter(|&p| !parts[p].is_empty())
        .map(|p| Reverse((i64::MIN, p)))
        .collect();
    while let Some(Reverse((_, p))) = heap.pop() {
        let (_, rec) = &parts[p][cursor[p]];
        cursor[p] += 1;
        model.stats.records += 1;
        // Watermark: this partition (still active while its record is
        // handled) and every partition with records left.
        let slowest = heap
            .peek()
            .map_or(max_seen[p], |Reverse((m, _))| (*m).min(max_seen[p]));
        let watermark = if slowest == i64::MIN {
            i64::MIN
        } else {
            slowest - spec.out_of_orderness_ms
        };
        if let Some(t) = model.record(rec, max_seen[p], watermark, &parts[p][cursor[p]..]) {
            max_seen[p] = max_seen[p].max(t);
        }
        if cursor[p] < parts[p].len() {
            heap.push(Reverse((max_seen[p], p)));
        }
    }
    Ok(model.finish())
}

/// The model's state while the merge replays the input (see the module
/// docs, points 4 to 8).
struct Model {
    spec: WindowSpec,
    bounds: ClockBounds,
    /// How close to the lateness threshold an event is borderline.
    margin: i64,
    /// Accepted `event_id`s, with the slide of the copy that counted.
    accepted_ids: HashMap<String, i64>,
    /// Window start (ms) -> (count, cents, users).
    windows: BTreeMap<i64, (u64, u128, BTreeSet<String>)>,
    /// The same, per grouping and values.
    grouped: grouped::GroupedModel,
    stats: Stats,
}

impl Model {
    /// Judges one record given its partition's highest event time so far,
    /// the watermark, and the records after it in its partition. Returns the
    /// event time when it moves its partition's clock.
    fn record(
        &mut self,
        rec: &Rec,
        max_seen: i64,
        watermark: i64,
        after: &[(u64, Rec)],
    ) -> Option<i64> {
        let Rec::Event {
            t_ms: t,
            record_ms,
            event_id,
            user_id,
            cents,
            city,
            category,
        } = rec
        else {
            if let Rec::Anomaly(reason) = rec {
                self.anomaly(reason);
            }
            return None;
        };
        let (t, spec) = (*t, self.spec);
        let slide = t.div_euclid(spec.slide_ms);
        let last_start = slide * spec.slide_ms;
        let first_start = last_start - spec.size_ms + spec.slide_ms;
        if !storable(t, &spec) {
            self.anomaly("event_time_out_of_range");
            return None;
        }
        // Point 7: wrong clocks.
        let known = (max_seen.max(watermark), max_seen);
        if implausible(t, *record_ms, known, after, self.bounds, &spec) {
            self.anomaly("implausible_event_time");
            return None;
        }
        let final_after = spec.size_ms + spec.allowed_lateness_ms;
        let final_at = last_start + final_after;
        // Borderline: the watermark is near the time one of its windows
        // becomes final.
        if watermark != i64::MIN
            && watermark >= first_start + final_after - self.margin
            && watermark <= final_at + self.margin
        {
            self.stats.borderline += 1;
        }
        let counted_at = self.accepted_ids.get(&**event_id).copied();
        if watermark >= final_at {
            self.anomaly("late_event");
        } else if counted_at.is_some_and(|c| (c - slide).abs() < spec.size_ms / spec.slide_ms) {
            self.stats.duplicates += 1;
        } else {
            self.accepted_ids.insert(event_id.to_string(), slide);
            self.stats.accepted += 1;
            // A window already final keeps its figures: the event counts in
            // the later windows only (docs/semantics.md, "Windows").
            let mut start = last_start;
            while start > t - spec.size_ms && watermark < start + final_after {
                let w = self.windows.entry(start).or_default();
                w.0 += 1;
                w.1 += u128::from(*cents);
                if !w.2.contains(&**user_id) {
                    w.2.insert(user_id.to_string());
                }
                self.grouped.add(start, (city, category), *cents, user_id);
                start -= spec.slide_ms;
            }
        }
        Some(t)
    }

    fn anomaly(&mut self, reason: &str) {
        *self.stats.anomalies.entry(reason.to_string()).or_default() += 1;
    }

    /// The windows, as rows sorted by `window_start` (`version` and
    /// `updated_at` are 0: only the figures are compared).
    fn finish(self) -> (Vec<WindowRow>, Vec<WindowRow>, Stats) {
        let spec = self.spec;
        let grouped = self.grouped.finish(spec.size_ms);
        let rows = self
            .windows
            .into_iter()
            .map(|(start, (order_cnt, gmv_cents, users))| WindowRow {
                users: None,
                window_start: start.div_euclid(1000),
                window_end: (start + spec.size_ms).div_euclid(1000),
                order_cnt,
                gmv_cents,
                user_cnt: users.len() as u64,
                version: 0,
                updated_at: 0,
                group: None,
            })
            .collect();
        (rows, grouped, self.stats)
    }
}

/// Point 6: whether every window holding `t` fits a `DateTime`.
fn storable(t: i64, spec: &WindowSpec) -> bool {
    let last_start = t.div_euclid(spec.slide_ms) * spec.slide_ms;
    let first_start = last_start - spec.size_ms + spec.slide_ms;
    first_start >= 0 && last_start + spec.size_ms <= u32::MAX as i64 * 1000
}

/// Point 7 of the model: whether an event at `t` (record timestamp
/// `record_ms`) is a wrong clock, given what was known of event time
/// (`known`, `i64::MIN`: nothing) and the records after it in its partition.
fn implausible(
    t: i64,
    record_ms: i64,
    (known, own): (i64, i64),
    after: &[(u64, Rec)],
    b: ClockBounds,
    spec: &WindowSpec,
) -> bool {
    let ahead_of_record = |t: i64, record_ms: i64| {
        record_ms != i64::MIN && t > record_ms.saturating_add(b.max_ahead_of_record_ms)
    };
    if ahead_of_record(t, record_ms) {
        return true;
    }
    if b.max_jump_ms == i64::MAX || (known != i64::MIN && t <= known.saturating_add(b.max_jump_ms))
    {
        return false;
    }
    // The valid records after it: storable, not ahead of their own record
    // timestamp.
    let later = after.iter().filter_map(|(_, r)| match r {
        Rec::Event {
            t_ms, record_ms, ..
        } if storable(*t_ms, spec) && !ahead_of_record(*t_ms, *record_ms) => Some(*t_ms),
        _ => None,
    });
    // Each later record not a straggler (far behind the partition's own
    // highest time) votes: +1 if it agrees, -1 if not. The running total
    // decides at +5 (stands) or -2 (implausible), or after 64 votes by its
    // sign (0: implausible); a partition's first record stands at its
    // first agreeing vote. The input is bounded: votes that run out decide
    // by their total's sign (0: stands).
    let agrees = |v: i64| v >= t.saturating_sub(b.max_jump_ms);
    let straggler = |v: i64| own != i64::MIN && v < own.saturating_sub(b.max_jump_ms);
    let voters: Vec<i64> = later.filter(|v| !straggler(*v)).take(64).collect();
    if voters.is_empty() {
        return record_ms == i64::MIN
            && known != i64::MIN
            && t > known.saturating_add(b.max_ahead_of_record_ms);
    }
    let mut total = 0;
    for (n, v) in voters.iter().enumerate() {
        let vote = if agrees(*v) { 1 } else { -1 };
        total += vote;
        // Time moved on: a vote for it a further max_jump ahead, the votes
        // for it leading.
        let moved_on = total > 0 && *v - b.max_jump_ms > t;
        if own == i64::MIN && vote == 1 || total == 5 || moved_on {
            return false;
        }
        if total == -2 {
            return true;
        }
        if n == 63 {
            return total <= 0;
        }
    }
    total < 0
}

/// Recomputes the windows from `source` and compares them with the sink's
/// final rows on (window_start, window_end, order_cnt, gmv, user_cnt), and
/// the grouped rows of `groupings` with the sink's grouped rows that have
/// orders on the same figures and the grouping and values. Versions and
/// update times are not compared.
pub fn verify(
    source: &mut dyn Source,
    sink: &mut dyn Sink,
    spec: WindowSpec,
    alignment_drift_ms: i64,
    bounds: ClockBounds,
    groupings: &GroupingSpec,
) -> anyhow::Result<VerifyReport> {
    let (expected, grouped_expected, stats) =
        recompute_grouped(source, spec, alignment_drift_ms, bounds, groupings.clone())?;
    let described = sink.describe();
    let reading = |e: crate::sink::SinkError| anyhow!("verify: reading the sink {described}: {e}");
    let mut actual = sink.read_final().map_err(reading)?;
    actual.sort_by_key(|r| r.window_start);
    let mut grouped_actual: Vec<WindowRow> = sink
        .read_grouped()
        .map_err(reading)?
        .into_iter()
        .filter(|r| r.order_cnt > 0)
        .collect();
    grouped_actual.sort_by(|a, b| a.key().cmp(&b.key()));
    let g = grouped::diff(&grouped_expected, &grouped_actual);
    Ok(VerifyReport {
        grouped_expected,
        grouped_actual,
        grouped_missing: g.missing,
        grouped_unexpected: g.unexpected,
        grouped_differing: g.differing,
        ..diff(expected, actual, stats)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::SourceError;

    const SPEC: WindowSpec = WindowSpec::DEFAULT;

    /// An in-memory source: partitions of payloads.
    struct Mem {
        parts: Vec<Vec<String>>,
        next: Vec<usize>,
    }

    impl Mem {
        fn new(parts: Vec<Vec<String>>) -> Self {
            let n = parts.len();
            Mem {
                parts,
                next: vec![0; n],
            }
        }
    }

    impl Source for Mem {
        fn id(&self) -> String {
            "mem".into()
        }
        fn source_name(&self, _partition: u32) -> &str {
            "mem"
        }
        fn partition_count(&self) -> usize {
            self.parts.len()
        }
        fn open(
            &mut self,
            _resume: &BTreeMap<u32, u64>,
            _end: crate::source::End<'_>,
        ) -> Result<BTreeMap<u32, u64>, SourceError> {
            self.next.iter_mut().for_each(|n| *n = 0);
            Ok((0..self.parts.len() as u32).map(|p| (p, 0)).collect())
        }
        fn poll(
            &mut self,
            batch: &mut RecordBatch,
            max: usize,
            _timeout: Duration,
        ) -> Result<(), SourceError> {
            // Deliberately lopsided: a whole partition before the next, so
            // the model's own merge is what orders the replay.
            for p in 0..self.parts.len() {
                while self.next[p] < self.parts[p].len() && batch.len() < max {
                    let o = self.next[p];
                    batch.push(p as u32, o as u64, self.parts[p][o].as_bytes());
                    self.next[p] += 1;
                }
            }
            Ok(())
        }
        fn state(&self, partition: u32) -> PartitionState {
            let p = partition as usize;
            if self.next[p] >= self.parts[p].len() {
                PartitionState::Finished
            } else {
                PartitionState::Backlog
            }
        }
    }

    fn ev(id: &str, user: &str, amount: &str, t: i64) -> String {
        format!(
            r#"{{"event_id":"{id}","order_id":"o","user_id":"{user}","amount":{amount},"event_time":{t}}}"#
        )
    }

    fn row(start_s: i64, cnt: u64, cents: u128, users: u64) -> WindowRow {
        WindowRow {
            users: None,
            window_start: start_s,
            window_end: start_s + 60,
            order_cnt: cnt,
            gmv_cents: cents,
            user_cnt: users,
            version: 0,
            updated_at: 0,
            group: None,
        }
    }

    #[test]
    fn a_window_ending_after_the_job_watermark_is_open_not_missing() {
        let expected = vec![row(0, 1, 100, 1), row(30, 2, 200, 1), row(60, 3, 300, 2)];
        let mut report = diff(expected, vec![row(0, 1, 100, 1)], Stats::default());
        assert_eq!(report.missing.len(), 2);
        // The window [30 s, 90 s) ends at the watermark: emitted, so missing.
        report.set_aside_open(90_000, &BTreeSet::new());
        assert_eq!(
            report
                .missing
                .iter()
                .map(|r| r.window_start)
                .collect::<Vec<_>>(),
            [30]
        );
        assert_eq!(
            report
                .open
                .iter()
                .map(|r| r.window_start)
                .collect::<Vec<_>>(),
            [60]
        );
        assert!(!report.ok());
        assert!(
            report
                .summary()
                .starts_with("verify: 1 windows differ (1 missing"),
            "{}",
            report.summary()
        );
        assert!(report
            .summary()
            .contains("; 1 windows end after the job's watermark"));

        // A window the job emitted and the sink acknowledged (the end of a
        // bounded run emits them all) is missing, whatever the watermark.
        let expected = vec![row(0, 1, 100, 1), row(60, 3, 300, 2)];
        let mut report = diff(expected, vec![row(0, 1, 100, 1)], Stats::default());
        report.set_aside_open(90_000, &BTreeSet::from([60]));
        assert_eq!(report.missing.len(), 1);
        assert!(report.open.is_empty());
    }

    #[test]
    fn sliding_windows_dedup_and_anomalies() {
        let mut src = Mem::new(vec![
            vec![
                ev("a", "u1", "1.00", 110_000),
                ev("b", "u2", "2.50", 140_000),
                ev("a", "u1", "1.00", 110_000),
                "{".into(),
                ev("early", "u1", "1.00", 29_999),
            ],
            vec![ev("c", "u1", "0.05", 135_000)],
        ]);
        let (rows, stats) = recompute(&mut src, SPEC, 10_000).unwrap();
        assert_eq!(
            rows,
            vec![row(60, 1, 100, 1), row(90, 3, 355, 2), row(120, 2, 255, 2)]
        );
        assert_eq!((stats.records, stats.accepted, stats.duplicates), (6, 3, 1));
        assert_eq!(stats.anomalies.get("malformed_json"), Some(&1));
        assert_eq!(stats.anomalies.get("event_time_out_of_range"), Some(&1));
        // The copy of "a", read at watermark 135 s: window [60 s, 120 s)
        // holding it becomes final at 150 s, within the 15 s margin.
        assert_eq!(stats.borderline, 1);
    }

    #[test]
    fn the_aligned_merge_decides_lateness_not_the_delivery_order() {
        // Partition 0 runs far ahead; partition 1 starts at 120 s. The
        // source delivers partition 0 entirely first, but the merge replays
        // partition 1's early events before partition 0's clock moves on, so
        // they are not late. A genuinely late event (at 200 s, after 400 s
        // on its own partition) is.
        let mut p1: Vec<String> = (0..15)
            .map(|i| ev(&format!("p1-{i}"), "v", "1", 120_000 + i * 20_000))
            .collect();
        p1.push(ev("p1-late", "v", "1", 200_000));
        let mut src = Mem::new(vec![
            (0..40)
                .map(|i| ev(&format!("p0-{i}"), "u", "1", 100_000 + i * 10_000))
                .collect(),
            p1,
        ]);
        let (rows, stats) = recompute(&mut src, SPEC, 10_000).unwrap();
        assert_eq!(stats.anomalies.get("late_event"), Some(&1));
        assert_eq!(stats.accepted, 55);
        let w = rows.iter().find(|r| r.window_start == 120).unwrap();
        assert_eq!((w.order_cnt, w.user_cnt), (9, 2));
    }

    #[test]
    fn late_copies_of_accepted_events_are_late_not_duplicates() {
        let mut events = vec![ev("a", "u", "1", 110_000)];
        events.extend((1..20).map(|i| ev(&format!("b{i}"), "u", "1", 110_000 + i * 30_000)));
        events.push(ev("a", "u", "1", 110_000));
        let mut src = Mem::new(vec![events]);
        let (_, stats) = recompute(&mut src, SPEC, 0).unwrap();
        assert_eq!(stats.duplicates, 0);
        assert_eq!(stats.anomalies.get("late_event"), Some(&1));
    }

    #[test]
    fn copies_a_window_apart_are_distinct_events_and_wrong_clocks_are_found() {
        let mut src = Mem::new(vec![vec![
            ev("a", "u", "1", 110_000),
            ev("a", "u", "1", 139_999),
            ev("a", "u", "1", 170_000),
            ev("z", "u", "1", 5_000_000),
            ev("b", "u", "1", 171_000),
            ev("c", "u", "1", 172_000),
        ]]);
        let (_, stats) = recompute(&mut src, SPEC, 0).unwrap();
        assert_eq!(
            stats.duplicates, 1,
            "139.999 s is the next slide: the same event"
        );
        assert_eq!(stats.accepted, 4, "170 s is two slides away: another");
        assert_eq!(stats.anomalies.get("implausible_event_time"), Some(&1));
    }

    #[test]
    fn diff_classifies_every_kind_of_difference() {
        let expected = vec![row(0, 1, 1, 1), row(30, 2, 2, 2), row(60, 3, 3, 3)];
        let mut changed = row(30, 2, 2, 2);
        changed.user_cnt = 9;
        changed.version = 7;
        let actual = vec![row(0, 1, 1, 1), changed.clone(), row(90, 4, 4, 4)];
        let report = diff(expected, actual, Stats::default());
        assert!(!report.ok());
        assert_eq!(report.missing, vec![row(60, 3, 3, 3)]);
        assert_eq!(report.unexpected, vec![row(90, 4, 4, 4)]);
        assert_eq!(report.differing, vec![(row(30, 2, 2, 2), changed)]);
        let mut text = Vec::new();
        report.print_side_by_side(&mut text);
        let text = String::from_utf8(text).unwrap();
        assert!(text.contains("DIFFERS: users"), "{text}");
        assert!(text.contains("MISSING from the sink"), "{text}");
        assert!(text.contains("UNEXPECTED in the sink"), "{text}");
        assert!(report.summary().starts_with("verify: 3 windows differ"));

        let same = diff(
            vec![row(0, 1, 1, 1)],
            vec![row(0, 1, 1, 1)],
            Stats::default(),
        );
        assert!(same.ok());
        assert_eq!(same.summary(), "verify: 1 windows, all equal");
    }
}
