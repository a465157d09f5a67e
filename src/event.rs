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
//! - [`parse_event`]: the rules below, in order. Three readers find the
//!   fields, fastest first, each handing what it cannot read to the next:
//!   `scan_canonical` for the layout [`Event::to_json`] writes (fields in
//!   order, no whitespace, plain ASCII strings), `scan_flat_object` for any
//!   flat object without escapes, and serde_json for all the rest. Plain
//!   ASCII payloads are first classified 16 bytes at a time (SSE2 on
//!   x86_64), which finds every quote and proves the payload is UTF-8. The
//!   proptests hold the three to the same verdicts.
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
//!      value, or one above [`MAX_AMOUNT_CENTS`] (ClickHouse `Decimal(18, 2)`):
//!      `bad_amount`.
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

use serde::de::{self, Deserializer as _, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::time::{parse_rfc3339_ms, MAX_EVENT_TIME_MS, MIN_EVENT_TIME_MS};

/// The largest amount accepted, in cents: 9999999999999999.99, the maximum of
/// the sink's `Decimal(18, 2)` column.
pub const MAX_AMOUNT_CENTS: u64 = 999_999_999_999_999_999;

/// The deepest nesting of arrays and objects accepted (the top-level object
/// counts as 1). It is the depth serde_json itself refuses to exceed when it
/// builds values.
pub const MAX_NESTING: usize = 127;

/// The longest `event_id` accepted, in Unicode scalar values.
pub const MAX_EVENT_ID_CHARS: usize = 128;

/// What a missing `city` or `category` becomes.
pub const UNKNOWN: &str = "unknown";

/// The largest exponent magnitude accepted in an amount. No producer writes a
/// larger one: beyond it a value is either far outside `Decimal(18, 2)` or
/// padded with dozens of compensating zeros, so it is `bad_amount` even in
/// the odd case where it would come out whole cents (`0e41`).
const MAX_AMOUNT_EXPONENT: i64 = 40;

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

/// Formats cents as a decimal with exactly two places: `1250` is `"12.50"`,
/// `7` is `"0.07"`. Takes `u128` so that sums of many amounts format too.
pub fn format_cents(cents: u128) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

/// Parses a decimal amount into exact cents.
///
/// The grammar, for JSON numbers and numeric strings alike: an optional `-`,
/// one or more ASCII digits (leading zeros allowed), optionally `.` and one
/// or more digits, optionally `e` or `E`, an optional sign and one or more
/// digits, with an exponent of magnitude at most 40. Nothing else: no `+`
/// in front, no whitespace, no hex, no `NaN` or `Infinity`.
///
/// The value must be a whole number of cents (`1.230` and `1.5e1` are fine,
/// `1.234` and `1e-3` are not), at least zero (`-0` and `-0.00` are zero),
/// and at most [`MAX_AMOUNT_CENTS`]. Only integer arithmetic is used, so the
/// result is exact for inputs of any length.
pub fn parse_amount_cents(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    if let Some(cents) = plain_cents(b) {
        return Some(cents);
    }
    let (negative, rest) = match b.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, b),
    };
    let (int, rest) = split_digits(rest);
    if int.is_empty() {
        return None;
    }
    let (frac, rest) = match rest.split_first() {
        Some((b'.', after)) => {
            let (frac, rest) = split_digits(after);
            if frac.is_empty() {
                return None;
            }
            (frac, rest)
        }
        _ => (&[][..], rest),
    };
    let exponent = match rest.split_first() {
        None => 0,
        Some((b'e' | b'E', after)) => parse_exponent(after)?,
        Some(_) => return None,
    };

    // The digits of `int` then `frac` form one sequence; the digit at index
    // `i` stands for 10^place(i) cents. Only the span from the first to the
    // last non-zero digit matters, so arbitrarily many leading or trailing
    // zeros cost nothing.
    let digits = || int.iter().chain(frac);
    let Some(first) = digits().position(|&c| c != b'0') else {
        return Some(0); // all zeros, whatever the sign
    };
    let last = match frac.iter().rposition(|&c| c != b'0') {
        Some(j) => int.len() + j,
        None => int.iter().rposition(|&c| c != b'0')?,
    };
    let units_place = i64::try_from(int.len()).ok()? + exponent + 1;
    let place = |i: usize| Some(units_place - i64::try_from(i).ok()?);
    let (top, bottom) = (place(first)?, place(last)?);
    if bottom < 0 || top > 17 || negative {
        // A digit below the cents, a value of 10^18 cents or more, or a
        // negative non-zero amount.
        return None;
    }

    // At most 18 significant digits here, so this cannot overflow; checked
    // arithmetic all the same, because the money path must never wrap.
    let significant = digits()
        .skip(first)
        .take(last - first + 1)
        .try_fold(0u64, |acc, &c| {
            acc.checked_mul(10)?.checked_add(u64::from(c - b'0'))
        })?;
    let cents = significant.checked_mul(10u64.checked_pow(u32::try_from(bottom).ok()?)?)?;
    (cents <= MAX_AMOUNT_CENTS).then_some(cents)
}

