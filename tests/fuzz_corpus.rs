//! Replays the committed fuzz corpora (fuzz/corpus/<target>/) through the
//! same checks as the fuzz targets, so every CI run exercises every seed and
//! every crash a campaign ever found (crashes are added to the corpus as
//! regression seeds), without needing a nightly toolchain.

use std::path::{Path, PathBuf};

use streamforge::checkpoint::{codec, decode_stored, Checkpoint, Stored};

#[path = "../fuzz/common/checkpoint.rs"]
mod checkpoint_common;
use checkpoint_common::{framed, groups, restore};
use streamforge::event::parse_event;

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {} missing: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "corpus {} is empty", dir.display());
    files
}

#[test]
fn parse_event_corpus_never_panics_and_round_trips() {
    let mut valid = 0;
    for file in corpus("parse_event") {
        let data = std::fs::read(&file).unwrap();
        if let Ok(event) = parse_event(&data) {
            valid += 1;
            let again = event.to_json();
            assert_eq!(
                parse_event(again.as_bytes()).as_ref(),
                Ok(&event),
                "{}",
                file.display()
            );
        }
    }
    assert!(valid > 0, "the corpus should hold valid events too");
}

/// The checkpoint_decode target's modes: the bytes as a stored frame, and as
/// the payload of a frame of each format read (5: rows with user sets, 4
/// with grouped cells, 3:
/// deltas before groupings, and 2: whole states, read as bases) with a
/// valid crc, reaching bincode's decoding.
#[test]
fn checkpoint_decode_corpus_is_rejected_or_decoded_without_panic() {
    let (mut current, mut whole, mut deltas, mut grouped, mut v4) = (0, 0, 0, 0, 0);
    for file in corpus("checkpoint_decode") {
        let data = std::fs::read(&file).unwrap();
        if let Ok(checkpoint) = decode_stored(&data) {
            current += 1;
            restore(&checkpoint);
        }
        if let Ok(checkpoint) = decode_stored(&framed(codec::FORMAT, &data)) {
            current += 1;
            if !groups(&checkpoint).panes.is_empty() {
                grouped += 1;
            }
            let again = codec::encode(&checkpoint).unwrap();
            assert_eq!(
                decode_stored(&again).as_ref(),
                Ok(&checkpoint),
                "{}",
                file.display()
            );
            restore(&checkpoint);
        }
        if let Ok(checkpoint) = decode_stored(&framed(codec::FORMAT_GROUPS, &data)) {
            v4 += 1;
            if !groups(&checkpoint).panes.is_empty() {
                grouped += 1;
            }
            assert!(
                checkpoint
                    .pending
                    .iter()
                    .all(|b| b.rows.iter().all(|r| r.users.is_none())),
                "a format-4 checkpoint has no user sets: {}",
                file.display()
            );
            restore(&checkpoint);
        }
        if let Ok(checkpoint) = decode_stored(&framed(codec::FORMAT_DELTAS, &data)) {
            deltas += 1;
            assert!(
                groups(&checkpoint).spec.groupings.is_empty(),
                "a format-3 checkpoint has no groupings: {}",
                file.display()
            );
            restore(&checkpoint);
        }
        if let Ok(checkpoint) = decode_stored(&framed(codec::FORMAT_WHOLE, &data)) {
            whole += 1;
            assert!(
                matches!(checkpoint.engine, Stored::Base(_)),
                "a format-2 frame is read as a base: {}",
                file.display()
            );
            restore(&checkpoint);
        }
    }
    assert!(
        current > 0,
        "the corpus should hold valid format-5 checkpoints too"
    );
    assert!(
        v4 > 0,
        "the corpus should hold valid format-4 checkpoints too"
    );
    assert!(
        grouped > 0,
        "the corpus should hold format-4 or 5 checkpoints with grouped cells"
    );
    assert!(
        deltas > 0,
        "the corpus should hold valid format-3 checkpoints too"
    );
    assert!(
        whole > 0,
        "the corpus should hold valid format-2 checkpoints too"
    );
}

