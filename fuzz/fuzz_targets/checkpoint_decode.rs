//! A corrupt or truncated checkpoint is an error value: never a panic, never
//! a huge allocation (libFuzzer's -rss_limit_mb / -malloc_limit_mb catch
//! those).
//!
//! Each input is tried three times:
//! 1. as a stored frame, exactly as recovery reads it (header, length and
//!    crc checks);
//! 2. as the payload of a frame of the current format (5, rows with user
//!    sets), of format 4 (grouped cells, rows without), of format 3 (deltas, before groupings) and of format 2 (whole
//!    states, read as bases), with a valid header and crc. A random
//!    frame almost never passes the crc, so without this the fuzzer would
//!    never reach bincode's decoding of the state;
//!    with it, every length, tag and varint of the checkpoint format (a
//!    base or a delta) is explored (a frame whose crc matches but whose
//!    content is wrong: a bug, or a checkpoint of another version).
//!
//! What decodes is also restored, as recovery would: a base into an engine,
//! a delta applied to an empty one. Either may be refused, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamforge::checkpoint::{codec, decode_stored, Stored};

#[path = "../common/checkpoint.rs"]
mod common;
use common::{framed, groups, restore};

fuzz_target!(|data: &[u8]| {
    if let Ok(checkpoint) = decode_stored(data) {
        restore(&checkpoint);
    }
    if let Ok(checkpoint) = decode_stored(&framed(codec::FORMAT, data)) {
        // What decodes must encode back to a frame that decodes equal.
        let again = codec::encode(&checkpoint).expect("a decoded checkpoint encodes");
        assert_eq!(decode_stored(&again).as_ref(), Ok(&checkpoint));
        restore(&checkpoint);
    }
    // Format 4 (rows without user sets) is still read.
    if let Ok(checkpoint) = decode_stored(&framed(codec::FORMAT_GROUPS, data)) {
        assert!(checkpoint
            .pending
            .iter()
            .all(|b| b.rows.iter().all(|r| r.users.is_none())));
        restore(&checkpoint);
    }
    // Format 3 (deltas, before groupings) is still read.
    if let Ok(checkpoint) = decode_stored(&framed(codec::FORMAT_DELTAS, data)) {
        assert!(groups(&checkpoint).spec.groupings.is_empty());
        restore(&checkpoint);
    }
    // Format 2 (whole states, before deltas) is still read, as a base.
    if let Ok(checkpoint) = decode_stored(&framed(codec::FORMAT_WHOLE, data)) {
        assert!(matches!(checkpoint.engine, Stored::Base(_)));
        restore(&checkpoint);
    }
});
