//! The parser as it was at commit 3a7f460 (before issue 15), kept only so
//! that `bench parse` can measure it side by side with its successor and
//! the JSON crates in one run. Its readers are copied unchanged (the
//! canonical-layout reader, the flat-object reader and the serde_json
//! path); the rules they feed are the product's own
//! [`RawFields::validate`], which the change did not touch.
#![allow(dead_code)]

use std::fmt;

use serde::de::{self, Deserializer as _, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use streamforge::event::{Event, Field, Json, RawFields, Reason, MAX_NESTING};

/// `parse_event` as it was.
pub fn parse_event(payload: &[u8]) -> Result<Event<'_>, Reason> {
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
    let text = std::str::from_utf8(payload).map_err(|_| Reason::MalformedJson)?;
    let b = text.as_bytes();
    match scan_flat_object(text, |i| plain_string_end(b, i)) {
        Some(raw) => raw.validate(),
        None => parse_with_serde(text),
    }
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
        let mut fields = empty();
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
    let mut fields = empty();
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
