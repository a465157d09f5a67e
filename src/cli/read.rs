//! The reading commands of the CLI: `results` (the sink's final rows, or one
//! grouping's) and `verify` (the sink's rows against a recomputation of the
//! input). Neither writes: they open the sink without creating its schema.

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;

use anyhow::{anyhow, bail};

use super::{
    apply_sink_flag, build_source, is_stdout_closed, open_sink, overrides, stdout_error,
    ResultsArgs, VerifyArgs,
};
use crate::checkpoint::CheckpointStore;
use crate::config::{Config, SinkKind, SourceKind};
use crate::source::Source;

pub(super) fn results(args: ResultsArgs) -> anyhow::Result<ExitCode> {
    let mut ov = overrides(&args.common)?;
    if let Some(s) = &args.sink {
        apply_sink_flag(s, &mut ov)?;
    }
    let cfg = Config::load(args.common.config.as_deref(), &ov)?.config;
    if cfg.sink.kind == SinkKind::Embedded && !cfg.embedded_sink_path().exists() {
        bail!(
            "no embedded sink at {}: run the job first, or point --state-dir at its state directory",
            cfg.embedded_sink_path().display()
        );
    }
    let mut rows = match &args.group_by {
        None => open_sink(&cfg)?.read_final()?,
        Some(names) => grouped_results(&cfg, names)?,
    };
    rows.sort_by(|a, b| a.key().cmp(&b.key()));
    let mut out = String::with_capacity(rows.len() * 128);
    for r in &rows {
        out.push_str(&r.result_json());
        out.push('\n');
    }
    use std::io::Write;
    std::io::stdout()
        .write_all(out.as_bytes())
        .map_err(stdout_error)?;
    Ok(ExitCode::SUCCESS)
}

/// The rows of the grouping `names` (comma-separated dimensions, in any
/// order), without retractions (rows of no order: see [`crate::dims`]).
fn grouped_results(cfg: &Config, names: &str) -> anyhow::Result<Vec<crate::window::WindowRow>> {
    let mut dims = Vec::new();
    for name in names.split(',').map(str::trim) {
        let d = crate::dims::Dimension::from_name(name)
            .ok_or_else(|| anyhow!("--group-by: unknown dimension {name:?} (city, category)"))?;
        dims.push(d);
    }
    dims.sort();
    let (known, from) = known_groupings(cfg)?;
    let found = known.iter().find(|g| {
        let mut g = (*g).clone();
        g.sort();
        g == dims
    });
    let Some(grouping) = found.cloned() else {
        let wanted = dims.iter().map(|d| d.name()).collect::<Vec<_>>().join(", ");
        let what = if known.is_empty() {
            "run the job with them (in a fresh state directory)"
        } else {
            "pass the groupings the job ran with"
        };
        bail!(
            "--group-by {names}: not a grouping of these results: {from} {}; {what}, e.g. \
             --set 'dimensions.groupings=[[{wanted}]]' (or the same --config)",
            crate::config::format_groupings(&known),
        );
    };
    let mut cfg = cfg.clone();
    cfg.dimensions.groupings = known;
    let rows = open_sink(&cfg)?.read_grouped()?;
    Ok(rows
        .into_iter()
        .filter(|r| r.order_cnt > 0 && r.group.as_ref().is_some_and(|g| g.dims == grouping))
        .collect())
}

/// The groupings `results --group-by` may read, and where they come from:
/// the configured ones, else (the configuration names none) those the newest
/// checkpoint of the state directory was taken with.
fn known_groupings(cfg: &Config) -> anyhow::Result<(Vec<Vec<crate::dims::Dimension>>, String)> {
    if !cfg.dimensions.groupings.is_empty() {
        return Ok((
            cfg.dimensions.groupings.clone(),
            "the configuration (dimensions.groupings) has".into(),
        ));
    }
    let dir = &cfg.checkpoint.state_dir;
    if !dir.join("checkpoints").exists() {
        return Ok((
            Vec::new(),
            format!(
                "the configuration names no groupings (dimensions.groupings) and {} holds no checkpoint; groupings:",
                dir.display()
            ),
        ));
    }
    let store = CheckpointStore::open(dir, cfg.checkpoint.keep)?;
    let (newest, _) = store.load_latest()?;
    let groupings = newest
        .map(|cp| cp.engine.groups.spec.groupings)
        .unwrap_or_default();
    Ok((
        groupings,
        format!(
            "the configuration names none and the state in {} was computed with",
            dir.display()
        ),
    ))
}

