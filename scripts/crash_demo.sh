#!/usr/bin/env bash
# The crash-and-restart demo: kill -9 the job at random moments, restart it
# each time, let it finish, then prove the sink holds exactly what one
# uninterrupted run computes (`streamforge verify`, an independent
# recomputation from the input). docs/demo.md walks through the output.
#
#   scripts/crash_demo.sh [--stack embedded|kafka] [--kills K] [--events N] [--dir DIR]
#
#   --stack embedded   files -> streamforge -> embedded sink (default; no servers)
#   --stack kafka      files -> Kafka topic -> streamforge -> ClickHouse
#                      (starts scripts/stack.sh; a fresh topic and table per demo)
#   --kills K          SIGKILLs before the run that is let to finish (default 5)
#   --events N         input size over 4 partitions (default 2000000)
#   --dir DIR          where input, state and logs go (default ./crash-demo)
#
# Environment: STREAMFORGE_BIN (use this binary instead of building one),
# CARGO_TARGET_DIR (honoured by the build). Exit 0 on PASS, 1 on FAIL, 3 when
# no kill landed before the input ended (nothing shown: use --events).
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/.." && pwd)

STACK=embedded
KILLS=5
EVENTS=2000000
PARTITIONS=4
DEMO_DIR=$PWD/crash-demo
DATA_SEED=42

say() { printf '[demo] %s\n' "$*"; }
die() {
  printf '[demo] ERROR: %s\n' "$*" >&2
  exit 2
}
usage() {
  sed -n 's/^#   //p' "${BASH_SOURCE[0]}" >&2
  exit "${1:-2}"
}

while (($# > 0)); do
  case $1 in
  --stack)
    STACK=${2:-}
    shift 2 || usage
    ;;
  --kills)
    KILLS=${2:-}
    shift 2 || usage
    ;;
  --events)
    EVENTS=${2:-}
    shift 2 || usage
    ;;
  --dir)
    DEMO_DIR=${2:-}
    shift 2 || usage
    ;;
  -h | --help) usage 0 ;;
  *)
    printf '[demo] unknown argument: %s\n' "$1" >&2
    usage
    ;;
  esac
done
[[ $STACK == embedded || $STACK == kafka ]] || die "--stack must be embedded or kafka, got '$STACK'"
[[ $KILLS =~ ^[0-9]+$ ]] || die "--kills must be a number, got '$KILLS'"
if ! [[ $EVENTS =~ ^[0-9]+$ ]] || ((EVENTS < 1000)); then
  die "--events must be a number >= 1000, got '$EVENTS'"
fi
[[ -n $DEMO_DIR ]] || die "--dir must not be empty"
command -v python3 >/dev/null || die "python3 is needed to generate the input"

DEMO_DIR=$(realpath -m "$DEMO_DIR")
INPUT=$DEMO_DIR/input
STATE=$DEMO_DIR/state
LOGS=$DEMO_DIR/logs
ANOMALY_LOG=$LOGS/anomalies.log
MANIFEST=$DEMO_DIR/input.manifest

# Relative config paths (config/pipeline.yaml and what it names) resolve
# against the repository, for every
# command below alike.
cd "$REPO"

# ---------------------------------------------------------------- binary

if [[ -n ${STREAMFORGE_BIN:-} ]]; then
  BIN=$STREAMFORGE_BIN
  # The tools binary is built beside the product's.
  TOOLS=${STREAMFORGE_TOOLS_BIN:-$(dirname "$STREAMFORGE_BIN")/streamforge-tools}
else
  say "building the release binary (cargo build --release)"
  cargo build --release --quiet --workspace
  TARGET_DIR=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
  BIN=$TARGET_DIR/release/streamforge
  TOOLS=$TARGET_DIR/release/streamforge-tools
fi
[[ -x $BIN ]] || die "no streamforge binary at $BIN"
"$BIN" verify --help >/dev/null 2>&1 ||
  die "$BIN has no 'verify' command; rebuild it from a tree that has one"

# ---------------------------------------------------------------- input

mkdir -p "$DEMO_DIR"

