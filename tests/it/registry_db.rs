//! Reaching under the registry's storage seam, on whichever backend a test's registry is: the
//! SQLite file in a data directory, or a PostgreSQL database. Tests use it as an intruder with
//! file or database access would, or to make the database fail as a full disk or a broken
//! constraint would.

use std::path::PathBuf;

use crate::support::run;

/// A registry database to reach directly.
#[derive(Debug, Clone)]
pub(crate) enum RegistryDb {
    /// `registry.db` at this path.
    Sqlite(PathBuf),
    /// The database at this URL.
    Postgres(String),
}

impl RegistryDb {
    /// The registry database of a gateway configured with `cfg`.
    pub(crate) fn of(cfg: &vigil::config::Config) -> RegistryDb {
        match &cfg.database {
            Some(d) => RegistryDb::Postgres(d.url.clone()),
            None => RegistryDb::Sqlite(cfg.data_dir.join("registry.db")),
        }
    }

    /// Runs `sql` (statements both dialects read, such as plain UPDATE and DELETE).
    pub(crate) async fn execute(&self, sql: &str) {
        match self {
            RegistryDb::Sqlite(path) => {
                let c = rusqlite::Connection::open(path).unwrap();
                c.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
                c.execute_batch(sql).unwrap();
            }
            RegistryDb::Postgres(url) => {
                let out = run("psql", &[url, "-v", "ON_ERROR_STOP=1", "-c", sql], None).await;
                assert!(out.ok, "psql {sql:?}: {}", out.stderr);
            }
        }
    }

    /// The first column of `sql`'s rows, as text.
    pub(crate) async fn rows(&self, sql: &str) -> Vec<String> {
        match self {
            RegistryDb::Sqlite(path) => {
                let c = rusqlite::Connection::open(path).unwrap();
                let mut stmt = c.prepare(sql).unwrap();
                stmt.query_map([], |r| {
                    Ok(match r.get_ref(0)? {
                        rusqlite::types::ValueRef::Null => String::new(),
                        rusqlite::types::ValueRef::Integer(i) => i.to_string(),
                        rusqlite::types::ValueRef::Real(f) => f.to_string(),
                        v => String::from_utf8_lossy(v.as_bytes().unwrap_or_default()).into_owned(),
                    })
                })
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
            }
            RegistryDb::Postgres(url) => {
                let out = run("psql", &[url, "-v", "ON_ERROR_STOP=1", "-qAtc", sql], None).await;
                assert!(out.ok, "psql {sql:?}: {}", out.stderr);
                out.stdout.lines().map(str::to_owned).collect()
            }
        }
    }

    /// Makes the database refuse every insert into `table` (until [`Self::accept_inserts`]).
    pub(crate) async fn refuse_inserts(&self, table: &str) {
        match self {
            RegistryDb::Sqlite(_) => {
                self.execute(&format!(
                    "CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table}
                     BEGIN SELECT RAISE(ABORT, 'injected: refused'); END;"
                ))
                .await
            }
            RegistryDb::Postgres(_) => {
                self.execute(&format!(
                    "CREATE OR REPLACE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql
                       AS $$ BEGIN RAISE EXCEPTION 'injected: refused'; END $$;
                     CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table}
                       FOR EACH ROW EXECUTE FUNCTION refuse();"
                ))
                .await
            }
        }
    }

    pub(crate) async fn accept_inserts(&self, table: &str) {
        let on = match self {
            RegistryDb::Sqlite(_) => String::new(),
            RegistryDb::Postgres(_) => format!(" ON {table}"),
        };
        self.execute(&format!("DROP TRIGGER refuse_{table}{on}"))
            .await;
    }
}
