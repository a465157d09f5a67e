//! Shared test support: a data set whose fate is known line by line, an
//! oracle that computes the expected windows from that knowledge alone (it
//! never calls StreamForge's code), and helpers to run the real binary.
//!
//! The data set mimics what the job meets in production: several partitions
//! with bounded disorder, duplicates, every anomaly reason of SPEC §1, and
//! very late events.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub mod browser;
pub mod endpoints;
pub mod stack;
pub mod watch;

/// Small deterministic PRNG (xorshift64*), so the tests need no crate for it.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

/// What the job must do with one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    Accept { t_ms: i64, user: String, cents: u64 },
    Duplicate,
    Anomaly(&'static str),
}

pub struct DataSet {
    pub dir: PathBuf,
    /// partition -> lines (payload, fate)
    pub partitions: Vec<Vec<(String, Fate)>>,
    /// The valid events that are `late_event` anomalies for the live job:
    /// a replay of their range counts them in.
    pub late: Vec<Counted>,
}

/// What an accepted event contributes to its windows.
#[derive(Debug, Clone)]
pub struct Counted {
    pub t_ms: i64,
    pub user: String,
    pub cents: u64,
}

pub struct Shape {
    pub partitions: usize,
    pub per_partition: usize,
    /// Event-time spacing of consecutive lines in a partition.
    pub step_ms: i64,
    /// Maximum backward jitter (must stay below the 5 s watermark bound).
    pub disorder_ms: i64,
    pub seed: u64,
    pub t0_ms: i64,
}

impl Default for Shape {
    fn default() -> Self {
        Shape {
            partitions: 3,
            per_partition: 20_000,
            step_ms: 25,
            disorder_ms: 4_000,
            seed: 7,
            // 2025-11-25T10:00:00Z
            t0_ms: 1_764_064_800_000,
        }
    }
}

/// `ms` as RFC 3339 at `offset_minutes` from UTC (`Z` at 0), with
/// milliseconds.
pub fn rfc3339(ms: i64, offset_minutes: i64) -> String {
    // Independent of the crate's time module: civil-from-days by hand.
    let local = ms + offset_minutes * 60_000;
    let days = local.div_euclid(86_400_000);
    let rem = local.rem_euclid(86_400_000);
    let (h, mi, s, milli) = (
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000,
    );
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    let off = if offset_minutes == 0 {
        "Z".to_string()
    } else {
        let sign = if offset_minutes < 0 { '-' } else { '+' };
        let a = offset_minutes.abs();
        format!("{sign}{:02}:{:02}", a / 60, a % 60)
    };
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{milli:03}{off}")
}

