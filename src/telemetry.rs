//! Logs and metrics.
//!
//! Logs go through `tracing`, filtered by `RUST_LOG` (default `info`), as text
//! or JSON (`--log-format json`). At info level the job writes one line per
//! checkpoint and per state change (recovering, sink down, source down), never
//! one per event: per-event facts are counted here and published per batch.
//!
//! Metrics are kept in a `prometheus-client` registry and served as
//! Prometheus text on `/metrics`, next to `/health` (the process is alive) and
//! `/ready` (recovered, caught up with the input, sink accepting writes), by
//! the HTTP listener of [`http`] (axum), on by default on loopback
//! (`metrics_addr`, `--metrics-addr`; `off` turns it off). The same
//! listener serves the live page (`/`) and the document it polls
//! (`/api/status`, [`status`]), fed by the registry and by [`live`]: the
//! windows the sink acknowledged, the last checkpoints and the partition
//! clocks, kept in small rings.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::{text::encode, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use crate::engine::{Counters, Engine};
use crate::event::Reason;

pub mod http;
pub mod live;
pub mod status;
pub use http::{start, Listener};

/// Sets up `tracing` once per process.
pub fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.compact().try_init()
    };
}

/// `2025-11-25T10:01:00.000Z`, or `-inf` / `+inf`.
pub fn format_watermark(ms: i64) -> String {
    match ms {
        i64::MIN => "-inf".into(),
        i64::MAX => "+inf".into(),
        ms => crate::time::format_rfc3339_ms(ms),
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabel {
    pub partition: String,
}

/// A grouping of grouped results (`city`, `city_category`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupingLabel {
    pub grouping: String,
}

pub struct Metrics {
    registry: Mutex<Registry>,
    /// Window emissions whose values did not all fit in the limit, and the
    /// events counted in their `other` row, per grouping.
    pub grouped_windows_folded: Family<GroupingLabel, Counter>,
    pub grouped_events_folded: Family<GroupingLabel, Counter>,
    pub events_read: Counter,
    pub events_accepted: Counter,
    pub events_duplicate: Counter,
    pub events_late: Counter,
    pub events_anomalous: Family<ReasonLabel, Counter>,
    pub windows_emitted: Counter,
    pub windows_re_emitted: Counter,
    pub watermark_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub watermark_lag_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub consumer_lag: Family<PartitionLabel, Gauge>,
    pub checkpoint_duration: Histogram,
    pub checkpoint_commit_duration: Histogram,
    pub checkpoint_bytes: Gauge,
    pub last_checkpoint_id: Gauge,
    pub last_checkpoint_time: Gauge,
    /// Checkpoints this process committed.
    pub checkpoints_committed: Counter,
    /// The checkpoint this run recovered from: -1 until start-up has
    /// decided, 0 for a start from the beginning of the input.
    pub recovered_from_checkpoint: Gauge,
    /// Rows pending in that checkpoint, sent to the sink again.
    pub recovery_resent_rows: Gauge,
    /// The next offset the job processes, per partition.
    pub current_offset: Family<PartitionLabel, Gauge>,
    /// The offsets this run resumed at, per partition.
    pub recovered_offset: Family<PartitionLabel, Gauge>,
    /// `current_offset`'s gauges by partition, so a batch sets them without
    /// formatting labels.
    offset_gauges: Mutex<Vec<Gauge>>,
    pub sink_batch_latency: Histogram,
    pub sink_retries: Counter,
    pub restarts_recovered: Counter,
    pub state_panes: Gauge,
    pub state_user_entries: Gauge,
    pub state_dedup_ids: Gauge,
    /// Records read but held back, by why: `alignment` (the partition runs
    /// ahead) or `unconfirmed_time` (a time jump waiting for confirmation).
    pub held_records: Family<ReasonLabel, Gauge>,
    last: Mutex<Counters>,
    pub ready: AtomicBool,
    /// Why not ready (a [`NotReady`] as u8), for the body of `/ready`.
    pub not_ready: std::sync::atomic::AtomicU8,
    last_checkpoint_ms: AtomicI64,
    /// What the live page shows beside the registry (see [`live`]).
    pub live: live::Live,
}

/// Why `/ready` answers 503, said in its body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum NotReady {
    /// Recovering, or not yet through its first round of the input.
    Starting = 0,
    /// A partition has a backlog (see `streamforge_consumer_lag`).
    Backlog = 1,
    /// The sink does not take writes; rows are pending.
    SinkWaiting = 2,
}

