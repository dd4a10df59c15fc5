//! Dashboard users, care teams and sign-in sessions: the registry's side of them (password
//! hashing, the username rule, session tokens, announcing changes); the storage seam
//! ([`super::storage::AccessStore`]) keeps them.
//!
//! A clinician sees the patients of the care teams they belong to, and only those; an admin
//! sees everyone. A session is a random 256-bit value held by the browser in an HttpOnly
//! cookie; the registry keeps only its SHA-256, with the user it belongs to, its CSRF token and
//! when it expires. Changing a user's password or role ends their sessions. Every change that
//! ends a session or changes what a user sees is announced ([`Registry::subscribe_access`])
//! once it is committed, so that open sockets re-check at once.
//!
//! Usernames ignore case: `nina` and `NINA` are one account, found by either spelling (sign-in,
//! changes, teams, tokens) and shown as it was created. Sessions, team memberships and tokens
//! hold that stored spelling. Accounts that already differed only in case when this rule came
//! (SQLite schema 7) are kept, each found by its exact spelling only; no new one can be added.
//!
//! It must never store a session token or a password in the clear.

use std::collections::HashMap;

use super::access::{NewSession, NewTeam, NewUser, UserChange, check_display_name, check_team_id};
use super::audit::NewAuditLine;
use super::contacts::{Contact, ContactChange};
use super::error::RegistryError;
use super::password_policy::check_password;
use super::{ACCOUNTS, AccessChange, Registry, Role, Team, User, sha256};

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
    /// The name shown to patients; `Some("")` clears it.
    pub display_name: Option<String>,
    /// `Some(true)` disables the user (their sessions end, their tokens stop working);
    /// `Some(false)` enables them again.
    pub disabled: Option<bool>,
    /// Whether `password` is a temporary one (a reset): the user must choose their own before
    /// doing anything else. A password set without saying so is not temporary.
    pub password_temporary: Option<bool>,
}

/// Characters of a temporary password: lower-case letters and digits without the ones easily
/// misread (`0 o 1 l i`), so that it can be read out over the phone.
const TEMPORARY_ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";

/// A random temporary password: four groups of five characters (`k7mwq-…`), about 99 bits.
fn temporary_password() -> Result<String, RegistryError> {
    let mut out = String::with_capacity(23);
    let mut bytes = [0u8; 64];
    getrandom::fill(&mut bytes).map_err(|e| RegistryError::Db(format!("no randomness: {e}")))?;
    // Rejection sampling keeps every character equally likely.
    let limit = 256 - 256 % TEMPORARY_ALPHABET.len();
    let mut picked = bytes
        .iter()
        .filter(|b| usize::from(**b) < limit)
        .map(|b| TEMPORARY_ALPHABET[usize::from(*b) % TEMPORARY_ALPHABET.len()]);
    for group in 0..4 {
        if group > 0 {
            out.push('-');
        }
        for _ in 0..5 {
            let c = picked
                .next()
                .ok_or_else(|| RegistryError::Db("not enough randomness".into()))?;
            out.push(char::from(c));
        }
    }
    Ok(out)
}

fn random_token() -> Result<(String, [u8; 32]), RegistryError> {
    use base64::Engine as _;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| RegistryError::Db(format!("no randomness: {e}")))?;
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let hash = sha256(token.as_bytes());
    Ok((token, hash))
}

/// `Err` unless `username` is 1 to 64 characters of A-Z a-z 0-9 . _ - @.
fn check_username(username: &str) -> Result<(), RegistryError> {
    let ok = !username.is_empty()
        && username.len() <= 64
        && username
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if ok {
        Ok(())
    } else {
        Err(RegistryError::Invalid(
            "username must be 1 to 64 characters of A-Z a-z 0-9 . _ - @".into(),
        ))
    }
}

impl Registry {
    /// Creates a dashboard user with an Argon2id hash of `password`, on no care team and
    /// unaudited (see [`Registry::create_user`]).
    pub async fn add_user(
        &self,
        username: &str,
        role: Role,
        password: &str,
        now_ms: i64,
    ) -> Result<(), RegistryError> {
        self.create_user(username, role, password, Vec::new(), now_ms, None)
            .await
            .map(drop)
    }

