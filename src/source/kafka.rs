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
//! - [`KafkaSettings`] / [`load_settings`]: `config/kafka_config.yaml`, the
//!   `KAFKA_*` environment overrides and `env:VAR` secrets.
//! - [`KafkaSource`]: the [`Source`] implementation.
//! - `client_config`, `connect_topic`, [`ClientCtx`]: shared with the
//!   producer (`crate::produce`): one place builds librdkafka configurations,
//!   routes its logs and waits for brokers at start-up.
//!
//! # Where a partition stands
//!
//! `state()` must never call the broker (it runs after every batch), and it
//! must never call a partition with a backlog caught up, or the watermark
//! would skip it (see `watermark`). A partition is caught up when the last
//! thing librdkafka said about it was "end of partition" AND our position is
//! at least the high watermark librdkafka cached from its latest fetch
//! response (messages fetched but not yet polled raise that mark first).
//! While the brokers are unreachable nothing is known, so every partition
//! reports a backlog.
//!
//! # Errors
//!
//! Connection problems (transport failure, all brokers down, timeouts,
//! leader changes) are [`SourceError::Transient`]: librdkafka reconnects by
//! itself and resumes fetching at its current position, so the job only backs
//! off and polls again; nothing is lost or read twice (records below our
//! position are dropped as a second guard). An offset that no longer exists
//! (retention deleted data the checkpoint still needs) is fatal, naming the
//! partition, the offset and the earliest offset available: jumping over the
//! gap silently would break exactly-once.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::client::Client;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::Message;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tracing::{debug, error, info, warn};

use super::{PartitionState, RecordBatch, Source, SourceError};
use crate::config::Dur;

/// How long `KafkaSource::new` and the producer wait for unreachable brokers
/// at start-up before giving up.
pub const STARTUP_RETRY: Duration = Duration::from_secs(60);

/// While the brokers are down, how often `poll` asks whether they are back.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// librdkafka properties StreamForge sets itself: letting a settings file
/// change them would break the offset ownership described above.
const MANAGED_PROPERTIES: &[&str] = &[
    "bootstrap.servers",
    "metadata.broker.list",
    "group.id",
    "enable.auto.commit",
    "auto.commit.enable",
    "enable.auto.offset.store",
    "enable.partition.eof",
    "auto.offset.reset",
    "enable.idempotence",
    "acks",
    "request.required.acks",
];

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSettings {
    /// Bootstrap brokers, comma-separated `host:port`.
    pub brokers: String,
    pub topic: String,
    /// Consumer group the advisory offsets are committed to.
    pub group_id: String,
    /// Where to start without a checkpoint: `earliest`, `latest`, an RFC 3339
    /// time or epoch milliseconds (the first record at or after that time).
    pub start: String,
    /// Commit the checkpointed offsets to the consumer group after each
    /// checkpoint (advisory, for lag tools).
    pub commit_offsets: bool,
    /// Passed through to librdkafka (security.protocol, sasl.*, ssl.*, fetch
    /// sizes, ...). A value written `env:VAR` is read from that environment
    /// variable when the client is created.
    pub properties: BTreeMap<String, String>,
    /// Per request: metadata, watermarks, offsets for times.
    pub metadata_timeout: Dur,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        KafkaSettings {
            brokers: "127.0.0.1:9092".into(),
            topic: "orders_stream".into(),
            group_id: "streamforge".into(),
            start: "earliest".into(),
            commit_offsets: true,
            properties: BTreeMap::new(),
            metadata_timeout: Dur(Duration::from_secs(10)),
        }
    }
}

/// Secrets must not reach a log line, even through `{:?}`.
impl fmt::Debug for KafkaSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaSettings")
            .field("brokers", &self.brokers)
            .field("topic", &self.topic)
            .field("group_id", &self.group_id)
            .field("start", &self.start)
            .field("commit_offsets", &self.commit_offsets)
            .field("properties", &redacted(&self.properties))
            .field("metadata_timeout", &self.metadata_timeout)
            .finish()
    }
}

/// A property whose value must never be logged.
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.contains("password")
        || k.contains("secret")
        || k.ends_with(".pem")
        || k == "sasl.oauthbearer.config"
}

/// The properties as they may be logged: secret values replaced (an
/// `env:VAR` reference names no secret and is shown).
pub fn redacted(properties: &BTreeMap<String, String>) -> BTreeMap<&str, &str> {
    properties
        .iter()
        .map(|(k, v)| {
            let shown = if is_secret_key(k) && !v.starts_with("env:") {
                "***"
            } else {
                v.as_str()
            };
            (k.as_str(), shown)
        })
        .collect()
}

/// Where a partition starts when no checkpoint names its offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    Earliest,
    Latest,
    /// The first record whose timestamp is at or after this epoch ms.
    Time(i64),
}