/// The cents of an amount in the usual shape, `[0-9]{1,16}(.[0-9]{1,2})?`,
/// in one pass; `None` for any other shape, which the general grammar
/// decides. Sixteen integer digits and two decimals are at most
/// [`MAX_AMOUNT_CENTS`], so the value is always in range.
#[inline]
fn plain_cents(b: &[u8]) -> Option<u64> {
    let (int, frac) = match b.iter().position(|&c| c == b'.') {
        Some(point) => (b.get(..point)?, b.get(point + 1..)?),
        None => (b, &[][..]),
    };
    let point = int.len() < b.len();
    if int.is_empty() || int.len() > 16 || (point && frac.is_empty()) || frac.len() > 2 {
        return None;
    }
    let mut value = 0u64;
    for &c in int.iter().chain(frac) {
        let digit = c.wrapping_sub(b'0');
        if digit > 9 {
            return None;
        }
        value = value * 10 + u64::from(digit);
    }
    Some(match frac.len() {
        0 => value * 100,
        1 => value * 10,
        _ => value,
    })
}

/// Splits `b` after its leading ASCII digits.
fn split_digits(b: &[u8]) -> (&[u8], &[u8]) {
    let n = b.iter().take_while(|c| c.is_ascii_digit()).count();
    b.split_at(n)
}

/// Parses the part of an amount after `e`: an optional sign and one or more
/// digits, the whole rest of the text, of magnitude at most
/// [`MAX_AMOUNT_EXPONENT`].
fn parse_exponent(b: &[u8]) -> Option<i64> {
    let (negative, digits) = match b.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, b),
    };
    if digits.is_empty() {
        return None;
    }
    let magnitude = digits.iter().try_fold(0i64, |acc, &c| {
        let acc = acc * 10 + i64::from(c.is_ascii_digit().then(|| c - b'0')?);
        // Stopping early keeps a long run of digits from overflowing.
        (acc <= MAX_AMOUNT_EXPONENT).then_some(acc)
    })?;
    Some(if negative { -magnitude } else { magnitude })
}

/// Parses one message value into an event, or says why it is an anomaly.
/// See the module docs for the rules.
pub fn parse_event(payload: &[u8]) -> Result<Event<'_>, Reason> {
    // The usual payload is short, plain ASCII: no escape, no control
    // character. One vector pass proves that and finds every quote, so it
    // needs no UTF-8 check and no string scan.
    if let Some(quotes) = QuoteMask::of_plain_ascii(payload) {
        // SAFETY: `of_plain_ascii` returns a mask only when every byte of
        // `payload` is below 0x80, and ASCII is valid UTF-8.
        let text = unsafe { std::str::from_utf8_unchecked(payload) };
        let raw = scan_canonical(text, &quotes)
            .or_else(|| scan_flat_object(text, |i| quotes.next_from(i)));
        return match raw {
            Some(raw) => raw.validate(),
            None => parse_with_serde(text),
        };
    }
    // serde_json's slice reader skips ignored strings without checking their
    // UTF-8, so validate the whole payload once up front; its string reader
    // (and the flat scanner) then have nothing left to check.
    let text = std::str::from_utf8(payload).map_err(|_| Reason::MalformedJson)?;
    let b = text.as_bytes();
    match scan_flat_object(text, |i| plain_string_end(b, i)) {
        Some(raw) => raw.validate(),
        None => parse_with_serde(text),
    }
}

