//! Writing records into the topic, each to the partition chosen by the
//! caller: how repaired anomalies re-enter the stream (`streamforge
//! anomalies replay`), and the primitive the load generator of the tools
//! crate builds on.
//!
//! Every record goes to an explicit partition, never to librdkafka's
//! partitioner (which differs from Kafka's Java one): line `i` of file `p`
//! goes to partition `p`, so with a fresh topic offset `i` of partition `p`
//! holds line `i`. Records are keyed by their `user_id`. The producer is
//! idempotent (`enable.idempotence`, `acks=all`), so retries after a broker
//! hiccup neither duplicate nor reorder records within a partition. A full
//! local queue is waited out, never dropped; at the end everything is
//! flushed, and any record the broker did not take is an error.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Message};
use serde::Deserialize;
use serde_json::value::RawValue;
use tracing::{info, warn};

use super::{
    classify, client_config, connect_topic, fetch_all_watermarks, remember_error, retry_startup,
    route_log, Attempt, ErrorClass, KafkaSettings, Role, STARTUP_RETRY,
};

/// What a producing run did.
#[derive(Debug, Clone, Default)]
pub struct ProduceReport {
    /// Records the broker acknowledged.
    pub produced: u64,
    pub per_partition: BTreeMap<u32, u64>,
    pub elapsed: Duration,
}

/// Lines taken from one file before moving to the next, so that replayed
/// partitions advance together as a live topic would.
const FILE_CHUNK: u32 = 64;

/// Delivery reports, counted on the producing thread (`poll` runs them).
#[derive(Default)]
struct ProduceCtx {
    last_error: Mutex<Option<String>>,
    /// A connection error since the last acknowledged record.
    broker_down: AtomicBool,
    delivered: Mutex<BTreeMap<u32, u64>>,
    failed: Mutex<(u64, Option<String>)>,
}

impl ProduceCtx {
    fn delivered_total(&self) -> u64 {
        self.delivered.lock().map(|d| d.values().sum()).unwrap_or(0)
    }

    fn failures(&self) -> (u64, Option<String>) {
        self.failed
            .lock()
            .map(|f| f.clone())
            .unwrap_or((1, Some("lock poisoned".into())))
    }
}

impl ClientContext for ProduceCtx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        route_log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if error
            .rdkafka_error_code()
            .is_some_and(|code| classify(code) == ErrorClass::Transient)
        {
            self.broker_down.store(true, Ordering::Relaxed);
        }
        remember_error(&self.last_error, &error, reason);
    }
}

impl ProducerContext for ProduceCtx {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _opaque: ()) {
        match result {
            Ok(message) => {
                self.broker_down.store(false, Ordering::Relaxed);
                if let Ok(mut d) = self.delivered.lock() {
                    *d.entry(message.partition() as u32).or_default() += 1;
                }
            }
            Err((error, message)) => {
                if let Ok(mut f) = self.failed.lock() {
                    f.0 += 1;
                    if f.1.is_none() {
                        f.1 = Some(format!("partition {}: {error}", message.partition()));
                    }
                }
            }
        }
    }
}

/// The user id of an order event as record key: a string's text, an
/// integer's decimal digits; `false` (no key) for anything else.
pub fn user_key(payload: &[u8], out: &mut Vec<u8>) -> bool {
    #[derive(Deserialize)]
    struct Probe<'a> {
        #[serde(borrow, default)]
        user_id: Option<&'a RawValue>,
    }
    out.clear();
    // A derived struct also accepts a JSON array (fields by position).
    if payload.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return false;
    }
    let Ok(Probe { user_id: Some(raw) }) = serde_json::from_slice::<Probe>(payload) else {
        return false;
    };
    let text = raw.get();
    if text.starts_with('"') {
        match serde_json::from_str::<Cow<'_, str>>(text) {
            Ok(s) => out.extend_from_slice(s.as_bytes()),
            Err(_) => return false,
        }
    } else {
        let digits = text.strip_prefix('-').unwrap_or(text);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
        out.extend_from_slice(text.as_bytes());
    }
    true
}

/// Files read round-robin in chunks, one partition per file, one record per
/// line (the file source's layout, SPEC §7).
pub struct FileFeed {
    readers: Vec<(PathBuf, Option<BufReader<File>>)>,
    cursor: usize,
    taken: u32,
}

