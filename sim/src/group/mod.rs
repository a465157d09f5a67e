//! Group mode's schedules (issue 16): several simulated instances share the
//! topic as `streamforge::group` shares it, a job per owned partition
//! (`OwnedPartition` over the simulated topic, partial rows versioned by the
//! partition's next offset), and ownership moves while they run.
//!
//! A group schedule is an ordinary [`Plan`](crate::plan::Plan) (settings,
//! partitions, one live phase that shapes the data) with a [`GroupPlan`]:
//! per partition, its owners in turn ([`Tenure`]), each ending cleanly
//! (revoked: a final checkpoint), killed (`kill -9`), or as a **zombie**
//! that keeps reading and writing after the next owner started, its writes
//! reaching the table late. Each instance keeps its own checkpoints per
//! partition, so a partition that comes back resumes from the instance's
//! old checkpoint, and one new to an instance is rebuilt from the earliest
//! offset. Then the partition's last owner reads it to its end (a clean
//! bounded run) and the checks compare the partial table and the union of
//! every instance's anomaly logs with the model, partition by partition.
//!
//! # Layout
//!
//! * this file: the plan's group part and its rules;
//! * `gen`: a group schedule from a seed;
//! * `table`: the simulated `<table>_partial` (ReplacingMergeTree after
//!   `FINAL`) and the writes in flight;
//! * `run`: running the owners of each partition in turn;
//! * `check`: the invariants against `model`.
//!
//! Partitions share nothing but the table, where their keys differ, so each
//! partition's owners run one partition after another, each job on this
//! thread with a clock of its own (every clock counts the same simulated
//! time). The old and the new owner of one partition do share a key: a
//! zombie's writes after its revocation are held in flight and land when
//! the simulated time of their arrival comes, between the new owner's own
//! writes (or after the final run), which is every order the table can see.

pub mod check;
pub mod gen;
pub mod run;
pub mod table;

use serde::{Deserialize, Serialize};

use crate::plan::{Faults, Plan};

/// The group part of a plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupPlan {
    /// How many instances (each with its own checkpoints and anomaly logs).
    pub instances: u8,
    /// Per partition, its owners in turn.
    pub owners: Vec<Vec<Tenure>>,
    /// Per partition, the instance that reads it to its end at last.
    pub last_owner: Vec<u8>,
}

/// One instance owning one partition for a while.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tenure {
    pub instance: u8,
    /// Clock ms at which the partition is assigned to it.
    pub from_ms: u64,
    /// Clock ms at which it loses the partition (revoked, or killed).
    pub until_ms: u64,
    /// The instance is killed at the end (at `until_ms`, or at the end of
    /// its zombie time) instead of stopping with a final checkpoint.
    pub killed: bool,
    /// A zombie: it goes on reading and writing this long after `until_ms`.
    pub zombie_ms: u64,
    /// How long its writes after `until_ms` take to reach the table
    /// (`u64::MAX`: after everything else).
    pub late_ms: u64,
    /// The faults of the first process of the tenure (a crash restarts
    /// the instance, which keeps the partition).
    pub faults: Faults,
}

impl Tenure {
    /// When the instance stops reading the partition.
    pub fn stop_ms(&self) -> u64 {
        self.until_ms + self.zombie_ms
    }
}

impl Plan {
    /// The rules of a group plan (on top of [`Plan::validate`]'s).
    pub(crate) fn validate_group(&self) -> Result<(), String> {
        let Some(g) = &self.group else {
            return Ok(());
        };
        if g.owners.len() != self.partitions.len() || g.last_owner.len() != self.partitions.len() {
            return Err("group: owners or last owners not one per partition".into());
        }
        if g.instances == 0 || g.last_owner.iter().any(|i| *i >= g.instances) {
            return Err("group: an instance out of range".into());
        }
        for (p, tenures) in g.owners.iter().enumerate() {
            let mut free = self.partitions[p].created_ms;
            // Per instance, when its last job of the partition stopped: one
            // instance runs one job of a partition at a time (one state).
            let mut stopped = vec![0u64; g.instances as usize];
            for (k, t) in tenures.iter().enumerate() {
                if t.instance >= g.instances || t.from_ms < free || t.until_ms <= t.from_ms {
                    return Err(format!("group: p{p} tenure {k} out of order"));
                }
                if t.from_ms < stopped[t.instance as usize] {
                    return Err(format!(
                        "group: p{p} tenure {k} starts before its instance's zombie stops"
                    ));
                }
                stopped[t.instance as usize] = t.stop_ms();
                // The next owner may start once this one lost the partition,
                // even while it still runs as a zombie.
                free = t.until_ms;
            }
        }
        Ok(())
    }
}
