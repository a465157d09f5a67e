#!/usr/bin/env bash
# StreamForge against Apache Flink on the same job, the same data, the same
# machine: builds both, generates data sets of JSON-lines files (one file per
# partition), runs `streamforge run --source files:DIR` and the Flink SQL job
# (bench/peers/flink, local MiniCluster in one JVM) on the same files, checks
# that both print byte-identical results (SPEC §8 format), and prints a
# Markdown section with wall time, events/s, CPU and peak RSS for each and the
# ratios. Progress goes to stderr, the report to stdout.
#
# Two variants (VARIANTS):
#   raw    payloads as producers write them: `streamforge-tools gen-files
#          --style mix` (keys in any order, spaces, RFC 3339 times with Z or
#          offsets and 3/6/9 fraction digits, numeric strings, extra nested
#          fields, non-ASCII and escaped strings, ~2 % broken, ~3 % re-sent
#          copies). StreamForge validates, cleans and dedups as always; Flink
#          reads the lines raw and applies the same rules in SQL
#          (FlinkHopJob --raw --dedup, see RawJsonRules.java).
#   clean  pre-cleaned: `streamforge-tools produce --style canonical --out-dir`
#          in StreamForge's own canonical layout, no anomalies, duplicates
#          or late events; Flink reads it with its JSON format, no
#          validation, no dedup.
#
#   bench/peers/flink/compare.sh > flink-compare.md
#
# Knobs (environment):
#   VARIANTS="raw clean"  which data sets to run, in this order
#   EVENTS=1000000        lines in each data set (all partitions)
#   PARTITIONS=4          files, one per partition
#   USERS=100000          distinct users to draw from
#   RATE=4000             events per second of event time, all partitions
#                         (4000: ~250 s of event time, ~9 windows at 1M)
#   DISORDER=2000         within-partition disorder, ms (must stay < 5000)
#   SEED=42
#   FLINK_PARALLELISM="1 2"   one Flink run per value and variant
#   EDGE=1                0: skip the edge cases (edge_cases.py: ~110 payloads
#                         probing each input rule; both engines must agree on
#                         every one; ~1 min, mostly Flink's start-up)
#   DEDUP=0               1: also an extra clean data set with 2 % duplicates,
#                         where StreamForge dedups (always) and Flink runs with
#                         ROW_NUMBER dedup by event_id (parallelism 1)
#   FLINK_JAVA_OPTS=      extra JVM options (default: JVM ergonomics)
#   FLINK_OBJECT_REUSE=1  0: run Flink without pipeline.object-reuse (its
#                         usual throughput tuning; the runs before the raw
#                         variant, 2026-11-25/26, had it off)
#   WORK_DIR=             where data and outputs go (default: a temp dir,
#                         removed at the end unless KEEP=1)
#   SKIP_BUILD=0          1: use the existing binaries and Flink jar as they are
#   CARGO_TARGET_DIR      where the release binaries are (default: target/)
#   USE_GNU_TIME=1        0: measure with /proc and `times` even where
#                         /usr/bin/time exists (it is used when present)
#
# Exit status: 0 when every Flink result equals StreamForge's, 1 otherwise.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../../.." && pwd)

VARIANTS=${VARIANTS:-raw clean}
EVENTS=${EVENTS:-1000000}
PARTITIONS=${PARTITIONS:-4}
USERS=${USERS:-100000}
RATE=${RATE:-4000}
DISORDER=${DISORDER:-2000}
SEED=${SEED:-42}
FLINK_PARALLELISM=${FLINK_PARALLELISM:-1 2}
DEDUP=${DEDUP:-0}
EDGE=${EDGE:-1}
FLINK_JAVA_OPTS=${FLINK_JAVA_OPTS:-}
FLINK_OBJECT_REUSE=${FLINK_OBJECT_REUSE:-1}
KEEP=${KEEP:-0}
SKIP_BUILD=${SKIP_BUILD:-0}

if (( DISORDER >= 5000 )); then
  echo "DISORDER must stay below the 5 s watermark bound for a clean comparison" >&2
  exit 2
fi

release=${CARGO_TARGET_DIR:-$root/target}/release
bin=$release/streamforge
tools=$release/streamforge-tools
# Defaults only, never the repository's config/pipeline.yaml.
export STREAMFORGE_CONFIG=/dev/null

if [[ -n ${WORK_DIR:-} ]]; then
  work=$WORK_DIR
  mkdir -p "$work"
else
  work=$(mktemp -d "${TMPDIR:-/tmp}/sf-flink-compare.XXXXXX")
