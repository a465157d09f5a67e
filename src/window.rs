//! Sliding event-time windows kept as panes (SPEC §4).
//!
//! A window is `[s, s + size)` for every `s` that is a multiple of `slide`.
//! Since `size` is a whole number `n` of slides, every window is the union of
//! `n` consecutive *panes* of width `slide`, and each event updates exactly one
//! pane, whatever `n` is. A window's figures are merged from its panes when it
//! fires: counts and GMV add up, distinct users are the size of the union of
//! the panes' user sets (exact, never estimated).
//!
//! # Firing and lateness
//!
//! Windows are indexed by `start / slide`. `fired_upto` is the first window
//! index whose firing decision is still ahead: every window below it has been
//! emitted (if it had data) or found empty. When the watermark reaches a
//! window's end, the window is emitted with version 1. An accepted event that
//! falls into an already-fired window that is not final yet (`watermark <
//! end + allowed_lateness`) marks it dirty; dirty windows are emitted again with
//! the next version. A window is final once `watermark >= end + lateness`; its
//! last pane is then dropped, together with the dedup ids of that pane.
//!
//! # Layout
//!
//! * `panes`: live panes by index, each with count, GMV in cents and user set.
//! * `fired`: the windows fired and not final yet, with their last version and
//!   whether an update is waiting to be emitted.
//!
//! # Changes since the last checkpoint
//!
//! With tracking on ([`Windows::track_changes`]), each pane also lists the
//! users added to it since the last [`Windows::take_delta`]. A delta holds
//! every live pane with its counters and those users, and the small
//! `fired` state in full; a pane it does not list was dropped. User sets
//! only grow until their pane is dropped whole, so that is the whole
//! change ([`Windows::apply_delta`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::dedup::Fp;
use crate::dims::GroupKey;
use crate::fptable::FpSet;

/// Window geometry and lateness, all in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowSpec {
    pub size_ms: i64,
    pub slide_ms: i64,
    pub out_of_orderness_ms: i64,
    pub allowed_lateness_ms: i64,
}

/// The settings as the config names them, in the units a user would write:
/// `window.size=60s window.slide=30s window.out_of_orderness=5s
/// window.allowed_lateness=30s` (milliseconds where a value is not whole
/// seconds). Used in errors that compare two settings.
impl std::fmt::Display for WindowSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let named = [
            ("size", self.size_ms),
            ("slide", self.slide_ms),
            ("out_of_orderness", self.out_of_orderness_ms),
            ("allowed_lateness", self.allowed_lateness_ms),
        ];
        for (i, (name, ms)) in named.into_iter().enumerate() {
            let sep = if i == 0 { "" } else { " " };
            if ms % 1000 == 0 {
                write!(f, "{sep}window.{name}={}s", ms / 1000)?;
            } else {
                write!(f, "{sep}window.{name}={ms}ms")?;
            }
        }
        Ok(())
    }
}

impl WindowSpec {
    /// SPEC §4's defaults: 60 s windows every 30 s, 5 s out-of-orderness,
    /// 30 s allowed lateness.
    pub const DEFAULT: WindowSpec = WindowSpec {
        size_ms: 60_000,
        slide_ms: 30_000,
        out_of_orderness_ms: 5_000,
        allowed_lateness_ms: 30_000,
    };

    /// Panes per window.
    #[inline]
    pub fn panes_per_window(&self) -> i64 {
        self.size_ms / self.slide_ms
    }

    #[inline]
    pub fn pane_of(&self, t_ms: i64) -> i64 {
        t_ms.div_euclid(self.slide_ms)
    }

    /// End (exclusive, ms) of the window with index `w`.
    #[inline]
    pub fn window_end(&self, w: i64) -> i64 {
        (w + self.panes_per_window()) * self.slide_ms
    }

