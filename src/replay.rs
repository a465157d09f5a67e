//! `streamforge replay`: recompute the windows of a past time range from the
//! source and upsert them into the sink, so that they win over what is there.
//!
//! # What is read
//!
//! The windows to recompute are those overlapping `[from, to)`: starts `s`
//! (multiples of the slide) with `from - size < s < to`. Every partition is
//! read from the first record whose Kafka timestamp is at or after
//! `first_start - out_of_orderness` (offsets-for-times) to the end of the
//! partition as it stands when the replay starts. Reading to the end, not
//! just past `to`, is what picks up records that arrived late, including
//! anomalies repaired and produced again (`streamforge anomalies replay`).
//!
//! Assumption, checked: a record's Kafka timestamp is not earlier than its
//! event time minus the out-of-orderness bound. That holds when producers
//! stamp records when they send them after the event happened (Kafka's
//! default `CreateTime`) or with the event time. The replay checks every
//! record it reads; if one breaks the rule (a producer stamping before the
//! event time, e.g. simulated events far ahead of the clock), the start found
//! by timestamp cannot be trusted and the replay reads every partition from
//! its first record instead, and says so. `--from-earliest` does that from
//! the start.
//!
//! # How it counts
//!
//! With its own in-memory state, never the live job's state directory: the
//! job's engine in its replay mode ([`Engine::replaying`]): the same parsing,
//! cleaning, `event_id` deduplication and window code as the job, but a
//! watermark that holds until the end of the input and so no lateness: every
//! valid event of the range counts, whenever it arrived. A record stamped
//! too far ahead of its Kafka timestamp is `implausible_event_time` here too;
//! the job's other wrong-clock rule needs the stream's order and is not
//! applied. For input whose disorder stays within the bound this
//! is exactly what the live job computed; where events came later than the
//! allowed lateness (the live job's `late_event` anomalies), the replay counts
//! them in. That is the point of a replay.
//!
//! # Which windows are written
//!
//! Only windows the replay saw whole:
//! * *complete at the start*: when retention already deleted the beginning of
//!   a partition, windows that may have held deleted records are skipped;
//! * *closed at the end*: a window the live job may still update (its end plus
//!   the allowed lateness is past the input's watermark, the smallest of the
//!   partitions' highest event times minus the bound) is refused, with a
//!   message; replay it once the stream has moved on, or pass `--allow-open`
//!   when no live job runs on the input (stopped, or a finished bounded run).
//!
//! # Versions
//!
//! Rows are written with version `replay_started_ms << 20` (or one above
//! the highest version in the sink, if that is larger), so a replay wins over
//! every row the live job writes (versions count emissions of one window and
//! stay far below 2^20) and a later replay wins over an earlier one. Writing
//! the same replay twice gives the same values: a replay is idempotent.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tracing::{info, warn};

use crate::engine::{Engine, Verdict};
use crate::job::TimeGuard;
use crate::sink::{Backoff, Sink, SinkError};
use crate::source::{PartitionState, RecordBatch, RecordMeta, Source};
use crate::window::{WindowRow, WindowSpec};

/// Live versions stay below this; replay versions are multiples of it.
pub const REPLAY_VERSION_UNIT: u64 = crate::window::LIVE_VERSION_LIMIT;

/// Records read before each partition's start, to check it.
const PROBE: u64 = 10_000;

/// How many times a failing sink write is retried before the replay gives up.
const WRITE_ATTEMPTS: u32 = 8;

pub struct ReplayOptions {
    /// Epoch ms, inclusive.
    pub from_ms: i64,
    /// Epoch ms, exclusive.
    pub to_ms: i64,
    /// Print the differences; write nothing.
    pub dry_run: bool,
    /// The job's wrong-clock rules (only the record-timestamp one applies).
    pub time_guard: TimeGuard,
    /// Read every partition from its first record.
    pub from_earliest: bool,
    /// A progress line on stderr.
    pub progress: bool,
    /// The live job is stopped or finished: also write windows it could
    /// still have updated.
    pub allow_open: bool,
    /// The job's groupings (`dimensions`): their rows are recomputed and
    /// written with the totals of each window written.
    pub groupings: crate::dims::GroupingSpec,
}

/// The window starts (ms) a replay of `[from, to)` recomputes: every window
/// overlapping the range.
pub fn window_range(spec: &WindowSpec, from_ms: i64, to_ms: i64) -> (i64, i64) {
    let first = (from_ms - spec.size_ms).div_euclid(spec.slide_ms) * spec.slide_ms + spec.slide_ms;
    let last = (to_ms - 1).div_euclid(spec.slide_ms) * spec.slide_ms;
    (first, last)
}