impl FileFeed {
    /// Opens `inputs` (a directory or files, as the file source reads them).
    pub fn open(inputs: &[PathBuf]) -> anyhow::Result<Self> {
        let files =
            crate::source::file::resolve_paths(inputs).map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut readers = Vec::with_capacity(files.len());
        for path in files {
            let file =
                File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
            readers.push((path, Some(BufReader::with_capacity(1 << 20, file))));
        }
        Ok(FileFeed {
            readers,
            cursor: 0,
            taken: 0,
        })
    }

    /// How many files, so partitions, the feed writes to.
    pub fn partitions(&self) -> usize {
        self.readers.len()
    }

    /// The files, in partition order.
    pub fn paths(&self) -> Vec<String> {
        self.readers
            .iter()
            .map(|(p, _)| p.display().to_string())
            .collect()
    }

    /// Writes the next line into `buf` (without its `\n`) and returns its
    /// partition; `None` at the end of every file.
    pub fn next_record(&mut self, buf: &mut Vec<u8>) -> anyhow::Result<Option<u32>> {
        buf.clear();
        let (readers, cursor, taken) = (&mut self.readers, &mut self.cursor, &mut self.taken);

        for _ in 0..=readers.len() {
            let p = *cursor;
            let (path, reader) = &mut readers[p];
            if let Some(r) = reader.as_mut() {
                let n = r
                    .read_until(b'\n', buf)
                    .with_context(|| format!("reading {}", path.display()))?;
                if n > 0 && buf.last() != Some(&b'\n') {
                    // Exactly as a bounded file source: a last line without
                    // its newline is not whole yet, and is not sent.
                    tracing::warn!(
                        file = %path.display(),
                        bytes = buf.len(),
                        "the file ends with a line not whole yet (no newline after its last bytes): \
                         not sent, as the file source leaves it out too. If the file is complete, \
                         end it with a newline before producing it"
                    );
                    buf.clear();
                } else if n > 0 {
                    // Exactly as the file source: only the '\n' goes.
                    buf.pop();
                    *taken += 1;
                    if *taken >= FILE_CHUNK {
                        *taken = 0;
                        *cursor = (*cursor + 1) % readers.len();
                    }
                    return Ok(Some(p as u32));
                }
                *reader = None;
            }
            *taken = 0;
            *cursor = (*cursor + 1) % readers.len();
        }
        Ok(None)
    }
}

/// Says once per outage that the broker is away, and when it is back.
struct BrokerHealth {
    last_check: Instant,
    down_since: Option<Instant>,
}

impl BrokerHealth {
    fn check(&mut self, producer: &BaseProducer<ProduceCtx>, brokers: &str) {
        if self.last_check.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.last_check = Instant::now();
        let ctx = producer.context();
        let down = ctx.broker_down.load(Ordering::Relaxed);
        match (down, self.down_since) {
            (true, None) => {
                self.down_since = Some(Instant::now());
                warn!(
                    brokers,
                    error = ctx.last_error.lock().ok().and_then(|e| e.clone()).unwrap_or_default(),
                    "Kafka broker unavailable; records wait in the producer queue and are retried, none is dropped"
                );
            }
            (false, Some(since)) => {
                self.down_since = None;
                info!(brokers, down_for = ?since.elapsed(), "Kafka broker reachable again");
            }
            _ => {}
        }
    }
}

/// An idempotent producer to one topic, records to explicit partitions.
pub struct RecordProducer {
    producer: BaseProducer<ProduceCtx>,
    topic: String,
    brokers: String,
    partitions: u32,
    health: BrokerHealth,
    key: Vec<u8>,
    /// Stamp records with their event time (`Some`: the last valid one of
    /// each partition) instead of the time they are sent.
    stamps: Option<Vec<Option<i64>>>,
    sent: u64,
    started: Instant,
    metadata_timeout: Duration,
}

