//! `streamforge replay` and `streamforge anomalies` on the real stack
//! (Kafka and ClickHouse from `scripts/stack.sh`; `scripts/test.sh` starts
//! them). A missing service is a failure, never a skip.
//!
//! The oracle is tests/common's: windows computed by hand from the data set's
//! known fates. A replay counts every valid event of its range, including the
//! ones the live job sent to the anomaly log as late, so the expected table is
//! the live oracle outside the replayed windows and the oracle over accepted
//! plus late events inside them.

mod common;

use std::collections::BTreeMap;
use std::process::Output;
use std::time::Duration;

use common::stack::*;
use common::watch::Watched;
use common::*;

const T0_MS: i64 = 1_764_064_800_000;

fn shape(seed: u64) -> Shape {
    Shape {
        partitions: 3,
        per_partition: 20_000,
        seed,
        t0_ms: T0_MS,
        ..Shape::default()
    }
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

impl Case {
    fn replay(&self, from_ms: i64, to_ms: i64, extra: &[&str]) -> Output {
        let from = from_ms.to_string();
        let to = to_ms.to_string();
        let mut args = vec![
            "replay",
            "--source",
            "kafka",
            "--sink",
            "clickhouse",
            "--from",
            &from,
            "--to",
            &to,
        ];
        args.extend_from_slice(extra);
        let out = self.cmd(&args).output().unwrap();
        assert!(
            out.status.success(),
            "replay failed: {}\n{}",
            out.status,
            stderr_of(&out)
        );
        out
    }

    fn clickhouse(&self, sql: &str) -> String {
        let url = &test_stack().clickhouse_url;
        let resp = reqwest::blocking::Client::new()
            .post(url)
            .query(&[("database", "streamforge_test")])
            .body(sql.replace("{table}", &self.table))
            .send()
            .unwrap_or_else(|e| panic!("ClickHouse does not answer at {url}: {e}"));
        let status = resp.status();
        let text = resp.text().unwrap();
        assert!(status.is_success(), "{sql}: {status} {text}");
        text
    }
}

/// The table a replay of the windows starting in `[first_s, last_s]` must
/// leave: those windows over `all` events, the others as the live job wrote
/// them.
fn merged(live: &[String], all: &[String], first_s: i64, last_s: i64) -> Vec<String> {
    let in_range = |s: i64| (first_s..=last_s).contains(&s);
    let mut table: BTreeMap<i64, String> = live
        .iter()
        .filter(|l| !in_range(window_start_of(l)))
        .map(|l| (window_start_of(l), l.clone()))
        .collect();
    for l in all {
        if in_range(window_start_of(l)) {
            table.insert(window_start_of(l), l.clone());
        }
    }
    table.into_values().collect()
}

/// The table after a replay of the windows starting in `[first_s, last_s]`
/// on a case whose live job ran: live outside, accepted plus late inside.
fn replayed_table(case: &Case, first_s: i64, last_s: i64) -> Vec<String> {
    merged(
        &case.data.expected_results(),
        &window_lines(accepted_and_late(case)),
        first_s,
        last_s,
    )
}

fn accepted_and_late(case: &Case) -> Vec<Counted> {
    case.data
        .accepted()
        .chain(case.data.late.iter().cloned())
        .collect()
}

#[test]
fn replay_repairs_a_damaged_table_counts_late_events_and_is_idempotent() {
    let case = Case::new(shape(31));
    assert!(case.data.late.len() > 10, "the data set needs late events");
    ok(&case.run_cmd().output().unwrap());
    case.assert_exact();

    // Damage: two windows altered (a higher version with wrong numbers), two
    // deleted. All four are inside the range replayed below.
    let (from, to) = (T0_MS + 120_000, T0_MS + 300_000);
    let (first_s, last_s) = ((T0_MS + 90_000) / 1000, (T0_MS + 270_000) / 1000);
    case.clickhouse(&format!(
        "INSERT INTO {{table}} VALUES ({}, {}, 1, 1.00, 1, 999, now()), ({}, {}, 2, 2.00, 2, 999, now())",
        first_s,
        first_s + 60,
        first_s + 60,
        first_s + 120
    ));
    case.clickhouse(&format!(
        "ALTER TABLE {{table}} DELETE WHERE window_start IN ({}, {})",
        first_s + 90,
        last_s
    ));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while case
        .clickhouse("SELECT count() FROM system.mutations WHERE table = '{table}' AND is_done = 0")
        .trim()
        != "0"
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the DELETE mutation did not finish"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_ne!(
        case.results(),
        case.data.expected_results(),
        "damage landed"
    );

    let live = case.data.expected_results();
    let want = replayed_table(&case, first_s, last_s);
    assert_ne!(
        want, live,
        "the range must hold late events for this test to mean something"
    );

    let first = case.replay(from, to, &[]);
    let summary = stderr_of(&first);
    assert!(summary.contains("written with version"), "{summary}");
    assert_same_results(&case.results(), &want);

    // Twice = once: same table, and a dry run finds nothing to change.
    case.replay(from, to, &[]);
    assert_same_results(&case.results(), &want);
    let dry = case.replay(from, to, &["--dry-run"]);
    assert!(
        stderr_of(&dry).contains(" 0 changed, 7 unchanged"),
        "{}",
        stderr_of(&dry)
    );
    // The anomaly log is the live job's alone: replay never writes it.
    assert_anomalies_exactly_once(&case.log, &case.data.expected_anomalies());
}

