//! The simulator against the real gateway: `vigil-sim provision` and `vigil-sim run` (the
//! binaries) drive a Vigil started in-process on free ports, and Vigil's alerts, dead letters
//! and stored readings are checked against the truth the simulator reports.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;
use vigil::app::App;
use vigil::config::{Config, Overrides};

const TOKEN: &str = "sim-e2e-bootstrap-token";
const SIM: &str = env!("CARGO_BIN_EXE_vigil-sim");

struct Gateway {
    http: String,
    /// Plain MQTT (`None` with MQTTS only).
    mqtt: Option<String>,
    mqtts: Option<String>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

async fn gateway() -> Gateway {
    gateway_with(|_| {}).await
}

async fn gateway_with(adjust: impl FnOnce(&mut Config)) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    let flags = Overrides {
        data_dir: Some(dir.path().to_path_buf()),
        http_listen: Some("127.0.0.1:0".into()),
        mqtt_listen: Some("127.0.0.1:0".into()),
    };
    let mut cfg = Config::load(None, Vec::new(), &flags).unwrap();
    cfg.alerts.tick_ms = 100;
    adjust(&mut cfg);
    let app = App::build(cfg, Some(TOKEN.into())).await.unwrap();
    let http = format!("http://{}", app.http_addr());
    let mqtt = app.mqtt_addr().map(|a| format!("mqtt://{a}"));
    let mqtts = app.mqtts_addr().map(|a| format!("mqtts://{a}"));
    let stop = CancellationToken::new();
    let task = tokio::spawn(app.run(stop.clone(), CancellationToken::new()));
    Gateway {
        http,
        mqtt,
        mqtts,
        stop,
        task,
        _dir: dir,
    }
}

async fn sim(args: &[&str]) -> String {
    let out = tokio::process::Command::new(SIM)
        .args(args)
        .env("VIGIL_TOKEN", TOKEN)
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "vigil-sim {args:?} failed: {stderr}");
    String::from_utf8(out.stdout).unwrap()
}

