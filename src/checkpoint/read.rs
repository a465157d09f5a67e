//! Reading checkpoints back: a frame to a stored checkpoint (format 5, 4
//! or 3, or 2 as a base), and the walk from a checkpoint down its links to its base
//! (see the module docs of `checkpoint`).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{
    codec, Checkpoint, CheckpointError, CheckpointInfo, CheckpointStore, CheckpointSummary,
    CodecError, EngineChain, Recovered, Stored, StoredCheckpoint,
};
use crate::engine::{Engine, EngineSnapshot};

/// One frame read back and decoded.
pub(super) struct Frame {
    pub(super) checkpoint: StoredCheckpoint,
    /// The crc32 of its payload, which a delta on it names.
    pub(super) crc: u32,
    pub(super) bytes: usize,
}

/// Checks and decodes a stored frame of any format this build reads: one of
/// format 5 as it is, one of format 4 with rows without user sets, one of
/// format 3 (before grouped results) with no
/// groupings, one of format 2 (a whole state) as a base. Every damage or
/// unknown format is an error value, never a panic.
pub fn decode_stored(raw: &[u8]) -> Result<StoredCheckpoint, CodecError> {
    match codec::verify_any(raw)? {
        (codec::FORMAT, payload) => codec::decode_payload::<StoredCheckpoint>(payload),
        (codec::FORMAT_GROUPS, payload) => super::legacy::decode_v4(payload),
        (codec::FORMAT_DELTAS, payload) => super::legacy::decode_v3(payload),
        (_, payload) => super::legacy::decode_v2(payload),
    }
}

/// Decodes the frame stored as checkpoint `id`.
pub(super) fn decode_frame(id: u64, raw: &[u8]) -> Result<Frame, CodecError> {
    let checkpoint = decode_stored(raw)?;
    if checkpoint.id != id {
        return Err(CodecError::Decode(format!(
            "the frame stored as checkpoint {id} holds checkpoint {}",
            checkpoint.id
        )));
    }
    if let Stored::Delta(link, _) = &checkpoint.engine {
        if link.parent >= id || link.base > link.parent {
            return Err(CodecError::Decode(format!(
                "delta {id} links to parent {} and base {}",
                link.parent, link.base
            )));
        }
    }
    Ok(Frame {
        checkpoint,
        crc: codec::frame_crc(raw),
        bytes: raw.len(),
    })
}

/// The entries (user entries and ids) of a whole state.
pub(super) fn entries(state: &EngineSnapshot) -> usize {
    let users: usize = state.windows.panes.iter().map(|p| p.3.len()).sum();
    let ids: usize = state.dedup.expiry.iter().map(|e| e.1.len()).sum();
    users + ids
}

/// The frames of one walk, each read and decoded at most once.
pub(super) struct Frames<'a> {
    store: &'a CheckpointStore,
    /// `None`: no such checkpoint.
    read: BTreeMap<u64, Option<Result<Frame, CodecError>>>,
}

/// Why a walk could not use a checkpoint.
type Unusable = CheckpointError;

/// A usable checkpoint a walk found.
pub(super) struct Found {
    pub(super) checkpoint: Checkpoint<EngineChain>,
    /// Its frame's crc.
    pub(super) crc: u32,
    /// Its chain's base id.
    pub(super) base: u64,
}

impl<'a> Frames<'a> {
    pub(super) fn new(store: &'a CheckpointStore) -> Self {
        Frames {
            store,
            read: BTreeMap::new(),
        }
    }

    fn get(&mut self, id: u64) -> Result<Option<&Result<Frame, CodecError>>, CheckpointError> {
        if !self.read.contains_key(&id) {
            let frame = match self.store.raw(id) {
                Ok(raw) => Some(decode_frame(id, &raw)),
                Err(CheckpointError::NotFound(_)) => None,
                Err(e) => return Err(e),
            };
            self.read.insert(id, frame);
        }
        Ok(self.read[&id].as_ref())
    }

