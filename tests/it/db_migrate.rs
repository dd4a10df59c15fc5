//! `vigil db migrate`: the embedded registry copied into an empty PostgreSQL database, in one
//! transaction, refusing a target that is not empty or cannot hold every column, with the
//! audit chain verified on the target.

use vigil::registry::Scope;
use vigil::registry::access::{NewTeam, NewUser, Role};
use vigil::registry::audit::NewAuditLine;
use vigil::registry::postgres::PgDb;
use vigil::registry::sqlite::SqliteDb;
use vigil::registry::storage::{AccessStore as _, AuditStore as _, TokenStore as _, verify_chain};
use vigil::registry::tokens::{LiveBy, NewApiToken, secret_hash};

use crate::postgres::Postgres;

fn audit_line(n: i64, action: &str) -> NewAuditLine {
    NewAuditLine {
        time_ms: 1_000 + n,
        actor: "admin".into(),
        action: action.into(),
        patient_id: None,
        target: format!("thing/{n}"),
        remote: "203.0.113.9".into(),
    }
}

/// An embedded registry with a team, two users, an API token and 1,200 audit lines (one each
/// for those four changes).
async fn clinic(dir: &std::path::Path) -> SqliteDb {
    let db = SqliteDb::open(&dir.join("registry.db")).unwrap();
    db.create_team(
        NewTeam {
            id: "north".into(),
            name: "North ward".into(),
            created_ms: 1_000,
        },
        Some(audit_line(0, "team.create")),
    )
    .await
    .unwrap();
    for (name, role, teams) in [
        ("nina", Role::Clinician, vec!["north".to_owned()]),
        ("adam", Role::Admin, vec![]),
    ] {
        db.create_user(
            NewUser {
                name: name.into(),
                password_hash: format!("$argon2id$hash-of-{name}"),
                role,
                teams,
                created_ms: 1_000,
            },
            Some(audit_line(1, "user.create")),
        )
        .await
        .unwrap();
    }
    db.create_token(
        NewApiToken {
            id: "tok-1".into(),
            hash: secret_hash("vgl_secret-of-tok-1"),
            user: "nina".into(),
            label: "the ward's script".into(),
            scope: Scope::Read,
            created_ms: 1_000,
            expires_ms: i64::MAX,
        },
        audit_line(2, "token.create"),
    )
    .await
    .unwrap();
    for n in 4..1_200 {
        db.append_audit(audit_line(n, "patient.read"))
            .await
            .unwrap();
    }
    db
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clinic_moves_whole_and_its_audit_chain_verifies_on_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let source = clinic(dir.path()).await;
    let source_lines = verify_chain(&source).await.unwrap();
    assert_eq!(source_lines, 1_200);
    let pg = Postgres::start().await;
    let url = pg.database("clinic").await;

    let moved = vigil::db_migrate::migrate(dir.path(), &url, None)
        .await
        .unwrap();
    assert_eq!(moved.audit_lines, 1_200);
    let rows = |t: &str| moved.copied.iter().find(|c| c.table == t).map(|c| c.rows);
    assert_eq!(rows("audit"), Some(1_200));
    assert_eq!(rows("users"), Some(2));
    assert_eq!(rows("teams"), Some(2), "the default team and north");

    let target = PgDb::open(&url, None).await.unwrap();
    assert_eq!(verify_chain(&target).await.unwrap(), 1_200);
    let users = target.users().await.unwrap();
    assert_eq!(
        users
            .iter()
            .map(|u| (u.name.as_str(), u.role, u.teams.clone()))
            .collect::<Vec<_>>(),
        [
            ("adam", Role::Admin, vec![]),
            ("nina", Role::Clinician, vec!["north".to_owned()])
        ]
    );
    let creds = target.credentials("nina".into()).await.unwrap().unwrap();
    assert_eq!(
        creds.password_hash, "$argon2id$hash-of-nina",
        "the hash as stored"
    );
    let live = target
        .live_token(LiveBy::Hash(secret_hash("vgl_secret-of-tok-1")), 2_000)
        .await
        .unwrap();
    assert!(live.is_some(), "the token still works on the target");
    // The next line continues the copied chain: ids and sequences moved past the copy.
    let id = target
        .append_audit(audit_line(1_200, "patient.read"))
        .await
        .unwrap();
    assert_eq!(id, 1_201);
    assert_eq!(verify_chain(&target).await.unwrap(), 1_201);

    // Once more into the same database: refused, and nothing changed.
    let e = vigil::db_migrate::migrate(dir.path(), &url, None)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("not empty"), "{e}");
    assert_eq!(verify_chain(&target).await.unwrap(), 1_201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_column_the_target_cannot_hold_stops_the_move_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    drop(clinic(dir.path()).await);
    let c = rusqlite::Connection::open(dir.path().join("registry.db")).unwrap();
    c.execute_batch("ALTER TABLE users ADD COLUMN nickname TEXT")
        .unwrap();
    drop(c);
    let pg = Postgres::start().await;
    let url = pg.database("clinic").await;
    let e = vigil::db_migrate::migrate(dir.path(), &url, None)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("users.nickname"), "{e}");
    let target = PgDb::open(&url, None).await.unwrap();
    assert_eq!(
        verify_chain(&target).await.unwrap(),
        0,
        "nothing was copied"
    );
    assert!(target.users().await.unwrap().is_empty());
}
