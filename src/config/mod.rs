//! Configuration: one typed tree for the whole job (pipeline, `kafka`,
//! `clickhouse`), loaded in one place.
//!
//! # Precedence
//!
//! Lowest to highest: built-in defaults; the config file (`--config`, else
//! `config/pipeline.yaml` when it exists); the section files it may name
//! (`source.kafka_config`, `sink.clickhouse_config`: the `kafka` or
//! `clickhouse` section in a file of its own); the short environment
//! variables of [`ENV_ALIASES`] (`KAFKA_BROKERS`, `CLICKHOUSE_TABLE`, ...);
//! `STREAMFORGE__SECTION__KEY=value` variables (double underscores separate
//! levels; the value is read as YAML, so `5s`, `100`, `true` work); the
//! command line's flags and `--set key.path=value`.
//!
//! Keys are strict (`deny_unknown_fields`), so a typo is an error naming the
//! file and the key, not a silently ignored setting. Everything is validated
//! once, before anything starts, and every problem is reported at once.
//!
//! # Secrets
//!
//! Secrets are never in the files: the ClickHouse password comes from the
//! environment variable or the file the `clickhouse` section names, a Kafka
//! property's value written `env:VAR` from that variable, each read only when
//! a client is created and held in a [`crate::setting::Secret`] that never
//! prints.
//!
//! # Layout
//!
//! * this file: the tree's types, validation, [`Config::load`];
//! * `tree`: the YAML-tree operations the layers are applied with;
//! * the connectors own their sections' types:
//!   [`crate::source::kafka::KafkaSettings`],
//!   [`crate::sink::clickhouse::ClickHouseSettings`].

mod tree;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use serde::{Deserialize, Deserializer, Serialize};

use crate::dims::{Dimension, GroupingSpec};
use crate::setting::Dur;
use crate::sink::clickhouse::ClickHouseSettings;
use crate::source::generator::GeneratorConfig;
use crate::source::kafka::KafkaSettings;
use crate::window::WindowSpec;

