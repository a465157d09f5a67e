//! Checkpoints: one atomic, durable record per barrier, kept in sled (SPEC §5).
//!
//! A checkpoint holds everything needed to resume as if the process had never
//! stopped: the engine state (panes, distinct-user sets, dedup ids,
//! per-partition clocks), the next offset to read per partition, the length of
//! the anomaly log, and the window rows that the sink has not acknowledged
//! yet (the pending output).
//!
//! # Durability
//!
//! Each checkpoint is framed (`codec`: length + crc32 over bincode) and written
//! with the deletion of the ones beyond `keep` in one sled batch, then
//! `flush()`ed: it counts only once `commit` returns. Keys are the checkpoint
//! id, big-endian, so iteration is in id order.
//!
//! # Recovery
//!
//! `load_latest` walks from the newest id down and returns the first frame
//! that verifies and decodes, logging each bad one it skips. A checkpoint that
//! does not verify is never used.

pub mod codec;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::engine::EngineSnapshot;
use crate::failpoint;
use crate::window::WindowRow;

pub use codec::CodecError;

#[derive(Debug, Error)]
pub enum CheckpointError {
    #[error("cannot open the checkpoint store at {path}: {source}. {}", open_advice(.source))]
    Open { path: PathBuf, source: sled::Error },
    #[error("checkpoint store I/O failed at {path}: {source}. {}", io_advice(.source))]
    Io { path: PathBuf, source: sled::Error },
    #[error("checkpoint {id} is corrupt: {source}")]
    Corrupt { id: u64, source: CodecError },
    #[error("no checkpoint {0} in the store")]
    NotFound(u64),
    #[error("cannot encode the checkpoint: {0}")]
    Encode(CodecError),
}

/// Whether `e` says the filesystem (or the user's quota) is full.
pub fn is_no_space(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull
        || e.raw_os_error() == Some(libc::ENOSPC)
        || e.raw_os_error() == Some(libc::EDQUOT)
}

fn sled_no_space(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if is_no_space(io))
}

const NO_SPACE_ADVICE: &str = "The filesystem holding the state directory is full: free space on it, or \
    move the state directory to a bigger filesystem (and point --state-dir at it), then restart. The job \
    resumes from its last committed checkpoint; nothing is lost";

fn io_advice(e: &sled::Error) -> &'static str {
    if sled_no_space(e) {
        NO_SPACE_ADVICE
    } else {
        "Check the disk (space, permissions) and restart"
    }
}

fn open_advice(e: &sled::Error) -> &'static str {
    if sled_no_space(e) {
        NO_SPACE_ADVICE
    } else {
        "Is another streamforge job using this state directory? Stop it, or pick another --state-dir"
    }
}

/// One batch of window rows emitted between two barriers, waiting for the
/// sink's acknowledgement. Tagged with the checkpoint that first recorded it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingBatch {
    pub checkpoint_id: u64,
    pub rows: Vec<WindowRow>,
}

/// Everything one checkpoint records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
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
    pub engine: EngineSnapshot,
    /// Emitted rows not yet acknowledged by the sink, oldest first.
    pub pending: Vec<PendingBatch>,
}

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
}

pub struct CheckpointStore {
    db: sled::Db,
    path: PathBuf,
    keep: usize,
    /// Set by an I/O error. sled's own drop then flushes in a loop that can
    /// wait forever for a write the full disk cannot take, so a failed store
    /// is leaked rather than dropped (see `Drop`).
    failed: AtomicBool,
}

impl Drop for CheckpointStore {
    fn drop(&mut self) {
        if self.failed.load(Ordering::Relaxed) {
            // Keeps one handle alive for good: sled never runs its final
            // flush. Everything durable is already on disk; what was not is
            // exactly what a crash would lose, which recovery handles.
            std::mem::forget(self.db.clone());
        }
    }
}

impl CheckpointStore {
    pub fn open(dir: &Path, keep: usize) -> Result<Self, CheckpointError> {
        let path = dir.join("checkpoints");
        let db = sled::Config::new()
            .path(&path)
            .mode(sled::Mode::LowSpace)
            .open()
            .map_err(|source| CheckpointError::Open {
                path: path.clone(),
                source,
            })?;
        Ok(CheckpointStore {
            db,
            path,
            keep: keep.max(1),
            failed: AtomicBool::new(false),
        })
    }

