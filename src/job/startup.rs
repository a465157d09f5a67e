//! Start-up and recovery: the state directory's newest good checkpoint (or
//! a fresh start), the source positioned at its offsets (and a bounded run's
//! end), the sink writer with the pending output resent, and the job
//! assembled from them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tracing::{error, info, warn};

use super::late_watch::LateWatch;
use super::{Discovery, Environment, InFlight, Job, JobOptions, JobReport, Slot, TimeGuard};
use crate::anomaly_log::AnomalyLog;
use crate::checkpoint::committer::Committer;
use crate::checkpoint::{CheckpointStore, PendingBatch, Recovered};
use crate::clock::Clock;
use crate::config::Config;
use crate::engine::Engine;
use crate::failpoint::crash_point;
use crate::sink::{Backoff, Sink, SinkWriter};
use crate::source::{End, Source};
use crate::telemetry::Metrics;

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

/// Runs the job in `env` until the input ends (bounded) or a stop is
/// requested (see [`super::run`]).
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
    let (store, latest, skipped) = open_store(cfg, &env)?;
    let report = first_report(cfg, sink.as_ref(), skipped, latest.as_ref().map(|cp| cp.id));
    let source_id = source.id();
    let mut resumed = resume(
        cfg,
        latest,
        source.as_ref(),
        &source_id,
        env.fingerprint_seed,
    )?;
    if source.owned_partition().is_some() {
        resumed.engine.carry_user_sets();
    }
    let (slots, source_identity, bounded_end) =
        open_source(cfg, opts, source.as_mut(), &mut resumed)?;
    let resent: usize = resumed.pending.iter().map(|b| b.rows.len()).sum();
    let Some(writer) = start_sink(sink, cfg, &env, &opts.stop, &mut resumed)? else {
        info!("stop requested while waiting for the sink: nothing was read, and the next start begins afresh");
        return Ok(report);
    };
    publish_start(&metrics, report.restored_from, resent, &slots);
    crash_point("job::recovery::after_resend");
    let committer = start_committer(store, &env)?;
    let discovery = source.discovery_interval().map(|interval| Discovery {
        interval,
        last: None,
    });
    let fresh = resumed.fresh;
    let mut job = Job {
        cfg,
        opts,
        clock: clock.clone(),
        source,
        writer,
        committer,
        engine: resumed.engine,
        anomalies: resumed.anomalies,
        source_id,
        source_identity,
        slots,
        guard: TimeGuard::of(&cfg.window),
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
        parallel_parse: !env.inline,
        late_watch: LateWatch::default(),
    };
    job.refresh_ceiling();
    let outcome = if fresh {
        // The resolved start offsets are durable before the first record.
        job.barrier(true, true).and_then(|()| job.main_loop())
    } else {
        job.main_loop()
    };
    outcome.map(|()| job.into_report(started))
}

/// The report of a run before it processes anything.
fn first_report(
    cfg: &Config,
    sink: &dyn Sink,
    skipped: usize,
    restored_from: Option<u64>,
) -> JobReport {
    JobReport {
        anomaly_log: cfg.anomaly_log.clone(),
        state_dir: cfg.checkpoint.state_dir.clone(),
        sink: sink.describe(),
        corrupt_checkpoints_skipped: skipped,
        restored_from,
        ..Default::default()
    }
}

impl Job<'_> {
    /// The report of a run that started at `started` (on the job clock).
    fn into_report(self, started: std::time::Duration) -> JobReport {
        let mut report = self.report;
        report.counters = self.engine.counters;
        report.rows_pending = self.pending.iter().map(|b| b.rows.len()).sum();
        report.elapsed = self.clock.now().saturating_sub(started);
        if self.opts.progress {
            eprintln!();
        }
        report
    }
}

