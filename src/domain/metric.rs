//! The metric table of the contract: canonical names, LOINC codes, canonical UCUM units, the
//! other units accepted (converted on the way in) and physiologically plausible ranges.

use std::fmt;

use serde::{Serialize, Serializer};

/// A vital sign or other measured quantity Vigil knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Metric {
    HeartRate,
    Spo2,
    RespiratoryRate,
    BpSystolic,
    BpDiastolic,
    BpMean,
    BodyTemperature,
    BodyWeight,
    Glucose,
    Steps,
    Consciousness,
    OnOxygen,
}

/// Why a value could not be brought into its metric's canonical unit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    #[error("unit {unit:?} is not accepted for {metric} (use {canonical:?})")]
    Unknown {
        metric: &'static str,
        unit: String,
        canonical: &'static str,
    },
}

/// How a unit maps onto the canonical one: `canonical = value * scale + offset`.
struct Conversion {
    unit: &'static str,
    scale: f64,
    offset: f64,
}

const fn same(unit: &'static str) -> Conversion {
    Conversion {
        unit,
        scale: 1.0,
        offset: 0.0,
    }
}

const fn scaled(unit: &'static str, scale: f64) -> Conversion {
    Conversion {
        unit,
        scale,
        offset: 0.0,
    }
}

/// mmHg per kPa (the factor the Bluetooth blood-pressure profile gives).
const MMHG_PER_KPA: f64 = 7.500_62;
/// mg/dL of glucose per mmol/L (molar mass of glucose 180.156 g/mol).
pub(crate) const MGDL_PER_MMOLL: f64 = 18.0156;
/// Kilograms per avoirdupois pound (exact by definition).
const KG_PER_LB: f64 = 0.453_592_37;

const PER_MIN: &[Conversion] = &[same("/min"), same("1/min")];
const HEART_RATE: &[Conversion] = &[
    same("/min"),
    same("beat/min"),
    same("bpm"),
    same("1/min"),
    same("{beats}/min"),
];
const PRESSURE: &[Conversion] = &[same("mm[Hg]"), same("mmHg"), scaled("kPa", MMHG_PER_KPA)];
const TEMPERATURE: &[Conversion] = &[
    same("Cel"),
    Conversion {
        unit: "[degF]",
        scale: 5.0 / 9.0,
        offset: -32.0 * 5.0 / 9.0,
    },
];
const WEIGHT: &[Conversion] = &[same("kg"), scaled("[lb_av]", KG_PER_LB), scaled("g", 0.001)];
const GLUCOSE: &[Conversion] = &[same("mg/dL"), scaled("mmol/L", MGDL_PER_MMOLL)];
const PERCENT: &[Conversion] = &[same("%")];
const STEPS: &[Conversion] = &[same("{steps}"), same("count")];
const ACVPU: &[Conversion] = &[same("{ACVPU}")];
const BOOL: &[Conversion] = &[same("{bool}")];

impl Metric {
    /// Every metric, in the contract's order.
    pub const ALL: [Metric; 12] = [
        Metric::HeartRate,
        Metric::Spo2,
        Metric::RespiratoryRate,
        Metric::BpSystolic,
        Metric::BpDiastolic,
        Metric::BpMean,
        Metric::BodyTemperature,
        Metric::BodyWeight,
        Metric::Glucose,
        Metric::Steps,
        Metric::Consciousness,
        Metric::OnOxygen,
    ];

