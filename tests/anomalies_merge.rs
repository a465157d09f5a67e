//! `streamforge anomalies merge`: group mode leaves one anomaly log per
//! partition on each instance that processed it, and a partition processed
//! by two owners (a rebalance, a kill -9 before a checkpoint) has some
//! records in both. The merge is each record once per (source, partition,
//! offset): exactly the anomalies of one clean run, checked against the
//! data set's known fates. Two owners are played here by two runs over the
//! same files, one of them killed mid-way.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

/// A bounded run with a checkpoint every 2,000 records.
fn run(source: &str, state: &Path, log: &Path) -> std::process::Command {
    let mut cmd = bounded_embedded(source, state, log);
    cmd.args(["--checkpoint-events", "2000"]);
    cmd
}

fn merged(args: &[&str], out_file: &Path) -> String {
    let out = run_ok(args);
    std::fs::write(out_file, &out.stdout).unwrap();
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_merge_of_two_owners_logs_is_one_clean_runs_anomalies() {
    let tmp = tempfile::tempdir().unwrap();
    let shape = Shape {
        per_partition: 30_000,
        ..Shape::default()
    };
    let data = make_dataset(&tmp.path().join("in"), &shape);
    let source = format!("files:{}", data.dir.display());
    let expected = data.expected_anomalies();
    assert!(expected.len() > 100, "the data set has anomalies to merge");

    // Owner A: the whole input. Owner B: the same input, killed after a few
    // checkpoints, so its log holds a prefix of the same records, some of
    // them past its last checkpoint.
    let host_a = tmp.path().join("host-a");
    let host_b = tmp.path().join("host-b");
    let log_a = host_a.join("anomalies.log.partition-0");
    let log_b = host_b.join("anomalies.log.partition-0");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    output_ok(&mut run(&source, &host_a.join("state"), &log_a));
    let mut child = spawn(&mut run(&source, &host_b.join("state"), &log_b));
    assert!(
        kill_after_checkpoints(&mut child, 3, Duration::from_millis(2)),
        "owner B ended before it could be killed"
    );
    let _ = child.wait();
    let partial = read_anomalies(&log_b).len();
    assert!(
        partial > 0 && partial < expected.len(),
        "owner B logged {partial} records"
    );

    let out = tmp.path().join("merged.log");
    let stderr = merged(&["anomalies", "merge", &s(&log_a), &s(&log_b)], &out);
    assert_anomalies_exactly_once(&out, &expected);
    assert!(stderr.contains("2 files"), "{stderr}");

    // A machine that crashed can leave its log's last line cut: that record
    // was past its last checkpoint, and whoever resumes the partition
    // writes it again (here owner A has it). The union is still exact.
    let cut = tmp.path().join("cut.log");
    let text = std::fs::read(&log_b).unwrap();
    std::fs::write(&cut, &text[..text.len() - 20]).unwrap();
    let stderr = merged(&["anomalies", "merge", &s(&log_a), &s(&cut)], &out);
    assert_anomalies_exactly_once(&out, &expected);
    assert!(stderr.contains("no newline yet: left out"), "{stderr}");

    // By default, the configured log and its `.partition-*` files.
    let both = tmp.path().join("both");
    std::fs::create_dir_all(&both).unwrap();
    std::fs::copy(&log_a, both.join("anomalies.log.partition-0")).unwrap();
    std::fs::copy(&log_b, both.join("anomalies.log.partition-1")).unwrap();
    std::fs::write(both.join("anomalies.log.partition-x"), "not a log\n").unwrap();
    let base = format!("anomaly_log={}", both.join("anomalies.log").display());
    let stderr = merged(&["anomalies", "merge", "--set", &base], &out);
    assert_anomalies_exactly_once(&out, &expected);
    assert!(stderr.contains("2 files"), "{stderr}");
}

#[test]
fn two_different_records_at_one_offset_are_refused_naming_both_logs() {
    let tmp = tempfile::tempdir().unwrap();
    let shape = Shape {
        per_partition: 3_000,
        ..Shape::default()
    };
    let data = make_dataset(&tmp.path().join("in"), &shape);
    let source = format!("files:{}", data.dir.display());
    let first = tmp.path().join("first.log");
    let state = tmp.path().join("state");
    output_ok(&mut run(&source, &state, &first));
    // The same log with one record's payload changed: what a log of other
    // data (or other settings) at the same (partition, offset) looks like.
    let text = std::fs::read_to_string(&first).unwrap();
    let mut lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let n = lines.len() / 2;
    lines[n]["payload"] = serde_json::Value::from("{\"event_id\":\"other\"}");
    let other = tmp.path().join("other.log");
    let rewritten: Vec<String> = lines.iter().map(|v| v.to_string()).collect();
    std::fs::write(&other, rewritten.join("\n") + "\n").unwrap();

    let out = streamforge(&[
        "anomalies",
        "merge",
        first.to_str().unwrap(),
        other.to_str().unwrap(),
    ])
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "merged different records: {stderr}");
    let (p, o) = (&lines[n]["partition"], &lines[n]["offset"]);
    assert!(
        stderr.contains("first.log")
            && stderr.contains("other.log")
            && stderr.contains(&format!("partition {p} offset {o}")),
        "{stderr}"
    );
}

