//! `tests/cases/poison-rows` (issue 12) through Kafka into ClickHouse:
//! valid events whose windows the earlier table could not hold never stop
//! the job, and a restart changes nothing.
//!
//! Before the fix the job exited 1 ("the sink rejected a write for good")
//! on the first of them, and every restart exited 1 again. Now the 2024
//! windows, beyond `Decimal(18, 2)`, are stored exactly; the two events of
//! the first 30 s after the epoch are either anomalies decided at parse time
//! or, if the engine lets them through, their window starting at -30 s goes
//! to the dead-letter file (the table cannot hold a time before 1970) and
//! the window starting at 0 is stored. Either way nothing is lost or
//! counted twice, and a second run on the same state directory changes
//! neither the table, nor the anomaly log, nor the dead letters.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::stack::*;
use common::*;

fn case_dir() -> PathBuf {
    repo().join("tests/cases/poison-rows")
}

struct Poison {
    tmp: tempfile::TempDir,
    topic: String,
    table: String,
    /// `--set` settings of every command (the groupings).
    sets: Vec<String>,
}

impl Poison {
    fn new() -> Poison {
        Poison::with_input(&case_dir().join("p0.jsonl"), &[])
    }

    /// A case reading `input`, every command given `--set S` for each of `sets`.
    fn with_input(input: &Path, sets: &[&str]) -> Poison {
        require_stack();
        let topic = unique("sf_poison");
        stack(&["topic", &topic, "1"]);
        let case = Poison {
            tmp: tempfile::tempdir().unwrap(),
            table: unique("poison"),
            topic,
            sets: sets.iter().map(|s| s.to_string()).collect(),
        };
        produce_files_to(&case.topic, &[input.to_path_buf()], false);
        case
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = streamforge(args);
        test_stack().point(&mut cmd);
        cmd.env("KAFKA_TOPIC", &self.topic)
            .env("KAFKA_GROUP_ID", format!("{}-group", self.topic))
            .env("CLICKHOUSE_DATABASE", "streamforge_test")
            .env("CLICKHOUSE_TABLE", &self.table)
            .env("CLICKHOUSE_DEAD_LETTER_LOG", self.dead_letters());
        for set in &self.sets {
            cmd.args(["--set", set]);
        }
        cmd
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    fn dead_letters(&self) -> PathBuf {
        self.path("dead_letters.log")
    }

    /// The bounded job; panics with its log unless it exits 0.
    fn run(&self) -> String {
        let out = self
            .cmd(&[
                "run",
                "--source",
                "kafka",
                "--sink",
                "clickhouse",
                "--state-dir",
                self.path("state").to_str().unwrap(),
                "--anomaly-log",
                self.path("anomalies.log").to_str().unwrap(),
                "--bounded",
                "--set",
                "sink.retry_max=1s",
            ])
            .output()
            .unwrap();
        ok(&out)
    }

    fn results(&self) -> Vec<String> {
        self.results_of(&["results", "--sink", "clickhouse"])
    }

    fn results_of(&self, args: &[&str]) -> Vec<String> {
        let out = self.cmd(args).output().unwrap();
        ok(&out);
        results_lines(&out)
    }
}

impl Drop for Poison {
    fn drop(&mut self) {
        use streamforge::dims::Dimension::{Category, City};
        use streamforge::sink::clickhouse::{ClickHouseSettings, ClickHouseSink};
        let settings = ClickHouseSettings {
            url: test_stack().clickhouse_url.clone(),
            database: "streamforge_test".into(),
            table: self.table.clone(),
            ..ClickHouseSettings::default()
        };
        let dropped = ClickHouseSink::connect(&settings).and_then(|mut sink| {
            sink.set_groupings(vec![vec![City], vec![Category], vec![City, Category]]);
            sink.drop_table()
        });
        if let Err(e) = dropped {
            eprintln!("could not drop streamforge_test.{}: {e}", self.table);
        }
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn line(start: i64, orders: u64, gmv: &str, users: u64) -> String {
    format!(
        "{{\"window_start\": {start}, \"window_end\": {}, \"order_cnt\": {orders}, \"gmv_total\": \"{gmv}\", \"user_cnt\": {users}}}",
        start + 60
    )
}

#[test]
fn valid_events_beyond_the_old_table_never_stop_the_job_and_a_restart_changes_nothing() {
    let case = Poison::new();
    case.run();
    let results = case.results();

    // The 2024 windows, as given with the case.
    let expected_2024 = [
        line(1_704_067_170, 2, "12000000000000000.00", 2), // 2023-12-31T23:59:30Z
        line(1_704_067_200, 2, "12000000000000000.00", 2), // 2024-01-01T00:00:00Z
        line(1_704_067_470, 1, "5.00", 1),                 // 00:04:30
        line(1_704_067_500, 1, "5.00", 1),                 // 00:05:00
    ];
    let (of_2024, of_1970): (Vec<String>, Vec<String>) = results
        .iter()
        .cloned()
        .partition(|l| window_start_of(l) >= 1_704_000_000);
    assert_eq!(of_2024, expected_2024, "all results: {results:#?}");

    // The 1970 events: anomalies, or in the window starting at 0 with
    // their earlier window (starting at -30 s) in the dead letters.
    let anomalies = read(&case.path("anomalies.log"));
    let dead = read(&case.dead_letters());
    let dead_keys: Vec<(i64, u64)> = dead
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["window_start"].as_i64().unwrap(),
                v["order_cnt"].as_u64().unwrap(),
            )
        })
        .collect();
    eprintln!("1970 windows stored: {of_1970:?}; dead letters: {dead_keys:?}");
    if of_1970.is_empty() {
        for id in ["bh15-v1", "bh15-v2"] {
            assert!(
                anomalies.contains(id),
                "{id} is neither counted nor an anomaly:\n{anomalies}"
            );
        }
        assert!(dead.is_empty(), "{dead}");
    } else {
        assert_eq!(
            of_1970,
            [line(0, 2, "3.00", 2)],
            "all results: {results:#?}"
        );
        assert_eq!(dead_keys, [(-30, 2)], "{dead}");
        assert!(
            dead.contains("outside what a ClickHouse DateTime holds"),
            "{dead}"
        );
    }

