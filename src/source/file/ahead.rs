//! A bounded run's files read on a thread of their own, a batch ahead of
//! the job.
//!
//! Reading a line is a `memchr` and a copy, and the copy out of the page
//! cache is most of it: on the 3M-record mix it was about a quarter of the
//! job thread's work, the thread every record waits for. Here a reader
//! thread fills the batches with the same round-robin reading as the inline
//! path ([`super::read_round`]) while the job processes the one before, and
//! hands them over through a channel of one; emptied batches come back to
//! be filled again, so nothing is allocated per batch. Only bounded runs
//! read ahead: they read to fixed ends and never wait for a file to grow.
//!
//! What the job sees is what it saw from the inline path:
//! - the records of each file in order, files interleaved in chunks;
//! - pausing a partition stops its reading from the next chunk on; records
//!   of it already read (at most two batches) are still delivered, and the
//!   job holds them, as it holds a broker's records fetched before a pause;
//! - a partition is finished once the batch that read its last line has been
//!   handed over (each batch carries every partition's end-of-input flag as
//!   of its last record);
//! - when every partition left is paused, the reader hands over one empty
//!   batch and parks until one is resumed; the job's polls return empty in
//!   the meantime instead of waiting;
//! - an I/O error ends the reading and is returned by the next poll, and by
//!   every poll after it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use super::{read_round, Part};
use crate::source::{RecordBatch, SourceError};

/// One filled batch and, per partition, whether its input is read whole.
struct Filled {
    batch: RecordBatch,
    at_end: Vec<bool>,
}

/// What the reader shares with the job besides the channels.
struct Shared {
    paused: Vec<AtomicBool>,
    stop: AtomicBool,
}

/// The job's side of a reader thread (see the module docs).
pub(super) struct ReadAhead {
    /// `None` once stopping: the reader's next send fails.
    filled: Option<mpsc::Receiver<Result<Filled, SourceError>>>,
    empties: mpsc::Sender<RecordBatch>,
    shared: Arc<Shared>,
    /// Per partition: every record of it handed over.
    finished: Vec<bool>,
    /// The reader sent an empty batch (everything left paused) and no
    /// partition was resumed since: polls do not wait.
    idle: bool,
    /// The error that ended the reading, returned by every poll after it.
    failed: Option<SourceError>,
    thread: Option<JoinHandle<()>>,
}

impl ReadAhead {
    /// Moves `parts` (opened, positioned) to a new reader thread that fills
    /// batches of at most `max` records.
    pub(super) fn start(parts: Vec<Part>, max: usize) -> Result<ReadAhead, SourceError> {
        let shared = Arc::new(Shared {
            paused: parts.iter().map(|p| AtomicBool::new(p.paused)).collect(),
            stop: AtomicBool::new(false),
        });
        let finished = parts.iter().map(|p| p.at_eof).collect();
        let (to_job, filled) = mpsc::sync_channel(1);
        let (empties, returned) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("file-reader".into())
            .spawn({
                let shared = shared.clone();
                move || read(parts, max.max(1), &shared, &to_job, &returned)
            })
            .map_err(|e| {
                SourceError::Failed(format!("file source: cannot start the reader thread: {e}"))
            })?;
        Ok(ReadAhead {
            filled: Some(filled),
            empties,
            shared,
            finished,
            idle: false,
            failed: None,
            thread: Some(thread),
        })
    }

    /// The next filled batch, swapped into `batch` (which must be empty).
    pub(super) fn poll(&mut self, batch: &mut RecordBatch) -> Result<(), SourceError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.finished.iter().all(|f| *f) {
            return Ok(());
        }
        let Some(filled) = &self.filled else {
            return Ok(());
        };
        let received = if self.idle {
            match filled.try_recv() {
                Ok(filled) => Ok(filled),
                Err(mpsc::TryRecvError::Empty) => return Ok(()),
                Err(mpsc::TryRecvError::Disconnected) => Err(()),
            }
        } else {
            filled.recv().map_err(|_| ())
        };
        let filled = match received {
            Ok(Ok(filled)) => filled,
            Ok(Err(e)) => return Err(self.fail(e)),
            Err(()) => {
                let e = SourceError::Failed(
                    "file source: the reader thread ended before the input did (a bug: please report it with the log)"
                        .into(),
                );
                return Err(self.fail(e));
            }
        };
        let Filled {
            batch: mut full,
            at_end,
        } = filled;
        self.idle = full.is_empty();
        for (finished, at_end) in self.finished.iter_mut().zip(at_end) {
            *finished |= at_end;
        }
        std::mem::swap(batch, &mut full);
        full.clear();
        // The reader is gone only once it stopped: nothing to reuse then.
        let _ = self.empties.send(full);
        Ok(())
    }

    fn fail(&mut self, e: SourceError) -> SourceError {
        self.failed = Some(e.clone());
        e
    }

    /// Whether every record of `partition` has been handed over.
    pub(super) fn finished(&self, partition: usize) -> bool {
        self.finished.get(partition).copied().unwrap_or(true)
    }

    pub(super) fn set_paused(&mut self, partition: usize, paused: bool) {
        let Some(flag) = self.shared.paused.get(partition) else {
            return;
        };
        flag.store(paused, Ordering::Release);
        if !paused {
            self.idle = false;
            if let Some(thread) = &self.thread {
                thread.thread().unpark();
            }
        }
    }
}

