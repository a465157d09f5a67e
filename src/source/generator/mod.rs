//! The generator source (SPEC §7): simulated order events that are a pure
//! function of `(seed, partition, offset)`.
//!
//! Because any payload can be recomputed from its coordinates, the generator
//! seeks like a Kafka partition and a replay or restart reads exactly the
//! same bytes. The stream is shaped like real traffic: `rate` events per
//! second of event time on each partition, starting at `start_time`; event
//! times jitter back by up to `disorder_ms` (keep it within the watermark
//! bound for deterministic results); a share of events are re-sent copies of
//! a recent event (duplicates), a share are broken in one of the ways SPEC §1
//! names, and a share are very late (three minutes older than their neighbours,
//! well past window size + allowed lateness + the watermark bound).
//!
//! Payloads are written in a [`PayloadStyle`]: by default the canonical
//! layout (fields in order, no whitespace, epoch milliseconds, plain ASCII),
//! or the way a real producer writes them (Python, Jackson, Go, JavaScript,
//! pretty-printed, reordered), or a mix of those; see [`style`].

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{End, PartitionState, RecordBatch, Source, SourceError};
use crate::event::{Event, Field, Reason};

mod emit;
pub mod style;

pub use style::PayloadStyle;
use style::{Defect, Order};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GeneratorConfig {
    pub seed: u64,
    pub partitions: u32,
    /// Events per partition; required for a bounded run, unbounded if absent.
    pub events_per_partition: Option<u64>,
    /// Events per second of event time, per partition.
    pub rate: u64,
    /// First event time, epoch ms.
    pub start_time_ms: i64,
    /// Distinct users to draw from.
    pub users: u64,
    /// Share (0..1) of broken events.
    pub anomaly_share: f64,
    /// Share (0..1) of re-sent copies of a recent event.
    pub duplicate_share: f64,
    /// Share (0..1) of events three minutes older than the stream
    /// (late_event), drawn only once the stream is more than four minutes
    /// of event time old (before that they could not be late on every
    /// partition): over a shorter input there are none, and the share of
    /// the whole input is this times the part of it past the fourth minute.
    pub late_share: f64,
    /// Maximum backward jitter of event times within a partition.
    pub disorder_ms: u64,
    /// How payloads are written (see [`PayloadStyle`]).
    pub style: PayloadStyle,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        GeneratorConfig {
            seed: 42,
            partitions: 4,
            events_per_partition: Some(150_000),
            rate: 500,
            // 2025-11-25T10:00:00Z
            start_time_ms: 1_764_064_800_000,
            users: 20_000,
            anomaly_share: 0.01,
            duplicate_share: 0.02,
            late_share: 0.001,
            disorder_ms: 3_000,
            style: PayloadStyle::Canonical,
        }
    }
}

/// How far back a duplicate reaches for its original.
const DUP_DISTANCE: u64 = 16;
/// How much older than the stream a late event is.
const LATE_BY_MS: i64 = 180_000;

