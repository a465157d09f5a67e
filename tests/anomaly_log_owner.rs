//! A resumed job cuts its anomaly log back to the length its checkpoint
//! covers. Two jobs started from one directory share the default
//! `logs/anomalies.log`: the second one's fresh start moves the first one's
//! log aside, and the first one's restart must then refuse to cut the
//! second one's log (it once cut a 2.9 MB log of another input down to its
//! own 11 kB, exit 0), name the file moved aside, and leave the log as it
//! is. With its own log put back, it resumes.

mod common;

use std::path::Path;

use common::*;

fn run(source: &str, state: &Path, log: &Path) -> std::process::Output {
    bounded_embedded(source, state, log).output().unwrap()
}

#[test]
fn a_job_never_cuts_another_jobs_anomaly_log() {
    let tmp = tempfile::tempdir().unwrap();
    let small = Shape {
        per_partition: 2_000,
        ..Shape::default()
    };
    let big = Shape {
        per_partition: 6_000,
        seed: 11,
        ..Shape::default()
    };
    let a = make_dataset(&tmp.path().join("a"), &small);
    let b = make_dataset(&tmp.path().join("b"), &big);
    let (source_a, source_b) = (
        format!("files:{}", a.dir.display()),
        format!("files:{}", b.dir.display()),
    );
    let log = tmp.path().join("logs/anomalies.log");
    let (state_a, state_b) = (tmp.path().join("state-a"), tmp.path().join("state-b"));

    assert!(run(&source_a, &state_a, &log).status.success());
    let log_a = std::fs::read(&log).unwrap();
    assert!(!log_a.is_empty());
    assert!(run(&source_b, &state_b, &log).status.success());
    let log_b = std::fs::read(&log).unwrap();
    assert!(log_b.len() > log_a.len(), "B's log is the longer one");
    let aside: Vec<_> = std::fs::read_dir(tmp.path().join("logs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p != &log)
        .collect();
    assert_eq!(aside.len(), 1, "B's fresh start moved A's log aside");

    // A resumes over B's log: refused, the log untouched.
    let out = run(&source_a, &state_a, &log);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "A cut B's log: {stderr}");
    assert!(
        stderr.contains("is not the one this state directory's job wrote")
            && stderr.contains(&aside[0].display().to_string()),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&log).unwrap(), log_b, "B's log was changed");

    // B still resumes over its own log, which its checkpoint covers whole.
    assert!(run(&source_b, &state_b, &log).status.success());
    // A's log back in place: A resumes over it.
    std::fs::rename(&log, tmp.path().join("b.log")).unwrap();
    std::fs::rename(&aside[0], &log).unwrap();
    let out = run(&source_a, &state_a, &log);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(&log).unwrap(), log_a);
}
