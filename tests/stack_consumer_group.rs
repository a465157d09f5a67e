//! Group mode on the real stack (issue 16): instances in separate processes,
//! with separate state directories, share a six-partition topic through a
//! Kafka consumer group while data flows; they join, leave, and one is
//! killed with -9 and restarted. The combined table (`streamforge results`
//! in group mode) and the anomaly records, merged by (partition, offset),
//! must equal both an independent computation over the produced data and
//! the oracle: one clean single-instance group-mode run.
//!
//! The data honour group mode's contract (docs/semantics.md): the
//! duplicates of an event stay in one partition, and disorder within a
//! partition stays below the 5 s bound. In the first test a user's events
//! stay in one partition too (what keying by `user_id` gives); in the
//! second they do not, and the combined distinct users must still be exact
//! (the partitions' user sets are merged, not their counts summed).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::stack::{produce_files_to, require_stack, stack, test_stack, unique};
use common::*;

const PARTITIONS: usize = 6;

/// The produced data: per partition its lines, and what the oracle expects.
struct Data {
    lines: Vec<Vec<String>>,
    accepted: Vec<Counted>,
    /// The partition of each accepted event.
    accepted_in: Vec<usize>,
    anomalies: BTreeSet<(u32, u64, String)>,
}

/// `per_phase` lines per partition for each of `phases` phases. `keyed`:
/// users `p<p>-u<n>` live in partition `p` only; otherwise users `u<n>`
/// are in every partition.
fn make_data(phases: usize, per_phase: usize, keyed: bool) -> Data {
    let mut rng = Rng::new(16);
    let t0 = 1_764_064_800_000i64;
    let mut data = Data {
        lines: vec![Vec::new(); PARTITIONS],
        accepted: Vec::new(),
        accepted_in: Vec::new(),
        anomalies: BTreeSet::new(),
    };
    for p in 0..PARTITIONS {
        let mut seen = Vec::new();
        for i in 0..phases * per_phase {
            let t = t0 + i as i64 * 40 - rng.below(3_000) as i64;
            let roll = rng.below(100);
            let line = if roll < 3 && !seen.is_empty() {
                // A producer retry: a copy of a recent line, same partition.
                let j: usize = seen[seen.len() - 1 - rng.below(seen.len().min(5) as u64) as usize];
                data.lines[p][j].clone()
            } else if roll < 5 {
                let line = format!(r#"{{"event_id":"e-{p}-{i}","order_id":"o","user_id":"#);
                data.anomalies.insert((p as u32, i as u64, line.clone()));
                line
            } else {
                let user = if keyed {
                    format!("p{p}-u{}", rng.below(300))
                } else {
                    format!("u{}", rng.below(2_000))
                };
                let cents = rng.below(50_000);
                data.accepted.push(Counted {
                    t_ms: t,
                    user: user.clone(),
                    cents,
                });
                data.accepted_in.push(p);
                seen.push(i);
                format!(
                    r#"{{"event_id":"e-{p}-{i}","order_id":"o{i}","user_id":"{user}","amount":"{}.{:02}","event_time":{t}}}"#,
                    cents / 100,
                    cents % 100
                )
            };
            data.lines[p].push(line);
        }
    }
    data
}

struct Group {
    tmp: tempfile::TempDir,
    topic: String,
    group: String,
    table: String,
    kafka_yaml: PathBuf,
}

impl Group {
    fn new(tag: &str) -> Group {
        require_stack();
        let tmp = tempfile::tempdir().unwrap();
        let topic = unique(&format!("sf_group_{tag}"));
        stack(&["topic", &topic, &PARTITIONS.to_string()]);
        let group = format!("{topic}-group");
        let kafka_yaml = tmp.path().join("kafka.yaml");
        std::fs::write(
            &kafka_yaml,
            format!(
                "brokers: {}\ntopic: {topic}\ngroup_id: {group}\ngroup_mode: true\n\
                 properties:\n  session.timeout.ms: \"6000\"\n  heartbeat.interval.ms: \"500\"\n",
                test_stack().kafka
            ),
        )
        .unwrap();
        Group {
            table: unique("grp"),
            topic,
            group,
            kafka_yaml,
            tmp,
        }
    }

    /// Writes lines `range` of every partition to the topic.
    fn produce(&self, data: &Data, range: std::ops::Range<usize>) {
        let dir = self.tmp.path().join(format!("in-{}", range.start));
        std::fs::create_dir_all(&dir).unwrap();
        for (p, lines) in data.lines.iter().enumerate() {
            let mut text = lines[range.clone()].join("\n");
            text.push('\n');
            std::fs::write(dir.join(format!("part-{p}.jsonl")), text).unwrap();
        }
        produce_files_to(&self.topic, &[dir], false);
    }

    fn cmd(&self, table: &str, args: &[&str]) -> Command {
        let mut cmd = streamforge(args);
        test_stack().point(&mut cmd);
        cmd.env("CLICKHOUSE_DATABASE", "streamforge_test")
            .env("CLICKHOUSE_TABLE", table)
            .env_remove("KAFKA_TOPIC")
            .env_remove("KAFKA_BROKERS")
            .env_remove("KAFKA_GROUP_ID");
        cmd
    }

    /// `run` of instance `name` (its own state directory and anomaly log)
    /// in the group `group`, writing to `table`.
    fn run(&self, name: &str, group: &str, table: &str, bounded: bool) -> Command {
        let dir = self.tmp.path().join(name);
        let yaml = self.tmp.path().join(format!("kafka-{group}.yaml"));
        let text = std::fs::read_to_string(&self.kafka_yaml).unwrap().replace(
            &format!("group_id: {}\n", self.group),
            &format!("group_id: {group}\n"),
        );
        std::fs::write(&yaml, text).unwrap();
        let mut args: Vec<String> = [
            "run",
            "--source",
            "kafka",
            "--sink",
            "clickhouse",
            "--checkpoint-interval",
            "300ms",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend([
            "--state-dir".into(),
            dir.join("state").display().to_string(),
            "--anomaly-log".into(),
            dir.join("anomalies.log").display().to_string(),
            "--set".into(),
            format!("source.kafka_config={}", yaml.display()),
        ]);
        if bounded {
            args.push("--bounded".into());
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        self.cmd(table, &refs)
    }

    fn start(&self, name: &str) -> Child {
        self.run(name, &self.group, &self.table, false)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    }

    fn results(&self, table: &str) -> Vec<String> {
        let yaml = format!("source.kafka_config={}", self.kafka_yaml.display());
        let out = self
            .cmd(table, &["results", "--sink", "clickhouse", "--set", &yaml])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "results: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        results_lines(&out)
    }

    /// Waits until every partition has a partial row computed past
    /// `offset` (a row's version is its partition's offset).
    fn wait_all_past(&self, table: &str, offset: u64) {
        let sql = format!(
            "SELECT count() FROM (SELECT partition FROM streamforge_test.{table}_partial \
             GROUP BY partition HAVING max(version) > {offset})"
        );
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let n = clickhouse_count(&sql);
            if n == PARTITIONS {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "only {n} partitions have rows past offset {offset}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn sigterm(mut child: Child) {
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "an instance exited {status} on SIGTERM");
}

/// Every anomaly line under `dir`, merged by (partition, offset); a
/// (partition, offset) with two different records fails.
fn merged_anomalies(dir: &Path) -> BTreeSet<(u32, u64, String)> {
    let mut merged: BTreeMap<(u32, u64), (String, String)> = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("anomalies.log")
            {
                for (reason, p, offset, payload) in read_anomalies(&path) {
                    let prev = merged.insert((p, offset), (reason.clone(), payload.clone()));
                    assert!(
                        prev.is_none_or(|prev| prev == (reason, payload)),
                        "two different anomaly records for partition {p} offset {offset}"
                    );
                }
            }
        }
    }
    merged
        .into_iter()
        .map(|((p, o), (reason, payload))| {
            assert_eq!(reason, "malformed_json");
            (p, o, payload)
        })
        .collect()
}

#[test]
fn three_instances_joining_leaving_and_killed_equal_one_clean_run() {
    let g = Group::new("three");
    let data = make_data(4, 2_000, true);
    let expected = window_lines(data.accepted.iter().cloned());

    g.produce(&data, 0..2_000);
    let mut a = g.start("a");
    g.wait_all_past(&g.table, 1_000);
    let mut b = g.start("b");
    g.produce(&data, 2_000..4_000);
    g.wait_all_past(&g.table, 3_000);
    kill9(&mut a);
    let c = g.start("c");
    g.produce(&data, 4_000..6_000);
    // Every partition, the dead instance's too, is read past the last
    // phase's start: the group moved a's partitions to b and c.
    g.wait_all_past(&g.table, 4_100);
    // a comes back while data flows; the group gives it partitions again
    // (its old checkpoints, or a rebuild), and every partition goes on.
    a = g.start("a");
    g.produce(&data, 6_000..8_000);
    g.wait_all_past(&g.table, 6_100);
    sigterm(b);
    sigterm(a);
    sigterm(c);
    // The end of the input: one instance takes every partition (restoring
    // those it has checkpoints for, rebuilding the others) and emits every
    // window, as a bounded run does.
    b = g
        .run("b", &g.group, &g.table, true)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        b.wait().unwrap().success(),
        "the final bounded instance failed"
    );

    let oracle_table = unique("oracle");
    let oracle_group = format!("{}-oracle", g.group);
    let out = g
        .run("oracle", &oracle_group, &oracle_table, true)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "oracle: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let oracle = g.results(&oracle_table);
    assert_same_results(&oracle, &expected);
    assert_same_results(&g.results(&g.table), &expected);
    let oracle_anomalies = merged_anomalies(&g.tmp.path().join("oracle"));
    assert_eq!(oracle_anomalies, data.anomalies);
    let mut instances = BTreeSet::new();
    for name in ["a", "b", "c"] {
        instances.extend(merged_anomalies(&g.tmp.path().join(name)));
    }
    assert_eq!(instances, data.anomalies);
}

/// The distinct users of each window (start, epoch seconds) among
/// `events`: the SPEC windows of `window_lines` (60 s, sliding by 30 s).
fn users_per_window<'a>(
    events: impl IntoIterator<Item = &'a Counted>,
) -> BTreeMap<i64, BTreeSet<&'a str>> {
    let slide = 30_000i64;
    let mut windows: BTreeMap<i64, BTreeSet<&str>> = BTreeMap::new();
    for e in events {
        let s = e.t_ms.div_euclid(slide) * slide;
        for start in [s, s - slide] {
            windows.entry(start / 1000).or_default().insert(&e.user);
        }
    }
    windows
}

