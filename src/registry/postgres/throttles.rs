//! Failed authentications counted across instances, on PostgreSQL. Each report is one upsert
//! that locks its key's row, so reports made at once through several instances all count.
//! Keys are ordered byte by byte (`COLLATE "C"`), as SQLite orders them.

use super::{PgDb, PgError};
use crate::registry::error::RegistryError;
use crate::registry::storage::ThrottleStore;
use crate::registry::throttles::{FailureCount, FailureReport};

#[async_trait::async_trait]
impl ThrottleStore for PgDb {
    async fn report_failures(
        &self,
        reports: Vec<FailureReport>,
    ) -> Result<Vec<FailureCount>, RegistryError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(PgError::from)?;
        let stmt = tx
            .prepare_cached(
                "INSERT INTO throttle_failures (key, count, last_ms)
                 VALUES ($1, CASE WHEN $2 THEN 1 ELSE 0 END, $3)
                 ON CONFLICT (key) DO UPDATE SET
                    count = CASE
                        WHEN NOT $2 THEN 0
                        WHEN throttle_failures.last_ms <= $3 - $4 THEN 1
                        ELSE throttle_failures.count + 1 END,
                    last_ms = GREATEST(throttle_failures.last_ms, excluded.last_ms)
                 RETURNING count, last_ms",
            )
            .await
            .map_err(PgError::from)?;
        let mut counts = Vec::with_capacity(reports.len());
        for r in reports {
            let row = tx
                .query_one(&stmt, &[&r.key, &r.failed, &r.at_ms, &r.forget_ms])
                .await
                .map_err(PgError::from)?;
            counts.push(FailureCount {
                key: r.key,
                count: u32::try_from(row.get::<_, i32>(0)).unwrap_or(0),
                last_ms: row.get(1),
            });
        }
        tx.commit().await.map_err(PgError::from)?;
        Ok(counts)
    }

    async fn failures_after(
        &self,
        since_ms: i64,
        after_key: String,
        limit: usize,
    ) -> Result<Vec<FailureCount>, RegistryError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .conn()
            .await?
            .query(
                "SELECT key, count, last_ms FROM throttle_failures
                  WHERE (last_ms, key COLLATE \"C\") > ($1, $2)
                  ORDER BY last_ms, key COLLATE \"C\" LIMIT $3",
                &[&since_ms, &after_key, &limit],
            )
            .await
            .map_err(PgError::from)?;
        Ok(rows
            .iter()
            .map(|r| FailureCount {
                key: r.get(0),
                count: u32::try_from(r.get::<_, i32>(1)).unwrap_or(0),
                last_ms: r.get(2),
            })
            .collect())
    }

    async fn prune_failures(&self, before_ms: i64) -> Result<u64, RegistryError> {
        Ok(self
            .conn()
            .await?
            .execute(
                "DELETE FROM throttle_failures WHERE last_ms < $1",
                &[&before_ms],
            )
            .await
            .map_err(PgError::from)?)
    }
}
