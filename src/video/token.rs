//! Join tokens for video visits: signed, expiring and single-purpose.
//!
//! A token names one visit and one role (patient or clinician) and when it expires, and is
//! signed with HMAC-SHA256 under a key only this Vigil holds (`visit-signing.key` in the data
//! directory, 256 random bits, mode 0600). It opens that visit in that role until it expires,
//! and nothing else: a token for another visit, another role, after its expiry or with one
//! byte changed is refused. Pure: the caller passes the time.
//!
//! Form: `v1.<base64url(JSON claims)>.<base64url(HMAC of "v1.<claims>")>`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, KeyInit as _, Mac as _};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// Who a join token admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JoinRole {
    Patient,
    Clinician,
    /// A third participant: an interpreter or a family member. Waits to be admitted, like the
    /// patient.
    Guest,
}

impl JoinRole {
    /// The role's name, as in the protocol.
    pub fn as_str(self) -> &'static str {
        match self {
            JoinRole::Patient => "patient",
            JoinRole::Clinician => "clinician",
            JoinRole::Guest => "guest",
        }
    }
}

/// What a token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The visit.
    pub v: String,
    /// The role.
    pub r: JoinRole,
    /// Expiry, Unix seconds.
    pub exp: i64,
}

/// Why a token was refused (said to the holder in these words).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the link is not a valid visit link")]
    Malformed,
    #[error("the link's signature does not match; it may have been altered")]
    BadSignature,
    #[error("the link has expired; ask the clinic for a new one")]
    Expired,
    #[error("the link is for another visit")]
    OtherVisit,
}

/// The signing key.
#[derive(Clone)]
pub struct TokenKey([u8; 32]);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

impl TokenKey {
    pub fn from_bytes(bytes: [u8; 32]) -> TokenKey {
        TokenKey(bytes)
    }

    /// The key shared by every instance on the registry's database: the registry's
    /// `visit-signing` secret, or this one, stored there now when it has none. So a link made
    /// through one instance opens through any, and a move from SQLite to PostgreSQL keeps links
    /// working.
    pub async fn shared(
        self,
        registry: &crate::registry::Registry,
    ) -> Result<TokenKey, crate::registry::RegistryError> {
        let stored = registry
            .shared_secret("visit-signing", self.0.to_vec())
            .await?;
        <[u8; 32]>::try_from(stored.as_slice())
            .map(TokenKey)
            .map_err(|_| {
                crate::registry::RegistryError::Db(
                    "the stored visit-signing secret is not a 32-byte key".into(),
                )
            })
    }

    /// Reads the key from `path`, creating it (256 random bits, mode 0600) if missing.
    pub fn load_or_create(path: &std::path::Path) -> std::io::Result<TokenKey> {
        match std::fs::read(path) {
            Ok(bytes) => <[u8; 32]>::try_from(bytes.as_slice())
                .map(TokenKey)
                .map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("{} is not a 32-byte key", path.display()),
                    )
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                getrandom::fill(&mut key).map_err(std::io::Error::other)?;
                write_private(path, &key)?;
                Ok(TokenKey(key))
            }
            Err(e) => Err(e),
        }
    }

    fn mac(&self, signed: &str) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256>>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(signed.as_bytes());
        mac
    }

    /// A token for `claims`.
    pub fn sign(&self, claims: &Claims) -> String {
        let body = B64.encode(serde_json::to_vec(claims).unwrap_or_default());
        let signed = format!("v1.{body}");
        let tag = B64.encode(self.mac(&signed).finalize().into_bytes());
        format!("{signed}.{tag}")
    }

    /// The claims of a token that is genuine, unexpired at `now_s` and for `visit`.
    pub fn verify(&self, token: &str, visit: &str, now_s: i64) -> Result<Claims, TokenError> {
        let (signed, tag) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
        let body = signed.strip_prefix("v1.").ok_or(TokenError::Malformed)?;
        let tag = B64.decode(tag).map_err(|_| TokenError::Malformed)?;
        // Constant-time comparison.
        self.mac(signed)
            .verify_slice(&tag)
            .map_err(|_| TokenError::BadSignature)?;
        let claims: Claims = B64
            .decode(body)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(TokenError::Malformed)?;
        if claims.v != visit {
            return Err(TokenError::OtherVisit);
        }
        if now_s >= claims.exp {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }

    /// What an instance passing a participant's signalling on to the visit's host says of the
    /// participant's address (`x-vigil-relayed-for`): `<address> <unix s> <tag>`, signed with
    /// this key, which every instance shares, so the host records the participant's address
    /// rather than the relaying instance's.
    pub fn sign_relayed(&self, visit: &str, remote: &str, at_s: i64) -> String {
        let tag = self
            .mac(&relayed(visit, remote, at_s))
            .finalize()
            .into_bytes();
        format!("{remote} {at_s} {}", B64.encode(tag))
    }

    /// The address in a genuine [`TokenKey::sign_relayed`] for `visit` made within
    /// [`RELAYED_WITHIN_S`] of `now_s`.
    pub fn relayed_for(&self, header: &str, visit: &str, now_s: i64) -> Option<std::net::IpAddr> {
        let mut parts = header.split(' ');
        let (remote, at, tag) = (parts.next()?, parts.next()?, parts.next()?);
        let at_s: i64 = at.parse().ok()?;
        if parts.next().is_some() || (now_s - at_s).abs() > RELAYED_WITHIN_S {
            return None;
        }
        let tag = B64.decode(tag).ok()?;
        self.mac(&relayed(visit, remote, at_s))
            .verify_slice(&tag)
            .ok()?;
        remote.parse().ok()
    }
}

