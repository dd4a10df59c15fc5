//! `vigil db migrate --to URL`: moves a clinic's embedded registry (`registry.db`) into an empty
//! PostgreSQL database, while Vigil runs on it or not.
//!
//! The source is read as of one instant (one SQLite read transaction, see
//! [`crate::registry::sqlite::export`]); the target is brought to this Vigil's schema, checked
//! empty and filled in one transaction ([`crate::registry::postgres::PgDb::import`]), so a
//! failure leaves it empty. Everything is copied as stored: patients, devices with their secret
//! hashes, users with their password hashes, teams, sessions, API tokens, care plans, alerts,
//! the timeline, the outbox (undelivered rows are delivered from PostgreSQL), visits and the
//! audit trail, whose hash chain is verified on the target before the move is called done.
//!
//! Then the readings (`store.db`: observations, dead letters, the InfluxDB and FHIR spools) the
//! same way, into the `readings` schema ([`crate::store::move_to_postgres`]), in a second
//! transaction.
//!
//! What is written to the SQLite databases after the snapshots is not moved: stop Vigil (or
//! take it out of service) before the move when nothing may be left behind, then start it
//! with `[database] url` set.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::registry::RegistryError;
use crate::registry::postgres::{PgDb, PgError};
use crate::registry::transfer::{Chunk, Copied};

/// What was moved.
#[derive(Debug)]
pub struct Moved {
    /// Rows per table, in the order they were filled.
    pub copied: Vec<Copied>,
    /// Audit lines whose chain verified on the target.
    pub audit_lines: usize,
    /// Readings' rows per table (none when the data directory has no `store.db`).
    pub readings: Vec<(&'static str, u64)>,
    pub took: Duration,
}

/// Why the move failed; each says what to do. The target is unchanged whenever one is returned
/// (except for the schema, which a later start would apply anyway).
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("{0}")]
    Target(#[from] PgError),
    #[error("{0}")]
    Copy(#[from] RegistryError),
    #[error(
        "the copy's audit trail does not verify on the target ({0}); the target holds the copy: \
         drop and recreate the database before trying again"
    )]
    Verify(String),
    #[error(
        "the registry was moved but the readings were not ({0}); drop and recreate the \
         database before trying again"
    )]
    Readings(String),
}

/// Moves the registry in `data_dir` into the empty database at `url`.
pub async fn migrate(
    data_dir: &Path,
    url: &str,
    ca_file: Option<&Path>,
) -> Result<Moved, MigrateError> {
    let started = Instant::now();
    let source = data_dir.join("registry.db");
    if !source.is_file() {
        return Err(RegistryError::NotFound(format!(
            "{} (give the data directory of the Vigil to move with --data-dir or --config)",
            source.display()
        ))
        .into());
    }
    let pool = crate::pg::connect(url, ca_file).await?;
    let db = PgDb::on(pool.clone()).await?;
    let plan = db.transfer_plan().await?;
    let (send, chunks) = tokio::sync::mpsc::channel::<Chunk>(2);
    let (done, source_done) = tokio::sync::oneshot::channel();
    let reader = tokio::task::spawn_blocking(move || {
        let read = crate::registry::sqlite::export::export(&source, &plan, |chunk| {
            send.blocking_send(chunk).is_ok()
        });
        let _ = done.send(read);
    });
    let copied = db.import(chunks, source_done).await;
    reader
        .await
        .map_err(|e| RegistryError::Db(format!("the reader failed: {e}")))?;
    let copied = copied?;
    let audit_lines = crate::registry::storage::verify_chain(&db)
        .await
        .map_err(|e| MigrateError::Verify(e.to_string()))?;
    let expected = copied
        .iter()
        .find(|c| c.table == "audit")
        .map_or(0, |c| c.rows);
    if audit_lines as u64 != expected {
        return Err(MigrateError::Verify(format!(
            "{audit_lines} lines verified, {expected} copied"
        )));
    }
    let store_db = data_dir.join("store.db");
    let readings = if store_db.is_file() {
        crate::store::move_to_postgres(store_db, pool)
            .await
            .map_err(|e| MigrateError::Readings(e.to_string()))?
    } else {
        Vec::new()
    };
    Ok(Moved {
        copied,
        audit_lines,
        readings,
        took: started.elapsed(),
    })
}
