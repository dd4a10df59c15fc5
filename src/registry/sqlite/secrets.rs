//! Shared secrets on SQLite: kept in the registry, so that a move to PostgreSQL takes them.

use rusqlite::params;

use super::SqliteDb;
use crate::registry::error::RegistryError;
use crate::registry::storage::SecretStore;

#[async_trait::async_trait]
impl SecretStore for SqliteDb {
    async fn shared_secret(
        &self,
        name: String,
        candidate: Vec<u8>,
        now_ms: i64,
    ) -> Result<Vec<u8>, RegistryError> {
        self.with(move |c| {
            c.execute(
                "INSERT INTO secrets (name, value, created_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO NOTHING",
                params![name, candidate, now_ms],
            )?;
            Ok(
                c.query_row("SELECT value FROM secrets WHERE name = ?1", [&name], |r| {
                    r.get(0)
                })?,
            )
        })
        .await
    }
}
