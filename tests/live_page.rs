//! The live page (issue 17), looked at in a real browser: Debian's
//! Chromium, headless, against a running job.
//!
//! The job reads a data set whose every line's fate is known (tests/common)
//! from files, live (not bounded), into the embedded sink. Once it has read
//! everything and its watermark stands at the end of the input, the page
//! must show, as a person sees it, exactly the windows an independent
//! recomputation gives below that watermark; after the job stops,
//! `streamforge results` must print the same numbers. The anomalies by
//! reason, the partitions and the checkpoints are checked on the same page.
//!
//! The screenshot goes to `$CARGO_TARGET_TMPDIR/live-page.png`, and to
//! `docs/img/live-page.png` (the one README.md shows) when
//! `STREAMFORGE_UPDATE_SCREENSHOT=1`: a file in the repository is not
//! rewritten by every run of the suite.
//!
//! `streamforge demo` keeps the page up after its run until Enter or
//! Ctrl-C at a terminal (a pseudo-terminal from `script` here), and does
//! not wait when its standard input is not a terminal.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::browser::{attr, table_rows, tag_by_id, text_by_id, Chromium};
use common::watch::{Watched, WAIT_DEADLINE};
use common::{make_dataset, results_lines, run_ok, spawn, streamforge, Shape};

/// The screenshot's size: the whole page at a common laptop width.
const SHOT: (u32, u32) = (1280, 980);

/// `1,234,567`, as the page writes counts.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `2025-11-25 10:00:00`, as the page writes a window start (UTC).
fn page_time(epoch_s: i64) -> String {
    common::rfc3339(epoch_s * 1000, 0)[..19].replace('T', " ")
}

/// The windows table as SPEC §8 result lines, read from what the page
/// shows: the visible start, counts, GMV and users (the window bounds in
/// epoch seconds from the row's attributes, checked against the visible
/// start).
fn page_windows(dom: &str) -> Vec<String> {
    let mut rows: Vec<(i64, String)> = table_rows(dom, "windows")
        .into_iter()
        .filter_map(|(attrs, cells)| {
            let start: i64 = attr(&attrs, "data-window-start")?.parse().unwrap();
            let end: i64 = attr(&attrs, "data-window-end")?.parse().unwrap();
            assert_eq!(cells[0], page_time(start), "row {attrs}: {cells:?}");
            let line = format!(
                "{{\"window_start\": {start}, \"window_end\": {end}, \"order_cnt\": {}, \"gmv_total\": \"{}\", \"user_cnt\": {}}}",
                cells[2].replace(',', ""),
                cells[3].replace(',', ""),
                cells[4].replace(',', "")
            );
            Some((start, line))
        })
        .collect();
    rows.sort();
    rows.into_iter().map(|(_, line)| line).collect()
}

fn window_end_of(line: &str) -> i64 {
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    v["window_end"].as_i64().unwrap()
}

/// Looks at the page until its windows are `expected` (the sink
/// acknowledges the last ones at the next checkpoint, the page shows them
/// at its next poll); returns that DOM.
fn page_showing(browser: &Chromium, url: &str, job: &mut Watched, expected: &[String]) -> String {
    let deadline = Instant::now() + WAIT_DEADLINE;
    loop {
        let dom = browser.dom(url);
        let shown = page_windows(&dom);
        if shown == expected {
            return dom;
        }
        if job.has_exited() || Instant::now() >= deadline {
            job.fail(&format!(
                "the page did not show the expected windows; it shows {} of {}:\n{}",
                shown.len(),
                expected.len(),
                diff(&shown, expected)
            ));
        }
    }
}

fn diff(shown: &[String], expected: &[String]) -> String {
    let mut out = Vec::new();
    for line in expected.iter().filter(|l| !shown.contains(l)).take(5) {
        out.push(format!("  expected, not shown: {line}"));
    }
    for line in shown.iter().filter(|l| !expected.contains(l)).take(5) {
        out.push(format!("  shown, not expected: {line}"));
    }
    out.join("\n")
}

