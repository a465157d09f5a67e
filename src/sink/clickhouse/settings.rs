//! What the ClickHouse sink connects to and how: the `clickhouse` section of
//! the configuration (loaded with everything else by `crate::config`, short
//! `CLICKHOUSE_*` variables included), its validation, and the password,
//! read only when the client is made and held in a [`Secret`] that never
//! prints.
//!
//! Nothing here talks to the server: [`super::ClickHouseSink::connect`]
//! turns validated settings into a client.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::Url;
use serde::{Deserialize, Serialize};

use crate::setting::Dur;

/// Where the sink connects and how: the `clickhouse` section of the
/// configuration. The password itself is never in this struct.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClickHouseSettings {
    /// The HTTP interface: `http://host:8123` or `https://host:8443`.
    /// Without credentials; an optional path is kept (for a proxy).
    pub url: String,
    pub database: String,
    pub table: String,
    pub user: String,
    /// The environment variable holding the password; empty or unset means
    /// no password.
    pub password_env: String,
    /// Alternatively a file holding the password (one trailing newline is
    /// ignored). When set, it is used instead of `password_env`.
    pub password_file: Option<PathBuf>,
    /// Create the database and the table at start when they are missing.
    pub create_table: bool,
    /// Bound on a whole request, from connecting to reading the answer.
    pub timeout: Dur,
    pub connect_timeout: Dur,
    /// An extra root CA (PEM, possibly several certificates) for https.
    pub ca_file: Option<PathBuf>,
    /// Accept any server certificate. For tests only.
    pub insecure_skip_verify: bool,
    /// JSON Lines file for rows ClickHouse refuses for a reason about the
    /// row (see `sink::dead_letters`); created on the first such row.
    pub dead_letter_log: PathBuf,
}

impl Default for ClickHouseSettings {
    fn default() -> Self {
        ClickHouseSettings {
            url: "http://127.0.0.1:8123".into(),
            database: "streamforge".into(),
            table: "order_metrics".into(),
            user: "default".into(),
            password_env: "CLICKHOUSE_PASSWORD".into(),
            password_file: None,
            create_table: true,
            timeout: Dur(Duration::from_secs(30)),
            connect_timeout: Dur(Duration::from_secs(5)),
            ca_file: None,
            insecure_skip_verify: false,
            dead_letter_log: PathBuf::from("logs/dead_letters.log"),
        }
    }
}

impl ClickHouseSettings {
    /// Every problem at once.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        if let Err(e) = parse_url(&self.url) {
            problems.push(e);
        }
        for (what, name) in [("database", &self.database), ("table", &self.table)] {
            if let Err(e) = validate_name(what, name) {
                problems.push(e);
            }
        }
        if self.timeout.0.is_zero() {
            problems.push("timeout must be more than 0".into());
        }
        if self.connect_timeout.0.is_zero() {
            problems.push("connect_timeout must be more than 0".into());
        }
        if self.dead_letter_log.as_os_str().is_empty() {
            problems.push("dead_letter_log must name a file".into());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// The table as `database.table` (names are validated: no quoting needed
    /// in messages).
    pub fn qualified_table(&self) -> String {
        format!("{}.{}", self.database, self.table)
    }
}

/// Checks a database or table name: `^[A-Za-z_][A-Za-z0-9_]{0,63}$`. Such a
/// name needs no escaping, in backticks or in a string literal.
pub fn validate_name(what: &str, name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if first_ok && name.len() <= 64 && chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Ok(())
    } else {
        Err(format!(
            "{what} name `{name}` is not allowed: use 1 to 64 ASCII letters, digits and underscores, \
             not starting with a digit"
        ))
    }
}

/// Parses the server URL: http or https, a host, no credentials, no query.
pub(super) fn parse_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("url `{text}` is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "url `{text}`: the scheme must be http or https (ClickHouse's HTTP interface, usually port 8123 or 8443)"
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("url `{text}` names no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        // Not echoed: it may hold a password.
        return Err("url must not contain credentials: set `user`, and the password through `password_env` \
                    or `password_file`"
            .into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "url `{}` must not have a query string or fragment",
            display_url(&url)
        ));
    }
    Ok(url)
}

/// The URL as shown in messages: no credentials, no trailing slash.
pub(super) fn display_url(url: &Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    shown.as_str().trim_end_matches('/').to_string()
}

use crate::setting::Secret;

