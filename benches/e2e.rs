//! End to end: readings per second durably stored from QoS 1 streams, through the real `vigil`
//! binary (release build) over loopback TCP, with rumqttc as the devices.
//!
//! `DEVICES` connections (default 50) each publish `PER_DEVICE` readings (default 4,000) at
//! QoS 1 with up to 100 in flight. The figure is total readings / time from the first publish
//! until Vigil's `vigil_readings_accepted_total` counts them all (and, with `INFLUX=1`, until
//! `vigil_influx_lines_written_total` does too); the stored count is then checked through the API.
//!
//! - `LINK=embedded` (default): devices connect to Vigil's own endpoint, whose PUBACK follows
//!   the commit.
//! - `LINK=external`: devices connect to a real Mosquitto (started here with the files
//!   `vigil broker mosquitto-config` writes); Vigil reads through its shared subscription.
//! - `INFLUX=1`: Vigil also writes every reading to a real VictoriaMetrics (InfluxDB line
//!   protocol); the clock stops when the last line is delivered.
//!
//! Run: `cargo bench --bench e2e`, e.g. `LINK=external INFLUX=1 cargo bench --bench e2e`.

use std::process::Stdio;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

const TOKEN: &str = "bench-bootstrap-token";
const SERVICE_USER: &str = "vigil-gateway";
const SERVICE_PASSWORD: &str = "bench-gateway-password";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn metric(http: &reqwest::Client, base: &str, name: &str) -> f64 {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn wait_metric(http: &reqwest::Client, base: &str, name: &str, target: f64, limit: Duration) {
    let end = Instant::now() + limit;
    loop {
        let now = metric(http, base, name).await;
        if now >= target {
            return;
        }
        assert!(
            Instant::now() < end,
            "{name} did not reach {target} in {limit:?} (it is at {now})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::main]
async fn main() {
    let devices = env_usize("DEVICES", 50);
    let per_device = env_usize("PER_DEVICE", 4_000);
    let external = std::env::var("LINK").is_ok_and(|v| v == "external");
    let influx = std::env::var("INFLUX").is_ok_and(|v| v == "1");
    let dir = tempfile::tempdir().unwrap();
    let broker_port = free_port();

    let mut _vm = None;
    let mut vigil_cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_vigil"));
    vigil_cmd
        .args(["serve", "--data-dir", dir.path().to_str().unwrap()])
        .args([
            "--http-listen",
            "127.0.0.1:0",
            "--mqtt-listen",
            "127.0.0.1:0",
        ])
        .env("VIGIL_BOOTSTRAP_TOKEN", TOKEN)
        .env("VIGIL_LOG__FORMAT", "json")
        .env(
            "RUST_LOG",
            std::env::var("BENCH_LOG").unwrap_or_else(|_| "warn,vigil::app=info".into()),
        )
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if external {
        vigil_cmd
            .env("VIGIL_MQTT__MODE", "external")
            .env("VIGIL_MQTT__URL", format!("mqtt://127.0.0.1:{broker_port}"))
            .env("VIGIL_MQTT__USERNAME", SERVICE_USER)
            .env("VIGIL_MQTT__PASSWORD", SERVICE_PASSWORD)
            .env("VIGIL_MQTT__MAX_INFLIGHT", "1000");
    }
    if influx {
        let port = free_port();
        let storage = tempfile::tempdir().unwrap();
        let child = tokio::process::Command::new("victoria-metrics")
            .arg(format!("-storageDataPath={}", storage.path().display()))
            .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            .arg("-retentionPeriod=100y")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("victoria-metrics is installed");
        _vm = Some((child, storage));
        vigil_cmd
            .env("VIGIL_INFLUXDB__URL", format!("http://127.0.0.1:{port}"))
            .env("VIGIL_INFLUXDB__ORG", "clinic")
            .env("VIGIL_INFLUXDB__BUCKET", "vitals")
            .env("VIGIL_INFLUXDB__TOKEN", "bench");
    }
    let mut vigil = vigil_cmd.spawn().expect("vigil starts");
    let mut lines = BufReader::new(vigil.stderr.take().unwrap()).lines();
    let (http_addr, mqtt): (String, Option<std::net::SocketAddr>) = loop {
        let line = lines
            .next_line()
            .await
            .unwrap()
            .expect("vigil logs its addresses");
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if v["message"] == "vigil listening" {
            break (
                v["http"].as_str().unwrap().to_owned(),
                v["mqtt"].as_str().unwrap().parse().ok(),
            );
        }
    };
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let base = format!("http://{http_addr}");

    let http = reqwest::Client::new();
    let post = |path: &str, body: Value| {
        http.post(format!("{base}/api/v1{path}"))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
    };
    let mut secrets = Vec::new();
    for d in 0..devices {
        if d % 10 == 0 {
            post(
                "/patients",
                json!({"id": format!("pat-{}", d / 10), "name": "Bench"}),
            )
            .await
            .unwrap();
        }
        let v: Value = post(
            "/devices",
            json!({"id": format!("dev-{d}"), "patient_id": format!("pat-{}", d / 10), "profile": "smartwatch"}),
        )
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        secrets.push(v["mqtt"]["password"].as_str().unwrap().to_owned());
    }

    let mut _broker = None;
    let target = if external {
        let conf = tempfile::tempdir().unwrap();
        let vigil_toml = conf.path().join("vigil.toml");
        std::fs::write(
            &vigil_toml,
            format!("[mqtt]\nusername = \"{SERVICE_USER}\"\npassword = \"{SERVICE_PASSWORD}\"\n"),
        )
        .unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_vigil"))
            .args([
                "broker",
                "mosquitto-config",
                "--config",
                vigil_toml.to_str().unwrap(),
            ])
            .args([
                "--data-dir",
                dir.path().to_str().unwrap(),
                "--out",
                conf.path().join("conf.d").to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let main_conf = conf.path().join("mosquitto.conf");
        std::fs::write(
            &main_conf,
            format!(
                "listener {broker_port} 127.0.0.1\nuser root\npersistence_location {}/\ninclude_dir {}\n",
                conf.path().display(),
                conf.path().join("conf.d").display()
            ),
        )
        .unwrap();
        let child = tokio::process::Command::new("mosquitto")
            .arg("-c")
            .arg(&main_conf)
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create("/tmp/bench-mosquitto.log")
                    .map(Stdio::from)
                    .unwrap_or(Stdio::null()),
            )
            .kill_on_drop(true)
            .spawn()
            .expect("mosquitto is installed");
        _broker = Some((child, conf));
        wait_metric(
            &http,
            &base,
            "vigil_mqtt_broker_subscribed",
            1.0,
            Duration::from_secs(60),
        )
        .await;
        std::net::SocketAddr::from(([127, 0, 0, 1], broker_port))
    } else {
        mqtt.expect("embedded endpoint address")
    };

    let base_s = vigil::domain::now_ms() / 1000 - 30 * 86_400;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (d, secret) in secrets.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let id = format!("dev-{d}");
            let mut opts = MqttOptions::new(&id, target.ip().to_string(), target.port());
            opts.set_credentials(&id, secret);
            opts.set_inflight(100);
            opts.set_keep_alive(Duration::from_secs(30));
            opts.set_request_channel_capacity(200);
            let (client, mut eventloop) = AsyncClient::new(opts, 200);
            let topic = format!("vigil/v1/devices/{id}/readings");
            let publisher = tokio::spawn(async move {
                for i in 0..per_device {
                    let body = format!(
                        r#"{{"metric":"heart_rate","value":{},"time":{}}}"#,
                        60 + i % 40,
                        base_s + i as i64
                    );
                    client
                        .publish(&topic, QoS::AtLeastOnce, false, body)
                        .await
                        .unwrap();
                }
                client
            });
            let mut acked = 0;
            while acked < per_device {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
                    Ok(_) => {}
                    Err(e) => panic!("{id}: {e}"),
                }
            }
            let client = publisher.await.unwrap();
            let _ = client.disconnect().await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let total = devices * per_device;
    let acked_after = started.elapsed();
    wait_metric(
        &http,
        &base,
        "vigil_readings_accepted_total",
        total as f64,
        Duration::from_secs(300),
    )
    .await;
    let stored_after = started.elapsed();
    let mut influx_after = None;
    if influx {
        wait_metric(
            &http,
            &base,
            "vigil_influx_lines_written_total",
            total as f64,
            Duration::from_secs(60),
        )
        .await;
        influx_after = Some(started.elapsed());
    }

    // Counted through the API, in windows of 5,000 s: at most 10 devices × 5,000 readings,
    // well under the page limit, and the windows do not overlap.
    let mut stored = 0usize;
    let fmt = |s: i64| vigil::domain::format_rfc3339(s * 1000);
    for p in 0..devices.div_ceil(10) {
        let mut from_s = base_s;
        while from_s < base_s + per_device as i64 {
            let to = vigil::domain::format_rfc3339((from_s + 5000) * 1000 - 1);
            let v: Value = http
                .get(format!("{base}/api/v1/patients/pat-{p}/observations"))
                .query(&[
                    ("limit", "100000"),
                    ("from", fmt(from_s).as_str()),
                    ("to", to.as_str()),
                ])
                .bearer_auth(TOKEN)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            stored += v["observations"].as_array().unwrap().len();
            from_s += 5000;
        }
    }
    assert_eq!(stored, total, "every reading is stored");
    let commits = metric(&http, &base, "vigil_store_commit_seconds_count").await;
    let link = if external {
        "through Mosquitto (external mode)"
    } else {
        "into the embedded endpoint"
    };
    println!(
        "e2e {link}: {total} QoS 1 readings from {devices} devices; all acknowledged to the devices after {:.2} s; \
         all stored after {:.2} s = {:.0} readings/s stored ({commits} group commits, {:.0} readings/commit)",
        acked_after.as_secs_f64(),
        stored_after.as_secs_f64(),
        total as f64 / stored_after.as_secs_f64(),
        total as f64 / commits,
    );
    if let Some(t) = influx_after {
        println!(
            "e2e into VictoriaMetrics (InfluxDB line protocol): all {total} delivered after {:.2} s = {:.0} readings/s",
            t.as_secs_f64(),
            total as f64 / t.as_secs_f64()
        );
    }
    let _ = vigil.start_kill();
}
