//! Open-addressing hash tables keyed by fingerprints, built to be prefetched.
//!
//! The dedup ids and the pane user sets are the two big tables of the hot
//! path, and at a million live ids neither fits in cache: each insert is a
//! miss to memory. `std`'s `HashMap` gives no way to touch a key's slot ahead
//! of time, so the engine could not overlap those misses. These tables can:
//! [`FpMap::prefetch`] asks for the cache line of a key's home slot, and the
//! engine calls it a few events before the insert (see
//! `Engine::prepare`), so several misses are in flight at once.
//!
//! # Layout
//!
//! One flat array of 16-byte slots (`hi: u64, lo: u32, value: u32`), four to
//! a cache line, power-of-two sized, linear probing from the home slot
//! `fibonacci(hi) >> shift`. A slot whose key is all zero bits is empty; the
//! all-zero key itself, which a keyed hash yields with probability 2⁻⁹⁶ but
//! tests and old checkpoints may hold, lives beside the array. The load stays
//! at most 5/8, so an insert of a new key probes about four slots, one or
//! two cache lines.
//!
//! Keys are never removed one by one: dedup forgets a whole pane at a time
//! with [`FpMap::retain`], one sequential pass in place, and a pane's user
//! set is dropped whole.
//!
//! Snapshots list keys in *canonical order* ([`sort_canonical`]): by home
//! slot, then `lo`. A table's own slot order is nearly that order, so a
//! snapshot costs a pass over the table and an insertion sort that moves
//! few keys, not a comparison sort of millions.

use std::hash::{Hash, Hasher};

use serde::{Deserialize, Serialize};

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

#[derive(Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
struct Slot {
    hi: u64,
    lo: u32,
    value: u32,
}

impl Slot {
    #[inline]
    fn is_empty(&self) -> bool {
        self.hi == 0 && self.lo == 0
    }

    #[inline]
    fn key(&self) -> Fp {
        Fp {
            hi: self.hi,
            lo: self.lo,
        }
    }
}

#[inline]
fn is_zero(fp: Fp) -> bool {
    fp.hi == 0 && fp.lo == 0
}

/// 2⁶⁴ / φ, odd: multiplying by it mixes every bit of a key into the top
/// bits, which pick the home slot.
const FIBONACCI: u64 = 0x9E37_79B9_7F4A_7C15;

/// Smallest array, in slots.
const MIN_SLOTS: usize = 16;

/// The array size for `n` keys: a power of two, at a load of at most 5/8.
fn slots_for(n: usize) -> usize {
    let mut slots = MIN_SLOTS;
    while n * 8 > slots * 5 {
        slots *= 2;
    }
    slots
}

/// Arrays at least this large ask for transparent huge pages.
#[cfg(target_os = "linux")]
const HUGE_PAGE: usize = 2 << 20;

/// An array of `n` empty slots. An array of 2 MiB or more is first marked
/// `MADV_HUGEPAGE` (Linux), before any of its pages is touched: a table of
/// millions of slots is probed at random, so with 4 KiB pages nearly every
/// probe misses the TLB, and filling it takes one page fault per 4 KiB
/// instead of one per 2 MiB. The kernel may ignore the hint (THP `never`,
/// or no free huge page); the array is the same either way.
fn zeroed_slots(n: usize) -> Vec<Slot> {
    let mut slots: Vec<Slot> = Vec::with_capacity(n);
    advise_huge_pages(slots.as_mut_ptr() as usize, n * std::mem::size_of::<Slot>());
    slots.resize(n, Slot::default());
    slots
}

