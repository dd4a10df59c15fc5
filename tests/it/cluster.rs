//! Vigil instances on a shared PostgreSQL when something fails: real `vigil serve` processes, a
//! real PostgreSQL (`scripts/pg-temp`, stopped and started again under them), real devices
//! (Paho, `mosquitto_sub`).

use std::time::Duration;

use crate::cli::{spawn_serve, spawn_vigil_with};
use crate::faults::{Publisher, stored};
use crate::postgres::Postgres;
use crate::support::{Api, eventually, metric, run};

/// PostgreSQL goes away while a device streams readings: nothing is acknowledged while it is
/// away (the commits fail; the device keeps its readings and resends them), and once it is back
/// Vigil resumes by itself — no restart — storing every reading exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_restarted_under_load_withholds_acknowledgements_and_loses_nothing() {
    // Enough that the outage comes while the device is still sending.
    const COUNT: usize = 20_000;
    let pg = Postgres::start().await;
    let url = pg.database("vigil").await;
    let dir = tempfile::tempdir().unwrap();
    let vigil = spawn_vigil_with(
        dir.path(),
        "127.0.0.1:0",
        &[("VIGIL_DATABASE__URL", url.as_str())],
    )
    .await;
    let api = Api::new(vigil.http);
    api.patient("p-pg").await;
    let secret = api.device("hr-pg", "p-pg", "smartwatch").await;
    let start = vigil::domain::now_ms() / 1000 - 43_200;
    let device = Publisher::start(vigil.mqtt.port(), "hr-pg", &secret, COUNT, start, (60, 20));
    eventually(Duration::from_secs(60), "readings acknowledged", || async {
        (device.acked() >= 50).then_some(())
    })
    .await;

    pg.stop_server().await;
    // Commits fail: wait until two have, and see that nothing was committed between them. An
    // acknowledgement goes out only after its reading's commit is counted, so Vigil's count is
    // the measure; the device's own count reaches the test late under load (the publisher
    // reports it between publishes), so it is only held to be no more than what was committed.
    let failures = || async { metric(vigil.http, "vigil_store_commit_failures_total").await };
    let committed = || async {
        let stored = metric(vigil.http, "vigil_readings_accepted_total").await;
        let again = metric(vigil.http, "vigil_readings_duplicate_total").await;
        stored.unwrap_or(0.0) + again.unwrap_or(0.0)
    };
    let first = eventually(Duration::from_secs(30), "a failed commit", || async {
        failures().await.filter(|n| *n >= 1.0)
    })
    .await;
    let committed_while_away = committed().await;
    eventually(Duration::from_secs(30), "another failed commit", || async {
        failures().await.filter(|n| *n > first)
    })
    .await;
    assert_eq!(
        committed().await,
        committed_while_away,
        "a reading was committed, and so acknowledged, while PostgreSQL was away"
    );
    let acked = device.acked();
    assert!(
        acked as f64 <= committed_while_away,
        "the device heard {acked} acknowledgements, more than the {committed_while_away} commits"
    );
    assert!(
        committed_while_away < COUNT as f64,
        "the outage came too late to matter"
    );
    // A load balancer asking this instance is told to go elsewhere, and why.
    let health = reqwest::get(format!("http://{}/healthz", vigil.http))
        .await
        .unwrap();
    assert_eq!(health.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    let why: serde_json::Value = health.json().await.unwrap();
    assert_eq!(why["status"], "unavailable", "{why}");
    assert!(
        why["reason"].as_str().unwrap().contains("database"),
        "{why}"
    );

    pg.resume().await;
    device.finish(Duration::from_secs(180)).await;
    let health = reqwest::get(format!("http://{}/healthz", vigil.http))
        .await
        .unwrap();
    assert_eq!(health.status(), reqwest::StatusCode::OK, "back in service");
    assert_eq!(
        stored(&api, "p-pg").await,
        COUNT,
        "every reading stored exactly once"
    );
    assert_eq!(
        pg.sql_in(
            "vigil",
            "SELECT count(*) - count(DISTINCT time_ms) FROM readings.observations"
        )
        .await
        .trim(),
        "0"
    );
}

