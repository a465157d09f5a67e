//! Group mode and the consumer group's committed offsets (issue 16): lag
//! tools read a group's progress from its committed offsets, so an instance
//! commits each owned partition's checkpointed offset through its membership
//! (the only client the group accepts commits from). After a bounded run,
//! and after a second one that resumes from the partition checkpoints, the
//! group's committed offsets are the topic's end offsets, and the resumed
//! run does not warn about partitions it does not own.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::stack::{produce_files_to, require_stack, stack, test_stack, unique};
use common::*;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

const PARTITIONS: i32 = 3;

/// Writes `n` valid events per partition, numbered from `from`.
fn produce(topic: &str, dir: &Path, from: usize, n: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let t0 = 1_764_064_800_000i64;
    for p in 0..PARTITIONS {
        let lines: Vec<String> = (from..from + n)
            .map(|i| {
                let t = t0 + i as i64 * 50;
                format!(
                    r#"{{"event_id":"e-{p}-{i}","order_id":"o{i}","user_id":"u{}","amount":"1.25","event_time":{t}}}"#,
                    i % 17
                )
            })
            .collect();
        std::fs::write(dir.join(format!("part-{p}.jsonl")), lines.join("\n") + "\n").unwrap();
    }
    produce_files_to(topic, &[dir.to_path_buf()], false);
}

/// The topic's end offsets (high watermarks), per partition.
fn end_offsets(consumer: &BaseConsumer, topic: &str) -> BTreeMap<u32, u64> {
    (0..PARTITIONS)
        .map(|p| {
            let (_, high) = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .unwrap();
            (p as u32, high as u64)
        })
        .collect()
}

/// The group's committed offsets, per partition that has one.
fn committed(consumer: &BaseConsumer, topic: &str) -> BTreeMap<u32, u64> {
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition(topic, p);
    }
    consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap()
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition() as u32, o as u64)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_group_instance_commits_its_checkpointed_offsets_to_the_group() {
    require_stack();
    let tmp = tempfile::tempdir().unwrap();
    let topic = unique("sf_group_offsets");
    stack(&["topic", &topic, &PARTITIONS.to_string()]);
    let group = format!("{topic}-group");
    let yaml = tmp.path().join("kafka.yaml");
    std::fs::write(
        &yaml,
        format!(
            "brokers: {}\ntopic: {topic}\ngroup_id: {group}\ngroup_mode: true\n",
            test_stack().kafka
        ),
    )
    .unwrap();
    let observer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &test_stack().kafka)
        .set("group.id", &group)
        .create()
        .unwrap();
    let table = unique("grp_offsets");
    let state = tmp.path().join("state");
    let run = || {
        let mut cmd = streamforge(&[
            "run",
            "--source",
            "kafka",
            "--sink",
            "clickhouse",
            "--bounded",
            "--state-dir",
            state.to_str().unwrap(),
            "--anomaly-log",
            tmp.path().join("anomalies.log").to_str().unwrap(),
            "--set",
            &format!("source.kafka_config={}", yaml.display()),
        ]);
        test_stack().point(&mut cmd);
        cmd.env("CLICKHOUSE_DATABASE", "streamforge_test")
            .env("CLICKHOUSE_TABLE", &table)
            .env_remove("KAFKA_TOPIC")
            .env_remove("KAFKA_BROKERS")
            .env_remove("KAFKA_GROUP_ID");
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "run failed: {stderr}");
        stderr
    };

    produce(&topic, &tmp.path().join("in-0"), 0, 400);
    run();
    let end = end_offsets(&observer, &topic);
    assert_eq!(end.values().sum::<u64>(), 3 * 400);
    assert_eq!(committed(&observer, &topic), end, "after the first run");

    produce(&topic, &tmp.path().join("in-1"), 400, 250);
    let stderr = run();
    let end = end_offsets(&observer, &topic);
    assert_eq!(end.values().sum::<u64>(), 3 * 650);
    assert_eq!(committed(&observer, &topic), end, "after the resumed run");
    assert!(
        stderr.contains("checkpoint"),
        "the resumed run logged nothing about its checkpoints: {stderr}"
    );
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("partition_job") && l.trim_end().ends_with("partition=2")),
        "the partition jobs' lines do not name their partition:\n{stderr}"
    );
    assert!(
        !stderr.contains("not in the checkpoint"),
        "a partition job warned about partitions it does not own:\n{stderr}"
    );
}
