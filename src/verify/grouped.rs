//! The grouped half of `verify`'s model (point 9 of the module docs): the
//! events the model accepted, per configured grouping, per window and per
//! value of the event's dimensions, with the limit applied as
//! docs/semantics.md defines it, written out again here: a window's values
//! sort by the XXH3-64 hash (seed 0) of their text (the values joined by
//! `0x1f`), ties by the text; the first `max_values` keep a row of their
//! own, the others (and any value that is literally `other`) add up in the
//! `other` group, their users united.
//!
//! It shares nothing with [`crate::dims`] but the row and key types: no
//! panes, no per-pane bound, no emitted-value lists, no retractions. The
//! engine's result must nonetheless be the same (docs/semantics.md says why
//! the per-pane bound loses nothing).

use std::collections::{BTreeMap, BTreeSet};

use crate::dims::{Dimension, GroupKey, GroupingSpec, OTHER};
use crate::window::WindowRow;

/// Orders, cents, users.
type Figures = (u64, u128, BTreeSet<String>);

/// The grouped figures of every window, by exact values.
#[derive(Debug, Default)]
pub(super) struct GroupedModel {
    spec: GroupingSpec,
    /// (grouping index, window start in ms) -> values -> figures.
    cells: BTreeMap<(usize, i64), BTreeMap<Vec<String>, Figures>>,
}

impl GroupedModel {
    pub(super) fn new(spec: GroupingSpec) -> Self {
        GroupedModel {
            spec,
            cells: BTreeMap::new(),
        }
    }

    /// Counts an accepted event in the window starting at `start_ms`.
    pub(super) fn add(&mut self, start_ms: i64, dims: (&str, &str), cents: u64, user: &str) {
        for (g, grouping) in self.spec.groupings.iter().enumerate() {
            let values: Vec<String> = grouping
                .iter()
                .map(|d| match d {
                    Dimension::City => dims.0.to_string(),
                    Dimension::Category => dims.1.to_string(),
                })
                .collect();
            let f = self
                .cells
                .entry((g, start_ms))
                .or_default()
                .entry(values)
                .or_default();
            f.0 += 1;
            f.1 += u128::from(cents);
            if !f.2.contains(user) {
                f.2.insert(user.to_string());
            }
        }
    }

    /// The grouped rows, the limit applied, sorted by (window start,
    /// grouping, values); `version` and `updated_at` are 0.
    pub(super) fn finish(self, size_ms: i64) -> Vec<WindowRow> {
        let max_values = self.spec.max_values as usize;
        let mut rows = Vec::new();
        for ((g, start), cells) in self.cells {
            let dims = &self.spec.groupings[g];
            let mut ranked: Vec<(u64, Vec<String>, Figures)> = Vec::new();
            let mut other: Figures = Default::default();
            let fold = |other: &mut Figures, f: Figures| {
                other.0 += f.0;
                other.1 += f.1;
                other.2.extend(f.2);
            };
            for (values, f) in cells {
                if values.iter().any(|v| v == OTHER) {
                    fold(&mut other, f);
                } else {
                    let hash = xxhash_rust::xxh3::xxh3_64(values.join("\u{1f}").as_bytes());
                    ranked.push((hash, values, f));
                }
            }
            ranked.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
            let mut kept: Vec<(Vec<String>, Figures)> = Vec::new();
            for (i, (_, values, f)) in ranked.into_iter().enumerate() {
                if i < max_values {
                    kept.push((values, f));
                } else {
                    fold(&mut other, f);
                }
            }
            if other.0 > 0 {
                kept.push((vec![OTHER.to_string(); dims.len()], other));
            }
            rows.extend(kept.into_iter().map(|(values, f)| WindowRow {
                users: None,
                window_start: start.div_euclid(1000),
                window_end: (start + size_ms).div_euclid(1000),
                order_cnt: f.0,
                gmv_cents: f.1,
                user_cnt: f.2.len() as u64,
                version: 0,
                updated_at: 0,
                group: Some(GroupKey {
                    dims: dims.clone(),
                    values,
                }),
            }));
        }
        rows.sort_by(|a, b| a.key().cmp(&b.key()));
        rows
    }
}

/// The grouped differences: rows the model has and the sink lacks, rows
/// the sink has (with orders: retractions are not results) and the model
/// lacks, and rows in both with other figures, as (expected, actual).
pub(super) struct GroupedDiff {
    pub missing: Vec<WindowRow>,
    pub unexpected: Vec<WindowRow>,
    pub differing: Vec<(WindowRow, WindowRow)>,
}

/// Compares the model's grouped rows with the sink's on (window_start,
/// window_end, grouping, values, order_cnt, gmv, user_cnt).
pub(super) fn diff(expected: &[WindowRow], actual: &[WindowRow]) -> GroupedDiff {
    let sink: BTreeMap<_, &WindowRow> = actual.iter().map(|r| (r.key(), r)).collect();
    let model: BTreeMap<_, &WindowRow> = expected.iter().map(|r| (r.key(), r)).collect();
    let figures = |r: &WindowRow| (r.window_end, r.order_cnt, r.gmv_cents, r.user_cnt);
    let mut out = GroupedDiff {
        missing: Vec::new(),
        unexpected: Vec::new(),
        differing: Vec::new(),
    };
    for (key, e) in &model {
        match sink.get(key) {
            None => out.missing.push((*e).clone()),
            Some(a) if figures(a) != figures(e) => out.differing.push(((*e).clone(), (*a).clone())),
            Some(_) => {}
        }
    }
    out.unexpected = actual
        .iter()
        .filter(|a| !model.contains_key(&a.key()))
        .cloned()
        .collect();
    out
}
