//! `/metrics`, `/health` and `/ready` of a running job, scraped as Prometheus
//! would: the counters must be there, with values that match the input.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::watch::Watched;
use common::*;

fn get(addr: &str, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_string(), body.to_string())
}

fn value(body: &str, name: &str) -> f64 {
    body.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{body}"))
}

#[test]
fn a_running_job_serves_metrics_health_and_readiness() {
    let tmp = tempfile::tempdir().unwrap();
    let data = make_dataset(
        &tmp.path().join("in"),
        &Shape {
            per_partition: 3_000,
            ..Shape::default()
        },
    );
    let file_list = data.dir.display().to_string();
    // Unbounded: the job reads the files, then waits for more, and stays up.
    let child = spawn(&mut streamforge(&[
        "run",
        "--source",
        &format!("files:{file_list}"),
        "--state-dir",
        tmp.path().join("state").to_str().unwrap(),
        "--anomaly-log",
        tmp.path().join("a.log").to_str().unwrap(),
        "--metrics-addr",
        "127.0.0.1:0",
        "--checkpoint-interval",
        "100ms",
        "--set",
        "window.idle_timeout=200ms",
    ]));
    // The job's own metrics say when every record is in a checkpoint; a
    // hang is a failure after the wait's deadline, with the log.
    let mut job = Watched::attach(child);
    let total = data.total() as f64;
    job.wait_until_metrics("every record read and a checkpoint committed", |job| {
        job.metric("streamforge_events_read_total") >= Some(total) && job.checkpoints() >= 1
    });
    let addr = job.address().unwrap();
    let body = get(&addr, "/metrics").1;
    assert_eq!(value(&body, "streamforge_events_read_total"), total);
    let anomalies: f64 = body
        .lines()
        .filter(|l| l.starts_with("streamforge_events_anomalous_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(anomalies as usize, data.expected_anomalies().len());
    assert!(value(&body, "streamforge_last_checkpoint_id") >= 1.0);
    assert!(body.contains("streamforge_checkpoint_duration_seconds_bucket"));
    assert!(body.contains("streamforge_checkpoint_commit_duration_seconds_bucket"));
    assert_eq!(get(&addr, "/health").0, "HTTP/1.1 200 OK");
    // Caught up with the files and the sink is fine: ready, after the next batch.
    job.wait_until_metrics("/ready answers 200", |_| {
        get(&addr, "/ready").0 == "HTTP/1.1 200 OK"
    });
    job.kill9();
}

/// A fresh state waits for the sink before reading anything (it must number
/// its rows above the sink's). That wait is the job's, and SIGTERM ends it:
/// the job exits 0 at once, having read nothing, instead of waiting for a
/// sink that may never come.
#[test]
fn a_fresh_job_waiting_for_an_unreachable_sink_stops_on_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let data = make_dataset(
        &tmp.path().join("in"),
        &Shape {
            per_partition: 100,
            ..Shape::default()
        },
    );
    let mut cmd = streamforge(&[
        "run",
        "--source",
        &format!("files:{}", data.dir.display()),
        "--sink",
        "clickhouse",
        "--state-dir",
        tmp.path().join("state").to_str().unwrap(),
        "--anomaly-log",
        tmp.path().join("a.log").to_str().unwrap(),
        "--bounded",
    ]);
    // Port 1 on loopback: connections are refused.
    cmd.env("CLICKHOUSE_URL", "http://127.0.0.1:1/");
    let mut job = LiveJob::spawn(&mut cmd);
    job.wait_for(
        "the wait for the sink",
        std::time::Duration::from_secs(60),
        |j| {
            j.log
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains("sink unreachable at start"))
        },
    );
    let (status, body) = get(&job.addr, "/ready");
    assert!(
        status.contains("503") && body.starts_with("not ready: starting"),
        "{status} {body}"
    );
    // SIGTERM, then at most 10 s for a clean exit (a job that ignores it
    // is killed, and the test fails).
    unsafe {
        libc::kill(job.child.id() as i32, libc::SIGTERM);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        if let Some(status) = job.child.try_wait().unwrap() {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            kill9(&mut job.child);
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let log = job.log.lock().unwrap().join("\n");
    assert!(status.is_some_and(|s| s.success()), "{status:?}: {log}");
}