impl NotReady {
    /// The body line of a 503 from `/ready`.
    pub fn explain(code: u8) -> &'static str {
        match code {
            1 => "not ready: catching up, a partition has a backlog (streamforge_consumer_lag)\n",
            2 => "not ready: the sink does not take writes; rows are pending (see the log)\n",
            _ => {
                "not ready: starting (recovering state, or reading the input for the first time)\n"
            }
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let m = Metrics {
            registry: Mutex::new(Registry::with_prefix("streamforge")),
            events_read: Counter::default(),
            events_accepted: Counter::default(),
            events_duplicate: Counter::default(),
            events_late: Counter::default(),
            events_anomalous: Family::default(),
            grouped_windows_folded: Family::default(),
            grouped_events_folded: Family::default(),
            windows_emitted: Counter::default(),
            windows_re_emitted: Counter::default(),
            watermark_seconds: Gauge::default(),
            watermark_lag_seconds: Gauge::default(),
            consumer_lag: Family::default(),
            checkpoint_duration: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            checkpoint_commit_duration: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            checkpoint_bytes: Gauge::default(),
            last_checkpoint_id: Gauge::default(),
            last_checkpoint_time: Gauge::default(),
            checkpoints_committed: Counter::default(),
            recovered_from_checkpoint: Gauge::default(),
            recovery_resent_rows: Gauge::default(),
            current_offset: Family::default(),
            recovered_offset: Family::default(),
            offset_gauges: Mutex::new(Vec::new()),
            sink_batch_latency: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            sink_retries: Counter::default(),
            restarts_recovered: Counter::default(),
            state_panes: Gauge::default(),
            state_user_entries: Gauge::default(),
            state_dedup_ids: Gauge::default(),
            held_records: Family::default(),
            last: Mutex::new(Counters::default()),
            ready: AtomicBool::new(false),
            not_ready: std::sync::atomic::AtomicU8::new(NotReady::Starting as u8),
            last_checkpoint_ms: AtomicI64::new(0),
            live: live::Live::default(),
        };
        m.recovered_from_checkpoint.set(-1);
        {
            let mut r = m.registry.lock().unwrap_or_else(|e| e.into_inner());
            m.register_event_metrics(&mut r);
            m.register_checkpoint_metrics(&mut r);
            m.register_sink_and_state_metrics(&mut r);
        }
        m
    }

    /// Records, events and windows.
    fn register_event_metrics(&self, r: &mut Registry) {
        let m = self;
        r.register(
            "events_read",
            "Records read from the source",
            m.events_read.clone(),
        );
        r.register(
            "events_accepted",
            "Events accepted into windows",
            m.events_accepted.clone(),
        );
        r.register(
            "events_duplicate",
            "Events dropped as duplicates of an accepted event_id",
            m.events_duplicate.clone(),
        );
        r.register(
            "events_late",
            "Events too late for every window they belong to",
            m.events_late.clone(),
        );
        r.register(
            "events_anomalous",
            "Records sent to the anomaly log, by reason",
            m.events_anomalous.clone(),
        );
        r.register(
            "windows_emitted",
            "Windows emitted for the first time",
            m.windows_emitted.clone(),
        );
        r.register(
            "grouped_windows_folded",
            "Grouped window emissions with values folded into `other` (over the limit), by grouping",
            m.grouped_windows_folded.clone(),
        );
        r.register(
            "grouped_events_folded",
            "Events counted in the `other` row of those emissions, by grouping",
            m.grouped_events_folded.clone(),
        );
        r.register(
            "windows_re_emitted",
            "Windows emitted again after late updates",
            m.windows_re_emitted.clone(),
        );
        r.register_with_unit(
            "watermark",
            "Current job watermark (event time)",
            Unit::Seconds,
            m.watermark_seconds.clone(),
        );
        r.register_with_unit(
            "watermark_lag",
            "Wall clock minus the watermark",
            Unit::Seconds,
            m.watermark_lag_seconds.clone(),
        );
        r.register(
            "consumer_lag",
            "Records between the next offset and the end of the partition",
            m.consumer_lag.clone(),
        );
    }