/// Where start-up left the job, for the metrics that tests and the crash
/// demo read: the checkpoint recovered from, the rows sent again, the
/// offsets to resume at.
fn publish_start(metrics: &Metrics, restored_from: Option<u64>, resent: usize, slots: &[Slot]) {
    if restored_from.is_some() {
        metrics.restarts_recovered.inc();
    }
    let offsets: Vec<u64> = slots.iter().map(|s| s.next_offset).collect();
    metrics.recovered(restored_from.unwrap_or(0), resent, &offsets);
}

/// The checkpoint committer: on a thread of its own, or inline in the
/// one-thread mode.
fn start_committer(
    store: CheckpointStore,
    env: &Environment,
) -> anyhow::Result<Committer<InFlight>> {
    if env.inline {
        return Ok(Committer::inline(store));
    }
    Committer::spawn(store).context("cannot start the checkpoint committer thread")
}

/// Opens the checkpoint store; returns it, its newest good checkpoint and
/// how many corrupt ones were skipped. Every checkpoint corrupt is an error.
fn open_store(
    cfg: &Config,
    env: &Environment,
) -> anyhow::Result<(CheckpointStore, Option<Recovered>, usize)> {
    let state_dir = &cfg.checkpoint.state_dir;
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("cannot create the state directory {}", state_dir.display()))?;
    let opening = Instant::now();
    let mut store = match &env.store {
        Some(memory) => CheckpointStore::in_memory(memory.clone(), cfg.checkpoint.keep),
        None => CheckpointStore::open(state_dir, cfg.checkpoint.keep)?,
    };
    let reading = Instant::now();
    let (latest, skipped) = store.recover()?;
    if let Some(cp) = &latest {
        info!(
            checkpoint = cp.id,
            open_ms = ms(reading - opening),
            read_ms = ms(reading.elapsed()),
            "checkpoint store opened and the newest checkpoint read"
        );
    }
    for e in &skipped {
        error!(error = %e, "skipping a corrupt checkpoint; falling back to the previous one");
    }
    // A damaged or unreadable checkpoint is never taken for no checkpoint
    // at all (a fresh start would move the anomaly log aside).
    if let (Some(first), None) = (skipped.first(), &latest) {
        bail!(
            "every checkpoint in {} is corrupt or depends on one that is ({first}); nothing safe to \
             resume from. Move the state directory aside and start again (the sink's idempotence \
             absorbs the recomputed rows)",
            state_dir.display()
        );
    }
    Ok((store, latest, skipped.len()))
}

/// Positions the source at the resumed offsets (a bounded run: to its end,
/// or to the end a resumed bounded run recorded), checks it is the same log,
/// and prepares the per-partition slots. Returns them, the identity to
/// record and a bounded run's end offsets.
type Opened = (Vec<Slot>, Option<String>, Option<BTreeMap<u32, u64>>);

fn open_source(
    cfg: &Config,
    opts: &JobOptions,
    source: &mut dyn Source,
    resumed: &mut Resumed,
) -> anyhow::Result<Opened> {
    let end = match (&resumed.bounded_end, opts.bounded) {
        (_, false) => End::Never,
        (Some(ends), true) => End::At(ends),
        (None, true) => End::Now,
    };
    let starts = source
        .open(&resumed.offsets, end)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let identity = check_identity(resumed.identity.as_deref(), source, cfg)?;
    let bounded_end = if opts.bounded {
        source.end_offsets()
    } else {
        None
    };
    let partitions = source.partition_count();
    resumed.engine.grow(partitions);
    // With discovery, nothing beyond what is processed is known to predate
    // a discovery until the first one, before the first poll.
    let discovers = source.discovery_interval().is_some();
    let mut slots: Vec<Slot> = (0..partitions).map(|_| Slot::default()).collect();
    if !resumed.fresh {
        check_unread_partitions(&resumed.offsets, &starts, source)?;
    }
    for (p, o) in starts {
        if let Some(slot) = slots.get_mut(p as usize) {
            slot.next_offset = o;
            slot.discovered_end = discovers.then_some(o);
        }
        let log_start = source.log_start(p);
        if resumed.fresh && log_start > 0 && o == log_start {
            warn!(
                partition = p,
                earliest_offset = log_start,
                "retention deleted the beginning of this partition: windows that may hold deleted records \
                 are not written (they could replace complete rows with a part)"
            );
            resumed.engine.mark_truncated(p as usize);
        }
    }
    Ok((slots, identity, bounded_end))
}

