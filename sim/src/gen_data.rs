//! The input of a schedule: partitions (some created while the job runs),
//! each a log of production steps at arrival times, with bursts, long idle
//! gaps, several partitions waking at once, transactions (committed, ending
//! a partition in markers, or aborted), and the record kinds of
//! `plan::Role` plus broken payloads. Late records are added last, right
//! before bounded phases, where the other partitions' data allows them.

use crate::gen::data_end_ms;
use crate::payload;
use crate::plan::{Entry, Ev, Kind, PartitionPlan, Phase, PhaseKind, Role, Settings, User};
use crate::rng::Rng;
use crate::validate::left_behind;

/// How many partitions exist from the start, and how many are added.
pub fn partition_count(rng: &mut Rng) -> (u64, u64) {
    let initial = *rng.pick(&[1u64, 2, 2, 3, 3, 4]);
    (
        initial,
        (*rng.pick(&[0u64, 0, 0, 1, 1, 2])).min(6 - initial),
    )
}

pub fn partitions(
    rng: &mut Rng,
    s: &Settings,
    phases: &[Phase],
    count: (u64, u64),
) -> Vec<PartitionPlan> {
    let end = data_end_ms(phases);
    let quiet_ms = s.quiet_ms((count.0 + count.1) as usize);
    let quiet: Vec<(u64, u64)> = phases
        .iter()
        .filter_map(|ph| match ph.kind {
            PhaseKind::Live {
                until_ms,
                liveness: true,
            } => Some((until_ms - quiet_ms, until_ms)),
            _ => None,
        })
        .collect();
    let in_quiet = |t: u64| quiet.iter().any(|(a, b)| (*a..=*b).contains(&t));
    let (initial, extra) = count;
    let mut created: Vec<u64> = (0..initial).map(|_| 0).collect();
    for _ in 0..extra {
        let mut at = rng.range(5_000, end.saturating_sub(5_000).max(5_001));
        if s.discovery_ms == 0 {
            // Without discovery a running job never sees a new partition:
            // create it while no live run reads.
            if let Some((_, until)) = live_windows(phases).find(|(a, b)| (*a..=*b).contains(&at)) {
                at = until + 1;
            }
        } else if let Some((a, _)) = quiet.iter().find(|(a, b)| (*a..=*b).contains(&at)) {
            at = a - 1;
        }
        created.push(at);
    }
    created.sort_unstable();
    let n = created.len() as u64;
    let mean = (end * n / rng.range(60, 260)).max(200);
    let mut times: Vec<Vec<(u64, Step)>> = created
        .iter()
        .map(|c| timeline(rng, *c, end, mean))
        .collect();
    for _ in 0..rng.range(0, 2) {
        wake_together(rng, quiet_ms, s, phases, &created, &mut times);
    }
    for _ in 0..rng.range(0, 2) {
        producers_cut_off(rng, quiet_ms, s, phases, &created, &mut times);
    }
    let users = rng.range(3, 60);
    let mut parts: Vec<PartitionPlan> = Vec::new();
    for (p, steps) in times.iter().enumerate() {
        let mut g = PartGen::new(p, s, users);
        for (at, step) in steps.iter().filter(|(at, _)| !in_quiet(*at)) {
            match step {
                Step::Buffered { since } => g.buffered(rng, *at, *since),
                _ => g.step(rng, *at, *step == Step::Burst),
            }
        }
        parts.push(PartitionPlan {
            created_ms: created[p],
            entries: g.entries,
        });
    }
    for ph in phases.iter().filter(|ph| ph.kind == PhaseKind::Bounded) {
        if ph.start_ms > 0 && rng.chance(550) {
            late_records(rng, s, &mut parts, ph.start_ms - 1, users);
        }
    }
    parts
}

/// The clock windows in which a live run may be reading.
pub fn live_windows(phases: &[Phase]) -> impl Iterator<Item = (u64, u64)> + '_ {
    phases.iter().filter_map(|ph| match ph.kind {
        PhaseKind::Live { until_ms, .. } => Some((ph.start_ms, until_ms)),
        PhaseKind::Bounded => None,
    })
}

/// What a production step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    One,
    Burst,
    /// The events a producer held while it could not reach the brokers,
    /// sent when it can again.
    Buffered {
        since: u64,
    },
}

