//! Video visits as the registry stores them ([`super::storage::VisitStore`]): a visit's times,
//! and the entries its start and end put on the patient's timeline. The rules here are pure, so
//! both backends write the same entries; the visit as the API shows it (its status at a given
//! time) is the video module's.
//!
//! A visit starts once and ends once: starting a started or ended visit, or ending an ended
//! one, changes nothing and writes nothing.

use serde_json::json;

use super::error::RegistryError;
use super::time_log::{MAX_MINUTES, TimeEntry, random_id};
use crate::domain::format_rfc3339;
use crate::domain::zone::Zone;

/// A visit to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewVisit {
    /// `vis_` and 128 random bits in hex.
    pub id: String,
    pub patient_id: String,
    /// Who created it.
    pub created_by: String,
    pub created_ms: i64,
    /// Until when its join links work.
    pub expires_ms: i64,
}

/// A visit as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredVisit {
    pub id: String,
    pub patient_id: String,
    pub created_by: String,
    pub created_ms: i64,
    pub expires_ms: i64,
    /// When the clinician first admitted the patient.
    pub started_ms: Option<i64>,
    pub ended_ms: Option<i64>,
    pub ended_by: Option<String>,
}

/// The instance a visit's call lives on (its relay room), among instances sharing a database:
/// the first to let a participant in hosts it; the others pass their participants' signalling
/// on to it (`web::signal_relay`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VisitHost {
    /// The instance's id (its heartbeat lease is `instance:<id>`).
    pub instance: String,
    /// Where the other instances reach it (`http.internal_url`); empty when it gave none.
    pub url: String,
}

/// An entry on a patient's timeline, written in the same transaction as the change it records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineEntry {
    pub patient_id: String,
    pub time_ms: i64,
    /// `visit.started` or `visit.ended`.
    pub kind: &'static str,
    /// A JSON object, as text.
    pub data: String,
}

impl StoredVisit {
    /// Whether starting it now would start it: it has neither started nor ended.
    pub fn can_start(&self) -> bool {
        self.started_ms.is_none() && self.ended_ms.is_none()
    }

    /// Whether ending it now would end it: it has not ended.
    pub fn can_end(&self) -> bool {
        self.ended_ms.is_none()
    }

    /// The timeline entry of its start by `by` at `now_ms`.
    pub fn started_entry(&self, by: &str, now_ms: i64) -> TimelineEntry {
        TimelineEntry {
            patient_id: self.patient_id.clone(),
            time_ms: now_ms,
            kind: "visit.started",
            data: json!({"visit_id": self.id, "by": by}).to_string(),
        }
    }

    /// The care team's time a visit ending at `now_ms` adds by itself: its duration in whole
    /// minutes (rounded, 1 to [`MAX_MINUTES`]) as interactive `video` time of the clinician who
    /// created it, dated the day it started in `zone` (docs/programme.md). `None` when nobody
    /// was admitted (no interactive communication took place) or it lasted under 30 seconds.
    pub fn time_entry(&self, now_ms: i64, zone: &Zone) -> Result<Option<TimeEntry>, RegistryError> {
        let Some(started) = self.started_ms else {
            return Ok(None);
        };
        let held_ms = (now_ms - started).max(0);
        if held_ms < 30_000 {
            return Ok(None);
        }
        let minutes = u32::try_from((held_ms + 30_000) / 60_000)
            .unwrap_or(MAX_MINUTES)
            .clamp(1, MAX_MINUTES);
        let Some(day) = zone.day_of(started) else {
            return Ok(None);
        };
        Ok(Some(TimeEntry {
            id: random_id("te_")?,
            patient_id: self.patient_id.clone(),
            date: day.to_string(),
            minutes,
            activity: "video".into(),
            interactive: true,
            note: Some(format!("video visit {} (logged by Vigil)", self.id)),
            user: self.created_by.clone(),
            created_at: format_rfc3339(now_ms),
            updated_by: None,
            updated_at: None,
        }))
    }

    /// The timeline entry of its end by `by` at `now_ms`: with its duration in whole seconds
    /// when it had started (`held`), `null` when nobody was ever admitted.
    pub fn ended_entry(&self, by: &str, now_ms: i64) -> TimelineEntry {
        let duration_s = self.started_ms.map(|s| (now_ms - s).max(0) / 1000);
        TimelineEntry {
            patient_id: self.patient_id.clone(),
            time_ms: now_ms,
            kind: "visit.ended",
            data: json!({"visit_id": self.id, "by": by, "duration_s": duration_s,
                         "held": self.started_ms.is_some()})
            .to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn visit(started_ms: Option<i64>, ended_ms: Option<i64>) -> StoredVisit {
        StoredVisit {
            id: "vis_1".into(),
            patient_id: "p1".into(),
            created_by: "nina".into(),
            created_ms: 0,
            expires_ms: 1_000,
            started_ms,
            ended_ms,
            ended_by: ended_ms.map(|_| "nina".into()),
        }
    }

    #[test]
    fn a_visit_starts_only_when_fresh_and_ends_only_once() {
        assert!(visit(None, None).can_start());
        assert!(!visit(Some(1), None).can_start());
        assert!(
            !visit(None, Some(1)).can_start(),
            "an ended visit never starts"
        );
        assert!(visit(Some(1), None).can_end());
        assert!(visit(None, None).can_end());
        assert!(!visit(Some(1), Some(2)).can_end());
    }

    #[test]
    fn the_end_entry_has_the_duration_of_a_held_visit_only() {
        let held = visit(Some(10_000), None).ended_entry("nina", 310_999);
        let v: serde_json::Value = serde_json::from_str(&held.data).unwrap();
        assert_eq!((held.kind, held.time_ms), ("visit.ended", 310_999));
        assert_eq!(v["duration_s"], 300);
        assert_eq!(v["held"], true);
        let never = visit(None, None).ended_entry("nina", 5_000);
        let v: serde_json::Value = serde_json::from_str(&never.data).unwrap();
        assert_eq!(
            (v["duration_s"].clone(), v["held"].clone()),
            (json!(null), json!(false))
        );
        let started = visit(None, None).started_entry("nina", 7);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&started.data).unwrap(),
            json!({"visit_id": "vis_1", "by": "nina"})
        );
    }
}
