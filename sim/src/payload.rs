//! The bytes the simulated producers write: valid events in the many forms
//! docs/semantics.md accepts, and broken payloads for every anomaly reason,
//! each with the reason that document gives for it.
//!
//! Written independently of the product's parser: the model takes an
//! event's values (time, cents, user) from the plan, never from parsing
//! these bytes, so a payload the product reads differently shows up as a
//! divergence.

use crate::plan::{Ev, User};
use crate::rng::Rng;
use crate::timefmt::{rfc3339, Style};

/// The payload of a valid event, written in the forms `ev.style` picks.
pub fn event(ev: &Ev) -> Vec<u8> {
    let s = ev.style;
    let mut fields = fields(ev);
    if s & (1 << 11) != 0 {
        fields.push(("coupon", "{\"code\":\"X1\",\"nested\":[1,2]}".into()));
    }
    // Rotate the field order: producers do not write ours.
    let rot = (s & 7) as usize % fields.len();
    fields.rotate_left(rot);
    if s & (1 << 12) != 0 {
        // A key written twice: the last one wins.
        fields.insert(0, ("amount", "\"999.99\"".into()));
    }
    object(&fields).into_bytes()
}

/// The fields of `ev` as JSON texts, in our order.
fn fields(ev: &Ev) -> Vec<(&'static str, String)> {
    let s = ev.style;
    let mut fields: Vec<(&str, String)> = vec![
        ("event_id", json_str(&ev.id)),
        ("order_id", json_str(&format!("o-{}", ev.id))),
        ("user_id", user(&ev.user)),
        ("amount", amount(ev.cents, (s >> 3) & 7)),
        ("event_time", event_time(ev.t_ms, (s >> 6) & 7, s >> 16)),
    ];
    match (s >> 9) & 3 {
        0 => fields.push(("city", json_str("Lyon"))),
        1 => {}
        2 => fields.push(("city", "null".into())),
        _ => fields.push(("category", json_str("books"))),
    }
    fields
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialize")
}

fn object(fields: &[(&str, String)]) -> String {
    let body: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{}:{v}", json_str(k)))
        .collect();
    format!("{{{}}}", body.join(","))
}

fn user(u: &User) -> String {
    match u {
        User::Text(s) => json_str(s),
        // `-0` is the integer 0: the same user as "0".
        User::Int(0) => "-0".into(),
        User::Int(n) => n.to_string(),
    }
}

fn amount(cents: u64, form: u32) -> String {
    let (units, frac) = (cents / 100, cents % 100);
    match form {
        1 => format!("\"{units}.{frac:02}\""),
        2 => format!("{units}.{frac:02}0"),
        3 => format!("{cents}e-2"),
        4 => format!("\"00{units}.{frac:02}\""),
        5 if frac == 0 => units.to_string(),
        _ => format!("{units}.{frac:02}"),
    }
}

fn event_time(ms: i64, form: u32, noise: u32) -> String {
    let style = |offset_min, zulu, fraction, space, lower_case| Style {
        offset_min,
        zulu,
        fraction,
        space,
        lower_case,
    };
    let text = match form {
        0 => return ms.to_string(),
        1 => rfc3339(ms, style(0, true, 3, false, false), noise),
        2 => rfc3339(ms, style(330, false, 3, false, false), noise),
        3 => rfc3339(ms, style(-480, false, 6, false, false), noise),
        4 => rfc3339(ms, style(0, true, 3, true, true), noise),
        5 => rfc3339(ms, style(0, false, 0, false, false), noise),
        _ => rfc3339(ms, style(-210, false, 6, false, true), noise),
    };
    json_str(&text)
}

/// How many kinds of broken payload [`broken`] makes.
pub const BROKEN_KINDS: u64 = 48;

