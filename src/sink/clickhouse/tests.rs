//! The connector without a server: a scripted HTTP listener for the
//! transport's own behaviour, and a fake engine (a [`Transport`]) for what
//! the sink does with answers: probing, splitting refused batches, dead
//! letters, the schema check after a data refusal.

use std::sync::{Arc, Mutex};

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
fn invalid_names_fail_at_connect() {
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
    let debug = format!("{sink:?}");
    assert!(
        !debug.contains("hunter2") && debug.contains("<redacted>"),
        "{debug}"
    );
    assert_eq!(
        sink.describe(),
        "clickhouse https://ch.example.com:8443 table streamforge.order_metrics"
    );
    let err = sink.client.error(
        "inserting 1 row",
        Failure {
            kind: ErrorKind::Credentials,
            code: Some(516),
            detail: "HTTP 401: Code: 516".into(),
        },
    );
    let SinkError::Fatal(message) = SinkError::from(err) else {
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

/// A loopback HTTP server that, for each connection in turn, reads one
/// request and then either closes without answering (`false`) or answers
/// `200 Ok.` (`true`). Returns its URL and the number of connections it
/// took.
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
    let (url, server) = scripted_server(vec![false; 1 + client::STALE_RETRIES as usize]);
    let settings = ClickHouseSettings {
        url,
        ..Default::default()
    };
    let sink = ClickHouseSink::connect(&settings).unwrap();
    let error = sink.query_text("SELECT 1").unwrap_err().to_string();
    assert!(error.contains("(retryable)"), "{error}");
    assert_eq!(server.join().unwrap(), 1 + client::STALE_RETRIES as usize);
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

/// A fake current ClickHouse: answers the probe and the schema queries as
/// 26.9 does, stores inserted bodies, and refuses (HTTP 400, code 69, as
/// 26.9 does) every INSERT whose body holds a `gmv_total` with `refuse` in
/// it. `table_ok` false makes the table's gmv column `Decimal(9, 2)`.
struct FakeEngine {
    refuse: &'static str,
    table_ok: bool,
    log: Arc<Mutex<Vec<Request>>>,
}

impl FakeEngine {
    fn answer(&self, request: &Request) -> Response {
        let sql = request.full_text();
        let ok = |body: String| Response {
            status: 200,
            body,
            ..Response::default()
        };
        if sql.starts_with("SELECT version()") {
            return ok("26.9.2.1\n".into());
        }
        if sql.contains("FROM system.settings") {
            return ok("async_insert\t0\ninsert_deduplication_token\t\ninput_format_skip_unknown_fields\t1\n".into());
        }
        if sql.contains("FROM system.merge_tree_settings") {
            return ok("non_replicated_deduplication_window\n".into());
        }
        let by_city = sql.contains("order_metrics_by_city'");
        if sql.contains("FROM system.tables") {
            let key = if by_city {
                "window_start, city"
            } else {
                "window_start"
            };
            return ok(format!("ReplacingMergeTree\tReplacingMergeTree(version) PARTITION BY toYYYYMMDD(window_start) ORDER BY {key} SETTINGS non_replicated_deduplication_window = 1000\t{key}\ttoYYYYMMDD(window_start)\n"));
        }
        if sql.contains("FROM system.columns") {
            let gmv = if self.table_ok {
                "Decimal(38, 2)"
            } else {
                "Decimal(9, 2)"
            };
            let mut columns = COLUMNS.to_vec();
            if by_city {
                columns.insert(2, ("city", "String"));
            }
            return ok(columns
                .iter()
                .map(|(n, t)| format!("{n}\t{}\n", if *n == "gmv_total" { gmv } else { t }))
                .collect());
        }
        if sql.starts_with("CREATE TABLE IF NOT EXISTS") {
            return ok(String::new());
        }
        if sql.starts_with("INSERT") {
            if request
                .body
                .contains(&format!("\"gmv_total\":{}", self.refuse))
            {
                return Response {
                    status: 400,
                    exception_code: Some(69),
                    body: "Code: 69. DB::Exception: Decimal value is too big: 39 digits were read. (ARGUMENT_OUT_OF_BOUND)\n".into(),
                    ..Response::default()
                };
            }
            return ok(String::new());
        }
        panic!("the fake engine does not know {sql}");
    }
}

impl Transport for FakeEngine {
    fn send(&self, request: &Request) -> Result<Response, Failure> {
        self.log.lock().unwrap().push(request.clone());
        Ok(self.answer(request))
    }

    fn describe(&self) -> String {
        "fake://26.9".into()
    }
}

/// A sink on a fake engine, its request log and its dead-letter file.
fn fake_sink(table_ok: bool) -> (ClickHouseSink, Arc<Mutex<Vec<Request>>>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let settings = ClickHouseSettings {
        dead_letter_log: dir.path().join("dead.log"),
        ..Default::default()
    };
    let log = Arc::new(Mutex::new(Vec::new()));
    let engine = FakeEngine {
        refuse: "99999999",
        table_ok,
        log: log.clone(),
    };
    let mut sink = ClickHouseSink::with_transport(&settings, Box::new(engine)).unwrap();
    sink.send_rows_unchecked();
    (sink, log, dir)
}

fn inserts(log: &Arc<Mutex<Vec<Request>>>) -> Vec<Request> {
    log.lock()
        .unwrap()
        .iter()
        .filter(|r| r.query.is_some())
        .cloned()
        .collect()
}

#[test]
fn inserts_pin_settings_and_carry_a_content_token() {
    let (mut sink, log, _dir) = fake_sink(true);
    sink.write(&[row(0, 100, 1)]).unwrap();
    sink.write(&[row(30, 100, 1)]).unwrap();
    let sent = inserts(&log);
    assert_eq!(sent.len(), 2);
    let token = |r: &Request| {
        r.settings
            .iter()
            .find(|(n, _)| *n == "insert_deduplication_token")
            .map(|(_, v)| v.clone())
            .expect("a token on a server that has them")
    };
    assert_ne!(token(&sent[0]), token(&sent[1]));
    assert_eq!(
        token(&sent[0]),
        encode::dedup_token("streamforge.order_metrics", &sent[0].body)
    );
    // Only the settings the server knows are sent.
    assert!(sent[0].settings.contains(&("async_insert", "0".into())));
    assert!(sent[0]
        .settings
        .contains(&("input_format_skip_unknown_fields", "0".into())));
    assert!(!sent[0]
        .settings
        .iter()
        .any(|(n, _)| *n == "date_time_input_format"));
}

#[test]
fn refused_rows_are_found_by_halves_and_go_to_the_dead_letters_once() {
    let (mut sink, log, dir) = fake_sink(true);
    // 8 rows, two of them with a GMV the fake engine refuses.
    let bad = 9_999_999_900u128;
    let rows: Vec<WindowRow> = (0..8)
        .map(|i| row(30 * i, if i == 2 || i == 7 { bad } else { 100 }, 1))
        .collect();
    sink.write(&rows).unwrap();
    let sent = inserts(&log);
    let stored: Vec<&Request> = sent
        .iter()
        .filter(|r| !r.body.contains("99999999"))
        .collect();
    let stored_rows: usize = stored.iter().map(|r| r.body.lines().count()).sum();
    assert_eq!(stored_rows, 6, "every good row is stored once");
    // The whole batch, then halves: at most 2 * (log2(8) + 1) refused tries.
    assert!(sent.len() <= 1 + 2 * 2 * 3, "{} inserts", sent.len());

    let dead = std::fs::read_to_string(dir.path().join("dead.log")).unwrap();
    let starts: Vec<i64> = dead
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["window_start"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(starts, vec![60, 210]);
    assert!(
        dead.contains("Code: 69") && dead.contains("HTTP 400"),
        "{dead}"
    );

    // Resending the batch (recovery) adds no line.
    sink.write(&rows).unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("dead.log")).unwrap(),
        dead
    );
}

#[test]
fn rows_the_table_cannot_hold_are_not_sent() {
    let (mut sink, log, dir) = fake_sink(true);
    sink.check_rows = true;
    sink.write(&[
        row(-30, 100, 1),
        row(0, 100, 1),
        row(0, MAX_GMV_CENTS + 1, 2),
    ])
    .unwrap();
    let sent = inserts(&log);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].body.lines().count(), 1);
    let dead = std::fs::read_to_string(dir.path().join("dead.log")).unwrap();
    assert_eq!(dead.lines().count(), 2, "{dead}");
    assert!(
        dead.contains("window_start = -30") && dead.contains("Decimal(38, 2)"),
        "{dead}"
    );
}

