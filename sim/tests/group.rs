//! Group schedules (issue 16): they run clean on the product as it is, and
//! their checks fail when the partial table or the anomaly logs are wrong.

use std::path::PathBuf;

use streamforge_sim::campaign;
use streamforge_sim::gen::generate;
use streamforge_sim::group::check;
use streamforge_sim::group::gen::is_group_seed;
use streamforge_sim::group::table::PartialTable;
use streamforge_sim::model::Model;
use streamforge_sim::runner::run_plan;
use streamforge_sim::world::Log;

fn scratch(tag: &str) -> PathBuf {
    campaign::scratch_dir(&format!("test-group-{tag}"))
}

#[test]
fn group_schedules_run_clean_and_the_same_twice() {
    let dir = scratch("clean");
    let seeds: Vec<u64> = (0..120).filter(|s| is_group_seed(*s)).collect();
    assert_eq!(seeds.len(), 24);
    let mut runs = 0;
    for seed in seeds {
        let plan = generate(seed);
        assert!(plan.group.is_some(), "seed {seed}");
        let a = run_plan(&plan, &dir);
        assert!(a.divergences.is_empty(), "seed {seed}: {:?}", a.divergences);
        let b = run_plan(&plan, &dir);
        assert_eq!((a.runs, a.crashes, a.steps), (b.runs, b.crashes, b.steps));
        runs += a.runs;
    }
    // Several owners per partition, and a final run each.
    assert!(runs > 24 * 4, "{runs} runs");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The partial rows the model gives, then one wrong: a stale row that
/// replaced a newer one, a window missing, an anomaly log lost.
#[test]
fn the_group_checks_catch_a_wrong_table_and_a_lost_anomaly_log() {
    let seed = (1000..).find(|s| is_group_seed(*s)).unwrap();
    let plan = generate(seed);
    let log = Log::from_plan(&plan);
    let model = Model::new(&plan, &log);
    let n = plan.partitions.len();
    let dir = scratch("checks");
    let outcome = run_plan(&plan, &dir);
    assert!(outcome.divergences.is_empty(), "{:?}", outcome.divergences);

    let mut table = PartialTable::default();
    for p in 0..n {
        for (start, f) in model.windows(|q, _| q == p) {
            table.land(
                p as u32,
                row(start, 100, f.order_cnt, f.gmv_cents, f.users.len() as u64),
            );
        }
    }
    assert_eq!(check::partial_rows(&model, n, &table), Vec::<String>::new());

    let ((start, p), newest) = table
        .rows
        .iter()
        .next()
        .map(|(k, r)| (*k, r.clone()))
        .unwrap();
    let mut stale = table_clone(&table);
    stale.rows.insert(
        (start, p),
        row(
            start,
            99,
            newest.order_cnt - 1,
            newest.gmv_cents,
            newest.user_cnt,
        ),
    );
    let found = check::partial_rows(&model, n, &stale);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found[0].starts_with(&format!("partial rows of partition {p} differ")));
    assert!(found[1].starts_with("combined windows"));

    let mut missing = table_clone(&table);
    missing.rows.remove(&(start, p));
    assert_eq!(check::partial_rows(&model, n, &missing).len(), 2);

    // Every instance's logs of the run: their union is the model's; without
    // any of them, anomalies are missing (when the data has some).
    let logs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .map(|f| f.unwrap().path())
        .filter(|f| f.to_string_lossy().contains("anomalies.log.partition-"))
        .collect();
    assert_eq!(check::anomaly_union(&model, &logs), None);
    if !model.anomalies.is_empty() {
        let union = check::anomaly_union(&model, &[]).expect("caught");
        assert!(union.contains("missing"), "{union}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn table_clone(t: &PartialTable) -> PartialTable {
    let mut c = PartialTable::default();
    c.rows = t.rows.clone();
    c
}

fn row(
    start: i64,
    version: u64,
    orders: u64,
    cents: u128,
    users: u64,
) -> streamforge::window::WindowRow {
    streamforge::window::WindowRow {
        window_start: start,
        window_end: start + 60,
        order_cnt: orders,
        gmv_cents: cents,
        user_cnt: users,
        version,
        updated_at: 0,
        group: None,
        users: None,
    }
}
