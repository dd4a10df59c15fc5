//! `vigil-json`, Vigil's own reading format: one object or an array of objects
//! `{"metric": "heart_rate", "value": 72, "unit": "/min", "time": "2026-11-25T13:00:00Z"}`.
//!
//! Every element must be usable or the whole payload is rejected: a half-accepted batch would
//! leave the device unable to tell which readings to resend.

use std::fmt;

use serde::de::{self, Deserialize, MapAccess, SeqAccess, Visitor};

use super::json::{self, Any, MAX_ELEMENTS, Quoted};
use super::reading::{DecodeError, RawReading};

pub(crate) fn decode(payload: &[u8]) -> Result<Vec<RawReading>, DecodeError> {
    json::parse(payload, Payload)
}

/// The payload's top level: an object or an array of them.
struct Payload;

impl<'de> Visitor<'de> for Payload {
    type Value = Result<Vec<RawReading>, DecodeError>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object or an array of objects")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let element = Element::read_map(map)?;
        Ok(element
            .into_reading()
            .map(|reading| vec![reading])
            .map_err(|reason| DecodeError::Element { index: 0, reason }))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut readings = Vec::new();
        while let Some(item) = seq.next_element::<Item<'de>>()? {
            let index = readings.len();
            let problem = if index >= MAX_ELEMENTS {
                DecodeError::TooManyElements { max: MAX_ELEMENTS }
            } else {
                match item.into_reading() {
                    Ok(reading) => {
                        readings.push(reading);
                        continue;
                    }
                    Err(reason) => DecodeError::Element { index, reason },
                }
            };
            // Read to the end so that a syntax error later in the payload still wins.
            json::drain_seq(seq)?;
            return Ok(Err(problem));
        }
        if readings.is_empty() {
            return Ok(Err(DecodeError::EmptyArray));
        }
        Ok(Ok(readings))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Err(DecodeError::NotObjectOrArray { found: "null" }))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Err(DecodeError::NotObjectOrArray { found: "a boolean" }))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Err(DecodeError::NotObjectOrArray { found: "a number" }))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Err(DecodeError::NotObjectOrArray { found: "a number" }))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Err(DecodeError::NotObjectOrArray { found: "a number" }))
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Err(DecodeError::NotObjectOrArray { found: "a string" }))
    }
}

/// One array element: an object, or the kind of whatever else stood there.
type Item<'de> = json::ObjectOr<Element<'de>>;

impl Item<'_> {
    fn into_reading(self) -> Result<RawReading, String> {
        self.object()?.into_reading()
    }
}

/// The keys vigil-json defines; any other key is ignored.
#[derive(Clone, Copy)]
enum Key {
    Metric,
    Value,
    Unit,
    Time,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_str<E>(self, key: &str) -> Result<Key, E> {
                Ok(match key {
                    "metric" => Key::Metric,
                    "value" => Key::Value,
                    "unit" => Key::Unit,
                    "time" => Key::Time,
                    _ => Key::Other,
                })
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// One object's fields as found, typed later so errors can say which element and field.
#[derive(Default)]
struct Element<'de> {
    metric: Option<Any<'de>>,
    value: Option<Any<'de>>,
    unit: Option<Any<'de>>,
    time: Option<Any<'de>>,
    duplicate: Option<&'static str>,
}

impl<'de> json::FromMap<'de> for Element<'de> {
    fn from_map<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        Element::read_map(map)
    }
}