    /// Creates a dashboard user with an Argon2id hash of `password`, on `teams` (each must
    /// exist), and appends `audit` when given: all or nothing. `Exists` when a user of that
    /// name, in any case, exists.
    pub async fn create_user(
        &self,
        username: &str,
        role: Role,
        password: &str,
        teams: Vec<String>,
        now_ms: i64,
        audit: Option<NewAuditLine>,
    ) -> Result<User, RegistryError> {
        check_username(username)?;
        check_password(password, username)?;
        for t in &teams {
            check_team_id(t)?;
        }
        let hash = self.hasher.hash(ACCOUNTS, password).await?;
        let user = NewUser {
            name: username.to_owned(),
            password_hash: hash,
            role,
            teams,
            created_ms: now_ms,
        };
        Ok(self.db.create_user(user, audit).await?.into())
    }

    /// Checks a user's password in `client`'s turn (a remote address: see [`super::password`]);
    /// `Some(role)` when it matches. An unknown user costs the same Argon2 work as a known one,
    /// so the time taken does not tell whether a username exists. [`RegistryError::Busy`]: too
    /// many checks are under way to wait for this one.
    pub async fn verify_user(
        &self,
        username: &str,
        password: &str,
        client: &str,
    ) -> Result<Option<Role>, RegistryError> {
        let found = self.db.credentials(username.to_owned()).await?;
        // A disabled user's password is checked all the same, so that the time taken does not
        // tell a disabled account from the others; the sign-in is refused either way.
        let (hash, role) = found
            .map(|c| (c.password_hash, c.role.filter(|_| !c.disabled)))
            .unzip();
        let ok = self.hasher.verify(client, hash, password).await?;
        Ok(role.flatten().filter(|_| ok))
    }

    /// Whether the user `username` names exists and is disabled (for the audit line of a
    /// refused sign-in; the answer to the person signing in does not say).
    pub async fn is_disabled(&self, username: &str) -> Result<bool, RegistryError> {
        Ok(self
            .db
            .credentials(username.to_owned())
            .await?
            .is_some_and(|c| c.disabled))
    }

    /// Sets a user's care teams, unaudited (the command line, right after
    /// [`Registry::add_user`]).
    pub async fn set_user_teams(
        &self,
        username: &str,
        teams: Vec<String>,
    ) -> Result<(), RegistryError> {
        for t in &teams {
            check_team_id(t)?;
        }
        let change = UserChange {
            teams: Some(teams),
            ..UserChange::default()
        };
        let user = self
            .db
            .update_user(username.to_owned(), change, None)
            .await?;
        self.access_changed(AccessChange::User(user.name));
        Ok(())
    }

    /// All users, by name.
    pub async fn users(&self) -> Result<Vec<User>, RegistryError> {
        let users = self.db.users().await?;
        Ok(users.into_iter().map(User::from).collect())
    }

    /// One user, by any spelling of its name.
    pub async fn user(&self, username: &str) -> Result<User, RegistryError> {
        self.db
            .user(username.to_owned())
            .await?
            .map(User::from)
            .ok_or_else(|| RegistryError::NotFound(format!("user {username}")))
    }

    /// Changes a user's role, teams, password, display name or whether they are disabled,
    /// and appends the audit line `audit` makes of the user's stored name, all or nothing. A
    /// new role or password, or disabling, ends their sessions (and a disabled user's API
    /// tokens stop working: [`Registry::session`] and [`Registry::api_token`] refuse them).
    pub async fn update_user(
        &self,
        username: &str,
        update: UserUpdate,
        audit: impl FnOnce(&str) -> NewAuditLine,
    ) -> Result<User, RegistryError> {
        if let Some(teams) = &update.teams {
            for t in teams {
                check_team_id(t)?;
            }
        }
        let display_name = update
            .display_name
            .as_deref()
            .map(check_display_name)
            .transpose()?;
        let password_hash = match &update.password {
            Some(p) => {
                check_password(p, username)?;
                Some(self.hasher.hash(ACCOUNTS, p).await?)
            }
            None => None,
        };
        // The line names the stored spelling; no route renames a user, so it stays the one the
        // change is made to.
        let stored = self.user(username).await?.name;
        let change = UserChange {
            role: update.role,
            password_hash,
            teams: update.teams,
            display_name,
            disabled_ms: update.disabled.map(|d| d.then(crate::domain::now_ms)),
            password_temporary: update
                .password_temporary
                .or(update.password.is_some().then_some(false)),
        };
        let user = self
            .db
            .update_user(stored.clone(), change, Some(audit(&stored)))
            .await?;
        // Sessions ended, or what the user sees changed: open sockets re-check (under the
        // stored spelling, which their principals hold).
        self.access_changed(AccessChange::User(user.name.clone()));
        Ok(user.into())
    }

