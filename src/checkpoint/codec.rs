//! The checkpoint frame: `[magic 4][format 2][len 8][crc32 4][bincode len bytes]`.
//!
//! The crc covers the payload; the length is checked against the bytes
//! actually present before anything is allocated, so a truncated or
//! bit-flipped frame is an error value, never a panic or a huge allocation.
//! Integers in the header are big-endian.

use serde::{de::DeserializeOwned, Serialize};
use thiserror::Error;

const MAGIC: &[u8; 4] = b"SFCK";
const FORMAT: u16 = 1;
const HEADER: usize = 4 + 2 + 8 + 4;
/// Upper bound on what bincode may allocate while decoding one checkpoint,
/// in case a frame with a valid crc still carries absurd lengths.
const DECODE_LIMIT: usize = 8 << 30;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("frame too short ({0} bytes)")]
    Truncated(usize),
    #[error("bad magic (not a StreamForge checkpoint)")]
    BadMagic,
    #[error("unsupported checkpoint format {0} (this build reads {FORMAT})")]
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

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<DECODE_LIMIT>()
}

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut frame = Vec::with_capacity(HEADER + 4096);
    frame.extend_from_slice(MAGIC);
    frame.extend_from_slice(&FORMAT.to_be_bytes());
    frame.extend_from_slice(&[0; 12]);
    bincode::serde::encode_into_std_write(value, &mut frame, config())
        .map_err(|e| CodecError::Encode(e.to_string()))?;
    let len = (frame.len() - HEADER) as u64;
    let crc = crc32fast::hash(&frame[HEADER..]);
    frame[6..14].copy_from_slice(&len.to_be_bytes());
    frame[14..18].copy_from_slice(&crc.to_be_bytes());
    Ok(frame)
}

/// Checks the frame and returns its payload, without decoding it.
pub fn verify(frame: &[u8]) -> Result<&[u8], CodecError> {
    if frame.len() < HEADER {
        return Err(CodecError::Truncated(frame.len()));
    }
    if &frame[0..4] != MAGIC {
        return Err(CodecError::BadMagic);
    }
    let format = u16::from_be_bytes([frame[4], frame[5]]);
    if format != FORMAT {
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
    Ok(payload)
}

pub fn decode<T: DeserializeOwned>(frame: &[u8]) -> Result<T, CodecError> {
    let payload = verify(frame)?;
    let (value, used) = bincode::serde::decode_from_slice(payload, config())
        .map_err(|e| CodecError::Decode(e.to_string()))?;
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
