//! Users, care teams and sessions on SQLite (`users`, `teams`, `team_members`, `sessions`:
//! schema versions 1, 4 and 7). Usernames are unique whatever their case: schema 7's triggers
//! refuse a new clash, and older accounts that differ only in case are each found by their
//! exact spelling only ([`NAMED`]). Changes begin `IMMEDIATE`: a deferred transaction that
//! reads, then writes, fails at once with "database is locked" when another connection (the
//! device status writer) committed in between.

use rusqlite::{Connection, OptionalExtension as _, Transaction, TransactionBehavior, params};

use super::SqliteDb;
use super::audit::append_in;
use super::usernames::{NAMED, stored_name};
use crate::registry::access::{
    Credentials, NewSession, NewTeam, NewUser, Role, StoredSession, StoredUser, Team, UserChange,
    no_such_team, user_exists,
};
use crate::registry::audit::NewAuditLine;
use crate::registry::error::RegistryError;
use crate::registry::storage::AccessStore;

fn teams_of(c: &Connection, username: &str) -> rusqlite::Result<Vec<String>> {
    let mut stmt =
        c.prepare_cached("SELECT team_id FROM team_members WHERE username = ?1 ORDER BY team_id")?;
    stmt.query_map([username], |r| r.get(0))?.collect()
}

/// The user stored as `name` (its exact spelling).
fn load(c: &Connection, name: &str) -> Result<Option<StoredUser>, RegistryError> {
    let row = c
        .query_row(
            &format!("SELECT {USER_COLUMNS} FROM users WHERE username = ?1"),
            [name],
            user_row,
        )
        .optional()?;
    let Some(mut user) = row else {
        return Ok(None);
    };
    user.teams = teams_of(c, &user.name)?;
    Ok(Some(user))
}

const USER_COLUMNS: &str =
    "username, role, created_ms, display_name, disabled_ms, password_temporary";

/// A user's row of [`USER_COLUMNS`], without their teams.
fn user_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredUser> {
    Ok(StoredUser {
        name: r.get(0)?,
        role: Role::from_stored(&r.get::<_, String>(1)?),
        created_ms: r.get(2)?,
        display_name: r.get(3)?,
        disabled_ms: r.get(4)?,
        password_temporary: r.get(5)?,
        teams: Vec::new(),
    })
}

