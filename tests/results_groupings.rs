//! `results --group-by` after a run with groupings given on the command
//! line: the groupings come from the state, not only from the config.

use std::process::{Command, Output};

fn streamforge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_streamforge"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = streamforge(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn failure(args: &[&str]) -> String {
    let out = streamforge(args);
    assert!(!out.status.success(), "{args:?} should fail");
    String::from_utf8(out.stderr).unwrap()
}

const GROUPINGS: &str = "dimensions.groupings=[[city],[category]]";

#[test]
fn results_reads_the_groupings_the_state_was_computed_with() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("st").display().to_string();
    let log = tmp.path().join("a.log").display().to_string();
    let small = [
        "--set",
        "source.generator.partitions=2",
        "--set",
        "source.generator.events_per_partition=2000",
        "--set",
        "metrics_addr=127.0.0.1:0",
        "--anomaly-log",
        &log,
    ];
    let mut run = vec!["run", "--bounded", "--source", "generator"];
    run.extend(["--state-dir", &state, "--set", GROUPINGS]);
    run.extend(small);
    ok(&run);

    // With the groupings repeated (what used to be required) and without.
    let given = ok(&[
        "results",
        "--state-dir",
        &state,
        "--set",
        GROUPINGS,
        "--group-by",
        "city",
    ]);
    let from_state = ok(&["results", "--state-dir", &state, "--group-by", "city"]);
    assert!(given.lines().count() > 1, "no city rows:\n{given}");
    assert_eq!(from_state, given);

    // A grouping the job did not compute: say which it did, and how to pass them.
    let err = failure(&[
        "results",
        "--state-dir",
        &state,
        "--group-by",
        "city,category",
    ]);
    assert!(err.contains("[[city], [category]]"), "{err}");
    assert!(err.contains("--set 'dimensions.groupings="), "{err}");

    // Resuming with other groupings is refused, in the config's spelling.
    let mut again = vec!["run", "--bounded", "--source", "generator"];
    again.extend([
        "--state-dir",
        &state,
        "--set",
        "dimensions.groupings=[[city]]",
    ]);
    again.extend(small);
    let err = failure(&again);
    assert!(
        err.contains("[[city], [category]]") && err.contains("now says [[city]]"),
        "{err}"
    );
    assert!(!err.contains("City"), "{err}");
}
