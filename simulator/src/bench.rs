//! `vigil-sim bench`: Vigil measured end to end, beside what it is compared with, in one run.
//!
//! The same stream — `devices` connections each publishing `per_device` QoS 1 readings as fast
//! as 100 in flight allow — is drained, one phase after another, by:
//! 1. **the ceiling**: `mosquitto_sub` subscribed to a Mosquitto, storing nothing;
//! 2. **the peer**: a Python paho-mqtt subscriber writing batches to SQLite (`peers/`);
//! 3. **Vigil, external mode**: Vigil subscribed to the same Mosquitto, storing durably;
//! 4. **Vigil, embedded mode**: the devices connect to Vigil's own endpoint, whose PUBACK
//!    follows the durable commit.
//!
//! Each figure is readings per second *stored* (counted where they land: Vigil's
//! `vigil_readings_accepted_total`, the peer's committed rows, messages `mosquitto_sub` got),
//! from the first publish to the last one landing. Ratios to the ceiling hold on a noisy
//! machine where absolute figures do not. Then, against embedded Vigil: publish → stored
//! (PUBACK) and publish → alert latency at half the embedded peak, and the gateway's memory per
//! idle connected device. Results go to `bench/results/<timestamp>.json` and `.md`.
//!
//! The gateways inherit this process's environment: with `VIGIL_DATABASE__URL` naming an empty
//! PostgreSQL database, every phase runs with its registry there (the report says which).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::fleet::rfc3339;
use crate::peers::{Broker, CeilingSub, PythonPeer, proc_stats};
use crate::provision::Api;

const TOKEN: &str = "vigil-sim-bench-token";
const SERVICE_USER: &str = "vigil-gateway";
const SERVICE_PASSWORD: &str = "vigil-sim-bench-service";
const READER_PASSWORD: &str = "vigil-sim-bench-reader";

/// The sizes of one bench.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sizes {
    pub devices: usize,
    pub per_device: usize,
    pub idle_devices: usize,
    pub probes: usize,
}

impl Sizes {
    pub fn new(quick: bool) -> Sizes {
        if quick {
            Sizes {
                devices: 10,
                per_device: 300,
                idle_devices: 300,
                probes: 20,
            }
        } else {
            Sizes {
                devices: 50,
                per_device: 4000,
                idle_devices: 10_000,
                probes: 200,
            }
        }
    }

    fn total(&self) -> u64 {
        (self.devices * self.per_device) as u64
    }
}

/// One phase's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    pub name: &'static str,
    pub readings: u64,
    pub seconds: f64,
    pub per_second: f64,
    /// CPU seconds and peak RSS of the process that stored them (Vigil or the peer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_rss_mib: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub samples: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

pub(crate) fn latency(mut ms: Vec<f64>) -> Option<Latency> {
    if ms.is_empty() {
        return None;
    }
    ms.sort_by(f64::total_cmp);
    let q = |p: f64| ms[((ms.len() as f64 - 1.0) * p).round() as usize];
    Some(Latency {
        samples: ms.len(),
        p50_ms: q(0.5),
        p99_ms: q(0.99),
        max_ms: ms[ms.len() - 1],
    })
}

/// The whole result.
#[derive(Debug, Serialize)]
pub struct Report {
    pub when: String,
    pub quick: bool,
    pub sizes: Sizes,
    pub machine: String,
    /// Where the gateways kept their registry: `sqlite` (embedded) or `postgresql` (the
    /// gateways inherited `VIGIL_DATABASE__URL`).
    pub registry: &'static str,
    pub phases: Vec<Phase>,
    pub ratio_embedded_to_ceiling: f64,
    pub ratio_external_to_ceiling: f64,
    pub ratio_embedded_to_peer: f64,
    pub ratio_external_to_peer: f64,
    pub publish_to_stored: Option<Latency>,
    pub publish_to_alert: Option<Latency>,
    /// Publish → the reading's event on the dashboard's live WebSocket.
    pub publish_to_live: Option<Latency>,
    pub alert_background_per_second: f64,
    pub idle_devices_connected: u64,
    pub rss_per_idle_device_kib: Option<f64>,
}

