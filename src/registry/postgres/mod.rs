//! The registry on PostgreSQL, for clinics that run several Vigil instances on one database
//! (chosen by `[database] url`; SQLite stays the embedded default). See "The registry on two
//! databases" in `docs/store.md` for the choices and why.
//!
//! Built so far: connecting (the URL, TLS through rustls, the pool: [`connect`]), the
//! migrations applied under an advisory lock ([`migrate`], [`schema::STEPS`]), the audit
//! trail, video visits (with the timeline entries they write), API tokens, access (users,
//! care teams, sign-in sessions), patients and their devices, and the CRM record (care plans,
//! alerts, notes, the timeline) with its outbox.

mod access;
mod audit;
mod connect;
mod devices;
mod import;
mod lease;
mod migrate;
mod outbox;
mod patients;
mod record;
pub mod schema;
mod tokens;
mod visits;

pub use connect::{connect, tls_mode};
pub use migrate::migrate;

use crate::registry::error::RegistryError;

/// The registry's PostgreSQL database: a pool of connections to it.
#[derive(Clone)]
pub struct PgDb {
    pool: deadpool_postgres::Pool,
}

impl PgDb {
    /// Connects to `url` (see [`connect`]) and brings the schema up to date.
    pub async fn open(url: &str, ca_file: Option<&std::path::Path>) -> Result<PgDb, PgError> {
        let pool = connect(url, ca_file).await?;
        migrate(&pool, schema::STEPS).await?;
        Ok(PgDb { pool })
    }

    async fn conn(&self) -> Result<deadpool_postgres::Object, PgError> {
        Ok(self.pool.get().await?)
    }
}

impl From<PgError> for RegistryError {
    fn from(e: PgError) -> RegistryError {
        RegistryError::Db(e.to_string())
    }
}

/// What can go wrong talking to PostgreSQL.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The database URL cannot be used; the reason says why.
    #[error("database url: {0}")]
    Url(String),
    /// TLS to the database could not be set up (roots, CA file).
    #[error("database tls: {0}")]
    Tls(String),
    #[error("database pool: {0}")]
    Pool(String),
    /// The server refused, or the connection failed: its message, and the SQLSTATE code where
    /// the server gave one (a unique violation, a serialization failure, ...).
    #[error("database: {message}")]
    Db {
        message: String,
        code: Option<tokio_postgres::error::SqlState>,
    },
    /// The database's schema is newer than this build knows.
    #[error(
        "the database is at schema version {found}, newer than this Vigil's {known}: run a newer Vigil"
    )]
    TooNew { found: i32, known: i32 },
}

impl From<tokio_postgres::Error> for PgError {
    /// tokio-postgres says only "db error" for what the server said: take the server's words,
    /// or the chain of causes of a connection failure.
    fn from(e: tokio_postgres::Error) -> PgError {
        if let Some(db) = e.as_db_error() {
            return PgError::Db {
                message: db.message().to_owned(),
                code: Some(db.code().clone()),
            };
        }
        let mut message = e.to_string();
        let mut cause = std::error::Error::source(&e);
        while let Some(c) = cause {
            message.push_str(": ");
            message.push_str(&c.to_string());
            cause = c.source();
        }
        PgError::Db {
            message,
            code: None,
        }
    }
}

impl From<deadpool_postgres::PoolError> for PgError {
    fn from(e: deadpool_postgres::PoolError) -> PgError {
        match e {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            other => PgError::Pool(other.to_string()),
        }
    }
}
