//! The bytes a simulated device publishes: readings as `vigil-json`, as SenML (RFC 8428) or as
//! the value bytes of a Bluetooth GATT health characteristic; its status; and the malformed
//! payloads a real fleet produces, each of which Vigil must refuse with a dead letter.
//!
//! Everything here is pure and deterministic. A `variant` (any `u64`, typically drawn from the
//! simulator's RNG) picks among the equivalent spellings each format allows, so that a fleet
//! exercises all of them: object or array, units other than the canonical one, RFC 3339 times
//! with any offset or Unix seconds, SenML base values, GATT flag combinations. This module must
//! never do I/O or read a clock, and must not depend on the gateway crate (only its tests do):
//! the metric table below restates what the gateway's `docs/metrics.md` and `docs/ingest.md` promise devices.
//!
//! Encodings are exact. In vigil-json and SenML a value comes back from Vigil as the very same
//! `f64` and its time to the millisecond: another unit is used only when the converted number
//! reads and converts back to the same value. (One caveat is Vigil's: its JSON parser, serde_json
//! without `float_roundtrip`, may miss a number that needs 17 significant digits by an ulp; such
//! numbers only arise from full-precision canonical values, never in another unit.) In GATT a value comes back within one step of the wire's
//! resolution (SFLOAT keeps 3–4 significant digits, FLOAT 7, weight 0.005 kg or 0.01 lb, heart
//! rate 2a37 whole beats per minute) and its time truncated to the second (DateTime, UTC);
//! rounding never carries a plausible value out of its plausible range. Some GATT spellings carry
//! no time, and Vigil then stamps the receipt time: always for heart rate 2a37 and PLX
//! continuous 2a5f, and for one variant in eight of 2a35, 2a9d, 2a5e and 2a1c — see
//! [`keeps_time`].

use std::fmt::Write as _;
use std::ops::RangeInclusive;

use time::OffsetDateTime;

/// One reading in the metric's canonical unit (`docs/metrics.md`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    /// Canonical metric name: `heart_rate`, `bp_systolic`, …
    pub metric: &'static str,
    /// The value in the metric's canonical unit (`/min`, `mm[Hg]`, `Cel`, `kg`, `mg/dL` …).
    pub value: f64,
    /// When it was measured, Unix milliseconds UTC.
    pub time_ms: i64,
}

/// How a device writes its readings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Vigil's own JSON on the `readings` topic; every profile accepts it.
    VigilJson,
    /// SenML JSON on the `readings` topic. Some variants set no content type and rely on the
    /// device's profile declaring `senml-json` (smartwatch, cgm), as MQTT 3.1.1 devices must.
    Senml,
    /// The raw value of a Bluetooth GATT characteristic on `gatt/{uuid16}`: `2a37` heart rate,
    /// `2a35` blood pressure, `2a18` glucose, `2a9d` weight, `2a5e` / `2a5f` pulse oximetry,
    /// `2a1c` temperature (lowercase, as in the topic).
    Gatt(&'static str),
}

/// A payload ready to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    /// The topic suffix after `vigil/v1/devices/{id}/`: `readings` or `gatt/2a35`.
    pub suffix: String,
    /// The payload bytes.
    pub bytes: Vec<u8>,
    /// The MQTT 5 content type to set, if any.
    pub content_type: Option<&'static str>,
}

/// The MQTT 5 content type that makes Vigil read a `readings` payload as SenML.
pub const SENML_CONTENT_TYPE: &str = "application/senml+json";
/// The content type some vigil-json variants set (Vigil reads any type but SenML's as vigil-json).
pub const JSON_CONTENT_TYPE: &str = "application/json";

const READINGS: &str = "readings";

/// Encodes readings taken together (e.g. systolic, diastolic, mean and pulse of one cuff
/// measurement, or a batch of a stream's samples) as one payload.
///
/// `variant` picks among equivalent spellings (see the module documentation). Returns `None`
/// when the encoding cannot carry these readings: no reading, a value that is not finite, a
/// SenML time before 1978 (RFC 8428 reads it as relative to now), or for GATT a set of metrics
/// the characteristic does not hold (2a35 without systolic, 2a37 with SpO2, two heart rates),
/// readings at different times, a value the field cannot hold (weight above 327.67 kg, a
/// negative heart rate) or a time outside the years 1582–9999, and an unknown characteristic.
///
/// GATT 2a5e and 2a5f are interchangeable when no time is carried: a spot-check without its
/// timestamp may be sent as a continuous measurement and the other way round, so the suffix
/// can name the other PLX characteristic.
pub fn encode(
    device_id: &str,
    encoding: Encoding,
    readings: &[Reading],
    variant: u64,
) -> Option<Payload> {
    if readings.is_empty() || readings.iter().any(|r| !r.value.is_finite()) {
        return None;
    }
    let mut c = Choices::new(variant);
    match encoding {
        Encoding::VigilJson => Some(vigil_json(readings, &mut c)),
        Encoding::Senml => senml(device_id, readings, &mut c),
        Encoding::Gatt(uuid) => {
            let keep_time = keeps_time(encoding, variant);
            Gatt::build(uuid, readings, keep_time, true, &mut c).map(|g| g.payload())
        }
    }
}

/// Whether [`encode`] with this encoding and variant carries the readings' own time. When it
/// does not, Vigil stamps the reading with the time it receives it. GATT times are whole seconds.
pub fn keeps_time(encoding: Encoding, variant: u64) -> bool {
    const SALT: u64 = 0x5449_4D45; // "TIME"
    match encoding {
        Encoding::VigilJson | Encoding::Senml | Encoding::Gatt("2a18") => true,
        Encoding::Gatt("2a37" | "2a5f") => false,
        Encoding::Gatt(_) => !mix(variant ^ SALT).is_multiple_of(8),
    }
}

/// The status payload, `{"battery": n}`; `n` above 100 is sent as 100.
pub fn status(battery: u8) -> Vec<u8> {
    format!("{{\"battery\":{}}}", battery.min(100)).into_bytes()
}

/// Kinds of bad payload a real fleet produces, each of which Vigil must refuse with a dead
/// letter. Each is written in the device's own encoding where that encoding can be wrong in
/// this way, and otherwise on the `readings` topic as vigil-json (which every profile accepts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// Not JSON at all: `key=value`, single quotes, XML, UTF-16, NaN, SenML as CBOR.
    NotJson,
    /// A valid JSON payload cut short.
    Truncated,
    /// No bytes at all (on the GATT topic for a GATT device).
    Empty,
    /// A metric no profile has (`hrv_rmssd`, `body_fat`, `HeartRate` …).
    UnknownMetric,
    /// A unit of another quantity or in the wrong case (`Hz`, `K`, `mg/dl`, `KG` …).
    WrongUnit,
    /// The value as a string, `null`, a boolean; in SenML `vs`/`vb` instead of `v`.
    ValueNotNumber,
    /// A value outside the metric's physiologically plausible range (SpO2 127, weight 0 …).
    OutOfRange,
    /// A fraction where only whole numbers make sense (steps, ACVPU, on oxygen); devices
    /// whose metrics are all fractional send steps, which their profile does not know either.
    NotWholeNumber,
    /// A time far ahead of `now` (an hour to a year; a local time sent as UTC).
    FarFuture,
    /// A time before 2000: the device's clock was never set (1970, 1980, 1999).
    ClockNotSet,
    /// A time that is no moment: 30 February, month 13, hour 24, no offset, milliseconds sent
    /// as seconds, a SenML time as a string.
    BadTimestamp,
    /// A GATT value shorter than its flags declare.
    TruncatedGatt,
    /// A GATT value longer than its flags declare (e.g. a timestamp without its flag).
    GattTrailingBytes,
    /// An IEEE 11073 special value (SFLOAT/FLOAT NaN, NRes, ±INF, reserved) where a number is
    /// needed; weight 0xFFFF; heart rate 2a37, which has none, sends "no sensor contact".
    GattReservedValue,
    /// A value the device marks as unusable: no sensor contact, control solution, strip or
    /// sensor fault, PLX measurement invalid, weighing unsuccessful. 2a35 and 2a1c have no such
    /// flag Vigil reads, and send a reserved value instead.
    GattDeviceFault,
    /// A GATT characteristic no profile accepts: intermediate cuff pressure 2a36, battery
    /// level 2a19, environmental temperature 2a6e.
    UnknownCharacteristic,
}

impl Malformed {
    /// Every kind.
    pub const ALL: [Malformed; 16] = [
        Malformed::NotJson,
        Malformed::Truncated,
        Malformed::Empty,
        Malformed::UnknownMetric,
        Malformed::WrongUnit,
        Malformed::ValueNotNumber,
        Malformed::OutOfRange,
        Malformed::NotWholeNumber,
        Malformed::FarFuture,
        Malformed::ClockNotSet,
        Malformed::BadTimestamp,
        Malformed::TruncatedGatt,
        Malformed::GattTrailingBytes,
        Malformed::GattReservedValue,
        Malformed::GattDeviceFault,
        Malformed::UnknownCharacteristic,
    ];

    /// A short snake_case name for logs and reports.
    pub fn name(self) -> &'static str {
        match self {
            Malformed::NotJson => "not_json",
            Malformed::Truncated => "truncated",
            Malformed::Empty => "empty",
            Malformed::UnknownMetric => "unknown_metric",
            Malformed::WrongUnit => "wrong_unit",
            Malformed::ValueNotNumber => "value_not_number",
            Malformed::OutOfRange => "out_of_range",
            Malformed::NotWholeNumber => "not_whole_number",
            Malformed::FarFuture => "far_future",
            Malformed::ClockNotSet => "clock_not_set",
            Malformed::BadTimestamp => "bad_timestamp",
            Malformed::TruncatedGatt => "truncated_gatt",
            Malformed::GattTrailingBytes => "gatt_trailing_bytes",
            Malformed::GattReservedValue => "gatt_reserved_value",
            Malformed::GattDeviceFault => "gatt_device_fault",
            Malformed::UnknownCharacteristic => "unknown_characteristic",
        }
    }
}

/// A malformed payload for a device with this encoding, at `now_ms` (`FarFuture` is far ahead
/// of it). Readings in it are about `heart_rate`, or for a GATT device the characteristic's
/// first metric; use [`malformed_for`] to name a metric the device's profile has, so that the
/// payload fails on the intended check rather than as an unknown metric.
pub fn malformed(kind: Malformed, encoding: Encoding, now_ms: i64, variant: u64) -> Payload {
    let metric = match encoding {
        Encoding::Gatt(uuid) => characteristic(uuid).map_or("heart_rate", |(_, m)| m[0]),
        Encoding::VigilJson | Encoding::Senml => "heart_rate",
    };
    malformed_for(kind, encoding, metric, now_ms, variant)
}

