//! Committing checkpoints: each as a delta on the one before, or as a new
//! base when the chain has grown (see the module docs of `checkpoint`).
//!
//! The store keeps the state of the last checkpoint as the chain that
//! restores it (the **replica**): the chain recovery read, or the base this
//! process wrote last, and the deltas committed on it since. A delta is
//! written as the job hands it over and kept; nothing is applied. Only when
//! a new base is due is the replica built into an engine (the same
//! [`Engine::restore_chain`] and [`Engine::apply_delta`] recovery uses), the
//! delta applied and the snapshot written. So a checkpoint that links on
//! costs encoding and writing only, and a job that never compacts (a bounded
//! run shorter than its horizon) never builds a second copy of its tables.
//! The replica holds what recovering from the chain would read: at most
//! about twice the live state's entries (see [`CheckpointStore::set_compaction`]),
//! the bound the compaction rule keeps. After a whole checkpoint committed by
//! [`CheckpointStore::commit`] it is read back from the store when a base
//! first needs it.
//!
//! Which checkpoints are kept: whole chains, from the newest back, until at
//! least two chains and `keep` checkpoints are kept, so a damaged base still
//! has the end of the chain before it to fall back to. Chains from before
//! this process started are not known until a base has been written: until
//! then nothing older is dropped.

use std::sync::Arc;

use super::read::entries;
use super::{
    codec, kv, Checkpoint, CheckpointError, CheckpointStore, Delta, EngineChain, Link, Recovered,
    Stored, StoredCheckpoint,
};
use crate::engine::{Engine, EngineDelta};
use crate::failpoint::{self, crash_point};

/// A chain is rewritten as a base once it is this many checkpoints long,
/// however little they changed (so recovery reads few frames).
pub const MAX_CHAIN: usize = 64;

/// A chain that replays fewer than twice this many entries is not
/// compacted (a small state's chain is cheap to read however often it
/// changed).
const MIN_COMPACT_ENTRIES: usize = 4096;

/// What one commit wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// The frame's size.
    pub bytes: usize,
    /// Whether it was written as a base (a new chain).
    pub base: bool,
    /// User entries and ids the checkpoint's delta added.
    pub changes: usize,
}

/// The last checkpoint committed or recovered.
#[derive(Debug, Clone, Copy)]
struct Tip {
    id: u64,
    crc: u32,
    base: u64,
    /// Entries of the chain's base, and of its deltas since.
    base_entries: usize,
    chain_entries: usize,
    chain_len: usize,
}

/// The last checkpoint's state as the chain that restores it (see the
/// module docs).
struct Replica {
    /// A base and deltas: the chain recovery read (shared with the job,
    /// which restored from it), or the base this process wrote last.
    chain: Arc<EngineChain>,
    /// The deltas committed on it since, oldest first.
    since: Vec<EngineDelta>,
}

impl Replica {
    /// The engine the replica restores to.
    fn build(self) -> Result<Engine, String> {
        let chain = &self.chain;
        let partitions = self
            .since
            .last()
            .or(chain.deltas.last())
            .map_or(chain.base.clocks.len(), |d| d.clocks.len());
        let spec = chain.base.spec;
        if chain.deltas.is_empty() {
            // A base of our own: the deltas since restore in one pass.
            return Engine::restore_chain(spec, partitions, &chain.base, &self.since);
        }
        let mut engine = Engine::restore_chain(spec, partitions, &chain.base, &chain.deltas)?;
        for delta in &self.since {
            engine.apply_delta(delta)?;
        }
        Ok(engine)
    }
}

/// When a chain is rewritten as a base (see [`CheckpointStore::set_compaction`]).
#[derive(Debug, Clone, Copy)]
struct Compaction {
    max_chain: usize,
    min_entries: usize,
}

impl Default for Compaction {
    fn default() -> Self {
        Compaction {
            max_chain: MAX_CHAIN,
            min_entries: MIN_COMPACT_ENTRIES,
        }
    }
}

/// The store's writing side (see the module docs).
#[derive(Default)]
pub(super) struct Writer {
    compaction: Compaction,
    tip: Option<Tip>,
    /// The chains this process knows, oldest first: (base id, last id).
    chains: Vec<(u64, u64)>,
    /// `None`: not known, read from the store when a base needs it.
    replica: Option<Replica>,
    /// Why an earlier commit failed: the store may then hold a checkpoint
    /// the writer does not know of, so nothing more is committed.
    failed: Option<String>,
}

