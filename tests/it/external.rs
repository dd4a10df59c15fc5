//! External-broker mode through a real Mosquitto with the ACL and password files Vigil
//! generates: every payload format arrives, a device cannot publish as another, and readings
//! published while Vigil is down are stored once when it is back.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{
    Gateway, Mosquitto, V, eventually, free_port, mosquitto_pub, paho_device, run,
};

const SERVICE_USER: &str = "vigil-gateway";
const SERVICE_PASSWORD: &str = "gateway-password-for-tests";

/// Vigil in external mode, pointed at a broker port that is not up yet (it retries).
async fn external_gateway(port: u16) -> Gateway {
    external_gateway_with(port, |_| {}).await
}

async fn external_gateway_with(
    port: u16,
    adjust: impl FnOnce(&mut vigil::config::Config),
) -> Gateway {
    Gateway::start_with(|cfg| {
        cfg.mqtt.mode = vigil::config::MqttMode::External;
        cfg.mqtt.url = format!("mqtt://127.0.0.1:{port}");
        cfg.mqtt.username = Some(SERVICE_USER.into());
        cfg.mqtt.password = Some(SERVICE_PASSWORD.into());
        cfg.mqtt.client_id = "vigil-test".into();
        adjust(cfg);
    })
    .await
}

/// `vigil broker mosquitto-config` for the gateway's registry; returns the output dir.
async fn generate_broker_config(gw: &Gateway) -> tempfile::TempDir {
    let data_dir = gw.data_dir();
    let out = tempfile::tempdir().unwrap();
    let cfg = out.path().join("vigil.toml");
    // The gateway's registry, wherever it is (its data directory, or its PostgreSQL database).
    let database = match gw.registry_db() {
        crate::registry_db::RegistryDb::Postgres(url) => format!("[database]\nurl = \"{url}\"\n"),
        crate::registry_db::RegistryDb::Sqlite(_) => String::new(),
    };
    std::fs::write(
        &cfg,
        format!(
            "[mqtt]\nusername = \"{SERVICE_USER}\"\npassword = \"{SERVICE_PASSWORD}\"\n{database}"
        ),
    )
    .unwrap();
    let conf_d = out.path().join("conf.d");
    let r = run(
        env!("CARGO_BIN_EXE_vigil"),
        &[
            "broker",
            "mosquitto-config",
            "--config",
            cfg.to_str().unwrap(),
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--out",
            conf_d.to_str().unwrap(),
        ],
        None,
    )
    .await;
    assert!(r.ok, "{}", r.stderr);
    let acl = std::fs::read_to_string(conf_d.join("acl")).unwrap();
    assert!(
        acl.contains("pattern write vigil/v1/devices/%u/readings"),
        "{acl}"
    );
    out
}

/// Waits until Vigil is connected to the broker and subscribed.
async fn subscribed(gw: &Gateway) {
    let url = format!("http://{}/metrics", gw.http);
    eventually(
        Duration::from_secs(20),
        "vigil subscribed at the broker",
        || {
            let url = url.clone();
            async move {
                let text = reqwest::get(url).await.ok()?.text().await.ok()?;
                text.contains("vigil_mqtt_broker_subscribed 1")
                    .then_some(())
            }
        },
    )
    .await;
}