impl<'de> Element<'de> {
    fn read_map<A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let mut element = Element::default();
        while let Some(key) = map.next_key::<Key>()? {
            let (slot, name) = match key {
                Key::Metric => (&mut element.metric, "metric"),
                Key::Value => (&mut element.value, "value"),
                Key::Unit => (&mut element.unit, "unit"),
                Key::Time => (&mut element.time, "time"),
                Key::Other => {
                    map.next_value::<de::IgnoredAny>()?;
                    continue;
                }
            };
            let value = map.next_value::<Any<'de>>()?;
            // JSON leaves duplicate keys undefined; a reading that says two things is refused.
            if slot.is_some() {
                element.duplicate.get_or_insert(name);
            } else {
                *slot = Some(value);
            }
        }
        Ok(element)
    }

    fn into_reading(self) -> Result<RawReading, String> {
        if let Some(key) = self.duplicate {
            return Err(format!("duplicate key '{key}'"));
        }
        let metric = match self.metric {
            None | Some(Any::Null) => return Err("no metric".to_owned()),
            Some(Any::Str(name)) if name.is_empty() => return Err("metric is empty".to_owned()),
            Some(Any::Str(name)) => name.into_owned(),
            Some(other) => return Err(format!("metric is {}, not a string", other.kind())),
        };
        let value = match self.value {
            None | Some(Any::Null) => return Err("no value".to_owned()),
            Some(value) => match value.as_f64() {
                Some(number) if number.is_finite() => number,
                Some(_) => return Err("value is not a finite number".to_owned()),
                None => return Err(format!("value is not a number: found {}", value.kind())),
            },
        };
        let unit = match self.unit {
            None | Some(Any::Null) => None,
            Some(Any::Str(unit)) if unit.is_empty() => {
                return Err("unit is empty; omit it for the canonical unit".to_owned());
            }
            Some(Any::Str(unit)) => Some(unit.into_owned()),
            Some(other) => return Err(format!("unit is {}, not a string", other.kind())),
        };
        let time_ms = match self.time {
            None | Some(Any::Null) => None,
            Some(Any::Str(text)) => Some(json::rfc3339_to_ms(&text).ok_or_else(|| {
                format!(
                    "time '{}' is not RFC 3339 or Unix seconds within years 0000-9999",
                    Quoted(&text)
                )
            })?),
            Some(number @ (Any::Int(_) | Any::UInt(_) | Any::Float(_))) => {
                Some(json::unix_seconds_to_ms(&number).ok_or_else(|| {
                    format!("time {number} is out of range for Unix seconds (years 0000-9999)")
                })?)
            }
            Some(other) => {
                return Err(format!(
                    "time is {}, not RFC 3339 or Unix seconds",
                    other.kind()
                ));
            }
        };
        Ok(RawReading {
            metric,
            value,
            unit,
            time_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn reading(metric: &str, value: f64, unit: Option<&str>, time_ms: Option<i64>) -> RawReading {
        RawReading {
            metric: metric.to_owned(),
            value,
            unit: unit.map(str::to_owned),
            time_ms,
        }
    }

    fn element_error(index: usize, reason: &str) -> Result<Vec<RawReading>, DecodeError> {
        Err(DecodeError::Element {
            index,
            reason: reason.to_owned(),
        })
    }

    #[test]
    fn contract_example_object() {
        // The vigil-json shape of `docs/ingest.md`, every field given; 2026-11-25T13:00:00Z = 1795611600 s.
        let payload =
            br#"{"metric": "heart_rate", "value": 72, "unit": "/min", "time": "2026-11-25T13:00:00Z"}"#;
        assert_eq!(
            decode(payload),
            Ok(vec![reading(
                "heart_rate",
                72.0,
                Some("/min"),
                Some(1_795_611_600_000)
            )])
        );
    }

    #[test]
    fn array_with_optional_fields_and_unix_seconds() {
        // Built here from the documented shape: unit and time omitted, Unix seconds
        // (1795611600.5 s = 1795611600500 ms), an offset time (14:00+01:00 = 13:00Z), null
        // unit/time, and an unknown key that is ignored.
        let payload = br#"[
            {"metric": "spo2", "value": 97},
            {"metric": "body_temperature", "value": 37.2, "unit": "Cel", "time": 1795611600.5},
            {"metric": "glucose", "value": 5.6, "unit": "mmol/L", "time": "2026-11-25T14:00:00+01:00", "note": {"a": [1]}},
            {"metric": "steps", "value": -0.0, "unit": null, "time": null},
            {"metric": "heart_rate", "value": 1e2, "time": -1}
        ]"#;
        assert_eq!(
            decode(payload),
            Ok(vec![
                reading("spo2", 97.0, None, None),
                reading(
                    "body_temperature",
                    37.2,
                    Some("Cel"),
                    Some(1_795_611_600_500)
                ),
                reading("glucose", 5.6, Some("mmol/L"), Some(1_795_611_600_000)),
                reading("steps", -0.0, None, None),
                reading("heart_rate", 100.0, None, Some(-1000)),
            ])
        );
    }

    #[test]
    fn escaped_strings_are_unescaped() {
        let payload = br#"{"metric": "heart\u005frate", "value": 72, "unit": "\/min"}"#;
        assert_eq!(
            decode(payload),
            Ok(vec![reading("heart_rate", 72.0, Some("/min"), None)])
        );
    }

    #[test]
    fn element_errors_name_index_and_problem() {
        // Built here: each case breaks one field of the documented object (or the element
        // itself) and expects the reason a device maker sees after "element N: ".
        let cases: &[(&[u8], usize, &str)] = &[
            (br#"{"value": 72}"#, 0, "no metric"),
            (br#"{"metric": "", "value": 72}"#, 0, "metric is empty"),
            (br#"{"metric": 7, "value": 72}"#, 0, "metric is a number, not a string"),
            (br#"{"metric": "heart_rate"}"#, 0, "no value"),
            (br#"{"metric": "heart_rate", "value": null}"#, 0, "no value"),
            (
                br#"{"metric": "heart_rate", "value": "72"}"#,
                0,
                "value is not a number: found a string",
            ),
            (
                br#"{"metric": "heart_rate", "value": true}"#,
                0,
                "value is not a number: found a boolean",
            ),
            (
                br#"{"metric": "heart_rate", "value": [72]}"#,
                0,
                "value is not a number: found an array",
            ),
            (
                br#"{"metric": "heart_rate", "value": 72, "unit": 1}"#,
                0,
                "unit is a number, not a string",
            ),
            (
                br#"{"metric": "heart_rate", "value": 72, "unit": ""}"#,
                0,
                "unit is empty; omit it for the canonical unit",
            ),
            (
                br#"{"metric": "heart_rate", "value": 72, "time": "yesterday"}"#,
                0,
                "time 'yesterday' is not RFC 3339 or Unix seconds within years 0000-9999",
            ),
            (
                br#"{"metric": "heart_rate", "value": 72, "time": 1795611600000}"#,
                0,
                "time 1795611600000 is out of range for Unix seconds (years 0000-9999)",
            ),
            (
                br#"{"metric": "heart_rate", "value": 72, "time": true}"#,
                0,
                "time is a boolean, not RFC 3339 or Unix seconds",
            ),
            (
                br#"{"metric": "heart_rate", "value": 72, "value": 73}"#,
                0,
                "duplicate key 'value'",
            ),
            (
                br#"[{"metric": "spo2", "value": 97}, {"metric": "spo2", "value": 98}, {"metric": "spo2", "value": 99}, {"metric": "spo2", "value": "high"}]"#,
                3,
                "value is not a number: found a string",
            ),
            (br#"[{"metric": "spo2", "value": 97}, 5]"#, 1, "expected an object, found a number"),
            (br#"[[]]"#, 0, "expected an object, found an array"),
            (br#"[null]"#, 0, "expected an object, found null"),
        ];
        for (payload, index, reason) in cases {
            assert_eq!(
                decode(payload),
                element_error(*index, reason),
                "{}",
                String::from_utf8_lossy(payload)
            );
        }
    }

    #[test]
    fn top_level_errors() {
        // Built here: payloads that are not an object or a non-empty array, or not JSON.
        assert_eq!(decode(b"[]"), Err(DecodeError::EmptyArray));
        assert_eq!(decode(b" [ ] "), Err(DecodeError::EmptyArray));
        assert_eq!(
            decode(b"\"heart_rate\""),
            Err(DecodeError::NotObjectOrArray { found: "a string" })
        );
        assert_eq!(
            decode(b"72"),
            Err(DecodeError::NotObjectOrArray { found: "a number" })
        );
        assert_eq!(
            decode(b"null"),
            Err(DecodeError::NotObjectOrArray { found: "null" })
        );
        let Err(DecodeError::Json { line, column, .. }) = decode(b"{\"metric\": }") else {
            panic!("syntax error expected");
        };
        assert_eq!((line, column), (1, 12));
        assert_eq!(
            decode(b"").map_err(|e| e.to_string()),
            Err("invalid JSON at line 1 column 0: EOF while parsing a value".to_owned())
        );
        // Trailing garbage after a valid object.
        assert!(matches!(
            decode(br#"{"metric": "spo2", "value": 97} x"#),
            Err(DecodeError::Json { .. })
        ));
        // A syntax error after a bad element is still reported as a syntax error.
        assert!(matches!(
            decode(br#"[{"metric": 1, "value": 2}, {"#),
            Err(DecodeError::Json { .. })
        ));
        // Invalid UTF-8 inside a string.
        assert!(matches!(
            decode(b"{\"metric\": \"\xff\", \"value\": 1}"),
            Err(DecodeError::Json { .. })
        ));
        // Numbers beyond f64 are a JSON error from the parser.
        assert!(matches!(
            decode(br#"{"metric": "x", "value": 1e400}"#),
            Err(DecodeError::Json { .. })
        ));
    }

    #[test]
    fn error_messages_read_well() {
        assert_eq!(
            decode(br#"[{"metric": "spo2", "value": 97}, {"metric": "spo2", "value": false}]"#)
                .map_err(|e| e.to_string()),
            Err("element 1: value is not a number: found a boolean".to_owned())
        );
        assert_eq!(
            decode(br#"{"metric": "x", "value": 1, "time": "2026-13-01T00:00:00Z"}"#)
                .map_err(|e| e.to_string()),
            Err("element 0: time '2026-13-01T00:00:00Z' is not RFC 3339 or Unix seconds within years 0000-9999".to_owned())
        );
    }

    #[test]
    fn array_is_capped() {
        let element = r#"{"metric":"steps","value":1}"#;
        let at_cap = format!("[{}]", vec![element; MAX_ELEMENTS].join(","));
        assert_eq!(decode(at_cap.as_bytes()).map(|r| r.len()), Ok(MAX_ELEMENTS));
        let over = format!("[{}]", vec![element; MAX_ELEMENTS + 1].join(","));
        assert_eq!(
            decode(over.as_bytes()),
            Err(DecodeError::TooManyElements { max: MAX_ELEMENTS })
        );
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let mut payload = r#"{"metric":"x","value":1,"extra":"#.to_owned();
        payload.push_str(&"[".repeat(100_000));
        assert!(matches!(
            decode(payload.as_bytes()),
            Err(DecodeError::Json { .. })
        ));
    }

    /// Generated reading, with the time rendered either as RFC 3339 or as Unix seconds.
    fn arb_reading() -> impl Strategy<Value = (RawReading, bool)> {
        (
            "[a-z][a-z0-9_]{0,23}",
            // Decimal values with up to 4 fraction digits: their shortest JSON form parses
            // back exactly with serde_json's default (fast) float parser.
            (-1_000_000_000i64..1_000_000_000, 0u32..=4),
            proptest::option::of("[\\[\\]a-zA-Z/%{}0-9.]{1,12}"),
            proptest::option::of(-62_167_219_200_000i64..=253_402_300_799_999),
            any::<bool>(),
        )
            .prop_map(|(metric, (mantissa, scale), unit, time_ms, as_rfc3339)| {
                let value = mantissa as f64 / 10f64.powi(scale as i32);
                (
                    RawReading {
                        metric,
                        value,
                        unit,
                        time_ms,
                    },
                    as_rfc3339,
                )
            })
    }

    fn to_json(reading: &RawReading, as_rfc3339: bool) -> serde_json::Value {
        let mut object = json!({"metric": reading.metric, "value": reading.value});
        if let Some(unit) = &reading.unit {
            object["unit"] = json!(unit);
        }
        if let Some(ms) = reading.time_ms {
            object["time"] = if as_rfc3339 {
                let at =
                    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
                        .unwrap();
                json!(
                    at.format(&time::format_description::well_known::Rfc3339)
                        .unwrap()
                )
            } else {
                json!(ms as f64 / 1000.0)
            };
        }
        object
    }

    proptest! {
        #[test]
        fn round_trip(readings in proptest::collection::vec(arb_reading(), 1..20), single in any::<bool>()) {
            let expected: Vec<RawReading> = readings.iter().map(|(r, _)| r.clone()).collect();
            let document = if single && readings.len() == 1 {
                to_json(&readings[0].0, readings[0].1)
            } else {
                serde_json::Value::Array(readings.iter().map(|(r, f)| to_json(r, *f)).collect())
            };
            let payload = serde_json::to_vec(&document).unwrap();
            prop_assert_eq!(decode(&payload), Ok(expected));
        }

        #[test]
        fn never_panics_on_bytes(payload in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&payload);
        }

        #[test]
        fn never_panics_on_json_like_text(payload in r#"[\[\]{}",:0-9.eE+\- a-z_\\]{0,120}"#) {
            let _ = decode(payload.as_bytes());
        }
    }
}
