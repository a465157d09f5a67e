#!/usr/bin/env bash
# Benchmarks that print figures (never timed tests). Writes bench-out/report.md.
#
#   scripts/bench.sh core          # core path, one thread, in-memory payloads
#   scripts/bench.sh scaling       # state size, checkpoint pause, recovery time, RSS
#                                  # at 10k, 100k and 1M distinct users per window
#   scripts/bench.sh e2e           # Kafka -> StreamForge -> ClickHouse on the local stack
#   scripts/bench.sh               # all three
#
# Knobs: BENCH_CORE_EVENTS (20000000), BENCH_E2E_EVENTS (10000000),
# BENCH_CHECKPOINT (5s), BENCH_SCALING_USERS (10000,100000,1000000),
# BENCH_SCALING_RESTARTS (3), BENCH_OUT (bench-out: the report directory).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

what=${1:-all}
out=${BENCH_OUT:-bench-out}
mkdir -p "$out"
report=$out/report.md
bin=target/release/streamforge

echo "== building the release binary" >&2
cargo build --release --quiet

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
    echo "Command: \`$bin bench core --events $events\`"
    echo
    "$bin" bench core --events "$events" --json "$out/core.json"
  } | tee -a "$report"
}

scaling() {
  local users=${BENCH_SCALING_USERS:-10000,100000,1000000}
  local restarts=${BENCH_SCALING_RESTARTS:-3}
  echo "== scaling: $users distinct users per window" >&2
  {
    echo "## State scaling (one thread; recovery is a real restart of \`streamforge run\`)"
    echo
    echo "Command: \`$bin bench scaling --users $users --restarts $restarts\`"
    echo
    "$bin" bench scaling --users "$users" --restarts "$restarts" --json "$out/scaling.json"
    echo
  } | tee -a "$report"
}

e2e() {
  local events=${BENCH_E2E_EVENTS:-10000000}
  local interval=${BENCH_CHECKPOINT:-5s}
  scripts/stack.sh up >&2
  local topic table state
  topic=bench_$(date +%s)
  table=bench_$(date +%s)
  state=$(mktemp -d)
  scripts/stack.sh topic "$topic" 4 >&2
  export KAFKA_TOPIC=$topic KAFKA_GROUP_ID=$topic CLICKHOUSE_TABLE=$table STREAMFORGE_CONFIG=/dev/null
  echo "== e2e: producing $events events to $topic" >&2
  local t0 t1
  t0=$(date +%s.%N)
  "$bin" produce --count "$events" --rate 0 --users 100000 2> "$out/produce.log"
  t1=$(date +%s.%N)
  local kafka_pid ch_pid k0 c0 k1 c1
  kafka_pid=$(cat .stack/kafka/kafka.pid)
  ch_pid=$(cat .stack/clickhouse/clickhouse.pid)
  k0=$(cpu_of "$kafka_pid"); c0=$(cpu_of "$ch_pid")
  echo "== e2e: consuming into ClickHouse table $table (checkpoint every $interval)" >&2
  /usr/bin/time -f "%e %U %S %M" -o "$out/job.time" \
    "$bin" run --source kafka --sink clickhouse --bounded --state-dir "$state" \
      --anomaly-log "$state/anomalies.log" --checkpoint-interval "$interval" 2> "$out/job.log"
  k1=$(cpu_of "$kafka_pid"); c1=$(cpu_of "$ch_pid")
  read -r wall user sys rss < "$out/job.time"
  {
    echo "## End to end: Kafka -> StreamForge -> ClickHouse (broker and ClickHouse on the same machine)"
    echo
    echo "Commands: \`streamforge produce --count $events --rate 0\`, then \`streamforge run --source kafka --sink clickhouse --bounded --checkpoint-interval $interval\`"
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

case $what in
  core) core ;;
  scaling) scaling ;;
  e2e) e2e ;;
  all) core; scaling; e2e ;;
  *) echo "usage: scripts/bench.sh [core|scaling|e2e|all]" >&2; exit 2 ;;
esac
echo "report: $report" >&2
