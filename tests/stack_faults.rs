//! Fault injection on the real stack: Kafka -> StreamForge -> ClickHouse.
//!
//! Three families, each ending in an exact comparison of ClickHouse (read
//! with `FINAL` by `streamforge results --sink clickhouse`) and of the
//! anomaly log with the oracle of `tests/common`:
//!
//! * **Crash points** (built with `--features failpoints`): the job aborts at
//!   a named point of the checkpoint protocol or of the ClickHouse sink, is
//!   restarted (once more with the point armed, then without), and must end
//!   with the results of one uninterrupted run.
//! * **A failing ClickHouse**, through the fault proxy of
//!   `tests/common/proxy.rs`: HTTP 500s, answers slower than the sink's
//!   timeout, refused connections. The job must keep processing, say that
//!   the sink fails and that it retries, say when it recovered, and lose or
//!   duplicate nothing. (ClickHouse killed for real, and the Kafka broker
//!   killed, are in `tests/stack_exactly_once.rs`.)
//! * **A full filesystem** under the state directory or the anomaly log (a
//!   small tmpfs, mounted by the test: it runs as root). The job must stop
//!   with an error that names the path and says what to do, never panic or
//!   hang, never commit a bad checkpoint, and recover exactly once space is
//!   back.
//!
//! Every wait is on something the job or the proxy says, with a generous
//! deadline (the machine is small and shared); no test sleeps and hopes.
//! Each test has its own topic, table, state directory and proxy; none
//! stops a service. Needs the stack: `scripts/stack.sh up`.

mod common;
#[path = "common/proxy.rs"]
mod proxy;

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use common::stack::{produce_files_to, require_stack, test_stack, unique};
use common::watch::Watched;
use common::*;
use proxy::{FaultProxy, Mode};

const DATABASE: &str = "streamforge_test";

/// A test's own data set, topic, table, state directory and anomaly log.
struct Case {
    tmp: tempfile::TempDir,
    data: DataSet,
    table: String,
    state: PathBuf,
    log: PathBuf,
    /// The ClickHouse settings the job uses (the URL may be a proxy's).
    job_clickhouse: PathBuf,
    /// Settings that reach ClickHouse directly, for reading results.
    direct_clickhouse: PathBuf,
    kafka: PathBuf,
}

impl Case {
    /// Event time advances 100 ms per line per partition, so each barrier
    /// of 4000 records emits a few windows: sink batches hold several rows.
    fn new(seed: u64) -> Case {
        Self::with_shape(Shape {
            partitions: 3,
            per_partition: 20_000,
            step_ms: 100,
            seed,
            ..Shape::default()
        })
    }

