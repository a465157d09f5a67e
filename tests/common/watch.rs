//! A running job watched the way an operator watches it: its progress
//! (checkpoints committed, the checkpoint it recovered from, offsets) from
//! its `/metrics`, its state changes from its log. The job must have its
//! metrics listener on (the `streamforge()` helper gives every job one on a
//! free loopback port); the address is the one fact read from the log.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ExitStatus};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// How long any one wait may take before the test fails with the log.
pub const WAIT_DEADLINE: Duration = Duration::from_secs(180);
/// How long a run may take to end once the test lets it.
pub const FINISH_DEADLINE: Duration = Duration::from_secs(300);

/// How often metrics are polled while waiting.
const POLL: Duration = Duration::from_millis(2);

/// The `/metrics` text served at `addr`, or "" when it cannot be reached.
pub fn fetch_metrics(addr: &str) -> String {
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default()
}

/// The address in the job's `serving /metrics` line, if `line` is it.
pub fn metrics_address(line: &str) -> Option<String> {
    if !line.contains("serving /metrics") {
        return None;
    }
    let rest = line.split("address=").nth(1)?;
    rest.split_whitespace().next().map(str::to_owned)
}

pub struct Watched {
    pub child: Child,
    lines: Receiver<String>,
    /// Every log line received so far.
    pub log: String,
    addr: Option<String>,
    exited: Option<ExitStatus>,
}

impl Watched {
    /// Watches a child spawned with a piped stderr (see `spawn`).
    pub fn attach(mut child: Child) -> Watched {
        let stderr = child
            .stderr
            .take()
            .expect("spawn the job with a piped stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            // Read to the end even when no one listens any more, so the
            // job never writes into a closed pipe.
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        Watched {
            child,
            lines,
            log: String::new(),
            addr: None,
            exited: None,
        }
    }

    /// Takes the log lines that have arrived; `wait` bounds how long to
    /// wait for the first. Returns false once the log has ended.
    fn drain(&mut self, wait: Duration) -> bool {
        let mut next = self.lines.recv_timeout(wait);
        loop {
            match next {
                Ok(line) => {
                    if self.addr.is_none() {
                        self.addr = metrics_address(&line);
                    }
                    self.log.push_str(&line);
                    self.log.push('\n');
                }
                Err(RecvTimeoutError::Timeout) => return true,
                Err(RecvTimeoutError::Disconnected) => return false,
            }
            next = self.lines.try_recv().map_err(|e| match e {
                mpsc::TryRecvError::Empty => RecvTimeoutError::Timeout,
                mpsc::TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
            });
        }
    }

    /// Where the job serves its metrics, once it has said so.
    pub fn address(&mut self) -> Option<String> {
        self.drain(Duration::ZERO);
        self.addr.clone()
    }

    /// Whether the process has ended (it is reaped once).
    pub fn has_exited(&mut self) -> bool {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().unwrap();
        }
        self.exited.is_some()
    }

    /// The job's `/metrics` text, or "" when it cannot be reached.
    pub fn metrics(&mut self) -> String {
        self.drain(Duration::ZERO);
        self.addr.as_deref().map(fetch_metrics).unwrap_or_default()
    }

    /// The sum of every sample of metric `name`, if the job serves it.
    pub fn metric(&mut self, name: &str) -> Option<f64> {
        let body = self.metrics();
        body.lines()
            .any(|l| l.starts_with(name))
            .then(|| super::metric_sum(&body, name))
    }

    /// Polls until `done` holds; false if the job ended first.
    pub fn poll_until(&mut self, what: &str, mut done: impl FnMut(&mut Watched) -> bool) -> bool {
        let deadline = Instant::now() + WAIT_DEADLINE;
        loop {
            if done(self) {
                return true;
            }
            if self.has_exited() {
                return done(self);
            }
            if Instant::now() >= deadline {
                self.fail(&format!("{what} did not happen within {WAIT_DEADLINE:?}"));
            }
            self.drain(POLL);
        }
    }

    /// Polls until `done` holds; fails the test if the job ends first.
    pub fn wait_until(&mut self, what: &str, mut done: impl FnMut() -> bool) {
        if !self.poll_until(what, |_| done()) {
            self.fail(&format!("the job ended before {what}"));
        }
    }

    /// Polls until `done` holds on the job; fails the test if it ends first.
    pub fn wait_until_metrics(&mut self, what: &str, done: impl FnMut(&mut Watched) -> bool) {
        if !self.poll_until(what, done) {
            self.fail(&format!("the job ended before {what}"));
        }
    }

    /// Waits until the job has committed `n` checkpoints (its
    /// `checkpoints_committed` counter); false if it ended first.
    pub fn until_checkpoints(&mut self, n: u64) -> bool {
        self.poll_until(&format!("checkpoint {n} of this run"), |job| {
            job.checkpoints() >= n
        })
    }

    /// Checkpoints committed by this run so far (0 when not reachable).
    pub fn checkpoints(&mut self) -> u64 {
        self.metric("streamforge_checkpoints_committed_total")
            .unwrap_or(0.0) as u64
    }

    /// Waits until start-up has decided where to resume; returns the
    /// checkpoint recovered from (0: from the beginning of the input).
    pub fn recovered_from(&mut self) -> u64 {
        let mut from = -1.0;
        let decided = self.poll_until("the end of start-up", |job| {
            from = job
                .metric("streamforge_recovered_from_checkpoint")
                .unwrap_or(-1.0);
            from >= 0.0
        });
        if !decided {
            self.fail("the job ended before start-up was done");
        }
        from as u64
    }

    /// Waits for a log line holding one of `patterns` (`a|b`): for the
    /// job's state changes, which it says in words.
    pub fn wait_for(&mut self, patterns: &str) -> String {
        let deadline = Instant::now() + WAIT_DEADLINE;
        let mut seen = self.log.len();
        loop {
            let live = self.drain(Duration::from_millis(20));
            if let Some(line) = self.log[seen..]
                .lines()
                .find(|l| patterns.split('|').any(|p| l.contains(p)))
            {
                return line.to_owned();
            }
            seen = self.log.len();
            if !live {
                let status = self.child.wait().unwrap();
                self.fail(&format!(
                    "the job ended ({status}) before a log line with `{patterns}`"
                ));
            }
            if Instant::now() >= deadline {
                self.fail(&format!(
                    "no log line with `{patterns}` within {WAIT_DEADLINE:?}"
                ));
            }
        }
    }

    /// SIGKILL, like `kill -9`: no chance to clean up.
    pub fn kill9(&mut self) {
        super::kill9(&mut self.child);
        while self.drain(Duration::from_millis(100)) {}
    }

    /// Lets the job run to its end; returns its status and whole log.
    pub fn finish(mut self) -> (ExitStatus, String) {
        let deadline = Instant::now() + FINISH_DEADLINE;
        while self.drain(Duration::from_millis(100)) {
            if Instant::now() >= deadline {
                self.fail(&format!("the job did not end within {FINISH_DEADLINE:?}"));
            }
        }
        let status = match self.exited {
            Some(status) => status,
            None => self.child.wait().unwrap(),
        };
        (status, std::mem::take(&mut self.log))
    }

    /// Kills the job and fails the test with its log.
    pub fn fail(&mut self, why: &str) -> ! {
        let _ = self.child.kill();
        let _ = self.child.wait();
        while self.drain(Duration::from_millis(100)) {}
        panic!("{why}; log:\n{}", self.log);
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
