//! Leases on PostgreSQL. One statement each: the upsert locks the lease's row, so of several
//! instances asking at once each sees the holding the one before it committed, and one gets it.

use super::{PgDb, PgError};
use crate::registry::error::RegistryError;
use crate::registry::lease::Lease;
use crate::registry::storage::LeaseStore;

#[async_trait::async_trait]
impl LeaseStore for PgDb {
    async fn acquire_lease(
        &self,
        name: String,
        holder: String,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<Option<Lease>, RegistryError> {
        let until = now_ms.saturating_add(ttl_ms);
        let row = self
            .conn()
            .await?
            .query_opt(
                "INSERT INTO leases (name, holder, epoch, expires_ms)
                 VALUES ($1, $2, 1, $4)
                 ON CONFLICT (name) DO UPDATE SET
                    epoch = CASE WHEN leases.holder = excluded.holder
                                  AND leases.expires_ms > $3
                                 THEN leases.epoch ELSE leases.epoch + 1 END,
                    holder = excluded.holder,
                    expires_ms = excluded.expires_ms
                 WHERE leases.holder = excluded.holder OR leases.expires_ms <= $3
                 RETURNING epoch, expires_ms",
                &[&name, &holder, &now_ms, &until],
            )
            .await
            .map_err(PgError::from)?;
        Ok(row.map(|r| Lease {
            name,
            holder,
            epoch: r.get(0),
            expires_ms: r.get(1),
        }))
    }

    async fn release_lease(
        &self,
        name: String,
        holder: String,
        epoch: i64,
    ) -> Result<bool, RegistryError> {
        let n = self
            .conn()
            .await?
            .execute(
                "UPDATE leases SET expires_ms = 0 WHERE name = $1 AND holder = $2 AND epoch = $3",
                &[&name, &holder, &epoch],
            )
            .await
            .map_err(PgError::from)?;
        Ok(n == 1)
    }

    async fn lease(&self, name: String) -> Result<Option<Lease>, RegistryError> {
        let row = self
            .conn()
            .await?
            .query_opt(
                "SELECT holder, epoch, expires_ms FROM leases WHERE name = $1",
                &[&name],
            )
            .await
            .map_err(PgError::from)?;
        Ok(row.map(|r| Lease {
            name,
            holder: r.get(0),
            epoch: r.get(1),
            expires_ms: r.get(2),
        }))
    }

    async fn live_leases(&self, prefix: String, now_ms: i64) -> Result<Vec<Lease>, RegistryError> {
        let rows = self
            .conn()
            .await?
            .query(
                "SELECT name, holder, epoch, expires_ms FROM leases
                  WHERE left(name, length($1)) = $1 AND expires_ms > $2
                  ORDER BY name COLLATE \"C\"",
                &[&prefix, &now_ms],
            )
            .await
            .map_err(PgError::from)?;
        Ok(rows
            .iter()
            .map(|r| Lease {
                name: r.get(0),
                holder: r.get(1),
                epoch: r.get(2),
                expires_ms: r.get(3),
            })
            .collect())
    }
}
