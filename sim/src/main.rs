//! The deterministic simulator: see `scripts/sim.sh` and docs/development.md.

fn main() -> std::process::ExitCode {
    eprintln!("streamforge-sim: not built yet");
    std::process::ExitCode::FAILURE
}
