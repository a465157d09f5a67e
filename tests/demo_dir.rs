//! `streamforge demo --dir`: the demo clears only what an earlier demo
//! wrote there, and refuses a directory that holds anything else, leaving
//! it untouched.

use std::path::Path;
use std::process::{Command, Output};

fn demo(dir: &str, cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_streamforge"))
        .current_dir(cwd)
        .args([
            "demo",
            "--dir",
            dir,
            "--partitions",
            "1",
            "--events-per-partition",
            "500",
            "--metrics-addr",
            "off",
        ])
        .output()
        .unwrap()
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_directory_with_files_of_its_own_is_refused_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("mine");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("notes.txt"), "precious").unwrap();
    std::fs::create_dir_all(dir.join("state")).unwrap();
    let out = demo(dir.to_str().unwrap(), tmp.path());
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("which the demo did not write"), "{stderr}");
    assert!(stderr.contains("--dir"), "{stderr}");
    assert_eq!(names(&dir), ["notes.txt", "state", "sub"]);
    assert_eq!(
        std::fs::read_to_string(dir.join("notes.txt")).unwrap(),
        "precious"
    );
}

#[test]
fn a_demo_directory_is_cleared_and_reused_also_as_the_current_directory() {
    let tmp = tempfile::tempdir().unwrap();
    for _ in 0..2 {
        let out = demo(".", tmp.path());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(names(tmp.path()), ["logs", "state"]);
        // Each run starts afresh and reads every record: a resume of the
        // finished first run would read none.
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(said.contains(" 500 records"), "{said}");
    }
}
