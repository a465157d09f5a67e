//! `streamforge-tools produce`: writes order events into the Kafka topic,
//! either simulated (the generator of SPEC §7) or replayed from files (one
//! file per partition, one line per record), paced to a rate.
//!
//! Records go to explicit partitions through the product's
//! [`RecordProducer`] (idempotent, keyed by user, nothing dropped):
//! generated record `i` of partition `p` is `GeneratorConfig::payload(p, i)`,
//! and line `i` of file `p` goes to partition `p`. With a fresh topic the
//! topic is the exact image of the input: offset `i` of partition `p` holds
//! record `i`.
//!
//! # Generated records on a topic that already has data
//!
//! Generation continues at each partition's high watermark (record index =
//! the offset it lands at), so a second run never re-sends event ids of the
//! first one, which the job would drop as duplicates. Event time is shifted
//! so that the first new record of the least-filled partition is stamped now.
//!
//! # Generated records into files (`--out-dir`)
//!
//! [`write_generated_files`] writes the records a fresh topic of `partitions`
//! partitions would receive, in the same order, into `DIR/part-<p>.jsonl`
//! (one file per partition, one record per line): the file source's layout
//! (SPEC §7), so the same data can be replayed by the job or by another
//! engine. No broker is involved and nothing is paced: the rate only sets how
//! dense event time is.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tracing::info;

use streamforge::source::generator::{GeneratorConfig, PayloadStyle};
use streamforge::source::kafka::producer::{check_fits, FileFeed, ProduceReport, RecordProducer};
use streamforge::source::kafka::KafkaSettings;

pub struct ProduceOptions {
    pub settings: KafkaSettings,
    /// Events per second over all partitions; 0 = as fast as possible.
    pub rate: u64,
    /// Total records; `None` = until `stop` (generated) or the end of the files.
    pub count: Option<u64>,
    pub anomaly_rate: f64,
    pub duplicate_rate: f64,
    pub late_rate: f64,
    pub disorder_ms: u64,
    pub seed: u64,
    pub users: u64,
    /// Replay these files (SPEC §7 layout) instead of generating.
    pub from_files: Option<Vec<PathBuf>>,
    pub stop: Arc<AtomicBool>,
    /// A progress line on stderr every second.
    pub progress: bool,
    /// Stamp each record with its event time (when the payload has a valid
    /// one) instead of the time it is sent.
    pub event_timestamps: bool,
    /// How generated payloads are written.
    pub style: PayloadStyle,
}

/// Event-time rate per partition when producing as fast as possible.
const DEFAULT_EVENT_RATE: u64 = 500;
/// How far behind its schedule the pacer may fall before it forgives the
/// debt instead of bursting to catch up.
const MAX_PACING_DEBT: Duration = Duration::from_secs(1);
/// The pacer sleeps only when at least this far ahead of its schedule, so a
/// high rate is paced in small bursts rather than one sleep per record.
const PACING_GRANULARITY: Duration = Duration::from_millis(1);

/// Where records come from.
enum Feed {
    Generated {
        config: GeneratorConfig,
        next: Vec<u64>,
        cursor: usize,
    },
    Files(FileFeed),
}

impl Feed {
    /// Writes the next record's payload into `buf` and returns its
    /// partition; `None` at the end of the input.
    fn next_record(&mut self, buf: &mut Vec<u8>) -> anyhow::Result<Option<u32>> {
        match self {
            Feed::Generated {
                config,
                next,
                cursor,
            } => {
                buf.clear();
                let p = *cursor;
                *cursor = (*cursor + 1) % next.len();
                config.payload(p as u32, next[p], buf);
                next[p] += 1;
                Ok(Some(p as u32))
            }
            Feed::Files(files) => files.next_record(buf),
        }
    }
}

/// Paces to `rate` records a second: record `k` is due `k / rate` seconds
/// after the origin. Never busy-waits: it sleeps until the next due time.
struct Pacer {
    rate: u64,
    origin: Instant,
    origin_count: u64,
}

impl Pacer {
    fn wait(&mut self, sent: u64, producer: Option<&RecordProducer>) {
        if self.rate == 0 {
            return;
        }
        let due = self.origin
            + Duration::from_secs_f64((sent - self.origin_count) as f64 / self.rate as f64);
        let now = Instant::now();
        if due >= now + PACING_GRANULARITY {
            // Serve delivery reports, then sleep. (librdkafka's poll timeout
            // is whole milliseconds; its remainder would be spun.)
            if let Some(p) = producer {
                p.poll();
            }
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        } else if due < now && now - due > MAX_PACING_DEBT {
            // A stall (full queue, broker away): resume the pace from here
            // rather than bursting through the missed schedule.
            self.origin = now;
            self.origin_count = sent;
        }
    }
}