/// Where the source must start: the records the first window needs, with the
/// out-of-orderness bound as margin.
pub fn read_from_ms(spec: &WindowSpec, from_ms: i64, to_ms: i64) -> i64 {
    window_range(spec, from_ms, to_ms).0 - spec.out_of_orderness_ms
}

#[derive(Debug, Default)]
pub struct PartitionRead {
    pub start: u64,
    pub next: u64,
    pub log_start: u64,
    /// Event time of the first valid event read.
    pub first_event_ms: Option<i64>,
    /// Highest event time of the valid events read.
    pub max_event_ms: Option<i64>,
    /// Valid events whose record timestamp is more than the bound before
    /// their event time: the start found by timestamp cannot be trusted.
    pub stamped_early: u64,
    /// Records read before the start, only to check it.
    pub probed: u64,
    /// Of those, records that belong to the range or break the stamping
    /// rule: the start cannot be trusted.
    pub probe_in_range: u64,
}

#[derive(Debug, Default)]
pub struct ReplayReport {
    pub records: u64,
    /// Valid events inside the recomputed windows' time span.
    pub in_range: u64,
    pub duplicates: u64,
    pub anomalies: BTreeMap<String, u64>,
    pub partitions: BTreeMap<u32, PartitionRead>,
    /// Windows whose values change: the sink's row (if any) and the replay's.
    /// All recomputed windows are written (unless --dry-run), changed or not.
    pub changed: Vec<(Option<WindowRow>, WindowRow)>,
    pub unchanged: usize,
    /// Grouped rows (of the windows written) whose values change: the
    /// sink's row (if any) and the replay's; a row the replay does not
    /// have any more is written as a retraction (zero counts).
    pub grouped_changed: Vec<(Option<WindowRow>, WindowRow)>,
    pub grouped_unchanged: usize,
    /// Windows skipped because the input did not hold all their records.
    pub incomplete: Vec<i64>,
    /// Windows skipped because the live job may still update them.
    pub open: Vec<i64>,
    /// Rows in the sink, inside the range, for windows the replay found empty.
    pub stale: Vec<WindowRow>,
    pub version: u64,
    pub written: bool,
    /// Every partition was read from its first record.
    pub read_from_earliest: bool,
    pub elapsed: Duration,
}

impl ReplayReport {
    pub fn summary(&self) -> String {
        let anomalies: u64 = self.anomalies.values().sum();
        format!(
            "replay: {} records read, {} events in range, {} duplicates, {} anomalies; windows: {} changed, {} unchanged, {} skipped (incomplete at the start), {} refused (still open); grouped rows: {} changed, {} unchanged; {} in {:.1?}",
            self.records,
            self.in_range,
            self.duplicates,
            anomalies,
            self.changed.len(),
            self.unchanged,
            self.incomplete.len(),
            self.open.len(),
            self.grouped_changed.len(),
            self.grouped_unchanged,
            if self.written {
                format!("written with version {}", self.version)
            } else {
                "nothing written (dry run)".to_string()
            },
            self.elapsed
        )
    }

    /// One line per window (and grouped row) that changes: the sink's row,
    /// then the replay's.
    pub fn print_diff(&self, out: &mut impl Write) -> std::io::Result<()> {
        for (old, new) in self.changed.iter().chain(&self.grouped_changed) {
            match old {
                Some(old) => writeln!(out, "- {}", old.result_json())?,
                None => writeln!(out, "- (no row) window_start {}", new.window_start)?,
            }
            writeln!(out, "+ {}", new.result_json())?;
        }
        Ok(())
    }
}