/// The first id to keep (see the module docs); 0 keeps everything.
fn keep_from(chains: &[(u64, u64)], keep: usize) -> u64 {
    let mut count = 0;
    for (n, (base, last)) in chains.iter().rev().enumerate() {
        count += (last - base + 1) as usize;
        if n >= 1 && count >= keep {
            return *base;
        }
    }
    0
}

impl CheckpointStore {
    /// Goes on from `recovered` (see [`CheckpointStore::recover`]).
    pub(super) fn resume_after(&mut self, recovered: &Recovered, crc: u32, base: u64) {
        let chain = &recovered.engine;
        self.writer = Writer {
            compaction: self.writer.compaction,
            tip: Some(Tip {
                id: recovered.id,
                crc,
                base,
                base_entries: entries(&chain.base),
                chain_entries: chain.deltas.iter().map(EngineDelta::changes).sum(),
                chain_len: chain.deltas.len() + 1,
            }),
            chains: vec![(base, recovered.id)],
            replica: Some(Replica {
                chain: chain.clone(),
                since: Vec::new(),
            }),
            failed: None,
        };
    }

    /// Sets when a chain is rewritten as a base: once it is `max_chain`
    /// checkpoints long, or once it replays more than twice the entries of
    /// the state it restores and of `min_entries` ([`MAX_CHAIN`] and 4096
    /// by default). For
    /// tests and benchmarks (`max_chain` 1: every checkpoint whole).
    pub fn set_compaction(&mut self, max_chain: usize, min_entries: usize) {
        self.writer.compaction = Compaction {
            max_chain: max_chain.max(1),
            min_entries,
        };
    }

    /// The engine of the last checkpoint committed or recovered, with
    /// `delta` applied: built from the replica, read from the store, or, on
    /// a fresh store, empty.
    fn replica_with(&mut self, id: u64, delta: &EngineDelta) -> Result<Engine, CheckpointError> {
        let inconsistent = |why: String| CheckpointError::Inconsistent { id, why };
        let mut engine = match (self.writer.replica.take(), self.writer.tip) {
            (Some(replica), _) => replica.build().map_err(inconsistent)?,
            (None, None) => Engine::empty_for(delta),
            (None, Some(tip)) => {
                let chain = self.load_chain(tip.id)?;
                Replica {
                    chain: Arc::new(chain),
                    since: Vec::new(),
                }
                .build()
                .map_err(inconsistent)?
            }
        };
        engine.apply_delta(delta).map_err(inconsistent)?;
        Ok(engine)
    }

    /// Checkpoint `id`'s state as its chain.
    fn load_chain(&self, id: u64) -> Result<EngineChain, CheckpointError> {
        let mut frames = super::read::Frames::new(self);
        let chain = frames.chain(id)??;
        Ok(frames.assemble(&chain).checkpoint.engine)
    }

    /// Commits `delta`, whose state is the changes since the last
    /// checkpoint committed or recovered (or, on a fresh store, since an
    /// empty state): as a delta, or as a new base when the chain has grown
    /// (see the module docs). Durable when it returns.
    pub fn commit_delta(&mut self, delta: Delta) -> Result<Written, CheckpointError> {
        let id = delta.checkpoint.id;
        if let Some(why) = &self.writer.failed {
            let why = format!("an earlier checkpoint failed ({why})");
            return Err(CheckpointError::Inconsistent { id, why });
        }
        let result = self.try_commit_delta(delta);
        if let Err(e) = &result {
            self.writer.failed = Some(e.to_string());
            self.writer.replica = None;
        }
        result
    }

    fn try_commit_delta(&mut self, delta: Delta) -> Result<Written, CheckpointError> {
        let Delta {
            checkpoint,
            live_entries,
        } = delta;
        let changes = checkpoint.engine.changes();
        if let Some(link) = self.link(changes, live_entries) {
            let stored = checkpoint.map_engine(|delta| Stored::Delta(link, delta));
            let written = self.write(&stored, changes)?;
            if let (Some(replica), Stored::Delta(_, delta)) =
                (&mut self.writer.replica, stored.engine)
            {
                replica.since.push(delta);
            }
            return Ok(written);
        }
        let engine = self.replica_with(checkpoint.id, &checkpoint.engine)?;
        let base = engine.snapshot();
        drop(engine);
        let stored = checkpoint.map_engine(|_| Stored::Base(base));
        let written = self.write(&stored, changes)?;
        if let Stored::Base(base) = stored.engine {
            self.writer.replica = Some(Replica {
                chain: Arc::new(EngineChain {
                    base,
                    deltas: Vec::new(),
                }),
                since: Vec::new(),
            });
        }
        Ok(written)
    }

