//! The rules a plan keeps so that each record's fate follows from the input
//! alone, whatever the interleaving of partitions, the batching, idleness,
//! crashes and restarts (SPEC §4's determinism). docs/development.md
//! ("What the world may do") explains each; `model` relies on them.
//!
//! In short: live data is stamped at or shortly before its arrival; no
//! record leads its arrival by more than a budget, and no accepted record
//! lags by more than the rest of it, so no watermark can make it late
//! (`max_time_jump` is exactly that budget); the only late records are far
//! older than anything the job must have seen, and are read by bounded runs;
//! a wrong clock's verdict is decided by the records of its own step.

use std::collections::HashMap;
use streamforge::job::JUMP_LEAD;

use crate::plan::{Ev, Kind, PartitionPlan, Phase, PhaseKind, Plan, Role, Settings};

/// The latest epoch ms an event time may have (2099-12-31T23:59:59.999Z).
pub const MAX_EVENT_MS: i64 = 4_102_444_799_999;

impl Settings {
    /// How long before the end of a live phase with a liveness check nothing
    /// may arrive (with `partitions` partitions). Settling takes steps, each
    /// at most an idle timeout and a discovery interval: a partition
    /// created just before is found; a partition goes idle, which releases
    /// records that watermark alignment held in another, whose idle timer
    /// then starts; a record waiting for confirmation is confirmed once the
    /// watermark reaches it, and the watermark passes what the last
    /// discovery's start knew only at the next one. At most two steps per
    /// partition; then the rows need a checkpoint and a write.
    pub fn quiet_ms(&self, partitions: usize) -> u64 {
        let step = self.idle_timeout_ms + self.discovery_ms + 1_000;
        2 * partitions as u64 * step + 2 * self.checkpoint_interval_ms + 5_000
    }
}

/// A delivered event with where it is.
struct At<'a> {
    offset: usize,
    at_ms: u64,
    ev: &'a Ev,
}

impl Plan {
    pub fn validate(&self) -> Result<(), String> {
        self.validate_settings()?;
        self.validate_phases()?;
        if self.partitions.first().is_none_or(|p| p.created_ms != 0) {
            // A Kafka topic has at least one partition from its creation.
            return Err("no partition at the start".into());
        }
        let mut owner: HashMap<&str, usize> = HashMap::new();
        let mut created = 0;
        for (p, part) in self.partitions.iter().enumerate() {
            if part.created_ms < created {
                return Err(format!("p{p} created before p{}", p - 1));
            }
            created = part.created_ms;
            let unseen = crate::gen_data::live_windows(&self.phases)
                .any(|(from, to)| (from..=to).contains(&part.created_ms));
            if self.settings.discovery_ms == 0 && p > 0 && part.created_ms > 0 && unseen {
                return Err(format!(
                    "p{p} created while a live run reads, without discovery"
                ));
            }
            let mut last = part.created_ms;
            for (o, e) in part.entries.iter().enumerate() {
                if e.at_ms < last {
                    return Err(format!("p{p}@{o}: arrival goes back"));
                }
                last = e.at_ms;
                if let Kind::Event { ev, .. } = &e.kind {
                    if *owner.entry(ev.id.as_str()).or_insert(p) != p {
                        return Err(format!("p{p}@{o}: id {} used in two partitions", ev.id));
                    }
                }
            }
            let events: Vec<At> = part
                .entries
                .iter()
                .enumerate()
                .filter_map(|(offset, e)| match &e.kind {
                    Kind::Event { ev, aborted: false } => Some(At {
                        offset,
                        at_ms: e.at_ms,
                        ev,
                    }),
                    _ => None,
                })
                .collect();
            for i in 0..events.len() {
                self.validate_event(p, &events, i)
                    .map_err(|e| format!("p{p}@{}: {e}", events[i].offset))?;
            }
        }
        self.validate_group()
    }

    fn validate_settings(&self) -> Result<(), String> {
        let s = &self.settings;
        if s.size_ms % s.slide_ms != 0 || s.slide_ms % 1000 != 0 || s.bound_ms <= 0 {
            return Err("window settings".into());
        }
        if s.disorder_ms >= s.bound_ms {
            return Err("disorder must stay below the watermark bound".into());
        }
        let budget = s.disorder_ms + s.copy_delay_ms + s.small_jump_ms;
        if budget > s.lag_budget_ms() {
            return Err(format!(
                "lag and lead budget {budget} ms over bound + lateness"
            ));
        }
        if s.clock_poison && s.size_ms != s.slide_ms {
            return Err("clock_poison needs tumbling windows (see gen::settings)".into());
        }
        if s.clock_poison && (s.copy_delay_ms != 0 || s.small_jump_ms != 0) {
            return Err("clock_poison leaves no budget for copy delays or small jumps".into());
        }
        Ok(())
    }

