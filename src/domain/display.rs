//! The units a clinic reads values in. Values are always stored in their metric's canonical
//! unit ([`super::Metric::unit`]); these only change how a value is written for a person (alert
//! messages, the dashboard). Set in `[clinic]` (docs/alerts.md, "Messages").

use serde::{Deserialize, Serialize};

use super::Metric;
use super::metric::MGDL_PER_MMOLL;

/// How glucose is shown: mg/dL (the United States) or mmol/L (most of the rest of the world).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum GlucoseUnit {
    #[default]
    #[serde(rename = "mg/dL")]
    MgDl,
    #[serde(rename = "mmol/L")]
    MmolL,
}

/// How body temperature is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TemperatureUnit {
    #[default]
    Celsius,
    Fahrenheit,
}

/// The units a clinic reads values in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DisplayUnits {
    pub glucose: GlucoseUnit,
    pub temperature: TemperatureUnit,
}

impl DisplayUnits {
    /// A canonical value of `metric` in the display unit, with that unit's symbol as a person
    /// writes it ("" for metrics that have none, such as steps) and the decimals worth showing.
    pub fn show(self, metric: Metric, canonical: f64) -> (f64, &'static str, usize) {
        match metric {
            Metric::Glucose => match self.glucose {
                GlucoseUnit::MgDl => (canonical, "mg/dL", 0),
                GlucoseUnit::MmolL => (canonical / MGDL_PER_MMOLL, "mmol/L", 1),
            },
            Metric::BodyTemperature => match self.temperature {
                TemperatureUnit::Celsius => (canonical, "°C", 1),
                TemperatureUnit::Fahrenheit => (canonical * 9.0 / 5.0 + 32.0, "°F", 1),
            },
            Metric::HeartRate => (canonical, "bpm", 0),
            Metric::RespiratoryRate => (canonical, "breaths/min", 0),
            Metric::Spo2 => (canonical, "%", 0),
            Metric::BpSystolic | Metric::BpDiastolic | Metric::BpMean => (canonical, "mmHg", 0),
            Metric::BodyWeight => (canonical, "kg", 1),
            Metric::Steps | Metric::Consciousness | Metric::OnOxygen => (canonical, "", 0),
        }
    }

    /// A canonical value as a number in the display unit, without its unit: the unit's
    /// decimals, kept where clinicians write them (mmol/L and temperatures: "3.0", "38.0"),
    /// else trailing zeros dropped ("52", "82.5", "80").
    pub fn number(self, metric: Metric, canonical: f64) -> String {
        let (v, unit, d) = self.show(metric, canonical);
        let s = format!("{v:.d$}");
        if matches!(unit, "mmol/L" | "°C" | "°F") {
            s
        } else {
            trim(s)
        }
    }

    /// A canonical value with its display unit: "52 mg/dL", "86%", "37.5 °C"; consciousness
    /// as its ACVPU letter, supplemental oxygen as "on oxygen" or "on air".
    pub fn value(self, metric: Metric, canonical: f64) -> String {
        match metric {
            Metric::Consciousness => acvpu(canonical).to_owned(),
            Metric::OnOxygen if canonical >= 0.5 => "on oxygen".into(),
            Metric::OnOxygen => "on air".into(),
            _ => {
                let (_, unit, _) = self.show(metric, canonical);
                let n = self.number(metric, canonical);
                match unit {
                    "" => n,
                    "%" => format!("{n}%"),
                    u => format!("{n} {u}"),
                }
            }
        }
    }
}

/// The ACVPU letter of a stored consciousness level (0 alert … 4 unresponsive).
fn acvpu(v: f64) -> &'static str {
    match v.round() as i64 {
        ..=0 => "alert (A)",
        1 => "new confusion (C)",
        2 => "responds to voice (V)",
        3 => "responds to pain (P)",
        _ => "unresponsive (U)",
    }
}

fn trim(s: String) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glucose_and_temperature_follow_the_clinics_units() {
        let us = DisplayUnits::default();
        let si = DisplayUnits {
            glucose: GlucoseUnit::MmolL,
            temperature: TemperatureUnit::Fahrenheit,
        };
        assert_eq!(us.value(Metric::Glucose, 52.0), "52 mg/dL");
        // 52 / 18.0156 = 2.886…
        assert_eq!(si.value(Metric::Glucose, 52.0), "2.9 mmol/L");
        // 54 / 18.0156 = 2.997…: written 3.0 mmol/L, and 38 °C as 38.0 °C, as clinicians do.
        assert_eq!(si.value(Metric::Glucose, 54.0), "3.0 mmol/L");
        assert_eq!(us.value(Metric::BodyTemperature, 38.0), "38.0 °C");
        assert_eq!(us.value(Metric::BodyWeight, 80.0), "80 kg");
        // 38.4 × 9/5 + 32 = 101.12
        assert_eq!(si.value(Metric::BodyTemperature, 38.4), "101.1 °F");
        assert_eq!(us.value(Metric::Spo2, 86.0), "86%");
        assert_eq!(us.value(Metric::BodyWeight, 82.46), "82.5 kg");
        assert_eq!(
            us.value(Metric::Consciousness, 2.0),
            "responds to voice (V)"
        );
        assert_eq!(us.value(Metric::OnOxygen, 1.0), "on oxygen");
        assert_eq!(us.value(Metric::Steps, 4200.0), "4200");
    }

    #[test]
    fn units_are_read_from_config_words() {
        let u: DisplayUnits =
            serde_json::from_str(r#"{"glucose":"mmol/L","temperature":"fahrenheit"}"#).unwrap();
        assert_eq!(u.glucose, GlucoseUnit::MmolL);
        assert_eq!(u.temperature, TemperatureUnit::Fahrenheit);
        assert!(
            serde_json::from_str::<DisplayUnits>(r#"{"glucose":"mmol","temperature":"celsius"}"#)
                .is_err()
        );
    }
}
