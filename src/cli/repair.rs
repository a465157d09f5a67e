//! `streamforge anomalies list|stats|replay`: look into the anomaly log, and
//! send repaired records back to the topic.
//!
//! The repair flow: `stats` shows what went wrong, `list --reason R` shows the
//! records, and `replay --reason R --fix CMD` pipes their payloads through a
//! command of your choice (sed, jq, a script: one line in, one line out; an
//! empty output line drops the record) and produces the repaired records to
//! their original partition. The live job then counts them like any record.
//! Repaired records that are late for the live job (their windows closed)
//! become `late_event` anomalies there; `streamforge replay` over their time
//! range counts them in. Producing the same repaired records twice is
//! harmless: the second copies are duplicates by `event_id`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context};

use crate::anomaly_log::AnomalyRecord;

/// Which records a command works on.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    /// Exact reason, or its family before `:` (`missing_field` matches
    /// `missing_field:amount`).
    pub reason: Option<String>,
    pub partition: Option<u32>,
}

impl Filter {
    pub fn matches(&self, r: &AnomalyRecord) -> bool {
        let reason_ok = self.reason.as_deref().is_none_or(|want| {
            r.reason == want
                || r.reason
                    .split_once(':')
                    .is_some_and(|(family, _)| family == want)
        });
        reason_ok && self.partition.is_none_or(|p| r.partition == p)
    }
}

/// Refuses a `--reason` that names no reason and no family of reasons (a
/// typo would match nothing, and `replay` would silently do nothing).
pub fn check_reason(want: &str) -> anyhow::Result<()> {
    let mut known: Vec<&str> = Vec::new();
    for r in crate::event::Reason::ALL {
        let name = r.as_str();
        known.push(name);
        if let Some((family, _)) = name.split_once(':') {
            known.push(family);
        }
    }
    known.sort_unstable();
    known.dedup();
    if !known.contains(&want) {
        bail!(
            "--reason {want}: no such reason; the reasons (or a family before `:`) are: {}",
            known.join(", ")
        );
    }
    Ok(())
}

/// The anomaly logs of `log` in either mode: the file itself if it exists,
/// and group mode's `<log>.partition-*` beside it, sorted by name.
pub fn group_logs(log: &Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    if log.is_file() {
        out.push(log.to_path_buf());
    }
    let dir = match log.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let Some(name) = log.file_name().and_then(|n| n.to_str()) else {
        return Ok(out);
    };
    let prefix = format!("{name}.partition-");
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    let mut parts: Vec<std::path::PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix(&prefix))
                .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(|e| e.path())
        .collect();
    parts.sort();
    out.extend(parts);
    Ok(out)
}

/// Reads the log, one record a line. A line that is not a record is an error
/// naming the line: the log is ours, so that means damage. A last line
/// without its newline is left out, with a note on stderr: the job writes
/// every record with its newline, so that record is still being written
/// (a running job), or was cut by a crash past the last checkpoint (the job
/// that resumes the partition writes it again).
pub fn read(path: &Path) -> anyhow::Result<Vec<AnomalyRecord>> {
    let mut file = File::open(path).with_context(|| {
        format!(
            "cannot open the anomaly log {} (set it with --log or `anomaly_log` in the config)",
            path.display()
        )
    })?;
    let mut text = Vec::new();
    std::io::Read::read_to_end(&mut file, &mut text)
        .with_context(|| format!("reading {}", path.display()))?;
    let whole = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    if whole < text.len() {
        eprintln!(
            "{}: the last line ({} bytes) has no newline yet: left out (a record being written, \
             or cut by a crash after the last checkpoint: the job that resumes the partition writes it again)",
            path.display(),
            text.len() - whole
        );
    }
    let mut out = Vec::new();
    for (i, line) in text[..whole].split(|&b| b == b'\n').enumerate() {
        if line.trim_ascii().is_empty() {
            continue;
        }
        let rec: AnomalyRecord = serde_json::from_slice(line)
            .with_context(|| format!("{} line {}: not an anomaly record", path.display(), i + 1))?;
        out.push(rec);
    }
    Ok(out)
}

/// Counts by reason and partition, and the ranges covered.
#[derive(Debug, Default, PartialEq)]
pub struct Stats {
    pub total: u64,
    pub by_reason: BTreeMap<String, u64>,
    pub by_partition: BTreeMap<(String, u32), (u64, u64, u64)>,
    /// Event times of the anomalies that have one (late events).
    pub event_time_ms: Option<(i64, i64)>,
    pub detected_at: Option<(String, String)>,
}

pub fn stats<'a>(records: impl IntoIterator<Item = &'a AnomalyRecord>) -> Stats {
    let mut s = Stats::default();
    for r in records {
        s.total += 1;
        *s.by_reason.entry(r.reason.clone()).or_default() += 1;
        let e = s
            .by_partition
            .entry((r.source.clone(), r.partition))
            .or_insert((0, u64::MAX, 0));
        e.0 += 1;
        e.1 = e.1.min(r.offset);
        e.2 = e.2.max(r.offset);
        if let Some(t) = r.event_time_ms {
            s.event_time_ms = Some(
                s.event_time_ms
                    .map_or((t, t), |(a, b)| (a.min(t), b.max(t))),
            );
        }
        s.detected_at = Some(match s.detected_at.take() {
            None => (r.detected_at.clone(), r.detected_at.clone()),
            Some((a, b)) => (a.min(r.detected_at.clone()), b.max(r.detected_at.clone())),
        });
    }
    s
}

