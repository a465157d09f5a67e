//! The simulated sink: one table shared by every run of a schedule, with
//! the embedded store's and ClickHouse's rule (upsert by `window_start`,
//! highest `version` wins: `streamforge::sink::upsert`).
//!
//! It misbehaves as the run's plan says: it refuses writes, applies a write
//! and then times out, applies half a batch and fails, is slow (the clock
//! moves), refuses one write for good, and, since every row it applies is a
//! step, the process may crash between two rows of a batch.
//!
//! It also checks what the job writes, per process: for each window,
//! versions never go down from one write to the next, and one version always
//! carries the same figures (a retry writes the same rows again).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use streamforge::sink::{upsert, Sink, SinkError};
use streamforge::window::WindowRow;

use crate::crash::{self, step};
use crate::group::table::PartialWrites;
use crate::plan::{Faults, SinkMode};
use crate::world::{lock, Shared, SimClock};

pub struct SimSink {
    world: Shared,
    clock: Arc<SimClock>,
    faults: Faults,
    started_ms: u64,
    attempts: u32,
    /// Per window: the figures of each version this process wrote.
    written: BTreeMap<i64, BTreeMap<u64, (u64, u128, u64)>>,
    /// Group mode: the job's rows are partial rows of one partition, for
    /// the partial table (`group::table`) instead of the world's table.
    partial: Option<PartialWrites>,
}

impl SimSink {
    pub fn new(world: Shared, clock: Arc<SimClock>, faults: Faults) -> Self {
        let started_ms = clock.now_ms();
        SimSink {
            world,
            clock,
            faults,
            started_ms,
            attempts: 0,
            written: BTreeMap::new(),
            partial: None,
        }
    }

    /// The sink of a partition job in group mode (see `group`).
    pub fn partial(mut self, writes: PartialWrites) -> Self {
        self.partial = Some(writes);
        self
    }

    /// The fault mode at this moment of the run, if any.
    fn mode(&self) -> Option<SinkMode> {
        let t = self.clock.now_ms().saturating_sub(self.started_ms);
        self.faults
            .sink
            .as_ref()
            .filter(|f| (f.from_ms..f.to_ms).contains(&t))
            .map(|f| f.mode)
    }

    fn apply(&mut self, rows: &[WindowRow]) {
        for row in rows {
            step("sink::row");
            self.check(row);
            match &self.partial {
                Some(w) => w.write(self.clock.now_ms(), row.clone()),
                None => upsert(&mut lock(&self.world).table, row.clone()),
            }
        }
    }

    /// A version is written with one content only, and new content never
    /// comes with a lower version than one already written (retries and
    /// resends write earlier rows again, unchanged).
    fn check(&mut self, row: &WindowRow) {
        let figures = (row.order_cnt, row.gmv_cents, row.user_cnt);
        crate::runner::trace!(
            "  sink: window {} v{} {figures:?}",
            row.window_start,
            row.version
        );
        let versions = self.written.entry(row.window_start).or_default();
        let newest = versions.keys().next_back().copied();
        match versions.get(&row.version) {
            Some(f) if *f != figures => crash::note(format!(
                "window {} written as version {} with {figures:?} and with {f:?} in one process",
                row.window_start, row.version
            )),
            None if newest.is_some_and(|n| n > row.version) => crash::note(format!(
                "window {} written as version {} {figures:?} after version {newest:?} in one process",
                row.window_start, row.version
            )),
            _ => {}
        }
        versions.insert(row.version, figures);
    }
}

impl Sink for SimSink {
    fn describe(&self) -> String {
        "sim table".into()
    }

    fn write(&mut self, rows: &[WindowRow]) -> Result<(), SinkError> {
        step("sink::write");
        self.attempts += 1;
        if self.faults.sink_fatal_write == Some(self.attempts) {
            crash::note_write(false);
            return Err(SinkError::Fatal("sim table: permission denied".into()));
        }
        let result = match self.mode() {
            None => {
                self.apply(rows);
                Ok(())
            }
            Some(SinkMode::Fail) => Err(SinkError::Retryable("sim table: HTTP 503".into())),
            Some(SinkMode::TimeoutAfterApply) => {
                self.apply(rows);
                Err(SinkError::Retryable(
                    "sim table: no answer within 1s".into(),
                ))
            }
            Some(SinkMode::Half) => {
                self.apply(&rows[..rows.len() / 2]);
                Err(SinkError::Retryable("sim table: connection reset".into()))
            }
            Some(SinkMode::Slow(ms)) => {
                self.clock.advance(Duration::from_millis(ms));
                self.apply(rows);
                Ok(())
            }
        };
        crash::note_write(result.is_ok());
        result
    }

    fn read_final(&mut self) -> Result<Vec<WindowRow>, SinkError> {
        Ok(lock(&self.world).table.values().cloned().collect())
    }

    fn max_version(&mut self, limit: u64) -> Result<u64, SinkError> {
        step("sink::max_version");
        if matches!(self.mode(), Some(SinkMode::Fail)) {
            return Err(SinkError::Retryable("sim table: HTTP 503".into()));
        }
        if self.partial.is_some() {
            // A partial row's version is an offset: nothing to number above.
            return Ok(0);
        }
        Ok(lock(&self.world)
            .table
            .values()
            .map(|r| r.version)
            .filter(|v| *v < limit)
            .max()
            .unwrap_or(0))
    }
}
