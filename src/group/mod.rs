//! Group mode: several instances share a topic through a Kafka consumer
//! group, and ClickHouse combines what they write (docs/architecture.md,
//! "Group mode").
//!
//! # Layout
//!
//! * `membership`: the group consumer; which partitions this instance owns.
//! * `owned`: one partition of the topic as a job's whole input.
//! * this file: the runner, a job per owned partition.
//!
//! # A job per owned partition
//!
//! Each partition this instance owns runs as an ordinary job (its own
//! thread, checkpoints in `<state_dir>/partition-<p>/`, anomaly log
//! `<anomaly_log>.partition-<p>`), reading that partition alone from its
//! earliest offset or its local checkpoint. So every verdict (watermark,
//! lateness, dedup, windows) is a function of one partition's log, and the
//! rows are the same whichever instance computes them; each row goes to
//! `<table>_partial` versioned by the partition's offset, and a partition
//! lost in a rebalance is stopped with a final checkpoint, kept on disk for
//! when it comes back.

mod membership;
mod owned;

pub use membership::{Change, Membership};
pub use owned::{OwnedPartition, NO_OFFSET};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{bail, Context};
use tracing::{info, warn};

use crate::config::{Config, SinkKind, SourceKind};
use crate::job::{self, Environment, JobOptions, JobReport};
use crate::setting::Dur;
use crate::sink::clickhouse::ClickHouseSink;
use crate::source::kafka::KafkaSource;
use crate::telemetry::Metrics;

/// A partition job running on its own thread.
struct PartitionJob {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<anyhow::Result<JobReport>>,
    /// The partition's next offset as of its last durable checkpoint.
    checkpointed: Arc<AtomicU64>,
}

/// What the group mode needs, checked before joining.
pub fn check(cfg: &Config) -> anyhow::Result<()> {
    if cfg.source.kind != SourceKind::Kafka {
        bail!("kafka.group_mode needs the kafka source (source.kind: kafka)");
    }
    if cfg.sink.kind != SinkKind::Clickhouse {
        bail!(
            "kafka.group_mode needs the ClickHouse sink (sink.kind: clickhouse): instances on other \
             machines combine their partial rows there"
        );
    }
    if !cfg.dimensions.groupings.is_empty() {
        bail!("kafka.group_mode does not compute grouped results yet: remove dimensions.groupings");
    }
    Ok(())
}

/// The configuration of partition `p`'s job: its own state directory and
/// anomaly log, the partition read from its earliest offset (its verdicts
/// depend on its whole log), no discovery and no advisory commits (the
/// membership owns both), no listener.
pub fn partition_config(cfg: &Config, p: u32) -> Config {
    let mut c = cfg.clone();
    c.checkpoint.state_dir = cfg.checkpoint.state_dir.join(format!("partition-{p}"));
    let mut log = cfg.anomaly_log.clone().into_os_string();
    log.push(format!(".partition-{p}"));
    c.anomaly_log = PathBuf::from(log);
    c.kafka.start = "earliest".into();
    c.kafka.commit_offsets = false;
    c.kafka.owned_partition = Some(p);
    c.kafka.partition_discovery_interval = Dur(Duration::ZERO);
    c.metrics_addr = String::new();
    c
}

/// The fingerprint seed every partition state of the group is keyed with:
/// the window rows' user sets of different partitions, computed by
/// different instances, can only be merged if equal users have equal
/// fingerprints. Derived from what every instance of the group shares (the
/// topic and `kafka.group_id`), so a partition rebuilt anywhere gets the
/// same seed. Unlike a single job's random seed it is not secret
/// (docs/semantics.md, "Group mode").
pub fn group_seed(cfg: &Config) -> u64 {
    let key = format!(
        "streamforge group fingerprint seed\0{}\0{}",
        cfg.kafka.topic, cfg.kafka.group_id
    );
    xxhash_rust::xxh3::xxh3_64(key.as_bytes())
}

