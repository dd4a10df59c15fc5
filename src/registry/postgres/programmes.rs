//! The care programme on PostgreSQL: programmes and enrollment episodes. A change of a
//! patient's episodes locks the patient's row first, so two instances changing one patient's
//! enrollment at once are checked one after the other.

use tokio_postgres::{Row, Transaction};

use super::audit::append_in;
use super::record::{notify_plan, timeline};
use super::{PgDb, PgError};
use crate::domain::zone::Zone;
use crate::domain::{PatientId, format_rfc3339};
use crate::registry::audit::NewAuditLine;
use crate::registry::enrollment::{Consent, Enrollment, Programme, overlapping, unknown_programme};
use crate::registry::error::RegistryError;
use crate::registry::setups::{SETUP_COLUMNS, Setup, not_the_patients};
use crate::registry::storage::ProgrammeStore;
use crate::registry::time_log::TimeEntry;
use crate::registry::timer::{Timer, TimerStop, timer_running};

const COLUMNS: &str = "patient_id, program, start_date, end_date, practitioner, diagnoses, \
     consent_method, consent_by, consent_ms, updated_by, updated_ms";

fn enrollment(r: &Row) -> Enrollment {
    let diagnoses: String = r.get(5);
    Enrollment {
        patient_id: r.get(0),
        program: r.get(1),
        start: r.get(2),
        end: r.get(3),
        practitioner: r.get(4),
        diagnoses: serde_json::from_str(&diagnoses).unwrap_or_default(),
        consent: Consent {
            method: r.get(6),
            by: r.get(7),
            at: format_rfc3339(r.get(8)),
        },
        updated_by: r.get(9),
        updated_at: format_rfc3339(r.get(10)),
    }
}

const TIME_COLUMNS: &str = "id, patient_id, date, minutes, activity, interactive, note, username, \
     created_ms, updated_by, updated_ms";

fn time_entry(r: &Row) -> TimeEntry {
    TimeEntry {
        id: r.get(0),
        patient_id: r.get(1),
        date: r.get(2),
        minutes: u32::try_from(r.get::<_, i32>(3)).unwrap_or(0),
        activity: r.get(4),
        interactive: r.get(5),
        note: r.get(6),
        user: r.get(7),
        created_at: format_rfc3339(r.get(8)),
        updated_by: r.get(9),
        updated_at: r.get::<_, Option<i64>>(10).map(format_rfc3339),
    }
}

async fn programmes<C: deadpool_postgres::GenericClient + Sync>(
    c: &C,
) -> Result<Vec<Programme>, PgError> {
    Ok(c.query(
        "SELECT id, name FROM programs ORDER BY id COLLATE \"C\"",
        &[],
    )
    .await?
    .iter()
    .map(|r| Programme {
        id: r.get(0),
        name: r.get(1),
    })
    .collect())
}

fn timer_row(r: &Row) -> Timer {
    Timer {
        user: r.get(0),
        patient_id: r.get(1),
        activity: r.get(2),
        started_at: format_rfc3339(r.get(3)),
    }
}

/// Writes a new time entry (in the caller's transaction).
pub(super) async fn insert_time(tx: &Transaction<'_>, entry: &TimeEntry) -> Result<(), PgError> {
    let minutes = i32::try_from(entry.minutes).unwrap_or(i32::MAX);
    let created_ms = crate::domain::parse_rfc3339(&entry.created_at).unwrap_or_default();
    tx.execute(
        &format!(
            "INSERT INTO time_entries ({TIME_COLUMNS})
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, NULL)"
        ),
        &[
            &entry.id,
            &entry.patient_id,
            &entry.date,
            &minutes,
            &entry.activity,
            &entry.interactive,
            &entry.note,
            &entry.user,
            &created_ms,
        ],
    )
    .await?;
    Ok(())
}

#[async_trait::async_trait]
impl ProgrammeStore for PgDb {
    async fn programmes(&self) -> Result<Vec<Programme>, RegistryError> {
        let c = self.conn().await?;
        Ok(programmes(&c).await?)
    }

