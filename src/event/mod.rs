//! Bytes to a validated, cleaned order event, or the reason it is an anomaly.
//!
//! This is the first stage of the hot path: every message value (a Kafka
//! record or one line of a file) goes through [`parse_event`] exactly once.
//! An accepted [`Event`] borrows its strings from the payload whenever it can,
//! so a typical event with unescaped strings is parsed without a single heap
//! allocation. A rejected payload yields a [`Reason`], whose
//! [`as_str`](Reason::as_str) is the machine-readable reason written to the
//! anomaly side output and used as a metric label. Downstream stages
//! (dedup, windows) see only events that passed every rule below; `late_event`
//! is the one reason decided later, by the windows.
//!
//! # Layout
//!
//! - [`Field`] and [`Reason`]: the vocabulary of anomalies, with static names.
//! - [`parse_event`]: the rules below, in order. One reader,
//!   `scan::scan_object`, reads every payload that is a valid JSON object
//!   whatever the producer (keys in any order, whitespace anywhere, escaped
//!   and non-ASCII strings, nested extras): there is no faster path for one
//!   layout. Payloads up to a kilobyte are first classified 16 bytes at a
//!   time (SSE2 on x86_64), which finds where every string ends and proves
//!   a plain ASCII payload UTF-8. What the reader refuses (invalid JSON,
//!   an escaped key) goes to serde_json, which decides between
//!   `malformed_json` and `not_an_object`; the proptests hold the two to the
//!   same verdicts. Measured against serde_json, sonic-rs and simd-json on
//!   the producers' mix by `streamforge-tools bench parse`
//!   (docs/performance.md, "Parsing").
//! - [`parse_amount_cents`] / [`format_cents`]: exact decimal money, with no
//!   floats anywhere.
//! - [`Event::to_json`]: the canonical encoding, used by the generator and the
//!   tests; `parse_event(e.to_json()) == e` for every valid event.
//!
//! # The rules
//!
//! 1. **JSON.** The payload must be UTF-8 JSON. Anything serde_json rejects is
//!    `malformed_json`: invalid UTF-8 (anywhere, also inside fields we
//!    ignore), trailing garbage after the value, `NaN`/`Infinity` literals,
//!    comments, trailing commas, an empty or all-whitespace payload. A UTF-8
//!    byte order mark is not JSON whitespace (RFC 8259 says parsers *may*
//!    ignore it; serde_json does not), so a payload starting with a BOM is
//!    `malformed_json`: producers should not send one, and accepting it here
//!    would make the anomaly log disagree with every other consumer that
//!    uses a strict parser.
//! 2. **Nesting.** Arrays and objects nested deeper than [`MAX_NESTING`]
//!    (127, the depth at which serde_json stops when it builds values) are
//!    `malformed_json`, wherever they are. serde_json enforces that limit only
//!    when it builds values, not when it skips them, and we only skip; the
//!    explicit check keeps the verdict independent of which field holds the
//!    nesting, and in agreement with any consumer that builds the value.
//! 3. **Object.** Valid JSON whose top-level value is not an object is
//!    `not_an_object`.
//! 4. **Keys.** Duplicate keys: the last occurrence wins, as in JavaScript's
//!    `JSON.parse` and Python's `json`. Keys are compared after unescaping
//!    (`"event\u005fid"` is `event_id`) and are case-sensitive. Unknown keys
//!    are ignored. A value of `null` counts as absent.
//! 5. **Fields.** They are checked in this order and the first problem is the
//!    reason: `event_id`, `order_id`, `user_id`, `amount`, `event_time`,
//!    `city`, `category`.
//!    - `event_id`: a string of 1 to 128 Unicode scalar values (counted after
//!      unescaping). Absent: `missing_field:event_id`; another type, or
//!      empty, or longer: `bad_type:event_id`.
//!    - `order_id`: any string, even empty. Absent: `missing_field:order_id`;
//!      another type: `bad_type:order_id`.
//!    - `user_id`: a string, kept as is; or a JSON integer (no fraction, no
//!      exponent) of any length, kept as its literal decimal text (`-0`
//!      becomes `0`), so ids beyond `u64` survive exactly. Absent:
//!      `missing_field:user_id`; a float, bool, array or object:
//!      `bad_type:user_id`.
//!    - `amount`: a JSON number, or a string holding a number in the grammar
//!      of [`parse_amount_cents`]. Absent: `missing_field:amount`; a bool,
//!      array or object: `bad_type:amount`; a string that is not a number, a
//!      value with a non-zero digit beyond the cents, a negative non-zero
//!      value, or one above [`MAX_AMOUNT_CENTS`] (eighteen digits, so that a
//!      window's sum fits the sink's `Decimal(38, 2)`): `bad_amount`.
//!    - `event_time`: an RFC 3339 string (see [`crate::time`]) or integer epoch
//!      milliseconds (no fraction, no exponent, fits in `i64`), within
//!      [`MIN_EVENT_TIME_MS`]..=[`MAX_EVENT_TIME_MS`] (1970 to the end of
//!      2099, what ClickHouse `DateTime` can hold). Absent:
//!      `missing_field:event_time`; a bool, array or object:
//!      `bad_type:event_time`; any other string or number: `bad_event_time`.
//!    - `city`, `category`: optional strings (empty is kept as is); absent
//!      becomes `"unknown"`. Another type: `bad_type:city` /
//!      `bad_type:category`.
//! 6. **Strings** are decoded as JSON strings. An escape that names no
//!    Unicode scalar value (a lone surrogate such as `"\ud800"`) in a key or
//!    in a field we read is `malformed_json`, because the string cannot be
//!    represented; in the value of a field we ignore it is never decoded and
//!    passes.
//!
//! No input makes [`parse_event`] panic, and its cost is linear in the size
//! of the payload, whatever the payload.

