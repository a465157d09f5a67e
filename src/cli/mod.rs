//! The `streamforge` command line.
//!
//! Settings come from defaults, then the config file (`--config`, else
//! `config/pipeline.yaml` when present), then `STREAMFORGE__*` variables,
//! then the flags here. `--set key.path=value` reaches any key.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::{Args, Parser, Subcommand};

use crate::checkpoint::CheckpointStore;
use crate::config::{Config, SinkKind, SourceKind};
use crate::job::{self, JobOptions, JobReport};
use crate::sink::embedded::EmbeddedSink;
use crate::sink::Sink;
use crate::source::file::FileSource;
use crate::source::generator::GeneratorSource;
use crate::source::Source;
use crate::telemetry::{self, Metrics};

/// `println!` that hands back the write error instead of panicking, as
/// `anyhow::Error`: a reader that closed the pipe early (`| head`) becomes
/// [`StdoutClosed`], which [`main`] ends quietly with success.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($arg)*).map_err($crate::cli::stdout_error)
    }};
}

mod demo;
mod ops;
mod paced;
mod read;
mod repair;

#[derive(Parser)]
#[command(
    name = "streamforge",
    version,
    about = "Exactly-once event-time order metrics: Kafka -> StreamForge -> ClickHouse"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_parser = ["text", "json"], default_value = "text")]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole pipeline on simulated orders, with no servers, and print the windows.
    Demo(demo::DemoArgs),
    /// Run the job.
    Run(RunArgs),
    /// Print the final windows from the configured sink, one JSON object a line.
    Results(ResultsArgs),
    /// Look at the checkpoints of a state directory.
    Checkpoint {
        #[command(subcommand)]
        command: CheckpointCommand,
    },
    /// Recompute the windows independently from the source and diff them with the sink.
    Verify(VerifyArgs),
    /// Recompute the windows of a past time range from the source and upsert them.
    Replay(ops::ReplayArgs),
    /// Look into the anomaly log, and produce repaired records again.
    Anomalies {
        #[command(subcommand)]
        command: ops::AnomaliesCommand,
    },
}

/// `--source` and `--sink`, shared by the commands that build both.
#[derive(Args, Clone, Default)]
struct Endpoints {
    /// generator | files:PATH[,PATH...] | kafka
    #[arg(long)]
    source: Option<String>,
    /// embedded | clickhouse
    #[arg(long)]
    sink: Option<String>,
}

impl Endpoints {
    fn apply(&self, out: &mut Vec<(String, String)>) -> anyhow::Result<()> {
        if let Some(s) = &self.source {
            apply_source_flag(s, out)?;
        }
        if let Some(s) = &self.sink {
            apply_sink_flag(s, out)?;
        }
        Ok(())
    }
}

