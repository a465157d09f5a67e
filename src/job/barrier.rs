//! Checkpoints, and the end of a bounded input.
//!
//! # The end of a bounded input is not state
//!
//! At the end of a bounded input every window must be emitted (the
//! watermark goes to +inf), and records still waiting for confirmation are
//! decided as the end of the input allows (see `intake`). None of that may be
//! part of the state a later run continues from: that run may read more data
//! (the daily catch-up after a backfill), and must give exactly the windows
//! of one run over all of it. So the last checkpoint of a bounded run holds:
//!
//! * the state as it was *before* the end: the real watermark, the real
//!   partition clocks, no finished partitions, and the offsets of the records
//!   still waiting (a later run reads them again and decides them with what
//!   follows them);
//! * the anomaly log's length before the end's own anomaly lines (a later
//!   run truncates them away on recovery and writes them again if they still
//!   hold);
//! * as pending output, every row the end emitted, and the versions of those
//!   windows, so that a later emission of any of them carries a higher
//!   version and wins in the sink.
//!
//! A bounded run records the offsets it stops at in every checkpoint, so a
//! run resumed after a crash stops where the one that was started would
//! have; the last checkpoint drops them, so the next bounded run reads to the
//! input's new end.
//!
//! # What the job thread does at a barrier
//!
//! It takes the engine's changes since the last checkpoint (no table is
//! copied: see `engine`) and hands them to the committer thread with the
//! rest of the checkpoint. A barrier that comes due while the previous
//! checkpoint is still being committed is deferred, not waited for: the job
//! goes on processing and takes it once the committer is free (the changes
//! simply cover a longer interval). Only the barriers that must be durable
//! before the job goes on (the first one, the stop, the end of a bounded
//! input, errors) wait.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use tracing::{info, warn};

use super::{FinalState, InFlight, Job, RecordCtx};
use crate::checkpoint::{Checkpoint, Delta, PendingBatch};
use crate::engine::EngineDelta;

/// The engine's changes since the last checkpoint, and the entries of the
/// state they leave ([`crate::engine::Engine::live_entries`]), which decide
/// when the committer compacts.
#[derive(Clone)]
pub(super) struct Taken {
    delta: EngineDelta,
    live_entries: usize,
}
use crate::failpoint::crash_point;
use crate::telemetry;
use crate::time::format_rfc3339_ms;
use crate::window::WindowRow;