    fn validate_phases(&self) -> Result<(), String> {
        let mut end = 0;
        for (i, ph) in self.phases.iter().enumerate() {
            if ph.start_ms < end {
                return Err(format!("phase {i} starts before the previous one ends"));
            }
            end = ph.start_ms + 1;
            if let PhaseKind::Live { until_ms, liveness } = ph.kind {
                if until_ms <= ph.start_ms {
                    return Err(format!("phase {i} is empty"));
                }
                end = until_ms + 1;
                if liveness
                    && !self.quiet(
                        until_ms - self.settings.quiet_ms(self.partitions.len()),
                        until_ms,
                    )
                {
                    return Err(format!("phase {i}: something arrives in its quiet period"));
                }
            }
        }
        Ok(())
    }

    /// Nothing arrives and no partition is created in `[from, to]`.
    fn quiet(&self, from: u64, to: u64) -> bool {
        self.partitions.iter().all(|part| {
            !(from..=to).contains(&part.created_ms)
                && part.entries.iter().all(|e| !(from..=to).contains(&e.at_ms))
        })
    }

    /// Whether a bounded phase starts right after `at_ms`: late records
    /// arrive then, and only a bounded run reads them (see `runner`).
    fn feeds_a_bounded_phase(&self, at_ms: u64) -> bool {
        self.phases
            .iter()
            .any(|ph: &Phase| ph.kind == PhaseKind::Bounded && ph.start_ms == at_ms + 1)
    }

    fn validate_event(&self, p: usize, events: &[At], i: usize) -> Result<(), String> {
        let s = &self.settings;
        let At { at_ms, ev, .. } = events[i];
        let arrival = s.wall_origin_ms + at_ms as i64;
        let (lag, lead) = (arrival - ev.t_ms, ev.t_ms - arrival);
        let next_valid: Vec<&At> = events[i + 1..]
            .iter()
            .filter(|e| e.ev.role.is_valid())
            .collect();
        let earlier_same =
            |f: &dyn Fn(&Ev) -> bool| events[..i].iter().any(|e| e.ev.id == ev.id && f(e.ev));
        match ev.role {
            Role::Regular | Role::Resend if !(0..=s.disorder_ms).contains(&lag) => {
                Err(format!("lag {lag} ms out of the disorder budget"))
            }
            Role::Buffered => self.validate_buffered(events, i),
            Role::Copy if !(0..=s.disorder_ms + s.copy_delay_ms).contains(&lag) => {
                Err(format!("copy lag {lag} ms out of budget"))
            }
            Role::Copy if !earlier_same(&|o| o.t_ms == ev.t_ms && o.style == ev.style) => {
                Err("a copy of nothing".into())
            }
            Role::Resend if !earlier_same(&|o| o.t_ms != ev.t_ms) => {
                Err("a resend of nothing".into())
            }
            Role::SmallJump if !(1..=s.small_jump_ms).contains(&lead) => {
                Err(format!("small jump {lead} ms out of budget"))
            }
            Role::MinutesAhead | Role::MinutesAheadLast
                if lead < s.max_jump_ms() + 120_000 || lead > 55 * 60_000 =>
            {
                Err(format!("minutes-ahead lead {lead} ms"))
            }
            Role::MinutesAhead => {
                let decided = next_valid.len() >= 2
                    && next_valid[..2].iter().all(|f| {
                        f.at_ms == at_ms
                            && f.ev.role.is_regular_class()
                            && f.ev.t_ms < ev.t_ms - s.max_jump_ms() - 10_000
                    });
                if decided {
                    Ok(())
                } else {
                    Err("a wrong clock not contradicted by the next two records of its step".into())
                }
            }
            Role::MinutesAheadLast if !s.clock_poison || !next_valid.is_empty() => {
                Err("a last wrong clock with records after it, or without clock_poison".into())
            }
            Role::FarFuture if lead <= 3_660_000 || ev.t_ms > MAX_EVENT_MS => {
                Err(format!("far-future lead {lead} ms"))
            }
            Role::OutOfRange if !(0..s.first_storable_ms()).contains(&ev.t_ms) => {
                Err("out-of-range time is storable".into())
            }
            Role::VeryLate | Role::LateCopy => self.validate_late(p, events, i, &next_valid),
            _ => Ok(()),
        }
    }

