//! The independent model: what one uninterrupted run over the whole input
//! must give, worked out from the plan alone, without any of the product's
//! processing code (no `Engine`, `Windows`, `Dedup`, `Watermarks`).
//!
//! Each record's fate follows from its role (the plan's rules make that
//! sound, see `validate`), except duplicates, which the model decides with
//! its own reading of docs/semantics.md's rule: per partition, in offset
//! order, an event whose pane is less than `size / slide` panes from the
//! last counted event with its id is a duplicate. Windows, exact cents and
//! distinct users are counted here from the accepted events.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::plan::{Kind, Plan, Role};
use crate::world::Log;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    Accepted,
    Duplicate,
    Anomaly(String),
    /// A marker or an aborted record: never delivered, never counted.
    Unread,
}

impl Fate {
    pub fn is_read(&self) -> bool {
        *self != Fate::Unread
    }
}

/// One window's figures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Figures {
    pub order_cnt: u64,
    pub gmv_cents: u128,
    pub users: BTreeSet<String>,
}

/// One line the anomaly log must hold: reason, partition, offset, payload,
/// and the event time of a late event.
pub type AnomalyKey = (String, u32, u64, Vec<u8>, Option<i64>);

pub struct Model {
    pub fates: Vec<Vec<Fate>>,
    /// Per partition, per offset, the event time of a valid event.
    pub times: Vec<Vec<Option<i64>>>,
    /// Per partition, per offset, what an accepted event adds to its
    /// windows: time, cents, normalized user.
    accepted: Vec<Vec<Option<(i64, u64, String)>>>,
    pub anomalies: Vec<AnomalyKey>,
    size_ms: i64,
    slide_ms: i64,
}

/// Counts of fates over a range of offsets: read, accepted, duplicates,
/// anomalies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub read: u64,
    pub accepted: u64,
    pub duplicates: u64,
    pub anomalies: u64,
}

impl Model {
    pub fn new(plan: &Plan, log: &Log) -> Model {
        let s = &plan.settings;
        let n = s.panes_per_window();
        let mut fates = Vec::new();
        let mut times = Vec::new();
        let mut accepted = Vec::new();
        let mut anomalies = Vec::new();
        for (p, part) in plan.partitions.iter().enumerate() {
            let mut counted: HashMap<&str, i64> = HashMap::new();
            let mut fs = Vec::with_capacity(part.entries.len());
            let mut ts = Vec::with_capacity(part.entries.len());
            let mut acc = Vec::with_capacity(part.entries.len());
            for (o, e) in part.entries.iter().enumerate() {
                let (fate, time) = match &e.kind {
                    Kind::Marker | Kind::Event { aborted: true, .. } => (Fate::Unread, None),
                    Kind::Raw { reason, .. } => (Fate::Anomaly(reason.clone()), None),
                    Kind::Event { ev, .. } => {
                        let fate = match ev.role {
                            Role::FarFuture | Role::MinutesAhead => {
                                Fate::Anomaly("implausible_event_time".into())
                            }
                            Role::OutOfRange => Fate::Anomaly("event_time_out_of_range".into()),
                            Role::VeryLate | Role::LateCopy => Fate::Anomaly("late_event".into()),
                            _ => {
                                let pane = ev.t_ms.div_euclid(s.slide_ms);
                                match counted.get(ev.id.as_str()) {
                                    Some(r) if (pane - r).abs() < n => Fate::Duplicate,
                                    _ => {
                                        counted.insert(ev.id.as_str(), pane);
                                        Fate::Accepted
                                    }
                                }
                            }
                        };
                        (fate, ev.role.is_valid().then_some(ev.t_ms))
                    }
                };
                if let Fate::Anomaly(reason) = &fate {
                    let late =
                        (reason == "late_event").then(|| time.expect("late events have a time"));
                    anomalies.push((
                        reason.clone(),
                        p as u32,
                        o as u64,
                        log.payload(p, o).to_vec(),
                        late,
                    ));
                }
                acc.push(match (&fate, &e.kind) {
                    (Fate::Accepted, Kind::Event { ev, .. }) => {
                        Some((ev.t_ms, ev.cents, ev.user.normalized()))
                    }
                    _ => None,
                });
                fs.push(fate);
                ts.push(time);
            }
            fates.push(fs);
            times.push(ts);
            accepted.push(acc);
        }
        anomalies.sort();
        Model {
            fates,
            times,
            accepted,
            anomalies,
            size_ms: s.size_ms,
            slide_ms: s.slide_ms,
        }
    }

    /// The windows (by start, epoch seconds) of the accepted events that
    /// `include(partition, offset)` selects.
    pub fn windows(&self, include: impl Fn(usize, usize) -> bool) -> BTreeMap<i64, Figures> {
        let mut out: BTreeMap<i64, Figures> = BTreeMap::new();
        for (p, events) in self.accepted.iter().enumerate() {
            for (o, event) in events.iter().enumerate() {
                let Some((t, cents, user)) = event else {
                    continue;
                };
                if !include(p, o) {
                    continue;
                }
                let first = t.div_euclid(self.slide_ms) * self.slide_ms;
                let mut start = first;
                while start > first - self.size_ms {
                    let w = out.entry(start.div_euclid(1000)).or_default();
                    w.order_cnt += 1;
                    w.gmv_cents += *cents as u128;
                    w.users.insert(user.clone());
                    start -= self.slide_ms;
                }
            }
        }
        out
    }

    /// Fates over the offsets `from..to` of partition `p`.
    pub fn counts(&self, p: usize, from: u64, to: u64) -> Counts {
        let mut c = Counts::default();
        let fates = &self.fates[p];
        for fate in &fates[(from as usize).min(fates.len())..(to as usize).min(fates.len())] {
            match fate {
                Fate::Unread => continue,
                Fate::Accepted => c.accepted += 1,
                Fate::Duplicate => c.duplicates += 1,
                Fate::Anomaly(_) => c.anomalies += 1,
            }
            c.read += 1;
        }
        c
    }

    /// The offset after the last record of `p` the job reads, if any.
    pub fn read_end(&self, p: usize) -> Option<u64> {
        self.fates[p]
            .iter()
            .rposition(Fate::is_read)
            .map(|o| o as u64 + 1)
    }

    /// The offset after the last record of `p` the job reads before `o`.
    pub fn read_end_before(&self, p: usize, o: u64) -> Option<u64> {
        let o = (o as usize).min(self.fates[p].len());
        self.fates[p][..o]
            .iter()
            .rposition(Fate::is_read)
            .map(|i| i as u64 + 1)
    }

    /// The offset of the last valid event of `p` (the only record a
    /// finished run may leave waiting for confirmation).
    pub fn last_valid(&self, p: usize) -> Option<u64> {
        self.times[p]
            .iter()
            .rposition(Option::is_some)
            .map(|o| o as u64)
    }
}