#[derive(Args, Clone)]
struct VerifyArgs {
    #[command(flatten)]
    common: Common,
    /// The input is read from its beginning to its current end.
    #[command(flatten)]
    endpoints: Endpoints,
    /// Only the summary line, not the side-by-side table.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args, Clone, Default)]
struct Common {
    /// Config file (default: config/pipeline.yaml if it exists).
    #[arg(long, env = "STREAMFORGE_CONFIG")]
    config: Option<PathBuf>,
    /// State directory: checkpoints, and the embedded sink unless configured elsewhere.
    #[arg(long, env = "STREAMFORGE_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Set any config key: --set window.size=120s (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

#[derive(Args, Clone)]
struct RunArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    endpoints: Endpoints,
    /// Anomaly log path.
    #[arg(long)]
    anomaly_log: Option<PathBuf>,
    /// Stop at the end of the input, after emitting every window and a final checkpoint.
    #[arg(long)]
    bounded: bool,
    /// Barrier interval, e.g. 5s or 500ms.
    #[arg(long)]
    checkpoint_interval: Option<String>,
    /// Barrier every N records (also).
    #[arg(long)]
    checkpoint_events: Option<u64>,
    /// Serve /metrics, /health and /ready here (default 127.0.0.1:9464;
    /// 127.0.0.1:0 takes a free port; `off` turns the listener off).
    #[arg(long)]
    metrics_addr: Option<String>,
    /// Live progress line on stderr (default: when stderr is a terminal).
    #[arg(long)]
    progress: Option<bool>,
}

#[derive(Args, Clone)]
struct ResultsArgs {
    #[command(flatten)]
    common: Common,
    /// embedded | clickhouse
    #[arg(long)]
    sink: Option<String>,
    /// A configured grouping (`city`, `category`, `city,category`): its
    /// rows, with the dimension fields, instead of the window totals.
    #[arg(long, value_name = "DIMS")]
    group_by: Option<String>,
}

#[derive(Subcommand)]
enum CheckpointCommand {
    /// Ids, times, sizes, offsets and crc status.
    List(Common),
    /// Everything one checkpoint holds (default: the newest).
    Inspect {
        #[command(flatten)]
        common: Common,
        /// The checkpoint's id, as `checkpoint list` shows it. Default: the
        /// newest.
        #[arg(long)]
        id: Option<u64>,
    },
    /// Damage a checkpoint on purpose (demos and drills): recovery must skip it.
    Corrupt {
        #[command(flatten)]
        common: Common,
        /// The checkpoint's id, as `checkpoint list` shows it. Default: the
        /// newest.
        #[arg(long)]
        id: Option<u64>,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init_logging(cli.log_format == "json");
    crate::failpoint::setup();
    match dispatch(cli.command) {
        Ok(code) => code,
        // `streamforge ... | head`: the reader has all it wanted.
        Err(e) if is_stdout_closed(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Standard output was closed by its reader (EPIPE): the end of the
/// output, not a failure. Kept apart from other broken pipes (a server
/// connection), which stay errors.
#[derive(Debug)]
pub struct StdoutClosed;

impl std::fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("standard output closed by its reader")
    }
}

impl std::error::Error for StdoutClosed {}

/// Maps an error writing standard output: EPIPE to [`StdoutClosed`],
/// anything else to an error that says it was standard output.
pub fn stdout_error(e: std::io::Error) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        anyhow::Error::new(StdoutClosed)
    } else {
        anyhow::Error::new(e).context("writing to standard output")
    }
}

/// True when `e` is (or wraps) [`StdoutClosed`].
pub fn is_stdout_closed(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<StdoutClosed>())
}

fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Demo(args) => demo::demo(args),
        Command::Run(args) => run(args),
        Command::Results(args) => read::results(args),
        Command::Checkpoint { command } => checkpoint(command),
        Command::Verify(args) => read::verify(args),
        Command::Replay(args) => ops::replay(args),
        Command::Anomalies { command } => ops::anomalies(command),
    }
}

fn overrides(common: &Common) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for kv in &common.set {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| anyhow!("--set {kv}: write KEY=VALUE, e.g. --set window.size=120s"))?;
        out.push((k.trim().to_string(), v.to_string()));
    }
    if let Some(dir) = &common.state_dir {
        out.push(("checkpoint.state_dir".into(), dir.display().to_string()));
    }
    Ok(out)
}

fn apply_source_flag(spec: &str, out: &mut Vec<(String, String)>) -> anyhow::Result<()> {
    match spec.split_once(':') {
        Some(("files", paths)) => {
            let list: Vec<String> = paths
                .split(',')
                .filter(|p| !p.is_empty())
                .map(|p| format!("{p:?}"))
                .collect();
            if list.is_empty() {
                bail!(
                    "--source {spec}: name the input after `files:`, a directory or files \
                     (files:DIR, files:a.jsonl,b.jsonl)"
                );
            }
            out.push(("source.kind".into(), "files".into()));
            out.push(("source.files".into(), format!("[{}]", list.join(","))));
        }
        None if spec == "generator" || spec == "kafka" || spec == "files" => {
            out.push(("source.kind".into(), spec.into()));
        }
        _ => bail!("--source {spec}: use generator, files:PATH[,PATH...] or kafka"),
    }
    Ok(())
}