    async fn add_programme(
        &self,
        programme: Programme,
        by: String,
        now_ms: i64,
        audit: NewAuditLine,
    ) -> Result<Programme, RegistryError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(PgError::from)?;
        let n = tx
            .execute(
                "INSERT INTO programs (id, name, created_ms, created_by) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (id) DO NOTHING",
                &[&programme.id, &programme.name, &now_ms, &by],
            )
            .await
            .map_err(PgError::from)?;
        if n == 0 {
            return Err(RegistryError::Exists(format!("programme {}", programme.id)));
        }
        append_in(&tx, &audit).await?;
        tx.commit().await.map_err(PgError::from)?;
        Ok(programme)
    }

    async fn put_enrollment(
        &self,
        e: Enrollment,
        audit: NewAuditLine,
    ) -> Result<Enrollment, RegistryError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(PgError::from)?;
        let found = tx
            .query_opt(
                "SELECT 1 FROM patients WHERE id = $1 FOR UPDATE",
                &[&e.patient_id],
            )
            .await
            .map_err(PgError::from)?;
        if found.is_none() {
            return Err(RegistryError::NotFound(format!("patient {}", e.patient_id)));
        }
        let known = programmes(&tx).await?;
        if !known.iter().any(|p| p.id == e.program) {
            return Err(unknown_programme(&e.program, &known));
        }
        let others: Vec<Enrollment> = tx
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM enrollments WHERE patient_id = $1 AND start_date <> $2"
                ),
                &[&e.patient_id, &e.start],
            )
            .await
            .map_err(PgError::from)?
            .iter()
            .map(enrollment)
            .collect();
        if let Some(o) = others.iter().find(|o| o.overlaps(&e)) {
            return Err(overlapping(o));
        }
        let diagnoses = serde_json::to_string(&e.diagnoses).unwrap_or_else(|_| "[]".into());
        tx.execute(
            &format!(
                "INSERT INTO enrollments ({COLUMNS})
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                 ON CONFLICT (patient_id, start_date) DO UPDATE SET
                    program = excluded.program, end_date = excluded.end_date,
                    practitioner = excluded.practitioner, diagnoses = excluded.diagnoses,
                    consent_method = excluded.consent_method, consent_by = excluded.consent_by,
                    consent_ms = excluded.consent_ms, updated_by = excluded.updated_by,
                    updated_ms = excluded.updated_ms"
            ),
            &[
                &e.patient_id,
                &e.program,
                &e.start,
                &e.end,
                &e.practitioner,
                &diagnoses,
                &e.consent.method,
                &e.consent.by,
                &e.consent_ms(),
                &e.updated_by,
                &e.updated_ms(),
            ],
        )
        .await
        .map_err(PgError::from)?;
        timeline(
            &tx,
            &e.patient_id,
            e.updated_ms(),
            "enrollment",
            &e.timeline_data(),
        )
        .await?;
        append_in(&tx, &audit).await?;
        // The programme's care plan may now be in force, or no longer: the engine holding the
        // patient's partition re-reads it (`crm::partitioned`).
        if let Ok(patient) = PatientId::parse(&e.patient_id) {
            notify_plan(&tx, &patient, e.updated_ms()).await?;
        }
        tx.commit().await.map_err(PgError::from)?;
        Ok(e)
    }

    async fn enrollments(&self, patient: PatientId) -> Result<Vec<Enrollment>, RegistryError> {
        Ok(self
            .conn()
            .await?
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM enrollments WHERE patient_id = $1
                      ORDER BY start_date DESC"
                ),
                &[&patient.as_str()],
            )
            .await
            .map_err(PgError::from)?
            .iter()
            .map(enrollment)
            .collect())
    }

    async fn open_enrollments(&self) -> Result<Vec<(PatientId, String)>, RegistryError> {
        Ok(self
            .conn()
            .await?
            .query(
                "SELECT e.patient_id, e.program FROM enrollments e
                 WHERE e.end_date IS NULL AND NOT EXISTS (
                    SELECT 1 FROM enrollments l
                     WHERE l.patient_id = e.patient_id AND l.start_date > e.start_date)
                 ORDER BY e.patient_id COLLATE \"C\"",
                &[],
            )
            .await
            .map_err(PgError::from)?
            .iter()
            .filter_map(|r| {
                let p = PatientId::parse(r.get::<_, &str>(0)).ok()?;
                Some((p, r.get(1)))
            })
            .collect())
    }

    async fn add_time(
        &self,
        entry: TimeEntry,
        audit: NewAuditLine,
    ) -> Result<TimeEntry, RegistryError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(PgError::from)?;
        let found = tx
            .query_opt("SELECT 1 FROM patients WHERE id = $1", &[&entry.patient_id])
            .await
            .map_err(PgError::from)?;
        if found.is_none() {
            return Err(RegistryError::NotFound(format!(
                "patient {}",
                entry.patient_id
            )));
        }
        insert_time(&tx, &entry).await?;
        append_in(&tx, &audit).await?;
        tx.commit().await.map_err(PgError::from)?;
        Ok(entry)
    }

    async fn add_setup(&self, setup: Setup, audit: NewAuditLine) -> Result<Setup, RegistryError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(PgError::from)?;
        let found = tx
            .query_opt("SELECT 1 FROM patients WHERE id = $1", &[&setup.patient_id])
            .await
            .map_err(PgError::from)?;
        if found.is_none() {
            return Err(RegistryError::NotFound(format!(
                "patient {}",
                setup.patient_id
            )));
        }
        let owner: Option<String> = tx
            .query_opt(
                "SELECT patient_id FROM devices WHERE id = $1",
                &[&setup.device_id],
            )
            .await
            .map_err(PgError::from)?
            .map(|r| r.get(0));
        if owner.as_deref() != Some(setup.patient_id.as_str()) {
            return Err(not_the_patients(&setup));
        }
        tx.execute(
            &format!(
                "INSERT INTO device_setups ({SETUP_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
            ),
            &[
                &setup.id,
                &setup.patient_id,
                &setup.device_id,
                &setup.date,
                &setup.note,
                &setup.user,
                &setup.created_ms(),
            ],
        )
        .await
        .map_err(PgError::from)?;
        timeline(
            &tx,
            &setup.patient_id,
            setup.created_ms(),
            "device_setup",
            &setup.timeline_data(),
        )
        .await?;
        append_in(&tx, &audit).await?;
        tx.commit().await.map_err(PgError::from)?;
        Ok(setup)
    }

    async fn start_timer(&self, timer: Timer, audit: NewAuditLine) -> Result<Timer, RegistryError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(PgError::from)?;
        let found = tx
            .query_opt("SELECT 1 FROM patients WHERE id = $1", &[&timer.patient_id])
            .await
            .map_err(PgError::from)?;
        if found.is_none() {
            return Err(RegistryError::NotFound(format!(
                "patient {}",
                timer.patient_id
            )));
        }
        // Of two starts at once, one inserts; the other finds the row.
        let inserted = tx
            .execute(
                "INSERT INTO timers (username, patient_id, activity, started_ms)
                 VALUES ($1, $2, $3, $4) ON CONFLICT (username) DO NOTHING",
                &[
                    &timer.user,
                    &timer.patient_id,
                    &timer.activity,
                    &timer.started_ms(),
                ],
            )
            .await
            .map_err(PgError::from)?;
        if inserted == 0 {
            let on: String = tx
                .query_one(
                    "SELECT patient_id FROM timers WHERE username = $1",
                    &[&timer.user],
                )
                .await
                .map_err(PgError::from)?
                .get(0);
            return Err(timer_running(&on));
        }
        append_in(&tx, &audit).await?;
        tx.commit().await.map_err(PgError::from)?;
        Ok(timer)
    }

    async fn timer(&self, user: String) -> Result<Option<Timer>, RegistryError> {
        Ok(self
            .conn()
            .await?
            .query_opt(
                "SELECT username, patient_id, activity, started_ms FROM timers WHERE username = $1",
                &[&user],
            )
            .await
            .map_err(PgError::from)?
            .map(|r| timer_row(&r)))
    }

    async fn stop_timer(
        &self,
        user: String,
        now_ms: i64,
        stop: TimerStop,
        zone: Zone,
        audit: NewAuditLine,
    ) -> Result<Option<TimeEntry>, RegistryError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(PgError::from)?;
        // Deleting returns it: of two stops at once, one logs the entry.
        let Some(row) = tx
            .query_opt(
                "DELETE FROM timers WHERE username = $1
                 RETURNING username, patient_id, activity, started_ms",
                &[&user],
            )
            .await
            .map_err(PgError::from)?
        else {
            return Ok(None);
        };
        let entry = timer_row(&row).entry(now_ms, &stop, &zone)?;
        insert_time(&tx, &entry).await?;
        append_in(&tx, &audit.for_patient(&entry.patient_id, &entry.id)).await?;
        tx.commit().await.map_err(PgError::from)?;
        Ok(Some(entry))
    }

    async fn setups(&self, patient: PatientId) -> Result<Vec<Setup>, RegistryError> {
        Ok(self
            .conn()
            .await?
            .query(
                &format!(
                    "SELECT {SETUP_COLUMNS} FROM device_setups WHERE patient_id = $1
                      ORDER BY date, created_ms, id COLLATE \"C\""
                ),
                &[&patient.as_str()],
            )
            .await
            .map_err(PgError::from)?
            .iter()
            .map(|r| Setup {
                id: r.get(0),
                patient_id: r.get(1),
                device_id: r.get(2),
                date: r.get(3),
                note: r.get(4),
                user: r.get(5),
                created_at: format_rfc3339(r.get(6)),
            })
            .collect())
    }

    async fn time_entries(
        &self,
        patient: PatientId,
        from: String,
        to: String,
    ) -> Result<Vec<TimeEntry>, RegistryError> {
        Ok(self
            .conn()
            .await?
            .query(
                &format!(
                    "SELECT {TIME_COLUMNS} FROM time_entries
                      WHERE patient_id = $1 AND date >= $2 AND date <= $3
                        AND deleted_ms IS NULL
                      ORDER BY date, created_ms, id COLLATE \"C\""
                ),
                &[&patient.as_str(), &from, &to],
            )
            .await
            .map_err(PgError::from)?
            .iter()
            .map(time_entry)
            .collect())
    }

    async fn time_entry(
        &self,
        patient: PatientId,
        id: String,
    ) -> Result<Option<TimeEntry>, RegistryError> {
        Ok(self
            .conn()
            .await?
            .query_opt(
                &format!(
                    "SELECT {TIME_COLUMNS} FROM time_entries
                      WHERE patient_id = $1 AND id = $2 AND deleted_ms IS NULL"
                ),
                &[&patient.as_str(), &id],
            )
            .await
            .map_err(PgError::from)?
            .map(|r| time_entry(&r)))
    }

    async fn update_time(
        &self,
        entry: TimeEntry,
        version_ms: i64,
        audit: NewAuditLine,
    ) -> Result<Option<TimeEntry>, RegistryError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(PgError::from)?;
        let version: Option<i64> = tx
            .query_opt(
                "SELECT COALESCE(updated_ms, created_ms) FROM time_entries
                  WHERE patient_id = $1 AND id = $2 AND deleted_ms IS NULL FOR UPDATE",
                &[&entry.patient_id, &entry.id],
            )
            .await
            .map_err(PgError::from)?
            .map(|r| r.get(0));
        match version {
            None => return Err(RegistryError::NotFound(format!("time entry {}", entry.id))),
            Some(v) if v != version_ms => return Ok(None),
            Some(_) => {}
        }
        let minutes = i32::try_from(entry.minutes).unwrap_or(i32::MAX);
        tx.execute(
            "UPDATE time_entries SET date = $3, minutes = $4, activity = $5, interactive = $6,
                    note = $7, updated_by = $8, updated_ms = $9
              WHERE patient_id = $1 AND id = $2",
            &[
                &entry.patient_id,
                &entry.id,
                &entry.date,
                &minutes,
                &entry.activity,
                &entry.interactive,
                &entry.note,
                &entry.updated_by,
                &entry.version_ms(),
            ],
        )
        .await
        .map_err(PgError::from)?;
        append_in(&tx, &audit).await?;
        tx.commit().await.map_err(PgError::from)?;
        Ok(Some(entry))
    }

    async fn delete_time(
        &self,
        patient: PatientId,
        id: String,
        by: String,
        now_ms: i64,
        audit: NewAuditLine,
    ) -> Result<(), RegistryError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(PgError::from)?;
        let n = tx
            .execute(
                "UPDATE time_entries SET deleted_by = $3, deleted_ms = $4
                  WHERE patient_id = $1 AND id = $2 AND deleted_ms IS NULL",
                &[&patient.as_str(), &id, &by, &now_ms],
            )
            .await
            .map_err(PgError::from)?;
        if n == 0 {
            return Err(RegistryError::NotFound(format!("time entry {id}")));
        }
        append_in(&tx, &audit).await?;
        tx.commit().await.map_err(PgError::from)?;
        Ok(())
    }
}