/// Where the quotes of a short, plain ASCII payload are, one bit per byte.
struct QuoteMask([u64; QuoteMask::WORDS]);

impl QuoteMask {
    const WORDS: usize = 8;
    /// The longest payload the mask covers; longer ones take the scalar
    /// path.
    const MAX_LEN: usize = 64 * Self::WORDS;

    /// The quote positions of `b`, if `b` is at most [`Self::MAX_LEN`]
    /// bytes with none below 0x20 (control), none at or above 0x80 (not
    /// ASCII) and no backslash. In such a payload the first quote after an
    /// opening quote closes the string: that is all the scanner needs.
    #[inline]
    fn of_plain_ascii(b: &[u8]) -> Option<QuoteMask> {
        if b.len() > Self::MAX_LEN {
            return None;
        }
        let mut quotes = [0u64; Self::WORDS];
        let mut unusual = 0u32;
        let mut chunks = b.chunks_exact(16);
        let mut at = 0;
        for chunk in chunks.by_ref() {
            let (q, u) = classify16(chunk.try_into().expect("16 bytes"));
            quotes[at / 64] |= u64::from(q) << (at % 64);
            unusual |= u;
            at += 16;
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            // Padded with spaces, which are neither quotes nor unusual.
            let mut last = [b' '; 16];
            last[..rest.len()].copy_from_slice(rest);
            let (q, u) = classify16(&last);
            quotes[at / 64] |= u64::from(q) << (at % 64);
            unusual |= u;
        }
        (unusual == 0).then_some(QuoteMask(quotes))
    }

    /// The index of the first quote at or after `i`.
    #[inline]
    fn next_from(&self, i: usize) -> Option<usize> {
        let mut word = i / 64;
        let mut bits = *self.0.get(word)? & (u64::MAX << (i % 64));
        while bits == 0 {
            word += 1;
            bits = *self.0.get(word)?;
        }
        Some(word * 64 + bits.trailing_zeros() as usize)
    }
}

/// For 16 bytes: a bit per quote, and a bit per byte that is a backslash,
/// a control character or not ASCII.
#[cfg(target_arch = "x86_64")]
#[inline]
fn classify16(bytes: &[u8; 16]) -> (u16, u32) {
    // SAFETY: SSE2 is part of the x86_64 baseline: every x86_64 CPU has it.
    unsafe { classify16_sse2(bytes) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse2")]
fn classify16_sse2(bytes: &[u8; 16]) -> (u16, u32) {
    use std::arch::x86_64::*;
    let x = _mm_set_epi64x(
        i64::from_le_bytes(bytes[8..].try_into().expect("8 bytes")),
        i64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")),
    );
    let quotes = _mm_movemask_epi8(_mm_cmpeq_epi8(x, _mm_set1_epi8(b'"' as i8)));
    // Signed compare: bytes of 0x80 and up are negative, so "below 0x20"
    // also catches every byte that is not ASCII.
    let unusual = _mm_or_si128(
        _mm_cmpeq_epi8(x, _mm_set1_epi8(b'\\' as i8)),
        _mm_cmplt_epi8(x, _mm_set1_epi8(0x20)),
    );
    (quotes as u16, _mm_movemask_epi8(unusual) as u32)
}

/// The portable form of the SSE2 [`classify16`], with the same results.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
fn classify16_scalar(bytes: &[u8; 16]) -> (u16, u32) {
    let (mut quotes, mut unusual) = (0u16, 0u32);
    for (j, &c) in bytes.iter().enumerate() {
        quotes |= u16::from(c == b'"') << j;
        unusual |= u32::from(c == b'\\' || !(0x20..0x80).contains(&c)) << j;
    }
    (quotes, unusual)
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn classify16(bytes: &[u8; 16]) -> (u16, u32) {
    classify16_scalar(bytes)
}

/// The general path: any JSON at all, through serde_json.
fn parse_with_serde(text: &str) -> Result<Event<'_>, Reason> {
    if nesting_exceeds(text.as_bytes(), MAX_NESTING) {
        return Err(Reason::MalformedJson);
    }
    let first = text
        .bytes()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
    if first != Some(b'{') {
        return Err(match serde_json::from_str::<IgnoredAny>(text) {
            Ok(_) => Reason::NotAnObject,
            Err(_) => Reason::MalformedJson,
        });
    }

    let mut de = serde_json::Deserializer::from_str(text);
    let raw = (&mut de)
        .deserialize_map(RawFieldsVisitor)
        .map_err(|_| Reason::MalformedJson)?;
    de.end().map_err(|_| Reason::MalformedJson)?;
    raw.validate()
}

/// The fastest path, for the layout [`Event::to_json`] writes (and so
/// `produce` and the generator, and any producer that writes a fixed schema
/// in field order): every field once, in field order, no whitespace, plain
/// strings, `user_id` a string and `amount` and `event_time` numbers.
///
/// It checks the punctuation and keys between the values as whole
/// literals, and takes each string's end from `quotes`. It returns what
/// [`scan_flat_object`] would for such a payload, and `None` for any other
/// (which the flat scanner then reads), so it never changes a verdict.
fn scan_canonical<'a>(text: &'a str, quotes: &QuoteMask) -> Option<RawFields<'a>> {
    let mut c = Cursor { text, at: 0 };
    c.literal(b"{\"event_id\":\"")?;
    let event_id = c.string(quotes)?;
    c.literal(b"\",\"order_id\":\"")?;
    let order_id = c.string(quotes)?;
    c.literal(b"\",\"user_id\":\"")?;
    let user_id = c.string(quotes)?;
    c.literal(b"\",\"amount\":")?;
    let amount = c.number()?;
    c.literal(b",\"event_time\":")?;
    let event_time = c.number()?;
    c.literal(b",\"city\":\"")?;
    let city = c.string(quotes)?;
    c.literal(b"\",\"category\":\"")?;
    let category = c.string(quotes)?;
    c.literal(b"\"}")?;
    (c.at == text.len()).then_some(RawFields {
        event_id,
        order_id,
        user_id,
        amount,
        event_time,
        city,
        category,
    })
}

