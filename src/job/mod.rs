//! The job: the loop that drives source, engine, anomaly log, checkpoints and
//! sink, and owns the barrier.
//!
//! # Layout
//!
//! * this file: start-up and recovery ([`run`]), the main loop, and the path
//!   of one record to the engine;
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
mod partitions;
mod sink_health;

pub use intake::{Decision, TimeGuard};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use tracing::{error, info, warn};

use crate::anomaly_log::AnomalyLog;
use crate::checkpoint::committer::Committer;
use crate::checkpoint::kv::MemoryKv;
use crate::checkpoint::{Checkpoint, CheckpointError, CheckpointStore, PendingBatch};
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::engine::{Counters, Engine, EngineSnapshot, Lookahead, Prepared, Verdict};
use crate::failpoint::crash_point;
use crate::sink::{Backoff, Sink, SinkWriter};
use crate::source::{End, RecordBatch, RecordMeta, Source, SourceError};
use crate::telemetry::{self, Metrics};
use crate::time::format_rfc3339_ms;
use crate::window::WindowRow;

use intake::{Held, HeldRecord};

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
    /// Records waiting their turn (see `intake`).
    held: Held,
    /// Paused at the source because it holds many records.
    paused: bool,
}

/// Partition discovery of a live run (see `partitions`).
struct Discovery {
    interval: Duration,
    last: Duration,
    /// The watermark may not pass this: the frontier when the last
    /// completed discovery started.
    ceiling: i64,
}

/// The state the end of a bounded input leaves for a later run (see
/// `barrier`), kept to record the sink's acknowledgements after it.
struct FinalState {
    engine: EngineSnapshot,
    offsets: BTreeMap<u32, u64>,
    anomaly_log_len: u64,
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

/// What recovery found in the state directory.
struct Resumed {
    engine: Engine,
    anomalies: AnomalyLog,
    offsets: BTreeMap<u32, u64>,
    pending: Vec<PendingBatch>,
    next_id: u64,
    identity: Option<String>,
    bounded_end: Option<BTreeMap<u32, u64>>,
    fresh: bool,
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

/// [`run`] in a given [`Environment`].
pub fn run_in(
    cfg: &Config,
    mut source: Box<dyn Source>,
    sink: Box<dyn Sink>,
    opts: &JobOptions,
    metrics: Arc<Metrics>,
    env: Environment,
) -> anyhow::Result<JobReport> {
    let clock = env.clock.clone();
    let started = clock.now();
    let state_dir = &cfg.checkpoint.state_dir;
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("cannot create the state directory {}", state_dir.display()))?;
    let store = match &env.store {
        Some(memory) => CheckpointStore::in_memory(memory.clone(), cfg.checkpoint.keep),
        None => CheckpointStore::open(state_dir, cfg.checkpoint.keep)?,
    };
    let (latest, skipped) = store.load_latest()?;
    for e in &skipped {
        error!(error = %e, "skipping a corrupt checkpoint; falling back to the previous one");
    }
    if let Some(CheckpointError::Corrupt { .. }) = skipped.first() {
        if latest.is_none() {
            bail!(
                "every checkpoint in {} is corrupt; nothing safe to resume from. Move the state directory \
                 aside and start again (the sink's idempotence absorbs the recomputed rows)",
                state_dir.display()
            );
        }
    }
    let source_id = source.id();
    let mut report = JobReport {
        anomaly_log: cfg.anomaly_log.clone(),
        state_dir: state_dir.clone(),
        sink: sink.describe(),
        corrupt_checkpoints_skipped: skipped.len(),
        ..Default::default()
    };
    if let Some(cp) = &latest {
        report.restored_from = Some(cp.id);
        metrics.restarts_recovered.inc();
    }
    let resumed = resume(
        cfg,
        latest,
        source.as_ref(),
        &source_id,
        env.fingerprint_seed,
    )?;

