//! `streamforge demo`: the whole pipeline on simulated orders, with no
//! servers (generator source, embedded sink), then the windows as a table.
//!
//! The job's listener serves the live page while it runs (its address is
//! printed first), and the demo keeps it up after the run until the user
//! presses Enter or Ctrl-C, so the page can be looked at. Only an
//! interactive terminal is waited for: with standard input from a file, a
//! pipe or nothing (scripts, tests, CI) the demo ends at once, as before.
//! `--speed N` paces the generator ([`super::paced`]) so that event time
//! runs N times faster than real time and the page fills in while one
//! watches.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::Args;

use super::paced::Paced;
use super::{print_summary, run_job_with, stop_flag};
use crate::config::{Config, SinkKind, SourceKind, DEFAULT_METRICS_ADDR};
use crate::sink::embedded::EmbeddedSink;
use crate::sink::Sink;
use crate::telemetry::{self, Listener, Metrics};
use crate::window::WindowRow;

#[derive(Args, Clone)]
pub(super) struct DemoArgs {
    /// Where the demo keeps its state and anomaly log: its `state/` and
    /// `logs/` there are cleared first; a directory holding anything else
    /// is refused, not cleared.
    #[arg(long, default_value = "streamforge-demo")]
    dir: PathBuf,
    /// Simulated partitions.
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    /// Simulated orders per partition (500 per second of event time).
    #[arg(long, default_value_t = 150_000)]
    events_per_partition: u64,
    /// Serve the live page (and /metrics) here; 127.0.0.1:0 takes a free
    /// port, `off` turns it off.
    #[arg(long, default_value = DEFAULT_METRICS_ADDR)]
    metrics_addr: String,
    /// Replay event time N times faster than real time, to watch the live
    /// page fill in (10: the default 300 s of orders in 30 s). Default: as
    /// fast as the machine goes.
    #[arg(long, value_name = "N")]
    speed: Option<f64>,
}

/// What the demo writes in its directory, and all it ever clears.
const DEMO_ENTRIES: [&str; 2] = ["state", "logs"];

/// Clears an earlier demo's `state/` and `logs/` in `dir`. A directory
/// holding anything else is refused untouched: `--dir` may name a place
/// that holds someone's files.
fn clear_demo_dir(dir: &Path) -> anyhow::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => bail!("cannot read the demo directory {}: {e}", dir.display()),
    };
    let mut ours = Vec::new();
    for entry in entries {
        let entry =
            entry.with_context(|| format!("cannot read the demo directory {}", dir.display()))?;
        let name = entry.file_name();
        if !DEMO_ENTRIES.iter().any(|d| name == *d) {
            bail!(
                "the demo directory {} holds {}, which the demo did not write; the demo clears \
                 its directory before it starts, so it only uses a new or empty one, or one an \
                 earlier demo wrote (only state/ and logs/). Pass --dir with another path",
                dir.display(),
                entry.path().display()
            );
        }
        ours.push(entry.path());
    }
    for path in ours {
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.with_context(|| format!("cannot clear the demo's {}", path.display()))?;
    }
    Ok(())
}

