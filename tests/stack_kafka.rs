//! The Kafka source and `streamforge produce` against a real broker.
//!
//! The broker is `STREAMFORGE_TEST_KAFKA` (default `127.0.0.1:9092`), started
//! by `scripts/stack.sh up`. A broker that does not answer fails every test:
//! a missing service is a failure, never a skip. Each test works on its own
//! new topic, so tests run in parallel and leave each other alone.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use streamforge::source::file::FileSource;
use streamforge::source::generator::GeneratorConfig;
use streamforge::source::kafka::producer::{produce_files, ProduceReport, RecordProducer};
use streamforge::source::kafka::{KafkaSettings, KafkaSource};
use streamforge::source::{PartitionState, RecordBatch, Source};

#[path = "common/endpoints.rs"]
mod endpoints;

type Rec = (u32, u64, Vec<u8>);

fn broker() -> String {
    endpoints::test_stack().kafka.clone()
}

/// Panics with instructions when no broker answers (checked once).
fn require_broker() -> String {
    static CHECKED: OnceLock<Result<(), String>> = OnceLock::new();
    let addr = broker();
    let result = CHECKED.get_or_init(|| {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &addr)
            .create()
            .map_err(|e| e.to_string())?;
        consumer
            .fetch_metadata(None, Duration::from_secs(10))
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    if let Err(e) = result {
        panic!(
            "no Kafka broker answers at {addr} ({e}). Start the test stack with `scripts/stack.sh up`, \
             or point STREAMFORGE_TEST_KAFKA at a broker (host:port)"
        );
    }
    addr
}

fn unique_topic(tag: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    format!(
        "sf-test-{tag}-{}-{}-{millis}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn admin() -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", require_broker())
        .create()
        .unwrap()
}

/// Creates a topic and waits until every partition has a leader.
fn create_topic(tag: &str, partitions: i32) -> String {
    let name = unique_topic(tag);
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = block_on(admin().create_topics(
        &[NewTopic::new(&name, partitions, TopicReplication::Fixed(1))],
        &opts,
    ))
    .expect("create_topics");
    for r in results {
        r.unwrap_or_else(|(t, e)| panic!("creating topic {t}: {e}"));
    }
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker())
        .create()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(md) = consumer.fetch_metadata(Some(&name), Duration::from_secs(5)) {
            let ready = md.topics().iter().any(|t| {
                t.error().is_none()
                    && t.partitions().len() == partitions as usize
                    && t.partitions().iter().all(|p| p.leader() >= 0)
            });
            if ready {
                return name;
            }
        }
        assert!(
            Instant::now() < deadline,
            "topic {name} has no leaders after 30 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn settings(topic: &str) -> KafkaSettings {
    KafkaSettings {
        brokers: require_broker(),
        topic: topic.to_string(),
        group_id: format!("{topic}-group"),
        ..Default::default()
    }
}

/// Produces `count` generated records (5 % broken, 2 % duplicates, within
/// 1 s of disorder) round-robin over the topic's partitions, continuing at
/// each partition's high watermark so a second call never repeats an id.
fn produce(settings: KafkaSettings, count: u64) -> anyhow::Result<ProduceReport> {
    let mut producer = RecordProducer::connect(&settings, false)?;
    let partitions = producer.partitions();
    let mut next: Vec<u64> = producer
        .watermarks()?
        .iter()
        .map(|(_, high)| (*high).max(0) as u64)
        .collect();
    let generator = GeneratorConfig {
        seed: 7,
        partitions,
        events_per_partition: None,
        anomaly_share: 0.05,
        duplicate_share: 0.02,
        late_share: 0.0,
        disorder_ms: 1000,
        users: 1000,
        ..GeneratorConfig::default()
    };
    let stop = AtomicBool::new(false);
    let mut payload = Vec::new();
    for i in 0..count {
        let p = (i % partitions as u64) as usize;
        payload.clear();
        generator.payload(p as u32, next[p], &mut payload);
        next[p] += 1;
        assert!(producer.send(p as u32, &payload, &stop)?);
    }
    producer.finish()
}

fn produce_generated(topic: &str, count: u64) -> ProduceReport {
    let report = produce(settings(topic), count).expect("produce");
    assert_eq!(report.produced, count);
    report
}

/// Reads a bounded source to its end.
fn read_to_end(src: &mut dyn Source) -> Vec<Rec> {
    let mut out = Vec::new();
    let mut batch = RecordBatch::default();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(0..src.partition_count()).all(|p| src.state(p as u32) == PartitionState::Finished) {
        assert!(
            Instant::now() < deadline,
            "bounded source did not finish in 60 s"
        );
        batch.clear();
        src.poll(&mut batch, 1000, Duration::from_millis(100))
            .expect("poll");
        out.extend(
            batch
                .iter()
                .map(|(m, p)| (m.partition, m.offset, p.to_vec())),
        );
    }
    out
}

fn sorted(mut v: Vec<Rec>) -> Vec<Rec> {
    v.sort();
    v
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::write(dir.join(name), bytes).unwrap();
}

#[test]
fn produce_from_files_puts_line_i_of_file_p_at_offset_i_of_partition_p() {
    let topic = create_topic("files", 3);
    let dir = tempfile::tempdir().unwrap();
    // Natural order: part-1 -> 0, part-2 -> 1, part-10 -> 2.
    write(
        dir.path(),
        "part-2.jsonl",
        b"{\"event_id\":\"a\",\"user_id\":\"u1\"}\n\nnot json at all\n{\"user_id\":17}\r\n\xff\xfe binary\nlast line, no newline",
    );
    let mut big = Vec::new();
    for i in 0..700 {
        big.extend_from_slice(
            format!("{{\"event_id\":\"e{i}\",\"user_id\":\"u{}\"}}\n", i % 13).as_bytes(),
        );
    }
    write(dir.path(), "part-10.jsonl", &big);
    write(dir.path(), "part-1.jsonl", b"\n\n{\"broken\":\n");
    let inputs = vec![dir.path().to_path_buf()];

    let report = produce_files(&settings(&topic), &inputs, false, &AtomicBool::new(false))
        .expect("produce files");
    // part-2's last line has no newline: not whole yet, not sent, as the
    // file source does not read it.
    assert_eq!(report.produced, 3 + 5 + 700);
    assert_eq!(
        report.per_partition,
        BTreeMap::from([(0, 3), (1, 5), (2, 700)])
    );

    // The file source is the reference for what a line is.
    let mut files = FileSource::new(&inputs).unwrap();
    files.start(&BTreeMap::new(), true).unwrap();
    let expected = sorted(read_to_end(&mut files));
    assert_eq!(expected.len(), 708);
    assert_eq!(expected[1], (0, 1, Vec::new()));
    assert_eq!(expected[3 + 4], (1, 4, b"\xff\xfe binary".to_vec()));
    assert_eq!(expected[3 + 3], (1, 3, b"{\"user_id\":17}\r".to_vec()));

    let mut kafka = KafkaSource::new(&settings(&topic)).unwrap();
    assert_eq!(kafka.partition_count(), 3);
    kafka.start(&BTreeMap::new(), true).unwrap();
    let got = sorted(read_to_end(&mut kafka));
    assert_eq!(got.len(), expected.len());
    for (g, e) in got.iter().zip(&expected) {
        assert_eq!(g, e, "record {}/{} differs", e.0, e.1);
    }
}

#[test]
fn more_files_than_partitions_is_a_clear_error() {
    let topic = create_topic("toofew", 2);
    let dir = tempfile::tempdir().unwrap();
    for name in ["a", "b", "c"] {
        write(dir.path(), name, b"x\n");
    }
    let err = produce_files(
        &settings(&topic),
        &[dir.path().to_path_buf()],
        false,
        &AtomicBool::new(false),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("3 files") && err.contains("only 2 partitions"),
        "{err}"
    );
}

#[test]
fn the_source_resumes_exactly_at_the_checkpointed_offsets() {
    let topic = create_topic("resume", 3);
    let report = produce_generated(&topic, 300);
    assert_eq!(
        report.per_partition,
        BTreeMap::from([(0, 100), (1, 100), (2, 100)])
    );

    let mut all = KafkaSource::new(&settings(&topic)).unwrap();
    let starts = all.start(&BTreeMap::new(), true).unwrap();
    assert_eq!(starts, BTreeMap::from([(0, 0), (1, 0), (2, 0)]));
    let full = sorted(read_to_end(&mut all));
    assert_eq!(full.len(), 300);
    for p in 0..3u32 {
        let offsets: Vec<u64> = full.iter().filter(|r| r.0 == p).map(|r| r.1).collect();
        assert_eq!(offsets, (0..100).collect::<Vec<_>>());
    }
    // Generated record i of partition p: event id p{p}-{i}.
    assert!(
        String::from_utf8_lossy(&full[150].2).contains("\"p1-50\""),
        "{:?}",
        full[150]
    );

    let resume = BTreeMap::from([(0, 5), (1, 37), (2, 100)]);
    let mut src = KafkaSource::new(&settings(&topic)).unwrap();
    assert_eq!(src.start(&resume, true).unwrap(), resume);
    assert_eq!(src.state(2), PartitionState::Finished);
    let got = sorted(read_to_end(&mut src));
    let want: Vec<Rec> = full
        .iter()
        .filter(|r| r.1 >= resume[&r.0])
        .cloned()
        .collect();
    assert_eq!(got.len(), 95 + 63);
    assert_eq!(got, want);

    // The advisory commit lands in the consumer group, even when the source
    // is dropped right after it (the job's final checkpoint): librdkafka
    // sends it while the client shuts down.
    let committed = BTreeMap::from([(0, 100), (1, 60), (2, 100)]);
    src.commit_advisory(&committed);
    drop(src);
    let group: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker())
        .set("group.id", format!("{topic}-group"))
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition(&topic, p);
    }
    let seen = group
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    let offsets: BTreeMap<u32, u64> = seen
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition() as u32, o as u64)),
            _ => None,
        })
        .collect();
    assert_eq!(offsets, committed);
}

