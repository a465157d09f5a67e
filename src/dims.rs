//! Window metrics by dimension: the same `order_cnt`, exact `gmv_total` and
//! exact `user_cnt` as the window totals, per configured **grouping** of the
//! event's dimensions (`city`, `category`, or both) and per value of them
//! (docs/semantics.md, "Grouped results").
//!
//! # State
//!
//! Parallel to the window panes ([`crate::window`]): per pane and grouping,
//! a **cell** per dimension value with its counters and user set, and one
//! `other` cell. A grouped window's figures merge its panes' cells exactly
//! like a window merges its panes.
//!
//! # The limit
//!
//! At most `max_values` values per window and grouping get a row of their
//! own. Which ones is decided by the **fold order** alone: values sort by
//! the XXH3-64 hash (seed 0) of their text (the values of a grouping joined
//! by `0x1f`), ties by the text; the first `max_values` are kept, the others
//! fold into `other` (their counts add up, their users unite). The order
//! depends on nothing but the values, so the same input folds the same way
//! however partitions interleave, after any restart and in a replay.
//!
//! Each pane keeps only its first `max_values` values in that order (a value
//! beyond them goes to the pane's `other` cell, and a value that enters
//! pushes the last one out into it), so the state is bounded by
//! `max_values + 1` cells per pane and grouping. Nothing is lost by that: a value among
//! a window's first `max_values` has fewer than `max_values` values before
//! it in each of the window's panes, so every pane kept it.
//!
//! A value that is literally `other` counts in the `other` group.
//!
//! # Versions and retractions
//!
//! A grouped row carries the version of its window's total row: whenever a
//! window is emitted (fired, or updated within the allowed lateness), all
//! its grouped rows are emitted with it. A late event can bring a value
//! that pushes one already emitted out of the first `max_values`; that
//! value's row is then emitted again with zero counts (a **retraction**),
//! so the table, read with the highest version per key, never holds a stale
//! row. The values emitted per window are state (checkpointed).
//!
//! # Changes since the last checkpoint
//!
//! As for panes: each cell lists the users added since the last delta; a
//! value pushed out to `other` lists its users as added to `other`, and a
//! delta lists every live cell (a cell it does not list was pushed out or
//! its pane dropped). The emitted values are small and go whole.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::dedup::Fp;
use crate::fptable::{sort_canonical, FpSet};

/// A dimension of an order event (SPEC §1): `"unknown"` when missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dimension {
    City,
    Category,
}

impl Dimension {
    /// `city` or `category`.
    pub fn from_name(name: &str) -> Option<Self> {
        [Dimension::City, Dimension::Category]
            .into_iter()
            .find(|d| d.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Dimension::City => "city",
            Dimension::Category => "category",
        }
    }
}

/// The value every dimension of the folded group has.
pub const OTHER: &str = "other";

/// The default of [`GroupingSpec::max_values`].
pub const DEFAULT_MAX_VALUES: u32 = 1000;
/// The largest `max_values` accepted.
pub const MAX_MAX_VALUES: u32 = 100_000;

/// The configured groupings and the limit: part of the state, like the
/// window settings (a state is not resumed with other groupings).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupingSpec {
    /// Each grouping: its dimensions, in the order given.
    pub groupings: Vec<Vec<Dimension>>,
    /// Values per window and grouping with a row of their own.
    pub max_values: u32,
}

impl Default for GroupingSpec {
    fn default() -> Self {
        GroupingSpec {
            groupings: Vec::new(),
            max_values: DEFAULT_MAX_VALUES,
        }
    }
}

