//! The fault suite: each scenario counts readings and alerts before and after a fault and asserts
//! that nothing accepted was lost or stored twice. Each prints one `fault-report:` line with its
//! counts (`cargo test --test it faults -- --nocapture | grep fault-report`).
//!
//! Scenarios elsewhere, with the same kind of count: SIGKILL under load (`crash.rs`), Vigil down
//! behind an external broker (`external.rs`), VictoriaMetrics down and back (`influx.rs`), the
//! webhook receiver down and back and SIGKILL between alert and delivery (`alerts.rs`), HTTP,
//! HTTPS and MQTT floods under a 1,024-descriptor limit (`conns.rs`).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::cli::spawn_vigil;
use crate::support::{Api, V, clients_dir, eventually, metric, paho_device, run};

/// Prints a scenario's counts where `--nocapture` shows them.
pub(crate) fn report(scenario: &str, counts: &[(&str, usize)]) {
    let counts: Vec<String> = counts.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("fault-report: {scenario}: {}", counts.join(" "));
}

/// `tests/clients/crash_publisher.py`: a Paho device that publishes `count` QoS 1 heart rates one
/// second apart from `start`, resending whatever is unacknowledged after each reconnect.
pub(crate) struct Publisher {
    child: tokio::process::Child,
    acked: Arc<AtomicUsize>,
    finished: tokio::sync::watch::Receiver<Option<bool>>,
}

impl Publisher {
    pub(crate) fn start(
        mqtt_port: u16,
        device: &str,
        secret: &str,
        count: usize,
        start: i64,
        values: (i64, i64),
    ) -> Publisher {
        Publisher::paced(mqtt_port, device, secret, count, start, values, 0)
    }

    /// As [`Publisher::start`], handing Paho `per_second` readings a second (0: all at once), so
    /// the stream lasts long enough for a test to act in the middle of it.
    pub(crate) fn paced(
        mqtt_port: u16,
        device: &str,
        secret: &str,
        count: usize,
        start: i64,
        values: (i64, i64),
        per_second: u32,
    ) -> Publisher {
        let script = clients_dir().join("crash_publisher.py");
        let mut child = tokio::process::Command::new("python3")
            .arg(script)
            .args(["--port", &mqtt_port.to_string(), "--device", device])
            // `--secret=…`: a secret may begin with characters an option parser would misread.
            .arg(format!("--secret={secret}"))
            .args(["--count", &count.to_string(), "--start", &start.to_string()])
            .args([
                "--base",
                &values.0.to_string(),
                "--spread",
                &values.1.to_string(),
            ])
            .args(["--rate", &per_second.to_string()])
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let acked = Arc::new(AtomicUsize::new(0));
        let (tx, finished) = tokio::sync::watch::channel(None);
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let seen = acked.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(n) = line.strip_prefix("acked ") {
                    seen.store(n.parse().unwrap(), Ordering::SeqCst);
                } else if line.starts_with("done") {
                    let _ = tx.send(Some(true));
                } else if line.starts_with("timeout") {
                    let _ = tx.send(Some(false));
                }
            }
        });
        Publisher {
            child,
            acked,
            finished,
        }
    }

    pub(crate) fn acked(&self) -> usize {
        self.acked.load(Ordering::SeqCst)
    }

    /// Waits until every publish was acknowledged.
    pub(crate) async fn finish(mut self, limit: Duration) {
        let acked = self.acked.clone();
        let ok = tokio::time::timeout(limit, self.finished.wait_for(Option::is_some))
            .await
            .unwrap_or_else(|_| {
                let n = acked.load(Ordering::SeqCst);
                panic!("publisher not done within {limit:?} ({n} acked)")
            })
            .map(|v| *v == Some(true))
            .unwrap_or(false);
        assert!(ok, "publisher gave up with {} acknowledged", self.acked());
        assert!(self.child.wait().await.unwrap().success());
    }
}