impl StartAt {
    pub fn parse(text: &str) -> Result<StartAt, String> {
        let t = text.trim();
        if t.eq_ignore_ascii_case("earliest") {
            return Ok(StartAt::Earliest);
        }
        if t.eq_ignore_ascii_case("latest") {
            return Ok(StartAt::Latest);
        }
        if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
            return t
                .parse()
                .map(StartAt::Time)
                .map_err(|_| format!("start `{text}`: epoch milliseconds out of range"));
        }
        crate::time::parse_rfc3339_ms(t)
            .map(StartAt::Time)
            .ok_or_else(|| {
                format!(
                "start `{text}`: use earliest, latest, an RFC 3339 time (2025-11-25T10:00:00Z) \
                 or epoch milliseconds"
            )
            })
    }
}

impl KafkaSettings {
    /// Every problem at once.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        if self.brokers.trim().is_empty() {
            problems.push(
                "brokers is empty; give host:port[,host:port...] (or set KAFKA_BROKERS)".into(),
            );
        }
        if self.topic.is_empty()
            || self.topic.len() > 249
            || !self
                .topic
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            problems.push(format!(
                "topic `{}` is not a valid Kafka topic name (1-249 of A-Z a-z 0-9 . _ -)",
                self.topic
            ));
        }
        if self.group_id.trim().is_empty() {
            problems.push("group_id is empty; the advisory offset commits need a group (or set KAFKA_GROUP_ID)".into());
        }
        if let Err(e) = StartAt::parse(&self.start) {
            problems.push(e);
        }
        if self.metadata_timeout.0.is_zero() {
            problems.push("metadata_timeout must be more than 0".into());
        }
        for key in self.properties.keys() {
            if MANAGED_PROPERTIES.contains(&key.as_str()) {
                problems.push(format!(
                    "properties.{key} is managed by StreamForge (offsets live in its checkpoints); remove it{}",
                    match key.as_str() {
                        "bootstrap.servers" | "metadata.broker.list" => " and use `brokers`",
                        "group.id" => " and use `group_id`",
                        _ => "",
                    }
                ));
            }
        }
        for (key, value) in &self.properties {
            if let Some(var) = value.strip_prefix("env:") {
                if var.is_empty() {
                    problems.push(format!("properties.{key}: `env:` needs a variable name"));
                } else if std::env::var_os(var).is_none() {
                    problems.push(format!(
                        "properties.{key}: environment variable {var} is not set"
                    ));
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    fn start_at(&self) -> Result<StartAt, SourceError> {
        StartAt::parse(&self.start).map_err(|e| SourceError::Fatal(format!("kafka: {e}")))
    }

    /// Overrides from `KAFKA_BROKERS`, `KAFKA_TOPIC`, `KAFKA_GROUP_ID`
    /// (`lookup` is the environment; a parameter so tests need not touch it).
    pub fn apply_env(&mut self, lookup: impl Fn(&str) -> Option<String>) {
        let non_empty = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        if let Some(v) = non_empty("KAFKA_BROKERS") {
            self.brokers = v;
        }
        if let Some(v) = non_empty("KAFKA_TOPIC") {
            self.topic = v;
        }
        if let Some(v) = non_empty("KAFKA_GROUP_ID") {
            self.group_id = v;
        }
    }
}

/// Reads `path`, applies the environment overrides and validates.
pub fn load_settings(path: &Path) -> anyhow::Result<KafkaSettings> {
    let mut settings: KafkaSettings = crate::config::load_yaml(path, "Kafka")?;
    settings.apply_env(|name| std::env::var(name).ok());
    settings.validate().map_err(|problems| {
        anyhow::anyhow!(
            "Kafka settings file {} (with KAFKA_* environment overrides) is invalid:\n  - {}",
            path.display(),
            problems.join("\n  - ")
        )
    })?;
    Ok(settings)
}

/// What a client is for: decides which properties StreamForge forces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Consumer,
    Producer,
}

/// The librdkafka configuration for `role`: our defaults, then the settings'
/// properties (with `env:VAR` resolved), then what StreamForge must own.
pub(crate) fn client_config(
    settings: &KafkaSettings,
    role: Role,
) -> Result<ClientConfig, SourceError> {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &settings.brokers);
    config.set("client.id", "streamforge");
    // Notice a restarted broker within a second or two, not librdkafka's 10 s.
    config.set("reconnect.backoff.max.ms", "2000");
    // A producer's metadata request would otherwise create a missing topic
    // with the broker's default partition count.
    config.set("allow.auto.create.topics", "false");
    // Our context turns log lines into tracing events; debug keeps them all.
    config.set_log_level(RDKafkaLogLevel::Debug);
    if role == Role::Producer {
        config.set("linger.ms", "5");
        config.set("batch.num.messages", "10000");
        config.set("batch.size", "1000000");
        config.set("compression.type", "lz4");
        config.set("queue.buffering.max.messages", "500000");
        config.set("queue.buffering.max.kbytes", "262144");
    }
    if role == Role::Consumer {
        // librdkafka stops fetching a partition whose local queue holds
        // `queued.min.messages` (100k) and then waits this long before it
        // asks the broker again: 1 s by default. A job that drains 100k
        // records in a fraction of that sat idle the rest of the second.
        // Measured on a preloaded topic: 149-167k -> 601-658k events/s end
        // to end (5M events, docs/performance.md). Overridable in `properties`.
        config.set("fetch.queue.backoff.ms", "10");
    }
    for (key, value) in &settings.properties {
        let value = match value.strip_prefix("env:") {
            Some(var) => std::env::var(var).map_err(|_| {
                SourceError::Fatal(format!(
                    "kafka: properties.{key} refers to environment variable {var}, which is not set"
                ))
            })?,
            None => value.clone(),
        };
        config.set(key, value);
    }
    match role {
        Role::Consumer => {
            config.set("group.id", &settings.group_id);
            config.set("enable.auto.commit", "false");
            config.set("enable.auto.offset.store", "false");
            config.set("enable.partition.eof", "true");
            config.set("auto.offset.reset", "error");
        }
        Role::Producer => {
            config.set("enable.idempotence", "true");
            config.set("acks", "all");
        }
    }
    Ok(config)
}