/// The password per the settings: `password_file` when set, else the
/// variable `password_env` names (`lookup` reads the environment).
pub(super) fn resolve_password(
    settings: &ClickHouseSettings,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Option<Secret>, String> {
    if let Some(file) = &settings.password_file {
        let text = std::fs::read_to_string(file).map_err(|e| {
            format!(
                "cannot read the password file {} (password_file): {e}",
                file.display()
            )
        })?;
        let password = text.strip_suffix('\n').unwrap_or(&text);
        let password = password.strip_suffix('\r').unwrap_or(password);
        return Ok(Some(Secret::new(password.to_string())).filter(|p| !p.is_empty()));
    }
    if settings.password_env.is_empty() {
        return Ok(None);
    }
    Ok(lookup(&settings.password_env)
        .filter(|p| !p.is_empty())
        .map(Secret::new))
}

/// Where the password comes from, for advice after an auth failure.
pub(super) fn password_source(settings: &ClickHouseSettings) -> String {
    match &settings.password_file {
        Some(file) => format!("the password file {}", file.display()),
        None if settings.password_env.is_empty() => "no password is configured".to_string(),
        None => format!("the password in ${}", settings.password_env),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn names_are_validated() {
        for ok in ["streamforge", "_t", "order_metrics_2", "A", &"x".repeat(64)] {
            assert!(validate_name("table", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "1abc",
            "a-b",
            "a.b",
            "a`b",
            "a'b",
            "a b",
            "é",
            &"x".repeat(65),
            "t;DROP",
        ] {
            let err = validate_name("table", bad).unwrap_err();
            assert!(err.contains("table name"), "{err}");
        }
    }

    #[test]
    fn urls_are_checked_and_shown_without_credentials() {
        assert!(parse_url("http://127.0.0.1:8123").is_ok());
        assert!(parse_url("https://ch.example.com:8443/proxy/").is_ok());
        assert!(parse_url("ftp://host")
            .unwrap_err()
            .contains("http or https"));
        assert!(parse_url("127.0.0.1:8123").is_err());
        assert!(parse_url("http://host:8123/?user=x").is_err());
        let err = parse_url("http://bob:s3cret@host:8123").unwrap_err();
        assert!(
            err.contains("credentials") && !err.contains("s3cret"),
            "{err}"
        );
        let url = Url::parse("http://bob:s3cret@host:8123/").unwrap();
        assert_eq!(display_url(&url), "http://host:8123");
    }

    #[test]
    fn the_password_comes_from_the_file_or_the_environment() {
        let env = |var: &str| (var == "MY_CH_PW").then(|| "from-env".to_string());
        let mut s = ClickHouseSettings {
            password_env: "MY_CH_PW".into(),
            ..Default::default()
        };
        assert_eq!(
            resolve_password(&s, env).unwrap().unwrap().expose(),
            "from-env"
        );
        s.password_env = "OTHER".into();
        assert!(resolve_password(&s, env).unwrap().is_none());
        s.password_env = String::new();
        assert!(resolve_password(&s, env).unwrap().is_none());
        let empty = |_: &str| Some(String::new());
        s.password_env = "MY_CH_PW".into();
        assert!(resolve_password(&s, empty).unwrap().is_none());

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "p@ss word\r\n").unwrap();
        s.password_file = Some(file.clone());
        assert_eq!(
            resolve_password(&s, env).unwrap().unwrap().expose(),
            "p@ss word"
        );
        s.password_file = Some(dir.path().join("missing"));
        let err = resolve_password(&s, env).unwrap_err();
        assert!(
            err.contains("password_file") && err.contains("missing"),
            "{err}"
        );
    }

    #[test]
    fn environment_overrides_apply_on_top() {
        let env: Vec<(String, String)> = [
            ("CLICKHOUSE_URL", "http://ch:8123"),
            ("CLICKHOUSE_TABLE", "metrics2"),
            ("CLICKHOUSE_USER", ""),
            ("CLICKHOUSE_DEAD_LETTER_LOG", "/tmp/dl.log"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let s = crate::config::Config::load_with(Some(Path::new("/dev/null")), &[], &env)
            .unwrap()
            .config
            .clickhouse;
        assert_eq!(s.url, "http://ch:8123");
        assert_eq!(s.table, "metrics2");
        assert_eq!(s.database, "streamforge");
        assert_eq!(s.user, "default");
        assert_eq!(s.dead_letter_log, PathBuf::from("/tmp/dl.log"));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let s = ClickHouseSettings {
            url: "ftp://x".into(),
            table: "a-b".into(),
            timeout: Dur(Duration::ZERO),
            dead_letter_log: PathBuf::new(),
            ..Default::default()
        };
        let problems = s.validate().unwrap_err();
        assert_eq!(problems.len(), 4, "{problems:?}");
    }

    #[test]
    fn the_shipped_config_file_holds_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(crate::config::DEFAULT_CONFIG);
        let text = std::fs::read_to_string(&path).unwrap();
        let tree: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
        let parsed: ClickHouseSettings =
            serde_yaml_ng::from_value(tree["clickhouse"].clone()).unwrap();
        assert_eq!(parsed, ClickHouseSettings::default());
        assert!(text.contains("CLICKHOUSE_PASSWORD") && text.contains("# password_file:"));
        for (var, _) in crate::config::ENV_ALIASES {
            assert!(
                text.contains(var),
                "{var} is not documented in {}",
                path.display()
            );
        }
        let err = serde_yaml_ng::from_str::<ClickHouseSettings>("passwd: x\n").unwrap_err();
        assert!(err.to_string().contains("passwd"), "{err}");
        let s: ClickHouseSettings =
            serde_yaml_ng::from_str("timeout: 2s\nconnect_timeout: 500\n").unwrap();
        assert_eq!((s.timeout.ms(), s.connect_timeout.ms()), (2000, 500));
    }
}
