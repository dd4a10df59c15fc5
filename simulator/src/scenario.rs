//! Clinical stories with known events at known times. A scenario bends a patient's
//! physiology (or its devices' behaviour) from its onset, and says which alerts, dead letters
//! or record entries Vigil should produce, and in what window of simulated time — the truth
//! that tests and benchmarks check Vigil against.
//!
//! The expectations refer to the rule ids of Vigil's documented default care plan
//! (`docs/alerts.md`), plus the `hr-silent` rule that `vigil-sim provision` adds for the
//! `device-silent` scenario.

use serde::Serialize;

use crate::physio::Vitals;

const MIN: i64 = 60_000;
const HOUR: i64 = 3_600_000;

/// A named story.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Nothing happens: no alert may fire.
    Stable,
    /// Sepsis-like decline over six hours: heart rate and breathing up, SpO2 and blood
    /// pressure down, fever, then new confusion. NEWS2 climbs through 5 to 7 and beyond.
    Deterioration,
    /// Fluid retention: 2.8 kg gained over two days.
    HeartFailure,
    /// Glucose falls to about 45 mg/dL over 40 minutes, stays an hour, recovers.
    Hypoglycaemia,
    /// Blood pressure around 205/128 mmHg for six hours; the patient takes an extra reading.
    HypertensiveCrisis,
    /// The wearable stops sending at the onset.
    DeviceSilent,
    /// The wearable's battery runs down to 8 % by the onset.
    LowBattery,
    /// The devices' clocks run 15 minutes fast from the onset: their readings are refused.
    ClockSkew,
    /// About one payload in three is malformed from the onset.
    Malformed,
}

/// What Vigil should do.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Expect {
    /// An alert of this rule, at least this severity.
    Alert {
        rule_id: &'static str,
        severity: &'static str,
    },
    /// Payloads kept as dead letters for the patient's devices.
    DeadLetters,
    /// A `device.battery_low` entry in the record.
    BatteryLow,
    /// No alert at all for the patient.
    NoAlert,
}

/// An expectation with its window of simulated time (Unix ms).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Expectation {
    #[serde(flatten)]
    pub expect: Expect,
    pub from_ms: i64,
    pub by_ms: i64,
}

