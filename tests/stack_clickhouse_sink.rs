//! The ClickHouse sink against a real server (SPEC §6).
//!
//! The server is `STREAMFORGE_TEST_CLICKHOUSE_URL`, by default
//! `http://127.0.0.1:8123`, which `scripts/stack.sh up` starts. A server that
//! does not answer fails these tests: they never skip. Each test works on a
//! table of its own in database `streamforge_test` and drops it at the end,
//! even when it fails, so the tests run in parallel and leave nothing behind.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use streamforge::setting::Dur;
use streamforge::sink::clickhouse::{ClickHouseSettings, ClickHouseSink};
use streamforge::sink::{Sink, SinkError};
use streamforge::window::WindowRow;

const DATABASE: &str = "streamforge_test";

/// ClickHouse 18.16 fails a query on system.columns when another table of
/// the database is dropped meanwhile; these tests create and drop tables, so
/// they take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[path = "common/endpoints.rs"]
mod endpoints;

fn server_url() -> String {
    endpoints::test_stack().clickhouse_url.clone()
}

/// Settings for a fresh table name unique to this process and call.
fn settings(tag: &str) -> ClickHouseSettings {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    ClickHouseSettings {
        url: server_url(),
        database: DATABASE.into(),
        table: format!(
            "sink_{}_{}_{tag}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ),
        timeout: Dur(Duration::from_secs(20)),
        ..ClickHouseSettings::default()
    }
}

/// A sink on its own table, dropped when the test ends (pass or fail).
struct TestTable {
    sink: ClickHouseSink,
    settings: ClickHouseSettings,
}

impl TestTable {
    /// Connects and makes sure the server answers and the test database
    /// exists; panics with the way to start the stack otherwise.
    fn new(tag: &str) -> Self {
        let settings = settings(tag);
        let sink =
            ClickHouseSink::connect(&settings).expect("connect builds a client without the server");
        match sink.query_text(&format!("CREATE DATABASE IF NOT EXISTS {DATABASE}")) {
            Ok(_) => {}
            Err(e) => panic!(
                "ClickHouse does not answer at {} ({e}). Start the local stack with `scripts/stack.sh up`, \
                 or point STREAMFORGE_TEST_CLICKHOUSE_URL at a running server",
                settings.url
            ),
        }
        TestTable { sink, settings }
    }

    fn qualified(&self) -> String {
        format!("{}.{}", self.settings.database, self.settings.table)
    }
}

impl Drop for TestTable {
    fn drop(&mut self) {
        if let Err(e) = self.sink.drop_table() {
            eprintln!("could not drop test table {}: {e}", self.qualified());
        }
    }
}

fn row(start: i64, version: u64, order_cnt: u64, gmv_cents: u128) -> WindowRow {
    WindowRow {
        users: None,
        window_start: start,
        window_end: start + 60,
        order_cnt,
        gmv_cents,
        user_cnt: order_cnt / 2 + 1,
        version,
        updated_at: 1_764_070_000 + version as i64,
        group: None,
    }
}

fn fatal_message(result: Result<(), SinkError>) -> String {
    match result {
        Err(SinkError::Fatal(message)) => message,
        other => panic!("expected a fatal error, got {other:?}"),
    }
}

const T0: i64 = 1_764_064_800; // 2025-11-25T10:00:00Z

#[test]
fn rows_round_trip_with_exact_decimals() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut t = TestTable::new("roundtrip");
    t.sink.ensure_schema().unwrap();
    let rows = vec![
        row(T0, 1, 1, 7),                            // 0.07
        row(T0 + 30, 1, 2, 999_999_999_999_999_999), // 9999999999999999.99
        row(T0 + 60, 1, 0, 0),                       // 0.00
        row(T0 + 90, 1, 3, 1230),                    // 12.30
        row(T0 + 120, u64::MAX, u64::MAX, 973_122_450),
        row(0, 1, 1, 1),
    ];
    // Out of order on purpose: read_final sorts by window_start.
    t.sink.write(&rows).unwrap();
    let mut expected = rows.clone();
    expected.sort_by_key(|r| r.window_start);
    assert_eq!(t.sink.read_final().unwrap(), expected);

    // The decimals as ClickHouse itself sees them.
    let text = t
        .sink
        .query_text(&format!(
            "SELECT toString(gmv_total) FROM {} WHERE window_start = toDateTime({}) FORMAT TabSeparated",
            t.qualified(),
            T0 + 30
        ))
        .unwrap();
    assert_eq!(text.trim(), "9999999999999999.99");
    let lines: Vec<String> = t
        .sink
        .read_final()
        .unwrap()
        .iter()
        .map(WindowRow::result_json)
        .collect();
    assert!(lines.contains(
        &r#"{"window_start": 1764064800, "window_end": 1764064860, "order_cnt": 1, "gmv_total": "0.07", "user_cnt": 1}"#
            .to_string()
    ));
}

