//! `/api/status`: everything the live page draws, as one JSON document
//! built from the registry and [`super::live::Live`] at each request.
//!
//! The shape is a contract with `page/page.js` and with anyone who scrapes
//! it (docs/operations.md describes it). Fields are only ever added.
//! Money is a string with exactly two decimals, as in SPEC §8, so nothing
//! on the way rounds it; times are epoch milliseconds (windows: epoch
//! seconds, as in the results) next to their RFC 3339 text.
//!
//! # Groupings
//!
//! `groupings` is the place for the per-dimension results of issue 17
//! (by `city`, `category`, ...): one [`GroupingView`] per configured
//! grouping, each with its top values (by orders over the kept windows) and
//! their recent windows in the same [`WindowView`] form as the totals, from
//! the grouped rows the sink acknowledged. It is empty without groupings;
//! the page draws whatever it holds.

use serde::Serialize;

use super::live::{CheckpointEntry, Clocks, CHECKPOINTS_KEPT, WINDOWS_KEPT};
use super::{format_watermark, Metrics, PartitionLabel, ReasonLabel};
use crate::event::{format_cents, Reason};
use crate::window::WindowRow;

#[derive(Debug, Serialize)]
pub struct Status {
    /// Wall clock of the answer, epoch ms.
    pub now_ms: i64,
    pub pipeline: Option<PipelineView>,
    pub job: JobView,
    /// The totals per window the sink acknowledged, by `window_start`.
    pub windows: Vec<WindowView>,
    /// Results grouped by dimensions (see the module docs).
    pub groupings: Vec<GroupingView>,
    pub partitions: Vec<PartitionView>,
    /// The last checkpoints committed by this process, oldest first.
    pub checkpoints: Vec<CheckpointView>,
    /// Records sent to the anomaly log by this process, by reason (only
    /// reasons seen).
    pub anomalies: Vec<AnomalyView>,
    pub limits: Limits,
}

#[derive(Debug, Serialize)]
pub struct PipelineView {
    pub source: String,
    pub sink: String,
}

#[derive(Debug, Serialize)]
pub struct JobView {
    /// `/ready`: recovered, caught up with the input, sink accepting writes.
    pub ready: bool,
    /// -1 until start-up is done, 0 for the beginning of the input.
    pub recovered_from_checkpoint: i64,
    /// `None` while it is -inf (a partition has seen nothing yet) or +inf.
    pub watermark_ms: Option<i64>,
    pub watermark: String,
    pub events_read: u64,
    pub events_accepted: u64,
    pub events_duplicate: u64,
    pub events_late: u64,
    pub events_anomalous: u64,
    pub windows_emitted: u64,
    pub windows_re_emitted: u64,
    /// Rows checkpointed and handed to the sink, not acknowledged yet.
    pub sink_pending_rows: i64,
    pub sink_retries: u64,
    pub sink_dead_letters: u64,
}

/// One window, totals or one group's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WindowView {
    /// Epoch seconds, as `streamforge results` prints them.
    pub window_start: i64,
    pub window_end: i64,
    pub order_cnt: u64,
    /// Exactly two decimals.
    pub gmv_total: String,
    pub user_cnt: u64,
    pub version: u64,
}

impl From<&WindowRow> for WindowView {
    fn from(r: &WindowRow) -> Self {
        WindowView {
            window_start: r.window_start,
            window_end: r.window_end,
            order_cnt: r.order_cnt,
            gmv_total: format_cents(r.gmv_cents),
            user_cnt: r.user_cnt,
            version: r.version,
        }
    }
}

