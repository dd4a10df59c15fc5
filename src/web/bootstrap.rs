//! The bootstrap token: the operator's secret (`VIGIL_BOOTSTRAP_TOKEN`) that creates the first
//! admin account. Only its SHA-256 is kept; it is checked at start-up and compared in constant
//! time.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The bootstrap token, kept only as its SHA-256 so it is compared in constant time and never
/// printed.
pub struct BootstrapToken([u8; 32]);

/// The shortest bootstrap token accepted. The operator chooses it, so it may be guessable; the
/// failure throttle slows guessing from one address, and the length keeps many addresses from
/// making up for it.
pub(crate) const MIN_BOOTSTRAP_CHARS: usize = 16;

/// Why `VIGIL_BOOTSTRAP_TOKEN` was refused at start.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error(
        "VIGIL_BOOTSTRAP_TOKEN must be at least {MIN_BOOTSTRAP_CHARS} characters (it has {0}); make one with `openssl rand -hex 24`"
    )]
    TooShort(usize),
    #[error(
        "VIGIL_BOOTSTRAP_TOKEN is still a placeholder (it contains CHANGE-ME); make one with `openssl rand -hex 24`"
    )]
    Placeholder,
}

impl BootstrapToken {
    /// `Ok(None)` for an empty secret (no bootstrap token: an empty one must never let anyone
    /// in); refused when short or still the documented placeholder.
    pub fn new(secret: &str) -> Result<Option<BootstrapToken>, BootstrapError> {
        if secret.is_empty() {
            return Ok(None);
        }
        let chars = secret.chars().count();
        if chars < MIN_BOOTSTRAP_CHARS {
            return Err(BootstrapError::TooShort(chars));
        }
        if secret.to_ascii_lowercase().contains("change-me") {
            return Err(BootstrapError::Placeholder);
        }
        Ok(Some(BootstrapToken(
            Sha256::digest(secret.as_bytes()).into(),
        )))
    }

    /// Whether a presented token is this one, compared in constant time.
    pub(super) fn matches(&self, presented: &str) -> bool {
        let h: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        h.ct_eq(&self.0).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bootstrap_token_must_be_long_and_not_the_placeholder() {
        assert!(BootstrapToken::new("").unwrap().is_none(), "unset");
        for short in ["change-me", "x", "fifteen-chars-x"] {
            assert!(
                matches!(BootstrapToken::new(short), Err(BootstrapError::TooShort(_))),
                "{short}"
            );
        }
        assert!(matches!(
            BootstrapToken::new("CHANGE-ME-bootstrap-token"),
            Err(BootstrapError::Placeholder)
        ));
        let t = BootstrapToken::new("sixteen-chars-ok").unwrap().unwrap();
        assert!(t.matches("sixteen-chars-ok") && !t.matches("sixteen-chars-o"));
    }
}
