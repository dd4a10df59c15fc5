//! `[clinic]`: what is true of the whole clinic, such as the time zone its days of monitoring
//! are counted in. A patient's own record may differ; that lives in the registry, never here.

use serde::{Deserialize, Serialize};

/// The clinic (`[clinic]`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClinicConfig {
    /// The IANA time zone the clinic's patients live in, unless a patient's record names their
    /// own: days of monitoring are counted in it (docs/billing.md).
    pub timezone: String,
}

impl Default for ClinicConfig {
    fn default() -> Self {
        ClinicConfig {
            timezone: "UTC".into(),
        }
    }
}
