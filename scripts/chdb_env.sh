#!/usr/bin/env bash
# Prepares the Python environment that runs current ClickHouse in-process
# (PyPI `chdb-core`, the ClickHouse 26.9 engine) for the compatibility test
# tests/chdb_compat.rs, and prints the path of its python on stdout.
#
#   scripts/chdb_env.sh          # create once (~40 s, ~900 MB), then reuse
#   scripts/chdb_env.sh --check  # exit 0 if ready, 1 if not; creates nothing
#
# The venv lives in $STREAMFORGE_CHDB_VENV, by default
# ~/.cache/streamforge/chdb-core-<version> (outside the repository, shared by
# every checkout on the machine, like cargo's own caches). A venv is used
# only once a marker written after a successful install and import check is
# there; an interrupted install is removed and made again. Concurrent callers
# (parallel tests) wait on a lock instead of installing twice.
#
# Exit status: 0 ready (path on stdout), 1 not ready (with --check), 2 the
# venv cannot be made here: the reason is on stderr. Never a silent skip.
set -euo pipefail

CHDB_VERSION=26.9.0
venv=${STREAMFORGE_CHDB_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/streamforge/chdb-core-$CHDB_VERSION}
marker=$venv/.streamforge-ready

fail() {
  printf '[chdb] ERROR: %s\n' "$*" >&2
  exit 2
}

ready() { [[ -f "$marker" && -x "$venv/bin/python" ]]; }

if [[ "${1:-}" == --check ]]; then
  ready && { printf '%s\n' "$venv/bin/python"; exit 0; }
  exit 1
fi

mkdir -p "$(dirname "$venv")" || fail "cannot create $(dirname "$venv")"
exec 9>"$venv.lock" || fail "cannot open the lock file $venv.lock"
flock 9 || fail "cannot lock $venv.lock"

if ! ready; then
  python=${PYTHON:-python3}
  command -v "$python" >/dev/null ||
    fail "no $python on PATH: install Python 3.9+ with venv support (e.g. apt-get install python3-venv), or set PYTHON"
  rm -rf "$venv"
  printf '[chdb] creating %s with chdb-core==%s (about 40 s and 900 MB, once)\n' "$venv" "$CHDB_VERSION" >&2
  "$python" -m venv "$venv" >&2 ||
    fail "\`$python -m venv $venv\` failed: install the venv module (apt-get install python3-venv)"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "chdb-core==$CHDB_VERSION" >&2 ||
    fail "pip could not install chdb-core==$CHDB_VERSION into $venv (is PyPI reachable? set PIP_INDEX_URL for a mirror)"
  got=$("$venv/bin/python" -c 'import chdb; print(chdb.query("SELECT version()", "TSV").bytes().decode().strip())') ||
    fail "chdb-core installed in $venv but does not run a query"
  printf '[chdb] ready: ClickHouse engine %s\n' "$got" >&2
  touch "$marker"
fi
printf '%s\n' "$venv/bin/python"
