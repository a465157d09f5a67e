//! Which log a topic name stands for: the cluster id and the topic id.
//!
//! A topic deleted and created again under the same name (or the same name on
//! another cluster) starts its offsets over; resuming a checkpoint's offsets
//! there would silently skip the new log's beginning. Kafka gives each
//! cluster and each topic a UUID at creation (KIP-78, KIP-516), so the
//! checkpoint records both and the job refuses to resume when they differ.
//!
//! librdkafka has the cluster id in its metadata cache; the topic id comes
//! from the DescribeTopics admin request, which the rdkafka crate does not
//! wrap, so it is called through `rdkafka-sys` here, with every pointer's
//! lifetime spelled out.

use std::ffi::{CStr, CString};
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::client::Client;
use rdkafka::ClientContext;

/// `cluster=<id> topic_id=<id>` for `topic`, or `None` when the brokers do
/// not say within `timeout` (an old broker without topic ids, or a request
/// that failed: the check is then skipped, and the job says so).
pub fn describe<C: ClientContext>(
    client: &Client<C>,
    topic: &str,
    timeout: Duration,
) -> Option<String> {
    let cluster = client.fetch_cluster_id(timeout)?;
    let topic_id = topic_id(client, topic, timeout)?;
    Some(format!("cluster={cluster} topic_id={topic_id}"))
}

/// The topic's id as Kafka prints it (base64), through DescribeTopics.
fn topic_id<C: ClientContext>(
    client: &Client<C>,
    topic: &str,
    timeout: Duration,
) -> Option<String> {
    let name = CString::new(topic).ok()?;
    let timeout_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    let rk = client.native_ptr();
    // SAFETY: `rk` is valid while `client` lives (the whole function). Every
    // object created here is destroyed before returning, on every path:
    // the topic collection and the options right after the request is
    // enqueued (librdkafka copies what it needs), the event after its
    // result is read (the descriptions it holds are borrowed from it and
    // not used afterwards), and the queue last. Strings read from
    // librdkafka are copied into owned Rust strings before their owner is
    // destroyed.
    unsafe {
        let queue = rd::rd_kafka_queue_new(rk);
        if queue.is_null() {
            return None;
        }
        let mut names = [name.as_ptr()];
        let topics = rd::rd_kafka_TopicCollection_of_topic_names(names.as_mut_ptr(), 1);
        let options = rd::rd_kafka_AdminOptions_new(
            rk,
            rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBETOPICS,
        );
        if !options.is_null() {
            let mut errstr = [0 as std::ffi::c_char; 256];
            rd::rd_kafka_AdminOptions_set_request_timeout(
                options,
                timeout_ms,
                errstr.as_mut_ptr(),
                errstr.len(),
            );
        }
        rd::rd_kafka_DescribeTopics(rk, topics, options, queue);
        rd::rd_kafka_TopicCollection_destroy(topics);
        if !options.is_null() {
            rd::rd_kafka_AdminOptions_destroy(options);
        }
        let event = rd::rd_kafka_queue_poll(queue, timeout_ms.saturating_add(1000));
        let found = if event.is_null() {
            None
        } else {
            read_topic_id(event)
        };
        if !event.is_null() {
            rd::rd_kafka_event_destroy(event);
        }
        rd::rd_kafka_queue_destroy(queue);
        found
    }
}

/// The first topic's id in a DescribeTopics result event.
///
/// # Safety
/// `event` must be a valid, not yet destroyed event.
unsafe fn read_topic_id(event: *mut rd::rd_kafka_event_t) -> Option<String> {
    if rd::rd_kafka_event_error(event) != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
        return None;
    }
    let result = rd::rd_kafka_event_DescribeTopics_result(event);
    if result.is_null() {
        return None;
    }
    let mut count = 0usize;
    let descriptions = rd::rd_kafka_DescribeTopics_result_topics(result, &mut count);
    if descriptions.is_null() || count == 0 {
        return None;
    }
    let description = *descriptions;
    if description.is_null() {
        return None;
    }
    let error = rd::rd_kafka_TopicDescription_error(description);
    if !error.is_null()
        && rd::rd_kafka_error_code(error) != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
    {
        return None;
    }
    let uuid = rd::rd_kafka_TopicDescription_topic_id(description);
    if uuid.is_null() {
        return None;
    }
    let text = rd::rd_kafka_Uuid_base64str(uuid);
    if text.is_null() {
        return None;
    }
    let id = CStr::from_ptr(text).to_string_lossy().into_owned();
    // The all-zero id means "no id" (brokers before topic ids).
    (id != "AAAAAAAAAAAAAAAAAAAAAA").then_some(id)
}
