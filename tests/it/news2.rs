//! The patient page's NEWS2 card (`GET /patients/{id}/news2`, docs/alerts.md "The NEWS2
//! card"): readings published over MQTT as a patient's app sends them, scored now and over the
//! day as the RCP chart scores them; bad periods refused in words; other teams refused and
//! every read audited.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::alerts::publish;
use crate::support::{Gateway, eventually};
use crate::web::{Browser, PASSWORD, clinic};

const WAIT: Duration = Duration::from_secs(20);

async fn news2(g: &Gateway, patient: &str, query: &str) -> (StatusCode, Value) {
    g.client
        .get(&format!("/api/v1/patients/{patient}/news2{query}"))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_card_scores_the_latest_fresh_readings_and_their_trend() {
    let g = Gateway::start().await;
    clinic(&g).await;
    let (s, v) = g
        .client
        .post(
            "/api/v1/patients",
            json!({"id": "p-n2", "name": "Nell News", "care_team": "north"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let app = g.client.device("p-n2-app", "p-n2", "patient-app").await;
    let (s, v) = g
        .client
        .care_plan(
            "p-n2",
            json!([{"id": "early-warning", "kind": "news2", "freshness_s": 3600}]),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");

    // No readings yet: the rule is shown, there is no score, and the trend is all gaps.
    let (s, v) = news2(&g, "p-n2", "").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        v["rule"],
        json!({"id": "early-warning", "freshness_s": 3600, "spo2_scale": 1})
    );
    assert_eq!(v["current"], Value::Null, "{v}");
    let trend = v["trend"].as_array().unwrap();
    assert_eq!(trend.len(), 96);
    assert!(trend.iter().all(|p| p["total"].is_null()), "{v}");

    // RR 25 (3), SpO2 93 on air (2 + 0), systolic 120 (0), pulse 95 (1), alert (0), all a
    // minute ago; 38.5 °C (1) two hours ago, older than the rule's hour: 6, temperature
    // missing.
    publish(
        g.mqtt,
        "p-n2-app",
        &app,
        &[
            ("body_temperature", 38.5, 7200),
            ("respiratory_rate", 25.0, 60),
            ("spo2", 93.0, 60),
            ("on_oxygen", 0.0, 60),
            ("bp_systolic", 120.0, 60),
            ("heart_rate", 95.0, 60),
            ("consciousness", 0.0, 60),
        ],
    )
    .await;
    let v = eventually(WAIT, "the six fresh parameters scored", || async {
        let (_, v) = news2(&g, "p-n2", "").await;
        (v["current"]["total"] == 6 && v["current"]["missing"] == 1).then_some(v)
    })
    .await;
    let c = &v["current"];
    assert_eq!(c["risk"], "medium", "{c}");
    let parts = c["parts"].as_array().unwrap();
    let names: Vec<&str> = parts
        .iter()
        .map(|p| p["parameter"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "respiratory rate",
            "SpO2",
            "oxygen",
            "systolic BP",
            "pulse",
            "consciousness",
            "temperature"
        ]
    );
    let scores: Vec<Value> = parts.iter().map(|p| p["score"].clone()).collect();
    assert_eq!(
        scores,
        [
            json!(3),
            json!(2),
            json!(0),
            json!(0),
            json!(1),
            json!(0),
            Value::Null
        ]
    );
    assert_eq!(parts[0]["metric"], "respiratory_rate");
    assert_eq!(parts[0]["value"], 25.0);
    assert_eq!(parts[0]["unit"], "/min");
    assert_eq!(parts[0]["fresh"], true);
    // The stale temperature is named, with its value and time, but does not count.
    assert_eq!(parts[6]["value"], 38.5);
    assert_eq!(parts[6]["unit"], "Cel");
    assert_eq!(parts[6]["fresh"], false);
    assert!(parts[6]["time"].is_string());
    // The trend ends now at the same score; two hours ago only the temperature was fresh.
    let trend = v["trend"].as_array().unwrap();
    assert_eq!(trend.len(), 96);
    assert_eq!(trend[95]["total"], 6, "{trend:?}");
    assert!(
        trend.iter().any(|p| p["total"] == 1 && p["missing"] == 6),
        "{trend:?}"
    );
    assert!(trend[0]["total"].is_null(), "{trend:?}");

    // The temperature taken again: all seven, 7, high; parts as the RCP chart gives them.
    publish(g.mqtt, "p-n2-app", &app, &[("body_temperature", 38.5, 30)]).await;
    let v = eventually(WAIT, "the temperature scored", || async {
        let (_, v) = news2(&g, "p-n2", "").await;
        (v["current"]["total"] == 7).then_some(v)
    })
    .await;
    assert_eq!(v["current"]["risk"], "high");
    assert_eq!(v["current"]["missing"], 0);
    let scores: Vec<Value> = v["current"]["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["score"].clone())
        .collect();
    assert_eq!(scores, [3, 2, 0, 0, 1, 0, 1].map(|n| json!(n)));

    // Bad periods are refused in words.
    for (query, words) in [
        ("?from=yesterday", "is not an RFC 3339 time"),
        (
            "?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z",
            "from must be before to",
        ),
        (
            "?from=2026-01-01T00:00:00Z&to=2026-03-01T00:00:00Z",
            "longer than 31 days",
        ),
        ("?points=5", "unknown field"),
    ] {
        let (s, v) = news2(&g, "p-n2", query).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{query}: {v}");
        assert!(v["error"].as_str().unwrap().contains(words), "{query}: {v}");
    }
    let (s, _) = news2(&g, "nobody", "").await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Her own team's clinician reads it; another team's is refused, and both are audited.
    let mut nina = Browser::new(&g);
    nina.sign_in("nina", PASSWORD).await;
    let (s, v) = nina.call("GET", "/api/v1/patients/p-n2/news2", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["current"]["total"], 7);
    let mut sam = Browser::new(&g);
    sam.sign_in("sam", PASSWORD).await;
    let (s, v) = sam.call("GET", "/api/v1/patients/p-n2/news2", None).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert!(!v.to_string().contains("38.5"), "{v}");
    let (s, a) = g
        .client
        .get("/api/v1/audit?patient_id=p-n2&limit=100000")
        .await;
    assert_eq!(s, StatusCode::OK, "{a}");
    let lines = a["audit"].as_array().unwrap();
    assert!(
        lines.iter().any(|l| l["action"] == "news2.read"
            && l["actor"] == "nina"
            && l["target"] == "patient/p-n2/news2"),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["action"] == "access.refused" && l["actor"] == "sam"),
        "{lines:?}"
    );
    g.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_news2_rule_in_the_plan_there_is_no_card() {
    let g = Gateway::start().await;
    clinic(&g).await;
    // The default plan has one (freshness 4 h, scale 1).
    let (s, v) = news2(&g, "pn1", "").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        v["rule"],
        json!({"id": "news2", "freshness_s": 14400, "spo2_scale": 1})
    );
    // A plan of its own without one: nothing is scored, even with readings.
    let (s, v) = g
        .client
        .care_plan(
            "pn1",
            json!([{"id": "low", "kind": "threshold", "metric": "spo2", "op": "<",
                    "value": 90, "for_s": 0, "severity": "high"}]),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = news2(&g, "pn1", "").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (&v["rule"], &v["current"], &v["trend"]),
        (&Value::Null, &Value::Null, &Value::Null),
        "{v}"
    );
    g.stop().await;
}
