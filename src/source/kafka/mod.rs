//! The Kafka source: a topic's partitions, read at the offsets the job asks
//! for, with the job's checkpoint as the only truth about progress.
//!
//! The job, not Kafka, owns the offsets (SPEC §5): partitions are assigned
//! explicitly (`assign()`, never `subscribe()`), each with its start offset
//! inside the assignment, so there is no rebalance and no group-managed
//! position. Nothing is committed automatically; after each checkpoint the
//! job may publish its offsets to the consumer group (`commit_advisory`) so
//! that standard lag tools work, but a restart always resumes from the
//! checkpoint.
//!
//! # Layout
//!
//! - `settings`: [`KafkaSettings`], the `kafka` section of the configuration (loaded by `crate::config`) and
//!   `env:VAR` secrets.
//! - `client`: what every client shares (the producer too): librdkafka
//!   configurations, log routing, start-up retries, error classes.
//! - `identity`: the cluster and topic ids a checkpoint is tied to.
//! - `position`: start offsets, their checks against the log, assignment.
//! - `producer`: records written back into the topic (repaired anomalies;
//!   the tools' load generator builds on it).
//! - this file: [`KafkaSource`], the [`Source`] implementation.
//!
//! # Where a partition stands
//!
//! `state()` must never call the broker (it runs after every batch), and it
//! must never call a partition with a backlog caught up, or the watermark
//! would skip it (see `watermark`). A partition is caught up when the last
//! thing librdkafka said about it was "end of partition", no record came
//! after that, and librdkafka's position then is at least the high
//! watermark it cached from its latest fetch response (records fetched but
//! not yet polled raise that mark first). librdkafka says "end of partition"
//! when its fetch position reaches the end *as the consumer sees it under
//! its isolation level*, and its position moves past commit and abort
//! markers and aborted records, which are never handed out: comparing our
//! own next offset with the high watermark instead would never call a
//! partition whose log ends in a transaction marker caught up. A transaction
//! still open at the end keeps its partition's backlog until it commits or
//! aborts (its records may become readable). While the brokers are
//! unreachable nothing is known, so every partition reports a backlog.
//!
//! # Partitions added while running
//!
//! A live run calls [`Source::discover`] at the discovery interval: a fresh
//! metadata request; each new partition is added to the assignment at its
//! earliest offset and logged. The job caps the watermark at what it knew
//! when the discovery started (see `watermark`), so records produced to a new
//! partition after it was created are never late because it was found late.
//!
//! # Errors
//!
//! Connection problems (transport failure, all brokers down, timeouts,
//! leader changes) are [`SourceError::Unavailable`]: librdkafka reconnects by
//! itself and resumes fetching at its current position, so the job only backs
//! off and polls again; nothing is lost or read twice (records below our
//! position are dropped as a second guard). An offset that no longer exists
//! (retention deleted data the checkpoint still needs) is fatal, naming the
//! partition, the offset and the earliest offset available: jumping over the
//! gap silently would break exactly-once.

mod client;
mod fetch;
mod identity;
mod position;
pub mod producer;
mod settings;

pub(crate) use client::{
    classify, client_config, connect_topic, fetch_all_watermarks, remember_error, retry_startup,
    route_log, Attempt, ClientCtx, ErrorClass, Role,
};
pub use settings::{
    is_secret_key, redacted, IsolationLevel, KafkaSettings, StartAt, STARTUP_RETRY,
};

use std::collections::BTreeMap;
use std::ffi::CString;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use tracing::{debug, info, warn};

use super::{End, PartitionState, RecordBatch, Source, SourceError};

/// While the brokers are down, how often `poll` asks whether they are back.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// Longest wait for the metadata of one discovery round: a slow answer only
/// delays the next round (and, through the ceiling, the watermark).
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(2);

/// Where one partition stands.
#[derive(Debug, Clone)]
struct Part {
    /// Next offset to hand out.
    next: u64,
    /// Bounded run: the offset it stops at.
    end: Option<u64>,
    /// Bounded run: at its end (and paused).
    finished: bool,
    /// Paused by the job (event-time alignment).
    paused: bool,
    /// The last thing librdkafka said about the partition was "end of
    /// partition" (at the end readable under the isolation level).
    eof: bool,
    /// librdkafka's position when it said so: past any transaction
    /// markers and aborted records before that end.
    eof_position: i64,
    /// Highest high watermark fetched by us (start, recovery, discovery).
    known_high: i64,
    /// Earliest available offset when the partition was opened.
    log_start: u64,
}

