#!/usr/bin/env bash
# Fuzz campaign: every cargo-fuzz target under fuzz/, one after another.
#
#   scripts/fuzz.sh [seconds-per-target] [target...]   # default: 60 s, all targets
#   FUZZ_MERGE=1 scripts/fuzz.sh 900                    # then merge new coverage into fuzz/corpus/
#
# Installs cargo-fuzz if missing (`cargo install cargo-fuzz --locked`, about a
# minute). Needs a nightly toolchain for the address sanitizer; without one it
# falls back to the stable toolchain with no sanitizer (`-s none`, still
# catching panics, overflows and huge allocations).
#
# A target with a dictionary (fuzz/dict/<target>.dict) uses it. Each target
# starts from the committed seeds (fuzz/corpus/<target>, read
# only) plus the inputs earlier campaigns found on this machine
# (<target dir>/corpus/<target>, not committed). A crash stops that target,
# leaves the input under fuzz/artifacts/<target>/ and makes the script exit
# 1 after the remaining targets have run. The script prints, per target, the
# executions, the coverage reached and what was found.
#
# Knobs: FUZZ_MAX_LEN (bytes per input, default 4096), FUZZ_NICE (default 10),
# FUZZ_RSS_MB (default 2048: an input that allocates more is a finding),
# FUZZ_MERGE=1 (after the run, add to the committed corpus the fewest inputs
# that reach the edges it does not cover yet: a set cover over edges, hit
# counts ignored, which keeps it to a few hundred small files; review and
# commit them), FUZZ_TARGET_DIR (the build's
# target directory, default fuzz/target; CARGO_TARGET_DIR is ignored so the
# sanitizer build never mixes with the test build).
#
# Exit status: 0 no crash; 1 a target crashed; 2 the targets did not build;
# 3 cargo-fuzz could not be installed, or the stable fallback could not build
# the targets (scripts/test.sh reports that as skipped).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
unset CARGO_TARGET_DIR
target_dir=${FUZZ_TARGET_DIR:-$PWD/fuzz/target}

seconds=${1:-60}
shift || true
max_len=${FUZZ_MAX_LEN:-4096}
nice_level=${FUZZ_NICE:-10}
rss_mb=${FUZZ_RSS_MB:-2048}

if ! command -v cargo-fuzz >/dev/null 2>&1 && ! [[ -x "$HOME/.cargo/bin/cargo-fuzz" ]]; then
  echo "== installing cargo-fuzz (cargo install cargo-fuzz --locked)"
  start=$(date +%s)
  cargo install cargo-fuzz --locked --quiet || { echo "cannot install cargo-fuzz" >&2; exit 3; }
  echo "   installed in $(( $(date +%s) - start )) s"
fi

if cargo +nightly --version >/dev/null 2>&1; then
  toolchain=(+nightly)
  sanitizer=(--sanitizer address)
  build_failed=2
else
  echo "== no nightly toolchain: fuzzing with stable and no sanitizer"
  toolchain=()
  sanitizer=(--sanitizer none)
  export RUSTC_BOOTSTRAP=1
  # The tests build the same crate: a failure here is the toolchain's.
  build_failed=3
fi

cd fuzz
if [[ $# -gt 0 ]]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo "${toolchain[@]}" fuzz list)
fi

echo "== building ${targets[*]} (cargo ${toolchain[*]} fuzz build ${sanitizer[*]})"
start=$(date +%s)
mkdir -p "$target_dir"
for t in "${targets[@]}"; do
  if ! nice -n "$nice_level" cargo "${toolchain[@]}" fuzz build "${sanitizer[@]}" \
    --target-dir "$target_dir" "$t" > "$target_dir/build-$t.log" 2>&1; then
    tail -n 30 "$target_dir/build-$t.log" >&2
    echo "fuzz target $t did not build" >&2
    exit "$build_failed"
  fi
done
echo "   built in $(( $(date +%s) - start )) s"

failed=()
for t in "${targets[@]}"; do
  work=$target_dir/corpus/$t
  mkdir -p "$work" "artifacts/$t"
  log=$target_dir/fuzz-$t.log
  dict=()
  [[ -f dict/$t.dict ]] && dict=(-dict="dict/$t.dict")
  echo "== $t: ${seconds} s, -max_len=$max_len, seeds fuzz/corpus/$t"
  set +e
  nice -n "$nice_level" cargo "${toolchain[@]}" fuzz run "${sanitizer[@]}" \
    --target-dir "$target_dir" "$t" "$work" "corpus/$t" -- \
    -max_total_time="$seconds" -max_len="$max_len" -rss_limit_mb="$rss_mb" \
    -print_final_stats=1 "${dict[@]}" > "$log" 2>&1
  status=$?
  set -e
  execs=$(grep -Eo 'stat::number_of_executed_units: [0-9]+' "$log" | awk '{print $2}' | tail -n 1)
  last=$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)
  echo "   executions: ${execs:-?}; last status: ${last:-none}"
  grep -E 'stat::(average_exec_per_sec|new_units_added|peak_rss_mb)' "$log" | sed 's/^/   /' || true
  if [[ $status -ne 0 ]]; then
    failed+=("$t")
    echo "   FAILED (exit $status): a crash, leak, timeout or out-of-memory. From its log ($log):"
    grep -E '^(==[0-9]+==ERROR|SUMMARY|thread .* panicked|Test unit written|artifact_prefix|Running:)' "$log" | head -n 20 | sed 's/^/   /'
  fi
  if [[ "${FUZZ_MERGE:-0}" == 1 && $status -eq 0 ]]; then
    before=$(find "corpus/$t" -type f | wc -l)
    cargo "${toolchain[@]}" fuzz run "${sanitizer[@]}" --target-dir "$target_dir" \
      "$t" "corpus/$t" "$work" -- \
      -set_cover_merge=1 -use_counters=0 -max_len="$max_len" > "$target_dir/merge-$t.log" 2>&1
    after=$(find "corpus/$t" -type f | wc -l)
    echo "   merged into fuzz/corpus/$t: $before -> $after files"
  fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
  echo "fuzzing FAILED: ${failed[*]} (inputs under fuzz/artifacts/)" >&2
  exit 1
fi
echo "fuzzing: no crash in ${targets[*]}"