impl RecordProducer {
    /// Connects (waiting for unreachable brokers up to [`STARTUP_RETRY`])
    /// and reads the topic's partition count. With `event_timestamps`,
    /// each record is stamped with its event time when it has a valid one
    /// (else the previous one of its partition), so the broker's time index
    /// is in event time.
    pub fn connect(settings: &KafkaSettings, event_timestamps: bool) -> anyhow::Result<Self> {
        settings.validate().map_err(|problems| {
            anyhow::anyhow!(
                "Kafka settings are invalid:\n  - {}",
                problems.join("\n  - ")
            )
        })?;
        let config = client_config(settings, Role::Producer).map_err(|e| anyhow::anyhow!("{e}"))?;
        let producer: BaseProducer<ProduceCtx> = config
            .create_with_context(ProduceCtx::default())
            .context("cannot create the Kafka producer")?;
        let last_error = || {
            producer
                .context()
                .last_error
                .lock()
                .ok()
                .and_then(|e| e.clone())
        };
        let partitions = connect_topic(producer.client(), settings, STARTUP_RETRY, &last_error)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(RecordProducer {
            producer,
            topic: settings.topic.clone(),
            brokers: settings.brokers.clone(),
            partitions,
            health: BrokerHealth {
                last_check: Instant::now(),
                down_since: None,
            },
            key: Vec::with_capacity(64),
            stamps: event_timestamps.then(Vec::new),
            sent: 0,
            started: Instant::now(),
            metadata_timeout: settings.metadata_timeout.0,
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// Every partition's low and high watermark.
    pub fn watermarks(&self) -> anyhow::Result<Vec<(i64, i64)>> {
        let last_error = || {
            self.producer
                .context()
                .last_error
                .lock()
                .ok()
                .and_then(|e| e.clone())
        };
        retry_startup(
            "reading watermarks",
            &self.brokers,
            STARTUP_RETRY,
            &last_error,
            || {
                fetch_all_watermarks(
                    self.producer.client(),
                    &self.topic,
                    self.partitions,
                    self.metadata_timeout,
                )
                .map_err(|e| Attempt::Retry(e.to_string()))
            },
        )
        .map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// Sends one record to `partition`, keyed by its user id. A full local
    /// queue is waited out; `Ok(false)` when `stop` was set meanwhile (the
    /// record was not sent).
    pub fn send(
        &mut self,
        partition: u32,
        payload: &[u8],
        stop: &AtomicBool,
    ) -> anyhow::Result<bool> {
        let keyed = user_key(payload, &mut self.key);
        let mut record = BaseRecord::to(&self.topic)
            .partition(partition as i32)
            .payload(payload);
        if keyed {
            record = record.key(self.key.as_slice());
        }
        if let Some(stamps) = &mut self.stamps {
            let slot = partition as usize;
            if stamps.len() <= slot {
                stamps.resize(slot + 1, None);
            }
            if let Ok(event) = crate::event::parse_event(payload) {
                stamps[slot] = Some(event.event_time_ms);
            }
            if let Some(t) = stamps[slot] {
                record = record.timestamp(t);
            }
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    // librdkafka's queue is full: let it drain, never drop.
                    self.producer.poll(Duration::from_millis(20));
                    self.health.check(&self.producer, &self.brokers);
                    if stop.load(Ordering::Relaxed) {
                        return Ok(false);
                    }
                    record = back;
                }
                Err((e, _)) => {
                    self.flush_quietly();
                    bail!(
                        "cannot produce to {} partition {partition}: {e}",
                        self.topic
                    );
                }
            }
        }
        self.sent += 1;
        if self.sent.is_multiple_of(1024) {
            self.producer.poll(Duration::ZERO);
            let (failed, first) = self.producer.context().failures();
            if failed > 0 {
                self.flush_quietly();
                bail!(
                    "{failed} records were not delivered to {} (first: {}); stopping",
                    self.topic,
                    first.unwrap_or_default()
                );
            }
        }
        self.health.check(&self.producer, &self.brokers);
        Ok(true)
    }

    /// Serves delivery reports without waiting.
    pub fn poll(&self) {
        self.producer.poll(Duration::ZERO);
    }

    /// Records sent, acknowledged, and still queued.
    pub fn progress(&self) -> (u64, u64, i32) {
        (
            self.sent,
            self.producer.context().delivered_total(),
            self.producer.in_flight_count(),
        )
    }

    /// Flushes and checks that the broker acknowledged every record sent.
    pub fn finish(self) -> anyhow::Result<ProduceReport> {
        // The broker may be away for a while: wait as long as librdkafka
        // keeps retrying a message (message.timeout.ms, 5 min by default).
        let flush = self.producer.flush(Duration::from_secs(330));
        self.producer.poll(Duration::ZERO);
        let (failed, first) = self.producer.context().failures();
        let per_partition = self
            .producer
            .context()
            .delivered
            .lock()
            .map(|d| d.clone())
            .unwrap_or_default();
        let produced: u64 = per_partition.values().sum();
        let (sent, topic) = (self.sent, &self.topic);
        if failed > 0 {
            bail!(
                "{failed} of {sent} records were not delivered to {topic} (first: {})",
                first.unwrap_or_default()
            );
        }
        if let Err(e) = flush {
            bail!(
                "{} of {sent} records still unacknowledged by {} after waiting: {e}",
                sent - produced,
                self.brokers
            );
        }
        if produced != sent {
            bail!(
                "{sent} records sent but {produced} acknowledged by {}",
                self.brokers
            );
        }
        let elapsed = self.started.elapsed();
        info!(
            topic = %topic,
            produced,
            per_partition = ?per_partition,
            elapsed = ?elapsed,
            rate = format!("{:.0}/s", produced as f64 / elapsed.as_secs_f64().max(1e-9)),
            "produce finished"
        );
        Ok(ProduceReport {
            produced,
            per_partition,
            elapsed,
        })
    }

    /// Before bailing out: gives what was sent a short chance to land
    /// (dropping the producer purges its queue).
    fn flush_quietly(&self) {
        let _ = self.producer.flush(Duration::from_secs(10));
    }
}

/// Produces every line of `inputs` (a directory or files, one per
/// partition) to the topic: line `i` of file `p` to partition `p`.
pub fn produce_files(
    settings: &KafkaSettings,
    inputs: &[PathBuf],
    event_timestamps: bool,
    stop: &AtomicBool,
) -> anyhow::Result<ProduceReport> {
    let mut producer = RecordProducer::connect(settings, event_timestamps)?;
    let mut feed = FileFeed::open(inputs)?;
    check_fits(&feed, &producer)?;
    info!(topic = producer.topic(), files = ?feed.paths(), "producing: line i of file p to partition p");
    let mut payload = Vec::with_capacity(512);
    while !stop.load(Ordering::Relaxed) {
        let Some(partition) = feed.next_record(&mut payload)? else {
            break;
        };
        if !producer.send(partition, &payload, stop)? {
            break;
        }
    }
    producer.finish()
}

/// One file per partition: there must be a partition for every file.
pub fn check_fits(feed: &FileFeed, producer: &RecordProducer) -> anyhow::Result<()> {
    let (files, partitions) = (feed.partitions(), producer.partitions());
    if files > partitions as usize {
        bail!(
            "{files} files were given but topic {} has only {partitions} partitions (one file per \
             partition); create a topic with at least {files} partitions (scripts/stack.sh topic NAME {files})",
            producer.topic()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(payload: &str) -> Option<String> {
        let mut out = Vec::new();
        user_key(payload.as_bytes(), &mut out).then(|| String::from_utf8(out).unwrap())
    }

    #[test]
    fn the_key_is_the_user_id() {
        assert_eq!(
            key(r#"{"event_id":"e","user_id":"u42","amount":1}"#).as_deref(),
            Some("u42")
        );
        assert_eq!(key(r#"{"user_id":"a\"b\u00e9"}"#).as_deref(), Some("a\"bé"));
        assert_eq!(key(r#"{"user_id":12345}"#).as_deref(), Some("12345"));
        assert_eq!(key(r#"{"user_id":-7}"#).as_deref(), Some("-7"));
        assert_eq!(key(r#"{"user_id":1.5}"#), None);
        assert_eq!(key(r#"{"user_id":null}"#), None);
        assert_eq!(key(r#"{"order_id":"o"}"#), None);
        assert_eq!(key(r#"{"user_id":"u1","amou"#), None);
        assert_eq!(key(r#"["u1"]"#), None);
        assert_eq!(key(""), None);
    }

    #[test]
    fn files_feed_round_robin_in_chunks_keeping_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        let mut text = String::new();
        for i in 0..70 {
            text.push_str(&format!("a{i}\n"));
        }
        text.push_str("\r\n\nlast");
        std::fs::write(&a, &text).unwrap();
        std::fs::write(&b, "b0\n").unwrap();
        let mut feed = FileFeed::open(&[a.clone(), b.clone()]).unwrap();
        let mut buf = Vec::new();
        let mut got: Vec<(u32, Vec<u8>)> = Vec::new();
        while let Some(p) = feed.next_record(&mut buf).unwrap() {
            got.push((p, buf.clone()));
        }
        assert_eq!(got.len(), 73);
        assert_eq!(got[63], (0, b"a63".to_vec()));
        assert_eq!(got[64], (1, b"b0".to_vec()));
        assert_eq!(got[65], (0, b"a64".to_vec()));
        // "last" has no newline: not whole yet, not sent.
        let tail: Vec<&[u8]> = got[71..].iter().map(|(_, v)| v.as_slice()).collect();
        assert_eq!(tail, vec![&b"\r"[..], b""]);
    }
}
