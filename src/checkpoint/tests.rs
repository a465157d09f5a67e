//! The checkpoint store: layout, retention, bases and deltas, recovery
//! with damaged checkpoints, crash points. Every state recovered is
//! compared with a snapshot of the live engine taken when the checkpoint
//! was (an independent copy, not derived from the deltas).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use super::*;
use crate::engine::Engine;
use crate::window::WindowSpec;

const SPEC: WindowSpec = WindowSpec::DEFAULT;

pub(super) fn checkpoint(id: u64) -> Checkpoint {
    Checkpoint {
        id,
        created_ms: 1,
        source_id: "test".into(),
        offsets: [(0, id * 10)].into_iter().collect(),
        anomaly_log_len: id,
        engine: Engine::with_seed(SPEC, 1, 1).snapshot(),
        pending: vec![],
        source_identity: None,
        bounded_end: None,
    }
}

/// The checkpoint `id` of `engine`'s changes, as the job hands it over.
pub(super) fn delta(engine: &mut Engine, id: u64) -> Delta {
    Delta {
        checkpoint: checkpoint(id).map_engine(|_| engine.take_delta()),
        live_entries: engine.live_entries(),
    }
}

/// A fresh engine that tracks its changes.
pub(super) fn tracked(spec: WindowSpec, partitions: usize) -> Engine {
    let mut engine = Engine::with_seed(spec, partitions, 5);
    engine.track_changes();
    engine
}

/// Order `i` of a stream over `partitions` partitions: ids repeat (some
/// within a window: duplicates; some two windows on: distinct events under
/// the dedup rule), users repeat, event times move forward with disorder.
pub(super) fn order(i: u64, step_ms: i64) -> (usize, Vec<u8>) {
    let partitions = 3;
    let t = 1_800_000_000_000 + i as i64 * step_ms - ((i * 7919) % 5) as i64 * step_ms;
    let id = if i.is_multiple_of(11) { i / 3 } else { i };
    let payload = format!(
        r#"{{"event_id":"e{id}","order_id":"o","user_id":"u{}","amount":"1.25","event_time":{t}}}"#,
        (i * 31) % 997
    );
    ((i % partitions) as usize, payload.into_bytes())
}

pub(super) fn feed(engine: &mut Engine, from: u64, to: u64, step_ms: i64) {
    let mut out = Vec::new();
    for i in from..to {
        let (p, payload) = order(i, step_ms);
        engine.process(p, &payload, 0, &mut out);
    }
    engine.flush_updates(0, &mut out);
}

#[test]
fn keeps_the_newest_n() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = CheckpointStore::open(dir.path(), 3).unwrap();
    for id in 1..=5 {
        store.commit(&checkpoint(id)).unwrap();
    }
    assert_eq!(store.ids().unwrap(), vec![3, 4, 5]);
    assert_eq!(store.load_latest().unwrap().0.unwrap().id, 5);
}

#[test]
fn a_corrupt_newest_checkpoint_falls_back_to_the_previous_one() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = CheckpointStore::open(dir.path(), 3).unwrap();
        for id in 1..=3 {
            store.commit(&checkpoint(id)).unwrap();
        }
        store.corrupt(3).unwrap();
    }
    let store = CheckpointStore::open(dir.path(), 3).unwrap();
    let (latest, skipped) = store.load_latest().unwrap();
    assert_eq!(latest.unwrap(), checkpoint(2));
    assert_eq!(skipped.len(), 1);
    assert!(matches!(skipped[0], CheckpointError::Corrupt { id: 3, .. }));
}

/// A checkpoint of about `kib` KiB (its pending rows make the size).
fn big_checkpoint(id: u64, kib: usize) -> Checkpoint {
    let row = |i: usize| crate::window::WindowRow {
        users: None,
        window_start: i as i64 * 30,
        window_end: i as i64 * 30 + 60,
        order_cnt: id * 1_000_003 + i as u64,
        gmv_cents: (id as u128) << 70 | i as u128,
        user_cnt: i as u64 * 7919,
        version: id,
        updated_at: 1_764_064_800,
        group: None,
    };
    Checkpoint {
        pending: vec![PendingBatch {
            checkpoint_id: id,
            rows: (0..kib * 1024 / 40).map(row).collect(),
        }],
        ..checkpoint(id)
    }
}

