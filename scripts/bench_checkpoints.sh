#!/usr/bin/env bash
# Checkpoints before and after, side by side in one run: the same benchmarks
# of a base revision (default `main`) and of the working tree, one after the
# other on the same machine, then one table.
#
#   scripts/bench_checkpoints.sh
#
# For each scale (distinct users per window, BENCH_USERS, default
# 100000,1000000), both builds run
#   * `streamforge-tools bench scaling --users N`: the state at its steady
#     size, 10 checkpoints 6 s of event time apart, each timed; in-process
#     load + restore; BENCH_RESTARTS (default 2) real restarts of
#     `streamforge run` against the state directory, timed from the spawn to
#     the first event processed after the restore;
#   * `streamforge-tools bench core` at the same users per window (the base
#     gets the same user pool: `--users`, which the working tree's report
#     gives): the job's own barrier, pause and commit on its two threads.
# The base is built from `git archive BASE_REF` into BASE_TARGET (default
# target/bench-base), so the working tree's build is untouched. Knobs:
# BASE_REF, BASE_TARGET, BASE_SRC (a tree of BASE_REF already extracted,
# whose build BASE_TARGET holds: no rebuild; its commit is read from
# BASE_SRC/.commit, which the script writes when it extracts one), BENCH_USERS, BENCH_RESTARTS, BENCH_CORE_EVENTS
# (20000000), BENCH_OUT (bench-out/checkpoints).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

base_ref=${BASE_REF:-main}
base_target=$(realpath -m "${BASE_TARGET:-target/bench-base}")
users=${BENCH_USERS:-100000,1000000}
restarts=${BENCH_RESTARTS:-2}
events=${BENCH_CORE_EVENTS:-20000000}
out=$(realpath -m "${BENCH_OUT:-bench-out/checkpoints}")
mkdir -p "$out"
new_target=$(realpath -m "${CARGO_TARGET_DIR:-target}")

if [[ -n "${BASE_SRC:-}" ]]; then
  # A tree of BASE_REF extracted before (its build in BASE_TARGET is reused).
  src=$(realpath "$BASE_SRC")
  base_commit=$(cat "$src/.commit" 2>/dev/null || echo "as extracted in $src")
else
  src=$(mktemp -d -t streamforge-base.XXXXXX)
  trap 'rm -rf "$src"' EXIT
  git archive "$base_ref" | tar -x -C "$src"
  base_commit=$(git rev-parse --short "$base_ref")
  echo "$base_commit" >"$src/.commit"
fi
echo "== building $base_ref ($base_commit) into $base_target" >&2
(cd "$src" && CARGO_TARGET_DIR=$base_target cargo build --release --quiet -p streamforge -p streamforge-tools)
echo "== building the working tree into $new_target" >&2
cargo build --release --quiet -p streamforge -p streamforge-tools
new_commit="$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src tools || echo +changes)"

echo "uptime at start: $(uptime)"
for n in ${users//,/ }; do
  for side in new base; do
    if [[ $side == base ]]; then dir=$base_target/release; else dir=$new_target/release; fi
    echo "== $side: bench scaling --users $n" >&2
    "$dir/streamforge-tools" bench scaling --users "$n" --restarts "$restarts" \
      --binary "$dir/streamforge" --json "$out/$side-scaling-$n.json" >"$out/$side-scaling-$n.md"
  done
  echo "== new: bench core --users-per-window $n" >&2
  "$new_target/release/streamforge-tools" bench core --events "$events" --users-per-window "$n" \
    --json "$out/new-core-$n.json" >"$out/new-core-$n.md"
  pool=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["user_pool"])' "$out/new-core-$n.json")
  echo "== base: bench core --users $pool" >&2
  "$base_target/release/streamforge-tools" bench core --events "$events" --users "$pool" \
    --json "$out/base-core-$n.json" >"$out/base-core-$n.md"
done
echo "uptime at end: $(uptime)"

python3 - "$out" "$users" "$base_ref ($base_commit)" "working tree ($new_commit)" <<'EOF'
import json, sys
out, users, base_name, new_name = sys.argv[1], sys.argv[2].split(","), sys.argv[3], sys.argv[4]
def load(side, kind, n):
    return json.load(open(f"{out}/{side}-{kind}-{n}.json"))
def mb(b):
    return f"{b / 1e6:.2f} MB"
print(f"\n| users per window | build | job-thread pause, core: p50 / p99 / max | job-thread pause, scaling | "
      "bytes per checkpoint, scaling | bytes per checkpoint, core | core: events/s | "
      "in-process load + restore | recovery (real restart) p50 / max |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for n in users:
    for side, name in (("base", base_name), ("new", new_name)):
        s, c = load(side, "scaling", n), load(side, "core", n)
        if side == "base":
            # Its scaling bench commits on its own thread: the job's pause
            # there is the snapshot (p50 only); the whole commit after it.
            s_pause = (f"{s['snapshot_p50_ms']:.1f} ms (snapshot p50; whole commit "
                       f"{s['checkpoint_pause_p50_ms']:.0f} / {s['checkpoint_pause_p99_ms']:.0f} ms)")
            s_bytes = f"{mb(s['checkpoint_bytes'])} (each whole)"
            c_bytes = f"{mb(c['checkpoint_bytes_max'])} (each whole)"
        else:
            s_pause = (f"{s['checkpoint_pause_p50_ms']:.3f} / {s['checkpoint_pause_p99_ms']:.3f} / "
                       f"{s['checkpoint_pause_max_ms']:.3f} ms")
            s_bytes = (f"deltas {mb(s['checkpoint_delta_bytes_p50'])} p50, {mb(s['checkpoint_delta_bytes_max'])} max; "
                       f"{s['checkpoint_bases']} base(s), state {mb(s['checkpoint_bytes'])}")
            c_bytes = (f"mean {mb(c['checkpoint_bytes_mean'])}; deltas max {mb(c['checkpoint_delta_bytes_max'])}; "
                       f"{c['checkpoint_bases']} base(s), max {mb(c['checkpoint_bytes_max'])}")
        print(f"| {n} | {name} | {c['checkpoint_pause_p50_ms']:.3f} / {c['checkpoint_pause_p99_ms']:.3f} / "
              f"{c['checkpoint_pause_max_ms']:.3f} ms | {s_pause} | {s_bytes} | {c_bytes} | "
              f"{c['events_per_second']:.0f} | {s['load_ms']:.0f} + {s['restore_ms']:.0f} ms | "
              f"{s['recovery_p50_ms']:.0f} / {s['recovery_max_ms']:.0f} ms |")
EOF
