//! Named crash points in the checkpoint protocol, for fault-injection tests.
//!
//! Built without the `failpoints` feature (the default, and every release
//! build) a crash point compiles to nothing. With it, the `FAILPOINTS`
//! environment variable arms points by name, using the `fail` crate's syntax:
//! `FAILPOINTS='checkpoint::commit::before_flush=return'` makes the process
//! abort there, like a `kill -9` at that instruction; `3*off->return` aborts on
//! the fourth pass. Names follow `module::operation::moment`. Several points
//! are separated by `;`.
//!
//! A few points are not crash points but test-only knobs read with [`value`]:
//! `sink::clickhouse::insert_chunk_rows=return(1)` makes the ClickHouse sink
//! split each batch into INSERTs of one row, so that a crash can land after
//! part of a batch (`sink::clickhouse::between_chunks`).

use std::cell::Cell;

thread_local! {
    /// A simulation's crash hook for this thread (see [`set_hook`]).
    static HOOK: Cell<Option<fn(&str)>> = const { Cell::new(None) };
}

/// Aborts the process when the point `name` is armed. Under a simulation
/// (a hook set on this thread), the hook decides instead: it "crashes" by
/// unwinding to the simulator, which drops everything the process held.
#[inline(always)]
pub fn crash_point(name: &str) {
    if let Some(hook) = HOOK.with(Cell::get) {
        hook(name);
    }
    #[cfg(feature = "failpoints")]
    if fail::eval(name, |_| ()).is_some() {
        eprintln!("failpoint {name} fired: aborting");
        std::process::abort();
    }
}

/// Routes this thread's crash points to `hook` (`None`: back to normal).
/// For deterministic simulation only: a job under simulation runs on one
/// thread, so every crash point it passes calls the hook.
pub fn set_hook(hook: Option<fn(&str)>) {
    HOOK.with(|h| h.set(hook));
}

/// The argument of the point `name` when it is armed with `return(ARG)`;
/// always `None` without the `failpoints` feature.
#[inline(always)]
pub fn value(name: &str) -> Option<String> {
    #[cfg(feature = "failpoints")]
    return fail::eval(name, |arg| arg).flatten();
    #[cfg(not(feature = "failpoints"))]
    {
        let _ = name;
        None
    }
}

/// Arms the points named in `FAILPOINTS` for the life of the process.
pub fn setup() {
    #[cfg(feature = "failpoints")]
    std::mem::forget(fail::FailScenario::setup());
}
