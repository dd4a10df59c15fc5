//! A patient's vital signs as functions of time: deterministic for a seed, plausible for an
//! adult monitored at home.
//!
//! - **Baselines** per patient, drawn from population distributions (resting heart rate,
//!   SpO2, blood pressure, weight …).
//! - **Circadian rhythm**: heart rate, blood pressure, temperature and respiratory rate are
//!   lowest around 04:00 and highest in the afternoon; blood pressure dips at night.
//! - **Correlated signals**: one smooth "activity" process moves heart rate and respiratory
//!   rate up and SpO2 slightly down together, and pushes blood pressure up.
//! - **Meals** raise glucose for about two hours; body weight swings a little over the day.
//! - **Measurement noise** per reading, drawn from a stream keyed by (patient, metric, time)
//!   so a value does not depend on what else was asked for before it.
//! - **Scenarios** ([`crate::scenario`]) bend these curves from their onset.

use std::f64::consts::TAU;

use crate::rng::{Rng, hash};
use crate::scenario::Scenario;

const HOUR_MS: f64 = 3_600_000.0;
const DAY_MS: f64 = 86_400_000.0;

/// A patient's resting values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Baseline {
    pub heart_rate: f64,
    pub spo2: f64,
    pub respiratory_rate: f64,
    pub bp_systolic: f64,
    pub bp_diastolic: f64,
    pub body_temperature: f64,
    pub body_weight: f64,
    pub glucose: f64,
}

impl Baseline {
    /// A baseline drawn from adult home-monitoring populations (clamped to healthy-ish
    /// resting ranges, so a stable patient raises no alert).
    pub fn sample(rng: &mut Rng) -> Baseline {
        let mut n = |mean: f64, sd: f64, lo: f64, hi: f64| (mean + sd * rng.normal()).clamp(lo, hi);
        let bp_systolic = n(126.0, 10.0, 108.0, 150.0);
        let bp_diastolic = (bp_systolic * 0.62 + n(0.0, 2.0, -6.0, 6.0)).clamp(66.0, 92.0);
        Baseline {
            heart_rate: n(70.0, 7.0, 56.0, 84.0),
            spo2: n(97.3, 0.8, 96.0, 99.0),
            respiratory_rate: n(15.0, 1.5, 13.0, 18.0),
            bp_systolic,
            bp_diastolic,
            body_temperature: n(36.7, 0.15, 36.4, 37.0),
            body_weight: n(82.0, 14.0, 48.0, 140.0),
            glucose: n(105.0, 10.0, 88.0, 125.0),
        }
    }
}

/// Everything a patient's devices can measure, at one instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Vitals {
    pub heart_rate: f64,
    pub spo2: f64,
    pub respiratory_rate: f64,
    pub bp_systolic: f64,
    pub bp_diastolic: f64,
    pub body_temperature: f64,
    pub body_weight: f64,
    pub glucose: f64,
    /// ACVPU: 0 alert, 1 new confusion, …
    pub consciousness: f64,
    /// 1 on supplemental oxygen.
    pub on_oxygen: f64,
}

impl Vitals {
    /// The value of a metric by its contract name (`bp_mean` derived from the pressures).
    pub fn get(&self, metric: &str) -> Option<f64> {
        Some(match metric {
            "heart_rate" => self.heart_rate,
            "spo2" => self.spo2,
            "respiratory_rate" => self.respiratory_rate,
            "bp_systolic" => self.bp_systolic,
            "bp_diastolic" => self.bp_diastolic,
            "bp_mean" => self.bp_diastolic + (self.bp_systolic - self.bp_diastolic) / 3.0,
            "body_temperature" => self.body_temperature,
            "body_weight" => self.body_weight,
            "glucose" => self.glucose,
            "consciousness" => self.consciousness,
            "on_oxygen" => self.on_oxygen,
            _ => return None,
        })
    }
}

