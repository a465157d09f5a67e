//! The ClickHouse sink on both engines it must work with: ClickHouse 18.16
//! (Debian's package, the local stack, over HTTP) and current ClickHouse
//! (the 26.9 engine of PyPI's `chdb-core`, in-process). No current server
//! can be installed on these machines, but its engine can.
//!
//! Each test runs the same scenario on both engines through the very same
//! `ClickHouseSink`: only the transport differs (`tests/chdb/exec.py`
//! executes, on chdb, exactly the requests the sink would send over HTTP:
//! the probe, the DDL, the INSERT statements with their bodies, settings
//! and tokens, the schema and read queries). The expected results are
//! computed here, in Rust, with the upsert rule every sink implements, and
//! both engines must give them.
//!
//! The chdb venv comes from `scripts/chdb_env.sh` (created once, ~40 s and
//! ~900 MB, then reused). If it cannot be created the tests fail and say
//! why: they never skip. The 18.16 server is the local stack's
//! (`scripts/stack.sh up`; `STREAMFORGE_TEST_CLICKHOUSE_URL` to use another).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use streamforge::dedup::{fingerprint, Fp};
use streamforge::setting::Dur;
use streamforge::sink::clickhouse::{
    ClickHouseSettings, ClickHouseSink, ErrorKind, Failure, Request, Response, Transport,
    MAX_DATETIME, MAX_GMV_CENTS,
};
use streamforge::sink::{upsert, Sink, SinkError};
use streamforge::window::WindowRow;

const DATABASE: &str = "streamforge_compat";
const T0: i64 = 1_704_067_200; // 2024-01-01T00:00:00Z

/// The tests take turns: 18.16 fails a query on system.columns when another
/// table of the database is dropped meanwhile, and one chdb engine at a
/// time is enough for 2 cores.
static SERIAL: Mutex<()> = Mutex::new(());

#[path = "common/endpoints.rs"]
mod endpoints;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The venv's python, made by scripts/chdb_env.sh once per test run.
fn chdb_python() -> &'static Path {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let made = PYTHON.get_or_init(|| {
        let out = Command::new(repo().join("scripts/chdb_env.sh"))
            .output()
            .map_err(|e| format!("cannot run scripts/chdb_env.sh: {e}"))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            return Err(format!(
                "scripts/chdb_env.sh could not make the chdb venv (exit {}):\n{stderr}",
                out.status
            ));
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let path = PathBuf::from(stdout.lines().last().unwrap_or("").trim());
        if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "scripts/chdb_env.sh printed no python path:\n{stdout}{stderr}"
            ))
        }
    });
    match made {
        Ok(path) => path,
        Err(why) => panic!(
            "the current-ClickHouse half of the compatibility test cannot run: {why}\n\
             It needs Python 3 with venv and PyPI (or a mirror in PIP_INDEX_URL)"
        ),
    }
}

/// One chdb engine: `tests/chdb/exec.py` on a data directory of its own.
struct Chdb {
    io: Mutex<(ChildStdin, BufReader<ChildStdout>)>,
    child: Mutex<Child>,
    version: String,
    _dir: tempfile::TempDir,
}

