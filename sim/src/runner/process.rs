//! One simulated process: the job from start to its end (completed, failed,
//! crashed), then what its end means for the schedule. And the last,
//! clean, bounded process after which the invariants are checked.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use streamforge::checkpoint::kv::MemoryKv;
use streamforge::job::{run_in, Environment, JobOptions};
use streamforge::telemetry::Metrics;

use super::{Ended, Expect, Sched};
use crate::checks;
use crate::crash::{self, Armed};
use crate::gen::data_end_ms;
use crate::plan::{Faults, PhaseKind};
use crate::sink::SimSink;
use crate::source::{AtEnd, SimSource, SourceSetup, RETENTION_ERROR};
use crate::world::lock;

/// Steps after which a run counts as hung even if its clock stands still.
pub(crate) const STEP_LIMIT: u64 = 5_000_000;

impl Sched<'_> {
    /// One process of a phase. Returns whether the phase is done.
    pub(super) fn run(&mut self, kind: &PhaseKind, faults: &Faults) -> bool {
        let forced = self.late_unread();
        let (until, liveness) = match *kind {
            PhaseKind::Live { until_ms, liveness } if !forced => (Some(until_ms), liveness),
            _ => (None, false),
        };
        let ended = self.process(until, liveness, faults);
        let live_done = until.is_some();
        self.settle(ended, faults, until.is_none()) && (live_done || *kind == PhaseKind::Bounded)
    }

    /// The liveness check at the end of a live run, if this run qualifies:
    /// it has run, free of timed faults, for the whole quiet period.
    fn at_end(&self, until: u64, liveness: bool, faults: &Faults) -> Option<AtEnd> {
        let s = self.plan.settings.clone();
        let quiet_from = until.checked_sub(s.quiet_ms(self.plan.partitions.len()))?;
        let start = self.clock.now_ms();
        let clean = faults.sink_fatal_write.is_none() && faults.source_fatal_poll.is_none();
        if !liveness || !clean || start + faults.last_active_ms() > quiet_from {
            return None;
        }
        let (model, log, world, clock) = (
            self.model.clone(),
            self.log.clone(),
            self.world.clone(),
            self.clock.clone(),
        );
        Some(Box::new(move || {
            let table = lock(&world).table.clone();
            if let Some(d) = checks::liveness(&s, &model, &log, &table, clock.now_ms()) {
                crash::note(d);
            }
        }))
    }

    fn process(&mut self, until: Option<u64>, liveness: bool, faults: &Faults) -> Ended {
        self.out.runs += 1;
        let now = self.clock.now_ms();
        let stop = Arc::new(AtomicBool::new(false));
        let source = SimSource::new(SourceSetup {
            world: self.world.clone(),
            clock: self.clock.clone(),
            stop: stop.clone(),
            until_ms: until,
            at_end: until.and_then(|u| self.at_end(u, liveness, faults)),
            discovery_ms: self.plan.settings.discovery_ms,
            faults: faults.clone(),
            seed: self.plan.seed ^ (u64::from(self.out.runs) << 32),
        });
        let sink = SimSink::new(self.world.clone(), self.clock.clone(), faults.clone());
        let env = Environment {
            clock: self.clock.clone(),
            inline: true,
            store: Some(self.kv.clone()),
            fingerprint_seed: Some(self.plan.seed),
        };
        let opts = JobOptions {
            bounded: until.is_none(),
            stop,
            progress: false,
            shutdown_grace: Duration::from_secs(5),
        };
        crash::arm(Armed {
            crash_step: faults.crash_step,
            crash_point: faults.crash_point.clone(),
            deadline_ms: until.unwrap_or(now) + 3 * 3_600_000,
            crash_at_ms: None,
            step_limit: STEP_LIMIT,
            kv: self.kv.clone(),
            keep: self.plan.settings.keep,
        });
        let cfg = &self.cfg;
        let result = catch_unwind(AssertUnwindSafe(|| {
            run_in(
                cfg,
                Box::new(source),
                Box::new(sink),
                &opts,
                Arc::new(Metrics::new()),
                env,
            )
        }));
        let seen = crash::disarm();
        self.out.steps += seen.steps;
        super::trace!(
            "run {} ({}) from clock {now} to {} ms, {} steps: {}",
            self.out.runs,
            if until.is_some() { "live" } else { "bounded" },
            self.clock.now_ms(),
            seen.steps,
            match &result {
                Ok(Ok(_)) => "completed".to_string(),
                Ok(Err(e)) => format!("failed: {e:#}"),
                Err(_) => "crashed or hung".to_string(),
            }
        );
        for note in seen.notes {
            self.out.divergences.push(note);
        }
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

    /// What a run's end means. Returns whether the run completed.
    fn settle(&mut self, ended: Ended, faults: &Faults, bounded: bool) -> bool {
        match ended {
            Ended::Completed(report) => {
                if let Some(e) = self.expect.take() {
                    self.diverge(format!(
                        "the run completed although it should have failed: {e:?}"
                    ));
                    return false;
                }
                if bounded && !report.finished_input {
                    self.diverge("a bounded run returned before the end of its input".into());
                }
                let drained =
                    bounded || (faults.sink.is_none() && faults.sink_fatal_write.is_none());
                let pending = self.latest().map_or(0, |cp| cp.pending.len());
                if drained && pending > 0 {
                    self.diverge(format!(
                        "{pending} pending batches left after a run that drained"
                    ));
                }
                true
            }
            Ended::Failed(msg) => {
                self.failed(msg, faults);
                false
            }
            Ended::Crashed(at) => {
                crate::runner::trace!("  crashed at {at}");
                self.out.crashes += 1;
                self.after_crash(faults);
                false
            }
            Ended::Hung(why) => {
                self.diverge(format!("the job did not finish: {why}"));
                false
            }
            Ended::Panicked(msg) => {
                self.diverge(format!("the job panicked: {msg}"));
                false
            }
        }
    }

    fn failed(&mut self, msg: String, faults: &Faults) {
        match self.expect.clone() {
            Some(Expect::Retention {
                partition,
                restore_to,
            }) if msg.contains(RETENTION_ERROR) => {
                lock(&self.world).log_start[partition] = restore_to;
                self.expect = None;
            }
            Some(Expect::AllCorrupt) if msg.contains("every checkpoint in") => {
                // The operator moves the state aside and starts again.
                self.kv = MemoryKv::new();
                self.expect = None;
            }
            _ if faults.sink_fatal_write.is_some() && msg.contains("rejected a write for good") => {
            }
            _ if faults.source_fatal_poll.is_some() && msg.contains("refused the consumer") => {}
            _ => self.diverge(format!(
                "the job failed: {msg} (expected: {:?})",
                self.expect
            )),
        }
    }

    /// What a crash may lose: checkpoint writes not flushed, and the end of
    /// the anomaly log after the newest checkpoint's length.
    fn after_crash(&mut self, faults: &Faults) {
        self.kv.crash(faults.unflushed_survives);
        let path = &self.cfg.anomaly_log;
        let Ok(meta) = std::fs::metadata(path) else {
            return;
        };
        let kept = self
            .latest()
            .map_or(0, |cp| cp.anomaly_log_len)
            .min(meta.len());
        let cut = kept + (meta.len() - kept) * u64::from(faults.log_cut_permille) / 1000;
        if let Ok(f) = std::fs::OpenOptions::new().write(true).open(path) {
            let _ = f.set_len(cut);
        }
    }

    /// The last run: clean and bounded, to the end of everything, then the
    /// invariants.
    pub(super) fn final_run(&mut self) {
        let last_arrival = self
            .log
            .parts
            .iter()
            .flat_map(|p| p.at.last().copied().into_iter().chain([p.created_ms]))
            .max();
        self.clock
            .advance_to_ms(data_end_ms(&self.plan.phases).max(last_arrival.unwrap_or(0)) + 1);
        for _ in 0..3 {
            let starts = self.starts();
            match self.process(None, false, &Faults::default()) {
                Ended::Completed(report) => {
                    if let Some(e) = self.expect.take() {
                        return self.diverge(format!(
                            "the final run completed although it should have failed: {e:?}"
                        ));
                    }
                    return self.check_final(&starts, &report);
                }
                Ended::Failed(msg) if self.expect.is_some() => self.failed(msg, &Faults::default()),
                other => {
                    self.settle(other, &Faults::default(), true);
                    return;
                }
            }
        }
        self.diverge("the final run never completed".into());
    }

    /// Where the next run starts reading each partition.
    fn starts(&self) -> Vec<u64> {
        let offsets = self.latest().map(|cp| cp.offsets).unwrap_or_default();
        let w = lock(&self.world);
        (0..self.log.parts.len())
            .map(|p| offsets.get(&(p as u32)).copied().unwrap_or(w.log_start[p]))
            .collect()
    }

    fn check_final(&mut self, starts: &[u64], report: &streamforge::job::JobReport) {
        let table = lock(&self.world).table.clone();
        let mut found = Vec::new();
        found.extend(checks::final_rows(&self.model, &table));
        found.extend(checks::anomaly_log(&self.model, &self.cfg.anomaly_log));
        match self.latest() {
            Some(cp) => {
                found.extend(checks::final_offsets(&self.model, &cp, starts));
                if !cp.pending.is_empty() {
                    found.push(format!(
                        "{} pending batches after the final run",
                        cp.pending.len()
                    ));
                }
            }
            None => found.push("no checkpoint after the final run".into()),
        }
        found.extend(checks::final_counts(&self.model, starts, &report.counters));
        if !report.finished_input {
            found.push("the final run did not finish its input".into());
        }
        self.out.divergences.extend(found);
        self.out.final_table = Some(table);
    }
}
