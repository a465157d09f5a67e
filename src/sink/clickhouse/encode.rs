//! Window rows to and from ClickHouse's text formats.
//!
//! Rows go out as `JSONEachRow`: DateTimes as epoch seconds, `gmv_total` as
//! an unquoted JSON number with exactly two decimals built from integer
//! cents (18.16 rejects a quoted decimal; no float is ever involved). They
//! come back as `TabSeparated`, `gmv_total` printed by the server itself,
//! which 18.16 writes with two decimals (`12.30`) and current releases
//! without trailing zeros (`12.3`, `5`); [`parse_cents`] reads both exactly.
//!
//! [`check_row`] says whether the SPEC §6 table can hold a row at all. It
//! runs before a row is sent, because the server does not always refuse
//! what it cannot hold: 18.16 wraps a DateTime outside `0..=u32::MAX`, and
//! current releases clamp it, both silently.

use std::fmt::Write as _;

use crate::event::format_cents;
use crate::window::WindowRow;

/// The largest `Decimal(38, 2)` in cents: 38 nines.
pub const MAX_GMV_CENTS: u128 = 10u128.pow(38) - 1;

/// The largest DateTime, in epoch seconds (2106-02-07T06:28:15Z).
pub const MAX_DATETIME: i64 = u32::MAX as i64;

/// Why the table cannot hold `row`, if it cannot.
pub fn check_row(row: &WindowRow) -> Result<(), String> {
    for (column, value) in [
        ("window_start", row.window_start),
        ("window_end", row.window_end),
        ("updated_at", row.updated_at),
    ] {
        if !(0..=MAX_DATETIME).contains(&value) {
            return Err(format!(
                "{column} = {value} is outside what a ClickHouse DateTime holds (0 to {MAX_DATETIME}, \
                 1970-01-01 to 2106-02-07); not sent, since ClickHouse would store another time instead"
            ));
        }
    }
    if row.gmv_cents > MAX_GMV_CENTS {
        return Err(format!(
            "gmv_total {} is more than Decimal(38, 2) holds; not sent",
            format_cents(row.gmv_cents)
        ));
    }
    Ok(())
}

/// Appends one row as a `JSONEachRow` line (the row passed [`check_row`]).
pub fn encode_row(row: &WindowRow, out: &mut String) {
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
}

/// The body of one INSERT.
pub fn encode_rows<'a>(rows: impl IntoIterator<Item = &'a WindowRow>) -> String {
    let mut body = String::new();
    for row in rows {
        encode_row(row, &mut body);
    }
    body
}

/// The `insert_deduplication_token` of an INSERT: a 128-bit hash of the
/// table and the exact body. Equal tokens mean equal rows, so a server
/// that drops an insert as a repeat drops only what it already has; a
/// token made of a checkpoint id would not be (ids restart at 1 with a
/// fresh state directory, and new rows would be dropped as old ones).
pub fn dedup_token(table: &str, body: &str) -> String {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(table.as_bytes());
    hasher.update(&[0]);
    hasher.update(body.as_bytes());
    format!("streamforge-{:032x}", hasher.digest128())
}

/// Reads an exact non-negative decimal with at most two decimals (`12`,
/// `12.3`, `0.07`, up to 38 digits) as cents.
pub fn parse_cents(text: &str) -> Option<u128> {
    let (int, frac) = match text.split_once('.') {
        Some((_, "")) => return None,
        Some(parts) => parts,
        None => (text, ""),
    };
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || !digits(int) || !digits(frac) || frac.len() > 2 || int.len() > 38 {
        return None;
    }
    let whole: u128 = int.parse().ok()?;
    let mut cents: u128 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    if frac.len() == 1 {
        cents *= 10;
    }
    let total = whole.checked_mul(100)?.checked_add(cents)?;
    (total <= MAX_GMV_CENTS).then_some(total)
}

/// Reads one `TabSeparated` field (18.16 escapes `'` as `\'` too).
pub fn tsv_unescape(field: &str) -> String {
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

/// Parses the answer of the final-rows query ([`super::schema::read_final_sql`]).
pub fn parse_final_rows(text: &str) -> Result<Vec<WindowRow>, String> {
    let mut rows = Vec::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.is_empty()) {
        let bad = |why: &str| {
            format!(
                "line {} of the answer ({why}): `{}`",
                n + 1,
                super::error::clickhouse_message(line)
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
            users: None,
            window_start: int(start)? as i64,
            window_end: int(end)? as i64,
            order_cnt: int(orders)?,
            gmv_cents: parse_cents(gmv).ok_or_else(|| bad("gmv_total is not an amount"))?,
            user_cnt: int(users)?,
            version: int(version)?,
            updated_at: int(updated)? as i64,
            group: None,
        });
    }
    Ok(rows)
}

