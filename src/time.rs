//! Civil time without a dependency: RFC 3339 timestamps to and from epoch
//! milliseconds.
//!
//! Event times arrive as RFC 3339 strings (`2025-11-25T10:00:00.250+01:00`)
//! or as integer epoch milliseconds; everything downstream (watermarks,
//! windows, the sinks) works in epoch milliseconds UTC. This module is the one
//! place that converts between the two, and the event parser calls it once per
//! event, so the parser is strict, allocation-free and never panics.
//!
//! # Layout
//!
//! - [`days_from_civil`] / [`civil_from_days`]: proleptic Gregorian calendar
//!   arithmetic (Howard Hinnant's public-domain algorithms), the core of both
//!   directions.
//! - [`parse_rfc3339_ms`]: text to epoch milliseconds.
//! - [`format_rfc3339_ms`] / [`format_rfc3339_s`]: epoch milliseconds or
//!   seconds to canonical UTC text (logs, the anomaly side output, tools).
//! - [`MIN_EVENT_TIME_MS`] / [`MAX_EVENT_TIME_MS`]: the event-time range the
//!   pipeline accepts.
//! - [`now_ms`]: the wall clock, for detection times and idle timeouts (never
//!   for event time).
//!
//! # The accepted grammar
//!
//! `YYYY-MM-DD`, then `T`, `t` or one space, then `HH:MM:SS`, then an optional
//! fraction (`.` and 1 to 9 digits), then `Z`, `z` or a numeric offset
//! `+HH:MM` / `-HH:MM` (hours 00..=23, minutes 00..=59). Every field has
//! exactly the number of digits shown. Months are 1..=12, days are checked
//! against the month (leap years included), hours 00..=23, minutes and seconds
//! 00..=59. Anything else, including surrounding whitespace, is rejected.
//!
//! A leap second (`23:59:60`) is rejected: epoch milliseconds, like UNIX time,
//! have no representation for it, and silently folding it into the next
//! second would let two distinct inputs claim the same instant. Producers
//! that emit leap seconds are rare; their events are reported as
//! `bad_event_time` rather than misplaced.
//!
//! Fractions are truncated to milliseconds. Since the fraction always adds to
//! the whole second, truncating it always moves the instant earlier (floor),
//! also before 1970.

use std::time::{SystemTime, UNIX_EPOCH};

/// The earliest event time accepted: 1970-01-01T00:00:00.000Z.
///
/// ClickHouse `DateTime` is an unsigned count of seconds since the epoch, so
/// it cannot hold an earlier instant; such an event could never be written.
pub const MIN_EVENT_TIME_MS: i64 = 0;

/// The latest event time accepted: 2099-12-31T23:59:59.999Z (2100-01-01
/// exclusive).
///
/// ClickHouse `DateTime` ends at 2106-02-07T06:28:15Z (u32 seconds). Stopping
/// at 2100 keeps every window that such an event belongs to, plus allowed
/// lateness and any `updated_at`, well inside that range, and is a bound a
/// reader can remember. Later times are almost always unit mistakes
/// (microseconds or nanoseconds sent as milliseconds).
pub const MAX_EVENT_TIME_MS: i64 = 4_102_444_800_000 - 1;

const MS_PER_SECOND: i64 = 1_000;
const MS_PER_MINUTE: i64 = 60 * MS_PER_SECOND;
const MS_PER_HOUR: i64 = 60 * MS_PER_MINUTE;
const MS_PER_DAY: i64 = 24 * MS_PER_HOUR;

/// Days between 1970-01-01 and 0000-03-01 in the proleptic Gregorian calendar.
/// Both algorithms count from a March-based year so that the leap day is the
/// last day of its year.
const EPOCH_SHIFT_DAYS: i64 = 719_468;
/// Days in one 400-year Gregorian cycle (an "era").
const DAYS_PER_ERA: i64 = 146_097;

