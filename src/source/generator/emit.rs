//! How producers' serializers write JSON values: layout, escapes, RFC 3339
//! text and amounts, for the payload styles in [`super::style`].

use std::fmt::Write as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Digits {
    /// Exactly this many fraction digits (0 drops the fraction).
    Fixed(u32),
    /// Nanoseconds with trailing zeros trimmed, no fraction when zero (Go).
    GoTrimmed,
    /// Microseconds, no fraction when zero (Python's `isoformat`).
    PythonMicros,
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// RFC 3339 text for the instant `sub_ns` (0..1_000_000) nanoseconds
/// after the epoch millisecond `ms`, in a clock `offset_min` minutes east
/// of UTC (`Z` for 0 unless `plus_zero`), with `digits` fraction digits.
pub(super) fn rfc3339(
    ms: i64,
    sub_ns: u32,
    offset_min: i32,
    plus_zero: bool,
    digits: Digits,
) -> String {
    let local_ms = ms + i64::from(offset_min) * 60_000;
    let secs = local_ms.div_euclid(1000);
    let nanos = local_ms.rem_euclid(1000) as u32 * 1_000_000 + sub_ns;
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    let mut s = format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    );
    let fraction = format!("{nanos:09}");
    match digits {
        Digits::Fixed(0) => {}
        Digits::Fixed(n) => {
            let _ = write!(s, ".{}", &fraction[..n as usize]);
        }
        Digits::GoTrimmed if nanos > 0 => {
            let _ = write!(s, ".{}", fraction.trim_end_matches('0'));
        }
        Digits::PythonMicros if nanos >= 1000 => {
            let _ = write!(s, ".{}", &fraction[..6]);
        }
        Digits::GoTrimmed | Digits::PythonMicros => {}
    }
    if offset_min == 0 && !plus_zero {
        s.push('Z');
    } else {
        let sign = if offset_min < 0 { '-' } else { '+' };
        let m = offset_min.unsigned_abs();
        let _ = write!(s, "{sign}{:02}:{:02}", m / 60, m % 60);
    }
    s
}