/// One virtual patient's physiology.
#[derive(Debug, Clone)]
pub struct Physiology {
    seed: u64,
    pub baseline: Baseline,
    /// Phases (radians) and weights of the activity process's components.
    activity: [(f64, f64, f64); 3],
    pub scenario: Scenario,
    /// When the scenario starts (simulated time, Unix ms).
    pub onset_ms: i64,
}

impl Physiology {
    pub fn new(seed: u64, scenario: Scenario, onset_ms: i64) -> Physiology {
        let mut rng = Rng::derive(seed, hash("baseline"));
        let baseline = Baseline::sample(&mut rng);
        // Periods of 17 min, 53 min and 2.3 h: bouts of activity at several time scales.
        let periods = [17.0 * 60_000.0, 53.0 * 60_000.0, 2.3 * HOUR_MS];
        let activity = periods.map(|p| (p, rng.range(0.0, TAU), rng.range(0.3, 1.0)));
        Physiology {
            seed,
            baseline,
            activity,
            scenario,
            onset_ms,
        }
    }

    /// The activity level in [-1, 1] at `t`.
    fn activity(&self, t: i64) -> f64 {
        let (sum, norm) = self
            .activity
            .iter()
            .fold((0.0, 0.0), |(s, n), (period, phase, w)| {
                (s + w * (TAU * t as f64 / period + phase).sin(), n + w)
            });
        sum / norm
    }

    /// The noiseless vital signs at `t` (Unix ms): baseline, rhythm, activity, meals and the
    /// scenario.
    pub fn expected(&self, t: i64) -> Vitals {
        let b = &self.baseline;
        let hour = (t as f64 % DAY_MS) / HOUR_MS;
        // Lowest at 04:00, highest at 16:00.
        let circ = -(TAU * (hour - 4.0) / 24.0).cos();
        let act = self.activity(t);
        let up = act.max(0.0);
        let mut v = Vitals {
            heart_rate: b.heart_rate + 5.0 * circ + 14.0 * up,
            spo2: b.spo2 - 0.5 * up,
            respiratory_rate: b.respiratory_rate + 0.7 * circ + 2.5 * up,
            bp_systolic: b.bp_systolic + 6.0 * circ + 7.0 * act,
            bp_diastolic: b.bp_diastolic + 4.0 * circ + 3.5 * act,
            body_temperature: b.body_temperature + 0.25 * circ,
            body_weight: b.body_weight + 0.35 * (TAU * (hour - 7.0) / 24.0).sin(),
            glucose: b.glucose + meals(hour),
            consciousness: 0.0,
            on_oxygen: 0.0,
        };
        self.scenario.apply(&mut v, t - self.onset_ms);
        v
    }

    /// A measurement of `metric` at `t`: the expected value plus the device's noise, rounded
    /// as devices report it.
    pub fn measure(&self, metric: &str, t: i64) -> Option<f64> {
        let v = self.expected(t).get(metric)?;
        let mut rng = Rng::derive(self.seed ^ hash(metric), t as u64);
        let (sd, step, lo, hi) = match metric {
            "heart_rate" => (2.0, 1.0, 25.0, 250.0),
            "spo2" => (0.6, 1.0, 50.0, 100.0),
            "respiratory_rate" => (0.8, 1.0, 4.0, 60.0),
            "bp_systolic" | "bp_diastolic" | "bp_mean" => (3.0, 1.0, 30.0, 280.0),
            "body_temperature" => (0.08, 0.1, 33.0, 42.5),
            "body_weight" => (0.1, 0.05, 20.0, 300.0),
            "glucose" => (4.0, 1.0, 20.0, 600.0),
            // Observed states, not measured with noise.
            _ => (0.0, 1.0, 0.0, 4.0),
        };
        let x = (v + sd * rng.normal()).clamp(lo, hi);
        Some(((x / step).round() * step * 1000.0).round() / 1000.0)
    }
}

