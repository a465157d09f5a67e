//! The file source (SPEC §7): each file is one partition, each line one
//! payload, the offset is the 0-based line number.
//!
//! A bounded run ends at the whole lines each file holds when it starts
//! (counted then, or given back by a checkpoint when a bounded run
//! resumes), so lines appended while it runs are left for the next run. A
//! line is whole once its newline is written: bytes after a file's last
//! newline (a line still being written) are left for a later run, with a
//! WARN naming the file, as a live run holds them back. Read as a record,
//! a half-written line would be a `malformed_json` anomaly, and its rest,
//! once written, would be lost to the next run.
//!
//! Given a directory, its regular files (hidden ones skipped) are the
//! partitions in natural order (`part-2` before `part-10`); given a list, the
//! list's order. Lines are passed on raw, malformed or not. Unbounded, the
//! source follows the files as they grow (like `tail -f`), holding back a
//! partial last line until its newline arrives. (A bounded end stored by an
//! older version, which counted a last line without its newline, is still
//! read to: that line is read as it stands.)
//!
//! Partitions are read round-robin in small chunks so that their event times
//! advance together, as they would from a broker. A bounded run reads on a
//! thread of its own, a batch ahead of the job (`ahead`).

mod ahead;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{End, PartitionState, RecordBatch, Source, SourceError};
use ahead::ReadAhead;

/// Lines read from one partition before moving to the next.
const CHUNK: usize = 256;

struct Part {
    path: PathBuf,
    reader: Option<BufReader<File>>,
    next_offset: u64,
    /// Bounded run: the line count it stops at.
    end: Option<u64>,
    /// Partial last line waiting for its newline (unbounded mode).
    carry: Vec<u8>,
    at_eof: bool,
    paused: bool,
}

impl Part {
    fn new(path: &Path) -> Part {
        Part {
            path: path.to_path_buf(),
            reader: None,
            next_offset: 0,
            end: None,
            carry: Vec::new(),
            at_eof: false,
            paused: false,
        }
    }
}

pub struct FileSource {
    files: Vec<PathBuf>,
    /// The display name of each file.
    names: Vec<String>,
    /// The reading state of each file, here (unbounded) or, once a bounded
    /// run polls, on the reader thread (then empty).
    parts: Vec<Part>,
    ahead: Option<ReadAhead>,
    /// A bounded run's end per file, in lines.
    ends: Vec<Option<u64>>,
    bounded: bool,
    cursor: usize,
    id: String,
}

/// Expands a directory into its files in natural order; keeps a list as is.
pub fn resolve_paths(inputs: &[PathBuf]) -> Result<Vec<PathBuf>, SourceError> {
    let mut files = Vec::new();
    for input in inputs {
        let meta = std::fs::metadata(input).map_err(|e| {
            SourceError::Misconfigured(format!("file source: cannot read {}: {e}", input.display()))
        })?;
        if meta.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(input)
                .map_err(|e| {
                    SourceError::Failed(format!(
                        "file source: cannot list {}: {e}",
                        input.display()
                    ))
                })?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .filter(|p| {
                    !p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with('.'))
                })
                .collect();
            found.sort_by(|a, b| natural_cmp(&a.to_string_lossy(), &b.to_string_lossy()));
            files.extend(found);
        } else {
            files.push(input.clone());
        }
    }
    if files.is_empty() {
        return Err(SourceError::Misconfigured(format!(
            "file source: no input files in {}; give a directory with one file per partition, or a list of files",
            inputs.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(files)
}

/// Compares strings with digit runs taken as numbers: `p2` < `p10`.
pub fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return std::cmp::Ordering::Equal,
            (None, Some(_)) => return std::cmp::Ordering::Less,
            (Some(_), None) => return std::cmp::Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let da = a.iter().take_while(|c| c.is_ascii_digit()).count();
                let db = b.iter().take_while(|c| c.is_ascii_digit()).count();
                let (na, nb) = (trim_zeros(&a[..da]), trim_zeros(&b[..db]));
                let ord = na
                    .len()
                    .cmp(&nb.len())
                    .then_with(|| na.cmp(nb))
                    .then(da.cmp(&db));
                if ord != std::cmp::Ordering::Equal {
                    return ord;
                }
                a = &a[da..];
                b = &b[db..];
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                a = &a[1..];
                b = &b[1..];
            }
        }
    }
}

