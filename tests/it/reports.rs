//! The clinician's day (issue 21): readings out as CSV, the printable summary, the Ambulatory
//! Glucose Profile, and the audit trail naming the patients the panel, the alert list and the
//! live feed show. Through the API and the devices' MQTT way in, on the registry the gateway is
//! given (run again on PostgreSQL by scripts/test).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{Api, Gateway, TOKEN, eventually, publish_readings, run};
use crate::web::{Browser, PASSWORD, clinic};

const WAIT: Duration = Duration::from_secs(20);
const DAY_MS: i64 = 86_400_000;
const FIVE_MIN_MS: i64 = 300_000;

fn rfc3339(ms: i64) -> String {
    vigil::domain::format_rfc3339(ms)
}

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The CGM day: 288 readings five minutes apart from `t0` (a UTC midnight), in blocks:
/// 12 × 50 mg/dL (very low, hour 0), 24 × 65 (low, hours 1–2), 180 × 120 (in range, hours
/// 3–17), 48 × 200 (high, hours 18–21), 24 × 300 (very high, hours 22–23).
///
/// Worked by hand: 288 readings; very low 12/288 = 4.17 %, low 24/288 = 8.33 %, in range
/// 180/288 = 62.5 %, high 48/288 = 16.67 %, very high 24/288 = 8.33 %; mean = (12·50 + 24·65 +
/// 180·120 + 48·200 + 24·300) / 288 = 40 560 / 288 = 140.83 mg/dL; GMI = 3.31 + 0.02392 ×
/// 140.83 = 6.68 %; a 5-minute CGM over the 24 hours could send 288: 100 %.
pub(crate) fn cgm_day(t0: i64) -> Vec<Value> {
    let blocks = [(12, 50), (24, 65), (180, 120), (48, 200), (24, 300)];
    let mut out = Vec::new();
    let mut i = 0i64;
    for (n, v) in blocks {
        for _ in 0..n {
            let t = (t0 + i * FIVE_MIN_MS) / 1000;
            out.push(json!({"metric": "glucose", "value": v, "unit": "mg/dL", "time": t}));
            i += 1;
        }
    }
    out
}

/// Midnight UTC `days` days ago.
pub(crate) fn midnight_days_ago(days: i64) -> i64 {
    ((now_s() * 1000).div_euclid(DAY_MS) - days) * DAY_MS
}

