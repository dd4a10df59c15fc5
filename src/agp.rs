//! The Ambulatory Glucose Profile (AGP): the standard one-page summary of a patient's glucose
//! over a period, computed from stored `glucose` readings (canonical unit mg/dL, see
//! [`crate::domain::Metric::Glucose`]).
//!
//! Pure: readings, the period, the clinic's time zone and the CGM's reporting interval in; the
//! figures out. No I/O, no clock: `GET /api/v1/patients/{id}/agp` (`web/summary.rs`) reads
//! the readings and calls [`compute`]. Every clinical threshold below names its source and
//! year; docs/agp.md says the same for users.
//!
//! Choices, documented in docs/agp.md:
//! - the standard deviation is the sample SD (n − 1);
//! - percentiles interpolate linearly between closest ranks (Hyndman and Fan's type 7, the
//!   default of R and NumPy);
//! - the time-of-day profile uses 24 hourly bins on the clinic's clocks, unsmoothed (the
//!   printed AGP smooths 15-minute bins; hourly bins need no smoothing parameter and show the
//!   same shape at the resolution a clinician reads it);
//! - time in ranges is the share of readings, as the consensus defines it for CGM.

use crate::domain::zone::Zone;

/// Below this, "very low" (level 2 hypoglycaemia), mg/dL. Battelino T et al., "Clinical
/// Targets for Continuous Glucose Monitoring Data Interpretation: Recommendations From the
/// International Consensus on Time in Range", Diabetes Care 2019;42(8):1593–1603.
pub const VERY_LOW_BELOW: f64 = 54.0;
/// Below this (and from [`VERY_LOW_BELOW`]), "low" (level 1), mg/dL. Battelino et al. 2019.
pub const LOW_BELOW: f64 = 70.0;
/// Up to and including this (from [`LOW_BELOW`]), "in range" 70–180 mg/dL. Battelino et al.
/// 2019.
pub const IN_RANGE_UP_TO: f64 = 180.0;
/// Up to and including this (above [`IN_RANGE_UP_TO`]), "high" 181–250 mg/dL; above it "very
/// high". Battelino et al. 2019.
pub const HIGH_UP_TO: f64 = 250.0;

/// GMI (%) = [`GMI_INTERCEPT`] + [`GMI_SLOPE`] × mean glucose (mg/dL). Bergenstal RM et al.,
/// "Glucose Management Indicator (GMI): A New Term for Estimating A1C From Continuous Glucose
/// Monitoring", Diabetes Care 2018;41(11):2275–2280.
pub const GMI_INTERCEPT: f64 = 3.31;
/// See [`GMI_INTERCEPT`]. Bergenstal et al. 2018.
pub const GMI_SLOPE: f64 = 0.02392;

/// Glycaemic variability is "stable" at or below this coefficient of variation, %. Battelino
/// et al. 2019 (after Danne T et al., Diabetes Care 2017;40(12):1631–1640).
pub const CV_STABLE_UP_TO_PCT: f64 = 36.0;
/// Days of CGM data the consensus asks for a reliable report. Battelino et al. 2019.
pub const RECOMMENDED_DAYS: f64 = 14.0;
/// Share of the possible CGM readings the consensus asks for, %. Battelino et al. 2019.
pub const RECOMMENDED_ACTIVE_PCT: f64 = 70.0;

/// The percentiles of the time-of-day profile: 5th, 25th, 50th, 75th, 95th (the AGP's bands).
pub const PERCENTILES: [f64; 5] = [5.0, 25.0, 50.0, 75.0, 95.0];

/// What [`compute`] needs besides the readings.
#[derive(Debug, Clone)]
pub struct Period<'a> {
    /// Start of the period, Unix ms (inclusive).
    pub from_ms: i64,
    /// End of the period, Unix ms (exclusive).
    pub to_ms: i64,
    /// The clinic's time zone: days and hours of the day are counted on its clocks.
    pub zone: &'a Zone,
    /// The reporting interval of the patient's CGM, seconds, and how many of the readings came
    /// from a CGM; `None` when no CGM sent any (finger-stick meters only): then no "% of
    /// expected readings" is given.
    pub cgm: Option<(u64, usize)>,
}

/// Counts and shares of readings in the five consensus ranges.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Ranges {
    pub very_low: usize,
    pub low: usize,
    pub in_range: usize,
    pub high: usize,
    pub very_high: usize,
}

impl Ranges {
    /// Shares of all readings, %, in the order very low, low, in range, high, very high.
    pub fn percents(&self) -> [f64; 5] {
        let n = (self.very_low + self.low + self.in_range + self.high + self.very_high) as f64;
        let pct = |c: usize| if n > 0.0 { c as f64 * 100.0 / n } else { 0.0 };
        [
            pct(self.very_low),
            pct(self.low),
            pct(self.in_range),
            pct(self.high),
            pct(self.very_high),
        ]
    }
}

/// The percentiles of one hour of the day.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct HourBand {
    /// Hour of the day on the clinic's clocks, 0–23.
    pub hour: u8,
    /// Readings in the bin.
    pub n: usize,
    /// The 5th, 25th, 50th, 75th and 95th percentiles, mg/dL.
    pub p: [f64; 5],
}

