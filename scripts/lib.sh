# shellcheck shell=bash
# Small helpers shared by scripts/*.sh. Source it; it defines functions only.

# One short progress line on stderr, prefixed so it stands out in CI logs.
sf_log() { printf '[stack] %s\n' "$*" >&2; }

sf_die() {
  printf '[stack] ERROR: %s\n' "$*" >&2
  exit 1
}

# Milliseconds since the epoch (GNU date).
sf_now_ms() { date +%s%3N; }

# sf_port_open PORT [HOST]: true when something accepts TCP connections there.
sf_port_open() {
  local port=$1 host=${2:-127.0.0.1}
  # bash's /dev/tcp; `timeout` bounds a connect that would hang.
  # shellcheck disable=SC2016 # $1/$2 expand in the child bash
  timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$host" "$port" 2>/dev/null
}

# sf_pid_matches PID NEEDLE: PID is alive and its command line contains NEEDLE
# (guards against a recycled pid after a reboot or a crash).
sf_pid_matches() {
  local pid=$1 needle=$2 cmdline
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
  [[ "$cmdline" == *"$needle"* ]]
}

# sf_read_pid FILE: prints the pid stored in FILE, or nothing.
sf_read_pid() {
  local f=$1 pid=""
  if [[ -f "$f" ]]; then read -r pid <"$f" || true; fi
  printf '%s' "$pid"
}

# sf_stop_pid PID TIMEOUT_S [SIGNAL]: send SIGNAL (TERM), wait up to TIMEOUT_S,
# then KILL. Returns when the process is gone.
sf_stop_pid() {
  local pid=$1 timeout_s=$2 sig=${3:-TERM} deadline
  kill -0 "$pid" 2>/dev/null || return 0
  kill -s "$sig" "$pid" 2>/dev/null || true
  deadline=$(($(sf_now_ms) + timeout_s * 1000))
  while kill -0 "$pid" 2>/dev/null; do
    if (($(sf_now_ms) >= deadline)); then
      sf_log "pid $pid still alive after ${timeout_s}s, sending KILL"
      kill -s KILL "$pid" 2>/dev/null || true
      deadline=$(($(sf_now_ms) + 10000))
      while kill -0 "$pid" 2>/dev/null && (($(sf_now_ms) < deadline)); do sleep 0.1; done
      break
    fi
    sleep 0.1
  done
  ! kill -0 "$pid" 2>/dev/null
}

# sf_tail_log FILE...: last lines of each existing file, for failure reports.
sf_tail_log() {
  local f
  for f in "$@"; do
    [[ -s "$f" ]] || continue
    printf '[stack] ---- last lines of %s ----\n' "$f" >&2
    tail -n 40 "$f" >&2
  done
}
