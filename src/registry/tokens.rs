//! API tokens for integrations (scripts, an EHR's poller): a random secret held as SHA-256,
//! belonging to a user (it acts with that user's role and care teams), with a scope (`read`:
//! safe methods only, or `write`) and an expiry no more than a year ahead; revocable. The
//! secret is shown once, at creation. Schema version 6.

use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::error::RegistryError;
use super::users::User;
use super::{AccessChange, Registry, sha256};
use crate::domain::format_rfc3339;

/// The prefix of every API token's secret (recognisable to secret scanners).
pub const TOKEN_PREFIX: &str = "vgt_";

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Reads only (GET).
    Read,
    /// Reads and changes, as its user may.
    Write,
}

impl Scope {
    fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
        }
    }
}

/// A token as the API shows it (never its secret).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ApiToken {
    pub id: String,
    pub user: String,
    pub label: String,
    pub scope: Scope,
    pub created_at: String,
    pub expires_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
    /// `expires_at` in milliseconds since the epoch (for timers).
    #[serde(skip)]
    pub expires_ms: i64,
}

type Row = (String, String, String, String, i64, i64, Option<i64>);

fn to_token(r: Row) -> ApiToken {
    let (id, user, label, scope, created, expires, revoked) = r;
    ApiToken {
        id,
        user,
        label,
        scope: if scope == "write" {
            Scope::Write
        } else {
            Scope::Read
        },
        created_at: format_rfc3339(created),
        expires_at: format_rfc3339(expires),
        revoked_at: revoked.map(format_rfc3339),
        expires_ms: expires,
    }
}

const COLUMNS: &str = "id, username, label, scope, created_ms, expires_ms, revoked_ms";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
    ))
}

impl Registry {
    /// Creates a token for `user`; returns its secret (shown once) and the token.
    pub async fn create_api_token(
        &self,
        user: &str,
        label: &str,
        scope: Scope,
        now_ms: i64,
        expires_ms: i64,
    ) -> Result<(String, ApiToken), RegistryError> {
        let label = label.trim();
        if label.is_empty() || label.chars().count() > 100 {
            return Err(RegistryError::Invalid(
                "label: say what the token is for, in 1 to 100 characters".into(),
            ));
        }
        let mut b = [0u8; 32];
        getrandom::fill(&mut b).map_err(|e| RegistryError::Db(format!("no randomness: {e}")))?;
        let secret = {
            use base64::Engine as _;
            format!(
                "{TOKEN_PREFIX}{}",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
            )
        };
        let hash = sha256(secret.as_bytes());
        let id = format!("tok_{}", hex::encode(&sha256(&b)[..8]));
        let (asked, label) = (user.to_owned(), label.to_owned());
        let token = self
            .with(move |c| {
                // Any spelling of the name; the token holds the stored one.
                let user = super::usernames::stored_name(c, &asked)?
                    .ok_or_else(|| RegistryError::NotFound(format!("user {asked}")))?;
                c.execute(
                    "INSERT INTO api_tokens (id, token_hash, username, label, scope, created_ms, expires_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![id, hash.as_slice(), user, label, scope.as_str(), now_ms, expires_ms],
                )?;
                Ok(to_token((id, user, label, scope.as_str().to_owned(), now_ms, expires_ms, None)))
            })
            .await?;
        Ok((secret, token))
    }