# Writes $PARTITIONS files of EVENTS/PARTITIONS lines: 20 minutes of event
# time from 2025-11-25T10:00:00Z, disorder up to 4 s within a partition, ~2%
# exact duplicates, ~1% broken lines of several kinds, ~0.1% events five
# minutes late. The manifest lists what the anomaly log must hold.
generate_input() {
  rm -rf "$INPUT" "$MANIFEST"
  mkdir -p "$INPUT"
  python3 - "$INPUT" "$MANIFEST" "$EVENTS" "$PARTITIONS" "$DATA_SEED" <<'PY'
import json, random, sys, time
out, manifest, events, partitions, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
rng = random.Random(seed)
t0 = 1764064800000                     # 2025-11-25T10:00:00Z
per_part = events // partitions
step = 1_200_000 / per_part            # 20 minutes of event time per partition
cities = ["Hangzhou", "Shanghai", "Beijing", "Shenzhen"]
expected = {"anomalies": [], "accepted": 0, "duplicates": 0, "lines": 0}

def rfc3339(ms):
    s, milli = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s)) + ".%03dZ" % milli

for p in range(partitions):
    recent = []
    with open(f"{out}/part-{p}.jsonl", "w") as f:
        for i in range(per_part):
            base = t0 + int(i * step)
            t = base - rng.randint(0, 4000)
            eid = f"ev-{p}-{i}"
            roll = rng.random()
            # A duplicate re-sends a recent accepted line of this partition,
            # never more than 4.5 s of event time back (within the bound).
            fresh = [l for l, lt in recent if base - lt <= 4500] if roll < 0.02 else []
            if fresh:
                line = rng.choice(fresh)
                expected["duplicates"] += 1
            elif roll < 0.03:
                kind = rng.randrange(5)
                if kind == 0:
                    line, reason = f'{{"event_id":"{eid}","order_id":"o{i}","amount":1.0', "malformed_json"
                elif kind == 1:
                    line, reason = f'[{{"event_id":"{eid}"}}]', "not_an_object"
                elif kind == 2:
                    line, reason = f'{{"event_id":"{eid}","order_id":"o{i}","user_id":"u7","event_time":{t}}}', "missing_field:amount"
                elif kind == 3:
                    line, reason = f'{{"event_id":"{eid}","order_id":"o{i}","user_id":"u7","amount":"12.345","event_time":{t}}}', "bad_amount"
                else:
                    line, reason = f'{{"event_id":"{eid}","order_id":"o{i}","user_id":"u7","amount":3,"event_time":"yesterday"}}', "bad_event_time"
                expected["anomalies"].append([reason, p, i])
            elif roll < 0.031 and base - t0 > 600_000:
                late = t - 300_000
                line = f'{{"event_id":"{eid}","order_id":"o{i}","user_id":"u{rng.randrange(5000)}","amount":9.99,"event_time":{late}}}'
                expected["anomalies"].append(["late_event", p, i])
            else:
                cents = rng.randrange(1, 50000)
                amount = f"{cents // 100}.{cents % 100:02d}"
                user = rng.randrange(5000)
                user_json = str(user) if rng.random() < 0.3 else f'"{user}"'  # 12 and "12": one user
                amount_json = f'"{amount}"' if rng.random() < 0.3 else amount
                time_json = str(t) if rng.random() < 0.5 else f'"{rfc3339(t)}"'
                extra = f',"city":"{rng.choice(cities)}"' if rng.random() < 0.7 else ""
                line = (f'{{"event_id":"{eid}","order_id":"o{i}","user_id":{user_json},'
                        f'"amount":{amount_json},"event_time":{time_json}{extra}}}')
                recent.append((line, t))
                del recent[:-64]
                expected["accepted"] += 1
            f.write(line + "\n")
            expected["lines"] += 1
with open(manifest, "w") as m:
    json.dump(expected, m)
PY
  printf '%s\n' "$EVENTS $PARTITIONS $DATA_SEED" >"$MANIFEST.params"
}

if [[ -f $MANIFEST.params && "$(<"$MANIFEST.params")" == "$EVENTS $PARTITIONS $DATA_SEED" && -d $INPUT ]]; then
  say "input: reusing $INPUT"
else
  say "input: generating $EVENTS events in $PARTITIONS files under $INPUT"
  generate_input
fi
TOTAL=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["lines"])' "$MANIFEST")

# ---------------------------------------------------------------- stack

rm -rf "$STATE" "$LOGS"
mkdir -p "$STATE" "$LOGS"

# A checkpoint every 200 ms or 10000 events, whichever first: frequent
# checkpoints pace the job so that random kills land all along the input, and
# many of them land inside the checkpoint protocol itself (sync, commit, flush).
RUN_ARGS=(run --state-dir "$STATE" --anomaly-log "$ANOMALY_LOG" --bounded
  --checkpoint-interval 200ms --checkpoint-events 10000 --progress true)