/// Step times of one partition: roughly every `mean` ms, sometimes a
/// burst, sometimes a long gap.
fn timeline(rng: &mut Rng, created: u64, end: u64, mean: u64) -> Vec<(u64, Step)> {
    let mut out = Vec::new();
    let mut t = created + rng.range(0, mean);
    while t < end {
        out.push((
            t,
            if rng.chance(50) {
                Step::Burst
            } else {
                Step::One
            },
        ));
        t += rng.range(1, 2 * mean);
        if rng.chance(30) {
            t += rng.range(15_000, 180_000);
        }
    }
    out
}

/// The live windows where a special step may go: inside a live phase, not
/// in its quiet end.
fn live_spans(quiet_ms: u64, phases: &[Phase]) -> Vec<(u64, u64)> {
    phases
        .iter()
        .filter_map(|ph| match ph.kind {
            PhaseKind::Live { until_ms, liveness } => {
                let end = if liveness {
                    until_ms - quiet_ms
                } else {
                    until_ms
                };
                Some((ph.start_ms, end))
            }
            PhaseKind::Bounded => None,
        })
        .collect()
}

/// Several partitions idle for a while, then a burst in each at the same
/// moment (inside a live phase).
fn wake_together(
    rng: &mut Rng,
    quiet_ms: u64,
    s: &Settings,
    phases: &[Phase],
    created: &[u64],
    times: &mut [Vec<(u64, Step)>],
) {
    let lives = live_spans(quiet_ms, phases);
    if lives.is_empty() {
        return;
    }
    let (from, to) = *rng.pick(&lives);
    let gap = rng.range(s.idle_timeout_ms + 3_000, 90_000);
    if to <= from + gap + 2 {
        return;
    }
    let at = rng.range(from + gap + 1, to - 1);
    let chosen: Vec<usize> = (0..times.len())
        .filter(|p| created[*p] + gap < at && rng.chance(700))
        .collect();
    if chosen.len() < 2 {
        return;
    }
    for p in chosen {
        times[p].retain(|(t, _)| !(at - gap..at).contains(t));
        let i = times[p].partition_point(|(t, _)| *t <= at);
        times[p].insert(i, (at, Step::Burst));
    }
}

/// Every producer loses the brokers for a while (inside a live phase),
/// keeps its events, and sends them when it reconnects: every partition
/// wakes at the same moment with a burst whose event times span the outage.
fn producers_cut_off(
    rng: &mut Rng,
    quiet_ms: u64,
    s: &Settings,
    phases: &[Phase],
    created: &[u64],
    times: &mut [Vec<(u64, Step)>],
) {
    let lives = live_spans(quiet_ms, phases);
    if lives.is_empty() {
        return;
    }
    let (from, to) = *rng.pick(&lives);
    // Long enough for every partition to go idle meanwhile.
    let len = rng.range(s.idle_timeout_ms + 10_000, 150_000);
    if to <= from + len + 2 {
        return;
    }
    let back = rng.range(from + len + 1, to - 1);
    let since = back - len;
    if created.iter().any(|c| (since..=back).contains(c)) {
        return;
    }
    // Two outages that overlap would send one's held events into the
    // other: producers are cut off once at a time.
    let overlaps = times.iter().flatten().any(|(at, step)| match step {
        Step::Buffered { since: other } => *other <= back && *at >= since,
        _ => false,
    });
    if overlaps {
        return;
    }
    for (p, steps) in times.iter_mut().enumerate() {
        if created[p] > since {
            continue;
        }
        steps.retain(|(t, _)| !(since + 1..=back).contains(t));
        let i = steps.partition_point(|(t, _)| *t <= back);
        steps.insert(i, (back, Step::Buffered { since }));
    }
}

/// One partition's log as it is produced.
struct PartGen<'a> {
    p: usize,
    s: &'a Settings,
    users: u64,
    entries: Vec<Entry>,
    next_id: u64,
    /// Delivered regular-class events, for copies and resends.
    history: Vec<Ev>,
    /// A wrong clock ended the partition's valid events.
    closed: bool,
}

impl<'a> PartGen<'a> {
    fn new(p: usize, s: &'a Settings, users: u64) -> Self {
        PartGen {
            p,
            s,
            users,
            entries: Vec::new(),
            next_id: 0,
            history: Vec::new(),
            closed: false,
        }
    }