/// The anomalies table: reason -> records.
fn page_anomalies(dom: &str) -> BTreeMap<String, u64> {
    table_rows(dom, "anomalies")
        .into_iter()
        .filter(|(attrs, _)| attr(attrs, "data-reason").is_some())
        .map(|(_, cells)| (cells[0].clone(), cells[1].replace(',', "").parse().unwrap()))
        .collect()
}

/// Checks the PNG's signature and size, and that it is not a blank page
/// (a page of one colour compresses to a few KB; this one has charts).
fn check_png(path: &Path) {
    let png = std::fs::read(path).unwrap();
    assert_eq!(
        &png[..8],
        b"\x89PNG\r\n\x1a\n",
        "{} is no PNG",
        path.display()
    );
    let be = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().unwrap());
    assert_eq!((be(16), be(20)), SHOT, "screenshot size");
    assert!(
        png.len() > 40_000,
        "a nearly empty screenshot: {} bytes",
        png.len()
    );
}

#[test]
fn the_page_shows_the_windows_the_sink_holds() {
    let browser = Chromium::find();
    let tmp = tempfile::tempdir().unwrap();
    // 25 minutes of event time: 50 windows. The file source reads its
    // partitions in turns of 256 lines (25.6 s here), well within the
    // margin by which the data set's very late events are late.
    let shape = Shape {
        partitions: 3,
        per_partition: 15_000,
        step_ms: 100,
        seed: 17,
        ..Shape::default()
    };
    let data = make_dataset(&tmp.path().join("in"), &shape);
    let state = tmp.path().join("state").display().to_string();
    let anomaly_log = tmp.path().join("anomalies.log").display().to_string();
    let files = format!("files:{}", data.dir.display());
    let mut job = Watched::attach(spawn(&mut streamforge(&[
        "run",
        "--source",
        &files,
        "--state-dir",
        &state,
        "--anomaly-log",
        &anomaly_log,
        "--checkpoint-interval",
        "200ms",
        "--set",
        "window.idle_timeout=500ms",
    ])));

    // Everything read and every partition idle: the watermark stands at the
    // highest event time minus the 5 s bound, and stays there.
    let last_ms = data.accepted().map(|e| e.t_ms).max().unwrap();
    let watermark_ms = last_ms - 5_000;
    job.wait_until_metrics("the watermark at the end of the input", |j| {
        j.metric("streamforge_watermark_seconds")
            .is_some_and(|s| (s * 1000.0).round() as i64 == watermark_ms)
    });
    let expected: Vec<String> = data
        .expected_results()
        .into_iter()
        .filter(|line| window_end_of(line) * 1000 <= watermark_ms)
        .collect();
    assert!(
        expected.len() > 40,
        "a data set of {} windows",
        expected.len()
    );
    let url = format!("http://{}/", job.address().unwrap());
    let dom = page_showing(&browser, &url, &mut job, &expected);

    // The rest of the page, from the same look.
    let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
    for (reason, ..) in data.expected_anomalies() {
        *reasons.entry(reason).or_default() += 1;
    }
    assert_eq!(page_anomalies(&dom), reasons, "anomalies by reason");
    assert_eq!(
        text_by_id(&dom, "events-read"),
        grouped(data.total() as u64)
    );
    let partitions = table_rows(&dom, "partitions");
    assert_eq!(partitions.len(), shape.partitions, "{partitions:?}");
    for (p, (_, cells)) in partitions.iter().enumerate() {
        assert_eq!(cells[0], p.to_string());
        assert_eq!(cells[2], "idle", "partition {p}: {cells:?}");
        assert_eq!(
            cells[3],
            grouped(shape.per_partition as u64),
            "partition {p}: {cells:?}"
        );
    }
    let checkpoints = table_rows(&dom, "checkpoints");
    assert!(
        checkpoints
            .iter()
            .any(|(attrs, _)| attr(attrs, "data-checkpoint").is_some()),
        "no checkpoint on the page: {checkpoints:?}"
    );
    assert!(
        text_by_id(&dom, "conn").starts_with("live"),
        "{}",
        text_by_id(&dom, "conn")
    );
    // It refreshes by itself: within one load (3 s of the browser's
    // virtual time) it asked the job again and drew each answer.
    let polls: u32 = attr(tag_by_id(&dom, "conn"), "data-polls")
        .expect("the page counts its polls")
        .parse()
        .unwrap();
    assert!(polls >= 2, "the page drew {polls} answer(s) in one load");
    // Each chart is drawn (uPlot puts its root inside the chart's box).
    for chart in ["chart-orders", "chart-gmv", "chart-users"] {
        let inside = dom.split(&format!("id=\"{chart}\"")).nth(1).unwrap();
        assert!(
            inside
                .split("id=\"chart-")
                .next()
                .unwrap()
                .contains("class=\"uplot"),
            "#{chart} has no chart"
        );
    }

    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("live-page.png");
    browser.screenshot(&url, &shot, SHOT.0, SHOT.1);
    check_png(&shot);
    if std::env::var_os("STREAMFORGE_UPDATE_SCREENSHOT").is_some_and(|v| v == "1") {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/img/live-page.png");
        std::fs::create_dir_all(docs.parent().unwrap()).unwrap();
        std::fs::copy(&shot, &docs).unwrap();
    }

    // Stopped, the job leaves the sink as the page showed it.
    unsafe {
        libc::kill(job.child.id() as i32, libc::SIGTERM);
    }
    let (status, log) = job.finish();
    assert!(status.success(), "the job exited {status}; log:\n{log}");
    let results = results_lines(&run_ok(&["results", "--state-dir", &state]));
    assert_eq!(
        results,
        expected,
        "streamforge results differs from the page:\n{}",
        diff(&results, &expected)
    );
}

