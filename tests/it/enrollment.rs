//! The care programme through the API: programmes, and a patient's enrollment put, changed and
//! read back — audited, on the timeline, refused with reasons, and kept to the patient's team.
//! (Runs on SQLite, and on PostgreSQL in `./scripts/test`'s PostgreSQL block.)

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{Api, Gateway};

const PASSWORD: &str = "a-long-enough-password-for-tests";

fn enrollment(start: &str, end: Option<&str>) -> Value {
    json!({"program": "heart-failure", "start": start, "end": end, "practitioner": "Dr Rao",
        "diagnoses": ["I50.9", "i10"],
        "consent": {"method": "written", "by": "nina", "at": "2026-11-02T09:30:00Z"}})
}

/// A write token acting as a clinician of `team` (made with the bootstrap token).
async fn clinician_of(api: &Api, name: &str, team: &str) -> String {
    let (s, v) = api
        .post(
            "/api/v1/users",
            json!({"name": name, "password": PASSWORD, "role": "clinician", "teams": [team]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = api
        .post(
            "/api/v1/tokens",
            json!({"label": format!("{name} test"), "scope": "write", "expires_days": 1, "user": name}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    v["token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_patient_is_enrolled_changed_and_read_back_audited_and_on_the_timeline() {
    let g = Gateway::start().await;
    let api = &g.client;
    for team in ["north", "south"] {
        let (s, v) = api
            .post("/api/v1/teams", json!({"id": team, "name": team}))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    let (s, v) = api
        .post(
            "/api/v1/patients",
            json!({"id": "p-enr", "name": "Patient", "care_team": "north"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let path = "/api/v1/patients/p-enr/enrollment";

    let (s, v) = api.get(path).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "not enrolled yet: {v}");
    let (s, v) = api
        .call(
            "PUT",
            path,
            Some(enrollment("2026-11-02", None)),
            Some(crate::support::TOKEN),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["program"], "heart-failure");
    assert_eq!(v["diagnoses"], json!(["I50.9", "I10"]));
    assert_eq!(v["consent"]["method"], "written");
    assert_eq!(v["start"], "2026-11-02");

    // Ended: the same episode (its start), changed.
    let (s, v) = api
        .call(
            "PUT",
            path,
            Some(enrollment("2026-11-02", Some("2026-11-30"))),
            Some(crate::support::TOKEN),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = api.get(path).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["end"], "2026-11-30");
    assert_eq!(v["episodes"].as_array().unwrap().len(), 1, "{v}");

    // Refused, with the reason.
    for (body, status, why) in [
        (
            {
                let mut b = enrollment("2026-12-01", None);
                b["program"] = json!("asthma");
                b
            },
            StatusCode::BAD_REQUEST,
            "there are: copd, diabetes, heart-failure, hypertension",
        ),
        (
            {
                let mut b = enrollment("2026-12-01", None);
                b["diagnoses"] = json!(["heart failure"]);
                b
            },
            StatusCode::BAD_REQUEST,
            "ICD-10",
        ),
        (
            enrollment("2026-11-15", None),
            StatusCode::CONFLICT,
            "overlapping",
        ),
        (
            {
                let mut b = enrollment("2026-12-01", None);
                b["consent"]["method"] = json!("nodded");
                b
            },
            StatusCode::BAD_REQUEST,
            "verbal, written, electronic",
        ),
        (json!({"program": "copd"}), StatusCode::BAD_REQUEST, "start"),
    ] {
        let (s, v) = api
            .call("PUT", path, Some(body), Some(crate::support::TOKEN))
            .await;
        assert_eq!(s, status, "{v}");
        assert!(v.to_string().contains(why), "{why}: {v}");
    }
    let (s, _) = api
        .call(
            "PUT",
            "/api/v1/patients/nobody/enrollment",
            Some(enrollment("2026-11-02", None)),
            Some(crate::support::TOKEN),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // On the timeline (twice: put, then ended) and in the audit trail, reads included.
    let (_, record) = api.get("/api/v1/patients/p-enr/record").await;
    let entries = record["timeline"]
        .as_array()
        .or_else(|| record["entries"].as_array())
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        entries.iter().filter(|e| e["kind"] == "enrollment").count(),
        2,
        "{record}"
    );
    let (_, audit) = api.get("/api/v1/audit?patient_id=p-enr").await;
    let actions: Vec<String> = audit["audit"]
        .as_array()
        .or_else(|| audit["entries"].as_array())
        .map(|a| {
            a.iter()
                .filter_map(|e| e["action"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        actions.iter().filter(|a| *a == "enrollment.update").count(),
        2,
        "{audit}"
    );
    assert!(actions.iter().any(|a| a == "enrollment.read"), "{audit}");

    // A clinician of another team gets nothing; one of the patient's team may read and change.
    let south = clinician_of(api, "sam-south", "south").await;
    let (s, v) = api.call("GET", path, None, Some(&south)).await;
    assert!(!s.is_success() && v.get("program").is_none(), "{s} {v}");
    let (s, _) = api
        .call(
            "PUT",
            path,
            Some(enrollment("2027-01-01", None)),
            Some(&south),
        )
        .await;
    assert!(!s.is_success(), "{s}");
    let north = clinician_of(api, "nina-north", "north").await;
    let (s, v) = api.call("GET", path, None, Some(&north)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = api
        .call(
            "PUT",
            path,
            Some(enrollment("2027-01-01", None)),
            Some(&north),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["updated_by"], "nina-north");

    // Programmes: everyone lists them; only an admin adds one, once.
    let (s, v) = api
        .call("GET", "/api/v1/programs", None, Some(&north))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["programs"].as_array().unwrap().len(), 4, "{v}");
    let ckd = json!({"id": "ckd", "name": "Chronic kidney disease"});
    let (s, _) = api
        .call("POST", "/api/v1/programs", Some(ckd.clone()), Some(&north))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, v) = api.post("/api/v1/programs", ckd.clone()).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, _) = api.post("/api/v1/programs", ckd).await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, v) = api
        .post("/api/v1/programs", json!({"id": "Bad Id", "name": "x"}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    g.stop().await;
}