impl Drop for ReadAhead {
    /// Stops the reader: a send fails once the receiver is gone, a parked
    /// reader is woken to see the stop flag.
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.filled = None;
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

/// The reader thread: fills batches until every part is read to its end, an
/// error, or the job stops it.
fn read(
    mut parts: Vec<Part>,
    max: usize,
    shared: &Shared,
    to_job: &mpsc::SyncSender<Result<Filled, SourceError>>,
    returned: &mpsc::Receiver<RecordBatch>,
) {
    let mut cursor = 0;
    let mut spare = Vec::new();
    loop {
        if shared.stop.load(Ordering::Acquire) {
            return;
        }
        for (part, paused) in parts.iter_mut().zip(&shared.paused) {
            part.paused = paused.load(Ordering::Acquire);
        }
        spare.extend(returned.try_iter());
        let mut batch = spare.pop().unwrap_or_default();
        let result = read_round(&mut parts, &mut cursor, &mut batch, max, true);
        let done = parts.iter().all(|p| p.at_eof);
        let idle = batch.is_empty() && !done;
        let sent = match result {
            Ok(()) => {
                let at_end = parts.iter().map(|p| p.at_eof).collect();
                to_job.send(Ok(Filled { batch, at_end }))
            }
            Err(e) => {
                let _ = to_job.send(Err(e));
                return;
            }
        };
        if sent.is_err() || done {
            return;
        }
        if idle {
            // Everything left is paused: wait to be resumed (or stopped).
            std::thread::park();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use crate::source::file::FileSource;
    use crate::source::{PartitionState, RecordBatch, Source};

    /// Two files of `lines` lines each, opened for a bounded run.
    fn two_files(lines: usize) -> (tempfile::TempDir, FileSource) {
        let dir = tempfile::tempdir().unwrap();
        for p in 0..2 {
            let text: String = (0..lines).map(|i| format!("p{p}-{i}\n")).collect();
            std::fs::write(dir.path().join(format!("part-{p}")), text).unwrap();
        }
        let mut src = FileSource::new(&[dir.path().to_path_buf()]).unwrap();
        src.start(&BTreeMap::new(), true).unwrap();
        (dir, src)
    }

    /// A paused partition stops being read (past what was read ahead), the
    /// polls do not wait while everything left is paused, and resuming
    /// delivers the rest: every line exactly once, in order per file.
    #[test]
    fn pausing_a_partition_stops_its_reading_and_resuming_delivers_the_rest() {
        let (_dir, mut src) = two_files(5000);
        let mut batch = RecordBatch::default();
        let mut got: Vec<Vec<u64>> = vec![Vec::new(), Vec::new()];
        let take = |batch: &RecordBatch, got: &mut Vec<Vec<u64>>| {
            for (m, p) in batch.iter() {
                assert_eq!(p, format!("p{}-{}", m.partition, m.offset).as_bytes());
                got[m.partition as usize].push(m.offset);
            }
        };
        src.poll(&mut batch, 100, Duration::ZERO).unwrap();
        take(&batch, &mut got);
        src.set_paused(1, true);
        // What was read ahead before the pause still comes: at most the
        // batch in the channel and the one being filled.
        let mut after_pause = 0;
        while src.state(0) != PartitionState::Finished {
            batch.clear();
            src.poll(&mut batch, 100, Duration::ZERO).unwrap();
            after_pause += batch.iter().filter(|(m, _)| m.partition == 1).count();
            take(&batch, &mut got);
        }
        assert!(
            after_pause <= 200,
            "{after_pause} records of a paused partition"
        );
        assert_eq!(src.state(1), PartitionState::Backlog);
        // Everything left is paused: polls return empty, they do not wait.
        for _ in 0..3 {
            batch.clear();
            src.poll(&mut batch, 100, Duration::ZERO).unwrap();
            take(&batch, &mut got);
        }
        assert!(got[1].len() < 5000);
        src.set_paused(1, false);
        while src.state(1) != PartitionState::Finished {
            batch.clear();
            src.poll(&mut batch, 100, Duration::ZERO).unwrap();
            take(&batch, &mut got);
        }
        let all: Vec<u64> = (0..5000).collect();
        assert_eq!(got, vec![all.clone(), all]);
    }

    /// Dropping the source mid-input stops the reader, whether it is
    /// blocked handing over a batch or parked with everything paused.
    #[test]
    fn dropping_the_source_stops_the_reader() {
        let (_dir, mut src) = two_files(50_000);
        let mut batch = RecordBatch::default();
        src.poll(&mut batch, 100, Duration::ZERO).unwrap();
        drop(src);
        let (_dir, mut src) = two_files(50_000);
        src.poll(&mut batch, 100, Duration::ZERO).unwrap();
        src.set_paused(0, true);
        src.set_paused(1, true);
        for _ in 0..4 {
            batch.clear();
            src.poll(&mut batch, 100, Duration::ZERO).unwrap();
        }
        drop(src);
    }

    /// A second open (a restart of the reading at other offsets) stops the
    /// first reader and reads from the new positions.
    #[test]
    fn opening_again_reads_from_the_new_positions() {
        let (_dir, mut src) = two_files(1000);
        let mut batch = RecordBatch::default();
        src.poll(&mut batch, 100, Duration::ZERO).unwrap();
        src.start(&BTreeMap::from([(0, 990), (1, 999)]), true)
            .unwrap();
        let mut got = Vec::new();
        while (0..2).any(|p| src.state(p) != PartitionState::Finished) {
            batch.clear();
            src.poll(&mut batch, 100, Duration::ZERO).unwrap();
            got.extend(batch.iter().map(|(m, _)| (m.partition, m.offset)));
        }
        got.sort();
        let want: Vec<(u32, u64)> = (990..1000).map(|o| (0, o)).chain([(1, 999)]).collect();
        assert_eq!(got, want);
    }
}
