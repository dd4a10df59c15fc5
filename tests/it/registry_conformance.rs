//! One conformance suite for the registry's storage seam (`vigil::registry::storage`), run on
//! both backends: SQLite (the embedded default) and a real PostgreSQL started for the test
//! (`scripts/pg-temp`). Each test states a behaviour of the seam and checks it on each backend in
//! turn, so the two cannot drift apart.
//!
//! So far the seam covers the audit trail.

use std::sync::Arc;

use vigil::registry::audit::{AuditQuery, NewAuditLine};
use vigil::registry::postgres::PgDb;
use vigil::registry::sqlite::SqliteDb;
use vigil::registry::storage::{Storage, verify_chain};

use crate::postgres::Postgres;
use crate::support::run;

/// A backend under test, with what keeps it alive and a way to reach under the seam.
struct Backend {
    name: &'static str,
    db: Arc<dyn Storage>,
    raw: Raw,
}

enum Raw {
    Sqlite(tempfile::TempDir),
    Postgres { _server: Postgres, url: String },
}

impl Backend {
    /// Runs `sql` directly on the database, as an intruder with file or database access would.
    async fn tamper(&self, sql: &str) {
        match &self.raw {
            Raw::Sqlite(dir) => {
                let c = rusqlite::Connection::open(dir.path().join("registry.db")).unwrap();
                c.execute_batch(sql).unwrap();
            }
            Raw::Postgres { url, .. } => {
                let out = run("psql", &[url, "-v", "ON_ERROR_STOP=1", "-c", sql], None).await;
                assert!(out.ok, "{}", out.stderr);
            }
        }
    }
}

/// Both backends, each on an empty database.
async fn backends() -> Vec<Backend> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteDb::open(&dir.path().join("registry.db")).unwrap();
    let pg = Postgres::start().await;
    let url = pg.database("vigil").await;
    let postgres = PgDb::open(&url, None).await.unwrap();
    vec![
        Backend {
            name: "sqlite",
            db: Arc::new(sqlite),
            raw: Raw::Sqlite(dir),
        },
        Backend {
            name: "postgres",
            db: Arc::new(postgres),
            raw: Raw::Postgres { _server: pg, url },
        },
    ]
}

fn line(time_ms: i64, actor: &str, action: &str, patient: Option<&str>) -> NewAuditLine {
    NewAuditLine {
        time_ms,
        actor: actor.into(),
        action: action.into(),
        patient_id: patient.map(str::to_owned),
        target: format!("patient/{}", patient.unwrap_or("-")),
        remote: "203.0.113.9".into(),
    }
}

fn all() -> AuditQuery {
    AuditQuery {
        from_ms: i64::MIN,
        to_ms: i64::MAX,
        limit: 10_000,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_trail_reads_back_as_written_filtered_and_paged() {
    for b in backends().await {
        let db = &b.db;
        let token_actor = vigil::registry::token_actor("nina", "tok_1");
        let lines = [
            line(1_000, "nina", "record.read", Some("p-1")),
            line(2_000, &token_actor, "observations.read", Some("p-1")),
            line(3_000, "omar", "record.read", Some("p-2")),
            line(4_000, "ninaX", "patients.list", None),
            line(5_000, "nina", "alert.ack", Some("p-2")),
        ];
        let mut ids = Vec::new();
        for l in &lines {
            ids.push(db.append_audit(l.clone()).await.unwrap());
        }
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "{}: ids grow: {ids:?}",
            b.name
        );

        let got = db.audit_records(all()).await.unwrap();
        let back: Vec<&NewAuditLine> = got.iter().map(|s| &s.line).collect();
        assert_eq!(back, lines.iter().collect::<Vec<_>>(), "{}", b.name);

        let actions = |q: AuditQuery| async move {
            db.audit_records(q)
                .await
                .unwrap()
                .into_iter()
                .map(|s| s.line.action)
                .collect::<Vec<_>>()
        };
        // A user's lines include their tokens' but not another user whose name starts alike.
        let q = AuditQuery {
            actor: Some("nina".into()),
            ..all()
        };
        assert_eq!(
            actions(q).await,
            ["record.read", "observations.read", "alert.ack"],
            "{}",
            b.name
        );
        let q = AuditQuery {
            patient_id: Some("p-2".into()),
            ..all()
        };
        assert_eq!(actions(q).await, ["record.read", "alert.ack"], "{}", b.name);
        let q = AuditQuery {
            from_ms: 2_000,
            to_ms: 4_000,
            ..all()
        };
        assert_eq!(
            actions(q).await,
            ["observations.read", "record.read", "patients.list"],
            "{}",
            b.name
        );
        let q = AuditQuery {
            limit: 2,
            newest_first: true,
            ..all()
        };
        assert_eq!(
            actions(q).await,
            ["alert.ack", "patients.list"],
            "{}",
            b.name
        );

        // Pages in chain order, after an id, within a time window.
        let page = db.audit_page(ids[1], i64::MIN, i64::MAX, 2).await.unwrap();
        assert_eq!(
            page.iter().map(|s| s.id).collect::<Vec<_>>(),
            ids[2..4],
            "{}",
            b.name
        );
        let page = db.audit_page(0, 2_500, i64::MAX, 10).await.unwrap();
        assert_eq!(page.len(), 3, "{}", b.name);
        assert_eq!(verify_chain(&**db).await.unwrap(), 5, "{}", b.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_or_removed_audit_line_breaks_the_chain_where_it_was() {
    for b in backends().await {
        let mut ids = Vec::new();
        for i in 0..4 {
            let l = line(i * 1000, "nina", "record.read", Some("p-1"));
            ids.push(b.db.append_audit(l).await.unwrap());
        }
        assert_eq!(verify_chain(&*b.db).await.unwrap(), 4, "{}", b.name);
        b.tamper(&format!(
            "UPDATE audit SET actor = 'mallory' WHERE id = {}",
            ids[1]
        ))
        .await;
        let e = verify_chain(&*b.db).await.unwrap_err().to_string();
        assert!(
            e.contains(&format!("audit line {} does not match", ids[1])),
            "{}: {e}",
            b.name
        );
        b.tamper(&format!(
            "UPDATE audit SET actor = 'nina' WHERE id = {}; DELETE FROM audit WHERE id = {}",
            ids[1], ids[2]
        ))
        .await;
        let e = verify_chain(&*b.db).await.unwrap_err().to_string();
        assert!(
            e.contains(&format!("audit line {} does not match", ids[3])),
            "{}: {e}",
            b.name
        );
    }
}

/// Many tasks appending at once (on PostgreSQL each on its own connection, as several Vigil
/// instances would): one chain, every line in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_leave_one_unbroken_chain() {
    const WRITERS: usize = 8;
    const EACH: usize = 500;
    for b in backends().await {
        let started = std::time::Instant::now();
        let tasks: Vec<_> = (0..WRITERS)
            .map(|w| {
                let db = b.db.clone();
                tokio::spawn(async move {
                    for i in 0..EACH {
                        let l = line(i as i64, &format!("writer-{w}"), "record.read", Some("p-1"));
                        db.append_audit(l).await.unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let took = started.elapsed();
        assert_eq!(
            verify_chain(&*b.db).await.unwrap(),
            WRITERS * EACH,
            "{}",
            b.name
        );
        println!(
            "{}: {} audited appends from {WRITERS} tasks in {took:?}",
            b.name,
            WRITERS * EACH
        );
    }
}
