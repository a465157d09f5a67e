//! Kafka -> StreamForge -> ClickHouse against the real local stack
//! (`scripts/stack.sh up`; `scripts/test.sh` starts it). A missing service is
//! a failure, never a skip.
//!
//! Each test replays its own data set into its own topic with
//! `streamforge produce --from-files`, runs the job with its own ClickHouse
//! table and state directory, and compares `streamforge results --sink
//! clickhouse` (read with FINAL) and the anomaly log with the oracle.
//! Tests that stop a service hold a lock, since the stack is shared.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::Mutex;

use common::*;

static STACK: Mutex<()> = Mutex::new(());

/// Brings every service back up when a fault test ends, pass or fail, so
/// one failure does not cascade into the next test.
struct RestoreStack;

impl Drop for RestoreStack {
    fn drop(&mut self) {
        let _ = Command::new(repo().join("scripts/stack.sh"))
            .arg("up")
            .output();
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn stack(args: &[&str]) {
    let out = Command::new(repo().join("scripts/stack.sh"))
        .args(args)
        .output()
        .expect("running scripts/stack.sh");
    assert!(
        out.status.success(),
        "scripts/stack.sh {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn require_stack() {
    let out = Command::new(repo().join("scripts/stack.sh"))
        .arg("status")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the local stack is not running: start it with `scripts/stack.sh up` (scripts/test.sh does)\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test's own topic, table and files.
struct Case {
    _tmp: tempfile::TempDir,
    data: DataSet,
    topic: String,
    table: String,
    state: PathBuf,
    log: PathBuf,
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros()
            % 1_000_000_000
    )
}

impl Case {
    fn new(shape: Shape) -> Case {
        require_stack();
        let tmp = tempfile::tempdir().unwrap();
        let data = make_dataset(&tmp.path().join("in"), &shape);
        let topic = unique("sf_test");
        stack(&["topic", &topic, &shape.partitions.to_string()]);
        let case = Case {
            state: tmp.path().join("state"),
            log: tmp.path().join("anomalies.log"),
            table: unique("metrics"),
            topic,
            data,
            _tmp: tmp,
        };
        let out = case
            .cmd(&[
                "produce",
                "--rate",
                "0",
                "--from-files",
                case.data.dir.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "produce failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        case
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = streamforge(args);
        cmd.env("KAFKA_TOPIC", &self.topic)
            .env("KAFKA_GROUP_ID", format!("{}-group", self.topic))
            .env("CLICKHOUSE_DATABASE", "streamforge_test")
            .env("CLICKHOUSE_TABLE", &self.table);
        cmd
    }

    fn run_args(&self) -> Vec<String> {
        [
            "run",
            "--source",
            "kafka",
            "--sink",
            "clickhouse",
            "--state-dir",
            self.state.to_str().unwrap(),
            "--anomaly-log",
            self.log.to_str().unwrap(),
            "--bounded",
            "--checkpoint-interval",
            "1s",
            "--checkpoint-events",
            "4000",
            "--set",
            "sink.retry_max=1s",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    fn run_cmd(&self) -> Command {
        let mut args = self.run_args();
        // A small fetch queue, so that the job still needs the broker after
        // its first checkpoint (by default librdkafka prefetches megabytes).
        let settings = self._tmp.path().join("kafka.yaml");
        std::fs::write(
            &settings,
            "brokers: 127.0.0.1:9092\ntopic: placeholder\nproperties:\n  queued.max.messages.kbytes: \"256\"\n  fetch.max.bytes: \"1048576\"\n  message.max.bytes: \"1000000\"\n  max.partition.fetch.bytes: \"65536\"\n",
        )
        .unwrap();
        args.push("--set".into());
        args.push(format!("source.kafka_config={}", settings.display()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        self.cmd(&refs)
    }

    fn results(&self) -> Vec<String> {
        let out = self
            .cmd(&["results", "--sink", "clickhouse"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "results failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        results_lines(&out)
    }

    fn assert_exact(&self) {
        assert_same_results(&self.results(), &self.data.expected_results());
        assert_anomalies_exactly_once(&self.log, &self.data.expected_anomalies());
    }
}

fn ok(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        out.status.success(),
        "streamforge failed: {}\n{stderr}",
        out.status
    );
    stderr
}

/// A log line to wait for (alternatives separated by `|`), and what to do then.
type Step<'a> = (&'a str, Box<dyn FnOnce()>);

/// Runs the job and, each time its log shows the next trigger line, runs
/// that step's action; then lets it finish and returns its log. Steps are
/// driven by what the job says, never by guessed timings.
fn run_with_steps(case: &Case, steps: Vec<Step>) -> String {
    let mut child = spawn(&mut case.run_cmd());
    let stderr = child.stderr.take().unwrap();
    let mut log = String::new();
    let mut steps = steps.into_iter();
    let mut next = steps.next();
    for line in BufReader::new(stderr).lines() {
        let line = line.unwrap();
        log.push_str(&line);
        log.push('\n');
        if next
            .as_ref()
            .is_some_and(|(trigger, _)| trigger.split('|').any(|t| line.contains(t)))
        {
            if let Some((_, action)) = next.take() {
                action();
            }
            next = steps.next();
        }
    }
    let status = child.wait().unwrap();
    assert!(
        next.is_none(),
        "the job ended before every step ran:\n{log}"
    );
    assert!(status.success(), "streamforge failed: {status}\n{log}");
    log
}

#[test]
fn kafka_to_clickhouse_matches_the_oracle() {
    let _g = STACK.lock().unwrap_or_else(|e| e.into_inner());
    let case = Case::new(Shape {
        partitions: 4,
        per_partition: 15_000,
        seed: 21,
        ..Shape::default()
    });
    ok(&case.run_cmd().output().unwrap());
    case.assert_exact();
    // A second bounded run on the same state finds nothing new and changes nothing.
    ok(&case.run_cmd().output().unwrap());
    case.assert_exact();
}

#[test]
fn sigkill_at_random_moments_on_the_real_stack_stays_exact() {
    let _g = STACK.lock().unwrap_or_else(|e| e.into_inner());
    let case = Case::new(Shape {
        partitions: 3,
        per_partition: 30_000,
        seed: 5,
        ..Shape::default()
    });
    let mut rng = Rng::new(17);
    let mut kills = 0;
    for attempt in 0..40 {
        let mut child = spawn(&mut case.run_cmd());
        let wanted = 1 + rng.below(3);
        let extra = std::time::Duration::from_micros(rng.below(20_000));
        if attempt < 30 && kill_after_checkpoints(&mut child, wanted, extra) {
            kills += 1;
            continue;
        }
        drop(child.stderr.take());
        let status = child.wait().unwrap();
        assert!(
            status.success(),
            "streamforge failed without being killed: {status}"
        );
        eprintln!("completed after {kills} SIGKILLs");
        assert!(kills >= 5, "only {kills} kills landed");
        case.assert_exact();
        return;
    }
    panic!("the job never completed");
}

#[test]
fn clickhouse_down_mid_run_loses_and_duplicates_nothing() {
    let _g = STACK.lock().unwrap_or_else(|e| e.into_inner());
    let case = Case::new(Shape {
        partitions: 3,
        per_partition: 40_000,
        seed: 8,
        ..Shape::default()
    });
    let _restore = RestoreStack;
    let log = run_with_steps(
        &case,
        vec![
            (
                "checkpoint committed",
                Box::new(|| stack(&["clickhouse-stop", "--kill"])),
            ),
            // The job notices, says so, keeps the rows pending and retries.
            (
                "sink unavailable",
                Box::new(|| stack(&["clickhouse-start"])),
            ),
        ],
    );
    assert!(log.contains("sink is accepting writes again"), "{log}");
    case.assert_exact();
}

#[test]
fn kafka_broker_restart_mid_run_loses_and_duplicates_nothing() {
    let _g = STACK.lock().unwrap_or_else(|e| e.into_inner());
    let case = Case::new(Shape {
        partitions: 3,
        per_partition: 40_000,
        seed: 9,
        ..Shape::default()
    });
    let _restore = RestoreStack;
    let log = run_with_steps(
        &case,
        vec![
            (
                "checkpoint committed",
                Box::new(|| stack(&["kafka-stop", "--kill"])),
            ),
            (
                "source unavailable|broker unavailable",
                Box::new(|| stack(&["kafka-start"])),
            ),
        ],
    );
    assert!(log.contains("reachable again"), "{log}");
    case.assert_exact();
}