#[inline]
fn mix(mut x: u64) -> u64 {
    // splitmix64: a bijective, well-distributed mixer.
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[inline]
fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

impl GeneratorConfig {
    fn hash(&self, partition: u32, offset: u64, salt: u64) -> u64 {
        mix(self.seed ^ mix(((partition as u64) << 48) ^ offset ^ mix(salt)))
    }

    fn base_time(&self, offset: u64) -> i64 {
        let rate = self.rate.max(1);
        self.start_time_ms + (offset as i128 * 1000 / rate as i128) as i64
    }

    /// The record timestamp of `offset`: when the simulated producer sent
    /// it (the event time before disorder), like Kafka's `CreateTime`.
    pub fn send_time(&self, offset: u64) -> i64 {
        self.base_time(offset)
    }

    /// Writes the payload at `(partition, offset)` to `out`.
    pub fn payload(&self, partition: u32, offset: u64, out: &mut Vec<u8>) {
        self.original(partition, self.source_offset(partition, offset), out)
    }

    /// The offset whose payload `offset` carries: itself, or for a
    /// duplicate the recent offset it re-sends.
    fn source_offset(&self, partition: u32, offset: u64) -> u64 {
        let h = self.hash(partition, offset, 1);
        if offset >= DUP_DISTANCE && unit(h) < self.duplicate_share {
            offset - (1 + self.hash(partition, offset, 2) % DUP_DISTANCE)
        } else {
            offset
        }
    }

    /// The order at an offset that is not a duplicate, and its defect when
    /// it is one of the broken ones.
    fn order(&self, partition: u32, offset: u64) -> (Order, Option<Defect>) {
        let h = self.hash(partition, offset, 3);
        let jitter = if self.disorder_ms == 0 {
            0
        } else {
            (self.hash(partition, offset, 4) % (self.disorder_ms + 1)) as i64
        };
        let mut t = self.base_time(offset) - jitter;
        let roll = unit(self.hash(partition, offset, 5));
        // Late events only once the stream is old enough for them to be
        // late on every partition.
        if roll < self.late_share
            && self.base_time(offset) - self.start_time_ms > LATE_BY_MS + 60_000
        {
            t -= LATE_BY_MS;
        }
        let order = Order {
            partition,
            offset,
            user: h % self.users.max(1),
            cents: 100 + (self.hash(partition, offset, 6) % 99_900),
            time_ms: t,
            // The canonical layout draws its city and category from `h`,
            // as it always did; the styles from bits of their own.
            bits: match self.style {
                PayloadStyle::Canonical => h,
                _ => self.hash(partition, offset, 9),
            },
        };
        let anomaly = roll >= self.late_share && roll < self.late_share + self.anomaly_share;
        let defect = anomaly.then(|| Defect::of(self.hash(partition, offset, 7)));
        (order, defect)
    }

    /// The style the record at a (non-duplicate) offset is written in.
    fn style_at(&self, partition: u32, offset: u64) -> PayloadStyle {
        self.style.pick(self.hash(partition, offset, 8))
    }

    /// The payload an offset has when it is not a duplicate.
    fn original(&self, partition: u32, offset: u64, out: &mut Vec<u8>) {
        let (order, defect) = self.order(partition, offset);
        match self.style_at(partition, offset) {
            PayloadStyle::Canonical => canonical(&order, defect, out),
            style => style::write(style, &order.event(style), order.bits, defect, out),
        }
    }

    /// What [`crate::event::parse_event`] must make of the payload at
    /// `(partition, offset)`: the event the generator meant, or the reason
    /// it is an anomaly. Lateness and duplicates are the engine's business:
    /// a late event or a re-sent copy is a valid event here. Worked out from
    /// the order itself, not from the bytes, so tests can hold the parser to
    /// it.
    pub fn intended(&self, partition: u32, offset: u64) -> Result<Event<'static>, Reason> {
        let offset = self.source_offset(partition, offset);
        let (order, defect) = self.order(partition, offset);
        let style = self.style_at(partition, offset);
        if let Some(defect) = defect {
            return Err(match defect {
                Defect::Truncated => Reason::MalformedJson,
                Defect::NotAnObject => Reason::NotAnObject,
                Defect::NoOrderId => Reason::MissingField(Field::OrderId),
                Defect::AmountBool => Reason::BadType(Field::Amount),
                Defect::AmountNegative | Defect::AmountSubCent => Reason::BadAmount,
                Defect::BadTime => Reason::BadEventTime,
                // The canonical layout drops order_id's text too, but the
                // first rule broken decides.
                Defect::EventIdNumber => Reason::BadType(Field::EventId),
            });
        }
        Ok(match style {
            PayloadStyle::Canonical => Event {
                event_id: format!("p{partition}-{offset}").into(),
                order_id: format!("o{partition}-{offset}").into(),
                user_id: format!("u{}", order.user).into(),
                amount_cents: order.cents,
                event_time_ms: order.time_ms,
                city: CANONICAL_CITIES[(order.bits >> 20) as usize % 5].into(),
                category: CANONICAL_CATEGORIES[(order.bits >> 30) as usize % 4].into(),
            },
            style => style::read_back(style, &order.event(style), order.bits),
        })
    }
}

