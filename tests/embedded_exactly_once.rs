//! End to end on the embedded stack: the real binary, a file source, the
//! embedded sink, SIGKILLs at random moments (and, when built with the
//! `failpoints` feature, aborts inside the checkpoint protocol), restarts
//! until the bounded run completes; then the results and the anomaly log
//! must equal an oracle computed from the data set's known fates.

mod common;

use std::time::Duration;

use common::watch::Watched;
use common::*;

/// Crash points of the protocol, each hit on some pass of some run.
const CRASH_POINTS: &[&str] = &[
    "job::barrier::after_anomaly_sync",
    "checkpoint::commit::before_write",
    "checkpoint::commit::before_flush",
    "checkpoint::commit::after_flush",
    "checkpoint::compact::before_write",
    "checkpoint::compact::before_flush",
    "checkpoint::compact::after_flush",
    "job::barrier::after_commit",
    "job::barrier::after_submit",
    "sink::embedded::before_write",
    "sink::embedded::after_write",
    "job::recovery::after_resend",
];

fn run_until_done(
    data: &DataSet,
    state: &std::path::Path,
    log: &std::path::Path,
    seed: u64,
    extra: &[&str],
) -> (u32, u32) {
    let mut rng = Rng::new(seed);
    let source = format!("files:{}", data.dir.display());
    let (mut kills, mut aborts) = (0u32, 0u32);
    for attempt in 0..60 {
        let mut args = vec![
            "run",
            "--source",
            &source,
            "--sink",
            "embedded",
            "--state-dir",
            state.to_str().unwrap(),
            "--anomaly-log",
            log.to_str().unwrap(),
            "--bounded",
            "--checkpoint-interval",
            "1s",
            "--checkpoint-events",
            "2500",
            "--set",
            "batch_size=512",
        ];
        args.extend_from_slice(extra);
        let mut cmd = streamforge(&args);
        // Alternate the two ways of dying; the last attempts run clean so
        // the test ends.
        let use_failpoint = cfg!(feature = "failpoints") && attempt % 2 == 1 && attempt < 40;
        if use_failpoint {
            let point = CRASH_POINTS[rng.below(CRASH_POINTS.len() as u64) as usize];
            let skip = if point.starts_with("job::recovery") {
                0
            } else {
                rng.below(3)
            };
            // Chains of at most three checkpoints, so that the compaction's
            // crash points come up too.
            cmd.env(
                "FAILPOINTS",
                format!("{point}={skip}*off->return;checkpoint::compact::every=return(3)"),
            );
        }
        let mut child = spawn(&mut cmd);
        if attempt >= 40 {
            let out = child.wait_with_output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success(),
                "streamforge failed on a clean run: {}\n{stderr}",
                out.status
            );
            return (kills, aborts);
        }
        // Kill at a random moment: after a random number of the job's own
        // checkpoints plus a random few milliseconds, so kills land while
        // processing, while checkpointing and while writing the sink. No
        // timing is assumed: the trigger is the job's output. An attempt
        // armed with a crash point is killed the same way if the point is
        // not reached first, so that no attempt runs to the end unless the
        // input ends before the kill.
        let wanted = 1 + rng.below(4);
        let extra = Duration::from_micros(rng.below(15_000));
        let Some(stderr) = kill_after_checkpoints_or_end(&mut child, wanted, extra) else {
            kills += 1;
            continue;
        };
        let status = child.wait().unwrap();
        if status.success() {
            return (kills, aborts);
        }
        assert!(
            use_failpoint && stderr.contains("failpoint"),
            "streamforge failed on its own: {status}\n{stderr}"
        );
        aborts += 1;
    }
    panic!("the job never completed");
}

#[test]
fn sigkill_and_crash_points_anywhere_still_give_exact_results() {
    let tmp = tempfile::tempdir().unwrap();
    let shape = Shape {
        per_partition: 100_000,
        ..Shape::default()
    };
    let data = make_dataset(&tmp.path().join("in"), &shape);
    let state = tmp.path().join("state");
    let log = tmp.path().join("anomalies.log");
    let (kills, aborts) = run_until_done(&data, &state, &log, 11, &[]);
    eprintln!("completed after {kills} SIGKILLs and {aborts} crash-point aborts");
    assert!(
        kills + aborts >= 10,
        "the run was interrupted only {} times",
        kills + aborts
    );

    let out = run_ok(&["results", "--state-dir", state.to_str().unwrap()]);
    assert_same_results(&results_lines(&out), &data.expected_results());
    assert_anomalies_exactly_once(&log, &data.expected_anomalies());
}

