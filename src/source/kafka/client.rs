//! What every Kafka client of StreamForge shares (the source and the
//! producer): one place builds librdkafka configurations, routes its logs,
//! waits for brokers at start-up, and sorts errors into retry classes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::client::Client;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext, TopicPartitionList};
use tracing::{debug, error, warn};

use super::settings::KafkaSettings;
use crate::source::SourceError;

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
                SourceError::Misconfigured(format!(
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
            config.set("isolation.level", settings.isolation_level.as_property());
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
            return Err(SourceError::Failed(format!(
                "kafka: cannot reach the brokers {brokers} ({what}: {problem}{seen}); gave up after {}s. \
                 Is Kafka running (scripts/stack.sh up)? Check kafka.brokers (the config file, KAFKA_BROKERS or --set kafka.brokers=...), \
                 and the security properties",
                waited.as_secs()
            )));
        }
        warn!(
            brokers,
            attempt,
            error = %problem,
            retry_in = ?delay,
            gives_up_in = ?give_up_after.saturating_sub(waited),
            "Kafka brokers unavailable at start-up; retrying. Is Kafka running and reachable at these \
             addresses (kafka.brokers or KAFKA_BROKERS)? A security.protocol the listener does not speak \
             (SASL or SSL against PLAINTEXT) also looks like this"
        );
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
                return Err(Attempt::Stop(SourceError::Misconfigured(format!(
                    "topic {topic} does not exist on {}; create it (scripts/stack.sh topic {topic} N) \
                     or fix kafka.topic (the config file, KAFKA_TOPIC or --set kafka.topic=...)",
                    settings.brokers
                ))))
            }
            Some(
                code @ (RDKafkaErrorCode::TopicAuthorizationFailed | RDKafkaErrorCode::InvalidTopic),
            ) => {
                return Err(Attempt::Stop(SourceError::Misconfigured(format!(
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

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(config.get("isolation.level"), Some("read_committed"));
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
}
