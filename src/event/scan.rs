//! The reader: one pass over any JSON object that finds the seven fields
//! without building anything ([`scan_object`]), and the two ways it finds
//! where strings end: a vector pass over the whole payload up to a
//! kilobyte ([`QuoteMask`]), or a string-by-string scan 16 bytes at a time
//! ([`string_end`]) for longer ones. The reader returns `None` for what it
//! cannot read (any invalid JSON, an escaped key), and the serde_json path
//! in `fields` decides the verdict of that.

use super::fields::{Json, RawFields};
use super::MAX_NESTING;

/// Where the strings of a payload up to [`QuoteMask::MAX_LEN`] bytes start
/// and end, one bit per byte, found 16 bytes at a time.
///
/// A quote that an escape makes part of a string's content is not in the
/// mask, so the first quote after an opening quote closes the string:
/// that is all the scanners need to step over a string. Every escape is
/// checked to be one JSON has, and the payload to hold no control
/// character (none may appear raw inside a string; outside, the scanners
/// look at every byte and refuse them). The same pass says whether the
/// payload is plain ASCII, which proves it UTF-8 without another pass.
pub(super) struct QuoteMask {
    /// Quotes that open or close a string.
    quotes: [u64; QuoteMask::WORDS],
    /// Backslashes that start an escape.
    escapes: [u64; QuoteMask::WORDS],
    any_escape: bool,
    ascii: bool,
}

impl QuoteMask {
    const WORDS: usize = 16;
    /// The longest payload the mask covers; longer ones take the scalar
    /// path.
    pub(super) const MAX_LEN: usize = 64 * Self::WORDS;

    /// An empty mask, to [`classify`](Self::classify) a payload into.
    #[inline]
    pub(super) fn new() -> QuoteMask {
        QuoteMask {
            quotes: [0; Self::WORDS],
            escapes: [0; Self::WORDS],
            any_escape: false,
            ascii: true,
        }
    }

    /// The mask of `b`, if `b` is at most [`Self::MAX_LEN`] bytes, holds no
    /// control character and only escapes that JSON has.
    #[cfg(test)]
    pub(super) fn of(b: &[u8]) -> Option<QuoteMask> {
        let mut mask = QuoteMask::new();
        mask.classify(b).then_some(mask)
    }

    /// Fills this (new) mask with `b`'s strings, and says whether it covers
    /// `b`: at most [`Self::MAX_LEN`] bytes, no control character and only
    /// escapes that JSON has. In place rather than returned, because the
    /// mask is a quarter of a kilobyte and the hot path would copy it.
    #[inline]
    pub(super) fn classify(&mut self, b: &[u8]) -> bool {
        self.fill(b).is_some()
    }

    #[inline]
    fn fill(&mut self, b: &[u8]) -> Option<()> {
        if b.len() > Self::MAX_LEN {
            return None;
        }
        let mut chunks = b.chunks_exact(16);
        let mut at = 0;
        for chunk in chunks.by_ref() {
            self.add(chunk.try_into().expect("16 bytes"), at)?;
            at += 16;
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            // Padded with spaces, which are neither quotes nor unusual.
            let mut last = [b' '; 16];
            last[..rest.len()].copy_from_slice(rest);
            self.add(&last, at)?;
        }
        if self.any_escape {
            self.resolve_escapes(b)?;
        }
        Some(())
    }

    /// Whether every byte of the payload is ASCII (and so it is UTF-8).
    #[inline]
    pub(super) fn is_ascii(&self) -> bool {
        self.ascii
    }

    #[inline]
    fn add(&mut self, chunk: &[u8; 16], at: usize) -> Option<()> {
        let (quotes, unusual) = classify16(chunk);
        self.quotes[at / 64] |= u64::from(quotes) << (at % 64);
        if unusual != 0 {
            let (backslashes, control) = backslash_control16(chunk);
            if control != 0 {
                return None;
            }
            self.escapes[at / 64] |= u64::from(backslashes) << (at % 64);
            self.any_escape |= backslashes != 0;
            // What is unusual and not a backslash is at or above 0x80.
            self.ascii &= unusual & !backslashes == 0;
        }
        Some(())
    }

