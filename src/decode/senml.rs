//! SenML JSON (RFC 8428, `application/senml+json`): an array of records whose base fields
//! (`bn`, `bt`, `bu`, `bv`, `bs`, `bver`) apply to their own record and every later one until
//! changed (§4.1).
//!
//! Vigil's reading of a resolved record: the metric is the record's `n` (the base name names
//! the device, as `docs/ingest.md` says); the value is `bv + v`; the unit is `u`, else `bu`; the time
//! is `bt + t` seconds, relative to `now` below 2^28 (§4.5.3). Only numeric values (`v`) are
//! readings: a record with only `vs`/`vb`/`vd` or only a sum is an error, never dropped.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, MapAccess, SeqAccess, Visitor};

use super::json::{self, Any, MAX_ELEMENTS, Number, Quoted};
use super::reading::{DecodeError, RawReading};

/// The SenML version RFC 8428 defines; a pack declaring a later one must not be used (§4.4).
const SUPPORTED_VERSION: f64 = 10.0;

/// Resolved times below this many seconds are relative to now (RFC 8428 §4.5.3).
const RELATIVE_TIME_LIMIT_S: f64 = 268_435_456.0; // 2^28

pub(crate) fn decode(payload: &[u8], now_ms: i64) -> Result<Vec<RawReading>, DecodeError> {
    json::parse(payload, Pack { now_ms })
}

/// The payload's top level, which must be an array of records.
struct Pack {
    now_ms: i64,
}

impl<'de> Visitor<'de> for Pack {
    type Value = Result<Vec<RawReading>, DecodeError>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a SenML pack (a JSON array of records)")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut readings = Vec::new();
        let mut base = Base::default();
        while let Some(item) = seq.next_element::<Item<'de>>()? {
            let index = readings.len();
            let problem = if index >= MAX_ELEMENTS {
                DecodeError::TooManyElements { max: MAX_ELEMENTS }
            } else {
                let resolved = match item {
                    json::ObjectOr::Object(record) => record.resolve(&mut base, self.now_ms),
                    json::ObjectOr::Other(found) => {
                        Err(format!("expected an object, found {found}"))
                    }
                };
                match resolved {
                    Ok(reading) => {
                        readings.push(reading);
                        continue;
                    }
                    Err(reason) => DecodeError::Record { index, reason },
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

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        json::drain_map(map)?;
        Ok(Err(DecodeError::NotAnArray { found: "an object" }))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Err(DecodeError::NotAnArray { found: "null" }))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Err(DecodeError::NotAnArray { found: "a boolean" }))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Err(DecodeError::NotAnArray { found: "a number" }))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Err(DecodeError::NotAnArray { found: "a number" }))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Err(DecodeError::NotAnArray { found: "a number" }))
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Err(DecodeError::NotAnArray { found: "a string" }))
    }
}

/// The base fields in force, carried from record to record.
#[derive(Default)]
struct Base<'de> {
    name: Option<Cow<'de, str>>,
    time_s: f64,
    unit: Option<Cow<'de, str>>,
    value: f64,
}

/// One array element: a record, or the kind of whatever else stood there.
type Item<'de> = json::ObjectOr<Record<'de>>;

/// The RFC 8428 JSON labels (§5, Table 4) Vigil reads; `l` and other labels are ignored.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Label {
    BaseName,
    BaseTime,
    BaseUnit,
    BaseValue,
    BaseSum,
    BaseVersion,
    Name,
    Unit,
    Value,
    StringValue,
    BooleanValue,
    DataValue,
    Sum,
    Time,
    UpdateTime,
}

const LABELS: usize = 15;

impl Label {
    fn text(self) -> &'static str {
        match self {
            Self::BaseName => "bn",
            Self::BaseTime => "bt",
            Self::BaseUnit => "bu",
            Self::BaseValue => "bv",
            Self::BaseSum => "bs",
            Self::BaseVersion => "bver",
            Self::Name => "n",
            Self::Unit => "u",
            Self::Value => "v",
            Self::StringValue => "vs",
            Self::BooleanValue => "vb",
            Self::DataValue => "vd",
            Self::Sum => "s",
            Self::Time => "t",
            Self::UpdateTime => "ut",
        }
    }
}