use std::borrow::Cow;
use std::fmt;

pub use crate::time::{MAX_EVENT_TIME_MS, MIN_EVENT_TIME_MS};

mod amount;
mod fields;
mod scan;
#[cfg(test)]
mod tests;

pub use amount::{format_cents, parse_amount_cents};
use fields::parse_with_serde;
pub use fields::{Json, RawFields};
#[cfg(test)]
use scan::scan_object;
use scan::{scan_object_into, string_end, QuoteMask};

/// The largest amount of one order accepted, in cents: 9999999999999999.99,
/// eighteen digits (a `Decimal(18, 2)`). The sink's GMV column is
/// `Decimal(38, 2)`, so a window's sum of such amounts always fits.
pub const MAX_AMOUNT_CENTS: u64 = 999_999_999_999_999_999;

/// The deepest nesting of arrays and objects accepted (the top-level object
/// counts as 1). It is the depth serde_json itself refuses to exceed when it
/// builds values.
pub const MAX_NESTING: usize = 127;

/// The longest `event_id` accepted, in Unicode scalar values.
pub const MAX_EVENT_ID_CHARS: usize = 128;

/// What a missing `city` or `category` becomes.
pub const UNKNOWN: &str = "unknown";

/// A field of an order event, as named in the payload and in reasons.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Field {
    /// `event_id`: identifies the event, for deduplication.
    EventId,
    /// `order_id`.
    OrderId,
    /// `user_id`: counted distinct per window.
    UserId,
    /// `amount`: summed exactly per window.
    Amount,
    /// `event_time`: places the event in its windows.
    EventTime,
    /// `city`, optional.
    City,
    /// `category`, optional.
    Category,
}

impl Field {
    /// Every field, in the order the rules check them.
    pub const ALL: [Field; 7] = [
        Field::EventId,
        Field::OrderId,
        Field::UserId,
        Field::Amount,
        Field::EventTime,
        Field::City,
        Field::Category,
    ];

    /// The field's JSON key.
    pub fn name(self) -> &'static str {
        match self {
            Field::EventId => "event_id",
            Field::OrderId => "order_id",
            Field::UserId => "user_id",
            Field::Amount => "amount",
            Field::EventTime => "event_time",
            Field::City => "city",
            Field::Category => "category",
        }
    }

    /// The field whose JSON key is `name`, if any.
    pub fn from_name(name: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.name() == name)
    }
}