/// A topic not keyed by `user_id`: every user has events in every
/// partition. Two instances share the partitions while data flows, then a
/// bounded instance ends the input; `streamforge results` and the
/// `<table>_combined` view must give, per window, the distinct users over
/// all partitions (recomputed here from the produced events), not the sum
/// of the partitions' counts, which the data make differ in every window.
#[test]
fn users_spread_over_partitions_are_counted_once() {
    let g = Group::new("spread");
    let data = make_data(2, 1_500, false);
    let expected = window_lines(data.accepted.iter().cloned());
    let union: BTreeMap<i64, usize> = users_per_window(&data.accepted)
        .into_iter()
        .map(|(w, users)| (w, users.len()))
        .collect();
    let mut summed: BTreeMap<i64, usize> = BTreeMap::new();
    for p in 0..PARTITIONS {
        let events = data
            .accepted
            .iter()
            .zip(&data.accepted_in)
            .filter(|(_, q)| **q == p)
            .map(|(e, _)| e);
        for (w, users) in users_per_window(events) {
            *summed.entry(w).or_default() += users.len();
        }
    }
    let differing = union.iter().filter(|(w, n)| summed[*w] != **n).count();
    assert!(
        differing * 10 >= union.len() * 9,
        "the data should spread users over partitions: the sum differs from the union in only \
         {differing} of {} windows",
        union.len()
    );

    g.produce(&data, 0..1_500);
    let a = g.start("a");
    let b = g.start("b");
    g.wait_all_past(&g.table, 1_000);
    g.produce(&data, 1_500..3_000);
    g.wait_all_past(&g.table, 2_500);
    sigterm(a);
    sigterm(b);
    let out = g.run("c", &g.group, &g.table, true).output().unwrap();
    assert!(
        out.status.success(),
        "the final bounded instance: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    assert_same_results(&g.results(&g.table), &expected);
    // Without group mode in its configuration, `results` reads the plain
    // table, which a group does not write: it says where the rows are.
    let plain = g
        .cmd(&g.table, &["results", "--sink", "clickhouse"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&plain.stderr);
    assert!(
        plain.status.success() && plain.stdout.is_empty(),
        "{stderr}"
    );
    assert!(stderr.contains("kafka.group_mode=true"), "{stderr}");
    let sql = format!(
        "SELECT toUInt32(window_start), user_cnt FROM streamforge_test.{}_combined \
         ORDER BY window_start FORMAT TabSeparated",
        g.table
    );
    let text = reqwest::blocking::Client::new()
        .post(&test_stack().clickhouse_url)
        .body(sql)
        .send()
        .and_then(|r| r.error_for_status())
        .and_then(|r| r.text())
        .unwrap();
    let view: BTreeMap<i64, usize> = text
        .lines()
        .map(|l| {
            let (w, n) = l.split_once('\t').unwrap();
            (w.parse().unwrap(), n.parse().unwrap())
        })
        .collect();
    assert_eq!(view, union, "the combined view's user_cnt per window");
    assert_eq!(merged_anomalies(g.tmp.path()), data.anomalies);
}

/// A partition added to the topic is assigned to the group and read within
/// seconds (the members refresh their metadata at
/// `partition_discovery_interval`), not after librdkafka's default 5
/// minutes.
#[test]
fn a_partition_added_to_the_topic_is_read_within_seconds() {
    use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    use rdkafka::ClientConfig;

    let g = Group::new("grow");
    let data = make_data(1, 300, true);
    g.produce(&data, 0..300);
    let a = g.start("a");
    g.wait_all_past(&g.table, 200);

    let config = |c: &mut ClientConfig| {
        c.set("bootstrap.servers", &test_stack().kafka);
    };
    let mut admin_config = ClientConfig::new();
    config(&mut admin_config);
    let admin: AdminClient<DefaultClientContext> = admin_config.create().unwrap();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(admin.create_partitions(
            &[NewPartitions::new(&g.topic, PARTITIONS + 1)],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        ))
        .unwrap()
        .into_iter()
        .for_each(|r| {
            r.unwrap();
        });
    let mut producer_config = ClientConfig::new();
    config(&mut producer_config);
    let producer: BaseProducer = producer_config.create().unwrap();
    // 150 s of event time: the partition's own watermark closes windows.
    let t0 = 1_764_064_800_000i64;
    for i in 0..50i64 {
        let line = format!(
            r#"{{"event_id":"new-{i}","order_id":"o","user_id":"n{i}","amount":"2.00","event_time":{}}}"#,
            t0 + i * 3_000
        );
        producer
            .send(
                BaseRecord::<(), str>::to(&g.topic)
                    .partition(PARTITIONS as i32)
                    .payload(&line),
            )
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();

    let added = Instant::now();
    let sql = format!(
        "SELECT count() FROM streamforge_test.{}_partial WHERE partition = {PARTITIONS}",
        g.table
    );
    loop {
        let rows = clickhouse_count(&sql);
        if rows > 0 {
            break;
        }
        assert!(
            added.elapsed() < Duration::from_secs(60),
            "the added partition has no rows after {:?}",
            added.elapsed()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    sigterm(a);
}

/// The number a `SELECT count()` query returns; 0 while ClickHouse answers
/// with an error (a table the first partition job has not created yet).
fn clickhouse_count(sql: &str) -> usize {
    reqwest::blocking::Client::new()
        .post(&test_stack().clickhouse_url)
        .body(sql.to_string())
        .send()
        .and_then(|r| r.text())
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}
