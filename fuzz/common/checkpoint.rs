//! What the checkpoint_decode fuzz target and the corpus replay test
//! (tests/fuzz_corpus.rs) share: restoring what decodes as recovery would,
//! the grouped state it holds, and arbitrary bytes framed with a valid
//! header and crc. Included by both with `#[path]`.

use streamforge::checkpoint::{Stored, StoredCheckpoint};
use streamforge::engine::Engine;
use streamforge::window::WindowSpec;

/// Restores `checkpoint` as recovery would: a base into an engine, a delta
/// applied to an empty one. Either may be refused, never panic.
pub fn restore(checkpoint: &StoredCheckpoint) {
    let spec = WindowSpec::DEFAULT;
    match &checkpoint.engine {
        Stored::Base(state) => {
            let _ = Engine::restore_chain(spec, state.clocks.len(), state, &[]);
        }
        Stored::Delta(_, delta) => {
            let mut engine = Engine::with_seed(spec, delta.clocks.len().min(1 << 16), delta.seed);
            let _ = engine.apply_delta(delta);
        }
    }
}

/// The grouped state a checkpoint holds.
pub fn groups(checkpoint: &StoredCheckpoint) -> &streamforge::dims::GroupsState {
    match &checkpoint.engine {
        Stored::Base(state) => &state.groups,
        Stored::Delta(_, delta) => &delta.groups,
    }
}

/// The bytes as the payload of a frame of `format` with a valid header and crc.
pub fn framed(format: u16, data: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(18 + data.len());
    frame.extend_from_slice(b"SFCK");
    frame.extend_from_slice(&format.to_be_bytes());
    frame.extend_from_slice(&(data.len() as u64).to_be_bytes());
    frame.extend_from_slice(&crc32fast::hash(data).to_be_bytes());
    frame.extend_from_slice(data);
    frame
}