fn apply_sink_flag(spec: &str, out: &mut Vec<(String, String)>) -> anyhow::Result<()> {
    match spec {
        "embedded" | "clickhouse" => out.push(("sink.kind".into(), spec.into())),
        _ => bail!("--sink {spec}: use embedded or clickhouse"),
    }
    Ok(())
}

/// Builds the configured source.
pub fn build_source(cfg: &Config) -> anyhow::Result<Box<dyn Source>> {
    Ok(match cfg.source.kind {
        SourceKind::Generator => Box::new(GeneratorSource::new(cfg.source.generator.clone())?),
        SourceKind::Files => Box::new(FileSource::new(&cfg.source.files)?),
        SourceKind::Kafka => Box::new(crate::source::kafka::KafkaSource::new(&cfg.kafka)?),
    })
}

/// Builds the configured sink.
/// The sink a job or a replay writes to: a ClickHouse table is checked, or
/// created with its database when absent (see [`open_sink`] for reading).
pub fn build_sink(cfg: &Config) -> anyhow::Result<Box<dyn Sink>> {
    sink_of(cfg, true)
}

/// The sink `results` and `verify` read: nothing is created, so a mistyped
/// database or table is an error that names it, never new empty schema.
pub fn open_sink(cfg: &Config) -> anyhow::Result<Box<dyn Sink>> {
    sink_of(cfg, false)
}

fn sink_of(cfg: &Config, for_writing: bool) -> anyhow::Result<Box<dyn Sink>> {
    Ok(match cfg.sink.kind {
        SinkKind::Embedded => Box::new(EmbeddedSink::open(&cfg.embedded_sink_path())?),
        SinkKind::Clickhouse => {
            let mut sink = crate::sink::clickhouse::ClickHouseSink::connect(&cfg.clickhouse)?;
            sink.set_groupings(cfg.dimensions.groupings.clone());
            if cfg.kafka.group_mode {
                // Reads give the combined figures of the partial rows.
                sink.set_group_mode(None);
            }
            if for_writing {
                sink.prepare()?;
            }
            Box::new(sink)
        }
    })
}

fn stop_flag() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone())
            .context("installing the signal handlers")?;
    }
    Ok(stop)
}

fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let mut ov = overrides(&args.common)?;
    args.endpoints.apply(&mut ov)?;
    if let Some(p) = &args.anomaly_log {
        ov.push(("anomaly_log".into(), p.display().to_string()));
    }
    if let Some(i) = &args.checkpoint_interval {
        ov.push(("checkpoint.interval".into(), i.clone()));
    }
    if let Some(n) = args.checkpoint_events {
        ov.push(("checkpoint.interval_events".into(), n.to_string()));
    }
    if let Some(a) = &args.metrics_addr {
        ov.push(("metrics_addr".into(), a.clone()));
    }
    let loaded = Config::load(args.common.config.as_deref(), &ov)?;
    match &loaded.file {
        Some(file) => tracing::info!(file = %file.display(), "configuration read"),
        None => tracing::info!(
            "configuration: built-in defaults (no --config, no STREAMFORGE_CONFIG, and no {} in the \
             working directory), with environment variables and flags",
            crate::config::DEFAULT_CONFIG
        ),
    }
    let cfg = loaded.config;
    let progress = args
        .progress
        .unwrap_or_else(|| std::io::stderr().is_terminal());
    if cfg.kafka.group_mode {
        let report = crate::group::run(&cfg, args.bounded, stop_flag()?)?;
        for (p, r) in &report.partitions {
            eprintln!(
                "partition {p}: {} records read, {} accepted, {} anomalies, last checkpoint #{}",
                r.counters.read, r.counters.accepted, r.counters.anomalies, r.last_checkpoint_id
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let report = run_job(&cfg, args.bounded, progress)?;
    print_summary(&report);
    Ok(ExitCode::SUCCESS)
}

fn run_job(cfg: &Config, bounded: bool, progress: bool) -> anyhow::Result<JobReport> {
    let metrics = Arc::new(Metrics::new());
    // Served until the job returns; a port already taken is a WARN, not a failure.
    let _listener = telemetry::start(cfg.metrics_listen_addr(), metrics.clone());
    let source = build_source(cfg)?;
    run_job_with(cfg, source, bounded, progress, metrics, stop_flag()?)
}

/// Runs the job on `source` with the given metrics (served by a listener
/// the caller keeps) and stop flag.
fn run_job_with(
    cfg: &Config,
    source: Box<dyn Source>,
    bounded: bool,
    progress: bool,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<JobReport> {
    let sink = build_sink(cfg)?;
    metrics.live.set_pipeline(source.id(), sink.describe());
    let opts = JobOptions {
        bounded,
        stop,
        progress,
        shutdown_grace: Duration::from_secs(10),
    };
    job::run(cfg, source, sink, &opts, metrics)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn print_summary(r: &JobReport) {
    let c = &r.counters;
    let mut pauses = r.checkpoint_pauses.clone();
    pauses.sort();
    // A run stopped by a signal may have waited for input most of its
    // time: its rate is an average since start, not a throughput.
    let rate = if r.finished_input {
        "/s"
    } else {
        "/s on average since start"
    };
    eprintln!(
        "streamforge: {} records in {:.2?} ({:.0}{rate}): {} accepted, {} duplicates, {} anomalies ({} late)",
        c.read,
        r.elapsed,
        c.read as f64 / r.elapsed.as_secs_f64().max(1e-9),
        c.accepted,
        c.duplicates,
        c.anomalies,
        c.late
    );
    eprintln!(
        "  windows: {} emitted, {} re-emitted; rows acknowledged by the sink: {}, still pending: {}",
        c.windows_emitted, c.windows_re_emitted, r.rows_acked, r.rows_pending
    );
    eprintln!(
        "  checkpoints: {} (last #{}, {} bytes, pause p50 {:.2?} p99 {:.2?}){}",
        r.checkpoints,
        r.last_checkpoint_id,
        r.checkpoint_bytes,
        percentile(&pauses, 0.5),
        percentile(&pauses, 0.99),
        match r.restored_from {
            Some(id) => format!("; recovered from checkpoint #{id}"),
            None => String::new(),
        }
    );
    eprintln!(
        "  state: {}  sink: {}  anomaly log: {}",
        r.state_dir.display(),
        r.sink,
        r.anomaly_log.display()
    );
}

fn open_store(common: &Common) -> anyhow::Result<(CheckpointStore, PathBuf)> {
    let cfg = Config::load(common.config.as_deref(), &overrides(common)?)?.config;
    let dir = cfg.checkpoint.state_dir.clone();
    if !dir.join("checkpoints").exists() {
        if let Some(one) = a_partition_dir(&dir) {
            bail!(
                "no checkpoints in {} itself: it is a group-mode state directory, with one state \
                 directory per partition; name one, e.g. --state-dir {}",
                dir.display(),
                one.display()
            );
        }
        bail!(
            "no checkpoints in {}: is this a state directory?",
            dir.display()
        );
    }
    Ok((CheckpointStore::open(&dir, cfg.checkpoint.keep)?, dir))
}

fn checkpoint(command: CheckpointCommand) -> anyhow::Result<ExitCode> {
    match command {
        CheckpointCommand::List(common) => {
            let (store, dir) = open_store(&common)?;
            outln!("checkpoints in {}", dir.display())?;
            outln!(
                "{:>8}  {:<24}  {:>10}  {:<8}  {:<24}  {:<14}  offsets",
                "id",
                "created (UTC)",
                "bytes",
                "crc",
                "watermark",
                "stored as"
            )?;
            for info in store.list()? {
                match info.status {
                    Ok(s) => outln!(
                        "{:>8}  {:<24}  {:>10}  {:<8}  {:<24}  {:<14}  {}",
                        info.id,
                        crate::time::format_rfc3339_ms(s.created_ms),
                        info.bytes,
                        "ok",
                        telemetry::format_watermark(s.watermark_ms),
                        s.kind.split(" (").next().unwrap_or(""),
                        format_offsets(&s.offsets)
                    )?,
                    Err(e) => outln!(
                        "{:>8}  {:<24}  {:>10}  {:<8}  {e}",
                        info.id,
                        "?",
                        info.bytes,
                        "CORRUPT"
                    )?,
                }
            }
        }
        CheckpointCommand::Inspect { common, id } => {
            let (store, _) = open_store(&common)?;
            let id = pick_id(&store, id)?;
            print_checkpoint(&store.load(id)?)?;
        }
        CheckpointCommand::Corrupt { common, id } => {
            let (store, _) = open_store(&common)?;
            let id = pick_id(&store, id)?;
            store.corrupt(id)?;
            outln!("checkpoint {id} corrupted (one byte flipped); the next start must skip it")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `streamforge checkpoint inspect`: everything one checkpoint holds.
fn print_checkpoint(cp: &crate::checkpoint::Checkpoint) -> anyhow::Result<()> {
    let users: usize = cp.engine.windows.panes.iter().map(|p| p.3.len()).sum();
    let ids: usize = cp.engine.dedup.expiry.iter().map(|e| e.1.len()).sum();
    outln!("checkpoint       {}", cp.id)?;
    outln!(
        "created          {}",
        crate::time::format_rfc3339_ms(cp.created_ms)
    )?;
    outln!("source           {}", cp.source_id)?;
    outln!("offsets (next)   {}", format_offsets(&cp.offsets))?;
    match &cp.bounded_end {
        Some(end) => outln!(
            "bounded run      in progress, ends at {}",
            format_offsets(end)
        )?,
        None => outln!("bounded run      none in progress")?,
    }
    if let Some(identity) = &cp.source_identity {
        outln!("source identity  {identity}")?;
    }
    outln!(
        "watermark        {}",
        telemetry::format_watermark(cp.engine.watermark)
    )?;
    outln!("anomaly log      {} bytes", cp.anomaly_log_len)?;
    outln!(
        "window state     {} panes, {} user entries, {} windows fired and open",
        cp.engine.windows.panes.len(),
        users,
        cp.engine.windows.fired.len()
    )?;
    outln!("dedup            {ids} ids")?;
    outln!(
        "pending output   {} rows in {} batches",
        cp.pending.iter().map(|b| b.rows.len()).sum::<usize>(),
        cp.pending.len()
    )?;
    for (p, clock) in cp.engine.clocks.iter().enumerate() {
        outln!(
            "partition {p:<5}  max event time {}",
            telemetry::format_watermark(clock.max_event_ms)
        )?;
    }
    Ok(())
}

fn pick_id(store: &CheckpointStore, id: Option<u64>) -> anyhow::Result<u64> {
    match id {
        Some(id) => Ok(id),
        None => store
            .ids()?
            .last()
            .copied()
            .ok_or_else(|| anyhow!("the store holds no checkpoint")),
    }
}

fn format_offsets(offsets: &std::collections::BTreeMap<u32, u64>) -> String {
    offsets
        .iter()
        .map(|(p, o)| format!("{p}:{o}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Used by tests and tools that need a path relative to the crate.
pub fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// One of group mode's `partition-<p>` state directories in `dir` (the
/// lowest `p`), if it holds any.
fn a_partition_dir(dir: &std::path::Path) -> Option<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .filter_map(|e| {
            let p: u32 = e
                .file_name()
                .to_str()?
                .strip_prefix("partition-")?
                .parse()
                .ok()?;
            Some((p, e.path()))
        })
        .min()
        .map(|(_, path)| path)
}
