//! Deduplication by `event_id` (SPEC §3), with memory bounded by event time.
//!
//! # The rule
//!
//! Two events with the same `event_id` are the same event when their panes
//! (`floor(event_time / slide)`) are less than `size / slide` apart, that is
//! when their event times are less than about one window size apart: the
//! first one read counts, the other is a duplicate. A copy re-sent with an
//! event time further away than that is a distinct event. The rule depends
//! on event times only, never on when the job happened to forget an id, so
//! the live job, a restart, `replay` and `verify` all agree on it (before it,
//! a copy re-stamped later than its original's windows could be counted
//! twice live and once by a replay). docs/semantics.md states it for users.
//!
//! # Memory
//!
//! An id is remembered until no copy it could match can still count: a copy
//! within the horizon lies at most `size / slide - 1` panes after the
//! original, and a copy counts only while its own pane is live (not late).
//! So an id goes when the first live pane is more than that many panes past
//! the pane it was accepted in; memory is bounded by the events of a few
//! windows, never by the length of the stream. Lateness is checked before
//! duplicates, so a copy arriving after its windows are final is always
//! `late_event`, never silently accepted twice.
//!
//! # Layout
//!
//! One [`FpMap`] from fingerprint to the pane of the copy that was counted:
//! one 16-byte slot per id, at a load of 5/16 to 5/8. Expired ids are dropped
//! with one sequential `retain` pass when a pane expires (once per slide of
//! event time), which is far cheaper than one random-access removal per id.
//! The engine prefetches an id's slot a few events ahead of its insert
//! ([`Dedup::prefetch`]).
//!
//! # Changes since the last checkpoint
//!
//! When tracking is on ([`Dedup::track_changes`], the job's engine), every
//! id counted (new, or moved to another pane by the rule) is also appended
//! to a log, and the highest purge bound is kept. [`Dedup::take_delta`]
//! hands both over in O(1) at a barrier; [`Dedup::apply_delta`] replays
//! them on a restored state: the purge, the counted ids in order (the last
//! value of an id wins), the purge again. That gives exactly the live table,
//! because an id is only ever counted in a pane at or above every bound
//! purged so far (lateness is checked first, and the bound trails the first
//! live pane), so purging before or after counting keeps the same ids.
//!
//! # Fingerprints
//!
//! Ids (and user ids, in `window`) are kept as 96-bit XXH3 fingerprints keyed
//! with a random per-state seed that is checkpointed with the state. Two
//! distinct strings collide with probability about `n² / 2⁹⁷`: for ten million
//! live ids that is below 10⁻¹⁵, far below the rate of undetected hardware
//! errors. Because the seed is secret, crafted ids cannot aim at collisions or
//! at one hash bucket, so the tables can use the fingerprint itself as hash.

use serde::{Deserialize, Serialize};

pub use crate::fptable::{fingerprint, Fp};
use crate::fptable::{FpMap, BULK_AHEAD};

/// A fresh random seed for a new state.
pub fn new_seed() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(crate::time::now_ms())
}

#[derive(Clone)]
pub struct Dedup {
    /// Fingerprint -> pane (relative to `base`) of the copy that counted.
    seen: FpMap,
    /// Pane indexes are stored relative to this, to fit in 32 bits.
    base: i64,
    /// Smallest pane still holding ids, to skip needless purges.
    oldest: Option<i64>,
    /// Largest pane (relative to `base`) holding ids: a purge above it
    /// drops the table whole instead of scanning it.
    newest_rel: u32,
    /// Copies whose panes are less than this apart are one event: the
    /// window's pane count (`size / slide`).
    horizon_panes: i64,
    /// Ids counted since the last [`Dedup::take_delta`], in order, with
    /// their pane relative to `base` (see the module docs). Only when
    /// `tracking`.
    log: Vec<Counted>,
    tracking: bool,
    /// Every id of a pane below this is gone: the highest purge bound.
    forgotten_below: i64,
}

/// An id counted in pane `base + rel`: 16 bytes, like a table slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counted {
    pub hi: u64,
    pub lo: u32,
    pub rel: u32,
}

