//! StreamForge: exactly-once event-time windowed order metrics.
//!
//! Order events flow from a source (Kafka, files or the generator) through
//! parsing and cleaning, deduplication and sliding event-time windows into a
//! sink (ClickHouse or the embedded store); broken and late events go to the
//! anomaly log. Periodic checkpoints make the whole thing exactly-once.
//!
//! # Layout, in the order data flows
//!
//! * `source`: partitioned, seekable inputs (`file`, `generator`, `kafka`).
//! * `event`: bytes to a validated, cleaned event, or an anomaly reason.
//! * `dedup`: drops repeated `event_id`s within the event-time horizon.
//! * `watermark`, `window`: per-partition watermarks, panes, firing, lateness.
//! * `engine`: the pure per-record core combining the three above.
//! * `anomaly`: the anomaly side output.
//! * `checkpoint`: framed, crc-checked state snapshots in sled.
//! * `sink`: idempotent outputs (`embedded`, `clickhouse`) and the writer thread.
//! * `job`: the loop that drives all of it and owns the checkpoint barrier.
//! * `config`, `cli`, `telemetry`, `time`, `failpoint`: the surroundings.

pub mod anomalies;
pub mod anomaly;
pub mod checkpoint;
pub mod cli;
pub mod clock;
pub mod config;
pub mod dedup;
pub mod engine;
pub mod event;
pub mod failpoint;
pub mod fptable;
pub mod job;
pub mod replay;
pub mod sink;
pub mod source;
pub mod telemetry;
pub mod time;
pub mod verify;
pub mod watermark;
pub mod window;