impl Part {
    fn at(next: u64, known_high: i64, log_start: u64, end: Option<u64>) -> Self {
        Part {
            next,
            end,
            finished: false,
            paused: false,
            eof: false,
            eof_position: -1,
            known_high,
            log_start,
        }
    }
}

/// A Kafka topic as a [`Source`].
pub struct KafkaSource {
    /// The consumer's queue, for taking records in bulk (`fetch`); dropped
    /// before the consumer.
    queue: Option<fetch::ConsumerQueue>,
    consumer: BaseConsumer<ClientCtx>,
    settings: KafkaSettings,
    topic_c: CString,
    parts: Vec<Part>,
    /// A bounded run: partitions stop at their `end`.
    bounded: bool,
    /// Cluster and topic ids, read at `open`.
    identity: Option<String>,
    /// Set when the brokers became unreachable; cleared when data flows or a
    /// probe succeeds.
    down_since: Option<Instant>,
    last_probe: Instant,
    last_committed: Option<BTreeMap<u32, u64>>,
}

impl KafkaSource {
    /// Connects and reads the topic's partitions, waiting up to
    /// [`STARTUP_RETRY`] for unreachable brokers.
    pub fn new(settings: &KafkaSettings) -> Result<Self, SourceError> {
        Self::with_startup_timeout(settings, STARTUP_RETRY)
    }

    pub fn with_startup_timeout(
        settings: &KafkaSettings,
        give_up_after: Duration,
    ) -> Result<Self, SourceError> {
        settings.validate().map_err(|problems| {
            SourceError::Misconfigured(format!("kafka settings: {}", problems.join("; ")))
        })?;
        let consumer: BaseConsumer<ClientCtx> = client_config(settings, Role::Consumer)?
            .create_with_context(ClientCtx::default())
            .map_err(|e| {
                SourceError::Misconfigured(format!("kafka: cannot create the consumer: {e}"))
            })?;
        let last_error = || consumer.context().last_error();
        let partitions = connect_topic(consumer.client(), settings, give_up_after, &last_error)?;
        Ok(KafkaSource {
            queue: fetch::ConsumerQueue::of(consumer.client().native_ptr()),
            topic_c: CString::new(settings.topic.as_str()).map_err(|_| {
                SourceError::Misconfigured("kafka: topic name contains a NUL byte".into())
            })?,
            consumer,
            settings: settings.clone(),
            parts: vec![Part::at(0, -1, 0, None); partitions as usize],
            bounded: false,
            identity: None,
            down_since: None,
            last_probe: Instant::now(),
            last_committed: None,
        })
    }

    pub fn topic(&self) -> &str {
        &self.settings.topic
    }

    fn partitions(&self) -> u32 {
        self.parts.len() as u32
    }

    /// Consumer lag per partition: records readable after `processed` (the
    /// job's next offset to process; records it read and holds back count;
    /// a partition not in it: our read position), from the high watermark
    /// librdkafka cached with its last fetches (no network call). Caught up,
    /// the position is librdkafka's, which moves past transaction markers and
    /// aborted records too, so a log ending in a marker shows no phantom
    /// lag. The cached high watermark is as old as the partition's last
    /// fetch: a paused partition's lag can read low.
    pub fn consumer_lag(&self, processed: &BTreeMap<u32, u64>) -> Vec<(u32, i64)> {
        (0..self.partitions())
            .map(|p| {
                let part = &self.parts[p as usize];
                let high = self.high_watermark(p).unwrap_or(0);
                let next = processed.get(&p).map_or(part.next, |o| (*o).min(part.next));
                let at = if part.eof && next == part.next {
                    (next as i64).max(part.eof_position)
                } else {
                    next as i64
                };
                (p, (high - at).max(0))
            })
            .collect()
    }

    /// librdkafka's application position of one partition (no network
    /// call): the offset after the last record or transaction marker it
    /// handed over or skipped.
    fn position(&self, partition: u32) -> Option<i64> {
        let all = self.consumer.position().ok()?;
        let offset = all
            .elements()
            .iter()
            .find(|e| e.partition() == partition as i32)
            .map(|e| e.offset());
        match offset {
            Some(Offset::Offset(o)) if o >= 0 => Some(o),
            _ => None,
        }
    }