/// Recomputes the windows of `[from, to)` from `source` and upserts them into
/// `sink`. The source must be positioned by its configuration (for Kafka,
/// `start` at [`read_from_ms`]); it is read bounded, to its current end.
pub fn replay(
    spec: &WindowSpec,
    opts: &ReplayOptions,
    open: &mut dyn FnMut(bool) -> anyhow::Result<Box<dyn Source>>,
    sink: &mut dyn Sink,
) -> anyhow::Result<ReplayReport> {
    spec.validate()
        .map_err(|e| anyhow::anyhow!("window settings: {e}"))?;
    if opts.from_ms >= opts.to_ms {
        bail!(
            "--from ({}) must be before --to ({})",
            crate::time::format_rfc3339_ms(opts.from_ms),
            crate::time::format_rfc3339_ms(opts.to_ms)
        );
    }
    let started = Instant::now();
    let replay_started_ms = crate::time::now_ms();
    let (first, last) = window_range(spec, opts.from_ms, opts.to_ms);
    let (mut report, mut engine) = read_trusting_the_start(spec, opts, open)?;

    let mut rows = Vec::new();
    engine.end_of_input(replay_started_ms / 1000, &mut rows);
    let (grouped, totals): (Vec<WindowRow>, Vec<WindowRow>) = rows
        .into_iter()
        .filter(|r| r.window_start * 1000 >= first && r.window_start * 1000 <= last)
        .partition(|r| r.group.is_some());
    let recomputed: BTreeMap<i64, WindowRow> =
        totals.into_iter().map(|r| (r.window_start, r)).collect();
    let described = sink.describe();
    let cannot_read =
        |e: SinkError| anyhow::anyhow!("replay: cannot read the sink ({described}): {e}");
    let existing: BTreeMap<i64, WindowRow> = sink
        .read_final()
        .map_err(cannot_read)?
        .into_iter()
        .map(|r| (r.window_start, r))
        .collect();
    let existing_grouped = sink.read_grouped().map_err(cannot_read)?;
    let highest = existing
        .values()
        .chain(&existing_grouped)
        .map(|r| r.version)
        .max()
        .unwrap_or(0);
    report.version = (replay_started_ms.max(0) as u64 * REPLAY_VERSION_UNIT).max(highest + 1);
    let mut to_write = plan(
        spec,
        opts,
        &mut report,
        &recomputed,
        &existing,
        replay_started_ms,
    );
    let grouped_rows = plan_grouped(&mut report, &to_write, grouped, existing_grouped);
    to_write.extend(grouped_rows);
    if !opts.dry_run && !to_write.is_empty() {
        write_with_retries(sink, &to_write)?;
        report.written = true;
    }
    report.elapsed = started.elapsed();
    info!(
        changed = report.changed.len(),
        unchanged = report.unchanged,
        version = report.version,
        written = report.written,
        "replay finished"
    );
    Ok(report)
}

/// Reads the range from where the configuration starts each partition (by
/// timestamp, or the first record), checking a little before that start;
/// when the records say the start cannot be trusted, reads again from every
/// partition's first record.
fn read_trusting_the_start(
    spec: &WindowSpec,
    opts: &ReplayOptions,
    open: &mut dyn FnMut(bool) -> anyhow::Result<Box<dyn Source>>,
) -> anyhow::Result<(ReplayReport, Engine)> {
    let mut from_earliest = opts.from_earliest;
    loop {
        let (starts, log_starts) = {
            let mut source = open(from_earliest)?;
            let starts = source
                .start(&BTreeMap::new(), true)
                .map_err(|e| anyhow::anyhow!("replay: cannot position the source: {e}"))?;
            let log_starts: BTreeMap<u32, u64> =
                starts.keys().map(|p| (*p, source.log_start(*p))).collect();
            (starts, log_starts)
        };
        let mut source = open(from_earliest)?;
        let (mut report, engine) = read_input(spec, opts, source.as_mut(), &starts, &log_starts)?;
        let suspect: Vec<u32> = report
            .partitions
            .iter()
            .filter(|(_, r)| r.start > r.log_start && (r.stamped_early > 0 || r.probe_in_range > 0))
            .map(|(p, _)| *p)
            .collect();
        if from_earliest || suspect.is_empty() {
            report.read_from_earliest = from_earliest;
            return Ok((report, engine));
        }
        warn!(
            partitions = ?suspect,
            "replay: records carry Kafka timestamps more than the out-of-orderness bound before their event time (or records just before the start belong to the range), so the start found by timestamp cannot be trusted; reading every partition from its first record instead"
        );
        from_earliest = true;
    }
}