pub(super) fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    if args.speed.is_some_and(|s| !(s.is_finite() && s > 0.0)) {
        bail!("--speed must be a number above 0 (10: ten times faster than real time)");
    }
    clear_demo_dir(&args.dir)?;
    let mut cfg = Config::default();
    cfg.source.kind = SourceKind::Generator;
    cfg.source.generator.partitions = args.partitions;
    cfg.source.generator.events_per_partition = Some(args.events_per_partition);
    cfg.sink.kind = SinkKind::Embedded;
    cfg.checkpoint.state_dir = args.dir.join("state");
    cfg.checkpoint.interval = crate::setting::Dur(Duration::from_millis(500));
    cfg.anomaly_log = args.dir.join("logs/anomalies.log");
    cfg.metrics_addr = args.metrics_addr.clone();
    cfg.validate().map_err(|p| anyhow!(p.join("; ")))?;
    let g = &cfg.source.generator;
    eprintln!(
        "StreamForge demo: {} partitions x {} simulated orders ({} s of event time at {}/s per partition), \
         with {:.0}% broken, {:.0}% duplicated and, past the fourth minute, {:.1}% very late events.",
        g.partitions,
        args.events_per_partition,
        args.events_per_partition / g.rate.max(1),
        g.rate,
        g.anomaly_share * 100.0,
        g.duplicate_share * 100.0,
        g.late_share * 100.0
    );
    let metrics = Arc::new(Metrics::new());
    let listener = telemetry::start(cfg.metrics_listen_addr(), metrics.clone());
    if let Some(l) = &listener {
        let hint = match args.speed {
            Some(_) => "",
            None => "; --speed 10 runs slower, to watch the windows arrive",
        };
        eprintln!("Live page: {} (refreshes every second{hint})", page_url(l));
    }
    let mut source = super::build_source(&cfg)?;
    if let Some(speed) = args.speed {
        let per_second = speed * (g.rate * u64::from(g.partitions)) as f64;
        source = Box::new(Paced::new(source, per_second));
    }
    let stop = stop_flag()?;
    let progress = std::io::stderr().is_terminal();
    let report = run_job_with(&cfg, source, true, progress, metrics, stop.clone())?;
    let rows = EmbeddedSink::open(&cfg.embedded_sink_path())?.read_final()?;
    outln!()?;
    print_table(&rows)?;
    outln!()?;
    print_summary(&report);
    outln!()?;
    outln!("Sliding windows of 60 s every 30 s, exact GMV and exact distinct users.")?;
    outln!(
        "Same windows as JSON:   streamforge results --state-dir {}",
        cfg.checkpoint.state_dir.display()
    )?;
    outln!(
        "Checkpoints:            streamforge checkpoint list --state-dir {}",
        cfg.checkpoint.state_dir.display()
    )?;
    outln!("Anomaly log:            {}", cfg.anomaly_log.display())?;
    if let Some(l) = listener {
        keep_serving(&l, &stop, std::io::stdin().is_terminal())?;
    }
    Ok(ExitCode::SUCCESS)
}

fn page_url(listener: &Listener) -> String {
    format!("http://{}/", listener.local_addr())
}

/// Keeps the listener up until Enter or Ctrl-C (`stop`), when a person at
/// a terminal can press them; returns at once otherwise.
fn keep_serving(listener: &Listener, stop: &AtomicBool, interactive: bool) -> anyhow::Result<()> {
    let url = page_url(listener);
    if !interactive {
        outln!("Live page:              {url} (closed now: standard input is not a terminal)")?;
        return Ok(());
    }
    outln!("Live page:              {url}")?;
    outln!()?;
    outln!("The page stays up: press Enter (or Ctrl-C) to stop.")?;
    let (pressed, enter) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        let _ = pressed.send(());
    });
    // Ctrl-C sets `stop` (the job's signal handler), it does not kill.
    while !stop.load(Ordering::Relaxed) {
        match enter.recv_timeout(Duration::from_millis(100)) {
            Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {}
        }
    }
    Ok(())
}

fn print_table(rows: &[WindowRow]) -> anyhow::Result<()> {
    outln!(
        "{:<21} {:<21} {:>10} {:>16} {:>10}",
        "window_start (UTC)",
        "window_end (UTC)",
        "orders",
        "gmv",
        "users"
    )?;
    for r in rows {
        outln!(
            "{:<21} {:<21} {:>10} {:>16} {:>10}",
            crate::time::format_rfc3339_s(r.window_start),
            crate::time::format_rfc3339_s(r.window_end),
            r.order_cnt,
            crate::event::format_cents(r.gmv_cents),
            r.user_cnt
        )?;
    }
    Ok(())
}