#[test]
fn records_are_keyed_by_user_id() {
    let topic = create_topic("keys", 1);
    produce_generated(&topic, 200);
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker())
        .set("group.id", format!("{topic}-raw"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let (mut keyed, mut unkeyed, mut seen) = (0, 0, 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen < 200 {
        assert!(Instant::now() < deadline, "read {seen} of 200");
        let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        seen += 1;
        let payload: Result<serde_json::Value, _> =
            serde_json::from_slice(m.payload().unwrap_or(&[]));
        match payload
            .ok()
            .and_then(|v| v.get("user_id").and_then(|u| u.as_str()).map(String::from))
        {
            Some(user) => {
                assert_eq!(m.key(), Some(user.as_bytes()));
                keyed += 1;
            }
            None => {
                unkeyed += 1;
            }
        }
    }
    assert!(keyed > 150 && unkeyed < 50, "{keyed} keyed, {unkeyed} not");
}

#[test]
fn bounded_mode_stops_at_the_high_watermark_read_at_start() {
    let topic = create_topic("bounded", 2);
    produce_generated(&topic, 200);
    let mut src = KafkaSource::new(&settings(&topic)).unwrap();
    src.start(&BTreeMap::new(), true).unwrap();
    // More arrives after the end was fixed.
    produce_generated(&topic, 200);
    let got = read_to_end(&mut src);
    assert_eq!(got.len(), 200);
    assert!(
        got.iter().all(|r| r.1 < 100),
        "a record past the end: {:?}",
        got.iter().find(|r| r.1 >= 100)
    );
    let mut batch = RecordBatch::default();
    src.poll(&mut batch, 1000, Duration::from_millis(300))
        .unwrap();
    assert!(batch.is_empty());
    assert_eq!(src.state(0), PartitionState::Finished);
}

#[test]
fn a_missing_topic_is_a_clear_fatal_error() {
    let topic = unique_topic("missing");
    let err = KafkaSource::new(&settings(&topic))
        .err()
        .expect("a missing topic must fail");
    assert!(!err.is_transient());
    let text = err.to_string();
    assert!(
        text.contains(&format!("topic {topic} does not exist on {}", broker()))
            && text.contains("scripts/stack.sh topic"),
        "{text}"
    );
    // The producer says the same.
    let err = produce(settings(&topic), 1).unwrap_err().to_string();
    assert!(
        err.contains(&format!("topic {topic} does not exist")),
        "{err}"
    );
}

#[test]
fn states_go_from_backlog_to_caught_up_and_back_when_data_arrives() {
    let topic = create_topic("states", 2);
    produce_generated(&topic, 100);
    let mut src = KafkaSource::new(&settings(&topic)).unwrap();
    src.start(&BTreeMap::new(), false).unwrap();
    assert_eq!(src.state(0), PartitionState::Backlog);
    assert_eq!(src.state(1), PartitionState::Backlog);

    let mut read = [0u64; 2];
    let mut batch = RecordBatch::default();
    let mut poll_until = |src: &mut KafkaSource, read: &mut [u64; 2], total: u64| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            batch.clear();
            src.poll(&mut batch, 7, Duration::from_millis(100))
                .expect("poll");
            for (m, _) in batch.iter() {
                assert_eq!(
                    m.offset, read[m.partition as usize],
                    "offsets are contiguous"
                );
                read[m.partition as usize] += 1;
            }
            for p in 0..2u32 {
                if src.state(p) == PartitionState::CaughtUp {
                    // Never caught up with records still to read.
                    assert_eq!(read[p as usize], total / 2, "partition {p} caught up early");
                }
            }
            if (0..2).all(|p| src.state(p) == PartitionState::CaughtUp) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not caught up after 30 s: read {read:?}"
            );
        }
    };
    poll_until(&mut src, &mut read, 100);
    assert_eq!(src.lag(&BTreeMap::new()), vec![(0, 0), (1, 0)]);
    // Read but not processed yet (held back by the job): still lag.
    assert_eq!(src.lag(&BTreeMap::from([(0, 40)])), vec![(0, 10), (1, 0)]);

    produce_generated(&topic, 20);
    // Without polling: librdkafka fetches the new records in the background
    // and raises the cached high watermark, so the partitions have a backlog.
    let deadline = Instant::now() + Duration::from_secs(15);
    while (0..2).any(|p| src.state(p) != PartitionState::Backlog) {
        assert!(
            Instant::now() < deadline,
            "new records did not turn the state to Backlog"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(src.lag(&BTreeMap::new()), vec![(0, 10), (1, 10)]);
    poll_until(&mut src, &mut read, 120);
    assert_eq!(read, [60, 60]);
}

#[test]
fn deleted_records_the_checkpoint_needs_are_a_fatal_error() {
    let topic = create_topic("retention", 1);
    produce_generated(&topic, 20);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 0, Offset::Offset(10))
        .unwrap();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    block_on(admin().delete_records(&tpl, &opts)).expect("delete_records");

    let mut src = KafkaSource::new(&settings(&topic)).unwrap();
    let err = src.start(&BTreeMap::from([(0, 3)]), false).unwrap_err();
    assert!(!err.is_transient());
    let text = err.to_string();
    assert!(
        text.contains("partition 0")
            && text.contains("offset 3")
            && text.contains("earliest available offset 10"),
        "{text}"
    );
    // A checkpoint beyond the end (a recreated topic) is refused too.
    let err = src
        .start(&BTreeMap::from([(0, 25)]), false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("offset 25"), "{err}");
    // Without a checkpoint, earliest is what is left.
    assert_eq!(
        src.start(&BTreeMap::new(), true).unwrap(),
        BTreeMap::from([(0, 10)])
    );
    assert_eq!(read_to_end(&mut src).len(), 10);
}

