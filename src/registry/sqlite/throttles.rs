//! Failed authentications, on SQLite: kept over the one instance's restarts. The reports of a
//! batch are one `IMMEDIATE` transaction.

use rusqlite::{TransactionBehavior, params};

use super::SqliteDb;
use crate::registry::error::RegistryError;
use crate::registry::storage::ThrottleStore;
use crate::registry::throttles::{FailureCount, FailureReport};

#[async_trait::async_trait]
impl ThrottleStore for SqliteDb {
    async fn report_failures(
        &self,
        reports: Vec<FailureReport>,
    ) -> Result<Vec<FailureCount>, RegistryError> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut counts = Vec::with_capacity(reports.len());
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT INTO throttle_failures (key, count, last_ms)
                     VALUES (?1, CASE WHEN ?2 THEN 1 ELSE 0 END, ?3)
                     ON CONFLICT (key) DO UPDATE SET
                        count = CASE
                            WHEN NOT ?2 THEN 0
                            WHEN throttle_failures.last_ms <= ?3 - ?4 THEN 1
                            ELSE throttle_failures.count + 1 END,
                        last_ms = MAX(throttle_failures.last_ms, excluded.last_ms)
                     RETURNING count, last_ms",
                )?;
                for r in reports {
                    let (count, last_ms): (i64, i64) = stmt
                        .query_row(params![r.key, r.failed, r.at_ms, r.forget_ms], |row| {
                            Ok((row.get(0)?, row.get(1)?))
                        })?;
                    counts.push(FailureCount {
                        key: r.key,
                        count: u32::try_from(count).unwrap_or(0),
                        last_ms,
                    });
                }
            }
            tx.commit()?;
            Ok(counts)
        })
        .await
    }

    async fn failures_after(
        &self,
        since_ms: i64,
        after_key: String,
        limit: usize,
    ) -> Result<Vec<FailureCount>, RegistryError> {
        self.with(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT key, count, last_ms FROM throttle_failures
                  WHERE (last_ms, key) > (?1, ?2) ORDER BY last_ms, key LIMIT ?3",
            )?;
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let rows = stmt.query_map(params![since_ms, after_key, limit], |r| {
                Ok(FailureCount {
                    key: r.get(0)?,
                    count: u32::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                    last_ms: r.get(2)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn prune_failures(&self, before_ms: i64) -> Result<u64, RegistryError> {
        self.with(move |c| {
            Ok(c.execute(
                "DELETE FROM throttle_failures WHERE last_ms < ?1",
                [before_ms],
            )? as u64)
        })
        .await
    }
}
