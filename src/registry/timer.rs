//! The care-management timer ([`super::storage::ProgrammeStore`]): one running timer per user,
//! on one patient, kept in the registry so it survives a reload, another browser and a restart;
//! stopping it logs its minutes as a time entry in the same transaction (docs/programme.md).
//!
//! The rules here are pure, so that both backends write the same entry.

use serde::{Deserialize, Serialize};

use super::error::RegistryError;
use super::time_log::{self, MAX_MINUTES, TimeEntry, random_id};
use crate::domain::zone::Zone;
use crate::domain::{format_rfc3339, parse_rfc3339};

/// A running timer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Timer {
    pub user: String,
    pub patient_id: String,
    /// The kind of work being timed (one of the time log's activities).
    pub activity: String,
    /// When it started (RFC 3339).
    pub started_at: String,
}

/// A timer as a client starts it (`POST /patients/{id}/timer`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimerStart {
    /// `review` when absent.
    #[serde(default)]
    pub activity: Option<String>,
}

/// How a client stops it (`POST /timer/stop`): what the entry says.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimerStop {
    /// The timer's activity when absent.
    #[serde(default)]
    pub activity: Option<String>,
    #[serde(default)]
    pub interactive: bool,
    #[serde(default)]
    pub note: Option<String>,
}

/// The refusal of a second running timer.
pub fn timer_running(patient: &str) -> RegistryError {
    RegistryError::Exists(format!(
        "a running timer (on patient {patient}: stop it first)"
    ))
}

/// `a`, else `default`, checked as the time log checks an activity.
fn activity(a: Option<&str>, default: &str) -> Result<String, RegistryError> {
    time_log::activity(a.unwrap_or(default))
}

impl TimerStart {
    /// The timer `user` starts on `patient` at `now_ms`, checked.
    pub fn checked(self, user: &str, patient: &str, now_ms: i64) -> Result<Timer, RegistryError> {
        Ok(Timer {
            user: user.to_owned(),
            patient_id: patient.to_owned(),
            activity: activity(self.activity.as_deref(), "review")?,
            started_at: format_rfc3339(now_ms),
        })
    }
}

impl TimerStop {
    /// Checks what the client sent (before anything is stopped).
    pub fn check(&self) -> Result<(), RegistryError> {
        if let Some(a) = &self.activity {
            time_log::activity(a)?;
        }
        time_log::note(self.note.clone())?;
        Ok(())
    }
}

impl Timer {
    pub fn started_ms(&self) -> i64 {
        parse_rfc3339(&self.started_at).unwrap_or_default()
    }

    /// The time entry the timer, stopped at `now_ms` as `stop` says, logs: its minutes rounded
    /// (at least 1, at most [`MAX_MINUTES`]: a timer left running overnight logs a working day,
    /// to be corrected), dated the day it started in `zone`, by its user.
    pub fn entry(
        &self,
        now_ms: i64,
        stop: &TimerStop,
        zone: &Zone,
    ) -> Result<TimeEntry, RegistryError> {
        let ran_ms = (now_ms - self.started_ms()).max(0);
        let minutes = u32::try_from((ran_ms + 30_000) / 60_000)
            .unwrap_or(MAX_MINUTES)
            .clamp(1, MAX_MINUTES);
        let date = zone
            .day_of(self.started_ms())
            .map(|d| d.to_string())
            .ok_or_else(|| RegistryError::Invalid("the timer's start is out of range".into()))?;
        let note = time_log::note(stop.note.clone())?;
        Ok(TimeEntry {
            id: random_id("te_")?,
            patient_id: self.patient_id.clone(),
            date,
            minutes,
            activity: activity(stop.activity.as_deref(), &self.activity)?,
            interactive: stop.interactive,
            note,
            user: self.user.clone(),
            created_at: format_rfc3339(now_ms),
            updated_by: None,
            updated_at: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopped_timer_logs_its_rounded_minutes_on_the_day_it_started() {
        let t = TimerStart {
            activity: Some("Call".into()),
        }
        .checked("nina", "p-1", 1_000_000)
        .unwrap();
        assert_eq!(t.activity, "call");
        let stop = TimerStop {
            interactive: true,
            note: Some("  titrated  ".into()),
            ..TimerStop::default()
        };
        let e = t
            .entry(1_000_000 + 14 * 60_000 + 31_000, &stop, &Zone::utc())
            .unwrap();
        assert_eq!((e.minutes, e.date.as_str()), (15, "1970-01-01"));
        assert_eq!((e.activity.as_str(), e.interactive), ("call", true));
        assert_eq!(e.note.as_deref(), Some("titrated"));
        assert_eq!(e.user, "nina");
        let short = t
            .entry(1_000_000 + 5_000, &TimerStop::default(), &Zone::utc())
            .unwrap();
        assert_eq!(short.minutes, 1, "a started timer logs at least a minute");
        let long = t
            .entry(1_000_000 + 86_400_000, &TimerStop::default(), &Zone::utc())
            .unwrap();
        assert_eq!(long.minutes, MAX_MINUTES);
    }

    #[test]
    fn bad_activities_and_notes_are_refused() {
        let e = TimerStart {
            activity: Some("gardening".into()),
        }
        .checked("nina", "p-1", 0)
        .unwrap_err();
        assert!(
            e.to_string().contains("review, call, video, coordination"),
            "{e}"
        );
        let stop = TimerStop {
            note: Some("x".repeat(2001)),
            ..TimerStop::default()
        };
        assert!(stop.check().is_err());
    }
}
