//! The table of SPEC §6: its DDL, the SQL the sink runs on it, and the
//! check that an existing table is one the sink may write.
//!
//! Idempotence comes from the table, not from the sink: every row carries
//! its `version`, the table is `ReplacingMergeTree(version) ORDER BY
//! window_start`, and readers use `FINAL`, so a window written twice, or an
//! older version written after a newer one, reads back as the highest
//! version. [`schema_problems`] therefore refuses a table whose engine,
//! sorting key, partition key or columns would break that rule.
//!
//! Names in SQL are the database and table only, validated against
//! `^[A-Za-z_][A-Za-z0-9_]{0,63}$` first (`settings::validate_name`), so they
//! need no escaping in backticks or in string literals; values never go into
//! SQL text. Every statement here runs on ClickHouse 18.16 and on current
//! releases; the one clause 18.16 lacks (the table's deduplication window)
//! is added only for servers that know it.

use std::fmt::Write as _;

/// The table's columns and their types, in order (SPEC §6).
pub const COLUMNS: [(&str, &str); 7] = [
    ("window_start", "DateTime"),
    ("window_end", "DateTime"),
    ("order_cnt", "UInt64"),
    ("gmv_total", "Decimal(38, 2)"),
    ("user_cnt", "UInt64"),
    ("version", "UInt64"),
    ("updated_at", "DateTime"),
];

/// The `gmv_total` type of tables made before window sums could exceed it.
pub const OLD_GMV_TYPE: &str = "Decimal(18, 2)";

/// The engine clause of the table; `engine_full` of a correct table starts
/// with it.
pub const ENGINE: &str = "ReplacingMergeTree(version)";

/// How many recent inserts a non-replicated table remembers for
/// `insert_deduplication_token` (ClickHouse's replicated default since 23.x
/// is the same): far more than the batches a recovery resends.
pub const DEDUP_WINDOW: u64 = 1000;

/// Engines with `ReplacingMergeTree`'s semantics: the plain one, and the
/// replicated and cloud variants, whose last engine argument is the version
/// column just the same.
const REPLACING_ENGINES: [&str; 3] = [
    "ReplacingMergeTree",
    "ReplicatedReplacingMergeTree",
    "SharedReplacingMergeTree",
];

/// The `CREATE TABLE` statement of SPEC §6; with `dedup_window`, the table
/// also remembers that many inserts' deduplication tokens (servers that
/// know `non_replicated_deduplication_window` only).
pub fn ddl(database: &str, table: &str, dedup_window: Option<u64>) -> String {
    let mut sql = format!("CREATE TABLE IF NOT EXISTS `{database}`.`{table}`\n(\n");
    for (i, (name, ty)) in COLUMNS.iter().enumerate() {
        let comma = if i + 1 < COLUMNS.len() { "," } else { "" };
        let _ = writeln!(sql, "    {name:<12} {ty}{comma}");
    }
    sql.push_str(
        ")\nENGINE = ReplacingMergeTree(version)\nPARTITION BY toYYYYMMDD(window_start)\nORDER BY window_start",
    );
    if let Some(window) = dedup_window {
        let _ = write!(
            sql,
            "\nSETTINGS non_replicated_deduplication_window = {window}"
        );
    }
    sql
}

pub fn quoted(database: &str, table: &str) -> String {
    format!("`{database}`.`{table}`")
}

pub fn databases_sql(database: &str) -> String {
    format!("SELECT name FROM system.databases WHERE name = '{database}' FORMAT TabSeparated")
}

pub fn create_database_sql(database: &str) -> String {
    format!("CREATE DATABASE IF NOT EXISTS `{database}`")
}

pub fn tables_sql(database: &str, table: &str) -> String {
    format!(
        "SELECT engine, engine_full, sorting_key, partition_key FROM system.tables \
         WHERE database = '{database}' AND name = '{table}' FORMAT TabSeparated"
    )
}

/// system.columns lists a table's columns in their order (18.16 has no
/// `position` column to sort by).
pub fn columns_sql(database: &str, table: &str) -> String {
    format!(
        "SELECT name, type FROM system.columns WHERE database = '{database}' AND table = '{table}' \
         FORMAT TabSeparated"
    )
}

/// The INSERT; its rows follow as the body.
pub fn insert_sql(database: &str, table: &str) -> String {
    let columns: Vec<&str> = COLUMNS.iter().map(|(name, _)| *name).collect();
    format!(
        "INSERT INTO {} ({}) FORMAT JSONEachRow",
        quoted(database, table),
        columns.join(", ")
    )
}