/// A malformed payload about `metric` (a canonical name; unknown names mean `heart_rate`). For
/// a GATT device the characteristic's field for `metric` is the one made wrong (its first
/// metric's when it has none for `metric`); for a JSON device the GATT kinds are written on the
/// characteristic that carries `metric` (2a37 for metrics no characteristic carries).
pub fn malformed_for(
    kind: Malformed,
    encoding: Encoding,
    metric: &str,
    now_ms: i64,
    variant: u64,
) -> Payload {
    let mut c = Choices::new(variant);
    let info = metric_info(metric).unwrap_or(&METRICS[0]);
    let format = if encoding == Encoding::Senml {
        Format::Senml
    } else {
        Format::VigilJson
    };
    // The device's own characteristic, or the one a JSON device's GATT kinds use.
    let own = match encoding {
        Encoding::Gatt(uuid) => characteristic(uuid),
        Encoding::VigilJson | Encoding::Senml => None,
    };
    let (uuid, carried) = match own {
        Some((uuid, metrics)) => (
            uuid,
            metrics
                .iter()
                .copied()
                .find(|m| *m == info.name)
                .unwrap_or(metrics[0]),
        ),
        None => (characteristic_for(info.name), info.name),
    };
    let recent = now_ms.saturating_sub(60_000);
    let text = |readings: &[Reading], c: &mut Choices| text_payload(format, readings, c);

    match kind {
        Malformed::NotJson => readings_payload(format, not_json(format, info, &mut c)),
        Malformed::Truncated => {
            let whole = text(&[typical(info, recent)], &mut c);
            let cut = 1 + c.below(whole.bytes.len().saturating_sub(1).max(1));
            Payload {
                bytes: whole.bytes[..cut.min(whole.bytes.len())].to_vec(),
                ..whole
            }
        }
        Malformed::Empty => match own {
            Some(_) => gatt_payload(uuid, Vec::new()),
            None => readings_payload(format, Vec::new()),
        },
        Malformed::UnknownMetric => {
            let name = c.pick(&UNKNOWN_METRICS);
            let value = 10.0 + c.below(90) as f64;
            text(
                &[Reading {
                    metric: name,
                    value,
                    time_ms: recent,
                }],
                &mut c,
            )
        }
        Malformed::WrongUnit => {
            let (unit, value) = c.pick(&info.wrong_units);
            let record = Handmade {
                metric: info.name,
                value_key: "v",
                value: number(value, true),
                unit: Some(unit),
                time: Some(time_json(format, recent)),
                time_key: "t",
            };
            readings_payload(format, record.write(format))
        }
        Malformed::ValueNotNumber => {
            let typical = number(info.typical, true);
            let (value_key, value) = match (format, c.below(4)) {
                (Format::Senml, 0) => ("vs", json_str(&typical)),
                (Format::Senml, 1) => ("vb", "true".to_owned()),
                (_, 0 | 1) => ("v", json_str(&typical)),
                (_, 2) => ("v", json_str(&format!("{typical} {}", info.unit))),
                (Format::Senml, _) => ("v", "null".to_owned()),
                (Format::VigilJson, _) => ("v", "true".to_owned()),
            };
            let record = Handmade {
                metric: info.name,
                value_key,
                value,
                unit: None,
                time: Some(time_json(format, recent)),
                time_key: "t",
            };
            readings_payload(format, record.write(format))
        }
        Malformed::OutOfRange => {
            let start = c.below(info.out_of_range.len());
            if own.is_some()
                && let Some(mut g) = typical_gatt(uuid, recent, &mut c)
            {
                let carried = metric_info(carried).unwrap_or(info);
                for k in 0..carried.out_of_range.len() {
                    let value = carried.out_of_range[(start + k) % carried.out_of_range.len()];
                    if g.set(carried.name, value) {
                        return g.payload();
                    }
                }
            }
            let value = info.out_of_range[start];
            text(&[reading(info, value, recent)], &mut c)
        }
        Malformed::NotWholeNumber => {
            let info = if info.integral {
                info
            } else {
                metric_info("steps").unwrap_or(info)
            };
            let value = info.typical.floor() + c.pick(&[0.5, 0.25, 0.75]);
            text(&[reading(info, value, recent)], &mut c)
        }
        Malformed::FarFuture => {
            let ahead = c.pick(&[HOUR, 10 * HOUR, DAY, 30 * DAY, 365 * DAY]);
            let at = now_ms.saturating_add(ahead);
            timed(own.map(|_| uuid), info, carried, at, format, &mut c)
        }
        Malformed::ClockNotSet => {
            // 0 (1970) would be "now" in SenML, where times below 2^28 s are relative.
            let at = match format {
                Format::Senml => c.pick(&[Y1980_MS, Y1990_MS, LAST_SECOND_OF_1999_MS]),
                Format::VigilJson => c.pick(&[0, Y1980_MS, Y1990_MS, LAST_SECOND_OF_1999_MS]),
            };
            timed(own.map(|_| uuid), info, carried, at, format, &mut c)
        }
        Malformed::BadTimestamp => {
            if own.is_some()
                && let Some(mut g) = typical_gatt(uuid, recent, &mut c)
                && let Some(stamp) = g.stamp_mut()
            {
                corrupt(stamp, &mut c);
                return g.payload();
            }
            readings_payload(format, bad_time(format, info, recent, &mut c))
        }
        Malformed::TruncatedGatt | Malformed::GattTrailingBytes => {
            let Some(mut g) = typical_gatt(uuid, recent, &mut c) else {
                return readings_payload(format, Vec::new());
            };
            // RR intervals fill the rest of a heart-rate value: without them its length is fixed.
            if let Gatt::HeartRate(h) = &mut g {
                h.rr = None;
            }
            let mut bytes = g.bytes();
            if kind == Malformed::TruncatedGatt {
                let cut = 1 + c.below(bytes.len().saturating_sub(1).clamp(1, 4));
                bytes.truncate(bytes.len().saturating_sub(cut).max(1));
            } else if let Some(stamp) = g.stamp_mut().filter(|_| c.flip()).map(|s| *s) {
                // The timestamp written without its flag.
                g.clear_stamp();
                bytes = g.bytes();
                bytes.extend_from_slice(&stamp);
            } else {
                bytes.extend((0..=c.below(3)).map(|_| c.next() as u8));
            }
            gatt_payload(g.uuid(), bytes)
        }
        Malformed::GattReservedValue | Malformed::GattDeviceFault => {
            let Some(mut g) = typical_gatt(uuid, recent, &mut c) else {
                return readings_payload(format, Vec::new());
            };
            if kind == Malformed::GattReservedValue {
                g.reserved(carried, &mut c);
            } else {
                g.fault(carried, &mut c);
            }
            g.payload()
        }
        Malformed::UnknownCharacteristic => match c.below(3) {
            // Intermediate Cuff Pressure: the 2a35 layout, cuff pressure 150 mmHg, NaN, NaN.
            0 => gatt_payload("2a36", vec![0x00, 0x96, 0x00, 0xFF, 0x07, 0xFF, 0x07]),
            // Battery Level: one byte, percent.
            1 => gatt_payload("2a19", vec![c.below(101) as u8]),
            // Temperature (environmental sensing): sint16 in 0.01 °C, 21.50 °C.
            _ => gatt_payload("2a6e", 2150i16.to_le_bytes().to_vec()),
        },
    }
}

// ---- The metric table (`docs/metrics.md`) ----

/// A unit and how a value in it maps onto the canonical unit: `canonical = value × scale +
/// offset`, computed as Vigil computes it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Unit {
    name: &'static str,
    scale: f64,
    offset: f64,
}

const fn same(name: &'static str) -> Unit {
    Unit {
        name,
        scale: 1.0,
        offset: 0.0,
    }
}

const fn scaled(name: &'static str, scale: f64) -> Unit {
    Unit {
        name,
        scale,
        offset: 0.0,
    }
}

/// mmHg per kPa, as the Bluetooth blood-pressure profile gives it.
const MMHG_PER_KPA: f64 = 7.500_62;
/// mg/dL of glucose per mmol/L (molar mass 180.156 g/mol).
const MGDL_PER_MMOLL: f64 = 18.0156;
/// Kilograms per avoirdupois pound, exact by definition.
const KG_PER_LB: f64 = 0.453_592_37;

const CANONICAL: Unit = same("");
const KPA: Unit = scaled("kPa", MMHG_PER_KPA);
const MMOLL: Unit = scaled("mmol/L", MGDL_PER_MMOLL);
const POUND: Unit = scaled("[lb_av]", KG_PER_LB);
const FAHRENHEIT: Unit = Unit {
    name: "[degF]",
    scale: 5.0 / 9.0,
    offset: -32.0 * 5.0 / 9.0,
};

/// What this module needs to know of one metric.
struct MetricInfo {
    name: &'static str,
    /// The canonical UCUM unit.
    unit: &'static str,
    /// The physiologically plausible range, inclusive, canonical unit.
    range: (f64, f64),
    /// Only whole numbers make sense.
    integral: bool,
    /// A value typical of a patient at rest.
    typical: f64,
    /// The other units vigil-json may state (the contract's "also accepted").
    json_units: &'static [Unit],
    /// The other units SenML may state: SenML registered names Vigil accepts (`beat/min`,
    /// `1/min`, `count`, `g`), then the contract's other UCUM units.
    senml_units: &'static [Unit],
    /// Values a faulty device sends, outside the plausible range.
    out_of_range: [f64; 4],
    /// Units of other quantities, or miscased, with a value in them.
    wrong_units: [(&'static str, f64); 3],
}

const METRICS: [MetricInfo; 12] = [
    MetricInfo {
        name: "heart_rate",
        unit: "/min",
        range: (20.0, 300.0),
        integral: false,
        typical: 72.0,
        json_units: &[same("beat/min"), same("bpm")],
        senml_units: &[same("beat/min"), same("1/min")],
        out_of_range: [0.0, 5.0, 350.0, 511.0],
        wrong_units: [("Hz", 1.2), ("BPM", 72.0), ("beats", 72.0)],
    },
    MetricInfo {
        name: "spo2",
        unit: "%",
        range: (40.0, 100.0),
        integral: false,
        typical: 97.0,
        json_units: &[],
        senml_units: &[],
        out_of_range: [0.0, 20.0, 127.0, 101.0],
        wrong_units: [("1", 0.97), ("percent", 97.0), ("%RH", 97.0)],
    },
    MetricInfo {
        name: "respiratory_rate",
        unit: "/min",
        range: (2.0, 80.0),
        integral: false,
        typical: 16.0,
        json_units: &[],
        senml_units: &[same("1/min")],
        out_of_range: [0.0, 1.0, 120.0, 200.0],
        wrong_units: [("Hz", 0.27), ("breaths", 16.0), ("/s", 0.27)],
    },
    MetricInfo {
        name: "bp_systolic",
        unit: "mm[Hg]",
        range: (40.0, 300.0),
        integral: false,
        typical: 120.0,
        json_units: &[KPA],
        senml_units: &[KPA],
        out_of_range: [0.0, 20.0, 350.0, 400.0],
        wrong_units: [("mmhg", 120.0), ("cm[H2O]", 163.0), ("Pa", 16_000.0)],
    },
    MetricInfo {
        name: "bp_diastolic",
        unit: "mm[Hg]",
        range: (20.0, 200.0),
        integral: false,
        typical: 80.0,
        json_units: &[KPA],
        senml_units: &[KPA],
        out_of_range: [0.0, 10.0, 250.0, 255.0],
        wrong_units: [("mmhg", 80.0), ("cm[H2O]", 109.0), ("Pa", 10_700.0)],
    },
    MetricInfo {
        name: "bp_mean",
        unit: "mm[Hg]",
        range: (25.0, 250.0),
        integral: false,
        typical: 93.0,
        json_units: &[KPA],
        senml_units: &[KPA],
        out_of_range: [0.0, 15.0, 270.0, 300.0],
        wrong_units: [("mmhg", 93.0), ("cm[H2O]", 126.0), ("Pa", 12_400.0)],
    },
    MetricInfo {
        name: "body_temperature",
        unit: "Cel",
        range: (25.0, 45.0),
        integral: false,
        typical: 36.8,
        json_units: &[FAHRENHEIT],
        senml_units: &[FAHRENHEIT],
        out_of_range: [0.0, 20.0, 50.0, 60.0],
        wrong_units: [("K", 310.0), ("cel", 36.8), ("C", 36.8)],
    },
    MetricInfo {
        name: "body_weight",
        unit: "kg",
        range: (0.3, 650.0),
        integral: false,
        typical: 70.5,
        json_units: &[POUND, scaled("g", 0.001)],
        senml_units: &[scaled("g", 0.001), POUND],
        out_of_range: [0.0, 0.1, 700.0, 1000.0],
        wrong_units: [("KG", 70.5), ("lb", 155.4), ("[stone_av]", 11.1)],
    },
    MetricInfo {
        name: "glucose",
        unit: "mg/dL",
        range: (10.0, 1500.0),
        integral: false,
        typical: 100.0,
        json_units: &[MMOLL],
        senml_units: &[MMOLL],
        out_of_range: [0.0, 5.0, 2000.0, 3000.0],
        wrong_units: [("mg/dl", 100.0), ("mmol/l", 5.5), ("g/L", 1.0)],
    },
    MetricInfo {
        name: "steps",
        unit: "{steps}",
        range: (0.0, 200_000.0),
        integral: true,
        typical: 4000.0,
        json_units: &[],
        senml_units: &[same("count")],
        out_of_range: [-1.0, -100.0, 250_000.0, 1_000_000.0],
        wrong_units: [("km", 3.2), ("steps", 4000.0), ("m", 3200.0)],
    },
    MetricInfo {
        name: "consciousness",
        unit: "{ACVPU}",
        range: (0.0, 4.0),
        integral: true,
        typical: 0.0,
        json_units: &[],
        senml_units: &[],
        out_of_range: [5.0, 9.0, -1.0, 6.0],
        wrong_units: [("{AVPU}", 0.0), ("{GCS}", 15.0), ("1", 0.0)],
    },
    MetricInfo {
        name: "on_oxygen",
        unit: "{bool}",
        range: (0.0, 1.0),
        integral: true,
        typical: 0.0,
        json_units: &[],
        senml_units: &[],
        out_of_range: [2.0, -1.0, 9.0, 3.0],
        wrong_units: [("L/min", 2.0), ("%", 28.0), ("1", 1.0)],
    },
];

fn metric_info(name: &str) -> Option<&'static MetricInfo> {
    METRICS.iter().find(|m| m.name == name)
}

fn range_of(name: &str) -> Option<(f64, f64)> {
    metric_info(name).map(|m| m.range)
}

fn typical(info: &MetricInfo, time_ms: i64) -> Reading {
    reading(info, info.typical, time_ms)
}

fn reading(info: &MetricInfo, value: f64, time_ms: i64) -> Reading {
    Reading {
        metric: info.name,
        value,
        time_ms,
    }
}

/// Metric names no profile knows (and none is an alias in `devices/*.toml`).
const UNKNOWN_METRICS: [&str; 6] = [
    "hrv_rmssd",
    "body_fat",
    "HeartRate",
    "skin_temperature",
    "vo2max",
    "stress_level",
];

/// Whether the JSON text of `x` parses back to exactly `x`. Vigil parses with serde_json's
/// default parser, which can miss by an ulp when a number needs 17 significant digits; this
/// module links the same parser.
fn parses_exactly(x: f64) -> bool {
    serde_json::from_str::<f64>(&number(x, false)).is_ok_and(|y| y == x)
}

/// The value in `unit` that Vigil reads and converts back to exactly `canonical`, if there
/// is one.
fn exact_in(unit: Unit, canonical: f64) -> Option<f64> {
    let back = |x: f64| x * unit.scale + unit.offset;
    let exact = |x: f64| back(x) == canonical && parses_exactly(x);
    let x = (canonical - unit.offset) / unit.scale;
    let (mut up, mut down) = (x, x);
    for _ in 0..8 {
        if exact(up) {
            return Some(up);
        }
        if exact(down) {
            return Some(down);
        }
        up = up.next_up();
        down = down.next_down();
    }
    None
}

/// How one reading is spelled in JSON: the number to write and the unit to state (`None`:
/// omitted, which means canonical).
fn spell(r: &Reading, senml: bool, c: &mut Choices) -> (f64, Option<&'static str>) {
    let Some(info) = metric_info(r.metric) else {
        return (r.value, None);
    };
    let others = if senml {
        info.senml_units
    } else {
        info.json_units
    };
    match c.below(2 + others.len()) {
        0 => (r.value, None),
        1 => (r.value, Some(info.unit)),
        k => match exact_in(others[k - 2], r.value) {
            Some(x) => (x, Some(others[k - 2].name)),
            None => (r.value, Some(info.unit)),
        },
    }
}

// ---- Choices ----

/// Draws the choices of one payload from its variant (SplitMix64).
struct Choices(u64);

impl Choices {
    fn new(variant: u64) -> Self {
        Self(variant)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// Uniform in `0..n`; `n` must not be 0.
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn flip(&mut self) -> bool {
        self.next() & 1 == 1
    }

    fn one_in(&mut self, n: u64) -> bool {
        self.next().is_multiple_of(n)
    }

    /// One of `items`, which must not be empty.
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

/// The SplitMix64 output function.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

// ---- JSON ----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    VigilJson,
    Senml,
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

/// A JSON number: shortest round-trip form, or an integer when asked and whole.
fn number(x: f64, as_integer: bool) -> String {
    if as_integer && x.fract() == 0.0 && x.abs() < 9.0e15 {
        format!("{}", x as i64)
    } else {
        serde_json::Number::from_f64(x).map_or_else(|| "null".to_owned(), |n| n.to_string())
    }
}

/// Milliseconds as JSON seconds: an integer when whole, else the shortest decimal (Vigil
/// rounds seconds × 1000 to the millisecond, which gives the same milliseconds back).
fn seconds(ms: i64) -> String {
    if ms % 1000 == 0 {
        (ms / 1000).to_string()
    } else {
        number(ms as f64 / 1000.0, false)
    }
}

/// UTC calendar fields of a Unix time: year, month, day, hours, minutes, seconds.
fn calendar(ms: i64) -> Option<(i32, u8, u8, u8, u8, u8)> {
    let t = OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000)).ok()?;
    Some((
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
    ))
}

/// RFC 3339 at an offset of `offset_min` minutes; `Z` instead of `+00:00` when `zulu`.
fn rfc3339(ms: i64, offset_min: i32, zulu: bool, always_fraction: bool) -> Option<String> {
    let local = ms.checked_add(i64::from(offset_min) * 60_000)?;
    let (y, mo, d, h, mi, s) = calendar(local)?;
    if !(0..=9999).contains(&y) {
        return None;
    }
    let mut out = format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}");
    let fraction = local.rem_euclid(1000);
    if fraction != 0 || always_fraction {
        let _ = write!(out, ".{fraction:03}");
    }
    if offset_min == 0 && zulu {
        out.push('Z');
    } else {
        let sign = if offset_min < 0 { '-' } else { '+' };
        let abs = offset_min.unsigned_abs();
        let _ = write!(out, "{sign}{:02}:{:02}", abs / 60, abs % 60);
    }
    Some(out)
}