/// Two instances on one database, a device connected to the second: restarting the first
/// leaves the device online (a starting instance marks offline only the devices of instances
/// that are gone); killing the second (SIGKILL: nobody reports the device gone) shows it
/// offline once the dead instance's heartbeat lapses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_leaves_other_instances_devices_online_and_a_dead_ones_go_offline() {
    let pg = Postgres::start().await;
    let url = pg.database("vigil").await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = instance(&url, dir_a.path()).await;
    let mut b = instance(&url, dir_b.path()).await;
    let api_a = Api::new(a.http);
    api_a.patient("p-pres").await;
    let secret = api_a.device("scale-pres", "p-pres", "scale").await;
    let _device = connected_device(b.mqtt, "scale-pres", &secret, &api_a).await;
    // Each holds its heartbeat; one of the two sweeps.
    let held = |http, lease: &'static str| async move {
        metric(http, &format!("vigil_leases_held{{lease=\"{lease}\"}}"))
            .await
            .unwrap_or(0.0)
    };
    eventually(Duration::from_secs(15), "one sweeper", || async {
        let sweepers = held(a.http, "presence").await + held(b.http, "presence").await;
        (sweepers == 1.0).then_some(())
    })
    .await;
    assert_eq!(held(a.http, "instance").await, 1.0);
    assert_eq!(held(b.http, "instance").await, 1.0);

    // a stops and starts again (a new instance on the same data directory).
    let pid = a.child.id().unwrap().to_string();
    assert!(run("kill", &["-TERM", &pid], None).await.ok);
    assert!(a.child.wait().await.unwrap().success());
    let a = instance(&url, dir_a.path()).await;
    let api_a = Api::new(a.http);
    assert!(
        online(&api_a, "scale-pres").await,
        "a's restart took b's device offline"
    );

    // b dies.
    b.child.start_kill().unwrap();
    b.child.wait().await.unwrap();
    let took = std::time::Instant::now();
    eventually(
        Duration::from_secs(60),
        "the dead instance's device offline",
        || {
            let api = api_a.clone();
            async move { (!online(&api, "scale-pres").await).then_some(()) }
        },
    )
    .await;
    eprintln!(
        "cluster-report device offline {} ms after its instance died",
        took.elapsed().as_millis()
    );
}

/// Two instances on one database: a device revoked through one loses its connection to the
/// other within moments, and the other refuses it from then on (each instance checks
/// CONNECTs against its own cache of credentials, which follows the database).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_revoked_through_one_instance_is_cut_off_by_the_other() {
    let pg = Postgres::start().await;
    let url = pg.database("vigil").await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = instance(&url, dir_a.path()).await;
    let b = instance(&url, dir_b.path()).await;
    let (api_a, api_b) = (Api::new(a.http), Api::new(b.http));
    api_a.patient("p-rev").await;
    let secret = api_a.device("scale-rev", "p-rev", "scale").await;
    let mut device = connected_device(b.mqtt, "scale-rev", &secret, &api_b).await;

    let (s, v) = api_a
        .post("/api/v1/devices/scale-rev/revoke", serde_json::json!({}))
        .await;
    assert_eq!(s, reqwest::StatusCode::OK, "{v}");
    let took = std::time::Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(10), device.wait()).await;
    assert!(ended.is_ok(), "b kept the revoked device's connection");
    eprintln!(
        "cluster-report revoked device cut off by the other instance after {} ms",
        took.elapsed().as_millis()
    );
    // Refused from then on (MQTT 3.1.1 has no code for "revoked": a refusal, whichever).
    let again = device_connection(b.mqtt, "scale-rev", &secret)
        .wait_with_output()
        .await
        .unwrap();
    assert!(!again.status.success());
    let why = String::from_utf8_lossy(&again.stderr);
    assert!(why.contains("Connection Refused"), "{why}");
}

/// `vigil serve` on the database at `url`, with its data directory `dir`.
async fn instance(url: &str, dir: &std::path::Path) -> crate::cli::Child {
    spawn_serve(
        tokio::process::Command::new(env!("CARGO_BIN_EXE_vigil")),
        dir,
        "127.0.0.1:0",
        &[("VIGIL_DATABASE__URL", url)],
    )
    .await
}