fn start_partition(cfg: &Config, p: u32, bounded: bool) -> anyhow::Result<PartitionJob> {
    let pcfg = partition_config(cfg, p);
    let inner = KafkaSource::new(&pcfg.kafka)?;
    let source = Box::new(OwnedPartition::new(Box::new(inner), p));
    let checkpointed = source.checkpointed();
    let mut sink = ClickHouseSink::connect(&pcfg.clickhouse)?;
    sink.set_group_mode(Some(p));
    sink.prepare()?;
    let stop = Arc::new(AtomicBool::new(false));
    let opts = JobOptions {
        bounded,
        stop: stop.clone(),
        progress: false,
        shutdown_grace: Duration::from_secs(10),
    };
    let handle = std::thread::Builder::new()
        .name(format!("partition-{p}"))
        .spawn(move || {
            // Every line of this job names the topic's partition: the job
            // itself sees one partition, numbered 0.
            let _span = tracing::info_span!("partition_job", partition = p).entered();
            let metrics = Arc::new(Metrics::new());
            let env = Environment {
                fingerprint_seed: Some(group_seed(&pcfg)),
                ..Environment::machine()
            };
            job::run_in(&pcfg, source, Box::new(sink), &opts, metrics, env)
                .with_context(|| format!("the job of partition {p}"))
        })
        .context("starting a partition job")?;
    info!(partition = p, "partition assigned: its job started");
    Ok(PartitionJob {
        stop,
        handle,
        checkpointed,
    })
}

fn stop_partition(p: u32, job: PartitionJob) -> anyhow::Result<JobReport> {
    job.stop.store(true, Ordering::Relaxed);
    let report = join(p, job.handle)?;
    info!(
        partition = p,
        "partition revoked: its job stopped after a final checkpoint"
    );
    Ok(report)
}

fn join(p: u32, handle: JoinHandle<anyhow::Result<JobReport>>) -> anyhow::Result<JobReport> {
    match handle.join() {
        Ok(result) => result,
        Err(_) => bail!("the job of partition {p} panicked"),
    }
}

/// What a group-mode run did: the reports of the partition jobs that
/// ended, per partition (a partition owned twice keeps its last).
#[derive(Debug, Default)]
pub struct GroupReport {
    pub partitions: BTreeMap<u32, JobReport>,
}

/// Runs this instance as a member of the group until `stop` (or, with
/// `bounded`, until every partition it owns is read to its end), starting
/// and stopping a job per partition as the group assigns and revokes them.
pub fn run(cfg: &Config, bounded: bool, stop: Arc<AtomicBool>) -> anyhow::Result<GroupReport> {
    check(cfg)?;
    if !cfg.metrics_addr.is_empty() && cfg.metrics_addr != "off" {
        info!(
            metrics_addr = %cfg.metrics_addr,
            "group mode serves no metrics listener or live page yet (docs/operations.md); \
             watch progress with the consumer group's lag and the combined table"
        );
    }
    let membership = Membership::join(&cfg.kafka)?;
    let mut jobs: BTreeMap<u32, PartitionJob> = BTreeMap::new();
    let mut report = GroupReport::default();
    let outcome = serve(cfg, bounded, &stop, &membership, &mut jobs, &mut report);
    for (p, job) in std::mem::take(&mut jobs) {
        match stop_partition(p, job) {
            Ok(r) => {
                report.partitions.insert(p, r);
            }
            Err(e) => {
                warn!(partition = p, error = %format!("{e:#}"), "a partition job failed while stopping")
            }
        }
    }
    membership.leave();
    outcome.map(|()| report)
}

/// The runner's loop (see [`run`]).
fn serve(
    cfg: &Config,
    bounded: bool,
    stop: &AtomicBool,
    membership: &Membership,
    jobs: &mut BTreeMap<u32, PartitionJob>,
    report: &mut GroupReport,
) -> anyhow::Result<()> {
    let mut offsets = GroupOffsets::new(cfg.kafka.commit_offsets);
    while !stop.load(Ordering::Relaxed) {
        offsets.commit_progress(membership, jobs);
        for change in membership.poll(Duration::from_millis(100)) {
            match change {
                Change::Revoked(ps) => {
                    for p in ps {
                        if let Some(job) = jobs.remove(&p) {
                            report.partitions.insert(p, stop_partition(p, job)?);
                        }
                    }
                }
                Change::Assigned(ps) => {
                    for p in ps {
                        if let std::collections::btree_map::Entry::Vacant(slot) = jobs.entry(p) {
                            slot.insert(start_partition(cfg, p, bounded)?);
                        }
                    }
                }
            }
        }
        let ended: Vec<u32> = jobs
            .iter()
            .filter(|(_, j)| j.handle.is_finished())
            .map(|(p, _)| *p)
            .collect();
        for p in ended {
            let job = jobs.remove(&p).expect("listed above");
            offsets.commit_final(membership, p, &job);
            let r = join(p, job.handle)?;
            info!(partition = p, "partition job finished its bounded input");
            report.partitions.insert(p, r);
        }
        if bounded && jobs.is_empty() && !report.partitions.is_empty() {
            break;
        }
    }
    Ok(())
}

