//! The parser's examples and properties.

use super::scan::{
    backslash_control16, backslash_control16_scalar, classify16, classify16_scalar, special16,
    special16_scalar,
};
use super::*;
use crate::source::generator::{GeneratorConfig, PayloadStyle};
use proptest::prelude::*;
use serde::de::IgnoredAny;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// Counts heap allocations per thread, so that the no-allocation test is
/// not disturbed by tests running in parallel.
struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count_allocation() {
    // `try_with`: the thread-local may already be gone while a thread
    // exits, and an allocator must not panic.
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_allocation();
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count_allocation();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_allocation();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

const BASE: [(&str, &str); 7] = [
    ("event_id", r#""e-1""#),
    ("order_id", r#""o-1""#),
    ("user_id", r#""u-1""#),
    ("amount", "12.5"),
    ("event_time", r#""2025-11-25T10:00:00Z""#),
    ("city", r#""Paris""#),
    ("category", r#""books""#),
];

/// The base event's JSON with `changes` applied in order: `Some(raw)`
/// replaces the field's value (or appends the field if it is not in the
/// base), `None` removes it.
fn with(changes: &[(&str, Option<&str>)]) -> String {
    let mut fields: Vec<(String, String)> = BASE
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for (key, value) in changes {
        let at = fields.iter().position(|(k, _)| k == key);
        match (at, value) {
            (Some(i), Some(v)) => fields[i].1 = v.to_string(),
            (Some(i), None) => {
                fields.remove(i);
            }
            (None, Some(v)) => fields.push((key.to_string(), v.to_string())),
            (None, None) => {}
        }
    }
    let body: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
    format!("{{{}}}", body.join(","))
}

fn base() -> Event<'static> {
    Event {
        event_id: "e-1".into(),
        order_id: "o-1".into(),
        user_id: "u-1".into(),
        amount_cents: 1250,
        event_time_ms: 1_764_064_800_000,
        city: "Paris".into(),
        category: "books".into(),
    }
}

fn nested(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

/// The base event with one field's raw JSON value replaced.
fn set(field: &str, raw: &str) -> Vec<u8> {
    with(&[(field, Some(raw))]).into_bytes()
}

/// The base event without one field.
fn without(field: &str) -> Vec<u8> {
    with(&[(field, None)]).into_bytes()
}

/// The base event with `raw` (`"key":value` pairs) appended to its fields.
fn append(raw: &str) -> Vec<u8> {
    let base = with(&[]);
    format!("{},{raw}}}", &base[..base.len() - 1]).into_bytes()
}

fn bytes(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

#[test]
fn rejects_with_the_right_reason() {
    use Field::*;
    use Reason::*;
    let base = with(&[]);
    let big_digits = format!("1{}", "0".repeat(4 << 20));
    let huge_id = format!("\"{}\"", "x".repeat(4 << 20));
    let long_id = format!("\"{}\"", "x".repeat(129));
    let long_unicode_id = format!("\"{}\"", "é".repeat(129));
    let deep = nested(200);
    // Inside the top-level object, so depth 128 in all.
    let deep_128 = nested(127);
    let bad_ignored: Vec<u8> = set("note", "\"#\"")
        .into_iter()
        .map(|b| if b == b'#' { 0xff } else { b })
        .collect();
    let utf16: Vec<u8> = "{}".encode_utf16().flat_map(u16::to_le_bytes).collect();
    // One line a case: a table reads better unwrapped.
    #[rustfmt::skip]
    let cases: Vec<(&str, Vec<u8>, Reason)> = vec![
        // Rule 1: JSON.
        ("empty payload", b"".to_vec(), MalformedJson),
        ("whitespace only", b" \r\n\t ".to_vec(), MalformedJson),
        ("truncated", br#"{"event_id":"e-1""#.to_vec(), MalformedJson),
        ("unterminated string", br#"{"event_id":"e-1}"#.to_vec(), MalformedJson),
        ("trailing garbage", format!("{base} x").into_bytes(), MalformedJson),
        ("two objects", format!("{base}{base}").into_bytes(), MalformedJson),
        ("trailing comma", base.replace('}', ",}").into_bytes(), MalformedJson),
        ("NaN", set("amount", "NaN"), MalformedJson),
        ("Infinity", set("amount", "Infinity"), MalformedJson),
        ("-Infinity", set("amount", "-Infinity"), MalformedJson),
        ("NaN at top level", b"NaN".to_vec(), MalformedJson),
        ("single quotes", b"{'event_id':'e-1'}".to_vec(), MalformedJson),
        ("comment", b"{/* c */\"event_id\":\"e\"}".to_vec(), MalformedJson),
        ("unquoted key", b"{event_id:\"e\"}".to_vec(), MalformedJson),
        ("raw newline in string", set("event_id", "\"a\nb\""), MalformedJson),
        ("invalid escape", set("event_id", r#""a\xb""#), MalformedJson),
        ("leading zero", set("amount", "012"), MalformedJson),
        ("leading plus", set("amount", "+1"), MalformedJson),
        ("number ending in a dot", set("amount", "1."), MalformedJson),
        ("hex number", set("amount", "0x10"), MalformedJson),
        ("bad UTF-8, read field", bytes(&[b"{\"event_id\":\"", b"\xff\"}"]), MalformedJson),
        ("bad UTF-8, ignored field", bad_ignored, MalformedJson),
        ("overlong UTF-8", bytes(&[b"{\"x\":\"", b"\xc0\xaf", b"\"}"]), MalformedJson),
        ("bad UTF-8 outside strings", b"{\x80}".to_vec(), MalformedJson),
        ("BOM at start", bytes(&[b"\xef\xbb\xbf", base.as_bytes()]), MalformedJson),
        ("UTF-16", utf16, MalformedJson),
        ("lone surrogate, event_id", set("event_id", r#""\ud800""#), MalformedJson),
        ("lone surrogate, key", append(r#""\udc00":1"#), MalformedJson),
        // Rule 2: nesting.
        ("200 deep, ignored field", set("x", &deep), MalformedJson),
        ("128 deep, ignored field", set("x", &deep_128), MalformedJson),
        ("200 deep, read field", set("city", &deep), MalformedJson),
        ("top-level array 200 deep", nested(200).into_bytes(), MalformedJson),
        ("1000 unclosed brackets", "[".repeat(1000).into_bytes(), MalformedJson),
        // Rule 3: not an object.
        ("array", b"[1,2]".to_vec(), NotAnObject),
        ("empty array", b" [] ".to_vec(), NotAnObject),
        ("string", br#""{\"event_id\":1}""#.to_vec(), NotAnObject),
        ("number", b"42".to_vec(), NotAnObject),
        ("huge number", b"1e400".to_vec(), NotAnObject),
        ("true", b"true".to_vec(), NotAnObject),
        ("null", b"\nnull\n".to_vec(), NotAnObject),
        ("array holding an event", format!("[{base}]").into_bytes(), NotAnObject),
        ("array 127 deep", nested(127).into_bytes(), NotAnObject),
        // Rule 5: missing fields.
        ("empty object", b"{}".to_vec(), MissingField(EventId)),
        ("no event_id", without("event_id"), MissingField(EventId)),
        ("null event_id", set("event_id", "null"), MissingField(EventId)),
        ("no order_id", without("order_id"), MissingField(OrderId)),
        ("null order_id", set("order_id", "null"), MissingField(OrderId)),
        ("no user_id", without("user_id"), MissingField(UserId)),
        ("null user_id", set("user_id", "null"), MissingField(UserId)),
        ("no amount", without("amount"), MissingField(Amount)),
        ("null amount", set("amount", "null"), MissingField(Amount)),
        ("no event_time", without("event_time"), MissingField(EventTime)),
        ("null event_time", set("event_time", "null"), MissingField(EventTime)),
        ("keys are case-sensitive", base.replace("event_id", "Event_ID").into_bytes(), MissingField(EventId)),
        // Rule 5: the first problem in field order wins.
        ("event_id first", br#"{"order_id":1,"event_id":true}"#.to_vec(), BadType(EventId)),
        ("then order_id", with(&[("order_id", Some("1")), ("user_id", None)]).into_bytes(), BadType(OrderId)),
        ("then user_id", with(&[("user_id", Some("1.5")), ("amount", Some("[]"))]).into_bytes(), BadType(UserId)),
        ("then amount", with(&[("amount", Some("-1")), ("event_time", None)]).into_bytes(), BadAmount),
        ("then event_time", with(&[("event_time", Some("\"x\"")), ("city", Some("1"))]).into_bytes(), BadEventTime),
        ("then city", with(&[("city", Some("[]")), ("category", Some("{}"))]).into_bytes(), BadType(City)),
        // event_id.
        ("event_id number", set("event_id", "1"), BadType(EventId)),
        ("event_id bool", set("event_id", "true"), BadType(EventId)),
        ("event_id array", set("event_id", r#"["e"]"#), BadType(EventId)),
        ("event_id object", set("event_id", r#"{"e":1}"#), BadType(EventId)),
        ("event_id empty", set("event_id", r#""""#), BadType(EventId)),
        ("event_id 129 chars", set("event_id", &long_id), BadType(EventId)),
        ("event_id 129 2-byte chars", set("event_id", &long_unicode_id), BadType(EventId)),
        ("event_id of 4 MB", set("event_id", &huge_id), BadType(EventId)),
        // order_id.
        ("order_id number", set("order_id", "7"), BadType(OrderId)),
        ("order_id bool", set("order_id", "false"), BadType(OrderId)),
        ("order_id array", set("order_id", "[]"), BadType(OrderId)),
        ("order_id object", set("order_id", "{}"), BadType(OrderId)),
        // user_id.
        ("user_id float", set("user_id", "1.5"), BadType(UserId)),
        ("user_id integral float", set("user_id", "1.0"), BadType(UserId)),
        ("user_id exponent", set("user_id", "1e3"), BadType(UserId)),
        ("user_id bool", set("user_id", "true"), BadType(UserId)),
        ("user_id array", set("user_id", "[1]"), BadType(UserId)),
        ("user_id object", set("user_id", "{}"), BadType(UserId)),
        // amount: types.
        ("amount bool", set("amount", "true"), BadType(Amount)),
        ("amount array", set("amount", "[1]"), BadType(Amount)),
        ("amount object", set("amount", r#"{"v":1}"#), BadType(Amount)),
        // amount: values.
        ("amount text", set("amount", r#""abc""#), BadAmount),
        ("amount empty string", set("amount", r#""""#), BadAmount),
        ("amount leading space", set("amount", r#"" 1""#), BadAmount),
        ("amount trailing space", set("amount", r#""1 ""#), BadAmount),
        ("amount leading plus", set("amount", r#""+1""#), BadAmount),
        ("amount hex", set("amount", r#""0x10""#), BadAmount),
        ("amount NaN string", set("amount", r#""NaN""#), BadAmount),
        ("amount Infinity string", set("amount", r#""Infinity""#), BadAmount),
        ("amount decimal comma", set("amount", r#""1,50""#), BadAmount),
        ("amount 3 decimals", set("amount", "1.234"), BadAmount),
        ("amount 3 decimals, string", set("amount", r#""1.234""#), BadAmount),
        ("amount 1e-3", set("amount", "1e-3"), BadAmount),
        ("amount negative", set("amount", "-1"), BadAmount),
        ("amount negative cent", set("amount", r#""-0.01""#), BadAmount),
        ("amount 30 digits", set("amount", "123456789012345678901234567890"), BadAmount),
        ("amount 10^16", set("amount", "10000000000000000"), BadAmount),
        ("amount max + 0.01", set("amount", "10000000000000000.00"), BadAmount),
        ("amount 1e16", set("amount", "1e16"), BadAmount),
        ("amount exponent 41", set("amount", "0e41"), BadAmount),
        ("amount huge exponent", set("amount", "1e999999999999999999999"), BadAmount),
        ("amount 4 MB of digits", set("amount", &big_digits), BadAmount),
        // event_time.
        ("event_time bool", set("event_time", "true"), BadType(EventTime)),
        ("event_time array", set("event_time", "[]"), BadType(EventTime)),
        ("event_time object", set("event_time", "{}"), BadType(EventTime)),
        ("event_time text", set("event_time", r#""yesterday""#), BadEventTime),
        ("event_time empty", set("event_time", r#""""#), BadEventTime),
        ("event_time digits string", set("event_time", r#""1764064800000""#), BadEventTime),
        ("event_time no offset", set("event_time", r#""2025-11-25T10:00:00""#), BadEventTime),
        ("event_time :60 not at a month's end", set("event_time", r#""2025-11-25T10:00:60Z""#), BadEventTime),
        ("event_time offset +0530", set("event_time", r#""2025-11-25T15:30:00+0530""#), BadEventTime),
        ("event_time separator X", set("event_time", r#""2025-11-25X10:00:00Z""#), BadEventTime),
        ("event_time Feb 30", set("event_time", r#""2024-02-30T00:00:00Z""#), BadEventTime),
        ("event_time 2025-02-29", set("event_time", r#""2025-02-29T00:00:00Z""#), BadEventTime),
        ("event_time fraction", set("event_time", "1764064800000.5"), BadEventTime),
        ("event_time integral float", set("event_time", "1764064800000.0"), BadEventTime),
        ("event_time exponent", set("event_time", "1.7e12"), BadEventTime),
        ("event_time -1 ms", set("event_time", "-1"), BadEventTime),
        ("event_time 1969", set("event_time", r#""1969-12-31T23:59:59.999Z""#), BadEventTime),
        ("event_time 1969 by offset", set("event_time", r#""1970-01-01T00:00:00+00:01""#), BadEventTime),
        ("event_time 2100", set("event_time", r#""2100-01-01T00:00:00Z""#), BadEventTime),
        ("event_time 2100 by offset", set("event_time", r#""2099-12-31T16:00:00-08:00""#), BadEventTime),
        ("event_time 2100 in ms", set("event_time", "4102444800000"), BadEventTime),
        ("event_time i64::MAX", set("event_time", "9223372036854775807"), BadEventTime),
        ("event_time above i64", set("event_time", "9223372036854775808"), BadEventTime),
        ("event_time below i64", set("event_time", "-9223372036854775809"), BadEventTime),
        ("event_time in µs", set("event_time", "1764064800000000"), BadEventTime),
        // city and category.
        ("city number", set("city", "1"), BadType(City)),
        ("city bool", set("city", "true"), BadType(City)),
        ("city array", set("city", r#"["Paris"]"#), BadType(City)),
        ("city object", set("city", "{}"), BadType(City)),
        ("category number", set("category", "1.5"), BadType(Category)),
        ("category bool", set("category", "false"), BadType(Category)),
        ("category array", set("category", "[]"), BadType(Category)),
        ("category object", set("category", r#"{"a":"b"}"#), BadType(Category)),
        // Duplicate keys: the last occurrence decides.
        ("amount good, then bad", append(r#""amount":"x""#), BadAmount),
        ("event_id, then null", append(r#""event_id":null"#), MissingField(EventId)),
    ];
    let mut failures = Vec::new();
    for (label, payload, want) in &cases {
        let got = parse_event(payload);
        if got.as_ref().err() != Some(want) {
            failures.push(format!("{label}: want {want}, got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn accepts_and_cleans() {
    let base_json = with(&[]);
    let blob = format!("\"{}\"", "x".repeat(4 << 20));
    let huge_user = format!("1{}", "2".repeat(3 << 20));
    let id_128 = "東".repeat(128);
    let id_128_json = format!("\"{id_128}\"");
    // Inside the top-level object, so depth 127 in all.
    let deep_127 = nested(126);
    let long_zeros = format!("1.{}", "0".repeat(1 << 20));
    let padded = format!("{}{base_json}{}", " ".repeat(1 << 20), "\n".repeat(1 << 20));
    let reordered = r#"{"category":"books","city":"Paris","event_time":"2025-11-25T10:00:00Z",
        "amount":12.5,"user_id":"u-1","order_id":"o-1","event_id":"e-1"}"#;
    let escaped_id = r#""e\"1\\\/\n\u00e9\ud83d\ude00""#;
    let unknowns = r#""a":null,"b":[1,{"c":[true]}],"d":1e400,"e":"\ud800","f":-0.5e-999"#;
    let null_first = r#"{"event_id":null,"event_id":"e-1","order_id":"o-1","user_id":"u-1",
        "amount":12.5,"event_time":"2025-11-25T10:00:00Z","city":"Paris","category":"books"}"#;
    let id = |s: &str| Event {
        event_id: s.to_string().into(),
        ..base()
    };
    let user = |s: &str| Event {
        user_id: s.to_string().into(),
        ..base()
    };
    let cents = |amount_cents| Event {
        amount_cents,
        ..base()
    };
    let at = |event_time_ms| Event {
        event_time_ms,
        ..base()
    };
    let place = |city: &str, category: &str| Event {
        city: city.to_string().into(),
        category: category.to_string().into(),
        ..base()
    };
    // One line a case: a table reads better unwrapped.
    #[rustfmt::skip]
    let cases: Vec<(&str, Vec<u8>, Event<'static>)> = vec![
        ("the base event", base_json.clone().into_bytes(), base()),
        ("whitespace around", format!(" \t\r\n{base_json}\n").into_bytes(), base()),
        ("keys in any order", reordered.as_bytes().to_vec(), base()),
        ("unknown fields", append(unknowns), base()),
        ("nesting 127 deep", set("x", &deep_127), base()),
        ("4 MB ignored string", set("blob", &blob), base()),
        ("1 MB of whitespace each side", padded.into_bytes(), base()),
        // Cleaning.
        ("city, category missing", with(&[("city", None), ("category", None)]).into_bytes(), place("unknown", "unknown")),
        ("city, category null", with(&[("city", Some("null")), ("category", Some("null"))]).into_bytes(), place("unknown", "unknown")),
        ("city, category empty", with(&[("city", Some("\"\"")), ("category", Some("\"\""))]).into_bytes(), place("", "")),
        ("order_id empty", set("order_id", r#""""#), Event { order_id: "".into(), ..base() }),
        // Strings.
        ("escaped strings", set("event_id", escaped_id), id("e\"1\\/\né😀")),
        ("escaped city", set("city", r#""S\u00e3o Paulo""#), place("São Paulo", "books")),
        ("raw unicode", with(&[("city", Some("\"東京\"")), ("category", Some("\"😀\""))]).into_bytes(), place("東京", "😀")),
        ("escaped key", base_json.replace("event_id", r"event\u005fid").into_bytes(), base()),
        ("event_id of 128 3-byte chars", set("event_id", &id_128_json), id(&id_128)),
        ("event_id of 1 char", set("event_id", r#""x""#), id("x")),
        // user_id.
        ("integer user_id", set("user_id", "42"), user("42")),
        ("negative user_id", set("user_id", "-7"), user("-7")),
        ("user_id -0", set("user_id", "-0"), user("0")),
        ("user_id above u64", set("user_id", "18446744073709551616"), user("18446744073709551616")),
        ("user_id of 30 digits", set("user_id", "123456789012345678901234567890"), user("123456789012345678901234567890")),
        ("user_id of 3 MB", set("user_id", &huge_user), user(&huge_user)),
        ("user_id empty string", set("user_id", r#""""#), user("")),
        ("user_id numeric string", set("user_id", r#""007""#), user("007")),
        // amount.
        ("amount integer", set("amount", "12"), cents(1200)),
        ("amount zero", set("amount", "0"), cents(0)),
        ("amount -0", set("amount", "-0"), cents(0)),
        ("amount -0.0", set("amount", "-0.0"), cents(0)),
        ("amount \"-0.00\"", set("amount", r#""-0.00""#), cents(0)),
        ("amount 0.07", set("amount", "0.07"), cents(7)),
        ("amount string", set("amount", r#""12.50""#), cents(1250)),
        ("amount leading zeros", set("amount", r#""007.50""#), cents(750)),
        ("amount escaped string", set("amount", r#""\u0031.5""#), cents(150)),
        ("amount trailing zeros", set("amount", "1.230"), cents(123)),
        ("amount 1 MB of zeros", set("amount", &long_zeros), cents(100)),
        ("amount 1.5e1", set("amount", "1.5e1"), cents(1500)),
        ("amount 1.5E+1", set("amount", "1.5E+1"), cents(1500)),
        ("amount 1234e-2", set("amount", "1234e-2"), cents(1234)),
        ("amount exponent string", set("amount", r#""25e-1""#), cents(250)),
        ("amount 30 digits e-28", set("amount", "100000000000000000000000000000e-28"), cents(1000)),
        ("amount exponent 40", set("amount", "0.0000000000000000000000000000000000000001e40"), cents(100)),
        ("amount max", set("amount", "9999999999999999.99"), cents(MAX_AMOUNT_CENTS)),
        ("amount max, exponent", set("amount", "9.99999999999999999e15"), cents(MAX_AMOUNT_CENTS)),
        // event_time.
        ("event_time in ms", set("event_time", "1764064800000"), base()),
        ("event_time 0", set("event_time", "0"), at(0)),
        ("event_time -0", set("event_time", "-0"), at(0)),
        ("event_time epoch", set("event_time", r#""1970-01-01T00:00:00Z""#), at(0)),
        ("event_time epoch +05:30", set("event_time", r#""1970-01-01T05:30:00+05:30""#), at(0)),
        ("event_time last ms", set("event_time", r#""2099-12-31T23:59:59.999Z""#), at(MAX_EVENT_TIME_MS)),
        ("event_time last ms, integer", set("event_time", "4102444799999"), at(MAX_EVENT_TIME_MS)),
        ("event_time +05:30", set("event_time", r#""2025-11-25T15:30:00+05:30""#), base()),
        ("event_time -08:00", set("event_time", r#""2025-11-25T02:00:00-08:00""#), base()),
        ("event_time space, z, ns", set("event_time", r#""2025-11-25 10:00:00.123456789z""#), at(1_764_064_800_123)),
        ("event_time 12 fraction digits", set("event_time", r#""2025-11-25T10:00:00.123456789999Z""#), at(1_764_064_800_123)),
        ("event_time -00:00", set("event_time", r#""2025-11-25T10:00:00-00:00""#), base()),
        ("event_time leap second", set("event_time", r#""2016-12-31T23:59:60Z""#), at(1_483_228_799_999)),
        ("event_time leap second +05:30", set("event_time", r#""2017-01-01T05:29:60.5+05:30""#), at(1_483_228_799_999)),
        ("event_time leap day", set("event_time", r#""2024-02-29T12:00:00Z""#), at(1_709_208_000_000)),
        ("event_time escaped", set("event_time", r#""2025-11-25\u005410:00:00Z""#), base()),
        // Duplicate keys: the last occurrence wins.
        ("event_id twice", append(r#""event_id":"e-2""#), id("e-2")),
        ("amount bad, then good", set("amount", r#""x","amount":3"#), cents(300)),
        ("city, then null", append(r#""city":null"#), place("unknown", "books")),
        ("null, then event_id", null_first.as_bytes().to_vec(), base()),
    ];
    let mut failures = Vec::new();
    for (label, payload, want) in &cases {
        match parse_event(payload) {
            Ok(got) if &got == want => {}
            Ok(got) => failures.push(format!("{label}: got {}", got.to_json())),
            Err(reason) => failures.push(format!("{label}: got {reason}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn nesting_limit_matches_serde_json() {
    for depth in [1, 126, 127, 128, 129] {
        let text = nested(depth);
        let serde_ok = serde_json::from_str::<serde_json::Value>(&text).is_ok();
        let ours = parse_event(text.as_bytes());
        assert_eq!(serde_ok, depth <= MAX_NESTING, "depth {depth}");
        assert_eq!(ours == Err(Reason::NotAnObject), serde_ok, "depth {depth}");
    }
    // Brackets inside strings do not count.
    let in_string = format!("\"{}\"", "[".repeat(500));
    assert_eq!(
        parse_event(with(&[("city", Some(&in_string))]).as_bytes()).map(|e| e.city.len()),
        Ok(500)
    );
    let escaped_quote = format!("\"\\\"{}\"", "{".repeat(500));
    assert!(parse_event(with(&[("x", Some(&escaped_quote))]).as_bytes()).is_ok());
}

#[test]
fn typical_event_parses_without_allocating() {
    let before = allocations();
    drop(std::hint::black_box(vec![1u8; 16]));
    assert!(
        allocations() > before,
        "the counting allocator is not installed"
    );

    let payloads = [
        with(&[
            ("source", Some(r#""web""#)),
            ("qty", Some("3")),
            ("meta", Some(r#"{"a":1}"#)),
        ]),
        with(&[
            ("user_id", Some("123456789012345678901")),
            ("amount", Some(r#""99.90""#)),
            ("event_time", Some("1764064800000")),
            ("city", None),
        ]),
        with(&[("event_time", Some(r#""2025-11-25T11:00:00.250+01:00""#))]),
    ];
    for payload in &payloads {
        let before = allocations();
        let event = parse_event(payload.as_bytes());
        let after = allocations();
        assert!(event.is_ok(), "{payload}");
        assert_eq!(after - before, 0, "allocated while parsing {payload}");
        let borrowed = event.iter().all(|e| {
            [&e.event_id, &e.order_id, &e.user_id, &e.city, &e.category]
                .iter()
                .all(|s| matches!(s, Cow::Borrowed(_)))
        });
        assert!(borrowed, "{payload}");
    }
    // Rejections are cheap too, as long as serde_json itself says nothing.
    let missing = with(&[("amount", None)]);
    let before = allocations();
    assert_eq!(
        parse_event(missing.as_bytes()),
        Err(Reason::MissingField(Field::Amount))
    );
    assert_eq!(allocations() - before, 0);
}

#[test]
fn reasons_have_unique_static_names_that_parse_back() {
    let mut seen = std::collections::HashSet::new();
    for reason in Reason::ALL {
        let name = reason.as_str();
        assert!(seen.insert(name), "duplicate {name}");
        assert_eq!(Reason::parse(name), Some(reason));
        assert_eq!(reason.to_string(), name);
    }
    for field in Field::ALL {
        assert_eq!(Field::from_name(field.name()), Some(field));
        assert_eq!(
            Reason::MissingField(field).as_str(),
            format!("missing_field:{}", field.name())
        );
        assert_eq!(
            Reason::BadType(field).as_str(),
            format!("bad_type:{}", field.name())
        );
    }
    assert_eq!(Reason::BadAmount.as_str(), "bad_amount");
    assert_eq!(Reason::LateEvent.as_str(), "late_event");
    for bad in [
        "",
        "MALFORMED_JSON",
        "missing_field:",
        "missing_field:nope",
        "bad_type:event_id ",
        "late",
    ] {
        assert_eq!(Reason::parse(bad), None, "{bad:?}");
    }
}

#[test]
fn cents_format_with_two_decimals() {
    assert_eq!(format_cents(0), "0.00");
    assert_eq!(format_cents(7), "0.07");
    assert_eq!(format_cents(1250), "12.50");
    assert_eq!(
        format_cents(u128::from(MAX_AMOUNT_CENTS)),
        "9999999999999999.99"
    );
    assert_eq!(
        format_cents(u128::MAX),
        "3402823669209384634633746074317682114.55"
    );
}

#[test]
fn amount_grammar() {
    let good: &[(&str, u64)] = &[
        ("0", 0),
        ("-0", 0),
        ("-0.00", 0),
        ("00", 0),
        ("0e40", 0),
        ("0e-40", 0),
        ("1", 100),
        ("1.2", 120),
        ("1.23", 123),
        ("1.230000", 123),
        ("01.5", 150),
        ("1e2", 10_000),
        ("1E2", 10_000),
        ("1e+2", 10_000),
        ("1e-2", 1),
        ("12.5e-1", 125),
        ("0.5e-1", 5),
        ("0.01", 1),
        ("1e15", 100_000_000_000_000_000),
        ("9999999999999999.99", MAX_AMOUNT_CENTS),
        ("999999999999999999e-2", MAX_AMOUNT_CENTS),
        ("1e-00002", 1),
        ("1e0000000000000000000000000000001", 1000),
    ];
    for &(text, cents) in good {
        assert_eq!(parse_amount_cents(text), Some(cents), "{text}");
    }
    for bad in [
        "",
        "-",
        "+1",
        " 1",
        "1 ",
        ".5",
        "1.",
        "1..2",
        "1.2.3",
        "e1",
        "1e",
        "1e+",
        "1e-",
        "1e1.5",
        "--1",
        "-+1",
        "0x1",
        "NaN",
        "Infinity",
        "inf",
        "1_000",
        "1,5",
        "١",
        "1.234",
        "1e-3",
        "0.001",
        "-1",
        "-0.01",
        "-1e-2",
        "1e16",
        "10000000000000000",
        "1e41",
        "0e41",
        "1e-41",
        "123456789012345678901234567890",
        "99999999999999999.99",
    ] {
        assert_eq!(parse_amount_cents(bad), None, "{bad:?}");
    }
}

#[test]
fn canonical_json_shape() {
    let event = Event {
        event_id: "e\"1".into(),
        user_id: "42".into(),
        amount_cents: 7,
        city: "\u{1}\t".into(),
        ..base()
    };
    assert_eq!(
        event.to_json(),
        concat!(
            r#"{"event_id":"e\"1","order_id":"o-1","user_id":"42","amount":0.07,"#,
            r#""event_time":1764064800000,"city":"\u0001\t","category":"books"}"#,
        )
    );
    assert_eq!(parse_event(event.to_json().as_bytes()), Ok(event.clone()));
    assert_eq!(event.clone().into_owned(), event);
}

/// Properties every outcome must have, whatever the input.
fn check_outcome(payload: &[u8]) -> Result<(), TestCaseError> {
    let outcome = parse_event(payload);
    match &outcome {
        Ok(e) => {
            let id_chars = e.event_id.chars().count();
            prop_assert!((1..=MAX_EVENT_ID_CHARS).contains(&id_chars));
            prop_assert!(e.amount_cents <= MAX_AMOUNT_CENTS);
            prop_assert!((MIN_EVENT_TIME_MS..=MAX_EVENT_TIME_MS).contains(&e.event_time_ms));
            let json = e.to_json();
            let again = parse_event(json.as_bytes());
            prop_assert_eq!(again.as_ref(), Ok(e));
        }
        Err(reason) => prop_assert_ne!(*reason, Reason::LateEvent),
    }
    // Our JSON verdict agrees with serde_json's own, both ways round
    // where serde_json is unambiguous.
    if serde_json::from_slice::<serde_json::Value>(payload).is_ok() {
        prop_assert_ne!(outcome.as_ref().err(), Some(&Reason::MalformedJson));
    }
    if serde_json::from_slice::<IgnoredAny>(payload).is_err() {
        prop_assert_eq!(outcome.as_ref().err(), Some(&Reason::MalformedJson));
    }
    Ok(())
}

/// Bytes that are likely to matter to a JSON parser.
fn interesting_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        any::<u8>(),
        prop::sample::select(
            b"{}[]\":,\\.-+eE0123456789 \nnulltrfa/u\x00\x7f\xc3\xa9\xef\xbb\xbf".to_vec()
        ),
    ]
}

#[derive(Clone, Debug)]
enum Mutation {
    Replace(prop::sample::Index, u8),
    Insert(prop::sample::Index, u8),
    InsertText(prop::sample::Index, &'static str),
    Delete(prop::sample::Index),
    Truncate(prop::sample::Index),
    Duplicate(prop::sample::Index, prop::sample::Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let text = prop::sample::select(vec![
        "null",
        "\"",
        "\\",
        "\\u",
        "\\ud800",
        "[",
        "{",
        "]",
        "}",
        ",",
        ":",
        "-",
        "e",
        "1e999",
        ".5",
        "0",
        "true",
        "\"event_id\":",
        "\"amount\":",
        "\"event_time\":",
        "\"user_id\":",
        "\"city\":[",
        "\u{feff}",
        "\u{1}",
        "é",
        "\"\"",
        "-0",
        "9999999999999999999999",
    ]);
    prop_oneof![
        (any::<prop::sample::Index>(), interesting_byte())
            .prop_map(|(i, b)| Mutation::Replace(i, b)),
        (any::<prop::sample::Index>(), interesting_byte())
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<prop::sample::Index>(), text).prop_map(|(i, t)| Mutation::InsertText(i, t)),
        any::<prop::sample::Index>().prop_map(Mutation::Delete),
        any::<prop::sample::Index>().prop_map(Mutation::Truncate),
        (any::<prop::sample::Index>(), any::<prop::sample::Index>())
            .prop_map(|(a, b)| Mutation::Duplicate(a, b)),
    ]
}

fn apply(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = bytes.len();
        match m {
            Mutation::Replace(i, b) if len > 0 => bytes[i.index(len)] = *b,
            Mutation::Insert(i, b) => bytes.insert(i.index(len + 1), *b),
            Mutation::InsertText(i, t) => {
                let at = i.index(len + 1);
                bytes.splice(at..at, t.bytes());
            }
            Mutation::Delete(i) if len > 0 => {
                bytes.remove(i.index(len));
            }
            Mutation::Truncate(i) => bytes.truncate(i.index(len + 1)),
            Mutation::Duplicate(a, b) if len > 0 => {
                let (a, b) = (a.index(len), b.index(len));
                let piece = bytes[a.min(b)..=a.max(b)].to_vec();
                bytes.splice(a..a, piece);
            }
            _ => {}
        }
    }
    bytes
}

fn any_text(max_chars: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        prop::collection::vec(any::<char>(), 0..=max_chars).prop_map(String::from_iter),
        prop::collection::vec(
            prop::sample::select(vec![
                'a', 'Z', '0', ' ', '"', '\\', '/', '\n', '\t', '\u{0}', '\u{1f}', '\u{7f}', 'é',
                '東', '😀', '\u{feff}', '\u{2028}'
            ]),
            0..=max_chars,
        )
        .prop_map(String::from_iter),
        Just("unknown".to_string()),
    ]
}

/// The event of generated fields, in field order.
fn event_of(
    (event_id, order_id, user_id, amount_cents, event_time_ms, city, category): (
        String,
        String,
        String,
        u64,
        i64,
        String,
        String,
    ),
) -> Event<'static> {
    Event {
        event_id: event_id.into(),
        order_id: order_id.into(),
        user_id: user_id.into(),
        amount_cents,
        event_time_ms,
        city: city.into(),
        category: category.into(),
    }
}

fn any_event() -> impl Strategy<Value = Event<'static>> {
    (
        any_text(128).prop_filter("event_id needs 1..=128 chars", |s| !s.is_empty()),
        any_text(40),
        prop_oneof![any_text(40), any::<i128>().prop_map(|n| n.to_string())],
        0..=MAX_AMOUNT_CENTS,
        MIN_EVENT_TIME_MS..=MAX_EVENT_TIME_MS,
        any_text(40),
        any_text(40),
    )
        .prop_map(event_of)
}

/// Writes `cents / 100` as a decimal mantissa and exponent: `zeros` extra
/// trailing zeros, and the point moved by `-exponent` places.
fn render(cents_digits: &str, scale: i64, exponent: i64, upper: bool, plus: bool) -> String {
    // value = digits * 10^-scale = mantissa * 10^exponent
    let mantissa_scale = scale + exponent;
    let mut mantissa = if mantissa_scale <= 0 {
        format!(
            "{cents_digits}{}",
            "0".repeat(mantissa_scale.unsigned_abs() as usize)
        )
    } else {
        let point = mantissa_scale as usize;
        if point < cents_digits.len() {
            let (int, frac) = cents_digits.split_at(cents_digits.len() - point);
            format!("{int}.{frac}")
        } else {
            format!("0.{}{cents_digits}", "0".repeat(point - cents_digits.len()))
        }
    };
    if exponent != 0 || plus {
        mantissa.push(if upper { 'E' } else { 'e' });
        if plus && exponent >= 0 {
            mantissa.push('+');
        }
        mantissa.push_str(&exponent.to_string());
    }
    mantissa
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn any_bytes_give_a_verdict(bytes in prop::collection::vec(interesting_byte(), 0..300)) {
        check_outcome(&bytes)?;
    }

    #[test]
    fn mutated_events_give_a_verdict(
        event in any_event(),
        extra in prop::sample::select(vec![
            "",
            r#","x":[1,{"y":null}]"#,
            r#","amount":"1e2""#,
            r#","event_time":"2025-01-01T00:00:00+05:30""#,
        ]),
        mutations in prop::collection::vec(mutation(), 1..6),
    ) {
        let json = event.to_json();
        let json = format!("{}{extra}}}", &json[..json.len() - 1]);
        check_outcome(&apply(json.into_bytes(), &mutations))?;
    }

    #[test]
    fn json_shaped_noise_gives_a_verdict(
        body in "[{}\\[\\]\",:0-9a-z\\\\. eE+-]{0,80}",
        key in prop::sample::select(Field::ALL.to_vec()),
    ) {
        check_outcome(format!("{{\"{}\":{body}", key.name()).as_bytes())?;
        check_outcome(body.as_bytes())?;
    }
}

proptest! {
    #[test]
    fn canonical_json_round_trips(event in any_event()) {
        let json = event.to_json();
        prop_assert_eq!(parse_event(json.as_bytes()), Ok(event.clone()));
        // The canonical form is valid JSON to any parser.
        let value: serde_json::Value = serde_json::from_str(&json)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(value["event_id"].as_str(), Some(&*event.event_id));
    }

    #[test]
    fn amounts_in_any_notation_parse_to_their_cents(
        cents in prop_oneof![0..=MAX_AMOUNT_CENTS, 0u64..10_000],
        zeros in 0i64..4,
        exponent in -20i64..=20,
        upper in any::<bool>(),
        plus in any::<bool>(),
        minus_zero in any::<bool>(),
    ) {
        let digits = format!("{cents}{}", "0".repeat(zeros as usize));
        let mut text = render(&digits, 2 + zeros, exponent, upper, plus);
        if minus_zero && cents == 0 {
            text.insert(0, '-');
        }
        prop_assert_eq!(parse_amount_cents(&text), Some(cents), "{}", text);
        // The text in a string is a numeric string; as a bare number it is
        // the same amount when it is a JSON number, and malformed JSON when
        // it is not (`00e-3`: JSON numbers have no leading zeros).
        let quoted = format!("\"{text}\"");
        let payload = with(&[("amount", Some(&quoted))]);
        prop_assert_eq!(parse_event(payload.as_bytes()).map(|e| e.amount_cents), Ok(cents));
        let number = serde_json::from_str::<serde_json::Number>(&text).is_ok();
        let payload = with(&[("amount", Some(&text))]);
        prop_assert_eq!(
            parse_event(payload.as_bytes()).map(|e| e.amount_cents),
            if number { Ok(cents) } else { Err(Reason::MalformedJson) },
            "{}", text
        );
    }

    #[test]
    fn sub_cent_digits_are_rejected(
        cents in 0..=MAX_AMOUNT_CENTS / 10,
        sub_cent in 1u64..10,
        zeros in 0i64..4,
        exponent in -20i64..=20,
        upper in any::<bool>(),
    ) {
        let digits = format!("{}{sub_cent}{}", cents, "0".repeat(zeros as usize));
        let text = render(&digits, 3 + zeros, exponent, upper, false);
        prop_assert_eq!(parse_amount_cents(&text), None, "{}", text);
    }

    #[test]
    fn amounts_above_the_maximum_are_rejected(
        over in (u128::from(MAX_AMOUNT_CENTS) + 1)..10u128.pow(30),
        exponent in -20i64..=20,
    ) {
        let text = render(&over.to_string(), 2, exponent, false, false);
        prop_assert_eq!(parse_amount_cents(&text), None, "{}", text);
    }

    #[test]
    fn negative_amounts_are_rejected(cents in 1..=MAX_AMOUNT_CENTS, exponent in -20i64..=20) {
        let text = format!("-{}", render(&cents.to_string(), 2, exponent, false, false));
        prop_assert_eq!(parse_amount_cents(&text), None, "{}", text);
    }
}

/// The verdict of the general (serde_json) path alone.
fn general_verdict(payload: &[u8]) -> Result<Event<'_>, Reason> {
    let text = std::str::from_utf8(payload).map_err(|_| Reason::MalformedJson)?;
    parse_with_serde(text)
}

/// A flat object's worth of JSON text: known and unknown keys, values of
/// every plain type, with whitespace anywhere it may go.
fn flat_object_text() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec![
        "event_id",
        "order_id",
        "user_id",
        "amount",
        "event_time",
        "city",
        "category",
        "x",
        "",
        "é",
        "event_id ",
        "Amount",
    ]);
    let value = prop::sample::select(vec![
        r#""e-1""#,
        r#""""#,
        r#""12.50""#,
        r#""2025-11-25T10:00:00Z""#,
        r#""東京""#,
        r#""a\"b""#,
        r#""\u0031""#,
        "12.5",
        "0",
        "-0",
        "-0.0",
        "1e2",
        "1E+2",
        "12",
        "1764064800000",
        "-1",
        "01",
        "1.",
        ".5",
        "-",
        "1e",
        "true",
        "false",
        "null",
        "nul",
        "[]",
        "{}",
        "[1]",
        r#"{"a":1}"#,
        "0.07",
        "9999999999999999.99",
        "123456789012345678901",
        "-9223372036854775808",
        "9223372036854775808",
    ]);
    let ws = prop::sample::select(vec!["", "", "", " ", "\n", "\t\r "]);
    (
        prop::collection::vec((ws.clone(), key, ws.clone(), value, ws.clone()), 0..12),
        ws.clone(),
        ws,
    )
        .prop_map(|(members, before, after)| {
            let body: Vec<String> = members
                .iter()
                .map(|(w1, k, w2, v, w3)| format!("{w1}\"{k}\"{w2}:{w3}{v}{w1}"))
                .collect();
            format!("{before}{{{}}}{after}", body.join(","))
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    /// The reader never changes a verdict: whatever it decides on a flat
    /// object, the serde_json path decides the same.
    #[test]
    fn the_reader_agrees_with_the_serde_path_on_flat_objects(
        text in flat_object_text(),
        mutations in prop::collection::vec(mutation(), 0..3),
    ) {
        let bytes = apply(text.into_bytes(), &mutations);
        prop_assert_eq!(parse_event(&bytes), general_verdict(&bytes));
    }

    #[test]
    fn the_reader_agrees_with_the_serde_path_on_mutated_events(
        event in any_event(),
        mutations in prop::collection::vec(mutation(), 0..4),
    ) {
        let bytes = apply(event.to_json().into_bytes(), &mutations);
        prop_assert_eq!(parse_event(&bytes), general_verdict(&bytes));
    }

    #[test]
    fn the_reader_agrees_with_the_serde_path_on_any_bytes(bytes in prop::collection::vec(interesting_byte(), 0..300)) {
        prop_assert_eq!(parse_event(&bytes), general_verdict(&bytes));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn the_sse2_byte_classes_are_the_scalar_ones(bytes in prop::array::uniform16(interesting_byte())) {
        prop_assert_eq!(classify16(&bytes), classify16_scalar(&bytes));
    }

    /// Without a backslash, every quote opens or closes a string: the mask
    /// marks exactly the quotes.
    #[test]
    fn the_quote_mask_marks_every_quote(
        bytes in prop_oneof![
            prop::collection::vec(interesting_byte(), 0..600),
            prop::collection::vec(prop::sample::select(b"ab\" :,{}".to_vec()), 0..600),
        ],
    ) {
        if let Some(mask) = QuoteMask::of(&bytes).filter(|_| !bytes.contains(&b'\\')) {
            for i in 0..=bytes.len() {
                let next = bytes[i..].iter().position(|&c| c == b'"').map(|j| i + j);
                prop_assert_eq!(mask.next_from(i), next, "from {}", i);
            }
        }
    }
}

/// Keys the general reader meets: the seven fields, unknown ones, non-ASCII
/// ones and escaped ones (which it leaves to serde_json).
fn any_key() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        r#""event_id""#,
        r#""order_id""#,
        r#""user_id""#,
        r#""amount""#,
        r#""event_time""#,
        r#""city""#,
        r#""category""#,
        r#""meta""#,
        r#""""#,
        r#""é東""#,
        r#""event\u005fid""#,
        r#""a\"b""#,
    ])
}

/// Whitespace JSON allows between tokens, as producers write it.
fn any_ws() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["", "", "", " ", "\n  ", "\r\n\t"])
}

/// Any JSON value, nested, with escapes and non-ASCII text, and a few
/// things that are not JSON: what the general reader must check when it
/// skips a value.
fn nested_value() -> impl Strategy<Value = String> {
    let leaf = prop::sample::select(vec![
        r#""a""#,
        r#""""#,
        r#""a\"b\\""#,
        r#""\/\b\f\n\r\t""#,
        r#""S\u00e3o Paulo""#,
        r#""\ud83c\udf81""#,
        r#""\ud800""#,
        r#""\uDFFF x""#,
        r#""é東😀""#,
        r#""12.50""#,
        r#""2025-11-25T10:00:00.250+08:00""#,
        "0",
        "-12.5e-3",
        "1764064800250",
        "true",
        "false",
        "null",
        "[]",
        "{}",
        // Not JSON:
        r#""\x""#,
        r#""\u12""#,
        "\"a\u{1}\"",
        "01",
        "1.",
        "tru",
        "[1,]",
        "{\"a\"}",
    ])
    .prop_map(String::from);
    leaf.prop_recursive(5, 48, 4, |inner| {
        let member = (any_key(), any_ws(), inner.clone(), any_ws());
        prop_oneof![
            (prop::collection::vec((inner, any_ws()), 0..4), any_ws()).prop_map(|(items, ws)| {
                let items: Vec<String> = items.iter().map(|(v, w)| format!("{w}{v}{w}")).collect();
                format!("[{ws}{}]", items.join(","))
            }),
            (prop::collection::vec(member, 0..4), any_ws()).prop_map(|(members, ws)| {
                let members: Vec<String> = members
                    .iter()
                    .map(|(k, w1, v, w2)| format!("{w1}{k}{w2}:{w1}{v}{w2}"))
                    .collect();
                format!("{{{ws}{}}}", members.join(","))
            }),
        ]
    })
}

/// An object with the seven fields (values of every type, escaped or not)
/// and nested extras, keys in any order and repeated, whitespace anywhere.
fn realistic_object() -> impl Strategy<Value = String> {
    let known = prop::sample::select(vec![
        r#""e-1""#,
        r#""\u00e9v\u0000""#,
        r#""S\u00e3o Paulo""#,
        r#""\ud800""#,
        r#""北京""#,
        "42",
        "-0",
        "12.5",
        r#""12.50""#,
        r#""2025-11-25T18:00:00.25+08:00""#,
        r#""2025-11-25T10:00:00.250123456Z""#,
        "1764064800250",
        "null",
        "true",
        r#"{"a":[1]}"#,
    ])
    .prop_map(String::from);
    let value = prop_oneof![3 => known, 1 => nested_value()];
    let member = (any_key(), any_ws(), value, any_ws());
    (prop::collection::vec(member, 0..14), any_ws()).prop_map(|(members, ws)| {
        let members: Vec<String> = members
            .iter()
            .map(|(k, w1, v, w2)| format!("{w1}{k}{w2}:{w1}{v}{w2}"))
            .collect();
        format!("{ws}{{{}}}{ws}", members.join(","))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    /// The general reader never changes a verdict on nested, escaped,
    /// spaced-out objects, valid or broken.
    #[test]
    fn the_general_reader_agrees_with_the_serde_path(
        text in realistic_object(),
        mutations in prop::collection::vec(mutation(), 0..3),
    ) {
        let bytes = apply(text.into_bytes(), &mutations);
        prop_assert_eq!(parse_event(&bytes), general_verdict(&bytes));
        check_outcome(&bytes)?;
    }

    /// Whenever the general reader reads a payload, serde_json reads it as
    /// an object too, and finds the same raw text for every field.
    #[test]
    fn the_general_reader_reads_what_serde_json_reads(text in realistic_object()) {
        if let Some(mut raw) = scan_object(&text, |i| string_end(text.as_bytes(), i)) {
            let map: Result<std::collections::HashMap<&str, &serde_json::value::RawValue>, _> =
                serde_json::from_str(&text);
            prop_assert!(map.is_ok(), "{} read as {:?}", text, raw);
            let map = map.unwrap();
            for field in Field::ALL {
                let theirs = map.get(field.name()).map(|v| v.get()).filter(|v| *v != "null");
                let ours = match *raw.slot(field) {
                    Json::Null => None,
                    Json::Plain(s) => Some(format!("\"{s}\"")),
                    Json::Escaped(s) | Json::Number { text: s, .. } => Some(s.to_string()),
                    Json::Other => theirs.filter(|v| !v.starts_with(['"', '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9'])).map(str::to_string),
                };
                prop_assert_eq!(ours.as_deref(), theirs, "{} in {}", field.name(), text);
            }
        }
    }

    /// Payloads of every producer style, then broken in small ways: the
    /// same verdict as the serde path.
    #[test]
    fn generated_payloads_of_every_style_agree_with_the_serde_path(
        style in prop::sample::select(PayloadStyle::ALL.to_vec()),
        partition in 0u32..4,
        offset in 0u64..1_000_000,
        mutations in prop::collection::vec(mutation(), 0..3),
    ) {
        let generator = GeneratorConfig { style, anomaly_share: 0.1, ..GeneratorConfig::default() };
        let mut payload = Vec::new();
        generator.payload(partition, offset, &mut payload);
        let bytes = apply(payload, &mutations);
        prop_assert_eq!(parse_event(&bytes), general_verdict(&bytes));
    }

    /// A string ends where serde_json says it does, and is refused exactly
    /// when serde_json refuses it.
    #[test]
    fn strings_end_where_serde_json_says(
        content in prop::collection::vec(
            prop::sample::select(vec![
                "a", "é", "東", "😀", " ", "\\\"", "\\\\", "\\/", "\\n", "\\u00e9", "\\ud800",
                "\\uZZZZ", "\\u12", "\\x", "\\", "\u{1}", "\u{1f}", "\u{7f}", "\"", "0123456789abcdef",
            ]),
            0..24,
        ),
    ) {
        let literal = format!("\"{}\" ", content.concat());
        let b = literal.as_bytes();
        let ours = string_end(b, 1);
        let mut stream = serde_json::Deserializer::from_str(&literal).into_iter::<IgnoredAny>();
        let theirs = match stream.next() {
            Some(Ok(_)) => Some(stream.byte_offset() - 1),
            _ => None,
        };
        prop_assert_eq!(ours.map(|(end, _)| end), theirs, "{:?}", literal);
        if let Some((end, escaped)) = ours {
            prop_assert_eq!(escaped, literal[..end].contains('\\'));
        }
    }

    #[test]
    fn the_sse2_special_bytes_are_the_scalar_ones(bytes in prop::array::uniform16(interesting_byte())) {
        prop_assert_eq!(special16(&bytes), special16_scalar(&bytes));
    }
}

/// The general reader is what reads every producer's valid payloads: none
/// of them goes the slow way round.
#[test]
fn the_general_reader_reads_every_producer_style() {
    for style in PayloadStyle::ALL {
        let generator = GeneratorConfig {
            style,
            anomaly_share: 0.0,
            ..GeneratorConfig::default()
        };
        for offset in 0..2_000 {
            let mut payload = Vec::new();
            generator.payload(1, offset, &mut payload);
            let text = std::str::from_utf8(&payload).unwrap();
            let raw = scan_object(text, |i| string_end(text.as_bytes(), i));
            assert!(raw.is_some(), "{style}: {text}");
            assert_eq!(raw.unwrap().validate(), generator.intended(1, offset));
        }
    }
}

/// Whether `b` is what [`QuoteMask::of`] covers, worked out byte by byte:
/// short enough, no control character, and every escape one JSON has.
fn mask_covers(b: &[u8]) -> bool {
    if b.len() > QuoteMask::MAX_LEN || b.iter().any(|&c| c < 0x20) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            i += 1;
            continue;
        }
        i += match b.get(i + 1) {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => 2,
            Some(b'u')
                if b.get(i + 2..i + 6)
                    .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) =>
            {
                6
            }
            _ => return false,
        };
    }
    true
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn the_sse2_backslashes_and_controls_are_the_scalar_ones(
        bytes in prop::array::uniform16(interesting_byte()),
    ) {
        prop_assert_eq!(backslash_control16(&bytes), backslash_control16_scalar(&bytes));
    }

    /// Read through the mask or string by string, a payload gives the same
    /// fields; the mask covers exactly what it should and knows ASCII.
    #[test]
    fn the_mask_reads_as_the_string_scan_reads(
        text in prop_oneof![realistic_object(), flat_object_text()],
        mutations in prop::collection::vec(mutation(), 0..3),
    ) {
        let bytes = apply(text.into_bytes(), &mutations);
        let mask = QuoteMask::of(&bytes);
        prop_assert_eq!(mask.is_some(), mask_covers(&bytes), "{:?}", String::from_utf8_lossy(&bytes));
        if let (Some(mask), Ok(text)) = (mask, std::str::from_utf8(&bytes)) {
            prop_assert_eq!(mask.is_ascii(), bytes.is_ascii());
            prop_assert_eq!(
                scan_object(text, |i| mask.string_end(i)),
                scan_object(text, |i| string_end(text.as_bytes(), i)),
                "{}", text
            );
        }
    }

    #[test]
    fn the_mask_covers_what_it_should_of_any_bytes(
        bytes in prop::collection::vec(
            prop_oneof![interesting_byte(), Just(b'\\'), Just(b'"')],
            0..1100,
        ),
    ) {
        prop_assert_eq!(QuoteMask::of(&bytes).is_some(), mask_covers(&bytes));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Any event, written the way each producer writes it (strings with
    /// quotes, control characters and any Unicode, escaped or not; user ids
    /// as numbers or text; times in offsets with 0 to 9 fraction digits or
    /// as epoch milliseconds; keys reordered; extra nested fields), parses
    /// back to that event, its time at the precision the producer wrote.
    #[test]
    fn any_event_in_every_producer_style_parses_back_to_itself(
        event in any_event(),
        bits in any::<u64>(),
    ) {
        use crate::source::generator::style::{read_back, write_event};
        for style in PayloadStyle::ALL {
            let mut payload = Vec::new();
            write_event(style, &event, bits, &mut payload);
            let expected = read_back(style, &event, bits);
            // The precision is the producer's: at most whole seconds lost.
            prop_assert!((0..1000).contains(&(event.event_time_ms - expected.event_time_ms)));
            prop_assert_eq!(
                parse_event(&payload),
                Ok(expected),
                "{}: {}",
                style,
                String::from_utf8_lossy(&payload)
            );
        }
    }
}