impl GroupingSpec {
    /// Checks that each grouping is non-empty with no dimension twice, no
    /// grouping is listed twice, and the limit is within 1..=100000.
    pub fn validate(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        let mut seen = BTreeSet::new();
        for g in &self.groupings {
            let dims: BTreeSet<_> = g.iter().collect();
            if g.is_empty() || dims.len() != g.len() {
                problems.push(format!(
                    "dimensions.groupings: {g:?} must list each dimension once"
                ));
            }
            if !seen.insert(dims) {
                problems.push(format!("dimensions.groupings: {g:?} is listed twice"));
            }
        }
        if !(1..=MAX_MAX_VALUES).contains(&self.max_values) {
            problems.push(format!(
                "dimensions.max_values_per_window must be within 1..={MAX_MAX_VALUES}"
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

/// The name of a grouping: its dimensions joined by `_` (`city_category`),
/// used in table names and by `streamforge results --group-by`.
pub fn grouping_name(dims: &[Dimension]) -> String {
    dims.iter().map(|d| d.name()).collect::<Vec<_>>().join("_")
}

/// Which grouping and which values a grouped row is for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct GroupKey {
    pub dims: Vec<Dimension>,
    /// One per dimension; all [`OTHER`] for the folded group.
    pub values: Vec<String>,
}

impl GroupKey {
    pub fn grouping(&self) -> String {
        grouping_name(&self.dims)
    }

    /// The `, "city": "Paris"` fields of a result line.
    pub fn json_fields(&self) -> String {
        let mut out = String::new();
        for (d, v) in self.dims.iter().zip(&self.values) {
            out.push_str(", ");
            out.push_str(&serde_json::Value::String(d.name().into()).to_string());
            out.push_str(": ");
            out.push_str(&serde_json::Value::String(v.clone()).to_string());
        }
        out
    }
}

/// The dimension values of one event, as the engine hands them over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventDims {
    pub city: Box<str>,
    pub category: Box<str>,
}

impl EventDims {
    fn get(&self, d: Dimension) -> &str {
        match d {
            Dimension::City => &self.city,
            Dimension::Category => &self.category,
        }
    }
}

/// The fold order's hash of a grouping's values (see the module docs).
pub fn fold_hash<S: AsRef<str>>(values: &[S]) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            h.update(&[0x1f]);
        }
        h.update(v.as_ref().as_bytes());
    }
    h.digest()
}

#[derive(Default, Clone)]
struct Cell {
    values: Vec<String>,
    order_cnt: u64,
    gmv_cents: u128,
    users: FpSet,
    /// Users added since the last delta (only when tracking).
    added: Vec<Fp>,
}

impl Cell {
    fn add(&mut self, user: Fp, cents: u64, tracking: bool) {
        self.order_cnt += 1;
        self.gmv_cents += cents as u128;
        if self.users.insert(user) && tracking {
            self.added.push(user);
        }
    }

    /// Moves `from`'s counts and users into this cell.
    fn absorb(&mut self, from: &Cell, tracking: bool) {
        self.order_cnt += from.order_cnt;
        self.gmv_cents += from.gmv_cents;
        for user in from.users.iter() {
            if self.users.insert(user) && tracking {
                self.added.push(user);
            }
        }
    }

    fn stored(&self, users: Vec<Fp>) -> StoredCell {
        StoredCell {
            values: self.values.clone(),
            order_cnt: self.order_cnt,
            gmv_cents: self.gmv_cents,
            users,
        }
    }

    fn set_from(&mut self, c: &StoredCell) {
        self.order_cnt = c.order_cnt;
        self.gmv_cents = c.gmv_cents;
        self.users.reserve(c.users.len());
        self.users.extend(c.users.iter().copied());
    }
}

/// One pane of one grouping: kept cells by fold hash, and `other`.
#[derive(Default, Clone)]
struct GroupPane {
    cells: BTreeMap<u64, Vec<Cell>>,
    kept: usize,
    other: Cell,
}

/// Where `values` stand in the fold order among the cells of one hash.
fn fold_key(hash: u64, values: &[String]) -> (u64, &[String]) {
    (hash, values)
}

impl GroupPane {
    /// The last kept value in fold order.
    fn last_kept(&self) -> Option<(u64, &[String])> {
        let (h, cells) = self.cells.last_key_value()?;
        cells.iter().map(|c| fold_key(*h, &c.values)).max()
    }

    /// Pushes the last kept value out into `other`.
    fn push_out_last(&mut self, tracking: bool) {
        let Some(mut entry) = self.cells.last_entry() else {
            return;
        };
        let cells = entry.get_mut();
        let Some(i) = (0..cells.len()).max_by(|a, b| cells[*a].values.cmp(&cells[*b].values))
        else {
            return;
        };
        let cell = cells.swap_remove(i);
        if cells.is_empty() {
            entry.remove();
        }
        self.kept -= 1;
        self.other.absorb(&cell, tracking);
    }

