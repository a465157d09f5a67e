//! The simulated Kafka topic, as one consumer process sees it.
//!
//! It behaves as `streamforge::source::kafka` does against a broker, with
//! `isolation_level: read_committed`: partitions are numbered from 0; records
//! become readable when the simulated clock reaches their arrival; commit
//! and abort markers and aborted records occupy offsets but are never
//! delivered; a partition is caught up when nothing readable is left, also
//! when its log ends in markers; a bounded run ends where `open` fixed it; a
//! checkpoint offset below the retention point is refused; partitions
//! created while a live run reads are found by `discover`. A poll hands out
//! a contiguous chunk of one partition at a time, in an order drawn from the
//! run's seed, as librdkafka hands out per-partition message sets.
//!
//! Time passes here: an empty poll lets up to 100 ms pass (less when a
//! record arrives sooner), a poll that delivers takes 1 ms, a planned stall
//! lets many seconds pass at once. A live run is told to stop when the clock
//! reaches its end, after the liveness check (`checks`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use streamforge::source::{End, PartitionState, RecordBatch, Source, SourceError};

use crate::crash::step;
use crate::plan::Faults;
use crate::rng::Rng;
use crate::world::{lock, Shared, SimClock};

/// What the source does at the end of a live run, before it asks the job
/// to stop: the liveness check.
pub type AtEnd = Box<dyn FnMut() + Send>;

pub struct SimSource {
    world: Shared,
    clock: Arc<SimClock>,
    stop: Arc<AtomicBool>,
    /// Live: the clock ms at which the run is told to stop.
    until_ms: Option<u64>,
    at_end: Option<AtEnd>,
    bounded: bool,
    parts: Vec<Part>,
    discovery: Option<Duration>,
    faults: Faults,
    started_ms: u64,
    polls: u32,
    stalled: bool,
    rng: Rng,
}

#[derive(Debug, Clone)]
struct Part {
    /// The offset after the last one delivered (or the start): markers and
    /// aborted records after it are skipped when looking for the next.
    next: u64,
    end: Option<u64>,
    log_start: u64,
    paused: bool,
}

pub struct SourceSetup {
    pub world: Shared,
    pub clock: Arc<SimClock>,
    pub stop: Arc<AtomicBool>,
    pub until_ms: Option<u64>,
    pub at_end: Option<AtEnd>,
    pub discovery_ms: u64,
    pub faults: Faults,
    pub seed: u64,
}

/// The error text a lost offset gets, as the Kafka source words it.
pub const RETENTION_ERROR: &str = "Retention deleted records the checkpoint still needs";

impl SimSource {
    pub fn new(setup: SourceSetup) -> Self {
        let started_ms = setup.clock.now_ms();
        SimSource {
            world: setup.world,
            clock: setup.clock,
            stop: setup.stop,
            until_ms: setup.until_ms,
            at_end: setup.at_end,
            bounded: setup.until_ms.is_none(),
            parts: Vec::new(),
            discovery: (setup.discovery_ms > 0).then(|| Duration::from_millis(setup.discovery_ms)),
            faults: setup.faults,
            started_ms,
            polls: 0,
            stalled: false,
            rng: Rng::new(setup.seed),
        }
    }

    fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    fn in_window(&self, window: Option<(u64, u64)>) -> bool {
        let t = self.now_ms().saturating_sub(self.started_ms);
        window.is_some_and(|(from, to)| (from..to).contains(&t))
    }

    /// Where delivery of `p` stops now: its bounded end, or what arrived
    /// (by the live run's end at the latest: the stop is noticed before
    /// anything that arrives after it, say during a stall, is read).
    fn limit(&self, p: usize) -> u64 {
        let w = lock(&self.world);
        let now = self
            .until_ms
            .map_or(self.now_ms(), |u| u.min(self.now_ms()));
        let high = w.log.high(p, now);
        self.parts[p].end.map_or(high, |e| e.min(high))
    }

    /// Whether `p` has a readable record left before its limit.
    fn has_readable(&self, p: usize) -> bool {
        let limit = self.limit(p);
        let w = lock(&self.world);
        w.log.next_readable(p, self.parts[p].next) < limit
    }

    /// Moves up to `max` records of partition `p` into `batch`.
    fn take_chunk(&mut self, p: usize, batch: &mut RecordBatch, max: usize) {
        let limit = self.limit(p);
        let world = self.world.clone();
        let w = lock(&world);
        let mut next = self.parts[p].next;
        let mut taken = 0;
        while taken < max {
            let o = w.log.next_readable(p, next);
            if o >= limit {
                break;
            }
            let part = &w.log.parts[p];
            batch.push_timestamped(p as u32, o, part.ts[o as usize], &part.payload[o as usize]);
            next = o + 1;
            taken += 1;
        }
        self.parts[p].next = next;
    }

    /// A live run's end: check liveness, then ask the job to stop.
    fn maybe_stop(&mut self) -> bool {
        match self.until_ms {
            Some(until) if self.now_ms() >= until => {
                if !self.stop.load(Ordering::Relaxed) {
                    if let Some(check) = self.at_end.as_mut() {
                        check();
                    }
                    self.stop.store(true, Ordering::Relaxed);
                }
                true
            }
            _ => false,
        }
    }

    /// Nothing to deliver: let time pass, as a poll waiting for data does.
    fn wait(&mut self, timeout: Duration) {
        let now = self.now_ms();
        let count = self.parts.len();
        let mut to = now + timeout.as_millis().max(100) as u64;
        if !self.bounded {
            let next = lock(&self.world).log.next_arrival(count, now);
            if let Some(next) = next {
                to = to.min(next.max(now + 1));
            }
        }
        if let Some(until) = self.until_ms {
            to = to.min(until.max(now + 1));
        }
        self.clock.advance_to_ms(to);
    }
}

