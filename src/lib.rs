//! StreamForge: exactly-once event-time windowed order metrics.
//!
//! Order events flow from a source (Kafka, files or the generator) through
//! parsing and cleaning, deduplication and sliding event-time windows into a
//! sink (ClickHouse or the embedded store); broken and late events go to the
//! anomaly log. Periodic checkpoints make the whole thing exactly-once.
//!
//! # Layout, in the order data flows
//!
//! * `source`: partitioned, seekable inputs (`file`, `generator`, `kafka/`).
//! * `event`: bytes to a validated, cleaned event, or an anomaly reason.
//! * `dedup`, `fptable`: repeated `event_id`s within the event-time horizon,
//!   in fingerprint tables.
//! * `watermark`, `window`: per-partition watermarks, panes, firing, lateness.
//! * `engine`: the pure per-record core combining the above; its replay mode
//!   is what `replay` recomputes with.
//! * `job/`: the loop that drives all of it and owns the checkpoint barrier.
//! * `anomaly_log`: the anomaly side output.
//! * `checkpoint/`: framed, crc-checked state snapshots in sled (or memory).
//! * `sink/`: idempotent outputs (`embedded`, `clickhouse/`) and the writer.
//! * `replay`, `verify`: recompute a range; check the sink against an
//!   independent model.
//! * `config/`, `cli/`, `telemetry`, `time`, `clock`, `failpoint`: the
//!   surroundings.
//!
//! Public modules are those the binary, the tools (`tools/`), the simulator
//! (`sim/`), the fuzz targets and the tests use; the rest is private.

pub mod anomaly_log;
pub mod checkpoint;
pub mod cli;
pub mod clock;
pub mod config;
pub mod dedup;
pub mod dims;
pub mod engine;
pub mod event;
pub mod failpoint;
mod fptable;
pub mod group;
pub mod job;
mod replay;
pub mod setting;
pub mod sink;
pub mod source;
pub mod telemetry;
pub mod time;
pub mod verify;
mod watermark;
pub mod window;
