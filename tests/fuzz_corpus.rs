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

#[test]
fn checkpoint_decode_corpus_is_rejected_or_decoded_without_panic() {
    for file in corpus("checkpoint_decode") {
        let data = std::fs::read(&file).unwrap();
        let _ = codec::decode::<Checkpoint>(&data);
    }
}