/// A read position in a payload, for [`scan_canonical`].
struct Cursor<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Cursor<'a> {
    /// Steps over `expected`, if the text continues with it.
    #[inline]
    fn literal(&mut self, expected: &[u8]) -> Option<()> {
        let end = self.at + expected.len();
        (self.text.as_bytes().get(self.at..end)? == expected).then(|| self.at = end)
    }

    /// The content of a string that starts here (after its opening quote),
    /// up to its closing quote, which stays ahead of the cursor.
    #[inline]
    fn string(&mut self, quotes: &QuoteMask) -> Option<Json<'a>> {
        let end = quotes.next_from(self.at)?;
        let s = self.text.get(self.at..end)?;
        self.at = end;
        Some(Json::Plain(s))
    }

    /// A number literal that starts here.
    #[inline]
    fn number(&mut self) -> Option<Json<'a>> {
        let (end, integer) = number_end(self.text.as_bytes(), self.at)?;
        let n = self.text.get(self.at..end)?;
        self.at = end;
        Some(Json::Number { text: n, integer })
    }
}

/// The fast path, for what producers actually send: one flat object whose
/// keys are unescaped strings and whose values are unescaped strings,
/// numbers, `true`, `false` or `null`.
///
/// Returns the fields exactly as serde_json would have found them, but only
/// when `text` is a complete, valid JSON document of that shape. For
/// anything else (an escape, a nested value, any syntax error, trailing
/// bytes) it returns `None` and the general path decides, so the verdict
/// never depends on which path ran. `text` is already known to be UTF-8, so
/// only the JSON grammar is checked here.
///
/// `string_end(i)` is [`plain_string_end`] of the string whose content
/// starts at `i`: the index of its closing quote, or `None` when the string
/// holds an escape or a control character, or is not closed.
fn scan_flat_object(
    text: &str,
    string_end: impl Fn(usize) -> Option<usize>,
) -> Option<RawFields<'_>> {
    let b = text.as_bytes();
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_ws(b, i + 1);
    let mut fields = RawFields::default();
    if b.get(i) == Some(&b'}') {
        i += 1;
    } else {
        loop {
            if b.get(i) != Some(&b'"') {
                return None;
            }
            let key_end = string_end(i + 1)?;
            let key = b.get(i + 1..key_end)?;
            i = skip_ws(b, key_end + 1);
            if b.get(i) != Some(&b':') {
                return None;
            }
            let start = skip_ws(b, i + 1);
            let (value, end) = match b.get(start)? {
                b'"' => {
                    let end = string_end(start + 1)?;
                    // The quotes are ASCII, so the slice is on char
                    // boundaries; `get` checks that all the same.
                    (Json::Plain(text.get(start + 1..end)?), end + 1)
                }
                b'-' | b'0'..=b'9' => {
                    let (end, integer) = number_end(b, start)?;
                    let n = text.get(start..end)?;
                    (Json::Number { text: n, integer }, end)
                }
                b't' => (Json::Other, literal_end(b, start, b"true")?),
                b'f' => (Json::Other, literal_end(b, start, b"false")?),
                b'n' => (Json::Null, literal_end(b, start, b"null")?),
                _ => return None,
            };
            if let Some(slot) = fields.slot_named(key) {
                // Last occurrence wins; a later null erases an earlier value.
                *slot = value;
            }
            i = skip_ws(b, end);
            match b.get(i) {
                Some(b',') => i = skip_ws(b, i + 1),
                Some(b'}') => {
                    i += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    (skip_ws(b, i) == b.len()).then_some(fields)
}

/// The index of the first byte at or after `i` that is not JSON whitespace.
#[inline]
fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = b.get(i) {
        i += 1;
    }
    i
}

/// The index of the closing quote of a string whose content starts at `i`,
/// if the content has no escape and no control character (which JSON
/// forbids unescaped).
#[inline]
fn plain_string_end(b: &[u8], mut i: usize) -> Option<usize> {
    // Eight bytes at a time: flag every byte that is a quote, a backslash
    // or below 0x20. The lowest flag of each test is exact (false flags
    // only ever sit above a true one), so the lowest flag overall is the
    // first special byte.
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let zero_bytes = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    while let Some(chunk) = b.get(i..i + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word);
        let special = zero_bytes(x ^ (ONES * u64::from(b'"')))
            | zero_bytes(x ^ (ONES * u64::from(b'\\')))
            | (x.wrapping_sub(ONES * 0x20) & !x & HIGHS);
        if special != 0 {
            i += (special.trailing_zeros() / 8) as usize;
            return (b.get(i) == Some(&b'"')).then_some(i);
        }
        i += 8;
    }
    loop {
        match *b.get(i)? {
            b'"' => return Some(i),
            b'\\' | 0..=0x1f => return None,
            _ => i += 1,
        }
    }
}

#[inline]
fn literal_end(b: &[u8], i: usize, literal: &[u8]) -> Option<usize> {
    let end = i.checked_add(literal.len())?;
    (b.get(i..end)? == literal).then_some(end)
}

/// The end of a JSON number starting at `i` (`-?(0|[1-9][0-9]*)`, then
/// optionally `.[0-9]+`, then optionally `[eE][+-]?[0-9]+`), and whether it
/// is an integer (no fraction, no exponent).
#[inline]
fn number_end(b: &[u8], mut i: usize) -> Option<(usize, bool)> {
    let digits_end = |mut i: usize| {
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        i
    };
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    match b.get(i)? {
        b'0' => i += 1,
        b'1'..=b'9' => i = digits_end(i + 1),
        _ => return None,
    }
    let mut integer = true;
    if b.get(i) == Some(&b'.') {
        let end = digits_end(i + 1);
        if end == i + 1 {
            return None;
        }
        i = end;
        integer = false;
    }
    if let Some(b'e' | b'E') = b.get(i) {
        i += 1;
        if let Some(b'+' | b'-') = b.get(i) {
            i += 1;
        }
        let end = digits_end(i);
        if end == i {
            return None;
        }
        i = end;
        integer = false;
    }
    Some((i, integer))
}

/// Whether arrays and objects in `text` nest deeper than `limit`.
fn nesting_exceeds(text: &[u8], limit: usize) -> bool {
    // Nesting needs at least `limit + 1` opening brackets, and counting them
    // is a fast, branch-free pass; typical events stop here.
    let openers = text.iter().filter(|&&b| b == b'[' || b == b'{').count();
    if openers <= limit {
        return false;
    }
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in text {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else {
            match b {
                b'"' => in_string = true,
                b'[' | b'{' => {
                    depth += 1;
                    if depth > limit {
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

/// The last occurrence of each known field (`Null` when absent).
#[derive(Debug, PartialEq)]
struct RawFields<'a> {
    event_id: Json<'a>,
    order_id: Json<'a>,
    user_id: Json<'a>,
    amount: Json<'a>,
    event_time: Json<'a>,
    city: Json<'a>,
    category: Json<'a>,
}

impl Default for RawFields<'_> {
    fn default() -> Self {
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
}

impl<'a> RawFields<'a> {
    /// The slot of the field whose key is `key` (unescaped), if any.
    #[inline]
    fn slot_named(&mut self, key: &[u8]) -> Option<&mut Json<'a>> {
        // By length first, so that at most three keys are compared.
        Some(match key.len() {
            4 if key == b"city" => &mut self.city,
            6 if key == b"amount" => &mut self.amount,
            7 if key == b"user_id" => &mut self.user_id,
            8 if key == b"event_id" => &mut self.event_id,
            8 if key == b"order_id" => &mut self.order_id,
            8 if key == b"category" => &mut self.category,
            10 if key == b"event_time" => &mut self.event_time,
            _ => return None,
        })
    }

    fn slot(&mut self, field: Field) -> &mut Json<'a> {
        match field {
            Field::EventId => &mut self.event_id,
            Field::OrderId => &mut self.order_id,
            Field::UserId => &mut self.user_id,
            Field::Amount => &mut self.amount,
            Field::EventTime => &mut self.event_time,
            Field::City => &mut self.city,
            Field::Category => &mut self.category,
        }
    }

    /// Applies the field rules, in order.
    fn validate(self) -> Result<Event<'a>, Reason> {
        use Field::*;

        let event_id = required_string(self.event_id, EventId)?;
        // Bytes bound chars from above, so most ids skip the count.
        let id_len_ok = (1..=MAX_EVENT_ID_CHARS).contains(&event_id.len())
            || (!event_id.is_empty() && event_id.chars().nth(MAX_EVENT_ID_CHARS).is_none());
        if !id_len_ok {
            return Err(Reason::BadType(EventId));
        }

        let order_id = required_string(self.order_id, OrderId)?;

        let user_id = match required(self.user_id, UserId)? {
            Json::Number {
                text: "-0",
                integer: true,
            } => Cow::Borrowed("0"),
            Json::Number {
                text,
                integer: true,
            } => Cow::Borrowed(text),
            value => string(value).ok_or(Reason::BadType(UserId))??,
        };

        let amount_cents = match required(self.amount, Amount)? {
            Json::Number { text, .. } => parse_amount_cents(text),
            value => parse_amount_cents(&string(value).ok_or(Reason::BadType(Amount))??),
        }
        .ok_or(Reason::BadAmount)?;

        let event_time_ms = match required(self.event_time, EventTime)? {
            Json::Number {
                text,
                integer: true,
            } => parse_i64(text),
            Json::Number { .. } => None,
            value => parse_rfc3339_ms(&string(value).ok_or(Reason::BadType(EventTime))??),
        }
        .filter(|ms| (MIN_EVENT_TIME_MS..=MAX_EVENT_TIME_MS).contains(ms))
        .ok_or(Reason::BadEventTime)?;

        let city = optional_string(self.city, City)?;
        let category = optional_string(self.category, Category)?;

        Ok(Event {
            event_id,
            order_id,
            user_id,
            amount_cents,
            event_time_ms,
            city,
            category,
        })
    }
}

/// A JSON value, as far as the rules care.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Json<'a> {
    /// `null`, or the field is absent.
    Null,
    /// A string literal without escapes: its text between the quotes.
    Plain(&'a str),
    /// A string literal that may hold escapes: quotes and escapes included.
    Escaped(&'a str),
    /// A number literal, and whether it is an integer (no fraction, no
    /// exponent).
    Number { text: &'a str, integer: bool },
    /// `true`, `false`, an array or an object.
    Other,
}

/// Classifies the raw text of a value serde_json has already validated, so
/// the first byte decides the type.
fn classify(text: &str) -> Json<'_> {
    match text.as_bytes().first() {
        Some(b'"') if !text.contains('\\') => text
            .strip_prefix('"')
            .and_then(|s| s.strip_suffix('"'))
            .map_or(Json::Escaped(text), Json::Plain),
        Some(b'"') => Json::Escaped(text),
        Some(b'-' | b'0'..=b'9') => Json::Number {
            text,
            integer: !text.bytes().any(|b| matches!(b, b'.' | b'e' | b'E')),
        },
        _ if text == "null" => Json::Null,
        _ => Json::Other,
    }
}

fn required(value: Json<'_>, field: Field) -> Result<Json<'_>, Reason> {
    match value {
        Json::Null => Err(Reason::MissingField(field)),
        value => Ok(value),
    }
}

/// The decoded string, or `None` when `value` is not a string.
#[inline]
fn string(value: Json<'_>) -> Option<Result<Cow<'_, str>, Reason>> {
    match value {
        Json::Plain(s) => Some(Ok(Cow::Borrowed(s))),
        Json::Escaped(literal) => Some(decode_escaped(literal)),
        _ => None,
    }
}

fn required_string(value: Json<'_>, field: Field) -> Result<Cow<'_, str>, Reason> {
    string(required(value, field)?).ok_or(Reason::BadType(field))?
}

fn optional_string(value: Json<'_>, field: Field) -> Result<Cow<'_, str>, Reason> {
    match value {
        Json::Null => Ok(Cow::Borrowed(UNKNOWN)),
        value => string(value).ok_or(Reason::BadType(field))?,
    }
}

/// Decodes a JSON string literal that may hold escapes.
fn decode_escaped(literal: &str) -> Result<Cow<'_, str>, Reason> {
    // Fails only for escapes that name no Unicode scalar value (lone
    // surrogates), which serde_json accepted while skipping the value.
    serde_json::from_str::<String>(literal)
        .map(Cow::Owned)
        .map_err(|_| Reason::MalformedJson)
}

/// `text.parse::<i64>()` for a JSON integer literal (`-?[0-9]+`), without
/// the general parser's overhead for the usual 13 digits.
#[inline]
fn parse_i64(text: &str) -> Option<i64> {
    let (negative, digits) = match text.as_bytes().split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text.as_bytes()),
    };
    // 18 digits always fit in an i64; anything longer takes the slow way.
    if digits.is_empty() || digits.len() > 18 {
        return text.parse().ok();
    }
    let mut value = 0i64;
    for &c in digits {
        let digit = c.wrapping_sub(b'0');
        if digit > 9 {
            return None;
        }
        value = value * 10 + i64::from(digit);
    }
    Some(if negative { -value } else { value })
}

/// An object key, reduced to the field it names. Decoding keys through a
/// visitor rather than into a string means escaped keys match their field
/// and no key is ever allocated.
enum Key {
    Known(Field),
    Other,
}

impl<'de> de::Deserialize<'de> for Key {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;

        impl Visitor<'_> for KeyVisitor {
            type Value = Key;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }

            fn visit_str<E: de::Error>(self, key: &str) -> Result<Key, E> {
                Ok(Field::from_name(key).map_or(Key::Other, Key::Known))
            }
        }

        deserializer.deserialize_identifier(KeyVisitor)
    }
}

struct RawFieldsVisitor;

impl<'de> Visitor<'de> for RawFieldsVisitor {
    type Value = RawFields<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an order event object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = RawFields::default();
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Known(field) => {
                    let raw: &'de RawValue = map.next_value()?;
                    // Overwriting gives "last occurrence wins", and a later
                    // null erases an earlier value, as it would in a JS object.
                    *fields.slot(field) = classify(raw.get());
                }
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
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
                    'a', 'Z', '0', ' ', '"', '\\', '/', '\n', '\t', '\u{0}', '\u{1f}', '\u{7f}',
                    'é', '東', '😀', '\u{feff}', '\u{2028}'
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
            // A JSON number and the same text in a string agree.
            let payload = with(&[("amount", Some(&text))]);
            prop_assert_eq!(parse_event(payload.as_bytes()).map(|e| e.amount_cents), Ok(cents));
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

        /// The flat-object fast path never changes a verdict: whatever it
        /// decides, the general path decides the same.
        #[test]
        fn fast_path_agrees_with_the_general_path(
            text in flat_object_text(),
            mutations in prop::collection::vec(mutation(), 0..3),
        ) {
            let bytes = apply(text.into_bytes(), &mutations);
            prop_assert_eq!(parse_event(&bytes), general_verdict(&bytes));
        }

        #[test]
        fn fast_path_agrees_on_mutated_events(
            event in any_event(),
            mutations in prop::collection::vec(mutation(), 0..4),
        ) {
            let bytes = apply(event.to_json().into_bytes(), &mutations);
            prop_assert_eq!(parse_event(&bytes), general_verdict(&bytes));
        }

        #[test]
        fn fast_path_agrees_on_any_bytes(bytes in prop::collection::vec(interesting_byte(), 0..300)) {
            prop_assert_eq!(parse_event(&bytes), general_verdict(&bytes));
        }
    }

    /// Events as a producer with a fixed schema writes them: plain ASCII
    /// strings (no quote, backslash or control character), in field order.
    fn plain_event() -> impl Strategy<Value = Event<'static>> {
        let plain = |max: usize| {
            prop::string::string_regex(&format!("[ -!#-\\[\\]-~]{{0,{max}}}")).unwrap()
        };
        (
            prop::string::string_regex("[ -!#-\\[\\]-~]{1,128}").unwrap(),
            plain(40),
            plain(40),
            0..=MAX_AMOUNT_CENTS,
            MIN_EVENT_TIME_MS..=MAX_EVENT_TIME_MS,
            plain(40),
            plain(40),
        )
            .prop_map(event_of)
    }

    /// The flat scanner on the scalar string scan, as for a payload that is
    /// not plain ASCII.
    fn scalar_flat_scan(text: &str) -> Option<RawFields<'_>> {
        scan_flat_object(text, |i| plain_string_end(text.as_bytes(), i))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        #[test]
        fn the_sse2_byte_classes_are_the_scalar_ones(bytes in prop::array::uniform16(interesting_byte())) {
            prop_assert_eq!(classify16(&bytes), classify16_scalar(&bytes));
        }

        /// The mask marks exactly the quotes, and is refused exactly for
        /// payloads too long or holding a byte the fast path cannot take.
        #[test]
        fn the_quote_mask_marks_every_quote(
            bytes in prop_oneof![
                prop::collection::vec(interesting_byte(), 0..600),
                prop::collection::vec(prop::sample::select(b"ab\" :,{}".to_vec()), 0..600),
            ],
        ) {
            let plain = bytes.len() <= QuoteMask::MAX_LEN
                && bytes.iter().all(|&c| (0x20..0x80).contains(&c) && c != b'\\');
            let mask = QuoteMask::of_plain_ascii(&bytes);
            prop_assert_eq!(mask.is_some(), plain);
            if let Some(mask) = mask {
                for i in 0..=bytes.len() {
                    let next = bytes[i..].iter().position(|&c| c == b'"').map(|j| i + j);
                    prop_assert_eq!(mask.next_from(i), next, "from {}", i);
                }
            }
        }

        /// The canonical scanner takes every plain event in the layout
        /// `to_json` writes, and reads it exactly as the flat scanner does.
        #[test]
        fn the_canonical_layout_reads_as_the_flat_scanner_reads_it(event in plain_event()) {
            let json = event.to_json();
            let quotes = QuoteMask::of_plain_ascii(json.as_bytes());
            prop_assert!(quotes.is_some(), "{}", json);
            let canonical = scan_canonical(&json, &quotes.unwrap());
            prop_assert!(canonical.is_some(), "{}", json);
            prop_assert_eq!(&canonical, &scalar_flat_scan(&json));
            prop_assert_eq!(parse_event(json.as_bytes()), Ok(event));
        }

        /// Whatever the canonical scanner accepts after a mutation, the
        /// flat scanner reads the same way.
        #[test]
        fn the_canonical_scanner_never_reads_differently(
            event in plain_event(),
            mutations in prop::collection::vec(mutation(), 1..4),
        ) {
            let bytes = apply(event.to_json().into_bytes(), &mutations);
            if let Some(quotes) = QuoteMask::of_plain_ascii(&bytes) {
                let text = std::str::from_utf8(&bytes).unwrap();
                if let Some(raw) = scan_canonical(text, &quotes) {
                    prop_assert_eq!(Some(raw), scalar_flat_scan(text));
                }
            }
            prop_assert_eq!(parse_event(&bytes), general_verdict(&bytes));
        }
    }
}
