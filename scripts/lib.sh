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

# sf_port_busy PORT: true when a local TCP socket (IPv4 or IPv6, listening or
# not) uses PORT. Stricter than sf_port_open: a port some process has bound
# but does not accept on yet counts as taken too. Sockets in TIME_WAIT (state
# 06, what connections to a stopped server leave behind) do not count: both
# servers bind with SO_REUSEADDR. Reads /proc (Linux).
sf_port_busy() {
  local hex
  hex=$(printf '%04X' "$1")
  awk -v p="$hex" 'FNR > 1 && $4 != "06" { n = split($2, a, ":"); if (a[n] == p) { found = 1; exit } }
    END { exit !found }' /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

# sf_free_ports COUNT [SKIP...]: prints COUNT distinct ports, one a line, that
# no local socket uses and that are not among SKIP. They come from below the
# kernel's ephemeral range (/proc/sys/net/ipv4/ip_local_port_range), from
# 20000 up, so that no client socket and no listener bound to port 0 (a test's
# proxy or metrics listener) can take one of them while its server is down.
# The scan starts at a random place so that two suites starting together are
# unlikely to race for the same ports; a port taken between this choice and
# the server's start is reported by the server's start check.
sf_free_ports() {
  local count=$1 low=20000 high eph_low span start i port found=0
  shift
  read -r eph_low _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || eph_low=32768
  high=$((eph_low - 1))
  ((high > low + count)) || {
    printf '[stack] ERROR: no port range below the ephemeral range (starts at %s) to choose from\n' "$eph_low" >&2
    return 1
  }
  span=$((high - low + 1))
  start=$((low + (RANDOM * 32768 + RANDOM) % span))
  for ((i = 0; i < span && found < count; i++)); do
    port=$((low + (start - low + i) % span))
    [[ " $* " == *" $port "* ]] && continue
    sf_port_busy "$port" && continue
    printf '%s\n' "$port"
    found=$((found + 1))
  done
  ((found == count)) || {
    printf '[stack] ERROR: found only %s free ports between %s and %s, %s wanted\n' "$found" "$low" "$high" "$count" >&2
    return 1
  }
}