impl Stats {
    pub fn print(&self, out: &mut impl Write) -> std::io::Result<()> {
        writeln!(out, "anomalies: {}", self.total)?;
        writeln!(out, "by reason:")?;
        for (reason, n) in &self.by_reason {
            writeln!(out, "  {reason:<28} {n:>10}")?;
        }
        writeln!(out, "by source and partition (count, offsets):")?;
        for ((source, p), (n, lo, hi)) in &self.by_partition {
            writeln!(
                out,
                "  {source} partition {p:<4} {n:>10}  offsets {lo}..={hi}"
            )?;
        }
        if let Some((a, b)) = self.event_time_ms {
            writeln!(
                out,
                "event times (late events): {} .. {}",
                crate::time::format_rfc3339_ms(a),
                crate::time::format_rfc3339_ms(b)
            )?;
        }
        if let Some((a, b)) = &self.detected_at {
            writeln!(out, "detected: {a} .. {b}")?;
        }
        Ok(())
    }
}

/// A record to produce again: partition and (repaired) payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repaired {
    pub partition: u32,
    pub payload: Vec<u8>,
    /// Where it came from, for the report.
    pub offset: u64,
}

/// What `repair` did with the selected records.
#[derive(Debug, Default)]
pub struct RepairReport {
    pub repaired: Vec<Repaired>,
    /// Dropped by the fix command (empty output line).
    pub dropped: u64,
    /// Printed back by the fix command exactly as they came in (with a
    /// fix only).
    pub unchanged: u64,
    /// Payloads that cannot travel as one line (a raw newline inside).
    pub multiline: Vec<(u32, u64)>,
}

/// Takes the payloads of `records`, through `fix` when given (`sh -c FIX`,
/// one payload a line on stdin, one repaired payload a line expected on
/// stdout, an empty line drops the record).
pub fn repair(records: &[&AnomalyRecord], fix: Option<&str>) -> anyhow::Result<RepairReport> {
    let mut report = RepairReport::default();
    let mut inputs = Vec::with_capacity(records.len());
    for r in records {
        let bytes = r.payload_bytes().with_context(|| {
            format!(
                "partition {} offset {}: the payload's base64 is damaged",
                r.partition, r.offset
            )
        })?;
        if bytes.contains(&b'\n') {
            report.multiline.push((r.partition, r.offset));
            continue;
        }
        inputs.push((r.partition, r.offset, bytes));
    }
    let Some(fix) = fix else {
        report.repaired = inputs
            .into_iter()
            .map(|(partition, offset, payload)| Repaired {
                partition,
                payload,
                offset,
            })
            .collect();
        return Ok(report);
    };

    let stdout = run_fix(fix, &inputs)?;
    let mut lines: Vec<&[u8]> = stdout.split(|b| *b == b'\n').collect();
    if lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    if lines.len() != inputs.len() {
        bail!(
            "the fix command `{fix}` printed {} lines for {} records; it must print exactly one line per input line (an empty line drops a record). Nothing was produced",
            lines.len(),
            inputs.len()
        );
    }
    for ((partition, offset, input), line) in inputs.into_iter().zip(lines) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            report.dropped += 1;
        } else {
            report.unchanged += u64::from(line == input.as_slice());
            report.repaired.push(Repaired {
                partition,
                payload: line.to_vec(),
                offset,
            });
        }
    }
    Ok(report)
}

/// Runs `fix` (`sh -c`) with the payloads of `inputs` on stdin, one a line;
/// returns its stdout. Fails when it cannot start, fails, or does not read
/// all its input.
fn run_fix(fix: &str, inputs: &[(u32, u64, Vec<u8>)]) -> anyhow::Result<Vec<u8>> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(fix)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot start the fix command `{fix}`"))?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let feed: Vec<u8> = inputs
        .iter()
        .flat_map(|(_, _, p)| p.iter().copied().chain(std::iter::once(b'\n')))
        .collect();
    // Write on another thread: the command may fill its stdout before it has
    // read all of its stdin.
    let writer = std::thread::spawn(move || stdin.write_all(&feed));
    let output = child
        .wait_with_output()
        .with_context(|| format!("running the fix command `{fix}`"))?;
    let fed = writer.join().expect("the writer thread does not panic");
    if !output.status.success() {
        bail!(
            "the fix command `{fix}` failed ({}); nothing was produced",
            output.status
        );
    }
    fed.with_context(|| format!("the fix command `{fix}` did not read all its input"))?;
    Ok(output.stdout)
}

