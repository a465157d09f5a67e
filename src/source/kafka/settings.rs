//! The Kafka settings: the `kafka` section of the configuration (loaded with
//! everything else by `crate::config`, short `KAFKA_*` variables included),
//! its validation, and `env:VAR` secrets, resolved only when a client is
//! created and never logged.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::setting::Dur;
use crate::source::SourceError;

/// How long `KafkaSource::new` and the producer wait for unreachable brokers
/// at start-up before giving up.
pub const STARTUP_RETRY: Duration = Duration::from_secs(60);

/// librdkafka properties StreamForge sets itself: letting a settings file
/// change them would break the offset ownership described in `kafka`.
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
    "isolation.level",
];

/// Which records a consumer may read (Kafka's `isolation.level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum IsolationLevel {
    /// Records of committed transactions and non-transactional records only;
    /// the end of a partition is its last stable offset. The default, and
    /// what upstream jobs writing with transactions (Flink, Kafka Streams,
    /// Debezium) need: aborted records are never counted.
    #[default]
    ReadCommitted,
    /// Every record, including those of open and aborted transactions.
    ReadUncommitted,
}

impl IsolationLevel {
    /// The librdkafka property value.
    pub fn as_property(self) -> &'static str {
        match self {
            IsolationLevel::ReadCommitted => "read_committed",
            IsolationLevel::ReadUncommitted => "read_uncommitted",
        }
    }
}

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
    /// Which records are read: `read_committed` (default) or
    /// `read_uncommitted`.
    pub isolation_level: IsolationLevel,
    /// How often a live run looks for partitions added to the topic; `0`
    /// turns discovery off. The watermark never moves past what was known
    /// at the last discovery, so this is also how far it may lag.
    pub partition_discovery_interval: Dur,
    /// Group mode (docs/operations.md, "Running several instances"): join
    /// the consumer group `group_id`, read only the partitions it assigns,
    /// and write partial rows per (window, partition) that ClickHouse
    /// combines. Every verdict is then a function of one partition's log.
    pub group_mode: bool,
    /// Group mode's partition jobs: the one partition this source's job
    /// owns (the others are paused at once; see `group::owned`). Set by the
    /// group runner, never by configuration.
    #[serde(skip)]
    pub owned_partition: Option<u32>,
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
            isolation_level: IsolationLevel::ReadCommitted,
            partition_discovery_interval: Dur(Duration::from_secs(1)),
            group_mode: false,
            owned_partition: None,
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
            .field("isolation_level", &self.isolation_level)
            .field(
                "partition_discovery_interval",
                &self.partition_discovery_interval,
            )
            .field("group_mode", &self.group_mode)
            .field("owned_partition", &self.owned_partition)
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
                        "isolation.level" => " and use `isolation_level`",
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

    pub(crate) fn start_at(&self) -> Result<StartAt, SourceError> {
        StartAt::parse(&self.start).map_err(|e| SourceError::Misconfigured(format!("kafka: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

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

    /// The `kafka` section of a config file, loaded as the job loads it.
    fn load(yaml: &str, env: &[(&str, &str)]) -> anyhow::Result<KafkaSettings> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.yaml");
        std::fs::write(&path, format!("source:\n  kind: kafka\n{yaml}")).unwrap();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Ok(crate::config::Config::load_with(Some(&path), &[], &env)?
            .config
            .kafka)
    }

    #[test]
    fn settings_file_defaults_and_strict_keys() {
        let s = load(
            "kafka:\n  topic: t1\n  properties:\n    fetch.max.bytes: \"1048576\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(s.topic, "t1");
        assert_eq!(s.group_id, "streamforge");
        assert_eq!(s.start, "earliest");
        assert!(s.commit_offsets);
        assert_eq!(s.metadata_timeout.0, Duration::from_secs(10));
        assert_eq!(s.properties["fetch.max.bytes"], "1048576");

        let err = load("kafka:\n  topik: t1\n", &[]).unwrap_err().to_string();
        assert!(err.contains("topik") && err.contains("p.yaml"), "{err}");
    }

    #[test]
    fn the_shipped_config_file_has_the_documented_kafka_defaults() {
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join(crate::config::DEFAULT_CONFIG);
        let text = std::fs::read_to_string(&shipped).unwrap();
        let tree: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
        let s: KafkaSettings = serde_yaml_ng::from_value(tree["kafka"].clone()).unwrap();
        let d = KafkaSettings::default();
        assert_eq!(
            (
                &s.brokers,
                &s.topic,
                &s.group_id,
                &s.start,
                s.commit_offsets,
                s.metadata_timeout,
                s.isolation_level,
                s.partition_discovery_interval
            ),
            (
                &d.brokers,
                &d.topic,
                &d.group_id,
                &d.start,
                d.commit_offsets,
                d.metadata_timeout,
                d.isolation_level,
                d.partition_discovery_interval
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
        let s = load(
            "",
            &[
                ("KAFKA_BROKERS", "b1:9092,b2:9092"),
                ("KAFKA_TOPIC", ""),
                ("KAFKA_GROUP_ID", "g2"),
                ("STREAMFORGE__KAFKA__START", "latest"),
            ],
        )
        .unwrap();
        assert_eq!(s.brokers, "b1:9092,b2:9092");
        assert_eq!(s.topic, "orders_stream");
        assert_eq!(s.group_id, "g2");
        assert_eq!(s.start, "latest");
    }
}
