//! The fault suite: each scenario counts readings and alerts before and after a fault and asserts
//! that nothing accepted was lost or stored twice. Each prints one `fault-report:` line with its
//! counts (`cargo test --test it faults -- --nocapture | grep fault-report`).
//!
//! Scenarios elsewhere, with the same kind of count: SIGKILL under load (`crash.rs`), Vigil down
//! behind an external broker (`external.rs`), VictoriaMetrics down and back (`influx.rs`), the
//! webhook receiver down and back and SIGKILL between alert and delivery (`alerts.rs`).

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
use crate::support::{Api, V, clients_dir, eventually, paho_device, run};

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

/// Observations stored for a patient, checked to be distinct by time.
pub(crate) async fn stored(api: &Api, patient: &str) -> usize {
    let obs = api.observations(patient, "limit=100000").await;
    let times: HashSet<&str> = obs.iter().map(|o| o["time"].as_str().unwrap()).collect();
    assert_eq!(times.len(), obs.len(), "a reading was stored twice");
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

async fn metric(http: std::net::SocketAddr, name: &str) -> Option<f64> {
    let text = reqwest::get(format!("http://{http}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// A tmpfs of `size` mounted on a fresh directory, unmounted when dropped: a disk that really
/// fills up, without touching the machine's own disk.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    async fn mount(size: &str) -> SmallDisk {
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

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file until the disk has no room left; returns its path.
    fn fill(&self) -> PathBuf {
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
    let (s, v) = api
        .call(
            "PUT",
            "/api/v1/patients/p-full/care-plan",
            Some(
                json!({"rules": [{"id": "tachy", "kind": "threshold", "metric": "heart_rate",
                "op": ">=", "value": 95, "for_s": 0, "severity": "high"}]}),
            ),
            Some(crate::support::TOKEN),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
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
