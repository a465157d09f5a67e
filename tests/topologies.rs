//! The topologies users really run, on the file source (no broker needed):
//! a run after a bounded run, growing inputs, a bounded run resumed after a
//! crash, and wrong clocks (issue 11). Each case from outside
//! (`tests/cases/`) is checked against its own expected table; each family
//! of inputs around it against the independent oracle of `common`.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::stack::ok;
use common::*;

/// 2024-01-01T00:00:00Z.
const T0: i64 = 1_704_067_200_000;

fn line(id: &str, user: &str, cents: u64, t_ms: i64) -> String {
    // Keys in another order than ours, spaces, RFC 3339 with an offset: a
    // producer's style, not the generator's.
    let t = chrono_like(t_ms);
    format!(
        r#"{{"user_id": "{user}", "event_time": "{t}", "amount": "{}.{:02}", "event_id": "{id}", "order_id": "o-{id}"}}"#,
        cents / 100,
        cents % 100
    )
}

/// RFC 3339 in UTC+01:00, written without the crate's time code.
fn chrono_like(t_ms: i64) -> String {
    let local = t_ms + 3_600_000;
    let days = local.div_euclid(86_400_000);
    let rem = local.rem_euclid(86_400_000);
    // 2024-01-01 is day 19723; every test here stays within January 2024.
    let day = days - 19_723 + 1;
    assert!((1..=31).contains(&day), "test times stay in January 2024");
    format!(
        "2024-01-{day:02}T{:02}:{:02}:{:02}.{:03}+01:00",
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000
    )
}

/// Lines of one partition, one event a second from `from` (of the
/// partition's own sequence), with up to 3 s of backward jitter, and their
/// contributions for the oracle.
fn stream(p: usize, from: usize, n: usize, rng: &mut Rng) -> (Vec<String>, Vec<Counted>) {
    let mut lines = Vec::new();
    let mut counted = Vec::new();
    for i in from..from + n {
        let t = T0 + 40_000 + i as i64 * 1000 - rng.below(3001) as i64;
        let user = format!("u{}", rng.below(40));
        let cents = 100 + rng.below(10_000);
        lines.push(line(&format!("p{p}-{i}"), &user, cents, t));
        counted.push(Counted {
            t_ms: t,
            user,
            cents,
        });
    }
    (lines, counted)
}

fn append(path: &Path, lines: &[String]) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    for l in lines {
        writeln!(f, "{l}").unwrap();
    }
}

struct Dirs {
    _tmp: tempfile::TempDir,
    input: PathBuf,
    state: PathBuf,
    log: PathBuf,
}

fn dirs() -> Dirs {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    Dirs {
        state: tmp.path().join("state"),
        log: tmp.path().join("anomalies.log"),
        input,
        _tmp: tmp,
    }
}

