//! RFC 3339 text for the simulated producers, written here rather than taken
//! from the product (`streamforge::time`), so that a mistake in the
//! product's parser cannot be mirrored by the input meant to test it.

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// How an instant is written.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    /// Offset from UTC in minutes (`Z` when 0 and `zulu`).
    pub offset_min: i64,
    pub zulu: bool,
    /// Digits of fraction: 0 (only for whole seconds), 3, or 6 (the three
    /// extra digits are noise the parser must truncate away).
    pub fraction: u8,
    /// `' '` instead of `'T'` (allowed by an RFC 3339 note).
    pub space: bool,
    pub lower_case: bool,
}

/// `ms` (epoch milliseconds) as RFC 3339 text in `style`; `noise` fills the
/// digits after the milliseconds when the style asks for six.
pub fn rfc3339(ms: i64, style: Style, noise: u32) -> String {
    let local = ms + style.offset_min * 60_000;
    let (y, mo, d) = civil_from_days(local.div_euclid(86_400_000));
    let rem = local.rem_euclid(86_400_000);
    let (h, mi, s, milli) = (
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000,
    );
    let sep = match (style.space, style.lower_case) {
        (true, _) => ' ',
        (false, true) => 't',
        (false, false) => 'T',
    };
    let fraction = match style.fraction {
        0 if milli == 0 => String::new(),
        6 => format!(".{milli:03}{:03}", noise % 1000),
        _ => format!(".{milli:03}"),
    };
    let zone = if style.offset_min == 0 && style.zulu {
        (if style.lower_case { "z" } else { "Z" }).to_string()
    } else {
        let sign = if style.offset_min < 0 { '-' } else { '+' };
        let off = style.offset_min.abs();
        format!("{sign}{:02}:{:02}", off / 60, off % 60)
    };
    format!("{y:04}-{mo:02}-{d:02}{sep}{h:02}:{mi:02}:{s:02}{fraction}{zone}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: Style = Style {
        offset_min: 0,
        zulu: true,
        fraction: 3,
        space: false,
        lower_case: false,
    };

    #[test]
    fn known_instants() {
        assert_eq!(rfc3339(0, PLAIN, 0), "1970-01-01T00:00:00.000Z");
        // 2025-11-25T10:00:00Z, and the same instant in India.
        assert_eq!(
            rfc3339(1_764_064_800_000, PLAIN, 0),
            "2025-11-25T10:00:00.000Z"
        );
        let india = Style {
            offset_min: 330,
            ..PLAIN
        };
        assert_eq!(
            rfc3339(1_764_064_800_123, india, 0),
            "2025-11-25T15:30:00.123+05:30"
        );
        // Leap day, and a negative offset crossing midnight backwards.
        let pacific = Style {
            offset_min: -480,
            fraction: 6,
            ..PLAIN
        };
        assert_eq!(
            rfc3339(1_709_172_000_005, pacific, 987),
            "2024-02-28T18:00:00.005987-08:00"
        );
    }
}
