//! The simulated world the job runs against: the topic's log as it grows
//! with simulated time, the sink's table, and the clock. One `World` lives
//! through every run of a schedule; a crash drops the job and everything it
//! held, never the world.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use streamforge::clock::Clock;
use streamforge::window::WindowRow;

use crate::crash;
use crate::payload;
use crate::plan::{Kind, Plan};

/// The topic's log, every record's bytes written once from the plan.
pub struct Log {
    pub parts: Vec<PartLog>,
}

pub struct PartLog {
    pub created_ms: u64,
    /// Arrival (clock ms) per offset, never going down.
    pub at: Vec<u64>,
    /// The record timestamp (Kafka's `CreateTime`: the producer's clock,
    /// which is right) per offset.
    pub ts: Vec<i64>,
    pub payload: Vec<Vec<u8>>,
    /// The first readable offset at or after each offset (`len` if none):
    /// markers and aborted records are skipped as a `read_committed`
    /// consumer skips them.
    next_readable: Vec<u64>,
}

impl Log {
    pub fn from_plan(plan: &Plan) -> Log {
        let parts = plan
            .partitions
            .iter()
            .map(|part| {
                let n = part.entries.len();
                let mut next_readable = vec![n as u64; n + 1];
                for (o, e) in part.entries.iter().enumerate().rev() {
                    let readable =
                        !matches!(e.kind, Kind::Marker | Kind::Event { aborted: true, .. });
                    next_readable[o] = if readable {
                        o as u64
                    } else {
                        next_readable[o + 1]
                    };
                }
                PartLog {
                    created_ms: part.created_ms,
                    at: part.entries.iter().map(|e| e.at_ms).collect(),
                    ts: part
                        .entries
                        .iter()
                        .map(|e| plan.settings.wall_origin_ms + e.at_ms as i64)
                        .collect(),
                    payload: part
                        .entries
                        .iter()
                        .map(|e| match &e.kind {
                            Kind::Event { ev, .. } => payload::event(ev),
                            Kind::Raw { bytes, .. } => bytes.clone(),
                            Kind::Marker => Vec::new(),
                        })
                        .collect(),
                    next_readable,
                }
            })
            .collect();
        Log { parts }
    }

    pub fn payload(&self, p: usize, o: usize) -> &[u8] {
        &self.parts[p].payload[o]
    }

    /// Partitions that exist at clock `now_ms`.
    pub fn partitions_at(&self, now_ms: u64) -> usize {
        self.parts
            .iter()
            .take_while(|p| p.created_ms <= now_ms)
            .count()
    }

    /// The high watermark of `p` at `now_ms`: entries that have arrived.
    pub fn high(&self, p: usize, now_ms: u64) -> u64 {
        self.parts[p].at.partition_point(|a| *a <= now_ms) as u64
    }

    /// The first readable offset of `p` at or after `from` (the log's
    /// length when there is none).
    pub fn next_readable(&self, p: usize, from: u64) -> u64 {
        let nr = &self.parts[p].next_readable;
        nr[(from as usize).min(nr.len() - 1)]
    }

    /// The earliest arrival after `now_ms` among partitions `0..count`.
    pub fn next_arrival(&self, count: usize, now_ms: u64) -> Option<u64> {
        self.parts[..count]
            .iter()
            .filter_map(|p| p.at.get(p.at.partition_point(|a| *a <= now_ms)).copied())
            .min()
    }
}

/// What changes as runs go: the retention point of each partition, the
/// sink's table, and what the runs' own checks found.
pub struct World {
    pub log: Arc<Log>,
    pub log_start: Vec<u64>,
    pub table: BTreeMap<i64, WindowRow>,
    /// Divergences noticed while a run was going (liveness, versions).
    pub notes: Vec<String>,
}

pub type Shared = Arc<Mutex<World>>;

pub fn lock(world: &Shared) -> MutexGuard<'_, World> {
    world.lock().unwrap_or_else(|e| e.into_inner())
}

/// The clock of every run of a schedule: it moves only when the job sleeps
/// or the simulated source or sink let time pass. Every read is a step at
/// which the process may crash (`crash`).
pub struct SimClock {
    nanos: AtomicU64,
    wall_origin_ms: i64,
}

impl SimClock {
    pub fn new(wall_origin_ms: i64) -> Self {
        SimClock {
            nanos: AtomicU64::new(0),
            wall_origin_ms,
        }
    }

    pub fn now_ms(&self) -> u64 {
        self.nanos.load(Ordering::Relaxed) / 1_000_000
    }

    pub fn advance(&self, d: Duration) {
        self.nanos.fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
        crash::check_deadline(self.now_ms());
    }

    /// Moves to `ms` if that is ahead.
    pub fn advance_to_ms(&self, ms: u64) {
        let now = self.now_ms();
        if ms > now {
            self.advance(Duration::from_millis(ms - now));
        }
    }
}

impl Clock for SimClock {
    fn now(&self) -> Duration {
        crash::step("clock::now");
        Duration::from_nanos(self.nanos.load(Ordering::Relaxed))
    }

    fn wall_ms(&self) -> i64 {
        crash::step("clock::wall_ms");
        self.wall_origin_ms + self.now_ms() as i64
    }

    fn sleep(&self, d: Duration) {
        crash::step("clock::sleep");
        self.advance(d);
    }
}
