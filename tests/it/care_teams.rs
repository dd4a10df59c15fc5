//! Nobody's patient is nobody's: a patient created without a care team is on the default team,
//! whose clinicians see it and its alerts; a patient's team cannot be cleared; an admin is told
//! of every patient (and its open alerts) that no clinician can see; a clinician on no team is
//! told so.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{Api, Gateway, eventually, publish_readings};

const WAIT: Duration = Duration::from_secs(20);
const PASSWORD: &str = "amber kettle orbit meadow";

/// Creates a user through the API and returns them as the API shows them.
async fn user(api: &Api, name: &str, role: &str, teams: Option<&[&str]>) -> Value {
    let mut body = json!({"name": name, "password": PASSWORD, "role": role});
    if let Some(t) = teams {
        body["teams"] = json!(t);
    }
    let (s, v) = api.post("/api/v1/users", body).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    v
}

/// A read token acting as `user` (made with the bootstrap token), to call the API as them.
async fn token_of(api: &Api, user: &str) -> String {
    let (s, v) = api
        .post(
            "/api/v1/tokens",
            json!({"label": format!("{user} test"), "scope": "read", "expires_days": 1, "user": user}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    v["token"].as_str().unwrap().to_owned()
}

async fn team(api: &Api, id: &str) {
    let (s, v) = api
        .post(
            "/api/v1/teams",
            json!({"id": id, "name": format!("Team {id}")}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
}

async fn patient(api: &Api, id: &str, care_team: Option<&str>) -> Value {
    let mut body = json!({"id": id, "name": format!("Patient {id}")});
    if let Some(t) = care_team {
        body["care_team"] = json!(t);
    }
    let (s, v) = api.post("/api/v1/patients", body).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    v
}

/// A glucose of 45 mg/dL from a new meter of `patient`: the default plan's high alert
/// ("glucose < 54 mg/dL"), once stored.
async fn hypoglycaemia(g: &Gateway, patient: &str) {
    let meter = format!("gm-{patient}");
    let secret = g.client.device(&meter, patient, "glucose-meter").await;
    let body = json!({"metric": "glucose", "value": 45, "time": vigil::domain::format_rfc3339(vigil::domain::now_ms() - 1000)});
    publish_readings(g.mqtt, &meter, &secret, &body).await;
}

fn ids(list: &Value) -> Vec<&str> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patient_created_without_a_team_is_seen_by_the_default_teams_clinicians_and_so_are_its_alerts()
 {
    let g = Gateway::start().await;
    let api = &g.client;
    team(api, "north").await;
    // A clinician created without a team is on the default team; one of north is not.
    let nina = user(api, "nina", "clinician", None).await;
    assert_eq!(nina["teams"], json!(["default"]));
    user(api, "sam", "clinician", Some(&["north"])).await;
    let (nina, sam) = (token_of(api, "nina").await, token_of(api, "sam").await);

    let p = patient(api, "p-new", None).await;
    assert_eq!(p["care_team"], "default");
    hypoglycaemia(&g, "p-new").await;

    // The default team's clinician sees the patient, its tile and its high alert.
    let alert = eventually(WAIT, "nina's inbox to hold p-new's alert", || async {
        let (s, v) = api
            .call("GET", "/api/v1/alerts?status=open", None, Some(&nina))
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["patient_id"] == "p-new" && a["rule_id"] == "glucose-very-low")
            .cloned()
    })
    .await;
    assert_eq!(alert["severity"], "high");
    let (s, panel) = api.call("GET", "/api/v1/panel", None, Some(&nina)).await;
    assert_eq!(s, StatusCode::OK, "{panel}");
    assert_eq!(ids(&panel["patients"]), ["p-new"]);
    assert_eq!(panel["care_teams"], json!(["default"]));
    assert!(
        panel.get("unseen").is_none(),
        "a clinician is not told of others' patients"
    );
    let (s, _) = api
        .call("GET", "/api/v1/patients/p-new", None, Some(&nina))
        .await;
    assert_eq!(s, StatusCode::OK);

    // Another team's clinician does not.
    let (s, v) = api
        .call("GET", "/api/v1/alerts?status=open", None, Some(&sam))
        .await;
    assert_eq!((s, v["alerts"].clone()), (StatusCode::OK, json!([])));
    let (s, _) = api
        .call("GET", "/api/v1/patients/p-new", None, Some(&sam))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    g.stop().await;
}

#[tokio::test]
async fn a_patients_care_team_can_change_but_never_be_cleared() {
    let g = Gateway::start().await;
    let api = &g.client;
    team(api, "north").await;
    patient(api, "p1", Some("north")).await;
    for body in [json!({"care_team": null}), json!({"care_team": ""})] {
        let (s, v) = api.patch("/api/v1/patients/p1", body.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert!(
            v["error"]
                .as_str()
                .unwrap()
                .contains("every patient belongs to a care team"),
            "{v}"
        );
    }
    let (_, v) = api.get("/api/v1/patients/p1").await;
    assert_eq!(
        v["care_team"], "north",
        "the refused updates changed nothing"
    );
    // Moving is changing, and other fields are still cleared with "".
    let (s, v) = api
        .patch(
            "/api/v1/patients/p1",
            json!({"care_team": "default", "phone": ""}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["care_team"], "default");
    g.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_is_told_of_every_patient_and_open_alert_no_clinician_can_see() {
    let g = Gateway::start().await;
    let api = &g.client;
    team(api, "north").await;
    team(api, "south").await;
    user(api, "nina", "clinician", Some(&["north"])).await;
    // North has a clinician; south has none; nobody is on the default team.
    patient(api, "pn", Some("north")).await;
    patient(api, "ps", Some("south")).await;
    // "ghost" is no team: a patient is never put on it (they would be seen by nobody).
    let (s, v) = api
        .post(
            "/api/v1/patients",
            json!({"id": "pg", "name": "Patient pg", "care_team": "ghost"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("\"ghost\" does not exist"),
        "{v}"
    );
    patient(api, "pd", None).await;
    hypoglycaemia(&g, "ps").await;
    hypoglycaemia(&g, "pn").await;

    let unseen = || async {
        let (s, v) = api.get("/api/v1/panel").await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["unseen"].clone()
    };
    // One open alert on ps (glucose below 70 and below 54 at once: one episode), none
    // counted for pn (seen).
    let u = eventually(WAIT, "ps's alert counted as unseen", || async {
        let u = unseen().await;
        (u["open_alerts"] == 1).then_some(u)
    })
    .await;
    let reasons: Vec<(&str, &str)> = u["patients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(
        reasons,
        [("ps", "no_clinician"), ("pd", "no_clinician"),],
        "{u}"
    );
    assert_eq!(u["patients"][0]["open_alerts"], 1);
    assert_eq!(u["patients"][0]["care_team"], "south");

    // A clinician joins south and the default team: every patient is seen.
    user(api, "sam", "clinician", Some(&["south", "default"])).await;
    assert!(ids(&unseen().await["patients"]).is_empty());
    assert_eq!(unseen().await["open_alerts"], 0);

    // A clinician on no team is told so by the panel (an empty list, not a missing one).
    let (s, v) = api.patch("/api/v1/users/nina", json!({"teams": []})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let nina = token_of(api, "nina").await;
    let (_, panel) = api.call("GET", "/api/v1/panel", None, Some(&nina)).await;
    assert_eq!(
        (panel["care_teams"].clone(), panel["patients"].clone()),
        (json!([]), json!([]))
    );
    g.stop().await;
}
