#!/usr/bin/env bash
# The whole test suite, from a clean machine: installs and starts the local
# stack (Kafka KRaft + ClickHouse, see scripts/stack.sh), runs every test
# (unit, property, embedded end to end, Kafka/ClickHouse integration and
# fault injection, with crash points compiled in, and the ClickHouse sink on
# current ClickHouse in-process: tests/chdb_compat.rs), replays the fuzz corpus,
# fuzzes each target for a bounded time, stops the stack, and prints how many
# tests ran.
#
#   scripts/test.sh            # everything
#   SKIP_STACK=1 scripts/test.sh   # reuse a stack you started yourself (see below)
#   SKIP_FUZZ=1 scripts/test.sh    # without the bounded fuzzing (FUZZ_SECONDS=45)
#
# The suite's stack is its own: STACK_DIR .stack-test (TEST_STACK_DIR to move
# it) on free ports chosen at start (STACK_PORTS=auto of scripts/stack.sh:
# the ports of the previous run if they are still free, else free ports below
# the ephemeral range), so a Kafka or ClickHouse already running on the
# default ports (yours, or `scripts/stack.sh up`) is neither used nor
# disturbed. KAFKA_PORT, CLICKHOUSE_HTTP_PORT, ... in the environment fix a
# port instead; a port that is taken stops the run with an error naming it.
# The tests find the stack through the STREAMFORGE_TEST_* variables that
# `scripts/stack.sh env` prints (tests/common/endpoints.rs reads them). With
# SKIP_STACK=1 they come from your environment, and where unset the tests use
# the development stack on the default ports (`scripts/stack.sh up`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# CI runs on a fresh clone each time: keep the cargo build between runs on
# the same machine (the Maven repository ~/.m2 is kept by Maven itself).
if [[ -n "${CI:-}" && -z "${CARGO_TARGET_DIR:-}" ]]; then
  export CARGO_TARGET_DIR="$HOME/.cache/streamforge/target"
  mkdir -p "$CARGO_TARGET_DIR"
fi

log=$(mktemp -t streamforge-test.XXXXXX)
trap 'rm -f "$log"' EXIT

if [[ "${SKIP_STACK:-0}" != 1 ]]; then
  TEST_STACK_DIR=$(realpath -m "${TEST_STACK_DIR:-$PWD/.stack-test}")
  test_stack() { STACK_DIR=$TEST_STACK_DIR scripts/stack.sh "$@"; }
  # Stops only what this stack directory started, even after a failed `up`.
  trap 'test_stack down || true; rm -f "$log"' EXIT
  echo "== the suite's own stack (scripts/stack.sh, STACK_DIR $TEST_STACK_DIR, free ports)"
  stack_t0=$(date +%s%3N)
  STACK_PORTS=auto test_stack up
  stack_ms=$(($(date +%s%3N) - stack_t0))
  stack_env=$(test_stack env)
  eval "$stack_env"
  echo "test stack up in $((stack_ms / 1000)).$((stack_ms % 1000 / 100)) s: kafka $STREAMFORGE_TEST_KAFKA," \
    "clickhouse $STREAMFORGE_TEST_CLICKHOUSE_URL (tcp $STREAMFORGE_TEST_CLICKHOUSE_TCP_PORT)"
fi

# tests/chdb_compat.rs runs the ClickHouse sink on current ClickHouse too
# (the 26.9 engine of PyPI's chdb-core, in-process), next to 18.16. Its venv
# is made once (about 40 s and 900 MB under ~/.cache/streamforge, see
# scripts/chdb_env.sh) and reused. A machine where it cannot be made fails
# the suite with the reason; the test is never skipped.
echo "== chdb venv for tests/chdb_compat.rs (scripts/chdb_env.sh)"
chdb_status=0
scripts/chdb_env.sh >/dev/null || chdb_status=$?

# ---- BEGIN chromium for tests/live_page.rs (issue 17) ----------------------
# tests/live_page.rs drives Debian's Chromium, headless, against a running
# job. A machine without it gets it here from Debian's packages (once, about
# 1 min and 300 MB with its libraries). If it cannot be installed the test
# fails and says what to install: a missing browser is never a skip.
# CHROMIUM=/path/to/browser uses another binary and installs nothing.
# Quirks (docs/development.md): Debian's launcher may print
# `/usr/bin/chromium: 9: [: ...: unexpected operator` (its
# /etc/chromium.d/dev-shm check, when /dev/shm shows up twice in findmnt):
# harmless. As root the browser needs --no-sandbox (tests/common/browser.rs
# passes it).
echo "== chromium for tests/live_page.rs"
if [[ -n "${CHROMIUM:-}" ]]; then
  echo "CHROMIUM=$CHROMIUM: $("$CHROMIUM" --version 2>/dev/null || echo 'does not run: tests/live_page.rs will fail')"