async fn wait_for(gw: &Gateway, patient: &str, n: usize) -> Vec<Value> {
    let api = gw.client.clone();
    let patient = patient.to_owned();
    eventually(
        Duration::from_secs(20),
        &format!("{n} observations"),
        || {
            let (api, patient) = (api.clone(), patient.clone());
            async move {
                let obs = api.observations(&patient, "limit=100000").await;
                (obs.len() >= n).then_some(obs)
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_format_arrives_through_mosquitto_and_its_acl_stops_impersonation() {
    let port = free_port();
    let gw = external_gateway(port).await;
    let api = &gw.client;
    api.patient("p-ext").await;
    api.patient("victim").await;
    let watch = api.device("watch-x", "p-ext", "smartwatch").await;
    let cuff = api.device("cuff-x", "p-ext", "bp-cuff").await;
    let ox = api.device("ox-x", "p-ext", "pulse-oximeter").await;
    api.device("ox-victim", "victim", "pulse-oximeter").await;
    let out = generate_broker_config(&gw).await;
    let broker = Mosquitto::start(&out.path().join("conf.d"), port).await;
    let addr = broker.addr();
    subscribed(&gw).await;

    // vigil-json (3.1.1), SenML by content type (5), GATT (3.1.1), SenML by profile (Paho 5).
    let r = mosquitto_pub(
        addr,
        V::V311,
        "ox-x",
        &ox,
        "vigil/v1/devices/ox-x/readings",
        br#"{"metric":"spo2","value":95,"time":"2026-11-25T10:00:00Z"}"#,
        &[],
    )
    .await;
    assert!(r.ok, "{}", r.stderr);
    let senml =
        json!([{"bn": "ox-x/", "bt": 1_795_600_900, "n": "heart_rate", "u": "beat/min", "v": 71}]);
    let r = mosquitto_pub(
        addr,
        V::V5,
        "ox-x",
        &ox,
        "vigil/v1/devices/ox-x/readings",
        senml.to_string().as_bytes(),
        &["-D", "publish", "content-type", "application/senml+json"],
    )
    .await;
    assert!(r.ok, "{}", r.stderr);
    // 2a35: flags 0x02 (mmHg, time stamp); 128/82/97 mmHg at 2026-11-25 10:30:00.
    let bp = [
        0x02, 0x80, 0x00, 0x52, 0x00, 0x61, 0x00, 0xea, 0x07, 11, 25, 10, 30, 0,
    ];
    let r = mosquitto_pub(
        addr,
        V::V311,
        "cuff-x",
        &cuff,
        "vigil/v1/devices/cuff-x/gatt/2a35",
        &bp,
        &[],
    )
    .await;
    assert!(r.ok, "{}", r.stderr);
    let report = paho_device(addr, V::V5, "watch-x", &watch, json!([{"topic": "vigil/v1/devices/watch-x/readings",
        "payload": json!([{"bn": "watch-x/", "bt": 1_795_601_000, "n": "steps", "u": "count", "v": 321}]).to_string()}]), &[]).await;
    assert_eq!(report["reason_codes"], json!([0]), "{report}");

    let obs = wait_for(&gw, "p-ext", 6).await;
    let has = |dev: &str, metric: &str, value: f64| {
        obs.iter().any(|o| {
            o["device_id"] == dev && o["metric"] == metric && o["value"].as_f64() == Some(value)
        })
    };
    assert!(has("ox-x", "spo2", 95.0), "{obs:?}");
    assert!(has("ox-x", "heart_rate", 71.0), "{obs:?}");
    assert!(
        has("cuff-x", "bp_systolic", 128.0)
            && has("cuff-x", "bp_diastolic", 82.0)
            && has("cuff-x", "bp_mean", 97.0)
    );
    assert!(has("watch-x", "steps", 321.0), "{obs:?}");

    // ox-x publishes under ox-victim's id: Mosquitto's ACL drops it (MQTT 5: PUBACK 0x87).
    let report = paho_device(addr, V::V5, "ox-x", &ox, json!([
        {"topic": "vigil/v1/devices/ox-victim/readings", "payload": "{\"metric\":\"spo2\",\"value\":71}"},
        {"topic": "vigil/v1/devices/ox-x/readings", "payload": "{\"metric\":\"spo2\",\"value\":96,\"time\":1795601100}"}
    ]), &[]).await;
    assert_eq!(report["reason_codes"], json!([0x87, 0]), "{report}");
    let r = mosquitto_pub(
        addr,
        V::V311,
        "ox-x",
        &ox,
        "vigil/v1/devices/ox-victim/readings",
        br#"{"metric":"spo2","value":70}"#,
        &[],
    )
    .await;
    let _ = r; // 3.1.1: Mosquitto acknowledges and drops it; what matters is that nothing arrives.
    // The later, legitimate reading arriving shows the broker has passed on everything before it.
    wait_for(&gw, "p-ext", 7).await;
    assert!(
        api.observations("victim", "").await.is_empty(),
        "impersonation stored"
    );

    // A device with a wrong secret cannot connect to the broker.
    let r = mosquitto_pub(
        addr,
        V::V311,
        "ox-x",
        "wrong",
        "vigil/v1/devices/ox-x/readings",
        b"{}",
        &[],
    )
    .await;
    assert!(!r.ok);
    broker.stop().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_published_while_vigil_is_down_are_stored_once_when_it_returns() {
    let port = free_port();
    let gw = external_gateway(port).await;
    gw.client.patient("p-down").await;
    let secret = gw.client.device("hr-down", "p-down", "smartwatch").await;
    let out = generate_broker_config(&gw).await;
    let broker = Mosquitto::start(&out.path().join("conf.d"), port).await;
    let addr = broker.addr();
    subscribed(&gw).await;
    let publish = |from: i64, n: i64| {
        let msgs: Vec<Value> = (from..from + n)
            .map(|i| json!({"topic": "vigil/v1/devices/hr-down/readings",
                            "payload": json!({"metric": "heart_rate", "value": 60 + i % 30, "time": 1_795_500_000 + i}).to_string()}))
            .collect();
        Value::Array(msgs)
    };

    // Vigil connected: the first 50 arrive.
    let report = paho_device(addr, V::V311, "hr-down", &secret, publish(0, 50), &[]).await;
    assert_eq!(report["acked"], 50, "{report}");
    wait_for(&gw, "p-down", 50).await;

    // Vigil stopped; the device goes on publishing 200 more (the broker acknowledges them and
    // keeps them in Vigil's persistent session).
    let (cfg, dir) = gw.stop_keeping_data().await;
    let report = paho_device(addr, V::V311, "hr-down", &secret, publish(50, 200), &[]).await;
    assert_eq!(report["acked"], 200, "{report}");

    // Vigil back: everything published meanwhile is stored, once.
    let gw = Gateway::start_again(cfg, dir).await;
    let obs = wait_for(&gw, "p-down", 250).await;
    let times: std::collections::HashSet<&str> =
        obs.iter().map(|o| o["time"].as_str().unwrap()).collect();
    assert_eq!((obs.len(), times.len()), (250, 250));
    // And nothing more trickles in afterwards (no redelivered duplicates stored).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        gw.client.observations("p-down", "limit=100000").await.len(),
        250
    );
    broker.stop().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_under_load_neither_loses_nor_duplicates() {
    use crate::faults::{Publisher, alert_count, report, stored};
    const COUNT: usize = 5_000;
    let port = free_port();
    let gw = external_gateway(port).await;
    let api = &gw.client;
    api.patient("p-br").await;
    let secret = api.device("hr-br", "p-br", "smartwatch").await;
    crate::faults::tachycardia_plan(api, "p-br", 95).await;
    let out = generate_broker_config(&gw).await;
    let mut broker = Mosquitto::start(&out.path().join("conf.d"), port).await;
    subscribed(&gw).await;
    let (readings_before, alerts_before) =
        (stored(api, "p-br").await, alert_count(api, "p-br").await);

    // A device streams readings (60 to 99 /min); the broker is restarted in the middle.
    let start = vigil::domain::now_ms() / 1000 - 86_400;
    // Paced (5 s of stream) so the restart lands mid-stream on a loaded machine too.
    let publisher = Publisher::paced(port, "hr-br", &secret, COUNT, start, (60, 40), 1_000);
    eventually(Duration::from_secs(60), "500 acknowledged", || async {
        (publisher.acked() >= 500).then_some(())
    })
    .await;
    broker.restart().await;
    let at_restart = publisher.acked();
    assert!(
        at_restart < COUNT,
        "the publisher finished before the restart ({at_restart} acknowledged)"
    );
    publisher.finish(Duration::from_secs(180)).await;

    // Both Vigil and the device reconnected by themselves; every reading is stored once.
    subscribed(&gw).await;
    wait_for(&gw, "p-br", COUNT).await;
    let readings_after = stored(api, "p-br").await;
    let alerts_after = alert_count(api, "p-br").await;
    assert_eq!(readings_after, COUNT);
    assert_eq!(alerts_after, 1, "one alert for one persisting condition");

    // The order that loses readings when the broker forgets how to route to a restored session
    // (Mosquitto 2.0.11 with a shared subscription): Vigil away, readings queued for it, the
    // broker restarted, more readings into the restored session, and only then Vigil back.
    let (cfg, dir) = gw.stop_keeping_data().await;
    Publisher::start(port, "hr-br", &secret, 200, start + COUNT as i64, (60, 30))
        .finish(Duration::from_secs(60))
        .await;
    broker.restart().await;
    Publisher::start(
        port,
        "hr-br",
        &secret,
        200,
        start + COUNT as i64 + 200,
        (60, 30),
    )
    .finish(Duration::from_secs(60))
    .await;
    let gw = Gateway::start_again(cfg, dir).await;
    let api = &gw.client;
    wait_for(&gw, "p-br", COUNT + 400).await;
    let readings_later = stored(api, "p-br").await;
    assert_eq!(readings_later, COUNT + 400);
    assert_eq!(alert_count(api, "p-br").await, 1);
    report(
        "external broker restarted under load",
        &[
            ("readings_before", readings_before),
            ("sent", COUNT),
            ("acked_at_restart", at_restart),
            ("readings_after", readings_after),
            ("alerts_before", alerts_before),
            ("alerts_after", alerts_after),
        ],
    );
    report(
        "external broker restarted while Vigil was away",
        &[
            ("readings_before", readings_after),
            ("sent_before_restart", 200),
            ("sent_after_restart", 200),
            ("readings_after", readings_later),
        ],
    );
    broker.stop().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_behind_an_external_broker_loses_nothing_and_backs_off() {
    use crate::faults::{Publisher, SmallDisk, alert_count, report, stored};
    use crate::support::metric;
    let disk = SmallDisk::mount("64m").await;
    let data = disk.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let port = free_port();
    let data_dir = data.clone();
    let gw = external_gateway_with(port, move |cfg| cfg.data_dir = data_dir).await;
    let api = &gw.client;
    api.patient("p-xfull").await;
    let secret = api.device("hr-xfull", "p-xfull", "smartwatch").await;
    crate::faults::tachycardia_plan(api, "p-xfull", 95).await;
    let out = generate_broker_config(&gw).await;
    let broker = Mosquitto::start(&out.path().join("conf.d"), port).await;
    subscribed(&gw).await;
    let start = vigil::domain::now_ms() / 1000 - 86_400;
    Publisher::start(port, "hr-xfull", &secret, 100, start, (60, 20))
        .finish(Duration::from_secs(60))
        .await;
    wait_for(&gw, "p-xfull", 100).await;
    let (readings_before, alerts_before) = (
        stored(api, "p-xfull").await,
        alert_count(api, "p-xfull").await,
    );

    // The disk fills; the broker takes the device's readings and keeps them for Vigil.
    let filler = disk.fill();
    Publisher::start(port, "hr-xfull", &secret, 500, start + 100, (60, 40))
        .finish(Duration::from_secs(60))
        .await;
    eventually(
        Duration::from_secs(30),
        "vigil_store_disk_full 1",
        || async { (metric(gw.http, "vigil_store_disk_full").await == Some(1.0)).then_some(()) },
    )
    .await;
    // Vigil does not ask for redelivery ten times a second: reconnects back off (1 s, 2 s, 4 s…).
    let connects = || async {
        metric(gw.http, "vigil_mqtt_broker_connects_total")
            .await
            .unwrap_or(0.0)
    };
    let (c0, t0) = (connects().await, std::time::Instant::now());
    tokio::time::sleep(Duration::from_secs(6)).await;
    let reconnects = (connects().await - c0) as usize;
    assert!(
        reconnects <= 4,
        "{reconnects} reconnects in {:?} while the disk was full",
        t0.elapsed()
    );

    // Space freed: everything the broker kept is stored once, and the rule fires once.
    std::fs::remove_file(filler).unwrap();
    let obs = wait_for(&gw, "p-xfull", 600).await;
    assert_eq!(obs.len(), 600);
    let readings_after = stored(api, "p-xfull").await;
    let alerts_after = alert_count(api, "p-xfull").await;
    assert_eq!((readings_after, alerts_after), (600, 1));
    report(
        "disk full behind an external broker",
        &[
            ("readings_before", readings_before),
            ("sent_while_full", 500),
            ("reconnects_in_6s_while_full", reconnects),
            ("readings_after", readings_after),
            ("alerts_before", alerts_before),
            ("alerts_after", alerts_after),
        ],
    );
    broker.stop().await;
    gw.stop().await;
}