    let end = match (&resumed.bounded_end, opts.bounded) {
        (_, false) => End::Never,
        (Some(ends), true) => End::At(ends),
        (None, true) => End::Now,
    };
    let starts = source
        .open(&resumed.offsets, end)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let source_identity = check_identity(resumed.identity.as_deref(), source.as_ref(), cfg)?;
    let bounded_end = if opts.bounded {
        source.end_offsets()
    } else {
        None
    };
    let partitions = source.partition_count();
    let mut engine = resumed.engine;
    engine.grow(partitions);
    let mut slots: Vec<Slot> = (0..partitions).map(|_| Slot::default()).collect();
    for (p, o) in starts {
        if let Some(slot) = slots.get_mut(p as usize) {
            slot.next_offset = o;
        }
        let log_start = source.log_start(p);
        if resumed.fresh && log_start > 0 && o == log_start {
            warn!(
                partition = p,
                earliest_offset = log_start,
                "retention deleted the beginning of this partition: windows that may hold deleted records \
                 are not written (they could replace complete rows with a part)"
            );
            engine.mark_truncated(p as usize);
        }
    }
    let mut sink = sink;
    if resumed.fresh {
        let base = highest_version_in(sink.as_mut(), cfg, clock.as_ref())?;
        if base > 0 {
            info!(
                highest_version = base,
                "the sink already holds rows: this fresh state numbers its versions above them"
            );
        }
        engine.set_version_base(base);
    }
    let backoff = Backoff {
        initial: cfg.sink.retry_initial.0,
        max: cfg.sink.retry_max.0,
    };
    let mut writer = if env.inline {
        SinkWriter::inline(sink, backoff, clock.clone())
    } else {
        SinkWriter::spawn(sink, backoff)
    };
    for batch in &resumed.pending {
        writer.submit(batch.checkpoint_id, batch.rows.clone());
    }
    crash_point("job::recovery::after_resend");

