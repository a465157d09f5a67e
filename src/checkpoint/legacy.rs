//! Frames of earlier formats, read into today's types: format 4 (rows
//! without user sets), format 3 (bases and deltas) and format 2 (whole
//! states). Format 4's layout is today's without the `users` of a row
//! (read as `None`); formats 3 and 2 are today's without the grouped state
//! and without the `group` of a row either, read as states with no
//! groupings.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{codec, Checkpoint, CodecError, Link, PendingBatch, Stored, StoredCheckpoint};
use crate::dedup::{DedupDelta, DedupSnapshot};
use crate::dims::{GroupKey, GroupsState};
use crate::engine::{EngineDelta, EngineSnapshot};
use crate::watermark::PartitionClock;
use crate::window::{WindowRow, WindowSpec, WindowsDelta, WindowsSnapshot};

#[derive(Serialize, Deserialize)]
struct Row {
    window_start: i64,
    window_end: i64,
    order_cnt: u64,
    gmv_cents: u128,
    user_cnt: u64,
    version: u64,
    updated_at: i64,
}

/// A row of format 4: today's without `users`.
#[derive(Serialize, Deserialize)]
struct RowV4 {
    window_start: i64,
    window_end: i64,
    order_cnt: u64,
    gmv_cents: u128,
    user_cnt: u64,
    version: u64,
    updated_at: i64,
    group: Option<GroupKey>,
}

impl From<Row> for WindowRow {
    fn from(r: Row) -> Self {
        WindowRow {
            window_start: r.window_start,
            window_end: r.window_end,
            order_cnt: r.order_cnt,
            gmv_cents: r.gmv_cents,
            user_cnt: r.user_cnt,
            version: r.version,
            updated_at: r.updated_at,
            group: None,
            users: None,
        }
    }
}

