//! A patient's enrollment in a remote-monitoring programme, as the registry stores it
//! ([`super::storage::ProgrammeStore`]): the programme, the episode's start and end, the
//! practitioner responsible for billing, the diagnoses (ICD-10 codes as entered) and the
//! patient's consent to monitoring (how it was given, who recorded it, when). Programmes are a
//! list admins keep (four are there from the start: [`BUILT_IN`]).
//!
//! An enrollment is an episode, named by its start date: putting an enrollment with the start of
//! an existing episode changes that episode; a new start opens a new episode, which must not
//! overlap another. Every change writes `enrollment.update` to the audit trail and an
//! `enrollment` entry to the patient's timeline in the same transaction.
//!
//! The checks here are pure, so that both backends store the same thing.

use serde::{Deserialize, Serialize};

use super::error::RegistryError;
use crate::domain::{format_rfc3339, parse_rfc3339};

/// The programmes every registry starts with: (id, name). Admins add more.
pub const BUILT_IN: [(&str, &str); 4] = [
    ("hypertension", "Hypertension"),
    ("heart-failure", "Heart failure"),
    ("diabetes", "Diabetes"),
    ("copd", "COPD"),
];

/// A monitoring programme.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Programme {
    pub id: String,
    pub name: String,
}

impl Programme {
    /// A programme to add, checked: an id of 1 to 40 lowercase letters, digits and `-`, and a
    /// name of 1 to 100 characters.
    pub fn new(id: &str, name: &str) -> Result<Programme, RegistryError> {
        let ok_id = !id.is_empty()
            && id.len() <= 40
            && id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !ok_id {
            return Err(RegistryError::Invalid(format!(
                "programme id {id:?} must be 1 to 40 lowercase letters, digits and '-' (like heart-failure)"
            )));
        }
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(RegistryError::Invalid(
                "programme name must be 1 to 100 characters".into(),
            ));
        }
        Ok(Programme {
            id: id.to_owned(),
            name: name.to_owned(),
        })
    }
}

/// How the patient consented to monitoring.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Consent {
    /// `verbal`, `written` or `electronic`.
    pub method: String,
    /// Who recorded it.
    pub by: String,
    /// When it was given (RFC 3339).
    pub at: String,
}

/// An enrollment as a client puts it (`PUT /patients/{id}/enrollment`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollmentBody {
    pub program: String,
    pub start: String,
    #[serde(default)]
    pub end: Option<String>,
    #[serde(default)]
    pub practitioner: Option<String>,
    #[serde(default)]
    pub diagnoses: Vec<String>,
    pub consent: Consent,
}

/// An enrollment episode as stored and shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Enrollment {
    pub patient_id: String,
    pub program: String,
    /// `YYYY-MM-DD`.
    pub start: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub practitioner: Option<String>,
    pub diagnoses: Vec<String>,
    pub consent: Consent,
    /// Who last changed it, and when (RFC 3339).
    pub updated_by: String,
    pub updated_at: String,
}

/// The consent methods accepted.
const CONSENT_METHODS: [&str; 3] = ["verbal", "written", "electronic"];
/// Diagnoses on one enrollment at most.
const MAX_DIAGNOSES: usize = 12;

