//! PostgreSQL's failures as the store reports them.

use tokio_postgres::error::SqlState;

use crate::pg::PgError;
use crate::store::types::StoreError;

/// A failed write: a full disk is [`StoreError::Full`] (nothing was stored), the rest say why.
pub(super) fn write_err(e: impl Into<PgError>) -> StoreError {
    match e.into() {
        PgError::Db {
            code: Some(code), ..
        } if code == SqlState::DISK_FULL => StoreError::Full,
        e => StoreError::Write(e.to_string()),
    }
}

pub(super) fn read_err(e: impl Into<PgError>) -> StoreError {
    StoreError::Read(e.into().to_string())
}
