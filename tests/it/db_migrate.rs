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

/// The acceptance: a clinic that `vigil-sim run` has used (patients, devices, alerts, a
/// visit, over a thousand audit lines) moved with `vigil db migrate`, then served from
/// PostgreSQL: the same patients and alerts, the devices connect with their old secrets, the
/// audit chain verifies and goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulated_clinic_moves_to_postgres_and_goes_on_as_before() {
    use crate::support::{Gateway, TOKEN, eventually, publish_readings, run};
    use reqwest::StatusCode;
    use serde_json::{Value, json};
    use std::time::Duration;

    let gw = Gateway::start_with(|cfg| cfg.database = None).await;
    let sim = crate::dashboard::vigil_sim();
    let creds = gw.dir.path().join("sim-credentials.json");
    let base = format!("http://{}", gw.http);
    let out = run(
        sim.to_str().unwrap(),
        &[
            "provision",
            "--url",
            &base,
            "--token",
            TOKEN,
            "--patients",
            "3",
            "--prefix",
            "mig",
            "--out",
            creds.to_str().unwrap(),
        ],
        None,
    )
    .await;
    assert!(out.ok, "vigil-sim provision: {}", out.stderr);
    let mqtt = format!("mqtt://{}", gw.mqtt);
    let out = run(
        sim.to_str().unwrap(),
        &[
            "run",
            "--credentials",
            creds.to_str().unwrap(),
            "--mqtt",
            &mqtt,
            "--duration",
            "12s",
            "--speed",
            "3600",
            "--scenario",
            "hypertensive-crisis",
            "--token",
            TOKEN,
        ],
        None,
    )
    .await;
    assert!(out.ok, "vigil-sim run: {}", out.stderr);
    let api = &gw.client;
    let alerts_before = eventually(Duration::from_secs(30), "alerts from the run", || async {
        let (_, v) = api.get("/api/v1/alerts?limit=1000").await;
        let ids: Vec<String> = v["alerts"]
            .as_array()?
            .iter()
            .map(|a| a["id"].as_str().unwrap().to_owned())
            .collect();
        (!ids.is_empty()).then_some(ids)
    })
    .await;
    let (s, visit) = api
        .post("/api/v1/visits", json!({"patient_id": "mig-0001"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{visit}");
    let visit_id = visit["id"].as_str().unwrap().to_owned();
    // Reading the record is audited: a clinic's day of lookups.
    for _ in 0..1_000 {
        let (s, _) = api.get("/api/v1/patients/mig-0002").await;
        assert_eq!(s, StatusCode::OK);
    }
    let patients = |api: crate::support::Api| async move {
        let (_, v) = api.get("/api/v1/patients").await;
        let mut ids: Vec<String> = v["patients"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    };
    let patients_before = patients(api.clone()).await;
    assert_eq!(patients_before, ["mig-0001", "mig-0002", "mig-0003"]);
    let mut readings_before = Vec::new();
    for p in &patients_before {
        readings_before.push(api.observations(p, "limit=100000").await);
    }
    assert!(
        readings_before.iter().all(|r| r.len() > 10),
        "the run sent readings for every patient"
    );
    let (cfg, dir) = gw.stop_keeping_data().await;
    let lines_before = verify_chain(&SqliteDb::open(&dir.path().join("registry.db")).unwrap())
        .await
        .unwrap();
    assert!(lines_before > 1_000, "{lines_before} audit lines");

    let pg = Postgres::start().await;
    let url = pg.database("clinic").await;
    let out = run(
        env!("CARGO_BIN_EXE_vigil"),
        &[
            "db",
            "migrate",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--to",
            &url,
        ],
        None,
    )
    .await;
    assert!(out.ok, "vigil db migrate: {}", out.stderr);
    assert!(
        out.stdout
            .contains(&format!("audit chain of {lines_before} lines verified")),
        "{}",
        out.stdout
    );
    let total: usize = readings_before.iter().map(Vec::len).sum();
    assert!(
        out.stdout.contains(&format!("observations {total}")),
        "{}",
        out.stdout
    );

    // Served from PostgreSQL; the data directory's SQLite files are put aside, to show that
    // nothing is read from them any more.
    for f in ["registry.db", "store.db"] {
        std::fs::rename(
            dir.path().join(f),
            dir.path().join(format!("{f}.before-move")),
        )
        .unwrap();
    }
    let mut cfg = cfg;
    cfg.database = Some(vigil::config::DatabaseConfig {
        url: url.clone(),
        ca_file: None,
    });
    let gw = Gateway::start_again(cfg, dir).await;
    let api = &gw.client;
    assert_eq!(patients(api.clone()).await, patients_before);
    for (p, before) in patients_before.iter().zip(&readings_before) {
        assert_eq!(
            &api.observations(p, "limit=100000").await,
            before,
            "{p}'s readings moved as they were"
        );
    }
    let (_, v) = api.get("/api/v1/alerts?limit=1000").await;
    let alerts_after: Vec<String> = v["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_owned())
        .collect();
    for id in &alerts_before {
        assert!(
            alerts_after.contains(id),
            "alert {id} was moved: {alerts_after:?}"
        );
    }
    let (s, v) = api.get(&format!("/api/v1/visits/{visit_id}")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // A device connects with the secret it was given before the move.
    let creds: Value = serde_json::from_slice(&std::fs::read(&creds).unwrap()).unwrap();
    let oximeter = creds["patients"][2]["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["profile"] == "pulse-oximeter")
        .unwrap()
        .clone();
    let before = api.observations("mig-0003", "limit=100000").await.len();
    let time = vigil::domain::format_rfc3339(vigil::domain::now_ms());
    publish_readings(
        gw.mqtt,
        oximeter["id"].as_str().unwrap(),
        oximeter["password"].as_str().unwrap(),
        &json!([{"metric": "spo2", "value": 97, "time": time}]),
    )
    .await;
    assert_eq!(
        api.observations("mig-0003", "limit=100000").await.len(),
        before + 1
    );
    // The chain verifies on PostgreSQL and goes on from where it was.
    let (s, v) = api.get("/api/v1/audit/verify").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["intact"], true, "{v}");
    assert!(v["lines"].as_u64().unwrap() as usize > lines_before, "{v}");
    gw.stop().await;
}