/// `streamforge demo`'s arguments for a small run in `dir`.
fn demo_args(dir: &Path) -> Vec<String> {
    [
        "demo",
        "--dir",
        &dir.display().to_string(),
        "--partitions",
        "2",
        "--events-per-partition",
        "4000",
        "--metrics-addr",
        "127.0.0.1:0",
    ]
    .map(String::from)
    .to_vec()
}

#[test]
fn the_demo_without_a_terminal_says_where_the_page_was_and_does_not_wait() {
    let tmp = tempfile::tempdir().unwrap();
    let args = demo_args(&tmp.path().join("demo"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut child = streamforge(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + WAIT_DEADLINE;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("the demo waited with no terminal to wait for");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("Live page: http://127.0.0.1:"), "{stderr}");
    assert!(
        stdout.contains("(closed now: standard input is not a terminal)"),
        "{stdout}"
    );
}

/// `GET path` from `addr`: the body.
fn http_get(addr: &str, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_string()
}

#[test]
fn the_demo_at_a_terminal_keeps_the_page_up_until_enter() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let mut line = vec![common::bin().display().to_string()];
    line.extend(demo_args(&dir));
    let line: Vec<String> = line.iter().map(|a| format!("'{a}'")).collect();
    // `script` runs the demo on a pseudo-terminal, and passes our pipe's
    // bytes to it as typed keys.
    let mut script = Command::new("script")
        .args([
            "--quiet",
            "--return",
            "--command",
            &line.join(" "),
            "/dev/null",
        ])
        .env("STREAMFORGE_CONFIG", "/dev/null")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("running script (util-linux)");
    let (tx, lines) = std::sync::mpsc::channel();
    let out = script.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + WAIT_DEADLINE;
    let mut seen = String::new();
    let mut page = None;
    while !seen.contains("press Enter") {
        let line = lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("the demo did not say it waits for Enter:\n{seen}"));
        if let Some(url) = line.split("Live page:").nth(1) {
            page = page.or(Some(url.split_whitespace().next().unwrap().to_string()));
        }
        seen.push_str(&line);
        seen.push('\n');
    }
    let page = page.unwrap_or_else(|| panic!("no page address:\n{seen}"));
    let addr = page
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();

    // The run is over and the page is still served, with every window the
    // sink holds.
    assert!(http_get(&addr, "/").contains("<title>StreamForge"));
    let status: serde_json::Value = serde_json::from_str(&http_get(&addr, "/api/status")).unwrap();
    let state = dir.join("state").display().to_string();
    let results = results_lines(&run_ok(&["results", "--state-dir", &state]));
    let shown: Vec<String> = status["windows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            format!(
                "{{\"window_start\": {}, \"window_end\": {}, \"order_cnt\": {}, \"gmv_total\": \"{}\", \"user_cnt\": {}}}",
                w["window_start"], w["window_end"], w["order_cnt"],
                w["gmv_total"].as_str().unwrap(), w["user_cnt"]
            )
        })
        .collect();
    assert!(!results.is_empty());
    assert_eq!(shown, results);

    script.stdin.as_mut().unwrap().write_all(b"\n").unwrap();
    while script.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the demo did not end after Enter"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(script.wait().unwrap().success());
    assert!(
        std::net::TcpStream::connect(&addr).is_err(),
        "the page is still served after the demo ended"
    );
}