#[test]
fn replay_refuses_windows_still_open_and_rebuilds_everything_with_allow_open() {
    let case = Case::new(shape(32));
    // No live job ran: the table is empty. The input's watermark is its
    // slowest partition's highest event time minus 5 s; windows whose end
    // plus the 30 s lateness is past it are refused.
    let (from, to) = (T0_MS - 60_000, T0_MS + 1_000_000);
    let out = case.replay(from, to, &[]);
    let log = stderr_of(&out);
    assert!(log.contains("refused"), "{log}");
    assert!(log.contains("--allow-open"), "{log}");
    let all = window_lines(accepted_and_late(&case));
    let got = case.results();
    assert!(!got.is_empty() && got.len() < all.len(), "{got:?}");
    // What was written is exact; what is missing is the newest windows.
    assert_eq!(got[..], all[..got.len()]);

    case.replay(from, to, &["--allow-open"]);
    assert_same_results(&case.results(), &all);
}

#[test]
fn replay_before_or_during_the_live_run_gives_the_same_table() {
    let (from, to) = (T0_MS + 150_000, T0_MS + 330_000);
    let (first_s, last_s) = ((T0_MS + 120_000) / 1000, (T0_MS + 300_000) / 1000);

    // Replay first: the live job writes these windows afterwards, with lower
    // versions, and loses.
    let case = Case::new(shape(33));
    case.replay(from, to, &[]);
    ok(&case.run_cmd().output().unwrap());
    let want = replayed_table(&case, first_s, last_s);
    assert_same_results(&case.results(), &want);
    assert_anomalies_exactly_once(&case.log, &case.data.expected_anomalies());

    // Replay while the live job runs: started once the job has committed its
    // first checkpoint; the job goes on and ends exact.
    let case = Case::new(shape(34));
    let mut job = Watched::attach(spawn(&mut case.run_cmd()));
    assert!(
        job.until_checkpoints(1),
        "the live job ended before its first checkpoint:\n{}",
        job.log
    );
    let replay = case.replay(from, to, &[]);
    let (status, log) = job.finish();
    assert!(status.success(), "the live job failed: {status}\n{log}");
    assert!(
        stderr_of(&replay).contains("written with version"),
        "{}",
        stderr_of(&replay)
    );
    let want = replayed_table(&case, first_s, last_s);
    assert_same_results(&case.results(), &want);
    assert_anomalies_exactly_once(&case.log, &case.data.expected_anomalies());
}

/// The start offsets the replay reported, per partition, and whether it
/// read from the first records.
fn starts_reported(out: &Output) -> (Vec<u64>, bool) {
    let log = stderr_of(out);
    let starts = log
        .lines()
        .filter_map(|l| l.trim().strip_prefix("partition "))
        .filter_map(|l| l.split_once(": offsets "))
        .map(|(_, rest)| rest.split("..").next().unwrap().parse().unwrap())
        .collect();
    (starts, log.contains("(from its first record)"))
}

#[test]
fn replay_finds_its_start_by_timestamp_when_records_carry_their_event_time() {
    let case = Case::produced(shape(36), true);
    ok(&case.run_cmd().output().unwrap());
    case.assert_exact();
    let (from, to) = (T0_MS + 240_000, T0_MS + 360_000);
    let (first_s, last_s) = ((T0_MS + 210_000) / 1000, (T0_MS + 330_000) / 1000);
    case.clickhouse(&format!(
        "INSERT INTO {{table}} VALUES ({first_s}, {}, 1, 1.00, 1, 999, now())",
        first_s + 60
    ));
    let out = case.replay(from, to, &[]);
    let (starts, from_first) = starts_reported(&out);
    assert_eq!(starts.len(), 3, "{}", stderr_of(&out));
    // About 8,200 records of each partition lie before the first window's
    // data: the replay skipped them.
    assert!(
        starts.iter().all(|s| *s > 5_000) && !from_first,
        "{}",
        stderr_of(&out)
    );
    let want = replayed_table(&case, first_s, last_s);
    assert_same_results(&case.results(), &want);
}