/// Routes librdkafka's logs and errors to tracing and remembers the last
/// error, so that a start-up failure can say what librdkafka saw.
#[derive(Default)]
pub struct ClientCtx {
    last_error: Mutex<Option<String>>,
    /// A commit failed for a reason other than the connection (said once).
    commit_refused: AtomicBool,
}

impl ClientCtx {
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }
}

/// librdkafka logs every failed reconnect at error level; the source and the
/// job already say once per outage that a broker is down, so its lines go to
/// debug (`RUST_LOG=librdkafka=debug` shows them), except configuration
/// warnings, which an operator must see.
pub(crate) fn route_log(level: RDKafkaLogLevel, fac: &str, message: &str) {
    match level {
        RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical => {
            error!(target: "librdkafka", facility = fac, "{message}")
        }
        RDKafkaLogLevel::Warning if fac == "CONFWARN" => {
            warn!(target: "librdkafka", facility = fac, "{message}")
        }
        _ => debug!(target: "librdkafka", facility = fac, "{message}"),
    }
}

pub(crate) fn remember_error(slot: &Mutex<Option<String>>, error: &KafkaError, reason: &str) {
    debug!(target: "librdkafka", error = %error, reason, "librdkafka error");
    if let Ok(mut last) = slot.lock() {
        *last = Some(format!("{error} ({reason})"));
    }
}

impl ClientContext for ClientCtx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        route_log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        remember_error(&self.last_error, &error, reason);
    }
}

impl ConsumerContext for ClientCtx {
    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        let Err(e) = result else {
            return;
        };
        let transient = e
            .rdkafka_error_code()
            .is_none_or(|code| classify(code) == ErrorClass::Transient);
        if !transient && !self.commit_refused.swap(true, Ordering::Relaxed) {
            warn!(
                error = %e,
                "the consumer group refused the advisory offset commit; lag tools will not see progress \
                 (the checkpoint stays the truth, nothing else is affected)"
            );
        } else {
            debug!(error = %e, "advisory offset commit failed; the checkpoint stays the truth");
        }
    }
}

/// One attempt of a start-up step: try again, or stop now.
pub(crate) enum Attempt {
    Retry(String),
    Stop(SourceError),
}

/// Runs `step` until it succeeds, fails for good, or `give_up_after` passed
/// (brokers unreachable), backing off 0.5 s doubling to 5 s.
pub(crate) fn retry_startup<T>(
    what: &str,
    brokers: &str,
    give_up_after: Duration,
    last_error: &dyn Fn() -> Option<String>,
    mut step: impl FnMut() -> Result<T, Attempt>,
) -> Result<T, SourceError> {
    let started = Instant::now();
    let mut delay = Duration::from_millis(500);
    let mut attempt = 1u32;
    loop {
        let problem = match step() {
            Ok(v) => return Ok(v),
            Err(Attempt::Stop(e)) => return Err(e),
            Err(Attempt::Retry(problem)) => problem,
        };
        let waited = started.elapsed();
        if waited + delay > give_up_after {
            let seen = last_error()
                .map(|e| format!("; librdkafka's last error: {e}"))
                .unwrap_or_default();
            return Err(SourceError::Fatal(format!(
                "kafka: cannot reach the brokers {brokers} ({what}: {problem}{seen}); gave up after {}s. \
                 Is Kafka running (scripts/stack.sh up)? Check `brokers` in kafka_config.yaml or KAFKA_BROKERS, \
                 and the security properties",
                waited.as_secs()
            )));
        }
        warn!(brokers, attempt, error = %problem, retry_in = ?delay, "Kafka brokers unavailable at start-up; retrying");
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_secs(5));
        attempt += 1;
    }
}

