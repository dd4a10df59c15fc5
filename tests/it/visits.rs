//! Video visits' links and record: `POST /visits` gives two signed, expiring join links; a link
//! opens its own visit in its own role and nothing else; expired, tampered and other-visit
//! links are refused; the visit's end lands on the patient's timeline.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{Gateway, TOKEN};
use vigil::video::token::{Claims, JoinRole, TokenKey};

async fn join(g: &Gateway, visit: &str, token: &str) -> (StatusCode, Value) {
    let r = reqwest::Client::new()
        .get(format!("http://{}/api/v1/visits/{visit}/join", g.http))
        .header("authorization", format!("Visit {token}"))
        .send()
        .await
        .unwrap();
    let s = r.status();
    (s, r.json().await.unwrap_or(Value::Null))
}

/// The token in a join link (after `#`), and the visit id in its path.
fn parts(url: &str) -> (String, String) {
    let (path, token) = url.split_once('#').expect("the token is in the fragment");
    let visit = path.rsplit('/').next().unwrap().to_owned();
    (visit, token.to_owned())
}

#[tokio::test]
async fn join_links_open_their_own_visit_and_nothing_else() {
    let g = Gateway::start().await;
    let api = &g.client;
    for (id, team) in [("pv1", "north"), ("pv2", "south")] {
        let (s, v) = api
            .post(
                "/api/v1/patients",
                json!({"id": id, "name": format!("Patient {id}"), "care_team": team}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    let (s, v) = api
        .post("/api/v1/visits", json!({"patient_id": "pv1"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let visit = v["id"].as_str().unwrap().to_owned();
    let patient_url = v["patient_join_url"].as_str().unwrap();
    let clinician_url = v["clinician_join_url"].as_str().unwrap();
    assert!(
        patient_url.starts_with(&format!("http://{}/visit/{visit}#", g.http)),
        "{patient_url}"
    );
    let (pv, pt) = parts(patient_url);
    let (cv, ct) = parts(clinician_url);
    assert_eq!((pv.as_str(), cv.as_str()), (visit.as_str(), visit.as_str()));
    assert_ne!(pt, ct, "one token per role");

    let (s, v) = join(&g, &visit, &pt).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["role"].as_str(), v["status"].as_str()),
        (Some("patient"), Some("waiting"))
    );
    let (s, v) = join(&g, &visit, &ct).await;
    assert_eq!((s, v["role"].as_str()), (StatusCode::OK, Some("clinician")));

    // A second visit: the first visit's links do not open it.
    let (_, v2) = api
        .post("/api/v1/visits", json!({"patient_id": "pv2"}))
        .await;
    let other = v2["id"].as_str().unwrap();
    let (s, v) = join(&g, other, &pt).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    assert_eq!(v["error"], "the link is for another visit");

    // One character changed: refused.
    let mut tampered = pt.clone().into_bytes();
    let i = tampered.len() / 2;
    tampered[i] = if tampered[i] == b'x' { b'y' } else { b'x' };
    let (s, v) = join(&g, &visit, &String::from_utf8(tampered).unwrap()).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");

    // Expired: a link signed with this Vigil's own key, but an hour past its expiry.
    let key = TokenKey::load_or_create(&g.dir.path().join("visit-signing.key")).unwrap();
    let expired = key.sign(&Claims {
        v: visit.clone(),
        r: JoinRole::Patient,
        exp: vigil::domain::now_ms() / 1000 - 3600,
    });
    let (s, v) = join(&g, &visit, &expired).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    assert_eq!(
        v["error"],
        "the link has expired; ask the clinic for a new one"
    );

    // No link, or a session-less bearer of nothing: 401; the join route opens nothing else.
    let r = reqwest::Client::new()
        .get(format!("http://{}/api/v1/visits/{visit}", g.http))
        .header("authorization", format!("Visit {pt}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "a link is not a session"
    );

    // Ending the visit: recorded on the timeline; the links stop working.
    let (s, v) = api
        .call(
            "POST",
            &format!("/api/v1/visits/{visit}/end"),
            Some(json!({})),
            Some(TOKEN),
        )
        .await;
    assert_eq!(
        (s, v["status"].as_str()),
        (StatusCode::OK, Some("ended")),
        "{v}"
    );
    let (s, _) = join(&g, &visit, &pt).await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (_, rec) = api.get("/api/v1/patients/pv1/record").await;
    let ended = rec["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "visit.ended")
        .cloned()
        .expect("visit.ended on the timeline");
    assert_eq!(ended["visit_id"], visit.as_str());

    // Using a link is audited, as the link's role.
    let (_, a) = api.get("/api/v1/audit?patient_id=pv1").await;
    assert!(
        a["audit"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["action"] == "visit.join_link" && x["actor"] == "visit-link:patient"),
        "{a}"
    );
    // No patient, or a bad body: clear 4xx.
    let (s, _) = api
        .post("/api/v1/visits", json!({"patient_id": "nobody"}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = api.post("/api/v1/visits", json!({"patient": "pv1"})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    g.stop().await;
}
