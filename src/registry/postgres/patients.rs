//! Patients on PostgreSQL. A change reads the patient's row `FOR UPDATE`, merges and writes it in
//! one transaction, so two instances changing different fields of one patient at once both
//! land: the second waits for the first to commit and merges into what it wrote. The MRN is
//! unique (a unique constraint); a patient's care team references `teams`.
//!
//! Ids are ordered byte by byte (`COLLATE "C"`), as SQLite does, whatever the database's
//! collation.

use deadpool_postgres::GenericClient;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Row, Transaction};

use super::audit::append_in;
use super::record;
use super::{PgDb, PgError};
use crate::registry::access::Role;
use crate::registry::care_teams::{UnseenPatient, UnseenReason};
use crate::registry::discharge::{
    DISCHARGE_NOTE, DischargeChange, StoredDischarge, readmitted_data,
};
use crate::registry::error::RegistryError;
use crate::registry::mrn;
use crate::registry::patients::{
    Discharged, NewPatient, Patient, PatientAudit, PatientChange, PatientRow, PatientUpdated,
    apply, unknown_care_team,
};
use crate::registry::storage::PatientStore;

const COLUMNS: &str = "id, name, birth_date, created_ms, details, mrn, care_team, discharged_ms,
    discharge_date, discharge_reason, discharged_by";

fn row(r: &Row) -> PatientRow {
    PatientRow {
        id: r.get(0),
        name: r.get(1),
        birth_date: r.get(2),
        created_ms: r.get(3),
        details: r.get(4),
        mrn: r.get(5),
        care_team: r.get(6),
        discharge: r.get::<_, Option<i64>>(7).map(|at_ms| StoredDischarge {
            at_ms,
            date: r.get::<_, Option<String>>(8).unwrap_or_default(),
            reason: r.get(9),
            by: r.get::<_, Option<String>>(10).unwrap_or_default(),
        }),
    }
}

async fn read<C: GenericClient>(
    c: &C,
    id: &str,
    lock: &str,
) -> Result<Option<PatientRow>, PgError> {
    let sql = format!("SELECT {COLUMNS} FROM patients WHERE id = $1 {lock}");
    Ok(c.query_opt(&sql, &[&id]).await?.as_ref().map(row))
}

/// A write's refusal in the registry's words: another patient's MRN (the only unique
/// constraint a write can hit once the id is settled), or a care team that does not exist.
fn refused(e: tokio_postgres::Error, team: &str) -> RegistryError {
    match PgError::from(e) {
        PgError::Db { code: Some(c), .. } if c == SqlState::UNIQUE_VIOLATION => mrn::taken(),
        PgError::Db { code: Some(c), .. } if c == SqlState::FOREIGN_KEY_VIOLATION => {
            unknown_care_team(team)
        }
        e => e.into(),
    }
}

async fn append(
    tx: &Transaction<'_>,
    audit: Option<PatientAudit>,
    mrn_line: bool,
) -> Result<(), PgError> {
    if let Some(a) = audit {
        append_in(tx, &a.change).await?;
        if mrn_line {
            append_in(tx, &a.mrn).await?;
        }
    }
    Ok(())
}