/// Which recomputed windows are written: those complete at the start and,
/// unless `--allow-open`, closed at the end; the report says why each other
/// one is not.
fn plan(
    spec: &WindowSpec,
    opts: &ReplayOptions,
    report: &mut ReplayReport,
    recomputed: &BTreeMap<i64, WindowRow>,
    existing: &BTreeMap<i64, WindowRow>,
    replay_started_ms: i64,
) -> Vec<WindowRow> {
    let (first, last) = window_range(spec, opts.from_ms, opts.to_ms);
    let complete_from = complete_from(spec, &report.partitions);
    let closed_before = closed_before(spec, &report.partitions);
    if let Some(cf) = complete_from.filter(|cf| *cf > first) {
        warn!(
            complete_from = %crate::time::format_rfc3339_ms(cf),
            "replay: retention deleted the beginning of a partition; windows starting before this may miss records and are skipped"
        );
    }
    let mut to_write = Vec::new();
    let mut s = first;
    while s <= last {
        let key = s / 1000;
        s += spec.slide_ms;
        let known = recomputed.contains_key(&key) || existing.contains_key(&key);
        if complete_from.is_some_and(|cf| key * 1000 < cf) {
            if known {
                report.incomplete.push(key);
            }
            continue;
        }
        if !opts.allow_open && key * 1000 + spec.size_ms + spec.allowed_lateness_ms > closed_before
        {
            if known {
                report.open.push(key);
            }
            continue;
        }
        let old = existing.get(&key);
        match recomputed.get(&key) {
            Some(new) => {
                if old.is_some_and(|o| same_values(o, new)) {
                    report.unchanged += 1;
                } else {
                    report.changed.push((old.cloned(), new.clone()));
                }
                let mut row = new.clone();
                row.version = report.version;
                row.updated_at = replay_started_ms / 1000;
                to_write.push(row);
            }
            None => {
                if let Some(o) = old {
                    report.stale.push(o.clone());
                }
            }
        }
    }
    warn_about_skipped(report, closed_before);
    to_write
}

/// The grouped rows of the windows `totals` writes, with their version: the
/// recomputed ones, and a retraction (zero counts) for each row the sink
/// holds there that the replay does not have (a value now folded into
/// `other`, or a stale row), so that no stale grouped row outlives a replay.
/// Grouped rows of windows not written are left as they are, like their
/// totals.
fn plan_grouped(
    report: &mut ReplayReport,
    totals: &[WindowRow],
    recomputed: Vec<WindowRow>,
    existing: Vec<WindowRow>,
) -> Vec<WindowRow> {
    use crate::sink::RowKey;
    let written: BTreeMap<i64, &WindowRow> = totals.iter().map(|r| (r.window_start, r)).collect();
    let keyed = |rows: Vec<WindowRow>| -> BTreeMap<RowKey, WindowRow> {
        rows.into_iter()
            .filter(|r| written.contains_key(&r.window_start) && r.order_cnt > 0)
            .map(|r| ((r.window_start, r.group.clone()), r))
            .collect()
    };
    let (recomputed, existing) = (keyed(recomputed), keyed(existing));
    let stamp = |mut row: WindowRow| {
        let total = written[&row.window_start];
        row.version = total.version;
        row.updated_at = total.updated_at;
        row
    };
    let mut out = Vec::new();
    for (key, new) in &recomputed {
        let old = existing.get(key);
        if old.is_some_and(|o| same_values(o, new)) {
            report.grouped_unchanged += 1;
        } else {
            report.grouped_changed.push((old.cloned(), new.clone()));
        }
        out.push(stamp(new.clone()));
    }
    for (key, old) in existing {
        if !recomputed.contains_key(&key) {
            let retraction = stamp(WindowRow {
                order_cnt: 0,
                gmv_cents: 0,
                user_cnt: 0,
                ..old.clone()
            });
            report.grouped_changed.push((Some(old), retraction.clone()));
            out.push(retraction);
        }
    }
    out
}

fn warn_about_skipped(report: &ReplayReport, closed_before: i64) {
    if let (Some(first_open), Some(last_open)) = (report.open.first(), report.open.last()) {
        warn!(
            windows = report.open.len(),
            first = %crate::time::format_rfc3339_s(*first_open),
            last = %crate::time::format_rfc3339_s(*last_open),
            input_watermark = %format_watermark(closed_before),
            "replay: refusing windows the live job may still update (their end plus the allowed lateness is past the input's watermark); replay them once the stream has moved on"
        );
    }
    for row in &report.stale {
        warn!(
            window_start = %crate::time::format_rfc3339_s(row.window_start),
            "replay: the sink holds a row for a window without any valid event in the input; left as is"
        );
    }
}

