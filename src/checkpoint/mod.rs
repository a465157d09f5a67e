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
//! `flush()`ed: it counts only once `commit` returns.
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
//! `load_latest` walks from the newest id down and returns the first frame
//! that verifies and decodes, logging each bad one it skips. A checkpoint that
//! does not verify is never used.

pub mod codec;
pub mod committer;
pub mod kv;

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
    #[error(
        "the checkpoint committer thread ended before checkpoint {0} was committed \
         (a bug: please report it with the log); restart the job to resume from the last checkpoint"
    )]
    CommitterGone(u64),
}

/// The largest piece of a frame stored under one key (see the module docs).
pub const CHUNK_BYTES: usize = 4096;

/// The key of piece `piece` of checkpoint `id`.
fn chunk_key(id: u64, piece: u32) -> [u8; 12] {
    let mut key = [0u8; 12];
    key[..8].copy_from_slice(&id.to_be_bytes());
    key[8..].copy_from_slice(&piece.to_be_bytes());
    key
}

/// The checkpoint id a key belongs to.
fn key_id(key: &[u8]) -> Option<u64> {
    key.get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
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
    } else if matches!(e, sled::Error::Corruption { .. }) {
        "The store's files are damaged. Move the state directory aside and start again from the \
         beginning of the input (the sink's idempotence absorbs the recomputed rows)"
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
    /// What the input is beyond its name, where the source can tell (Kafka:
    /// cluster and topic ids): a topic recreated under the same name is not
    /// resumed at the old offsets.
    pub source_identity: Option<String>,
    /// A bounded run in progress: the offsets it stops at, so that a run
    /// resumed after a crash stops where the one that was started would have.
    /// `None` once a bounded run is complete, and in live runs.
    pub bounded_end: Option<BTreeMap<u32, u64>>,
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
    db: kv::Kv,
    path: PathBuf,
    keep: usize,
    /// Set by an I/O error. sled's own drop then flushes in a loop that can
    /// wait forever for a write the full disk cannot take, so a failed store
    /// is leaked rather than dropped (see `Drop`).
    failed: AtomicBool,
}

impl Drop for CheckpointStore {
    fn drop(&mut self) {
        if let (true, kv::Kv::Sled(db)) = (self.failed.load(Ordering::Relaxed), &self.db) {
            // Keeps one handle alive for good: sled never runs its final
            // flush. Everything durable is already on disk; what was not is
            // exactly what a crash would lose, which recovery handles.
            std::mem::forget(db.clone());
        }
    }
}

/// Removes the snapshot files sled left unfinished in the store at `path`,
/// unless another process holds the store. Returns the ones removed.
///
/// sled 0.34 writes a snapshot of its page table at every open, as
/// `snap.<lsn>.generating`, and renames it when complete. An open that dies
/// before the rename (a crash, or a full disk) leaves that file behind, and
/// every later open takes it for the newest snapshot and fails with "Read
/// corrupted data": one restart on a full disk made the state directory
/// unusable. The file was never complete, so removing it is safe: sled uses
/// the previous snapshot or replays its log. It is done under sled's own
/// lock (`flock` on `db`), so a running job's file is never touched.
fn remove_unfinished_snapshots(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    use std::os::fd::AsRawFd;
    let db = match std::fs::File::open(path.join("db")) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    // SAFETY: flock on a descriptor this function owns; released on close.
    if unsafe { libc::flock(db.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        // In use: sled's open reports that, and its files are not ours to touch.
        return Ok(Vec::new());
    }
    let mut removed = Vec::new();
    for entry in std::fs::read_dir(path)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            std::fs::remove_file(entry.path())?;
            removed.push(entry.path());
        }
    }
    drop(db);
    Ok(removed)
}

impl CheckpointStore {
    pub fn open(dir: &Path, keep: usize) -> Result<Self, CheckpointError> {
        let path = dir.join("checkpoints");
        for file in remove_unfinished_snapshots(&path).map_err(|e| CheckpointError::Open {
            path: path.clone(),
            source: sled::Error::Io(e),
        })? {
            tracing::warn!(
                file = %file.display(),
                "removed an unfinished sled snapshot left by an interrupted start (it would make the store \
                 unreadable)"
            );
        }
        let db = sled::Config::new()
            .path(&path)
            .mode(sled::Mode::LowSpace)
            .open()
            .map_err(|source| CheckpointError::Open {
                path: path.clone(),
                source,
            })?;
        Ok(CheckpointStore {
            db: kv::Kv::Sled(db),
            path,
            keep: keep.max(1),
            failed: AtomicBool::new(false),
        })
    }

