//! `streamforge produce`: writes order events into the Kafka topic, either
//! simulated (the generator of SPEC §7) or replayed from files (one file per
//! partition, one line per record).
//!
//! Every record goes to a partition chosen here, never by librdkafka's
//! partitioner (which differs from Kafka's Java one): generated record `i` of
//! partition `p` is `GeneratorConfig::payload(p, i)`, and line `i` of file `p`
//! goes to partition `p`. With a fresh topic that makes the topic the exact
//! image of the input: offset `i` of partition `p` holds record `i`.
//!
//! The producer is idempotent (`enable.idempotence`, `acks=all`), so retries
//! after a broker hiccup neither duplicate nor reorder records within a
//! partition. A full local queue is waited out (poll, retry), never dropped;
//! at the end everything is flushed, and any record the broker did not take
//! makes the command fail.
//!
//! # Generated records on a topic that already has data
//!
//! Generation continues at each partition's high watermark (record index =
//! the offset it lands at), so a second run never re-sends event ids of the
//! first one, which the job would drop as duplicates. Event time is shifted
//! so that the first new record of the least-filled partition is stamped now.
//!
//! # Generated records into files (`--out-dir`)
//!
//! [`write_generated_files`] writes the records a fresh topic of `partitions`
//! partitions would receive, in the same order, into `DIR/part-<p>.jsonl`
//! (one file per partition, one record per line): the file source's layout
//! (SPEC §7), so the same data can be replayed by the job or by another
//! engine. No broker is involved and nothing is paced: the rate only sets how
//! dense event time is.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
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

use crate::source::generator::GeneratorConfig;
use crate::source::kafka::{
    classify, client_config, connect_topic, fetch_all_watermarks, remember_error, retry_startup,
    route_log, Attempt, ErrorClass, KafkaSettings, Role, STARTUP_RETRY,
};

pub struct ProduceOptions {
    pub settings: KafkaSettings,
    /// Events per second over all partitions; 0 = as fast as possible.
    pub rate: u64,
    /// Total records; `None` = until `stop` (generated) or the end of the files.
    pub count: Option<u64>,
    pub anomaly_rate: f64,
    pub duplicate_rate: f64,
    pub late_rate: f64,
    pub disorder_ms: u64,
    pub seed: u64,
    pub users: u64,
    /// Replay these files (SPEC §7 layout) instead of generating.
    pub from_files: Option<Vec<PathBuf>>,
    pub stop: Arc<AtomicBool>,
    /// A progress line on stderr every second.
    pub progress: bool,
    /// Stamp each record with its event time (when the payload has a valid
    /// one) instead of the time it is sent.
    pub event_timestamps: bool,
}

#[derive(Debug, Clone, Default)]
pub struct ProduceReport {
    /// Records the broker acknowledged.
    pub produced: u64,
    pub per_partition: BTreeMap<u32, u64>,
    pub elapsed: Duration,
}

/// Event-time rate per partition when producing as fast as possible.
const DEFAULT_EVENT_RATE: u64 = 500;
/// Lines taken from one file before moving to the next, so that replayed
/// partitions advance together as a live topic would.
const FILE_CHUNK: u32 = 64;
/// How far behind its schedule the pacer may fall before it forgives the
/// debt instead of bursting to catch up.
const MAX_PACING_DEBT: Duration = Duration::from_secs(1);
/// The pacer sleeps only when at least this far ahead of its schedule, so a
/// high rate is paced in small bursts rather than one sleep per record.
const PACING_GRANULARITY: Duration = Duration::from_millis(1);

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

/// Where records come from.
enum Feed {
    Generated {
        config: GeneratorConfig,
        next: Vec<u64>,
        cursor: usize,
    },
    Files {
        readers: Vec<(PathBuf, Option<BufReader<File>>)>,
        cursor: usize,
        taken: u32,
    },
}

