#!/usr/bin/env bash
# The deterministic simulator (sim/, issue 13): StreamForge's real job on one
# thread against simulated worlds whose every source of nondeterminism (clock,
# input, interleaving, sink faults, crashes) comes from a seed, checked after
# each schedule against an independent model. See docs/development.md ("The
# deterministic simulator").
#
#   scripts/sim.sh [--schedules N] [--seed S]   # the seeds S..S+N-1 (default: 100 from 1)
#   scripts/sim.sh --seed S --schedules 1       # one seed again, exactly
#   scripts/sim.sh --replay FILE                # one saved schedule (a shrunk divergence,
#                                               # or sim/regressions/NAME.json)
#   more: --jobs J (worker threads; default: the cores), --no-shrink,
#         --no-regressions, --no-group (no group-mode schedules: every seed
#         ordinary, as before issue 16), --out DIR (shrunk schedules; default target/sim),
#         --dump S (print the schedule of seed S as JSON)
#
# The named regression schedules (sim/regressions/*.json) run first, every
# time. Each divergence prints its seed, the invariant it broke, a shrunk
# schedule (saved as JSON) and the one command that reproduces it. The last
# line is `N schedules, D divergences` (N counts the regression schedules
# too); the exit status is 1 on any divergence, 2 on bad arguments.
#
# SIM_PROFILE picks the cargo profile (default `release`; `dev` reuses the
# build `cargo test` made).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
profile=${SIM_PROFILE:-release}
case $profile in
  dev) out=debug ;;
  *) out=$profile ;;
esac
cargo build --quiet --profile "$profile" -p sim --bin streamforge-sim
exec "${CARGO_TARGET_DIR:-target}/$out/streamforge-sim" "$@"