    /// A store in memory, with sled's durability contract (see `kv`): for
    /// deterministic simulation, where a crash is the drop of every handle
    /// but this one.
    pub fn in_memory(store: std::sync::Arc<kv::MemoryKv>, keep: usize) -> Self {
        CheckpointStore {
            db: kv::Kv::Memory(store),
            path: PathBuf::from("(memory)"),
            keep: keep.max(1),
            failed: AtomicBool::new(false),
        }
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
        // One lookup per checkpoint, not one per piece: jump to the next id.
        let mut ids = Vec::new();
        let mut from = Some(0u64);
        while let Some(start) = from {
            let Some(key) = self
                .db
                .first_key_from(&start.to_be_bytes())
                .map_err(|e| self.io(e))?
            else {
                break;
            };
            match key_id(&key) {
                Some(id) => {
                    ids.push(id);
                    from = id.checked_add(1);
                }
                // A key shorter than an id is not ours. Padded with zeros it
                // sorts right after itself: go on from there.
                None => {
                    let mut padded = [0u8; 8];
                    padded[..key.len()].copy_from_slice(&key);
                    from = Some(u64::from_be_bytes(padded));
                }
            }
        }
        Ok(ids)
    }

    /// Every key holding a piece of checkpoint `id` (or its whole frame, in
    /// the older layout), in order.
    fn keys_of(&self, id: u64) -> Result<Vec<Vec<u8>>, CheckpointError> {
        Ok(self
            .db
            .scan_prefix(&id.to_be_bytes())
            .map_err(|e| self.io(e))?
            .into_iter()
            .map(|(k, _)| k)
            .collect())
    }

    /// Writes `checkpoint` and drops the ones beyond `keep`, atomically, then
    /// makes it durable. Returns the frame size in bytes.
    pub fn commit(&self, checkpoint: &Checkpoint) -> Result<usize, CheckpointError> {
        let frame = codec::encode(checkpoint).map_err(CheckpointError::Encode)?;
        let mut batch = Vec::new();
        // Leftovers of an attempt at this id that never became durable.
        for key in self.keys_of(checkpoint.id)? {
            batch.push(kv::Op::Remove(key));
        }
        for (piece, bytes) in frame.chunks(CHUNK_BYTES).enumerate() {
            batch.push(kv::Op::Insert(
                chunk_key(checkpoint.id, piece as u32).to_vec(),
                bytes.to_vec(),
            ));
        }
        let ids = self.ids()?;
        let older: Vec<u64> = ids.into_iter().filter(|id| *id < checkpoint.id).collect();
        let drop_count = (older.len() + 1).saturating_sub(self.keep);
        for id in older.iter().take(drop_count) {
            for key in self.keys_of(*id)? {
                batch.push(kv::Op::Remove(key));
            }
        }
        failpoint::crash_point("checkpoint::commit::before_write");
        self.db.apply(batch).map_err(|e| self.io(e))?;
        failpoint::crash_point("checkpoint::commit::before_flush");
        self.db.flush().map_err(|e| self.io(e))?;
        failpoint::crash_point("checkpoint::commit::after_flush");
        Ok(frame.len())
    }

