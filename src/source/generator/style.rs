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
//!
//! [`write_event`] writes any event in any style, and [`read_back`] says
//! what a parser must read from it: the proptests render arbitrary events
//! (quotes, control characters, any Unicode, any user id) in every style
//! and hold the parser to that. JSON values themselves are written by
//! `emit`.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::emit::{decimal_text, emit, float_text, n, rfc3339, s, Digits, Layout, COMPACT, V};
use crate::event::Event;

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
    fn bits(&self, at: u32, n: u32) -> u64 {
        take(self.bits, at, n)
    }

    /// The event a producer `style` writes for this order, before its
    /// clock's precision (see [`read_back`]).
    pub fn event(&self, style: PayloadStyle) -> Event<'static> {
        Event {
            event_id: self.event_id(style).into(),
            order_id: self.order_id(style).into(),
            user_id: self.user.to_string().into(),
            amount_cents: self.cents,
            event_time_ms: self.time_ms,
            city: self.city().into(),
            category: self.category().into(),
        }
    }

    fn city(&self) -> &'static str {
        CITIES[(self.bits % CITIES.len() as u64) as usize]
    }

    fn category(&self) -> &'static str {
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
    fn event_id(&self, style: PayloadStyle) -> String {
        match style {
            PayloadStyle::Js => format!("ev-{}-{}", self.partition, self.offset),
            _ => self.uuid(),
        }
    }

    fn order_id(&self, style: PayloadStyle) -> String {
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

/// Offsets producers' clocks run in, minutes east of UTC.
const OFFSETS: [i32; 5] = [0, 480, 60, -300, 330];

/// `n` of the random `bits`, starting at bit `at`.
fn take(bits: u64, at: u32, n: u32) -> u64 {
    bits.rotate_right(at) & ((1u64 << n) - 1)
}

/// The event-time layout of `style` for a record with random `bits`.
fn clock(style: PayloadStyle, bits: u64) -> Clock {
    let offset_min = OFFSETS[take(bits, 40, 8) as usize % OFFSETS.len()];
    let any_digits = Digits::Fixed([0, 3, 6, 9][take(bits, 48, 2) as usize]);
    let epoch = take(bits, 50, 1) == 1;
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

/// The event a parser must read back from what [`write_event`] writes for
/// `event` in `style` with `bits`: the same event, its time floored to the
/// precision written (a producer that writes whole seconds drops the
/// milliseconds).
pub fn read_back(style: PayloadStyle, event: &Event<'_>, bits: u64) -> Event<'static> {
    let style = style.pick(bits.rotate_left(23));
    let mut event = event.clone().into_owned();
    if let Clock::Text {
        digits: Digits::Fixed(0),
        ..
    } = clock(style, bits)
    {
        event.event_time_ms = event.event_time_ms.div_euclid(1000) * 1000;
    }
    event
}

/// What a producer style writes: an event, and random bits for the
/// producer's per-record choices (clock offset, fraction digits, number or
/// string, key order, extras).
struct Record<'a> {
    event: &'a Event<'a>,
    bits: u64,
}

impl Record<'_> {
    fn bits(&self, at: u32, n: u32) -> u64 {
        take(self.bits, at, n)
    }

    fn cents(&self) -> u64 {
        self.event.amount_cents
    }

    /// The user id as a producer that holds it as a number writes it: a
    /// JSON integer when the text is one (the parser gives back the same
    /// text), else a string.
    fn user_number(&self) -> V {
        let user = &*self.event.user_id;
        let digits = user.strip_prefix('-').unwrap_or(user);
        let integer = !digits.is_empty()
            && digits.bytes().all(|b| b.is_ascii_digit())
            && (digits == "0" || !digits.starts_with('0'))
            && user != "-0";
        if integer {
            n(user)
        } else {
            s(user)
        }
    }

    fn user_text(&self) -> V {
        s(&*self.event.user_id)
    }
}

/// The members a style writes for a record, in its order, and its layout.
fn members(style: PayloadStyle, o: &Record<'_>) -> (Vec<(&'static str, V)>, Layout) {
    let e = o.event;
    let time = match clock(style, o.bits) {
        Clock::EpochMs => n(e.event_time_ms),
        Clock::Text {
            offset_min,
            plus_zero,
            digits,
        } => s(rfc3339(
            e.event_time_ms,
            o.bits(12, 20) as u32 % 1_000_000,
            offset_min,
            plus_zero,
            digits,
        )),
    };
    let (id, order_id) = (s(&*e.event_id), s(&*e.order_id));
    let (city, category) = (s(&*e.city), s(&*e.category));
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
    o: &Record<'_>,
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
        ("price", n(float_text(o.cents() / qty, true))),
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
        ("user_id", o.user_number()),
        ("amount", n(float_text(o.cents(), true))),
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
    o: &Record<'_>,
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
        ("unit_price", n(decimal_text(o.cents() / qty))),
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
        ("user_id", o.user_number()),
        ("event_time", t),
        ("amount", n(decimal_text(o.cents()))),
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

fn go(o: &Record<'_>, id: V, oid: V, t: V, city: V, cat: V) -> (Vec<(&'static str, V)>, Layout) {
    // `,string` on the amount field writes it as a numeric string.
    let amount = float_text(o.cents(), false);
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
        ("user_id", o.user_number()),
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

fn js(o: &Record<'_>, id: V, oid: V, t: V, city: V, cat: V) -> (Vec<(&'static str, V)>, Layout) {
    let session = V::Obj(vec![
        ("id", s(format!("s{:x}", o.bits(16, 40)))),
        (
            "referrer",
            s("https://shop.example.com/cart?step=2&ref=mail"),
        ),
    ]);
    let members = vec![
        ("event_id", id),
        ("user_id", o.user_text()),
        ("order_id", oid),
        ("amount", n(float_text(o.cents(), false))),
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

fn pretty(
    o: &Record<'_>,
    id: V,
    oid: V,
    t: V,
    city: V,
    cat: V,
) -> (Vec<(&'static str, V)>, Layout) {
    let members = vec![
        ("event_id", id),
        ("order_id", oid),
        ("user_id", o.user_text()),
        ("amount", s(decimal_text(o.cents()))),
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

fn reordered(
    o: &Record<'_>,
    id: V,
    oid: V,
    t: V,
    city: V,
    cat: V,
) -> (Vec<(&'static str, V)>, Layout) {
    let user = if o.bits(61, 1) == 1 {
        o.user_number()
    } else {
        o.user_text()
    };
    let mut members = vec![
        ("event_id", id),
        ("order_id", oid),
        ("user_id", user),
        ("amount", s(decimal_text(o.cents()))),
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

/// Writes `event` the way `style`'s producer would, `bits` making the
/// producer's per-record choices (see [`read_back`] for what a parser
/// reads from it). `canonical` is [`Event::to_json`]; `mix` draws one of
/// the producer styles with `bits`. Any event can be written: strings with
/// quotes, control characters and any Unicode, user ids of any text.
pub fn write_event(style: PayloadStyle, event: &Event<'_>, bits: u64, out: &mut Vec<u8>) {
    match style.pick(bits.rotate_left(23)) {
        PayloadStyle::Canonical => out.extend_from_slice(event.to_json().as_bytes()),
        style => write(style, event, bits, None, out),
    }
}

/// Writes `event` in a producer `style` (not `canonical` or `mix`), broken
/// by `defect` if any.
pub(super) fn write(
    style: PayloadStyle,
    event: &Event<'_>,
    bits: u64,
    defect: Option<Defect>,
    out: &mut Vec<u8>,
) {
    let record = Record { event, bits };
    let (mut members, layout) = members(style, &record);
    let mut set = |key: &str, value: V| {
        if let Some(slot) = members.iter_mut().find(|(k, _)| *k == key) {
            slot.1 = value;
        }
    };
    match defect {
        None | Some(Defect::Truncated) | Some(Defect::NotAnObject) => {}
        Some(Defect::NoOrderId) => members.retain(|(k, _)| *k != "order_id"),
        Some(Defect::AmountBool) => set("amount", V::Bool(true)),
        Some(Defect::AmountNegative) => set(
            "amount",
            n(format!("-{}", decimal_text(event.amount_cents.max(1)))),
        ),
        Some(Defect::AmountSubCent) => set("amount", s("12.345")),
        Some(Defect::BadTime) => set("event_time", s("2025-13-45T99:00:00Z")),
        Some(Defect::EventIdNumber) => set("event_id", n(take(bits, 0, 20))),
    }
    let start = out.len();
    if defect == Some(Defect::NotAnObject) {
        let id = members.swap_remove(0).1;
        emit(&V::Arr(vec![id, n(event.event_time_ms)]), &layout, out);
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
