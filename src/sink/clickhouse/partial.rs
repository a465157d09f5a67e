//! Group mode in ClickHouse (see [`crate::group`]): each instance writes
//! the windows of the partitions it owns as **partial rows**, one per
//! (window, partition), into `<table>_partial`, and ClickHouse combines
//! them into the SPEC §6 columns: counts and GMV add up, and distinct users
//! are merged as sets. A partial row carries its window's distinct users in
//! that partition as two parallel arrays, `users_hi Array(UInt64)` and
//! `users_lo Array(UInt32)` (the 96-bit fingerprints of the user ids under
//! the group's seed, `crate::group::group_seed`, sorted), and the view
//! counts the union with `uniqExactArray(users_hi, users_lo)`: exact for
//! any partitioning of users (a user in several partitions counts once),
//! up to fingerprint collisions (about n² / 2⁹⁷). `user_cnt` stays the
//! partition's own count: `sum(user_cnt)` is the keyed fast path, exact
//! only when the topic is keyed by `user_id` (docs/semantics.md).
//!
//! Why arrays and not an `AggregateFunction(uniqExact, ...)` state: such a
//! state cannot be carried by `JSONEachRow` (only built by `INSERT ...
//! SELECT` server-side, which would send the ids or fingerprints anyway),
//! and its binary layout is the server's internal one; plain arrays insert
//! as JSON on 18.16 and on current releases, and `uniqExactArray` with two
//! arrays counts distinct (hi, lo) pairs on both (`tests/chdb_compat.rs`).
//!
//! `<table>_partial` is `ReplacingMergeTree(version)` ordered by
//! `(window_start, partition)`, and a partial row's `version` is the
//! partition's next offset when the row was computed: rows from a longer
//! prefix of the partition's log have a higher version, so whichever
//! instance wrote last, the table keeps the row of the longest prefix (the
//! zombie argument of docs/architecture.md). `<table>_combined` is a view
//! of the combination; `streamforge results` runs the same query. The DDL
//! is sql/create_ck_partial_tables.sql; it runs unchanged on 18.16 and on
//! current releases (`tests/chdb_compat.rs`).

use std::fmt::Write;

use super::client::Request;
use super::schema::quoted;
use super::{ClickHouseSink, SinkError};
use crate::event::format_cents;
use crate::window::WindowRow;

/// The partial rows' table of `table`.
pub fn table(table: &str) -> String {
    format!("{table}_partial")
}

/// The view combining them.
pub fn view(table: &str) -> String {
    format!("{table}_combined")
}

/// The `CREATE TABLE` of the partial rows.
pub fn ddl(database: &str, table: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {}\n(\n    window_start DateTime,\n    window_end   DateTime,\n    \
         partition    UInt32,\n    order_cnt    UInt64,\n    gmv_total    Decimal(38, 2),\n    \
         user_cnt     UInt64,\n    users_hi     Array(UInt64),\n    users_lo     Array(UInt32),\n    \
         version      UInt64,\n    updated_at   DateTime\n)\n\
         ENGINE = ReplacingMergeTree(version)\nPARTITION BY toYYYYMMDD(window_start)\n\
         ORDER BY (window_start, partition)",
        quoted(database, &self::table(table))
    )
}

/// The combination of the partial rows, per window, with the columns of
/// SPEC §6 (`user_cnt`: the size of the union of the partitions' user
/// sets, `version`: the highest partial version, `updated_at` the latest).
fn combined_select(database: &str, table: &str) -> String {
    format!(
        "SELECT window_start, any(window_end) AS window_end, sum(order_cnt) AS order_cnt, \
         sum(gmv_total) AS gmv_total, uniqExactArray(users_hi, users_lo) AS user_cnt, \
         max(version) AS version, \
         max(updated_at) AS updated_at FROM {} FINAL GROUP BY window_start",
        quoted(database, &self::table(table))
    )
}

/// The `CREATE VIEW` of the combined figures.
pub fn view_ddl(database: &str, table: &str) -> String {
    format!(
        "CREATE VIEW IF NOT EXISTS {} AS {}",
        quoted(database, &view(table)),
        combined_select(database, table)
    )
}