impl From<RowV4> for WindowRow {
    fn from(r: RowV4) -> Self {
        WindowRow {
            window_start: r.window_start,
            window_end: r.window_end,
            order_cnt: r.order_cnt,
            gmv_cents: r.gmv_cents,
            user_cnt: r.user_cnt,
            version: r.version,
            updated_at: r.updated_at,
            group: r.group,
            users: None,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Pending<R = Row> {
    checkpoint_id: u64,
    rows: Vec<R>,
}

#[derive(Serialize, Deserialize)]
struct Snapshot {
    spec: WindowSpec,
    windows: WindowsSnapshot,
    dedup: DedupSnapshot,
    clocks: Vec<PartitionClock>,
    watermark: i64,
    incomplete_before_ms: i64,
    awaiting_first: Vec<u32>,
    seed: u64,
}

#[derive(Serialize, Deserialize)]
struct Delta {
    spec: WindowSpec,
    windows: WindowsDelta,
    dedup: DedupDelta,
    clocks: Vec<PartitionClock>,
    watermark: i64,
    incomplete_before_ms: i64,
    awaiting_first: Vec<u32>,
    seed: u64,
}

#[derive(Serialize, Deserialize)]
enum StoredV3 {
    Base(Snapshot),
    Delta(Link, Delta),
}

#[derive(Serialize, Deserialize)]
struct Frame<E, R = Row> {
    id: u64,
    created_ms: i64,
    source_id: String,
    offsets: BTreeMap<u32, u64>,
    anomaly_log_len: u64,
    engine: E,
    pending: Vec<Pending<R>>,
    source_identity: Option<String>,
    bounded_end: Option<BTreeMap<u32, u64>>,
}

impl From<Snapshot> for EngineSnapshot {
    fn from(s: Snapshot) -> Self {
        EngineSnapshot {
            spec: s.spec,
            windows: s.windows,
            dedup: s.dedup,
            clocks: s.clocks,
            watermark: s.watermark,
            incomplete_before_ms: s.incomplete_before_ms,
            awaiting_first: s.awaiting_first,
            seed: s.seed,
            groups: GroupsState::default(),
        }
    }
}

impl From<Delta> for EngineDelta {
    fn from(d: Delta) -> Self {
        EngineDelta {
            spec: d.spec,
            windows: d.windows,
            dedup: d.dedup,
            clocks: d.clocks,
            watermark: d.watermark,
            incomplete_before_ms: d.incomplete_before_ms,
            awaiting_first: d.awaiting_first,
            seed: d.seed,
            groups: GroupsState::default(),
        }
    }
}

impl<E, R: Into<WindowRow>> Frame<E, R> {
    fn into_checkpoint(self, engine: impl FnOnce(E) -> Stored) -> StoredCheckpoint {
        let pending = self
            .pending
            .into_iter()
            .map(|b| PendingBatch {
                checkpoint_id: b.checkpoint_id,
                rows: b.rows.into_iter().map(Into::into).collect(),
            })
            .collect();
        Checkpoint {
            id: self.id,
            created_ms: self.created_ms,
            source_id: self.source_id,
            offsets: self.offsets,
            anomaly_log_len: self.anomaly_log_len,
            engine: engine(self.engine),
            pending,
            source_identity: self.source_identity,
            bounded_end: self.bounded_end,
        }
    }
}

/// Decodes the payload of a format 4 frame: today's engine state, rows
/// without user sets.
pub(super) fn decode_v4(payload: &[u8]) -> Result<StoredCheckpoint, CodecError> {
    let frame: Frame<Stored, RowV4> = codec::decode_payload(payload)?;
    Ok(frame.into_checkpoint(|e| e))
}

/// A checkpoint in the layout of format 4 (tests of older states): only
/// for rows with no user sets.
#[cfg(test)]
pub(super) fn frame_v4(cp: &StoredCheckpoint) -> Vec<u8> {
    let pending = cp
        .pending
        .iter()
        .map(|b| Pending {
            checkpoint_id: b.checkpoint_id,
            rows: b
                .rows
                .iter()
                .map(|r| {
                    assert!(r.users.is_none());
                    RowV4 {
                        window_start: r.window_start,
                        window_end: r.window_end,
                        order_cnt: r.order_cnt,
                        gmv_cents: r.gmv_cents,
                        user_cnt: r.user_cnt,
                        version: r.version,
                        updated_at: r.updated_at,
                        group: r.group.clone(),
                    }
                })
                .collect(),
        })
        .collect();
    let frame = Frame {
        id: cp.id,
        created_ms: cp.created_ms,
        source_id: cp.source_id.clone(),
        offsets: cp.offsets.clone(),
        anomaly_log_len: cp.anomaly_log_len,
        engine: cp.engine.clone(),
        pending,
        source_identity: cp.source_identity.clone(),
        bounded_end: cp.bounded_end.clone(),
    };
    codec::encode_as(codec::FORMAT_GROUPS, &frame).unwrap()
}

/// Decodes the payload of a format 3 frame.
pub(super) fn decode_v3(payload: &[u8]) -> Result<StoredCheckpoint, CodecError> {
    let frame: Frame<StoredV3> = codec::decode_payload(payload)?;
    Ok(frame.into_checkpoint(|e| match e {
        StoredV3::Base(s) => Stored::Base(s.into()),
        StoredV3::Delta(link, d) => Stored::Delta(link, d.into()),
    }))
}

/// Decodes the payload of a format 2 frame, as a base.
pub(super) fn decode_v2(payload: &[u8]) -> Result<StoredCheckpoint, CodecError> {
    let frame: Frame<Snapshot> = codec::decode_payload(payload)?;
    Ok(frame.into_checkpoint(|s| Stored::Base(s.into())))
}

/// A checkpoint in the layout of format 2 (tests of older states): only for
/// a state with no groupings and rows with no group.
#[cfg(test)]
pub(super) fn frame_v2(cp: &Checkpoint<EngineSnapshot>) -> Vec<u8> {
    let e = cp.engine.clone();
    assert_eq!(e.groups, GroupsState::default());
    let snapshot = Snapshot {
        spec: e.spec,
        windows: e.windows,
        dedup: e.dedup,
        clocks: e.clocks,
        watermark: e.watermark,
        incomplete_before_ms: e.incomplete_before_ms,
        awaiting_first: e.awaiting_first,
        seed: e.seed,
    };
    let pending = cp
        .pending
        .iter()
        .map(|b| Pending {
            checkpoint_id: b.checkpoint_id,
            rows: b
                .rows
                .iter()
                .map(|r| {
                    assert!(r.group.is_none());
                    Row {
                        window_start: r.window_start,
                        window_end: r.window_end,
                        order_cnt: r.order_cnt,
                        gmv_cents: r.gmv_cents,
                        user_cnt: r.user_cnt,
                        version: r.version,
                        updated_at: r.updated_at,
                    }
                })
                .collect(),
        })
        .collect();
    let frame = Frame {
        id: cp.id,
        created_ms: cp.created_ms,
        source_id: cp.source_id.clone(),
        offsets: cp.offsets.clone(),
        anomaly_log_len: cp.anomaly_log_len,
        engine: snapshot,
        pending,
        source_identity: cp.source_identity.clone(),
        bounded_end: cp.bounded_end.clone(),
    };
    codec::encode_as(codec::FORMAT_WHOLE, &frame).unwrap()
}
