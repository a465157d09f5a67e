//! `streamforge bench core`: the core path on one thread, from in-memory
//! payloads: parse, clean, dedup, window updates with exact distinct users,
//! and checkpoints (snapshot, encode, sled commit + flush) at a fixed event
//! interval. Prints events/s, ns/event, checkpoint pause percentiles and
//! bytes, state bytes per distinct user, and peak RSS.
//!
//! Payloads come from the generator in chunks that are produced outside the
//! timed sections, so the figures measure StreamForge, not the generator.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::checkpoint::{Checkpoint, CheckpointStore};
use crate::engine::Engine;
use crate::source::generator::GeneratorConfig;
use crate::window::{WindowRow, WindowSpec};

#[derive(Debug, Clone)]
pub struct CoreBenchOptions {
    pub events: u64,
    pub users: u64,
    pub partitions: u32,
    /// Event-time rate per partition: with `users` users, the rate decides
    /// how many distinct users a window holds.
    pub rate: u64,
    pub checkpoint_every: u64,
    pub anomaly_share: f64,
    pub duplicate_share: f64,
}

impl Default for CoreBenchOptions {
    fn default() -> Self {
        CoreBenchOptions {
            events: 20_000_000,
            users: 100_000,
            partitions: 4,
            rate: 10_000,
            checkpoint_every: 2_000_000,
            anomaly_share: 0.01,
            duplicate_share: 0.02,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CoreBenchReport {
    pub events: u64,
    pub seconds_total: f64,
    pub events_per_second: f64,
    pub ns_per_event: f64,
    pub events_per_second_without_checkpoints: f64,
    pub checkpoints: usize,
    pub checkpoint_pause_p50_ms: f64,
    pub checkpoint_pause_p99_ms: f64,
    pub checkpoint_pause_max_ms: f64,
    pub checkpoint_bytes_max: usize,
    pub max_user_entries: usize,
    pub max_distinct_users_per_window: u64,
    pub checkpoint_bytes_per_user_entry: f64,
    pub peak_rss_mib: f64,
    pub windows_emitted: usize,
}

/// Peak resident set size of this process, from /proc (Linux).
pub fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
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

pub fn core(opts: &CoreBenchOptions) -> anyhow::Result<CoreBenchReport> {
    let gen = GeneratorConfig {
        seed: 1,
        partitions: opts.partitions,
        events_per_partition: None,
        rate: opts.rate,
        users: opts.users,
        anomaly_share: opts.anomaly_share,
        duplicate_share: opts.duplicate_share,
        late_share: 0.0,
        disorder_ms: 2_000,
        ..GeneratorConfig::default()
    };
    let spec = WindowSpec::DEFAULT;
    let dir = tempfile::tempdir()?;
    let store = CheckpointStore::open(dir.path(), 3)?;
    let mut engine = Engine::new(spec, opts.partitions as usize);
    let mut out: Vec<WindowRow> = Vec::new();

    const CHUNK: u64 = 100_000;
    let mut data: Vec<u8> = Vec::with_capacity(CHUNK as usize * 200);
    let mut spans: Vec<(u32, usize, usize)> = Vec::with_capacity(CHUNK as usize);
    let mut next = vec![0u64; opts.partitions as usize];
    let mut processed = 0u64;
    let mut since_checkpoint = 0u64;
    let mut busy = Duration::ZERO;
    let mut pauses = Vec::new();
    let mut max_bytes = 0usize;
    let mut max_users = 0usize;
    let mut checkpoint_id = 0u64;
    let mut windows = 0usize;
    let mut max_window_users = 0u64;

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
        let t = Instant::now();
        let now_s = crate::time::now_ms() / 1000;
        for &(p, s, e) in &spans {
            engine.process(p as usize, &data[s..e], now_s, &mut out);
        }
        engine.flush_updates(now_s, &mut out);
        busy += t.elapsed();
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
        if since_checkpoint >= opts.checkpoint_every {
            since_checkpoint = 0;
            checkpoint_id += 1;
            let t = Instant::now();
            let bytes = store.commit(&Checkpoint {
                id: checkpoint_id,
                created_ms: crate::time::now_ms(),
                source_id: "bench".into(),
                offsets: next
                    .iter()
                    .enumerate()
                    .map(|(p, o)| (p as u32, *o))
                    .collect(),
                anomaly_log_len: 0,
                engine: engine.snapshot(),
                pending: Vec::new(),
            })?;
            pauses.push(t.elapsed());
            max_bytes = max_bytes.max(bytes);
        }
    }
    let total = busy + pauses.iter().sum::<Duration>();
    pauses.sort();
    Ok(CoreBenchReport {
        events: processed,
        seconds_total: total.as_secs_f64(),
        events_per_second: processed as f64 / total.as_secs_f64(),
        ns_per_event: total.as_nanos() as f64 / processed as f64,
        events_per_second_without_checkpoints: processed as f64 / busy.as_secs_f64(),
        checkpoints: pauses.len(),
        checkpoint_pause_p50_ms: percentile_ms(&pauses, 0.5),
        checkpoint_pause_p99_ms: percentile_ms(&pauses, 0.99),
        checkpoint_pause_max_ms: pauses.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
        checkpoint_bytes_max: max_bytes,
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
             | events | {} |\n\
             | events/s (with checkpoints) | {:.0} |\n\
             | ns/event | {:.0} |\n\
             | events/s (processing only) | {:.0} |\n\
             | checkpoints | {} |\n\
             | checkpoint pause p50 / p99 / max | {:.1} / {:.1} / {:.1} ms |\n\
             | checkpoint bytes (max) | {} |\n\
             | distinct users per window (max) | {} |\n\
             | user entries in state (max) | {} |\n\
             | checkpoint bytes per user entry | {:.1} |\n\
             | peak RSS | {:.0} MiB |\n",
            self.events,
            self.events_per_second,
            self.ns_per_event,
            self.events_per_second_without_checkpoints,
            self.checkpoints,
            self.checkpoint_pause_p50_ms,
            self.checkpoint_pause_p99_ms,
            self.checkpoint_pause_max_ms,
            self.checkpoint_bytes_max,
            self.max_distinct_users_per_window,
            self.max_user_entries,
            self.checkpoint_bytes_per_user_entry,
            self.peak_rss_mib
        )
    }
}