/// The shares of broken, duplicate and late events must make sense.
fn check_shares(opts: &ProduceOptions) -> anyhow::Result<()> {
    for (name, share) in [
        ("anomaly rate", opts.anomaly_rate),
        ("duplicate rate", opts.duplicate_rate),
        ("late rate", opts.late_rate),
    ] {
        if !(0.0..=1.0).contains(&share) {
            bail!("the {name} must be between 0 and 1, got {share}");
        }
    }
    if opts.anomaly_rate + opts.late_rate > 1.0 {
        bail!("the anomaly rate and the late rate together must not exceed 1");
    }
    Ok(())
}

/// The generator for a fresh topic of `partitions` partitions: event time
/// starts now, at `rate / partitions` events per second per partition.
fn fresh_generator(opts: &ProduceOptions, partitions: u32, event_rate: u64) -> GeneratorConfig {
    GeneratorConfig {
        seed: opts.seed,
        partitions,
        events_per_partition: None,
        rate: event_rate,
        start_time_ms: streamforge::time::now_ms(),
        users: opts.users.max(1),
        anomaly_share: opts.anomaly_rate,
        duplicate_share: opts.duplicate_rate,
        late_share: opts.late_rate,
        disorder_ms: opts.disorder_ms,
        style: opts.style,
    }
}

/// Event time per partition: `rate` over all partitions, or the default
/// density when producing as fast as possible.
fn per_partition_rate(rate: u64, partitions: u32) -> u64 {
    if rate == 0 {
        DEFAULT_EVENT_RATE
    } else {
        (rate / partitions.max(1) as u64).max(1)
    }
}

