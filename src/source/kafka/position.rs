//! Where a Kafka source starts and how it is assigned its partitions: the
//! start offsets (a checkpoint's, or the configured start resolved against
//! the log), the checks that the log still holds them, and the assignment.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tracing::{debug, warn};

use super::{fetch_all_watermarks, retry_startup, Attempt, KafkaSource, StartAt, STARTUP_RETRY};
use crate::source::SourceError;

impl KafkaSource {
    /// Start offsets for partitions the checkpoint does not name.
    pub(super) fn resolve_start(
        &self,
        at: StartAt,
        watermarks: &[(i64, i64)],
    ) -> Result<Vec<u64>, SourceError> {
        match at {
            StartAt::Earliest => Ok(watermarks
                .iter()
                .map(|(low, _)| (*low).max(0) as u64)
                .collect()),
            StartAt::Latest => Ok(watermarks
                .iter()
                .map(|(_, high)| (*high).max(0) as u64)
                .collect()),
            StartAt::Time(ms) => {
                let mut tpl = TopicPartitionList::new();
                for p in 0..self.partitions() {
                    tpl.add_partition_offset(&self.settings.topic, p as i32, Offset::Offset(ms))
                        .map_err(|e| {
                            SourceError::Failed(format!("kafka: offsets for times: {e}"))
                        })?;
                }
                let found = retry_startup(
                    "looking up offsets for the start time",
                    &self.settings.brokers,
                    STARTUP_RETRY,
                    &|| self.consumer.context().last_error(),
                    || {
                        self.consumer
                            .offsets_for_times(tpl.clone(), self.timeout())
                            .map_err(|e| Attempt::Retry(e.to_string()))
                    },
                )?;
                let mut starts: Vec<u64> = watermarks
                    .iter()
                    .map(|(_, high)| (*high).max(0) as u64)
                    .collect();
                for elem in found.elements() {
                    let p = elem.partition() as usize;
                    // Offset::End (nothing at or after the time): the high
                    // watermark, already in place.
                    if let (Some(slot), Offset::Offset(o)) = (starts.get_mut(p), elem.offset()) {
                        if o >= 0 {
                            *slot = o as u64;
                        }
                    }
                }
                Ok(starts)
            }
        }
    }

    /// Builds the fatal error for a position outside the log.
    pub(super) fn out_of_range_error(&self, context: &str) -> SourceError {
        let topic = &self.settings.topic;
        let mut lost = Vec::new();
        for p in 0..self.partitions() {
            let part = &self.parts[p as usize];
            if part.finished {
                continue;
            }
            let next = part.next;
            match self.consumer.fetch_watermarks(topic, p as i32, self.timeout()) {
                Ok((low, high)) if (next as i64) < low || (next as i64) > high => lost.push(format!(
                    "partition {p}: offset {next} is not available (earliest available offset {low}, end {high})"
                )),
                _ => {}
            }
        }
        let which = if lost.is_empty() {
            format!("a partition's position is outside its log ({context})")
        } else {
            lost.join("; ")
        };
        SourceError::DataLost(format!(
            "kafka topic {topic}: {which}. Retention deleted records the checkpoint still needs (or the topic \
             was recreated); StreamForge does not skip them silently. To accept the loss, start again with a \
             fresh state directory and `start: earliest`"
        ))
    }

    /// Reads every partition's low and high watermark, retrying while the
    /// brokers are unreachable.
    pub(super) fn watermarks_at_start(&self) -> Result<Vec<(i64, i64)>, SourceError> {
        retry_startup(
            "reading watermarks",
            &self.settings.brokers,
            STARTUP_RETRY,
            &|| self.consumer.context().last_error(),
            || {
                fetch_all_watermarks(
                    self.consumer.client(),
                    &self.settings.topic,
                    self.partitions(),
                    self.timeout(),
                )
                .map_err(|e| Attempt::Retry(e.to_string()))
            },
        )
    }

    /// Errors queued while connecting (refused connections before the
    /// broker answered) are history: drops them before reading.
    pub(super) fn drain_stale_events(&self) {
        for _ in 0..10_000 {
            match self.consumer.poll(Duration::ZERO) {
                None => break,
                Some(Err(e)) => debug!(error = %e, "discarding an error queued before start"),
                Some(Ok(m)) => debug!(
                    partition = m.partition(),
                    offset = m.offset(),
                    "discarding a stale record"
                ),
            }
        }
    }

    /// The start offset of every partition, checked against what the log
    /// still holds.
    pub(super) fn start_offsets(
        &self,
        resume: &BTreeMap<u32, u64>,
        watermarks: &[(i64, i64)],
    ) -> Result<BTreeMap<u32, u64>, SourceError> {
        let topic = &self.settings.topic;
        // A partition a checkpoint does not know (the topic grew since) holds
        // only records the job has never seen: all of them.
        let configured = if resume.is_empty() {
            self.resolve_start(self.settings.start_at()?, watermarks)?
        } else {
            self.resolve_start(StartAt::Earliest, watermarks)?
        };
        let mut starts = BTreeMap::new();
        let mut problems = Vec::new();
        for p in 0..self.partitions() {
            let (low, high) = watermarks[p as usize];
            let at = match resume.get(&p) {
                Some(&o) => {
                    if (o as i64) < low || (o as i64) > high {
                        problems.push(format!(
                            "partition {p}: the checkpoint resumes at offset {o} but the log holds offsets \
                             {low}..{high} (earliest available offset {low})"
                        ));
                    }
                    o
                }
                None => {
                    // A group-mode partition job's checkpoint knows its own
                    // partition only; the others are paused at once.
                    let owned = self.settings.owned_partition.is_none_or(|k| k == p);
                    if !resume.is_empty() && owned {
                        warn!(partition = p, offset = configured[p as usize], "partition not in the checkpoint (added since?); reading it from its earliest offset");
                    }
                    configured[p as usize]
                }
            };
            starts.insert(p, at);
        }
        if !problems.is_empty() {
            return Err(SourceError::DataLost(format!(
                "kafka topic {topic}: {}. Retention deleted records the checkpoint still needs (or the topic \
                 was recreated); StreamForge does not skip them silently. To accept the loss, start again with \
                 a fresh state directory and `start: earliest`",
                problems.join("; ")
            )));
        }
        Ok(starts)
    }

    /// Adds partitions to the consumer's assignment, each at its offset.
    /// The start offset travels inside the assignment; no seek afterwards
    /// (seeking a just-assigned partition races librdkafka's own fetch start
    /// and fails with "erroneous state").
    pub(super) fn assign(
        &self,
        offsets: &BTreeMap<u32, u64>,
        incremental: bool,
    ) -> Result<(), SourceError> {
        let topic = &self.settings.topic;
        let mut tpl = TopicPartitionList::with_capacity(offsets.len());
        for (p, o) in offsets {
            tpl.add_partition_offset(topic, *p as i32, Offset::Offset(*o as i64))
                .map_err(|e| SourceError::Failed(format!("kafka: building the assignment: {e}")))?;
        }
        let result = if incremental {
            self.consumer.incremental_assign(&tpl)
        } else {
            self.consumer.assign(&tpl)
        };
        result.map_err(|e| {
            SourceError::Failed(format!("kafka: assigning partitions of {topic}: {e}"))
        })
    }
}
