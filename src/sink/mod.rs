//! Sinks: where window rows end up, written idempotently.
//!
//! Every sink stores rows keyed by `window_start`, the highest `version`
//! winning (ClickHouse's ReplacingMergeTree, or the embedded store). Writing
//! the same rows twice, or an older version after a newer one, changes
//! nothing: that is what lets recovery resend pending output freely.
//!
//! The job never writes to a sink itself. It hands each checkpointed batch to
//! a [`SinkWriter`], a thread that retries with exponential backoff while the
//! sink is down and reports acknowledgements back; processing goes on
//! meanwhile, and unacknowledged rows stay in every checkpoint.
//!
//! A row a sink cannot store for a reason about the row itself (ClickHouse
//! refusing its values) never stops the job: the sink writes it to the
//! dead-letter file ([`dead_letters`]) and acknowledges the batch. Only what
//! an operator must fix (credentials, permissions, the table's schema) is a
//! [`SinkError::Fatal`].

pub mod clickhouse;
pub mod dead_letters;
pub mod embedded;

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::window::WindowRow;

#[derive(Debug, Error)]
pub enum SinkError {
    /// The sink may accept the same write later (down, overloaded, timeout).
    #[error("{0}")]
    Retryable(String),
    /// The write can never succeed as is (bad schema, bad credentials,
    /// rejected data): an operator must act.
    #[error("{0}")]
    Fatal(String),
}

pub trait Sink: Send {
    /// Human-readable target, without credentials.
    fn describe(&self) -> String;

    /// Upserts `rows` (idempotent). Returns once the sink acknowledged them.
    fn write(&mut self, rows: &[WindowRow]) -> Result<(), SinkError>;

    /// The final rows, highest version per window, sorted by window start.
    fn read_final(&mut self) -> Result<Vec<WindowRow>, SinkError>;

    /// The grouped rows (see [`crate::dims`]) with the highest version per
    /// window start, grouping and values, ordered by them. A sink that
    /// holds none returns none.
    fn read_grouped(&mut self) -> Result<Vec<WindowRow>, SinkError> {
        Ok(Vec::new())
    }

    /// The highest `version` below `limit` the target holds over all its
    /// rows (0 when it holds none, or does not exist yet). A job that starts
    /// on a fresh state directory numbers its versions above the highest
    /// live version ([`crate::window::LIVE_VERSION_LIMIT`]), so that
    /// nothing it writes is taken for older than what an earlier state
    /// wrote, while a replay's versions, above the limit, still win.
    fn max_version(&mut self, limit: u64) -> Result<u64, SinkError>;
}

/// Messages from the writer thread.
#[derive(Debug)]
pub enum SinkEvent {
    /// Every batch up to this checkpoint id is in the sink.
    Acked {
        checkpoint_id: u64,
        rows: usize,
        latency: Duration,
    },
    /// A write failed and will be retried after `retry_in`.
    Retrying {
        checkpoint_id: u64,
        attempt: u32,
        retry_in: Duration,
        error: String,
    },
    /// A write failed for good; the job must stop (rows stay pending).
    Failed { checkpoint_id: u64, error: String },
}

struct Job {
    checkpoint_id: u64,
    rows: Vec<WindowRow>,
}

/// Backoff between retries of one batch.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.min(16);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

pub struct SinkWriter {
    mode: WriterMode,
}

enum WriterMode {
    Thread {
        jobs: Option<Sender<Job>>,
        events: Receiver<SinkEvent>,
        thread: Option<JoinHandle<()>>,
    },
    /// Writes on the caller's thread when asked for events, waiting on the
    /// given clock between retries: the same protocol with no thread, for
    /// deterministic simulation.
    Inline(Box<Inline>),
}

struct Inline {
    sink: Box<dyn Sink>,
    backoff: Backoff,
    clock: std::sync::Arc<dyn crate::clock::Clock>,
    queue: std::collections::VecDeque<Job>,
    attempt: u32,
    /// When the first batch of the queue may be tried (clock time).
    next_try: Duration,
    /// When the first batch of the queue was first tried.
    first_try: Option<Duration>,
    events: std::collections::VecDeque<SinkEvent>,
    /// A fatal error was reported: nothing more is written.
    stopped: bool,
}

impl Inline {
    /// Writes queued batches while the sink takes them and their time has
    /// come; reports what happened.
    fn pump(&mut self) {
        while !self.stopped {
            let Some(job) = self.queue.front() else {
                return;
            };
            let now = self.clock.now();
            if now < self.next_try {
                return;
            }
            let started = *self.first_try.get_or_insert(now);
            match self.sink.write(&job.rows) {
                Ok(()) => {
                    self.events.push_back(SinkEvent::Acked {
                        checkpoint_id: job.checkpoint_id,
                        rows: job.rows.len(),
                        latency: self.clock.now().saturating_sub(started),
                    });
                    self.queue.pop_front();
                    self.attempt = 0;
                    self.first_try = None;
                }
                Err(SinkError::Retryable(error)) => {
                    let retry_in = self.backoff.delay(self.attempt);
                    self.attempt = self.attempt.saturating_add(1);
                    self.next_try = now + retry_in;
                    self.events.push_back(SinkEvent::Retrying {
                        checkpoint_id: job.checkpoint_id,
                        attempt: self.attempt,
                        retry_in,
                        error,
                    });
                    return;
                }
                Err(SinkError::Fatal(error)) => {
                    self.events.push_back(SinkEvent::Failed {
                        checkpoint_id: job.checkpoint_id,
                        error,
                    });
                    self.stopped = true;
                }
            }
        }
    }
}