/// A device (`mosquitto_sub` with the device's credentials) connected to the endpoint at
/// `mqtt`, once `api` shows it online. A device made through another instance is known to this
/// one within moments: a refused try is tried again, as a device does.
async fn connected_device(
    mqtt: std::net::SocketAddr,
    id: &str,
    secret: &str,
    api: &Api,
) -> tokio::process::Child {
    let mut device = device_connection(mqtt, id, secret);
    eventually(Duration::from_secs(15), "the device online", || {
        if device.try_wait().unwrap().is_some() {
            device = device_connection(mqtt, id, secret);
        }
        let api = api.clone();
        async move { online(&api, id).await.then_some(()) }
    })
    .await;
    device
}

/// One try of a device's connection; its complaints on stderr.
fn device_connection(mqtt: std::net::SocketAddr, id: &str, secret: &str) -> tokio::process::Child {
    tokio::process::Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &mqtt.port().to_string(),
            "-V",
            "mqttv311",
        ])
        .args(["-i", id, "-u", id, "-P", secret, "-k", "5"])
        .args(["-t", &format!("vigil/v1/devices/{id}/errors")])
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// Whether the API shows device `id` online.
async fn online(api: &Api, id: &str) -> bool {
    let (s, d) = api.get(&format!("/api/v1/devices/{id}")).await;
    assert_eq!(s, reqwest::StatusCode::OK, "{d}");
    d["online"] == true
}

/// Two instances on one database: a dashboard's live feed on the first shows a device's
/// readings, its alert and its status as they happen on the second (where the device sends),
/// heard through PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dashboard_on_one_instance_sees_what_happens_on_the_other() {
    use futures_util::StreamExt as _;
    use tokio_tungstenite::tungstenite::Message;
    let pg = Postgres::start().await;
    let url = pg.database("vigil").await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = instance(&url, dir_a.path()).await;
    let b = instance(&url, dir_b.path()).await;
    let api = Api::new(a.http);
    api.patient("p-live").await;
    let (s, v) = api
        .care_plan(
            "p-live",
            serde_json::json!([{"id": "hr-high", "kind": "threshold", "metric": "heart_rate",
                "op": ">", "value": 120, "severity": "high"}]),
        )
        .await;
    assert_eq!(s, reqwest::StatusCode::OK, "{v}");
    let secret = api.device("hr-live", "p-live", "smartwatch").await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!(
        "ws://{}/api/v1/live?token={}",
        a.http,
        crate::support::TOKEN
    ))
    .await
    .unwrap();

    // The device sends through b (tried again while b does not know it yet, as a device does).
    let body = serde_json::json!({"metric": "heart_rate", "value": 135});
    eventually(
        Duration::from_secs(15),
        "b acknowledging the reading",
        || {
            let body = serde_json::to_vec(&body).unwrap();
            let secret = secret.clone();
            async move {
                crate::support::mosquitto_pub(
                    b.mqtt,
                    crate::support::V::V5,
                    "hr-live",
                    &secret,
                    "vigil/v1/devices/hr-live/readings",
                    &body,
                    &[],
                )
                .await
                .ok
                .then_some(())
            }
        },
    )
    .await;
    let sent = std::time::Instant::now();
    let mut seen = std::collections::BTreeSet::new();
    tokio::time::timeout(Duration::from_secs(20), async {
        while seen.len() < 3 {
            let Some(Ok(Message::Text(t))) = ws.next().await else {
                panic!("the live feed closed");
            };
            let e: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
            match e["type"].as_str() {
                Some("observation") if e["patient_id"] == "p-live" && e["value"] == 135.0 => {
                    seen.insert("observation");
                }
                Some("alert") if e["alert"]["patient_id"] == "p-live" => {
                    assert_eq!(e["event"], "alert.opened", "{e}");
                    seen.insert("alert");
                }
                Some("device_status") if e["device_id"] == "hr-live" => {
                    seen.insert("device_status");
                }
                _ => {}
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("seen on a's live feed: {seen:?}"));
    eprintln!(
        "cluster-report a reading, its alert and its device's status sent through one instance reached a dashboard on the other within {} ms",
        sent.elapsed().as_millis()
    );

    // The instances' listening connections are cut: what was announced meanwhile is lost to
    // them, so the dashboard is told to reload once a's listens again.
    let cut = pg
        .sql_in(
            "vigil",
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE application_name = 'vigil-listen'",
        )
        .await;
    assert_eq!(cut.trim(), "2", "one listening connection per instance");
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let Some(Ok(Message::Text(t))) = ws.next().await else {
                panic!("the live feed closed");
            };
            if t.as_str() == r#"{"type":"resync"}"# {
                break;
            }
        }
    })
    .await
    .expect("a resync after the gap in listening");
}