/// A broken payload of kind `kind` (`0..BROKEN_KINDS`) and its reason.
/// `good` is a valid event whose fields the broken ones start from, so only
/// the intended field is wrong.
pub fn broken(kind: u64, good: &Ev, rng: &mut Rng) -> (String, Vec<u8>) {
    let base = |skip: &str, with: Option<(&'static str, String)>| {
        let mut fields = fields(good);
        fields.retain(|(k, _)| *k != skip);
        fields.extend(with);
        object(&fields).into_bytes()
    };
    let set = |field: &'static str, value: &str| base(field, Some((field, value.to_string())));
    let fields = ["event_id", "order_id", "user_id", "amount", "event_time"];
    let r = |s: &str| s.to_string();
    match kind {
        0 => (
            r("malformed_json"),
            b"{\"event_id\":\"x\",\"order_id\":".to_vec(),
        ),
        1 => (r("malformed_json"), b"not json at all".to_vec()),
        2 => (r("malformed_json"), Vec::new()),
        3 => (r("malformed_json"), b"{\"event_id\":\"\xff\xfe\"}".to_vec()),
        4 => (
            r("malformed_json"),
            [&b"\xEF\xBB\xBF"[..], &base("", None)].concat(),
        ),
        5 => (r("malformed_json"), [&base("", None)[..], b" x"].concat()),
        6 => (r("malformed_json"), b"{\"amount\": NaN}".to_vec()),
        7 => (r("not_an_object"), b"[1,2,3]".to_vec()),
        8 => (r("not_an_object"), b"\"just text\"".to_vec()),
        9 => (r("not_an_object"), b"42".to_vec()),
        10..=14 => {
            let f = fields[(kind - 10) as usize];
            (format!("missing_field:{f}"), base(f, None))
        }
        15..=19 => {
            let f = fields[(kind - 15) as usize];
            (format!("missing_field:{f}"), set(f, "null"))
        }
        20 => (r("bad_type:event_id"), set("event_id", "42")),
        21 => (r("bad_type:event_id"), set("event_id", "\"\"")),
        22 => (
            r("bad_type:event_id"),
            set("event_id", &json_str(&"x".repeat(129))),
        ),
        23 => (r("bad_type:order_id"), set("order_id", "17")),
        24 => (r("bad_type:order_id"), set("order_id", "true")),
        25 => (r("bad_type:user_id"), set("user_id", "1.5")),
        26 => (r("bad_type:user_id"), set("user_id", "true")),
        27 => (r("bad_type:amount"), set("amount", "true")),
        28 => (r("bad_type:amount"), set("amount", "[1]")),
        29 => (r("bad_type:event_time"), set("event_time", "true")),
        30 => (r("bad_type:event_time"), set("event_time", "{}")),
        31 => (r("bad_type:city"), set("city", "5")),
        32 => (r("bad_type:category"), set("category", "[]")),
        33 => (r("bad_amount"), set("amount", "-1.00")),
        34 => (r("bad_amount"), set("amount", "\"abc\"")),
        35 => (r("bad_amount"), set("amount", "1.234")),
        36 => (r("bad_amount"), set("amount", "10000000000000000.00")),
        37 => (r("bad_amount"), set("amount", "1e41")),
        38 => (
            r("bad_event_time"),
            set("event_time", "\"2025-13-01T00:00:00Z\""),
        ),
        39 => (r("bad_event_time"), set("event_time", "\"1764064800000\"")),
        40 => (r("bad_event_time"), set("event_time", "1764064800000.5")),
        41 => (
            r("bad_event_time"),
            set("event_time", "\"2100-01-01T00:00:00Z\""),
        ),
        42 => (
            r("bad_event_time"),
            set("event_time", "\"2025-11-25T10:00:00\""),
        ),
        43 => (
            r("bad_event_time"),
            set("event_time", "\"2025-11-25T10:00:60Z\""),
        ),
        44 => (
            r("bad_event_time"),
            set("event_time", "\"2025-11-25T10:00:00+0530\""),
        ),
        45 => (r("not_an_object"), b"null".to_vec()),
        46 => (r("bad_type:user_id"), set("user_id", "{}")),
        _ => {
            // A payload of arbitrary bytes, almost never JSON.
            let len = rng.range(1, 24) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| rng.below(256) as u8).collect();
            // `#` starts no JSON value, whatever follows.
            (r("malformed_json"), [b"#", &bytes[..]].concat())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Role;
    use streamforge::event::parse_event;

    fn ev(style: u32) -> Ev {
        Ev {
            id: "p0-17".into(),
            user: User::Int(42),
            cents: 1_234,
            t_ms: 1_764_064_812_345,
            role: Role::Regular,
            style,
        }
    }

    /// The product's parser must read every form the producers write as the
    /// values the model uses. (The model never parses; this pins the two
    /// together.)
    #[test]
    fn every_valid_form_reads_back_as_its_values() {
        for style in 0..(1 << 13) {
            let style = style | (321 << 16);
            let payload = event(&ev(style));
            let parsed = parse_event(&payload)
                .unwrap_or_else(|r| panic!("{r}: {}", String::from_utf8_lossy(&payload)));
            assert_eq!(parsed.event_time_ms, 1_764_064_812_345, "style {style}");
            assert_eq!(parsed.amount_cents, 1_234, "style {style}");
            assert_eq!(parsed.user_id, "42");
            assert_eq!(parsed.event_id, "p0-17");
        }
        let zero = Ev {
            user: User::Int(0),
            ..ev(0)
        };
        assert_eq!(parse_event(&event(&zero)).unwrap().user_id, "0");
    }

    /// Every broken payload gets the reason docs/semantics.md gives for it.
    #[test]
    fn every_broken_kind_has_the_documented_reason() {
        let mut rng = Rng::new(3);
        let users = [User::Int(42), User::Int(0), User::Text("u1".into())];
        for kind in 0..BROKEN_KINDS {
            for i in 0..30 {
                let good = Ev {
                    user: users[i % 3].clone(),
                    ..ev(5 | (i as u32) << 3)
                };
                let (reason, bytes) = broken(kind, &good, &mut rng);
                let got = parse_event(&bytes).err().map(|r| r.as_str().to_string());
                assert_eq!(
                    got.as_deref(),
                    Some(reason.as_str()),
                    "kind {kind}: {}",
                    String::from_utf8_lossy(&bytes)
                );
            }
        }
    }
}
