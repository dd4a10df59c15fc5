//! `forecast`: a short glucose forecast by Nightscout's second-order autoregressive model (AR2,
//! `lib/plugins/ar2.js` in nightscout/cgm-remote-monitor, since 2015).
//!
//! Nightscout's model works on 5-minute steps in log space around a centre of 140 mg/dL:
//! `y = ln(glucose / 140)`, and each step ahead is `y[n+1] = −0.723 · y[n−1] + 1.716 · y[n]`,
//! from the current value and the value 5 minutes before it; a predicted value is
//! `140 · e^y`, rounded and held within 36–400 mg/dL. No forecast is made from a value below
//! 36 mg/dL. Nightscout fills the value 5 minutes back by extrapolating across a gap of up to
//! about 20 minutes; here it is interpolated between the readings either side of that moment,
//! and refused when they are more than [`MAX_GAP_MS`] apart (a missed reading of a 5-minute
//! CGM): a forecast drawn through a gap is a guess about the gap.
//!
//! State is the few readings of the last 5 minutes and the one before them; nothing else.

use std::collections::VecDeque;

/// Nightscout's centre (`BG_REF`), lower and upper bounds (`BG_MIN`, `BG_MAX`), mg/dL.
pub const CENTRE: f64 = 140.0;
pub const LOWEST: f64 = 36.0;
pub const HIGHEST: f64 = 400.0;
/// Nightscout's coefficients (`AR`): on the value one step back, and on the current value.
pub const AR: [f64; 2] = [-0.723, 1.716];
/// The model's step.
pub const STEP_MS: i64 = 300_000;
/// The readings either side of "5 minutes ago" may be at most this far apart (one and a half
/// steps: a 5-minute CGM that missed a reading is refused, its usual jitter is not).
pub const MAX_GAP_MS: i64 = 450_000;
/// How far back a rebuild replays glucose for a forecast (the step and the widest gap).
pub const LOOKBACK_MS: i64 = STEP_MS + MAX_GAP_MS;
/// Most readings kept (a CGM reports at most once a minute; this bounds a faster source).
const MAX_KEPT: usize = 64;

/// A forecast rule's parameters, as checked by the care plan.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    pub horizon_min: u32,
    pub low: Option<f64>,
    pub high: Option<f64>,
}

/// The glucose readings a forecast is made from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Recent {
    readings: VecDeque<(i64, f64)>,
}

impl Recent {
    /// Adds a reading (in time order, as the engine passes them).
    pub fn add(&mut self, time_ms: i64, value: f64) {
        self.readings.push_back((time_ms, value));
        // Keep the newest reading at or before 5 minutes ago and everything after it.
        while self.readings.len() > 2 && self.readings[1].0 <= time_ms - STEP_MS {
            self.readings.pop_front();
        }
        while self.readings.len() > MAX_KEPT {
            self.readings.pop_front();
        }
    }

    /// The newest reading.
    pub fn latest(&self) -> Option<(i64, f64)> {
        self.readings.back().copied()
    }

    /// The value 5 minutes before the newest reading, interpolated between the readings on
    /// either side of that moment; `None` when there is none before it or they are too far
    /// apart.
    pub fn five_minutes_before(&self) -> Option<f64> {
        let (t, _) = self.latest()?;
        let at = t - STEP_MS;
        let i = self.readings.iter().rposition(|(ti, _)| *ti <= at)?;
        let (ta, va) = self.readings[i];
        if ta == at {
            return Some(va);
        }
        let (tb, vb) = *self.readings.get(i + 1)?;
        if tb - ta > MAX_GAP_MS {
            return None;
        }
        Some(va + (vb - va) * (at - ta) as f64 / (tb - ta) as f64)
    }
}

/// Nightscout's AR2 forecast: the predicted values 5, 10, … `5 · steps` minutes ahead of `now`,
/// given the value 5 minutes before it.
pub fn ar2(before: f64, now: f64, steps: u32) -> Vec<f64> {
    let (mut prev, mut curr) = ((before / CENTRE).ln(), (now / CENTRE).ln());
    (0..steps)
        .map(|_| {
            (prev, curr) = (curr, AR[0] * prev + AR[1] * curr);
            (CENTRE * curr.exp()).round().clamp(LOWEST, HIGHEST)
        })
        .collect()
}

/// Which limit a forecast crosses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Low,
    High,
}

/// The first predicted value past a limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Crossing {
    pub minutes: u32,
    pub value: f64,
    pub side: Side,
}

/// A forecast from the newest reading.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Forecast {
    pub now: f64,
    /// The value 5 minutes before (interpolated).
    pub before: f64,
    pub crossing: Option<Crossing>,
}

/// What a judgement found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    /// No forecast can be made, and why.
    Unavailable(&'static str),
    Judged(Forecast),
}