/// Days since 1970-01-01 of the proleptic Gregorian date `y-m-d`.
///
/// Meaningful for `m` in 1..=12 and `d` in 1..=31 (callers validate the day
/// against the month first). Never panics: other inputs give an unspecified
/// number, and years beyond about ±2.5·10^16 saturate near the ends of `i64`
/// instead of overflowing.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let (m, d) = (i64::from(m), i64::from(d));
    // Counting years from March puts February, and its leap day, last.
    let y = if m <= 2 { y.saturating_sub(1) } else { y };
    let era = y.div_euclid(400);
    let year_of_era = y.rem_euclid(400); // 0..=399
    let month_from_march = if m > 2 { m - 3 } else { m + 9 }; // 0..=11
    let day_of_year = (153 * month_from_march + 2) / 5 + d - 1; // 0..=365
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era.saturating_mul(DAYS_PER_ERA)
        .saturating_add(day_of_era - EPOCH_SHIFT_DAYS)
}

/// The proleptic Gregorian date `(year, month, day)` that is `days` days after
/// 1970-01-01 (before it when negative). Defined for every `i64`.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // Split before shifting so that `days + EPOCH_SHIFT_DAYS` cannot overflow
    // at the ends of the `i64` range.
    let shifted = days.rem_euclid(DAYS_PER_ERA) + EPOCH_SHIFT_DAYS;
    let era = days.div_euclid(DAYS_PER_ERA) + shifted.div_euclid(DAYS_PER_ERA);
    // Ranges: day_of_era 0..=146096, year_of_era 0..=399, day_of_year
    // 0..=365 (from March 1st), month_from_march 0..=11, day 1..=31.
    let day_of_era = shifted.rem_euclid(DAYS_PER_ERA);
    // Corrects 365-day years for the leap days of the era so far.
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = era * 400 + year_of_era + i64::from(month <= 2);
    // Both values are bounded by the ranges noted above.
    (year, month as u32, day as u32)
}

fn is_leap_year(y: i64) -> bool {
    y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap_year(y) => 29,
        2 => 28,
        _ => 0,
    }
}

/// The value of the `n` ASCII digits at `b[at..at + n]`, or `None` if any of
/// them is missing or not a digit.
fn digits(b: &[u8], at: usize, n: usize) -> Option<u32> {
    let field = b.get(at..at.checked_add(n)?)?;
    field.iter().try_fold(0u32, |acc, &c| {
        c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
    })
}

fn byte_is(b: &[u8], at: usize, want: u8) -> Option<()> {
    (b.get(at) == Some(&want)).then_some(())
}

/// Parses a strict RFC 3339 timestamp (see the module docs for the grammar)
/// into epoch milliseconds UTC.
///
/// Returns `None` for anything that is not a valid timestamp. The range check
/// against [`MIN_EVENT_TIME_MS`]..=[`MAX_EVENT_TIME_MS`] is the caller's: this
/// function accepts every year from 0000 to 9999. It does not allocate.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();

    let year = digits(b, 0, 4)?;
    byte_is(b, 4, b'-')?;
    let month = digits(b, 5, 2)?;
    byte_is(b, 7, b'-')?;
    let day = digits(b, 8, 2)?;
    if !matches!(b.get(10), Some(b'T' | b't' | b' ')) {
        return None;
    }
    let hour = digits(b, 11, 2)?;
    byte_is(b, 13, b':')?;
    let minute = digits(b, 14, 2)?;
    byte_is(b, 16, b':')?;
    let second = digits(b, 17, 2)?;

    let mut pos = 19;
    let mut millis = 0i64;
    if b.get(pos) == Some(&b'.') {
        pos += 1;
        let start = pos;
        while let Some(&c) = b.get(pos).filter(|c| c.is_ascii_digit()) {
            if pos - start < 3 {
                millis = millis * 10 + i64::from(c - b'0');
            }
            pos += 1;
        }
        let len = pos - start;
        if !(1..=9).contains(&len) {
            return None;
        }
        for _ in len..3 {
            millis *= 10;
        }
    }

    // Offset of local time from UTC, in minutes.
    let offset_minutes = match b.get(pos) {
        Some(b'Z' | b'z') if b.len() == pos + 1 => 0,
        Some(&sign @ (b'+' | b'-')) if b.len() == pos + 6 => {
            let hours = digits(b, pos + 1, 2)?;
            byte_is(b, pos + 3, b':')?;
            let minutes = digits(b, pos + 4, 2)?;
            if hours > 23 || minutes > 59 {
                return None;
            }
            let magnitude = i64::from(hours * 60 + minutes);
            if sign == b'-' {
                -magnitude
            } else {
                magnitude
            }
        }
        _ => return None,
    };

    let year = i64::from(year);
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }

    // Years 0000..=9999 keep every term far from overflow.
    let local_ms = days_from_civil(year, month, day) * MS_PER_DAY
        + i64::from(hour) * MS_PER_HOUR
        + i64::from(minute) * MS_PER_MINUTE
        + i64::from(second) * MS_PER_SECOND
        + millis;
    Some(local_ms - offset_minutes * MS_PER_MINUTE)
}

