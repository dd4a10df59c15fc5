//! The simulated patients of the trend report, each one metric's series with its ground truth:
//!
//! - **heart-failure decompensation** (body weight, once a day): a gain of 0.3–0.5 kg/day for
//!   10 days after 35 stable days; clinically significant once 2 kg have been gained;
//! - **blood pressure creeping up** (systolic, morning and evening cuff readings): +25–35 mmHg
//!   over 21 days after 35 stable days; significant once it is 20 mmHg up;
//! - **glucose falling to a low** (CGM every 5 minutes): after a day of ordinary days, a fall of
//!   1.5–3 mg/dL/min at night to a nadir of 45–60 mg/dL, 20 minutes there, recovery at
//!   2 mg/dL/min; significant once the true glucose is below 70 mg/dL (ADA level 1);
//! - a **stable fleet** per programme: the same patients without the event, for a number of
//!   days after the same 35-day warm-up, with ordinary day-to-day variation, meals and the
//!   morning blood-pressure surge.
//!
//! The noise models are stated assumptions, not fitted to patient data: weight's day-to-day
//! deviation is an AR(1) (correlation 0.5 from day to day) with a per-patient SD of 0.3–0.5 kg
//! plus 0.1 kg of scale noise, read to 0.1 kg; a cuff reading has a per-patient SD of 8–10 mmHg
//! plus a day effect of 3 mmHg, the morning 5–12 mmHg above the evening; a CGM's sensor error is
//! an AR(1) of SD 4 mg/dL (correlation 0.7 between readings), over a slow wander of SD 12 mg/dL,
//! meals adding 30–80 mg/dL that peak about an hour after them (at most about 2.3 mg/dL/min up
//! and 0.9 down). One reading in ten is missed (cuff), one day in twenty (scale), one CGM
//! reading in a hundred.
//!
//! Pure and deterministic for a seed: no clock (simulated time starts at [`T0_MS`]), no I/O.

use serde::Serialize;

use crate::rng::{Rng, hash};

pub const MIN_MS: i64 = 60_000;
pub const HOUR_MS: i64 = 3_600_000;
pub const DAY_MS: i64 = 86_400_000;

/// Where simulated time starts: 2026-01-05T00:00:00Z, a UTC midnight, so that a simulated day
/// is one of the engine's UTC days.
pub const T0_MS: i64 = 1_767_571_200_000;

/// Days of ordinary data before an event, or before a stable patient's alerts are counted: a
/// full 28-day `drift` baseline and its 7-day window (the hypertension plan), and more than
/// the 14 days `macd` needs.
pub const WARMUP_DAYS: i64 = 35;

/// The length of a month in patient-months: 30.4375 days (365.25 / 12).
pub const MONTH_MS: f64 = 30.4375 * DAY_MS as f64;

/// A monitoring programme: which care plan (`care-plans/<name>.json`) and which metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Programme {
    HeartFailure,
    Hypertension,
    Diabetes,
}

impl Programme {
    pub const ALL: [Programme; 3] = [
        Programme::HeartFailure,
        Programme::Hypertension,
        Programme::Diabetes,
    ];

    /// The programme's name, also the stem of its care plan's file.
    pub fn name(self) -> &'static str {
        match self {
            Programme::HeartFailure => "heart-failure",
            Programme::Hypertension => "hypertension",
            Programme::Diabetes => "diabetes",
        }
    }

    /// The condition its scenario simulates.
    pub fn condition(self) -> &'static str {
        match self {
            Programme::HeartFailure => "decompensation",
            Programme::Hypertension => "bp-creep",
            Programme::Diabetes => "glucose-fall",
        }
    }

    /// The metric its patients send (contract name).
    pub fn metric(self) -> &'static str {
        match self {
            Programme::HeartFailure => "body_weight",
            Programme::Hypertension => "bp_systolic",
            Programme::Diabetes => "glucose",
        }
    }
}

/// One reading: when it was measured (Unix ms) and its value in the metric's canonical unit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Reading {
    pub time_ms: i64,
    pub value: f64,
}

/// What happened to a scenario patient, and when (Unix ms).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Truth {
    /// The change begins.
    pub onset_ms: i64,
    /// The change has become clinically significant.
    pub significant_ms: i64,
    /// The scenario is over: an alert after this did not catch it.
    pub end_ms: i64,
}

/// A simulated patient as the report sees it (no readings).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Subject {
    pub patient: String,
    pub programme: Programme,
    /// `None`: a patient of the stable fleet.
    pub truth: Option<Truth>,
    /// A stable patient's alerts are counted from here (after the warm-up) to `end_ms`.
    pub count_from_ms: i64,
    pub end_ms: i64,
}

