//! The invariants, checked against the model.
//!
//! After the final clean bounded run of every schedule:
//! 1. the sink's rows have the model's figures, window by window (versions
//!    are not compared: they count emissions);
//! 2. the anomaly log holds the model's anomalies, each exactly once;
//! 3. nothing read is left unaccounted for: the final checkpoint's offsets
//!    are past every record (but a last one waiting for confirmation), and
//!    the final run counted each record it read as the model's fate says;
//! 4. versions never go down within a process, one version one content
//!    (checked by `sink` as rows are written);
//! 5. pending output is bounded (checked by `crash` at each commit) and
//!    none is left once a run has drained.
//!
//! And at the end of a live phase that ends in a quiet period, liveness:
//! every window the watermark must have passed is in the sink with the
//! figures of what has arrived.

use std::collections::BTreeMap;
use std::path::Path;

use streamforge::checkpoint::Checkpoint;
use streamforge::engine::Counters;
use streamforge::window::WindowRow;

use crate::model::{AnomalyKey, Figures, Model};
use crate::plan::Settings;
use crate::world::Log;

pub(crate) type Row = (u64, u128, u64);

pub(crate) fn figures(f: &Figures) -> Row {
    (f.order_cnt, f.gmv_cents, f.users.len() as u64)
}

fn row_figures(r: &WindowRow) -> Row {
    (r.order_cnt, r.gmv_cents, r.user_cnt)
}

/// Where two tables differ, briefly.
pub(crate) fn diff(want: &BTreeMap<i64, Row>, got: &BTreeMap<i64, Row>) -> Option<String> {
    let mut out = Vec::new();
    for (start, w) in want {
        match got.get(start) {
            Some(g) if g == w => {}
            Some(g) => out.push(format!("window {start}: want {w:?}, got {g:?}")),
            None => out.push(format!("window {start}: want {w:?}, missing")),
        }
    }
    for (start, g) in got {
        if !want.contains_key(start) {
            out.push(format!("window {start}: unexpected {g:?}"));
        }
    }
    if out.is_empty() {
        return None;
    }
    let more = out.len().saturating_sub(4);
    out.truncate(4);
    if more > 0 {
        out.push(format!("... and {more} more"));
    }
    Some(out.join("; "))
}

pub fn final_rows(model: &Model, table: &BTreeMap<i64, WindowRow>) -> Option<String> {
    let want: BTreeMap<i64, Row> = model
        .windows(|_, _| true)
        .iter()
        .map(|(s, f)| (*s, figures(f)))
        .collect();
    let got: BTreeMap<i64, Row> = table.iter().map(|(s, r)| (*s, row_figures(r))).collect();
    diff(&want, &got).map(|d| format!("sink rows differ from the model: {d}"))
}

pub fn anomaly_log(model: &Model, path: &Path) -> Option<String> {
    let records = match streamforge::anomaly_log::read_all(path) {
        Ok(r) => r,
        Err(e) => return Some(format!("cannot read the anomaly log: {e}")),
    };
    let mut got: Vec<AnomalyKey> = Vec::new();
    for r in records {
        let Ok(payload) = r.payload_bytes() else {
            return Some(format!(
                "anomaly log: bad payload encoding at offset {}",
                r.offset
            ));
        };
        if r.source != "orders" {
            return Some(format!("anomaly log: source {:?}", r.source));
        }
        got.push((r.reason, r.partition, r.offset, payload, r.event_time_ms));
    }
    got.sort();
    if got == model.anomalies {
        return None;
    }
    let missing: Vec<_> = model
        .anomalies
        .iter()
        .filter(|a| !got.contains(a))
        .take(3)
        .collect();
    let mut seen = std::collections::BTreeMap::new();
    for a in &got {
        *seen.entry(a).or_insert(0) += 1;
    }
    let extra: Vec<_> = seen
        .iter()
        .filter(|(a, n)| **n > 1 || !model.anomalies.contains(a))
        .take(3)
        .map(|(a, n)| {
            format!(
                "{}x {:?}",
                n,
                (&a.0, a.1, a.2, String::from_utf8_lossy(&a.3))
            )
        })
        .collect();
    let missing: Vec<_> = missing
        .iter()
        .map(|a| format!("{:?}", (&a.0, a.1, a.2, String::from_utf8_lossy(&a.3))))
        .collect();
    Some(format!(
        "anomaly log: {} lines, model {}; missing {missing:?}; unexpected or repeated {extra:?}",
        got.len(),
        model.anomalies.len()
    ))
}

