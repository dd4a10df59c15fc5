//! Dashboard users, care teams and sign-in sessions.
//!
//! A clinician sees the patients of the care teams they belong to, and only those; an admin
//! sees everyone. A session is a random 256-bit value held by the browser in an HttpOnly
//! cookie; the registry keeps only its SHA-256, with the user it belongs to, its CSRF token and
//! when it expires. Changing a user's password or role ends their sessions.
//!
//! It must never store a session token or a password in the clear.

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::{Registry, RegistryError, Role, sha256};
use crate::domain::format_rfc3339;

/// Schema version 4: care teams, their members, and sessions.
pub(super) const SCHEMA_V4: &str = "
    CREATE TABLE teams (
        id         TEXT PRIMARY KEY,
        name       TEXT NOT NULL,
        created_ms INTEGER NOT NULL
    );
    CREATE TABLE team_members (
        team_id  TEXT NOT NULL REFERENCES teams (id),
        username TEXT NOT NULL REFERENCES users (username),
        PRIMARY KEY (team_id, username)
    );
    CREATE INDEX team_members_by_user ON team_members (username);
    CREATE TABLE sessions (
        token_hash BLOB PRIMARY KEY,
        username   TEXT NOT NULL REFERENCES users (username),
        csrf       TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        expires_ms INTEGER NOT NULL
    );
    CREATE INDEX sessions_by_user ON sessions (username);";

/// A user as the API shows it (never the password hash).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub role: Role,
    pub teams: Vec<String>,
    pub created_at: String,
}

/// A care team and its members.
#[derive(Debug, Clone, Serialize)]
pub struct Team {
    pub id: String,
    pub name: String,
    pub members: Vec<String>,
}

/// A live session, found from the browser's cookie.
#[derive(Debug, Clone)]
pub struct Session {
    pub user: User,
    pub csrf: String,
    pub expires_ms: i64,
}

/// What a user may change about another user (admin) or themselves.
#[derive(Debug, Default)]
pub struct UserUpdate {
    pub role: Option<Role>,
    pub teams: Option<Vec<String>>,
    pub password: Option<String>,
}

/// The rule for team ids, the same as for care_team on a patient.
pub(super) fn check_team_id(id: &str) -> Result<(), RegistryError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(RegistryError::Invalid(
            "team id must be 1 to 64 characters of A-Z a-z 0-9 . _ -".into(),
        ))
    }
}

/// The password policy: 12 to 1024 characters, and not one character repeated.
pub(super) fn check_password(password: &str) -> Result<(), RegistryError> {
    let chars = password.chars().count();
    if !(12..=1024).contains(&chars) {
        return Err(RegistryError::Invalid(
            "password must be 12 to 1024 characters".into(),
        ));
    }
    let mut it = password.chars();
    let first = it.next();
    if it.all(|c| Some(c) == first) {
        return Err(RegistryError::Invalid(
            "password must not be one character repeated".into(),
        ));
    }
    Ok(())
}

pub(super) fn hash_password(password: &str) -> Result<String, RegistryError> {
    use argon2::password_hash::PasswordHasher as _;
    argon2::Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| RegistryError::Db(format!("password hashing failed: {e}")))
}

fn random_token() -> Result<(String, [u8; 32]), RegistryError> {
    use base64::Engine as _;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| RegistryError::Db(format!("no randomness: {e}")))?;
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let hash = sha256(token.as_bytes());
    Ok((token, hash))
}

fn teams_of(c: &rusqlite::Connection, username: &str) -> rusqlite::Result<Vec<String>> {
    let mut stmt =
        c.prepare_cached("SELECT team_id FROM team_members WHERE username = ?1 ORDER BY team_id")?;
    stmt.query_map([username], |r| r.get(0))?.collect()
}

