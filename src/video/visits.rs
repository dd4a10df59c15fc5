//! Video visits as the API shows them, and the registry's methods for them. The registry
//! stores them ([`crate::registry::storage::VisitStore`]: the `visits` table, and `visit.started`
//! and `visit.ended` with the duration on the patient's timeline, each written with the change
//! it records); this module mints their ids and says what state a visit is in at a given time.

use serde::Serialize;

use crate::domain::zone::Zone;
use crate::domain::{PatientId, format_rfc3339};
use crate::registry::audit::NewAuditLine;
use crate::registry::visits::{NewVisit, StoredVisit, VisitHost};
use crate::registry::{Registry, RegistryError};

/// A visit as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Visit {
    pub id: String,
    pub patient_id: String,
    pub created_by: String,
    pub created_at: String,
    /// Until when its join links work.
    pub expires_at: String,
    /// `waiting` (nobody admitted yet), `in_progress`, `ended` or `expired`.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<i64>,
}

/// A new visit id: `vis_` and 128 random bits in hex.
fn new_id() -> Result<String, RegistryError> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| RegistryError::Db(format!("no randomness: {e}")))?;
    Ok(format!(
        "vis_{}",
        b.iter().map(|x| format!("{x:02x}")).collect::<String>()
    ))
}

/// Whether `s` has the form of a visit id.
pub fn is_visit_id(s: &str) -> bool {
    s.len() == 36 && s.starts_with("vis_") && s[4..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// The visit `v` as it stands at `now_ms`.
fn to_visit(v: StoredVisit, now_ms: i64) -> Visit {
    let status = match (v.started_ms, v.ended_ms) {
        (_, Some(_)) => "ended",
        (Some(_), None) => "in_progress",
        (None, None) if now_ms >= v.expires_ms => "expired",
        (None, None) => "waiting",
    };
    Visit {
        id: v.id,
        patient_id: v.patient_id,
        created_by: v.created_by,
        created_at: format_rfc3339(v.created_ms),
        expires_at: format_rfc3339(v.expires_ms),
        status,
        started_at: v.started_ms.map(format_rfc3339),
        ended_at: v.ended_ms.map(format_rfc3339),
        duration_s: v
            .started_ms
            .zip(v.ended_ms)
            .map(|(s, e)| (e - s).max(0) / 1000),
    }
}

impl Registry {
    /// Creates a visit whose links work until `expires_ms`, with the audit line `audit` makes
    /// from the new visit's id, written together.
    pub async fn create_visit(
        &self,
        patient: PatientId,
        by: String,
        now_ms: i64,
        expires_ms: i64,
        audit: impl FnOnce(&str) -> NewAuditLine,
    ) -> Result<Visit, RegistryError> {
        let id = new_id()?;
        let line = audit(&id);
        let new = NewVisit {
            id,
            patient_id: patient.as_str().to_owned(),
            created_by: by,
            created_ms: now_ms,
            expires_ms,
        };
        let v = self.storage().create_visit(new, line).await?;
        Ok(to_visit(v, now_ms))
    }

    /// One visit.
    pub async fn visit(&self, id: String, now_ms: i64) -> Result<Option<Visit>, RegistryError> {
        let v = self.storage().visit(id).await?;
        Ok(v.map(|v| to_visit(v, now_ms)))
    }

    /// Marks a visit started (the clinician admitted the patient) and writes `visit.started`
    /// on the timeline; starting a started visit changes nothing.
    pub async fn start_visit(
        &self,
        id: String,
        by: String,
        now_ms: i64,
    ) -> Result<Visit, RegistryError> {
        let v = self.storage().start_visit(id, by, now_ms).await?;
        Ok(to_visit(v, now_ms))
    }

    /// Hosts the visit's call on this instance (the others reach it at `url`) unless another
    /// live instance hosts it; the host, `None` when there is no visit `id`.
    pub async fn host_visit(
        &self,
        id: String,
        url: String,
        now_ms: i64,
    ) -> Result<Option<VisitHost>, RegistryError> {
        let here = VisitHost {
            instance: self.instance_id().to_owned(),
            url,
        };
        self.storage().host_visit(id, here, now_ms).await
    }

    /// Ends a visit and writes `visit.ended` (with its duration when it had started) and the
    /// care team's time it adds (dated in `zone`); ending an ended visit changes nothing.
    /// `audit`, when given, is written with it, ended before or not.
    pub async fn end_visit(
        &self,
        id: String,
        by: String,
        now_ms: i64,
        audit: Option<NewAuditLine>,
        zone: &Zone,
    ) -> Result<Visit, RegistryError> {
        let v = self
            .storage()
            .end_visit(id, by, now_ms, audit, zone.clone())
            .await?;
        Ok(to_visit(v, now_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{PatientDetails, Profiles};

    fn created(id: &str) -> NewAuditLine {
        NewAuditLine {
            time_ms: 1_000,
            actor: "nina".into(),
            action: "visit.create".into(),
            patient_id: Some("p1".into()),
            target: format!("visit/{id}"),
            remote: "127.0.0.1".into(),
        }
    }

    #[tokio::test]
    async fn a_visit_starts_once_ends_once_and_both_land_on_the_timeline() {
        let dir = tempfile::tempdir().unwrap();
        let r = Registry::open(dir.path(), Profiles::built_in().unwrap())
            .await
            .unwrap();
        let p = PatientId::parse("p1").unwrap();
        r.create_patient(
            p.clone(),
            "Ada".into(),
            None,
            None,
            PatientDetails::default(),
            0,
            None,
        )
        .await
        .unwrap();
        let v = r
            .create_visit(p.clone(), "nina".into(), 1_000, 3_601_000, created)
            .await
            .unwrap();
        assert!(is_visit_id(&v.id), "{}", v.id);
        assert_eq!(v.status, "waiting");
        assert_eq!(
            r.visit(v.id.clone(), 3_601_000)
                .await
                .unwrap()
                .unwrap()
                .status,
            "expired",
            "links past their expiry, nobody admitted"
        );
        let s = r
            .start_visit(v.id.clone(), "nina".into(), 10_000)
            .await
            .unwrap();
        assert_eq!(s.status, "in_progress");
        r.start_visit(v.id.clone(), "nina".into(), 20_000)
            .await
            .unwrap();
        let e = r
            .end_visit(v.id.clone(), "nina".into(), 310_000, None, &Zone::utc())
            .await
            .unwrap();
        assert_eq!((e.status, e.duration_s), ("ended", Some(300)));
        let again = r
            .end_visit(v.id.clone(), "nina".into(), 999_000, None, &Zone::utc())
            .await
            .unwrap();
        assert_eq!(again, e, "ending twice changes nothing");
        let kinds: Vec<String> = r
            .timeline(p.clone(), i64::MAX, 100)
            .await
            .unwrap()
            .iter()
            .filter_map(|t| t["kind"].as_str().map(str::to_owned))
            .collect();
        assert_eq!(
            kinds.iter().filter(|k| k.starts_with("visit.")).count(),
            2,
            "{kinds:?}"
        );
        assert!(
            r.create_visit(
                PatientId::parse("nobody").unwrap(),
                "x".into(),
                0,
                1,
                created
            )
            .await
            .is_err()
        );
    }
}
