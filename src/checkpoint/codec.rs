//! The checkpoint frame: `[magic 4][format 2][len 8][crc32 4][bincode len bytes]`.
//!
//! The crc covers the payload; the length is checked against the bytes
//! actually present before anything is allocated, so a truncated or
//! bit-flipped frame is an error value, never a panic or a huge allocation.
//! Integers in the header are big-endian.
//!
//! # Formats
//!
//! * 5 (this build writes it): the payload is a `StoredCheckpoint`, whose
//!   engine state is a base or a delta on the checkpoint before it, with
//!   the grouped results' state (`dims`); its pending rows may carry their
//!   window's user set (group mode, `WindowRow::users`).
//! * 4: the same before rows carried user sets; still read, rows without.
//! * 3: the same before grouped results; still read, with no groupings.
//! * 2: the payload is a `Checkpoint` with the whole engine state; still
//!   read, as a base.
//! * 1 and anything newer than 5: refused, saying what to do.

use serde::{de::DeserializeOwned, Serialize};
use thiserror::Error;

const MAGIC: &[u8; 4] = b"SFCK";
/// 5: the engine state is a base or a delta, with grouped results, and rows
/// with user sets (see the module docs).
pub const FORMAT: u16 = 5;
/// Rows without user sets, still read.
pub const FORMAT_GROUPS: u16 = 4;
/// Bases and deltas before grouped results, still read.
pub const FORMAT_DELTAS: u16 = 3;
/// The format before deltas (whole states), still read.
pub const FORMAT_WHOLE: u16 = 2;
const HEADER: usize = 4 + 2 + 8 + 4;
/// Upper bound on what bincode may allocate while decoding one checkpoint,
/// in case a frame with a valid crc still carries absurd lengths.
const DECODE_LIMIT: usize = 8 << 30;
/// bincode checks each declared length against its limit *before* it
/// allocates (claiming the decoded size in memory), but 8 GiB let a payload of
/// a few bytes declare a 3 GB string and get it allocated (found by the
/// `checkpoint_decode` fuzz target). A valid payload never decodes to more
/// than ~16 times its size (a 1-byte varint becomes a 16-byte u128, a 4-byte
/// pane a 64-byte tuple), so each decode is limited to this many times its
/// payload, rounded up to a power of four.
const DECODE_FACTOR: usize = 32;

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("frame too short ({0} bytes)")]
    Truncated(usize),
    #[error("bad magic (not a StreamForge checkpoint)")]
    BadMagic,
    #[error("unsupported checkpoint format {0} (this build reads formats {FORMAT_WHOLE} to {FORMAT}). {advice}", advice = format_advice(*.0))]
    UnsupportedFormat(u16),
    #[error("length mismatch: header says {declared} bytes, frame holds {actual}")]
    LengthMismatch { declared: u64, actual: u64 },
    #[error("crc mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("payload does not decode: {0}")]
    Decode(String),
    #[error("state does not encode: {0}")]
    Encode(String),
}

fn format_advice(format: u16) -> &'static str {
    if format > FORMAT {
        "It was written by a newer StreamForge: run that version on this state directory, or start from a \
         fresh one (the sink's idempotence absorbs the recomputed rows)"
    } else {
        "It was written by an older StreamForge that this one cannot read: finish the run with that \
         version, or start from a fresh state directory (the sink's idempotence absorbs the recomputed rows)"
    }
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<DECODE_LIMIT>()
}

/// The frame of `value`, in the current format.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    encode_as(FORMAT, value)
}