impl Chdb {
    fn start() -> Arc<Chdb> {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(chdb_python())
            .arg(repo().join("tests/chdb/exec.py"))
            .arg(dir.path().join("data"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting tests/chdb/exec.py");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        stdout.read_line(&mut first).unwrap();
        let ready: serde_json::Value = serde_json::from_str(&first)
            .unwrap_or_else(|e| panic!("tests/chdb/exec.py did not start ({e}): `{first}`"));
        Arc::new(Chdb {
            version: ready["version"].as_str().unwrap_or("").to_string(),
            io: Mutex::new((stdin, stdout)),
            child: Mutex::new(child),
            _dir: dir,
        })
    }
}

impl Drop for Chdb {
    fn drop(&mut self) {
        let mut child = self.child.lock().unwrap();
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// The sink's transport on chdb: the request's text and settings, as
/// ClickHouse's HTTP handler would take them from the URL and the body.
/// chdb has no HTTP status, so an error is answered as 500, the status
/// 18.16 gives; the sink classifies by the error code first anyway.
struct ChdbTransport(Arc<Chdb>);

impl Transport for ChdbTransport {
    fn send(&self, request: &Request) -> Result<Response, Failure> {
        let line = serde_json::json!({
            "sql": request.full_text(),
            "settings": request.settings.iter().map(|(k, v)| [k.to_string(), v.clone()]).collect::<Vec<_>>(),
        });
        let mut io = self.0.io.lock().unwrap();
        let (stdin, stdout) = &mut *io;
        let sent = writeln!(stdin, "{line}").and_then(|()| stdin.flush());
        let mut answer = String::new();
        let read = sent.and_then(|()| stdout.read_line(&mut answer));
        if read.is_err() || answer.is_empty() {
            return Err(Failure {
                kind: ErrorKind::Unreachable,
                code: None,
                detail: format!("the chdb process is gone ({read:?})"),
            });
        }
        let answer: serde_json::Value = serde_json::from_str(&answer).expect("a JSON answer");
        Ok(match answer["ok"].as_bool() {
            Some(true) => Response {
                status: 200,
                body: answer["out"].as_str().unwrap_or("").to_string(),
                ..Response::default()
            },
            _ => Response {
                status: 500,
                body: answer["error"].as_str().unwrap_or("").to_string(),
                ..Response::default()
            },
        })
    }

    fn describe(&self) -> String {
        format!("chdb {}", self.0.version)
    }
}

/// Where a scenario runs.
#[derive(Clone)]
enum Engine {
    /// ClickHouse 18.16 over HTTP.
    Old,
    /// Current ClickHouse in-process.
    Current(Arc<Chdb>),
}

impl Engine {
    fn both() -> Vec<Engine> {
        vec![Engine::Old, Engine::Current(Chdb::start())]
    }

    fn name(&self) -> &'static str {
        match self {
            Engine::Old => "ClickHouse 18.16 (HTTP)",
            Engine::Current(_) => "ClickHouse 26.9 (chdb)",
        }
    }

    fn sink(&self, settings: &ClickHouseSettings) -> ClickHouseSink {
        match self {
            Engine::Old => ClickHouseSink::connect(settings).unwrap(),
            Engine::Current(chdb) => {
                ClickHouseSink::with_transport(settings, Box::new(ChdbTransport(chdb.clone())))
                    .unwrap()
            }
        }
    }
}

/// A table of its own on one engine, dropped at the end (pass or fail),
/// with a dead-letter file of its own.
struct Table {
    engine: Engine,
    settings: ClickHouseSettings,
    _dir: tempfile::TempDir,
}

impl Table {
    fn new(engine: &Engine, tag: &str) -> Table {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = tempfile::tempdir().unwrap();
        let settings = ClickHouseSettings {
            url: endpoints::test_stack().clickhouse_url.clone(),
            database: DATABASE.into(),
            table: format!(
                "compat_{}_{}_{tag}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ),
            timeout: Dur(Duration::from_secs(20)),
            dead_letter_log: dir.path().join("dead_letters.log"),
            ..ClickHouseSettings::default()
        };
        let table = Table {
            engine: engine.clone(),
            settings,
            _dir: dir,
        };
        if let Err(e) = table
            .sink()
            .query_text(&format!("CREATE DATABASE IF NOT EXISTS {DATABASE}"))
        {
            panic!(
                "{} does not answer ({e}). Start the local stack with `scripts/stack.sh up`",
                engine.name()
            );
        }
        table
    }

    fn sink(&self) -> ClickHouseSink {
        self.engine.sink(&self.settings)
    }

    fn qualified(&self) -> String {
        format!("{}.{}", self.settings.database, self.settings.table)
    }

    fn dead_letters(&self) -> Vec<serde_json::Value> {
        match std::fs::read_to_string(&self.settings.dead_letter_log) {
            Ok(text) => text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        if let Err(e) = self.sink().drop_table() {
            eprintln!("could not drop {}: {e}", self.qualified());
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
        updated_at: T0 + 600 + version as i64,
        group: None,
    }
}

/// What the sink must read back after `writes`: per window, the highest
/// version (the later one among equals), sorted by window start.
fn model(writes: &[&[WindowRow]]) -> Vec<WindowRow> {
    let mut table = BTreeMap::new();
    for batch in writes {
        for r in *batch {
            upsert(&mut table, r.clone());
        }
    }
    table.into_values().collect()
}

/// Runs `scenario` on both engines and checks each gives `expected`.
fn on_both<T: PartialEq + std::fmt::Debug>(
    tag: &str,
    expected: &T,
    scenario: impl Fn(&Table) -> T,
) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for engine in Engine::both() {
        let table = Table::new(&engine, tag);
        let got = scenario(&table);
        assert_eq!(&got, expected, "on {}", engine.name());
    }
}

#[test]
fn the_spec_table_holds_the_same_rows_on_both_engines() {
    let first = [
        // The first DateTime second, and the smallest amount.
        row(0, 1, 1, 7),
        // The last: the window ends, and the row was updated, at u32::MAX.
        WindowRow {
            updated_at: MAX_DATETIME,
            ..row(MAX_DATETIME - 60, 1, 3, 999_999_999_999_999_999)
        },
        // Beyond Decimal(18, 2): two maximal amounts in one window.
        row(T0, 1, 2, 1_200_000_000_000_000_000),
        // The most Decimal(38, 2) holds, and the largest counts.
        row(T0 + 30, 5, u64::MAX, MAX_GMV_CENTS),
        row(T0 + 60, 2, 4, 1230),
    ];
    let second = [
        row(T0, 2, 3, 1_200_000_000_000_000_500), // higher: replaces
        row(T0 + 60, 2, 4, 1230),                 // equal: a resend
        row(T0 + 60, 1, 9, 9),                    // lower: ignored
        row(T0 + 30, 4, 1, 1),                    // lower: ignored
    ];
    // Mixed versions of one window within one batch.
    let third = [row(T0 + 90, 3, 7, 777), row(T0 + 90, 2, 6, 666)];
    let expected = model(&[&first, &second, &third]);
    let max = expected.iter().map(|r| r.version).max().unwrap();
    on_both("roundtrip", &(expected.clone(), 0, max), |t| {
        let mut sink = t.sink();
        sink.prepare().unwrap();
        let empty = sink.max_version(u64::MAX).unwrap();
        for batch in [&first[..], &second, &third] {
            sink.write(batch).unwrap();
        }
        // What `streamforge results --sink clickhouse` prints, and the
        // version a fresh state directory continues above.
        let rows = t.sink().read_final().unwrap();
        assert!(t.dead_letters().is_empty());
        (rows, empty, t.sink().max_version(u64::MAX).unwrap())
    });
}

#[test]
fn refused_rows_go_to_the_dead_letters_once_on_both_engines() {
    let good: Vec<WindowRow> = (0..6)
        .map(|i| row(T0 + 30 * i, 1, 1, 100 + i as u128))
        .collect();
    // Kept back by the sink: a window before 1970 (18.16 would store it
    // wrapped, current releases clamped), and a sum beyond Decimal(38, 2).
    let before_1970 = row(-30, 1, 2, 300);
    let too_big = row(T0 + 600, 1, 2, MAX_GMV_CENTS + 1);
    // Refused by the server itself when the sink's check is off: the same
    // sum, which both engines refuse with code 69.
    let refused_there = row(T0 + 630, 1, 2, 10u128.pow(38));
    let mut batch = good.clone();
    batch.insert(2, before_1970.clone());
    batch.insert(5, too_big.clone());
    let mut unchecked = good.clone();
    unchecked.insert(3, refused_there.clone());

    let keys = |letters: &[serde_json::Value]| -> Vec<(i64, u64)> {
        letters
            .iter()
            .map(|l| {
                (
                    l["window_start"].as_i64().unwrap(),
                    l["version"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let expected = (good.clone(), vec![(-30, 1), (T0 + 600, 1), (T0 + 630, 1)]);
    on_both("dead", &expected, |t| {
        let mut sink = t.sink();
        sink.write(&batch).unwrap();
        let mut raw = t.sink();
        raw.send_rows_unchecked();
        raw.write(&unchecked).unwrap();
        let letters = t.dead_letters();
        assert!(
            letters[0]["error"].as_str().unwrap().contains("DateTime"),
            "{letters:?}"
        );
        assert!(
            letters[1]["error"]
                .as_str()
                .unwrap()
                .contains("Decimal(38, 2)"),
            "{letters:?}"
        );
        let server = letters[2]["error"].as_str().unwrap();
        assert!(
            server.contains("Code: 69"),
            "ClickHouse's own words: {server}"
        );
        // Recovery resends both batches, from new sinks: nothing doubles.
        t.sink().write(&batch).unwrap();
        let mut raw = t.sink();
        raw.send_rows_unchecked();
        raw.write(&unchecked).unwrap();
        assert_eq!(t.dead_letters(), letters);
        (t.sink().read_final().unwrap(), keys(&letters))
    });
}

#[test]
fn an_old_decimal_table_is_refused_and_the_printed_statement_migrates_it_on_both_engines() {
    let before = [
        row(T0, 1, 1, 100),
        row(T0, 2, 2, 200),
        row(T0 + 30, 1, 5, 999_999_999_999_999_999),
    ];
    let after = [row(T0, 3, 2, 1_200_000_000_000_000_000)];
    let expected = (model(&[&before]), model(&[&before, &after]));
    on_both("migrate", &expected, |t| {
        let sink = t.sink();
        let old = ClickHouseSink::ddl(&t.settings).replace("Decimal(38, 2)", "Decimal(18, 2)");
        sink.query_text(&old).unwrap();
        let mut writer = t.sink();
        writer.assume_schema_checked();
        for r in &before {
            writer.write(std::slice::from_ref(r)).unwrap();
        }
        let statement = format!(
            "ALTER TABLE {} MODIFY COLUMN gmv_total Decimal(38, 2)",
            t.qualified()
        );
        match t.sink().ensure_schema() {
            Err(SinkError::Fatal(m)) => assert!(m.contains(&statement), "{m}"),
            other => panic!("the old table was not refused: {other:?}"),
        }
        sink.query_text(&statement).unwrap();
        let mut sink = t.sink();
        sink.prepare().unwrap();
        let migrated = sink.read_final().unwrap();
        sink.write(&after).unwrap();
        (migrated, sink.read_final().unwrap())
    });
}

#[test]
fn inserts_mean_the_same_on_both_engines() {
    let first = [row(T0, 1, 1, 100), row(T0 + 30, 1, 1, 100)];
    let newer = [row(T0, 2, 2, 250), row(T0 + 30, 2, 2, 250)];
    let expected = model(&[&first, &newer]);
    on_both("settings", &expected, |t| {
        let mut sink = t.sink();
        sink.prepare().unwrap();
        let profile = sink.server_profile().unwrap().clone();
        let current = matches!(t.engine, Engine::Current(_));
        // The probe knows which engine it met, and what it can do.
        assert_eq!(profile.version.starts_with("26."), current, "{profile:?}");
        assert_eq!(
            profile.dedup_tokens() && profile.dedup_window,
            current,
            "{profile:?}"
        );
        // Every pin is sent where the engine knows it, under the name the
        // engine knows (an INSERT in-process is never asynchronous, so this
        // is how the async pins are checked against 26.9).
        let pins = profile.insert_settings(|| "token".into());
        let has = |name: &str, value: &str| pins.contains(&(name, value.to_string()));
        for (name, value) in [("async_insert", "0"), ("wait_for_async_insert", "1")] {
            assert_eq!(has(name, value), current, "{name} in {pins:?}");
        }
        for (name, value) in [
            ("input_format_skip_unknown_fields", "0"),
            ("insert_deduplicate", "1"),
        ] {
            assert!(has(name, value), "{name} in {pins:?}");
        }

        // An unknown field is an error on both (current releases would skip
        // it without the pinned input_format_skip_unknown_fields=0).
        let unknown = r#"{"window_start":60,"window_end":120,"order_cnt":1,"gmv_total":1.00,"user_cnt":1,"version":1,"updated_at":0,"zzz":1}"#;
        let err = sink
            .insert_body("probing", format!("{unknown}\n"))
            .unwrap_err();
        assert_eq!((err.kind, err.code), (ErrorKind::Data, Some(117)), "{err}");
        // A quoted decimal: refused by 18.16, read by current releases. The
        // sink never quotes one (encode.rs); this documents the difference.
        let quoted = unknown
            .replace(",\"zzz\":1", "")
            .replace("1.00", "\"1.00\"");
        let got = sink.insert_body("probing", format!("{quoted}\n"));
        assert_eq!(got.is_ok(), current, "{got:?}");
        t.sink()
            .query_text(&format!("TRUNCATE TABLE {}", t.qualified()))
            .unwrap();
        // Rows are counted raw (without FINAL) below: no merge may fold them
        // meanwhile.
        t.sink()
            .query_text(&format!("SYSTEM STOP MERGES {}", t.qualified()))
            .unwrap();

        // The same batch twice: on servers with tokens, the second INSERT
        // is dropped by the server; on 18.16 the versions absorb it.
        sink.write(&first).unwrap();
        sink.write(&first).unwrap();
        let count = |t: &Table| {
            let sql = format!("SELECT count() FROM {} FORMAT TabSeparated", t.qualified());
            t.sink()
                .query_text(&sql)
                .unwrap()
                .trim()
                .parse::<usize>()
                .unwrap()
        };
        assert_eq!(count(t), if current { 2 } else { 4 });
        // New rows are never taken for old ones: their body differs.
        sink.write(&newer).unwrap();
        assert_eq!(count(t), if current { 4 } else { 6 });
        t.sink().read_final().unwrap()
    });
}

#[test]
fn a_batch_over_the_partition_limit_is_stored_whole_on_both_engines() {
    // 150 days: more partitions than current releases take in one INSERT
    // (max_partitions_per_insert_block = 100); the sink splits the batch.
    let rows: Vec<WindowRow> = (0..150)
        .map(|d| row(T0 + 86_400 * d, 1, 1, d as u128))
        .collect();
    on_both("partitions", &rows, |t| {
        let mut sink = t.sink();
        sink.write(&rows).unwrap();
        assert!(t.dead_letters().is_empty());
        sink.read_final().unwrap()
    });
}

#[test]
fn the_dedup_window_statement_works_where_the_setting_exists() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let chdb = Engine::Current(Chdb::start());
    let t = Table::new(&chdb, "window");
    let sink = t.sink();
    sink.query_text(&ClickHouseSink::ddl(&t.settings)).unwrap();
    let shipped = std::fs::read_to_string(repo().join("sql/dedup_window.sql")).unwrap();
    let statement = shipped
        .lines()
        .find(|l| l.starts_with("ALTER TABLE"))
        .expect("an ALTER TABLE in sql/dedup_window.sql")
        .trim_end_matches(';')
        .replace("streamforge.order_metrics", &t.qualified());
    sink.query_text(&statement).unwrap();
    let engine_full = sink
        .query_text(&format!(
            "SELECT engine_full FROM system.tables WHERE database = '{DATABASE}' AND name = '{}' FORMAT TabSeparated",
            t.settings.table
        ))
        .unwrap();
    assert!(
        engine_full.contains("non_replicated_deduplication_window = 1000"),
        "{engine_full}"
    );
}

/// A partial row of `r`'s counts whose users are `users`: fingerprints
/// under one seed (the group's), one extreme fingerprint for `0`.
fn with_users(mut r: WindowRow, users: &[u32]) -> WindowRow {
    let mut fps: Vec<Fp> = users
        .iter()
        .map(|n| match n {
            0 => Fp {
                hi: u64::MAX,
                lo: u32::MAX,
            },
            n => fingerprint(16, &format!("u{n}")),
        })
        .collect();
    fps.sort_unstable();
    fps.dedup();
    r.user_cnt = fps.len() as u64;
    r.users = Some(fps.into());
    r
}

/// Group mode (issue 16): two partitions' partial rows, written by two
/// sinks in any order, a zombie's stale lower version after a newer one
/// included, users shared by the partitions (a topic not keyed by user).
/// The combined read (what `streamforge results` prints in group mode)
/// holds, per window, the sums of each partition's newest row and the size
/// of the union of their user sets, and the `<table>_combined` view the
/// same, on both engines.
#[test]
fn partial_rows_combine_the_same_on_both_engines() {
    let p0_first = [
        with_users(row(T0, 10, 3, 300), &[1, 2, 3]),
        with_users(row(T0 + 30, 10, 1, 100), &[1]),
    ];
    let p0_newer = [with_users(row(T0, 20, 4, 450), &[1, 2, 3, 4, 0])];
    let p0_stale = [with_users(row(T0, 15, 9, 999), &[5, 6, 7, 8, 9])];
    let p1 = [
        with_users(row(T0, 7, 2, 25), &[2, 4, 10]),
        with_users(row(T0 + 60, 7, 5, 5), &[]),
    ];
    let mut combined: BTreeMap<i64, (WindowRow, BTreeSet<Fp>)> = BTreeMap::new();
    for r in [model(&[&p0_first, &p0_newer, &p0_stale]), model(&[&p1])]
        .iter()
        .flatten()
    {
        let (c, users) = combined.entry(r.window_start).or_insert_with(|| {
            (
                WindowRow {
                    order_cnt: 0,
                    gmv_cents: 0,
                    version: 0,
                    updated_at: 0,
                    users: None,
                    ..r.clone()
                },
                BTreeSet::new(),
            )
        });
        c.order_cnt += r.order_cnt;
        c.gmv_cents += r.gmv_cents;
        c.version = c.version.max(r.version);
        c.updated_at = c.updated_at.max(r.updated_at);
        users.extend(r.users.as_deref().unwrap().iter().copied());
        c.user_cnt = users.len() as u64;
    }
    let expected: Vec<WindowRow> = combined.into_values().map(|(r, _)| r).collect();
    let users: u64 = expected.iter().map(|r| r.user_cnt).sum();
    assert_eq!(
        expected.iter().map(|r| r.user_cnt).collect::<Vec<_>>(),
        [6, 1, 0],
        "the union, not the sum (8 in the first window)"
    );
    on_both("partial", &(expected.clone(), users), |t| {
        let mut reader = t.sink();
        reader.set_group_mode(None);
        let mut writers = [t.sink(), t.sink()];
        for (p, w) in writers.iter_mut().enumerate() {
            w.set_group_mode(Some(p as u32));
            w.prepare().unwrap();
        }
        writers[0].write(&p0_first).unwrap();
        writers[1].write(&p1).unwrap();
        writers[0].write(&p0_newer).unwrap();
        writers[0].write(&p0_stale).unwrap();
        let rows = reader.read_final().unwrap();
        let view = reader
            .query_text(&format!(
                "SELECT sum(user_cnt) FROM {}_combined FORMAT TabSeparated",
                t.qualified()
            ))
            .unwrap();
        reader.drop_table().unwrap();
        (rows, view.trim().parse::<u64>().unwrap())
    });
}

/// A partial table of the layout before user sets (sql of the previous
/// release), or one with the columns but the old summing view, is refused
/// at start with what to drop, on both engines.
#[test]
fn a_partial_table_of_the_summing_layout_is_refused_on_both_engines() {
    on_both("old_partial", &(true, true), |t| {
        let q = t.qualified();
        let old = format!(
            "CREATE TABLE {q}_partial (window_start DateTime, window_end DateTime, partition UInt32, \
             order_cnt UInt64, gmv_total Decimal(38, 2), user_cnt UInt64, version UInt64, \
             updated_at DateTime) ENGINE = ReplacingMergeTree(version) \
             PARTITION BY toYYYYMMDD(window_start) ORDER BY (window_start, partition)"
        );
        let mut sink = t.sink();
        sink.set_group_mode(Some(0));
        sink.query_text(&old).unwrap();
        let refused = |sink: &mut ClickHouseSink| {
            let e = sink.prepare().unwrap_err().to_string();
            e.contains("DROP TABLE") && e.contains("partition-*")
        };
        let old_table = refused(&mut sink);
        sink.query_text(&format!(
            "ALTER TABLE {q}_partial ADD COLUMN users_hi Array(UInt64), ADD COLUMN users_lo Array(UInt32)"
        ))
        .unwrap();
        sink.query_text(&format!(
            "CREATE VIEW {q}_combined AS SELECT window_start, sum(user_cnt) AS user_cnt \
             FROM {q}_partial FINAL GROUP BY window_start"
        ))
        .unwrap();
        let old_view = refused(&mut sink);
        sink.drop_table().unwrap();
        (old_table, old_view)
    });
}

/// The grouped tables on both engines: the DDL the sink creates for a
/// grouping (sql/create_ck_grouped_tables.sql) passes its schema check,
/// inserts with higher, equal and lower versions, retractions and any text
/// in the dimension columns (quotes, tab, newline, NUL, non-ASCII, empty)
/// read back exactly through the `FINAL` read `results --group-by` uses,
/// the version floor of a fresh state counts the grouped table, and a
/// grouped row the server refuses is a dead letter, once, with its values.
#[test]
fn grouped_tables_hold_the_same_rows_and_refusals_on_both_engines() {
    use streamforge::dims::{Dimension, GroupKey};
    use streamforge::sink::upsert_keyed;
    let dims = vec![Dimension::City, Dimension::Category];
    let g = |start: i64, version: u64, city: &str, order_cnt: u64, gmv: u128| WindowRow {
        group: Some(GroupKey {
            dims: dims.clone(),
            values: vec![city.to_string(), "books".to_string()],
        }),
        ..row(start, version, order_cnt, gmv)
    };
    let odd = "Xi'an \"东\"\t\\n\n\0 end";
    let first = [
        g(T0, 1, "Paris", 2, 100),
        g(T0, 1, odd, 3, 1_200_000_000_000_000_000),
        g(T0 + 30, 5, "Paris", u64::MAX, MAX_GMV_CENTS),
        g(T0, 1, "", 1, 1),
    ];
    let second = [
        g(T0, 2, "Paris", 9, 900),    // higher: replaces
        g(T0 + 30, 4, "Paris", 1, 1), // lower: ignored
        g(T0, 1, "", 1, 1),           // equal: a resend
        g(T0, 2, odd, 0, 0),          // a retraction
    ];
    let refused = g(T0 + 60, 1, "Lyon", 2, 10u128.pow(38));
    let beside = g(T0 + 90, 1, "Metz", 1, 1);
    let mut model = BTreeMap::new();
    for r in first.iter().chain(&second).chain([&beside]) {
        upsert_keyed(&mut model, r.clone());
    }
    let want_rows: Vec<WindowRow> = model.into_values().collect();
    let want_max = want_rows.iter().map(|r| r.version).max().unwrap();
    let expected = (want_rows, want_max, vec![(T0 + 60, "Lyon".to_string())]);
    on_both("grouped", &expected, |t| {
        let sink = || {
            let mut sink = t.sink();
            sink.set_groupings(vec![dims.clone()]);
            sink
        };
        let mut writer = sink();
        writer.prepare().unwrap();
        // The totals' table holds a lower version than the grouped one.
        writer.write(&[row(T0, 1, 1, 1)]).unwrap();
        writer.write(&first).unwrap();
        writer.write(&second).unwrap();
        let mut raw = sink();
        raw.send_rows_unchecked();
        raw.write(&[refused.clone(), beside.clone()]).unwrap();
        // Recovery resends it: no new line, no halt.
        raw.write(&[refused.clone(), beside.clone()]).unwrap();
        let letters = t.dead_letters();
        assert!(
            letters
                .iter()
                .all(|l| l["error"].as_str().unwrap().contains("Code: 69")
                    && l["table"].as_str().unwrap().ends_with("_by_city_category")
                    && l["category"] == "books"),
            "{letters:?}"
        );
        let dead: Vec<(i64, String)> = letters
            .iter()
            .map(|l| {
                (
                    l["window_start"].as_i64().unwrap(),
                    l["city"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let mut reader = sink();
        let rows = reader.read_grouped().unwrap();
        let max = reader.max_version(u64::MAX).unwrap();
        reader.drop_table().unwrap();
        (rows, max, dead)
    });
}