fn trim_zeros(digits: &[u8]) -> &[u8] {
    let zeros = digits.iter().take_while(|c| **c == b'0').count();
    &digits[zeros.min(digits.len().saturating_sub(1))..]
}

impl FileSource {
    pub fn new(inputs: &[PathBuf]) -> Result<Self, SourceError> {
        let files = resolve_paths(inputs)?;
        // Each file by its absolute path: the input's identity, and the
        // `source` of its anomaly records, whatever working directory or
        // spelling (`dir`, `./dir`, `/abs/dir`) a run names it by, so a
        // resume names it as the run before did.
        let names: Vec<String> = files
            .iter()
            .map(|p| {
                std::fs::canonicalize(p)
                    .unwrap_or_else(|_| p.clone())
                    .display()
                    .to_string()
            })
            .collect();
        let id = format!("files:{}", names.join(","));
        Ok(FileSource {
            names,
            parts: files.iter().map(|p| Part::new(p)).collect(),
            ends: vec![None; files.len()],
            files,
            ahead: None,
            bounded: false,
            cursor: 0,
            id,
        })
    }

    pub fn paths(&self) -> Vec<&Path> {
        self.files.iter().map(PathBuf::as_path).collect()
    }
}

/// The whole lines a file holds now, and how many bytes follow its last
/// newline (a line not whole yet).
fn count_lines(path: &Path) -> Result<(u64, u64), SourceError> {
    let mut file = File::open(path).map_err(|e| {
        SourceError::Failed(format!("file source: cannot open {}: {e}", path.display()))
    })?;
    let mut buf = vec![0u8; 1 << 20];
    let (mut lines, mut partial) = (0u64, 0u64);
    loop {
        let n = std::io::Read::read(&mut file, &mut buf).map_err(|e| {
            SourceError::Failed(format!("file source: reading {}: {e}", path.display()))
        })?;
        if n == 0 {
            break;
        }
        let read = &buf[..n];
        lines += memchr::memchr_iter(b'\n', read).count() as u64;
        partial = match memchr::memrchr(b'\n', read) {
            Some(at) => (n - at - 1) as u64,
            None => partial + n as u64,
        };
    }
    Ok((lines, partial))
}

#[cold]
fn warn_partial_line(path: &Path, lines: u64, partial: u64) {
    tracing::warn!(
        file = %path.display(),
        line = lines,
        bytes = partial,
        "the file ends with a line not whole yet (no newline after its last {partial} bytes): \
         this bounded run stops before it, and a later run reads it once its newline is written. \
         If the file is complete, end it with a newline to have its last line read"
    );
}

fn open_at(path: &Path, line: u64) -> Result<BufReader<File>, SourceError> {
    let file = File::open(path).map_err(|e| {
        SourceError::Failed(format!("file source: cannot open {}: {e}", path.display()))
    })?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    for skipped in 0..line {
        let n = reader.skip_until(b'\n').map_err(|e| {
            SourceError::Failed(format!("file source: reading {}: {e}", path.display()))
        })?;
        if n == 0 {
            return Err(SourceError::DataLost(format!(
                "file source: {} has only {skipped} lines but the checkpoint resumes at line {line}; \
                 the file was changed after the checkpoint. Restore it, or start from a fresh state directory",
                path.display()
            )));
        }
    }
    Ok(reader)
}

impl Source for FileSource {
    fn id(&self) -> String {
        self.id.clone()
    }

    fn source_name(&self, partition: u32) -> &str {
        self.names
            .get(partition as usize)
            .map_or("", String::as_str)
    }

    fn partition_count(&self) -> usize {
        self.files.len()
    }