fn stored(cp: &Checkpoint) -> StoredCheckpoint {
    cp.clone().map_engine(Stored::Base)
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| {
            let m = e.metadata().unwrap();
            if m.is_dir() {
                dir_bytes(&e.path())
            } else {
                m.len()
            }
        })
        .sum()
}

#[test]
fn a_big_checkpoint_is_stored_in_pieces_and_read_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = CheckpointStore::open(dir.path(), 3).unwrap();
    let cp = big_checkpoint(1, 300);
    let frame = codec::encode(&stored(&cp)).unwrap();
    assert!(frame.len() > 250 * 1024, "{}", frame.len());
    assert_eq!(store.commit(&cp).unwrap(), frame.len());
    let values: Vec<usize> = store
        .sled()
        .iter()
        .values()
        .map(|v| v.unwrap().len())
        .collect();
    assert_eq!(values.len(), frame.len().div_ceil(CHUNK_BYTES));
    assert!(values.iter().all(|n| *n <= CHUNK_BYTES));
    assert_eq!(store.raw(1).unwrap(), frame);
    assert_eq!(store.ids().unwrap(), vec![1]);
    assert_eq!(store.load(1).unwrap(), cp);
    // Damage in any piece is caught.
    store.corrupt(1).unwrap();
    assert!(matches!(
        store.load(1),
        Err(CheckpointError::Corrupt { id: 1, .. })
    ));
}

#[test]
fn big_checkpoints_do_not_fill_the_disk() {
    // With one sled value per checkpoint, sled kept a blob file of every
    // checkpoint ever committed: 80 checkpoints of 1 MiB left 80 MiB.
    let dir = tempfile::tempdir().unwrap();
    let mut store = CheckpointStore::open(dir.path(), 3).unwrap();
    let size = codec::encode(&stored(&big_checkpoint(1, 1024)))
        .unwrap()
        .len() as u64;
    for id in 1..=80 {
        store.commit(&big_checkpoint(id, 1024)).unwrap();
    }
    assert_eq!(store.ids().unwrap(), vec![78, 79, 80]);
    assert_eq!(store.load(80).unwrap(), big_checkpoint(80, 1024));
    let blobs = std::fs::read_dir(dir.path().join("checkpoints/blobs"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(blobs, 0, "sled stored nodes as blob files");
    let used = dir_bytes(dir.path());
    assert!(
        used < 30 * size,
        "{used} bytes on disk for 3 live checkpoints of {size} bytes"
    );
}

#[test]
fn a_state_directory_of_the_older_layout_is_read_and_cleaned() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = CheckpointStore::open(dir.path(), 2).unwrap();
    // Before pieces (and before deltas): the whole frame under the id alone.
    for id in 1..=2 {
        let frame = super::legacy::frame_v2(&checkpoint(id));
        store.sled().insert(id.to_be_bytes(), frame).unwrap();
    }
    assert_eq!(store.ids().unwrap(), vec![1, 2]);
    assert_eq!(store.load_latest().unwrap().0.unwrap(), checkpoint(2));
    store.commit(&checkpoint(3)).unwrap();
    store.commit(&checkpoint(4)).unwrap();
    assert_eq!(store.ids().unwrap(), vec![3, 4]);
    assert_eq!(store.sled().len(), 2);
}

#[test]
fn an_unfinished_sled_snapshot_does_not_make_the_store_unreadable() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = CheckpointStore::open(dir.path(), 3).unwrap();
        store.commit(&checkpoint(1)).unwrap();
    }
    // What an open interrupted by a crash or a full disk leaves behind.
    let leftover = dir
        .path()
        .join("checkpoints/snap.7FFFFFFFFFFFFFFF.generating");
    std::fs::write(&leftover, b"").unwrap();
    let store = CheckpointStore::open(dir.path(), 3).unwrap();
    assert!(!leftover.exists());
    assert_eq!(store.load_latest().unwrap().0.unwrap(), checkpoint(1));
    // A store in use is left alone.
    std::fs::write(&leftover, b"").unwrap();
    assert!(
        store::remove_unfinished_snapshots(&dir.path().join("checkpoints"))
            .unwrap()
            .is_empty()
    );
    assert!(leftover.exists());
}

#[test]
fn survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = CheckpointStore::open(dir.path(), 2).unwrap();
        store.commit(&checkpoint(7)).unwrap();
    }
    let store = CheckpointStore::open(dir.path(), 2).unwrap();
    assert_eq!(store.load(7).unwrap(), checkpoint(7));
}

