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
mod contacts;
mod cover;
mod devices;
mod import;
mod lease;
mod notifications;
mod outbox;
mod patients;
mod programmes;
mod record;
pub mod schema;
mod secrets;
mod throttles;
mod tokens;
mod visits;

pub use crate::pg::{PgError, connect, migrate, tls_mode};

use crate::registry::error::RegistryError;

/// The table that holds the registry schema's version.
const REGISTRY_SCHEMA: &str = "vigil_schema";

/// The registry's PostgreSQL database: a pool of connections to it.
#[derive(Clone)]
pub struct PgDb {
    pool: deadpool_postgres::Pool,
}

impl PgDb {
    /// Connects to `url` (see [`connect`]) and brings the schema up to date.
    pub async fn open(url: &str, ca_file: Option<&std::path::Path>) -> Result<PgDb, PgError> {
        PgDb::on(connect(url, ca_file).await?).await
    }

    /// The registry on a pool already connected (shared with the readings' store), its
    /// schema brought up to date.
    pub async fn on(pool: deadpool_postgres::Pool) -> Result<PgDb, PgError> {
        migrate(&pool, REGISTRY_SCHEMA, schema::STEPS).await?;
        Ok(PgDb { pool })
    }

    async fn conn(&self) -> Result<deadpool_postgres::Object, PgError> {
        Ok(self.pool.get().await?)
    }
}

#[async_trait::async_trait]
impl crate::registry::storage::HealthStore for PgDb {
    async fn ping(&self) -> Result<(), RegistryError> {
        self.conn()
            .await?
            .simple_query("SELECT 1")
            .await
            .map_err(PgError::from)?;
        Ok(())
    }
}

impl From<PgError> for RegistryError {
    fn from(e: PgError) -> RegistryError {
        RegistryError::Db(e.to_string())
    }
}
