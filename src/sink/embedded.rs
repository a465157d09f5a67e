//! The embedded sink: the ClickHouse table's semantics in a local sled store,
//! for running with no servers at all.
//!
//! One key per window (its start, order-preserving big-endian), holding the
//! row with the highest version seen, so writes are upserts exactly like a
//! `ReplacingMergeTree(version)` read with `FINAL`. Each write is one atomic
//! batch, flushed before it is acknowledged. By default the store lives in
//! `<state-dir>/sink`, so `streamforge results --state-dir S` finds it.

use std::path::{Path, PathBuf};

use super::{Sink, SinkError};
use crate::window::WindowRow;

pub struct EmbeddedSink {
    db: sled::Db,
    path: PathBuf,
}

fn key(window_start: i64) -> [u8; 8] {
    // Flipping the sign bit makes negative starts sort before positive ones.
    ((window_start as u64) ^ (1 << 63)).to_be_bytes()
}

fn encode(row: &WindowRow) -> Result<Vec<u8>, SinkError> {
    bincode::serde::encode_to_vec(row, bincode::config::standard())
        .map_err(|e| SinkError::Fatal(format!("embedded sink: cannot encode a row: {e}")))
}

fn decode(bytes: &[u8], path: &Path) -> Result<WindowRow, SinkError> {
    bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .map(|(row, _)| row)
        .map_err(|e| {
            SinkError::Fatal(format!(
                "embedded sink {}: unreadable row: {e}",
                path.display()
            ))
        })
}

impl EmbeddedSink {
    pub fn open(path: &Path) -> Result<Self, SinkError> {
        // sled releases its file lock from a background thread after the
        // last handle drops, so a store closed a moment ago (by this process
        // or one that just exited) may still be locked briefly: retry for up
        // to two seconds before reporting it as in use.
        let mut attempts = 0;
        let opened = loop {
            match sled::Config::new()
                .path(path)
                .mode(sled::Mode::LowSpace)
                .open()
            {
                Err(sled::Error::Io(e))
                    if attempts < 40
                        && (e.kind() == std::io::ErrorKind::WouldBlock
                            || e.to_string().contains("could not acquire lock")) =>
                {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                other => break other,
            }
        };
        let db = opened.map_err(|e| {
            SinkError::Fatal(format!(
                "embedded sink: cannot open {}: {e}. Is a streamforge job running on this state directory? \
                 Stop it first, or read the results when it is done",
                path.display()
            ))
        })?;
        Ok(EmbeddedSink {
            db,
            path: path.to_path_buf(),
        })
    }
}

impl Sink for EmbeddedSink {
    fn describe(&self) -> String {
        format!("embedded:{}", self.path.display())
    }

    fn write(&mut self, rows: &[WindowRow]) -> Result<(), SinkError> {
        let io = |e: sled::Error| {
            SinkError::Retryable(format!("embedded sink {}: {e}", self.path.display()))
        };
        let mut batch = sled::Batch::default();
        let mut staged = std::collections::BTreeMap::new();
        for row in rows {
            crate::sink::upsert(&mut staged, row.clone());
        }
        for row in staged.values() {
            let k = key(row.window_start);
            if let Some(old) = self.db.get(k).map_err(io)? {
                if decode(&old, &self.path)?.version > row.version {
                    continue;
                }
            }
            batch.insert(&k, encode(row)?);
        }
        crate::failpoint::crash_point("sink::embedded::before_write");
        self.db.apply_batch(batch).map_err(io)?;
        self.db.flush().map_err(io)?;
        crate::failpoint::crash_point("sink::embedded::after_write");
        Ok(())
    }

    fn read_final(&mut self) -> Result<Vec<WindowRow>, SinkError> {
        let mut rows = Vec::new();
        for item in self.db.iter().values() {
            let bytes = item.map_err(|e| {
                SinkError::Retryable(format!("embedded sink {}: {e}", self.path.display()))
            })?;
            rows.push(decode(&bytes, &self.path)?);
        }
        Ok(rows)
    }

    fn max_version(&mut self, limit: u64) -> Result<u64, SinkError> {
        // One row per window, the highest version of each: the maximum over
        // the rows is the table's. A window whose highest version is at or
        // above the limit (a replay's) may hide lower live versions of it,
        // which a fresh state need not exceed: the replay's row wins anyway.
        Ok(self
            .read_final()?
            .iter()
            .map(|r| r.version)
            .filter(|v| *v < limit)
            .max()
            .unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(start: i64, version: u64, cnt: u64) -> WindowRow {
        WindowRow {
            window_start: start,
            window_end: start + 60,
            order_cnt: cnt,
            gmv_cents: 12_345,
            user_cnt: 1,
            version,
            updated_at: 0,
        }
    }

    #[test]
    fn upserts_by_window_start_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = EmbeddedSink::open(dir.path()).unwrap();
            s.write(&[row(60, 1, 1), row(-30, 1, 7), row(0, 2, 2)])
                .unwrap();
            s.write(&[row(60, 2, 3), row(0, 1, 99)]).unwrap();
            s.write(&[row(60, 2, 3)]).unwrap();
        }
        let mut s = EmbeddedSink::open(dir.path()).unwrap();
        let got: Vec<(i64, u64, u64)> = s
            .read_final()
            .unwrap()
            .iter()
            .map(|r| (r.window_start, r.version, r.order_cnt))
            .collect();
        assert_eq!(got, vec![(-30, 1, 7), (0, 2, 2), (60, 2, 3)]);
    }

    #[test]
    fn the_max_version_is_the_highest_over_all_windows() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = EmbeddedSink::open(dir.path()).unwrap();
        assert_eq!(s.max_version(u64::MAX).unwrap(), 0, "an empty store");
        s.write(&[row(0, 3, 1), row(30, 7, 1), row(60, 5, 1)])
            .unwrap();
        assert_eq!(s.max_version(u64::MAX).unwrap(), 7);
        // A lower version of the window holding the maximum changes nothing;
        // a higher one of another window raises it; it survives a reopen.
        s.write(&[row(30, 2, 9), row(0, 11, 2)]).unwrap();
        drop(s);
        let mut s = EmbeddedSink::open(dir.path()).unwrap();
        assert_eq!(s.max_version(u64::MAX).unwrap(), 11);
        assert_eq!(s.max_version(11).unwrap(), 7, "below a limit");
    }
}
