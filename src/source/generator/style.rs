//! Payload styles: the generator's orders written the way real producers
//! write JSON, so that benchmarks and tests see what a topic really holds.
//!
//! Every style writes the same order (the same ids, user, cents, instant,
//! city and category) in its own layout. The choices a producer makes per
//! record (which offset a clock has, how many fraction digits, a number or a
//! numeric string) are drawn from the order's own random bits, so a payload
//! stays a pure function of `(seed, partition, offset)`.
//!
//! | style | modelled on |
//! | --- | --- |
//! | `canonical` | [`Event::to_json`](crate::event::Event::to_json)'s layout, byte for byte what the generator always wrote |
//! | `python` | `json.dumps` defaults: `", "` and `": "`, `ensure_ascii` (`\uXXXX`, surrogate pairs), `datetime.isoformat()` with microseconds and `+hh:mm`, `repr(float)` amounts, `None` |
//! | `jackson` | Jackson with snake_case names: compact, keys in declaration order (`order_id` first), `BigDecimal` amounts, `Instant` text or epoch-millisecond numbers, nested value objects |
//! | `go` | `encoding/json`: compact, `<`, `>`, `&` as `\u003c`, `\u003e`, `\u0026`, `time.Time` as RFC 3339 with trimmed nanoseconds and a local offset, keys sorted when the value was a map |
//! | `js` | `JSON.stringify`: compact, `toISOString()` (three digits, `Z`) or `Date.now()`, numeric-string user ids |
//! | `pretty` | spaced out (`{ "key" : value, ... }`, as a pretty printer without line breaks: a record of the file source is one line), amounts as strings, 0/3/6/9 fraction digits and offsets |
//! | `reordered` | every member in a random order, spacing varies, extra fields |
//! | `mix` | each record in one of the six producer styles above (not `canonical`) |
//!
//! Broken records (the anomaly share) are the same eight defects in every
//! style; see [`Defect`].

use std::fmt::Write as _;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How the generator writes its payloads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayloadStyle {
    /// Fields in order, no whitespace, epoch milliseconds, plain ASCII.
    #[default]
    Canonical,
    Python,
    Jackson,
    Go,
    Js,
    Pretty,
    Reordered,
    /// Each record in one of the producer styles, drawn per record.
    Mix,
}

impl PayloadStyle {
    pub const ALL: [PayloadStyle; 8] = [
        PayloadStyle::Canonical,
        PayloadStyle::Python,
        PayloadStyle::Jackson,
        PayloadStyle::Go,
        PayloadStyle::Js,
        PayloadStyle::Pretty,
        PayloadStyle::Reordered,
        PayloadStyle::Mix,
    ];

    /// The producer styles `mix` draws from, with their weights (percent).
    pub const MIX: [(PayloadStyle, u64); 6] = [
        (PayloadStyle::Python, 25),
        (PayloadStyle::Jackson, 20),
        (PayloadStyle::Go, 20),
        (PayloadStyle::Js, 20),
        (PayloadStyle::Pretty, 5),
        (PayloadStyle::Reordered, 10),
    ];

    pub fn name(self) -> &'static str {
        match self {
            PayloadStyle::Canonical => "canonical",
            PayloadStyle::Python => "python",
            PayloadStyle::Jackson => "jackson",
            PayloadStyle::Go => "go",
            PayloadStyle::Js => "js",
            PayloadStyle::Pretty => "pretty",
            PayloadStyle::Reordered => "reordered",
            PayloadStyle::Mix => "mix",
        }
    }

    /// The style one record is written in: `self`, or for `mix` a producer
    /// style drawn with `h`.
    pub fn pick(self, h: u64) -> PayloadStyle {
        if self != PayloadStyle::Mix {
            return self;
        }
        let mut roll = h % 100;
        for (style, weight) in Self::MIX {
            if roll < weight {
                return style;
            }
            roll -= weight;
        }
        PayloadStyle::Python
    }
}

impl std::fmt::Display for PayloadStyle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for PayloadStyle {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|style| style.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|s| s.name()).collect();
                format!("unknown payload style {s:?}: one of {}", names.join(", "))
            })
    }
}

