//! Three `vigil serve` processes on one PostgreSQL behind a real HAProxy running
//! `deploy/haproxy.cfg`, under the simulator's fleet (`vigil-sim run`, every story): one
//! instance killed mid-run and started again.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::cli::{Child, spawn_serve_on};
use crate::fhir::Receiver;
use crate::postgres::Postgres;
use crate::support::{Api, TOKEN, eventually, free_port, metric};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// The most readings the simulator packs into one payload (`simulator/src/fleet.rs`).
const MAX_PACK: f64 = 300.0;

/// The alarm budget: a dead instance's alert partitions are evaluated again within it.
const BUDGET: Duration = Duration::from_secs(10);

/// HAProxy (Debian's) running `deploy/haproxy.cfg`, killed when dropped.
struct Haproxy {
    _child: tokio::process::Child,
    mqtt: std::net::SocketAddr,
    http: std::net::SocketAddr,
}

impl Haproxy {
    /// In front of `instances` (three), on free ports; once it answers `/healthz`.
    async fn start(instances: &[&Child]) -> Haproxy {
        let mqtt: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let http: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let cfg = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/haproxy.cfg");
        let mut cmd = tokio::process::Command::new("/usr/sbin/haproxy");
        cmd.args(["-db", "-f", cfg.to_str().unwrap()])
            .env("VIGIL_LB_MQTT", mqtt.to_string())
            .env("VIGIL_LB_HTTP", http.to_string());
        for (i, c) in instances.iter().enumerate() {
            let n = i + 1;
            cmd.env(format!("VIGIL{n}_MQTT"), c.mqtt.to_string())
                .env(format!("VIGIL{n}_HTTP"), c.http.to_string())
                .env(format!("VIGIL{n}_HTTP_PORT"), c.http.port().to_string());
        }
        let child = cmd
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("haproxy (Debian's; ./scripts/test installs it)");
        eventually(
            Duration::from_secs(20),
            "HAProxy answering",
            || async move {
                let r = reqwest::get(format!("http://{http}/healthz")).await.ok()?;
                r.status().is_success().then_some(())
            },
        )
        .await;
        Haproxy {
            _child: child,
            mqtt,
            http,
        }
    }
}

