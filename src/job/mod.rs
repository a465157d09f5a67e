//! The job: the loop that drives source, engine, anomaly log, checkpoints and
//! sink, and owns the barrier.
//!
//! # Layout
//!
//! * this file: the job's state and the main loop;
//! * `startup`: start-up and recovery ([`run_in`]);
//! * `records`: the path of one record to the engine;
//! * `intake`: the wrong-clock guard and the records a partition holds back
//!   (alignment, unconfirmed time jumps);
//! * `partitions`: where each partition stands (idleness, end of a bounded
//!   input, partitions discovered while running);
//! * `barrier`: checkpoints, and the end of a bounded input;
//! * `sink_health`: the sink writer's reports, and waiting for it at the end.
//!
//! # The checkpoint protocol (SPEC §5)
//!
//! At each barrier (every `checkpoint.interval` or `interval_events` records):
//!
//! 1. windows updated by late events are emitted; the rows emitted since the
//!    last barrier become a new pending batch;
//! 2. the anomaly log is flushed and `fsync`ed, and its length noted;
//! 3. ONE checkpoint is committed to sled and flushed: engine state, next
//!    offsets, anomaly-log length, and every pending batch not yet
//!    acknowledged by the sink;
//! 4. only then is the new batch handed to the sink writer, which writes it
//!    idempotently, retrying while the sink is down;
//! 5. acknowledgements shrink the pending list; the next checkpoint records
//!    that (a crash in between only means an idempotent resend).
//!
//! Recovery loads the newest checkpoint that verifies, truncates the anomaly
//! log to its length, resends its pending batches, seeks every partition to
//! its offsets and goes on. Everything after that checkpoint is recomputed
//! from the same input, and the sink absorbs what it had already seen.
//! docs/architecture.md walks through why each crash point is safe.
//!
//! A fresh state directory commits a first checkpoint with the resolved start
//! offsets before any record is processed, so a crash before the first
//! barrier does not resolve `start: latest` (or a start time) again.

mod barrier;
mod intake;
mod late_watch;
mod partitions;
mod records;
mod sink_health;
mod startup;

pub use intake::{Decision, TimeGuard, JUMP_LEAD};
pub use startup::run_in;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use tracing::{info, warn};

use crate::anomaly_log::AnomalyLog;
use crate::checkpoint::committer::Committer;
use crate::checkpoint::kv::MemoryKv;
use crate::checkpoint::PendingBatch;
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::engine::{Counters, Engine};
use crate::sink::{Backoff, Sink, SinkWriter};
use crate::source::{RecordBatch, Source};
use crate::telemetry::{self, Metrics};
use crate::window::WindowRow;

use intake::Held;

pub struct JobOptions {
    /// Stop at the end of the input (after emitting every window).
    pub bounded: bool,
    /// Set by SIGINT/SIGTERM: commit a final checkpoint and return.
    pub stop: Arc<AtomicBool>,
    /// Draw a one-line live progress display on stderr.
    pub progress: bool,
    /// On a signal, how long to wait for the sink to take pending rows.
    pub shutdown_grace: Duration,
}

/// What a run did, for the CLI's summary.
#[derive(Debug, Default, Clone)]
pub struct JobReport {
    pub counters: Counters,
    pub restored_from: Option<u64>,
    pub corrupt_checkpoints_skipped: usize,
    pub checkpoints: u64,
    pub last_checkpoint_id: u64,
    pub checkpoint_pauses: Vec<Duration>,
    pub checkpoint_bytes: usize,
    pub rows_acked: u64,
    pub rows_pending: usize,
    pub sink_retries: u64,
    pub anomaly_log: PathBuf,
    pub state_dir: PathBuf,
    pub sink: String,
    pub elapsed: Duration,
    pub finished_input: bool,
}

/// Records held for a partition that runs ahead before the source is asked
/// to pause it.
const HOLD_BEFORE_PAUSE: usize = 100_000;

/// Per-batch context of record handling.
struct RecordCtx {
    now_s: i64,
    detected_at: String,
}

