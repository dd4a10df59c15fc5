//! Leases on SQLite. One statement each: SQLite's upsert takes, renews or leaves a lease under
//! the database's write lock, so of two writers the second sees the first's holding.

use rusqlite::{OptionalExtension as _, params};

use super::SqliteDb;
use crate::registry::error::RegistryError;
use crate::registry::lease::Lease;
use crate::registry::storage::LeaseStore;

#[async_trait::async_trait]
impl LeaseStore for SqliteDb {
    async fn acquire_lease(
        &self,
        name: String,
        holder: String,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<Option<Lease>, RegistryError> {
        self.with(move |c| {
            let got = c
                .query_row(
                    "INSERT INTO leases (name, holder, epoch, expires_ms)
                     VALUES (?1, ?2, 1, ?4)
                     ON CONFLICT (name) DO UPDATE SET
                        epoch = CASE WHEN leases.holder = excluded.holder
                                      AND leases.expires_ms > ?3
                                     THEN leases.epoch ELSE leases.epoch + 1 END,
                        holder = excluded.holder,
                        expires_ms = excluded.expires_ms
                     WHERE leases.holder = excluded.holder OR leases.expires_ms <= ?3
                     RETURNING epoch, expires_ms",
                    params![name, holder, now_ms, now_ms.saturating_add(ttl_ms)],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            Ok(got.map(|(epoch, expires_ms)| Lease {
                name,
                holder,
                epoch,
                expires_ms,
            }))
        })
        .await
    }

    async fn release_lease(
        &self,
        name: String,
        holder: String,
        epoch: i64,
    ) -> Result<bool, RegistryError> {
        self.with(move |c| {
            Ok(c.execute(
                "UPDATE leases SET expires_ms = 0 WHERE name = ?1 AND holder = ?2 AND epoch = ?3",
                params![name, holder, epoch],
            )? == 1)
        })
        .await
    }

    async fn lease(&self, name: String) -> Result<Option<Lease>, RegistryError> {
        self.with(move |c| {
            Ok(c.query_row(
                "SELECT holder, epoch, expires_ms FROM leases WHERE name = ?1",
                [&name],
                |r| {
                    Ok(Lease {
                        name: name.clone(),
                        holder: r.get(0)?,
                        epoch: r.get(1)?,
                        expires_ms: r.get(2)?,
                    })
                },
            )
            .optional()?)
        })
        .await
    }

    async fn live_leases(&self, prefix: String, now_ms: i64) -> Result<Vec<Lease>, RegistryError> {
        self.with(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT name, holder, epoch, expires_ms FROM leases
                  WHERE substr(name, 1, length(?1)) = ?1 AND expires_ms > ?2 ORDER BY name",
            )?;
            let rows = stmt.query_map(params![prefix, now_ms], |r| {
                Ok(Lease {
                    name: r.get(0)?,
                    holder: r.get(1)?,
                    epoch: r.get(2)?,
                    expires_ms: r.get(3)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }
}
