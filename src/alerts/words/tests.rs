//! The sentences, one by one (the engine's tests check them in place against docs/alerts.md).

use super::*;
use crate::alerts::news2::{Inputs, Spo2Scale, score};
use crate::domain::display::{GlucoseUnit, TemperatureUnit};

const US: DisplayUnits = DisplayUnits {
    glucose: GlucoseUnit::MgDl,
    temperature: TemperatureUnit::Celsius,
};
const SI_F: DisplayUnits = DisplayUnits {
    glucose: GlucoseUnit::MmolL,
    temperature: TemperatureUnit::Fahrenheit,
};

#[test]
fn durations_read_naturally() {
    assert_eq!(duration(45), "45 s");
    assert_eq!(duration(120), "2 min");
    assert_eq!(duration(90), "1 min 30 s");
    assert_eq!(duration(7200), "2 h");
    assert_eq!(duration(5400), "1 h 30 min");
}

#[test]
fn a_threshold_says_the_value_and_the_limit_in_the_clinics_units() {
    assert_eq!(
        threshold(US, Metric::Glucose, Op::Lt, 54.0, 52.0, None),
        "Glucose 52 mg/dL — below 54"
    );
    // 52 mg/dL = 2.886 mmol/L; 54 mg/dL = 2.997 mmol/L.
    assert_eq!(
        threshold(SI_F, Metric::Glucose, Op::Lt, 54.0, 52.0, None),
        "Glucose 2.9 mmol/L — below 3.0"
    );
    assert_eq!(
        threshold(US, Metric::Spo2, Op::Lt, 90.0, 86.0, Some(60)),
        "SpO2 86% — below 90 for 1 min"
    );
    // 38.6 °C = 101.48 °F; 38 °C = 100.4 °F.
    assert_eq!(
        threshold(SI_F, Metric::BodyTemperature, Op::Ge, 38.0, 38.6, None),
        "Temperature 101.5 °F — at or above 100.4"
    );
    assert_eq!(
        threshold(US, Metric::HeartRate, Op::Gt, 130.0, 142.0, None),
        "Heart rate 142 bpm — above 130"
    );
}

#[test]
fn blood_pressure_says_both_values_and_the_limits_past() {
    let ge = |v| Some((Op::Ge, v));
    assert_eq!(
        blood_pressure(Some(208.0), Some(124.0), ge(180.0), ge(120.0)),
        "Blood pressure 208/124 mmHg — at or above 180/120"
    );
    assert_eq!(
        blood_pressure(Some(208.0), Some(96.0), ge(180.0), None),
        "Blood pressure 208/96 mmHg — systolic at or above 180"
    );
    assert_eq!(
        blood_pressure(Some(170.0), Some(124.0), None, ge(120.0)),
        "Blood pressure 170/124 mmHg — diastolic at or above 120"
    );
    assert_eq!(
        blood_pressure(Some(208.0), None, ge(180.0), None),
        "Blood pressure 208/– mmHg — systolic at or above 180"
    );
    assert_eq!(
        blood_pressure(Some(200.0), Some(115.0), ge(180.0), Some((Op::Gt, 110.0))),
        "Blood pressure 200/115 mmHg — systolic at or above 180, diastolic above 110"
    );
}

#[test]
fn a_rate_says_the_change_and_where_it_went() {
    assert_eq!(
        rate(US, Metric::BodyWeight, true, 80.1, 82.5, 72.0),
        "Weight up 2.4 kg within 72 h (80.1 → 82.5 kg)"
    );
    // A fall of 2 °C is a fall of 3.6 °F (no offset); 39 °C = 102.2 °F, 37 °C = 98.6 °F.
    assert_eq!(
        rate(SI_F, Metric::BodyTemperature, false, 39.0, 37.0, 24.0),
        "Temperature down 3.6 °F within 24 h (102.2 → 98.6 °F)"
    );
}

#[test]
fn missing_and_news2_read_as_a_nurse_would_say_them() {
    assert_eq!(missing(Metric::Spo2, 7200), "No SpO2 reading for 2 h");
    assert_eq!(
        missing(Metric::HeartRate, 3600),
        "No heart rate reading for 1 h"
    );
    // RR 25 (3), SpO2 93 (2), HR 95 (1), temperature 38.5 (1): 7.
    let s = score(
        &Inputs {
            respiratory_rate: Some(25.0),
            spo2: Some(93.0),
            on_oxygen: Some(false),
            bp_systolic: Some(120.0),
            heart_rate: Some(95.0),
            consciousness: Some(0),
            body_temperature: Some(38.5),
        },
        Spo2Scale::One,
    );
    assert_eq!(
        news2(&s, false),
        "NEWS2 7 — respiratory rate 3, SpO2 2, pulse 1, temperature 1"
    );
    // SpO2 90 alone (3): medium for a single 3; six parameters unread.
    let s = score(
        &Inputs {
            spo2: Some(90.0),
            ..Inputs::default()
        },
        Spo2Scale::One,
    );
    assert_eq!(
        news2(&s, false),
        "NEWS2 3 — SpO2 3 (one parameter scores 3); 6 of 7 parameters without a recent reading"
    );
}