/// Appends `v` in decimal, zero-padded to at least `width` digits.
fn push_padded(out: &mut String, v: u64, width: usize) {
    let mut buf = [b'0'; 20];
    let mut i = buf.len();
    let mut v = v;
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let start = i.min(buf.len().saturating_sub(width));
    for &c in &buf[start..] {
        out.push(char::from(c));
    }
}

/// Formats `ms` as `YYYY-MM-DDTHH:MM:SS` into `out`, returning the
/// milliseconds left over.
fn push_civil(out: &mut String, ms: i64) -> u64 {
    let days = ms.div_euclid(MS_PER_DAY);
    let ms_of_day = ms.rem_euclid(MS_PER_DAY).unsigned_abs();
    let (year, month, day) = civil_from_days(days);
    // Outside 0000..=9999 the text is no longer RFC 3339; it stays readable
    // (a '-' sign, or more digits) instead of failing, since callers only
    // use it to display times.
    if year < 0 {
        out.push('-');
    }
    push_padded(out, year.unsigned_abs(), 4);
    out.push('-');
    push_padded(out, u64::from(month), 2);
    out.push('-');
    push_padded(out, u64::from(day), 2);
    out.push('T');
    push_padded(out, ms_of_day / 3_600_000, 2);
    out.push(':');
    push_padded(out, ms_of_day / 60_000 % 60, 2);
    out.push(':');
    push_padded(out, ms_of_day / 1_000 % 60, 2);
    ms_of_day % 1_000
}

/// Formats epoch milliseconds as RFC 3339 UTC with milliseconds:
/// `2025-11-25T10:00:00.000Z`. Inverse of [`parse_rfc3339_ms`] for years
/// 0000..=9999.
pub fn format_rfc3339_ms(ms: i64) -> String {
    let mut out = String::with_capacity(24);
    let millis = push_civil(&mut out, ms);
    out.push('.');
    push_padded(&mut out, millis, 3);
    out.push('Z');
    out
}

/// Formats epoch seconds as RFC 3339 UTC without a fraction:
/// `2025-11-25T10:00:00Z`. Seconds beyond what milliseconds can express in
/// an `i64` saturate.
pub fn format_rfc3339_s(secs: i64) -> String {
    let mut out = String::with_capacity(20);
    push_civil(&mut out, secs.saturating_mul(MS_PER_SECOND));
    out.push('Z');
    out
}