fi
cleanup() {
  if [[ $KEEP != 1 ]]; then rm -rf "$work"; else echo "kept: $work" >&2; fi
}
trap cleanup EXIT

log() { echo "== $*" >&2; }

# --- build -----------------------------------------------------------------
if [[ $SKIP_BUILD != 1 ]]; then
  log "building the StreamForge release binary"
  (cd "$root" && cargo build --release --quiet -p streamforge -p streamforge-tools)
  log "building the Flink job (mvn package; offline first, online if jars are missing)"
  if ! (cd "$here" && mvn -q -B -o package >"$work/mvn-offline.log" 2>&1); then
    (cd "$here" && mvn -q -B package >"$work/mvn.log" 2>&1) || {
      cat "$work/mvn-offline.log" "$work/mvn.log" >&2
      echo "the Flink job did not build" >&2
      exit 2
    }
  fi
fi
for b in "$bin" "$tools"; do [[ -x $b ]] || { echo "missing $b" >&2; exit 2; }; done
[[ -f $here/target/flink-peer.jar ]] || { echo "missing $here/target/flink-peer.jar" >&2; exit 2; }
flink_core=("$here"/target/lib/flink-core-[0-9]*.jar)
flink_version=$(basename "${flink_core[0]}" .jar)
flink_version=${flink_version#flink-core-}
java_version=$(java -version 2>&1 | head -1)

# --- measuring ---------------------------------------------------------------
# measure OUT CMD...: runs CMD and writes "wall_s user_s sys_s peak_rss_kib" to OUT.
measure() {
  local out=$1
  shift
  if [[ -x /usr/bin/time && ${USE_GNU_TIME:-1} == 1 ]]; then
    /usr/bin/time -f "%e %U %S %M" -o "$out" "$@"
    return
  fi
  # Without GNU time: wall clock from date, CPU from the shell's children
  # times (times), peak RSS by polling VmHWM.
  local t0 c0 c1 hwm=0 v pid rc=0
  t0=$(date +%s.%N)
  times > "$work/.times"
  c0=$(children_cpu < "$work/.times")
  "$@" &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    v=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
    if [[ -n $v ]] && (( v > hwm )); then hwm=$v; fi
    sleep 0.1
  done
  wait "$pid" || rc=$?
  times > "$work/.times"
  c1=$(children_cpu < "$work/.times")
  awk -v t0="$t0" -v t1="$(date +%s.%N)" -v c0="$c0" -v c1="$c1" -v m="$hwm" \
    'BEGIN { split(c0, a, " "); split(c1, b, " "); printf "%.2f %.2f %.2f %d\n", t1 - t0, b[1] - a[1], b[2] - a[2], m }' > "$out"
  return "$rc"
}
# "user sys" seconds from the output of `times` (run in this shell, not in a
# subshell, which would count only its own children): the children's line.
children_cpu() {
  tail -1 | awk '{
    for (i = 1; i <= 2; i++) { split($i, p, "m"); sub("s", "", p[2]); v[i] = p[1] * 60 + p[2] }
    printf "%.2f %.2f", v[1], v[2] }'
}

# --- data ------------------------------------------------------------------
# generate DIR DUP: the clean (pre-cleaned, canonical) data set.
generate() {
  local dir=$1 dup=$2
  log "generating $EVENTS events into $dir ($PARTITIONS files, duplicate rate $dup)"
  "$tools" produce --style canonical --out-dir "$dir" --partitions "$PARTITIONS" --count "$EVENTS" --rate "$RATE" \
    --users "$USERS" --seed "$SEED" --disorder "$DISORDER" \
    --anomaly-rate 0 --late-rate 0 --duplicate-rate "$dup" --progress false 2> "$dir.produce.log"
}

# generate_raw DIR: the realistic mix, broken records and re-sent copies
# included (gen-files' defaults for the mix: 2 % and 3 %), no late events.
generate_raw() {
  local dir=$1
  log "generating $EVENTS raw mix events into $dir ($PARTITIONS files)"
  "$tools" gen-files --style mix --out "$dir" --partitions "$PARTITIONS" --events "$EVENTS" \
    --rate $(( RATE / PARTITIONS > 0 ? RATE / PARTITIONS : 1 )) --users "$USERS" --seed "$SEED" \
    --disorder "$DISORDER" --late-share 0 2> "$dir.gen.log"
}