/// Parses the answer of the max-version query: a number, or nothing /
/// `\N` for an empty table (a profile with
/// `aggregate_functions_null_for_empty` answers NULL).
pub fn parse_max_version(text: &str) -> Result<u64, String> {
    match text.trim() {
        "" | "\\N" => Ok(0),
        n => n
            .parse()
            .map_err(|_| format!("`{n}` is not a version (an unsigned integer)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(start: i64, gmv_cents: u128, version: u64) -> WindowRow {
        WindowRow {
            users: None,
            window_start: start,
            window_end: start + 60,
            order_cnt: 3,
            gmv_cents,
            user_cnt: 2,
            version,
            updated_at: 1_764_064_900,
            group: None,
        }
    }

    #[test]
    fn rows_encode_as_exact_json_each_row() {
        let body = encode_rows(&[
            row(1_764_064_800, 7, 1),
            row(1_764_064_830, 999_999_999_999_999_999, u64::MAX),
            row(0, 0, 2),
            row(60, 1230, 3),
            row(90, MAX_GMV_CENTS, 4),
        ]);
        let expected = concat!(
            r#"{"window_start":1764064800,"window_end":1764064860,"order_cnt":3,"gmv_total":0.07,"user_cnt":2,"version":1,"updated_at":1764064900}"#,
            "\n",
            r#"{"window_start":1764064830,"window_end":1764064890,"order_cnt":3,"gmv_total":9999999999999999.99,"user_cnt":2,"version":18446744073709551615,"updated_at":1764064900}"#,
            "\n",
            r#"{"window_start":0,"window_end":60,"order_cnt":3,"gmv_total":0.00,"user_cnt":2,"version":2,"updated_at":1764064900}"#,
            "\n",
            r#"{"window_start":60,"window_end":120,"order_cnt":3,"gmv_total":12.30,"user_cnt":2,"version":3,"updated_at":1764064900}"#,
            "\n",
            r#"{"window_start":90,"window_end":150,"order_cnt":3,"gmv_total":999999999999999999999999999999999999.99,"user_cnt":2,"version":4,"updated_at":1764064900}"#,
            "\n",
        );
        assert_eq!(body, expected);
        // Every line is valid JSON with the decimal unquoted.
        for line in body.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert!(v["gmv_total"].is_number());
        }
    }

    #[test]
    fn rows_a_column_cannot_hold_are_refused() {
        // Window [-30, 30) of an event in the first 30 s after the epoch.
        let err = check_row(&row(-30, 1, 1)).unwrap_err();
        assert!(
            err.contains("window_start = -30") && err.contains("DateTime"),
            "{err}"
        );
        let err = check_row(&row(MAX_DATETIME, 1, 1)).unwrap_err();
        assert!(err.contains("window_end"), "{err}");
        let err = check_row(&row(0, MAX_GMV_CENTS + 1, 1)).unwrap_err();
        assert!(
            err.contains("1000000000000000000000000000000000000.00")
                && err.contains("Decimal(38, 2)"),
            "{err}"
        );
        // The edges themselves fit, and so does what Decimal(18, 2) did not.
        for ok in [
            row(0, 0, 1),
            row(MAX_DATETIME - 60, MAX_GMV_CENTS, 1),
            row(1_704_067_200, 1_200_000_000_000_000_000, 1),
        ] {
            check_row(&ok).unwrap();
        }
    }

    #[test]
    fn cents_parse_exactly_from_old_and_new_servers() {
        for (text, cents) in [
            ("0.07", 7),
            ("12.30", 1230),
            ("12.3", 1230),
            ("5", 500),
            ("0", 0),
            ("9999999999999999.99", 999_999_999_999_999_999),
            ("12000000000000000", 1_200_000_000_000_000_000),
            ("999999999999999999999999999999999999.99", MAX_GMV_CENTS),
        ] {
            assert_eq!(parse_cents(text), Some(cents), "{text}");
        }
        for bad in [
            "",
            ".5",
            "1.234",
            "-1",
            "1e5",
            "1.",
            "x",
            "1000000000000000000000000000000000000",
            "99999999999999999999999999999999999999.99",
        ] {
            assert_eq!(parse_cents(bad), None, "{bad}");
        }
    }

    #[test]
    fn final_rows_parse_exactly_from_old_and_new_servers() {
        let text = "1764064800\t1764064860\t3\t0.07\t2\t1\t1764064900\n\
                    1764064830\t1764064890\t18446744073709551615\t9999999999999999.99\t2\t18446744073709551615\t0\n\
                    60\t120\t1\t12.3\t1\t1\t0\n\
                    90\t150\t1\t12000000000000000\t1\t1\t0\n";
        let rows = parse_final_rows(text).unwrap();
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[0], row(1_764_064_800, 7, 1));
        assert_eq!(rows[1].order_cnt, u64::MAX);
        assert_eq!(rows[1].gmv_cents, 999_999_999_999_999_999);
        assert_eq!(rows[1].version, u64::MAX);
        assert_eq!(rows[2].gmv_cents, 1230);
        assert_eq!(rows[3].gmv_cents, 1_200_000_000_000_000_000);
        assert!(parse_final_rows("").unwrap().is_empty());
        let err = parse_final_rows("1\t2\t3\n").unwrap_err();
        assert!(err.contains("7 tab-separated"), "{err}");
        let err = parse_final_rows("1\t2\t3\t1.234\t5\t6\t7\n").unwrap_err();
        assert!(err.contains("gmv_total"), "{err}");
    }

    #[test]
    fn the_max_version_parses_with_or_without_rows() {
        assert_eq!(parse_max_version("0\n"), Ok(0));
        assert_eq!(parse_max_version("\\N\n"), Ok(0));
        assert_eq!(parse_max_version(""), Ok(0));
        assert_eq!(parse_max_version("18446744073709551615\n"), Ok(u64::MAX));
        assert!(parse_max_version("-1").is_err());
    }

    #[test]
    fn dedup_tokens_follow_the_content_and_the_table() {
        let body = encode_rows(&[row(0, 1, 1)]);
        let token = dedup_token("d.t", &body);
        assert_eq!(token, dedup_token("d.t", &body));
        assert!(token.starts_with("streamforge-") && token.len() == "streamforge-".len() + 32);
        assert_ne!(token, dedup_token("d.u", &body));
        assert_ne!(token, dedup_token("d.t", &encode_rows(&[row(0, 1, 2)])));
    }

    #[test]
    fn tsv_fields_unescape() {
        assert_eq!(tsv_unescape(r"DateTime(\'UTC\')"), "DateTime('UTC')");
        assert_eq!(tsv_unescape(r"a\tb\\c\n"), "a\tb\\c\n");
    }
}
