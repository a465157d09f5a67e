//! `streamforge-tools bench parse`: JSON readers side by side, in one run,
//! on the same generated payloads of each style (the realistic `mix` first).
//!
//! Every reader ends in the product's own rules ([`RawFields::validate`]),
//! so the figures compare JSON reading and nothing else, and every reader's
//! verdicts are checked against what the generator meant
//! ([`GeneratorConfig::intended`]) before it is timed: a reader that gets
//! records wrong says so in the table. Timing is CPU time of this thread
//! (other load on the machine moves it much less than wall time), each
//! reader once per round, in a rotating order, and the median round is
//! reported.
//!
//! [`RawFields::validate`]: streamforge::event::RawFields::validate

mod legacy;
mod readers;

use std::hint::black_box;
use std::time::Duration;

use serde::Serialize;

use streamforge::event::{Event, Reason};
use streamforge::source::generator::{GeneratorConfig, PayloadStyle};

use readers::{ReadFn, Scratch, READERS};

#[derive(Debug, Clone)]
pub struct ParseBenchOptions {
    /// Payloads per style.
    pub records: usize,
    pub styles: Vec<PayloadStyle>,
    pub rounds: usize,
    pub anomaly_share: f64,
    pub duplicate_share: f64,
    /// Only readers whose name contains one of these (all when empty).
    pub readers: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ParseBenchRow {
    pub style: String,
    pub reader: String,
    pub records: usize,
    pub bytes_per_record: f64,
    /// Median over the rounds, CPU time of this thread.
    pub ns_per_record: f64,
    pub records_per_cpu_second: f64,
    /// Fastest and slowest round, for the spread.
    pub ns_per_record_min: f64,
    pub ns_per_record_max: f64,
    /// Records whose verdict differs from the generator's intent.
    pub wrong_verdicts: usize,
    /// One of them, for the reader's excuse.
    pub first_wrong: Option<String>,
}

/// Payloads of one style, back to back, with what each should give.
struct Corpus {
    style: PayloadStyle,
    data: Vec<u8>,
    spans: Vec<(usize, usize)>,
    intended: Vec<Result<Event<'static>, Reason>>,
}

fn corpus(opts: &ParseBenchOptions, style: PayloadStyle) -> Corpus {
    let gen = GeneratorConfig {
        seed: 1,
        partitions: 4,
        events_per_partition: None,
        rate: 10_000,
        users: 100_000,
        anomaly_share: opts.anomaly_share,
        duplicate_share: opts.duplicate_share,
        late_share: 0.0,
        disorder_ms: 2_000,
        style,
        ..GeneratorConfig::default()
    };
    let mut data = Vec::with_capacity(opts.records * 400);
    let mut spans = Vec::with_capacity(opts.records);
    let mut intended = Vec::with_capacity(opts.records);
    for i in 0..opts.records as u64 {
        let (p, o) = ((i % 4) as u32, i / 4);
        let start = data.len();
        gen.payload(p, o, &mut data);
        spans.push((start, data.len()));
        intended.push(gen.intended(p, o));
    }
    Corpus {
        style,
        data,
        spans,
        intended,
    }
}

/// How many verdicts of `read` differ from the intent, and the first one.
fn check(corpus: &Corpus, read: ReadFn) -> (usize, Option<String>) {
    let mut scratch = Scratch::default();
    let mut wrong = 0;
    let mut first = None;
    for (&(s, e), want) in corpus.spans.iter().zip(&corpus.intended) {
        let payload = &corpus.data[s..e];
        let got = read(payload, &mut scratch);
        if got.as_ref() != want.as_ref() {
            wrong += 1;
            first.get_or_insert_with(|| {
                format!(
                    "{} gave {got:?}, want {want:?}",
                    String::from_utf8_lossy(payload)
                )
            });
        }
    }
    (wrong, first)
}

/// CPU time of one pass of `read` over the corpus.
fn time_pass(corpus: &Corpus, read: ReadFn, scratch: &mut Scratch) -> Duration {
    let cpu = crate::bench::thread_cpu_time();
    for &(s, e) in &corpus.spans {
        let payload = black_box(&corpus.data[s..e]);
        let _ = black_box(read(payload, scratch).is_ok());
    }
    crate::bench::thread_cpu_time().saturating_sub(cpu)
}

pub fn run(opts: &ParseBenchOptions) -> anyhow::Result<Vec<ParseBenchRow>> {
    anyhow::ensure!(
        opts.records > 0 && opts.rounds > 0,
        "records and rounds must be positive"
    );
    let readers: Vec<(&str, ReadFn)> = READERS
        .into_iter()
        .filter(|(name, _)| {
            opts.readers.is_empty() || opts.readers.iter().any(|r| name.contains(r.as_str()))
        })
        .collect();
    anyhow::ensure!(!readers.is_empty(), "no reader matches {:?}", opts.readers);
    let mut rows = Vec::new();
    for &style in &opts.styles {
        let corpus = corpus(opts, style);
        eprintln!(
            "bench parse: {style}: {} records, {:.0} bytes each on average",
            corpus.spans.len(),
            corpus.data.len() as f64 / corpus.spans.len() as f64
        );
        let mut times: Vec<Vec<Duration>> = vec![Vec::new(); readers.len()];
        let mut scratch: Vec<Scratch> = readers.iter().map(|_| Scratch::default()).collect();
        for round in 0..opts.rounds {
            for k in 0..readers.len() {
                let r = (k + round) % readers.len();
                times[r].push(time_pass(&corpus, readers[r].1, &mut scratch[r]));
            }
        }
        for ((name, read), mut t) in readers.iter().zip(times) {
            let (wrong, first) = check(&corpus, *read);
            t.sort();
            let n = corpus.spans.len() as f64;
            let ns = |d: Duration| d.as_nanos() as f64 / n;
            let median = ns(t[t.len() / 2]);
            rows.push(ParseBenchRow {
                style: corpus.style.to_string(),
                reader: name.to_string(),
                records: corpus.spans.len(),
                bytes_per_record: corpus.data.len() as f64 / n,
                ns_per_record: median,
                records_per_cpu_second: 1e9 / median,
                ns_per_record_min: ns(t[0]),
                ns_per_record_max: ns(t[t.len() - 1]),
                wrong_verdicts: wrong,
                first_wrong: first,
            });
        }
    }
    Ok(rows)
}

pub fn markdown(rows: &[ParseBenchRow], rounds: usize) -> String {
    let mut out = format!(
        "| payload style | bytes/record | reader | ns/record (median of {rounds}; min–max) | records/s on one core | verdicts ≠ generator's |\n| --- | ---: | --- | ---: | ---: | ---: |\n"
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {:.0} | {} | {:.0} ({:.0}–{:.0}) | {:.2} M | {} |\n",
            r.style,
            r.bytes_per_record,
            r.reader,
            r.ns_per_record,
            r.ns_per_record_min,
            r.ns_per_record_max,
            r.records_per_cpu_second / 1e6,
            r.wrong_verdicts
        ));
    }
    for r in rows.iter().filter(|r| r.wrong_verdicts > 0) {
        if let Some(first) = &r.first_wrong {
            out.push_str(&format!("\n{} on {}: {first}\n", r.reader, r.style));
        }
    }
    out
}