/// The sink writer (on its thread, or inline under simulation), with the
/// restored pending output resent. A fresh state first reads the highest
/// version the sink holds, to number its own above it; `None` when a stop
/// was requested meanwhile.
fn start_sink(
    mut sink: Box<dyn Sink>,
    cfg: &Config,
    env: &Environment,
    stop: &AtomicBool,
    resumed: &mut Resumed,
) -> anyhow::Result<Option<SinkWriter>> {
    if resumed.fresh {
        let Some(base) = highest_version_in(sink.as_mut(), cfg, env.clock.as_ref(), stop)? else {
            return Ok(None);
        };
        if base > 0 {
            info!(
                highest_version = base,
                "the sink already holds rows: this fresh state numbers its versions above them"
            );
        }
        resumed.engine.set_version_base(base);
    }
    let backoff = Backoff {
        initial: cfg.sink.retry_initial.0,
        max: cfg.sink.retry_max.0,
    };
    let mut writer = if env.inline {
        SinkWriter::inline(sink, backoff, env.clock.clone())
    } else {
        SinkWriter::spawn(sink, backoff)
    };
    for batch in &resumed.pending {
        writer.submit(batch.checkpoint_id, batch.rows.clone());
    }
    Ok(Some(writer))
}

/// How often a wait for the sink at start looks at the stop flag.
const STOP_CHECK: Duration = Duration::from_millis(100);

/// The highest version the sink holds, waiting with backoff while it is
/// unreachable: numbering from 1 instead would let the rows of a fresh state
/// lose to older ones already there (SPEC §6). `None` when `stop` is set
/// meanwhile (SIGINT/SIGTERM): the wait is the job's, and so is the stop.
fn highest_version_in(
    sink: &mut dyn Sink,
    cfg: &Config,
    clock: &dyn Clock,
    stop: &AtomicBool,
) -> anyhow::Result<Option<u64>> {
    let backoff = Backoff {
        initial: cfg.sink.retry_initial.0,
        max: cfg.sink.retry_max.0,
    };
    let mut attempt = 0u32;
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(None);
        }
        match sink.max_version(crate::window::LIVE_VERSION_LIMIT) {
            Ok(v) => return Ok(Some(v)),
            Err(crate::sink::SinkError::Fatal(e)) => bail!(
                "cannot read the highest version in the sink {}: {e}",
                sink.describe()
            ),
            Err(crate::sink::SinkError::Retryable(e)) => {
                let delay = backoff.delay(attempt);
                if attempt.is_multiple_of(10) {
                    warn!(
                        error = %e,
                        retry_in = ?delay,
                        "sink unreachable at start: a fresh state reads nothing until the sink says \
                         the highest version it holds (its rows must be numbered above them); \
                         SIGINT/SIGTERM stop the wait"
                    );
                }
                attempt += 1;
                // In slices, so that a stop is seen within one.
                let mut left = delay;
                while !left.is_zero() && !stop.load(Ordering::Relaxed) {
                    let slice = left.min(STOP_CHECK);
                    clock.sleep(slice);
                    left -= slice;
                }
            }
        }
    }
}

/// The anomaly log a resumed job appends to, cut back to the `len` bytes
/// its checkpoint covers once it is known to be this job's log
/// ([`AnomalyLog::resume`]; `offsets` are the checkpoint's): a record is
/// the job's when its (source, partition) is one of the job's.
fn reopen_anomaly_log(
    cfg: &Config,
    len: u64,
    offsets: &BTreeMap<u32, u64>,
    source: &dyn Source,
) -> anyhow::Result<AnomalyLog> {
    let path = &cfg.anomaly_log;
    let ours: BTreeMap<(&str, u32), u64> = (0..source.partition_count() as u32)
        .map(|p| {
            let logged_as = source.owned_partition().unwrap_or(p);
            let next = offsets.get(&p).copied().unwrap_or(0);
            ((source.source_name(p), logged_as), next)
        })
        .collect();
    let next_offset = |r: &crate::anomaly_log::AnomalyRecord| {
        ours.get(&(r.source.as_str(), r.partition)).copied()
    };
    AnomalyLog::resume(path, len, next_offset)
        .with_context(|| format!("cannot reopen the anomaly log {}", path.display()))
}

