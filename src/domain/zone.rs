//! Time zones by IANA name, and the calendar day a moment falls on in one.
//!
//! A patient's days of monitoring are counted where the patient lives (docs/billing.md): a
//! reading taken at 23:30 at home belongs to that day, whatever the server's clock says. Zones
//! come from the machine's copy of the IANA Time Zone Database (`/usr/share/zoneinfo`), kept
//! current by the operating system's updates, or, where a machine has none (a slim container),
//! from the copy built into Vigil.

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};

/// An IANA time zone, with its name.
#[derive(Debug, Clone)]
pub struct Zone {
    name: String,
    tz: TimeZone,
}

/// A time-zone name the database does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("timezone {0:?} is not an IANA time-zone name (like Europe/London or America/Chicago)")]
pub struct UnknownZone(pub String);

impl Zone {
    /// The zone called `name` (`America/New_York`, `UTC`).
    pub fn parse(name: &str) -> Result<Zone, UnknownZone> {
        // Names are ASCII paths of letters, digits, `/ _ - +`; anything else (a path with `..`)
        // is refused before the database is asked.
        let plausible = !name.is_empty()
            && name.len() <= 64
            && !name.contains("..")
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-' | '+'));
        if !plausible {
            return Err(UnknownZone(name.to_owned()));
        }
        let tz = TimeZone::get(name).map_err(|_| UnknownZone(name.to_owned()))?;
        Ok(Zone {
            name: name.to_owned(),
            tz,
        })
    }

    /// Coordinated Universal Time.
    pub fn utc() -> Zone {
        Zone {
            name: "UTC".into(),
            tz: TimeZone::UTC,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The calendar day in this zone at `ms` (Unix milliseconds); `None` beyond the years
    /// -9999 to 9999.
    pub fn day_of(&self, ms: i64) -> Option<Date> {
        let at = Timestamp::from_millisecond(ms).ok()?;
        Some(self.tz.to_datetime(at).date())
    }

    /// The time of day this zone's clocks show at `ms`.
    pub fn time_of(&self, ms: i64) -> Option<jiff::civil::Time> {
        let at = Timestamp::from_millisecond(ms).ok()?;
        Some(self.tz.to_datetime(at).time())
    }

    /// The moment the clocks of this zone show `time` on `day`, Unix milliseconds. A time a
    /// clock change skips (02:30 when clocks go forward at 02:00) is taken as the moment after
    /// the gap; a time shown twice (01:30 when clocks go back) as the first of the two, as
    /// RFC 5545 (iCalendar) reads such times.
    pub fn at(&self, day: Date, time: jiff::civil::Time) -> Option<i64> {
        let z = day.to_datetime(time).to_zoned(self.tz.clone()).ok()?;
        Some(z.timestamp().as_millisecond())
    }

    /// When `day` begins in this zone, Unix milliseconds (its first moment, which is not
    /// midnight on the rare days a clock change skips midnight).
    pub fn start_of(&self, day: Date) -> Option<i64> {
        let start: Zoned = day.to_zoned(self.tz.clone()).ok()?.start_of_day().ok()?;
        Some(start.timestamp().as_millisecond())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    #[test]
    fn a_reading_at_half_past_eleven_at_night_is_that_days() {
        let chicago = Zone::parse("America/Chicago").unwrap();
        // 2026-11-03 23:30 in Chicago (UTC-6) is 2026-11-04 05:30 UTC.
        let ms = 1_793_770_200_000;
        assert_eq!(Zone::utc().day_of(ms), Some(date(2026, 11, 4)));
        assert_eq!(chicago.day_of(ms), Some(date(2026, 11, 3)));
    }

    #[test]
    fn a_day_starts_at_local_midnight_also_across_a_clock_change() {
        let ny = Zone::parse("America/New_York").unwrap();
        // Summer time ends on 2026-11-01: the day before starts at 04:00 UTC, the day after
        // at 05:00 UTC.
        let oct31 = ny.start_of(date(2026, 10, 31)).unwrap();
        let nov2 = ny.start_of(date(2026, 11, 2)).unwrap();
        assert_eq!(oct31 % 86_400_000, 4 * 3_600_000);
        assert_eq!(nov2 % 86_400_000, 5 * 3_600_000);
        assert_eq!(ny.day_of(nov2 - 1), Some(date(2026, 11, 1)));
        assert_eq!(ny.day_of(nov2), Some(date(2026, 11, 2)));
    }

    #[test]
    fn names_not_in_the_database_are_refused_with_the_name() {
        for bad in [
            "",
            "Mars/Olympus",
            "../../etc/passwd",
            "Europe/London\n",
            "EST5EDT,M3",
        ] {
            let err = Zone::parse(bad).unwrap_err();
            assert_eq!(err.0, bad);
        }
        assert_eq!(
            Zone::parse("Europe/London").unwrap().name(),
            "Europe/London"
        );
        assert_eq!(Zone::parse("UTC").unwrap().name(), "UTC");
    }
}