impl Job<'_> {
    /// Takes a checkpoint of the live state: the changes since the last one
    /// here, on the job thread; the rest on the committer's. Its rows go to
    /// the sink once it is durable ([`Job::finish_commit`]): right away
    /// when `wait` (stop, end of input, errors), otherwise when the main
    /// loop sees the committer done. Without `wait`, a barrier that finds
    /// the previous checkpoint still in flight is deferred (see the module
    /// docs). `force` commits even when nothing changed.
    pub(super) fn barrier(&mut self, force: bool, wait: bool) -> anyhow::Result<()> {
        let started = self.clock.now();
        // One checkpoint in flight at a time, committed in id order.
        self.finish_commit(wait)?;
        if self.committer.in_flight().is_some() {
            return Ok(());
        }
        let now_s = self.clock.wall_ms() / 1000;
        self.engine.flush_updates(now_s, &mut self.emitted);
        if !self.changed && self.emitted.is_empty() && !force {
            self.last_barrier = self.clock.now();
            return Ok(());
        }
        let anomaly_log_len = self.sync_anomalies()?;
        crash_point("job::barrier::after_anomaly_sync");
        let engine = self.take_delta();
        let offsets = self.offsets();
        let bounded_end = self.bounded_end.clone();
        self.commit(engine, offsets, anomaly_log_len, bounded_end, started, wait)
    }

    /// The end of a bounded input (see the module docs): emits every window
    /// and commits the state a later run continues from.
    pub(super) fn end_of_bounded_input(&mut self) -> anyhow::Result<()> {
        let started = self.clock.now();
        self.finish_commit(true)?;
        let now = self.clock.wall_ms();
        let ctx = RecordCtx {
            now_s: now / 1000,
            detected_at: format_rfc3339_ms(now),
        };
        self.engine.flush_updates(ctx.now_s, &mut self.emitted);
        let mut engine = self.take_delta();
        let offsets = self.offsets();
        let anomaly_log_len = self.sync_anomalies()?;
        let real = self.emitted.len();
        self.release_held(&ctx, true)?;
        self.engine.end_of_input(ctx.now_s, &mut self.emitted);
        engine.delta.note_emitted(&self.emitted[real..]);
        // The end's own anomaly lines, past the recorded length.
        self.sync_anomalies()?;
        crash_point("job::barrier::after_anomaly_sync");
        self.final_state = Some(FinalState {
            engine: Taken {
                delta: engine.delta.without_changes(),
                live_entries: engine.live_entries,
            },
            offsets: offsets.clone(),
            anomaly_log_len,
            end_prefix: self.bounded_end.as_ref().and_then(|e| e.get(&0).copied()),
        });
        self.commit(engine, offsets, anomaly_log_len, None, started, true)
    }

    /// After the end of a bounded input and the sink's last
    /// acknowledgements: records them against the same final state.
    pub(super) fn record_final_acks(&mut self) -> anyhow::Result<()> {
        self.finish_commit(true)?;
        let Some(last) = &self.final_state else {
            return Ok(());
        };
        if !self.changed {
            return Ok(());
        }
        let (engine, offsets, len) = (
            last.engine.clone(),
            last.offsets.clone(),
            last.anomaly_log_len,
        );
        let started = self.clock.now();
        self.commit(engine, offsets, len, None, started, true)
    }

    /// The engine's changes since the last checkpoint, with the entries of
    /// the state they leave.
    fn take_delta(&mut self) -> Taken {
        Taken {
            delta: self.engine.take_delta(),
            live_entries: self.engine.live_entries(),
        }
    }

    /// Flushes and syncs the anomaly log; returns its length.
    fn sync_anomalies(&mut self) -> anyhow::Result<u64> {
        self.anomalies.sync().map_err(|e| {
            anyhow::anyhow!(crate::anomaly_log::io_failure(
                "sync",
                self.anomalies.path(),
                &e
            ))
        })
    }

    /// Hands one checkpoint to the committer, with the rows emitted since
    /// the last one as a new pending batch.
    fn commit(
        &mut self,
        engine: Taken,
        offsets: BTreeMap<u32, u64>,
        anomaly_log_len: u64,
        bounded_end: Option<BTreeMap<u32, u64>>,
        started: Duration,
        wait: bool,
    ) -> anyhow::Result<()> {
        let id = self.next_checkpoint_id;
        let mut rows = std::mem::take(&mut self.emitted);
        if self.source.owned_partition().is_some() {
            // The job's one partition (0) is the owned one.
            let prefix = self.final_state.as_ref().and_then(|f| f.end_prefix);
            let version = prefix.unwrap_or_else(|| offsets.get(&0).copied().unwrap_or(0));
            rows = partial_rows(rows, version);
        }
        if !rows.is_empty() {
            self.pending.push(PendingBatch {
                checkpoint_id: id,
                rows: rows.clone(),
            });
        }
        let watermark = engine.delta.watermark;
        let checkpoint = Checkpoint {
            id,
            created_ms: self.clock.wall_ms(),
            source_id: self.source_id.clone(),
            offsets: offsets.clone(),
            anomaly_log_len,
            engine: engine.delta,
            pending: self.pending.clone(),
            source_identity: self.source_identity.clone(),
            bounded_end,
        };
        let flight = InFlight {
            rows,
            offsets,
            pause: self.clock.now().saturating_sub(started),
            watermark,
        };
        let delta = Delta {
            checkpoint,
            live_entries: engine.live_entries,
        };
        self.committer
            .start(delta, flight)
            .with_context(|| commit_failed(id))?;
        self.next_checkpoint_id += 1;
        self.changed = false;
        self.records_since_barrier = 0;
        self.last_barrier = self.clock.now();
        if wait {
            self.finish_commit(true)?;
        }
        Ok(())
    }

    /// Completes the checkpoint in flight once the committer reports it
    /// durable: only then are its rows handed to the sink and its offsets
    /// committed to the consumer group. With `block`, waits for it; without,
    /// returns at once when it is not done yet.
    pub(super) fn finish_commit(&mut self, block: bool) -> anyhow::Result<()> {
        let commit = if block {
            self.committer.wait()
        } else {
            self.committer.try_finished()
        };
        let Some(commit) = commit else {
            return Ok(());
        };
        let (id, flight) = (commit.id, commit.tag);
        let written = commit.result.with_context(|| commit_failed(id))?;
        let bytes = written.bytes;
        crash_point("job::barrier::after_commit");
        if !flight.rows.is_empty() {
            self.writer.submit(id, flight.rows);
        }
        crash_point("job::barrier::after_submit");
        self.source.commit_advisory(&flight.offsets);
        for (partition, lag) in self.source.lag(&flight.offsets) {
            self.metrics.set_lag(partition, lag);
        }
        let pause = flight.pause;
        self.report.checkpoints += 1;
        self.report.last_checkpoint_id = id;
        self.report.checkpoint_pauses.push(pause);
        self.report.checkpoint_bytes = bytes;
        self.metrics.checkpoint(id, pause, commit.took, bytes);
        let pending_rows: usize = self.pending.iter().map(|b| b.rows.len()).sum();
        info!(
            checkpoint = id,
            bytes,
            pause_ms = format!("{:.2}", pause.as_secs_f64() * 1e3),
            commit_ms = format!("{:.2}", commit.took.as_secs_f64() * 1e3),
            stored_as = if written.base { "base" } else { "delta" },
            changes = written.changes,
            watermark = %telemetry::format_watermark(flight.watermark),
            pending_rows,
            "checkpoint committed"
        );
        if let Some(s) = self
            .late_watch
            .look(&self.engine.counters, self.clock.now())
        {
            warn!(
                late = s.late,
                read = s.read,
                over = ?s.over,
                "{:.1} % of the records read since the last such look were late_event (their \
                 windows were already final): a producer far behind the others, a wrong clock \
                 that moved a partition's watermark (see 'event time jumped ahead'), or \
                 window.out_of_orderness and allowed_lateness too small for this topic. \
                 They are in the anomaly log; `streamforge replay` can count them in",
                100.0 * s.late as f64 / s.read.max(1) as f64
            );
        }
        Ok(())
    }
}