    /// The ids of checkpoint `id`'s chain, newest first (its base last), or
    /// why it cannot be used. Errors are the store's own.
    pub(super) fn chain(&mut self, id: u64) -> Result<Result<Vec<u64>, Unusable>, CheckpointError> {
        let mut chain = vec![id];
        let mut at = id;
        let mut expect: Option<(u32, u64)> = None;
        loop {
            let unusable = |why: String| Ok(Err(CheckpointError::Unusable { id, needs: at, why }));
            let frame = match (self.get(at)?, at == id) {
                (Some(Ok(frame)), _) => frame,
                (Some(Err(e)), true) => {
                    return Ok(Err(CheckpointError::Corrupt {
                        id,
                        source: e.clone(),
                    }))
                }
                (None, true) => return Ok(Err(CheckpointError::NotFound(id))),
                (Some(Err(e)), false) => return unusable(format!("is corrupt: {e}")),
                (None, false) => return unusable("is missing".into()),
            };
            if let Some((crc, base)) = expect {
                if frame.crc != crc {
                    return unusable(format!(
                        "is not the checkpoint it was taken after (crc {:#010x}, expected {crc:#010x})",
                        frame.crc
                    ));
                }
                let frame_base = match &frame.checkpoint.engine {
                    Stored::Base(_) => at,
                    Stored::Delta(link, _) => link.base,
                };
                if frame_base != base {
                    return unusable(format!(
                        "belongs to the chain of base {frame_base}, not {base}"
                    ));
                }
            }
            match &frame.checkpoint.engine {
                Stored::Base(_) => return Ok(Ok(chain)),
                Stored::Delta(link, _) => {
                    expect = Some((link.parent_crc, link.base));
                    at = link.parent;
                    chain.push(at);
                }
            }
        }
    }

    /// Takes the frames of `chain` (as [`Frames::chain`] gave it) out of
    /// the walk: the newest checkpoint with its state as base and deltas,
    /// and its frame's crc.
    pub(super) fn assemble(&mut self, chain: &[u64]) -> Found {
        let mut frames: Vec<Frame> = chain
            .iter()
            .map(|id| match self.read.remove(id) {
                Some(Some(Ok(frame))) => frame,
                _ => unreachable!("a chain's frames were read and verified"),
            })
            .collect();
        let newest = frames.remove(0);
        let crc = newest.crc;
        let mut deltas = Vec::with_capacity(frames.len() + 1);
        let mut base = None;
        let mut take = |stored: Stored| match stored {
            Stored::Base(s) => base = Some(s),
            Stored::Delta(_, d) => deltas.push(d),
        };
        let checkpoint = newest.checkpoint.map_engine(|e| {
            take(e);
        });
        for frame in frames {
            take(frame.checkpoint.engine);
        }
        deltas.reverse();
        let state = base.expect("a chain ends at a base");
        Found {
            checkpoint: checkpoint.map_engine(|()| EngineChain {
                base: state,
                deltas,
            }),
            crc,
            base: *chain.last().expect("a chain is never empty"),
        }
    }

    /// What `list` shows of checkpoint `id`.
    fn info(&mut self, id: u64) -> Result<CheckpointInfo, CheckpointError> {
        let status = match self.chain(id)? {
            Err(e) => Err(e.to_string()),
            Ok(chain) => {
                let Some(Ok(frame)) = self.get(id)? else {
                    unreachable!("a usable checkpoint was read")
                };
                let c = &frame.checkpoint;
                Ok(CheckpointSummary {
                    created_ms: c.created_ms,
                    source_id: c.source_id.clone(),
                    offsets: c.offsets.clone(),
                    anomaly_log_len: c.anomaly_log_len,
                    pending_rows: c.pending.iter().map(|b| b.rows.len()).sum(),
                    watermark_ms: c.engine.watermark(),
                    kind: match &c.engine {
                        Stored::Base(_) => "base".into(),
                        Stored::Delta(link, _) => {
                            format!(
                                "delta on {} (chain of {} from base {})",
                                link.parent,
                                chain.len(),
                                link.base
                            )
                        }
                    },
                })
            }
        };
        let bytes = match self.get(id)? {
            Some(Ok(frame)) => frame.bytes,
            _ => self.store.raw(id).map(|r| r.len()).unwrap_or(0),
        };
        Ok(CheckpointInfo { id, bytes, status })
    }
}

