//! A PostgreSQL server of the test's own (`scripts/pg-temp`: Debian's PostgreSQL, a new cluster
//! in a temporary folder, on a free port of 127.0.0.1, password authentication over TCP), for
//! the registry's second backend. Stopped when dropped.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use crate::support::run;

/// A running throw-away PostgreSQL server.
pub(crate) struct Postgres {
    /// Holds the cluster's folder; removed after the server stops.
    _dir: tempfile::TempDir,
    cluster: PathBuf,
    /// `postgres://vigil:<password>@127.0.0.1:<port>/postgres`: the superuser, the default
    /// database.
    pub(crate) url: String,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/pg-temp")
}

impl Postgres {
    /// Makes and starts a cluster (about a second).
    pub(crate) async fn start() -> Postgres {
        let dir = tempfile::tempdir().unwrap();
        // Run as root, the server runs as `postgres`, which must be able to enter the folder
        // that holds its cluster (the cluster's own folder stays private to it).
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let cluster = dir.path().join("pg");
        let s = script();
        let out = run(
            s.to_str().unwrap(),
            &["start", cluster.to_str().unwrap()],
            None,
        )
        .await;
        assert!(
            out.ok,
            "scripts/pg-temp could not start PostgreSQL: {}",
            out.stderr
        );
        Postgres {
            _dir: dir,
            cluster,
            url: out.stdout.trim().to_owned(),
        }
    }

    /// A new, empty database `name`; its URL.
    pub(crate) async fn database(&self, name: &str) -> String {
        self.sql(&format!("CREATE DATABASE \"{name}\"")).await;
        let base = self.url.rsplit_once('/').unwrap().0;
        format!("{base}/{name}")
    }

    /// Stops the server at once (an outage: connections drop, nothing is flushed first).
    pub(crate) async fn stop_server(&self) {
        let out = run(
            script().to_str().unwrap(),
            &["stop", self.cluster.to_str().unwrap()],
            None,
        )
        .await;
        assert!(out.ok, "scripts/pg-temp stop: {}", out.stderr);
    }

    /// Starts the stopped server again, on the same port.
    pub(crate) async fn resume(&self) {
        let out = run(
            script().to_str().unwrap(),
            &["resume", self.cluster.to_str().unwrap()],
            None,
        )
        .await;
        assert!(out.ok, "scripts/pg-temp resume: {}", out.stderr);
    }

    /// Runs `sql` with `psql` as the superuser; its output (unaligned, tuples only).
    pub(crate) async fn sql(&self, sql: &str) -> String {
        self.sql_at(&self.url, sql).await
    }

    /// Runs `sql` in database `db`.
    pub(crate) async fn sql_in(&self, db: &str, sql: &str) -> String {
        let base = self.url.rsplit_once('/').unwrap().0;
        self.sql_at(&format!("{base}/{db}"), sql).await
    }

    async fn sql_at(&self, url: &str, sql: &str) -> String {
        let out = run("psql", &[url, "-v", "ON_ERROR_STOP=1", "-Atc", sql], None).await;
        assert!(out.ok, "psql {sql:?}: {}", out.stderr);
        out.stdout
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = std::process::Command::new(script())
            .arg("stop")
            .arg(&self.cluster)
            .status();
    }
}

#[tokio::test]
async fn a_throwaway_postgres_takes_its_password_and_gives_each_test_its_own_database() {
    let pg = Postgres::start().await;
    let version = pg.sql("SHOW server_version_num").await;
    assert!(
        version.trim().parse::<u32>().unwrap() >= 150_000,
        "PostgreSQL 15 or newer: {version}"
    );
    let url = pg.database("vigil_test").await;
    let out = run("psql", &[&url, "-Atc", "SELECT current_database()"], None).await;
    assert_eq!(out.stdout.trim(), "vigil_test", "{}", out.stderr);
    // Over TCP the password is checked.
    let wrong = url.replacen("vigil:", "vigil:x", 1);
    let out = run("psql", &[&wrong, "-Atc", "SELECT 1"], None).await;
    assert!(!out.ok, "a wrong password is refused");
    assert!(
        out.stderr.contains("password authentication failed"),
        "{}",
        out.stderr
    );
    // Stopped when dropped: the port no longer answers.
    drop(pg);
    let out = run("psql", &[&url, "-Atc", "SELECT 1"], None).await;
    assert!(!out.ok, "the server is gone after drop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_migrating_at_once_apply_each_step_once() {
    use vigil::pg::{connect, migrate};
    let pg = Postgres::start().await;
    let url = pg.database("vigil").await;
    // Each step appends to a log table: a step applied twice would show twice.
    let steps = [
        "CREATE TABLE step_log (n integer NOT NULL); INSERT INTO step_log VALUES (1);",
        "INSERT INTO step_log VALUES (2); SELECT pg_sleep(0.2);",
        "INSERT INTO step_log VALUES (3);",
    ];
    let (a, b) = (
        connect(&url, None).await.unwrap(),
        connect(&url, None).await.unwrap(),
    );
    let (ra, rb) = tokio::join!(
        migrate(&a, "step_schema", &steps),
        migrate(&b, "step_schema", &steps)
    );
    assert_eq!((ra.unwrap(), rb.unwrap()), (3, 3));
    assert_eq!(
        pg.sql_in(
            "vigil",
            "SELECT string_agg(n::text, ',' ORDER BY n) FROM step_log"
        )
        .await
        .trim(),
        "1,2,3"
    );
    // A build that knows fewer steps than the database has refuses it.
    let e = migrate(&a, "step_schema", &steps[..2])
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("schema version 3, newer than this Vigil's 2"),
        "{e}"
    );
}

#[tokio::test]
async fn a_wrong_password_or_a_refused_tls_stops_the_connection_with_its_reason() {
    use vigil::pg::connect;
    let pg = Postgres::start().await;
    let url = pg.database("vigil").await;
    let wrong = url.replacen("vigil:", "vigil:x", 1);
    let e = connect(&wrong, None).await.unwrap_err().to_string();
    assert!(e.contains("password authentication failed"), "{e}");
    // The test server has no TLS: a URL that requires it gets no connection.
    let e = connect(&format!("{url}?sslmode=require"), None)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.to_lowercase().contains("tls") || e.contains("ssl"), "{e}");
    assert!(
        connect(&format!("{url}?sslmode=prefer"), None)
            .await
            .is_ok()
    );
}