/// The `CREATE` statement of `view` as the server keeps it (empty when it
/// does not exist); 18.16 and current releases both have the column.
fn view_query_sql(database: &str, view: &str) -> String {
    format!(
        "SELECT create_table_query FROM system.tables WHERE database = '{database}' AND name = '{view}' \
         FORMAT TSVRaw"
    )
}

fn insert_sql(database: &str, table: &str) -> String {
    format!(
        "INSERT INTO {} (window_start, window_end, partition, order_cnt, gmv_total, user_cnt, users_hi, \
         users_lo, version, updated_at) FORMAT JSONEachRow",
        quoted(database, &self::table(table))
    )
}

/// The combined rows as `read_final` returns them (the layout of
/// `schema::read_final_sql`, so `encode::parse_final_rows` reads it).
pub fn read_combined_sql(database: &str, table: &str) -> String {
    format!(
        "SELECT toUInt32(window_start), toUInt32(window_end), order_cnt, gmv_total, user_cnt, version, \
         toUInt32(updated_at) FROM ({}) ORDER BY window_start FORMAT TabSeparated",
        combined_select(database, table)
    )
}

/// One partial row of `partition` as a `JSONEachRow` line, its user set
/// as `users_hi` and `users_lo` (equal length, element `i` of both is one
/// user). About 31 bytes per user (a 20-digit `hi` and a 10-digit `lo`,
/// with commas) at most.
///
/// # Errors
/// A row without a user set (`WindowRow::users` is `None`): group mode's
/// jobs always carry them, so that is a bug, and writing the row would
/// silently drop its users from the union.
pub fn encode_row(row: &WindowRow, partition: u32, out: &mut String) -> Result<(), String> {
    let Some(users) = &row.users else {
        return Err(format!(
            "the partial row of window {} (partition {partition}) carries no user set (a bug: \
             please report it)",
            row.window_start
        ));
    };
    let _ = write!(
        out,
        "{{\"window_start\":{},\"window_end\":{},\"partition\":{partition},\"order_cnt\":{},\"gmv_total\":{},\"user_cnt\":{},\"users_hi\":[",
        row.window_start,
        row.window_end,
        row.order_cnt,
        format_cents(row.gmv_cents),
        row.user_cnt,
    );
    for (i, fp) in users.iter().enumerate() {
        let _ = write!(out, "{}{}", if i == 0 { "" } else { "," }, fp.hi);
    }
    out.push_str("],\"users_lo\":[");
    for (i, fp) in users.iter().enumerate() {
        let _ = write!(out, "{}{}", if i == 0 { "" } else { "," }, fp.lo);
    }
    let _ = writeln!(
        out,
        "],\"version\":{},\"updated_at\":{}}}",
        row.version, row.updated_at
    );
    Ok(())
}

/// The columns `<table>_partial` must have beyond those of the previous
/// layout (before user sets), with their types.
const SET_COLUMNS: [(&str, &str); 2] =
    [("users_hi", "Array(UInt64)"), ("users_lo", "Array(UInt32)")];

/// What is wrong with an existing partial table (its `system.columns`
/// rows, `name\ttype` lines) and view (its `create_table_query`), if
/// anything: a table or view of the previous layout, which summed the
/// partitions' distinct users.
pub fn layout_problem(columns: &str, view_query: &str) -> Option<String> {
    let have: Vec<(&str, &str)> = columns.lines().filter_map(|l| l.split_once('\t')).collect();
    let missing: Vec<String> = SET_COLUMNS
        .iter()
        .filter(|want| !have.contains(want))
        .map(|(name, ty)| format!("{name} {ty}"))
        .collect();
    if !missing.is_empty() {
        return Some(format!(
            "the partial table lacks the column(s) {}",
            missing.join(", ")
        ));
    }
    let compact: String = view_query.split_whitespace().collect();
    if !compact.is_empty() && !compact.contains("uniqExactArray(users_hi,users_lo)") {
        return Some("the combined view sums the partitions' user counts".into());
    }
    None
}