impl Source for SimSource {
    fn id(&self) -> String {
        "sim:orders".into()
    }

    fn identity(&self) -> Option<String> {
        Some("cluster=sim,topic_id=orders-1".into())
    }

    fn source_name(&self, _partition: u32) -> &str {
        step("source::source_name");
        "orders"
    }

    fn partition_count(&self) -> usize {
        if self.parts.is_empty() {
            lock(&self.world).log.partitions_at(self.now_ms())
        } else {
            self.parts.len()
        }
    }

    fn open(
        &mut self,
        resume: &BTreeMap<u32, u64>,
        end: End<'_>,
    ) -> Result<BTreeMap<u32, u64>, SourceError> {
        step("source::open");
        let now = self.now_ms();
        let w = lock(&self.world);
        let count = w.log.partitions_at(now);
        if let Some((p, _)) = resume.iter().find(|(p, _)| **p as usize >= count) {
            return Err(SourceError::Misconfigured(format!(
                "the topic has {count} partitions but the checkpoint names partition {p}"
            )));
        }
        let mut starts = BTreeMap::new();
        let mut lost = Vec::new();
        self.parts.clear();
        for p in 0..count {
            let (low, high) = (w.log_start[p], w.log.high(p, now));
            // A partition the checkpoint does not know is read from its
            // earliest offset, as the Kafka source does.
            let at = resume.get(&(p as u32)).copied().unwrap_or(low);
            if at < low || at > high {
                lost.push(format!(
                    "partition {p}: offset {at} is not in {low}..{high}"
                ));
            }
            let end = match end {
                End::Never => None,
                End::Now => Some(high),
                End::At(ends) => Some(ends.get(&(p as u32)).copied().unwrap_or(at)),
            };
            self.parts.push(Part {
                next: at,
                end,
                log_start: low,
                paused: false,
            });
            starts.insert(p as u32, at);
        }
        if !lost.is_empty() {
            return Err(SourceError::DataLost(format!(
                "sim topic: {}. {RETENTION_ERROR}; StreamForge does not skip them silently",
                lost.join("; ")
            )));
        }
        Ok(starts)
    }

    fn end_offsets(&self) -> Option<BTreeMap<u32, u64>> {
        streamforge::source::bounded_end_offsets(
            self.bounded,
            self.parts.iter().map(|part| part.end),
        )
    }

    fn poll(
        &mut self,
        batch: &mut RecordBatch,
        max: usize,
        timeout: Duration,
    ) -> Result<(), SourceError> {
        step("source::poll");
        self.polls += 1;
        if self.maybe_stop() {
            return Ok(());
        }
        if let Some((at, len)) = self.faults.stall {
            if !self.stalled && self.now_ms() >= self.started_ms + at {
                self.stalled = true;
                self.clock.advance(Duration::from_millis(len));
            }
        }
        if self.faults.source_fatal_poll == Some(self.polls) {
            return Err(SourceError::Failed(
                "sim topic: the broker refused the consumer".into(),
            ));
        }
        if self.in_window(self.faults.source_down) {
            self.clock.advance(timeout.max(Duration::from_millis(100)));
            return Err(SourceError::Unavailable("sim brokers unreachable".into()));
        }
        let mut order: Vec<usize> = (0..self.parts.len()).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, self.rng.below(i as u64 + 1) as usize);
        }
        for p in order {
            if batch.len() >= max {
                break;
            }
            if self.parts[p].paused {
                continue;
            }
            let chunk = self.rng.range(1, max as u64) as usize;
            self.take_chunk(p, batch, chunk.min(max - batch.len()));
            step("source::chunk");
        }
        if batch.is_empty() {
            self.wait(timeout);
        } else {
            self.clock.advance(Duration::from_millis(1));
        }
        Ok(())
    }

    fn state(&self, partition: u32) -> PartitionState {
        step("source::state");
        let p = partition as usize;
        let Some(part) = self.parts.get(p) else {
            return PartitionState::Finished;
        };
        let readable = self.has_readable(p);
        if self.bounded {
            return if readable {
                PartitionState::Backlog
            } else {
                PartitionState::Finished
            };
        }
        if part.paused || readable {
            PartitionState::Backlog
        } else {
            PartitionState::CaughtUp
        }
    }

    fn set_paused(&mut self, partition: u32, paused: bool) {
        if let Some(part) = self.parts.get_mut(partition as usize) {
            part.paused = paused;
        }
    }

    fn log_start(&self, partition: u32) -> u64 {
        self.parts
            .get(partition as usize)
            .map_or(0, |p| p.log_start)
    }

    fn discovery_interval(&self) -> Option<Duration> {
        if self.bounded {
            None
        } else {
            self.discovery
        }
    }

    fn known_end(&self, partition: u32) -> Option<u64> {
        let p = partition as usize;
        (p < self.parts.len()).then(|| self.limit(p))
    }

    fn discover(&mut self) -> Result<usize, SourceError> {
        step("source::discover");
        if self.in_window(self.faults.discover_down) {
            return Err(SourceError::Unavailable(
                "sim: metadata request timed out".into(),
            ));
        }
        let now = self.now_ms();
        let w = lock(&self.world);
        let count = w.log.partitions_at(now);
        for p in self.parts.len()..count {
            let low = w.log_start[p];
            self.parts.push(Part {
                next: low,
                end: None,
                log_start: low,
                paused: false,
            });
        }
        Ok(self.parts.len())
    }
}