    /// Checkpoints: their pause, commit time, size and progress.
    fn register_checkpoint_metrics(&self, r: &mut Registry) {
        let m = self;
        r.register_with_unit(
                "checkpoint_duration",
                "Pause of processing per checkpoint (waiting for the previous commit, then the snapshot)",
                Unit::Seconds,
                m.checkpoint_duration.clone(),
            );
        r.register_with_unit(
                "checkpoint_commit_duration",
                "Encoding, writing and flushing a checkpoint, on the committer thread while processing goes on",
                Unit::Seconds,
                m.checkpoint_commit_duration.clone(),
            );
        r.register_with_unit(
            "checkpoint_size",
            "Size of the last checkpoint",
            Unit::Bytes,
            m.checkpoint_bytes.clone(),
        );
        r.register(
            "checkpoints_committed",
            "Checkpoints committed by this process",
            m.checkpoints_committed.clone(),
        );
        r.register(
            "recovered_from_checkpoint",
            "Checkpoint this run recovered from (0: the beginning of the input; -1: start-up not done)",
            m.recovered_from_checkpoint.clone(),
        );
        r.register(
            "recovery_resent_rows",
            "Rows pending in the recovered checkpoint, sent to the sink again",
            m.recovery_resent_rows.clone(),
        );
        r.register(
            "recovered_offset",
            "Offset this run resumed at, per partition",
            m.recovered_offset.clone(),
        );
        r.register(
            "current_offset",
            "Next offset the job processes, per partition",
            m.current_offset.clone(),
        );
        r.register(
            "last_checkpoint_id",
            "Id of the last committed checkpoint",
            m.last_checkpoint_id.clone(),
        );
        r.register_with_unit(
            "last_checkpoint_timestamp",
            "Wall clock of the last committed checkpoint",
            Unit::Seconds,
            m.last_checkpoint_time.clone(),
        );
    }

    /// The sink, recoveries and the size of the state.
    fn register_sink_and_state_metrics(&self, r: &mut Registry) {
        let m = self;
        r.register_with_unit(
            "sink_batch_latency",
            "Time from handing a batch to the sink to its acknowledgement",
            Unit::Seconds,
            m.sink_batch_latency.clone(),
        );
        r.register(
            "sink_retries",
            "Sink writes retried after a failure",
            m.sink_retries.clone(),
        );
        // Counted by the sink itself (process-wide), where it writes them.
        r.register(
            "sink_dead_letters",
            "Rows the sink refused for a reason about the row, written to the dead-letter file",
            crate::sink::dead_letters::counter().clone(),
        );
        r.register(
            "restarts_recovered",
            "Starts that recovered from a checkpoint",
            m.restarts_recovered.clone(),
        );
        r.register("state_panes", "Live panes", m.state_panes.clone());
        r.register(
            "state_user_entries",
            "Distinct-user entries across live panes",
            m.state_user_entries.clone(),
        );
        r.register(
            "state_dedup_ids",
            "Event ids remembered for deduplication",
            m.state_dedup_ids.clone(),
        );
        r.register(
            "held_records",
            "Records read but held back, by reason (alignment, unconfirmed_time)",
            m.held_records.clone(),
        );
    }

    pub fn anomaly(&self, reason: Reason) {
        self.events_anomalous
            .get_or_create(&ReasonLabel {
                reason: reason.as_str().to_string(),
            })
            .inc();
    }

    /// Publishes the engine's counters and gauges once per batch.
    pub fn observe_batch(&self, engine: &Engine, _records: usize) {
        self.observe(engine);
    }