    // A restart on the same state directory changes nothing anywhere.
    case.run();
    assert_eq!(case.results(), results);
    assert_eq!(read(&case.path("anomalies.log")), anomalies);
    assert_eq!(read(&case.dead_letters()), dead);
}

/// The poison-rows case with dimensions (cities with quotes, tabs and
/// non-ASCII text, a missing category), grouped by city and by (city,
/// category): every grouped row is stored as an independent recomputation
/// from the accepted events gives it, or (if the engine lets the 1970
/// events through) is in the dead letters, once, with its values, when its
/// window starts before 1970; the job exits 0, and a restart changes
/// nothing. Before grouped rows were checked, 18.16 stored a -30 s window's
/// grouped rows wrapped to 2106.
#[test]
fn grouped_rows_the_tables_cannot_hold_go_to_the_dead_letters_and_the_job_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("p0.jsonl");
    let cities = ["Paris", "Xi'an \"东\"\tcity", ""];
    let lines: Vec<String> = read(&case_dir().join("p0.jsonl"))
        .lines()
        .enumerate()
        .map(|(i, l)| {
            let city = serde_json::json!(cities[i % cities.len()]);
            let category = if i % 2 == 0 {
                ", \"category\": \"books\""
            } else {
                ""
            };
            format!(
                "{}, \"city\": {city}{category}}}",
                l.trim_end().trim_end_matches('}')
            )
        })
        .collect();
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let case = Poison::with_input(&input, &["dimensions.groupings=[[city], [city, category]]"]);
    case.run();

    // What the engine accepted: every event not in the anomaly log.
    let anomalies = read(&case.path("anomalies.log"));
    let accepted: Vec<&str> = lines
        .iter()
        .map(String::as_str)
        .filter(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            !anomalies.contains(v["event_id"].as_str().unwrap())
        })
        .collect();
    let dead = read(&case.dead_letters());
    let dead_lines: Vec<serde_json::Value> = dead
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut grouped_results = Vec::new();
    for (dims, suffix) in [
        (&["city"][..], "_by_city"),
        (&["city", "category"], "_by_city_category"),
    ] {
        let want = grouped_lines(accepted.iter().copied(), dims, 1000);
        let (want_stored, want_dead): (Vec<String>, Vec<String>) =
            want.into_iter().partition(|l| window_start_of(l) >= 0);
        let got = case.results_of(&[
            "results",
            "--sink",
            "clickhouse",
            "--group-by",
            &dims.join(","),
        ]);
        assert_eq!(got, want_stored, "{dims:?}");
        // The dead letters of this grouping's table, as result lines.
        let got_dead: Vec<String> = dead_lines
            .iter()
            .filter(|v| v["table"].as_str().unwrap().ends_with(suffix))
            .map(|v| {
                let fields: String = dims
                    .iter()
                    .map(|d| format!(", {}: {}", serde_json::json!(d), v[*d]))
                    .collect();
                format!(
                    "{{\"window_start\": {}, \"window_end\": {}{fields}, \"order_cnt\": {}, \"gmv_total\": {}, \"user_cnt\": {}}}",
                    v["window_start"], v["window_end"], v["order_cnt"], v["gmv_total"], v["user_cnt"]
                )
            })
            .collect();
        let mut sorted = got_dead.clone();
        sorted.sort();
        assert_eq!(sorted, want_dead, "{dims:?}: {dead}");
        assert!(
            dead_lines
                .iter()
                .filter(|v| v["table"].as_str().unwrap().ends_with(suffix))
                .all(|v| v["error"]
                    .as_str()
                    .unwrap()
                    .contains("outside what a ClickHouse DateTime holds")),
            "{dead}"
        );
        grouped_results.push(got);
    }
    eprintln!(
        "accepted {} of {} events; dead letters:\n{dead}",
        accepted.len(),
        lines.len()
    );

    // A restart on the same state directory changes nothing anywhere.
    let results = case.results();
    case.run();
    assert_eq!(case.results(), results);
    for (i, dims) in ["city", "city,category"].iter().enumerate() {
        let got = case.results_of(&["results", "--sink", "clickhouse", "--group-by", dims]);
        assert_eq!(got, grouped_results[i]);
    }
    assert_eq!(read(&case.path("anomalies.log")), anomalies);
    assert_eq!(read(&case.dead_letters()), dead);
}

