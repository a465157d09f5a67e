//! The topologies users really run, on the real stack (Kafka KRaft and
//! ClickHouse from `scripts/stack.sh`): transactional producers, topics
//! that grow while the job reads them, wrong clocks, bounded runs resumed
//! after a crash, `start: latest` across a crash, and a topic recreated
//! under the same name (issue 11). Each case from outside (`tests/cases/`)
//! is checked against its own expected table.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;

use common::stack::{not_created_yet, ok, require_stack, stack, test_stack, unique};
use common::*;

/// The test stack's broker (tests/common/endpoints.rs).
fn brokers() -> &'static str {
    &test_stack().kafka
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn admin() -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap()
}

/// One test's topic, table, state directory and anomaly log.
struct Setup {
    tmp: tempfile::TempDir,
    topic: String,
    table: String,
    kafka_yaml: PathBuf,
}

impl Setup {
    fn new(tag: &str, partitions: usize) -> Setup {
        require_stack();
        let tmp = tempfile::tempdir().unwrap();
        let topic = unique(&format!("sf_topo_{tag}"));
        stack(&["topic", &topic, &partitions.to_string()]);
        let kafka_yaml = tmp.path().join("kafka.yaml");
        std::fs::write(
            &kafka_yaml,
            format!("brokers: {}\ntopic: {topic}\ngroup_id: {topic}-group\npartition_discovery_interval: 500ms\n", brokers()),
        )
        .unwrap();
        Setup {
            table: unique("topo"),
            topic,
            kafka_yaml,
            tmp,
        }
    }

    fn state(&self) -> PathBuf {
        self.tmp.path().join("state")
    }

    fn log(&self) -> PathBuf {
        self.tmp.path().join("anomalies.log")
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = streamforge(args);
        cmd.env("CLICKHOUSE_URL", &test_stack().clickhouse_url)
            .env("CLICKHOUSE_DATABASE", "streamforge_test")
            .env("CLICKHOUSE_TABLE", &self.table)
            .env_remove("KAFKA_TOPIC")
            .env_remove("KAFKA_BROKERS");
        cmd
    }

    /// `streamforge run` from the topic into ClickHouse.
    fn run(&self, extra: &[&str]) -> Command {
        self.run_at(&self.state(), extra)
    }