    /// The watermark at which window `w` becomes final.
    #[inline]
    pub fn window_final_at(&self, w: i64) -> i64 {
        self.window_end(w).saturating_add(self.allowed_lateness_ms)
    }

    /// The last window index whose end `watermark` has reached.
    #[inline]
    pub fn last_due_window(&self, watermark: i64) -> i64 {
        watermark.div_euclid(self.slide_ms) - self.panes_per_window()
    }

    /// True when an event at `t_ms` can no longer change any window, i.e. it
    /// is a `late_event`: the last window containing it is final.
    #[inline]
    pub fn is_late(&self, t_ms: i64, watermark: i64) -> bool {
        watermark >= self.window_final_at(self.pane_of(t_ms))
    }

    /// The first pane that some non-final window still needs.
    #[inline]
    pub fn first_live_pane(&self, watermark: i64) -> i64 {
        // Pane k is needed until window k (the last window holding it) is
        // final: watermark < (k + n) * slide + lateness.
        let n = self.panes_per_window();
        let x = watermark.saturating_sub(self.allowed_lateness_ms);
        x.div_euclid(self.slide_ms) - n + 1
    }

    /// The event times (epoch ms, both inclusive) whose every window is
    /// storable: starts at or after the epoch and ends no later than
    /// [`MAX_STORABLE_SECOND`]. An event outside is an
    /// `event_time_out_of_range` anomaly, decided when it is parsed, so
    /// that no sink ever meets a window it cannot hold.
    pub fn storable_event_times(&self) -> (i64, i64) {
        // The first window holding `t` starts at (pane(t) - n + 1) * slide.
        let first = (self.panes_per_window() - 1) * self.slide_ms;
        // The last one starts at pane(t) * slide and ends `size` later.
        let last_pane = (MAX_STORABLE_SECOND * 1000 - self.size_ms).div_euclid(self.slide_ms);
        (first, (last_pane + 1) * self.slide_ms - 1)
    }

    /// The window index of a row's `window_start` (epoch seconds).
    pub fn window_of_start(&self, window_start_s: i64) -> i64 {
        (window_start_s * 1000).div_euclid(self.slide_ms)
    }