/// A patient with a CGM that has sent [`cgm_day`] from `t0`, stored.
pub(crate) async fn patient_with_cgm_day(g: &Gateway, patient: &str, team: &str, t0: i64) {
    let (s, v) = g
        .client
        .post(
            "/api/v1/patients",
            json!({"id": patient, "name": "Gloria Glucose", "care_team": team}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let device = format!("cgm-{patient}");
    let secret = g.client.device(&device, patient, "cgm").await;
    publish_readings(g.mqtt, &device, &secret, &Value::Array(cgm_day(t0))).await;
    eventually(WAIT, "the CGM day stored", || async {
        let n = g
            .client
            .observations(patient, "metric=glucose&limit=1000")
            .await
            .len();
        (n == 288).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agp_of_a_known_cgm_day_matches_the_hand_worked_figures() {
    let g = Gateway::start().await;
    clinic(&g).await;
    let t0 = midnight_days_ago(3);
    patient_with_cgm_day(&g, "p-agp", "north", t0).await;
    let q = format!("from={}&to={}", rfc3339(t0), rfc3339(t0 + DAY_MS));
    let (s, a) = g
        .client
        .get(&format!("/api/v1/patients/p-agp/agp?{q}"))
        .await;
    assert_eq!(s, StatusCode::OK, "{a}");
    assert_eq!(a["readings"], 288, "{a}");
    assert_eq!(a["unit"], "mg/dL");
    assert_eq!(a["days_with_data"], 1);
    assert_eq!(a["cgm_active_pct"], 100.0);
    assert_eq!(a["mean_mg_dl"], 140.8);
    assert_eq!(a["gmi_pct"], 6.7);
    for (range, count, pct) in [
        ("very_low", 12, 4.2),
        ("low", 24, 8.3),
        ("in_range", 180, 62.5),
        ("high", 48, 16.7),
        ("very_high", 24, 8.3),
    ] {
        assert_eq!(a["ranges"][range]["count"], count, "{range}: {a}");
        assert_eq!(a["ranges"][range]["pct"], pct, "{range}: {a}");
    }
    // No clinic zone configured: hours are UTC, and the answer says so.
    assert_eq!(a["timezone"], "UTC");
    assert_eq!(a["timezone_source"], "default");
    let hours = a["hours"].as_array().unwrap();
    assert_eq!(hours.len(), 24);
    assert_eq!(hours[0]["p50"], 50.0);
    assert_eq!(hours[1]["p5"], 65.0);
    assert_eq!(hours[10]["p95"], 120.0);
    assert_eq!(hours[23]["p50"], 300.0);
    assert_eq!(hours[23]["n"], 12);

    // Bad periods are refused in words; nothing but 4xx.
    for (query, words) in [
        ("from=yesterday", "is not an RFC 3339 time"),
        (
            &format!("from={}&to={}", rfc3339(t0 + DAY_MS), rfc3339(t0)) as &str,
            "from must be before to",
        ),
        (
            &format!("from={}&to={}", rfc3339(t0 - 100 * DAY_MS), rfc3339(t0)),
            "longer than 90 days",
        ),
        ("color=blue", "unknown field"),
    ] {
        let (s, v) = g
            .client
            .get(&format!("/api/v1/patients/p-agp/agp?{query}"))
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{query}: {v}");
        assert!(v["error"].as_str().unwrap().contains(words), "{query}: {v}");
    }
    let (s, _) = g.client.get("/api/v1/patients/nobody/agp").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Another team's clinician is refused, and the refusal is audited.
    let mut sam = Browser::new(&g);
    sam.sign_in("sam", PASSWORD).await;
    let (s, v) = sam.call("GET", "/api/v1/patients/p-agp/agp", None).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let lines = audit(&g, "patient_id=p-agp").await;
    assert!(lines.iter().any(|l| l["action"] == "agp.read"), "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l["action"] == "access.refused" && l["actor"] == "sam"),
        "{lines:?}"
    );
    g.stop().await;
}

async fn audit(g: &Gateway, query: &str) -> Vec<Value> {
    let (s, v) = g
        .client
        .get(&format!("/api/v1/audit?{query}&limit=100000"))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["audit"].as_array().unwrap().clone()
}

/// Parses `csv` with Python's `csv` module (as a clinic's analyst would open it) and returns
/// the rows as JSON objects keyed by the header.
async fn python_csv(csv: &str) -> Vec<Value> {
    let out = run(
        "python3",
        &[
            "-c",
            "import csv, io, json, sys\n\
             text = sys.stdin.buffer.read().decode('utf-8')\n\
             rows = list(csv.DictReader(io.StringIO(text, newline='')))\n\
             print(json.dumps(rows))",
        ],
        Some(csv.as_bytes()),
    )
    .await;
    assert!(out.ok, "python3 csv: {}", out.stderr);
    serde_json::from_str(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_download_as_csv_that_pythons_csv_module_reads() {
    let g = Gateway::start().await;
    let (north, _) = clinic(&g).await;
    let t0 = midnight_days_ago(2);
    let readings: Vec<Value> = [
        (0, "spo2", 97.0),
        (60, "heart_rate", 72.0),
        (120, "spo2", 95.5),
    ]
    .iter()
    .map(|(s, m, v)| json!({"metric": m, "value": v, "time": t0 / 1000 + s}))
    .collect();
    publish_readings(g.mqtt, "oxn1", &north, &Value::Array(readings)).await;
    eventually(WAIT, "the readings stored", || async {
        (g.client.observations("pn1", "").await.len() == 3).then_some(())
    })
    .await;
    let http = reqwest::Client::new();
    let get = |q: String| {
        let http = http.clone();
        let url = format!("http://{}/api/v1/patients/pn1/observations.csv{q}", g.http);
        async move { http.get(url).bearer_auth(TOKEN).send().await.unwrap() }
    };
    let from = rfc3339(t0);
    let to = rfc3339(t0 + DAY_MS - 1000);
    let r = get(format!("?from={from}&to={to}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "text/csv; charset=utf-8"
    );
    let disposition = r.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_owned();
    let day = &from[..10];
    assert_eq!(
        disposition,
        format!("attachment; filename=\"vigil-pn1-{day}-to-{day}.csv\""),
        "the file is named by the patient's id and the dates, never their name"
    );
    let body = r.text().await.unwrap();
    assert!(
        body.starts_with("time,metric,value,unit,device_id\r\n"),
        "{body}"
    );
    let rows = python_csv(&body).await;
    let json_rows = g
        .client
        .observations("pn1", &format!("from={from}&to={to}"))
        .await;
    assert_eq!(rows.len(), 3, "{rows:?}");
    for (row, o) in rows.iter().zip(&json_rows) {
        assert_eq!(row["time"], o["time"]);
        assert_eq!(row["metric"], o["metric"]);
        assert_eq!(row["unit"], o["unit"]);
        assert_eq!(row["device_id"], "oxn1");
        let v: f64 = row["value"].as_str().unwrap().parse().unwrap();
        assert_eq!(v, o["value"].as_f64().unwrap());
    }
    assert_eq!(rows[0]["time"], rfc3339(t0).as_str());
    assert_eq!(rows[1]["unit"], "/min");
    assert_eq!(rows[2]["value"], "95.5");

    // A metric, and a limit (which says when it cut the file short).
    let r = get("?metric=spo2&limit=1".into()).await;
    assert_eq!(r.headers()["x-vigil-truncated"], "true");
    assert!(
        r.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("vigil-pn1-spo2-start-to-")
    );
    let rows = python_csv(&r.text().await.unwrap()).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["value"], "97");

    // Bad input: 400 with the reason, as JSON.
    for (q, words) in [
        ("?from=monday", "from \"monday\" is not an RFC 3339 time"),
        ("?to=2026-13-01", "is not an RFC 3339 time"),
        (&format!("?from={to}&to={from}") as &str, "from is after to"),
        ("?metric=mood", "unknown metric"),
        ("?limit=0", "limit must be 1 to"),
    ] {
        let r = get(q.to_owned()).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{q}");
        let v: Value = r.json().await.unwrap();
        assert!(v["error"].as_str().unwrap().contains(words), "{q}: {v}");
    }
    // Audited like the JSON read; another team's clinician is refused.
    let lines = audit(&g, "patient_id=pn1").await;
    assert!(
        lines.iter().any(|l| l["action"] == "observations.read"
            && l["target"] == "patient/pn1/observations.csv?metric=spo2"),
        "{lines:?}"
    );
    let mut sam = Browser::new(&g);
    sam.sign_in("sam", PASSWORD).await;
    let (s, _) = sam
        .call("GET", "/api/v1/patients/pn1/observations.csv", None)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    g.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_summary_gives_each_vital_the_alerts_and_the_notes_of_the_period() {
    let g = Gateway::start().await;
    let (north, _) = clinic(&g).await;
    let (s, v) = g
        .client
        .care_plan(
            "pn1",
            json!([{"id": "spo2-low", "kind": "threshold", "metric": "spo2", "op": "<",
                    "value": 92, "for_s": 0, "severity": "high"}]),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let now_s = now_s() - 120;
    let readings: Vec<Value> = [99.0, 95.0, 97.0, 90.0]
        .iter()
        .enumerate()
        .map(|(i, v)| json!({"metric": "spo2", "value": v, "time": now_s - 600 + i as i64 * 60}))
        .collect();
    publish_readings(g.mqtt, "oxn1", &north, &Value::Array(readings)).await;
    let alert = eventually(WAIT, "the alert", || async {
        let (_, v) = g.client.get("/api/v1/alerts?patient_id=pn1").await;
        v["alerts"][0]["id"].as_str().map(str::to_owned)
    })
    .await;
    let nina = Api::new(g.http);
    let nina_token = g.client.clinician("nina2", "north").await;
    let (s, v) = nina
        .call(
            "POST",
            &format!("/api/v1/alerts/{alert}/ack"),
            Some(json!({"note": "rang her"})),
            Some(&nina_token),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = nina
        .call(
            "POST",
            "/api/v1/patients/pn1/notes",
            Some(json!({"text": "Feeling better, says the oximeter slipped."})),
            Some(&nina_token),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, sm) = nina
        .call(
            "GET",
            "/api/v1/patients/pn1/summary",
            None,
            Some(&nina_token),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{sm}");
    assert_eq!(sm["patient"]["id"], "pn1");
    let spo2 = sm["vitals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["metric"] == "spo2")
        .unwrap_or_else(|| panic!("{sm}"));
    assert_eq!(spo2["count"], 4);
    assert_eq!(spo2["min"], 90.0);
    assert_eq!(spo2["max"], 99.0);
    assert_eq!(spo2["median"], 96.0, "(95 + 97) / 2");
    assert_eq!(spo2["median_exact"], true);
    assert_eq!(spo2["latest"]["value"], 90.0);
    assert_eq!(spo2["unit"], "%");
    assert_eq!(spo2["thresholds"][0]["rule_id"], "spo2-low");
    assert_eq!(spo2["thresholds"][0]["op"], "<");
    let alerts = sm["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 1, "{sm}");
    assert_eq!(alerts[0]["severity"], "high");
    assert_eq!(alerts[0]["acknowledged_by"], "nina2");
    assert_eq!(alerts[0]["ack_note"], "rang her");
    let notes = sm["notes"].as_array().unwrap();
    assert_eq!(notes.len(), 1, "{sm}");
    assert_eq!(
        notes[0]["text"],
        "Feeling better, says the oximeter slipped."
    );
    assert_eq!(sm["notes_complete"], true);

    // A period before any of it is empty, and bad periods are refused.
    let (s, v) = g
        .client
        .get("/api/v1/patients/pn1/summary?from=2020-01-01T00:00:00Z&to=2020-01-02T00:00:00Z")
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["vitals"], json!([]));
    assert_eq!(v["alerts"], json!([]));
    assert_eq!(v["notes"], json!([]));
    let (s, v) = g
        .client
        .get("/api/v1/patients/pn1/summary?from=2020-01-01T00:00:00Z&to=2022-01-02T00:00:00Z")
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["error"].as_str().unwrap().contains("366 days"), "{v}");
    let lines = audit(&g, "patient_id=pn1").await;
    assert!(
        lines
            .iter()
            .any(|l| l["action"] == "summary.read"
                && l["actor"].as_str().unwrap().starts_with("nina2")),
        "{lines:?}"
    );
    g.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_panel_alert_list_and_live_feed_name_the_patients_they_show_in_the_audit_trail() {
    let g = Gateway::start().await;
    let (north, _) = clinic(&g).await;
    let (s, v) = g
        .client
        .care_plan(
            "pn1",
            json!([{"id": "spo2-low", "kind": "threshold", "metric": "spo2", "op": "<",
                    "value": 90, "for_s": 0, "severity": "high"}]),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    publish_readings(
        g.mqtt,
        "oxn1",
        &north,
        &json!({"metric": "spo2", "value": 84}),
    )
    .await;
    eventually(WAIT, "the alert", || async {
        let (_, v) = g.client.get("/api/v1/alerts?patient_id=pn1").await;
        v["alerts"][0]["id"].as_str().map(str::to_owned)
    })
    .await;
    let mut nina = Browser::new(&g);
    nina.sign_in("nina", PASSWORD).await;
    let by_nina = |lines: &[Value], action: &str| {
        lines
            .iter()
            .filter(|l| l["actor"] == "nina" && l["action"] == action)
            .count()
    };
    // The panel: one line for the read, one naming each patient shown.
    for _ in 0..3 {
        let (s, v) = nina.call("GET", "/api/v1/panel", None).await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    let pn1 = audit(&g, "patient_id=pn1").await;
    assert_eq!(
        by_nina(&pn1, "panel.read"),
        1,
        "three polls within the window are one line naming the patient: {pn1:?}"
    );
    let line = pn1.iter().find(|l| l["action"] == "panel.read").unwrap();
    assert_eq!(line["target"], "panel");
    assert_eq!(
        by_nina(&audit(&g, "patient_id=ps1").await, "panel.read"),
        0,
        "another team's patient was not shown"
    );
    let all = audit(&g, "user=nina").await;
    assert_eq!(
        all.iter()
            .filter(|l| l["action"] == "panel.read" && l.get("patient_id").is_none())
            .count(),
        3,
        "every poll is still a line of its own: {all:?}"
    );

    // The alert list names the patients of the alerts it lists.
    let (s, v) = nina.call("GET", "/api/v1/alerts", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let pn1 = audit(&g, "patient_id=pn1").await;
    assert_eq!(by_nina(&pn1, "alerts.read"), 1, "{pn1:?}");

    // The live feed names the patients it will show as it opens.
    let (_, token) = nina.token("read").await;
    let url = format!("ws://{}/api/v1/live?token={token}", g.http);
    let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let pn1 = audit(&g, "patient_id=pn1").await;
    let live: Vec<&Value> = pn1.iter().filter(|l| l["action"] == "live.open").collect();
    assert_eq!(live.len(), 1, "{pn1:?}");
    assert!(
        live[0]["actor"]
            .as_str()
            .unwrap()
            .starts_with("nina (token:"),
        "{live:?}"
    );
    assert!(
        audit(&g, "patient_id=ps1")
            .await
            .iter()
            .all(|l| l["action"] != "live.open"),
        "the south patient is not on nina's feed"
    );
    drop(ws);
    // An admin's panel names every patient.
    let mut ada = Browser::new(&g);
    ada.sign_in("ada", PASSWORD).await;
    let (s, _) = ada.call("GET", "/api/v1/panel", None).await;
    assert_eq!(s, StatusCode::OK);
    for p in ["pn1", "ps1"] {
        let lines = audit(&g, &format!("patient_id={p}")).await;
        assert!(
            lines
                .iter()
                .any(|l| l["actor"] == "ada" && l["action"] == "panel.read"),
            "{p}: {lines:?}"
        );
    }
    g.stop().await;
}