# --- runs ------------------------------------------------------------------
# run_streamforge NAME DATA [RUN_ARGS...]: leaves NAME.time, NAME.log, NAME.jsonl.
run_streamforge() {
  local name=$1 data=$2 state
  shift 2
  state=$work/$name.state
  log "StreamForge ($name): run --source files:$data --sink embedded --bounded $*"
  measure "$work/$name.time" "$bin" run --source "files:$data" --sink embedded --bounded \
    --state-dir "$state" --anomaly-log "$state/anomalies.log" --progress false "$@" 2> "$work/$name.log" ||
    { tail -20 "$work/$name.log" >&2; echo "StreamForge failed ($name)" >&2; exit 2; }
  "$bin" results --sink embedded --state-dir "$state" > "$work/$name.jsonl" 2>> "$work/$name.log"
  rm -rf "$state"
}

# run_flink NAME DATA PARALLELISM [--dedup]: leaves NAME.time, NAME.log, NAME.jsonl, NAME.timings.
run_flink() {
  local name=$1 data=$2 p=$3 reuse=()
  shift 3
  if [[ $FLINK_OBJECT_REUSE == 1 ]]; then reuse=(--object-reuse); fi
  log "Flink $flink_version ($name): parallelism $p $*"
  # shellcheck disable=SC2086 # FLINK_JAVA_OPTS is a list of options
  measure "$work/$name.time" java $FLINK_JAVA_OPTS -cp "$here/target/flink-peer.jar:$here/target/lib/*" \
    dev.streamforge.peer.FlinkHopJob --input "$data" --output "$work/$name.jsonl" \
    --parallelism "$p" --timings "$work/$name.timings" --launched-ms "$(date +%s%3N)" "${reuse[@]}" "$@" \
    2> "$work/$name.log" ||
    { tail -40 "$work/$name.log" >&2; echo "the Flink job failed ($name)" >&2; exit 2; }
}

# key NAME KEY: a value from NAME.timings.
key() { awk -F= -v k="$2" '$1 == k {print $2}' "$work/$1.timings"; }

# check NAME REF: 0 when NAME.jsonl equals REF.jsonl byte for byte.
failures=0
declare -A verdict
check() {
  local name=$1 ref=$2
  if [[ -s $work/$ref.jsonl ]] && cmp -s "$work/$ref.jsonl" "$work/$name.jsonl"; then
    verdict[$name]="identical ($(wc -l < "$work/$name.jsonl") windows)"
  else
    verdict[$name]="**DIFFERENT**"
    failures=$((failures + 1))
    echo "!! $name differs from $ref:" >&2
    diff "$work/$ref.jsonl" "$work/$name.jsonl" | head -20 >&2 || true
  fi
}

load_start=$(cut -d' ' -f1-3 /proc/loadavg)
declare -A flink_runs
# The edge cases first: a quick check that Flink's SQL rules give each
# payload StreamForge's verdict (edge_cases.py says how).
if [[ $EDGE == 1 ]]; then
  log "writing the edge cases (edge_cases.py)"
  python3 "$here/edge_cases.py" "$work/edge" 2> "$work/edge.gen.log"
  run_streamforge sf-edge "$work/edge" --set window.max_time_jump=0
  run_flink flink-edge "$work/edge" 1 --raw --dedup
  check flink-edge sf-edge
fi
for variant in $VARIANTS; do
  case $variant in
    raw) generate_raw "$work/raw"; flink_flags=(--raw --dedup) ;;
    clean) generate "$work/clean" 0; flink_flags=() ;;
    *) echo "unknown variant $variant (raw, clean)" >&2; exit 2 ;;
  esac
  run_streamforge "sf-$variant" "$work/$variant"
  runs=()
  for p in $FLINK_PARALLELISM; do
    run_flink "flink-$variant-p$p" "$work/$variant" "$p" "${flink_flags[@]}"
    check "flink-$variant-p$p" "sf-$variant"
    runs+=("flink-$variant-p$p")
  done
  flink_runs[$variant]="${runs[*]}"
  rm -rf "${work:?}/$variant"
done
if [[ $DEDUP == 1 ]]; then
  generate "$work/dups" 0.02
  run_streamforge sf-dedup "$work/dups"
  run_flink flink-dedup "$work/dups" 1 --dedup
  check flink-dedup sf-dedup
  rm -rf "$work/dups"
fi
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

