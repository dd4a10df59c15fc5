//! Patients as the storage seam ([`super::storage::PatientStore`]) takes and returns them, and
//! the pure rules about them: the checks of a name, a birth date and the details, the merge of
//! an update into what is stored (an empty string clears a field; the care team can be moved,
//! never cleared), and the rows both backends read back.
//!
//! It never touches a database. It must never log a patient's details.

use serde::Serialize;

use super::audit::NewAuditLine;
use super::error::RegistryError;
use crate::domain::{PatientId, format_rfc3339};

/// The id of the care team a patient is put on when none is given.
pub const DEFAULT_TEAM: &str = "default";

/// A new patient's details, on the default team when they name none.
pub(super) fn on_a_team(mut details: PatientDetails) -> PatientDetails {
    if details.care_team.as_deref().is_none_or(str::is_empty) {
        details.care_team = Some(DEFAULT_TEAM.to_owned());
    }
    details
}

/// Refuses an update that would leave a patient on no care team (an empty string clears a
/// field).
pub(super) fn check_not_cleared(update: &PatientDetails) -> Result<(), RegistryError> {
    if update.care_team.as_deref() == Some("") {
        return Err(RegistryError::Invalid(NOT_CLEARED.into()));
    }
    Ok(())
}

/// Why a patient's team cannot be cleared, in the words the API answers with.
pub const NOT_CLEARED: &str = "care_team cannot be cleared: every patient belongs to a care team; \
     give another team's id to move the patient";

/// A patient as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Patient {
    pub id: PatientId,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub birth_date: Option<String>,
    /// The clinic's medical record number, unique per clinic (see [`mrn`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mrn: Option<String>,
    pub created_at: String,
    #[serde(flatten)]
    pub details: PatientDetails,
    /// `active` (under monitoring) or `discharged`.
    pub status: &'static str,
    /// The discharge, while the patient is discharged ([`super::discharge`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discharged: Option<super::discharge::Discharge>,
}

impl Patient {
    /// Whether the patient is discharged (off the panel, the worklist and alerting).
    pub fn is_discharged(&self) -> bool {
        self.discharged.is_some()
    }
}

/// What the CRM record keeps about a patient beyond name and birth date: demographics, the
/// care team responsible and how the patient prefers to be contacted. Every field is
/// optional; an empty string clears a field in an update.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct PatientDetails {
    /// FHIR AdministrativeGender: `male`, `female`, `other` or `unknown`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gender: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// The care team responsible for the patient: always one (the default team when none is
    /// given); see `care_teams`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub care_team: Option<String>,
    /// `phone`, `sms`, `email` or `post`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact_preference: Option<String>,
    /// Free text, e.g. "mornings only; daughter is the carer".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact_notes: Option<String>,
    /// Where the patient lives, as an IANA time-zone name (`America/Chicago`): their days of
    /// monitoring are counted in it (docs/billing.md); the clinic's `[clinic] timezone` when
    /// absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
}

impl PatientDetails {
    fn fields(&self) -> [(&'static str, &Option<String>); 8] {
        [
            ("gender", &self.gender),
            ("phone", &self.phone),
            ("email", &self.email),
            ("address", &self.address),
            ("care_team", &self.care_team),
            ("contact_preference", &self.contact_preference),
            ("contact_notes", &self.contact_notes),
            ("timezone", &self.timezone),
        ]
    }

    pub(super) fn check(&self) -> Result<(), RegistryError> {
        for (name, value) in self.fields() {
            if let Some(v) = value
                && v.chars().count() > 500
            {
                return Err(RegistryError::Invalid(format!(
                    "{name} must be at most 500 characters"
                )));
            }
        }
        let one_of = |name: &str, v: &Option<String>, allowed: &[&str]| match v.as_deref() {
            Some(x) if !x.is_empty() && !allowed.contains(&x) => Err(RegistryError::Invalid(
                format!("{name} must be one of {}", allowed.join(", ")),
            )),
            _ => Ok(()),
        };
        one_of(
            "gender",
            &self.gender,
            &["male", "female", "other", "unknown"],
        )?;
        one_of(
            "contact_preference",
            &self.contact_preference,
            &["phone", "sms", "email", "post"],
        )?;
        if let Some(e) = self.email.as_deref()
            && !e.is_empty()
            && (!e.contains('@') || e.contains(char::is_whitespace))
        {
            return Err(RegistryError::Invalid(format!(
                "email {e:?} is not an e-mail address"
            )));
        }
        if let Some(t) = self.care_team.as_deref()
            && !t.is_empty()
            && PatientId::parse(t).is_err()
        {
            return Err(RegistryError::Invalid(
                "care_team must be 1 to 64 characters of A-Z a-z 0-9 . _ -".into(),
            ));
        }
        if let Some(z) = self.timezone.as_deref()
            && !z.is_empty()
        {
            crate::domain::zone::Zone::parse(z)
                .map_err(|e| RegistryError::Invalid(e.to_string()))?;
        }
        Ok(())
    }

    /// `self` with the fields `update` gives; an empty string clears.
    pub fn merged(mut self, update: PatientDetails) -> PatientDetails {
        let set = |old: &mut Option<String>, new: Option<String>| {
            if let Some(n) = new {
                *old = (!n.is_empty()).then_some(n);
            }
        };
        set(&mut self.gender, update.gender);
        set(&mut self.phone, update.phone);
        set(&mut self.email, update.email);
        set(&mut self.address, update.address);
        set(&mut self.care_team, update.care_team);
        set(&mut self.contact_preference, update.contact_preference);
        set(&mut self.contact_notes, update.contact_notes);
        set(&mut self.timezone, update.timezone);
        self
    }

    /// The details as the `details` column keeps them: the care team has its own column.
    pub fn without_team(mut self) -> PatientDetails {
        self.care_team = None;
        self
    }

    pub fn to_json(&self) -> Option<String> {
        let cleaned = PatientDetails::default().merged(self.clone());
        (cleaned != PatientDetails::default())
            .then(|| serde_json::to_string(&cleaned).unwrap_or_default())
    }
}

pub(super) fn check_name(name: &str) -> Result<String, RegistryError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(RegistryError::Invalid(
            "name must be 1 to 200 characters".into(),
        ));
    }
    Ok(name.to_owned())
}

