//! What the server knows, probed once when the sink first reaches it, and
//! the settings the sink pins because of it.
//!
//! A server's or user's profile can change what a request means: an
//! asynchronous insert is acknowledged before its rows are in the table,
//! `input_format_allow_errors_num` drops bad rows silently, `extremes` adds
//! rows to an answer. The sink pins each such setting on its requests, but
//! only where the server knows it: ClickHouse refuses a request that names
//! a setting it does not know (18.16 knows neither `async_insert` nor
//! `insert_deduplication_token`). What it knows comes from
//! `system.settings`, and `system.merge_tree_settings` for the table's
//! deduplication window; `SELECT version()` is logged with it.
//!
//! Inserts always carry their pinned settings (the user must be allowed to
//! write, so to set them). Reads and DDL carry only those whose value in
//! the profile differs, so a read-only user can still read results.

use std::collections::BTreeMap;

/// Pinned on every INSERT, where the server knows them.
pub const INSERT_SETTINGS: [(&str, &str); 7] = [
    // Acknowledged means in the table, not in a buffer that may be lost
    // (26.9 turns asynchronous inserts on by default: measured on chdb).
    ("async_insert", "0"),
    // And should the table's own `async_insert` make it asynchronous
    // anyway, the answer waits for the flush.
    ("wait_for_async_insert", "1"),
    // A field the table lacks is an error, not silently dropped data
    // (current releases skip unknown fields by default; 18.16 refuses).
    ("input_format_skip_unknown_fields", "0"),
    // A row that does not parse fails the insert instead of being skipped.
    ("input_format_allow_errors_num", "0"),
    ("input_format_allow_errors_ratio", "0"),
    // Epoch seconds are read as epoch seconds (`best_effort` reads a short
    // number as something else).
    ("date_time_input_format", "basic"),
    // The deduplication token below is honoured.
    ("insert_deduplicate", "1"),
];

/// Pinned on reads whose answer the sink parses, where the profile differs.
pub const READ_SETTINGS: [(&str, &str); 3] = [
    // No extra `extremes` rows after the data.
    ("extremes", "0"),
    // `max` over no rows is 0, not NULL.
    ("aggregate_functions_null_for_empty", "0"),
    // An answer cut at `max_result_rows` is an error, not fewer windows.
    ("result_overflow_mode", "throw"),
];

/// Pinned on CREATE statements, where the profile differs.
pub const DDL_SETTINGS: [(&str, &str); 1] = [
    // Columns are the types written, not `Nullable(...)` of them.
    ("data_type_default_nullable", "0"),
];

/// The per-insert token of defence-in-depth deduplication (22.2 and later).
pub const TOKEN_SETTING: &str = "insert_deduplication_token";

/// The MergeTree setting that lets a non-replicated table honour tokens.
pub const DEDUP_WINDOW_SETTING: &str = "non_replicated_deduplication_window";

/// What one server knows.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServerProfile {
    /// `SELECT version()`.
    pub version: String,
    /// Each setting of the lists above the server knows, with its value in
    /// the user's profile.
    settings: BTreeMap<String, String>,
    /// Whether tables may be created with [`DEDUP_WINDOW_SETTING`].
    pub dedup_window: bool,
}

/// Every setting name the probe asks about.
fn probed_names() -> impl Iterator<Item = &'static str> {
    INSERT_SETTINGS
        .iter()
        .chain(&READ_SETTINGS)
        .chain(&DDL_SETTINGS)
        .map(|(name, _)| *name)
        .chain([TOKEN_SETTING])
}

pub const VERSION_SQL: &str = "SELECT version() FORMAT TabSeparated";

/// The probe of `system.settings` (names are constants: no escaping).
pub fn settings_sql() -> String {
    let names: Vec<String> = probed_names().map(|n| format!("'{n}'")).collect();
    format!(
        "SELECT name, value FROM system.settings WHERE name IN ({}) FORMAT TabSeparated",
        names.join(", ")
    )
}

pub fn merge_tree_sql() -> String {
    format!(
        "SELECT name FROM system.merge_tree_settings WHERE name = '{DEDUP_WINDOW_SETTING}' FORMAT TabSeparated"
    )
}