VERIFY_ARGS=(verify --source "files:$INPUT" --state-dir "$STATE")
if [[ $STACK == embedded ]]; then
  RUN_ARGS+=(--source "files:$INPUT" --sink embedded)
  VERIFY_ARGS+=(--sink embedded)
  say "stack: files -> streamforge -> embedded sink ($STATE/sink)"
else
  say "stack: starting Kafka and ClickHouse (scripts/stack.sh up)"
  "$SCRIPT_DIR/stack.sh" up
  # The stack's endpoints (its STACK_DIR and ports: the defaults, or
  # whatever STACK_DIR / STACK_PORTS=auto chose) for every command below.
  eval "$("$SCRIPT_DIR/stack.sh" env)"
  export KAFKA_BROKERS=$STREAMFORGE_TEST_KAFKA
  export CLICKHOUSE_URL=$STREAMFORGE_TEST_CLICKHOUSE_URL
  suffix=$(date +%Y%m%d_%H%M%S)_$$
  export KAFKA_TOPIC=crash_demo_$suffix
  export KAFKA_GROUP_ID=crash_demo_$suffix
  export CLICKHOUSE_TABLE=crash_demo_$suffix
  "$SCRIPT_DIR/stack.sh" topic "$KAFKA_TOPIC" "$PARTITIONS"
  say "producing the input to topic $KAFKA_TOPIC"
  "$TOOLS" produce --rate 0 --from-files "$INPUT" --progress false 2>"$LOGS/produce.log" ||
    {
      tail -n 20 "$LOGS/produce.log" >&2
      die "streamforge-tools produce failed"
    }
  tail -n 1 "$LOGS/produce.log"
  RUN_ARGS+=(--source kafka --sink clickhouse)
  VERIFY_ARGS+=(--sink clickhouse)
  say "stack: Kafka topic $KAFKA_TOPIC -> streamforge -> ClickHouse table $CLICKHOUSE_TABLE"
fi

# ---------------------------------------------------------------- runs

# Facts about a run come from its /metrics (a listener on a free loopback
# port; the one thing read from its log is that port). scrape saves the
# newest answer, which the facts below read; a run that is gone keeps its
# last answer.
metrics_address() { grep -ao 'serving /metrics.*address=[0-9.:]*' "$JOB_LOG" 2>/dev/null | head -n 1 | sed 's/.*address=//' || true; }
scrape() {
  local addr
  addr=$(metrics_address)
  [[ -n $addr ]] || return 1
  curl -sf --max-time 1 "http://$addr/metrics" >"$SCRAPE.new" 2>/dev/null || return 1
  mv "$SCRAPE.new" "$SCRAPE"
}
# metric NAME: the sum of its samples in the last scrape (empty if absent).
metric() {
  [[ -f $SCRAPE ]] || return 0
  awk -v name="$1" '$1 == name || index($1, name "{") == 1 { sum += $NF; seen = 1 }
       END { if (seen) printf "%d\n", sum }' "$SCRAPE"
}
last_checkpoint() { local id; id=$(metric streamforge_last_checkpoint_id); ((${id:-0} > 0)) && echo "$id" || true; }
# The watermark: how far through event time the run got.
last_watermark() {
  local s
  s=$(metric streamforge_watermark_seconds)
  [[ -n $s && $s != 0 ]] && date -u -d "@$s" +%Y-%m-%dT%H:%M:%SZ || echo "-inf"
}
# Where the run is: the next offset of every partition, summed.
position() { metric streamforge_current_offset; }

KILLED=0
KILLED=0
RESTORED=()
JOB_PID=""
# Never leave a job behind when the demo is interrupted.
# shellcheck disable=SC2317 # called by the EXIT trap
stop_job() {
  if [[ -n $JOB_PID ]] && kill -0 "$JOB_PID" 2>/dev/null; then
    kill -9 "$JOB_PID" 2>/dev/null || true
  fi
}
trap stop_job EXIT
RUN=0
REPLAY_LINES=()
RESTORED_NOW=""
PREV_LAST_SEEN=""

# start_run: runs the job in the background; sets JOB_PID and JOB_LOG.
start_run() {
  RUN=$((RUN + 1))
  JOB_LOG=$LOGS/run-$RUN.log
  SCRAPE=$LOGS/run-$RUN.metrics
  rm -f "$SCRAPE"
  "$BIN" "${RUN_ARGS[@]}" --metrics-addr 127.0.0.1:0 >/dev/null 2>"$JOB_LOG" &
  JOB_PID=$!
}