/// The figures of an AGP.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Agp {
    pub readings: usize,
    /// Days (on the clinic's clocks) with at least one reading.
    pub days_with_data: usize,
    /// The period's length in days.
    pub period_days: f64,
    /// Readings a CGM sent as a share of what it would send over the whole period, %, at most
    /// 100 ("% time CGM is active"); `None` without a CGM.
    pub cgm_active_pct: Option<f64>,
    pub mean_mg_dl: f64,
    /// Sample standard deviation, mg/dL (0 for one reading).
    pub sd_mg_dl: f64,
    /// Coefficient of variation, %.
    pub cv_pct: f64,
    /// Glucose Management Indicator, %.
    pub gmi_pct: f64,
    pub ranges: Ranges,
    /// One band per hour that has readings, by hour.
    pub hours: Vec<HourBand>,
}

/// The AGP of `readings` (time ms, glucose mg/dL) within `period`; readings outside it are
/// ignored. `None` when none is within it.
pub fn compute(readings: &[(i64, f64)], period: &Period<'_>) -> Option<Agp> {
    let inside: Vec<(i64, f64)> = readings
        .iter()
        .copied()
        .filter(|(t, v)| *t >= period.from_ms && *t < period.to_ms && v.is_finite())
        .collect();
    let n = inside.len();
    if n == 0 {
        return None;
    }
    let nf = n as f64;
    let mean = inside.iter().map(|(_, v)| v).sum::<f64>() / nf;
    let sd = if n > 1 {
        (inside.iter().map(|(_, v)| (v - mean).powi(2)).sum::<f64>() / (nf - 1.0)).sqrt()
    } else {
        0.0
    };
    let mut ranges = Ranges {
        very_low: 0,
        low: 0,
        in_range: 0,
        high: 0,
        very_high: 0,
    };
    for (_, v) in &inside {
        match *v {
            v if v < VERY_LOW_BELOW => ranges.very_low += 1,
            v if v < LOW_BELOW => ranges.low += 1,
            v if v <= IN_RANGE_UP_TO => ranges.in_range += 1,
            v if v <= HIGH_UP_TO => ranges.high += 1,
            _ => ranges.very_high += 1,
        }
    }
    let mut days = std::collections::BTreeSet::new();
    let mut bins: Vec<Vec<f64>> = vec![Vec::new(); 24];
    for (t, v) in &inside {
        if let Some(d) = period.zone.day_of(*t) {
            days.insert(d);
        }
        if let Some(time) = period.zone.time_of(*t) {
            let h = usize::try_from(time.hour()).unwrap_or(0).min(23);
            bins[h].push(*v);
        }
    }
    let hours = bins
        .into_iter()
        .enumerate()
        .filter(|(_, b)| !b.is_empty())
        .map(|(h, mut b)| {
            b.sort_by(f64::total_cmp);
            HourBand {
                hour: u8::try_from(h).unwrap_or(0),
                n: b.len(),
                p: PERCENTILES.map(|p| percentile(&b, p)),
            }
        })
        .collect();
    let span_ms = period.to_ms.saturating_sub(period.from_ms).max(0);
    let cgm_active_pct = period.cgm.and_then(|(interval_s, from_cgm)| {
        let interval_ms = i64::try_from(interval_s).ok()?.checked_mul(1000)?;
        if interval_ms <= 0 || span_ms <= 0 {
            return None;
        }
        let expected = span_ms as f64 / interval_ms as f64;
        Some((from_cgm as f64 * 100.0 / expected).min(100.0))
    });
    Some(Agp {
        readings: n,
        days_with_data: days.len(),
        period_days: span_ms as f64 / 86_400_000.0,
        cgm_active_pct,
        mean_mg_dl: mean,
        sd_mg_dl: sd,
        cv_pct: if mean > 0.0 { sd * 100.0 / mean } else { 0.0 },
        gmi_pct: GMI_INTERCEPT + GMI_SLOPE * mean,
        ranges,
        hours,
    })
}