#[test]
fn a_data_refusal_on_a_table_that_is_not_spec_is_fatal() {
    let (mut sink, _log, dir) = fake_sink(false);
    sink.assume_schema_checked();
    let err = sink
        .write(&[row(0, 9_999_999_900, 1), row(30, 100, 1)])
        .unwrap_err();
    let SinkError::Fatal(message) = err else {
        panic!("{err:?}")
    };
    assert!(
        message.contains("Code: 69")
            && message.contains("the table is at fault")
            && message.contains("gmv_total Decimal(9, 2)"),
        "{message}"
    );
    assert!(!dir.path().join("dead.log").exists());
}

#[test]
fn an_unknown_server_failure_is_retried_not_split() {
    struct Down;
    impl Transport for Down {
        fn send(&self, _: &Request) -> Result<Response, Failure> {
            Ok(Response {
                status: 503,
                body: "upstream connect error".into(),
                ..Response::default()
            })
        }
        fn describe(&self) -> String {
            "fake://down".into()
        }
    }
    let mut sink =
        ClickHouseSink::with_transport(&ClickHouseSettings::default(), Box::new(Down)).unwrap();
    match sink.write(&[row(0, 1, 1)]) {
        Err(SinkError::Retryable(m)) => assert!(m.contains("HTTP 503"), "{m}"),
        other => panic!("{other:?}"),
    }
}