#[cfg(target_os = "linux")]
fn advise_huge_pages(start: usize, bytes: usize) {
    let aligned = start.next_multiple_of(HUGE_PAGE);
    let end = (start + bytes) & !(HUGE_PAGE - 1);
    if bytes >= HUGE_PAGE && end > aligned {
        // SAFETY: [aligned, end) lies inside an allocation the caller owns,
        // and MADV_HUGEPAGE changes how its pages are backed, never their
        // contents. The result is a hint's, so it is ignored.
        unsafe {
            libc::madvise(
                aligned as *mut libc::c_void,
                end - aligned,
                libc::MADV_HUGEPAGE,
            );
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_huge_pages(_start: usize, _bytes: usize) {}

/// A map from fingerprints to `u32` values. Inserting never overwrites.
#[derive(Clone, Default)]
pub struct FpMap {
    slots: Vec<Slot>,
    /// Keys in `slots` (the zero key not included).
    used: usize,
    /// The value of the all-zero key, if present.
    zero: Option<u32>,
}

impl FpMap {
    pub fn new() -> Self {
        FpMap::default()
    }

    /// A map that holds `n` keys without growing.
    pub fn with_capacity(n: usize) -> Self {
        let mut map = FpMap::new();
        map.reserve(n);
        map
    }

    pub fn len(&self) -> usize {
        self.used + usize::from(self.zero.is_some())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of the slot array (for state-size figures).
    #[cfg(test)]
    pub fn allocated_bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Slot>()
    }

    #[inline]
    fn home(&self, hi: u64) -> usize {
        // Fibonacci hashing: fingerprints are already uniform, but tests use
        // small ones, and the top bits of a product mix every bit of `hi`.
        // `slots.len()` is a power of two of at least MIN_SLOTS here.
        let bits = self.slots.len().trailing_zeros();
        (hi.wrapping_mul(FIBONACCI) >> (64 - bits)) as usize
    }

    /// Asks the CPU to start loading the cache line `fp` would be found in
    /// or inserted at. A hint only: it changes nothing, and a table that
    /// grows before the insert just wasted it.
    #[inline]
    pub fn prefetch(&self, fp: Fp) {
        if self.slots.is_empty() {
            return;
        }
        let slot: *const Slot = &self.slots[self.home(fp.hi)];
        prefetch_read(slot.cast());
    }

    /// Grows the array so that `additional` more keys fit under the load
    /// limit.
    pub fn reserve(&mut self, additional: usize) {
        let slots = slots_for(self.used + additional);
        if slots > self.slots.len() {
            let old = std::mem::take(&mut self.slots);
            self.move_from(old, slots);
        }
    }

    /// Puts the keys of `old` into a fresh array of `slots` slots.
    fn move_from(&mut self, old: Vec<Slot>, slots: usize) {
        self.slots = zeroed_slots(slots);
        self.used = 0;
        let mask = slots - 1;
        for slot in old.into_iter().filter(|s| !s.is_empty()) {
            let mut i = self.home(slot.hi);
            while !self.slots[i].is_empty() {
                i = (i + 1) & mask;
            }
            self.slots[i] = slot;
            self.used += 1;
        }
    }

    /// The value of `fp`, if present.
    #[cfg(test)]
    pub fn get(&self, fp: Fp) -> Option<u32> {
        if is_zero(fp) {
            return self.zero;
        }
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.slots.len() - 1;
        let mut i = self.home(fp.hi);
        loop {
            let slot = self.slots[i];
            if slot.is_empty() {
                return None;
            }
            if slot.hi == fp.hi && slot.lo == fp.lo {
                return Some(slot.value);
            }
            i = (i + 1) & mask;
        }
    }

    #[cfg(test)]
    pub fn contains(&self, fp: Fp) -> bool {
        self.get(fp).is_some()
    }

    /// Inserts `fp` with `value` unless it is present. Returns whether it
    /// was inserted (false: present already, its value unchanged).
    #[inline]
    pub fn insert(&mut self, fp: Fp, value: u32) -> bool {
        self.insert_or_get(fp, value).is_none()
    }

    /// Inserts `fp` with `value` unless it is present, in one probe. Returns
    /// `None` when it was inserted, or the present entry's value to read or
    /// change.
    #[inline]
    pub fn insert_or_get(&mut self, fp: Fp, value: u32) -> Option<&mut u32> {
        if is_zero(fp) {
            if self.zero.is_none() {
                self.zero = Some(value);
                return None;
            }
            return self.zero.as_mut();
        }
        if (self.used + 1) * 8 > self.slots.len() * 5 {
            self.reserve(1);
        }
        let mask = self.slots.len() - 1;
        let mut i = self.home(fp.hi);
        loop {
            if self.slots[i].is_empty() {
                self.slots[i] = Slot {
                    hi: fp.hi,
                    lo: fp.lo,
                    value,
                };
                self.used += 1;
                return None;
            }
            if self.slots[i].hi == fp.hi && self.slots[i].lo == fp.lo {
                return Some(&mut self.slots[i].value);
            }
            i = (i + 1) & mask;
        }
    }

    /// Keeps exactly the entries for which `keep` is true (each is asked
    /// once), in place: one sequential pass, without a second array, so
    /// purging a pane never doubles the memory of the table.
    ///
    /// Removal is by backward shift (Knuth's Algorithm R): the hole a
    /// removed key leaves is filled by a later key of the same run whose
    /// home slot does not lie between the hole and itself, which keeps every
    /// key reachable from its home with no tombstones. The pass starts just
    /// after an empty slot, so no run wraps around its start and a key only
    /// ever moves to a slot the pass has not reached yet.
    pub fn retain(&mut self, mut keep: impl FnMut(Fp, u32) -> bool) {
        if self.zero.is_some_and(|v| !keep(Fp { hi: 0, lo: 0 }, v)) {
            self.zero = None;
        }
        if self.used == 0 {
            return;
        }
        let cap = self.slots.len();
        let mask = cap - 1;
        // The load is at most 5/8: there is an empty slot.
        let start = self.slots.iter().position(Slot::is_empty).unwrap_or(0);
        let mut step = 1;
        while step < cap {
            let i = (start + step) & mask;
            let slot = self.slots[i];
            if slot.is_empty() || keep(slot.key(), slot.value) {
                step += 1;
            } else {
                // Slot i now holds a key shifted back from later in the
                // run, or nothing: look at it again.
                self.remove_at(i);
            }
        }
        if self.used * 32 < cap * 5 && cap > MIN_SLOTS {
            // Below a quarter of the load limit: a smaller array (the copy
            // is small next to the one it replaces).
            let old = std::mem::take(&mut self.slots);
            self.move_from(old, slots_for(self.used));
        }
    }

    /// Empties slot `hole` and shifts later keys of its run back over it.
    fn remove_at(&mut self, mut hole: usize) {
        let mask = self.slots.len() - 1;
        self.slots[hole] = Slot::default();
        self.used -= 1;
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            let slot = self.slots[j];
            if slot.is_empty() {
                return;
            }
            let home = self.home(slot.hi);
            // The key at j may move to the hole unless its home lies
            // cyclically in (hole, j]: then the hole is before its home.
            let stays = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !stays {
                self.slots[hole] = slot;
                self.slots[j] = Slot::default();
                hole = j;
            }
        }
    }

    /// Removes every key, keeping the array.
    pub fn clear(&mut self) {
        self.slots.fill(Slot::default());
        self.used = 0;
        self.zero = None;
    }

    /// Every entry, in the order of its home slot except within a run of
    /// keys that share slots: nearly [`canonical order`](sort_canonical),
    /// so sorting what it yields costs about one pass.
    pub fn iter_by_home(&self) -> impl Iterator<Item = (Fp, u32)> + '_ {
        // A key before its home slot wrapped around the end of the array;
        // such keys can only sit in the run that starts at slot 0, and they
        // go last, where their homes are.
        let wrapped = move |(i, slot): &(usize, &Slot)| self.home(slot.hi) > *i;
        let occupied = self.slots.iter().enumerate().filter(|(_, s)| !s.is_empty());
        let first_run = self
            .slots
            .iter()
            .enumerate()
            .take_while(|(_, s)| !s.is_empty());
        self.zero
            .map(|v| (Fp { hi: 0, lo: 0 }, v))
            .into_iter()
            .chain(
                occupied
                    .filter(move |e| !wrapped(e))
                    .chain(first_run.filter(wrapped))
                    .map(|(_, s)| (s.key(), s.value)),
            )
    }

    /// Every entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (Fp, u32)> + '_ {
        self.zero
            .map(|v| (Fp { hi: 0, lo: 0 }, v))
            .into_iter()
            .chain(
                self.slots
                    .iter()
                    .filter(|s| !s.is_empty())
                    .map(|s| (s.key(), s.value)),
            )
    }
}

