//! What the live page shows beside the registry: the window rows the sink
//! most recently acknowledged, the last checkpoints, and where each
//! partition stands.
//!
//! A Prometheus registry answers "how many" and "how fast"; the page also
//! needs "which windows, with which numbers", which no metric holds. [`Live`]
//! keeps that in small bounded rings behind mutexes. Every update is per
//! batch (partition clocks), per checkpoint, or per sink acknowledgement,
//! never per record, and the listener only copies the rings out, so a page
//! left open in a browser costs the job nothing it would notice.
//!
//! The windows are those the sink *acknowledged*, kept by the sinks' own
//! rule (per `window_start`, the highest `version` wins): the page shows
//! what the sink holds, never a row the engine computed that is not yet
//! checkpointed and written. A restarted job starts with an empty ring; the
//! rows recovery resends, then every new acknowledgement, fill it again.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::engine::Engine;
use crate::watermark::PartitionClock;
use crate::window::WindowRow;

/// Windows the page keeps: the most recent by `window_start` (an hour of
/// 30 s slides).
pub const WINDOWS_KEPT: usize = 120;
/// Windows whose grouped rows the page keeps: the most recent by
/// `window_start` (a quarter of an hour of 30 s slides).
pub const GROUPED_WINDOWS_KEPT: usize = 30;
/// Checkpoints the page keeps: the most recent by id.
pub const CHECKPOINTS_KEPT: usize = 20;

/// One committed checkpoint, as the page lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointEntry {
    pub id: u64,
    pub bytes: usize,
    /// How long processing stopped for it.
    pub pause: Duration,
    /// Encoding, write and flush on the committer thread.
    pub commit: Duration,
    /// Wall clock when it was durable, epoch ms.
    pub at_ms: i64,
}

/// Where the partitions stand, as of the last batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Clocks {
    pub partitions: Vec<PartitionClock>,
    /// The watermark bound: a partition's watermark is its highest event
    /// time minus this.
    pub out_of_orderness_ms: i64,
    /// The job watermark (`i64::MIN`: -inf, `i64::MAX`: +inf).
    pub watermark_ms: i64,
}

/// The page's own view of the job (see the module docs).
pub struct Live {
    windows: Mutex<BTreeMap<i64, WindowRow>>,
    /// Grouped rows of the last [`GROUPED_WINDOWS_KEPT`] windows, by the
    /// sinks' key; retractions (no orders) remove theirs.
    grouped: Mutex<BTreeMap<crate::sink::RowKey, WindowRow>>,
    checkpoints: Mutex<VecDeque<CheckpointEntry>>,
    clocks: Mutex<Clocks>,
    /// What the job reads and where it writes (`Source::id`,
    /// `Sink::describe`, both free of credentials).
    pipeline: Mutex<Option<(String, String)>>,
    /// Rows handed to the sink and not acknowledged yet.
    pending_rows: AtomicI64,
}

impl Default for Live {
    fn default() -> Self {
        Live {
            windows: Mutex::new(BTreeMap::new()),
            grouped: Mutex::new(BTreeMap::new()),
            checkpoints: Mutex::new(VecDeque::with_capacity(CHECKPOINTS_KEPT)),
            clocks: Mutex::new(Clocks {
                watermark_ms: i64::MIN,
                ..Clocks::default()
            }),
            pipeline: Mutex::new(None),
            pending_rows: AtomicI64::new(0),
        }
    }
}