impl EnrollmentBody {
    /// The enrollment of `patient` this body describes, checked, as changed by `by` at
    /// `now_ms`: dates are calendar dates with the end (if any) not before the start; the
    /// diagnoses look like ICD-10 codes ([`icd10_like`]); the consent's method is one of
    /// `verbal`, `written`, `electronic`, its time is RFC 3339 and not in the future.
    pub fn checked(
        self,
        patient: &str,
        by: &str,
        now_ms: i64,
    ) -> Result<Enrollment, RegistryError> {
        let bad = |m: String| Err(RegistryError::Invalid(m));
        let program = self.program.trim().to_owned();
        if program.is_empty() {
            return bad("program is needed (GET /api/v1/programs lists them)".into());
        }
        let start = date(&self.start, "start")?;
        let end = match self.end.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(e) => Some(date(e, "end")?),
        };
        if end.is_some_and(|e| e < start) {
            return bad(format!(
                "end {} is before start {}",
                self.end.unwrap_or_default(),
                self.start
            ));
        }
        let practitioner = self
            .practitioner
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty());
        if practitioner
            .as_ref()
            .is_some_and(|p| p.chars().count() > 200)
        {
            return bad("practitioner must be at most 200 characters".into());
        }
        if self.diagnoses.len() > MAX_DIAGNOSES {
            return bad(format!("at most {MAX_DIAGNOSES} diagnoses"));
        }
        let mut diagnoses = Vec::with_capacity(self.diagnoses.len());
        for d in self.diagnoses {
            let d = d.trim().to_ascii_uppercase();
            if !icd10_like(&d) {
                return bad(format!(
                    "diagnosis {d:?} is not an ICD-10 code like I10, I50.9 or E11.65"
                ));
            }
            if !diagnoses.contains(&d) {
                diagnoses.push(d);
            }
        }
        let method = self.consent.method.trim().to_ascii_lowercase();
        if !CONSENT_METHODS.contains(&method.as_str()) {
            return bad(format!(
                "consent.method {:?} must be one of verbal, written, electronic",
                self.consent.method
            ));
        }
        let consent_by = self.consent.by.trim().to_owned();
        if consent_by.is_empty() || consent_by.chars().count() > 200 {
            return bad("consent.by (who recorded the consent) must be 1 to 200 characters".into());
        }
        let Some(at_ms) = parse_rfc3339(self.consent.at.trim()) else {
            return bad(format!(
                "consent.at {:?} is not an RFC 3339 time like 2026-11-02T09:30:00Z",
                self.consent.at
            ));
        };
        if at_ms > now_ms + 60_000 {
            return bad("consent.at is in the future".into());
        }
        Ok(Enrollment {
            patient_id: patient.to_owned(),
            program,
            start: start.to_string(),
            end: end.map(|e| e.to_string()),
            practitioner,
            diagnoses,
            consent: Consent {
                method,
                by: consent_by,
                at: format_rfc3339(at_ms),
            },
            updated_by: by.to_owned(),
            updated_at: format_rfc3339(now_ms),
        })
    }
}

impl Enrollment {
    /// The consent's time in milliseconds (checked when the enrollment was).
    pub fn consent_ms(&self) -> i64 {
        parse_rfc3339(&self.consent.at).unwrap_or_default()
    }

    /// When it was last changed, in milliseconds.
    pub fn updated_ms(&self) -> i64 {
        parse_rfc3339(&self.updated_at).unwrap_or_default()
    }

    /// Whether its dates overlap `other`'s (an open end runs for ever).
    pub fn overlaps(&self, other: &Enrollment) -> bool {
        let ends_before =
            |a: &Enrollment, b: &Enrollment| a.end.as_ref().is_some_and(|e| *e < b.start);
        !ends_before(self, other) && !ends_before(other, self)
    }

    /// Its timeline entry's data: the episode as it now stands.
    pub fn timeline_data(&self) -> String {
        serde_json::json!({
            "program": self.program,
            "start": self.start,
            "end": self.end,
            "practitioner": self.practitioner,
            "diagnoses": self.diagnoses,
            "consent": self.consent,
            "by": self.updated_by,
        })
        .to_string()
    }
}

/// The refusal of an enrollment in a programme there is not, naming those there are.
pub(crate) fn unknown_programme(id: &str, known: &[Programme]) -> RegistryError {
    let ids: Vec<&str> = known.iter().map(|p| p.id.as_str()).collect();
    RegistryError::Invalid(format!(
        "there is no programme {id:?}; there are: {} (an admin adds one with POST /api/v1/programs)",
        ids.join(", ")
    ))
}

/// The refusal of an episode that would overlap `other`.
pub(crate) fn overlapping(other: &Enrollment) -> RegistryError {
    RegistryError::Exists(format!(
        "an enrollment episode overlapping these dates (from {}{})",
        other.start,
        other
            .end
            .as_deref()
            .map_or_else(|| ", not ended".to_owned(), |e| format!(" to {e}"))
    ))
}