enum Key {
    Known(Label),
    /// A label ending in `_`: must be understood (RFC 8428 §4.4), and Vigil understands none.
    MustUnderstand(String),
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a SenML label")
            }
            fn visit_str<E>(self, key: &str) -> Result<Key, E> {
                Ok(Key::Known(match key {
                    "bn" => Label::BaseName,
                    "bt" => Label::BaseTime,
                    "bu" => Label::BaseUnit,
                    "bv" => Label::BaseValue,
                    "bs" => Label::BaseSum,
                    "bver" => Label::BaseVersion,
                    "n" => Label::Name,
                    "u" => Label::Unit,
                    "v" => Label::Value,
                    "vs" => Label::StringValue,
                    "vb" => Label::BooleanValue,
                    "vd" => Label::DataValue,
                    "s" => Label::Sum,
                    "t" => Label::Time,
                    "ut" => Label::UpdateTime,
                    _ if key.ends_with('_') => return Ok(Key::MustUnderstand(key.to_owned())),
                    _ => return Ok(Key::Other),
                }))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// One record's fields as found, typed during resolution so errors can name record and label.
struct Record<'de> {
    fields: [Option<Any<'de>>; LABELS],
    duplicate: Option<Label>,
    must_understand: Option<String>,
}

impl<'de> json::FromMap<'de> for Record<'de> {
    fn from_map<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        Record::read_map(map)
    }
}

impl<'de> Record<'de> {
    fn read_map<A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let mut record = Record {
            fields: [const { None }; LABELS],
            duplicate: None,
            must_understand: None,
        };
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Known(label) => {
                    let value = map.next_value::<Any<'de>>()?;
                    match record.fields.get_mut(label as usize) {
                        Some(slot @ None) => *slot = Some(value),
                        _ => {
                            record.duplicate.get_or_insert(label);
                        }
                    }
                }
                Key::MustUnderstand(label) => {
                    map.next_value::<de::IgnoredAny>()?;
                    record.must_understand.get_or_insert(label);
                }
                Key::Other => {
                    map.next_value::<de::IgnoredAny>()?;
                }
            }
        }
        Ok(record)
    }

    fn take(&mut self, label: Label) -> Option<Any<'de>> {
        self.fields.get_mut(label as usize).and_then(Option::take)
    }

    fn has(&self, label: Label) -> bool {
        matches!(self.fields.get(label as usize), Some(Some(_)))
    }

    fn number(&mut self, label: Label) -> Result<Option<f64>, String> {
        match self.take(label) {
            None => Ok(None),
            Some(value) => match value.as_f64() {
                Some(number) => Ok(Some(number)),
                None => Err(format!(
                    "{} is {}, not a number",
                    label.text(),
                    value.kind()
                )),
            },
        }
    }

    fn string(&mut self, label: Label) -> Result<Option<Cow<'de, str>>, String> {
        match self.take(label) {
            None => Ok(None),
            Some(value) => {
                let kind = value.kind();
                match value.into_str() {
                    Some(text) => Ok(Some(text)),
                    None => Err(format!("{} is {kind}, not a string", label.text())),
                }
            }
        }
    }

    /// Applies this record's base fields to `base`, then resolves the record into a reading.
    fn resolve(mut self, base: &mut Base<'de>, now_ms: i64) -> Result<RawReading, String> {
        if let Some(label) = self.must_understand {
            return Err(format!(
                "label '{}' must be understood (RFC 8428 §4.4) and Vigil does not support it",
                Quoted(&label)
            ));
        }
        if let Some(label) = self.duplicate {
            return Err(format!("duplicate label '{}'", label.text()));
        }

        if let Some(version) = self.number(Label::BaseVersion)? {
            if version < 1.0 || version.fract() != 0.0 {
                return Err(format!(
                    "bver {} is not a positive integer",
                    Number(version)
                ));
            }
            // RFC 8428 §4.4: a pack of a version the receiver does not understand must not be
            // used. Versions below 10 come from the drafts (the RFC's own example says 5).
            if version > SUPPORTED_VERSION {
                return Err(format!(
                    "SenML version {} is newer than version 10, the one Vigil understands",
                    Number(version)
                ));
            }
        }
        if let Some(name) = self.string(Label::BaseName)? {
            base.name = Some(name);
        }
        if let Some(time_s) = self.number(Label::BaseTime)? {
            base.time_s = time_s;
        }
        if let Some(unit) = self.string(Label::BaseUnit)? {
            base.unit = Some(unit);
        }
        if let Some(value) = self.number(Label::BaseValue)? {
            base.value = value;
        }
        // The base sum is checked for its type only: sums are not readings.
        self.number(Label::BaseSum)?;

        let other_values = [Label::StringValue, Label::BooleanValue, Label::DataValue]
            .into_iter()
            .filter(|&label| self.has(label))
            .count();
        if other_values + usize::from(self.has(Label::Value)) > 1 {
            return Err("more than one of v, vs, vb, vd (RFC 8428 allows one value)".to_owned());
        }
        let value = match self.number(Label::Value)? {
            Some(value) => value,
            None if other_values > 0 || self.has(Label::Sum) => {
                return Err("only numeric values (v) are supported".to_owned());
            }
            None => return Err("no value".to_owned()),
        };
        let value = base.value + value;
        if !value.is_finite() {
            return Err("bv + v is not a finite number".to_owned());
        }

        let Some(name) = self.string(Label::Name)? else {
            return Err("no name (n): n names the metric, bn identifies the device".to_owned());
        };
        if name.is_empty() {
            return Err("name (n) is empty".to_owned());
        }
        check_name(base.name.as_deref().unwrap_or(""), &name)?;

        let unit = match self.string(Label::Unit)? {
            Some(unit) => Some(unit),
            None => base.unit.clone(),
        };
        if unit.as_deref() == Some("") {
            return Err("unit is empty; omit u and bu for the canonical unit".to_owned());
        }

        let time_s = base.time_s + self.number(Label::Time)?.unwrap_or(0.0);
        let time_ms = resolve_time(time_s, now_ms)?;

        Ok(RawReading {
            metric: name.into_owned(),
            value,
            unit: unit.map(Cow::into_owned),
            time_ms: Some(time_ms),
        })
    }
}