/// Commits checkpoints `ids` of a stream fed `per` orders between them;
/// returns the live engine's whole snapshot at each.
fn run_deltas(
    store: &mut CheckpointStore,
    engine: &mut Engine,
    ids: std::ops::RangeInclusive<u64>,
    per: u64,
) -> BTreeMap<u64, EngineSnapshot> {
    let mut live = BTreeMap::new();
    for id in ids {
        feed(engine, id * per, (id + 1) * per, 40);
        live.insert(id, engine.snapshot());
        store.commit_delta(delta(engine, id)).unwrap();
    }
    live
}

#[test]
fn every_checkpoint_restores_exactly_the_live_state_it_was_taken_from() {
    let kv = kv::MemoryKv::new();
    let mut store = CheckpointStore::in_memory(kv.clone(), 3);
    store.set_compaction(5, 0);
    let mut engine = tracked(SPEC, 3);
    let live = run_deltas(&mut store, &mut engine, 1..=23, 700);
    let infos = store.list().unwrap();
    let kinds: Vec<String> = infos
        .iter()
        .map(|i| i.status.as_ref().unwrap().kind.clone())
        .collect();
    assert!(kinds.iter().any(|k| k == "base"), "{kinds:?}");
    assert!(kinds.iter().any(|k| k.starts_with("delta")), "{kinds:?}");
    for id in store.ids().unwrap() {
        assert_eq!(store.load(id).unwrap().engine, live[&id], "checkpoint {id}");
    }
    // A restart restores the live state of the newest, and goes on from it
    // exactly as the live engine does.
    let mut store = CheckpointStore::in_memory(kv.clone(), 3);
    let (recovered, skipped) = store.recover().unwrap();
    let recovered = recovered.unwrap();
    assert!(skipped.is_empty());
    assert_eq!(recovered.id, 23);
    let chain = &recovered.engine;
    let mut restored = Engine::restore_chain(SPEC, 3, &chain.base, &chain.deltas).unwrap();
    assert_eq!(restored.snapshot(), live[&23]);
    restored.track_changes();
    drop(recovered);
    let more = run_deltas(&mut store, &mut restored, 24..=30, 700);
    assert_eq!(more, go_on(&mut engine, 24..=30, 700));
    assert_eq!(store.load(30).unwrap().engine, more[&30]);
}

/// What [`run_deltas`] records, without committing.
fn go_on(
    engine: &mut Engine,
    ids: std::ops::RangeInclusive<u64>,
    per: u64,
) -> BTreeMap<u64, EngineSnapshot> {
    let mut live = BTreeMap::new();
    for id in ids {
        feed(engine, id * per, (id + 1) * per, 40);
        engine.take_delta();
        live.insert(id, engine.snapshot());
    }
    live
}

#[test]
fn bytes_written_follow_what_changed() {
    let mut store = CheckpointStore::in_memory(kv::MemoryKv::new(), 3);
    let mut engine = tracked(SPEC, 3);
    // A state of ~60k entries, then checkpoints after few and no changes.
    feed(&mut engine, 0, 40_000, 5);
    let first = store.commit_delta(delta(&mut engine, 1)).unwrap();
    assert!(first.base, "{first:?}");
    feed(&mut engine, 40_000, 40_100, 5);
    let small = store.commit_delta(delta(&mut engine, 2)).unwrap();
    assert!(!small.base, "{small:?}");
    assert!(small.changes <= 200, "{small:?}");
    assert!(small.bytes < 200 * 24 + 1024, "{small:?}");
    assert!(small.bytes * 50 < first.bytes, "{small:?} {first:?}");
    let none = store.commit_delta(delta(&mut engine, 3)).unwrap();
    assert_eq!(none.changes, 0);
    assert!(none.bytes < 1024, "{none:?}");
}

/// User entries and dedup ids of the live engine.
fn live_entries(engine: &Engine) -> usize {
    let (_, users, ids) = engine.state_stats();
    users + ids
}

