use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::engine::{Engine, Verdict};
use crate::window::{WindowRow, WindowSpec};

const SPEC: WindowSpec = WindowSpec {
    size_ms: 10_000,
    slide_ms: 5_000,
    out_of_orderness_ms: 2_000,
    allowed_lateness_ms: 10_000,
};

fn u(n: u64) -> Fp {
    Fp { hi: n, lo: 7 }
}

fn groupings(max_values: u32) -> GroupingSpec {
    GroupingSpec {
        groupings: vec![
            vec![Dimension::City],
            vec![Dimension::Category],
            vec![Dimension::City, Dimension::Category],
        ],
        max_values,
    }
}

/// One accepted order as the independent model reads it.
#[derive(Debug, Clone)]
struct Order {
    t: i64,
    user: String,
    cents: u128,
    city: String,
    category: String,
}

type Figures = (u64, u128, BTreeSet<String>);
type Table = BTreeMap<(i64, Vec<Dimension>, Vec<String>), (u64, u128, u64)>;

/// The grouped results of `orders` computed from the definition in
/// docs/semantics.md alone: per window and grouping, values sorted by
/// (XXH3-64 of the values joined by 0x1f, the values), the first
/// `max_values` with rows of their own, everything else (and the value
/// `other`) in `other`.
fn model(orders: &[Order], spec: &GroupingSpec) -> Table {
    let mut per_window: BTreeMap<(i64, usize), BTreeMap<Vec<String>, Figures>> = BTreeMap::new();
    for o in orders {
        let pane = o.t.div_euclid(SPEC.slide_ms);
        for start_pane in [pane, pane - 1] {
            let start = start_pane * SPEC.slide_ms / 1000;
            for (g, dims) in spec.groupings.iter().enumerate() {
                let values: Vec<String> = dims
                    .iter()
                    .map(|d| match d {
                        Dimension::City => o.city.clone(),
                        Dimension::Category => o.category.clone(),
                    })
                    .collect();
                let f = per_window
                    .entry((start, g))
                    .or_default()
                    .entry(values)
                    .or_default();
                f.0 += 1;
                f.1 += o.cents;
                f.2.insert(o.user.clone());
            }
        }
    }
    let mut table = Table::new();
    for ((start, g), values) in per_window {
        let dims = spec.groupings[g].clone();
        let mut ranked: Vec<(u64, Vec<String>, Figures)> = Vec::new();
        let mut other: Figures = Default::default();
        for (v, f) in values {
            if v.iter().any(|x| x == "other") {
                other.0 += f.0;
                other.1 += f.1;
                other.2.extend(f.2);
                continue;
            }
            let h = xxhash_rust::xxh3::xxh3_64(v.join("\u{1f}").as_bytes());
            ranked.push((h, v, f));
        }
        ranked.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        for (i, (_, v, f)) in ranked.into_iter().enumerate() {
            if i < spec.max_values as usize {
                table.insert((start, dims.clone(), v), (f.0, f.1, f.2.len() as u64));
            } else {
                other.0 += f.0;
                other.1 += f.1;
                other.2.extend(f.2);
            }
        }
        if other.0 > 0 {
            let v = vec!["other".to_string(); dims.len()];
            table.insert((start, dims, v), (other.0, other.1, other.2.len() as u64));
        }
    }
    table
}

/// What a sink keyed by window start, grouping and values holds after
/// `rows` (highest version wins), without retractions.
fn sink_table(rows: &[WindowRow]) -> Table {
    let mut latest: BTreeMap<(i64, GroupKey), &WindowRow> = BTreeMap::new();
    for r in rows {
        let Some(g) = &r.group else { continue };
        let key = (r.window_start, g.clone());
        if latest.get(&key).is_none_or(|old| old.version <= r.version) {
            latest.insert(key, r);
        }
    }
    latest
        .into_iter()
        .filter(|(_, r)| r.order_cnt > 0)
        .map(|((s, g), r)| {
            (
                (s, g.dims, g.values),
                (r.order_cnt, r.gmv_cents, r.user_cnt),
            )
        })
        .collect()
}

