//! JSON plumbing shared by the vigil-json and SenML decoders.
//!
//! Both formats are parsed straight from the payload bytes with serde visitors rather than
//! through `serde_json::Value`: field values land in [`Any`], which borrows strings from the
//! payload, so a well-formed reading costs no allocation beyond the `RawReading` itself. Field
//! types are checked after parsing, so errors can name the element and field instead of
//! serde's "invalid type … at line 1 column 37".

use std::borrow::Cow;
use std::fmt;

use serde::Deserializer as _;
use serde::de::{self, Deserialize, IgnoredAny, MapAccess, SeqAccess, Visitor};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::reading::{DecodeError, RawReading};

/// A JSON object that knows how to read itself from a map.
pub(crate) trait FromMap<'de>: Sized {
    fn from_map<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error>;
}

/// One array element: an object, or the kind of whatever else stood there (so the error can
/// say "expected an object, found a string" for that element).
#[allow(
    clippy::large_enum_variant,
    reason = "lives on the stack for one element; boxing would allocate per element"
)]
pub(crate) enum ObjectOr<T> {
    Object(T),
    Other(&'static str),
}

impl<T> ObjectOr<T> {
    /// The object, or the sentence that says what stood there instead.
    pub(crate) fn object(self) -> Result<T, String> {
        match self {
            ObjectOr::Object(t) => Ok(t),
            ObjectOr::Other(found) => Err(format!("expected an object, found {found}")),
        }
    }
}

impl<'de, T: FromMap<'de>> Deserialize<'de> for ObjectOr<T> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ItemVisitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: FromMap<'de>> Visitor<'de> for ItemVisitor<T> {
            type Value = ObjectOr<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::from_map(map).map(ObjectOr::Object)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                drain_seq(seq)?;
                Ok(ObjectOr::Other("an array"))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(ObjectOr::Other("null"))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(ObjectOr::Other("a boolean"))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(ObjectOr::Other("a number"))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(ObjectOr::Other("a number"))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(ObjectOr::Other("a number"))
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok(ObjectOr::Other("a string"))
            }
        }
        deserializer.deserialize_any(ItemVisitor(std::marker::PhantomData))
    }
}

/// Most elements (vigil-json) or records (SenML) accepted in one payload.
pub(crate) const MAX_ELEMENTS: usize = 10_000;

/// 0000-01-01T00:00:00Z in Unix milliseconds: the earliest time RFC 3339 can write.
const MIN_MS: i64 = -62_167_219_200_000;
/// 9999-12-31T23:59:59.999Z in Unix milliseconds: the latest time RFC 3339 can write.
const MAX_MS: i64 = 253_402_300_799_999;

/// Whether `ms` is a time every later stage (storage, RFC 3339 output) can represent.
pub(crate) fn ms_in_range(ms: i64) -> bool {
    (MIN_MS..=MAX_MS).contains(&ms)
}

/// A JSON value of any type; strings borrow from the payload where they contain no escapes.
/// Arrays and objects are skipped and only their kind is kept: no field of either format
/// holds one.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Any<'de> {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(Cow<'de, str>),
    Array,
    Object,
}

impl<'de> Any<'de> {
    /// The kind of value, for error messages: "a string", "an object" …
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::Null => "null",
            Self::Bool(_) => "a boolean",
            Self::Int(_) | Self::UInt(_) | Self::Float(_) => "a number",
            Self::Str(_) => "a string",
            Self::Array => "an array",
            Self::Object => "an object",
        }
    }

    /// The value as a number, if it is one (booleans and numeric strings are not).
    pub(crate) fn as_f64(&self) -> Option<f64> {
        match *self {
            Self::Int(i) => Some(i as f64),
            Self::UInt(u) => Some(u as f64),
            Self::Float(f) => Some(f),
            _ => None,
        }
    }

    /// The value as a string, if it is one.
    pub(crate) fn into_str(self) -> Option<Cow<'de, str>> {
        match self {
            Self::Str(s) => Some(s),
            _ => None,
        }
    }
}

