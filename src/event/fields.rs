//! The fields of a payload as found, and the rules that turn them into an
//! [`Event`] or a [`Reason`]; the general path through serde_json.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer as _, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::scan::nesting_exceeds;
use super::*;
use crate::time::parse_rfc3339_ms;

/// The general path: any JSON at all, through serde_json.
pub(super) fn parse_with_serde(text: &str) -> Result<Event<'_>, Reason> {
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

/// The last occurrence of each known field of a payload (`Null` when
/// absent), as a JSON reader found them, before the rules.
///
/// [`parse_event`] fills it with its own readers; it is public so that
/// other readers (the JSON crates `streamforge-tools bench parse` compares)
/// can be held to exactly the same rules through [`RawFields::validate`].
/// A reader must only fill it from a complete, valid JSON object (rules 1
/// to 4 of the module docs are the reader's part).
#[derive(Debug, PartialEq)]
pub struct RawFields<'a> {
    pub event_id: Json<'a>,
    pub order_id: Json<'a>,
    pub user_id: Json<'a>,
    pub amount: Json<'a>,
    pub event_time: Json<'a>,
    pub city: Json<'a>,
    pub category: Json<'a>,
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
    #[inline(always)]
    pub fn slot_named(&mut self, key: &[u8]) -> Option<&mut Json<'a>> {
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

    /// The slot of `field`.
    pub fn slot(&mut self, field: Field) -> &mut Json<'a> {
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

    /// Applies the field rules (rule 5 and 6 of the module docs), in order.
    pub fn validate(&self) -> Result<Event<'a>, Reason> {
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
pub enum Json<'a> {
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

#[inline]
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

#[inline]
fn required_string(value: Json<'_>, field: Field) -> Result<Cow<'_, str>, Reason> {
    string(required(value, field)?).ok_or(Reason::BadType(field))?
}

#[inline(always)]
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
    let mut rest = digits;
    // Eight digits at a time: an epoch-millisecond time has 13.
    while let Some((eight, tail)) = rest.split_first_chunk::<8>() {
        value = value * 100_000_000 + eight_digits(*eight)?;
        rest = tail;
    }
    for &c in rest {
        let digit = c.wrapping_sub(b'0');
        if digit > 9 {
            return None;
        }
        value = value * 10 + i64::from(digit);
    }
    Some(if negative { -value } else { value })
}

/// The value of eight ASCII digits, or `None` if any byte is not one: all
/// eight checked and combined in a handful of word operations.
#[inline]
fn eight_digits(bytes: [u8; 8]) -> Option<i64> {
    let word = u64::from_le_bytes(bytes);
    // Each byte is a digit exactly when its high nibble is 3 and adding 6
    // does not carry out of its low nibble.
    let all_digits = word & 0xF0F0_F0F0_F0F0_F0F0 == 0x3030_3030_3030_3030
        && word.wrapping_add(0x0606_0606_0606_0606) & 0xF0F0_F0F0_F0F0_F0F0
            == 0x3030_3030_3030_3030;
    if !all_digits {
        return None;
    }
    // Pairs, then fours, then all eight: the first byte is the most
    // significant digit.
    let mut v = word & 0x0F0F_0F0F_0F0F_0F0F;
    v = (v.wrapping_mul(10) + (v >> 8)) & 0x00FF_00FF_00FF_00FF;
    v = (v.wrapping_mul(100) + (v >> 16)) & 0x0000_FFFF_0000_FFFF;
    v = v.wrapping_mul(10_000) + (v >> 32);
    Some((v & 0xFFFF_FFFF) as i64)
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
    use super::parse_i64;
    use proptest::prelude::*;

    proptest! {
        /// The word-at-a-time reader agrees with the standard library on
        /// every integer literal, and refuses what is not one, wherever the
        /// stray byte is.
        #[test]
        fn parse_i64_is_the_standard_parse(n in any::<i64>(), width in 0usize..20, cut in 0usize..20, stray in 0u8..=255) {
            let text = format!("{n:0width$}");
            prop_assert_eq!(parse_i64(&text), text.parse::<i64>().ok());
            let mut bytes = text.clone().into_bytes();
            let at = cut % bytes.len();
            bytes[at] = stray;
            // The scanner only passes `-?[0-9]+`: a leading `+` never
            // reaches this reader (the long form defers to str::parse).
            prop_assume!(bytes[0] != b'+');
            if let Ok(broken) = std::str::from_utf8(&bytes) {
                let expected = broken.parse::<i64>().ok().filter(|_| !broken.starts_with('+'));
                prop_assert_eq!(parse_i64(broken), expected, "{:?}", broken);
            }
        }
    }
}
