//! Configuration errors as a user meets them: each names the key, where its
//! value came from (file, environment variable, flag) and what to do; every
//! problem of a file at once; never a secret's value.

use std::process::Command;

/// The error `streamforge checkpoint list` (which loads the configuration
/// first) prints with `args` and `env`, run in an empty directory.
fn config_error(args: &[&str], env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_streamforge"));
    cmd.args(["checkpoint", "list", "--state-dir", "st"])
        .args(args)
        .current_dir(dir.path());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(!out.status.success(), "{args:?} {env:?} was accepted");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn a_bad_flag_value_names_the_key_and_the_flag() {
    let err = config_error(&["--set", "window.size=5x"], &[]);
    assert!(err.contains("window.size (from --set window.size"), "{err}");
    assert!(err.contains("unknown unit `x`"), "{err}");
}

#[test]
fn a_bad_variable_names_the_key_and_the_variable() {
    let err = config_error(&[], &[("STREAMFORGE__WINDOW__SIZE", "abc")]);
    assert!(
        err.contains("window.size (from environment variable STREAMFORGE__WINDOW__SIZE)"),
        "{err}"
    );
    assert!(err.contains("not a duration"), "{err}");
}

#[test]
fn every_problem_of_a_file_is_reported_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    std::fs::write(&file, "window:\n  sise: 60s\n  slide: 3O\nfoo: 1\n").unwrap();
    let path = file.display().to_string();
    let err = config_error(&["--config", &path], &[]);
    for key in ["window.sise", "window.slide", "foo"] {
        assert!(
            err.contains(&format!("{key} (from {path})")),
            "{key}:\n{err}"
        );
    }
}

#[test]
fn a_bare_number_of_seconds_is_explained() {
    let err = config_error(&["--set", "window.size=60"], &[]);
    assert!(err.contains("read as milliseconds"), "{err}");
    assert!(err.contains("write 60s"), "{err}");
}

#[test]
fn a_kafka_property_from_a_variable_is_the_dotted_property_and_a_secret_never_prints() {
    // The property lands under its dotted name: the configuration loads, and
    // the error is the next one (here, a bad window size), not a type error.
    let env = [("STREAMFORGE__KAFKA__PROPERTIES__SASL__PASSWORD", "hunter2")];
    let err = config_error(&["--set", "window.size=5x"], &env);
    assert!(!err.contains("invalid type"), "{err}");
    assert!(err.contains("window.size"), "{err}");
    // A secret that does not parse is named, its value is not.
    let env = [(
        "STREAMFORGE__KAFKA__PROPERTIES",
        "{sasl.password: [hunter2]}",
    )];
    let err = config_error(&[], &env);
    assert!(err.contains("kafka.properties"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn a_password_setting_says_where_passwords_come_from_and_never_prints_it() {
    let err = config_error(&["--set", "clickhouse.password=hunter2-secret"], &[]);
    assert!(err.contains("clickhouse.password (from --set"), "{err}");
    assert!(
        err.contains("password_env") && err.contains("password_file"),
        "{err}"
    );
    assert!(err.contains("A password is never a setting"), "{err}");
    assert!(!err.contains("hunter2-secret"), "{err}");
}

#[test]
fn a_missing_section_file_names_the_key_that_points_at_it() {
    let err = config_error(&["--set", "sink.clickhouse_config=nowhere/ch.yaml"], &[]);
    assert!(
        err.contains("sink.clickhouse_config (from --set sink.clickhouse_config"),
        "{err}"
    );
    assert!(err.contains("nowhere/ch.yaml"), "{err}");
    let err = config_error(&[], &[("STREAMFORGE__SOURCE__KAFKA_CONFIG", "gone.yaml")]);
    assert!(
        err.contains(
            "source.kafka_config (from environment variable STREAMFORGE__SOURCE__KAFKA_CONFIG)"
        ),
        "{err}"
    );
}

/// A value that reads but fails a check names where it came from too; one
/// the config file sets says nothing more (the header names the file).
#[test]
fn a_value_that_fails_a_check_names_where_it_came_from() {
    let err = config_error(&["--set", "checkpoint.keep=0"], &[]);
    assert!(
        err.contains("checkpoint.keep must be at least 1 (from --set checkpoint.keep"),
        "{err}"
    );
    let err = config_error(&[], &[("STREAMFORGE__BATCH_SIZE", "0")]);
    assert!(
        err.contains(
            "batch_size must be at least 1 (from environment variable STREAMFORGE__BATCH_SIZE)"
        ),
        "{err}"
    );
    let err = config_error(
        &["--set", "window.size=60s", "--set", "window.slide=45s"],
        &[],
    );
    assert!(
        err.contains(
            "window.size (60 s) must be a whole multiple of window.slide (45 s): a window is whole panes of one slide (from --set window.size"
        ),
        "{err}"
    );
    // Only the second key of the problem set by a flag: its origin.
    let err = config_error(&["--set", "window.slide=7s"], &[]);
    assert!(
        err.contains(
            "window.slide (7 s): a window is whole panes of one slide (from --set window.slide"
        ),
        "{err}"
    );
}

#[test]
fn a_files_source_without_files_says_to_name_them() {
    for spec in ["files:", "files:,"] {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_streamforge"))
            .args(["run", "--bounded", "--state-dir", "st", "--source", spec])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(
            err.contains(&format!("--source {spec}: name the input after `files:`")),
            "{err}"
        );
        assert!(
            !dir.path().join("st").exists(),
            "nothing was created: {err}"
        );
    }
}

/// A run says which configuration it read: outside the repository there
/// is no config/pipeline.yaml, and the built-in defaults apply.
#[test]
fn a_run_says_which_configuration_it_read() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("in")).unwrap();
    std::fs::write(dir.path().join("in/p0.jsonl"), "{}\n").unwrap();
    std::fs::write(dir.path().join("mine.yaml"), "batch_size: 64\n").unwrap();
    let run = |config: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_streamforge"));
        cmd.args([
            "run",
            "--bounded",
            "--source",
            "files:in",
            "--metrics-addr",
            "off",
        ])
        .current_dir(dir.path())
        .env_remove("STREAMFORGE_CONFIG");
        if let Some(file) = config {
            cmd.args(["--config", file]);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::remove_dir_all(dir.path().join("state")).unwrap();
        std::fs::remove_dir_all(dir.path().join("logs")).unwrap();
        String::from_utf8(out.stderr).unwrap()
    };
    let stderr = run(None);
    assert!(
        stderr.contains("configuration: built-in defaults"),
        "{stderr}"
    );
    let stderr = run(Some("mine.yaml"));
    assert!(
        stderr.contains("configuration read file=mine.yaml"),
        "{stderr}"
    );
}
