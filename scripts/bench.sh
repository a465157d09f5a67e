#!/usr/bin/env bash
# Benchmarks that print figures (never timed tests). Writes bench-out/report.md.
#
#   scripts/bench.sh core          # core path, one thread, in-memory payloads
#   scripts/bench.sh files         # a bounded `run` over files of the realistic mix:
#                                  # wall time, CPU, records/s, run BENCH_FILES_RUNS times
#   scripts/bench.sh scaling       # state size, checkpoint pause, recovery time, RSS
#                                  # at 10k, 100k and 1M distinct users per window
#   scripts/bench.sh e2e           # Kafka -> StreamForge -> ClickHouse on the local stack:
#                                  # throughput from a preloaded topic, then latency
#   scripts/bench.sh latency       # only the end-to-end latency at a fixed rate
#   scripts/bench.sh flink         # the same job in Apache Flink SQL on the same data,
#                                  # outputs checked equal (bench/peers/flink/compare.sh)
#   scripts/bench.sh               # all
#
# Knobs: BENCH_CORE_EVENTS (20000000), BENCH_FILES_EVENTS (3000000),
# BENCH_FILES_RUNS (5), BENCH_FILES_STYLE (mix), BENCH_E2E_EVENTS (10000000),
# BENCH_CHECKPOINT (5s), BENCH_SCALING_USERS (10000,100000,1000000),
# BENCH_SCALING_RESTARTS (3), BENCH_LATENCY_RATE (2000 events/s),
# BENCH_LATENCY_SECONDS (300), BENCH_LATENCY_CHECKPOINT (1s),
# BENCH_LATENCY_WINDOW / BENCH_LATENCY_SLIDE (10s / 5s: more windows per
# minute; the latency does not depend on the window size),
# BENCH_E2E_STYLE (mix: the payload style produced for e2e; canonical for
# the generator's own layout), BENCH_OUT (bench-out: the report directory).
# e2e runs on the stack scripts/stack.sh starts: set STACK_DIR (and
# STACK_PORTS=auto) for a stack of its own beside another one.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

what=${1:-all}
out=${BENCH_OUT:-bench-out}
mkdir -p "$out"
report=$out/report.md
bin=${CARGO_TARGET_DIR:-target}/release/streamforge
tools=${CARGO_TARGET_DIR:-target}/release/streamforge-tools

echo "== building the release binary" >&2
cargo build --release --quiet --workspace

machine() {
  echo "- machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
  echo "- kernel: $(uname -r); rustc: $(rustc --version)"
  echo "- load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
}

# CPU seconds (user+sys) a process has used so far.
cpu_of() {
  local pid=$1
  awk -v tck="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / tck}' "/proc/$pid/stat"
}

core() {
  local events=${BENCH_CORE_EVENTS:-20000000}
  echo "== core: $events events" >&2
  {
    echo "## Core path (one thread, in-memory payloads, checkpoints every 2M events)"
    echo
    # The realistic mix is the headline; the generator's own layout is one
    # line among others (docs/performance.md, "Payload styles").
    for style in mix canonical; do
      echo "Command: \`$tools bench core --events $events --style $style\`"
      echo
      "$tools" bench core --events "$events" --style "$style" --json "$out/core-$style.json"
      echo
    done
    echo "## Parsing: JSON readers side by side on each payload style"
    echo
    echo "Command: \`$tools bench parse --styles mix,canonical,python,jackson,go,js,pretty,reordered\`"
    echo
    "$tools" bench parse --styles mix,canonical,python,jackson,go,js,pretty,reordered \
      --json "$out/parse.json"
  } | tee -a "$report"
}