async fn get(base: &str, path: &str) -> Value {
    reqwest::Client::new()
        .get(format!("{base}/api/v1{path}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn metric(base: &str, name: &str) -> f64 {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn provision(gw: &Gateway, dir: &Path, patients: &str, prefix: &str) -> String {
    let creds = dir.join(format!("{prefix}.json"));
    sim(&[
        "provision",
        "--url",
        &gw.http,
        "--patients",
        patients,
        "--prefix",
        prefix,
        "--out",
        creds.to_str().unwrap(),
    ])
    .await;
    creds.to_str().unwrap().to_owned()
}

const RANK: [&str; 3] = ["low", "medium", "high"];

fn rank(s: &str) -> usize {
    RANK.iter().position(|r| *r == s).unwrap_or(0)
}

/// Every story of the mix, four simulated days in 15 s: each clinical story raises the alert
/// the simulator predicts, from a reading inside the predicted window; the stable patient
/// raises none; every reading the simulator sent is stored exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_story_raises_the_alerts_the_simulator_predicts() {
    let gw = gateway().await;
    let dir = tempfile::tempdir().unwrap();
    let creds = provision(&gw, dir.path(), "9", "mix").await;
    let out = sim(&[
        "run",
        "--credentials",
        &creds,
        "--mqtt",
        gw.mqtt.as_deref().unwrap(),
        "--duration",
        "15s",
        "--speed",
        "24000",
        "--scenario",
        "mix",
        "--seed",
        "7",
    ])
    .await;
    let summary: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(summary["published"], summary["acknowledged"], "{summary}");
    let accepted = metric(&gw.http, "vigil_readings_accepted_total").await;
    let readings = summary["readings"].as_f64().unwrap();
    let skewed = summary["skewed"].as_f64().unwrap();
    assert!(readings > 100_000.0, "{summary}");
    // Skewed readings are refused (a whole payload at a time), all others stored once.
    assert!(
        accepted <= readings && accepted >= readings - skewed * 300.0,
        "{accepted} of {readings}"
    );
    assert_eq!(
        metric(&gw.http, "vigil_readings_duplicate_total").await,
        0.0
    );

    for p in summary["expectations"].as_array().unwrap() {
        let id = p["patient_id"].as_str().unwrap();
        let story = p["scenario"].as_str().unwrap();
        // The engine judges each batch after its commit: wait (with a deadline) until every
        // alert the story predicts is there, then check them all, and the stories that
        // predict none.
        let predicted: Vec<&str> = p["expect"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "alert")
            .filter_map(|e| e["rule_id"].as_str())
            .collect();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let alerts = loop {
            let alerts = get(&gw.http, &format!("/alerts?patient_id={id}")).await["alerts"]
                .as_array()
                .unwrap()
                .clone();
            let all_there = predicted
                .iter()
                .all(|r| alerts.iter().any(|a| a["rule_id"] == *r));
            if all_there || std::time::Instant::now() > deadline {
                break alerts;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        for e in p["expect"].as_array().unwrap() {
            match e["kind"].as_str().unwrap() {
                "alert" => {
                    let rule = e["rule_id"].as_str().unwrap();
                    let found: Vec<&Value> =
                        alerts.iter().filter(|a| a["rule_id"] == rule).collect();
                    assert_eq!(found.len(), 1, "{story}: {rule} in {alerts:#?}");
                    let a = found[0];
                    assert!(
                        rank(a["severity"].as_str().unwrap())
                            >= rank(e["severity"].as_str().unwrap()),
                        "{story}: {a}"
                    );
                    // Missing-reading rules judge silence by Vigil's clock, which accelerated
                    // time cannot match; every other alert comes from a reading in the window.
                    if let Some(t) = a["trigger"]["time"].as_str() {
                        let t = vigil::domain::parse_rfc3339(t).unwrap();
                        let from = e["from_ms"].as_i64().unwrap();
                        let by = e["by_ms"].as_i64().unwrap();
                        assert!(
                            t >= from && t <= by,
                            "{story}: {rule} from a reading at {} outside {} .. {}",
                            a["trigger"]["time"],
                            e["from_ms"],
                            e["by_ms"]
                        );
                    }
                }
                "no_alert" => assert!(alerts.is_empty(), "{story}: {alerts:#?}"),
                "battery_low" => {
                    let rec = get(&gw.http, &format!("/patients/{id}/record?limit=10000")).await;
                    let low = rec["timeline"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|e| e["kind"] == "device.battery_low");
                    assert!(low, "{story}: no device.battery_low");
                }
                "dead_letters" => {} // counted exactly in the next test
                other => panic!("unknown expectation {other}"),
            }
        }
    }
    gw.stop.cancel();
    gw.task.await.unwrap();
}

/// Malformed payloads and fast clocks, in real-ish time: every bad payload the simulator sent
/// became exactly one dead letter with a reason, and nothing else was refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_payload_becomes_one_dead_letter() {
    let gw = gateway().await;
    let dir = tempfile::tempdir().unwrap();
    for story in ["malformed", "clock-skew"] {
        let creds = provision(&gw, dir.path(), "4", story).await;
        let out = sim(&[
            "run",
            "--credentials",
            &creds,
            "--mqtt",
            gw.mqtt.as_deref().unwrap(),
            "--duration",
            "8s",
            "--speed",
            "600",
            "--scenario",
            story,
            "--seed",
            "3",
        ])
        .await;
        let summary: Value = serde_json::from_str(&out).unwrap();
        let bad = summary["malformed"].as_u64().unwrap() + summary["skewed"].as_u64().unwrap();
        assert!(bad > 0, "{story}: the run sent no bad payload: {summary}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let creds: Value = serde_json::from_str(&std::fs::read_to_string(&creds).unwrap()).unwrap();
        let mut letters = Vec::new();
        for p in creds["patients"].as_array().unwrap() {
            for d in p["devices"].as_array().unwrap() {
                let id = d["id"].as_str().unwrap();
                letters.extend(
                    get(&gw.http, &format!("/dead-letters?device_id={id}")).await["dead_letters"]
                        .as_array()
                        .unwrap()
                        .clone(),
                );
            }
        }
        assert_eq!(letters.len() as u64, bad, "{story}: {letters:#?}");
        assert!(
            letters
                .iter()
                .all(|l| !l["reason"].as_str().unwrap().is_empty())
        );
        if story == "clock-skew" {
            assert!(
                letters
                    .iter()
                    .all(|l| l["reason"].as_str().unwrap().contains("future")
                        || l["reason"].as_str().unwrap().contains("ahead")),
                "{letters:#?}"
            );
        }
    }
    gw.stop.cancel();
    gw.task.await.unwrap();
}

/// `--speed 1` is real time: simulated time starts when the run does and runs forward with the
/// clock, so every reading is new and stamped within the run. (A replay of the span before the
/// command would stamp them all before it, repeating an earlier run's.) The run is the thirty
/// seconds a newcomer would try; the watch streams a heart rate every second, so the readings
/// must cover the run from its first seconds to its last. (The patient is provisioned with
/// `--team`, which puts it on that care team.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_time_runs_forward_from_the_start_of_the_run() {
    const RUN_MS: i64 = 30_000;
    let gw = gateway().await;
    let dir = tempfile::tempdir().unwrap();
    // The patient joins the care team given (created, since it is missing).
    let creds = dir.path().join("rt.json");
    let creds = creds.to_str().unwrap();
    sim(&[
        "provision",
        "--url",
        &gw.http,
        "--patients",
        "1",
        "--prefix",
        "rt",
        "--team",
        "rt-ward",
        "--out",
        creds,
    ])
    .await;
    assert_eq!(
        get(&gw.http, "/patients/rt-0001").await["care_team"],
        "rt-ward"
    );
    let started = vigil::domain::now_ms();
    let out = sim(&[
        "run",
        "--credentials",
        creds,
        "--mqtt",
        gw.mqtt.as_deref().unwrap(),
        "--duration",
        &format!("{RUN_MS}ms"),
        "--speed",
        "1",
    ])
    .await;
    let ended = vigil::domain::now_ms();
    let summary: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(summary["published"], summary["acknowledged"], "{summary}");
    let stored = get(&gw.http, "/patients/rt-0001/observations?limit=100000").await;
    let times: Vec<i64> = stored["observations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| vigil::domain::parse_rfc3339(o["time"].as_str().unwrap()).unwrap())
        .collect();
    assert!(
        times.len() >= 5,
        "{} readings stored: {summary}",
        times.len()
    );
    let (first, last) = (*times.iter().min().unwrap(), *times.iter().max().unwrap());
    assert!(
        first >= started && last <= ended,
        "readings stamped {first} .. {last}, outside the run {started} .. {ended}"
    );
    assert!(
        first <= started + 5_000 && last >= started + RUN_MS - 3_000,
        "readings stamped {first} .. {last} do not cover the run {started} .. {ended}"
    );
    gw.stop.cancel();
    gw.task.await.unwrap();
}

/// Runs `openssl` with `args`, panicking with its output if it fails.
fn openssl(args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The fleet over MQTTS: the devices verify Vigil's certificate against the CA given with
/// `--ca`, and everything they send is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_runs_over_tls() {
    let certs = tempfile::tempdir().unwrap();
    let p = |f: &str| certs.path().join(f).to_str().unwrap().to_owned();
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &p("ca.key"),
        "-out",
        &p("ca.crt"),
        "-subj",
        "/CN=sim-test-ca",
        "-days",
        "2",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &p("server.key"),
        "-out",
        &p("server.csr"),
        "-subj",
        "/CN=localhost",
    ]);
    std::fs::write(
        certs.path().join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        &p("server.csr"),
        "-CA",
        &p("ca.crt"),
        "-CAkey",
        &p("ca.key"),
        "-CAcreateserial",
        "-out",
        &p("server.crt"),
        "-days",
        "2",
        "-extfile",
        &p("server.ext"),
    ]);
    let (cert, key) = (
        certs.path().join("server.crt"),
        certs.path().join("server.key"),
    );
    let gw = gateway_with(move |c| {
        c.mqtt.tls = Some(vigil::config::MqttTlsConfig {
            listen: "127.0.0.1:0".into(),
            cert,
            key,
            client_ca: None,
            only: true,
        });
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let creds = provision(&gw, dir.path(), "2", "tls").await;
    let mqtts = gw.mqtts.clone().unwrap();
    let ca = p("ca.crt");
    let out = sim(&[
        "run",
        "--credentials",
        &creds,
        "--mqtt",
        &mqtts,
        "--ca",
        &ca,
        "--duration",
        "4s",
        "--speed",
        "600",
    ])
    .await;
    let summary: Value = serde_json::from_str(&out).unwrap();
    assert!(summary["published"].as_u64().unwrap() > 10, "{summary}");
    assert_eq!(summary["published"], summary["acknowledged"], "{summary}");
    assert_eq!(summary["connect_errors"], 0, "{summary}");
    assert_eq!(
        metric(&gw.http, "vigil_readings_accepted_total").await,
        summary["readings"].as_f64().unwrap()
    );
    // Without the CA, the fleet refuses to connect rather than trust an unknown server.
    let bad = tokio::process::Command::new(SIM)
        .args([
            "run",
            "--credentials",
            &creds,
            "--mqtt",
            &mqtts,
            "--duration",
            "1s",
        ])
        .output()
        .await
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("--ca"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    gw.stop.cancel();
    gw.task.await.unwrap();
}
