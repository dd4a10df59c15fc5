//! Alert latency under load: from a device's MQTT publish of an out-of-range reading to its
//! alert committed in the record and visible through `GET /api/v1/alerts`, while other devices
//! keep the gateway busy with normal readings. The real `vigil` binary (release build) runs on
//! loopback TCP with `VIGIL_ALERTS__TICK_MS=100`; rumqttc clients play the devices.
//!
//! - Background: `DEVICES` smartwatches (default 50, ten per patient) publish QoS 1 vigil-json
//!   readings (heart rate 60–90, SpO2 96–99: no alert under the default plan), each paced by
//!   its own interval so that together they offer `RATE` readings/s (default 10,000). The rate
//!   achieved is read from `vigil_readings_accepted_total` before and after the probes.
//! - Probes: one patient whose care plan is a single rule (heart rate > 150, high) and a
//!   patient-app device. `PROBES` times (default 200): publish heart rate 170 at QoS 1, then poll
//!   the patient's open alerts back to back until one appears. Between probes a normal reading
//!   is stored (the condition clears) and the alert resolved, so the next probe opens a new one.
//!
//! Printed, not asserted: publish → alert visible (p50/p90/p99/max), publish → PUBACK (the
//! reading's store commit), the alert engine's own lag (`vigil_alert_eval_lag_seconds`: store
//! commit → alert effects committed, over every batch, most of which open nothing), and the
//! slowest probes with their publish time (to line up with logs or an fsync trace) and a
//! breakdown by the alert's `opened_at` (Vigil's clock when the engine took the reading's batch;
//! same host, same clock). A poll is itself a request that writes an audit line, so the latency
//! includes up to one poll round trip (printed too).
//!
//! Run: `cargo bench --bench alerts`, e.g. `RATE=5000 PROBES=500 DEVICES=100 cargo bench --bench
//! alerts`; `BENCH_LOG=info` shows more of the gateway's log (warnings are always shown).

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use vigil::domain::{format_rfc3339, now_ms, parse_rfc3339};

const TOKEN: &str = "bench-bootstrap-token";
const PROBE_PATIENT: &str = "probe";
const PROBE_DEVICE: &str = "probe-app";
/// A probe whose alert has not appeared by then is counted as missed.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The value of an unlabelled series in a Prometheus text exposition (0 when absent).
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The upper bound (ms) of the histogram bucket holding quantile `q` of the observations made
/// between two expositions of `name` (`le="+Inf"` as infinity).
fn bucket_quantile(before: &str, after: &str, name: &str, q: f64) -> f64 {
    let buckets = |text: &str| -> Vec<(f64, f64)> {
        let prefix = format!("{name}_bucket{{le=\"");
        text.lines()
            .filter_map(|l| {
                let (le, n) = l.strip_prefix(&prefix)?.split_once("\"} ")?;
                Some((le.parse().unwrap_or(f64::INFINITY), n.trim().parse().ok()?))
            })
            .collect()
    };
    let (b, a) = (buckets(before), buckets(after));
    let total = a.last().map_or(0.0, |x| x.1) - b.last().map_or(0.0, |x| x.1);
    a.iter()
        .zip(b.iter().map(|x| x.1).chain(std::iter::repeat(0.0)))
        .find(|((_, n), m)| n - m >= q * total)
        .map_or(f64::NAN, |((le, _), _)| le * 1000.0)
}

/// Nearest-rank percentile of sorted milliseconds.
fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A reading's time, strictly after the previous one's (so no reading is a duplicate).
fn next_time(last: &mut i64) -> i64 {
    *last = now_ms().max(*last + 1);
    *last
}

struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    async fn send(&self, req: reqwest::RequestBuilder) -> Value {
        let resp = req.bearer_auth(TOKEN).send().await.unwrap();
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{status}: {body}");
        body
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let url = format!("{}/api/v1{path}", self.base);
        self.send(self.http.post(url).json(&body)).await
    }

    async fn get(&self, path_and_query: &str) -> Value {
        let url = format!("{}/api/v1{path_and_query}", self.base);
        self.send(self.http.get(url)).await
    }

    async fn metrics(&self) -> String {
        let url = format!("{}/metrics", self.base);
        self.http
            .get(url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    async fn open_probe_alerts(&self) -> Vec<Value> {
        let v = self
            .get(&format!("/alerts?patient_id={PROBE_PATIENT}&status=open"))
            .await;
        v["alerts"].as_array().cloned().unwrap_or_default()
    }
}

/// One background device: a reading every `period` until `stop`, counting PUBACKs.
async fn background_device(
    mqtt: std::net::SocketAddr,
    id: String,
    secret: String,
    period: Duration,
    stop: CancellationToken,
    acked: Arc<AtomicU64>,
) {
    let mut opts = MqttOptions::new(&id, mqtt.ip().to_string(), mqtt.port());
    opts.set_credentials(&id, secret);
    opts.set_inflight(100);
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(opts, 200);
    let topic = format!("vigil/v1/devices/{id}/readings");
    let publishing = stop.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        let (mut last, mut i) = (0, 0u64);
        loop {
            tokio::select! {
                _ = publishing.cancelled() => break,
                _ = tick.tick() => {}
            }
            let (metric, value) = if i % 2 == 0 {
                ("heart_rate", 60 + i % 31)
            } else {
                ("spo2", 96 + i % 4)
            };
            let time = format_rfc3339(next_time(&mut last));
            let body = format!(r#"{{"metric":"{metric}","value":{value},"time":"{time}"}}"#);
            if client
                .publish(&topic, QoS::AtLeastOnce, false, body)
                .await
                .is_err()
            {
                break;
            }
            i += 1;
        }
        let _ = client.disconnect().await;
    });
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::PubAck(_))) => {
                acked.fetch_add(1, Ordering::Relaxed);
            }
            Ok(_) => {}
            Err(_) if stop.is_cancelled() => return,
            Err(e) => panic!("{id}: {e}"),
        }
    }
}

/// One probe's timings.
struct Probe {
    /// When it was published (Vigil's and the bench's clock, Unix ms).
    sent_ms: i64,
    visible: Duration,
    puback: Duration,
    /// From the publish to the engine taking the reading's batch (wall clocks, ms).
    to_engine_ms: i64,
    polls: u32,
}

/// The probe patient's device.
struct ProbeDevice {
    client: AsyncClient,
    /// When each PUBACK arrived (the probe has one publish in flight at a time).
    pubacks: mpsc::UnboundedReceiver<Instant>,
    topic: String,
    last_time: i64,
}

impl ProbeDevice {
    fn connect(mqtt: std::net::SocketAddr, secret: String, stop: CancellationToken) -> Self {
        let mut opts = MqttOptions::new(PROBE_DEVICE, mqtt.ip().to_string(), mqtt.port());
        opts.set_credentials(PROBE_DEVICE, secret);
        opts.set_keep_alive(Duration::from_secs(30));
        let (client, mut eventloop) = AsyncClient::new(opts, 10);
        let (acks, pubacks) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        let _ = acks.send(Instant::now());
                    }
                    Ok(_) => {}
                    Err(_) if stop.is_cancelled() => return,
                    Err(e) => panic!("{PROBE_DEVICE}: {e}"),
                }
            }
        });
        ProbeDevice {
            client,
            pubacks,
            topic: format!("vigil/v1/devices/{PROBE_DEVICE}/readings"),
            last_time: 0,
        }
    }

    /// Publishes a heart rate at QoS 1, timed now; returns the reading's time (Unix ms) and the
    /// instant just before the publish.
    async fn publish_heart_rate(&mut self, value: u32) -> (i64, Instant) {
        let time = next_time(&mut self.last_time);
        let body = format!(
            r#"{{"metric":"heart_rate","value":{value},"time":"{}"}}"#,
            format_rfc3339(time)
        );
        let sent = Instant::now();
        self.client
            .publish(&self.topic, QoS::AtLeastOnce, false, body)
            .await
            .unwrap();
        (time, sent)
    }

    async fn puback(&mut self) -> Instant {
        self.pubacks.recv().await.expect("the probe is connected")
    }

    /// Readies the next probe: a normal reading stored (the condition clears), then every open
    /// alert resolved. (Resolved while the condition still held, the rule would stay silent.)
    async fn clear(&mut self, api: &Api) {
        let (time, _) = self.publish_heart_rate(70).await;
        self.puback().await;
        let q = format!(
            "/patients/{PROBE_PATIENT}/observations?metric=heart_rate&from={}",
            format_rfc3339(time)
        );
        while api.get(&q).await["observations"]
            .as_array()
            .is_none_or(|o| o.is_empty())
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for a in api.open_probe_alerts().await {
            let id = a["id"].as_str().unwrap();
            api.post(&format!("/alerts/{id}/resolve"), json!({})).await;
        }
    }
}

