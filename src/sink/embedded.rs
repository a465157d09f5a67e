//! The embedded sink: the ClickHouse table's semantics in a local sled store,
//! for running with no servers at all.
//!
//! One key per window (its start, order-preserving big-endian), holding the
//! row with the highest version seen, so writes are upserts exactly like a
//! `ReplacingMergeTree(version)` read with `FINAL`. Grouped rows (see
//! [`crate::dims`]) live in a tree of their own, `grouped`, keyed by the
//! window start and then the grouping and its values, with the same rule.
//! Each write is one atomic batch over both, flushed before it is
//! acknowledged. By default the store lives in `<state-dir>/sink`, so
//! `streamforge results --state-dir S` finds it.

use std::path::{Path, PathBuf};

use sled::Transactional;

use serde::{Deserialize, Serialize};

use super::{Sink, SinkError};
use crate::window::WindowRow;

pub struct EmbeddedSink {
    db: sled::Db,
    /// The grouped rows.
    grouped: sled::Tree,
    path: PathBuf,
}

/// A window's totals as stored (the layout from before grouped rows, kept so
/// that stores written by earlier versions read back).
#[derive(Serialize, Deserialize)]
struct Totals {
    window_start: i64,
    window_end: i64,
    order_cnt: u64,
    gmv_cents: u128,
    user_cnt: u64,
    version: u64,
    updated_at: i64,
}

/// The key of a row: its window start, then (grouped rows) the grouping and
/// the values, bincode-encoded (length-prefixed, so no key is a prefix of
/// another's).
fn row_key(row: &WindowRow) -> Result<Vec<u8>, SinkError> {
    let mut k = key(row.window_start).to_vec();
    if let Some(group) = &row.group {
        k.extend(
            bincode::serde::encode_to_vec(group, bincode::config::standard()).map_err(|e| {
                SinkError::Fatal(format!("embedded sink: cannot encode a key: {e}"))
            })?,
        );
    }
    Ok(k)
}

fn key(window_start: i64) -> [u8; 8] {
    // Flipping the sign bit makes negative starts sort before positive ones.
    ((window_start as u64) ^ (1 << 63)).to_be_bytes()
}

fn encode(row: &WindowRow) -> Result<Vec<u8>, SinkError> {
    let bytes = if row.group.is_some() {
        bincode::serde::encode_to_vec(row, bincode::config::standard())
    } else {
        let totals = Totals {
            window_start: row.window_start,
            window_end: row.window_end,
            order_cnt: row.order_cnt,
            gmv_cents: row.gmv_cents,
            user_cnt: row.user_cnt,
            version: row.version,
            updated_at: row.updated_at,
        };
        bincode::serde::encode_to_vec(totals, bincode::config::standard())
    };
    bytes.map_err(|e| SinkError::Fatal(format!("embedded sink: cannot encode a row: {e}")))
}

/// A row of the default tree (`grouped: false`) or of `grouped`.
fn decode(bytes: &[u8], grouped: bool, path: &Path) -> Result<WindowRow, SinkError> {
    let unreadable = |e: bincode::error::DecodeError| {
        SinkError::Fatal(format!(
            "embedded sink {}: unreadable row: {e}",
            path.display()
        ))
    };
    let config = bincode::config::standard();
    if grouped {
        return bincode::serde::decode_from_slice(bytes, config)
            .map(|(row, _)| row)
            .map_err(unreadable);
    }
    let (t, _): (Totals, _) =
        bincode::serde::decode_from_slice(bytes, config).map_err(unreadable)?;
    Ok(WindowRow {
        users: None,
        window_start: t.window_start,
        window_end: t.window_end,
        order_cnt: t.order_cnt,
        gmv_cents: t.gmv_cents,
        user_cnt: t.user_cnt,
        version: t.version,
        updated_at: t.updated_at,
        group: None,
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
        let grouped = db.open_tree("grouped").map_err(|e| {
            SinkError::Fatal(format!(
                "embedded sink: cannot open {}: {e}",
                path.display()
            ))
        })?;
        Ok(EmbeddedSink {
            db,
            grouped,
            path: path.to_path_buf(),
        })
    }

    /// The rows of one tree, in key order.
    fn read_tree(&self, grouped: bool) -> Result<Vec<WindowRow>, SinkError> {
        let tree: &sled::Tree = if grouped { &self.grouped } else { &self.db };
        let mut rows = Vec::new();
        for item in tree.iter().values() {
            let bytes = item.map_err(|e| {
                SinkError::Retryable(format!("embedded sink {}: {e}", self.path.display()))
            })?;
            rows.push(decode(&bytes, grouped, &self.path)?);
        }
        Ok(rows)
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
        let mut batches = [sled::Batch::default(), sled::Batch::default()];
        let mut staged = std::collections::BTreeMap::new();
        for row in rows {
            crate::sink::upsert_keyed(&mut staged, row.clone());
        }
        for row in staged.values() {
            let grouped = row.group.is_some();
            let tree: &sled::Tree = if grouped { &self.grouped } else { &self.db };
            let k = row_key(row)?;
            if let Some(old) = tree.get(&k).map_err(io)? {
                if decode(&old, grouped, &self.path)?.version > row.version {
                    continue;
                }
            }
            batches[grouped as usize].insert(k, encode(row)?);
        }
        crate::failpoint::crash_point("sink::embedded::before_write");
        let [totals, grouped] = batches;
        // Both trees in one transaction: a crash leaves both or neither.
        (&*self.db, &self.grouped)
            .transaction(|(db, g)| {
                db.apply_batch(&totals)?;
                g.apply_batch(&grouped)?;
                Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
            })
            .map_err(|e| {
                SinkError::Retryable(format!("embedded sink {}: {e:?}", self.path.display()))
            })?;
        self.db.flush().map_err(io)?;
        crate::failpoint::crash_point("sink::embedded::after_write");
        Ok(())
    }

    fn read_final(&mut self) -> Result<Vec<WindowRow>, SinkError> {
        self.read_tree(false)
    }

    fn read_grouped(&mut self) -> Result<Vec<WindowRow>, SinkError> {
        self.read_tree(true)
    }

    fn max_version(&mut self, limit: u64) -> Result<u64, SinkError> {
        // One row per window (and per grouped key), the highest version of
        // each: the maximum over the rows is the store's, grouped rows
        // included. A window whose highest version is at or
        // above the limit (a replay's) may hide lower live versions of it,
        // which a fresh state need not exceed: the replay's row wins anyway.
        let mut rows = self.read_final()?;
        rows.extend(self.read_grouped()?);
        Ok(rows
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
            users: None,
            window_start: start,
            window_end: start + 60,
            order_cnt: cnt,
            gmv_cents: 12_345,
            user_cnt: 1,
            version,
            updated_at: 0,
            group: None,
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
        // A grouped row's version counts too.
        let mut grouped = row(90, 13, 1);
        grouped.group = Some(crate::dims::GroupKey {
            dims: vec![crate::dims::Dimension::City],
            values: vec!["Paris".into()],
        });
        s.write(&[grouped]).unwrap();
        assert_eq!(s.max_version(u64::MAX).unwrap(), 13);
    }
}
