//! Commits checkpoints on a thread of its own, so that the job thread stops
//! only to take the snapshot.
//!
//! Encoding a checkpoint, writing it to sled and flushing it are most of a
//! large checkpoint's cost (for 52 MB of state: ~80 ms of bincode and crc
//! and ~300 ms of sled write and `fsync`, against ~150 ms of snapshot), and
//! none of it needs the engine: the snapshot is already a copy. So the job
//! takes the snapshot, hands the [`Checkpoint`] to the committer and goes on
//! processing; the protocol's order is unchanged, because the job hands a
//! checkpoint's rows to the sink only once the committer reports it durable.
//!
//! At most one checkpoint is in flight. The next barrier waits for it first,
//! which bounds both the memory held (one snapshot and its frame) and how far
//! processing runs ahead of the last durable checkpoint (one barrier
//! interval, as before).
//!
//! [`Committer::inline`] commits on the caller's thread instead, when
//! [`Committer::start`] is called: the same protocol with no thread, for
//! deterministic simulation.

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{Checkpoint, CheckpointError, CheckpointStore};

/// The outcome of one commit, with what the caller gave [`Committer::start`]
/// along with the checkpoint.
#[derive(Debug)]
pub struct Commit<T> {
    pub id: u64,
    /// The frame's size when the checkpoint is durable.
    pub result: Result<usize, CheckpointError>,
    /// Encoding, writing and flushing, on the committer's thread.
    pub took: Duration,
    pub tag: T,
}

/// What the thread reports for one checkpoint.
struct Done {
    result: Result<usize, CheckpointError>,
    took: Duration,
}

/// Commits checkpoints on its thread. `T` is what the caller needs once a
/// checkpoint is durable (the job: its rows and offsets); it stays on the
/// caller's side and comes back in the [`Commit`].
pub struct Committer<T> {
    mode: Mode,
    in_flight: Option<(u64, T)>,
}

enum Mode {
    Thread {
        to_thread: Option<mpsc::SyncSender<Checkpoint>>,
        from_thread: mpsc::Receiver<Done>,
        thread: Option<JoinHandle<()>>,
    },
    Inline {
        store: CheckpointStore,
        done: Option<Done>,
    },
}

impl<T> Committer<T> {
    /// Moves `store` to a new thread that commits what [`Committer::start`]
    /// is given, in order.
    pub fn spawn(store: CheckpointStore) -> std::io::Result<Committer<T>> {
        let (to_thread, jobs) = mpsc::sync_channel::<Checkpoint>(1);
        let (done, from_thread) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("checkpoint-commit".into())
            .spawn(move || {
                for checkpoint in jobs {
                    let started = Instant::now();
                    let result = store.commit(&checkpoint);
                    let took = started.elapsed();
                    // Dropped before it is reported: the snapshot's memory
                    // is free by the time the job starts the next one.
                    drop(checkpoint);
                    if done.send(Done { result, took }).is_err() {
                        break;
                    }
                }
                // `store` is dropped here, on this thread, before `join`
                // returns: the state directory's lock is free once the
                // committer is.
            })?;
        Ok(Committer {
            mode: Mode::Thread {
                to_thread: Some(to_thread),
                from_thread,
                thread: Some(thread),
            },
            in_flight: None,
        })
    }

    /// Commits on the caller's thread, inside [`Committer::start`].
    pub fn inline(store: CheckpointStore) -> Committer<T> {
        Committer {
            mode: Mode::Inline { store, done: None },
            in_flight: None,
        }
    }

    /// The id of the checkpoint being committed, if any.
    pub fn in_flight(&self) -> Option<u64> {
        self.in_flight.as_ref().map(|(id, _)| *id)
    }