/// Writes realistic checkpoints of the current format (as stored frames, and
/// as bare payloads for the target's framed mode; `v4-*`, with grouped cells
/// of two groupings) into the checkpoint corpus (the `v3-*` and `v2-*` seeds
/// stay, written by earlier builds, for the legacy formats), so a campaign starts
/// from the real format instead of guessing it: bases, and deltas on them.
/// Run by hand after a change of the checkpoint format:
/// `cargo test --test fuzz_corpus -- --ignored write_checkpoint_seeds`
#[test]
#[ignore = "writes files; run by hand when the checkpoint format changes"]
fn write_checkpoint_seeds() {
    use streamforge::checkpoint::{Link, PendingBatch};
    use streamforge::engine::Engine;
    use streamforge::window::WindowSpec;

    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/checkpoint_decode");
    // Cities and categories beyond the limit of 2 values, so panes hold
    // kept cells and `other`.
    let ev = |id: u32, user: u32, t: i64| {
        format!(
            r#"{{"event_id":"e{id}","order_id":"o","user_id":"u{user}","amount":"1.50","event_time":{t},"city":"c{}","category":"k{}"}}"#,
            id % 4,
            id % 3
        )
    };
    let mut out = Vec::new();
    let mut engine = Engine::with_seed(WindowSpec::DEFAULT, 2, 7);
    engine.set_groupings(streamforge::dims::GroupingSpec {
        groupings: vec![
            vec![streamforge::dims::Dimension::City],
            vec![
                streamforge::dims::Dimension::City,
                streamforge::dims::Dimension::Category,
            ],
        ],
        max_values: 2,
    });
    engine.track_changes();
    let checkpoint = |id: u64, engine: Stored, pending: Vec<PendingBatch>| Checkpoint {
        id,
        created_ms: 1_764_064_800_000 + id as i64,
        source_id: "generator:seed=1".into(),
        offsets: [(0, 10 * id), (1, 3)].into_iter().collect(),
        anomaly_log_len: 120 * id,
        engine,
        pending,
        source_identity: None,
        bounded_end: None,
    };
    let link = |id: u64| Link {
        base: 1,
        parent: id - 1,
        parent_crc: 0x5eed_0000 + id as u32,
    };
    let mut seeds = vec![(
        "v4-empty-base",
        checkpoint(1, Stored::Base(engine.snapshot()), vec![]),
    )];
    engine.take_delta();
    for i in 0..6 {
        engine.process(
            (i % 2) as usize,
            ev(i, i % 3, 110_000 + i as i64 * 700).as_bytes(),
            0,
            &mut out,
        );
    }
    seeds.push((
        "v4-open-panes-base",
        checkpoint(2, Stored::Base(engine.snapshot()), vec![]),
    ));
    seeds.push((
        "v4-open-panes-delta",
        checkpoint(2, Stored::Delta(link(2), engine.take_delta()), vec![]),
    ));
    for i in 6..12 {
        engine.process(
            (i % 2) as usize,
            ev(i, i % 4, 175_000 + i as i64 * 900).as_bytes(),
            0,
            &mut out,
        );
    }
    assert!(!out.is_empty(), "windows fired");
    let pending = vec![PendingBatch {
        checkpoint_id: 3,
        rows: out.clone(),
    }];
    let delta = engine.take_delta();
    seeds.push((
        "v4-fired-and-pending-delta",
        checkpoint(3, Stored::Delta(link(3), delta.clone()), pending.clone()),
    ));
    seeds.push((
        "v4-nothing-changed-delta",
        checkpoint(4, Stored::Delta(link(4), delta.without_changes()), pending),
    ));
    for (name, cp) in seeds {
        let frame = codec::encode(&cp).unwrap();
        std::fs::write(dir.join(format!("{name}.frame")), &frame).unwrap();
        std::fs::write(dir.join(format!("{name}.payload")), &frame[18..]).unwrap();
    }
}
