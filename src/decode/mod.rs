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
mod reading;
mod senml;
mod sfloat;
mod vigil_json;

pub use reading::{DecodeError, RawReading};
pub use sfloat::SpecialValue;

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
