//! Time stamps are Unix milliseconds (`i64`) inside Vigil and RFC 3339 at the edges.

use ::time::OffsetDateTime;
use ::time::format_description::well_known::Rfc3339;

/// The wall clock, in Unix milliseconds. Only shells call this; pure code takes `now` as input.
pub fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// Parses an RFC 3339 time stamp (any offset) into Unix milliseconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// Formats Unix milliseconds as RFC 3339 in UTC, with milliseconds when they are not zero.
pub fn format_rfc3339(ms: i64) -> String {
    let Ok(t) = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000) else {
        return ms.to_string();
    };
    let (y, mo, d) = (t.year(), u8::from(t.month()), t.day());
    let (h, mi, s) = (t.hour(), t.minute(), t.second());
    let frac = ms.rem_euclid(1000);
    if frac == 0 {
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
    } else {
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{frac:03}Z")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_rfc3339() {
        let ms = parse_rfc3339("2026-11-25T13:00:00Z").unwrap();
        assert_eq!(ms, 1_795_611_600_000);
        assert_eq!(format_rfc3339(ms), "2026-11-25T13:00:00Z");
        assert_eq!(format_rfc3339(ms + 250), "2026-11-25T13:00:00.250Z");
        assert_eq!(parse_rfc3339("2026-11-25T14:00:00+01:00"), Some(ms));
        assert_eq!(parse_rfc3339("yesterday"), None);
    }
}
