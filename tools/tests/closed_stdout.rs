//! `streamforge-tools` ends quietly when the reader of its standard output
//! goes away (`streamforge-tools bench parse | head -3`): no panic, exit 0,
//! and what it writes elsewhere (`--json`) is still written.

use std::process::{Command, Stdio};

#[test]
fn bench_output_to_a_closed_pipe_is_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("parse.json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_streamforge-tools"))
        .args(["bench", "parse", "--records", "2000", "--rounds", "1"])
        .args(["--styles", "canonical", "--json", json.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
        "{stderr}"
    );
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let rows: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert!(rows.as_array().is_some_and(|r| !r.is_empty()), "{rows}");
}
