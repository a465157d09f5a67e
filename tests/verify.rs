//! `verify`: the independent recomputation agrees with the test oracle, finds
//! nothing to report after a real run (clean or killed and restarted), and
//! points at exactly the window that was tampered with in the sink.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::watch::Watched;
use common::*;
use streamforge::config::Config;
use streamforge::dims::{Dimension, GroupingSpec};
use streamforge::sink::embedded::EmbeddedSink;
use streamforge::sink::Sink;
use streamforge::source::file::FileSource;
use streamforge::verify::{recompute, recompute_grouped, verify, ClockBounds, VerifyReport};
use streamforge::window::{WindowRow, WindowSpec};

fn spec() -> WindowSpec {
    Config::default().window.spec()
}

fn drift_ms() -> i64 {
    Config::default().window.alignment_drift.ms()
}

fn file_source(dir: &Path) -> FileSource {
    FileSource::new(&[dir.to_path_buf()]).expect("file source")
}

fn run_args(data: &DataSet, state: &Path, log: &Path) -> Vec<String> {
    [
        "run",
        "--source",
        &format!("files:{}", data.dir.display()),
        "--sink",
        "embedded",
        "--state-dir",
        state.to_str().unwrap(),
        "--anomaly-log",
        log.to_str().unwrap(),
        "--bounded",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn verify_embedded(data: &DataSet, state: &Path) -> VerifyReport {
    verify_grouped(data, state, &GroupingSpec::default())
}

fn verify_grouped(data: &DataSet, state: &Path, groupings: &GroupingSpec) -> VerifyReport {
    let mut sink = EmbeddedSink::open(&state.join("sink")).expect("embedded sink");
    verify(
        &mut file_source(&data.dir),
        &mut sink,
        spec(),
        drift_ms(),
        ClockBounds::defaults(&spec()),
        groupings,
    )
    .expect("verify")
}

fn report_text(report: &VerifyReport) -> String {
    let mut out = Vec::new();
    report.print_side_by_side(&mut out);
    String::from_utf8(out).unwrap()
}

#[test]
fn recompute_equals_the_oracle_line_for_line() {
    let tmp = tempfile::tempdir().unwrap();
    let data = make_dataset(
        &tmp.path().join("in"),
        &Shape {
            partitions: 4,
            per_partition: 15_000,
            seed: 21,
            ..Shape::default()
        },
    );
    let (rows, stats) = recompute(&mut file_source(&data.dir), spec(), drift_ms()).unwrap();
    let lines: Vec<String> = rows.iter().map(WindowRow::result_json).collect();
    assert_same_results(&lines, &data.expected_results());
    assert!(rows
        .windows(2)
        .all(|w| w[0].window_start < w[1].window_start));

    // The per-record fates agree too: counts by kind and by anomaly reason.
    let mut want_reasons: BTreeMap<String, u64> = BTreeMap::new();
    let (mut want_accepted, mut want_dups) = (0u64, 0u64);
    for lines in &data.partitions {
        for (_, fate) in lines {
            match fate {
                Fate::Accept { .. } => want_accepted += 1,
                Fate::Duplicate => want_dups += 1,
                Fate::Anomaly(r) => *want_reasons.entry(r.to_string()).or_default() += 1,
            }
        }
    }
    assert_eq!(stats.records, data.total() as u64);
    assert_eq!(stats.accepted, want_accepted);
    assert_eq!(stats.duplicates, want_dups);
    assert_eq!(stats.anomalies, want_reasons);
    assert!(stats.anomalies.get("late_event").copied().unwrap_or(0) > 0);
    assert_eq!(stats.borderline, 0, "the data set's disorder is bounded");
}

#[test]
fn verify_passes_after_a_real_run_and_flags_exactly_a_tampered_window() {
    let tmp = tempfile::tempdir().unwrap();
    let data = make_dataset(&tmp.path().join("in"), &Shape::default());
    let state = tmp.path().join("state");
    let log = tmp.path().join("anomalies.log");
    let args = run_args(&data, &state, &log);
    run_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());

    let report = verify_embedded(&data, &state);
    assert!(report.ok(), "{}", report_text(&report));
    assert_eq!(report.expected.len(), data.expected_results().len());
    // The command compares against the job's own input and settings only:
    // the default source (the generator) or other windows are refused with
    // the input to name, not reported as differing windows.
    let state_arg = state.to_str().unwrap();
    let source = format!("files:{}", data.dir.display());
    let refused = |extra: &[&str], says: &str| {
        let mut args = vec!["verify", "--state-dir", state_arg, "--quiet"];
        args.extend(extra);
        let out = streamforge(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} passed: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    };
    refused(&[], "holds the results of another input");
    refused(
        &["--source", &source, "--set", "window.size=120s"],
        "window settings `window.size=60s window.slide=30s window.out_of_orderness=5s \
         window.allowed_lateness=30s`; this verify uses `window.size=120s window.slide=30s",
    );
    run_ok(&[
        "verify",
        "--state-dir",
        state_arg,
        "--quiet",
        "--source",
        &source,
    ]);
    assert_eq!(report.actual.len(), report.expected.len());
    assert_eq!(report.records, data.total() as u64);
    assert!(
        report.summary().ends_with("all equal"),
        "{}",
        report.summary()
    );

    // Tamper with one window after the job exited: a higher version with
    // one order more wins the upsert, as a buggy writer's row would.
    let target = report.actual[report.actual.len() / 2].clone();
    let mut wrong = target.clone();
    wrong.order_cnt += 1;
    wrong.version += 10;
    {
        let mut sink = EmbeddedSink::open(&state.join("sink")).unwrap();
        sink.write(std::slice::from_ref(&wrong)).unwrap();
    }
    let report = verify_embedded(&data, &state);
    assert!(!report.ok());
    assert!(report.missing.is_empty() && report.unexpected.is_empty());
    assert_eq!(report.differing.len(), 1, "{}", report_text(&report));
    let (expected, actual) = &report.differing[0];
    assert_eq!(expected.window_start, target.window_start);
    assert_eq!(expected.order_cnt, target.order_cnt);
    assert_eq!(actual.order_cnt, target.order_cnt + 1);
    let text = report_text(&report);
    let marked: Vec<&str> = text.lines().filter(|l| l.contains("<<<")).collect();
    assert_eq!(marked.len(), 1, "{text}");
    assert!(marked[0].contains("DIFFERS: orders"), "{text}");
    assert!(
        marked[0].starts_with(&streamforge::time::format_rfc3339_s(target.window_start)),
        "{text}"
    );
    assert!(report.summary().starts_with("verify: 1 windows differ"));

    // A row for a window the input never had is reported as unexpected.
    let mut stray = target.clone();
    stray.window_start = report.expected.last().unwrap().window_start + 3_600;
    stray.window_end = stray.window_start + 60;
    {
        let mut sink = EmbeddedSink::open(&state.join("sink")).unwrap();
        sink.write(&[stray.clone()]).unwrap();
    }
    let report = verify_embedded(&data, &state);
    assert_eq!(report.unexpected.len(), 1);
    assert_eq!(report.unexpected[0].window_start, stray.window_start);
    assert_eq!(report.differing.len(), 1);
}

#[test]
fn verify_passes_after_sigkills_and_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let data = make_dataset(
        &tmp.path().join("in"),
        &Shape {
            per_partition: 30_000,
            seed: 5,
            ..Shape::default()
        },
    );
    let state: PathBuf = tmp.path().join("state");
    let log = tmp.path().join("anomalies.log");
    let mut args = run_args(&data, &state, &log);
    args.extend(
        ["--checkpoint-events", "3000", "--set", "batch_size=500"]
            .iter()
            .map(|s| s.to_string()),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // Kill after the job's own 2nd, then 3rd checkpoint (its metrics say
    // when): no timing.
    for wanted in [2, 3] {
        let mut job = Watched::attach(spawn(&mut streamforge(&args)));
        assert!(
            job.until_checkpoints(wanted),
            "the job ended before being killed:\n{}",
            job.log
        );
        job.kill9();
    }
    let out = run_ok(&args);
    assert!(String::from_utf8_lossy(&out.stderr).contains("recovering from checkpoint"));

    let report = verify_embedded(&data, &state);
    assert!(report.ok(), "{}", report_text(&report));
    let lines: Vec<String> = report.actual.iter().map(WindowRow::result_json).collect();
    assert_same_results(&lines, &data.expected_results());
}

/// `verify` recomputes the grouped rows too: its model gives, per grouping,
/// what tests/common's `grouped_lines` gives (another reading of the
/// definition in docs/semantics.md), it finds nothing to report after a
/// grouped run, and it points at exactly the grouped row tampered with.
#[test]
fn verify_recomputes_the_grouped_rows_and_flags_a_tampered_one() {
    let tmp = tempfile::tempdir().unwrap();
    let data = make_dataset(
        &tmp.path().join("in"),
        &Shape {
            partitions: 3,
            per_partition: 8_000,
            seed: 27,
            ..Shape::default()
        },
    );
    let groupings = GroupingSpec {
        groupings: vec![
            vec![Dimension::City],
            vec![Dimension::City, Dimension::Category],
        ],
        max_values: 3,
    };
    let (_, grouped, _) = recompute_grouped(
        &mut file_source(&data.dir),
        spec(),
        drift_ms(),
        ClockBounds::defaults(&spec()),
        groupings.clone(),
    )
    .unwrap();
    for (dims, names) in [
        (vec![Dimension::City], &["city"][..]),
        (
            vec![Dimension::City, Dimension::Category],
            &["city", "category"],
        ),
    ] {
        let mut got: Vec<String> = grouped
            .iter()
            .filter(|r| r.group.as_ref().unwrap().dims == dims)
            .map(WindowRow::result_json)
            .collect();
        let mut want = grouped_lines(data.accepted_payloads(), names, 3);
        assert!(
            want.iter().any(|l| l.contains("\"other\"")),
            "{names:?} folds"
        );
        got.sort();
        want.sort();
        assert_eq!(got, want, "{names:?}");
    }

    let state = tmp.path().join("state");
    let mut args = run_args(&data, &state, &tmp.path().join("anomalies.log"));
    args.extend(
        [
            "--set",
            "dimensions.groupings=[[city], [city, category]]",
            "--set",
            "dimensions.max_values_per_window=3",
        ]
        .map(String::from),
    );
    run_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let report = verify_grouped(&data, &state, &groupings);
    assert!(report.ok(), "{}", report_text(&report));
    assert_eq!(report.grouped_actual.len(), grouped.len());
    assert!(
        report
            .summary()
            .ends_with(&format!("; {} grouped rows, all equal", grouped.len())),
        "{}",
        report.summary()
    );

    // One grouped row with an order more, at a higher version.
    let target = report.grouped_actual[report.grouped_actual.len() / 2].clone();
    let mut wrong = target.clone();
    wrong.order_cnt += 1;
    wrong.version += 10;
    EmbeddedSink::open(&state.join("sink"))
        .unwrap()
        .write(std::slice::from_ref(&wrong))
        .unwrap();
    let report = verify_grouped(&data, &state, &groupings);
    assert!(!report.ok());
    assert_eq!(report.differences(), 0, "the totals are untouched");
    assert!(report.grouped_missing.is_empty() && report.grouped_unexpected.is_empty());
    assert_eq!(
        report.grouped_differing.len(),
        1,
        "{}",
        report_text(&report)
    );
    let (expected, actual) = &report.grouped_differing[0];
    assert_eq!(
        (expected.key(), expected.order_cnt),
        (target.key(), target.order_cnt)
    );
    assert_eq!(actual.order_cnt, target.order_cnt + 1);
    assert!(
        report.summary().contains("1 grouped rows differ"),
        "{}",
        report.summary()
    );
    assert!(report_text(&report).contains("grouped, DIFFERS"));
}

/// A job that follows its input (no `--bounded`) and is stopped has emitted
/// only the windows its watermark reached: `verify` compares those and
/// names the others as not emitted yet, instead of calling them missing.
#[test]
fn verify_after_a_stopped_live_job_compares_the_closed_windows_only() {
    let tmp = tempfile::tempdir().unwrap();
    let data = make_dataset(
        &tmp.path().join("in"),
        &Shape {
            per_partition: 4_000,
            ..Shape::default()
        },
    );
    let state = tmp.path().join("state");
    let log = tmp.path().join("anomalies.log");
    let mut args = run_args(&data, &state, &log);
    args.retain(|a| a != "--bounded");
    let mut job = LiveJob::spawn(&mut streamforge(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    ));
    let total = data.total() as f64;
    job.wait_for(
        "every record read",
        std::time::Duration::from_secs(60),
        |j| {
            let m = j.metrics();
            metric_sum(&m, "streamforge_events_read_total")
                + metric_sum(&m, "streamforge_held_records")
                >= total
        },
    );
    job.stop();

    // The sink holds the oracle's first windows exactly, not all of them.
    let emitted = results_lines(&run_ok(&[
        "results",
        "--state-dir",
        state.to_str().unwrap(),
    ]));
    let all = data.expected_results();
    assert!(
        !emitted.is_empty() && emitted.len() < all.len(),
        "{} of {}",
        emitted.len(),
        all.len()
    );
    assert_same_results(&emitted, &all[..emitted.len()]);

    let out = streamforge(&[
        "verify",
        "--state-dir",
        state.to_str().unwrap(),
        "--source",
        &format!("files:{}", data.dir.display()),
    ])
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let open = all.len() - emitted.len();
    let summary = stdout.lines().last().unwrap();
    assert!(
        summary.starts_with(&format!(
            "verify: {} windows, all equal; {open} windows",
            emitted.len()
        )),
        "{summary}\nsink: {emitted:#?}\noracle: {all:#?}"
    );
    assert!(summary.contains("not emitted yet"), "{summary}");
    let marked = stdout
        .lines()
        .filter(|l| l.contains("not emitted yet: ends after"))
        .count();
    assert_eq!(marked, open, "{stdout}");
    assert!(!stdout.contains("MISSING"), "{stdout}");
}

/// A finished bounded run emitted every window, also those past its
/// watermark: a sink that lost one of those is a difference, never a
/// window "not emitted yet".
#[test]
fn a_window_a_finished_bounded_run_emitted_and_the_sink_lost_is_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = make_dataset(&tmp.path().join("in"), &Shape::default());
    let state = tmp.path().join("state");
    let log = tmp.path().join("anomalies.log");
    let args = run_args(&data, &state, &log);
    run_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let verify_args = [
        "verify",
        "--state-dir",
        state.to_str().unwrap(),
        "--source",
        &format!("files:{}", data.dir.display()),
    ];
    run_ok(&verify_args);

    // Lose the newest window (keys sort by window start), as a sink that
    // dropped an acknowledged write would.
    {
        let db = sled::open(state.join("sink")).unwrap();
        let (last, _) = db.last().unwrap().expect("the sink holds rows");
        db.remove(last).unwrap();
        db.flush().unwrap();
    }
    let out = streamforge(&verify_args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    let summary = stdout.lines().last().unwrap();
    assert!(
        summary.starts_with("verify: 1 windows differ (1 missing"),
        "{summary}"
    );
    assert!(!summary.contains("not emitted yet"), "{summary}");
}

/// A producer 40 s behind the others on the same partition: later than the
/// out-of-orderness bound, within the allowed lateness. Each of its events
/// counts in the windows that were not final when it was read (the earlier
/// one is final for events in the last seconds of their slide), in the job
/// and in verify's model alike; the expected table is computed here from
/// that rule alone.
#[test]
fn a_producer_behind_within_the_lateness_counts_in_the_windows_not_final_yet() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("in");
    std::fs::create_dir_all(&dir).unwrap();
    let spec = spec();
    let t0 = 1_764_064_800_000i64;
    let (behind, seconds) = (40_000i64, 600i64);
    let mut lines = Vec::new();
    let mut windows: BTreeMap<i64, (u64, u128, std::collections::BTreeSet<String>)> =
        BTreeMap::new();
    let mut count = |t: i64, user: &str, watermark: i64| {
        let last = t.div_euclid(spec.slide_ms) * spec.slide_ms;
        for start in [last, last - spec.slide_ms] {
            if watermark < start + spec.size_ms + spec.allowed_lateness_ms {
                let w = windows.entry(start).or_default();
                w.0 += 1;
                w.1 += 100;
                w.2.insert(user.to_string());
            }
        }
    };
    let line = |id: String, user: &str, t: i64| {
        format!(
            "{{\"event_id\": \"{id}\", \"order_id\": \"o-{id}\", \"user_id\": \"{user}\", \"amount\": 1, \"event_time\": \"{}\"}}",
            rfc3339(t, 0)
        )
    };
    for i in 0..seconds {
        // In order: the watermark is this event's time minus the bound.
        let t = t0 + i * 1000;
        let user = format!("u{}", i % 37);
        lines.push(line(format!("on-time-{i}"), &user, t));
        count(t, &user, i64::MIN);
        if i * 1000 >= behind {
            let lag = t - behind;
            let user = format!("v{}", i % 11);
            lines.push(line(format!("behind-{i}"), &user, lag));
            count(lag, &user, t - spec.out_of_orderness_ms);
        }
    }
    std::fs::write(dir.join("p0.jsonl"), lines.join("\n") + "\n").unwrap();
    let expected: Vec<String> = windows
        .into_iter()
        .map(|(start, (cnt, cents, users))| {
            format!(
                "{{\"window_start\": {}, \"window_end\": {}, \"order_cnt\": {cnt}, \"gmv_total\": \"{}.{:02}\", \"user_cnt\": {}}}",
                start / 1000,
                (start + spec.size_ms) / 1000,
                cents / 100,
                cents % 100,
                users.len()
            )
        })
        .collect();
    assert!(
        expected.iter().any(|l| l.contains("\"order_cnt\": 115,")),
        "the data must leave windows where some events behind counted in one window only"
    );

    let state = tmp.path().join("state");
    let log = tmp.path().join("anomalies.log");
    let source = format!("files:{}", dir.display());
    output_ok(&mut bounded_embedded(&source, &state, &log));
    let out = run_ok(&["results", "--state-dir", state.to_str().unwrap()]);
    assert_same_results(&results_lines(&out), &expected);
    let out = run_ok(&[
        "verify",
        "--state-dir",
        state.to_str().unwrap(),
        "--source",
        &source,
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("all equal"), "{stdout}");
}

/// A demo of another length than the verify's generator: the verify says
/// what to pass (the generator's identity leaves the length out), and
/// passing it verifies equal.
#[test]
fn verify_of_a_demo_names_the_generator_length_it_ran_with() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let demo = streamforge(&[
        "demo",
        "--dir",
        dir.to_str().unwrap(),
        "--events-per-partition",
        "300",
        "--metrics-addr",
        "off",
    ])
    .output()
    .unwrap();
    assert!(
        demo.status.success(),
        "{}",
        String::from_utf8_lossy(&demo.stderr)
    );
    let state = dir.join("state");
    let verify = |length: &str| {
        streamforge(&[
            "verify",
            "--source",
            "generator",
            "--state-dir",
            state.to_str().unwrap(),
            "--quiet",
            "--set",
            &format!("source.generator.events_per_partition={length}"),
        ])
        .output()
        .unwrap()
    };
    let other = verify("900");
    let stderr = String::from_utf8_lossy(&other.stderr);
    assert!(!other.status.success());
    assert!(
        stderr.contains("the job read 300 events per partition and this verify generated 900")
            && stderr.contains("--set source.generator.events_per_partition=300"),
        "{stderr}"
    );
    let same = verify("300");
    assert!(
        same.status.success(),
        "{}",
        String::from_utf8_lossy(&same.stdout)
    );
    assert!(!String::from_utf8_lossy(&same.stderr).contains("events per partition"));
}
