//! Runs one plan: its phases of live and bounded runs, each run a simulated
//! process (`streamforge::job::run_in` on this thread, caught when it
//! crashes), with what happens between processes (downtime, damaged
//! checkpoints, retention, the loss of what a crash may lose), then a final
//! clean bounded run, then the invariants (`checks`).
//!
//! A run's outcome is either planned (it completed, it crashed where its
//! plan said, it failed with the error its faults call for) or a divergence.
//! An unplanned outcome ends the schedule: what would follow proves nothing.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use streamforge::checkpoint::kv::MemoryKv;
use streamforge::checkpoint::{Checkpoint, CheckpointStore};
use streamforge::config::Config;
use streamforge::job::JobReport;
use streamforge::setting::Dur;

use crate::crash;
use crate::model::Model;
use crate::plan::{Before, Kind, PhaseKind, Plan, Retention};
use crate::world::{lock, Log, Shared, SimClock, World};

/// What a schedule did, and what went wrong.
#[derive(Debug, Default)]
pub struct Outcome {
    pub divergences: Vec<String>,
    pub runs: u32,
    pub crashes: u32,
    pub steps: u64,
    /// The sink's rows after the final run, when the schedule got there.
    pub final_table: Option<BTreeMap<i64, streamforge::window::WindowRow>>,
}

/// An error the next run must end with.
#[derive(Debug, Clone, PartialEq)]
enum Expect {
    /// Retention deleted offsets the checkpoint needs; afterwards the
    /// deleted records come back (an operator restores them).
    Retention { partition: usize, restore_to: u64 },
    /// No checkpoint verifies; afterwards the operator starts a fresh state.
    AllCorrupt,
}

/// How one run ended.
pub(crate) enum Ended {
    Completed(Box<JobReport>),
    Failed(String),
    Crashed(String),
    Hung(String),
    Panicked(String),
}

pub struct Sched<'a> {
    plan: &'a Plan,
    model: Arc<Model>,
    log: Arc<Log>,
    world: Shared,
    clock: Arc<SimClock>,
    kv: Arc<MemoryKv>,
    cfg: Config,
    out: Outcome,
    expect: Option<Expect>,
    aborted: bool,
}

pub fn run_plan(plan: &Plan, dir: &Path) -> Outcome {
    if plan.group.is_some() {
        return crate::group::run::run_group(plan, dir);
    }
    crash::install();
    clear(dir);
    let log = Arc::new(Log::from_plan(plan));
    let model = Arc::new(Model::new(plan, &log));
    let world = Arc::new(Mutex::new(World {
        log: log.clone(),
        log_start: vec![0; plan.partitions.len()],
        table: BTreeMap::new(),
        notes: Vec::new(),
    }));
    let mut sched = Sched {
        plan,
        model,
        log,
        world,
        clock: Arc::new(SimClock::new(plan.settings.wall_origin_ms)),
        kv: MemoryKv::new(),
        cfg: config(plan, dir),
        out: Outcome::default(),
        expect: None,
        aborted: false,
    };
    for phase in &plan.phases {
        sched.phase(phase);
        if sched.aborted {
            return sched.out;
        }
    }
    sched.final_run();
    sched.out
}

/// Whether `SIM_TRACE` is set: then each run's start and end are printed
/// on stderr (and `SIM_TRACE=log` also prints the job's own log).
pub fn tracing() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        let v = std::env::var("SIM_TRACE").unwrap_or_default();
        if v == "log" {
            streamforge::telemetry::init_logging(false);
        }
        !v.is_empty()
    })
}

macro_rules! trace {
    ($($arg:tt)*) => {
        if $crate::runner::tracing() {
            eprintln!($($arg)*);
        }
    };
}
pub(crate) use trace;

pub(crate) fn clear(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("the schedule's directory");
}

pub(crate) fn config(plan: &Plan, dir: &Path) -> Config {
    let s = &plan.settings;
    let ms = |v: u64| Dur(Duration::from_millis(v));
    let mut cfg = Config::default();
    cfg.checkpoint.state_dir = dir.join("state");
    cfg.anomaly_log = dir.join("anomalies.log");
    cfg.checkpoint.interval = ms(s.checkpoint_interval_ms);
    cfg.checkpoint.interval_events = s.interval_events;
    cfg.checkpoint.keep = s.keep;
    cfg.batch_size = s.batch_size;
    cfg.sink.retry_initial = ms(s.retry_initial_ms);
    cfg.sink.retry_max = ms(s.retry_max_ms);
    let w = &mut cfg.window;
    w.size = ms(s.size_ms as u64);
    w.slide = ms(s.slide_ms as u64);
    w.out_of_orderness = ms(s.bound_ms as u64);
    w.allowed_lateness = ms(s.lateness_ms as u64);
    w.idle_timeout = ms(s.idle_timeout_ms);
    w.alignment_drift = ms(s.drift_ms);
    cfg
}

