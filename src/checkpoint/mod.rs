//! Checkpoints: one atomic, durable record per barrier, kept in sled (SPEC §5).
//!
//! A checkpoint holds everything needed to resume as if the process had never
//! stopped: the engine state (panes, distinct-user sets, dedup ids,
//! per-partition clocks), the next offset to read per partition, the length of
//! the anomaly log, and the window rows that the sink has not acknowledged
//! yet (the pending output).
//!
//! # Bases and deltas
//!
//! The engine state is not copied at every barrier. A checkpoint stores it
//! either whole (a **base**, [`Stored::Base`]) or as the changes since the
//! checkpoint before it (a **delta**, [`Stored::Delta`]): the users and ids
//! added since then, and the small state (counters, fired windows, clocks)
//! in full. A delta names the base of its chain, its parent (the checkpoint
//! before it) and the crc of the parent's payload, so it only ever applies to
//! the exact checkpoint it was taken after. Everything else a checkpoint
//! records (offsets, anomaly-log length, pending output) is small and always
//! in full.
//!
//! The job hands the committer a delta at every barrier ([`EngineDelta`]:
//! taking one costs the job thread a few microseconds). The committer keeps
//! the state as of the last checkpoint as the chain that restores it (the
//! **replica**: `writer`), and stores the checkpoint as a base instead of a
//! delta when recovering from the chain would replay more than twice the
//! entries of the state it restores (or the chain is [`MAX_CHAIN`] long):
//! that is the compaction, the one time the replica is built into an
//! engine, and it is one checkpoint written in one batch like any other. So
//! recovery reads at most about twice the state, and the bytes written per
//! checkpoint are those of what changed, plus a base now and then.
//!
//! # Durability
//!
//! Each checkpoint is framed (`codec`: length + crc32 over bincode) and written
//! with the deletion of the ones no longer needed in one sled batch, then
//! `flush()`ed: it counts only once the commit returns. Kept are the current
//! chain and the one before it whole (so a damaged base falls back to the
//! checkpoint before it), and more whole chains back until at least `keep`
//! checkpoints are kept.
//!
//! # Layout
//!
//! The frame is stored in pieces of at most [`CHUNK_BYTES`], under the keys
//! `id ++ piece number` (big-endian u64 and u32, so iteration is in id, then
//! piece, order); reading a checkpoint concatenates its pieces, and the
//! frame's length and crc catch a missing or damaged one. Why pieces: sled
//! 0.34 stores a tree node bigger than 1/4 of its 512 KiB segment as a
//! separate "blob" file, and never deletes blob files (sled issue #786), so
//! one value per checkpoint leaked a file the size of every checkpoint ever
//! committed and filled the disk. A leaf holds at most 17 entries, so with
//! 4 KiB pieces no node reaches that size and sled reclaims the space of
//! dropped checkpoints. A key of the id alone (one whole frame) is the layout
//! of older state directories, still read and dropped.
//!
//! # Recovery
//!
//! `recover` walks from the newest id down; for each, it follows the links
//! down to the base and uses the first checkpoint whose whole chain
//! verifies, decodes and links up, logging each one it skips and why. A
//! checkpoint that does not verify is never used, nor is any delta that
//! depends on it: a damaged delta falls back to the one before it, a damaged
//! base to the end of the chain before. Checkpoints of format 2 (whole
//! states, before deltas) are read as bases.

pub mod codec;
pub mod committer;
pub mod kv;
mod legacy;
mod read;
mod store;
mod writer;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::engine::{EngineDelta, EngineSnapshot};
use crate::window::WindowRow;

pub use codec::CodecError;
pub use read::decode_stored;
pub use store::{chunk_key, is_no_space, CheckpointStore, CHUNK_BYTES};
pub use writer::{Written, MAX_CHAIN};

#[derive(Debug, Error)]
pub enum CheckpointError {
    #[error("cannot open the checkpoint store at {path}: {source}. {}", store::open_advice(.source))]
    Open { path: PathBuf, source: sled::Error },
    #[error("checkpoint store I/O failed at {path}: {source}. {}", store::io_advice(.source))]
    Io { path: PathBuf, source: sled::Error },
    #[error("checkpoint {id} is corrupt: {source}")]
    Corrupt { id: u64, source: CodecError },
    #[error("checkpoint {id} is a delta on checkpoint {needs}, which {why}")]
    Unusable { id: u64, needs: u64, why: String },
    #[error("no checkpoint {0} in the store")]
    NotFound(u64),
    #[error("cannot encode the checkpoint: {0}")]
    Encode(CodecError),
    #[error(
        "checkpoint {id} cannot be taken: {why} (a bug: please report it with the log); \
         restart the job to resume from the last checkpoint"
    )]
    Inconsistent { id: u64, why: String },
    #[error(
        "the checkpoint committer thread ended before checkpoint {0} was committed \
         (a bug: please report it with the log); restart the job to resume from the last checkpoint"
    )]
    CommitterGone(u64),
}