/// A vigil-json time: RFC 3339 in UTC, RFC 3339 at another offset, or Unix seconds.
fn vigil_time(ms: i64, c: &mut Choices) -> String {
    let text = match c.below(3) {
        0 => rfc3339(ms, 0, true, c.one_in(4)),
        1 => {
            let offset = c.pick(&[0, 60, 120, 330, -300, -480, 600]);
            rfc3339(ms, offset, false, c.one_in(4))
        }
        _ => None,
    };
    text.map_or_else(|| seconds(ms), |t| json_str(&t))
}

/// A vigil-json payload: one object or an array of them.
fn vigil_json(readings: &[Reading], c: &mut Choices) -> Payload {
    let single = readings.len() == 1 && c.flip();
    let (colon, comma) = if c.one_in(4) {
        (": ", ", ")
    } else {
        (":", ",")
    };
    let integers = c.flip();
    let time_first = c.one_in(4);
    let mut elements = Vec::with_capacity(readings.len());
    for r in readings {
        let (value, unit) = spell(r, false, c);
        let mut fields = vec![
            ("metric", json_str(r.metric)),
            ("value", number(value, integers)),
        ];
        if let Some(unit) = unit {
            fields.push(("unit", json_str(unit)));
        }
        let time = ("time", vigil_time(r.time_ms, c));
        if time_first {
            fields.insert(0, time);
        } else {
            fields.push(time);
        }
        let body: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!("\"{k}\"{colon}{v}"))
            .collect();
        elements.push(format!("{{{}}}", body.join(comma)));
    }
    let text = if single {
        elements.concat()
    } else {
        format!("[{}]", elements.join(comma))
    };
    let content_type = c.one_in(4).then_some(JSON_CONTENT_TYPE);
    Payload {
        suffix: READINGS.to_owned(),
        bytes: text.into_bytes(),
        content_type,
    }
}

/// Resolved SenML times below this many milliseconds are relative to now (RFC 8428 §4.5.3).
const SENML_RELATIVE_LIMIT_MS: i64 = (1 << 28) * 1000;

/// A SenML pack. Base fields ride on the first record: Vigil, like RFC 8428, needs a value in
/// every record.
fn senml(device_id: &str, readings: &[Reading], c: &mut Choices) -> Option<Payload> {
    if readings.iter().any(|r| r.time_ms < SENML_RELATIVE_LIMIT_MS) {
        return None;
    }
    let spelled: Vec<(f64, Option<&'static str>)> =
        readings.iter().map(|r| spell(r, true, c)).collect();
    let integers = c.flip();

    let starts_well = device_id
        .chars()
        .next()
        .is_some_and(|ch| ch.is_ascii_alphanumeric());
    let base_name = match c.below(3) {
        _ if device_id.is_empty() => None,
        0 => None,
        1 if starts_well => Some(format!("{device_id}/")),
        _ => Some(format!("urn:dev:vigil:{device_id}:")),
    };

    // Times: absolute per record, or a whole-second base time and relative record times.
    let min_ms = readings.iter().map(|r| r.time_ms).min()?;
    let max_ms = readings.iter().map(|r| r.time_ms).max()?;
    let base_time_ms = match c.below(3) {
        0 => None,
        1 => Some(min_ms.div_euclid(1000) * 1000),
        _ => Some(max_ms.div_euclid(1000) * 1000),
    };

    // A base unit, when every record can state its unit (records with another one override it).
    let effective = |(r, (_, unit)): (&Reading, &(f64, Option<&'static str>))| {
        unit.or_else(|| metric_info(r.metric).map(|m| m.unit))
    };
    let base_unit = if c.flip() {
        let units: Option<Vec<&str>> = readings.iter().zip(&spelled).map(effective).collect();
        units.and_then(|u| u.first().copied())
    } else {
        None
    };

    // A base value, when `bv + (v - bv)` gives every value back exactly.
    let base_value = if c.one_in(3) {
        let floor = spelled
            .iter()
            .map(|(x, _)| *x)
            .fold(f64::INFINITY, f64::min)
            .floor();
        spelled
            .iter()
            .all(|(x, _)| floor + (x - floor) == *x && parses_exactly(x - floor))
            .then_some(floor)
            .filter(|b| *b != 0.0)
    } else {
        None
    };
    let version = c.one_in(4);

    let mut records = Vec::with_capacity(readings.len());
    for (i, (r, (x, unit))) in readings.iter().zip(&spelled).enumerate() {
        let mut fields: Vec<String> = Vec::new();
        if i == 0 {
            if version {
                fields.push("\"bver\":10".to_owned());
            }
            if let Some(bn) = &base_name {
                fields.push(format!("\"bn\":{}", json_str(bn)));
            }
            if let Some(bt) = base_time_ms {
                fields.push(format!("\"bt\":{}", bt / 1000));
            }
            if let Some(bu) = base_unit {
                fields.push(format!("\"bu\":{}", json_str(bu)));
            }
            if let Some(bv) = base_value {
                fields.push(format!("\"bv\":{}", number(bv, true)));
            }
        }
        fields.push(format!("\"n\":{}", json_str(r.metric)));
        let unit = match base_unit {
            None => *unit,
            Some(bu) => effective((r, &(*x, *unit))).filter(|u| *u != bu),
        };
        if let Some(u) = unit {
            fields.push(format!("\"u\":{}", json_str(u)));
        }
        let v = x - base_value.unwrap_or(0.0);
        fields.push(format!("\"v\":{}", number(v, integers)));
        let t = r.time_ms - base_time_ms.unwrap_or(0);
        if t != 0 || base_time_ms.is_none() {
            fields.push(format!("\"t\":{}", seconds(t)));
        }
        records.push(format!("{{{}}}", fields.join(",")));
    }
    Some(Payload {
        suffix: READINGS.to_owned(),
        bytes: format!("[{}]", records.join(",")).into_bytes(),
        content_type: (!c.one_in(3)).then_some(SENML_CONTENT_TYPE),
    })
}

/// Readings as text in `format`; a SenML payload always names its content type.
fn text_payload(format: Format, readings: &[Reading], c: &mut Choices) -> Payload {
    match format {
        Format::Senml => match senml("", readings, c) {
            Some(p) => Payload {
                content_type: Some(SENML_CONTENT_TYPE),
                ..p
            },
            None => vigil_json(readings, c),
        },
        Format::VigilJson => vigil_json(readings, c),
    }
}

fn readings_payload(format: Format, bytes: Vec<u8>) -> Payload {
    Payload {
        suffix: READINGS.to_owned(),
        bytes,
        content_type: (format == Format::Senml).then_some(SENML_CONTENT_TYPE),
    }
}

/// One record written by hand, for what [`encode`] never writes.
struct Handmade<'a> {
    metric: &'a str,
    /// SenML's value label (`v`, `vs`, `vb`); vigil-json always writes `value`.
    value_key: &'a str,
    /// JSON text.
    value: String,
    unit: Option<&'a str>,
    /// JSON text.
    time: Option<String>,
    /// SenML's time label (`t` or `bt`); vigil-json always writes `time`.
    time_key: &'a str,
}

impl Handmade<'_> {
    fn write(&self, format: Format) -> Vec<u8> {
        let mut fields = Vec::new();
        let (name, value_key, unit, time_key) = match format {
            Format::VigilJson => ("metric", "value", "unit", "time"),
            Format::Senml => ("n", self.value_key, "u", self.time_key),
        };
        fields.push(format!("\"{name}\":{}", json_str(self.metric)));
        if let Some(u) = self.unit {
            fields.push(format!("\"{unit}\":{}", json_str(u)));
        }
        fields.push(format!("\"{value_key}\":{}", self.value));
        if let Some(t) = &self.time {
            fields.push(format!("\"{time_key}\":{t}"));
        }
        let object = format!("{{{}}}", fields.join(","));
        match format {
            Format::VigilJson => object.into_bytes(),
            Format::Senml => format!("[{object}]").into_bytes(),
        }
    }
}