/// Puts `username` on exactly `teams`; `Invalid` if one does not exist.
fn set_teams(tx: &Transaction<'_>, username: &str, teams: &[String]) -> Result<(), RegistryError> {
    for t in teams {
        let exists: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM teams WHERE id = ?1)",
            [t],
            |r| r.get(0),
        )?;
        if !exists {
            return Err(no_such_team(t));
        }
    }
    tx.execute("DELETE FROM team_members WHERE username = ?1", [username])?;
    for t in teams {
        tx.execute(
            "INSERT OR IGNORE INTO team_members (team_id, username) VALUES (?1, ?2)",
            params![t, username],
        )?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl AccessStore for SqliteDb {
    async fn create_user(
        &self,
        u: NewUser,
        audit: Option<NewAuditLine>,
    ) -> Result<StoredUser, RegistryError> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            // Usernames ignore case: `NINA` is `nina` (schema 7's triggers refuse it too).
            let taken: Option<String> = tx
                .query_row(
                    "SELECT username FROM users WHERE username = ?1 COLLATE NOCASE LIMIT 1",
                    [&u.name],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(taken) = taken {
                return Err(user_exists(&taken, &u.name));
            }
            tx.execute(
                "INSERT INTO users (username, password_hash, role, created_ms)
                 VALUES (?1, ?2, ?3, ?4)",
                params![u.name, u.password_hash, u.role.as_str(), u.created_ms],
            )?;
            set_teams(&tx, &u.name, &u.teams)?;
            if let Some(line) = &audit {
                append_in(&tx, line)?;
            }
            let user =
                load(&tx, &u.name)?.ok_or_else(|| RegistryError::Db("user vanished".into()))?;
            tx.commit()?;
            Ok(user)
        })
        .await
    }

    async fn user(&self, name: String) -> Result<Option<StoredUser>, RegistryError> {
        self.with(move |c| match stored_name(c, &name)? {
            Some(stored) => load(c, &stored),
            None => Ok(None),
        })
        .await
    }

    async fn users(&self) -> Result<Vec<StoredUser>, RegistryError> {
        self.with(|c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {USER_COLUMNS} FROM users ORDER BY username"
            ))?;
            let rows: Vec<StoredUser> = stmt
                .query_map([], user_row)?
                .collect::<rusqlite::Result<_>>()?;
            rows.into_iter()
                .map(|mut u| {
                    u.teams = teams_of(c, &u.name)?;
                    Ok(u)
                })
                .collect()
        })
        .await
    }

    async fn credentials(&self, name: String) -> Result<Option<Credentials>, RegistryError> {
        self.with(move |c| {
            Ok(c.query_row(
                &format!(
                    "SELECT password_hash, role, disabled_ms IS NOT NULL FROM users
                     WHERE username = {NAMED}"
                ),
                [name],
                |r| {
                    Ok(Credentials {
                        password_hash: r.get(0)?,
                        role: Role::parse(&r.get::<_, String>(1)?),
                        disabled: r.get(2)?,
                    })
                },
            )
            .optional()?)
        })
        .await
    }

    async fn update_user(
        &self,
        asked: String,
        change: UserChange,
        audit: Option<NewAuditLine>,
    ) -> Result<StoredUser, RegistryError> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let name = stored_name(&tx, &asked)?
                .ok_or_else(|| RegistryError::NotFound(format!("user {asked}")))?;
            if let Some(role) = change.role {
                tx.execute(
                    "UPDATE users SET role = ?2 WHERE username = ?1",
                    params![name, role.as_str()],
                )?;
            }
            if let Some(h) = &change.password_hash {
                tx.execute(
                    "UPDATE users SET password_hash = ?2 WHERE username = ?1",
                    params![name, h],
                )?;
            }
            if let Some(t) = change.password_temporary {
                tx.execute(
                    "UPDATE users SET password_temporary = ?2 WHERE username = ?1",
                    params![name, t],
                )?;
            }
            if let Some(d) = &change.display_name {
                tx.execute(
                    "UPDATE users SET display_name = ?2 WHERE username = ?1",
                    params![name, d],
                )?;
            }
            match change.disabled_ms {
                // Disabled once: a second disabling keeps the first time.
                Some(Some(ms)) => {
                    tx.execute(
                        "UPDATE users SET disabled_ms = coalesce(disabled_ms, ?2)
                         WHERE username = ?1",
                        params![name, ms],
                    )?;
                }
                Some(None) => {
                    tx.execute(
                        "UPDATE users SET disabled_ms = NULL WHERE username = ?1",
                        [&name],
                    )?;
                }
                None => {}
            }
            if change.ends_sessions() {
                tx.execute("DELETE FROM sessions WHERE username = ?1", [&name])?;
            }
            if let Some(teams) = &change.teams {
                set_teams(&tx, &name, teams)?;
            }
            if let Some(line) = &audit {
                append_in(&tx, line)?;
            }
            let user =
                load(&tx, &name)?.ok_or_else(|| RegistryError::Db("user vanished".into()))?;
            tx.commit()?;
            Ok(user)
        })
        .await
    }

    async fn create_team(
        &self,
        t: NewTeam,
        audit: Option<NewAuditLine>,
    ) -> Result<Team, RegistryError> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let n = tx.execute(
                "INSERT INTO teams (id, name, created_ms) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                params![t.id, t.name, t.created_ms],
            )?;
            if n == 0 {
                return Err(RegistryError::Exists(format!("team {}", t.id)));
            }
            if let Some(line) = &audit {
                append_in(&tx, line)?;
            }
            tx.commit()?;
            Ok(Team {
                id: t.id,
                name: t.name,
                members: Vec::new(),
            })
        })
        .await
    }

    async fn teams(&self) -> Result<Vec<Team>, RegistryError> {
        self.with(|c| {
            let mut stmt = c.prepare("SELECT id, name FROM teams ORDER BY id")?;
            let teams: Vec<(String, String)> = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            let mut members = c.prepare(
                "SELECT username FROM team_members WHERE team_id = ?1 ORDER BY username",
            )?;
            teams
                .into_iter()
                .map(|(id, name)| {
                    let m = members
                        .query_map([&id], |r| r.get(0))?
                        .collect::<rusqlite::Result<_>>()?;
                    Ok(Team {
                        id,
                        name,
                        members: m,
                    })
                })
                .collect()
        })
        .await
    }

    async fn create_session(&self, s: NewSession) -> Result<String, RegistryError> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let name = stored_name(&tx, &s.user)?
                .ok_or_else(|| RegistryError::NotFound(format!("user {}", s.user)))?;
            // Expired sessions are swept whenever someone signs in.
            tx.execute(
                "DELETE FROM sessions WHERE expires_ms <= ?1",
                [s.created_ms],
            )?;
            tx.execute(
                "INSERT INTO sessions (token_hash, username, csrf, created_ms, expires_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![s.hash.as_slice(), name, s.csrf, s.created_ms, s.expires_ms],
            )?;
            tx.commit()?;
            Ok(name)
        })
        .await
    }

    async fn live_session(
        &self,
        hash: [u8; 32],
        now_ms: i64,
    ) -> Result<Option<StoredSession>, RegistryError> {
        self.with(move |c| {
            Ok(c.query_row(
                "SELECT username, csrf, expires_ms FROM sessions
                 WHERE token_hash = ?1 AND expires_ms > ?2",
                params![hash.as_slice(), now_ms],
                |r| {
                    Ok(StoredSession {
                        user: r.get(0)?,
                        csrf: r.get(1)?,
                        expires_ms: r.get(2)?,
                    })
                },
            )
            .optional()?)
        })
        .await
    }

    async fn end_session(
        &self,
        hash: [u8; 32],
        audit: Option<NewAuditLine>,
    ) -> Result<Option<String>, RegistryError> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let ended: Option<String> = tx
                .query_row(
                    "DELETE FROM sessions WHERE token_hash = ?1 RETURNING username",
                    [hash.as_slice()],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(line) = &audit {
                append_in(&tx, line)?;
            }
            tx.commit()?;
            Ok(ended)
        })
        .await
    }
}
