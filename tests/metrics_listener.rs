//! The metrics listener of `streamforge run` is on by default, can be turned
//! off, and never stops a job: a port already taken is a WARN line and the
//! job runs to its end without the listener.

mod common;

use common::*;

/// A bounded run over a small data set with `extra` flags; its stderr.
fn bounded_run(extra: &[&str]) -> String {
    bounded_run_env(extra, |_| {})
}

fn bounded_run_env(extra: &[&str], env: impl FnOnce(&mut std::process::Command)) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let data = make_dataset(
        &tmp.path().join("in"),
        &Shape {
            partitions: 2,
            per_partition: 500,
            ..Shape::default()
        },
    );
    let source = format!("files:{}", data.dir.display());
    let state = tmp.path().join("state");
    let log = tmp.path().join("a.log");
    let mut args = vec![
        "run",
        "--source",
        &source,
        "--state-dir",
        state.to_str().unwrap(),
        "--anomaly-log",
        log.to_str().unwrap(),
        "--bounded",
    ];
    args.extend_from_slice(extra);
    let mut cmd = streamforge(&args);
    env(&mut cmd);
    let out = cmd.output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        out.status.success(),
        "{args:?} failed: {}\n{log}",
        out.status
    );
    log
}

#[test]
fn a_port_already_taken_is_a_warning_and_the_job_runs_to_its_end() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let log = bounded_run(&["--metrics-addr", &addr]);
    let warning = log
        .lines()
        .find(|l| l.contains("cannot serve /metrics"))
        .unwrap_or_else(|| panic!("no warning about the taken port:\n{log}"));
    for words in [
        "WARN",
        addr.as_str(),
        "already taken",
        "the job goes on without them",
        "--metrics-addr",
    ] {
        assert!(warning.contains(words), "`{words}` missing from: {warning}");
    }
    assert!(!log.contains("serving /metrics"), "{log}");
}

#[test]
fn off_turns_the_listener_off() {
    for off in ["off", ""] {
        let log = bounded_run(&["--metrics-addr", off]);
        assert!(log.contains("metrics listener off"), "{log}");
        assert!(!log.contains("serving /metrics"), "{log}");
    }
}

#[test]
fn the_listener_is_on_by_default_on_loopback() {
    // Loopback, port 9464, in the built-in defaults and in the shipped
    // config file alike.
    let defaults = streamforge::config::Config::default();
    assert_eq!(defaults.metrics_listen_addr(), Some("127.0.0.1:9464"));
    let shipped = streamforge::config::Config::load(
        Some(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/pipeline.yaml")),
        &[],
    )
    .unwrap();
    assert_eq!(shipped.config.metrics_listen_addr(), Some("127.0.0.1:9464"));
    // A job with no flag and no override (the tests' jobs otherwise take a
    // free port each, tests/common) listens there: it serves, or, when
    // something else on this machine holds the port, says so and goes on.
    let log = bounded_run_env(&[], |cmd| {
        cmd.env_remove("STREAMFORGE__METRICS_ADDR");
    });
    let serving = log
        .lines()
        .any(|l| l.contains("serving /metrics") && l.contains("address=127.0.0.1:9464"));
    let taken = log
        .lines()
        .any(|l| l.contains("cannot serve /metrics") && l.contains("127.0.0.1:9464"));
    assert!(serving || taken, "no listener on 127.0.0.1:9464:\n{log}");
}

#[test]
fn a_malformed_address_is_a_configuration_error() {
    // A source that cannot start either way: the test fails, never hangs.
    let out = streamforge(&[
        "run",
        "--source",
        "files:/nonexistent/streamforge-test",
        "--metrics-addr",
        "localhost",
    ])
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("metrics_addr") && err.contains("host:port"),
        "{err}"
    );
}
