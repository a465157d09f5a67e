//! Many schedules: seeds spread over worker threads (each schedule runs on
//! one thread, so threads never share a simulated process), the named
//! regression schedules first, and for each divergence a report with the
//! seed, a shrunk schedule saved as JSON, and the commands that replay both.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use crate::gen::generate;
use crate::plan::Plan;
use crate::runner::{run_plan, Outcome};
use crate::shrink::{kind, shrink, size};

#[derive(Debug, Clone)]
pub struct Options {
    pub seed: u64,
    pub schedules: u64,
    pub jobs: usize,
    pub shrink: bool,
    pub shrink_budget: Duration,
    /// Where shrunk schedules are saved.
    pub out_dir: PathBuf,
}

/// A scratch directory for one worker (anomaly logs), on tmpfs if there is
/// one.
pub fn scratch_dir(tag: &str) -> PathBuf {
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    base.join(format!("streamforge-sim-{}-{tag}", std::process::id()))
}

/// The named regression schedules (`sim/regressions/*.json`), by name.
pub fn regressions() -> Vec<(String, Plan)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|f| f.extension().is_some_and(|e| e == "json"));
    files.sort();
    files
        .into_iter()
        .map(|f| {
            let name = f
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .to_string();
            let plan = load(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            (name, plan)
        })
        .collect()
}

pub fn load(path: &Path) -> Result<Plan, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let plan: Plan = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    plan.validate()?;
    Ok(plan)
}

/// Runs `plan`, shrinks it if it diverges, and says so. `None` when it
/// does not diverge.
/// `reproduce` is the one command that runs this schedule again.
pub fn check(
    label: &str,
    reproduce: &str,
    plan: &Plan,
    opts: &Options,
    dir: &Path,
) -> Option<String> {
    let outcome = run_plan(plan, dir);
    if outcome.divergences.is_empty() {
        return None;
    }
    Some(report(label, reproduce, plan, &outcome, opts, dir))
}

fn report(
    label: &str,
    reproduce: &str,
    plan: &Plan,
    outcome: &Outcome,
    opts: &Options,
    dir: &Path,
) -> String {
    let mut text = format!("DIVERGENCE in {label} ({})\n", size(plan));
    for d in outcome.divergences.iter().take(5) {
        text.push_str(&format!("  - {d}\n"));
    }
    text.push_str(&format!("  reproduce: {reproduce}\n"));
    if !opts.shrink {
        return text;
    }
    let want = kind(&outcome.divergences[0]);
    let (small, found, tries) = shrink(plan, &want, opts.shrink_budget, |c| {
        run_plan(c, dir).divergences
    });
    let _ = std::fs::create_dir_all(&opts.out_dir);
    let file = opts
        .out_dir
        .join(format!("divergence-seed-{}.json", plan.seed));
    let saved = serde_json::to_string_pretty(&small)
        .ok()
        .and_then(|json| std::fs::write(&file, json).ok());
    text.push_str(&format!("  shrunk in {tries} runs to {}:\n", size(&small)));
    for d in found.iter().take(3) {
        text.push_str(&format!("  - {d}\n"));
    }
    match saved {
        Some(()) => text.push_str(&format!(
            "  shrunk schedule: scripts/sim.sh --replay {}\n",
            file.display()
        )),
        None => text.push_str(&format!(
            "  (could not save the shrunk schedule to {})\n",
            file.display()
        )),
    }
    text
}

/// Runs the schedule of `seed`; a panic of the simulator itself (an
/// invalid plan, a bug here) counts as a divergence too, with its message.
fn one_seed(seed: u64, opts: &Options, dir: &Path) -> (Outcome, Option<String>) {
    let result = std::panic::catch_unwind(|| {
        let plan = generate(seed);
        let outcome = run_plan(&plan, dir);
        let text = (!outcome.divergences.is_empty()).then(|| {
            let again = format!("scripts/sim.sh --seed {seed} --schedules 1");
            report(&format!("seed {seed}"), &again, &plan, &outcome, opts, dir)
        });
        (outcome, text)
    });
    result.unwrap_or_else(|payload| {
        let msg = payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        let text = format!("DIVERGENCE in seed {seed}: the simulator failed: {msg}\n");
        (Outcome::default(), Some(text))
    })
}

/// What a campaign did.
pub struct Summary {
    pub schedules: u64,
    pub divergent: u64,
    pub runs: u64,
    pub crashes: u64,
    pub elapsed: Duration,
}

/// Runs the seeds `opts.seed ..` on `opts.jobs` threads; `say` gets each
/// divergence report as it comes.
pub fn seeds(opts: &Options, mut say: impl FnMut(&str)) -> Summary {
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let (tx, rx) = mpsc::channel::<(Outcome, Option<String>)>();
    let workers: Vec<_> = (0..opts.jobs.max(1))
        .map(|w| {
            let (next, tx, opts) = (next.clone(), tx.clone(), opts.clone());
            std::thread::spawn(move || {
                let dir = scratch_dir(&format!("w{w}"));
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= opts.schedules {
                        break;
                    }
                    let seed = opts.seed.wrapping_add(i);
                    let (outcome, text) = one_seed(seed, &opts, &dir);
                    if tx.send((outcome, text)).is_err() {
                        break;
                    }
                }
                let _ = std::fs::remove_dir_all(&dir);
            })
        })
        .collect();
    drop(tx);
    let mut sum = Summary {
        schedules: 0,
        divergent: 0,
        runs: 0,
        crashes: 0,
        elapsed: Duration::ZERO,
    };
    for (outcome, text) in rx {
        sum.schedules += 1;
        sum.runs += u64::from(outcome.runs);
        sum.crashes += u64::from(outcome.crashes);
        if let Some(text) = text {
            sum.divergent += 1;
            say(&text);
        }
    }
    for w in workers {
        let _ = w.join();
    }
    sum.elapsed = started.elapsed();
    sum
}
