#!/usr/bin/env bash
# Local Kafka (KRaft, single node) + ClickHouse for StreamForge dev, tests and CI.
# No Docker needed: Kafka jars come from Maven Central (scripts/kafka/pom.xml),
# ClickHouse from Debian's clickhouse-server package. See docs/stack.md.
#
#   scripts/stack.sh up | down | status | reset
#   scripts/stack.sh kafka-start | kafka-stop [--kill]
#   scripts/stack.sh clickhouse-start | clickhouse-stop [--kill]
#   scripts/stack.sh topic NAME PARTITIONS
#   scripts/stack.sh kafka-tool MAIN_CLASS [ARGS...]   (e.g. org.apache.kafka.tools.TopicCommand --list ...)
#   scripts/stack.sh env      (the STREAMFORGE_TEST_* exports that point the tests at this stack)
#
# Everything (jars, configs, data, logs, pid files, the ports) lives under
# $STACK_DIR (default: <repo>/.stack). Settings come from the environment,
# defaults below.
#
# Ports: each of KAFKA_PORT, KAFKA_CONTROLLER_PORT, CLICKHOUSE_HTTP_PORT,
# CLICKHOUSE_TCP_PORT and CLICKHOUSE_INTERSERVER_PORT comes from the
# environment, else from $STACK_DIR/ports.env (the ports this stack directory
# last started with, so `status`, `kafka-start` or `topic` find a stack
# started on other ports), else the documented defaults 9092, 9093, 8123, 9000
# and 9009. With STACK_PORTS=auto, a port not set in the environment is the
# recorded one if it is free (or this stack runs on it), else a free port
# below the ephemeral range: how scripts/test.sh runs its own stack next to
# yours. A port that is taken stops the start with an error naming it.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/.." && pwd)
# shellcheck source=scripts/lib.sh
source "$SCRIPT_DIR/lib.sh"

STACK_DIR=$(realpath -m "${STACK_DIR:-$REPO/.stack}") # absolute: pid checks match on it
STACK_TIMEOUT=${STACK_TIMEOUT:-180}          # seconds a service may take to become ready
STACK_STOP_TIMEOUT=${STACK_STOP_TIMEOUT:-30} # seconds between TERM and KILL

KAFKA_TOPIC=${KAFKA_TOPIC:-orders_stream}
KAFKA_PARTITIONS=${KAFKA_PARTITIONS:-4}
KAFKA_HEAP_OPTS=${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}
# Fixed KRaft cluster id: base64url("StreamForgeKafka"), 16 bytes as Kafka requires.
KAFKA_CLUSTER_ID=${KAFKA_CLUSTER_ID:-U3RyZWFtRm9yZ2VLYWZrYQ}

CLICKHOUSE_BASE_CONFIG=${CLICKHOUSE_BASE_CONFIG:-/etc/clickhouse-server/config.xml}
# Empty: user `default` without password (packaged users.xml). Set: `default`
# gets this password (stored as SHA-256 in $STACK_DIR/clickhouse/users.xml).
CLICKHOUSE_PASSWORD=${CLICKHOUSE_PASSWORD:-}

# The five ports, their defaults, and where this stack directory records them.
PORT_VARS=(KAFKA_PORT KAFKA_CONTROLLER_PORT CLICKHOUSE_HTTP_PORT CLICKHOUSE_TCP_PORT CLICKHOUSE_INTERSERVER_PORT)
declare -A DEFAULT_PORT=([KAFKA_PORT]=9092 [KAFKA_CONTROLLER_PORT]=9093 [CLICKHOUSE_HTTP_PORT]=8123
  [CLICKHOUSE_TCP_PORT]=9000 [CLICKHOUSE_INTERSERVER_PORT]=9009)
PORTS_FILE=$STACK_DIR/ports.env
STACK_PORTS=${STACK_PORTS:-}

