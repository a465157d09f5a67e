//! The JSON readers `bench parse` compares. Each reads a payload into the
//! product's [`RawFields`] and hands it to the product's own
//! [`RawFields::validate`], so every reader pays for the same rules and
//! only the JSON reading differs. Each also does what the rules need of a
//! reader (UTF-8 everywhere, the nesting limit, an object at the top), so
//! its verdicts can be checked against the generator's intent.

use serde::Deserialize;
use serde_json::value::RawValue;

use streamforge::event::{Event, Field, Json, RawFields, Reason, MAX_NESTING};

/// Per-reader reusable buffers.
#[derive(Default)]
pub struct Scratch {
    input: Vec<u8>,
    numbers: String,
    tape: Vec<simd_json::Node<'static>>,
    buffers: Option<simd_json::Buffers>,
}

/// A reader: payload in, verdict out; the event may borrow from the
/// payload or from the scratch buffers.
pub type ReadFn = for<'a> fn(&'a [u8], &'a mut Scratch) -> Result<Event<'a>, Reason>;

pub const READERS: [(&str, ReadFn); 5] = [
    ("streamforge parse_event (this build)", this_build),
    ("streamforge parse_event at 3a7f460", legacy),
    ("serde_json, derive, borrowed &RawValue", serde_json_derive),
    ("sonic-rs, derive, borrowed LazyValue", sonic_rs_derive),
    ("simd-json, tape", simd_json_tape),
];

fn this_build<'a>(payload: &'a [u8], _: &'a mut Scratch) -> Result<Event<'a>, Reason> {
    streamforge::event::parse_event(payload)
}

fn legacy<'a>(payload: &'a [u8], _: &'a mut Scratch) -> Result<Event<'a>, Reason> {
    super::legacy::parse_event(payload)
}

fn empty() -> RawFields<'static> {
    RawFields {
        event_id: Json::Null,
        order_id: Json::Null,
        user_id: Json::Null,
        amount: Json::Null,
        event_time: Json::Null,
        city: Json::Null,
        category: Json::Null,
    }
}

/// The value classes of the rules, from a value's raw JSON text (already
/// validated by the reader).
fn classify(text: &str) -> Json<'_> {
    match text.as_bytes().first() {
        Some(b'"') if !text.contains('\\') => Json::Plain(&text[1..text.len() - 1]),
        Some(b'"') => Json::Escaped(text),
        Some(b'-' | b'0'..=b'9') => Json::Number {
            text,
            integer: !text.bytes().any(|b| matches!(b, b'.' | b'e' | b'E')),
        },
        _ if text == "null" => Json::Null,
        _ => Json::Other,
    }
}

/// Whether brackets nest deeper than the limit (outside strings).
fn too_deep(b: &[u8]) -> bool {
    if b.iter().filter(|&&c| c == b'[' || c == b'{').count() <= MAX_NESTING {
        return false;
    }
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &c in b {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
        } else {
            match c {
                b'"' => in_string = true,
                b'[' | b'{' => {
                    depth += 1;
                    if depth > MAX_NESTING {
                        return true;
                    }
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
    }
    false
}

/// The rules' reader part that every crate needs done around it: UTF-8,
/// nesting, and an object at the top (else the crate decides between
/// `malformed_json` and `not_an_object`).
fn precheck(payload: &[u8]) -> Result<&str, Reason> {
    let text = std::str::from_utf8(payload).map_err(|_| Reason::MalformedJson)?;
    if too_deep(payload) {
        return Err(Reason::MalformedJson);
    }
    Ok(text)
}

fn not_an_object_or_malformed(text: &str) -> Reason {
    match serde_json::from_str::<serde::de::IgnoredAny>(text) {
        Ok(_) => Reason::NotAnObject,
        Err(_) => Reason::MalformedJson,
    }
}

fn starts_an_object(text: &str) -> bool {
    text.trim_start_matches([' ', '\t', '\n', '\r'])
        .starts_with('{')
}

/// The struct a serde user would write: every field optional, borrowed
/// raw text. (Unlike the rules, derive refuses a duplicate key.)
#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow)]
    event_id: Option<&'a RawValue>,
    #[serde(borrow)]
    order_id: Option<&'a RawValue>,
    #[serde(borrow)]
    user_id: Option<&'a RawValue>,
    #[serde(borrow)]
    amount: Option<&'a RawValue>,
    #[serde(borrow)]
    event_time: Option<&'a RawValue>,
    #[serde(borrow)]
    city: Option<&'a RawValue>,
    #[serde(borrow)]
    category: Option<&'a RawValue>,
}

fn serde_json_derive<'a>(payload: &'a [u8], _: &'a mut Scratch) -> Result<Event<'a>, Reason> {
    let text = precheck(payload)?;
    if !starts_an_object(text) {
        return Err(not_an_object_or_malformed(text));
    }
    let wire: Wire<'a> = serde_json::from_str(text).map_err(|_| Reason::MalformedJson)?;
    let get = |v: Option<&'a RawValue>| v.map_or(Json::Null, |v| classify(v.get()));
    RawFields {
        event_id: get(wire.event_id),
        order_id: get(wire.order_id),
        user_id: get(wire.user_id),
        amount: get(wire.amount),
        event_time: get(wire.event_time),
        city: get(wire.city),
        category: get(wire.category),
    }
    .validate()
}

#[derive(Deserialize)]
struct SonicWire<'a> {
    #[serde(borrow)]
    event_id: Option<sonic_rs::LazyValue<'a>>,
    #[serde(borrow)]
    order_id: Option<sonic_rs::LazyValue<'a>>,
    #[serde(borrow)]
    user_id: Option<sonic_rs::LazyValue<'a>>,
    #[serde(borrow)]
    amount: Option<sonic_rs::LazyValue<'a>>,
    #[serde(borrow)]
    event_time: Option<sonic_rs::LazyValue<'a>>,
    #[serde(borrow)]
    city: Option<sonic_rs::LazyValue<'a>>,
    #[serde(borrow)]
    category: Option<sonic_rs::LazyValue<'a>>,
}