    fn with_shape(shape: Shape) -> Case {
        require_stack();
        let tmp = tempfile::tempdir().unwrap();
        let data = make_dataset(&tmp.path().join("in"), &shape);
        let topic = unique("sf_fault");
        let out = test_stack()
            .script(&["topic", &topic, &shape.partitions.to_string()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "creating topic {topic} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let kafka = tmp.path().join("kafka.yaml");
        // A small fetch queue refilled once a second (librdkafka's own
        // default backoff; the job's default is 10 ms), so that the job
        // keeps needing the broker for several seconds and checkpoints
        // while a fault is on: about 256 KB per partition per second.
        std::fs::write(
            &kafka,
            format!(
                "brokers: {}\ntopic: {topic}\ngroup_id: {topic}-group\nproperties:\n  \
                 queued.max.messages.kbytes: \"256\"\n  fetch.max.bytes: \"1048576\"\n  \
                 max.partition.fetch.bytes: \"65536\"\n  fetch.queue.backoff.ms: \"1000\"\n",
                test_stack().kafka
            ),
        )
        .unwrap();
        let case = Case {
            state: tmp.path().join("state"),
            log: tmp.path().join("anomalies.log"),
            table: unique("faults"),
            job_clickhouse: tmp.path().join("clickhouse-job.yaml"),
            direct_clickhouse: tmp.path().join("clickhouse-direct.yaml"),
            kafka,
            data,
            tmp,
        };
        let url = &test_stack().clickhouse_url;
        case.write_clickhouse(&case.direct_clickhouse, url, "30s");
        case.write_clickhouse(&case.job_clickhouse, url, "30s");
        produce_files_to(&topic, std::slice::from_ref(&case.data.dir), false);
        case
    }

    fn write_clickhouse(&self, path: &Path, url: &str, timeout: &str) {
        std::fs::write(
            path,
            format!(
                "url: {url}\ndatabase: {DATABASE}\ntable: {}\ntimeout: {timeout}\nconnect_timeout: 2s\n",
                self.table
            ),
        )
        .unwrap();
    }

    /// Points the job at `url` (a proxy) with this request timeout.
    fn job_clickhouse_at(&self, url: &str, timeout: &str) {
        self.write_clickhouse(&self.job_clickhouse, url, timeout);
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = streamforge(args);
        // Everything comes from the settings files written above.
        for var in [
            "KAFKA_TOPIC",
            "KAFKA_GROUP_ID",
            "KAFKA_BROKERS",
            "CLICKHOUSE_URL",
            "CLICKHOUSE_DATABASE",
            "CLICKHOUSE_TABLE",
            "CLICKHOUSE_USER",
        ] {
            cmd.env_remove(var);
        }
        cmd
    }

    /// The bounded job, with `FAILPOINTS` set to `failpoints` if not empty.
    fn run_cmd(&self, failpoints: &str) -> Command {
        let mut cmd = self.cmd(&[
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
            // Barriers by record count only, so where they fall (and so
            // which crash-point pass lands where) follows the data, not
            // the machine's speed.
            "--checkpoint-interval",
            "0",
            "--checkpoint-events",
            "4000",
            "--set",
            "batch_size=1000",
            "--set",
            "sink.retry_max=1s",
            "--set",
            &format!("source.kafka_config={}", self.kafka.display()),
            "--set",
            &format!("sink.clickhouse_config={}", self.job_clickhouse.display()),
        ]);
        if failpoints.is_empty() {
            cmd.env_remove("FAILPOINTS");
        } else {
            cmd.env("FAILPOINTS", failpoints);
        }
        cmd
    }

    fn spawn(&self, failpoints: &str) -> Watched {
        Watched::attach(spawn(&mut self.run_cmd(failpoints)))
    }

    /// Runs the job to its end and returns how it ended and its log.
    fn run(&self, failpoints: &str) -> (ExitStatus, String) {
        self.spawn(failpoints).finish()
    }

    fn results(&self) -> Vec<String> {
        let out = self
            .cmd(&[
                "results",
                "--sink",
                "clickhouse",
                "--set",
                &format!(
                    "sink.clickhouse_config={}",
                    self.direct_clickhouse.display()
                ),
            ])
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

    /// ClickHouse's final rows, read directly (not through `results`, so
    /// versions are visible).
    fn clickhouse_rows(&self) -> Vec<streamforge::window::WindowRow> {
        use streamforge::sink::clickhouse::{ClickHouseSettings, ClickHouseSink};
        use streamforge::sink::Sink;
        let mut sink = ClickHouseSink::connect(&ClickHouseSettings {
            url: test_stack().clickhouse_url.clone(),
            database: DATABASE.into(),
            table: self.table.clone(),
            create_table: false,
            ..Default::default()
        })
        .unwrap();
        sink.read_final().unwrap_or_default()
    }

    /// The pending batches of the newest checkpoint, each with how many of
    /// its rows ClickHouse holds exactly (same window, same version). Read
    /// while no job runs.
    fn pending_batches_in_clickhouse(&self) -> Vec<(u64, usize, usize)> {
        use streamforge::checkpoint::CheckpointStore;
        let latest = {
            let store = CheckpointStore::open(&self.state, 3).expect("opening the checkpoints");
            store.load_latest().expect("reading the checkpoints").0
        };
        let Some(latest) = latest else {
            return Vec::new();
        };
        let in_sink: std::collections::BTreeMap<i64, u64> = self
            .clickhouse_rows()
            .into_iter()
            .map(|r| (r.window_start, r.version))
            .collect();
        latest
            .pending
            .iter()
            .map(|b| {
                let present = b
                    .rows
                    .iter()
                    .filter(|r| in_sink.get(&r.window_start) == Some(&r.version))
                    .count();
                (b.checkpoint_id, present, b.rows.len())
            })
            .collect()
    }
}

impl Drop for Case {
    fn drop(&mut self) {
        // The table is the test's own: drop it, pass or fail.
        use streamforge::sink::clickhouse::{ClickHouseSettings, ClickHouseSink};
        if let Ok(sink) = ClickHouseSink::connect(&ClickHouseSettings {
            url: test_stack().clickhouse_url.clone(),
            database: DATABASE.into(),
            table: self.table.clone(),
            ..Default::default()
        }) {
            let _ = sink.drop_table();
        }
    }
}

fn assert_success(status: ExitStatus, log: &str) {
    assert!(status.success(), "the job failed: {status}\n{log}");
}

/// Asserts that a run died at crash point `point` (SIGABRT, and said so).
fn assert_aborted_at(point: &str, status: ExitStatus, log: &str) {
    assert_eq!(
        status.signal(),
        Some(libc::SIGABRT),
        "the job was to abort at {point}, but ended with {status}\n{log}"
    );
    assert!(
        log.contains(&format!("failpoint {point} fired")),
        "the job aborted, but not at {point}\n{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
}

/// The `pending_rows` of the run's `recovering from checkpoint` line.
fn recovered_pending_rows(log: &str) -> usize {
    let line = log
        .lines()
        .find(|l| l.contains("recovering from checkpoint"))
        .unwrap_or_else(|| panic!("the restart did not recover from a checkpoint:\n{log}"));
    field(line, "pending_rows")
        .unwrap_or_else(|| panic!("no pending_rows in `{line}`"))
        .parse()
        .unwrap()
}

/// The value of `name=value` in a log line.
fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let at = line.find(&format!("{name}="))? + name.len() + 1;
    line[at..]
        .split(|c: char| c.is_whitespace())
        .next()
        .map(|v| v.trim_matches('"'))
}

// ---------------------------------------------------------------------------
// Crash points
// ---------------------------------------------------------------------------

/// What a crash test checks besides the exact end result.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Nothing more.
    Plain,
    /// The crash left sink output pending: the restart resends it.
    Resend,
}

/// Aborts the job at `point` twice (on its third pass in a first run, on its
/// second pass in the restarted run), then restarts it clean; `extra` arms
/// more points (knobs) in the crashing runs. After each crash `check` looks
/// at what the crash left behind. Ends with the exact comparison.
fn crash_twice_then_recover(
    seed: u64,
    point: &str,
    extra: &str,
    expect: Expect,
    mut check: impl FnMut(&Case),
) {
    if !cfg!(feature = "failpoints") {
        panic!("crash-point tests need the failpoints feature: cargo test --features failpoints");
    }
    let case = Case::new(seed);
    for (run, skip) in [2, 1].into_iter().enumerate() {
        let (status, log) = case.run(&format!("{extra}{point}={skip}*off->return"));
        assert_aborted_at(point, status, &log);
        if run > 0 {
            assert!(log.contains("recovering from checkpoint"), "{log}");
        }
        check(&case);
    }
    let (status, log) = case.run("");
    assert_success(status, &log);
    let pending = recovered_pending_rows(&log);
    if expect == Expect::Resend {
        assert!(
            pending > 0,
            "the crash at {point} left no sink output pending, so the test proved nothing:\n{log}"
        );
    }
    case.assert_exact();
}

#[test]
fn crash_after_the_anomaly_log_sync_before_the_checkpoint() {
    crash_twice_then_recover(
        101,
        "job::barrier::after_anomaly_sync",
        "",
        Expect::Plain,
        |_| {},
    );
}

#[test]
fn crash_before_the_checkpoint_batch_is_written() {
    crash_twice_then_recover(
        102,
        "checkpoint::commit::before_write",
        "",
        Expect::Plain,
        |_| {},
    );
}

#[test]
fn crash_in_the_middle_of_the_checkpoint_write_before_its_flush() {
    crash_twice_then_recover(
        103,
        "checkpoint::commit::before_flush",
        "",
        Expect::Plain,
        |_| {},
    );
}

#[test]
fn crash_right_after_the_checkpoint_flush() {
    crash_twice_then_recover(
        104,
        "checkpoint::commit::after_flush",
        "",
        Expect::Resend,
        |_| {},
    );
}

#[test]
fn crash_right_after_the_commit_before_the_sink_gets_the_rows() {
    crash_twice_then_recover(
        105,
        "job::barrier::after_commit",
        "",
        Expect::Resend,
        |_| {},
    );
}

#[test]
fn crash_after_the_rows_are_handed_to_the_sink_writer() {
    crash_twice_then_recover(
        106,
        "job::barrier::after_submit",
        "",
        Expect::Resend,
        |_| {},
    );
}

#[test]
fn crash_before_the_clickhouse_insert() {
    crash_twice_then_recover(
        107,
        "sink::clickhouse::before_insert",
        "",
        Expect::Resend,
        |case| {
            let batches = case.pending_batches_in_clickhouse();
            assert!(
                batches
                    .iter()
                    .any(|(_, present, total)| *present == 0 && *total > 0),
                "no pending batch is absent from ClickHouse: {batches:?}"
            );
        },
    );
}

#[test]
fn crash_after_part_of_a_sink_batch_is_in_clickhouse() {
    // One INSERT per row, and an abort between two of them.
    crash_twice_then_recover(
        108,
        "sink::clickhouse::between_chunks",
        "sink::clickhouse::insert_chunk_rows=return(1);",
        Expect::Resend,
        |case| {
            let batches = case.pending_batches_in_clickhouse();
            assert!(
                batches
                    .iter()
                    .any(|(_, present, total)| *present > 0 && present < total),
                "no pending batch is partly in ClickHouse (checkpoint id, rows present, rows): {batches:?}"
            );
        },
    );
}

#[test]
fn crash_after_the_clickhouse_insert_before_a_checkpoint_records_it() {
    crash_twice_then_recover(
        109,
        "sink::clickhouse::after_insert",
        "",
        Expect::Resend,
        |case| {
            let batches = case.pending_batches_in_clickhouse();
            assert!(
                batches
                    .iter()
                    .any(|(_, present, total)| *present == *total && *total > 0),
                "no pending batch is wholly in ClickHouse: {batches:?}"
            );
        },
    );
}

#[test]
fn crash_during_recovery_twice_then_recover() {
    if !cfg!(feature = "failpoints") {
        panic!("crash-point tests need the failpoints feature: cargo test --features failpoints");
    }
    let case = Case::new(110);
    // A crash that leaves output pending, so recovery has something to resend.
    let (status, log) = case.run("job::barrier::after_commit=2*off->return");
    assert_aborted_at("job::barrier::after_commit", status, &log);
    // Recovery itself dies, twice: after loading the checkpoint, truncating
    // the anomaly log and resending the pending rows.
    let mut recovered_from = None;
    for _ in 0..2 {
        let (status, log) = case.run("job::recovery::after_resend=return");
        assert_aborted_at("job::recovery::after_resend", status, &log);
        assert!(recovered_pending_rows(&log) > 0, "{log}");
        let line = log
            .lines()
            .find(|l| l.contains("recovering from checkpoint"))
            .unwrap()
            .to_string();
        let id = field(&line, "checkpoint").unwrap().to_string();
        // Nothing is committed during recovery: every attempt starts from
        // the same checkpoint.
        assert!(
            recovered_from.get_or_insert(id.clone()) == &id,
            "recovery moved from checkpoint {recovered_from:?} to {id}"
        );
    }
    let (status, log) = case.run("");
    assert_success(status, &log);
    assert!(recovered_pending_rows(&log) > 0, "{log}");
    case.assert_exact();
}

// ---------------------------------------------------------------------------
// A failing ClickHouse, through the fault proxy
// ---------------------------------------------------------------------------

fn clickhouse_addr() -> std::net::SocketAddr {
    test_stack().clickhouse_addr()
}

/// Runs the job through the proxy; after its first checkpoint, switches
/// the proxy to `fault`, and back to forwarding once the job said the sink
/// fails, committed two more checkpoints meanwhile (processing goes on) and
/// the proxy served `fault` `times` times. Returns the log of the run and
/// the line in which the job reported the failure.
fn sink_fault_mid_run(
    case: &Case,
    proxy: &FaultProxy,
    fault: Mode,
    times: u64,
    served: impl Fn(&proxy::Counts) -> u64,
) -> (String, String) {
    let mut run = case.spawn("");
    assert!(
        run.until_checkpoints(1),
        "the job ended before its first checkpoint:\n{}",
        run.log
    );
    proxy.set_mode(fault);
    let failing = run.wait_for("sink unavailable");
    assert!(
        !run.log.contains("end of the bounded input"),
        "the job read all its input before the sink failed; the data set is too small \
         or the job is no longer paced by the test's Kafka settings:\n{}",
        run.log
    );
    // Processing goes on while the sink fails: two more checkpoints.
    let failed_at = run.checkpoints();
    run.poll_until("two checkpoints with the sink failing", |run| {
        run.checkpoints() >= failed_at + 2
            || run.log.contains("waiting for the sink to acknowledge")
    });
    assert!(
        run.checkpoints() >= failed_at + 2,
        "the job reached the end of its input before it committed two checkpoints with the sink failing; \
         the data set is too small for this machine:\n{}",
        run.log
    );
    run.wait_until(&format!("{times} requests meeting {fault:?}"), || {
        served(&proxy.counts()) >= times
    });
    proxy.set_mode(Mode::Forward);
    run.wait_for("sink is accepting writes again");
    let (status, log) = run.finish();
    assert_success(status, &log);
    (log, failing)
}

#[test]
fn clickhouse_answering_500s_mid_run_is_retried_and_results_stay_exact() {
    let case = Case::new(201);
    let proxy = FaultProxy::start(clickhouse_addr());
    case.job_clickhouse_at(&proxy.url(), "10s");
    let (log, failing) = sink_fault_mid_run(&case, &proxy, Mode::Fail500, 5, |c| c.failed_500);
    // The job says what fails, that it keeps the rows and retries.
    for words in [
        "HTTP 500",
        "Memory limit (total) exceeded",
        "(retryable)",
        "output stays pending in checkpoints and is retried with backoff",
        "processing goes on",
    ] {
        assert!(failing.contains(words), "`{words}` missing from: {failing}");
    }
    assert!(!log.contains("failed for good"), "{log}");
    assert!(proxy.counts().failed_500 >= 5);
    case.assert_exact();
}

#[test]
fn clickhouse_slower_than_the_sink_timeout_is_retried_and_results_stay_exact() {
    let case = Case::new(202);
    let proxy = FaultProxy::start(clickhouse_addr());
    // Requests time out after 1 s; the proxy holds them 3 s and then
    // delivers them anyway, so ClickHouse applies inserts the job gave up
    // on: the retries write the same rows again, and idempotence absorbs it.
    case.job_clickhouse_at(&proxy.url(), "1s");
    let (_, failing) =
        sink_fault_mid_run(&case, &proxy, Mode::Slow(Duration::from_secs(3)), 3, |c| {
            c.delayed
        });
    for words in [
        "No complete answer within 1s",
        "(retryable)",
        "retried with backoff",
    ] {
        assert!(failing.contains(words), "`{words}` missing from: {failing}");
    }
    assert!(proxy.counts().delayed >= 3);
    case.assert_exact();
}

#[test]
fn clickhouse_refusing_connections_mid_run_is_retried_and_results_stay_exact() {
    let case = Case::new(203);
    let proxy = FaultProxy::start(clickhouse_addr());
    case.job_clickhouse_at(&proxy.url(), "10s");
    let (_, failing) = sink_fault_mid_run(&case, &proxy, Mode::Refuse, 20, |c| c.refusing_passes);
    for words in ["Is ClickHouse running and reachable at", "(retryable)"] {
        assert!(failing.contains(words), "`{words}` missing from: {failing}");
    }
    case.assert_exact();
}

// ---------------------------------------------------------------------------
// A full filesystem under the state directory or the anomaly log
// ---------------------------------------------------------------------------

/// A small tmpfs mounted by the test (it runs as root), unmounted on drop.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. `1m`) on `dir`. A failure fails the
    /// test: the fault must be tested, never silently skipped.
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output();
        match out {
            Ok(out) if out.status.success() => Tmpfs {
                dir: dir.to_path_buf(),
            },
            other => panic!(
                "cannot mount a {size} tmpfs on {} ({}): this test fills a small filesystem under the job and \
                 needs root (or CAP_SYS_ADMIN) to mount one. Run it as root; it is not skipped",
                dir.display(),
                match other {
                    Ok(out) => format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim()),
                    Err(e) => e.to_string(),
                }
            ),
        }
    }

    /// Changes the size, keeping the files: how an operator frees space.
    fn resize(&self, size: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cannot grow the tmpfs on {}: {}",
            self.dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn free_bytes(&self) -> u64 {
        let path = std::ffi::CString::new(self.dir.to_str().unwrap()).unwrap();
        // SAFETY: statvfs fills the struct it is given.
        unsafe {
            let mut s: libc::statvfs = std::mem::zeroed();
            assert_eq!(libc::statvfs(path.as_ptr(), &mut s), 0);
            s.f_bavail * s.f_frsize
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// Ids of the checkpoints a run reported committed.
fn committed_ids(log: &str) -> Vec<u64> {
    log.lines()
        .filter(|l| l.contains("checkpoint committed"))
        .filter_map(|l| field(l, "checkpoint")?.parse().ok())
        .collect()
}

/// Asserts that a run stopped on a full disk the way an operator needs: exit
/// status 1 (no panic, no abort, no hang: `finish` has a deadline), and an
/// error that names `path` and says what to do.
fn assert_stopped_on_full_disk(status: ExitStatus, log: &str, path: &Path) {
    assert_eq!(
        status.code(),
        Some(1),
        "the job did not stop with an error: {status}\n{log}"
    );
    assert!(!log.contains("panicked"), "the job panicked:\n{log}");
    let error = log
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line:\n{log}"));
    let sizes: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("checkpoint committed"))
        .filter_map(|l| field(l, "bytes"))
        .collect();
    eprintln!("stopped on a full disk after checkpoints of {sizes:?} bytes: {error}");
    for words in [
        "No space left on device",
        path.to_str().unwrap(),
        "is full: free space",
        "then restart",
    ] {
        assert!(error.contains(words), "`{words}` missing from: {error}");
    }
}

/// Every checkpoint in the store verifies.
fn assert_checkpoints_all_good(case: &Case) -> String {
    let out = case
        .cmd(&[
            "checkpoint",
            "list",
            "--state-dir",
            case.state.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "checkpoint list failed: {}\n{listing}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!listing.contains("CORRUPT"), "{listing}");
    listing
}

#[test]
fn a_full_filesystem_under_the_state_directory_stops_the_job_and_recovery_is_exact() {
    // 100 events per second of event time per partition: ~30,000 live
    // dedup ids at the peak, checkpoints of a few hundred KB.
    let case = Case::with_shape(Shape {
        partitions: 3,
        per_partition: 20_000,
        step_ms: 10,
        seed: 301,
        ..Shape::default()
    });
    // Room for the first checkpoints, not for the store's working size.
    let fs = Tmpfs::mount(&case.state, "1m");

    let (status, log) = case.run("");
    assert_stopped_on_full_disk(status, &log, &case.state.join("checkpoints"));
    let committed = committed_ids(&log);
    let with_state = log
        .lines()
        .filter(|l| l.contains("checkpoint committed"))
        .filter_map(|l| field(l, "bytes")?.parse::<u64>().ok())
        .any(|bytes| bytes > 10_000);
    assert!(
        with_state,
        "the filesystem filled before a checkpoint with state; the test wants a job that resumes:\n{log}"
    );
    let last = *committed.last().unwrap();
    assert!(
        log.contains(&format!(
            "a restart resumes from checkpoint {last}, the last committed one"
        )),
        "{log}"
    );

    // Restarted while the disk is still full (what a supervisor does): it
    // must fail the same clean way, and leave the store usable.
    let (status, again) = case.run("");
    assert_stopped_on_full_disk(status, &again, &case.state.join("checkpoints"));

    fs.resize("256m");
    assert!(fs.free_bytes() > 100 << 20);
    assert_checkpoints_all_good(&case);
    let (status, log) = case.run("");
    assert_success(status, &log);
    let line = log
        .lines()
        .find(|l| l.contains("recovering from checkpoint"))
        .unwrap_or_else(|| panic!("no recovery after space came back:\n{log}"));
    let from: u64 = field(line, "checkpoint").unwrap().parse().unwrap();
    assert!(
        from >= last,
        "recovered from {from}, older than {last}:\n{log}"
    );
    case.assert_exact();
    drop(fs);
}

#[test]
fn a_full_filesystem_under_the_anomaly_log_stops_the_job_and_recovery_is_exact() {
    let mut case = Case::new(302);
    let logs = case.tmp.path().join("logs");
    // Room for the anomalies of the first few checkpoints (~100 lines of
    // ~350 bytes each), not for the ~1,450 of the data set.
    let fs = Tmpfs::mount(&logs, "256k");
    case.log = logs.join("anomalies.log");

    let (status, log) = case.run("");
    assert_stopped_on_full_disk(status, &log, &case.log);
    assert!(
        committed_ids(&log).len() >= 2,
        "the log filled before two checkpoints; the test wants a job that resumes mid-input:\n{log}"
    );

    let (status, again) = case.run("");
    assert_stopped_on_full_disk(status, &again, &case.log);

    fs.resize("16m");
    assert_checkpoints_all_good(&case);
    let (status, log) = case.run("");
    assert_success(status, &log);
    assert!(log.contains("recovering from checkpoint"), "{log}");
    case.assert_exact();
    drop(fs);
}
