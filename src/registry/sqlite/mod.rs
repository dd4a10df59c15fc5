//! The registry on SQLite (`registry.db` in the data directory): the embedded default.
//!
//! One connection behind a mutex, used on Tokio's blocking pool: the registry's writes are few
//! and small, and SQLite takes one writer at a time anyway. Transactions that write begin
//! `IMMEDIATE`, so a write never fails half-way on a lock another connection took first.
//! The device status writer's batches take the same connection, one transaction each.

mod access;
mod audit;
mod contacts;
mod cover;
mod devices;
pub mod export;
mod lease;
mod notifications;
mod outbox;
mod patients;
mod programmes;
mod record;
pub(crate) mod schema;
mod secrets;
mod throttles;
mod tokens;
mod usernames;
mod visits;

use std::sync::{Arc, Mutex};

use rusqlite::Connection;

use super::error::RegistryError;

/// SQLite's error as the registry says it: a full disk as such, anything else as a database
/// error with SQLite's words.
impl From<rusqlite::Error> for RegistryError {
    fn from(e: rusqlite::Error) -> Self {
        if crate::store::is_disk_full(&e) {
            RegistryError::Full
        } else {
            RegistryError::Db(e.to_string())
        }
    }
}

/// The registry's SQLite database.
#[derive(Clone)]
pub struct SqliteDb {
    conn: Arc<Mutex<Connection>>,
}

impl SqliteDb {
    /// Over an open connection (the schema already applied).
    pub fn new(conn: Connection) -> SqliteDb {
        SqliteDb {
            conn: Arc::new(Mutex::new(conn)),
        }
    }

    /// Opens `path` (creating it), applying the registry's schema, and warns of accounts that
    /// differ only in case (kept from before names ignored case).
    pub fn open(path: &std::path::Path) -> Result<SqliteDb, RegistryError> {
        let conn = crate::store::open_db(path, schema::SCHEMA)?;
        usernames::warn_of_case_twins(&conn)?;
        Ok(SqliteDb::new(conn))
    }

    /// Runs `f` with the connection on a blocking thread.
    pub(crate) async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, RegistryError> + Send + 'static,
    ) -> Result<T, RegistryError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut c = conn
                .lock()
                .map_err(|_| RegistryError::Db("registry lock poisoned".into()))?;
            f(&mut c)
        })
        .await
        .map_err(|e| RegistryError::Db(e.to_string()))?
    }
}

/// Tests: runs `f` on a connection of its own to the registry in `dir`, beside the registry's
/// (as a look under the seam, or an intruder with the file, would).
#[cfg(test)]
pub(crate) async fn with_file<T>(
    dir: &std::path::Path,
    f: impl FnOnce(&mut Connection) -> Result<T, RegistryError>,
) -> Result<T, RegistryError> {
    let mut c = Connection::open(dir.join("registry.db"))?;
    c.busy_timeout(std::time::Duration::from_secs(5))?;
    f(&mut c)
}

#[async_trait::async_trait]
impl crate::registry::storage::HealthStore for SqliteDb {
    async fn ping(&self) -> Result<(), RegistryError> {
        Ok(())
    }
}
