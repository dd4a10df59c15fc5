//! NEWS2 (Royal College of Physicians, 2017; `docs/alerts.md`): each parameter
//! scores 0 to 3, the aggregate decides the response.
//!
//! Readings are banded as clinicians chart them: respiratory rate, SpO2, systolic pressure and
//! pulse rounded to whole numbers, temperature to one decimal. NEWS2 was built for adults in
//! acute hospital care and is not validated for home monitoring, under-16s or pregnancy: Vigil
//! uses it as decision support, as the RCP intends.

use serde::Serialize;

/// The latest value of each NEWS2 input.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Inputs {
    pub respiratory_rate: Option<f64>,
    pub spo2: Option<f64>,
    /// On supplemental oxygen.
    pub on_oxygen: Option<bool>,
    pub bp_systolic: Option<f64>,
    pub heart_rate: Option<f64>,
    /// ACVPU code: 0 alert, 1 new confusion, 2 voice, 3 pain, 4 unresponsive.
    pub consciousness: Option<u8>,
    pub body_temperature: Option<f64>,
}

impl Inputs {
    /// The inputs from one value per parameter, in the order of [`PARAMETERS`], as Vigil stores
    /// them: oxygen 1 (on) or 0 (air), read as on from 0.5; consciousness the ACVPU code,
    /// rounded and held to 0–4. The engine and the patient page's NEWS2 card both read values
    /// this way, so a score means the same wherever it is shown.
    pub fn from_values(v: [Option<f64>; 7]) -> Inputs {
        Inputs {
            respiratory_rate: v[0],
            spo2: v[1],
            on_oxygen: v[2].map(|x| x >= 0.5),
            bp_systolic: v[3],
            heart_rate: v[4],
            consciousness: v[5].map(|x| x.round().clamp(0.0, 4.0) as u8),
            body_temperature: v[6],
        }
    }
}

/// Which SpO2 scale applies: 2 only where a clinician has documented an 88–92 % target
/// (hypercapnic respiratory failure).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub enum Spo2Scale {
    #[default]
    #[serde(rename = "1")]
    One,
    #[serde(rename = "2")]
    Two,
}

/// A NEWS2 result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Score {
    pub total: u8,
    /// Some single parameter scored 3.
    pub any_three: bool,
    /// Parameters that had no reading (scored 0, and the score is then incomplete).
    pub missing: u8,
    /// Each parameter's score, in the order of [`PARAMETERS`] (`None`: no reading).
    pub parts: [Option<u8>; 7],
}

/// The seven NEWS2 parameters as a nurse names them, in the chart's order (RCP 2017).
pub const PARAMETERS: [&str; 7] = [
    "respiratory rate",
    "SpO2",
    "oxygen",
    "systolic BP",
    "pulse",
    "consciousness",
    "temperature",
];

/// The clinical response the score asks for (RCP Chart 2). Serialised as the chart words it:
/// `low`, `low-medium`, `medium`, `high`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Risk {
    Low,
    LowMedium,
    Medium,
    High,
}

impl Score {
    /// 0–4 low; a single 3 low-medium; 5–6 medium; 7 or more high.
    pub fn risk(&self) -> Risk {
        match self.total {
            7.. => Risk::High,
            5..=6 => Risk::Medium,
            _ if self.any_three => Risk::LowMedium,
            _ => Risk::Low,
        }
    }
}

fn respiratory_rate(x: f64) -> u8 {
    match x.round() as i64 {
        ..=8 => 3,
        9..=11 => 1,
        12..=20 => 0,
        21..=24 => 2,
        _ => 3,
    }
}

fn spo2(x: f64, scale: Spo2Scale, on_oxygen: bool) -> u8 {
    let x = x.round() as i64;
    match scale {
        Spo2Scale::One => match x {
            ..=91 => 3,
            92..=93 => 2,
            94..=95 => 1,
            _ => 0,
        },
        Spo2Scale::Two => match x {
            ..=83 => 3,
            84..=85 => 2,
            86..=87 => 1,
            88..=92 => 0,
            // At or above 93 %, the score depends on whether it is achieved on oxygen.
            _ if !on_oxygen => 0,
            93..=94 => 1,
            95..=96 => 2,
            _ => 3,
        },
    }
}

fn systolic(x: f64) -> u8 {
    match x.round() as i64 {
        ..=90 => 3,
        91..=100 => 2,
        101..=110 => 1,
        111..=219 => 0,
        _ => 3,
    }
}

fn pulse(x: f64) -> u8 {
    match x.round() as i64 {
        ..=40 => 3,
        41..=50 => 1,
        51..=90 => 0,
        91..=110 => 1,
        111..=130 => 2,
        _ => 3,
    }
}

fn temperature(x: f64) -> u8 {
    // In tenths of a degree, so 35.05 charts as 35.1.
    match (x * 10.0).round() as i64 {
        ..=350 => 3,
        351..=360 => 1,
        361..=380 => 0,
        381..=390 => 1,
        _ => 2,
    }
}