/// The same with grouped results (`city`, `category`, both), few values
/// allowed per window so that some fold into `other`: every grouping's rows
/// equal a recomputation from the data set.
#[test]
fn sigkill_and_crash_points_give_exact_grouped_results() {
    let tmp = tempfile::tempdir().unwrap();
    let shape = Shape {
        per_partition: 100_000,
        seed: 17,
        ..Shape::default()
    };
    let data = make_dataset(&tmp.path().join("in"), &shape);
    let state = tmp.path().join("state");
    let log = tmp.path().join("anomalies.log");
    let groupings = [
        "--set",
        "dimensions.groupings=[[city], [category], [city, category]]",
        "--set",
        "dimensions.max_values_per_window=3",
    ];
    let (kills, aborts) = run_until_done(&data, &state, &log, 23, &groupings);
    eprintln!("completed after {kills} SIGKILLs and {aborts} crash-point aborts");
    assert!(
        kills + aborts >= 8,
        "interrupted only {} times",
        kills + aborts
    );

    let state = state.to_str().unwrap();
    let out = run_ok(&["results", "--state-dir", state]);
    assert_same_results(&results_lines(&out), &data.expected_results());
    for dims in [&["city"][..], &["category"], &["city", "category"]] {
        let mut args = vec!["results", "--state-dir", state, "--group-by"];
        let joined = dims.join(",");
        args.push(&joined);
        args.extend_from_slice(&groupings);
        let got = results_lines(&run_ok(&args));
        assert_grouped_results(&got, data.accepted_payloads(), dims, 3);
    }
    assert_anomalies_exactly_once(&log, &data.expected_anomalies());
}

#[test]
fn an_uninterrupted_run_matches_the_oracle() {
    let tmp = tempfile::tempdir().unwrap();
    let shape = Shape {
        partitions: 4,
        per_partition: 8_000,
        seed: 99,
        ..Shape::default()
    };
    let data = make_dataset(&tmp.path().join("in"), &shape);
    let state = tmp.path().join("state");
    let log = tmp.path().join("anomalies.log");
    let source = format!("files:{}", data.dir.display());
    run_ok(&[
        "run",
        "--source",
        &source,
        "--state-dir",
        state.to_str().unwrap(),
        "--anomaly-log",
        log.to_str().unwrap(),
        "--bounded",
    ]);
    let out = run_ok(&["results", "--state-dir", state.to_str().unwrap()]);
    assert_same_results(&results_lines(&out), &data.expected_results());
    assert_anomalies_exactly_once(&log, &data.expected_anomalies());
}

#[test]
fn a_corrupt_newest_checkpoint_falls_back_to_the_previous_one() {
    let tmp = tempfile::tempdir().unwrap();
    let data = make_dataset(
        &tmp.path().join("in"),
        &Shape {
            seed: 3,
            ..Shape::default()
        },
    );
    let state = tmp.path().join("state");
    let log = tmp.path().join("anomalies.log");
    let source = format!("files:{}", data.dir.display());
    let args = [
        "run",
        "--source",
        &source,
        "--state-dir",
        state.to_str().unwrap(),
        "--anomaly-log",
        log.to_str().unwrap(),
        "--bounded",
        "--checkpoint-events",
        "2000",
        "--set",
        "batch_size=500",
    ];
    // Run until the job has committed its third checkpoint, then kill it:
    // no timing involved, the job's own metrics are the trigger.
    let mut job = Watched::attach(spawn(&mut streamforge(&args)));
    assert!(
        job.until_checkpoints(3),
        "the job ended before its third checkpoint:\n{}",
        job.log
    );
    job.kill9();

    let listed = run_ok(&["checkpoint", "list", "--state-dir", state.to_str().unwrap()]);
    let listing = String::from_utf8_lossy(&listed.stdout).to_string();
    assert!(!listing.contains("CORRUPT"), "{listing}");
    let corrupted = run_ok(&[
        "checkpoint",
        "corrupt",
        "--state-dir",
        state.to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&corrupted.stdout).contains("corrupted"));
    let listed = run_ok(&["checkpoint", "list", "--state-dir", state.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&listed.stdout).contains("CORRUPT"));

    let out = run_ok(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("skipping a corrupt checkpoint") && stderr.contains("crc mismatch"),
        "the fallback was not logged:\n{stderr}"
    );
    assert!(stderr.contains("recovering from checkpoint"), "{stderr}");

    let out = run_ok(&["results", "--state-dir", state.to_str().unwrap()]);
    assert_same_results(&results_lines(&out), &data.expected_results());
    assert_anomalies_exactly_once(&log, &data.expected_anomalies());
}

