//! The care programme on SQLite: programmes and enrollment episodes. A change is one
//! `IMMEDIATE` transaction, so two changes of one patient's episodes are checked one after the
//! other.

use rusqlite::{OptionalExtension as _, Row, Transaction, TransactionBehavior, params};

use super::SqliteDb;
use super::audit::append_in;
use super::record::{require_patient, timeline};
use crate::domain::zone::Zone;
use crate::domain::{PatientId, format_rfc3339};
use crate::registry::audit::NewAuditLine;
use crate::registry::enrollment::{Consent, Enrollment, Programme};
use crate::registry::error::RegistryError;
use crate::registry::setups::{SETUP_COLUMNS, Setup, not_the_patients};
use crate::registry::storage::ProgrammeStore;
use crate::registry::time_log::TimeEntry;
use crate::registry::timer::{Timer, TimerStop, timer_running};

const COLUMNS: &str = "patient_id, program, start_date, end_date, practitioner, diagnoses, \
     consent_method, consent_by, consent_ms, updated_by, updated_ms";

fn enrollment(r: &Row<'_>) -> rusqlite::Result<Enrollment> {
    let diagnoses: String = r.get(5)?;
    Ok(Enrollment {
        patient_id: r.get(0)?,
        program: r.get(1)?,
        start: r.get(2)?,
        end: r.get(3)?,
        practitioner: r.get(4)?,
        diagnoses: serde_json::from_str(&diagnoses).unwrap_or_default(),
        consent: Consent {
            method: r.get(6)?,
            by: r.get(7)?,
            at: format_rfc3339(r.get(8)?),
        },
        updated_by: r.get(9)?,
        updated_at: format_rfc3339(r.get(10)?),
    })
}

const TIME_COLUMNS: &str = "id, patient_id, date, minutes, activity, interactive, note, username, \
     created_ms, updated_by, updated_ms";

fn time_entry(r: &Row<'_>) -> rusqlite::Result<TimeEntry> {
    Ok(TimeEntry {
        id: r.get(0)?,
        patient_id: r.get(1)?,
        date: r.get(2)?,
        minutes: r.get(3)?,
        activity: r.get(4)?,
        interactive: r.get(5)?,
        note: r.get(6)?,
        user: r.get(7)?,
        created_at: format_rfc3339(r.get(8)?),
        updated_by: r.get(9)?,
        updated_at: r.get::<_, Option<i64>>(10)?.map(format_rfc3339),
    })
}

fn programmes(c: &rusqlite::Connection) -> rusqlite::Result<Vec<Programme>> {
    let mut stmt = c.prepare_cached("SELECT id, name FROM programs ORDER BY id")?;
    let rows = stmt.query_map([], |r| {
        Ok(Programme {
            id: r.get(0)?,
            name: r.get(1)?,
        })
    })?;
    rows.collect()
}

fn timer_row(r: &Row<'_>) -> rusqlite::Result<Timer> {
    Ok(Timer {
        user: r.get(0)?,
        patient_id: r.get(1)?,
        activity: r.get(2)?,
        started_at: format_rfc3339(r.get(3)?),
    })
}

/// Writes a new time entry (in the caller's transaction).
pub(super) fn insert_time(tx: &Transaction<'_>, entry: &TimeEntry) -> rusqlite::Result<()> {
    tx.execute(
        &format!(
            "INSERT INTO time_entries ({TIME_COLUMNS})
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, NULL, NULL)"
        ),
        params![
            entry.id,
            entry.patient_id,
            entry.date,
            entry.minutes,
            entry.activity,
            entry.interactive,
            entry.note,
            entry.user,
            crate::domain::parse_rfc3339(&entry.created_at).unwrap_or_default()
        ],
    )?;
    Ok(())
}

#[async_trait::async_trait]
impl ProgrammeStore for SqliteDb {
    async fn programmes(&self) -> Result<Vec<Programme>, RegistryError> {
        self.with(|c| Ok(programmes(c)?)).await
    }

