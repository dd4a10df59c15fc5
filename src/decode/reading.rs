//! What every decoder returns: a [`RawReading`], or a [`DecodeError`] saying why the payload
//! is refused. Kept apart from the decoders' entry points (`decode/mod.rs`) so that the
//! decoders can use these types without depending on the module that calls them.

use super::sfloat::SpecialValue;

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
