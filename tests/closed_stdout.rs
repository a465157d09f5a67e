//! Every command that prints ends quietly when its reader closes standard
//! output early (`streamforge ... | head -1`): no panic, no error, exit 0
//! (or the command's own verdict), like `results` always did.

use std::path::Path;
use std::process::{Command, Output, Stdio};

fn streamforge(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_streamforge"));
    c.args(args).current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

/// A small generator: two partitions of 2000 events.
const SMALL: [&str; 6] = [
    "--set",
    "source.generator.partitions=2",
    "--set",
    "source.generator.events_per_partition=2000",
    "--set",
    "metrics_addr=127.0.0.1:0",
];

/// Runs `args` with standard output a pipe whose read end is closed before
/// the command writes anything, so its first write fails with EPIPE.
fn with_closed_stdout(args: &[&str]) -> Output {
    let mut child = streamforge(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    child.wait_with_output().unwrap()
}

fn assert_quiet(what: &str, out: &Output) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
        "{what}: panic or pipe error on stderr:\n{stderr}"
    );
    assert_eq!(out.status.code(), Some(0), "{what}: stderr:\n{stderr}");
}

fn run_bounded(state: &Path, log: &str) {
    let state = state.display().to_string();
    let mut args = vec!["run", "--bounded", "--source", "generator"];
    args.extend(["--state-dir", &state, "--anomaly-log", log]);
    args.extend(SMALL);
    let out = streamforge(&args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn printing_commands_end_quietly_when_the_reader_goes_away() {
    let tmp = tempfile::tempdir().unwrap();
    let state_path = tmp.path().join("state");
    let log = tmp.path().join("anomalies.log").display().to_string();
    run_bounded(&state_path, &log);
    let state = state_path.display().to_string();
    let common = ["--state-dir", state.as_str()];

    let mut verify = vec!["verify", "--source", "generator"];
    verify.extend(common);
    verify.extend(SMALL);
    let cases: Vec<(&str, Vec<&str>)> = vec![
        (
            "checkpoint list",
            [&["checkpoint", "list"][..], &common].concat(),
        ),
        (
            "checkpoint inspect",
            [&["checkpoint", "inspect"][..], &common].concat(),
        ),
        ("results", [&["results"][..], &common].concat()),
        ("verify", verify),
        ("anomalies list", vec!["anomalies", "list", "--log", &log]),
        ("anomalies stats", vec!["anomalies", "stats", "--log", &log]),
    ];
    for (what, args) in &cases {
        assert_quiet(what, &with_closed_stdout(args));
    }
}

#[test]
fn the_demo_ends_quietly_when_the_reader_goes_away() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo").display().to_string();
    let out = with_closed_stdout(&[
        "demo",
        "--dir",
        &dir,
        "--partitions",
        "2",
        "--events-per-partition",
        "2000",
        "--metrics-addr",
        "127.0.0.1:0",
    ]);
    assert_quiet("demo", &out);
}
