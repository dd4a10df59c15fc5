//! API tokens on PostgreSQL (`api_tokens`). A token's user must exist: the table references
//! `users` (since step 4).

use tokio_postgres::Row;
use tokio_postgres::error::SqlState;

use super::audit::append_in;
use super::{PgDb, PgError};
use crate::registry::audit::NewAuditLine;
use crate::registry::error::RegistryError;
use crate::registry::storage::TokenStore;
use crate::registry::tokens::{LiveBy, NewApiToken, Scope, StoredToken};

const COLUMNS: &str = "id, username, label, scope, created_ms, expires_ms, revoked_ms";

fn token(r: &Row) -> StoredToken {
    StoredToken {
        id: r.get(0),
        user: r.get(1),
        label: r.get(2),
        scope: Scope::from_stored(r.get(3)),
        created_ms: r.get(4),
        expires_ms: r.get(5),
        revoked_ms: r.get(6),
    }
}

/// The refusal of a new token as the API can answer it: a taken id or hash, or no such user.
fn refused(e: tokio_postgres::Error, t: &NewApiToken) -> RegistryError {
    match PgError::from(e) {
        PgError::Db {
            code: Some(code), ..
        } if code == SqlState::UNIQUE_VIOLATION => RegistryError::Exists(format!("token {}", t.id)),
        PgError::Db {
            code: Some(code), ..
        } if code == SqlState::FOREIGN_KEY_VIOLATION => {
            RegistryError::NotFound(format!("user {}", t.user))
        }
        e => e.into(),
    }
}

#[async_trait::async_trait]
impl TokenStore for PgDb {
    async fn create_token(
        &self,
        t: NewApiToken,
        audit: NewAuditLine,
    ) -> Result<StoredToken, RegistryError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(PgError::from)?;
        tx.execute(
            "INSERT INTO api_tokens (id, token_hash, username, label, scope, created_ms, expires_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &t.id,
                &t.hash.as_slice(),
                &t.user,
                &t.label,
                &t.scope.as_str(),
                &t.created_ms,
                &t.expires_ms,
            ],
        )
        .await
        .map_err(|e| refused(e, &t))?;
        append_in(&tx, &audit).await?;
        tx.commit().await.map_err(PgError::from)?;
        Ok(t.stored())
    }

    async fn tokens(&self, user: Option<String>) -> Result<Vec<StoredToken>, RegistryError> {
        let c = self.conn().await?;
        // Ids compared byte by byte, as SQLite does, whatever the database's collation.
        let rows = c
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM api_tokens WHERE $1::text IS NULL OR username = $1
                     ORDER BY created_ms DESC, id COLLATE \"C\""
                ),
                &[&user],
            )
            .await
            .map_err(PgError::from)?;
        Ok(rows.iter().map(token).collect())
    }

    async fn token_by_id(&self, id: String) -> Result<Option<StoredToken>, RegistryError> {
        let c = self.conn().await?;
        let row = c
            .query_opt(
                &format!("SELECT {COLUMNS} FROM api_tokens WHERE id = $1"),
                &[&id],
            )
            .await
            .map_err(PgError::from)?;
        Ok(row.as_ref().map(token))
    }

    async fn live_token(
        &self,
        by: LiveBy,
        now_ms: i64,
    ) -> Result<Option<StoredToken>, RegistryError> {
        let c = self.conn().await?;
        let live = "revoked_ms IS NULL AND expires_ms > $2";
        let row = match by {
            LiveBy::Hash(h) => {
                c.query_opt(
                    &format!("SELECT {COLUMNS} FROM api_tokens WHERE token_hash = $1 AND {live}"),
                    &[&h.as_slice(), &now_ms],
                )
                .await
            }
            LiveBy::Id(id) => {
                c.query_opt(
                    &format!("SELECT {COLUMNS} FROM api_tokens WHERE id = $1 AND {live}"),
                    &[&id, &now_ms],
                )
                .await
            }
        }
        .map_err(PgError::from)?;
        Ok(row.as_ref().map(token))
    }

    async fn revoke_token(
        &self,
        id: String,
        now_ms: i64,
        audit: NewAuditLine,
    ) -> Result<StoredToken, RegistryError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(PgError::from)?;
        // COALESCE keeps the first revocation's time, as the SQLite backend's condition does;
        // RETURNING reads the row as this transaction left it.
        let row = tx
            .query_opt(
                &format!(
                    "UPDATE api_tokens SET revoked_ms = COALESCE(revoked_ms, $2) WHERE id = $1
                     RETURNING {COLUMNS}"
                ),
                &[&id, &now_ms],
            )
            .await
            .map_err(PgError::from)?;
        // No such token: the transaction is dropped (rolled back), so nothing is appended.
        let t = row
            .as_ref()
            .map(token)
            .ok_or_else(|| RegistryError::NotFound(format!("token {id}")))?;
        append_in(&tx, &audit).await?;
        tx.commit().await.map_err(PgError::from)?;
        Ok(t)
    }
}