#[test]
fn start_positions_latest_and_by_time() {
    let topic = create_topic("startat", 2);
    produce_generated(&topic, 40);
    std::thread::sleep(Duration::from_millis(50));
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    std::thread::sleep(Duration::from_millis(50));
    produce_generated(&topic, 40);

    let start = |spec: String| {
        let s = KafkaSettings {
            start: spec,
            ..settings(&topic)
        };
        let mut src = KafkaSource::new(&s).unwrap();
        src.start(&BTreeMap::new(), false).unwrap()
    };
    assert_eq!(start("latest".into()), BTreeMap::from([(0, 40), (1, 40)]));
    assert_eq!(start(t.to_string()), BTreeMap::from([(0, 20), (1, 20)]));
    assert_eq!(
        start("2999-01-01T00:00:00Z".into()),
        BTreeMap::from([(0, 40), (1, 40)])
    );
    assert_eq!(
        start("1970-01-01T00:00:00Z".into()),
        BTreeMap::from([(0, 0), (1, 0)])
    );
}

#[test]
fn records_deleted_while_reading_are_a_fatal_error_not_a_jump() {
    let topic = create_topic("oorpoll", 1);
    produce_generated(&topic, 50_000);
    let mut s = settings(&topic);
    // Tiny fetches: the source is still far from offset 45000 when the
    // records before it are deleted.
    for (k, v) in [
        ("queued.min.messages", "1"),
        ("queued.max.messages.kbytes", "1"),
        ("max.partition.fetch.bytes", "1024"),
    ] {
        s.properties.insert(k.into(), v.into());
    }
    let mut src = KafkaSource::new(&s).unwrap();
    src.start(&BTreeMap::new(), false).unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 0, Offset::Offset(45_000))
        .unwrap();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    block_on(admin().delete_records(&tpl, &opts)).expect("delete_records");

    let mut next = 0u64;
    let mut batch = RecordBatch::default();
    let deadline = Instant::now() + Duration::from_secs(30);
    let err = loop {
        assert!(
            Instant::now() < deadline,
            "no error after reading {next} records"
        );
        batch.clear();
        let result = src.poll(&mut batch, 1000, Duration::from_millis(100));
        for (m, _) in batch.iter() {
            assert_eq!(m.offset, next, "records before the gap are contiguous");
            next += 1;
        }
        if let Err(e) = result {
            break e;
        }
    };
    assert!(next < 45_000, "read {next}");
    assert!(!err.is_transient());
    let text = err.to_string();
    assert!(
        text.contains(&format!("partition 0: offset {next} is not available"))
            && text.contains("earliest available offset 45000"),
        "{text}"
    );
}