/// Two instances on one database: a user name locked by failed sign-ins through the first is
/// locked on the second before the second has counted its own free failures, and stays locked
/// for the right password; a device id locked by failed connects through the first is refused
/// by the second in the same way. Guesses spread over the instances behind a load balancer
/// earn no more than guesses at one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_sign_ins_and_device_connects_count_across_instances() {
    /// Failures in a row that cost nothing (`web::login_throttle`, `mqtt.auth_failures_free`).
    const FREE_SIGN_INS: usize = 5;
    const FREE_CONNECTS: usize = 10;
    let pg = Postgres::start().await;
    let url = pg.database("vigil").await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = instance(&url, dir_a.path()).await;
    let b = instance(&url, dir_b.path()).await;
    let api_a = Api::new(a.http);
    let password = "a-long-enough-password-for-tests";
    let (s, v) = api_a
        .post(
            "/api/v1/users",
            serde_json::json!({"name": "nurse-spread", "password": password, "role": "clinician"}),
        )
        .await;
    assert_eq!(s, reqwest::StatusCode::CREATED, "{v}");

    let http = reqwest::Client::new();
    let sign_in = |at: std::net::SocketAddr, password: &'static str| {
        let http = http.clone();
        async move {
            http.post(format!("http://{at}/api/v1/session"))
                .json(&serde_json::json!({"username": "nurse-spread", "password": password}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    for _ in 0..=FREE_SIGN_INS {
        assert_eq!(sign_in(a.http, "wrong-password").await, 401);
    }
    assert_eq!(sign_in(a.http, "wrong-password").await, 429, "locked on a");
    let mut own = 0;
    eventually(
        Duration::from_secs(10),
        "b refusing the locked user",
        || {
            own += 1;
            let attempt = sign_in(b.http, "wrong-password");
            async move {
                match attempt.await {
                    429 => Some(()),
                    s => {
                        assert_eq!(s, 401);
                        assert!(own < FREE_SIGN_INS, "b counted its own free failures first");
                        None
                    }
                }
            }
        },
    )
    .await;
    // The right password waits too (the lock is not a hint that the password was wrong).
    assert_eq!(sign_in(b.http, password).await, 429);
    assert_eq!(sign_in(a.http, password).await, 429);

    // Device connects: a wrong secret through a until a locks the id, then through b.
    api_a.patient("p-spread").await;
    let _secret = api_a.device("scale-spread", "p-spread", "scale").await;
    let refused = |http| async move {
        crate::support::metric(
            http,
            "vigil_mqtt_connections_refused_total{reason=\"auth_failures\"}",
        )
        .await
        .unwrap_or(0.0)
    };
    // One connect with a wrong secret, refused.
    let wrong = |mqtt| {
        let try_once = device_connection(mqtt, "scale-spread", "not-the-secret");
        async move {
            let out = try_once.wait_with_output().await.unwrap();
            assert!(!out.status.success());
        }
    };
    for _ in 0..=FREE_CONNECTS {
        wrong(a.mqtt).await;
    }
    assert_eq!(refused(a.http).await, 0.0, "each wrong secret checked on a");
    wrong(a.mqtt).await;
    assert_eq!(refused(a.http).await, 1.0, "locked on a");
    let mut own = 0;
    eventually(
        Duration::from_secs(10),
        "b refusing the locked device",
        || {
            own += 1;
            assert!(
                own <= FREE_CONNECTS,
                "b counted its own free failures first"
            );
            let try_b = wrong(b.mqtt);
            async move {
                try_b.await;
                (refused(b.http).await > 0.0).then_some(())
            }
        },
    )
    .await;
    eprintln!(
        "cluster-report throttles: a user and a device locked through one instance were refused by the other"
    );
}