# watch_run CHECKPOINTS: prints a progress line every half second until the
# job exits or has committed CHECKPOINTS checkpoints of its own (0 = no
# limit). Returns 0 if the job is still running. Kills are timed by the
# job's progress, not by the clock, so they land on a fast machine as on a
# slow one.
watch_run() {
  local target=$1 next_line=0 now cp wm done
  while kill -0 "$JOB_PID" 2>/dev/null; do
    now=$(date +%s%3N)
    scrape || true
    done=$(metric streamforge_checkpoints_committed_total)
    if ((target > 0 && ${done:-0} >= target)); then
      return 0
    fi
    if ((now >= next_line)); then
      cp=$(last_checkpoint)
      wm=$(last_watermark)
      if [[ -n $cp ]]; then
        cp="#$cp (watermark $wm)"
      elif [[ -n $RESTORED_NOW ]]; then
        cp="#$RESTORED_NOW (restored)"
      else
        cp="none yet"
      fi
      say "run $RUN | kills so far $KILLED | last checkpoint $cp | events processed ~$(position) of $TOTAL"
      next_line=$((now + 500))
    fi
    sleep 0.05
  done
  return 1
}

# note_recovery: what the run that just started recovered from (its
# metrics, read by wait_for_recovery).
note_recovery() {
  local from start resent prev prev_restored=$RESTORED_NOW
  from=$(metric streamforge_recovered_from_checkpoint)
  RESTORED_NOW=""
  if ((${from:-0} > 0)); then
    RESTORED_NOW=$from
    start=$(metric streamforge_recovered_offset)
    resent=$(metric streamforge_recovery_resent_rows)
    prev=$PREV_LAST_SEEN
    RESTORED+=("#$from")
    if [[ -z $prev ]]; then
      prev="none of its own (it had restored #${prev_restored:-?})"
    elif ((from > prev)); then
      prev="#$prev (#$from was committed after the demo last looked, just before the kill)"
    else
      prev="#$prev"
    fi
    REPLAY_LINES+=("run $RUN: checkpoint #$from; run $((RUN - 1)) was last seen at $prev; resumed at event $start of $TOTAL, ${resent:-0} pending rows resent")
    say "run $RUN: recovering from checkpoint #$from: resuming at event $start of $TOTAL, resending ${resent:-0} pending rows; events run $((RUN - 1)) read after it are read again"
  elif ((RUN > 1)); then
    RESTORED+=("none")
    REPLAY_LINES+=("run $RUN: no checkpoint had been committed; started from the beginning of the input")
    say "run $RUN: no checkpoint had been committed: starting from the beginning"
  fi
}

# wait_for_recovery: up to 5 s for the run's metrics to say where it starts
# from (streamforge_recovered_from_checkpoint is -1 until start-up is done).
wait_for_recovery() {
  local i from
  for ((i = 0; i < 250; i++)); do
    if scrape; then
      from=$(metric streamforge_recovered_from_checkpoint)
      ((${from:--1} >= 0)) && return 0
    fi
    kill -0 "$JOB_PID" 2>/dev/null || return 0
    sleep 0.02
  done
}

finished_early=0
while ((KILLED < KILLS)); do
  start_run
  # A random moment: after 1 to 4 checkpoints of this run, then 0 to 99 ms
  # more, which lands inside the checkpoint protocol as often as between.
  after=$((1 + RANDOM % 4))
  extra_ms=$((RANDOM % 100))
  wait_for_recovery
  note_recovery
  rc=0
  if watch_run "$after"; then
    sleep "$(printf '0.%03d' "$extra_ms")"
    kill -9 "$JOB_PID" 2>/dev/null || true
    wait "$JOB_PID" 2>/dev/null || rc=$?
  else
    wait "$JOB_PID" || rc=$?
  fi
  if ((rc == 137)); then
    KILLED=$((KILLED + 1))
    PREV_LAST_SEEN=$(last_checkpoint)
    if [[ -n $PREV_LAST_SEEN ]]; then lc="#$PREV_LAST_SEEN"; else lc="none of its own"; fi
    say "kill -9 #$KILLED, ${extra_ms} ms after run $RUN had committed at least $after checkpoint(s) (the newest seen: $lc)"
  else
    # The run ended by itself (it may have beaten the kill by a hair).
    if ((rc != 0)); then
      tail -n 20 "$JOB_LOG" >&2
      die "run $RUN failed on its own (exit $rc); log: $JOB_LOG"
    fi
    finished_early=1
    say "run $RUN finished the input before kill #$((KILLED + 1)) (use --events for a longer run)"
    break
  fi