/// A correct time in `format`: RFC 3339 for vigil-json, seconds for SenML.
fn time_json(format: Format, ms: i64) -> String {
    match format {
        Format::VigilJson => {
            rfc3339(ms, 0, true, false).map_or_else(|| seconds(ms), |t| json_str(&t))
        }
        Format::Senml => seconds(ms),
    }
}

/// Payloads that are not JSON, as devices and apps get it wrong.
fn not_json(format: Format, info: &MetricInfo, c: &mut Choices) -> Vec<u8> {
    let (m, v) = (info.name, number(info.typical, true));
    let text = match (format, c.below(7)) {
        (_, 0) => format!("{m}={v}"),
        (Format::VigilJson, 1) => format!("{{metric: \"{m}\", value: {v}}}"),
        (Format::Senml, 1) => format!("[{{n: \"{m}\", v: {v}}}]"),
        (Format::VigilJson, 2) => format!("{{'metric': '{m}', 'value': {v}}}"),
        (Format::Senml, 2) => format!("[{{'n': '{m}', 'v': {v}}}]"),
        (_, 3) => format!("<reading metric=\"{m}\" value=\"{v}\"/>"),
        (Format::VigilJson, 4) => format!("{{\"metric\":\"{m}\",\"value\":{v},}}"),
        (Format::Senml, 4) => format!("[{{\"n\":\"{m}\",\"v\":{v}}},]"),
        (Format::VigilJson, 5) => format!("{{\"metric\":\"{m}\",\"value\":NaN}}"),
        (Format::Senml, 5) => format!("[{{\"n\":\"{m}\",\"v\":NaN}}]"),
        (Format::VigilJson, _) => {
            // UTF-16LE with a byte-order mark, as some Windows tools write text.
            let json = format!("{{\"metric\":\"{m}\",\"value\":{v}}}");
            let mut bytes = vec![0xFF, 0xFE];
            bytes.extend(json.encode_utf16().flat_map(u16::to_le_bytes));
            return bytes;
        }
        (Format::Senml, _) => {
            // SenML CBOR (RFC 8428 §6) sent as JSON: [{0: name, 2: value}].
            let mut bytes = vec![0x81, 0xA2, 0x00];
            let name = m.as_bytes();
            bytes.push(0x60 | (name.len().min(23) as u8));
            bytes.extend_from_slice(&name[..name.len().min(23)]);
            bytes.extend_from_slice(&[0x02, 0x18, info.typical.clamp(0.0, 255.0) as u8]);
            return bytes;
        }
    };
    text.into_bytes()
}

/// A payload whose time is not a moment.
fn bad_time(format: Format, info: &MetricInfo, recent: i64, c: &mut Choices) -> Vec<u8> {
    let (y, mo, d, h, mi, s) = calendar(recent).unwrap_or((2026, 11, 25, 13, 0, 0));
    let (time_key, time) = match (format, c.below(4)) {
        // A local time without its offset.
        (Format::VigilJson, 0) => (
            "t",
            json_str(&format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}")),
        ),
        (Format::VigilJson, 1) => ("t", json_str(&format!("{y:04}-02-30T{h:02}:{mi:02}:00Z"))),
        (Format::VigilJson, 2) => (
            "t",
            json_str(&format!("{d:02}/{mo:02}/{y:04} {h:02}:{mi:02}")),
        ),
        // Milliseconds where seconds belong: about the year 58000.
        (_, 3) => ("t", recent.to_string()),
        (Format::Senml, 0) => (
            "bt",
            json_str(&rfc3339(recent, 0, true, false).unwrap_or_default()),
        ),
        (Format::Senml, _) => ("t", json_str("yesterday")),
        (Format::VigilJson, _) => ("t", "true".to_owned()),
    };
    Handmade {
        metric: info.name,
        value_key: "v",
        value: number(info.typical, true),
        unit: None,
        time: Some(time),
        time_key,
    }
    .write(format)
}

/// A reading at `at`: in the device's characteristic when it has a timestamp, else as text.
fn timed(
    uuid: Option<&'static str>,
    info: &MetricInfo,
    carried: &str,
    at: i64,
    format: Format,
    c: &mut Choices,
) -> Payload {
    if let Some(uuid) = uuid.filter(|u| STAMPED.contains(u))
        && let Some((_, metrics)) = characteristic(uuid)
    {
        let readings: Vec<Reading> = metrics
            .iter()
            .filter_map(|m| metric_info(m))
            .map(|m| typical(m, at))
            .collect();
        if let Some(g) = Gatt::build(uuid, &readings, true, false, c) {
            return g.payload();
        }
    }
    let info = metric_info(carried)
        .filter(|_| uuid.is_some())
        .unwrap_or(info);
    text_payload(format, &[typical(info, at)], c)
}

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;
const Y1980_MS: i64 = 315_532_800_000;
const Y1990_MS: i64 = 631_152_000_000;
const LAST_SECOND_OF_1999_MS: i64 = 946_684_799_000;

// ---- Bluetooth GATT ----

/// The characteristics Vigil decodes and the metrics each carries, required ones first.
const CHARACTERISTICS: [(&str, &[&str]); 7] = [
    ("2a37", &["heart_rate"]),
    (
        "2a35",
        &["bp_systolic", "bp_diastolic", "bp_mean", "heart_rate"],
    ),
    ("2a18", &["glucose"]),
    ("2a9d", &["body_weight"]),
    ("2a5e", &["spo2", "heart_rate"]),
    ("2a5f", &["spo2", "heart_rate"]),
    ("2a1c", &["body_temperature"]),
];

/// The characteristics with a timestamp field.
const STAMPED: [&str; 5] = ["2a35", "2a18", "2a9d", "2a5e", "2a1c"];

fn characteristic(uuid: &str) -> Option<(&'static str, &'static [&'static str])> {
    CHARACTERISTICS.iter().copied().find(|(u, _)| *u == uuid)
}

/// The characteristic a JSON device's GATT kinds use for `metric`.
fn characteristic_for(metric: &str) -> &'static str {
    match metric {
        "spo2" => "2a5e",
        "bp_systolic" | "bp_diastolic" | "bp_mean" => "2a35",
        "body_temperature" => "2a1c",
        "body_weight" => "2a9d",
        "glucose" => "2a18",
        _ => "2a37",
    }
}

fn gatt_payload(uuid: &str, bytes: Vec<u8>) -> Payload {
    Payload {
        suffix: format!("gatt/{uuid}"),
        bytes,
        content_type: None,
    }
}

/// GATT DateTime: year u16, month, day, hours, minutes, seconds.
type DateTime = [u8; 7];

/// Year, month and day 0: "unknown", which Vigil stamps with the receipt time.
const UNKNOWN_TIME: DateTime = [0; 7];

/// The DateTime of a Unix time, UTC, truncated to the second; `None` outside 1582–9999.
fn date_time(ms: i64) -> Option<DateTime> {
    let (y, mo, d, h, mi, s) = calendar(ms)?;
    let year = u16::try_from(y)
        .ok()
        .filter(|y| (1582..=9999).contains(y))?;
    let [lo, hi] = year.to_le_bytes();
    Some([lo, hi, mo, d, h, mi, s])
}

/// Makes a DateTime impossible.
fn corrupt(stamp: &mut DateTime, c: &mut Choices) {
    match c.below(7) {
        0 => stamp[2] = 13,
        1 => (stamp[2], stamp[3]) = (4, 31),
        2 => stamp[4] = 24,
        3 => stamp[5] = 60,
        4 => stamp[6] = 60,
        5 => (stamp[2], stamp[3]) = (2, 30),
        _ => [stamp[0], stamp[1]] = 1500u16.to_le_bytes(),
    }
}

const SFLOAT_NAN: u16 = 0x07FF;
const SFLOAT_NRES: u16 = 0x0800;
const SFLOAT_SPECIALS: [u16; 5] = [SFLOAT_NAN, SFLOAT_NRES, 0x07FE, 0x0802, 0x0801];
const FLOAT_SPECIALS: [u32; 5] = [
    0x007F_FFFF,
    0x0080_0000,
    0x007F_FFFE,
    0x0080_0002,
    0x0080_0001,
];
/// Largest SFLOAT / FLOAT mantissa magnitude that is never a special value.
const SFLOAT_MAX: i64 = 2045;
const FLOAT_MAX: i64 = 8_388_605;

/// 10^0 ..= 10^22, each exact in an f64.
const POWERS_OF_TEN: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// `x × 10^k`, one correctly rounded operation (|k| ≤ 22).
fn times_ten_to(x: f64, k: i32) -> f64 {
    let p = POWERS_OF_TEN[k.unsigned_abs().min(22) as usize];
    if k >= 0 { x * p } else { x / p }
}

/// A decimal `m × 10^e` as IEEE 11073 numbers hold it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Decimal {
    m: i64,
    e: i32,
}

impl Decimal {
    /// The nearest f64, computed as Vigil computes it.
    fn value(self) -> f64 {
        times_ten_to(self.m as f64, self.e)
    }
}

/// Moves an integer wire value one step back inside the plausible range when rounding took a
/// plausible value out of it; `back` is the canonical value Vigil will compute from it.
fn keep_inside(
    canonical: f64,
    range: Option<(f64, f64)>,
    m: i64,
    max: i64,
    back: impl Fn(i64) -> f64,
) -> i64 {
    let Some((lo, hi)) = range else { return m };
    if !(lo..=hi).contains(&canonical) {
        return m;
    }
    let v = back(m);
    if v < lo && m < max {
        m + 1
    } else if v > hi && m > -max {
        m - 1
    } else {
        m
    }
}

/// The decimal nearest `canonical` expressed in `unit`, with the finest exponent in
/// `exponents` whose mantissa fits `max`, then without trailing zeros after the decimal point
/// (120 mmHg is 120 × 10^0 and 36.6 °C is 366 × 10^-1, as devices write them).
fn quantize(
    canonical: f64,
    unit: Unit,
    range: Option<(f64, f64)>,
    max: i64,
    exponents: RangeInclusive<i32>,
) -> Option<Decimal> {
    let wire = (canonical - unit.offset) / unit.scale;
    let max_e = *exponents.end();
    let min_e = *exponents.start();
    let mut d = exponents.clone().find_map(|e| {
        let m = times_ten_to(wire, -e).round();
        (m.abs() <= max as f64).then_some(Decimal { m: m as i64, e })
    })?;
    d.m = keep_inside(canonical, range, d.m, max, |m| {
        Decimal { m, e: d.e }.value() * unit.scale + unit.offset
    });
    while d.m != 0 && d.m % 10 == 0 && d.e < max_e.min(0) {
        d.m /= 10;
        d.e += 1;
    }
    if d.m == 0 {
        d.e = 0.clamp(min_e, max_e);
    }
    Some(d)
}

/// The SFLOAT nearest `canonical` in `unit`. Vigil multiplies the decoded decimal by
/// 10^`shift` (glucose: kg/L → mg/dL is 5, mol/L → mmol/L is 3) before applying `unit`.
fn sfloat(canonical: f64, unit: Unit, metric: &str, shift: i32) -> Option<u16> {
    let d = quantize(
        canonical,
        unit,
        range_of(metric),
        SFLOAT_MAX,
        (-8 + shift)..=(7 + shift),
    )?;
    let e = d.e - shift;
    Some((((e as u16) & 0xF) << 12) | ((d.m as u16) & 0x0FFF))
}

/// The FLOAT nearest `canonical` in `unit`.
fn float(canonical: f64, unit: Unit, metric: &str) -> Option<u32> {
    let d = quantize(canonical, unit, range_of(metric), FLOAT_MAX, -8..=8)?;
    Some((((d.e as u32) & 0xFF) << 24) | ((d.m as u32) & 0x00FF_FFFF))
}