/// The frame of `value`, labelled with `format` (tests of older formats).
pub fn encode_as<T: Serialize>(format: u16, value: &T) -> Result<Vec<u8>, CodecError> {
    let mut frame = Vec::with_capacity(HEADER + 4096);
    frame.extend_from_slice(MAGIC);
    frame.extend_from_slice(&format.to_be_bytes());
    frame.extend_from_slice(&[0; 12]);
    bincode::serde::encode_into_std_write(value, &mut frame, config())
        .map_err(|e| CodecError::Encode(e.to_string()))?;
    let len = (frame.len() - HEADER) as u64;
    let crc = crc32fast::hash(&frame[HEADER..]);
    frame[6..14].copy_from_slice(&len.to_be_bytes());
    frame[14..18].copy_from_slice(&crc.to_be_bytes());
    Ok(frame)
}

/// The crc32 of a frame's payload, from its header (the frame must have
/// been verified, or just encoded).
pub fn frame_crc(frame: &[u8]) -> u32 {
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&frame[14..18]);
    u32::from_be_bytes(crc)
}

/// Checks a frame of the current format and returns its payload, without
/// decoding it.
pub fn verify(frame: &[u8]) -> Result<&[u8], CodecError> {
    match verify_any(frame)? {
        (FORMAT, payload) => Ok(payload),
        (format, _) => Err(CodecError::UnsupportedFormat(format)),
    }
}

/// Checks a frame of any format this build reads; returns the format and
/// the payload.
pub fn verify_any(frame: &[u8]) -> Result<(u16, &[u8]), CodecError> {
    if frame.len() < HEADER {
        return Err(CodecError::Truncated(frame.len()));
    }
    if &frame[0..4] != MAGIC {
        return Err(CodecError::BadMagic);
    }
    let format = u16::from_be_bytes([frame[4], frame[5]]);
    if !(FORMAT_WHOLE..=FORMAT).contains(&format) {
        return Err(CodecError::UnsupportedFormat(format));
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&frame[6..14]);
    let declared = u64::from_be_bytes(len);
    let actual = (frame.len() - HEADER) as u64;
    if declared != actual {
        return Err(CodecError::LengthMismatch { declared, actual });
    }
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&frame[14..18]);
    let stored = u32::from_be_bytes(crc);
    let payload = &frame[HEADER..];
    let computed = crc32fast::hash(payload);
    if stored != computed {
        return Err(CodecError::CrcMismatch { stored, computed });
    }
    Ok((format, payload))
}

/// Decodes with a limit proportional to the payload (see `DECODE_FACTOR`);
/// bincode takes its limit as a type parameter, hence one arm per size class.
fn decode_limited<T: DeserializeOwned>(
    payload: &[u8],
) -> Result<(T, usize), bincode::error::DecodeError> {
    use bincode::config::standard;
    use bincode::serde::decode_from_slice;
    let need = payload
        .len()
        .saturating_mul(DECODE_FACTOR)
        .saturating_add(64 << 10);
    macro_rules! size_classes {
        ($($bits:literal)*) => {
            $(if need <= 1usize << $bits {
                return decode_from_slice(payload, standard().with_limit::<{ 1usize << $bits }>());
            })*
        };
    }
    size_classes!(18 20 22 24 26 28 30 32);
    decode_from_slice(payload, config())
}

/// Checks and decodes a frame of the current format.
pub fn decode<T: DeserializeOwned>(frame: &[u8]) -> Result<T, CodecError> {
    decode_payload(verify(frame)?)
}