fn sonic_rs_derive<'a>(payload: &'a [u8], scratch: &'a mut Scratch) -> Result<Event<'a>, Reason> {
    let text = precheck(payload)?;
    if !starts_an_object(text) {
        return Err(not_an_object_or_malformed(text));
    }
    let wire: SonicWire<'a> = sonic_rs::from_str(text).map_err(|_| Reason::MalformedJson)?;
    // A value's raw text is a slice of the payload, except for some
    // escaped strings, which sonic-rs hands over as a copy: those are kept
    // in the scratch buffer for the payload's lifetime.
    let values = [
        (Field::EventId, &wire.event_id),
        (Field::OrderId, &wire.order_id),
        (Field::UserId, &wire.user_id),
        (Field::Amount, &wire.amount),
        (Field::EventTime, &wire.event_time),
        (Field::City, &wire.city),
        (Field::Category, &wire.category),
    ];
    let mut fields = empty();
    let mut copied: [Option<(usize, usize)>; 7] = [None; 7];
    let copies = &mut scratch.numbers;
    copies.clear();
    for (field, value) in values {
        let Some(value) = value else { continue };
        match value.as_raw_cow() {
            std::borrow::Cow::Borrowed(raw) => *fields.slot(field) = classify(raw),
            std::borrow::Cow::Owned(raw) => {
                let start = copies.len();
                copies.push_str(&raw);
                copied[field as usize] = Some((start, copies.len()));
            }
        }
    }
    let copies: &'a str = copies;
    for field in Field::ALL {
        if let Some((start, end)) = copied[field as usize] {
            *fields.slot(field) = classify(&copies[start..end]);
        }
    }
    fields.validate()
}

/// simd-json parses in place (it unescapes strings into the input), so
/// the payload is copied first, and it keeps no number text: numbers are
/// written back as text (shortest round trip) for the rules, which loses
/// nothing for the amounts and times of the mix.
fn simd_json_tape<'a>(payload: &'a [u8], scratch: &'a mut Scratch) -> Result<Event<'a>, Reason> {
    use simd_json::{Node, StaticNode};
    let Scratch {
        input,
        numbers,
        tape,
        buffers,
    } = scratch;
    if too_deep(payload) {
        return Err(Reason::MalformedJson);
    }
    input.clear();
    input.extend_from_slice(payload);
    let input: &'a mut [u8] = input.as_mut_slice();
    let buffers = buffers.get_or_insert_with(|| simd_json::Buffers::new(4096));
    let mut t = simd_json::Tape(std::mem::take(tape)).reset();
    if simd_json::fill_tape(input, buffers, &mut t).is_err() {
        *tape = t.reset().0;
        return Err(not_an_object_or_malformed(&String::from_utf8_lossy(
            payload,
        )));
    }
    let nodes = &t.0;
    let mut fields = empty();
    let mut number_at: [Option<(usize, usize, bool)>; 7] = [None; 7];
    numbers.clear();
    let mut is_object = false;
    if let Some(Node::Object { len, .. }) = nodes.first() {
        is_object = true;
        let mut i = 1;
        for _ in 0..*len {
            let key = match nodes.get(i) {
                Some(Node::String(k)) => *k,
                _ => break,
            };
            let value = nodes.get(i + 1).copied();
            let field = Field::from_name(key);
            let width = match value {
                Some(Node::Object { count, .. } | Node::Array { count, .. }) => count + 1,
                _ => 1,
            };
            if let (Some(field), Some(value)) = (field, value) {
                let slot = field as usize;
                number_at[slot] = None;
                *fields.slot(field) = match value {
                    Node::String(s) => Json::Plain(s),
                    Node::Static(StaticNode::Null) => Json::Null,
                    Node::Static(StaticNode::Bool(_)) => Json::Other,
                    Node::Static(n) => {
                        let start = numbers.len();
                        let integer = !matches!(n, StaticNode::F64(_));
                        use std::fmt::Write;
                        let _ = match n {
                            StaticNode::I64(v) => write!(numbers, "{v}"),
                            StaticNode::U64(v) => write!(numbers, "{v}"),
                            StaticNode::F64(v) => write!(numbers, "{v:?}"),
                            _ => Ok(()),
                        };
                        number_at[slot] = Some((start, numbers.len(), integer));
                        Json::Null
                    }
                    _ => Json::Other,
                };
            }
            i += 1 + width;
        }
    }
    let numbers: &'a str = numbers;
    for field in Field::ALL {
        if let Some((start, end, integer)) = number_at[field as usize] {
            *fields.slot(field) = Json::Number {
                text: &numbers[start..end],
                integer,
            };
        }
    }
    let verdict = if is_object {
        fields.validate()
    } else {
        Err(Reason::NotAnObject)
    };
    // Keep the tape's allocation for the next payload.
    *tape = t.reset().0;
    verdict
}
