//! Group mode's invariants, against the model (`model`), after every
//! partition's last owner has read it to its end and every write in flight
//! has landed:
//!
//! 1. per partition, the partial table's rows have the figures of the
//!    model's windows of that partition alone (group mode's semantics: every
//!    verdict is a function of one partition's log; docs/semantics.md,
//!    "Group mode"), distinct users counted per partition;
//! 2. per window, the combination (orders and cents summed over the
//!    partitions) has the model's figures for the whole topic;
//! 3. the union of every instance's anomaly logs, keyed by (partition,
//!    offset), is the model's anomalies, one content per key, and so is
//!    the product's union (`streamforge::anomaly_log::merge`, the
//!    `anomalies merge` command's);
//! 4. (as rows land, `table`) one (window, partition, version) has one
//!    content, whoever wrote it;
//! 5. per window, the union of the partial rows' user sets over the
//!    partitions is the model's distinct users of the whole topic (what
//!    `<table>_combined` counts with `uniqExactArray`), and each row's
//!    `user_cnt` is its own set's size.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use streamforge::anomaly_log::AnomalyRecord;

use super::table::{figures, PartialTable};
use crate::checks::{self, Row};
use crate::model::{AnomalyKey, Model};

pub fn partial_rows(model: &Model, partitions: usize, table: &PartialTable) -> Vec<String> {
    let mut out = Vec::new();
    for p in 0..partitions {
        let want: BTreeMap<i64, Row> = model
            .windows(|q, _| q == p)
            .iter()
            .map(|(s, f)| (*s, checks::figures(f)))
            .collect();
        let got: BTreeMap<i64, Row> = table
            .rows
            .iter()
            .filter(|((_, q), _)| *q as usize == p)
            .map(|((s, _), r)| (*s, figures(r)))
            .collect();
        if let Some(d) = checks::diff(&want, &got) {
            out.push(format!(
                "partial rows of partition {p} differ from the model: {d}"
            ));
        }
    }
    let want: BTreeMap<i64, Row> = model
        .windows(|_, _| true)
        .iter()
        .map(|(s, f)| (*s, (f.order_cnt, f.gmv_cents, 0)))
        .collect();
    let mut got: BTreeMap<i64, Row> = BTreeMap::new();
    for ((start, _), r) in &table.rows {
        let c = got.entry(*start).or_default();
        c.0 += r.order_cnt;
        c.1 += r.gmv_cents;
    }
    if let Some(d) = checks::diff(&want, &got) {
        out.push(format!(
            "combined windows (orders, cents) differ from the model: {d}"
        ));
    }
    out
}

/// Invariant 5: the model's users fingerprinted with the group's `seed`
/// against the union of the rows' sets.
pub fn user_unions(model: &Model, seed: u64, table: &PartialTable) -> Option<String> {
    type Users = BTreeSet<(u64, u32)>;
    let fp = |user: &str| {
        let f = streamforge::dedup::fingerprint(seed, user);
        (f.hi, f.lo)
    };
    let want: BTreeMap<i64, Users> = model
        .windows(|_, _| true)
        .into_iter()
        .map(|(s, f)| (s, f.users.iter().map(|u| fp(u)).collect::<Users>()))
        .filter(|(_, users)| !users.is_empty())
        .collect();
    let mut got: BTreeMap<i64, Users> = BTreeMap::new();
    for ((start, p), r) in &table.rows {
        let users = r.users.as_deref().unwrap_or(&[]);
        if users.len() as u64 != r.user_cnt {
            return Some(format!(
                "partial row of window {start} partition {p}: user_cnt {} but {} users in its set",
                r.user_cnt,
                users.len()
            ));
        }
        if !users.is_empty() {
            let union = got.entry(*start).or_default();
            union.extend(users.iter().map(|f| (f.hi, f.lo)));
        }
    }
    let differ: Vec<String> = want
        .keys()
        .chain(got.keys())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .filter(|s| want.get(s) != got.get(s))
        .take(3)
        .map(|s| {
            let empty = Users::new();
            let (w, g) = (want.get(s).unwrap_or(&empty), got.get(s).unwrap_or(&empty));
            format!(
                "window {s}: {} users in the rows' union, {} in the model ({} missing, {} unexpected)",
                g.len(),
                w.len(),
                w.difference(g).count(),
                g.difference(w).count()
            )
        })
        .collect();
    (!differ.is_empty()).then(|| {
        format!(
            "combined distinct users differ from the model: {}",
            differ.join("; ")
        )
    })
}

/// The records of one anomaly log. A line cut by a kill (the file does not
/// end with a newline) is what a killed writer leaves: it is skipped.
fn records(path: &PathBuf) -> Result<Vec<AnomalyRecord>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let mut lines: Vec<&str> = text.split('\n').collect();
    lines.pop(); // after the last newline: empty, or a cut line
    lines
        .iter()
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str(line)
                .map_err(|e| format!("{} line {}: {e}", path.display(), i + 1))
        })
        .collect()
}

pub fn anomaly_union(model: &Model, logs: &[PathBuf]) -> Option<String> {
    let mut files = Vec::new();
    for (i, path) in logs.iter().enumerate() {
        match records(path) {
            Ok(r) => files.push((i, r)),
            Err(e) => return Some(format!("anomaly logs: {e}")),
        }
    }
    let mut by_key: BTreeMap<(u32, u64), BTreeSet<AnomalyKey>> = BTreeMap::new();
    for r in files.iter().flat_map(|(_, r)| r) {
        match key(r) {
            Ok(k) => by_key.entry((r.partition, r.offset)).or_default().insert(k),
            Err(e) => return Some(e),
        };
    }
    if let Some((k, v)) = by_key.iter().find(|(_, v)| v.len() > 1) {
        return Some(format!(
            "anomaly logs: partition {} offset {} logged with {} different contents",
            k.0,
            k.1,
            v.len()
        ));
    }
    let got: BTreeSet<AnomalyKey> = by_key.into_values().flatten().collect();
    let want: BTreeSet<AnomalyKey> = model.anomalies.iter().cloned().collect();
    if got != want {
        let brief = |a: &AnomalyKey| format!("{:?}", (&a.0, a.1, a.2));
        let missing: Vec<String> = want.difference(&got).take(3).map(brief).collect();
        let extra: Vec<String> = got.difference(&want).take(3).map(brief).collect();
        return Some(format!(
            "anomaly logs' union: {} records, model {}; missing {missing:?}; unexpected {extra:?}",
            got.len(),
            want.len()
        ));
    }
    // The product's own union (`streamforge anomalies merge`) says the same.
    match streamforge::anomaly_log::merge(files) {
        Err(c) => Some(format!(
            "anomalies merge refused the logs: {} partition {} offset {} differs",
            c.source, c.partition, c.offset
        )),
        Ok(merged) => {
            let merged: Result<BTreeSet<AnomalyKey>, String> = merged.iter().map(key).collect();
            match merged {
                Ok(m) if m == want => None,
                Ok(m) => Some(format!(
                    "anomalies merge gave {} records, the model {}",
                    m.len(),
                    want.len()
                )),
                Err(e) => Some(e),
            }
        }
    }
}

fn key(r: &AnomalyRecord) -> Result<AnomalyKey, String> {
    let payload = r
        .payload_bytes()
        .map_err(|_| format!("anomaly logs: bad payload at offset {}", r.offset))?;
    Ok((
        r.reason.clone(),
        r.partition,
        r.offset,
        payload,
        r.event_time_ms,
    ))
}
