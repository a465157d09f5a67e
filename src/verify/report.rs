//! The outcome of `verify`: the recomputed windows beside the sink's, their
//! differences on (window_start, window_end, order_cnt, gmv, user_cnt), and
//! the side-by-side table and summary the CLI prints.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;

use crate::event::format_cents;
use crate::window::WindowRow;

/// What the recomputation saw in the input.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub partitions: usize,
    /// Records read (every line or message, broken or not).
    pub records: u64,
    pub accepted: u64,
    pub duplicates: u64,
    /// Anomalies by reason (SPEC §1 names, `late_event` included).
    pub anomalies: BTreeMap<String, u64>,
    /// Events whose late/not-late verdict lies within `alignment_drift +
    /// out_of_orderness` of their threshold: the job may decide them either
    /// way depending on how its partitions interleaved. 0 for input whose
    /// disorder stays within the bound.
    pub borderline: u64,
}

impl Stats {
    pub fn anomaly_total(&self) -> u64 {
        self.anomalies.values().sum()
    }
}

/// The outcome of [`verify`]: the recomputed windows, the sink's, and their
/// differences on (window_start, window_end, order_cnt, gmv, user_cnt).
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    /// Recomputed from the input, sorted by `window_start`.
    pub expected: Vec<WindowRow>,
    /// The sink's final rows, sorted by `window_start`.
    pub actual: Vec<WindowRow>,
    /// Windows the recomputation has and the sink lacks.
    pub missing: Vec<WindowRow>,
    /// Windows the sink has and the recomputation does not.
    pub unexpected: Vec<WindowRow>,
    /// Windows in both with different figures: (expected, actual).
    pub differing: Vec<(WindowRow, WindowRow)>,
    /// The grouped rows recomputed, and the sink's (with orders), sorted
    /// by key; empty without groupings.
    pub grouped_expected: Vec<WindowRow>,
    pub grouped_actual: Vec<WindowRow>,
    /// Grouped rows the recomputation has and the sink lacks, the other
    /// way round, and in both with different figures (expected, actual).
    pub grouped_missing: Vec<WindowRow>,
    pub grouped_unexpected: Vec<WindowRow>,
    pub grouped_differing: Vec<(WindowRow, WindowRow)>,
    /// The job's watermark (epoch ms) when it stopped before the end of its
    /// input, and the windows (totals and grouped) the recomputation has
    /// and the sink lacks that end after it: not emitted yet, rightly, so
    /// not compared. See [`VerifyReport::set_aside_open`].
    pub job_watermark_ms: Option<i64>,
    pub open: Vec<WindowRow>,
    pub grouped_open: Vec<WindowRow>,
    pub records: u64,
    pub accepted: u64,
    pub duplicates: u64,
    pub anomalies: BTreeMap<String, u64>,
    /// See [`Stats::borderline`].
    pub borderline: u64,
}

impl VerifyReport {
    /// True when the sink holds exactly the recomputed windows.
    pub fn ok(&self) -> bool {
        self.differences() == 0 && self.grouped_differences() == 0
    }

    /// Takes a job that stopped before the end of its input (its watermark
    /// `watermark_ms`, epoch ms, below +inf) into account: a window is
    /// emitted when the watermark reaches its end, so the missing windows
    /// that end after it are not closed yet and move from `missing` to
    /// `open` (and grouped ones likewise). A window the sink lacks that
    /// ends at or before the watermark stays missing, and so does one whose
    /// start (epoch s) is in `delivered`: the job emitted it (a bounded
    /// run's end emits every window) and the sink acknowledged it.
    pub fn set_aside_open(&mut self, watermark_ms: i64, delivered: &BTreeSet<i64>) {
        let closed = |r: &WindowRow| {
            r.window_end.saturating_mul(1000) <= watermark_ms || delivered.contains(&r.window_start)
        };
        let (missing, open) = std::mem::take(&mut self.missing)
            .into_iter()
            .partition(closed);
        let (g_missing, g_open) = std::mem::take(&mut self.grouped_missing)
            .into_iter()
            .partition(closed);
        (self.missing, self.open) = (missing, open);
        (self.grouped_missing, self.grouped_open) = (g_missing, g_open);
        self.job_watermark_ms = Some(watermark_ms);
    }