    /// Gives a user a new password — `password` when the admin chose one (it must meet the
    /// policy), else a random temporary one — ends their sessions and appends the audit line
    /// `audit` makes of the stored name, all or nothing. Returns the user and the password
    /// (to be shown once, never stored or logged).
    pub async fn reset_password(
        &self,
        username: &str,
        password: Option<String>,
        audit: impl FnOnce(&str) -> NewAuditLine,
    ) -> Result<(User, String), RegistryError> {
        let password = match password {
            Some(p) => p,
            None => {
                // A short username may turn up in a random password (the policy refuses
                // that): draw again.
                let mut drawn = temporary_password()?;
                for _ in 0..16 {
                    if check_password(&drawn, username).is_ok() {
                        break;
                    }
                    drawn = temporary_password()?;
                }
                drawn
            }
        };
        let update = UserUpdate {
            password: Some(password.clone()),
            // Whoever chose it, the admin knows it: the user chooses their own next.
            password_temporary: Some(true),
            ..UserUpdate::default()
        };
        let user = self.update_user(username, update, audit).await?;
        Ok((user, password))
    }

    /// A signed-in user replaces their own password: `current` is checked in `client`'s turn
    /// of the hasher (as a sign-in is), `new` against the policy (and must differ); then the
    /// new hash, the end of every session of theirs and the audit line `audit` makes commit
    /// together. `Invalid` (nothing changed) when `current` is wrong or `new` is refused.
    pub async fn change_own_password(
        &self,
        username: &str,
        current: &str,
        new: &str,
        client: &str,
        audit: impl FnOnce(&str) -> NewAuditLine,
    ) -> Result<User, RegistryError> {
        let stored = self
            .db
            .credentials(username.to_owned())
            .await?
            .ok_or_else(|| RegistryError::NotFound(format!("user {username}")))?;
        if !self
            .hasher
            .verify(client, Some(stored.password_hash), current)
            .await?
        {
            return Err(RegistryError::Invalid(
                "current_password is not your current password".into(),
            ));
        }
        if new == current {
            return Err(RegistryError::Invalid(
                "new_password must differ from the current one".into(),
            ));
        }
        check_password(new, username).map_err(|e| RegistryError::Invalid(format!("new_{e}")))?;
        let update = UserUpdate {
            password: Some(new.to_owned()),
            password_temporary: Some(false),
            ..UserUpdate::default()
        };
        self.update_user(username, update, audit).await
    }

    /// Changes the contact details of the user `username` names (any spelling), with the audit
    /// line `audit` makes of the stored name, both or neither; the details as they now are.
    pub async fn change_contact(
        &self,
        username: &str,
        change: ContactChange,
        audit: impl FnOnce(&str) -> NewAuditLine,
    ) -> Result<Contact, RegistryError> {
        let stored = self.user(username).await?.name;
        let line = audit(&stored);
        self.db.change_contact(stored, change, line).await
    }

    /// Every user's contact details that have been set, by stored user name.
    pub async fn contacts(&self) -> Result<HashMap<String, Contact>, RegistryError> {
        Ok(self.db.contacts().await?.into_iter().collect())
    }

    /// The contact details of the user stored as `name` (empty when none are set), for their
    /// own session.
    pub async fn contact_of(&self, name: &str) -> Result<Contact, RegistryError> {
        Ok(self
            .db
            .contacts()
            .await?
            .into_iter()
            .find_map(|(n, c)| (n == name).then_some(c))
            .unwrap_or_default())
    }

    /// Creates a care team, and appends `audit` when given: both or neither.
    pub async fn create_team(
        &self,
        id: &str,
        name: &str,
        now_ms: i64,
        audit: Option<NewAuditLine>,
    ) -> Result<Team, RegistryError> {
        check_team_id(id)?;
        let name = name.trim().to_owned();
        if name.is_empty() || name.chars().count() > 200 {
            return Err(RegistryError::Invalid(
                "team name must be 1 to 200 characters".into(),
            ));
        }
        let team = NewTeam {
            id: id.to_owned(),
            name,
            created_ms: now_ms,
        };
        self.db.create_team(team, audit).await
    }