/// The final rows, highest version per window, as `streamforge results`
/// prints them. `gmv_total` is printed by the output format, not by
/// `toString`: 18.16's `toString` of a `Decimal(38, 2)` above about 10^20
/// writes NUL bytes in place of digits (measured; docs/stack.md).
pub fn read_final_sql(database: &str, table: &str) -> String {
    format!(
        "SELECT toUInt32(window_start), toUInt32(window_end), order_cnt, gmv_total, user_cnt, \
         version, toUInt32(updated_at) FROM {} FINAL ORDER BY window_start FORMAT TabSeparated",
        quoted(database, table)
    )
}

/// The highest version in the table (0 when empty).
pub fn max_version_sql(database: &str, table: &str, limit: u64) -> String {
    format!(
        "SELECT max(version) FROM {} WHERE version < {limit} FORMAT TabSeparated",
        quoted(database, table)
    )
}

/// The statement that widens a table made with [`OLD_GMV_TYPE`].
pub fn migrate_gmv_sql(database: &str, table: &str) -> String {
    format!("ALTER TABLE {database}.{table} MODIFY COLUMN gmv_total Decimal(38, 2)")
}

/// The statement that turns on token deduplication on an existing
/// non-replicated table (servers that know the setting only).
pub fn dedup_window_sql(database: &str, table: &str) -> String {
    format!(
        "ALTER TABLE {database}.{table} MODIFY SETTING non_replicated_deduplication_window = {DEDUP_WINDOW}"
    )
}

/// What `system.tables` and `system.columns` say about an existing table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableInfo {
    pub engine: String,
    pub engine_full: String,
    pub sorting_key: String,
    pub partition_key: String,
    pub columns: Vec<(String, String)>,
}