/// What the job tracks per partition, besides the engine's clock.
#[derive(Debug, Default)]
struct Slot {
    /// Next offset to process: where a checkpoint resumes.
    next_offset: u64,
    /// Since when (job clock) the source has said the partition is caught
    /// up, with no record since.
    caught_up_since: Option<Duration>,
    /// When (job clock) the partition was last caught up or finished, for
    /// readiness.
    last_caught_up: Option<Duration>,
    /// Records waiting their turn (see `intake`).
    held: Held,
    /// Paused at the source because it holds many records.
    paused: bool,
    /// Partition discovery: the partition's end offset when the last
    /// completed discovery started. The first record processed at or past
    /// it caps the partition's part of the watermark until the next
    /// discovery (see `watermark`). `None` without discovery.
    discovered_end: Option<u64>,
    /// Capped since the last discovery.
    capped: bool,
}

/// Partition discovery of a live run (see `partitions`).
struct Discovery {
    interval: Duration,
    /// When the last discovery ran; `None` before the first, which runs
    /// before the first poll.
    last: Option<Duration>,
}

/// The state the end of a bounded input leaves for a later run (see
/// `barrier`), kept to record the sink's acknowledgements after it.
struct FinalState {
    engine: barrier::Taken,
    offsets: BTreeMap<u32, u64>,
    anomaly_log_len: u64,
    /// Group mode: the prefix of the owned partition the end's rows hold,
    /// held records included (see `barrier::partial_rows`).
    end_prefix: Option<u64>,
}

/// What a job runs against: the machine (threads for the checkpoint
/// committer and the sink writer, sled in the state directory, the wall
/// clock), or a deterministic simulation (one thread, a simulated clock, an
/// in-memory checkpoint store, fixed fingerprint seeds).
#[derive(Clone)]
pub struct Environment {
    pub clock: Arc<dyn Clock>,
    /// Commit checkpoints and write the sink on the job's own thread.
    pub inline: bool,
    /// Keep checkpoints here instead of sled in the state directory.
    pub store: Option<Arc<MemoryKv>>,
    /// The fingerprint seed of a fresh state (random when `None`).
    pub fingerprint_seed: Option<u64>,
}

impl Environment {
    /// The machine, as `streamforge run` uses it.
    pub fn machine() -> Self {
        Environment {
            clock: Arc::new(SystemClock::new()),
            inline: false,
            store: None,
            fingerprint_seed: None,
        }
    }
}

struct Job<'a> {
    cfg: &'a Config,
    opts: &'a JobOptions,
    clock: Arc<dyn Clock>,
    source: Box<dyn Source>,
    writer: SinkWriter,
    /// Commits checkpoints; each carries what the job does once it is
    /// durable.
    committer: Committer<InFlight>,
    engine: Engine,
    anomalies: AnomalyLog,
    source_id: String,
    source_identity: Option<String>,
    slots: Vec<Slot>,
    guard: TimeGuard,
    /// A bounded run: the offsets it stops at, checkpointed until its end.
    bounded_end: Option<BTreeMap<u32, u64>>,
    discovery: Option<Discovery>,
    final_state: Option<FinalState>,
    /// Rows emitted since the last barrier.
    emitted: Vec<WindowRow>,
    /// Checkpointed batches the sink has not acknowledged.
    pending: Vec<PendingBatch>,
    next_checkpoint_id: u64,
    /// Something to record since the last checkpoint.
    changed: bool,
    records_since_barrier: u64,
    last_barrier: Duration,
    sink_waiting_since: Option<Duration>,
    source_down_since: Option<Duration>,
    sink_failed: Option<String>,
    metrics: Arc<Metrics>,
    report: JobReport,
    /// Parse big batches on all cores (not in the one-thread mode).
    parallel_parse: bool,
    /// The share of late records, looked at every checkpoint.
    late_watch: late_watch::LateWatch,
}

/// What the job does once a checkpoint handed to the committer is durable.
struct InFlight {
    /// Its rows, for the sink.
    rows: Vec<WindowRow>,
    offsets: BTreeMap<u32, u64>,
    /// How long processing stopped for it.
    pause: Duration,
    /// The job watermark its snapshot holds.
    watermark: i64,
}

/// Runs the job until the input ends (bounded) or a stop is requested.
pub fn run(
    cfg: &Config,
    source: Box<dyn Source>,
    sink: Box<dyn Sink>,
    opts: &JobOptions,
    metrics: Arc<Metrics>,
) -> anyhow::Result<JobReport> {
    run_in(cfg, source, sink, opts, metrics, Environment::machine())
}

