//! Alerts end to end: readings published over MQTT by `mosquitto_pub` → the care plan's rule
//! fires → exactly one alert in `GET /alerts` and `alert.opened` in the record; acknowledge and
//! resolve land in the record with the user and the note; webhooks and FHIR resources reach a
//! real HTTP receiver (tests/clients/receiver.py) exactly once through failures and a SIGKILL.

use std::collections::HashMap;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::cli::spawn_vigil_with;
use crate::fhir::Receiver;
use crate::support::{Api, Gateway, V, eventually, mosquitto_pub, publish_readings};

const WAIT: Duration = Duration::from_secs(20);
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Readings (`[metric, value, seconds ago]`) as one vigil-json array, published at QoS 1.
pub(crate) async fn publish(
    mqtt: std::net::SocketAddr,
    device: &str,
    secret: &str,
    readings: &[(&str, f64, i64)],
) {
    let now = vigil::domain::now_ms();
    let body: Vec<Value> = readings
        .iter()
        .map(|(m, v, ago)| {
            json!({"metric": m, "value": v, "time": vigil::domain::format_rfc3339(now - ago * 1000)})
        })
        .collect();
    publish_readings(mqtt, device, secret, &Value::from(body)).await;
}

async fn alerts(api: &Api, query: &str) -> Vec<Value> {
    let (s, v) = api.get(&format!("/api/v1/alerts?{query}")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["alerts"].as_array().unwrap().clone()
}

pub(crate) async fn timeline(api: &Api, patient: &str) -> Vec<Value> {
    let (s, v) = api.get(&format!("/api/v1/patients/{patient}/record")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["timeline"].as_array().unwrap().clone()
}

/// Waits until the patient has exactly `n` alerts (of any status) and returns them; then
/// checks that no more arrive for a moment (one condition, one alert).
pub(crate) async fn exactly(api: &Api, patient: &str, n: usize) -> Vec<Value> {
    let q = &format!("patient_id={patient}");
    eventually(
        WAIT,
        &format!("{n} alert(s) for {patient}"),
        || async move {
            let a = alerts(api, q).await;
            (a.len() >= n).then_some(a)
        },
    )
    .await;
    // Later readings of the same condition must not add any.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let a = alerts(api, q).await;
    assert_eq!(a.len(), n, "{a:#?}");
    a
}

pub(crate) fn kinds(timeline: &[Value]) -> Vec<&str> {
    timeline.iter().filter_map(|e| e["kind"].as_str()).collect()
}

pub(crate) async fn patient_with_app(api: &Api, patient: &str) -> String {
    api.patient(patient).await;
    api.device(&format!("{patient}-app"), patient, "patient-app")
        .await
}

fn fast_alerts(c: &mut vigil::config::Config) {
    c.alerts.tick_ms = 100;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threshold_fires_once_and_ack_and_resolve_land_in_the_record() {
    let gw = Gateway::start_with(fast_alerts).await;
    let api = &gw.client;
    let secret = patient_with_app(api, "p-thr").await;
    let (s, v) = api
        .care_plan(
            "p-thr",
            json!([{"id": "spo2-low", "kind": "threshold", "metric": "spo2", "op": "<", "value": 90,
                "for_s": 60, "hysteresis": 2, "severity": "high"}]),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // Low for less than a minute: nothing yet.
    publish(
        gw.mqtt,
        "p-thr-app",
        &secret,
        &[("spo2", 88.0, 100), ("spo2", 87.0, 70)],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(alerts(api, "patient_id=p-thr").await.is_empty());
    // The run reaches 60 s, and goes on: one alert.
    publish(gw.mqtt, "p-thr-app", &secret, &[("spo2", 86.0, 40)]).await;
    publish(
        gw.mqtt,
        "p-thr-app",
        &secret,
        &[("spo2", 85.0, 20), ("spo2", 84.0, 10)],
    )
    .await;
    let a = exactly(api, "p-thr", 1).await;
    let alert = &a[0];
    assert_eq!(alert["rule_id"], "spo2-low");
    assert_eq!(alert["severity"], "high");
    assert_eq!(alert["status"], "open");
    assert_eq!(alert["message"], "SpO2 86% — below 90 for 1 min");
    assert_eq!(alert["trigger"]["value"], 86.0);
    let id = alert["id"].as_str().unwrap().to_owned();
    let open = alerts(api, "status=open&patient_id=p-thr").await;
    assert_eq!(open.len(), 1);

    let t = timeline(api, "p-thr").await;
    let opened: Vec<&Value> = t.iter().filter(|e| e["kind"] == "alert.opened").collect();
    assert_eq!(opened.len(), 1, "{t:#?}");
    assert_eq!(opened[0]["alert_id"], id.as_str());
    assert!(kinds(&t).contains(&"care_plan.updated"));

    let (s, v) = api
        .post(
            &format!("/api/v1/alerts/{id}/ack"),
            json!({"note": "called the patient"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "acknowledged");
    assert_eq!(v["acknowledged_by"], "bootstrap");
    let (s, v) = api
        .post(
            &format!("/api/v1/alerts/{id}/resolve"),
            json!({"note": "probe was loose"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "resolved");
    // A resolved alert can be neither acknowledged nor resolved again.
    let (s, v) = api
        .post(&format!("/api/v1/alerts/{id}/ack"), json!({}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");

    let t = timeline(api, "p-thr").await;
    let ack = t
        .iter()
        .find(|e| e["kind"] == "alert.acknowledged")
        .expect("ack in record");
    assert_eq!(ack["by"], "bootstrap");
    assert_eq!(ack["note"], "called the patient");
    assert_eq!(ack["alert_id"], id.as_str());
    let res = t
        .iter()
        .find(|e| e["kind"] == "alert.resolved")
        .expect("resolve in record");
    assert_eq!(res["by"], "bootstrap");
    assert_eq!(res["note"], "probe was loose");

    // Resolved while still low: the rule stays silent until the value recovers.
    publish(gw.mqtt, "p-thr-app", &secret, &[("spo2", 84.0, 5)]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(alerts(api, "patient_id=p-thr").await.len(), 1);
    // The acknowledgement and resolution were audited with who did it.
    let (_, audit) = api.get("/api/v1/audit?patient_id=p-thr").await;
    let actions: Vec<&str> = audit["audit"]
        .as_array()
        .or_else(|| audit["entries"].as_array())
        .map(|a| a.iter().filter_map(|e| e["action"].as_str()).collect())
        .unwrap_or_default();
    assert!(actions.contains(&"alert.acknowledge"), "{audit}");
    assert!(actions.contains(&"alert.resolve"), "{audit}");
    gw.stop().await;
}

/// A clinician's action on an alert, a care plan's change and a note are made with their
/// audit line or not at all: with the audit trail refusing appends (as a full disk would), each
/// answers an error and the alert, the plan and the timeline stay as they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_changes_are_not_made_unaudited() {
    let gw = Gateway::start_with(fast_alerts).await;
    let api = &gw.client;
    let secret = patient_with_app(api, "p-aud").await;
    let plan = json!([{"id": "spo2-low", "kind": "threshold", "metric": "spo2", "op": "<",
        "value": 90, "severity": "high"}]);
    let (s, v) = api.care_plan("p-aud", plan).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    publish(gw.mqtt, "p-aud-app", &secret, &[("spo2", 85.0, 1)]).await;
    let id = exactly(api, "p-aud", 1).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = timeline(api, "p-aud").await;
    let db = gw.registry_db();
    db.refuse_inserts("audit").await;
    for action in ["ack", "resolve"] {
        let (s, v) = api
            .post(&format!("/api/v1/alerts/{id}/{action}"), json!({}))
            .await;
        assert!(s.is_server_error(), "{action}: {s} {v}");
    }
    let (s, v) = api.care_plan("p-aud", json!([])).await;
    assert!(s.is_server_error(), "{s} {v}");
    let (s, v) = api
        .post("/api/v1/patients/p-aud/notes", json!({"text": "called"}))
        .await;
    assert!(s.is_server_error(), "{s} {v}");
    db.accept_inserts("audit").await;

    let (s, alert) = api.get(&format!("/api/v1/alerts/{id}")).await;
    assert_eq!(s, StatusCode::OK, "{alert}");
    assert_eq!(
        alert["status"], "open",
        "not acknowledged or resolved unaudited"
    );
    let (_, plan) = api.get("/api/v1/patients/p-aud/care-plan").await;
    assert_eq!(
        plan["rules"][0]["id"], "spo2-low",
        "the plan is unchanged: {plan}"
    );
    assert_eq!(
        kinds(&timeline(api, "p-aud").await),
        kinds(&before),
        "nothing landed on the timeline"
    );
    let (s, v) = api
        .post(&format!("/api/v1/alerts/{id}/ack"), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_rule_catches_weight_gain_within_the_window() {
    let gw = Gateway::start_with(fast_alerts).await;
    let api = &gw.client;
    api.patient("p-hf").await;
    let scale = api.device("scale-hf", "p-hf", "scale").await;
    let (s, v) = api
        .care_plan(
            "p-hf",
            json!([{"id": "hf-gain", "kind": "rate", "metric": "body_weight", "rise": 2.0,
                "window_h": 72, "severity": "medium"}]),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let day = 86_400;
    // Six days ago is outside every window; the gain within 72 h is 2.1 kg.
    publish(
        gw.mqtt,
        "scale-hf",
        &scale,
        &[("body_weight", 79.0, 6 * day)],
    )
    .await;
    publish(
        gw.mqtt,
        "scale-hf",
        &scale,
        &[("body_weight", 80.0, 3 * day - 600)],
    )
    .await;
    publish(
        gw.mqtt,
        "scale-hf",
        &scale,
        &[("body_weight", 81.0, 2 * day)],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(alerts(api, "patient_id=p-hf").await.is_empty());
    publish(gw.mqtt, "scale-hf", &scale, &[("body_weight", 82.1, 60)]).await;
    let a = exactly(api, "p-hf", 1).await;
    assert_eq!(a[0]["rule_id"], "hf-gain");
    assert_eq!(a[0]["severity"], "medium");
    assert_eq!(
        a[0]["message"],
        "Weight up 2.1 kg within 72 h (80 → 82.1 kg)"
    );
    assert!(kinds(&timeline(api, "p-hf").await).contains(&"alert.opened"));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn news2_opens_medium_and_raises_to_high() {
    let gw = Gateway::start_with(fast_alerts).await;
    let api = &gw.client;
    let secret = patient_with_app(api, "p-news").await;
    let (s, v) = api
        .care_plan("p-news", json!([{"id": "news2", "kind": "news2"}]))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // RR 22 (2) + SpO2 95 (1) + HR 95 (1) + temp 38.5 (1) = 5: medium.
    publish(
        gw.mqtt,
        "p-news-app",
        &secret,
        &[
            ("respiratory_rate", 22.0, 30),
            ("spo2", 95.0, 30),
            ("heart_rate", 95.0, 30),
            ("body_temperature", 38.5, 30),
        ],
    )
    .await;
    let a = exactly(api, "p-news", 1).await;
    assert_eq!(a[0]["severity"], "medium");
    assert!(
        a[0]["message"].as_str().unwrap().starts_with("NEWS2 5"),
        "{a:?}"
    );
    // SpO2 91 (3): 7, high — the same alert, raised (the new confusion after it adds 3 more
    // but cannot raise a high alert further).
    publish(
        gw.mqtt,
        "p-news-app",
        &secret,
        &[("spo2", 91.0, 10), ("consciousness", 1.0, 10)],
    )
    .await;
    let a = eventually(WAIT, "the alert raised to high", || async move {
        let a = alerts(api, "patient_id=p-news").await;
        (a.len() == 1 && a[0]["severity"] == "high").then_some(a)
    })
    .await;
    assert!(
        a[0]["message"].as_str().unwrap().starts_with("NEWS2 7"),
        "{a:?}"
    );
    let t = timeline(api, "p-news").await;
    assert_eq!(
        kinds(&t).iter().filter(|k| **k == "alert.opened").count(),
        1
    );
    assert!(kinds(&t).contains(&"alert.raised"), "{t:#?}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_fires_when_a_device_goes_silent_and_resolves_when_it_is_back() {
    let gw = Gateway::start_with(|c| {
        c.alerts.tick_ms = 100;
        c.alerts.auto_resolve_s = 1;
    })
    .await;
    let api = &gw.client;
    api.patient("p-quiet").await;
    let watch = api.device("watch-quiet", "p-quiet", "smartwatch").await;
    let (s, v) = api
        .care_plan(
            "p-quiet",
            json!([{"id": "hr-silent", "kind": "missing", "metric": "heart_rate", "after_s": 5,
                "severity": "low"}]),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    publish(gw.mqtt, "watch-quiet", &watch, &[("heart_rate", 70.0, 0)]).await;
    let a = eventually(WAIT, "the silence alert", || async move {
        let a = alerts(api, "patient_id=p-quiet").await;
        (!a.is_empty()).then_some(a)
    })
    .await;
    assert_eq!(a.len(), 1);
    assert_eq!(a[0]["rule_id"], "hr-silent");
    assert!(
        a[0]["message"]
            .as_str()
            .unwrap()
            .starts_with("No heart rate reading for")
    );
    // Back: the condition clears and the alert resolves by itself after auto_resolve_s.
    publish(gw.mqtt, "watch-quiet", &watch, &[("heart_rate", 72.0, 0)]).await;
    let a = eventually(WAIT, "the silence alert resolved", || async move {
        let a = alerts(api, "patient_id=p-quiet").await;
        (a.len() == 1 && a[0]["status"] == "resolved").then_some(a)
    })
    .await;
    assert_eq!(a[0]["resolved_by"], "vigil");
    let t = timeline(api, "p-quiet").await;
    let res = t.iter().find(|e| e["kind"] == "alert.resolved").unwrap();
    assert!(res["note"].as_str().unwrap().contains("clear"), "{res}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_plan_applies_and_bad_plans_are_refused_with_a_reason() {
    let gw = Gateway::start_with(fast_alerts).await;
    let api = &gw.client;
    api.patient("p-def").await;
    let meter = api.device("gm-def", "p-def", "glucose-meter").await;
    let (s, v) = api.get("/api/v1/patients/p-def/care-plan").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["default"], true);
    let ids: Vec<&str> = v["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"glucose-very-low") && ids.contains(&"news2"),
        "{ids:?}"
    );
    // With the range each vital's threshold rules draw (`alerts::limits`).
    assert_eq!(v["ranges"]["glucose"]["below"]["value"], json!(70.0), "{v}");
    assert_eq!(
        v["ranges"]["bp_systolic"]["above"]["inclusive"], true,
        "{v}"
    );
    // 50 mg/dL: level 1 and level 2 hypoglycaemia at once, one episode: one alert, at level 2.
    publish(gw.mqtt, "gm-def", &meter, &[("glucose", 50.0, 10)]).await;
    let a = exactly(api, "p-def", 1).await;
    assert_eq!(a[0]["rule_id"], "glucose-very-low");
    assert_eq!(a[0]["severity"], "high");
    assert_eq!(a[0]["message"], "Glucose 50 mg/dL — below 54");

    // The programme plans shipped: listed, and one given to the patient as it is.
    let (s, v) = api.get("/api/v1/care-plans").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let ids: Vec<&str> = v["plans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["heart-failure", "hypertension", "diabetes", "copd"]);
    let diabetes = &v["plans"][2];
    assert!(diabetes["sources"].as_str().unwrap().contains("AR2"));
    let rules = diabetes["plan"]["rules"].clone();
    let (s, v) = api
        .call(
            "PUT",
            "/api/v1/patients/p-def/care-plan",
            Some(json!({"rules": rules})),
            Some(crate::support::TOKEN),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, v) = api.get("/api/v1/patients/p-def/care-plan").await;
    assert_eq!((v["default"].as_bool(), &v["rules"]), (Some(false), &rules));

    // Each refusal says why, and where: the rule's index and the field to blame (a form shows
    // it beside the field).
    let first = json!({"id": "ok", "kind": "news2"});
    for (rule, reason, field) in [
        (
            json!({"id": "x", "kind": "threshold", "metric": "spo2", "op": "<", "value": 900, "severity": "high"}),
            "outside",
            json!("value"),
        ),
        (
            json!({"id": "x", "kind": "threshold", "metric": "sp02", "op": "<", "value": 90, "severity": "high"}),
            "unknown metric",
            json!("metric"),
        ),
        (
            json!({"id": "x", "kind": "rate", "metric": "body_weight", "window_h": 72, "severity": "low"}),
            "rise or fall",
            json!("rise"),
        ),
        (
            json!({"id": "x", "kind": "missing", "metric": "heart_rate", "after_s": 1, "severity": "low"}),
            "after_s",
            json!("after_s"),
        ),
        (
            json!({"id": "x", "kind": "panic"}),
            "invalid care plan",
            Value::Null,
        ),
    ] {
        let (s, v) = api.care_plan("p-def", json!([first, rule])).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
        assert!(
            v["error"].as_str().unwrap().contains(reason),
            "{v} should say {reason}"
        );
        assert_eq!(v["field"], field, "{v}");
        let at = if field.is_null() {
            Value::Null
        } else {
            json!(1)
        };
        assert_eq!(v["rule"], at, "{v}");
    }
    let (s, _) = api.care_plan("nobody", json!([])).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, v) = api.get("/api/v1/alerts?status=closed").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, _) = api.post("/api/v1/alerts/alr_nope/ack", json!({})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // Without credentials, none of the new routes answers.
    for path in [
        "/api/v1/alerts",
        "/api/v1/patients/p-def/record",
        "/api/v1/deliveries",
    ] {
        let (s, _) = api.call("GET", path, None, None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{path}");
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notes_demographics_and_devices_are_in_the_record() {
    let gw = Gateway::start_with(fast_alerts).await;
    let api = &gw.client;
    let (s, v) = api
        .post(
            "/api/v1/teams",
            json!({"id": "cardio-north", "name": "Cardiology North"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = api
        .post(
            "/api/v1/patients",
            json!({"id": "p-rec", "name": "Ada Lovelace", "birth_date": "1950-04-23",
                   "gender": "female", "phone": "+44 20 7946 0000", "care_team": "cardio-north",
                   "contact_preference": "phone", "contact_notes": "mornings only"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let secret = api.device("ox-rec", "p-rec", "pulse-oximeter").await;
    let (s, v) = api
        .patch(
            "/api/v1/patients/p-rec",
            json!({"email": "ada@example.org", "phone": ""}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["email"], "ada@example.org");
    assert!(v.get("phone").is_none(), "{v}");
    let (s, v) = api
        .patch("/api/v1/patients/p-rec", json!({"gender": "robot"}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, v) = api
        .post(
            "/api/v1/patients/p-rec/notes",
            json!({"text": "Discussed fluid intake."}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, _) = api
        .post("/api/v1/patients/p-rec/notes", json!({"text": "  "}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // The device connects with a Last Will, reports a low battery, and dies.
    let port = gw.mqtt.port().to_string();
    let mut sub = tokio::process::Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-V",
            "mqttv311",
            "-i",
            "ox-rec-will",
            "-u",
            "ox-rec",
            "-P",
            &secret,
            "-t",
            "vigil/v1/devices/ox-rec/errors",
            "--will-topic",
            "vigil/v1/devices/ox-rec/status",
            "--will-payload",
            r#"{"online":false}"#,
            "-k",
            "5",
        ])
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    eventually(WAIT, "device online", || async move {
        let (_, d) = api.get("/api/v1/devices/ox-rec").await;
        (d["online"] == true).then_some(())
    })
    .await;
    let out = mosquitto_pub(
        gw.mqtt,
        V::V311,
        "ox-rec",
        &secret,
        "vigil/v1/devices/ox-rec/status",
        br#"{"battery": 15}"#,
        &[],
    )
    .await;
    assert!(out.ok, "{}", out.stderr);
    eventually(WAIT, "battery recorded", || async move {
        let (_, d) = api.get("/api/v1/devices/ox-rec").await;
        (d["battery"] == 15).then_some(())
    })
    .await;
    sub.start_kill().unwrap();
    let (s, rec) = eventually(WAIT, "device events in the record", || async move {
        let (s, v) = api.get("/api/v1/patients/p-rec/record").await;
        let k: Vec<String> = v["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["kind"].as_str().unwrap().to_owned())
            .collect();
        let want = ["device.online", "device.battery_low", "device.offline"];
        want.iter()
            .all(|w| k.iter().any(|x| x == w))
            .then_some((s, v))
    })
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(rec["patient"]["name"], "Ada Lovelace");
    assert_eq!(rec["patient"]["care_team"], "cardio-north");
    assert_eq!(rec["patient"]["contact_preference"], "phone");
    assert_eq!(rec["devices"][0]["id"], "ox-rec");
    assert_eq!(rec["care_plan"]["default"], true);
    let note = rec["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "note")
        .unwrap();
    assert_eq!(note["text"], "Discussed fluid intake.");
    assert_eq!(note["by"], "bootstrap");
    gw.stop().await;
}

/// Webhook events received, by `webhook-id`: (event type, number of accepted deliveries).
fn received(state: &Value) -> HashMap<String, (String, usize)> {
    let mut out: HashMap<String, (String, usize)> = HashMap::new();
    for d in state["webhooks"].as_array().unwrap() {
        let e = out
            .entry(d["id"].as_str().unwrap().to_owned())
            .or_insert_with(|| (d["type"].as_str().unwrap().to_owned(), 0));
        e.1 += 1;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_reach_a_failing_receiver_exactly_once_and_escalate() {
    let rx = &Receiver::start(&["--webhook-secret", SECRET]).await;
    let url = rx.url("/hooks/vigil");
    let gw = Gateway::start_with(move |c| {
        c.alerts.tick_ms = 100;
        c.alerts.escalate_after_s = 2;
        c.alerts.max_escalations = 1;
        c.webhook = Some(vigil::config::WebhookConfig {
            url,
            secret: SECRET.into(),
            retry: vigil::config::RetryConfig {
                retry_initial_ms: 100,
                retry_max_s: 1,
                ..Default::default()
            },
        });
    })
    .await;
    let api = &gw.client;
    let secret = patient_with_app(api, "p-hook").await;
    // The receiver fails its next three requests, then is down altogether for a while.
    rx.control(json!({"fail_next": 3})).await;
    publish(gw.mqtt, "p-hook-app", &secret, &[("bp_systolic", 195.0, 5)]).await;
    let a = exactly(api, "p-hook", 1).await;
    let id = a[0]["id"].as_str().unwrap().to_owned();
    eventually(WAIT, "three refused attempts", || async move {
        (rx.state().await["webhook_attempts"].as_u64().unwrap_or(0) >= 3).then_some(())
    })
    .await;
    rx.control(json!({"down": true})).await;
    // Escalation after 2 s unacknowledged, while the receiver is down.
    eventually(WAIT, "the escalation", || async move {
        let t = timeline(api, "p-hook").await;
        kinds(&t).contains(&"alert.escalated").then_some(())
    })
    .await;
    let (s, v) = api
        .post(
            &format!("/api/v1/alerts/{id}/ack"),
            json!({"note": "on it"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = api
        .get("/api/v1/deliveries?sink=webhook&status=pending")
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(!v["deliveries"].as_array().unwrap().is_empty(), "{v}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    rx.control(json!({"down": false})).await;

    let got = eventually(
        WAIT,
        "opened, escalated and acknowledged delivered",
        || async move {
            let got = received(&rx.state().await);
            (got.len() >= 3).then_some(got)
        },
    )
    .await;
    let mut types: Vec<&str> = got.values().map(|(t, _)| t.as_str()).collect();
    types.sort();
    assert_eq!(
        types,
        ["alert.acknowledged", "alert.escalated", "alert.opened"]
    );
    for (event, (t, n)) in &got {
        assert_eq!(*n, 1, "{t} ({event}) was accepted {n} times");
    }
    // Delivered in order, and the data is the alert.
    let state = rx.state().await;
    let order: Vec<&str> = state["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        order,
        ["alert.opened", "alert.escalated", "alert.acknowledged"]
    );
    assert_eq!(state["webhooks"][0]["data"]["id"], id.as_str());
    let (_, v) = api.get("/api/v1/deliveries?sink=webhook").await;
    assert!(
        v["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["status"] == "delivered"),
        "{v}"
    );
    let (_, metrics) = api.call("GET", "/metrics", None, None).await;
    let metrics = metrics.as_str().unwrap().to_owned();
    assert!(
        metrics.contains(r#"vigil_outbox_attempts_total{sink="webhook",outcome="delivered"} 3"#),
        "{metrics}"
    );
    crate::faults::report(
        "CRM webhook receiver failing, then down, and back",
        &[
            ("alerts", exactly(api, "p-hook", 1).await.len()),
            ("events", 3),
            (
                "receiver_attempts",
                state["webhook_attempts"].as_u64().unwrap_or(0) as usize,
            ),
            ("events_received", got.len()),
            (
                "events_received_twice",
                got.values().filter(|(_, n)| *n > 1).count(),
            ),
        ],
    );
    gw.stop().await;
}

/// The record refuses alert writes (a trigger that aborts every insert into `alerts`) for
/// more attempts than a few quick retries would cover; once it takes them again the alert
/// lands, with its webhook, exactly once, and the wait showed on `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_the_record_refuses_for_a_while_lands_once_it_can() {
    let rx = &Receiver::start(&["--webhook-secret", SECRET]).await;
    let url = rx.url("/hooks/vigil");
    let gw = Gateway::start_with(move |c| {
        fast_alerts(c);
        c.webhook = Some(vigil::config::WebhookConfig {
            url,
            secret: SECRET.into(),
            retry: vigil::config::RetryConfig {
                retry_initial_ms: 100,
                retry_max_s: 1,
                ..Default::default()
            },
        });
    })
    .await;
    let api = &gw.client;
    let secret = patient_with_app(api, "p-refused").await;
    let db = gw.registry_db();
    db.refuse_inserts("alerts").await;
    publish(
        gw.mqtt,
        "p-refused-app",
        &secret,
        &[("bp_systolic", 195.0, 5)],
    )
    .await;
    // Well past the five attempts the engine used to make before giving up.
    eventually(WAIT, "ten failed writes of the alert", || async {
        let n = crate::support::metric(gw.http, "vigil_alert_effect_write_failures_total").await;
        (n.unwrap_or(0.0) >= 10.0).then_some(())
    })
    .await;
    assert_eq!(
        crate::support::metric(gw.http, "vigil_alert_effects_waiting").await,
        Some(1.0)
    );
    assert!(alerts(api, "patient_id=p-refused").await.is_empty());
    db.accept_inserts("alerts").await;

    let a = exactly(api, "p-refused", 1).await;
    let id = a[0]["id"].as_str().unwrap().to_owned();
    let got = eventually(WAIT, "the alert's webhook", || async move {
        let got = received(&rx.state().await);
        (!got.is_empty()).then_some(got)
    })
    .await;
    let events: Vec<_> = got.values().collect();
    assert_eq!(events, [&("alert.opened".to_owned(), 1)], "{got:?}");
    let (_, v) = api.get("/api/v1/deliveries?sink=webhook").await;
    let rows = v["deliveries"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{v}");
    let n = db
        .rows("SELECT count(*) FROM outbox WHERE sink = 'webhook'")
        .await;
    assert_eq!(n, ["1"]);
    assert_eq!(rx.state().await["webhooks"][0]["data"]["id"], id.as_str());
    assert_eq!(
        crate::support::metric(gw.http, "vigil_alert_effects_waiting").await,
        Some(0.0)
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_refuses_for_good_shows_as_failed_and_can_be_retried() {
    let rx =
        &Receiver::start(&["--webhook-secret", "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"]).await;
    let url = rx.url("/hooks/vigil");
    let gw = Gateway::start_with(move |c| {
        c.alerts.tick_ms = 100;
        // Vigil signs with another secret than the receiver checks: 401, for good.
        c.webhook = Some(vigil::config::WebhookConfig {
            url,
            secret: SECRET.into(),
            retry: vigil::config::RetryConfig {
                retry_initial_ms: 100,
                ..Default::default()
            },
        });
    })
    .await;
    let api = &gw.client;
    let secret = patient_with_app(api, "p-fail").await;
    publish(gw.mqtt, "p-fail-app", &secret, &[("glucose", 40.0, 5)]).await;
    let failed = eventually(WAIT, "failed deliveries", || async move {
        let (_, v) = api.get("/api/v1/deliveries?status=failed").await;
        let d = v["deliveries"].as_array().unwrap().clone();
        (d.len() == 1).then_some(d)
    })
    .await;
    assert!(
        failed[0]["last_error"].as_str().unwrap().contains("401"),
        "{failed:?}"
    );
    let id = failed[0]["id"].as_i64().unwrap();
    let (s, v) = api
        .post(&format!("/api/v1/deliveries/{id}/retry"), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, _) = api.post("/api/v1/deliveries/999999/retry", json!({})).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    eventually(WAIT, "the retried delivery failed again", || async move {
        let (_, v) = api.get("/api/v1/deliveries?status=failed").await;
        let d = v["deliveries"].as_array().unwrap().clone();
        d.iter()
            .any(|x| x["id"] == id && x["attempts"] == 2)
            .then_some(())
    })
    .await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fhir_resources_are_written_once_and_validate() {
    let rx = &Receiver::start(&["--fhir-token", "fhir-secret"]).await;
    let base = rx.url("/fhir");
    let gw = Gateway::start_with(move |c| {
        c.alerts.tick_ms = 100;
        c.fhir = Some(vigil::config::FhirConfig {
            base_url: base,
            token: Some("fhir-secret".into()),
            smart: None,
            retry: vigil::config::RetryConfig {
                retry_initial_ms: 100,
                retry_max_s: 1,
                ..Default::default()
            },
            create_patients: true,
            create_devices: true,
            ..Default::default()
        });
    })
    .await;
    let api = &gw.client;
    let secret = patient_with_app(api, "p-fhir").await;
    let (s, v) = api
        .care_plan(
            "p-fhir",
            json!([{"id": "spo2-low", "kind": "threshold", "metric": "spo2", "op": "<", "value": 88,
                "for_s": 60, "severity": "medium"}]),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // One failure in the middle of an event's three resources: the retry repeats the event,
    // and conditional create keeps one of each.
    rx.control(json!({"fail_next": 1})).await;
    publish(
        gw.mqtt,
        "p-fhir-app",
        &secret,
        &[("spo2", 84.0, 120), ("spo2", 83.0, 30)],
    )
    .await;
    let a = exactly(api, "p-fhir", 1).await;
    let id = a[0]["id"].as_str().unwrap().to_owned();
    let (s, v) = api
        .post(
            &format!("/api/v1/alerts/{id}/resolve"),
            json!({"note": "recovered"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let state = eventually(
        WAIT,
        "the Flag inactive on the FHIR server",
        || async move {
            let st = rx.state().await;
            let flags = st["fhir"]["Flag"].as_array().cloned().unwrap_or_default();
            (flags.len() == 1 && flags[0]["status"] == "inactive").then_some(st)
        },
    )
    .await;
    assert_eq!(
        state["invalid"],
        json!([]),
        "every resource validates with fhir.resources"
    );
    assert_eq!(
        state["dangling"],
        json!([]),
        "every reference is to a resource there"
    );
    let patients = state["fhir"]["Patient"].as_array().unwrap();
    assert_eq!(patients.len(), 1, "{patients:#?}");
    let patient_ref = format!("Patient/{}", patients[0]["id"].as_str().unwrap());
    let devices = state["fhir"]["Device"].as_array().unwrap();
    assert_eq!(devices.len(), 1, "{devices:#?}");
    assert_eq!(devices[0]["identifier"][0]["value"], "p-fhir-app");
    let obs = state["fhir"]["Observation"].as_array().unwrap();
    assert_eq!(obs.len(), 1, "{obs:#?}");
    assert_eq!(obs[0]["subject"]["reference"], patient_ref.as_str());
    assert_eq!(
        obs[0]["device"]["reference"],
        format!("Device/{}", devices[0]["id"].as_str().unwrap())
    );
    assert_eq!(obs[0]["code"]["coding"][0]["code"], "2708-6");
    assert_eq!(obs[0]["valueQuantity"]["code"], "%");
    let comms = state["fhir"]["Communication"].as_array().unwrap();
    assert_eq!(comms.len(), 1, "{comms:#?}");
    assert_eq!(comms[0]["priority"], "asap");
    let flag = &state["fhir"]["Flag"][0];
    assert_eq!(flag["identifier"][0]["value"], id.as_str());
    assert_eq!(flag["subject"]["reference"], patient_ref.as_str());
    assert_eq!(comms[0]["subject"]["reference"], patient_ref.as_str());
    let about: Vec<&str> = comms[0]["about"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["reference"].as_str().unwrap())
        .collect();
    assert_eq!(
        about,
        [
            format!("Flag/{}", flag["id"].as_str().unwrap()),
            format!("Observation/{}", obs[0]["id"].as_str().unwrap())
        ]
    );
    assert!(flag["period"]["end"].is_string(), "{flag}");
    gw.stop().await;
}

/// A clinician resolves an alert whose condition still holds: the rule stays silent until the
/// condition clears, and a restart does not undo that (the rebuilt engine replays the
/// resolution) — the next alert is the one a new episode opens, after the condition cleared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clinicians_resolution_holds_through_a_restart() {
    let gw = Gateway::start_with(fast_alerts).await;
    let api = &gw.client.clone();
    let secret = patient_with_app(api, "p-hold").await;
    publish(
        gw.mqtt,
        "p-hold-app",
        &secret,
        &[("bp_systolic", 200.0, 60)],
    )
    .await;
    let a = exactly(api, "p-hold", 1).await;
    let id = a[0]["id"].as_str().unwrap();
    let (s, v) = api
        .post(
            &format!("/api/v1/alerts/{id}/resolve"),
            json!({"note": "known, treated at home"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (cfg, dir) = gw.stop_keeping_data().await;
    let gw = Gateway::start_again(cfg, dir).await;
    let api = &gw.client;
    // Still high (silenced), then normal (the episode ends), then high again (a new one).
    publish(
        gw.mqtt,
        "p-hold-app",
        &secret,
        &[("bp_systolic", 205.0, 40)],
    )
    .await;
    publish(
        gw.mqtt,
        "p-hold-app",
        &secret,
        &[("bp_systolic", 120.0, 30)],
    )
    .await;
    publish(
        gw.mqtt,
        "p-hold-app",
        &secret,
        &[("bp_systolic", 210.0, 20)],
    )
    .await;
    let b = exactly(api, "p-hold", 2).await;
    let newest = &b[0];
    assert_ne!(newest["id"], a[0]["id"]);
    assert_eq!(
        newest["trigger"]["value"], 210.0,
        "the new alert is the new episode's, not one reopened on restart: {newest}"
    );
    gw.stop().await;
}

/// The SIGKILL case: an alert is committed while the receiver is down, Vigil is killed before
/// it can deliver, and after the restart the receiver gets the event exactly once; the alert
/// is not duplicated by the restart either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_between_alert_and_delivery_loses_nothing() {
    let rx = &Receiver::start(&["--webhook-secret", SECRET]).await;
    rx.control(json!({"down": true})).await;
    let dir = tempfile::tempdir().unwrap();
    let url = rx.url("/hooks/vigil");
    let env = [
        ("VIGIL_WEBHOOK__URL", url.as_str()),
        ("VIGIL_WEBHOOK__SECRET", SECRET),
        ("VIGIL_WEBHOOK__RETRY_INITIAL_MS", "100"),
        ("VIGIL_WEBHOOK__RETRY_MAX_S", "1"),
        ("VIGIL_ALERTS__TICK_MS", "100"),
    ];
    let mut vigil = spawn_vigil_with(dir.path(), "127.0.0.1:0", &env).await;
    let api = &Api::new(vigil.http);
    let secret = patient_with_app(api, "p-kill").await;
    publish(
        vigil.mqtt,
        "p-kill-app",
        &secret,
        &[("heart_rate", 160.0, 20), ("heart_rate", 45.0, 10)],
    )
    .await;
    let before = eventually(WAIT, "the alert", || async move {
        let a = alerts(api, "patient_id=p-kill").await;
        (!a.is_empty()).then_some(a)
    })
    .await;
    eventually(WAIT, "a failed attempt", || async move {
        let (_, v) = api.get("/api/v1/deliveries?sink=webhook").await;
        v["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["attempts"].as_u64() >= Some(1))
            .then_some(())
    })
    .await;
    vigil.child.start_kill().unwrap();
    vigil.child.wait().await.unwrap();
    assert!(received(&rx.state().await).is_empty());

    rx.control(json!({"down": false})).await;
    let vigil = spawn_vigil_with(dir.path(), "127.0.0.1:0", &env).await;
    let api = &Api::new(vigil.http);
    let got = eventually(WAIT, "the event after the restart", || async move {
        let got = received(&rx.state().await);
        (!got.is_empty()).then_some(got)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got_later = received(&rx.state().await);
    assert_eq!(got, got_later);
    assert_eq!(got.len(), 1, "{got:?}");
    let (t, n) = got.values().next().unwrap();
    assert_eq!((t.as_str(), *n), ("alert.opened", 1));
    // The restart rebuilt the engine without a second alert.
    let after = alerts(api, "patient_id=p-kill").await;
    assert_eq!(after.len(), before.len(), "{after:#?}");
    assert_eq!(after[0]["id"], before[0]["id"]);
}

/// Restarting with an open alert and a condition that persists opens no second alert; a
/// condition whose alert never made it into the record before a crash is found on restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_neither_loses_nor_duplicates_alerts() {
    let gw = Gateway::start_with(fast_alerts).await;
    let api = &gw.client.clone();
    let secret = patient_with_app(api, "p-rs").await;
    publish(gw.mqtt, "p-rs-app", &secret, &[("bp_diastolic", 125.0, 30)]).await;
    let a = exactly(api, "p-rs", 1).await;
    let (cfg, dir) = gw.stop_keeping_data().await;
    let gw = Gateway::start_again(cfg, dir).await;
    publish(gw.mqtt, "p-rs-app", &secret, &[("bp_diastolic", 126.0, 10)]).await;
    let b = exactly(&gw.client, "p-rs", 1).await;
    assert_eq!(a[0]["id"], b[0]["id"]);
    // Simulate a crash after the reading's commit but before its alert's: remove the alert
    // from the record while Vigil is down. The restart finds the condition and opens it.
    let (cfg, dir) = gw.stop_keeping_data().await;
    crate::registry_db::RegistryDb::of(&cfg)
        .execute("DELETE FROM alerts; DELETE FROM timeline WHERE kind LIKE 'alert.%';")
        .await;
    let gw = Gateway::start_again(cfg, dir).await;
    let c = exactly(&gw.client, "p-rs", 1).await;
    assert_ne!(c[0]["id"], a[0]["id"]);
    assert_eq!(c[0]["rule_id"], "bp-crisis-diastolic");
    assert!(
        c[0]["message"]
            .as_str()
            .unwrap()
            .ends_with("(found on restart)"),
        "{c:?}"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fhir_write_back_with_smart_backend_services() {
    let dir = tempfile::tempdir().unwrap();
    let (private_pem, public_pem) = crate::fhir::p384_key();
    let (private_file, public_file) = (
        dir.path().join("vigil.pem"),
        dir.path().join("vigil.pub.pem"),
    );
    std::fs::write(&private_file, private_pem).unwrap();
    std::fs::write(&public_file, public_pem).unwrap();
    let rx = &Receiver::start(&[
        "--smart-public-key",
        public_file.to_str().unwrap(),
        "--smart-client-id",
        "vigil-clinic",
    ])
    .await;
    let (base, token_url) = (rx.url("/fhir"), rx.url("/token"));
    let gw = Gateway::start_with(move |c| {
        c.alerts.tick_ms = 100;
        c.fhir = Some(vigil::config::FhirConfig {
            base_url: base,
            token: None,
            smart: Some(vigil::config::SmartConfig {
                token_url,
                client_id: "vigil-clinic".into(),
                key_file: private_file,
                kid: "vigil-1".into(),
                scope: "system/Observation.c system/Flag.cu system/Communication.c".into(),
            }),
            retry: vigil::config::RetryConfig {
                retry_initial_ms: 100,
                ..Default::default()
            },
            create_patients: true,
            ..Default::default()
        });
    })
    .await;
    let api = &gw.client;
    let secret = patient_with_app(api, "p-smart").await;
    publish(
        gw.mqtt,
        "p-smart-app",
        &secret,
        &[("bp_systolic", 200.0, 5)],
    )
    .await;
    let state = eventually(WAIT, "the Flag and Communication written", || async move {
        let st = rx.state().await;
        let n = |t: &str| st["fhir"][t].as_array().map_or(0, Vec::len);
        (n("Flag") == 1 && n("Communication") == 1 && n("Observation") == 1).then_some(st)
    })
    .await;
    assert_eq!(state["tokens_issued"], 1, "{state}");
    assert_eq!(state["invalid"], json!([]));
    assert_eq!(state["fhir"]["Communication"][0]["priority"], "urgent");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_not_delivered_in_time_is_given_up_and_shown_as_failed() {
    let rx = &Receiver::start(&["--webhook-secret", SECRET]).await;
    rx.control(json!({"down": true})).await;
    let url = rx.url("/hooks/vigil");
    let gw = Gateway::start_with(move |c| {
        c.alerts.tick_ms = 100;
        c.webhook = Some(vigil::config::WebhookConfig {
            url,
            secret: SECRET.into(),
            retry: vigil::config::RetryConfig {
                retry_initial_ms: 200,
                retry_max_s: 1,
                give_up_after_s: 2,
                ..Default::default()
            },
        });
    })
    .await;
    let api = &gw.client;
    let secret = patient_with_app(api, "p-late").await;
    publish(
        gw.mqtt,
        "p-late-app",
        &secret,
        &[("spo2", 80.0, 90), ("spo2", 80.0, 10)],
    )
    .await;
    // Both alerts of the default plan (news2 and spo2-critical) wait behind the first, in
    // order; each is given up with the last error once too old.
    let failed = eventually(WAIT, "both deliveries given up", || async move {
        let (_, v) = api.get("/api/v1/deliveries?status=failed").await;
        let d = v["deliveries"].as_array().unwrap().clone();
        (d.len() == 2).then_some(d)
    })
    .await;
    let gave_up = |d: &Value| d["last_error"].as_str().unwrap().starts_with("gave up");
    assert!(failed.iter().all(gave_up), "{failed:?}");
    let retried = |d: &Value| d["attempts"].as_u64().unwrap() >= 2;
    assert!(failed.iter().any(retried), "{failed:?}");
    let (_, metrics) = api.call("GET", "/metrics", None, None).await;
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains(r#"vigil_outbox_attempts_total{sink="webhook",outcome="failed"}"#),
        "{metrics}"
    );
    gw.stop().await;
}
