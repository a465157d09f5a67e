//! The generator source (SPEC §7): simulated order events that are a pure
//! function of `(seed, partition, offset)`.
//!
//! Because any payload can be recomputed from its coordinates, the generator
//! seeks like a Kafka partition and a replay or restart reads exactly the
//! same bytes. The stream is shaped like real traffic: `rate` events per
//! second of event time on each partition, starting at `start_time`; event
//! times jitter back by up to `disorder_ms` (keep it within the watermark
//! bound for deterministic results); a share of events are re-sent copies of
//! a recent event (duplicates), a share are broken in one of the ways SPEC §1
//! names, and a share are very late (three minutes older than their neighbours,
//! well past window size + allowed lateness + the watermark bound).

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{End, PartitionState, RecordBatch, Source, SourceError};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GeneratorConfig {
    pub seed: u64,
    pub partitions: u32,
    /// Events per partition; required for a bounded run, unbounded if absent.
    pub events_per_partition: Option<u64>,
    /// Events per second of event time, per partition.
    pub rate: u64,
    /// First event time, epoch ms.
    pub start_time_ms: i64,
    /// Distinct users to draw from.
    pub users: u64,
    /// Share (0..1) of broken events.
    pub anomaly_share: f64,
    /// Share (0..1) of re-sent copies of a recent event.
    pub duplicate_share: f64,
    /// Share (0..1) of events an hour older than the stream (late_event).
    pub late_share: f64,
    /// Maximum backward jitter of event times within a partition.
    pub disorder_ms: u64,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        GeneratorConfig {
            seed: 42,
            partitions: 4,
            events_per_partition: Some(150_000),
            rate: 500,
            // 2025-11-25T10:00:00Z
            start_time_ms: 1_764_064_800_000,
            users: 20_000,
            anomaly_share: 0.01,
            duplicate_share: 0.02,
            late_share: 0.001,
            disorder_ms: 3_000,
        }
    }
}

/// How far back a duplicate reaches for its original.
const DUP_DISTANCE: u64 = 16;
/// How much older than the stream a late event is.
const LATE_BY_MS: i64 = 180_000;

