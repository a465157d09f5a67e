//! Sources: partitioned, seekable logs of raw payloads.
//!
//! Every source looks like a Kafka topic to the job: partitions numbered from
//! 0, each an ordered log of payloads at offsets 0, 1, 2, ... The job asks a
//! source to start at given offsets (from a checkpoint) and polls batches of
//! records; it keeps the next offset per partition itself, so a checkpoint
//! always names exactly what has been processed.
//!
//! A source also tells the job where each partition stands (`PartitionState`):
//! with a backlog, caught up to the end of what exists now (live input), or
//! finished (a bounded input at its end). The watermark logic relies on that
//! distinction (see `watermark`).

pub mod file;
pub mod generator;
pub mod kafka;

use std::collections::BTreeMap;
use std::time::Duration;

use thiserror::Error;

/// Why a source failed, which also says what to do about it
/// ([`SourceError::retry`]). The text says what failed and what to do.
#[derive(Debug, Clone, Error)]
pub enum SourceError {
    /// The input cannot be reached for now (a broker down, a timeout): the
    /// job backs off and polls again; nothing is lost.
    #[error("{0}")]
    Unavailable(String),
    /// Records the checkpoint needs are gone (retention deleted them, the
    /// topic was recreated, a file was cut): never skipped silently.
    #[error("{0}")]
    DataLost(String),
    /// The input is missing or its settings are wrong (no such topic or
    /// file, an invalid setting, an unset secret variable).
    #[error("{0}")]
    Misconfigured(String),
    /// Anything else retrying will not fix (an I/O error, a broker refusing
    /// a request for good).
    #[error("{0}")]
    Failed(String),
}

/// What a caller does about a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Back off and try again: it may succeed later.
    Backoff,
    /// Stop and say why: an operator must act.
    Never,
}

impl SourceError {
    pub fn retry(&self) -> Retry {
        match self {
            SourceError::Unavailable(_) => Retry::Backoff,
            _ => Retry::Never,
        }
    }

    pub fn is_transient(&self) -> bool {
        self.retry() == Retry::Backoff
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionState {
    /// Data is (or may be) waiting to be read.
    Backlog,
    /// Everything that exists has been read; more may come.
    CaughtUp,
    /// Bounded input at its end: nothing more will ever come.
    Finished,
}

/// Where a record sits in its batch's shared buffer.
#[derive(Debug, Clone, Copy)]
pub struct RecordMeta {
    pub partition: u32,
    pub offset: u64,
    /// The record's own timestamp (Kafka's), epoch ms; `i64::MIN` when the
    /// source has none.
    pub timestamp_ms: i64,
    start: usize,
    end: usize,
}

/// A reusable batch: payloads are copied into one buffer, so polling does not
/// allocate per record once the buffers have grown.
#[derive(Default)]
pub struct RecordBatch {
    data: Vec<u8>,
    records: Vec<RecordMeta>,
}

impl RecordBatch {
    pub fn clear(&mut self) {
        self.data.clear();
        self.records.clear();
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn push(&mut self, partition: u32, offset: u64, payload: &[u8]) {
        self.push_timestamped(partition, offset, i64::MIN, payload);
    }

    pub fn push_timestamped(
        &mut self,
        partition: u32,
        offset: u64,
        timestamp_ms: i64,
        payload: &[u8],
    ) {
        let start = self.data.len();
        self.data.extend_from_slice(payload);
        self.records.push(RecordMeta {
            partition,
            offset,
            timestamp_ms,
            start,
            end: self.data.len(),
        });
    }

    /// Lets a source write a payload straight into the buffer: call
    /// [`RecordBatch::buffer`], append the bytes, then this with the length
    /// the buffer had before.
    pub fn push_written(&mut self, partition: u32, offset: u64, start: usize) {
        self.push_written_at(partition, offset, i64::MIN, start);
    }

    /// [`RecordBatch::push_written`] with the record's own timestamp.
    pub fn push_written_at(
        &mut self,
        partition: u32,
        offset: u64,
        timestamp_ms: i64,
        start: usize,
    ) {
        self.records.push(RecordMeta {
            partition,
            offset,
            timestamp_ms,
            start,
            end: self.data.len(),
        });
    }

    /// Keeps only the records of `partition`, renumbered `as_partition`
    /// (a source presenting one partition of another, see
    /// `crate::group`). The payload buffer is kept as it is.
    pub fn keep_partition(&mut self, partition: u32, as_partition: u32) {
        self.records.retain(|m| m.partition == partition);
        for m in &mut self.records {
            m.partition = as_partition;
        }
    }
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.data
    }

    pub fn iter(&self) -> impl Iterator<Item = (RecordMeta, &[u8])> + '_ {
        self.records
            .iter()
            .map(|m| (*m, &self.data[m.start..m.end]))
    }
}

/// Where a run stops reading.
#[derive(Debug, Clone, Copy)]
pub enum End<'a> {
    /// Never: follow the input as it grows (a live run).
    Never,
    /// At the end of the input as it stands now (a bounded run starting).
    Now,
    /// At these offsets (a bounded run resumed after a crash stops where the
    /// run that was started would have). A partition not named here was not
    /// part of that run: it ends where it starts.
    At(&'a BTreeMap<u32, u64>),
}

pub trait Source: Send {
    /// Identifies the input, e.g. `kafka:orders_stream` or `files:a.jsonl,b.jsonl`.
    /// A checkpoint taken on one input is never resumed on another.
    fn id(&self) -> String;