#[test]
fn a_state_directory_is_not_resumed_on_another_input() {
    let tmp = tempfile::tempdir().unwrap();
    let a = make_dataset(
        &tmp.path().join("a"),
        &Shape {
            per_partition: 500,
            ..Shape::default()
        },
    );
    let b = make_dataset(
        &tmp.path().join("b"),
        &Shape {
            per_partition: 500,
            ..Shape::default()
        },
    );
    let state = tmp.path().join("state");
    let log = tmp.path().join("anomalies.log");
    let run = |dir: &std::path::Path| {
        bounded_embedded(&format!("files:{}", dir.display()), &state, &log)
            .output()
            .unwrap()
    };
    for (dir, ok) in [(&a.dir, true), (&b.dir, false)] {
        let out = run(dir);
        assert_eq!(
            out.status.success(),
            ok,
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        if !ok {
            assert!(String::from_utf8_lossy(&out.stderr).contains("belongs to another input"));
        }
    }
    // A file added to the job's own directory: the same refusal, naming it.
    std::fs::write(a.dir.join("zz-extra.jsonl"), "{}\n").unwrap();
    let out = run(&a.dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("The set of files changed (added: "),
        "{stderr}"
    );
    assert!(stderr.contains("zz-extra.jsonl)"), "{stderr}");
    assert!(!stderr.contains("removed:"), "{stderr}");
}

/// The arguments of a bounded run of `data` on `state`, checkpointing every
/// 2000 records.
fn bounded_run_args(data: &DataSet, state: &std::path::Path, log: &std::path::Path) -> Vec<String> {
    [
        "run",
        "--source",
        &format!("files:{}", data.dir.display()),
        "--state-dir",
        state.to_str().unwrap(),
        "--anomaly-log",
        log.to_str().unwrap(),
        "--bounded",
        "--checkpoint-events",
        "2000",
        "--set",
        "batch_size=500",
    ]
    .map(String::from)
    .to_vec()
}

/// A crash at each step of a compaction (the checkpoint written as a new
/// base, the chain before it dropped in the same batch): the next run
/// recovers from whatever the crash left and ends with the exact results.
#[cfg(feature = "failpoints")]
#[test]
fn a_crash_at_each_step_of_a_compaction_still_gives_exact_results() {
    for (i, step) in ["before_write", "before_flush", "after_flush"]
        .iter()
        .enumerate()
    {
        let tmp = tempfile::tempdir().unwrap();
        let data = make_dataset(
            &tmp.path().join("in"),
            &Shape {
                seed: 20 + i as u64,
                ..Shape::default()
            },
        );
        let (state, log) = (tmp.path().join("state"), tmp.path().join("anomalies.log"));
        let args = bounded_run_args(&data, &state, &log);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        // Chains of three: the second compaction is at checkpoint 7.
        let out = streamforge(&args)
            .env(
                "FAILPOINTS",
                format!("checkpoint::compact::{step}=1*off->return;checkpoint::compact::every=return(3)"),
            )
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success()
                && stderr.contains(&format!("failpoint checkpoint::compact::{step} fired")),
            "the compaction crash point was not reached: {}\n{stderr}",
            out.status
        );
        let out = run_ok(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("recovering from checkpoint"), "{stderr}");
        let results = run_ok(&["results", "--state-dir", state.to_str().unwrap()]);
        assert_same_results(&results_lines(&results), &data.expected_results());
        assert_anomalies_exactly_once(&log, &data.expected_anomalies());
    }
}

