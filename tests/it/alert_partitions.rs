//! Alert evaluation shared by instances on one PostgreSQL: each patient's rules evaluated by
//! the instance holding the patient's partition, people's changes reaching it through any
//! instance, its partitions moving to a survivor within the alarm budget when it dies, and a
//! former holder cut off from the database writing nothing once its partition has moved.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use vigil::alerts::engine::Effect;
use vigil::alerts::rules::Severity;
use vigil::cluster::HeldLease;
use vigil::cluster::balance::{owner, partition_lease};
use vigil::crm::record::AlertQuery;
use vigil::crm::{Applied, Crm};
use vigil::domain::partition::{ALERT_PARTITIONS, alert_partition};
use vigil::domain::{PatientId, now_ms};
use vigil::registry::{Profiles, Registry};
use vigil::telemetry::Metrics;

use crate::alerts::{exactly, publish, timeline};
use crate::cli::spawn_serve;
use crate::postgres::Postgres;
use crate::support::{Api, eventually, metric};

/// The alarm budget (IEC 60601-2-27): a dead instance's partitions are evaluated again within it.
const BUDGET: Duration = Duration::from_secs(10);

/// Two instances share the partitions. A care plan set and an alert acknowledged through one
/// reach the other, which holds the patients' partition (the acknowledged alert does not
/// escalate; another, later and unacknowledged, does). Then the holder dies (SIGKILL): the
/// survivor holds every partition again within the budget, opens the alert of a reading that
/// came while nobody evaluated its partition, once, and reopens none of those already open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_instances_partitions_move_within_the_budget_with_no_alert_missed_or_doubled() {
    let pg = Postgres::start().await;
    let url = pg.database("vigil").await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = instance(&url, dir_a.path()).await;
    let mut b = instance(&url, dir_b.path()).await;
    let api = Api::new(a.http);

    // Both evaluating, each holding the partitions it owns.
    let b_pid = b.child.id().unwrap();
    let ids = eventually(Duration::from_secs(30), "two evaluators", || async {
        let ids = lines(&pg.sql_in("vigil", "SELECT holder FROM leases WHERE name LIKE 'evaluator:%' AND expires_ms > (extract(epoch from now()) * 1000)::bigint").await);
        (ids.len() == 2).then_some(ids)
    })
    .await;
    let b_id = ids
        .iter()
        .find(|id| id.contains(&format!("-{b_pid}-")))
        .unwrap()
        .clone();
    let b_owns: Vec<u16> = (0..ALERT_PARTITIONS)
        .filter(|k| owner(&ids, *k) == Some(b_id.as_str()))
        .collect();
    assert!(
        !b_owns.is_empty() && b_owns.len() < usize::from(ALERT_PARTITIONS),
        "{b_owns:?}"
    );
    eventually(
        Duration::from_secs(30),
        "each instance holding its partitions",
        || async {
            let held_by_b = lines(
                &pg.sql_in(
                    "vigil",
                    &format!(
                        "SELECT name FROM leases WHERE name LIKE 'alerts:%' AND holder = '{b_id}'"
                    ),
                )
                .await,
            );
            let want: BTreeSet<String> = b_owns.iter().map(|k| partition_lease(*k)).collect();
            let all = held(a.http).await + held(b.http).await;
            (held_by_b == want && all == f64::from(ALERT_PARTITIONS)).then_some(())
        },
    )
    .await;
    // Three patients whose partitions b evaluates, all made and sending through a.
    let patients: Vec<String> = (0..)
        .map(|i| format!("p-part-{i}"))
        .filter(|p| b_owns.contains(&alert_partition(&PatientId::parse(p).unwrap())))
        .take(3)
        .collect();
    let mut secrets = Vec::new();
    for p in &patients {
        api.patient(p).await;
        let (s, v) = api
            .care_plan(
                p,
                json!([{"id": "hr-high", "kind": "threshold", "metric": "heart_rate", "op": ">",
                    "value": 120, "severity": "high"}]),
            )
            .await;
        assert_eq!(s, reqwest::StatusCode::OK, "{v}");
        secrets.push(api.device(&format!("{p}-watch"), p, "smartwatch").await);
    }
    let send = |i: usize| {
        let (p, secret) = (patients[i].clone(), secrets[i].clone());
        async move {
            publish(
                a.mqtt,
                &format!("{p}-watch"),
                &secret,
                &[("heart_rate", 135.0, 1)],
            )
            .await
        }
    };

    // The first alert, acknowledged through a; the second, later, left alone.
    send(0).await;
    let first = exactly(&api, &patients[0], 1).await;
    let id = first[0]["id"].as_str().unwrap();
    let (s, v) = api
        .post(&format!("/api/v1/alerts/{id}/ack"), json!({}))
        .await;
    assert_eq!(s, reqwest::StatusCode::OK, "{v}");
    send(1).await;
    exactly(&api, &patients[1], 1).await;
    eventually(
        Duration::from_secs(30),
        "the unacknowledged alert escalated",
        || {
            let api = api.clone();
            let p = patients[1].clone();
            async move { escalated(&api, &p).await.then_some(()) }
        },
    )
    .await;
    assert!(
        !escalated(&api, &patients[0]).await,
        "the holder did not hear of the acknowledgement made through the other instance"
    );

    // b dies; a reading comes while nobody evaluates its patient's partition.
    b.child.start_kill().unwrap();
    b.child.wait().await.unwrap();
    let killed = Instant::now();
    send(2).await;
    eventually(
        BUDGET * 3,
        "every partition held by the survivor",
        || async { (held(a.http).await == f64::from(ALERT_PARTITIONS)).then_some(()) },
    )
    .await;
    let moved = killed.elapsed();
    exactly(&api, &patients[2], 1).await;
    let alerted = killed.elapsed();
    eprintln!(
        "cluster-report partitions of a killed instance held again after {} ms; the alert of a reading sent meanwhile opened after {} ms",
        moved.as_millis(),
        alerted.as_millis()
    );
    assert!(moved < BUDGET, "partitions moved after {moved:?}");
    assert!(alerted < BUDGET, "alert opened after {alerted:?}");
    // Those already open are restored, not opened again.
    exactly(&api, &patients[0], 1).await;
    exactly(&api, &patients[1], 1).await;
}

