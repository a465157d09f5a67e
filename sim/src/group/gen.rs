//! A group schedule from a seed: the settings and data of an ordinary
//! schedule over one live phase (no bounded phase, so no late records:
//! those are read by bounded runs only, see `validate`), then per partition
//! its owners in turn among two or three instances.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::gen::data_end_ms;
use crate::gen_data;
use crate::gen_faults;
use crate::plan::{Faults, Phase, PhaseKind, Plan};
use crate::rng::Rng;

use super::{GroupPlan, Tenure};

/// Off: every seed is an ordinary schedule, as before group schedules
/// (`streamforge-sim --no-group`, to compare rates).
pub static NO_GROUP: AtomicBool = AtomicBool::new(false);

/// Whether the schedule of `seed` is a group schedule: one in five (the
/// seeds divisible by 5).
pub fn is_group_seed(seed: u64) -> bool {
    seed.is_multiple_of(5) && !NO_GROUP.load(Ordering::Relaxed)
}

pub fn generate(seed: u64) -> Plan {
    let mut rng = Rng::new(seed);
    let mut settings = crate::gen::settings(&mut rng.fork(1));
    // Partition jobs never discover partitions (the group assigns them);
    // a nonzero interval keeps the data generator's rules for partitions
    // created while a live run reads.
    if settings.discovery_ms == 0 {
        settings.discovery_ms = 1_000;
    }
    updates_after_firing(&mut rng.fork(7), &mut settings);
    let mut prng = rng.fork(5);
    let count = (*prng.pick(&[2u64, 2, 3, 3, 4]), *prng.pick(&[0u64, 0, 1]));
    let until_ms = rng.fork(2).range(60_000, 180_000);
    let phases = vec![Phase {
        start_ms: 0,
        kind: PhaseKind::Live {
            until_ms,
            liveness: false,
        },
        runs: Vec::new(),
    }];
    let partitions = gen_data::partitions(&mut rng.fork(3), &settings, &phases, count);
    let mut grng = rng.fork(6);
    let instances = grng.range(2, 3) as u8;
    let owners = partitions
        .iter()
        .map(|part| owners(&mut grng, &settings, instances, part.created_ms, until_ms))
        .collect();
    let last_owner = partitions
        .iter()
        .map(|_| grng.below(u64::from(instances)) as u8)
        .collect();
    let plan = Plan {
        seed,
        settings,
        partitions,
        phases,
        group: Some(GroupPlan {
            instances,
            owners,
            last_owner,
        }),
    };
    if let Err(e) = plan.validate() {
        panic!("seed {seed}: the generator made an invalid group plan: {e}");
    }
    plan
}

/// What zombie fencing protects against is a window's row changing after
/// it fired (an accepted record within the allowed lateness): a zombie's
/// row of it then differs from the newer one. Those come from records
/// behind a small jump ahead, so group schedules have allowed lateness and
/// most of the lag budget goes to small jumps.
fn updates_after_firing(rng: &mut Rng, s: &mut crate::plan::Settings) {
    if s.clock_poison {
        return;
    }
    s.lateness_ms = *rng.pick(&[10_000, 30_000, 60_000]);
    let budget = (s.lag_budget_ms() - s.disorder_ms).max(0);
    s.copy_delay_ms = rng.range(0, (budget / 4).min(10_000) as u64) as i64;
    s.small_jump_ms = budget - s.copy_delay_ms;
}

/// One partition's owners from its creation to `end_ms`: each loses it
/// cleanly, is killed (the next owner comes a session timeout later), or
/// goes on as a zombie; the next owner is another instance, or the same
/// one coming back (then after its zombie stopped).
fn owners(
    rng: &mut Rng,
    s: &crate::plan::Settings,
    instances: u8,
    created_ms: u64,
    end_ms: u64,
) -> Vec<Tenure> {
    let mut out: Vec<Tenure> = Vec::new();
    let mut t = created_ms + rng.range(0, 3_000);
    let mut stopped = vec![0u64; usize::from(instances)];
    let mut instance = rng.below(u64::from(instances)) as u8;
    while t + 2_000 < end_ms && out.len() < 6 {
        let until_ms = (t + rng.range(2_000, end_ms / 2)).min(end_ms);
        let mut tenure = Tenure {
            instance,
            from_ms: t,
            until_ms,
            killed: false,
            zombie_ms: 0,
            late_ms: 0,
            faults: Faults::default(),
        };
        if rng.chance(350) {
            tenure.faults = gen_faults::run(rng, s, 1).faults;
            // Timed faults only within the tenure; the source never fails
            // for good (the instance would leave the group).
            tenure.faults.discover_down = None;
        }
        let mut gap = 0;
        match rng.below(10) {
            0..=3 => {}
            4..=5 => {
                tenure.killed = true;
                gap = rng.range(0, 10_000);
            }
            _ => {
                tenure.zombie_ms = rng.range(500, 60_000);
                tenure.late_ms = *rng.pick(&[0, 0, 200, 3_000, 30_000, u64::MAX]);
                tenure.killed = rng.chance(300);
            }
        }
        stopped[usize::from(instance)] = tenure.stop_ms();
        t = until_ms + gap;
        out.push(tenure);
        // The next owner: an instance not still running a job of it.
        t = t.max(stopped.iter().copied().min().unwrap_or(0));
        let free: Vec<u8> = (0..instances)
            .filter(|i| stopped[usize::from(*i)] <= t)
            .collect();
        instance = *rng.pick(&free);
    }
    out
}

/// The last time any job of the plan reads (zombies included).
pub fn last_stop_ms(plan: &Plan) -> u64 {
    let ends = plan.group.iter().flat_map(|g| g.owners.iter().flatten());
    ends.map(Tenure::stop_ms)
        .max()
        .unwrap_or(0)
        .max(data_end_ms(&plan.phases))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_plans_are_valid_and_the_same_for_the_same_seed() {
        for seed in (0..600).filter(|s| is_group_seed(*s)) {
            let plan = generate(seed);
            assert_eq!(plan, generate(seed));
            plan.validate().unwrap();
            let g = plan.group.as_ref().unwrap();
            assert!(g.owners.iter().any(|o| !o.is_empty()));
        }
    }
}