#[inline]
fn mix(mut x: u64) -> u64 {
    // splitmix64: a bijective, well-distributed mixer.
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[inline]
fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

impl GeneratorConfig {
    fn hash(&self, partition: u32, offset: u64, salt: u64) -> u64 {
        mix(self.seed ^ mix(((partition as u64) << 48) ^ offset ^ mix(salt)))
    }

    fn base_time(&self, offset: u64) -> i64 {
        let rate = self.rate.max(1);
        self.start_time_ms + (offset as i128 * 1000 / rate as i128) as i64
    }

    /// The record timestamp of `offset`: when the simulated producer sent
    /// it (the event time before disorder), like Kafka's `CreateTime`.
    pub fn send_time(&self, offset: u64) -> i64 {
        self.base_time(offset)
    }

    /// Writes the payload at `(partition, offset)` to `out`.
    pub fn payload(&self, partition: u32, offset: u64, out: &mut Vec<u8>) {
        let h = self.hash(partition, offset, 1);
        if offset >= DUP_DISTANCE && unit(h) < self.duplicate_share {
            let back = 1 + self.hash(partition, offset, 2) % DUP_DISTANCE;
            return self.original(partition, offset - back, out);
        }
        self.original(partition, offset, out)
    }

    /// The payload an offset has when it is not a duplicate.
    fn original(&self, partition: u32, offset: u64, out: &mut Vec<u8>) {
        let h = self.hash(partition, offset, 3);
        let jitter = if self.disorder_ms == 0 {
            0
        } else {
            (self.hash(partition, offset, 4) % (self.disorder_ms + 1)) as i64
        };
        let mut t = self.base_time(offset) - jitter;
        let roll = unit(self.hash(partition, offset, 5));
        // Late events only once the stream is old enough for them to be
        // late on every partition.
        if roll < self.late_share
            && self.base_time(offset) - self.start_time_ms > LATE_BY_MS + 60_000
        {
            t -= LATE_BY_MS;
        }
        let user = h % self.users.max(1);
        let cents = 100 + (self.hash(partition, offset, 6) % 99_900);
        let city =
            ["Beijing", "Shanghai", "Shenzhen", "Hangzhou", "Chengdu"][(h >> 20) as usize % 5];
        let category = ["books", "electronics", "grocery", "apparel"][(h >> 30) as usize % 4];
        let event_id = format_args!("p{partition}-{offset}");
        let anomaly = roll >= self.late_share && roll < self.late_share + self.anomaly_share;
        if !anomaly {
            let _ = write!(
                out,
                r#"{{"event_id":"{event_id}","order_id":"o{partition}-{offset}","user_id":"u{user}","amount":{}.{:02},"event_time":{t},"city":"{city}","category":"{category}"}}"#,
                cents / 100,
                cents % 100
            );
            return;
        }
        let _ = match self.hash(partition, offset, 7) % 8 {
            0 => write!(
                out,
                r#"{{"event_id":"{event_id}","order_id":"o","user_id":"u{user}","amou"#
            ),
            1 => write!(out, r#"["{event_id}",{t}]"#),
            2 => write!(
                out,
                r#"{{"event_id":"{event_id}","user_id":"u{user}","amount":1.00,"event_time":{t}}}"#
            ),
            3 => write!(
                out,
                r#"{{"event_id":"{event_id}","order_id":"o","user_id":"u{user}","amount":true,"event_time":{t}}}"#
            ),
            4 => write!(
                out,
                r#"{{"event_id":"{event_id}","order_id":"o","user_id":"u{user}","amount":-{}.{:02},"event_time":{t}}}"#,
                cents / 100,
                cents % 100
            ),
            5 => write!(
                out,
                r#"{{"event_id":"{event_id}","order_id":"o","user_id":"u{user}","amount":"12.345","event_time":{t}}}"#
            ),
            6 => write!(
                out,
                r#"{{"event_id":"{event_id}","order_id":"o","user_id":"u{user}","amount":1.00,"event_time":"2025-13-45T99:00:00Z"}}"#
            ),
            _ => write!(
                out,
                r#"{{"event_id":{offset},"order_id":"o","user_id":"u{user}","amount":1.00,"event_time":{t}}}"#
            ),
        };
    }
}

pub struct GeneratorSource {
    config: GeneratorConfig,
    next: Vec<u64>,
    /// Where each partition stops: `events_per_partition`, or a resumed
    /// bounded run's ends.
    end: Vec<Option<u64>>,
    bounded: bool,
    cursor: usize,
    name: String,
}

impl GeneratorSource {
    pub fn new(config: GeneratorConfig) -> Result<Self, SourceError> {
        if config.partitions == 0 {
            return Err(SourceError::Misconfigured(
                "generator: partitions must be at least 1".into(),
            ));
        }
        Ok(GeneratorSource {
            next: vec![0; config.partitions as usize],
            end: vec![None; config.partitions as usize],
            bounded: false,
            cursor: 0,
            name: format!("generator:{}", config.seed),
            config,
        })
    }
}

impl Source for GeneratorSource {
    fn id(&self) -> String {
        // Everything that changes the payloads identifies the input.
        let c = &self.config;
        format!(
            "generator:seed={},partitions={},rate={},start={},users={},anomaly={},dup={},late={},disorder={}",
            c.seed,
            c.partitions,
            c.rate,
            c.start_time_ms,
            c.users,
            c.anomaly_share,
            c.duplicate_share,
            c.late_share,
            c.disorder_ms
        )
    }

    fn source_name(&self, _partition: u32) -> &str {
        &self.name
    }

    fn partition_count(&self) -> usize {
        self.config.partitions as usize
    }

    fn open(
        &mut self,
        resume: &BTreeMap<u32, u64>,
        end: End<'_>,
    ) -> Result<BTreeMap<u32, u64>, SourceError> {
        self.bounded = !matches!(end, End::Never);
        if matches!(end, End::Now) && self.config.events_per_partition.is_none() {
            return Err(SourceError::Misconfigured(
                "generator: a bounded run needs source.generator.events_per_partition".into(),
            ));
        }
        for (p, next) in self.next.iter_mut().enumerate() {
            *next = resume.get(&(p as u32)).copied().unwrap_or(0);
            self.end[p] = match end {
                End::At(ends) => Some(ends.get(&(p as u32)).copied().unwrap_or(*next)),
                _ => self.config.events_per_partition,
            };
        }
        Ok(self
            .next
            .iter()
            .enumerate()
            .map(|(p, o)| (p as u32, *o))
            .collect())
    }

    fn end_offsets(&self) -> Option<BTreeMap<u32, u64>> {
        if !self.bounded {
            return None;
        }
        self.end
            .iter()
            .enumerate()
            .map(|(p, e)| e.map(|e| (p as u32, e)))
            .collect()
    }

    fn poll(
        &mut self,
        batch: &mut RecordBatch,
        max: usize,
        _timeout: Duration,
    ) -> Result<(), SourceError> {
        let n = self.next.len();
        let mut exhausted = 0;
        while batch.len() < max && exhausted < n {
            let p = self.cursor;
            self.cursor = (self.cursor + 1) % n;
            let mut took = 0;
            while took < 64 && batch.len() < max {
                let offset = self.next[p];
                if self.end[p].is_some_and(|end| offset >= end) {
                    break;
                }
                let start = batch.buffer().len();
                self.config.payload(p as u32, offset, batch.buffer());
                batch.push_written_at(p as u32, offset, self.config.send_time(offset), start);
                self.next[p] += 1;
                took += 1;
            }
            if took == 0 {
                exhausted += 1;
            } else {
                exhausted = 0;
            }
        }
        Ok(())
    }

    fn state(&self, partition: u32) -> PartitionState {
        let p = partition as usize;
        match (self.next.get(p), self.end.get(p).copied().flatten()) {
            (Some(next), Some(end)) if *next >= end && self.bounded => PartitionState::Finished,
            // A live run over a finite stream: it has all there is.
            (Some(next), Some(end)) if *next >= end => PartitionState::CaughtUp,
            (Some(_), _) => PartitionState::Backlog,
            (None, _) => PartitionState::Finished,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(c: &GeneratorConfig, p: u32, o: u64) -> String {
        let mut v = Vec::new();
        c.payload(p, o, &mut v);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn payloads_are_a_pure_function_of_their_coordinates() {
        let c = GeneratorConfig::default();
        assert_eq!(payload(&c, 1, 12345), payload(&c, 1, 12345));
        assert_ne!(payload(&c, 1, 12345), payload(&c, 2, 12345));
        let other = GeneratorConfig {
            seed: 7,
            ..c.clone()
        };
        assert_ne!(payload(&c, 1, 12345), payload(&other, 1, 12345));
    }

    #[test]
    fn seeking_reads_the_same_records() {
        let c = GeneratorConfig {
            events_per_partition: Some(300),
            partitions: 2,
            ..Default::default()
        };
        let mut all = GeneratorSource::new(c.clone()).unwrap();
        all.start(&BTreeMap::new(), true).unwrap();
        let mut batch = RecordBatch::default();
        all.poll(&mut batch, 10_000, Duration::ZERO).unwrap();
        assert_eq!(batch.len(), 600);
        let from_all: Vec<(u32, u64, Vec<u8>)> = batch
            .iter()
            .filter(|(m, _)| m.offset >= 250)
            .map(|(m, p)| (m.partition, m.offset, p.to_vec()))
            .collect();
        let mut sought = GeneratorSource::new(c).unwrap();
        sought
            .start(&[(0, 250), (1, 250)].into_iter().collect(), true)
            .unwrap();
        let mut batch = RecordBatch::default();
        sought.poll(&mut batch, 10_000, Duration::ZERO).unwrap();
        let mut from_seek: Vec<(u32, u64, Vec<u8>)> = batch
            .iter()
            .map(|(m, p)| (m.partition, m.offset, p.to_vec()))
            .collect();
        let mut from_all = from_all;
        from_all.sort();
        from_seek.sort();
        assert_eq!(from_all, from_seek);
        assert_eq!(sought.state(0), PartitionState::Finished);
    }

    #[test]
    fn shares_are_roughly_as_configured() {
        let c = GeneratorConfig {
            anomaly_share: 0.1,
            duplicate_share: 0.1,
            ..Default::default()
        };
        let mut broken = 0;
        let mut dups = 0;
        let mut seen = std::collections::HashSet::new();
        for o in 0..20_000 {
            let p = payload(&c, 0, o);
            let id = p.split('"').nth(3).unwrap_or("").to_string();
            if !p.contains("\"city\"") {
                broken += 1;
            } else if !seen.insert(id) {
                dups += 1;
            }
        }
        assert!((1_500..2_500).contains(&broken), "broken {broken}");
        assert!((1_400..2_400).contains(&dups), "dups {dups}");
    }
}
