//! Patients on SQLite. A change is read, merged and written in one `IMMEDIATE` transaction, which
//! holds SQLite's write lock from the start: no other change of the patient falls between the
//! read and the write.

use rusqlite::{OptionalExtension as _, Transaction, TransactionBehavior, params};

use super::SqliteDb;
use super::audit::append_in;
use super::record;
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

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<PatientRow> {
    Ok(PatientRow {
        id: r.get(0)?,
        name: r.get(1).unwrap_or_default(),
        birth_date: r.get(2).unwrap_or_default(),
        created_ms: r.get(3).unwrap_or_default(),
        details: r.get(4).unwrap_or_default(),
        mrn: r.get(5).unwrap_or_default(),
        care_team: r.get(6)?,
        discharge: match r.get::<_, Option<i64>>(7)? {
            Some(at_ms) => Some(StoredDischarge {
                at_ms,
                date: r.get::<_, Option<String>>(8)?.unwrap_or_default(),
                reason: r.get(9)?,
                by: r.get::<_, Option<String>>(10)?.unwrap_or_default(),
            }),
            None => None,
        },
    })
}

fn read(c: &rusqlite::Connection, id: &str) -> Result<Option<PatientRow>, RegistryError> {
    Ok(c.query_row(
        &format!("SELECT {COLUMNS} FROM patients WHERE id = ?1"),
        [id],
        row,
    )
    .optional()?)
}

/// Whether a write failed on the MRN's unique index (another patient has it).
fn mrn_taken(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, Some(msg))
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE && msg.contains("mrn"))
}

/// A write's refusal in the registry's words: another patient's MRN, or a care team that does
/// not exist.
fn refused(e: rusqlite::Error, team: &str) -> RegistryError {
    match &e {
        _ if mrn_taken(&e) => mrn::taken(),
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY =>
        {
            unknown_care_team(team)
        }
        _ => e.into(),
    }
}

fn append(
    tx: &Transaction<'_>,
    audit: Option<PatientAudit>,
    mrn_line: bool,
) -> Result<(), RegistryError> {
    if let Some(a) = audit {
        append_in(tx, &a.change)?;
        if mrn_line {
            append_in(tx, &a.mrn)?;
        }
    }
    Ok(())
}

