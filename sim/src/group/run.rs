//! Running a group schedule: per partition, each owner's processes in turn
//! (a partition job: `OwnedPartition` over the simulated topic, the sink
//! writing partial rows), then the last owner's clean bounded run, then the
//! checks (`check`).

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use streamforge::checkpoint::kv::MemoryKv;
use streamforge::checkpoint::CheckpointStore;
use streamforge::config::Config;
use streamforge::group::OwnedPartition;
use streamforge::job::{run_in, Environment, JobOptions};
use streamforge::telemetry::Metrics;

use super::table::{self, PartialWrites, SharedTable};
use super::Tenure;
use crate::crash::{self, Armed};
use crate::model::Model;
use crate::plan::{Faults, Plan};
use crate::runner::{self, trace, Ended, Outcome};
use crate::sink::SimSink;
use crate::source::{SimSource, SourceSetup};
use crate::world::{Log, Shared, SimClock, World};

/// How a partition job's process is to run.
struct Process<'a> {
    partition: u32,
    instance: u8,
    clock: &'a Arc<SimClock>,
    /// Live until this clock ms; `None`: bounded, to the end of the input.
    until: Option<u64>,
    /// The instance is killed at this clock ms.
    killed_at: Option<u64>,
    /// From this clock ms its writes are a zombie's, arriving `late_ms` later.
    zombie_from: Option<u64>,
    late_ms: u64,
    faults: &'a Faults,
}

struct Group<'a> {
    plan: &'a Plan,
    dir: &'a Path,
    world: Shared,
    table: SharedTable,
    /// Per (instance, partition): the partition job's checkpoint store.
    stores: BTreeMap<(u8, u32), Arc<MemoryKv>>,
    out: Outcome,
    aborted: bool,
}

pub fn run_group(plan: &Plan, dir: &Path) -> Outcome {
    crash::install();
    runner::clear(dir);
    let g = plan.group.as_ref().expect("a group plan");
    let log = Arc::new(Log::from_plan(plan));
    let model = Model::new(plan, &log);
    let last_arrival = log.parts.iter().filter_map(|p| p.at.last().copied()).max();
    let end_ms = super::gen::last_stop_ms(plan).max(last_arrival.unwrap_or(0)) + 1;
    let mut group = Group {
        plan,
        dir,
        world: Arc::new(Mutex::new(World {
            log,
            log_start: vec![0; plan.partitions.len()],
            table: BTreeMap::new(),
            notes: Vec::new(),
        })),
        table: SharedTable::default(),
        stores: BTreeMap::new(),
        out: Outcome::default(),
        aborted: false,
    };
    for i in 0..g.instances {
        let _ = std::fs::create_dir_all(group.instance_dir(i));
    }
    for (p, tenures) in g.owners.iter().enumerate() {
        let p = p as u32;
        for t in tenures {
            group.tenure(p, t);
            if group.aborted {
                return group.out;
            }
        }
        group.final_run(p, g.last_owner[p as usize], end_ms);
        if group.aborted {
            return group.out;
        }
        // Whatever is still in flight lands after everything else.
        table::lock(&group.table).deliver(p, u64::MAX);
    }
    let logs: Vec<PathBuf> = (0..g.instances)
        .flat_map(|i| (0..plan.partitions.len()).map(move |p| (i, p as u32)))
        .map(|(i, p)| group.config(i, p).anomaly_log)
        .collect();
    let t = table::lock(&group.table);
    group.out.divergences.extend(t.notes.iter().cloned());
    group.out.divergences.extend(super::check::partial_rows(
        &model,
        plan.partitions.len(),
        &t,
    ));
    group
        .out
        .divergences
        .extend(super::check::user_unions(&model, plan.seed, &t));
    group
        .out
        .divergences
        .extend(super::check::anomaly_union(&model, &logs));
    drop(t);
    group.out
}

