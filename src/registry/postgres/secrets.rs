//! Shared secrets on PostgreSQL: the first instance to ask stores its candidate; the insert
//! waits on a concurrent one for the same name, so every instance reads the same secret.

use super::{PgDb, PgError};
use crate::registry::error::RegistryError;
use crate::registry::storage::SecretStore;

#[async_trait::async_trait]
impl SecretStore for PgDb {
    async fn shared_secret(
        &self,
        name: String,
        candidate: Vec<u8>,
        now_ms: i64,
    ) -> Result<Vec<u8>, RegistryError> {
        let c = self.conn().await?;
        c.execute(
            "INSERT INTO secrets (name, value, created_ms) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO NOTHING",
            &[&name, &candidate, &now_ms],
        )
        .await
        .map_err(PgError::from)?;
        let row = c
            .query_one("SELECT value FROM secrets WHERE name = $1", &[&name])
            .await
            .map_err(PgError::from)?;
        Ok(row.get(0))
    }
}