#[test]
fn a_large_batch_is_one_insert_and_reads_back_whole() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut t = TestTable::new("large");
    t.sink.ensure_schema().unwrap();
    let rows: Vec<WindowRow> = (0..5000)
        .map(|i| row(T0 + 30 * i, 1, i as u64, i as u128 * 101))
        .collect();
    t.sink.write(&rows).unwrap();
    assert_eq!(t.sink.read_final().unwrap(), rows);
}

#[test]
fn upserts_keep_the_highest_version() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut t = TestTable::new("upsert");
    t.sink.ensure_schema().unwrap();

    t.sink
        .write(&[row(T0, 1, 10, 1000), row(T0 + 30, 1, 5, 500)])
        .unwrap();
    // A higher version replaces the window.
    t.sink.write(&[row(T0, 2, 12, 1234)]).unwrap();
    assert_eq!(
        t.sink.read_final().unwrap(),
        vec![row(T0, 2, 12, 1234), row(T0 + 30, 1, 5, 500)]
    );

    // The same version written again (a resend after recovery) changes nothing.
    t.sink
        .write(&[row(T0, 2, 12, 1234), row(T0 + 30, 1, 5, 500)])
        .unwrap();
    assert_eq!(
        t.sink.read_final().unwrap(),
        vec![row(T0, 2, 12, 1234), row(T0 + 30, 1, 5, 500)]
    );

    // An older version after a newer one does not win, in its own batch...
    t.sink.write(&[row(T0, 1, 10, 1000)]).unwrap();
    // ...nor when versions are mixed within one batch.
    t.sink
        .write(&[row(T0 + 30, 3, 7, 777), row(T0 + 30, 2, 6, 666)])
        .unwrap();
    assert_eq!(
        t.sink.read_final().unwrap(),
        vec![row(T0, 2, 12, 1234), row(T0 + 30, 3, 7, 777)]
    );

    // Without FINAL the replaced rows may still be there: readers need it.
    let raw = t
        .sink
        .query_text(&format!(
            "SELECT count() FROM {} FORMAT TabSeparated",
            t.qualified()
        ))
        .unwrap();
    assert!(raw.trim().parse::<u64>().unwrap() >= 2, "{raw}");

    t.sink.truncate().unwrap();
    assert!(t.sink.read_final().unwrap().is_empty());
}

#[test]
fn ensure_schema_accepts_an_existing_correct_table() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let t = TestTable::new("existing");
    // Created by hand with the DDL the docs show, then checked twice.
    t.sink
        .query_text(&ClickHouseSink::ddl(&t.settings))
        .unwrap();
    t.sink.ensure_schema().unwrap();
    t.sink.ensure_schema().unwrap();
    let no_create = ClickHouseSettings {
        create_table: false,
        ..t.settings.clone()
    };
    ClickHouseSink::connect(&no_create)
        .unwrap()
        .ensure_schema()
        .unwrap();
}

#[test]
fn a_missing_table_without_create_table_is_fatal() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let t = TestTable::new("missing");
    let settings = ClickHouseSettings {
        create_table: false,
        ..t.settings.clone()
    };
    let mut sink = ClickHouseSink::connect(&settings).unwrap();
    let message = fatal_message(sink.ensure_schema());
    assert!(
        message.contains(&t.qualified())
            && message.contains("does not exist")
            && message.contains("create_table"),
        "{message}"
    );
    let message = fatal_message(sink.write(&[row(T0, 1, 1, 1)]));
    assert!(
        message.contains("create_table") && message.contains(&t.qualified()),
        "{message}"
    );
    let message = match sink.read_final() {
        Err(SinkError::Fatal(m)) => m,
        other => panic!("{other:?}"),
    };
    assert!(
        message.contains(&format!("table {} does not exist", t.qualified()))
            && message.contains("never do"),
        "{message}"
    );
}

#[test]
fn a_float_gmv_column_is_reported_as_a_schema_mismatch() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let t = TestTable::new("float");
    let ddl = ClickHouseSink::ddl(&t.settings).replace("Decimal(38, 2)", "Float64");
    t.sink.query_text(&ddl).unwrap();
    let message = fatal_message(t.sink.ensure_schema());
    for needle in [
        t.qualified().as_str(),
        "gmv_total Float64",
        "gmv_total Decimal(38, 2)",
        "sql/create_ck_table.sql",
        "RENAME TABLE",
    ] {
        assert!(
            message.contains(needle),
            "`{needle}` missing from: {message}"
        );
    }
}

