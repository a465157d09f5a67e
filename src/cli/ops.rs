//! The operator commands of the CLI: `replay` and `anomalies`.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand};

use super::repair::{self, Filter};
use super::{build_sink, overrides, Common, Endpoints};
use crate::config::{Config, SourceKind};
use crate::replay::{self, ReplayOptions};
use crate::source::file::FileSource;
use crate::source::kafka::{self, KafkaSource};
use crate::source::Source;

#[derive(Args, Clone)]
pub(super) struct ReplayArgs {
    #[command(flatten)]
    common: Common,
    /// kafka (default: the configured source) or files:PATH[,PATH...]; and the sink.
    #[command(flatten)]
    endpoints: Endpoints,
    /// Start of the range: RFC 3339 (2025-11-25T10:00:00Z) or epoch milliseconds.
    #[arg(long)]
    from: String,
    /// End of the range (exclusive), same forms.
    #[arg(long)]
    to: String,
    /// Print the windows that would change, and write nothing.
    #[arg(long)]
    dry_run: bool,
    /// No live job runs on this input (stopped, or a finished bounded run):
    /// also write windows it could still have updated.
    #[arg(long)]
    allow_open: bool,
    /// Read every partition from its first record instead of looking the
    /// start up by timestamp (for producers that stamp records before their
    /// event time).
    #[arg(long)]
    from_earliest: bool,
    /// Progress line on stderr (default: when stderr is a terminal).
    #[arg(long)]
    progress: Option<bool>,
}

