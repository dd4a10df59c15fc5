//! Device set-ups with the patient, as the registry stores them
//! ([`super::storage::ProgrammeStore`]): the device issued, the day it was set up and the
//! patient taught to use it, who did it, and a note. Remote-monitoring set-up and education
//! (CPT 99453) is billed once per enrollment episode on this record (docs/billing.md). Each
//! set-up goes on the patient's timeline and the audit trail with it.
//!
//! The checks here are pure, so that both backends store the same thing.

use serde::{Deserialize, Serialize};

use super::error::RegistryError;
use super::time_log::{random_id, recent_date};
use crate::domain::{DeviceId, format_rfc3339};

/// A set-up as a client posts it (`POST /patients/{id}/setups`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetupBody {
    pub device_id: String,
    pub date: String,
    #[serde(default)]
    pub note: Option<String>,
}

/// A set-up as stored and shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Setup {
    /// `su_` and 128 random bits in hex.
    pub id: String,
    pub patient_id: String,
    pub device_id: String,
    /// `YYYY-MM-DD`: the day of the set-up and education.
    pub date: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Who did it (recorded it).
    pub user: String,
    /// When it was recorded (RFC 3339).
    pub created_at: String,
}

impl SetupBody {
    /// The set-up this body describes, checked, recorded by `user` at `now_ms`: a device id,
    /// a date neither in the future nor more than a year back, a note of at most 2,000
    /// characters. Whether the device is the patient's is the store's to check.
    pub fn checked(self, patient: &str, user: &str, now_ms: i64) -> Result<Setup, RegistryError> {
        let device = DeviceId::parse(self.device_id.trim())
            .map_err(|e| RegistryError::Invalid(format!("device_id: {e}")))?;
        let day = recent_date(&self.date, now_ms)?;
        let note = self
            .note
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty());
        if note.as_ref().is_some_and(|n| n.chars().count() > 2_000) {
            return Err(RegistryError::Invalid(
                "note must be at most 2000 characters".into(),
            ));
        }
        Ok(Setup {
            id: random_id("su_")?,
            patient_id: patient.to_owned(),
            device_id: device.to_string(),
            date: day.to_string(),
            note,
            user: user.to_owned(),
            created_at: format_rfc3339(now_ms),
        })
    }
}

/// The stored columns, in [`Setup`]'s order (`created_ms` for `created_at`).
pub const SETUP_COLUMNS: &str = "id, patient_id, device_id, date, note, username, created_ms";

/// The refusal of a set-up of a device that is not the patient's.
pub fn not_the_patients(setup: &Setup) -> RegistryError {
    RegistryError::Invalid(format!(
        "device {} is not {}'s: set up a device issued to the patient (POST /api/v1/devices)",
        setup.device_id, setup.patient_id
    ))
}

impl Setup {
    pub fn created_ms(&self) -> i64 {
        crate::domain::parse_rfc3339(&self.created_at).unwrap_or_default()
    }

    /// Its timeline entry's data.
    pub fn timeline_data(&self) -> String {
        serde_json::json!({
            "device_id": self.device_id,
            "date": self.date,
            "note": self.note,
            "by": self.user,
        })
        .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-15T12:00:00Z.
    const NOW: i64 = 1_794_744_000_000;

    fn body(v: serde_json::Value) -> SetupBody {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_setup_is_checked_with_reasons() {
        let ok = body(serde_json::json!({"device_id": "cuff-1", "date": "2026-11-14"}))
            .checked("p1", "nurse", NOW)
            .unwrap();
        assert!(ok.id.starts_with("su_") && ok.id.len() == 35);
        assert_eq!(ok.date, "2026-11-14");
        for (v, why) in [
            (
                serde_json::json!({"device_id": "a/b", "date": "2026-11-14"}),
                "device_id",
            ),
            (
                serde_json::json!({"device_id": "d", "date": "14/11/2026"}),
                "not a date",
            ),
            (
                serde_json::json!({"device_id": "d", "date": "2026-11-20"}),
                "future",
            ),
            (
                serde_json::json!({"device_id": "d", "date": "2024-11-20"}),
                "days ago",
            ),
            (
                serde_json::json!({"device_id": "d", "date": "2026-11-14", "note": "x".repeat(2001)}),
                "2000",
            ),
        ] {
            let e = body(v).checked("p1", "nurse", NOW).unwrap_err().to_string();
            assert!(e.contains(why), "{e}");
        }
    }
}