    async fn add_programme(
        &self,
        programme: Programme,
        by: String,
        now_ms: i64,
        audit: NewAuditLine,
    ) -> Result<Programme, RegistryError> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let n = tx.execute(
                "INSERT INTO programs (id, name, created_ms, created_by) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (id) DO NOTHING",
                params![programme.id, programme.name, now_ms, by],
            )?;
            if n == 0 {
                return Err(RegistryError::Exists(format!("programme {}", programme.id)));
            }
            append_in(&tx, &audit)?;
            tx.commit()?;
            Ok(programme)
        })
        .await
    }

    async fn put_enrollment(
        &self,
        e: Enrollment,
        audit: NewAuditLine,
    ) -> Result<Enrollment, RegistryError> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let patient = PatientId::parse(&e.patient_id)
                .map_err(|why| RegistryError::Invalid(why.to_string()))?;
            require_patient(&tx, &patient)?;
            let known = programmes(&tx)?;
            if !known.iter().any(|p| p.id == e.program) {
                return Err(crate::registry::enrollment::unknown_programme(&e.program, &known));
            }
            let others: Vec<Enrollment> = {
                let mut stmt = tx.prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM enrollments WHERE patient_id = ?1 AND start_date <> ?2"
                ))?;
                let rows = stmt.query_map(params![e.patient_id, e.start], enrollment)?;
                rows.collect::<Result<_, _>>()?
            };
            if let Some(o) = others.iter().find(|o| o.overlaps(&e)) {
                return Err(crate::registry::enrollment::overlapping(o));
            }
            let diagnoses = serde_json::to_string(&e.diagnoses).unwrap_or_else(|_| "[]".into());
            tx.execute(
                &format!(
                    "INSERT INTO enrollments ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                     ON CONFLICT (patient_id, start_date) DO UPDATE SET
                        program = excluded.program, end_date = excluded.end_date,
                        practitioner = excluded.practitioner, diagnoses = excluded.diagnoses,
                        consent_method = excluded.consent_method, consent_by = excluded.consent_by,
                        consent_ms = excluded.consent_ms, updated_by = excluded.updated_by,
                        updated_ms = excluded.updated_ms"
                ),
                params![
                    e.patient_id,
                    e.program,
                    e.start,
                    e.end,
                    e.practitioner,
                    diagnoses,
                    e.consent.method,
                    e.consent.by,
                    e.consent_ms(),
                    e.updated_by,
                    e.updated_ms()
                ],
            )?;
            timeline(&tx, &e.patient_id, e.updated_ms(), "enrollment", &e.timeline_data())?;
            append_in(&tx, &audit)?;
            tx.commit()?;
            Ok(e)
        })
        .await
    }

    async fn enrollments(&self, patient: PatientId) -> Result<Vec<Enrollment>, RegistryError> {
        self.with(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM enrollments WHERE patient_id = ?1 ORDER BY start_date DESC"
            ))?;
            let rows = stmt.query_map([patient.as_str()], enrollment)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn open_enrollments(&self) -> Result<Vec<(PatientId, String)>, RegistryError> {
        self.with(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT e.patient_id, e.program FROM enrollments e
                 WHERE e.end_date IS NULL AND NOT EXISTS (
                    SELECT 1 FROM enrollments l
                     WHERE l.patient_id = e.patient_id AND l.start_date > e.start_date)
                 ORDER BY e.patient_id",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get(1)?)))?;
            let mut out = Vec::new();
            for row in rows {
                let (patient, program) = row?;
                if let Ok(p) = PatientId::parse(&patient) {
                    out.push((p, program));
                }
            }
            Ok(out)
        })
        .await
    }

    async fn add_time(
        &self,
        entry: TimeEntry,
        audit: NewAuditLine,
    ) -> Result<TimeEntry, RegistryError> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let patient = PatientId::parse(&entry.patient_id)
                .map_err(|why| RegistryError::Invalid(why.to_string()))?;
            require_patient(&tx, &patient)?;
            insert_time(&tx, &entry)?;
            append_in(&tx, &audit)?;
            tx.commit()?;
            Ok(entry)
        })
        .await
    }

    async fn add_setup(&self, setup: Setup, audit: NewAuditLine) -> Result<Setup, RegistryError> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let patient = PatientId::parse(&setup.patient_id)
                .map_err(|why| RegistryError::Invalid(why.to_string()))?;
            require_patient(&tx, &patient)?;
            let owner: Option<String> = tx
                .query_row(
                    "SELECT patient_id FROM devices WHERE id = ?1",
                    [&setup.device_id],
                    |r| r.get(0),
                )
                .optional()?;
            if owner.as_deref() != Some(setup.patient_id.as_str()) {
                return Err(not_the_patients(&setup));
            }
            tx.execute(
                &format!("INSERT INTO device_setups ({SETUP_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
                params![
                    setup.id,
                    setup.patient_id,
                    setup.device_id,
                    setup.date,
                    setup.note,
                    setup.user,
                    setup.created_ms()
                ],
            )?;
            timeline(
                &tx,
                &setup.patient_id,
                setup.created_ms(),
                "device_setup",
                &setup.timeline_data(),
            )?;
            append_in(&tx, &audit)?;
            tx.commit()?;
            Ok(setup)
        })
        .await
    }

    async fn start_timer(&self, timer: Timer, audit: NewAuditLine) -> Result<Timer, RegistryError> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let patient = PatientId::parse(&timer.patient_id)
                .map_err(|why| RegistryError::Invalid(why.to_string()))?;
            require_patient(&tx, &patient)?;
            let running: Option<String> = tx
                .query_row(
                    "SELECT patient_id FROM timers WHERE username = ?1",
                    [&timer.user],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(on) = running {
                return Err(timer_running(&on));
            }
            tx.execute(
                "INSERT INTO timers (username, patient_id, activity, started_ms)
                 VALUES (?1, ?2, ?3, ?4)",
                params![
                    timer.user,
                    timer.patient_id,
                    timer.activity,
                    timer.started_ms()
                ],
            )?;
            append_in(&tx, &audit)?;
            tx.commit()?;
            Ok(timer)
        })
        .await
    }

    async fn timer(&self, user: String) -> Result<Option<Timer>, RegistryError> {
        self.with(move |c| {
            Ok(c.query_row(
                "SELECT username, patient_id, activity, started_ms FROM timers WHERE username = ?1",
                [&user],
                timer_row,
            )
            .optional()?)
        })
        .await
    }

    async fn stop_timer(
        &self,
        user: String,
        now_ms: i64,
        stop: TimerStop,
        zone: Zone,
        audit: NewAuditLine,
    ) -> Result<Option<TimeEntry>, RegistryError> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let Some(timer) = tx
                .query_row(
                    "SELECT username, patient_id, activity, started_ms FROM timers
                      WHERE username = ?1",
                    [&user],
                    timer_row,
                )
                .optional()?
            else {
                return Ok(None);
            };
            let entry = timer.entry(now_ms, &stop, &zone)?;
            tx.execute("DELETE FROM timers WHERE username = ?1", [&user])?;
            insert_time(&tx, &entry)?;
            append_in(&tx, &audit.for_patient(&entry.patient_id, &entry.id))?;
            tx.commit()?;
            Ok(Some(entry))
        })
        .await
    }

    async fn setups(&self, patient: PatientId) -> Result<Vec<Setup>, RegistryError> {
        self.with(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {SETUP_COLUMNS} FROM device_setups WHERE patient_id = ?1
                  ORDER BY date, created_ms, id"
            ))?;
            let rows = stmt.query_map([patient.as_str()], |r| {
                Ok(Setup {
                    id: r.get(0)?,
                    patient_id: r.get(1)?,
                    device_id: r.get(2)?,
                    date: r.get(3)?,
                    note: r.get(4)?,
                    user: r.get(5)?,
                    created_at: format_rfc3339(r.get(6)?),
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn time_entries(
        &self,
        patient: PatientId,
        from: String,
        to: String,
    ) -> Result<Vec<TimeEntry>, RegistryError> {
        self.with(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {TIME_COLUMNS} FROM time_entries
                  WHERE patient_id = ?1 AND date >= ?2 AND date <= ?3 AND deleted_ms IS NULL
                  ORDER BY date, created_ms, id"
            ))?;
            let rows = stmt.query_map(params![patient.as_str(), from, to], time_entry)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn time_entry(
        &self,
        patient: PatientId,
        id: String,
    ) -> Result<Option<TimeEntry>, RegistryError> {
        self.with(move |c| {
            Ok(c.query_row(
                &format!(
                    "SELECT {TIME_COLUMNS} FROM time_entries
                      WHERE patient_id = ?1 AND id = ?2 AND deleted_ms IS NULL"
                ),
                params![patient.as_str(), id],
                time_entry,
            )
            .optional()?)
        })
        .await
    }

    async fn update_time(
        &self,
        entry: TimeEntry,
        version_ms: i64,
        audit: NewAuditLine,
    ) -> Result<Option<TimeEntry>, RegistryError> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let version: Option<i64> = tx
                .query_row(
                    "SELECT COALESCE(updated_ms, created_ms) FROM time_entries
                      WHERE patient_id = ?1 AND id = ?2 AND deleted_ms IS NULL",
                    params![entry.patient_id, entry.id],
                    |r| r.get(0),
                )
                .optional()?;
            match version {
                None => return Err(RegistryError::NotFound(format!("time entry {}", entry.id))),
                Some(v) if v != version_ms => return Ok(None),
                Some(_) => {}
            }
            tx.execute(
                "UPDATE time_entries SET date = ?3, minutes = ?4, activity = ?5, interactive = ?6,
                        note = ?7, updated_by = ?8, updated_ms = ?9
                  WHERE patient_id = ?1 AND id = ?2",
                params![
                    entry.patient_id,
                    entry.id,
                    entry.date,
                    entry.minutes,
                    entry.activity,
                    entry.interactive,
                    entry.note,
                    entry.updated_by,
                    entry.version_ms()
                ],
            )?;
            append_in(&tx, &audit)?;
            tx.commit()?;
            Ok(Some(entry))
        })
        .await
    }

    async fn delete_time(
        &self,
        patient: PatientId,
        id: String,
        by: String,
        now_ms: i64,
        audit: NewAuditLine,
    ) -> Result<(), RegistryError> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let n = tx.execute(
                "UPDATE time_entries SET deleted_by = ?3, deleted_ms = ?4
                  WHERE patient_id = ?1 AND id = ?2 AND deleted_ms IS NULL",
                params![patient.as_str(), id, by, now_ms],
            )?;
            if n == 0 {
                return Err(RegistryError::NotFound(format!("time entry {id}")));
            }
            append_in(&tx, &audit)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }
}
