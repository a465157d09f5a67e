//! The key-value store under the checkpoints: sled on disk, or a map in
//! memory for deterministic simulation.
//!
//! The checkpoint store needs five things of it: the first key at or after a
//! key, the entries under a prefix, an atomic batch of inserts and removals,
//! a flush that makes everything applied durable, and a single insert (the
//! `corrupt` drill). [`MemoryKv`] keeps what is durable apart from what was
//! applied since the last flush, so a simulated crash can lose exactly what
//! a real one may lose.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// One change of an atomic batch.
#[derive(Debug, Clone)]
pub enum Op {
    Insert(Vec<u8>, Vec<u8>),
    Remove(Vec<u8>),
}

/// Key-value pairs, in key order.
pub(super) type Entries = Vec<(Vec<u8>, Vec<u8>)>;

pub(super) enum Kv {
    Sled(sled::Db),
    Memory(Arc<MemoryKv>),
}

impl Kv {
    pub(super) fn first_key_from(&self, from: &[u8]) -> Result<Option<Vec<u8>>, sled::Error> {
        match self {
            Kv::Sled(db) => Ok(db
                .range(from..)
                .keys()
                .next()
                .transpose()?
                .map(|k| k.to_vec())),
            Kv::Memory(m) => {
                Ok(m.with(|v| v.range(from.to_vec()..).next().map(|(k, _)| k.clone())))
            }
        }
    }

    pub(super) fn scan_prefix(&self, prefix: &[u8]) -> Result<Entries, sled::Error> {
        match self {
            Kv::Sled(db) => db
                .scan_prefix(prefix)
                .map(|item| item.map(|(k, v)| (k.to_vec(), v.to_vec())))
                .collect(),
            Kv::Memory(m) => Ok(m.with(|v| {
                v.range(prefix.to_vec()..)
                    .take_while(|(k, _)| k.starts_with(prefix))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })),
        }
    }

    pub(super) fn apply(&self, ops: Vec<Op>) -> Result<(), sled::Error> {
        match self {
            Kv::Sled(db) => {
                let mut batch = sled::Batch::default();
                for op in ops {
                    match op {
                        Op::Insert(k, v) => batch.insert(k, v),
                        Op::Remove(k) => batch.remove(k),
                    }
                }
                db.apply_batch(batch)
            }
            Kv::Memory(m) => {
                m.apply(ops);
                Ok(())
            }
        }
    }

    pub(super) fn flush(&self) -> Result<(), sled::Error> {
        match self {
            Kv::Sled(db) => db.flush().map(|_| ()),
            Kv::Memory(m) => {
                m.flush();
                Ok(())
            }
        }
    }
}

/// An in-memory store with sled's durability contract: a batch is atomic,
/// and durable only once flushed.
#[derive(Debug, Default)]
pub struct MemoryKv {
    inner: Mutex<MemoryState>,
}

#[derive(Debug, Default)]
struct MemoryState {
    /// What readers see: every batch applied.
    visible: BTreeMap<Vec<u8>, Vec<u8>>,
    /// What survives a crash: every batch flushed.
    durable: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl MemoryKv {
    pub fn new() -> Arc<Self> {
        Arc::new(MemoryKv::default())
    }

    fn with<R>(&self, f: impl FnOnce(&BTreeMap<Vec<u8>, Vec<u8>>) -> R) -> R {
        let state = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(&state.visible)
    }

    fn apply(&self, ops: Vec<Op>) {
        let mut state = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        for op in ops {
            match op {
                Op::Insert(k, v) => {
                    state.visible.insert(k, v);
                }
                Op::Remove(k) => {
                    state.visible.remove(&k);
                }
            }
        }
    }

    fn flush(&self) {
        let mut state = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        state.durable = state.visible.clone();
    }

    /// A crash: what was applied but not flushed survives, or not (sled
    /// gives no promise either way).
    pub fn crash(&self, unflushed_survives: bool) {
        let mut state = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if unflushed_survives {
            state.durable = state.visible.clone();
        } else {
            state.visible = state.durable.clone();
        }
    }

    /// Flips one byte of the last entry in key order (durably): a piece of
    /// the newest checkpoint damaged on disk, for simulation.
    pub fn corrupt_last(&self, salt: usize) -> bool {
        let mut state = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let Some((key, value)) = state
            .visible
            .iter()
            .next_back()
            .map(|(k, v)| (k.clone(), v.clone()))
        else {
            return false;
        };
        let mut value = value;
        if value.is_empty() {
            return false;
        }
        let at = salt % value.len();
        value[at] ^= 0x5a;
        state.visible.insert(key.clone(), value.clone());
        state.durable.insert(key, value);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_flushed_batches_survive_a_crash_that_loses_them() {
        let kv = MemoryKv::new();
        let store = Kv::Memory(kv.clone());
        store
            .apply(vec![Op::Insert(b"a".to_vec(), b"1".to_vec())])
            .unwrap();
        store.flush().unwrap();
        store
            .apply(vec![
                Op::Insert(b"b".to_vec(), b"2".to_vec()),
                Op::Remove(b"a".to_vec()),
            ])
            .unwrap();
        assert_eq!(store.scan_prefix(b"").unwrap().len(), 1);
        kv.crash(false);
        assert_eq!(
            store.scan_prefix(b"").unwrap(),
            vec![(b"a".to_vec(), b"1".to_vec())]
        );
        store
            .apply(vec![Op::Insert(b"c".to_vec(), b"3".to_vec())])
            .unwrap();
        kv.crash(true);
        assert_eq!(store.first_key_from(b"b").unwrap(), Some(b"c".to_vec()));
    }
}
