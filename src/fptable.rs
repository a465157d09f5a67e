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

use crate::dedup::Fp;

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
    pub fn allocated_bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Slot>()
    }

    #[inline]
    fn home(&self, hi: u64) -> usize {
        // Fibonacci hashing: fingerprints are already uniform, but tests use
        // small ones, and the top bits of a product mix every bit of `hi`.
        // `slots.len()` is a power of two of at least MIN_SLOTS here.
        let bits = self.slots.len().trailing_zeros();
        (hi.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - bits)) as usize
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
        self.slots = vec![Slot::default(); slots];
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
    #[inline]
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

    pub fn contains(&self, fp: Fp) -> bool {
        self.get(fp).is_some()
    }

    /// Inserts `fp` with `value` unless it is present. Returns whether it
    /// was inserted (false: present already, its value unchanged).
    #[inline]
    pub fn insert(&mut self, fp: Fp, value: u32) -> bool {
        if is_zero(fp) {
            if self.zero.is_some() {
                return false;
            }
            self.zero = Some(value);
            return true;
        }
        if (self.used + 1) * 8 > self.slots.len() * 5 {
            self.reserve(1);
        }
        let mask = self.slots.len() - 1;
        let mut i = self.home(fp.hi);
        loop {
            let slot = &mut self.slots[i];
            if slot.is_empty() {
                *slot = Slot {
                    hi: fp.hi,
                    lo: fp.lo,
                    value,
                };
                self.used += 1;
                return true;
            }
            if slot.hi == fp.hi && slot.lo == fp.lo {
                return false;
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

    #[inline]
    pub fn prefetch(&self, fp: Fp) {
        self.0.prefetch(fp);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }

    pub fn iter(&self) -> impl Iterator<Item = Fp> + '_ {
        self.0.iter().map(|(fp, _)| fp)
    }
}

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
                let mut want: Vec<(Fp, u32)> = model.iter().map(|(k, v)| (*k, *v)).collect();
                got.sort();
                want.sort();
                prop_assert_eq!(got, want);
            }
        }
    }
}