    /// Turns the backslashes into escapes: a backslash that the one before
    /// it escapes is content, a quote an escape starts is content, and an
    /// escape JSON does not have makes the mask fail. A `\u` escape needs
    /// four hex digits but is not decoded: whether it names a character is
    /// the decoder's business.
    fn resolve_escapes(&mut self, b: &[u8]) -> Option<()> {
        // The byte the last escape made content.
        let mut content = usize::MAX;
        for word in 0..Self::WORDS {
            let mut bits = self.escapes[word];
            while bits != 0 {
                let at = word * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                if at == content {
                    self.escapes[word] &= !(1 << (at % 64));
                    continue;
                }
                match *b.get(at + 1)? {
                    b'"' => self.quotes[(at + 1) / 64] &= !(1 << ((at + 1) % 64)),
                    b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                    b'u' if b.get(at + 2..at + 6)?.iter().all(u8::is_ascii_hexdigit) => {}
                    _ => return None,
                }
                content = at + 1;
            }
        }
        Some(())
    }

    /// The index of the first quote at or after `i`.
    #[inline]
    pub(super) fn next_from(&self, i: usize) -> Option<usize> {
        let mut word = i / 64;
        let mut bits = *self.quotes.get(word)? & (u64::MAX << (i % 64));
        while bits == 0 {
            word += 1;
            bits = *self.quotes.get(word)?;
        }
        Some(word * 64 + bits.trailing_zeros() as usize)
    }

    /// For a string whose content starts at `i`: the index of its closing
    /// quote, and whether the content holds an escape.
    #[inline]
    pub(super) fn string_end(&self, i: usize) -> Option<(usize, bool)> {
        let end = self.next_from(i)?;
        Some((end, self.any_escape && self.escape_between(i, end)))
    }

    /// Whether an escape starts in `from..to`.
    fn escape_between(&self, from: usize, to: usize) -> bool {
        (from / 64..=to / 64).any(|word| {
            let mut bits = self.escapes.get(word).copied().unwrap_or(0);
            if word == from / 64 {
                bits &= u64::MAX << (from % 64);
            }
            if word == to / 64 {
                bits &= !(u64::MAX << (to % 64));
            }
            bits != 0
        })
    }
}