KAFKA_DIR=$STACK_DIR/kafka
KAFKA_LIBS=$KAFKA_DIR/libs
KAFKA_CONF=$KAFKA_DIR/config/server.properties
KAFKA_PID=$KAFKA_DIR/kafka.pid
KAFKA_LOG=$KAFKA_DIR/logs/server.log
KAFKA_OUT=$KAFKA_DIR/logs/stdout.log
CH_DIR=$STACK_DIR/clickhouse
CH_PID=$CH_DIR/clickhouse.pid
CH_LOG=$CH_DIR/logs/clickhouse-server.log
CH_ERR=$CH_DIR/logs/clickhouse-server.err.log
CH_OUT=$CH_DIR/logs/stdout.log
CH_AUTH=$CH_DIR/auth.headers # Basic auth header for our own curl calls, mode 600

KAFKA_POM=$SCRIPT_DIR/kafka/pom.xml
KAFKA_TEMPLATE=$SCRIPT_DIR/kafka/server.properties.template
SCHEMA_SQL=$REPO/sql/create_ck_table.sql

APT_UPDATED=0

usage() {
  grep '^#   scripts/stack.sh' "${BASH_SOURCE[0]}" | sed 's/^#   /usage: /' >&2
  exit 2
}

is_uint() { [[ "$1" =~ ^[0-9]+$ ]]; }

for _v in KAFKA_PARTITIONS STACK_TIMEOUT STACK_STOP_TIMEOUT; do
  is_uint "${!_v}" || sf_die "$_v must be a number, got '${!_v}'"
done
unset _v
case "$STACK_PORTS" in
  "" | auto) ;;
  *) sf_die "STACK_PORTS must be empty or auto, got '$STACK_PORTS'" ;;
esac

# ---------------------------------------------------------------- ports

# Reads $PORTS_FILE (lines NAME=PORT) into RECORDED_PORT; ignores anything else.
declare -A RECORDED_PORT=()
read_recorded_ports() {
  local k v
  [[ -f "$PORTS_FILE" ]] || return 0
  while IFS='=' read -r k v; do
    [[ -n "${DEFAULT_PORT[$k]:-}" ]] && is_uint "$v" && RECORDED_PORT[$k]=$v
  done <"$PORTS_FILE"
}