#[tokio::main]
async fn main() {
    let rate = env_usize("RATE", 10_000);
    let probes = env_usize("PROBES", 200);
    let devices = env_usize("DEVICES", 50).max(1);
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
        .env("VIGIL_ALERTS__TICK_MS", "100")
        // Nothing resolves by itself during the run: the bench resolves each alert.
        .env("VIGIL_ALERTS__AUTO_RESOLVE_S", "86400")
        .env("VIGIL_LOG__FORMAT", "json")
        .env(
            "RUST_LOG",
            std::env::var("BENCH_LOG").unwrap_or_else(|_| "warn,vigil::app=info".into()),
        )
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("vigil starts");
    let mut lines = BufReader::new(vigil.stderr.take().unwrap()).lines();
    let (http_addr, mqtt): (String, std::net::SocketAddr) = loop {
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
    // Whatever the gateway warns about during the run is worth seeing next to the figures.
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains(r#""level":"WARN""#) || line.contains(r#""level":"ERROR""#) {
                eprintln!("vigil: {line}");
            }
        }
    });
    let api = Api {
        http: reqwest::Client::new(),
        base: format!("http://{http_addr}"),
    };

    let mut secrets = Vec::new();
    for d in 0..devices {
        if d % 10 == 0 {
            let id = format!("bg-{}", d / 10);
            api.post("/patients", json!({"id": id, "name": "Bench"}))
                .await;
        }
        let v = api
            .post(
                "/devices",
                json!({"id": format!("bg-dev-{d}"), "patient_id": format!("bg-{}", d / 10),
                       "profile": "smartwatch"}),
            )
            .await;
        secrets.push(v["mqtt"]["password"].as_str().unwrap().to_owned());
    }
    api.post(
        "/patients",
        json!({"id": PROBE_PATIENT, "name": "Bench probe"}),
    )
    .await;
    let v = api
        .post(
            "/devices",
            json!({"id": PROBE_DEVICE, "patient_id": PROBE_PATIENT, "profile": "patient-app"}),
        )
        .await;
    let probe_secret = v["mqtt"]["password"].as_str().unwrap().to_owned();
    let plan = json!({"rules": [{"id": "probe", "kind": "threshold", "metric": "heart_rate",
                                 "op": ">", "value": 150, "severity": "high"}]});
    api.send(
        api.http
            .put(format!(
                "{}/api/v1/patients/{PROBE_PATIENT}/care-plan",
                api.base
            ))
            .json(&plan),
    )
    .await;

    // Background load, for the whole measurement.
    let stop = CancellationToken::new();
    let acked = Arc::new(AtomicU64::new(0));
    let period = Duration::from_secs_f64(devices as f64 / rate.max(1) as f64);
    let mut background = Vec::new();
    for (d, secret) in secrets.into_iter().enumerate() {
        background.push(tokio::spawn(background_device(
            mqtt,
            format!("bg-dev-{d}"),
            secret,
            period,
            stop.clone(),
            acked.clone(),
        )));
    }

    let mut probe = ProbeDevice::connect(mqtt, probe_secret, stop.clone());

    // Warm up: every device connected and publishing for a while.
    tokio::time::sleep(Duration::from_secs(3)).await;
    probe.clear(&api).await;
    let before = api.metrics().await;
    let acked_before = acked.load(Ordering::Relaxed);
    let started = Instant::now();

    let mut results = Vec::with_capacity(probes);
    let mut missed = 0;
    for i in 0..probes {
        // Let the engine take the resolution before the next probe, at varying phases of the
        // 100 ms tick.
        tokio::time::sleep(Duration::from_millis(20 + (i as u64 * 37) % 50)).await;
        let (sent_ms, sent) = probe.publish_heart_rate(170).await;
        let mut polls = 0;
        let alert = loop {
            polls += 1;
            if let Some(a) = api.open_probe_alerts().await.into_iter().next() {
                break Some(a);
            }
            if sent.elapsed() > PROBE_TIMEOUT {
                break None;
            }
        };
        let visible = sent.elapsed();
        let puback = probe.puback().await - sent;
        match alert {
            Some(a) => {
                let opened = a["opened_at"].as_str().and_then(parse_rfc3339).unwrap();
                results.push(Probe {
                    sent_ms,
                    visible,
                    puback,
                    to_engine_ms: opened - sent_ms,
                    polls,
                });
            }
            None => missed += 1,
        }
        probe.clear(&api).await;
    }

    let elapsed = started.elapsed();
    let after = api.metrics().await;
    let acked_during = acked.load(Ordering::Relaxed) - acked_before;
    stop.cancel();
    for b in background {
        let _ = b.await;
    }

    let delta = |name: &str| metric(&after, name) - metric(&before, name);
    let accepted = delta("vigil_readings_accepted_total");
    // Each probe stored two readings of its own (the high one and the normal one after it).
    let achieved = (accepted - 2.0 * probes as f64) / elapsed.as_secs_f64();
    let lag_mean = delta("vigil_alert_eval_lag_seconds_sum")
        / delta("vigil_alert_eval_lag_seconds_count")
        * 1000.0;
    let lag_mean_all = metric(&after, "vigil_alert_eval_lag_seconds_sum")
        / metric(&after, "vigil_alert_eval_lag_seconds_count")
        * 1000.0;
    let commits = delta("vigil_store_commit_seconds_count");
    let commit_mean = delta("vigil_store_commit_seconds_sum") / commits * 1000.0;

    let sorted = |f: &dyn Fn(&Probe) -> f64| {
        let mut v: Vec<f64> = results.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let vis = sorted(&|p| ms(p.visible));
    let ack = sorted(&|p| ms(p.puback));
    let eng = sorted(&|p| p.to_engine_ms as f64);
    let polls: u32 = results.iter().map(|p| p.polls).sum();
    let poll_rtt = results.iter().map(|p| ms(p.visible)).sum::<f64>() / f64::from(polls.max(1));

    println!();
    println!(
        "alerts under load: {devices} background devices offering {rate} readings/s, \
         alert engine tick 100 ms, {:.1} s measured",
        elapsed.as_secs_f64()
    );
    println!();
    println!("| figure | value |");
    println!("|---|---|");
    println!(
        "| background readings/s achieved (offered {rate}) | {achieved:.0} stored; {:.0} acknowledged to the devices |",
        acked_during as f64 / elapsed.as_secs_f64()
    );
    println!("| probes (missed) | {} ({missed}) |", results.len());
    println!(
        "| publish → alert visible, p50 / p90 / p99 / max (ms) | {:.1} / {:.1} / {:.1} / {:.1} |",
        pct(&vis, 50.0),
        pct(&vis, 90.0),
        pct(&vis, 99.0),
        pct(&vis, 100.0)
    );
    println!(
        "| publish → PUBACK, p50 / p99 (ms) | {:.1} / {:.1} |",
        pct(&ack, 50.0),
        pct(&ack, 99.0)
    );
    println!(
        "| publish → engine takes the batch (alert `opened_at`), p50 / p99 (ms) | {:.0} / {:.0} |",
        pct(&eng, 50.0),
        pct(&eng, 99.0)
    );
    println!(
        "| `vigil_alert_eval_lag_seconds` mean, store commit → alert effects committed (ms) | {lag_mean:.2} during the probes ({lag_mean_all:.2} since start) |"
    );
    println!(
        "| ditto, p99 bucket (ms) | ≤ {:.2} |",
        bucket_quantile(&before, &after, "vigil_alert_eval_lag_seconds", 0.99)
    );
    println!(
        "| store commits during the probes: mean commit (ms), p99 bucket (ms), readings per commit | {commit_mean:.2}, ≤ {:.2}, {:.0} |",
        bucket_quantile(&before, &after, "vigil_store_commit_seconds", 0.99),
        accepted / commits
    );
    println!(
        "| alert polls: per probe, mean round trip (ms) | {:.1}, {poll_rtt:.2} |",
        f64::from(polls) / results.len().max(1) as f64
    );

    let mut slow: Vec<&Probe> = results.iter().collect();
    slow.sort_by_key(|p| std::cmp::Reverse(p.visible));
    println!();
    println!("slowest probes: published at; ms to visible, PUBACK, engine took the batch; polls");
    for p in slow.iter().take(5) {
        println!(
            "  {}; {:.1}, {:.1}, {}; {}",
            format_rfc3339(p.sent_ms),
            ms(p.visible),
            ms(p.puback),
            p.to_engine_ms,
            p.polls
        );
    }

    // A graceful stop, as in production: SIGTERM, then the gateway drains and exits.
    let pid = vigil.id().unwrap().to_string();
    let stopping = Instant::now();
    let killed = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .is_ok_and(|s| s.success());
    assert!(killed, "SIGTERM sent to vigil ({pid})");
    match tokio::time::timeout(Duration::from_secs(30), vigil.wait()).await {
        Ok(status) => println!(
            "\nvigil stopped on SIGTERM after {:.2} s ({})",
            stopping.elapsed().as_secs_f64(),
            status.unwrap()
        ),
        Err(_) => println!("\nvigil did not stop within 30 s of SIGTERM"),
    }
}
