//! Who covers each care team on SQLite: one row per team holding its rota and shifts as JSON
//! (`registry::cover`), written with its audit line in one `IMMEDIATE` transaction.

use rusqlite::{Connection, OptionalExtension as _, TransactionBehavior, params};

use super::SqliteDb;
use super::audit::append_in;
use crate::oncall::policy::Policy;
use crate::oncall::{Rota, Shift};
use crate::registry::audit::NewAuditLine;
use crate::registry::cover::Cover;
use crate::registry::error::RegistryError;
use crate::registry::storage::CoverStore;

fn team_exists(c: &Connection, team: &str) -> Result<bool, RegistryError> {
    Ok(
        c.query_row("SELECT 1 FROM teams WHERE id = ?1", [team], |_| Ok(()))
            .optional()?
            .is_some(),
    )
}

/// Writes one column (`rota` or `shifts`) of the team's row, creating the row.
async fn put(
    db: &SqliteDb,
    team: String,
    column: &'static str,
    json: String,
    by: String,
    now_ms: i64,
    audit: NewAuditLine,
) -> Result<(), RegistryError> {
    db.with(move |c| {
        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if !team_exists(&tx, &team)? {
            return Err(RegistryError::NotFound(format!("care team {team}")));
        }
        tx.execute(
            &format!(
                "INSERT INTO team_cover (team_id, {column}, updated_by, updated_ms)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (team_id) DO UPDATE SET {column} = excluded.{column},
                    updated_by = excluded.updated_by, updated_ms = excluded.updated_ms"
            ),
            params![team, json, by, now_ms],
        )?;
        append_in(&tx, &audit)?;
        tx.commit()?;
        Ok(())
    })
    .await
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String, RegistryError> {
    serde_json::to_string(v).map_err(|e| RegistryError::Db(e.to_string()))
}

#[async_trait::async_trait]
impl CoverStore for SqliteDb {
    async fn put_rota(
        &self,
        team: String,
        rota: Rota,
        by: String,
        now_ms: i64,
        audit: NewAuditLine,
    ) -> Result<(), RegistryError> {
        put(self, team, "rota", to_json(&rota)?, by, now_ms, audit).await
    }

    async fn put_shifts(
        &self,
        team: String,
        shifts: Vec<Shift>,
        by: String,
        now_ms: i64,
        audit: NewAuditLine,
    ) -> Result<(), RegistryError> {
        put(self, team, "shifts", to_json(&shifts)?, by, now_ms, audit).await
    }

    async fn put_policy(
        &self,
        team: String,
        policy: Policy,
        by: String,
        now_ms: i64,
        audit: NewAuditLine,
    ) -> Result<(), RegistryError> {
        put(self, team, "policy", to_json(&policy)?, by, now_ms, audit).await
    }

    async fn cover(&self, team: String) -> Result<Option<Cover>, RegistryError> {
        self.with(move |c| {
            if !team_exists(c, &team)? {
                return Ok(None);
            }
            let row = c
                .query_row(
                    "SELECT rota, shifts, updated_by, updated_ms, policy FROM team_cover
                     WHERE team_id = ?1",
                    [&team],
                    |r| {
                        Ok((
                            r.get::<_, Option<String>>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, i64>(3)?,
                            r.get::<_, Option<String>>(4)?,
                        ))
                    },
                )
                .optional()?;
            Ok(Some(match row {
                None => Cover::empty(&team),
                Some((rota, shifts, by, ms, policy)) => Cover::from_stored(
                    team,
                    rota.as_deref(),
                    &shifts,
                    policy.as_deref(),
                    Some(by),
                    Some(ms),
                ),
            }))
        })
        .await
    }
}