    /// What a delta of `changes` entries committed now would link to;
    /// `None` when the checkpoint is to be a new base: when the chain would
    /// be too long, or when recovering from it would replay more than twice
    /// the entries of the state it restores (`live`, as the job counted
    /// them when it took the delta). A state that only grew is chained on (its chain
    /// replays no more than a base would hold); one that shrank is
    /// rewritten sooner.
    fn link(&self, changes: usize, live: usize) -> Option<Link> {
        let tip = self.writer.tip?;
        let limits = self.writer.compaction;
        // A test knob: `checkpoint::compact::every=return(N)` makes chains
        // at most N long.
        let every = failpoint::value("checkpoint::compact::every").and_then(|v| v.parse().ok());
        let too_long = tip.chain_len >= every.unwrap_or(limits.max_chain);
        let replayed = tip.base_entries + tip.chain_entries + changes;
        let too_big = replayed > live.max(limits.min_entries).saturating_mul(2);
        (!too_long && !too_big).then_some(Link {
            base: tip.base,
            parent: tip.id,
            parent_crc: tip.crc,
        })
    }

    /// Writes a whole checkpoint as a new base. For tools and tests: the
    /// job commits deltas ([`CheckpointStore::commit_delta`]).
    pub fn commit(&mut self, checkpoint: &Checkpoint) -> Result<usize, CheckpointError> {
        let stored = checkpoint.clone().map_engine(Stored::Base);
        let written = self.write(&stored, 0)?;
        self.writer.replica = None;
        self.writer.failed = None;
        Ok(written.bytes)
    }

    /// Writes `checkpoint` and drops the checkpoints no longer kept, in one
    /// batch, and flushes (see the module docs).
    fn write(
        &mut self,
        checkpoint: &StoredCheckpoint,
        changes: usize,
    ) -> Result<Written, CheckpointError> {
        let id = checkpoint.id;
        let (base, base_entries) = match &checkpoint.engine {
            Stored::Base(state) => (id, Some(entries(state))),
            Stored::Delta(link, _) => (link.base, None),
        };
        let frame = codec::encode(checkpoint).map_err(CheckpointError::Encode)?;
        let crc = codec::frame_crc(&frame);
        let mut chains = self.writer.chains.clone();
        chains.retain(|(_, last)| *last < id);
        match chains.last_mut() {
            Some((b, last)) if *b == base => *last = id,
            _ => chains.push((base, id)),
        }
        let first_kept = keep_from(&chains, self.keep);
        chains.retain(|(b, _)| *b >= first_kept);
        let mut batch = Vec::new();
        for old in self.ids()? {
            // Leftovers of attempts that never became durable, and
            // checkpoints past the one recovered from, are dropped too.
            if old < first_kept || old >= id {
                batch.extend(self.keys_of(old)?.into_iter().map(kv::Op::Remove));
            }
        }
        for (piece, bytes) in frame.chunks(super::CHUNK_BYTES).enumerate() {
            let key = super::store::chunk_key(id, piece as u32).to_vec();
            batch.push(kv::Op::Insert(key, bytes.to_vec()));
        }
        let compaction = base == id && self.writer.tip.is_some();
        self.apply_and_flush(batch, compaction)?;
        let tip = self.writer.tip.filter(|t| t.base == base);
        self.writer.tip = Some(Tip {
            id,
            crc,
            base,
            base_entries: base_entries.or(tip.map(|t| t.base_entries)).unwrap_or(0),
            chain_entries: tip.map_or(0, |t| t.chain_entries + changes),
            chain_len: tip.map_or(1, |t| t.chain_len + 1),
        });
        self.writer.chains = chains;
        Ok(Written {
            bytes: frame.len(),
            base: base == id,
            changes,
        })
    }

    /// Applies `batch` and flushes it, through the crash points of a commit
    /// (and of a compaction, when the checkpoint is a new base that follows
    /// a chain).
    fn apply_and_flush(&self, batch: Vec<kv::Op>, compaction: bool) -> Result<(), CheckpointError> {
        let step = |name: &str| {
            crash_point(&format!("checkpoint::commit::{name}"));
            if compaction {
                crash_point(&format!("checkpoint::compact::{name}"));
            }
        };
        step("before_write");
        self.db.apply(batch).map_err(|e| self.io(e))?;
        step("before_flush");
        self.db.flush().map_err(|e| self.io(e))?;
        step("after_flush");
        Ok(())
    }
}
