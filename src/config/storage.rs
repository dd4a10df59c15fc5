//! `[store]` and `[database]`: how the embedded store keeps readings (retention, group commit,
//! its queue) and where the registry lives (SQLite files in `data_dir`, or PostgreSQL).
//!
//! The database URL holds a password: `DatabaseConfig`'s `Debug` shows only where it points,
//! and nothing here may show the rest.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Observations and dead letters older than this are deleted; 0 keeps them for ever.
    pub retention_days: u32,
    /// Most readings committed in one transaction (group commit).
    pub batch_max: usize,
    /// Readings waiting for the writer; when full, devices see slower acknowledgements.
    pub queue_capacity: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            retention_days: 0,
            batch_max: 4096,
            queue_capacity: 16_384,
        }
    }
}

/// The registry on PostgreSQL (`[database]`); several Vigil instances given the same `url` share
/// one registry.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// A libpq-style URL, `postgres://user:password@host:port/database`, with `sslmode` as in
    /// libpq (see `docs/store.md` for what each mode does here).
    pub url: String,
    /// A PEM file of the CA that signed the database's certificate; absent: the system's roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for DatabaseConfig {
    // The URL holds the database's password: debug output names only where it points.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = match self.url.split_once("://") {
            Some((scheme, rest)) => match rest.rsplit_once('@') {
                Some((_, host)) => format!("{scheme}://…@{host}"),
                None => format!("{scheme}://{rest}"),
            },
            None => "(not a URL)".into(),
        };
        f.debug_struct("DatabaseConfig")
            .field("url", &shown)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}