    /// The best known high watermark without a network call: librdkafka's
    /// cached value (updated by every fetch response) or ours.
    fn high_watermark(&self, partition: u32) -> Option<i64> {
        let (mut low, mut high) = (-1i64, -1i64);
        // SAFETY: the client pointer is valid for the life of `self.consumer`,
        // the topic is a NUL-terminated string that outlives the call, and
        // librdkafka only writes the two i64 out-parameters. The function only
        // reads librdkafka's cache under its own lock.
        let err = unsafe {
            rdkafka::bindings::rd_kafka_get_watermark_offsets(
                self.consumer.client().native_ptr(),
                self.topic_c.as_ptr(),
                partition as i32,
                &mut low,
                &mut high,
            )
        };
        let cached = if RDKafkaErrorCode::from(err) == RDKafkaErrorCode::NoError && high >= 0 {
            high
        } else {
            -1
        };
        let best = cached.max(
            self.parts
                .get(partition as usize)
                .map_or(-1, |p| p.known_high),
        );
        (best >= 0).then_some(best)
    }

    fn timeout(&self) -> Duration {
        self.settings.metadata_timeout.0
    }

    fn mark_down(&mut self, error: &str) {
        if self.down_since.is_none() {
            self.down_since = Some(Instant::now());
            self.last_probe = Instant::now();
            warn!(
                brokers = %self.settings.brokers,
                topic = %self.settings.topic,
                error,
                "Kafka broker unavailable; librdkafka keeps reconnecting and resumes at the current position"
            );
        }
    }

    fn mark_up(&mut self) {
        if let Some(since) = self.down_since.take() {
            info!(
                brokers = %self.settings.brokers,
                topic = %self.settings.topic,
                down_for = ?since.elapsed(),
                "Kafka broker reachable again"
            );
        }
    }

    /// While down: asks the brokers for every high watermark (at most once a
    /// second). Success means they are back, with fresh marks for `state()`.
    fn probe(&mut self) -> bool {
        if self.last_probe.elapsed() < PROBE_EVERY {
            return false;
        }
        self.last_probe = Instant::now();
        let timeout = self.timeout().min(Duration::from_secs(1));
        match fetch_all_watermarks(
            self.consumer.client(),
            &self.settings.topic,
            self.partitions(),
            timeout,
        ) {
            Ok(marks) => {
                for (part, (_, high)) in self.parts.iter_mut().zip(marks) {
                    part.known_high = part.known_high.max(high);
                }
                self.mark_up();
                true
            }
            Err(e) => {
                debug!(error = %e, "Kafka broker still unavailable");
                false
            }
        }
    }

    /// Bounded run: stop fetching a partition that reached its end.
    fn finish(&mut self, partition: u32) {
        let Some(part) = self.parts.get_mut(partition as usize) else {
            return;
        };
        if part.finished {
            return;
        }
        part.finished = true;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.settings.topic, partition as i32);
        if let Err(e) = self.consumer.pause(&tpl) {
            debug!(partition, error = %e, "could not pause a finished partition");
        }
    }
}

impl KafkaSource {
    /// librdkafka reached the end of partition `p` readable under the
    /// isolation level: note where its position is (past any transaction
    /// markers), and finish the partition in a bounded run.
    fn on_end_of_partition(&mut self, p: i32) {
        let position = u32::try_from(p).ok().and_then(|p| self.position(p));
        let bounded = self.bounded;
        let Some(part) = usize::try_from(p).ok().and_then(|p| self.parts.get_mut(p)) else {
            return;
        };
        part.eof = true;
        part.eof_position = position.unwrap_or(part.next as i64).max(part.next as i64);
        if bounded {
            // Everything readable before the current end has been
            // delivered, and the current end is past ours.
            self.finish(p as u32);
        }
    }

    /// A consumer error: `Ok` with its text when it is transient (the broker
    /// connection: librdkafka recovers on its own), else the fatal error.
    fn consumption_error(&self, code: RDKafkaErrorCode) -> Result<String, SourceError> {
        match classify(code) {
            ErrorClass::Transient => {
                debug!(error = %code, "Kafka consumer error (transient)");
                Ok(code.to_string())
            }
            ErrorClass::OutOfRange => Err(self.out_of_range_error(&code.to_string())),
            ErrorClass::Fatal => {
                // The error callback saw the same event, with librdkafka's
                // detailed reason.
                let detail = self
                    .consumer
                    .context()
                    .last_error()
                    .unwrap_or_else(|| code.to_string());
                Err(SourceError::Failed(format!(
                    "kafka topic {} on {}: consumer error: {detail}",
                    self.settings.topic, self.settings.brokers
                )))
            }
        }
    }
}