fn city_row(start: i64, city: &str, gmv_cents: u128, version: u64) -> WindowRow {
    WindowRow {
        group: Some(crate::dims::GroupKey {
            dims: vec![crate::dims::Dimension::City],
            values: vec![city.to_string()],
        }),
        ..row(start, gmv_cents, version)
    }
}

/// A fake sink writing the totals and the grouping by city.
fn fake_city_sink(table_ok: bool) -> (ClickHouseSink, Arc<Mutex<Vec<Request>>>, tempfile::TempDir) {
    let (mut sink, log, dir) = fake_sink(table_ok);
    sink.set_groupings(vec![vec![crate::dims::Dimension::City]]);
    (sink, log, dir)
}

fn dead_letters(dir: &tempfile::TempDir) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.path().join("dead.log"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn refused_grouped_rows_are_found_by_halves_and_go_to_the_dead_letters_once() {
    let (mut sink, log, dir) = fake_city_sink(true);
    let bad = 9_999_999_900u128;
    // Two windows' totals and 8 grouped rows of one window and version,
    // two of them with a GMV the fake engine refuses.
    let cities = ["a", "b", "c", "d", "e", "f", "g", "h"];
    let mut rows = vec![row(0, 100, 1), row(30, 100, 1)];
    rows.extend(
        cities
            .iter()
            .enumerate()
            .map(|(i, c)| city_row(0, c, if i == 2 || i == 7 { bad } else { 100 }, 1)),
    );
    sink.write(&rows).unwrap();

    let sent = inserts(&log);
    let stored = |table: &str| -> Vec<String> {
        sent.iter()
            .filter(|r| r.query.as_deref().unwrap().contains(table) && !r.body.contains("99999999"))
            .flat_map(|r| r.body.lines().map(str::to_string).collect::<Vec<_>>())
            .collect()
    };
    let mut want_grouped: Vec<String> = rows
        .iter()
        .filter(|r| r.group.is_some() && r.gmv_cents != bad)
        .map(|r| {
            let mut line = String::new();
            grouped::encode_row(r, r.group.as_ref().unwrap(), &mut line);
            line.trim_end().to_string()
        })
        .collect();
    let mut got_grouped = stored("`order_metrics_by_city`");
    want_grouped.sort();
    got_grouped.sort();
    assert_eq!(
        got_grouped, want_grouped,
        "every good grouped row is stored once"
    );
    assert_eq!(
        stored("`order_metrics` (").len(),
        2,
        "the totals are stored"
    );

    let dead = dead_letters(&dir);
    let got: Vec<(&str, &str, i64)> = dead
        .iter()
        .map(|v| {
            (
                v["table"].as_str().unwrap(),
                v["city"].as_str().unwrap(),
                v["window_start"].as_i64().unwrap(),
            )
        })
        .collect();
    let want: Vec<(&str, &str, i64)> = rows
        .iter()
        .filter(|r| r.gmv_cents == bad)
        .map(|r| {
            let city = r.group.as_ref().unwrap().values[0].as_str();
            ("streamforge.order_metrics_by_city", city, r.window_start)
        })
        .collect();
    assert_eq!(got, want);
    assert!(dead
        .iter()
        .all(|v| v["error"].as_str().unwrap().contains("Code: 69")));

    // Resending the batch (recovery) adds no line.
    sink.write(&rows).unwrap();
    assert_eq!(dead_letters(&dir), dead);
}

#[test]
fn grouped_rows_the_table_cannot_hold_are_not_sent() {
    let (mut sink, log, dir) = fake_city_sink(true);
    sink.check_rows = true;
    let mut no_value = city_row(60, "x", 100, 1);
    no_value.group.as_mut().unwrap().values.clear();
    let mut not_configured = city_row(60, "x", 100, 1);
    not_configured.group.as_mut().unwrap().dims = vec![crate::dims::Dimension::Category];
    sink.write(&[
        city_row(-30, "a", 100, 1),
        city_row(0, "a", 100, 1),
        city_row(0, "b", MAX_GMV_CENTS + 1, 1),
        no_value,
        not_configured,
        // Any text fits a String column.
        city_row(0, "\0\t\"'\\ \u{1f}é😀", 100, 1),
    ])
    .unwrap();
    let sent = inserts(&log);
    assert_eq!(sent.len(), 1, "one INSERT, into the city table");
    assert_eq!(sent[0].body.lines().count(), 2, "{}", sent[0].body);
    let dead = dead_letters(&dir);
    let errors: Vec<&str> = dead.iter().map(|v| v["error"].as_str().unwrap()).collect();
    assert_eq!(errors.len(), 4, "{errors:#?}");
    assert!(errors[0].contains("window_start = -30"), "{}", errors[0]);
    assert!(errors[1].contains("Decimal(38, 2)"), "{}", errors[1]);
    assert!(
        errors[2].contains("0 value(s) for 1 dimension(s)"),
        "{}",
        errors[2]
    );
    assert!(errors[3].contains("no table for"), "{}", errors[3]);
    assert_eq!(dead[0]["city"], "a");
    assert_eq!(dead[3]["category"], "x");
}

#[test]
fn a_data_refusal_on_a_grouped_table_that_is_not_its_ddl_is_fatal() {
    let (mut sink, _log, dir) = fake_city_sink(false);
    sink.assume_schema_checked();
    let err = sink
        .write(&[city_row(0, "a", 9_999_999_900, 1), city_row(0, "b", 100, 1)])
        .unwrap_err();
    let SinkError::Fatal(message) = err else {
        panic!("{err:?}")
    };
    assert!(
        message.contains("Code: 69")
            && message.contains("the table is at fault")
            && message.contains("order_metrics_by_city")
            && message.contains("gmv_total Decimal(9, 2)")
            && message.contains("create_ck_grouped_tables.sql"),
        "{message}"
    );
    assert!(!dir.path().join("dead.log").exists());
}