# Sets the five port variables (see the header) and what derives from them.
resolve_ports() {
  local v unset_vars=() recorded_ok=1 picked
  read_recorded_ports
  for v in "${PORT_VARS[@]}"; do
    if [[ -n "${!v:-}" ]]; then
      is_uint "${!v}" || sf_die "$v must be a number, got '${!v}'"
    else
      unset_vars+=("$v")
    fi
  done
  if [[ "$STACK_PORTS" == auto && ${#unset_vars[@]} -gt 0 ]]; then
    # The recorded ports when this stack runs on them or they are free.
    for v in "${unset_vars[@]}"; do
      if [[ -z "${RECORDED_PORT[$v]:-}" ]]; then
        recorded_ok=0
      elif [[ -z "$(kafka_running_pid)$(ch_running_pid)" ]] && sf_port_busy "${RECORDED_PORT[$v]}"; then
        recorded_ok=0
      fi
    done
    if ((recorded_ok)); then
      for v in "${unset_vars[@]}"; do printf -v "$v" '%s' "${RECORDED_PORT[$v]}"; done
    else
      local explicit=()
      for v in "${PORT_VARS[@]}"; do [[ -n "${!v:-}" ]] && explicit+=("${!v}"); done
      picked=$(sf_free_ports "${#unset_vars[@]}" "${explicit[@]}") ||
        sf_die "STACK_PORTS=auto: not enough free ports (see above); set ${unset_vars[*]} by hand"
      mapfile -t picked <<<"$picked"
      local i
      for i in "${!unset_vars[@]}"; do printf -v "${unset_vars[$i]}" '%s' "${picked[$i]}"; done
    fi
  else
    for v in "${unset_vars[@]}"; do
      printf -v "$v" '%s' "${RECORDED_PORT[$v]:-${DEFAULT_PORT[$v]}}"
    done
  fi
  KAFKA_BOOTSTRAP="127.0.0.1:$KAFKA_PORT"
  CLICKHOUSE_URL="http://127.0.0.1:$CLICKHOUSE_HTTP_PORT/"
}

# A running service keeps the ports it started with: asking for others is an
# error, not a silent second meaning of the same STACK_DIR.
check_running_ports() {
  local v vars=()
  [[ -n "$(kafka_running_pid)" ]] && vars+=(KAFKA_PORT KAFKA_CONTROLLER_PORT)
  [[ -n "$(ch_running_pid)" ]] && vars+=(CLICKHOUSE_HTTP_PORT CLICKHOUSE_TCP_PORT CLICKHOUSE_INTERSERVER_PORT)
  for v in "${vars[@]}"; do
    if [[ -n "${RECORDED_PORT[$v]:-}" && "${RECORDED_PORT[$v]}" != "${!v}" ]]; then
      sf_die "$v=${!v}, but the stack in $STACK_DIR runs with $v=${RECORDED_PORT[$v]}: stop it first (STACK_DIR=$STACK_DIR scripts/stack.sh down), or leave $v unset"
    fi
  done
}

# What to do about a port that is taken, for the start errors.
port_hint() {
  printf '; choose other ports (KAFKA_PORT, KAFKA_CONTROLLER_PORT, CLICKHOUSE_HTTP_PORT, CLICKHOUSE_TCP_PORT, CLICKHOUSE_INTERSERVER_PORT), or STACK_PORTS=auto to take free ones, with a STACK_DIR of their own (docs/stack.md)'
}

# Records the ports in $PORTS_FILE (before a service starts on them).
record_ports() {
  local v tmp=$PORTS_FILE.$$.tmp
  mkdir -p "$STACK_DIR"
  for v in "${PORT_VARS[@]}"; do printf '%s=%s\n' "$v" "${!v}"; done >"$tmp"
  mv -f "$tmp" "$PORTS_FILE"
  for v in "${PORT_VARS[@]}"; do RECORDED_PORT[$v]=${!v}; done
}

# `env`: what the tests read (tests/common/endpoints.rs), as shell exports.
cmd_env() {
  printf 'export STREAMFORGE_TEST_STACK_DIR=%q\n' "$STACK_DIR"
  printf 'export STREAMFORGE_TEST_KAFKA=%q\n' "$KAFKA_BOOTSTRAP"
  printf 'export STREAMFORGE_TEST_CLICKHOUSE_URL=%q\n' "http://127.0.0.1:$CLICKHOUSE_HTTP_PORT"
  printf 'export STREAMFORGE_TEST_CLICKHOUSE_TCP_PORT=%q\n' "$CLICKHOUSE_TCP_PORT"
  # What streamforge and streamforge-tools read (config: ENV_ALIASES).
  printf 'export KAFKA_BROKERS=%q\n' "$KAFKA_BOOTSTRAP"
  printf 'export CLICKHOUSE_URL=%q\n' "http://127.0.0.1:$CLICKHOUSE_HTTP_PORT"
}

# Serialize state-changing commands (two `up`s at once would race on pid files).
take_lock() {
  mkdir -p "$STACK_DIR"
  exec 9>"$STACK_DIR/.lock"
  flock -w "${STACK_LOCK_TIMEOUT:-300}" 9 || sf_die "another scripts/stack.sh holds $STACK_DIR/.lock"
}

# ---------------------------------------------------------------- installs

apt_install() {
  local log=$STACK_DIR/apt.log
  mkdir -p "$STACK_DIR"
  if ((APT_UPDATED == 0)); then
    sf_log "apt-get update (output in $log)"
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 update >"$log" 2>&1 ||
      {
        sf_tail_log "$log"
        sf_die "apt-get update failed"
      }
    APT_UPDATED=1
  fi
  sf_log "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y "$@" >>"$log" 2>&1 ||
    {
      sf_tail_log "$log"
      sf_die "apt-get install $* failed"
    }
}

ensure_java() {
  local pkgs=()
  command -v java >/dev/null || pkgs+=(openjdk-17-jre-headless)
  command -v mvn >/dev/null || pkgs+=(maven)
  ((${#pkgs[@]} == 0)) || apt_install "${pkgs[@]}"
}

# Copies the pinned Kafka jars into $KAFKA_LIBS unless they are already there
# for this exact pom (a changed pom re-copies). ~/.m2 is the download cache.
kafka_libs_current() {
  local want have=""
  want=$(sha256sum "$KAFKA_POM" | cut -d' ' -f1)
  [[ -f "$KAFKA_LIBS/.pom.sha256" ]] && have=$(<"$KAFKA_LIBS/.pom.sha256")
  [[ "$want" == "$have" ]]
}

ensure_kafka_libs() {
  local want tmp
  kafka_libs_current && return 0
  want=$(sha256sum "$KAFKA_POM" | cut -d' ' -f1)
  ensure_java
  sf_log "kafka: fetching broker jars with mvn (scripts/kafka/pom.xml -> $KAFKA_LIBS)"
  tmp=$KAFKA_DIR/libs.tmp
  rm -rf "$tmp"
  mkdir -p "$KAFKA_DIR/logs"
  if ! mvn -B -q -Dstyle.color=never -f "$KAFKA_POM" dependency:copy-dependencies \
    -DoutputDirectory="$tmp" >"$KAFKA_DIR/logs/mvn.log" 2>&1; then
    sf_tail_log "$KAFKA_DIR/logs/mvn.log"
    sf_die "mvn could not fetch the Kafka jars"
  fi
  printf '%s\n' "$want" >"$tmp/.pom.sha256"
  rm -rf "$KAFKA_LIBS"
  mv "$tmp" "$KAFKA_LIBS"
}

ensure_clickhouse() {
  command -v clickhouse-server >/dev/null && command -v curl >/dev/null && return 0
  local pkgs=(clickhouse-server clickhouse-client)
  command -v curl >/dev/null || pkgs+=(curl)
  apt_install "${pkgs[@]}"
  command -v clickhouse-server >/dev/null || sf_die "clickhouse-server still not on PATH after apt-get install"
}

# ---------------------------------------------------------------- kafka

kafka_running_pid() {
  local pid
  pid=$(sf_read_pid "$KAFKA_PID")
  if [[ -n "$pid" ]] && sf_pid_matches "$pid" "$KAFKA_CONF"; then
    printf '%s' "$pid"
  fi
}

# Runs one Kafka CLI main class (small heap, fast JIT, WARN logs on stderr).
# KAFKA_TOOL_TIMEOUT seconds bound it (0 = no bound). The first call records an
# AppCDS archive of the loaded classes (libs/tools.jsa, dropped with the jars);
# later calls start about a second faster with it. JVM log lines go to stderr
# only, so a tool's stdout stays clean for callers that parse it.
kafka_tool() {
  [[ -f "$KAFKA_LIBS/.pom.sha256" ]] || sf_die "Kafka jars missing: run scripts/stack.sh up first"
  [[ -f "$KAFKA_DIR/config/tools-log4j2.properties" ]] || kafka_render_config
  local jsa=$KAFKA_LIBS/tools.jsa tmp="" cds rc=0
  if [[ -f "$jsa" ]]; then
    cds=(-XX:SharedArchiveFile="$jsa")
  else
    tmp=$jsa.$$.tmp
    cds=(-XX:ArchiveClassesAtExit="$tmp")
  fi
  timeout "${KAFKA_TOOL_TIMEOUT:-0}" java -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
    -Xshare:auto "${cds[@]}" -Xlog:disable -Xlog:all=error:stderr \
    -Dlog4j2.configurationFile="$KAFKA_DIR/config/tools-log4j2.properties" \
    -cp "$KAFKA_LIBS/*" "$@" || rc=$?
  if [[ -n "$tmp" ]]; then
    if ((rc == 0)) && [[ -s "$tmp" ]]; then mv -f "$tmp" "$jsa"; else rm -f "$tmp"; fi
  fi
  return "$rc"
}

kafka_render_config() {
  mkdir -p "$KAFKA_DIR/config" "$KAFKA_DIR/data" "$KAFKA_DIR/logs"
  sed -e "s#@KAFKA_PORT@#$KAFKA_PORT#g" \
    -e "s#@KAFKA_CONTROLLER_PORT@#$KAFKA_CONTROLLER_PORT#g" \
    -e "s#@KAFKA_DATA_DIR@#$KAFKA_DIR/data#g" \
    -e "s#@KAFKA_PARTITIONS@#$KAFKA_PARTITIONS#g" \
    "$KAFKA_TEMPLATE" >"$KAFKA_CONF"
  # Broker log: rolling file, INFO. Tools: WARN and above to stderr.
  cat >"$KAFKA_DIR/config/log4j2.properties" <<EOF
status = warn
appender.file.type = RollingFile
appender.file.name = FILE
appender.file.fileName = $KAFKA_LOG
appender.file.filePattern = $KAFKA_LOG.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 50MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 2
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
EOF
  cat >"$KAFKA_DIR/config/tools-log4j2.properties" <<'EOF'
status = warn
appender.err.type = Console
appender.err.name = STDERR
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.err.ref = STDERR
EOF
}

kafka_ready() {
  sf_port_open "$KAFKA_PORT" &&
    KAFKA_TOOL_TIMEOUT=60 kafka_tool org.apache.kafka.tools.TopicCommand \
      --bootstrap-server "$KAFKA_BOOTSTRAP" --list >/dev/null 2>&1
}

kafka_start() {
  local pid t0 deadline
  pid=$(kafka_running_pid)
  if [[ -n "$pid" ]]; then
    sf_log "kafka: already running (pid $pid, port $KAFKA_PORT)"
    return 0
  fi
  rm -f "$KAFKA_PID"
  ensure_kafka_libs
  record_ports
  kafka_render_config
  if sf_port_open "$KAFKA_PORT" || sf_port_open "$KAFKA_CONTROLLER_PORT"; then
    sf_die "kafka: port $KAFKA_PORT or $KAFKA_CONTROLLER_PORT is already in use by a process this script did not start$(port_hint)"
  fi
  if [[ ! -f "$KAFKA_DIR/data/meta.properties" ]]; then
    sf_log "kafka: formatting KRaft storage (cluster id $KAFKA_CLUSTER_ID)"
    kafka_tool kafka.tools.StorageTool format --cluster-id "$KAFKA_CLUSTER_ID" \
      --config "$KAFKA_CONF" --ignore-formatted >"$KAFKA_DIR/logs/format.log" 2>&1 ||
      {
        sf_tail_log "$KAFKA_DIR/logs/format.log"
        sf_die "kafka: storage format failed"
      }
  fi
  sf_log "kafka: starting broker+controller on $KAFKA_BOOTSTRAP (controller :$KAFKA_CONTROLLER_PORT)"
  t0=$(sf_now_ms)
  # setsid: own session, so the caller's Ctrl-C / process-group kill does not
  # reach it; stdin/stdout detached so callers capturing our output don't hang.
  # shellcheck disable=SC2086 # KAFKA_HEAP_OPTS is a list of JVM flags
  setsid java $KAFKA_HEAP_OPTS -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$KAFKA_DIR/config/log4j2.properties" \
    -cp "$KAFKA_LIBS/*" kafka.Kafka "$KAFKA_CONF" \
    </dev/null >"$KAFKA_OUT" 2>&1 9>&- &
  printf '%s\n' "$!" >"$KAFKA_PID"
  pid=$!
  sf_log "kafka: waiting for metadata (up to ${STACK_TIMEOUT}s)"
  deadline=$((t0 + STACK_TIMEOUT * 1000))
  until kafka_ready; do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$KAFKA_PID"
      sf_tail_log "$KAFKA_OUT" "$KAFKA_LOG"
      sf_die "kafka: process exited during startup"
    fi
    if (($(sf_now_ms) >= deadline)); then
      sf_tail_log "$KAFKA_OUT" "$KAFKA_LOG"
      sf_die "kafka: not ready after ${STACK_TIMEOUT}s (still running as pid $pid; scripts/stack.sh down stops it)"
    fi
    sleep 0.5
  done
  sf_log "kafka: ready (pid $pid) in $((($(sf_now_ms) - t0) / 1000))s"
}

kafka_stop() {
  local sig=${1:-TERM} pid
  pid=$(kafka_running_pid)
  if [[ -z "$pid" ]]; then
    rm -f "$KAFKA_PID"
    sf_log "kafka: not running"
    return 0
  fi
  sf_log "kafka: stopping pid $pid (SIG$sig)"
  sf_stop_pid "$pid" "$STACK_STOP_TIMEOUT" "$sig" || sf_die "kafka: pid $pid would not exit"
  rm -f "$KAFKA_PID"
  sf_log "kafka: stopped"
}

# topic_create NAME PARTITIONS: idempotent (--if-not-exists); retried a few
# times because a just-started broker may not have registered yet.
topic_create() {
  local name=$1 parts=$2 try out
  [[ "$name" =~ ^[A-Za-z0-9._-]{1,249}$ ]] || sf_die "invalid topic name '$name'"
  if ! is_uint "$parts" || ((parts == 0)); then
    sf_die "partitions must be a positive number, got '$parts'"
  fi
  [[ -n "$(kafka_running_pid)" ]] || sf_die "kafka is not running (scripts/stack.sh up)"
  sf_log "kafka: ensuring topic $name ($parts partitions)"
  for try in 1 2 3 4 5; do
    if out=$(KAFKA_TOOL_TIMEOUT=120 kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$KAFKA_BOOTSTRAP" \
      --create --if-not-exists --topic "$name" --partitions "$parts" --replication-factor 1 2>&1); then
      return 0
    fi
    sf_log "kafka: topic create attempt $try failed, retrying"
    sleep 1
  done
  printf '%s\n' "$out" >&2
  sf_die "kafka: could not create topic $name"
}

# ---------------------------------------------------------------- clickhouse

ch_running_pid() {
  local pid
  pid=$(sf_read_pid "$CH_PID")
  if [[ -n "$pid" ]] && sf_pid_matches "$pid" "--path=$CH_DIR/data/"; then
    printf '%s' "$pid"
  fi
}

# curl against our server; sends the credentials of the running server, if it
# has a password, from a header file (never on the command line).
ch_curl() {
  local auth=()
  [[ -f "$CH_AUTH" ]] && auth=(-H "@$CH_AUTH")
  curl "${auth[@]}" "$@"
}

ch_query() { ch_curl -sS --fail-with-body --max-time 30 "$CLICKHOUSE_URL" --data-binary "$1"; }

ch_alive() {
  [[ "$(ch_curl -s --max-time 2 "$CLICKHOUSE_URL" --data-binary 'SELECT 1' 2>/dev/null)" == "1" ]]
}

# Prints the extra server flags for the password; writes users.xml + header.
ch_auth_setup() {
  local users=$CH_DIR/users.xml base_users hash
  rm -f "$CH_AUTH"
  [[ -n "$CLICKHOUSE_PASSWORD" ]] || return 0
  base_users=$(dirname "$CLICKHOUSE_BASE_CONFIG")/users.xml
  hash=$(printf '%s' "$CLICKHOUSE_PASSWORD" | sha256sum | cut -d' ' -f1)
  # the first empty <password/> in the packaged users.xml is user `default`'s
  (
    umask 077
    sed -e "0,/<password><\/password>/s//<password_sha256_hex>$hash<\/password_sha256_hex>/" \
      "$base_users" >"$users"
    printf 'Authorization: Basic %s\n' \
      "$(printf 'default:%s' "$CLICKHOUSE_PASSWORD" | base64 -w0)" >"$CH_AUTH"
  )
  grep -q "$hash" "$users" || sf_die "clickhouse: could not set the password in $users"
  printf '%s\n' "--users_config=$users"
}

# Applies sql/create_ck_table.sql one statement at a time (HTTP takes one per
# request). Comments are `--` to end of line; statements end with `;`.
ch_apply_schema() {
  local sql st
  [[ -f "$SCHEMA_SQL" ]] || return 0
  sf_log "clickhouse: applying sql/create_ck_table.sql (database streamforge)"
  sql=$(sed -e 's/--.*$//' "$SCHEMA_SQL")
  while [[ -n "${sql//[[:space:]]/}" ]]; do
    st=${sql%%;*}
    if [[ "$st" == "$sql" ]]; then sql=""; else sql=${sql#*;}; fi
    [[ -n "${st//[[:space:]]/}" ]] || continue
    ch_query "$st" >/dev/null || sf_die "clickhouse: schema statement failed: $st"
  done
}

ch_start() {
  local pid t0 deadline
  pid=$(ch_running_pid)
  if [[ -n "$pid" ]]; then
    sf_log "clickhouse: already running (pid $pid, http $CLICKHOUSE_HTTP_PORT, tcp $CLICKHOUSE_TCP_PORT)"
    return 0
  fi
  rm -f "$CH_PID"
  ensure_clickhouse
  local p
  for p in "$CLICKHOUSE_HTTP_PORT" "$CLICKHOUSE_TCP_PORT" "$CLICKHOUSE_INTERSERVER_PORT"; do
    sf_port_open "$p" && sf_die "clickhouse: port $p is already in use by a process this script did not start$(port_hint)"
  done
  record_ports
  mkdir -p "$CH_DIR"/{data,tmp,user_files,format_schemas,logs}
  local auth_flags=()
  mapfile -t auth_flags < <(ch_auth_setup)
  [[ -z "$CLICKHOUSE_PASSWORD" || -f "$CH_AUTH" ]] || sf_die "clickhouse: password setup failed"
  sf_log "clickhouse: starting on 127.0.0.1 (http $CLICKHOUSE_HTTP_PORT, tcp $CLICKHOUSE_TCP_PORT)"
  t0=$(sf_now_ms)
  # The packaged config with everything machine-wide overridden on the
  # command line (key=value after `--`); nothing under /etc or /var is written.
  setsid clickhouse-server --config-file="$CLICKHOUSE_BASE_CONFIG" -- \
    --path="$CH_DIR/data/" --tmp_path="$CH_DIR/tmp/" \
    --user_files_path="$CH_DIR/user_files/" --format_schema_path="$CH_DIR/format_schemas/" \
    --logger.log="$CH_LOG" --logger.errorlog="$CH_ERR" --logger.level=information \
    --logger.size=100M --logger.count=2 \
    --listen_host=127.0.0.1 --http_port="$CLICKHOUSE_HTTP_PORT" \
    --tcp_port="$CLICKHOUSE_TCP_PORT" --interserver_http_port="$CLICKHOUSE_INTERSERVER_PORT" \
    "${auth_flags[@]}" </dev/null >"$CH_OUT" 2>&1 9>&- &
  printf '%s\n' "$!" >"$CH_PID"
  pid=$!
  sf_log "clickhouse: waiting for SELECT 1 (up to ${STACK_TIMEOUT}s)"
  deadline=$((t0 + STACK_TIMEOUT * 1000))
  until ch_alive; do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$CH_PID"
      sf_tail_log "$CH_OUT" "$CH_ERR" "$CH_LOG"
      sf_die "clickhouse: process exited during startup"
    fi
    if (($(sf_now_ms) >= deadline)); then
      sf_tail_log "$CH_OUT" "$CH_ERR" "$CH_LOG"
      sf_die "clickhouse: not ready after ${STACK_TIMEOUT}s (still running as pid $pid; scripts/stack.sh down stops it)"
    fi
    sleep 0.2
  done
  sf_log "clickhouse: ready (pid $pid, version $(ch_query 'SELECT version()')) in $((($(sf_now_ms) - t0) / 1000))s"
}

ch_stop() {
  local sig=${1:-TERM} pid
  pid=$(ch_running_pid)
  if [[ -z "$pid" ]]; then
    rm -f "$CH_PID"
    sf_log "clickhouse: not running"
    return 0
  fi
  sf_log "clickhouse: stopping pid $pid (SIG$sig)"
  sf_stop_pid "$pid" "$STACK_STOP_TIMEOUT" "$sig" || sf_die "clickhouse: pid $pid would not exit"
  rm -f "$CH_PID"
  sf_log "clickhouse: stopped"
}

# ---------------------------------------------------------------- commands

stop_signal() {
  case "${1:-}" in
    "") echo TERM ;;
    --kill) echo KILL ;;
    *) usage ;;
  esac
}

cmd_status() {
  local pid rc=0
  pid=$(kafka_running_pid)
  if [[ -n "$pid" ]]; then
    if sf_port_open "$KAFKA_PORT"; then
      echo "kafka:      up    pid $pid  port $KAFKA_PORT (controller $KAFKA_CONTROLLER_PORT)"
    else
      echo "kafka:      starting/unhealthy  pid $pid  port $KAFKA_PORT not accepting"
      rc=1
    fi
  else
    echo "kafka:      down  port $KAFKA_PORT"
    rc=1
  fi
  pid=$(ch_running_pid)
  if [[ -n "$pid" ]]; then
    if ch_alive; then
      echo "clickhouse: up    pid $pid  http $CLICKHOUSE_HTTP_PORT  tcp $CLICKHOUSE_TCP_PORT$([[ -f "$CH_AUTH" ]] && echo '  (password set)')"
    else
      echo "clickhouse: starting/unhealthy  pid $pid  http $CLICKHOUSE_HTTP_PORT not answering"
      rc=1
    fi
  else
    echo "clickhouse: down  http $CLICKHOUSE_HTTP_PORT  tcp $CLICKHOUSE_TCP_PORT"
    rc=1
  fi
  echo "stack dir:  $STACK_DIR"
  return "$rc"
}

main() {
  local cmd=${1:-}
  [[ $# -gt 0 ]] && shift
  # Nothing was ever started here: stopping is a no-op that creates nothing.
  if [[ ! -d "$STACK_DIR" ]]; then
    case "$cmd" in
      down | reset | kafka-stop | clickhouse-stop)
        sf_log "$cmd: nothing to do, $STACK_DIR does not exist"
        return 0
        ;;
    esac
  fi
  if [[ "$cmd" == reset ]]; then
    case "$(realpath "$STACK_DIR")" in
      / | "$(realpath "$HOME")" | "$(realpath "$REPO")") sf_die "refusing to remove STACK_DIR=$STACK_DIR" ;;
    esac
  fi
  # State-changing commands hold the lock from before the ports are chosen
  # until the services run on them.
  case "$cmd" in
    up | down | reset | kafka-start | kafka-stop | clickhouse-start | clickhouse-stop) take_lock ;;
  esac
  resolve_ports
  case "$cmd" in
    up | kafka-start | clickhouse-start) check_running_ports ;;
  esac
  case "$cmd" in
    up)
      [[ $# -eq 0 ]] || usage
      local t0
      local mvn_pid=""
      t0=$(sf_now_ms)
      # First run: fetch the Kafka jars while ClickHouse installs and starts.
      if ! kafka_libs_current; then
        ensure_kafka_libs &
        mvn_pid=$!
      fi
      ch_start
      ch_apply_schema
      if [[ -n "$mvn_pid" ]]; then
        wait "$mvn_pid" || sf_die "kafka: fetching the jars failed (see above)"
      fi
      kafka_start
      topic_create "$KAFKA_TOPIC" "$KAFKA_PARTITIONS"
      local ms=$(($(sf_now_ms) - t0))
      sf_log "up: done in $((ms / 1000)).$((ms % 1000 / 100))s (kafka $KAFKA_BOOTSTRAP, clickhouse $CLICKHOUSE_URL, tcp $CLICKHOUSE_TCP_PORT, stack dir $STACK_DIR)"
      ;;
    down)
      [[ $# -eq 0 ]] || usage
      kafka_stop
      ch_stop
      ;;
    reset)
      [[ $# -eq 0 ]] || usage
      kafka_stop
      ch_stop
      sf_log "reset: removing $STACK_DIR"
      rm -rf "$STACK_DIR"
      ;;
    status)
      [[ $# -eq 0 ]] || usage
      cmd_status
      ;;
    kafka-start)
      [[ $# -eq 0 ]] || usage
      kafka_start
      ;;
    kafka-stop)
      [[ $# -le 1 ]] || usage
      kafka_stop "$(stop_signal "${1:-}")"
      ;;
    clickhouse-start)
      [[ $# -eq 0 ]] || usage
      ch_start
      ;;
    clickhouse-stop)
      [[ $# -le 1 ]] || usage
      ch_stop "$(stop_signal "${1:-}")"
      ;;
    topic)
      [[ $# -eq 2 ]] || usage
      topic_create "$1" "$2"
      ;;
    kafka-tool)
      [[ $# -ge 1 ]] || usage
      kafka_tool "$@"
      ;;
    env)
      [[ $# -eq 0 ]] || usage
      cmd_env
      ;;
    *) usage ;;
  esac
}

main "$@"
