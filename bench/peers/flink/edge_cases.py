#!/usr/bin/env python3
"""Writes the `edge` data set of compare.sh: one partition file of payloads
that probe each input rule (SPEC section 1, docs/semantics.md) at its edges.

Each case is one line whose event time falls two minutes after the previous
one, so every accepted line has windows of its own and the two engines'
results (counts, sums, distinct users per window) say, line by line, which
payloads each engine accepted. Times only go up, so no line is late; the
jumps are larger than StreamForge's wrong-clock bound (65 s), which Flink has
no equivalent of, so compare.sh runs StreamForge with that guard off
(`window.max_time_jump=0`) on this set.

The expected verdicts are not written here: StreamForge's results are the
reference and Flink's must equal them. The rules Flink cannot express
(text after the JSON object, leap seconds, wrong clocks) are left out; see
README.md.

usage: edge_cases.py OUT_DIR
"""

import json
import os
import sys
from datetime import datetime, timedelta, timezone

BASE = datetime(2025, 11, 25, 10, 0, 0, 123456, tzinfo=timezone.utc)


def rfc3339(t, offset_min=0, digits=3, sep="T", zulu="Z"):
    """`t` (aware, UTC) as RFC 3339 text in the given offset and precision."""
    local = t.astimezone(timezone(timedelta(minutes=offset_min)))
    text = local.strftime(f"%Y-%m-%d{sep}%H:%M:%S")
    if digits:
        frac = f"{local.microsecond:06d}000"[:digits]
        text += "." + frac
    if offset_min == 0 and zulu:
        return text + zulu
    sign = "-" if offset_min < 0 else "+"
    return text + f"{sign}{abs(offset_min) // 60:02d}:{abs(offset_min) % 60:02d}"


def cases():
    """(label, fields) pairs: the members besides event_id and event_time."""
    ok = {"order_id": "ORD-1", "user_id": "u1", "amount": "10.00", "city": "Paris", "category": "books"}
    yield "valid", dict(ok)
    # amount
    for amount in ["12.50", 12.5, "007.5", "1.230", 1.5e1, "1.5E+1", "-0", "-0.00", 0,
                   "9999999999999999.99", "0.1", 3]:
        yield f"amount ok {amount!r}", dict(ok, amount=amount)
    for amount in ["12.345", 1e-3, "-1", -0.5, True, "abc", "+5", " 5", "", "10000000000000000.00",
                   "1e41", "NaN", [1], {"v": 1}, None]:
        yield f"amount bad {amount!r}", dict(ok, amount=amount)
    yield "amount missing", {k: v for k, v in ok.items() if k != "amount"}
    # event_id
    yield "event_id 128 chars", dict(ok, event_id="e" * 128)
    yield "event_id 129 chars", dict(ok, event_id="e" * 129)
    yield "event_id empty", dict(ok, event_id="")
    yield "event_id number", dict(ok, event_id=12345)
    yield "event_id null", dict(ok, event_id=None)
    yield "event_id non-ASCII", dict(ok, event_id="évé-東京")
    # order_id
    yield "order_id missing", {k: v for k, v in ok.items() if k != "order_id"}
    yield "order_id number", dict(ok, order_id=7000000000001)
    yield "order_id null", dict(ok, order_id=None)
    # user_id
    yield "user_id integer", dict(ok, user_id=123)
    yield "user_id big integer", dict(ok, user_id=123456789012345678901234567890)
    yield "user_id -0", dict(ok, user_id="-0")
    yield "user_id float", dict(ok, user_id=12.5)
    yield "user_id bool", dict(ok, user_id=True)
    yield "user_id object", dict(ok, user_id={"id": 1})
    # city, category
    yield "city null", dict(ok, city=None)
    yield "city absent", {k: v for k, v in ok.items() if k != "city"}
    yield "city number", dict(ok, city=5)
    yield "category object", dict(ok, category={"a": 1})
    yield "category empty", dict(ok, category="")
    # extra fields, nesting, key order
    yield "extras", dict(ok, meta={"event_id": 1, "amount": "x"}, items=[{"qty": 1}], coupon=None)


def time_cases(t):
    """(label, event_time value) pairs: the instant `t` written in each accepted form."""
    yield "time Z ms", rfc3339(t)
    yield "time z lower", rfc3339(t, zulu="z")
    yield "time t lower", rfc3339(t, sep="t")
    yield "time space", rfc3339(t, sep=" ")
    yield "time +05:30", rfc3339(t, 330, 6)
    yield "time -08:00 9 digits", rfc3339(t, -480, 9)
    yield "time +00:00", rfc3339(t, 0, 6, zulu=None)
    yield "time no fraction", rfc3339(t, 0, 0)
    yield "time 1 digit", rfc3339(t, 60, 1)
    yield "time 12 digits", rfc3339(t, 0, 9)[:-1] + "999Z"
    yield "time epoch ms", int(t.timestamp() * 1000)
    yield "time -00:00", rfc3339(t, 0, 3, zulu="-00:00")


