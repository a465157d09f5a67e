//! The ClickHouse sink: window rows upserted into a `ReplacingMergeTree`
//! over ClickHouse's HTTP interface (SPEC §6).
//!
//! Idempotence comes from the table, not from this code: every row carries
//! its `version`, the table is `ReplacingMergeTree(version) ORDER BY
//! window_start`, and readers use `FINAL`, so a window written twice, or an
//! older version written after a newer one, reads back as the highest
//! version. That is why a write can simply be retried, and why
//! [`ClickHouseSink::ensure_schema`] refuses a table whose engine, sorting key
//! or partition key would break that rule.
//!
//! # Requests
//!
//! Every call is one blocking HTTP POST. Statements travel in the body; an
//! `INSERT` puts its SQL in the `query` URL parameter and the rows, as
//! `JSONEachRow`, in the body. Values never go into SQL text, and the only
//! names that do (database and table) are validated against
//! `^[A-Za-z_][A-Za-z0-9_]{0,63}$` first, then quoted with backticks. Money
//! travels as an unquoted JSON number with exactly two decimals built from
//! integer cents, never through a float.
//!
//! # Compatibility
//!
//! The SQL runs unchanged on ClickHouse 18.16 (Debian's package, used by the
//! tests) and on current releases: no query parameters, no `LowCardinality`,
//! no `DateTime64`, no settings 18.16 lacks. Known differences are absorbed
//! here: 18.16 answers errors as `Code: 60, e.displayText() = ...` and
//! current releases as `Code: 60. DB::Exception: ...`; current releases print
//! `toString(Decimal)` without trailing zeros (`12.3`), which
//! [`parse_amount_cents`] reads exactly all the same.
//!
//! # Errors
//!
//! A failure is [`SinkError::Retryable`] when the same request may succeed
//! later (refused or reset connections, timeouts, HTTP 5xx, 408, 429) and
//! [`SinkError::Fatal`] when an operator must act: credentials, permissions, a
//! missing table, a schema that rejects the rows, or any other 4xx. A 5xx
//! whose body carries a ClickHouse error code meaning "this data, schema or
//! query is wrong" is fatal too, because retrying it would loop forever.
//! Every message names the server (never the credentials), the table,
//! ClickHouse's own words and what to do.

use std::fmt::{self, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::anyhow;
use reqwest::blocking::Client;
use reqwest::Url;
use serde::{Deserialize, Serialize};

use super::{Sink, SinkError};
use crate::config::Dur;
use crate::event::{format_cents, parse_amount_cents, MAX_AMOUNT_CENTS};
use crate::window::WindowRow;

/// The table's columns and their types, in order (SPEC §6).
pub const COLUMNS: [(&str, &str); 7] = [
    ("window_start", "DateTime"),
    ("window_end", "DateTime"),
    ("order_cnt", "UInt64"),
    ("gmv_total", "Decimal(18, 2)"),
    ("user_cnt", "UInt64"),
    ("version", "UInt64"),
    ("updated_at", "DateTime"),
];

/// The engine clause of the table; `engine_full` of a correct table starts
/// with it.
pub const ENGINE: &str = "ReplacingMergeTree(version)";

/// Engines with `ReplacingMergeTree`'s semantics: the plain one, and the
/// replicated and cloud variants, whose last engine argument is the version
/// column just the same.
const REPLACING_ENGINES: [&str; 3] = [
    "ReplacingMergeTree",
    "ReplicatedReplacingMergeTree",
    "SharedReplacingMergeTree",
];

/// The longest ClickHouse message quoted in an error, in characters.
const MAX_MESSAGE_CHARS: usize = 300;

/// Where the sink connects and how. Read from `config/clickhouse_config.yaml`
/// by [`load_settings`]; the password itself is never in this struct.
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
        }
    }
}

/// Environment variables that override settings from the file.
pub const ENV_OVERRIDES: [&str; 4] = [
    "CLICKHOUSE_URL",
    "CLICKHOUSE_DATABASE",
    "CLICKHOUSE_TABLE",
    "CLICKHOUSE_USER",
];