/// One grouping's recent results (see the module docs).
#[derive(Debug, Clone, Serialize)]
pub struct GroupingView {
    /// How operators name it, e.g. `city` or `city,category`.
    pub name: String,
    /// Its dimension fields, in order, e.g. `["city", "category"]`.
    pub dimensions: Vec<String>,
    /// The top groups, biggest first, each with its recent windows.
    pub groups: Vec<GroupView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupView {
    /// One value per dimension, in the order of `dimensions`.
    pub values: Vec<String>,
    pub windows: Vec<WindowView>,
}

#[derive(Debug, Serialize)]
pub struct PartitionView {
    pub partition: u32,
    /// This partition's watermark: its highest event time minus the bound.
    pub watermark_ms: Option<i64>,
    pub watermark: String,
    /// `active`, `idle` (caught up, not holding the watermark back),
    /// `ended` (its part of a bounded input is read) or `finished`.
    pub state: &'static str,
    /// The next offset the job processes.
    pub next_offset: Option<i64>,
    /// Records to the end of the partition, where the source knows it
    /// (Kafka).
    pub lag: Option<i64>,
}

#[derive(Debug, Serialize)]
pub struct CheckpointView {
    pub id: u64,
    pub at_ms: i64,
    pub at: String,
    pub bytes: usize,
    pub pause_ms: f64,
    pub commit_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct AnomalyView {
    pub reason: &'static str,
    pub count: u64,
}

#[derive(Debug, Serialize)]
pub struct Limits {
    pub windows_kept: usize,
    pub checkpoints_kept: usize,
}

/// A finite time, or `None` for -inf and +inf.
fn finite(ms: i64) -> Option<i64> {
    (ms != i64::MIN && ms != i64::MAX).then_some(ms)
}

/// The page's document, as of now.
pub fn status(m: &Metrics) -> Status {
    let clocks = m.live.clocks();
    let anomalies: Vec<AnomalyView> = Reason::ALL
        .iter()
        .filter_map(|reason| {
            let label = ReasonLabel {
                reason: reason.as_str().to_string(),
            };
            let count = m.events_anomalous.get(&label)?.get();
            Some(AnomalyView {
                reason: reason.as_str(),
                count,
            })
        })
        .collect();
    Status {
        now_ms: crate::time::now_ms(),
        pipeline: m
            .live
            .pipeline()
            .map(|(source, sink)| PipelineView { source, sink }),
        job: job(m, &clocks, anomalies.iter().map(|a| a.count).sum()),
        windows: m.live.windows().iter().map(WindowView::from).collect(),
        groupings: groupings(&m.live.grouped()),
        partitions: partitions(m, &clocks),
        checkpoints: m.live.checkpoints().iter().map(checkpoint).collect(),
        anomalies,
        limits: Limits {
            windows_kept: WINDOWS_KEPT,
            checkpoints_kept: CHECKPOINTS_KEPT,
        },
    }
}

/// Groups charted per grouping: the biggest by orders over the kept windows.
pub const TOP_GROUPS: usize = 8;

/// Per grouping, its [`TOP_GROUPS`] biggest groups with their windows.
fn groupings(rows: &[WindowRow]) -> Vec<GroupingView> {
    use std::collections::BTreeMap;
    type Groups<'a> = BTreeMap<&'a [String], (u64, Vec<WindowView>)>;
    let mut by: BTreeMap<&[crate::dims::Dimension], Groups> = BTreeMap::new();
    for r in rows {
        let Some(key) = &r.group else { continue };
        let g = by
            .entry(&key.dims)
            .or_default()
            .entry(&key.values)
            .or_default();
        g.0 += r.order_cnt;
        g.1.push(WindowView::from(r));
    }
    by.into_iter()
        .map(|(dims, groups)| {
            let mut groups: Vec<_> = groups.into_iter().collect();
            groups.sort_by(|a, b| b.1 .0.cmp(&a.1 .0).then(a.0.cmp(b.0)));
            let names: Vec<String> = dims.iter().map(|d| d.name().to_string()).collect();
            GroupingView {
                name: names.join(","),
                dimensions: names,
                groups: groups
                    .into_iter()
                    .take(TOP_GROUPS)
                    .map(|(values, (_, windows))| GroupView {
                        values: values.to_vec(),
                        windows,
                    })
                    .collect(),
            }
        })
        .collect()
}

fn job(m: &Metrics, clocks: &Clocks, anomalous: u64) -> JobView {
    JobView {
        ready: m.ready.load(std::sync::atomic::Ordering::Relaxed),
        recovered_from_checkpoint: m.recovered_from_checkpoint.get(),
        watermark_ms: finite(clocks.watermark_ms),
        watermark: format_watermark(clocks.watermark_ms),
        events_read: m.events_read.get(),
        events_accepted: m.events_accepted.get(),
        events_duplicate: m.events_duplicate.get(),
        events_late: m.events_late.get(),
        events_anomalous: anomalous,
        windows_emitted: m.windows_emitted.get(),
        windows_re_emitted: m.windows_re_emitted.get(),
        sink_pending_rows: m.live.pending_rows(),
        sink_retries: m.sink_retries.get(),
        sink_dead_letters: crate::sink::dead_letters::counter().get(),
    }
}

fn partitions(m: &Metrics, clocks: &Clocks) -> Vec<PartitionView> {
    let offsets: Vec<i64> = m
        .offset_gauges
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|g| g.get())
        .collect();
    let count = offsets.len().max(clocks.partitions.len());
    (0..count)
        .map(|p| {
            let clock = clocks.partitions.get(p).copied().unwrap_or_default();
            let watermark = match clock.max_event_ms {
                i64::MIN => i64::MIN,
                t => t.saturating_sub(clocks.out_of_orderness_ms),
            };
            let label = PartitionLabel {
                partition: p.to_string(),
            };
            PartitionView {
                partition: p as u32,
                watermark_ms: finite(watermark),
                watermark: format_watermark(watermark),
                state: if clock.finished {
                    "finished"
                } else if clock.ended {
                    "ended"
                } else if clock.idle {
                    "idle"
                } else {
                    "active"
                },
                next_offset: offsets.get(p).copied(),
                lag: m.consumer_lag.get(&label).map(|g| g.get()),
            }
        })
        .collect()
}

fn checkpoint(c: &CheckpointEntry) -> CheckpointView {
    CheckpointView {
        id: c.id,
        at_ms: c.at_ms,
        at: crate::time::format_rfc3339_ms(c.at_ms),
        bytes: c.bytes,
        pause_ms: c.pause.as_secs_f64() * 1e3,
        commit_ms: c.commit.as_secs_f64() * 1e3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::live::CheckpointEntry;
    use std::time::Duration;

    #[test]
    fn the_document_holds_what_the_page_draws() {
        let m = Metrics::new();
        m.anomaly(Reason::BadAmount);
        m.anomaly(Reason::BadAmount);
        m.anomaly(Reason::LateEvent);
        m.set_offsets([7, 9].into_iter());
        m.set_lag(1, 3);
        m.live.acked(&[WindowRow {
            users: None,
            window_start: 1_764_064_800,
            window_end: 1_764_064_860,
            order_cnt: 3,
            gmv_cents: 123_456_789_012_345_678_901_234_567,
            user_cnt: 2,
            version: 4,
            updated_at: 0,
            group: None,
        }]);
        m.live.checkpoint(CheckpointEntry {
            id: 5,
            bytes: 2048,
            pause: Duration::from_micros(1500),
            commit: Duration::from_millis(3),
            at_ms: 1_764_064_800_000,
        });
        let v = serde_json::to_value(status(&m)).unwrap();
        assert_eq!(
            v["windows"][0],
            serde_json::json!({
                "window_start": 1_764_064_800i64, "window_end": 1_764_064_860i64, "order_cnt": 3,
                "gmv_total": "1234567890123456789012345.67", "user_cnt": 2, "version": 4
            })
        );
        assert_eq!(v["groupings"], serde_json::json!([]));
        assert_eq!(
            v["anomalies"],
            serde_json::json!([{"reason": "bad_amount", "count": 2}, {"reason": "late_event", "count": 1}])
        );
        assert_eq!(v["job"]["events_anomalous"], 3);
        assert_eq!(v["job"]["watermark"], "-inf");
        assert_eq!(v["job"]["watermark_ms"], serde_json::Value::Null);
        assert_eq!(v["partitions"][0]["next_offset"], 7);
        assert_eq!(v["partitions"][0]["lag"], serde_json::Value::Null);
        assert_eq!(v["partitions"][1]["lag"], 3);
        assert_eq!(v["checkpoints"][0]["id"], 5);
        assert_eq!(v["checkpoints"][0]["pause_ms"], 1.5);
        assert_eq!(v["checkpoints"][0]["at"], "2025-11-25T10:00:00.000Z");
        assert_eq!(v["limits"]["windows_kept"], WINDOWS_KEPT);
    }
}