/// The wall clock in epoch milliseconds. A clock before 1970 gives a negative
/// value rather than a panic.
pub fn now_ms() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(since) => i64::try_from(since.as_millis()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_millis()).map_or(i64::MIN, |ms| -ms),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_epoch_and_known_instants() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_ms("2025-11-25T10:00:00Z"),
            Some(1_764_064_800_000)
        );
        assert_eq!(
            parse_rfc3339_ms("2025-11-25T10:00:00.5Z"),
            Some(1_764_064_800_500)
        );
        assert_eq!(
            parse_rfc3339_ms("2025-11-25t10:00:00.123z"),
            Some(1_764_064_800_123)
        );
        assert_eq!(
            parse_rfc3339_ms("2025-11-25 10:00:00.123456789Z"),
            Some(1_764_064_800_123)
        );
        assert_eq!(
            parse_rfc3339_ms("2000-02-29T00:00:00Z"),
            Some(951_782_400_000)
        );
        assert_eq!(
            parse_rfc3339_ms("2099-12-31T23:59:59.999Z"),
            Some(MAX_EVENT_TIME_MS)
        );
        assert_eq!(
            parse_rfc3339_ms("2100-01-01T00:00:00Z"),
            Some(MAX_EVENT_TIME_MS + 1)
        );
    }

    #[test]
    fn applies_offsets() {
        let utc = parse_rfc3339_ms("2025-11-25T10:00:00Z");
        assert_eq!(parse_rfc3339_ms("2025-11-25T15:30:00+05:30"), utc);
        assert_eq!(parse_rfc3339_ms("2025-11-25T02:00:00-08:00"), utc);
        assert_eq!(parse_rfc3339_ms("2025-11-25T10:00:00+00:00"), utc);
        assert_eq!(parse_rfc3339_ms("2025-11-25T10:00:00-00:00"), utc);
        assert_eq!(parse_rfc3339_ms("2025-11-26T09:59:00+23:59"), utc);
        // An offset can move the instant across the epoch.
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00+00:01"), Some(-60_000));
    }

    #[test]
    fn fractions_truncate_toward_the_earlier_instant() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00.9999Z"), Some(999));
        assert_eq!(parse_rfc3339_ms("1969-12-31T23:59:59.9999Z"), Some(-1));
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00.000999999Z"), Some(0));
    }

    #[test]
    fn rejects_invalid_timestamps() {
        for bad in [
            "",
            "2025-11-25",
            "2025-11-25T10:00:00",             // no offset
            "2025-11-25T10:00Z",               // no seconds
            "2025-11-25T10:00:00.Z",           // empty fraction
            "2025-11-25T10:00:00.1234567890Z", // 10 fraction digits
            "2025-11-25T10:00:00,5Z",          // comma fraction
            "2025-11-25T10:00:60Z",            // leap second
            "2016-12-31T23:59:60Z",            // a real leap second, still rejected
            "2025-11-25T24:00:00Z",
            "2025-11-25T10:60:00Z",
            "2025-13-01T00:00:00Z",
            "2025-00-01T00:00:00Z",
            "2025-11-00T00:00:00Z",
            "2025-11-31T00:00:00Z",
            "2025-02-29T00:00:00Z", // not a leap year
            "1900-02-29T00:00:00Z", // century, not a leap year
            "2025-11-25T10:00:00+24:00",
            "2025-11-25T10:00:00+05:60",
            "2025-11-25T10:00:00+0530",
            "2025-11-25T10:00:00+05",
            "2025-11-25T10:00:00ZZ",
            "2025-11-25T10:00:00Z ",
            " 2025-11-25T10:00:00Z",
            "2025-11-25X10:00:00Z",
            "2025-11-25T10:00:00UTC",
            "+2025-11-25T10:00:00Z",
            "25-11-25T10:00:00Z",
            "2025-1-25T10:00:00Z",
            "2025-11-25T1:00:00Z",
            "２０２５-11-25T10:00:00Z", // non-ASCII digits
            "2025-11-25T10:00:00.５Z",
            "2025-11-25T10:00:00+05:30\n",
        ] {
            assert_eq!(parse_rfc3339_ms(bad), None, "{bad:?}");
        }
        assert_eq!(
            parse_rfc3339_ms("2000-02-29T00:00:00Z").map(|ms| ms > 0),
            Some(true),
            "2000 is a leap year"
        );
    }

    #[test]
    fn formats_known_instants() {
        assert_eq!(format_rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_rfc3339_ms(1_764_064_800_000),
            "2025-11-25T10:00:00.000Z"
        );
        assert_eq!(
            format_rfc3339_ms(MAX_EVENT_TIME_MS),
            "2099-12-31T23:59:59.999Z"
        );
        assert_eq!(format_rfc3339_ms(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(format_rfc3339_s(1_764_064_800), "2025-11-25T10:00:00Z");
        assert_eq!(format_rfc3339_s(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(
            format_rfc3339_ms(days_from_civil(0, 1, 1) * MS_PER_DAY),
            "0000-01-01T00:00:00.000Z"
        );
        assert_eq!(
            format_rfc3339_ms(days_from_civil(-1, 12, 31) * MS_PER_DAY),
            "-0001-12-31T00:00:00.000Z"
        );
        assert_eq!(
            format_rfc3339_ms(days_from_civil(10_000, 1, 1) * MS_PER_DAY),
            "10000-01-01T00:00:00.000Z"
        );
    }

    #[test]
    fn extreme_inputs_do_not_panic() {
        for ms in [i64::MIN, i64::MIN + 1, -1, 0, i64::MAX - 1, i64::MAX] {
            let _ = format_rfc3339_ms(ms);
            let _ = format_rfc3339_s(ms);
            let _ = civil_from_days(ms);
        }
        for y in [i64::MIN, i64::MAX, 0] {
            for (m, d) in [(0, 0), (1, 1), (2, 29), (12, 31), (u32::MAX, u32::MAX)] {
                let _ = days_from_civil(y, m, d);
            }
        }
        assert!(days_from_civil(i64::MAX, 12, 31) > i64::MAX - 1_000_000);
        assert!(days_from_civil(i64::MIN, 1, 1) == i64::MIN);
    }

    #[test]
    fn now_is_after_2025() {
        assert!(now_ms() > 1_735_689_600_000);
    }

    /// The `time` crate's RFC 3339 parser, with the one rule it lacks: it
    /// takes any byte between date and time, RFC 3339 only `T`, `t` or (by
    /// its NOTE) a space.
    fn crate_ms(s: &str) -> Option<i64> {
        use time::{format_description::well_known::Rfc3339, OffsetDateTime};
        if !matches!(s.as_bytes().get(10), Some(b'T' | b't' | b' ')) {
            return None;
        }
        let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
        Some(t.unix_timestamp() * MS_PER_SECOND + i64::from(t.millisecond()))
    }

    /// The event times producers send, one per style.
    const STYLES: &[(&str, &str)] = &[
        ("Z", "2025-11-25T10:00:00Z"),
        ("Z, 3 digits", "2025-11-25T10:00:00.250Z"),
        ("Z, 6 digits", "2025-11-25T10:00:00.250123Z"),
        ("Z, 9 digits", "2025-11-25T10:00:00.250123456Z"),
        ("+05:30, 3 digits", "2025-11-25T15:30:00.250+05:30"),
        ("-08:00, 3 digits", "2025-11-25T02:00:00.250-08:00"),
        ("t and z", "2025-11-25t10:00:00.250z"),
        ("space", "2025-11-25 10:00:00.250Z"),
    ];

    /// A payload like the ones the job reads, with `event_time` as given.
    fn payload(event_time: &str) -> Vec<u8> {
        format!(
            r#"{{"event_id":"e-3-1048576","order_id":"o-3-1048576","user_id":"u48213","amount":81.25,"event_time":{event_time},"city":"Paris","category":"books"}}"#
        )
        .into_bytes()
    }

    /// Nanoseconds per call of `f`: the best of several rounds, so that
    /// other load on the machine inflates it as little as possible.
    fn ns_per_call<T>(mut f: impl FnMut() -> T) -> f64 {
        const CALLS: u32 = 1_000_000;
        (0..11)
            .map(|_| {
                let start = std::time::Instant::now();
                for _ in 0..CALLS {
                    std::hint::black_box(f());
                }
                start.elapsed().as_secs_f64() * 1e9 / f64::from(CALLS)
            })
            .fold(f64::INFINITY, f64::min)
    }

    /// What parsing event times costs, per style, by itself and inside
    /// `parse_event` on a realistic payload. Meaningful only optimized:
    /// `cargo test --release --lib time::tests::parse_cost -- --ignored --nocapture`
    #[test]
    #[ignore = "a measurement: run it optimized, by name"]
    fn parse_cost() {
        use crate::event::parse_event;
        use std::hint::black_box;
        let integer = payload("1764064800250");
        let integer_ns = ns_per_call(|| parse_event(black_box(&integer)).is_ok());
        println!("parse_event, integer event_time: {integer_ns:.1} ns");
        println!("| style | hand-written ns | time crate ns | parse_event ns, hand-written |");
        println!("| --- | --- | --- | --- |");
        for (style, text) in STYLES {
            assert_eq!(parse_rfc3339_ms(text), crate_ms(text), "{text}");
            let hand = ns_per_call(|| parse_rfc3339_ms(black_box(text)));
            let krate = ns_per_call(|| crate_ms(black_box(text)));
            let event = payload(&format!("\"{text}\""));
            let in_event = ns_per_call(|| parse_event(black_box(&event)).is_ok());
            println!("| {style} | {hand:.1} | {krate:.1} | {in_event:.1} |");
        }
    }

    /// Day count by walking years and months: slow, but obviously right.
    fn naive_days(y: i64, m: u32, d: u32) -> i64 {
        let mut days = 0i64;
        if y >= 1970 {
            for year in 1970..y {
                days += if is_leap_year(year) { 366 } else { 365 };
            }
        } else {
            for year in y..1970 {
                days -= if is_leap_year(year) { 366 } else { 365 };
            }
        }
        for month in 1..m {
            days += i64::from(days_in_month(y, month));
        }
        days + i64::from(d) - 1
    }

    fn valid_date() -> impl Strategy<Value = (i64, u32, u32)> {
        (0i64..=9999, 1u32..=12).prop_flat_map(|(y, m)| (Just(y), Just(m), 1..=days_in_month(y, m)))
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(ms in MIN_EVENT_TIME_MS..=MAX_EVENT_TIME_MS) {
            prop_assert_eq!(parse_rfc3339_ms(&format_rfc3339_ms(ms)), Some(ms));
            let secs = ms.div_euclid(1000);
            prop_assert_eq!(parse_rfc3339_ms(&format_rfc3339_s(secs)), Some(secs * 1000));
        }

        #[test]
        fn format_then_parse_round_trips_for_all_four_digit_years(
            ms in days_from_civil(0, 1, 1) * MS_PER_DAY..days_from_civil(10_000, 1, 1) * MS_PER_DAY,
        ) {
            prop_assert_eq!(parse_rfc3339_ms(&format_rfc3339_ms(ms)), Some(ms));
        }

        #[test]
        fn civil_days_round_trip(days in -10_000_000i64..10_000_000) {
            let (y, m, d) = civil_from_days(days);
            prop_assert!((1..=12).contains(&m));
            prop_assert!(d >= 1 && d <= days_in_month(y, m));
            prop_assert_eq!(days_from_civil(y, m, d), days);
        }

        #[test]
        fn parse_agrees_with_naive_day_counting(
            (y, m, d) in valid_date(),
            hour in 0u32..24,
            minute in 0u32..60,
            second in 0u32..60,
            fraction in proptest::option::of("[0-9]{1,9}"),
            offset in proptest::option::of((any::<bool>(), 0u32..24, 0u32..60)),
            separator in prop::sample::select(vec!['T', 't', ' ']),
            zulu in prop::sample::select(vec!['Z', 'z']),
        ) {
            let mut text = format!("{y:04}-{m:02}-{d:02}{separator}");
            text.push_str(&format!("{hour:02}:{minute:02}:{second:02}"));
            let mut millis = 0i64;
            if let Some(fraction) = &fraction {
                text.push('.');
                text.push_str(fraction);
                let first3: String = fraction.chars().chain("000".chars()).take(3).collect();
                millis = first3.parse().unwrap();
            }
            let mut offset_ms = 0i64;
            match offset {
                Some((negative, oh, om)) => {
                    text.push_str(&format!("{}{oh:02}:{om:02}", if negative { '-' } else { '+' }));
                    offset_ms = i64::from(oh * 60 + om) * 60_000 * if negative { -1 } else { 1 };
                }
                None => text.push(zulu),
            }
            let expected = naive_days(y, m, d) * 86_400_000
                + i64::from(hour) * 3_600_000
                + i64::from(minute) * 60_000
                + i64::from(second) * 1_000
                + millis
                - offset_ms;
            prop_assert_eq!(parse_rfc3339_ms(&text), Some(expected), "{}", text);
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,40}") {
            let _ = parse_rfc3339_ms(&s);
        }

        #[test]
        fn parse_never_panics_on_near_misses(
            s in concat!(
                "[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}",
                "(\\.[0-9]{0,12})?([Zz]|[+-][0-9]{2}:[0-9]{2})?",
            ),
        ) {
            if let Some(ms) = parse_rfc3339_ms(&s) {
                // Whatever is accepted formats back to the same instant.
                prop_assert_eq!(parse_rfc3339_ms(&format_rfc3339_ms(ms)), Some(ms));
            }
        }
    }
}
