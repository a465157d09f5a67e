//! `streamforge-tools bench core`: the core path on one thread, from in-memory
//! payloads: parse, clean, dedup, window updates with exact distinct users,
//! and checkpoints at a fixed event interval, taken as the job takes them:
//! the engine's changes handed over on the processing thread, the rest
//! (replica, encoding, sled commit + flush, a new base now and then) on the
//! committer's thread while processing goes on; a barrier that finds the
//! previous checkpoint still in flight is deferred, as in the job. Prints
//! events/s, ns/event, checkpoint pause percentiles and bytes (deltas and
//! bases), the in-process recovery time, state bytes per distinct user, and
//! peak RSS.
//!
//! Payloads come from the generator in chunks that are produced outside the
//! timed sections, so the figures measure StreamForge, not the generator.

use std::time::{Duration, Instant};

use serde::Serialize;

use streamforge::checkpoint::committer::{Commit, Committer};
use streamforge::checkpoint::{Checkpoint, CheckpointStore, Delta, Written};
use streamforge::engine::{Engine, Lookahead};
use streamforge::source::generator::{GeneratorConfig, PayloadStyle};
use streamforge::window::{WindowRow, WindowSpec};

#[derive(Debug, Clone)]
pub struct CoreBenchOptions {
    pub events: u64,
    pub users: u64,
    /// Distinct users per 60 s window to aim for: when set, `users` (the
    /// pool) is sized for it at `rate` (see [`core_user_pool`]).
    pub users_per_window: Option<u64>,
    pub partitions: u32,
    /// Event-time rate per partition: with `users` users, the rate decides
    /// how many distinct users a window holds.
    pub rate: u64,
    pub checkpoint_every: u64,
    pub anomaly_share: f64,
    pub duplicate_share: f64,
    /// How the payloads are written.
    pub style: PayloadStyle,
}