/// Writes repaired records as the file layout `produce --from-files` reads:
/// file `p` holds the records for partition `p`. Returns the files.
pub fn write_partition_files(
    dir: &Path,
    repaired: &[Repaired],
    partitions: u32,
) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let mut files = Vec::new();
    let mut writers = Vec::new();
    for p in 0..partitions {
        let path = dir.join(format!("part-{p}.jsonl"));
        writers.push(std::io::BufWriter::new(
            File::create(&path).with_context(|| format!("creating {}", path.display()))?,
        ));
        files.push(path);
    }
    for r in repaired {
        let Some(w) = writers.get_mut(r.partition as usize) else {
            bail!(
                "the record from partition {} offset {} has no partition to go to: the topic has {partitions}",
                r.partition,
                r.offset
            );
        };
        w.write_all(&r.payload)?;
        w.write_all(b"\n")?;
    }
    for mut w in writers {
        w.flush()?;
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(reason: &str, partition: u32, offset: u64, payload: &str) -> AnomalyRecord {
        AnomalyRecord {
            reason: reason.into(),
            source: "orders".into(),
            partition,
            offset,
            payload: payload.into(),
            payload_encoding: "utf8".into(),
            event_time_ms: None,
            detected_at: format!("2026-11-25T00:00:0{offset}Z"),
        }
    }

    #[test]
    fn a_reason_that_names_nothing_is_refused_listing_the_reasons() {
        for r in crate::event::Reason::ALL {
            check_reason(r.as_str()).unwrap();
        }
        check_reason("missing_field").unwrap();
        let e = check_reason("bad_amout").unwrap_err().to_string();
        assert!(e.contains("bad_amout") && e.contains("bad_amount"), "{e}");
    }

    #[test]
    fn a_reason_family_matches_its_fields() {
        let f = Filter {
            reason: Some("missing_field".into()),
            partition: None,
        };
        assert!(f.matches(&rec("missing_field:amount", 0, 1, "{}")));
        assert!(!f.matches(&rec("bad_amount", 0, 1, "{}")));
        let exact = Filter {
            reason: Some("missing_field:user_id".into()),
            partition: Some(1),
        };
        assert!(!exact.matches(&rec("missing_field:amount", 1, 1, "{}")));
        assert!(!exact.matches(&rec("missing_field:user_id", 0, 1, "{}")));
        assert!(exact.matches(&rec("missing_field:user_id", 1, 1, "{}")));
    }

    #[test]
    fn stats_count_by_reason_and_partition() {
        let rs = [
            rec("bad_amount", 0, 3, "a"),
            rec("bad_amount", 0, 7, "b"),
            rec("late_event", 1, 2, "c"),
        ];
        let s = stats(&rs);
        assert_eq!(s.total, 3);
        assert_eq!(s.by_reason["bad_amount"], 2);
        assert_eq!(s.by_partition[&("orders".to_string(), 0)], (2, 3, 7));
        assert_eq!(
            s.detected_at,
            Some(("2026-11-25T00:00:02Z".into(), "2026-11-25T00:00:07Z".into()))
        );
    }

    #[test]
    fn the_fix_command_repairs_drops_and_keeps_partitions() {
        let a = rec("bad_amount", 2, 5, r#"{"amount":"1,50"}"#);
        let b = rec("bad_amount", 0, 9, r#"{"amount":"DROP"}"#);
        let c = rec("bad_amount", 1, 3, r#"{"amount":"12.345"}"#);
        let r = repair(
            &[&a, &b, &c],
            Some("sed -e 's/1,50/1.50/' -e 's/.*DROP.*//'"),
        )
        .unwrap();
        assert_eq!(r.dropped, 1);
        assert_eq!(r.unchanged, 1, "the fix does not match 12.345");
        assert_eq!(
            r.repaired,
            vec![
                Repaired {
                    partition: 2,
                    payload: br#"{"amount":"1.50"}"#.to_vec(),
                    offset: 5
                },
                Repaired {
                    partition: 1,
                    payload: br#"{"amount":"12.345"}"#.to_vec(),
                    offset: 3
                }
            ]
        );
    }

    #[test]
    fn a_fix_command_that_loses_lines_is_refused() {
        let a = rec("bad_amount", 0, 1, "x");
        let b = rec("bad_amount", 0, 2, "y");
        let err = repair(&[&a, &b], Some("head -n 1")).unwrap_err();
        assert!(
            err.to_string().contains("exactly one line per input line"),
            "{err}"
        );
        let err = repair(&[&a], Some("exit 3")).unwrap_err();
        assert!(err.to_string().contains("failed"), "{err}");
    }

    #[test]
    fn base64_payloads_come_back_as_bytes_and_multiline_ones_are_set_aside() {
        let mut bin = rec("malformed_json", 0, 1, "/w==");
        bin.payload_encoding = "base64".into();
        let nl = rec("malformed_json", 0, 2, "{\n}");
        let r = repair(&[&bin, &nl], None).unwrap();
        assert_eq!(r.repaired[0].payload, vec![0xff]);
        assert_eq!(r.multiline, vec![(0, 2)]);
    }
}