/// A JSON value as a producer builds it.
#[derive(Debug, Clone)]
pub(super) enum V {
    Str(String),
    /// A number literal, written as is.
    Num(String),
    Bool(bool),
    Null,
    Obj(Vec<(&'static str, V)>),
    Arr(Vec<V>),
}

pub(super) fn s(text: impl Into<String>) -> V {
    V::Str(text.into())
}

pub(super) fn n(text: impl ToString) -> V {
    V::Num(text.to_string())
}

/// How a producer's serializer lays out and escapes JSON.
pub(super) struct Layout {
    pub comma: &'static str,
    pub colon: &'static str,
    /// A space inside every non-empty `{}` and `[]`.
    pub pad: bool,
    /// Everything above U+007F as `\uXXXX` (Python's `ensure_ascii`).
    pub ascii: bool,
    /// `<`, `>`, `&`, U+2028, U+2029 as `\uXXXX` (Go).
    pub html: bool,
}

pub(super) const COMPACT: Layout = Layout {
    comma: ",",
    colon: ":",
    pad: false,
    ascii: false,
    html: false,
};

fn push_u(out: &mut Vec<u8>, unit: u32) {
    let _ = write!(Utf8(out), "\\u{unit:04x}");
}

/// `std::fmt::Write` into a byte buffer.
struct Utf8<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Utf8<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// `text` as a JSON string the way `layout`'s serializer writes it. Runs
/// of bytes that need no escape (nearly all of a payload) are copied whole;
/// only the characters that do go through [`emit_char`].
fn emit_str(text: &str, layout: &Layout, out: &mut Vec<u8>) {
    out.push(b'"');
    let bytes = text.as_bytes();
    let mut run = 0;
    let mut i = 0;
    while i < bytes.len() {
        if !needs_care(bytes[i], layout) {
            i += 1;
            continue;
        }
        out.extend_from_slice(&bytes[run..i]);
        // `i` is a char boundary: it ends a run of whole ASCII characters
        // and whole characters (a lead byte only stops a run).
        let c = text[i..].chars().next().expect("a character starts here");
        emit_char(c, layout, out);
        i += c.len_utf8();
        run = i;
    }
    out.extend_from_slice(&bytes[run..]);
    out.push(b'"');
}

/// Whether the byte may start a character that `layout` escapes: quote,
/// backslash, control characters, and (by layout) `<`, `>`, `&`, every
/// non-ASCII lead byte (`ascii`) or the lead byte of U+2028/U+2029
/// (`html`). Continuation bytes never need it: their character's lead byte
/// decided.
#[inline]
fn needs_care(b: u8, layout: &Layout) -> bool {
    match b {
        b'"' | b'\\' | 0..=0x1f => true,
        b'<' | b'>' | b'&' => layout.html,
        // U+2028 and U+2029 start with 0xE2; so do other characters.
        0xE2 => layout.html || layout.ascii,
        0xC0.. => layout.ascii,
        _ => false,
    }
}

/// One character as `layout`'s serializer writes it inside a string.
fn emit_char(c: char, layout: &Layout, out: &mut Vec<u8>) {
    match c {
        '"' => out.extend_from_slice(b"\\\""),
        '\\' => out.extend_from_slice(b"\\\\"),
        '\n' => out.extend_from_slice(b"\\n"),
        '\r' => out.extend_from_slice(b"\\r"),
        '\t' => out.extend_from_slice(b"\\t"),
        c if (c as u32) < 0x20 => push_u(out, c as u32),
        '<' | '>' | '&' | '\u{2028}' | '\u{2029}' if layout.html => push_u(out, c as u32),
        c if layout.ascii && (c as u32) > 0x7f => {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                push_u(out, u32::from(*unit));
            }
        }
        c => {
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        }
    }
}

fn pad(layout: &Layout, out: &mut Vec<u8>) {
    if layout.pad {
        out.push(b' ');
    }
}

pub(super) fn emit(v: &V, layout: &Layout, out: &mut Vec<u8>) {
    match v {
        V::Str(text) => emit_str(text, layout, out),
        V::Num(text) => out.extend_from_slice(text.as_bytes()),
        V::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        V::Null => out.extend_from_slice(b"null"),
        V::Obj(members) => {
            out.push(b'{');
            for (i, (key, value)) in members.iter().enumerate() {
                out.extend_from_slice(if i > 0 { layout.comma } else { "" }.as_bytes());
                pad(layout, out);
                emit_str(key, layout, out);
                out.extend_from_slice(layout.colon.as_bytes());
                emit(value, layout, out);
            }
            if !members.is_empty() {
                pad(layout, out);
            }
            out.push(b'}');
        }
        V::Arr(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                out.extend_from_slice(if i > 0 { layout.comma } else { "" }.as_bytes());
                pad(layout, out);
                emit(item, layout, out);
            }
            if !items.is_empty() {
                pad(layout, out);
            }
            out.push(b']');
        }
    }
}

/// Cents as a float's shortest text: `12.5`, `19.99`, and for whole
/// amounts `100.0` (Python's `repr`) or `100` (JavaScript, Go).
pub(super) fn float_text(cents: u64, python: bool) -> String {
    match (cents % 100, python) {
        (0, true) => format!("{}.0", cents / 100),
        (0, false) => (cents / 100).to_string(),
        (c, _) if c % 10 == 0 => format!("{}.{}", cents / 100, c / 10),
        (c, _) => format!("{}.{c:02}", cents / 100),
    }
}

/// Cents with exactly two decimals: `12.50`.
pub(super) fn decimal_text(cents: u64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Every character through [`emit_char`], one at a time: what
    /// [`emit_str`] must write.
    fn char_by_char(text: &str, layout: &Layout) -> Vec<u8> {
        let mut out = vec![b'"'];
        for c in text.chars() {
            emit_char(c, layout, &mut out);
        }
        out.push(b'"');
        out
    }

    proptest! {
        /// Copying runs whole writes exactly what escaping character by
        /// character writes, in every combination of the layout's escapes,
        /// for any text (control characters, quotes, U+2028, astral
        /// characters and all).
        #[test]
        fn runs_copied_whole_are_the_characters_escaped_one_by_one(
            text in "(\\PC|[\"\\\\<>&\u{0}-\u{1f}\u{7f}\u{80}-\u{ff}\u{2028}\u{2029}\u{20ac}\u{1f600}])*",
            ascii: bool,
            html: bool,
        ) {
            let layout = Layout { ascii, html, ..COMPACT };
            let mut out = Vec::new();
            emit_str(&text, &layout, &mut out);
            prop_assert_eq!(out, char_by_char(&text, &layout));
        }
    }
}