    /// The canonical name used in payloads, the API and the store.
    pub fn name(self) -> &'static str {
        match self {
            Metric::HeartRate => "heart_rate",
            Metric::Spo2 => "spo2",
            Metric::RespiratoryRate => "respiratory_rate",
            Metric::BpSystolic => "bp_systolic",
            Metric::BpDiastolic => "bp_diastolic",
            Metric::BpMean => "bp_mean",
            Metric::BodyTemperature => "body_temperature",
            Metric::BodyWeight => "body_weight",
            Metric::Glucose => "glucose",
            Metric::Steps => "steps",
            Metric::Consciousness => "consciousness",
            Metric::OnOxygen => "on_oxygen",
        }
    }

    /// Looks a canonical name up.
    pub fn parse(name: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.name() == name)
    }

    /// A small stable number for the store (never reuse or renumber).
    pub fn code(self) -> u8 {
        match self {
            Metric::HeartRate => 1,
            Metric::Spo2 => 2,
            Metric::RespiratoryRate => 3,
            Metric::BpSystolic => 4,
            Metric::BpDiastolic => 5,
            Metric::BpMean => 6,
            Metric::BodyTemperature => 7,
            Metric::BodyWeight => 8,
            Metric::Glucose => 9,
            Metric::Steps => 10,
            Metric::Consciousness => 11,
            Metric::OnOxygen => 12,
        }
    }

    /// The inverse of [`Metric::code`].
    pub fn from_code(code: u8) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.code() == code)
    }

    /// The canonical UCUM unit values are stored in.
    pub fn unit(self) -> &'static str {
        match self {
            Metric::HeartRate | Metric::RespiratoryRate => "/min",
            Metric::Spo2 => "%",
            Metric::BpSystolic | Metric::BpDiastolic | Metric::BpMean => "mm[Hg]",
            Metric::BodyTemperature => "Cel",
            Metric::BodyWeight => "kg",
            Metric::Glucose => "mg/dL",
            Metric::Steps => "{steps}",
            Metric::Consciousness => "{ACVPU}",
            Metric::OnOxygen => "{bool}",
        }
    }

    /// The LOINC code, where the metric has one (`None` for NEWS2-only inputs).
    ///
    /// Sources in `docs/metrics.md`. Steps use 41950-7 ("number of steps in 24 hours", HL7
    /// Physical Activity IG), since the meaning of 55423-8 could not be confirmed.
    pub fn loinc(self) -> Option<&'static str> {
        match self {
            Metric::HeartRate => Some("8867-4"),
            Metric::Spo2 => Some("2708-6"),
            Metric::RespiratoryRate => Some("9279-1"),
            Metric::BpSystolic => Some("8480-6"),
            Metric::BpDiastolic => Some("8462-4"),
            Metric::BpMean => Some("8478-0"),
            Metric::BodyTemperature => Some("8310-5"),
            Metric::BodyWeight => Some("29463-7"),
            Metric::Glucose => Some("2339-0"),
            Metric::Steps => Some("41950-7"),
            Metric::Consciousness | Metric::OnOxygen => None,
        }
    }

    /// The physiologically plausible range, inclusive, in the canonical unit. A value outside it
    /// is a device or transmission fault, not a clinical finding, and is rejected.
    pub fn plausible_range(self) -> (f64, f64) {
        match self {
            Metric::HeartRate => (20.0, 300.0),
            Metric::Spo2 => (40.0, 100.0),
            Metric::RespiratoryRate => (2.0, 80.0),
            Metric::BpSystolic => (40.0, 300.0),
            Metric::BpDiastolic => (20.0, 200.0),
            Metric::BpMean => (25.0, 250.0),
            Metric::BodyTemperature => (25.0, 45.0),
            Metric::BodyWeight => (0.3, 650.0),
            Metric::Glucose => (10.0, 1500.0),
            Metric::Steps => (0.0, 200_000.0),
            Metric::Consciousness => (0.0, 4.0),
            Metric::OnOxygen => (0.0, 1.0),
        }
    }

    /// Whether only whole numbers make sense (counts and coded values).
    pub fn is_integral(self) -> bool {
        matches!(
            self,
            Metric::Steps | Metric::Consciousness | Metric::OnOxygen
        )
    }

    fn conversions(self) -> &'static [Conversion] {
        match self {
            Metric::HeartRate => HEART_RATE,
            Metric::RespiratoryRate => PER_MIN,
            Metric::Spo2 => PERCENT,
            Metric::BpSystolic | Metric::BpDiastolic | Metric::BpMean => PRESSURE,
            Metric::BodyTemperature => TEMPERATURE,
            Metric::BodyWeight => WEIGHT,
            Metric::Glucose => GLUCOSE,
            Metric::Steps => STEPS,
            Metric::Consciousness => ACVPU,
            Metric::OnOxygen => BOOL,
        }
    }

    /// Converts `value` stated in `unit` (`None`: canonical) to the canonical unit.
    pub fn to_canonical(self, value: f64, unit: Option<&str>) -> Result<f64, UnitError> {
        let Some(unit) = unit else { return Ok(value) };
        match self.conversions().iter().find(|c| c.unit == unit) {
            Some(c) => Ok(value * c.scale + c.offset),
            None => Err(UnitError::Unknown {
                metric: self.name(),
                unit: unit.to_owned(),
                canonical: self.unit(),
            }),
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for Metric {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn names_and_codes_are_unique_and_round_trip() {
        for m in Metric::ALL {
            assert_eq!(Metric::parse(m.name()), Some(m));
            assert_eq!(Metric::from_code(m.code()), Some(m));
        }
        assert_eq!(Metric::parse("pulse"), None);
    }

    #[test]
    fn converts_the_contract_units() {
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert!(close(
            Metric::BpSystolic.to_canonical(16.0, Some("kPa")).unwrap(),
            120.009_92
        ));
        assert!(close(
            Metric::BodyTemperature
                .to_canonical(98.6, Some("[degF]"))
                .unwrap(),
            37.0
        ));
        assert!(close(
            Metric::BodyWeight
                .to_canonical(150.0, Some("[lb_av]"))
                .unwrap(),
            68.038_855_5
        ));
        assert!(close(
            Metric::BodyWeight
                .to_canonical(70_500.0, Some("g"))
                .unwrap(),
            70.5
        ));
        assert!(close(
            Metric::Glucose.to_canonical(5.5, Some("mmol/L")).unwrap(),
            99.0858
        ));
        assert_eq!(
            Metric::HeartRate.to_canonical(72.0, Some("bpm")).unwrap(),
            72.0
        );
        assert_eq!(Metric::HeartRate.to_canonical(72.0, None).unwrap(), 72.0);
    }

    #[test]
    fn refuses_a_unit_of_another_quantity() {
        let err = Metric::BodyWeight
            .to_canonical(70.0, Some("mm[Hg]"))
            .unwrap_err();
        assert!(err.to_string().contains("body_weight"), "{err}");
        assert!(Metric::Spo2.to_canonical(0.97, Some("/")).is_err());
    }

    proptest! {
        #[test]
        fn fahrenheit_and_celsius_agree(c in 25.0f64..45.0) {
            let f = c * 9.0 / 5.0 + 32.0;
            let back = Metric::BodyTemperature.to_canonical(f, Some("[degF]")).unwrap();
            prop_assert!((back - c).abs() < 1e-9);
        }

        #[test]
        fn kpa_and_mmhg_agree(mmhg in 40.0f64..300.0) {
            let kpa = mmhg / MMHG_PER_KPA;
            let back = Metric::BpDiastolic.to_canonical(kpa, Some("kPa")).unwrap();
            prop_assert!((back - mmhg).abs() < 1e-9);
        }
    }
}
