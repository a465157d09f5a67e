//! Configuration: defaults, then the YAML file, then the environment, then
//! command-line flags; validated once, every problem reported at once.
//!
//! Keys are strict (`deny_unknown_fields`), so a typo is an error naming the
//! file and the key, not a silently ignored setting. Any key can be set from
//! the environment as `STREAMFORGE__SECTION__KEY=value` (double underscores
//! separate levels; the value is read as YAML, so `5s`, `100`, `true` work).
//! Secrets (the ClickHouse password) are never read from these files: only
//! from the environment or a file named in them, and they are never logged.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use serde::{Deserialize, Deserializer, Serialize};

use crate::source::generator::GeneratorConfig;
use crate::window::WindowSpec;

/// The default config file, used when it exists and no other is named.
pub const DEFAULT_CONFIG: &str = "config/pipeline.yaml";
/// Prefix of environment overrides.
pub const ENV_PREFIX: &str = "STREAMFORGE__";
/// Where the metrics listener is by default: loopback only.
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9464";

/// A duration written as `500ms`, `5s`, `2m`, `1h` or a number of milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl Dur {
    pub fn ms(&self) -> i64 {
        self.0.as_millis() as i64
    }
}

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{text}` is not a duration; write e.g. 500ms, 5s, 2m, 1h"))?;
    let ms = match unit.trim() {
        "" | "ms" => n,
        "s" => n * 1_000,
        "m" | "min" => n * 60_000,
        "h" => n * 3_600_000,
        other => {
            return Err(format!(
                "`{text}`: unknown unit `{other}`; use ms, s, m or h"
            ))
        }
    };
    Ok(Duration::from_millis(ms))
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Ms(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Ms(ms) => Ok(Dur(Duration::from_millis(ms))),
            Raw::Text(t) => parse_duration(&t)
                .map(Dur)
                .map_err(serde::de::Error::custom),
        }
    }
}

impl Serialize for Dur {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ms", self.0.as_millis()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    Generator,
    Files,
    Kafka,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    Embedded,
    Clickhouse,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourceConfig {
    pub kind: SourceKind,
    /// File source: a directory (one file per partition) or a list of files.
    pub files: Vec<PathBuf>,
    pub generator: GeneratorConfig,
    /// Kafka settings file (brokers, topic, group, security).
    pub kafka_config: PathBuf,
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig {
            kind: SourceKind::Generator,
            files: Vec::new(),
            generator: GeneratorConfig::default(),
            kafka_config: PathBuf::from("config/kafka_config.yaml"),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SinkConfig {
    pub kind: SinkKind,
    /// Embedded store location; `<state_dir>/sink` when absent.
    pub embedded_path: Option<PathBuf>,
    /// ClickHouse settings file (url, database, table, user).
    pub clickhouse_config: PathBuf,
    /// First retry delay after a failed write; doubles up to `retry_max`.
    pub retry_initial: Dur,
    pub retry_max: Dur,
}

impl Default for SinkConfig {
    fn default() -> Self {
        SinkConfig {
            kind: SinkKind::Embedded,
            embedded_path: None,
            clickhouse_config: PathBuf::from("config/clickhouse_config.yaml"),
            retry_initial: Dur(Duration::from_millis(200)),
            retry_max: Dur(Duration::from_secs(10)),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WindowConfig {
    pub size: Dur,
    pub slide: Dur,
    /// Watermark bound: the largest event-time disorder tolerated per partition.
    pub out_of_orderness: Dur,
    pub allowed_lateness: Dur,
    /// A partition caught up this long stops holding the watermark back.
    pub idle_timeout: Dur,
    /// A partition whose event time runs this far ahead of the slowest
    /// active one pauses until the others catch up (watermark alignment).
    pub alignment_drift: Dur,
    /// Wrong clocks: an event time further ahead of its record's own
    /// timestamp (Kafka) is `implausible_event_time`; `0` turns it off.
    pub max_ahead_of_record_time: Dur,
    /// Wrong clocks: an event time this far ahead of everything seen waits
    /// for its partition's next records to confirm it (docs/semantics.md);
    /// absent: out_of_orderness + size - slide + allowed_lateness; `0`
    /// turns it off.
    pub max_time_jump: Option<Dur>,
}

impl Default for WindowConfig {
    fn default() -> Self {
        WindowConfig {
            size: Dur(Duration::from_secs(60)),
            slide: Dur(Duration::from_secs(30)),
            out_of_orderness: Dur(Duration::from_secs(5)),
            allowed_lateness: Dur(Duration::from_secs(30)),
            idle_timeout: Dur(Duration::from_secs(10)),
            alignment_drift: Dur(Duration::from_secs(10)),
            max_ahead_of_record_time: Dur(Duration::from_secs(3600)),
            max_time_jump: None,
        }
    }
}

impl WindowConfig {
    /// The wrong-clock rules these settings ask for.
    pub fn time_guard(&self) -> crate::job::TimeGuard {
        let off_if_zero = |ms: i64| if ms == 0 { i64::MAX } else { ms };
        crate::job::TimeGuard {
            max_ahead_of_record_ms: off_if_zero(self.max_ahead_of_record_time.ms()),
            max_jump_ms: match self.max_time_jump {
                Some(d) => off_if_zero(d.ms()),
                None => crate::job::TimeGuard::default_max_jump_ms(&self.spec()),
            },
        }
    }

    pub fn spec(&self) -> WindowSpec {
        WindowSpec {
            size_ms: self.size.ms(),
            slide_ms: self.slide.ms(),
            out_of_orderness_ms: self.out_of_orderness.ms(),
            allowed_lateness_ms: self.allowed_lateness.ms(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointConfig {
    pub state_dir: PathBuf,
    /// Barrier every `interval` of wall time...
    pub interval: Dur,
    /// ...or every `interval_events` records, whichever comes first.
    pub interval_events: u64,
    /// Checkpoints kept; older ones are deleted with each commit.
    pub keep: usize,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            state_dir: PathBuf::from("state"),
            interval: Dur(Duration::from_secs(5)),
            interval_events: 2_000_000,
            keep: 3,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub source: SourceConfig,
    pub sink: SinkConfig,
    pub window: WindowConfig,
    pub checkpoint: CheckpointConfig,
    /// The anomaly side output (JSON Lines).
    pub anomaly_log: PathBuf,
    /// Records per poll.
    pub batch_size: usize,
    /// `/metrics`, `/health`, `/ready` listen address (`host:port`); `off`
    /// or empty turns the listener off.
    #[serde(deserialize_with = "null_as_empty")]
    pub metrics_addr: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            source: SourceConfig::default(),
            sink: SinkConfig::default(),
            window: WindowConfig::default(),
            checkpoint: CheckpointConfig::default(),
            anomaly_log: PathBuf::from("logs/anomalies.log"),
            batch_size: 8192,
            metrics_addr: DEFAULT_METRICS_ADDR.into(),
        }
    }
}

/// Where the effective configuration came from, for error messages.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub file: Option<PathBuf>,
}

impl Config {
    /// Loads `file` (or the default file if it exists), applies environment
    /// overrides and then `overrides` (dotted key, YAML value), and validates.
    pub fn load(file: Option<&Path>, overrides: &[(String, String)]) -> anyhow::Result<Loaded> {
        let file = match file {
            Some(f) => Some(f.to_path_buf()),
            None => Some(PathBuf::from(DEFAULT_CONFIG)).filter(|p| p.exists()),
        };
        let mut tree = match &file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config file {}", path.display()))?;
                let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text)
                    .map_err(|e| anyhow!("config file {}: {e}", path.display()))?;
                if value.is_null() {
                    serde_yaml_ng::Value::Mapping(Default::default())
                } else {
                    value
                }
            }
            None => serde_yaml_ng::Value::Mapping(Default::default()),
        };
        let origin = file.as_ref().map_or_else(
            || "built-in defaults".to_string(),
            |p| p.display().to_string(),
        );
        for (key, value) in std::env::vars() {
            if let Some(path) = key.strip_prefix(ENV_PREFIX) {
                let dotted = path.to_ascii_lowercase().replace("__", ".");
                set_path(&mut tree, &dotted, &value)
                    .map_err(|e| anyhow!("environment variable {key}: {e}"))?;
            }
        }
        for (key, value) in overrides {
            set_path(&mut tree, key, value).map_err(|e| anyhow!("flag for {key}: {e}"))?;
        }
        let config: Config = serde_yaml_ng::from_value(tree).map_err(|e| {
            anyhow!(
                "configuration ({origin}, with environment and flags): {e}. \
                 See config/pipeline.yaml for every key and its meaning"
            )
        })?;
        config.validate().map_err(|problems| {
            anyhow!(
                "configuration ({origin}) is invalid:\n  - {}",
                problems.join("\n  - ")
            )
        })?;
        Ok(Loaded { config, file })
    }

    /// Every problem at once.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        if let Err(e) = self.window.spec().validate() {
            problems.push(e);
        }
        if self.checkpoint.keep == 0 {
            problems.push("checkpoint.keep must be at least 1".into());
        }
        if self.checkpoint.interval.0.is_zero() && self.checkpoint.interval_events == 0 {
            problems
                .push("checkpoint.interval and checkpoint.interval_events cannot both be 0".into());
        }
        if self.batch_size == 0 {
            problems.push("batch_size must be at least 1".into());
        }
        if let Some(addr) = self.metrics_listen_addr() {
            let host_port = addr
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !host_port {
                problems.push(format!(
                    "metrics_addr `{addr}` is not host:port (e.g. {DEFAULT_METRICS_ADDR}); `off` turns the listener off"
                ));
            }
        }
        if self.source.kind == SourceKind::Files && self.source.files.is_empty() {
            problems.push(
                "source.kind is files but source.files is empty; name a directory or files".into(),
            );
        }
        let g = &self.source.generator;
        for (name, share) in [
            ("anomaly_share", g.anomaly_share),
            ("duplicate_share", g.duplicate_share),
            ("late_share", g.late_share),
        ] {
            if !(0.0..=1.0).contains(&share) {
                problems.push(format!("source.generator.{name} must be between 0 and 1"));
            }
        }
        if g.anomaly_share + g.late_share > 1.0 {
            problems.push("source.generator.anomaly_share + late_share must not exceed 1".into());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// The metrics listener's address; `None` when it is turned off.
    pub fn metrics_listen_addr(&self) -> Option<&str> {
        let addr = self.metrics_addr.trim();
        (!addr.is_empty() && !addr.eq_ignore_ascii_case("off")).then_some(addr)
    }

    /// The embedded sink location.
    pub fn embedded_sink_path(&self) -> PathBuf {
        self.sink
            .embedded_path
            .clone()
            .unwrap_or_else(|| self.checkpoint.state_dir.join("sink"))
    }
}

/// An empty YAML value (`metrics_addr:`, `--metrics-addr ""`) reads as "".
fn null_as_empty<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

/// Sets `a.b.c` in a YAML tree to `value` (parsed as YAML), creating maps.
fn set_path(tree: &mut serde_yaml_ng::Value, dotted: &str, value: &str) -> Result<(), String> {
    use serde_yaml_ng::Value;
    let parsed: Value =
        serde_yaml_ng::from_str(value).unwrap_or_else(|_| Value::String(value.to_string()));
    let mut node = tree;
    let parts: Vec<&str> = dotted.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        if part.is_empty() {
            return Err(format!("`{dotted}` is not a key path"));
        }
        if !node.is_mapping() {
            *node = Value::Mapping(Default::default());
        }
        let Value::Mapping(map) = node else {
            return Err(format!("`{dotted}` crosses a non-map value"));
        };
        let key = Value::String((*part).to_string());
        if i + 1 == parts.len() {
            map.insert(key, parsed);
            return Ok(());
        }
        node = map.entry(key).or_insert(Value::Mapping(Default::default()));
    }
    Ok(())
}

/// Reads a small YAML settings file (Kafka, ClickHouse) strictly.
pub fn load_yaml<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the {what} settings file {}", path.display()))?;
    serde_yaml_ng::from_str(&text)
        .map_err(|e| anyhow!("{what} settings file {}: {e}", path.display()))
}

/// Fails with a clear message when a path that must exist does not.
pub fn require_file(path: &Path, what: &str) -> anyhow::Result<()> {
    if !path.exists() {
        bail!("{what} {} does not exist", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_every_form() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("250").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn file_then_overrides_and_strict_keys() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.yaml");
        std::fs::write(&file, "window:\n  size: 120s\ncheckpoint:\n  keep: 5\n").unwrap();
        let loaded = Config::load(Some(&file), &[("checkpoint.keep".into(), "7".into())]).unwrap();
        assert_eq!(loaded.config.window.size.ms(), 120_000);
        assert_eq!(loaded.config.checkpoint.keep, 7);

        std::fs::write(&file, "window:\n  sise: 120s\n").unwrap();
        let err = Config::load(Some(&file), &[]).unwrap_err().to_string();
        assert!(err.contains("sise") && err.contains("p.yaml"), "{err}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let mut c = Config::default();
        c.window.slide = Dur(Duration::from_secs(7));
        c.checkpoint.keep = 0;
        c.batch_size = 0;
        let problems = c.validate().unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:?}");
    }

    #[test]
    fn the_shipped_config_file_loads() {
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_CONFIG);
        Config::load(Some(&shipped), &[]).unwrap();
    }
}