/// What changed in a [`Dedup`] between two checkpoints (see the module docs).
#[derive(Serialize, Deserialize, Default, Debug, Clone, PartialEq)]
pub struct DedupDelta {
    /// The pane `Counted::rel` counts from.
    pub base: i64,
    /// Ids counted, in order; the last value of an id wins.
    pub counted: Vec<Counted>,
    /// Then every id of a pane below this is forgotten.
    pub forget_below: i64,
}

/// The checkpointed form: ids grouped by the pane of the copy that counted.
#[derive(Serialize, Deserialize, Default, Debug, Clone, PartialEq)]
pub struct DedupSnapshot {
    pub expiry: Vec<(i64, Vec<Fp>)>,
}

impl Dedup {
    /// Empty, for windows of `horizon_panes` panes (`size / slide`).
    pub fn new(horizon_panes: i64) -> Self {
        Dedup {
            seen: FpMap::new(),
            base: 0,
            oldest: None,
            newest_rel: 0,
            horizon_panes: horizon_panes.max(1),
            log: Vec::new(),
            tracking: false,
            forgotten_below: i64::MIN,
        }
    }

    /// Starts logging the ids counted from now on (see the module docs).
    pub fn track_changes(&mut self) {
        self.tracking = true;
        self.log = Vec::new();
    }

    /// Counts the event with fingerprint `id` in `pane` unless a copy within
    /// the horizon counted already (see the module docs). Returns false when
    /// the event is a duplicate.
    #[inline]
    pub fn insert(&mut self, id: Fp, pane: i64) -> bool {
        let rel = self.rel(pane);
        if let Some(counted) = self.seen.insert_or_get(id, rel) {
            if (i64::from(*counted) - i64::from(rel)).abs() < self.horizon_panes {
                return false;
            }
            // A distinct event under the rule: it is now the copy that
            // later ones are compared with.
            *counted = rel;
        }
        if self.oldest.is_none_or(|o| pane < o) {
            self.oldest = Some(pane);
        }
        self.newest_rel = self.newest_rel.max(rel);
        if self.tracking {
            self.log.push(Counted {
                hi: id.hi,
                lo: id.lo,
                rel,
            });
        }
        true
    }

    /// `pane` relative to `base`, which an empty table first sets near it.
    #[inline]
    fn rel(&mut self, pane: i64) -> u32 {
        if self.seen.is_empty() {
            self.base = pane - (1 << 30);
            self.newest_rel = 0;
            // Every id logged so far is purged: the delta's purge bound
            // forgets them, and their panes were relative to the old base.
            self.log.clear();
        }
        pane.saturating_sub(self.base).clamp(0, u32::MAX as i64) as u32
    }

    /// Records `id` as counted in `pane`, whatever was recorded before: the
    /// replay of a logged change.
    fn set(&mut self, id: Fp, pane: i64) {
        let rel = self.rel(pane);
        if let Some(counted) = self.seen.insert_or_get(id, rel) {
            *counted = rel;
        }
        let pane = self.base + i64::from(rel);
        if self.oldest.is_none_or(|o| pane < o) {
            self.oldest = Some(pane);
        }
        self.newest_rel = self.newest_rel.max(rel);
    }

    /// Starts loading the memory [`Dedup::insert`] of `id` will touch.
    #[inline]
    pub fn prefetch(&self, id: Fp) {
        self.seen.prefetch(id);
    }

    /// Forgets every id no copy can match any more, given that panes below
    /// `first_live_pane` are final (see the module docs).
    pub fn purge_before(&mut self, first_live_pane: i64) {
        self.forget_below(first_live_pane.saturating_sub(self.horizon_panes - 1));
    }