/// Where a fingerprint comes in canonical order: the order of the tables'
/// home slots (Fibonacci-mixed `hi`), then `lo`. The mixing is a bijection,
/// so this is a total order that depends only on the keys.
#[inline]
fn canonical_rank(fp: &Fp) -> (u64, u32) {
    (fp.hi.wrapping_mul(FIBONACCI), fp.lo)
}

/// Sorts fingerprints into canonical order, so that equal sets encode to
/// equal bytes. Keys taken from a table by [`FpMap::iter_by_home`] are
/// nearly in that order already, and an insertion sort puts them right in
/// about one pass (a comparison sort of the millions of dedup ids took most
/// of a checkpoint's pause). Input far from that order falls back to a
/// comparison sort once the moves exceed a few per key.
pub fn sort_canonical(keys: &mut [Fp]) {
    if insertion_sort(keys, 4 * keys.len() + 64).is_none() {
        keys.sort_unstable_by_key(canonical_rank);
    }
}

/// Insertion sort into canonical order; the moves it made, or `None` once
/// they exceed `budget` (the keys are then partly sorted).
fn insertion_sort(keys: &mut [Fp], budget: usize) -> Option<usize> {
    let mut moves = 0;
    for i in 1..keys.len() {
        let mut j = i;
        while j > 0 && canonical_rank(&keys[j - 1]) > canonical_rank(&keys[j]) {
            keys.swap(j - 1, j);
            j -= 1;
            moves += 1;
        }
        if moves > budget {
            return None;
        }
    }
    Some(moves)
}