impl Sched<'_> {
    fn store(&self) -> CheckpointStore {
        CheckpointStore::in_memory(self.kv.clone(), self.plan.settings.keep)
    }

    fn latest(&self) -> Option<Checkpoint> {
        self.store().load_latest().ok().and_then(|(cp, _)| cp)
    }

    fn diverge(&mut self, what: String) {
        self.out.divergences.push(what);
        self.aborted = true;
    }

    fn phase(&mut self, phase: &crate::plan::Phase) {
        self.clock.advance_to_ms(phase.start_ms);
        for k in 0.. {
            if self.aborted || k > phase.runs.len() + 6 {
                if !self.aborted {
                    self.diverge(format!("phase at {} ms never completed", phase.start_ms));
                }
                return;
            }
            let plan = phase.runs.get(k).cloned().unwrap_or_default();
            if let PhaseKind::Live { until_ms, .. } = phase.kind {
                if self.clock.now_ms() >= until_ms {
                    return;
                }
            }
            self.before(&plan.before, &phase.kind);
            if self.run(&phase.kind, &plan.faults) {
                return;
            }
        }
    }

    /// While the process is down: time passes, checkpoints are damaged,
    /// retention deletes old records. In a live phase the process is back
    /// with at least half of what is left of the phase ahead of it: a
    /// downtime past the phase's end would leave records that arrived
    /// during it for no run to read, which the model (rightly) counts, so
    /// such a world is not a schedule (found by seed 642252435).
    fn before(&mut self, before: &Before, kind: &PhaseKind) {
        let mut downtime = before.downtime_ms;
        if let PhaseKind::Live { until_ms, .. } = *kind {
            downtime = downtime.min(until_ms.saturating_sub(self.clock.now_ms()) / 2);
        }
        self.clock.advance(Duration::from_millis(downtime));
        for _ in 0..before.corrupt {
            self.corrupt();
        }
        if let Some(r) = &before.retention {
            if self.expect.is_none() {
                self.retention(r);
            }
        }
        let (latest, skipped) = self.store().load_latest().unwrap_or((None, Vec::new()));
        if latest.is_none() && !skipped.is_empty() {
            self.expect = Some(Expect::AllCorrupt);
        }
    }

    /// Damages the newest checkpoint, unless that would leave a state whose
    /// fresh start must skip records retention deleted (a documented loss,
    /// not something to simulate).
    fn corrupt(&mut self) {
        let store = self.store();
        let ids = store.ids().unwrap_or_default();
        let good = ids.iter().filter(|id| store.load(**id).is_ok()).count();
        let retained = lock(&self.world).log_start.iter().any(|s| *s > 0);
        if good == 0 || (good == 1 && retained) {
            return;
        }
        let salt = (self.plan.seed as usize).wrapping_add(self.out.runs as usize * 7919);
        self.kv.corrupt_last(salt);
    }

    /// Deletes old records of one partition: only what every checkpoint has
    /// read, or (planned) more, which the next run must refuse.
    fn retention(&mut self, r: &Retention) {
        let p = r.partition as usize;
        let now = self.clock.now_ms();
        if p >= self.log.partitions_at(now) {
            return;
        }
        let store = self.store();
        let mut covered = u64::MAX;
        for id in store.ids().unwrap_or_default() {
            match store.load(id) {
                Ok(cp) => covered = covered.min(cp.offsets.get(&(p as u32)).copied().unwrap_or(0)),
                Err(_) => return,
            }
        }
        let Some(latest) = self.latest() else { return };
        let high = self.log.high(p, now);
        let mut w = lock(&self.world);
        let old = w.log_start[p];
        if r.beyond == 0 {
            w.log_start[p] = old.max(covered.min(high));
            return;
        }
        let needed = latest.offsets.get(&(p as u32)).copied().unwrap_or(old);
        let to = (needed + r.beyond as u64).min(high);
        if to > needed && to > old {
            w.log_start[p] = to;
            self.expect = Some(Expect::Retention {
                partition: p,
                restore_to: old,
            });
        }
    }

    /// Whether a late record has arrived that the next run would read while
    /// its watermark may still be too low to call it late: those are read by
    /// bounded runs only (see `validate`). A restored watermark past its
    /// last window's end and lateness already decides it, in any run.
    fn late_unread(&self) -> bool {
        let s = &self.plan.settings;
        let now = self.clock.now_ms();
        let latest = self.latest();
        let watermark = latest.as_ref().map_or(i64::MIN, |cp| cp.engine.watermark);
        let offsets = latest.map(|cp| cp.offsets).unwrap_or_default();
        let w = lock(&self.world);
        (0..self.log.partitions_at(now)).any(|p| {
            let from = offsets.get(&(p as u32)).copied().unwrap_or(w.log_start[p]);
            let high = self.log.high(p, now);
            self.plan.partitions[p].entries[from as usize..high as usize]
                .iter()
                .any(|e| match &e.kind {
                    Kind::Event { ev, aborted: false } if ev.role.is_late_class() => {
                        let final_at =
                            ev.t_ms.div_euclid(s.slide_ms) * s.slide_ms + s.size_ms + s.lateness_ms;
                        watermark < final_at
                    }
                    _ => false,
                })
        })
    }
}

pub(crate) mod process;
