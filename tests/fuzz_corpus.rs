//! Replays the committed fuzz corpora (fuzz/corpus/<target>/) through the
//! same checks as the fuzz targets, so every CI run exercises every seed and
//! every crash a campaign ever found (crashes are added to the corpus as
//! regression seeds), without needing a nightly toolchain.

use std::path::{Path, PathBuf};

use streamforge::checkpoint::{codec, Checkpoint};
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

/// The checkpoint_decode target's two modes: the bytes as a stored frame, and
/// as the payload of a frame with a valid crc (reaching bincode's decoding).
#[test]
fn checkpoint_decode_corpus_is_rejected_or_decoded_without_panic() {
    let mut decoded = 0;
    for file in corpus("checkpoint_decode") {
        let data = std::fs::read(&file).unwrap();
        if codec::decode::<Checkpoint>(&data).is_ok() {
            decoded += 1;
        }
        let mut frame = Vec::with_capacity(18 + data.len());
        frame.extend_from_slice(b"SFCK");
        frame.extend_from_slice(&codec::FORMAT.to_be_bytes());
        frame.extend_from_slice(&(data.len() as u64).to_be_bytes());
        frame.extend_from_slice(&crc32fast::hash(&data).to_be_bytes());
        frame.extend_from_slice(&data);
        if let Ok(checkpoint) = codec::decode::<Checkpoint>(&frame) {
            decoded += 1;
            let again = codec::encode(&checkpoint).unwrap();
            assert_eq!(
                codec::decode::<Checkpoint>(&again).as_ref(),
                Ok(&checkpoint),
                "{}",
                file.display()
            );
        }
    }
    assert!(decoded > 0, "the corpus should hold valid checkpoints too");
}

/// Writes realistic checkpoints (as stored frames, and as bare payloads for
/// the target's framed mode) into the checkpoint corpus, so a campaign starts
/// from the real format instead of guessing it. Run by hand after a change of
/// the checkpoint format:
/// `cargo test --test fuzz_corpus -- --ignored write_checkpoint_seeds`
#[test]
#[ignore = "writes files; run by hand when the checkpoint format changes"]
fn write_checkpoint_seeds() {
    use streamforge::checkpoint::PendingBatch;
    use streamforge::engine::Engine;
    use streamforge::window::WindowSpec;

    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/checkpoint_decode");
    let ev = |id: u32, user: u32, t: i64| {
        format!(
            r#"{{"event_id":"e{id}","order_id":"o","user_id":"u{user}","amount":"1.50","event_time":{t}}}"#
        )
    };
    let mut out = Vec::new();
    let mut engine = Engine::with_seed(WindowSpec::DEFAULT, 2, 7);
    let checkpoint = |engine: &Engine, id: u64, pending: Vec<PendingBatch>| Checkpoint {
        id,
        created_ms: 1_764_064_800_000 + id as i64,
        source_id: "generator:seed=1".into(),
        offsets: [(0, 10 * id), (1, 3)].into_iter().collect(),
        anomaly_log_len: 120 * id,
        engine: engine.snapshot(),
        pending,
        source_identity: None,
        bounded_end: None,
    };
    let mut seeds = vec![("empty", checkpoint(&engine, 1, vec![]))];
    for i in 0..6 {
        engine.process(
            (i % 2) as usize,
            ev(i, i % 3, 110_000 + i as i64 * 700).as_bytes(),
            0,
            &mut out,
        );
    }
    seeds.push(("open_panes", checkpoint(&engine, 2, vec![])));
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
    seeds.push(("fired_and_pending", checkpoint(&engine, 3, pending)));
    for (name, cp) in seeds {
        let frame = codec::encode(&cp).unwrap();
        std::fs::write(dir.join(format!("{name}.frame")), &frame).unwrap();
        std::fs::write(dir.join(format!("{name}.payload")), &frame[18..]).unwrap();
    }
}