impl Scenario {
    pub const ALL: [Scenario; 9] = [
        Scenario::Stable,
        Scenario::Deterioration,
        Scenario::HeartFailure,
        Scenario::Hypoglycaemia,
        Scenario::HypertensiveCrisis,
        Scenario::DeviceSilent,
        Scenario::LowBattery,
        Scenario::ClockSkew,
        Scenario::Malformed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Stable => "stable",
            Scenario::Deterioration => "deterioration",
            Scenario::HeartFailure => "heart-failure",
            Scenario::Hypoglycaemia => "hypoglycaemia",
            Scenario::HypertensiveCrisis => "hypertensive-crisis",
            Scenario::DeviceSilent => "device-silent",
            Scenario::LowBattery => "low-battery",
            Scenario::ClockSkew => "clock-skew",
            Scenario::Malformed => "malformed",
        }
    }

    pub fn parse(name: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|s| s.name() == name)
    }

    /// How long the story needs after its onset to play out (simulated time).
    pub fn span_ms(self) -> i64 {
        match self {
            Scenario::Stable => 0,
            Scenario::Deterioration | Scenario::HypertensiveCrisis => 7 * HOUR,
            Scenario::HeartFailure => 72 * HOUR,
            Scenario::Hypoglycaemia => 3 * HOUR,
            Scenario::DeviceSilent => 20 * MIN,
            Scenario::LowBattery | Scenario::ClockSkew | Scenario::Malformed => HOUR,
        }
    }

    /// Bends the vital signs `since` ms after the onset (negative: before it).
    pub fn apply(self, v: &mut Vitals, since: i64) {
        if since < 0 {
            return;
        }
        match self {
            Scenario::Deterioration => {
                let s = (since as f64 / (6 * HOUR) as f64).min(1.0);
                v.heart_rate += 55.0 * s;
                v.respiratory_rate += 13.0 * s;
                v.spo2 -= 9.0 * s;
                v.body_temperature += 2.4 * s;
                v.bp_systolic -= 40.0 * s;
                v.bp_diastolic -= 18.0 * s;
                if s >= 0.9 {
                    v.consciousness = 1.0;
                }
            }
            Scenario::HeartFailure => {
                v.body_weight += 2.8 * (since as f64 / (48 * HOUR) as f64).min(1.0);
            }
            Scenario::Hypoglycaemia => {
                let low = 45.0;
                let m = since as f64 / MIN as f64;
                v.glucose = match m {
                    m if m < 40.0 => v.glucose + (low - v.glucose) * m / 40.0,
                    m if m < 100.0 => low,
                    m if m < 160.0 => low + (v.glucose - low) * (m - 100.0) / 60.0,
                    _ => v.glucose,
                };
            }
            Scenario::HypertensiveCrisis if since < 6 * HOUR => {
                // Around 205/128 whoever the patient, still moving with the day a little.
                v.bp_systolic = 205.0 + 0.3 * (v.bp_systolic - 126.0);
                v.bp_diastolic = 128.0 + 0.3 * (v.bp_diastolic - 80.0);
            }
            _ => {}
        }
    }

    /// Extra spot checks the story makes a patient take (simulated time), e.g. a blood
    /// pressure reading when feeling unwell.
    pub fn extra_checks(self, onset_ms: i64) -> Vec<(&'static str, i64)> {
        match self {
            Scenario::HypertensiveCrisis => vec![("bp-cuff", onset_ms + 10 * MIN)],
            Scenario::Deterioration => (1..=7)
                .flat_map(|h| {
                    let t = onset_ms + h * HOUR;
                    [("pulse-oximeter", t), ("thermometer", t), ("bp-cuff", t)]
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// What Vigil should produce, for a story starting at `onset_ms`.
    pub fn expectations(self, onset_ms: i64) -> Vec<Expectation> {
        let at = |expect, from: i64, by: i64| Expectation {
            expect,
            from_ms: onset_ms + from,
            by_ms: onset_ms + by,
        };
        let alert = |rule_id, severity| Expect::Alert { rule_id, severity };
        match self {
            Scenario::Stable => vec![at(Expect::NoAlert, -24 * HOUR, 24 * HOUR)],
            Scenario::Deterioration => vec![
                at(alert("news2", "medium"), HOUR, 6 * HOUR + 10 * MIN),
                at(alert("news2", "high"), 2 * HOUR, 7 * HOUR + 10 * MIN),
            ],
            Scenario::HeartFailure => {
                vec![at(alert("weight-gain", "medium"), 24 * HOUR, 72 * HOUR)]
            }
            Scenario::Hypoglycaemia => vec![
                at(alert("glucose-low", "medium"), 10 * MIN, 45 * MIN),
                // The same episode: the low alert raised once glucose is very low.
                at(alert("glucose-low", "high"), 20 * MIN, 60 * MIN),
            ],
            Scenario::HypertensiveCrisis => {
                vec![at(alert("bp-crisis-systolic", "high"), 0, 11 * MIN)]
            }
            Scenario::DeviceSilent => vec![at(alert("hr-silent", "medium"), 10 * MIN, 15 * MIN)],
            Scenario::LowBattery => vec![at(Expect::BatteryLow, -HOUR, 5 * MIN)],
            Scenario::ClockSkew | Scenario::Malformed => {
                vec![at(Expect::DeadLetters, 0, HOUR)]
            }
        }
    }

    /// Rules the story needs beyond the default plan (added by `vigil-sim provision`).
    pub fn extra_rules(self) -> Vec<serde_json::Value> {
        match self {
            Scenario::DeviceSilent => vec![serde_json::json!({
                "id": "hr-silent", "kind": "missing", "metric": "heart_rate",
                "after_s": 600, "severity": "medium"
            })],
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::physio::Physiology;

    const T0: i64 = 1_795_600_000_000;

    /// NEWS2 of the noiseless vitals, by the RCP 2017 chart (re-stated here: the simulator
    /// knows only the public reference, not Vigil's code).
    fn news2(v: &Vitals) -> u32 {
        let rr = match v.respiratory_rate.round() as i64 {
            ..=8 => 3,
            9..=11 => 1,
            12..=20 => 0,
            21..=24 => 2,
            _ => 3,
        };
        let spo2 = match v.spo2.round() as i64 {
            ..=91 => 3,
            92..=93 => 2,
            94..=95 => 1,
            _ => 0,
        };
        let sys = match v.bp_systolic.round() as i64 {
            ..=90 => 3,
            91..=100 => 2,
            101..=110 => 1,
            111..=219 => 0,
            _ => 3,
        };
        let hr = match v.heart_rate.round() as i64 {
            ..=40 => 3,
            41..=50 => 1,
            51..=90 => 0,
            91..=110 => 1,
            111..=130 => 2,
            _ => 3,
        };
        let temp = match (v.body_temperature * 10.0).round() as i64 {
            ..=350 => 3,
            351..=360 => 1,
            361..=380 => 0,
            381..=390 => 1,
            _ => 2,
        };
        let cons = if v.consciousness > 0.5 { 3 } else { 0 };
        rr + spo2 + sys + hr + temp + cons
    }

    #[test]
    fn deterioration_climbs_through_news2_5_and_7_within_its_windows() {
        for seed in 0..50 {
            let p = Physiology::new(seed, Scenario::Deterioration, T0);
            let first = |score: u32| {
                (0..=7 * 60)
                    .map(|m| T0 + m * MIN)
                    .find(|t| news2(&p.expected(*t)) >= score)
            };
            let five = first(5).expect("reaches 5");
            let seven = first(7).expect("reaches 7");
            assert!(
                (T0 + HOUR..=T0 + 6 * HOUR).contains(&five),
                "seed {seed}: 5 at {}",
                (five - T0) / MIN
            );
            assert!(
                seven <= T0 + 7 * HOUR,
                "seed {seed}: 7 at {}",
                (seven - T0) / MIN
            );
            // Before the onset the patient is well.
            assert!(news2(&p.expected(T0 - HOUR)) < 5, "seed {seed}");
        }
    }

    #[test]
    fn hypoglycaemia_crosses_both_glucose_limits_in_time() {
        for seed in 0..50 {
            let p = Physiology::new(seed, Scenario::Hypoglycaemia, T0);
            let first_below = |limit: f64| {
                (0..=120)
                    .map(|m| T0 + m * MIN)
                    .find(|t| p.expected(*t).glucose < limit)
                    .unwrap()
            };
            assert!(first_below(70.0) - T0 <= 40 * MIN, "seed {seed}");
            assert!(first_below(54.0) - T0 <= 40 * MIN, "seed {seed}");
            assert!(p.expected(T0 + 3 * HOUR).glucose > 80.0, "recovers");
        }
    }

    #[test]
    fn heart_failure_gains_more_than_two_kilograms_within_three_days() {
        let p = Physiology::new(1, Scenario::HeartFailure, T0);
        let morning = |d: i64| p.expected(T0 + d * 24 * HOUR).body_weight;
        assert!(morning(2) - morning(0) > 2.5);
    }

    #[test]
    fn hypertensive_crisis_is_over_180_over_120() {
        for seed in 0..50 {
            let p = Physiology::new(seed, Scenario::HypertensiveCrisis, T0);
            let v = p.expected(T0 + 10 * MIN);
            assert!(
                v.bp_systolic >= 185.0 && v.bp_diastolic >= 120.0,
                "seed {seed}: {v:?}"
            );
        }
    }

    #[test]
    fn names_round_trip() {
        for s in Scenario::ALL {
            assert_eq!(Scenario::parse(s.name()), Some(s));
        }
        assert_eq!(Scenario::parse("sepsis"), None);
    }
}