/// Reads the source from its configured start to its current end into a
/// fresh window state.
/// Reads the source from `starts` to its current end into a fresh window
/// state. Up to [`PROBE`] records before each start are read too, only to
/// check the start (see [`PartitionRead::probe_in_range`]).
fn read_input(
    spec: &WindowSpec,
    opts: &ReplayOptions,
    source: &mut dyn Source,
    starts: &BTreeMap<u32, u64>,
    log_starts: &BTreeMap<u32, u64>,
) -> anyhow::Result<(ReplayReport, Engine)> {
    let (first, last) = window_range(spec, opts.from_ms, opts.to_ms);
    // Events outside [first, last + size) touch no recomputed window.
    let (lo, hi) = (first, last + spec.size_ms);
    let started = Instant::now();
    let mut report = ReplayReport::default();
    let mut resume = BTreeMap::new();
    for (&p, &o) in starts {
        let log_start = log_starts.get(&p).copied().unwrap_or(0);
        resume.insert(p, o.saturating_sub(PROBE).max(log_start));
        report.partitions.insert(
            p,
            PartitionRead {
                start: o,
                next: o,
                log_start,
                ..PartitionRead::default()
            },
        );
    }
    source
        .start(&resume, true)
        .map_err(|e| anyhow::anyhow!("replay: cannot position the source: {e}"))?;
    info!(
        from = %crate::time::format_rfc3339_ms(opts.from_ms),
        to = %crate::time::format_rfc3339_ms(opts.to_ms),
        first_window = %crate::time::format_rfc3339_ms(first),
        last_window = %crate::time::format_rfc3339_ms(last),
        starts = ?starts,
        "replay: reading the source to its current end"
    );

    let mut engine = Engine::replaying(*spec);
    engine.set_groupings(opts.groupings.clone());
    let mut batch = RecordBatch::default();
    let mut last_progress = Instant::now();
    loop {
        let done = (0..source.partition_count() as u32)
            .all(|p| source.state(p) == PartitionState::Finished);
        if done {
            break;
        }
        batch.clear();
        source
            .poll(&mut batch, 4096, Duration::from_millis(200))
            .map_err(|e| anyhow::anyhow!("replay: reading the source failed: {e}"))?;
        for (meta, payload) in batch.iter() {
            read_record(
                spec,
                opts,
                &mut engine,
                &mut report,
                (lo, hi),
                &meta,
                payload,
            );
        }
        if opts.progress && last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            eprint!(
                "\rreplay: {} records read, {} events in range, {:.0?} ",
                report.records,
                report.in_range,
                started.elapsed()
            );
        }
    }
    if opts.progress {
        eprintln!();
    }
    Ok((report, engine))
}

/// One record of the replay's input: a probe before a partition's start
/// (checked, not counted), or a record counted into the engine when its
/// event time touches a recomputed window (`span`, ms).
fn read_record(
    spec: &WindowSpec,
    opts: &ReplayOptions,
    engine: &mut Engine,
    report: &mut ReplayReport,
    span: (i64, i64),
    meta: &RecordMeta,
    payload: &[u8],
) {
    let mut rows = Vec::new();
    let read = report.partitions.entry(meta.partition).or_default();
    read.next = read.next.max(meta.offset + 1);
    let probe = meta.offset < read.start;
    if probe {
        read.probed += 1;
    } else {
        report.records += 1;
    }
    let prepared = opts
        .time_guard
        .against_record_time(engine.parse(payload), meta.timestamp_ms);
    // Stamped more than the bound before its event time: a start found by
    // timestamp cannot be trusted.
    let stamped_early = |t: i64| {
        meta.timestamp_ms != i64::MIN
            && t > meta.timestamp_ms.saturating_add(spec.out_of_orderness_ms)
    };
    let Some(t) = prepared.event_time_ms() else {
        if !probe {
            if let Verdict::Anomaly(reason, _) = engine.apply(0, prepared, 0, &mut rows) {
                *report
                    .anomalies
                    .entry(reason.as_str().to_string())
                    .or_default() += 1;
            }
        }
        return;
    };
    if probe {
        // Before the start: it must not belong to the range, and its stamp
        // must follow the rule.
        if t >= span.0 || stamped_early(t) {
            read.probe_in_range += 1;
        }
        return;
    }
    read.first_event_ms.get_or_insert(t);
    read.max_event_ms = Some(read.max_event_ms.map_or(t, |m| m.max(t)));
    if stamped_early(t) {
        read.stamped_early += 1;
    }
    if t < span.0 || t >= span.1 {
        return;
    }
    match engine.apply(0, prepared, 0, &mut rows) {
        Verdict::Accepted => report.in_range += 1,
        Verdict::Duplicate => report.duplicates += 1,
        Verdict::Anomaly(..) => {}
    }
}