impl Default for CoreBenchOptions {
    fn default() -> Self {
        CoreBenchOptions {
            events: 20_000_000,
            users: 100_000,
            users_per_window: None,
            partitions: 4,
            rate: 10_000,
            checkpoint_every: 2_000_000,
            anomaly_share: 0.01,
            duplicate_share: 0.02,
            style: PayloadStyle::Canonical,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CoreBenchReport {
    /// The payload style the figures are for.
    pub style: String,
    pub anomaly_share: f64,
    pub duplicate_share: f64,
    /// Average payload size.
    pub bytes_per_event: f64,
    pub events: u64,
    pub seconds_total: f64,
    pub events_per_second: f64,
    pub ns_per_event: f64,
    pub events_per_second_without_checkpoints: f64,
    /// Processing only, per second of this thread's CPU time: the one-core
    /// figure, whatever else the machine runs.
    pub events_per_cpu_second: f64,
    /// CPU time of parsing and cleaning alone (`parse_event` over the same
    /// payloads, in a separate untimed-for-throughput pass).
    pub parse_ns_per_event: f64,
    pub checkpoints: usize,
    pub checkpoint_pause_p50_ms: f64,
    pub checkpoint_pause_p99_ms: f64,
    pub checkpoint_pause_max_ms: f64,
    /// Barriers deferred because the previous checkpoint was in flight.
    pub checkpoints_deferred: usize,
    /// Applying to the replica, encoding, writing and flushing, on the
    /// committer's thread while processing goes on.
    pub checkpoint_commit_p50_ms: f64,
    pub checkpoint_commit_max_ms: f64,
    /// The largest frame written (a base: the whole state).
    pub checkpoint_bytes_max: usize,
    /// Frames written as deltas: median and largest size.
    pub checkpoint_delta_bytes_p50: usize,
    pub checkpoint_delta_bytes_max: usize,
    /// Checkpoints written as bases (the first one, and compactions).
    pub checkpoint_bases: usize,
    /// All frames written, over the checkpoints.
    pub checkpoint_bytes_mean: f64,
    /// In this process, after the run: open the store, read and decode the
    /// newest checkpoint's chain; then rebuild the engine from it.
    pub recovery_load_ms: f64,
    pub recovery_restore_ms: f64,
    pub user_pool: u64,
    pub max_user_entries: usize,
    pub max_distinct_users_per_window: u64,
    pub checkpoint_bytes_per_user_entry: f64,
    pub peak_rss_mib: f64,
    pub windows_emitted: usize,
}

/// Peak resident set size of this process, from /proc (Linux).
pub fn peak_rss_bytes() -> u64 {
    peak_rss_from("/proc/self/status")
}

/// `VmHWM` of a /proc status file, in bytes (0 when unreadable).
fn peak_rss_from(status: &str) -> u64 {
    std::fs::read_to_string(status)
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

/// The user pool that gives about `per_window` distinct users in a 60 s
/// window when `partitions` partitions send `rate` orders a second each.
pub fn core_user_pool(per_window: u64, rate: u64, partitions: u32) -> u64 {
    let draws = (rate * partitions as u64 * 60) as f64;
    user_pool(per_window, draws / per_window.max(1) as f64)
}

/// The checkpoints of `bench core`, taken as the job takes them.
struct Checkpoints {
    committer: Committer<()>,
    next_id: u64,
    pauses: Vec<Duration>,
    commits: Vec<Duration>,
    written: Vec<Written>,
    deferred: usize,
}

impl Checkpoints {
    /// A barrier, as the job's: deferred (false) while the previous
    /// checkpoint is in flight, else the engine's changes handed over.
    fn barrier(&mut self, engine: &mut Engine, next: &[u64]) -> anyhow::Result<bool> {
        let t = Instant::now();
        if let Some(commit) = self.committer.try_finished() {
            self.done(commit)?;
        }
        if self.committer.in_flight().is_some() {
            self.deferred += 1;
            return Ok(false);
        }
        let checkpoint = Checkpoint {
            id: self.next_id,
            created_ms: streamforge::time::now_ms(),
            source_id: "bench".into(),
            offsets: next
                .iter()
                .enumerate()
                .map(|(p, o)| (p as u32, *o))
                .collect(),
            anomaly_log_len: 0,
            engine: engine.take_delta(),
            pending: Vec::new(),
            source_identity: None,
            bounded_end: None,
        };
        let live_entries = engine.live_entries();
        self.committer.start(
            Delta {
                checkpoint,
                live_entries,
            },
            (),
        )?;
        self.next_id += 1;
        self.pauses.push(t.elapsed());
        Ok(true)
    }

    fn done(&mut self, commit: Commit<()>) -> anyhow::Result<()> {
        self.commits.push(commit.took);
        self.written.push(commit.result?);
        Ok(())
    }

    /// Waits for the last commit; returns how long that took.
    fn finish(&mut self) -> anyhow::Result<Duration> {
        let t = Instant::now();
        if let Some(commit) = self.committer.wait() {
            self.done(commit)?;
        }
        Ok(t.elapsed())
    }
}

/// Opens the store in `dir` once sled has let go of it (it releases its
/// lock from a background thread after the last handle drops), recovers
/// the newest checkpoint and restores the engine: (load, restore) times.
fn recover_in_process(
    dir: &std::path::Path,
    partitions: usize,
) -> anyhow::Result<(Duration, Duration)> {
    let waited = Instant::now();
    let mut store = loop {
        match CheckpointStore::open(dir, 3) {
            Ok(store) => break store,
            Err(_) if waited.elapsed() < Duration::from_secs(30) => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => return Err(e.into()),
        }
    };
    let t = Instant::now();
    let recovered = store
        .recover()?
        .0
        .ok_or_else(|| anyhow::anyhow!("no checkpoint to recover"))?;
    let load = t.elapsed();
    let t = Instant::now();
    let chain = &recovered.engine;
    let engine = Engine::restore_chain(chain.base.spec, partitions, &chain.base, &chain.deltas)
        .map_err(anyhow::Error::msg)?;
    let restore = t.elapsed();
    drop(engine);
    Ok((load, restore))
}

pub fn core(opts: &CoreBenchOptions) -> anyhow::Result<CoreBenchReport> {
    let users = opts.users_per_window.map_or(opts.users, |n| {
        core_user_pool(n, opts.rate, opts.partitions)
    });
    let gen = GeneratorConfig {
        seed: 1,
        partitions: opts.partitions,
        events_per_partition: None,
        rate: opts.rate,
        users,
        anomaly_share: opts.anomaly_share,
        duplicate_share: opts.duplicate_share,
        late_share: 0.0,
        disorder_ms: 2_000,
        style: opts.style,
        ..GeneratorConfig::default()
    };
    let spec = WindowSpec::DEFAULT;
    let dir = tempfile::tempdir()?;
    let mut checkpoints = Checkpoints {
        committer: Committer::spawn(CheckpointStore::open(dir.path(), 3)?)?,
        next_id: 1,
        pauses: Vec::new(),
        commits: Vec::new(),
        written: Vec::new(),
        deferred: 0,
    };
    let mut engine = Engine::new(spec, opts.partitions as usize);
    engine.track_changes();
    let mut out: Vec<WindowRow> = Vec::new();

    const CHUNK: u64 = 100_000;
    let mut data: Vec<u8> = Vec::with_capacity(CHUNK as usize * 200);
    let mut spans: Vec<(u32, usize, usize)> = Vec::with_capacity(CHUNK as usize);
    let mut next = vec![0u64; opts.partitions as usize];
    let mut processed = 0u64;
    let mut since_checkpoint = 0u64;
    let mut busy = Duration::ZERO;
    let mut busy_cpu = Duration::ZERO;
    let mut parse_cpu = Duration::ZERO;
    let mut max_users = 0usize;
    let mut windows = 0usize;
    let mut max_window_users = 0u64;
    let mut bytes = 0u64;

    while processed < opts.events {
        // Untimed: produce the next chunk, round-robin over partitions.
        data.clear();
        spans.clear();
        let n = CHUNK.min(opts.events - processed);
        for i in 0..n {
            let p = (i % opts.partitions as u64) as u32;
            let start = data.len();
            gen.payload(p, next[p as usize], &mut data);
            next[p as usize] += 1;
            spans.push((p, start, data.len()));
        }
        bytes += data.len() as u64;
        parse_cpu += parse_spans(&data, &spans);
        let (wall, cpu) = process_spans(&mut engine, &data, &spans, &mut out);
        busy += wall;
        busy_cpu += cpu;
        processed += n;
        since_checkpoint += n;
        windows += out.len();
        max_window_users = out
            .iter()
            .map(|r| r.user_cnt)
            .max()
            .unwrap_or(0)
            .max(max_window_users);
        out.clear();
        max_users = max_users.max(engine.state_stats().1);
        if since_checkpoint >= opts.checkpoint_every && checkpoints.barrier(&mut engine, &next)? {
            since_checkpoint = 0;
        }
    }
    // The run is over when its last checkpoint is durable: the wait counts
    // in the total time, not as a pause (processing is over).
    let last_commit_wait = checkpoints.finish()?;
    drop(engine);
    let Checkpoints {
        committer,
        mut pauses,
        mut commits,
        written,
        deferred,
        ..
    } = checkpoints;
    drop(committer);
    let (load, restore) = recover_in_process(dir.path(), opts.partitions as usize)?;
    commits.sort();
    let total = busy + pauses.iter().sum::<Duration>() + last_commit_wait;
    pauses.sort();
    let max_bytes = written.iter().map(|w| w.bytes).max().unwrap_or(0);
    let mut deltas: Vec<usize> = written
        .iter()
        .filter(|w| !w.base)
        .map(|w| w.bytes)
        .collect();
    deltas.sort();
    Ok(CoreBenchReport {
        style: opts.style.to_string(),
        anomaly_share: opts.anomaly_share,
        duplicate_share: opts.duplicate_share,
        bytes_per_event: bytes as f64 / processed.max(1) as f64,
        events: processed,
        seconds_total: total.as_secs_f64(),
        events_per_second: processed as f64 / total.as_secs_f64(),
        ns_per_event: total.as_nanos() as f64 / processed as f64,
        events_per_second_without_checkpoints: processed as f64 / busy.as_secs_f64(),
        events_per_cpu_second: processed as f64 / busy_cpu.as_secs_f64(),
        parse_ns_per_event: parse_cpu.as_nanos() as f64 / processed as f64,
        checkpoints: pauses.len(),
        checkpoint_pause_p50_ms: percentile_ms(&pauses, 0.5),
        checkpoint_pause_p99_ms: percentile_ms(&pauses, 0.99),
        checkpoint_pause_max_ms: pauses.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
        checkpoints_deferred: deferred,
        checkpoint_commit_p50_ms: percentile_ms(&commits, 0.5),
        checkpoint_commit_max_ms: commits.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
        checkpoint_bytes_max: max_bytes,
        checkpoint_delta_bytes_p50: deltas.get(deltas.len() / 2).copied().unwrap_or(0),
        checkpoint_delta_bytes_max: deltas.last().copied().unwrap_or(0),
        checkpoint_bases: written.iter().filter(|w| w.base).count(),
        checkpoint_bytes_mean: written.iter().map(|w| w.bytes as f64).sum::<f64>()
            / written.len().max(1) as f64,
        recovery_load_ms: load.as_secs_f64() * 1e3,
        recovery_restore_ms: restore.as_secs_f64() * 1e3,
        user_pool: users,
        max_user_entries: max_users,
        max_distinct_users_per_window: max_window_users,
        checkpoint_bytes_per_user_entry: if max_users > 0 {
            max_bytes as f64 / max_users as f64
        } else {
            0.0
        },
        peak_rss_mib: peak_rss_bytes() as f64 / (1024.0 * 1024.0),
        windows_emitted: windows,
    })
}

impl CoreBenchReport {
    pub fn markdown(&self) -> String {
        format!(
            "| metric | value |\n| --- | --- |\n\
             | payload style | {} ({:.0} bytes per event, {}% anomalies, {}% duplicates) |\n\
             | events | {} |\n\
             | events/s (with checkpoints) | {:.0} |\n\
             | ns/event | {:.0} |\n\
             | events/s (processing only) | {:.0} |\n\
             | events per CPU-second (processing only, one thread) | {:.0} |\n\
             | of which parsing and cleaning, CPU ns/event | {:.0} |\n\
             | checkpoints (deferred barriers) | {} ({}) |\n\
             | checkpoint pause p50 / p99 / max | {:.2} / {:.2} / {:.2} ms |\n\
             | checkpoint commit p50 / max (committer thread, overlapping processing) | {:.1} / {:.1} ms |\n\
             | checkpoint bytes: deltas p50 / max, bases (count), mean | {} / {}, {} ({}), {:.0} |\n\
             | recovery in process: load + restore | {:.0} + {:.0} ms |\n\
             | user pool | {} |\n\
             | distinct users per window (max) | {} |\n\
             | user entries in state (max) | {} |\n\
             | checkpoint bytes per user entry | {:.1} |\n\
             | peak RSS | {:.0} MiB |\n",
            self.style,
            self.bytes_per_event,
            self.anomaly_share * 100.0,
            self.duplicate_share * 100.0,
            self.events,
            self.events_per_second,
            self.ns_per_event,
            self.events_per_second_without_checkpoints,
            self.events_per_cpu_second,
            self.parse_ns_per_event,
            self.checkpoints,
            self.checkpoints_deferred,
            self.checkpoint_pause_p50_ms,
            self.checkpoint_pause_p99_ms,
            self.checkpoint_pause_max_ms,
            self.checkpoint_commit_p50_ms,
            self.checkpoint_commit_max_ms,
            self.checkpoint_delta_bytes_p50,
            self.checkpoint_delta_bytes_max,
            self.checkpoint_bytes_max,
            self.checkpoint_bases,
            self.checkpoint_bytes_mean,
            self.recovery_load_ms,
            self.recovery_restore_ms,
            self.user_pool,
            self.max_distinct_users_per_window,
            self.max_user_entries,
            self.checkpoint_bytes_per_user_entry,
            self.peak_rss_mib
        )
    }
}

// ---------------------------------------------------------------------------
// `streamforge-tools bench scaling`: state size, checkpoint pause and recovery time
// at a given number of distinct users per window.
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct ScalingBenchOptions {
    /// Distinct users per 60 s window to aim for (the generator draws users at
    /// random from a pool sized so that a window holds about this many).
    pub distinct_users: u64,
    /// Accepted events per distinct user per window (> 1).
    pub events_per_user: f64,
    pub partitions: u32,
    /// Checkpoints taken (and timed) once the state is at its steady size.
    pub checkpoints: usize,
    /// Real process restarts of `binary` against the state directory.
    pub restarts: usize,
    /// The `streamforge` binary to restart (default: the one built beside
    /// this tool).
    pub binary: Option<std::path::PathBuf>,
}

impl Default for ScalingBenchOptions {
    fn default() -> Self {
        ScalingBenchOptions {
            distinct_users: 100_000,
            events_per_user: 2.0,
            partitions: 4,
            checkpoints: 10,
            restarts: 3,
            binary: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct RestartSample {
    /// Spawn of `streamforge run` to the first batch processed after the
    /// restore (seen in its /metrics).
    pub to_first_event_ms: f64,
    /// Peak RSS of the restarted process when it had processed its first batch.
    pub peak_rss_mib: f64,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ScalingBenchReport {
    pub distinct_users_target: u64,
    pub user_pool: u64,
    pub rate_per_partition: u64,
    pub partitions: u32,
    pub events_processed: u64,
    pub seconds_processing: f64,
    /// Largest `user_cnt` of the windows emitted after the warm-up.
    pub distinct_users_per_window_max: u64,
    /// Windows still open (able to change) in the last checkpoint.
    pub open_windows: usize,
    /// Sum over the open windows of their distinct users.
    pub user_window_pairs: u64,
    pub panes: usize,
    pub user_entries: usize,
    pub dedup_ids: usize,
    pub checkpoint_bytes: usize,
    pub checkpoint_bytes_windows: usize,
    pub checkpoint_bytes_dedup: usize,
    /// checkpoint bytes / sum over open windows of distinct users.
    pub bytes_per_distinct_user_per_open_window: f64,
    /// checkpoint bytes / distinct users of one window (max).
    pub bytes_per_distinct_user: f64,
    pub checkpoints: usize,
    /// What stops processing: taking the engine's changes.
    pub checkpoint_pause_p50_ms: f64,
    pub checkpoint_pause_p99_ms: f64,
    pub checkpoint_pause_max_ms: f64,
    /// The committer's part (replica, encoding, sled write and flush), here
    /// on the benchmark's thread after the pause.
    pub checkpoint_commit_p50_ms: f64,
    pub checkpoint_commit_max_ms: f64,
    /// Frames written as deltas (6 s of event time each): median, largest.
    pub checkpoint_delta_bytes_p50: usize,
    pub checkpoint_delta_bytes_max: usize,
    /// Checkpoints written as bases (the first one, and compactions).
    pub checkpoint_bases: usize,
    /// A whole snapshot of the final state, for comparison (not taken by
    /// the checkpoints).
    pub snapshot_p50_ms: f64,
    /// In this process: open the store, read, crc-check and decode the
    /// newest checkpoint's chain.
    pub load_ms: f64,
    /// In this process: rebuild the engine from the chain.
    pub restore_ms: f64,
    pub restarts: Vec<RestartSample>,
    pub recovery_p50_ms: f64,
    pub recovery_max_ms: f64,
    /// Peak RSS of the benchmark process (building the state, checkpoints).
    pub peak_rss_mib: f64,
}

/// Size of the user pool that gives `distinct` expected distinct users when
/// `k * distinct` users are drawn uniformly at random from it.
fn user_pool(distinct: u64, k: f64) -> u64 {
    // Expected distinct after m draws from U: U (1 - e^{-m/U}). With x = N/U:
    // solve (1 - e^{-k x}) = x on (0, 1) by bisection.
    let (mut lo, mut hi) = (1e-9f64, 1.0f64);
    for _ in 0..100 {
        let x = (lo + hi) / 2.0;
        if 1.0 - (-k * x).exp() > x {
            lo = x;
        } else {
            hi = x;
        }
    }
    (distinct as f64 / lo).round() as u64
}

/// Distinct users of each window still in the state, from a snapshot (pane
/// user lists are sorted).
fn open_window_users(snap: &streamforge::window::WindowsSnapshot, spec: &WindowSpec) -> Vec<u64> {
    let per_window = (spec.size_ms / spec.slide_ms.max(1)).max(1);
    let panes: std::collections::BTreeMap<i64, &Vec<streamforge::dedup::Fp>> =
        snap.panes.iter().map(|(k, _, _, u)| (*k, u)).collect();
    let (Some(first), Some(last)) = (panes.keys().next(), panes.keys().last()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for start in *first..=*last {
        let mut union: std::collections::HashSet<streamforge::dedup::Fp> = Default::default();
        for k in start..start + per_window {
            if let Some(users) = panes.get(&k) {
                union.extend(users.iter().copied());
            }
        }
        out.push(union.len() as u64);
    }
    out
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// `streamforge_events_read_total` from a /metrics endpoint, None while it
/// does not answer.
fn events_read(port: u16) -> Option<u64> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    body.lines()
        .find(|l| l.starts_with("streamforge_events_read_total "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
}

fn peak_rss_of(pid: u32) -> u64 {
    peak_rss_from(&format!("/proc/{pid}/status"))
}

/// Restarts `streamforge run` on the generator against `state_dir` (which
/// holds a checkpoint of the same input) and times it from spawn to the
/// first batch it processed after the restore.
fn restart_once(
    binary: &std::path::Path,
    gen: &GeneratorConfig,
    state_dir: &std::path::Path,
) -> anyhow::Result<RestartSample> {
    use anyhow::{bail, Context};
    let port = free_port()?;
    let log_path = state_dir.join(format!("restart-{port}.log"));
    let log = std::fs::File::create(&log_path)?;
    let set = |k: &str, v: String| ["--set".to_string(), format!("source.generator.{k}={v}")];
    let mut cmd = std::process::Command::new(binary);
    cmd.args(["run", "--config", "/dev/null", "--source", "generator"])
        .arg("--state-dir")
        .arg(state_dir)
        .arg("--anomaly-log")
        .arg(state_dir.join("anomalies.log"))
        .args(["--checkpoint-interval", "1h", "--checkpoint-events", "0"])
        .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
        .args(["--progress", "false", "--set", "batch_size=256"])
        .args(set("seed", gen.seed.to_string()))
        .args(set("partitions", gen.partitions.to_string()))
        .args(set("rate", gen.rate.to_string()))
        .args(set("start_time_ms", gen.start_time_ms.to_string()))
        .args(set("users", gen.users.to_string()))
        .args(set("anomaly_share", gen.anomaly_share.to_string()))
        .args(set("duplicate_share", gen.duplicate_share.to_string()))
        .args(set("late_share", gen.late_share.to_string()))
        .args(set("disorder_ms", gen.disorder_ms.to_string()))
        .args(set(
            "events_per_partition",
            gen.events_per_partition.unwrap_or(u64::MAX).to_string(),
        ))
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log);
    for (k, _) in std::env::vars() {
        if k.starts_with(streamforge::config::ENV_PREFIX) || k == "STREAMFORGE_CONFIG" {
            cmd.env_remove(k);
        }
    }
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    let outcome = loop {
        if let Some(n) = events_read(port) {
            if n > 0 {
                break Ok(started.elapsed());
            }
        }
        if let Some(status) = child.try_wait()? {
            break Err(anyhow::anyhow!("the restarted job exited early ({status})"));
        }
        if started.elapsed() > Duration::from_secs(300) {
            break Err(anyhow::anyhow!("no event processed within 300 s"));
        }
        std::thread::sleep(Duration::from_micros(500));
    };
    let rss = peak_rss_of(child.id());
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
    let elapsed = match outcome {
        Ok(d) => d,
        Err(e) => bail!("{e}; its log ({}):\n{text}", log_path.display()),
    };
    if !text.contains("recovering from checkpoint") {
        bail!(
            "the restarted job did not restore a checkpoint; its log ({}):\n{text}",
            log_path.display()
        );
    }
    let _ = std::fs::remove_file(&log_path);
    Ok(RestartSample {
        to_first_event_ms: elapsed.as_secs_f64() * 1e3,
        peak_rss_mib: rss as f64 / (1024.0 * 1024.0),
    })
}

pub fn scaling(opts: &ScalingBenchOptions) -> anyhow::Result<ScalingBenchReport> {
    use streamforge::source::generator::GeneratorSource;
    use streamforge::source::Source;
    anyhow::ensure!(
        opts.events_per_user > 1.0,
        "--events-per-user must be above 1"
    );
    anyhow::ensure!(opts.partitions > 0, "partitions must be at least 1");
    let spec = WindowSpec::DEFAULT;
    let window_events = opts.distinct_users as f64 * opts.events_per_user;
    let rate = (window_events / (opts.partitions as f64 * spec.size_ms as f64 / 1e3)).ceil() as u64;
    // Warm-up: longer than the state horizon (size + allowed lateness + slide
    // + watermark bound), so panes and dedup ids are at their steady size;
    // then one checkpoint per 6 s of event time.
    let warmup_s = ((spec.size_ms + spec.allowed_lateness_ms + 2 * spec.slide_ms) / 1000) as u64;
    let per_partition = rate * (warmup_s + 6 * opts.checkpoints as u64);
    let gen = GeneratorConfig {
        seed: 1,
        partitions: opts.partitions,
        events_per_partition: Some(per_partition + rate * 3_600),
        rate,
        users: user_pool(opts.distinct_users, opts.events_per_user),
        anomaly_share: 0.01,
        duplicate_share: 0.02,
        late_share: 0.0,
        disorder_ms: 2_000,
        ..GeneratorConfig::default()
    };
    let source_id = GeneratorSource::new(gen.clone())
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .id();
    let dir = tempfile::tempdir()?;
    let mut store = CheckpointStore::open(dir.path(), 3)?;
    let mut engine = Engine::new(spec, opts.partitions as usize);
    engine.track_changes();
    let mut out: Vec<WindowRow> = Vec::new();
    let mut data: Vec<u8> = Vec::with_capacity(64 * 200);
    let mut busy = Duration::ZERO;
    let mut pauses = Vec::new();
    let mut commits = Vec::new();
    let mut written = Vec::new();
    let mut max_window_users = 0u64;
    let mut processed = 0u64;
    let checkpoint_at: Vec<u64> = (1..=opts.checkpoints as u64)
        .map(|i| rate * (warmup_s + 6 * i))
        .collect();
    let mut offset = 0u64;
    for (id, target) in (1u64..).zip(checkpoint_at) {
        // Untimed generation of 64 events per partition at a time, then timed processing.
        while offset < target {
            let n = 64.min(target - offset);
            data.clear();
            let mut spans = Vec::with_capacity(n as usize * opts.partitions as usize);
            for o in offset..offset + n {
                for p in 0..opts.partitions {
                    let s = data.len();
                    gen.payload(p, o, &mut data);
                    spans.push((p, s, data.len()));
                }
            }
            busy += process_spans(&mut engine, &data, &spans, &mut out).0;
            processed += spans.len() as u64;
            offset += n;
            if offset > rate * warmup_s {
                for r in &out {
                    max_window_users = max_window_users.max(r.user_cnt);
                }
            }
            out.clear();
        }
        let t = Instant::now();
        let delta = engine.take_delta();
        pauses.push(t.elapsed());
        let checkpoint = Checkpoint {
            id,
            created_ms: streamforge::time::now_ms(),
            source_id: source_id.clone(),
            offsets: (0..opts.partitions).map(|p| (p, offset)).collect(),
            anomaly_log_len: 0,
            engine: delta,
            pending: Vec::new(),
            source_identity: None,
            bounded_end: None,
        };
        let t = Instant::now();
        written.push(store.commit_delta(Delta {
            checkpoint,
            live_entries: engine.live_entries(),
        })?);
        commits.push(t.elapsed());
    }
    let (panes, user_entries, dedup_ids) = engine.state_stats();
    let peak_rss = peak_rss_bytes();
    let t = Instant::now();
    let snap = engine.snapshot();
    let snapshot_time = t.elapsed();
    drop(engine);
    drop(store);
    let window_users = open_window_users(&snap.windows, &spec);
    let pairs: u64 = window_users.iter().sum();
    let windows_bytes = streamforge::checkpoint::codec::encode(&snap.windows)?.len() - 18;
    let dedup_bytes = streamforge::checkpoint::codec::encode(&snap.dedup)?.len() - 18;
    let state_bytes = streamforge::checkpoint::codec::encode(&snap)?.len();
    drop(snap);

    // In-process recovery, for the breakdown.
    let (load, restore) = recover_in_process(dir.path(), opts.partitions as usize)?;

    let binary = match &opts.binary {
        Some(b) => b.clone(),
        None => product_binary()?,
    };
    let mut restarts = Vec::new();
    for _ in 0..opts.restarts {
        restarts.push(restart_once(&binary, &gen, dir.path())?);
    }
    let mut rec: Vec<Duration> = restarts
        .iter()
        .map(|r| Duration::from_secs_f64(r.to_first_event_ms / 1e3))
        .collect();
    rec.sort();
    let total = busy + pauses.iter().sum::<Duration>() + commits.iter().sum::<Duration>();
    pauses.sort();
    commits.sort();
    let mut deltas: Vec<usize> = written
        .iter()
        .filter(|w| !w.base)
        .map(|w| w.bytes)
        .collect();
    deltas.sort();
    Ok(ScalingBenchReport {
        distinct_users_target: opts.distinct_users,
        user_pool: gen.users,
        rate_per_partition: rate,
        partitions: opts.partitions,
        events_processed: processed,
        seconds_processing: total.as_secs_f64(),
        distinct_users_per_window_max: max_window_users,
        open_windows: window_users.len(),
        user_window_pairs: pairs,
        panes,
        user_entries,
        dedup_ids,
        checkpoint_bytes: state_bytes,
        checkpoint_bytes_windows: windows_bytes,
        checkpoint_bytes_dedup: dedup_bytes,
        bytes_per_distinct_user_per_open_window: state_bytes as f64 / pairs.max(1) as f64,
        bytes_per_distinct_user: state_bytes as f64 / max_window_users.max(1) as f64,
        checkpoints: pauses.len(),
        checkpoint_pause_p50_ms: percentile_ms(&pauses, 0.5),
        checkpoint_pause_p99_ms: percentile_ms(&pauses, 0.99),
        checkpoint_pause_max_ms: pauses.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
        checkpoint_commit_p50_ms: percentile_ms(&commits, 0.5),
        checkpoint_commit_max_ms: commits.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
        checkpoint_delta_bytes_p50: deltas.get(deltas.len() / 2).copied().unwrap_or(0),
        checkpoint_delta_bytes_max: deltas.last().copied().unwrap_or(0),
        checkpoint_bases: written.iter().filter(|w| w.base).count(),
        snapshot_p50_ms: snapshot_time.as_secs_f64() * 1e3,
        load_ms: load.as_secs_f64() * 1e3,
        restore_ms: restore.as_secs_f64() * 1e3,
        recovery_p50_ms: percentile_ms(&rec, 0.5),
        recovery_max_ms: rec.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
        restarts,
        peak_rss_mib: peak_rss as f64 / (1024.0 * 1024.0),
    })
}

impl ScalingBenchReport {
    /// One row of the scaling table (see `markdown_header`).
    pub fn markdown_row(&self) -> String {
        let rss_restarted = self
            .restarts
            .iter()
            .map(|r| r.peak_rss_mib)
            .fold(0.0, f64::max);
        format!(
            "| {} | {} | {} | {:.1} MB | {:.1} MB / {:.1} MB | {:.1} | {:.1} | {:.2} MB / {:.2} MB ({} bases) | {:.2} / {:.2} ms | {:.0} / {:.0} ms | {:.0} ms + {:.0} ms | {:.0} / {:.0} ms | {:.0} MiB | {:.0} MiB |",
            self.distinct_users_target,
            self.distinct_users_per_window_max,
            self.open_windows,
            self.checkpoint_bytes as f64 / 1e6,
            self.checkpoint_bytes_windows as f64 / 1e6,
            self.checkpoint_bytes_dedup as f64 / 1e6,
            self.bytes_per_distinct_user_per_open_window,
            self.bytes_per_distinct_user,
            self.checkpoint_delta_bytes_p50 as f64 / 1e6,
            self.checkpoint_delta_bytes_max as f64 / 1e6,
            self.checkpoint_bases,
            self.checkpoint_pause_p50_ms,
            self.checkpoint_pause_p99_ms,
            self.checkpoint_commit_p50_ms,
            self.checkpoint_commit_max_ms,
            self.load_ms,
            self.restore_ms,
            self.recovery_p50_ms,
            self.recovery_max_ms,
            self.peak_rss_mib,
            rss_restarted,
        )
    }

    pub fn markdown_header() -> &'static str {
        "| distinct users per window (target) | measured (max) | open windows | state bytes (a base) | of which user sets / dedup ids | bytes per distinct user per open window | bytes per distinct user of a window | delta bytes per checkpoint (6 s) p50 / max | pause (job thread) p50 / p99 | commit (committer) p50 / max | in-process load + restore | recovery: process start to first event, p50 / max | peak RSS (building) | peak RSS (restarted) |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    }
}

/// Runs `scaling` for each value of `users`. With more than one value, each
/// runs in a fresh `streamforge-tools bench scaling` process, so peak RSS is per
/// scale, not the largest so far.
pub fn scaling_suite(
    opts: &ScalingBenchOptions,
    users: &[u64],
) -> anyhow::Result<Vec<ScalingBenchReport>> {
    use anyhow::Context;
    if let [one] = users {
        let opts = ScalingBenchOptions {
            distinct_users: *one,
            ..opts.clone()
        };
        return Ok(vec![scaling(&opts)?]);
    }
    let exe = std::env::current_exe()?;
    let binary = match &opts.binary {
        Some(b) => b.clone(),
        None => product_binary()?,
    };
    let dir = tempfile::tempdir()?;
    let mut reports = Vec::new();
    for &n in users {
        eprintln!("bench scaling: {n} distinct users per window (fresh process)");
        let json = dir.path().join(format!("{n}.json"));
        let status = std::process::Command::new(&exe)
            .args(["bench", "scaling", "--users", &n.to_string()])
            .args(["--events-per-user", &opts.events_per_user.to_string()])
            .args(["--checkpoints", &opts.checkpoints.to_string()])
            .args(["--restarts", &opts.restarts.to_string()])
            .arg("--binary")
            .arg(&binary)
            .arg("--json")
            .arg(&json)
            .stdout(std::process::Stdio::null())
            .status()
            .context("cannot start the benchmark process")?;
        anyhow::ensure!(
            status.success(),
            "bench scaling --users {n} failed ({status})"
        );
        let text = std::fs::read_to_string(&json)?;
        reports.push(serde_json::from_str(&text)?);
    }
    Ok(reports)
}

/// Runs one chunk through the engine, as the job does (lookahead, then one
/// flush); returns the wall time and this thread's CPU time it took.
fn process_spans(
    engine: &mut Engine,
    data: &[u8],
    spans: &[(u32, usize, usize)],
    out: &mut Vec<WindowRow>,
) -> (Duration, Duration) {
    let cpu = thread_cpu_time();
    let t = Instant::now();
    let now_s = streamforge::time::now_ms() / 1000;
    let parser = engine.parser();
    let mut records = Lookahead::new(
        spans
            .iter()
            .map(|&(p, s, e)| (p, parser.parse(&data[s..e]))),
    );
    while let Some((p, prepared)) = records.next(engine) {
        engine.apply(p as usize, prepared, now_s, out);
    }
    engine.flush_updates(now_s, out);
    (t.elapsed(), thread_cpu_time().saturating_sub(cpu))
}

/// Parses every payload of a chunk and nothing else; returns the CPU time.
fn parse_spans(data: &[u8], spans: &[(u32, usize, usize)]) -> Duration {
    let cpu = thread_cpu_time();
    for &(_, s, e) in spans {
        let _ = std::hint::black_box(streamforge::event::parse_event(std::hint::black_box(
            &data[s..e],
        )));
    }
    thread_cpu_time().saturating_sub(cpu)
}

/// CPU time this thread has used: unlike wall time, it does not count the
/// time other processes on a busy machine held the core.
pub(crate) fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant
    // Linux supports for every thread.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The `streamforge` binary built beside this tool (`cargo build` puts the
/// workspace's binaries in one directory).
fn product_binary() -> anyhow::Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    let beside = exe.with_file_name(format!("streamforge{}", std::env::consts::EXE_SUFFIX));
    if beside.exists() {
        Ok(beside)
    } else {
        anyhow::bail!(
            "no streamforge binary beside {}: build it (`cargo build --release`) or pass --binary",
            exe.display()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use streamforge::dedup::Fp;
    use streamforge::window::WindowsSnapshot;

    #[test]
    fn the_user_pool_gives_the_target_distinct_count_in_expectation() {
        for (n, k) in [(10_000u64, 2.0f64), (100_000, 10.0), (1_000, 1.5)] {
            let pool = user_pool(n, k) as f64;
            let expected = pool * (1.0 - (-k * n as f64 / pool).exp());
            assert!((expected - n as f64).abs() < 1.0, "{n} {k}: {expected}");
        }
        // Two draws per user: a pool 1.255x the target.
        assert_eq!(user_pool(1_000_000, 2.0) / 1_000, 1_255);
    }

    #[test]
    fn open_windows_count_distinct_users_over_their_panes() {
        let u = |n: u64| Fp { hi: n, lo: 0 };
        let snap = WindowsSnapshot {
            panes: vec![
                (10, 2, 200, vec![u(1), u(2)]),
                (11, 2, 200, vec![u(2), u(3)]),
                (12, 1, 100, vec![u(9)]),
            ],
            ..Default::default()
        };
        // 60 s windows of two 30 s panes: [10, 11], [11, 12], [12, 13].
        assert_eq!(
            open_window_users(&snap, &WindowSpec::DEFAULT),
            vec![3, 3, 1]
        );
    }
}