#[test]
fn a_full_producer_queue_is_waited_out_never_dropped() {
    let topic = create_topic("queuefull", 2);
    let mut s = settings(&topic);
    // Room for 10 records: almost every send meets a full queue.
    s.properties
        .insert("queue.buffering.max.messages".into(), "10".into());
    let report = produce(s, 3_000).expect("produce");
    assert_eq!(report.produced, 3_000);
    assert_eq!(
        report.per_partition,
        BTreeMap::from([(0, 1_500), (1, 1_500)])
    );
    let mut src = KafkaSource::new(&settings(&topic)).unwrap();
    src.start(&BTreeMap::new(), true).unwrap();
    let got = sorted(read_to_end(&mut src));
    let offsets: Vec<(u32, u64)> = got.iter().map(|r| (r.0, r.1)).collect();
    let want: Vec<(u32, u64)> = (0..2)
        .flat_map(|p| (0..1_500).map(move |o| (p, o)))
        .collect();
    assert_eq!(offsets, want);
}

#[test]
fn a_paused_partition_stops_and_resumes_where_it_was() {
    let topic = create_topic("pause", 2);
    produce_generated(&topic, 4_000);
    let mut src = KafkaSource::new(&settings(&topic)).unwrap();
    src.start(&BTreeMap::new(), false).unwrap();
    let mut next = [0u64; 2];
    let mut batch = RecordBatch::default();
    let mut poll = |src: &mut KafkaSource, next: &mut [u64; 2]| {
        batch.clear();
        src.poll(&mut batch, 100, Duration::from_millis(100))
            .expect("poll");
        for (m, _) in batch.iter() {
            assert_eq!(m.offset, next[m.partition as usize], "contiguous");
            next[m.partition as usize] += 1;
        }
    };
    while next[0] < 10 {
        poll(&mut src, &mut next);
    }
    src.set_paused(0, true);
    assert_eq!(src.state(0), PartitionState::Backlog);
    let at = next[0];
    let deadline = Instant::now() + Duration::from_secs(30);
    while next[1] < 2_000 {
        assert!(
            Instant::now() < deadline,
            "partition 1 stuck at {}",
            next[1]
        );
        poll(&mut src, &mut next);
    }
    assert_eq!(next[0], at, "a paused partition delivered records");
    assert_eq!(src.state(0), PartitionState::Backlog);
    src.set_paused(0, false);
    while !(0..2).all(|p| src.state(p) == PartitionState::CaughtUp) {
        assert!(Instant::now() < deadline, "not caught up: {next:?}");
        poll(&mut src, &mut next);
    }
    assert_eq!(next, [2_000, 2_000]);
}
