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

/// How many of a partition's last valid records a jump may hold: it waits
/// until the records after it that agree outnumber the others by five
/// (`JUMP_LEAD`), so the jump, four that agree and a late copy with the
/// one that makes up for it.
const MAY_WAIT: usize = 7;

/// The watermark every live job must have reached after a quiet period
/// (`Settings::quiet_ms`): every partition is idle, so it is the highest
/// partition clock minus the bound, except that a partition's last
/// [`MAY_WAIT`] valid records may still wait for confirmation, which holds
/// the watermark below their time minus `max_time_jump` until the rest
/// reaches that (then they are confirmed, and may let others through). A
/// lower bound: records among them that do not wait only make the job's
/// watermark higher.
fn quiet_watermark(s: &Settings, model: &Model, arrived: &[usize]) -> i64 {
    use crate::model::Fate;
    let mut frontier = i64::MIN;
    let mut waiting = Vec::new();
    for (p, n) in arrived.iter().enumerate() {
        let valid: Vec<usize> = (0..*n).filter(|&o| model.times[p][o].is_some()).collect();
        let may_wait = &valid[valid.len().saturating_sub(MAY_WAIT)..];
        for o in 0..*n {
            let (Some(t), Fate::Accepted | Fate::Duplicate) =
                (model.times[p][o], &model.fates[p][o])
            else {
                continue;
            };
            if may_wait.contains(&o) {
                waiting.push(t);
            } else {
                frontier = frontier.max(t - s.bound_ms);
            }
        }
    }
    loop {
        let reached = frontier;
        waiting.retain(|t| {
            let confirmed = reached != i64::MIN && t - s.max_jump_ms() <= reached;
            if confirmed {
                frontier = frontier.max(t - s.bound_ms);
            }
            !confirmed
        });
        if frontier == reached {
            return frontier;
        }
    }
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