/// For two file-source ids (`files:` and a comma list), which files were
/// added and removed, as a sentence; empty otherwise. A file source's
/// partitions are its files, so a changed set is another input.
fn files_changed(was: &str, now: &str) -> String {
    let (Some(was), Some(now)) = (was.strip_prefix("files:"), now.strip_prefix("files:")) else {
        return String::new();
    };
    let (was, now): (Vec<&str>, Vec<&str>) = (was.split(',').collect(), now.split(',').collect());
    let added: Vec<&str> = now.iter().filter(|f| !was.contains(f)).copied().collect();
    let removed: Vec<&str> = was.iter().filter(|f| !now.contains(f)).copied().collect();
    let mut said = String::from(" The set of files changed");
    if !added.is_empty() {
        said += &format!(" (added: {})", added.join(", "));
    }
    if !removed.is_empty() {
        said += &format!(" (removed: {})", removed.join(", "));
    }
    if added.is_empty() && removed.is_empty() {
        said += " (the same files in another order)";
    }
    said + ": a file source's files are its partitions, and none can be added or removed under a \
            state directory; move other files out of the input directory, or start a fresh state \
            directory."
}

/// Restores from the newest good checkpoint, or starts fresh.
fn resume(
    cfg: &Config,
    latest: Option<Recovered>,
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
        let mut engine = fresh_engine(cfg, partitions, fingerprint_seed);
        engine.track_changes();
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
            "the state directory {} belongs to another input ({}); this run reads {}.{} \
             Use a different --state-dir, or the same input",
            cfg.checkpoint.state_dir.display(),
            cp.source_id,
            source_id,
            files_changed(&cp.source_id, source_id)
        );
    }
    let pending_rows: usize = cp.pending.iter().map(|b| b.rows.len()).sum();
    info!(
        checkpoint = cp.id,
        offsets = ?topic_offsets(&cp.offsets, source),
        anomaly_log_bytes = cp.anomaly_log_len,
        pending_rows,
        bounded_run_in_progress = cp.bounded_end.is_some(),
        deltas_on_base = cp.engine.deltas.len(),
        "recovering from checkpoint"
    );
    let chain = &cp.engine;
    let restoring = Instant::now();
    let mut engine = Engine::restore_chain(spec, partitions, &chain.base, &chain.deltas)
        .map_err(anyhow::Error::msg)?;
    check_groupings(&engine, cfg)?;
    check_group_seed(&engine, fingerprint_seed, source.owned_partition(), cfg)?;
    // The committer builds its own replica from the same chain, on its
    // thread, once it starts: after this restore (which has both cores) and
    // while the job reads. A copy of this engine here cost the first event
    // 140-200 ms at 1M users per window, and a third copy of the state in
    // memory while the chain was held.
    info!(restore_ms = ms(restoring.elapsed()), "state restored");
    engine.track_changes();
    let anomalies = reopen_anomaly_log(cfg, cp.anomaly_log_len, &cp.offsets, source)?;
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

/// A partition the checkpoint does not know (added since it was taken) is
/// read from its earliest offset: if retention already deleted the start of
/// it, records no run ever read are gone, and the job stops rather than
/// skip them silently, as it does for offsets a checkpoint names.
fn check_unread_partitions(
    checkpointed: &BTreeMap<u32, u64>,
    starts: &BTreeMap<u32, u64>,
    source: &dyn Source,
) -> anyhow::Result<()> {
    let lost: Vec<String> = starts
        .keys()
        .filter(|p| !checkpointed.contains_key(p) && source.log_start(**p) > 0)
        .map(|p| format!("partition {p} (offsets 0..{})", source.log_start(*p)))
        .collect();
    if lost.is_empty() {
        return Ok(());
    }
    bail!(
        "{}: {} added after the last checkpoint, and retention deleted records of it that no run has \
         read. Retention deleted records the checkpoint still needs; StreamForge does not skip them \
         silently. To accept the loss, start again with a fresh state directory",
        source.id(),
        lost.join(", ")
    )
}

