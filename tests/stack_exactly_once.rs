//! Kafka -> StreamForge -> ClickHouse against the real local stack
//! (`scripts/stack.sh up`; `scripts/test.sh` starts it). A missing service is
//! a failure, never a skip.
//!
//! Each test replays its own data set into its own topic with
//! `streamforge produce --from-files`, runs the job with its own ClickHouse
//! table and state directory, and compares `streamforge results --sink
//! clickhouse` (read with FINAL) and the anomaly log with the oracle.
//! Tests that stop a service hold a lock, since the stack is shared.

mod common;

use std::sync::Mutex;

use common::stack::*;
use common::watch::Watched;
use common::*;

static STACK: Mutex<()> = Mutex::new(());

/// When a step's action runs: once the job has committed its first
/// checkpoint (its metrics say so), or once it says a state change in its
/// log (alternatives separated by `|`).
enum When {
    FirstCheckpoint,
    Says(&'static str),
}

/// A trigger, and what to do then.
type Step = (When, Box<dyn FnOnce()>);

/// Runs the job and, each time the next trigger holds, runs that step's
/// action; then lets it finish and returns its log. Steps are driven by
/// what the job reports, never by guessed timings.
fn run_with_steps(case: &Case, steps: Vec<Step>) -> String {
    let mut job = Watched::attach(spawn(&mut case.run_cmd()));
    for (when, action) in steps {
        match when {
            When::FirstCheckpoint => assert!(
                job.until_checkpoints(1),
                "the job ended before its first checkpoint:\n{}",
                job.log
            ),
            When::Says(patterns) => {
                job.wait_for(patterns);
            }
        }
        action();
    }
    let (status, log) = job.finish();
    assert!(status.success(), "streamforge failed: {status}\n{log}");
    log
}

#[test]
fn kafka_to_clickhouse_matches_the_oracle() {
    let _g = STACK.lock().unwrap_or_else(|e| e.into_inner());
    let case = Case::new(Shape {
        partitions: 4,
        per_partition: 15_000,
        seed: 21,
        ..Shape::default()
    });
    ok(&case.run_cmd().output().unwrap());
    case.assert_exact();
    // A second bounded run on the same state finds nothing new and changes nothing.
    ok(&case.run_cmd().output().unwrap());
    case.assert_exact();
}

#[test]
fn sigkill_at_random_moments_on_the_real_stack_stays_exact() {
    let _g = STACK.lock().unwrap_or_else(|e| e.into_inner());
    let case = Case::new(Shape {
        partitions: 3,
        per_partition: 30_000,
        seed: 5,
        ..Shape::default()
    });
    let kills = sigkill_until_done(|| case.run_cmd(), 17, 30, 3, 20_000);
    assert!(kills >= 5, "only {kills} kills landed");
    case.assert_exact();
}

#[test]
fn clickhouse_down_mid_run_loses_and_duplicates_nothing() {
    let _g = STACK.lock().unwrap_or_else(|e| e.into_inner());
    let case = Case::new(Shape {
        partitions: 3,
        per_partition: 40_000,
        seed: 8,
        ..Shape::default()
    });
    let _restore = RestoreStack;
    let log = run_with_steps(
        &case,
        vec![
            (
                When::FirstCheckpoint,
                Box::new(|| stack(&["clickhouse-stop", "--kill"])),
            ),
            // The job notices, says so, keeps the rows pending and retries.
            (
                When::Says("sink unavailable"),
                Box::new(|| stack(&["clickhouse-start"])),
            ),
        ],
    );
    assert!(log.contains("sink is accepting writes again"), "{log}");
    case.assert_exact();
}

#[test]
fn kafka_broker_restart_mid_run_loses_and_duplicates_nothing() {
    let _g = STACK.lock().unwrap_or_else(|e| e.into_inner());
    let case = Case::new(Shape {
        partitions: 3,
        per_partition: 40_000,
        seed: 9,
        ..Shape::default()
    });
    let _restore = RestoreStack;
    let log = run_with_steps(
        &case,
        vec![
            (
                When::FirstCheckpoint,
                Box::new(|| stack(&["kafka-stop", "--kill"])),
            ),
            (
                When::Says("source unavailable|broker unavailable"),
                Box::new(|| stack(&["kafka-start"])),
            ),
        ],
    );
    assert!(log.contains("reachable again"), "{log}");
    case.assert_exact();
}

/// Issue 17's "done means": a run with grouped results through Kafka into
/// ClickHouse, killed with -9 at random moments and restarted, holds per
/// (window, city, category), and per (window, city), what an independent
/// recomputation from the data set gives; the totals stay exact too.
#[test]
fn grouped_results_through_sigkills_on_the_real_stack_stay_exact() {
    let _g = STACK.lock().unwrap_or_else(|e| e.into_inner());
    let case = Case::new(Shape {
        partitions: 3,
        per_partition: 30_000,
        seed: 31,
        ..Shape::default()
    });
    let groupings = [
        "--set",
        "dimensions.groupings=[[city, category], [city]]",
        "--set",
        "dimensions.max_values_per_window=4",
    ];
    let run = || {
        let mut cmd = case.run_cmd();
        cmd.args(groupings);
        cmd
    };
    let kills = sigkill_until_done(run, 41, 30, 3, 20_000);
    assert!(kills >= 5, "only {kills} kills landed");
    case.assert_exact();
    for dims in [&["city", "category"][..], &["city"]] {
        let joined = dims.join(",");
        let mut args = vec!["results", "--sink", "clickhouse", "--group-by", &joined];
        args.extend_from_slice(&groupings);
        let out = case.cmd(&args).output().unwrap();
        ok(&out);
        assert_grouped_results(&results_lines(&out), case.data.accepted_payloads(), dims, 4);
    }
}