#[test]
fn a_chain_is_rewritten_as_a_base_once_it_replays_more_than_twice_the_state() {
    let mut store = CheckpointStore::in_memory(kv::MemoryKv::new(), 3);
    store.set_compaction(usize::MAX, 0);
    let mut engine = tracked(SPEC, 3);
    // A fresh store's first checkpoint is a base (here an empty one).
    assert!(store.commit_delta(delta(&mut engine, 1)).unwrap().base);
    // A state that only grew: its chain replays what a base would hold.
    feed(&mut engine, 0, 10_000, 5);
    let grown = store.commit_delta(delta(&mut engine, 2)).unwrap();
    assert!(grown.changes >= 10_000, "{grown:?}");
    assert!(!grown.base, "{grown:?}");
    // Then panes expire as event time moves on: the chain is rewritten
    // exactly when it replays more than twice the live state.
    let (mut base_entries, mut replayed, mut bases) = (0, grown.changes, 0);
    for id in 3..60 {
        feed(
            &mut engine,
            id * 1_000 + 10_000,
            (id + 1) * 1_000 + 10_000,
            5,
        );
        let written = store.commit_delta(delta(&mut engine, id)).unwrap();
        let live = live_entries(&engine);
        let expected = base_entries + replayed + written.changes > 2 * live;
        assert_eq!(
            written.base, expected,
            "checkpoint {id}: {written:?}, live {live}"
        );
        if written.base {
            // The chain before is kept whole, as the fallback.
            assert!(store.ids().unwrap().contains(&(id - 1)));
            (base_entries, replayed, bases) = (live, 0, bases + 1);
        } else {
            replayed += written.changes;
        }
    }
    assert!(bases >= 2, "never compacted");
}

/// Ids and kinds (`b`ase or `d`elta) of the store's checkpoints.
fn layout(store: &CheckpointStore) -> Vec<(u64, char)> {
    store
        .list()
        .unwrap()
        .into_iter()
        .map(|i| {
            let kind = match &i.status {
                Ok(s) if s.kind == "base" => 'b',
                Ok(_) => 'd',
                Err(_) => '!',
            };
            (i.id, kind)
        })
        .collect()
}

#[test]
fn retention_keeps_the_current_and_previous_chains_whole() {
    let mut store = CheckpointStore::in_memory(kv::MemoryKv::new(), 2);
    store.set_compaction(3, usize::MAX);
    let mut engine = tracked(SPEC, 3);
    run_deltas(&mut store, &mut engine, 1..=8, 300);
    // Chains [1, 2, 3], [4, 5, 6], [7, 8]: the first one is dropped.
    assert_eq!(
        layout(&store),
        vec![(4, 'b'), (5, 'd'), (6, 'd'), (7, 'b'), (8, 'd')]
    );
    // Chains of one: at least `keep` (2) checkpoints, and two chains.
    store.set_compaction(1, usize::MAX);
    run_deltas(&mut store, &mut engine, 9..=11, 300);
    assert_eq!(layout(&store), vec![(10, 'b'), (11, 'b')]);
}

#[test]
fn a_damaged_delta_falls_back_to_the_one_before_and_a_damaged_base_to_the_chain_before() {
    let kv = kv::MemoryKv::new();
    let mut store = CheckpointStore::in_memory(kv.clone(), 2);
    store.set_compaction(4, usize::MAX);
    let mut engine = tracked(SPEC, 3);
    let live = run_deltas(&mut store, &mut engine, 1..=6, 500);
    assert_eq!(layout(&store)[4..], [(5, 'b'), (6, 'd')]);
    // The newest, a delta: back to the base before it.
    assert!(kv.corrupt_last(17));
    let (latest, skipped) = store.load_latest().unwrap();
    assert_eq!(latest.unwrap().engine, live[&5]);
    assert!(matches!(
        skipped[..],
        [CheckpointError::Corrupt { id: 6, .. }]
    ));
    // The base too: back to the end of the chain before.
    store.corrupt(5).unwrap();
    let (latest, skipped) = store.load_latest().unwrap();
    assert_eq!(latest.unwrap().engine, live[&4]);
    let reasons: Vec<String> = skipped.iter().map(|e| e.to_string()).collect();
    assert!(
        reasons[0].contains("checkpoint 6 is corrupt"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].contains("checkpoint 5 is corrupt"),
        "{reasons:?}"
    );
    // Going on from 4 replaces 5 and 6.
    let mut store = CheckpointStore::in_memory(kv.clone(), 2);
    let recovered = store.recover().unwrap().0.unwrap();
    assert_eq!(recovered.id, 4);
    let chain = &recovered.engine;
    let mut engine = Engine::restore_chain(SPEC, 3, &chain.base, &chain.deltas).unwrap();
    engine.track_changes();
    let live = run_deltas(&mut store, &mut engine, 5..=5, 500);
    assert!(layout(&store).iter().all(|(id, k)| *id <= 5 && *k != '!'));
    assert_eq!(store.load_latest().unwrap().0.unwrap().engine, live[&5]);
}

