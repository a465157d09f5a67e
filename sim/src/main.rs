//! The deterministic simulator's command line: see `scripts/sim.sh` and
//! docs/development.md ("The deterministic simulator").

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use streamforge_sim::campaign::{self, Options};

const USAGE: &str = "usage: streamforge-sim [--schedules N] [--seed S] [--jobs J] [--replay FILE] \
                     [--no-shrink] [--no-regressions] [--no-group] [--out DIR] [--dump SEED]";

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("streamforge-sim: {e}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<ExitCode, String> {
    let mut opts = Options {
        seed: 1,
        schedules: 100,
        jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
        shrink: true,
        shrink_budget: Duration::from_secs(120),
        out_dir: PathBuf::from("target/sim"),
    };
    let (mut replay, mut regressions) = (None, true);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        let number = |v: String| v.parse::<u64>().map_err(|_| format!("not a number: {v}"));
        match arg.as_str() {
            "--schedules" => opts.schedules = number(value("--schedules")?)?,
            "--seed" => opts.seed = number(value("--seed")?)?,
            "--jobs" => opts.jobs = number(value("--jobs")?)? as usize,
            "--replay" => replay = Some(PathBuf::from(value("--replay")?)),
            "--out" => opts.out_dir = PathBuf::from(value("--out")?),
            "--no-shrink" => opts.shrink = false,
            "--no-regressions" => regressions = false,
            "--no-group" => streamforge_sim::group::gen::NO_GROUP
                .store(true, std::sync::atomic::Ordering::Relaxed),
            "--dump" => {
                let seed = number(value("--dump")?)?;
                let plan = streamforge_sim::gen::generate(seed);
                println!(
                    "{}",
                    serde_json::to_string_pretty(&plan).map_err(|e| e.to_string())?
                );
                return Ok(ExitCode::SUCCESS);
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(ExitCode::SUCCESS);
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let dir = campaign::scratch_dir("main");
    if let Some(file) = replay {
        let plan = campaign::load(&file)?;
        let again = format!("scripts/sim.sh --replay {}", file.display());
        let no_shrink = Options {
            shrink: false,
            ..opts
        };
        let found = campaign::check(&file.display().to_string(), &again, &plan, &no_shrink, &dir);
        let _ = std::fs::remove_dir_all(&dir);
        if let Some(text) = &found {
            print!("{text}");
        }
        println!("1 schedules, {} divergences", u8::from(found.is_some()));
        return Ok(if found.is_some() {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        });
    }
    let (mut divergent, mut named_count) = (0, 0);
    if regressions {
        let named = campaign::regressions();
        for (name, plan) in &named {
            let again = format!("scripts/sim.sh --replay sim/regressions/{name}.json");
            if let Some(text) =
                campaign::check(&format!("regression {name}"), &again, plan, &opts, &dir)
            {
                print!("{text}");
                divergent += 1;
            }
        }
        named_count = named.len() as u64;
        println!("{named_count} regression schedules, {divergent} divergences");
    }
    let _ = std::fs::remove_dir_all(&dir);
    let last = opts.seed.saturating_add(opts.schedules.saturating_sub(1));
    println!(
        "seeds {}..={last} ({} schedules) on {} threads",
        opts.seed, opts.schedules, opts.jobs
    );
    let sum = campaign::seeds(&opts, |text| print!("{text}"));
    divergent += sum.divergent;
    let secs = sum.elapsed.as_secs_f64();
    println!(
        "{} runs ({} crashes) in {secs:.1} s: {:.1} schedules/s",
        sum.runs,
        sum.crashes,
        sum.schedules as f64 / secs.max(1e-9)
    );
    println!(
        "{} schedules, {divergent} divergences",
        sum.schedules + named_count
    );
    Ok(if divergent > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
