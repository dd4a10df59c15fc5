//! Payload decoders: the bytes a device published, turned into [`RawReading`]s.
//!
//! This module owns the wire formats Vigil accepts on its reading topics: `vigil-json`
//! ([`decode_vigil_json`]), SenML JSON per RFC 8428 ([`decode_senml`]) and the raw value bytes
//! of the Bluetooth GATT health characteristics ([`decode_gatt`], IEEE 11073 SFLOAT/FLOAT
//! inside). A reading comes out as the payload stated it: metric name and unit are not yet
//! checked against the metric table, values are not converted to canonical units and not
//! range-checked, times are not compared with the clock. That happens later in the pipeline,
//! which also turns every [`DecodeError`] into a dead letter whose reason is the error's text,
//! so each error says what is wrong in words a device maker can act on.
//!
//! Decoders here must never do I/O, read a clock (SenML's relative times take `now_ms` from
//! the caller), panic on any input, or silently drop a value the device sent (the few values
//! that are skipped are listed on the function that skips them).

mod gatt;
mod json;
mod senml;
mod sfloat;
mod vigil_json;

pub use sfloat::SpecialValue;

/// One reading as the payload stated it: names and units not yet checked against the metric table.
#[derive(Debug, Clone, PartialEq)]
pub struct RawReading {
    /// Metric name: canonical (`heart_rate`, `bp_systolic`, …) for GATT; for vigil-json and
    /// SenML whatever name the payload used.
    pub metric: String,
    /// The value in `unit`; always finite.
    pub value: f64,
    /// The unit as stated (vigil-json, SenML) or the UCUM unit the GATT flags imply;
    /// `None` means the metric's canonical unit.
    pub unit: Option<String>,
    /// When the value was measured, Unix milliseconds UTC; `None` means "stamp with the
    /// receipt time". Always within years 0000–9999 when present.
    pub time_ms: Option<i64>,
}

/// Why a payload could not be decoded. The `Display` text is the reason given to the device
/// maker (dead letter and `errors` topic); indices of elements and records count from 0.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// The payload is not well-formed JSON (or not UTF-8).
    #[error("invalid JSON at line {line} column {column}: {reason}")]
    Json {
        /// 1-based line of the problem.
        line: usize,
        /// 1-based column of the problem.
        column: usize,
        /// What the JSON parser found wrong.
        reason: String,
    },
    /// A vigil-json payload is neither an object nor an array.
    #[error("expected a JSON object or an array of objects, found {found}")]
    NotObjectOrArray {
        /// The kind of JSON value found, e.g. "a string".
        found: &'static str,
    },
    /// A SenML payload is not an array (RFC 8428 §5: the root is an array of records).
    #[error("expected a SenML pack (a JSON array of records), found {found}")]
    NotAnArray {
        /// The kind of JSON value found, e.g. "an object".
        found: &'static str,
    },
    /// The array holds no element or record.
    #[error("empty array")]
    EmptyArray,
    /// The array holds more elements or records than one payload may carry.
    #[error("array has more than {max} elements")]
    TooManyElements {
        /// The most elements accepted.
        max: usize,
    },
    /// One element of a vigil-json payload is unusable.
    #[error("element {index}: {reason}")]
    Element {
        /// Position of the element in the array (0 for a single object).
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// One record of a SenML pack is unusable.
    #[error("record {index}: {reason}")]
    Record {
        /// Position of the record in the pack.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// Vigil has no decoder for this GATT characteristic.
    #[error(
        "no decoder for GATT characteristic {uuid16:04x} (supported: 2a37, 2a35, 2a18, 2a9d, 2a5e, 2a5f, 2a1c)"
    )]
    UnknownCharacteristic {
        /// The 16-bit UUID from the topic.
        uuid16: u16,
    },
    /// A GATT payload without even its flags byte.
    #[error("{characteristic:04x}: payload is empty, need at least 1 byte (flags)")]
    Empty {
        /// The characteristic's 16-bit UUID.
        characteristic: u16,
    },
    /// A GATT payload shorter than the fields its flags declare.
    #[error(
        "{characteristic:04x}: payload is {len} bytes, flags 0x{flags:02x} need at least {needed}"
    )]
    Truncated {
        /// The characteristic's 16-bit UUID.
        characteristic: u16,
        /// The flags byte as received.
        flags: u8,
        /// Length of the payload.
        len: usize,
        /// Length the flags require.
        needed: usize,
    },
    /// A GATT payload longer than the fields its flags declare.
    #[error(
        "{characteristic:04x}: payload is {len} bytes, flags 0x{flags:02x} declare exactly {expected}"
    )]
    TrailingBytes {
        /// The characteristic's 16-bit UUID.
        characteristic: u16,
        /// The flags byte as received.
        flags: u8,
        /// Length of the payload.
        len: usize,
        /// Length the flags declare.
        expected: usize,
    },
    /// A GATT payload whose layout is wrong in a way other than its length.
    #[error("{characteristic:04x}: {reason}")]
    Malformed {
        /// The characteristic's 16-bit UUID.
        characteristic: u16,
        /// What is wrong.
        reason: &'static str,
    },
    /// An IEEE 11073 special value where a number is needed.
    #[error("{characteristic:04x}: {encoding} special value {value} in {field}")]
    SpecialValue {
        /// The characteristic's 16-bit UUID.
        characteristic: u16,
        /// "SFLOAT" or "FLOAT".
        encoding: &'static str,
        /// Which special value.
        value: SpecialValue,
        /// The field that held it, e.g. "systolic".
        field: &'static str,
    },
    /// A GATT DateTime that is not a real moment (month 13, hour 25, 30 February …).
    #[error("{characteristic:04x}: timestamp {reason}")]
    InvalidTimestamp {
        /// The characteristic's 16-bit UUID.
        characteristic: u16,
        /// What is wrong with it.
        reason: String,
    },
    /// A well-formed GATT payload that the device itself marks as not a usable patient
    /// reading (no sensor contact, control solution, sensor fault, measurement invalid …).
    #[error("{characteristic:04x}: {reason}")]
    Unusable {
        /// The characteristic's 16-bit UUID.
        characteristic: u16,
        /// The device's own reason, naming the flag or status bit.
        reason: &'static str,
    },
}