impl Group<'_> {
    fn instance_dir(&self, instance: u8) -> PathBuf {
        self.dir.join(format!("instance-{instance}"))
    }

    /// The configuration of `instance`'s job of `partition`, as the group
    /// runner makes it (`streamforge::group::partition_config`).
    fn config(&self, instance: u8, partition: u32) -> Config {
        let mut cfg = runner::config(self.plan, &self.instance_dir(instance));
        cfg.kafka.group_mode = true;
        streamforge::group::partition_config(&cfg, partition)
    }

    fn store(&mut self, instance: u8, partition: u32) -> Arc<MemoryKv> {
        self.stores
            .entry((instance, partition))
            .or_default()
            .clone()
    }

    fn new_clock(&self, at_ms: u64) -> Arc<SimClock> {
        let clock = Arc::new(SimClock::new(self.plan.settings.wall_origin_ms));
        clock.advance_to_ms(at_ms);
        clock
    }

    fn diverge(&mut self, what: String) {
        self.out.divergences.push(what);
        self.aborted = true;
    }

    /// One owner's time with the partition: its first process has the
    /// tenure's faults; after a crash the instance restarts and goes on
    /// (clean) until the partition is taken from it, or it is killed.
    fn tenure(&mut self, p: u32, t: &Tenure) {
        let clock = self.new_clock(t.from_ms);
        let stop = t.stop_ms();
        let mut faults = t.faults.clone();
        for _ in 0..8 {
            if clock.now_ms() >= stop {
                return;
            }
            let ended = self.process(Process {
                partition: p,
                instance: t.instance,
                clock: &clock,
                until: Some(stop),
                killed_at: t.killed.then_some(stop),
                zombie_from: (t.zombie_ms > 0).then_some(t.until_ms),
                late_ms: t.late_ms,
                faults: &faults,
            });
            match ended {
                Ended::Completed(_) => return,
                Ended::Crashed(at) => {
                    trace!("  crashed at {at}");
                    self.out.crashes += 1;
                    self.after_crash(t.instance, p, &t.faults);
                }
                Ended::Failed(msg) if expected(&msg, &faults) => {}
                other => return self.unplanned(other),
            }
            faults = Faults::default();
        }
        self.diverge(format!(
            "partition {p}: a tenure of instance {} never ended",
            t.instance
        ));
    }

    /// The partition's last owner reads it to its end, cleanly.
    fn final_run(&mut self, p: u32, instance: u8, end_ms: u64) {
        let clock = self.new_clock(end_ms);
        let clean = Faults::default();
        let ended = self.process(Process {
            partition: p,
            instance,
            clock: &clock,
            until: None,
            killed_at: None,
            zombie_from: None,
            late_ms: 0,
            faults: &clean,
        });
        let Ended::Completed(report) = ended else {
            return self.unplanned(ended);
        };
        if !report.finished_input {
            self.diverge(format!(
                "partition {p}: the final run did not finish its input"
            ));
        }
        let kv = self.store(instance, p);
        let store = CheckpointStore::in_memory(kv, self.plan.settings.keep);
        let pending = store
            .load_latest()
            .ok()
            .and_then(|(cp, _)| cp)
            .map_or(0, |cp| cp.pending.len());
        if pending > 0 {
            self.diverge(format!(
                "partition {p}: {pending} pending batches after the final run"
            ));
        }
    }

    fn unplanned(&mut self, ended: Ended) {
        match ended {
            Ended::Completed(_) | Ended::Crashed(_) => {}
            Ended::Failed(msg) => self.diverge(format!("the job failed: {msg}")),
            Ended::Hung(why) => self.diverge(format!("the job did not finish: {why}")),
            Ended::Panicked(msg) => self.diverge(format!("the job panicked: {msg}")),
        }
    }

    /// What a crash (or a kill) loses: checkpoint writes not flushed, and
    /// the end of the instance's anomaly log of the partition after its
    /// newest checkpoint's length (anywhere, even within a line).
    fn after_crash(&mut self, instance: u8, p: u32, faults: &Faults) {
        let kv = self.store(instance, p);
        kv.crash(faults.unflushed_survives);
        let path = self.config(instance, p).anomaly_log;
        let Ok(meta) = std::fs::metadata(&path) else {
            return;
        };
        let store = CheckpointStore::in_memory(kv, self.plan.settings.keep);
        let kept = store
            .load_latest()
            .ok()
            .and_then(|(cp, _)| cp)
            .map_or(0, |cp| cp.anomaly_log_len)
            .min(meta.len());
        let cut = kept + (meta.len() - kept) * u64::from(faults.log_cut_permille) / 1000;
        if let Ok(f) = std::fs::OpenOptions::new().write(true).open(&path) {
            let _ = f.set_len(cut);
        }
    }

    fn process(&mut self, run: Process<'_>) -> Ended {
        self.out.runs += 1;
        let Process {
            partition: p,
            instance,
            clock,
            until,
            ..
        } = run;
        let now = clock.now_ms();
        let kv = self.store(instance, p);
        let stop = Arc::new(AtomicBool::new(false));
        let source = SimSource::new(SourceSetup {
            world: self.world.clone(),
            clock: clock.clone(),
            stop: stop.clone(),
            until_ms: until,
            at_end: None,
            discovery_ms: 0,
            faults: run.faults.clone(),
            seed: self.plan.seed ^ (u64::from(self.out.runs) << 32),
        });
        let source = OwnedPartition::new(Box::new(source), p);
        let sink = SimSink::new(self.world.clone(), clock.clone(), run.faults.clone()).partial(
            PartialWrites {
                table: self.table.clone(),
                partition: p,
                zombie_from_ms: run.zombie_from,
                late_ms: run.late_ms,
            },
        );
        let env = Environment {
            clock: clock.clone(),
            inline: true,
            store: Some(kv.clone()),
            fingerprint_seed: Some(self.plan.seed),
        };
        let opts = JobOptions {
            bounded: until.is_none(),
            stop,
            progress: false,
            shutdown_grace: Duration::from_secs(5),
        };
        crash::arm(Armed {
            crash_step: run.faults.crash_step,
            crash_point: run.faults.crash_point.clone(),
            deadline_ms: until.unwrap_or(now) + 3 * 3_600_000,
            crash_at_ms: run.killed_at,
            step_limit: crate::runner::process::STEP_LIMIT,
            kv,
            keep: self.plan.settings.keep,
        });
        let cfg = self.config(instance, p);
        let result = catch_unwind(AssertUnwindSafe(|| {
            run_in(
                &cfg,
                Box::new(source),
                Box::new(sink),
                &opts,
                Arc::new(Metrics::new()),
                env,
            )
        }));
        let seen = crash::disarm();
        self.out.steps += seen.steps;
        trace!(
            "partition {p} instance {instance} run {} ({}) from clock {now} to {} ms, {} steps: {}",
            self.out.runs,
            if until.is_some() { "live" } else { "bounded" },
            clock.now_ms(),
            seen.steps,
            match &result {
                Ok(Ok(_)) => "completed".to_string(),
                Ok(Err(e)) => format!("failed: {e:#}"),
                Err(_) => "crashed or hung".to_string(),
            }
        );
        self.out.divergences.extend(seen.notes);
        match result {
            Ok(Ok(report)) => Ended::Completed(Box::new(report)),
            Ok(Err(e)) => Ended::Failed(format!("{e:#}")),
            Err(payload) => match crash::classify(payload.as_ref()) {
                Some(Ok(at)) => Ended::Crashed(at),
                Some(Err(why)) => Ended::Hung(why),
                None => Ended::Panicked(seen.last_panic.unwrap_or_else(|| "a panic".into())),
            },
        }
    }
}

/// A failure the run's faults call for (the instance restarts).
fn expected(msg: &str, faults: &Faults) -> bool {
    (faults.sink_fatal_write.is_some() && msg.contains("rejected a write for good"))
        || (faults.source_fatal_poll.is_some() && msg.contains("refused the consumer"))
}
