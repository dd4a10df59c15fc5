//! Access to the dashboard: users, care teams and sign-in sessions as the storage seam
//! ([`super::storage::AccessStore`]) takes and returns them, and the pure rules about them (a
//! team id's form, the refusal of a taken username).
//!
//! It never touches a database, and it holds no password or session token in the clear: a
//! user arrives with the hash of their password (the registry hashes it), a session with the
//! SHA-256 of its token.

use serde::Serialize;

use super::error::RegistryError;
use crate::domain::format_rfc3339;

/// A dashboard user's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Clinician,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "clinician" => Some(Role::Clinician),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Clinician => "clinician",
        }
    }

    /// As stored; anything but `admin` is a clinician, so a damaged row never grants more.
    pub fn from_stored(s: &str) -> Role {
        Role::parse(s).unwrap_or(Role::Clinician)
    }
}

/// A user as the API shows it (never the password hash).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub role: Role,
    pub teams: Vec<String>,
    pub created_at: String,
    /// The name patients see (a visit, the portal) instead of the username; `null` when unset.
    pub display_name: Option<String>,
    /// A disabled user cannot sign in, and their sessions and API tokens do not work.
    pub disabled: bool,
    /// Their password is a temporary one (a reset): until they choose their own, their
    /// sessions may do nothing else.
    pub must_change_password: bool,
}

impl User {
    /// The name to show patients: the display name, else the username.
    pub fn shown_name(&self) -> &str {
        self.display_name.as_deref().unwrap_or(&self.name)
    }
}

/// A user as a backend reads it back: the stored spelling of the name, the teams by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredUser {
    pub name: String,
    pub role: Role,
    pub teams: Vec<String>,
    pub created_ms: i64,
    pub display_name: Option<String>,
    /// When the user was disabled; `None` while they may sign in.
    pub disabled_ms: Option<i64>,
    /// Whether their password is a temporary one from a reset.
    pub password_temporary: bool,
}

impl From<StoredUser> for User {
    fn from(u: StoredUser) -> User {
        User {
            name: u.name,
            role: u.role,
            teams: u.teams,
            created_at: format_rfc3339(u.created_ms),
            display_name: u.display_name,
            disabled: u.disabled_ms.is_some(),
            must_change_password: u.password_temporary,
        }
    }
}

/// A user to create ([`super::storage::AccessStore::create_user`]), with its care teams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUser {
    /// Checked by the registry; stored as given.
    pub name: String,
    /// The password's Argon2id hash (PHC string), never the password.
    pub password_hash: String,
    pub role: Role,
    pub teams: Vec<String>,
    pub created_ms: i64,
}

/// What a sign-in checks a password against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub password_hash: String,
    /// `None` when the stored role is not one this Vigil knows (the sign-in is refused).
    pub role: Option<Role>,
    /// A disabled user's sign-in is refused, with the same answer as a wrong password.
    pub disabled: bool,
}

/// A change of a user ([`super::storage::AccessStore::update_user`]); `None` leaves it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserChange {
    pub role: Option<Role>,
    /// A new password's hash.
    pub password_hash: Option<String>,
    pub teams: Option<Vec<String>>,
    /// `Some(None)` clears the display name; checked by the registry.
    pub display_name: Option<Option<String>>,
    /// `Some(Some(ms))` disables the user as of `ms` (a user already disabled keeps their
    /// first time); `Some(None)` enables them.
    pub disabled_ms: Option<Option<i64>>,
    /// Whether the password (set with this change, or as it is) is a temporary one.
    pub password_temporary: Option<bool>,
}

impl UserChange {
    /// A new role or password, or disabling, ends the user's sessions.
    pub fn ends_sessions(&self) -> bool {
        self.role.is_some()
            || self.password_hash.is_some()
            || matches!(self.disabled_ms, Some(Some(_)))
    }
}

/// Longest display name, in characters.
pub const DISPLAY_NAME_MAX_CHARS: usize = 100;

/// A display name as stored: trimmed; `None` for an empty one (cleared). `Invalid` when too
/// long or holding control characters.
pub fn check_display_name(name: &str) -> Result<Option<String>, RegistryError> {
    let name = name.trim();
    if name.chars().count() > DISPLAY_NAME_MAX_CHARS || name.chars().any(char::is_control) {
        return Err(RegistryError::Invalid(format!(
            "display_name must be at most {DISPLAY_NAME_MAX_CHARS} characters, without control characters"
        )));
    }
    Ok((!name.is_empty()).then(|| name.to_owned()))
}

/// A care team and its members.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Team {
    pub id: String,
    pub name: String,
    pub members: Vec<String>,
}

/// A care team to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTeam {
    pub id: String,
    pub name: String,
    pub created_ms: i64,
}

/// A session to start: the SHA-256 of its token, never the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSession {
    pub hash: [u8; 32],
    /// The user, by any spelling of the name; the session holds the stored one.
    pub user: String,
    pub csrf: String,
    pub created_ms: i64,
    pub expires_ms: i64,
}

/// A live session as a backend reads it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSession {
    /// The stored spelling of its user's name.
    pub user: String,
    pub csrf: String,
    pub expires_ms: i64,
}

/// The rule for team ids, the same as for care_team on a patient.
pub fn check_team_id(id: &str) -> Result<(), RegistryError> {
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

/// The refusal of a new user named `asked` because `taken` exists (the same name, or another
/// spelling of it: usernames ignore case).
pub fn user_exists(taken: &str, asked: &str) -> RegistryError {
    let note = if taken == asked {
        ""
    } else {
        " (usernames ignore case)"
    };
    RegistryError::Exists(format!("user {taken}{note}"))
}

/// The refusal of a user's care team that does not exist.
pub fn no_such_team(team: &str) -> RegistryError {
    RegistryError::Invalid(format!("no care team {team:?}; create it first"))
}
