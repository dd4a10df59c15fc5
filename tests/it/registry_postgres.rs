//! Vigil with its registry on PostgreSQL, through the API: two `vigil serve` processes given one
//! `[database] url` act on one registry (each sees what the other wrote) and append to one
//! audit chain under concurrent writers; concurrent PATCHes of different fields of one patient
//! both survive.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::cli::spawn_serve;
use crate::postgres::Postgres;
use crate::support::Api;

const VIGIL: &str = env!("CARGO_BIN_EXE_vigil");
/// Writers, and audited changes each makes.
const WRITERS: usize = 8;
const CHANGES: usize = 500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_database_share_the_registry_and_one_audit_chain() {
    let pg = Postgres::start().await;
    let url = pg.database("clinic").await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let env = [("VIGIL_DATABASE__URL", url.as_str())];
    // Started together: the migrations run once, under their lock.
    let (a, b) = tokio::join!(
        spawn_serve(
            tokio::process::Command::new(VIGIL),
            dir_a.path(),
            "127.0.0.1:0",
            &env
        ),
        spawn_serve(
            tokio::process::Command::new(VIGIL),
            dir_b.path(),
            "127.0.0.1:0",
            &env
        ),
    );
    let (api_a, api_b) = (Api::new(a.http), Api::new(b.http));

    // A patient created through one instance is there on the other, and a device made on one
    // is known to the other's device list.
    api_a.patient("p-shared").await;
    let (s, v) = api_b.get("/api/v1/patients/p-shared").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    api_b
        .device("ox-shared", "p-shared", "pulse-oximeter")
        .await;
    let (s, v) = api_a.get("/api/v1/devices/ox-shared").await;
    assert_eq!(s, StatusCode::OK, "{v}");

    // Eight writers, four on each instance, each changing its own patient 500 times.
    for w in 0..WRITERS {
        let api = if w % 2 == 0 { &api_a } else { &api_b };
        api.patient(&format!("p-w{w}")).await;
    }
    let (_, before) = api_a.get("/api/v1/audit/verify").await;
    let before = before["lines"].as_u64().unwrap();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let api = if w % 2 == 0 {
                api_a.clone()
            } else {
                api_b.clone()
            };
            tokio::spawn(async move {
                for n in 0..CHANGES {
                    let (s, v) = api
                        .patch(
                            &format!("/api/v1/patients/p-w{w}"),
                            json!({"contact_notes": format!("change {n} by writer {w}")}),
                        )
                        .await;
                    assert_eq!(s, StatusCode::OK, "writer {w} change {n}: {v}");
                }
            })
        })
        .collect();
    for w in writers {
        tokio::time::timeout(Duration::from_secs(300), w)
            .await
            .expect("the writers finish within five minutes")
            .unwrap();
    }
    // One chain, whichever instance checks it, holding every change (and the checks' reads).
    let (s, va) = api_a.get("/api/v1/audit/verify").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(va["intact"], true, "{va}");
    let (_, vb) = api_b.get("/api/v1/audit/verify").await;
    assert_eq!(vb["intact"], true, "{vb}");
    let changes = pg
        .sql_in(
            "clinic",
            "SELECT count(*) FROM audit WHERE action = 'patient.update'",
        )
        .await;
    assert_eq!(
        changes.trim().parse::<usize>().unwrap(),
        WRITERS * CHANGES,
        "every change has its line"
    );
    assert!(
        va["lines"].as_u64().unwrap() >= before + (WRITERS * CHANGES) as u64,
        "{va}"
    );
    for w in 0..WRITERS {
        let (_, p) = api_b.get(&format!("/api/v1/patients/p-w{w}")).await;
        assert_eq!(
            p["contact_notes"],
            format!("change {} by writer {w}", CHANGES - 1),
            "{p}"
        );
    }
    drop((a, b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_patches_of_different_fields_of_one_patient_both_survive() {
    let pg = Postgres::start().await;
    let url = pg.database("clinic").await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let env = [("VIGIL_DATABASE__URL", url.as_str())];
    let a = spawn_serve(
        tokio::process::Command::new(VIGIL),
        dir_a.path(),
        "127.0.0.1:0",
        &env,
    )
    .await;
    let b = spawn_serve(
        tokio::process::Command::new(VIGIL),
        dir_b.path(),
        "127.0.0.1:0",
        &env,
    )
    .await;
    let (api_a, api_b) = (Api::new(a.http), Api::new(b.http));
    api_a.patient("p-both").await;
    // Each round, one instance sets the phone and the other the email at the same moment.
    for round in 0..40 {
        let phone = format!("+44 20 7946 {round:04}");
        let email = format!("ada+{round}@example.org");
        let (pa, pb) = tokio::join!(
            api_a.patch("/api/v1/patients/p-both", json!({"phone": phone})),
            api_b.patch("/api/v1/patients/p-both", json!({"email": email})),
        );
        assert_eq!(pa.0, StatusCode::OK, "{}", pa.1);
        assert_eq!(pb.0, StatusCode::OK, "{}", pb.1);
        let (_, p) = api_a.get("/api/v1/patients/p-both").await;
        assert_eq!(
            (&p["phone"], &p["email"]),
            (&json!(phone), &json!(email)),
            "round {round}: neither update is lost: {p}"
        );
    }
    drop((a, b));
}

/// Two gateways on one database share the outbox: a sink's deliveries are one instance's at a
/// time (the other attempts nothing), each event reaches the receiver once, and when the
/// holder stops, the other takes the deliveries over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_instance_at_a_time_delivers_the_shared_outbox_and_another_takes_over() {
    use crate::alerts::{patient_with_app, publish};
    use crate::fhir::Receiver;
    use crate::support::{Gateway, eventually, metric};
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const WAIT: Duration = Duration::from_secs(30);
    let pg = Postgres::start().await;
    let url = pg.database("clinic").await;
    let rx = &Receiver::start(&["--webhook-secret", SECRET]).await;
    let hook = rx.url("/hooks/vigil");
    let gateway = || {
        let (url, hook) = (url.clone(), hook.clone());
        Gateway::start_with(move |c| {
            c.database = Some(vigil::config::DatabaseConfig { url, ca_file: None });
            c.webhook = Some(vigil::config::WebhookConfig {
                url: hook,
                secret: SECRET.into(),
                retry: vigil::config::RetryConfig {
                    retry_initial_ms: 100,
                    retry_max_s: 1,
                    ..Default::default()
                },
            });
        })
    };
    let a = gateway().await;
    let b = gateway().await;
    // The receiver is down: the event waits in the outbox and is tried again and again, about
    // once a second, for longer than an idle worker sleeps (5 s), so that both instances look.
    rx.control(json!({"down": true})).await;
    let secret = patient_with_app(&a.client, "p-one").await;
    publish(a.mqtt, "p-one-app", &secret, &[("bp_systolic", 195.0, 5)]).await;
    eventually(WAIT, "a dozen refused attempts", || async move {
        (rx.state().await["webhook_attempts"].as_u64().unwrap_or(0) >= 12).then_some(())
    })
    .await;
    // Only one instance has attempted anything.
    let attempts = |g: &Gateway| {
        let http = g.http;
        async move {
            metric(
                http,
                "vigil_outbox_attempts_total{sink=\"webhook\",outcome=\"pending\"}",
            )
            .await
            .unwrap_or(0.0)
        }
    };
    let (at_a, at_b) = (attempts(&a).await, attempts(&b).await);
    assert!(
        (at_a > 0.0) != (at_b > 0.0),
        "one instance attempts the deliveries: a {at_a}, b {at_b}"
    );
    rx.control(json!({"down": false})).await;
    let delivered = |n: usize| async move {
        eventually(WAIT, "the events delivered", || async move {
            let state = rx.state().await;
            let hooks = state["webhooks"].as_array().unwrap().clone();
            (hooks.len() >= n).then_some(hooks)
        })
        .await
    };
    let hooks = delivered(1).await;
    assert_eq!(hooks.len(), 1, "delivered once: {hooks:?}");

    // The holder stops (giving the lease up); the other delivers what comes next.
    let (holder, other) = if at_a > 0.0 { (a, b) } else { (b, a) };
    holder.stop().await;
    let secret = patient_with_app(&other.client, "p-two").await;
    publish(
        other.mqtt,
        "p-two-app",
        &secret,
        &[("bp_systolic", 196.0, 5)],
    )
    .await;
    let hooks = delivered(2).await;
    let ids: std::collections::HashSet<&str> =
        hooks.iter().map(|h| h["id"].as_str().unwrap()).collect();
    assert_eq!(
        (hooks.len(), ids.len()),
        (2, 2),
        "each event once: {hooks:?}"
    );
    other.stop().await;
}