impl ServerProfile {
    /// Reads the answers of [`VERSION_SQL`], [`settings_sql`] and
    /// [`merge_tree_sql`].
    pub fn parse(version: &str, settings: &str, merge_tree: &str) -> Result<Self, String> {
        let version = version.trim().to_string();
        if version.is_empty() || !version.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(format!("`SELECT version()` answered `{version}`"));
        }
        let mut known = BTreeMap::new();
        for line in settings.lines().filter(|l| !l.is_empty()) {
            let (name, value) = line.split_once('\t').unwrap_or((line, ""));
            known.insert(name.to_string(), super::encode::tsv_unescape(value));
        }
        Ok(ServerProfile {
            version,
            settings: known,
            dedup_window: merge_tree.lines().any(|l| l.trim() == DEDUP_WINDOW_SETTING),
        })
    }

    pub fn knows(&self, setting: &str) -> bool {
        self.settings.contains_key(setting)
    }

    /// Whether inserts carry an `insert_deduplication_token`.
    pub fn dedup_tokens(&self) -> bool {
        self.knows(TOKEN_SETTING)
    }

    /// The settings of one INSERT: the pinned ones the server knows, and
    /// the deduplication token (`token` computes it) where supported.
    pub fn insert_settings(&self, token: impl FnOnce() -> String) -> Vec<(&'static str, String)> {
        let mut out: Vec<(&'static str, String)> = INSERT_SETTINGS
            .iter()
            .filter(|(name, _)| self.knows(name))
            .map(|(name, value)| (*name, value.to_string()))
            .collect();
        if self.dedup_tokens() {
            out.push((TOKEN_SETTING, token()));
        }
        out
    }

    /// The settings of a read: those whose value in the profile differs.
    pub fn read_settings(&self) -> Vec<(&'static str, String)> {
        self.differing(&READ_SETTINGS)
    }

    pub fn ddl_settings(&self) -> Vec<(&'static str, String)> {
        self.differing(&DDL_SETTINGS)
    }

    fn differing(&self, list: &[(&'static str, &'static str)]) -> Vec<(&'static str, String)> {
        list.iter()
            .filter(|(name, value)| self.settings.get(*name).is_some_and(|v| v != value))
            .map(|(name, value)| (*name, value.to_string()))
            .collect()
    }

    /// One line for the log.
    pub fn summary(&self) -> String {
        let pinned: Vec<&str> = INSERT_SETTINGS
            .iter()
            .map(|(name, _)| *name)
            .filter(|name| self.knows(name))
            .collect();
        format!(
            "ClickHouse {}; inserts pin {}; deduplication tokens {}",
            self.version,
            if pinned.is_empty() {
                "nothing".to_string()
            } else {
                pinned.join(", ")
            },
            match (self.dedup_tokens(), self.dedup_window) {
                (true, true) => "on",
                (true, false) => "sent (no non-replicated window on this server)",
                _ => "off (the server has none)",
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What 18.16.1 answered (measured).
    fn old() -> ServerProfile {
        ServerProfile::parse(
            "18.16.1\n",
            "insert_deduplicate\t1\ninput_format_skip_unknown_fields\t0\ninput_format_allow_errors_num\t0\n\
             input_format_allow_errors_ratio\t0\ndate_time_input_format\tbasic\nextremes\t0\n\
             result_overflow_mode\tthrow\n",
            "",
        )
        .unwrap()
    }

    /// What chdb 26.9 answered (measured), with a profile that turns
    /// `extremes` on.
    fn new() -> ServerProfile {
        let mut settings = String::new();
        for name in probed_names() {
            let value = match name {
                "extremes" => "1",
                "date_time_input_format" => "basic",
                "result_overflow_mode" => "throw",
                "input_format_skip_unknown_fields" | "async_insert" => "1",
                _ => "0",
            };
            settings.push_str(&format!("{name}\t{value}\n"));
        }
        ServerProfile::parse(
            "26.9.2.1",
            &settings,
            "non_replicated_deduplication_window\n",
        )
        .unwrap()
    }

    #[test]
    fn an_old_server_gets_only_the_settings_it_knows() {
        let p = old();
        let settings = p.insert_settings(|| unreachable!("18.16 has no tokens"));
        let names: Vec<&str> = settings.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            [
                "input_format_skip_unknown_fields",
                "input_format_allow_errors_num",
                "input_format_allow_errors_ratio",
                "date_time_input_format",
                "insert_deduplicate"
            ]
        );
        assert!(!p.dedup_tokens() && !p.dedup_window);
        assert!(p.read_settings().is_empty() && p.ddl_settings().is_empty());
        assert!(p.summary().contains("off"), "{}", p.summary());
    }

    #[test]
    fn a_current_server_gets_every_pin_and_a_token() {
        let p = new();
        let settings = p.insert_settings(|| "tok".into());
        assert_eq!(settings.len(), INSERT_SETTINGS.len() + 1);
        assert!(settings.contains(&("async_insert", "0".into())));
        assert_eq!(settings.last(), Some(&(TOKEN_SETTING, "tok".to_string())));
        // Reads carry only what the profile changed.
        assert_eq!(p.read_settings(), vec![("extremes", "0".to_string())]);
        assert!(p.dedup_window);
        assert!(
            p.summary()
                .starts_with("ClickHouse 26.9.2.1; inserts pin async_insert"),
            "{}",
            p.summary()
        );
    }

    #[test]
    fn the_probe_asks_about_every_setting_it_may_send() {
        let sql = settings_sql();
        for name in probed_names() {
            assert!(sql.contains(&format!("'{name}'")), "{name}");
        }
        assert!(ServerProfile::parse("", "", "").is_err());
        assert!(ServerProfile::parse("<html>", "", "").is_err());
    }
}
