//! `streamforge-tools`: what the people who build and measure StreamForge
//! use, kept out of the product binary.
//!
//! * `produce`: simulated order events (or files) into the Kafka topic,
//!   paced to a rate, or written as files (`--out-dir`);
//! * `gen-files`: generated events in a payload style into files for
//!   `streamforge run --source files`, reproducibly (fixed event times);
//! * `bench core` / `bench scaling` / `bench parse`: the benchmarks behind
//!   docs/performance.md.

mod bench;
mod parse_bench;
mod produce;
mod store_bench;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{anyhow, Context};
use clap::{Args, Parser, Subcommand};

use streamforge::config::Config;
use streamforge::source::generator::{GeneratorConfig, PayloadStyle};
use streamforge::source::kafka::KafkaSettings;

#[derive(Parser)]
#[command(
    name = "streamforge-tools",
    version,
    about = "StreamForge's load generator and benchmarks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Produce order events to Kafka: generated, or replayed from files.
    Produce(ProduceArgs),
    /// Benchmarks that print figures (see docs/performance.md).
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
    /// Write generated events into DIR/part-<p>.jsonl (one file per
    /// partition: the file source's layout), in a payload style. Event
    /// times start at a fixed instant, so the same flags give the same files.
    GenFiles(GenFilesArgs),
}

/// Shares and payload styles: the realistic mix's defaults are issue 15's
/// (2 % broken, 3 % duplicates); the canonical layout keeps the shares its
/// earlier figures were measured with (1 %, 2 %).
fn default_shares(style: PayloadStyle) -> (f64, f64) {
    match style {
        PayloadStyle::Canonical => (0.01, 0.02),
        _ => (0.02, 0.03),
    }
}

#[derive(Args, Clone)]
struct GenFilesArgs {
    /// Payload style: canonical, python, jackson, go, js, pretty, reordered, mix.
    #[arg(long, default_value = "mix")]
    style: PayloadStyle,
    /// Total events over all files.
    #[arg(long)]
    events: u64,
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    /// Directory to create (must be empty or new).
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Distinct users to draw from.
    #[arg(long, default_value_t = 100_000)]
    users: u64,
    /// Events per second of event time, per partition.
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// Share of broken events (default: 0.02 for the producer styles, 0.01 canonical).
    #[arg(long)]
    anomaly_share: Option<f64>,
    /// Share of re-sent copies (default: 0.03 for the producer styles, 0.02 canonical).
    #[arg(long)]
    duplicate_share: Option<f64>,
    /// Share of very late events (three minutes late), drawn only past the
    /// fourth minute of event time: none over a shorter input (at the
    /// default rate, up to 2.4M events per partition).
    #[arg(long, default_value_t = 0.0)]
    late_share: f64,
    /// Maximum within-partition event-time disorder, ms.
    #[arg(long, default_value_t = 2000)]
    disorder: u64,
    /// First event time, epoch ms (default 2025-11-25T10:00:00Z).
    #[arg(long, default_value_t = 1_764_064_800_000)]
    start_time_ms: i64,
}