    /// Publishes the engine's counters, gauges and partition clocks: after
    /// each batch, and at each turn of the job's loop, since idleness moves
    /// the watermark (and emits windows) with no record read.
    pub fn observe(&self, engine: &Engine) {
        let c = engine.counters;
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        self.events_read.inc_by(c.read - last.read);
        self.events_accepted.inc_by(c.accepted - last.accepted);
        self.events_duplicate.inc_by(c.duplicates - last.duplicates);
        self.events_late.inc_by(c.late - last.late);
        self.windows_emitted
            .inc_by(c.windows_emitted - last.windows_emitted);
        self.windows_re_emitted
            .inc_by(c.windows_re_emitted - last.windows_re_emitted);
        *last = c;
        let (windows, events) = engine.folding();
        for (g, dims) in engine.groupings().groupings.iter().enumerate() {
            let label = GroupingLabel {
                grouping: crate::dims::grouping_name(dims),
            };
            for (family, total) in [
                (&self.grouped_windows_folded, windows[g]),
                (&self.grouped_events_folded, events[g]),
            ] {
                let counter = family.get_or_create(&label);
                counter.inc_by(total.saturating_sub(counter.get()));
            }
        }
        let wm = engine.watermark();
        if wm != i64::MIN && wm != i64::MAX {
            self.watermark_seconds.set(wm as f64 / 1e3);
            self.watermark_lag_seconds
                .set((crate::time::now_ms() - wm) as f64 / 1e3);
        }
        let (panes, users, ids) = engine.state_stats();
        self.state_panes.set(panes as i64);
        self.state_user_entries.set(users as i64);
        self.state_dedup_ids.set(ids as i64);
        self.live.observe_clocks(engine);
    }

    pub fn checkpoint(&self, id: u64, pause: Duration, commit: Duration, bytes: usize) {
        self.checkpoint_duration.observe(pause.as_secs_f64());
        self.checkpoint_commit_duration
            .observe(commit.as_secs_f64());
        self.checkpoint_bytes.set(bytes as i64);
        self.last_checkpoint_id.set(id as i64);
        self.checkpoints_committed.inc();
        let now = crate::time::now_ms();
        self.last_checkpoint_ms.store(now, Ordering::Relaxed);
        self.last_checkpoint_time.set(now / 1000);
        self.live.checkpoint(live::CheckpointEntry {
            id,
            bytes,
            pause,
            commit,
            at_ms: now,
        });
    }

    /// Where start-up resumed: checkpoint `id` (0: none), with `resent`
    /// pending rows, at `offsets` (the next offset of each partition, in
    /// partition order).
    pub fn recovered(&self, id: u64, resent: usize, offsets: &[u64]) {
        for (partition, offset) in offsets.iter().enumerate() {
            let partition = partition.to_string();
            self.recovered_offset
                .get_or_create(&PartitionLabel { partition })
                .set(*offset as i64);
        }
        self.set_offsets(offsets.iter().copied());
        self.recovery_resent_rows.set(resent as i64);
        self.recovered_from_checkpoint.set(id as i64);
    }

    /// The next offset to process of each partition, in partition order.
    pub fn set_offsets(&self, next: impl ExactSizeIterator<Item = u64>) {
        let mut gauges = self.offset_gauges.lock().unwrap_or_else(|e| e.into_inner());
        while gauges.len() < next.len() {
            let partition = gauges.len().to_string();
            let gauge = self
                .current_offset
                .get_or_create(&PartitionLabel { partition })
                .clone();
            gauges.push(gauge);
        }
        for (gauge, offset) in gauges.iter().zip(next) {
            gauge.set(offset as i64);
        }
    }

    /// Records held back, by reason (see `held_records`).
    pub fn set_held(&self, alignment: usize, unconfirmed_time: usize) {
        for (reason, n) in [
            ("alignment", alignment),
            ("unconfirmed_time", unconfirmed_time),
        ] {
            self.held_records
                .get_or_create(&ReasonLabel {
                    reason: reason.to_string(),
                })
                .set(n as i64);
        }
    }

    pub fn set_lag(&self, partition: u32, lag: i64) {
        self.consumer_lag
            .get_or_create(&PartitionLabel {
                partition: partition.to_string(),
            })
            .set(lag);
    }

    pub fn sink_batch(&self, latency: Duration) {
        self.sink_batch_latency.observe(latency.as_secs_f64());
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let r = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        let _ = encode(&mut out, &r);
        out
    }
}