    fn add(&mut self, key: &[&str], user: Fp, cents: u64, limit: usize, tracking: bool) {
        if key.contains(&OTHER) {
            self.other.add(user, cents, tracking);
            return;
        }
        let hash = fold_hash(key);
        if let Some(cells) = self.cells.get_mut(&hash) {
            if let Some(cell) = cells.iter_mut().find(|c| c.values.iter().eq(key.iter())) {
                cell.add(user, cents, tracking);
                return;
            }
        }
        let values: Vec<String> = key.iter().map(|v| v.to_string()).collect();
        if self.kept >= limit {
            if self
                .last_kept()
                .is_some_and(|last| (hash, &values[..]) > last)
            {
                self.other.add(user, cents, tracking);
                return;
            }
            self.push_out_last(tracking);
        }
        let mut cell = Cell {
            values,
            ..Cell::default()
        };
        cell.add(user, cents, tracking);
        self.cells.entry(hash).or_default().push(cell);
        self.kept += 1;
    }

    fn iter(&self) -> impl Iterator<Item = (u64, &Cell)> {
        self.cells
            .iter()
            .flat_map(|(h, cells)| cells.iter().map(move |c| (*h, c)))
    }
}

/// A cell as stored: with all its users (a base) or those added since the
/// previous checkpoint (a delta).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredCell {
    pub values: Vec<String>,
    pub order_cnt: u64,
    pub gmv_cents: u128,
    pub users: Vec<Fp>,
}

/// One pane of one grouping as stored: its kept cells in fold order, and
/// `other` (with no values).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredGroupPane {
    pub cells: Vec<StoredCell>,
    pub other: StoredCell,
}

/// The checkpointed form of [`Groups`]: a base holds every user, a delta
/// the users added since the previous checkpoint (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct GroupsState {
    pub spec: GroupingSpec,
    /// (pane index, one per grouping), ascending; a pane not listed (in a
    /// delta: that was live before) was dropped.
    pub panes: Vec<(i64, Vec<StoredGroupPane>)>,
    /// (window index, per grouping the values emitted with a row of their
    /// own), ascending, for windows not final.
    pub emitted: Vec<(i64, Vec<Vec<Vec<String>>>)>,
}

impl GroupsState {
    /// Records the values of grouped rows emitted after this state was
    /// taken (see [`crate::window::WindowsSnapshot::note_emitted`]): `rows`
    /// gives each one's window index, key and order count (a retraction,
    /// with none, is not a value emitted).
    pub fn note_emitted<'a>(&mut self, rows: impl Iterator<Item = (i64, &'a GroupKey, u64)>) {
        for (w, key, order_cnt) in rows {
            let Some(g) = self.spec.groupings.iter().position(|d| *d == key.dims) else {
                continue;
            };
            let i = match self.emitted.binary_search_by_key(&w, |e| e.0) {
                Ok(i) => i,
                Err(i) => {
                    let empty = vec![Vec::new(); self.spec.groupings.len()];
                    self.emitted.insert(i, (w, empty));
                    i
                }
            };
            let list = &mut self.emitted[i].1[g];
            let own = order_cnt > 0 && !key.values.iter().any(|v| v == OTHER);
            if own && !list.contains(&key.values) {
                list.push(key.values.clone());
                list.sort();
            }
        }
    }

    /// User entries it holds (in a delta: the changes).
    pub fn changes(&self) -> usize {
        self.panes
            .iter()
            .flat_map(|(_, gs)| gs.iter())
            .map(|g| g.other.users.len() + g.cells.iter().map(|c| c.users.len()).sum::<usize>())
            .sum()
    }

    /// The same state with no user added (see
    /// [`crate::window::WindowsDelta::without_changes`]).
    pub fn without_changes(&self) -> Self {
        let strip = |c: &StoredCell| StoredCell {
            users: Vec::new(),
            ..c.clone()
        };
        GroupsState {
            spec: self.spec.clone(),
            panes: self
                .panes
                .iter()
                .map(|(k, gs)| {
                    let gs = gs
                        .iter()
                        .map(|g| StoredGroupPane {
                            cells: g.cells.iter().map(strip).collect(),
                            other: strip(&g.other),
                        })
                        .collect();
                    (*k, gs)
                })
                .collect(),
            emitted: self.emitted.clone(),
        }
    }

    /// Whether the panes are in order and each lists every grouping.
    pub fn check(&self) -> Result<(), String> {
        let n = self.spec.groupings.len();
        let ordered = self.panes.windows(2).all(|w| w[0].0 < w[1].0)
            && self.emitted.windows(2).all(|w| w[0].0 < w[1].0);
        let shaped = self.panes.iter().all(|(_, gs)| gs.len() == n)
            && self.emitted.iter().all(|(_, gs)| gs.len() == n);
        if ordered && shaped {
            Ok(())
        } else {
            Err("the grouped state's panes are not in order or not of its groupings".into())
        }
    }
}