/// The demo's windows (its table's rows) and how long it ran.
fn demo_table(args: &[&str]) -> (Vec<String>, Duration, String) {
    let started = Instant::now();
    let out = streamforge(args).stdin(Stdio::null()).output().unwrap();
    let took = started.elapsed();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    );
    assert!(out.status.success(), "{args:?}: {stdout}\n{stderr}");
    let rows: Vec<String> = stdout
        .lines()
        .filter(|l| l.starts_with(|c: char| c.is_ascii_digit()))
        .map(str::to_string)
        .collect();
    assert!(!rows.is_empty(), "no window in the demo's table:\n{stdout}");
    (rows, took, stderr)
}

#[test]
fn the_demo_at_a_watchable_speed_is_paced_and_gives_the_same_windows() {
    let tmp = tempfile::tempdir().unwrap();
    let mut args = demo_args(&tmp.path().join("demo"));
    let (fast, ..) = demo_table(&args.iter().map(String::as_str).collect::<Vec<_>>());
    // 2 partitions x 4,000 orders at 500 per second of event time each:
    // 8 s of event time, 2 s at four times real time, however fast the
    // machine is.
    args.extend(["--speed".to_string(), "4".to_string()]);
    let (paced, took, _) = demo_table(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(took >= Duration::from_secs(2), "--speed 4 took {took:?}");
    assert_eq!(paced, fast, "pacing changed the windows");

    for bad in ["0", "-1", "NaN", "inf"] {
        let dir = tmp.path().join("refused").display().to_string();
        let speed = format!("--speed={bad}");
        let out = streamforge(&["demo", "--dir", &dir, &speed])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "--speed {bad} was accepted");
        assert!(
            err.contains("--speed must be a number above 0"),
            "{bad}: {err}"
        );
    }
}

#[test]
fn the_demo_with_its_port_taken_warns_and_runs_to_its_end() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let tmp = tempfile::tempdir().unwrap();
    let mut args = demo_args(&tmp.path().join("demo"));
    let (free, ..) = demo_table(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let at = args.iter().position(|a| a == "--metrics-addr").unwrap();
    args[at + 1] = addr.clone();
    let (rows, _, log) = demo_table(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(rows, free);
    let warning = log
        .lines()
        .find(|l| l.contains("WARN") && l.contains(&addr))
        .unwrap_or_else(|| panic!("no warning about {addr}:\n{log}"));
    for words in ["the live page", "already taken", "goes on without"] {
        assert!(warning.contains(words), "`{words}` missing from: {warning}");
    }
    assert!(!log.contains("Live page:"), "{log}");
}