/// Builds the data set and writes one file per partition into `dir`.
pub fn make_dataset(dir: &Path, shape: &Shape) -> DataSet {
    std::fs::create_dir_all(dir).unwrap();
    let mut rng = Rng::new(shape.seed);
    let mut partitions = Vec::new();
    let mut late = Vec::new();
    for p in 0..shape.partitions {
        let mut lines: Vec<(String, Fate)> = Vec::with_capacity(shape.per_partition);
        let mut accepted_recent: Vec<usize> = Vec::new();
        for i in 0..shape.per_partition {
            let base = shape.t0_ms + i as i64 * shape.step_ms;
            let t = base - rng.below(shape.disorder_ms as u64 + 1) as i64;
            let id = format!("ev-{p}-{i}");
            let user_n = rng.below(500);
            let cents = rng.below(100_000);
            let amount = format!("{}.{:02}", cents / 100, cents % 100);
            let roll = rng.below(1000);
            let line = match roll {
                // Duplicates: an exact copy of a recent accepted line.
                0..=19 if !accepted_recent.is_empty() => {
                    let j = accepted_recent[accepted_recent.len()
                        - 1
                        - rng.below(accepted_recent.len().min(10) as u64) as usize];
                    (lines[j].0.clone(), Fate::Duplicate)
                }
                20..=22 => (
                    format!(r#"{{"event_id":"{id}","order_id":"o","user_id":"u1","amount":1.0"#),
                    Fate::Anomaly("malformed_json"),
                ),
                23..=24 => (
                    format!(r#"[{{"event_id":"{id}"}}]"#),
                    Fate::Anomaly("not_an_object"),
                ),
                25 => ("".to_string(), Fate::Anomaly("malformed_json")),
                26 => (
                    format!(r#"{{"order_id":"o","user_id":"u1","amount":1,"event_time":{t}}}"#),
                    Fate::Anomaly("missing_field:event_id"),
                ),
                27 => (
                    format!(r#"{{"event_id":"{id}","user_id":"u1","amount":1,"event_time":{t}}}"#),
                    Fate::Anomaly("missing_field:order_id"),
                ),
                28 => (
                    format!(r#"{{"event_id":"{id}","order_id":"o","amount":1,"event_time":{t}}}"#),
                    Fate::Anomaly("missing_field:user_id"),
                ),
                29 => (
                    format!(
                        r#"{{"event_id":"{id}","order_id":"o","user_id":"u1","event_time":{t}}}"#
                    ),
                    Fate::Anomaly("missing_field:amount"),
                ),
                30 => (
                    format!(r#"{{"event_id":"{id}","order_id":"o","user_id":"u1","amount":1}}"#),
                    Fate::Anomaly("missing_field:event_time"),
                ),
                31 => (
                    format!(
                        r#"{{"event_id":{i},"order_id":"o","user_id":"u1","amount":1,"event_time":{t}}}"#
                    ),
                    Fate::Anomaly("bad_type:event_id"),
                ),
                32 => (
                    format!(
                        r#"{{"event_id":"{id}","order_id":"o","user_id":[1],"amount":1,"event_time":{t}}}"#
                    ),
                    Fate::Anomaly("bad_type:user_id"),
                ),
                33 => (
                    format!(
                        r#"{{"event_id":"{id}","order_id":"o","user_id":"u1","amount":true,"event_time":{t}}}"#
                    ),
                    Fate::Anomaly("bad_type:amount"),
                ),
                34 => (
                    format!(
                        r#"{{"event_id":"{id}","order_id":"o","user_id":"u1","amount":-{amount},"event_time":{t}}}"#
                    ),
                    Fate::Anomaly("bad_amount"),
                ),
                35 => (
                    format!(
                        r#"{{"event_id":"{id}","order_id":"o","user_id":"u1","amount":"1.005","event_time":{t}}}"#
                    ),
                    Fate::Anomaly("bad_amount"),
                ),
                36 => (
                    format!(
                        r#"{{"event_id":"{id}","order_id":"o","user_id":"u1","amount":"abc","event_time":{t}}}"#
                    ),
                    Fate::Anomaly("bad_amount"),
                ),
                37 => (
                    format!(
                        r#"{{"event_id":"{id}","order_id":"o","user_id":"u1","amount":1,"event_time":"2025-02-30T00:00:00Z"}}"#
                    ),
                    Fate::Anomaly("bad_event_time"),
                ),
                38 => (
                    format!(
                        r#"{{"event_id":"{id}","order_id":"o","user_id":"u1","amount":1,"event_time":{{"t":1}}}}"#
                    ),
                    Fate::Anomaly("bad_type:event_time"),
                ),
                39 => (
                    format!(
                        r#"{{"event_id":"{id}","order_id":7,"user_id":"u1","amount":1,"event_time":{t}}}"#
                    ),
                    Fate::Anomaly("bad_type:order_id"),
                ),
                40 => (
                    format!(
                        r#"{{"event_id":"{id}","order_id":"o","user_id":"u1","amount":1,"event_time":{t},"city":5}}"#
                    ),
                    Fate::Anomaly("bad_type:city"),
                ),
                // Very late: four minutes behind the stream, once the stream is
                // old enough for that to be past every window's lateness.
                41..=43 if base - shape.t0_ms > 300_000 => {
                    let late_t = t - 240_000;
                    late.push(Counted {
                        t_ms: late_t,
                        user: format!("u{user_n}"),
                        cents,
                    });
                    (
                        format!(
                            r#"{{"event_id":"{id}","order_id":"o","user_id":"u{user_n}","amount":{amount},"event_time":{late_t}}}"#
                        ),
                        Fate::Anomaly("late_event"),
                    )
                }
                _ => {
                    // Valid events in every accepted form.
                    let user = format!("{user_n}");
                    let user_json = if rng.chance(300) {
                        user.clone()
                    } else {
                        format!("\"{user}\"")
                    };
                    let amount_json = if rng.chance(300) {
                        format!("\"{amount}\"")
                    } else {
                        amount.clone()
                    };
                    let time_json = match rng.below(3) {
                        0 => t.to_string(),
                        1 => format!("\"{}\"", rfc3339(t, 0)),
                        _ => format!("\"{}\"", rfc3339(t, 8 * 60)),
                    };
                    // Half with a place (for grouped results), from small
                    // pools; the rest without (`unknown`).
                    let extra = if rng.chance(500) {
                        let city = ["Hangzhou", "Beijing", "Chengdu", "Xi'an", "Wuhan"]
                            [rng.below(5) as usize];
                        let category = ["books", "toys", "food"][rng.below(3) as usize];
                        format!(r#","city":"{city}","category":"{category}""#)
                    } else {
                        r#","note":{"x":[1,2]}"#.to_string()
                    };
                    accepted_recent.push(lines.len());
                    if accepted_recent.len() > 32 {
                        accepted_recent.remove(0);
                    }
                    (
                        format!(
                            r#"{{"event_id":"{id}","order_id":"o{i}","user_id":{user_json},"amount":{amount_json},"event_time":{time_json}{extra}}}"#
                        ),
                        Fate::Accept {
                            t_ms: t,
                            user,
                            cents,
                        },
                    )
                }
            };
            lines.push(line);
        }
        let mut text = String::new();
        for (payload, _) in &lines {
            text.push_str(payload);
            text.push('\n');
        }
        std::fs::write(dir.join(format!("part-{p}.jsonl")), text).unwrap();
        partitions.push(lines);
    }
    DataSet {
        dir: dir.to_path_buf(),
        partitions,
        late,
    }
}

impl DataSet {
    /// The windows of SPEC §4/§8 computed from the known fates, as the exact
    /// lines `streamforge results` must print.
    pub fn expected_results(&self) -> Vec<String> {
        window_lines(self.accepted())
    }

    /// The events the live job accepts.
    pub fn accepted(&self) -> impl Iterator<Item = Counted> + '_ {
        self.partitions
            .iter()
            .flatten()
            .filter_map(|(_, fate)| match fate {
                Fate::Accept { t_ms, user, cents } => Some(Counted {
                    t_ms: *t_ms,
                    user: user.clone(),
                    cents: *cents,
                }),
                _ => None,
            })
    }

    /// Expected anomaly-log entries: (reason, partition, offset, payload).
    pub fn expected_anomalies(&self) -> BTreeSet<(String, u32, u64, String)> {
        let mut out = BTreeSet::new();
        for (p, lines) in self.partitions.iter().enumerate() {
            for (i, (payload, fate)) in lines.iter().enumerate() {
                if let Fate::Anomaly(reason) = fate {
                    out.insert((reason.to_string(), p as u32, i as u64, payload.clone()));
                }
            }
        }
        out
    }

    pub fn total(&self) -> usize {
        self.partitions.iter().map(|p| p.len()).sum()
    }
}

/// The result lines (SPEC §8) of the windows holding `events`, computed by
/// hand: each event counts in windows `floor(t / 30 s) * 30 s` and the one
/// before.
pub fn window_lines(events: impl IntoIterator<Item = Counted>) -> Vec<String> {
    let slide = 30_000i64;
    let mut windows: BTreeMap<i64, (u64, u128, BTreeSet<String>)> = BTreeMap::new();
    for e in events {
        let s = e.t_ms.div_euclid(slide) * slide;
        for start in [s, s - slide] {
            let w = windows.entry(start).or_default();
            w.0 += 1;
            w.1 += e.cents as u128;
            w.2.insert(e.user.clone());
        }
    }
    windows
        .into_iter()
        .map(|(start, (cnt, cents, users))| {
            format!(
                "{{\"window_start\": {}, \"window_end\": {}, \"order_cnt\": {}, \"gmv_total\": \"{}.{:02}\", \"user_cnt\": {}}}",
                start / 1000,
                start / 1000 + 60,
                cnt,
                cents / 100,
                cents % 100,
                users.len()
            )
        })
        .collect()
}

/// Compares `got` (`results --group-by DIMS` lines) with the independent
/// recomputation [`grouped_lines`] of the accepted payloads, at most
/// `max_values` values per window; the data must make some fold into
/// `other`, or the fold went untested.
pub fn assert_grouped_results<'a>(
    got: &[String],
    accepted: impl IntoIterator<Item = &'a str>,
    dims: &[&str],
    max_values: usize,
) {
    let want = grouped_lines(accepted, dims, max_values);
    assert!(
        want.iter().any(|l| l.contains("\"other\"")),
        "{dims:?} folds"
    );
    assert_eq!(got.len(), want.len(), "{dims:?}");
    assert_eq!(got, want, "{dims:?}");
}

/// Runs `cmd()` again and again until a run ends on its own: each of the
/// first `kill_attempts` runs is killed with SIGKILL after 1 to
/// `max_checkpoints` of its checkpoints plus up to `max_extra_us` µs
/// (drawn from `seed`; see [`kill_after_checkpoints`]), unless it ends
/// first. Returns the kills that landed; panics when a run fails on its
/// own or no run completes.
pub fn sigkill_until_done(
    mut cmd: impl FnMut() -> Command,
    seed: u64,
    kill_attempts: u32,
    max_checkpoints: u64,
    max_extra_us: u64,
) -> u32 {
    let mut rng = Rng::new(seed);
    let mut kills = 0;
    for attempt in 0..kill_attempts + 10 {
        let mut child = spawn(&mut cmd());
        let wanted = 1 + rng.below(max_checkpoints);
        let extra = std::time::Duration::from_micros(rng.below(max_extra_us));
        if attempt < kill_attempts && kill_after_checkpoints(&mut child, wanted, extra) {
            kills += 1;
            continue;
        }
        drop(child.stderr.take());
        let status = child.wait().unwrap();
        assert!(
            status.success(),
            "streamforge failed without being killed: {status}"
        );
        eprintln!("completed after {kills} SIGKILLs");
        return kills;
    }
    panic!("the job never completed");
}

/// The lines `streamforge results --group-by DIMS` must print for the
/// payloads of `accepted` events, from the definition in docs/semantics.md
/// alone: per window and grouping, the values (`unknown` where the field is
/// missing) sorted by (XXH3-64 of the values joined by 0x1f, the values);
/// the first `max_values` have rows of their own, the rest (and the value
/// `other`) add up in `other`. Ordered by window start, then values.
pub fn grouped_lines<'a>(
    accepted: impl IntoIterator<Item = &'a str>,
    dims: &[&str],
    max_values: usize,
) -> Vec<String> {
    type Figures = (u64, u128, BTreeSet<String>);
    let slide = 30_000i64;
    let mut windows: BTreeMap<i64, BTreeMap<Vec<String>, Figures>> = BTreeMap::new();
    for payload in accepted {
        let v: serde_json::Value = serde_json::from_str(payload).unwrap();
        let t = match &v["event_time"] {
            serde_json::Value::Number(n) => n.as_i64().unwrap(),
            other => parse_rfc3339_ms(other.as_str().unwrap()),
        };
        let cents = match &v["amount"] {
            serde_json::Value::String(a) => parse_cents(a),
            n => parse_cents(&n.to_string()),
        };
        let user = match &v["user_id"] {
            serde_json::Value::String(u) => u.clone(),
            n => n.to_string(),
        };
        let values: Vec<String> = dims
            .iter()
            .map(|d| v[*d].as_str().unwrap_or("unknown").to_string())
            .collect();
        let s = t.div_euclid(slide) * slide;
        for start in [s, s - slide] {
            let f = windows
                .entry(start)
                .or_default()
                .entry(values.clone())
                .or_default();
            f.0 += 1;
            f.1 += cents;
            f.2.insert(user.clone());
        }
    }
    let line = |start: i64, values: &[String], f: &Figures| {
        let fields: String = dims
            .iter()
            .zip(values)
            .map(|(d, v)| format!(", {}: {}", serde_json::json!(d), serde_json::json!(v)))
            .collect();
        format!(
            "{{\"window_start\": {}, \"window_end\": {}{fields}, \"order_cnt\": {}, \"gmv_total\": \"{}.{:02}\", \"user_cnt\": {}}}",
            start / 1000,
            start / 1000 + 60,
            f.0,
            f.1 / 100,
            f.1 % 100,
            f.2.len()
        )
    };
    let mut out = Vec::new();
    for (start, groups) in windows {
        let mut ranked: Vec<(u64, Vec<String>, Figures)> = Vec::new();
        let mut other: Figures = Default::default();
        for (values, f) in groups {
            if values.iter().any(|v| v == "other") {
                other.0 += f.0;
                other.1 += f.1;
                other.2.extend(f.2);
            } else {
                let h = xxhash_rust::xxh3::xxh3_64(values.join("\u{1f}").as_bytes());
                ranked.push((h, values, f));
            }
        }
        ranked.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        let mut rows: Vec<(Vec<String>, Figures)> = Vec::new();
        for (i, (_, values, f)) in ranked.into_iter().enumerate() {
            if i < max_values {
                rows.push((values, f));
            } else {
                other.0 += f.0;
                other.1 += f.1;
                other.2.extend(f.2);
            }
        }
        if other.0 > 0 {
            rows.push((vec!["other".to_string(); dims.len()], other));
        }
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        out.extend(rows.iter().map(|(values, f)| line(start, values, f)));
    }
    out
}

fn parse_cents(amount: &str) -> u128 {
    let (int, frac) = amount.split_once('.').unwrap_or((amount, ""));
    let frac = format!("{frac:0<2}");
    int.parse::<u128>().unwrap() * 100 + frac[..2].parse::<u128>().unwrap()
}

fn parse_rfc3339_ms(text: &str) -> i64 {
    let t =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).unwrap();
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

impl DataSet {
    /// The payloads of the events the live job accepts.
    pub fn accepted_payloads(&self) -> impl Iterator<Item = &str> + '_ {
        self.partitions
            .iter()
            .flatten()
            .filter(|(_, fate)| matches!(fate, Fate::Accept { .. }))
            .map(|(payload, _)| payload.as_str())
    }
}

/// The `window_start` (epoch s) of a result line.
pub fn window_start_of(line: &str) -> i64 {
    let v: serde_json::Value = serde_json::from_str(line).expect("a result line is JSON");
    v["window_start"]
        .as_i64()
        .expect("window_start is a number")
}

/// Reads the anomaly log and checks every record appears exactly once.
pub fn read_anomalies(path: &Path) -> Vec<(String, u32, u64, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("anomaly log line is not JSON ({e}): {line}"));
            (
                v["reason"].as_str().unwrap().to_string(),
                v["partition"].as_u64().unwrap() as u32,
                v["offset"].as_u64().unwrap(),
                v["payload"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

pub fn assert_anomalies_exactly_once(path: &Path, expected: &BTreeSet<(String, u32, u64, String)>) {
    let got = read_anomalies(path);
    let unique: BTreeSet<_> = got.iter().cloned().collect();
    assert_eq!(
        got.len(),
        unique.len(),
        "the anomaly log holds some record more than once"
    );
    let missing: Vec<_> = expected.difference(&unique).take(5).collect();
    let extra: Vec<_> = unique.difference(expected).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "anomaly log differs from the oracle: missing {missing:?}, unexpected {extra:?}"
    );
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_streamforge"))
}

pub fn streamforge(args: &[&str]) -> Command {
    let mut cmd = Command::new(bin());
    cmd.args(args);
    // Tests must not pick up the repository's config file or the caller's overrides.
    cmd.env_remove("STREAMFORGE_CONFIG");
    cmd.env("STREAMFORGE_CONFIG", "/dev/null");
    cmd.env("RUST_LOG", "info");
    // The metrics listener is on by default on one fixed port; the tests run
    // many jobs at once, so each takes a free port of its own (a flag wins).
    cmd.env("STREAMFORGE__METRICS_ADDR", "127.0.0.1:0");
    cmd
}

/// `streamforge run` over `source` into the embedded sink, bounded, with
/// its own state directory and anomaly log (add flags with `.args`).
pub fn bounded_embedded(source: &str, state: &Path, log: &Path) -> Command {
    let (state, log) = (state.to_str().unwrap(), log.to_str().unwrap());
    streamforge(&[
        "run",
        "--source",
        source,
        "--sink",
        "embedded",
        "--bounded",
        "--state-dir",
        state,
        "--anomaly-log",
        log,
    ])
}

/// Runs `cmd` and asserts it succeeded.
pub fn output_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("running streamforge");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn run_ok(args: &[&str]) -> Output {
    output_ok(&mut streamforge(args))
}

pub fn results_lines(out: &Output) -> Vec<String> {
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Compares result lines, printing the first differences.
pub fn assert_same_results(got: &[String], expected: &[String]) {
    if got != expected {
        let mut diff = Vec::new();
        let g: BTreeSet<_> = got.iter().collect();
        let e: BTreeSet<_> = expected.iter().collect();
        for x in e.difference(&g).take(5) {
            diff.push(format!("  expected only: {x}"));
        }
        for x in g.difference(&e).take(5) {
            diff.push(format!("  got only:      {x}"));
        }
        panic!(
            "results differ from the oracle ({} rows vs {} expected):\n{}",
            got.len(),
            expected.len(),
            diff.join("\n")
        );
    }
}

pub fn spawn(cmd: &mut Command) -> Child {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning streamforge")
}

/// Waits until the job has committed `wanted` checkpoints (its
/// `checkpoints_committed` metric), waits `extra`, and kills it with
/// SIGKILL: a random moment chosen by the job's own progress, not by
/// guessed timings. Returns false (without killing) when the job ended
/// before. The job's log is drained meanwhile and dropped.
pub fn kill_after_checkpoints(child: &mut Child, wanted: u64, extra: std::time::Duration) -> bool {
    kill_after_checkpoints_or_end(child, wanted, extra).is_none()
}

/// [`kill_after_checkpoints`], keeping the job's log: `None` when it was
/// killed, its whole standard error when it ended on its own first.
pub fn kill_after_checkpoints_or_end(
    child: &mut Child,
    wanted: u64,
    extra: std::time::Duration,
) -> Option<String> {
    use std::io::{BufRead, BufReader};
    let stderr = child.stderr.take()?;
    let (tx, addr) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut log = String::new();
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(found) = watch::metrics_address(&line) {
                let _ = tx.send(found);
            }
            log.push_str(&line);
            log.push('\n');
        }
        log
    });
    let mut served = None;
    let deadline = std::time::Instant::now() + watch::WAIT_DEADLINE;
    loop {
        served = served.or_else(|| addr.try_recv().ok());
        if let Some(at) = &served {
            let body = watch::fetch_metrics(at);
            if metric_sum(&body, "streamforge_checkpoints_committed_total") >= wanted as f64 {
                std::thread::sleep(extra);
                kill9(child);
                return None;
            }
        }
        if child.try_wait().unwrap().is_some() {
            return Some(reader.join().unwrap_or_default());
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the job neither committed {wanted} checkpoints nor ended within {:?}",
            watch::WAIT_DEADLINE
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// Kills a child with SIGKILL (no chance to clean up, like `kill -9`).
pub fn kill9(child: &mut Child) {
    unsafe {
        libc::kill(child.id() as i32, libc::SIGKILL);
    }
    let _ = child.wait();
}

/// A job running live (not bounded) with its metrics listener, watched
/// through its metrics rather than its log text, and stopped with SIGTERM.
pub struct LiveJob {
    pub child: Child,
    pub addr: String,
    /// Every line the job wrote to stderr so far (drained by a thread, so
    /// the job never blocks on a full pipe).
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl LiveJob {
    /// Spawns `cmd` (a `run` command without `--bounded`) with a metrics
    /// listener on a free loopback port.
    pub fn spawn(cmd: &mut Command) -> LiveJob {
        use std::io::{BufRead, BufReader};
        cmd.args(["--metrics-addr", "127.0.0.1:0"]);
        let mut child = spawn(cmd);
        let stderr = child.stderr.take().unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("address=").nth(1) {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_string());
                    }
                }
                sink.lock().unwrap().push(line);
            }
        });
        let addr = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .unwrap_or_else(|_| {
                panic!(
                    "the job did not say where it serves metrics; log:\n{}",
                    log.lock().unwrap().join("\n")
                )
            });
        LiveJob { child, addr, log }
    }

    /// The job's `/metrics` text.
    pub fn metrics(&self) -> String {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(&self.addr) else {
            return String::new();
        };
        let _ = write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        );
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        text.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default()
    }

    /// The sum of every sample of metric `name` (labels ignored); 0 when
    /// absent.
    pub fn metric(&self, name: &str) -> f64 {
        metric_sum(&self.metrics(), name)
    }

    /// Polls the metrics until `done` holds, failing with the job's log
    /// after `limit`.
    pub fn wait_for(
        &mut self,
        what: &str,
        limit: std::time::Duration,
        mut done: impl FnMut(&LiveJob) -> bool,
    ) {
        let deadline = std::time::Instant::now() + limit;
        while !done(self) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "the job ended ({status}) before {what}; log:\n{}",
                    self.log.lock().unwrap().join("\n")
                );
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}; metrics:\n{}\nlog:\n{}",
                self.metrics(),
                self.log.lock().unwrap().join("\n")
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn stop(mut self) {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let status = self.child.wait().unwrap();
        // Let the reader thread take the last lines.
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(
            status.success(),
            "the job exited {status} on SIGTERM; log:\n{}",
            self.log.lock().unwrap().join("\n")
        );
    }
}

/// The sum of every sample of metric `name` in a Prometheus text body.
pub fn metric_sum(body: &str, name: &str) -> f64 {
    body.lines()
        .filter(|l| {
            l.starts_with(name) && matches!(l.as_bytes().get(name.len()), Some(b' ') | Some(b'{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The folder of a case from outside (`tests/cases/NAME`).
pub fn case_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/cases")
        .join(name)
}

/// A case's expected table (SPEC §8 lines).
pub fn case_expected(name: &str) -> Vec<String> {
    std::fs::read_to_string(case_dir(name).join("expected.jsonl"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The reasons of the anomaly log's records, with partition and offset.
pub fn anomaly_reasons(path: &Path) -> Vec<(String, u32, u64)> {
    read_anomalies(path)
        .into_iter()
        .map(|(reason, partition, offset, _)| (reason, partition, offset))
        .collect()
}