/// The race fencing exists for, forced: an instance holding a partition has its database
/// connections terminated (`pg_terminate_backend`) and stays away past its lease; another
/// takes the partition and opens the alert; the first, back, writes what it had decided under
/// its old holding — and is refused: one alert, the new holder's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_former_holder_cut_off_from_the_database_opens_nothing_after_its_partition_moved() {
    let pg = Postgres::start().await;
    let url = pg.database("vigil").await;
    let profiles = Profiles::built_in().unwrap();
    let reg_a = Registry::open_postgres(&url, None, profiles.clone())
        .await
        .unwrap();
    let reg_b = Registry::open_postgres(&url, None, profiles).await.unwrap();
    let (metrics_a, metrics_b) = (Metrics::new(), Metrics::new());
    let (crm_a, _) = Crm::new(reg_a.clone(), metrics_a.clone(), Vec::new());
    let (crm_b, _) = Crm::new(reg_b.clone(), metrics_b.clone(), Vec::new());
    let patient = PatientId::parse("p-fenced").unwrap();
    let lease = partition_lease(alert_partition(&patient));
    let stop = CancellationToken::new();

    let mut held_a = HeldLease::new(lease.clone(), "test", 1_500, &metrics_a);
    assert!(held_a.ensure(&reg_a).await);
    let holding_a = held_a.held().unwrap().clone();
    // a's connections are cut, and it stays away until its lease has lapsed.
    let cut = pg
        .sql_in(
            "vigil",
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE application_name = 'vigil' AND pid <> pg_backend_pid()",
        )
        .await;
    assert!(cut.trim().parse::<u32>().unwrap() >= 1, "{cut}");
    let mut held_b = HeldLease::new(lease.clone(), "test", 5_000, &metrics_b);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(now_ms() > holding_a.expires_ms && held_b.ensure(&reg_b).await) {
        assert!(Instant::now() < deadline, "b never took the partition");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let holding_b = held_b.held().unwrap().clone();
    assert_eq!(holding_b.epoch, holding_a.epoch + 1);
    let open = |by: &str| Effect::Open {
        patient: patient.clone(),
        rule_id: "hr-high".into(),
        kind: "threshold",
        severity: Severity::High,
        message: format!("heart rate high (judged by {by})"),
        trigger: None,
        at_ms: now_ms(),
    };
    assert_eq!(
        crm_b.apply(vec![open("b")], Some(&holding_b), &stop).await,
        Applied::Written
    );
    // b resolves it at once: were a's write let through, it would open a second alert.
    let opened = reg_b
        .alerts(AlertQuery {
            limit: 10,
            ..AlertQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(opened.len(), 1);
    let resolve = Effect::Resolve {
        patient: patient.clone(),
        rule_id: "hr-high".into(),
        reason: "cleared".into(),
        at_ms: now_ms(),
    };
    assert_eq!(
        crm_b.apply(vec![resolve], Some(&holding_b), &stop).await,
        Applied::Written
    );

    assert_eq!(
        crm_a.apply(vec![open("a")], Some(&holding_a), &stop).await,
        Applied::Fenced,
        "a former holder's write went through"
    );
    assert_eq!(metrics_a.alert_writes_fenced.get(), 1);
    let all = reg_b
        .alerts(AlertQuery {
            limit: 10,
            ..AlertQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 1, "{all:#?}");
    assert!(all[0].message.contains("by b"), "{all:#?}");
}

/// `vigil serve` on the database at `url`, with fast alert ticks and escalation.
async fn instance(url: &str, dir: &std::path::Path) -> crate::cli::Child {
    spawn_serve(
        tokio::process::Command::new(env!("CARGO_BIN_EXE_vigil")),
        dir,
        "127.0.0.1:0",
        &[
            ("VIGIL_DATABASE__URL", url),
            ("VIGIL_ALERTS__TICK_MS", "100"),
            ("VIGIL_ALERTS__ESCALATE_AFTER_S", "3"),
        ],
    )
    .await
}

/// The alert partitions an instance says it holds.
async fn held(http: std::net::SocketAddr) -> f64 {
    metric(http, "vigil_alert_partitions_held")
        .await
        .unwrap_or(0.0)
}

/// Whether the patient's timeline shows an alert escalated.
async fn escalated(api: &Api, patient: &str) -> bool {
    timeline(api, patient)
        .await
        .iter()
        .any(|e: &Value| e["kind"] == "alert.escalated")
}

fn lines(text: &str) -> BTreeSet<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Two instances share the partitions. A patient whose partition b evaluates is discharged and
/// readmitted through a: the discharge resolves the open alert ("patient discharged"), a
/// reading over the threshold while discharged is stored but b opens no alert for it, and after
/// the readmission b alerts again — the engine notices written with each change reach b.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discharge_through_one_instance_stops_the_other_from_alerting_until_readmission() {
    let pg = Postgres::start().await;
    let url = pg.database("vigil").await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = instance(&url, dir_a.path()).await;
    let b = instance(&url, dir_b.path()).await;
    let api = Api::new(a.http);
    let b_pid = b.child.id().unwrap();
    let ids = eventually(Duration::from_secs(30), "two evaluators", || async {
        let ids = lines(&pg.sql_in("vigil", "SELECT holder FROM leases WHERE name LIKE 'evaluator:%' AND expires_ms > (extract(epoch from now()) * 1000)::bigint").await);
        (ids.len() == 2).then_some(ids)
    })
    .await;
    let b_id = ids
        .iter()
        .find(|id| id.contains(&format!("-{b_pid}-")))
        .unwrap()
        .clone();
    let b_owns: Vec<u16> = (0..ALERT_PARTITIONS)
        .filter(|k| owner(&ids, *k) == Some(b_id.as_str()))
        .collect();
    let patient = (0..)
        .map(|i| format!("p-dis-{i}"))
        .find(|p| b_owns.contains(&alert_partition(&PatientId::parse(p).unwrap())))
        .unwrap();
    eventually(
        Duration::from_secs(30),
        "b holding the patient's partition",
        || async {
            let lease = partition_lease(alert_partition(&PatientId::parse(&patient).unwrap()));
            let holder = lines(
                &pg.sql_in(
                    "vigil",
                    &format!("SELECT holder FROM leases WHERE name = '{lease}'"),
                )
                .await,
            );
            holder.contains(&b_id).then_some(())
        },
    )
    .await;
    api.patient(&patient).await;
    let (s, v) = api
        .care_plan(
            &patient,
            json!([{"id": "hr-high", "kind": "threshold", "metric": "heart_rate", "op": ">",
                "value": 120, "severity": "high"}]),
        )
        .await;
    assert_eq!(s, reqwest::StatusCode::OK, "{v}");
    let device = format!("{patient}-watch");
    let secret = api.device(&device, &patient, "smartwatch").await;
    let send = |value: f64| {
        let (device, secret) = (device.clone(), secret.clone());
        async move { publish(a.mqtt, &device, &secret, &[("heart_rate", value, 0)]).await }
    };

    send(135.0).await;
    let first = exactly(&api, &patient, 1).await;
    let (s, v) = api
        .post(
            &format!("/api/v1/patients/{patient}/discharge"),
            json!({"reason": "moved away"}),
        )
        .await;
    assert_eq!(s, reqwest::StatusCode::OK, "{v}");
    assert_eq!(v["resolved_alerts"], json!([first[0]["id"]]), "{v}");
    send(140.0).await;
    eventually(Duration::from_secs(20), "the reading stored", || async {
        let obs = api.observations(&patient, "metric=heart_rate").await;
        obs.iter().any(|o| o["value"] == 140.0).then_some(())
    })
    .await;
    let (s, v) = api
        .post(&format!("/api/v1/patients/{patient}/readmit"), json!({}))
        .await;
    assert_eq!(s, reqwest::StatusCode::OK, "{v}");
    send(145.0).await;
    // b judges in commit order: had it alerted on the reading while discharged, that alert
    // would be here as well.
    let all = exactly(&api, &patient, 2).await;
    let open: Vec<&Value> = all.iter().filter(|x| x["status"] == "open").collect();
    assert_eq!(open.len(), 1, "{all:#?}");
    assert_ne!(open[0]["id"], first[0]["id"]);
    let resolved = all.iter().find(|x| x["id"] == first[0]["id"]).unwrap();
    assert_eq!(resolved["resolve_note"], "patient discharged", "{resolved}");
}