/// The figures of one grouped row, before it becomes a
/// [`crate::window::WindowRow`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupFigures {
    pub key: GroupKey,
    pub order_cnt: u64,
    pub gmv_cents: u128,
    pub user_cnt: u64,
}

/// The grouped state of an engine (see the module docs).
#[derive(Default, Clone)]
pub struct Groups {
    spec: GroupingSpec,
    limit: usize,
    panes: BTreeMap<i64, Vec<GroupPane>>,
    emitted: BTreeMap<i64, Vec<Vec<Vec<String>>>>,
    tracking: bool,
    /// Rows emitted whose window has values folded into `other`, and the
    /// events counted there, per grouping (counters of this process).
    pub folded_windows: Vec<u64>,
    pub folded_events: Vec<u64>,
}

impl Groups {
    pub fn new(spec: GroupingSpec) -> Self {
        let n = spec.groupings.len();
        Groups {
            limit: spec.max_values as usize,
            spec,
            folded_windows: vec![0; n],
            folded_events: vec![0; n],
            ..Groups::default()
        }
    }

    pub fn spec(&self) -> &GroupingSpec {
        &self.spec
    }

    /// Whether any grouping is configured (the hot path's one test).
    #[inline]
    pub fn active(&self) -> bool {
        !self.spec.groupings.is_empty()
    }

    pub fn track_changes(&mut self) {
        self.tracking = true;
        for g in self.panes.values_mut().flatten() {
            g.other.added.clear();
            for cells in g.cells.values_mut() {
                for c in cells {
                    c.added.clear();
                }
            }
        }
    }

    /// Adds an accepted event of pane `k` to every grouping.
    pub fn add(&mut self, k: i64, dims: &EventDims, user: Fp, cents: u64) {
        let n = self.spec.groupings.len();
        let panes = self
            .panes
            .entry(k)
            .or_insert_with(|| vec![GroupPane::default(); n]);
        for (g, pane) in self.spec.groupings.iter().zip(panes.iter_mut()) {
            let mut key = [""; 2];
            for (slot, d) in key.iter_mut().zip(g) {
                *slot = dims.get(*d);
            }
            pane.add(&key[..g.len()], user, cents, self.limit, self.tracking);
        }
    }

    /// Drops the panes before `first_live` and the emitted values of the
    /// windows that became final with them.
    pub fn purge(&mut self, first_live: i64) {
        self.panes = self.panes.split_off(&first_live);
        self.emitted = self.emitted.split_off(&first_live);
    }

    /// Live cells across panes and groupings, and the user entries in them.
    pub fn stats(&self) -> (usize, usize) {
        let mut cells = 0;
        let mut users = 0;
        for g in self.panes.values().flatten() {
            cells += g.kept + 1;
            users += g.other.users.len() + g.iter().map(|(_, c)| c.users.len()).sum::<usize>();
        }
        (cells, users)
    }

    /// The grouped figures of window `w` (panes `w..w + n`): per grouping,
    /// its first `max_values` values in fold order, `other` when anything
    /// folded, and a zero row for each value emitted before that no longer
    /// has a row of its own (see the module docs). Records what it emitted.
    pub fn window(&mut self, w: i64, n: i64) -> Vec<GroupFigures> {
        let mut out = Vec::new();
        let groupings = self.spec.groupings.len();
        let mut emitted_now = vec![Vec::new(); groupings];
        for (g, dims) in self.spec.groupings.clone().iter().enumerate() {
            let (kept, other) = self.merge(w, n, g);
            let before = self
                .emitted
                .get(&w)
                .map(|e| e[g].clone())
                .unwrap_or_default();
            for (values, c) in &kept {
                out.push(figures(dims, values.clone(), c));
                emitted_now[g].push(values.clone());
            }
            if other.order_cnt > 0 {
                self.folded_windows[g] += 1;
                self.folded_events[g] += other.order_cnt;
                out.push(figures(dims, vec![OTHER.to_string(); dims.len()], &other));
            }
            for values in before {
                if !kept.iter().any(|(v, _)| *v == values) {
                    out.push(figures(dims, values, &Cell::default()));
                }
            }
            emitted_now[g].sort();
        }
        if groupings > 0 {
            self.emitted.insert(w, emitted_now);
        }
        out
    }

