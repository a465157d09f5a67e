//! Deduplication by `event_id` (SPEC §3), with memory bounded by event time.
//!
//! An id is remembered from the moment its event is accepted until the
//! watermark makes that event late: once every window it belongs to is final
//! (`watermark >= last window end + allowed lateness`), a second copy would be
//! a `late_event` anomaly anyway, so the id can be forgotten. Memory is
//! therefore bounded by the number of events inside that horizon, never by the
//! length of the stream.
//!
//! # Layout
//!
//! One [`FpMap`] from fingerprint to the pane whose expiry frees it: one
//! 16-byte slot per id, at a load of 5/16 to 5/8. Expired ids are dropped
//! with one sequential `retain` pass when a pane expires (once per slide of
//! event time), which is far cheaper than one random-access removal per id.
//! The engine prefetches an id's slot a few events ahead of its insert
//! ([`Dedup::prefetch`]).
//!
//! # Fingerprints
//!
//! Ids (and user ids, in `window`) are kept as 96-bit XXH3 fingerprints keyed
//! with a random per-state seed that is checkpointed with the state. Two
//! distinct strings collide with probability about `n² / 2⁹⁷`: for ten million
//! live ids that is below 10⁻¹⁵, far below the rate of undetected hardware
//! errors. Because the seed is secret, crafted ids cannot aim at collisions or
//! at one hash bucket, so the tables can use the fingerprint itself as hash.

use std::hash::{Hash, Hasher};

use serde::{Deserialize, Serialize};

use crate::fptable::FpMap;

/// A 96-bit fingerprint of a string (16 bytes in memory, 12 on disk).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Fp {
    pub hi: u64,
    pub lo: u32,
}

impl Hash for Fp {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hi);
    }
}

/// Fingerprint of `s` under `seed`.
#[inline]
pub fn fingerprint(seed: u64, s: &str) -> Fp {
    let h = xxhash_rust::xxh3::xxh3_128_with_seed(s.as_bytes(), seed);
    Fp {
        hi: (h >> 64) as u64,
        lo: h as u32,
    }
}

/// A fresh random seed for a new state.
pub fn new_seed() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(crate::time::now_ms())
}

#[derive(Default)]
pub struct Dedup {
    /// Fingerprint -> pane index (relative to `base`) at whose expiry it goes.
    seen: FpMap,
    /// Pane indexes are stored relative to this, to fit in 32 bits.
    base: i64,
    /// Smallest pane still holding ids, to skip needless purges.
    oldest: Option<i64>,
}

/// The checkpointed form: ids grouped by their expiry pane.
#[derive(Serialize, Deserialize, Default, Debug, Clone, PartialEq)]
pub struct DedupSnapshot {
    pub expiry: Vec<(i64, Vec<Fp>)>,
}

impl Dedup {
    /// Records `id` as accepted, to expire with `pane`. Returns false if the id
    /// was already live, in which case the event is a duplicate.
    #[inline]
    pub fn insert(&mut self, id: Fp, pane: i64) -> bool {
        if self.seen.is_empty() {
            self.base = pane - (1 << 30);
        }
        let rel = pane.saturating_sub(self.base).clamp(0, u32::MAX as i64) as u32;
        if !self.seen.insert(id, rel) {
            return false;
        }
        if self.oldest.is_none_or(|o| pane < o) {
            self.oldest = Some(pane);
        }
        true
    }

    /// Starts loading the memory [`Dedup::insert`] of `id` will touch.
    #[inline]
    pub fn prefetch(&self, id: Fp) {
        self.seen.prefetch(id);
    }

    /// Forgets every id whose pane is below `first_live_pane`.
    pub fn purge_before(&mut self, first_live_pane: i64) {
        if self.oldest.is_none_or(|o| o >= first_live_pane) {
            return;
        }
        let limit = first_live_pane
            .saturating_sub(self.base)
            .clamp(0, u32::MAX as i64) as u32;
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

    pub fn restore(snapshot: DedupSnapshot) -> Self {
        let mut dedup = Dedup::default();
        let total = snapshot.expiry.iter().map(|(_, ids)| ids.len()).sum();
        dedup.seen = FpMap::with_capacity(total);
        for (pane, ids) in snapshot.expiry {
            for id in ids {
                dedup.insert(id, pane);
            }
        }
        dedup
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(s: &str) -> Fp {
        fingerprint(7, s)
    }

    #[test]
    fn second_insert_is_a_duplicate_until_purged() {
        let mut d = Dedup::default();
        let id = fp("e-1");
        assert!(d.insert(id, 10));
        assert!(!d.insert(id, 10));
        assert!(!d.insert(id, 11), "the pane does not matter, the id does");
        d.purge_before(10);
        assert!(!d.insert(id, 10), "pane 10 is still live");
        d.purge_before(11);
        assert!(d.is_empty());
        assert!(d.insert(id, 12));
    }

    #[test]
    fn purge_keeps_exactly_the_live_panes() {
        let mut d = Dedup::default();
        for i in 0..1000 {
            d.insert(fp(&format!("e-{i}")), 100 + i % 10);
        }
        d.purge_before(105);
        assert_eq!(d.len(), 500);
        assert!(!d.insert(fp("e-5"), 200), "pane 105 is live");
        assert!(d.insert(fp("e-4"), 200), "pane 104 was purged");
    }

    #[test]
    fn snapshot_round_trips() {
        let mut d = Dedup::default();
        for i in 0..100 {
            d.insert(fp(&format!("e-{i}")), i % 7);
        }
        let restored = Dedup::restore(d.snapshot());
        assert_eq!(restored.len(), 100);
        assert_eq!(restored.snapshot(), d.snapshot());
    }

    #[test]
    fn fingerprints_depend_on_the_string_and_the_seed() {
        assert_ne!(fp("a"), fp("b"));
        assert_ne!(fp(""), fp(" "));
        assert_ne!(fingerprint(1, "a"), fingerprint(2, "a"));
        assert_eq!(fingerprint(1, "a"), fingerprint(1, "a"));
    }
}
