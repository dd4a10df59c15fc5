//! Video visits on PostgreSQL: the `visits` table, and the `timeline` rows their start and end
//! write in the same transaction. A change reads the visit `FOR UPDATE`, so of two instances
//! starting (or ending) one visit at once the second waits and then finds it started: it starts
//! once and has one `visit.started` entry.

use tokio_postgres::Row;
use tokio_postgres::error::SqlState;

use super::audit::append_in;
use super::programmes::insert_time;
use super::{PgDb, PgError};
use crate::domain::zone::Zone;
use crate::registry::audit::NewAuditLine;
use crate::registry::error::RegistryError;
use crate::registry::lease::instance_lease;
use crate::registry::storage::VisitStore;
use crate::registry::visits::{NewVisit, StoredVisit, TimelineEntry, VisitHost};

const COLUMNS: &str =
    "id, patient_id, created_by, created_ms, expires_ms, started_ms, ended_ms, ended_by";

fn visit(r: &Row) -> StoredVisit {
    StoredVisit {
        id: r.get(0),
        patient_id: r.get(1),
        created_by: r.get(2),
        created_ms: r.get(3),
        expires_ms: r.get(4),
        started_ms: r.get(5),
        ended_ms: r.get(6),
        ended_by: r.get(7),
    }
}

/// The visit `id`, locked until the transaction ends; `NotFound` when there is none.
async fn lock(
    tx: &tokio_postgres::Transaction<'_>,
    id: &str,
) -> Result<StoredVisit, RegistryError> {
    tx.query_opt(
        &format!("SELECT {COLUMNS} FROM visits WHERE id = $1 FOR UPDATE"),
        &[&id],
    )
    .await
    .map_err(PgError::from)?
    .map(|r| visit(&r))
    .ok_or_else(|| RegistryError::NotFound(format!("visit {id}")))
}

async fn write_timeline(
    tx: &tokio_postgres::Transaction<'_>,
    e: &TimelineEntry,
) -> Result<(), PgError> {
    tx.execute(
        "INSERT INTO timeline (patient_id, time_ms, kind, data) VALUES ($1, $2, $3, $4)",
        &[&e.patient_id, &e.time_ms, &e.kind, &e.data],
    )
    .await?;
    Ok(())
}

/// The insert's refusal in the registry's words: a taken id is `Exists` and an unknown patient
/// `NotFound`, as on SQLite.
fn refused(e: tokio_postgres::Error, v: &NewVisit) -> RegistryError {
    match PgError::from(e) {
        PgError::Db { code: Some(c), .. } if c == SqlState::UNIQUE_VIOLATION => {
            RegistryError::Exists(format!("visit {}", v.id))
        }
        PgError::Db { code: Some(c), .. } if c == SqlState::FOREIGN_KEY_VIOLATION => {
            RegistryError::NotFound(format!("patient {}", v.patient_id))
        }
        e => e.into(),
    }
}

#[async_trait::async_trait]
impl VisitStore for PgDb {
    async fn create_visit(
        &self,
        v: NewVisit,
        audit: NewAuditLine,
    ) -> Result<StoredVisit, RegistryError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(PgError::from)?;
        // `visits.patient_id` references `patients`: an unknown patient is refused here as a
        // foreign key violation.
        let row = tx
            .query_one(
                &format!(
                    "INSERT INTO visits (id, patient_id, created_by, created_ms, expires_ms)
                     VALUES ($1, $2, $3, $4, $5) RETURNING {COLUMNS}"
                ),
                &[
                    &v.id,
                    &v.patient_id,
                    &v.created_by,
                    &v.created_ms,
                    &v.expires_ms,
                ],
            )
            .await
            .map_err(|e| refused(e, &v))?;
        append_in(&tx, &audit).await?;
        tx.commit().await.map_err(PgError::from)?;
        Ok(visit(&row))
    }

    async fn visit(&self, id: String) -> Result<Option<StoredVisit>, RegistryError> {
        let c = self.conn().await?;
        let row = c
            .query_opt(
                &format!("SELECT {COLUMNS} FROM visits WHERE id = $1"),
                &[&id],
            )
            .await
            .map_err(PgError::from)?;
        Ok(row.map(|r| visit(&r)))
    }

    async fn start_visit(
        &self,
        id: String,
        by: String,
        now_ms: i64,
    ) -> Result<StoredVisit, RegistryError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(PgError::from)?;
        let mut v = lock(&tx, &id).await?;
        if v.can_start() {
            tx.execute(
                "UPDATE visits SET started_ms = $2 WHERE id = $1",
                &[&id, &now_ms],
            )
            .await
            .map_err(PgError::from)?;
            write_timeline(&tx, &v.started_entry(&by, now_ms)).await?;
            v.started_ms = Some(now_ms);
        }
        tx.commit().await.map_err(PgError::from)?;
        Ok(v)
    }

    async fn end_visit(
        &self,
        id: String,
        by: String,
        now_ms: i64,
        audit: Option<NewAuditLine>,
        zone: Zone,
    ) -> Result<StoredVisit, RegistryError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(PgError::from)?;
        let mut v = lock(&tx, &id).await?;
        if v.can_end() {
            tx.execute(
                "UPDATE visits SET ended_ms = $2, ended_by = $3 WHERE id = $1",
                &[&id, &now_ms, &by],
            )
            .await
            .map_err(PgError::from)?;
            write_timeline(&tx, &v.ended_entry(&by, now_ms)).await?;
            if let Some(entry) = v.time_entry(now_ms, &zone)? {
                insert_time(&tx, &entry).await?;
            }
            v.ended_ms = Some(now_ms);
            v.ended_by = Some(by);
        }
        if let Some(line) = &audit {
            append_in(&tx, line).await?;
        }
        tx.commit().await.map_err(PgError::from)?;
        Ok(v)
    }

    async fn host_visit(
        &self,
        id: String,
        host: VisitHost,
        now_ms: i64,
    ) -> Result<Option<VisitHost>, RegistryError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(PgError::from)?;
        let Some(row) = tx
            .query_opt(
                "SELECT host, host_url FROM visits WHERE id = $1 FOR UPDATE",
                &[&id],
            )
            .await
            .map_err(PgError::from)?
        else {
            return Ok(None);
        };
        let current: Option<String> = row.get(0);
        if let Some(other) = current.filter(|h| *h != host.instance) {
            let alive = tx
                .query_opt(
                    "SELECT 1 FROM leases WHERE name = $1 AND expires_ms > $2",
                    &[&instance_lease(&other), &now_ms],
                )
                .await
                .map_err(PgError::from)?
                .is_some();
            if alive {
                return Ok(Some(VisitHost {
                    instance: other,
                    url: row.get::<_, Option<String>>(1).unwrap_or_default(),
                }));
            }
        }
        tx.execute(
            "UPDATE visits SET host = $2, host_url = $3 WHERE id = $1",
            &[&id, &host.instance, &host.url],
        )
        .await
        .map_err(PgError::from)?;
        tx.commit().await.map_err(PgError::from)?;
        Ok(Some(host))
    }
}
