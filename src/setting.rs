//! The value types settings are written in, shared by every section of the
//! configuration and by the connectors that own those sections: [`Dur`], a
//! duration written `500ms`, `5s`, `2m` or `1h`; [`Secret`], a password that
//! never prints. A leaf: it depends on no other module of the crate.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

/// A duration written as `500ms`, `5s`, `2m`, `1h` or a number of milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl Dur {
    pub fn ms(&self) -> i64 {
        self.0.as_millis() as i64
    }
}

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{text}` is not a duration; write e.g. 500ms, 5s, 2m, 1h"))?;
    let ms = match unit.trim() {
        "" | "ms" => n,
        "s" => n * 1_000,
        "m" | "min" => n * 60_000,
        "h" => n * 3_600_000,
        other => {
            return Err(format!(
                "`{text}`: unknown unit `{other}`; use ms, s, m or h"
            ))
        }
    };
    Ok(Duration::from_millis(ms))
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(DurVisitor)
    }
}

/// Reads a [`Dur`] from text or a whole number of milliseconds, and says
/// what a duration looks like for anything else (an empty value, a
/// negative or fractional number, a list).
struct DurVisitor;

impl serde::de::Visitor<'_> for DurVisitor {
    type Value = Dur;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a duration such as 500ms, 5s, 2m or 1h (a bare number is milliseconds)")
    }

    fn visit_u64<E: serde::de::Error>(self, ms: u64) -> Result<Dur, E> {
        Ok(Dur(Duration::from_millis(ms)))
    }

    fn visit_i64<E: serde::de::Error>(self, ms: i64) -> Result<Dur, E> {
        u64::try_from(ms)
            .map(|ms| Dur(Duration::from_millis(ms)))
            .map_err(|_| E::custom(format!("`{ms}`: a duration cannot be negative")))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Dur, E> {
        Err(E::custom(format!(
            "`{v}` is not a whole number of milliseconds; write e.g. 1500ms or 2s"
        )))
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Dur, E> {
        parse_duration(text).map(Dur).map_err(E::custom)
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Dur, E> {
        Err(E::custom(
            "the value is empty; write a duration such as 500ms, 5s, 2m or 1h, or leave the key out for its default",
        ))
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Dur, E> {
        self.visit_unit()
    }
}

impl Serialize for Dur {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ms", self.0.as_millis()))
    }
}

/// A secret value (a password) that never shows in `Debug` or `Display`
/// output and is never serialized: [`Secret::expose`] is the one way to read
/// it, at the place it is sent.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Secret(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_duration_that_does_not_parse_says_what_one_looks_like() {
        let read = |yaml: &str| {
            serde_yaml_ng::from_str::<Dur>(yaml)
                .map(|d| d.ms())
                .map_err(|e| e.to_string())
        };
        assert_eq!(read("60s"), Ok(60_000));
        assert_eq!(read("250"), Ok(250));
        assert_eq!(read("\"2m\""), Ok(120_000));
        for (yaml, says) in [
            ("", "the value is empty"),
            ("~", "the value is empty"),
            ("-5", "cannot be negative"),
            ("1.5", "not a whole number of milliseconds"),
            ("[1]", "a duration such as 500ms"),
            ("abc", "is not a duration"),
            ("-5s", "is not a duration"),
        ] {
            let err = read(yaml).unwrap_err();
            assert!(err.contains(says), "{yaml:?}: {err}");
        }
    }

    #[test]
    fn durations_parse_in_every_form() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("250").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn a_secret_never_prints() {
        let s = Secret::new("hunter2".into());
        assert_eq!(
            format!("{s} {s:?} {:?}", Some(&s)),
            "<redacted> <redacted> Some(<redacted>)"
        );
        assert_eq!(s.expose(), "hunter2");
    }
}