    fn open(
        &mut self,
        resume: &BTreeMap<u32, u64>,
        end: End<'_>,
    ) -> Result<BTreeMap<u32, u64>, SourceError> {
        self.bounded = !matches!(end, End::Never);
        // A reader of an earlier open stops; the files are opened afresh.
        self.ahead = None;
        self.parts = self.files.iter().map(|p| Part::new(p)).collect();
        self.cursor = 0;
        // Counting reads every file whole: the files are counted in
        // parallel, before any is opened.
        let counts: Vec<Option<u64>> = match end {
            End::Now => {
                use rayon::prelude::*;
                let counted: Vec<(u64, u64)> = self
                    .files
                    .par_iter()
                    .map(|path| count_lines(path))
                    .collect::<Result<_, _>>()?;
                for (path, (lines, partial)) in self.files.iter().zip(&counted) {
                    if *partial > 0 {
                        warn_partial_line(path, *lines, *partial);
                    }
                }
                counted.into_iter().map(|(lines, _)| Some(lines)).collect()
            }
            _ => vec![None; self.files.len()],
        };
        let mut starts = BTreeMap::new();
        for (i, part) in self.parts.iter_mut().enumerate() {
            let at = resume.get(&(i as u32)).copied().unwrap_or(0);
            part.reader = Some(open_at(&part.path, at)?);
            part.next_offset = at;
            part.end = match end {
                End::Never => None,
                End::Now => counts[i],
                End::At(ends) => Some(ends.get(&(i as u32)).copied().unwrap_or(at)),
            };
            part.carry.clear();
            part.at_eof = part.end.is_some_and(|e| at >= e);
            starts.insert(i as u32, at);
        }
        self.ends = self.parts.iter().map(|p| p.end).collect();
        Ok(starts)
    }

    fn end_offsets(&self) -> Option<BTreeMap<u32, u64>> {
        self.ends
            .iter()
            .enumerate()
            .map(|(i, e)| e.map(|e| (i as u32, e)))
            .collect()
    }

    fn poll(
        &mut self,
        batch: &mut RecordBatch,
        max: usize,
        timeout: Duration,
    ) -> Result<(), SourceError> {
        if self.bounded {
            if self.ahead.is_none() {
                let parts = std::mem::take(&mut self.parts);
                self.ahead = Some(ReadAhead::start(parts, max)?);
            }
            if let Some(ahead) = &mut self.ahead {
                return ahead.poll(batch);
            }
        }
        read_round(&mut self.parts, &mut self.cursor, batch, max, false)?;
        if batch.is_empty() {
            // Following growing files: nothing new yet.
            std::thread::sleep(timeout.min(Duration::from_millis(50)));
        }
        Ok(())
    }

    fn set_paused(&mut self, partition: u32, paused: bool) {
        if let Some(ahead) = &mut self.ahead {
            ahead.set_paused(partition as usize, paused);
        } else if let Some(p) = self.parts.get_mut(partition as usize) {
            p.paused = paused;
        }
    }

    fn state(&self, partition: u32) -> PartitionState {
        if let Some(ahead) = &self.ahead {
            return match ahead.finished(partition as usize) {
                true => PartitionState::Finished,
                false => PartitionState::Backlog,
            };
        }
        match self.parts.get(partition as usize) {
            Some(p) if p.at_eof && self.bounded => PartitionState::Finished,
            Some(p) if p.at_eof => PartitionState::CaughtUp,
            Some(_) => PartitionState::Backlog,
            None => PartitionState::Finished,
        }
    }
}

/// Reads up to `max` records into `batch`, each partition in turn a chunk
/// at a time from `cursor`, until the batch is full or no partition gives
/// more.
fn read_round(
    parts: &mut [Part],
    cursor: &mut usize,
    batch: &mut RecordBatch,
    max: usize,
    bounded: bool,
) -> Result<(), SourceError> {
    let n = parts.len();
    let mut idle_rounds = 0;
    while batch.len() < max && idle_rounds < n {
        let i = *cursor;
        *cursor = (*cursor + 1) % n;
        let before = batch.len();
        let room = CHUNK.min(max - batch.len());
        read_chunk(&mut parts[i], i as u32, batch, room, bounded)?;
        if batch.len() == before {
            idle_rounds += 1;
        } else {
            idle_rounds = 0;
        }
    }
    Ok(())
}