    /// The tokens of `user`, or every token (`None`), newest first.
    pub async fn api_tokens(&self, user: Option<String>) -> Result<Vec<ApiToken>, RegistryError> {
        self.with(move |c| {
            let sql = format!(
                "SELECT {COLUMNS} FROM api_tokens WHERE ?1 IS NULL OR username = ?1
                 ORDER BY created_ms DESC, id"
            );
            let mut stmt = c.prepare(&sql)?;
            let rows = stmt.query_map([user], row)?;
            Ok(rows
                .map(|r| r.map(to_token))
                .collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// One token by id.
    pub async fn api_token_by_id(&self, id: String) -> Result<Option<ApiToken>, RegistryError> {
        self.with(move |c| {
            let sql = format!("SELECT {COLUMNS} FROM api_tokens WHERE id = ?1");
            Ok(c.query_row(&sql, [id], row).optional()?.map(to_token))
        })
        .await
    }

    /// Revokes a token (at once: the next request with it is refused). Idempotent.
    pub async fn revoke_api_token(
        &self,
        id: String,
        now_ms: i64,
    ) -> Result<ApiToken, RegistryError> {
        self.with(move |c| {
            c.execute(
                "UPDATE api_tokens SET revoked_ms = ?2 WHERE id = ?1 AND revoked_ms IS NULL",
                params![id, now_ms],
            )?;
            let sql = format!("SELECT {COLUMNS} FROM api_tokens WHERE id = ?1");
            c.query_row(&sql, [&id], row)
                .optional()?
                .map(to_token)
                .ok_or_else(|| RegistryError::NotFound(format!("token {id}")))
        })
        .await
        .inspect(|t| self.access_changed(AccessChange::User(t.user.clone())))
    }

    /// The token a secret names and its user, if it is live (not revoked, not expired).
    pub async fn api_token(
        &self,
        secret: &str,
        now_ms: i64,
    ) -> Result<Option<(ApiToken, User)>, RegistryError> {
        let hash = sha256(secret.as_bytes());
        self.live_token(LiveBy::Hash(hash), now_ms).await
    }

    /// The token with this id and its user, if it is still live: how an open socket re-checks
    /// the token it was opened with.
    pub async fn live_api_token(
        &self,
        id: &str,
        now_ms: i64,
    ) -> Result<Option<(ApiToken, User)>, RegistryError> {
        self.live_token(LiveBy::Id(id.to_owned()), now_ms).await
    }

    async fn live_token(
        &self,
        by: LiveBy,
        now_ms: i64,
    ) -> Result<Option<(ApiToken, User)>, RegistryError> {
        let found = self
            .with(move |c| {
                let live = "revoked_ms IS NULL AND expires_ms > ?2";
                let found = match by {
                    LiveBy::Hash(h) => c.query_row(
                        &format!(
                            "SELECT {COLUMNS} FROM api_tokens WHERE token_hash = ?1 AND {live}"
                        ),
                        params![h.as_slice(), now_ms],
                        row,
                    ),
                    LiveBy::Id(id) => c.query_row(
                        &format!("SELECT {COLUMNS} FROM api_tokens WHERE id = ?1 AND {live}"),
                        params![id, now_ms],
                        row,
                    ),
                };
                Ok(found.optional()?)
            })
            .await?;
        let Some(r) = found else {
            return Ok(None);
        };
        let token = to_token(r);
        let user = self.user(&token.user).await?;
        Ok(Some((token, user)))
    }
}

/// How a live token is looked up: by its secret's hash (a request) or its id (a re-check).
enum LiveBy {
    Hash([u8; 32]),
    Id(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{Profiles, Role};

    #[tokio::test]
    async fn a_token_works_until_it_expires_or_is_revoked_and_is_kept_only_as_a_hash() {
        let dir = tempfile::tempdir().unwrap();
        let r = Registry::open(dir.path(), Profiles::built_in().unwrap()).unwrap();
        r.add_user("poller", Role::Clinician, "a long enough password", 0)
            .await
            .unwrap();
        let (secret, t) = r
            .create_api_token("poller", "EHR poller", Scope::Read, 1_000, 2_000)
            .await
            .unwrap();
        assert!(
            secret.starts_with(TOKEN_PREFIX) && secret.len() > 40,
            "{secret}"
        );
        assert_eq!((t.user.as_str(), t.scope), ("poller", Scope::Read));
        let (found, user) = r.api_token(&secret, 1_999).await.unwrap().unwrap();
        assert_eq!(
            (found.id.as_str(), user.name.as_str()),
            (t.id.as_str(), "poller")
        );
        assert!(
            r.api_token(&secret, 2_000).await.unwrap().is_none(),
            "expired"
        );
        assert!(
            r.api_token(&format!("{secret}x"), 1_500)
                .await
                .unwrap()
                .is_none()
        );
        // Not stored in the clear.
        let stored: Vec<u8> = r
            .with(|c| Ok(c.query_row("SELECT token_hash FROM api_tokens", [], |r| r.get(0))?))
            .await
            .unwrap();
        assert_eq!(stored, sha256(secret.as_bytes()).to_vec());

        let (live, t2) = r
            .create_api_token("poller", "writer", Scope::Write, 1_000, 9_000)
            .await
            .unwrap();
        assert!(r.api_token(&live, 1_500).await.unwrap().is_some());
        let revoked = r.revoke_api_token(t2.id.clone(), 1_600).await.unwrap();
        assert!(revoked.revoked_at.is_some());
        assert!(
            r.api_token(&live, 1_700).await.unwrap().is_none(),
            "revoked"
        );
        assert_eq!(r.api_tokens(Some("poller".into())).await.unwrap().len(), 2);
        assert!(
            r.create_api_token("nobody", "x", Scope::Read, 0, 1)
                .await
                .is_err()
        );
        assert!(
            r.create_api_token("poller", " ", Scope::Read, 0, 1)
                .await
                .is_err()
        );
    }
}
