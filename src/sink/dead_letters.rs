//! The dead-letter file: window rows a sink refused for a reason about the
//! row itself, so that such a row never stops the job (SPEC §1).
//!
//! A refused row is written here, counted in the `sink_dead_letters`
//! metric and logged at ERROR; the sink then acknowledges its batch and the
//! job goes on. What is about the table, the server or the credentials is
//! never a dead letter: that stays an error an operator must fix.
//!
//! # Format
//!
//! JSON Lines, `logs/dead_letters.log` by default (`dead_letter_log` in the
//! ClickHouse settings), one refused row a line: `table`, the row's columns
//! (`gmv_total` as a string with two decimals, times as epoch seconds; a
//! grouped row's `city` and/or `category` after `window_end`),
//! `error` (the sink's or ClickHouse's own words) and `detected_at`.
//!
//! # Exactly once
//!
//! Recovery resends every batch a checkpoint still lists as pending, and a
//! resent batch is refused the same way again. So a row's line is keyed by
//! `(table, window_start, version)` and a grouped row's dimension values,
//! which name one row's content (a window is emitted again only with a
//! higher version), and the file keeps
//! one line per key: at first use the existing keys are read back (a line
//! torn by a crash is cut off: its batch was not acknowledged, so it comes
//! again), and a key already there is not written twice. New lines are
//! flushed to disk (`sync_data`) before the sink acknowledges the batch.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use prometheus_client::metrics::counter::Counter;
use serde::{Deserialize, Serialize};

use crate::dims::Dimension;
use crate::window::WindowRow;

/// Rows written to a dead-letter file by this process (the
/// `streamforge_sink_dead_letters_total` metric; `telemetry` registers it).
static DEAD_LETTERS: LazyLock<Counter> = LazyLock::new(Counter::default);

pub fn counter() -> &'static Counter {
    &DEAD_LETTERS
}

/// One refused row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// `database.table`.
    pub table: String,
    pub row: WindowRow,
    /// Why it was refused.
    pub error: String,
}

/// One line of the file.
#[derive(Serialize)]
struct Line<'a> {
    table: &'a str,
    window_start: i64,
    window_end: i64,
    /// A grouped row's dimension values (absent for a totals row).
    #[serde(skip_serializing_if = "Option::is_none")]
    city: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    category: Option<&'a str>,
    order_cnt: u64,
    gmv_total: String,
    user_cnt: u64,
    version: u64,
    updated_at: i64,
    error: &'a str,
    detected_at: String,
}

/// What identifies a line: a grouped row's values too (a grouped table
/// holds a row per value of a window, all with the window's version).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
struct Key {
    table: String,
    window_start: i64,
    version: u64,
    #[serde(default)]
    city: Option<String>,
    #[serde(default)]
    category: Option<String>,
}

impl DeadLetter {
    fn key(&self) -> Key {
        Key {
            table: self.table.clone(),
            window_start: self.row.window_start,
            version: self.row.version,
            city: self.value(Dimension::City).map(str::to_string),
            category: self.value(Dimension::Category).map(str::to_string),
        }
    }

    /// A grouped row's value of `dim`, if the row has that dimension.
    fn value(&self, dim: Dimension) -> Option<&str> {
        let key = self.row.group.as_ref()?;
        let at = key.dims.iter().position(|d| *d == dim)?;
        key.values.get(at).map(String::as_str)
    }

    fn line(&self, detected_at: &str) -> String {
        let r = &self.row;
        let line = Line {
            table: &self.table,
            window_start: r.window_start,
            window_end: r.window_end,
            city: self.value(Dimension::City),
            category: self.value(Dimension::Category),
            order_cnt: r.order_cnt,
            gmv_total: crate::event::format_cents(r.gmv_cents),
            user_cnt: r.user_cnt,
            version: r.version,
            updated_at: r.updated_at,
            error: &self.error,
            detected_at: detected_at.to_string(),
        };
        let mut text = serde_json::to_string(&line).expect("a dead letter serializes");
        text.push('\n');
        text
    }
}

