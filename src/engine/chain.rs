//! What changes between checkpoints ([`EngineDelta`]) and restoring a
//! base with the deltas after it.

use super::*;

impl EngineSnapshot {
    /// See [`WindowsSnapshot::note_emitted`].
    pub fn note_emitted(&mut self, rows: &[WindowRow]) {
        self.windows.note_emitted(&self.spec, rows);
        self.groups.note_emitted(grouped(&self.spec, rows));
    }
}

impl EngineDelta {
    /// See [`WindowsSnapshot::note_emitted`].
    pub fn note_emitted(&mut self, rows: &[WindowRow]) {
        self.windows.note_emitted(&self.spec, rows);
        self.groups.note_emitted(grouped(&self.spec, rows));
    }

    /// The same state with nothing added: applied after this delta, it
    /// changes nothing (a checkpoint that only records acknowledgements).
    pub fn without_changes(&self) -> Self {
        EngineDelta {
            windows: self.windows.without_changes(),
            dedup: DedupDelta {
                base: self.dedup.base,
                counted: Vec::new(),
                forget_below: self.dedup.forget_below,
            },
            clocks: self.clocks.clone(),
            awaiting_first: self.awaiting_first.clone(),
            groups: self.groups.without_changes(),
            ..*self
        }
    }

    /// User entries and ids the delta adds.
    pub fn changes(&self) -> usize {
        let users: usize = self.windows.panes.iter().map(|p| p.3.len()).sum();
        users + self.dedup.counted.len() + self.groups.changes()
    }

    /// Whether it applies to a state of `spec` and `seed`, and is in order.
    pub(super) fn check_for(
        &self,
        spec: WindowSpec,
        seed: u64,
        groupings: &GroupingSpec,
    ) -> Result<(), String> {
        if self.groups.spec != *groupings {
            return Err(format!(
                "a delta of another state (groupings {:?}) cannot apply to this one ({:?})",
                self.groups.spec, groupings
            ));
        }
        if self.spec != spec || self.seed != seed {
            return Err(format!(
                "a delta of another state (window settings `{}`, seed {:#x}) cannot apply to this one \
                 (`{}`, {:#x})",
                self.spec, self.seed, spec, seed
            ));
        }
        self.check()
    }

    /// Whether the lists it replays are in the order they were taken in
    /// (a frame whose crc matches but whose content is not ours is refused,
    /// never half applied).
    fn check(&self) -> Result<(), String> {
        let ascending = |keys: &mut dyn Iterator<Item = i64>| {
            let keys: Vec<i64> = keys.collect();
            keys.windows(2).all(|w| w[0] < w[1])
        };
        if !ascending(&mut self.windows.panes.iter().map(|p| p.0))
            || !ascending(&mut self.windows.fired.iter().map(|f| f.0))
        {
            return Err("the delta's panes or fired windows are not in order".into());
        }
        if self
            .awaiting_first
            .iter()
            .any(|p| *p as usize >= self.clocks.len())
        {
            return Err("the delta awaits a partition it has no clock for".into());
        }
        self.groups.check()
    }
}

/// Dedup ids from which a restore builds the dedup table and the user sets
/// on two threads (below, the thread costs more than it saves).
pub(super) const PARALLEL_RESTORE_IDS: usize = 100_000;

/// The user sets and the dedup table of a base with `deltas` applied: on two
/// threads when the state is big (they are independent), one otherwise.
pub(super) fn restore_tables(
    spec: WindowSpec,
    base: &EngineSnapshot,
    deltas: &[EngineDelta],
) -> (Windows, Dedup) {
    let dedup = || {
        let mut dedup = Dedup::restore(spec.panes_per_window(), &base.dedup);
        for delta in deltas {
            dedup.apply_delta(&delta.dedup);
        }
        dedup
    };
    let windows = || {
        let mut windows = Windows::restore(spec, &base.windows);
        for delta in deltas {
            windows.apply_delta(&delta.windows);
        }
        windows
    };
    let ids: usize = base.dedup.expiry.iter().map(|e| e.1.len()).sum::<usize>()
        + deltas.iter().map(|d| d.dedup.counted.len()).sum::<usize>();
    if ids < PARALLEL_RESTORE_IDS {
        return (windows(), dedup());
    }
    std::thread::scope(|scope| {
        let dedup = scope.spawn(dedup);
        let windows = windows();
        match dedup.join() {
            Ok(dedup) => (windows, dedup),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// The grouped rows of `rows` as [`GroupsState::note_emitted`] reads them.
fn grouped<'a>(
    spec: &'a WindowSpec,
    rows: &'a [WindowRow],
) -> impl Iterator<Item = (i64, &'a crate::dims::GroupKey, u64)> + 'a {
    rows.iter().filter_map(|r| {
        let key = r.group.as_ref()?;
        Some((spec.window_of_start(r.window_start), key, r.order_cnt))
    })
}
