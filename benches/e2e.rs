//! End to end: readings per second durably stored from QoS 1 streams into the embedded
//! endpoint of the real `vigil` binary (release build), over loopback TCP.
//!
//! `DEVICES` connections (default 50) each publish `PER_DEVICE` readings (default 4,000) at
//! QoS 1 with up to 100 in flight, through rumqttc. A PUBACK is sent only after the reading's
//! commit, so "all acknowledged" means "all durably stored"; the count is then checked through
//! the API. Run: `cargo bench --bench e2e` (override with `DEVICES=… PER_DEVICE=…`).

use std::process::Stdio;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

const TOKEN: &str = "bench-bootstrap-token";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; there are no criterion options to honour here.
    let devices = env_usize("DEVICES", 50);
    let per_device = env_usize("PER_DEVICE", 4_000);
    let dir = tempfile::tempdir().unwrap();
    let mut vigil = tokio::process::Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["serve", "--data-dir", dir.path().to_str().unwrap()])
        .args([
            "--http-listen",
            "127.0.0.1:0",
            "--mqtt-listen",
            "127.0.0.1:0",
        ])
        .env("VIGIL_BOOTSTRAP_TOKEN", TOKEN)
        .env("VIGIL_LOG__FORMAT", "json")
        .env("RUST_LOG", "warn,vigil::app=info")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("vigil starts");
    let mut lines = BufReader::new(vigil.stderr.take().unwrap()).lines();
    let (http, mqtt): (String, std::net::SocketAddr) = loop {
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
                v["mqtt"].as_str().unwrap().parse().unwrap(),
            );
        }
    };
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    let http_client = reqwest::Client::new();
    let post = |path: &str, body: Value| {
        http_client
            .post(format!("http://{http}/api/v1{path}"))
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

    let base_s = vigil::domain::now_ms() / 1000 - 30 * 86_400;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (d, secret) in secrets.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let id = format!("dev-{d}");
            let mut opts = MqttOptions::new(&id, mqtt.ip().to_string(), mqtt.port());
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
    let elapsed = started.elapsed();

    let mut stored = 0usize;
    for p in 0..devices.div_ceil(10) {
        let v: Value = http_client
            .get(format!(
                "http://{http}/api/v1/patients/pat-{p}/observations?limit=100000"
            ))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        stored += v["observations"].as_array().unwrap().len();
    }
    let total = devices * per_device;
    assert_eq!(stored, total, "every acknowledged reading is stored");
    let metrics = http_client
        .get(format!("http://{http}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let commits = metrics
        .lines()
        .find(|l| l.starts_with("vigil_store_commit_seconds_count"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("?")
        .to_owned();
    println!(
        "e2e: {total} QoS 1 readings from {devices} devices stored in {:.2} s = {:.0} readings/s \
         (all acknowledged after commit; {commits} group commits, {:.0} readings/commit)",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        total as f64 / commits.parse::<f64>().unwrap_or(f64::NAN),
    );
    let _ = vigil.start_kill();
}