pub(super) fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let mut ov = overrides(&args.common)?;
    args.endpoints.apply(&mut ov)?;
    let cfg = Config::load(args.common.config.as_deref(), &ov)?.config;
    if cfg.sink.kind == SinkKind::Embedded && !cfg.embedded_sink_path().exists() {
        bail!(
            "no embedded sink at {}: point --state-dir at the job's state directory",
            cfg.embedded_sink_path().display()
        );
    }
    let mut source = build_source(&cfg)?;
    let job_progress = if cfg.sink.kind == SinkKind::Embedded {
        check_verified_state(&cfg, source.as_ref())?
    } else {
        None
    };
    let mut sink = open_sink(&cfg)?;
    let guard = crate::job::TimeGuard::of(&cfg.window);
    let mut report = crate::verify::verify(
        source.as_mut(),
        sink.as_mut(),
        cfg.window.spec(),
        cfg.window.alignment_drift.ms(),
        crate::verify::ClockBounds {
            max_ahead_of_record_ms: guard.max_ahead_of_record_ms,
            max_jump_ms: guard.max_jump_ms,
        },
        &cfg.dimensions.spec(),
    )?;
    // A job stopped before the end of its input has not emitted the windows
    // its watermark has not reached, unless the end of a bounded run did.
    if let Some(job) = job_progress.as_ref().filter(|j| j.watermark_ms < i64::MAX) {
        report.set_aside_open(job.watermark_ms, &job.delivered);
    }
    let hint = job_progress.and_then(|job| generator_length_hint(&cfg, &job.offsets));
    if !args.quiet {
        report.print_side_by_side(&mut std::io::stdout());
    }
    // With the reader gone (`| head`), the verdict still sets the exit code.
    if let Err(e) = outln!("{}", report.summary()) {
        if !is_stdout_closed(&e) {
            return Err(e);
        }
    }
    if let Some(hint) = hint.filter(|_| !report.ok()) {
        eprintln!("{hint}");
    }
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Refuses to verify the embedded sink's results against another input or
/// other window settings than the ones its job ran with (what `run`
/// refuses too): the differences would be the settings', not the job's.
/// Only for the embedded sink, whose results are the state directory's
/// own: a ClickHouse table is rightly verified against, say, the files a
/// topic was produced from. Skipped when the directory has no checkpoint or
/// a running job holds it. Returns how far the job of the newest checkpoint
/// got, if there is one.
fn check_verified_state(cfg: &Config, source: &dyn Source) -> anyhow::Result<Option<JobProgress>> {
    let dir = &cfg.checkpoint.state_dir;
    if !dir.join("checkpoints").exists() {
        return Ok(None);
    }
    let Ok(store) = CheckpointStore::open(dir, cfg.checkpoint.keep) else {
        return Ok(None);
    };
    let Ok((Some(cp), _)) = store.load_latest() else {
        return Ok(None);
    };
    if cp.source_id != source.id() {
        let hint = match cp.source_id.split_once(':') {
            Some(("files", _)) => format!("--source {}", cp.source_id),
            Some(("kafka", topic)) => format!("--source kafka --set kafka.topic={topic}"),
            _ => "--source generator with the job's generator settings".into(),
        };
        bail!(
            "the state directory {} holds the results of another input ({}); this verify reads {}. \
             Name the job's input: {hint}",
            dir.display(),
            cp.source_id,
            source.id(),
        );
    }
    if cp.engine.spec != cfg.window.spec() {
        bail!(
            "the state directory {} was computed with window settings `{}`; this verify uses `{}`. \
             Pass the job's settings: the same config, or `--set` each one that differs",
            dir.display(),
            cp.engine.spec,
            cfg.window.spec()
        );
    }
    let pending: BTreeSet<i64> = cp
        .pending
        .iter()
        .flat_map(|b| b.rows.iter().map(|r| r.window_start))
        .collect();
    let slide_ms = cp.engine.spec.slide_ms;
    let delivered = cp
        .engine
        .windows
        .fired
        .iter()
        .map(|(w, _)| (w * slide_ms).div_euclid(1000))
        .filter(|start| !pending.contains(start))
        .collect();
    Ok(Some(JobProgress {
        watermark_ms: cp.engine.watermark,
        delivered,
        offsets: cp.offsets.clone(),
    }))
}

/// What to pass when a generator job read another number of events per
/// partition than this verify generates (the generator's identity leaves
/// its length out: a longer run continues the same input, so `run` may
/// resume it, but a verify of a finished demo of 1,000 events against the
/// default 150,000 compares two inputs). `None` when the lengths agree or
/// the job's offsets do not tell one.
fn generator_length_hint(cfg: &Config, job_offsets: &BTreeMap<u32, u64>) -> Option<String> {
    if cfg.source.kind != SourceKind::Generator {
        return None;
    }
    let read: BTreeSet<u64> = job_offsets.values().copied().collect();
    let [n] = read.into_iter().collect::<Vec<_>>()[..] else {
        return None;
    };
    (cfg.source.generator.events_per_partition != Some(n)).then(|| {
        format!(
            "verify: the job read {n} events per partition and this verify generated {}; if the job \
             ran with that length (a demo's --events-per-partition, or source.generator.events_per_partition), \
             verify the same input: --set source.generator.events_per_partition={n}",
            cfg.source
                .generator
                .events_per_partition
                .map_or("events without end".to_string(), |m| m.to_string()),
        )
    })
}

/// How far the job whose results are verified got, by its newest checkpoint.
struct JobProgress {
    /// Its watermark, epoch ms.
    watermark_ms: i64,
    /// The starts (epoch s) of the windows it emitted and the sink
    /// acknowledged that are still open for late events (a bounded run's
    /// end emits every window, whatever the watermark).
    delivered: BTreeSet<i64>,
    /// The next offset it would read, per partition.
    offsets: BTreeMap<u32, u64>,
}
