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
}

impl Poison {
    fn new() -> Poison {
        require_stack();
        let topic = unique("sf_poison");
        stack(&["topic", &topic, "1"]);
        let case = Poison {
            tmp: tempfile::tempdir().unwrap(),
            table: unique("poison"),
            topic,
        };
        produce_files_to(&case.topic, &[case_dir().join("p0.jsonl")], false);
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
        let out = self
            .cmd(&["results", "--sink", "clickhouse"])
            .output()
            .unwrap();
        ok(&out);
        results_lines(&out)
    }
}

impl Drop for Poison {
    fn drop(&mut self) {
        use streamforge::sink::clickhouse::{ClickHouseSettings, ClickHouseSink};
        let settings = ClickHouseSettings {
            url: test_stack().clickhouse_url.clone(),
            database: "streamforge_test".into(),
            table: self.table.clone(),
            ..ClickHouseSettings::default()
        };
        let dropped = ClickHouseSink::connect(&settings).and_then(|sink| sink.drop_table());
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
