//! One conformance suite for the registry's storage seam (`vigil::registry::storage`), run on
//! both backends: SQLite (the embedded default) and a real PostgreSQL started for the test
//! (`scripts/pg-temp`). Each test states a behaviour of the seam and checks it on each backend in
//! turn, so the two cannot drift apart.
//!
//! So far the seam covers the audit trail, video visits, API tokens, access (users, care
//! teams, sign-in sessions), patients and their devices, and the CRM record with its outbox.

use std::sync::Arc;

use vigil::alerts::engine::Effect;
use vigil::alerts::rules::{CarePlan, Severity};
use vigil::domain::PatientId;
use vigil::domain::zone::Zone;
use vigil::registry::PatientDetails;
use vigil::registry::RegistryError;
use vigil::registry::Scope;
use vigil::registry::access::{NewSession, NewTeam, NewUser, Role, StoredUser, UserChange};
use vigil::registry::audit::{AuditQuery, NewAuditLine};
use vigil::registry::devices::{NewDevice, SecretHashes, StatusChange};
use vigil::registry::lease::Lease;
use vigil::registry::patients::{NewPatient, PatientAudit, PatientChange};
use vigil::registry::postgres::PgDb;
use vigil::registry::record::{AlertActionError, AlertQuery, AlertStatus, Sink};
use vigil::registry::sqlite::SqliteDb;
use vigil::registry::storage::{Storage, verify_chain};
use vigil::registry::tokens::{LiveBy, NewApiToken, StoredToken, secret_hash};
use vigil::registry::visits::{NewVisit, StoredVisit};
use vigil::registry::{Lane, QueuedReading, READING, Settled};

use crate::postgres::Postgres;
use crate::registry_db::RegistryDb;

/// A backend under test, with what keeps it alive and a way to reach under the seam.
struct Backend {
    name: &'static str,
    db: Arc<dyn Storage>,
    under: RegistryDb,
    /// The SQLite file's folder, or the PostgreSQL server: kept for the test's length.
    _keep: Box<dyn std::any::Any + Send>,
}

impl Backend {
    /// Runs `sql` directly on the database, as an intruder with file or database access would.
    async fn tamper(&self, sql: &str) {
        self.under.execute(sql).await;
    }

    /// The first column of `sql`'s rows, as text.
    async fn rows(&self, sql: &str) -> Vec<String> {
        self.under.rows(sql).await
    }

    /// Makes the database refuse every insert into `table`, as a full disk or a broken
    /// constraint would.
    async fn refuse_inserts(&self, table: &str) {
        self.under.refuse_inserts(table).await;
    }

    async fn accept_inserts(&self, table: &str) {
        self.under.accept_inserts(table).await;
    }

    /// Adds patient `id` under the seam (on the default care team).
    async fn add_patient(&self, id: &str) {
        self.tamper(&format!(
            "INSERT INTO patients (id, name, created_ms) VALUES ('{id}', 'Ada', 0)"
        ))
        .await;
    }