/// The newest base damaged on disk: the deltas on it are unusable too, and
/// the job falls back to the end of the chain before it, kept for that.
#[cfg(feature = "failpoints")]
#[test]
fn a_damaged_base_falls_back_to_the_end_of_the_chain_before() {
    let tmp = tempfile::tempdir().unwrap();
    let data = make_dataset(
        &tmp.path().join("in"),
        &Shape {
            seed: 5,
            ..Shape::default()
        },
    );
    let (state, log) = (tmp.path().join("state"), tmp.path().join("anomalies.log"));
    let args = bounded_run_args(&data, &state, &log);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let compact = "checkpoint::compact::every=return(3)";
    let mut child = spawn(streamforge(&args).env("FAILPOINTS", compact));
    // Killed after its eighth checkpoint, or (on a fast machine, before
    // the metrics showed it) finished: either way at least two chains are
    // stored, which the listing below checks.
    let _killed = kill_after_checkpoints(&mut child, 8, Duration::ZERO);
    child.wait().unwrap();
    let list = |state: &std::path::Path| {
        let out = run_ok(&["checkpoint", "list", "--state-dir", state.to_str().unwrap()]);
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let listing = list(&state);
    let bases: Vec<&str> = listing
        .lines()
        .filter(|l| l.contains(" ok ") && l.contains(" base "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let newest_base = *bases
        .last()
        .unwrap_or_else(|| panic!("no base:\n{listing}"));
    assert!(bases.len() >= 2, "the chain before is kept:\n{listing}");
    run_ok(&[
        "checkpoint",
        "corrupt",
        "--state-dir",
        state.to_str().unwrap(),
        "--id",
        newest_base,
    ]);
    let out = streamforge(&args)
        .env("FAILPOINTS", compact)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("checkpoint {newest_base} is corrupt")),
        "the fallback was not logged:\n{stderr}"
    );
    let results = run_ok(&["results", "--state-dir", state.to_str().unwrap()]);
    assert_same_results(&results_lines(&results), &data.expected_results());
    assert_anomalies_exactly_once(&log, &data.expected_anomalies());
}

/// Every base damaged (no chain left to fall back to): every checkpoint
/// is unusable, and the job refuses to start, saying so, rather
/// than starting over from nothing; the store and the anomaly log are left
/// as they were. Then, as the message says, a fresh state directory gives
/// the exact results.
#[test]
fn every_base_damaged_is_refused_clearly_never_taken_for_a_fresh_start() {
    let tmp = tempfile::tempdir().unwrap();
    let data = make_dataset(
        &tmp.path().join("in"),
        &Shape {
            seed: 9,
            ..Shape::default()
        },
    );
    let (state, log) = (tmp.path().join("state"), tmp.path().join("anomalies.log"));
    let args = bounded_run_args(&data, &state, &log);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut job = Watched::attach(spawn(&mut streamforge(&args)));
    assert!(
        job.until_checkpoints(3),
        "the job ended before its third checkpoint:\n{}",
        job.log
    );
    job.kill9();
    let list = || {
        let out = run_ok(&["checkpoint", "list", "--state-dir", state.to_str().unwrap()]);
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let listing = list();
    let ids: Vec<String> = listing
        .lines()
        .filter(|l| l.contains(" ok "))
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .collect();
    let bases: Vec<&String> = ids
        .iter()
        .filter(|id| {
            listing
                .lines()
                .any(|l| l.starts_with(&format!("{id:>8}  ")) && l.contains(" base "))
        })
        .collect();
    assert!(ids.len() >= 3 && !bases.is_empty(), "{listing}");
    for base in bases {
        run_ok(&[
            "checkpoint",
            "corrupt",
            "--state-dir",
            state.to_str().unwrap(),
            "--id",
            base,
        ]);
    }
    let log_before = std::fs::read(&log).unwrap();

    let out = streamforge(&args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a damaged store was resumed:\n{stderr}"
    );
    assert!(
        stderr.contains("nothing safe to resume from")
            && stderr.contains("Move the state directory aside"),
        "the refusal does not say what to do:\n{stderr}"
    );
    assert_eq!(
        std::fs::read(&log).unwrap(),
        log_before,
        "the anomaly log was touched"
    );
    let after = list();
    for id in &ids {
        assert!(
            after.lines().any(|l| l.starts_with(&format!("{id:>8}  "))),
            "checkpoint {id} was dropped:\n{after}"
        );
    }

    std::fs::rename(&state, tmp.path().join("state.damaged")).unwrap();
    std::fs::remove_file(&log).unwrap();
    run_ok(&args);
    let results = run_ok(&["results", "--state-dir", state.to_str().unwrap()]);
    assert_same_results(&results_lines(&results), &data.expected_results());
    assert_anomalies_exactly_once(&log, &data.expected_anomalies());
}