#[test]
fn a_delta_never_applies_to_another_checkpoint_stored_under_its_parent_id() {
    let kv = kv::MemoryKv::new();
    let mut store = CheckpointStore::in_memory(kv.clone(), 3);
    let mut engine = tracked(SPEC, 3);
    run_deltas(&mut store, &mut engine, 1..=3, 400);
    // Checkpoint 2 replaced by another one (as if a run had gone on from 1
    // differently), while 3, taken after the old 2, stayed.
    let old_2 = store.raw(2).unwrap();
    let mut other = tracked(SPEC, 3);
    feed(&mut other, 0, 100, 40);
    let other_2 = delta(&mut other, 2).checkpoint.map_engine(|d| {
        Stored::Delta(
            Link {
                base: 1,
                parent: 1,
                parent_crc: codec::frame_crc(&store.raw(1).unwrap()),
            },
            d,
        )
    });
    let frame = codec::encode(&other_2).unwrap();
    assert_ne!(frame, old_2);
    let mut batch: Vec<kv::Op> = store
        .keys_of(2)
        .unwrap()
        .into_iter()
        .map(kv::Op::Remove)
        .collect();
    batch.push(kv::Op::Insert(store::chunk_key(2, 0).to_vec(), frame));
    store.db.apply(batch).unwrap();
    let (latest, skipped) = store.load_latest().unwrap();
    assert_eq!(latest.unwrap().id, 2);
    assert!(
        skipped[0]
            .to_string()
            .contains("is not the checkpoint it was taken after"),
        "{skipped:?}"
    );
}

#[test]
fn a_format_2_state_directory_goes_on_with_deltas() {
    let kv = kv::MemoryKv::new();
    let mut engine = tracked(SPEC, 3);
    feed(&mut engine, 0, 2_000, 40);
    let whole = Checkpoint {
        engine: engine.snapshot(),
        ..checkpoint(4)
    };
    let frame = super::legacy::frame_v2(&whole);
    let db = store::CheckpointStore::in_memory(kv.clone(), 3);
    db.db
        .apply(vec![kv::Op::Insert(store::chunk_key(4, 0).to_vec(), frame)])
        .unwrap();
    let mut store = CheckpointStore::in_memory(kv.clone(), 3);
    let recovered = store.recover().unwrap().0.unwrap();
    assert_eq!(recovered.engine.base, whole.engine);
    let chain = recovered.engine.clone();
    let mut restored = Engine::restore_chain(SPEC, 3, &chain.base, &chain.deltas).unwrap();
    restored.track_changes();
    drop(recovered);
    let live = run_deltas(&mut store, &mut restored, 5..=6, 300);
    assert_eq!(layout(&store), vec![(4, 'b'), (5, 'd'), (6, 'd')]);
    assert_eq!(store.load(6).unwrap().engine, live[&6]);
    assert_eq!(go_on(&mut engine, 5..=6, 300), live);
}

/// Frames an earlier build wrote (format 2, whole states: the fuzz seeds
/// of that format) are read as bases.
#[test]
fn frames_of_format_2_written_by_an_earlier_build_are_read_as_bases() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/checkpoint_decode");
    for (name, id) in [
        ("v2-empty", 1),
        ("v2-open_panes", 2),
        ("v2-fired_and_pending", 3),
    ] {
        let raw = std::fs::read(dir.join(format!("{name}.frame"))).unwrap();
        assert_eq!(u16::from_be_bytes([raw[4], raw[5]]), codec::FORMAT_WHOLE);
        let frame = read::decode_frame(id, &raw).unwrap();
        let Stored::Base(state) = &frame.checkpoint.engine else {
            panic!("{name}: not a base");
        };
        Engine::restore(SPEC, state.clocks.len(), state.clone()).unwrap();
        assert_eq!(frame.checkpoint.pending.is_empty(), id != 3, "{name}");
    }
}

