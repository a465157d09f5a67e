//! `bench store`: how many bytes sled 0.34 writes for the bytes of a
//! checkpoint, in the checkpoint store's own layout (frames cut into
//! [`CHUNK_BYTES`] pieces under [`chunk_key`] keys, one batch per
//! checkpoint, flushed), with the piece and segment sizes as knobs.
//!
//! The checkpoints are the files run's (docs/performance.md): a 40 MB
//! delta, a 20 MB delta, then a 1 MB one whose batch also removes the
//! first, as the store drops a checkpoint no longer kept. The payload is
//! random, as fingerprints are. Bytes written are the process's `wchar`
//! (`/proc/self/io`) over the run: everything sled handed to the kernel.

use std::time::Instant;

use anyhow::Context;
use streamforge::checkpoint::{chunk_key, CHUNK_BYTES};

/// One row of the report.
#[derive(Debug, serde::Serialize)]
pub struct StoreRow {
    pub piece_bytes: usize,
    pub segment_bytes: usize,
    /// Checkpoint bytes handed to sled.
    pub checkpoint_bytes: u64,
    /// Bytes the process wrote meanwhile.
    pub written_bytes: u64,
    /// Size of the state directory after the run.
    pub directory_bytes: u64,
    /// Files in sled's `blobs` directory after the run: nodes larger than
    /// a quarter of a segment, which sled 0.34 never deletes (see
    /// `checkpoint`'s module docs).
    pub blob_files: usize,
    pub elapsed_ms: f64,
}

/// Checkpoint sizes in MiB, written in this order; the last batch also
/// removes the first checkpoint.
const CHECKPOINTS_MIB: [usize; 3] = [40, 20, 1];

/// Runs the three checkpoints once per (piece, segment) pair; no pieces
/// given: the store's own, [`CHUNK_BYTES`].
pub fn run(pieces: &[usize], segments: &[usize]) -> anyhow::Result<Vec<StoreRow>> {
    let pieces = if pieces.is_empty() {
        &[CHUNK_BYTES][..]
    } else {
        pieces
    };
    let mut rows = Vec::new();
    for &segment in segments {
        for &piece in pieces {
            rows.push(one(piece.max(1), segment)?);
        }
    }
    Ok(rows)
}

fn one(piece: usize, segment: usize) -> anyhow::Result<StoreRow> {
    let dir = tempfile::tempdir()?;
    let db = sled::Config::new()
        .path(dir.path().join("db"))
        .segment_size(segment)
        .open()
        .with_context(|| format!("sled would not open with {segment}-byte segments (a power of two, 256 B to 16 MiB)"))?;
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let (written_before, t0) = (wchar()?, Instant::now());
    let mut checkpoint_bytes = 0u64;
    for (i, mib) in CHECKPOINTS_MIB.iter().enumerate() {
        let id = i as u64 + 1;
        let mut frame = vec![0u8; mib << 20];
        for word in frame.chunks_mut(8) {
            // xorshift64: incompressible, like fingerprints.
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            word.copy_from_slice(&rng.to_le_bytes()[..word.len()]);
        }
        checkpoint_bytes += frame.len() as u64;
        let mut batch = sled::Batch::default();
        for (n, bytes) in frame.chunks(piece).enumerate() {
            batch.insert(&chunk_key(id, n as u32)[..], bytes);
        }
        if id == CHECKPOINTS_MIB.len() as u64 {
            for n in 0..(CHECKPOINTS_MIB[0] << 20).div_ceil(piece) {
                batch.remove(&chunk_key(1, n as u32)[..]);
            }
        }
        db.apply_batch(batch)?;
        db.flush()?;
    }
    let elapsed_ms = t0.elapsed().as_secs_f64() * 1e3;
    let written_bytes = wchar()? - written_before;
    drop(db);
    Ok(StoreRow {
        piece_bytes: piece,
        segment_bytes: segment,
        checkpoint_bytes,
        written_bytes,
        directory_bytes: du(dir.path())?,
        blob_files: std::fs::read_dir(dir.path().join("db").join("blobs")).map_or(0, |d| d.count()),
        elapsed_ms,
    })
}

/// Bytes this process has passed to `write` and the like so far.
fn wchar() -> anyhow::Result<u64> {
    let io =
        std::fs::read_to_string("/proc/self/io").context("reading /proc/self/io (Linux only)")?;
    io.lines()
        .find_map(|l| l.strip_prefix("wchar:"))
        .and_then(|v| v.trim().parse().ok())
        .context("no wchar line in /proc/self/io")
}

/// Bytes of the files under `path`. sled may still be removing files of
/// its own after the database is dropped: one gone meanwhile counts zero.
fn du(path: &std::path::Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(path)? {
        let meta = match entry.and_then(|e| e.metadata().map(|m| (e.path(), m))) {
            Ok(found) => found,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e.into()),
        };
        total += if meta.1.is_dir() {
            du(&meta.0)?
        } else {
            meta.1.len()
        };
    }
    Ok(total)
}

/// The report as a markdown table.
pub fn markdown(rows: &[StoreRow]) -> String {
    let mb = |b: u64| b as f64 / 1e6;
    let mut s = String::from(
        "| piece | segment | checkpoints | written by sled | written / checkpoint | directory after | blob files | time |\n\
         | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for r in rows {
        s += &format!(
            "| {} KiB | {} KiB | {:.1} MB | {:.1} MB | {:.2}x | {:.1} MB | {} | {:.0} ms |\n",
            r.piece_bytes / 1024,
            r.segment_bytes / 1024,
            mb(r.checkpoint_bytes),
            mb(r.written_bytes),
            r.written_bytes as f64 / r.checkpoint_bytes as f64,
            mb(r.directory_bytes),
            r.blob_files,
            r.elapsed_ms
        );
    }
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn sled_writes_at_least_every_checkpoint_byte() {
        let row = super::one(super::CHUNK_BYTES, 512 << 10).unwrap();
        assert_eq!(row.checkpoint_bytes, 61 << 20);
        assert!(row.written_bytes >= row.checkpoint_bytes, "{row:?}");
        assert!(row.directory_bytes > 20 << 20, "{row:?}");
        assert_eq!(
            row.blob_files, 0,
            "the store's pieces never make blobs: {row:?}"
        );
    }
}
