//! `[clinic]`: what is true of the whole clinic, such as the time zone its days of monitoring
//! are counted in. A patient's own record may differ; that lives in the registry, never here.

use serde::{Deserialize, Serialize};

use crate::domain::DisplayUnits;
use crate::domain::display::{GlucoseUnit, TemperatureUnit};

/// The clinic (`[clinic]`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClinicConfig {
    /// The IANA time zone the clinic's patients live in, unless a patient's record names their
    /// own: days of monitoring are counted in it (docs/billing.md).
    pub timezone: String,
    /// How glucose is written for people: `"mg/dL"` (the default) or `"mmol/L"`. Stored
    /// values stay in mg/dL.
    pub glucose_unit: GlucoseUnit,
    /// How body temperature is written for people: `"celsius"` (the default) or
    /// `"fahrenheit"`. Stored values stay in °C.
    pub temperature_unit: TemperatureUnit,
}

impl ClinicConfig {
    /// The units alert messages and the dashboard write values in.
    pub fn units(&self) -> DisplayUnits {
        DisplayUnits {
            glucose: self.glucose_unit,
            temperature: self.temperature_unit,
        }
    }
}

impl Default for ClinicConfig {
    fn default() -> Self {
        ClinicConfig {
            timezone: "UTC".into(),
            glucose_unit: GlucoseUnit::default(),
            temperature_unit: TemperatureUnit::default(),
        }
    }
}