    /// A held-back event arrives with every partition's held events and
    /// nothing else newer: no partition received anything between its time
    /// and its arrival (all producers were cut off), so every partition with
    /// data wakes at once and none has moved the watermark past it. In its
    /// own partition it is in order.
    fn validate_buffered(&self, events: &[At], i: usize) -> Result<(), String> {
        let s = &self.settings;
        let At { at_ms, ev, .. } = events[i];
        let since = (ev.t_ms - s.wall_origin_ms).max(0) as u64;
        let quiet = self.partitions.iter().all(|part| {
            (part.created_ms <= since || part.created_ms >= at_ms)
                && part
                    .entries
                    .iter()
                    .all(|e| e.at_ms <= since || e.at_ms >= at_ms)
        });
        let clock = events[..i]
            .iter()
            .filter(|e| e.ev.role.is_regular_class())
            .map(|e| e.ev.t_ms)
            .max()
            .unwrap_or(i64::MIN);
        let slack = s.disorder_ms + s.small_jump_ms;
        if !quiet {
            Err("a held-back event while some partition received newer data".into())
        } else if ev.t_ms < clock.saturating_sub(slack) || ev.t_ms > s.wall_origin_ms + at_ms as i64
        {
            Err("a held-back event out of order".into())
        } else {
            Ok(())
        }
    }

    /// A late record is read by a bounded run, after a regular record of its
    /// partition, and followed in its step by a regular one (so that a wrong
    /// clock's or a gap's confirmation never rests on it).
    fn validate_late(&self, p: usize, events: &[At], i: usize, next: &[&At]) -> Result<(), String> {
        let s = &self.settings;
        let At { at_ms, ev, .. } = events[i];
        if !self.feeds_a_bounded_phase(at_ms) {
            return Err("a late record not right before a bounded phase".into());
        }
        let before = events[..i].iter().any(|e| e.ev.role.is_regular_class());
        let after = next
            .first()
            .is_some_and(|f| f.at_ms == at_ms && f.ev.role.is_regular_class());
        if !before || !after {
            return Err("a late record not between two regular ones".into());
        }
        if ev.role == Role::VeryLate {
            return if ev.t_ms <= s.wall_origin_ms - s.very_late_ms()
                && ev.t_ms >= s.first_storable_ms()
            {
                Ok(())
            } else {
                Err("a very late record not old enough".into())
            };
        }
        let copies = |o: &&At| {
            o.ev.id == ev.id
                && o.ev.role.is_regular_class()
                && o.ev.t_ms == ev.t_ms
                && o.ev.style == ev.style
        };
        if !events[..i].iter().any(|o| copies(&o)) {
            return Err("a late copy of nothing".into());
        }
        if left_behind(s, &self.partitions, p, at_ms, ev.t_ms + s.late_copy_ms()) {
            Ok(())
        } else {
            Err("a late copy of an event some partition has not left behind".into())
        }
    }
}

/// Whether, before `at_ms`, every partition holding data has its last
/// `JUMP_LEAD + 1` regular records at or after `t_ms` with no late record
/// among them, and every wrong clock that may wait for confirmation caps
/// the watermark above it, `p` included. Then any watermark a bounded run
/// can hold at `at_ms` has passed `t_ms - late_copy_ms`: a partition's clock
/// is at least the oldest of those records, since a jump among them waits
/// only until the records after it that agree (regular ones do) outnumber
/// those that do not by `JUMP_LEAD`.
pub fn left_behind(
    s: &Settings,
    partitions: &[PartitionPlan],
    p: usize,
    at_ms: u64,
    t_ms: i64,
) -> bool {
    let mut has_own = false;
    for (q, part) in partitions.iter().enumerate() {
        if part.created_ms > at_ms {
            continue;
        }
        // Regular records' times, and how many of them precede the last
        // late record.
        let (mut regular, mut before_late) = (Vec::new(), 0);
        for e in part.entries.iter().take_while(|e| e.at_ms < at_ms) {
            let Kind::Event { ev, aborted: false } = &e.kind else {
                continue;
            };
            if matches!(ev.role, Role::MinutesAhead | Role::MinutesAheadLast)
                && ev.t_ms - s.max_jump_ms() < t_ms
            {
                return false;
            }
            if ev.role.is_regular_class() {
                regular.push(ev.t_ms);
            } else if ev.role.is_late_class() {
                before_late = regular.len();
            }
        }
        if regular.is_empty() {
            continue;
        }
        let Some(first) = regular.len().checked_sub(JUMP_LEAD as usize + 1) else {
            return false;
        };
        if first < before_late || regular[first..].iter().any(|t| *t < t_ms) {
            return false;
        }
        has_own |= q == p;
    }
    has_own
}
