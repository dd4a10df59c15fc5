//! The care team's time with a patient, as the registry stores it
//! ([`super::storage::ProgrammeStore`]): minutes of care-management work on a date, what kind
//! (data review, phone call, video visit, care coordination), whether it was a real-time
//! interactive communication with the patient, and a note. Remote-monitoring management is
//! billed on these minutes (docs/programme.md), so each entry keeps who logged it and when, and
//! every entry is audited.
//!
//! The checks here are pure, so that both backends store the same thing.

use serde::{Deserialize, Serialize};

use super::error::RegistryError;
use crate::domain::format_rfc3339;

/// The kinds of work logged: data review, a phone call, a video visit, care coordination.
pub const ACTIVITIES: [&str; 4] = ["review", "call", "video", "coordination"];
/// Minutes one entry may hold at most (a working day).
pub const MAX_MINUTES: u32 = 600;
/// Characters a note may hold at most.
pub const MAX_NOTE_CHARS: usize = 2_000;
/// How far back an entry's date may be, in days (a month's billing is closed after that).
pub const MAX_AGE_DAYS: i64 = 366;

/// A time entry as a client posts it (`POST /patients/{id}/time`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeBody {
    pub date: String,
    pub minutes: u32,
    pub activity: String,
    pub interactive: bool,
    #[serde(default)]
    pub note: Option<String>,
}

/// A time entry as stored and shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TimeEntry {
    /// `te_` and 128 random bits in hex.
    pub id: String,
    pub patient_id: String,
    /// `YYYY-MM-DD`: the day the work was done.
    pub date: String,
    pub minutes: u32,
    pub activity: String,
    pub interactive: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Who logged it.
    pub user: String,
    /// When it was logged (RFC 3339).
    pub created_at: String,
    /// Who last changed it, and when (RFC 3339); absent while unchanged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
}

/// A change of a time entry (`PATCH /patients/{id}/time/{entry}`): the fields given replace the
/// entry's (a `note` of `""` clears it).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeChange {
    pub date: Option<String>,
    pub minutes: Option<u32>,
    pub activity: Option<String>,
    pub interactive: Option<bool>,
    pub note: Option<String>,
}

impl TimeEntry {
    /// The version a change was read at: when it was last written, in milliseconds.
    pub fn version_ms(&self) -> i64 {
        crate::domain::parse_rfc3339(self.updated_at.as_deref().unwrap_or(&self.created_at))
            .unwrap_or_default()
    }

    /// This entry with `change` applied by `by` at `now_ms`, checked as a new entry is (its
    /// author and creation kept).
    pub fn changed(
        &self,
        change: TimeChange,
        by: &str,
        now_ms: i64,
    ) -> Result<TimeEntry, RegistryError> {
        let body = TimeBody {
            date: change.date.unwrap_or_else(|| self.date.clone()),
            minutes: change.minutes.unwrap_or(self.minutes),
            activity: change.activity.unwrap_or_else(|| self.activity.clone()),
            interactive: change.interactive.unwrap_or(self.interactive),
            note: change.note.or_else(|| self.note.clone()),
        };
        let checked = body.checked(self.id.clone(), &self.patient_id, &self.user, now_ms)?;
        Ok(TimeEntry {
            created_at: self.created_at.clone(),
            updated_by: Some(by.to_owned()),
            updated_at: Some(format_rfc3339(now_ms)),
            ..checked
        })
    }
}

impl TimeBody {
    /// The entry this body describes, checked, logged by `user` at `now_ms` with id `id`: a
    /// calendar date neither after today (UTC, give or take a day for the clinic's zone) nor
    /// more than [`MAX_AGE_DAYS`] back; 1 to [`MAX_MINUTES`] minutes; one of [`ACTIVITIES`];
    /// a note of at most 2,000 characters.
    pub fn checked(
        self,
        id: String,
        patient: &str,
        user: &str,
        now_ms: i64,
    ) -> Result<TimeEntry, RegistryError> {
        let bad = |m: String| Err(RegistryError::Invalid(m));
        let day = recent_date(&self.date, now_ms)?;
        if !(1..=MAX_MINUTES).contains(&self.minutes) {
            return bad(format!("minutes must be 1 to {MAX_MINUTES}"));
        }
        let activity = activity(&self.activity)?;
        let note = note(self.note)?;
        Ok(TimeEntry {
            id,
            patient_id: patient.to_owned(),
            date: day.to_string(),
            minutes: self.minutes,
            activity,
            interactive: self.interactive,
            note,
            user: user.to_owned(),
            created_at: format_rfc3339(now_ms),
            updated_by: None,
            updated_at: None,
        })
    }
}

/// `a` as one of [`ACTIVITIES`] (case and surrounding spaces ignored).
pub(super) fn activity(a: &str) -> Result<String, RegistryError> {
    let activity = a.trim().to_ascii_lowercase();
    if !ACTIVITIES.contains(&activity.as_str()) {
        return Err(RegistryError::Invalid(format!(
            "activity {a:?} must be one of {}",
            ACTIVITIES.join(", ")
        )));
    }
    Ok(activity)
}