/// A calendar date `YYYY-MM-DD`, named `what` in the refusal.
fn date(s: &str, what: &str) -> Result<time::Date, RegistryError> {
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    let s = s.trim();
    time::Date::parse(s, &fmt)
        .ok()
        .filter(|_| s.len() == 10)
        .ok_or_else(|| {
            RegistryError::Invalid(format!("{what} {s:?} is not a date like 2026-11-02"))
        })
}

/// Whether `code` has the shape of an ICD-10(-CM) code: a letter, two characters (digits, or a
/// digit and a letter as in some chapters), then optionally a dot and one to four letters or
/// digits. The shape only: Vigil does not carry the code set, and a code is kept as entered.
pub fn icd10_like(code: &str) -> bool {
    let b = code.as_bytes();
    if b.len() < 3 || !b[0].is_ascii_uppercase() || !b[1].is_ascii_digit() {
        return false;
    }
    if !b[2].is_ascii_alphanumeric() {
        return false;
    }
    match &b[3..] {
        [] => true,
        [b'.', rest @ ..] => {
            (1..=4).contains(&rest.len()) && rest.iter().all(u8::is_ascii_alphanumeric)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(v: serde_json::Value) -> EnrollmentBody {
        serde_json::from_value(v).unwrap()
    }

    fn good() -> serde_json::Value {
        serde_json::json!({"program": "hypertension", "start": "2026-11-01", "practitioner": "Dr Rao",
            "diagnoses": ["i10", "I10", "E11.65"],
            "consent": {"method": "Verbal", "by": "nurse-ann", "at": "2026-11-01T09:00:00Z"}})
    }

    const NOW: i64 = 1_796_000_000_000;

    #[test]
    fn an_enrollment_is_checked_and_normalised() {
        let e = body(good()).checked("p1", "ann", NOW).unwrap();
        assert_eq!(e.diagnoses, ["I10", "E11.65"], "upper case, once each");
        assert_eq!(e.consent.method, "verbal");
        assert_eq!(e.end, None);
        for (field, value, why) in [
            ("start", serde_json::json!("2026-13-01"), "not a date"),
            ("end", serde_json::json!("2026-10-01"), "before start"),
            ("diagnoses", serde_json::json!(["hypertension"]), "ICD-10"),
            ("program", serde_json::json!(" "), "program is needed"),
        ] {
            let mut v = good();
            v[field] = value;
            let e = body(v).checked("p1", "ann", NOW).unwrap_err().to_string();
            assert!(e.contains(why), "{field}: {e}");
        }
        let mut v = good();
        v["consent"]["method"] = "telepathy".into();
        assert!(body(v).checked("p1", "ann", NOW).is_err());
        let mut v = good();
        v["consent"]["at"] = "2099-01-01T00:00:00Z".into();
        assert!(
            body(v)
                .checked("p1", "ann", NOW)
                .unwrap_err()
                .to_string()
                .contains("future")
        );
    }

    #[test]
    fn icd10_shapes() {
        for ok in ["I10", "I50.9", "E11.65", "J44.1", "Z99.81", "U07.1", "E1A"] {
            assert!(icd10_like(ok), "{ok}");
        }
        for bad in ["", "I1", "10I", "I10.", "I10.12345", "i10", "I10-9", "HTN"] {
            assert!(!icd10_like(bad), "{bad}");
        }
    }

    #[test]
    fn episodes_overlap_unless_one_ends_before_the_other_starts() {
        let e = |start: &str, end: Option<&str>| {
            let mut v = good();
            v["start"] = start.into();
            v["end"] = end.map_or(serde_json::Value::Null, Into::into);
            body(v).checked("p1", "ann", NOW).unwrap()
        };
        assert!(!e("2026-01-01", Some("2026-03-31")).overlaps(&e("2026-04-01", None)));
        assert!(e("2026-01-01", Some("2026-04-01")).overlaps(&e("2026-04-01", None)));
        assert!(e("2026-01-01", None).overlaps(&e("2026-06-01", Some("2026-07-01"))));
    }

    #[test]
    fn programme_ids_and_names_are_checked() {
        assert!(Programme::new("heart-failure", "Heart failure").is_ok());
        assert!(Programme::new("Heart Failure", "x").is_err());
        assert!(Programme::new("copd", " ").is_err());
    }
}