/// Gives a patient one care-plan rule: heart rate at or above `at_least` /min opens a high alert.
pub(crate) async fn tachycardia_plan(api: &Api, patient: &str, at_least: u32) {
    let (s, v) = api
        .care_plan(
            patient,
            json!([{"id": "tachy", "kind": "threshold", "metric": "heart_rate",
                "op": ">=", "value": at_least, "for_s": 0, "severity": "high"}]),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

/// Observations stored for several patients, each checked as [`stored`] does.
async fn stored_all(api: &Api, patients: impl Iterator<Item = String>) -> usize {
    let mut n = 0;
    for p in patients {
        n += stored(api, &p).await;
    }
    n
}

/// Observations stored for a patient, checked to be distinct by (metric, time).
pub(crate) async fn stored(api: &Api, patient: &str) -> usize {
    let obs = api.observations(patient, "limit=100000").await;
    let keys: HashSet<(&str, &str)> = obs
        .iter()
        .map(|o| (o["metric"].as_str().unwrap(), o["time"].as_str().unwrap()))
        .collect();
    assert_eq!(keys.len(), obs.len(), "a reading was stored twice");
    obs.len()
}

/// Alerts of a patient, any status.
pub(crate) async fn alert_count(api: &Api, patient: &str) -> usize {
    let (s, v) = api
        .get(&format!("/api/v1/alerts?patient_id={patient}"))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["alerts"].as_array().unwrap().len()
}

/// A tmpfs of `size` mounted on a fresh directory, unmounted when dropped: a disk that really
/// fills up, without touching the machine's own disk.
pub(crate) struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    pub(crate) async fn mount(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let out = run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
                dir.path().to_str().unwrap(),
            ],
            None,
        )
        .await;
        assert!(
            out.ok,
            "the disk-full scenario mounts a small tmpfs and needs root (CAP_SYS_ADMIN): {}",
            out.stderr
        );
        SmallDisk { dir }
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file until the disk has no room left; returns its path.
    pub(crate) fn fill(&self) -> PathBuf {
        use std::io::Write as _;
        let path = self.path().join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk = vec![0x55u8; 4096];
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
                Err(e) => panic!("filling the disk: {e}"),
            }
        }
        let _ = f.sync_all();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .args(["-l", self.dir.path().to_str().unwrap()])
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_readings_with_a_clear_error_and_loses_nothing_once_freed() {
    const BEFORE: usize = 100;
    const DURING: usize = 1_000;
    let disk = SmallDisk::mount("64m").await;
    let data = disk.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let mut vigil = spawn_vigil(&data, "127.0.0.1:0").await;
    let api = Api::new(vigil.http);
    api.patient("p-full").await;
    let secret = api.device("hr-full", "p-full", "smartwatch").await;
    tachycardia_plan(&api, "p-full", 95).await;
    let start = vigil::domain::now_ms() / 1000 - 86_400;
    let port = vigil.mqtt.port();

    // Before: readings of 60 to 79 /min, below the rule.
    Publisher::start(port, "hr-full", &secret, BEFORE, start, (60, 20))
        .finish(Duration::from_secs(60))
        .await;
    let (readings_before, alerts_before) = (
        stored(&api, "p-full").await,
        alert_count(&api, "p-full").await,
    );
    assert_eq!((readings_before, alerts_before), (BEFORE, 0));

    // The disk fills up; then the device sends readings that reach 99 /min.
    let filler = disk.fill();
    let during = Publisher::start(
        port,
        "hr-full",
        &secret,
        DURING,
        start + BEFORE as i64,
        (60, 40),
    );
    eventually(
        Duration::from_secs(30),
        "vigil_store_disk_full 1",
        || async { (metric(vigil.http, "vigil_store_disk_full").await == Some(1.0)).then_some(()) },
    )
    .await;
    // Nothing is acknowledged while nothing can be stored: the device keeps its readings.
    assert_eq!(
        during.acked(),
        0,
        "a reading was acknowledged on a full disk"
    );
    // A device on MQTT 5 is told why: DISCONNECT 0x97 (quota exceeded) with a reason string.
    let told = paho_device(
        vigil.mqtt,
        V::V5,
        "hr-full",
        &secret,
        json!([{"topic": "vigil/v1/devices/hr-full/readings",
                "payload": r#"{"metric":"heart_rate","value":70}"#}]),
        &["--timeout", "10"],
    )
    .await;
    assert_eq!(told["acked"], 0, "{told}");
    assert_eq!(told["disconnect"]["reason_code"], 0x97, "{told}");
    let why = told["disconnect"]["reason_string"]
        .as_str()
        .unwrap_or_default();
    assert!(why.contains("disk is full"), "{told}");
    // Reads of patient data are refused too, since their audit line cannot be written.
    let (s, v) = api.get("/api/v1/patients/p-full/observations").await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert!(v["error"].as_str().unwrap().contains("disk is full"), "{v}");
    // Health and metrics still answer; the process is alive.
    assert!(
        vigil.child.try_wait().unwrap().is_none(),
        "vigil exited on a full disk"
    );
    let health = reqwest::get(format!("http://{}/healthz", vigil.http))
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);

    // An operator frees space: the device's resends are stored, each once, and the rule fires.
    std::fs::remove_file(filler).unwrap();
    during.finish(Duration::from_secs(120)).await;
    let readings_after = stored(&api, "p-full").await;
    let alerts_after = eventually(Duration::from_secs(20), "the alert", || async {
        let n = alert_count(&api, "p-full").await;
        (n > 0).then_some(n)
    })
    .await;
    assert_eq!(readings_after, BEFORE + DURING);
    assert_eq!(alerts_after, 1);
    assert_eq!(metric(vigil.http, "vigil_store_disk_full").await, Some(0.0));
    let (s, v) = api.get("/api/v1/audit/verify").await;
    assert_eq!((s, &v["intact"]), (StatusCode::OK, &json!(true)), "{v}");

    // After a clean stop, both databases pass SQLite's own integrity check.
    let pid = vigil.child.id().unwrap().to_string();
    assert!(run("kill", &["-TERM", &pid], None).await.ok);
    let status = tokio::time::timeout(Duration::from_secs(30), vigil.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    for db in ["store.db", "registry.db"] {
        let c = rusqlite::Connection::open(data.join(db)).unwrap();
        let check: String = c
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok", "{db}");
    }
    report(
        "disk full on the data directory",
        &[
            ("readings_before", readings_before),
            ("sent_while_full", DURING),
            ("readings_after", readings_after),
            ("alerts_before", alerts_before),
            ("alerts_after", alerts_after),
        ],
    );
}

/// One device's load for the live feed: `lines` messages, each an array of four readings at one
/// time, published by `mosquitto_pub -l` at QoS 1 (it exits once all are acknowledged).
async fn burst(mqtt: std::net::SocketAddr, device: &str, secret: &str, start: i64, lines: i64) {
    let mut input = String::new();
    for i in 0..lines {
        let t = start + i;
        input.push_str(
            &json!([
                {"metric": "heart_rate", "value": 60 + i % 40, "time": t},
                {"metric": "spo2", "value": 90 + i % 10, "time": t},
                {"metric": "respiratory_rate", "value": 12 + i % 8, "time": t},
                {"metric": "steps", "value": i, "time": t},
            ])
            .to_string(),
        );
        input.push('\n');
    }
    let port = mqtt.port().to_string();
    let id = format!("{device}-burst");
    let out = run(
        "mosquitto_pub",
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-V",
            "mqttv5",
            "-q",
            "1",
            "-i",
            &id,
            "-u",
            device,
            "-P",
            secret,
            "-t",
            &format!("vigil/v1/devices/{device}/readings"),
            "-l",
        ],
        Some(input.as_bytes()),
    )
    .await;
    assert!(out.ok, "{device}: {}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_live_consumer_is_dropped_and_the_others_stay_live() {
    use futures_util::StreamExt as _;
    use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest as _};

    const DEVICES: usize = 16;
    // 2,500 lines a device send about 8 MB to a client that reads, twice what the kernel lets
    // a socket queue here (tcp_wmem's maximum, 4 MiB, plus the client's small window). Where
    // the kernel allows more, more is sent, so the slow client's socket still fills.
    let wmem_max: i64 = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|t| t.split_whitespace().nth(2)?.parse().ok())
        .unwrap_or(4 << 20);
    let lines: i64 = 2_500 * ((wmem_max.max(4 << 20) + (4 << 20) - 1) / (4 << 20));
    // Small commits, so that coalescing within a commit leaves megabytes for the feed to send.
    let gw = crate::support::Gateway::start_with(|c| c.store.batch_max = 16).await;
    let api = &gw.client;
    let mut secrets = Vec::new();
    for i in 0..DEVICES {
        api.patient(&format!("p-live{i}")).await;
        secrets.push(
            api.device(&format!("w-live{i}"), &format!("p-live{i}"), "smartwatch")
                .await,
        );
    }
    let url = format!(
        "ws://{}/api/v1/live?token={}",
        gw.http,
        crate::support::TOKEN
    );

    // The fast client reads everything and keeps each patient's newest reading time.
    let (fast, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    let newest = Arc::new(std::sync::Mutex::new(std::collections::HashMap::<
        String,
        String,
    >::new()));
    let fast_closed = Arc::new(std::sync::Mutex::new(None::<String>));
    let (seen, closed) = (newest.clone(), fast_closed.clone());
    let reader = tokio::spawn(async move {
        let mut fast = fast;
        while let Some(m) = fast.next().await {
            match m {
                Ok(Message::Text(t)) => {
                    let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                    if v["type"] == "observation" && v["metric"] == "steps" {
                        let p = v["patient_id"].as_str().unwrap().to_owned();
                        let t = v["time"].as_str().unwrap().to_owned();
                        let mut s = seen.lock().unwrap();
                        let e = s.entry(p).or_default();
                        if t > *e {
                            *e = t;
                        }
                    }
                }
                Ok(Message::Close(c)) => {
                    *closed.lock().unwrap() = Some(format!("{c:?}"));
                    break;
                }
                Ok(_) => {}
                Err(e) => {
                    *closed.lock().unwrap() = Some(e.to_string());
                    break;
                }
            }
        }
    });

    // The slow client opens the feed with a tiny receive window and then reads nothing.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let stream = sock.connect(gw.http).await.unwrap();
    let (mut slow, _) =
        tokio_tungstenite::client_async(url.as_str().into_client_request().unwrap(), stream)
            .await
            .unwrap();

    let patients = || (0..DEVICES).map(|i| format!("p-live{i}"));
    let stored_before = stored_all(api, patients()).await;
    let start = vigil::domain::now_ms() / 1000 - 2 * 86_400;
    let loads: Vec<_> = (0..DEVICES)
        .map(|i| {
            let (mqtt, secret) = (gw.mqtt, secrets[i].clone());
            tokio::spawn(
                async move { burst(mqtt, &format!("w-live{i}"), &secret, start, lines).await },
            )
        })
        .collect();
    for l in loads {
        l.await.unwrap();
    }

    // The slow client was dropped…
    eventually(
        Duration::from_secs(30),
        "the slow client dropped",
        || async { (metric(gw.http, "vigil_live_dropped_total").await >= Some(1.0)).then_some(()) },
    )
    .await;
    let dropped = metric(gw.http, "vigil_live_dropped_total").await.unwrap() as usize;
    // …and what it finally reads ends: with close code 4008 if the close frame got through.
    // It first reads the megabytes the kernel still holds for it through its 4 KiB window, a
    // wake-up per few kilobytes: generous, for a machine busy with other tests.
    let ended = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            match slow.next().await {
                Some(Ok(Message::Close(c))) => return c.map(|c| u16::from(c.code)),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return None,
            }
        }
    })
    .await
    .expect("the slow client's stream ends");
    assert!(matches!(ended, None | Some(4008)), "closed with {ended:?}");

    // The fast client stayed live to the end: it saw every device's last reading.
    let last = vigil::domain::format_rfc3339((start + lines - 1) * 1000);
    eventually(
        Duration::from_secs(30),
        "the fast client's last readings",
        || async {
            let s = newest.lock().unwrap();
            ((0..DEVICES).all(|i| s.get(&format!("p-live{i}")) == Some(&last))).then_some(())
        },
    )
    .await;
    assert_eq!(
        *fast_closed.lock().unwrap(),
        None,
        "the fast client was closed"
    );
    // Storage never waited on either client.
    let stored_after = stored_all(api, patients()).await;
    assert_eq!(stored_after, DEVICES * lines as usize * 4);
    reader.abort();
    report(
        "slow consumer on the live WebSocket",
        &[
            ("readings_before", stored_before),
            ("sent", DEVICES * lines as usize * 4),
            ("readings_after", stored_after),
            ("slow_clients_dropped", dropped),
            ("fast_clients_dropped", 0),
        ],
    );
    gw.stop().await;
}