/// The earliest time (ms) from which windows are complete, when retention
/// deleted the beginning of a partition we start at: records deleted from
/// that partition have event times up to its first remaining record's plus
/// the bound. `None` when nothing was deleted where we read.
fn complete_from(spec: &WindowSpec, parts: &BTreeMap<u32, PartitionRead>) -> Option<i64> {
    parts
        .values()
        .filter(|p| p.start == p.log_start && p.log_start > 0)
        .map(|p| {
            p.first_event_ms
                .map_or(i64::MAX, |t| t + spec.out_of_orderness_ms + 1)
        })
        .max()
}

/// The input's watermark after the read: the smallest over partitions that
/// hold data of their highest event time minus the bound. A window whose end
/// plus the allowed lateness is past it may still change in the live job.
fn closed_before(spec: &WindowSpec, parts: &BTreeMap<u32, PartitionRead>) -> i64 {
    parts
        .values()
        .filter_map(|p| p.max_event_ms)
        .min()
        .map_or(i64::MIN, |m| m.saturating_sub(spec.out_of_orderness_ms))
}

fn format_watermark(ms: i64) -> String {
    if ms == i64::MIN {
        "none (no valid event read)".to_string()
    } else {
        crate::time::format_rfc3339_ms(ms)
    }
}

fn same_values(a: &WindowRow, b: &WindowRow) -> bool {
    a.window_end == b.window_end
        && a.order_cnt == b.order_cnt
        && a.gmv_cents == b.gmv_cents
        && a.user_cnt == b.user_cnt
}

fn write_with_retries(sink: &mut dyn Sink, rows: &[WindowRow]) -> anyhow::Result<()> {
    let backoff = Backoff {
        initial: Duration::from_millis(200),
        max: Duration::from_secs(10),
    };
    for chunk in rows.chunks(10_000) {
        let mut attempt = 0;
        loop {
            match sink.write(chunk) {
                Ok(()) => break,
                Err(SinkError::Retryable(e)) if attempt + 1 < WRITE_ATTEMPTS => {
                    let wait = backoff.delay(attempt);
                    warn!(error = %e, attempt = attempt + 1, retry_in = ?wait, "replay: sink write failed; retrying");
                    std::thread::sleep(wait);
                    attempt += 1;
                }
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!(
                            "replay: writing {} rows to {} failed; nothing is lost: run the same replay again",
                            chunk.len(),
                            sink.describe()
                        )
                    })
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: WindowSpec = WindowSpec::DEFAULT;

    #[test]
    fn the_range_covers_every_window_overlapping_it() {
        // [10:00:00, 10:01:00): windows starting 09:59:30, 10:00:00, 10:00:30.
        let from = 36_000_000;
        let (first, last) = window_range(&SPEC, from, from + 60_000);
        assert_eq!(first, from - 30_000);
        assert_eq!(last, from + 30_000);
        // Unaligned: [10:00:10, 10:00:20) lies in windows 09:59:30 and 10:00:00.
        let (first, last) = window_range(&SPEC, from + 10_000, from + 20_000);
        assert_eq!((first, last), (from - 30_000, from));
        for s in [first, last] {
            assert!(s < from + 20_000 && s + SPEC.size_ms > from + 10_000);
        }
    }

    #[test]
    fn the_read_starts_one_bound_before_the_first_window() {
        let from = 36_000_000;
        assert_eq!(
            read_from_ms(&SPEC, from, from + 60_000),
            from - 30_000 - 5_000
        );
    }

    #[test]
    fn retention_makes_early_windows_incomplete_only_where_it_deleted() {
        let mut parts = BTreeMap::new();
        parts.insert(
            0,
            PartitionRead {
                start: 0,
                log_start: 0,
                first_event_ms: Some(1_000),
                ..Default::default()
            },
        );
        assert_eq!(complete_from(&SPEC, &parts), None);
        parts.insert(
            1,
            PartitionRead {
                start: 7,
                log_start: 7,
                first_event_ms: Some(100_000),
                ..Default::default()
            },
        );
        assert_eq!(complete_from(&SPEC, &parts), Some(105_001));
    }

    #[test]
    fn the_input_watermark_is_the_slowest_partition_minus_the_bound() {
        let mut parts = BTreeMap::new();
        assert_eq!(closed_before(&SPEC, &parts), i64::MIN);
        for (p, max) in [(0, Some(200_000)), (1, Some(150_000)), (2, None)] {
            parts.insert(
                p,
                PartitionRead {
                    max_event_ms: max,
                    ..Default::default()
                },
            );
        }
        assert_eq!(closed_before(&SPEC, &parts), 145_000);
    }
}