fn set_teams(
    tx: &rusqlite::Transaction<'_>,
    username: &str,
    teams: &[String],
) -> Result<(), RegistryError> {
    for t in teams {
        check_team_id(t)?;
        let exists: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM teams WHERE id = ?1)",
            [t],
            |r| r.get(0),
        )?;
        if !exists {
            return Err(RegistryError::Invalid(format!(
                "no care team {t:?}; create it first"
            )));
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

impl Registry {
    /// Sets a new user's care teams (used right after [`Registry::add_user`]).
    pub async fn set_user_teams(
        &self,
        username: &str,
        teams: Vec<String>,
    ) -> Result<(), RegistryError> {
        let username = username.to_owned();
        self.with(move |c| {
            let tx = c.transaction()?;
            set_teams(&tx, &username, &teams)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// All users, by name.
    pub async fn users(&self) -> Result<Vec<User>, RegistryError> {
        self.with(|c| {
            let mut stmt =
                c.prepare("SELECT username, role, created_ms FROM users ORDER BY username")?;
            let rows: Vec<(String, String, i64)> = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<rusqlite::Result<_>>()?;
            rows.into_iter()
                .map(|(name, role, created)| {
                    Ok(User {
                        teams: teams_of(c, &name)?,
                        role: Role::parse(&role).unwrap_or(Role::Clinician),
                        name,
                        created_at: format_rfc3339(created),
                    })
                })
                .collect()
        })
        .await
    }

    /// One user.
    pub async fn user(&self, username: &str) -> Result<User, RegistryError> {
        let username = username.to_owned();
        self.with(move |c| {
            let row: Option<(String, i64)> = c
                .query_row(
                    "SELECT role, created_ms FROM users WHERE username = ?1",
                    [&username],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let (role, created) =
                row.ok_or_else(|| RegistryError::NotFound(format!("user {username}")))?;
            Ok(User {
                teams: teams_of(c, &username)?,
                role: Role::parse(&role).unwrap_or(Role::Clinician),
                name: username,
                created_at: format_rfc3339(created),
            })
        })
        .await
    }

    /// Changes a user's role, teams or password. A new role or password ends their sessions.
    pub async fn update_user(
        &self,
        username: &str,
        update: UserUpdate,
    ) -> Result<User, RegistryError> {
        let hash = match &update.password {
            Some(p) => {
                check_password(p)?;
                let p = p.clone();
                Some(
                    tokio::task::spawn_blocking(move || hash_password(&p))
                        .await
                        .map_err(|e| RegistryError::Db(e.to_string()))??,
                )
            }
            None => None,
        };
        let name = username.to_owned();
        self.with(move |c| {
            let tx = c.transaction()?;
            let exists: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM users WHERE username = ?1)",
                [&name],
                |r| r.get(0),
            )?;
            if !exists {
                return Err(RegistryError::NotFound(format!("user {name}")));
            }
            if let Some(role) = update.role {
                tx.execute(
                    "UPDATE users SET role = ?2 WHERE username = ?1",
                    params![name, role.as_str()],
                )?;
            }
            if let Some(h) = &hash {
                tx.execute(
                    "UPDATE users SET password_hash = ?2 WHERE username = ?1",
                    params![name, h],
                )?;
            }
            if update.role.is_some() || hash.is_some() {
                tx.execute("DELETE FROM sessions WHERE username = ?1", [&name])?;
            }
            if let Some(teams) = &update.teams {
                set_teams(&tx, &name, teams)?;
            }
            tx.commit()?;
            Ok(())
        })
        .await?;
        self.user(username).await
    }

    /// Creates a care team.
    pub async fn create_team(
        &self,
        id: &str,
        name: &str,
        now_ms: i64,
    ) -> Result<Team, RegistryError> {
        check_team_id(id)?;
        let name = name.trim().to_owned();
        if name.is_empty() || name.chars().count() > 200 {
            return Err(RegistryError::Invalid(
                "team name must be 1 to 200 characters".into(),
            ));
        }
        let id = id.to_owned();
        self.with(move |c| {
            let n = c.execute(
                "INSERT INTO teams (id, name, created_ms) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                params![id, name, now_ms],
            )?;
            if n == 0 {
                return Err(RegistryError::Exists(format!("team {id}")));
            }
            Ok(Team {
                id,
                name,
                members: Vec::new(),
            })
        })
        .await
    }

    /// All care teams with their members.
    pub async fn teams(&self) -> Result<Vec<Team>, RegistryError> {
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

    /// Starts a session for a user whose password was just checked: `(token, session)`. The
    /// token goes to the browser and is never stored.
    pub async fn create_session(
        &self,
        username: &str,
        now_ms: i64,
        lifetime_ms: i64,
    ) -> Result<(String, Session), RegistryError> {
        let (token, hash) = random_token()?;
        let (csrf, _) = random_token()?;
        let name = username.to_owned();
        let expires_ms = now_ms + lifetime_ms;
        let csrf2 = csrf.clone();
        self.with(move |c| {
            // Expired sessions are swept whenever someone signs in.
            c.execute("DELETE FROM sessions WHERE expires_ms <= ?1", [now_ms])?;
            c.execute(
                "INSERT INTO sessions (token_hash, username, csrf, created_ms, expires_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![hash.as_slice(), name, csrf2, now_ms, expires_ms],
            )?;
            Ok(())
        })
        .await?;
        let user = self.user(username).await?;
        Ok((
            token,
            Session {
                user,
                csrf,
                expires_ms,
            },
        ))
    }

    /// The session a cookie's token names, if it exists and has not expired.
    pub async fn session(
        &self,
        token: &str,
        now_ms: i64,
    ) -> Result<Option<Session>, RegistryError> {
        let hash = sha256(token.as_bytes());
        let row: Option<(String, String, i64)> = self
            .with(move |c| {
                Ok(c.query_row(
                    "SELECT username, csrf, expires_ms FROM sessions
                     WHERE token_hash = ?1 AND expires_ms > ?2",
                    params![hash.as_slice(), now_ms],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?)
            })
            .await?;
        let Some((username, csrf, expires_ms)) = row else {
            return Ok(None);
        };
        let user = self.user(&username).await?;
        Ok(Some(Session {
            user,
            csrf,
            expires_ms,
        }))
    }

    /// Ends a session (sign-out). Ending one that does not exist is not an error.
    pub async fn end_session(&self, token: &str) -> Result<(), RegistryError> {
        let hash = sha256(token.as_bytes());
        self.with(move |c| {
            c.execute(
                "DELETE FROM sessions WHERE token_hash = ?1",
                [hash.as_slice()],
            )?;
            Ok(())
        })
        .await
    }

    /// The care team a patient belongs to: `Err(NotFound)` for no such patient.
    pub async fn patient_team(
        &self,
        id: crate::domain::PatientId,
    ) -> Result<Option<String>, RegistryError> {
        self.with(move |c| {
            c.query_row(
                "SELECT json_extract(details, '$.care_team') FROM patients WHERE id = ?1",
                [id.as_str()],
                |r| r.get(0),
            )
            .optional()?
            .ok_or_else(|| RegistryError::NotFound(format!("patient {id}")))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_policy() {
        assert!(check_password("short").is_err());
        assert!(check_password("aaaaaaaaaaaaaaaa").is_err());
        assert!(check_password("correct horse battery").is_ok());
        assert!(check_password(&"ab".repeat(513)).is_err());
    }

    #[test]
    fn team_ids() {
        assert!(check_team_id("cardio-north").is_ok());
        assert!(check_team_id("").is_err());
        assert!(check_team_id("a b").is_err());
    }
}
