//! Records a clinic can keep (issue 21): discharging and readmitting a patient, users' display
//! names, disabling and password resets, and the device inventory — through the real gateway
//! (SQLite, or PostgreSQL with `VIGIL_TEST_PG_URL`).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{Gateway, TOKEN, V, eventually, mosquitto_pub, publish_readings};
use crate::web::{Browser, PASSWORD, clinic};

/// On PostgreSQL under the whole suite's load, a fresh gateway's alert partitions and polls can
/// take longer than on SQLite; 20 s was once not enough there.
const WAIT: Duration = Duration::from_secs(40);

/// The ids of the patients a list names.
fn ids(v: &Value, key: &str) -> Vec<String> {
    v[key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key} in {v}"))
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_owned())
        .collect()
}

/// The unresolved alerts of a patient, as the admin sees them.
async fn unresolved(g: &Gateway, patient: &str) -> Vec<Value> {
    let (s, v) = g
        .client
        .get(&format!("/api/v1/alerts?patient_id={patient}"))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["status"] != "resolved")
        .cloned()
        .collect()
}

#[tokio::test]
async fn a_discharged_patient_leaves_the_panel_and_alerting_and_a_readmission_brings_them_back() {
    let g = Gateway::start().await;
    let (north, _) = clinic(&g).await;
    let (s, v) = g
        .client
        .care_plan(
            "pn1",
            json!([{"id": "low-spo2", "kind": "threshold", "metric": "spo2", "op": "<",
                    "value": 90, "for_s": 0, "severity": "high"}]),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let mut nina = Browser::new(&g);
    nina.sign_in("nina", PASSWORD).await;
    let mut sam = Browser::new(&g);
    sam.sign_in("sam", PASSWORD).await;

    publish_readings(
        g.mqtt,
        "oxn1",
        &north,
        &json!({"metric": "spo2", "value": 84}),
    )
    .await;
    let first = eventually(WAIT, "the low SpO2 alert", || async {
        unresolved(&g, "pn1").await.pop()
    })
    .await;

    // Refusals first: another team's clinician, bad bodies, a date to come.
    let (s, v) = sam
        .call("POST", "/api/v1/patients/pn1/discharge", Some(json!({})))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    for (body, why) in [
        (json!({"date": "2999-01-01"}), "in the future"),
        (json!({"date": "01/12/2026"}), "is not a date"),
        (json!({"reason": "x".repeat(501)}), "at most 500"),
        (json!({"why": "x"}), "unknown field"),
        (json!("recovered"), "invalid body"),
    ] {
        let (s, v) = nina
            .call("POST", "/api/v1/patients/pn1/discharge", Some(body))
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
        assert!(v["error"].as_str().unwrap().contains(why), "{why}: {v}");
    }
    let (s, v) = nina
        .call("POST", "/api/v1/patients/nobody/discharge", None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    let (s, v) = nina
        .call("POST", "/api/v1/patients/pn1/readmit", None)
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("not discharged"),
        "{v}"
    );

    // The discharge: the open alert resolved in the same change, with its note.
    let (s, v) = nina
        .call(
            "POST",
            "/api/v1/patients/pn1/discharge",
            Some(json!({"reason": "Recovered; back with the GP", "date": "2026-12-01"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "discharged", "{v}");
    assert_eq!(v["discharged"]["date"], "2026-12-01");
    assert_eq!(v["discharged"]["reason"], "Recovered; back with the GP");
    assert_eq!(v["discharged"]["by"], "nina");
    assert_eq!(v["resolved_alerts"], json!([first["id"]]));
    let (_, a) = g
        .client
        .get("/api/v1/alerts?patient_id=pn1&status=resolved")
        .await;
    assert_eq!(a["alerts"][0]["id"], first["id"]);
    assert_eq!(a["alerts"][0]["resolve_note"], "patient discharged", "{a}");
    assert_eq!(a["alerts"][0]["resolved_by"], "nina", "{a}");
    let (s, v) = nina
        .call("POST", "/api/v1/patients/pn1/discharge", None)
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("already discharged"),
        "{v}"
    );

    // The record stays readable; the lists leave the patient out unless asked.
    let (s, v) = nina.call("GET", "/api/v1/patients/pn1", None).await;
    assert_eq!((s, &v["status"]), (StatusCode::OK, &json!("discharged")));
    let (_, v) = nina.call("GET", "/api/v1/panel", None).await;
    assert!(!ids(&v, "patients").contains(&"pn1".to_owned()), "{v}");
    let (_, v) = nina.call("GET", "/api/v1/worklist", None).await;
    assert!(!v.to_string().contains("pn1"), "{v}");
    let (_, v) = nina.call("GET", "/api/v1/patients", None).await;
    assert!(ids(&v, "patients").is_empty(), "{v}");
    for q in ["status=discharged", "include=discharged", "status=all"] {
        let (s, v) = nina
            .call("GET", &format!("/api/v1/patients?{q}"), None)
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(ids(&v, "patients"), ["pn1"], "{q}: {v}");
    }
    for q in ["status=gone", "include=everyone", "colour=red"] {
        let (s, v) = nina
            .call("GET", &format!("/api/v1/patients?{q}"), None)
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{q}: {v}");
    }
    let (_, v) = nina.call("GET", "/api/v1/patients/pn1/record", None).await;
    let kinds: Vec<&str> = v["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"patient.discharged"), "{kinds:?}");
    assert!(kinds.contains(&"alert.resolved"), "{kinds:?}");
    let (_, v) = g.client.get("/api/v1/audit?user=nina&limit=1000").await;
    let lines = v["audit"].as_array().cloned().unwrap_or_default();
    let actions: Vec<(&str, &str)> = lines
        .iter()
        .map(|l| (l["action"].as_str().unwrap(), l["target"].as_str().unwrap()))
        .collect();
    assert!(
        actions.contains(&("patient.discharge", "patient/pn1")),
        "{actions:?}"
    );
    let alert_target = format!("alert/{}", first["id"].as_str().unwrap());
    assert!(
        actions.contains(&("alert.resolve", alert_target.as_str())),
        "{actions:?}"
    );

    // Readings after the discharge are stored but open no alert.
    publish_readings(
        g.mqtt,
        "oxn1",
        &north,
        &json!({"metric": "spo2", "value": 82}),
    )
    .await;
    eventually(WAIT, "the reading after discharge stored", || async {
        let obs = g.client.observations("pn1", "metric=spo2").await;
        obs.iter().any(|o| o["value"] == 82.0).then_some(())
    })
    .await;

    // Readmitted: alerting resumes with the plan the patient had.
    let (s, v) = nina
        .call("POST", "/api/v1/patients/pn1/readmit", Some(json!({})))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "active");
    assert!(v.get("discharged").is_none(), "{v}");
    let (_, v) = nina.call("GET", "/api/v1/panel", None).await;
    assert!(ids(&v, "patients").contains(&"pn1".to_owned()), "{v}");
    publish_readings(
        g.mqtt,
        "oxn1",
        &north,
        &json!({"metric": "spo2", "value": 81}),
    )
    .await;
    let again = eventually(WAIT, "an alert after the readmission", || async {
        unresolved(&g, "pn1").await.pop()
    })
    .await;
    assert_ne!(again["id"], first["id"]);
    // The engine judges readings in order: had the reading during the discharge opened an
    // alert, it would be here too.
    assert_eq!(unresolved(&g, "pn1").await.len(), 1);
    let (_, v) = nina.call("GET", "/api/v1/patients/pn1/record", None).await;
    assert!(v.to_string().contains("patient.readmitted"), "{v}");
    g.stop().await;
}

#[tokio::test]
async fn a_disabled_user_cannot_sign_in_and_their_sessions_and_tokens_stop_at_once() {
    let g = Gateway::start().await;
    clinic(&g).await;
    let mut nina = Browser::new(&g);
    nina.sign_in("nina", PASSWORD).await;
    let (_, token) = nina.token("read").await;
    let api = crate::support::Api::new(g.http);
    let (s, _) = api
        .call("GET", "/api/v1/patients", None, Some(&token))
        .await;
    assert_eq!(s, StatusCode::OK);

    // Display name: set, shown in the list, checked, cleared.
    let (s, v) = g
        .client
        .patch(
            "/api/v1/users/nina",
            json!({"display_name": " Dr Nina Patel "}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["display_name"], "Dr Nina Patel");
    let (_, v) = g.client.get("/api/v1/users").await;
    let listed = v["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "nina")
        .unwrap()
        .clone();
    assert_eq!(
        (&listed["display_name"], &listed["disabled"]),
        (&json!("Dr Nina Patel"), &json!(false))
    );
    let (s, v) = g
        .client
        .patch(
            "/api/v1/users/nina",
            json!({"display_name": "x".repeat(101)}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, v) = g
        .client
        .patch("/api/v1/users/nina", json!({"disabled": "yes"}))
        .await;
    assert!(s.is_client_error(), "{s} {v}");
    assert!(v["error"].is_string(), "{v}");
    // A clinician cannot change another's display name or disable anyone.
    let (s, v) = nina
        .call(
            "PATCH",
            "/api/v1/users/sam",
            Some(json!({"disabled": true})),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");

    // Disabled: her session and her token stop at once; sign-in says what a wrong password says.
    let (s, v) = g
        .client
        .patch("/api/v1/users/nina", json!({"disabled": true}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["disabled"], true);
    let (s, _) = nina.call("GET", "/api/v1/session", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = api
        .call("GET", "/api/v1/patients", None, Some(&token))
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let mut again = Browser::new(&g);
    let (s, right) = again.sign_in("nina", PASSWORD).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{right}");
    let (_, wrong) = Browser::new(&g)
        .sign_in("sam", "not the password at all")
        .await;
    assert_eq!(
        right, wrong,
        "a disabled account is told apart from a wrong password"
    );
    let (_, v) = g.client.get("/api/v1/audit?user=nina&limit=1000").await;
    assert!(
        v.to_string().contains("session (account disabled)"),
        "the refusal's audit line says why: {v}"
    );
    let (_, v) = g.client.get("/api/v1/audit?limit=1000").await;
    assert!(v.to_string().contains("user/nina?changed=disabled"), "{v}");

    // Enabled again: she signs in; her unexpired token works again.
    let (s, v) = g
        .client
        .patch("/api/v1/users/nina", json!({"disabled": false}))
        .await;
    assert_eq!((s, &v["disabled"]), (StatusCode::OK, &json!(false)));
    let (s, v) = nina.sign_in("nina", PASSWORD).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["user"]["display_name"], "Dr Nina Patel");
    let (s, _) = api
        .call("GET", "/api/v1/patients", None, Some(&token))
        .await;
    assert_eq!(s, StatusCode::OK);

    // Password reset: a temporary password, answered once; her sessions end.
    let (s, v) = nina
        .call("POST", "/api/v1/users/sam/password-reset", None)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let (s, v) = g
        .client
        .post("/api/v1/users/nobody/password-reset", json!({}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    let (s, v) = g
        .client
        .post(
            "/api/v1/users/nina/password-reset",
            json!({"password": "short"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, v) = api
        .call(
            "POST",
            "/api/v1/users/nina/password-reset",
            None,
            Some(TOKEN),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let temporary = v["password"].as_str().unwrap().to_owned();
    assert_eq!(temporary.len(), 23, "{temporary}");
    let (s, _) = nina.call("GET", "/api/v1/session", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "the reset ended her session");
    assert_eq!(
        Browser::new(&g).sign_in("nina", PASSWORD).await.0,
        StatusCode::UNAUTHORIZED
    );
    // Signed in with it, she must choose her own password before anything else.
    let mut temp = Browser::new(&g);
    let (s, v) = temp.sign_in("nina", &temporary).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["user"]["must_change_password"], true, "{v}");
    let (s, v) = temp.call("GET", "/api/v1/patients", None).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("choose a new password"),
        "{v}"
    );
    assert_eq!(
        temp.call("GET", "/api/v1/session", None).await.0,
        StatusCode::OK
    );
    for (body, why) in [
        (
            json!({"current_password": "wrong one entirely", "new_password": "violet harbour beacon"}),
            "current_password",
        ),
        (
            json!({"current_password": temporary, "new_password": "short"}),
            "new_password must be",
        ),
        (
            json!({"current_password": temporary, "new_password": temporary}),
            "must differ",
        ),
        (json!({"current_password": temporary}), "new_password"),
    ] {
        let (s, v) = temp
            .call("POST", "/api/v1/session/password", Some(body))
            .await;
        assert!(s.is_client_error(), "{s} {v}");
        assert!(v["error"].as_str().unwrap().contains(why), "{why}: {v}");
    }
    let (s, v) = api
        .call(
            "POST",
            "/api/v1/session/password",
            Some(json!({"current_password": "x", "new_password": "violet harbour beacon"})),
            Some(&token),
        )
        .await;
    assert_eq!(
        s,
        StatusCode::FORBIDDEN,
        "a token has no password to change: {v}"
    );
    let (s, v) = temp
        .call(
            "POST",
            "/api/v1/session/password",
            Some(json!({"current_password": temporary, "new_password": "violet harbour beacon"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["user"]["must_change_password"], false, "{v}");
    assert_eq!(
        temp.call("GET", "/api/v1/session", None).await.0,
        StatusCode::UNAUTHORIZED,
        "the session with the temporary password ended"
    );
    let mut own = Browser::new(&g);
    assert_eq!(
        own.sign_in("nina", "violet harbour beacon").await.0,
        StatusCode::OK
    );
    assert_eq!(
        own.call("GET", "/api/v1/patients", None).await.0,
        StatusCode::OK
    );
    let (_, v) = g.client.get("/api/v1/audit?user=nina&limit=1000").await;
    assert!(v.to_string().contains("user.password_change"), "{v}");
    // Or the admin chooses it: then it is not echoed.
    let (s, v) = g
        .client
        .post(
            "/api/v1/users/nina/password-reset",
            json!({"password": "violet harbour lantern"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v.get("password").is_none(), "{v}");
    let (s, v) = Browser::new(&g)
        .sign_in("nina", "violet harbour lantern")
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        v["user"]["must_change_password"], true,
        "the admin knows it too: {v}"
    );
    let (_, v) = g.client.get("/api/v1/audit?limit=1000").await;
    assert!(v.to_string().contains("user.password_reset"), "{v}");
    assert!(
        !v.to_string().contains(&temporary),
        "the password is never audited"
    );
    g.stop().await;
}

#[tokio::test]
async fn the_visit_shows_patients_the_clinicians_display_name() {
    let g = Gateway::start_with(|c| c.video.bind_ip = [127, 0, 0, 1].into()).await;
    clinic(&g).await;
    let (s, v) = g
        .client
        .patch(
            "/api/v1/users/nina",
            json!({"display_name": "Dr Nina Patel"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let token = {
        let (s, v) = g
            .client
            .post(
                "/api/v1/tokens",
                json!({"label": "visit", "scope": "write", "expires_days": 1, "user": "nina"}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["token"].as_str().unwrap().to_owned()
    };
    let (s, v) = g
        .client
        .post("/api/v1/visits", json!({"patient_id": "pn1"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let visit = v["id"].as_str().unwrap().to_owned();
    let link = v["patient_join_url"].as_str().unwrap();
    let pt = link.split_once('#').unwrap().1.to_owned();
    let mut patient = crate::visits::signal_with(
        &g,
        &visit,
        &[],
        json!({"type": "join", "token": pt, "name": "Ana"}),
    )
    .await;
    crate::visits::next(&mut patient, "waiting").await;
    let mut clin = crate::visits::signal_with(
        &g,
        &visit,
        &[("authorization", format!("Bearer {token}"))],
        json!({"type": "join"}),
    )
    .await;
    crate::visits::next(&mut clin, "admitted").await;
    let roster = crate::visits::next(&mut clin, "participants").await;
    let waiting = roster["participants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["state"] == "waiting")
        .unwrap_or_else(|| panic!("{roster}"))
        .clone();
    let pid = waiting["id"].as_str().unwrap().to_owned();
    {
        use futures_util::SinkExt as _;
        clin.send(tokio_tungstenite::tungstenite::Message::Text(
            json!({"type": "admit", "participant": pid})
                .to_string()
                .into(),
        ))
        .await
        .unwrap();
    }
    crate::visits::next(&mut patient, "admitted").await;
    // What the patient's page shows of the clinician: the roster's name.
    let shown = loop {
        let r = crate::visits::next(&mut patient, "participants").await;
        if let Some(c) = r["participants"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["role"] == "clinician")
        {
            break c["name"].clone();
        }
    };
    assert_eq!(shown, "Dr Nina Patel");
    g.stop().await;
}

#[tokio::test]
async fn the_device_inventory_filters_and_shows_each_clinician_their_teams_devices() {
    let g = Gateway::start().await;
    let (north, _) = clinic(&g).await;
    g.client.device("scn1", "pn1", "scale").await;
    g.client.device("oxn2", "pn1", "pulse-oximeter").await;
    let (s, v) = g
        .client
        .post("/api/v1/devices/oxn2/revoke", json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    publish_readings(
        g.mqtt,
        "oxn1",
        &north,
        &json!({"metric": "spo2", "value": 97}),
    )
    .await;
    let out = mosquitto_pub(
        g.mqtt,
        V::V5,
        "oxn1",
        &north,
        "vigil/v1/devices/oxn1/status",
        br#"{"battery": 12}"#,
        &[],
    )
    .await;
    assert!(out.ok, "{}", out.stderr);

    let (s, v) = g.client.get("/api/v1/devices").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(ids(&v, "devices"), ["oxn1", "oxn2", "oxs1", "scn1"], "{v}");
    assert_eq!(v["next"], Value::Null);

    let mut nina = Browser::new(&g);
    nina.sign_in("nina", PASSWORD).await;
    let list = |q: &'static str| {
        let nina = &nina;
        async move {
            let (s, v) = nina.call("GET", &format!("/api/v1/devices{q}"), None).await;
            assert_eq!(s, StatusCode::OK, "{q}: {v}");
            v
        }
    };
    assert_eq!(ids(&list("").await, "devices"), ["oxn1", "oxn2", "scn1"]);
    assert_eq!(ids(&list("?profile=scale").await, "devices"), ["scn1"]);
    assert_eq!(ids(&list("?status=revoked").await, "devices"), ["oxn2"]);
    assert_eq!(
        ids(&list("?status=online").await, "devices"),
        Vec::<String>::new()
    );
    assert_eq!(
        ids(&list("?status=offline").await, "devices"),
        ["oxn1", "scn1"]
    );
    assert_eq!(
        ids(&list("?patient_id=pn1").await, "devices"),
        ["oxn1", "oxn2", "scn1"]
    );
    let v = eventually(WAIT, "the battery report and the reading", || async {
        let v = list("?battery_below=20").await;
        (ids(&v, "devices") == ["oxn1"] && v["devices"][0]["last_reading"].is_object()).then_some(v)
    })
    .await;
    let d = &v["devices"][0];
    assert_eq!(
        (&d["battery"], &d["battery_low"]),
        (&json!(12), &json!(true))
    );
    assert_eq!(d["last_reading"]["metric"], "spo2");
    assert_eq!(d["last_reading"]["value"], 97.0);
    assert_eq!(d["status"], "offline");
    assert_eq!(d["patient_id"], "pn1");
    // Pages.
    let v = list("?limit=2").await;
    assert_eq!(
        (ids(&v, "devices"), &v["next"]),
        (vec!["oxn1".to_owned(), "oxn2".to_owned()], &json!("oxn2"))
    );
    let v = list("?limit=2&after=oxn2").await;
    assert_eq!(
        (ids(&v, "devices"), &v["next"]),
        (vec!["scn1".to_owned()], &Value::Null)
    );

    // Another team's patient: refused and audited; bad filters: 400 in words.
    let (s, v) = nina
        .call("GET", "/api/v1/devices?patient_id=ps1", None)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    for (q, why) in [
        ("?status=broken", "status"),
        ("?battery_below=0", "battery_below"),
        ("?battery_below=lots", "battery_below"),
        ("?profile=toaster", "profile"),
        ("?limit=0", "limit"),
        ("?patient_id=a%20b", ""),
        ("?colour=red", "colour"),
    ] {
        let (s, v) = nina.call("GET", &format!("/api/v1/devices{q}"), None).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{q}: {v}");
        assert!(v["error"].as_str().unwrap().contains(why), "{q}: {v}");
    }
    let (_, v) = g.client.get("/api/v1/audit?user=nina&limit=1000").await;
    let text = v.to_string();
    assert!(text.contains("device.list"), "{text}");
    assert!(text.contains("access.refused"), "{text}");
    g.stop().await;
}

#[tokio::test]
async fn a_patients_demographics_and_mrn_are_kept_and_a_taken_mrn_is_a_conflict() {
    let g = Gateway::start().await;
    let (s, v) = g
        .client
        .post(
            "/api/v1/patients",
            json!({"id": "p1", "name": "Ada Lovelace", "mrn": "MRN-1", "birth_date": "1950-04-23",
                   "gender": "female", "phone": "+44 20 7946 0000", "email": "ada@example.org",
                   "address": "12 St James's Square, London", "contact_preference": "email"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(
        (&v["mrn"], &v["gender"], &v["email"], &v["status"]),
        (
            &json!("MRN-1"),
            &json!("female"),
            &json!("ada@example.org"),
            &json!("active")
        )
    );
    let (s, v) = g
        .client
        .post(
            "/api/v1/patients",
            json!({"id": "p2", "name": "Bo", "mrn": "MRN-1"}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["error"], "another patient with this mrn already exists");
    g.client.patient("p3").await;
    let (s, v) = g
        .client
        .patch("/api/v1/patients/p3", json!({"mrn": "MRN-1"}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    let (s, v) = g
        .client
        .patch(
            "/api/v1/patients/p3",
            json!({"email": "not an address", "phone": "555"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["error"].as_str().unwrap().starts_with("email"), "{v}");
    g.stop().await;
}