# A bounded `run` over files, the way a user runs a backfill: the files are
# generated once (and kept in $out), read once before each run (this kind of
# VM reclaims idle page cache, and a run that reads its input from disk is
# not comparable), and each run starts from a fresh state directory.
files() {
  local events=${BENCH_FILES_EVENTS:-3000000} runs=${BENCH_FILES_RUNS:-5}
  local style=${BENCH_FILES_STYLE:-mix}
  local data=$out/files-$style-$events
  if [ ! -s "$data/part-0.jsonl" ]; then
    echo "== files: generating $events $style events into $data" >&2
    rm -rf "$data"
    "$tools" gen-files --style "$style" --events "$events" --out "$data" >&2
  fi
  echo "== files: $runs bounded runs over $data" >&2
  {
    echo "## Run over files, $style payloads ($events records, $(du -sh "$data" | cut -f1))"
    echo
    machine
    echo
    echo "Command: \`streamforge run --source files:$data --sink embedded --bounded --set metrics_addr=\` (a fresh state directory each run)"
    echo
    echo "| run | wall | CPU user + sys | records/s | CPU per record | accepted / duplicates / anomalies |"
    echo "| --- | --- | --- | --- | --- | --- |"
    local n work times log
    for n in $(seq 1 "$runs"); do
      work=$(mktemp -d)
      cat "$data"/* > /dev/null
      times=$work/times
      log=$work/job.log
      TIMEFORMAT='%R %U %S'
      { time "$bin" run --source "files:$data" --sink embedded --bounded --set metrics_addr= \
          --state-dir "$work/state" --anomaly-log "$work/anomalies.log" > /dev/null 2> "$log" ; } 2> "$times"
      fates=$(sed -nE 's/^streamforge:.*: ([0-9]+) accepted, ([0-9]+) duplicates, ([0-9]+) anomalies.*/\1 \/ \2 \/ \3/p' "$log")
      awk -v n="$n" -v ev="$events" -v fates="$fates" '{
          printf "| %d | %.2f s | %.2f + %.2f s | %.2f M | %.2f µs | %s |\n", n, $1, $2, $3, ev / $1 / 1e6, ($2 + $3) / ev * 1e6, fates
        }' "$times"
      rm -rf "$work"
    done
    echo
  } | tee -a "$report"
}

scaling() {
  local users=${BENCH_SCALING_USERS:-10000,100000,1000000}
  local restarts=${BENCH_SCALING_RESTARTS:-3}
  echo "== scaling: $users distinct users per window" >&2
  {
    echo "## State scaling (one thread; recovery is a real restart of \`streamforge run\`)"
    echo
    echo "Command: \`$tools bench scaling --users $users --restarts $restarts\`"
    echo
    "$tools" bench scaling --users "$users" --restarts "$restarts" --json "$out/scaling.json"
    echo
  } | tee -a "$report"
}