#[async_trait::async_trait]
impl PatientStore for PgDb {
    async fn create_patient(
        &self,
        p: NewPatient,
        audit: Option<PatientAudit>,
    ) -> Result<Patient, RegistryError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(PgError::from)?;
        let team = p.details.care_team.clone().unwrap_or_default();
        let details = p.details.clone().without_team().to_json();
        // A taken id is settled by `ON CONFLICT`: of two instances creating one patient at
        // once, the second waits for the first to commit and then inserts nothing.
        let inserted = tx
            .query_opt(
                &format!(
                    "INSERT INTO patients (id, name, birth_date, created_ms, details, mrn, care_team)
                     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING
                     RETURNING {COLUMNS}"
                ),
                &[
                    &p.id,
                    &p.name,
                    &p.birth_date,
                    &p.created_ms,
                    &details,
                    &p.mrn,
                    &team,
                ],
            )
            .await
            .map_err(|e| refused(e, &team))?;
        let Some(stored) = inserted else {
            return Err(RegistryError::Exists(format!("patient {}", p.id)));
        };
        append(&tx, audit, p.mrn.is_some()).await?;
        let patient = row(&stored)
            .into_patient()
            .ok_or_else(|| RegistryError::Invalid(format!("{:?} is not a patient id", p.id)))?;
        tx.commit().await.map_err(PgError::from)?;
        Ok(patient)
    }

    async fn update_patient(
        &self,
        id: String,
        change: PatientChange,
        audit: Option<PatientAudit>,
    ) -> Result<PatientUpdated, RegistryError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(PgError::from)?;
        let not_found = || RegistryError::NotFound(format!("patient {id}"));
        let current = read(&tx, &id, "FOR UPDATE").await?.ok_or_else(not_found)?;
        let (new, mrn_changed, team_changed) = apply(&current, &change);
        let team = new.care_team.clone().unwrap_or_default();
        tx.execute(
            "UPDATE patients SET name = $2, birth_date = $3, details = $4, mrn = $5,
             care_team = $6 WHERE id = $1",
            &[
                &id,
                &new.name,
                &new.birth_date,
                &new.details,
                &new.mrn,
                &team,
            ],
        )
        .await
        .map_err(|e| refused(e, &team))?;
        append(&tx, audit, mrn_changed).await?;
        let patient = new.into_patient().ok_or_else(not_found)?;
        tx.commit().await.map_err(PgError::from)?;
        Ok(PatientUpdated {
            patient,
            mrn_changed,
            team_changed,
        })
    }

    async fn patient(&self, id: String) -> Result<Option<Patient>, RegistryError> {
        let c = self.conn().await?;
        Ok(read(&c, &id, "").await?.and_then(PatientRow::into_patient))
    }

    async fn patients(&self) -> Result<Vec<Patient>, RegistryError> {
        let c = self.conn().await?;
        let rows = c
            .query(
                &format!("SELECT {COLUMNS} FROM patients ORDER BY id COLLATE \"C\""),
                &[],
            )
            .await
            .map_err(PgError::from)?;
        Ok(rows.iter().filter_map(|r| row(r).into_patient()).collect())
    }

    async fn set_discharge(&self, change: DischargeChange) -> Result<Discharged, RegistryError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(PgError::from)?;
        let id = change.patient.clone();
        let current = read(&tx, &id, "FOR UPDATE")
            .await?
            .ok_or_else(|| RegistryError::NotFound(format!("patient {id}")))?;
        if current.discharge.is_some() == change.discharge.is_some() {
            return Err(change.refused(current.discharge.is_some()));
        }
        let mut events = Vec::new();
        let mut resolved = Vec::new();
        match &change.discharge {
            Some(d) => {
                tx.execute(
                    "UPDATE patients SET discharged_ms = $2, discharge_date = $3,
                         discharge_reason = $4, discharged_by = $5 WHERE id = $1",
                    &[&id, &d.at_ms, &d.date, &d.reason, &d.by],
                )
                .await
                .map_err(PgError::from)?;
                resolved = record::resolve_all_in(
                    &tx,
                    &id,
                    &change.by,
                    DISCHARGE_NOTE,
                    change.now_ms,
                    &change.sinks,
                    &mut events,
                )
                .await?;
                for a in &resolved {
                    append_in(&tx, &change.alert_line(&a.id)).await?;
                }
                record::timeline(
                    &tx,
                    &id,
                    change.now_ms,
                    "patient.discharged",
                    &d.timeline_data(),
                )
                .await?;
            }
            None => {
                tx.execute(
                    "UPDATE patients SET discharged_ms = NULL, discharge_date = NULL,
                         discharge_reason = NULL, discharged_by = NULL WHERE id = $1",
                    &[&id],
                )
                .await
                .map_err(PgError::from)?;
                record::timeline(
                    &tx,
                    &id,
                    change.now_ms,
                    "patient.readmitted",
                    &readmitted_data(&change.by),
                )
                .await?;
            }
        }
        // The instance holding the patient's alert partition reads the plan in force again:
        // none while discharged, theirs once readmitted.
        let patient = current
            .clone()
            .into_patient()
            .ok_or_else(|| RegistryError::NotFound(format!("patient {id}")))?;
        record::notify_plan(&tx, &patient.id, change.now_ms).await?;
        append_in(&tx, &change.audit).await?;
        let patient = read(&tx, &id, "")
            .await?
            .and_then(PatientRow::into_patient)
            .ok_or_else(|| RegistryError::NotFound(format!("patient {id}")))?;
        tx.commit().await.map_err(PgError::from)?;
        Ok(Discharged {
            patient,
            resolved,
            events,
        })
    }

    async fn patient_team(&self, id: String) -> Result<Option<Option<String>>, RegistryError> {
        let c = self.conn().await?;
        let r = c
            .query_opt("SELECT care_team FROM patients WHERE id = $1", &[&id])
            .await
            .map_err(PgError::from)?;
        Ok(r.map(|r| r.get(0)))
    }

    async fn unseen_patients(&self) -> Result<Vec<UnseenPatient>, RegistryError> {
        let c = self.conn().await?;
        // One statement: one snapshot of patients, teams, members and alerts.
        let rows = c
            .query(
                "SELECT p.id, p.name, p.care_team,
                        EXISTS (SELECT 1 FROM teams t WHERE t.id = p.care_team),
                        (SELECT count(*) FROM alerts a
                          WHERE a.patient_id = p.id AND a.status = 'open') AS open
                   FROM patients p
                  WHERE p.discharged_ms IS NULL AND NOT EXISTS (
                        SELECT 1 FROM team_members m JOIN users u ON u.username = m.username
                         WHERE m.team_id = p.care_team AND u.role = $1)
                  ORDER BY open DESC, p.id COLLATE \"C\"",
                &[&Role::Clinician.as_str()],
            )
            .await
            .map_err(PgError::from)?;
        Ok(rows
            .iter()
            .map(|r| {
                let team: Option<String> = r.get(2);
                UnseenPatient {
                    id: r.get(0),
                    name: r.get(1),
                    reason: UnseenReason::of(team.as_deref(), r.get(3)),
                    care_team: team,
                    open_alerts: u64::try_from(r.get::<_, i64>(4)).unwrap_or(0),
                }
            })
            .collect())
    }
}