    /// What makes this input *this* log beyond its name, where the source
    /// can tell: for Kafka the cluster id and the topic id, which change
    /// when the topic is deleted and created again. Read at `open`; `None`
    /// when unknown.
    fn identity(&self) -> Option<String> {
        None
    }

    /// The `source` field of anomaly records for `partition`: topic or file.
    fn source_name(&self, partition: u32) -> &str;

    fn partition_count(&self) -> usize;

    /// Positions every partition: at `resume[p]` where given (a checkpoint),
    /// else at the configured start, and fixes where reading stops. Returns
    /// the start offset of every partition.
    fn open(
        &mut self,
        resume: &BTreeMap<u32, u64>,
        end: End<'_>,
    ) -> Result<BTreeMap<u32, u64>, SourceError>;

    /// [`Source::open`] for a live (`bounded == false`) or a bounded run
    /// ending at the input's end as it stands now.
    fn start(
        &mut self,
        resume: &BTreeMap<u32, u64>,
        bounded: bool,
    ) -> Result<BTreeMap<u32, u64>, SourceError> {
        self.open(resume, if bounded { End::Now } else { End::Never })
    }

    /// The end offsets fixed by a bounded `open`, per partition.
    fn end_offsets(&self) -> Option<BTreeMap<u32, u64>> {
        None
    }

    /// Appends up to `max` records to `batch`, waiting at most `timeout` when
    /// nothing is available.
    fn poll(
        &mut self,
        batch: &mut RecordBatch,
        max: usize,
        timeout: Duration,
    ) -> Result<(), SourceError>;

    fn state(&self, partition: u32) -> PartitionState;

    /// Stops (or resumes) delivering records of `partition`: the job pauses
    /// partitions whose event time runs ahead of the others. A source that
    /// cannot pause may go on delivering; the job holds those records.
    fn set_paused(&mut self, _partition: u32, _paused: bool) {}

    /// The earliest offset the partition still holds, as of `start`: above 0
    /// when retention deleted older records.
    fn log_start(&self, _partition: u32) -> u64 {
        0
    }

    /// Records between `processed` (per partition, the next offset the job
    /// has yet to process: records read but held back count as lag; a
    /// partition not in it, from the read position) and the end, per
    /// partition, where the source knows it cheaply (Kafka); empty otherwise.
    fn lag(&self, _processed: &BTreeMap<u32, u64>) -> Vec<(u32, i64)> {
        Vec::new()
    }

    /// Advisory: publish the checkpointed offsets where lag tools look (the
    /// Kafka consumer group). The checkpoint stays the truth.
    fn commit_advisory(&mut self, _next_offsets: &BTreeMap<u32, u64>) {}

    /// Group mode (see [`crate::group`]): the one partition this source
    /// reads for the job, whose rows are partial rows versioned by its
    /// offset; `None` for a source that is the whole input.
    fn owned_partition(&self) -> Option<u32> {
        None
    }
    /// How often a live run should look for partitions added while it
    /// reads (Kafka topics grow; a file set does not): `None` for never.
    fn discovery_interval(&self) -> Option<Duration> {
        None
    }

    /// An offset of `partition` below which every record was already in the
    /// partition when this is called: its high watermark as last known,
    /// without a network call; `None` when nothing is known. Partition
    /// discovery rests the watermark on such records only (see
    /// `watermark`).
    fn known_end(&self, _partition: u32) -> Option<u64> {
        None
    }

    /// Looks for partitions added since `open` and reads each new one from
    /// its earliest offset. Returns the partition count now. Called by the
    /// job at the discovery interval of a live run.
    fn discover(&mut self) -> Result<usize, SourceError> {
        Ok(self.partition_count())
    }
}

/// [`Source::end_offsets`] of a source that keeps, per partition in
/// order, the end offset a bounded `open` fixed (`None` before it did):
/// `None` for a live run or while any partition's end is unknown.
pub fn bounded_end_offsets(
    bounded: bool,
    ends: impl Iterator<Item = Option<u64>>,
) -> Option<BTreeMap<u32, u64>> {
    if !bounded {
        return None;
    }
    ends.enumerate()
        .map(|(p, end)| end.map(|e| (p as u32, e)))
        .collect()
}