/// Decodes a verified payload, all of it.
pub fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T, CodecError> {
    let (value, used) = decode_limited(payload).map_err(|e| CodecError::Decode(e.to_string()))?;
    if used != payload.len() {
        return Err(CodecError::Decode(format!(
            "{} trailing bytes after the state",
            payload.len() - used
        )));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq, Clone)]
    struct Sample {
        a: u64,
        b: Vec<(i64, u128)>,
        c: String,
    }

    fn sample() -> Sample {
        Sample {
            a: 7,
            b: vec![(-1, 1 << 100), (5, 3)],
            c: "state".into(),
        }
    }

    #[test]
    fn round_trips() {
        let frame = encode(&sample()).unwrap();
        assert_eq!(decode::<Sample>(&frame).unwrap(), sample());
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let frame = encode(&sample()).unwrap();
        for i in 0..frame.len() * 8 {
            let mut bad = frame.clone();
            bad[i / 8] ^= 1 << (i % 8);
            assert!(
                decode::<Sample>(&bad).is_err(),
                "flip of bit {i} went unnoticed"
            );
        }
    }

    #[test]
    fn every_truncation_is_detected() {
        let frame = encode(&sample()).unwrap();
        for len in 0..frame.len() {
            assert!(decode::<Sample>(&frame[..len]).is_err());
        }
    }

    fn frame_of(payload: &[u8]) -> Vec<u8> {
        let mut frame = Vec::new();
        frame.extend_from_slice(MAGIC);
        frame.extend_from_slice(&FORMAT.to_be_bytes());
        frame.extend_from_slice(&(payload.len() as u64).to_be_bytes());
        frame.extend_from_slice(&crc32fast::hash(payload).to_be_bytes());
        frame.extend_from_slice(payload);
        frame
    }

    /// Fuzz finding (checkpoint_decode, fuzz/corpus/checkpoint_decode/
    /// oom-huge-string-length): a payload with a valid crc whose string
    /// declares 3 GB made bincode allocate them before finding the bytes
    /// missing. It must be refused by the limit, before any allocation.
    #[test]
    fn a_huge_declared_length_is_refused_before_allocating() {
        let mut payload = vec![7, 0]; // a = 7, b = []
        payload.push(253); // c: a string of 2^31 + 1 bytes...
        payload.extend_from_slice(&((1u64 << 31) + 1).to_le_bytes());
        payload.extend_from_slice(b"...of which 22 follow");
        match decode::<Sample>(&frame_of(&payload)) {
            Err(CodecError::Decode(msg)) => assert!(msg.contains("Limit"), "{msg}"),
            other => panic!("expected a limit error, got {other:?}"),
        }
        let checkpoint = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("fuzz/corpus/checkpoint_decode/oom-huge-string-length"),
        )
        .unwrap();
        match decode::<crate::checkpoint::Checkpoint>(&frame_of(&checkpoint)) {
            Err(CodecError::Decode(msg)) => assert!(msg.contains("Limit"), "{msg}"),
            other => panic!("expected a limit error, got {other:?}"),
        }
    }

    /// The limit is proportional to the payload: state whose decoded form is
    /// many times its encoded size (tiny values in wide types) still decodes.
    #[test]
    fn dense_valid_state_fits_the_limit() {
        let dense = Sample {
            a: 0,
            b: vec![(0, 0); 200_000],
            c: String::new(),
        };
        assert_eq!(decode::<Sample>(&encode(&dense).unwrap()).unwrap(), dense);
        let rows = crate::checkpoint::PendingBatch {
            checkpoint_id: 0,
            rows: vec![
                crate::window::WindowRow {
                    users: None,
                    window_start: 0,
                    window_end: 0,
                    order_cnt: 0,
                    gmv_cents: 0,
                    user_cnt: 0,
                    version: 0,
                    updated_at: 0,
                    group: None,
                };
                100_000
            ],
        };
        assert_eq!(
            decode::<crate::checkpoint::PendingBatch>(&encode(&rows).unwrap()).unwrap(),
            rows
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode::<Sample>(&bytes);
        }

        #[test]
        fn valid_header_with_garbage_payload_is_an_error(payload in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut frame = Vec::new();
            frame.extend_from_slice(MAGIC);
            frame.extend_from_slice(&FORMAT.to_be_bytes());
            frame.extend_from_slice(&(payload.len() as u64).to_be_bytes());
            frame.extend_from_slice(&crc32fast::hash(&payload).to_be_bytes());
            frame.extend_from_slice(&payload);
            // Must return, Ok or Err, without panicking or allocating wildly.
            let _ = decode::<Sample>(&frame);
        }
    }
}