/// Glucose rise after breakfast, lunch and dinner (mg/dL), peaking about 45 min after.
fn meals(hour: f64) -> f64 {
    [7.5, 12.5, 18.5]
        .iter()
        .map(|m| {
            let dt = hour - m;
            if (0.0..3.0).contains(&dt) {
                // A gamma-like bump: up fast, down over two hours.
                let x = dt / 0.75;
                45.0 * x * (1.0 - x).exp()
            } else {
                0.0
            }
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_795_600_000_000;

    #[test]
    fn a_patient_is_the_same_for_the_same_seed() {
        let a = Physiology::new(7, Scenario::Stable, T0);
        let b = Physiology::new(7, Scenario::Stable, T0);
        for t in (0..50).map(|i| T0 + i * 600_000) {
            assert_eq!(a.measure("heart_rate", t), b.measure("heart_rate", t));
        }
        let c = Physiology::new(8, Scenario::Stable, T0);
        assert_ne!(a.baseline, c.baseline);
    }

    #[test]
    fn stable_patients_stay_in_plausible_healthy_ranges() {
        for seed in 0..200 {
            let p = Physiology::new(seed, Scenario::Stable, T0);
            for i in 0..48 {
                let t = T0 + i * 1_800_000;
                let v = p.expected(t);
                assert!((45.0..=110.0).contains(&v.heart_rate), "{seed} {v:?}");
                assert!((94.0..=100.0).contains(&v.spo2), "{seed} {v:?}");
                assert!((10.0..=22.0).contains(&v.respiratory_rate), "{seed} {v:?}");
                assert!(
                    v.bp_systolic < 175.0 && v.bp_diastolic < 110.0,
                    "{seed} {v:?}"
                );
                assert!((35.8..=37.6).contains(&v.body_temperature), "{seed} {v:?}");
                assert!((70.0..=250.0).contains(&v.glucose), "{seed} {v:?}");
            }
        }
    }

    #[test]
    fn heart_rate_and_respiration_move_together() {
        let p = Physiology::new(3, Scenario::Stable, T0);
        let (mut hr, mut rr) = (Vec::new(), Vec::new());
        for i in 0..2000 {
            let v = p.expected(T0 + i * 60_000);
            hr.push(v.heart_rate);
            rr.push(v.respiratory_rate);
        }
        let mean = |x: &[f64]| x.iter().sum::<f64>() / x.len() as f64;
        let (mh, mr) = (mean(&hr), mean(&rr));
        let cov: f64 = hr.iter().zip(&rr).map(|(a, b)| (a - mh) * (b - mr)).sum();
        let sd = |x: &[f64], m: f64| x.iter().map(|a| (a - m).powi(2)).sum::<f64>().sqrt();
        let r = cov / (sd(&hr, mh) * sd(&rr, mr));
        assert!(r > 0.8, "correlation {r}");
    }

    #[test]
    fn nights_are_calmer_than_afternoons() {
        let p = Physiology::new(5, Scenario::Stable, T0);
        let day0 = T0 - T0 % 86_400_000;
        let avg = |hour: i64| {
            (0..30)
                .map(|d| {
                    p.expected(day0 + d * 86_400_000 + hour * 3_600_000)
                        .heart_rate
                })
                .sum::<f64>()
                / 30.0
        };
        assert!(avg(4) + 6.0 < avg(16), "{} vs {}", avg(4), avg(16));
    }

    #[test]
    fn measurements_are_rounded_as_devices_report_them() {
        let p = Physiology::new(1, Scenario::Stable, T0);
        let hr = p.measure("heart_rate", T0).unwrap();
        assert_eq!(hr, hr.round());
        let t = p.measure("body_temperature", T0).unwrap();
        assert!(((t * 10.0).round() - t * 10.0).abs() < 1e-9, "{t}");
        assert!(p.measure("unknown", T0).is_none());
    }
}