/// One batch of window rows emitted between two barriers, waiting for the
/// sink's acknowledgement. Tagged with the checkpoint that first recorded it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingBatch {
    pub checkpoint_id: u64,
    pub rows: Vec<WindowRow>,
}

/// Everything one checkpoint records. `S` is the engine state, in the form
/// at hand: a whole snapshot (the default, and what [`CheckpointStore::load`]
/// returns), the changes since the checkpoint before (what the job hands the
/// committer), a stored base or delta ([`Stored`], what a frame holds), or a
/// base with the deltas after it ([`EngineChain`], what recovery reads).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint<S = EngineSnapshot> {
    pub id: u64,
    /// Wall clock at commit, epoch ms.
    pub created_ms: i64,
    /// Identifies the input (topic or file set), so a state directory is not
    /// resumed against another source by mistake.
    pub source_id: String,
    /// Next offset to read, per partition.
    pub offsets: BTreeMap<u32, u64>,
    /// Bytes of the anomaly log covered by this checkpoint.
    pub anomaly_log_len: u64,
    pub engine: S,
    /// Emitted rows not yet acknowledged by the sink, oldest first.
    pub pending: Vec<PendingBatch>,
    /// What the input is beyond its name, where the source can tell (Kafka:
    /// cluster and topic ids): a topic recreated under the same name is not
    /// resumed at the old offsets.
    pub source_identity: Option<String>,
    /// A bounded run in progress: the offsets it stops at, so that a run
    /// resumed after a crash stops where the one that was started would have.
    /// `None` once a bounded run is complete, and in live runs.
    pub bounded_end: Option<BTreeMap<u32, u64>>,
}

impl<S> Checkpoint<S> {
    /// The same checkpoint with its engine state in another form.
    pub fn map_engine<T>(self, f: impl FnOnce(S) -> T) -> Checkpoint<T> {
        Checkpoint {
            id: self.id,
            created_ms: self.created_ms,
            source_id: self.source_id,
            offsets: self.offsets,
            anomaly_log_len: self.anomaly_log_len,
            engine: f(self.engine),
            pending: self.pending,
            source_identity: self.source_identity,
            bounded_end: self.bounded_end,
        }
    }
}

/// A checkpoint as one frame holds it (format 5).
pub type StoredCheckpoint = Checkpoint<Stored>;

/// How a checkpoint's engine state is stored (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Stored {
    /// The whole state: a chain starts here.
    Base(EngineSnapshot),
    /// The changes since the checkpoint `Link::parent`.
    Delta(Link, EngineDelta),
}

impl Stored {
    /// The job watermark the state holds.
    pub fn watermark(&self) -> i64 {
        match self {
            Stored::Base(s) => s.watermark,
            Stored::Delta(_, d) => d.watermark,
        }
    }
}

/// What a delta applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    /// The id of the chain's base.
    pub base: u64,
    /// The id of the checkpoint just before it, which it changes.
    pub parent: u64,
    /// The crc32 of the parent's stored payload: a delta applies only to
    /// the exact checkpoint it was taken after, not to another one stored
    /// under the same id later.
    pub parent_crc: u32,
}

/// What the job hands the committer at a barrier: a checkpoint whose state
/// is the changes since the checkpoint before, and the entries (user-set
/// entries and dedup ids, [`crate::engine::Engine::live_entries`]) of the
/// state it leaves, which decide when a chain is rewritten as a base.
#[derive(Debug, Clone)]
pub struct Delta {
    pub checkpoint: Checkpoint<EngineDelta>,
    pub live_entries: usize,
}

/// A checkpoint's engine state as recovery reads it: the base of its chain
/// and the deltas after it, oldest first ([`crate::engine::Engine::restore_chain`]).
#[derive(Debug, Clone, PartialEq)]
pub struct EngineChain {
    pub base: EngineSnapshot,
    pub deltas: Vec<EngineDelta>,
}

/// What recovery hands the job: the newest usable checkpoint, its state as a
/// chain (shared with the committer, which builds its replica from it).
pub type Recovered = Checkpoint<Arc<EngineChain>>;

/// What `list` shows without decoding the whole state.
#[derive(Debug, Clone)]
pub struct CheckpointInfo {
    pub id: u64,
    pub bytes: usize,
    pub status: Result<CheckpointSummary, String>,
}

#[derive(Debug, Clone)]
pub struct CheckpointSummary {
    pub created_ms: i64,
    pub source_id: String,
    pub offsets: BTreeMap<u32, u64>,
    pub anomaly_log_len: u64,
    pub pending_rows: usize,
    pub watermark_ms: i64,
    /// `base`, or `delta on <parent>` (base `<id>`).
    pub kind: String,
}

#[cfg(test)]
mod tests;
