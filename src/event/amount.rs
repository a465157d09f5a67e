//! Exact decimal money: amounts in the payload to cents, cents to text.
//! No floats anywhere.

use super::MAX_AMOUNT_CENTS;

/// The largest exponent magnitude accepted in an amount. No producer writes a
/// larger one: beyond it a value is either far above [`MAX_AMOUNT_CENTS`] or
/// padded with dozens of compensating zeros, so it is `bad_amount` even in
/// the odd case where it would come out whole cents (`0e41`).
const MAX_AMOUNT_EXPONENT: i64 = 40;

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