/// Pulse amplitude index values (SFLOAT, %): 2.5, 1.2, 10.
const PAI: [u16; 3] = [0xF019, 0xF00C, 0x000A];

/// The value of one GATT characteristic, field by field, before it becomes bytes.
#[derive(Debug, Clone)]
enum Gatt {
    HeartRate(HeartRate),
    BloodPressure(BloodPressure),
    Glucose(Glucose),
    Weight(Weight),
    PlxSpotCheck(PlxSpotCheck),
    PlxContinuous(PlxContinuous),
    Temperature(Temperature),
}

/// Heart Rate Measurement 0x2A37.
#[derive(Debug, Clone)]
struct HeartRate {
    wide: bool,
    /// Flags bits 1–2: 0 or 1 contact detection not supported, 2 no contact, 3 contact.
    contact: u8,
    bpm: u16,
    energy_kj: Option<u16>,
    /// RR intervals in 1/1024 s (at least one when `Some`: the flag promises one or more).
    rr: Option<Vec<u16>>,
}

/// Blood Pressure Measurement 0x2A35.
#[derive(Debug, Clone)]
struct BloodPressure {
    kpa: bool,
    systolic: u16,
    diastolic: u16,
    mean: u16,
    stamp: Option<DateTime>,
    pulse: Option<u16>,
    user: Option<u8>,
    status: Option<u16>,
}

/// Glucose Measurement 0x2A18.
#[derive(Debug, Clone)]
struct Glucose {
    sequence: u16,
    base: DateTime,
    offset_min: Option<i16>,
    /// SFLOAT and type/location.
    concentration: Option<(u16, u8)>,
    mol: bool,
    status: Option<u16>,
}

/// Weight Measurement 0x2A9D.
#[derive(Debug, Clone)]
struct Weight {
    imperial: bool,
    raw: u16,
    stamp: Option<DateTime>,
    user: Option<u8>,
    bmi_height: Option<(u16, u16)>,
}

/// PLX Spot-check Measurement 0x2A5E.
#[derive(Debug, Clone)]
struct PlxSpotCheck {
    spo2: u16,
    pulse: u16,
    stamp: Option<DateTime>,
    measurement: Option<u16>,
    device: Option<u32>,
    pai: Option<u16>,
    clock_not_set: bool,
}

/// PLX Continuous Measurement 0x2A5F.
#[derive(Debug, Clone)]
struct PlxContinuous {
    spo2: u16,
    pulse: u16,
    fast: Option<(u16, u16)>,
    slow: Option<(u16, u16)>,
    measurement: Option<u16>,
    device: Option<u32>,
    pai: Option<u16>,
}

/// Temperature Measurement 0x2A1C.
#[derive(Debug, Clone)]
struct Temperature {
    fahrenheit: bool,
    raw: u32,
    stamp: Option<DateTime>,
    site: Option<u8>,
}

fn bit(flag: bool, n: u8) -> u8 {
    u8::from(flag) << n
}

/// The readings as one measurement of exactly the metrics in `metrics` (the first
/// `required` of them present), all at one time.
fn measurement<const N: usize>(
    readings: &[Reading],
    metrics: [&str; N],
    required: usize,
) -> Option<[Option<Reading>; N]> {
    let time = readings.first()?.time_ms;
    let mut found = [None; N];
    for r in readings {
        let i = metrics.iter().position(|m| *m == r.metric)?;
        if found[i].is_some() || r.time_ms != time {
            return None;
        }
        found[i] = Some(*r);
    }
    found[..required]
        .iter()
        .all(Option::is_some)
        .then_some(found)
}

/// The timestamp field: the reading's time, or when the time is not kept either no field or
/// a DateTime of zeros ("unknown"). Outer `None`: the time cannot be written.
fn stamp(time_ms: i64, keep: bool, c: &mut Choices) -> Option<Option<DateTime>> {
    if keep {
        Some(Some(date_time(time_ms)?))
    } else if c.flip() {
        Some(None)
    } else {
        Some(Some(UNKNOWN_TIME))
    }
}

impl Gatt {
    /// Builds the characteristic `uuid` holding `readings`. `swap` lets a PLX value without
    /// time go out as the other PLX characteristic.
    fn build(
        uuid: &str,
        readings: &[Reading],
        keep_time: bool,
        swap: bool,
        c: &mut Choices,
    ) -> Option<Gatt> {
        match uuid {
            "2a37" => heart_rate(readings, c).map(Gatt::HeartRate),
            "2a35" => blood_pressure(readings, keep_time, c).map(Gatt::BloodPressure),
            "2a18" => glucose(readings, c).map(Gatt::Glucose),
            "2a9d" => weight(readings, keep_time, c).map(Gatt::Weight),
            "2a5e" | "2a5f" => plx(uuid == "2a5f", readings, keep_time, swap, c),
            "2a1c" => temperature(readings, keep_time, c).map(Gatt::Temperature),
            _ => None,
        }
    }

    fn uuid(&self) -> &'static str {
        match self {
            Gatt::HeartRate(_) => "2a37",
            Gatt::BloodPressure(_) => "2a35",
            Gatt::Glucose(_) => "2a18",
            Gatt::Weight(_) => "2a9d",
            Gatt::PlxSpotCheck(_) => "2a5e",
            Gatt::PlxContinuous(_) => "2a5f",
            Gatt::Temperature(_) => "2a1c",
        }
    }

    fn payload(&self) -> Payload {
        gatt_payload(self.uuid(), self.bytes())
    }

    /// The value bytes: flags, then the fields the flags select, little-endian.
    fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(20);
        match self {
            Gatt::HeartRate(h) => {
                out.push(
                    bit(h.wide, 0)
                        | ((h.contact & 0b11) << 1)
                        | bit(h.energy_kj.is_some(), 3)
                        | bit(h.rr.is_some(), 4),
                );
                if h.wide {
                    out.extend_from_slice(&h.bpm.to_le_bytes());
                } else {
                    out.push(h.bpm.min(255) as u8);
                }
                if let Some(e) = h.energy_kj {
                    out.extend_from_slice(&e.to_le_bytes());
                }
                for rr in h.rr.iter().flatten() {
                    out.extend_from_slice(&rr.to_le_bytes());
                }
            }
            Gatt::BloodPressure(b) => {
                out.push(
                    bit(b.kpa, 0)
                        | bit(b.stamp.is_some(), 1)
                        | bit(b.pulse.is_some(), 2)
                        | bit(b.user.is_some(), 3)
                        | bit(b.status.is_some(), 4),
                );
                for v in [b.systolic, b.diastolic, b.mean] {
                    out.extend_from_slice(&v.to_le_bytes());
                }
                out.extend(b.stamp.iter().flatten());
                out.extend(b.pulse.iter().flat_map(|p| p.to_le_bytes()));
                out.extend(b.user);
                out.extend(b.status.iter().flat_map(|s| s.to_le_bytes()));
            }
            Gatt::Glucose(g) => {
                out.push(
                    bit(g.offset_min.is_some(), 0)
                        | bit(g.concentration.is_some(), 1)
                        | bit(g.mol, 2)
                        | bit(g.status.is_some(), 3),
                );
                out.extend_from_slice(&g.sequence.to_le_bytes());
                out.extend_from_slice(&g.base);
                out.extend(g.offset_min.iter().flat_map(|o| o.to_le_bytes()));
                if let Some((value, type_location)) = g.concentration {
                    out.extend_from_slice(&value.to_le_bytes());
                    out.push(type_location);
                }
                out.extend(g.status.iter().flat_map(|s| s.to_le_bytes()));
            }
            Gatt::Weight(w) => {
                out.push(
                    bit(w.imperial, 0)
                        | bit(w.stamp.is_some(), 1)
                        | bit(w.user.is_some(), 2)
                        | bit(w.bmi_height.is_some(), 3),
                );
                out.extend_from_slice(&w.raw.to_le_bytes());
                out.extend(w.stamp.iter().flatten());
                out.extend(w.user);
                if let Some((bmi, height)) = w.bmi_height {
                    out.extend_from_slice(&bmi.to_le_bytes());
                    out.extend_from_slice(&height.to_le_bytes());
                }
            }
            Gatt::PlxSpotCheck(p) => {
                out.push(
                    bit(p.stamp.is_some(), 0)
                        | bit(p.measurement.is_some(), 1)
                        | bit(p.device.is_some(), 2)
                        | bit(p.pai.is_some(), 3)
                        | bit(p.clock_not_set, 4),
                );
                out.extend_from_slice(&p.spo2.to_le_bytes());
                out.extend_from_slice(&p.pulse.to_le_bytes());
                out.extend(p.stamp.iter().flatten());
                out.extend(p.measurement.iter().flat_map(|m| m.to_le_bytes()));
                out.extend(
                    p.device
                        .iter()
                        .flat_map(|d| d.to_le_bytes().into_iter().take(3)),
                );
                out.extend(p.pai.iter().flat_map(|v| v.to_le_bytes()));
            }
            Gatt::PlxContinuous(p) => {
                out.push(
                    bit(p.fast.is_some(), 0)
                        | bit(p.slow.is_some(), 1)
                        | bit(p.measurement.is_some(), 2)
                        | bit(p.device.is_some(), 3)
                        | bit(p.pai.is_some(), 4),
                );
                out.extend_from_slice(&p.spo2.to_le_bytes());
                out.extend_from_slice(&p.pulse.to_le_bytes());
                for (spo2, pulse) in p.fast.iter().chain(&p.slow) {
                    out.extend_from_slice(&spo2.to_le_bytes());
                    out.extend_from_slice(&pulse.to_le_bytes());
                }
                out.extend(p.measurement.iter().flat_map(|m| m.to_le_bytes()));
                out.extend(
                    p.device
                        .iter()
                        .flat_map(|d| d.to_le_bytes().into_iter().take(3)),
                );
                out.extend(p.pai.iter().flat_map(|v| v.to_le_bytes()));
            }
            Gatt::Temperature(t) => {
                out.push(
                    bit(t.fahrenheit, 0) | bit(t.stamp.is_some(), 1) | bit(t.site.is_some(), 2),
                );
                out.extend_from_slice(&t.raw.to_le_bytes());
                out.extend(t.stamp.iter().flatten());
                out.extend(t.site);
            }
        }
        out
    }

    /// The timestamp field, when there is one.
    fn stamp_mut(&mut self) -> Option<&mut DateTime> {
        match self {
            Gatt::BloodPressure(b) => b.stamp.as_mut(),
            Gatt::Glucose(g) => Some(&mut g.base),
            Gatt::Weight(w) => w.stamp.as_mut(),
            Gatt::PlxSpotCheck(p) if !p.clock_not_set => p.stamp.as_mut(),
            Gatt::Temperature(t) => t.stamp.as_mut(),
            Gatt::HeartRate(_) | Gatt::PlxSpotCheck(_) | Gatt::PlxContinuous(_) => None,
        }
    }

    /// Clears the timestamp flag (glucose's base time is not optional).
    fn clear_stamp(&mut self) {
        match self {
            Gatt::BloodPressure(b) => b.stamp = None,
            Gatt::Weight(w) => w.stamp = None,
            Gatt::PlxSpotCheck(p) => p.stamp = None,
            Gatt::Temperature(t) => t.stamp = None,
            Gatt::HeartRate(_) | Gatt::Glucose(_) | Gatt::PlxContinuous(_) => {}
        }
    }

    /// Rewrites the field holding `metric` with `value` (canonical unit) in the unit the flags
    /// select, with no range check; false when the field cannot hold the value.
    fn set(&mut self, metric: &str, value: f64) -> bool {
        let pressure = |kpa: bool| sfloat_raw(value, if kpa { KPA } else { CANONICAL }, 0);
        let written = match self {
            Gatt::HeartRate(h) if metric == "heart_rate" => {
                u16::try_from(value.round() as i64).ok().map(|bpm| {
                    h.bpm = bpm;
                    h.wide |= bpm > 255;
                })
            }
            Gatt::BloodPressure(b) => match metric {
                "bp_systolic" => pressure(b.kpa).map(|v| b.systolic = v),
                "bp_diastolic" => pressure(b.kpa).map(|v| b.diastolic = v),
                "bp_mean" => pressure(b.kpa).map(|v| b.mean = v),
                "heart_rate" => sfloat_raw(value, CANONICAL, 0).map(|v| b.pulse = Some(v)),
                _ => None,
            },
            Gatt::Glucose(g) if metric == "glucose" => {
                let (unit, shift) = if g.mol { (MMOLL, 3) } else { (CANONICAL, 5) };
                sfloat_raw(value, unit, shift).map(|v| {
                    let type_location = g.concentration.map_or(0x11, |(_, t)| t);
                    g.concentration = Some((v, type_location));
                })
            }
            Gatt::Weight(w) if metric == "body_weight" => {
                weight_raw(value, w.imperial, None).map(|raw| w.raw = raw)
            }
            Gatt::PlxSpotCheck(PlxSpotCheck { spo2, pulse, .. })
            | Gatt::PlxContinuous(PlxContinuous { spo2, pulse, .. }) => {
                let field = match metric {
                    "spo2" => spo2,
                    "heart_rate" => pulse,
                    _ => return false,
                };
                sfloat_raw(value, CANONICAL, 0).map(|v| *field = v)
            }
            Gatt::Temperature(t) if metric == "body_temperature" => {
                let unit = if t.fahrenheit { FAHRENHEIT } else { CANONICAL };
                quantize(value, unit, None, FLOAT_MAX, -8..=8).map(|d| {
                    t.raw = (((d.e as u32) & 0xFF) << 24) | ((d.m as u32) & 0x00FF_FFFF);
                })
            }
            _ => None,
        };
        written.is_some()
    }

    /// Puts a special value where the device must send a number.
    fn reserved(&mut self, metric: &str, c: &mut Choices) {
        let special = c.pick(&SFLOAT_SPECIALS);
        match self {
            Gatt::BloodPressure(b) => {
                if metric == "bp_diastolic" || (metric != "bp_systolic" && c.flip()) {
                    b.diastolic = special;
                } else {
                    b.systolic = special;
                }
            }
            Gatt::Glucose(g) => {
                let type_location = g.concentration.map_or(0x11, |(_, t)| t);
                g.concentration = Some((special, type_location));
            }
            Gatt::PlxSpotCheck(PlxSpotCheck { spo2, pulse, .. })
            | Gatt::PlxContinuous(PlxContinuous { spo2, pulse, .. }) => {
                if metric == "heart_rate" {
                    *pulse = special;
                } else {
                    *spo2 = special;
                }
            }
            Gatt::Temperature(t) => t.raw = c.pick(&FLOAT_SPECIALS),
            Gatt::Weight(w) => w.raw = 0xFFFF,
            Gatt::HeartRate(h) => {
                h.contact = 0b10;
                h.bpm = 0;
                h.rr = None;
            }
        }
    }

    /// Marks the value unusable the way the device itself does.
    fn fault(&mut self, metric: &str, c: &mut Choices) {
        match self {
            Gatt::HeartRate(h) => {
                h.contact = 0b10;
                h.bpm = 0;
                h.rr = None;
            }
            Gatt::Glucose(g) => match c.below(4) {
                // Sensor status annunciation bits 1–10: malfunction, sample too small, strip …
                0 | 1 => g.status = Some(1 << (1 + c.below(10))),
                // A control-solution test: type 10, or location 4.
                2 => {
                    let value = g.concentration.map_or(SFLOAT_NAN, |(v, _)| v);
                    g.concentration = Some((value, c.pick(&[0xFA, 0x4A, 0x41])));
                }
                _ => g.concentration = None,
            },
            Gatt::Weight(w) => w.raw = 0xFFFF,
            Gatt::PlxSpotCheck(PlxSpotCheck {
                measurement,
                device,
                ..
            })
            | Gatt::PlxContinuous(PlxContinuous {
                measurement,
                device,
                ..
            }) => {
                if c.flip() {
                    // Invalid, unavailable, calibration ongoing, demonstration, test data.
                    *measurement = Some(1 << c.pick(&[15, 13, 12, 10, 11]));
                } else {
                    // Equipment malfunction, not connected to user, sensor malfunctioning or
                    // disconnected.
                    *device = Some(1 << c.pick(&[1, 11, 14, 15]));
                }
            }
            Gatt::BloodPressure(_) | Gatt::Temperature(_) => self.reserved(metric, c),
        }
    }
}

