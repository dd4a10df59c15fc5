//! The monitoring panel at clinic size: `GET /api/v1/panel` with `PATIENTS` patients (default
//! 500), each with a pulse oximeter and a cuff and 6 hours of readings (heart rate and SpO2 every
//! minute, blood pressure every 2 hours), half of them on one care team, a few with open alerts.
//! Also the 30-day chart of one patient's heart rate at one reading a minute
//! (`GET /patients/{id}/series`, 600 points, downsampled in the store).
//!
//! The gateway runs in-process on loopback; the data is written to the store and registry first,
//! so the panel's cache warms from the store at start as after a restart (that time is printed
//! too). Printed, not asserted: warm-up time, p50/p99/max of the panel request as an admin (every
//! patient) and as a clinician (half), the body size, and the series request.
//!
//! Run: `cargo bench --bench panel`, e.g. `PATIENTS=1000 cargo bench --bench panel`.

use std::time::{Duration, Instant};

use serde_json::Value;
use tokio_util::sync::CancellationToken;
use vigil::config::{Config, Overrides};
use vigil::domain::{DeviceId, Metric, Observation, PatientId, now_ms};
use vigil::registry::{PatientDetails, Profiles, Registry, Role};
use vigil::store::Store;
use vigil::telemetry::Metrics;

const TOKEN: &str = "panel-bench-token";

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn seed(dir: &std::path::Path, patients: usize) {
    let registry = Registry::open(dir, Profiles::built_in().unwrap())
        .await
        .unwrap();
    let store = Store::open(dir, 4096, 64, Metrics::new()).unwrap();
    let now = now_ms();
    registry
        .create_team("north", "North", now, None)
        .await
        .unwrap();
    registry
        .create_team("south", "South", now, None)
        .await
        .unwrap();
    registry
        .add_user("nina", Role::Clinician, "panel bench amber kettle 7", now)
        .await
        .unwrap();
    registry
        .set_user_teams("nina", vec!["north".into()])
        .await
        .unwrap();
    for i in 0..patients {
        let id = PatientId::parse(&format!("pat-{i:04}")).unwrap();
        let details = PatientDetails {
            care_team: Some(if i % 2 == 0 { "north" } else { "south" }.into()),
            ..PatientDetails::default()
        };
        registry
            .create_patient(
                id.clone(),
                format!("Patient {i}"),
                None,
                None,
                details,
                now,
                None,
            )
            .await
            .unwrap();
        let ox = DeviceId::parse(&format!("ox-{i:04}")).unwrap();
        let cuff = DeviceId::parse(&format!("bp-{i:04}")).unwrap();
        registry
            .create_device(ox.clone(), id.clone(), "pulse-oximeter", now, None)
            .await
            .unwrap();
        registry
            .create_device(cuff.clone(), id.clone(), "bp-cuff", now, None)
            .await
            .unwrap();
        let mut rows = Vec::new();
        for m in 0..360 {
            let t = now - m * 60_000;
            let hr = 60.0 + ((i as i64 + m) % 30) as f64;
            rows.push(obs(&id, &ox, Metric::HeartRate, t, hr));
            rows.push(obs(&id, &ox, Metric::Spo2, t, 94.0 + (m % 5) as f64));
            if m % 120 == 0 {
                rows.push(obs(
                    &id,
                    &cuff,
                    Metric::BpSystolic,
                    t,
                    120.0 + (i % 50) as f64,
                ));
                rows.push(obs(&id, &cuff, Metric::BpDiastolic, t, 80.0));
            }
        }
        store.insert(rows, now).await.unwrap();
    }
    // One patient with 30 days of heart rate at one reading a minute, for the long chart.
    let id = PatientId::parse("pat-0000").unwrap();
    let ox = DeviceId::parse("ox-0000").unwrap();
    for day in 0..30 {
        let rows = (0..1440)
            .map(|m| {
                let t = now - 6 * 3_600_000 - (day * 1440 + m) * 60_000;
                obs(&id, &ox, Metric::HeartRate, t, 70.0 + (m % 20) as f64)
            })
            .collect();
        store.insert(rows, now).await.unwrap();
    }
    store.close().await;
}

fn obs(p: &PatientId, d: &DeviceId, metric: Metric, time_ms: i64, value: f64) -> Observation {
    Observation {
        patient_id: p.clone(),
        device_id: d.clone(),
        metric,
        value,
        time_ms,
    }
}

async fn timed(client: &reqwest::RequestBuilder, n: usize) -> (Vec<f64>, usize) {
    let mut ms = Vec::new();
    let mut size = 0;
    for _ in 0..n {
        let started = Instant::now();
        let resp = client.try_clone().unwrap().send().await.unwrap();
        assert!(resp.status().is_success(), "{}", resp.status());
        let body = resp.bytes().await.unwrap();
        ms.push(started.elapsed().as_secs_f64() * 1000.0);
        size = body.len();
    }
    ms.sort_by(f64::total_cmp);
    (ms, size)
}

