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

/// The same files named another way (`dir`, `./dir`, the absolute path,
/// from another working directory) are the same input: a resume under any
/// of those names is this job's, and its anomaly records name the files
/// as the first run did. The log once named them as typed, so a resume
/// spelled otherwise was refused as another job's log.
#[test]
fn a_resume_may_spell_the_input_otherwise() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let shape = |seed: u64| Shape {
        per_partition: 400,
        seed,
        ..Shape::default()
    };
    make_dataset(&data, &shape(1));
    let (state, log) = (tmp.path().join("state"), tmp.path().join("anomalies.log"));
    let run_in = |cwd: &Path, source: &str| {
        let out = bounded_embedded(source, &state, &log)
            .current_dir(cwd)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{source}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let grow = |seed: u64| {
        let more = make_dataset(&tmp.path().join(format!("more-{seed}")), &shape(seed));
        for (p, part) in more.partitions.iter().enumerate() {
            let mut lines = String::new();
            for (line, _) in part {
                lines.push_str(line);
                lines.push('\n');
            }
            let path = data.join(format!("part-{p}.jsonl"));
            let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
            std::io::Write::write_all(&mut f, lines.as_bytes()).unwrap();
        }
    };
    run_in(tmp.path(), "files:data");
    grow(21);
    run_in(tmp.path(), "files:./data/");
    grow(22);
    run_in(&data, &format!("files:{}", data.display()));
    run_in(&data, "files:.");
    let names: std::collections::BTreeSet<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["source"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let canonical = data.canonicalize().unwrap();
    assert!(!names.is_empty());
    for name in &names {
        assert!(
            Path::new(name).starts_with(&canonical),
            "{name} is not under {}",
            canonical.display()
        );
    }
}

/// A resume whose anomaly log is missing (another `--anomaly-log` than
/// the job ran with) is refused and creates nothing: no log, and no
/// directory for it.
#[test]
fn a_resume_without_its_log_creates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = make_dataset(
        &tmp.path().join("data"),
        &Shape {
            per_partition: 300,
            ..Shape::default()
        },
    );
    let source = format!("files:{}", data.dir.display());
    let state = tmp.path().join("state");
    assert!(run(&source, &state, &tmp.path().join("logs/anomalies.log"))
        .status
        .success());
    let elsewhere = tmp.path().join("elsewhere/anomalies.log");
    let out = run(&source, &state, &elsewhere);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("does not exist, but the checkpoint covers"),
        "{stderr}"
    );
    assert!(!tmp.path().join("elsewhere").exists(), "{stderr}");
}