/// A grouped row ClickHouse 18.16 itself refuses (a sum of 10^36, one more
/// than `Decimal(38, 2)` holds, sent with the sink's own check off) is
/// found by halving, written to the dead-letter file once with its values,
/// and the batch is acknowledged: the other rows are stored, and a resend
/// (recovery) neither halts nor adds a line. Before, the refusal was fatal:
/// the job stopped, and every restart stopped again on the same batch.
#[test]
fn a_grouped_row_the_server_refuses_is_a_dead_letter_not_a_halt() {
    use streamforge::dims::{Dimension, GroupKey};
    use streamforge::sink::clickhouse::{ClickHouseSettings, ClickHouseSink};
    use streamforge::sink::{upsert_keyed, Sink};
    use streamforge::window::WindowRow;
    require_stack();
    let tmp = tempfile::tempdir().unwrap();
    let settings = ClickHouseSettings {
        url: test_stack().clickhouse_url.clone(),
        database: "streamforge_test".into(),
        table: unique("poison_grouped"),
        dead_letter_log: tmp.path().join("dead.log"),
        ..ClickHouseSettings::default()
    };
    let dims = vec![Dimension::City, Dimension::Category];
    let sink = || {
        let mut sink = ClickHouseSink::connect(&settings).unwrap();
        sink.set_groupings(vec![dims.clone()]);
        sink.send_rows_unchecked();
        sink
    };
    let t0 = 1_704_067_200;
    let refused_gmv = 10u128.pow(38);
    let grouped = |start: i64, city: &str, gmv_cents: u128| WindowRow {
        users: None,
        window_start: start,
        window_end: start + 60,
        order_cnt: 2,
        gmv_cents,
        user_cnt: 1,
        version: 3,
        updated_at: t0 + 600,
        group: Some(GroupKey {
            dims: dims.clone(),
            values: vec![city.to_string(), "books".to_string()],
        }),
    };
    let mut rows = vec![WindowRow {
        group: None,
        ..grouped(t0, "", 500)
    }];
    for (i, city) in ["Paris", "Lyon", "Nice", "Xi'an \"东\"\t", "Metz"]
        .iter()
        .enumerate()
    {
        let gmv = if i == 1 || i == 4 {
            refused_gmv
        } else {
            100 + i as u128
        };
        rows.push(grouped(t0 + 30 * (i as i64 % 2), city, gmv));
    }
    let mut first = sink();
    first
        .write(&rows)
        .expect("a refused grouped row does not fail the write");
    // Recovery resends the batch from a new sink: no halt, no new line.
    sink().write(&rows).unwrap();

    let mut want = std::collections::BTreeMap::new();
    for r in rows
        .iter()
        .filter(|r| r.group.is_some() && r.gmv_cents != refused_gmv)
    {
        upsert_keyed(&mut want, r.clone());
    }
    let want: Vec<WindowRow> = want.into_values().collect();
    let mut reader = sink();
    assert_eq!(reader.read_grouped().unwrap(), want);
    assert_eq!(reader.read_final().unwrap(), rows[..1].to_vec());

    let dead = read(&tmp.path().join("dead.log"));
    let letters: Vec<serde_json::Value> = dead
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let got: Vec<(String, i64)> = letters
        .iter()
        .map(|v| {
            (
                v["city"].as_str().unwrap().to_string(),
                v["window_start"].as_i64().unwrap(),
            )
        })
        .collect();
    let want_dead: Vec<(String, i64)> = rows
        .iter()
        .filter(|r| r.gmv_cents == refused_gmv)
        .map(|r| (r.group.as_ref().unwrap().values[0].clone(), r.window_start))
        .collect();
    assert_eq!(got, want_dead, "{dead}");
    for v in &letters {
        assert_eq!(
            v["table"],
            format!("streamforge_test.{}_by_city_category", settings.table)
        );
        assert_eq!(v["category"], "books");
        assert!(v["error"].as_str().unwrap().contains("Code: 69"), "{dead}");
    }
    reader.drop_table().unwrap();
}