    fn io(&self, source: sled::Error) -> CheckpointError {
        self.failed.store(true, Ordering::Relaxed);
        CheckpointError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Ids present, oldest first.
    pub fn ids(&self) -> Result<Vec<u64>, CheckpointError> {
        let mut ids = Vec::new();
        for key in self.db.iter().keys() {
            let key = key.map_err(|e| self.io(e))?;
            if let Ok(bytes) = <[u8; 8]>::try_from(key.as_ref()) {
                ids.push(u64::from_be_bytes(bytes));
            }
        }
        Ok(ids)
    }

    /// Writes `checkpoint` and drops the ones beyond `keep`, atomically, then
    /// makes it durable. Returns the frame size in bytes.
    pub fn commit(&self, checkpoint: &Checkpoint) -> Result<usize, CheckpointError> {
        let frame = codec::encode(checkpoint).map_err(CheckpointError::Encode)?;
        let mut batch = sled::Batch::default();
        batch.insert(&checkpoint.id.to_be_bytes(), frame.as_slice());
        let ids = self.ids()?;
        let older: Vec<u64> = ids.into_iter().filter(|id| *id < checkpoint.id).collect();
        let drop_count = (older.len() + 1).saturating_sub(self.keep);
        for id in older.iter().take(drop_count) {
            batch.remove(&id.to_be_bytes());
        }
        failpoint::crash_point("checkpoint::commit::before_write");
        self.db.apply_batch(batch).map_err(|e| self.io(e))?;
        failpoint::crash_point("checkpoint::commit::before_flush");
        self.db.flush().map_err(|e| self.io(e))?;
        failpoint::crash_point("checkpoint::commit::after_flush");
        Ok(frame.len())
    }

    pub fn raw(&self, id: u64) -> Result<Vec<u8>, CheckpointError> {
        self.db
            .get(id.to_be_bytes())
            .map_err(|e| self.io(e))?
            .map(|v| v.to_vec())
            .ok_or(CheckpointError::NotFound(id))
    }

    pub fn load(&self, id: u64) -> Result<Checkpoint, CheckpointError> {
        let raw = self.raw(id)?;
        codec::decode(&raw).map_err(|source| CheckpointError::Corrupt { id, source })
    }

    /// The newest checkpoint that verifies, skipping (and reporting) corrupt
    /// ones. `None` when there is no usable checkpoint at all.
    pub fn load_latest(
        &self,
    ) -> Result<(Option<Checkpoint>, Vec<CheckpointError>), CheckpointError> {
        let mut skipped = Vec::new();
        for id in self.ids()?.into_iter().rev() {
            match self.load(id) {
                Ok(c) => return Ok((Some(c), skipped)),
                Err(e @ CheckpointError::Corrupt { .. }) => skipped.push(e),
                Err(e) => return Err(e),
            }
        }
        Ok((None, skipped))
    }

    pub fn list(&self) -> Result<Vec<CheckpointInfo>, CheckpointError> {
        let mut out = Vec::new();
        for id in self.ids()? {
            let raw = self.raw(id)?;
            let status = codec::decode::<Checkpoint>(&raw)
                .map(|c| CheckpointSummary {
                    created_ms: c.created_ms,
                    source_id: c.source_id.clone(),
                    offsets: c.offsets.clone(),
                    anomaly_log_len: c.anomaly_log_len,
                    pending_rows: c.pending.iter().map(|b| b.rows.len()).sum(),
                    watermark_ms: c.engine.watermark,
                })
                .map_err(|e| e.to_string());
            out.push(CheckpointInfo {
                id,
                bytes: raw.len(),
                status,
            });
        }
        Ok(out)
    }

    /// Flips one byte in the middle of a stored checkpoint: the demo's and the
    /// tests' way to show that a corrupt checkpoint is detected and skipped.
    pub fn corrupt(&self, id: u64) -> Result<(), CheckpointError> {
        let mut raw = self.raw(id)?;
        let at = raw.len() / 2;
        raw[at] ^= 0x5a;
        self.db
            .insert(id.to_be_bytes(), raw)
            .map_err(|e| self.io(e))?;
        self.db.flush().map_err(|e| self.io(e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Engine;
    use crate::window::WindowSpec;

    const SPEC: WindowSpec = WindowSpec::DEFAULT;

    fn checkpoint(id: u64) -> Checkpoint {
        Checkpoint {
            id,
            created_ms: 1,
            source_id: "test".into(),
            offsets: [(0, id * 10)].into_iter().collect(),
            anomaly_log_len: id,
            engine: Engine::with_seed(SPEC, 1, 1).snapshot(),
            pending: vec![],
        }
    }

    #[test]
    fn keeps_the_newest_n() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path(), 3).unwrap();
        for id in 1..=5 {
            store.commit(&checkpoint(id)).unwrap();
        }
        assert_eq!(store.ids().unwrap(), vec![3, 4, 5]);
        assert_eq!(store.load_latest().unwrap().0.unwrap().id, 5);
    }

    #[test]
    fn a_corrupt_newest_checkpoint_falls_back_to_the_previous_one() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = CheckpointStore::open(dir.path(), 3).unwrap();
            for id in 1..=3 {
                store.commit(&checkpoint(id)).unwrap();
            }
            store.corrupt(3).unwrap();
        }
        let store = CheckpointStore::open(dir.path(), 3).unwrap();
        let (latest, skipped) = store.load_latest().unwrap();
        assert_eq!(latest.unwrap(), checkpoint(2));
        assert_eq!(skipped.len(), 1);
        assert!(matches!(skipped[0], CheckpointError::Corrupt { id: 3, .. }));
    }

    #[test]
    fn survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = CheckpointStore::open(dir.path(), 2).unwrap();
            store.commit(&checkpoint(7)).unwrap();
        }
        let store = CheckpointStore::open(dir.path(), 2).unwrap();
        assert_eq!(store.load(7).unwrap(), checkpoint(7));
    }
}