/// The operator's slips get answers that say what to do: a log that is not
/// there, and `checkpoint list` pointed at a group-mode state directory
/// (which holds one state directory per partition).
#[test]
fn a_missing_log_and_a_group_mode_state_directory_are_explained() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope.log");
    let out = streamforge(&["anomalies", "merge", missing.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("nope.log is not a file") && !stderr.contains("--log"),
        "{stderr}"
    );

    let state = tmp.path().join("state");
    std::fs::create_dir_all(state.join("partition-4")).unwrap();
    std::fs::create_dir_all(state.join("partition-2")).unwrap();
    let out = streamforge(&["checkpoint", "list", "--state-dir", state.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("group-mode state directory") && stderr.contains("partition-2"),
        "{stderr}"
    );
}

/// `anomalies replay` says how many records the fix changed, and refuses to
/// produce when it changed none (they would only be refused again): the
/// refusal comes before any broker is asked, so no Kafka is needed here.
#[test]
fn a_replay_whose_fix_changes_nothing_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("anomalies.log");
    let line = |offset: u32, amount: &str| {
        let payload = format!(r#"{{"event_id":"e{offset}","amount":"{amount}"}}"#);
        serde_json::json!({
            "reason": "bad_amount", "source": "orders", "partition": 0, "offset": offset,
            "payload": payload, "payload_encoding": "utf8",
            "detected_at": "2026-12-01T00:00:00Z",
        })
        .to_string()
    };
    let text = format!("{}\n{}\n", line(1, "1,50"), line(2, "12.345"));
    std::fs::write(&log, text).unwrap();
    let log = log.to_str().unwrap();
    let replay = |fix: &str, dry: bool| {
        let mut args = vec![
            "anomalies",
            "replay",
            "--log",
            log,
            "--reason",
            "bad_amount",
        ];
        args.extend(["--fix", fix]);
        if dry {
            args.push("--dry-run");
        }
        streamforge(&args).output().unwrap()
    };
    let out = replay("sed -e 's/1,50/1.50/'", true);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("2 would be produced, 1 changed by the fix, 1 unchanged"),
        "{stderr}"
    );
    // It names where they would go (the brokers may come from
    // KAFKA_BROKERS, as under scripts/test.sh: the topic is checked).
    let topic = streamforge::config::Config::default().kafka.topic;
    assert!(
        stderr.contains(&format!("to topic {topic} on "))
            && stderr.contains("(kafka.topic, kafka.brokers)"),
        "{stderr}"
    );
    let out = replay("cat", false);
    assert!(
        !out.status.success(),
        "a fix that changes nothing is refused"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("changed none of the 2 records"), "{stderr}");
    assert!(stderr.contains("nothing was produced"), "{stderr}");
}

/// `anomalies list` with no filter prints the log as it is, byte for byte:
/// a record without `event_time_ms` (every reason but `late_event`) gets
/// none added.
#[test]
fn a_listed_log_is_the_log() {
    let tmp = tempfile::tempdir().unwrap();
    let data = make_dataset(
        &tmp.path().join("in"),
        &Shape {
            per_partition: 30_000,
            ..Shape::default()
        },
    );
    let log = tmp.path().join("anomalies.log");
    let source = format!("files:{}", data.dir.display());
    output_ok(&mut run(&source, &tmp.path().join("state"), &log));
    let written = std::fs::read_to_string(&log).unwrap();
    assert!(written.contains("\"reason\":\"late_event\""), "{written}");
    assert!(written.contains("\"reason\":\"bad_amount\""), "{written}");
    let listed = run_ok(&["anomalies", "list", "--log", log.to_str().unwrap()]);
    assert_eq!(String::from_utf8_lossy(&listed.stdout), written);
}
