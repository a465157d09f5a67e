//! The deterministic simulator (issue 13): StreamForge's real job, on one
//! thread, against a simulated world whose every source of nondeterminism
//! (time, input, interleaving, faults, crashes) comes from a seed.
//!
//! # Layout
//!
//! * `plan`, `validate`: a schedule as data, and the rules that make each
//!   record's fate follow from the input alone;
//! * `gen`, `gen_data`, `gen_faults`, `payload`, `timefmt`: a plan from a
//!   seed (settings and phases, the input, the faults, the payload bytes);
//! * `model`: the independent model of what one uninterrupted run gives;
//! * `world`, `source`, `sink`, `crash`: the simulated clock, topic, table
//!   and process deaths the job runs against;
//! * `runner`, `checks`: running a plan and checking the invariants;
//! * `shrink`, `campaign`: shrinking a divergence, running many seeds;
//! * `group`: group mode's schedules (issue 16): instances, partition
//!   owners, rebalances, killed instances and zombie owners.
//!
//! docs/development.md ("The deterministic simulator") is the user's guide.

pub mod campaign;
pub mod checks;
pub mod crash;
pub mod gen;
pub mod gen_data;
pub mod gen_faults;
pub mod group;
pub mod model;
pub mod payload;
pub mod plan;
pub mod rng;
pub mod runner;
pub mod shrink;
pub mod sink;
pub mod source;
pub mod timefmt;
pub mod validate;
pub mod world;