elif ! command -v chromium >/dev/null; then
  sudo=()
  [[ $(id -u) -eq 0 ]] || sudo=(sudo)
  apt_log=$(mktemp -t streamforge-apt.XXXXXX)
  if "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 update >"$apt_log" 2>&1 &&
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y chromium >>"$apt_log" 2>&1; then
    echo "installed $(chromium --version 2>/dev/null)"
  else
    tail -n 20 "$apt_log" >&2
    echo "apt-get install chromium FAILED: tests/live_page.rs will fail" >&2
  fi
  rm -f "$apt_log"
else
  chromium --version 2>/dev/null || echo "chromium does not run: tests/live_page.rs will fail" >&2
fi
# ---- END chromium for tests/live_page.rs ------------------------------------

echo "== cargo test, the whole workspace (product, tools, simulator; crash points compiled in)"
set +e
cargo test --workspace --no-fail-fast --features streamforge/failpoints --all-targets 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e

# Bounded fuzzing (scripts/fuzz.sh): each cargo-fuzz target for FUZZ_SECONDS
# (default 45 s) from the committed corpus. A crash fails the run; a machine
# where cargo-fuzz cannot be installed skips it and says so. SKIP_FUZZ=1 skips
# it. Costs on a clean machine: cargo-fuzz install ~1 min, the sanitizer
# build of the targets ~10 min on 2 idle cores (cached under CI, like the
# test build), then the fuzzing itself.
fuzz_status=0
if [[ "${SKIP_FUZZ:-0}" != 1 ]]; then
  echo "== fuzz: each target for ${FUZZ_SECONDS:-45} s (scripts/fuzz.sh)"
  fuzz_dir=$PWD/fuzz/target
  [[ -n "${CI:-}" ]] && fuzz_dir=$HOME/.cache/streamforge/fuzz-target
  set +e
  FUZZ_TARGET_DIR=$fuzz_dir scripts/fuzz.sh "${FUZZ_SECONDS:-45}"
  fuzz_status=$?
  set -e
  if [[ $fuzz_status -eq 3 ]]; then
    echo "fuzz: SKIPPED (no toolchain for cargo-fuzz on this machine; see above)"
    fuzz_status=0
  fi
fi

# ---- BEGIN deterministic simulator (issue 13; sim/, scripts/sim.sh) ---------
# SIM_SCHEDULES seeded schedules (default 10000) after the named regression
# schedules of sim/regressions/, in a release build (cached under CI like the
# test build). The first seed comes from the commit, so each commit tries
# other worlds and a rerun of the same commit the same ones; SIM_SEED fixes
# it. A divergence prints its seed, a shrunk schedule and the command that
# reproduces it, and fails the suite.
sim_schedules=${SIM_SCHEDULES:-10000}
sim_commit=$(git rev-parse --short=8 HEAD 2>/dev/null || true)
sim_seed=${SIM_SEED:-$((16#${sim_commit:-1}))}
echo "== simulator: $sim_schedules schedules, seeds $sim_seed..$((sim_seed + sim_schedules - 1)) (scripts/sim.sh)"
sim_t0=$(date +%s)
set +e
scripts/sim.sh --schedules "$sim_schedules" --seed "$sim_seed" 2>&1 | tee -a "$log"
sim_status=${PIPESTATUS[0]}
set -e
sim_result=$({ grep -E '^[0-9]+ schedules, [0-9]+ divergences' "$log" || echo "did not finish"; } | tail -1)
echo "simulator: exit $sim_status in $(($(date +%s) - sim_t0)) s (reproduce the run: scripts/sim.sh --schedules $sim_schedules --seed $sim_seed)"
# ---- END deterministic simulator ---------------------------------------------

# `|| true`: with pipefail, a grep that matches nothing (no test ran, e.g. the
# build failed) would end the script here, before it says so.
passed=$({ grep -Eo 'test result: [A-Za-z]+\. [0-9]+ passed' "$log" || true; } | awk '{s+=$4} END {print s+0}')
failed=$({ grep -Eo '; [0-9]+ failed' "$log" || true; } | awk '{s+=$2} END {print s+0}')
binaries=$(grep -c 'test result:' "$log" || true)
echo
echo "== summary: $binaries test binaries"
echo "$passed passed, $failed failed"
echo "simulator: $sim_result"
if [[ $fuzz_status -ne 0 ]]; then
  echo "fuzzing FAILED (scripts/fuzz.sh exit $fuzz_status; inputs under fuzz/artifacts/)" >&2
fi
if [[ $chdb_status -ne 0 ]]; then
  echo "the chdb venv could not be made (scripts/chdb_env.sh exit $chdb_status, reason above): tests/chdb_compat.rs FAILED" >&2
fi
if [[ $sim_status -ne 0 ]]; then
  echo "the simulator found a divergence (scripts/sim.sh exit $sim_status; seeds and commands above)" >&2
fi
if [[ $status -ne 0 || $failed -ne 0 || $passed -eq 0 || $fuzz_status -ne 0 || $chdb_status -ne 0 || $sim_status -ne 0 ]]; then
  echo "test suite FAILED (cargo exit $status)" >&2
  exit 1
fi