/// Why a payload is an anomaly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// Not UTF-8 JSON, or nested too deeply.
    MalformedJson,
    /// Valid JSON, but not an object.
    NotAnObject,
    /// A required field is absent or `null`.
    MissingField(Field),
    /// A field has the wrong JSON type (or, for `event_id`, length).
    BadType(Field),
    /// `amount` is not a number, not whole cents, negative, or too large.
    BadAmount,
    /// `event_time` is not a valid timestamp, or outside the accepted range.
    BadEventTime,
    /// Decided by the engine from the window settings: a window holding the
    /// event would start before 1970-01-01T00:00:00Z or end after
    /// 2106-02-07T06:28:15Z, which the sinks' `DateTime` columns cannot hold.
    EventTimeOutOfRange,
    /// Decided by the job before the engine: the event time is implausibly
    /// far ahead of the record's own timestamp, or a jump ahead of everything
    /// else the job has seen that the partition's next record contradicts
    /// (docs/semantics.md, "Wrong clocks").
    ImplausibleEventTime,
    /// Decided by the windows, not by [`parse_event`]: the event is later
    /// than the allowed lateness of every window it belongs to.
    LateEvent,
}

impl Reason {
    /// Every reason, in a stable order (useful for metrics and tests).
    pub const ALL: [Reason; 21] = [
        Reason::MalformedJson,
        Reason::NotAnObject,
        Reason::MissingField(Field::EventId),
        Reason::MissingField(Field::OrderId),
        Reason::MissingField(Field::UserId),
        Reason::MissingField(Field::Amount),
        Reason::MissingField(Field::EventTime),
        Reason::MissingField(Field::City),
        Reason::MissingField(Field::Category),
        Reason::BadType(Field::EventId),
        Reason::BadType(Field::OrderId),
        Reason::BadType(Field::UserId),
        Reason::BadType(Field::Amount),
        Reason::BadType(Field::EventTime),
        Reason::BadType(Field::City),
        Reason::BadType(Field::Category),
        Reason::BadAmount,
        Reason::BadEventTime,
        Reason::EventTimeOutOfRange,
        Reason::ImplausibleEventTime,
        Reason::LateEvent,
    ];

    /// The machine-readable reason, as written to the anomaly side output.
    pub fn as_str(&self) -> &'static str {
        // Spelled out so that every reason is a static string: the hot path
        // counts anomalies by this label without formatting anything.
        match self {
            Reason::MalformedJson => "malformed_json",
            Reason::NotAnObject => "not_an_object",
            Reason::MissingField(Field::EventId) => "missing_field:event_id",
            Reason::MissingField(Field::OrderId) => "missing_field:order_id",
            Reason::MissingField(Field::UserId) => "missing_field:user_id",
            Reason::MissingField(Field::Amount) => "missing_field:amount",
            Reason::MissingField(Field::EventTime) => "missing_field:event_time",
            Reason::MissingField(Field::City) => "missing_field:city",
            Reason::MissingField(Field::Category) => "missing_field:category",
            Reason::BadType(Field::EventId) => "bad_type:event_id",
            Reason::BadType(Field::OrderId) => "bad_type:order_id",
            Reason::BadType(Field::UserId) => "bad_type:user_id",
            Reason::BadType(Field::Amount) => "bad_type:amount",
            Reason::BadType(Field::EventTime) => "bad_type:event_time",
            Reason::BadType(Field::City) => "bad_type:city",
            Reason::BadType(Field::Category) => "bad_type:category",
            Reason::BadAmount => "bad_amount",
            Reason::BadEventTime => "bad_event_time",
            Reason::EventTimeOutOfRange => "event_time_out_of_range",
            Reason::ImplausibleEventTime => "implausible_event_time",
            Reason::LateEvent => "late_event",
        }
    }

    /// The reason whose [`as_str`](Reason::as_str) is `s`, if any.
    pub fn parse(s: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for Reason {}

/// A validated, cleaned order event, borrowing from its payload where it can.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event<'a> {
    /// 1 to 128 Unicode scalar values.
    pub event_id: Cow<'a, str>,
    /// Any string.
    pub order_id: Cow<'a, str>,
    /// Integer user ids are normalized to their decimal string, so `42` and
    /// `"42"` are the same user.
    pub user_id: Cow<'a, str>,
    /// Exact; there are no floats anywhere in the money path.
    pub amount_cents: u64,
    /// Epoch milliseconds UTC, within `MIN_EVENT_TIME_MS..=MAX_EVENT_TIME_MS`.
    pub event_time_ms: i64,
    /// `"unknown"` when missing or null.
    pub city: Cow<'a, str>,
    /// `"unknown"` when missing or null.
    pub category: Cow<'a, str>,
}