/// Forecasts from the readings and looks for the first step past `low` or `high`.
pub fn judge(recent: &Recent, p: &Params) -> Outcome {
    let Some((_, now)) = recent.latest() else {
        return Outcome::Unavailable("no glucose reading");
    };
    let Some(before) = recent.five_minutes_before() else {
        return Outcome::Unavailable("no glucose reading about 5 minutes before the latest");
    };
    if now < LOWEST || before < LOWEST {
        return Outcome::Unavailable("glucose below 36 mg/dL, beyond the forecast's range");
    }
    let crossing = ar2(before, now, p.horizon_min / 5)
        .into_iter()
        .zip(1..)
        .find_map(|(value, step)| {
            let side = if p.low.is_some_and(|l| value < l) {
                Side::Low
            } else if p.high.is_some_and(|h| value > h) {
                Side::High
            } else {
                return None;
            };
            Some(Crossing {
                minutes: 5 * step,
                value,
                side,
            })
        });
    Outcome::Judged(Forecast {
        now,
        before,
        crossing,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    fn params() -> Params {
        Params {
            horizon_min: 30,
            low: Some(70.0),
            high: Some(250.0),
        }
    }

    fn recent(readings: &[(i64, f64)]) -> Recent {
        let mut r = Recent::default();
        for (t, v) in readings {
            r.add(*t, *v);
        }
        r
    }

    /// Nightscout's recursion written out step by step, independently of [`ar2`].
    fn by_hand(before: f64, now: f64) -> [f64; 6] {
        let y0 = (before / 140.0).ln();
        let y1 = (now / 140.0).ln();
        let y2 = -0.723 * y0 + 1.716 * y1;
        let y3 = -0.723 * y1 + 1.716 * y2;
        let y4 = -0.723 * y2 + 1.716 * y3;
        let y5 = -0.723 * y3 + 1.716 * y4;
        let y6 = -0.723 * y4 + 1.716 * y5;
        let y7 = -0.723 * y5 + 1.716 * y6;
        [y2, y3, y4, y5, y6, y7].map(|y| (140.0 * y.exp()).round())
    }

    #[test]
    fn ar2_matches_nightscouts_recursion() {
        // 110 then 92 five minutes later:
        // y0 = ln(110/140) = −0.241162, y1 = ln(92/140) = −0.419854;
        // +5: −0.723·y0 + 1.716·y1 = −0.546109 → 140·e^y = 81.09 → 81;
        // +10: −0.633569 → 74.30 → 74; +15: −0.692367 → 70.05 → 70;
        // +20: −0.730032 → 67.47 → 67; +25: −0.752153 → 65.99 → 66; +30: −0.762882 → 65.
        assert_eq!(ar2(110.0, 92.0, 6), [81.0, 74.0, 70.0, 67.0, 66.0, 65.0]);
        assert_eq!(ar2(110.0, 92.0, 6), by_hand(110.0, 92.0));
        // Rising: 190 then 212 → 229, 241, 249, 254, 257, 258.
        assert_eq!(
            ar2(190.0, 212.0, 6),
            [229.0, 241.0, 249.0, 254.0, 257.0, 258.0]
        );
        assert_eq!(ar2(190.0, 212.0, 6), by_hand(190.0, 212.0));
        // Held within Nightscout's 36–400.
        assert_eq!(ar2(300.0, 390.0, 2), [400.0, 400.0]);
    }

    #[test]
    fn warns_of_the_first_step_past_a_limit() {
        let o = judge(&recent(&[(0, 110.0), (5 * MIN, 92.0)]), &params());
        // 70 at 15 minutes is not below 70; 67 at 20 minutes is.
        let Outcome::Judged(f) = o else {
            panic!("{o:?}")
        };
        assert_eq!(
            f.crossing,
            Some(Crossing {
                minutes: 20,
                value: 67.0,
                side: Side::Low
            })
        );
        let o = judge(&recent(&[(0, 190.0), (5 * MIN, 212.0)]), &params());
        let Outcome::Judged(f) = o else {
            panic!("{o:?}")
        };
        assert_eq!(
            f.crossing,
            Some(Crossing {
                minutes: 20,
                value: 254.0,
                side: Side::High
            })
        );
        // A shorter horizon does not reach it.
        let short = Params {
            horizon_min: 15,
            ..params()
        };
        let o = judge(&recent(&[(0, 110.0), (5 * MIN, 92.0)]), &short);
        assert!(matches!(
            o,
            Outcome::Judged(Forecast { crossing: None, .. })
        ));
    }

    #[test]
    fn the_value_five_minutes_back_is_interpolated_between_its_neighbours() {
        // Readings at 0, 3, 6 and 10 min: 5 min back from 10 is between 3 (114) and 6 (108):
        // 114 + (108 − 114) · 2/3 = 110.
        let r = recent(&[
            (0, 120.0),
            (3 * MIN, 114.0),
            (6 * MIN, 108.0),
            (10 * MIN, 100.0),
        ]);
        assert!((r.five_minutes_before().unwrap() - 110.0).abs() < 1e-9);
        // A reading exactly 5 minutes back is taken as it is.
        let r = recent(&[(0, 120.0), (5 * MIN, 100.0)]);
        assert_eq!(r.five_minutes_before(), Some(120.0));
    }

    #[test]
    fn no_forecast_over_a_gap_or_from_too_little() {
        // A 5-minute CGM that missed a reading: 10 minutes between the neighbours.
        let o = judge(&recent(&[(0, 110.0), (10 * MIN, 92.0)]), &params());
        assert!(matches!(o, Outcome::Unavailable(_)), "{o:?}");
        // Only readings within the last 5 minutes.
        let o = judge(&recent(&[(0, 110.0), (2 * MIN, 105.0)]), &params());
        assert!(matches!(o, Outcome::Unavailable(_)), "{o:?}");
        // Below Nightscout's 36 mg/dL.
        let o = judge(&recent(&[(0, 40.0), (5 * MIN, 30.0)]), &params());
        assert!(matches!(o, Outcome::Unavailable(_)), "{o:?}");
    }

    #[test]
    fn only_a_few_readings_are_kept() {
        let mut r = Recent::default();
        for m in 0..600 {
            r.add(m * MIN, 100.0);
        }
        // The newest at or before 5 minutes back (594) and the five after it.
        assert_eq!(r.readings.len(), 6);
        assert_eq!(r.readings.front().unwrap().0, 594 * MIN);
    }
}
