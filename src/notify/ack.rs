//! Acknowledgement links (docs/oncall.md): the link in an alert's notification, which
//! acknowledges the alert with one click once the reader has signed in.
//!
//! A link names one notification and when it expires, and is signed with HMAC-SHA256 under a
//! key every instance shares (the registry's `ack-link-signing` secret, 256 random bits made by
//! the first instance to start). It is single-use: the registry records its use
//! (`Registry::use_ack_link`) with the acknowledgement's audit line, and a second use is
//! refused with who used it and when. It acknowledges nothing by itself: the page it opens
//! asks the reader to sign in, and only a user who may see the patient can use it, so a
//! forwarded or leaked link gives no one access they did not have. Pure: the caller passes the
//! time.
//!
//! Form: `a1.<notification id>.<expiry, Unix s>.<tag>`, the tag being the first 128 bits of
//! the HMAC of `ack-link\n<id>\n<expiry>` in base64url (RFC 2104 §5: at least half the
//! hash's length), so that the link and the alert's words fit one SMS.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, KeyInit as _, Mac as _};
use sha2::Sha256;

use crate::registry::{Registry, RegistryError};

/// The tag's length in bytes.
const TAG: usize = 16;

/// The name of the shared signing secret in the registry.
const SECRET: &str = "ack-link-signing";

/// What a genuine, unexpired link says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckClaims {
    /// The notification it came in (`nt_…`), which names the alert.
    pub notification: String,
    /// When it expires, Unix seconds.
    pub exp_s: i64,
}

/// Why a link was refused, in the words shown to its holder.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    #[error("the link is not a valid acknowledgement link")]
    Malformed,
    #[error("the link's signature does not match; it may have been altered or cut short")]
    BadSignature,
    #[error("the link has expired; acknowledge the alert in Vigil instead")]
    Expired,
}

/// The signing key.
#[derive(Clone)]
pub struct AckKey([u8; 32]);

impl std::fmt::Debug for AckKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AckKey(..)")
    }
}

impl AckKey {
    pub fn from_bytes(bytes: [u8; 32]) -> AckKey {
        AckKey(bytes)
    }

    /// The key every instance on the registry's database shares: the stored secret, or a new
    /// random one stored now when there is none.
    pub async fn shared(registry: &Registry) -> Result<AckKey, RegistryError> {
        let mut fresh = [0u8; 32];
        getrandom::fill(&mut fresh).map_err(|e| RegistryError::Db(e.to_string()))?;
        let stored = registry.shared_secret(SECRET, fresh.to_vec()).await?;
        <[u8; 32]>::try_from(stored.as_slice())
            .map(AckKey)
            .map_err(|_| {
                RegistryError::Db(format!("the stored {SECRET} secret is not a 32-byte key"))
            })
    }

    fn mac(&self, notification: &str, exp_s: i64) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256>>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(format!("ack-link\n{notification}\n{exp_s}").as_bytes());
        mac
    }

    /// The link token for `notification`, valid until `exp_s`.
    pub fn sign(&self, notification: &str, exp_s: i64) -> String {
        let tag = B64.encode(&self.mac(notification, exp_s).finalize().into_bytes()[..TAG]);
        format!("a1.{notification}.{exp_s}.{tag}")
    }

    /// The claims of `token` if it is genuine and unexpired at `now_s`.
    pub fn verify(&self, token: &str, now_s: i64) -> Result<AckClaims, AckError> {
        let mut parts = token.split('.');
        let (Some("a1"), Some(id), Some(exp), Some(tag), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(AckError::Malformed);
        };
        if !is_notification_id(id) {
            return Err(AckError::Malformed);
        }
        let exp_s: i64 = exp.parse().map_err(|_| AckError::Malformed)?;
        let tag = B64.decode(tag).map_err(|_| AckError::Malformed)?;
        if tag.len() != TAG {
            return Err(AckError::Malformed);
        }
        // Constant-time comparison.
        self.mac(id, exp_s)
            .verify_truncated_left(&tag)
            .map_err(|_| AckError::BadSignature)?;
        if now_s >= exp_s {
            return Err(AckError::Expired);
        }
        Ok(AckClaims {
            notification: id.to_owned(),
            exp_s,
        })
    }
}

/// `nt_` and lowercase hex, as `NewNotification::new` makes them.
fn is_notification_id(id: &str) -> bool {
    id.strip_prefix("nt_").is_some_and(|hex| {
        !hex.is_empty()
            && hex.len() <= 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "nt_0123456789abcdef0123456789abcdef";

    fn key(b: u8) -> AckKey {
        AckKey::from_bytes([b; 32])
    }

    #[test]
    fn a_link_verifies_until_it_expires() {
        let t = key(7).sign(ID, 1_000);
        assert_eq!(
            key(7).verify(&t, 999),
            Ok(AckClaims {
                notification: ID.into(),
                exp_s: 1_000
            })
        );
        assert_eq!(key(7).verify(&t, 1_000), Err(AckError::Expired));
    }

    #[test]
    fn an_altered_link_or_another_key_is_refused() {
        let t = key(7).sign(ID, 1_000);
        assert_eq!(key(8).verify(&t, 0), Err(AckError::BadSignature));
        // A later expiry, another notification: the signature no longer matches.
        let later = t.replace(".1000.", ".9999.");
        assert_eq!(key(7).verify(&later, 0), Err(AckError::BadSignature));
        let other = t.replace("nt_0", "nt_1");
        assert_eq!(key(7).verify(&other, 0), Err(AckError::BadSignature));
        // A tag cut short is not a tag.
        let short = &t[..t.len() - 2];
        assert_eq!(key(7).verify(short, 0), Err(AckError::Malformed));
        // One character of the tag changed.
        let mut cut = t.clone();
        let last = cut.pop().unwrap();
        cut.push(if last == 'A' { 'B' } else { 'A' });
        assert!(key(7).verify(&cut, 0).is_err());
    }

    #[test]
    fn malformed_links_say_so() {
        for bad in [
            "",
            "a1",
            "a1.nt_ab.1000",
            "a2.nt_ab.1000.AAAA",
            "a1.xx_ab.1000.AAAA",
            "a1.nt_AB.1000.AAAA",
            "a1.nt_ab.soon.AAAA",
            "a1.nt_ab.1000.!!!",
            "a1.nt_ab.1000.AAAA.extra",
            "a1.nt_.1000.AAAA",
        ] {
            assert_eq!(key(7).verify(bad, 0), Err(AckError::Malformed), "{bad:?}");
        }
    }
}
