//! The anomaly side output (SPEC §2): JSON Lines, one rejected record a line.
//!
//! The log is part of the exactly-once promise. Every checkpoint records the
//! log's length after a `sync_data`; recovery truncates the file back to that
//! length, and the records after it are written again as their offsets are
//! re-read. So after any crash the log holds each anomaly exactly once.
//!
//! A line carries `reason`, `source`, `partition`, `offset`, the payload
//! (`payload_encoding` is `utf8` when the text is stored as is, `base64` when
//! the bytes were not UTF-8), `event_time_ms` when known (late events), and
//! `detected_at`.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::event::Reason;

/// One line of the log, as written.
#[derive(Debug, Serialize)]
struct Line<'a> {
    reason: &'static str,
    source: &'a str,
    partition: u32,
    offset: u64,
    payload: &'a str,
    payload_encoding: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    event_time_ms: Option<i64>,
    detected_at: &'a str,
}

/// One line of the log, as read back by the `anomalies` commands.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct AnomalyRecord {
    pub reason: String,
    pub source: String,
    pub partition: u32,
    pub offset: u64,
    pub payload: String,
    pub payload_encoding: String,
    /// Late events only: written back only when there (as the log has it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_time_ms: Option<i64>,
    pub detected_at: String,
}

impl AnomalyRecord {
    /// The original payload bytes.
    pub fn payload_bytes(&self) -> Result<Vec<u8>, base64::DecodeError> {
        if self.payload_encoding == "base64" {
            base64::engine::general_purpose::STANDARD.decode(&self.payload)
        } else {
            Ok(self.payload.as_bytes().to_vec())
        }
    }
}

pub struct AnomalyLog {
    path: PathBuf,
    out: BufWriter<File>,
    len: u64,
    line: Vec<u8>,
}