impl SinkWriter {
    pub fn spawn(mut sink: Box<dyn Sink>, backoff: Backoff) -> Self {
        let (job_tx, job_rx) = mpsc::channel::<Job>();
        let (ev_tx, ev_rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("sink-writer".into())
            .spawn(move || {
                for job in job_rx {
                    if !write_until_acked(sink.as_mut(), &job, backoff, &ev_tx) {
                        return;
                    }
                }
            })
            .expect("spawning the sink writer thread");
        SinkWriter {
            mode: WriterMode::Thread {
                jobs: Some(job_tx),
                events: ev_rx,
                thread: Some(thread),
            },
        }
    }

    /// A writer that writes on the caller's thread (see [`WriterMode`]).
    pub fn inline(
        sink: Box<dyn Sink>,
        backoff: Backoff,
        clock: std::sync::Arc<dyn crate::clock::Clock>,
    ) -> Self {
        SinkWriter {
            mode: WriterMode::Inline(Box::new(Inline {
                sink,
                backoff,
                clock,
                queue: Default::default(),
                attempt: 0,
                next_try: Duration::ZERO,
                first_try: None,
                events: Default::default(),
                stopped: false,
            })),
        }
    }

    /// Queues a batch that a durable checkpoint already records.
    pub fn submit(&mut self, checkpoint_id: u64, rows: Vec<WindowRow>) {
        let job = Job {
            checkpoint_id,
            rows,
        };
        match &mut self.mode {
            WriterMode::Thread { jobs, .. } => {
                if let Some(tx) = jobs {
                    // A send error means the thread stopped after a fatal
                    // error, which it has reported; the rows stay pending in
                    // the checkpoint.
                    let _ = tx.send(job);
                }
            }
            WriterMode::Inline(w) => {
                if !w.stopped {
                    w.queue.push_back(job);
                }
            }
        }
    }

    /// Events reported so far, without waiting.
    pub fn try_events(&mut self) -> Vec<SinkEvent> {
        match &mut self.mode {
            WriterMode::Thread { events, .. } => events.try_iter().collect(),
            WriterMode::Inline(w) => {
                w.pump();
                w.events.drain(..).collect()
            }
        }
    }

    /// Waits up to `timeout` for the next event.
    pub fn wait_event(&mut self, timeout: Duration) -> Option<SinkEvent> {
        match &mut self.mode {
            WriterMode::Thread { events, .. } => match events.recv_timeout(timeout) {
                Ok(e) => Some(e),
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => None,
            },
            WriterMode::Inline(w) => {
                w.pump();
                if w.events.is_empty() {
                    let now = w.clock.now();
                    let wait = if w.queue.is_empty() || w.stopped {
                        timeout
                    } else {
                        w.next_try.saturating_sub(now).min(timeout)
                    };
                    w.clock.sleep(wait);
                    w.pump();
                }
                w.events.pop_front()
            }
        }
    }
}

impl Drop for SinkWriter {
    fn drop(&mut self) {
        if let WriterMode::Thread { jobs, thread, .. } = &mut self.mode {
            // Closing the queue lets the thread finish its current batch (or
            // give up on it if the process is exiting) and stop.
            jobs.take();
            if let Some(t) = thread.take() {
                if t.is_finished() {
                    let _ = t.join();
                }
            }
        }
    }
}

/// Returns false when the writer must stop (fatal error or job gone).
fn write_until_acked(
    sink: &mut dyn Sink,
    job: &Job,
    backoff: Backoff,
    events: &Sender<SinkEvent>,
) -> bool {
    let mut attempt = 0u32;
    let started = Instant::now();
    loop {
        match sink.write(&job.rows) {
            Ok(()) => {
                return events
                    .send(SinkEvent::Acked {
                        checkpoint_id: job.checkpoint_id,
                        rows: job.rows.len(),
                        latency: started.elapsed(),
                    })
                    .is_ok();
            }
            Err(SinkError::Retryable(error)) => {
                let retry_in = backoff.delay(attempt);
                attempt = attempt.saturating_add(1);
                if events
                    .send(SinkEvent::Retrying {
                        checkpoint_id: job.checkpoint_id,
                        attempt,
                        retry_in,
                        error,
                    })
                    .is_err()
                {
                    return false;
                }
                std::thread::sleep(retry_in);
            }
            Err(SinkError::Fatal(error)) => {
                let _ = events.send(SinkEvent::Failed {
                    checkpoint_id: job.checkpoint_id,
                    error,
                });
                return false;
            }
        }
    }
}

/// Keeps, per window start, the row with the highest version (ties: the
/// later one). The rule every sink implements; also used by `verify`.
/// A row's key in a table holding window totals and grouped rows: the window
/// start, and the grouping and values of a grouped row.
pub type RowKey = (i64, Option<crate::dims::GroupKey>);

/// [`upsert`] for a table of totals and grouped rows.
pub fn upsert_keyed(table: &mut std::collections::BTreeMap<RowKey, WindowRow>, row: WindowRow) {
    let key = (row.window_start, row.group.clone());
    match table.get(&key) {
        Some(old) if old.version > row.version => {}
        _ => {
            table.insert(key, row);
        }
    }
}

pub fn upsert(table: &mut std::collections::BTreeMap<i64, WindowRow>, row: WindowRow) {
    match table.get(&row.window_start) {
        Some(old) if old.version > row.version => {}
        _ => {
            table.insert(row.window_start, row);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    fn row(start: i64, version: u64, cnt: u64) -> WindowRow {
        WindowRow {
            users: None,
            window_start: start,
            window_end: start + 60,
            order_cnt: cnt,
            gmv_cents: 0,
            user_cnt: 0,
            version,
            updated_at: 0,
            group: None,
        }
    }

    #[test]
    fn highest_version_wins_whatever_the_order() {
        let mut t = BTreeMap::new();
        upsert(&mut t, row(0, 2, 20));
        upsert(&mut t, row(0, 1, 10));
        upsert(&mut t, row(0, 2, 20));
        assert_eq!(t[&0].order_cnt, 20);
        upsert(&mut t, row(0, 3, 30));
        assert_eq!(t[&0].order_cnt, 30);
    }

    /// Fails the first `failures` writes, then stores.
    struct Flaky {
        failures: u32,
        stored: Arc<Mutex<Vec<WindowRow>>>,
    }

    impl Sink for Flaky {
        fn describe(&self) -> String {
            "flaky".into()
        }
        fn write(&mut self, rows: &[WindowRow]) -> Result<(), SinkError> {
            if self.failures > 0 {
                self.failures -= 1;
                return Err(SinkError::Retryable("down".into()));
            }
            self.stored.lock().unwrap().extend_from_slice(rows);
            Ok(())
        }
        fn read_final(&mut self) -> Result<Vec<WindowRow>, SinkError> {
            Ok(self.stored.lock().unwrap().clone())
        }
        fn max_version(&mut self, limit: u64) -> Result<u64, SinkError> {
            Ok(self
                .stored
                .lock()
                .unwrap()
                .iter()
                .map(|r| r.version)
                .filter(|v| *v < limit)
                .max()
                .unwrap_or(0))
        }
    }

    #[test]
    fn the_writer_retries_until_acked_and_reports_it() {
        let stored = Arc::new(Mutex::new(Vec::new()));
        let mut writer = SinkWriter::spawn(
            Box::new(Flaky {
                failures: 3,
                stored: stored.clone(),
            }),
            Backoff {
                initial: Duration::from_millis(1),
                max: Duration::from_millis(4),
            },
        );
        writer.submit(9, vec![row(0, 1, 5)]);
        let mut retries = 0;
        loop {
            match writer
                .wait_event(Duration::from_secs(10))
                .expect("an event")
            {
                SinkEvent::Retrying { .. } => retries += 1,
                SinkEvent::Acked {
                    checkpoint_id,
                    rows,
                    ..
                } => {
                    assert_eq!((checkpoint_id, rows), (9, 1));
                    break;
                }
                SinkEvent::Failed { error, .. } => panic!("{error}"),
            }
        }
        assert_eq!(retries, 3);
        assert_eq!(stored.lock().unwrap().len(), 1);
    }

    #[test]
    fn the_inline_writer_retries_on_its_clock_and_reports_in_order() {
        use crate::clock::{Clock, ManualClock};
        let stored = Arc::new(Mutex::new(Vec::new()));
        let clock = Arc::new(ManualClock::new(0));
        let mut writer = SinkWriter::inline(
            Box::new(Flaky {
                failures: 2,
                stored: stored.clone(),
            }),
            Backoff {
                initial: Duration::from_millis(100),
                max: Duration::from_secs(1),
            },
            clock.clone(),
        );
        writer.submit(1, vec![row(0, 1, 5)]);
        writer.submit(2, vec![row(30, 1, 6)]);
        let first = writer.try_events();
        assert!(
            matches!(
                first[..],
                [SinkEvent::Retrying {
                    checkpoint_id: 1,
                    attempt: 1,
                    ..
                }]
            ),
            "{first:?}"
        );
        // Nothing is tried again before the backoff has passed on the clock.
        assert!(writer.try_events().is_empty());
        let mut acked = Vec::new();
        while acked.len() < 2 {
            if let Some(SinkEvent::Acked { checkpoint_id, .. }) =
                writer.wait_event(Duration::from_secs(1))
            {
                acked.push(checkpoint_id);
            }
        }
        assert_eq!(acked, vec![1, 2]);
        assert_eq!(stored.lock().unwrap().len(), 2);
        assert!(
            clock.now() >= Duration::from_millis(300),
            "two backoffs passed on the clock"
        );
    }
}