/// The `p`th percentile (0–100) of `sorted` (ascending, not empty), interpolating linearly
/// between closest ranks (Hyndman and Fan's type 7).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let Some(last) = sorted.len().checked_sub(1) else {
        return f64::NAN;
    };
    let h = last as f64 * (p / 100.0).clamp(0.0, 1.0);
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(last);
    sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;
    /// 2026-11-02T00:00:00Z.
    const DAY0: i64 = 1_793_577_600_000;

    /// Ten readings, hand-worked (checked with Python's `statistics`, not with this code):
    /// sum 1562, mean 156.2; squared deviations sum 72077.6, sample variance 72077.6 / 9 =
    /// 8008.622…, SD 89.4909…; CV 89.4909 / 156.2 = 57.2925 %; GMI 3.31 + 0.02392 × 156.2 =
    /// 7.046304 %. Ranges: 50 very low; 60 low; 70, 100, 120, 180 in range (180 is in);
    /// 181, 250 high (250 is high); 251, 300 very high → 10 / 10 / 40 / 20 / 20 %.
    /// 00:00–00:59 UTC holds 50, 60, 70, 100, 180: type-7 percentiles at h = 4p:
    /// p5 h=0.2 → 50 + 0.2 × 10 = 52; p25 h=1 → 60; p50 → 70; p75 → 100; p95 h=3.8 → 100 +
    /// 0.8 × 80 = 164. 13:00–13:59 holds 120, 181, 250, 251, 300: p5 → 120 + 0.2 × 61 =
    /// 132.2; 181; 250; 251; p95 → 251 + 0.8 × 49 = 290.2.
    fn series() -> Vec<(i64, f64)> {
        let early = [50.0, 60.0, 70.0, 100.0, 180.0];
        let late = [181.0, 250.0, 251.0, 300.0, 120.0];
        let mut v: Vec<(i64, f64)> = early
            .iter()
            .enumerate()
            .map(|(i, g)| (DAY0 + i as i64 * 600_000, *g))
            .collect();
        // The afternoon ones on the next day: two days with data.
        v.extend(
            late.iter()
                .enumerate()
                .map(|(i, g)| (DAY0 + 24 * HOUR + 13 * HOUR + i as i64 * 600_000, *g)),
        );
        v
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-3
    }

    #[test]
    fn figures_match_the_hand_worked_series() {
        let utc = Zone::utc();
        let period = Period {
            from_ms: DAY0,
            to_ms: DAY0 + 14 * 24 * HOUR,
            zone: &utc,
            cgm: Some((300, 10)),
        };
        let a = compute(&series(), &period).unwrap();
        assert_eq!(a.readings, 10);
        assert_eq!(a.days_with_data, 2);
        assert!(close(a.period_days, 14.0));
        assert!(close(a.mean_mg_dl, 156.2), "{}", a.mean_mg_dl);
        assert!(close(a.sd_mg_dl, 89.4909), "{}", a.sd_mg_dl);
        assert!(close(a.cv_pct, 57.2925), "{}", a.cv_pct);
        assert!(close(a.gmi_pct, 7.046304), "{}", a.gmi_pct);
        assert_eq!(
            a.ranges,
            Ranges {
                very_low: 1,
                low: 1,
                in_range: 4,
                high: 2,
                very_high: 2
            }
        );
        assert_eq!(a.ranges.percents(), [10.0, 10.0, 40.0, 20.0, 20.0]);
        // 14 days of a 5-minute CGM: 4032 possible; 10 sent → 0.248 %.
        assert!(close(a.cgm_active_pct.unwrap(), 10.0 * 100.0 / 4032.0));
        assert_eq!(a.hours.len(), 2);
        assert_eq!(a.hours[0].hour, 0);
        assert_eq!(a.hours[0].n, 5);
        for (got, want) in a.hours[0].p.iter().zip([52.0, 60.0, 70.0, 100.0, 164.0]) {
            assert!(close(*got, want), "{:?}", a.hours[0]);
        }
        assert_eq!(a.hours[1].hour, 13);
        for (got, want) in a.hours[1].p.iter().zip([132.2, 181.0, 250.0, 251.0, 290.2]) {
            assert!(close(*got, want), "{:?}", a.hours[1]);
        }
    }

    #[test]
    fn hours_and_days_are_the_clinics() {
        // America/Chicago is UTC−6 in November: 00:xx UTC is 18:xx the day before, 13:xx UTC
        // is 07:xx.
        let chicago = Zone::parse("America/Chicago").unwrap();
        let period = Period {
            from_ms: DAY0 - 24 * HOUR,
            to_ms: DAY0 + 14 * 24 * HOUR,
            zone: &chicago,
            cgm: None,
        };
        let a = compute(&series(), &period).unwrap();
        assert_eq!(a.hours.iter().map(|h| h.hour).collect::<Vec<_>>(), [7, 18]);
        assert_eq!(a.days_with_data, 2);
        assert_eq!(a.cgm_active_pct, None);
    }

    #[test]
    fn readings_outside_the_period_are_left_out_and_none_gives_none() {
        let utc = Zone::utc();
        let period = Period {
            from_ms: DAY0 + 24 * HOUR,
            to_ms: DAY0 + 48 * HOUR,
            zone: &utc,
            cgm: Some((300, 5)),
        };
        let a = compute(&series(), &period).unwrap();
        assert_eq!(a.readings, 5);
        let empty = Period {
            from_ms: 0,
            to_ms: 1,
            ..period
        };
        assert_eq!(compute(&series(), &empty), None);
        let one = compute(&[(DAY0 + 30 * HOUR, 100.0)], &period).unwrap();
        assert_eq!(one.sd_mg_dl, 0.0);
        assert_eq!(one.hours[0].p, [100.0; 5]);
    }

    #[test]
    fn a_full_cgm_is_active_a_hundred_percent_at_most() {
        let utc = Zone::utc();
        let period = Period {
            from_ms: DAY0,
            to_ms: DAY0 + 24 * HOUR,
            zone: &utc,
            cgm: Some((300, 300)),
        };
        let a = compute(&[(DAY0, 100.0)], &period).unwrap();
        assert_eq!(a.cgm_active_pct, Some(100.0));
    }
}