fn report(what: &str, ms: &[f64], size: usize) {
    println!(
        "{what:<48} p50 {:>6.1} ms  p99 {:>6.1} ms  max {:>6.1} ms  ({} requests, {:.0} KiB)",
        pct(ms, 0.5),
        pct(ms, 0.99),
        ms[ms.len() - 1],
        ms.len(),
        size as f64 / 1024.0
    );
}

fn main() {
    let patients: usize = std::env::var("PATIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let t = Instant::now();
        seed(dir.path(), patients).await;
        println!(
            "seeded {patients} patients (6 h at 1/min, one with 30 days) in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        let flags = Overrides {
            data_dir: Some(dir.path().to_path_buf()),
            http_listen: Some("127.0.0.1:0".into()),
            mqtt_listen: Some("127.0.0.1:0".into()),
        };
        let cfg = Config::load(None, Vec::new(), &flags).unwrap();
        let started = Instant::now();
        let app = vigil::app::App::build(cfg, Some(TOKEN.into()))
            .await
            .unwrap();
        let base = format!("http://{}/api/v1", app.http_addr());
        let (stop, abort) = (CancellationToken::new(), CancellationToken::new());
        let task = tokio::spawn(app.run(stop.clone(), abort));
        let http = reqwest::Client::new();
        let admin = http.get(format!("{base}/panel")).bearer_auth(TOKEN);
        // Warm: every patient's tile has its latest heart rate.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let v: Value = admin
                .try_clone()
                .unwrap()
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let warm = v["patients"].as_array().is_some_and(|a| {
                a.len() == patients && a.iter().all(|p| !p["latest"]["heart_rate"].is_null())
            });
            if warm {
                break;
            }
            assert!(Instant::now() < deadline, "panel not warm in 120 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        println!(
            "panel cache warm {:.2} s after start",
            started.elapsed().as_secs_f64()
        );
        let (ms, size) = timed(&admin, 50).await;
        report(
            &format!("GET /panel, admin ({patients} patients)"),
            &ms,
            size,
        );
        let gzip = admin.try_clone().unwrap().header("accept-encoding", "gzip");
        let (ms, size) = timed(&gzip, 50).await;
        report("GET /panel, admin, gzip as browsers ask", &ms, size);

        let signed: Value = http
            .post(format!("{base}/session"))
            .json(
                &serde_json::json!({"username": "nina", "password": "panel bench amber kettle 7"}),
            )
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(signed["csrf_token"].is_string(), "{signed}");
        // The cookie was set on the response; sign in again to read it.
        let resp = http
            .post(format!("{base}/session"))
            .json(
                &serde_json::json!({"username": "nina", "password": "panel bench amber kettle 7"}),
            )
            .send()
            .await
            .unwrap();
        let cookie = resp.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned();
        let clinician = http.get(format!("{base}/panel")).header("cookie", cookie);
        let (ms, size) = timed(&clinician, 50).await;
        report(
            &format!("GET /panel, clinician ({} patients)", patients / 2),
            &ms,
            size,
        );

        let from = vigil::domain::format_rfc3339(now_ms() - 30 * 86_400_000 - 6 * 3_600_000);
        let series = http
            .get(format!("{base}/patients/pat-0000/series"))
            .query(&[
                ("metric", "heart_rate"),
                ("from", from.as_str()),
                ("points", "600"),
            ])
            .bearer_auth(TOKEN);
        let (ms, size) = timed(&series, 20).await;
        report(
            "GET /series, 30 days of 1/min heart rate → 600 pts",
            &ms,
            size,
        );
        stop.cancel();
        let _ = task.await;

        // What naming the patients shown costs a poll (docs/security.md, "Who was shown a
        // patient"): the panel's one audit line, against that line and one per patient in one
        // batch (a poll whose patients are all due: the first, or after the window).
        let registry = Registry::open(dir.path(), Profiles::built_in().unwrap())
            .await
            .unwrap();
        let line = |patient: Option<String>| vigil::registry::audit::NewAuditLine {
            time_ms: now_ms(),
            actor: "bench".into(),
            action: "panel.read".into(),
            patient_id: patient,
            target: "panel".into(),
            remote: "127.0.0.1".into(),
        };
        let mut one = Vec::new();
        for _ in 0..50 {
            let started = Instant::now();
            registry.audit_batch(vec![line(None)]).await.unwrap();
            one.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        one.sort_by(f64::total_cmp);
        report("audit: the panel's one line", &one, 0);
        let mut many = Vec::new();
        for _ in 0..50 {
            let batch: Vec<_> = std::iter::once(line(None))
                .chain((0..patients).map(|i| line(Some(format!("pat-{i:04}")))))
                .collect();
            let started = Instant::now();
            registry.audit_batch(batch).await.unwrap();
            many.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        many.sort_by(f64::total_cmp);
        report(
            &format!("audit: 1 + {patients} lines in one batch"),
            &many,
            0,
        );
        registry.verify_audit_chain().await.unwrap();
    });
}