const CANONICAL_CITIES: [&str; 5] = ["Beijing", "Shanghai", "Shenzhen", "Hangzhou", "Chengdu"];
const CANONICAL_CATEGORIES: [&str; 4] = ["books", "electronics", "grocery", "apparel"];

/// The canonical layout, byte for byte what the generator always wrote
/// (a test pins it).
fn canonical(order: &Order, defect: Option<Defect>, out: &mut Vec<u8>) {
    let Order {
        partition,
        offset,
        user,
        cents,
        time_ms: t,
        bits: h,
    } = *order;
    let city = CANONICAL_CITIES[(h >> 20) as usize % 5];
    let category = CANONICAL_CATEGORIES[(h >> 30) as usize % 4];
    let event_id = format_args!("p{partition}-{offset}");
    let Some(defect) = defect else {
        let _ = write!(
            out,
            r#"{{"event_id":"{event_id}","order_id":"o{partition}-{offset}","user_id":"u{user}","amount":{}.{:02},"event_time":{t},"city":"{city}","category":"{category}"}}"#,
            cents / 100,
            cents % 100
        );
        return;
    };
    let _ = match defect {
        Defect::Truncated => write!(
            out,
            r#"{{"event_id":"{event_id}","order_id":"o","user_id":"u{user}","amou"#
        ),
        Defect::NotAnObject => write!(out, r#"["{event_id}",{t}]"#),
        Defect::NoOrderId => write!(
            out,
            r#"{{"event_id":"{event_id}","user_id":"u{user}","amount":1.00,"event_time":{t}}}"#
        ),
        Defect::AmountBool => write!(
            out,
            r#"{{"event_id":"{event_id}","order_id":"o","user_id":"u{user}","amount":true,"event_time":{t}}}"#
        ),
        Defect::AmountNegative => write!(
            out,
            r#"{{"event_id":"{event_id}","order_id":"o","user_id":"u{user}","amount":-{}.{:02},"event_time":{t}}}"#,
            cents / 100,
            cents % 100
        ),
        Defect::AmountSubCent => write!(
            out,
            r#"{{"event_id":"{event_id}","order_id":"o","user_id":"u{user}","amount":"12.345","event_time":{t}}}"#
        ),
        Defect::BadTime => write!(
            out,
            r#"{{"event_id":"{event_id}","order_id":"o","user_id":"u{user}","amount":1.00,"event_time":"2025-13-45T99:00:00Z"}}"#
        ),
        Defect::EventIdNumber => write!(
            out,
            r#"{{"event_id":{offset},"order_id":"o","user_id":"u{user}","amount":1.00,"event_time":{t}}}"#
        ),
    };
}

pub struct GeneratorSource {
    config: GeneratorConfig,
    next: Vec<u64>,
    /// Where each partition stops: `events_per_partition`, or a resumed
    /// bounded run's ends.
    end: Vec<Option<u64>>,
    bounded: bool,
    cursor: usize,
    name: String,
}

impl GeneratorSource {
    pub fn new(config: GeneratorConfig) -> Result<Self, SourceError> {
        if config.partitions == 0 {
            return Err(SourceError::Misconfigured(
                "generator: partitions must be at least 1".into(),
            ));
        }
        Ok(GeneratorSource {
            next: vec![0; config.partitions as usize],
            end: vec![None; config.partitions as usize],
            bounded: false,
            cursor: 0,
            name: format!("generator:{}", config.seed),
            config,
        })
    }
}

impl Source for GeneratorSource {
    fn id(&self) -> String {
        // Everything that changes the payloads identifies the input.
        let c = &self.config;
        format!(
            "generator:seed={},partitions={},rate={},start={},users={},anomaly={},dup={},late={},disorder={}",
            c.seed,
            c.partitions,
            c.rate,
            c.start_time_ms,
            c.users,
            c.anomaly_share,
            c.duplicate_share,
            c.late_share,
            c.disorder_ms
        ) + &match c.style {
            // Absent for the canonical layout, so that state directories
            // made before styles existed still match their input.
            PayloadStyle::Canonical => String::new(),
            style => format!(",style={style}"),
        }
    }

    fn source_name(&self, _partition: u32) -> &str {
        &self.name
    }

    fn partition_count(&self) -> usize {
        self.config.partitions as usize
    }

    fn open(
        &mut self,
        resume: &BTreeMap<u32, u64>,
        end: End<'_>,
    ) -> Result<BTreeMap<u32, u64>, SourceError> {
        self.bounded = !matches!(end, End::Never);
        if matches!(end, End::Now) && self.config.events_per_partition.is_none() {
            return Err(SourceError::Misconfigured(
                "generator: a bounded run needs source.generator.events_per_partition".into(),
            ));
        }
        for (p, next) in self.next.iter_mut().enumerate() {
            *next = resume.get(&(p as u32)).copied().unwrap_or(0);
            self.end[p] = match end {
                End::At(ends) => Some(ends.get(&(p as u32)).copied().unwrap_or(*next)),
                _ => self.config.events_per_partition,
            };
        }
        Ok(self
            .next
            .iter()
            .enumerate()
            .map(|(p, o)| (p as u32, *o))
            .collect())
    }

    fn end_offsets(&self) -> Option<BTreeMap<u32, u64>> {
        if !self.bounded {
            return None;
        }
        self.end
            .iter()
            .enumerate()
            .map(|(p, e)| e.map(|e| (p as u32, e)))
            .collect()
    }

    fn poll(
        &mut self,
        batch: &mut RecordBatch,
        max: usize,
        _timeout: Duration,
    ) -> Result<(), SourceError> {
        let n = self.next.len();
        let mut exhausted = 0;
        while batch.len() < max && exhausted < n {
            let p = self.cursor;
            self.cursor = (self.cursor + 1) % n;
            let mut took = 0;
            while took < 64 && batch.len() < max {
                let offset = self.next[p];
                if self.end[p].is_some_and(|end| offset >= end) {
                    break;
                }
                let start = batch.buffer().len();
                self.config.payload(p as u32, offset, batch.buffer());
                batch.push_written_at(p as u32, offset, self.config.send_time(offset), start);
                self.next[p] += 1;
                took += 1;
            }
            if took == 0 {
                exhausted += 1;
            } else {
                exhausted = 0;
            }
        }
        Ok(())
    }

    fn state(&self, partition: u32) -> PartitionState {
        let p = partition as usize;
        match (self.next.get(p), self.end.get(p).copied().flatten()) {
            (Some(next), Some(end)) if *next >= end && self.bounded => PartitionState::Finished,
            // A live run over a finite stream: it has all there is.
            (Some(next), Some(end)) if *next >= end => PartitionState::CaughtUp,
            (Some(_), _) => PartitionState::Backlog,
            (None, _) => PartitionState::Finished,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(c: &GeneratorConfig, p: u32, o: u64) -> String {
        let mut v = Vec::new();
        c.payload(p, o, &mut v);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn payloads_are_a_pure_function_of_their_coordinates() {
        let c = GeneratorConfig::default();
        assert_eq!(payload(&c, 1, 12345), payload(&c, 1, 12345));
        assert_ne!(payload(&c, 1, 12345), payload(&c, 2, 12345));
        let other = GeneratorConfig {
            seed: 7,
            ..c.clone()
        };
        assert_ne!(payload(&c, 1, 12345), payload(&other, 1, 12345));
    }

    #[test]
    fn seeking_reads_the_same_records() {
        let c = GeneratorConfig {
            events_per_partition: Some(300),
            partitions: 2,
            ..Default::default()
        };
        let mut all = GeneratorSource::new(c.clone()).unwrap();
        all.start(&BTreeMap::new(), true).unwrap();
        let mut batch = RecordBatch::default();
        all.poll(&mut batch, 10_000, Duration::ZERO).unwrap();
        assert_eq!(batch.len(), 600);
        let from_all: Vec<(u32, u64, Vec<u8>)> = batch
            .iter()
            .filter(|(m, _)| m.offset >= 250)
            .map(|(m, p)| (m.partition, m.offset, p.to_vec()))
            .collect();
        let mut sought = GeneratorSource::new(c).unwrap();
        sought
            .start(&[(0, 250), (1, 250)].into_iter().collect(), true)
            .unwrap();
        let mut batch = RecordBatch::default();
        sought.poll(&mut batch, 10_000, Duration::ZERO).unwrap();
        let mut from_seek: Vec<(u32, u64, Vec<u8>)> = batch
            .iter()
            .map(|(m, p)| (m.partition, m.offset, p.to_vec()))
            .collect();
        let mut from_all = from_all;
        from_all.sort();
        from_seek.sort();
        assert_eq!(from_all, from_seek);
        assert_eq!(sought.state(0), PartitionState::Finished);
    }

    /// The default (canonical) style writes exactly the bytes it always
    /// wrote: tests, benchmarks and recorded figures depend on them. The
    /// digest was taken from the generator before payload styles existed
    /// (commit 3a7f460).
    #[test]
    fn the_canonical_payloads_never_change() {
        let configs = [
            GeneratorConfig::default(),
            GeneratorConfig {
                seed: 1,
                events_per_partition: None,
                rate: 10_000,
                users: 100_000,
                anomaly_share: 0.1,
                duplicate_share: 0.1,
                late_share: 0.01,
                disorder_ms: 2_000,
                ..GeneratorConfig::default()
            },
        ];
        let mut all = Vec::new();
        for c in &configs {
            for p in 0..c.partitions {
                for o in 0..20_000 {
                    c.payload(p, o, &mut all);
                    all.push(b'\n');
                }
            }
        }
        let digest = xxhash_rust::xxh3::xxh3_64(&all);
        assert_eq!(
            (all.len(), digest),
            (22_733_694, 0x1fe3_a981_471e_fa74),
            "{digest:#x}"
        );
    }

    #[test]
    fn shares_are_roughly_as_configured() {
        let c = GeneratorConfig {
            anomaly_share: 0.1,
            duplicate_share: 0.1,
            ..Default::default()
        };
        let mut broken = 0;
        let mut dups = 0;
        let mut seen = std::collections::HashSet::new();
        for o in 0..20_000 {
            let p = payload(&c, 0, o);
            let id = p.split('"').nth(3).unwrap_or("").to_string();
            if !p.contains("\"city\"") {
                broken += 1;
            } else if !seen.insert(id) {
                dups += 1;
            }
        }
        assert!((1_500..2_500).contains(&broken), "broken {broken}");
        assert!((1_400..2_400).contains(&dups), "dups {dups}");
    }

    fn styled(style: PayloadStyle) -> GeneratorConfig {
        GeneratorConfig {
            anomaly_share: 0.05,
            duplicate_share: 0.05,
            late_share: 0.01,
            style,
            ..GeneratorConfig::default()
        }
    }

    /// What an independent JSON reader (serde_json) finds in a payload,
    /// in the shape of an event; `None` when the payload is not an object
    /// with the seven fields of the right types.
    fn read_with_serde_json(
        payload: &str,
    ) -> Option<(String, String, String, u64, String, String)> {
        let v: serde_json::Value = serde_json::from_str(payload).ok()?;
        let text = |k: &str| v.get(k)?.as_str().map(str::to_string);
        let user = match v.get("user_id")? {
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::String(s) => s.clone(),
            _ => return None,
        };
        // Floats are fine here: amounts have at most 17 significant digits.
        let amount = match v.get("amount")? {
            serde_json::Value::Number(n) => n.as_f64()?,
            serde_json::Value::String(s) => s.parse().ok()?,
            _ => return None,
        };
        Some((
            text("event_id")?,
            text("order_id")?,
            user,
            (amount * 100.0).round() as u64,
            text("city")?,
            text("category")?,
        ))
    }

    /// Every style, every kind of record (valid, broken, late, re-sent):
    /// the parser reads what the generator meant, worked out from the order
    /// rather than from the bytes, and serde_json reads the same fields.
    #[test]
    fn every_style_parses_to_the_event_it_was_made_from() {
        for style in PayloadStyle::ALL {
            let c = styled(style);
            let mut reasons = std::collections::BTreeMap::new();
            for p in 0..c.partitions {
                for o in 0..3_000 {
                    let text = payload(&c, p, o);
                    let want = c.intended(p, o);
                    let got = crate::event::parse_event(text.as_bytes());
                    assert_eq!(got, want, "{style} p{p} o{o}: {text}");
                    match &want {
                        Ok(e) => {
                            let fields = read_with_serde_json(&text);
                            let expected = (
                                e.event_id.to_string(),
                                e.order_id.to_string(),
                                e.user_id.to_string(),
                                e.amount_cents,
                                e.city.to_string(),
                                e.category.to_string(),
                            );
                            assert_eq!(fields, Some(expected), "{style}: {text}");
                        }
                        Err(reason) => *reasons.entry(*reason).or_insert(0) += 1,
                    }
                }
            }
            // Each of the eight defects shows up.
            assert_eq!(reasons.len(), 7, "{style}: {reasons:?}");
        }
    }

    /// A payload is one line of a file (SPEC §7): no style writes a line
    /// break or any other control character.
    #[test]
    fn every_payload_fits_on_one_line() {
        for style in PayloadStyle::ALL {
            let c = styled(style);
            for o in 0..2_000 {
                let text = payload(&c, 0, o);
                assert!(
                    !text.contains(|c: char| c.is_control()),
                    "{style}: {text:?}"
                );
            }
        }
    }

    #[test]
    fn the_mix_draws_every_producer_style_by_its_weight() {
        let c = styled(PayloadStyle::Mix);
        let mut counts = std::collections::HashMap::new();
        for o in 0..100_000 {
            *counts.entry(c.style_at(0, o)).or_insert(0u64) += 1;
        }
        assert_eq!(counts.len(), PayloadStyle::MIX.len(), "{counts:?}");
        for (style, weight) in PayloadStyle::MIX {
            let share = counts[&style] as f64 / 1_000.0;
            assert!(
                (share - weight as f64).abs() < 1.0,
                "{style}: {share}% for {weight}%"
            );
        }
    }

    /// The traits of each producer that make its payloads what they are.
    #[test]
    fn styles_write_the_way_their_producers_do() {
        let sample = |style| -> Vec<String> {
            let c = GeneratorConfig {
                style,
                anomaly_share: 0.0,
                duplicate_share: 0.0,
                ..GeneratorConfig::default()
            };
            (0..400).map(|o| payload(&c, 1, o)).collect()
        };
        let all = |style, test: &dyn Fn(&str) -> bool| sample(style).iter().all(|p| test(p));
        let some = |style, test: &dyn Fn(&str) -> bool| sample(style).iter().any(|p| test(p));
        use PayloadStyle::*;
        // Python: ", " and ": ", ASCII only, non-ASCII escaped (also as a
        // surrogate pair), microseconds and "+00:00".
        assert!(all(Python, &|p| p.contains("\", \"")
            && p.contains("\": ")
            && p.is_ascii()));
        assert!(some(Python, &|p| p.contains(r"S\u00e3o Paulo")));
        assert!(some(Python, &|p| p.contains(r"\ud83c\udf81")));
        assert!(some(Python, &|p| p.contains("+00:00\"")));
        assert!(some(Python, &|p| p.contains(".0, \"event_time")));
        // Jackson: compact, order_id first, raw UTF-8, epoch numbers or
        // Instant text.
        assert!(all(Jackson, &|p| p.starts_with("{\"order_id\":")
            && !p.contains(", ")));
        assert!(some(Jackson, &|p| p.contains("São Paulo")));
        assert!(some(Jackson, &|p| p.contains("\"event_time\":17")));
        assert!(some(Jackson, &|p| p.contains("Z\",\"amount\"")));
        // Go: no raw <, > or &, and sorted keys in some.
        assert!(all(Go, &|p| !p.contains(['<', '>', '&'])));
        assert!(some(Go, &|p| p.contains(r"home \u0026 garden")));
        assert!(some(Go, &|p| p.starts_with("{\"amount\":")));
        assert!(some(Go, &|p| p.contains("+08:00\"")));
        // JavaScript: user ids as strings, milliseconds with Z.
        assert!(all(Js, &|p| p.contains("\"user_id\":\"")));
        assert!(some(Js, &|p| p.contains(".") && p.contains("Z\",\"session\"")));
        // Pretty: spaced out, on one line.
        assert!(all(Pretty, &|p| p.starts_with("{ \"event_id\" : ")
            && p.ends_with(" } }")));
        assert!(some(Pretty, &|p| p.contains("-05:00\"")));
        // Reordered: not always event_id first.
        assert!(some(Reordered, &|p| !p.starts_with("{\"event_id\"")));
    }

    /// Event times in every layout: RFC 3339 with `Z` and offsets, 0, 3, 6,
    /// 9 and Go's trimmed fraction digits, and epoch milliseconds.
    #[test]
    fn event_times_come_in_every_layout() {
        let c = styled(PayloadStyle::Mix);
        let mut digits = std::collections::BTreeSet::new();
        let mut offsets = std::collections::BTreeSet::new();
        for o in 0..20_000 {
            let text = payload(&c, 2, o);
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
                continue;
            };
            match &v["event_time"] {
                serde_json::Value::String(t) if t.len() >= 20 => {
                    let fraction = t[19..]
                        .strip_prefix('.')
                        .map_or(0, |f| f.bytes().take_while(u8::is_ascii_digit).count());
                    digits.insert(fraction);
                    offsets.insert(
                        if t.ends_with('Z') {
                            "Z"
                        } else {
                            &t[t.len() - 6..]
                        }
                        .to_string(),
                    );
                }
                serde_json::Value::Number(_) => {
                    digits.insert(usize::MAX);
                }
                _ => {}
            }
        }
        for d in [0, 3, 6, 9, usize::MAX] {
            assert!(digits.contains(&d), "{d} digits: {digits:?}");
        }
        assert!(digits.len() > 6, "Go's trimmed fractions: {digits:?}");
        for offset in ["Z", "+08:00", "-05:00", "+05:30", "+00:00", "+01:00"] {
            assert!(offsets.contains(offset), "{offset}: {offsets:?}");
        }
    }

    #[test]
    fn styled_payloads_are_pure_and_duplicates_identical() {
        let c = styled(PayloadStyle::Mix);
        let mut dups = 0;
        for o in 0..5_000u64 {
            let p = payload(&c, 3, o);
            assert_eq!(p, payload(&c, 3, o));
            let source = c.source_offset(3, o);
            if source != o {
                dups += 1;
                let mut original = Vec::new();
                c.original(3, source, &mut original);
                assert_eq!(p.as_bytes(), original);
            }
        }
        assert!((150..350).contains(&dups), "{dups}");
    }

    #[test]
    fn the_style_is_part_of_the_input_identity() {
        let id = |style| {
            GeneratorSource::new(GeneratorConfig {
                style,
                ..GeneratorConfig::default()
            })
            .unwrap()
            .id()
        };
        // Unchanged for the canonical layout: older states still match.
        assert_eq!(
            id(PayloadStyle::Canonical),
            "generator:seed=42,partitions=4,rate=500,start=1764064800000,users=20000,anomaly=0.01,dup=0.02,late=0.001,disorder=3000"
        );
        assert_eq!(
            id(PayloadStyle::Mix),
            format!("{},style=mix", id(PayloadStyle::Canonical))
        );
        for style in PayloadStyle::ALL {
            assert_eq!(style.name().parse::<PayloadStyle>(), Ok(style));
        }
        assert!("Python".parse::<PayloadStyle>().is_err());
    }
}