#[derive(Subcommand, Clone)]
pub(super) enum AnomaliesCommand {
    /// Print the anomaly records (JSON lines), optionally filtered.
    List(AnomalyFilterArgs),
    /// Counts by reason and partition, offset and time ranges.
    Stats(AnomalyFilterArgs),
    /// Produce the selected records again to the topic, repaired by --fix.
    Replay {
        #[command(flatten)]
        filter: AnomalyFilterArgs,
        /// Shell command that repairs payloads: one per line on stdin, one
        /// per line on stdout, an empty line drops the record (sed, jq -c,
        /// a script; see docs/operations.md).
        #[arg(long)]
        fix: Option<String>,
        /// Print what would be produced, and produce nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Merge anomaly logs into one, each record once per (source, partition,
    /// offset): group mode's per-partition files of every instance.
    Merge {
        #[command(flatten)]
        common: Common,
        /// The logs (default: `anomaly_log` from the config and every
        /// `<anomaly_log>.partition-*` beside it).
        files: Vec<std::path::PathBuf>,
    },
}

#[derive(Args, Clone)]
pub(super) struct AnomalyFilterArgs {
    #[command(flatten)]
    common: Common,
    /// The anomaly log (default: `anomaly_log` from the config).
    #[arg(long)]
    log: Option<std::path::PathBuf>,
    /// A reason (bad_amount, missing_field:user_id) or a family (missing_field).
    #[arg(long)]
    reason: Option<String>,
    /// Only records of this partition.
    #[arg(long)]
    partition: Option<u32>,
}

fn parse_time(flag: &str, text: &str) -> anyhow::Result<i64> {
    match kafka::StartAt::parse(text) {
        Ok(kafka::StartAt::Time(ms)) => Ok(ms),
        _ => bail!(
            "{flag} {text}: use an RFC 3339 time (2025-11-25T10:00:00Z) or epoch milliseconds"
        ),
    }
}

pub(super) fn replay(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let from_ms = parse_time("--from", &args.from)?;
    let to_ms = parse_time("--to", &args.to)?;
    let mut ov = overrides(&args.common)?;
    args.endpoints.apply(&mut ov)?;
    let cfg = Config::load(args.common.config.as_deref(), &ov)?.config;
    let spec = cfg.window.spec();
    let read_from = replay::read_from_ms(&spec, from_ms, to_ms);
    let mut open = |from_earliest: bool| -> anyhow::Result<Box<dyn Source>> {
        Ok(match cfg.source.kind {
            SourceKind::Kafka => {
                let mut settings = cfg.kafka.clone();
                settings.start = if from_earliest {
                    "earliest".to_string()
                } else {
                    read_from.to_string()
                };
                // Never touch the live job's consumer group.
                settings.commit_offsets = false;
                Box::new(KafkaSource::new(&settings)?)
            }
            SourceKind::Files => Box::new(FileSource::new(&cfg.source.files)?),
            SourceKind::Generator => bail!(
                "replay reads a log that holds the history: use --source kafka or --source files:PATH; the generator is not one"
            ),
        })
    };
    let mut sink = build_sink(&cfg)?;
    let opts = ReplayOptions {
        from_ms,
        to_ms,
        dry_run: args.dry_run,
        time_guard: crate::job::TimeGuard::of(&cfg.window),
        progress: args
            .progress
            .unwrap_or_else(|| std::io::stderr().is_terminal()),
        allow_open: args.allow_open,
        from_earliest: args.from_earliest,
        groupings: cfg.dimensions.spec(),
    };
    let report = replay::replay(&spec, &opts, &mut open, sink.as_mut())?;
    let mut out = std::io::stdout().lock();
    report.print_diff(&mut out).map_err(super::stdout_error)?;
    eprintln!("{}", report.summary());
    if !report.anomalies.is_empty() {
        let by: Vec<String> = report
            .anomalies
            .iter()
            .map(|(r, n)| format!("{r} {n}"))
            .collect();
        eprintln!("  anomalies read (not counted): {}", by.join(", "));
    }
    for (p, read) in &report.partitions {
        eprintln!(
            "  partition {p}: offsets {}..{} read{}",
            read.start,
            read.next,
            if report.read_from_earliest {
                " (from its first record)"
            } else {
                ""
            }
        );
    }
    if !report.open.is_empty() {
        eprintln!(
            "  {} windows from {} on were refused: the live job may still update them. Replay them later, or pass --allow-open if no job runs on this input.",
            report.open.len(),
            crate::time::format_rfc3339_s(report.open[0])
        );
    }
    if !report.incomplete.is_empty() {
        eprintln!(
            "  {} windows were skipped: retention deleted records they may hold.",
            report.incomplete.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn load_anomalies(
    args: &AnomalyFilterArgs,
) -> anyhow::Result<(Config, Vec<crate::anomaly_log::AnomalyRecord>)> {
    let cfg = Config::load(args.common.config.as_deref(), &overrides(&args.common)?)?.config;
    let path = args.log.clone().unwrap_or_else(|| cfg.anomaly_log.clone());
    if let Some(reason) = &args.reason {
        repair::check_reason(reason)?;
    }
    let filter = Filter {
        reason: args.reason.clone(),
        partition: args.partition,
    };
    let records = repair::read(&path)?
        .into_iter()
        .filter(|r| filter.matches(r))
        .collect();
    Ok((cfg, records))
}

/// `anomalies list`: one JSON record per line on stdout.
fn write_records(records: &[crate::anomaly_log::AnomalyRecord]) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for r in records {
        serde_json::to_writer(&mut out, r)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// `anomalies replay --dry-run`: the repaired payloads on stdout.
fn write_repaired(repaired: &[repair::Repaired]) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for r in repaired {
        write!(out, "partition {} (was offset {}): ", r.partition, r.offset)?;
        out.write_all(&r.payload)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

pub(super) fn anomalies(command: AnomaliesCommand) -> anyhow::Result<ExitCode> {
    match command {
        AnomaliesCommand::List(args) => {
            let (_, records) = load_anomalies(&args)?;
            write_records(&records).map_err(super::stdout_error)?;
        }
        AnomaliesCommand::Stats(args) => {
            let (_, records) = load_anomalies(&args)?;
            repair::stats(&records)
                .print(&mut std::io::stdout().lock())
                .map_err(super::stdout_error)?;
        }
        AnomaliesCommand::Merge { common, files } => merge_logs(&common, files)?,
        AnomaliesCommand::Replay {
            filter,
            fix,
            dry_run,
        } => return replay_anomalies(&filter, fix.as_deref(), dry_run),
    }
    Ok(ExitCode::SUCCESS)
}

/// `anomalies replay`: the selected records, through the fix when given,
/// printed (`--dry-run`) or produced to the configured topic.
fn replay_anomalies(
    filter: &AnomalyFilterArgs,
    fix: Option<&str>,
    dry_run: bool,
) -> anyhow::Result<ExitCode> {
    let (cfg, records) = load_anomalies(filter)?;
    if records.is_empty() {
        eprintln!("anomalies replay: no record matches; nothing to do");
        return Ok(ExitCode::SUCCESS);
    }
    let selected: Vec<&crate::anomaly_log::AnomalyRecord> = records.iter().collect();
    let report = repair::repair(&selected, fix)?;
    for (p, o) in &report.multiline {
        eprintln!("  skipped partition {p} offset {o}: the payload holds a newline, so it cannot go through one-line repair");
    }
    let unchanged_by_fix = fix.is_some() && report.unchanged as usize == report.repaired.len();
    let fixed = match &fix {
        Some(_) => format!(
            ", {} changed by the fix, {} unchanged",
            report.repaired.len() as u64 - report.unchanged,
            report.unchanged
        ),
        None => String::new(),
    };
    if dry_run {
        write_repaired(&report.repaired).map_err(super::stdout_error)?;
        eprintln!(
            "anomalies replay (dry run): {} selected, {} would be produced{fixed}, {} dropped by the fix, {} skipped; \
             to topic {} on {} (kafka.topic, kafka.brokers), each to its partition{}",
            records.len(),
            report.repaired.len(),
            report.dropped,
            report.multiline.len(),
            cfg.kafka.topic,
            cfg.kafka.brokers,
            match cfg.source.kind {
                crate::config::SourceKind::Kafka => "",
                _ => " (a topic whatever the job's source: a job over files does not read them; \
                      repair the files instead, or run the job on the topic)",
            }
        );
        if unchanged_by_fix && !report.repaired.is_empty() {
            eprintln!("anomalies replay: the fix changed none of the records; as they are they would be refused again. Check the command against `streamforge anomalies list`");
        }
        return Ok(ExitCode::SUCCESS);
    }
    if unchanged_by_fix && !report.repaired.is_empty() {
        bail!(
            "anomalies replay: the fix changed none of the {} records, so they would only be refused again; nothing was produced. Check the command against `streamforge anomalies list` (without --fix, records go back as they are)",
            report.repaired.len()
        );
    }
    // Always the Kafka topic of the config, whatever the source kind:
    // this is how repaired records get back into the stream.
    let settings = cfg.kafka.clone();
    let topic = settings.topic.clone();
    let partitions = report
        .repaired
        .iter()
        .map(|r| r.partition + 1)
        .max()
        .unwrap_or(0);
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let files = repair::write_partition_files(dir.path(), &report.repaired, partitions)?;
    let produced = crate::source::kafka::producer::produce_files(
        &settings,
        &files,
        false,
        &AtomicBool::new(false),
    )
    .map_err(|e| anyhow!("anomalies replay: producing the repaired records failed: {e:#}. Running the same command again is safe: copies are duplicates by event_id"))?;
    eprintln!(
        "anomalies replay: {} selected, {} produced to topic {topic}{fixed}, {} dropped by the fix, {} skipped. Records late for the live job: run `streamforge replay` over their time range.",
        records.len(),
        produced.produced,
        report.dropped,
        report.multiline.len()
    );
    Ok(ExitCode::SUCCESS)
}

/// `anomalies merge`: the union of the logs on stdout, a line per record.
fn merge_logs(common: &Common, mut files: Vec<std::path::PathBuf>) -> anyhow::Result<()> {
    if files.is_empty() {
        let cfg = Config::load(common.config.as_deref(), &overrides(common)?)?.config;
        files = repair::group_logs(&cfg.anomaly_log)?;
        if files.is_empty() {
            bail!(
                "anomalies merge: neither {} nor any {}.partition-* exists; name the logs to merge",
                cfg.anomaly_log.display(),
                cfg.anomaly_log.display()
            );
        }
    }
    if let Some(missing) = files.iter().find(|f| !f.is_file()) {
        bail!(
            "anomalies merge: {} is not a file; name the anomaly logs to merge",
            missing.display()
        );
    }
    let mut logs = Vec::with_capacity(files.len());
    for (i, f) in files.iter().enumerate() {
        logs.push((i, repair::read(f)?));
    }
    let read: usize = logs.iter().map(|(_, r)| r.len()).sum();
    let merged = crate::anomaly_log::merge(logs).map_err(|c| {
        anyhow!(
            "anomalies merge: {} and {} hold different records for {} partition {} offset {}: \
             they come from different data or settings, so no union of them is one run's log",
            files[c.files.0].display(),
            files[c.files.1].display(),
            c.source,
            c.partition,
            c.offset
        )
    })?;
    write_records(&merged).map_err(super::stdout_error)?;
    let plural =
        |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    eprintln!(
        "anomalies merge: {}, {}, {}",
        plural(files.len(), "file", "files"),
        plural(read, "line", "lines"),
        plural(merged.len(), "record", "records")
    );
    Ok(())
}