/// The `vigil` binary: `VIGIL_BIN`, or the one built beside this one.
fn vigil_bin() -> anyhow::Result<PathBuf> {
    if let Ok(p) = std::env::var("VIGIL_BIN") {
        return Ok(PathBuf::from(p));
    }
    let me = std::env::current_exe()?;
    let bin = me.with_file_name("vigil");
    if bin.exists() {
        Ok(bin)
    } else {
        bail!(
            "no vigil binary beside {} (build it: cargo build --release --bins), or set VIGIL_BIN",
            me.display()
        )
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A running gateway.
pub(crate) struct Gateway {
    child: tokio::process::Child,
    http: String,
    pub(crate) mqtt: Option<SocketAddr>,
    pub(crate) api: Api,
}

impl Gateway {
    pub(crate) async fn start(data_dir: &Path, env: &[(&str, String)]) -> anyhow::Result<Gateway> {
        let mut child = tokio::process::Command::new(vigil_bin()?)
            .args(["serve", "--data-dir"])
            .arg(data_dir)
            .args([
                "--http-listen",
                "127.0.0.1:0",
                "--mqtt-listen",
                "127.0.0.1:0",
            ])
            .env("VIGIL_BOOTSTRAP_TOKEN", TOKEN)
            .env("VIGIL_LOG__FORMAT", "json")
            .env("RUST_LOG", "warn,vigil::app=info")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start vigil")?;
        let mut lines = BufReader::new(child.stderr.take().context("no stderr")?).lines();
        let (http, mqtt) = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await? {
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if v["message"] == "vigil listening" {
                    return Ok((
                        v["http"].as_str().unwrap_or_default().to_owned(),
                        v["mqtt"].as_str().and_then(|m| m.parse().ok()),
                    ));
                }
            }
            bail!("vigil exited before listening")
        })
        .await
        .context("vigil did not start within 30 s")??;
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let base = format!("http://{http}");
        Ok(Gateway {
            child,
            api: Api::new(&base, TOKEN),
            http: base,
            mqtt,
        })
    }

    fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    pub(crate) async fn metric(&self, name: &str) -> f64 {
        let Ok(resp) = reqwest::get(format!("{}/metrics", self.http)).await else {
            return 0.0;
        };
        let text = resp.text().await.unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// Waits until `vigil_readings_accepted_total` reaches `n`; the instant it did.
    async fn wait_accepted(&self, n: f64, limit: Duration) -> anyhow::Result<Instant> {
        let end = Instant::now() + limit;
        loop {
            if self.metric("vigil_readings_accepted_total").await >= n {
                return Ok(Instant::now());
            }
            if Instant::now() > end {
                bail!("vigil stored fewer than {n} readings within {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM and wait (the drain commits everything).
    pub(crate) async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(pid) = self.child.id() {
            tokio::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await?;
        }
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .context("vigil did not stop within 30 s")??;
        Ok(())
    }
}

/// A bench device: id and secret.
pub(crate) type Cred = (String, String);

pub(crate) async fn provision(api: &Api, prefix: &str, n: usize) -> anyhow::Result<Vec<Cred>> {
    let mut out = Vec::with_capacity(n);
    for d in 0..n {
        if d % 10 == 0 {
            api.call(
                reqwest::Method::POST,
                "/patients",
                Some(json!({"id": format!("{prefix}-p{}", d / 10), "name": "Bench patient"})),
            )
            .await?;
        }
        let id = format!("{prefix}-d{d}");
        let v = api
            .call(
                reqwest::Method::POST,
                "/devices",
                Some(json!({"id": id, "patient_id": format!("{prefix}-p{}", d / 10), "profile": "patient-app"})),
            )
            .await?;
        out.push((
            id,
            v["mqtt"]["password"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        ));
    }
    Ok(out)
}

/// The probe patient (`probe`, one rule: heart rate over 150 is high) and its device
/// (`probe-app`); the device's secret.
pub(crate) async fn provision_probe(api: &Api) -> anyhow::Result<String> {
    api.call(
        reqwest::Method::POST,
        "/patients",
        Some(json!({"id": "probe", "name": "Probe"})),
    )
    .await?;
    let probe = api
        .call(
            reqwest::Method::POST,
            "/devices",
            Some(json!({"id": "probe-app", "patient_id": "probe", "profile": "patient-app"})),
        )
        .await?;
    api.call(
        reqwest::Method::PUT,
        "/patients/probe/care-plan",
        Some(
            json!({"rules": [{"id": "probe", "kind": "threshold", "metric": "heart_rate",
                                "op": ">", "value": 150, "severity": "high"}]}),
        ),
    )
    .await?;
    Ok(probe["mqtt"]["password"]
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

/// Publishes `per_device` QoS 1 readings from each device (100 in flight), each with its own
/// time starting at `base_ms` (so no phase's readings collide with another's). Returns the
/// instant of the first publish and of the last acknowledgement.
pub(crate) async fn stream(
    addr: SocketAddr,
    creds: &[Cred],
    per_device: usize,
    base_ms: i64,
) -> anyhow::Result<(Instant, Instant)> {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (d, (id, secret)) in creds.iter().enumerate() {
        let mut opts = MqttOptions::new(format!("{id}-bench"), addr.ip().to_string(), addr.port());
        opts.set_credentials(id.clone(), secret.clone());
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_inflight(100);
        let (client, mut events) = AsyncClient::new(opts, 200);
        let topic = format!("vigil/v1/devices/{id}/readings");
        let t0 = base_ms + (d * per_device) as i64;
        tasks.push(tokio::spawn(async move {
            let pub_task = tokio::spawn(async move {
                for i in 0..per_device {
                    let body = format!(
                        r#"{{"metric":"heart_rate","value":{},"time":"{}"}}"#,
                        60 + (i % 40),
                        rfc3339(t0 + i as i64)
                    );
                    if client
                        .publish(&topic, QoS::AtLeastOnce, false, body)
                        .await
                        .is_err()
                    {
                        return client;
                    }
                }
                client
            });
            let mut acked = 0usize;
            let deadline = Instant::now() + Duration::from_secs(600);
            while acked < per_device && Instant::now() < deadline {
                match tokio::time::timeout(Duration::from_secs(30), events.poll()).await {
                    Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acked += 1,
                    Ok(Ok(_)) => {}
                    Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(200)).await,
                    Err(_) => break,
                }
            }
            let acked_at = Instant::now();
            if let Ok(client) = pub_task.await {
                let _ = client.disconnect().await;
                let _ = tokio::time::timeout(Duration::from_secs(2), async {
                    while events.poll().await.is_ok() {}
                })
                .await;
            }
            (acked, acked_at)
        }));
    }
    let mut last = start;
    for t in tasks {
        let (acked, at) = t.await?;
        if acked < per_device {
            bail!("a device got {acked} of {per_device} acknowledgements");
        }
        last = last.max(at);
    }
    Ok((start, last))
}

fn phase(name: &'static str, n: u64, from: Instant, to: Instant, pid: Option<u32>) -> Phase {
    let seconds = to.duration_since(from).as_secs_f64().max(1e-6);
    let stats = pid.and_then(proc_stats);
    Phase {
        name,
        readings: n,
        seconds,
        per_second: n as f64 / seconds,
        cpu_seconds: stats.as_ref().map(|s| s.cpu_seconds),
        peak_rss_mib: stats.map(|s| s.peak_rss_kib as f64 / 1024.0),
    }
}

/// Generates Mosquitto's files for Vigil's devices from the data dir.
async fn mosquitto_config(data_dir: &Path, out: &Path) -> anyhow::Result<()> {
    let toml = out.with_extension("toml");
    std::fs::write(
        &toml,
        format!("[mqtt]\nusername = \"{SERVICE_USER}\"\npassword = \"{SERVICE_PASSWORD}\"\n"),
    )?;
    let status = tokio::process::Command::new(vigil_bin()?)
        .args(["broker", "mosquitto-config", "--config"])
        .arg(&toml)
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--out")
        .arg(out)
        .status()
        .await?;
    if !status.success() {
        bail!("vigil broker mosquitto-config failed");
    }
    Ok(())
}

/// Runs the bench and writes its results.
pub async fn run(quick: bool, idle_devices: Option<usize>) -> anyhow::Result<()> {
    let mut sizes = Sizes::new(quick);
    if let Some(n) = idle_devices {
        sizes.idle_devices = n;
    }
    let total = sizes.total();
    let work = std::env::temp_dir().join(format!("vigil-sim-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let data = work.join("data");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    // Each phase's readings get their own stretch of the last thirty days.
    let base = |phase: i64| now - 30 * 86_400_000 + phase * 5 * 86_400_000;
    eprintln!(
        "vigil-sim bench{}: {} devices × {} QoS 1 readings per phase",
        if quick { " --quick" } else { "" },
        sizes.devices,
        sizes.per_device
    );

    // Provision once (embedded Vigil), then write Mosquitto's password and ACL files for them.
    let gw = Gateway::start(&data, &[]).await?;
    let creds = provision(&gw.api, "bench", sizes.devices).await?;
    let idle = provision(&gw.api, "idle", sizes.idle_devices).await?;
    let probe_secret = provision_probe(&gw.api).await?;
    gw.stop().await?;
    let conf = work.join("mosquitto");
    mosquitto_config(&data, &conf).await?;

    let mut phases = Vec::new();
    // 1. The ceiling.
    {
        let port = free_port()?;
        let broker = Broker::start(&work.join("b1"), port, Some(&conf)).await?;
        broker.add_reader("ceiling", READER_PASSWORD).await?;
        let sub = CeilingSub::start(port, "ceiling", READER_PASSWORD, total).await?;
        let (from, _) = stream(
            ([127, 0, 0, 1], port).into(),
            &creds,
            sizes.per_device,
            base(0),
        )
        .await?;
        let to = sub.finished(Duration::from_secs(600)).await?;
        phases.push(phase(
            "mosquitto_sub (ceiling, no storage)",
            total,
            from,
            to,
            None,
        ));
        broker.stop().await?;
    }
    eprintln!("  ceiling: {:.0}/s", phases[0].per_second);
    // 2. The peer.
    {
        let port = free_port()?;
        let broker = Broker::start(&work.join("b2"), port, Some(&conf)).await?;
        broker.add_reader("peer", READER_PASSWORD).await?;
        let peer = PythonPeer::start(port, "peer", READER_PASSWORD, &work.join("peer.db")).await?;
        let (from, _) = stream(
            ([127, 0, 0, 1], port).into(),
            &creds,
            sizes.per_device,
            base(1),
        )
        .await?;
        let to = peer.wait_stored(total, Duration::from_secs(900)).await?;
        let p = phase(
            "Python paho-mqtt + SQLite (peer)",
            total,
            from,
            to,
            Some(peer.pid()),
        );
        phases.push(p);
        peer.stop().await?;
        broker.stop().await?;
    }
    eprintln!("  peer: {:.0}/s", phases[1].per_second);
    // 3. Vigil behind the same Mosquitto.
    {
        let port = free_port()?;
        let broker = Broker::start(&work.join("b3"), port, Some(&conf)).await?;
        let gw = Gateway::start(
            &data,
            &[
                ("VIGIL_MQTT__MODE", "external".into()),
                ("VIGIL_MQTT__URL", format!("mqtt://127.0.0.1:{port}")),
                ("VIGIL_MQTT__USERNAME", SERVICE_USER.into()),
                ("VIGIL_MQTT__PASSWORD", SERVICE_PASSWORD.into()),
                ("VIGIL_MQTT__MAX_INFLIGHT", "1000".into()),
            ],
        )
        .await?;
        // Subscribed before the stream starts.
        let end = Instant::now() + Duration::from_secs(30);
        while gw.metric("vigil_mqtt_broker_subscribed").await < 1.0 {
            if Instant::now() > end {
                bail!("vigil did not subscribe to the broker");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (from, _) = stream(
            ([127, 0, 0, 1], port).into(),
            &creds,
            sizes.per_device,
            base(2),
        )
        .await?;
        let to = gw
            .wait_accepted(total as f64, Duration::from_secs(900))
            .await?;
        phases.push(phase(
            "Vigil, external Mosquitto",
            total,
            from,
            to,
            gw.pid(),
        ));
        gw.stop().await?;
        broker.stop().await?;
    }
    eprintln!("  vigil external: {:.0}/s", phases[2].per_second);
    // 4. Vigil's own endpoint; then latency and memory against it.
    let gw = Gateway::start(&data, &[("VIGIL_ALERTS__TICK_MS", "100".into())]).await?;
    let mqtt = gw.mqtt.context("vigil has no embedded endpoint")?;
    let before = gw.metric("vigil_readings_accepted_total").await;
    let (from, _) = stream(mqtt, &creds, sizes.per_device, base(3)).await?;
    let to = gw
        .wait_accepted(before + total as f64, Duration::from_secs(900))
        .await?;
    phases.push(phase("Vigil, embedded endpoint", total, from, to, gw.pid()));
    eprintln!("  vigil embedded: {:.0}/s", phases[3].per_second);

    let (stored, alert, live, half) = probe_latency(
        &gw,
        mqtt,
        &creds,
        ("probe-app", &probe_secret),
        phases[3].per_second / 2.0,
        sizes.probes,
        base(4),
    )
    .await?;
    let (connected, per_idle) = idle_memory(&gw, mqtt, &idle).await?;
    gw.stop().await?;

    let rate = |i: usize| phases[i].per_second;
    let report = Report {
        when: rfc3339(now),
        quick,
        sizes,
        machine: machine(),
        registry: registry(),
        ratio_embedded_to_ceiling: rate(3) / rate(0),
        ratio_external_to_ceiling: rate(2) / rate(0),
        ratio_embedded_to_peer: rate(3) / rate(1),
        ratio_external_to_peer: rate(2) / rate(1),
        phases,
        publish_to_stored: stored,
        publish_to_alert: alert,
        publish_to_live: live,
        alert_background_per_second: half,
        idle_devices_connected: connected,
        rss_per_idle_device_kib: per_idle,
    };
    let (json_path, md_path) = write(&report)?;
    let _ = std::fs::remove_dir_all(&work);
    println!("{}", markdown(&report));
    eprintln!("results: {} and {}", json_path.display(), md_path.display());
    Ok(())
}

/// Probes, under a paced background load of `rate` readings/s: publish → PUBACK (which
/// Vigil's endpoint sends after the durable commit: publish → stored), publish → the
/// reading's event on the dashboard's live WebSocket, and publish → alert visible in the API.
pub(crate) async fn probe_latency(
    gw: &Gateway,
    mqtt: SocketAddr,
    creds: &[Cred],
    probe: (&str, &str),
    rate: f64,
    probes: usize,
    base_ms: i64,
) -> anyhow::Result<(Option<Latency>, Option<Latency>, Option<Latency>, f64)> {
    // Background: every 10 ms each device sends its share as one vigil-json array (as a
    // gateway or a phone app batching readings would), so the load generator itself stays
    // light on this machine's two cores.
    let stop = Arc::new(AtomicU64::new(0));
    let mut bg = Vec::new();
    let per_tick = ((rate / creds.len() as f64) / 100.0).round().max(1.0) as usize;
    for (d, (id, secret)) in creds.iter().enumerate() {
        let mut opts = MqttOptions::new(format!("{id}-bg"), mqtt.ip().to_string(), mqtt.port());
        opts.set_credentials(id.clone(), secret.clone());
        opts.set_inflight(100);
        let (client, mut events) = AsyncClient::new(opts, 200);
        let topic = format!("vigil/v1/devices/{id}/readings");
        let stop = stop.clone();
        let t0 = base_ms + d as i64 * 10_000_000;
        bg.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut i = 0i64;
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        if stop.load(Ordering::Relaxed) > 0 { break; }
                        let body: Vec<String> = (0..per_tick)
                            .map(|_| {
                                i += 1;
                                format!(r#"{{"metric":"heart_rate","value":72,"time":"{}"}}"#, rfc3339(t0 + i))
                            })
                            .collect();
                        let body = format!("[{}]", body.join(","));
                        let _ = client.try_publish(&topic, QoS::AtLeastOnce, false, body);
                    }
                    e = events.poll() => if e.is_err() { tokio::time::sleep(Duration::from_millis(100)).await; }
                }
            }
        }));
    }
    let offered = (per_tick * creds.len() * 100) as f64;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (accepted0, started0) = (
        gw.metric("vigil_readings_accepted_total").await,
        Instant::now(),
    );
    // The dashboard's view: the probe patient's readings on the live WebSocket.
    let mut live_rx = live_watch(gw, "probe").await?;
    let mut live = Vec::new();
    let (id, secret) = probe;
    let mut opts = MqttOptions::new("probe-bench", mqtt.ip().to_string(), mqtt.port());
    opts.set_credentials(id, secret);
    let (client, mut events) = AsyncClient::new(opts, 10);
    let topic = format!("vigil/v1/devices/{id}/readings");
    let (mut stored, mut alert) = (Vec::new(), Vec::new());
    let mut t = now_wall() - 3_600_000;
    for _ in 0..probes {
        // High reading: the probe rule fires.
        t += 1000;
        let started = Instant::now();
        client
            .publish(&topic, QoS::AtLeastOnce, false, probe_reading(170, t))
            .await?;
        tokio::time::timeout(Duration::from_secs(10), wait_ack(&mut events)).await??;
        stored.push(started.elapsed().as_secs_f64() * 1000.0);
        // The live event and the alert are awaited side by side, each timed on its own.
        let live_wait = async {
            let waited = tokio::time::timeout(Duration::from_secs(10), async {
                loop {
                    match live_rx.recv().await {
                        Some((170.0, at)) => return Some(at),
                        Some(_) => {}
                        None => return None,
                    }
                }
            })
            .await;
            match waited {
                Ok(Some(at)) => Ok(at.duration_since(started).as_secs_f64() * 1000.0),
                Ok(None) => bail!("the live WebSocket closed during the probes"),
                Err(_) => bail!("no live event within 10 s of a probe"),
            }
        };
        let alert_wait = async {
            loop {
                let v = gw
                    .api
                    .call(
                        reqwest::Method::GET,
                        "/alerts?patient_id=probe&status=open",
                        None,
                    )
                    .await?;
                if let Some(id) = v["alerts"][0]["id"].as_str() {
                    return Ok((id.to_owned(), started.elapsed().as_secs_f64() * 1000.0));
                }
                if started.elapsed() > Duration::from_secs(10) {
                    bail!("no alert within 10 s of a probe");
                }
            }
        };
        let (live_ms, alert_seen) = tokio::try_join!(live_wait, alert_wait)?;
        let (id, alert_ms) = alert_seen;
        live.push(live_ms);
        alert.push(alert_ms);
        // Normal again, stored; then resolve, so the next probe opens a new alert.
        t += 1000;
        client
            .publish(&topic, QoS::AtLeastOnce, false, probe_reading(70, t))
            .await?;
        tokio::time::timeout(Duration::from_secs(10), wait_ack(&mut events)).await??;
        gw.api
            .call(
                reqwest::Method::POST,
                &format!("/alerts/{id}/resolve"),
                Some(json!({})),
            )
            .await?;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let achieved = (gw.metric("vigil_readings_accepted_total").await - accepted0)
        / started0.elapsed().as_secs_f64();
    stop.store(1, Ordering::Relaxed);
    for t in bg {
        let _ = t.await;
    }
    Ok((
        latency(stored),
        latency(alert),
        latency(live),
        offered.min(achieved),
    ))
}

/// One probe reading: heart rate `value` at `t` (ms).
fn probe_reading(value: u32, t: i64) -> String {
    format!(
        r#"{{"metric":"heart_rate","value":{value},"time":"{}"}}"#,
        rfc3339(t)
    )
}

/// Opens the live WebSocket and forwards `(value, when received)` of each reading event of
/// `patient`.
async fn live_watch(
    gw: &Gateway,
    patient: &str,
) -> anyhow::Result<tokio::sync::mpsc::UnboundedReceiver<(f64, Instant)>> {
    use futures_util::StreamExt as _;
    let url = format!(
        "{}/api/v1/live?token={TOKEN}",
        gw.http.replacen("http://", "ws://", 1)
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .context("live WebSocket")?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let patient = patient.to_owned();
    tokio::spawn(async move {
        while let Some(Ok(m)) = ws.next().await {
            let at = Instant::now();
            let tokio_tungstenite::tungstenite::Message::Text(t) = m else {
                continue;
            };
            // Cheap filter first: most events are the background's.
            if !t.as_str().contains(&patient) {
                continue;
            }
            let Ok(v) = serde_json::from_str::<Value>(t.as_str()) else {
                continue;
            };
            if v["type"] == "observation" && v["patient_id"] == patient.as_str() {
                let value = v["value"].as_f64().unwrap_or(f64::NAN);
                if tx.send((value, at)).is_err() {
                    return;
                }
            }
        }
    });
    Ok(rx)
}

/// Waits for the next PUBACK on a connection.
async fn wait_ack(events: &mut rumqttc::EventLoop) -> anyhow::Result<()> {
    loop {
        match events.poll().await {
            Ok(Event::Incoming(Packet::PubAck(_))) => return Ok(()),
            Ok(_) => {}
            Err(e) => bail!("probe connection: {e}"),
        }
    }
}

fn now_wall() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Connects the idle devices (they only keep their connection alive) and measures the
/// gateway's resident memory before and after: KiB per connected device.
async fn idle_memory(
    gw: &Gateway,
    mqtt: SocketAddr,
    idle: &[Cred],
) -> anyhow::Result<(u64, Option<f64>)> {
    let pid = gw.pid().context("no vigil pid")?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = proc_stats(pid).context("no /proc stats")?.rss_kib;
    let baseline = gw.metric("vigil_mqtt_connected_devices").await;
    let mut held = Vec::new();
    for (i, (id, secret)) in idle.iter().enumerate() {
        let mut opts = MqttOptions::new(format!("{id}-idle"), mqtt.ip().to_string(), mqtt.port());
        opts.set_credentials(id.clone(), secret.clone());
        opts.set_keep_alive(Duration::from_secs(120));
        let (client, mut events) = AsyncClient::new(opts, 1);
        held.push((
            client,
            tokio::spawn(async move { while events.poll().await.is_ok() {} }),
        ));
        if i % 200 == 199 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let target = baseline + idle.len() as f64;
    let end = Instant::now() + Duration::from_secs(120);
    while gw.metric("vigil_mqtt_connected_devices").await < target && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let connected = (gw.metric("vigil_mqtt_connected_devices").await - baseline).max(0.0) as u64;
    let after = proc_stats(pid).context("no /proc stats")?.rss_kib;
    for (c, task) in held {
        let _ = c.disconnect().await;
        task.abort();
    }
    let per = (connected > 0).then(|| after.saturating_sub(before) as f64 / connected as f64);
    Ok((connected, per))
}

pub(crate) fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")?
                    .split(':')
                    .nth(1)
                    .map(|s| s.trim().to_owned())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    format!("{cores} × {cpu}")
}

/// The registry the gateways use: they inherit this process's environment, so
/// `VIGIL_DATABASE__URL` (an empty database) puts every phase's registry on PostgreSQL.
fn registry() -> &'static str {
    if std::env::var_os("VIGIL_DATABASE__URL").is_some() {
        "postgresql"
    } else {
        "sqlite"
    }
}

fn markdown(r: &Report) -> String {
    let mut s = format!(
        "## vigil-sim bench{} — {}\n\n{} devices × {} QoS 1 readings per phase; {}; registry on {}\n\n| phase | readings/s stored | × ceiling | CPU s | peak RSS MiB |\n| --- | ---: | ---: | ---: | ---: |\n",
        if r.quick { " --quick" } else { "" },
        r.when,
        r.sizes.devices,
        r.sizes.per_device,
        r.machine,
        r.registry
    );
    let ceiling = r.phases.first().map_or(1.0, |p| p.per_second);
    for p in &r.phases {
        s += &format!(
            "| {} | {:.0} | {:.2} | {} | {} |\n",
            p.name,
            p.per_second,
            p.per_second / ceiling,
            p.cpu_seconds.map_or("–".into(), |c| format!("{c:.1}")),
            p.peak_rss_mib.map_or("–".into(), |m| format!("{m:.0}")),
        );
    }
    s += &format!(
        "\nVigil embedded ÷ peer: **{:.1}×**; external ÷ peer: **{:.1}×**. Embedded ÷ ceiling: **{:.2}**; external ÷ ceiling: **{:.2}**.\n\n",
        r.ratio_embedded_to_peer,
        r.ratio_external_to_peer,
        r.ratio_embedded_to_ceiling,
        r.ratio_external_to_ceiling
    );
    let lat = |l: &Option<Latency>| {
        l.as_ref().map_or("–".into(), |l| {
            format!(
                "{:.1} / {:.1} / {:.1} ms ({} probes)",
                l.p50_ms, l.p99_ms, l.max_ms, l.samples
            )
        })
    };
    s += &format!(
        "| latency at {:.0} readings/s stored in the background (offered: half the embedded peak) | p50 / p99 / max |\n| --- | --- |\n| publish → stored (PUBACK after the durable commit) | {} |\n| publish → reading on the dashboard's live WebSocket | {} |\n| publish → alert visible in the API | {} |\n\n",
        r.alert_background_per_second,
        lat(&r.publish_to_stored),
        lat(&r.publish_to_live),
        lat(&r.publish_to_alert)
    );
    s += &format!(
        "Gateway memory per idle connected device: {} ({} devices connected).\n",
        r.rss_per_idle_device_kib
            .map_or("–".into(), |k| format!("{k:.2} KiB")),
        r.idle_devices_connected
    );
    s
}

/// Writes `bench/results/<timestamp>.json` and `.md` (relative to the working directory).
fn write(r: &Report) -> anyhow::Result<(PathBuf, PathBuf)> {
    let dir = PathBuf::from("bench/results");
    std::fs::create_dir_all(&dir)?;
    // Fixed width, so the files sort by time (RFC 3339 trims the fraction's trailing zeros).
    let stamp: String = r
        .when
        .chars()
        .take(19)
        .filter(|c| c.is_ascii_alphanumeric())
        .chain(['Z'])
        .collect();
    let stamp = format!("{stamp}{}", if r.quick { "-quick" } else { "" });
    let json_path = dir.join(format!("{stamp}.json"));
    let md_path = dir.join(format!("{stamp}.md"));
    std::fs::write(&json_path, serde_json::to_string_pretty(r)?)?;
    std::fs::write(&md_path, markdown(r))?;
    Ok((json_path, md_path))
}