/// The engine of a fresh state, with the configured groupings.
fn fresh_engine(cfg: &Config, partitions: usize, fingerprint_seed: Option<u64>) -> Engine {
    let spec = cfg.window.spec();
    let mut engine = match fingerprint_seed {
        Some(seed) => Engine::with_seed(spec, partitions, seed),
        None => Engine::new(spec, partitions),
    };
    engine.set_groupings(cfg.dimensions.spec());
    engine
}

/// Group mode: refuses to resume a partition's state keyed with another
/// fingerprint seed than the group's (see `group::group_seed`): its user
/// sets could not be merged with the other partitions'.
fn check_group_seed(
    engine: &Engine,
    seed: Option<u64>,
    partition: Option<u32>,
    cfg: &Config,
) -> anyhow::Result<()> {
    let (Some(seed), Some(partition)) = (seed, partition) else {
        return Ok(());
    };
    if engine.seed() == seed {
        return Ok(());
    }
    bail!(
        "the checkpoint of partition {partition} in {} was taken with another fingerprint seed than \
         the group's (derived from the topic and kafka.group_id), so its window rows' user sets \
         cannot be merged with the other partitions'. It was written by an earlier StreamForge \
         (before group mode merged users as sets) or for another topic or group: delete that \
         directory, and the partition is rebuilt from its earliest offset",
        cfg.checkpoint.state_dir.display()
    )
}

/// Refuses to resume a state with other groupings than the configuration's:
/// its grouped panes cannot be re-sliced.
fn check_groupings(engine: &Engine, cfg: &Config) -> anyhow::Result<()> {
    let was = engine.groupings();
    if *was != cfg.dimensions.spec() {
        bail!(
            "the checkpoint was taken with groupings {} (at most {} values per window), the config \
             now says {} ({}); restore the old dimensions settings, or start from a fresh state \
             directory and replay",
            crate::config::format_groupings(&was.groupings),
            was.max_values,
            crate::config::format_groupings(&cfg.dimensions.groupings),
            cfg.dimensions.max_values_per_window
        );
    }
    Ok(())
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

/// A duration in milliseconds with two decimals, for the recovery log.
fn ms(d: std::time::Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// `offsets` numbered as the topic numbers its partitions: a group-mode
/// partition job's one partition is its 0, logged as the partition it owns.
fn topic_offsets(offsets: &BTreeMap<u32, u64>, source: &dyn Source) -> BTreeMap<u32, u64> {
    match source.owned_partition() {
        Some(owned) => offsets.values().map(|o| (owned, *o)).collect(),
        None => offsets.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Group mode refuses a partition state keyed with another seed than
    /// the group's, saying what to delete; outside group mode (no owned
    /// partition, or no required seed) any seed resumes.
    #[test]
    fn a_partition_state_with_another_seed_than_the_groups_is_refused() {
        let mut cfg = Config::default();
        cfg.checkpoint.state_dir = std::path::PathBuf::from("/var/lib/sf/partition-4");
        let engine = Engine::with_seed(cfg.window.spec(), 1, 11);
        assert!(check_group_seed(&engine, Some(11), Some(4), &cfg).is_ok());
        assert!(check_group_seed(&engine, None, Some(4), &cfg).is_ok());
        assert!(check_group_seed(&engine, Some(12), None, &cfg).is_ok());
        let e = check_group_seed(&engine, Some(12), Some(4), &cfg)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("partition 4")
                && e.contains("/var/lib/sf/partition-4 ")
                && e.contains("delete that directory"),
            "{e}"
        );
    }
}