/// For 16 bytes: a bit per backslash, and a bit per control character
/// (below 0x20).
#[cfg(target_arch = "x86_64")]
#[inline]
pub(super) fn backslash_control16(bytes: &[u8; 16]) -> (u32, u32) {
    // SAFETY: SSE2 is part of the x86_64 baseline: every x86_64 CPU has it.
    unsafe { backslash_control16_sse2(bytes) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse2")]
pub(super) fn backslash_control16_sse2(bytes: &[u8; 16]) -> (u32, u32) {
    use std::arch::x86_64::*;
    // SAFETY: an unaligned load of 16 bytes from a 16-byte array.
    let x = unsafe { _mm_loadu_si128(bytes.as_ptr().cast()) };
    let backslashes = _mm_cmpeq_epi8(x, _mm_set1_epi8(b'\\' as i8));
    // Unsigned x <= 0x1f exactly when min(x, 0x1f) == x.
    let control = _mm_cmpeq_epi8(_mm_min_epu8(x, _mm_set1_epi8(0x1f)), x);
    (
        _mm_movemask_epi8(backslashes) as u32,
        _mm_movemask_epi8(control) as u32,
    )
}

/// The portable form of the SSE2 [`backslash_control16`].
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
pub(super) fn backslash_control16_scalar(bytes: &[u8; 16]) -> (u32, u32) {
    let (mut backslashes, mut control) = (0u32, 0u32);
    for (j, &c) in bytes.iter().enumerate() {
        backslashes |= u32::from(c == b'\\') << j;
        control |= u32::from(c < 0x20) << j;
    }
    (backslashes, control)
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
pub(super) fn backslash_control16(bytes: &[u8; 16]) -> (u32, u32) {
    backslash_control16_scalar(bytes)
}

/// For 16 bytes: a bit per quote, and a bit per byte that is a backslash,
/// a control character or not ASCII.
#[cfg(target_arch = "x86_64")]
#[inline]
pub(super) fn classify16(bytes: &[u8; 16]) -> (u16, u32) {
    // SAFETY: SSE2 is part of the x86_64 baseline: every x86_64 CPU has it.
    unsafe { classify16_sse2(bytes) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse2")]
pub(super) fn classify16_sse2(bytes: &[u8; 16]) -> (u16, u32) {
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
pub(super) fn classify16_scalar(bytes: &[u8; 16]) -> (u16, u32) {
    let (mut quotes, mut unusual) = (0u16, 0u32);
    for (j, &c) in bytes.iter().enumerate() {
        quotes |= u16::from(c == b'"') << j;
        unusual |= u32::from(c == b'\\' || !(0x20..0x80).contains(&c)) << j;
    }
    (quotes, unusual)
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
pub(super) fn classify16(bytes: &[u8; 16]) -> (u16, u32) {
    classify16_scalar(bytes)
}

/// The general reader: any JSON object, in one pass, without building
/// anything. Strings may hold escapes, values may be arrays and objects
/// nested to any depth up to [`MAX_NESTING`], whitespace may be anywhere
/// JSON allows it.
///
/// Returns the fields exactly as serde_json would have found them, but only
/// when `text` is one complete, valid JSON object; for anything else (any
/// syntax error, trailing bytes, nesting too deep, a key with an escape)
/// it returns `None` and the serde_json path decides, so the verdict never
/// depends on which path ran. A known field's string value with an escape
/// is returned as [`Json::Escaped`] and decoded by the rules; a value of
/// an ignored field is checked but never decoded (so a lone surrogate
/// there passes, as rule 6 says). `text` is already known to be UTF-8, so
/// only the JSON grammar is checked here.
///
/// `string_end(i)`, for a string whose content starts at `i`, is the index
/// of its closing quote and whether the content holds an escape, or `None`
/// when the string is not valid JSON ([`string_end`] is the general one).
#[cfg(test)]
pub(super) fn scan_object<'a>(
    text: &'a str,
    string_end: impl Fn(usize) -> Option<(usize, bool)>,
) -> Option<RawFields<'a>> {
    let mut fields = RawFields::default();
    scan_object_into(text, string_end, &mut fields).then_some(fields)
}

/// [`scan_object`] into `fields` (which start as [`RawFields::default`]),
/// returning whether `text` was read: the job's form, which fills the
/// caller's fields in place instead of moving 170 bytes out of the call.
/// On `false` the fields hold whatever was read before the reader gave up.
#[inline]
pub(super) fn scan_object_into<'a>(
    text: &'a str,
    string_end: impl Fn(usize) -> Option<(usize, bool)>,
    fields: &mut RawFields<'a>,
) -> bool {
    scan_members(text, string_end, fields).is_some()
}

fn scan_members<'a>(
    text: &'a str,
    string_end: impl Fn(usize) -> Option<(usize, bool)>,
    fields: &mut RawFields<'a>,
) -> Option<()> {
    let b = text.as_bytes();
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_ws(b, i + 1);
    if b.get(i) == Some(&b'}') {
        return (skip_ws(b, i + 1) == b.len()).then_some(());
    }
    loop {
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let (key_end, key_escaped) = string_end(i + 1)?;
        if key_escaped {
            // Rare: the serde_json path decodes the key.
            return None;
        }
        let key = b.get(i + 1..key_end)?;
        i = skip_ws(b, key_end + 1);
        if b.get(i) != Some(&b':') {
            return None;
        }
        let start = skip_ws(b, i + 1);
        let (value, end) = match *b.get(start)? {
            b'"' => {
                let (end, escaped) = string_end(start + 1)?;
                // The quotes are ASCII, so the slices are on char
                // boundaries; `get` checks that all the same.
                let value = if escaped {
                    Json::Escaped(text.get(start..end + 1)?)
                } else {
                    Json::Plain(text.get(start + 1..end)?)
                };
                (value, end + 1)
            }
            b'{' | b'[' => (Json::Other, skip_nested(b, start, &string_end)?),
            _ => scalar_at(text, start)?,
        };
        if let Some(slot) = fields.slot_named(key) {
            // Last occurrence wins; a later null erases an earlier value.
            *slot = value;
        }
        i = skip_ws(b, end);
        match b.get(i) {
            Some(b',') => i = skip_ws(b, i + 1),
            Some(b'}') => return (skip_ws(b, i + 1) == b.len()).then_some(()),
            _ => return None,
        }
    }
}

/// A number or `true`, `false`, `null` at `i`, and the index after it.
#[inline]
fn scalar_at(text: &str, i: usize) -> Option<(Json<'_>, usize)> {
    let b = text.as_bytes();
    Some(match *b.get(i)? {
        b'-' | b'0'..=b'9' => {
            let (end, integer) = number_end(b, i)?;
            let n = text.get(i..end)?;
            (Json::Number { text: n, integer }, end)
        }
        b't' => (Json::Other, literal_end(b, i, b"true")?),
        b'f' => (Json::Other, literal_end(b, i, b"false")?),
        b'n' => (Json::Null, literal_end(b, i, b"null")?),
        _ => return None,
    })
}

/// Checks the array or object that starts at `i` (an ignored value, or a
/// known field's value of the wrong type) and returns the index after it.
/// The top-level object is depth 1, so this container is depth 2; `None`
/// for invalid JSON or nesting deeper than [`MAX_NESTING`].
fn skip_nested(
    b: &[u8],
    mut i: usize,
    string_end: &impl Fn(usize) -> Option<(usize, bool)>,
) -> Option<usize> {
    // Bit d of `objects`: whether the open container at depth 2 + d is an
    // object. 128 bits cover every depth below the limit.
    const _: () = assert!(MAX_NESTING <= 128);
    let mut objects: u128 = 0;
    let mut depth = 1usize;
    loop {
        // Here a value starts at `i`.
        match *b.get(i)? {
            open @ (b'{' | b'[') => {
                depth += 1;
                if depth > MAX_NESTING {
                    return None;
                }
                let object = open == b'{';
                i = skip_ws(b, i + 1);
                let close = if object { b'}' } else { b']' };
                if b.get(i) != Some(&close) {
                    objects = (objects << 1) | u128::from(object);
                    if object {
                        i = member_value(b, i, string_end)?;
                    }
                    continue;
                }
                // An empty container is a whole value, ending at `i`.
                depth -= 1;
                if depth == 1 {
                    return Some(i + 1);
                }
            }
            b'"' => i = string_end(i + 1)?.0,
            b'-' | b'0'..=b'9' => i = number_end(b, i)?.0 - 1,
            b't' => i = literal_end(b, i, b"true")? - 1,
            b'f' => i = literal_end(b, i, b"false")? - 1,
            b'n' => i = literal_end(b, i, b"null")? - 1,
            _ => return None,
        }
        // `i` is the last byte of a value: close what ends after it.
        loop {
            i = skip_ws(b, i + 1);
            let object = objects & 1 == 1;
            match *b.get(i)? {
                b',' => {
                    i = skip_ws(b, i + 1);
                    if object {
                        i = member_value(b, i, string_end)?;
                    }
                    break;
                }
                b'}' if object => {}
                b']' if !object => {}
                _ => return None,
            }
            objects >>= 1;
            depth -= 1;
            if depth == 1 {
                return Some(i + 1);
            }
        }
    }
}

/// Steps over `"key"` and `:` of an object member at `i`, to its value.
#[inline]
fn member_value(
    b: &[u8],
    i: usize,
    string_end: &impl Fn(usize) -> Option<(usize, bool)>,
) -> Option<usize> {
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let i = skip_ws(b, string_end(i + 1)?.0 + 1);
    (b.get(i) == Some(&b':')).then(|| skip_ws(b, i + 1))
}

/// The index of the closing quote of a JSON string whose content starts at
/// `i`, and whether the content holds an escape; `None` when the string is
/// not closed, holds a control character (which JSON forbids unescaped) or
/// an escape JSON does not have. A `\u` escape needs four hex digits but
/// is not decoded: whether it names a character is the decoder's business.
#[inline]
pub(super) fn string_end(b: &[u8], mut i: usize) -> Option<(usize, bool)> {
    let mut escaped = false;
    loop {
        i = next_special(b, i)?;
        match b[i] {
            b'"' => return Some((i, escaped)),
            b'\\' => {
                escaped = true;
                i += match *b.get(i + 1)? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => 2,
                    b'u' if b.get(i + 2..i + 6)?.iter().all(u8::is_ascii_hexdigit) => 6,
                    _ => return None,
                };
            }
            _ => return None,
        }
    }
}

/// The index of the first quote, backslash or control character at or
/// after `i`.
#[inline]
pub(super) fn next_special(b: &[u8], mut i: usize) -> Option<usize> {
    while let Some(chunk) = b.get(i..i + 16) {
        let bits = special16(chunk.try_into().expect("16 bytes"));
        if bits != 0 {
            return Some(i + bits.trailing_zeros() as usize);
        }
        i += 16;
    }
    loop {
        match *b.get(i)? {
            b'"' | b'\\' | 0..=0x1f => return Some(i),
            _ => i += 1,
        }
    }
}

/// For 16 bytes: a bit per quote, backslash or control character (bytes
/// of 0x80 and up are not control characters: they are UTF-8).
#[cfg(target_arch = "x86_64")]
#[inline]
pub(super) fn special16(bytes: &[u8; 16]) -> u32 {
    // SAFETY: SSE2 is part of the x86_64 baseline: every x86_64 CPU has it.
    unsafe { special16_sse2(bytes) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse2")]
pub(super) fn special16_sse2(bytes: &[u8; 16]) -> u32 {
    use std::arch::x86_64::*;
    let x = _mm_set_epi64x(
        i64::from_le_bytes(bytes[8..].try_into().expect("8 bytes")),
        i64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")),
    );
    // Unsigned x <= 0x1f exactly when min(x, 0x1f) == x.
    let control = _mm_cmpeq_epi8(_mm_min_epu8(x, _mm_set1_epi8(0x1f)), x);
    let special = _mm_or_si128(
        _mm_or_si128(
            _mm_cmpeq_epi8(x, _mm_set1_epi8(b'"' as i8)),
            _mm_cmpeq_epi8(x, _mm_set1_epi8(b'\\' as i8)),
        ),
        control,
    );
    _mm_movemask_epi8(special) as u32
}

/// The portable form of the SSE2 [`special16`], with the same results.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
pub(super) fn special16_scalar(bytes: &[u8; 16]) -> u32 {
    let mut bits = 0u32;
    for (j, &c) in bytes.iter().enumerate() {
        bits |= u32::from(c == b'"' || c == b'\\' || c < 0x20) << j;
    }
    bits
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
pub(super) fn special16(bytes: &[u8; 16]) -> u32 {
    special16_scalar(bytes)
}

/// The index of the first byte at or after `i` that is not JSON whitespace.
#[inline]
fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = b.get(i) {
        i += 1;
    }
    i
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
pub(super) fn nesting_exceeds(text: &[u8], limit: usize) -> bool {
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