# --- report ----------------------------------------------------------------
# field NAME N: the Nth field of NAME.time (1 wall, 2 user, 3 sys, 4 peak RSS KiB).
field() { awk -v n="$2" '{print $n}' "$work/$1.time"; }
# StreamForge's own job time: "streamforge: N records in 9.60s (...)".
sf_job_s() {
  sed -n 's/^streamforge: [0-9]* records in \([0-9.]*\)\([mµu]*s\) .*/\1 \2/p' "$work/$1.log" |
    awk '{ f = ($2 == "ms") ? 1e-3 : ($2 == "s") ? 1 : 1e-6; printf "%.2f", $1 * f }'
}
fmt_rate() { awk -v n="$EVENTS" -v s="$1" 'BEGIN { if (s > 0) printf "%.0f", n / s; else print "-" }'; }
fmt_ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.1f×", a / b; else print "-" }'; }
cpu() { awk -v u="$(field "$1" 2)" -v s="$(field "$1" 3)" 'BEGIN {printf "%.1f", u + s}'; }
rss() { awk -v k="$(field "$1" 4)" 'BEGIN {printf "%.0f", k / 1024}'; }
ms_s() { awk -v m="$1" 'BEGIN { if (m < 0) print "-"; else printf "%.2f", m / 1000 }'; }

# One table: StreamForge column and one column per Flink run.
table() {
  local sf=$1
  shift
  local runs=("$@") r header sep
  header="| | StreamForge"
  sep="| --- | ---"
  for r in "${runs[@]}"; do
    header+=" | Flink, parallelism $(key "$r" parallelism)"
    if [[ $(key "$r" raw) == true ]]; then header+=", raw lines + SQL rules"; fi
    if [[ $(key "$r" dedup) == true ]]; then header+=", ROW_NUMBER dedup"; fi
    sep+=" | ---"
  done
  echo "$header |"
  echo "$sep |"
  row() { local label=$1; shift; local line="| $label"; for v in "$@"; do line+=" | $v"; done; echo "$line |"; }
  local sfjob sfwall
  sfjob=$(sf_job_s "$sf")
  sfwall=$(field "$sf" 1)
  local vals=()
  vals=(); for r in "${runs[@]}"; do vals+=("${verdict[$r]}"); done
  row "results equal to StreamForge's" "(reference)" "${vals[@]}"
  vals=(); for r in "${runs[@]}"; do vals+=("$(ms_s "$(key "$r" launch_to_main_ms)") s"); done
  row "JVM start (launch → main)" "—" "${vals[@]}"
  vals=(); for r in "${runs[@]}"; do vals+=("$(ms_s "$(key "$r" main_to_submit_ms)") s"); done
  row "table environment + DDL (main → query submitted)" "—" "${vals[@]}"
  vals=(); for r in "${runs[@]}"; do
    vals+=("$(ms_s $(( $(key "$r" submit_to_results_written_ms) - $(key "$r" flink_net_runtime_ms) ))) s"); done
  row "planning, MiniCluster start, collect (submitted → results written, minus job)" "—" "${vals[@]}"
  vals=(); for r in "${runs[@]}"; do vals+=("$(ms_s "$(key "$r" flink_net_runtime_ms)") s"); done
  row "**job** (StreamForge: its run; Flink: the JobMaster's net runtime, created → finished)" "$sfjob s" "${vals[@]}"
  vals=(); for r in "${runs[@]}"; do vals+=("$(fmt_rate "$(ms_s "$(key "$r" flink_net_runtime_ms)")")"); done
  row "**events/s, job**" "$(fmt_rate "$sfjob")" "${vals[@]}"
  vals=(); for r in "${runs[@]}"; do vals+=("$(field "$r" 1) s"); done
  row "process wall time (launch → exit)" "$sfwall s" "${vals[@]}"
  vals=(); for r in "${runs[@]}"; do vals+=("$(fmt_rate "$(field "$r" 1)")"); done
  row "events/s, process wall time" "$(fmt_rate "$sfwall")" "${vals[@]}"
  vals=(); for r in "${runs[@]}"; do vals+=("$(cpu "$r") s"); done
  row "CPU user+sys, whole process" "$(cpu "$sf") s" "${vals[@]}"
  vals=(); for r in "${runs[@]}"; do vals+=("$(rss "$r") MiB"); done
  row "peak RSS" "$(rss "$sf") MiB" "${vals[@]}"
  vals=(); for r in "${runs[@]}"; do
    vals+=("$(fmt_ratio "$(ms_s "$(key "$r" flink_net_runtime_ms)")" "$sfjob")"); done
  row "**StreamForge ÷ Flink, events/s (job)**" "" "${vals[@]}"
  vals=(); for r in "${runs[@]}"; do vals+=("$(fmt_ratio "$(field "$r" 1)" "$sfwall")"); done
  row "StreamForge ÷ Flink, events/s (process wall)" "" "${vals[@]}"
  vals=(); for r in "${runs[@]}"; do vals+=("$(fmt_ratio "$(cpu "$r")" "$(cpu "$sf")")"); done
  row "Flink ÷ StreamForge, CPU seconds" "" "${vals[@]}"
}

