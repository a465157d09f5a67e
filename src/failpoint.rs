//! Named crash points in the checkpoint protocol, for fault-injection tests.
//!
//! Built without the `failpoints` feature (the default, and every release
//! build) a crash point compiles to nothing. With it, the `FAILPOINTS`
//! environment variable arms points by name, using the `fail` crate's syntax:
//! `FAILPOINTS='checkpoint::commit::before_flush=return'` makes the process
//! abort there, like a `kill -9` at that instruction; `3*off->return` aborts on
//! the fourth pass. Names follow `module::operation::moment`.

/// Aborts the process when the point `name` is armed.
#[inline(always)]
pub fn crash_point(name: &str) {
    #[cfg(feature = "failpoints")]
    if fail::eval(name, |_| ()).is_some() {
        eprintln!("failpoint {name} fired: aborting");
        std::process::abort();
    }
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}

/// Arms the points named in `FAILPOINTS` for the life of the process.
pub fn setup() {
    #[cfg(feature = "failpoints")]
    std::mem::forget(fail::FailScenario::setup());
}