/// A poisoned lock only means a thread panicked while holding it; the
/// rings stay consistent (each update is one insert and a trim).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Live {
    /// Rows the sink acknowledged: upserted by the sinks' rule, then the
    /// ring is cut to the [`WINDOWS_KEPT`] latest window starts.
    pub fn acked<'a>(&self, rows: impl IntoIterator<Item = &'a WindowRow>) {
        let mut windows = lock(&self.windows);
        let mut grouped = lock(&self.grouped);
        for row in rows {
            if row.group.is_none() {
                crate::sink::upsert(&mut windows, row.clone());
                continue;
            }
            crate::sink::upsert_keyed(&mut grouped, row.clone());
            let key = (row.window_start, row.group.clone());
            if grouped.get(&key).is_some_and(|r| r.order_cnt == 0) {
                grouped.remove(&key);
            }
        }
        while windows.len() > WINDOWS_KEPT {
            windows.pop_first();
        }
        let starts: std::collections::BTreeSet<i64> = grouped.keys().map(|k| k.0).collect();
        if let Some(first) = starts.iter().rev().nth(GROUPED_WINDOWS_KEPT - 1) {
            *grouped = grouped.split_off(&(*first, None));
        }
    }

    /// The kept grouped rows, by window start, grouping and values.
    pub fn grouped(&self) -> Vec<WindowRow> {
        lock(&self.grouped).values().cloned().collect()
    }

    /// The kept windows, by `window_start`.
    pub fn windows(&self) -> Vec<WindowRow> {
        lock(&self.windows).values().cloned().collect()
    }

    pub fn checkpoint(&self, entry: CheckpointEntry) {
        let mut ring = lock(&self.checkpoints);
        if ring.len() == CHECKPOINTS_KEPT {
            ring.pop_front();
        }
        ring.push_back(entry);
    }

    /// The kept checkpoints, oldest first.
    pub fn checkpoints(&self) -> Vec<CheckpointEntry> {
        lock(&self.checkpoints).iter().copied().collect()
    }

    /// Copies the engine's partition clocks (once per batch).
    pub fn observe_clocks(&self, engine: &Engine) {
        let mut clocks = lock(&self.clocks);
        clocks.partitions.clear();
        clocks
            .partitions
            .extend((0..engine.partitions()).filter_map(|p| engine.clock(p).copied()));
        clocks.out_of_orderness_ms = engine.spec().out_of_orderness_ms;
        clocks.watermark_ms = engine.watermark();
    }

    pub fn clocks(&self) -> Clocks {
        lock(&self.clocks).clone()
    }

    pub fn set_pipeline(&self, source: String, sink: String) {
        *lock(&self.pipeline) = Some((source, sink));
    }

    pub fn pipeline(&self) -> Option<(String, String)> {
        lock(&self.pipeline).clone()
    }

    pub fn set_pending_rows(&self, rows: usize) {
        self.pending_rows.store(rows as i64, Ordering::Relaxed);
    }

    pub fn pending_rows(&self) -> i64 {
        self.pending_rows.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(start: i64, version: u64, cnt: u64) -> WindowRow {
        WindowRow {
            users: None,
            window_start: start,
            window_end: start + 60,
            order_cnt: cnt,
            gmv_cents: 100 * cnt as u128,
            user_cnt: cnt,
            version,
            updated_at: 0,
            group: None,
        }
    }

    #[test]
    fn the_ring_keeps_the_highest_version_of_the_latest_windows() {
        let live = Live::default();
        live.acked(&[row(0, 1, 10), row(30, 1, 11)]);
        // An older version acknowledged later (a resend) changes nothing.
        live.acked(&[row(0, 2, 20), row(0, 1, 10)]);
        assert_eq!(live.windows(), vec![row(0, 2, 20), row(30, 1, 11)]);

        let many: Vec<WindowRow> = (0..WINDOWS_KEPT as i64 + 5)
            .map(|i| row(i * 30, 1, i as u64))
            .collect();
        live.acked(&many);
        let kept = live.windows();
        assert_eq!(kept.len(), WINDOWS_KEPT);
        assert_eq!(kept[0].window_start, 5 * 30);
        assert_eq!(kept.last(), many.last());
        // A window older than everything kept does not push a newer one out.
        live.acked(&[row(0, 9, 1)]);
        assert_eq!(live.windows(), kept);
    }

    #[test]
    fn the_checkpoint_ring_keeps_the_last_ones_in_order() {
        let live = Live::default();
        for id in 1..=CHECKPOINTS_KEPT as u64 + 3 {
            live.checkpoint(CheckpointEntry {
                id,
                bytes: id as usize,
                pause: Duration::from_millis(id),
                commit: Duration::ZERO,
                at_ms: id as i64,
            });
        }
        let ids: Vec<u64> = live.checkpoints().iter().map(|c| c.id).collect();
        assert_eq!(ids, (4..=CHECKPOINTS_KEPT as u64 + 3).collect::<Vec<_>>());
    }
}
