//! One partition of a topic, presented to a job as its whole input.
//!
//! In group mode each owned partition runs as a job of its own, and that
//! job must see nothing of the other partitions: its watermark, lateness and
//! dedup are then functions of this partition's log alone, whichever
//! instance runs it and whatever else that instance owns. The job sees one
//! partition, numbered 0; [`Source::owned_partition`] gives the topic's
//! number for the anomaly records and the partial rows.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::source::{End, PartitionState, RecordBatch, Source, SourceError};

/// Partition `partition` of `inner` as a one-partition source. The other
/// partitions of `inner` are paused as soon as it is opened; records of
/// theirs fetched before that are dropped.
pub struct OwnedPartition {
    inner: Box<dyn Source>,
    partition: u32,
    /// The partition's next offset as of the last durable checkpoint
    /// ([`NO_OFFSET`]: none yet), for the membership to commit to the group.
    checkpointed: Arc<AtomicU64>,
}

/// What [`OwnedPartition::checkpointed`] holds before the first checkpoint.
pub const NO_OFFSET: u64 = u64::MAX;

impl OwnedPartition {
    pub fn new(inner: Box<dyn Source>, partition: u32) -> Self {
        OwnedPartition {
            inner,
            partition,
            checkpointed: Arc::new(AtomicU64::new(NO_OFFSET)),
        }
    }

    /// The partition's next offset as of the job's last durable checkpoint
    /// ([`NO_OFFSET`] until the first), shared with the runner, which
    /// commits it to the consumer group through the membership consumer.
    pub fn checkpointed(&self) -> Arc<AtomicU64> {
        self.checkpointed.clone()
    }

    fn as_job_offsets(&self, offsets: &BTreeMap<u32, u64>) -> BTreeMap<u32, u64> {
        offsets
            .get(&self.partition)
            .map(|o| (0, *o))
            .into_iter()
            .collect()
    }
}

impl Source for OwnedPartition {
    fn id(&self) -> String {
        format!("{}#partition-{}", self.inner.id(), self.partition)
    }

    fn identity(&self) -> Option<String> {
        self.inner.identity()
    }

    fn source_name(&self, _partition: u32) -> &str {
        self.inner.source_name(self.partition)
    }

    fn partition_count(&self) -> usize {
        1
    }

    fn open(
        &mut self,
        resume: &BTreeMap<u32, u64>,
        end: End<'_>,
    ) -> Result<BTreeMap<u32, u64>, SourceError> {
        if self.partition as usize >= self.inner.partition_count() {
            return Err(SourceError::Misconfigured(format!(
                "{}: partition {} was assigned, but the topic has {} partitions",
                self.inner.id(),
                self.partition,
                self.inner.partition_count()
            )));
        }
        let k = self.partition;
        let resume: BTreeMap<u32, u64> = resume.get(&0).map(|o| (k, *o)).into_iter().collect();
        let ends: BTreeMap<u32, u64>;
        let end = match end {
            End::At(at) => {
                ends = at.get(&0).map(|o| (k, *o)).into_iter().collect();
                End::At(&ends)
            }
            other => other,
        };
        let starts = self.inner.open(&resume, end)?;
        for p in 0..self.inner.partition_count() as u32 {
            if p != k {
                self.inner.set_paused(p, true);
            }
        }
        Ok(self.as_job_offsets(&starts))
    }

    fn end_offsets(&self) -> Option<BTreeMap<u32, u64>> {
        self.inner.end_offsets().map(|e| self.as_job_offsets(&e))
    }

    fn poll(
        &mut self,
        batch: &mut RecordBatch,
        max: usize,
        timeout: Duration,
    ) -> Result<(), SourceError> {
        self.inner.poll(batch, max, timeout)?;
        batch.keep_partition(self.partition, 0);
        Ok(())
    }

    fn state(&self, partition: u32) -> PartitionState {
        if partition == 0 {
            self.inner.state(self.partition)
        } else {
            PartitionState::Finished
        }
    }

    fn set_paused(&mut self, partition: u32, paused: bool) {
        if partition == 0 {
            self.inner.set_paused(self.partition, paused);
        }
    }

    fn log_start(&self, partition: u32) -> u64 {
        if partition == 0 {
            self.inner.log_start(self.partition)
        } else {
            0
        }
    }

    fn lag(&self, processed: &BTreeMap<u32, u64>) -> Vec<(u32, i64)> {
        // The job's partition 0 is the topic's owned one, at the same offsets.
        let processed: BTreeMap<u32, u64> = processed
            .get(&0)
            .map(|o| (self.partition, *o))
            .into_iter()
            .collect();
        self.inner
            .lag(&processed)
            .into_iter()
            .filter(|(p, _)| *p == self.partition)
            .map(|(_, lag)| (0, lag))
            .collect()
    }

    /// Publishes the checkpointed offset to the runner: the group's offsets
    /// are committed by the membership consumer, a member of the group (a
    /// commit from outside it would be refused).
    fn commit_advisory(&mut self, next_offsets: &BTreeMap<u32, u64>) {
        if let Some(o) = next_offsets.get(&0) {
            self.checkpointed.store(*o, Ordering::Release);
        }
    }

    fn owned_partition(&self) -> Option<u32> {
        Some(self.partition)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::generator::{GeneratorConfig, GeneratorSource};

    fn generator(partitions: u32, events: u64) -> Box<dyn Source> {
        Box::new(
            GeneratorSource::new(GeneratorConfig {
                partitions,
                events_per_partition: Some(events),
                ..GeneratorConfig::default()
            })
            .unwrap(),
        )
    }

    /// The owned partition's records, renumbered 0, at the offsets and with
    /// the payloads the inner source gives partition 2 alone.
    #[test]
    fn only_the_owned_partition_is_read_renumbered_zero() {
        let mut owned = OwnedPartition::new(generator(4, 50), 2);
        assert_eq!(owned.partition_count(), 1);
        assert_eq!(owned.owned_partition(), Some(2));
        let resume = BTreeMap::from([(0, 10)]);
        assert_eq!(owned.start(&resume, true).unwrap(), resume);
        assert_eq!(owned.end_offsets(), Some(BTreeMap::from([(0, 50)])));
        let mut got = Vec::new();
        let mut batch = RecordBatch::default();
        for _ in 0..100 {
            batch.clear();
            owned.poll(&mut batch, 7, Duration::ZERO).unwrap();
            got.extend(
                batch
                    .iter()
                    .map(|(m, p)| (m.partition, m.offset, p.to_vec())),
            );
        }
        let mut plain = generator(4, 50);
        let mut want = Vec::new();
        plain
            .start(&BTreeMap::from([(0, 50), (1, 50), (2, 10), (3, 50)]), true)
            .unwrap();
        for _ in 0..100 {
            batch.clear();
            plain.poll(&mut batch, 7, Duration::ZERO).unwrap();
            want.extend(batch.iter().map(|(m, p)| (0, m.offset, p.to_vec())));
        }
        assert_eq!(got.len(), 40);
        assert_eq!(got, want);
        assert_eq!(owned.state(0), PartitionState::Finished);
        assert!(owned.id().ends_with("#partition-2"));
        let checkpointed = owned.checkpointed();
        assert_eq!(checkpointed.load(Ordering::Acquire), NO_OFFSET);
        owned.commit_advisory(&BTreeMap::from([(0, 33)]));
        assert_eq!(checkpointed.load(Ordering::Acquire), 33);
    }
}