impl TableInfo {
    /// Reads the answers of [`tables_sql`] and [`columns_sql`]; `None` when
    /// the table does not exist.
    pub fn parse(tables: &str, columns: &str) -> Result<Option<TableInfo>, String> {
        use super::encode::tsv_unescape;
        let Some(line) = tables.lines().next().filter(|l| !l.is_empty()) else {
            return Ok(None);
        };
        let fields: Vec<String> = line.split('\t').map(tsv_unescape).collect();
        let [engine, engine_full, sorting_key, partition_key] = &fields[..] else {
            return Err(format!(
                "unexpected system.tables row `{}`",
                super::error::clickhouse_message(line)
            ));
        };
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

    /// Whether this table was made with the earlier `gmv_total` type and
    /// is otherwise SPEC §6's: then widening the column is all it needs.
    pub fn needs_gmv_migration(&self) -> bool {
        let old = self
            .columns
            .iter()
            .any(|(n, t)| n == "gmv_total" && t == OLD_GMV_TYPE);
        old && schema_problems(&self.with_gmv_type(COLUMNS[3].1)).is_empty()
    }

    fn with_gmv_type(&self, ty: &str) -> TableInfo {
        let mut info = self.clone();
        for (name, t) in &mut info.columns {
            if name == "gmv_total" {
                *t = ty.to_string();
            }
        }
        info
    }

    /// Whether the table is not replicated and keeps no deduplication
    /// tokens (`non_replicated_deduplication_window` unset or 0).
    pub fn lacks_dedup_window(&self) -> bool {
        if self.engine.starts_with("Replicated") || self.engine.starts_with("Shared") {
            return false;
        }
        let key = "non_replicated_deduplication_window = ";
        match self.engine_full.find(key) {
            None => true,
            Some(at) => self.engine_full[at + key.len()..].starts_with('0'),
        }
    }
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

/// The columns' differences from `expected` (SPEC §6's [`COLUMNS`], or a
/// grouped table's), if any, as one problem.
fn column_problem(info: &TableInfo, expected: &[(&str, &str)]) -> Option<String> {
    let same = info.columns.len() == expected.len()
        && info.columns.iter().zip(expected.iter().copied()).all(
            |((name, ty), (want_name, want_ty))| {
                name == want_name && normalized_type(ty) == want_ty
            },
        );
    if same {
        return None;
    }
    let mut diffs = Vec::new();
    for (i, (name, ty)) in expected.iter().enumerate() {
        match info.columns.get(i) {
            Some((n, t)) if n == name && normalized_type(t) == *ty => {}
            Some((n, t)) => diffs.push(format!(
                "column {} is `{n} {t}`, expected `{name} {ty}`",
                i + 1
            )),
            None => diffs.push(format!("column {} `{name} {ty}` is missing", i + 1)),
        }
    }
    for (n, t) in info.columns.iter().skip(expected.len()) {
        diffs.push(format!("extra column `{n} {t}`"));
    }
    let list = |cols: &mut dyn Iterator<Item = (&str, &str)>| {
        cols.map(|(n, t)| format!("{n} {t}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Some(format!(
        "columns differ ({}): expected ({}), found ({})",
        diffs.join("; "),
        list(&mut expected.iter().copied()),
        list(&mut info.columns.iter().map(|(n, t)| (n.as_str(), t.as_str())))
    ))
}

/// Everything about `info` that differs from SPEC §6 in a way that matters.
pub fn schema_problems(info: &TableInfo) -> Vec<String> {
    problems_against(info, &COLUMNS, "window_start")
}

/// [`schema_problems`] for a table with the columns `expected` and the
/// sorting key `sorting_key` (`window_start, city`): a grouped table's.
pub fn problems_against(
    info: &TableInfo,
    expected: &[(&str, &str)],
    sorting_key: &str,
) -> Vec<String> {
    let mut problems: Vec<String> = column_problem(info, expected).into_iter().collect();
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
    if info.sorting_key.replace('`', "").trim() != sorting_key {
        problems.push(format!(
            "ORDER BY is `{}`, expected `{sorting_key}`: rows are replaced per sorting key",
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

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
    fn the_ddl_is_the_one_in_sql_create_ck_table() {
        let ddl = ddl("streamforge", "order_metrics", None);
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
        let sql = std::fs::read_to_string(&path).expect("sql/create_ck_table.sql");
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
        // The statement for current releases is in its own file.
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("sql/dedup_window.sql");
        let sql = std::fs::read_to_string(&path).expect("sql/dedup_window.sql");
        assert!(
            sql.contains(&format!(
                "{};",
                dedup_window_sql("streamforge", "order_metrics")
            )),
            "{sql}"
        );
    }

    #[test]
    fn the_ddl_adds_the_dedup_window_only_when_asked() {
        let with = ddl("d", "t", Some(DEDUP_WINDOW));
        assert!(
            with.ends_with(
                "ORDER BY window_start\nSETTINGS non_replicated_deduplication_window = 1000"
            ),
            "{with}"
        );
        assert!(!ddl("d", "t", None).contains("SETTINGS"));
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
        assert!(!t.lacks_dedup_window());
    }

    #[test]
    fn schema_mismatches_are_named() {
        let mut t = spec_table();
        t.columns[3].1 = "Float64".into();
        let problems = schema_problems(&t).join("; ");
        assert!(
            problems
                .contains("column 4 is `gmv_total Float64`, expected `gmv_total Decimal(38, 2)`"),
            "{problems}"
        );
        assert!(!t.needs_gmv_migration());

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
    fn an_old_decimal_table_needs_only_the_migration() {
        let mut t = spec_table();
        t.columns[3].1 = OLD_GMV_TYPE.into();
        assert!(t.needs_gmv_migration());
        assert_eq!(schema_problems(&t).len(), 1);
        assert_eq!(
            migrate_gmv_sql("streamforge", "order_metrics"),
            "ALTER TABLE streamforge.order_metrics MODIFY COLUMN gmv_total Decimal(38, 2)"
        );
        // With another problem too, migrating alone would not do.
        t.sorting_key = "version".into();
        assert!(!t.needs_gmv_migration());
        assert!(!spec_table().needs_gmv_migration());
    }

    #[test]
    fn the_dedup_window_is_read_from_engine_full() {
        let mut t = spec_table();
        assert!(t.lacks_dedup_window());
        t.engine_full = "ReplacingMergeTree(version) PARTITION BY toYYYYMMDD(window_start) ORDER BY window_start \
                         SETTINGS non_replicated_deduplication_window = 1000, index_granularity = 8192"
            .into();
        assert!(!t.lacks_dedup_window());
        t.engine_full = t.engine_full.replace("= 1000", "= 0");
        assert!(t.lacks_dedup_window());
    }

    #[test]
    fn table_info_parses_from_the_system_tables() {
        let tables = "ReplacingMergeTree\tReplacingMergeTree(version) PARTITION BY toYYYYMMDD(window_start) ORDER BY window_start SETTINGS index_granularity = 8192\twindow_start\ttoYYYYMMDD(window_start)\n";
        let columns: String = COLUMNS.iter().map(|(n, t)| format!("{n}\t{t}\n")).collect();
        let info = TableInfo::parse(tables, &columns).unwrap().unwrap();
        assert_eq!(info, spec_table());
        assert_eq!(TableInfo::parse("", "").unwrap(), None);
        assert!(TableInfo::parse("a\tb\n", "")
            .unwrap_err()
            .contains("system.tables"));
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
}
