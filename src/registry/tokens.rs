//! API tokens for integrations (scripts, an EHR's poller): a random secret held as SHA-256,
//! belonging to a user (it acts with that user's role and care teams), with a scope (`read`:
//! safe methods only, or `write`) and an expiry no more than a year ahead; revocable. The
//! secret is shown once, at creation. Schema version 6.
//!
//! This module holds the tokens' types and rules (the label, how a secret and its id are made);
//! it never touches a database: [`super::storage::TokenStore`] stores them, and the registry
//! announces a revocation once it is committed.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::error::RegistryError;
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
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
        }
    }

    /// As stored; anything but `write` reads only, so a damaged row never grants more.
    pub fn from_stored(s: &str) -> Scope {
        if s == "write" {
            Scope::Write
        } else {
            Scope::Read
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

/// A token as a backend reads it back: times in milliseconds since the epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredToken {
    pub id: String,
    pub user: String,
    pub label: String,
    pub scope: Scope,
    pub created_ms: i64,
    pub expires_ms: i64,
    pub revoked_ms: Option<i64>,
}

impl From<StoredToken> for ApiToken {
    fn from(t: StoredToken) -> ApiToken {
        ApiToken {
            id: t.id,
            user: t.user,
            label: t.label,
            scope: t.scope,
            created_at: format_rfc3339(t.created_ms),
            expires_at: format_rfc3339(t.expires_ms),
            revoked_at: t.revoked_ms.map(format_rfc3339),
            expires_ms: t.expires_ms,
        }
    }
}

/// A token to store ([`super::storage::TokenStore::create_token`]): its secret only as a hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewApiToken {
    pub id: String,
    /// SHA-256 of the secret.
    pub hash: [u8; 32],
    /// The user's name as stored (not another spelling of it).
    pub user: String,
    pub label: String,
    pub scope: Scope,
    pub created_ms: i64,
    pub expires_ms: i64,
}

impl NewApiToken {
    /// The token as read back right after it is stored.
    pub fn stored(&self) -> StoredToken {
        StoredToken {
            id: self.id.clone(),
            user: self.user.clone(),
            label: self.label.clone(),
            scope: self.scope,
            created_ms: self.created_ms,
            expires_ms: self.expires_ms,
            revoked_ms: None,
        }
    }
}

/// How a live token is looked up: by its secret's hash (a request) or its id (an open socket
/// re-checking the token it was opened with).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveBy {
    Hash([u8; 32]),
    Id(String),
}

/// A token's label, trimmed; `Err` unless it is 1 to 100 characters.
pub fn check_label(label: &str) -> Result<String, RegistryError> {
    let label = label.trim();
    if label.is_empty() || label.chars().count() > 100 {
        return Err(RegistryError::Invalid(
            "label: say what the token is for, in 1 to 100 characters".into(),
        ));
    }
    Ok(label.to_owned())
}

/// The SHA-256 of a token's secret: what is stored and looked up.
pub fn secret_hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// A new token's secret (`vgt_` and 32 random bytes in URL-safe base64) and its id (derived
/// from the same bytes, so it says nothing about the secret's hash).
pub fn new_secret() -> Result<(String, String), RegistryError> {
    use base64::Engine as _;
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| RegistryError::Db(format!("no randomness: {e}")))?;
    let secret = format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    );
    let id: [u8; 32] = Sha256::digest(b).into();
    Ok((secret, format!("tok_{}", hex::encode(&id[..8]))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::audit::NewAuditLine;
    use crate::registry::{Profiles, Registry, Role};

    fn audited(action: &str, id: &str) -> NewAuditLine {
        NewAuditLine {
            time_ms: 0,
            actor: "admin".into(),
            action: action.into(),
            patient_id: None,
            target: format!("token/{id}"),
            remote: "127.0.0.1".into(),
        }
    }

    fn created(id: &str) -> NewAuditLine {
        audited("token.create", id)
    }

    #[tokio::test]
    async fn a_token_works_until_it_expires_or_is_revoked_and_is_kept_only_as_a_hash() {
        let dir = tempfile::tempdir().unwrap();
        let r = Registry::open(dir.path(), Profiles::built_in().unwrap())
            .await
            .unwrap();
        r.add_user("poller", Role::Clinician, "a long enough password", 0)
            .await
            .unwrap();
        let (secret, t) = r
            .create_api_token("poller", "EHR poller", Scope::Read, 1_000, 2_000, created)
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
        let stored: Vec<u8> = crate::registry::sqlite::with_file(dir.path(), |c| {
            Ok(c.query_row("SELECT token_hash FROM api_tokens", [], |r| r.get(0))?)
        })
        .await
        .unwrap();
        assert_eq!(stored, secret_hash(&secret).to_vec());

        let (live, t2) = r
            .create_api_token("poller", "writer", Scope::Write, 1_000, 9_000, created)
            .await
            .unwrap();
        assert!(r.api_token(&live, 1_500).await.unwrap().is_some());
        let revoked = r
            .revoke_api_token(t2.id.clone(), 1_600, audited("token.revoke", &t2.id))
            .await
            .unwrap();
        assert!(revoked.revoked_at.is_some());
        assert!(
            r.api_token(&live, 1_700).await.unwrap().is_none(),
            "revoked"
        );
        assert_eq!(r.api_tokens(Some("poller".into())).await.unwrap().len(), 2);
        // Each change wrote the line made for it, naming the new token.
        let lines = r
            .audit_records(None, None, i64::MIN, i64::MAX, 100, false)
            .await
            .unwrap();
        let lines: Vec<_> = lines.iter().map(|l| (&*l.action, &*l.target)).collect();
        let (one, two) = (format!("token/{}", t.id), format!("token/{}", t2.id));
        assert_eq!(
            lines,
            [
                ("token.create", &*one),
                ("token.create", &*two),
                ("token.revoke", &*two)
            ]
        );
        assert!(
            r.create_api_token("nobody", "x", Scope::Read, 0, 1, created)
                .await
                .is_err()
        );
        assert!(
            r.create_api_token("poller", " ", Scope::Read, 0, 1, created)
                .await
                .is_err()
        );
    }
}
