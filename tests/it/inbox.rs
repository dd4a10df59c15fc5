//! The inbox's actions through the API (docs/dashboard.md, "The inbox"): a nurse claims an
//! alert, gives one to a colleague, snoozes one with a reason and acknowledges several at once;
//! each is on the timeline and in the audit trail, and another team's alert is refused.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{Api, Gateway, eventually, publish_readings};

const WAIT: Duration = Duration::from_secs(20);

async fn team(api: &Api, id: &str) {
    let (s, v) = api
        .post(
            "/api/v1/teams",
            json!({"id": id, "name": format!("Team {id}")}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
}

/// A patient of `team` whose meter has just read 45 mg/dL: one open high alert; its id.
async fn alerted_patient(g: &Gateway, id: &str, team: &str) -> String {
    let (s, v) = g
        .client
        .post(
            "/api/v1/patients",
            json!({"id": id, "name": format!("Patient {id}"), "care_team": team}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let meter = format!("gm-{id}");
    let secret = g.client.device(&meter, id, "glucose-meter").await;
    let body = json!({"metric": "glucose", "value": 45,
        "time": vigil::domain::format_rfc3339(vigil::domain::now_ms() - 1000)});
    publish_readings(g.mqtt, &meter, &secret, &body).await;
    let api = &g.client;
    eventually(WAIT, "the patient's alert", || async move {
        let (_, v) = api.get(&format!("/api/v1/alerts?patient_id={id}")).await;
        v["alerts"][0]["id"].as_str().map(str::to_owned)
    })
    .await
}

async fn as_user(api: &Api, token: &str, path: &str, body: Value) -> (StatusCode, Value) {
    api.call("POST", path, Some(body), Some(token)).await
}

async fn timeline_kinds(api: &Api, patient: &str) -> Vec<String> {
    let (_, v) = api.get(&format!("/api/v1/patients/{patient}/record")).await;
    v["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nurse_claims_assigns_snoozes_and_acknowledges_several_alerts_at_once() {
    let g = Gateway::start().await;
    let api = &g.client;
    team(api, "north").await;
    team(api, "south").await;
    let nina = api.clinician("nina", "north").await;
    api.clinician("sam", "north").await;
    api.clinician("omar", "south").await;
    let a = alerted_patient(&g, "pa", "north").await;
    let b = alerted_patient(&g, "pb", "north").await;
    let c = alerted_patient(&g, "pc", "north").await;
    let south = alerted_patient(&g, "ps", "south").await;

    // Nina claims pa's alert; it stays open (claiming is not acknowledging).
    let (s, v) = as_user(
        api,
        &nina,
        &format!("/api/v1/alerts/{a}/assign"),
        json!({"to": "nina"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["assigned_to"].as_str(), v["status"].as_str()),
        (Some("nina"), Some("open"))
    );
    // She gives pb's to Sam, her colleague; not to Omar (another team) nor to nobody known.
    let path = format!("/api/v1/alerts/{b}/assign");
    let (s, v) = as_user(api, &nina, &path, json!({"to": "sam"})).await;
    assert_eq!(
        (s, v["assigned_to"].as_str()),
        (StatusCode::OK, Some("sam")),
        "{v}"
    );
    let (s, v) = as_user(api, &nina, &path, json!({"to": "omar"})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("not on this patient's care team"),
        "{v}"
    );
    let (s, v) = as_user(api, &nina, &path, json!({"to": "ghost"})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, _) = as_user(api, &nina, &path, json!({"who": "sam"})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // Snoozing needs a time and a reason, each checked.
    let path = format!("/api/v1/alerts/{c}/snooze");
    for (body, why) in [
        (json!({"minutes": 30}), "reason"),
        (json!({"reason": "x"}), "how long"),
        (json!({"minutes": 0, "reason": "x"}), "minutes must be"),
        (
            json!({"minutes": 30, "until": "2030-01-01T00:00:00Z", "reason": "x"}),
            "not both",
        ),
        (
            json!({"until": "2020-01-01T00:00:00Z", "reason": "x"}),
            "later than now",
        ),
        (json!({"until": "yesterday", "reason": "x"}), "RFC 3339"),
    ] {
        let (s, v) = as_user(api, &nina, &path, body.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert!(v["error"].as_str().unwrap().contains(why), "{body}: {v}");
    }
    let before = vigil::domain::now_ms();
    let (s, v) = as_user(
        api,
        &nina,
        &path,
        json!({"minutes": 30, "reason": "re-measuring after insulin"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "acknowledged", "a snooze acknowledges: {v}");
    assert_eq!(v["snooze_reason"], "re-measuring after insulin");
    let until = vigil::domain::parse_rfc3339(v["snoozed_until"].as_str().unwrap()).unwrap();
    assert!(
        until >= before + 30 * 60_000 - 1000 && until <= vigil::domain::now_ms() + 30 * 60_000,
        "{v}"
    );

    // Two acknowledged at once; an unknown alert is said by id, not a reason to stop.
    let unknown = "alr_00000000000000000000000000000000";
    let (s, v) = as_user(
        api,
        &nina,
        "/api/v1/alerts/ack",
        json!({"ids": [a, b, unknown], "note": "calling both"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["acknowledged"], 2, "{v}");
    assert_eq!(v["failed"][0]["id"], unknown, "{v}");
    for x in v["alerts"].as_array().unwrap() {
        assert_eq!(
            (x["status"].as_str(), x["acknowledged_by"].as_str()),
            (Some("acknowledged"), Some("nina")),
            "{x}"
        );
    }
    // A batch naming another team's alert is refused whole: nothing acknowledged.
    let (s, v) = as_user(api, &nina, "/api/v1/alerts/ack", json!({"ids": [south]})).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let (_, v) = api.get(&format!("/api/v1/alerts/{south}")).await;
    assert_eq!(v["status"], "open", "{v}");
    let (s, v) = as_user(api, &nina, "/api/v1/alerts/ack", json!({"ids": []})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, v) = as_user(api, &nina, "/api/v1/alerts/ack", json!({"ids": ["nope"]})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");

    // Each action is on the patient's timeline and in the audit trail.
    assert!(
        timeline_kinds(api, "pa")
            .await
            .contains(&"alert.assigned".to_owned())
    );
    let kinds = timeline_kinds(api, "pc").await;
    assert!(
        kinds.contains(&"alert.snoozed".to_owned())
            && kinds.contains(&"alert.acknowledged".to_owned()),
        "{kinds:?}"
    );
    let (_, v) = api.get("/api/v1/audit?user=nina&limit=1000").await;
    let actions: Vec<&str> = v["audit"]
        .as_array()
        .expect("audit lines")
        .iter()
        .filter_map(|l| l["action"].as_str())
        .collect();
    for want in ["alert.assign", "alert.snooze", "alert.acknowledge"] {
        assert!(actions.contains(&want), "{want} in {actions:?}");
    }
    g.stop().await;
}