/// A set of fingerprints: an [`FpMap`] whose values are unused.
#[derive(Clone, Default)]
pub struct FpSet(FpMap);

impl FpSet {
    pub fn with_capacity(n: usize) -> Self {
        FpSet(FpMap::with_capacity(n))
    }

    /// Whether `fp` was new.
    #[inline]
    pub fn insert(&mut self, fp: Fp) -> bool {
        self.0.insert(fp, 0)
    }

    /// See [`FpMap::reserve`].
    pub fn reserve(&mut self, additional: usize) {
        self.0.reserve(additional);
    }

    #[inline]
    pub fn prefetch(&self, fp: Fp) {
        self.0.prefetch(fp);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }

    pub fn iter(&self) -> impl Iterator<Item = Fp> + '_ {
        self.0.iter().map(|(fp, _)| fp)
    }

    /// See [`FpMap::iter_by_home`].
    pub fn iter_by_home(&self) -> impl Iterator<Item = Fp> + '_ {
        self.0.iter_by_home().map(|(fp, _)| fp)
    }
}

impl FpSet {
    /// Inserts every key of `keys`, each prefetched [`BULK_AHEAD`] keys
    /// before its turn: the form for replaying a checkpoint's lists of
    /// added users, which are in arrival order and so land at random
    /// places of a table far larger than the cache.
    pub fn insert_all(&mut self, keys: &[Fp]) {
        self.reserve(keys.len());
        for (n, &fp) in keys.iter().enumerate() {
            if let Some(&ahead) = keys.get(n + BULK_AHEAD) {
                self.prefetch(ahead);
            }
            self.insert(fp);
        }
    }
}