/// `streamforge-tools produce --out-dir DIR`: writes `opts.count` generated
/// records into `DIR/part-<p>.jsonl`, exactly the records, partitions and
/// per-partition order that `produce` would send to a fresh topic of
/// `partitions` partitions (see the module documentation). Kafka settings
/// and `from_files` are not used. `DIR` is created if missing and must hold
/// no other files, since the file source reads every file of a directory.
/// `generator`, when given, replaces the fresh topic's generator (`gen-files`:
/// a fixed start time, so the files are reproducible).
pub fn write_generated_files(
    opts: &ProduceOptions,
    generator: Option<GeneratorConfig>,
    dir: &Path,
    partitions: u32,
) -> anyhow::Result<ProduceReport> {
    let started = Instant::now();
    check_shares(opts)?;
    if opts.from_files.is_some() {
        bail!("--out-dir writes generated events; it cannot be combined with --from-files");
    }
    let Some(count) = opts.count else {
        bail!("--out-dir needs --count (files are written, not streamed)");
    };
    if partitions == 0 {
        bail!("--partitions must be at least 1");
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    if std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .next()
        .is_some()
    {
        bail!(
            "{} is not empty; the file source reads every file of a directory, so give an empty or new one",
            dir.display()
        );
    }
    let mut files = Vec::with_capacity(partitions as usize);
    for p in 0..partitions {
        let path = dir.join(format!("part-{p}.jsonl"));
        let file =
            File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
        files.push((path, BufWriter::with_capacity(1 << 20, file)));
    }
    let config = generator.unwrap_or_else(|| {
        fresh_generator(opts, partitions, per_partition_rate(opts.rate, partitions))
    });
    let mut feed = Feed::Generated {
        config,
        next: vec![0; partitions as usize],
        cursor: 0,
    };
    let mut per_partition = BTreeMap::new();
    let mut payload = Vec::with_capacity(512);
    let mut written: u64 = 0;
    let mut last_progress = Instant::now();
    while written < count && !opts.stop.load(Ordering::Relaxed) {
        let Some(p) = feed.next_record(&mut payload)? else {
            break;
        };
        payload.push(b'\n');
        let (path, out) = &mut files[p as usize];
        out.write_all(&payload)
            .with_context(|| format!("writing {}", path.display()))?;
        *per_partition.entry(p).or_insert(0) += 1;
        written += 1;
        if opts.progress && last_progress.elapsed() >= Duration::from_secs(1) {
            eprint!("\r\x1b[2Kwritten {written} of {count}");
            last_progress = Instant::now();
        }
    }
    for (path, out) in &mut files {
        out.flush()
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if opts.progress {
        eprintln!("\r\x1b[2Kwritten {written} records");
    }
    if written < count {
        bail!("interrupted after {written} of {count} records");
    }
    Ok(ProduceReport {
        produced: written,
        per_partition,
        elapsed: started.elapsed(),
    })
}

/// Runs `streamforge-tools produce`.
pub fn produce(opts: &ProduceOptions) -> anyhow::Result<ProduceReport> {
    check_shares(opts)?;
    let mut producer = RecordProducer::connect(&opts.settings, opts.event_timestamps)?;
    let partitions = producer.partitions();
    let topic = producer.topic().to_string();
    let mut feed = match &opts.from_files {
        Some(inputs) => {
            let files = FileFeed::open(inputs)?;
            check_fits(&files, &producer)?;
            info!(topic, partitions, files = ?files.paths(), "producing: line i of file p to partition p");
            Feed::Files(files)
        }
        None => {
            let marks = producer.watermarks()?;
            let next: Vec<u64> = marks
                .iter()
                .map(|(_, high)| (*high).max(0) as u64)
                .collect();
            let event_rate = per_partition_rate(opts.rate, partitions);
            let least = next.iter().copied().min().unwrap_or(0);
            let mut config = fresh_generator(opts, partitions, event_rate);
            config.start_time_ms -= (least as i128 * 1000 / event_rate as i128) as i64;
            info!(
                topic,
                partitions,
                first_index = ?next,
                event_rate_per_partition = event_rate,
                rate = opts.rate,
                count = ?opts.count,
                "producing generated order events"
            );
            Feed::Generated {
                config,
                next,
                cursor: 0,
            }
        }
    };
    let mut pacer = Pacer {
        rate: opts.rate,
        origin: Instant::now(),
        origin_count: 0,
    };
    let mut payload = Vec::with_capacity(512);
    let mut sent: u64 = 0;
    let started = Instant::now();
    let mut last_progress = Instant::now();
    let mut last_progress_count = 0u64;
    let mut ended = false;
    while !opts.stop.load(Ordering::Relaxed) && opts.count.is_none_or(|c| sent < c) {
        pacer.wait(sent, Some(&producer));
        let Some(partition) = feed.next_record(&mut payload)? else {
            ended = true;
            break;
        };
        if !producer.send(partition, &payload, &opts.stop)? {
            break;
        }
        sent += 1;
        if opts.progress && last_progress.elapsed() >= Duration::from_secs(1) {
            let (_, acked, queued) = producer.progress();
            let secs = last_progress.elapsed().as_secs_f64();
            eprint!(
                "\r\x1b[2Kproduced {sent} | acked {acked} | {:.0} records/s | queued {queued}",
                (sent - last_progress_count) as f64 / secs,
            );
            last_progress = Instant::now();
            last_progress_count = sent;
        }
    }
    if opts.progress {
        eprint!(
            "\r\x1b[2Kflushing {} queued records...",
            producer.progress().2
        );
    }
    let report = producer.finish()?;
    if opts.progress {
        eprintln!(
            "\r\x1b[2Kproduced {} records to {topic} in {:.1}s{}",
            report.produced,
            started.elapsed().as_secs_f64(),
            if ended { " (end of input)" } else { "" }
        );
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_options(count: u64) -> ProduceOptions {
        ProduceOptions {
            settings: KafkaSettings::default(),
            rate: 0,
            count: Some(count),
            anomaly_rate: 0.0,
            duplicate_rate: 0.0,
            late_rate: 0.0,
            disorder_ms: 3000,
            seed: 7,
            users: 100,
            from_files: None,
            stop: Arc::new(AtomicBool::new(false)),
            progress: false,
            event_timestamps: false,
            style: PayloadStyle::Canonical,
        }
    }

    #[test]
    fn out_dir_gets_one_file_per_partition_in_topic_order() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("data");
        let report = write_generated_files(&file_options(10), None, &out, 3).unwrap();
        assert_eq!(report.produced, 10);
        assert_eq!(
            report.per_partition,
            BTreeMap::from([(0, 4), (1, 3), (2, 3)])
        );
        let mut first_time = None;
        for p in 0..3u32 {
            let text = std::fs::read_to_string(out.join(format!("part-{p}.jsonl"))).unwrap();
            let lines: Vec<&str> = text.lines().collect();
            assert_eq!(lines.len() as u64, report.per_partition[&p]);
            assert!(text.ends_with('\n'));
            for (i, line) in lines.iter().enumerate() {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                assert_eq!(v["event_id"], format!("p{p}-{i}"));
                assert!(v["event_time"].is_i64(), "{line}");
                first_time.get_or_insert(v["event_time"].as_i64().unwrap());
            }
        }
        // Event time starts now (within the disorder), like a fresh topic.
        let lag = streamforge::time::now_ms() - first_time.unwrap();
        assert!((0..60_000).contains(&lag), "{lag}");
        // A directory with files in it is refused: the file source would read them all.
        let err = write_generated_files(&file_options(10), None, &out, 3).unwrap_err();
        assert!(err.to_string().contains("not empty"), "{err}");
        let mut unbounded = file_options(1);
        unbounded.count = None;
        assert!(write_generated_files(&unbounded, None, &dir.path().join("x"), 1).is_err());
    }

    #[test]
    fn the_pacer_forgives_a_stall_instead_of_bursting() {
        let mut pacer = Pacer {
            rate: 1000,
            origin: Instant::now() - Duration::from_secs(5),
            origin_count: 0,
        };
        // 10 records sent in 5 s at 1000/s: far behind.
        pacer.wait(10, None);
        assert_eq!(pacer.origin_count, 10);
        let t = Instant::now();
        pacer.wait(30, None);
        let waited = t.elapsed();
        assert!(
            waited >= Duration::from_millis(15) && waited < Duration::from_millis(200),
            "{waited:?}"
        );
    }
}
