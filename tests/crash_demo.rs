//! The crash-and-restart demo (`scripts/crash_demo.sh`), run as a newcomer
//! runs it, on the embedded stack: it kills the job with SIGKILL at random
//! moments, restarts it, and must end with PASS (its own `verify` against an
//! independent recomputation, and the anomaly log checked line by line).
//! It reads the job's progress from the job's metrics, so this also proves
//! the metrics the demo relies on.

use std::process::Command;

#[test]
fn the_crash_demo_passes_with_kills_landing() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/crash_demo.sh"
    ))
    .args(["--kills", "2", "--events", "1000000", "--dir"])
    .arg(dir.path())
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
    // At least one kill landed and a later run recovered from a checkpoint
    // the demo read off the job's metrics.
    assert!(text.contains("kill -9 #1,"), "no kill landed:\n{text}");
    assert!(
        text.lines()
            .any(|l| l.contains(": recovering from checkpoint #")),
        "no run recovered from a checkpoint:\n{text}"
    );
}
