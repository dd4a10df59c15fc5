//! Video visits on SQLite: the `visits` table, and the `timeline` rows their start and end
//! write in the same transaction (the timeline is the CRM record's table; the visit only
//! appends to it). Changes begin `IMMEDIATE`, so the visit read and the change made from it
//! cannot interleave with another writer's.

use rusqlite::{Connection, OptionalExtension as _, Transaction, TransactionBehavior, params};

use super::SqliteDb;
use super::audit::append_in;
use super::programmes::insert_time;
use crate::domain::zone::Zone;
use crate::registry::audit::NewAuditLine;
use crate::registry::error::RegistryError;
use crate::registry::lease::instance_lease;
use crate::registry::storage::VisitStore;
use crate::registry::visits::{NewVisit, StoredVisit, TimelineEntry, VisitHost};

fn load(c: &Connection, id: &str) -> Result<Option<StoredVisit>, RegistryError> {
    Ok(c.query_row(
        "SELECT id, patient_id, created_by, created_ms, expires_ms, started_ms, ended_ms, ended_by
         FROM visits WHERE id = ?1",
        [id],
        |r| {
            Ok(StoredVisit {
                id: r.get(0)?,
                patient_id: r.get(1)?,
                created_by: r.get(2)?,
                created_ms: r.get(3)?,
                expires_ms: r.get(4)?,
                started_ms: r.get(5)?,
                ended_ms: r.get(6)?,
                ended_by: r.get(7)?,
            })
        },
    )
    .optional()?)
}

/// The visit `id` inside a transaction that just wrote it.
fn reload(tx: &Transaction<'_>, id: &str) -> Result<StoredVisit, RegistryError> {
    load(tx, id)?.ok_or_else(|| RegistryError::Db("visit vanished".into()))
}

fn write_timeline(tx: &Transaction<'_>, e: &TimelineEntry) -> Result<(), RegistryError> {
    tx.execute(
        "INSERT INTO timeline (patient_id, time_ms, kind, data) VALUES (?1, ?2, ?3, ?4)",
        params![e.patient_id, e.time_ms, e.kind, e.data],
    )?;
    Ok(())
}

/// A visit id taken already is `Exists`, like on PostgreSQL.
fn taken(e: rusqlite::Error, id: &str) -> RegistryError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
        {
            RegistryError::Exists(format!("visit {id}"))
        }
        _ => e.into(),
    }
}

#[async_trait::async_trait]
impl VisitStore for SqliteDb {
    async fn create_visit(
        &self,
        v: NewVisit,
        audit: NewAuditLine,
    ) -> Result<StoredVisit, RegistryError> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let exists: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM patients WHERE id = ?1)",
                [&v.patient_id],
                |r| r.get(0),
            )?;
            if !exists {
                return Err(RegistryError::NotFound(format!("patient {}", v.patient_id)));
            }
            tx.execute(
                "INSERT INTO visits (id, patient_id, created_by, created_ms, expires_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![v.id, v.patient_id, v.created_by, v.created_ms, v.expires_ms],
            )
            .map_err(|e| taken(e, &v.id))?;
            append_in(&tx, &audit)?;
            let stored = reload(&tx, &v.id)?;
            tx.commit()?;
            Ok(stored)
        })
        .await
    }

    async fn visit(&self, id: String) -> Result<Option<StoredVisit>, RegistryError> {
        self.with(move |c| load(c, &id)).await
    }

    async fn start_visit(
        &self,
        id: String,
        by: String,
        now_ms: i64,
    ) -> Result<StoredVisit, RegistryError> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let v =
                load(&tx, &id)?.ok_or_else(|| RegistryError::NotFound(format!("visit {id}")))?;
            if v.can_start() {
                tx.execute(
                    "UPDATE visits SET started_ms = ?2 WHERE id = ?1",
                    params![id, now_ms],
                )?;
                write_timeline(&tx, &v.started_entry(&by, now_ms))?;
            }
            let stored = reload(&tx, &id)?;
            tx.commit()?;
            Ok(stored)
        })
        .await
    }

    async fn end_visit(
        &self,
        id: String,
        by: String,
        now_ms: i64,
        audit: Option<NewAuditLine>,
        zone: Zone,
    ) -> Result<StoredVisit, RegistryError> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let v =
                load(&tx, &id)?.ok_or_else(|| RegistryError::NotFound(format!("visit {id}")))?;
            if v.can_end() {
                tx.execute(
                    "UPDATE visits SET ended_ms = ?2, ended_by = ?3 WHERE id = ?1",
                    params![id, now_ms, by],
                )?;
                write_timeline(&tx, &v.ended_entry(&by, now_ms))?;
                if let Some(entry) = v.time_entry(now_ms, &zone)? {
                    insert_time(&tx, &entry)?;
                }
            }
            if let Some(line) = &audit {
                append_in(&tx, line)?;
            }
            let stored = reload(&tx, &id)?;
            tx.commit()?;
            Ok(stored)
        })
        .await
    }

    async fn host_visit(
        &self,
        id: String,
        host: VisitHost,
        now_ms: i64,
    ) -> Result<Option<VisitHost>, RegistryError> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let Some((current, url)) = tx
                .query_row(
                    "SELECT host, host_url FROM visits WHERE id = ?1",
                    [&id],
                    |r| {
                        Ok((
                            r.get::<_, Option<String>>(0)?,
                            r.get::<_, Option<String>>(1)?,
                        ))
                    },
                )
                .optional()?
            else {
                return Ok(None);
            };
            if let Some(other) = current.filter(|h| *h != host.instance) {
                let alive = tx
                    .query_row(
                        "SELECT 1 FROM leases WHERE name = ?1 AND expires_ms > ?2",
                        params![instance_lease(&other), now_ms],
                        |_| Ok(()),
                    )
                    .optional()?
                    .is_some();
                if alive {
                    return Ok(Some(VisitHost {
                        instance: other,
                        url: url.unwrap_or_default(),
                    }));
                }
            }
            tx.execute(
                "UPDATE visits SET host = ?2, host_url = ?3 WHERE id = ?1",
                params![id, host.instance, host.url],
            )?;
            tx.commit()?;
            Ok(Some(host))
        })
        .await
    }
}