/// A simulated patient and their readings, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    pub subject: Subject,
    pub readings: Vec<Reading>,
}

/// How many patients, and how long the stable fleet is watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub seed: u64,
    /// Scenario patients per programme.
    pub cases: usize,
    /// Stable patients per programme.
    pub stable: usize,
    /// Days each stable patient is counted, after the warm-up.
    pub days: u32,
}

/// Every case: each programme's scenario patients, then its stable fleet.
pub fn all(s: &Settings) -> Vec<Case> {
    let mut out = Vec::new();
    for p in Programme::ALL {
        out.extend((0..s.cases).map(|i| scenario(p, s.seed, i)));
        out.extend((0..s.stable).map(|i| stable(p, s.seed, i, s.days)));
    }
    out
}

/// A scenario patient of programme `p`: the event after [`WARMUP_DAYS`] ordinary days
/// (glucose: after one day).
pub fn scenario(p: Programme, seed: u64, i: usize) -> Case {
    let patient = format!("{}-{i}", p.condition());
    let mut rng = Rng::derive(seed, hash(&patient));
    let warmup_end = T0_MS + WARMUP_DAYS * DAY_MS;
    let (readings, truth) = match p {
        Programme::HeartFailure => {
            let gain = rng.range(0.3, 0.5);
            let onset_ms = warmup_end;
            let truth = Truth {
                onset_ms,
                significant_ms: onset_ms + (2.0 / gain * DAY_MS as f64) as i64,
                end_ms: onset_ms + 10 * DAY_MS,
            };
            (
                weights(&mut rng, truth.end_ms, Some((onset_ms, gain))),
                truth,
            )
        }
        Programme::Hypertension => {
            let rise = rng.range(25.0, 35.0);
            let onset_ms = warmup_end;
            let span = 21 * DAY_MS;
            let truth = Truth {
                onset_ms,
                significant_ms: onset_ms + (20.0 / rise * span as f64) as i64,
                end_ms: onset_ms + span,
            };
            (
                pressures(&mut rng, truth.end_ms, Some((onset_ms, rise))),
                truth,
            )
        }
        Programme::Diabetes => {
            let fall = Fall {
                onset_ms: T0_MS + DAY_MS + (rng.range(1.0, 4.0) * HOUR_MS as f64) as i64,
                rate: rng.range(1.5, 3.0),
                nadir: rng.range(45.0, 60.0),
            };
            let (readings, truth) = glucose(&mut rng, i64::MAX, Some(fall));
            (
                readings,
                truth.unwrap_or(Truth {
                    onset_ms: fall.onset_ms,
                    significant_ms: fall.onset_ms,
                    end_ms: fall.onset_ms,
                }),
            )
        }
    };
    Case {
        subject: Subject {
            patient,
            programme: p,
            truth: Some(truth),
            count_from_ms: T0_MS,
            end_ms: truth.end_ms,
        },
        readings,
    }
}

/// A stable patient of programme `p`, counted for `days` days after the warm-up.
pub fn stable(p: Programme, seed: u64, i: usize, days: u32) -> Case {
    let patient = format!("stable-{}-{i}", p.name());
    let mut rng = Rng::derive(seed, hash(&patient));
    let count_from_ms = T0_MS + WARMUP_DAYS * DAY_MS;
    let end_ms = count_from_ms + i64::from(days) * DAY_MS;
    let readings = match p {
        Programme::HeartFailure => weights(&mut rng, end_ms, None),
        Programme::Hypertension => pressures(&mut rng, end_ms, None),
        Programme::Diabetes => glucose(&mut rng, end_ms, None).0,
    };
    Case {
        subject: Subject {
            patient,
            programme: p,
            truth: None,
            count_from_ms,
            end_ms,
        },
        readings,
    }
}

fn round_to(x: f64, step: f64) -> f64 {
    ((x / step).round() * step * 1000.0).round() / 1000.0
}