/// An SFLOAT with no range adjustment (for faults).
fn sfloat_raw(value: f64, unit: Unit, shift: i32) -> Option<u16> {
    let d = quantize(value, unit, None, SFLOAT_MAX, (-8 + shift)..=(7 + shift))?;
    let e = d.e - shift;
    Some((((e as u16) & 0xF) << 12) | ((d.m as u16) & 0x0FFF))
}

/// The weight field: kilograms × 200 (0.005 kg) or pounds × 100 (0.01 lb), as Vigil scales it
/// back (`raw × 5 / 1000` kg, `raw / 100` lb); 0xFFFF is "unsuccessful".
fn weight_raw(kg: f64, imperial: bool, range: Option<(f64, f64)>) -> Option<u16> {
    let back = |raw: i64| {
        if imperial {
            raw as f64 / 100.0 * KG_PER_LB
        } else {
            raw as f64 * 5.0 / 1000.0
        }
    };
    let raw = if imperial {
        (kg / KG_PER_LB * 100.0).round()
    } else {
        (kg * 200.0).round()
    };
    if !(0.0..=65534.0).contains(&raw) {
        return None;
    }
    let raw = keep_inside(kg, range, raw as i64, 0xFFFE, back);
    u16::try_from(raw).ok().filter(|r| *r != 0xFFFF)
}

fn heart_rate(readings: &[Reading], c: &mut Choices) -> Option<HeartRate> {
    let [hr] = measurement(readings, ["heart_rate"], 1)?;
    let d = quantize(hr?.value, CANONICAL, range_of("heart_rate"), 0xFFFF, 0..=0)?;
    let bpm = u16::try_from(d.m).ok()?;
    let wide = bpm > 255 || c.flip();
    let contact = c.pick(&[0, 1, 3]);
    let energy_kj = c.one_in(4).then(|| (c.next() % 5000) as u16);
    // RR intervals only with a beat to time them; the flag promises at least one.
    let rr = (bpm > 0 && c.flip()).then(|| {
        let interval = (61_440.0 / f64::from(bpm)).round() as u16;
        vec![interval; 1 + c.below(3)]
    });
    Some(HeartRate {
        wide,
        contact,
        bpm,
        energy_kj,
        rr,
    })
}

fn blood_pressure(readings: &[Reading], keep: bool, c: &mut Choices) -> Option<BloodPressure> {
    let [sys, dia, mean, pulse] = measurement(
        readings,
        ["bp_systolic", "bp_diastolic", "bp_mean", "heart_rate"],
        2,
    )?;
    let (sys, dia) = (sys?, dia?);
    let kpa = c.flip();
    let unit = if kpa { KPA } else { CANONICAL };
    let pressure = |r: Reading| sfloat(r.value, unit, r.metric, 0);
    let systolic = pressure(sys)?;
    let diastolic = pressure(dia)?;
    // Cuffs that do not compute MAP (or pulse) send NaN or NRes there.
    let mean = match mean {
        Some(r) => pressure(r)?,
        None => c.pick(&[SFLOAT_NAN, SFLOAT_NRES]),
    };
    let pulse = match pulse {
        Some(r) => Some(sfloat(r.value, CANONICAL, r.metric, 0)?),
        None => c.one_in(4).then_some(SFLOAT_NAN),
    };
    let stamp = stamp(sys.time_ms, keep, c)?;
    let user = c.one_in(3).then(|| c.pick(&[1, 2, 0xFF]));
    // Measurement status: none, or irregular pulse (b2), which does not void the pressures.
    let status = c.one_in(3).then(|| c.pick(&[0x0000, 0x0004]));
    Some(BloodPressure {
        kpa,
        systolic,
        diastolic,
        mean,
        stamp,
        pulse,
        user,
        status,
    })
}

fn glucose(readings: &[Reading], c: &mut Choices) -> Option<Glucose> {
    let [g] = measurement(readings, ["glucose"], 1)?;
    let g = g?;
    let mol = c.flip();
    let (unit, shift) = if mol { (MMOLL, 3) } else { (CANONICAL, 5) };
    let value = sfloat(g.value, unit, g.metric, shift)?;
    // Base time plus a whole-minute offset is the measurement's time.
    let offset_min = c.flip().then(|| c.below(241) as i16 - 120);
    let base_ms = g
        .time_ms
        .checked_sub(i64::from(offset_min.unwrap_or(0)) * 60_000)?;
    // Capillary whole blood or plasma at the finger, earlobe or an alternate site; venous
    // plasma; interstitial fluid (location not available). Never a control solution.
    let type_location = c.pick(&[0x11, 0x12, 0x21, 0x22, 0x31, 0xF4, 0xF9]);
    Some(Glucose {
        sequence: c.next() as u16,
        base: date_time(base_ms)?,
        offset_min,
        concentration: Some((value, type_location)),
        mol,
        // None, or battery low (b0), which does not void the reading.
        status: c.one_in(3).then(|| c.pick(&[0x0000, 0x0001])),
    })
}

fn weight(readings: &[Reading], keep: bool, c: &mut Choices) -> Option<Weight> {
    let [w] = measurement(readings, ["body_weight"], 1)?;
    let w = w?;
    let range = range_of(w.metric);
    let mut imperial = c.flip();
    let raw = match weight_raw(w.value, imperial, range) {
        Some(raw) => raw,
        None => {
            imperial = !imperial;
            weight_raw(w.value, imperial, range)?
        }
    };
    let stamp = stamp(w.time_ms, keep, c)?;
    let user = c.one_in(3).then(|| c.pick(&[1, 2, 0xFF]));
    let bmi_height = c.one_in(3).then(|| {
        let height_m = c.pick(&[1.52, 1.65, 1.78, 1.91]);
        let bmi = (w.value / (height_m * height_m) * 10.0)
            .round()
            .min(65_535.0) as u16;
        let height = if imperial {
            (height_m / 0.0254 * 10.0).round() as u16
        } else {
            (height_m * 1000.0).round() as u16
        };
        (bmi, height)
    });
    Some(Weight {
        imperial,
        raw,
        stamp,
        user,
        bmi_height,
    })
}

fn plx(
    continuous: bool,
    readings: &[Reading],
    keep: bool,
    swap: bool,
    c: &mut Choices,
) -> Option<Gatt> {
    let [spo2, pulse] = measurement(readings, ["spo2", "heart_rate"], 2)?;
    let (spo2, pulse) = (spo2?, pulse?);
    let time_ms = spo2.time_ms;
    let spo2 = sfloat(spo2.value, CANONICAL, spo2.metric, 0)?;
    let pulse = sfloat(pulse.value, CANONICAL, pulse.metric, 0)?;
    // Measurement status: validated (b7), fully qualified (b8); device status: low
    // perfusion (b5). None of them voids the reading.
    let measurement = c
        .one_in(3)
        .then(|| c.pick(&[0x0000, 0x0080, 0x0100, 0x0180]));
    let device = c.one_in(3).then(|| c.pick(&[0x00_0000, 0x00_0020]));
    let pai = c.one_in(3).then(|| c.pick(&PAI));
    let continuous = if continuous {
        !(swap && c.one_in(4))
    } else {
        !keep && swap && c.flip()
    };
    if continuous {
        let pair = |c: &mut Choices| {
            c.one_in(3)
                .then(|| c.pick(&[(spo2, pulse), (SFLOAT_NAN, SFLOAT_NAN)]))
        };
        return Some(Gatt::PlxContinuous(PlxContinuous {
            spo2,
            pulse,
            fast: pair(c),
            slow: pair(c),
            measurement,
            device,
            pai,
        }));
    }
    let (stamp, clock_not_set) = if keep {
        (Some(date_time(time_ms)?), false)
    } else {
        match c.below(3) {
            0 => (None, false),
            1 => (Some(UNKNOWN_TIME), false),
            // A clock never set counts from its default: the device says so, Vigil ignores it.
            _ => (
                Some([0xD0, 0x07, 1, 1, c.below(24) as u8, c.below(60) as u8, 0]),
                true,
            ),
        }
    };
    Some(Gatt::PlxSpotCheck(PlxSpotCheck {
        spo2,
        pulse,
        stamp,
        measurement,
        device,
        pai,
        clock_not_set,
    }))
}