/// How old (or how far ahead, clocks differing) a relayed address's signature may be.
pub const RELAYED_WITHIN_S: i64 = 60;

/// What a relayed address's tag signs: apart from a link token's `v1.` text by its first line.
fn relayed(visit: &str, remote: &str, at_s: i64) -> String {
    format!("relayed-for\n{visit}\n{remote}\n{at_s}")
}

#[cfg(unix)]
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relayed_address_is_taken_only_when_genuine_recent_and_for_the_visit() {
        let key = TokenKey::from_bytes([7; 32]);
        let h = key.sign_relayed("vis_a", "203.0.113.9", 1_000);
        assert_eq!(
            key.relayed_for(&h, "vis_a", 1_030),
            Some("203.0.113.9".parse().unwrap())
        );
        assert_eq!(key.relayed_for(&h, "vis_b", 1_030), None, "another visit");
        assert_eq!(key.relayed_for(&h, "vis_a", 1_061), None, "too old");
        let forged = h.replacen("203.0.113.9", "198.51.100.1", 1);
        assert_eq!(key.relayed_for(&forged, "vis_a", 1_000), None, "altered");
        let other = TokenKey::from_bytes([8; 32]);
        assert_eq!(other.relayed_for(&h, "vis_a", 1_000), None, "another key");
        assert_eq!(key.relayed_for("", "vis_a", 1_000), None);
        assert_eq!(key.relayed_for("a b c d", "vis_a", 1_000), None);
    }

    fn key(b: u8) -> TokenKey {
        TokenKey::from_bytes([b; 32])
    }

    fn claims(visit: &str, r: JoinRole, exp: i64) -> Claims {
        Claims {
            v: visit.into(),
            r,
            exp,
        }
    }

    #[test]
    fn a_token_opens_its_own_visit_until_it_expires() {
        let k = key(7);
        let t = k.sign(&claims("vis_a", JoinRole::Patient, 1000));
        assert_eq!(
            k.verify(&t, "vis_a", 999),
            Ok(claims("vis_a", JoinRole::Patient, 1000))
        );
        assert_eq!(k.verify(&t, "vis_a", 1000), Err(TokenError::Expired));
        assert_eq!(k.verify(&t, "vis_b", 999), Err(TokenError::OtherVisit));
    }

    #[test]
    fn tampered_forged_and_garbled_tokens_are_refused() {
        let k = key(7);
        let t = k.sign(&claims("vis_a", JoinRole::Patient, 1000));
        // Another key's signature.
        let forged = key(8).sign(&claims("vis_a", JoinRole::Clinician, 1000));
        assert_eq!(k.verify(&forged, "vis_a", 0), Err(TokenError::BadSignature));
        // Claims swapped for a clinician's, the patient's signature kept.
        let body =
            B64.encode(serde_json::to_vec(&claims("vis_a", JoinRole::Clinician, 1000)).unwrap());
        let sig = t.rsplit_once('.').unwrap().1;
        assert_eq!(
            k.verify(&format!("v1.{body}.{sig}"), "vis_a", 0),
            Err(TokenError::BadSignature)
        );
        // Every single-character change is refused.
        for i in 0..t.len() {
            let mut b = t.clone().into_bytes();
            b[i] = if b[i] == b'A' { b'B' } else { b'A' };
            let changed = String::from_utf8(b).unwrap();
            if changed != t {
                assert!(k.verify(&changed, "vis_a", 0).is_err(), "change at {i}");
            }
        }
        for bad in ["", "v1", "v1..", "v2.e30.AAAA", "not a token"] {
            assert!(k.verify(bad, "vis_a", 0).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_key_is_created_once_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("visit-signing.key");
        let a = TokenKey::load_or_create(&path).unwrap();
        let b = TokenKey::load_or_create(&path).unwrap();
        assert_eq!(a.0, b.0, "the same key after a restart");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, b"short").unwrap();
        assert!(TokenKey::load_or_create(&path).is_err());
    }
}