/// The offsets this instance commits to the group (`kafka.commit_offsets`):
/// each owned partition's next offset as of its job's last durable
/// checkpoint, committed by the membership consumer when it moves.
struct GroupOffsets {
    enabled: bool,
    sent: BTreeMap<u32, u64>,
}

impl GroupOffsets {
    fn new(enabled: bool) -> Self {
        GroupOffsets {
            enabled,
            sent: BTreeMap::new(),
        }
    }

    /// Commits the owned partitions whose checkpointed offset moved.
    fn commit_progress(&mut self, membership: &Membership, jobs: &BTreeMap<u32, PartitionJob>) {
        self.commit_moved(membership, jobs.iter().map(|(p, j)| (*p, j)));
    }

    /// Commits the offset of a partition whose job ended (its final
    /// checkpoint), before it leaves this instance.
    fn commit_final(&mut self, membership: &Membership, p: u32, job: &PartitionJob) {
        self.commit_moved(membership, std::iter::once((p, job)));
    }

    fn commit_moved<'j>(
        &mut self,
        membership: &Membership,
        jobs: impl Iterator<Item = (u32, &'j PartitionJob)>,
    ) {
        if !self.enabled {
            return;
        }
        let moved: BTreeMap<u32, u64> = jobs
            .map(|(p, j)| (p, j.checkpointed.load(Ordering::Acquire)))
            .filter(|(p, o)| *o != NO_OFFSET && self.sent.get(p) != Some(o))
            .collect();
        membership.commit(&moved);
        self.sent.extend(moved);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_job_has_its_own_state_and_anomaly_log() {
        let mut cfg = Config::default();
        cfg.checkpoint.state_dir = PathBuf::from("/var/lib/sf");
        cfg.anomaly_log = PathBuf::from("logs/anomalies.log");
        cfg.kafka.start = "latest".into();
        let c = partition_config(&cfg, 7);
        assert_eq!(
            c.checkpoint.state_dir,
            PathBuf::from("/var/lib/sf/partition-7")
        );
        assert_eq!(
            c.anomaly_log,
            PathBuf::from("logs/anomalies.log.partition-7")
        );
        assert_eq!(c.kafka.start, "earliest");
        assert!(!c.kafka.commit_offsets);
        assert_eq!(c.kafka.owned_partition, Some(7));
        assert_ne!(
            partition_config(&cfg, 1).checkpoint.state_dir,
            c.checkpoint.state_dir
        );
    }

    /// Every instance derives the same seed from the topic and group id;
    /// another topic or group gets another.
    #[test]
    fn the_group_seed_is_shared_by_the_group_alone() {
        let mut cfg = Config::default();
        cfg.kafka.topic = "orders".into();
        cfg.kafka.group_id = "sf".into();
        let seed = group_seed(&cfg);
        assert_eq!(group_seed(&partition_config(&cfg, 3)), seed);
        let mut other = cfg.clone();
        other.kafka.group_id = "sf2".into();
        assert_ne!(group_seed(&other), seed);
        other = cfg.clone();
        other.kafka.topic = "orders2".into();
        assert_ne!(group_seed(&other), seed);
    }

    #[test]
    fn group_mode_needs_kafka_and_clickhouse() {
        let mut cfg = Config::default();
        cfg.source.kind = SourceKind::Kafka;
        cfg.sink.kind = SinkKind::Embedded;
        assert!(check(&cfg).is_err());
        cfg.sink.kind = SinkKind::Clickhouse;
        assert!(check(&cfg).is_ok());
        cfg.source.kind = SourceKind::Generator;
        assert!(check(&cfg).is_err());
    }
}