/// What makes a broken record an anomaly; the same eight in every style.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Defect {
    /// Cut in the middle: `malformed_json`.
    Truncated,
    /// A JSON array: `not_an_object`.
    NotAnObject,
    /// No `order_id`: `missing_field:order_id`.
    NoOrderId,
    /// `"amount": true`: `bad_type:amount`.
    AmountBool,
    /// A negative amount: `bad_amount`.
    AmountNegative,
    /// `"12.345"`: `bad_amount`.
    AmountSubCent,
    /// Month 13: `bad_event_time`.
    BadTime,
    /// `event_id` a number: `bad_type:event_id`.
    EventIdNumber,
}

impl Defect {
    pub(super) fn of(h: u64) -> Defect {
        [
            Defect::Truncated,
            Defect::NotAnObject,
            Defect::NoOrderId,
            Defect::AmountBool,
            Defect::AmountNegative,
            Defect::AmountSubCent,
            Defect::BadTime,
            Defect::EventIdNumber,
        ][(h % 8) as usize]
    }
}

/// One simulated order, before any style writes it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Order {
    pub partition: u32,
    pub offset: u64,
    pub user: u64,
    pub cents: u64,
    /// Event time, epoch ms.
    pub time_ms: i64,
    /// Random bits for the city, the category and every per-record choice
    /// of a style.
    pub bits: u64,
}

/// Cities, some of them with non-ASCII names.
const CITIES: [&str; 12] = [
    "Beijing",
    "北京",
    "上海",
    "São Paulo",
    "Zürich",
    "München",
    "Kraków",
    "New York",
    "Paris",
    "東京",
    "Москва",
    "Reykjavík",
];
/// Categories, two with an `&` (which Go escapes).
const CATEGORIES: [&str; 6] = [
    "books",
    "electronics",
    "home & garden",
    "grocery",
    "apparel",
    "toys & games",
];

impl Order {
    /// `n` bits of the order's randomness, starting at bit `at`.
    fn bits(&self, at: u32, n: u32) -> u64 {
        (self.bits.rotate_right(at)) & ((1u64 << n) - 1)
    }

    pub fn city(&self) -> &'static str {
        CITIES[(self.bits % CITIES.len() as u64) as usize]
    }

    pub fn category(&self) -> &'static str {
        CATEGORIES[((self.bits >> 8) % CATEGORIES.len() as u64) as usize]
    }

    /// A UUID-shaped event id, unique per (partition, offset).
    fn uuid(&self) -> String {
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            self.bits >> 32,
            self.partition & 0xffff,
            self.bits(20, 12),
            0x8000 | self.bits(4, 14),
            self.offset & 0xffff_ffff_ffff
        )
    }

    /// The event id a style writes.
    pub fn event_id(&self, style: PayloadStyle) -> String {
        match style {
            PayloadStyle::Js => format!("ev-{}-{}", self.partition, self.offset),
            _ => self.uuid(),
        }
    }

    pub fn order_id(&self, style: PayloadStyle) -> String {
        match style {
            PayloadStyle::Jackson | PayloadStyle::Go => {
                (7_000_000_000_000 + u64::from(self.partition) * 100_000_000_000 + self.offset)
                    .to_string()
            }
            _ => format!("ORD-{}-{:07}", self.partition, self.offset),
        }
    }
}