/// The dead-letter file, opened at its first use.
#[derive(Debug)]
pub struct DeadLetterLog {
    path: PathBuf,
    file: Option<File>,
    /// Keys of the lines in the file.
    seen: HashSet<Key>,
}

impl DeadLetterLog {
    pub fn new(path: PathBuf) -> Self {
        DeadLetterLog {
            path,
            file: None,
            seen: HashSet::new(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends the letters whose key is not in the file yet, flushes them to
    /// disk, counts and logs them; returns how many were new.
    pub fn record(&mut self, letters: &[DeadLetter]) -> std::io::Result<usize> {
        if letters.is_empty() {
            return Ok(0);
        }
        self.open()?;
        let detected_at = crate::time::format_rfc3339_ms(crate::time::now_ms());
        let mut text = String::new();
        let mut new = Vec::new();
        for letter in letters {
            let key = letter.key();
            if self.seen.contains(&key) || new.contains(&key) {
                tracing::debug!(table = %letter.table, window_start = letter.row.window_start,
                    version = letter.row.version, "row refused again; already in the dead-letter file");
                continue;
            }
            text.push_str(&letter.line(&detected_at));
            new.push(key);
        }
        if new.is_empty() {
            return Ok(0);
        }
        let file = self.file.as_mut().expect("opened above");
        file.write_all(text.as_bytes())?;
        file.sync_data()?;
        for letter in letters.iter().filter(|l| new.contains(&l.key())) {
            tracing::error!(
                table = %letter.table,
                window_start = letter.row.window_start,
                version = letter.row.version,
                error = %letter.error,
                file = %self.path.display(),
                "the sink refused a row for a reason about the row; it is in the dead-letter file, \
                 the job goes on"
            );
        }
        let count = new.len();
        self.seen.extend(new);
        counter().inc_by(count as u64);
        Ok(count)
    }

    /// Opens (or creates) the file and reads the keys it holds, cutting off
    /// a line a crash left unfinished.
    fn open(&mut self) -> std::io::Result<()> {
        if self.file.is_some() {
            return Ok(());
        }
        let parent = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent)?;
        let existed = self.path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&self.path)?;
        let mut text = Vec::new();
        file.read_to_end(&mut text)?;
        let whole = text.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        if whole < text.len() {
            tracing::warn!(file = %self.path.display(), bytes = text.len() - whole,
                "cutting off an unfinished last line of the dead-letter file (a crash while writing it)");
            file.set_len(whole as u64)?;
            file.sync_data()?;
        }
        for (n, line) in text[..whole].split(|b| *b == b'\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            match serde_json::from_slice::<Key>(line) {
                Ok(key) => {
                    self.seen.insert(key);
                }
                Err(e) => tracing::warn!(file = %self.path.display(), line = n + 1, error = %e,
                    "a line of the dead-letter file is not a dead letter; it is kept and ignored"),
            }
        }
        file.seek(SeekFrom::End(0))?;
        if !existed {
            // The new file's name must be durable too.
            File::open(parent)?.sync_all()?;
        }
        self.file = Some(file);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(start: i64, version: u64, error: &str) -> DeadLetter {
        DeadLetter {
            table: "db.t".into(),
            row: WindowRow {
                users: None,
                window_start: start,
                window_end: start + 60,
                order_cnt: 2,
                gmv_cents: 1_200_000_000_000_000_000,
                user_cnt: 2,
                version,
                updated_at: 1_704_067_300,
                group: None,
            },
            error: error.into(),
        }
    }

    fn lines(path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn each_row_is_written_once_with_its_error_and_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/dead.log");
        let before = counter().get();
        let mut log = DeadLetterLog::new(path.clone());
        assert_eq!(log.record(&[]).unwrap(), 0);
        assert!(!path.exists(), "no file until there is a dead letter");
        let batch = [
            letter(-30, 1, "window_start = -30 is outside"),
            letter(30, 2, "Code: 69"),
        ];
        assert_eq!(log.record(&batch).unwrap(), 2);
        // The same batch again (a resend), in the same process...
        assert_eq!(log.record(&batch).unwrap(), 0);
        // ...and after a restart, with one new row.
        let mut log = DeadLetterLog::new(path.clone());
        assert_eq!(
            log.record(&[batch[1].clone(), letter(30, 3, "Code: 69")])
                .unwrap(),
            1
        );
        assert!(counter().get() >= before + 3);

        let got = lines(&path);
        assert_eq!(got.len(), 3);
        assert_eq!(got[0]["table"], "db.t");
        assert_eq!(got[0]["window_start"], -30);
        assert_eq!(got[0]["gmv_total"], "12000000000000000.00");
        assert_eq!(got[0]["error"], "window_start = -30 is outside");
        assert_eq!(got[1]["version"], 2);
        assert_eq!(got[2]["version"], 3);
        let at = got[2]["detected_at"].as_str().unwrap();
        assert!(
            at.ends_with('Z') && at.len() == "2025-11-25T10:00:00.000Z".len(),
            "{at}"
        );
    }

    #[test]
    fn grouped_rows_of_one_window_are_told_apart_by_their_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dead.log");
        let grouped = |values: [&str; 2]| {
            let mut l = letter(-30, 4, "window_start = -30 is outside");
            l.table = "db.t_by_city_category".into();
            l.row.group = Some(crate::dims::GroupKey {
                dims: vec![Dimension::City, Dimension::Category],
                values: values.iter().map(|v| v.to_string()).collect(),
            });
            l
        };
        let batch = [
            letter(-30, 4, "e"),
            grouped(["Paris", "books"]),
            grouped(["Paris", "toys"]),
            grouped(["Lyon", "books"]),
        ];
        assert_eq!(DeadLetterLog::new(path.clone()).record(&batch).unwrap(), 4);
        // Resent after a restart: every key is known.
        assert_eq!(DeadLetterLog::new(path.clone()).record(&batch).unwrap(), 0);
        let got: Vec<(String, String)> = lines(&path)
            .iter()
            .skip(1)
            .map(|v| (v["city"].to_string(), v["category"].to_string()))
            .collect();
        let want: Vec<(String, String)> = batch[1..]
            .iter()
            .map(|l| {
                let v = &l.row.group.as_ref().unwrap().values;
                (format!("{:?}", v[0]), format!("{:?}", v[1]))
            })
            .collect();
        assert_eq!(got, want);
        assert!(
            lines(&path)[0].get("city").is_none(),
            "a totals row has no values"
        );
    }

    #[test]
    fn a_line_torn_by_a_crash_is_cut_off_and_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dead.log");
        let whole = letter(0, 1, "e").line("2025-01-01T00:00:00.000Z");
        let torn = letter(30, 1, "e").line("2025-01-01T00:00:00.000Z");
        std::fs::write(&path, format!("{whole}not json\n{}", &torn[..20])).unwrap();
        let mut log = DeadLetterLog::new(path.clone());
        assert_eq!(
            log.record(&[letter(0, 1, "e"), letter(30, 1, "e")])
                .unwrap(),
            1
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 3, "{text}");
        assert!(text.ends_with('\n'));
        assert_eq!(text.lines().nth(1), Some("not json"));
        assert_eq!(lines_with_start(&text, 30), 1);
    }

    fn lines_with_start(text: &str, start: i64) -> usize {
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["window_start"] == start)
            .count()
    }

    #[test]
    fn an_unwritable_file_is_an_error_naming_nothing_secret() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the file should be.
        let path = dir.path().join("taken");
        std::fs::create_dir(&path).unwrap();
        let mut log = DeadLetterLog::new(path);
        assert!(log.record(&[letter(0, 1, "e")]).is_err());
    }
}