#[test]
fn a_checkpoint_of_an_unknown_format_says_what_to_do() {
    let frame = codec::encode_as(9, &checkpoint(1)).unwrap();
    let kv = kv::MemoryKv::new();
    let store = CheckpointStore::in_memory(kv, 3);
    store
        .db
        .apply(vec![kv::Op::Insert(store::chunk_key(1, 0).to_vec(), frame)])
        .unwrap();
    let (latest, skipped) = store.load_latest().unwrap();
    assert!(latest.is_none());
    let message = skipped[0].to_string();
    assert!(
        message.contains("unsupported checkpoint format 9"),
        "{message}"
    );
    assert!(message.contains("newer StreamForge"), "{message}");
}

/// Random runs of a job against the in-memory store: orders processed,
/// checkpoints committed, the process killed at the crash points of a
/// commit or a compaction (with or without what was not flushed), the
/// newest checkpoint damaged, restarts. After every restart the state
/// recovered must be exactly the live state of the checkpoint it came from,
/// and that checkpoint the newest one durable (the one before it, when the
/// newest was damaged).
mod crashes {
    use super::*;
    use proptest::prelude::*;
    use std::cell::Cell;
    use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

    const POINTS: [&str; 6] = [
        "checkpoint::commit::before_write",
        "checkpoint::commit::before_flush",
        "checkpoint::commit::after_flush",
        "checkpoint::compact::before_write",
        "checkpoint::compact::before_flush",
        "checkpoint::compact::after_flush",
    ];

    const SMALL: WindowSpec = WindowSpec {
        size_ms: 4_000,
        slide_ms: 2_000,
        out_of_orderness_ms: 1_000,
        allowed_lateness_ms: 2_000,
    };

    struct Crash;

    thread_local! {
        static ARMED: Cell<Option<&'static str>> = const { Cell::new(None) };
    }

    fn hook(name: &str) {
        if ARMED.with(|a| a.get()) == Some(name) {
            ARMED.with(|a| a.set(None));
            resume_unwind(Box::new(Crash));
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Process(u64),
        Checkpoint(Option<(usize, bool)>),
        Corrupt(usize),
        Restart,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (1u64..400).prop_map(Op::Process),
            4 => proptest::option::of((0..POINTS.len(), any::<bool>())).prop_map(Op::Checkpoint),
            1 => any::<usize>().prop_map(Op::Corrupt),
            1 => Just(Op::Restart),
        ]
    }

    struct Run {
        kv: Arc<kv::MemoryKv>,
        store: CheckpointStore,
        engine: Engine,
        max_chain: usize,
        /// Next order to process.
        seq: u64,
        next_id: u64,
        /// The live engine's snapshot and position at each checkpoint.
        live: BTreeMap<u64, (EngineSnapshot, u64)>,
        /// The newest checkpoint in the store, and whether it is damaged.
        newest: Option<u64>,
        damaged: bool,
    }

    impl Run {
        fn new(max_chain: usize) -> Self {
            let kv = kv::MemoryKv::new();
            let mut store = CheckpointStore::in_memory(kv.clone(), 2);
            store.set_compaction(max_chain, usize::MAX);
            Run {
                kv,
                store,
                engine: tracked(SMALL, 3),
                max_chain,
                seq: 0,
                next_id: 1,
                live: BTreeMap::new(),
                newest: None,
                damaged: false,
            }
        }

        fn process(&mut self, n: u64) {
            feed(&mut self.engine, self.seq, self.seq + n, 40);
            self.seq += n;
        }

        /// Commits the next checkpoint, crashing at `crash` if it comes.
        fn checkpoint(&mut self, crash: Option<(usize, bool)>) -> Result<(), TestCaseError> {
            let id = self.next_id;
            self.live.insert(id, (self.engine.snapshot(), self.seq));
            let mut cp = delta(&mut self.engine, id);
            cp.checkpoint.offsets = [(0, self.seq)].into_iter().collect();
            ARMED.with(|a| a.set(crash.map(|(p, _)| POINTS[p])));
            crate::failpoint::set_hook(Some(hook));
            let outcome = catch_unwind(AssertUnwindSafe(|| self.store.commit_delta(cp)));
            crate::failpoint::set_hook(None);
            ARMED.with(|a| a.set(None));
            match outcome {
                Ok(written) => {
                    written.map_err(|e| TestCaseError::fail(e.to_string()))?;
                    self.next_id += 1;
                    self.newest = Some(id);
                    self.damaged = false;
                    Ok(())
                }
                Err(payload) => {
                    prop_assert!(payload.downcast_ref::<Crash>().is_some(), "a real panic");
                    let (point, survives) = crash.expect("armed");
                    let written = match POINTS[point] {
                        p if p.ends_with("before_write") => false,
                        p if p.ends_with("before_flush") => survives,
                        _ => true,
                    };
                    if written {
                        self.newest = Some(id);
                        self.damaged = false;
                    }
                    self.restart(survives)
                }
            }
        }