    /// Starts committing `checkpoint`; `tag` comes back with its
    /// [`Commit`]. The one before must be finished ([`Committer::wait`]):
    /// one checkpoint at a time, in id order.
    pub fn start(&mut self, checkpoint: Checkpoint, tag: T) -> Result<(), CheckpointError> {
        assert!(
            self.in_flight.is_none(),
            "checkpoint {} started while {:?} is still being committed",
            checkpoint.id,
            self.in_flight()
        );
        let id = checkpoint.id;
        match &mut self.mode {
            Mode::Thread { to_thread, .. } => {
                let sent = to_thread
                    .as_ref()
                    .is_some_and(|tx| tx.send(checkpoint).is_ok());
                if !sent {
                    return Err(CheckpointError::CommitterGone(id));
                }
            }
            Mode::Inline { store, done } => {
                let result = store.commit(&checkpoint);
                *done = Some(Done {
                    result,
                    took: Duration::ZERO,
                });
            }
        }
        self.in_flight = Some((id, tag));
        Ok(())
    }

    /// The finished commit, if the one in flight is done; never blocks.
    pub fn try_finished(&mut self) -> Option<Commit<T>> {
        self.in_flight.as_ref()?;
        let done = match &mut self.mode {
            Mode::Thread { from_thread, .. } => match from_thread.try_recv() {
                Ok(done) => Ok(done),
                Err(mpsc::TryRecvError::Empty) => return None,
                Err(mpsc::TryRecvError::Disconnected) => Err(()),
            },
            Mode::Inline { done, .. } => done.take().ok_or(()),
        };
        self.finished(done)
    }

    /// Waits for the commit in flight; `None` when there is none.
    pub fn wait(&mut self) -> Option<Commit<T>> {
        self.in_flight.as_ref()?;
        let done = match &mut self.mode {
            Mode::Thread { from_thread, .. } => from_thread.recv().map_err(|_| ()),
            Mode::Inline { done, .. } => done.take().ok_or(()),
        };
        self.finished(done)
    }

    /// The commit in flight, finished with what the thread reported, or
    /// with an error when the thread ended without reporting (it can only
    /// have panicked).
    fn finished(&mut self, done: Result<Done, ()>) -> Option<Commit<T>> {
        let (id, tag) = self.in_flight.take()?;
        let done = done.unwrap_or(Done {
            result: Err(CheckpointError::CommitterGone(id)),
            took: Duration::ZERO,
        });
        Some(Commit {
            id,
            result: done.result,
            took: done.took,
            tag,
        })
    }
}

impl<T> Drop for Committer<T> {
    /// Lets the commit in flight finish, then ends the thread and closes the
    /// store.
    fn drop(&mut self) {
        if let Mode::Thread {
            to_thread, thread, ..
        } = &mut self.mode
        {
            *to_thread = None;
            if let Some(thread) = thread.take() {
                let _ = thread.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::tests::checkpoint;

    #[test]
    fn commits_in_the_background_and_reports_each_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut committer =
            Committer::spawn(CheckpointStore::open(dir.path(), 2).unwrap()).unwrap();
        assert!(committer.wait().is_none(), "nothing in flight");
        for id in 1..=3 {
            committer.start(checkpoint(id), id * 7).unwrap();
            assert_eq!(committer.in_flight(), Some(id));
            let commit = committer.wait().expect("one in flight");
            assert_eq!(commit.id, id);
            assert_eq!(commit.tag, id * 7, "the tag comes back with its commit");
            assert!(commit.result.unwrap() > 0);
            assert_eq!(committer.in_flight(), None);
        }
        drop(committer);
        // Dropping the committer closed the store: it opens again, and holds
        // what was committed.
        let store = CheckpointStore::open(dir.path(), 2).unwrap();
        assert_eq!(store.ids().unwrap(), vec![2, 3]);
        assert_eq!(store.load(3).unwrap(), checkpoint(3));
    }

    #[test]
    fn try_finished_hands_back_the_commit_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut committer =
            Committer::spawn(CheckpointStore::open(dir.path(), 2).unwrap()).unwrap();
        committer.start(checkpoint(1), ()).unwrap();
        let commit = loop {
            if let Some(commit) = committer.try_finished() {
                break commit;
            }
            std::thread::yield_now();
        };
        assert_eq!(commit.id, 1);
        assert!(commit.result.is_ok());
        assert!(committer.try_finished().is_none());
        assert!(committer.wait().is_none());
    }
}