/// The final checkpoint is past every record the job reads, but those it
/// holds at the end behind a valid event waiting for confirmation (and
/// decides at the end, which is not state, see docs/semantics.md): then it
/// resumes right after the record read before that event.
pub fn final_offsets(model: &Model, cp: &Checkpoint, starts: &[u64]) -> Option<String> {
    for (p, start) in starts.iter().enumerate() {
        let got = cp.offsets.get(&(p as u32)).copied();
        let end = model.read_end(p).map_or(*start, |e| e.max(*start));
        let after = |o: u64| {
            model
                .read_end_before(p, o)
                .map_or(*start, |e| e.max(*start))
        };
        let held =
            |o: u64| o >= *start && model.times[p][o as usize].is_some() && Some(after(o)) == got;
        if got != Some(end) && !(*start..end).any(held) {
            return Some(format!(
                "partition {p}: the final checkpoint resumes at {got:?}, want {end} or before a valid event"
            ));
        }
    }
    None
}

/// The final run counted each record it read as the model says.
pub fn final_counts(model: &Model, from: &[u64], counters: &Counters) -> Option<String> {
    let mut want = crate::model::Counts::default();
    for (p, from) in from.iter().enumerate() {
        let c = model.counts(p, *from, u64::MAX);
        want.read += c.read;
        want.accepted += c.accepted;
        want.duplicates += c.duplicates;
        want.anomalies += c.anomalies;
    }
    let got = (
        counters.read,
        counters.accepted,
        counters.duplicates,
        counters.anomalies,
    );
    let w = (want.read, want.accepted, want.duplicates, want.anomalies);
    (got != w).then(|| {
        format!("the final run counted (read, accepted, duplicates, anomalies) {got:?}, the model {w:?}")
    })
}

/// The watermark every live job must have reached after a quiet period
/// (`Settings::quiet_ms`), a lower bound. Every partition is idle, so the
/// job's watermark is its highest partition clock minus the bound, capped
/// below each record still waiting for confirmation. Each partition's valid
/// records are taken in offset order, as the job takes them: one within
/// `max_time_jump` of the partition's clock goes through; a jump goes
/// through when the records after it confirm it ([`vote`]), or when the
/// rest reaches its time minus `max_time_jump` with none after it lower
/// than that; else the partition stops there, and caps the watermark at
/// its lowest remaining time minus `max_time_jump` and the bound (below
/// any cap the job can hold for it). Wherever the job may go further, this
/// does not: the job also hears records the model finds invalid (wrong
/// clocks far ahead, which only agree), and compares a jump with the
/// watermark too, not only with its partition's clock.
fn quiet_watermark(s: &Settings, model: &Model, arrived: &[usize]) -> i64 {
    use crate::model::Fate;
    let jump = s.max_jump_ms();
    // Per partition, each valid record read: its time, and whether it
    // moves the partition's clock (a late one does not).
    let parts: Vec<Vec<(i64, bool)>> = arrived
        .iter()
        .enumerate()
        .map(|(p, n)| {
            let moves = |o: usize| matches!(model.fates[p][o], Fate::Accepted | Fate::Duplicate);
            (0..*n)
                .filter_map(|o| model.times[p][o].map(|t| (t, moves(o))))
                .collect()
        })
        .collect();
    let mut next = vec![0; parts.len()];
    let mut clock = vec![i64::MIN; parts.len()];
    let mut frontier = i64::MIN;
    loop {
        let reached = capped(s, &parts, &next, frontier);
        let mut went_on = false;
        for (p, recs) in parts.iter().enumerate() {
            while let Some(&(t, moves)) = recs.get(next[p]) {
                let later = &recs[next[p] + 1..];
                let confirmed = if !moves || clock[p] != i64::MIN && t <= clock[p] + jump {
                    true
                } else if let Some(confirmed) = vote(t, clock[p], later, jump) {
                    confirmed
                } else if reached != i64::MIN
                    && t - jump <= reached
                    && later.iter().all(|(v, _)| *v >= t - jump)
                {
                    true
                } else {
                    break;
                };
                if confirmed && moves {
                    clock[p] = clock[p].max(t);
                    frontier = frontier.max(t - s.bound_ms);
                }
                next[p] += 1;
                went_on = true;
            }
        }
        if !went_on {
            return capped(s, &parts, &next, frontier);
        }
    }
}