# End-to-end latency at a fixed moderate rate, on live data: the producer
# paces events whose event time is the wall clock, the job runs unbounded,
# and a poller asks ClickHouse every 100 ms which windows are visible. For
# each window the latency is (first seen in ClickHouse) - (window end): the
# time from the append of the window's last event to its row being visible.
# It includes, by design, the watermark bound (5 s) and up to one checkpoint
# interval (the sink is written after each checkpoint).
latency() {
  local rate=${BENCH_LATENCY_RATE:-2000} secs=${BENCH_LATENCY_SECONDS:-300}
  local interval=${BENCH_LATENCY_CHECKPOINT:-1s}
  local size=${BENCH_LATENCY_WINDOW:-10s} slide=${BENCH_LATENCY_SLIDE:-5s}
  scripts/stack.sh up >&2
  eval "$(scripts/stack.sh env)"
  export KAFKA_BROKERS=$STREAMFORGE_TEST_KAFKA CLICKHOUSE_URL=$STREAMFORGE_TEST_CLICKHOUSE_URL
  local ch=$STREAMFORGE_TEST_CLICKHOUSE_URL/
  local topic state
  topic=latency_$(date +%s)
  state=$(mktemp -d)
  scripts/stack.sh topic "$topic" 4 >&2
  export KAFKA_TOPIC=$topic KAFKA_GROUP_ID=$topic CLICKHOUSE_TABLE=$topic STREAMFORGE_CONFIG=/dev/null
  echo "== latency: $rate events/s for $secs s, windows $size/$slide, checkpoint every $interval" >&2
  "$bin" run --source kafka --sink clickhouse --state-dir "$state" \
    --anomaly-log "$state/anomalies.log" --checkpoint-interval "$interval" \
    --set "window.size=$size" --set "window.slide=$slide" 2> "$out/latency-job.log" &
  local job=$!
  # The job creates the table once it started; wait for that (60 s at most).
  local waited=0
  until [[ $(curl -s --max-time 2 "$ch" --data-binary "EXISTS TABLE streamforge.$topic" || true) == 1 ]]; do
    kill -0 "$job" 2>/dev/null || { tail -n 20 "$out/latency-job.log" >&2; echo "latency: the job exited before creating its table" >&2; return 1; }
    ((waited++ < 600)) || { echo "latency: no table streamforge.$topic after 60 s" >&2; return 1; }
    sleep 0.1
  done
  local t_start t_end now ws we
  t_start=$(date +%s%3N)
  "$tools" produce --rate "$rate" --count $((rate * secs)) 2> "$out/latency-produce.log" &
  local producer=$!
  declare -A seen=()
  while kill -0 "$producer" 2>/dev/null; do
    now=$(date +%s%3N)
    while read -r ws we; do
      if [[ -n "$ws" && -z "${seen[$ws]:-}" ]]; then seen[$ws]="$we $now"; fi
    done < <(curl -s --max-time 2 "$ch" --data-binary \
      "SELECT DISTINCT toUnixTimestamp(window_start), toUnixTimestamp(window_end) FROM streamforge.$topic FORMAT TabSeparated" || true)
    sleep 0.1
  done
  wait "$producer" || true
  t_end=$(date +%s%3N)
  kill -INT "$job" 2>/dev/null || true
  wait "$job" || true
  # Windows that closed while events flowed: end after the first full window,
  # before the producer stopped.
  local size_ms
  size_ms=$(( $(echo "$size" | tr -dc 0-9) * 1000 ))
  local lat
  lat=$(for ws in "${!seen[@]}"; do
          read -r we now <<< "${seen[$ws]}"
          if (( we * 1000 >= t_start + size_ms && we * 1000 <= t_end )); then
            echo $(( now - we * 1000 ))
          fi
        done | sort -n)
  {
    echo "## End-to-end latency: event append to row visible in ClickHouse"
    echo
    echo "Commands: \`streamforge run --source kafka --sink clickhouse --checkpoint-interval $interval --set window.size=$size --set window.slide=$slide\` and \`streamforge-tools produce --rate $rate --count $((rate * secs))\` (event time = wall clock), ClickHouse polled every 100 ms"
    echo
    echo "$lat" | awk -v rate="$rate" 'NF { v[n++] = $1 } END {
      if (n == 0) { print "no window closed during the run"; exit }
      p50 = v[int((n - 1) * 0.5 + 0.5)]; p99 = v[int((n - 1) * 0.99 + 0.5)]
      print "| metric | value |"; print "| --- | --- |"
      printf "| rate | %d events/s |\n", rate
      printf "| windows measured | %d |\n", n
      printf "| window end -> row visible, p50 / p99 / max | %d / %d / %d ms |\n", p50, p99, v[n - 1]
      printf "| min | %d ms |\n", v[0]
    }'
    echo
  } | tee -a "$report"
  rm -rf "$state"
}