impl Feed {
    /// Writes the next record's payload into `buf` and returns its
    /// partition; `None` at the end of the input.
    fn next_record(&mut self, buf: &mut Vec<u8>) -> anyhow::Result<Option<u32>> {
        buf.clear();
        match self {
            Feed::Generated {
                config,
                next,
                cursor,
            } => {
                let p = *cursor;
                *cursor = (*cursor + 1) % next.len();
                config.payload(p as u32, next[p], buf);
                next[p] += 1;
                Ok(Some(p as u32))
            }
            Feed::Files {
                readers,
                cursor,
                taken,
            } => {
                for _ in 0..=readers.len() {
                    let p = *cursor;
                    let (path, reader) = &mut readers[p];
                    if let Some(r) = reader.as_mut() {
                        let n = r
                            .read_until(b'\n', buf)
                            .with_context(|| format!("reading {}", path.display()))?;
                        if n > 0 {
                            // Exactly as the file source: only the '\n' goes.
                            if buf.last() == Some(&b'\n') {
                                buf.pop();
                            }
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
    }
}

/// Paces to `rate` records a second: record `k` is due `k / rate` seconds
/// after the origin. Never busy-waits: it sleeps until the next due time.
struct Pacer {
    rate: u64,
    origin: Instant,
    origin_count: u64,
}

impl Pacer {
    fn wait(&mut self, sent: u64, producer: &BaseProducer<ProduceCtx>) {
        if self.rate == 0 {
            return;
        }
        let due = self.origin
            + Duration::from_secs_f64((sent - self.origin_count) as f64 / self.rate as f64);
        let now = Instant::now();
        if due >= now + PACING_GRANULARITY {
            // Serve delivery reports, then sleep. (librdkafka's poll timeout
            // is whole milliseconds; its remainder would be spun.)
            producer.poll(Duration::ZERO);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        } else if due < now && now - due > MAX_PACING_DEBT {
            // A stall (full queue, broker away): resume the pace from here
            // rather than bursting through the missed schedule.
            self.origin = now;
            self.origin_count = sent;
        }
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

/// The shares of broken, duplicate and late events must make sense.
fn check_shares(opts: &ProduceOptions) -> anyhow::Result<()> {
    for (name, share) in [
        ("anomaly rate", opts.anomaly_rate),
        ("duplicate rate", opts.duplicate_rate),
        ("late rate", opts.late_rate),
    ] {
        if !(0.0..=1.0).contains(&share) {
            bail!("the {name} must be between 0 and 1, got {share}");
        }
    }
    if opts.anomaly_rate + opts.late_rate > 1.0 {
        bail!("the anomaly rate and the late rate together must not exceed 1");
    }
    Ok(())
}

/// The generator for a fresh topic of `partitions` partitions: event time
/// starts now, at `rate / partitions` events per second per partition.
fn fresh_generator(opts: &ProduceOptions, partitions: u32, event_rate: u64) -> GeneratorConfig {
    GeneratorConfig {
        seed: opts.seed,
        partitions,
        events_per_partition: None,
        rate: event_rate,
        start_time_ms: crate::time::now_ms(),
        users: opts.users.max(1),
        anomaly_share: opts.anomaly_rate,
        duplicate_share: opts.duplicate_rate,
        late_share: opts.late_rate,
        disorder_ms: opts.disorder_ms,
    }
}

/// Event time per partition: `rate` over all partitions, or the default
/// density when producing as fast as possible.
fn per_partition_rate(rate: u64, partitions: u32) -> u64 {
    if rate == 0 {
        DEFAULT_EVENT_RATE
    } else {
        (rate / partitions.max(1) as u64).max(1)
    }
}

/// `streamforge produce --out-dir DIR`: writes `opts.count` generated
/// records into `DIR/part-<p>.jsonl`, exactly the records, partitions and
/// per-partition order that `produce` would send to a fresh topic of
/// `partitions` partitions (see the module documentation). Kafka settings
/// and `from_files` are not used. `DIR` is created if missing and must hold
/// no other files, since the file source reads every file of a directory.
pub fn write_generated_files(
    opts: &ProduceOptions,
    dir: &Path,
    partitions: u32,
) -> anyhow::Result<ProduceReport> {
    let started = Instant::now();
    check_shares(opts)?;
    if opts.from_files.is_some() {
        bail!("--out-dir writes generated events; it cannot be combined with --from-files");
    }
    let Some(count) = opts.count else {
        bail!("--out-dir needs --count (files are written, not streamed)");
    };
    if partitions == 0 {
        bail!("--partitions must be at least 1");
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    if std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .next()
        .is_some()
    {
        bail!(
            "{} is not empty; the file source reads every file of a directory, so give an empty or new one",
            dir.display()
        );
    }
    let mut files = Vec::with_capacity(partitions as usize);
    for p in 0..partitions {
        let path = dir.join(format!("part-{p}.jsonl"));
        let file =
            File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
        files.push((path, BufWriter::with_capacity(1 << 20, file)));
    }
    let mut feed = Feed::Generated {
        config: fresh_generator(opts, partitions, per_partition_rate(opts.rate, partitions)),
        next: vec![0; partitions as usize],
        cursor: 0,
    };
    let mut per_partition = BTreeMap::new();
    let mut payload = Vec::with_capacity(512);
    let mut written: u64 = 0;
    let mut last_progress = Instant::now();
    while written < count && !opts.stop.load(Ordering::Relaxed) {
        let Some(p) = feed.next_record(&mut payload)? else {
            break;
        };
        payload.push(b'\n');
        let (path, out) = &mut files[p as usize];
        out.write_all(&payload)
            .with_context(|| format!("writing {}", path.display()))?;
        *per_partition.entry(p).or_insert(0) += 1;
        written += 1;
        if opts.progress && last_progress.elapsed() >= Duration::from_secs(1) {
            eprint!("\r\x1b[2Kwritten {written} of {count}");
            last_progress = Instant::now();
        }
    }
    for (path, out) in &mut files {
        out.flush()
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if opts.progress {
        eprintln!("\r\x1b[2Kwritten {written} records");
    }
    if written < count {
        bail!("interrupted after {written} of {count} records");
    }
    Ok(ProduceReport {
        produced: written,
        per_partition,
        elapsed: started.elapsed(),
    })
}

/// Runs `streamforge produce`.
pub fn produce(opts: &ProduceOptions) -> anyhow::Result<ProduceReport> {
    let started = Instant::now();
    let settings = &opts.settings;
    settings.validate().map_err(|problems| {
        anyhow::anyhow!(
            "Kafka settings are invalid:\n  - {}",
            problems.join("\n  - ")
        )
    })?;
    check_shares(opts)?;
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
    let topic = settings.topic.as_str();

    let mut feed = match &opts.from_files {
        Some(inputs) => {
            let files =
                crate::source::file::resolve_paths(inputs).map_err(|e| anyhow::anyhow!("{e}"))?;
            if files.len() > partitions as usize {
                bail!(
                    "{} files were given but topic {topic} has only {partitions} partitions (one file per \
                     partition); create a topic with at least {} partitions (scripts/stack.sh topic NAME {})",
                    files.len(),
                    files.len(),
                    files.len()
                );
            }
            let mut readers = Vec::with_capacity(files.len());
            for path in files {
                let file =
                    File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
                readers.push((path, Some(BufReader::with_capacity(1 << 20, file))));
            }
            info!(
                topic,
                partitions,
                files = ?readers.iter().map(|(p, _)| p.display().to_string()).collect::<Vec<_>>(),
                "producing: line i of file p to partition p"
            );
            Feed::Files {
                readers,
                cursor: 0,
                taken: 0,
            }
        }
        None => {
            let marks = retry_startup(
                "reading watermarks",
                &settings.brokers,
                STARTUP_RETRY,
                &last_error,
                || {
                    fetch_all_watermarks(
                        producer.client(),
                        topic,
                        partitions,
                        settings.metadata_timeout.0,
                    )
                    .map_err(|e| Attempt::Retry(e.to_string()))
                },
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            let next: Vec<u64> = marks
                .iter()
                .map(|(_, high)| (*high).max(0) as u64)
                .collect();
            let event_rate = per_partition_rate(opts.rate, partitions);
            let least = next.iter().copied().min().unwrap_or(0);
            let mut config = fresh_generator(opts, partitions, event_rate);
            config.start_time_ms -= (least as i128 * 1000 / event_rate as i128) as i64;
            info!(
                topic,
                partitions,
                first_index = ?next,
                event_rate_per_partition = event_rate,
                rate = opts.rate,
                count = ?opts.count,
                "producing generated order events"
            );
            Feed::Generated {
                config,
                next,
                cursor: 0,
            }
        }
    };

    let mut pacer = Pacer {
        rate: opts.rate,
        origin: Instant::now(),
        origin_count: 0,
    };
    let mut payload = Vec::with_capacity(512);
    let mut key = Vec::with_capacity(64);
    let mut sent: u64 = 0;
    let mut last_progress = Instant::now();
    let mut last_progress_count = 0u64;
    let mut ended = false;
    let mut health = BrokerHealth {
        last_check: Instant::now(),
        down_since: None,
    };
    let mut stamps: Vec<Option<i64>> = Vec::new();
    'records: while !opts.stop.load(Ordering::Relaxed) && opts.count.is_none_or(|c| sent < c) {
        pacer.wait(sent, &producer);
        let Some(partition) = feed.next_record(&mut payload)? else {
            ended = true;
            break;
        };
        let keyed = user_key(&payload, &mut key);
        let mut record = BaseRecord::to(topic)
            .partition(partition as i32)
            .payload(payload.as_slice());
        if keyed {
            record = record.key(key.as_slice());
        }
        if opts.event_timestamps {
            // A record without a valid event time takes the previous one of
            // its partition, so that the broker's time index stays in event
            // time (offsets-for-times lookups, replays).
            let slot = partition as usize;
            if stamps.len() <= slot {
                stamps.resize(slot + 1, None);
            }
            if let Ok(event) = crate::event::parse_event(&payload) {
                stamps[slot] = Some(event.event_time_ms);
            }
            if let Some(t) = stamps[slot] {
                record = record.timestamp(t);
            }
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    // librdkafka's queue is full: let it drain, never drop.
                    producer.poll(Duration::from_millis(20));
                    health.check(&producer, &settings.brokers);
                    if opts.stop.load(Ordering::Relaxed) {
                        break 'records;
                    }
                    record = back;
                }
                Err((e, _)) => {
                    flush_quietly(&producer);
                    bail!("cannot produce to {topic} partition {partition}: {e}");
                }
            }
        }
        sent += 1;
        if sent % 1024 == 0 {
            producer.poll(Duration::ZERO);
            let (failed, first) = producer.context().failures();
            if failed > 0 {
                flush_quietly(&producer);
                bail!(
                    "{failed} records were not delivered to {topic} (first: {}); stopping",
                    first.unwrap_or_default()
                );
            }
        }
        health.check(&producer, &settings.brokers);
        if opts.progress && last_progress.elapsed() >= Duration::from_secs(1) {
            let secs = last_progress.elapsed().as_secs_f64();
            eprint!(
                "\r\x1b[2Kproduced {sent} | acked {} | {:.0} records/s | queued {}",
                producer.context().delivered_total(),
                (sent - last_progress_count) as f64 / secs,
                producer.in_flight_count()
            );
            last_progress = Instant::now();
            last_progress_count = sent;
        }
    }
    if opts.progress {
        eprint!(
            "\r\x1b[2Kflushing {} queued records...",
            producer.in_flight_count()
        );
    }
    // The broker may be away for a while: wait as long as librdkafka keeps
    // retrying a message (message.timeout.ms, 5 min by default) and a bit.
    let flush = producer.flush(Duration::from_secs(330));
    producer.poll(Duration::ZERO);
    let (failed, first) = producer.context().failures();
    let per_partition = producer
        .context()
        .delivered
        .lock()
        .map(|d| d.clone())
        .unwrap_or_default();
    let produced: u64 = per_partition.values().sum();
    if opts.progress {
        eprintln!(
            "\r\x1b[2Kproduced {produced} records to {topic} in {:.1}s{}",
            started.elapsed().as_secs_f64(),
            if ended { " (end of input)" } else { "" }
        );
    }
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
            settings.brokers
        );
    }
    if produced != sent {
        bail!(
            "{sent} records sent but {produced} acknowledged by {}",
            settings.brokers
        );
    }
    let elapsed = started.elapsed();
    info!(
        topic,
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

/// Before bailing out: give what was sent a short chance to land (dropping
/// the producer purges its queue).
fn flush_quietly(producer: &BaseProducer<ProduceCtx>) {
    let _ = producer.flush(Duration::from_secs(10));
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
        let mut feed = Feed::Files {
            readers: vec![
                (a.clone(), Some(BufReader::new(File::open(&a).unwrap()))),
                (b.clone(), Some(BufReader::new(File::open(&b).unwrap()))),
            ],
            cursor: 0,
            taken: 0,
        };
        let mut buf = Vec::new();
        let mut got: Vec<(u32, Vec<u8>)> = Vec::new();
        while let Some(p) = feed.next_record(&mut buf).unwrap() {
            got.push((p, buf.clone()));
        }
        assert_eq!(got.len(), 74);
        assert_eq!(got[63], (0, b"a63".to_vec()));
        assert_eq!(got[64], (1, b"b0".to_vec()));
        assert_eq!(got[65], (0, b"a64".to_vec()));
        let tail: Vec<&[u8]> = got[71..].iter().map(|(_, v)| v.as_slice()).collect();
        assert_eq!(tail, vec![&b"\r"[..], b"", b"last"]);
    }

    fn file_options(count: u64) -> ProduceOptions {
        ProduceOptions {
            settings: KafkaSettings::default(),
            rate: 0,
            count: Some(count),
            anomaly_rate: 0.0,
            duplicate_rate: 0.0,
            late_rate: 0.0,
            disorder_ms: 3000,
            seed: 7,
            users: 100,
            from_files: None,
            stop: Arc::new(AtomicBool::new(false)),
            progress: false,
            event_timestamps: false,
        }
    }

    #[test]
    fn out_dir_gets_one_file_per_partition_in_topic_order() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("data");
        let report = write_generated_files(&file_options(10), &out, 3).unwrap();
        assert_eq!(report.produced, 10);
        assert_eq!(
            report.per_partition,
            BTreeMap::from([(0, 4), (1, 3), (2, 3)])
        );
        let mut first_time = None;
        for p in 0..3u32 {
            let text = std::fs::read_to_string(out.join(format!("part-{p}.jsonl"))).unwrap();
            let lines: Vec<&str> = text.lines().collect();
            assert_eq!(lines.len() as u64, report.per_partition[&p]);
            assert!(text.ends_with('\n'));
            for (i, line) in lines.iter().enumerate() {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                assert_eq!(v["event_id"], format!("p{p}-{i}"));
                assert!(v["event_time"].is_i64(), "{line}");
                first_time.get_or_insert(v["event_time"].as_i64().unwrap());
            }
        }
        // Event time starts now (within the disorder), like a fresh topic.
        let lag = crate::time::now_ms() - first_time.unwrap();
        assert!((0..60_000).contains(&lag), "{lag}");
        // A directory with files in it is refused: the file source would read them all.
        let err = write_generated_files(&file_options(10), &out, 3).unwrap_err();
        assert!(err.to_string().contains("not empty"), "{err}");
        let mut unbounded = file_options(1);
        unbounded.count = None;
        assert!(write_generated_files(&unbounded, &dir.path().join("x"), 1).is_err());
    }

    #[test]
    fn the_pacer_forgives_a_stall_instead_of_bursting() {
        let mut pacer = Pacer {
            rate: 1000,
            origin: Instant::now() - Duration::from_secs(5),
            origin_count: 0,
        };
        // 10 records sent in 5 s at 1000/s: far behind.
        let producer: BaseProducer<ProduceCtx> = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", "127.0.0.1:1")
            .create_with_context(ProduceCtx::default())
            .unwrap();
        pacer.wait(10, &producer);
        assert_eq!(pacer.origin_count, 10);
        let t = Instant::now();
        pacer.wait(30, &producer);
        let waited = t.elapsed();
        assert!(
            waited >= Duration::from_millis(15) && waited < Duration::from_millis(200),
            "{waited:?}"
        );
    }
}
