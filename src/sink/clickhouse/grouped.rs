//! Grouped results in ClickHouse (see [`crate::dims`]): one table per
//! grouping, `<table>_by_<grouping>` (`order_metrics_by_city`), with the
//! totals' columns and one `String` column per dimension after
//! `window_end`, `ReplacingMergeTree(version)` ordered by the window start
//! and the dimensions: the same upsert rule as the totals, per (window,
//! values). The DDL is sql/create_ck_grouped_tables.sql; it runs unchanged
//! on ClickHouse 18.16.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::client::Request;
use super::encode::{parse_cents, tsv_unescape};
use super::schema::{quoted, TableInfo};
use super::{ClickHouseError, ClickHouseSink, SinkError};
use crate::dims::{grouping_name, Dimension, GroupKey};
use crate::event::format_cents;
use crate::window::WindowRow;

/// The table of a grouping.
pub fn table(table: &str, dims: &[Dimension]) -> String {
    format!("{table}_by_{}", grouping_name(dims))
}

/// The grouped table's columns in order.
fn columns(dims: &[Dimension]) -> Vec<(&'static str, &'static str)> {
    let mut cols = vec![("window_start", "DateTime"), ("window_end", "DateTime")];
    cols.extend(dims.iter().map(|d| (d.name(), "String")));
    cols.extend_from_slice(&super::COLUMNS[2..]);
    cols
}

/// The `CREATE TABLE` of a grouping's table.
pub fn ddl(database: &str, table: &str, dims: &[Dimension]) -> String {
    let name = self::table(table, dims);
    let mut sql = format!("CREATE TABLE IF NOT EXISTS `{database}`.`{name}`\n(\n");
    let cols = columns(dims);
    for (i, (col, ty)) in cols.iter().enumerate() {
        let comma = if i + 1 < cols.len() { "," } else { "" };
        let _ = writeln!(sql, "    {col:<12} {ty}{comma}");
    }
    let key: Vec<&str> = dims.iter().map(|d| d.name()).collect();
    let _ = write!(
        sql,
        ")\nENGINE = ReplacingMergeTree(version)\nPARTITION BY toYYYYMMDD(window_start)\n\
         ORDER BY (window_start, {})",
        key.join(", ")
    );
    sql
}

fn insert_sql(database: &str, table: &str, dims: &[Dimension]) -> String {
    let cols: Vec<&str> = columns(dims).iter().map(|c| c.0).collect();
    format!(
        "INSERT INTO {} ({}) FORMAT JSONEachRow",
        quoted(database, &self::table(table, dims)),
        cols.join(", ")
    )
}

fn read_sql(database: &str, table: &str, dims: &[Dimension]) -> String {
    let names: Vec<&str> = dims.iter().map(|d| d.name()).collect();
    format!(
        "SELECT toUInt32(window_start), toUInt32(window_end), {}, order_cnt, gmv_total, user_cnt, \
         version, toUInt32(updated_at) FROM {} FINAL ORDER BY window_start, {} FORMAT TabSeparated",
        names.join(", "),
        quoted(database, &self::table(table, dims)),
        names.join(", ")
    )
}

/// Why the grouping's table cannot hold `row` (of the group `key`), if it
/// cannot: whatever the totals' table cannot hold
/// ([`super::encode::check_row`]: times outside a DateTime, a GMV beyond
/// `Decimal(38, 2)`), and a key that names no table the sink writes (a
/// grouping not in `groupings`) or not one value per dimension. The
/// dimension values themselves always fit: a `String` column holds any
/// text, and each value travels as a JSON string (escaped by serde_json)
/// that ClickHouse 18.16 and current releases read back unchanged (the
/// real-stack test `grouped_rows_keep_any_text` in
/// tests/stack_poison_rows.rs).
pub fn check_row(
    row: &WindowRow,
    key: &GroupKey,
    groupings: &[Vec<Dimension>],
) -> Result<(), String> {
    if key.values.len() != key.dims.len() {
        return Err(format!(
            "grouped row of {} has {} value(s) for {} dimension(s); not sent",
            grouping_name(&key.dims),
            key.values.len(),
            key.dims.len()
        ));
    }
    if !groupings.contains(&key.dims) {
        return Err(format!(
            "grouped row of the grouping {}, which this sink has no table for (its groupings: {}); not sent",
            grouping_name(&key.dims),
            groupings.iter().map(|g| grouping_name(g)).collect::<Vec<_>>().join(", ")
        ));
    }
    super::encode::check_row(row)
}

