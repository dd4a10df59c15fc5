//! PostgreSQL, shared by the registry and the readings' store when `[database] url` is set:
//! connecting ([`connect`]: the URL, TLS through rustls, one pool per instance), migrations
//! ([`migrate`]), notifications between instances ([`listen`]), and the error all report.

mod connect;
pub mod listen;
mod migrate;

pub use connect::{connect, tls_mode};
pub use migrate::migrate;

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