/// A chain's state as one snapshot: the base itself, or the engine it
/// restores to, snapshotted.
fn materialize(id: u64, chain: &EngineChain) -> Result<EngineSnapshot, CheckpointError> {
    if chain.deltas.is_empty() {
        return Ok(chain.base.clone());
    }
    let partitions = chain.deltas.last().map_or(0, |d| d.clocks.len());
    let engine = Engine::restore_chain(chain.base.spec, partitions, &chain.base, &chain.deltas)
        .map_err(|why| CheckpointError::Inconsistent { id, why })?;
    Ok(engine.snapshot())
}

impl CheckpointStore {
    /// The newest checkpoint whose chain is usable, skipping (and
    /// reporting) the others, and the crc of its frame. `None` when there
    /// is no usable checkpoint at all.
    fn newest_usable(&self) -> Result<(Option<Found>, Vec<CheckpointError>), CheckpointError> {
        let mut frames = Frames::new(self);
        let mut skipped = Vec::new();
        for id in self.ids()?.into_iter().rev() {
            match frames.chain(id)? {
                Ok(chain) => return Ok((Some(frames.assemble(&chain)), skipped)),
                Err(e) => skipped.push(e),
            }
        }
        Ok((None, skipped))
    }

    /// Recovery: the newest usable checkpoint (see the module docs), with
    /// its state as a chain, and the ones skipped. The store goes on from
    /// it: the next checkpoint committed is a delta on it, and the
    /// committer builds its replica from the same chain.
    pub fn recover(
        &mut self,
    ) -> Result<(Option<Recovered>, Vec<CheckpointError>), CheckpointError> {
        let (newest, skipped) = self.newest_usable()?;
        let Some(found) = newest else {
            return Ok((None, skipped));
        };
        let recovered = found.checkpoint.map_engine(Arc::new);
        self.resume_after(&recovered, found.crc, found.base);
        Ok((Some(recovered), skipped))
    }

    /// Checkpoint `id`, its state whole. Recovery does not need this (it
    /// restores from the chain, [`CheckpointStore::recover`]); tools and
    /// tests do.
    pub fn load(&self, id: u64) -> Result<Checkpoint, CheckpointError> {
        let mut frames = Frames::new(self);
        let chain = frames.chain(id)??;
        let checkpoint = frames.assemble(&chain).checkpoint;
        let state = materialize(id, &checkpoint.engine)?;
        Ok(checkpoint.map_engine(|_| state))
    }

    /// The newest usable checkpoint, its state whole, skipping (and
    /// reporting) the others. `None` when there is no usable checkpoint.
    pub fn load_latest(
        &self,
    ) -> Result<(Option<Checkpoint>, Vec<CheckpointError>), CheckpointError> {
        let (newest, skipped) = self.newest_usable()?;
        let Some(Found { checkpoint, .. }) = newest else {
            return Ok((None, skipped));
        };
        let state = materialize(checkpoint.id, &checkpoint.engine)?;
        Ok((Some(checkpoint.map_engine(|_| state)), skipped))
    }

    /// Every checkpoint present, with whether it is usable.
    pub fn list(&self) -> Result<Vec<CheckpointInfo>, CheckpointError> {
        let mut frames = Frames::new(self);
        self.ids()?.into_iter().map(|id| frames.info(id)).collect()
    }
}