impl AnomalyLog {
    /// Opens the log for a job resuming from a checkpoint that covered `len`
    /// bytes: anything after that was written by the crashed run and will be
    /// written again. Before cutting it back, checks that the log is the one
    /// the checkpoint's job wrote (see [`owner_mismatch`]; `next_offset`
    /// tells the job's records): a log another job writes (two jobs started
    /// from one directory share the default `logs/anomalies.log`) is left as
    /// it is, and the error names the logs moved aside next to it.
    pub fn resume(
        path: &Path,
        len: u64,
        next_offset: impl Fn(&AnomalyRecord) -> Option<u64>,
    ) -> io::Result<Self> {
        // A log a checkpoint covers must be there: a missing one is not
        // created, nor its directory (the refusal below leaves nothing
        // behind).
        if len == 0 {
            ensure_parent(path)?;
        }
        let file = OpenOptions::new()
            .create(len == 0)
            .read(true)
            .write(true)
            .truncate(false)
            .open(path)
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => io::Error::new(
                    e.kind(),
                    format!(
                        "the anomaly log {} does not exist, but the checkpoint covers {len} bytes of it. \
                         If the job ran with another --anomaly-log (or `anomaly_log`), pass the same one; \
                         otherwise restore the log to that path{}, or start from a fresh state directory",
                        path.display(),
                        listed(&moved_aside(path)),
                    ),
                ),
                _ => e,
            })?;
        lock(&file, path)?;
        let actual = file.metadata()?.len();
        let refused = if actual < len {
            Some(format!(
                "it holds {actual} bytes but the checkpoint covers {len}: it was truncated or replaced since \
                 (by hand, or by another job writing the same path)"
            ))
        } else {
            owner_mismatch(&file, len, next_offset)?
        };
        if let Some(why) = refused {
            return Err(io::Error::other(format!(
                "the anomaly log {} is not the one this state directory's job wrote: {why}; it was left as \
                 it is. Give each job its own anomaly log (`anomaly_log`, --anomaly-log: the default \
                 logs/anomalies.log is relative to the working directory). If this job ran with another \
                 --anomaly-log, pass the same one; otherwise restore this job's log to that \
                 path (a fresh job moves an earlier log aside as <path>.<ms>{}), or start from a fresh \
                 state directory",
                path.display(),
                listed(&moved_aside(path)),
            )));
        }
        file.set_len(len)?;
        file.sync_data()?;
        Self::wrap(path, file, len)
    }

    /// Opens the log for a job starting without a checkpoint. A non-empty log
    /// left by an earlier run is moved aside (its new name is returned), so
    /// the log describes this run only.
    pub fn fresh(path: &Path) -> io::Result<(Self, Option<PathBuf>)> {
        ensure_parent(path)?;
        let mut moved = None;
        if let Ok(earlier) = File::open(path) {
            // Not while another job writes it: moved aside, its writer
            // would go on writing the moved file.
            lock(&earlier, path)?;
            if earlier.metadata()?.len() > 0 {
                let aside = aside_path(path, crate::time::now_ms());
                std::fs::rename(path, &aside)?;
                moved = Some(aside);
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(path)?;
        lock(&file, path)?;
        Ok((Self::wrap(path, file, 0)?, moved))
    }

    fn wrap(path: &Path, mut file: File, len: u64) -> io::Result<Self> {
        // The lock taken on `file` lasts as long as the log is open.
        use std::io::Seek;
        file.seek(io::SeekFrom::Start(len))?;
        Ok(AnomalyLog {
            path: path.to_path_buf(),
            out: BufWriter::with_capacity(256 * 1024, file),
            len,
            line: Vec::with_capacity(1024),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one anomaly (buffered; durable at the next [`AnomalyLog::sync`]).
    /// The arguments are the record's fields, in the order of the line.
    #[allow(clippy::too_many_arguments)]
    pub fn append(
        &mut self,
        reason: Reason,
        source: &str,
        partition: u32,
        offset: u64,
        payload: &[u8],
        event_time_ms: Option<i64>,
        detected_at: &str,
    ) -> io::Result<()> {
        let encoded;
        let (payload, payload_encoding) = match std::str::from_utf8(payload) {
            Ok(text) => (text, "utf8"),
            Err(_) => {
                encoded = base64::engine::general_purpose::STANDARD.encode(payload);
                (encoded.as_str(), "base64")
            }
        };
        self.line.clear();
        serde_json::to_writer(
            &mut self.line,
            &Line {
                reason: reason.as_str(),
                source,
                partition,
                offset,
                payload,
                payload_encoding,
                event_time_ms,
                detected_at,
            },
        )
        .map_err(io::Error::other)?;
        self.line.push(b'\n');
        self.out.write_all(&self.line)?;
        self.len += self.line.len() as u64;
        Ok(())
    }

    /// Flushes and syncs; returns the durable length to record in a checkpoint.
    pub fn sync(&mut self) -> io::Result<u64> {
        self.out.flush()?;
        self.out.get_ref().sync_data()?;
        Ok(self.len)
    }
}

/// An I/O failure on the log at `path`, worded for the operator: what
/// failed, why, and what to do. The job stops on it; the log past the last
/// checkpoint's length is truncated on restart, so each anomaly is still
/// logged once.
pub fn io_failure(action: &str, path: &Path, error: &io::Error) -> String {
    let advice = if crate::checkpoint::is_no_space(error) {
        "The filesystem holding it is full: free space there (or move the file to a bigger filesystem and \
         point --anomaly-log at its new place), then restart"
    } else {
        "Check the disk and the file's permissions, then restart"
    };
    format!(
        "cannot {action} the anomaly log {}: {error}. {advice}; the job resumes from its last checkpoint \
         and logs each anomaly once",
        path.display()
    )
}

/// Takes the log's lock: `flock`, exclusive, held as long as `file` is
/// open (the job's whole run) and released by the kernel when the process
/// ends, however it ends. A log another running job writes is refused,
/// never moved aside or cut back.
fn lock(file: &File, path: &Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor `file` owns for the whole call.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.kind() != io::ErrorKind::WouldBlock {
        return Err(e);
    }
    Err(io::Error::new(
        e.kind(),
        format!(
            "the anomaly log {} is being written by another running job; give each job its own \
             anomaly log (`anomaly_log`, --anomaly-log: the default logs/anomalies.log is relative to \
             the working directory)",
            path.display()
        ),
    ))
}

fn ensure_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => std::fs::create_dir_all(p),
        _ => Ok(()),
    }
}

/// Why the log open as `file` is not the one the checkpoint's job wrote,
/// if it is not; checked before [`AnomalyLog::resume`] cuts it back to
/// `len` (which it holds at least). The checkpointed length must end a
/// line, the record ending there must have been counted before the
/// checkpoint, and every whole record after it after. `next_offset` tells
/// a job's records: for a record of one of its own (source, partition),
/// the next offset the checkpoint records for that partition (0 for one
/// it had not read yet); `None` for a record of any other input. A last
/// line without its newline (a crash in the middle of a write) is not
/// looked at.
fn owner_mismatch(
    mut file: &File,
    len: u64,
    next_offset: impl Fn(&AnomalyRecord) -> Option<u64>,
) -> io::Result<Option<String>> {
    use std::io::{BufRead, Read, Seek};
    let parse = |line: &[u8]| serde_json::from_slice::<AnomalyRecord>(line).ok();
    if len > 0 {
        // The line ending at `len`, if it is not longer than this.
        let window = len.min(4 << 20);
        let mut before = vec![0u8; window as usize];
        file.seek(io::SeekFrom::Start(len - window))?;
        file.read_exact(&mut before)?;
        if before.last() != Some(&b'\n') {
            return Ok(Some(format!(
                "the {len} bytes the checkpoint covers do not end a line"
            )));
        }
        let body = &before[..before.len() - 1];
        let starts = body.iter().rposition(|&b| b == b'\n').map(|i| i + 1);
        if starts.is_some() || window == len {
            let last = &body[starts.unwrap_or(0)..];
            let ours = parse(last).and_then(|r| next_offset(&r).map(|next| r.offset < next));
            if ours != Some(true) {
                return Ok(Some(format!(
                        "the record ending at byte {len} is not one this job counted before its checkpoint"
                    )));
            }
        }
    }
    file.seek(io::SeekFrom::Start(len))?;
    let mut tail = io::BufReader::new(file);
    let mut line = Vec::new();
    loop {
        line.clear();
        if tail.read_until(b'\n', &mut line)? == 0 || line.last() != Some(&b'\n') {
            return Ok(None);
        }
        let ours = parse(&line).and_then(|r| next_offset(&r).map(|next| r.offset >= next));
        if ours != Some(true) {
            let what = parse(&line).map_or("a line that is not an anomaly record".into(), |r| {
                format!(
                    "a record of {} partition {} offset {}",
                    r.source, r.partition, r.offset
                )
            });
            return Ok(Some(format!(
                    "past the {len} bytes the checkpoint covers it holds {what}, which this job did not write after its checkpoint"
                )));
        }
    }
}

/// Where a fresh start moves an earlier log at `path` aside: `<path>.<ms>`.
fn aside_path(path: &Path, ms: i64) -> PathBuf {
    PathBuf::from(format!("{}.{ms}", path.display()))
}

/// The logs moved aside next to `path` ([`aside_path`]), oldest first.
pub fn moved_aside(path: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Vec::new();
    };
    let listing = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!("{}.", name.to_string_lossy());
    let mut found: Vec<PathBuf> = std::fs::read_dir(listing)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.strip_prefix(&prefix)
                .is_some_and(|ms| !ms.is_empty() && ms.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(|e| dir.join(e.file_name()))
        .collect();
    found.sort();
    found
}

/// `: here <files>` for an error message, or nothing.
fn listed(files: &[PathBuf]) -> String {
    if files.is_empty() {
        return String::new();
    }
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    format!(": here {}", names.join(", "))
}

/// Reads every record of a log (for the `anomalies` commands and tests).
pub fn read_all(path: &Path) -> io::Result<Vec<AnomalyRecord>> {
    let text = std::fs::read_to_string(path)?;
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str(line).map_err(|e| {
                io::Error::other(format!(
                    "{} line {}: not an anomaly record: {e}",
                    path.display(),
                    i + 1
                ))
            })
        })
        .collect()
}