#[async_trait::async_trait]
impl PatientStore for SqliteDb {
    async fn create_patient(
        &self,
        p: NewPatient,
        audit: Option<PatientAudit>,
    ) -> Result<Patient, RegistryError> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let team = p.details.care_team.clone().unwrap_or_default();
            let details = p.details.clone().without_team().to_json();
            let n = tx
                .execute(
                    "INSERT INTO patients (id, name, birth_date, created_ms, details, mrn, care_team)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (id) DO NOTHING",
                    params![p.id, p.name, p.birth_date, p.created_ms, details, p.mrn, team],
                )
                .map_err(|e| refused(e, &team))?;
            if n == 0 {
                return Err(RegistryError::Exists(format!("patient {}", p.id)));
            }
            append(&tx, audit, p.mrn.is_some())?;
            let stored = read(&tx, &p.id)?.and_then(PatientRow::into_patient);
            tx.commit()?;
            stored.ok_or_else(|| RegistryError::Invalid(format!("{:?} is not a patient id", p.id)))
        })
        .await
    }

    async fn update_patient(
        &self,
        id: String,
        change: PatientChange,
        audit: Option<PatientAudit>,
    ) -> Result<PatientUpdated, RegistryError> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let not_found = || RegistryError::NotFound(format!("patient {id}"));
            let current = read(&tx, &id)?.ok_or_else(not_found)?;
            let (new, mrn_changed, team_changed) = apply(&current, &change);
            let team = new.care_team.clone().unwrap_or_default();
            tx.execute(
                "UPDATE patients SET name = ?2, birth_date = ?3, details = ?4, mrn = ?5,
                 care_team = ?6 WHERE id = ?1",
                params![id, new.name, new.birth_date, new.details, new.mrn, team],
            )
            .map_err(|e| refused(e, &team))?;
            append(&tx, audit, mrn_changed)?;
            let patient = new.into_patient().ok_or_else(not_found)?;
            tx.commit()?;
            Ok(PatientUpdated {
                patient,
                mrn_changed,
                team_changed,
            })
        })
        .await
    }

    async fn patient(&self, id: String) -> Result<Option<Patient>, RegistryError> {
        self.with(move |c| Ok(read(c, &id)?.and_then(PatientRow::into_patient)))
            .await
    }

    async fn patients(&self) -> Result<Vec<Patient>, RegistryError> {
        self.with(|c| {
            let mut stmt = c.prepare(&format!("SELECT {COLUMNS} FROM patients ORDER BY id"))?;
            let rows = stmt.query_map([], row)?;
            let mut out = Vec::new();
            for r in rows {
                out.extend(r?.into_patient());
            }
            Ok(out)
        })
        .await
    }

    async fn set_discharge(&self, change: DischargeChange) -> Result<Discharged, RegistryError> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let id = change.patient.clone();
            let current =
                read(&tx, &id)?.ok_or_else(|| RegistryError::NotFound(format!("patient {id}")))?;
            if current.discharge.is_some() == change.discharge.is_some() {
                return Err(change.refused(current.discharge.is_some()));
            }
            let mut events = Vec::new();
            let mut resolved = Vec::new();
            match &change.discharge {
                Some(d) => {
                    tx.execute(
                        "UPDATE patients SET discharged_ms = ?2, discharge_date = ?3,
                             discharge_reason = ?4, discharged_by = ?5 WHERE id = ?1",
                        params![id, d.at_ms, d.date, d.reason, d.by],
                    )?;
                    resolved = record::resolve_all_in(
                        &tx,
                        &id,
                        &change.by,
                        DISCHARGE_NOTE,
                        change.now_ms,
                        &change.sinks,
                        &mut events,
                    )?;
                    for a in &resolved {
                        append_in(&tx, &change.alert_line(&a.id))?;
                    }
                    record::timeline(
                        &tx,
                        &id,
                        change.now_ms,
                        "patient.discharged",
                        &d.timeline_data(),
                    )?;
                }
                None => {
                    tx.execute(
                        "UPDATE patients SET discharged_ms = NULL, discharge_date = NULL,
                             discharge_reason = NULL, discharged_by = NULL WHERE id = ?1",
                        [&id],
                    )?;
                    record::timeline(
                        &tx,
                        &id,
                        change.now_ms,
                        "patient.readmitted",
                        &readmitted_data(&change.by),
                    )?;
                }
            }
            append_in(&tx, &change.audit)?;
            let patient = read(&tx, &id)?
                .and_then(PatientRow::into_patient)
                .ok_or_else(|| RegistryError::NotFound(format!("patient {id}")))?;
            tx.commit()?;
            Ok(Discharged {
                patient,
                resolved,
                events,
            })
        })
        .await
    }

    async fn patient_team(&self, id: String) -> Result<Option<Option<String>>, RegistryError> {
        self.with(move |c| {
            Ok(c.query_row(
                "SELECT care_team FROM patients WHERE id = ?1",
                [id.as_str()],
                |r| r.get(0),
            )
            .optional()?)
        })
        .await
    }

    async fn unseen_patients(&self) -> Result<Vec<UnseenPatient>, RegistryError> {
        self.with(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT p.id, p.name, p.care_team,
                        EXISTS (SELECT 1 FROM teams t WHERE t.id = p.care_team),
                        (SELECT count(*) FROM alerts a
                          WHERE a.patient_id = p.id AND a.status = 'open') AS open
                   FROM patients p
                  WHERE p.discharged_ms IS NULL AND NOT EXISTS (
                        SELECT 1 FROM team_members m JOIN users u ON u.username = m.username
                         WHERE m.team_id = p.care_team AND u.role = ?1)
                  ORDER BY open DESC, p.id",
            )?;
            let rows = stmt.query_map(params![Role::Clinician.as_str()], |r| {
                let team: Option<String> = r.get(2)?;
                let known: bool = r.get(3)?;
                Ok(UnseenPatient {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    reason: UnseenReason::of(team.as_deref(), known),
                    care_team: team,
                    open_alerts: u64::try_from(r.get::<_, i64>(4)?).unwrap_or(0),
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }
}