        fn corrupt(&mut self, salt: usize) -> Result<(), TestCaseError> {
            if self.newest.is_some() && !self.damaged {
                prop_assert!(self.kv.corrupt_last(salt));
                self.damaged = true;
            }
            self.restart(false)
        }

        /// The process dies (keeping what was not flushed, or not) and
        /// starts again from the newest usable checkpoint.
        fn restart(&mut self, unflushed_survives: bool) -> Result<(), TestCaseError> {
            self.kv.crash(unflushed_survives);
            let expected = match (self.newest, self.damaged) {
                (Some(n), false) => Some(n),
                (Some(n), true) => Some(n - 1).filter(|id| *id > 0),
                (None, _) => None,
            };
            let (mut store, restored) = restart(&self.kv, SMALL);
            store.set_compaction(self.max_chain, usize::MAX);
            self.store = store;
            let Some((recovered, engine)) = restored else {
                prop_assert_eq!(expected, None);
                self.engine = tracked(SMALL, 3);
                self.seq = 0;
                self.next_id = 1;
                return Ok(());
            };
            prop_assert_eq!(Some(recovered.id), expected);
            let (state, seq) = &self.live[&recovered.id];
            prop_assert_eq!(&engine.snapshot(), state);
            prop_assert_eq!(recovered.offsets.get(&0), Some(seq));
            self.seq = *seq;
            self.next_id = recovered.id + 1;
            self.engine = engine;
            Ok(())
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]
        #[test]
        fn recovery_after_any_crash_or_damage_is_exact(
            max_chain in 1usize..6,
            ops in proptest::collection::vec(op(), 1..40),
        ) {
            let mut run = Run::new(max_chain);
            for op in ops {
                match op {
                    Op::Process(n) => run.process(n),
                    Op::Checkpoint(crash) => run.checkpoint(crash)?,
                    Op::Corrupt(salt) => run.corrupt(salt)?,
                    Op::Restart => run.restart(false)?,
                }
            }
            run.checkpoint(None)?;
            run.restart(false)?;
        }
    }
}

/// Recovers `kv`'s newest usable checkpoint into a tracking engine.
pub(super) fn restart(
    kv: &Arc<kv::MemoryKv>,
    spec: WindowSpec,
) -> (CheckpointStore, Option<(Recovered, Engine)>) {
    let mut store = CheckpointStore::in_memory(kv.clone(), 2);
    let recovered = store.recover().unwrap().0;
    let restored = recovered.map(|cp| {
        let chain = &cp.engine;
        let mut engine = Engine::restore_chain(spec, 3, &chain.base, &chain.deltas).unwrap();
        engine.track_changes();
        (cp, engine)
    });
    (store, restored)
}

/// A format-4 frame (rows without user sets) is read with `users: None`,
/// its grouped rows and engine state as they were; a format-5 frame keeps
/// the user sets of its rows.
#[test]
fn frames_of_format_4_are_read_with_rows_without_user_sets() {
    let mut cp = big_checkpoint(4, 1);
    cp.pending[0].rows[1].group = Some(crate::dims::GroupKey {
        dims: vec![],
        values: vec![],
    });
    let cp = stored(&cp);
    let raw = legacy::frame_v4(&cp);
    assert_eq!(u16::from_be_bytes([raw[4], raw[5]]), codec::FORMAT_GROUPS);
    assert_eq!(read::decode_stored(&raw).unwrap(), cp);

    let mut with_users = cp.clone();
    let fps: Vec<crate::dedup::Fp> = (1..=3)
        .map(|i| crate::dedup::fingerprint(9, &format!("u{i}")))
        .collect();
    with_users.pending[0].rows[0].users = Some(Arc::from(fps));
    let raw = codec::encode(&with_users).unwrap();
    assert_eq!(u16::from_be_bytes([raw[4], raw[5]]), codec::FORMAT);
    assert_eq!(read::decode_stored(&raw).unwrap(), with_users);
    // The same bytes labelled format 4 do not pass for a format-4 frame.
    assert_ne!(
        read::decode_stored(&codec::encode_as(codec::FORMAT_GROUPS, &with_users).unwrap()).ok(),
        Some(with_users)
    );
}