/// A note trimmed, `None` when empty, of at most [`MAX_NOTE_CHARS`] characters.
pub(super) fn note(n: Option<String>) -> Result<Option<String>, RegistryError> {
    let note = n.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty());
    if note
        .as_ref()
        .is_some_and(|n| n.chars().count() > MAX_NOTE_CHARS)
    {
        return Err(RegistryError::Invalid(format!(
            "note must be at most {MAX_NOTE_CHARS} characters"
        )));
    }
    Ok(note)
}

/// `date` (`YYYY-MM-DD`) checked as the day some care work was done: neither after today (UTC,
/// give or take a day for the clinic's zone) nor more than [`MAX_AGE_DAYS`] back.
pub(super) fn recent_date(date: &str, now_ms: i64) -> Result<time::Date, RegistryError> {
    let bad = |m: String| Err(RegistryError::Invalid(m));
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    let date = date.trim();
    let Ok(day) = time::Date::parse(date, &fmt) else {
        return bad(format!("date {date:?} is not a date like 2026-11-02"));
    };
    let today = time::OffsetDateTime::from_unix_timestamp(now_ms.div_euclid(1000))
        .map(|t| t.date())
        .unwrap_or(day);
    if (day - today).whole_days() > 1 {
        return bad(format!("date {date} is in the future"));
    }
    if (today - day).whole_days() > MAX_AGE_DAYS {
        return bad(format!("date {date} is more than {MAX_AGE_DAYS} days ago"));
    }
    Ok(day)
}

/// A new time entry's id: `te_` and 128 random bits in hex.
pub fn new_entry_id() -> Result<String, RegistryError> {
    random_id("te_")
}

/// `prefix` and 128 random bits in hex.
pub(super) fn random_id(prefix: &str) -> Result<String, RegistryError> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| RegistryError::Db(format!("no randomness: {e}")))?;
    Ok(format!(
        "{prefix}{}",
        b.iter().map(|x| format!("{x:02x}")).collect::<String>()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-15T12:00:00Z.
    const NOW: i64 = 1_794_744_000_000;

    fn body(v: serde_json::Value) -> TimeBody {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn an_entry_is_checked_with_reasons() {
        let ok = serde_json::json!({"date": "2026-11-14", "minutes": 25, "activity": "Call",
            "interactive": true, "note": "  titrated diuretic  "});
        let e = body(ok.clone())
            .checked("te_1".into(), "p1", "nina", NOW)
            .unwrap();
        assert_eq!(
            (e.activity.as_str(), e.note.as_deref(), e.minutes),
            ("call", Some("titrated diuretic"), 25)
        );
        for (field, value, why) in [
            ("date", serde_json::json!("2026-11-31"), "not a date"),
            ("date", serde_json::json!("2026-11-20"), "future"),
            ("date", serde_json::json!("2025-01-01"), "days ago"),
            ("minutes", serde_json::json!(0), "minutes"),
            ("minutes", serde_json::json!(601), "minutes"),
            (
                "activity",
                serde_json::json!("lunch"),
                "review, call, video, coordination",
            ),
        ] {
            let mut v = ok.clone();
            v[field] = value;
            let e = body(v)
                .checked("te_1".into(), "p1", "nina", NOW)
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{field}: {e}");
        }
        // Tomorrow is allowed (the clinic's zone may be ahead of UTC).
        let mut v = ok;
        v["date"] = "2026-11-16".into();
        assert!(body(v).checked("te_1".into(), "p1", "nina", NOW).is_ok());
    }

    #[test]
    fn a_change_keeps_the_author_and_is_checked_as_new() {
        let e = body(
            serde_json::json!({"date": "2026-11-14", "minutes": 25, "activity": "call",
            "interactive": true, "note": "n"}),
        )
        .checked("te_1".into(), "p1", "nina", NOW)
        .unwrap();
        let c = e
            .changed(
                TimeChange {
                    minutes: Some(30),
                    note: Some(String::new()),
                    ..TimeChange::default()
                },
                "admin",
                NOW + 5,
            )
            .unwrap();
        assert_eq!(
            (c.minutes, c.note.as_deref(), c.user.as_str()),
            (30, None, "nina")
        );
        assert_eq!(c.created_at, e.created_at);
        assert_eq!(c.updated_by.as_deref(), Some("admin"));
        assert_eq!(c.version_ms(), NOW + 5);
        let bad = TimeChange {
            activity: Some("lunch".into()),
            ..TimeChange::default()
        };
        assert!(e.changed(bad, "admin", NOW).is_err());
    }

    #[test]
    fn ids_have_their_form() {
        let id = new_entry_id().unwrap();
        assert!(id.starts_with("te_") && id.len() == 35, "{id}");
    }
}
