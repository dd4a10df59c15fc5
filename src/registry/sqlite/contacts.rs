//! How to reach each user on SQLite: one row per user holding their contact details as JSON
//! (`registry::contacts`), changed with its audit line in one `IMMEDIATE` transaction.

use rusqlite::{OptionalExtension as _, TransactionBehavior, params};

use super::SqliteDb;
use super::audit::append_in;
use crate::registry::audit::NewAuditLine;
use crate::registry::contacts::{Contact, ContactChange};
use crate::registry::error::RegistryError;
use crate::registry::storage::ContactStore;

#[async_trait::async_trait]
impl ContactStore for SqliteDb {
    async fn change_contact(
        &self,
        user: String,
        change: ContactChange,
        audit: NewAuditLine,
    ) -> Result<Contact, RegistryError> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let exists = tx
                .query_row("SELECT 1 FROM users WHERE username = ?1", [&user], |_| {
                    Ok(())
                })
                .optional()?
                .is_some();
            if !exists {
                return Err(RegistryError::NotFound(format!("user {user}")));
            }
            let old: Option<String> = tx
                .query_row(
                    "SELECT contact FROM user_contacts WHERE username = ?1",
                    [&user],
                    |r| r.get(0),
                )
                .optional()?;
            let old: Contact = old
                .and_then(|j| serde_json::from_str(&j).ok())
                .unwrap_or_default();
            let new = change.applied_to(old)?;
            let json = serde_json::to_string(&new).map_err(|e| RegistryError::Db(e.to_string()))?;
            tx.execute(
                "INSERT INTO user_contacts (username, contact, updated_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (username) DO UPDATE SET contact = excluded.contact,
                    updated_ms = excluded.updated_ms",
                params![user, json, audit.time_ms],
            )?;
            append_in(&tx, &audit)?;
            tx.commit()?;
            Ok(new)
        })
        .await
    }

    async fn contacts(&self) -> Result<Vec<(String, Contact)>, RegistryError> {
        self.with(|c| {
            let mut st =
                c.prepare("SELECT username, contact FROM user_contacts ORDER BY username")?;
            let rows =
                st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
            let mut out = Vec::new();
            for r in rows {
                let (u, j) = r?;
                out.push((u, serde_json::from_str(&j).unwrap_or_default()));
            }
            Ok(out)
        })
        .await
    }
}
