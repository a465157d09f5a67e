//! The crash-and-restart demo (`scripts/crash_demo.sh`), run as a newcomer
//! runs it, on the embedded stack: it kills the job with SIGKILL at random
//! moments, restarts it, and must end with PASS (its own `verify` against an
//! independent recomputation, and the anomaly log checked line by line).
//! It reads the job's progress from the job's metrics, so this also proves
//! the metrics the demo relies on.

use std::process::{Command, Output};

#[path = "common/endpoints.rs"]
mod endpoints;

/// `scripts/crash_demo.sh ARGS --dir DIR` with this build's binary; its
/// output (stdout and stderr), once it has passed.
fn crash_demo(args: &[&str], dir: &std::path::Path, stack: Option<Command>) -> String {
    let mut cmd = Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/crash_demo.sh"
    ));
    // The stack's ports and directory, as the tests hand them to
    // scripts/stack.sh, which the demo calls.
    for (key, value) in stack.iter().flat_map(|s| s.get_envs()) {
        match value {
            Some(value) => cmd.env(key, value),
            None => cmd.env_remove(key),
        };
    }
    let out: Output = cmd
        .args(args)
        .arg("--dir")
        .arg(dir)
        .env("STREAMFORGE_BIN", env!("CARGO_BIN_EXE_streamforge"))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "the demo failed ({}):\n{text}",
        out.status
    );
    assert!(text.contains("RESULT: PASS"), "{text}");
    text
}

/// The demo on the real stack (files -> Kafka -> streamforge -> ClickHouse):
/// its verify checks the ClickHouse table against the files the topic was
/// produced from, with the job's state directory named (a check that verify
/// refused once, failing the demo with correct data).
#[test]
fn the_crash_demo_passes_on_the_real_stack() {
    let dir = tempfile::tempdir().unwrap();
    let stack = endpoints::test_stack().script(&[]);
    let text = crash_demo(
        &["--stack", "kafka", "--kills", "1", "--events", "200000"],
        dir.path(),
        Some(stack),
    );
    assert!(text.contains("verify: 42 windows, all equal"), "{text}");
}

#[test]
fn the_crash_demo_passes_with_kills_landing() {
    let dir = tempfile::tempdir().unwrap();
    let text = crash_demo(&["--kills", "2", "--events", "1000000"], dir.path(), None);
    // At least one kill landed and a later run recovered from a checkpoint
    // the demo read off the job's metrics.
    assert!(text.contains("kill -9 #1,"), "no kill landed:\n{text}");
    assert!(
        text.lines()
            .any(|l| l.contains(": recovering from checkpoint #")),
        "no run recovered from a checkpoint:\n{text}"
    );
}