# describe VARIANT: what the data set and the two jobs are, for the report.
describe() {
  case $1 in
    raw)
      echo "Payload style: **realistic mix** (\`streamforge-tools gen-files --style mix\`: Python, Jackson, Go, JavaScript, pretty-printed and reordered producers; RFC 3339 times with \`Z\` or offsets and 0-9 fraction digits or epoch ms, numeric strings, extra nested fields, non-ASCII and escaped strings), 2 % broken records, 3 % re-sent copies, no late events. StreamForge parses, validates, cleans and dedups as always. Flink reads each line as one STRING (\`raw\` format), extracts the fields with \`JSON_QUERY\` and applies StreamForge's input rules in SQL (types, event_id length, exact amount grammar, RFC 3339 / epoch-ms times with offsets, range), then \`ROW_NUMBER\` keep-first dedup by event_id (\`FlinkHopJob --raw --dedup\`). Events/s count every line read."
      ;;
    clean)
      echo "Payload style: **canonical, pre-cleaned** (\`streamforge-tools produce --style canonical --out-dir\`: StreamForge's own layout, fields in order, epoch ms, plain ASCII), no anomalies, no duplicates, no late events. Flink reads it with its JSON format (four typed columns), no validation, no dedup."
      ;;
  esac
}

{
  echo "## StreamForge vs Apache Flink: same job, same data, same machine"
  echo
  echo "- machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
  echo "- load average at start: $load_start; at end: $load_end (other work on the same cores makes every figure a lower bound)"
  echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ); StreamForge $(git -C "$root" describe --always --dirty 2>/dev/null || echo '?') (the binary is built from the working tree); Apache Flink $flink_version (Flink SQL, local MiniCluster in one JVM, no checkpointing, pipeline.object-reuse $([[ $FLINK_OBJECT_REUSE == 1 ]] && echo on || echo off)); $java_version; JVM options: ${FLINK_JAVA_OPTS:-none (JVM ergonomics)}"
  echo "- data: $EVENTS lines per data set in $PARTITIONS JSON-lines files (one per partition), $USERS users, $RATE events/s of event time, disorder ≤ $DISORDER ms within each partition (inside the 5 s bound)"
  echo "- job: HOP window slide 30 s, size 60 s; COUNT(*), SUM(amount) as DECIMAL(18,2), COUNT(DISTINCT user_id); watermark = max event time − 5 s per partition, minimum over partitions"
  echo "- StreamForge: \`streamforge run --source files:DIR --sink embedded --bounded\` (default checkpoints: every 5 s or 2M events, with fsync), then \`streamforge results\`"
  echo "- Flink: \`FlinkHopJob\` (bench/peers/flink): one filesystem table per file, UNION ALL, window TVF; results collected, sorted and written in the same format by the job itself"
  echo "- equality: the result files are compared byte for byte (\`cmp\`)"
  if [[ $EDGE == 1 ]]; then
    echo "- input rules: on the edge cases (\`edge_cases.py\`, $(cat "$work"/edge/*.jsonl | wc -l) payloads, one or two windows each), Flink's SQL rules give StreamForge's results: ${verdict[flink-edge]}"
  fi
  for variant in $VARIANTS; do
    echo
    echo "### Variant \`$variant\`"
    echo
    describe "$variant"
    echo
    # shellcheck disable=SC2086 # a list of run names
    table "sf-$variant" ${flink_runs[$variant]}
  done
  if [[ $DEDUP == 1 ]]; then
    echo
    echo "### Extra: clean canonical data with 2 % duplicates, deduplicated by event_id in both"
    echo
    echo "Same settings, duplicate rate 0.02 (exact copies of a recent event). StreamForge drops ids it has seen (bounded by its dedup horizon); Flink keeps the first row per event_id with \`ROW_NUMBER() OVER (PARTITION BY event_id ORDER BY proctime)\` (unbounded state: no TTL)."
    echo
    table sf-dedup flink-dedup
  fi
}

if (( failures > 0 )); then
  echo "FAIL: $failures Flink result(s) differ from StreamForge's" >&2
  exit 1
fi
echo "PASS: every Flink result equals StreamForge's" >&2