/// `frontier` capped below the records where partitions stopped.
fn capped(s: &Settings, parts: &[Vec<(i64, bool)>], next: &[usize], frontier: i64) -> i64 {
    parts
        .iter()
        .zip(next)
        .flat_map(|(recs, n)| recs[*n..].iter())
        .map(|(t, _)| t - s.max_jump_ms() - s.bound_ms)
        .fold(frontier, i64::min)
}

/// The verdict of the records after a jump to `t` (docs/semantics.md,
/// *Wrong clocks*), given the partition's clock `own` (`i64::MIN`: none):
/// `Some(true)` confirmed, `Some(false)` rejected, `None` still waiting.
/// Those more than `jump` behind `own` do not vote; the others agree when
/// at most `jump` below `t`. Five more agreeing than not confirm, two
/// more not than agreeing reject, after 64 the side that leads decides;
/// an agreeing one more than `jump` above `t` while the agreeing lead
/// confirms, and so does the first agreeing one after a partition's first
/// record.
fn vote(t: i64, own: i64, later: &[(i64, bool)], jump: i64) -> Option<bool> {
    let (mut lead, mut seen) = (0, 0);
    for (v, _) in later {
        if own != i64::MIN && *v < own - jump {
            continue;
        }
        let agrees = *v >= t - jump;
        lead += if agrees { 1 } else { -1 };
        seen += 1;
        if agrees && (own == i64::MIN || lead >= 5 || lead > 0 && *v > t + jump) {
            return Some(true);
        }
        if lead <= -2 {
            return Some(false);
        }
        if seen >= 64 {
            return Some(lead > 0);
        }
    }
    None
}

/// Liveness at the end of a quiet live phase (see the module docs).
pub fn liveness(
    s: &Settings,
    model: &Model,
    log: &Log,
    table: &BTreeMap<i64, WindowRow>,
    now_ms: u64,
) -> Option<String> {
    let arrived: Vec<usize> = log
        .parts
        .iter()
        .enumerate()
        .map(|(p, part)| {
            if part.created_ms <= now_ms {
                log.high(p, now_ms) as usize
            } else {
                0
            }
        })
        .collect();
    // Since when nothing has arrived or been created.
    let silent_from = log
        .parts
        .iter()
        .enumerate()
        .flat_map(|(p, part)| {
            let last = arrived[p].checked_sub(1).map(|o| part.at[o]);
            [Some(part.created_ms).filter(|c| *c <= now_ms), last]
        })
        .flatten()
        .max()
        .unwrap_or(0);
    if now_ms.saturating_sub(silent_from) < s.quiet_ms(log.parts.len()) {
        return None;
    }
    let watermark = quiet_watermark(s, model, &arrived);
    let want: BTreeMap<i64, Row> = model
        .windows(|p, o| o < arrived[p])
        .iter()
        .filter(|(start, _)| (**start * 1000 + s.size_ms) <= watermark)
        .map(|(start, f)| (*start, figures(f)))
        .collect();
    let got: BTreeMap<i64, Row> = table
        .iter()
        .filter(|(start, _)| want.contains_key(start))
        .map(|(start, r)| (*start, row_figures(r)))
        .collect();
    diff(&want, &got)
        .map(|d| format!("liveness at clock {now_ms} ms (watermark at least {watermark}): {d}"))
}
