//! Group mode in ClickHouse (see [`crate::group`]): each instance writes
//! the windows of the partitions it owns as **partial rows**, one per
//! (window, partition), into `<table>_partial`, and ClickHouse combines
//! them into the SPEC §6 columns: counts and GMV add up, and so do the
//! per-partition distinct users, which is exact because group mode requires
//! a topic keyed by `user_id` (SPEC §1): a user's events all land in one
//! partition, so the partitions' user sets are disjoint (docs/semantics.md).
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
         user_cnt     UInt64,\n    version      UInt64,\n    updated_at   DateTime\n)\n\
         ENGINE = ReplacingMergeTree(version)\nPARTITION BY toYYYYMMDD(window_start)\n\
         ORDER BY (window_start, partition)",
        quoted(database, &self::table(table))
    )
}

/// The combination of the partial rows, per window, with the columns of
/// SPEC §6 (`version`: the highest partial version, `updated_at` the
/// latest).
fn combined_select(database: &str, table: &str) -> String {
    format!(
        "SELECT window_start, any(window_end) AS window_end, sum(order_cnt) AS order_cnt, \
         sum(gmv_total) AS gmv_total, sum(user_cnt) AS user_cnt, max(version) AS version, \
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

fn insert_sql(database: &str, table: &str) -> String {
    format!(
        "INSERT INTO {} (window_start, window_end, partition, order_cnt, gmv_total, user_cnt, version, \
         updated_at) FORMAT JSONEachRow",
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

/// One partial row of `partition` as a `JSONEachRow` line.
pub fn encode_row(row: &WindowRow, partition: u32, out: &mut String) {
    let _ = writeln!(
        out,
        "{{\"window_start\":{},\"window_end\":{},\"partition\":{partition},\"order_cnt\":{},\"gmv_total\":{},\"user_cnt\":{},\"version\":{},\"updated_at\":{}}}",
        row.window_start,
        row.window_end,
        row.order_cnt,
        format_cents(row.gmv_cents),
        row.user_cnt,
        row.version,
        row.updated_at
    );
}

impl ClickHouseSink {
    /// Creates the partial table and the view when missing (with
    /// `create_table`); without it, a missing table is fatal.
    pub(super) fn ensure_partial_table(&self) -> Result<(), SinkError> {
        let action = "creating the partial rows' table";
        let name = table(&self.table);
        if self.create_table {
            let profile = self.profile()?;
            for sql in [
                ddl(&self.database, &self.table),
                view_ddl(&self.database, &self.table),
            ] {
                let request = Request {
                    settings: profile.ddl_settings(),
                    ..Request::statement(sql)
                };
                self.client.run(action, &request)?;
            }
            return Ok(());
        }
        let exists = self.read(action, super::schema::tables_sql(&self.database, &name))?;
        if exists.trim().is_empty() {
            return Err(SinkError::Fatal(format!(
                "ClickHouse {}: table {}.{name} of group mode does not exist and create_table is false: \
                 create it with sql/create_ck_partial_tables.sql",
                self.client.target.server, self.database
            )));
        }
        Ok(())
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
                _ => encode_row(row, partition, &mut body),
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

    #[test]
    fn partial_rows_encode_with_their_partition() {
        let row = WindowRow {
            window_start: 60,
            window_end: 120,
            order_cnt: 3,
            gmv_cents: 1_007,
            user_cnt: 2,
            version: 41,
            updated_at: 7,
            group: None,
        };
        let mut out = String::new();
        encode_row(&row, 5, &mut out);
        assert_eq!(
            out,
            "{\"window_start\":60,\"window_end\":120,\"partition\":5,\"order_cnt\":3,\"gmv_total\":10.07,\
             \"user_cnt\":2,\"version\":41,\"updated_at\":7}\n"
        );
    }
}