impl Source for KafkaSource {
    fn log_start(&self, partition: u32) -> u64 {
        self.parts
            .get(partition as usize)
            .map_or(0, |p| p.log_start)
    }

    fn lag(&self, processed: &BTreeMap<u32, u64>) -> Vec<(u32, i64)> {
        self.consumer_lag(processed)
    }

    fn id(&self) -> String {
        format!("kafka:{}", self.settings.topic)
    }

    fn identity(&self) -> Option<String> {
        self.identity.clone()
    }

    fn source_name(&self, _partition: u32) -> &str {
        &self.settings.topic
    }

    fn partition_count(&self) -> usize {
        self.parts.len()
    }

    fn open(
        &mut self,
        resume: &BTreeMap<u32, u64>,
        end: End<'_>,
    ) -> Result<BTreeMap<u32, u64>, SourceError> {
        let topic = self.settings.topic.clone();
        if let Some((p, _)) = resume.iter().find(|(p, _)| **p >= self.partitions()) {
            return Err(SourceError::DataLost(format!(
                "kafka topic {topic} has {} partitions but the checkpoint has offsets for partition {p}; \
                 partitions cannot be removed, so the topic was recreated. Use a fresh state directory",
                self.partitions()
            )));
        }
        let watermarks = self.watermarks_at_start()?;
        let starts = self.start_offsets(resume, &watermarks)?;
        self.drain_stale_events();
        let paused: Vec<u32> = (0..self.partitions())
            .filter(|p| self.parts[*p as usize].paused)
            .collect();
        for p in paused {
            self.set_paused(p, false);
        }
        self.assign(&starts, false)?;

        self.bounded = !matches!(end, End::Never);
        self.parts = (0..self.partitions())
            .map(|p| {
                let (low, high) = watermarks[p as usize];
                let next = starts[&p];
                let end = match end {
                    End::Never => None,
                    End::Now => Some(high.max(0) as u64),
                    End::At(ends) => Some(ends.get(&p).copied().unwrap_or(next)),
                };
                Part::at(next, high, low.max(0) as u64, end)
            })
            .collect();
        self.down_since = None;
        for p in 0..self.partitions() {
            let part = &self.parts[p as usize];
            if part.end.is_some_and(|end| part.next >= end) {
                self.finish(p);
            }
        }
        self.identity = identity::describe(self.consumer.client(), &topic, self.timeout());
        let end_offsets = self.end_offsets();
        info!(
            brokers = %self.settings.brokers,
            topic = %topic,
            identity = self.identity.as_deref().unwrap_or("unknown"),
            group = %self.settings.group_id,
            partitions = self.partitions(),
            isolation_level = self.settings.isolation_level.as_property(),
            start_offsets = ?starts,
            from_checkpoint = !resume.is_empty(),
            start = %self.settings.start,
            bounded_end_offsets = ?end_offsets,
            properties = ?redacted(&self.settings.properties),
            "Kafka source started"
        );
        Ok(starts)
    }

    fn end_offsets(&self) -> Option<BTreeMap<u32, u64>> {
        crate::source::bounded_end_offsets(self.bounded, self.parts.iter().map(|part| part.end))
    }

    fn poll(
        &mut self,
        batch: &mut RecordBatch,
        max: usize,
        timeout: Duration,
    ) -> Result<(), SourceError> {
        if self.bounded && self.parts.iter().all(|p| p.finished) {
            return Ok(());
        }
        let deadline = Instant::now() + timeout;
        let before = batch.len();
        let mut transient: Option<String> = None;
        while batch.len() < max {
            // Wait only while nothing has arrived; then take what is queued.
            let wait = if batch.len() == before && transient.is_none() {
                deadline.saturating_duration_since(Instant::now())
            } else {
                Duration::ZERO
            };
            let Some(result) = self.consumer.poll(wait) else {
                // Nothing (or only an internal event such as a commit result).
                if wait.is_zero() || Instant::now() >= deadline {
                    break;
                }
                continue;
            };
            match result {
                Ok(message) => {
                    let record = fetch::Fetched {
                        partition: message.partition(),
                        offset: message.offset(),
                        timestamp_ms: message.timestamp().to_millis(),
                        payload: message.payload().unwrap_or(&[]),
                    };
                    let taken = fetch::take(&mut self.parts, &self.settings.topic, &record, batch)?;
                    drop(message);
                    if let fetch::Taken::AtEnd(p) = taken {
                        self.finish(p);
                    }
                    // Then what else is queued, in bulk.
                    self.take_queued(batch, max, &mut transient)?;
                }
                Err(KafkaError::PartitionEOF(p)) => self.on_end_of_partition(p),
                Err(KafkaError::MessageConsumption(code)) => {
                    transient = Some(self.consumption_error(code)?);
                }
                Err(e) => {
                    return Err(SourceError::Failed(format!(
                        "kafka topic {} on {}: {e}",
                        self.settings.topic, self.settings.brokers
                    )));
                }
            }
        }
        let got = batch.len() > before;
        if let Some(error) = transient {
            self.mark_down(&error);
            if !got {
                return Err(SourceError::Unavailable(format!(
                    "kafka brokers {} unavailable: {error}",
                    self.settings.brokers
                )));
            }
            return Ok(());
        }
        if got {
            self.mark_up();
        } else if self.down_since.is_some() && !self.probe() {
            return Err(SourceError::Unavailable(format!(
                "kafka brokers {} still unavailable",
                self.settings.brokers
            )));
        }
        Ok(())
    }