/// Scores the inputs. Missing parameters score 0 and are counted in [`Score::missing`].
pub fn score(i: &Inputs, scale: Spo2Scale) -> Score {
    let on_oxygen = i.on_oxygen.unwrap_or(false);
    let parts = [
        i.respiratory_rate.map(respiratory_rate),
        i.spo2.map(|x| spo2(x, scale, on_oxygen)),
        i.on_oxygen.map(|o| if o { 2 } else { 0 }),
        i.bp_systolic.map(systolic),
        i.heart_rate.map(pulse),
        i.consciousness.map(|c| if c == 0 { 0 } else { 3 }),
        i.body_temperature.map(temperature),
    ];
    Score {
        total: parts.iter().flatten().sum(),
        any_three: parts.iter().flatten().any(|p| *p == 3),
        missing: parts.iter().filter(|p| p.is_none()).count() as u8,
        parts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every band edge of the RCP 2017 chart, both sides.
    #[test]
    fn band_edges_follow_the_rcp_chart() {
        for (x, s) in [
            (8.0, 3),
            (9.0, 1),
            (11.0, 1),
            (12.0, 0),
            (20.0, 0),
            (21.0, 2),
            (24.0, 2),
            (25.0, 3),
        ] {
            assert_eq!(respiratory_rate(x), s, "RR {x}");
        }
        for (x, s) in [
            (91.0, 3),
            (92.0, 2),
            (93.0, 2),
            (94.0, 1),
            (95.0, 1),
            (96.0, 0),
            (100.0, 0),
        ] {
            assert_eq!(spo2(x, Spo2Scale::One, false), s, "SpO2 scale 1 {x}");
        }
        for (x, o, s) in [
            (83.0, false, 3),
            (84.0, false, 2),
            (85.0, false, 2),
            (86.0, false, 1),
            (87.0, false, 1),
            (88.0, true, 0),
            (92.0, true, 0),
            (93.0, false, 0),
            (99.0, false, 0),
            (93.0, true, 1),
            (94.0, true, 1),
            (95.0, true, 2),
            (96.0, true, 2),
            (97.0, true, 3),
        ] {
            assert_eq!(spo2(x, Spo2Scale::Two, o), s, "SpO2 scale 2 {x} on O2 {o}");
        }
        for (x, s) in [
            (90.0, 3),
            (91.0, 2),
            (100.0, 2),
            (101.0, 1),
            (110.0, 1),
            (111.0, 0),
            (219.0, 0),
            (220.0, 3),
        ] {
            assert_eq!(systolic(x), s, "SBP {x}");
        }
        for (x, s) in [
            (40.0, 3),
            (41.0, 1),
            (50.0, 1),
            (51.0, 0),
            (90.0, 0),
            (91.0, 1),
            (110.0, 1),
            (111.0, 2),
            (130.0, 2),
            (131.0, 3),
        ] {
            assert_eq!(pulse(x), s, "pulse {x}");
        }
        for (x, s) in [
            (35.0, 3),
            (35.1, 1),
            (36.0, 1),
            (36.1, 0),
            (38.0, 0),
            (38.1, 1),
            (39.0, 1),
            (39.1, 2),
        ] {
            assert_eq!(temperature(x), s, "temp {x}");
        }
    }

    #[test]
    fn aggregate_and_risk() {
        let healthy = Inputs {
            respiratory_rate: Some(16.0),
            spo2: Some(97.0),
            on_oxygen: Some(false),
            bp_systolic: Some(125.0),
            heart_rate: Some(72.0),
            consciousness: Some(0),
            body_temperature: Some(36.8),
        };
        let s = score(&healthy, Spo2Scale::One);
        assert_eq!(
            (s.total, s.any_three, s.missing, s.risk()),
            (0, false, 0, Risk::Low)
        );

        // Sepsis-like: RR 24 (2), SpO2 93 (2), air (0), SBP 98 (2), pulse 118 (2), alert (0),
        // 38.6 °C (1) = 9: high.
        let septic = Inputs {
            respiratory_rate: Some(24.0),
            spo2: Some(93.0),
            bp_systolic: Some(98.0),
            heart_rate: Some(118.0),
            body_temperature: Some(38.6),
            ..healthy
        };
        let s = score(&septic, Spo2Scale::One);
        assert_eq!((s.total, s.risk()), (9, Risk::High));

        // A single 3 (new confusion) with an otherwise normal chart: low-medium.
        let confused = Inputs {
            consciousness: Some(1),
            ..healthy
        };
        assert_eq!(score(&confused, Spo2Scale::One).risk(), Risk::LowMedium);
        // The API says it as the chart does.
        assert_eq!(serde_json::to_value(Risk::LowMedium).unwrap(), "low-medium");

        // On oxygen alone scores 2; with SpO2 94 (1) and pulse 95 (1) and RR 21 (2) = 6: medium.
        let o2 = Inputs {
            on_oxygen: Some(true),
            spo2: Some(94.0),
            heart_rate: Some(95.0),
            respiratory_rate: Some(21.0),
            ..healthy
        };
        assert_eq!(score(&o2, Spo2Scale::One).total, 6);
        assert_eq!(score(&o2, Spo2Scale::One).risk(), Risk::Medium);

        let nothing = score(&Inputs::default(), Spo2Scale::One);
        assert_eq!((nothing.total, nothing.missing), (0, 7));
    }
}
