//! Membership of the Kafka consumer group: which partitions this instance
//! owns, as the group's cooperative assignment decides.
//!
//! The membership consumer subscribes to the topic with `group.id` and the
//! `cooperative-sticky` assignor, and reads no records: every partition it
//! is given is paused at once, since each owned partition is read by a job
//! of its own (`owned`). Its rebalance callbacks only note what changed;
//! the runner starts and stops the partition jobs after each poll.

use std::sync::Mutex;
use std::time::Duration;

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tracing::{debug, info, warn};

use crate::source::kafka::{client_config, route_log, KafkaSettings, Role};
use crate::source::SourceError;

/// A change of this instance's assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Assigned(Vec<u32>),
    Revoked(Vec<u32>),
}

/// Notes the rebalances librdkafka reports (it applies them itself:
/// incremental assign and unassign for the cooperative protocol).
#[derive(Default)]
pub struct GroupCtx {
    changes: Mutex<Vec<Change>>,
}

fn partitions(tpl: &TopicPartitionList) -> Vec<u32> {
    let mut ps: Vec<u32> = tpl
        .elements()
        .iter()
        .filter_map(|e| u32::try_from(e.partition()).ok())
        .collect();
    ps.sort_unstable();
    ps
}

impl ClientContext for GroupCtx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        route_log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        debug!(%error, reason, "Kafka group consumer error (librdkafka retries)");
    }
}

impl ConsumerContext for GroupCtx {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let ps = partitions(tpl);
            if !ps.is_empty() {
                self.changes.lock().unwrap().push(Change::Revoked(ps));
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                // The membership consumer reads nothing itself.
                if let Err(e) = consumer.pause(tpl) {
                    debug!(error = %e, "could not pause the membership consumer's partitions");
                }
                let ps = partitions(tpl);
                if !ps.is_empty() {
                    self.changes.lock().unwrap().push(Change::Assigned(ps));
                }
            }
            Rebalance::Error(e) => {
                warn!(error = %e, "consumer group rebalance failed; librdkafka retries")
            }
            Rebalance::Revoke(_) => {}
        }
    }
}

/// This instance's membership of the group.
pub struct Membership {
    consumer: BaseConsumer<GroupCtx>,
    topic: String,
}

impl Membership {
    /// Joins the group `settings.group_id` on `settings.topic`.
    pub fn join(settings: &KafkaSettings) -> Result<Self, SourceError> {
        let mut config = client_config(settings, Role::Consumer)?;
        config.set("partition.assignment.strategy", "cooperative-sticky");
        // It reads no records; where it would start does not matter.
        config.set("auto.offset.reset", "latest");
        config.set("enable.partition.eof", "false");
        // Partitions added to the topic are assigned after the members see
        // them in their metadata: at `partition_discovery_interval`, as a
        // single job discovers them, instead of librdkafka's 5 minutes
        // (unless kafka.properties sets the refresh itself).
        let discovery = settings.partition_discovery_interval.0;
        if !discovery.is_zero() && config.get("topic.metadata.refresh.interval.ms").is_none() {
            config.set(
                "topic.metadata.refresh.interval.ms",
                discovery.as_millis().max(1).to_string(),
            );
        }
        let consumer: BaseConsumer<GroupCtx> = config
            .create_with_context(GroupCtx::default())
            .map_err(|e| {
                SourceError::Misconfigured(format!("kafka: cannot create the group consumer: {e}"))
            })?;
        consumer.subscribe(&[&settings.topic]).map_err(|e| {
            SourceError::Misconfigured(format!(
                "kafka: cannot subscribe to {}: {e}",
                settings.topic
            ))
        })?;
        info!(group = %settings.group_id, topic = %settings.topic, "joining the consumer group");
        Ok(Membership {
            consumer,
            topic: settings.topic.clone(),
        })
    }

    /// Serves the group (heartbeats, rebalances) for up to `timeout` and
    /// returns the assignment changes since the last call, oldest first.
    pub fn poll(&self, timeout: Duration) -> Vec<Change> {
        // Records of a partition fetched before it was paused are dropped.
        if let Some(Err(e)) = self.consumer.poll(timeout) {
            debug!(error = %e, "group consumer poll");
        }
        std::mem::take(&mut *self.consumer.context().changes.lock().unwrap())
    }

    /// Commits the partitions' next offsets (as of their jobs' durable
    /// checkpoints) to the group, asynchronously: advisory, for lag tools
    /// (`kafka-consumer-groups.sh --describe`); the checkpoints stay the
    /// truth. A failure is logged at debug level and the next call retries.
    pub fn commit(&self, next_offsets: &std::collections::BTreeMap<u32, u64>) {
        if next_offsets.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::with_capacity(next_offsets.len());
        for (p, o) in next_offsets {
            let (Ok(p), Ok(o)) = (i32::try_from(*p), i64::try_from(*o)) else {
                continue;
            };
            if let Err(e) = tpl.add_partition_offset(&self.topic, p, Offset::Offset(o)) {
                debug!(error = %e, "group offset commit: bad offset");
                return;
            }
        }
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
            debug!(error = %e, "group offset commit not sent; the checkpoints stay the truth");
        }
    }

    /// Leaves the group, so the others take the partitions at once instead
    /// of after the session timeout.
    pub fn leave(self) {
        self.consumer.unsubscribe();
        // Serve the revocation this causes.
        let _ = self.consumer.poll(Duration::from_millis(100));
    }
}