impl fmt::Display for Any<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Int(i) => write!(f, "{i}"),
            Self::UInt(u) => write!(f, "{u}"),
            Self::Float(x) => write!(f, "{}", Number(*x)),
            Self::Str(s) => write!(f, "'{}'", Quoted(s)),
            other => f.write_str(other.kind()),
        }
    }
}

impl<'de> Deserialize<'de> for Any<'de> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(AnyVisitor)
    }
}

struct AnyVisitor;

impl<'de> Visitor<'de> for AnyVisitor {
    type Value = Any<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<Any<'de>, E> {
        Ok(Any::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Any<'de>, E> {
        Ok(Any::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Any<'de>, E> {
        Ok(Any::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Any<'de>, E> {
        Ok(Any::UInt(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Any<'de>, E> {
        Ok(Any::Float(v))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Any<'de>, E> {
        Ok(Any::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Any<'de>, E> {
        Ok(Any::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Any<'de>, E> {
        Ok(Any::Str(Cow::Owned(v)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Any<'de>, A::Error> {
        drain_seq(seq)?;
        Ok(Any::Array)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Any<'de>, A::Error> {
        drain_map(map)?;
        Ok(Any::Object)
    }
}

/// Consumes the rest of an array without keeping it.
pub(crate) fn drain_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

/// Consumes the rest of an object without keeping it.
pub(crate) fn drain_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

/// Parses a whole payload with `visitor`, which reports problems with the content as its
/// `Ok(Err(..))` value after consuming all of its input; `Err` is left for JSON syntax.
pub(crate) fn parse<'de, V>(payload: &'de [u8], visitor: V) -> Result<Vec<RawReading>, DecodeError>
where
    V: Visitor<'de, Value = Result<Vec<RawReading>, DecodeError>>,
{
    let mut de = serde_json::Deserializer::from_slice(payload);
    let parsed = de.deserialize_any(visitor);
    match parsed.and_then(|decoded| de.end().map(|()| decoded)) {
        Ok(decoded) => decoded,
        Err(e) => Err(syntax_error(&e)),
    }
}

fn syntax_error(e: &serde_json::Error) -> DecodeError {
    let (line, column) = (e.line(), e.column());
    let full = e.to_string();
    // serde_json appends the position to its message; it has its own fields here.
    let reason = full
        .strip_suffix(&format!(" at line {line} column {column}"))
        .unwrap_or(&full)
        .to_owned();
    DecodeError::Json {
        line,
        column,
        reason,
    }
}

/// A number for an error message: plain up to 10^15, scientific beyond (1e300, not 301
/// digits).
pub(crate) struct Number(pub(crate) f64);

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.abs() < 1e15 {
            write!(f, "{}", self.0)
        } else {
            write!(f, "{:e}", self.0)
        }
    }
}

/// A string for an error message: escaped, and cut after 64 characters.
pub(crate) struct Quoted<'a>(pub(crate) &'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MAX_CHARS: usize = 64;
        let mut chars = self.0.chars();
        for c in chars.by_ref().take(MAX_CHARS) {
            write!(f, "{}", c.escape_debug())?;
        }
        if chars.next().is_some() {
            f.write_str("…")?;
        }
        Ok(())
    }
}

/// Seconds (possibly fractional) to milliseconds, rounded to the nearest millisecond
/// (binary fractions like 0.123 are not exact, so truncating would lose a millisecond).
/// `None` when not finite or far outside any representable time.
pub(crate) fn seconds_f64_to_ms(seconds: f64) -> Option<i64> {
    // 2^62 ms is about 146 million years: beyond every valid time, within i64.
    const LIMIT: f64 = 4_611_686_018_427_387_904.0;
    let ms = (seconds * 1000.0).round();
    (ms.is_finite() && ms.abs() < LIMIT).then_some(ms as i64)
}

/// A JSON number of Unix seconds to Unix milliseconds within years 0000–9999; integers are
/// converted exactly.
pub(crate) fn unix_seconds_to_ms(seconds: &Any<'_>) -> Option<i64> {
    let ms = match *seconds {
        Any::Int(s) => s.checked_mul(1000)?,
        Any::UInt(s) => i64::try_from(s).ok()?.checked_mul(1000)?,
        Any::Float(s) => seconds_f64_to_ms(s)?,
        _ => return None,
    };
    ms_in_range(ms).then_some(ms)
}

/// An RFC 3339 date-time (any offset) to Unix milliseconds UTC; sub-millisecond digits are
/// truncated toward the past.
pub(crate) fn rfc3339_to_ms(text: &str) -> Option<i64> {
    let at = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    let ms = i64::try_from(at.unix_timestamp_nanos().div_euclid(1_000_000)).ok()?;
    ms_in_range(ms).then_some(ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn range_limits_are_the_rfc3339_years() {
        // Built here: the limits must be exactly 0000-01-01 and the last millisecond of 9999.
        let min = datetime!(0000-01-01 00:00:00 UTC).unix_timestamp() * 1000;
        let max = datetime!(9999-12-31 23:59:59.999 UTC).unix_timestamp_nanos() / 1_000_000;
        assert_eq!(MIN_MS, min);
        assert_eq!(i128::from(MAX_MS), max);
    }

    #[test]
    fn rfc3339_offsets_and_fractions() {
        // RFC 3339 §5.8 examples.
        assert_eq!(
            rfc3339_to_ms("1985-04-12T23:20:50.52Z"),
            Some(482_196_050_520)
        );
        assert_eq!(
            rfc3339_to_ms("1996-12-19T16:39:57-08:00"),
            Some(851_042_397_000)
        );
        // Built here: 2026-11-25T13:00:00Z is 1795611600 s (date -u -d … +%s), and the same
        // instant written with +01:00.
        assert_eq!(
            rfc3339_to_ms("2026-11-25T13:00:00Z"),
            Some(1_795_611_600_000)
        );
        assert_eq!(
            rfc3339_to_ms("2026-11-25T14:00:00+01:00"),
            Some(1_795_611_600_000)
        );
        // Sub-millisecond digits truncate toward the past, also before 1970.
        assert_eq!(rfc3339_to_ms("1970-01-01T00:00:00.0019Z"), Some(1));
        assert_eq!(rfc3339_to_ms("1969-12-31T23:59:59.9991Z"), Some(-1));
        assert_eq!(rfc3339_to_ms("2026-11-25 13:00:00"), None);
        assert_eq!(rfc3339_to_ms("0000-01-01T00:00:00+01:00"), None);
    }

    #[test]
    fn seconds_conversion() {
        assert_eq!(
            unix_seconds_to_ms(&Any::Int(1_795_611_600)),
            Some(1_795_611_600_000)
        );
        // 0.123 s is not exact in binary; rounding keeps the millisecond.
        assert_eq!(
            unix_seconds_to_ms(&Any::Float(1_795_611_600.123)),
            Some(1_795_611_600_123)
        );
        assert_eq!(unix_seconds_to_ms(&Any::Int(-62_167_219_201)), None);
        assert_eq!(unix_seconds_to_ms(&Any::Int(253_402_300_800)), None);
        assert_eq!(unix_seconds_to_ms(&Any::Int(i64::MAX)), None);
        assert_eq!(unix_seconds_to_ms(&Any::UInt(u64::MAX)), None);
        assert_eq!(unix_seconds_to_ms(&Any::Float(f64::INFINITY)), None);
        assert_eq!(seconds_f64_to_ms(f64::NAN), None);
        assert_eq!(seconds_f64_to_ms(-1e300), None);
    }

    #[test]
    fn quoted_escapes_and_truncates() {
        assert_eq!(Quoted("a\"b\n").to_string(), "a\\\"b\\n");
        let long = "x".repeat(100);
        assert_eq!(Quoted(&long).to_string(), format!("{}…", "x".repeat(64)));
    }
}