/// Morning weights from [`T0_MS`] to `end_ms`; `gain`: (onset, kg per day) of a decompensation.
fn weights(rng: &mut Rng, end_ms: i64, gain: Option<(i64, f64)>) -> Vec<Reading> {
    let w0 = (82.0 + 14.0 * rng.normal()).clamp(50.0, 140.0);
    let sd = rng.range(0.3, 0.5);
    let phi: f64 = 0.5;
    let innovation = sd * (1.0 - phi * phi).sqrt();
    let mut dev = sd * rng.normal();
    let mut out = Vec::new();
    for day in 0.. {
        dev = phi * dev + innovation * rng.normal();
        let t =
            T0_MS + day * DAY_MS + 7 * HOUR_MS + (rng.range(-30.0, 30.0) * MIN_MS as f64) as i64;
        let scale = 0.1 * rng.normal();
        let missed = rng.chance(0.05);
        if t > end_ms {
            break;
        }
        if missed {
            continue;
        }
        let g = match gain {
            Some((onset, per_day)) if t > onset => per_day * (t - onset) as f64 / DAY_MS as f64,
            _ => 0.0,
        };
        out.push(Reading {
            time_ms: t,
            value: round_to(w0 + dev + g + scale, 0.1),
        });
    }
    out
}

/// Morning and evening systolic pressures from [`T0_MS`] to `end_ms`; `rise`: (onset, mmHg
/// over 21 days) of a creep.
fn pressures(rng: &mut Rng, end_ms: i64, rise: Option<(i64, f64)>) -> Vec<Reading> {
    let s0 = (132.0 + 8.0 * rng.normal()).clamp(115.0, 150.0);
    let surge = rng.range(5.0, 12.0);
    let sd = rng.range(8.0, 10.0);
    let mut out = Vec::new();
    for day in 0.. {
        let day_effect = 3.0 * rng.normal();
        let mut past_end = false;
        for (hour, shift) in [(7, surge / 2.0), (21, -surge / 2.0)] {
            let t = T0_MS
                + day * DAY_MS
                + hour * HOUR_MS
                + (rng.range(-45.0, 45.0) * MIN_MS as f64) as i64;
            let noise = sd * rng.normal();
            let taken = rng.chance(0.9);
            if t > end_ms {
                past_end = true;
                continue;
            }
            if !taken {
                continue;
            }
            let creep = match rise {
                Some((onset, mmhg)) if t > onset => {
                    mmhg * ((t - onset) as f64 / (21 * DAY_MS) as f64).min(1.0)
                }
                _ => 0.0,
            };
            out.push(Reading {
                time_ms: t,
                value: round_to(
                    (s0 + shift + day_effect + noise + creep).clamp(60.0, 280.0),
                    1.0,
                ),
            });
        }
        if past_end {
            break;
        }
    }
    out
}

/// A fall to a low: from `onset_ms`, `rate` mg/dL/min down to `nadir`.
#[derive(Debug, Clone, Copy)]
struct Fall {
    onset_ms: i64,
    rate: f64,
    nadir: f64,
}

const CGM_STEP_MS: i64 = 5 * MIN_MS;
/// How long a low lasts at its nadir before it is treated.
const NADIR_HOLD_MS: i64 = 20 * MIN_MS;
/// How fast glucose comes back once treated (mg/dL/min).
const RECOVERY_RATE: f64 = 2.0;

/// A meal's rise above the usual level, `dt_h` hours after it: a smooth bump of height `amp`
/// peaking `tau_h` hours after the meal, `(x e^(1−x))²` with `x = dt/tau`.
fn meal_bump(dt_h: f64, amp: f64, tau_h: f64) -> f64 {
    if dt_h <= 0.0 || dt_h > 6.0 * tau_h {
        return 0.0;
    }
    let x = dt_h / tau_h;
    amp * (x * (1.0 - x).exp()).powi(2)
}