/// The GATT characteristics [`decode_gatt`] understands, as 16-bit UUIDs: heart rate, blood
/// pressure, glucose, weight, pulse oximetry spot-check and continuous, temperature.
pub const GATT_CHARACTERISTICS: &[u16] = &[0x2a37, 0x2a35, 0x2a18, 0x2a9d, 0x2a5e, 0x2a5f, 0x2a1c];

/// Decodes a `vigil-json` payload: one object or a non-empty array of at most 10,000 objects
/// `{"metric": "heart_rate", "value": 72, "unit": "/min", "time": "2026-11-25T13:00:00Z"}`.
///
/// `unit` may be omitted (or `null`) for the canonical unit; `time` may be omitted (or `null`)
/// for the receipt time, an RFC 3339 string with any offset, or Unix seconds as a JSON number
/// (fractions allowed, rounded to the millisecond). Other keys are ignored. Any unusable element
/// fails the whole payload.
pub fn decode_vigil_json(payload: &[u8]) -> Result<Vec<RawReading>, DecodeError> {
    vigil_json::decode(payload)
}

/// Decodes a SenML JSON pack (RFC 8428, `application/senml+json`) of at most 10,000 records.
///
/// The metric is the record's `n` (a base name `bn` identifies the device); times are
/// `bt + t` seconds, and a resolved time below 2^28 is relative to `now_ms` (RFC 8428 §4.5.3),
/// so every reading comes back with a time. Records carrying only string, boolean, data or sum
/// values are errors, not skipped.
pub fn decode_senml(payload: &[u8], now_ms: i64) -> Result<Vec<RawReading>, DecodeError> {
    senml::decode(payload, now_ms)
}

/// Decodes the value bytes of the GATT characteristic `uuid16` (one of
/// [`GATT_CHARACTERISTICS`]) into readings with canonical metric names and the UCUM unit the
/// flags imply (blood pressure in kPa stays in kPa; the pipeline converts).
///
/// Skipped rather than rejected: a blood-pressure mean arterial pressure or pulse rate that is
/// NaN or NRes (devices send these when they do not compute the value). Parsed but never
/// emitted: heart-rate energy expended and RR intervals, user ids, measurement status of
/// blood pressure, glucose sequence number and context flag, weight BMI and height,
/// pulse-oximetry fast/slow pairs and pulse amplitude index, temperature type.
pub fn decode_gatt(uuid16: u16, payload: &[u8]) -> Result<Vec<RawReading>, DecodeError> {
    gatt::decode(uuid16, payload)
}