done

if ((finished_early == 0)); then
  start_run
  wait_for_recovery
  note_recovery
  say "run $RUN: no more kills, letting it finish"
  watch_run 0 || true
  rc=0
  wait "$JOB_PID" || rc=$?
  if ((rc != 0)); then
    tail -n 20 "$JOB_LOG" >&2
    die "the final run failed (exit $rc); log: $JOB_LOG"
  fi
fi

# ---------------------------------------------------------------- results

echo
say "================================ summary ================================"
say "stack:                    $STACK"
say "input:                    $TOTAL events in $PARTITIONS partitions ($INPUT)"
say "runs:                     $RUN"
say "kill -9:                  $KILLED"
say "restored from checkpoints: ${RESTORED[*]:-nothing (no restart)}"
for l in "${REPLAY_LINES[@]}"; do say "  $l"; done
say "last run:                 $(grep -a '^streamforge: ' "$JOB_LOG" | tail -n 1 || true)"
say "logs of every run:        $LOGS/run-*.log"
echo

# The anomaly log (SPEC §2) is part of the promise: each rejected line
# exactly once, whatever the kills did.
anomaly_ok=0
if python3 - "$ANOMALY_LOG" "$MANIFEST" <<'PY'; then
import collections, json, sys
log, manifest = sys.argv[1], sys.argv[2]
want = collections.Counter((r, p, o) for r, p, o in json.load(open(manifest))["anomalies"])
got = collections.Counter()
for line in open(log):
    a = json.loads(line)
    got[(a["reason"], a["partition"], a["offset"])] += 1
twice = sum(1 for n in got.values() if n > 1)
missing = sum((want - got).values())
extra = sum((got - want).values())
print(f"[demo] anomaly log: {sum(got.values())} lines, {len(want)} expected; "
      f"{missing} missing, {extra} extra, {twice} written more than once")
sys.exit(0 if missing == 0 and extra == 0 and twice == 0 else 1)
PY
  anomaly_ok=1
fi

say "streamforge ${VERIFY_ARGS[*]}"
verify_ok=0
verify_said="windows differ (table above)"
if "$BIN" "${VERIFY_ARGS[@]}" 2>&1 | tee "$LOGS/verify.log"; then
  verify_ok=1
elif ! grep -q '^verify: ' "$LOGS/verify.log"; then
  verify_said="could not run (its error is above and in $LOGS/verify.log)"
fi
echo

if ((verify_ok == 1 && anomaly_ok == 1 && KILLED == 0 && KILLS > 0)); then
  say "RESULT: NOT SHOWN. No kill landed: the input ended before the first one (use --events for a"
  say "longer run). The sink matches one uninterrupted run, but nothing was interrupted."
  exit 3
fi
if ((verify_ok == 1 && anomaly_ok == 1)); then
  cat <<'EOF'

   ####     ##     ####    ####
   #   #   #  #   #       #
   ####    ####    ###     ###
   #       #  #       #       #
   #       #  #   ####    ####

EOF
  short=""
  ((KILLED < KILLS)) && short=" (of the $KILLS asked for: the input ended first)"
  say "RESULT: PASS. $KILLED x kill -9$short, restored from ${RESTORED[*]:-nothing}; the sink holds exactly"
  say "the windows of one uninterrupted run, and the anomaly log holds each bad line exactly once."
  if [[ $STACK == kafka ]]; then
    say "look: clickhouse-client --port $STREAMFORGE_TEST_CLICKHOUSE_TCP_PORT --query \"SELECT * FROM ${CLICKHOUSE_DATABASE:-streamforge}.$CLICKHOUSE_TABLE FINAL ORDER BY window_start\""
    say "(the stack stays up: ${STACK_DIR:+STACK_DIR=$STACK_DIR }scripts/stack.sh down stops it)"
  else
    say "look: $BIN results --state-dir $STATE"
  fi
  exit 0
fi
cat <<'EOF'

   ####    ##    ###   #
   #      #  #    #    #
   ###    ####    #    #
   #      #  #    #    #
   #      #  #   ###   ####

EOF
say "RESULT: FAIL. verify: $( ((verify_ok == 1)) && echo ok || echo "$verify_said"); anomaly log: $( ((anomaly_ok == 1)) && echo ok || echo wrong); logs: $LOGS"
exit 1