fn read_chunk(
    part: &mut Part,
    partition: u32,
    batch: &mut RecordBatch,
    max: usize,
    bounded: bool,
) -> Result<(), SourceError> {
    if (part.at_eof && bounded) || part.paused {
        return Ok(());
    }
    if part.end.is_some_and(|end| part.next_offset >= end) {
        part.at_eof = true;
        return Ok(());
    }
    let Some(reader) = part.reader.as_mut() else {
        return Ok(());
    };
    let failed = |e: std::io::Error| {
        SourceError::Failed(format!("file source: reading {}: {e}", part.path.display()))
    };
    let mut taken = 0;
    while taken < max {
        let available = reader.fill_buf().map_err(failed)?;
        if available.is_empty() {
            if part.carry.is_empty() || !bounded {
                // The end for now; a partial line following a growing file
                // waits in `carry` for its newline.
                part.at_eof = true;
                return Ok(());
            }
            // A bounded input's last line, without a newline.
            let buf = batch.buffer();
            let start = buf.len();
            buf.append(&mut part.carry);
            batch.push_written(partition, part.next_offset, start);
            part.next_offset += 1;
            part.at_eof = true;
            return Ok(());
        }
        // Every whole line in what the reader holds, scanned in place.
        let (mut used, mut ended) = (0, false);
        while taken < max {
            let Some(newline) = memchr::memchr(b'\n', &available[used..]) else {
                part.carry.extend_from_slice(&available[used..]);
                used = available.len();
                break;
            };
            let buf = batch.buffer();
            let start = buf.len();
            buf.append(&mut part.carry);
            buf.extend_from_slice(&available[used..used + newline]);
            batch.push_written(partition, part.next_offset, start);
            used += newline + 1;
            taken += 1;
            part.next_offset += 1;
            part.at_eof = false;
            if part.end.is_some_and(|end| part.next_offset >= end) {
                part.at_eof = true;
                ended = true;
                break;
            }
        }
        reader.consume(used);
        if ended {
            return Ok(());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn collect(src: &mut FileSource) -> Vec<(u32, u64, String)> {
        let mut out = Vec::new();
        let mut batch = RecordBatch::default();
        loop {
            batch.clear();
            src.poll(&mut batch, 1000, Duration::ZERO).unwrap();
            if batch.is_empty() {
                break;
            }
            for (m, p) in batch.iter() {
                out.push((
                    m.partition,
                    m.offset,
                    String::from_utf8_lossy(p).into_owned(),
                ));
            }
        }
        out
    }

    #[test]
    fn lines_become_offsets_and_files_partitions() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("p10.jsonl"), "c0\n").unwrap();
        std::fs::write(dir.path().join("p2.jsonl"), "a0\n\na2\nlast-no-newline").unwrap();
        std::fs::write(dir.path().join(".hidden"), "x\n").unwrap();
        let mut src = FileSource::new(&[dir.path().to_path_buf()]).unwrap();
        assert_eq!(src.partition_count(), 2);
        assert!(src.source_name(0).ends_with("p2.jsonl"));
        src.start(&BTreeMap::new(), true).unwrap();
        let mut got = collect(&mut src);
        got.sort();
        assert_eq!(
            got,
            vec![
                (0, 0, "a0".into()),
                (0, 1, "".into()),
                (0, 2, "a2".into()),
                // "last-no-newline" is not whole yet: left for a later run.
                (1, 0, "c0".into()),
            ]
        );
        assert_eq!(src.state(0), PartitionState::Finished);
    }

    #[test]
    fn resumes_at_a_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p0");
        std::fs::write(&path, "l0\nl1\nl2\n").unwrap();
        let mut src = FileSource::new(&[path]).unwrap();
        src.start(&[(0, 2)].into_iter().collect(), true).unwrap();
        assert_eq!(collect(&mut src), vec![(0, 2, "l2".into())]);
        let mut short = FileSource::new(&[dir.path().join("p0")]).unwrap();
        assert!(short.start(&[(0, 9)].into_iter().collect(), true).is_err());
    }

    #[test]
    fn unbounded_follows_a_growing_file_and_holds_partial_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p0");
        std::fs::write(&path, "l0\npart").unwrap();
        let mut src = FileSource::new(std::slice::from_ref(&path)).unwrap();
        src.start(&BTreeMap::new(), false).unwrap();
        assert_eq!(collect(&mut src), vec![(0, 0, "l0".into())]);
        assert_eq!(src.state(0), PartitionState::CaughtUp);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"ial\nl2\n").unwrap();
        assert_eq!(
            collect(&mut src),
            vec![(0, 1, "partial".into()), (0, 2, "l2".into())]
        );
    }

    /// Lines of every length, some longer than the reader's buffer, some
    /// empty, read with any batch size: exactly the file's lines, in order,
    /// numbered from 0 (`str::split` is the independent reading).
    #[test]
    fn every_line_whatever_its_length_and_the_batch_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p0");
        let mut text = String::new();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for n in 0..600 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = match n % 97 {
                0 => (1 << 20) + (x % 3_000_000) as usize,
                1 => 0,
                _ => (x % 700) as usize,
            };
            text.extend(std::iter::repeat_n(char::from(b'a' + (n % 26) as u8), len));
            text.push('\n');
        }
        text.push_str("last, without a newline: not whole yet");
        std::fs::write(&path, &text).unwrap();
        let mut expected: Vec<&str> = text.split('\n').collect();
        expected.pop();
        for max in [1, 7, 256, 100_000] {
            let mut src = FileSource::new(std::slice::from_ref(&path)).unwrap();
            src.start(&BTreeMap::new(), true).unwrap();
            let mut got = Vec::new();
            let mut batch = RecordBatch::default();
            while src.state(0) != PartitionState::Finished {
                batch.clear();
                src.poll(&mut batch, max, Duration::ZERO).unwrap();
                assert!(batch.len() <= max);
                for (m, p) in batch.iter() {
                    assert_eq!(m.offset, got.len() as u64);
                    got.push(String::from_utf8(p.to_vec()).unwrap());
                }
            }
            assert_eq!(got, expected, "batches of {max}");
        }
    }

    /// Reads a bounded run of `path` from line `from` to its end.
    fn bounded_lines(path: &Path, from: u64) -> Vec<String> {
        let mut src = FileSource::new(&[path.to_path_buf()]).unwrap();
        let starts = src.start(&BTreeMap::from([(0, from)]), true).unwrap();
        assert_eq!(starts[&0], from);
        let mut got = Vec::new();
        let mut batch = RecordBatch::default();
        while src.state(0) != PartitionState::Finished {
            batch.clear();
            src.poll(&mut batch, 3, Duration::ZERO).unwrap();
            for (m, p) in batch.iter() {
                assert_eq!(m.offset, from + got.len() as u64);
                got.push(String::from_utf8(p.to_vec()).unwrap());
            }
        }
        got
    }

    #[test]
    fn a_line_being_written_is_left_for_the_run_after_its_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p0");
        std::fs::write(&path, "a\nb\n{\"event_id\":\"e").unwrap();
        assert_eq!(count_lines(&path).unwrap(), (2, 14));
        assert_eq!(bounded_lines(&path, 0), ["a", "b"]);
        // Still not whole: nothing more.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"-1\"}"))
            .unwrap();
        assert!(bounded_lines(&path, 2).is_empty());
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"\nc"))
            .unwrap();
        assert_eq!(bounded_lines(&path, 2), ["{\"event_id\":\"e-1\"}"]);
        // No newline at all; an empty file.
        std::fs::write(&path, "x".repeat(3 << 20)).unwrap();
        assert_eq!(count_lines(&path).unwrap(), (0, 3 << 20));
        std::fs::write(&path, "").unwrap();
        assert_eq!(count_lines(&path).unwrap(), (0, 0));
    }

    #[test]
    fn natural_order() {
        let mut names = vec!["p10", "p2", "p1", "p02x", "a"];
        names.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(names, vec!["a", "p1", "p2", "p02x", "p10"]);
    }
}