pub(super) fn check_birth_date(d: &str) -> Result<(), RegistryError> {
    if valid_date(d) {
        Ok(())
    } else {
        Err(RegistryError::Invalid(format!(
            "birth_date {d:?} is not a date like 1950-04-23"
        )))
    }
}

/// Checks a calendar date `YYYY-MM-DD`.
fn valid_date(s: &str) -> bool {
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    s.len() == 10 && time::Date::parse(s, &fmt).is_ok()
}

/// A patient to create, checked (the MRN trimmed, the details on a team).
#[derive(Debug, Clone, PartialEq)]
pub struct NewPatient {
    pub id: String,
    pub name: String,
    pub birth_date: Option<String>,
    pub mrn: Option<String>,
    pub created_ms: i64,
    /// With the care team set.
    pub details: PatientDetails,
}

/// A change to a patient, checked: `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PatientChange {
    pub name: Option<String>,
    pub birth_date: Option<String>,
    /// `Some(None)` clears the MRN.
    pub mrn: Option<Option<String>>,
    /// Merged into the stored details ([`PatientDetails::merged`]); the care team can be
    /// changed, not cleared.
    pub details: PatientDetails,
}

/// The audit lines of a change to a patient, written in its transaction: `change` always,
/// `mrn` (its own line, since the MRN decides where the patient's data goes outside Vigil)
/// only when the change sets or changes the MRN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatientAudit {
    pub change: NewAuditLine,
    pub mrn: NewAuditLine,
}

/// What an update did: the patient as it now is, and whether its MRN or its care team changed.
#[derive(Debug, Clone)]
pub struct PatientUpdated {
    pub patient: Patient,
    pub mrn_changed: bool,
    pub team_changed: bool,
}

/// A patient's row as a backend reads it; [`PatientRow::into_patient`] makes the API's view.
#[derive(Debug, Clone, Default)]
pub struct PatientRow {
    pub id: String,
    pub name: String,
    pub birth_date: Option<String>,
    pub created_ms: i64,
    /// The details as JSON, without the care team.
    pub details: Option<String>,
    pub mrn: Option<String>,
    pub care_team: Option<String>,
    /// Set while the patient is discharged.
    pub discharge: Option<super::discharge::StoredDischarge>,
}

impl PatientRow {
    /// The patient as the API shows it; `None` for a row whose id is not a patient id (it was
    /// written by hand), and empty details for details that do not parse.
    pub fn into_patient(self) -> Option<Patient> {
        let mut details: PatientDetails = self
            .details
            .and_then(|d| serde_json::from_str(&d).ok())
            .unwrap_or_default();
        details.care_team = self.care_team;
        let id = PatientId::parse(&self.id).ok()?;
        Some(Patient {
            id,
            name: self.name,
            birth_date: self.birth_date,
            mrn: self.mrn,
            created_at: format_rfc3339(self.created_ms),
            details,
            status: if self.discharge.is_some() {
                "discharged"
            } else {
                "active"
            },
            discharged: self.discharge.as_ref().map(|d| d.view()),
        })
    }
}

/// What `change` makes of the stored `row`: the new row, whether the MRN changed and whether
/// the care team did. Both backends merge with it inside the transaction that holds the row.
pub fn apply(row: &PatientRow, change: &PatientChange) -> (PatientRow, bool, bool) {
    let mut details: PatientDetails = row
        .details
        .as_deref()
        .and_then(|d| serde_json::from_str(d).ok())
        .unwrap_or_default();
    details.care_team = row.care_team.clone();
    let merged = details.merged(change.details.clone());
    let mrn_changed = change.mrn.as_ref().is_some_and(|m| *m != row.mrn);
    let team_changed = merged.care_team != row.care_team;
    let new = PatientRow {
        id: row.id.clone(),
        name: change.name.clone().unwrap_or_else(|| row.name.clone()),
        birth_date: change.birth_date.clone().or_else(|| row.birth_date.clone()),
        created_ms: row.created_ms,
        mrn: change.mrn.clone().unwrap_or_else(|| row.mrn.clone()),
        care_team: merged.care_team.clone().or_else(|| row.care_team.clone()),
        details: merged.without_team().to_json(),
        discharge: row.discharge.clone(),
    };
    (new, mrn_changed, team_changed)
}

/// What a discharge or readmission ([`super::discharge`]) did: the patient as they now are, the alerts it resolved
/// and the events written (to be announced once committed).
#[derive(Debug, Clone)]
pub struct Discharged {
    pub patient: Patient,
    pub resolved: Vec<super::record::Alert>,
    pub events: Vec<super::record::Event>,
}

/// The refusal of a patient's care team that names no team, in the words the API answers with.
pub(crate) fn unknown_care_team(team: &str) -> RegistryError {
    RegistryError::Invalid(format!(
        "care team {team:?} does not exist; create it first (POST /api/v1/teams)"
    ))
}