    /// Checks the invariants the pane arithmetic relies on.
    pub fn validate(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        for (name, ms) in [("slide", self.slide_ms), ("size", self.size_ms)] {
            if ms <= 0 || ms % 1000 != 0 {
                problems.push(whole_seconds_problem(name, ms));
            }
        }
        let whole = self.size_ms % 1000 == 0 && self.slide_ms % 1000 == 0;
        if whole && self.slide_ms > 0 && self.size_ms % self.slide_ms != 0 {
            problems.push(format!(
                "window.size ({} s) must be a whole multiple of window.slide ({} s): a window is \
                 whole panes of one slide",
                self.size_ms / 1000,
                self.slide_ms / 1000
            ));
        }
        if self.out_of_orderness_ms < 0 {
            problems.push("window.out_of_orderness must not be negative".to_string());
        }
        if self.allowed_lateness_ms < 0 {
            problems.push("window.allowed_lateness must not be negative".to_string());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

/// Versions the live job writes stay below this (they count the emissions of
/// one window, continuing above earlier states' on a fresh state directory);
/// `replay` writes multiples of it, so a replay wins over every live write.
pub const LIVE_VERSION_LIMIT: u64 = 1 << 20;

/// The last second a window may end at: what a ClickHouse `DateTime`
/// (epoch seconds as UInt32) holds, 2106-02-07T06:28:15Z.
pub const MAX_STORABLE_SECOND: i64 = u32::MAX as i64;

/// One emitted window result: the row every sink stores, keyed by
/// `window_start`, highest `version` wins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowRow {
    /// Epoch seconds.
    pub window_start: i64,
    /// Epoch seconds, exclusive.
    pub window_end: i64,
    pub order_cnt: u64,
    /// Exact GMV in cents.
    pub gmv_cents: u128,
    pub user_cnt: u64,
    pub version: u64,
    /// Epoch seconds of emission (informational).
    pub updated_at: i64,
    /// `None` for a window's totals; a grouping and its values for a
    /// grouped row (see [`crate::dims`]), keyed by `window_start` and them.
    pub group: Option<GroupKey>,
    /// Group mode only (see [`Windows::carry_user_sets`]): the window's
    /// distinct users, `user_cnt` fingerprints under the state's seed,
    /// sorted ascending, so that rows of several partitions can be merged as
    /// sets. `None` otherwise (and on grouped rows).
    pub users: Option<Arc<[Fp]>>,
}

impl WindowRow {
    /// The result line of SPEC §8; a grouped row has its dimension fields
    /// after `window_end` (`"city": "Paris"`).
    pub fn result_json(&self) -> String {
        format!(
            "{{\"window_start\": {}, \"window_end\": {}{}, \"order_cnt\": {}, \"gmv_total\": \"{}\", \"user_cnt\": {}}}",
            self.window_start,
            self.window_end,
            self.group.as_ref().map_or(String::new(), |g| g.json_fields()),
            self.order_cnt,
            crate::event::format_cents(self.gmv_cents),
            self.user_cnt
        )
    }

    /// The key a sink upserts by: the window start and, for a grouped row,
    /// its grouping and values.
    pub fn key(&self) -> (i64, Option<&GroupKey>) {
        (self.window_start, self.group.as_ref())
    }
}

type UserSet = FpSet;

#[derive(Default, Clone)]
struct Pane {
    order_cnt: u64,
    gmv_cents: u128,
    users: UserSet,
    /// Users added since the last delta (only when tracking).
    added: Vec<Fp>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FiredWindow {
    pub version: u64,
    pub dirty: bool,
}

/// Checkpointed form of [`Windows`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct WindowsSnapshot {
    /// (pane index, order count, GMV cents, user fingerprints)
    pub panes: Vec<(i64, u64, u128, Vec<Fp>)>,
    pub fired: Vec<(i64, FiredWindow)>,
    pub fired_upto: Option<i64>,
    /// Versions start above this (see [`Windows::set_version_base`]).
    pub version_base: u64,
}

/// What changed in [`Windows`] between two checkpoints (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct WindowsDelta {
    /// Every live pane, ascending: (pane index, order count, GMV cents,
    /// users added since the previous checkpoint). Any other pane was
    /// dropped.
    pub panes: Vec<(i64, u64, u128, Vec<Fp>)>,
    pub fired: Vec<(i64, FiredWindow)>,
    pub fired_upto: Option<i64>,
    pub version_base: u64,
}

impl WindowsSnapshot {
    /// Records that `rows` were emitted after this snapshot was taken, by a
    /// step whose effects are not state (the end of a bounded input): every
    /// later emission of those windows gets a higher version. A window not
    /// fired yet is entered with that version; firing it later adds one.
    pub fn note_emitted(&mut self, spec: &WindowSpec, rows: &[WindowRow]) {
        note_emitted(&mut self.fired, spec, rows);
    }
}

impl WindowsDelta {
    /// See [`WindowsSnapshot::note_emitted`].
    pub fn note_emitted(&mut self, spec: &WindowSpec, rows: &[WindowRow]) {
        note_emitted(&mut self.fired, spec, rows);
    }