    /// Window `w`'s cells of grouping `g`, merged: the first `max_values`
    /// in fold order, and `other` with the rest.
    fn merge(&self, w: i64, n: i64, g: usize) -> (Vec<(Vec<String>, Cell)>, Cell) {
        let mut merged: BTreeMap<(u64, &[String]), Cell> = BTreeMap::new();
        let mut other = Cell::default();
        for (_, panes) in self.panes.range(w..w + n) {
            let pane = &panes[g];
            for (h, c) in pane.iter() {
                let into = merged.entry((h, &c.values)).or_default();
                into.absorb(c, false);
            }
            other.absorb(&pane.other, false);
        }
        let mut kept = Vec::new();
        for (i, ((_, values), cell)) in merged.into_iter().enumerate() {
            if i < self.limit {
                kept.push((values.to_vec(), cell));
            } else {
                other.absorb(&cell, false);
            }
        }
        (kept, other)
    }

    /// The whole state (a base), users in canonical order.
    pub fn snapshot(&self) -> GroupsState {
        self.stored(|c| {
            let mut users: Vec<Fp> = c.users.iter_by_home().collect();
            sort_canonical(&mut users);
            users
        })
    }

    /// Every live cell with the users added since the last call (a delta);
    /// the lists start again empty.
    pub fn take_delta(&mut self) -> GroupsState {
        let state = self.stored(|c| c.added.clone());
        for g in self.panes.values_mut().flatten() {
            g.other.added.clear();
            for cells in g.cells.values_mut() {
                for c in cells {
                    c.added.clear();
                }
            }
        }
        state
    }

    fn stored(&self, users: impl Fn(&Cell) -> Vec<Fp>) -> GroupsState {
        GroupsState {
            spec: self.spec.clone(),
            panes: self
                .panes
                .iter()
                .map(|(k, gs)| {
                    let gs = gs
                        .iter()
                        .map(|g| {
                            let mut cells: Vec<(u64, &Cell)> = g.iter().collect();
                            cells.sort_by(|a, b| (a.0, &a.1.values).cmp(&(b.0, &b.1.values)));
                            StoredGroupPane {
                                cells: cells.iter().map(|(_, c)| c.stored(users(c))).collect(),
                                other: g.other.stored(users(&g.other)),
                            }
                        })
                        .collect();
                    (*k, gs)
                })
                .collect(),
            emitted: self.emitted.iter().map(|(w, e)| (*w, e.clone())).collect(),
        }
    }

    /// The state `stored` holds (a base).
    pub fn restore(stored: &GroupsState) -> Self {
        let mut groups = Groups::new(stored.spec.clone());
        groups.apply_delta(stored);
        groups
    }

    /// Replays a delta (or a base on an empty state): panes and cells it
    /// does not list are dropped, the others take its counters and add its
    /// users.
    pub fn apply_delta(&mut self, delta: &GroupsState) {
        let n = self.spec.groupings.len();
        self.panes
            .retain(|k, _| delta.panes.binary_search_by_key(k, |p| p.0).is_ok());
        for (k, stored) in &delta.panes {
            let panes = self
                .panes
                .entry(*k)
                .or_insert_with(|| vec![GroupPane::default(); n]);
            for (pane, s) in panes.iter_mut().zip(stored) {
                let mut cells = std::mem::take(&mut pane.cells);
                pane.kept = 0;
                for c in &s.cells {
                    let hash = fold_hash(&c.values);
                    let mut cell = take_cell(&mut cells, hash, &c.values);
                    cell.values = c.values.clone();
                    cell.set_from(c);
                    pane.cells.entry(hash).or_default().push(cell);
                    pane.kept += 1;
                }
                pane.other.set_from(&s.other);
            }
        }
        self.emitted = delta.emitted.iter().cloned().collect();
    }
}

/// Removes and returns the cell of `values` from `cells`, or a new one.
fn take_cell(cells: &mut BTreeMap<u64, Vec<Cell>>, hash: u64, values: &[String]) -> Cell {
    if let Some(list) = cells.get_mut(&hash) {
        if let Some(i) = list.iter().position(|c| c.values == values) {
            return list.swap_remove(i);
        }
    }
    Cell::default()
}

fn figures(dims: &[Dimension], values: Vec<String>, c: &Cell) -> GroupFigures {
    GroupFigures {
        key: GroupKey {
            dims: dims.to_vec(),
            values,
        },
        order_cnt: c.order_cnt,
        gmv_cents: c.gmv_cents,
        user_cnt: c.users.len() as u64,
    }
}

#[cfg(test)]
mod tests;
