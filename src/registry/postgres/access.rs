//! Users, care teams and sessions on PostgreSQL (`users`, `teams`, `team_members`,
//! `sessions`). Usernames are unique whatever their case by a unique index on
//! `lower(username)` (they are ASCII), so a user is found by `lower(username) = lower($1)`: of
//! two instances adding `nina` and `NINA` at once, the second waits on the index for the first
//! to commit and is then refused as `Exists`, never a second row.
//!
//! Ids and names are compared and ordered byte by byte (`COLLATE "C"`), as SQLite does,
//! whatever the database's collation.

use deadpool_postgres::GenericClient;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Row, Transaction};

use super::audit::append_in;
use super::{PgDb, PgError};
use crate::registry::access::{
    Credentials, NewSession, NewTeam, NewUser, Role, StoredSession, StoredUser, Team, UserChange,
    no_such_team, user_exists,
};
use crate::registry::audit::NewAuditLine;
use crate::registry::error::RegistryError;
use crate::registry::storage::AccessStore;

fn is_unique_violation(e: &PgError) -> bool {
    matches!(e, PgError::Db { code: Some(code), .. } if *code == SqlState::UNIQUE_VIOLATION)
}

/// Users with their teams, in one statement (one snapshot); `filter` selects them.
fn users_sql(filter: &str) -> String {
    format!(
        "SELECT u.username, u.role, u.created_ms,
                COALESCE(array_agg(m.team_id ORDER BY m.team_id COLLATE \"C\")
                         FILTER (WHERE m.team_id IS NOT NULL), '{{}}'),
                u.display_name, u.disabled_ms, u.password_temporary
           FROM users u LEFT JOIN team_members m ON m.username = u.username
          {filter}
          GROUP BY u.username
          ORDER BY u.username COLLATE \"C\""
    )
}

fn user(r: &Row) -> StoredUser {
    StoredUser {
        name: r.get(0),
        role: Role::from_stored(r.get(1)),
        created_ms: r.get(2),
        teams: r.get(3),
        display_name: r.get(4),
        disabled_ms: r.get(5),
        password_temporary: r.get(6),
    }
}

/// The user any spelling of `name` names.
async fn find<C: GenericClient>(c: &C, name: &str) -> Result<Option<StoredUser>, PgError> {
    let sql = users_sql("WHERE lower(u.username) = lower($1)");
    Ok(c.query_opt(&sql, &[&name]).await?.as_ref().map(user))
}

/// The stored spelling of the user `name` names, locked until the transaction ends.
async fn lock_user(tx: &Transaction<'_>, name: &str) -> Result<String, RegistryError> {
    tx.query_opt(
        "SELECT username FROM users WHERE lower(username) = lower($1) FOR UPDATE",
        &[&name],
    )
    .await
    .map_err(PgError::from)?
    .map(|r| r.get(0))
    .ok_or_else(|| RegistryError::NotFound(format!("user {name}")))
}

/// Puts `username` on exactly `teams`; `Invalid` if one does not exist.
async fn set_teams(
    tx: &Transaction<'_>,
    username: &str,
    teams: &[String],
) -> Result<(), RegistryError> {
    for t in teams {
        let exists = tx
            .query_opt("SELECT 1 FROM teams WHERE id = $1", &[t])
            .await
            .map_err(PgError::from)?;
        if exists.is_none() {
            return Err(no_such_team(t));
        }
    }
    tx.execute("DELETE FROM team_members WHERE username = $1", &[&username])
        .await
        .map_err(PgError::from)?;
    for t in teams {
        tx.execute(
            "INSERT INTO team_members (team_id, username) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[t, &username],
        )
        .await
        .map_err(PgError::from)?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl AccessStore for PgDb {
    async fn create_user(
        &self,
        u: NewUser,
        audit: Option<NewAuditLine>,
    ) -> Result<StoredUser, RegistryError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(PgError::from)?;
        if let Some(taken) = find(&tx, &u.name).await? {
            return Err(user_exists(&taken.name, &u.name));
        }
        let inserted = tx
            .execute(
                "INSERT INTO users (username, password_hash, role, created_ms)
                 VALUES ($1, $2, $3, $4)",
                &[&u.name, &u.password_hash, &u.role.as_str(), &u.created_ms],
            )
            .await
            .map_err(PgError::from);
        match inserted {
            // Another instance added this name (in some spelling) since it was looked up: the
            // index waited for it to commit. Its spelling is read once this transaction is over.
            Err(e) if is_unique_violation(&e) => {
                drop(tx);
                let taken = find(&c, &u.name).await?.map(|t| t.name);
                return Err(user_exists(taken.as_deref().unwrap_or(&u.name), &u.name));
            }
            other => other?,
        };
        set_teams(&tx, &u.name, &u.teams).await?;
        if let Some(line) = &audit {
            append_in(&tx, line).await?;
        }
        let user = find(&tx, &u.name)
            .await?
            .ok_or_else(|| RegistryError::Db("user vanished".into()))?;
        tx.commit().await.map_err(PgError::from)?;
        Ok(user)
    }

    async fn user(&self, name: String) -> Result<Option<StoredUser>, RegistryError> {
        let c = self.conn().await?;
        Ok(find(&c, &name).await?)
    }

    async fn users(&self) -> Result<Vec<StoredUser>, RegistryError> {
        let c = self.conn().await?;
        let rows = c.query(&users_sql(""), &[]).await.map_err(PgError::from)?;
        Ok(rows.iter().map(user).collect())
    }

    async fn credentials(&self, name: String) -> Result<Option<Credentials>, RegistryError> {
        let c = self.conn().await?;
        let row = c
            .query_opt(
                "SELECT password_hash, role, disabled_ms IS NOT NULL FROM users
                 WHERE lower(username) = lower($1)",
                &[&name],
            )
            .await
            .map_err(PgError::from)?;
        Ok(row.map(|r| Credentials {
            password_hash: r.get(0),
            role: Role::parse(r.get(1)),
            disabled: r.get(2),
        }))
    }

    async fn update_user(
        &self,
        asked: String,
        change: UserChange,
        audit: Option<NewAuditLine>,
    ) -> Result<StoredUser, RegistryError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(PgError::from)?;
        let name = lock_user(&tx, &asked).await?;
        if let Some(role) = change.role {
            tx.execute(
                "UPDATE users SET role = $2 WHERE username = $1",
                &[&name, &role.as_str()],
            )
            .await
            .map_err(PgError::from)?;
        }
        if let Some(h) = &change.password_hash {
            tx.execute(
                "UPDATE users SET password_hash = $2 WHERE username = $1",
                &[&name, h],
            )
            .await
            .map_err(PgError::from)?;
        }
        if let Some(t) = change.password_temporary {
            tx.execute(
                "UPDATE users SET password_temporary = $2 WHERE username = $1",
                &[&name, &t],
            )
            .await
            .map_err(PgError::from)?;
        }
        if let Some(d) = &change.display_name {
            tx.execute(
                "UPDATE users SET display_name = $2 WHERE username = $1",
                &[&name, d],
            )
            .await
            .map_err(PgError::from)?;
        }
        match change.disabled_ms {
            // Disabled once: a second disabling keeps the first time.
            Some(Some(ms)) => {
                tx.execute(
                    "UPDATE users SET disabled_ms = coalesce(disabled_ms, $2) WHERE username = $1",
                    &[&name, &ms],
                )
                .await
                .map_err(PgError::from)?;
            }
            Some(None) => {
                tx.execute(
                    "UPDATE users SET disabled_ms = NULL WHERE username = $1",
                    &[&name],
                )
                .await
                .map_err(PgError::from)?;
            }
            None => {}
        }
        if change.ends_sessions() {
            tx.execute("DELETE FROM sessions WHERE username = $1", &[&name])
                .await
                .map_err(PgError::from)?;
        }
        if let Some(teams) = &change.teams {
            set_teams(&tx, &name, teams).await?;
        }
        if let Some(line) = &audit {
            append_in(&tx, line).await?;
        }
        let user = find(&tx, &name)
            .await?
            .ok_or_else(|| RegistryError::Db("user vanished".into()))?;
        tx.commit().await.map_err(PgError::from)?;
        Ok(user)
    }

    async fn create_team(
        &self,
        t: NewTeam,
        audit: Option<NewAuditLine>,
    ) -> Result<Team, RegistryError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(PgError::from)?;
        let n = tx
            .execute(
                "INSERT INTO teams (id, name, created_ms) VALUES ($1, $2, $3)
                 ON CONFLICT DO NOTHING",
                &[&t.id, &t.name, &t.created_ms],
            )
            .await
            .map_err(PgError::from)?;
        if n == 0 {
            return Err(RegistryError::Exists(format!("team {}", t.id)));
        }
        if let Some(line) = &audit {
            append_in(&tx, line).await?;
        }
        tx.commit().await.map_err(PgError::from)?;
        Ok(Team {
            id: t.id,
            name: t.name,
            members: Vec::new(),
        })
    }

    async fn teams(&self) -> Result<Vec<Team>, RegistryError> {
        let c = self.conn().await?;
        // One statement: the teams and their members as of one snapshot.
        let rows = c
            .query(
                "SELECT t.id, t.name,
                        COALESCE(array_agg(m.username ORDER BY m.username COLLATE \"C\")
                                 FILTER (WHERE m.username IS NOT NULL), '{}')
                   FROM teams t LEFT JOIN team_members m ON m.team_id = t.id
                  GROUP BY t.id
                  ORDER BY t.id COLLATE \"C\"",
                &[],
            )
            .await
            .map_err(PgError::from)?;
        Ok(rows
            .iter()
            .map(|r| Team {
                id: r.get(0),
                name: r.get(1),
                members: r.get(2),
            })
            .collect())
    }

    async fn create_session(&self, s: NewSession) -> Result<String, RegistryError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(PgError::from)?;
        let name = tx
            .query_opt(
                "SELECT username FROM users WHERE lower(username) = lower($1)",
                &[&s.user],
            )
            .await
            .map_err(PgError::from)?
            .map(|r| r.get::<_, String>(0))
            .ok_or_else(|| RegistryError::NotFound(format!("user {}", s.user)))?;
        // Expired sessions are swept whenever someone signs in.
        tx.execute(
            "DELETE FROM sessions WHERE expires_ms <= $1",
            &[&s.created_ms],
        )
        .await
        .map_err(PgError::from)?;
        tx.execute(
            "INSERT INTO sessions (token_hash, username, csrf, created_ms, expires_ms)
             VALUES ($1, $2, $3, $4, $5)",
            &[
                &s.hash.as_slice(),
                &name,
                &s.csrf,
                &s.created_ms,
                &s.expires_ms,
            ],
        )
        .await
        .map_err(PgError::from)?;
        tx.commit().await.map_err(PgError::from)?;
        Ok(name)
    }

    async fn live_session(
        &self,
        hash: [u8; 32],
        now_ms: i64,
    ) -> Result<Option<StoredSession>, RegistryError> {
        let c = self.conn().await?;
        let row = c
            .query_opt(
                "SELECT username, csrf, expires_ms FROM sessions
                 WHERE token_hash = $1 AND expires_ms > $2",
                &[&hash.as_slice(), &now_ms],
            )
            .await
            .map_err(PgError::from)?;
        Ok(row.map(|r| StoredSession {
            user: r.get(0),
            csrf: r.get(1),
            expires_ms: r.get(2),
        }))
    }

    async fn end_session(
        &self,
        hash: [u8; 32],
        audit: Option<NewAuditLine>,
    ) -> Result<Option<String>, RegistryError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(PgError::from)?;
        let ended = tx
            .query_opt(
                "DELETE FROM sessions WHERE token_hash = $1 RETURNING username",
                &[&hash.as_slice()],
            )
            .await
            .map_err(PgError::from)?
            .map(|r| r.get::<_, String>(0));
        if let Some(line) = &audit {
            append_in(&tx, line).await?;
        }
        tx.commit().await.map_err(PgError::from)?;
        Ok(ended)
    }
}
