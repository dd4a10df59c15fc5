//! Who covers each care team on PostgreSQL: one row per team holding its rota and shifts as
//! JSON text (`registry::cover`), written with its audit line in one transaction. The team's
//! row is locked first, so a change of the team's cover and its audit line are ordered with
//! any other change of the team.

use super::audit::append_in;
use super::{PgDb, PgError};
use crate::oncall::policy::Policy;
use crate::oncall::{Rota, Shift};
use crate::registry::audit::NewAuditLine;
use crate::registry::cover::Cover;
use crate::registry::error::RegistryError;
use crate::registry::storage::CoverStore;

fn to_json<T: serde::Serialize>(v: &T) -> Result<String, RegistryError> {
    serde_json::to_string(v).map_err(|e| RegistryError::Db(e.to_string()))
}

impl PgDb {
    /// Writes one column (`rota` or `shifts`) of the team's row, creating the row.
    async fn put_cover(
        &self,
        team: String,
        column: &'static str,
        json: String,
        by: String,
        now_ms: i64,
        audit: NewAuditLine,
    ) -> Result<(), RegistryError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(PgError::from)?;
        let found = tx
            .query_opt("SELECT 1 FROM teams WHERE id = $1 FOR UPDATE", &[&team])
            .await
            .map_err(PgError::from)?;
        if found.is_none() {
            return Err(RegistryError::NotFound(format!("care team {team}")));
        }
        tx.execute(
            &format!(
                "INSERT INTO team_cover (team_id, {column}, updated_by, updated_ms)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (team_id) DO UPDATE SET {column} = excluded.{column},
                    updated_by = excluded.updated_by, updated_ms = excluded.updated_ms"
            ),
            &[&team, &json, &by, &now_ms],
        )
        .await
        .map_err(PgError::from)?;
        append_in(&tx, &audit).await?;
        tx.commit().await.map_err(PgError::from)?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl CoverStore for PgDb {
    async fn put_rota(
        &self,
        team: String,
        rota: Rota,
        by: String,
        now_ms: i64,
        audit: NewAuditLine,
    ) -> Result<(), RegistryError> {
        self.put_cover(team, "rota", to_json(&rota)?, by, now_ms, audit)
            .await
    }

    async fn put_shifts(
        &self,
        team: String,
        shifts: Vec<Shift>,
        by: String,
        now_ms: i64,
        audit: NewAuditLine,
    ) -> Result<(), RegistryError> {
        self.put_cover(team, "shifts", to_json(&shifts)?, by, now_ms, audit)
            .await
    }

    async fn put_policy(
        &self,
        team: String,
        policy: Policy,
        by: String,
        now_ms: i64,
        audit: NewAuditLine,
    ) -> Result<(), RegistryError> {
        self.put_cover(team, "policy", to_json(&policy)?, by, now_ms, audit)
            .await
    }

    async fn cover(&self, team: String) -> Result<Option<Cover>, RegistryError> {
        let c = self.conn().await?;
        let row = c
            .query_opt(
                "SELECT t.id, v.rota, v.shifts, v.updated_by, v.updated_ms, v.policy
                 FROM teams t LEFT JOIN team_cover v ON v.team_id = t.id
                 WHERE t.id = $1",
                &[&team],
            )
            .await
            .map_err(PgError::from)?;
        Ok(row.map(|r| {
            let shifts: Option<String> = r.get(2);
            match shifts {
                None => Cover::empty(&team),
                Some(shifts) => Cover::from_stored(
                    r.get(0),
                    r.get::<_, Option<String>>(1).as_deref(),
                    &shifts,
                    r.get::<_, Option<String>>(5).as_deref(),
                    r.get(3),
                    r.get(4),
                ),
            }
        }))
    }
}
