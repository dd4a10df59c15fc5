//! Shared checks for Vigil's fuzz targets (`fuzz_targets/*.rs`).
//!
//! A target fails on a panic anywhere in Vigil, and also when a result breaks a guarantee
//! that `vigil::decode` or `vigil::ingest::pipeline` documents; those checks live here so
//! every target states them the same way.

use vigil::decode::{DecodeError, RawReading};

/// 0000-01-01T00:00:00Z in Unix milliseconds (the earliest time RFC 3339 can write).
pub const MIN_MS: i64 = -62_167_219_200_000;
/// 9999-12-31T23:59:59.999Z in Unix milliseconds (the latest time RFC 3339 can write).
pub const MAX_MS: i64 = 253_402_300_799_999;

/// The receipt time the targets use where Vigil would read the clock: 2026-11-25T13:00:00Z.
pub const NOW_MS: i64 = 1_795_611_600_000;

/// Checks a decoder's result against `vigil::decode`'s documented guarantees: a successful
/// decode has at least one reading, every value is finite, every time lies within years
/// 0000–9999; an error renders as text (the dead-letter reason) without panicking.
///
/// `always_unit`: GATT readings always carry the unit their flags imply.
/// `always_time`: SenML readings always carry a time (relative times are resolved).
pub fn check_decoded(
    result: &Result<Vec<RawReading>, DecodeError>,
    always_unit: bool,
    always_time: bool,
) {
    match result {
        Ok(readings) => {
            assert!(!readings.is_empty(), "Ok with no reading");
            for r in readings {
                assert!(!r.metric.is_empty(), "empty metric name: {r:?}");
                assert!(r.value.is_finite(), "value is not finite: {r:?}");
                if always_unit {
                    assert!(r.unit.is_some(), "reading without a unit: {r:?}");
                }
                if always_time {
                    assert!(r.time_ms.is_some(), "reading without a time: {r:?}");
                }
                if let Some(ms) = r.time_ms {
                    assert!(
                        (MIN_MS..=MAX_MS).contains(&ms),
                        "time {ms} ms is outside years 0000-9999: {r:?}"
                    );
                }
            }
        }
        Err(e) => {
            let reason = e.to_string();
            assert!(!reason.is_empty(), "empty error text for {e:?}");
        }
    }
}