    /// The same state with no user added: what a checkpoint that changes
    /// nothing records.
    pub fn without_changes(&self) -> Self {
        WindowsDelta {
            panes: self
                .panes
                .iter()
                .map(|(k, n, gmv, _)| (*k, *n, *gmv, Vec::new()))
                .collect(),
            fired: self.fired.clone(),
            fired_upto: self.fired_upto,
            version_base: self.version_base,
        }
    }
}

/// See [`WindowsSnapshot::note_emitted`].
fn note_emitted(fired: &mut Vec<(i64, FiredWindow)>, spec: &WindowSpec, rows: &[WindowRow]) {
    for row in rows.iter().filter(|r| r.group.is_none()) {
        let w = spec.window_of_start(row.window_start);
        match fired.binary_search_by_key(&w, |(k, _)| *k) {
            Ok(i) => fired[i].1.version = fired[i].1.version.max(row.version),
            Err(i) => fired.insert(
                i,
                (
                    w,
                    FiredWindow {
                        version: row.version,
                        dirty: false,
                    },
                ),
            ),
        }
    }
}

#[derive(Clone)]
pub struct Windows {
    spec: WindowSpec,
    /// `spec.panes_per_window()`, kept: the hot path should not divide.
    panes_per_window: i64,
    panes: BTreeMap<i64, Pane>,
    fired: BTreeMap<i64, FiredWindow>,
    /// None until the first event: windows before it were never candidates.
    fired_upto: Option<i64>,
    /// A window's first emission gets this plus one.
    version_base: u64,
    /// Reused for distinct-user unions so firing does not allocate each time.
    scratch: UserSet,
    /// Panes list the users added since the last delta (see the module docs).
    tracking: bool,
    /// Rows carry their users' fingerprints (see [`Windows::carry_user_sets`]).
    carry_users: bool,
}

impl Windows {
    pub fn new(spec: WindowSpec) -> Self {
        Windows {
            spec,
            panes_per_window: spec.panes_per_window(),
            panes: BTreeMap::new(),
            fired: BTreeMap::new(),
            fired_upto: None,
            version_base: 0,
            scratch: UserSet::default(),
            tracking: false,
            carry_users: false,
        }
    }

    /// From now on every emitted row carries its window's distinct users
    /// ([`WindowRow::users`]): group mode, where ClickHouse merges the
    /// partitions' sets. Costs a sorted copy of the set per emission
    /// (12 bytes per user on disk, 16 in memory).
    pub fn carry_user_sets(&mut self) {
        self.carry_users = true;
    }

    /// Starts listing the users added from now on (see the module docs).
    pub fn track_changes(&mut self) {
        self.tracking = true;
        for pane in self.panes.values_mut() {
            pane.added = Vec::new();
        }
    }

    pub fn spec(&self) -> &WindowSpec {
        &self.spec
    }

    /// Numbers every window's versions above `base`: a state that starts
    /// over on a table that already holds rows (a fresh state directory)
    /// continues above the highest version the table holds, so nothing it
    /// writes is taken for older (SPEC §6).
    pub fn set_version_base(&mut self, base: u64) {
        self.version_base = base;
    }

    pub fn version_base(&self) -> u64 {
        self.version_base
    }

    /// Adds an accepted (not late, not duplicate) event. `watermark` is the
    /// job watermark when it arrived.
    #[inline]
    pub fn add(&mut self, t_ms: i64, user: Fp, cents: u64, watermark: i64) {
        self.add_to_pane(self.spec.pane_of(t_ms), user, cents, watermark);
    }

    /// [`Windows::add`] for a caller that knows the event's pane.
    #[inline]
    pub fn add_to_pane(&mut self, k: i64, user: Fp, cents: u64, watermark: i64) {
        let pane = self.panes.entry(k).or_default();
        pane.order_cnt += 1;
        pane.gmv_cents += cents as u128;
        if pane.users.insert(user) && self.tracking {
            pane.added.push(user);
        }

        let n = self.panes_per_window;
        let first = k - n + 1;
        match self.fired_upto {
            None => self.fired_upto = Some(first),
            Some(upto) if first < upto => {
                // Windows below `fired_upto` whose end the watermark has not
                // reached were never fired: `fired_upto` was set by an
                // earlier-read but later-in-time first event. Their firing
                // decision is still ahead.
                let due = self.spec.last_due_window(watermark);
                if due < upto - 1 {
                    self.fired_upto = Some(first.max(due + 1));
                }
                // Windows the watermark did reach have fired (or were found
                // empty): those not final yet must be emitted again.
                for w in first..=k.min(upto - 1).min(due) {
                    if watermark < self.spec.window_final_at(w) {
                        self.fired
                            .entry(w)
                            .or_insert(FiredWindow {
                                version: self.version_base,
                                dirty: false,
                            })
                            .dirty = true;
                    }
                }
            }
            Some(_) => {}
        }
    }

