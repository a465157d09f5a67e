//! Handing fetched records to the job.
//!
//! A poll takes its first record (or error, or "end of partition") through
//! the consumer's own `poll`, which turns every kind of event librdkafka
//! queues into a result; then it takes what else is queued in bulk, up to
//! the batch's room, through `rd_kafka_consume_batch_queue`. A call per
//! record pays librdkafka's poll-interval clock reads, the queue lock and an
//! event wrapped around the record each time; in bulk they are paid once per
//! call (end to end on the mix, 3M records: 2.85–3.24 s instead of
//! 3.44–3.83 s, docs/performance.md). The rdkafka crate does not wrap the
//! bulk call, so it is made through `rdkafka-sys` here.
//!
//! The bulk call returns records and per-partition results ("end of
//! partition", fetch errors such as an offset out of range) as messages, and
//! skips transaction markers as the single poll does (moving the position
//! past them). Client-wide errors (all brokers down) met in bulk go to the
//! log instead; while records flow they change nothing, and once the queue
//! holds no records the next single poll reports them.

use std::ptr::NonNull;

use rdkafka::bindings as rd;
use rdkafka::types::RDKafkaErrorCode;
use tracing::debug;

use super::{KafkaSource, Part};
use crate::source::{RecordBatch, SourceError};

/// Messages taken per bulk call.
const BULK: usize = 1024;

/// librdkafka's queue of fetched records for a consumer.
pub(super) struct ConsumerQueue(NonNull<rd::rd_kafka_queue_t>);

// SAFETY: librdkafka's queues are locked internally; the handle may be used
// and destroyed from any thread.
unsafe impl Send for ConsumerQueue {}

impl ConsumerQueue {
    /// The consumer queue of client `rk`; `None` for a client without one
    /// (no `group.id`).
    pub(super) fn of(rk: *mut rd::rd_kafka_t) -> Option<Self> {
        // SAFETY: `rk` is a live client handle (the caller's consumer); the
        // queue handle returned holds a reference of its own, released in
        // `drop`.
        NonNull::new(unsafe { rd::rd_kafka_queue_get_consumer(rk) }).map(ConsumerQueue)
    }
}

impl Drop for ConsumerQueue {
    fn drop(&mut self) {
        // SAFETY: the handle came from `rd_kafka_queue_get_consumer` and is
        // destroyed once, here.
        unsafe { rd::rd_kafka_queue_destroy(self.0.as_ptr()) }
    }
}

/// One fetched record, whichever call delivered it.
pub(super) struct Fetched<'a> {
    pub partition: i32,
    pub offset: i64,
    /// The record's timestamp (create or log-append time), if it has one.
    pub timestamp_ms: Option<i64>,
    pub payload: &'a [u8],
}

/// What became of one fetched record.
pub(super) enum Taken {
    Kept,
    Dropped,
    /// Kept or not, the partition reached its bounded end.
    AtEnd(u32),
}

/// Hands one fetched record to `batch`, or drops it when it is below the
/// partition's position or past a bounded run's end.
pub(super) fn take(
    parts: &mut [Part],
    topic: &str,
    record: &Fetched<'_>,
    batch: &mut RecordBatch,
) -> Result<Taken, SourceError> {
    let p = record.partition;
    let Some(part) = usize::try_from(p).ok().and_then(|i| parts.get_mut(i)) else {
        return Err(SourceError::Failed(format!(
            "kafka: a record for partition {p} of {topic}, which has {} partitions",
            parts.len()
        )));
    };
    let offset = record.offset as u64;
    if offset < part.next {
        // Never hand a record out twice.
        debug!(
            partition = p,
            offset,
            next = part.next,
            "dropping a record below the position"
        );
        return Ok(Taken::Dropped);
    }
    if part.end.is_some_and(|end| offset >= end) {
        // Past the end fixed at start: not ours to read.
        return Ok(Taken::AtEnd(p as u32));
    }
    batch.push_timestamped(
        p as u32,
        offset,
        record.timestamp_ms.unwrap_or(i64::MIN),
        record.payload,
    );
    part.next = offset + 1;
    part.eof = false;
    if part.end.is_some_and(|end| part.next >= end) {
        return Ok(Taken::AtEnd(p as u32));
    }
    Ok(Taken::Kept)
}

impl KafkaSource {
    /// Takes the records librdkafka has queued, without waiting, until
    /// `batch` holds `max`. A transient fetch error is returned in
    /// `transient` (the caller marks the source down); a fatal one is the
    /// error. Every message taken from librdkafka is destroyed, whatever
    /// happens to the others.
    pub(super) fn take_queued(
        &mut self,
        batch: &mut RecordBatch,
        max: usize,
        transient: &mut Option<String>,
    ) -> Result<(), SourceError> {
        let Some(queue) = &self.queue else {
            return Ok(());
        };
        let queue = queue.0.as_ptr();
        let mut messages = [std::ptr::null_mut::<rd::rd_kafka_message_t>(); BULK];
        let mut failed = None;
        while batch.len() < max && failed.is_none() && transient.is_none() {
            let want = (max - batch.len()).min(BULK);
            // SAFETY: `queue` lives as long as `self`; librdkafka writes at
            // most `want` message pointers into `messages`, each ours to
            // destroy.
            let n =
                unsafe { rd::rd_kafka_consume_batch_queue(queue, 0, messages.as_mut_ptr(), want) };
            let Ok(n) = usize::try_from(n) else {
                break;
            };
            for &message in &messages[..n] {
                if failed.is_none() {
                    if let Err(e) = self.take_message(message, batch, transient) {
                        failed = Some(e);
                    }
                }
                // SAFETY: returned by the bulk call above, destroyed once.
                unsafe { rd::rd_kafka_message_destroy(message) };
            }
            if n < want {
                break;
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// One message of a bulk call: a record, "end of partition" or a fetch
    /// error.
    fn take_message(
        &mut self,
        message: *mut rd::rd_kafka_message_t,
        batch: &mut RecordBatch,
        transient: &mut Option<String>,
    ) -> Result<(), SourceError> {
        // SAFETY: a message the bulk call returned, not destroyed yet; its
        // payload (`len` bytes, or null) lives as long as the message, and
        // the slice made of it is dropped before the message is.
        let m = unsafe { &*message };
        if m.err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            if m.err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__PARTITION_EOF {
                self.on_end_of_partition(m.partition);
            } else {
                *transient = Some(self.consumption_error(RDKafkaErrorCode::from(m.err))?);
            }
            return Ok(());
        }
        let payload = if m.payload.is_null() {
            &[][..]
        } else {
            // SAFETY: see above.
            unsafe { std::slice::from_raw_parts(m.payload.cast::<u8>(), m.len) }
        };
        let mut kind = rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
        // SAFETY: reads the message's timestamp and writes `kind`.
        let timestamp = unsafe { rd::rd_kafka_message_timestamp(message, &mut kind) };
        let available = kind != rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE
            && timestamp != -1;
        let record = Fetched {
            partition: m.partition,
            offset: m.offset,
            timestamp_ms: available.then_some(timestamp),
            payload,
        };
        if let Taken::AtEnd(p) = take(&mut self.parts, &self.settings.topic, &record, batch)? {
            self.finish(p);
        }
        Ok(())
    }
}
