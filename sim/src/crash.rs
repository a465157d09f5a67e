//! Crashes, hangs and in-run checks, on the job's own thread.
//!
//! The job under simulation runs on one thread, and everything it does
//! passes through the simulator: the clock, the source, the sink, and every
//! named crash point of the product (`streamforge::failpoint::set_hook`).
//! Each such call is a *step*. A run's plan names the step (or the n-th pass
//! of a crash point) where the process dies: the simulator panics there with
//! a [`Crash`] payload, unwinds to `runner`, which drops everything the
//! process held, as `kill -9` would. A panic with any other payload is a bug
//! in the product.
//!
//! A run that goes on past its deadline in simulated time, or for too many
//! steps, is stopped with a [`Hang`] payload: the job did not finish.
//!
//! The state lives in a thread-local because a crash-point hook is a plain
//! `fn(&str)`; worker threads each run their own schedules.

use std::cell::RefCell;
use std::sync::{Arc, Once};

use streamforge::checkpoint::kv::MemoryKv;
use streamforge::checkpoint::CheckpointStore;

/// The panic payload of a simulated crash.
pub struct Crash {
    pub at: String,
}

/// The panic payload of a run that did not finish.
pub struct Hang {
    pub why: String,
}

/// What one run may crash on, and what it saw.
pub struct Armed {
    pub crash_step: Option<u64>,
    pub crash_point: Option<(String, u32)>,
    /// Clock ms after which the run counts as hung.
    pub deadline_ms: u64,
    /// Clock ms at which the process is killed (group mode: an instance
    /// dies at a planned moment), if any.
    pub crash_at_ms: Option<u64>,
    pub step_limit: u64,
    /// The store, to check pending output after each commit.
    pub kv: Arc<MemoryKv>,
    pub keep: usize,
}

/// What a run left behind in the thread-local state.
#[derive(Debug, Default)]
pub struct Seen {
    pub steps: u64,
    pub notes: Vec<String>,
    pub last_panic: Option<String>,
}

struct State {
    armed: Armed,
    steps: u64,
    point_passes: u32,
    /// The outcome of the sink's last write attempt, if any in this run.
    last_write_ok: Option<bool>,
    /// Checkpoints committed while the sink's last write had failed since
    /// the pending output last drained: each may add a batch the sink
    /// cannot take yet (see `check_pending`).
    outage_commits: usize,
    notes: Vec<String>,
}

thread_local! {
    static STATE: RefCell<Option<State>> = const { RefCell::new(None) };
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Prepares this thread: crash points come here, and simulated crashes do
/// not print. Idempotent.
pub fn install() {
    static PANIC_HOOK: Once = Once::new();
    PANIC_HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            if payload.is::<Crash>() || payload.is::<Hang>() {
                return;
            }
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(non-string panic)".into());
            let at = info
                .location()
                .map(|l| format!(" at {}:{}", l.file(), l.line()))
                .unwrap_or_default();
            let armed = STATE.with(|s| s.borrow().is_some());
            if armed {
                LAST_PANIC.with(|p| *p.borrow_mut() = Some(format!("{msg}{at}")));
            } else {
                default(info);
            }
        }));
    });
    streamforge::failpoint::set_hook(Some(hook));
}

pub fn arm(armed: Armed) {
    STATE.with(|s| {
        *s.borrow_mut() = Some(State {
            armed,
            steps: 0,
            point_passes: 0,
            last_write_ok: None,
            outage_commits: 0,
            notes: Vec::new(),
        })
    });
    LAST_PANIC.with(|p| p.borrow_mut().take());
}

pub fn disarm() -> Seen {
    let state = STATE.with(|s| s.borrow_mut().take());
    let last_panic = LAST_PANIC.with(|p| p.borrow_mut().take());
    match state {
        Some(s) => Seen {
            steps: s.steps,
            notes: s.notes,
            last_panic,
        },
        None => Seen {
            last_panic,
            ..Seen::default()
        },
    }
}