impl ClickHouseSink {
    /// Creates the partial table and the view when missing (with
    /// `create_table`); without it, a missing table is fatal.
    pub(super) fn ensure_partial_table(&self) -> Result<(), SinkError> {
        let action = "creating the partial rows' table";
        let name = table(&self.table);
        if !self.create_table {
            let exists = self.read(action, super::schema::tables_sql(&self.database, &name))?;
            if exists.trim().is_empty() {
                return Err(SinkError::Fatal(format!(
                    "ClickHouse {}: table {}.{name} of group mode does not exist and create_table is \
                     false: create it with sql/create_ck_partial_tables.sql",
                    self.client.target.server, self.database
                )));
            }
            return self.check_partial_layout(true);
        }
        // The table's layout is checked before the view is created on it:
        // on a table of the previous layout the view's statement would fail
        // with a less helpful error.
        self.run_ddl(action, ddl(&self.database, &self.table))?;
        self.check_partial_layout(false)?;
        self.run_ddl(action, view_ddl(&self.database, &self.table))?;
        self.check_partial_layout(true)
    }

    fn run_ddl(&self, action: &str, sql: String) -> Result<(), SinkError> {
        let request = Request {
            settings: self.profile()?.ddl_settings(),
            ..Request::statement(sql)
        };
        self.client.run(action, &request)?;
        Ok(())
    }

    /// Refuses a partial table (and, with `with_view`, a view) of the
    /// previous layout, created before user sets: its combined `user_cnt`
    /// would be a sum.
    fn check_partial_layout(&self, with_view: bool) -> Result<(), SinkError> {
        let action = "checking the partial rows' table";
        let name = table(&self.table);
        let columns = self.read(action, super::schema::columns_sql(&self.database, &name))?;
        let view_query = if with_view {
            self.read(action, view_query_sql(&self.database, &view(&self.table)))?
        } else {
            String::new()
        };
        let Some(problem) = layout_problem(&columns, &view_query) else {
            return Ok(());
        };
        Err(SinkError::Fatal(format!(
            "ClickHouse {}: {problem}: {}.{name} and {}.{} were created by an earlier StreamForge, \
             which summed distinct users over partitions. Drop both (DROP TABLE {}; DROP TABLE {}) \
             and delete the partition state directories (<state_dir>/partition-*): StreamForge \
             recreates the table and view (sql/create_ck_partial_tables.sql) and rebuilds every \
             partition from its earliest offset",
            self.client.target.server,
            self.database,
            self.database,
            view(&self.table),
            quoted(&self.database, &view(&self.table)),
            quoted(&self.database, &name),
        )))
    }

    /// Inserts `rows` as partial rows of `partition`, in one INSERT (one
    /// atomic block). Rows the table cannot hold go to the dead letters.
    pub(super) fn insert_partial(
        &mut self,
        rows: &[WindowRow],
        partition: u32,
    ) -> Result<(), SinkError> {
        let mut body = String::new();
        let mut refused = Vec::new();
        for row in rows.iter().filter(|r| r.group.is_none()) {
            match super::encode::check_row(row) {
                Err(error) if self.check_rows => refused.push(super::DeadLetter {
                    table: table(&self.table),
                    row: row.clone(),
                    error,
                }),
                _ => encode_row(row, partition, &mut body).map_err(SinkError::Fatal)?,
            }
        }
        crate::failpoint::crash_point("sink::clickhouse::before_insert");
        if !body.is_empty() {
            let profile = self.profile()?;
            let name = table(&self.table);
            let settings = profile.insert_settings(|| {
                super::encode::dedup_token(&format!("{}.{name}", self.database), &body)
            });
            let request = Request {
                query: Some(insert_sql(&self.database, &self.table)),
                settings,
                body,
            };
            self.client
                .run(&format!("inserting partial rows into {name}"), &request)?;
        }
        self.record_dead_letters(&refused)?;
        crate::failpoint::crash_point("sink::clickhouse::after_insert");
        Ok(())
    }