    /// Windows that differ in any way (missing, unexpected or other figures).
    pub fn differences(&self) -> usize {
        self.missing.len() + self.unexpected.len() + self.differing.len()
    }

    /// Grouped rows that differ in any way.
    pub fn grouped_differences(&self) -> usize {
        self.grouped_missing.len() + self.grouped_unexpected.len() + self.grouped_differing.len()
    }

    /// `verify: N windows, all equal` or `verify: D windows differ (...)`.
    pub fn summary(&self) -> String {
        let grouped = if self.grouped_expected.is_empty() && self.grouped_actual.is_empty() {
            String::new()
        } else if self.grouped_differences() == 0 {
            format!(
                "; {} grouped rows, all equal",
                self.grouped_expected.len() - self.grouped_open.len()
            )
        } else {
            format!(
                "; {} grouped rows differ ({} missing from the sink, {} unexpected in the sink, {} with other figures; {} recomputed, {} in the sink)",
                self.grouped_differences(),
                self.grouped_missing.len(),
                self.grouped_unexpected.len(),
                self.grouped_differing.len(),
                self.grouped_expected.len(),
                self.grouped_actual.len()
            )
        };
        let open = match self.job_watermark_ms {
            Some(w) if !self.open.is_empty() || !self.grouped_open.is_empty() => format!(
                "; {} windows{} end after the job's watermark {} and are not emitted yet (the \
                 job stopped before the end of its input; it writes them when it runs on): not \
                 compared",
                self.open.len(),
                match self.grouped_open.len() {
                    0 => String::new(),
                    n => format!(" and {n} grouped rows"),
                },
                crate::telemetry::format_watermark(w)
            ),
            _ => String::new(),
        };
        format!("{}{grouped}{open}", self.totals_summary())
    }

    fn totals_summary(&self) -> String {
        if self.differences() == 0 {
            format!(
                "verify: {} windows, all equal",
                self.expected.len() - self.open.len()
            )
        } else {
            format!(
                "verify: {} windows differ ({} missing from the sink, {} unexpected in the sink, {} with other figures; {} recomputed, {} in the sink)",
                self.differences(),
                self.missing.len(),
                self.unexpected.len(),
                self.differing.len(),
                self.expected.len(),
                self.actual.len()
            )
        }
    }

    /// A table, one line per window (union of both sides, by start): the
    /// sink's figures next to the recomputed ones, and a mark naming what
    /// differs. Then one line about the input. Write errors are ignored (a
    /// closed pipe must not turn a verdict into a panic).
    pub fn print_side_by_side(&self, out: &mut impl Write) {
        let _ = self.write_side_by_side(out);
    }