/// Waits for the topic's metadata: its partition count. A topic that does
/// not exist is fatal at once; unreachable brokers are retried.
pub(crate) fn connect_topic<C: ClientContext>(
    client: &Client<C>,
    settings: &KafkaSettings,
    give_up_after: Duration,
    last_error: &dyn Fn() -> Option<String>,
) -> Result<u32, SourceError> {
    let topic = settings.topic.as_str();
    retry_startup(
        "fetching topic metadata",
        &settings.brokers,
        give_up_after,
        last_error,
        || {
            let metadata = client
                .fetch_metadata(Some(topic), settings.metadata_timeout.0)
                .map_err(|e| Attempt::Retry(e.to_string()))?;
            let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else {
                return Err(Attempt::Retry(format!("no metadata for topic {topic}")));
            };
            match t.error().map(RDKafkaErrorCode::from) {
            None => {}
            Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic) => {
                return Err(Attempt::Stop(SourceError::Fatal(format!(
                    "topic {topic} does not exist on {}; create it (scripts/stack.sh topic {topic} N) \
                     or fix kafka_config.yaml",
                    settings.brokers
                ))))
            }
            Some(
                code @ (RDKafkaErrorCode::TopicAuthorizationFailed | RDKafkaErrorCode::InvalidTopic),
            ) => {
                return Err(Attempt::Stop(SourceError::Fatal(format!(
                    "kafka: topic {topic} on {}: {code}",
                    settings.brokers
                ))))
            }
            Some(code) => return Err(Attempt::Retry(format!("topic {topic}: {code}"))),
        }
            let n = t.partitions().len();
            if n == 0 {
                return Err(Attempt::Retry(format!(
                    "topic {topic} has no partitions yet"
                )));
            }
            let mut ids: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
            ids.sort_unstable();
            if ids.iter().enumerate().any(|(i, id)| *id != i as i32) {
                return Err(Attempt::Retry(format!(
                    "topic {topic}: partition ids {ids:?} are not 0..{n} yet"
                )));
            }
            Ok(n as u32)
        },
    )
}

/// Low and high watermark of every partition (network calls).
pub(crate) fn fetch_all_watermarks<C: ClientContext>(
    client: &Client<C>,
    topic: &str,
    partitions: u32,
    timeout: Duration,
) -> KafkaResult<Vec<(i64, i64)>> {
    (0..partitions)
        .map(|p| client.fetch_watermarks(topic, p as i32, timeout))
        .collect()
}

/// How a consumer error is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorClass {
    /// The broker connection: librdkafka recovers on its own.
    Transient,
    /// The position is outside the log (data deleted, topic recreated).
    OutOfRange,
    Fatal,
}

pub(crate) fn classify(code: RDKafkaErrorCode) -> ErrorClass {
    use RDKafkaErrorCode as E;
    match code {
        E::BrokerTransportFailure
        | E::AllBrokersDown
        | E::Resolve
        | E::OperationTimedOut
        | E::RequestTimedOut
        | E::TimedOutQueue
        | E::NetworkException
        | E::LeaderNotAvailable
        | E::NotLeaderForPartition
        | E::BrokerNotAvailable
        | E::ReplicaNotAvailable
        | E::NotCoordinator
        | E::CoordinatorNotAvailable
        | E::CoordinatorLoadInProgress
        | E::WaitingForCoordinator
        | E::FencedLeaderEpoch
        | E::UnknownLeaderEpoch
        | E::OffsetNotAvailable
        | E::KafkaStorageError
        | E::NodeUpdate
        | E::Retry
        | E::BrokerDestroy
        | E::DestroyBroker => ErrorClass::Transient,
        E::AutoOffsetReset | E::OffsetOutOfRange => ErrorClass::OutOfRange,
        _ => ErrorClass::Fatal,
    }
}

