//! Shrinking a diverging schedule: greedily drop faults, phases,
//! partitions and records while the plan stays valid and still diverges the
//! same way, so that what is left is the story of the bug.

use std::time::{Duration, Instant};

use crate::group::Tenure;
use crate::plan::{Faults, Plan, RunPlan};

/// The first words of a divergence, which say which invariant broke.
pub fn kind(divergence: &str) -> String {
    divergence
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Every plan one step smaller than `plan`, roughly biggest cuts first.
fn candidates(plan: &Plan) -> Vec<Plan> {
    let mut out = Vec::new();
    for i in 0..plan.phases.len() {
        let mut c = plan.clone();
        c.phases.remove(i);
        out.push(c);
    }
    for (i, ph) in plan.phases.iter().enumerate() {
        for j in 0..ph.runs.len() {
            let mut c = plan.clone();
            c.phases[i].runs.remove(j);
            out.push(c);
            for simpler in simpler_runs(&ph.runs[j]) {
                let mut c = plan.clone();
                c.phases[i].runs[j] = simpler;
                out.push(c);
            }
        }
    }
    for p in (0..plan.partitions.len()).rev() {
        let mut c = plan.clone();
        c.partitions.remove(p);
        if let Some(g) = &mut c.group {
            g.owners.remove(p);
            g.last_owner.remove(p);
        }
        out.push(c);
    }
    out.extend(simpler_owners(plan));
    for (p, part) in plan.partitions.iter().enumerate() {
        let n = part.entries.len();
        let mut chunk = n.next_power_of_two() / 2;
        while chunk >= 1 {
            for from in (0..n).step_by(chunk) {
                let mut c = plan.clone();
                c.partitions[p].entries.drain(from..(from + chunk).min(n));
                out.push(c);
            }
            chunk /= 2;
        }
    }
    out
}

/// A group plan with one owner fewer, or one owner simpler (no faults, not
/// killed, no zombie, writes arriving at once), each way.
fn simpler_owners(plan: &Plan) -> Vec<Plan> {
    let mut out = Vec::new();
    let Some(g) = &plan.group else {
        return out;
    };
    for (p, tenures) in g.owners.iter().enumerate() {
        for (k, t) in tenures.iter().enumerate() {
            let mut c = plan.clone();
            c.group.as_mut().expect("a group plan").owners[p].remove(k);
            out.push(c);
            let simpler: [&dyn Fn(&mut Tenure); 4] = [
                &|t| t.faults = Faults::default(),
                &|t| t.killed = false,
                &|t| t.zombie_ms = 0,
                &|t| t.late_ms = 0,
            ];
            for f in simpler {
                let mut s = t.clone();
                f(&mut s);
                if s != *t {
                    let mut c = plan.clone();
                    c.group.as_mut().expect("a group plan").owners[p][k] = s;
                    out.push(c);
                }
            }
        }
    }
    out
}

/// One run plan with one of its faults removed, each way.
fn simpler_runs(r: &RunPlan) -> Vec<RunPlan> {
    let f = &r.faults;
    let with = |g: &dyn Fn(&mut Faults)| {
        let mut c = r.clone();
        g(&mut c.faults);
        c
    };
    let mut out = vec![
        with(&|f| f.crash_step = None),
        with(&|f| f.crash_point = None),
        with(&|f| f.sink = None),
        with(&|f| f.sink_fatal_write = None),
        with(&|f| f.source_down = None),
        with(&|f| f.discover_down = None),
        with(&|f| f.stall = None),
        with(&|f| f.source_fatal_poll = None),
    ];
    let mut b = r.clone();
    b.before = Default::default();
    out.push(b);
    out.retain(|c| c != r);
    let _ = f;
    out
}

/// The smallest plan found (within `budget` of time) that still diverges
/// with a divergence of kind `want`; `diverges` runs a plan.
pub fn shrink(
    plan: &Plan,
    want: &str,
    budget: Duration,
    diverges: impl Fn(&Plan) -> Vec<String>,
) -> (Plan, Vec<String>, u32) {
    let started = Instant::now();
    let mut best = plan.clone();
    let mut found = diverges(&best);
    let mut tries = 0;
    'outer: loop {
        for c in candidates(&best) {
            if started.elapsed() > budget {
                break 'outer;
            }
            if c.validate().is_err() {
                continue;
            }
            tries += 1;
            let d = diverges(&c);
            if d.iter().any(|x| kind(x) == want) {
                best = c;
                found = d;
                continue 'outer;
            }
        }
        break;
    }
    (best, found, tries)
}

/// A one-line description of a plan's size.
pub fn size(plan: &Plan) -> String {
    let records: usize = plan.partitions.iter().map(|p| p.entries.len()).sum();
    let runs: usize = plan.phases.iter().map(|p| p.runs.len()).sum();
    if let Some(g) = &plan.group {
        let owners: usize = g.owners.iter().map(Vec::len).sum();
        return format!(
            "group mode, {} instances, {} partitions, {} records, {} owners in turn",
            g.instances,
            plan.partitions.len(),
            records,
            owners
        );
    }
    format!(
        "{} partitions, {} records, {} phases, {} faulty runs",
        plan.partitions.len(),
        records,
        plan.phases.len(),
        runs
    )
}
