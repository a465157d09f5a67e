//! Commits checkpoints on a thread of its own, so that the job thread stops
//! only to mark the barrier.
//!
//! The job takes the changes since the last checkpoint (an
//! [`EngineDelta`](crate::engine::EngineDelta): no table is copied), hands
//! them to the committer with the rest of the
//! [`Checkpoint`](super::Checkpoint) and goes on processing. The committer encodes them (or,
//! when the chain has grown, the state whole, as a new base, built from the
//! chain it keeps: see `writer`), writes and flushes; the protocol's order
//! is unchanged, because the job hands a checkpoint's rows to the sink only
//! once the committer reports it durable.
//!
//! At most one checkpoint is in flight, which bounds both the memory held
//! (one delta and its frame) and how far processing runs ahead of the last
//! durable checkpoint. A barrier that comes due while one is in flight is
//! the job's to defer (see `job::barrier`).
//!
//! [`Committer::inline`] commits on the caller's thread instead, when
//! [`Committer::start`] is called: the same protocol with no thread, for
//! deterministic simulation.

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{CheckpointError, CheckpointStore, Delta, Written};

/// The outcome of one commit, with what the caller gave [`Committer::start`]
/// along with the checkpoint.
#[derive(Debug)]
pub struct Commit<T> {
    pub id: u64,
    /// What was written, when the checkpoint is durable.
    pub result: Result<Written, CheckpointError>,
    /// Encoding, writing and flushing, on the committer's thread.
    pub took: Duration,
    pub tag: T,
}

/// What the thread reports for one checkpoint.
struct Done {
    result: Result<Written, CheckpointError>,
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
        to_thread: Option<mpsc::SyncSender<Delta>>,
        from_thread: mpsc::Receiver<Done>,
        thread: Option<JoinHandle<()>>,
    },
    Inline {
        store: Box<CheckpointStore>,
        done: Option<Done>,
    },
}

impl<T> Committer<T> {
    /// Moves `store` to a new thread that commits what [`Committer::start`]
    /// is given, in order.
    pub fn spawn(mut store: CheckpointStore) -> std::io::Result<Committer<T>> {
        let (to_thread, jobs) = mpsc::sync_channel::<Delta>(1);
        let (done, from_thread) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("checkpoint-commit".into())
            .spawn(move || {
                for checkpoint in jobs {
                    let started = Instant::now();
                    // The delta is consumed (and its memory freed) before
                    // the commit is reported.
                    let result = store.commit_delta(checkpoint);
                    let took = started.elapsed();
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
            mode: Mode::Inline {
                store: Box::new(store),
                done: None,
            },
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
    pub fn start(&mut self, checkpoint: Delta, tag: T) -> Result<(), CheckpointError> {
        assert!(
            self.in_flight.is_none(),
            "checkpoint {} started while {:?} is still being committed",
            checkpoint.checkpoint.id,
            self.in_flight()
        );
        let id = checkpoint.checkpoint.id;
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
                let result = store.commit_delta(checkpoint);
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
    use crate::checkpoint::tests::{delta, feed, tracked};
    use crate::window::WindowSpec;

    #[test]
    fn commits_in_the_background_and_reports_each_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut committer =
            Committer::spawn(CheckpointStore::open(dir.path(), 2).unwrap()).unwrap();
        assert!(committer.wait().is_none(), "nothing in flight");
        let mut engine = tracked(WindowSpec::DEFAULT, 3);
        for id in 1..=3 {
            feed(&mut engine, id * 100, id * 100 + 100, 40);
            committer.start(delta(&mut engine, id), id * 7).unwrap();
            assert_eq!(committer.in_flight(), Some(id));
            let commit = committer.wait().expect("one in flight");
            assert_eq!(commit.id, id);
            assert_eq!(commit.tag, id * 7, "the tag comes back with its commit");
            assert!(commit.result.unwrap().bytes > 0);
            assert_eq!(committer.in_flight(), None);
        }
        drop(committer);
        // Dropping the committer closed the store: it opens again, and holds
        // what was committed.
        let store = CheckpointStore::open(dir.path(), 2).unwrap();
        assert_eq!(store.ids().unwrap(), vec![1, 2, 3]);
        assert_eq!(store.load(3).unwrap().engine, engine.snapshot());
    }

    #[test]
    fn try_finished_hands_back_the_commit_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut committer =
            Committer::spawn(CheckpointStore::open(dir.path(), 2).unwrap()).unwrap();
        let mut engine = tracked(WindowSpec::DEFAULT, 3);
        committer.start(delta(&mut engine, 1), ()).unwrap();
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