/// How many keys ahead a bulk insert prefetches: enough loads in flight to
/// overlap their page walks, few enough to stay within the core's fill
/// buffers.
pub const BULK_AHEAD: usize = 16;

impl Extend<Fp> for FpSet {
    fn extend<I: IntoIterator<Item = Fp>>(&mut self, iter: I) {
        for fp in iter {
            self.insert(fp);
        }
    }
}

#[inline]
fn prefetch_read(p: *const i8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint that never faults and has no effect on
    // memory; `p` points into a live allocation in any case.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn fp(hi: u64, lo: u32) -> Fp {
        Fp { hi, lo }
    }

    #[test]
    fn inserting_never_overwrites_and_the_zero_key_is_a_key() {
        let mut m = FpMap::new();
        assert!(m.insert(fp(0, 0), 7));
        assert!(!m.insert(fp(0, 0), 8));
        assert!(m.insert(fp(0, 1), 9));
        assert!(m.insert(fp(1, 0), 10));
        assert_eq!(m.get(fp(0, 0)), Some(7));
        assert_eq!(m.get(fp(0, 1)), Some(9));
        assert_eq!(m.get(fp(1, 0)), Some(10));
        assert_eq!(m.get(fp(1, 1)), None);
        assert_eq!(m.len(), 3);
    }

    #[test]
    fn keys_sharing_a_home_slot_and_wrapping_the_array_are_all_found() {
        // Equal `hi`, different `lo`: one home slot for all, so the probe
        // runs past the end of the array and wraps.
        let mut m = FpMap::new();
        for lo in 1..=200 {
            assert!(m.insert(fp(u64::MAX, lo), lo));
        }
        for lo in 1..=200 {
            assert_eq!(m.get(fp(u64::MAX, lo)), Some(lo));
        }
        m.retain(|k, _| k.lo % 2 == 0);
        assert_eq!(m.len(), 100);
        assert!(m.contains(fp(u64::MAX, 2)) && !m.contains(fp(u64::MAX, 3)));
    }

    #[test]
    fn the_load_stays_under_five_eighths() {
        let mut m = FpMap::new();
        for i in 1..=100_000u64 {
            m.insert(fp(i, 0), 0);
            assert!(m.used * 8 <= m.slots.len() * 5);
        }
        // 16 bytes a slot, at a load between 5/16 and 5/8.
        assert!(m.allocated_bytes() <= 100_000 * 16 * 16 / 5);
        m.retain(|k, _| k.hi <= 10);
        assert_eq!(m.len(), 10);
        assert_eq!(
            m.allocated_bytes(),
            MIN_SLOTS * 16,
            "retain shrinks the array"
        );
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u8, u8, u32),
        Retain(u8),
        Clear,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            8 => (any::<u8>(), 0u8..3, any::<u32>()).prop_map(|(h, l, v)| Op::Insert(h, l, v)),
            1 => any::<u8>().prop_map(Op::Retain),
            1 => Just(Op::Clear),
        ]
    }

    proptest! {
        /// Against `std`'s HashMap as the model: same answers to every
        /// insert, same contents after every step.
        #[test]
        fn behaves_like_a_hash_map(ops in proptest::collection::vec(op(), 1..400)) {
            let mut m = FpMap::new();
            let mut model: HashMap<Fp, u32> = HashMap::new();
            for op in ops {
                match op {
                    Op::Insert(h, l, v) => {
                        // Few distinct `hi` values: many shared home slots.
                        let k = fp(u64::from(h % 32) << 7, u32::from(l));
                        let new = !model.contains_key(&k);
                        if new {
                            model.insert(k, v);
                        }
                        prop_assert_eq!(m.insert(k, v), new);
                    }
                    Op::Retain(t) => {
                        m.retain(|k, v| (k.hi >> 7) as u8 ^ v as u8 > t);
                        model.retain(|k, v| (k.hi >> 7) as u8 ^ *v as u8 > t);
                    }
                    Op::Clear => {
                        m.clear();
                        model.clear();
                    }
                }
                prop_assert_eq!(m.len(), model.len());
                let mut got: Vec<(Fp, u32)> = m.iter().collect();
                let mut by_home: Vec<(Fp, u32)> = m.iter_by_home().collect();
                let mut want: Vec<(Fp, u32)> = model.iter().map(|(k, v)| (*k, *v)).collect();
                got.sort();
                by_home.sort();
                want.sort();
                prop_assert_eq!(&got, &want);
                prop_assert_eq!(by_home, want);
            }
        }

        /// Canonical order is the order of the rank, whatever the input
        /// order: nearly sorted (a table's home order, including keys that
        /// wrapped around its end) or not at all (the fallback).
        #[test]
        fn canonical_order_is_the_rank_order(
            keys in proptest::collection::hash_set((any::<u64>(), 0u32..4), 0..3000),
            wrap in any::<bool>(),
        ) {
            let mut m = FpMap::new();
            for &(hi, lo) in &keys {
                // With `wrap`, keys crowd the last home slots so that runs
                // wrap around the end of the array.
                let hi = if wrap { hi | (u64::MAX << 58) } else { hi };
                m.insert(fp(hi.wrapping_mul(FIBONACCI_INVERSE), lo), 0);
            }
            let mut want: Vec<Fp> = m.iter().map(|(k, _)| k).collect();
            want.sort_unstable_by_key(canonical_rank);
            let mut near: Vec<Fp> = m.iter_by_home().map(|(k, _)| k).collect();
            sort_canonical(&mut near);
            prop_assert_eq!(&near, &want);
            let mut shuffled: Vec<Fp> = m.iter().map(|(k, _)| k).collect();
            shuffled.sort_unstable_by_key(|k| k.lo ^ (k.hi as u32));
            sort_canonical(&mut shuffled);
            prop_assert_eq!(&shuffled, &want);
        }
    }

    /// The multiplicative inverse of `FIBONACCI` modulo 2⁶⁴: a test picks a
    /// key's rank (and so its home slot) by multiplying by it.
    const FIBONACCI_INVERSE: u64 = {
        // Newton's iteration doubles the correct low bits each step.
        let mut x: u64 = FIBONACCI;
        let mut i = 0;
        while i < 6 {
            x = x.wrapping_mul(2u64.wrapping_sub(FIBONACCI.wrapping_mul(x)));
            i += 1;
        }
        x
    };

    #[test]
    fn the_inverse_inverts() {
        assert_eq!(FIBONACCI.wrapping_mul(FIBONACCI_INVERSE), 1);
    }

    #[test]
    fn a_table_in_home_order_sorts_without_the_fallback() {
        // 100k uniform keys: the insertion sort must finish within its
        // budget, which is what makes snapshots cheap.
        let mut m = FpMap::new();
        let mut x = 0x1234_5678_9abc_def1u64;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            m.insert(fp(x, x as u32), 0);
        }
        // And a run that wraps: keys whose home is the last slot.
        for lo in 0..4 {
            m.insert(fp(u64::MAX.wrapping_mul(FIBONACCI_INVERSE), lo), 0);
        }
        let mut keys: Vec<Fp> = m.iter_by_home().map(|(k, _)| k).collect();
        let moves = insertion_moves(&keys);
        assert!(moves < keys.len(), "{moves} moves for {} keys", keys.len());
        sort_canonical(&mut keys);
        assert!(keys
            .windows(2)
            .all(|w| canonical_rank(&w[0]) < canonical_rank(&w[1])));
    }

    /// The swaps an insertion sort into canonical order makes (inversions).
    fn insertion_moves(keys: &[Fp]) -> usize {
        insertion_sort(&mut keys.to_vec(), usize::MAX).expect("no budget")
    }
}