    fn state(&self, partition: u32) -> PartitionState {
        let Some(part) = self.parts.get(partition as usize) else {
            return PartitionState::Finished;
        };
        if self.bounded && part.finished {
            return PartitionState::Finished;
        }
        // Unknown is a backlog: while the brokers are away, or while the
        // partition is paused (librdkafka stops fetching it).
        if self.down_since.is_some() || part.paused || !part.eof {
            return PartitionState::Backlog;
        }
        match self.high_watermark(partition) {
            Some(high) if part.eof_position >= high => PartitionState::CaughtUp,
            _ => PartitionState::Backlog,
        }
    }

    /// librdkafka drops what it had fetched for a paused partition and
    /// fetches again from the position after the last record returned when
    /// it is resumed: nothing is lost or repeated.
    fn set_paused(&mut self, partition: u32, paused: bool) {
        let Some(part) = self.parts.get_mut(partition as usize) else {
            return;
        };
        if part.paused == paused {
            return;
        }
        part.paused = paused;
        if part.finished {
            // Bounded and at its end: stays paused.
            return;
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.settings.topic, partition as i32);
        let result = if paused {
            self.consumer.pause(&tpl)
        } else {
            self.consumer.resume(&tpl)
        };
        if let Err(e) = result {
            // Not pausing only costs memory: the job holds what arrives.
            debug!(partition, paused, error = %e, "could not pause/resume a partition");
        }
    }

    fn commit_advisory(&mut self, next_offsets: &BTreeMap<u32, u64>) {
        if !self.settings.commit_offsets || self.last_committed.as_ref() == Some(next_offsets) {
            return;
        }
        let mut tpl = TopicPartitionList::with_capacity(next_offsets.len());
        for (p, o) in next_offsets {
            if let Err(e) =
                tpl.add_partition_offset(&self.settings.topic, *p as i32, Offset::Offset(*o as i64))
            {
                debug!(error = %e, "advisory commit: bad offset");
                return;
            }
        }
        match self.consumer.commit(&tpl, CommitMode::Async) {
            Ok(()) => {
                self.last_committed = Some(next_offsets.clone());
            }
            Err(e) => {
                debug!(error = %e, "advisory offset commit not sent; the checkpoint stays the truth")
            }
        }
    }

    fn discovery_interval(&self) -> Option<Duration> {
        let interval = self.settings.partition_discovery_interval.0;
        (!self.bounded && !interval.is_zero()).then_some(interval)
    }

    fn known_end(&self, partition: u32) -> Option<u64> {
        // librdkafka's cached high watermark comes with the fetch responses,
        // so it can only be behind the broker's: a safe lower bound.
        self.high_watermark(partition).map(|h| h.max(0) as u64)
    }