    /// Forgets every id counted in a pane below `keep_from`.
    fn forget_below(&mut self, keep_from: i64) {
        self.forgotten_below = self.forgotten_below.max(keep_from);
        if self.oldest.is_none_or(|o| o >= keep_from) {
            return;
        }
        let limit = keep_from
            .saturating_sub(self.base)
            .clamp(0, u32::MAX as i64) as u32;
        if self.newest_rel < limit {
            // Every id goes (the end of a bounded input, a long gap): its
            // memory is freed, not scanned.
            self.seen = FpMap::new();
            self.oldest = None;
            return;
        }
        let mut oldest = u32::MAX;
        self.seen.retain(|_, rel| {
            let keep = rel >= limit;
            if keep {
                oldest = oldest.min(rel);
            }
            keep
        });
        self.oldest = (!self.seen.is_empty()).then(|| self.base + oldest as i64);
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    pub fn snapshot(&self) -> DedupSnapshot {
        // Live ids expire with a few panes: a short list, searched linearly,
        // beats a map lookup per id.
        let mut by_pane: Vec<(u32, Vec<Fp>)> = Vec::new();
        for (id, rel) in self.seen.iter_by_home() {
            match by_pane.iter_mut().find(|(r, _)| *r == rel) {
                Some((_, ids)) => ids.push(id),
                None => by_pane.push((rel, vec![id])),
            }
        }
        by_pane.sort_unstable_by_key(|(rel, _)| *rel);
        DedupSnapshot {
            expiry: by_pane
                .into_iter()
                .map(|(rel, mut ids)| {
                    // Sorted so equal state encodes to equal bytes.
                    crate::fptable::sort_canonical(&mut ids);
                    (self.base + rel as i64, ids)
                })
                .collect(),
        }
    }

    pub fn restore(horizon_panes: i64, snapshot: &DedupSnapshot) -> Self {
        let mut dedup = Dedup::new(horizon_panes);
        let total = snapshot.expiry.iter().map(|(_, ids)| ids.len()).sum();
        dedup.seen = FpMap::with_capacity(total);
        for (pane, ids) in &snapshot.expiry {
            for id in ids {
                dedup.set(*id, *pane);
            }
        }
        dedup
    }

    /// The ids counted since the last call (or since tracking started) and
    /// the purge bound; the log starts again empty.
    pub fn take_delta(&mut self) -> DedupDelta {
        // The next interval likely counts about as many: no regrowing.
        let capacity = self.log.len();
        DedupDelta {
            base: self.base,
            counted: std::mem::replace(&mut self.log, Vec::with_capacity(capacity)),
            forget_below: self.forgotten_below,
        }
    }

    /// Replays `delta` (see the module docs). Changes replayed are not
    /// logged.
    pub fn apply_delta(&mut self, delta: &DedupDelta) {
        // Purged first as well: what the live table forgot before counting
        // the logged ids is gone here too, so a table the live one emptied
        // starts over from the same base (the logged panes fit it).
        self.forget_below(delta.forget_below);
        self.seen.reserve(delta.counted.len());
        let tracking = std::mem::replace(&mut self.tracking, false);
        // Logged ids are in arrival order, at random places of the table:
        // each is prefetched a few ids before its turn (see `insert_all`).
        let fp = |c: &Counted| Fp { hi: c.hi, lo: c.lo };
        for (n, c) in delta.counted.iter().enumerate() {
            if let Some(ahead) = delta.counted.get(n + BULK_AHEAD) {
                self.seen.prefetch(fp(ahead));
            }
            self.set(fp(c), delta.base.saturating_add(i64::from(c.rel)));
        }
        self.tracking = tracking;
        self.forget_below(delta.forget_below);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(s: &str) -> Fp {
        fingerprint(7, s)
    }

    /// Windows of two panes (60 s windows sliding by 30 s).
    const PANES: i64 = 2;

    #[test]
    fn copies_less_than_a_window_apart_are_one_event() {
        let mut d = Dedup::new(PANES);
        let id = fp("e-1");
        assert!(d.insert(id, 10));
        assert!(!d.insert(id, 10), "same pane");
        assert!(!d.insert(id, 11), "the next pane: less than a window apart");
        assert!(!d.insert(id, 9), "the pane before, likewise");
        assert!(d.insert(id, 12), "two panes on: a distinct event");
        assert!(
            !d.insert(id, 13),
            "compared with the copy that counted last"
        );
        assert!(!d.insert(id, 11));
        assert!(d.insert(id, 10));
    }

    #[test]
    fn an_id_is_kept_as_long_as_a_live_copy_could_match_it() {
        let mut d = Dedup::new(PANES);
        let id = fp("e-1");
        assert!(d.insert(id, 10));
        // Pane 10 is final, but a copy in pane 11 (still live) must match.
        d.purge_before(11);
        assert!(!d.insert(id, 11));
        d.purge_before(12);
        assert!(d.is_empty(), "no live pane is within reach of pane 10");
        assert!(d.insert(id, 12));
    }

    #[test]
    fn purge_keeps_exactly_what_can_still_match() {
        let mut d = Dedup::new(PANES);
        for i in 0..1000 {
            d.insert(fp(&format!("e-{i}")), 100 + i % 10);
        }
        d.purge_before(106);
        assert_eq!(d.len(), 500, "panes 105.. are kept");
        assert!(!d.insert(fp("e-5"), 106), "pane 105 is kept for pane 106");
        assert!(d.insert(fp("e-4"), 106), "pane 104 was dropped");
    }

    /// The rule against a model that never forgets: as long as purges only
    /// drop panes below the first live one and no copy is inserted into a
    /// final pane (the engine rejects those as late first), the verdicts
    /// are the model's, whether a purge drops some panes or all of them.
    #[test]
    fn purging_never_changes_a_verdict() {
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for horizon in 1..4 {
            let mut d = Dedup::new(horizon);
            let mut model: std::collections::HashMap<u64, i64> = Default::default();
            let mut first_live = 0i64;
            for _ in 0..20_000 {
                if next() % 50 == 0 {
                    // Now and then a gap of more than the horizon: every id
                    // goes at once (the table is dropped, not scanned).
                    let gap = if next() % 20 == 0 { horizon + 4 } else { 1 };
                    first_live += gap;
                    d.purge_before(first_live);
                    if gap > 1 {
                        assert!(d.is_empty());
                    }
                }
                let pane = first_live + (next() % 4) as i64;
                let key = next() % 300;
                let want = match model.get(&key) {
                    Some(p) if (p - pane).abs() < horizon => false,
                    _ => {
                        model.insert(key, pane);
                        true
                    }
                };
                assert_eq!(d.insert(fp(&format!("e-{key}")), pane), want);
            }
        }
    }

    #[test]
    fn snapshot_round_trips() {
        let mut d = Dedup::new(PANES);
        for i in 0..100 {
            d.insert(fp(&format!("e-{i}")), i % 7);
        }
        let restored = Dedup::restore(PANES, &d.snapshot());
        assert_eq!(restored.len(), 100);
        assert_eq!(restored.snapshot(), d.snapshot());
    }

    #[test]
    fn a_delta_replays_moves_purges_and_a_new_base() {
        let mut live = Dedup::new(PANES);
        live.track_changes();
        let mut replica = Dedup::new(PANES);
        let (a, b, c, d) = (fp("a"), fp("b"), fp("c"), fp("d"));
        assert!(live.insert(a, 10) && live.insert(b, 10));
        replica.apply_delta(&live.take_delta());
        assert_eq!(replica.snapshot(), live.snapshot());
        // `a` counted again three panes on: it moves to pane 13; then pane
        // 10 is purged (`b` goes, `a` stays), then `a` moves back to 11.
        assert!(live.insert(a, 13));
        live.purge_before(12);
        assert!(live.insert(c, 12));
        assert!(live.insert(a, 11) || live.len() == 2);
        let delta = live.take_delta();
        assert_eq!(delta.forget_below, 11);
        replica.apply_delta(&delta);
        assert_eq!(replica.snapshot(), live.snapshot());
        // Everything purged, then an id far away: the table starts over
        // from a new base, and the delta still replays exactly.
        live.purge_before(100);
        assert!(live.is_empty());
        assert!(live.insert(d, 5_000_000_000));
        replica.apply_delta(&live.take_delta());
        assert_eq!(replica.snapshot(), live.snapshot());
        assert_eq!(replica.len(), 1);
        assert!(live.take_delta().counted.is_empty());
    }

    #[test]
    fn fingerprints_depend_on_the_string_and_the_seed() {
        assert_ne!(fp("a"), fp("b"));
        assert_ne!(fp(""), fp(" "));
        assert_ne!(fingerprint(1, "a"), fingerprint(2, "a"));
        assert_eq!(fingerprint(1, "a"), fingerprint(1, "a"));
    }
}