impl Event<'_> {
    /// The canonical JSON encoding: keys in field order, `event_time` as
    /// epoch milliseconds, `amount` as a number with exactly two decimals,
    /// `user_id` as a string. [`parse_event`] reads it back to an equal event.
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(
            160 + self.event_id.len()
                + self.order_id.len()
                + self.user_id.len()
                + self.city.len()
                + self.category.len(),
        );
        out.push_str("{\"event_id\":");
        push_json_string(&mut out, &self.event_id);
        out.push_str(",\"order_id\":");
        push_json_string(&mut out, &self.order_id);
        out.push_str(",\"user_id\":");
        push_json_string(&mut out, &self.user_id);
        out.push_str(",\"amount\":");
        out.push_str(&format_cents(u128::from(self.amount_cents)));
        out.push_str(",\"event_time\":");
        out.push_str(&self.event_time_ms.to_string());
        out.push_str(",\"city\":");
        push_json_string(&mut out, &self.city);
        out.push_str(",\"category\":");
        push_json_string(&mut out, &self.category);
        out.push('}');
        out
    }

    /// Detaches the event from its payload.
    pub fn into_owned(self) -> Event<'static> {
        Event {
            event_id: Cow::Owned(self.event_id.into_owned()),
            order_id: Cow::Owned(self.order_id.into_owned()),
            user_id: Cow::Owned(self.user_id.into_owned()),
            amount_cents: self.amount_cents,
            event_time_ms: self.event_time_ms,
            city: Cow::Owned(self.city.into_owned()),
            category: Cow::Owned(self.category.into_owned()),
        }
    }
}

/// Appends `s` as a JSON string literal, escaping only what JSON requires.
fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if u32::from(c) < 0x20 => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                let v = u32::from(c) as usize;
                out.push_str("\\u00");
                out.push(char::from(HEX[v >> 4]));
                out.push(char::from(HEX[v & 0xf]));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Parses one message value into an event, or says why it is an anomaly.
/// See the module docs for the rules.
pub fn parse_event(payload: &[u8]) -> Result<Event<'_>, Reason> {
    // A payload up to a kilobyte without control characters (nearly all)
    // is classified 16 bytes at a time: one vector pass finds where every
    // string starts and ends, and whether the payload is plain ASCII.
    let mut strings = QuoteMask::new();
    if strings.classify(payload) {
        let text = if strings.is_ascii() {
            // SAFETY: every byte of `payload` is below 0x80, and ASCII is
            // valid UTF-8.
            unsafe { std::str::from_utf8_unchecked(payload) }
        } else {
            simdutf8::basic::from_utf8(payload).map_err(|_| Reason::MalformedJson)?
        };
        let mut raw = RawFields::default();
        return if scan_object_into(text, |i| strings.string_end(i), &mut raw) {
            raw.validate()
        } else {
            parse_with_serde(text)
        };
    }
    // Validate the whole payload once up front (serde_json's slice reader
    // skips ignored strings without checking their UTF-8); the readers then
    // have only the JSON grammar left to check.
    let text = simdutf8::basic::from_utf8(payload).map_err(|_| Reason::MalformedJson)?;
    let b = text.as_bytes();
    let mut raw = RawFields::default();
    if scan_object_into(text, |i| string_end(b, i), &mut raw) {
        raw.validate()
    } else {
        parse_with_serde(text)
    }
}
