//! API tokens on SQLite (`api_tokens`, schema version 6). A token's user must exist: the table
//! references `users`.

use rusqlite::{OptionalExtension as _, TransactionBehavior, params};

use super::SqliteDb;
use super::audit::append_in;
use crate::registry::audit::NewAuditLine;
use crate::registry::error::RegistryError;
use crate::registry::storage::TokenStore;
use crate::registry::tokens::{LiveBy, NewApiToken, Scope, StoredToken};

const COLUMNS: &str = "id, username, label, scope, created_ms, expires_ms, revoked_ms";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredToken> {
    Ok(StoredToken {
        id: r.get(0)?,
        user: r.get(1)?,
        label: r.get(2)?,
        scope: Scope::from_stored(&r.get::<_, String>(3)?),
        created_ms: r.get(4)?,
        expires_ms: r.get(5)?,
        revoked_ms: r.get(6)?,
    })
}

/// The refusal of a new token as the API can answer it: a taken id or hash, or no such user.
fn refused(e: rusqlite::Error, t: &NewApiToken) -> RegistryError {
    if let rusqlite::Error::SqliteFailure(f, _) = &e {
        match f.extended_code {
            rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            | rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE => {
                return RegistryError::Exists(format!("token {}", t.id));
            }
            rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY => {
                return RegistryError::NotFound(format!("user {}", t.user));
            }
            _ => {}
        }
    }
    e.into()
}

#[async_trait::async_trait]
impl TokenStore for SqliteDb {
    async fn create_token(
        &self,
        t: NewApiToken,
        audit: NewAuditLine,
    ) -> Result<StoredToken, RegistryError> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute(
                "INSERT INTO api_tokens (id, token_hash, username, label, scope, created_ms, expires_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    t.id,
                    t.hash.as_slice(),
                    t.user,
                    t.label,
                    t.scope.as_str(),
                    t.created_ms,
                    t.expires_ms
                ],
            )
            .map_err(|e| refused(e, &t))?;
            append_in(&tx, &audit)?;
            tx.commit()?;
            Ok(t.stored())
        })
        .await
    }

    async fn tokens(&self, user: Option<String>) -> Result<Vec<StoredToken>, RegistryError> {
        self.with(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM api_tokens WHERE ?1 IS NULL OR username = ?1
                 ORDER BY created_ms DESC, id"
            ))?;
            let rows = stmt.query_map([user], row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn token_by_id(&self, id: String) -> Result<Option<StoredToken>, RegistryError> {
        self.with(move |c| {
            let sql = format!("SELECT {COLUMNS} FROM api_tokens WHERE id = ?1");
            Ok(c.query_row(&sql, [id], row).optional()?)
        })
        .await
    }

    async fn live_token(
        &self,
        by: LiveBy,
        now_ms: i64,
    ) -> Result<Option<StoredToken>, RegistryError> {
        self.with(move |c| {
            let live = "revoked_ms IS NULL AND expires_ms > ?2";
            let found = match by {
                LiveBy::Hash(h) => c.query_row(
                    &format!("SELECT {COLUMNS} FROM api_tokens WHERE token_hash = ?1 AND {live}"),
                    params![h.as_slice(), now_ms],
                    row,
                ),
                LiveBy::Id(id) => c.query_row(
                    &format!("SELECT {COLUMNS} FROM api_tokens WHERE id = ?1 AND {live}"),
                    params![id, now_ms],
                    row,
                ),
            };
            Ok(found.optional()?)
        })
        .await
    }

    async fn revoke_token(
        &self,
        id: String,
        now_ms: i64,
        audit: NewAuditLine,
    ) -> Result<StoredToken, RegistryError> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute(
                "UPDATE api_tokens SET revoked_ms = ?2 WHERE id = ?1 AND revoked_ms IS NULL",
                params![id, now_ms],
            )?;
            let sql = format!("SELECT {COLUMNS} FROM api_tokens WHERE id = ?1");
            // No such token: the transaction is dropped, so nothing is appended.
            let t = tx
                .query_row(&sql, [&id], row)
                .optional()?
                .ok_or_else(|| RegistryError::NotFound(format!("token {id}")))?;
            append_in(&tx, &audit)?;
            tx.commit()?;
            Ok(t)
        })
        .await
    }
}
