"""Runs ClickHouse requests on the current engine, in-process (chdb-core).

tests/chdb_compat.rs starts this with the venv's python that
scripts/chdb_env.sh prepares, and drives it as the ClickHouse sink's
transport: one JSON request a line on stdin, one JSON answer a line on
stdout. This file only executes; every statement, body and setting comes
from the sink's own Rust code, and every check is made in Rust.

    request: {"sql": "<statement, then its data>", "settings": [["name", "value"], ...]}
    answer:  {"ok": true, "out": "<TabSeparated text>"} or {"ok": false, "error": "Code: NNN. DB::Exception: ..."}

Settings apply to that request only, as URL parameters do over HTTP: each is
SET before the statement and reset to its default after it. The first line
written is {"ready": true, "version": "<engine version>"}.

usage: python exec.py DATA_DIR
"""

import json
import re
import sys

from chdb import session

NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


def literal(value):
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def run(sess, request):
    names = []
    try:
        for name, value in request.get("settings", []):
            if not NAME.match(name):
                raise ValueError(f"not a setting name: {name!r}")
            sess.query(f"SET {name} = {literal(value)}")
            names.append(name)
        result = sess.query(request["sql"], "TabSeparated")
        data = result.bytes() if result is not None else b""
        return {"ok": True, "out": (data or b"").decode("utf-8")}
    except Exception as e:  # chdb raises its own error type with ClickHouse's text
        return {"ok": False, "error": str(e)}
    finally:
        for name in names:
            sess.query(f"SET {name} = DEFAULT")


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sess = session.Session(sys.argv[1])
    version = sess.query("SELECT version()", "TabSeparated").bytes().decode().strip()
    print(json.dumps({"ready": True, "version": version}), flush=True)
    for line in sys.stdin:
        if line.strip():
            print(json.dumps(run(sess, json.loads(line))), flush=True)


if __name__ == "__main__":
    main()