/// How an event time is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Clock {
    /// Epoch milliseconds, a JSON number.
    EpochMs,
    /// RFC 3339 text in a local offset (minutes east of UTC, 0 written `Z`
    /// unless `plus_zero`).
    Text {
        offset_min: i32,
        plus_zero: bool,
        digits: Digits,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Digits {
    /// Exactly this many fraction digits (0 drops the fraction).
    Fixed(u32),
    /// Nanoseconds with trailing zeros trimmed, no fraction when zero (Go).
    GoTrimmed,
    /// Microseconds, no fraction when zero (Python's `isoformat`).
    PythonMicros,
}

/// Offsets producers' clocks run in, minutes east of UTC.
const OFFSETS: [i32; 5] = [0, 480, 60, -300, 330];

/// The event-time layout of `style` for `order`.
fn clock(style: PayloadStyle, order: &Order) -> Clock {
    let offset_min = OFFSETS[order.bits(40, 8) as usize % OFFSETS.len()];
    let any_digits = Digits::Fixed([0, 3, 6, 9][order.bits(48, 2) as usize]);
    let epoch = order.bits(50, 1) == 1;
    match style {
        PayloadStyle::Canonical => Clock::EpochMs,
        PayloadStyle::Python => Clock::Text {
            offset_min,
            plus_zero: true,
            digits: Digits::PythonMicros,
        },
        PayloadStyle::Jackson | PayloadStyle::Js if epoch => Clock::EpochMs,
        PayloadStyle::Jackson | PayloadStyle::Js => Clock::Text {
            offset_min: 0,
            plus_zero: false,
            digits: Digits::Fixed(3),
        },
        PayloadStyle::Go => Clock::Text {
            offset_min,
            plus_zero: false,
            digits: Digits::GoTrimmed,
        },
        PayloadStyle::Pretty => Clock::Text {
            offset_min,
            plus_zero: false,
            digits: any_digits,
        },
        PayloadStyle::Reordered | PayloadStyle::Mix => Clock::Text {
            offset_min: 0,
            plus_zero: false,
            digits: any_digits,
        },
    }
}

/// The event time a parser must read back from what `style` writes: the
/// written digits, floored to milliseconds.
pub(super) fn written_time_ms(style: PayloadStyle, order: &Order) -> i64 {
    match clock(style, order) {
        Clock::Text {
            digits: Digits::Fixed(0),
            ..
        } => order.time_ms.div_euclid(1000) * 1000,
        _ => order.time_ms,
    }
}

/// The `user_id` a parser must read back (integers become their digits).
pub(super) fn written_user(style: PayloadStyle, order: &Order) -> String {
    match style {
        PayloadStyle::Canonical => format!("u{}", order.user),
        _ => order.user.to_string(),
    }
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

/// RFC 3339 text for `clock` (which must be `Text`), with `sub_ns`
/// (0..1_000_000) more nanoseconds than the millisecond `ms`.
fn rfc3339(ms: i64, sub_ns: u32, offset_min: i32, plus_zero: bool, digits: Digits) -> String {
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
enum V {
    Str(String),
    /// A number literal, written as is.
    Num(String),
    Bool(bool),
    Null,
    Obj(Vec<(&'static str, V)>),
    Arr(Vec<V>),
}

fn s(text: impl Into<String>) -> V {
    V::Str(text.into())
}

fn n(text: impl ToString) -> V {
    V::Num(text.to_string())
}

/// How a producer's serializer lays out and escapes JSON.
struct Layout {
    comma: &'static str,
    colon: &'static str,
    /// A space inside every non-empty `{}` and `[]`.
    pad: bool,
    /// Everything above U+007F as `\uXXXX` (Python's `ensure_ascii`).
    ascii: bool,
    /// `<`, `>`, `&`, U+2028, U+2029 as `\uXXXX` (Go).
    html: bool,
}

const COMPACT: Layout = Layout {
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

fn emit_str(text: &str, layout: &Layout, out: &mut Vec<u8>) {
    out.push(b'"');
    for c in text.chars() {
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
    out.push(b'"');
}

fn pad(layout: &Layout, out: &mut Vec<u8>) {
    if layout.pad {
        out.push(b' ');
    }
}

fn emit(v: &V, layout: &Layout, out: &mut Vec<u8>) {
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
fn float_text(cents: u64, python: bool) -> String {
    match (cents % 100, python) {
        (0, true) => format!("{}.0", cents / 100),
        (0, false) => (cents / 100).to_string(),
        (c, _) if c % 10 == 0 => format!("{}.{}", cents / 100, c / 10),
        (c, _) => format!("{}.{c:02}", cents / 100),
    }
}

/// Cents with exactly two decimals: `12.50`.
fn decimal_text(cents: u64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

/// The members a style writes for `order`, in its order, and its layout.
fn members(style: PayloadStyle, o: &Order) -> (Vec<(&'static str, V)>, Layout) {
    let time = match clock(style, o) {
        Clock::EpochMs => n(o.time_ms),
        Clock::Text {
            offset_min,
            plus_zero,
            digits,
        } => s(rfc3339(
            o.time_ms,
            o.bits(12, 20) as u32 % 1_000_000,
            offset_min,
            plus_zero,
            digits,
        )),
    };
    let (id, order_id) = (s(o.event_id(style)), s(o.order_id(style)));
    let (city, category) = (s(o.city()), s(o.category()));
    let qty = 1 + o.bits(52, 2);
    match style {
        PayloadStyle::Python => python(o, id, order_id, time, city, category, qty),
        PayloadStyle::Jackson => jackson(o, id, order_id, time, city, category, qty),
        PayloadStyle::Go => go(o, id, order_id, time, city, category),
        PayloadStyle::Js => js(o, id, order_id, time, city, category),
        PayloadStyle::Pretty => pretty(o, id, order_id, time, city, category),
        _ => reordered(o, id, order_id, time, city, category),
    }
}

fn python(
    o: &Order,
    id: V,
    oid: V,
    t: V,
    city: V,
    cat: V,
    qty: u64,
) -> (Vec<(&'static str, V)>, Layout) {
    let item = V::Obj(vec![
        ("sku", s(format!("SKU-{:05}", o.bits(24, 16)))),
        ("qty", n(qty)),
        ("price", n(float_text(o.cents / qty, true))),
    ]);
    let meta = V::Obj(vec![
        ("source", s("checkout-api")),
        ("schema", n(2)),
        (
            "note",
            s(if o.bits(54, 1) == 1 {
                "🎁 gift wrap"
            } else {
                ""
            }),
        ),
    ]);
    let coupon = if o.bits(55, 1) == 1 {
        s("SAVE10")
    } else {
        V::Null
    };
    let members = vec![
        ("event_id", id),
        ("order_id", oid),
        ("user_id", n(o.user)),
        ("amount", n(float_text(o.cents, true))),
        ("event_time", t),
        ("city", city),
        ("category", cat),
        ("meta", meta),
        ("items", V::Arr(vec![item])),
        ("coupon", coupon),
    ];
    let layout = Layout {
        comma: ", ",
        colon: ": ",
        ascii: true,
        ..COMPACT
    };
    (members, layout)
}

fn jackson(
    o: &Order,
    id: V,
    oid: V,
    t: V,
    city: V,
    cat: V,
    qty: u64,
) -> (Vec<(&'static str, V)>, Layout) {
    let item = V::Obj(vec![
        ("sku", s(format!("A-{}", o.bits(24, 12)))),
        ("quantity", n(qty)),
        ("unit_price", n(decimal_text(o.cents / qty))),
    ]);
    let address = V::Obj(vec![
        (
            "country",
            s(["DE", "CN", "BR", "US"][o.bits(56, 2) as usize]),
        ),
        ("postal_code", s(format!("{:05}", o.bits(24, 16) % 100_000))),
    ]);
    let members = vec![
        ("order_id", oid),
        ("event_id", id),
        ("user_id", n(o.user)),
        ("event_time", t),
        ("amount", n(decimal_text(o.cents))),
        ("currency", s("EUR")),
        ("city", city),
        ("category", cat),
        ("items", V::Arr(vec![item])),
        (
            "shipping",
            V::Obj(vec![("method", s("STANDARD")), ("address", address)]),
        ),
        ("created_by", s("order-service")),
    ];
    (members, COMPACT)
}

fn go(o: &Order, id: V, oid: V, t: V, city: V, cat: V) -> (Vec<(&'static str, V)>, Layout) {
    // `,string` on the amount field writes it as a numeric string.
    let amount = float_text(o.cents, false);
    let amount = if o.bits(58, 1) == 1 {
        s(amount)
    } else {
        n(amount)
    };
    let client = V::Obj(vec![
        (
            "ip",
            s(format!(
                "10.{}.{}.{}",
                o.bits(24, 8),
                o.bits(32, 8),
                o.bits(16, 8)
            )),
        ),
        ("user_agent", s("Go-http-client/1.1")),
    ]);
    let mut members = vec![
        ("event_id", id),
        ("order_id", oid),
        ("user_id", n(o.user)),
        ("amount", amount),
        ("event_time", t),
        ("city", city),
        ("category", cat),
        ("client", client),
        ("tags", V::Arr(vec![s("promo"), s("<mobile>")])),
    ];
    // A map[string]any is written with its keys sorted.
    if o.bits(59, 1) == 1 {
        members.sort_by_key(|(k, _)| *k);
    }
    let layout = Layout {
        html: true,
        ..COMPACT
    };
    (members, layout)
}

fn js(o: &Order, id: V, oid: V, t: V, city: V, cat: V) -> (Vec<(&'static str, V)>, Layout) {
    let session = V::Obj(vec![
        ("id", s(format!("s{:x}", o.bits(16, 40)))),
        (
            "referrer",
            s("https://shop.example.com/cart?step=2&ref=mail"),
        ),
    ]);
    let members = vec![
        ("event_id", id),
        ("user_id", s(o.user.to_string())),
        ("order_id", oid),
        ("amount", n(float_text(o.cents, false))),
        ("city", city),
        ("category", cat),
        ("event_time", t),
        ("session", session),
        (
            "ua",
            s("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36"),
        ),
        (
            "flags",
            V::Obj(vec![("beta", V::Bool(o.bits(60, 1) == 1)), ("ab", s("B"))]),
        ),
    ];
    (members, COMPACT)
}

fn pretty(o: &Order, id: V, oid: V, t: V, city: V, cat: V) -> (Vec<(&'static str, V)>, Layout) {
    let members = vec![
        ("event_id", id),
        ("order_id", oid),
        ("user_id", s(o.user.to_string())),
        ("amount", s(decimal_text(o.cents))),
        ("event_time", t),
        ("city", city),
        ("category", cat),
        ("source", s("batch-export")),
        (
            "attributes",
            V::Obj(vec![("channel", s("web")), ("retries", n(0))]),
        ),
    ];
    let layout = Layout {
        comma: ",",
        colon: " : ",
        pad: true,
        ..COMPACT
    };
    (members, layout)
}

fn reordered(o: &Order, id: V, oid: V, t: V, city: V, cat: V) -> (Vec<(&'static str, V)>, Layout) {
    let user = if o.bits(61, 1) == 1 {
        n(o.user)
    } else {
        s(o.user.to_string())
    };
    let mut members = vec![
        ("event_id", id),
        ("order_id", oid),
        ("user_id", user),
        ("amount", s(decimal_text(o.cents))),
        ("event_time", t),
        ("city", city),
        ("category", cat),
        ("currency", s("USD")),
        ("channel", s("app")),
        ("discount_cents", n(0)),
    ];
    // Fisher-Yates with the order's bits, re-mixed per step.
    let mut h = o.bits;
    for i in (1..members.len()).rev() {
        h = super::mix(h);
        members.swap(i, (h % (i as u64 + 1)) as usize);
    }
    let spaced = o.bits(62, 1) == 1;
    let layout = Layout {
        comma: if spaced { ", " } else { "," },
        colon: if spaced { ": " } else { ":" },
        ..COMPACT
    };
    (members, layout)
}

/// Writes `order` in `style` (not `canonical` or `mix`), broken by
/// `defect` if any.
pub(super) fn write(style: PayloadStyle, order: &Order, defect: Option<Defect>, out: &mut Vec<u8>) {
    let (mut members, layout) = members(style, order);
    let mut set = |key: &str, value: V| {
        if let Some(slot) = members.iter_mut().find(|(k, _)| *k == key) {
            slot.1 = value;
        }
    };
    match defect {
        None | Some(Defect::Truncated) | Some(Defect::NotAnObject) => {}
        Some(Defect::NoOrderId) => members.retain(|(k, _)| *k != "order_id"),
        Some(Defect::AmountBool) => set("amount", V::Bool(true)),
        Some(Defect::AmountNegative) => set("amount", n(format!("-{}", decimal_text(order.cents)))),
        Some(Defect::AmountSubCent) => set("amount", s("12.345")),
        Some(Defect::BadTime) => set("event_time", s("2025-13-45T99:00:00Z")),
        Some(Defect::EventIdNumber) => set("event_id", n(order.offset)),
    }
    let start = out.len();
    if defect == Some(Defect::NotAnObject) {
        let id = members.swap_remove(0).1;
        emit(&V::Arr(vec![id, n(order.time_ms)]), &layout, out);
        return;
    }
    emit(&V::Obj(members), &layout, out);
    if defect == Some(Defect::Truncated) {
        // Cut at a char boundary in the middle: never a whole object.
        let mut cut = start + (out.len() - start) / 2;
        while std::str::from_utf8(&out[start..cut]).is_err() {
            cut -= 1;
        }
        out.truncate(cut);
    }
}