#[test]
fn replay_reads_from_the_first_records_when_stamps_come_before_event_times() {
    // Event times half an hour ahead of the clock, stamped when sent: the
    // start found by timestamp would skip the whole range.
    let t0 = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        / 30_000
        + 60)
        * 30_000;
    let case = Case::new(Shape {
        t0_ms: t0,
        ..shape(37)
    });
    let out = case.replay(t0 + 120_000, t0 + 300_000, &[]);
    let (starts, from_first) = starts_reported(&out);
    assert!(
        from_first && starts.iter().all(|s| *s == 0),
        "{}",
        stderr_of(&out)
    );
    assert!(
        stderr_of(&out).contains("cannot be trusted"),
        "{}",
        stderr_of(&out)
    );
    let all = window_lines(accepted_and_late(&case));
    let want = merged(&[], &all, (t0 + 90_000) / 1000, (t0 + 270_000) / 1000);
    assert_same_results(&case.results(), &want);
}

/// The amount of a `bad_amount` line of the data set written as a negative
/// JSON number, in cents, and its event time: what the repair makes valid.
fn negative_amount_event(payload: &str) -> Option<Counted> {
    let rest = payload.split_once(r#""amount":-"#)?.1;
    let (amount, rest) = rest.split_once(',')?;
    let (units, cents) = amount.split_once('.')?;
    let t = rest
        .split_once(r#""event_time":"#)?
        .1
        .trim_end_matches('}')
        .parse()
        .ok()?;
    Some(Counted {
        t_ms: t,
        user: "u1".into(),
        cents: units.parse::<u64>().ok()? * 100 + cents.parse::<u64>().ok()?,
    })
}

#[test]
fn repaired_anomalies_produced_again_are_counted_by_a_replay() {
    let case = Case::new(shape(35));
    ok(&case.run_cmd().output().unwrap());
    case.assert_exact();
    let log = case.log.to_str().unwrap();

    // stats: counts by reason, against the data set's own fates.
    let stats = case
        .cmd(&["anomalies", "stats", "--log", log])
        .output()
        .unwrap();
    assert!(stats.status.success(), "{}", stderr_of(&stats));
    let stats = String::from_utf8_lossy(&stats.stdout).to_string();
    let mut by_reason: BTreeMap<String, usize> = BTreeMap::new();
    for (reason, ..) in case.data.expected_anomalies() {
        *by_reason.entry(reason).or_default() += 1;
    }
    for (reason, n) in &by_reason {
        let line = stats
            .lines()
            .find(|l| l.split_whitespace().next() == Some(reason.as_str()))
            .unwrap_or_else(|| panic!("no line for {reason}:\n{stats}"));
        assert!(line.trim_end().ends_with(&format!(" {n}")), "{line} != {n}");
    }

    // The repair: negative amounts become positive; other bad amounts are
    // dropped by the fix (an empty line).
    let repaired: Vec<Counted> = case
        .data
        .expected_anomalies()
        .iter()
        .filter(|(reason, ..)| reason == "bad_amount")
        .filter_map(|(_, _, _, payload)| negative_amount_event(payload))
        .collect();
    assert!(repaired.len() > 5, "the data set needs negative amounts");
    let fix = r#"sed -e '/"amount":-/!s/.*//' -e 's/"amount":-/"amount":/'"#;
    let out = case
        .cmd(&[
            "anomalies",
            "replay",
            "--log",
            log,
            "--reason",
            "bad_amount",
            "--fix",
            fix,
        ])
        .output()
        .unwrap();
    let said = stderr_of(&out);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains(&format!("{} produced", repaired.len())),
        "{said}"
    );

    // The live job goes on from where the first run's input ended (the end
    // of a bounded input is not state, SPEC §4): the watermark is the
    // slowest partition's highest event time minus the bound, so a repaired
    // event is late where its windows were final by then, and counted where
    // they were not.
    ok(&case.run_cmd().output().unwrap());
    let watermark = case
        .data
        .partitions
        .iter()
        .map(|lines| {
            lines
                .iter()
                .filter_map(|(_, fate)| match fate {
                    Fate::Accept { t_ms, .. } => Some(*t_ms),
                    _ => None,
                })
                .max()
                .unwrap()
        })
        .min()
        .unwrap()
        - 5_000;
    // Final when the watermark reaches the last window's end (the window
    // starting at the event's slide) plus the allowed lateness.
    let is_late = |e: &Counted| watermark >= e.t_ms.div_euclid(30_000) * 30_000 + 60_000 + 30_000;
    let (late, on_time): (Vec<Counted>, Vec<Counted>) = repaired.iter().cloned().partition(is_late);
    assert!(
        !late.is_empty() && !on_time.is_empty(),
        "the data set needs both"
    );
    let late_again = read_anomalies(&case.log)
        .iter()
        .filter(|(reason, p, offset, _)| {
            reason == "late_event" && *offset >= case.data.partitions[*p as usize].len() as u64
        })
        .count();
    assert_eq!(late_again, late.len());

    // A replay of their range counts them in.
    let (from, to) = (T0_MS, T0_MS + 420_000);
    case.replay(from, to, &[]);
    let all = window_lines(accepted_and_late(&case).into_iter().chain(repaired));
    let live = window_lines(case.data.accepted().chain(on_time));
    let want = merged(
        &live,
        &all,
        (T0_MS - 30_000) / 1000,
        (T0_MS + 390_000) / 1000,
    );
    assert_same_results(&case.results(), &want);
}

/// Result lines sorted as `results` prints them: by window start, then the
/// dimension values.
fn sorted_by_key(mut lines: Vec<String>, dims: &[&str]) -> Vec<String> {
    lines.sort_by_key(|l| {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        let values: Vec<String> = dims
            .iter()
            .map(|d| v[*d].as_str().unwrap().to_string())
            .collect();
        (window_start_of(l), values)
    });
    lines
}

/// A replay recomputes the grouped rows of its windows too: a damaged
/// grouped row (a higher version with wrong numbers) is repaired, a stale
/// one (a city no event has) is retracted, late events count in, and the
/// grouped table outside the range stays as the live job wrote it; the
/// expected lines come from tests/common's `grouped_lines` over the data
/// set's payloads. Before, a replay left the grouped tables untouched.
#[test]
fn replay_recomputes_the_grouped_rows_of_its_range() {
    let case = Case::new(shape(33));
    let sets = [
        "--set",
        "dimensions.groupings=[[city]]",
        "--set",
        "dimensions.max_values_per_window=3",
    ];
    let mut run = case.run_cmd();
    run.args(sets);
    ok(&run.output().unwrap());
    let payloads = |late_too: bool| -> Vec<&str> {
        case.data
            .partitions
            .iter()
            .flatten()
            .filter(|(_, fate)| match fate {
                Fate::Accept { .. } => true,
                Fate::Anomaly(reason) => late_too && *reason == "late_event",
                _ => false,
            })
            .map(|(p, _)| p.as_str())
            .collect()
    };
    let live = grouped_lines(payloads(false), &["city"], 3);
    let all = grouped_lines(payloads(true), &["city"], 3);
    let results = |case: &Case| {
        let mut args = vec!["results", "--sink", "clickhouse", "--group-by", "city"];
        args.extend_from_slice(&sets);
        let out = case.cmd(&args).output().unwrap();
        ok(&out);
        results_lines(&out)
    };
    assert_eq!(results(&case), live);

    let (from, to) = (T0_MS + 120_000, T0_MS + 300_000);
    let (first_s, last_s) = ((T0_MS + 90_000) / 1000, (T0_MS + 270_000) / 1000);
    let some_city = |l: &String| -> String {
        serde_json::from_str::<serde_json::Value>(l).unwrap()["city"]
            .as_str()
            .unwrap()
            .replace('\'', "\\'")
    };
    let damaged = live
        .iter()
        .find(|l| window_start_of(l) == first_s + 30)
        .unwrap();
    case.clickhouse(&format!(
        "INSERT INTO {{table}}_by_city VALUES ({first_s}, {}, 'no such city', 5, 5.00, 5, 999, now()), \
         ({}, {}, '{}', 1, 1.00, 1, 999, now())",
        first_s + 60,
        first_s + 30,
        first_s + 90,
        some_city(damaged)
    ));
    assert_ne!(results(&case), live, "damage landed");

    let in_range = |l: &String| (first_s..=last_s).contains(&window_start_of(l));
    let want: Vec<String> = live
        .iter()
        .filter(|l| !in_range(l))
        .chain(all.iter().filter(|l| in_range(l)))
        .cloned()
        .collect();
    let want = sorted_by_key(want, &["city"]);
    assert_ne!(want, live, "the range must hold late events");
    let mut args = vec![];
    args.extend_from_slice(&sets);
    let out = case.replay(from, to, &args);
    let summary = stderr_of(&out);
    assert!(summary.contains("grouped rows:"), "{summary}");
    assert_eq!(results(&case), want);
    // The totals are replayed as before.
    assert_same_results(&case.results(), &replayed_table(&case, first_s, last_s));
    // Twice = once, and a dry run finds no grouped row to change.
    case.replay(from, to, &args);
    assert_eq!(results(&case), want);
    let mut dry = args.clone();
    dry.push("--dry-run");
    let out = case.replay(from, to, &dry);
    assert!(
        stderr_of(&out).contains("grouped rows: 0 changed"),
        "{}",
        stderr_of(&out)
    );
}
