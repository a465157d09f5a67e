//! The faults of a schedule: per phase, the first few runs each get a plan
//! of what goes wrong (a crash at some step or crash point, the sink or the
//! source misbehaving, a stall), and what happens while the process is down
//! before it (downtime, damaged checkpoints, retention). Runs after those
//! are clean, so every phase ends.

use crate::plan::{Before, Faults, Phase, Retention, RunPlan, Settings, SinkFault, SinkMode};
use crate::rng::Rng;

/// The crash points of the checkpoint protocol and of recovery.
pub const CRASH_POINTS: [&str; 7] = [
    "job::barrier::after_anomaly_sync",
    "checkpoint::commit::before_write",
    "checkpoint::commit::before_flush",
    "checkpoint::commit::after_flush",
    "job::barrier::after_commit",
    "job::barrier::after_submit",
    "job::recovery::after_resend",
];

pub fn runs(rng: &mut Rng, s: &Settings, phases: &mut [Phase], partitions: usize) {
    let calm = rng.chance(150);
    for ph in phases.iter_mut() {
        let count = if calm { 0 } else { rng.range(0, 3) };
        ph.runs = (0..count).map(|_| run(rng, s, partitions)).collect();
    }
}

fn window(rng: &mut Rng, max_start: u64, max_len: u64) -> (u64, u64) {
    let from = rng.range(0, max_start);
    (from, from + rng.range(500, max_len))
}

pub(crate) fn run(rng: &mut Rng, s: &Settings, partitions: usize) -> RunPlan {
    let before = Before {
        downtime_ms: if rng.chance(500) {
            rng.range(0, 60_000)
        } else {
            0
        },
        corrupt: if rng.chance(120) {
            rng.range(1, 2) as u8
        } else {
            0
        },
        retention: rng.chance(120).then(|| Retention {
            partition: rng.below(partitions as u64) as u32,
            beyond: if rng.chance(400) {
                rng.range(1, 6) as u32
            } else {
                0
            },
        }),
    };
    let mut f = Faults {
        unflushed_survives: rng.chance(500),
        log_cut_permille: rng.range(0, 1000) as u16,
        ..Faults::default()
    };
    if rng.chance(550) {
        // Log-uniform: early steps (start-up, recovery) as often as late ones.
        let exp = rng.range(0, 13);
        f.crash_step = Some(rng.range(1 << exp, 2 << exp));
    }
    if rng.chance(200) {
        let point = *rng.pick(&CRASH_POINTS);
        f.crash_point = Some((point.to_string(), rng.range(1, 4) as u32));
    }
    if rng.chance(300) {
        let (from_ms, to_ms) = window(rng, 30_000, 60_000);
        let slow = rng.range(100, 20_000);
        let mode = *rng.pick(&[
            SinkMode::Fail,
            SinkMode::TimeoutAfterApply,
            SinkMode::Half,
            SinkMode::Slow(slow),
        ]);
        f.sink = Some(SinkFault {
            from_ms,
            to_ms,
            mode,
        });
    }
    if rng.chance(50) {
        f.sink_fatal_write = Some(rng.range(1, 12) as u32);
    }
    if rng.chance(250) {
        f.source_down = Some(window(rng, 120_000, 120_000));
    }
    if rng.chance(100) && s.discovery_ms > 0 {
        f.discover_down = Some(window(rng, 40_000, 60_000));
    }
    if rng.chance(300) {
        // A pause of the process (GC, a VM stopped): records of every
        // partition pile up, and the next polls drain them.
        f.stall = Some((rng.range(0, 200_000), rng.range(5_000, 150_000)));
    }
    if rng.chance(30) {
        f.source_fatal_poll = Some(rng.range(1, 300) as u32);
    }
    RunPlan { before, faults: f }
}