    /// Starts loading the memory [`Windows::add_to_pane`] of `user` to pane
    /// `k` will touch, if the pane exists.
    #[inline]
    pub fn prefetch(&self, k: i64, user: Fp) {
        if let Some(pane) = self.panes.get(&k) {
            pane.users.prefetch(user);
        }
    }

    /// The end (ms) of the next window to fire, if any: the hot path compares
    /// the watermark with it before calling [`Windows::advance`].
    #[inline]
    pub fn next_fire_at(&self) -> Option<i64> {
        self.fired_upto
            .map(|w| (w + self.panes_per_window) * self.spec.slide_ms)
    }

    /// Fires every window whose end the watermark reached, emits dirty
    /// windows again, and drops what became final. Rows go to `out`.
    pub fn advance(&mut self, watermark: i64, now_s: i64, out: &mut Vec<WindowRow>) {
        self.fire_new(watermark, now_s, out);
        self.emit_dirty(now_s, out);
        self.purge(watermark);
    }

    fn fire_new(&mut self, watermark: i64, now_s: i64, out: &mut Vec<WindowRow>) {
        let Some(upto) = self.fired_upto else { return };
        let n = self.spec.panes_per_window();
        // Last window index whose end the watermark reached.
        let limit = if watermark == i64::MAX {
            match self.panes.last_key_value() {
                Some((k, _)) => *k,
                None => return,
            }
        } else {
            self.spec.last_due_window(watermark)
        };
        if limit < upto {
            return;
        }
        // Only windows holding a pane can have data; walk the panes rather
        // than the (possibly huge) index range.
        let candidates: Vec<i64> = {
            let mut ws = Vec::new();
            let mut next = upto;
            for k in self
                .panes
                .range(upto..=limit.saturating_add(n - 1))
                .map(|(k, _)| *k)
            {
                let from = (k - n + 1).max(next);
                let to = k.min(limit);
                for w in from..=to {
                    ws.push(w);
                }
                next = next.max(to + 1);
            }
            ws
        };
        for w in candidates {
            let version = self.fired.get(&w).map_or(self.version_base, |f| f.version) + 1;
            self.fired.insert(
                w,
                FiredWindow {
                    version,
                    dirty: false,
                },
            );
            out.push(self.row(w, version, now_s));
        }
        self.fired_upto = Some(limit + 1);
    }

    /// Emits every window updated since its last emission.
    pub fn emit_dirty(&mut self, now_s: i64, out: &mut Vec<WindowRow>) {
        let dirty: Vec<i64> = self
            .fired
            .iter()
            .filter(|(_, f)| f.dirty)
            .map(|(w, _)| *w)
            .collect();
        for w in dirty {
            let Some(f) = self.fired.get_mut(&w) else {
                continue;
            };
            f.version += 1;
            f.dirty = false;
            let version = f.version;
            out.push(self.row(w, version, now_s));
        }
    }

    /// The first pane still needed by a non-final window.
    pub fn first_live_pane(&self, watermark: i64) -> i64 {
        if watermark == i64::MAX {
            i64::MAX
        } else {
            self.spec.first_live_pane(watermark)
        }
    }

    fn purge(&mut self, watermark: i64) {
        let first_live = self.first_live_pane(watermark);
        // Window w is final exactly when pane w is no longer live.
        self.fired = self.fired.split_off(&first_live);
        self.panes = self.panes.split_off(&first_live);
    }

