//! How to reach each user on PostgreSQL: one row per user holding their contact details as
//! JSON text (`registry::contacts`). A change locks the user's row first, so two changes of
//! one user's details are applied one after the other and both survive.

use super::audit::append_in;
use super::{PgDb, PgError};
use crate::registry::audit::NewAuditLine;
use crate::registry::contacts::{Contact, ContactChange};
use crate::registry::error::RegistryError;
use crate::registry::storage::ContactStore;

#[async_trait::async_trait]
impl ContactStore for PgDb {
    async fn change_contact(
        &self,
        user: String,
        change: ContactChange,
        audit: NewAuditLine,
    ) -> Result<Contact, RegistryError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(PgError::from)?;
        let found = tx
            .query_opt(
                "SELECT 1 FROM users WHERE username = $1 FOR UPDATE",
                &[&user],
            )
            .await
            .map_err(PgError::from)?;
        if found.is_none() {
            return Err(RegistryError::NotFound(format!("user {user}")));
        }
        let old: Contact = tx
            .query_opt(
                "SELECT contact FROM user_contacts WHERE username = $1",
                &[&user],
            )
            .await
            .map_err(PgError::from)?
            .and_then(|r| serde_json::from_str(&r.get::<_, String>(0)).ok())
            .unwrap_or_default();
        let new = change.applied_to(old)?;
        let json = serde_json::to_string(&new).map_err(|e| RegistryError::Db(e.to_string()))?;
        tx.execute(
            "INSERT INTO user_contacts (username, contact, updated_ms) VALUES ($1, $2, $3)
             ON CONFLICT (username) DO UPDATE SET contact = excluded.contact,
                updated_ms = excluded.updated_ms",
            &[&user, &json, &audit.time_ms],
        )
        .await
        .map_err(PgError::from)?;
        append_in(&tx, &audit).await?;
        tx.commit().await.map_err(PgError::from)?;
        Ok(new)
    }

    async fn contacts(&self) -> Result<Vec<(String, Contact)>, RegistryError> {
        let c = self.conn().await?;
        Ok(c.query(
            "SELECT username, contact FROM user_contacts ORDER BY username COLLATE \"C\"",
            &[],
        )
        .await
        .map_err(PgError::from)?
        .iter()
        .map(|r| {
            (
                r.get::<_, String>(0),
                serde_json::from_str(&r.get::<_, String>(1)).unwrap_or_default(),
            )
        })
        .collect())
    }
}