#[test]
fn a_merge_tree_engine_is_reported_as_a_schema_mismatch() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let t = TestTable::new("engine");
    let ddl = ClickHouseSink::ddl(&t.settings).replace("ReplacingMergeTree(version)", "MergeTree");
    t.sink.query_text(&ddl).unwrap();
    let message = fatal_message(t.sink.ensure_schema());
    assert!(
        message.contains("engine is MergeTree, expected ReplacingMergeTree(version)")
            && message.contains(&t.qualified()),
        "{message}"
    );
}

#[test]
fn a_replacing_engine_without_version_is_reported() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let t = TestTable::new("noversion");
    let ddl = ClickHouseSink::ddl(&t.settings)
        .replace("ReplacingMergeTree(version)", "ReplacingMergeTree");
    t.sink.query_text(&ddl).unwrap();
    let message = fatal_message(t.sink.ensure_schema());
    assert!(message.contains("without the version column"), "{message}");
}

#[test]
fn rows_the_table_rejects_are_fatal_not_retried() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut t = TestTable::new("rejects");
    // A table without user_cnt: the insert can never succeed.
    let ddl = ClickHouseSink::ddl(&t.settings).replace("    user_cnt     UInt64,\n", "");
    assert!(!ddl.contains("user_cnt"), "{ddl}");
    t.sink.query_text(&ddl).unwrap();
    // The check before the first write already catches it.
    let message = fatal_message(t.sink.write(&[row(T0, 1, 1, 1)]));
    assert!(
        message.contains("user_cnt") && message.contains("is not the table StreamForge writes"),
        "{message}"
    );
    // And the insert itself, without that check, is fatal too.
    t.sink.assume_schema_checked();
    let message = fatal_message(t.sink.write(&[row(T0, 1, 1, 1)]));
    assert!(
        message.contains("user_cnt") && message.contains("SHOW CREATE TABLE"),
        "{message}"
    );

    // A decimal column too small for the value: ClickHouse answers HTTP 500
    // with a code that says the data is wrong.
    t.sink.drop_table().unwrap();
    let ddl = ClickHouseSink::ddl(&t.settings).replace("Decimal(38, 2)", "Decimal(9, 2)");
    t.sink.query_text(&ddl).unwrap();
    t.sink.assume_schema_checked();
    let message = fatal_message(t.sink.write(&[row(T0, 1, 1, 999_999_999_999_999_999)]));
    assert!(
        message.contains("HTTP 500") && message.contains("retrying cannot help"),
        "{message}"
    );
}

#[test]
fn an_unreachable_server_is_retryable() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // A port nobody listens on: bind one, then free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let settings = ClickHouseSettings {
        url: format!("http://127.0.0.1:{port}"),
        database: DATABASE.into(),
        table: "unreachable".into(),
        connect_timeout: Dur(Duration::from_secs(2)),
        ..ClickHouseSettings::default()
    };
    let mut sink = ClickHouseSink::connect(&settings).expect("connect does not need the server");
    for result in [
        sink.write(&[row(T0, 1, 1, 1)]),
        sink.ensure_schema(),
        sink.read_final().map(drop),
    ] {
        match result {
            Err(SinkError::Retryable(message)) => {
                assert!(
                    message.contains(&format!("127.0.0.1:{port}"))
                        && message.contains("streamforge_test.unreachable"),
                    "{message}"
                );
                assert!(message.contains("scripts/stack.sh up"), "{message}");
            }
            other => panic!("expected a retryable error, got {other:?}"),
        }
    }
}

#[test]
fn wrong_credentials_are_fatal_and_never_echo_the_password() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let t = TestTable::new("auth");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("password");
    std::fs::write(&file, "not-the-password-42\n").unwrap();
    let settings = ClickHouseSettings {
        user: "streamforge_no_such_user".into(),
        password_file: Some(file),
        ..t.settings.clone()
    };
    let mut sink = ClickHouseSink::connect(&settings).unwrap();
    let message = fatal_message(sink.write(&[row(T0, 1, 1, 1)]));
    assert!(
        message.contains("HTTP 401") || message.contains("HTTP 403"),
        "{message}"
    );
    assert!(
        message.contains("credentials") && message.contains("streamforge_no_such_user"),
        "{message}"
    );
    assert!(!message.contains("not-the-password-42"), "{message}");
    let shown = format!("{} {:?}", sink.describe(), sink);
    assert!(!shown.contains("not-the-password-42"), "{shown}");
    assert!(shown.contains(&t.qualified()));
}