impl ClickHouseSettings {
    /// Applies `CLICKHOUSE_URL`, `CLICKHOUSE_DATABASE`, `CLICKHOUSE_TABLE` and
    /// `CLICKHOUSE_USER` from `lookup` (the environment, in production); an
    /// empty value counts as unset.
    pub fn apply_env_overrides(&mut self, lookup: impl Fn(&str) -> Option<String>) {
        for var in ENV_OVERRIDES {
            let Some(value) = lookup(var).filter(|v| !v.is_empty()) else {
                continue;
            };
            match var {
                "CLICKHOUSE_URL" => self.url = value,
                "CLICKHOUSE_DATABASE" => self.database = value,
                "CLICKHOUSE_TABLE" => self.table = value,
                _ => self.user = value,
            }
        }
    }

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
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

/// Loads the ClickHouse settings file strictly, applies the `CLICKHOUSE_*`
/// environment overrides and validates the result.
pub fn load_settings(path: &Path) -> anyhow::Result<ClickHouseSettings> {
    let mut settings: ClickHouseSettings = crate::config::load_yaml(path, "ClickHouse")?;
    settings.apply_env_overrides(|var| std::env::var(var).ok());
    settings.validate().map_err(|problems| {
        anyhow!(
            "ClickHouse settings ({}, with CLICKHOUSE_* environment overrides) are invalid:\n  - {}",
            path.display(),
            problems.join("\n  - ")
        )
    })?;
    Ok(settings)
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
fn parse_url(text: &str) -> Result<Url, String> {
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
fn display_url(url: &Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    shown.as_str().trim_end_matches('/').to_string()
}

/// A password that never shows in `Debug` output.
#[derive(Clone)]
struct Password(String);

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The password per the settings: `password_file` when set, else the
/// variable `password_env` names (`lookup` reads the environment).
fn resolve_password(
    settings: &ClickHouseSettings,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Option<Password>, String> {
    if let Some(file) = &settings.password_file {
        let text = std::fs::read_to_string(file).map_err(|e| {
            format!(
                "cannot read the password file {} (password_file): {e}",
                file.display()
            )
        })?;
        let password = text.strip_suffix('\n').unwrap_or(&text);
        let password = password.strip_suffix('\r').unwrap_or(password);
        return Ok(Some(Password(password.to_string())).filter(|p| !p.0.is_empty()));
    }
    if settings.password_env.is_empty() {
        return Ok(None);
    }
    Ok(lookup(&settings.password_env)
        .filter(|p| !p.is_empty())
        .map(Password))
}

/// What went wrong with a request, which decides retry and advice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// No connection, or it broke: the server is down or unreachable.
    Unreachable,
    /// No complete answer in time.
    Timeout,
    /// A server-side problem that may pass (5xx, 408, 429).
    Server,
    /// The server certificate was rejected.
    Certificate,
    /// An https URL, but the port does not speak TLS.
    NotTls,
    /// Unknown user or wrong password.
    Credentials,
    /// Authenticated, but not allowed.
    Permission,
    /// The database or table does not exist.
    MissingTable,
    /// The server refuses these rows or this query as such.
    Rejected,
    /// Any other 4xx.
    BadRequest,
    /// The answer was not what the query asks for.
    BadAnswer,
}

impl Failure {
    fn retryable(self) -> bool {
        matches!(
            self,
            Failure::Unreachable | Failure::Timeout | Failure::Server
        )
    }
}

/// ClickHouse error codes that mean the credentials are wrong.
const CREDENTIAL_CODES: [u32; 5] = [
    192, // UNKNOWN_USER
    193, // WRONG_PASSWORD
    194, // REQUIRED_PASSWORD
    195, // IP_ADDRESS_NOT_ALLOWED
    516, // AUTHENTICATION_FAILED
];

/// ... that the user lacks a permission.
const PERMISSION_CODES: [u32; 3] = [
    164, // READONLY
    291, // DATABASE_ACCESS_DENIED
    497, // ACCESS_DENIED
];

/// ... that the database or table is missing.
const MISSING_TABLE_CODES: [u32; 2] = [
    60, // UNKNOWN_TABLE
    81, // UNKNOWN_DATABASE
];

/// ... that the rows, the schema or the query are wrong, so the same request
/// can never succeed, whatever the HTTP status says (often 500).
const REJECTED_CODES: [u32; 22] = [
    6,   // CANNOT_PARSE_TEXT
    8,   // THERE_IS_NO_COLUMN
    10,  // NOT_FOUND_COLUMN_IN_BLOCK
    16,  // NO_SUCH_COLUMN_IN_TABLE
    26,  // CANNOT_PARSE_QUOTED_STRING
    27,  // CANNOT_PARSE_INPUT_ASSERTION_FAILED
    38,  // CANNOT_PARSE_DATE
    41,  // CANNOT_PARSE_DATETIME
    43,  // ILLEGAL_TYPE_OF_ARGUMENT
    44,  // ILLEGAL_COLUMN
    46,  // UNKNOWN_FUNCTION
    47,  // UNKNOWN_IDENTIFIER
    48,  // NOT_IMPLEMENTED
    53,  // TYPE_MISMATCH
    62,  // SYNTAX_ERROR
    69,  // ARGUMENT_OUT_OF_BOUND (18.16: a decimal that does not fit)
    70,  // CANNOT_CONVERT_TYPE
    72,  // CANNOT_PARSE_NUMBER
    73,  // UNKNOWN_FORMAT
    115, // UNKNOWN_SETTING
    117, // INCORRECT_DATA (e.g. an unknown JSONEachRow field)
    407, // DECIMAL_OVERFLOW
];

/// The ClickHouse error code in an error body: `Code: 60, ...` (18.16) or
/// `Code: 60. DB::Exception: ...` (current releases).
fn error_code(body: &str) -> Option<u32> {
    let at = body.find("Code: ")?;
    let digits: String = body[at + 6..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Sorts an HTTP error answer into a [`Failure`].
fn classify_response(status: u16, code: Option<u32>) -> Failure {
    match code {
        Some(c) if CREDENTIAL_CODES.contains(&c) => return Failure::Credentials,
        Some(c) if PERMISSION_CODES.contains(&c) => return Failure::Permission,
        Some(c) if MISSING_TABLE_CODES.contains(&c) => return Failure::MissingTable,
        Some(c) if REJECTED_CODES.contains(&c) => return Failure::Rejected,
        _ => {}
    }
    match status {
        401 | 403 => Failure::Credentials,
        408 | 429 => Failure::Server,
        400..=499 => Failure::BadRequest,
        // 5xx, and anything unexpected (a proxy's 3xx or 1xx): may pass.
        _ => Failure::Server,
    }
}

/// The first line of a ClickHouse error body, without 18.16's
/// `e.displayText() = ` noise, trimmed to [`MAX_MESSAGE_CHARS`].
fn clickhouse_message(body: &str) -> String {
    let line = body
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    let line = line.replacen("e.displayText() = ", "", 1);
    let line = line
        .trim_end_matches(", e.what() = DB::Exception")
        .trim_end_matches(',');
    if line.chars().count() <= MAX_MESSAGE_CHARS {
        line.to_string()
    } else {
        let cut: String = line.chars().take(MAX_MESSAGE_CHARS).collect();
        format!("{cut}...")
    }
}

/// One failed request, before it is worded for the operator.
struct Failed {
    kind: Failure,
    detail: String,
}

/// How often a request is sent again at once after a connection closed
/// without an answer (see [`closed_unanswered`]).
const STALE_RETRIES: u32 = 2;

/// Whether `error` is a connection that closed (or was reset) after the
/// request went out and before any answer came: what a reused keep-alive
/// connection the server just dropped looks like. A server that is down
/// refuses the connection instead, which this is not.
fn closed_unanswered(error: &reqwest::Error) -> bool {
    if error.is_timeout() || error.is_connect() {
        return false;
    }
    let mut next: Option<&dyn std::error::Error> = Some(error);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
            ) {
                return true;
            }
        }
        // hyper's words for a connection closed before the answer.
        if e.to_string()
            .contains("connection closed before message completed")
        {
            return true;
        }
        next = e.source();
    }
    false
}

/// Describes a transport error: the top-level error without its URL (which
/// would repeat the query), then the innermost cause.
fn transport_failure(error: reqwest::Error) -> Failed {
    let error = error.without_url();
    let mut root: &dyn std::error::Error = &error;
    while let Some(next) = root.source() {
        root = next;
    }
    let top = error.to_string();
    let cause = root.to_string();
    let mut chain = String::new();
    let mut next: Option<&dyn std::error::Error> = Some(&error);
    while let Some(e) = next {
        let _ = write!(chain, "{e} / ");
        next = e.source();
    }
    let kind = if chain.contains("certificate") || chain.contains("Certificate") {
        Failure::Certificate
    } else if chain.contains("corrupt message") || chain.contains("InvalidContentType") {
        // rustls got a plain HTTP answer to its handshake.
        Failure::NotTls
    } else if error.is_timeout() {
        Failure::Timeout
    } else {
        Failure::Unreachable
    };
    let detail = if cause == top {
        top
    } else {
        format!("{top}: {cause}")
    };
    Failed { kind, detail }
}

/// Appends one row as a `JSONEachRow` line. DateTimes are epoch seconds,
/// `gmv_total` an unquoted number with exactly two decimals (18.16 rejects
/// a quoted decimal). Values a column cannot hold are refused here: 18.16
/// would silently wrap a DateTime outside `0..=u32::MAX`.
fn encode_row(row: &WindowRow, out: &mut String) -> Result<(), String> {
    for (column, value) in [
        ("window_start", row.window_start),
        ("window_end", row.window_end),
        ("updated_at", row.updated_at),
    ] {
        if !(0..=i64::from(u32::MAX)).contains(&value) {
            return Err(format!(
                "the window starting at {} has {column} = {value}, outside what a ClickHouse DateTime \
                 holds (0 to {}, 1970 to 2106)",
                row.window_start,
                u32::MAX
            ));
        }
    }
    if row.gmv_cents > u128::from(MAX_AMOUNT_CENTS) {
        return Err(format!(
            "the window starting at {} has gmv_total {}, more than Decimal(18, 2) holds",
            row.window_start,
            format_cents(row.gmv_cents)
        ));
    }
    let _ = writeln!(
        out,
        "{{\"window_start\":{},\"window_end\":{},\"order_cnt\":{},\"gmv_total\":{},\"user_cnt\":{},\"version\":{},\"updated_at\":{}}}",
        row.window_start,
        row.window_end,
        row.order_cnt,
        format_cents(row.gmv_cents),
        row.user_cnt,
        row.version,
        row.updated_at
    );
    Ok(())
}

/// Reads one `TabSeparated` field (18.16 escapes `'` as `\'` too).
fn tsv_unescape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('0') => out.push('\0'),
            Some('b') => out.push('\u{8}'),
            Some('f') => out.push('\u{c}'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// Parses the answer of [`ClickHouseSink::read_final`]'s query.
fn parse_final_rows(text: &str) -> Result<Vec<WindowRow>, String> {
    let mut rows = Vec::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.is_empty()) {
        let bad = |why: &str| {
            format!(
                "line {} of the answer ({why}): `{}`",
                n + 1,
                clickhouse_message(line)
            )
        };
        let fields: Vec<&str> = line.split('\t').collect();
        let [start, end, orders, gmv, users, version, updated] = fields[..] else {
            return Err(bad("expected 7 tab-separated fields"));
        };
        let int = |text: &str| {
            text.parse::<u64>()
                .map_err(|_| bad("not an unsigned integer"))
        };
        rows.push(WindowRow {
            window_start: int(start)? as i64,
            window_end: int(end)? as i64,
            order_cnt: int(orders)?,
            gmv_cents: u128::from(
                parse_amount_cents(gmv).ok_or_else(|| bad("gmv_total is not an amount"))?,
            ),
            user_cnt: int(users)?,
            version: int(version)?,
            updated_at: int(updated)? as i64,
        });
    }
    Ok(rows)
}

/// What `system.tables` and `system.columns` say about an existing table.
#[derive(Debug, Clone, Default)]
struct TableInfo {
    engine: String,
    engine_full: String,
    sorting_key: String,
    partition_key: String,
    columns: Vec<(String, String)>,
}

/// The top-level arguments of the engine clause that starts `engine_full`
/// (`Name(a, b) PARTITION BY ...` gives `[a, b]`), or `None` without a list.
fn engine_args<'a>(engine_full: &'a str, engine: &str) -> Option<Vec<&'a str>> {
    let inner = engine_full.strip_prefix(engine)?.strip_prefix('(')?;
    let (mut depth, mut quote, mut escaped, mut start) = (0u32, None, false, 0);
    let mut args = Vec::new();
    for (i, c) in inner.char_indices() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '\'' | '`' | '"' => quote = Some(c),
            '(' => depth += 1,
            ')' if depth == 0 => {
                args.push(inner[start..i].trim());
                return Some(args);
            }
            ')' => depth -= 1,
            ',' if depth == 0 => {
                args.push(inner[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    None
}

/// Whether a partition key expression reads no column but `window_start`,
/// so all versions of a window land in one partition (where `FINAL` and
/// merges replace them). Function names are the identifiers before `(`.
fn partition_key_ok(expr: &str) -> bool {
    let b = expr.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'\'' || c == b'"' {
            // A string literal: skip it.
            i += 1;
            while i < b.len() && b[i] != c {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c.is_ascii_digit() {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == b'_' || c == b'`' {
            let quoted = c == b'`';
            let begin = if quoted { i + 1 } else { i };
            i = begin;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            let name = &expr[begin..i];
            if quoted && i < b.len() && b[i] == b'`' {
                i += 1;
            }
            let rest = expr[i..].trim_start();
            if !rest.starts_with('(') && name != "window_start" {
                return false;
            }
        } else {
            i += 1;
        }
    }
    true
}

/// A column type as compared: `DateTime('UTC')` counts as `DateTime`, since
/// rows travel as epoch seconds and are read back with `toUInt32`.
fn normalized_type(ty: &str) -> &str {
    if ty.starts_with("DateTime(") {
        "DateTime"
    } else {
        ty
    }
}

/// Everything about `info` that differs from SPEC §6 in a way that matters.
fn schema_problems(info: &TableInfo) -> Vec<String> {
    let mut problems = Vec::new();
    let expected: Vec<String> = COLUMNS.iter().map(|(n, t)| format!("{n} {t}")).collect();
    let found: Vec<String> = info
        .columns
        .iter()
        .map(|(n, t)| format!("{n} {t}"))
        .collect();
    let same_columns = info.columns.len() == COLUMNS.len()
        && info
            .columns
            .iter()
            .zip(COLUMNS)
            .all(|((name, ty), (want_name, want_ty))| {
                name == want_name && normalized_type(ty) == want_ty
            });
    if !same_columns {
        let mut diffs = Vec::new();
        for (i, (name, ty)) in COLUMNS.iter().enumerate() {
            match info.columns.get(i) {
                Some((n, t)) if n == name && normalized_type(t) == *ty => {}
                Some((n, t)) => diffs.push(format!(
                    "column {} is `{n} {t}`, expected `{name} {ty}`",
                    i + 1
                )),
                None => diffs.push(format!("column {} `{name} {ty}` is missing", i + 1)),
            }
        }
        for (n, t) in info.columns.iter().skip(COLUMNS.len()) {
            diffs.push(format!("extra column `{n} {t}`"));
        }
        problems.push(format!(
            "columns differ ({}): expected ({}), found ({})",
            diffs.join("; "),
            expected.join(", "),
            found.join(", ")
        ));
    }
    if !REPLACING_ENGINES.contains(&info.engine.as_str()) {
        problems.push(format!(
            "engine is {}, expected {ENGINE}: without it a window's versions are never replaced",
            info.engine
        ));
    } else {
        let last =
            engine_args(&info.engine_full, &info.engine).and_then(|args| args.last().copied());
        if last.map(|a| a.trim_matches('`')) != Some("version") {
            problems.push(format!(
                "engine is `{}`, expected {ENGINE}: without the version column the last insert wins, \
                 not the highest version",
                info.engine_full
            ));
        }
    }
    if info.sorting_key.replace('`', "").trim() != "window_start" {
        problems.push(format!(
            "ORDER BY is `{}`, expected `window_start`: rows are replaced per sorting key",
            info.sorting_key
        ));
    }
    if !partition_key_ok(&info.partition_key) {
        problems.push(format!(
            "PARTITION BY `{}` reads other columns than window_start: versions of one window could \
             land in different partitions and never replace each other (expected toYYYYMMDD(window_start))",
            info.partition_key
        ));
    }
    problems
}

/// Writes window rows to one ClickHouse table over HTTP.
pub struct ClickHouseSink {
    client: Client,
    /// The endpoint, without credentials (they go in a header).
    url: Url,
    /// `url` as shown in messages.
    server: String,
    database: String,
    table: String,
    /// `` `db`.`table` ``, for SQL.
    quoted: String,
    user: String,
    password: Option<Password>,
    /// Where the password comes from, for advice after an auth failure.
    password_source: String,
    create_table: bool,
    timeout: Duration,
    /// Set once `ensure_schema` succeeded: a job may start while ClickHouse
    /// is down, and then checks the table before its first write.
    schema_ok: bool,
}

impl fmt::Debug for ClickHouseSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClickHouseSink")
            .field("server", &self.server)
            .field("database", &self.database)
            .field("table", &self.table)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("create_table", &self.create_table)
            .finish()
    }
}

impl ClickHouseSink {
    /// Builds the client. Validates the settings and reads the password and
    /// CA file, but does not contact the server.
    pub fn connect(settings: &ClickHouseSettings) -> Result<Self, SinkError> {
        Self::connect_with_env(settings, |var| std::env::var(var).ok())
    }

    fn connect_with_env(
        settings: &ClickHouseSettings,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, SinkError> {
        let config_error =
            |problem: String| SinkError::Fatal(format!("ClickHouse settings: {problem}"));
        settings
            .validate()
            .map_err(|problems| config_error(problems.join("; ")))?;
        let url = parse_url(&settings.url).map_err(config_error)?;
        let password = resolve_password(settings, lookup).map_err(config_error)?;
        let password_source = match &settings.password_file {
            Some(file) => format!("the password file {}", file.display()),
            None if settings.password_env.is_empty() => "no password is configured".to_string(),
            None => format!("the password in ${}", settings.password_env),
        };

        let mut builder = Client::builder()
            .timeout(settings.timeout.0)
            .connect_timeout(settings.connect_timeout.0)
            // Below ClickHouse's keep_alive_timeout (3 s by default), so a
            // pooled connection is not reused just as the server closes it.
            .pool_idle_timeout(Duration::from_secs(2))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("streamforge/", env!("CARGO_PKG_VERSION")));
        if let Some(ca_file) = &settings.ca_file {
            let pem = std::fs::read(ca_file).map_err(|e| {
                config_error(format!("cannot read ca_file {}: {e}", ca_file.display()))
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                config_error(format!("ca_file {} is not PEM: {e}", ca_file.display()))
            })?;
            if certs.is_empty() {
                return Err(config_error(format!(
                    "ca_file {} holds no certificate",
                    ca_file.display()
                )));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        if settings.insecure_skip_verify {
            tracing::warn!(
                server = %display_url(&url),
                "insecure_skip_verify is on: the ClickHouse server's certificate is not checked"
            );
            builder = builder.danger_accept_invalid_certs(true);
        }
        let client = builder
            .build()
            .map_err(|e| config_error(format!("cannot build the HTTP client: {e}")))?;
        Ok(ClickHouseSink {
            client,
            server: display_url(&url),
            url,
            quoted: format!("`{}`.`{}`", settings.database, settings.table),
            database: settings.database.clone(),
            table: settings.table.clone(),
            user: settings.user.clone(),
            password,
            password_source,
            create_table: settings.create_table,
            timeout: settings.timeout.0,
            schema_ok: false,
        })
    }

    /// Skips the schema check before the first write (tests of the insert
    /// path itself).
    #[doc(hidden)]
    pub fn assume_schema_checked(&mut self) {
        self.schema_ok = true;
    }

    /// Checks (or creates) the table now if ClickHouse answers; if it is
    /// down, leaves the check to the first write and says so. Only a wrong
    /// schema or bad credentials are errors here.
    pub fn prepare(&mut self) -> Result<(), SinkError> {
        match self.ensure_schema() {
            Ok(()) => {
                self.schema_ok = true;
                Ok(())
            }
            Err(SinkError::Retryable(e)) => {
                tracing::warn!(
                    error = %e,
                    "ClickHouse is not reachable at start-up; the job starts anyway, keeps output pending and \
                     checks the table before the first write"
                );
                Ok(())
            }
            Err(fatal) => Err(fatal),
        }
    }

    /// The table as `database.table`.
    pub fn table_name(&self) -> String {
        format!("{}.{}", self.database, self.table)
    }

    /// The `CREATE TABLE` statement of SPEC §6 for the configured table
    /// (names are assumed valid; [`ClickHouseSink::connect`] checks them).
    pub fn ddl(settings: &ClickHouseSettings) -> String {
        let mut sql = format!(
            "CREATE TABLE IF NOT EXISTS `{}`.`{}`\n(\n",
            settings.database, settings.table
        );
        for (i, (name, ty)) in COLUMNS.iter().enumerate() {
            let comma = if i + 1 < COLUMNS.len() { "," } else { "" };
            let _ = writeln!(sql, "    {name:<12} {ty}{comma}");
        }
        sql.push_str(")\nENGINE = ReplacingMergeTree(version)\nPARTITION BY toYYYYMMDD(window_start)\nORDER BY window_start");
        sql
    }

    fn own_ddl(&self) -> String {
        Self::ddl(&ClickHouseSettings {
            database: self.database.clone(),
            table: self.table.clone(),
            ..ClickHouseSettings::default()
        })
    }

    /// Creates the database and the table when missing (if `create_table`),
    /// then checks that the table's columns, engine, sorting key and
    /// partition key are those of SPEC §6. A mismatch is fatal and says
    /// what differs and what to do.
    pub fn ensure_schema(&self) -> Result<(), SinkError> {
        let mut info = self.table_info()?;
        if info.is_none() && self.create_table {
            let action = "creating the table";
            let databases = self.run(
                action,
                None,
                format!(
                    "SELECT name FROM system.databases WHERE name = '{}'",
                    self.database
                ),
                true,
            )?;
            if databases.trim().is_empty() {
                self.run(
                    action,
                    None,
                    format!("CREATE DATABASE IF NOT EXISTS `{}`", self.database),
                    false,
                )?;
                tracing::info!(server = %self.server, database = %self.database, "created the ClickHouse database");
            }
            self.run(action, None, self.own_ddl(), false)?;
            tracing::info!(server = %self.server, table = %self.table_name(), "created the ClickHouse table");
            info = self.table_info()?;
        }
        let Some(info) = info else {
            return Err(SinkError::Fatal(format!(
                "ClickHouse {}: table {} does not exist{}. Set `create_table: true` in the ClickHouse settings \
                 so StreamForge creates it, or create it with sql/create_ck_table.sql",
                self.server,
                self.table_name(),
                if self.create_table { " even after creating it" } else { " and create_table is false" }
            )));
        };
        let problems = schema_problems(&info);
        if problems.is_empty() {
            return Ok(());
        }
        Err(SinkError::Fatal(format!(
            "ClickHouse {}: table {} exists but is not the table StreamForge writes (SPEC §6): {}. \
             StreamForge does not alter or drop tables: rename or drop this one (e.g. RENAME TABLE {} TO {}_old) \
             and let StreamForge create it, or set `table` to a new name. The expected DDL is in \
             sql/create_ck_table.sql",
            self.server,
            self.table_name(),
            problems.join("; "),
            self.table_name(),
            self.table_name()
        )))
    }

    /// The table's engine, keys and columns, or `None` if it does not exist.
    fn table_info(&self) -> Result<Option<TableInfo>, SinkError> {
        let action = "checking the table's schema";
        // Validated names are safe inside quotes: no quote, no backslash.
        let tables = self.run(
            action,
            None,
            format!(
                "SELECT engine, engine_full, sorting_key, partition_key FROM system.tables \
                 WHERE database = '{}' AND name = '{}' FORMAT TabSeparated",
                self.database, self.table
            ),
            true,
        )?;
        let Some(line) = tables.lines().next().filter(|l| !l.is_empty()) else {
            return Ok(None);
        };
        let fields: Vec<String> = line.split('\t').map(tsv_unescape).collect();
        let [engine, engine_full, sorting_key, partition_key] = &fields[..] else {
            return Err(self.failure(
                action,
                Failed {
                    kind: Failure::BadAnswer,
                    detail: format!(
                        "unexpected system.tables row `{}`",
                        clickhouse_message(line)
                    ),
                },
            ));
        };
        // system.columns lists a table's columns in their order (18.16 has
        // no `position` column to sort by).
        let columns = self.run(
            action,
            None,
            format!(
                "SELECT name, type FROM system.columns WHERE database = '{}' AND table = '{}' FORMAT TabSeparated",
                self.database, self.table
            ),
            true,
        )?;
        let columns = columns
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (name, ty) = l.split_once('\t').unwrap_or((l, ""));
                (tsv_unescape(name), tsv_unescape(ty))
            })
            .collect();
        Ok(Some(TableInfo {
            engine: engine.clone(),
            engine_full: engine_full.clone(),
            sorting_key: sorting_key.clone(),
            partition_key: partition_key.clone(),
            columns,
        }))
    }

    /// Runs `sql` (the request body) and returns the answer as text.
    pub fn query_text(&self, sql: &str) -> Result<String, SinkError> {
        self.run("query", None, sql.to_string(), true)
    }

    /// Empties the table (tests, replays).
    pub fn truncate(&self) -> Result<(), SinkError> {
        self.run(
            "truncating the table",
            None,
            format!("TRUNCATE TABLE {}", self.quoted),
            false,
        )
        .map(drop)
    }

    /// Drops the table if it exists (tests, replays).
    pub fn drop_table(&self) -> Result<(), SinkError> {
        self.run(
            "dropping the table",
            None,
            format!("DROP TABLE IF EXISTS {}", self.quoted),
            false,
        )
        .map(drop)
    }

    /// One POST: `query` as the URL parameter if given, `body` as the body.
    /// `buffered` asks the server to answer only once the query is done, so
    /// an error half-way gets an error status instead of a truncated 200.
    fn run(
        &self,
        action: &str,
        query: Option<&str>,
        body: String,
        buffered: bool,
    ) -> Result<String, SinkError> {
        self.send(query, body, buffered)
            .map_err(|failed| self.failure(action, failed))
    }

    fn send(&self, query: Option<&str>, body: String, buffered: bool) -> Result<String, Failed> {
        let mut request = self.client.post(self.url.clone());
        let mut params: Vec<(&str, &str)> = Vec::new();
        if let Some(query) = query {
            params.push(("query", query));
        }
        if buffered {
            params.push(("wait_end_of_query", "1"));
        }
        if !params.is_empty() {
            request = request.query(&params);
        }
        if !self.user.is_empty() || self.password.is_some() {
            request = request.basic_auth(&self.user, self.password.as_ref().map(|p| &p.0));
        }
        let request = request.body(body);
        // A pooled keep-alive connection the server (or a proxy) closed just
        // as this request went out fails with nothing answered. Every
        // request this sink sends is idempotent (inserts are keyed and
        // versioned), so it is sent again, at once, on a new connection,
        // rather than reported as an outage.
        let mut stale_retries = 0;
        let response = loop {
            let attempt = request
                .try_clone()
                .expect("a request with an in-memory body can be cloned");
            match attempt.send() {
                Ok(response) => break response,
                Err(e) if stale_retries < STALE_RETRIES && closed_unanswered(&e) => {
                    stale_retries += 1;
                    tracing::debug!(error = %e, attempt = stale_retries, "ClickHouse closed the connection without an answer; sending again");
                }
                Err(e) => return Err(transport_failure(e)),
            }
        };
        let status = response.status();
        let header_code = response
            .headers()
            .get("X-ClickHouse-Exception-Code")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u32>().ok());
        let text = response.text().map_err(transport_failure)?;
        if status.is_success() {
            return Ok(text);
        }
        let code = error_code(&text).or(header_code);
        let message = clickhouse_message(&text);
        let reason = status.canonical_reason().unwrap_or("");
        let detail = if message.is_empty() {
            format!("HTTP {} {reason} with an empty body", status.as_u16())
        } else {
            format!("HTTP {}: {message}", status.as_u16())
        };
        Err(Failed {
            kind: classify_response(status.as_u16(), code),
            detail,
        })
    }

    /// Words a failure for the operator, as retryable or fatal.
    fn failure(&self, action: &str, mut failed: Failed) -> SinkError {
        // 18.16 answers a query on system.columns with UNKNOWN_TABLE when
        // another table of the database is dropped meanwhile: that names a
        // table which is not ours, and passes.
        if failed.kind == Failure::MissingTable
            && failed.detail.contains("doesn't exist")
            && !failed
                .detail
                .contains(&format!("{}.{} ", self.database, self.table))
            && !failed
                .detail
                .contains(&format!("{}.{}.", self.database, self.table))
            && !failed
                .detail
                .contains(&format!("Database {} ", self.database))
        {
            failed.kind = Failure::Server;
        }
        let advice = match failed.kind {
            Failure::Unreachable => format!(
                "Is ClickHouse running and reachable at {}? (For the local stack: scripts/stack.sh up.)",
                self.server
            ),
            Failure::Timeout => format!(
                "No complete answer within {:?}: ClickHouse may be overloaded or the network slow; \
                 raise `timeout` in the ClickHouse settings if it persists",
                self.timeout
            ),
            Failure::Server => "A server-side problem that usually passes (overload, memory, too many parts)".into(),
            Failure::Certificate => "The server's TLS certificate was rejected: set `ca_file` to the CA that signed \
                it (or `insecure_skip_verify: true`, for tests only)"
                .into(),
            Failure::NotTls => "The port does not speak TLS: use an http:// URL for it, or the https port (often 8443)"
                .into(),
            Failure::Credentials => format!(
                "Check the credentials: `user` is `{}`, and {} (password_env / password_file in the ClickHouse \
                 settings)",
                self.user, self.password_source
            ),
            Failure::Permission => format!(
                "User `{}` lacks a permission: grant it SELECT, INSERT, CREATE TABLE and TRUNCATE on {} \
                 (and SELECT on system.tables and system.columns)",
                self.user,
                self.table_name()
            ),
            Failure::MissingTable => "The database or table is missing: set `create_table: true` in the ClickHouse \
                settings and restart, or create it with sql/create_ck_table.sql"
                .into(),
            Failure::Rejected => format!(
                "ClickHouse rejects these rows or this query as such, so retrying cannot help; the table's schema \
                 probably differs from SPEC §6: compare `SHOW CREATE TABLE {}` with sql/create_ck_table.sql",
                self.table_name()
            ),
            Failure::BadRequest => "Check that `url` points at ClickHouse's HTTP interface (port 8123, or 8443 for \
                https), not the native port 9000"
                .into(),
            Failure::BadAnswer => "The answer does not match the query: is `url` a ClickHouse server?".into(),
        };
        let message = format!(
            "ClickHouse {}, table {}: {action} failed: {}. {}{}",
            self.server,
            self.table_name(),
            failed.detail.trim_end_matches('.'),
            advice,
            if failed.kind.retryable() {
                " (retryable)"
            } else {
                ""
            }
        );
        if failed.kind.retryable() {
            SinkError::Retryable(message)
        } else {
            SinkError::Fatal(message)
        }
    }
}

impl Sink for ClickHouseSink {
    fn describe(&self) -> String {
        format!("clickhouse {} table {}", self.server, self.table_name())
    }

    fn write(&mut self, rows: &[WindowRow]) -> Result<(), SinkError> {
        if rows.is_empty() {
            return Ok(());
        }
        if !self.schema_ok {
            self.ensure_schema()?;
            self.schema_ok = true;
        }
        let columns: Vec<&str> = COLUMNS.iter().map(|(name, _)| *name).collect();
        let sql = format!(
            "INSERT INTO {} ({}) FORMAT JSONEachRow",
            self.quoted,
            columns.join(", ")
        );
        // One INSERT (one atomic block) per batch. Fault-injection tests can
        // split a batch into several INSERTs, to crash after part of it.
        let chunk_rows = crate::failpoint::value("sink::clickhouse::insert_chunk_rows")
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|n| *n > 0)
            .unwrap_or(rows.len());
        crate::failpoint::crash_point("sink::clickhouse::before_insert");
        let mut chunks = rows.chunks(chunk_rows).peekable();
        while let Some(chunk) = chunks.next() {
            let action = match chunk.len() {
                1 => "inserting 1 row".to_string(),
                n => format!("inserting {n} rows"),
            };
            let mut body = String::with_capacity(chunk.len() * 160);
            for row in chunk {
                encode_row(row, &mut body).map_err(|detail| {
                    self.failure(
                        &action,
                        Failed {
                            kind: Failure::Rejected,
                            detail,
                        },
                    )
                })?;
            }
            self.run(&action, Some(&sql), body, false)?;
            if chunks.peek().is_some() {
                crate::failpoint::crash_point("sink::clickhouse::between_chunks");
            }
        }
        crate::failpoint::crash_point("sink::clickhouse::after_insert");
        Ok(())
    }

    fn read_final(&mut self) -> Result<Vec<WindowRow>, SinkError> {
        let action = "reading the final rows";
        let sql = format!(
            "SELECT toUInt32(window_start), toUInt32(window_end), order_cnt, toString(gmv_total), user_cnt, \
             version, toUInt32(updated_at) FROM {} FINAL ORDER BY window_start FORMAT TabSeparated",
            self.quoted
        );
        let text = self.run(action, None, sql, true)?;
        parse_final_rows(&text).map_err(|detail| {
            self.failure(
                action,
                Failed {
                    kind: Failure::BadAnswer,
                    detail,
                },
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(start: i64, gmv_cents: u128, version: u64) -> WindowRow {
        WindowRow {
            window_start: start,
            window_end: start + 60,
            order_cnt: 3,
            gmv_cents,
            user_cnt: 2,
            version,
            updated_at: 1_764_064_900,
        }
    }

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
        let settings = ClickHouseSettings {
            table: "bad-name".into(),
            ..Default::default()
        };
        let err = ClickHouseSink::connect(&settings).unwrap_err();
        assert!(
            matches!(&err, SinkError::Fatal(m) if m.contains("bad-name")),
            "{err:?}"
        );
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
    fn rows_encode_as_exact_json_each_row() {
        let mut out = String::new();
        encode_row(&row(1_764_064_800, 7, 1), &mut out).unwrap();
        encode_row(
            &row(1_764_064_830, 999_999_999_999_999_999, u64::MAX),
            &mut out,
        )
        .unwrap();
        encode_row(&row(0, 0, 2), &mut out).unwrap();
        encode_row(&row(60, 1230, 3), &mut out).unwrap();
        let expected = concat!(
            r#"{"window_start":1764064800,"window_end":1764064860,"order_cnt":3,"gmv_total":0.07,"user_cnt":2,"version":1,"updated_at":1764064900}"#,
            "\n",
            r#"{"window_start":1764064830,"window_end":1764064890,"order_cnt":3,"gmv_total":9999999999999999.99,"user_cnt":2,"version":18446744073709551615,"updated_at":1764064900}"#,
            "\n",
            r#"{"window_start":0,"window_end":60,"order_cnt":3,"gmv_total":0.00,"user_cnt":2,"version":2,"updated_at":1764064900}"#,
            "\n",
            r#"{"window_start":60,"window_end":120,"order_cnt":3,"gmv_total":12.30,"user_cnt":2,"version":3,"updated_at":1764064900}"#,
            "\n",
        );
        assert_eq!(out, expected);
        // Every line is valid JSON with the decimal unquoted.
        for line in out.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert!(v["gmv_total"].is_number());
        }
    }

    #[test]
    fn rows_a_column_cannot_hold_are_refused() {
        let mut out = String::new();
        // Window [-30, 30) of an event in the first 30 s after the epoch.
        let err = encode_row(&row(-30, 1, 1), &mut out).unwrap_err();
        assert!(
            err.contains("window_start = -30") && err.contains("DateTime"),
            "{err}"
        );
        let err = encode_row(&row(i64::from(u32::MAX), 1, 1), &mut out).unwrap_err();
        assert!(err.contains("window_end"), "{err}");
        let err = encode_row(&row(0, 1_000_000_000_000_000_000, 1), &mut out).unwrap_err();
        assert!(
            err.contains("10000000000000000.00") && err.contains("Decimal(18, 2)"),
            "{err}"
        );
        assert!(out.is_empty());
    }

    #[test]
    fn final_rows_parse_exactly_from_old_and_new_servers() {
        // 18.16 prints `0.07` and `12.30`; current releases `12.3` and `5`.
        let text = "1764064800\t1764064860\t3\t0.07\t2\t1\t1764064900\n\
                    1764064830\t1764064890\t18446744073709551615\t9999999999999999.99\t2\t18446744073709551615\t0\n\
                    60\t120\t1\t12.3\t1\t1\t0\n\
                    90\t150\t1\t5\t1\t1\t0\n";
        let rows = parse_final_rows(text).unwrap();
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[0], row(1_764_064_800, 7, 1));
        assert_eq!(rows[1].order_cnt, u64::MAX);
        assert_eq!(rows[1].gmv_cents, 999_999_999_999_999_999);
        assert_eq!(rows[1].version, u64::MAX);
        assert_eq!(rows[2].gmv_cents, 1230);
        assert_eq!(rows[3].gmv_cents, 500);
        assert!(parse_final_rows("").unwrap().is_empty());
        let err = parse_final_rows("1\t2\t3\n").unwrap_err();
        assert!(err.contains("7 tab-separated"), "{err}");
        let err = parse_final_rows("1\t2\t3\t1.234\t5\t6\t7\n").unwrap_err();
        assert!(err.contains("gmv_total"), "{err}");
    }

    #[test]
    fn error_codes_are_found_in_old_and_new_bodies() {
        assert_eq!(
            error_code("Code: 60, e.displayText() = DB::Exception: Table x doesn't exist."),
            Some(60)
        );
        assert_eq!(
            error_code("Code: 516. DB::Exception: default: Authentication failed"),
            Some(516)
        );
        assert_eq!(error_code("Bad Gateway"), None);
        assert_eq!(error_code("Code: x"), None);
    }

    #[test]
    fn failures_are_classified_from_sample_bodies() {
        let cases: &[(u16, &str, Failure)] = &[
            (500, "Code: 27, e.displayText() = DB::Exception: Cannot parse input: expected , before: \"0.07\"", Failure::Rejected),
            (500, "Code: 69, e.displayText() = DB::Exception: Decimal value is too big", Failure::Rejected),
            (500, "Code: 117, e.displayText() = DB::Exception: Unknown field found while parsing JSONEachRow format: zzz", Failure::Rejected),
            (400, "Code: 62, e.displayText() = DB::Exception: Syntax error: failed at position 1", Failure::Rejected),
            (400, "Code: 16. DB::Exception: No such column gmv in table t. (NO_SUCH_COLUMN_IN_TABLE) (version 24.3.1)", Failure::Rejected),
            (404, "Code: 60, e.displayText() = DB::Exception: Table streamforge_test.nope doesn't exist.", Failure::MissingTable),
            (404, "Code: 81. DB::Exception: Database nodb does not exist. (UNKNOWN_DATABASE)", Failure::MissingTable),
            (401, "Code: 193, e.displayText() = DB::Exception: Wrong password for user default", Failure::Credentials),
            (401, "Code: 192, e.displayText() = DB::Exception: Unknown user nobody", Failure::Credentials),
            (401, "Code: 516. DB::Exception: x: Authentication failed: password is incorrect. (AUTHENTICATION_FAILED)", Failure::Credentials),
            (403, "", Failure::Credentials),
            (403, "Code: 497. DB::Exception: x: Not enough privileges. (ACCESS_DENIED)", Failure::Permission),
            (500, "Code: 164, e.displayText() = DB::Exception: Cannot insert into table in readonly mode", Failure::Permission),
            (500, "Code: 252. DB::Exception: Too many parts (300). (TOO_MANY_PARTS)", Failure::Server),
            (500, "Code: 241. DB::Exception: Memory limit (total) exceeded. (MEMORY_LIMIT_EXCEEDED)", Failure::Server),
            (503, "Code: 202. DB::Exception: Too many simultaneous queries. (TOO_MANY_SIMULTANEOUS_QUERIES)", Failure::Server),
            (502, "", Failure::Server),
            (504, "<html>Gateway Timeout</html>", Failure::Server),
            (429, "slow down", Failure::Server),
            (408, "", Failure::Server),
            (400, "Port 9000 is for clickhouse-client program", Failure::BadRequest),
            (405, "", Failure::BadRequest),
        ];
        for (status, body, want) in cases {
            let got = classify_response(*status, error_code(body));
            assert_eq!(got, *want, "HTTP {status} {body}");
        }
        assert!(
            Failure::Server.retryable()
                && Failure::Unreachable.retryable()
                && Failure::Timeout.retryable()
        );
        assert!(!Failure::Rejected.retryable() && !Failure::Credentials.retryable());
    }

    #[test]
    fn clickhouse_messages_are_cleaned_and_trimmed() {
        let body = "Code: 27, e.displayText() = DB::Exception: Cannot parse input: expected , before: \"0.07\": (at row 1)\n\
                    , e.what() = DB::Exception\n";
        assert_eq!(
            clickhouse_message(body),
            "Code: 27, DB::Exception: Cannot parse input: expected , before: \"0.07\": (at row 1)"
        );
        assert_eq!(
            clickhouse_message("Code: 60, e.displayText() = DB::Exception: Table a.b doesn't exist., e.what() = DB::Exception"),
            "Code: 60, DB::Exception: Table a.b doesn't exist."
        );
        let long = format!("Code: 1. {}", "é".repeat(1000));
        let msg = clickhouse_message(&long);
        assert_eq!(msg.chars().count(), MAX_MESSAGE_CHARS + 3);
        assert!(msg.ends_with("..."));
    }

    #[test]
    fn the_password_never_shows() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "hunter2-secret\n").unwrap();
        let settings = ClickHouseSettings {
            url: "https://ch.example.com:8443/".into(),
            password_file: Some(file),
            ..Default::default()
        };
        let sink = ClickHouseSink::connect(&settings).unwrap();
        assert_eq!(sink.password.as_ref().unwrap().0, "hunter2-secret");
        let debug = format!("{sink:?} {:?}", sink.password);
        let describe = sink.describe();
        assert!(
            !debug.contains("hunter2") && debug.contains("<redacted>"),
            "{debug}"
        );
        assert_eq!(
            describe,
            "clickhouse https://ch.example.com:8443 table streamforge.order_metrics"
        );
        let err = sink.failure(
            "inserting 1 row",
            Failed {
                kind: Failure::Credentials,
                detail: "HTTP 401: Code: 516".into(),
            },
        );
        let SinkError::Fatal(message) = err else {
            panic!("not fatal")
        };
        assert!(!message.contains("hunter2"), "{message}");
        assert!(
            message.contains("credentials") && message.contains("password file"),
            "{message}"
        );
        assert!(
            message.contains("https://ch.example.com:8443")
                && message.contains("streamforge.order_metrics")
        );
    }

    #[test]
    fn the_password_comes_from_the_file_or_the_environment() {
        let env = |var: &str| (var == "MY_CH_PW").then(|| "from-env".to_string());
        let mut s = ClickHouseSettings {
            password_env: "MY_CH_PW".into(),
            ..Default::default()
        };
        assert_eq!(resolve_password(&s, env).unwrap().unwrap().0, "from-env");
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
        assert_eq!(resolve_password(&s, env).unwrap().unwrap().0, "p@ss word");
        s.password_file = Some(dir.path().join("missing"));
        let err = resolve_password(&s, env).unwrap_err();
        assert!(
            err.contains("password_file") && err.contains("missing"),
            "{err}"
        );
    }

    #[test]
    fn environment_overrides_apply_on_top() {
        let mut s = ClickHouseSettings::default();
        s.apply_env_overrides(|var| match var {
            "CLICKHOUSE_URL" => Some("http://ch:8123".into()),
            "CLICKHOUSE_TABLE" => Some("metrics2".into()),
            "CLICKHOUSE_USER" => Some(String::new()),
            _ => None,
        });
        assert_eq!(s.url, "http://ch:8123");
        assert_eq!(s.table, "metrics2");
        assert_eq!(s.database, "streamforge");
        assert_eq!(s.user, "default");
    }

    #[test]
    fn the_shipped_settings_file_holds_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/clickhouse_config.yaml");
        let parsed: ClickHouseSettings = crate::config::load_yaml(&path, "ClickHouse").unwrap();
        assert_eq!(parsed, ClickHouseSettings::default());
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("CLICKHOUSE_PASSWORD") && text.contains("# password_file:"));
        let err = serde_yaml_ng::from_str::<ClickHouseSettings>("passwd: x\n").unwrap_err();
        assert!(err.to_string().contains("passwd"), "{err}");
        let s: ClickHouseSettings =
            serde_yaml_ng::from_str("timeout: 2s\nconnect_timeout: 500\n").unwrap();
        assert_eq!((s.timeout.ms(), s.connect_timeout.ms()), (2000, 500));
    }

    #[test]
    fn the_ddl_is_the_one_in_sql_create_ck_table() {
        let ddl = ClickHouseSink::ddl(&ClickHouseSettings::default());
        assert!(
            ddl.starts_with("CREATE TABLE IF NOT EXISTS `streamforge`.`order_metrics`\n("),
            "{ddl}"
        );
        let squash = |s: &str| {
            s.replace('`', "")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        };
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("sql/create_ck_table.sql");
        let Ok(sql) = std::fs::read_to_string(path) else {
            return;
        };
        let without_comments: String = sql
            .lines()
            .filter(|l| !l.trim_start().starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n");
        let statement = without_comments
            .split(';')
            .find(|s| s.contains("CREATE TABLE"))
            .expect("a CREATE TABLE statement in sql/create_ck_table.sql");
        assert_eq!(squash(&ddl), squash(statement));
    }

    fn spec_table() -> TableInfo {
        TableInfo {
            engine: "ReplacingMergeTree".into(),
            engine_full: "ReplacingMergeTree(version) PARTITION BY toYYYYMMDD(window_start) ORDER BY window_start \
                          SETTINGS index_granularity = 8192"
                .into(),
            sorting_key: "window_start".into(),
            partition_key: "toYYYYMMDD(window_start)".into(),
            columns: COLUMNS.iter().map(|(n, t)| (n.to_string(), t.to_string())).collect(),
        }
    }

    #[test]
    fn the_spec_table_passes_the_schema_check() {
        assert!(schema_problems(&spec_table()).is_empty());
        let mut t = spec_table();
        t.columns[0].1 = "DateTime('UTC')".into();
        t.engine = "ReplicatedReplacingMergeTree".into();
        t.engine_full = "ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/t', '{replica}', version) ORDER BY window_start".into();
        t.partition_key = String::new();
        assert!(schema_problems(&t).is_empty(), "{:?}", schema_problems(&t));
    }

    #[test]
    fn schema_mismatches_are_named() {
        let mut t = spec_table();
        t.columns[3].1 = "Float64".into();
        let problems = schema_problems(&t).join("; ");
        assert!(
            problems
                .contains("column 4 is `gmv_total Float64`, expected `gmv_total Decimal(18, 2)`"),
            "{problems}"
        );

        let mut t = spec_table();
        t.columns.pop();
        t.columns.push(("extra".into(), "String".into()));
        t.columns.push(("more".into(), "String".into()));
        let problems = schema_problems(&t).join("; ");
        assert!(
            problems.contains("column 7 is `extra String`")
                && problems.contains("extra column `more String`"),
            "{problems}"
        );

        let mut t = spec_table();
        t.engine = "MergeTree".into();
        t.engine_full =
            "MergeTree PARTITION BY toYYYYMMDD(window_start) ORDER BY window_start".into();
        let problems = schema_problems(&t).join("; ");
        assert!(
            problems.contains("engine is MergeTree, expected ReplacingMergeTree(version)"),
            "{problems}"
        );

        let mut t = spec_table();
        t.engine_full =
            "ReplacingMergeTree PARTITION BY toYYYYMMDD(window_start) ORDER BY window_start".into();
        assert!(schema_problems(&t)
            .join("; ")
            .contains("without the version column"));

        let mut t = spec_table();
        t.sorting_key = "window_start, version".into();
        t.partition_key = "toYYYYMMDD(updated_at)".into();
        let problems = schema_problems(&t);
        assert_eq!(problems.len(), 2, "{problems:?}");
    }

    #[test]
    fn engine_arguments_and_partition_keys_parse() {
        assert_eq!(
            engine_args(
                "ReplacingMergeTree(version) ORDER BY x",
                "ReplacingMergeTree"
            ),
            Some(vec!["version"])
        );
        assert_eq!(
            engine_args("ReplacingMergeTree ORDER BY x", "ReplacingMergeTree"),
            None
        );
        assert_eq!(
            engine_args(
                "ReplacingMergeTree(d, (a, b), 8192, version)",
                "ReplacingMergeTree"
            ),
            Some(vec!["d", "(a, b)", "8192", "version"])
        );
        assert_eq!(
            engine_args("R('/a,b)\\'', '{r}', `version`) X", "R"),
            Some(vec!["'/a,b)\\''", "'{r}'", "`version`"])
        );
        assert!(partition_key_ok("toYYYYMMDD(window_start)"));
        assert!(partition_key_ok("intDiv(toUInt32(`window_start`), 86400)"));
        assert!(partition_key_ok(""));
        assert!(partition_key_ok("tuple()"));
        assert!(!partition_key_ok("toYYYYMMDD(updated_at)"));
        assert!(!partition_key_ok("(toYYYYMM(window_start), version)"));
    }

    #[test]
    fn tsv_fields_unescape() {
        assert_eq!(tsv_unescape(r"DateTime(\'UTC\')"), "DateTime('UTC')");
        assert_eq!(tsv_unescape(r"a\tb\\c\n"), "a\tb\\c\n");
    }

    /// A loopback HTTP server that, for each connection in turn, reads one
    /// request and then either closes without answering (`false`) or
    /// answers `200 Ok.` (`true`). Returns its URL and the number of
    /// connections it took.
    fn scripted_server(script: Vec<bool>) -> (String, std::thread::JoinHandle<usize>) {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = std::thread::spawn(move || {
            let mut taken = 0;
            for answer in script {
                let (mut conn, _) = listener.accept().unwrap();
                taken += 1;
                let mut data = Vec::new();
                let mut buf = [0u8; 4096];
                while !data.ends_with(b"SELECT 1") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => data.extend_from_slice(&buf[..n]),
                    }
                }
                if answer {
                    conn.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nOk.",
                    )
                    .unwrap();
                }
            }
            taken
        });
        (url, server)
    }

    #[test]
    fn a_connection_closed_without_an_answer_is_sent_again_at_once() {
        let (url, server) = scripted_server(vec![false, false, true]);
        let settings = ClickHouseSettings {
            url,
            ..Default::default()
        };
        let sink = ClickHouseSink::connect(&settings).unwrap();
        assert_eq!(sink.query_text("SELECT 1").unwrap(), "Ok.");
        assert_eq!(server.join().unwrap(), 3);
    }

    #[test]
    fn a_server_that_never_answers_is_an_outage_after_the_retries() {
        let (url, server) = scripted_server(vec![false; 1 + STALE_RETRIES as usize]);
        let settings = ClickHouseSettings {
            url,
            ..Default::default()
        };
        let sink = ClickHouseSink::connect(&settings).unwrap();
        let error = sink.query_text("SELECT 1").unwrap_err().to_string();
        assert!(error.contains("(retryable)"), "{error}");
        assert_eq!(server.join().unwrap(), 1 + STALE_RETRIES as usize);
    }

    #[test]
    fn an_empty_write_needs_no_server() {
        let settings = ClickHouseSettings {
            url: "http://127.0.0.1:9".into(),
            ..Default::default()
        };
        let mut sink = ClickHouseSink::connect(&settings).unwrap();
        sink.write(&[]).unwrap();
    }
}