    fn write_side_by_side(&self, out: &mut impl Write) -> std::io::Result<()> {
        const FIG: usize = 10 + 1 + 16 + 1 + 8; // orders gmv users
        writeln!(
            out,
            "{:<21} | {:^FIG$} | {:^FIG$} |",
            "", "sink", "recomputed from the input"
        )?;
        writeln!(
            out,
            "{:<21} | {:>10} {:>16} {:>8} | {:>10} {:>16} {:>8} |",
            "window_start (UTC)", "orders", "gmv", "users", "orders", "gmv", "users"
        )?;
        writeln!(out, "{}", "-".repeat(21 + 3 + FIG + 3 + FIG + 2))?;

        let sink: BTreeMap<i64, &WindowRow> =
            self.actual.iter().map(|r| (r.window_start, r)).collect();
        let model: BTreeMap<i64, &WindowRow> =
            self.expected.iter().map(|r| (r.window_start, r)).collect();
        let starts: BTreeSet<i64> = sink.keys().chain(model.keys()).copied().collect();
        let figures = |r: Option<&&WindowRow>| match r {
            Some(r) => format!(
                "{:>10} {:>16} {:>8}",
                r.order_cnt,
                format_cents(r.gmv_cents),
                r.user_cnt
            ),
            None => format!("{:>10} {:>16} {:>8}", "-", "-", "-"),
        };
        for start in starts {
            let (a, e) = (sink.get(&start), model.get(&start));
            let open =
                e.is_some_and(|e| self.open.iter().any(|o| o.window_start == e.window_start));
            let mark = if a.is_none() && open {
                "   (not emitted yet: ends after the job's watermark)".to_string()
            } else {
                difference_mark(a.copied(), e.copied())
            };
            writeln!(
                out,
                "{:<21} | {} | {} |{}",
                crate::time::format_rfc3339_s(start),
                figures(a),
                figures(e),
                mark
            )?;
        }
        writeln!(out, "{}", "-".repeat(21 + 3 + FIG + 3 + FIG + 2))?;
        self.write_grouped(out)?;
        let anomalies: u64 = self.anomalies.values().sum();
        let reasons = self
            .anomalies
            .iter()
            .map(|(r, n)| format!("{r} {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        writeln!(
            out,
            "input: {} records: {} accepted, {} duplicates, {} anomalies{}",
            self.records,
            self.accepted,
            self.duplicates,
            anomalies,
            if reasons.is_empty() {
                String::new()
            } else {
                format!(" ({reasons})")
            }
        )?;
        if self.borderline > 0 {
            writeln!(
                out,
                "note: {} events are within alignment_drift + out_of_orderness of their lateness threshold; \
                 whether they count depends on how partitions interleave, in any event-time system",
                self.borderline
            )?;
        }
        Ok(())
    }
}

impl VerifyReport {
    /// One line per grouped row that differs (two for other figures).
    fn write_grouped(&self, out: &mut impl Write) -> std::io::Result<()> {
        for r in &self.grouped_missing {
            writeln!(out, "grouped, MISSING from the sink:  {}", r.result_json())?;
        }
        for r in &self.grouped_unexpected {
            writeln!(out, "grouped, UNEXPECTED in the sink: {}", r.result_json())?;
        }
        for (e, a) in &self.grouped_differing {
            writeln!(out, "grouped, DIFFERS: sink {}", a.result_json())?;
            writeln!(out, "        recomputed from the input {}", e.result_json())?;
        }
        Ok(())
    }
}

/// What the side-by-side table says after a window's two rows.
fn difference_mark(sink: Option<&WindowRow>, model: Option<&WindowRow>) -> String {
    match (sink, model) {
        (Some(a), Some(e)) => {
            let what: Vec<&str> = [
                (a.order_cnt != e.order_cnt, "orders"),
                (a.gmv_cents != e.gmv_cents, "gmv"),
                (a.user_cnt != e.user_cnt, "users"),
                (a.window_end != e.window_end, "window_end"),
            ]
            .into_iter()
            .filter_map(|(differs, name)| differs.then_some(name))
            .collect();
            if what.is_empty() {
                String::new()
            } else {
                format!(" <<< DIFFERS: {}", what.join(", "))
            }
        }
        (None, Some(_)) => " <<< MISSING from the sink".to_string(),
        (Some(_), None) => " <<< UNEXPECTED in the sink".to_string(),
        (None, None) => String::new(),
    }
}

fn same_figures(a: &WindowRow, b: &WindowRow) -> bool {
    (
        a.window_start,
        a.window_end,
        a.order_cnt,
        a.gmv_cents,
        a.user_cnt,
    ) == (
        b.window_start,
        b.window_end,
        b.order_cnt,
        b.gmv_cents,
        b.user_cnt,
    )
}

/// The comparison behind [`verify`], for callers that have both sides.
pub fn diff(expected: Vec<WindowRow>, actual: Vec<WindowRow>, stats: Stats) -> VerifyReport {
    let by_start: BTreeMap<i64, &WindowRow> = actual.iter().map(|r| (r.window_start, r)).collect();
    let expected_starts: BTreeSet<i64> = expected.iter().map(|r| r.window_start).collect();
    let mut missing = Vec::new();
    let mut differing = Vec::new();
    for e in &expected {
        match by_start.get(&e.window_start) {
            None => missing.push(e.clone()),
            Some(a) if !same_figures(a, e) => differing.push((e.clone(), (*a).clone())),
            Some(_) => {}
        }
    }
    let unexpected = actual
        .iter()
        .filter(|a| !expected_starts.contains(&a.window_start))
        .cloned()
        .collect();
    VerifyReport {
        missing,
        unexpected,
        differing,
        records: stats.records,
        accepted: stats.accepted,
        duplicates: stats.duplicates,
        anomalies: stats.anomalies,
        borderline: stats.borderline,
        expected,
        actual,
        ..VerifyReport::default()
    }
}
