//! A corrupt or truncated checkpoint is an error value: never a panic, never
//! a huge allocation (libFuzzer's -rss_limit_mb / -malloc_limit_mb catch
//! those).
//!
//! Each input is tried twice:
//! 1. as a stored frame, exactly as recovery reads it (header, length and
//!    crc checks);
//! 2. as the payload of a frame with a valid header and crc. A random frame
//!    almost never passes the crc, so without this the fuzzer would never
//!    reach bincode's decoding of the state; with it, every length, tag and
//!    varint of the checkpoint format is explored (a frame whose crc matches
//!    but whose content is wrong: a bug, or a checkpoint of another version).
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamforge::checkpoint::{codec, Checkpoint};

fuzz_target!(|data: &[u8]| {
    let _ = codec::decode::<Checkpoint>(data);

    let mut frame = Vec::with_capacity(18 + data.len());
    frame.extend_from_slice(b"SFCK");
    frame.extend_from_slice(&codec::FORMAT.to_be_bytes());
    frame.extend_from_slice(&(data.len() as u64).to_be_bytes());
    frame.extend_from_slice(&crc32fast::hash(data).to_be_bytes());
    frame.extend_from_slice(data);
    if let Ok(checkpoint) = codec::decode::<Checkpoint>(&frame) {
        // What decodes must encode back to a frame that decodes equal.
        let again = codec::encode(&checkpoint).expect("a decoded checkpoint encodes");
        assert_eq!(
            codec::decode::<Checkpoint>(&again).as_ref(),
            Ok(&checkpoint)
        );
    }
});