/// A Kafka topic as a [`Source`].
pub struct KafkaSource {
    consumer: BaseConsumer<ClientCtx>,
    settings: KafkaSettings,
    topic_c: CString,
    partitions: u32,
    /// Next offset to return, per partition.
    next: Vec<u64>,
    /// Bounded run: the high watermarks read at start.
    end: Option<Vec<u64>>,
    /// Bounded run: partition at its end (and paused).
    finished: Vec<bool>,
    /// Paused by the job (event-time alignment).
    paused: Vec<bool>,
    /// The last thing librdkafka said about the partition was "end of partition".
    eof: Vec<bool>,
    /// Highest high watermark fetched by us (start, recovery).
    known_high: Vec<i64>,
    /// Earliest available offset per partition when `start` ran.
    log_starts: Vec<u64>,
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
            SourceError::Fatal(format!("kafka settings: {}", problems.join("; ")))
        })?;
        let consumer: BaseConsumer<ClientCtx> = client_config(settings, Role::Consumer)?
            .create_with_context(ClientCtx::default())
            .map_err(|e| SourceError::Fatal(format!("kafka: cannot create the consumer: {e}")))?;
        let last_error = || consumer.context().last_error();
        let partitions = connect_topic(consumer.client(), settings, give_up_after, &last_error)?;
        let n = partitions as usize;
        Ok(KafkaSource {
            topic_c: CString::new(settings.topic.as_str())
                .map_err(|_| SourceError::Fatal("kafka: topic name contains a NUL byte".into()))?,
            consumer,
            settings: settings.clone(),
            partitions,
            next: vec![0; n],
            end: None,
            finished: vec![false; n],
            paused: vec![false; n],
            eof: vec![false; n],
            known_high: vec![-1; n],
            log_starts: vec![0; n],
            down_since: None,
            last_probe: Instant::now(),
            last_committed: None,
        })
    }

    pub fn topic(&self) -> &str {
        &self.settings.topic
    }

    /// Consumer lag per partition (high watermark minus next offset), from
    /// what librdkafka cached with its last fetches: no network call.
    pub fn consumer_lag(&self) -> Vec<(u32, i64)> {
        (0..self.partitions)
            .map(|p| {
                let high = self.high_watermark(p).unwrap_or(0);
                (p, (high - self.next[p as usize] as i64).max(0))
            })
            .collect()
    }

    /// The best known high watermark without a network call: librdkafka's
    /// cached value (updated by every fetch response) or ours from start.
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
            self.known_high
                .get(partition as usize)
                .copied()
                .unwrap_or(-1),
        );
        (best >= 0).then_some(best)
    }

    fn timeout(&self) -> Duration {
        self.settings.metadata_timeout.0
    }

    /// Start offsets for partitions the checkpoint does not name.
    fn resolve_start(
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
                for p in 0..self.partitions {
                    tpl.add_partition_offset(&self.settings.topic, p as i32, Offset::Offset(ms))
                        .map_err(|e| {
                            SourceError::Fatal(format!("kafka: offsets for times: {e}"))
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
    fn out_of_range_error(&self, context: &str) -> SourceError {
        let topic = &self.settings.topic;
        let mut lost = Vec::new();
        for p in 0..self.partitions {
            if self.end.is_some() && self.finished[p as usize] {
                continue;
            }
            let next = self.next[p as usize];
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
        SourceError::Fatal(format!(
            "kafka topic {topic}: {which}. Retention deleted records the checkpoint still needs (or the topic \
             was recreated); StreamForge does not skip them silently. To accept the loss, start again with a \
             fresh state directory and `start: earliest`"
        ))
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
            self.partitions,
            timeout,
        ) {
            Ok(marks) => {
                for (slot, (_, high)) in self.known_high.iter_mut().zip(marks) {
                    *slot = (*slot).max(high);
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
        let p = partition as usize;
        if self.finished[p] {
            return;
        }
        self.finished[p] = true;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.settings.topic, partition as i32);
        if let Err(e) = self.consumer.pause(&tpl) {
            debug!(partition, error = %e, "could not pause a finished partition");
        }
    }
}

impl Source for KafkaSource {
    fn log_start(&self, partition: u32) -> u64 {
        self.log_starts
            .get(partition as usize)
            .copied()
            .unwrap_or(0)
    }

    fn lag(&self) -> Vec<(u32, i64)> {
        self.consumer_lag()
    }

    fn id(&self) -> String {
        format!("kafka:{}", self.settings.topic)
    }

    fn source_name(&self, _partition: u32) -> &str {
        &self.settings.topic
    }

    fn partition_count(&self) -> usize {
        self.partitions as usize
    }

    fn start(
        &mut self,
        resume: &BTreeMap<u32, u64>,
        bounded: bool,
    ) -> Result<BTreeMap<u32, u64>, SourceError> {
        let topic = self.settings.topic.clone();
        if let Some((p, _)) = resume.iter().find(|(p, _)| **p >= self.partitions) {
            return Err(SourceError::Fatal(format!(
                "kafka topic {topic} has {} partitions but the checkpoint has offsets for partition {p}; \
                 partitions cannot be removed, so the topic was recreated. Use a fresh state directory",
                self.partitions
            )));
        }
        let at = self.settings.start_at()?;
        let watermarks = retry_startup(
            "reading watermarks",
            &self.settings.brokers,
            STARTUP_RETRY,
            &|| self.consumer.context().last_error(),
            || {
                fetch_all_watermarks(
                    self.consumer.client(),
                    &topic,
                    self.partitions,
                    self.timeout(),
                )
                .map_err(|e| Attempt::Retry(e.to_string()))
            },
        )?;
        self.log_starts = watermarks
            .iter()
            .map(|(low, _)| (*low).max(0) as u64)
            .collect();
        // A partition a checkpoint does not know (the topic grew since) holds
        // only records the job has never seen: all of them.
        let configured = if resume.is_empty() {
            self.resolve_start(at, &watermarks)?
        } else {
            self.resolve_start(StartAt::Earliest, &watermarks)?
        };
        let mut starts = BTreeMap::new();
        let mut problems = Vec::new();
        for p in 0..self.partitions {
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
                    if !resume.is_empty() {
                        warn!(partition = p, offset = configured[p as usize], "partition not in the checkpoint (added since?); reading it from its earliest offset");
                    }
                    configured[p as usize]
                }
            };
            starts.insert(p, at);
        }
        if !problems.is_empty() {
            return Err(SourceError::Fatal(format!(
                "kafka topic {topic}: {}. Retention deleted records the checkpoint still needs (or the topic \
                 was recreated); StreamForge does not skip them silently. To accept the loss, start again with \
                 a fresh state directory and `start: earliest`",
                problems.join("; ")
            )));
        }

        // Errors queued while connecting (refused connections before the
        // broker answered) are history: drop them before reading.
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

        let paused: Vec<u32> = (0..self.partitions)
            .filter(|p| self.paused.get(*p as usize).copied().unwrap_or(false))
            .collect();
        for p in paused {
            self.set_paused(p, false);
        }

        // The start offset of every partition travels inside the assignment;
        // no seek afterwards (seeking a just-assigned partition races
        // librdkafka's own fetch start and fails with "erroneous state").
        let mut tpl = TopicPartitionList::with_capacity(self.partitions as usize);
        for (p, o) in &starts {
            tpl.add_partition_offset(&topic, *p as i32, Offset::Offset(*o as i64))
                .map_err(|e| SourceError::Fatal(format!("kafka: building the assignment: {e}")))?;
        }
        self.consumer.assign(&tpl).map_err(|e| {
            SourceError::Fatal(format!("kafka: assigning the partitions of {topic}: {e}"))
        })?;

        let n = self.partitions as usize;
        self.next = starts.values().copied().collect();
        self.eof = vec![false; n];
        self.finished = vec![false; n];
        self.paused = vec![false; n];
        self.known_high = watermarks.iter().map(|(_, high)| *high).collect();
        self.down_since = None;
        self.end = bounded.then(|| {
            watermarks
                .iter()
                .map(|(_, high)| (*high).max(0) as u64)
                .collect()
        });
        if let Some(end) = self.end.clone() {
            for p in 0..self.partitions {
                if self.next[p as usize] >= end[p as usize] {
                    self.finish(p);
                }
            }
        }
        info!(
            brokers = %self.settings.brokers,
            topic = %topic,
            group = %self.settings.group_id,
            partitions = self.partitions,
            start_offsets = ?starts,
            from_checkpoint = !resume.is_empty(),
            start = %self.settings.start,
            bounded_end_offsets = ?self.end,
            properties = ?redacted(&self.settings.properties),
            "Kafka source started"
        );
        Ok(starts)
    }

    fn poll(
        &mut self,
        batch: &mut RecordBatch,
        max: usize,
        timeout: Duration,
    ) -> Result<(), SourceError> {
        if self.end.is_some() && self.finished.iter().all(|f| *f) {
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
                    let p = message.partition();
                    let Some(slot) = usize::try_from(p).ok().filter(|p| *p < self.next.len())
                    else {
                        return Err(SourceError::Fatal(format!(
                            "kafka: a record for partition {p} of {}, which has {} partitions",
                            self.settings.topic, self.partitions
                        )));
                    };
                    let offset = message.offset() as u64;
                    if offset < self.next[slot] {
                        // Never hand a record out twice.
                        debug!(
                            partition = p,
                            offset,
                            next = self.next[slot],
                            "dropping a record below the position"
                        );
                        continue;
                    }
                    if let Some(end) = &self.end {
                        if offset >= end[slot] {
                            // Past the end fixed at start: not ours to read.
                            self.finish(p as u32);
                            continue;
                        }
                    }
                    batch.push_timestamped(
                        p as u32,
                        offset,
                        message.timestamp().to_millis().unwrap_or(i64::MIN),
                        message.payload().unwrap_or(&[]),
                    );
                    self.next[slot] = offset + 1;
                    self.eof[slot] = false;
                    if self
                        .end
                        .as_ref()
                        .is_some_and(|end| self.next[slot] >= end[slot])
                    {
                        self.finish(p as u32);
                    }
                }
                Err(KafkaError::PartitionEOF(p)) => {
                    if let Some(slot) = usize::try_from(p).ok().filter(|p| *p < self.eof.len()) {
                        self.eof[slot] = true;
                        if self.end.is_some() {
                            // Everything before the current end has been
                            // delivered, and the current end is past ours.
                            self.finish(p as u32);
                        }
                    }
                }
                Err(KafkaError::MessageConsumption(code)) => match classify(code) {
                    ErrorClass::Transient => {
                        debug!(error = %code, "Kafka consumer error (transient)");
                        transient = Some(code.to_string());
                    }
                    ErrorClass::OutOfRange => {
                        return Err(self.out_of_range_error(&code.to_string()));
                    }
                    ErrorClass::Fatal => {
                        // The error callback saw the same event, with librdkafka's
                        // detailed reason.
                        let detail = self
                            .consumer
                            .context()
                            .last_error()
                            .unwrap_or_else(|| code.to_string());
                        return Err(SourceError::Fatal(format!(
                            "kafka topic {} on {}: consumer error: {detail}",
                            self.settings.topic, self.settings.brokers
                        )));
                    }
                },
                Err(e) => {
                    return Err(SourceError::Fatal(format!(
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
                return Err(SourceError::Transient(format!(
                    "kafka brokers {} unavailable: {error}",
                    self.settings.brokers
                )));
            }
            return Ok(());
        }
        if got {
            self.mark_up();
        } else if self.down_since.is_some() && !self.probe() {
            return Err(SourceError::Transient(format!(
                "kafka brokers {} still unavailable",
                self.settings.brokers
            )));
        }
        Ok(())
    }

    fn state(&self, partition: u32) -> PartitionState {
        let p = partition as usize;
        if p >= self.next.len() {
            return PartitionState::Finished;
        }
        if self.end.is_some() && self.finished[p] {
            return PartitionState::Finished;
        }
        // Unknown is a backlog: while the brokers are away, or while the
        // partition is paused (librdkafka stops fetching it, so its cached
        // high watermark goes stale).
        if self.down_since.is_some() || self.paused[p] || !self.eof[p] {
            return PartitionState::Backlog;
        }
        match self.high_watermark(partition) {
            Some(high) if self.next[p] as i64 >= high => PartitionState::CaughtUp,
            _ => PartitionState::Backlog,
        }
    }

    /// librdkafka drops what it had fetched for a paused partition and
    /// fetches again from the position after the last record returned when
    /// it is resumed: nothing is lost or repeated.
    fn set_paused(&mut self, partition: u32, paused: bool) {
        let p = partition as usize;
        if self.paused.get(p).is_none_or(|was| *was == paused) {
            return;
        }
        self.paused[p] = paused;
        if self.finished[p] {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_specs_parse() {
        assert_eq!(StartAt::parse("earliest"), Ok(StartAt::Earliest));
        assert_eq!(StartAt::parse(" LATEST "), Ok(StartAt::Latest));
        assert_eq!(
            StartAt::parse("1764064800000"),
            Ok(StartAt::Time(1_764_064_800_000))
        );
        assert_eq!(
            StartAt::parse("2025-11-25T10:00:00Z"),
            Ok(StartAt::Time(1_764_064_800_000))
        );
        assert_eq!(
            StartAt::parse("2025-11-25T11:00:00.500+01:00"),
            Ok(StartAt::Time(1_764_064_800_500))
        );
        for bad in [
            "",
            "yesterday",
            "-5",
            "2025-13-01T00:00:00Z",
            "99999999999999999999999",
        ] {
            assert!(StartAt::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn settings_file_defaults_and_strict_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.yaml");
        std::fs::write(
            &path,
            "topic: t1\nproperties:\n  fetch.max.bytes: \"1048576\"\n",
        )
        .unwrap();
        let s = load_settings(&path).unwrap();
        assert_eq!(s.topic, "t1");
        assert_eq!(s.group_id, "streamforge");
        assert_eq!(s.start, "earliest");
        assert!(s.commit_offsets);
        assert_eq!(s.metadata_timeout.0, Duration::from_secs(10));
        assert_eq!(s.properties["fetch.max.bytes"], "1048576");

        std::fs::write(&path, "topik: t1\n").unwrap();
        let err = load_settings(&path).unwrap_err().to_string();
        assert!(err.contains("topik") && err.contains("k.yaml"), "{err}");
    }

    #[test]
    fn the_shipped_settings_file_loads_with_the_documented_defaults() {
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/kafka_config.yaml");
        let text = std::fs::read_to_string(&shipped).unwrap();
        let s: KafkaSettings = serde_yaml_ng::from_str(&text).unwrap();
        let d = KafkaSettings::default();
        assert_eq!(
            (
                &s.brokers,
                &s.topic,
                &s.group_id,
                &s.start,
                s.commit_offsets,
                s.metadata_timeout
            ),
            (
                &d.brokers,
                &d.topic,
                &d.group_id,
                &d.start,
                d.commit_offsets,
                d.metadata_timeout
            )
        );
        assert!(s.properties.is_empty());
        assert!(s.validate().is_ok());
    }

    #[test]
    fn every_problem_is_reported_and_managed_properties_are_refused() {
        let mut s = KafkaSettings {
            brokers: " ".into(),
            topic: "bad topic".into(),
            start: "soon".into(),
            ..Default::default()
        };
        s.properties
            .insert("enable.auto.commit".into(), "true".into());
        s.properties.insert("group.id".into(), "x".into());
        s.properties.insert(
            "sasl.password".into(),
            "env:STREAMFORGE_TEST_SURELY_UNSET_VAR".into(),
        );
        let problems = s.validate().unwrap_err();
        assert_eq!(problems.len(), 6, "{problems:?}");
        let all = problems.join("\n");
        assert!(
            all.contains("enable.auto.commit") && all.contains("use `group_id`"),
            "{all}"
        );
        assert!(
            all.contains("STREAMFORGE_TEST_SURELY_UNSET_VAR is not set"),
            "{all}"
        );
    }

    #[test]
    fn environment_overrides_apply_when_set_and_non_empty() {
        let mut s = KafkaSettings::default();
        s.apply_env(|name| match name {
            "KAFKA_BROKERS" => Some("b1:9092,b2:9092".into()),
            "KAFKA_TOPIC" => Some("".into()),
            "KAFKA_GROUP_ID" => Some("g2".into()),
            _ => None,
        });
        assert_eq!(s.brokers, "b1:9092,b2:9092");
        assert_eq!(s.topic, "orders_stream");
        assert_eq!(s.group_id, "g2");
    }

    #[test]
    fn env_secrets_are_resolved_at_client_creation_and_never_shown() {
        // A variable only this test uses.
        let var = "STREAMFORGE_KAFKA_UNIT_TEST_SECRET";
        std::env::set_var(var, "s3cr3t-value");
        let mut s = KafkaSettings::default();
        s.properties
            .insert("sasl.password".into(), format!("env:{var}"));
        s.properties
            .insert("ssl.key.password".into(), "literal-secret".into());
        s.properties
            .insert("security.protocol".into(), "sasl_ssl".into());
        assert!(s.validate().is_ok());
        let config = client_config(&s, Role::Consumer).unwrap();
        assert_eq!(config.get("sasl.password"), Some("s3cr3t-value"));
        assert_eq!(config.get("enable.auto.commit"), Some("false"));
        assert_eq!(config.get("auto.offset.reset"), Some("error"));
        assert_eq!(config.get("enable.partition.eof"), Some("true"));
        assert_eq!(config.get("fetch.queue.backoff.ms"), Some("10"));
        let producer = client_config(&s, Role::Producer).unwrap();
        assert_eq!(producer.get("enable.idempotence"), Some("true"));
        assert_eq!(producer.get("acks"), Some("all"));

        let shown = format!("{s:?}");
        assert!(
            !shown.contains("s3cr3t-value") && !shown.contains("literal-secret"),
            "{shown}"
        );
        assert!(
            shown.contains("sasl_ssl") && shown.contains("***"),
            "{shown}"
        );

        s.properties.insert(
            "sasl.password".into(),
            "env:STREAMFORGE_TEST_SURELY_UNSET_VAR".into(),
        );
        let err = client_config(&s, Role::Producer).err().unwrap().to_string();
        assert!(err.contains("STREAMFORGE_TEST_SURELY_UNSET_VAR"), "{err}");
        std::env::remove_var(var);
    }

    #[test]
    fn tuning_defaults_give_way_to_the_settings_file() {
        let mut s = KafkaSettings::default();
        s.properties
            .insert("fetch.queue.backoff.ms".into(), "250".into());
        let config = client_config(&s, Role::Consumer).unwrap();
        assert_eq!(config.get("fetch.queue.backoff.ms"), Some("250"));
    }

    #[test]
    fn error_classes() {
        assert_eq!(
            classify(RDKafkaErrorCode::BrokerTransportFailure),
            ErrorClass::Transient
        );
        assert_eq!(
            classify(RDKafkaErrorCode::AllBrokersDown),
            ErrorClass::Transient
        );
        assert_eq!(
            classify(RDKafkaErrorCode::AutoOffsetReset),
            ErrorClass::OutOfRange
        );
        assert_eq!(
            classify(RDKafkaErrorCode::TopicAuthorizationFailed),
            ErrorClass::Fatal
        );
        assert_eq!(
            classify(RDKafkaErrorCode::UnknownTopicOrPartition),
            ErrorClass::Fatal
        );
    }

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
