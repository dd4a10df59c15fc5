//! Dashboard users, care teams and sign-in sessions.
//!
//! A clinician sees the patients of the care teams they belong to, and only those; an admin
//! sees everyone. A session is a random 256-bit value held by the browser in an HttpOnly
//! cookie; the registry keeps only its SHA-256, with the user it belongs to, its CSRF token and
//! when it expires. Changing a user's password or role ends their sessions. Every change that
//! ends a session or changes what a user sees is announced ([`Registry::subscribe_access`]), so
//! that open sockets re-check at once.
//!
//! Usernames ignore case: `nina` and `NINA` are one account, found by either spelling (sign-in,
//! changes, teams, tokens) and shown as it was created. Sessions, team memberships and tokens
//! hold that stored spelling. Accounts that already differed only in case when this rule came
//! (schema 7) are kept, each found by its exact spelling only; no new one can be added.
//!
//! It must never store a session token or a password in the clear.

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::error::RegistryError;
use super::password_policy::check_password;
use super::usernames::{NAMED, stored_name};
use super::{AccessChange, Registry, Role, sha256};
use crate::domain::format_rfc3339;

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
        let name = username.to_owned();
        let stored = self
            .with(move |c| {
                // Immediate: a deferred transaction that reads, then writes, fails at once with
                // "database is locked" when the device status writer committed in between.
                let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let username = stored_name(&tx, &name)?
                    .ok_or_else(|| RegistryError::NotFound(format!("user {name}")))?;
                set_teams(&tx, &username, &teams)?;
                tx.commit()?;
                Ok(username)
            })
            .await?;
        self.access_changed(AccessChange::User(stored));
        Ok(())
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

    /// One user, by any spelling of its name.
    pub async fn user(&self, username: &str) -> Result<User, RegistryError> {
        let asked = username.to_owned();
        self.with(move |c| {
            let row: Option<(String, String, i64)> = c
                .query_row(
                    &format!(
                        "SELECT username, role, created_ms FROM users WHERE username = {NAMED}"
                    ),
                    [&asked],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?;
            let (username, role, created) =
                row.ok_or_else(|| RegistryError::NotFound(format!("user {asked}")))?;
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
                check_password(p, username)?;
                Some(self.hasher.hash(super::ACCOUNTS, p).await?)
            }
            None => None,
        };
        let asked = username.to_owned();
        let stored = self
            .with(move |c| {
                // Immediate: a deferred transaction that reads, then writes, fails at once with
                // "database is locked" when the device status writer committed in between.
                let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let name = stored_name(&tx, &asked)?
                    .ok_or_else(|| RegistryError::NotFound(format!("user {asked}")))?;
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
                Ok(name)
            })
            .await?;
        // Sessions ended, or what the user sees changed: open sockets re-check (under the
        // stored spelling, which their principals hold).
        self.access_changed(AccessChange::User(stored.clone()));
        self.user(&stored).await
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
        let asked = username.to_owned();
        let expires_ms = now_ms + lifetime_ms;
        let csrf2 = csrf.clone();
        // The session holds the stored spelling, whichever one signed in.
        let name = self
            .with(move |c| {
                let name = stored_name(c, &asked)?
                    .ok_or_else(|| RegistryError::NotFound(format!("user {asked}")))?;
                // Expired sessions are swept whenever someone signs in.
                c.execute("DELETE FROM sessions WHERE expires_ms <= ?1", [now_ms])?;
                c.execute(
                    "INSERT INTO sessions (token_hash, username, csrf, created_ms, expires_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![hash.as_slice(), name, csrf2, now_ms, expires_ms],
                )?;
                Ok(name)
            })
            .await?;
        let user = self.user(&name).await?;
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
        let ended: Option<String> = self
            .with(move |c| {
                Ok(c.query_row(
                    "DELETE FROM sessions WHERE token_hash = ?1 RETURNING username",
                    [hash.as_slice()],
                    |r| r.get(0),
                )
                .optional()?)
            })
            .await?;
        if let Some(user) = ended {
            self.access_changed(AccessChange::User(user));
        }
        Ok(())
    }

    /// The care team a patient belongs to: `Err(NotFound)` for no such patient.
    pub async fn patient_team(
        &self,
        id: crate::domain::PatientId,
    ) -> Result<Option<String>, RegistryError> {
        self.with(move |c| {
            c.query_row(
                "SELECT care_team FROM patients WHERE id = ?1",
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
        let refused = |p: &str, user: &str| check_password(p, user).unwrap_err().to_string();
        assert!(refused("short", "nina").contains("12 to 1024"));
        assert!(refused(&"ab".repeat(513), "nina").contains("12 to 1024"));
        assert!(refused("aaaaaaaaaaaaaaaa", "nina").contains("one character"));
        assert!(refused("abcabcabcabc", "nina").contains("short group"));
        assert!(refused("abcdefghijklmn", "nina").contains("consecutive"));
        assert!(refused("987654321098", "nina").contains("consecutive"));
        assert!(refused("Password1234", "nina").contains("most common"));
        assert!(refused("my name is Nina!", "nina").contains("username"));
        assert!(check_password("correct horse battery", "nina").is_ok());
        assert!(check_password("Zürich at dawn, 2026", "nina").is_ok());
        assert!(check_password("abcdefghijkx", "nina").is_ok());
    }

    fn registry(dir: &std::path::Path) -> Registry {
        Registry::open(dir, super::super::Profiles::built_in().unwrap()).unwrap()
    }

    #[tokio::test]
    async fn usernames_ignore_case_and_keep_their_first_spelling() {
        let dir = tempfile::tempdir().unwrap();
        let r = registry(dir.path());
        let pw = "correct horse battery";
        r.add_user("nina", Role::Clinician, pw, 0).await.unwrap();
        for other in ["NINA", "Nina"] {
            let e = r
                .add_user(other, Role::Admin, "another long password", 0)
                .await;
            assert!(matches!(e, Err(RegistryError::Exists(_))), "{other}: {e:?}");
        }
        assert_eq!(r.users().await.unwrap().len(), 1);
        assert_eq!(
            r.verify_user("NiNa", pw, "test").await.unwrap(),
            Some(Role::Clinician)
        );
        assert_eq!(r.user("NINA").await.unwrap().name, "nina");

        r.create_team("north", "North", 0).await.unwrap();
        r.set_user_teams("NINA", vec!["north".into()])
            .await
            .unwrap();
        let update = UserUpdate {
            role: Some(Role::Admin),
            ..UserUpdate::default()
        };
        let u = r.update_user("nInA", update).await.unwrap();
        assert_eq!((u.name.as_str(), u.role), ("nina", Role::Admin));
        assert_eq!(u.teams, ["north"]);
        let teams = r.teams().await.unwrap();
        let north = teams.iter().find(|t| t.id == "north").unwrap();
        assert_eq!(north.members, ["nina"]);

        let (token, session) = r.create_session("NINA", 0, 60_000).await.unwrap();
        assert_eq!(session.user.name, "nina");
        assert_eq!(
            r.session(&token, 1).await.unwrap().unwrap().user.name,
            "nina"
        );
        let (_, t) = r
            .create_api_token("Nina", "ci", super::super::Scope::Read, 0, 60_000, |id| {
                crate::registry::audit::NewAuditLine {
                    time_ms: 0,
                    actor: "admin".into(),
                    action: "token.create".into(),
                    patient_id: None,
                    target: format!("token/{id}"),
                    remote: "127.0.0.1".into(),
                }
            })
            .await
            .unwrap();
        assert_eq!(t.user, "nina");
        assert!(matches!(
            r.create_session("nobody", 0, 60_000).await,
            Err(RegistryError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn accounts_that_already_differ_only_in_case_are_kept_and_no_third_is_added() {
        let dir = tempfile::tempdir().unwrap();
        {
            // A registry from before names ignored case, holding `nina` and `NINA`.
            let path = dir.path().join("registry.db");
            let c = crate::store::open_db(&path, &super::super::SCHEMA[..6]).unwrap();
            let hash = super::super::password::hash_with("correct horse battery", &mut Vec::new())
                .unwrap();
            for (name, role) in [("nina", "clinician"), ("NINA", "admin")] {
                c.execute(
                    "INSERT INTO users (username, password_hash, role, created_ms) VALUES (?1, ?2, ?3, 0)",
                    params![name, hash, role],
                )
                .unwrap();
            }
        }
        let r = registry(dir.path());
        let names: Vec<String> = r
            .users()
            .await
            .unwrap()
            .into_iter()
            .map(|u| u.name)
            .collect();
        assert_eq!(names, ["NINA", "nina"], "neither merged nor dropped");
        // Each signs in under its exact spelling; a third spelling could be either: refused.
        let pw = "correct horse battery";
        assert_eq!(
            r.verify_user("nina", pw, "test").await.unwrap(),
            Some(Role::Clinician)
        );
        assert_eq!(
            r.verify_user("NINA", pw, "test").await.unwrap(),
            Some(Role::Admin)
        );
        assert_eq!(r.verify_user("Nina", pw, "test").await.unwrap(), None);
        assert_eq!(r.user("NINA").await.unwrap().role, Role::Admin);
        assert!(matches!(
            r.user("Nina").await,
            Err(RegistryError::NotFound(_))
        ));
        assert!(matches!(
            r.add_user("nInA", Role::Clinician, "another long password", 0)
                .await,
            Err(RegistryError::Exists(_))
        ));
        // The database refuses a clash by itself too, whoever writes.
        let raw = r
            .with(|c| {
                Ok(c.execute(
                    "INSERT INTO users (username, password_hash, role, created_ms) VALUES ('NiNa', 'x', 'admin', 0)",
                    [],
                )?)
            })
            .await;
        assert!(raw.is_err(), "{raw:?}");
    }

    #[test]
    fn team_ids() {
        assert!(check_team_id("cardio-north").is_ok());
        assert!(check_team_id("").is_err());
        assert!(check_team_id("a b").is_err());
    }
}
