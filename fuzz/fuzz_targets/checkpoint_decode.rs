//! A corrupt or truncated checkpoint is an error value: never a panic, never
//! a huge allocation (libFuzzer's -rss_limit_mb catches those).
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamforge::checkpoint::{codec, Checkpoint};

fuzz_target!(|data: &[u8]| {
    let _ = codec::decode::<Checkpoint>(data);
});
