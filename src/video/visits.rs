//! Visits in the registry (`visits`, schema version 5) and their entries on the patient's
//! timeline (`visit.started`, `visit.ended` with the duration).

use rusqlite::{OptionalExtension, TransactionBehavior, params};
use serde::Serialize;
use serde_json::json;

use crate::domain::{PatientId, format_rfc3339};
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

type Row = (String, String, String, i64, i64, Option<i64>, Option<i64>);

fn to_visit(r: Row, now_ms: i64) -> Visit {
    let (id, patient_id, created_by, created, expires, started, ended) = r;
    let status = match (started, ended) {
        (_, Some(_)) => "ended",
        (Some(_), None) => "in_progress",
        (None, None) if now_ms >= expires => "expired",
        (None, None) => "waiting",
    };
    Visit {
        id,
        patient_id,
        created_by,
        created_at: format_rfc3339(created),
        expires_at: format_rfc3339(expires),
        status,
        started_at: started.map(format_rfc3339),
        ended_at: ended.map(format_rfc3339),
        duration_s: started.zip(ended).map(|(s, e)| (e - s).max(0) / 1000),
    }
}

fn load(c: &rusqlite::Connection, id: &str) -> rusqlite::Result<Option<Row>> {
    c.query_row(
        "SELECT id, patient_id, created_by, created_ms, expires_ms, started_ms, ended_ms
         FROM visits WHERE id = ?1",
        [id],
        |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
            ))
        },
    )
    .optional()
}

fn timeline(
    c: &rusqlite::Connection,
    patient: &str,
    now_ms: i64,
    kind: &str,
    data: serde_json::Value,
) -> rusqlite::Result<()> {
    c.execute(
        "INSERT INTO timeline (patient_id, time_ms, kind, data) VALUES (?1, ?2, ?3, ?4)",
        params![patient, now_ms, kind, data.to_string()],
    )
    .map(|_| ())
}

impl Registry {
    /// Creates a visit whose links work until `expires_ms`.
    pub async fn create_visit(
        &self,
        patient: PatientId,
        by: String,
        now_ms: i64,
        expires_ms: i64,
    ) -> Result<Visit, RegistryError> {
        let id = new_id()?;
        self.with(move |c| {
            let exists: bool = c.query_row(
                "SELECT EXISTS (SELECT 1 FROM patients WHERE id = ?1)",
                [patient.as_str()],
                |r| r.get(0),
            )?;
            if !exists {
                return Err(RegistryError::NotFound(format!("patient {patient}")));
            }
            c.execute(
                "INSERT INTO visits (id, patient_id, created_by, created_ms, expires_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![id, patient.as_str(), by, now_ms, expires_ms],
            )?;
            let row = load(c, &id)?.ok_or_else(|| RegistryError::Db("visit vanished".into()))?;
            Ok(to_visit(row, now_ms))
        })
        .await
    }

    /// One visit.
    pub async fn visit(&self, id: String, now_ms: i64) -> Result<Option<Visit>, RegistryError> {
        self.with(move |c| Ok(load(c, &id)?.map(|r| to_visit(r, now_ms))))
            .await
    }

    /// Marks a visit started (the clinician admitted the patient) and writes `visit.started`
    /// on the timeline; starting a started visit changes nothing.
    pub async fn start_visit(
        &self,
        id: String,
        by: String,
        now_ms: i64,
    ) -> Result<Visit, RegistryError> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let row =
                load(&tx, &id)?.ok_or_else(|| RegistryError::NotFound(format!("visit {id}")))?;
            if row.5.is_none() && row.6.is_none() {
                tx.execute(
                    "UPDATE visits SET started_ms = ?2 WHERE id = ?1",
                    params![id, now_ms],
                )?;
                timeline(
                    &tx,
                    &row.1,
                    now_ms,
                    "visit.started",
                    json!({"visit_id": id, "by": by}),
                )?;
            }
            let row = load(&tx, &id)?.ok_or_else(|| RegistryError::Db("visit vanished".into()))?;
            tx.commit()?;
            Ok(to_visit(row, now_ms))
        })
        .await
    }

    /// Ends a visit and writes `visit.ended` (with its duration when it had started); ending an
    /// ended visit changes nothing.
    pub async fn end_visit(
        &self,
        id: String,
        by: String,
        now_ms: i64,
    ) -> Result<Visit, RegistryError> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let row =
                load(&tx, &id)?.ok_or_else(|| RegistryError::NotFound(format!("visit {id}")))?;
            if row.6.is_none() {
                tx.execute(
                    "UPDATE visits SET ended_ms = ?2, ended_by = ?3 WHERE id = ?1",
                    params![id, now_ms, by],
                )?;
                let duration_s = row.5.map(|s| (now_ms - s).max(0) / 1000);
                timeline(
                    &tx,
                    &row.1,
                    now_ms,
                    "visit.ended",
                    json!({"visit_id": id, "by": by, "duration_s": duration_s,
                           "held": row.5.is_some()}),
                )?;
            }
            let row = load(&tx, &id)?.ok_or_else(|| RegistryError::Db("visit vanished".into()))?;
            tx.commit()?;
            Ok(to_visit(row, now_ms))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{PatientDetails, Profiles};

    #[tokio::test]
    async fn a_visit_starts_once_ends_once_and_both_land_on_the_timeline() {
        let dir = tempfile::tempdir().unwrap();
        let r = Registry::open(dir.path(), Profiles::built_in().unwrap()).unwrap();
        let p = PatientId::parse("p1").unwrap();
        r.create_patient(
            p.clone(),
            "Ada".into(),
            None,
            None,
            PatientDetails::default(),
            0,
        )
        .await
        .unwrap();
        let v = r
            .create_visit(p.clone(), "nina".into(), 1_000, 3_601_000)
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
            .end_visit(v.id.clone(), "nina".into(), 310_000)
            .await
            .unwrap();
        assert_eq!((e.status, e.duration_s), ("ended", Some(300)));
        let again = r
            .end_visit(v.id.clone(), "nina".into(), 999_000)
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
            r.create_visit(PatientId::parse("nobody").unwrap(), "x".into(), 0, 1)
                .await
                .is_err()
        );
    }
}