    let committer = if env.inline {
        Committer::inline(store)
    } else {
        Committer::spawn(store).context("cannot start the checkpoint committer thread")?
    };
    let discovery = source.discovery_interval().map(|interval| Discovery {
        interval,
        last: clock.now(),
        ceiling: engine.frontier(),
    });
    let guard = cfg.window.time_guard();
    let mut job = Job {
        cfg,
        opts,
        clock: clock.clone(),
        source,
        writer,
        committer,
        engine,
        anomalies: resumed.anomalies,
        source_id,
        source_identity,
        slots,
        guard,
        bounded_end,
        discovery,
        final_state: None,
        emitted: Vec::new(),
        changed: false,
        pending: resumed.pending,
        next_checkpoint_id: resumed.next_id,
        records_since_barrier: 0,
        last_barrier: clock.now(),
        sink_waiting_since: None,
        source_down_since: None,
        sink_failed: None,
        metrics,
        report,
    };
    job.refresh_ceiling();
    let outcome = if resumed.fresh {
        // The resolved start offsets are durable before the first record.
        job.barrier(true, true).and_then(|()| job.main_loop())
    } else {
        job.main_loop()
    };
    job.report.counters = job.engine.counters;
    job.report.rows_pending = job.pending.iter().map(|b| b.rows.len()).sum();
    job.report.elapsed = clock.now().saturating_sub(started);
    if job.opts.progress {
        eprintln!();
    }
    outcome.map(|()| job.report)
}

/// The highest version the sink holds, waiting with backoff while it is
/// unreachable: numbering from 1 instead would let the rows of a fresh state
/// lose to older ones already there (SPEC §6).
fn highest_version_in(sink: &mut dyn Sink, cfg: &Config, clock: &dyn Clock) -> anyhow::Result<u64> {
    let backoff = Backoff {
        initial: cfg.sink.retry_initial.0,
        max: cfg.sink.retry_max.0,
    };
    let mut attempt = 0u32;
    loop {
        match sink.max_version(crate::window::LIVE_VERSION_LIMIT) {
            Ok(v) => return Ok(v),
            Err(crate::sink::SinkError::Fatal(e)) => bail!(
                "cannot read the highest version in the sink {}: {e}",
                sink.describe()
            ),
            Err(crate::sink::SinkError::Retryable(e)) => {
                let delay = backoff.delay(attempt);
                if attempt % 10 == 0 {
                    warn!(error = %e, retry_in = ?delay, "sink unreachable at start; a fresh state needs its highest version before emitting anything");
                }
                attempt += 1;
                clock.sleep(delay);
            }
        }
    }
}

/// Restores from the newest good checkpoint, or starts fresh.
fn resume(
    cfg: &Config,
    latest: Option<Checkpoint>,
    source: &dyn Source,
    source_id: &str,
    fingerprint_seed: Option<u64>,
) -> anyhow::Result<Resumed> {
    let spec = cfg.window.spec();
    let partitions = source.partition_count();
    let Some(cp) = latest else {
        let (anomalies, moved) = AnomalyLog::fresh(&cfg.anomaly_log).with_context(|| {
            format!("cannot open the anomaly log {}", cfg.anomaly_log.display())
        })?;
        if let Some(old) = moved {
            warn!(moved_to = %old.display(), "an anomaly log from an earlier run was moved aside");
        }
        info!(state_dir = %cfg.checkpoint.state_dir.display(), "no checkpoint: starting from the beginning of the input");
        let engine = match fingerprint_seed {
            Some(seed) => Engine::with_seed(spec, partitions, seed),
            None => Engine::new(spec, partitions),
        };
        return Ok(Resumed {
            engine,
            anomalies,
            offsets: BTreeMap::new(),
            pending: Vec::new(),
            next_id: 1,
            identity: None,
            bounded_end: None,
            fresh: true,
        });
    };
    if cp.source_id != source_id {
        bail!(
            "the state directory {} belongs to another input ({}); this run reads {}. \
             Use a different --state-dir, or the same input",
            cfg.checkpoint.state_dir.display(),
            cp.source_id,
            source_id
        );
    }
    let pending_rows: usize = cp.pending.iter().map(|b| b.rows.len()).sum();
    info!(
        checkpoint = cp.id,
        offsets = ?cp.offsets,
        anomaly_log_bytes = cp.anomaly_log_len,
        pending_rows,
        bounded_run_in_progress = cp.bounded_end.is_some(),
        "recovering from checkpoint"
    );
    let engine = Engine::restore(spec, partitions, cp.engine).map_err(anyhow::Error::msg)?;
    let anomalies =
        AnomalyLog::resume(&cfg.anomaly_log, cp.anomaly_log_len).with_context(|| {
            format!(
                "cannot reopen the anomaly log {}",
                cfg.anomaly_log.display()
            )
        })?;
    Ok(Resumed {
        engine,
        anomalies,
        offsets: cp.offsets,
        pending: cp.pending,
        next_id: cp.id + 1,
        identity: cp.source_identity,
        bounded_end: cp.bounded_end,
        fresh: false,
    })
}

/// Refuses to resume on a log that is not the checkpoint's (a topic deleted
/// and created again, another cluster). Returns the identity to record.
fn check_identity(
    recorded: Option<&str>,
    source: &dyn Source,
    cfg: &Config,
) -> anyhow::Result<Option<String>> {
    let now = source.identity();
    match (recorded, now.as_deref()) {
        (Some(was), Some(is)) if was != is => bail!(
            "the input {} is not the log the state directory {} was reading: its checkpoint names {was}, \
             the brokers now say {is}. The topic was deleted and created again, or this is another \
             cluster; its offsets would skip or repeat records. Use a fresh --state-dir to read the new \
             log from its start (rows already in the sink stay; see docs/operations.md)",
            source.id(),
            cfg.checkpoint.state_dir.display()
        ),
        (Some(was), None) => {
            warn!(recorded = was, "cannot read the input's identity to check it against the checkpoint; resuming");
            Ok(Some(was.to_string()))
        }
        _ => Ok(now),
    }
}

impl Job<'_> {
    fn main_loop(&mut self) -> anyhow::Result<()> {
        let mut batch = RecordBatch::default();
        let poll_timeout = Duration::from_millis(100);
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

            batch.clear();
            // Held records may be released by what other partitions deliver:
            // do not wait long for new data while some are waiting.
            let timeout = if self.slots.iter().any(|s| !s.held.is_empty()) {
                Duration::from_millis(2)
            } else {
                poll_timeout
            };
            match self.source.poll(&mut batch, self.cfg.batch_size, timeout) {
                Ok(()) => {
                    if let Some(since) = self.source_down_since.take() {
                        let down_for = self.clock.now().saturating_sub(since);
                        info!(?down_for, "source is reachable again; resuming");
                    }
                    backoff_attempt = 0;
                }
                Err(SourceError::Transient(e)) => {
                    let delay = Backoff {
                        initial: Duration::from_millis(200),
                        max: Duration::from_secs(5),
                    }
                    .delay(backoff_attempt);
                    backoff_attempt += 1;
                    if self.source_down_since.is_none() {
                        self.source_down_since = Some(self.clock.now());
                        warn!(error = %e, "source unavailable; retrying with backoff, no data is lost");
                    }
                    self.clock.sleep(delay);
                    self.finish_commit(false)?;
                    self.service_sink()?;
                    continue;
                }
                Err(SourceError::Fatal(e)) => {
                    self.barrier(false, true)?;
                    bail!("{e}");
                }
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

    fn process(&mut self, batch: &RecordBatch) -> anyhow::Result<()> {
        let now = self.clock.wall_ms();
        let ctx = RecordCtx {
            now_s: now / 1000,
            detected_at: format_rfc3339_ms(now),
        };
        // Every partition with a record in this batch has data: none of
        // them may stay idle while the records of another move the
        // watermark.
        self.wake(batch);
        let mut processed = self.release_held(&ctx, false)?;
        // Each record is parsed a few records ahead of its turn, so the
        // state lookups of several records overlap (see `Lookahead`); a
        // record held back keeps its parse result.
        let mut records = Lookahead::new(batch.iter());
        while let Some((meta, payload, prepared)) = records.next(&self.engine) {
            let p = meta.partition as usize;
            let prepared = self.guard.against_record_time(prepared, meta.timestamp_ms);
            if p >= self.slots.len() {
                bail!(
                    "the source delivered a record of partition {p}, which the job does not know \
                     (a bug: please report it with the log)"
                );
            }
            if !self.slots[p].held.is_empty()
                || self.is_ahead(p)
                || self.is_unconfirmed(p, &prepared)
            {
                self.hold(p, &meta, payload, prepared);
                continue;
            }
            self.handle(p, meta.offset, payload, prepared, &ctx)?;
            processed += 1;
        }
        // A record held above may be confirmed by the records after it.
        processed += self.release_held(&ctx, false)?;
        if processed == 0 {
            return Ok(());
        }
        self.engine.flush_updates(ctx.now_s, &mut self.emitted);
        self.records_since_barrier += processed as u64;
        self.changed = true;
        self.metrics.observe_batch(&self.engine, processed);
        Ok(())
    }

    /// One record through the engine; its anomaly, if any, to the log.
    fn handle(
        &mut self,
        p: usize,
        offset: u64,
        payload: &[u8],
        prepared: Prepared,
        ctx: &RecordCtx,
    ) -> anyhow::Result<()> {
        if let Verdict::Anomaly(reason, event_time) =
            self.engine.apply(p, prepared, ctx.now_s, &mut self.emitted)
        {
            self.anomalies
                .append(
                    reason,
                    self.source.source_name(p as u32),
                    p as u32,
                    offset,
                    payload,
                    event_time,
                    &ctx.detected_at,
                )
                .map_err(|e| {
                    anyhow::anyhow!(crate::anomaly_log::io_failure(
                        "append to",
                        self.anomalies.path(),
                        &e
                    ))
                })?;
            self.metrics.anomaly(reason);
        }
        if let Some(slot) = self.slots.get_mut(p) {
            slot.next_offset = offset + 1;
        }
        Ok(())
    }

    /// Event-time alignment: a partition whose clock runs more than
    /// `alignment_drift` ahead of the slowest partition still delivering
    /// waits (its records are held and the source pauses it) until the
    /// others catch up. Partitions then advance together, as in a live run,
    /// so whether an event is late does not depend on how the source happened
    /// to interleave its partitions.
    #[inline]
    fn is_ahead(&self, p: usize) -> bool {
        let floor = self.engine.alignment_floor();
        if floor == i64::MAX {
            return false;
        }
        let Some(clock) = self.engine.clock(p) else {
            return false;
        };
        if clock.max_event_ms == i64::MIN || clock.finished {
            return false;
        }
        clock.max_event_ms > floor.saturating_add(self.cfg.window.alignment_drift.ms())
    }

    /// Whether a valid event must wait for confirmation (see `intake`).
    fn is_unconfirmed(&self, p: usize, prepared: &Prepared) -> bool {
        let Some(t) = prepared.event_time_ms() else {
            return false;
        };
        self.guard.is_unconfirmed(t, self.known_time(p))
    }

    /// What the job knows of event time at partition `p`: the larger of its
    /// clock and the job watermark (`i64::MIN`: nothing).
    fn known_time(&self, p: usize) -> i64 {
        let clock = self.engine.clock(p).map_or(i64::MIN, |c| c.max_event_ms);
        clock.max(self.engine.watermark())
    }

    fn hold(&mut self, p: usize, meta: &RecordMeta, payload: &[u8], prepared: Prepared) {
        let first = self.slots[p].held.is_empty();
        let unconfirmed = first && self.is_unconfirmed(p, &prepared);
        let slot = &mut self.slots[p];
        slot.held.push(HeldRecord {
            offset: meta.offset,
            payload: payload.to_vec(),
            prepared,
        });
        if unconfirmed {
            if let Some(t) = prepared.event_time_ms() {
                slot.held.mark_unconfirmed(t);
            }
            self.refresh_ceiling();
        }
        // Pausing a Kafka partition drops what librdkafka prefetched and
        // costs a fetch round trip on resume: hold a good amount first,
        // pause only to bound memory.
        let slot = &mut self.slots[p];
        if slot.held.len() >= HOLD_BEFORE_PAUSE && !slot.paused {
            slot.paused = true;
            self.source.set_paused(p as u32, true);
        }
    }

    /// Processes the held records that may go on: those of partitions no
    /// longer ahead, and unconfirmed ones the guard can decide now (every
    /// one of them when `end_of_input`). Resumes paused partitions that are
    /// no longer ahead. Returns the records processed.
    fn release_held(&mut self, ctx: &RecordCtx, end_of_input: bool) -> anyhow::Result<usize> {
        let mut processed = 0;
        // Releasing one partition moves the watermark, which may release
        // another: go round until nothing moves.
        loop {
            let before = processed;
            for p in 0..self.slots.len() {
                processed += self.release_partition(p, ctx, end_of_input)?;
            }
            if processed == before {
                break;
            }
        }
        for p in 0..self.slots.len() {
            if self.slots[p].paused && !self.is_ahead(p) {
                self.slots[p].paused = false;
                self.source.set_paused(p as u32, false);
            }
        }
        self.refresh_ceiling();
        Ok(processed)
    }

    fn release_partition(
        &mut self,
        p: usize,
        ctx: &RecordCtx,
        end_of_input: bool,
    ) -> anyhow::Result<usize> {
        let mut processed = 0;
        while let Some(head) = self.slots[p].held.front() {
            if !end_of_input && self.is_ahead(p) {
                break;
            }
            let mut prepared = head.prepared;
            if self.is_unconfirmed(p, &head.prepared) {
                let t = head.prepared.event_time_ms().unwrap_or(i64::MIN);
                let known = self.known_time(p);
                let held = &self.slots[p].held;
                match self
                    .guard
                    .decide(t, held.later_times(), known, end_of_input)
                {
                    Decision::Wait => {
                        if held.unconfirmed_at().is_none() {
                            self.slots[p].held.mark_unconfirmed(t);
                            self.refresh_ceiling();
                        }
                        break;
                    }
                    Decision::Confirm => {}
                    Decision::Reject => {
                        prepared = Prepared::rejected(crate::event::Reason::ImplausibleEventTime)
                    }
                }
            }
            let Some(record) = self.slots[p].held.pop() else {
                break;
            };
            self.handle(p, record.offset, &record.payload, prepared, ctx)?;
            processed += 1;
        }
        Ok(processed)
    }

    /// Caps the watermark below every record waiting for confirmation (so
    /// that a confirmed one is never late for having waited) and at the
    /// last discovery's frontier.
    fn refresh_ceiling(&mut self) {
        let jump = self.guard.max_jump_ms;
        let mut ceiling = self.discovery.as_ref().map_or(i64::MAX, |d| d.ceiling);
        for slot in &self.slots {
            if let Some(t) = slot.held.unconfirmed_at() {
                ceiling = ceiling.min(t.saturating_sub(jump));
            }
        }
        let now_s = self.clock.wall_ms() / 1000;
        self.engine
            .set_watermark_ceiling(ceiling, now_s, &mut self.emitted);
    }

    /// The next offset of every partition, as a checkpoint records them.
    fn offsets(&self) -> BTreeMap<u32, u64> {
        self.slots
            .iter()
            .enumerate()
            .map(|(p, s)| (p as u32, s.next_offset))
            .collect()
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
