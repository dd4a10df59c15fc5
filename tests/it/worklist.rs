//! The caseload worklist through the API (docs/worklist.md): a scenario fleet published by
//! `mosquitto_pub` — a patient with an unacknowledged high alert, one whose cuff went silent,
//! one at risk of missing 16 days, a stable one — comes back in that order with its reasons in
//! words, and a clinician sees only their teams' patients; the month's population figures
//! over the same fleet.
//! (Runs on SQLite, and on PostgreSQL in `./scripts/test`'s PostgreSQL block.)

use reqwest::StatusCode;
use serde_json::{Value, json};
use time::{Duration, OffsetDateTime};

use crate::support::{Api, Gateway, TOKEN, eventually, publish_readings};

const WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// A patient of `team` enrolled 25 days ago (so the device period ends in 4 days), with a cuff;
/// its secret.
async fn enrolled(api: &Api, id: &str, team: &str, start: time::Date) -> String {
    let (s, v) = api
        .post(
            "/api/v1/patients",
            json!({"id": id, "name": format!("Patient {id}"), "care_team": team}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = api
        .call(
            "PUT",
            &format!("/api/v1/patients/{id}/enrollment"),
            Some(
                json!({"program": "hypertension", "start": start.to_string(),
                "consent": {"method": "verbal", "by": "nina", "at": format!("{start}T09:00:00Z")}}),
            ),
            Some(TOKEN),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    api.device(&format!("{id}-cuff"), id, "bp-cuff").await
}

/// Systolic readings `days_ago` (each at `now` minus that many days, less a minute).
fn readings(now: OffsetDateTime, days_ago: &[i64], value: f64) -> Value {
    Value::Array(
        days_ago
            .iter()
            .map(|d| {
                let t = now - Duration::days(*d) - Duration::minutes(1);
                json!({"metric": "bp_systolic", "value": value, "time": t.unix_timestamp()})
            })
            .collect(),
    )
}

#[tokio::test]
async fn the_worklist_ranks_alerts_above_silence_above_risk_above_the_stable() {
    let g = Gateway::start().await;
    let api = &g.client;
    for team in ["north", "south"] {
        let (s, v) = api
            .post("/api/v1/teams", json!({"id": team, "name": team}))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    let now = OffsetDateTime::now_utc();
    let start = (now - Duration::minutes(1)).date() - Duration::days(25);

    // Stable: a reading on each of the last 17 days and a call today.
    let stable = enrolled(api, "w-stable", "north", start).await;
    let days: Vec<i64> = (0..17).collect();
    publish_readings(
        g.mqtt,
        "w-stable-cuff",
        &stable,
        &readings(now, &days, 125.0),
    )
    .await;
    let (s, v) = api
        .post(
            "/api/v1/patients/w-stable/time",
            json!({"date": (now - Duration::minutes(1)).date().to_string(), "minutes": 12,
                   "activity": "call", "interactive": true}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    // At risk: 12 days with data, today's included, 4 left: none to spare.
    let risk = enrolled(api, "w-risk", "north", start).await;
    let days: Vec<i64> = (0..12).collect();
    publish_readings(g.mqtt, "w-risk-cuff", &risk, &readings(now, &days, 125.0)).await;
    // Silent: its last reading three days ago (a cuff reports every 12 h).
    let silent = enrolled(api, "w-silent", "north", start).await;
    publish_readings(
        g.mqtt,
        "w-silent-cuff",
        &silent,
        &readings(now, &[3], 125.0),
    )
    .await;
    // A high alert nobody has acknowledged.
    let high = enrolled(api, "w-high", "north", start).await;
    let (s, v) = api
        .care_plan(
            "w-high",
            json!([{"id": "sys-high", "kind": "threshold", "metric": "bp_systolic", "op": ">",
                    "value": 180, "for_s": 0, "severity": "high"}]),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let days: Vec<i64> = (0..17).collect();
    publish_readings(g.mqtt, "w-high-cuff", &high, &readings(now, &days, 125.0)).await;
    publish_readings(
        g.mqtt,
        "w-high-cuff",
        &high,
        &json!({"metric": "bp_systolic", "value": 195}),
    )
    .await;
    // Another team's patient, with an alert of its own.
    let other = enrolled(api, "w-south", "south", start).await;
    publish_readings(g.mqtt, "w-south-cuff", &other, &readings(now, &[0], 125.0)).await;

    let north = api.clinician("nina-north", "north").await;
    let list = eventually(WAIT, "the alert and the readings in the worklist", || {
        let north = north.clone();
        async move {
            let (s, v) = api
                .call("GET", "/api/v1/worklist", None, Some(&north))
                .await;
            assert_eq!(s, StatusCode::OK, "{v}");
            let first = v["items"][0].clone();
            let stable_days = v["items"]
                .as_array()?
                .iter()
                .find(|i| i["patient_id"] == "w-stable")?["days"]
                .as_u64()?;
            (first["patient_id"] == "w-high" && stable_days >= 16).then_some(v)
        }
    })
    .await;
    let items = list["items"].as_array().unwrap();
    let order: Vec<&str> = items
        .iter()
        .map(|i| i["patient_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        order,
        ["w-high", "w-silent", "w-risk", "w-stable"],
        "{list:#}"
    );
    let tiers: Vec<&str> = items.iter().map(|i| i["tier"].as_str().unwrap()).collect();
    assert_eq!(tiers, ["high_alert", "silent", "at_risk", "stable"]);
    let ranks: Vec<u64> = items.iter().map(|i| i["rank"].as_u64().unwrap()).collect();
    assert_eq!(ranks, [1, 2, 3, 4]);
    let first_reason = |i: usize| items[i]["reasons"][0].as_str().unwrap().to_owned();
    assert!(
        first_reason(0).starts_with("Unacknowledged high alert for"),
        "{}",
        first_reason(0)
    );
    assert!(items[0]["top_alert"].is_string());
    assert!(
        first_reason(1)
            .starts_with("No reading from w-silent-cuff for 3 days (expected every 12 h)"),
        "{}",
        first_reason(1)
    );
    assert!(
        first_reason(2).contains("of 16 days this period"),
        "{}",
        first_reason(2)
    );
    assert_eq!(first_reason(3), "Stable: nothing needs action");
    assert_eq!(items[3]["minutes"], 12);

    // Filters; refusals with reasons; the admin sees the south patient too.
    let (s, v) = api
        .call("GET", "/api/v1/worklist?program=copd", None, Some(&north))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["items"], json!([]));
    let (s, v) = api
        .call("GET", "/api/v1/worklist?team=south", None, Some(&north))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, v) = api.get("/api/v1/worklist?program=asthma").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, v) = api.get("/api/v1/worklist?team=south").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let south: Vec<&str> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["patient_id"].as_str().unwrap())
        .collect();
    assert_eq!(south, ["w-south"]);
    let (_, audit) = api.get("/api/v1/audit?user=nina-north&limit=1000").await;
    assert!(audit.to_string().contains("worklist.read"), "{audit}");

    // Acknowledging the alert moves the patient down.
    let alert = items[0]["top_alert"].as_str().unwrap();
    let (s, v) = api
        .call(
            "POST",
            &format!("/api/v1/alerts/{alert}/ack"),
            Some(json!({"note": "called"})),
            Some(&north),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, v) = api
        .call("GET", "/api/v1/worklist", None, Some(&north))
        .await;
    assert_ne!(v["items"][0]["patient_id"], "w-high", "{v:#}");

    // The population figures of the month, over the north team's patients.
    let (s, v) = api
        .call("GET", "/api/v1/population", None, Some(&north))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let f = &v["figures"];
    assert_eq!(f["patients"], 4, "{v:#}");
    assert_eq!(f["alerts"], 1, "{v:#}");
    assert_eq!(f["alert_rates"][0]["rule_id"], "sys-high");
    assert!(
        f["alert_rates"][0]["per_100_patient_days"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert_eq!(f["ack_minutes"]["count"], 1, "{v:#}");
    assert_eq!(f["unacknowledged"], 0);
    assert_eq!(f["risk_tiers"]["high"], 1);
    assert_eq!(f["risk_tiers"]["none"], 3);
    assert_eq!(f["minutes_total"], 12);
    assert_eq!(f["interactive_patients"], 1);
    let (_, v) = api.get("/api/v1/population?program=hypertension").await;
    assert_eq!(
        v["figures"]["patients"], 5,
        "the admin sees the south patient too: {v:#}"
    );
    let (_, v) = api.get("/api/v1/population?program=copd").await;
    assert_eq!(v["figures"]["patients"], 0, "{v:#}");
    for bad in [
        "/api/v1/population?month=2026-13",
        "/api/v1/population?program=asthma",
    ] {
        let (s, v) = api.get(bad).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {v}");
    }
}
