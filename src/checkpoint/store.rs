//! The store under the checkpoints: frames kept in pieces under
//! `id ++ piece` keys (see the module docs of `checkpoint`), the ids
//! present, and the state directory's sled database (or memory).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use super::{kv, writer, CheckpointError};

/// The largest piece of a frame stored under one key (see the module docs).
pub const CHUNK_BYTES: usize = 4096;

/// The key of piece `piece` of checkpoint `id`.
pub fn chunk_key(id: u64, piece: u32) -> [u8; 12] {
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

pub(super) fn io_advice(e: &sled::Error) -> &'static str {
    if sled_no_space(e) {
        NO_SPACE_ADVICE
    } else {
        "Check the disk (space, permissions) and restart"
    }
}

pub(super) fn open_advice(e: &sled::Error) -> &'static str {
    if sled_no_space(e) {
        NO_SPACE_ADVICE
    } else if matches!(e, sled::Error::Corruption { .. }) {
        "The store's files are damaged. Move the state directory aside and start again from the \
         beginning of the input (the sink's idempotence absorbs the recomputed rows)"
    } else {
        "Is another streamforge job using this state directory? Stop it, or pick another --state-dir"
    }
}

pub struct CheckpointStore {
    pub(super) db: kv::Kv,
    path: PathBuf,
    pub(super) keep: usize,
    /// What committing needs to know: the chains, the replica (`writer`).
    pub(super) writer: writer::Writer,
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
pub(super) fn remove_unfinished_snapshots(path: &Path) -> std::io::Result<Vec<PathBuf>> {
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
        let db = open_sled(&path).map_err(|source| CheckpointError::Open {
            path: path.clone(),
            source,
        })?;
        Ok(CheckpointStore {
            db: kv::Kv::Sled(db),
            path,
            keep: keep.max(1),
            writer: writer::Writer::default(),
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
            writer: writer::Writer::default(),
            failed: AtomicBool::new(false),
        }
    }

    pub(super) fn io(&self, source: sled::Error) -> CheckpointError {
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
    pub(super) fn keys_of(&self, id: u64) -> Result<Vec<Vec<u8>>, CheckpointError> {
        Ok(self
            .db
            .scan_prefix(&id.to_be_bytes())
            .map_err(|e| self.io(e))?
            .into_iter()
            .map(|(k, _)| k)
            .collect())
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

    /// The sled database under the store (tests of the on-disk layout).
    #[cfg(test)]
    pub(super) fn sled(&self) -> &sled::Db {
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

/// Opens sled at `path`. sled releases its file lock from a background
/// thread a moment after the last handle of a store is dropped, so a store
/// closed and opened again in one process (a restart in tests, a replay
/// after a run) can find it still held: that is retried for up to a second.
/// A lock another process holds is still refused after that second.
fn open_sled(path: &Path) -> Result<sled::Db, sled::Error> {
    let mut waited = std::time::Duration::ZERO;
    loop {
        match sled::Config::new()
            .path(path)
            .mode(sled::Mode::LowSpace)
            .open()
        {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && waited < std::time::Duration::from_secs(1) =>
            {
                let step = std::time::Duration::from_millis(20);
                std::thread::sleep(step);
                waited += step;
            }
            other => return other,
        }
    }
}
