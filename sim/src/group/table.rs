//! The simulated `<table>_partial`: one row per (window, partition), as
//! `ReplacingMergeTree(version)` gives it after `FINAL` (the highest
//! version wins; between equal versions, the last write), and the writes
//! still in flight (a zombie's, a killed instance's last INSERT) that land
//! when the simulated time of their arrival comes.
//!
//! It also checks the claim group mode's fencing rests on
//! (docs/architecture.md, "Why a row can be written by anyone"): whoever
//! writes it, one (window, partition, version) always has one content.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use streamforge::window::WindowRow;

/// Row figures: orders, cents, users.
pub type Figures = (u64, u128, u64);

#[derive(Debug, Default)]
pub struct PartialTable {
    /// By (window start, partition): the row `FINAL` gives.
    pub rows: BTreeMap<(i64, u32), WindowRow>,
    /// Writes on their way: (arrival clock ms, sequence, partition, row).
    in_flight: Vec<(u64, u64, u32, WindowRow)>,
    sent: u64,
    /// Every (window, partition, version) written, with its figures.
    contents: BTreeMap<(i64, u32, u64), Figures>,
    /// Divergences noticed as rows land.
    pub notes: Vec<String>,
}

pub type SharedTable = Arc<Mutex<PartialTable>>;

pub fn lock(table: &SharedTable) -> MutexGuard<'_, PartialTable> {
    table.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn figures(r: &WindowRow) -> Figures {
    (r.order_cnt, r.gmv_cents, r.user_cnt)
}

impl PartialTable {
    /// A row of `partition` lands.
    pub fn land(&mut self, partition: u32, row: WindowRow) {
        let key = (row.window_start, partition, row.version);
        let f = figures(&row);
        match self.contents.get(&key) {
            Some(old) if *old != f && self.notes.len() < 8 => self.notes.push(format!(
                "partial row of window {} partition {partition} version {} written with {old:?} and with {f:?}",
                row.window_start, row.version
            )),
            Some(_) => {}
            None => {
                self.contents.insert(key, f);
            }
        }
        let slot = (row.window_start, partition);
        match self.rows.get(&slot) {
            Some(old) if old.version > row.version => {}
            _ => {
                self.rows.insert(slot, row);
            }
        }
    }

    /// A row of `partition` leaves its writer now and arrives at `arrival_ms`.
    pub fn send(&mut self, arrival_ms: u64, partition: u32, row: WindowRow) {
        self.sent += 1;
        self.in_flight.push((arrival_ms, self.sent, partition, row));
    }

    /// Lands, in order of arrival, the writes of `partition` due by `now_ms`
    /// (`u64::MAX`: all of them).
    pub fn deliver(&mut self, partition: u32, now_ms: u64) {
        let mut due: Vec<(u64, u64, u32, WindowRow)> = Vec::new();
        let mut i = 0;
        while i < self.in_flight.len() {
            let (at, _, p, _) = &self.in_flight[i];
            if *p == partition && (*at <= now_ms || now_ms == u64::MAX) {
                due.push(self.in_flight.swap_remove(i));
            } else {
                i += 1;
            }
        }
        due.sort_by_key(|(at, seq, _, _)| (*at, *seq));
        for (_, _, p, row) in due {
            self.land(p, row);
        }
    }

    /// Writes of `partition` still in flight.
    pub fn in_flight(&self, partition: u32) -> usize {
        self.in_flight
            .iter()
            .filter(|(_, _, p, _)| *p == partition)
            .count()
    }
}

/// How one partition job's sink writes (see `sink::SimSink`).
#[derive(Clone)]
pub struct PartialWrites {
    pub table: SharedTable,
    pub partition: u32,
    /// Clock ms from which the writer is a zombie: its writes are sent, and
    /// arrive `late_ms` later (`u64::MAX`: after everything).
    pub zombie_from_ms: Option<u64>,
    pub late_ms: u64,
}

impl PartialWrites {
    /// One row written at clock `now_ms`: what is due lands first, then
    /// this row lands or is sent.
    pub fn write(&self, now_ms: u64, row: WindowRow) {
        let mut t = lock(&self.table);
        t.deliver(self.partition, now_ms);
        match self.zombie_from_ms {
            Some(from) if now_ms >= from => {
                let at = now_ms.saturating_add(self.late_ms);
                t.send(at, self.partition, row);
            }
            _ => t.land(self.partition, row),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(start: i64, version: u64, orders: u64) -> WindowRow {
        WindowRow {
            window_start: start,
            window_end: start + 60,
            order_cnt: orders,
            gmv_cents: u128::from(orders) * 100,
            user_cnt: 1,
            version,
            updated_at: 0,
            group: None,
            users: None,
        }
    }

    /// As `ReplacingMergeTree(version)` after `FINAL`: per (window,
    /// partition) the highest version, the last write between equals; a
    /// row sent late lands at its arrival, in arrival order.
    #[test]
    fn the_highest_version_wins_and_late_rows_land_at_their_arrival() {
        let mut t = PartialTable::default();
        t.land(0, row(60, 10, 3));
        t.land(1, row(60, 4, 1));
        t.land(0, row(60, 7, 2));
        assert_eq!(t.rows[&(60, 0)].version, 10);
        assert_eq!(t.rows[&(60, 1)].version, 4);
        t.send(500, 0, row(60, 12, 5));
        t.send(100, 0, row(60, 11, 4));
        t.deliver(0, 99);
        assert_eq!(t.rows[&(60, 0)].version, 10);
        assert_eq!(t.in_flight(0), 2);
        t.deliver(0, 100);
        assert_eq!(t.rows[&(60, 0)].order_cnt, 4);
        t.deliver(0, u64::MAX);
        assert_eq!(t.rows[&(60, 0)].order_cnt, 5);
        assert!(t.notes.is_empty());
        // One version, two contents: noted.
        t.land(0, row(60, 12, 6));
        assert_eq!(t.notes.len(), 1, "{:?}", t.notes);
    }
}