/// What differs in `info` from the grouped table of `dims`
/// (sql/create_ck_grouped_tables.sql), as [`super::schema::schema_problems`]
/// does for the totals' table.
pub fn schema_problems(info: &TableInfo, dims: &[Dimension]) -> Vec<String> {
    let key: Vec<&str> = std::iter::once("window_start")
        .chain(dims.iter().map(|d| d.name()))
        .collect();
    super::schema::problems_against(info, &columns(dims), &key.join(", "))
}

/// One grouped row as a `JSONEachRow` line.
pub fn encode_row(row: &WindowRow, key: &GroupKey, out: &mut String) {
    let mut dims = String::new();
    for (d, v) in key.dims.iter().zip(&key.values) {
        let _ = write!(
            dims,
            ",\"{}\":{}",
            d.name(),
            serde_json::Value::String(v.clone())
        );
    }
    let _ = writeln!(
        out,
        "{{\"window_start\":{},\"window_end\":{}{dims},\"order_cnt\":{},\"gmv_total\":{},\"user_cnt\":{},\"version\":{},\"updated_at\":{}}}",
        row.window_start,
        row.window_end,
        row.order_cnt,
        format_cents(row.gmv_cents),
        row.user_cnt,
        row.version,
        row.updated_at
    );
}

/// Parses the answer of the grouped read of `dims`.
pub fn parse_rows(text: &str, dims: &[Dimension]) -> Result<Vec<WindowRow>, String> {
    let mut rows = Vec::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.is_empty()) {
        let bad = |why: &str| format!("line {} of the answer ({why})", n + 1);
        let fields: Vec<&str> = line.split('\t').collect();
        if fields.len() != 7 + dims.len() {
            return Err(bad("unexpected number of fields"));
        }
        let int = |text: &str| {
            text.parse::<u64>()
                .map_err(|_| bad("not an unsigned integer"))
        };
        let k = dims.len();
        let rest = &fields[2 + k..];
        rows.push(WindowRow {
            users: None,
            window_start: int(fields[0])? as i64,
            window_end: int(fields[1])? as i64,
            order_cnt: int(rest[0])?,
            gmv_cents: parse_cents(rest[1]).ok_or_else(|| bad("gmv_total is not an amount"))?,
            user_cnt: int(rest[2])?,
            version: int(rest[3])?,
            updated_at: int(rest[4])? as i64,
            group: Some(GroupKey {
                dims: dims.to_vec(),
                values: fields[2..2 + k].iter().map(|v| tsv_unescape(v)).collect(),
            }),
        });
    }
    Ok(rows)
}

impl ClickHouseSink {
    /// Creates the grouped tables when missing (with `create_table`);
    /// without it, a missing one is fatal.
    pub(super) fn ensure_grouped_tables(&self) -> Result<(), SinkError> {
        let action = "creating the grouped tables";
        for dims in &self.groupings {
            let name = table(&self.table, dims);
            if self.create_table {
                let profile = self.profile()?;
                let request = Request {
                    settings: profile.ddl_settings(),
                    ..Request::statement(ddl(&self.database, &self.table, dims))
                };
                self.client.run(action, &request)?;
                continue;
            }
            let exists = self.read(action, super::schema::tables_sql(&self.database, &name))?;
            if exists.trim().is_empty() {
                return Err(SinkError::Fatal(format!(
                    "ClickHouse {}: table {}.{name} of the grouping {} does not exist and create_table is \
                     false: create it with sql/create_ck_grouped_tables.sql",
                    self.client.target.server,
                    self.database,
                    grouping_name(dims)
                )));
            }
        }
        Ok(())
    }