    fn discover(&mut self) -> Result<usize, SourceError> {
        let topic = self.settings.topic.clone();
        let metadata = self
            .consumer
            .fetch_metadata(Some(&topic), DISCOVERY_TIMEOUT)
            .map_err(|e| SourceError::Unavailable(format!("kafka: partition discovery: {e}")))?;
        let count = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none())
            .map_or(0, |t| t.partitions().len() as u32);
        if count <= self.partitions() {
            return Ok(self.parts.len());
        }
        let mut added = BTreeMap::new();
        for p in self.partitions()..count {
            let (low, high) = self
                .consumer
                .fetch_watermarks(&topic, p as i32, DISCOVERY_TIMEOUT)
                .map_err(|e| {
                    SourceError::Unavailable(format!("kafka: watermarks of new partition {p}: {e}"))
                })?;
            added.insert(p, (low.max(0) as u64, high));
        }
        let offsets: BTreeMap<u32, u64> = added.iter().map(|(p, (low, _))| (*p, *low)).collect();
        self.assign(&offsets, true)?;
        for (p, (low, high)) in added {
            info!(topic = %topic, partition = p, from_offset = low, high_watermark = high, "partition discovered; reading it from its earliest offset");
            self.parts.push(Part::at(low, high, low, None));
        }
        Ok(self.parts.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::setting::Dur;
    use rdkafka::ClientConfig;

    /// Polls until `done` or the deadline, collecting records; transient
    /// errors are counted, fatal ones fail the test.
    fn poll_until(
        src: &mut KafkaSource,
        seen: &mut Vec<(u32, u64, Vec<u8>)>,
        mut done: impl FnMut(&KafkaSource, &[(u32, u64, Vec<u8>)], usize) -> bool,
    ) -> usize {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut transients = 0;
        let mut batch = RecordBatch::default();
        while !done(src, seen, transients) {
            assert!(Instant::now() < deadline, "timed out; read {}", seen.len());
            batch.clear();
            match src.poll(&mut batch, 64, Duration::from_millis(100)) {
                Ok(()) => seen.extend(
                    batch
                        .iter()
                        .map(|(m, p)| (m.partition, m.offset, p.to_vec())),
                ),
                Err(e) if e.is_transient() => transients += 1,
                Err(e) => panic!("fatal: {e}"),
            }
        }
        transients
    }

    #[test]
    fn a_broker_outage_is_transient_and_reading_resumes_without_loss_or_duplicates() {
        use rdkafka::mocking::MockCluster;
        use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("outage", 2, 1).unwrap();
        let brokers = cluster.bootstrap_servers();
        let produce = |from: u64, n: u64| {
            let producer: BaseProducer = ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .create()
                .unwrap();
            for i in from..from + n {
                let payload = format!("r{i}");
                producer
                    .send(
                        BaseRecord::<(), _>::to("outage")
                            .partition((i % 2) as i32)
                            .payload(&payload),
                    )
                    .unwrap();
            }
            producer.flush(Duration::from_secs(10)).unwrap();
        };
        produce(0, 100);
        let settings = KafkaSettings {
            brokers: brokers.clone(),
            topic: "outage".into(),
            ..Default::default()
        };
        let mut src =
            KafkaSource::with_startup_timeout(&settings, Duration::from_secs(10)).unwrap();
        src.start(&BTreeMap::new(), false).unwrap();
        let all_caught_up =
            |s: &KafkaSource| (0..2).all(|p| s.state(p) == PartitionState::CaughtUp);
        let mut seen = Vec::new();
        poll_until(&mut src, &mut seen, |s, _, _| all_caught_up(s));
        assert_eq!(seen.len(), 100);

        cluster.broker_down(1).unwrap();
        poll_until(&mut src, &mut seen, |_, _, transients| transients > 0);
        // Nothing is known while the broker is away: no partition is idle.
        assert_eq!(src.state(0), PartitionState::Backlog);
        assert_eq!(src.state(1), PartitionState::Backlog);

        cluster.broker_up(1).unwrap();
        produce(100, 100);
        poll_until(&mut src, &mut seen, |s, seen, _| {
            seen.len() >= 200 && all_caught_up(s)
        });
        seen.sort();
        let want: Vec<(u32, u64, Vec<u8>)> = (0..200u64)
            .map(|i| ((i % 2) as u32, i / 2, format!("r{i}").into_bytes()))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        assert_eq!(seen, want);
    }

    #[test]
    fn unreachable_brokers_give_up_with_a_clear_message() {
        let s = KafkaSettings {
            // Nothing listens on port 1.
            brokers: "127.0.0.1:1".into(),
            metadata_timeout: Dur(Duration::from_millis(500)),
            ..Default::default()
        };
        let started = Instant::now();
        let err = KafkaSource::with_startup_timeout(&s, Duration::from_secs(2))
            .err()
            .unwrap();
        assert!(!err.is_transient());
        let text = err.to_string();
        assert!(
            text.contains("cannot reach the brokers 127.0.0.1:1"),
            "{text}"
        );
        assert!(text.contains("scripts/stack.sh up"), "{text}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
