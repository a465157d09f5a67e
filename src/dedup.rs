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
//! * `seen`: every live id, for the O(1) membership test on the hot path.
//! * `expiry`: the same ids grouped by the pane (slide-wide slice of event
//!   time) whose expiry frees them, so purging is exact and never scans ids
//!   that stay.
//!
//! Ids are stored as 128-bit XXH3 fingerprints of the id string. Two distinct
//! ids collide with probability about `n² / 2¹²⁹`: for a billion live ids that
//! is below 10⁻²¹, far below the rate of undetected disk or memory errors.
//! The fingerprint is stable across versions and restarts (it is checkpointed);
//! the hash table itself is keyed with a per-process random seed, so crafted
//! ids cannot degrade it.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

/// 128-bit fingerprint of a string, stable across runs and versions.
#[inline]
pub fn fingerprint(s: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128(s.as_bytes())
}

type FastSet = HashSet<u128, foldhash::fast::RandomState>;

#[derive(Default)]
pub struct Dedup {
    seen: FastSet,
    expiry: BTreeMap<i64, Vec<u128>>,
}

/// The checkpointed form: the expiry lists are enough to rebuild `seen`.
#[derive(Serialize, Deserialize, Default, Debug, Clone, PartialEq)]
pub struct DedupSnapshot {
    pub expiry: Vec<(i64, Vec<u128>)>,
}

impl Dedup {
    /// Records `id` as accepted, to expire with `pane`. Returns false if the id
    /// was already live, in which case the event is a duplicate.
    #[inline]
    pub fn insert(&mut self, id: u128, pane: i64) -> bool {
        if !self.seen.insert(id) {
            return false;
        }
        self.expiry.entry(pane).or_default().push(id);
        true
    }

    /// Forgets every id whose pane is below `first_live_pane`.
    pub fn purge_before(&mut self, first_live_pane: i64) {
        while let Some(entry) = self.expiry.first_entry() {
            if *entry.key() >= first_live_pane {
                break;
            }
            for id in entry.remove() {
                self.seen.remove(&id);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    pub fn snapshot(&self) -> DedupSnapshot {
        DedupSnapshot {
            expiry: self
                .expiry
                .iter()
                .map(|(pane, ids)| (*pane, ids.clone()))
                .collect(),
        }
    }

    pub fn restore(snapshot: DedupSnapshot) -> Self {
        let mut dedup = Dedup::default();
        for (pane, ids) in snapshot.expiry {
            dedup.seen.extend(ids.iter().copied());
            dedup.expiry.insert(pane, ids);
        }
        dedup
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_insert_is_a_duplicate_until_purged() {
        let mut d = Dedup::default();
        let id = fingerprint("e-1");
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
    fn snapshot_round_trips() {
        let mut d = Dedup::default();
        for i in 0..100 {
            d.insert(fingerprint(&format!("e-{i}")), i % 7);
        }
        let restored = Dedup::restore(d.snapshot());
        assert_eq!(restored.len(), 100);
        assert_eq!(restored.snapshot(), d.snapshot());
    }

    #[test]
    fn fingerprints_differ_for_near_ids() {
        assert_ne!(fingerprint("a"), fingerprint("b"));
        assert_ne!(fingerprint(""), fingerprint(" "));
    }
}