    fn step(&mut self, rng: &mut Rng, at: u64, burst: bool) {
        if self.closed {
            // Only what cannot confirm or contradict the wrong clock.
            if rng.chance(500) {
                let good = self.ev(rng, at, Role::Regular);
                let (reason, bytes) = payload::broken(rng.below(payload::BROKEN_KINDS), &good, rng);
                self.push(at, Kind::Raw { reason, bytes });
            } else {
                self.push(at, Kind::Marker);
            }
            return;
        }
        let txn = rng.below(100);
        let k = if burst {
            rng.range(4, 15)
        } else if rng.chance(100) {
            2
        } else {
            1
        };
        if txn < 5 {
            // An aborted transaction: its events occupy offsets, no more.
            for _ in 0..k {
                let ev = self.ev(rng, at, Role::Regular);
                self.push(at, Kind::Event { ev, aborted: true });
            }
            self.push(at, Kind::Marker);
            return;
        }
        for _ in 0..k {
            self.record(rng, at);
        }
        if txn < 13 {
            self.push(at, Kind::Marker);
        }
        let regulars = self.history.len();
        if self.s.clock_poison && regulars >= 2 && rng.chance(15) {
            let lead = rng.range(self.s.max_jump_ms() as u64 + 120_000, 55 * 60_000) as i64;
            let ev = self.ev_at(rng, self.arrival(at) + lead, Role::MinutesAheadLast);
            self.push(at, Kind::Event { ev, aborted: false });
            self.closed = true;
        }
    }

    /// The events a producer kept from `since` to `at`: stamped when they
    /// happened, in order, sent together.
    fn buffered(&mut self, rng: &mut Rng, at: u64, since: u64) {
        if self.closed {
            return;
        }
        let mut times: Vec<u64> = (0..rng.range(2, 12))
            .map(|_| rng.range(since + 1, at))
            .collect();
        times.sort_unstable();
        for t in times {
            let jitter = rng.range(0, self.s.disorder_ms as u64) as i64;
            let stamp = (self.arrival(t) - jitter).max(self.arrival(since) + 1);
            let ev = self.ev_at(rng, stamp, Role::Buffered);
            self.push(at, Kind::Event { ev, aborted: false });
        }
    }

    fn push(&mut self, at: u64, kind: Kind) {
        if let Kind::Event { ev, aborted: false } = &kind {
            if ev.role.is_regular_class() {
                self.history.push(ev.clone());
            }
        }
        self.entries.push(Entry { at_ms: at, kind });
    }

    fn arrival(&self, at: u64) -> i64 {
        self.s.wall_origin_ms + at as i64
    }

    /// A new event of `role` stamped as a regular one would be.
    fn ev(&mut self, rng: &mut Rng, at: u64, role: Role) -> Ev {
        let t = self.arrival(at) - rng.range(0, self.s.disorder_ms as u64) as i64;
        self.ev_at(rng, t, role)
    }

    fn ev_at(&mut self, rng: &mut Rng, t_ms: i64, role: Role) -> Ev {
        self.next_id += 1;
        let k = rng.below(self.users) as i64;
        let user = match rng.below(4) {
            0 | 1 => User::Text(format!("u{k}")),
            2 => User::Int(k),
            _ => User::Text(k.to_string()),
        };
        let cents = if rng.chance(10) {
            rng.range(100_000_000_000_000, 99_999_999_999_999_999)
        } else {
            rng.range(0, 50_000)
        };
        Ev {
            id: format!("p{}-{}", self.p, self.next_id),
            user,
            cents,
            t_ms,
            role,
            style: rng.next_u64() as u32,
        }
    }