impl Dirs {
    fn run(&self, extra: &[&str]) -> std::process::Command {
        let mut args = vec![
            "run".to_string(),
            "--source".into(),
            format!("files:{}", self.input.display()),
            "--sink".into(),
            "embedded".into(),
            "--state-dir".into(),
            self.state.display().to_string(),
            "--anomaly-log".into(),
            self.log.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        streamforge(&refs)
    }

    fn bounded(&self) {
        let out = self.run(&["--bounded"]).output().unwrap();
        ok(&out);
    }

    /// `streamforge verify`: the sink against the independent model.
    fn verify(&self) {
        run_ok(&[
            "verify",
            "--source",
            &format!("files:{}", self.input.display()),
            "--state-dir",
            self.state.to_str().unwrap(),
        ]);
    }

    fn results(&self) -> Vec<String> {
        results_lines(&run_ok(&[
            "results",
            "--state-dir",
            self.state.to_str().unwrap(),
        ]))
    }

    /// Runs live until the job has read `records` in all (processed or
    /// held back), then stops it.
    fn live_until_read(&self, records: usize) {
        let mut job = LiveJob::spawn(&mut self.run(&["--set", "window.idle_timeout=200ms"]));
        job.wait_for(
            &format!("{records} records read"),
            Duration::from_secs(60),
            |j| {
                let m = j.metrics();
                metric_sum(&m, "streamforge_events_read_total")
                    + metric_sum(&m, "streamforge_held_records")
                    >= records as f64
            },
        );
        job.stop();
    }
}

#[test]
fn continue_after_bounded_case_gives_the_expected_table() {
    let d = dirs();
    let case = case_dir("continue-after-bounded");
    let file = d.input.join("p0.jsonl");
    std::fs::copy(case.join("first.jsonl"), &file).unwrap();
    d.bounded();
    let second = std::fs::read_to_string(case.join("second.jsonl")).unwrap();
    append(
        &file,
        &second.lines().map(str::to_string).collect::<Vec<_>>(),
    );
    d.bounded();
    assert_same_results(&d.results(), &case_expected("continue-after-bounded"));
    assert!(
        anomaly_reasons(&d.log).is_empty(),
        "no record of either file is an anomaly: {:?}",
        anomaly_reasons(&d.log)
    );
    // A restart changes nothing.
    d.bounded();
    assert_same_results(&d.results(), &case_expected("continue-after-bounded"));
}

/// Three partitions growing in steps, read by bounded runs, a live run, and
/// a bounded run killed mid-way and resumed while more data arrived: the
/// table is always exactly one run over what was read, and nothing is late.
#[test]
fn bounded_and_live_runs_continue_each_other_on_growing_files() {
    let d = dirs();
    let mut rng = Rng::new(11);
    let paths: Vec<PathBuf> = (0..3)
        .map(|p| d.input.join(format!("p{p}.jsonl")))
        .collect();
    let mut read = vec![0usize; 3];
    let mut counted: Vec<Counted> = Vec::new();
    let mut grow = |sizes: [usize; 3], counted: &mut Vec<Counted>, read: &mut Vec<usize>| {
        for p in 0..3 {
            let (lines, c) = stream(p, read[p], sizes[p], &mut rng);
            append(&paths[p], &lines);
            counted.extend(c);
            read[p] += sizes[p];
        }
    };

    // A backfill, then the daily catch-up: bounded twice.
    grow([300, 250, 280], &mut counted, &mut read);
    d.bounded();
    assert_same_results(&d.results(), &window_lines(counted.clone()));
    grow([120, 140, 100], &mut counted, &mut read);
    d.bounded();
    assert_same_results(&d.results(), &window_lines(counted.clone()));

    // Then live for a while: it reads what was appended.
    grow([200, 200, 200], &mut counted, &mut read);
    d.live_until_read(600);
    // A live run emits only what the watermark reached; the next bounded
    // run emits the rest.
    grow([2_000, 2_100, 1_900], &mut counted, &mut read);
    let through_c = counted.clone();

    // A bounded run that crashes at its first checkpoint, before its end...
    let crashed = d
        .run(&[
            "--bounded",
            "--checkpoint-events",
            "500",
            "--set",
            "batch_size=200",
        ])
        // At its first durable checkpoint, which always records the end
        // offsets: the run's own end commit comes after it. (The N-th
        // commit is no fixed point: barriers due while a commit is in
        // flight are deferred, so a fast run may reach its end first.)
        .env("FAILPOINTS", "job::barrier::after_commit=return")
        .output()
        .unwrap();
    assert!(!crashed.status.success(), "the failpoint must stop the run");
    let inspect = run_ok(&[
        "checkpoint",
        "inspect",
        "--state-dir",
        d.state.to_str().unwrap(),
    ]);
    let inspect = String::from_utf8_lossy(&inspect.stdout).to_string();
    assert!(
        inspect.contains("bounded run      in progress"),
        "the crash must land mid-run:\n{inspect}"
    );
    // ... while more data arrives; resumed, it stops where it would have.
    grow([50, 50, 50], &mut counted, &mut read);
    d.bounded();
    assert_same_results(&d.results(), &window_lines(through_c));
    // The next bounded run reads the rest.
    d.bounded();
    assert_same_results(&d.results(), &window_lines(counted));
    let reasons = anomaly_reasons(&d.log);
    assert!(reasons.is_empty(), "nothing is late or wrong: {reasons:?}");
    d.verify();
}

#[test]
fn far_future_case_gives_the_expected_table() {
    let d = dirs();
    let case = case_dir("far-future");
    for p in ["p0.jsonl", "p1.jsonl"] {
        std::fs::copy(case.join(p), d.input.join(p)).unwrap();
    }
    d.live_until_read(600);
    d.bounded();
    assert_same_results(&d.results(), &case_expected("far-future"));
    assert_eq!(
        anomaly_reasons(&d.log),
        vec![("implausible_event_time".to_string(), 0, 0)]
    );
    d.verify();
}

/// Where in the stream a wrong clock strikes, and by how much.
struct WrongClock {
    partition: usize,
    /// Index among the partition's lines.
    at: usize,
    ahead_ms: i64,
}

/// Two partitions of in-order events with wrong-clock records inserted:
/// every in-order record is counted, every wrong one is
/// `implausible_event_time`, live or bounded, in one run or two.
#[test]
fn a_wrong_clock_never_poisons_a_partition() {
    let year = 365 * 86_400_000;
    let cases = [
        // The first record of a partition, decades ahead.
        WrongClock {
            partition: 0,
            at: 0,
            ahead_ms: 66 * year,
        },
        // In the middle of the other partition.
        WrongClock {
            partition: 1,
            at: 150,
            ahead_ms: 2 * year,
        },
        // Ten minutes ahead: within an hour, but a jump that would make the
        // records after it late.
        WrongClock {
            partition: 0,
            at: 77,
            ahead_ms: 600_000,
        },
        // The very last record of a partition.
        WrongClock {
            partition: 1,
            at: 300,
            ahead_ms: 5 * year,
        },
    ];
    for (n, wrong) in cases.iter().enumerate() {
        for live_first in [false, true] {
            let d = dirs();
            let mut rng = Rng::new(100 + n as u64);
            let mut counted = Vec::new();
            let mut expected_anomalies = Vec::new();
            for p in 0..2 {
                let (mut lines, c) = stream(p, 0, 300, &mut rng);
                let mut c: Vec<Option<Counted>> = c.into_iter().map(Some).collect();
                if p == wrong.partition {
                    let base = T0 + 40_000 + wrong.at as i64 * 1000;
                    let t = base + wrong.ahead_ms;
                    let bad = if t < T0 + 20 * 86_400_000 {
                        line(&format!("bad-{p}"), "u-bad", 99_999, t)
                    } else {
                        // Beyond the test's calendar: epoch milliseconds.
                        format!(
                            r#"{{"event_id": "bad-{p}", "order_id": "o", "user_id": "u-bad", "amount": 999.99, "event_time": {t}}}"#
                        )
                    };
                    lines.insert(wrong.at, bad);
                    c.insert(wrong.at, None);
                    expected_anomalies.push((
                        "implausible_event_time".to_string(),
                        p as u32,
                        wrong.at as u64,
                    ));
                }
                append(&d.input.join(format!("p{p}.jsonl")), &lines);
                counted.extend(c.into_iter().flatten());
            }
            if live_first {
                d.live_until_read(601);
            }
            d.bounded();
            assert_same_results(&d.results(), &window_lines(counted));
            assert_eq!(
                anomaly_reasons(&d.log),
                expected_anomalies,
                "case {n}, live first: {live_first}"
            );
        }
    }
}

/// A producer whose clock is three minutes fast, interleaved at random
/// with right ones on every partition: about one record in ten, and now and
/// then two or three of its records in a row. Each is
/// `implausible_event_time` (the right records after it outnumber those that
/// agree with it), and every right record is counted, in a live run as in a
/// bounded one; verify's model agrees.
#[test]
fn a_wrong_clock_interleaved_with_right_ones_never_poisons_its_partitions() {
    for live_first in [false, true] {
        let d = dirs();
        let mut rng = Rng::new(41);
        let mut counted = Vec::new();
        let mut expected_anomalies = Vec::new();
        let (mut read, mut adjacent) = (0, 0);
        for p in 0..2 {
            let (right, c) = stream(p, 0, 600, &mut rng);
            let mut lines = Vec::new();
            for (i, (l, c)) in right.into_iter().zip(c).enumerate() {
                // 1/12 of the gaps hold wrong records: one, two or three.
                let run = if rng.chance(83) { 1 + rng.below(3) } else { 0 };
                adjacent += (run > 1) as usize;
                for k in 0..run as i64 {
                    let t = c.t_ms + 180_000 + k * 300;
                    expected_anomalies.push((
                        "implausible_event_time".to_string(),
                        p as u32,
                        lines.len() as u64,
                    ));
                    lines.push(line(&format!("fast-{p}-{i}-{k}"), "u-fast", 4_200, t));
                }
                lines.push(l);
                counted.push(c);
            }
            read += lines.len();
            append(&d.input.join(format!("p{p}.jsonl")), &lines);
        }
        assert!(adjacent >= 10, "the data must hold wrong records in a row");
        expected_anomalies.sort();
        if live_first {
            d.live_until_read(read);
        }
        d.bounded();
        assert_same_results(&d.results(), &window_lines(counted));
        let mut got = anomaly_reasons(&d.log);
        got.sort();
        assert_eq!(got, expected_anomalies, "live first: {live_first}");
        // verify's independent model applies the same rule.
        d.verify();
    }
}

/// A real jump: a partition quiet for ten minutes, then on again. The
/// records after the jump confirm it (five that agree), every record is
/// counted, and the job says at WARN where its event time jumped (a wrong
/// clock that got through would show there).
#[test]
fn a_real_jump_of_a_partition_is_confirmed_counted_and_logged() {
    let d = dirs();
    let mut rng = Rng::new(5);
    let (mut lines, mut counted) = stream(0, 0, 120, &mut rng);
    let (later, c) = stream(0, 720, 120, &mut rng);
    lines.extend(later);
    counted.extend(c);
    append(&d.input.join("p0.jsonl"), &lines);
    let out = d.run(&["--bounded"]).output().unwrap();
    ok(&out);
    assert_same_results(&d.results(), &window_lines(counted));
    assert!(anomaly_reasons(&d.log).is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let warned: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("event time jumped ahead"))
        .collect();
    assert_eq!(warned.len(), 1, "{stderr}");
    assert!(warned[0].contains("WARN"), "{}", warned[0]);
    assert!(warned[0].contains("offset=120"), "{}", warned[0]);
    assert!(
        warned[0].contains("next records agree with it (5 more than disagree)"),
        "the line names the rule that confirmed the jump: {}",
        warned[0]
    );
}

/// A sparse partition, the only one: an order every 90 s, so each is a
/// jump of event time from the last (more than `max_time_jump`, 65 s).
/// Each is confirmed by the next, which shows time moving on past it: live,
/// the watermark reaches the second-to-last order minus the bound (five
/// records to confirm each would hold it four orders back), and no order
/// is an anomaly.
#[test]
fn a_sparse_partition_confirms_each_jump_with_its_next_record() {
    let d = dirs();
    let mut rng = Rng::new(17);
    let times: Vec<i64> = (0..20)
        .map(|i| T0 + 40_000 + i * 90_000 + rng.below(2_000) as i64)
        .collect();
    let lines: Vec<String> = times
        .iter()
        .enumerate()
        .map(|(i, t)| line(&format!("sparse-{i}"), "u-s", 1_000 + i as u64, *t))
        .collect();
    append(&d.input.join("p0.jsonl"), &lines);
    let want_s = (times[18] - 5_000) as f64 / 1000.0;
    let mut job = LiveJob::spawn(&mut d.run(&["--set", "window.idle_timeout=200ms"]));
    job.wait_for(
        &format!("the watermark at the 19th order minus the bound ({want_s} s)"),
        Duration::from_secs(60),
        |j| j.metric("streamforge_watermark_seconds") >= want_s,
    );
    // The last order waits: nothing after it shows time moving on.
    assert!(job.metric("streamforge_watermark_seconds") <= (times[19] - 65_000) as f64 / 1000.0);
    job.stop();
    d.bounded();
    let counted = times.iter().enumerate().map(|(i, t)| Counted {
        t_ms: *t,
        user: "u-s".to_string(),
        cents: 1_000 + i as u64,
    });
    assert_same_results(&d.results(), &window_lines(counted));
    assert!(anomaly_reasons(&d.log).is_empty());
}

/// A producer five minutes behind the others on a partition, a fifth of
/// its records: each is `late_event`, and the job says at WARN what share
/// of what it read was late, once (it repeats at most once a minute).
#[test]
fn a_high_share_of_late_records_is_said_at_warn() {
    let d = dirs();
    let mut rng = Rng::new(9);
    let (right, counted) = stream(0, 400, 2_000, &mut rng);
    let mut lines = Vec::new();
    let mut late = 0;
    for (i, (l, c)) in right.into_iter().zip(&counted).enumerate() {
        lines.push(l);
        if i % 4 == 0 {
            lines.push(line(&format!("behind-{i}"), "u-b", 100, c.t_ms - 300_000));
            late += 1;
        }
    }
    append(&d.input.join("p0.jsonl"), &lines);
    let out = d
        .run(&["--bounded", "--checkpoint-events", "500"])
        .output()
        .unwrap();
    ok(&out);
    assert_same_results(&d.results(), &window_lines(counted));
    let reasons = anomaly_reasons(&d.log);
    assert_eq!(reasons.len(), late);
    assert!(reasons.iter().all(|(r, _, _)| r == "late_event"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let warned: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("were late_event"))
        .collect();
    assert_eq!(warned.len(), 1, "{stderr}");
    assert!(warned[0].contains("WARN") && warned[0].contains("% of the records"));
}

#[test]
fn poison_rows_case_on_files_stores_every_valid_window() {
    let d = dirs();
    std::fs::copy(
        case_dir("poison-rows").join("p0.jsonl"),
        d.input.join("p0.jsonl"),
    )
    .unwrap();
    d.bounded();
    let want = [
        r#"{"window_start": 1704067170, "window_end": 1704067230, "order_cnt": 2, "gmv_total": "12000000000000000.00", "user_cnt": 2}"#,
        r#"{"window_start": 1704067200, "window_end": 1704067260, "order_cnt": 2, "gmv_total": "12000000000000000.00", "user_cnt": 2}"#,
        r#"{"window_start": 1704067470, "window_end": 1704067530, "order_cnt": 1, "gmv_total": "5.00", "user_cnt": 1}"#,
        r#"{"window_start": 1704067500, "window_end": 1704067560, "order_cnt": 1, "gmv_total": "5.00", "user_cnt": 1}"#,
    ]
    .map(str::to_string);
    assert_same_results(&d.results(), &want);
    let anomalies = vec![
        ("event_time_out_of_range".to_string(), 0, 0),
        ("event_time_out_of_range".to_string(), 0, 1),
    ];
    assert_eq!(anomaly_reasons(&d.log), anomalies);
    d.bounded();
    assert_same_results(&d.results(), &want);
    assert_eq!(
        anomaly_reasons(&d.log),
        anomalies,
        "a restart changes nothing"
    );
}

/// The job on one thread, a manual clock and an in-memory checkpoint store
/// (what the deterministic simulator drives) computes what it computes on
/// the machine: the same rows, the same anomaly log, twice the same.
#[test]
fn the_job_runs_the_same_inline_on_a_manual_clock() {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    use streamforge::checkpoint::kv::MemoryKv;
    use streamforge::clock::ManualClock;
    use streamforge::config::{Config, SinkKind};
    use streamforge::job::{run, run_in, Environment, JobOptions};
    use streamforge::sink::embedded::EmbeddedSink;
    use streamforge::sink::Sink;
    use streamforge::source::generator::{GeneratorConfig, GeneratorSource};
    use streamforge::telemetry::Metrics;

    let tmp = tempfile::tempdir().unwrap();
    let run_once = |name: &str, env: Option<Environment>| {
        let dir = tmp.path().join(name);
        let mut cfg = Config::default();
        cfg.sink.kind = SinkKind::Embedded;
        cfg.checkpoint.state_dir = dir.join("state");
        cfg.checkpoint.interval_events = 3_000;
        cfg.anomaly_log = dir.join("anomalies.log");
        cfg.batch_size = 512;
        let generator = GeneratorConfig {
            partitions: 3,
            events_per_partition: Some(8_000),
            rate: 20,
            late_share: 0.01,
            ..GeneratorConfig::default()
        };
        let source = Box::new(GeneratorSource::new(generator).unwrap());
        let sink = Box::new(EmbeddedSink::open(&dir.join("sink")).unwrap());
        let opts = JobOptions {
            bounded: true,
            stop: Arc::new(AtomicBool::new(false)),
            progress: false,
            shutdown_grace: Duration::from_secs(1),
        };
        let metrics = Arc::new(Metrics::new());
        match env {
            Some(env) => run_in(&cfg, source, sink, &opts, metrics, env).unwrap(),
            None => run(&cfg, source, sink, &opts, metrics).unwrap(),
        };
        let rows = EmbeddedSink::open(&dir.join("sink"))
            .unwrap()
            .read_final()
            .unwrap();
        let figures: Vec<_> = rows
            .iter()
            .map(|r| (r.window_start, r.order_cnt, r.gmv_cents, r.user_cnt))
            .collect();
        let log: Vec<_> = read_anomalies(&dir.join("anomalies.log"));
        (figures, log)
    };
    let simulated = || Environment {
        clock: Arc::new(ManualClock::new(1_764_064_800_000)),
        inline: true,
        store: Some(MemoryKv::new()),
        fingerprint_seed: Some(7),
    };
    let machine = run_once("machine", None);
    assert!(machine.0.len() > 10 && !machine.1.is_empty());
    assert_eq!(run_once("inline-1", Some(simulated())), machine);
    assert_eq!(run_once("inline-2", Some(simulated())), machine);
}

/// A live input on a manual clock, scripted record by record: each record
/// becomes readable at its `at` (clock ms); a poll hands out every readable
/// record, partition after partition. Bounded, everything is readable.
struct Scripted {
    parts: Vec<Vec<(u64, String)>>,
    next: Vec<usize>,
    bounded: bool,
    clock: std::sync::Arc<streamforge::clock::ManualClock>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    until_ms: u64,
}

impl Scripted {
    fn now_ms(&self) -> u64 {
        use streamforge::clock::Clock;
        self.clock.now().as_millis() as u64
    }

    fn readable(&self, p: usize) -> bool {
        self.parts[p]
            .get(self.next[p])
            .is_some_and(|(at, _)| self.bounded || *at <= self.now_ms())
    }
}

impl streamforge::source::Source for Scripted {
    fn id(&self) -> String {
        "scripted".into()
    }
    fn source_name(&self, _partition: u32) -> &str {
        "scripted"
    }
    fn partition_count(&self) -> usize {
        self.parts.len()
    }
    fn open(
        &mut self,
        resume: &std::collections::BTreeMap<u32, u64>,
        _end: streamforge::source::End<'_>,
    ) -> Result<std::collections::BTreeMap<u32, u64>, streamforge::source::SourceError> {
        for (p, next) in self.next.iter_mut().enumerate() {
            *next = resume.get(&(p as u32)).map_or(0, |o| *o as usize);
        }
        Ok((0..self.parts.len() as u32)
            .map(|p| (p, self.next[p as usize] as u64))
            .collect())
    }
    fn poll(
        &mut self,
        batch: &mut streamforge::source::RecordBatch,
        max: usize,
        timeout: Duration,
    ) -> Result<(), streamforge::source::SourceError> {
        if !self.bounded && self.now_ms() >= self.until_ms {
            self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        for p in 0..self.parts.len() {
            while self.readable(p) && batch.len() < max {
                let o = self.next[p];
                batch.push(p as u32, o as u64, self.parts[p][o].1.as_bytes());
                self.next[p] += 1;
            }
        }
        let pause = if batch.is_empty() {
            timeout.clamp(Duration::from_millis(1), Duration::from_millis(100))
        } else {
            Duration::from_millis(1)
        };
        self.clock.advance(pause);
        Ok(())
    }
    fn state(&self, partition: u32) -> streamforge::source::PartitionState {
        use streamforge::source::PartitionState;
        match (self.readable(partition as usize), self.bounded) {
            (true, _) => PartitionState::Backlog,
            (false, true) => PartitionState::Finished,
            (false, false) => PartitionState::CaughtUp,
        }
    }
}

/// A wrong clock in a partition that watermark alignment holds back, with
/// in-order records behind it that decide it, while another partition runs
/// far ahead: the partition has a backlog, so it never goes idle and the
/// watermark never passes the records behind the wrong clock (found by the
/// simulator: the partition counted as caught up, went idle together with
/// the slowest one, and its in-order records came out `late_event`). Then a
/// bounded run on the same state: the table is one run over the valid
/// records, and the wrong clock is the only anomaly.
///
/// And the same when the second record that rejects the wrong clock comes
/// only after the idle timeout: the partition then waits for its own input
/// and goes idle, but the record behind the wrong clock caps the watermark
/// as if it had been read.
#[test]
fn records_behind_a_wrong_clock_held_by_alignment_are_never_late() {
    for second_at in [1_000, 5_000] {
        records_behind_a_wrong_clock(second_at);
    }
}

fn records_behind_a_wrong_clock(second_at: u64) {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    use streamforge::checkpoint::kv::MemoryKv;
    use streamforge::clock::ManualClock;
    use streamforge::config::{Config, SinkKind};
    use streamforge::job::{run_in, Environment, JobOptions};
    use streamforge::sink::embedded::EmbeddedSink;
    use streamforge::sink::Sink;
    use streamforge::telemetry::Metrics;

    // (clock ms it becomes readable, event time after T0) per partition:
    // partition 0 is the slowest; 1 runs far ahead, its records held by
    // alignment; 2 moves just past the alignment drift, then a record ten
    // minutes ahead arrives with two in-order records that reject it.
    let wrong = (1_000, 614_000);
    let script: [Vec<(u64, i64)>; 3] = [
        vec![(0, 1_000), (0, 2_000), (1_000, 3_000)],
        vec![
            (0, 5_000),
            (0, 5_500),
            (1_000, 12_000),
            (1_000, 40_000),
            (1_000, 60_000),
            (1_000, 100_000),
            (1_000, 100_500),
        ],
        vec![
            (0, 6_000),
            (0, 6_500),
            (1_000, 14_000),
            wrong,
            (1_000, 14_500),
            (second_at, 15_000),
        ],
    ];
    let mut parts = Vec::new();
    let mut counted = Vec::new();
    for (p, records) in script.iter().enumerate() {
        let mut lines = Vec::new();
        for (o, &(at, dt)) in records.iter().enumerate() {
            let (user, cents) = (format!("u{}", (p * 7 + o) % 5), 1_000 + 37 * o as u64);
            lines.push((at, line(&format!("e{p}-{o}"), &user, cents, T0 + dt)));
            if (at, dt) != wrong {
                counted.push(Counted {
                    t_ms: T0 + dt,
                    user,
                    cents,
                });
            }
        }
        parts.push(lines);
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = Config::default();
    cfg.sink.kind = SinkKind::Embedded;
    cfg.checkpoint.state_dir = tmp.path().join("state");
    cfg.anomaly_log = tmp.path().join("anomalies.log");
    cfg.window.idle_timeout = streamforge::setting::Dur(Duration::from_secs(1));
    cfg.window.alignment_drift = streamforge::setting::Dur(Duration::from_secs(10));
    let store = MemoryKv::new();
    for bounded in [false, true] {
        let clock = Arc::new(ManualClock::new(T0 + 200_000));
        let stop = Arc::new(AtomicBool::new(false));
        let source = Box::new(Scripted {
            parts: parts.clone(),
            next: vec![0; parts.len()],
            bounded,
            clock: clock.clone(),
            stop: stop.clone(),
            until_ms: 20_000,
        });
        let sink = Box::new(EmbeddedSink::open(&tmp.path().join("sink")).unwrap());
        let opts = JobOptions {
            bounded,
            stop,
            progress: false,
            shutdown_grace: Duration::from_secs(1),
        };
        let env = Environment {
            clock,
            inline: true,
            store: Some(store.clone()),
            fingerprint_seed: Some(7),
        };
        run_in(&cfg, source, sink, &opts, Arc::new(Metrics::new()), env).unwrap();
        assert_eq!(
            anomaly_reasons(&cfg.anomaly_log),
            vec![("implausible_event_time".to_string(), 2, 3)],
            "bounded: {bounded}, second record at {second_at} ms"
        );
    }
    let rows = EmbeddedSink::open(&tmp.path().join("sink"))
        .unwrap()
        .read_final()
        .unwrap();
    let got: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "{{\"window_start\": {}, \"window_end\": {}, \"order_cnt\": {}, \"gmv_total\": \"{}.{:02}\", \"user_cnt\": {}}}",
                r.window_start,
                r.window_end,
                r.order_cnt,
                r.gmv_cents / 100,
                r.gmv_cents % 100,
                r.user_cnt
            )
        })
        .collect();
    assert_same_results(&got, &window_lines(counted));
}