    /// All care teams with their members.
    pub async fn teams(&self) -> Result<Vec<Team>, RegistryError> {
        self.db.teams().await
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
        let expires_ms = now_ms + lifetime_ms;
        let session = NewSession {
            hash,
            user: username.to_owned(),
            csrf: csrf.clone(),
            created_ms: now_ms,
            expires_ms,
        };
        // The session holds the stored spelling, whichever one signed in.
        let name = self.db.create_session(session).await?;
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
        let Some(s) = self.db.live_session(hash, now_ms).await? else {
            return Ok(None);
        };
        let user = self.user(&s.user).await?;
        if user.disabled {
            // Disabling ended the user's sessions; one started at that very moment ends here.
            return Ok(None);
        }
        Ok(Some(Session {
            user,
            csrf: s.csrf,
            expires_ms: s.expires_ms,
        }))
    }

    /// Ends a session (sign-out) and appends `audit` when given, both or neither (the line is
    /// written whether or not the session existed). Ending one that does not exist is not an
    /// error.
    pub async fn end_session(
        &self,
        token: &str,
        audit: Option<NewAuditLine>,
    ) -> Result<(), RegistryError> {
        let hash = sha256(token.as_bytes());
        if let Some(user) = self.db.end_session(hash, audit).await? {
            self.access_changed(AccessChange::User(user));
        }
        Ok(())
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

    /// The audit line of a change to user `name`.
    fn test_line(name: &str) -> NewAuditLine {
        NewAuditLine {
            time_ms: 0,
            actor: "admin".into(),
            action: "user.update".into(),
            patient_id: None,
            target: format!("user/{name}"),
            remote: "127.0.0.1".into(),
        }
    }

    async fn registry(dir: &std::path::Path) -> Registry {
        Registry::open(dir, super::super::Profiles::built_in().unwrap())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn usernames_ignore_case_and_keep_their_first_spelling() {
        let dir = tempfile::tempdir().unwrap();
        let r = registry(dir.path()).await;
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

        r.create_team("north", "North", 0, None).await.unwrap();
        r.set_user_teams("NINA", vec!["north".into()])
            .await
            .unwrap();
        let update = UserUpdate {
            role: Some(Role::Admin),
            ..UserUpdate::default()
        };
        let u = r.update_user("nInA", update, test_line).await.unwrap();
        assert_eq!((u.name.as_str(), u.role), ("nina", Role::Admin));
        assert_eq!(u.teams, ["north"]);
        // The change's audit line is made of the stored spelling, and written with it.
        let lines = r
            .audit_records(None, None, i64::MIN, i64::MAX, 10, false)
            .await
            .unwrap();
        let targets: Vec<_> = lines.iter().map(|l| l.target.as_str()).collect();
        assert_eq!(targets, ["user/nina"]);
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
            let c = crate::store::open_db(&path, &crate::registry::sqlite::schema::SCHEMA[..6])
                .unwrap();
            let hash = super::super::password::hash_with("correct horse battery", &mut Vec::new())
                .unwrap();
            for (name, role) in [("nina", "clinician"), ("NINA", "admin")] {
                c.execute(
                    "INSERT INTO users (username, password_hash, role, created_ms) VALUES (?1, ?2, ?3, 0)",
                    rusqlite::params![name, hash, role],
                )
                .unwrap();
            }
        }
        let r = registry(dir.path()).await;
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
        let raw = crate::registry::sqlite::with_file(dir.path(), |c| {
                Ok(c.execute(
                    "INSERT INTO users (username, password_hash, role, created_ms) VALUES ('NiNa', 'x', 'admin', 0)",
                    [],
                )?)
            })
            .await;
        assert!(raw.is_err(), "{raw:?}");
    }

    #[test]
    fn temporary_passwords_meet_the_policy_and_differ() {
        let a = temporary_password().unwrap();
        let b = temporary_password().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 23, "{a}");
        // `i` is not among its characters, so it never contains `nina`.
        for user in ["nina", "vigil"] {
            check_password(&a, user).unwrap();
        }
    }

    #[test]
    fn team_ids() {
        assert!(check_team_id("cardio-north").is_ok());
        assert!(check_team_id("").is_err());
        assert!(check_team_id("a b").is_err());
    }
}