#[derive(Args, Clone)]
struct ProduceArgs {
    /// Config file naming the Kafka settings (default: config/pipeline.yaml if it exists).
    #[arg(long, env = "STREAMFORGE_CONFIG")]
    config: Option<PathBuf>,
    /// Set any config key: --set kafka.topic=orders (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Events per second over all partitions; 0 = as fast as possible.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Total events (generated mode); default: until SIGINT.
    #[arg(long)]
    count: Option<u64>,
    /// Share of broken events (0..1).
    #[arg(long, default_value_t = 0.01)]
    anomaly_rate: f64,
    /// Share of re-sent copies of a recent event (0..1).
    #[arg(long, default_value_t = 0.02)]
    duplicate_rate: f64,
    /// Share of very late events (0..1).
    #[arg(long, default_value_t = 0.0)]
    late_rate: f64,
    /// Maximum within-partition event-time disorder, ms.
    #[arg(long, default_value_t = 3000)]
    disorder: u64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Distinct users to draw from.
    #[arg(long, default_value_t = 20_000)]
    users: u64,
    /// Replay files instead: one file per partition, line i of file p to partition p.
    #[arg(long, value_delimiter = ',')]
    from_files: Option<Vec<PathBuf>>,
    /// Write the generated events to DIR/part-<p>.jsonl (the file source's
    /// layout) instead of Kafka: what a fresh topic would get, in the same
    /// order. Needs --count; --rate then only sets event-time density.
    #[arg(long, value_name = "DIR", conflicts_with = "from_files")]
    out_dir: Option<PathBuf>,
    /// Partitions (files) for --out-dir.
    #[arg(long, default_value_t = 4, requires = "out_dir")]
    partitions: u32,
    /// Kafka record timestamps: `send` (the time of sending, Kafka's default)
    /// or `event` (each record's event time; brokers refuse stamps too far in
    /// the future: log.message.timestamp.after.max.ms).
    #[arg(long, value_parser = ["send", "event"], default_value = "send")]
    timestamps: String,
    /// Progress line on stderr (default: when stderr is a terminal).
    #[arg(long)]
    progress: Option<bool>,
    /// Payload style of generated events: canonical, python, jackson, go,
    /// js, pretty, reordered, or mix (the producer styles, drawn per record).
    #[arg(long, default_value = "canonical")]
    style: PayloadStyle,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// The core path on one thread from in-memory payloads, checkpoints on.
    Core {
        #[arg(long, default_value_t = 20_000_000)]
        events: u64,
        /// Distinct users to draw from (about this many per window at the default rate).
        #[arg(long, default_value_t = 100_000)]
        users: u64,
        /// Distinct users per window to aim for instead: sizes the pool of
        /// --users for the rate (the report gives the pool).
        #[arg(long)]
        users_per_window: Option<u64>,
        /// Event-time rate per partition (4 partitions).
        #[arg(long, default_value_t = 10_000)]
        rate: u64,
        #[arg(long, default_value_t = 2_000_000)]
        checkpoint_every: u64,
        /// Payload style (see `gen-files --help`); the realistic mix by default.
        #[arg(long, default_value = "mix")]
        style: PayloadStyle,
        /// Share of broken events (default: 0.02 for the producer styles, 0.01 canonical).
        #[arg(long)]
        anomaly_share: Option<f64>,
        /// Share of re-sent copies (default: 0.03 for the producer styles, 0.02 canonical).
        #[arg(long)]
        duplicate_share: Option<f64>,
        /// Also write the figures as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// JSON readers side by side (this build's parser, the parser before
    /// issue 15, serde_json, sonic-rs, simd-json) on the same payloads of
    /// each style, verdicts checked against the generator's intent.
    Parse {
        /// Payloads per style.
        #[arg(long, default_value_t = 200_000)]
        records: usize,
        /// Styles, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "mix,canonical")]
        styles: Vec<PayloadStyle>,
        /// Timed passes per reader (the median is reported).
        #[arg(long, default_value_t = 7)]
        rounds: usize,
        /// Only the readers whose name contains one of these (comma-separated).
        #[arg(long, value_delimiter = ',')]
        readers: Vec<String>,
        /// Share of broken events (default: 0.02, as the mix).
        #[arg(long, default_value_t = 0.02)]
        anomaly_share: f64,
        #[arg(long, default_value_t = 0.03)]
        duplicate_share: f64,
        /// Also write the figures as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Bytes sled writes for a checkpoint's bytes, in the checkpoint
    /// store's layout (pieces under `id ++ piece` keys, a flushed batch per
    /// checkpoint): a 40 MB, a 20 MB and a 1 MB checkpoint, the last batch
    /// removing the first.
    Store {
        /// Piece sizes in bytes, comma-separated (default: the store's own).
        #[arg(long, value_delimiter = ',')]
        pieces: Vec<usize>,
        /// sled segment sizes in bytes, comma-separated (a power of two;
        /// the store uses sled's default, 512 KiB).
        #[arg(long, value_delimiter = ',', default_value = "524288")]
        segments: Vec<usize>,
        /// Also write the figures as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// State scaling: checkpoint bytes, pause, recovery time (a real restart
    /// of `streamforge run` against the state directory) and peak RSS.
    Scaling {
        /// Distinct users per window; several (comma-separated) run one after
        /// another, each in a fresh process.
        #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000")]
        users: Vec<u64>,
        /// Accepted events per distinct user per window.
        #[arg(long, default_value_t = 2.0)]
        events_per_user: f64,
        /// Checkpoints timed once the state is at its steady size.
        #[arg(long, default_value_t = 10)]
        checkpoints: usize,
        /// Process restarts timed per scale.
        #[arg(long, default_value_t = 3)]
        restarts: usize,
        /// The streamforge binary to restart (default: the one built beside this tool).
        #[arg(long)]
        binary: Option<PathBuf>,
        /// Also write the figures as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

/// A line on standard output. A reader that went away (`| head -3`) is not
/// an error: the rest of the command (a `--json` file) still happens.
fn out(line: &str) -> anyhow::Result<()> {
    use std::io::Write;
    match writeln!(std::io::stdout().lock(), "{line}") {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("writing to standard output"),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    streamforge::telemetry::init_logging(false);
    let outcome = match cli.command {
        Command::Produce(args) => produce(args),
        Command::Bench { command } => bench(command),
        Command::GenFiles(args) => gen_files(args),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn stop_flag() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone())
            .context("installing the signal handlers")?;
    }
    Ok(stop)
}

fn kafka_settings(args: &ProduceArgs) -> anyhow::Result<KafkaSettings> {
    let mut sets = Vec::new();
    for kv in &args.set {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| anyhow!("--set {kv}: write KEY=VALUE, e.g. --set kafka.topic=orders"))?;
        sets.push((k.trim().to_string(), v.to_string()));
    }
    Ok(Config::load(args.config.as_deref(), &sets)?.config.kafka)
}

fn produce(args: ProduceArgs) -> anyhow::Result<()> {
    let settings = if args.out_dir.is_some() {
        KafkaSettings::default()
    } else {
        kafka_settings(&args)?
    };
    let opts = produce::ProduceOptions {
        settings,
        rate: args.rate,
        count: args.count,
        anomaly_rate: args.anomaly_rate,
        duplicate_rate: args.duplicate_rate,
        late_rate: args.late_rate,
        disorder_ms: args.disorder,
        seed: args.seed,
        users: args.users,
        from_files: args.from_files,
        stop: stop_flag()?,
        progress: args
            .progress
            .unwrap_or_else(|| std::io::stderr().is_terminal()),
        event_timestamps: args.timestamps == "event",
        style: args.style,
    };
    let (report, target) = match &args.out_dir {
        Some(dir) => (
            produce::write_generated_files(&opts, None, dir, args.partitions)?,
            dir.display().to_string(),
        ),
        None => (produce::produce(&opts)?, opts.settings.topic.clone()),
    };
    eprintln!(
        "produced {} records in {:.2?} ({:.0}/s) to {}: {}",
        report.produced,
        report.elapsed,
        report.produced as f64 / report.elapsed.as_secs_f64().max(1e-9),
        target,
        report
            .per_partition
            .iter()
            .map(|(p, n)| format!("p{p}={n}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    Ok(())
}

fn gen_files(args: GenFilesArgs) -> anyhow::Result<()> {
    let (anomalies, duplicates) = default_shares(args.style);
    let generator = GeneratorConfig {
        seed: args.seed,
        partitions: args.partitions,
        events_per_partition: None,
        rate: args.rate,
        start_time_ms: args.start_time_ms,
        users: args.users.max(1),
        anomaly_share: args.anomaly_share.unwrap_or(anomalies),
        duplicate_share: args.duplicate_share.unwrap_or(duplicates),
        late_share: args.late_share,
        disorder_ms: args.disorder,
        style: args.style,
    };
    let opts = produce::ProduceOptions {
        settings: KafkaSettings::default(),
        rate: 0,
        count: Some(args.events),
        anomaly_rate: generator.anomaly_share,
        duplicate_rate: generator.duplicate_share,
        late_rate: generator.late_share,
        disorder_ms: generator.disorder_ms,
        seed: generator.seed,
        users: generator.users,
        from_files: None,
        stop: stop_flag()?,
        progress: std::io::stderr().is_terminal(),
        event_timestamps: false,
        style: generator.style,
    };
    let report =
        produce::write_generated_files(&opts, Some(generator), &args.out, args.partitions)?;
    eprintln!(
        "wrote {} {} events in {:.2?} to {}",
        report.produced,
        args.style,
        report.elapsed,
        args.out.display()
    );
    Ok(())
}

fn bench(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Core {
            events,
            users,
            users_per_window,
            rate,
            checkpoint_every,
            style,
            anomaly_share,
            duplicate_share,
            json,
        } => {
            let (anomalies, duplicates) = default_shares(style);
            let opts = bench::CoreBenchOptions {
                events,
                users,
                users_per_window,
                rate,
                checkpoint_every,
                style,
                anomaly_share: anomaly_share.unwrap_or(anomalies),
                duplicate_share: duplicate_share.unwrap_or(duplicates),
                ..Default::default()
            };
            eprintln!(
                "bench core: {events} {style} events, {users} users, {} partitions at {rate}/s event time, checkpoint every {checkpoint_every}",
                opts.partitions
            );
            let report = bench::core(&opts)?;
            out(&report.markdown())?;
            if let Some(path) = json {
                std::fs::write(&path, serde_json::to_string_pretty(&report)?)
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
        }
        BenchCommand::Parse {
            records,
            styles,
            rounds,
            readers,
            anomaly_share,
            duplicate_share,
            json,
        } => {
            let opts = parse_bench::ParseBenchOptions {
                records,
                styles,
                rounds,
                anomaly_share,
                duplicate_share,
                readers,
            };
            let rows = parse_bench::run(&opts)?;
            out(&parse_bench::markdown(&rows, rounds))?;
            if let Some(path) = json {
                std::fs::write(&path, serde_json::to_string_pretty(&rows)?)
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
        }
        BenchCommand::Store {
            pieces,
            segments,
            json,
        } => {
            let rows = store_bench::run(&pieces, &segments)?;
            out(&store_bench::markdown(&rows))?;
            if let Some(path) = json {
                std::fs::write(&path, serde_json::to_string_pretty(&rows)?)
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
        }
        BenchCommand::Scaling {
            users,
            events_per_user,
            checkpoints,
            restarts,
            binary,
            json,
        } => {
            let opts = bench::ScalingBenchOptions {
                events_per_user,
                checkpoints,
                restarts,
                binary,
                ..Default::default()
            };
            let reports = bench::scaling_suite(&opts, &users)?;
            out(bench::ScalingBenchReport::markdown_header())?;
            for r in &reports {
                out(&r.markdown_row())?;
            }
            if let Some(path) = json {
                let value = if let [one] = reports.as_slice() {
                    serde_json::to_string_pretty(one)?
                } else {
                    serde_json::to_string_pretty(&reports)?
                };
                std::fs::write(&path, value)
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
        }
    }
    Ok(())
}
