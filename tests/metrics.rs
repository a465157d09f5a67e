//! `/metrics`, `/health` and `/ready` of a running job, scraped as Prometheus
//! would: the counters must be there, with values that match the input.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

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
    let mut child = spawn(&mut streamforge(&[
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
    // A watchdog turns a hang into a failure: if the job never says what the
    // test waits for, it is killed and the log ends.
    let pid = child.id() as i32;
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(120));
        unsafe { libc::kill(pid, libc::SIGKILL) };
    });
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut addr = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.split("address=").nth(1) {
            addr = Some(rest.split_whitespace().next().unwrap().to_string());
            break;
        }
    }
    let addr = addr.expect("the job did not say where it serves metrics");
    // Wait (on the job's own log) until every record is in a checkpoint.
    let total = data.total() as f64;
    let mut body = String::new();
    for line in lines.by_ref() {
        if line.unwrap().contains("checkpoint committed") {
            body = get(&addr, "/metrics").1;
            if value(&body, "streamforge_events_read_total") >= total {
                break;
            }
        }
    }
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
    let mut ready = String::new();
    for line in lines.by_ref() {
        if line.unwrap().contains("checkpoint committed") || ready.is_empty() {
            ready = get(&addr, "/ready").0;
            if ready.contains("200") {
                break;
            }
        }
    }
    assert_eq!(ready, "HTTP/1.1 200 OK");
    kill9(&mut child);
}