    /// Inserts the grouped rows of `rows` (checked already), one INSERT
    /// per grouping; a refused INSERT is split like the totals' (see
    /// [`ClickHouseSink::insert_or_split`]), its rows at fault going to the
    /// dead letters.
    pub(super) fn insert_grouped(
        &self,
        rows: &[&WindowRow],
        split: &mut super::Split,
    ) -> Result<(), SinkError> {
        let mut by: BTreeMap<&[Dimension], Vec<&WindowRow>> = BTreeMap::new();
        for row in rows {
            if let Some(key) = &row.group {
                by.entry(&key.dims[..]).or_default().push(row);
            }
        }
        for (dims, rows) in by {
            self.insert_or_split(super::Dest::Grouped(dims), &rows, split)?;
        }
        Ok(())
    }

    /// One INSERT of grouped `rows` of the grouping `dims` into its table,
    /// with the pinned settings and a content-derived token.
    pub(super) fn insert_grouped_body(
        &self,
        dims: &[Dimension],
        action: &str,
        rows: &[&WindowRow],
    ) -> Result<(), ClickHouseError> {
        let mut body = String::new();
        for row in rows {
            if let Some(key) = &row.group {
                encode_row(row, key, &mut body);
            }
        }
        let profile = self
            .profile
            .get()
            .expect("an INSERT is sent only after the server was probed (ensure_ready)");
        let name = table(&self.table, dims);
        let settings = profile.insert_settings(|| {
            super::encode::dedup_token(&format!("{}.{name}", self.database), &body)
        });
        let request = Request {
            query: Some(insert_sql(&self.database, &self.table, dims)),
            settings,
            body,
        };
        self.client
            .run(&format!("{action} into {name}"), &request)
            .map(drop)
    }

    /// Every configured grouping's final rows.
    pub(super) fn read_grouped_tables(&self) -> Result<Vec<WindowRow>, SinkError> {
        let action = "reading the grouped rows";
        let mut rows = Vec::new();
        for dims in &self.groupings {
            let text = self.read(action, read_sql(&self.database, &self.table, dims))?;
            rows.extend(parse_rows(&text, dims).map_err(|d| self.bad_answer(action, d))?);
        }
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ddl_is_the_one_in_sql() {
        let sql = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("sql/create_ck_grouped_tables.sql"),
        )
        .unwrap();
        let norm = |s: &str| {
            s.split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .replace('`', "")
        };
        let sql = norm(&sql);
        for dims in [
            vec![Dimension::City],
            vec![Dimension::Category],
            vec![Dimension::City, Dimension::Category],
        ] {
            let ddl = norm(&ddl("streamforge", "order_metrics", &dims));
            assert!(sql.contains(&ddl), "{ddl}");
        }
    }

    #[test]
    fn rows_encode_and_parse_back() {
        let key = GroupKey {
            dims: vec![Dimension::City, Dimension::Category],
            values: vec!["Xi'an\t\"x\"".into(), "books".into()],
        };
        let row = WindowRow {
            users: None,
            window_start: 60,
            window_end: 120,
            order_cnt: 3,
            gmv_cents: 12_345,
            user_cnt: 2,
            version: 4,
            updated_at: 100,
            group: Some(key.clone()),
        };
        let mut out = String::new();
        encode_row(&row, &key, &mut out);
        assert_eq!(
            out,
            "{\"window_start\":60,\"window_end\":120,\"city\":\"Xi'an\\t\\\"x\\\"\",\"category\":\"books\",\
             \"order_cnt\":3,\"gmv_total\":123.45,\"user_cnt\":2,\"version\":4,\"updated_at\":100}\n"
        );
        let tsv = "60\t120\tXi\\'an\\t\"x\"\tbooks\t3\t123.45\t2\t4\t100\n";
        assert_eq!(parse_rows(tsv, &key.dims).unwrap(), vec![row]);
    }
}