/// What the job says when checkpoint `id` cannot be committed.
/// Group mode: the rows of one checkpoint of one partition as partial rows
/// (see `sink::clickhouse::partial`): the last row of each window (the
/// window as the partition's log prefix up to `next_offset` leaves it:
/// windows updated since their last emission are flushed before a barrier),
/// versioned by that offset. A row is then a function of the prefix alone,
/// and a longer prefix has a higher version, whoever computes it.
pub(crate) fn partial_rows(rows: Vec<WindowRow>, next_offset: u64) -> Vec<WindowRow> {
    let mut last: BTreeMap<i64, WindowRow> = BTreeMap::new();
    for row in rows.into_iter().filter(|r| r.group.is_none()) {
        last.insert(row.window_start, row);
    }
    last.into_values()
        .map(|row| WindowRow {
            version: next_offset,
            ..row
        })
        .collect()
}

fn commit_failed(id: u64) -> String {
    let resume_from = if id > 1 {
        format!("checkpoint {}, the last committed one", id - 1)
    } else {
        "the beginning of the input (no checkpoint was committed yet)".to_string()
    };
    format!(
        "checkpoint {id} could not be committed; the job stops so that nothing is written to the sink \
         before it is recorded, and a restart resumes from {resume_from}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(start: i64, cnt: u64, version: u64) -> WindowRow {
        WindowRow {
            users: None,
            window_start: start,
            window_end: start + 60,
            order_cnt: cnt,
            gmv_cents: 100 * cnt as u128,
            user_cnt: 1,
            version,
            updated_at: 0,
            group: None,
        }
    }

    /// The last emission of each window, versioned by the offset: what the
    /// window holds after the whole prefix.
    #[test]
    fn partial_rows_keep_each_windows_last_row_versioned_by_the_offset() {
        let rows = vec![row(30, 1, 1), row(0, 2, 1), row(30, 3, 2), row(60, 1, 1)];
        let got = partial_rows(rows, 812);
        assert_eq!(got, vec![row(0, 2, 812), row(30, 3, 812), row(60, 1, 812)]);
        assert!(partial_rows(Vec::new(), 5).is_empty());
    }
}