    /// Adds patient `id` on care team `team` (creating the team when it is not the default),
    /// for the CRM record, whose care plans, notes and team-filtered alerts look patients up.
    async fn add_patient_on(&self, id: &str, team: &str) {
        if team != "default" {
            self.tamper(&format!(
                "INSERT INTO teams (id, name, created_ms) VALUES ('{team}', '{team}', 0)"
            ))
            .await;
        }
        self.tamper(&format!(
            "INSERT INTO patients (id, name, created_ms, care_team) VALUES ('{id}', 'Ada', 0, '{team}')"
        ))
        .await;
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
            under: RegistryDb::Sqlite(dir.path().join("registry.db")),
            _keep: Box::new(dir),
        },
        Backend {
            name: "postgres",
            db: Arc::new(postgres),
            under: RegistryDb::Postgres(url),
            _keep: Box::new(pg),
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

/// A read that shows many patients writes a line per patient in one batch: chained in order
/// after what came before, readable by patient, all or none, and an empty batch writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_audit_lines_is_chained_in_order_in_one_transaction() {
    for b in backends().await {
        let db = &b.db;
        db.append_audit(line(1_000, "nina", "session.started", None))
            .await
            .unwrap();
        db.append_audit_batch(Vec::new()).await.unwrap();
        let batch: Vec<NewAuditLine> = std::iter::once(line(2_000, "nina", "panel.read", None))
            .chain((0..300).map(|i| line(2_000, "nina", "panel.read", Some(&format!("p-{i}")))))
            .collect();
        db.append_audit_batch(batch.clone()).await.unwrap();
        db.append_audit(line(3_000, "omar", "record.read", Some("p-7")))
            .await
            .unwrap();
        let got = db.audit_records(all()).await.unwrap();
        assert_eq!(got.len(), 303, "{}", b.name);
        let back: Vec<&NewAuditLine> = got[1..302].iter().map(|s| &s.line).collect();
        assert_eq!(
            back,
            batch.iter().collect::<Vec<_>>(),
            "{}: in order",
            b.name
        );
        assert!(
            got.windows(2).all(|w| w[0].id < w[1].id),
            "{}: ids grow",
            b.name
        );
        assert_eq!(verify_chain(&**db).await.unwrap(), 303, "{}", b.name);
        let q = AuditQuery {
            patient_id: Some("p-7".into()),
            ..all()
        };
        let p7: Vec<String> = db
            .audit_records(q)
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.line.action)
            .collect();
        assert_eq!(p7, ["panel.read", "record.read"], "{}", b.name);

        // All or none: a batch the database refuses leaves the chain as it was.
        b.refuse_inserts("audit").await;
        let refused = db
            .append_audit_batch(vec![
                line(4_000, "nina", "panel.read", Some("p-1")),
                line(4_000, "nina", "panel.read", Some("p-2")),
            ])
            .await;
        assert!(refused.is_err(), "{}", b.name);
        b.accept_inserts("audit").await;
        assert_eq!(verify_chain(&**db).await.unwrap(), 303, "{}", b.name);
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

fn visit_id(n: u32) -> String {
    format!("vis_{n:032x}")
}

fn new_visit(n: u32, patient: &str) -> NewVisit {
    NewVisit {
        id: visit_id(n),
        patient_id: patient.into(),
        created_by: "nina".into(),
        created_ms: 1_000,
        expires_ms: 3_601_000,
    }
}

fn visit_line(action: &str, n: u32) -> NewAuditLine {
    NewAuditLine {
        target: format!("visit/{}", visit_id(n)),
        ..line(1_000, "nina", action, Some("p-1"))
    }
}

/// The timeline as `kind` and its data, oldest first.
async fn timeline(b: &Backend) -> Vec<(String, serde_json::Value)> {
    b.rows("SELECT kind || ' ' || data FROM timeline ORDER BY id")
        .await
        .iter()
        .map(|r| {
            let (kind, data) = r.split_once(' ').unwrap();
            (kind.to_owned(), serde_json::from_str(data).unwrap())
        })
        .collect()
}

/// The actions of the audit trail, oldest first.
async fn audited(b: &Backend) -> Vec<String> {
    let lines = b.db.audit_records(all()).await.unwrap();
    lines.into_iter().map(|l| l.line.action).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visit_reads_back_as_created_with_its_audit_line_and_its_id_once() {
    for b in backends().await {
        b.add_patient("p-1").await;
        let v =
            b.db.create_visit(new_visit(1, "p-1"), visit_line("visit.create", 1))
                .await
                .unwrap();
        let want = StoredVisit {
            id: visit_id(1),
            patient_id: "p-1".into(),
            created_by: "nina".into(),
            created_ms: 1_000,
            expires_ms: 3_601_000,
            started_ms: None,
            ended_ms: None,
            ended_by: None,
        };
        assert_eq!(v, want, "{}", b.name);
        assert_eq!(
            b.db.visit(visit_id(1)).await.unwrap(),
            Some(want),
            "{}",
            b.name
        );
        assert_eq!(b.db.visit(visit_id(2)).await.unwrap(), None, "{}", b.name);
        assert_eq!(audited(&b).await, ["visit.create"], "{}", b.name);

        let again =
            b.db.create_visit(new_visit(1, "p-1"), visit_line("visit.create", 1))
                .await;
        assert!(
            matches!(&again, Err(RegistryError::Exists(m)) if m.contains(&visit_id(1))),
            "{}: {again:?}",
            b.name
        );
        assert_eq!(
            audited(&b).await,
            ["visit.create"],
            "{}: a refused visit is not audited",
            b.name
        );
        assert!(
            timeline(&b).await.is_empty(),
            "{}: creating writes no timeline entry",
            b.name
        );
    }
}

/// An unknown patient's visit is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visit_for_an_unknown_patient_is_refused() {
    for b in backends().await {
        let r =
            b.db.create_visit(new_visit(1, "nobody"), visit_line("visit.create", 1))
                .await;
        assert!(
            matches!(&r, Err(RegistryError::NotFound(m)) if m == "patient nobody"),
            "{}: {r:?}",
            b.name
        );
        assert_eq!(b.db.visit(visit_id(1)).await.unwrap(), None, "{}", b.name);
        assert!(audited(&b).await.is_empty(), "{}", b.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visit_starts_once_and_ends_once_each_on_the_timeline() {
    for b in backends().await {
        b.add_patient("p-1").await;
        let db = &b.db;
        db.create_visit(new_visit(1, "p-1"), visit_line("visit.create", 1))
            .await
            .unwrap();
        let s = db
            .start_visit(visit_id(1), "nina".into(), 10_000)
            .await
            .unwrap();
        assert_eq!(
            (s.started_ms, s.ended_ms),
            (Some(10_000), None),
            "{}",
            b.name
        );
        let again = db
            .start_visit(visit_id(1), "omar".into(), 20_000)
            .await
            .unwrap();
        assert_eq!(again, s, "{}: a second start changes nothing", b.name);
        assert_eq!(
            db.visit(visit_id(1)).await.unwrap(),
            Some(s.clone()),
            "{}",
            b.name
        );

        let e = db
            .end_visit(
                visit_id(1),
                "nina".into(),
                310_999,
                Some(visit_line("visit.end", 1)),
                Zone::utc(),
            )
            .await
            .unwrap();
        assert_eq!(
            (e.started_ms, e.ended_ms, e.ended_by.as_deref()),
            (Some(10_000), Some(310_999), Some("nina")),
            "{}",
            b.name
        );
        let again = db
            .end_visit(
                visit_id(1),
                "omar".into(),
                999_000,
                Some(visit_line("visit.end", 1)),
                Zone::utc(),
            )
            .await
            .unwrap();
        assert_eq!(again, e, "{}: a second end changes nothing", b.name);
        let after = db
            .start_visit(visit_id(1), "omar".into(), 1_000_000)
            .await
            .unwrap();
        assert_eq!(after, e, "{}: an ended visit does not start again", b.name);
        assert_eq!(db.visit(visit_id(1)).await.unwrap(), Some(e), "{}", b.name);

        let id = visit_id(1);
        assert_eq!(
            timeline(&b).await,
            [
                (
                    "visit.started".to_owned(),
                    serde_json::json!({"visit_id": id, "by": "nina"})
                ),
                (
                    "visit.ended".to_owned(),
                    serde_json::json!({"visit_id": id, "by": "nina", "duration_s": 300, "held": true})
                ),
            ],
            "{}",
            b.name
        );
        assert_eq!(
            b.rows("SELECT patient_id || ' ' || time_ms FROM timeline ORDER BY id")
                .await,
            ["p-1 10000", "p-1 310999"],
            "{}",
            b.name
        );
        // Each end request is audited, the one that changed nothing too.
        assert_eq!(
            audited(&b).await,
            ["visit.create", "visit.end", "visit.end"],
            "{}",
            b.name
        );

        // Ended without anyone admitted: no duration; no audit line asked for, none written.
        db.create_visit(new_visit(2, "p-1"), visit_line("visit.create", 2))
            .await
            .unwrap();
        db.end_visit(visit_id(2), "vigil".into(), 5_000, None, Zone::utc())
            .await
            .unwrap();
        let last = timeline(&b).await.pop().unwrap();
        assert_eq!(
            last.1,
            serde_json::json!({"visit_id": visit_id(2), "by": "vigil", "duration_s": null, "held": false}),
            "{}",
            b.name
        );
        assert_eq!(audited(&b).await.len(), 4, "{}", b.name);

        // The held visit logged its 5 minutes (300.999 s, rounded) as the creator's interactive
        // video time, dated the day it started, with its end; the other logged nothing.
        let logged = db
            .time_entries(pid("p-1"), "1970-01-01".into(), "1970-01-02".into())
            .await
            .unwrap();
        assert_eq!(logged.len(), 1, "{}: {logged:?}", b.name);
        let t = &logged[0];
        assert_eq!(
            (
                t.date.as_str(),
                t.minutes,
                t.activity.as_str(),
                t.interactive,
                t.user.as_str()
            ),
            ("1970-01-01", 5, "video", true, "nina"),
            "{}",
            b.name
        );
        assert!(
            t.note.as_deref().unwrap().contains(&visit_id(1)),
            "{}",
            b.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_visit_is_not_found_and_nothing_is_written() {
    for b in backends().await {
        let r = b.db.start_visit(visit_id(9), "nina".into(), 1).await;
        assert!(
            matches!(&r, Err(RegistryError::NotFound(m)) if *m == format!("visit {}", visit_id(9))),
            "{}: {r:?}",
            b.name
        );
        let r =
            b.db.end_visit(
                visit_id(9),
                "nina".into(),
                1,
                Some(visit_line("visit.end", 9)),
                Zone::utc(),
            )
            .await;
        assert!(
            matches!(r, Err(RegistryError::NotFound(_))),
            "{}: {r:?}",
            b.name
        );
        assert!(timeline(&b).await.is_empty(), "{}", b.name);
        assert!(audited(&b).await.is_empty(), "{}", b.name);
    }
}

/// A visit's start or end and its timeline entry (and its audit line) commit together: when
/// one cannot be written, the other did not happen either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visit_change_and_what_records_it_commit_together() {
    for b in backends().await {
        b.add_patient("p-1").await;
        let db = &b.db;
        b.refuse_inserts("audit").await;
        let r = db
            .create_visit(new_visit(1, "p-1"), visit_line("visit.create", 1))
            .await;
        assert!(r.is_err(), "{}: {r:?}", b.name);
        assert_eq!(
            db.visit(visit_id(1)).await.unwrap(),
            None,
            "{}: created unaudited",
            b.name
        );
        b.accept_inserts("audit").await;
        let created = db
            .create_visit(new_visit(1, "p-1"), visit_line("visit.create", 1))
            .await
            .unwrap();

        b.refuse_inserts("timeline").await;
        let r = db.start_visit(visit_id(1), "nina".into(), 10_000).await;
        assert!(r.is_err(), "{}: {r:?}", b.name);
        let r = db
            .end_visit(visit_id(1), "nina".into(), 20_000, None, Zone::utc())
            .await;
        assert!(r.is_err(), "{}: {r:?}", b.name);
        assert_eq!(
            db.visit(visit_id(1)).await.unwrap(),
            Some(created.clone()),
            "{}: started or ended without its timeline entry",
            b.name
        );
        b.accept_inserts("timeline").await;

        db.start_visit(visit_id(1), "nina".into(), 10_000)
            .await
            .unwrap();
        b.refuse_inserts("audit").await;
        let r = db
            .end_visit(
                visit_id(1),
                "nina".into(),
                200_000,
                Some(visit_line("visit.end", 1)),
                Zone::utc(),
            )
            .await;
        assert!(r.is_err(), "{}: {r:?}", b.name);
        let v = db.visit(visit_id(1)).await.unwrap().unwrap();
        assert_eq!(v.ended_ms, None, "{}: ended unaudited", b.name);
        assert!(
            db.time_entries(pid("p-1"), "1970-01-01".into(), "1970-01-02".into())
                .await
                .unwrap()
                .is_empty(),
            "{}: the visit's time logged without its end",
            b.name
        );
        let kinds: Vec<String> = timeline(&b).await.into_iter().map(|(k, _)| k).collect();
        assert_eq!(kinds, ["visit.started"], "{}", b.name);
    }
}

/// Several tasks starting each of many visits at once (on PostgreSQL each on its own
/// connection, as several Vigil instances would): each visit starts once, with one timeline
/// entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_starts_start_a_visit_once() {
    const VISITS: u32 = 30;
    const TASKS: u32 = 8;
    for b in backends().await {
        b.add_patient("p-1").await;
        for n in 0..VISITS {
            b.db.create_visit(new_visit(n, "p-1"), visit_line("visit.create", n))
                .await
                .unwrap();
        }
        let tasks: Vec<_> = (0..VISITS * TASKS)
            .map(|i| {
                let db = b.db.clone();
                tokio::spawn(async move {
                    let v = db
                        .start_visit(
                            visit_id(i % VISITS),
                            format!("clinician-{i}"),
                            10_000 + i64::from(i),
                        )
                        .await
                        .unwrap();
                    (v.id, v.started_ms)
                })
            })
            .collect();
        let mut starts = Vec::new();
        for t in tasks {
            starts.push(t.await.unwrap());
        }
        for (id, started) in starts {
            let stored = b.db.visit(id.clone()).await.unwrap().unwrap().started_ms;
            assert!(
                started.is_some() && started == stored,
                "{}: {id}: a start saw {started:?}, the visit has {stored:?}",
                b.name
            );
        }
        let mut started: Vec<String> = timeline(&b)
            .await
            .into_iter()
            .map(|(k, d)| format!("{k} {}", d["visit_id"].as_str().unwrap()))
            .collect();
        started.sort();
        let want: Vec<String> = (0..VISITS)
            .map(|n| format!("visit.started {}", visit_id(n)))
            .collect();
        assert_eq!(started, want, "{}: one entry per visit", b.name);
    }
}

/// A user tokens can belong to (`api_tokens` references `users` on both backends).
async fn add_user(b: &Backend, name: &str) {
    b.db.create_user(new_user(name, Role::Clinician, &[]), None)
        .await
        .unwrap();
}

/// Makes every audit append fail from now on, as a full disk or a broken chain table would.
async fn refuse_audit(b: &Backend) {
    b.refuse_inserts("audit").await;
}

fn secret(id: &str) -> String {
    format!("vgt_secret_of_{id}")
}

fn new_token(id: &str, user: &str, created_ms: i64, expires_ms: i64) -> NewApiToken {
    NewApiToken {
        id: id.into(),
        hash: secret_hash(&secret(id)),
        user: user.into(),
        label: format!("label of {id}"),
        scope: Scope::Read,
        created_ms,
        expires_ms,
    }
}

fn token_line(time_ms: i64, action: &str, id: &str) -> NewAuditLine {
    NewAuditLine {
        time_ms,
        actor: "admin".into(),
        action: action.into(),
        patient_id: None,
        target: format!("token/{id}"),
        remote: "203.0.113.9".into(),
    }
}

/// Every audit line's action and target, in chain order.
async fn audited_targets(db: &dyn Storage) -> Vec<(String, String)> {
    db.audit_records(all())
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.line.action, s.line.target))
        .collect()
}

fn ids(tokens: &[StoredToken]) -> Vec<&str> {
    tokens.iter().map(|t| t.id.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_token_is_found_by_its_hash_listed_for_its_user_and_read_by_id() {
    for b in backends().await {
        let db = &*b.db;
        add_user(&b, "nina").await;
        add_user(&b, "omar").await;
        let mut writer = new_token("tok_b", "nina", 2_000, 9_000);
        writer.scope = Scope::Write;
        let made = [
            new_token("tok_c", "nina", 1_000, 5_000),
            new_token("tok_d", "omar", 1_500, 5_000),
            writer,
            new_token("tok_a", "nina", 2_000, 9_000),
        ];
        for (i, t) in made.iter().enumerate() {
            let line = token_line(i as i64, "token.create", &t.id);
            let stored = db.create_token(t.clone(), line).await.unwrap();
            assert_eq!(stored, t.stored(), "{}: as created", b.name);
        }
        assert_eq!(
            audited_targets(db).await,
            made.iter()
                .map(|t| ("token.create".to_owned(), format!("token/{}", t.id)))
                .collect::<Vec<_>>(),
            "{}: each creation audited",
            b.name
        );

        let by_hash = db
            .live_token(LiveBy::Hash(secret_hash(&secret("tok_b"))), 3_000)
            .await
            .unwrap();
        assert_eq!(by_hash, Some(made[2].stored()), "{}: by hash", b.name);
        let by_id = db
            .live_token(LiveBy::Id("tok_c".into()), 3_000)
            .await
            .unwrap();
        assert_eq!(by_id, Some(made[0].stored()), "{}: live by id", b.name);

        let nina = db.tokens(Some("nina".into())).await.unwrap();
        assert_eq!(
            ids(&nina),
            ["tok_a", "tok_b", "tok_c"],
            "{}: newest first, then by id",
            b.name
        );
        let all_tokens = db.tokens(None).await.unwrap();
        assert_eq!(
            ids(&all_tokens),
            ["tok_a", "tok_b", "tok_d", "tok_c"],
            "{}: everyone's",
            b.name
        );
        assert!(
            db.tokens(Some("nobody".into())).await.unwrap().is_empty(),
            "{}",
            b.name
        );
        assert_eq!(
            db.token_by_id("tok_d".into()).await.unwrap(),
            Some(made[1].stored()),
            "{}: by id",
            b.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_revoked_unknown_and_duplicate_api_tokens() {
    for b in backends().await {
        let db = &*b.db;
        add_user(&b, "nina").await;
        let t = new_token("tok_1", "nina", 1_000, 5_000);
        let hash = || LiveBy::Hash(secret_hash(&secret("tok_1")));
        let id = || LiveBy::Id("tok_1".into());
        db.create_token(t.clone(), token_line(1_000, "token.create", "tok_1"))
            .await
            .unwrap();
        for (now, live) in [(4_999, true), (5_000, false), (6_000, false)] {
            for by in [hash(), id()] {
                let found = db.live_token(by.clone(), now).await.unwrap();
                assert_eq!(found.is_some(), live, "{}: {by:?} at {now}", b.name);
            }
        }

        let revoked = db
            .revoke_token(
                "tok_1".into(),
                3_000,
                token_line(3_000, "token.revoke", "tok_1"),
            )
            .await
            .unwrap();
        assert_eq!(revoked.revoked_ms, Some(3_000), "{}", b.name);
        for by in [hash(), id()] {
            assert_eq!(
                db.live_token(by.clone(), 3_001).await.unwrap(),
                None,
                "{}: revoked, {by:?}",
                b.name
            );
        }
        assert_eq!(
            db.token_by_id("tok_1".into())
                .await
                .unwrap()
                .unwrap()
                .revoked_ms,
            Some(3_000),
            "{}: a revoked token is still read by id",
            b.name
        );
        // Revoking again changes nothing but is audited, as every revocation asked for is.
        let again = db
            .revoke_token(
                "tok_1".into(),
                4_000,
                token_line(4_000, "token.revoke", "tok_1"),
            )
            .await
            .unwrap();
        assert_eq!(again.revoked_ms, Some(3_000), "{}: revoked twice", b.name);

        let before = audited_targets(db).await;
        assert_eq!(before.len(), 3, "{}: {before:?}", b.name);
        let e = db
            .revoke_token(
                "tok_x".into(),
                4_000,
                token_line(4_000, "token.revoke", "tok_x"),
            )
            .await
            .unwrap_err();
        assert!(matches!(e, RegistryError::NotFound(_)), "{}: {e}", b.name);
        assert_eq!(
            db.live_token(LiveBy::Hash(secret_hash("vgt_unknown")), 0)
                .await
                .unwrap(),
            None,
            "{}: an unknown secret",
            b.name
        );
        assert_eq!(db.token_by_id("tok_x".into()).await.unwrap(), None);

        // The same id, or the same secret under another id: refused, nothing audited.
        let mut same_hash = new_token("tok_2", "nina", 1_000, 5_000);
        same_hash.hash = t.hash;
        for dup in [t.clone(), same_hash] {
            let e = db
                .create_token(dup.clone(), token_line(5_000, "token.create", &dup.id))
                .await
                .unwrap_err();
            assert!(matches!(e, RegistryError::Exists(_)), "{}: {e}", b.name);
        }
        assert_eq!(
            audited_targets(db).await,
            before,
            "{}: no line for a refusal",
            b.name
        );
        assert_eq!(db.tokens(None).await.unwrap().len(), 1, "{}", b.name);

        // A token's user must exist.
        let e = db
            .create_token(
                new_token("tok_3", "nobody", 0, 1),
                token_line(0, "token.create", "tok_3"),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&e, RegistryError::NotFound(m) if m == "user nobody"),
            "{}: {e}",
            b.name
        );
    }
}

/// Tasks revoking one token at once (on PostgreSQL each on its own connection): every one
/// succeeds, the first revocation's time stays, each is audited and the chain holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_revocations_keep_the_first_time_and_audit_each() {
    const TASKS: i64 = 8;
    for b in backends().await {
        add_user(&b, "nina").await;
        b.db.create_token(
            new_token("tok_1", "nina", 0, 9_000),
            token_line(0, "token.create", "tok_1"),
        )
        .await
        .unwrap();
        let tasks: Vec<_> = (1..=TASKS)
            .map(|i| {
                let db = b.db.clone();
                tokio::spawn(async move {
                    let line = token_line(i, "token.revoke", "tok_1");
                    db.revoke_token("tok_1".into(), i, line).await.unwrap()
                })
            })
            .collect();
        let mut times = Vec::new();
        for t in tasks {
            times.push(t.await.unwrap().revoked_ms);
        }
        let first = db_revoked_ms(&*b.db).await;
        assert!(
            times.iter().all(|t| *t == Some(first)),
            "{}: {times:?} vs {first}",
            b.name
        );
        assert_eq!(
            verify_chain(&*b.db).await.unwrap(),
            1 + TASKS as usize,
            "{}",
            b.name
        );
    }
}

async fn db_revoked_ms(db: &dyn Storage) -> i64 {
    let t = db.token_by_id("tok_1".into()).await.unwrap().unwrap();
    t.revoked_ms.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_change_and_its_audit_line_commit_together_or_not_at_all() {
    for b in backends().await {
        let db = &*b.db;
        add_user(&b, "nina").await;
        db.create_token(
            new_token("tok_1", "nina", 0, 9_000),
            token_line(0, "token.create", "tok_1"),
        )
        .await
        .unwrap();
        refuse_audit(&b).await;

        let made = db
            .create_token(
                new_token("tok_2", "nina", 0, 9_000),
                token_line(1, "token.create", "tok_2"),
            )
            .await;
        assert!(made.is_err(), "{}: {made:?}", b.name);
        assert_eq!(
            db.token_by_id("tok_2".into()).await.unwrap(),
            None,
            "{}: no token without its audit line",
            b.name
        );
        let revoked = db
            .revoke_token("tok_1".into(), 2, token_line(2, "token.revoke", "tok_1"))
            .await;
        assert!(revoked.is_err(), "{}: {revoked:?}", b.name);
        assert!(
            db.live_token(LiveBy::Id("tok_1".into()), 3)
                .await
                .unwrap()
                .is_some(),
            "{}: not revoked without its audit line",
            b.name
        );
        assert_eq!(audited_targets(db).await.len(), 1, "{}", b.name);
    }
}

fn new_user(name: &str, role: Role, teams: &[&str]) -> NewUser {
    NewUser {
        name: name.into(),
        password_hash: format!("$argon2id$hash-of-{name}"),
        role,
        teams: teams.iter().map(|t| (*t).to_owned()).collect(),
        created_ms: 1_000,
    }
}

fn new_team(id: &str) -> NewTeam {
    NewTeam {
        id: id.into(),
        name: format!("Team {id}"),
        created_ms: 1_000,
    }
}

fn access_line(action: &str, target: &str) -> NewAuditLine {
    NewAuditLine {
        time_ms: 1_000,
        actor: "admin".into(),
        action: action.into(),
        patient_id: None,
        target: target.into(),
        remote: "203.0.113.9".into(),
    }
}

/// Each team's id and members.
async fn memberships(db: &dyn Storage) -> Vec<(String, Vec<String>)> {
    db.teams()
        .await
        .unwrap()
        .into_iter()
        .map(|t| (t.id, t.members))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_and_teams_read_back_as_created_and_are_found_by_any_spelling() {
    for b in backends().await {
        let db = &*b.db;
        let n = b.name;
        // The default care team is there from the start.
        assert_eq!(memberships(db).await, [("default".into(), vec![])], "{n}");
        let north = db
            .create_team(
                new_team("north"),
                Some(access_line("team.create", "team/north")),
            )
            .await
            .unwrap();
        assert_eq!(
            (north.name.as_str(), north.members.len()),
            ("Team north", 0),
            "{n}"
        );
        let nina = db
            .create_user(
                new_user("Nina", Role::Clinician, &["north", "default"]),
                Some(access_line("user.create", "user/Nina")),
            )
            .await
            .unwrap();
        let expected = StoredUser {
            name: "Nina".into(),
            role: Role::Clinician,
            teams: vec!["default".into(), "north".into()],
            created_ms: 1_000,
            display_name: None,
            disabled_ms: None,
            password_temporary: false,
        };
        assert_eq!(nina, expected, "{n}");
        db.create_user(new_user("ada", Role::Admin, &[]), None)
            .await
            .unwrap();
        for spelling in ["Nina", "nina", "NINA"] {
            assert_eq!(
                db.user(spelling.into()).await.unwrap().as_ref(),
                Some(&expected),
                "{n}: {spelling}"
            );
            let c = db.credentials(spelling.into()).await.unwrap().unwrap();
            assert_eq!(
                (c.password_hash.as_str(), c.role),
                ("$argon2id$hash-of-Nina", Some(Role::Clinician)),
                "{n}: {spelling}"
            );
        }
        assert_eq!(db.user("nobody".into()).await.unwrap(), None, "{n}");
        assert_eq!(db.credentials("nobody".into()).await.unwrap(), None, "{n}");
        // By name, byte by byte: upper case first.
        let names: Vec<_> = db
            .users()
            .await
            .unwrap()
            .into_iter()
            .map(|u| u.name)
            .collect();
        assert_eq!(names, ["Nina", "ada"], "{n}");
        assert_eq!(
            memberships(db).await,
            [
                ("default".into(), vec!["Nina".into()]),
                ("north".into(), vec!["Nina".into()])
            ],
            "{n}"
        );
        assert_eq!(
            audited_targets(db).await,
            [
                ("team.create".into(), "team/north".into()),
                ("user.create".into(), "user/Nina".into())
            ],
            "{n}"
        );

        // Refusals write nothing.
        for (spelling, message) in [
            ("Nina", "user Nina"),
            ("nina", "user Nina (usernames ignore case)"),
            ("NINA", "user Nina (usernames ignore case)"),
        ] {
            let e = db
                .create_user(
                    new_user(spelling, Role::Admin, &[]),
                    Some(access_line("user.create", "user/x")),
                )
                .await
                .unwrap_err();
            assert!(
                matches!(&e, RegistryError::Exists(m) if m == message),
                "{n}: {spelling}: {e}"
            );
        }
        let e = db
            .create_user(new_user("sam", Role::Clinician, &["south"]), None)
            .await
            .unwrap_err();
        assert!(matches!(e, RegistryError::Invalid(_)), "{n}: {e}");
        assert_eq!(
            db.user("sam".into()).await.unwrap(),
            None,
            "{n}: no half-made user"
        );
        let e = db.create_team(new_team("north"), None).await.unwrap_err();
        assert!(
            matches!(&e, RegistryError::Exists(m) if m == "team north"),
            "{n}: {e}"
        );
        assert_eq!(
            audited_targets(db).await.len(),
            2,
            "{n}: no line for a refusal"
        );
        assert_eq!(db.users().await.unwrap().len(), 2, "{n}");

        // A role this Vigil does not know grants nothing: no sign-in, and a clinician's view.
        b.tamper("UPDATE users SET role = 'root' WHERE username = 'ada'")
            .await;
        let c = db.credentials("ada".into()).await.unwrap().unwrap();
        assert_eq!(c.role, None, "{n}");
        let ada = db.user("ada".into()).await.unwrap().unwrap();
        assert_eq!(ada.role, Role::Clinician, "{n}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_role_password_and_teams_change_by_any_spelling() {
    for b in backends().await {
        let db = &*b.db;
        let n = b.name;
        db.create_team(new_team("north"), None).await.unwrap();
        db.create_user(new_user("nina", Role::Clinician, &["default"]), None)
            .await
            .unwrap();
        let change = UserChange {
            role: Some(Role::Admin),
            password_hash: Some("$argon2id$new".into()),
            teams: Some(vec!["north".into(), "north".into()]),
            ..UserChange::default()
        };
        let u = db
            .update_user(
                "NINA".into(),
                change,
                Some(access_line("user.update", "user/nina")),
            )
            .await
            .unwrap();
        assert_eq!((u.name.as_str(), u.role), ("nina", Role::Admin), "{n}");
        assert_eq!(u.teams, ["north"], "{n}");
        let c = db.credentials("nina".into()).await.unwrap().unwrap();
        assert_eq!(c.password_hash, "$argon2id$new", "{n}");
        assert_eq!(
            db.user("nina".into()).await.unwrap(),
            Some(u.clone()),
            "{n}"
        );
        // Nothing asked, nothing changed (but the request is audited).
        let same = db
            .update_user(
                "nina".into(),
                UserChange::default(),
                Some(access_line("user.update", "user/nina")),
            )
            .await
            .unwrap();
        assert_eq!(same, u, "{n}");
        assert_eq!(audited_targets(db).await.len(), 2, "{n}");

        let e = db
            .update_user(
                "nobody".into(),
                UserChange::default(),
                Some(access_line("user.update", "user/nobody")),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&e, RegistryError::NotFound(m) if m == "user nobody"),
            "{n}: {e}"
        );
        let to_south = UserChange {
            role: Some(Role::Clinician),
            teams: Some(vec!["south".into()]),
            ..UserChange::default()
        };
        let e = db
            .update_user(
                "nina".into(),
                to_south,
                Some(access_line("user.update", "user/nina")),
            )
            .await
            .unwrap_err();
        assert!(matches!(e, RegistryError::Invalid(_)), "{n}: {e}");
        assert_eq!(
            db.user("nina".into()).await.unwrap(),
            Some(u),
            "{n}: a refused change changes nothing"
        );
        assert_eq!(
            audited_targets(db).await.len(),
            2,
            "{n}: no line for a refusal"
        );
    }
}

fn new_session(n: u8, user: &str, created_ms: i64, expires_ms: i64) -> NewSession {
    NewSession {
        hash: [n; 32],
        user: user.into(),
        csrf: format!("csrf-{n}"),
        created_ms,
        expires_ms,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_lives_until_it_expires_ends_or_its_users_role_or_password_changes() {
    for b in backends().await {
        let db = &*b.db;
        let n = b.name;
        db.create_user(new_user("nina", Role::Clinician, &[]), None)
            .await
            .unwrap();
        // Any spelling signs in; the session holds the stored one.
        let user = db
            .create_session(new_session(1, "NINA", 1_000, 5_000))
            .await
            .unwrap();
        assert_eq!(user, "nina", "{n}");
        let live = db.live_session([1; 32], 4_999).await.unwrap().unwrap();
        assert_eq!(
            (live.user.as_str(), live.csrf.as_str(), live.expires_ms),
            ("nina", "csrf-1", 5_000),
            "{n}"
        );
        assert_eq!(
            db.live_session([1; 32], 5_000).await.unwrap(),
            None,
            "{n}: expired"
        );
        assert_eq!(
            db.live_session([9; 32], 1_000).await.unwrap(),
            None,
            "{n}: unknown"
        );
        let e = db
            .create_session(new_session(2, "nobody", 1_000, 5_000))
            .await
            .unwrap_err();
        assert!(
            matches!(&e, RegistryError::NotFound(m) if m == "user nobody"),
            "{n}: {e}"
        );

        // A sign-in sweeps the sessions expired by then.
        db.create_session(new_session(3, "nina", 6_000, 9_000))
            .await
            .unwrap();
        let kept = b.rows("SELECT csrf FROM sessions ORDER BY csrf").await;
        assert_eq!(kept, ["csrf-3"], "{n}: the expired session is swept");

        // Ending: the user whose session it was, and the line, written either way.
        let ended = db
            .end_session([3; 32], Some(access_line("session.ended", "session")))
            .await
            .unwrap();
        assert_eq!(ended.as_deref(), Some("nina"), "{n}");
        assert_eq!(db.live_session([3; 32], 6_001).await.unwrap(), None, "{n}");
        let again = db
            .end_session([3; 32], Some(access_line("session.ended", "session")))
            .await
            .unwrap();
        assert_eq!(again, None, "{n}: ended once");
        assert_eq!(audited_targets(db).await.len(), 2, "{n}");

        // A new team keeps the user's sessions; a new role or password ends them.
        let changes = [
            (
                UserChange {
                    teams: Some(vec!["default".into()]),
                    ..UserChange::default()
                },
                true,
            ),
            (
                UserChange {
                    role: Some(Role::Admin),
                    ..UserChange::default()
                },
                false,
            ),
            (
                UserChange {
                    password_hash: Some("$argon2id$new".into()),
                    ..UserChange::default()
                },
                false,
            ),
        ];
        for (i, (change, kept)) in (10u8..).zip(changes) {
            db.create_session(new_session(i, "nina", 6_000, 9_000))
                .await
                .unwrap();
            let what = format!("{change:?}");
            db.update_user("Nina".into(), change, None).await.unwrap();
            let live = db.live_session([i; 32], 6_001).await.unwrap();
            assert_eq!(live.is_some(), kept, "{n}: {what}");
            db.end_session([i; 32], None).await.unwrap();
        }
    }
}

/// Every access change, with the audit trail refusing appends: each fails whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_access_change_and_its_audit_line_commit_together_or_not_at_all() {
    for b in backends().await {
        let db = &*b.db;
        let n = b.name;
        db.create_user(new_user("nina", Role::Clinician, &["default"]), None)
            .await
            .unwrap();
        db.create_session(new_session(1, "nina", 1_000, 9_000))
            .await
            .unwrap();
        let before = db.user("nina".into()).await.unwrap();
        let teams_before = memberships(db).await;
        refuse_audit(&b).await;

        let made = db
            .create_user(
                new_user("sam", Role::Clinician, &["default"]),
                Some(access_line("user.create", "user/sam")),
            )
            .await;
        assert!(made.is_err(), "{n}: {made:?}");
        assert_eq!(
            db.user("sam".into()).await.unwrap(),
            None,
            "{n}: no user unaudited"
        );

        let change = UserChange {
            role: Some(Role::Admin),
            password_hash: Some("$argon2id$new".into()),
            teams: Some(vec![]),
            ..UserChange::default()
        };
        let changed = db
            .update_user(
                "nina".into(),
                change,
                Some(access_line("user.update", "user/nina")),
            )
            .await;
        assert!(changed.is_err(), "{n}: {changed:?}");
        assert_eq!(
            db.user("nina".into()).await.unwrap(),
            before,
            "{n}: no change unaudited"
        );
        let c = db.credentials("nina".into()).await.unwrap().unwrap();
        assert_eq!(c.password_hash, "$argon2id$hash-of-nina", "{n}");

        let team = db
            .create_team(
                new_team("north"),
                Some(access_line("team.create", "team/north")),
            )
            .await;
        assert!(team.is_err(), "{n}: {team:?}");
        assert_eq!(
            memberships(db).await,
            teams_before,
            "{n}: no team unaudited"
        );

        let ended = db
            .end_session([1; 32], Some(access_line("session.ended", "session")))
            .await;
        assert!(ended.is_err(), "{n}: {ended:?}");
        assert!(
            db.live_session([1; 32], 1_001).await.unwrap().is_some(),
            "{n}: the session (ended by nothing, and by no role change) is still live"
        );
        assert!(audited_targets(db).await.is_empty(), "{n}");

        // Unaudited changes (the command line's) still work.
        b.accept_inserts("audit").await;
        db.create_team(new_team("north"), None).await.unwrap();
    }
}

/// Instances adding one user at once, in several spellings (on PostgreSQL each on its own
/// connection): one is created, every other is refused as existing, never a second row or a
/// database error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_adds_of_one_user_create_it_once() {
    for b in backends().await {
        let n = b.name;
        let tasks: Vec<_> = ["nina", "NINA", "Nina", "nINA"]
            .iter()
            .cycle()
            .take(16)
            .enumerate()
            .map(|(i, name)| {
                let db = b.db.clone();
                let line = access_line("user.create", &format!("user/{name}/{i}"));
                tokio::spawn(async move {
                    db.create_user(new_user(name, Role::Clinician, &["default"]), Some(line))
                        .await
                })
            })
            .collect();
        let (mut made, mut refused) = (Vec::new(), Vec::new());
        for (t, asked) in tasks
            .into_iter()
            .zip(["nina", "NINA", "Nina", "nINA"].iter().cycle())
        {
            match t.await.unwrap() {
                Ok(u) => made.push(u.name),
                Err(RegistryError::Exists(m)) => refused.push((*asked, m)),
                Err(e) => panic!("{n}: {e}"),
            }
        }
        assert_eq!(made.len(), 1, "{n}: {made:?}");
        assert_eq!(b.db.users().await.unwrap().len(), 1, "{n}");
        // Each refusal names the spelling that was created.
        let winner = &made[0];
        for (asked, m) in refused {
            let note = if asked == winner {
                ""
            } else {
                " (usernames ignore case)"
            };
            assert_eq!(m, format!("user {winner}{note}"), "{n}: {asked}");
        }
        assert_eq!(
            audited_targets(&*b.db).await.len(),
            1,
            "{n}: one line, for the one made"
        );
        assert_eq!(
            memberships(&*b.db).await[0].1.len(),
            1,
            "{n}: one membership"
        );
    }
}

// Patients.

fn new_patient(id: &str, mrn: Option<&str>, team: &str) -> NewPatient {
    NewPatient {
        id: id.into(),
        name: format!("Name of {id}"),
        birth_date: Some("1950-04-23".into()),
        mrn: mrn.map(str::to_owned),
        created_ms: 1_000,
        details: PatientDetails {
            phone: Some("555".into()),
            care_team: Some(team.into()),
            ..PatientDetails::default()
        },
    }
}

fn patient_audit(action: &str, id: &str) -> PatientAudit {
    PatientAudit {
        change: line(1, "admin", action, Some(id)),
        mrn: line(1, "admin", "patient.mrn", Some(id)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patient_reads_back_as_created_listed_by_id_with_its_team() {
    for b in backends().await {
        let n = b.name;
        let made =
            b.db.create_patient(new_patient("p-2", Some("M-2"), "default"), None)
                .await
                .unwrap();
        b.db.create_patient(new_patient("p-1", None, "default"), None)
            .await
            .unwrap();
        assert_eq!(made.id.as_str(), "p-2", "{n}");
        assert_eq!(made.name, "Name of p-2", "{n}");
        assert_eq!(made.birth_date.as_deref(), Some("1950-04-23"), "{n}");
        assert_eq!(made.mrn.as_deref(), Some("M-2"), "{n}");
        assert_eq!(made.details.phone.as_deref(), Some("555"), "{n}");
        assert_eq!(made.details.care_team.as_deref(), Some("default"), "{n}");
        let read = b.db.patient("p-2".into()).await.unwrap().unwrap();
        assert_eq!(
            serde_json::to_value(&read).unwrap(),
            serde_json::to_value(&made).unwrap(),
            "{n}"
        );
        assert!(
            b.db.patient("nobody".into()).await.unwrap().is_none(),
            "{n}"
        );
        let all: Vec<String> =
            b.db.patients()
                .await
                .unwrap()
                .iter()
                .map(|p| p.id.as_str().to_owned())
                .collect();
        assert_eq!(all, ["p-1", "p-2"], "{n}");
        assert_eq!(
            b.db.patient_team("p-1".into()).await.unwrap(),
            Some(Some("default".into())),
            "{n}"
        );
        assert_eq!(
            b.db.patient_team("nobody".into()).await.unwrap(),
            None,
            "{n}"
        );
        let none =
            b.db.update_patient("nobody".into(), PatientChange::default(), None)
                .await;
        assert!(
            matches!(&none, Err(RegistryError::NotFound(m)) if m == "patient nobody"),
            "{n}: {none:?}"
        );
        assert!(audited(&b).await.is_empty(), "{n}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patient_change_merges_into_what_is_stored_and_says_what_changed() {
    for b in backends().await {
        let n = b.name;
        b.db.create_team(new_team("north"), None).await.unwrap();
        b.db.create_patient(new_patient("p-1", Some("M-1"), "default"), None)
            .await
            .unwrap();
        let change = PatientChange {
            name: Some("Ada".into()),
            details: PatientDetails {
                email: Some("ada@example.org".into()),
                phone: Some(String::new()),
                care_team: Some("north".into()),
                ..PatientDetails::default()
            },
            ..PatientChange::default()
        };
        let done =
            b.db.update_patient("p-1".into(), change, None)
                .await
                .unwrap();
        let p = &done.patient;
        assert_eq!((done.mrn_changed, done.team_changed), (false, true), "{n}");
        assert_eq!(p.name, "Ada", "{n}");
        assert_eq!(p.birth_date.as_deref(), Some("1950-04-23"), "{n}: kept");
        assert_eq!(p.mrn.as_deref(), Some("M-1"), "{n}: kept");
        assert_eq!(p.details.email.as_deref(), Some("ada@example.org"), "{n}");
        assert_eq!(p.details.phone, None, "{n}: cleared");
        assert_eq!(p.details.care_team.as_deref(), Some("north"), "{n}");
        let clear_mrn = PatientChange {
            mrn: Some(None),
            ..PatientChange::default()
        };
        let done =
            b.db.update_patient("p-1".into(), clear_mrn, None)
                .await
                .unwrap();
        assert_eq!((done.mrn_changed, done.team_changed), (true, false), "{n}");
        let stored = b.db.patient("p-1".into()).await.unwrap().unwrap();
        assert_eq!(stored.mrn, None, "{n}");
        assert_eq!(
            stored.details.email.as_deref(),
            Some("ada@example.org"),
            "{n}"
        );
        assert_eq!(stored.details.care_team.as_deref(), Some("north"), "{n}");
    }
}

/// A taken id or MRN is `Exists` (409) at creation and at an update, and nothing is written:
/// no second row, no audit line, the patient unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_patient_id_or_mrn_is_refused_as_existing() {
    for b in backends().await {
        let n = b.name;
        b.db.create_patient(new_patient("p-1", Some("M-1"), "default"), None)
            .await
            .unwrap();
        b.db.create_patient(new_patient("p-2", None, "default"), None)
            .await
            .unwrap();
        let again =
            b.db.create_patient(
                new_patient("p-1", None, "default"),
                Some(patient_audit("patient.create", "p-1")),
            )
            .await;
        assert!(
            matches!(&again, Err(RegistryError::Exists(m)) if m == "patient p-1"),
            "{n}: {again:?}"
        );
        let taken =
            b.db.create_patient(
                new_patient("p-3", Some("M-1"), "default"),
                Some(patient_audit("patient.create", "p-3")),
            )
            .await;
        assert!(
            matches!(&taken, Err(RegistryError::Exists(m)) if m == "another patient with this mrn"),
            "{n}: {taken:?}"
        );
        assert!(b.db.patient("p-3".into()).await.unwrap().is_none(), "{n}");
        let to_taken = PatientChange {
            name: Some("Bo".into()),
            mrn: Some(Some("M-1".into())),
            ..PatientChange::default()
        };
        let r =
            b.db.update_patient(
                "p-2".into(),
                to_taken,
                Some(patient_audit("patient.update", "p-2")),
            )
            .await;
        assert!(
            matches!(&r, Err(RegistryError::Exists(m)) if m == "another patient with this mrn"),
            "{n}: {r:?}"
        );
        let p2 = b.db.patient("p-2".into()).await.unwrap().unwrap();
        assert_eq!(
            (p2.name.as_str(), p2.mrn),
            ("Name of p-2", None),
            "{n}: unchanged"
        );
        assert_eq!(b.db.patients().await.unwrap().len(), 2, "{n}");
        assert!(audited(&b).await.is_empty(), "{n}");
    }
}

/// Instances creating one patient id, or patients with one MRN, at once (on PostgreSQL each on
/// its own connection): one is created, every other is refused as existing, never a second row
/// or a database error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creations_of_one_patient_or_mrn_create_one() {
    for b in backends().await {
        let n = b.name;
        for (what, patient) in [
            (
                "id",
                (|_| new_patient("p-1", None, "default")) as fn(usize) -> NewPatient,
            ),
            ("mrn", |i| {
                new_patient(&format!("q-{i}"), Some("M-9"), "default")
            }),
        ] {
            let tasks: Vec<_> = (0..12)
                .map(|i| {
                    let db = b.db.clone();
                    let p = patient(i);
                    let audit = patient_audit("patient.create", &p.id);
                    tokio::spawn(async move { db.create_patient(p, Some(audit)).await })
                })
                .collect();
            let mut made = 0;
            for t in tasks {
                match t.await.unwrap() {
                    Ok(_) => made += 1,
                    Err(RegistryError::Exists(_)) => {}
                    Err(e) => panic!("{n} {what}: {e}"),
                }
            }
            assert_eq!(made, 1, "{n} {what}");
        }
        assert_eq!(b.db.patients().await.unwrap().len(), 2, "{n}");
        // One create line each, and the MRN's line for the one with an MRN.
        assert_eq!(
            audited(&b).await,
            ["patient.create", "patient.create", "patient.mrn"],
            "{n}"
        );
    }
}

/// Many changes of different fields of one patient at once (on PostgreSQL each on its own
/// connection): every one of them holds afterwards, none is lost to another's write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_changes_of_different_fields_all_survive() {
    for b in backends().await {
        let n = b.name;
        b.db.create_patient(new_patient("p-1", None, "default"), None)
            .await
            .unwrap();
        for round in 0..4 {
            let changes: Vec<PatientChange> = vec![
                PatientChange {
                    name: Some(format!("Ada {round}")),
                    ..PatientChange::default()
                },
                PatientChange {
                    birth_date: Some(format!("195{round}-01-01")),
                    ..PatientChange::default()
                },
                PatientChange {
                    mrn: Some(Some(format!("M-{round}"))),
                    ..PatientChange::default()
                },
                details_change(|d| d.phone = Some(format!("555-{round}"))),
                details_change(|d| d.email = Some(format!("ada{round}@example.org"))),
                details_change(|d| d.address = Some(format!("{round} Main St"))),
                details_change(|d| d.contact_notes = Some(format!("note {round}"))),
                details_change(|d| {
                    d.gender = Some(["male", "female", "other", "unknown"][round].into())
                }),
                details_change(|d| {
                    d.contact_preference = Some(["phone", "sms", "email", "post"][round].into())
                }),
            ];
            let tasks: Vec<_> = changes
                .into_iter()
                .map(|c| {
                    let db = b.db.clone();
                    let audit = patient_audit("patient.update", "p-1");
                    tokio::spawn(
                        async move { db.update_patient("p-1".into(), c, Some(audit)).await },
                    )
                })
                .collect();
            for t in tasks {
                t.await.unwrap().unwrap();
            }
            let p = b.db.patient("p-1".into()).await.unwrap().unwrap();
            let d = &p.details;
            let got = (
                p.name.clone(),
                p.birth_date.clone(),
                p.mrn.clone(),
                d.phone.clone(),
                d.email.clone(),
                d.address.clone(),
                d.contact_notes.clone(),
                d.gender.clone(),
                d.contact_preference.clone(),
                d.care_team.clone(),
            );
            let want = (
                format!("Ada {round}"),
                Some(format!("195{round}-01-01")),
                Some(format!("M-{round}")),
                Some(format!("555-{round}")),
                Some(format!("ada{round}@example.org")),
                Some(format!("{round} Main St")),
                Some(format!("note {round}")),
                Some(["male", "female", "other", "unknown"][round].to_owned()),
                Some(["phone", "sms", "email", "post"][round].to_owned()),
                Some("default".to_owned()),
            );
            assert_eq!(got, want, "{n}: round {round}");
        }
        // Every change audited, and the MRN's own line once per round that changed it.
        let actions = audited(&b).await;
        assert_eq!(
            actions.iter().filter(|a| *a == "patient.update").count(),
            36,
            "{n}"
        );
        assert_eq!(
            actions.iter().filter(|a| *a == "patient.mrn").count(),
            4,
            "{n}"
        );
    }
}

fn details_change(f: impl FnOnce(&mut PatientDetails)) -> PatientChange {
    let mut details = PatientDetails::default();
    f(&mut details);
    PatientChange {
        details,
        ..PatientChange::default()
    }
}

/// A care team that does not exist is refused (400) at creation and at a move, and nothing is
/// written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_care_team_is_refused() {
    for b in backends().await {
        let n = b.name;
        let want = "care team \"nowhere\" does not exist; create it first (POST /api/v1/teams)";
        let r =
            b.db.create_patient(
                new_patient("p-1", None, "nowhere"),
                Some(patient_audit("patient.create", "p-1")),
            )
            .await;
        assert!(
            matches!(&r, Err(RegistryError::Invalid(m)) if m == want),
            "{n}: {r:?}"
        );
        assert!(b.db.patient("p-1".into()).await.unwrap().is_none(), "{n}");
        b.db.create_patient(new_patient("p-1", None, "default"), None)
            .await
            .unwrap();
        let r =
            b.db.update_patient(
                "p-1".into(),
                details_change(|d| d.care_team = Some("nowhere".into())),
                Some(patient_audit("patient.update", "p-1")),
            )
            .await;
        assert!(
            matches!(&r, Err(RegistryError::Invalid(m)) if m == want),
            "{n}: {r:?}"
        );
        let team = b.db.patient_team("p-1".into()).await.unwrap();
        assert_eq!(team, Some(Some("default".into())), "{n}");
        assert!(audited(&b).await.is_empty(), "{n}");
    }
}

/// A patient's creation and change take their audit lines (the MRN's own line only when the
/// MRN is set or changes), all or nothing: when the trail refuses the line, nothing changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patient_change_and_its_audit_lines_commit_together_or_not_at_all() {
    for b in backends().await {
        let n = b.name;
        b.db.create_patient(
            new_patient("p-1", Some("M-1"), "default"),
            Some(patient_audit("patient.create", "p-1")),
        )
        .await
        .unwrap();
        b.db.create_patient(
            new_patient("p-2", None, "default"),
            Some(patient_audit("patient.create", "p-2")),
        )
        .await
        .unwrap();
        b.db.update_patient(
            "p-2".into(),
            details_change(|d| d.phone = Some("1".into())),
            Some(patient_audit("patient.update", "p-2")),
        )
        .await
        .unwrap();
        let mrn = PatientChange {
            mrn: Some(Some("M-2".into())),
            ..PatientChange::default()
        };
        b.db.update_patient(
            "p-2".into(),
            mrn,
            Some(patient_audit("patient.update", "p-2")),
        )
        .await
        .unwrap();
        let want = [
            "patient.create",
            "patient.mrn",
            "patient.create",
            "patient.update",
            "patient.update",
            "patient.mrn",
        ];
        assert_eq!(audited(&b).await, want, "{n}");
        refuse_audit(&b).await;
        let r =
            b.db.create_patient(
                new_patient("p-3", None, "default"),
                Some(patient_audit("patient.create", "p-3")),
            )
            .await;
        assert!(r.is_err(), "{n}: {r:?}");
        assert!(
            b.db.patient("p-3".into()).await.unwrap().is_none(),
            "{n}: not created"
        );
        let change = PatientChange {
            name: Some("Changed".into()),
            mrn: Some(None),
            details: PatientDetails {
                phone: Some("2".into()),
                ..PatientDetails::default()
            },
            ..PatientChange::default()
        };
        let r =
            b.db.update_patient(
                "p-2".into(),
                change,
                Some(patient_audit("patient.update", "p-2")),
            )
            .await;
        assert!(r.is_err(), "{n}: {r:?}");
        let p2 = b.db.patient("p-2".into()).await.unwrap().unwrap();
        assert_eq!(
            (
                p2.name.as_str(),
                p2.mrn.as_deref(),
                p2.details.phone.as_deref()
            ),
            ("Name of p-2", Some("M-2"), Some("1")),
            "{n}: unchanged"
        );
        assert_eq!(audited(&b).await, want, "{n}");
    }
}

// Devices.

fn hashes(n: u8) -> SecretHashes {
    SecretHashes {
        sha256: [n; 32],
        broker: format!("$7$broker-{n}"),
    }
}

fn new_device(id: &str, patient: &str, n: u8) -> NewDevice {
    NewDevice {
        id: id.into(),
        patient_id: patient.into(),
        profile: "scale".into(),
        created_ms: 2_000,
        secret: hashes(n),
    }
}

fn device_line(action: &str, id: &str) -> NewAuditLine {
    NewAuditLine {
        target: format!("device/{id}"),
        ..line(1, "admin", action, Some("p-1"))
    }
}

/// Each device's id and the hash of its secret, as the credential cache loads them.
async fn credentials(db: &dyn Storage) -> Vec<(String, Vec<u8>, bool)> {
    let mut c: Vec<_> = db
        .device_credentials()
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.id, c.secret_hash, c.revoked))
        .collect();
    c.sort();
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_read_back_as_created_and_are_refused_when_taken_or_orphaned() {
    for b in backends().await {
        let n = b.name;
        b.add_patient("p-1").await;
        b.add_patient("p-2").await;
        let d =
            b.db.create_device(
                new_device("d-2", "p-1", 2),
                Some(device_line("device.create", "d-2")),
            )
            .await
            .unwrap();
        assert_eq!(
            (
                d.id.as_str(),
                d.patient_id.as_str(),
                d.profile.as_str(),
                d.online,
                d.revoked,
                d.battery,
                d.last_seen.clone()
            ),
            ("d-2", "p-1", "scale", false, false, None, None),
            "{n}"
        );
        b.db.create_device(new_device("d-1", "p-2", 1), None)
            .await
            .unwrap();
        b.db.create_device(new_device("d-3", "p-1", 3), None)
            .await
            .unwrap();
        let ids = |v: Vec<vigil::registry::Device>| {
            v.iter()
                .map(|d| d.id.as_str().to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            ids(b.db.devices(None, None).await.unwrap()),
            ["d-2", "d-3", "d-1"],
            "{n}: by patient, then id"
        );
        assert_eq!(
            ids(b.db.devices(None, Some("p-1".into())).await.unwrap()),
            ["d-2", "d-3"],
            "{n}"
        );
        assert_eq!(
            ids(b.db.devices(Some("d-1".into()), None).await.unwrap()),
            ["d-1"],
            "{n}"
        );
        assert!(
            b.db.devices(Some("nope".into()), None)
                .await
                .unwrap()
                .is_empty(),
            "{n}"
        );
        let taken =
            b.db.create_device(
                new_device("d-2", "p-2", 9),
                Some(device_line("device.create", "d-2")),
            )
            .await;
        assert!(
            matches!(&taken, Err(RegistryError::Exists(m)) if m == "device d-2"),
            "{n}: {taken:?}"
        );
        let orphan =
            b.db.create_device(
                new_device("d-4", "nobody", 4),
                Some(device_line("device.create", "d-4")),
            )
            .await;
        assert!(
            matches!(&orphan, Err(RegistryError::NotFound(m)) if m == "patient nobody"),
            "{n}: {orphan:?}"
        );
        assert_eq!(
            credentials(&*b.db).await,
            [
                ("d-1".into(), vec![1; 32], false),
                ("d-2".into(), vec![2; 32], false),
                ("d-3".into(), vec![3; 32], false)
            ],
            "{n}: the first secret of d-2 kept"
        );
        assert_eq!(audited(&b).await, ["device.create"], "{n}");
        let broker = b.db.broker_passwords().await.unwrap();
        assert_eq!(
            broker,
            [
                ("d-1".to_owned(), "$7$broker-1".to_owned()),
                ("d-2".into(), "$7$broker-2".into()),
                ("d-3".into(), "$7$broker-3".into())
            ],
            "{n}"
        );
    }
}

/// Instances creating one device at once (on PostgreSQL each on its own connection): one is
/// created, every other refused as existing, never a second row or a database error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creations_of_one_device_create_it_once() {
    for b in backends().await {
        let n = b.name;
        b.add_patient("p-1").await;
        let tasks: Vec<_> = (0..12u8)
            .map(|i| {
                let db = b.db.clone();
                tokio::spawn(async move {
                    db.create_device(
                        new_device("d-1", "p-1", i),
                        Some(device_line("device.create", "d-1")),
                    )
                    .await
                })
            })
            .collect();
        let mut made = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => made += 1,
                Err(RegistryError::Exists(_)) => {}
                Err(e) => panic!("{n}: {e}"),
            }
        }
        assert_eq!(made, 1, "{n}");
        assert_eq!(credentials(&*b.db).await.len(), 1, "{n}");
        assert_eq!(audited(&b).await, ["device.create"], "{n}");
    }
}

/// Revoking writes `device.revoked` on the timeline once and audits every request; rotating
/// replaces the secret's hashes; a revoked device cannot be rotated; an unknown one is not
/// found, and nothing is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_is_rotated_and_revoked_once() {
    for b in backends().await {
        let n = b.name;
        b.add_patient("p-1").await;
        b.db.create_device(new_device("d-1", "p-1", 1), None)
            .await
            .unwrap();
        let d =
            b.db.rotate_device_secret(
                "d-1".into(),
                hashes(7),
                Some(device_line("device.rotate", "d-1")),
            )
            .await
            .unwrap();
        assert_eq!(d.id.as_str(), "d-1", "{n}");
        assert_eq!(
            credentials(&*b.db).await,
            [("d-1".into(), vec![7; 32], false)],
            "{n}"
        );
        assert_eq!(
            b.db.broker_passwords().await.unwrap(),
            [("d-1".to_owned(), "$7$broker-7".to_owned())],
            "{n}"
        );
        for _ in 0..2 {
            let d =
                b.db.revoke_device(
                    "d-1".into(),
                    5_000,
                    Some(device_line("device.revoke", "d-1")),
                )
                .await
                .unwrap();
            assert!(d.revoked, "{n}");
        }
        assert_eq!(
            timeline(&b).await,
            [(
                "device.revoked".to_owned(),
                serde_json::json!({"device_id": "d-1"})
            )],
            "{n}: once"
        );
        assert_eq!(
            credentials(&*b.db).await,
            [("d-1".into(), vec![7; 32], true)],
            "{n}"
        );
        assert!(
            b.db.broker_passwords().await.unwrap().is_empty(),
            "{n}: a revoked device may not connect"
        );
        let r =
            b.db.rotate_device_secret(
                "d-1".into(),
                hashes(8),
                Some(device_line("device.rotate", "d-1")),
            )
            .await;
        assert!(
            matches!(&r, Err(RegistryError::Invalid(m)) if m.contains("is revoked")),
            "{n}: {r:?}"
        );
        for r in [
            b.db.rotate_device_secret(
                "nope".into(),
                hashes(8),
                Some(device_line("device.rotate", "nope")),
            )
            .await,
            b.db.revoke_device(
                "nope".into(),
                5_000,
                Some(device_line("device.revoke", "nope")),
            )
            .await,
        ] {
            assert!(
                matches!(&r, Err(RegistryError::NotFound(m)) if m == "device nope"),
                "{n}: {r:?}"
            );
        }
        assert_eq!(
            credentials(&*b.db).await,
            [("d-1".into(), vec![7; 32], true)],
            "{n}"
        );
        assert_eq!(
            audited(&b).await,
            ["device.rotate", "device.revoke", "device.revoke"],
            "{n}"
        );
    }
}

/// A device's new secret (at creation or rotation) and its revocation commit with their audit
/// line or not at all: when the trail refuses the line, the device is not created, and a
/// rotated or revoked device keeps its old secret, which still authenticates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_secret_commits_with_its_audit_line_or_not_at_all() {
    for b in backends().await {
        let n = b.name;
        b.add_patient("p-1").await;
        b.db.create_device(
            new_device("d-1", "p-1", 1),
            Some(device_line("device.create", "d-1")),
        )
        .await
        .unwrap();
        refuse_audit(&b).await;
        let r =
            b.db.create_device(
                new_device("d-2", "p-1", 2),
                Some(device_line("device.create", "d-2")),
            )
            .await;
        assert!(r.is_err(), "{n}: {r:?}");
        let r =
            b.db.rotate_device_secret(
                "d-1".into(),
                hashes(9),
                Some(device_line("device.rotate", "d-1")),
            )
            .await;
        assert!(r.is_err(), "{n}: {r:?}");
        let r =
            b.db.revoke_device(
                "d-1".into(),
                5_000,
                Some(device_line("device.revoke", "d-1")),
            )
            .await;
        assert!(r.is_err(), "{n}: {r:?}");
        assert_eq!(
            credentials(&*b.db).await,
            [("d-1".into(), vec![1; 32], false)],
            "{n}: no new device, the old secret kept, not revoked"
        );
        assert_eq!(
            b.db.broker_passwords().await.unwrap(),
            [("d-1".to_owned(), "$7$broker-1".to_owned())],
            "{n}"
        );
        assert!(timeline(&b).await.is_empty(), "{n}");
        assert_eq!(audited(&b).await, ["device.create"], "{n}");
    }
}

/// A status batch writes each known device's status (the last-seen time only moves forward)
/// and the timeline entries the changes make, skips unknown ids, and returns what it wrote; a
/// batch that fails writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_status_batches_write_status_and_timeline_together() {
    for b in backends().await {
        let n = b.name;
        b.add_patient("p-1").await;
        b.db.create_device(new_device("d-1", "p-1", 1), None)
            .await
            .unwrap();
        b.db.create_device(new_device("d-2", "p-1", 2), None)
            .await
            .unwrap();
        let change =
            |id: &str, online: Option<bool>, battery: Option<u8>, at_ms: i64| StatusChange {
                id: id.into(),
                online,
                battery,
                at_ms,
                instance: "vigil-a".into(),
            };
        let written =
            b.db.write_device_status(vec![
                change("d-1", Some(true), Some(90), 10_000),
                change("ghost", Some(true), None, 10_000),
                change("d-2", None, Some(50), 10_000),
            ])
            .await
            .unwrap();
        let mut got: Vec<_> = written
            .iter()
            .map(|s| {
                (
                    s.device_id.clone(),
                    s.patient_id.clone(),
                    s.online,
                    s.battery,
                    s.last_seen_ms,
                )
            })
            .collect();
        got.sort();
        assert_eq!(
            got,
            [
                ("d-1".into(), "p-1".into(), true, Some(90), 10_000),
                ("d-2".into(), "p-1".into(), false, Some(50), 10_000)
            ],
            "{n}"
        );
        let written =
            b.db.write_device_status(vec![change("d-1", Some(false), Some(15), 9_000)])
                .await
                .unwrap();
        assert_eq!(
            (written[0].online, written[0].battery),
            (false, Some(15)),
            "{n}"
        );
        let d1 =
            b.db.devices(Some("d-1".into()), None)
                .await
                .unwrap()
                .pop()
                .unwrap();
        assert_eq!((d1.online, d1.battery), (false, Some(15)), "{n}");
        assert_eq!(
            d1.last_seen.as_deref(),
            Some("1970-01-01T00:00:10Z"),
            "{n}: never moves back"
        );
        let kinds: Vec<String> = timeline(&b).await.into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            kinds,
            ["device.online", "device.offline", "device.battery_low"],
            "{n}"
        );
        // A batch the database refuses (here, its timeline entry) changes nothing.
        b.refuse_inserts("timeline").await;
        let r =
            b.db.write_device_status(vec![
                change("d-2", Some(true), Some(60), 20_000),
                change("d-1", Some(true), None, 20_000),
            ])
            .await;
        assert!(r.is_err(), "{n}: {r:?}");
        let all = b.db.devices(None, None).await.unwrap();
        let states: Vec<_> = all.iter().map(|d| (d.online, d.battery)).collect();
        assert_eq!(
            states,
            [(false, Some(15)), (false, Some(50))],
            "{n}: nothing written"
        );
        b.accept_inserts("timeline").await;
        b.db.write_device_status(vec![change("d-2", Some(true), Some(60), 20_000)])
            .await
            .unwrap();
        let d2 =
            b.db.devices(Some("d-2".into()), None)
                .await
                .unwrap()
                .pop()
                .unwrap();
        assert_eq!(
            (d2.online, d2.battery),
            (true, Some(60)),
            "{n}: the retry lands"
        );
    }
}

// The CRM record: alerts with their timeline entries and outbox rows, care plans, notes, the
// timeline, and the outbox.

const SINKS: [Sink; 2] = [Sink::Fhir, Sink::Webhook];

fn pid(id: &str) -> PatientId {
    PatientId::parse(id).unwrap()
}

fn open(patient: &str, rule: &str, at_ms: i64) -> Effect {
    Effect::Open {
        patient: pid(patient),
        rule_id: rule.into(),
        kind: "threshold",
        severity: Severity::Medium,
        message: format!("{rule} out of range"),
        trigger: None,
        at_ms,
    }
}

fn alert_line(action: &str, patient: &str, id: &str) -> NewAuditLine {
    NewAuditLine {
        target: format!("alert/{id}"),
        ..line(5_000, "nina", action, Some(patient))
    }
}

/// The outbox as `sink event_id status attempts`, oldest first.
async fn outbox(b: &Backend) -> Vec<String> {
    b.rows(
        "SELECT sink || ' ' || event_id || ' ' || status || ' ' || attempts FROM outbox ORDER BY id",
    )
    .await
}

fn kinds(t: &[(String, serde_json::Value)]) -> Vec<&str> {
    t.iter().map(|(k, _)| k.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alerts_life_writes_its_timeline_entries_and_outbox_rows_with_it() {
    for b in backends().await {
        let db = &b.db;
        let n = b.name;
        let events = db
            .apply_effects(vec![open("p-1", "spo2", 1_000)], SINKS.to_vec(), None)
            .await
            .unwrap();
        assert_eq!(events.len(), 1, "{n}");
        let opened = &events[0];
        let id = opened.alert.id.clone();
        assert_eq!(opened.event_type, "alert.opened", "{n}");
        assert_eq!(opened.id, format!("evt_{}_opened", &id[4..]), "{n}");
        let stored = db.alert(id.clone()).await.unwrap().unwrap();
        assert_eq!(stored, opened.alert, "{n}");
        assert_eq!(
            (stored.status, stored.severity, stored.escalations),
            (AlertStatus::Open, Severity::Medium, 0),
            "{n}"
        );
        // Listed without a team filter, which reads no patients table.
        let listed = db
            .alerts(AlertQuery {
                limit: 10,
                ..AlertQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(listed, std::slice::from_ref(&stored), "{n}");
        // The same condition again (the engine restarted): no second alert, no event.
        let again = db
            .apply_effects(vec![open("p-1", "spo2", 2_000)], SINKS.to_vec(), None)
            .await
            .unwrap();
        assert!(again.is_empty(), "{n}: {again:?}");
        let raised = db
            .apply_effects(
                vec![
                    Effect::Raise {
                        patient: pid("p-1"),
                        rule_id: "spo2".into(),
                        severity: Severity::High,
                        message: "spo2 far out of range".into(),
                        at_ms: 3_000,
                    },
                    Effect::Escalate {
                        patient: pid("p-1"),
                        rule_id: "spo2".into(),
                        level: 2,
                        at_ms: 4_000,
                    },
                    // A rule with no alert: nothing to raise.
                    Effect::Raise {
                        patient: pid("p-1"),
                        rule_id: "hr".into(),
                        severity: Severity::High,
                        message: "x".into(),
                        at_ms: 3_000,
                    },
                ],
                SINKS.to_vec(),
                None,
            )
            .await
            .unwrap();
        let ids: Vec<&str> = raised.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                format!("evt_{}_raised_high", &id[4..]),
                format!("evt_{}_escalated_2", &id[4..])
            ],
            "{n}"
        );
        let open_now = db.unresolved_alerts().await.unwrap();
        assert_eq!(open_now.len(), 1, "{n}");
        assert_eq!(
            (
                open_now[0].rule_id.as_str(),
                open_now[0].severity,
                open_now[0].escalations,
                open_now[0].since_ms,
                open_now[0].acknowledged
            ),
            ("spo2", Severity::High, 2, 4_000, false),
            "{n}"
        );
        let resolved = db
            .apply_effects(
                vec![Effect::Resolve {
                    patient: pid("p-1"),
                    rule_id: "spo2".into(),
                    reason: "clear".into(),
                    at_ms: 5_000,
                }],
                SINKS.to_vec(),
                None,
            )
            .await
            .unwrap();
        assert_eq!(resolved[0].alert.status, AlertStatus::Resolved, "{n}");
        assert_eq!(
            resolved[0].alert.resolved_by.as_deref(),
            Some("vigil"),
            "{n}"
        );
        assert!(db.unresolved_alerts().await.unwrap().is_empty(), "{n}");
        assert!(
            db.clinician_resolutions().await.unwrap().is_empty(),
            "{n}: Vigil's own resolution is not a clinician's"
        );
        let t = timeline(&b).await;
        assert_eq!(
            kinds(&t),
            [
                "alert.opened",
                "alert.raised",
                "alert.escalated",
                "alert.resolved"
            ],
            "{n}"
        );
        assert_eq!(t[2].1["level"], 2, "{n}");
        assert_eq!(t[3].1["note"], "clear", "{n}");
        // Every event to both sinks, in order.
        let rows = outbox(&b).await;
        assert_eq!(rows.len(), 8, "{n}: {rows:?}");
        assert!(rows[0].starts_with("fhir evt_"), "{n}: {rows:?}");
        assert!(
            rows.iter().all(|r| r.ends_with(" pending 0")),
            "{n}: {rows:?}"
        );
        // A new alert for the rule once the old one is resolved.
        let reopened = db
            .apply_effects(vec![open("p-1", "spo2", 6_000)], SINKS.to_vec(), None)
            .await
            .unwrap();
        assert_eq!(reopened.len(), 1, "{n}");
        assert_ne!(reopened[0].alert.id, id, "{n}");
        assert!(
            db.alert("alr_nothing".into()).await.unwrap().is_none(),
            "{n}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_are_listed_newest_first_by_status_patient_and_team() {
    for b in backends().await {
        let n = b.name;
        b.add_patient_on("p-1", "default").await;
        b.add_patient_on("p-2", "ward-b").await;
        b.db.apply_effects(
            vec![
                open("p-1", "spo2", 1_000),
                open("p-2", "spo2", 2_000),
                open("p-1", "hr", 3_000),
            ],
            SINKS.to_vec(),
            None,
        )
        .await
        .unwrap();
        let q = |status, patient: Option<&str>, teams: Option<&[&str]>| AlertQuery {
            status,
            patient_id: patient.map(pid),
            teams: teams.map(|t| t.iter().map(|s| s.to_string()).collect()),
            limit: 100,
        };
        let list = |a: Vec<vigil::crm::record::Alert>| {
            a.into_iter()
                .map(|a| format!("{} {}", a.patient_id, a.rule_id))
                .collect::<Vec<_>>()
        };
        let all = b.db.alerts(q(None, None, None)).await.unwrap();
        assert_eq!(list(all.clone()), ["p-1 hr", "p-2 spo2", "p-1 spo2"], "{n}");
        let mine = b.db.alerts(q(None, Some("p-1"), None)).await.unwrap();
        assert_eq!(list(mine), ["p-1 hr", "p-1 spo2"], "{n}");
        let team = b.db.alerts(q(None, None, Some(&["ward-b"]))).await.unwrap();
        assert_eq!(list(team), ["p-2 spo2"], "{n}");
        let none = b.db.alerts(q(None, None, Some(&[]))).await.unwrap();
        assert!(none.is_empty(), "{n}");
        let limited = b.db.alerts(AlertQuery {
            limit: 1,
            ..q(None, None, None)
        });
        assert_eq!(list(limited.await.unwrap()), ["p-1 hr"], "{n}");
        let hr = all[0].id.clone();
        b.db.act_on_alert(
            hr.clone(),
            false,
            "nina".into(),
            None,
            4_000,
            SINKS.to_vec(),
            alert_line("alert.acknowledge", "p-1", &hr),
        )
        .await
        .unwrap();
        let acked = b.db.alerts(q(Some(AlertStatus::Acknowledged), None, None));
        assert_eq!(list(acked.await.unwrap()), ["p-1 hr"], "{n}");
        let opened = b.db.alerts(q(Some(AlertStatus::Open), None, None));
        assert_eq!(list(opened.await.unwrap()), ["p-2 spo2", "p-1 spo2"], "{n}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_is_assigned_and_snoozed_with_its_timeline_and_audit_lines() {
    use vigil::crm::record::Triage;
    for b in backends().await {
        let n = b.name;
        let db = &b.db;
        let opened = db
            .apply_effects(vec![open("p-1", "spo2", 1_000)], SINKS.to_vec(), None)
            .await
            .unwrap();
        let id = opened[0].alert.id.clone();
        let triage = |t: Triage, action: &str| {
            db.triage_alert(
                id.clone(),
                t,
                "nina".into(),
                5_000,
                SINKS.to_vec(),
                alert_line(action, "p-1", &id),
            )
        };
        // Claimed: assigned, still open, no outward event.
        let (a, events) = triage(
            Triage::Assign {
                to: Some("nina".into()),
            },
            "alert.assign",
        )
        .await
        .unwrap();
        assert_eq!(a.assigned_to.as_deref(), Some("nina"), "{n}");
        assert!(a.assigned_at.is_some(), "{n}");
        assert_eq!(a.status, AlertStatus::Open, "{n}");
        assert!(events.is_empty(), "{n}");
        // Snoozed: acknowledged by the snooze, with the acknowledgement's event.
        let snooze = Triage::Snooze {
            until_ms: Some(1_800_000),
            reason: Some("re-measuring in 30 min".into()),
        };
        let (a, events) = triage(snooze, "alert.snooze").await.unwrap();
        assert_eq!(a.status, AlertStatus::Acknowledged, "{n}");
        assert_eq!(
            a.ack_note.as_deref(),
            Some("snoozed: re-measuring in 30 min"),
            "{n}"
        );
        assert_eq!(
            a.snoozed_until.as_deref(),
            Some("1970-01-01T00:30:00Z"),
            "{n}"
        );
        assert_eq!(
            a.snooze_reason.as_deref(),
            Some("re-measuring in 30 min"),
            "{n}"
        );
        assert_eq!(events.len(), 1, "{n}");
        assert_eq!(events[0].event_type, "alert.acknowledged", "{n}");
        // The snooze ended and the alert given to nobody: both read back cleared.
        let end = Triage::Snooze {
            until_ms: None,
            reason: None,
        };
        let (a, events) = triage(end, "alert.snooze").await.unwrap();
        assert_eq!((a.snoozed_until, a.snooze_reason), (None, None), "{n}");
        assert!(
            events.is_empty(),
            "{n}: an acknowledged alert is not acknowledged again"
        );
        let (a, _) = triage(Triage::Assign { to: None }, "alert.assign")
            .await
            .unwrap();
        assert_eq!((a.assigned_to, a.assigned_at), (None, None), "{n}");
        assert_eq!(
            db.alert(id.clone()).await.unwrap().unwrap().status,
            AlertStatus::Acknowledged,
            "{n}"
        );
        assert_eq!(
            kinds(&timeline(&b).await),
            [
                "alert.opened",
                "alert.assigned",
                "alert.acknowledged",
                "alert.snoozed",
                "alert.snoozed",
                "alert.assigned"
            ],
            "{n}"
        );
        assert_eq!(
            audited(&b).await,
            [
                "alert.assign",
                "alert.snooze",
                "alert.snooze",
                "alert.assign"
            ],
            "{n}"
        );
        // A resolved alert can be neither, and nothing more is written.
        db.act_on_alert(
            id.clone(),
            true,
            "nina".into(),
            None,
            6_000,
            SINKS.to_vec(),
            alert_line("alert.resolve", "p-1", &id),
        )
        .await
        .unwrap();
        let r = triage(
            Triage::Assign {
                to: Some("sam".into()),
            },
            "alert.assign",
        )
        .await;
        assert!(
            matches!(&r, Err(AlertActionError::AlreadyResolved(i)) if *i == id),
            "{n}: {r:?}"
        );
        assert_eq!(
            audited(&b).await.len(),
            5,
            "{n}: a refused action is not audited"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clinician_acknowledges_and_resolves_an_alert_once_each_audited() {
    for b in backends().await {
        let n = b.name;
        let db = &b.db;
        let opened = db
            .apply_effects(vec![open("p-1", "spo2", 1_000)], SINKS.to_vec(), None)
            .await
            .unwrap();
        let id = opened[0].alert.id.clone();
        let act = |resolve: bool, note: Option<&str>, action: &str| {
            db.act_on_alert(
                id.clone(),
                resolve,
                "nina".into(),
                note.map(str::to_owned),
                5_000,
                SINKS.to_vec(),
                alert_line(action, "p-1", &id),
            )
        };
        let (alert, events) = act(false, Some("on my way"), "alert.acknowledge")
            .await
            .unwrap();
        assert_eq!(alert.status, AlertStatus::Acknowledged, "{n}");
        assert_eq!(
            (alert.acknowledged_by.as_deref(), alert.ack_note.as_deref()),
            (Some("nina"), Some("on my way")),
            "{n}"
        );
        assert_eq!(events.len(), 1, "{n}");
        assert_eq!(events[0].event_type, "alert.acknowledged", "{n}");
        // FHIR takes no acknowledgement: one row, the webhook's.
        let rows = outbox(&b).await;
        assert_eq!(rows.len(), 3, "{n}: {rows:?}");
        assert!(rows[2].starts_with("webhook "), "{n}: {rows:?}");
        // Acknowledging again changes nothing, and is audited.
        let (again, none) = act(false, None, "alert.acknowledge").await.unwrap();
        assert_eq!(again, alert, "{n}");
        assert!(none.is_empty(), "{n}");
        let (resolved, events) = act(true, Some("treated"), "alert.resolve").await.unwrap();
        assert_eq!(resolved.status, AlertStatus::Resolved, "{n}");
        assert_eq!(resolved.resolved_by.as_deref(), Some("nina"), "{n}");
        assert_eq!(events[0].event_type, "alert.resolved", "{n}");
        let r = act(true, None, "alert.resolve").await;
        assert!(
            matches!(&r, Err(AlertActionError::AlreadyResolved(i)) if *i == id),
            "{n}: {r:?}"
        );
        let r = db
            .act_on_alert(
                "alr_unknown".into(),
                false,
                "nina".into(),
                None,
                5_000,
                SINKS.to_vec(),
                alert_line("alert.acknowledge", "p-1", "alr_unknown"),
            )
            .await;
        assert!(
            matches!(&r, Err(AlertActionError::NotFound(i)) if i == "alr_unknown"),
            "{n}: {r:?}"
        );
        assert_eq!(
            audited(&b).await,
            ["alert.acknowledge", "alert.acknowledge", "alert.resolve"],
            "{n}: a refused action is not audited"
        );
        assert_eq!(
            kinds(&timeline(&b).await),
            ["alert.opened", "alert.acknowledged", "alert.resolved"],
            "{n}"
        );
        let by_clinician = db.clinician_resolutions().await.unwrap();
        assert_eq!(by_clinician.len(), 1, "{n}");
        assert_eq!(
            (by_clinician[0].rule_id.as_str(), by_clinician[0].at_ms),
            ("spo2", 5_000),
            "{n}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_change_and_what_records_it_commit_together_or_not_at_all() {
    for b in backends().await {
        let n = b.name;
        let db = &b.db;
        b.add_patient_on("p-1", "default").await;
        let opened = db
            .apply_effects(vec![open("p-1", "spo2", 1_000)], SINKS.to_vec(), None)
            .await
            .unwrap();
        let id = opened[0].alert.id.clone();
        let plan_before = db.care_plan(pid("p-1")).await.unwrap();
        let rows_before = outbox(&b).await;
        refuse_audit(&b).await;
        for resolve in [false, true] {
            let r = db
                .act_on_alert(
                    id.clone(),
                    resolve,
                    "nina".into(),
                    None,
                    5_000,
                    SINKS.to_vec(),
                    alert_line("alert.resolve", "p-1", &id),
                )
                .await;
            assert!(
                matches!(&r, Err(AlertActionError::Registry(_))),
                "{n}: {r:?}"
            );
        }
        let mut plan = CarePlan::default_plan();
        plan.rules.truncate(1);
        let r = db
            .set_care_plan(
                pid("p-1"),
                plan,
                "nina".into(),
                5_000,
                Some(line(5_000, "nina", "care_plan.update", Some("p-1"))),
            )
            .await;
        assert!(r.is_err(), "{n}: {r:?}");
        let r = db
            .add_note(
                pid("p-1"),
                "nina".into(),
                "called".into(),
                5_000,
                line(5_000, "nina", "note.create", Some("p-1")),
            )
            .await;
        assert!(r.is_err(), "{n}: {r:?}");
        b.accept_inserts("audit").await;
        assert_eq!(
            db.alert(id.clone()).await.unwrap().unwrap(),
            opened[0].alert,
            "{n}: the alert is unchanged"
        );
        assert_eq!(db.care_plan(pid("p-1")).await.unwrap(), plan_before, "{n}");
        assert_eq!(kinds(&timeline(&b).await), ["alert.opened"], "{n}");
        assert_eq!(outbox(&b).await, rows_before, "{n}");
        assert!(audited(&b).await.is_empty(), "{n}");
        // An effect whose outbox row cannot be written leaves no alert and no entry either.
        b.refuse_inserts("outbox").await;
        let r = db
            .apply_effects(vec![open("p-1", "hr", 2_000)], SINKS.to_vec(), None)
            .await;
        assert!(r.is_err(), "{n}: {r:?}");
        b.accept_inserts("outbox").await;
        assert_eq!(db.unresolved_alerts().await.unwrap().len(), 1, "{n}");
        assert_eq!(kinds(&timeline(&b).await), ["alert.opened"], "{n}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_opens_of_one_rule_open_one_alert() {
    const TASKS: i64 = 16;
    const PATIENTS: i64 = 4;
    for b in backends().await {
        let n = b.name;
        let tasks: Vec<_> = (0..TASKS * PATIENTS)
            .map(|i| {
                let db = b.db.clone();
                tokio::spawn(async move {
                    let patient = format!("p-{}", i % PATIENTS);
                    db.apply_effects(vec![open(&patient, "spo2", i)], SINKS.to_vec(), None)
                        .await
                })
            })
            .collect();
        let mut opened = 0;
        for t in tasks {
            opened += t.await.unwrap().unwrap().len();
        }
        assert_eq!(opened as i64, PATIENTS, "{n}: one alert.opened per patient");
        assert_eq!(
            b.db.unresolved_alerts().await.unwrap().len() as i64,
            PATIENTS,
            "{n}"
        );
        assert_eq!(timeline(&b).await.len() as i64, PATIENTS, "{n}");
        assert_eq!(outbox(&b).await.len() as i64, 2 * PATIENTS, "{n}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn care_plans_notes_and_the_timeline_read_back_as_written() {
    for b in backends().await {
        let n = b.name;
        let db = &b.db;
        b.add_patient_on("p-1", "default").await;
        b.add_patient_on("p-2", "default").await;
        assert_eq!(db.care_plan(pid("p-1")).await.unwrap(), None, "{n}");
        let mut plan = CarePlan::default_plan();
        plan.rules.truncate(2);
        db.set_care_plan(
            pid("p-1"),
            plan.clone(),
            "nina".into(),
            1_000,
            Some(line(1_000, "nina", "care_plan.update", Some("p-1"))),
        )
        .await
        .unwrap();
        assert_eq!(
            db.care_plan(pid("p-1")).await.unwrap(),
            Some(plan.clone()),
            "{n}"
        );
        plan.rules.truncate(1);
        db.set_care_plan(pid("p-1"), plan.clone(), "omar".into(), 2_000, None)
            .await
            .unwrap();
        assert_eq!(
            db.care_plan(pid("p-1")).await.unwrap(),
            Some(plan.clone()),
            "{n}"
        );
        let mut all = db.all_plans().await.unwrap();
        all.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        assert_eq!(
            all,
            [(pid("p-1"), Some(plan.clone())), (pid("p-2"), None)],
            "{n}"
        );
        let r = db
            .set_care_plan(pid("nobody"), plan.clone(), "nina".into(), 1, None)
            .await;
        assert!(
            matches!(&r, Err(RegistryError::NotFound(m)) if m == "patient nobody"),
            "{n}: {r:?}"
        );
        let note = db
            .add_note(
                pid("p-1"),
                "nina".into(),
                "called the patient".into(),
                3_000,
                line(3_000, "nina", "note.create", Some("p-1")),
            )
            .await
            .unwrap();
        assert_eq!((note.time_ms, note.kind.as_str()), (3_000, "note"), "{n}");
        let shown = note.to_json();
        assert_eq!(
            (shown["by"].clone(), shown["text"].clone()),
            (
                serde_json::json!("nina"),
                serde_json::json!("called the patient")
            ),
            "{n}"
        );
        let r = db
            .add_note(
                pid("nobody"),
                "nina".into(),
                "x".into(),
                3_000,
                line(3_000, "nina", "note.create", Some("nobody")),
            )
            .await;
        assert!(matches!(&r, Err(RegistryError::NotFound(_))), "{n}: {r:?}");
        db.add_timeline(
            pid("p-1"),
            "device.paired".into(),
            r#"{"device_id":"d1"}"#.into(),
            3_000,
        )
        .await
        .unwrap();
        db.add_timeline(pid("p-2"), "note".into(), "{}".into(), 3_500)
            .await
            .unwrap();
        assert_eq!(
            audited(&b).await,
            ["care_plan.update", "note.create"],
            "{n}"
        );
        let t = db.timeline(pid("p-1"), i64::MAX, 100).await.unwrap();
        let seen: Vec<(i64, &str)> = t.iter().map(|e| (e.time_ms, e.kind.as_str())).collect();
        assert_eq!(
            seen,
            [
                (3_000, "device.paired"),
                (3_000, "note"),
                (2_000, "care_plan.updated"),
                (1_000, "care_plan.updated")
            ],
            "{n}: newest first, then the later entry first"
        );
        assert_eq!(t[1], note, "{n}");
        let updated: serde_json::Value = serde_json::from_str(&t[2].data).unwrap();
        assert_eq!(updated["by"], "omar", "{n}");
        assert_eq!(updated["rules"].as_array().unwrap().len(), 1, "{n}");
        let before = db.timeline(pid("p-1"), 3_000, 1).await.unwrap();
        assert_eq!(before.len(), 1, "{n}");
        assert_eq!(before[0].time_ms, 2_000, "{n}");
        assert!(
            db.timeline(pid("p-9"), i64::MAX, 10)
                .await
                .unwrap()
                .is_empty(),
            "{n}"
        );
    }
}

fn reading(n: u32, patient: &str) -> QueuedReading {
    QueuedReading {
        event_id: format!("rdg_{n}"),
        patient_id: patient.into(),
        payload: format!("{{\"n\":{n}}}"),
    }
}

fn settled(id: i64, status: &'static str, next_ms: i64, delete: bool) -> Settled {
    Settled {
        id,
        status,
        next_ms,
        error: (status != "delivered").then(|| "503 from the receiver".to_owned()),
        delete,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbox_row_is_delivered_once_settled_once_and_retried_with_a_new_window() {
    for b in backends().await {
        let n = b.name;
        let db = &b.db;
        db.apply_effects(
            vec![open("p-1", "spo2", 1_000), open("p-2", "spo2", 1_000)],
            SINKS.to_vec(),
            None,
        )
        .await
        .unwrap();
        assert_eq!(
            db.queue_readings("fhir", vec![reading(1, "p-1"), reading(2, "p-1")], 1_000)
                .await
                .unwrap(),
            2,
            "{n}"
        );
        assert_eq!(
            db.queue_readings("fhir", vec![reading(2, "p-1"), reading(3, "p-2")], 2_000)
                .await
                .unwrap(),
            1,
            "{n}: a reading queued already is left as it is"
        );
        assert_eq!(db.outbox_depth("fhir").await.unwrap(), 5, "{n}");
        assert_eq!(db.outbox_waiting_readings("fhir").await.unwrap(), 3, "{n}");
        assert_eq!(
            db.outbox_next_reading_ms("fhir").await.unwrap(),
            Some(1_000),
            "{n}"
        );
        assert_eq!(
            db.outbox_next_reading_ms("webhook").await.unwrap(),
            None,
            "{n}"
        );
        let events = db.outbox_pending("fhir", Lane::Events, 10).await.unwrap();
        assert_eq!(events.len(), 2, "{n}");
        assert!(
            events.iter().all(|(r, _)| r.event_type == "alert.opened"),
            "{n}"
        );
        assert!(events[0].0.id < events[1].0.id, "{n}: in order");
        let due = db
            .outbox_pending("fhir", Lane::Readings { now_ms: 1_500 }, 10)
            .await
            .unwrap();
        let due_ids: Vec<&str> = due.iter().map(|(r, _)| r.event_id.as_str()).collect();
        assert_eq!(
            due_ids,
            ["rdg_1", "rdg_2"],
            "{n}: only readings due by then"
        );
        assert!(due.iter().all(|(r, _)| r.event_type == READING), "{n}");
        // The first event delivered, the second failed; readings: one delivered (deleted),
        // one tried again later.
        let (first, second) = (events[0].0.id, events[1].0.id);
        db.outbox_settle(
            vec![
                settled(first, "delivered", 0, false),
                settled(second, "failed", 0, false),
                settled(due[0].0.id, "delivered", 0, true),
                settled(due[1].0.id, "pending", 9_000, false),
            ],
            3_000,
        )
        .await
        .unwrap();
        // The same outcomes again (a worker that retried its settle): nothing changes.
        db.outbox_settle(
            vec![
                settled(first, "delivered", 0, false),
                settled(second, "failed", 0, false),
                settled(due[0].0.id, "delivered", 0, true),
            ],
            4_000,
        )
        .await
        .unwrap();
        let pending = db.outbox_pending("fhir", Lane::Events, 10).await.unwrap();
        assert!(
            pending.is_empty(),
            "{n}: a settled event is not delivered again"
        );
        let all = db
            .deliveries(None, Some("fhir".into()), None, 100)
            .await
            .unwrap();
        let shown: Vec<(&str, &str, u32, Option<&str>)> = all
            .iter()
            .map(|d| {
                (
                    d.event_id.as_str(),
                    d.status.as_str(),
                    d.attempts,
                    d.done_at.as_deref(),
                )
            })
            .collect();
        let done = vigil::domain::format_rfc3339(3_000);
        assert_eq!(
            shown,
            [
                ("rdg_3", "pending", 0, None),
                ("rdg_2", "pending", 1, None),
                (
                    events[1].0.event_id.as_str(),
                    "failed",
                    1,
                    Some(done.as_str())
                ),
                (
                    events[0].0.event_id.as_str(),
                    "delivered",
                    1,
                    Some(done.as_str())
                ),
            ],
            "{n}: newest first; settled once; the delivered reading is gone"
        );
        assert_eq!(
            all[1].last_error.as_deref(),
            Some("503 from the receiver"),
            "{n}"
        );
        let failed = db
            .deliveries(Some("failed".into()), None, Some("p-2".into()), 100)
            .await
            .unwrap();
        assert_eq!(failed.len(), 1, "{n}");
        assert_eq!(failed[0].patient_id, "p-2", "{n}");
        // Retry: due now, a new window, the attempts before it kept.
        assert!(db.retry_delivery(second, 10_000).await.unwrap(), "{n}");
        assert!(
            !db.retry_delivery(second, 10_000).await.unwrap(),
            "{n}: not failed now"
        );
        assert!(
            !db.retry_delivery(first, 10_000).await.unwrap(),
            "{n}: delivered"
        );
        assert!(!db.retry_delivery(999_999, 10_000).await.unwrap(), "{n}");
        let again = db.outbox_pending("fhir", Lane::Events, 10).await.unwrap();
        assert_eq!(again.len(), 1, "{n}");
        let (row, due_ms) = &again[0];
        assert_eq!(
            (
                row.id,
                *due_ms,
                row.attempts,
                row.window_ms,
                row.window_attempts
            ),
            (second, 10_000, 1, 10_000, 0),
            "{n}"
        );
        let d = db.deliveries(None, None, None, 100).await.unwrap();
        let d: Vec<_> = d.into_iter().filter(|d| d.id == second).collect();
        assert_eq!(
            d[0].retried_at,
            Some(vigil::domain::format_rfc3339(10_000)),
            "{n}"
        );
        // Every failed delivery of a patient, of one sink or all.
        db.outbox_settle(vec![settled(second, "failed", 0, false)], 11_000)
            .await
            .unwrap();
        let webhook_rows = db
            .outbox_pending("webhook", Lane::Events, 10)
            .await
            .unwrap();
        let outcomes = webhook_rows
            .iter()
            .map(|(r, _)| settled(r.id, "failed", 0, false))
            .collect();
        db.outbox_settle(outcomes, 11_000).await.unwrap();
        assert_eq!(
            db.retry_deliveries("p-2".into(), Some("fhir".into()), 12_000)
                .await
                .unwrap(),
            1,
            "{n}"
        );
        assert_eq!(
            db.retry_deliveries("p-2".into(), None, 12_000)
                .await
                .unwrap(),
            1,
            "{n}: the webhook's row of p-2 left"
        );
        assert_eq!(
            db.retry_deliveries("p-1".into(), None, 12_000)
                .await
                .unwrap(),
            1,
            "{n}"
        );
        assert_eq!(db.outbox_depth("webhook").await.unwrap(), 2, "{n}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_resolutions_resolve_an_alert_once() {
    const ALERTS: i64 = 8;
    const TASKS: i64 = 6;
    for b in backends().await {
        let n = b.name;
        let opens = (0..ALERTS)
            .map(|i| open(&format!("p-{i}"), "spo2", i))
            .collect();
        let opened =
            b.db.apply_effects(opens, SINKS.to_vec(), None)
                .await
                .unwrap();
        let ids: Vec<(String, String)> = opened
            .iter()
            .map(|e| (e.alert.id.clone(), e.patient_id.clone()))
            .collect();
        let tasks: Vec<_> = (0..ALERTS * TASKS)
            .map(|i| {
                let db = b.db.clone();
                let (id, patient) = ids[(i % ALERTS) as usize].clone();
                tokio::spawn(async move {
                    db.act_on_alert(
                        id.clone(),
                        true,
                        format!("clinician-{i}"),
                        None,
                        5_000,
                        SINKS.to_vec(),
                        alert_line("alert.resolve", &patient, &id),
                    )
                    .await
                })
            })
            .collect();
        let (mut resolved, mut refused) = (0, 0);
        for t in tasks {
            match t.await.unwrap() {
                Ok((alert, events)) => {
                    assert_eq!(alert.status, AlertStatus::Resolved, "{n}");
                    assert_eq!(events.len(), 1, "{n}");
                    resolved += 1;
                }
                Err(AlertActionError::AlreadyResolved(_)) => refused += 1,
                Err(e) => panic!("{n}: {e}"),
            }
        }
        assert_eq!((resolved, refused), (ALERTS, ALERTS * (TASKS - 1)), "{n}");
        let t = timeline(&b).await;
        let resolutions = t.iter().filter(|(k, _)| k == "alert.resolved").count();
        assert_eq!(resolutions as i64, ALERTS, "{n}: one alert.resolved each");
        assert_eq!(
            audited(&b).await.len() as i64,
            ALERTS,
            "{n}: each resolution audited once"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patients_no_clinician_sees_are_listed_with_their_open_alerts() {
    use vigil::registry::UnseenReason;
    for b in backends().await {
        let (n, db) = (b.name, &b.db);
        // North has a clinician; south has only an admin; the default team nobody.
        b.add_patient_on("p-north", "north").await;
        b.add_patient_on("p-south", "south").await;
        b.add_patient_on("p-default", "default").await;
        db.create_user(new_user("nina", Role::Clinician, &["north"]), None)
            .await
            .unwrap();
        db.create_user(new_user("adam", Role::Admin, &["south"]), None)
            .await
            .unwrap();
        db.apply_effects(
            vec![open("p-south", "spo2", 1_000), open("p-south", "hr", 1_000)],
            SINKS.to_vec(),
            None,
        )
        .await
        .unwrap();
        let unseen = db.unseen_patients().await.unwrap();
        let got: Vec<(&str, Option<&str>, UnseenReason, u64)> = unseen
            .iter()
            .map(|u| {
                (
                    u.id.as_str(),
                    u.care_team.as_deref(),
                    u.reason,
                    u.open_alerts,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("p-south", Some("south"), UnseenReason::NoClinician, 2),
                ("p-default", Some("default"), UnseenReason::NoClinician, 0),
            ],
            "{n}: the most open alerts first; north's clinician sees p-north"
        );
        // A clinician joins south: only the default team's patient is left.
        db.create_user(new_user("sam", Role::Clinician, &["south"]), None)
            .await
            .unwrap();
        let ids: Vec<String> = db
            .unseen_patients()
            .await
            .unwrap()
            .into_iter()
            .map(|u| u.id)
            .collect();
        assert_eq!(ids, ["p-default"], "{n}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_held_by_instances_that_are_gone_go_offline_and_the_rest_stay() {
    for b in backends().await {
        let n = b.name;
        b.add_patient("p-1").await;
        for (id, seed) in [("d-1", 1), ("d-2", 2), ("d-3", 3)] {
            b.db.create_device(new_device(id, "p-1", seed), None)
                .await
                .unwrap();
        }
        let on = |id: &str, instance: &str| StatusChange {
            id: id.into(),
            online: Some(true),
            battery: Some(80),
            at_ms: 10_000,
            instance: instance.into(),
        };
        b.db.write_device_status(vec![
            on("d-1", "vigil-a"),
            on("d-2", "vigil-b"),
            on("d-3", "vigil-c"),
        ])
        .await
        .unwrap();
        // vigil-a restarted (as a new instance) and vigil-c died; vigil-b lives on.
        let marked =
            b.db.mark_offline_unless_held_by(vec!["vigil-b".into(), "vigil-new".into()])
                .await
                .unwrap();
        assert_eq!(marked, 2, "{n}");
        let devices = b.db.devices(None, None).await.unwrap();
        let got: Vec<_> = devices
            .iter()
            .map(|d| (d.id.as_str(), d.online, d.battery, d.last_seen.is_some()))
            .collect();
        assert_eq!(
            got,
            [
                ("d-1", false, Some(80), true),
                ("d-2", true, Some(80), true),
                ("d-3", false, Some(80), true)
            ],
            "{n}: the gone instances' devices offline, the battery and the last time seen kept"
        );
    }
}

/// A device that reconnected to another instance stays online when the instance it left
/// reports it gone; only the instance holding it takes it offline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_moved_to_another_instance_is_not_taken_offline_by_the_one_it_left() {
    for b in backends().await {
        let n = b.name;
        b.add_patient("p-1").await;
        b.db.create_device(new_device("d-1", "p-1", 1), None)
            .await
            .unwrap();
        let change = |online: bool, instance: &str, at_ms: i64| StatusChange {
            id: "d-1".into(),
            online: Some(online),
            battery: None,
            at_ms,
            instance: instance.into(),
        };
        let online = |w: Vec<vigil::registry::devices::DeviceStatus>| w[0].online;
        assert!(online(
            b.db.write_device_status(vec![change(true, "vigil-a", 1)])
                .await
                .unwrap()
        ));
        assert!(online(
            b.db.write_device_status(vec![change(true, "vigil-b", 2)])
                .await
                .unwrap()
        ));
        // vigil-a sees its old connection end after the device moved to vigil-b.
        assert!(
            online(
                b.db.write_device_status(vec![change(false, "vigil-a", 3)])
                    .await
                    .unwrap()
            ),
            "{n}: still online, held by vigil-b"
        );
        assert_eq!(
            b.db.mark_offline_unless_held_by(vec!["vigil-b".into()])
                .await
                .unwrap(),
            0,
            "{n}: held by a live instance"
        );
        assert!(
            !online(
                b.db.write_device_status(vec![change(false, "vigil-b", 4)])
                    .await
                    .unwrap()
            ),
            "{n}"
        );
        let kinds = b
            .rows("SELECT kind FROM timeline WHERE kind LIKE 'device.%' ORDER BY id")
            .await;
        assert_eq!(
            kinds,
            ["device.online", "device.offline"],
            "{n}: one of each"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_leases_of_a_kind_are_those_held_now() {
    for b in backends().await {
        let (n, db) = (b.name, &b.db);
        for (name, holder, ttl) in [
            ("instance:a", "a", 10_000),
            ("instance:b", "b", 1_000),
            ("instance:c", "c", 10_000),
            ("retention", "a", 10_000),
        ] {
            db.acquire_lease(name.into(), holder.into(), 0, ttl)
                .await
                .unwrap()
                .unwrap();
        }
        let c = db.lease("instance:c".into()).await.unwrap().unwrap();
        assert!(db.release_lease(c.name, c.holder, c.epoch).await.unwrap());
        let live: Vec<String> = db
            .live_leases("instance:".into(), 5_000)
            .await
            .unwrap()
            .into_iter()
            .map(|l| l.holder)
            .collect();
        assert_eq!(
            live,
            ["a"],
            "{n}: b lapsed, c given up, retention another kind"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_has_one_holder_until_it_expires_or_is_given_up() {
    for b in backends().await {
        let (n, db) = (b.name, &b.db);
        let take =
            |holder: &str, now: i64| db.acquire_lease("job".into(), holder.into(), now, 10_000);
        let held = |l: Option<Lease>| l.map(|l| (l.holder, l.epoch, l.expires_ms));
        assert_eq!(
            held(take("a", 1_000).await.unwrap()),
            Some(("a".into(), 1, 11_000)),
            "{n}"
        );
        assert_eq!(take("b", 2_000).await.unwrap(), None, "{n}: a holds it");
        assert_eq!(
            held(take("a", 5_000).await.unwrap()),
            Some(("a".into(), 1, 15_000)),
            "{n}: renewed at the same epoch"
        );
        assert_eq!(
            held(take("b", 15_000).await.unwrap()),
            Some(("b".into(), 2, 25_000)),
            "{n}: expired, so b takes it at the next epoch"
        );
        assert_eq!(take("a", 16_000).await.unwrap(), None, "{n}: a lost it");
        // Only the holder, at its epoch, gives it up.
        assert!(
            !db.release_lease("job".into(), "a".into(), 2).await.unwrap(),
            "{n}"
        );
        assert!(
            !db.release_lease("job".into(), "b".into(), 1).await.unwrap(),
            "{n}"
        );
        assert!(
            db.release_lease("job".into(), "b".into(), 2).await.unwrap(),
            "{n}"
        );
        assert_eq!(
            held(take("a", 17_000).await.unwrap()),
            Some(("a".into(), 3, 27_000)),
            "{n}: given up, so free at once"
        );
        // A holder that let its lease lapse starts a new epoch: what it began before is stale.
        assert_eq!(
            held(take("a", 40_000).await.unwrap()),
            Some(("a".into(), 4, 50_000)),
            "{n}"
        );
        assert_eq!(
            held(db.lease("job".into()).await.unwrap()),
            Some(("a".into(), 4, 50_000)),
            "{n}"
        );
        assert_eq!(db.lease("other".into()).await.unwrap(), None, "{n}");
        // Leases are independent of each other.
        assert_eq!(
            held(
                db.acquire_lease("other".into(), "b".into(), 40_000, 5_000)
                    .await
                    .unwrap()
            ),
            Some(("b".into(), 1, 45_000)),
            "{n}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_many_instances_asking_at_once_one_gets_the_lease() {
    for b in backends().await {
        let n = b.name;
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let db = b.db.clone();
                tokio::spawn(async move {
                    db.acquire_lease("outbox:fhir".into(), format!("instance-{i}"), 1_000, 30_000)
                        .await
                })
            })
            .collect();
        let mut winners = Vec::new();
        for t in tasks {
            if let Some(l) = t.await.unwrap().unwrap() {
                winners.push(l);
            }
        }
        assert_eq!(winners.len(), 1, "{n}: {winners:?}");
        assert_eq!(winners[0].epoch, 1, "{n}");
        let stored = b.db.lease("outbox:fhir".into()).await.unwrap().unwrap();
        assert_eq!(stored, winners[0], "{n}");
    }
}

/// An alert write under a lease lands only while its writer holds the lease at the epoch it
/// wrote under: a former holder whose lease lapsed — taken by another or not — writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_write_fenced_by_a_lease_lands_only_while_it_is_held() {
    use vigil::registry::RegistryError;
    for b in backends().await {
        let (n, db) = (b.name, &b.db);
        let name = "alerts:3".to_owned();
        let a = db
            .acquire_lease(name.clone(), "a".into(), 1_000, 5_000)
            .await
            .unwrap()
            .unwrap();
        let written = db
            .apply_effects(
                vec![open("p-1", "spo2", 2_000)],
                SINKS.to_vec(),
                Some(a.fence(2_000)),
            )
            .await
            .unwrap();
        assert_eq!(written.len(), 1, "{n}: held, so written");
        // Lapsed, nobody else has it yet: still refused (the writer cannot know it is safe).
        let lapsed = db
            .apply_effects(
                vec![open("p-1", "hr", 6_000)],
                SINKS.to_vec(),
                Some(a.fence(6_000)),
            )
            .await;
        assert!(
            matches!(lapsed, Err(RegistryError::Fenced(ref l)) if *l == name),
            "{n}: {lapsed:?}"
        );
        // Another instance takes it; the former holder's write, made as if its clock lagged,
        // is refused by the epoch alone.
        let b2 = db
            .acquire_lease(name.clone(), "b".into(), 6_001, 5_000)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(b2.epoch, a.epoch + 1, "{n}");
        let stale = db
            .apply_effects(
                vec![open("p-1", "hr", 3_000)],
                SINKS.to_vec(),
                Some(a.fence(3_000)),
            )
            .await;
        assert!(
            matches!(stale, Err(RegistryError::Fenced(_))),
            "{n}: {stale:?}"
        );
        let theirs = db
            .apply_effects(
                vec![open("p-1", "hr", 7_000)],
                SINKS.to_vec(),
                Some(b2.fence(7_000)),
            )
            .await
            .unwrap();
        assert_eq!(theirs.len(), 1, "{n}");
        assert_eq!(
            b.rows("SELECT rule_id FROM alerts ORDER BY opened_ms")
                .await,
            ["spo2", "hr"],
            "{n}: nothing of the refused writes"
        );
        assert_eq!(
            b.rows("SELECT count(*) FROM outbox").await,
            [(2 * SINKS.len()).to_string()],
            "{n}: no outbox row of the refused writes"
        );
    }
}

/// A care plan set and an alert acknowledged or resolved through any instance are written, on
/// PostgreSQL, as notices for the holder of the patient's alert partition, read back by
/// partition up to a horizon and in commit order; SQLite (one instance, told directly) has none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peoples_changes_reach_the_holder_of_the_patients_partition() {
    use vigil::alerts::rules::CarePlan;
    use vigil::domain::partition::alert_partition;
    use vigil::registry::record::{CommittedPlan, EngineNotice};
    for b in backends().await {
        let (n, db) = (b.name, &b.db);
        b.add_patient("p-1").await;
        b.add_patient("p-2").await;
        let part = alert_partition(&pid("p-1"));
        let other = alert_partition(&pid("p-2"));
        assert_ne!(part, other, "the test needs two partitions");
        let horizon = || async {
            match n {
                "postgres" => b
                    .rows("SELECT pg_snapshot_xmin(pg_current_snapshot())::text")
                    .await[0]
                    .parse::<i64>()
                    .unwrap(),
                _ => 0,
            }
        };
        let from = horizon().await;
        db.set_care_plan(
            pid("p-1"),
            CarePlan::default_plan(),
            "nina".into(),
            1_000,
            None,
        )
        .await
        .unwrap();
        db.set_care_plan(
            pid("p-2"),
            CarePlan::default_plan(),
            "nina".into(),
            1_000,
            None,
        )
        .await
        .unwrap();
        let opened = db
            .apply_effects(vec![open("p-1", "spo2", 2_000)], SINKS.to_vec(), None)
            .await
            .unwrap();
        let id = opened[0].alert.id.clone();
        for resolve in [false, true] {
            db.act_on_alert(
                id.clone(),
                resolve,
                "nina".into(),
                None,
                3_000,
                SINKS.to_vec(),
                line(3_000, "nina", "alert.act", Some("p-1")),
            )
            .await
            .unwrap();
        }
        let until = horizon().await;
        let read = db.engine_notices(vec![part], from, until).await.unwrap();
        let kinds: Vec<(String, EngineNotice)> = read
            .iter()
            .map(|r| (r.patient.as_str().to_owned(), r.notice.clone()))
            .collect();
        if n == "sqlite" {
            assert!(kinds.is_empty(), "{n}: {kinds:?}");
            continue;
        }
        assert_eq!(
            kinds,
            [
                (
                    "p-1".to_owned(),
                    EngineNotice::PlanChanged(CommittedPlan::Is(Some(CarePlan::default_plan())))
                ),
                (
                    "p-1".to_owned(),
                    EngineNotice::Acknowledged {
                        rule_id: "spo2".into()
                    }
                ),
                (
                    "p-1".to_owned(),
                    EngineNotice::Resolved {
                        rule_id: "spo2".into()
                    }
                ),
            ],
            "{n}: the partition's, in commit order"
        );
        assert!(read.windows(2).all(|w| w[0].tx < w[1].tx), "{n}");
        assert!(
            db.engine_notices(vec![part], until, horizon().await)
                .await
                .unwrap()
                .is_empty(),
            "{n}: nothing twice"
        );
        assert_eq!(
            db.engine_notices(vec![other], from, until)
                .await
                .unwrap()
                .len(),
            1,
            "{n}: p-2's plan, in its own partition"
        );
        assert_eq!(db.prune_engine_notices(2_000).await.unwrap(), 2, "{n}");
    }
}

/// Failed authentications counted across instances: failures count up, concurrently too; a
/// failure after the forget window counts from one; a success clears the count; the counts
/// read back in (time, key) order, page after page; old ones are pruned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_counts_add_up_clear_on_success_and_read_back_in_order() {
    use vigil::registry::throttles::FailureReport;
    let report = |key: &str, failed, at_ms| FailureReport {
        key: key.into(),
        failed,
        at_ms,
        forget_ms: 60_000,
    };
    for b in backends().await {
        let (n, db) = (b.name, &b.db);
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let db = b.db.clone();
                let r = report("sign-in/user:ann", true, 1_000 + i);
                tokio::spawn(async move { db.report_failures(vec![r]).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let counts = db
            .report_failures(vec![
                report("sign-in/user:ann", true, 2_000),
                report("sign-in/addr:10.0.0.1", true, 2_000),
            ])
            .await
            .unwrap();
        assert_eq!(
            counts
                .iter()
                .map(|c| (c.key.as_str(), c.count, c.last_ms))
                .collect::<Vec<_>>(),
            [
                ("sign-in/user:ann", 9, 2_000),
                ("sign-in/addr:10.0.0.1", 1, 2_000)
            ],
            "{n}: every failure counted, concurrent ones too"
        );
        // A report older than the stored one keeps the later time.
        let c = db
            .report_failures(vec![report("sign-in/user:ann", true, 1_500)])
            .await
            .unwrap();
        assert_eq!((c[0].count, c[0].last_ms), (10, 2_000), "{n}");
        let c = db
            .report_failures(vec![report("sign-in/user:ann", true, 2_000 + 60_000)])
            .await
            .unwrap();
        assert_eq!(
            c[0].count, 1,
            "{n}: forgotten after its window, counted from one"
        );
        let c = db
            .report_failures(vec![report("sign-in/user:ann", false, 70_000)])
            .await
            .unwrap();
        assert_eq!(
            (c[0].count, c[0].last_ms),
            (0, 70_000),
            "{n}: a success clears"
        );

        for i in 0..5 {
            db.report_failures(vec![report(
                &format!("mqtt-address/10.0.1.{i}"),
                true,
                80_000,
            )])
            .await
            .unwrap();
        }
        let all = db.failures_after(0, String::new(), 100).await.unwrap();
        let keys: Vec<_> = all.iter().map(|c| (c.last_ms, c.key.clone())).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted, "{n}: in (time, key) order");
        assert_eq!(all.len(), 7, "{n}");
        let first = db.failures_after(80_000, String::new(), 2).await.unwrap();
        assert_eq!(first.len(), 2, "{n}");
        let next = db
            .failures_after(80_000, first[1].key.clone(), 100)
            .await
            .unwrap();
        assert_eq!(next.len(), 3, "{n}: the page after the last row read");
        assert!(next.iter().all(|c| c.key > first[1].key), "{n}");

        assert_eq!(db.prune_failures(70_000).await.unwrap(), 1, "{n}");
        assert_eq!(
            db.failures_after(0, String::new(), 100)
                .await
                .unwrap()
                .len(),
            6,
            "{n}"
        );
    }
}

/// A visit's call is hosted by the first instance to ask; the others are told where it is
/// while that instance's heartbeat is held, and may host it once it lapses. Of many asking at
/// once, one hosts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visit_is_hosted_by_one_live_instance() {
    use vigil::registry::lease::instance_lease;
    use vigil::registry::visits::VisitHost;
    let host = |i: &str| VisitHost {
        instance: i.into(),
        url: format!("http://{i}:8080"),
    };
    for b in backends().await {
        let (n, db) = (b.name, &b.db);
        b.add_patient("p-1").await;
        db.create_visit(new_visit(0, "p-1"), visit_line("visit.create", 0))
            .await
            .unwrap();
        assert_eq!(
            db.host_visit("vis_nothing".into(), host("a"), 1_000)
                .await
                .unwrap(),
            None,
            "{n}: no such visit"
        );
        for i in ["a", "b", "c"] {
            db.acquire_lease(instance_lease(i), i.into(), 1_000, 15_000)
                .await
                .unwrap()
                .unwrap();
        }
        let tasks: Vec<_> = ["a", "b", "c", "a", "b", "c"]
            .into_iter()
            .map(|i| {
                let db = b.db.clone();
                tokio::spawn(async move { db.host_visit(visit_id(0), host(i), 2_000).await })
            })
            .collect();
        let mut hosts = std::collections::HashSet::new();
        for t in tasks {
            hosts.insert(t.await.unwrap().unwrap().unwrap());
        }
        assert_eq!(hosts.len(), 1, "{n}: one host, told to all: {hosts:?}");
        let first = hosts.into_iter().next().unwrap();
        let other = if first.instance == "a" { "b" } else { "a" };
        assert_eq!(
            db.host_visit(visit_id(0), host(other), 3_000)
                .await
                .unwrap(),
            Some(first.clone()),
            "{n}: the host stays while it lives"
        );
        // Its heartbeat lapses: the next to ask hosts the call.
        assert_eq!(
            db.host_visit(visit_id(0), host(other), 20_000)
                .await
                .unwrap(),
            Some(host(other)),
            "{n}"
        );
    }
}

/// A shared secret is the first candidate stored, whoever asks after, concurrently too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_secret_is_the_first_one_stored() {
    for b in backends().await {
        let n = b.name;
        let tasks: Vec<_> = (0u8..8)
            .map(|i| {
                let db = b.db.clone();
                tokio::spawn(async move {
                    db.shared_secret("visit-signing".into(), vec![i; 32], 1_000)
                        .await
                })
            })
            .collect();
        let mut got = std::collections::HashSet::new();
        for t in tasks {
            got.insert(t.await.unwrap().unwrap());
        }
        assert_eq!(got.len(), 1, "{n}: every instance the same secret");
        let stored = got.into_iter().next().unwrap();
        assert_eq!(stored.len(), 32, "{n}");
        assert_eq!(
            b.db.shared_secret("visit-signing".into(), vec![99; 32], 2_000)
                .await
                .unwrap(),
            stored,
            "{n}"
        );
        assert_eq!(
            b.db.shared_secret("other".into(), vec![5; 32], 2_000)
                .await
                .unwrap(),
            vec![5; 32],
            "{n}: secrets by name"
        );
    }
}

/// The care programme: the built-in programmes are there and admins add more (an id once);
/// an enrollment episode is put with its timeline entry and audit line, changed by its start
/// date, and refused — with nothing written — for an unknown patient or programme or when it
/// would overlap another episode; episodes read back latest first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn programmes_and_enrollment_episodes_read_back_as_put() {
    use vigil::registry::RegistryError;
    use vigil::registry::enrollment::{EnrollmentBody, Programme};
    let episode = |start: &str, end: Option<&str>, program: &str, at_ms: i64| {
        let body: EnrollmentBody = serde_json::from_value(serde_json::json!({
            "program": program, "start": start, "end": end, "practitioner": "Dr Rao",
            "diagnoses": ["I10"],
            "consent": {"method": "verbal", "by": "nina", "at": "2026-01-01T09:00:00Z"}
        }))
        .unwrap();
        body.checked("p-1", "nina", at_ms).unwrap()
    };
    const NOW: i64 = 1_790_000_000_000;
    for b in backends().await {
        let (n, db) = (b.name, &b.db);
        b.add_patient_on("p-1", "default").await;
        let ids: Vec<String> = db
            .programmes()
            .await
            .unwrap()
            .into_iter()
            .map(|p| p.id)
            .collect();
        assert_eq!(
            ids,
            ["copd", "diabetes", "heart-failure", "hypertension"],
            "{n}"
        );
        let ckd = Programme::new("ckd", "Chronic kidney disease").unwrap();
        db.add_programme(
            ckd.clone(),
            "admin".into(),
            NOW,
            line(NOW, "admin", "program.create", None),
        )
        .await
        .unwrap();
        let again = db
            .add_programme(
                ckd,
                "admin".into(),
                NOW,
                line(NOW, "admin", "program.create", None),
            )
            .await;
        assert!(
            matches!(again, Err(RegistryError::Exists(_))),
            "{n}: {again:?}"
        );

        let audit_before = db
            .audit_page(0, i64::MIN, i64::MAX, 1_000)
            .await
            .unwrap()
            .len();
        let first = episode("2026-01-01", None, "hypertension", NOW);
        db.put_enrollment(
            first.clone(),
            line(NOW, "nina", "enrollment.update", Some("p-1")),
        )
        .await
        .unwrap();
        // Ended by a change of the same episode; a second episode after it.
        let ended = episode("2026-01-01", Some("2026-03-31"), "hypertension", NOW + 1);
        db.put_enrollment(
            ended.clone(),
            line(NOW + 1, "nina", "enrollment.update", Some("p-1")),
        )
        .await
        .unwrap();
        let second = episode("2026-05-01", None, "ckd", NOW + 2);
        db.put_enrollment(
            second.clone(),
            line(NOW + 2, "nina", "enrollment.update", Some("p-1")),
        )
        .await
        .unwrap();
        assert_eq!(
            db.enrollments(pid("p-1")).await.unwrap(),
            [second.clone(), ended.clone()],
            "{n}: latest first"
        );
        // In a programme now: the latest episode, unended (not the ended one before it).
        assert_eq!(
            db.open_enrollments().await.unwrap(),
            [(pid("p-1"), "ckd".to_owned())],
            "{n}"
        );
        let t = db.timeline(pid("p-1"), i64::MAX, 100).await.unwrap();
        assert_eq!(
            t.iter().filter(|r| r.kind == "enrollment").count(),
            3,
            "{n}: one entry per change"
        );

        // Refusals write nothing.
        let writes = |db: &Arc<dyn vigil::registry::storage::Storage>| {
            let db = db.clone();
            async move {
                (
                    db.audit_page(0, i64::MIN, i64::MAX, 1_000)
                        .await
                        .unwrap()
                        .len(),
                    db.timeline(pid("p-1"), i64::MAX, 100).await.unwrap().len(),
                )
            }
        };
        let before = writes(db).await;
        assert_eq!(before.0, audit_before + 3, "{n}: an audit line each");
        let overlapping = episode("2026-03-01", None, "diabetes", NOW + 3);
        let r = db
            .put_enrollment(
                overlapping,
                line(NOW + 3, "nina", "enrollment.update", Some("p-1")),
            )
            .await;
        assert!(matches!(r, Err(RegistryError::Exists(_))), "{n}: {r:?}");
        let unknown = episode("2027-01-01", None, "asthma", NOW + 3);
        let r = db
            .put_enrollment(
                unknown,
                line(NOW + 3, "nina", "enrollment.update", Some("p-1")),
            )
            .await;
        match r {
            Err(RegistryError::Invalid(m)) => assert!(m.contains("hypertension"), "{n}: {m}"),
            other => panic!("{n}: {other:?}"),
        }
        let mut nobody = episode("2027-01-01", None, "copd", NOW + 3);
        nobody.patient_id = "p-9".into();
        let r = db
            .put_enrollment(
                nobody,
                line(NOW + 3, "nina", "enrollment.update", Some("p-9")),
            )
            .await;
        assert!(matches!(r, Err(RegistryError::NotFound(_))), "{n}: {r:?}");
        assert_eq!(
            writes(db).await,
            before,
            "{n}: nothing written by a refusal"
        );
    }
}

/// The time log: entries are logged with their audit line and read back by date range, in
/// date order then as logged; an entry for an unknown patient is refused with nothing written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_entries_read_back_by_date_as_logged() {
    use vigil::registry::RegistryError;
    use vigil::registry::time_log::TimeBody;
    const NOW: i64 = 1_794_744_000_000; // 2026-11-15T12:00:00Z
    let entry = |n: u32, patient: &str, date: &str, minutes: u32, interactive: bool| {
        let body: TimeBody = serde_json::from_value(serde_json::json!({
            "date": date, "minutes": minutes, "activity": "review", "interactive": interactive
        }))
        .unwrap();
        body.checked(format!("te_{n:032x}"), patient, "nina", NOW + i64::from(n))
            .unwrap()
    };
    for b in backends().await {
        let (n, db) = (b.name, &b.db);
        b.add_patient_on("p-1", "default").await;
        b.add_patient_on("p-2", "default").await;
        let audit_before = db
            .audit_page(0, i64::MIN, i64::MAX, 1_000)
            .await
            .unwrap()
            .len();
        let logged = [
            entry(1, "p-1", "2026-11-03", 12, false),
            entry(2, "p-1", "2026-10-31", 20, true),
            entry(3, "p-1", "2026-11-03", 8, true),
            entry(4, "p-2", "2026-11-03", 30, false),
            entry(5, "p-1", "2026-11-14", 5, false),
        ];
        for e in &logged {
            let stored = db
                .add_time(
                    e.clone(),
                    line(NOW, "nina", "time.create", Some(&e.patient_id)),
                )
                .await
                .unwrap();
            assert_eq!(&stored, e, "{n}");
        }
        let nov = db
            .time_entries(pid("p-1"), "2026-11-01".into(), "2026-11-30".into())
            .await
            .unwrap();
        assert_eq!(
            nov,
            [logged[0].clone(), logged[2].clone(), logged[4].clone()],
            "{n}: November's, by date then as logged"
        );
        let mut orphan = entry(6, "p-1", "2026-11-03", 5, false);
        orphan.patient_id = "p-9".into();
        let r = db
            .add_time(orphan, line(NOW, "nina", "time.create", Some("p-9")))
            .await;
        assert!(matches!(r, Err(RegistryError::NotFound(_))), "{n}: {r:?}");
        assert_eq!(
            db.audit_page(0, i64::MIN, i64::MAX, 1_000)
                .await
                .unwrap()
                .len(),
            audit_before + logged.len(),
            "{n}: an audit line per entry, none for the refusal"
        );
    }
}

/// A time entry is changed only at the version it was read at (a change made in between is
/// reported, not overwritten), and a deleted one is kept but neither read nor listed nor
/// changed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_entries_change_at_their_version_and_deleted_ones_are_gone() {
    use vigil::registry::RegistryError;
    use vigil::registry::time_log::{TimeBody, TimeChange};
    const NOW: i64 = 1_794_744_000_000; // 2026-11-15T12:00:00Z
    for b in backends().await {
        let (n, db) = (b.name, &b.db);
        b.add_patient_on("p-1", "default").await;
        let body: TimeBody = serde_json::from_value(serde_json::json!({
            "date": "2026-11-14", "minutes": 20, "activity": "call", "interactive": true
        }))
        .unwrap();
        let e = body
            .checked(format!("te_{:032x}", 1), "p-1", "nina", NOW)
            .unwrap();
        db.add_time(e.clone(), line(NOW, "nina", "time.create", Some("p-1")))
            .await
            .unwrap();
        let v0 = e.version_ms();
        let first = e
            .changed(
                TimeChange {
                    minutes: Some(25),
                    ..TimeChange::default()
                },
                "nina",
                NOW + 10,
            )
            .unwrap();
        let stored = db
            .update_time(
                first.clone(),
                v0,
                line(NOW + 10, "nina", "time.update", Some("p-1")),
            )
            .await
            .unwrap();
        assert_eq!(stored.as_ref(), Some(&first), "{n}");
        // A change read at the old version is not written over the first.
        let stale = e
            .changed(
                TimeChange {
                    interactive: Some(false),
                    ..TimeChange::default()
                },
                "omar",
                NOW + 20,
            )
            .unwrap();
        let r = db
            .update_time(
                stale,
                v0,
                line(NOW + 20, "omar", "time.update", Some("p-1")),
            )
            .await
            .unwrap();
        assert_eq!(r, None, "{n}: changed meanwhile");
        assert_eq!(
            db.time_entry(pid("p-1"), e.id.clone()).await.unwrap(),
            Some(first.clone()),
            "{n}"
        );
        db.delete_time(
            pid("p-1"),
            e.id.clone(),
            "nina".into(),
            NOW + 30,
            line(NOW + 30, "nina", "time.delete", Some("p-1")),
        )
        .await
        .unwrap();
        assert_eq!(
            db.time_entry(pid("p-1"), e.id.clone()).await.unwrap(),
            None,
            "{n}"
        );
        assert!(
            db.time_entries(pid("p-1"), "2026-11-01".into(), "2026-11-30".into())
                .await
                .unwrap()
                .is_empty(),
            "{n}: not listed"
        );
        let again = db
            .delete_time(
                pid("p-1"),
                e.id.clone(),
                "nina".into(),
                NOW + 40,
                line(NOW + 40, "nina", "time.delete", Some("p-1")),
            )
            .await;
        assert!(
            matches!(again, Err(RegistryError::NotFound(_))),
            "{n}: {again:?}"
        );
        let r = db
            .update_time(
                first.clone(),
                first.version_ms(),
                line(NOW + 50, "nina", "time.update", Some("p-1")),
            )
            .await;
        assert!(matches!(r, Err(RegistryError::NotFound(_))), "{n}: {r:?}");
    }
}

/// Device set-ups (the 99453 event): recorded with their timeline entry and audit line, read
/// back by date; a set-up of another patient's device or for an unknown patient is refused
/// with nothing written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_setups_read_back_by_date_and_only_of_the_patients_own_devices() {
    use vigil::registry::RegistryError;
    use vigil::registry::setups::SetupBody;
    const NOW: i64 = 1_794_744_000_000; // 2026-11-15T12:00:00Z
    let setup = |patient: &str, device: &str, date: &str, at: i64| {
        let body: SetupBody = serde_json::from_value(serde_json::json!({
            "device_id": device, "date": date, "note": "taught"
        }))
        .unwrap();
        body.checked(patient, "nina", at).unwrap()
    };
    for b in backends().await {
        let (n, db) = (b.name, &b.db);
        b.add_patient_on("p-1", "default").await;
        b.add_patient_on("p-2", "default").await;
        db.create_device(new_device("d-1", "p-1", 1), None)
            .await
            .unwrap();
        db.create_device(new_device("d-2", "p-2", 2), None)
            .await
            .unwrap();
        let timeline_before = timeline(&b).await.len();
        let audit_before = audited(&b).await.len();
        let later = setup("p-1", "d-1", "2026-11-10", NOW);
        let earlier = setup("p-1", "d-1", "2026-11-02", NOW + 1);
        for s in [&later, &earlier] {
            let stored = db
                .add_setup(s.clone(), line(NOW, "nina", "setup.create", Some("p-1")))
                .await
                .unwrap();
            assert_eq!(&stored, s, "{n}");
        }
        assert_eq!(
            db.setups(pid("p-1")).await.unwrap(),
            [earlier.clone(), later.clone()],
            "{n}: by date"
        );
        assert!(db.setups(pid("p-2")).await.unwrap().is_empty(), "{n}");
        let r = db
            .add_setup(
                setup("p-1", "d-2", "2026-11-03", NOW),
                line(NOW, "nina", "setup.create", Some("p-1")),
            )
            .await;
        assert!(
            matches!(&r, Err(RegistryError::Invalid(m)) if m.contains("d-2")),
            "{n}: another patient's device: {r:?}"
        );
        let r = db
            .add_setup(
                setup("p-9", "d-1", "2026-11-03", NOW),
                line(NOW, "nina", "setup.create", Some("p-9")),
            )
            .await;
        assert!(matches!(r, Err(RegistryError::NotFound(_))), "{n}: {r:?}");
        let tl = timeline(&b).await;
        assert_eq!(tl.len(), timeline_before + 2, "{n}");
        assert_eq!(tl[tl.len() - 1].0, "device_setup", "{n}");
        assert_eq!(tl[tl.len() - 1].1["device_id"], "d-1", "{n}");
        assert_eq!(
            audited(&b).await.len(),
            audit_before + 2,
            "{n}: none for refusals"
        );
    }
}

/// The timer: one per user, read back, stopped into a time entry (with its audit line, the
/// timer gone) once; a second start is refused naming the patient; of two stops at once, one
/// logs the entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_timer_runs_once_and_stops_into_one_time_entry() {
    use vigil::registry::timer::{TimerStart, TimerStop};
    const NOW: i64 = 1_794_744_000_000; // 2026-11-15T12:00:00Z
    for b in backends().await {
        let (n, db) = (b.name, &b.db);
        b.add_patient_on("p-1", "default").await;
        b.add_patient_on("p-2", "default").await;
        let timer = TimerStart::default().checked("nina", "p-1", NOW).unwrap();
        let started = db
            .start_timer(timer.clone(), line(NOW, "nina", "timer.start", Some("p-1")))
            .await
            .unwrap();
        assert_eq!(started, timer, "{n}");
        assert_eq!(
            db.timer("nina".into()).await.unwrap(),
            Some(timer.clone()),
            "{n}"
        );
        assert_eq!(db.timer("omar".into()).await.unwrap(), None, "{n}");
        let second = TimerStart::default().checked("nina", "p-2", NOW).unwrap();
        let r = db
            .start_timer(second, line(NOW, "nina", "timer.start", Some("p-2")))
            .await;
        assert!(
            matches!(&r, Err(RegistryError::Exists(m)) if m.contains("p-1")),
            "{n}: {r:?}"
        );
        let orphan = TimerStart::default().checked("omar", "p-9", NOW).unwrap();
        let r = db
            .start_timer(orphan, line(NOW, "omar", "timer.start", Some("p-9")))
            .await;
        assert!(matches!(r, Err(RegistryError::NotFound(_))), "{n}: {r:?}");

        // Two stops at once: one entry.
        let stop = || {
            db.stop_timer(
                "nina".into(),
                NOW + 20 * 60_000,
                TimerStop {
                    interactive: true,
                    ..TimerStop::default()
                },
                Zone::utc(),
                line(NOW, "nina", "time.create", None),
            )
        };
        let (a, c) = tokio::join!(stop(), stop());
        let logged: Vec<_> = [a.unwrap(), c.unwrap()].into_iter().flatten().collect();
        assert_eq!(logged.len(), 1, "{n}: {logged:?}");
        let e = &logged[0];
        assert_eq!(
            (
                e.patient_id.as_str(),
                e.date.as_str(),
                e.minutes,
                e.interactive,
                e.user.as_str()
            ),
            ("p-1", "2026-11-15", 20, true, "nina"),
            "{n}"
        );
        assert_eq!(db.timer("nina".into()).await.unwrap(), None, "{n}");
        let listed = db
            .time_entries(pid("p-1"), "2026-11-01".into(), "2026-11-30".into())
            .await
            .unwrap();
        assert_eq!(listed, std::slice::from_ref(e), "{n}");
        let lines = db.audit_records(all()).await.unwrap();
        let stopped = lines
            .iter()
            .find(|l| l.line.action == "time.create")
            .unwrap();
        assert_eq!(stopped.line.patient_id.as_deref(), Some("p-1"), "{n}");
        assert_eq!(
            stopped.line.target,
            format!("patient/p-1/time/{}", e.id),
            "{n}"
        );
        assert_eq!(
            lines.len(),
            2,
            "{n}: the start and the stop, none for refusals"
        );
    }
}

/// A care team's cover: nothing set reads back empty; the rota, the shifts and the policy are
/// written separately (one does not clear another), each with its audit line, and read back as
/// written; an unknown team is `NotFound` with nothing audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_teams_rota_and_shifts_read_back_as_written_with_their_audit_lines() {
    use vigil::oncall::{Rota, Shift, Slot};
    const NOW: i64 = 1_794_744_000_000; // 2026-11-15T12:00:00Z
    for b in backends().await {
        let (n, db) = (b.name, &b.db);
        let empty = db.cover("default".into()).await.unwrap().unwrap();
        assert_eq!((empty.rota, empty.shifts.len()), (None, 0), "{n}");
        assert_eq!(db.cover("nowhere".into()).await.unwrap(), None, "{n}");
        let rota = Rota {
            timezone: "America/Chicago".into(),
            weekly: vec![Slot {
                days: vec!["mon".into(), "tue".into()],
                start: "20:00".into(),
                end: "08:00".into(),
                user: "nina".into(),
                level: 1,
            }],
            fallback: Some("omar".into()),
        };
        let shift = Shift {
            user: "omar".into(),
            start: "2026-12-24T20:00:00-06:00".into(),
            end: "2026-12-25T08:00:00-06:00".into(),
            level: 1,
        };
        db.put_rota(
            "default".into(),
            rota.clone(),
            "ada".into(),
            NOW,
            line(NOW, "ada", "rota.update", None),
        )
        .await
        .unwrap();
        db.put_shifts(
            "default".into(),
            vec![shift.clone()],
            "bo".into(),
            NOW + 1_000,
            line(NOW, "bo", "oncall.update", None),
        )
        .await
        .unwrap();
        let c = db.cover("default".into()).await.unwrap().unwrap();
        assert_eq!(
            c.rota.as_ref(),
            Some(&rota),
            "{n}: the shifts left the rota"
        );
        assert_eq!(c.shifts, [shift], "{n}");
        assert_eq!(c.updated_by.as_deref(), Some("bo"), "{n}");
        assert_eq!(c.updated_at.as_deref(), Some("2026-11-15T12:00:01Z"), "{n}");
        db.put_shifts(
            "default".into(),
            Vec::new(),
            "bo".into(),
            NOW + 2_000,
            line(NOW, "bo", "oncall.update", None),
        )
        .await
        .unwrap();
        let c = db.cover("default".into()).await.unwrap().unwrap();
        assert_eq!((c.rota.as_ref(), c.shifts.len()), (Some(&rota), 0), "{n}");
        assert_eq!(c.policy, None, "{n}");
        let policy = vigil::oncall::policy::Policy {
            low: vec![vigil::oncall::policy::Step {
                after_min: 60,
                level: 1,
            }],
            ..Default::default()
        };
        db.put_policy(
            "default".into(),
            policy.clone(),
            "ada".into(),
            NOW + 3_000,
            line(NOW, "ada", "policy.update", None),
        )
        .await
        .unwrap();
        let c = db.cover("default".into()).await.unwrap().unwrap();
        assert_eq!(c.policy.as_ref(), Some(&policy), "{n}");
        assert_eq!(
            c.rota.as_ref(),
            Some(&rota),
            "{n}: the policy left the rota"
        );
        let r = db
            .put_rota(
                "nowhere".into(),
                rota.clone(),
                "ada".into(),
                NOW,
                line(NOW, "ada", "rota.update", None),
            )
            .await;
        assert!(matches!(r, Err(RegistryError::NotFound(_))), "{n}: {r:?}");
        assert_eq!(
            audited(&b).await,
            [
                "rota.update",
                "oncall.update",
                "oncall.update",
                "policy.update"
            ],
            "{n}"
        );
    }
}

/// A user's contact details: changed field by field with an audit line each; two changes of
/// different fields at once both survive; a bad one is refused whole; an unknown user is
/// `NotFound`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_contact_details_change_field_by_field_and_both_of_two_changes_survive() {
    use vigil::registry::contacts::{ContactChange, Quiet};
    const NOW: i64 = 1_794_744_000_000;
    for b in backends().await {
        let (n, db) = (b.name, &b.db);
        b.tamper(
            "INSERT INTO users (username, password_hash, role, created_ms)
             VALUES ('nina', 'x', 'clinician', 0)",
        )
        .await;
        assert!(db.contacts().await.unwrap().is_empty(), "{n}");
        let email = ContactChange {
            email: Some("nina@clinic.example".into()),
            ..ContactChange::default()
        };
        let quiet = ContactChange {
            quiet: Some(Some(Quiet {
                from: "22:00".into(),
                to: "07:00".into(),
            })),
            ..ContactChange::default()
        };
        let phone = ContactChange {
            phone: Some("+13125550123".into()),
            ..ContactChange::default()
        };
        db.change_contact(
            "nina".into(),
            email,
            line(NOW, "nina", "user.contact", None),
        )
        .await
        .unwrap();
        let (a, c) = tokio::join!(
            db.change_contact(
                "nina".into(),
                quiet,
                line(NOW, "nina", "user.contact", None)
            ),
            db.change_contact("nina".into(), phone, line(NOW, "ada", "user.contact", None)),
        );
        a.unwrap();
        c.unwrap();
        let all = db.contacts().await.unwrap();
        assert_eq!(all.len(), 1, "{n}");
        let got = &all[0].1;
        assert_eq!(
            (
                got.email.as_deref(),
                got.phone.as_deref(),
                got.quiet.is_some()
            ),
            (Some("nina@clinic.example"), Some("+13125550123"), true),
            "{n}: {got:?}"
        );
        let bad = ContactChange {
            email: Some("nobody".into()),
            phone: Some(String::new()),
            ..ContactChange::default()
        };
        let r = db
            .change_contact("nina".into(), bad, line(NOW, "nina", "user.contact", None))
            .await;
        assert!(matches!(r, Err(RegistryError::Invalid(_))), "{n}: {r:?}");
        assert_eq!(
            db.contacts().await.unwrap()[0].1.phone.as_deref(),
            Some("+13125550123"),
            "{n}: a refused change changes nothing"
        );
        let r = db
            .change_contact(
                "ghost".into(),
                ContactChange::default(),
                line(NOW, "ghost", "user.contact", None),
            )
            .await;
        assert!(matches!(r, Err(RegistryError::NotFound(_))), "{n}: {r:?}");
        assert_eq!(
            audited(&b).await,
            ["user.contact", "user.contact", "user.contact"],
            "{n}"
        );
    }
}

/// Notifications: of two instances taking one escalation step at once, exactly one writes it
/// with its notifications and one timeline entry; a notification without a channel is failed
/// from the start; two claims at once split the due notifications between them (none twice,
/// none not yet due); only the claim's holder settles, each settlement with its timeline entry;
/// a retried notification comes back when due with its attempt counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_escalation_step_is_taken_once_and_its_notifications_claimed_once_each() {
    use vigil::registry::notifications::{
        NewNotification, NotificationStatus, Settlement, TakenStep,
    };
    const NOW: i64 = 1_796_263_200_000;
    for b in backends().await {
        let (n, db) = (b.name, &b.db);
        b.add_patient("p-1").await;
        let step = |notifications: Vec<NewNotification>| TakenStep {
            alert_id: "al_1".into(),
            patient_id: "p-1".into(),
            step: 0,
            level: 1,
            due_ms: NOW,
            taken_ms: NOW,
            notifications,
            gap: None,
        };
        let mine = || {
            vec![
                NewNotification::new("nina", "email", Some("nina@clinic.example"), NOW).unwrap(),
                NewNotification::new("nina", "sms", Some("+13125550123"), NOW).unwrap(),
                NewNotification::new("omar", "none", None, NOW).unwrap(),
                NewNotification::new("pat", "email", Some("pat@clinic.example"), NOW + 60_000)
                    .unwrap(),
            ]
        };
        let before = timeline(&b).await.len();
        let (a, c) = tokio::join!(
            db.take_step(step(mine()), SINKS.to_vec()),
            db.take_step(step(mine()), SINKS.to_vec())
        );
        let (a, c) = (a.unwrap().is_some(), c.unwrap().is_some());
        assert!(a ^ c, "{n}: exactly one takes the step ({a}, {c})");
        let all = db.notifications_of("al_1".into()).await.unwrap();
        assert_eq!(all.len(), 4, "{n}: {all:?}");
        let tl = timeline(&b).await;
        assert_eq!(tl.len(), before + 1, "{n}");
        assert_eq!(tl[before].0, "alert.notify_step", "{n}");
        assert!(
            !tl[before].1.to_string().contains("clinic.example"),
            "{n}: no address on the timeline"
        );
        let omar = all.iter().find(|x| x.username == "omar").unwrap();
        assert_eq!(omar.status, NotificationStatus::Failed, "{n}");
        assert!(
            omar.last_error.as_deref().unwrap().contains("no email"),
            "{n}"
        );
        assert_eq!(
            db.steps_taken(vec!["al_1".into(), "al_2".into()])
                .await
                .unwrap()
                .get("al_1"),
            Some(&vec![0]),
            "{n}"
        );

        // Two claims at once: nina's two, once each; pat's is not due yet.
        let (x, y) = tokio::join!(
            db.claim_notifications("one".into(), NOW, 30_000, 10),
            db.claim_notifications("two".into(), NOW, 30_000, 10)
        );
        let (x, y) = (x.unwrap(), y.unwrap());
        let mut ids: Vec<&str> = x.iter().chain(&y).map(|x| x.id.as_str()).collect();
        ids.sort_unstable();
        let mut want: Vec<&str> = all
            .iter()
            .filter(|x| x.username == "nina")
            .map(|x| x.id.as_str())
            .collect();
        want.sort_unstable();
        assert_eq!(ids, want, "{n}: claimed once each");
        assert!(x.iter().chain(&y).all(|x| x.attempts == 1), "{n}");
        let (held, holder) = if x.is_empty() {
            (&y, "two")
        } else {
            (&x, "one")
        };
        let first = held[0].clone();
        // A claim still held is not claimed again.
        assert!(
            db.claim_notifications("three".into(), NOW + 1_000, 30_000, 10)
                .await
                .unwrap()
                .iter()
                .all(|x| x.username != "nina" || !held.iter().any(|h| h.id == x.id)),
            "{n}"
        );
        let ok = db
            .settle_notification(
                first.id.clone(),
                "intruder".into(),
                Settlement::Delivered { receipt: None },
                NOW,
            )
            .await
            .unwrap();
        assert!(!ok, "{n}: only the claim's holder settles");
        let ok = db
            .settle_notification(
                first.id.clone(),
                holder.into(),
                Settlement::Retry {
                    at_ms: NOW + 120_000,
                    error: "451 try later".into(),
                },
                NOW + 2_000,
            )
            .await
            .unwrap();
        assert!(ok, "{n}");
        let early = db
            .claim_notifications("four".into(), NOW + 119_000, 30_000, 10)
            .await
            .unwrap();
        assert!(
            early.iter().all(|x| x.id != first.id),
            "{n}: not before it is due"
        );
        let again = db
            .claim_notifications("four".into(), NOW + 120_000, 30_000, 10)
            .await
            .unwrap();
        let again = again.iter().find(|x| x.id == first.id).expect("due again");
        assert_eq!(again.attempts, 2, "{n}");
        assert!(
            db.settle_notification(
                first.id.clone(),
                "four".into(),
                Settlement::Delivered {
                    receipt: Some("250 queued".into())
                },
                NOW + 121_000,
            )
            .await
            .unwrap(),
            "{n}"
        );
        assert!(
            !db.settle_notification(
                first.id.clone(),
                "four".into(),
                Settlement::Delivered { receipt: None },
                NOW + 122_000,
            )
            .await
            .unwrap(),
            "{n}: settled once"
        );
        let done = db.notifications_of("al_1".into()).await.unwrap();
        let d = done.iter().find(|x| x.id == first.id).unwrap();
        assert_eq!(
            (d.status, d.receipt.as_deref(), d.attempts),
            (NotificationStatus::Delivered, Some("250 queued"), 2),
            "{n}"
        );
        let kinds: Vec<String> = timeline(&b)
            .await
            .into_iter()
            .skip(before)
            .map(|(k, _)| k)
            .collect();
        assert_eq!(
            kinds,
            [
                "alert.notify_step",
                "notification.retry",
                "notification.delivered"
            ],
            "{n}"
        );
    }
}

/// Acknowledgement links: a notification is read back by its id; of two uses of its link at
/// once, one is recorded with its audit line and the other is told who used it and when; an
/// unused link has no use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledgement_link_is_used_once_with_its_audit_line() {
    use vigil::registry::notifications::{NewNotification, TakenStep};
    const NOW: i64 = 1_796_263_200_000;
    for b in backends().await {
        let (n, db) = (b.name, &b.db);
        b.add_patient("p-1").await;
        let note = NewNotification::new("nina", "email", Some("nina@clinic.example"), NOW).unwrap();
        let id = note.id.clone();
        assert!(
            db.take_step(
                TakenStep {
                    alert_id: "al_1".into(),
                    patient_id: "p-1".into(),
                    step: 0,
                    level: 1,
                    due_ms: NOW,
                    taken_ms: NOW,
                    notifications: vec![note],
                    gap: None,
                },
                Vec::new()
            )
            .await
            .unwrap()
            .is_some(),
            "{n}"
        );
        let got = db.notification(id.clone()).await.unwrap().expect("stored");
        assert_eq!(
            (got.alert_id.as_str(), got.username.as_str()),
            ("al_1", "nina")
        );
        assert!(
            db.notification("nt_00".into()).await.unwrap().is_none(),
            "{n}"
        );
        assert_eq!(db.ack_link_use(id.clone()).await.unwrap(), None, "{n}");

        let before = audited(&b).await.len();
        let use_by = |who: &str, at: i64| {
            db.use_ack_link(
                id.clone(),
                who.into(),
                at,
                alert_line("alert.ack_link", "p-1", "al_1"),
            )
        };
        let (x, y) = tokio::join!(use_by("nina", NOW + 1_000), use_by("omar", NOW + 1_000));
        let (x, y) = (x.unwrap(), y.unwrap());
        assert!(
            x.is_none() ^ y.is_none(),
            "{n}: one use is recorded ({x:?}, {y:?})"
        );
        let earlier = x.or(y).unwrap();
        let stored = db.ack_link_use(id.clone()).await.unwrap().unwrap();
        assert_eq!(stored, earlier, "{n}");
        assert!(["nina", "omar"].contains(&stored.by.as_str()), "{n}");
        let again = use_by("pat", NOW + 5_000).await.unwrap();
        assert_eq!(again, Some(stored), "{n}: a later use changes nothing");
        assert_eq!(
            audited(&b).await.len(),
            before + 1,
            "{n}: one audit line, with the use"
        );
    }
}

/// A later escalation step is the alert's escalation: of two instances taking step 1 of an open
/// alert at once, one writes it with `alert.escalated` (level 1, the on-call level it reached),
/// its outbox rows and the event to announce; step 0 escalates nothing; an acknowledged alert's
/// later step is recorded but does not escalate it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_escalation_step_escalates_its_alert_once() {
    use vigil::registry::notifications::TakenStep;
    for b in backends().await {
        let (n, db) = (b.name, &b.db);
        let opened = db
            .apply_effects(vec![open("p-1", "spo2", 1_000)], SINKS.to_vec(), None)
            .await
            .unwrap();
        let id = opened[0].alert.id.clone();
        let step = |index: u32, level: u8| TakenStep {
            alert_id: id.clone(),
            patient_id: "p-1".into(),
            step: index,
            level,
            due_ms: 2_000,
            taken_ms: 2_000,
            notifications: Vec::new(),
            gap: Some("nobody is on call".into()),
        };
        let first = db.take_step(step(0, 1), SINKS.to_vec()).await.unwrap();
        assert!(
            first.is_some_and(|e| e.is_empty()),
            "{n}: step 0 escalates nothing"
        );
        let (x, y) = tokio::join!(
            db.take_step(step(1, 2), SINKS.to_vec()),
            db.take_step(step(1, 2), SINKS.to_vec())
        );
        let (x, y) = (x.unwrap(), y.unwrap());
        assert!(x.is_some() ^ y.is_some(), "{n}: one takes it");
        let events = x.or(y).unwrap();
        assert_eq!(events.len(), 1, "{n}: {events:?}");
        assert_eq!(events[0].event_type, "alert.escalated", "{n}");
        assert_eq!(events[0].id, format!("evt_{}_escalated_1", &id[4..]), "{n}");
        assert_eq!(db.alert(id.clone()).await.unwrap().unwrap().escalations, 1);
        let tl = timeline(&b).await;
        let escalated: Vec<_> = tl.iter().filter(|(k, _)| k == "alert.escalated").collect();
        assert_eq!(escalated.len(), 1, "{n}: {tl:?}");
        assert_eq!(
            (&escalated[0].1["level"], &escalated[0].1["on_call_level"]),
            (&serde_json::json!(1), &serde_json::json!(2)),
            "{n}"
        );
        let queued = outbox(&b).await;
        assert_eq!(
            queued.iter().filter(|r| r.contains("_escalated_1")).count(),
            SINKS.iter().filter(|s| s.takes("alert.escalated")).count(),
            "{n}: {queued:?}"
        );

        // Acknowledged: the next step is recorded, the alert not escalated.
        db.act_on_alert(
            id.clone(),
            false,
            "nina".into(),
            None,
            3_000,
            SINKS.to_vec(),
            alert_line("alert.acknowledge", "p-1", &id),
        )
        .await
        .unwrap();
        let later = db.take_step(step(2, 2), SINKS.to_vec()).await.unwrap();
        assert!(later.is_some_and(|e| e.is_empty()), "{n}");
        assert_eq!(db.alert(id.clone()).await.unwrap().unwrap().escalations, 1);
    }
}

// Records a clinic can keep: discharges, display names, disabled users.

fn discharge_of(patient: &str, discharge: bool) -> vigil::registry::discharge::DischargeChange {
    use vigil::registry::discharge::{DischargeChange, StoredDischarge};
    let action = if discharge {
        "patient.discharge"
    } else {
        "patient.readmit"
    };
    DischargeChange {
        patient: patient.into(),
        discharge: discharge.then(|| StoredDischarge {
            at_ms: 7_000,
            date: "2026-12-01".into(),
            reason: Some("recovered".into()),
            by: "nina".into(),
        }),
        by: "nina".into(),
        now_ms: 7_000,
        audit: line(7_000, "nina", action, Some(patient)),
        alert_audit: line(7_000, "nina", "alert.resolve", Some(patient)),
        sinks: SINKS.to_vec(),
    }
}

/// A discharge resolves the patient's unresolved alerts ("patient discharged"), each with its
/// timeline entry, outbox rows and audit line, writes `patient.discharged` and its own audit
/// line, and tells the engine (PostgreSQL) — all in one transaction or nothing; the patient
/// reads back discharged and leaves the unseen list. A second discharge, or readmitting a
/// patient under monitoring, is a conflict; readmitting undoes the discharge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discharge_resolves_open_alerts_with_its_audit_lines_and_a_readmission_undoes_it() {
    use vigil::alerts::rules::CarePlan;
    use vigil::registry::record::{CommittedPlan, EngineNotice};
    for b in backends().await {
        let (n, db) = (b.name, &b.db);
        b.add_patient_on("p-1", "default").await;
        b.add_patient_on("p-2", "default").await;
        let opened = db
            .apply_effects(
                vec![
                    open("p-1", "spo2", 1_000),
                    open("p-1", "hr", 2_000),
                    open("p-2", "spo2", 2_000),
                ],
                SINKS.to_vec(),
                None,
            )
            .await
            .unwrap();
        let (first, second) = (opened[0].alert.id.clone(), opened[1].alert.id.clone());
        db.act_on_alert(
            second.clone(),
            false,
            "sam".into(),
            None,
            3_000,
            SINKS.to_vec(),
            alert_line("alert.acknowledge", "p-1", &second),
        )
        .await
        .unwrap();
        let horizon = || async {
            match n {
                "postgres" => b
                    .rows("SELECT pg_snapshot_xmin(pg_current_snapshot())::text")
                    .await[0]
                    .parse::<i64>()
                    .unwrap(),
                _ => 0,
            }
        };
        let audited_before = audited(&b).await.len();
        let timeline_before = timeline(&b).await.len();
        let outbox_before = outbox(&b).await.len();

        // Refusals write nothing.
        let r = db.set_discharge(discharge_of("p-1", false)).await;
        assert!(
            matches!(&r, Err(RegistryError::Conflict(m)) if m.contains("not discharged")),
            "{n}: {r:?}"
        );
        let r = db.set_discharge(discharge_of("nobody", true)).await;
        assert!(matches!(&r, Err(RegistryError::NotFound(_))), "{n}: {r:?}");
        // The audit trail refusing the discharge's lines leaves everything as it was.
        b.refuse_inserts("audit").await;
        assert!(
            db.set_discharge(discharge_of("p-1", true)).await.is_err(),
            "{n}"
        );
        b.accept_inserts("audit").await;
        let p = db.patient("p-1".into()).await.unwrap().unwrap();
        assert!(!p.is_discharged(), "{n}");
        assert_eq!(audited(&b).await.len(), audited_before, "{n}");
        assert_eq!(timeline(&b).await.len(), timeline_before, "{n}");
        assert_eq!(outbox(&b).await.len(), outbox_before, "{n}");
        assert_eq!(
            db.alerts(AlertQuery {
                status: None,
                patient_id: Some(pid("p-1")),
                teams: None,
                limit: 10,
            })
            .await
            .unwrap()
            .iter()
            .filter(|a| a.status == AlertStatus::Resolved)
            .count(),
            0,
            "{n}"
        );
        let unseen: Vec<String> = db
            .unseen_patients()
            .await
            .unwrap()
            .into_iter()
            .map(|u| u.id)
            .collect();
        assert!(unseen.contains(&"p-1".to_owned()), "{n}: {unseen:?}");

        let from = horizon().await;
        let done = db.set_discharge(discharge_of("p-1", true)).await.unwrap();
        let until = horizon().await;
        assert_eq!(done.patient.status, "discharged", "{n}");
        let d = done.patient.discharged.clone().unwrap();
        assert_eq!(
            (d.date.as_str(), d.reason.as_deref(), d.by.as_str()),
            ("2026-12-01", Some("recovered"), "nina"),
            "{n}"
        );
        let ids: Vec<&str> = done.resolved.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(ids, [first.as_str(), second.as_str()], "{n}: oldest first");
        for a in &done.resolved {
            assert_eq!(a.status, AlertStatus::Resolved, "{n}");
            assert_eq!(a.resolve_note.as_deref(), Some("patient discharged"), "{n}");
            assert_eq!(a.resolved_by.as_deref(), Some("nina"), "{n}");
        }
        assert_eq!(done.events.len(), 2, "{n}");
        // The other patient's alert is untouched.
        let p2 = db
            .alerts(AlertQuery {
                status: None,
                patient_id: Some(pid("p-2")),
                teams: None,
                limit: 10,
            })
            .await
            .unwrap();
        assert_eq!(p2[0].status, AlertStatus::Open, "{n}");
        let t = timeline(&b).await;
        assert_eq!(
            kinds(&t[timeline_before..]),
            ["alert.resolved", "alert.resolved", "patient.discharged"],
            "{n}"
        );
        assert_eq!(t.last().unwrap().1["reason"], "recovered", "{n}");
        // The resolutions' outbox rows: one per sink each.
        assert_eq!(outbox(&b).await.len(), outbox_before + 4, "{n}");
        let lines = db.audit_records(all()).await.unwrap();
        let tail: Vec<(String, String)> = lines[audited_before..]
            .iter()
            .map(|l| (l.line.action.clone(), l.line.target.clone()))
            .collect();
        assert_eq!(
            tail,
            [
                ("alert.resolve".to_owned(), format!("alert/{first}")),
                ("alert.resolve".to_owned(), format!("alert/{second}")),
                ("patient.discharge".to_owned(), "patient/p-1".to_owned()),
            ],
            "{n}"
        );
        let read = db.patient("p-1".into()).await.unwrap().unwrap();
        assert_eq!(read.discharged, done.patient.discharged, "{n}");
        let unseen: Vec<String> = db
            .unseen_patients()
            .await
            .unwrap()
            .into_iter()
            .map(|u| u.id)
            .collect();
        assert!(!unseen.contains(&"p-1".to_owned()), "{n}: {unseen:?}");
        // p-1's engine notices written in [from, until) (PostgreSQL's; SQLite writes none).
        let notices = |from: i64, until: i64| async move {
            let part = vigil::domain::partition::alert_partition(&pid("p-1"));
            db.engine_notices(vec![part], from, until)
                .await
                .unwrap()
                .into_iter()
                .filter(|x| x.patient.as_str() == "p-1")
                .map(|x| x.notice)
                .collect::<Vec<EngineNotice>>()
        };
        if n == "postgres" {
            let notices = notices(from, until).await;
            // The plan for the engine as the discharge committed it: no rule at all.
            assert!(
                notices.contains(&EngineNotice::PlanChanged(CommittedPlan::Is(Some(
                    CarePlan { rules: Vec::new() }
                )))),
                "{n}: {notices:?}"
            );
        }

        let r = db.set_discharge(discharge_of("p-1", true)).await;
        assert!(
            matches!(&r, Err(RegistryError::Conflict(m)) if m.contains("already discharged")),
            "{n}: {r:?}"
        );
        let before_readmission = horizon().await;
        let back = db.set_discharge(discharge_of("p-1", false)).await.unwrap();
        if n == "postgres" {
            // Readmitted, with no plan of their own and no enrollment: the default plan again.
            assert_eq!(
                notices(before_readmission, horizon().await).await,
                [EngineNotice::PlanChanged(CommittedPlan::Is(None))],
                "{n}"
            );
        }
        assert_eq!(
            (back.patient.status, back.patient.discharged.is_none()),
            ("active", true),
            "{n}"
        );
        assert!(back.resolved.is_empty(), "{n}");
        assert_eq!(
            kinds(&timeline(&b).await).last().copied(),
            Some("patient.readmitted"),
            "{n}"
        );
        assert_eq!(
            audited(&b).await.last().map(String::as_str),
            Some("patient.readmit"),
            "{n}"
        );
        // The discharge's fields are gone with it, and an update keeps them as they are.
        let change = PatientChange {
            name: Some("Ada B".into()),
            ..PatientChange::default()
        };
        db.update_patient("p-1".into(), change, None).await.unwrap();
        assert!(
            !db.patient("p-1".into())
                .await
                .unwrap()
                .unwrap()
                .is_discharged(),
            "{n}"
        );
    }
}

/// A user's display name and whether they are disabled read back as changed; disabling ends
/// their sessions in the same transaction and keeps its first time; enabling clears it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_display_name_and_disabling_read_back_and_disabling_ends_their_sessions() {
    for b in backends().await {
        let (n, db) = (b.name, &*b.db);
        db.create_user(new_user("nina", Role::Clinician, &[]), None)
            .await
            .unwrap();
        db.create_session(new_session(1, "nina", 1_000, 50_000))
            .await
            .unwrap();
        let named = UserChange {
            display_name: Some(Some("Dr Nina Patel".into())),
            ..UserChange::default()
        };
        let u = db
            .update_user(
                "NINA".into(),
                named,
                Some(access_line("user.update", "user/nina")),
            )
            .await
            .unwrap();
        assert_eq!(
            (u.display_name.as_deref(), u.disabled_ms),
            (Some("Dr Nina Patel"), None),
            "{n}"
        );
        assert!(
            db.live_session([1; 32], 2_000).await.unwrap().is_some(),
            "{n}: a display name ends no session"
        );
        let listed = db.users().await.unwrap();
        assert_eq!(
            listed[0].display_name.as_deref(),
            Some("Dr Nina Patel"),
            "{n}"
        );
        assert!(
            !db.credentials("nina".into())
                .await
                .unwrap()
                .unwrap()
                .disabled,
            "{n}"
        );

        for at in [5_000, 9_000] {
            let off = UserChange {
                disabled_ms: Some(Some(at)),
                ..UserChange::default()
            };
            let u = db.update_user("nina".into(), off, None).await.unwrap();
            assert_eq!(u.disabled_ms, Some(5_000), "{n}: the first time is kept");
        }
        assert_eq!(
            db.live_session([1; 32], 2_000).await.unwrap(),
            None,
            "{n}: disabling ended the session"
        );
        assert!(
            db.credentials("Nina".into())
                .await
                .unwrap()
                .unwrap()
                .disabled,
            "{n}"
        );
        assert_eq!(
            db.user("nina".into()).await.unwrap().unwrap().disabled_ms,
            Some(5_000),
            "{n}"
        );
        // A temporary password (a reset) is marked until the user sets their own.
        let reset = UserChange {
            password_hash: Some("$argon2id$temporary".into()),
            password_temporary: Some(true),
            ..UserChange::default()
        };
        let u = db.update_user("nina".into(), reset, None).await.unwrap();
        assert!(u.password_temporary, "{n}");
        assert!(
            db.user("nina".into())
                .await
                .unwrap()
                .unwrap()
                .password_temporary,
            "{n}"
        );
        let on = UserChange {
            disabled_ms: Some(None),
            display_name: Some(None),
            password_hash: Some("$argon2id$own".into()),
            password_temporary: Some(false),
            ..UserChange::default()
        };
        let u = db.update_user("nina".into(), on, None).await.unwrap();
        assert_eq!(
            (u.disabled_ms, u.display_name, u.password_temporary),
            (None, None, false),
            "{n}"
        );
        assert!(
            !db.credentials("nina".into())
                .await
                .unwrap()
                .unwrap()
                .disabled,
            "{n}"
        );
        assert_eq!(
            audited(&b).await,
            ["user.update"],
            "{n}: only the audited change"
        );
    }
}