    /// [`Setup::run`] on another state directory.
    fn run_at(&self, state: &Path, extra: &[&str]) -> Command {
        let mut args: Vec<String> = [
            "run",
            "--source",
            "kafka",
            "--sink",
            "clickhouse",
            "--state-dir",
            state.to_str().unwrap(),
            "--anomaly-log",
            self.log().to_str().unwrap(),
            "--checkpoint-interval",
            "500ms",
            "--set",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push(format!("source.kafka_config={}", self.kafka_yaml.display()));
        args.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        self.cmd(&refs)
    }

    fn bounded(&self) {
        ok(&self.run(&["--bounded"]).output().unwrap());
    }

    /// A live run with a 1 s idle timeout (quick to go idle).
    fn live(&self) -> LiveJob {
        LiveJob::spawn(&mut self.run(&["--set", "window.idle_timeout=1s"]))
    }

    /// A live run with the default settings (10 s idle timeout): a partition
    /// found while running has that long to deliver its first records
    /// before it stops holding the watermark.
    fn live_default(&self) -> LiveJob {
        LiveJob::spawn(&mut self.run(&[]))
    }

    /// The table's rows; none while the job has not created it yet.
    fn results(&self) -> Vec<String> {
        let out = self
            .cmd(&["results", "--sink", "clickhouse"])
            .output()
            .unwrap();
        if not_created_yet(&out) {
            return Vec::new();
        }
        ok(&out);
        results_lines(&out)
    }

    fn producer(&self) -> BaseProducer {
        ClientConfig::new()
            .set("bootstrap.servers", brokers())
            .set("linger.ms", "0")
            .create()
            .unwrap()
    }

    /// Produces `lines` to `partition`, with record timestamps `stamp(i)`
    /// (`None`: the producer's clock).
    fn produce(&self, partition: i32, lines: &[String], stamp: impl Fn(usize) -> Option<i64>) {
        let producer = self.producer();
        for (i, line) in lines.iter().enumerate() {
            let mut record = BaseRecord::<(), str>::to(&self.topic)
                .partition(partition)
                .payload(line.as_str());
            if let Some(ts) = stamp(i) {
                record = record.timestamp(ts);
            }
            producer.send(record).map_err(|(e, _)| e).unwrap();
        }
        producer.flush(Duration::from_secs(30)).unwrap();
    }

    fn produce_file(&self, partition: i32, path: &Path) {
        self.produce(partition, &read_lines(path), |_| None);
    }
}

fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Waits until the live job has read `n` records (processed or held).
fn wait_read(job: &mut LiveJob, n: usize) {
    job.wait_for(&format!("{n} records read"), Duration::from_secs(90), |j| {
        let m = j.metrics();
        metric_sum(&m, "streamforge_events_read_total") + metric_sum(&m, "streamforge_held_records")
            >= n as f64
    });
}

/// A partition ending in commit and abort markers (written by a real
/// transactional producer) goes idle like any caught-up partition, its
/// aborted records are never counted, and its lag goes to zero.
#[test]
fn txn_markers_case_gives_the_expected_table() {
    let s = Setup::new("txn", 2);
    let case = case_dir("txn-markers");
    let txn: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("transactional.id", format!("{}-txn", s.topic))
        .create()
        .unwrap();
    txn.init_transactions(Duration::from_secs(30)).unwrap();
    for (file, commit) in [
        ("p1-committed-transaction.jsonl", true),
        ("p1-aborted-transaction.jsonl", false),
    ] {
        txn.begin_transaction().unwrap();
        for line in read_lines(&case.join(file)) {
            txn.send(
                BaseRecord::<(), str>::to(&s.topic)
                    .partition(1)
                    .payload(line.as_str()),
            )
            .map_err(|(e, _)| e)
            .unwrap();
        }
        txn.flush(Duration::from_secs(30)).unwrap();
        if commit {
            txn.commit_transaction(Duration::from_secs(30)).unwrap();
        } else {
            txn.abort_transaction(Duration::from_secs(30)).unwrap();
        }
    }
    s.produce_file(0, &case.join("p0-plain.jsonl"));

    let expected = case_expected("txn-markers");
    let mut job = s.live();
    // Partition 1 ends in an abort marker; once idle it no longer holds the
    // watermark, which reaches 00:04:55 (the last p0 record minus the
    // bound): every window ending by then is in ClickHouse.
    let due: Vec<String> = expected
        .iter()
        .filter(|l| window_start_of(l) + 60 <= 1_704_067_495)
        .cloned()
        .collect();
    assert!(due.len() >= 9);
    job.wait_for(
        "the due windows in ClickHouse",
        Duration::from_secs(35),
        |_| s.results() == due,
    );
    job.wait_for("no lag on either partition", Duration::from_secs(10), |j| {
        let m = j.metrics();
        m.contains("streamforge_consumer_lag{partition=\"1\"} 0")
            && m.contains("streamforge_consumer_lag{partition=\"0\"} 0")
    });
    job.stop();
    s.bounded();
    assert_same_results(&s.results(), &expected);
    assert!(anomaly_reasons(&s.log()).is_empty());
}

/// `isolation_level: read_uncommitted` is honoured: the aborted records
/// count then (what a user asks for, documented), and a transaction
/// committed after an aborted one counts either way.
#[test]
fn the_isolation_level_decides_what_an_aborted_transaction_contributes() {
    let s = Setup::new("txniso", 1);
    let t = |i: i64| 1_704_067_200_000 + 40_000 + i * 1000;
    let ev = |id: &str, cents: u64, t_ms: i64| {
        format!(
            r#"{{"event_id":"{id}","order_id":"o","user_id":"u-{id}","amount":{}.{:02},"event_time":{t_ms}}}"#,
            cents / 100,
            cents % 100
        )
    };
    let txn: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("transactional.id", format!("{}-txn", s.topic))
        .create()
        .unwrap();
    txn.init_transactions(Duration::from_secs(30)).unwrap();
    let mut committed = Vec::new();
    let mut aborted = Vec::new();
    for round in 0..4i64 {
        let commit = round != 1;
        txn.begin_transaction().unwrap();
        for i in 0..5 {
            let k = round * 5 + i;
            let line = ev(&format!("e{k}"), 100 + k as u64, t(k));
            txn.send(
                BaseRecord::<(), str>::to(&s.topic)
                    .partition(0)
                    .payload(line.as_str()),
            )
            .map_err(|(e, _)| e)
            .unwrap();
            let counted = Counted {
                t_ms: t(k),
                user: format!("u-e{k}"),
                cents: 100 + k as u64,
            };
            if commit {
                committed.push(counted)
            } else {
                aborted.push(counted)
            }
        }
        txn.flush(Duration::from_secs(30)).unwrap();
        if commit {
            txn.commit_transaction(Duration::from_secs(30)).unwrap();
        } else {
            txn.abort_transaction(Duration::from_secs(30)).unwrap();
        }
    }
    s.bounded();
    assert_same_results(&s.results(), &window_lines(committed.clone()));

    let s2 = Setup {
        table: unique("topo_iso"),
        ..s
    };
    std::fs::write(
        &s2.kafka_yaml,
        format!(
            "brokers: {}\ntopic: {}\nisolation_level: read_uncommitted\n",
            brokers(),
            s2.topic
        ),
    )
    .unwrap();
    let state2 = s2.tmp.path().join("state2");
    let out = s2
        .cmd(&[
            "run",
            "--source",
            "kafka",
            "--sink",
            "clickhouse",
            "--bounded",
            "--state-dir",
            state2.to_str().unwrap(),
            "--anomaly-log",
            s2.tmp.path().join("a2.log").to_str().unwrap(),
            "--set",
            &format!("source.kafka_config={}", s2.kafka_yaml.display()),
        ])
        .output()
        .unwrap();
    ok(&out);
    let mut all = committed;
    all.extend(aborted);
    assert_same_results(&s2.results(), &window_lines(all));
}

/// A partition added while the job runs is found, read from its start,
/// and takes part in the watermark from then on: its records are counted,
/// none is late, even though they are older than what the other partitions
/// had delivered by the time they were produced.
#[test]
fn partitions_added_case_gives_the_expected_table() {
    let s = Setup::new("grow", 2);
    let case = case_dir("partitions-added");
    s.produce_file(0, &case.join("phase1-p0.jsonl"));
    s.produce_file(1, &case.join("phase1-p1.jsonl"));
    let mut job = s.live_default();
    wait_read(&mut job, 26);
    block_on(admin().create_partitions(
        &[NewPartitions::new(&s.topic, 3)],
        &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
    ))
    .unwrap()
    .into_iter()
    .for_each(|r| {
        r.unwrap();
    });
    // The worst order for the job: the older partitions first.
    s.produce_file(0, &case.join("phase2-p0.jsonl"));
    s.produce_file(1, &case.join("phase2-p1.jsonl"));
    s.produce_file(2, &case.join("phase2-p2.jsonl"));
    wait_read(&mut job, 26 + 39);
    job.stop();
    s.bounded();
    assert_same_results(&s.results(), &case_expected("partitions-added"));
    assert!(
        anomaly_reasons(&s.log()).is_empty(),
        "{:?}",
        anomaly_reasons(&s.log())
    );
}

/// Partitions added twice while data flows, as live producers write it:
/// every partition's records at the current event time, so neither the
/// discovery interval nor idleness can make any of them late.
#[test]
fn partitions_added_twice_while_data_flows_are_all_counted() {
    let s = Setup::new("grow2", 1);
    let mut rng = Rng::new(5);
    let mut counted = Vec::new();
    // Event time goes on from where the previous round ended.
    let mut round_start = 1_704_067_200_000 + 40_000;
    let mut produce_round = |s: &Setup, sizes: &[usize], counted: &mut Vec<Counted>| {
        let mut round_end = round_start;
        for (p, n) in sizes.iter().enumerate() {
            let mut lines = Vec::new();
            for i in 0..*n {
                let t = round_start + i as i64 * 500 - rng.below(2000) as i64;
                round_end = round_end.max(t);
                let user = format!("u{}", rng.below(30));
                lines.push(format!(
                    r#"{{"event_id":"r{round_start}-p{p}-{i}","order_id":"o","user_id":"{user}","amount":"1.25","event_time":{t}}}"#
                ));
                counted.push(Counted {
                    t_ms: t,
                    user,
                    cents: 125,
                });
            }
            s.produce(p as i32, &lines, |_| None);
        }
        round_start = round_end + 1000;
    };
    produce_round(&s, &[200], &mut counted);
    let mut job = s.live();
    wait_read(&mut job, 200);
    let mut total = 200;
    for (partitions, sizes) in [(2, vec![100, 140]), (4, vec![100, 140, 180, 220])] {
        block_on(admin().create_partitions(
            &[NewPartitions::new(&s.topic, partitions)],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        ))
        .unwrap()
        .into_iter()
        .for_each(|r| {
            r.unwrap();
        });
        produce_round(&s, &sizes, &mut counted);
        total += sizes.iter().sum::<usize>();
        wait_read(&mut job, total);
    }
    job.stop();
    s.bounded();
    assert_same_results(&s.results(), &window_lines(counted));
    assert!(
        anomaly_reasons(&s.log()).is_empty(),
        "{:?}",
        anomaly_reasons(&s.log())
    );
}

/// A live run that starts on a backlog (a restart after an outage) gives
/// the verdicts a bounded run gives: records 3 minutes behind their
/// partition are `late_event` in both. Partition discovery rests the
/// watermark only on records produced before its last round started, and
/// every record of a backlog that was there when the job started is.
/// Before, the watermark stood still between two discoveries, so a backlog
/// read within one interval let every very late record in.
#[test]
fn a_live_run_on_a_backlog_rejects_the_very_late_records_a_bounded_run_does() {
    let s = Setup::new("backlog", 2);
    let mut rng = Rng::new(21);
    let (mut counted, mut late) = (Vec::new(), Vec::new());
    let t0 = 1_704_067_200_000;
    for p in 0..2 {
        let lines: Vec<String> = (0..5_000u64)
            .map(|i| {
                let very_late = i % 500 == 499;
                let t = t0 + i as i64 * 40 - if very_late { 180_000 } else { rng.below(2_000) as i64 };
                let user = format!("u{}", rng.below(50));
                if very_late {
                    late.push(("late_event".to_string(), p as u32, i));
                } else {
                    counted.push(Counted { t_ms: t, user: user.clone(), cents: 199 });
                }
                format!(
                    r#"{{"event_id":"b{p}-{i}","order_id":"o","user_id":"{user}","amount":"1.99","event_time":{t}}}"#
                )
            })
            .collect();
        s.produce(p, &lines, |_| None);
    }
    let mut job = s.live();
    wait_read(&mut job, 10_000);
    job.stop();
    let mut logged = anomaly_reasons(&s.log());
    logged.sort();
    late.sort();
    assert_eq!(logged, late, "the live run's verdicts");
    s.bounded();
    assert_same_results(&s.results(), &window_lines(counted));
}

/// A wrong clock through Kafka, with the producer's own record timestamps
/// (rule 1: the 2090 record against its record's timestamp), and with a
/// producer that stamps records with their event time, as Flink's Kafka
/// sink does (rule 2: the jump waits for confirmation). In the second, the
/// wrong record is 50 minutes ahead: the broker itself refuses record
/// timestamps more than `log.message.timestamp.after.max.ms` (1 h) ahead of
/// its clock, so a 2090 stamp never reaches a topic.
#[test]
fn far_future_through_kafka_with_either_kind_of_record_timestamp() {
    let case = case_dir("far-future");
    for stamped_with_event_time in [false, true] {
        let s = Setup::new("future", 2);
        for p in 0..2 {
            let mut lines = read_lines(&case.join(format!("p{p}.jsonl")));
            if stamped_with_event_time && p == 0 {
                lines[0] = r#"{"event_id": "e0-0", "order_id": "o0-0", "user_id": "u1", "amount": "10.00", "event_time": "2025-11-25T10:50:00Z"}"#.to_string();
            }
            let times: Vec<i64> = lines
                .iter()
                .map(|l| {
                    let v: serde_json::Value = serde_json::from_str(l).unwrap();
                    v["event_time"].as_i64().unwrap_or(1_764_067_800_000)
                })
                .collect();
            s.produce(p, &lines, |i| stamped_with_event_time.then(|| times[i]));
        }
        let mut job = s.live();
        wait_read(&mut job, 600);
        job.stop();
        s.bounded();
        assert_same_results(&s.results(), &case_expected("far-future"));
        assert_eq!(
            anomaly_reasons(&s.log()),
            vec![("implausible_event_time".to_string(), 0, 0)],
            "stamped with the event time: {stamped_with_event_time}"
        );
    }
}

/// A bounded run killed mid-way and restarted stops at the end offsets of
/// the run that was started, even though more records arrived meanwhile;
/// the next bounded run reads them, as one run over all of it would.
#[test]
fn a_resumed_bounded_run_stops_where_the_started_one_would_have() {
    let s = Setup::new("resume", 2);
    let mut rng = Rng::new(9);
    let mut counted = Vec::new();
    let mut make = |from: usize, n: usize, p: usize, counted: &mut Vec<Counted>| -> Vec<String> {
        (from..from + n)
            .map(|i| {
                let t = 1_704_067_200_000 + 40_000 + i as i64 * 250 - rng.below(3000) as i64;
                let user = format!("u{}", rng.below(50));
                counted.push(Counted { t_ms: t, user: user.clone(), cents: 250 });
                format!(r#"{{"event_id":"p{p}-{i}","order_id":"o","user_id":"{user}","amount":2.50,"event_time":{t}}}"#)
            })
            .collect()
    };
    for p in 0..2 {
        let lines = make(0, 4000, p, &mut counted);
        s.produce(p as i32, &lines, |_| None);
    }
    let first = counted.clone();
    let crashed = s
        .run(&[
            "--bounded",
            "--checkpoint-events",
            "1000",
            "--set",
            "batch_size=250",
        ])
        // At its first durable checkpoint, which always records the end
        // offsets: the run's own end commit comes after it. (The N-th
        // commit is no fixed point: barriers due while a commit is in
        // flight are deferred, so a fast run may reach its end first.)
        .env("FAILPOINTS", "job::barrier::after_commit=return")
        .output()
        .unwrap();
    assert!(!crashed.status.success(), "the failpoint must stop the run");
    let inspect = s
        .cmd(&[
            "checkpoint",
            "inspect",
            "--state-dir",
            s.state().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let inspect = String::from_utf8_lossy(&inspect.stdout).to_string();
    assert!(
        inspect.contains("bounded run      in progress"),
        "the crash must land mid-run:\n{inspect}"
    );
    for p in 0..2 {
        let lines = make(4000, 500, p, &mut counted);
        s.produce(p as i32, &lines, |_| None);
    }
    s.bounded();
    assert_same_results(&s.results(), &window_lines(first));
    s.bounded();
    assert_same_results(&s.results(), &window_lines(counted));
}

/// `start: latest` is resolved once: a crash before the first barrier does
/// not resolve it again and skip what arrived in between.
#[test]
fn start_latest_survives_a_crash_before_the_first_record() {
    let s = Setup::new("latest", 1);
    let ev = |i: i64| {
        format!(
            r#"{{"event_id":"e{i}","order_id":"o","user_id":"u{i}","amount":1.00,"event_time":{}}}"#,
            1_704_067_240_000 + i * 1000
        )
    };
    s.produce(0, &(0..50).map(ev).collect::<Vec<_>>(), |_| None);
    std::fs::write(
        &s.kafka_yaml,
        format!(
            "brokers: {}\ntopic: {}\nstart: latest\n",
            brokers(),
            s.topic
        ),
    )
    .unwrap();
    // A live run that dies right after its first checkpoint, before it
    // reads a record.
    let crashed = s
        .run(&[])
        .env("FAILPOINTS", "job::barrier::after_commit=return")
        .output()
        .unwrap();
    assert!(!crashed.status.success());
    s.produce(0, &(50..80).map(ev).collect::<Vec<_>>(), |_| None);
    s.bounded();
    let want: Vec<Counted> = (50..80)
        .map(|i| Counted {
            t_ms: 1_704_067_240_000 + i * 1000,
            user: format!("u{i}"),
            cents: 100,
        })
        .collect();
    assert_same_results(&s.results(), &window_lines(want));
}

/// A topic deleted and created again under the same name is another log:
/// the job refuses to resume its old offsets there and says what to do.
#[test]
fn a_recreated_topic_is_refused_with_advice() {
    let s = Setup::new("recreate", 1);
    let ev = |i: i64| {
        format!(
            r#"{{"event_id":"e{i}","order_id":"o","user_id":"u","amount":1.00,"event_time":{}}}"#,
            1_704_067_240_000 + i * 1000
        )
    };
    s.produce(0, &(0..20).map(ev).collect::<Vec<_>>(), |_| None);
    s.bounded();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    block_on(admin().delete_topics(&[&s.topic], &opts))
        .unwrap()
        .into_iter()
        .for_each(|r| {
            r.unwrap();
        });
    // The broker takes a moment to forget the old topic; creation retries
    // until it is gone (a bounded wait on the broker's answer, not a sleep).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let created = block_on(admin().create_topics(
            &[NewTopic::new(&s.topic, 1, TopicReplication::Fixed(1))],
            &opts,
        ))
        .unwrap();
        if created.iter().all(|r| r.is_ok()) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the topic could not be created again: {created:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    s.produce(0, &(0..30).map(ev).collect::<Vec<_>>(), |_| None);
    let out = s.run(&["--bounded"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "must refuse: {stderr}");
    assert!(
        stderr.contains("deleted and created again") && stderr.contains("fresh --state-dir"),
        "{stderr}"
    );
}

fn clickhouse_query(sql: &str) -> String {
    let out = Command::new("clickhouse-client")
        .args(["--port", &test_stack().clickhouse_tcp_port.to_string()])
        .args(["--query", sql])
        .output()
        .expect("clickhouse-client");
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Starting over with a fresh state directory (the way out of lost
/// checkpoints) after retention deleted the oldest records: the windows the
/// deleted records belonged to are not rewritten from what is left, and
/// every row written carries a version above what the table held, so the
/// table never regresses (issue 12).
#[test]
fn a_fresh_state_after_retention_never_regresses_the_table() {
    let s = Setup::new("retention", 2);
    let mut rng = Rng::new(21);
    let mut counted = Vec::new();
    for p in 0..2 {
        let lines: Vec<String> = (0..1200)
            .map(|i| {
                let t = 1_704_067_200_000 + 40_000 + i as i64 * 250 - rng.below(3000) as i64;
                let user = format!("u{}", rng.below(80));
                counted.push(Counted { t_ms: t, user: user.clone(), cents: 310 });
                format!(r#"{{"event_id":"p{p}-{i}","order_id":"o","user_id":"{user}","amount":"3.10","event_time":{t}}}"#)
            })
            .collect();
        s.produce(p, &lines, |_| None);
    }
    s.bounded();
    let complete = window_lines(counted);
    assert_same_results(&s.results(), &complete);
    let table = format!("streamforge_test.{}", s.table);
    let before: u64 = clickhouse_query(&format!("SELECT max(version) FROM {table}"))
        .parse()
        .unwrap();

    // Retention deletes the first 500 records of partition 0.
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(&s.topic, 0, rdkafka::Offset::Offset(500))
        .unwrap();
    block_on(admin().delete_records(
        &tpl,
        &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
    ))
    .unwrap();

    // A fresh state directory on the same table.
    let fresh = s.tmp.path().join("fresh-state");
    let out = s.run_at(&fresh, &["--bounded"]).output().unwrap();
    ok(&out);
    assert_same_results(&s.results(), &complete);
    let min_new: u64 = clickhouse_query(&format!(
        "SELECT min(version) FROM {table} WHERE updated_at > 0 AND version > {before}"
    ))
    .parse()
    .unwrap();
    assert!(
        min_new > before,
        "the fresh state wrote above version {before}"
    );
    let written: u64 = clickhouse_query(&format!(
        "SELECT count() FROM {table} WHERE version > {before}"
    ))
    .parse()
    .unwrap();
    assert!(
        written > 0,
        "the complete windows were written again, with higher versions"
    );
}

/// `results` and `verify` read; a mistyped database or table is an error
/// that names it, and neither command leaves an empty database or table
/// behind (only a job creates schema).
#[test]
fn reading_commands_never_create_the_database_or_table() {
    require_stack();
    let database = unique("sf_nodb");
    let input = tempfile::tempdir().unwrap();
    std::fs::write(input.path().join("part-0.jsonl"), "").unwrap();
    let files = format!("files:{}", input.path().display());
    for args in [
        vec!["results", "--sink", "clickhouse"],
        vec![
            "verify",
            "--sink",
            "clickhouse",
            "--source",
            &files,
            "--quiet",
        ],
    ] {
        let out = streamforge(&args)
            .env("CLICKHOUSE_URL", &test_stack().clickhouse_url)
            .env("CLICKHOUSE_DATABASE", &database)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!("table {database}.order_metrics does not exist")),
            "{args:?}: {stderr}"
        );
    }
    let databases = clickhouse_query("SHOW DATABASES");
    assert!(!databases.lines().any(|d| d == database), "{databases}");
}