/// The default config file, used when it exists and no other is named.
pub const DEFAULT_CONFIG: &str = "config/pipeline.yaml";
/// Prefix of environment overrides.
pub const ENV_PREFIX: &str = "STREAMFORGE__";
/// Where the metrics listener is by default: loopback only.
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9464";

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
    /// A file holding the `kafka` section, instead of (or over) the config
    /// file's own `kafka:`.
    pub kafka_config: Option<PathBuf>,
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig {
            kind: SourceKind::Generator,
            files: Vec::new(),
            generator: GeneratorConfig::default(),
            kafka_config: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SinkConfig {
    pub kind: SinkKind,
    /// Embedded store location; `<state_dir>/sink` when absent.
    pub embedded_path: Option<PathBuf>,
    /// A file holding the `clickhouse` section, instead of (or over) the
    /// config file's own `clickhouse:`.
    pub clickhouse_config: Option<PathBuf>,
    /// First retry delay after a failed write; doubles up to `retry_max`.
    pub retry_initial: Dur,
    pub retry_max: Dur,
}

impl Default for SinkConfig {
    fn default() -> Self {
        SinkConfig {
            kind: SinkKind::Embedded,
            embedded_path: None,
            clickhouse_config: None,
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
    pub fn spec(&self) -> WindowSpec {
        WindowSpec {
            size_ms: self.size.ms(),
            slide_ms: self.slide.ms(),
            out_of_orderness_ms: self.out_of_orderness.ms(),
            allowed_lateness_ms: self.allowed_lateness.ms(),
        }
    }
}

/// Grouped results (docs/semantics.md, "Grouped results"): per window and
/// per value of each grouping's dimensions.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DimensionsConfig {
    /// Each grouping a list of dimensions: `[[city], [category], [city,
    /// category]]`; empty: totals only.
    pub groupings: Vec<Vec<Dimension>>,
    /// Values per window and grouping with a row of their own; the others
    /// fold into `other` (1..=100000).
    pub max_values_per_window: u32,
}

impl Default for DimensionsConfig {
    fn default() -> Self {
        DimensionsConfig {
            groupings: Vec::new(),
            max_values_per_window: crate::dims::DEFAULT_MAX_VALUES,
        }
    }
}

/// Groupings as the configuration spells them: `[[city], [city, category]]`.
pub fn format_groupings(groupings: &[Vec<Dimension>]) -> String {
    let each: Vec<String> = groupings
        .iter()
        .map(|g| {
            let names: Vec<&str> = g.iter().map(|d| d.name()).collect();
            format!("[{}]", names.join(", "))
        })
        .collect();
    format!("[{}]", each.join(", "))
}

impl DimensionsConfig {
    pub fn spec(&self) -> GroupingSpec {
        GroupingSpec {
            groupings: self.groupings.clone(),
            max_values: self.max_values_per_window,
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
    /// Kafka: brokers, topic, consumer group, isolation level, security.
    pub kafka: KafkaSettings,
    /// ClickHouse: server, table, user, password source, dead letters.
    pub clickhouse: ClickHouseSettings,
    pub window: WindowConfig,
    /// Grouped results: the groupings and the limit of values per window.
    pub dimensions: DimensionsConfig,
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
            kafka: KafkaSettings::default(),
            clickhouse: ClickHouseSettings::default(),
            window: WindowConfig::default(),
            dimensions: DimensionsConfig::default(),
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

/// Short environment variables, kept because deployments and scripts set
/// them (docker-compose, CI): each names one key of the tree. An empty value
/// counts as unset.
pub const ENV_ALIASES: [(&str, &str); 8] = [
    ("KAFKA_BROKERS", "kafka.brokers"),
    ("KAFKA_TOPIC", "kafka.topic"),
    ("KAFKA_GROUP_ID", "kafka.group_id"),
    ("CLICKHOUSE_URL", "clickhouse.url"),
    ("CLICKHOUSE_DATABASE", "clickhouse.database"),
    ("CLICKHOUSE_TABLE", "clickhouse.table"),
    ("CLICKHOUSE_USER", "clickhouse.user"),
    ("CLICKHOUSE_DEAD_LETTER_LOG", "clickhouse.dead_letter_log"),
];

impl Config {
    /// Loads the configuration with the precedence of the module docs:
    /// `file` (or the default file if it exists), its section files, the
    /// environment, then `overrides` (dotted key, YAML value, from flags).
    /// Validates it; every problem is in the one error.
    pub fn load(file: Option<&Path>, overrides: &[(String, String)]) -> anyhow::Result<Loaded> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::load_with(file, overrides, &env)
    }

    /// [`Config::load`] with `env` as the environment (tests).
    pub fn load_with(
        file: Option<&Path>,
        overrides: &[(String, String)],
        env: &[(String, String)],
    ) -> anyhow::Result<Loaded> {
        let lookup = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let file = match file {
            Some(f) => Some(f.to_path_buf()),
            None => Some(PathBuf::from(DEFAULT_CONFIG)).filter(|p| p.exists()),
        };
        let mut base = match &file {
            Some(path) => tree::read_file(path)?,
            None => tree::empty(),
        };
        let origin = file.as_ref().map_or_else(
            || "built-in defaults".to_string(),
            |p| p.display().to_string(),
        );
        // Everything above the files, in order: aliases, STREAMFORGE__
        // variables, flags.
        let mut layers: Vec<(String, String, String)> = Vec::new();
        for (var, key) in ENV_ALIASES {
            if let Some(value) = lookup(var).filter(|v| !v.trim().is_empty()) {
                layers.push((
                    format!("environment variable {var}"),
                    key.to_string(),
                    value,
                ));
            }
        }
        let mut prefixed: Vec<(String, String)> = env
            .iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .cloned()
            .collect();
        prefixed.sort();
        for (key, value) in prefixed {
            let dotted = key[ENV_PREFIX.len()..]
                .to_ascii_lowercase()
                .replace("__", ".");
            layers.push((format!("environment variable {key}"), dotted, value));
        }
        for (key, value) in overrides {
            layers.push((
                format!("--set {key}=... (or its flag)"),
                key.clone(),
                value.clone(),
            ));
        }
        // The section files, found with every layer applied (a flag may name
        // one), go between the config file and the layers above it.
        let shape = serde_yaml_ng::to_value(Config::default())
            .map_err(|e| anyhow!("the default configuration as YAML: {e}"))?;
        let mut probe = base.clone();
        tree::apply(&mut probe, &layers, &shape)?;
        let mut sources = Sources {
            file: origin.clone(),
            sections: Vec::new(),
            layers,
        };
        sources.read_sections(&probe, &mut base)?;
        tree::apply(&mut base, &sources.layers, &shape)?;
        let misspelled = tree::misspelled_settings(env, &shape);
        let config = match tree::deserialize(base) {
            Ok(config) if misspelled.is_empty() => config,
            Ok(_) => return Err(sources.explain(&misspelled)),
            Err(problems) => {
                let all: Vec<tree::Problem> = misspelled.into_iter().chain(problems).collect();
                return Err(sources.explain(&all));
            }
        };
        config.validate().map_err(|problems| {
            let problems: Vec<String> = problems.iter().map(|p| sources.locate(p)).collect();
            anyhow!(
                "configuration ({origin}, with environment and flags) is invalid:\n  - {}",
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
        if let Err(e) = self.dimensions.spec().validate() {
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
        if self.source.kind == SourceKind::Kafka {
            if let Err(more) = self.kafka.validate() {
                problems.extend(more.into_iter().map(|p| format!("kafka.{p}")));
            }
        }
        if self.sink.kind == SinkKind::Clickhouse {
            if let Err(more) = self.clickhouse.validate() {
                problems.extend(more.into_iter().map(|p| format!("clickhouse.{p}")));
            }
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

/// Where each setting's value came from, to name it in an error.
struct Sources {
    /// The config file, or "built-in defaults".
    file: String,
    /// (section, file) for the section files read.
    sections: Vec<(&'static str, String)>,
    /// (origin, dotted key, value) above the files, lowest first.
    layers: Vec<(String, String, String)>,
}

impl Sources {
    /// Merges the section files `probe` names (`source.kafka_config`,
    /// `sink.clickhouse_config`) into `base`, noting each in `sections`.
    /// A file that cannot be read names the key that points at it.
    fn read_sections(
        &mut self,
        probe: &serde_yaml_ng::Value,
        base: &mut serde_yaml_ng::Value,
    ) -> anyhow::Result<()> {
        for (section, key) in [
            ("kafka", "source.kafka_config"),
            ("clickhouse", "sink.clickhouse_config"),
        ] {
            if let Some(path) = tree::get_str(probe, key) {
                let section_tree = tree::read_file(Path::new(&path)).with_context(|| {
                    format!(
                        "{key} (from {}) names a section file that cannot be used",
                        self.origin_of(key).0
                    )
                })?;
                tree::merge_into(base, section, section_tree);
                self.sections.push((section, path));
            }
        }
        Ok(())
    }

    /// Where `key`'s value came from: the last layer that set it (or a map
    /// around it, or a key inside it), else its section file, else the file.
    fn origin_of(&self, key: &str) -> (String, Option<&str>) {
        let touches = |k: &str| {
            key.is_empty()
                || k == key
                || key.starts_with(&format!("{k}."))
                || k.starts_with(&format!("{key}."))
        };
        if let Some((origin, _, value)) = self.layers.iter().rev().find(|(_, k, _)| touches(k)) {
            return (origin.clone(), Some(value.as_str()));
        }
        for (section, path) in &self.sections {
            if key == *section || key.starts_with(&format!("{section}.")) {
                return (format!("section file {path}"), None);
            }
        }
        (self.file.clone(), None)
    }

    /// `problem`, a check's message that begins with the key it is about,
    /// with where that key's value came from when it is not the config
    /// file itself (a flag, an environment variable, a section file).
    /// A problem about two keys (`window.size ... window.slide`) names the
    /// origin of the first of them set above the config file.
    fn locate(&self, problem: &str) -> String {
        let is_key_char =
            |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.';
        let key: String = problem.chars().take_while(|c| is_key_char(*c)).collect();
        if key.is_empty() || !problem[key.len()..].starts_with(' ') {
            return problem.to_string();
        }
        // The leading key, then any other dotted key the message names.
        let others = problem
            .split(|c: char| !is_key_char(c))
            .filter(|w| w.contains('.') && !w.starts_with('.') && !w.ends_with('.'));
        std::iter::once(key.as_str())
            .chain(others)
            .map(|k| self.origin_of(k).0)
            .find(|origin| *origin != self.file)
            .map_or_else(
                || problem.to_string(),
                |origin| format!("{problem} (from {origin})"),
            )
    }

    /// One error listing every problem, each with its key, where its value
    /// came from and what to do; a secret's value never shows.
    fn explain(&self, problems: &[tree::Problem]) -> anyhow::Error {
        let lines: Vec<String> = problems
            .iter()
            .map(|p| {
                let (origin, value) = self.origin_of(&p.key);
                let mut message = p.message.clone();
                if is_secret_key(&p.key) {
                    message = redact(&message, value);
                }
                let key = if p.key.is_empty() {
                    "(top level)"
                } else {
                    &p.key
                };
                format!("{key} (from {origin}): {message}")
            })
            .collect();
        anyhow!(
            "configuration ({}, with environment and flags): {} problem(s):\n  - {}\n\
             Fix each (config/pipeline.yaml lists every key and its meaning); \
             `--set key=value` and STREAMFORGE__SECTION__KEY override the file.",
            self.file,
            lines.len(),
            lines.join("\n  - ")
        )
    }
}

/// Keys whose values are never printed.
fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["password", "secret", "sasl", "token", "credential"]
        .iter()
        .any(|w| k.contains(w))
}

/// `message` with every occurrence of `value` that is not part of a longer
/// word (a password `x` leaves "expected" alone) and any quoted string in it
/// replaced.
fn redact(message: &str, value: Option<&str>) -> String {
    let mut out = message.to_string();
    if let Some(v) = value.filter(|v| !v.is_empty()) {
        out = replace_whole(&out, v, "<redacted>");
    }
    // serde quotes the offending text: `invalid type: string "...", ...`.
    let mut parts: Vec<&str> = out.split('"').collect();
    for (i, part) in parts.iter_mut().enumerate() {
        if i % 2 == 1 {
            *part = "<redacted>";
        }
    }
    parts.join("\"")
}

/// `text` with each occurrence of `word` that no letter, digit or `_`
/// continues on either side replaced by `by`.
fn replace_whole(text: &str, word: &str, by: &str) -> String {
    let is_word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(word) {
        let before = rest[..at].chars().last().or_else(|| out.chars().last());
        let after = rest[at + word.len()..].chars().next();
        let joined = (is_word(word.chars().next()) && is_word(before))
            || (is_word(word.chars().last()) && is_word(after));
        out.push_str(&rest[..at]);
        out.push_str(if joined { word } else { by });
        rest = &rest[at + word.len()..];
    }
    out.push_str(rest);
    out
}

/// An empty YAML value (`metrics_addr:`, `--metrics-addr ""`) reads as "".
fn null_as_empty<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
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

    /// A value YAML reads as a number or a boolean, given for a key that
    /// holds text, stays the text given, from the environment and from
    /// flags alike; keys that hold numbers still read numbers.
    #[test]
    fn numeric_looking_text_stays_text_where_the_key_holds_text() {
        let env = [
            ("STREAMFORGE__KAFKA__TOPIC".to_string(), "2024".to_string()),
            (
                "STREAMFORGE__KAFKA__GROUP_ID".to_string(),
                "true".to_string(),
            ),
            ("STREAMFORGE__BATCH_SIZE".to_string(), "512".to_string()),
        ];
        let loaded = Config::load_with(None, &[], &env).unwrap();
        assert_eq!(loaded.config.kafka.topic, "2024");
        assert_eq!(loaded.config.kafka.group_id, "true");
        assert_eq!(loaded.config.batch_size, 512);

        let flags = [("metrics_addr".to_string(), "9464".to_string())];
        let err = Config::load_with(None, &flags, &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("metrics_addr `9464` is not host:port") && !err.contains("invalid type"),
            "{err}"
        );
    }

    /// The precedence of the module docs, layer by layer, on one key each.
    #[test]
    fn each_layer_wins_over_the_one_below() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.yaml");
        let kafka = dir.path().join("kafka.yaml");
        std::fs::write(
            &file,
            format!(
                "source:\n  kind: kafka\n  kafka_config: {}\nkafka:\n  topic: from_file\n  group_id: g_file\n  brokers: b_file:1\n  start: latest\n",
                kafka.display()
            ),
        )
        .unwrap();
        std::fs::write(
            &kafka,
            "topic: from_section\ngroup_id: g_section\nbrokers: b_section:1\n",
        )
        .unwrap();
        let env: Vec<(String, String)> = [
            ("KAFKA_GROUP_ID", "g_alias"),
            ("KAFKA_BROKERS", "b_alias:1"),
            ("STREAMFORGE__KAFKA__BROKERS", "b_prefixed:1"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let flags = [("kafka.metadata_timeout".to_string(), "3s".to_string())];
        let c = Config::load_with(Some(&file), &flags, &env).unwrap().config;
        assert_eq!(c.kafka.start, "latest", "the file over the defaults");
        assert_eq!(
            c.kafka.topic, "from_section",
            "the section file over the file"
        );
        assert_eq!(
            c.kafka.group_id, "g_alias",
            "the short variable over the section file"
        );
        assert_eq!(
            c.kafka.brokers, "b_prefixed:1",
            "STREAMFORGE__ over the short variable"
        );
        assert_eq!(c.kafka.metadata_timeout.ms(), 3000, "flags last");
        // A flag can name the section file too.
        let other = dir.path().join("other.yaml");
        std::fs::write(&other, "topic: from_flag_file\n").unwrap();
        let flags = [(
            "source.kafka_config".to_string(),
            other.display().to_string(),
        )];
        let c = Config::load_with(Some(&file), &flags, &[]).unwrap().config;
        assert_eq!(c.kafka.topic, "from_flag_file");
    }

    #[test]
    fn problems_of_every_section_in_use_come_together() {
        let env: Vec<(String, String)> = Vec::new();
        let flags: Vec<(String, String)> = [
            ("source.kind", "kafka"),
            ("sink.kind", "clickhouse"),
            ("kafka.topic", "bad topic"),
            ("clickhouse.table", "a-b"),
            ("checkpoint.keep", "0"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let err = Config::load_with(Some(Path::new("/dev/null")), &flags, &env)
            .unwrap_err()
            .to_string();
        for part in [
            "kafka.topic `bad topic`",
            "clickhouse.table name",
            "checkpoint.keep",
        ] {
            assert!(err.contains(part), "{part} missing from: {err}");
        }
    }

    #[test]
    fn the_shipped_config_file_loads() {
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_CONFIG);
        Config::load(Some(&shipped), &[]).unwrap();
    }

    #[test]
    fn a_short_secret_is_redacted_as_a_word_only() {
        let m = r#"invalid type: string "x", expected x or u32 near x_y, (x)"#;
        assert_eq!(
            redact(m, Some("x")),
            r#"invalid type: string "<redacted>", expected <redacted> or u32 near x_y, (<redacted>)"#
        );
        assert_eq!(replace_whole("xx x", "x", "#"), "xx #");
        assert_eq!(replace_whole("a-p-p", "-p", "#"), "a##");
        assert_eq!(replace_whole("p1s", "p1s", "#"), "#");
    }
}