/// One step of the run: the process may die here.
pub fn step(what: &'static str) {
    let crash = STATE.with(|s| {
        let mut s = s.borrow_mut();
        let s = s.as_mut()?;
        s.steps += 1;
        if s.steps > s.armed.step_limit {
            return Some(Err(format!("more than {} steps", s.armed.step_limit)));
        }
        (s.armed.crash_step == Some(s.steps)).then_some(Ok(()))
    });
    match crash {
        Some(Ok(())) => std::panic::panic_any(Crash {
            at: what.to_string(),
        }),
        Some(Err(why)) => std::panic::panic_any(Hang { why }),
        None => {}
    }
}

/// The simulated clock moved to `now_ms`: at the planned kill the process
/// dies; past the deadline, the run hangs.
pub fn check_deadline(now_ms: u64) {
    let (killed, late) = STATE.with(|s| {
        s.borrow().as_ref().map_or((false, false), |s| {
            (
                s.armed.crash_at_ms.is_some_and(|at| now_ms >= at),
                now_ms > s.armed.deadline_ms,
            )
        })
    });
    if killed {
        std::panic::panic_any(Crash {
            at: format!("the instance killed at clock {now_ms} ms"),
        });
    }
    if late {
        std::panic::panic_any(Hang {
            why: format!("still running at clock {now_ms} ms"),
        });
    }
}

/// The sink's write attempt ended (`ok`).
pub fn note_write(ok: bool) {
    STATE.with(|s| {
        if let Some(s) = s.borrow_mut().as_mut() {
            s.last_write_ok = Some(ok);
        }
    });
}

/// A divergence noticed in the middle of a run.
pub fn note(what: String) {
    STATE.with(|s| {
        if let Some(s) = s.borrow_mut().as_mut() {
            s.notes.push(what);
        }
    });
}

/// Every crash point of the product lands here (see `install`).
fn hook(name: &str) {
    let (crash, check) = STATE.with(|s| {
        let mut s = s.borrow_mut();
        let Some(s) = s.as_mut() else {
            return (false, None);
        };
        let mut crash = false;
        if let Some((point, nth)) = &s.armed.crash_point {
            if point == name {
                s.point_passes += 1;
                crash = s.point_passes == *nth;
            }
        }
        let committed = name == "checkpoint::commit::after_flush";
        if committed && s.last_write_ok == Some(false) {
            s.outage_commits += 1;
        }
        let check = (committed && s.last_write_ok == Some(true))
            .then(|| (s.armed.kv.clone(), s.armed.keep, s.outage_commits));
        (crash, check)
    });
    if crash {
        std::panic::panic_any(Crash {
            at: name.to_string(),
        });
    }
    if let Some((kv, keep, outage_commits)) = check {
        if check_pending(&kv, keep, outage_commits) {
            STATE.with(|s| {
                if let Some(s) = s.borrow_mut().as_mut() {
                    s.outage_commits = 0;
                }
            });
        }
    }
    step("crash_point");
}

/// Pending output stays bounded: once the sink has taken a write, the
/// newest checkpoint holds at most the batch of the checkpoint before it
/// and its own (the end of a bounded input commits right after handing the
/// previous batch over), plus one batch for each checkpoint committed while
/// the sink was failing (`outage_commits`): those wait in order and are
/// acknowledged over the next checkpoints. Returns whether the pending
/// output is back within the first bound (drained since the outage).
fn check_pending(kv: &Arc<MemoryKv>, keep: usize, outage_commits: usize) -> bool {
    let store = CheckpointStore::in_memory(kv.clone(), keep);
    if let Ok((Some(cp), _)) = store.load_latest() {
        if cp.pending.len() > 2 + outage_commits {
            let ids: Vec<u64> = cp.pending.iter().map(|b| b.checkpoint_id).collect();
            note(format!(
                "checkpoint {} holds {} pending batches ({ids:?}) although the sink took the last write \
                 ({outage_commits} checkpoints were committed while it failed)",
                cp.id,
                cp.pending.len()
            ));
        }
        return cp.pending.len() <= 2;
    }
    false
}

/// Whether a caught panic payload is a simulated crash (its step), a hang
/// (why), or neither.
pub fn classify(payload: &(dyn std::any::Any + Send)) -> Option<Result<String, String>> {
    if let Some(c) = payload.downcast_ref::<Crash>() {
        return Some(Ok(c.at.clone()));
    }
    payload.downcast_ref::<Hang>().map(|h| Err(h.why.clone()))
}