/// CGM readings every 5 minutes from [`T0_MS`] until `end_ms` (with a fall: until the
/// recovery is over), and the fall's ground truth.
fn glucose(rng: &mut Rng, end_ms: i64, fall: Option<Fall>) -> (Vec<Reading>, Option<Truth>) {
    let base = rng.range(110.0, 150.0);
    let offset = i64::from(rng.between(0, 299)) * 1000;
    let (phi_w, sd_w) = (0.99_f64, 12.0);
    let (phi_s, sd_s) = (0.7_f64, 4.0);
    let mut wander = sd_w * rng.normal();
    let mut sensor = sd_s * rng.normal();
    // Meals of the day being simulated: (time, amplitude, time to peak in hours).
    let mut meals: Vec<(i64, f64, f64)> = Vec::new();
    let mut meals_day = -1;
    let mut out = Vec::new();
    let mut truth = fall.map(|f| Truth {
        onset_ms: f.onset_ms,
        significant_ms: i64::MAX,
        end_ms: i64::MAX,
    });
    // The fall's depth below the stable course, set at its onset; and when recovery began.
    let mut depth: Option<f64> = None;
    let mut recovering_from: Option<(i64, f64)> = None;
    for k in 0.. {
        let t = T0_MS + offset + k * CGM_STEP_MS;
        let day = (t - T0_MS) / DAY_MS;
        if day != meals_day {
            meals_day = day;
            meals.retain(|(m, _, tau)| t - m < (6.0 * tau * HOUR_MS as f64) as i64);
            for hour in [7.5, 12.5, 18.5] {
                let at = T0_MS
                    + day * DAY_MS
                    + ((hour + rng.range(-0.75, 0.75)) * HOUR_MS as f64) as i64;
                meals.push((at, rng.range(30.0, 80.0), rng.range(0.9, 1.2)));
            }
        }
        wander = phi_w * wander + sd_w * (1.0 - phi_w * phi_w).sqrt() * rng.normal();
        sensor = phi_s * sensor + sd_s * (1.0 - phi_s * phi_s).sqrt() * rng.normal();
        let dropped = rng.chance(0.01);
        let stable = base
            + wander
            + meals
                .iter()
                .map(|(m, amp, tau)| meal_bump((t - m) as f64 / HOUR_MS as f64, *amp, *tau))
                .sum::<f64>();
        let mut value = stable;
        if let (Some(f), Some(tr)) = (fall, truth.as_mut())
            && t >= f.onset_ms
        {
            let d = *depth.get_or_insert((stable - f.nadir).max(0.0));
            let since_min = (t - f.onset_ms) as f64 / MIN_MS as f64;
            let fall_min = d / f.rate;
            let low = if since_min <= fall_min + NADIR_HOLD_MS as f64 / MIN_MS as f64 {
                (f.rate * since_min).min(d)
            } else {
                let (from, _) = *recovering_from.get_or_insert((t, d));
                (d - RECOVERY_RATE * (t - from) as f64 / MIN_MS as f64).max(0.0)
            };
            value = stable - low;
            if value < 70.0 && tr.significant_ms == i64::MAX {
                tr.significant_ms = t;
            }
            if recovering_from.is_some() && low <= 0.0 {
                tr.end_ms = t;
                break;
            }
        }
        if t > end_ms {
            break;
        }
        if !dropped {
            out.push(Reading {
                time_ms: t,
                value: round_to((value + sensor).clamp(40.0, 400.0), 1.0),
            });
        }
    }
    (out, truth)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_patients() {
        let s = Settings {
            seed: 3,
            cases: 2,
            stable: 1,
            days: 3,
        };
        assert_eq!(all(&s), all(&s));
        let other = all(&Settings { seed: 4, ..s });
        assert_ne!(all(&s)[0].readings, other[0].readings);
    }

    #[test]
    fn each_scenario_has_its_ground_truth_in_order() {
        for p in Programme::ALL {
            for i in 0..20 {
                let c = scenario(p, 1, i);
                let t = c.subject.truth.unwrap();
                assert!(t.onset_ms < t.significant_ms, "{p:?} {i} {t:?}");
                assert!(t.significant_ms < t.end_ms, "{p:?} {i} {t:?}");
                assert!(c.readings.windows(2).all(|w| w[0].time_ms < w[1].time_ms));
                assert!(c.readings.last().unwrap().time_ms <= t.end_ms);
            }
        }
    }

    #[test]
    fn a_decompensation_gains_what_it_says() {
        let c = scenario(Programme::HeartFailure, 5, 0);
        let t = c.subject.truth.unwrap();
        let mean = |from: i64, to: i64| {
            let v: Vec<f64> = c
                .readings
                .iter()
                .filter(|r| (from..to).contains(&r.time_ms))
                .map(|r| r.value)
                .collect();
            v.iter().sum::<f64>() / v.len() as f64
        };
        let before = mean(t.onset_ms - 14 * DAY_MS, t.onset_ms);
        let last = mean(t.end_ms - 3 * DAY_MS, t.end_ms);
        // 10 days at 0.3–0.5 kg/day: the last three days are 2.4–4.5 kg up, give or take noise.
        assert!((1.5..6.0).contains(&(last - before)), "{before} → {last}");
    }

    #[test]
    fn stable_glucose_has_meals_but_no_low() {
        let c = stable(Programme::Diabetes, 2, 0, 7);
        let v: Vec<f64> = c.readings.iter().map(|r| r.value).collect();
        let max = v.iter().copied().fold(f64::MIN, f64::max);
        let min = v.iter().copied().fold(f64::MAX, f64::min);
        assert!(max > 150.0 && min > 60.0, "{min} … {max}");
        // About 288 a day, a few dropped.
        let days = (WARMUP_DAYS + 7) as f64;
        assert!((v.len() as f64 / days - 285.0).abs() < 5.0, "{}", v.len());
    }
}