fn payload(id: u64, o: &Order) -> Vec<u8> {
    let city = if o.city == "unknown" {
        String::new()
    } else {
        format!(r#","city":"{}""#, o.city)
    };
    format!(
        r#"{{"event_id":"e{id}","order_id":"o","user_id":"{}","amount":{}.{:02},"event_time":{}{city},"category":"{}"}}"#,
        o.user,
        o.cents / 100,
        o.cents % 100,
        o.t,
        o.category
    )
    .into_bytes()
}

/// A stream on `partitions` partitions: disorder within the bound, some
/// duplicates, cities from a pool with some missing and one `other`.
fn stream(seed: u64, n: u64, partitions: u64) -> Vec<(usize, u64, Order)> {
    let cities = [
        "Paris", "Lyon", "Nice", "Lille", "Metz", "Brest", "Tours", "unknown", "other",
    ];
    let categories = ["books", "toys", "food"];
    let h = |i: u64, k: u64| xxhash_rust::xxh3::xxh3_64_with_seed(&i.to_le_bytes(), seed * 31 + k);
    (0..n)
        .map(|i| {
            let p = i % partitions;
            // Every 13th event is a copy of the one before: same id, same
            // content, on another partition.
            let i = if i % 13 == 12 { i - 1 } else { i };
            let o = Order {
                t: 1_800_000_000_000 + (i as i64) * 40 - (h(i, 1) % 1_500) as i64,
                user: format!("u{}", h(i, 2) % 40),
                cents: (h(i, 3) % 10_000) as u128,
                city: cities[(h(i, 4) % cities.len() as u64) as usize].to_string(),
                category: categories[(h(i, 5) % 3) as usize].to_string(),
            };
            (p as usize, i, o)
        })
        .collect()
}

/// Runs `records` through an engine with `spec`, per-partition order kept;
/// returns the rows and the orders it accepted.
fn run(
    records: &[(usize, u64, Order)],
    partitions: usize,
    spec: &GroupingSpec,
) -> (Vec<WindowRow>, Vec<Order>) {
    let mut e = Engine::with_seed(SPEC, partitions, 11);
    e.set_groupings(spec.clone());
    let mut out = Vec::new();
    let mut accepted = Vec::new();
    for (i, (p, id, o)) in records.iter().enumerate() {
        if e.process(*p, &payload(*id, o), 0, &mut out) == Verdict::Accepted {
            accepted.push(o.clone());
        }
        if i % 16 == 15 {
            e.flush_updates(0, &mut out);
        }
    }
    e.end_of_input(0, &mut out);
    (out, accepted)
}

#[test]
fn grouped_rows_equal_an_independent_recomputation() {
    for max_values in [1, 3, 1000] {
        let spec = groupings(max_values);
        let records = stream(1, 6_000, 3);
        let (rows, accepted) = run(&records, 3, &spec);
        assert!(accepted.len() > 5_000 && accepted.len() < 6_000);
        let want = model(&accepted, &spec);
        assert_eq!(sink_table(&rows), want, "max_values {max_values}");
        let folded = want.keys().filter(|k| k.2[0] == "other").count();
        assert!(folded > 0, "the pool holds `other`");
        // Each window's totals row is there, with the grouped rows summing to it.
        for r in rows.iter().filter(|r| r.group.is_none()) {
            for dims in &spec.groupings {
                let sum: u64 = want
                    .iter()
                    .filter(|(k, _)| k.0 == r.window_start && k.1 == *dims)
                    .map(|(_, v)| v.0)
                    .sum();
                assert_eq!(sum, r.order_cnt, "window {} {dims:?}", r.window_start);
            }
        }
    }
}

#[test]
fn the_folding_does_not_depend_on_how_partitions_interleave() {
    let spec = groupings(2);
    let records = stream(2, 3_000, 3);
    let (rows, _) = run(&records, 3, &spec);
    // Partition 2 first, then 0, then 1: every partition in its own order.
    let mut reordered: Vec<_> = records.iter().filter(|r| r.0 == 2).cloned().collect();
    reordered.extend(records.iter().filter(|r| r.0 == 0).cloned());
    reordered.extend(records.iter().filter(|r| r.0 == 1).cloned());
    let (again, _) = run(&reordered, 3, &spec);
    assert_eq!(sink_table(&again), sink_table(&rows));
}

#[test]
fn a_late_value_that_pushes_one_out_retracts_its_row() {
    let spec = GroupingSpec {
        groupings: vec![vec![Dimension::City]],
        max_values: 1,
    };
    // Two cities in fold order: `first` comes before `second`.
    let mut cities = ["Paris", "Lyon"];
    cities.sort_by_key(|c| (fold_hash(&[*c]), *c));
    let [first, second] = cities;
    let order = |t: i64, city: &str| Order {
        t,
        user: "u1".into(),
        cents: 100,
        city: city.into(),
        category: "books".into(),
    };
    let mut e = Engine::with_seed(SPEC, 1, 1);
    e.set_groupings(spec.clone());
    let mut out = Vec::new();
    let t0 = 1_800_000_000_000;
    e.process(0, &payload(1, &order(t0 + 1_000, second)), 0, &mut out);
    // The watermark passes the window [t0, t0 + 10 s): it fires with `second`.
    e.process(0, &payload(2, &order(t0 + 13_000, second)), 0, &mut out);
    let fired: Vec<_> = out
        .iter()
        .filter(|r| r.window_start * 1000 == t0)
        .cloned()
        .collect();
    assert_eq!(fired.len(), 2, "{fired:?}");
    // Within the allowed lateness, `first` arrives: it takes the one place.
    e.process(0, &payload(3, &order(t0 + 2_000, first)), 0, &mut out);
    e.flush_updates(0, &mut out);
    let again: Vec<_> = out
        .iter()
        .filter(|r| r.window_start * 1000 == t0 && r.version == 2)
        .collect();
    let by_city = |city: &str| {
        again
            .iter()
            .find(|r| r.group.as_ref().is_some_and(|g| g.values[0] == city))
            .map(|r| r.order_cnt)
    };
    assert_eq!(by_city(first), Some(1));
    assert_eq!(by_city(second), Some(0), "retracted: {again:?}");
    assert_eq!(by_city(OTHER), Some(1));
    e.end_of_input(0, &mut out);
    let accepted = vec![
        order(t0 + 1_000, second),
        order(t0 + 13_000, second),
        order(t0 + 2_000, first),
    ];
    assert_eq!(sink_table(&out), model(&accepted, &spec));
}

#[test]
fn a_pane_keeps_the_first_values_in_fold_order_whatever_the_arrival_order() {
    let values: Vec<String> = (0..30).map(|i| format!("c{i}")).collect();
    let fill = |order: &mut dyn Iterator<Item = usize>| {
        let mut pane = GroupPane::default();
        for i in order {
            pane.add(&[values[i].as_str()], u(i as u64 % 7), 10, 5, false);
        }
        let mut kept: Vec<(u64, Vec<String>, u64)> = pane
            .iter()
            .map(|(h, c)| (h, c.values.clone(), c.order_cnt))
            .collect();
        kept.sort();
        (kept, pane.other.order_cnt, pane.other.users.len())
    };
    let forward = fill(&mut (0..30).chain(0..30));
    let backward = fill(&mut (0..30).rev().chain(0..30));
    assert_eq!(forward, backward);
    assert_eq!(forward.0.len(), 5);
    assert_eq!(forward.1, 50);
    let mut ranked: Vec<(u64, String)> = values
        .iter()
        .map(|v| (fold_hash(&[v]), v.clone()))
        .collect();
    ranked.sort();
    let first: Vec<String> = ranked[..5].iter().map(|r| r.1.clone()).collect();
    let kept: Vec<String> = forward.0.iter().map(|k| k.1[0].clone()).collect();
    assert_eq!(kept, first);
}

#[test]
fn groupings_are_validated() {
    assert!(groupings(10).validate().is_ok());
    let twice = GroupingSpec {
        groupings: vec![vec![Dimension::City], vec![Dimension::City]],
        max_values: 10,
    };
    assert!(twice.validate().is_err());
    let repeated = GroupingSpec {
        groupings: vec![vec![Dimension::City, Dimension::City]],
        max_values: 10,
    };
    assert!(repeated.validate().is_err());
    assert!(groupings(0).validate().is_err());
}

#[test]
fn a_result_line_has_the_dimension_fields() {
    let key = GroupKey {
        dims: vec![Dimension::City, Dimension::Category],
        values: vec!["Pa\"ris".into(), "books".into()],
    };
    assert_eq!(
        key.json_fields(),
        r#", "city": "Pa\"ris", "category": "books""#
    );
}

mod checkpoints {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// A base and deltas of the grouped state restore to the live
        /// state, and the restored engine goes on to the same rows.
        #[test]
        fn a_chain_restores_the_grouped_state(
            split in 1usize..400,
            every in 1usize..60,
            max_values in 1u32..4,
        ) {
            let spec = groupings(max_values);
            let records = stream(3, 500, 2);
            let mut live = Engine::with_seed(SPEC, 2, 3);
            live.set_groupings(spec.clone());
            live.track_changes();
            let base = live.snapshot();
            let mut deltas = Vec::new();
            let mut replica = Engine::empty_for(&live.take_delta());
            replica.apply_delta(&live.take_delta()).unwrap();
            let mut out = Vec::new();
            for (i, (p, id, o)) in records[..split].iter().enumerate() {
                live.process(*p, &payload(*id, o), 0, &mut out);
                live.flush_updates(0, &mut out);
                if i % every == 0 {
                    let d = live.take_delta();
                    replica.apply_delta(&d).unwrap();
                    deltas.push(d);
                }
            }
            let d = live.take_delta();
            replica.apply_delta(&d).unwrap();
            deltas.push(d);
            let restored = Engine::restore_chain(SPEC, 2, &base, &deltas).unwrap();
            prop_assert_eq!(restored.snapshot().groups, live.snapshot().groups.clone());
            prop_assert_eq!(replica.snapshot().groups, live.snapshot().groups);
            let mut rest = restored;
            let (mut a, mut b) = (Vec::new(), Vec::new());
            for (p, id, o) in &records[split..] {
                live.process(*p, &payload(*id, o), 0, &mut a);
                rest.process(*p, &payload(*id, o), 0, &mut b);
            }
            live.end_of_input(0, &mut a);
            rest.end_of_input(0, &mut b);
            prop_assert_eq!(a, b);
        }
    }
}
