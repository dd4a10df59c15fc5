//! Discharging a patient from remote monitoring, and readmitting them: the registry's side (the
//! checks of a discharge's date and reason, the records both backends write and read back).
//!
//! A discharge is a state of the patient, not a deletion: the record stays readable (with when,
//! the date the clinic gives, the reason and who), the devices stay provisioned and their
//! readings are still stored, but the patient leaves the panel, the worklist and the live
//! feed's default view, and the alert engine judges them by an empty care plan (no alerts;
//! see [`crate::crm::record`]'s `engine_plan`). In the discharge's own transaction, each
//! unresolved alert of the patient is resolved with the note [`DISCHARGE_NOTE`] (its
//! `alert.resolved` timeline entry, its outbox rows and its audit line), the patient's
//! `patient.discharged` timeline entry and the discharge's audit line are written and, on
//! PostgreSQL, the engine holding the patient is told (`engine_notices`). Readmitting clears
//! the discharge, writes `patient.readmitted` and tells the engine the same way: the care plan
//! in force applies again from then on.
//!
//! It never touches a database.

use serde::Serialize;

use super::audit::NewAuditLine;
use super::error::RegistryError;
use super::record::Sink;
use crate::domain::format_rfc3339;

/// The note of an alert resolved because its patient was discharged.
pub const DISCHARGE_NOTE: &str = "patient discharged";

/// Longest discharge reason, in characters.
pub const REASON_MAX_CHARS: usize = 500;

/// A patient's discharge as the API shows it (`"discharged"` on the patient).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Discharge {
    /// When it was recorded (RFC 3339).
    pub at: String,
    /// The date of discharge the clinic gives (`YYYY-MM-DD`; the day it was recorded, in the
    /// clinic's time zone, unless given).
    pub date: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Who discharged the patient (a username).
    pub by: String,
}

/// A discharge as the backends store it (columns of `patients`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredDischarge {
    pub at_ms: i64,
    pub date: String,
    pub reason: Option<String>,
    pub by: String,
}

impl StoredDischarge {
    /// The API's view.
    pub fn view(&self) -> Discharge {
        Discharge {
            at: format_rfc3339(self.at_ms),
            date: self.date.clone(),
            reason: self.reason.clone(),
            by: self.by.clone(),
        }
    }

    /// The `patient.discharged` timeline entry's data.
    pub fn timeline_data(&self) -> String {
        serde_json::json!({"by": self.by, "date": self.date, "reason": self.reason}).to_string()
    }
}

/// The `patient.readmitted` timeline entry's data.
pub fn readmitted_data(by: &str) -> String {
    serde_json::json!({ "by": by }).to_string()
}

/// A discharge's reason as stored: trimmed, `None` when empty. `Invalid` when too long.
pub fn check_reason(reason: Option<&str>) -> Result<Option<String>, RegistryError> {
    let Some(r) = reason.map(str::trim).filter(|r| !r.is_empty()) else {
        return Ok(None);
    };
    if r.chars().count() > REASON_MAX_CHARS {
        return Err(RegistryError::Invalid(format!(
            "reason must be at most {REASON_MAX_CHARS} characters"
        )));
    }
    Ok(Some(r.to_owned()))
}

/// A discharge date: `YYYY-MM-DD`, not after `today` (a discharge is recorded when it has
/// happened). `Invalid` otherwise.
pub fn check_date(date: &str, today: &str) -> Result<String, RegistryError> {
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    if date.len() != 10 || time::Date::parse(date, &fmt).is_err() {
        return Err(RegistryError::Invalid(format!(
            "date {date:?} is not a date like 2026-12-01"
        )));
    }
    // Both are `YYYY-MM-DD`: their text orders as the dates do.
    if date > today {
        return Err(RegistryError::Invalid(format!(
            "date {date} is in the future: record a discharge once it has happened"
        )));
    }
    Ok(date.to_owned())
}

/// A discharge or a readmission to write ([`super::storage::PatientStore::set_discharge`]).
#[derive(Debug, Clone)]
pub struct DischargeChange {
    pub patient: String,
    /// `Some`: discharge the patient so; `None`: readmit them.
    pub discharge: Option<StoredDischarge>,
    /// Who makes the change (a username), for the alerts it resolves.
    pub by: String,
    pub now_ms: i64,
    /// The change's own audit line.
    pub audit: NewAuditLine,
    /// The audit line of each alert the discharge resolves: this one with the alert's target
    /// (`alert/{id}`) and the action `alert.resolve`.
    pub alert_audit: NewAuditLine,
    /// The outward sinks the resolutions' events are queued for.
    pub sinks: Vec<Sink>,
}

impl DischargeChange {
    /// The audit line of resolving `alert_id`.
    pub fn alert_line(&self, alert_id: &str) -> NewAuditLine {
        NewAuditLine {
            action: "alert.resolve".into(),
            target: format!("alert/{alert_id}"),
            ..self.alert_audit.clone()
        }
    }

    /// The refusal of a change that changes nothing: discharging a discharged patient, or
    /// readmitting one under monitoring.
    pub fn refused(&self, discharged: bool) -> RegistryError {
        if discharged {
            RegistryError::Conflict(format!(
                "patient {} is already discharged; readmit them first",
                self.patient
            ))
        } else {
            RegistryError::Conflict(format!(
                "patient {} is not discharged: there is nothing to readmit",
                self.patient
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_reasons() {
        assert_eq!(
            check_date("2026-12-01", "2026-12-04").unwrap(),
            "2026-12-01"
        );
        assert!(check_date("2026-12-04", "2026-12-04").is_ok());
        assert!(check_date("2026-12-05", "2026-12-04").is_err());
        assert!(check_date("2026-13-01", "2026-12-04").is_err());
        assert!(check_date("yesterday", "2026-12-04").is_err());
        assert_eq!(check_reason(Some("  ")).unwrap(), None);
        assert_eq!(
            check_reason(Some(" recovered ")).unwrap().as_deref(),
            Some("recovered")
        );
        assert!(check_reason(Some(&"x".repeat(501))).is_err());
    }
}
