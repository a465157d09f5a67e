//! The simulator's own guarantees: its model is independent of the code it
//! checks, a clean schedule passes, and a divergence planted in what the job
//! wrote is caught.

use std::path::PathBuf;

use streamforge_sim::checks;
use streamforge_sim::gen::generate;
use streamforge_sim::model::{Fate, Model};
use streamforge_sim::runner::run_plan;
use streamforge_sim::world::Log;

fn source(file: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("src")
        .join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The lines of `text` outside comments.
fn code(text: &str) -> String {
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_model_uses_none_of_the_products_processing_code() {
    // The model works out fates and windows from the plan alone: it must not
    // name the product at all, so it cannot call its window, watermark or
    // dedup code.
    let model = code(&source("model.rs"));
    assert!(
        !model.contains("streamforge"),
        "sim/src/model.rs uses the product's code"
    );
    // The checks compare with the model; of the product they may use only
    // data types (rows, counters, a checkpoint) and the anomaly log reader.
    let checks = code(&source("checks.rs")).replace("WindowRow", "");
    for processing in ["Engine", "Windows", "Watermarks", "Dedup", "apply("] {
        assert!(
            !checks.contains(processing),
            "sim/src/checks.rs names the product's {processing}"
        );
    }
}

#[test]
fn the_models_windows_count_each_accepted_event_once_per_window_it_falls_in() {
    for seed in 1..=20 {
        let plan = generate(seed);
        let model = Model::new(&plan, &Log::from_plan(&plan));
        let accepted: u64 = model
            .fates
            .iter()
            .flatten()
            .filter(|f| **f == Fate::Accepted)
            .count() as u64;
        let orders: u64 = model
            .windows(|_, _| true)
            .values()
            .map(|w| w.order_cnt)
            .sum();
        let per_event = plan.settings.panes_per_window() as u64;
        assert_eq!(orders, accepted * per_event, "seed {seed}");
    }
}

fn scratch(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("streamforge-sim-test-{}-{tag}", std::process::id()))
}

#[test]
fn a_wrong_sink_row_is_a_divergence() {
    let dir = scratch("wrong-row");
    // A seed whose final run produced rows (most do; look for one).
    let (plan, table) = (1..=50)
        .find_map(|seed| {
            let plan = generate(seed);
            let out = run_plan(&plan, &dir);
            assert!(
                out.divergences.is_empty(),
                "seed {seed}: {:?}",
                out.divergences
            );
            out.final_table.filter(|t| !t.is_empty()).map(|t| (plan, t))
        })
        .expect("a schedule with rows among the first 50 seeds");
    let _ = std::fs::remove_dir_all(&dir);
    let model = Model::new(&plan, &Log::from_plan(&plan));
    assert_eq!(
        checks::final_rows(&model, &table),
        None,
        "the job's own rows pass"
    );

    let first = *table.keys().next().expect("a row");
    let mut cents = table.clone();
    cents.get_mut(&first).expect("the row").gmv_cents += 1;
    let found = checks::final_rows(&model, &cents).expect("one cent more is caught");
    assert!(found.contains(&format!("window {first}")), "{found}");

    let mut lost = table.clone();
    lost.remove(&first);
    let found = checks::final_rows(&model, &lost).expect("a lost row is caught");
    assert!(found.contains("missing"), "{found}");

    let mut extra = table.clone();
    let mut row = table[&first].clone();
    row.window_start = first - 86_400 * 365;
    extra.insert(row.window_start, row);
    let found = checks::final_rows(&model, &extra).expect("an extra row is caught");
    assert!(found.contains("unexpected"), "{found}");

    let mut users = table;
    users.get_mut(&first).expect("the row").user_cnt += 1;
    assert!(
        checks::final_rows(&model, &users).is_some(),
        "one user more is caught"
    );
}

#[test]
fn a_schedule_is_the_same_from_the_same_seed() {
    for seed in [3, 77, 1234] {
        assert_eq!(generate(seed), generate(seed), "seed {seed}");
    }
    let dir = scratch("same");
    let a = run_plan(&generate(42), &dir);
    let b = run_plan(&generate(42), &dir);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!((a.runs, a.crashes, a.steps), (b.runs, b.crashes, b.steps));
    assert_eq!(a.final_table, b.final_table);
}