    fn row(&mut self, w: i64, version: u64, now_s: i64) -> WindowRow {
        let n = self.spec.panes_per_window();
        let mut order_cnt = 0;
        let mut gmv_cents = 0;
        self.scratch.clear();
        let mut single: Option<&UserSet> = None;
        let mut parts = 0;
        for (_, pane) in self.panes.range(w..w + n) {
            order_cnt += pane.order_cnt;
            gmv_cents += pane.gmv_cents;
            parts += 1;
            single = Some(&pane.users);
        }
        let set = if parts == 1 {
            single
        } else {
            // Sized for the sum first: a pane's users come in the order of
            // their home slots, and inserting them so into a smaller table
            // that grows on the way built long probe runs (8.3 s to fire
            // two windows over two panes of 500 k users; 30 ms once sized,
            // test profile).
            let total = self.panes.range(w..w + n).map(|(_, p)| p.users.len()).sum();
            self.scratch.reserve(total);
            for (_, pane) in self.panes.range(w..w + n) {
                self.scratch.extend(pane.users.iter());
            }
            Some(&self.scratch)
        };
        let user_cnt = set.map_or(0, |s| s.len()) as u64;
        let users = self.carry_users.then(|| {
            let mut fps: Vec<Fp> = set.map_or_else(Vec::new, |s| s.iter().collect());
            fps.sort_unstable();
            Arc::from(fps)
        });
        WindowRow {
            window_start: w * self.spec.slide_ms / 1000,
            window_end: self.spec.window_end(w) / 1000,
            order_cnt,
            gmv_cents,
            user_cnt,
            version,
            updated_at: now_s,
            group: None,
            users,
        }
    }

    /// Number of live panes and of user entries across them (for metrics and
    /// the state-size benchmark).
    pub fn stats(&self) -> (usize, usize) {
        (
            self.panes.len(),
            self.panes.values().map(|p| p.users.len()).sum(),
        )
    }

    pub fn snapshot(&self) -> WindowsSnapshot {
        WindowsSnapshot {
            panes: self
                .panes
                .iter()
                .map(|(k, p)| {
                    let mut users: Vec<Fp> = p.users.iter_by_home().collect();
                    // Sorted so equal state encodes to equal bytes.
                    crate::fptable::sort_canonical(&mut users);
                    (*k, p.order_cnt, p.gmv_cents, users)
                })
                .collect(),
            fired: self.fired.iter().map(|(w, f)| (*w, *f)).collect(),
            fired_upto: self.fired_upto,
            version_base: self.version_base,
        }
    }

    pub fn restore(spec: WindowSpec, snapshot: &WindowsSnapshot) -> Self {
        let mut windows = Windows::new(spec);
        for (k, order_cnt, gmv_cents, users) in &snapshot.panes {
            let mut set = UserSet::with_capacity(users.len());
            set.extend(users.iter().copied());
            windows.panes.insert(
                *k,
                Pane {
                    order_cnt: *order_cnt,
                    gmv_cents: *gmv_cents,
                    users: set,
                    added: Vec::new(),
                },
            );
        }
        windows.fired = snapshot.fired.iter().copied().collect();
        windows.fired_upto = snapshot.fired_upto;
        windows.version_base = snapshot.version_base;
        windows
    }

    /// Every live pane's counters and the users added to it since the last
    /// call (or since tracking started), and the `fired` state; the lists
    /// of added users start again empty. O(panes + fired windows).
    pub fn take_delta(&mut self) -> WindowsDelta {
        WindowsDelta {
            panes: self
                .panes
                .iter_mut()
                .map(|(k, p)| {
                    let capacity = p.added.len();
                    let added = std::mem::replace(&mut p.added, Vec::with_capacity(capacity));
                    (*k, p.order_cnt, p.gmv_cents, added)
                })
                .collect(),
            fired: self.fired.iter().map(|(w, f)| (*w, *f)).collect(),
            fired_upto: self.fired_upto,
            version_base: self.version_base,
        }
    }