/// A fresh state directory, on tables where only a grouped table holds rows
/// (here with version 1000, a higher one than the job's first emissions,
/// and stale figures), numbers its versions above them: the job's grouped
/// rows win, and `results --group-by` gives what an independent
/// recomputation gives. Before, the version floor was read from the totals'
/// table alone (empty here), the job wrote version 1, and the stale rows
/// stayed.
#[test]
fn a_fresh_state_never_writes_below_the_versions_of_a_grouped_table() {
    use streamforge::dims::{Dimension, GroupKey};
    use streamforge::sink::clickhouse::{ClickHouseSettings, ClickHouseSink};
    use streamforge::sink::Sink;
    use streamforge::window::WindowRow;
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("p0.jsonl");
    let lines: Vec<String> = read(&case_dir().join("p0.jsonl"))
        .lines()
        .filter(|l| l.contains("2024-"))
        .enumerate()
        .map(|(i, l)| {
            format!(
                "{}, \"city\": \"c{}\"}}",
                l.trim_end().trim_end_matches('}'),
                i % 2
            )
        })
        .collect();
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let case = Poison::with_input(&input, &["dimensions.groupings=[[city]]"]);
    let want = grouped_lines(lines.iter().map(String::as_str), &["city"], 1000);

    // Stale grouped rows of every (window, city) the job will emit.
    let settings = ClickHouseSettings {
        url: test_stack().clickhouse_url.clone(),
        database: "streamforge_test".into(),
        table: case.table.clone(),
        ..ClickHouseSettings::default()
    };
    let mut sink = ClickHouseSink::connect(&settings).unwrap();
    sink.set_groupings(vec![vec![Dimension::City]]);
    let stale: Vec<WindowRow> = want
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let start = v["window_start"].as_i64().unwrap();
            WindowRow {
                users: None,
                window_start: start,
                window_end: start + 60,
                order_cnt: 99,
                gmv_cents: 99,
                user_cnt: 99,
                version: 1000,
                updated_at: start,
                group: Some(GroupKey {
                    dims: vec![Dimension::City],
                    values: vec![v["city"].as_str().unwrap().to_string()],
                }),
            }
        })
        .collect();
    sink.write(&stale).unwrap();
    assert_eq!(
        sink.read_final().unwrap(),
        vec![],
        "the totals' table is empty"
    );

    case.run();
    let got = case.results_of(&["results", "--sink", "clickhouse", "--group-by", "city"]);
    assert_eq!(got, want);
    let versions: Vec<u64> = sink
        .read_grouped()
        .unwrap()
        .iter()
        .map(|r| r.version)
        .collect();
    assert!(versions.iter().all(|v| *v > 1000), "{versions:?}");
}