/// A record met twice with different contents (see [`merge`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeConflict {
    pub source: String,
    pub partition: u32,
    pub offset: u64,
    /// The files the two copies came from (indexes into `logs`).
    pub files: (usize, usize),
}

/// The union of anomaly logs keyed by (source, partition, offset), in that
/// order: group mode's per-partition files of every instance hold the same
/// record when a partition was processed by more than one owner, and each
/// copy says the same but for `detected_at` (the earliest is kept). `logs`
/// are (file index, records) pairs. A key whose copies differ in anything
/// else is a [`MergeConflict`] (the files come from different data or
/// settings): the merge refuses rather than pick one.
pub fn merge(
    logs: Vec<(usize, Vec<AnomalyRecord>)>,
) -> Result<Vec<AnomalyRecord>, Box<MergeConflict>> {
    use std::collections::btree_map::Entry;
    let mut out: std::collections::BTreeMap<(String, u32, u64), (usize, AnomalyRecord)> =
        std::collections::BTreeMap::new();
    for (file, records) in logs {
        for r in records {
            match out.entry((r.source.clone(), r.partition, r.offset)) {
                Entry::Vacant(slot) => {
                    slot.insert((file, r));
                }
                Entry::Occupied(mut slot) => {
                    let (first_file, kept) = slot.get_mut();
                    let same = AnomalyRecord {
                        detected_at: kept.detected_at.clone(),
                        ..r.clone()
                    };
                    if same != *kept {
                        return Err(Box::new(MergeConflict {
                            source: r.source,
                            partition: r.partition,
                            offset: r.offset,
                            files: (*first_file, file),
                        }));
                    }
                    if r.detected_at < kept.detected_at {
                        kept.detected_at = r.detected_at;
                    }
                }
            }
        }
    }
    Ok(out.into_values().map(|(_, r)| r).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_truncates_to_the_checkpointed_length() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/anomalies.log");
        let (mut log, moved) = AnomalyLog::fresh(&path).unwrap();
        assert!(moved.is_none());
        log.append(Reason::MalformedJson, "f", 0, 1, b"{", None, "t")
            .unwrap();
        let len = log.sync().unwrap();
        log.append(Reason::BadAmount, "f", 0, 2, b"x", None, "t")
            .unwrap();
        log.sync().unwrap();
        drop(log);
        let mut log = AnomalyLog::resume(&path, len, |r| (r.source == "f").then_some(2)).unwrap();
        log.append(Reason::NotAnObject, "f", 0, 3, &[0xff, 0x00], None, "t")
            .unwrap();
        log.sync().unwrap();
        let records = read_all(&path).unwrap();
        let offsets: Vec<u64> = records.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, vec![1, 3]);
        assert_eq!(records[1].payload_encoding, "base64");
        assert_eq!(records[1].payload_bytes().unwrap(), vec![0xff, 0x00]);
    }

    #[test]
    fn a_fresh_start_moves_an_old_log_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        std::fs::write(&path, "old\n").unwrap();
        let (_log, moved) = AnomalyLog::fresh(&path).unwrap();
        assert_eq!(std::fs::read_to_string(moved.unwrap()).unwrap(), "old\n");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    }

    #[test]
    fn resume_refuses_a_log_shorter_than_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        std::fs::write(&path, "x\n").unwrap();
        assert!(AnomalyLog::resume(&path, 100, |_| Some(0)).is_err());
        // A missing log a checkpoint covers is refused and not created.
        let missing = dir.path().join("missing.log");
        let err = AnomalyLog::resume(&missing, 100, |_| Some(0))
            .err()
            .unwrap();
        assert!(err.to_string().contains("pass the same one"), "{err}");
        assert!(!missing.exists());
    }

    /// A log another job has open is neither moved aside by a fresh start
    /// nor cut back by a resume; once that job is gone, it is.
    #[test]
    fn a_log_another_running_job_writes_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let (mut running, _) = AnomalyLog::fresh(&path).unwrap();
        running
            .append(Reason::MalformedJson, "f", 0, 1, b"{", None, "t")
            .unwrap();
        let len = running.sync().unwrap();
        let busy = |r: io::Result<(AnomalyLog, Option<PathBuf>)>| {
            let err = r.err().expect("refused while the other job runs");
            assert!(err.to_string().contains("another running job"), "{err}");
        };
        busy(AnomalyLog::fresh(&path));
        busy(AnomalyLog::resume(&path, 0, |_| Some(0)).map(|l| (l, None)));
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            len,
            "left as it was"
        );
        assert!(moved_aside(&path).is_empty(), "nothing moved aside");
        drop(running);
        let (_, moved) = AnomalyLog::fresh(&path).unwrap();
        assert!(moved.is_some(), "moved aside once its job is gone");
    }

    fn rec(partition: u32, offset: u64, reason: &str, at: &str) -> AnomalyRecord {
        AnomalyRecord {
            reason: reason.into(),
            source: "orders".into(),
            partition,
            offset,
            payload: format!("{{\"p\":{partition},\"o\":{offset}}}"),
            payload_encoding: "utf8".into(),
            event_time_ms: None,
            detected_at: at.into(),
        }
    }

    #[test]
    fn merge_keeps_each_record_once_with_its_earliest_detection() {
        let a = vec![
            rec(1, 5, "bad_amount", "2026-01-01T00:00:02.000Z"),
            rec(0, 9, "late_event", "t"),
        ];
        let b = vec![
            rec(1, 5, "bad_amount", "2026-01-01T00:00:01.000Z"),
            rec(1, 7, "bad_amount", "t"),
        ];
        let merged = merge(vec![(0, a), (1, b)]).unwrap();
        let keys: Vec<(u32, u64)> = merged.iter().map(|r| (r.partition, r.offset)).collect();
        assert_eq!(keys, [(0, 9), (1, 5), (1, 7)]);
        assert_eq!(merged[1].detected_at, "2026-01-01T00:00:01.000Z");
    }

    #[test]
    fn merge_refuses_two_different_records_at_one_offset() {
        let a = vec![rec(2, 3, "bad_amount", "t")];
        let b = vec![
            rec(0, 1, "bad_amount", "t"),
            rec(2, 3, "malformed_json", "t"),
        ];
        let err = merge(vec![(0, a), (4, b)]).unwrap_err();
        assert_eq!((err.partition, err.offset, err.files), (2, 3, (0, 4)));
    }
}
