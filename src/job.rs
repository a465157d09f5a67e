//! The job: the loop that drives source, engine, anomaly log, checkpoints and
//! sink, and owns the barrier.
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

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tracing::{error, info, warn};

use crate::anomaly::AnomalyLog;
use crate::checkpoint::committer::Committer;
use crate::checkpoint::{Checkpoint, CheckpointError, CheckpointStore, PendingBatch};
use crate::config::Config;
use crate::engine::{Counters, Engine, Lookahead, Prepared, Verdict};
use crate::failpoint::crash_point;
use crate::sink::{Backoff, Sink, SinkEvent, SinkWriter};
use crate::source::{PartitionState, RecordBatch, Source, SourceError};
use crate::telemetry::{self, Metrics};
use crate::time::{format_rfc3339_ms, now_ms};
use crate::window::WindowRow;

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
    /// Records re-read after the restored checkpoint: the replay a restart costs.
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

struct Job<'a> {
    cfg: &'a Config,
    opts: &'a JobOptions,
    source: Box<dyn Source>,
    writer: SinkWriter,
    /// Commits checkpoints; each carries what the job does once it is
    /// durable.
    committer: Committer<InFlight>,
    engine: Engine,
    anomalies: AnomalyLog,
    source_id: String,
    next_offsets: Vec<u64>,
    caught_up_since: Vec<Option<Instant>>,
    /// Records polled from partitions that ran ahead, waiting in offset order.
    held: Vec<std::collections::VecDeque<(u64, Vec<u8>)>>,
    paused: Vec<bool>,
    /// Rows emitted since the last barrier.
    emitted: Vec<WindowRow>,
    /// Checkpointed batches the sink has not acknowledged.
    pending: Vec<PendingBatch>,
    next_checkpoint_id: u64,
    /// Something to record since the last checkpoint.
    changed: bool,
    records_since_barrier: u64,
    last_barrier: Instant,
    sink_waiting_since: Option<Instant>,
    source_down_since: Option<Instant>,
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

/// Runs the job until the input ends (bounded) or a stop is requested.
pub fn run(
    cfg: &Config,
    mut source: Box<dyn Source>,
    sink: Box<dyn Sink>,
    opts: &JobOptions,
    metrics: Arc<Metrics>,
) -> anyhow::Result<JobReport> {
    let started = Instant::now();
    let state_dir = &cfg.checkpoint.state_dir;
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("cannot create the state directory {}", state_dir.display()))?;
    let store = CheckpointStore::open(state_dir, cfg.checkpoint.keep)?;
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
    let partitions = source.partition_count();
    let source_id = source.id();
    let spec = cfg.window.spec();
    let mut report = JobReport {
        anomaly_log: cfg.anomaly_log.clone(),
        state_dir: state_dir.clone(),
        sink: sink.describe(),
        corrupt_checkpoints_skipped: skipped.len(),
        ..Default::default()
    };

    let (engine, anomalies, resume, pending, next_id) = match latest {
        Some(cp) => {
            if cp.source_id != source_id {
                bail!(
                    "the state directory {} belongs to another input ({}); this run reads {}. \
                     Use a different --state-dir, or the same input",
                    state_dir.display(),
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
                "recovering from checkpoint"
            );
            let engine =
                Engine::restore(spec, partitions, cp.engine).map_err(anyhow::Error::msg)?;
            let anomalies =
                AnomalyLog::resume(&cfg.anomaly_log, cp.anomaly_log_len).with_context(|| {
                    format!(
                        "cannot reopen the anomaly log {}",
                        cfg.anomaly_log.display()
                    )
                })?;
            report.restored_from = Some(cp.id);
            metrics.restarts_recovered.inc();
            (engine, anomalies, cp.offsets, cp.pending, cp.id + 1)
        }
        None => {
            let (anomalies, moved) = AnomalyLog::fresh(&cfg.anomaly_log).with_context(|| {
                format!("cannot open the anomaly log {}", cfg.anomaly_log.display())
            })?;
            if let Some(old) = moved {
                warn!(moved_to = %old.display(), "an anomaly log from an earlier run was moved aside");
            }
            info!(state_dir = %state_dir.display(), "no checkpoint: starting from the beginning of the input");
            (
                Engine::new(spec, partitions),
                anomalies,
                BTreeMap::new(),
                Vec::new(),
                1,
            )
        }
    };

    let starts = source
        .start(&resume, opts.bounded)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut next_offsets = vec![0u64; partitions];
    for (p, o) in starts {
        if let Some(slot) = next_offsets.get_mut(p as usize) {
            *slot = o;
        }
    }
    let writer = SinkWriter::spawn(
        sink,
        Backoff {
            initial: cfg.sink.retry_initial.0,
            max: cfg.sink.retry_max.0,
        },
    );
    for batch in &pending {
        writer.submit(batch.checkpoint_id, batch.rows.clone());
    }
    crash_point("job::recovery::after_resend");

    let committer =
        Committer::spawn(store).context("cannot start the checkpoint committer thread")?;
    let mut job = Job {
        cfg,
        opts,
        source,
        writer,
        committer,
        engine,
        anomalies,
        source_id,
        next_offsets,
        caught_up_since: vec![None; partitions],
        held: vec![Default::default(); partitions],
        paused: vec![false; partitions],
        emitted: Vec::new(),
        changed: false,
        pending,
        next_checkpoint_id: next_id,
        records_since_barrier: 0,
        last_barrier: Instant::now(),
        sink_waiting_since: None,
        source_down_since: None,
        sink_failed: None,
        metrics,
        report,
    };
    let outcome = job.main_loop();
    job.report.counters = job.engine.counters;
    job.report.rows_pending = job.pending.iter().map(|b| b.rows.len()).sum();
    job.report.elapsed = started.elapsed();
    if job.opts.progress {
        eprintln!();
    }
    outcome.map(|()| job.report)
}