/// RFC 8428 §4.5.1: the resolved name `bn + n` uses only `A-Z a-z 0-9 - : . / _` and starts
/// with a letter or digit.
fn check_name(base_name: &str, name: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | ':' | '.' | '/' | '_');
    let starts_well = base_name
        .chars()
        .chain(name.chars())
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    if !starts_well || !base_name.chars().chain(name.chars()).all(allowed) {
        return Err(format!(
            "name '{}{}' is not a valid SenML name (RFC 8428 §4.5.1: A-Z a-z 0-9 - : . / _, starting with a letter or digit)",
            Quoted(base_name),
            Quoted(name)
        ));
    }
    Ok(())
}

/// `bt + t` seconds to Unix milliseconds; below 2^28 the time is relative to now.
fn resolve_time(time_s: f64, now_ms: i64) -> Result<i64, String> {
    let out_of_range = || {
        format!(
            "time {} s is out of range (years 0000-9999)",
            Number(time_s)
        )
    };
    let ms = json::seconds_f64_to_ms(time_s).ok_or_else(out_of_range)?;
    let ms = if time_s < RELATIVE_TIME_LIMIT_S {
        now_ms.checked_add(ms).ok_or_else(out_of_range)?
    } else {
        ms
    };
    if json::ms_in_range(ms) {
        Ok(ms)
    } else {
        Err(out_of_range())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Receipt time used by the tests: 2026-11-25T13:00:00Z = 1795611600 s.
    const NOW_MS: i64 = 1_795_611_600_000;

    fn reading(metric: &str, value: f64, unit: Option<&str>, time_ms: i64) -> RawReading {
        RawReading {
            metric: metric.to_owned(),
            value,
            unit: unit.map(str::to_owned),
            time_ms: Some(time_ms),
        }
    }

    fn record_error(index: usize, reason: &str) -> Result<Vec<RawReading>, DecodeError> {
        Err(DecodeError::Record {
            index,
            reason: reason.to_owned(),
        })
    }

    #[test]
    fn rfc8428_single_datapoint() {
        // RFC 8428 §5.1.1: a 1-wire temperature sensor, time "roughly now", no base name, so
        // the whole name is the metric.
        let payload = br#"[{"n":"urn:dev:ow:10e2073a01080063","u":"Cel","v":23.1}]"#;
        assert_eq!(
            decode(payload, NOW_MS),
            Ok(vec![reading(
                "urn:dev:ow:10e2073a01080063",
                23.1,
                Some("Cel"),
                NOW_MS
            )])
        );
    }

    #[test]
    fn rfc8428_multiple_datapoints_with_base_fields() {
        // RFC 8428 §5.1.2 second example: bt 1.276020076001e+09 (2010-06-08T18:01:16.001Z),
        // bu "A", bver 5, relative t -5 … 0 on later records. Resolved times are
        // bt + t: 1276020076001 ms - 5000 ms = 1276020071001 ms, and so on.
        let payload = br#"[
            {"bn":"urn:dev:ow:10e2073a01080063:","bt":1.276020076001e+09,"bu":"A","bver":5,"n":"voltage","u":"V","v":120.1},
            {"n":"current","t":-5,"v":1.2},
            {"n":"current","t":-4,"v":1.3},
            {"n":"current","t":-3,"v":1.4},
            {"n":"current","t":-2,"v":1.5},
            {"n":"current","t":-1,"v":1.6},
            {"n":"current","v":1.7}
        ]"#;
        let bt = 1_276_020_076_001;
        assert_eq!(
            decode(payload, NOW_MS),
            Ok(vec![
                reading("voltage", 120.1, Some("V"), bt),
                reading("current", 1.2, Some("A"), bt - 5000),
                reading("current", 1.3, Some("A"), bt - 4000),
                reading("current", 1.4, Some("A"), bt - 3000),
                reading("current", 1.5, Some("A"), bt - 2000),
                reading("current", 1.6, Some("A"), bt - 1000),
                reading("current", 1.7, Some("A"), bt),
            ])
        );
    }

    #[test]
    fn vitals_pack_with_base_value_and_relative_times() {
        // RFC 8428 §5.1.2 example, adapted to vitals: a watch's base name, heart rate with
        // beat/min (IANA SenML units) and relative times -60 s and now, SpO2 with a base
        // value (bv 90 + v 7 = 97) and an explicit unit overriding bu.
        let payload = br#"[
            {"bn":"urn:dev:mac:0024befffe804ff1:","bu":"beat/min","n":"heart_rate","t":-60,"v":72},
            {"n":"heart_rate","v":74.5},
            {"bv":90,"n":"spo2","u":"%","v":7}
        ]"#;
        assert_eq!(
            decode(payload, NOW_MS),
            Ok(vec![
                reading("heart_rate", 72.0, Some("beat/min"), NOW_MS - 60_000),
                reading("heart_rate", 74.5, Some("beat/min"), NOW_MS),
                reading("spo2", 97.0, Some("%"), NOW_MS),
            ])
        );
    }

    #[test]
    fn base_fields_change_midway() {
        // Built here: the second record changes bt (absolute 1795611600 s) and bu; the third
        // inherits both and adds t 0.25 s → 1795611600250 ms. Fractional relative time
        // -1.5 s → now - 1500 ms.
        let payload = br#"[
            {"bn":"dev1:","n":"body_weight","u":"kg","v":70.2,"t":-1.5},
            {"bt":1795611600,"bu":"[lb_av]","n":"body_weight","v":154.8},
            {"n":"body_weight","v":154.6,"t":0.25},
            {"bn":"dev2:","n":"steps","u":"{steps}","v":12}
        ]"#;
        assert_eq!(
            decode(payload, NOW_MS),
            Ok(vec![
                reading("body_weight", 70.2, Some("kg"), NOW_MS - 1500),
                reading("body_weight", 154.8, Some("[lb_av]"), 1_795_611_600_000),
                reading("body_weight", 154.6, Some("[lb_av]"), 1_795_611_600_250),
                reading("steps", 12.0, Some("{steps}"), 1_795_611_600_000),
            ])
        );
    }

    #[test]
    fn relative_time_boundary() {
        // RFC 8428 §4.5.3: below 2^28 s relative (here 2^28 - 1 s after now), 2^28 and above
        // absolute. 2^28 s = 268435456000 ms.
        let payload = br#"[{"n":"x","v":1,"t":268435455},{"n":"x","v":1,"t":268435456}]"#;
        assert_eq!(
            decode(payload, 0),
            Ok(vec![
                reading("x", 1.0, None, 268_435_455_000),
                reading("x", 1.0, None, 268_435_456_000),
            ])
        );
        // Relative to a different now.
        assert_eq!(
            decode(br#"[{"n":"x","v":1,"t":10}]"#, NOW_MS),
            Ok(vec![reading("x", 1.0, None, NOW_MS + 10_000)])
        );
    }

    #[test]
    fn record_errors() {
        // Built here from the RFC 8428 §5 record shape, one broken rule per case.
        let cases: &[(&[u8], usize, &str)] = &[
            (
                br#"[{"n":"heart_rate","v":72},{"n":"note","vs":"ok"}]"#,
                1,
                "only numeric values (v) are supported",
            ),
            (
                br#"[{"n":"on","vb":true}]"#,
                0,
                "only numeric values (v) are supported",
            ),
            (
                br#"[{"n":"blob","vd":"AAE"}]"#,
                0,
                "only numeric values (v) are supported",
            ),
            // RFC 8428 §4.2: a sum without a value.
            (
                br#"[{"n":"energy","s":10}]"#,
                0,
                "only numeric values (v) are supported",
            ),
            (
                br#"[{"n":"x","v":1},{"n":"x","v":2},{"n":"heart_rate"}]"#,
                2,
                "no value",
            ),
            // A base value alone does not make a value (RFC 8428 §4.2: a value field is required).
            (br#"[{"n":"x","bv":3}]"#, 0, "no value"),
            (
                br#"[{"n":"x","v":1,"vs":"1"}]"#,
                0,
                "more than one of v, vs, vb, vd (RFC 8428 allows one value)",
            ),
            (br#"[{"n":"x","v":"72"}]"#, 0, "v is a string, not a number"),
            (
                br#"[{"n":"x","v":true}]"#,
                0,
                "v is a boolean, not a number",
            ),
            (br#"[{"n":7,"v":1}]"#, 0, "n is a number, not a string"),
            (
                br#"[{"n":"x","u":1,"v":1}]"#,
                0,
                "u is a number, not a string",
            ),
            (
                br#"[{"n":"x","t":"now","v":1}]"#,
                0,
                "t is a string, not a number",
            ),
            (
                br#"[{"bt":null,"n":"x","v":1}]"#,
                0,
                "bt is null, not a number",
            ),
            (
                br#"[{"bn":"urn:dev:ow:1:","v":1}]"#,
                0,
                "no name (n): n names the metric, bn identifies the device",
            ),
            (br#"[{"n":"","v":1}]"#, 0, "name (n) is empty"),
            (
                br#"[{"n":"heart rate","v":1}]"#,
                0,
                "name 'heart rate' is not a valid SenML name (RFC 8428 §4.5.1: A-Z a-z 0-9 - : . / _, starting with a letter or digit)",
            ),
            (
                br#"[{"bn":"_dev:","n":"x","v":1}]"#,
                0,
                "name '_dev:x' is not a valid SenML name (RFC 8428 §4.5.1: A-Z a-z 0-9 - : . / _, starting with a letter or digit)",
            ),
            (
                br#"[{"n":"x","u":"","v":1}]"#,
                0,
                "unit is empty; omit u and bu for the canonical unit",
            ),
            (br#"[{"n":"x","v":1,"v":2}]"#, 0, "duplicate label 'v'"),
            // RFC 8428 §4.4: labels ending in '_' must be understood.
            (
                br#"[{"n":"x","v":1,"cal_":true}]"#,
                0,
                "label 'cal_' must be understood (RFC 8428 §4.4) and Vigil does not support it",
            ),
            // RFC 8428 §4.4: a newer version must not be used.
            (
                br#"[{"bver":11,"n":"x","v":1}]"#,
                0,
                "SenML version 11 is newer than version 10, the one Vigil understands",
            ),
            (
                br#"[{"bver":0,"n":"x","v":1}]"#,
                0,
                "bver 0 is not a positive integer",
            ),
            (
                br#"[{"bver":10.5,"n":"x","v":1}]"#,
                0,
                "bver 10.5 is not a positive integer",
            ),
            (
                br#"[{"n":"x","v":1e308,"bv":1e308}]"#,
                0,
                "bv + v is not a finite number",
            ),
            (
                br#"[{"n":"x","v":1,"bt":1e300}]"#,
                0,
                "time 1e300 s is out of range (years 0000-9999)",
            ),
            (
                br#"[{"n":"x","v":1,"t":253402300800}]"#,
                0,
                "time 253402300800 s is out of range (years 0000-9999)",
            ),
            (
                br#"[{"n":"x","v":1}, 3]"#,
                1,
                "expected an object, found a number",
            ),
        ];
        for (payload, index, reason) in cases {
            assert_eq!(
                decode(payload, NOW_MS),
                record_error(*index, reason),
                "{}",
                String::from_utf8_lossy(payload)
            );
        }
    }

    #[test]
    fn versions_up_to_10_and_unknown_labels_are_accepted() {
        // RFC 8428 §4.4: unknown labels without '_' are ignored; bver 10 is this RFC's version.
        let payload = br#"[{"bver":10,"n":"x","v":1,"ut":60,"l":"link","x-vendor":{"a":1}}]"#;
        assert_eq!(
            decode(payload, NOW_MS),
            Ok(vec![reading("x", 1.0, None, NOW_MS)])
        );
        // A record with both a value and a sum: the value is the reading.
        assert_eq!(
            decode(br#"[{"n":"x","v":2,"s":40,"bs":1}]"#, NOW_MS),
            Ok(vec![reading("x", 2.0, None, NOW_MS)])
        );
    }

    #[test]
    fn relative_time_overflow_is_an_error() {
        assert_eq!(
            decode(br#"[{"n":"x","v":1,"t":-1}]"#, i64::MIN),
            record_error(0, "time -1 s is out of range (years 0000-9999)")
        );
        assert_eq!(
            decode(br#"[{"n":"x","v":1}]"#, i64::MAX),
            record_error(0, "time 0 s is out of range (years 0000-9999)")
        );
    }

    #[test]
    fn pack_errors() {
        // Built here: RFC 8428 §5 says the root is an array of records.
        assert_eq!(decode(b"[]", NOW_MS), Err(DecodeError::EmptyArray));
        assert_eq!(
            decode(br#"{"n":"x","v":1}"#, NOW_MS),
            Err(DecodeError::NotAnArray { found: "an object" })
        );
        assert_eq!(
            decode(b"1", NOW_MS),
            Err(DecodeError::NotAnArray { found: "a number" })
        );
        assert!(matches!(
            decode(br#"[{"n":"x","v":1}"#, NOW_MS),
            Err(DecodeError::Json { .. })
        ));
        assert_eq!(
            decode(br#"[{"n":"x","v":1},{"n":"x"}]"#, NOW_MS).map_err(|e| e.to_string()),
            Err("record 1: no value".to_owned())
        );
        let record = r#"{"n":"steps","v":1}"#;
        let at_cap = format!("[{}]", vec![record; MAX_ELEMENTS].join(","));
        assert_eq!(
            decode(at_cap.as_bytes(), NOW_MS).map(|r| r.len()),
            Ok(MAX_ELEMENTS)
        );
        let over = format!("[{}]", vec![record; MAX_ELEMENTS + 1].join(","));
        assert_eq!(
            decode(over.as_bytes(), NOW_MS),
            Err(DecodeError::TooManyElements { max: MAX_ELEMENTS })
        );
    }

    proptest! {
        #[test]
        fn never_panics_on_bytes(payload in proptest::collection::vec(any::<u8>(), 0..256), now in any::<i64>()) {
            let _ = decode(&payload, now);
        }

        #[test]
        fn never_panics_on_senml_like_text(
            payload in r#"\[(\{("(bn|bt|bu|bv|bs|bver|n|u|v|vs|s|t|x_)":(-?[0-9]{1,12}(\.[0-9]+)?(e[+-]?[0-9]{1,3})?|"[a-z:_ ]{0,8}"|true|null),?){0,6}\},?){0,4}\]"#,
            now in any::<i64>(),
        ) {
            if let Ok(readings) = decode(payload.as_bytes(), now) {
                for r in readings {
                    prop_assert!(r.value.is_finite());
                    prop_assert!(r.time_ms.is_some_and(json::ms_in_range));
                }
            }
        }
    }
}