e2e() {
  local events=${BENCH_E2E_EVENTS:-10000000}
  local interval=${BENCH_CHECKPOINT:-5s}
  local style=${BENCH_E2E_STYLE:-mix}
  scripts/stack.sh up >&2
  # The stack's endpoints and directory, whatever STACK_DIR / ports it has.
  eval "$(scripts/stack.sh env)"
  local stack_dir=$STREAMFORGE_TEST_STACK_DIR
  local topic table state
  topic=bench_$(date +%s)
  table=bench_$(date +%s)
  state=$(mktemp -d)
  scripts/stack.sh topic "$topic" 4 >&2
  export KAFKA_BROKERS=$STREAMFORGE_TEST_KAFKA CLICKHOUSE_URL=$STREAMFORGE_TEST_CLICKHOUSE_URL
  export KAFKA_TOPIC=$topic KAFKA_GROUP_ID=$topic CLICKHOUSE_TABLE=$table STREAMFORGE_CONFIG=/dev/null
  echo "== e2e: producing $events events ($style payloads) to $topic" >&2
  local t0 t1
  t0=$(date +%s.%N)
  "$tools" produce --count "$events" --rate 0 --users 100000 --style "$style" 2> "$out/produce.log"
  t1=$(date +%s.%N)
  local kafka_pid ch_pid k0 c0 k1 c1
  kafka_pid=$(cat "$stack_dir/kafka/kafka.pid")
  ch_pid=$(cat "$stack_dir/clickhouse/clickhouse.pid")
  k0=$(cpu_of "$kafka_pid"); c0=$(cpu_of "$ch_pid")
  echo "== e2e: consuming into ClickHouse table $table (checkpoint every $interval)" >&2
  /usr/bin/time -f "%e %U %S %M" -o "$out/job.time" \
    "$bin" run --source kafka --sink clickhouse --bounded --state-dir "$state" \
      --anomaly-log "$state/anomalies.log" --checkpoint-interval "$interval" 2> "$out/job.log"
  k1=$(cpu_of "$kafka_pid"); c1=$(cpu_of "$ch_pid")
  read -r wall user sys rss < "$out/job.time"
  {
    echo "## End to end: Kafka -> StreamForge -> ClickHouse, $style payloads (broker and ClickHouse on the same machine)"
    echo
    echo "Commands: \`streamforge-tools produce --count $events --rate 0 --style $style\`, then \`streamforge run --source kafka --sink clickhouse --bounded --checkpoint-interval $interval\`"
    echo
    echo "| metric | value |"
    echo "| --- | --- |"
    echo "| events | $events |"
    echo "| produce | $(awk -v a="$t0" -v b="$t1" -v n="$events" 'BEGIN {printf "%.1f s (%.0f events/s)", b-a, n/(b-a)}') |"
    echo "| job wall time (start to final checkpoint, incl. recovery-free start) | ${wall} s |"
    echo "| job throughput | $(awk -v w="$wall" -v n="$events" 'BEGIN {printf "%.0f events/s", n/w}') |"
    echo "| job CPU user+sys | $(awk -v u="$user" -v s="$sys" 'BEGIN {printf "%.1f s", u+s}') |"
    echo "| broker CPU during the run | $(awk -v a="$k0" -v b="$k1" 'BEGIN {printf "%.1f s", b-a}') |"
    echo "| ClickHouse CPU during the run | $(awk -v a="$c0" -v b="$c1" 'BEGIN {printf "%.1f s", b-a}') |"
    echo "| job peak RSS | $((rss / 1024)) MiB |"
    echo
    echo "Job summary:"
    echo
    echo '```'
    grep -E '^(streamforge:|  )' "$out/job.log" || true
    echo '```'
  } | tee -a "$report"
  rm -rf "$state"
}

{
  echo "# StreamForge benchmark report"
  echo
  machine
  echo
} > "$report"

flink() {
  echo "== flink: the same job in Apache Flink on the same data" >&2
  bench/peers/flink/compare.sh | tee -a "$report"
}

case $what in
  core) core ;;
  files) files ;;
  flink) flink ;;
  scaling) scaling ;;
  e2e) e2e; latency ;;
  latency) latency ;;
  all) core; files; scaling; e2e; flink ;;
  *) echo "usage: scripts/bench.sh [core|files|scaling|e2e|latency|flink|all]" >&2; exit 2 ;;
esac
echo "report: $report" >&2