    /// The combined figures of every window.
    pub(super) fn read_combined(&self) -> Result<Vec<WindowRow>, SinkError> {
        let action = "reading the combined rows";
        let text = self.read(action, read_combined_sql(&self.database, &self.table))?;
        super::encode::parse_final_rows(&text).map_err(|d| self.bad_answer(action, d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dedup::{fingerprint, Fp};
    use std::sync::Arc;

    #[test]
    fn the_ddl_is_the_one_in_sql() {
        let sql = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("sql/create_ck_partial_tables.sql"),
        )
        .unwrap();
        let code: Vec<&str> = sql
            .lines()
            .filter(|l| !l.trim_start().starts_with("--"))
            .collect();
        let statements: Vec<String> = code
            .join("\n")
            .split(';')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty() && !s.starts_with("CREATE DATABASE"))
            .collect();
        assert_eq!(
            statements,
            vec![
                ddl("streamforge", "order_metrics"),
                view_ddl("streamforge", "order_metrics")
            ]
        );
    }

    fn row(users: Option<Vec<Fp>>) -> WindowRow {
        WindowRow {
            users: users.map(Arc::from),
            window_start: 60,
            window_end: 120,
            order_cnt: 3,
            gmv_cents: 1_007,
            user_cnt: 2,
            version: 41,
            updated_at: 7,
            group: None,
        }
    }

    /// The user set goes out as two parallel arrays that give the
    /// fingerprints back, extremes included (JSON numbers, unquoted: 18.16
    /// and current releases read them into UInt64 and UInt32).
    #[test]
    fn partial_rows_encode_with_their_partition_and_user_set() {
        let fps = vec![
            Fp { hi: 0, lo: 0 },
            fingerprint(7, "alice"),
            fingerprint(7, "bob"),
            Fp {
                hi: u64::MAX,
                lo: u32::MAX,
            },
        ];
        let mut out = String::new();
        encode_row(&row(Some(fps.clone())), 5, &mut out).unwrap();
        assert!(out.ends_with('\n') && out.lines().count() == 1, "{out}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["partition"], 5);
        assert_eq!(v["gmv_total"].to_string(), "10.07");
        assert_eq!(
            (v["user_cnt"].clone(), v["version"].clone()),
            (2.into(), 41.into())
        );
        let his = v["users_hi"].as_array().unwrap();
        let los = v["users_lo"].as_array().unwrap();
        let back: Vec<Fp> = his
            .iter()
            .zip(los)
            .map(|(h, l)| Fp {
                hi: h.as_u64().unwrap(),
                lo: u32::try_from(l.as_u64().unwrap()).unwrap(),
            })
            .collect();
        assert_eq!((his.len(), back), (los.len(), fps));

        let mut empty = String::new();
        encode_row(&row(Some(Vec::new())), 0, &mut empty).unwrap();
        assert!(empty.contains("\"users_hi\":[],\"users_lo\":[]"), "{empty}");
    }

    #[test]
    fn a_partial_row_without_a_user_set_is_refused() {
        let mut out = String::new();
        let err = encode_row(&row(None), 5, &mut out).unwrap_err();
        assert!(err.contains("no user set"), "{err}");
    }

    #[test]
    fn a_partial_table_or_view_of_the_summing_layout_is_named() {
        let old = "window_start\tDateTime\npartition\tUInt32\nuser_cnt\tUInt64\nversion\tUInt64\n";
        let new = format!("{old}users_hi\tArray(UInt64)\nusers_lo\tArray(UInt32)\n");
        let good_view = view_ddl("db", "t");
        let old_view = good_view.replace("uniqExactArray(users_hi, users_lo)", "sum(user_cnt)");
        assert_eq!(layout_problem(&new, &good_view), None);
        assert_eq!(layout_problem(&new, ""), None);
        let missing = layout_problem(old, &good_view).unwrap();
        assert!(
            missing.contains("users_hi Array(UInt64), users_lo Array(UInt32)"),
            "{missing}"
        );
        let wrong = new.replace("Array(UInt32)", "Array(UInt64)");
        assert!(layout_problem(&wrong, &good_view)
            .unwrap()
            .contains("users_lo"));
        assert!(layout_problem(&new, &old_view).unwrap().contains("sums"));
    }
}
