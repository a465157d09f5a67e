//! The sink writer's reports, and waiting for it when the job ends.
//!
//! A sink that is down never stops processing: its rows stay pending in
//! every checkpoint and the writer retries with backoff; the job only says
//! so, once per outage, and the readiness flag follows.

use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::bail;
use tracing::{error, info, warn};

use super::Job;
use crate::sink::SinkEvent;

impl Job<'_> {
    /// Handles the sink writer's reports without blocking.
    pub(super) fn service_sink(&mut self) -> anyhow::Result<()> {
        let events: Vec<SinkEvent> = self.writer.try_events();
        for event in events {
            self.on_sink_event(event);
        }
        // Barriers add pending rows; acknowledgements take them away.
        self.publish_pending();
        Ok(())
    }

    fn publish_pending(&self) {
        let rows = self.pending.iter().map(|b| b.rows.len()).sum();
        self.metrics.live.set_pending_rows(rows);
    }

    fn on_sink_event(&mut self, event: SinkEvent) {
        match event {
            SinkEvent::Acked {
                checkpoint_id,
                rows,
                latency,
            } => {
                // The live page shows what the sink holds: these rows now.
                self.metrics.live.acked(
                    self.pending
                        .iter()
                        .filter(|b| b.checkpoint_id <= checkpoint_id)
                        .flat_map(|b| &b.rows),
                );
                self.pending.retain(|b| b.checkpoint_id > checkpoint_id);
                self.publish_pending();
                self.report.rows_acked += rows as u64;
                self.metrics.sink_batch(latency);
                self.changed = true;
                if let Some(since) = self.sink_waiting_since.take() {
                    info!(
                        down_for = ?self.clock.now().saturating_sub(since),
                        pending_rows = self.pending.iter().map(|b| b.rows.len()).sum::<usize>(),
                        "sink is accepting writes again"
                    );
                }
            }
            SinkEvent::Retrying {
                checkpoint_id,
                attempt,
                retry_in,
                error,
            } => {
                self.report.sink_retries += 1;
                self.metrics.sink_retries.inc();
                if self.sink_waiting_since.is_none() {
                    self.sink_waiting_since = Some(self.clock.now());
                    warn!(
                        checkpoint = checkpoint_id,
                        error = %error,
                        "sink unavailable; output stays pending in checkpoints and is retried with backoff, \
                         processing goes on"
                    );
                } else if attempt % 10 == 0 {
                    warn!(checkpoint = checkpoint_id, attempt, ?retry_in, error = %error, "sink still unavailable");
                }
            }
            SinkEvent::Failed {
                checkpoint_id,
                error,
            } => {
                error!(checkpoint = checkpoint_id, error = %error, "sink write failed for good");
                self.sink_failed = Some(error);
            }
        }
    }

    /// Waits until the sink acknowledged every pending row (or `limit`
    /// passed, or a stop was requested).
    pub(super) fn drain_sink(&mut self, limit: Option<Duration>) -> anyhow::Result<()> {
        // Rows of a checkpoint still being committed are not with the sink
        // yet.
        self.finish_commit(true)?;
        let started = self.clock.now();
        let mut said = false;
        while !self.pending.is_empty() {
            if let Some(error) = self.sink_failed.take() {
                bail!("the sink rejected a write for good: {error}. Pending rows stay in the checkpoint");
            }
            if limit.is_some_and(|l| self.clock.now().saturating_sub(started) >= l) {
                warn!(
                    pending_rows = self.pending.iter().map(|b| b.rows.len()).sum::<usize>(),
                    "leaving with rows the sink has not acknowledged; they are in the checkpoint and are \
                     resent on the next start"
                );
                return Ok(());
            }
            if limit.is_none() && self.opts.stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            if !said {
                info!(
                    pending_rows = self.pending.iter().map(|b| b.rows.len()).sum::<usize>(),
                    "waiting for the sink to acknowledge the last rows"
                );
                said = true;
            }
            if let Some(event) = self.writer.wait_event(Duration::from_millis(200)) {
                self.on_sink_event(event);
            }
        }
        Ok(())
    }
}
