//! The real local stack (`scripts/stack.sh`): a test case with its own
//! topic, ClickHouse table, state directory and anomaly log, filled from a
//! data set with a known oracle.

use std::path::PathBuf;
use std::process::{Command, Output};

pub use super::endpoints::test_stack;
use super::*;

/// Brings every service back up when a fault test ends, pass or fail, so
/// one failure does not cascade into the next test.
pub struct RestoreStack;

impl Drop for RestoreStack {
    fn drop(&mut self) {
        let _ = test_stack().script(&["up"]).output();
    }
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `scripts/stack.sh ARGS` on the test stack (tests/common/endpoints.rs).
pub fn stack(args: &[&str]) {
    let out = test_stack()
        .script(args)
        .output()
        .expect("running scripts/stack.sh");
    assert!(
        out.status.success(),
        "scripts/stack.sh {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn require_stack() {
    let out = test_stack().script(&["status"]).output().unwrap();
    assert!(
        out.status.success(),
        "the test stack is not running ({:?}): start it with `scripts/stack.sh up` (scripts/test.sh starts one of its own), \
         or export what `STACK_DIR=DIR scripts/stack.sh env` prints for a stack elsewhere\n{}{}",
        test_stack(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test's own topic, table and files.
pub struct Case {
    pub tmp: tempfile::TempDir,
    pub data: DataSet,
    pub topic: String,
    pub table: String,
    pub state: PathBuf,
    pub log: PathBuf,
}

pub fn unique(prefix: &str) -> String {
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

/// Produces every line of `inputs` (a directory of one file per partition,
/// or files) to `topic` on the local stack: line `i` of file `p` to
/// partition `p`, through the product's own producer (the one `anomalies
/// replay` uses). With `event_timestamps`, records are stamped with their
/// event time.
pub fn produce_files_to(topic: &str, inputs: &[PathBuf], event_timestamps: bool) {
    let settings = streamforge::source::kafka::KafkaSettings {
        brokers: test_stack().kafka.clone(),
        topic: topic.to_string(),
        ..Default::default()
    };
    let stop = std::sync::atomic::AtomicBool::new(false);
    streamforge::source::kafka::producer::produce_files(&settings, inputs, event_timestamps, &stop)
        .unwrap_or_else(|e| panic!("producing {inputs:?} to {topic} failed: {e:#}"));
}

impl Case {
    pub fn new(shape: Shape) -> Case {
        Case::produced(shape, false)
    }

    /// A case whose data set is produced with record timestamps = event
    /// times (when `event_timestamps`), else stamped when sent.
    pub fn produced(shape: Shape, event_timestamps: bool) -> Case {
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
            tmp,
        };
        produce_files_to(
            &case.topic,
            std::slice::from_ref(&case.data.dir),
            event_timestamps,
        );
        case
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = streamforge(args);
        test_stack().point(&mut cmd);
        cmd.env("KAFKA_TOPIC", &self.topic)
            .env("KAFKA_GROUP_ID", format!("{}-group", self.topic))
            .env("CLICKHOUSE_DATABASE", "streamforge_test")
            .env("CLICKHOUSE_TABLE", &self.table);
        cmd
    }

    pub fn run_args(&self) -> Vec<String> {
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

    pub fn run_cmd(&self) -> Command {
        let mut args = self.run_args();
        // A small fetch queue refilled once a second (librdkafka's own
        // default backoff; the job's default is 10 ms), so that the job
        // still needs the broker for several checkpoints after its first
        // (by default librdkafka prefetches megabytes at once).
        let settings = self.tmp.path().join("kafka.yaml");
        std::fs::write(
            &settings,
            format!("brokers: {}\ntopic: placeholder\nproperties:\n  queued.max.messages.kbytes: \"256\"\n  fetch.max.bytes: \"1048576\"\n  message.max.bytes: \"1000000\"\n  max.partition.fetch.bytes: \"65536\"\n  fetch.queue.backoff.ms: \"1000\"\n", test_stack().kafka),
        )
        .unwrap();
        args.push("--set".into());
        args.push(format!("source.kafka_config={}", settings.display()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        self.cmd(&refs)
    }

    /// The table's rows; none while the job has not created it yet.
    pub fn results(&self) -> Vec<String> {
        let out = self
            .cmd(&["results", "--sink", "clickhouse"])
            .output()
            .unwrap();
        if not_created_yet(&out) {
            return Vec::new();
        }
        assert!(
            out.status.success(),
            "results failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        results_lines(&out)
    }

    pub fn assert_exact(&self) {
        assert_same_results(&self.results(), &self.data.expected_results());
        assert_anomalies_exactly_once(&self.log, &self.data.expected_anomalies());
    }
}

/// `results` failed only because no job has created the table yet (a test
/// that polls while its job starts).
pub fn not_created_yet(out: &Output) -> bool {
    !out.status.success()
        && String::from_utf8_lossy(&out.stderr)
            .contains("does not exist. Check `database` and `table`")
}

pub fn ok(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        out.status.success(),
        "streamforge failed: {}\n{stderr}",
        out.status
    );
    stderr
}