    /// The stored frame of checkpoint `id`: its pieces, concatenated.
    pub fn raw(&self, id: u64) -> Result<Vec<u8>, CheckpointError> {
        let mut frame = Vec::new();
        let mut found = false;
        for (_, value) in self
            .db
            .scan_prefix(&id.to_be_bytes())
            .map_err(|e| self.io(e))?
        {
            frame.extend_from_slice(&value);
            found = true;
        }
        if found {
            Ok(frame)
        } else {
            Err(CheckpointError::NotFound(id))
        }
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

    /// The sled database under the store (tests of the on-disk layout).
    #[cfg(test)]
    fn sled(&self) -> &sled::Db {
        match &self.db {
            kv::Kv::Sled(db) => db,
            kv::Kv::Memory(_) => panic!("an in-memory store has no sled database"),
        }
    }

    /// Flips one byte in the middle of a stored checkpoint: the demo's and the
    /// tests' way to show that a corrupt checkpoint is detected and skipped.
    pub fn corrupt(&self, id: u64) -> Result<(), CheckpointError> {
        let mut at = self.raw(id)?.len() / 2;
        for (key, value) in self
            .db
            .scan_prefix(&id.to_be_bytes())
            .map_err(|e| self.io(e))?
        {
            if at < value.len() {
                let mut value = value;
                value[at] ^= 0x5a;
                self.db
                    .apply(vec![kv::Op::Insert(key, value)])
                    .map_err(|e| self.io(e))?;
                break;
            }
            at -= value.len();
        }
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

    pub(super) fn checkpoint(id: u64) -> Checkpoint {
        Checkpoint {
            id,
            created_ms: 1,
            source_id: "test".into(),
            offsets: [(0, id * 10)].into_iter().collect(),
            anomaly_log_len: id,
            engine: Engine::with_seed(SPEC, 1, 1).snapshot(),
            pending: vec![],
            source_identity: None,
            bounded_end: None,
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

    /// A checkpoint of about `kib` KiB (its pending rows make the size).
    fn big_checkpoint(id: u64, kib: usize) -> Checkpoint {
        let row = |i: usize| crate::window::WindowRow {
            window_start: i as i64 * 30,
            window_end: i as i64 * 30 + 60,
            order_cnt: id * 1_000_003 + i as u64,
            gmv_cents: (id as u128) << 70 | i as u128,
            user_cnt: i as u64 * 7919,
            version: id,
            updated_at: 1_764_064_800,
        };
        Checkpoint {
            pending: vec![PendingBatch {
                checkpoint_id: id,
                rows: (0..kib * 1024 / 40).map(row).collect(),
            }],
            ..checkpoint(id)
        }
    }

    fn dir_bytes(dir: &Path) -> u64 {
        std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| {
                let m = e.metadata().unwrap();
                if m.is_dir() {
                    dir_bytes(&e.path())
                } else {
                    m.len()
                }
            })
            .sum()
    }

    #[test]
    fn a_big_checkpoint_is_stored_in_pieces_and_read_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path(), 3).unwrap();
        let cp = big_checkpoint(1, 300);
        let frame = codec::encode(&cp).unwrap();
        assert!(frame.len() > 250 * 1024, "{}", frame.len());
        assert_eq!(store.commit(&cp).unwrap(), frame.len());
        let values: Vec<usize> = store
            .sled()
            .iter()
            .values()
            .map(|v| v.unwrap().len())
            .collect();
        assert_eq!(values.len(), frame.len().div_ceil(CHUNK_BYTES));
        assert!(values.iter().all(|n| *n <= CHUNK_BYTES));
        assert_eq!(store.raw(1).unwrap(), frame);
        assert_eq!(store.ids().unwrap(), vec![1]);
        assert_eq!(store.load(1).unwrap(), cp);
        // Damage in any piece is caught.
        store.corrupt(1).unwrap();
        assert!(matches!(
            store.load(1),
            Err(CheckpointError::Corrupt { id: 1, .. })
        ));
    }

    #[test]
    fn big_checkpoints_do_not_fill_the_disk() {
        // With one sled value per checkpoint, sled kept a blob file of every
        // checkpoint ever committed: 80 checkpoints of 1 MiB left 80 MiB.
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path(), 3).unwrap();
        let size = codec::encode(&big_checkpoint(1, 1024)).unwrap().len() as u64;
        for id in 1..=80 {
            store.commit(&big_checkpoint(id, 1024)).unwrap();
        }
        assert_eq!(store.ids().unwrap(), vec![78, 79, 80]);
        assert_eq!(store.load(80).unwrap(), big_checkpoint(80, 1024));
        let blobs = std::fs::read_dir(dir.path().join("checkpoints/blobs"))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(blobs, 0, "sled stored nodes as blob files");
        let used = dir_bytes(dir.path());
        assert!(
            used < 30 * size,
            "{used} bytes on disk for 3 live checkpoints of {size} bytes"
        );
    }

    #[test]
    fn a_state_directory_of_the_older_layout_is_read_and_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path(), 2).unwrap();
        // Before pieces: the whole frame under the id alone.
        for id in 1..=2 {
            let frame = codec::encode(&checkpoint(id)).unwrap();
            store.sled().insert(id.to_be_bytes(), frame).unwrap();
        }
        assert_eq!(store.ids().unwrap(), vec![1, 2]);
        assert_eq!(store.load_latest().unwrap().0.unwrap(), checkpoint(2));
        store.commit(&checkpoint(3)).unwrap();
        store.commit(&checkpoint(4)).unwrap();
        assert_eq!(store.ids().unwrap(), vec![3, 4]);
        assert_eq!(store.sled().len(), 2);
    }

    #[test]
    fn an_unfinished_sled_snapshot_does_not_make_the_store_unreadable() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = CheckpointStore::open(dir.path(), 3).unwrap();
            store.commit(&checkpoint(1)).unwrap();
        }
        // What an open interrupted by a crash or a full disk leaves behind.
        let leftover = dir
            .path()
            .join("checkpoints/snap.7FFFFFFFFFFFFFFF.generating");
        std::fs::write(&leftover, b"").unwrap();
        let store = CheckpointStore::open(dir.path(), 3).unwrap();
        assert!(!leftover.exists());
        assert_eq!(store.load_latest().unwrap().0.unwrap(), checkpoint(1));
        // A store in use is left alone.
        std::fs::write(&leftover, b"").unwrap();
        assert!(remove_unfinished_snapshots(&dir.path().join("checkpoints"))
            .unwrap()
            .is_empty());
        assert!(leftover.exists());
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
