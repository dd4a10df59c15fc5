//! The registry's error: what failed, in words the API can pass on.

use crate::store::StoreError;

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{0} already exists")]
    Exists(String),
    #[error("{0} not found")]
    NotFound(String),
    /// The change contradicts the state it would change (a discharged patient discharged
    /// again); the sentence says why.
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error("registry database error: {0}")]
    Db(String),
    /// SQLite found no room on the data directory's disk; the change was rolled back whole.
    #[error("the data directory's disk is full")]
    Full,
    /// A write made under a lease ([`super::lease::Fence`]) after the lease moved on or
    /// lapsed: nothing was written.
    #[error("lease {0} is no longer held at this epoch; nothing written")]
    Fenced(String),
    /// Too many password checks are running and waiting; the caller may try again shortly.
    #[error("too many password checks are under way; try again shortly")]
    Busy,
}

impl From<StoreError> for RegistryError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Full => RegistryError::Full,
            e => RegistryError::Db(e.to_string()),
        }
    }
}