    /// Replays `delta` on this state (see the module docs). Users added
    /// here are not listed as changes.
    pub fn apply_delta(&mut self, delta: &WindowsDelta) {
        self.panes
            .retain(|k, _| delta.panes.binary_search_by_key(k, |p| p.0).is_ok());
        for (k, order_cnt, gmv_cents, added) in &delta.panes {
            let pane = self.panes.entry(*k).or_default();
            pane.order_cnt = *order_cnt;
            pane.gmv_cents = *gmv_cents;
            pane.users.insert_all(added);
        }
        self.fired = delta.fired.iter().copied().collect();
        self.fired_upto = delta.fired_upto;
        self.version_base = delta.version_base;
    }
}

/// `window.NAME must be a positive whole number of seconds`, with how a
/// bare number reads when that explains it (`60` is 60 ms; write `60s`).
fn whole_seconds_problem(name: &str, ms: i64) -> String {
    let mut problem = format!("window.{name} must be a positive whole number of seconds");
    if ms > 0 {
        problem.push_str(&format!(
            " (it is {ms} ms: a bare number is read as milliseconds; if you meant \
             {ms} seconds, write {ms}s)"
        ));
    }
    problem
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: WindowSpec = WindowSpec::DEFAULT;

    #[test]
    fn settings_read_as_the_config_writes_them() {
        assert_eq!(
            SPEC.to_string(),
            "window.size=60s window.slide=30s window.out_of_orderness=5s window.allowed_lateness=30s"
        );
        let odd = WindowSpec {
            size_ms: 1_500,
            allowed_lateness_ms: 0,
            ..SPEC
        };
        assert_eq!(
            odd.to_string(),
            "window.size=1500ms window.slide=30s window.out_of_orderness=5s window.allowed_lateness=0s"
        );
    }

    fn u(n: u64) -> Fp {
        Fp { hi: n, lo: 0 }
    }

    fn fire(w: &mut Windows, wm: i64) -> Vec<WindowRow> {
        let mut out = Vec::new();
        w.advance(wm, 0, &mut out);
        out
    }

    #[test]
    fn an_event_lands_in_two_sliding_windows() {
        let mut w = Windows::new(SPEC);
        w.add(45_000, u(1), 250, i64::MIN);
        let rows = fire(&mut w, i64::MAX);
        let starts: Vec<i64> = rows.iter().map(|r| r.window_start).collect();
        assert_eq!(starts, vec![0, 30]);
        assert!(rows.iter().all(|r| r.order_cnt == 1 && r.gmv_cents == 250));
    }

    #[test]
    fn windows_fire_when_the_watermark_reaches_their_end() {
        let mut w = Windows::new(SPEC);
        w.add(10_000, u(1), 100, i64::MIN);
        w.add(40_000, u(2), 100, i64::MIN);
        assert!(fire(&mut w, 29_999).is_empty());
        let rows = fire(&mut w, 30_000);
        assert_eq!(rows.len(), 1, "[-30,30) ends at 30 s");
        assert_eq!(rows[0].window_start, -30);
        assert!(fire(&mut w, 59_999).is_empty());
        let rows = fire(&mut w, 60_000);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].window_start, 0);
        assert_eq!(rows[0].user_cnt, 2);
        let rows = fire(&mut w, 90_000);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].window_start, 30);
    }

    #[test]
    fn an_earlier_event_read_after_the_first_does_not_fire_its_window() {
        let mut w = Windows::new(SPEC);
        // The first event read is in pane 1 (windows 0 and 1); an earlier
        // one, read next, is in pane 0 (windows -1 and 0). The watermark has
        // reached no window end: nothing has fired, nothing is an update.
        w.add(35_000, u(1), 100, i64::MIN);
        w.add(25_000, u(2), 100, 20_000);
        let mut out = Vec::new();
        w.emit_dirty(0, &mut out);
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(
            w.next_fire_at(),
            Some(30_000),
            "window [-30,30) fires first"
        );
        assert!(fire(&mut w, 29_999).is_empty());
        let rows = fire(&mut w, 30_000);
        assert_eq!(rows.len(), 1);
        assert_eq!(
            (rows[0].window_start, rows[0].version, rows[0].order_cnt),
            (-30, 1, 1)
        );
        let rows = fire(&mut w, 60_000);
        assert_eq!(
            (rows[0].window_start, rows[0].version, rows[0].order_cnt),
            (0, 1, 2)
        );
    }

    #[test]
    fn distinct_users_are_the_union_of_the_panes() {
        let mut w = Windows::new(SPEC);
        w.add(1_000, u(7), 1, i64::MIN);
        w.add(31_000, u(7), 1, i64::MIN);
        w.add(32_000, u(8), 1, i64::MIN);
        let rows = fire(&mut w, i64::MAX);
        let w0 = rows.iter().find(|r| r.window_start == 0).unwrap();
        assert_eq!((w0.order_cnt, w0.user_cnt), (3, 2));
    }

    /// Group mode: each row carries its window's users, sorted, the union
    /// of its panes' sets; without `carry_user_sets`, none.
    #[test]
    fn rows_carry_their_windows_user_set_when_asked() {
        let add = |w: &mut Windows| {
            w.add(1_000, u(9), 1, i64::MIN);
            w.add(2_000, u(7), 1, i64::MIN);
            w.add(31_000, u(7), 1, i64::MIN);
            w.add(32_000, u(8), 1, i64::MIN);
        };
        let mut plain = Windows::new(SPEC);
        add(&mut plain);
        assert!(fire(&mut plain, i64::MAX).iter().all(|r| r.users.is_none()));
        let mut w = Windows::new(SPEC);
        w.carry_user_sets();
        add(&mut w);
        let rows = fire(&mut w, i64::MAX);
        let set = |start: i64| {
            let r = rows.iter().find(|r| r.window_start == start).unwrap();
            let users = r.users.as_deref().unwrap().to_vec();
            assert_eq!(users.len() as u64, r.user_cnt);
            users
        };
        assert_eq!(set(0), vec![u(7), u(8), u(9)]);
        assert_eq!(set(30), vec![u(7), u(8)]);
    }

    #[test]
    fn a_late_event_within_lateness_re_emits_with_a_higher_version() {
        let mut w = Windows::new(SPEC);
        w.add(10_000, u(1), 100, i64::MIN);
        let first = fire(&mut w, 60_000);
        assert_eq!(first.len(), 2);
        // Watermark 60 s: window [0,60) fired but is final only at 90 s.
        assert!(!SPEC.is_late(20_000, 60_000));
        w.add(20_000, u(2), 100, 60_000);
        let again = fire(&mut w, 60_000);
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].window_start, 0);
        assert_eq!(again[0].version, 2);
        assert_eq!(again[0].order_cnt, 2);
        assert!(SPEC.is_late(20_000, 90_000));
    }

    #[test]
    fn state_is_dropped_once_final() {
        let mut w = Windows::new(SPEC);
        w.add(10_000, u(1), 100, i64::MIN);
        fire(&mut w, 200_000);
        assert_eq!(w.stats(), (0, 0));
    }

    #[test]
    fn snapshot_restores_identical_state() {
        let mut w = Windows::new(SPEC);
        for i in 0..50 {
            w.add(i * 3_000, u(i as u64 % 9), 10, i64::MIN);
        }
        fire(&mut w, 100_000);
        let snap = w.snapshot();
        let mut r = Windows::restore(SPEC, &snap);
        assert_eq!(r.snapshot(), snap);
        assert_eq!(fire(&mut r, i64::MAX), fire(&mut w, i64::MAX));
    }
}