impl Job<'_> {
    fn main_loop(&mut self) -> anyhow::Result<()> {
        let mut batch = RecordBatch::default();
        let mut last_progress = self.clock.now();
        let mut backoff_attempt = 0u32;
        loop {
            if self.opts.stop.load(Ordering::Relaxed) {
                info!("stop requested: committing a final checkpoint");
                self.barrier(true, true)?;
                self.drain_sink(Some(self.opts.shutdown_grace))?;
                return self.barrier(false, true);
            }
            if let Some(error) = self.sink_failed.take() {
                self.barrier(true, true)?;
                bail!(
                    "the sink rejected a write for good: {error}. Pending rows are kept in the checkpoint; \
                     fix the sink and restart the job"
                );
            }
            self.discover_partitions();

            if !self.poll(&mut batch, &mut backoff_attempt)? {
                continue;
            }
            self.process(&batch)?;
            self.update_partitions();
            self.finish_commit(false)?;
            self.service_sink()?;

            let since_barrier = self.clock.now().saturating_sub(self.last_barrier);
            let due_by_time = !self.cfg.checkpoint.interval.0.is_zero()
                && since_barrier >= self.cfg.checkpoint.interval.0;
            let due_by_count = self.cfg.checkpoint.interval_events > 0
                && self.records_since_barrier >= self.cfg.checkpoint.interval_events;
            if due_by_time || due_by_count {
                self.barrier(false, false)?;
            }
            if self.opts.progress
                && self.clock.now().saturating_sub(last_progress) >= Duration::from_millis(500)
            {
                last_progress = self.clock.now();
                self.draw_progress();
            }
            if self.opts.bounded && self.input_done() {
                self.report.finished_input = true;
                info!("end of the bounded input: emitting every window");
                self.end_of_bounded_input()?;
                self.drain_sink(None)?;
                return self.record_final_acks();
            }
        }
    }

    /// The next offset of every partition, as a checkpoint records them.
    fn offsets(&self) -> BTreeMap<u32, u64> {
        self.slots
            .iter()
            .enumerate()
            .map(|(p, s)| (p as u32, s.next_offset))
            .collect()
    }

    /// Polls the source into `batch`. A transient failure is waited out with
    /// backoff (the checkpoint in flight and the sink are still served):
    /// `Ok(false)`, nothing to process. A fatal one commits what is done and
    /// ends the job.
    fn poll(&mut self, batch: &mut RecordBatch, backoff_attempt: &mut u32) -> anyhow::Result<bool> {
        batch.clear();
        // Held records may be released by what other partitions deliver:
        // do not wait long for new data while some are waiting.
        let timeout = if self.slots.iter().any(|s| !s.held.is_empty()) {
            Duration::from_millis(2)
        } else {
            Duration::from_millis(100)
        };
        match self.source.poll(batch, self.cfg.batch_size, timeout) {
            Ok(()) => {
                if let Some(since) = self.source_down_since.take() {
                    let down_for = self.clock.now().saturating_sub(since);
                    info!(?down_for, "source is reachable again; resuming");
                }
                *backoff_attempt = 0;
                Ok(true)
            }
            Err(e) if e.is_transient() => {
                let delay = Backoff {
                    initial: Duration::from_millis(200),
                    max: Duration::from_secs(5),
                }
                .delay(*backoff_attempt);
                *backoff_attempt += 1;
                if self.source_down_since.is_none() {
                    self.source_down_since = Some(self.clock.now());
                    warn!(error = %e, "source unavailable; retrying with backoff, no data is lost");
                }
                self.clock.sleep(delay);
                self.finish_commit(false)?;
                self.service_sink()?;
                Ok(false)
            }
            Err(e) => {
                self.barrier(false, true)?;
                bail!("{e}");
            }
        }
    }

    fn draw_progress(&self) {
        let c = &self.engine.counters;
        let pending: usize = self.pending.iter().map(|b| b.rows.len()).sum();
        eprint!(
            "\r\x1b[2K{} events | {} accepted | {} dup | {} anomalies | watermark {} | checkpoint #{} | pending rows {}{}",
            c.read,
            c.accepted,
            c.duplicates,
            c.anomalies,
            telemetry::format_watermark(self.engine.watermark()),
            self.report.last_checkpoint_id,
            pending,
            if self.sink_waiting_since.is_some() {
                " | SINK DOWN, retrying"
            } else {
                ""
            }
        );
    }
}