fn temperature(readings: &[Reading], keep: bool, c: &mut Choices) -> Option<Temperature> {
    let [t] = measurement(readings, ["body_temperature"], 1)?;
    let t = t?;
    let fahrenheit = c.flip();
    let unit = if fahrenheit { FAHRENHEIT } else { CANONICAL };
    let raw = float(t.value, unit, t.metric)?;
    let stamp = stamp(t.time_ms, keep, c)?;
    // Body site: armpit, body, ear, finger, GI tract, mouth, rectum, toe, tympanum.
    let site = c.flip().then(|| 1 + c.below(9) as u8);
    Some(Temperature {
        fahrenheit,
        raw,
        stamp,
        site,
    })
}

/// A typical value of every metric the characteristic carries, measured at `time_ms`.
fn typical_gatt(uuid: &str, time_ms: i64, c: &mut Choices) -> Option<Gatt> {
    let (uuid, metrics) = characteristic(uuid)?;
    let readings: Vec<Reading> = metrics
        .iter()
        .filter_map(|m| metric_info(m))
        .map(|m| typical(m, time_ms))
        .collect();
    Gatt::build(uuid, &readings, true, false, c)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use vigil::decode::{RawReading, decode_gatt, decode_senml, decode_vigil_json};
    use vigil::domain::{DeviceId, Observation, PatientId};
    use vigil::ingest::pipeline::{self, Accepted, Rejection, Source};
    use vigil::ingest::topic::TopicKind;
    use vigil::registry::Profiles;

    use super::*;

    /// Vigil's clock in these tests: 2026-11-25T13:00:00Z.
    const NOW: i64 = 1_795_611_600_000;

    /// Vigil's pipeline for one device, as the gateway runs it.
    struct Vigil {
        profiles: Profiles,
        device: DeviceId,
        patient: PatientId,
    }

    impl Vigil {
        fn new() -> Self {
            Self {
                profiles: Profiles::built_in().expect("built-in profiles"),
                device: DeviceId::parse("dev-1").expect("device id"),
                patient: PatientId::parse("p1").expect("patient id"),
            }
        }

        fn process(
            &self,
            profile: &str,
            p: &Payload,
            content_type: Option<&str>,
        ) -> Result<Accepted, Rejection> {
            let src = Source {
                device_id: &self.device,
                patient_id: &self.patient,
                profile: self.profiles.get(profile).expect(profile),
            };
            pipeline::process(&src, topic_kind(&p.suffix), &p.bytes, content_type, NOW)
        }

        fn accepts_gatt(&self, profile: &str, uuid: u16) -> bool {
            self.profiles
                .get(profile)
                .expect(profile)
                .accepts_gatt(uuid)
        }

        fn metrics(&self, profile: &str) -> Vec<&'static str> {
            let p = self.profiles.get(profile).expect(profile);
            p.metrics.iter().map(|m| m.name()).collect()
        }
    }

    fn topic_kind(suffix: &str) -> TopicKind {
        match suffix.strip_prefix("gatt/") {
            Some(uuid) => TopicKind::Gatt(u16::from_str_radix(uuid, 16).expect(suffix)),
            None => {
                assert_eq!(suffix, "readings");
                TopicKind::Readings
            }
        }
    }

    fn observations(result: Result<Accepted, Rejection>, p: &Payload) -> Vec<Observation> {
        match result {
            Ok(Accepted::Readings(o)) => o,
            other => panic!(
                "{other:?} for {} {}",
                p.suffix,
                String::from_utf8_lossy(&p.bytes)
            ),
        }
    }

    /// Test inputs, deterministic.
    struct Gen(Choices);

    impl Gen {
        fn new(seed: u64) -> Self {
            Self(Choices::new(seed))
        }

        fn unit(&mut self) -> f64 {
            (self.0.next() >> 11) as f64 / (1u64 << 53) as f64
        }

        /// A value in the metric's range (`hi` at most `cap`), its ends included now and then.
        fn value(&mut self, info: &MetricInfo, cap: f64) -> f64 {
            let (lo, hi) = (info.range.0, info.range.1.min(cap));
            let v = match self.0.below(16) {
                0 => lo,
                1 => hi,
                _ => lo + (hi - lo) * self.unit(),
            };
            if info.integral {
                v.round()
            } else if self.0.flip() {
                // As devices write them: 36.8, 97.5, 72.0.
                ((v * 10.0).round() / 10.0).clamp(lo, hi)
            } else {
                v
            }
        }

        /// A time up to a week before `NOW` (at least a minute, so it differs from receipt).
        fn time(&mut self) -> i64 {
            NOW - 60_000 - (self.unit() * 7.0 * DAY as f64) as i64
        }
    }

    fn info(name: &str) -> &'static MetricInfo {
        metric_info(name).expect(name)
    }

    /// Checks a value that went through JSON. Vigil parses JSON numbers with serde_json's
    /// default (not `float_roundtrip`) parser, which may miss the nearest double by an ulp
    /// when the number needs 17 significant digits. Numbers as devices write them (a decimal
    /// or two) and every value in another unit (the encoder checks those) come back exactly.
    fn assert_json_value(got: f64, want: f64, raw: &RawReading, text: &str) -> bool {
        let canonical =
            raw.unit.is_none() || raw.unit.as_deref() == metric_info(&raw.metric).map(|m| m.unit);
        let short = (want * 10.0).round() / 10.0 == want;
        if !canonical || short {
            assert_eq!(got, want, "{text}");
        } else {
            let ulps = (got - want).abs() / (f64::EPSILON * want.abs().max(f64::MIN_POSITIVE));
            assert!(ulps <= 2.0, "{got} is {ulps} ulps from {want}: {text}");
        }
        got == want
    }

    #[test]
    fn vigil_json_comes_back_exactly() {
        let vigil = Vigil::new();
        let mut g = Gen::new(1);
        let mut spellings = BTreeSet::new();
        let (mut objects, mut arrays, mut offsets, mut numbers) = (0, 0, 0, 0);
        let (mut exact, mut total) = (0, 0);
        for _ in 0..3000 {
            let n = 1 + g.0.below(4);
            let readings: Vec<Reading> = (0..n)
                .map(|_| {
                    let m = &METRICS[g.0.below(METRICS.len())];
                    reading(m, g.value(m, f64::INFINITY), g.time())
                })
                .collect();
            let p = encode("dev-1", Encoding::VigilJson, &readings, g.0.next()).expect("encodes");
            assert_eq!(p.suffix, "readings");
            assert_ne!(p.content_type, Some(SENML_CONTENT_TYPE));
            let text = String::from_utf8(p.bytes.clone()).expect("UTF-8");
            match text.as_bytes()[0] {
                b'{' => objects += 1,
                _ => arrays += 1,
            }
            offsets += usize::from(text.contains("+05:30") || text.contains("-08:00"));
            numbers += usize::from(text.contains("\"time\":1") || text.contains("\"time\": 1"));
            let raw = decode_vigil_json(&p.bytes).expect("vigil-json");
            let got = observations(vigil.process("patient-app", &p, p.content_type), &p);
            assert_eq!(got.len(), readings.len(), "{text}");
            for ((o, r), raw) in got.iter().zip(&readings).zip(&raw) {
                assert_eq!(o.metric.name(), r.metric, "{text}");
                exact += usize::from(assert_json_value(o.value, r.value, raw, &text));
                assert_eq!(o.time_ms, r.time_ms, "{text}");
            }
            total += readings.len();
            spellings.extend(raw.into_iter().map(|r| (r.metric, r.unit)));
        }
        assert!(exact * 10 > total * 8, "only {exact} of {total} exact");
        assert!(objects > 100 && arrays > 100 && offsets > 100 && numbers > 100);
        // Every spelling of every unit: omitted, canonical, and each other unit accepted.
        for m in &METRICS {
            let units = [None, Some(m.unit)]
                .into_iter()
                .chain(m.json_units.iter().map(|u| Some(u.name)));
            for unit in units {
                let key = (m.name.to_owned(), unit.map(str::to_owned));
                assert!(spellings.contains(&key), "never wrote {key:?}");
            }
        }
    }

    #[test]
    fn senml_comes_back_exactly() {
        let vigil = Vigil::new();
        let mut g = Gen::new(2);
        let mut spellings = BTreeSet::new();
        let mut labels: BTreeMap<&str, usize> = BTreeMap::new();
        let mut without_content_type = 0;
        let (mut exact, mut total) = (0, 0);
        for case in 0..3000 {
            // Half the packs come from SenML devices and rely on their profile, half from any
            // device and name the content type.
            let (profile, pool): (&str, &[&str]) = match case % 4 {
                0 => (
                    "smartwatch",
                    &["heart_rate", "spo2", "respiratory_rate", "steps"],
                ),
                1 => ("cgm", &["glucose"]),
                _ => ("patient-app", &[]),
            };
            let n = 1 + g.0.below(5);
            let readings: Vec<Reading> = (0..n)
                .map(|_| {
                    let m = match pool {
                        [] => &METRICS[g.0.below(METRICS.len())],
                        names => info(names[g.0.below(names.len())]),
                    };
                    reading(m, g.value(m, f64::INFINITY), g.time())
                })
                .collect();
            let p = encode("dev-1", Encoding::Senml, &readings, g.0.next()).expect("encodes");
            let text = String::from_utf8(p.bytes.clone()).expect("UTF-8");
            for label in ["\"bn\"", "\"bt\"", "\"bu\"", "\"bv\"", "\"bver\"", "\"u\""] {
                *labels.entry(label).or_default() += usize::from(text.contains(label));
            }
            let raw = decode_senml(&p.bytes, NOW).expect("SenML");
            let content_type = if profile == "patient-app" {
                Some(SENML_CONTENT_TYPE)
            } else {
                without_content_type += usize::from(p.content_type.is_none());
                p.content_type
            };
            let got = observations(vigil.process(profile, &p, content_type), &p);
            assert_eq!(got.len(), readings.len(), "{text}");
            for ((o, r), raw) in got.iter().zip(&readings).zip(&raw) {
                assert_eq!(o.metric.name(), r.metric, "{text}");
                exact += usize::from(assert_json_value(o.value, r.value, raw, &text));
                assert_eq!(o.time_ms, r.time_ms, "{text}");
            }
            total += readings.len();
            spellings.extend(raw.into_iter().map(|r| (r.metric, r.unit)));
        }
        assert!(exact * 10 > total * 8, "only {exact} of {total} exact");
        assert!(without_content_type > 100);
        for (label, n) in &labels {
            assert!(*n > 100, "{label} in only {n} packs");
        }
        for m in &METRICS {
            let units = [None, Some(m.unit)]
                .into_iter()
                .chain(m.senml_units.iter().map(|u| Some(u.name)));
            for unit in units {
                let key = (m.name.to_owned(), unit.map(str::to_owned));
                assert!(spellings.contains(&key), "never wrote {key:?}");
            }
        }
    }

    /// One step of the wire's resolution at the decoded value, in the canonical unit.
    fn resolution(uuid: &str, raw: &RawReading) -> f64 {
        let w = raw.value.abs();
        // The finest power of ten whose multiple of the mantissa limit reaches w.
        let step = |max: f64, min_exponent: i32| {
            let mut e = min_exponent;
            while w / 10f64.powi(e) > max {
                e += 1;
            }
            10f64.powi(e)
        };
        let unit = raw.unit.as_deref().unwrap_or("");
        match (uuid, unit) {
            ("2a37", _) => 1.0,
            ("2a9d", "kg") => 0.005,
            ("2a9d", _) => 0.01 * KG_PER_LB,
            ("2a1c", "Cel") => step(FLOAT_MAX as f64, -8),
            ("2a1c", _) => step(FLOAT_MAX as f64, -8) * 5.0 / 9.0,
            (_, "kPa") => step(SFLOAT_MAX as f64, -8) * MMHG_PER_KPA,
            (_, "mg/dL") => step(SFLOAT_MAX as f64, -3),
            (_, "mmol/L") => step(SFLOAT_MAX as f64, -5) * MGDL_PER_MMOLL,
            _ => step(SFLOAT_MAX as f64, -8),
        }
    }

    #[test]
    fn gatt_comes_back_within_the_wire_resolution() {
        let vigil = Vigil::new();
        let mut g = Gen::new(3);
        // The flag bits each characteristic's payloads set, ORed over all of them.
        let mut flags_seen: BTreeMap<String, u8> = BTreeMap::new();
        let (mut kept, mut dropped) = (0, 0);
        for (uuid, metrics) in CHARACTERISTICS {
            let required = match uuid {
                "2a35" | "2a5e" | "2a5f" => 2,
                _ => 1,
            };
            for _ in 0..600 {
                let time = g.time();
                let mut readings = Vec::new();
                for (i, m) in metrics.iter().enumerate() {
                    if i < required || g.0.flip() {
                        let m = info(m);
                        readings.push(reading(m, g.value(m, 327.67), time));
                    }
                }
                let encoding = Encoding::Gatt(uuid);
                let variant = g.0.next();
                let p = encode("dev-1", encoding, &readings, variant)
                    .unwrap_or_else(|| panic!("cannot encode {readings:?} as {uuid}"));
                let actual = p.suffix.strip_prefix("gatt/").expect("a GATT topic");
                if actual != uuid {
                    assert!(matches!(
                        (uuid, actual),
                        ("2a5e", "2a5f") | ("2a5f", "2a5e")
                    ));
                    assert!(!keeps_time(encoding, variant));
                }
                *flags_seen.entry(actual.to_owned()).or_default() |= p.bytes[0];
                let raw = decode_gatt(u16::from_str_radix(actual, 16).unwrap(), &p.bytes)
                    .unwrap_or_else(|e| panic!("{e} for {readings:?} as {:02x?}", p.bytes));
                let got = observations(vigil.process("patient-app", &p, p.content_type), &p);
                assert_eq!(
                    got.len(),
                    readings.len(),
                    "{readings:?} as {:02x?}",
                    p.bytes
                );
                let expected_time = if keeps_time(encoding, variant) {
                    kept += 1;
                    time.div_euclid(1000) * 1000
                } else {
                    dropped += 1;
                    NOW
                };
                for r in &readings {
                    let o = got
                        .iter()
                        .find(|o| o.metric.name() == r.metric)
                        .expect(r.metric);
                    let wire = raw.iter().find(|w| w.metric == r.metric).expect(r.metric);
                    let tolerance = resolution(actual, wire) + 1e-9;
                    assert!(
                        (o.value - r.value).abs() <= tolerance,
                        "{} {} came back {} (± {tolerance}) from {:02x?}",
                        r.metric,
                        r.value,
                        o.value,
                        p.bytes
                    );
                    assert_eq!(o.time_ms, expected_time, "{:02x?}", p.bytes);
                }
            }
        }
        assert!(kept > 1000 && dropped > 1000);
        // Every flag the encoder may set was set: units, timestamp, optional fields.
        let expected = [
            ("2a37", 0b1_1111),
            ("2a35", 0b1_1111),
            ("2a18", 0b1111),
            ("2a9d", 0b1111),
            ("2a5e", 0b1_1111),
            ("2a5f", 0b1_1111),
            ("2a1c", 0b111),
        ];
        for (uuid, bits) in expected {
            assert_eq!(flags_seen.get(uuid), Some(&bits), "flags of {uuid}");
        }
    }

    #[test]
    fn gatt_refuses_what_it_cannot_carry() {
        let at = |metric, value| Reading {
            metric,
            value,
            time_ms: NOW - 60_000,
        };
        let cases: &[(&str, &[Reading])] = &[
            ("2a35", &[at("bp_diastolic", 80.0)]),
            ("2a35", &[at("bp_systolic", 120.0), at("spo2", 97.0)]),
            ("2a37", &[at("spo2", 97.0)]),
            ("2a37", &[at("heart_rate", 70.0), at("heart_rate", 71.0)]),
            ("2a37", &[at("heart_rate", -3.0)]),
            ("2a5e", &[at("spo2", 97.0)]),
            ("2a9d", &[at("body_weight", 400.0)]),
            ("2a1c", &[at("body_temperature", f64::NAN)]),
            ("2a99", &[at("heart_rate", 70.0)]),
            ("2a37", &[]),
        ];
        for (uuid, readings) in cases {
            for variant in 0..64 {
                assert_eq!(
                    encode("d", Encoding::Gatt(uuid), readings, variant),
                    None,
                    "{uuid} {readings:?}"
                );
            }
        }
        // Systolic and diastolic taken at different times are not one measurement.
        let apart = [
            at("bp_systolic", 120.0),
            Reading {
                time_ms: NOW,
                ..at("bp_diastolic", 80.0)
            },
        ];
        assert_eq!(encode("d", Encoding::Gatt("2a35"), &apart, 0), None);
        // SenML cannot say 1970: Vigil would read it as relative to now.
        let old = [Reading {
            time_ms: 0,
            ..at("heart_rate", 70.0)
        }];
        assert_eq!(encode("d", Encoding::Senml, &old, 0), None);
    }

    #[test]
    fn gatt_vectors_match_the_bluetooth_layouts() {
        // gatt.md: 2a35 with flags 0 is systolic, diastolic, MAP as SFLOAT; 120/80/93 mmHg
        // are 120 × 10^0 = 0x0078, 0x0050, 0x005D.
        let bp = Gatt::BloodPressure(BloodPressure {
            kpa: false,
            systolic: sfloat(120.0, CANONICAL, "bp_systolic", 0).unwrap(),
            diastolic: sfloat(80.0, CANONICAL, "bp_diastolic", 0).unwrap(),
            mean: sfloat(93.0, CANONICAL, "bp_mean", 0).unwrap(),
            stamp: None,
            pulse: None,
            user: None,
            status: None,
        });
        assert_eq!(bp.bytes(), [0x00, 0x78, 0x00, 0x50, 0x00, 0x5D, 0x00]);
        // sfloat.rs: 36.6 = 366 × 10^-1 = 0xF16E; FLOAT 0xFF00016E.
        assert_eq!(sfloat(36.6, CANONICAL, "body_temperature", 0), Some(0xF16E));
        assert_eq!(
            float(36.6, CANONICAL, "body_temperature"),
            Some(0xFF00_016E)
        );
        // gatt.md weight: 70.5 kg / 0.005 = 14100 = 0x3714.
        assert_eq!(weight_raw(70.5, false, None), Some(0x3714));
        // Glucose 100 mg/dL = 100 × 10^-5 kg/L: mantissa 100 (0x064), exponent -5 (0xB).
        assert_eq!(sfloat(100.0, CANONICAL, "glucose", 5), Some(0xB064));
        // At the range's edge rounding stays inside: 0.3 kg is 0.661 lb, and 0.66 lb would
        // be 0.29937 kg.
        let raw = weight_raw(0.3, true, range_of("body_weight")).unwrap();
        assert!(f64::from(raw) / 100.0 * KG_PER_LB >= 0.3, "{raw}");
    }

    const PROFILE_ENCODINGS: [(&str, &[Encoding]); 8] = [
        ("bp-cuff", &[Encoding::VigilJson, Encoding::Gatt("2a35")]),
        ("cgm", &[Encoding::Senml, Encoding::VigilJson]),
        (
            "glucose-meter",
            &[Encoding::VigilJson, Encoding::Gatt("2a18")],
        ),
        (
            "patient-app",
            &[
                Encoding::VigilJson,
                Encoding::Senml,
                Encoding::Gatt("2a37"),
                Encoding::Gatt("2a35"),
                Encoding::Gatt("2a18"),
                Encoding::Gatt("2a9d"),
                Encoding::Gatt("2a5e"),
                Encoding::Gatt("2a5f"),
                Encoding::Gatt("2a1c"),
            ],
        ),
        (
            "pulse-oximeter",
            &[
                Encoding::VigilJson,
                Encoding::Gatt("2a5e"),
                Encoding::Gatt("2a5f"),
            ],
        ),
        ("scale", &[Encoding::VigilJson, Encoding::Gatt("2a9d")]),
        (
            "smartwatch",
            &[Encoding::Senml, Encoding::VigilJson, Encoding::Gatt("2a37")],
        ),
        (
            "thermometer",
            &[Encoding::VigilJson, Encoding::Gatt("2a1c")],
        ),
    ];

    /// The rejection label a payload aimed at `metric` of `profile` should meet.
    fn expected_label(
        vigil: &Vigil,
        profile: &str,
        kind: Malformed,
        metric: &str,
        p: &Payload,
    ) -> &'static str {
        if let TopicKind::Gatt(uuid) = topic_kind(&p.suffix)
            && !vigil.accepts_gatt(profile, uuid)
        {
            return "gatt_not_in_profile";
        }
        let has = |m: &str| vigil.metrics(profile).contains(&m);
        match kind {
            Malformed::UnknownMetric => "unknown_metric",
            Malformed::WrongUnit => "unit",
            Malformed::OutOfRange => "range",
            Malformed::NotWholeNumber if info(metric).integral || has("steps") => "range",
            Malformed::NotWholeNumber => "unknown_metric",
            Malformed::FarFuture => "future",
            Malformed::ClockNotSet => "past",
            Malformed::UnknownCharacteristic => "gatt_not_in_profile",
            _ => "decode",
        }
    }

    #[test]
    fn every_malformed_kind_is_refused_for_the_reason_it_stands_for() {
        let vigil = Vigil::new();
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for (profile, encodings) in PROFILE_ENCODINGS {
            for encoding in encodings.iter().copied() {
                for metric in vigil.metrics(profile) {
                    for kind in Malformed::ALL {
                        for variant in 0..12 {
                            let p = malformed_for(kind, encoding, metric, NOW, variant);
                            let what = format!(
                                "{} for {profile} {encoding:?} {metric} variant {variant}: {} {:?}",
                                kind.name(),
                                p.suffix,
                                String::from_utf8_lossy(&p.bytes)
                            );
                            let e = match vigil.process(profile, &p, p.content_type) {
                                Err(e) => e,
                                Ok(a) => panic!("accepted {a:?}: {what}"),
                            };
                            assert!(!e.reason.is_empty(), "{what}");
                            let label = expected_label(&vigil, profile, kind, metric, &p);
                            assert_eq!(e.label, label, "{}: {what}", e.reason);
                            *seen.entry(kind.name()).or_default() += 1;

                            // Without a metric named, still refused.
                            let p = malformed(kind, encoding, NOW, variant);
                            let result = vigil.process(profile, &p, p.content_type);
                            assert!(
                                result.as_ref().is_err_and(|e| !e.reason.is_empty()),
                                "{result:?}: {} for {profile} {encoding:?}: {} {:?}",
                                kind.name(),
                                p.suffix,
                                String::from_utf8_lossy(&p.bytes)
                            );
                        }
                    }
                }
            }
        }
        assert_eq!(seen.len(), Malformed::ALL.len());
    }

    #[test]
    fn malformed_gatt_kinds_use_the_device_s_own_characteristic() {
        for (uuid, _) in CHARACTERISTICS {
            for kind in [
                Malformed::TruncatedGatt,
                Malformed::GattTrailingBytes,
                Malformed::GattReservedValue,
                Malformed::GattDeviceFault,
                Malformed::OutOfRange,
                Malformed::Empty,
            ] {
                for variant in 0..8 {
                    let p = malformed(kind, Encoding::Gatt(uuid), NOW, variant);
                    assert_eq!(p.suffix, format!("gatt/{uuid}"), "{}", kind.name());
                }
            }
            let time_kinds = [
                Malformed::FarFuture,
                Malformed::ClockNotSet,
                Malformed::BadTimestamp,
            ];
            for kind in time_kinds {
                let p = malformed(kind, Encoding::Gatt(uuid), NOW, 0);
                let stamped = STAMPED.contains(&uuid);
                assert_eq!(
                    p.suffix.starts_with("gatt/"),
                    stamped,
                    "{} {uuid}",
                    kind.name()
                );
            }
        }
    }

    #[test]
    fn names_are_distinct_and_status_is_the_contract_s() {
        let names: BTreeSet<&str> = Malformed::ALL.iter().map(|k| k.name()).collect();
        assert_eq!(names.len(), Malformed::ALL.len());
        assert_eq!(status(57), br#"{"battery":57}"#);
        assert_eq!(status(250), br#"{"battery":100}"#);
        let parsed = pipeline::parse_status(&status(0)).expect("a status");
        assert_eq!(parsed.battery, Some(0));
    }

    #[test]
    fn the_same_variant_gives_the_same_bytes() {
        let r = [Reading {
            metric: "heart_rate",
            value: 72.4,
            time_ms: NOW - 1234,
        }];
        for encoding in [Encoding::VigilJson, Encoding::Senml, Encoding::Gatt("2a37")] {
            assert_eq!(encode("d", encoding, &r, 9), encode("d", encoding, &r, 9));
        }
        assert_eq!(
            malformed(Malformed::Truncated, Encoding::Senml, NOW, 5),
            malformed(Malformed::Truncated, Encoding::Senml, NOW, 5)
        );
    }
}