    /// One record of a step (a wrong clock brings its two contradictions).
    fn record(&mut self, rng: &mut Rng, at: u64) {
        let s = self.s;
        let roll = rng.below(1000);
        let now = self.arrival(at);
        let ev = match roll {
            0..=69 => {
                let good = self.ev(rng, at, Role::Regular);
                let (reason, bytes) = payload::broken(rng.below(payload::BROKEN_KINDS), &good, rng);
                return self.push(at, Kind::Raw { reason, bytes });
            }
            70..=119 => match self.copy_of(rng, now) {
                Some(ev) => ev,
                None => self.ev(rng, at, Role::Regular),
            },
            120..=149 => self.resend(rng, at),
            150..=189 if s.small_jump_ms >= 1_000 => {
                let lead = rng.range(1, s.small_jump_ms as u64) as i64;
                self.ev_at(rng, now + lead, Role::SmallJump)
            }
            190..=204 => {
                let lead = rng.range(s.max_jump_ms() as u64 + 120_000, 55 * 60_000) as i64;
                let ev = self.ev_at(rng, now + lead, Role::MinutesAhead);
                self.push(at, Kind::Event { ev, aborted: false });
                for _ in 0..2 {
                    let ev = self.ev(rng, at, Role::Regular);
                    self.push(at, Kind::Event { ev, aborted: false });
                }
                return;
            }
            205..=214 => {
                let lead = rng.range(3_700_000, 5 * 365 * 86_400_000) as i64;
                self.ev_at(rng, now + lead, Role::FarFuture)
            }
            215..=221 if s.first_storable_ms() > 0 => {
                let t = rng.below(s.first_storable_ms() as u64) as i64;
                self.ev_at(rng, t, Role::OutOfRange)
            }
            _ => self.ev(rng, at, Role::Regular),
        };
        self.push(at, Kind::Event { ev, aborted: false });
    }

    /// An exact copy of a recent event, within the copy-delay budget.
    fn copy_of(&mut self, rng: &mut Rng, now: i64) -> Option<Ev> {
        let limit = self.s.disorder_ms + self.s.copy_delay_ms;
        let candidates: Vec<&Ev> = self
            .history
            .iter()
            .rev()
            .take(8)
            .filter(|e| (0..=limit).contains(&(now - e.t_ms)))
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let mut ev = (*rng.pick(&candidates)).clone();
        ev.role = Role::Copy;
        Some(ev)
    }

    /// A new event under an older event's id, some panes later.
    fn resend(&mut self, rng: &mut Rng, at: u64) -> Ev {
        let mut ev = self.ev(rng, at, Role::Resend);
        let pane = ev.t_ms.div_euclid(self.s.slide_ms);
        let older: Vec<&Ev> = self
            .history
            .iter()
            .filter(|e| e.t_ms.div_euclid(self.s.slide_ms) < pane)
            .collect();
        match older.is_empty() {
            true => ev.role = Role::Regular,
            false => ev.id = rng.pick(&older).id.clone(),
        }
        ev
    }
}

/// Right before a bounded phase (`at`): a late record and a regular one
/// after it, in one or two partitions that have data and no wrong clock
/// waiting. A copy of the partition's oldest event when every partition has
/// left it far behind, else an event far older than all data.
fn late_records(rng: &mut Rng, s: &Settings, parts: &mut [PartitionPlan], at: u64, users: u64) {
    let eligible: Vec<usize> = (0..parts.len())
        .filter(|p| {
            let before = parts[*p].entries.iter().take_while(|e| e.at_ms <= at);
            parts[*p].created_ms <= at
                && before.clone().any(|e| matches!(&e.kind, Kind::Event { ev, aborted: false } if ev.role.is_regular_class()))
                && !before.clone().any(|e| matches!(&e.kind, Kind::Event { ev, .. } if ev.role == Role::MinutesAheadLast))
        })
        .collect();
    for _ in 0..rng.range(1, 2) {
        if eligible.is_empty() {
            return;
        }
        let p = *rng.pick(&eligible);
        let oldest = parts[p].entries.iter().find_map(|e| match &e.kind {
            Kind::Event { ev, aborted: false } if ev.role.is_regular_class() => Some(ev.clone()),
            _ => None,
        });
        let late = match oldest {
            Some(mut ev)
                if rng.chance(500) && left_behind(s, parts, p, at, ev.t_ms + s.late_copy_ms()) =>
            {
                ev.role = Role::LateCopy;
                ev
            }
            _ => {
                let back = s.very_late_ms() as u64 + rng.range(0, 3 * 3_600_000);
                let mut g = PartGen::new(p, s, users);
                g.next_id = 1_000_000 + rng.below(1_000_000);
                g.ev_at(rng, s.wall_origin_ms - back as i64, Role::VeryLate)
            }
        };
        let mut g = PartGen::new(p, s, users);
        g.next_id = 2_000_000 + rng.below(1_000_000);
        let regular = g.ev(rng, at, Role::Regular);
        let i = parts[p].entries.partition_point(|e| e.at_ms <= at);
        for (k, ev) in [late, regular].into_iter().enumerate() {
            parts[p].entries.insert(
                i + k,
                Entry {
                    at_ms: at,
                    kind: Kind::Event { ev, aborted: false },
                },
            );
        }
    }
}