/// Every story of the simulator's mix through HAProxy to three instances; the one that is
/// neither delivering webhooks nor showing the dashboard is killed (SIGKILL) once devices are
/// connected to it, and started again on its addresses after its partitions have moved. Every
/// reading acknowledged is stored exactly once, every alert a story predicts is opened exactly
/// once, the dead instance's partitions are held again within the budget, each webhook event is
/// delivered once, and a dashboard on a survivor saw readings of devices connected to each of
/// the three instances.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_behind_haproxy_lose_nothing_when_one_is_killed_under_load() {
    let sim = PathBuf::from(env!("CARGO_BIN_EXE_vigil")).with_file_name("vigil-sim");
    assert!(
        sim.exists(),
        "{} missing: build it (cargo build -p vigil-sim; ./scripts/test builds the workspace)",
        sim.display()
    );
    let pg = Postgres::start().await;
    let url = pg.database("vigil").await;
    let rx = Receiver::start(&["--webhook-secret", SECRET]).await;
    let hook = rx.url("/hooks/vigil");
    let env = [
        ("VIGIL_DATABASE__URL", url.as_str()),
        ("VIGIL_ALERTS__TICK_MS", "100"),
        ("VIGIL_WEBHOOK__URL", hook.as_str()),
        ("VIGIL_WEBHOOK__SECRET", SECRET),
    ];
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut vigils = Vec::new();
    for d in &dirs {
        vigils.push(start(d.path(), "127.0.0.1:0", "127.0.0.1:0", &env).await);
    }
    let lb = Haproxy::start(&vigils.iter().collect::<Vec<_>>()).await;
    let ids = instance_ids(&pg, &vigils).await;

    // The victim: not the instance delivering webhooks (a kill in the middle of a delivery is
    // at-least-once, tested elsewhere); the dashboard: on another survivor.
    let delivering = eventually(Duration::from_secs(30), "a webhook deliverer", || {
        let pg = &pg;
        async move {
            let h = pg
                .sql_in(
                    "vigil",
                    "SELECT holder FROM leases WHERE name = 'outbox:webhook'",
                )
                .await;
            let h = h.trim().to_owned();
            (!h.is_empty()).then_some(h)
        }
    })
    .await;
    let victim = ids.iter().position(|id| *id != delivering).unwrap();
    let watcher = (0..3).find(|i| *i != victim).unwrap();
    let seen = watch(&vigils[watcher]).await;

    // The fleet, provisioned and run through HAProxy.
    let work = tempfile::tempdir().unwrap();
    let creds = work.path().join("mix.json");
    let lb_http = format!("http://{}", lb.http);
    let out = sim_command(&sim)
        .args([
            "provision",
            "--url",
            &lb_http,
            "--patients",
            "9",
            "--prefix",
            "mix",
        ])
        .args(["--out", creds.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = sim_command(&sim)
        .args(["run", "--credentials", creds.to_str().unwrap()])
        .args(["--mqtt", &format!("mqtt://{}", lb.mqtt)])
        // Ten simulated hours (streaming devices send every second): the stories that play
        // out in them raise their alerts.
        .args([
            "--duration",
            "20s",
            "--speed",
            "1800",
            "--scenario",
            "mix",
            "--seed",
            "7",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(work.path().join("run.log")).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    // Devices spread over the three; note whose are where, then kill the victim.
    let placed = eventually(Duration::from_secs(30), "devices on every instance", || {
        let (pg, ids) = (&pg, &ids);
        async move {
            let placed = patients_by_instance(pg, ids).await;
            (placed.len() == 3).then_some(placed)
        }
    })
    .await;
    let victim_devices: f64 = pg
        .sql_in(
            "vigil",
            &format!(
                "SELECT count(*) FROM devices WHERE online AND instance = '{}'",
                ids[victim]
            ),
        )
        .await
        .trim()
        .parse()
        .unwrap();
    vigils[victim].child.start_kill().unwrap();
    vigils[victim].child.wait().await.unwrap();
    let killed = Instant::now();
    let survivors: Vec<usize> = (0..3).filter(|i| *i != victim).collect();
    eventually(BUDGET * 3, "the survivors holding every partition", || {
        let (a, b) = (vigils[survivors[0]].http, vigils[survivors[1]].http);
        async move {
            let held = partitions(a).await + partitions(b).await;
            (held == 32.0).then_some(())
        }
    })
    .await;
    let moved = killed.elapsed();
    // Started again where HAProxy knows it.
    let (http, mqtt) = (
        vigils[victim].http.to_string(),
        vigils[victim].mqtt.to_string(),
    );
    vigils[victim] = start(dirs[victim].path(), &http, &mqtt, &env).await;

    let Ok(out) = tokio::time::timeout(Duration::from_secs(120), run.wait_with_output()).await
    else {
        let log = std::fs::read_to_string(work.path().join("run.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        panic!("the run did not end; its last words: {tail:#?}");
    };
    let out = out.unwrap();
    assert!(out.status.success());
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    // The simulator's MQTT client (rumqttc) drops the publishes still unacknowledged when its
    // connection dies and the instance it reaches next has no session for it: those readings
    // were never acknowledged, so Vigil owes nothing for them. Only the killed instance's
    // devices lose any (at most their in-flight window, 50 each).
    let published = summary["published"].as_f64().unwrap();
    let unacknowledged = published - summary["acknowledged"].as_f64().unwrap();
    assert!(
        (0.0..=victim_devices * 50.0).contains(&unacknowledged),
        "{unacknowledged} publishes unacknowledged: {summary}"
    );

    // Every reading acknowledged stored once: none twice, and all but the stories' refused ones.
    let dup = pg
        .sql_in(
            "vigil",
            "SELECT count(*) - count(DISTINCT (device_id, metric, time_ms)) FROM readings.observations",
        )
        .await;
    assert_eq!(dup.trim(), "0", "readings stored twice");
    let stored: f64 = pg
        .sql_in("vigil", "SELECT count(*) FROM readings.observations")
        .await
        .trim()
        .parse()
        .unwrap();
    let readings = summary["readings"].as_f64().unwrap();
    let skewed = summary["skewed"].as_f64().unwrap();
    // Refused: the skewed stories' payloads; never acknowledged: the dropped ones (at most a
    // packed payload's readings each).
    let owed = readings - (skewed + unacknowledged) * MAX_PACK;
    assert!(
        stored <= readings && stored >= owed,
        "{stored} stored of {readings} sent ({owed} at least)"
    );

    // Every alert predicted within the run opened exactly once — as an episode: a cuff reading
    // past both crisis limits opens one blood-pressure alert under whichever of the two rules
    // met its reading first (the simulator's encodings may send the diastolic first).
    let plan = vigil::alerts::rules::CarePlan::default_plan();
    let episode = |rule_id: &str| {
        plan.rules
            .iter()
            .find(|r| r.id() == rule_id)
            .map_or_else(|| rule_id.to_owned(), vigil::alerts::engine::episode_key)
    };
    let api = Api::new(lb.http);
    let ended_ms = vigil::domain::now_ms();
    let mut opened = 0;
    for p in summary["expectations"].as_array().unwrap() {
        let id = p["patient_id"].as_str().unwrap();
        let story = p["scenario"].as_str().unwrap();
        let predicted: Vec<String> = p["expect"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "alert" && e["by_ms"].as_i64().unwrap() <= ended_ms)
            .filter_map(|e| e["rule_id"].as_str().map(str::to_owned))
            .collect();
        let alerts = eventually(Duration::from_secs(30), "the predicted alerts", || {
            let (api, predicted) = (&api, &predicted);
            async move {
                let (_, v) = api.get(&format!("/api/v1/alerts?patient_id={id}")).await;
                let alerts = v["alerts"].as_array().cloned().unwrap_or_default();
                predicted
                    .iter()
                    .all(|r| {
                        alerts.iter().any(|a| {
                            a["rule_id"]
                                .as_str()
                                .is_some_and(|id| episode(id) == episode(r))
                        })
                    })
                    .then_some(alerts)
            }
        })
        .await;
        for rule in &predicted {
            let n = alerts
                .iter()
                .filter(|a| {
                    a["rule_id"]
                        .as_str()
                        .is_some_and(|id| episode(id) == episode(rule))
                })
                .count();
            assert_eq!(n, 1, "{story}: {rule} opened {n} times: {alerts:#?}");
            opened += 1;
        }
        if p["expect"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "no_alert")
        {
            assert!(alerts.is_empty(), "{story}: {alerts:#?}");
        }
    }
    assert!(opened >= 4, "{summary}");

    // Each webhook event delivered once.
    eventually(Duration::from_secs(60), "every webhook delivered", || {
        let pg = &pg;
        async move {
            let left = pg
                .sql_in(
                    "vigil",
                    "SELECT count(*) FROM outbox WHERE sink = 'webhook' AND status <> 'delivered'",
                )
                .await;
            (left.trim() == "0").then_some(())
        }
    })
    .await;
    let events: usize = pg
        .sql_in(
            "vigil",
            "SELECT count(*) FROM outbox WHERE sink = 'webhook'",
        )
        .await
        .trim()
        .parse()
        .unwrap();
    let state = rx.state().await;
    let mut deliveries: BTreeMap<String, usize> = BTreeMap::new();
    for d in state["webhooks"].as_array().unwrap() {
        *deliveries
            .entry(d["id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(deliveries.len(), events, "events delivered");
    assert!(
        deliveries.values().all(|n| *n == 1),
        "delivered more than once: {deliveries:?}"
    );

    // The dashboard on a survivor saw readings of devices on every instance.
    let seen = seen.lock().unwrap().clone();
    for (i, patients) in &placed {
        assert!(
            patients.iter().any(|p| seen.contains(p)),
            "the dashboard on instance {watcher} saw no reading of instance {i}'s devices ({patients:?}); it saw {seen:?}"
        );
    }
    eprintln!(
        "cluster-report haproxy: 3 instances, {readings} readings sent, {stored} stored, {opened} predicted alerts each opened once, {events} webhook events each delivered once; a killed instance's partitions held again after {} ms",
        moved.as_millis()
    );
    assert!(moved < BUDGET, "partitions moved after {moved:?}");
}

/// `vigil serve` on `dir` at these addresses, with `env`.
async fn start(dir: &std::path::Path, http: &str, mqtt: &str, env: &[(&str, &str)]) -> Child {
    spawn_serve_on(
        tokio::process::Command::new(env!("CARGO_BIN_EXE_vigil")),
        dir,
        http,
        mqtt,
        env,
    )
    .await
}

fn sim_command(sim: &std::path::Path) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(sim);
    c.env("VIGIL_TOKEN", TOKEN);
    c
}

/// Each instance's id (its evaluator lease names it; the id holds its process id).
async fn instance_ids(pg: &Postgres, vigils: &[Child]) -> Vec<String> {
    eventually(
        Duration::from_secs(30),
        "every instance evaluating",
        || async move {
            let held = pg
                .sql_in(
                    "vigil",
                    "SELECT holder FROM leases WHERE name LIKE 'evaluator:%'",
                )
                .await;
            vigils
                .iter()
                .map(|v| {
                    let pid = format!("-{}-", v.child.id()?);
                    held.lines().find(|h| h.contains(&pid)).map(str::to_owned)
                })
                .collect::<Option<Vec<String>>>()
        },
    )
    .await
}

/// The patients whose devices are connected to each instance now, by instance index.
async fn patients_by_instance(pg: &Postgres, ids: &[String]) -> BTreeMap<usize, BTreeSet<String>> {
    let rows = pg
        .sql_in(
            "vigil",
            "SELECT instance || ' ' || patient_id FROM devices WHERE online AND instance IS NOT NULL",
        )
        .await;
    let mut out: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
    for row in rows.lines() {
        let Some((instance, patient)) = row.split_once(' ') else {
            continue;
        };
        if let Some(i) = ids.iter().position(|id| id == instance) {
            out.entry(i).or_default().insert(patient.to_owned());
        }
    }
    out
}

async fn partitions(http: std::net::SocketAddr) -> f64 {
    metric(http, "vigil_alert_partitions_held")
        .await
        .unwrap_or(0.0)
}

/// A dashboard's live feed on `vigil` (the admin token: every patient), collecting the
/// patients whose readings it shows.
async fn watch(vigil: &Child) -> Arc<Mutex<BTreeSet<String>>> {
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/api/v1/live?token={TOKEN}", vigil.http))
            .await
            .unwrap();
    let seen = Arc::new(Mutex::new(BTreeSet::new()));
    let into = seen.clone();
    tokio::spawn(async move {
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Text(t) = m
                && let Ok(e) = serde_json::from_str::<Value>(t.as_str())
                && e["type"] == "observation"
                && let Some(p) = e["patient_id"].as_str()
            {
                into.lock().unwrap().insert(p.to_owned());
            }
        }
    });
    seen
}