impl Job<'_> {
    fn main_loop(&mut self) -> anyhow::Result<()> {
        let mut batch = RecordBatch::default();
        let poll_timeout = Duration::from_millis(100);
        let mut last_progress = Instant::now();
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

            batch.clear();
            // Held records may be released by what other partitions deliver:
            // do not wait long for new data while some are waiting.
            let timeout = if self.held.iter().any(|h| !h.is_empty()) {
                Duration::from_millis(2)
            } else {
                poll_timeout
            };
            match self.source.poll(&mut batch, self.cfg.batch_size, timeout) {
                Ok(()) => {
                    if let Some(since) = self.source_down_since.take() {
                        info!(down_for = ?since.elapsed(), "source is reachable again; resuming");
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
                        self.source_down_since = Some(Instant::now());
                        warn!(error = %e, "source unavailable; retrying with backoff, no data is lost");
                    }
                    std::thread::sleep(delay);
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

            let due_by_time = self.last_barrier.elapsed() >= self.cfg.checkpoint.interval.0
                && !self.cfg.checkpoint.interval.0.is_zero();
            let due_by_count = self.cfg.checkpoint.interval_events > 0
                && self.records_since_barrier >= self.cfg.checkpoint.interval_events;
            if due_by_time || due_by_count {
                self.barrier(false, false)?;
            }
            if self.opts.progress && last_progress.elapsed() >= Duration::from_millis(500) {
                last_progress = Instant::now();
                self.draw_progress();
            }
            let finished = (0..self.next_offsets.len()).all(|p| {
                self.source.state(p as u32) == PartitionState::Finished && self.held[p].is_empty()
            });
            if self.opts.bounded && finished {
                self.report.finished_input = true;
                info!("end of the bounded input: emitting every window");
                self.barrier(true, true)?;
                self.drain_sink(None)?;
                return self.barrier(false, true);
            }
        }
    }

    fn process(&mut self, batch: &RecordBatch) -> anyhow::Result<()> {
        let now = now_ms();
        let ctx = RecordCtx {
            now_s: now / 1000,
            detected_at: format_rfc3339_ms(now),
        };
        let mut processed = self.release_held(&ctx)?;
        // Each record is parsed a few records ahead of its turn, so the
        // state lookups of several records overlap (see `Lookahead`); a
        // record held back below is parsed again when it is released.
        let mut records = Lookahead::new(batch.iter());
        while let Some((meta, payload, prepared)) = records.next(&self.engine) {
            let p = meta.partition as usize;
            if !self.held.get(p).is_none_or(|h| h.is_empty()) || self.is_ahead(p) {
                self.hold(p, meta.offset, payload);
                continue;
            }
            self.handle(p, meta.offset, payload, prepared, &ctx)?;
            processed += 1;
        }
        if processed == 0 {
            return Ok(());
        }
        self.engine.flush_updates(ctx.now_s, &mut self.emitted);
        self.records_since_barrier += processed as u64;
        self.changed = true;
        self.metrics.observe_batch(&self.engine, processed);
        Ok(())
    }

    /// One record (`payload`, prepared by the engine) through the engine;
    /// its anomaly, if any, to the log.
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
                    anyhow::anyhow!(crate::anomaly::io_failure(
                        "append to",
                        self.anomalies.path(),
                        &e
                    ))
                })?;
            self.metrics.anomaly(reason);
        }
        if let Some(slot) = self.next_offsets.get_mut(p) {
            *slot = offset + 1;
        }
        Ok(())
    }

    /// Event-time alignment: a partition whose clock runs more than
    /// `alignment_drift` ahead of the slowest active partition waits (its
    /// records are held and the source pauses it) until the others catch up.
    /// Partitions then advance together, as in a live run, so whether an
    /// event is late does not depend on how the source happened to interleave
    /// its partitions.
    fn is_ahead(&self, p: usize) -> bool {
        let wm = self.engine.watermark();
        if wm == i64::MAX {
            return false;
        }
        let Some(clock) = self.engine.clock(p) else {
            return false;
        };
        if clock.max_event_ms == i64::MIN || clock.finished {
            return false;
        }
        let slowest = if wm == i64::MIN {
            i64::MIN
        } else {
            wm.saturating_add(self.cfg.window.out_of_orderness.ms())
        };
        clock.max_event_ms > slowest.saturating_add(self.cfg.window.alignment_drift.ms())
    }

    fn hold(&mut self, p: usize, offset: u64, payload: &[u8]) {
        if let Some(queue) = self.held.get_mut(p) {
            queue.push_back((offset, payload.to_vec()));
            // Pausing a Kafka partition drops what librdkafka prefetched and
            // costs a fetch round trip on resume: hold a good amount first,
            // pause only to bound memory.
            if queue.len() >= HOLD_BEFORE_PAUSE && !self.paused[p] {
                self.paused[p] = true;
                self.source.set_paused(p as u32, true);
            }
        }
    }

    /// Processes held records of partitions that may go on, and resumes
    /// paused partitions that are no longer ahead. Returns records processed.
    fn release_held(&mut self, ctx: &RecordCtx) -> anyhow::Result<usize> {
        let mut processed = 0;
        // Releasing one partition moves the watermark, which may release
        // another: go round until nothing moves.
        loop {
            let before = processed;
            for p in 0..self.held.len() {
                while !self.held[p].is_empty() && !self.is_ahead(p) {
                    if let Some((offset, payload)) = self.held[p].pop_front() {
                        let prepared = self.engine.prepare(&payload);
                        self.handle(p, offset, &payload, prepared, ctx)?;
                        processed += 1;
                    }
                }
            }
            if processed == before {
                break;
            }
        }
        for p in 0..self.held.len() {
            if self.paused[p] && self.held[p].is_empty() && !self.is_ahead(p) {
                self.paused[p] = false;
                self.source.set_paused(p as u32, false);
            }
        }
        Ok(processed)
    }

    /// Finished partitions release the watermark; caught-up ones do after
    /// the idle timeout; a backlog makes a partition count again.
    fn update_partitions(&mut self) {
        let now_s = now_ms() / 1000;
        let idle_after = self.cfg.window.idle_timeout.0;
        let mut caught_up = true;
        for p in 0..self.next_offsets.len() {
            // A partition whose source is done but whose records still wait
            // (alignment) is not finished for the watermark yet.
            let state = match self.source.state(p as u32) {
                PartitionState::Finished if !self.held[p].is_empty() => PartitionState::Backlog,
                state => state,
            };
            match state {
                PartitionState::Finished => {
                    self.engine.finish_partition(p, now_s, &mut self.emitted)
                }
                PartitionState::CaughtUp => {
                    let since = *self.caught_up_since[p].get_or_insert_with(Instant::now);
                    if since.elapsed() >= idle_after {
                        self.engine.set_idle(p, true, now_s, &mut self.emitted);
                    }
                }
                PartitionState::Backlog => {
                    caught_up = false;
                    self.caught_up_since[p] = None;
                    self.engine.set_idle(p, false, now_s, &mut self.emitted);
                }
            }
        }
        // Ready: recovered, caught up with the input, and the sink takes writes.
        let ready = caught_up && self.sink_waiting_since.is_none() && self.sink_failed.is_none();
        self.metrics
            .ready
            .store(ready, std::sync::atomic::Ordering::Relaxed);
    }

    /// Handles the sink writer's reports without blocking.
    fn service_sink(&mut self) -> anyhow::Result<()> {
        let events: Vec<SinkEvent> = self.writer.try_events().collect();
        for event in events {
            self.on_sink_event(event);
        }
        Ok(())
    }

    fn on_sink_event(&mut self, event: SinkEvent) {
        match event {
            SinkEvent::Acked {
                checkpoint_id,
                rows,
                latency,
            } => {
                self.pending.retain(|b| b.checkpoint_id > checkpoint_id);
                self.report.rows_acked += rows as u64;
                self.metrics.sink_batch(latency);
                self.changed = true;
                if let Some(since) = self.sink_waiting_since.take() {
                    info!(
                        down_for = ?since.elapsed(),
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
                    self.sink_waiting_since = Some(Instant::now());
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
    fn drain_sink(&mut self, limit: Option<Duration>) -> anyhow::Result<()> {
        // Rows of a checkpoint still being committed are not with the sink
        // yet.
        self.finish_commit(true)?;
        let started = Instant::now();
        let mut said = false;
        while !self.pending.is_empty() {
            if let Some(error) = self.sink_failed.take() {
                bail!("the sink rejected a write for good: {error}. Pending rows stay in the checkpoint");
            }
            if limit.is_some_and(|l| started.elapsed() >= l) {
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

    /// Takes a checkpoint: the snapshot here, on the job thread; the
    /// encoding, write and flush on the committer's. Its rows go to the sink
    /// once it is durable ([`Job::finish_commit`]): right away when `wait`
    /// (stop, end of input, errors), otherwise when the main loop sees the
    /// committer done. `final_flush` forces the watermark's consequences out
    /// first.
    fn barrier(&mut self, final_flush: bool, wait: bool) -> anyhow::Result<()> {
        let started = Instant::now();
        // One checkpoint in flight at a time, committed in id order.
        self.finish_commit(true)?;
        let now_s = now_ms() / 1000;
        self.engine.flush_updates(now_s, &mut self.emitted);
        if !self.changed && self.emitted.is_empty() && !final_flush {
            self.last_barrier = Instant::now();
            return Ok(());
        }
        let id = self.next_checkpoint_id;
        let rows = std::mem::take(&mut self.emitted);
        if !rows.is_empty() {
            self.pending.push(PendingBatch {
                checkpoint_id: id,
                rows: rows.clone(),
            });
        }
        let anomaly_log_len = self.anomalies.sync().map_err(|e| {
            anyhow::anyhow!(crate::anomaly::io_failure(
                "sync",
                self.anomalies.path(),
                &e
            ))
        })?;
        crash_point("job::barrier::after_anomaly_sync");
        let offsets: BTreeMap<u32, u64> = self
            .next_offsets
            .iter()
            .enumerate()
            .map(|(p, o)| (p as u32, *o))
            .collect();
        let checkpoint = Checkpoint {
            id,
            created_ms: now_ms(),
            source_id: self.source_id.clone(),
            offsets: offsets.clone(),
            anomaly_log_len,
            engine: self.engine.snapshot(),
            pending: self.pending.clone(),
        };
        let flight = InFlight {
            rows,
            offsets,
            pause: started.elapsed(),
            watermark: self.engine.watermark(),
        };
        self.committer
            .start(checkpoint, flight)
            .with_context(|| commit_failed(id))?;
        self.next_checkpoint_id += 1;
        self.changed = false;
        self.records_since_barrier = 0;
        self.last_barrier = Instant::now();
        if wait {
            self.finish_commit(true)?;
        }
        Ok(())
    }

    /// Completes the checkpoint in flight once the committer reports it
    /// durable: only then are its rows handed to the sink and its offsets
    /// committed to the consumer group. With `block`, waits for it; without,
    /// returns at once when it is not done yet.
    fn finish_commit(&mut self, block: bool) -> anyhow::Result<()> {
        let commit = if block {
            self.committer.wait()
        } else {
            self.committer.try_finished()
        };
        let Some(commit) = commit else {
            return Ok(());
        };
        let (id, flight) = (commit.id, commit.tag);
        let bytes = commit.result.with_context(|| commit_failed(id))?;
        crash_point("job::barrier::after_commit");
        if !flight.rows.is_empty() {
            self.writer.submit(id, flight.rows);
        }
        crash_point("job::barrier::after_submit");
        self.source.commit_advisory(&flight.offsets);
        for (partition, lag) in self.source.lag() {
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
            watermark = %telemetry::format_watermark(flight.watermark),
            pending_rows,
            "checkpoint committed"
        );
        Ok(())
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

/// What the job says when checkpoint `id` cannot be committed.
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