def bad_times(t):
    """Event times that break a rule, near the instant `t` or after it: a
    lenient reading of any of them gives a time at or after `t`, so the line
    shows in the results instead of being dropped as late."""
    day, clock = t.strftime("%Y-%m-%d"), t.strftime("%H:%M:%S")
    ms = int(t.timestamp() * 1000)
    return [
        f"{t.year}-13-01T{clock}Z", f"{t.year + 1}-02-29T{clock}Z", f"{t.strftime('%Y-%m')}-31T{clock}Z",
        f"{day}T24:00:00Z", f"{day}T{t.hour:02d}:60:00Z", f"{day}T{clock}-24:00", f"{day}T{clock}-05:60",
        f"{day}T{clock}-0530", f"{day}T{t.strftime('%H:%M')}Z", f"{day}T{clock}", f"{day.replace('-', '')}T{clock.replace(':', '')}Z",
        f"{day}T{clock}.Z", f"{day} {clock} Z", f" {day}T{clock}Z", f"{day}T{clock}Z ", f"{day}T{clock},5Z",
        f"{day}T{clock}+05", str(ms), ms + 0.5, float(ms), True, {"ms": ms}, [ms],
    ]


# One line each in a file of its own (another partition), in this order:
# times at the low end of the range, where a lenient engine would make
# windows before 1970 (or starting before it).
# A leap day last.
EARLY_TIMES = ["1969-12-31T23:59:59Z", -5, "1970-01-01T00:00:10Z", 29999, "1970-01-01T00:00:30Z", 30001,
               "2024-02-29T12:00:00Z"]
# Times beyond the range, after the stream: a lenient engine would let them
# move the watermark past everything after them.
LATE_TIMES = ["2100-01-01T00:00:00Z", "2099-12-31T23:00:00-08:00", 4102444800000, 5e20]


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    lines = []
    t = BASE
    n = 0

    def step():
        nonlocal t, n
        t += timedelta(minutes=2)
        n += 1
        return t, f"edge-{n}"

    for label, fields in cases():
        at, eid = step()
        event = {"event_id": eid, "event_time": rfc3339(at)}
        event.update(fields)
        lines.append(json.dumps(event, ensure_ascii=(n % 2 == 0)))
    for label, _ in list(time_cases(t)):
        at, eid = step()
        value = dict(time_cases(at))[label]
        lines.append(json.dumps({"event_id": eid, "order_id": "o", "user_id": 7, "amount": 1.25,
                                 "event_time": value}))
    for i in range(len(bad_times(t))):
        at, eid = step()
        value = bad_times(at)[i]
        lines.append(json.dumps({"event_id": eid, "order_id": "o", "user_id": 7, "amount": 1.25,
                                 "event_time": value}))
    # Users: 123 and "123" are one user; two events in one window.
    at, eid = step()
    for i, user in enumerate([123, "123", "124"]):
        lines.append(json.dumps({"event_id": f"{eid}-{i}", "order_id": "o", "user_id": user,
                                 "amount": "1.00", "event_time": rfc3339(at + timedelta(seconds=i))}))
    # Duplicates: a re-sent copy, a copy in another layout, and a broken line with a valid id.
    at, eid = step()
    first = {"event_id": eid, "order_id": "o", "user_id": 9, "amount": "3.00", "event_time": rfc3339(at)}
    lines.append(json.dumps(first))
    lines.append(json.dumps(first))
    lines.append(json.dumps(dict(first, amount=3, event_time=int(at.timestamp() * 1000)), indent=None,
                            separators=(" , ", " : ")))
    at, eid = step()
    lines.append(json.dumps({"event_id": eid, "order_id": "o", "user_id": 9, "amount": "-1",
                             "event_time": rfc3339(at)}))
    lines.append(json.dumps({"event_id": eid, "order_id": "o", "user_id": 9, "amount": "4.00",
                             "event_time": rfc3339(at + timedelta(seconds=1))}))
    # Whole-line defects.
    for raw in ['{"event_id": "x", "order_id": "o"', '["a", 1]', '"text"', "42", "{}", "null",
                '{"event_id": "dupkey", "event_id": 5, "order_id": "o", "user_id": 1, "amount": 1, '
                '"event_time": 1764100000000}', '{"event_id": "dupkey2", "event_id": "ok-last", '
                '"order_id": "o", "user_id": 1, "amount": 1, "amount": "x", "event_time": 1764100000000}']:
        lines.append(raw)
    for value in LATE_TIMES:
        at, eid = step()
        lines.append(json.dumps({"event_id": eid, "order_id": "o", "user_id": 7, "amount": 1.25,
                                 "event_time": value}))
    # A last valid line, after all the others.
    at, eid = step()
    lines.append(json.dumps({"event_id": eid, "order_id": "o", "user_id": 1, "amount": "0.01",
                             "event_time": rfc3339(at)}))
    early = [json.dumps({"event_id": f"early-{i}", "order_id": "o", "user_id": 7, "amount": 1.25,
                         "event_time": value}) for i, value in enumerate(EARLY_TIMES)]
    for name, content in [("part-0.jsonl", lines), ("part-1.jsonl", early)]:
        with open(os.path.join(out, name), "w", encoding="utf-8") as f:
            for line in content:
                f.write(line + "\n")
    print(f"{len(lines) + len(early)} lines", file=sys.stderr)


if __name__ == "__main__":
    main()
