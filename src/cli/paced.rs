//! A source that delivers at most so many records per second of wall time:
//! `streamforge demo --speed N` replays the generator's event time N times
//! faster than real time, so the live page fills in while one watches.
//!
//! Only the pace changes: every record, offset and partition state is the
//! inner source's, so the results are those of an unpaced run.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::source::{End, PartitionState, RecordBatch, Source, SourceError};

pub(super) struct Paced {
    inner: Box<dyn Source>,
    per_second: f64,
    /// When the first poll came: the pace counts from there.
    started: Option<Instant>,
    delivered: u64,
}

impl Paced {
    pub(super) fn new(inner: Box<dyn Source>, per_second: f64) -> Paced {
        Paced {
            inner,
            per_second,
            started: None,
            delivered: 0,
        }
    }
}

impl Source for Paced {
    fn id(&self) -> String {
        self.inner.id()
    }

    fn identity(&self) -> Option<String> {
        self.inner.identity()
    }

    fn source_name(&self, partition: u32) -> &str {
        self.inner.source_name(partition)
    }

    fn partition_count(&self) -> usize {
        self.inner.partition_count()
    }

    fn open(
        &mut self,
        resume: &BTreeMap<u32, u64>,
        end: End<'_>,
    ) -> Result<BTreeMap<u32, u64>, SourceError> {
        self.inner.open(resume, end)
    }

    fn start(
        &mut self,
        resume: &BTreeMap<u32, u64>,
        bounded: bool,
    ) -> Result<BTreeMap<u32, u64>, SourceError> {
        self.inner.start(resume, bounded)
    }

    fn end_offsets(&self) -> Option<BTreeMap<u32, u64>> {
        self.inner.end_offsets()
    }

    /// Asks the inner source for no more than the pace allows by now; when
    /// nothing is due, waits a little and returns an empty batch.
    fn poll(
        &mut self,
        batch: &mut RecordBatch,
        max: usize,
        timeout: Duration,
    ) -> Result<(), SourceError> {
        let started = *self.started.get_or_insert_with(Instant::now);
        let due = (started.elapsed().as_secs_f64() * self.per_second) as u64;
        let allowed = due.saturating_sub(self.delivered);
        if allowed == 0 {
            std::thread::sleep(timeout.min(Duration::from_millis(10)));
            return Ok(());
        }
        let before = batch.len();
        let max = max.min(usize::try_from(allowed).unwrap_or(usize::MAX));
        self.inner.poll(batch, max, timeout)?;
        self.delivered += (batch.len() - before) as u64;
        Ok(())
    }

    fn state(&self, partition: u32) -> PartitionState {
        self.inner.state(partition)
    }

    fn set_paused(&mut self, partition: u32, paused: bool) {
        self.inner.set_paused(partition, paused)
    }

    fn log_start(&self, partition: u32) -> u64 {
        self.inner.log_start(partition)
    }

    fn lag(&self, processed: &BTreeMap<u32, u64>) -> Vec<(u32, i64)> {
        self.inner.lag(processed)
    }

    fn commit_advisory(&mut self, next_offsets: &BTreeMap<u32, u64>) {
        self.inner.commit_advisory(next_offsets)
    }

    fn discovery_interval(&self) -> Option<Duration> {
        self.inner.discovery_interval()
    }

    fn known_end(&self, partition: u32) -> Option<u64> {
        self.inner.known_end(partition)
    }

    fn discover(&mut self) -> Result<usize, SourceError> {
        self.inner.discover()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::generator::{GeneratorConfig, GeneratorSource};

    #[test]
    fn records_come_no_faster_than_the_pace_and_all_of_them_come() {
        let generator = GeneratorSource::new(GeneratorConfig {
            partitions: 2,
            events_per_partition: Some(500),
            ..GeneratorConfig::default()
        })
        .unwrap();
        let mut paced = Paced::new(Box::new(generator), 2_000.0);
        paced.start(&BTreeMap::new(), true).unwrap();
        let started = Instant::now();
        let (mut batch, mut offsets) = (RecordBatch::default(), Vec::new());
        while (0..2).any(|p| paced.state(p) != PartitionState::Finished) {
            batch.clear();
            paced
                .poll(&mut batch, 8192, Duration::from_millis(5))
                .unwrap();
            offsets.extend(batch.iter().map(|(m, _)| (m.partition, m.offset)));
            assert!(
                offsets.len() as f64 <= started.elapsed().as_secs_f64() * 2_000.0 + 1.0,
                "{} records after {:?}",
                offsets.len(),
                started.elapsed()
            );
        }
        // 1,000 records at 2,000 a second: half a second at least.
        assert!(started.elapsed() >= Duration::from_millis(499));
        offsets.sort();
        let every: Vec<(u32, u64)> = (0..2).flat_map(|p| (0..500).map(move |o| (p, o))).collect();
        assert_eq!(offsets, every);
    }
}
