//! On-call cover through the API (docs/oncall.md): an admin sets a care team's weekly
//! rota in the team's zone and a shift for a date; the team's clinicians read who is on call
//! at a moment (rota, shift or fallback, with the gap in words); a rota naming someone who is
//! not a clinician of the team is refused with the reason; another team's clinician reads
//! nothing; every change is audited.
//! (Runs on SQLite, and on PostgreSQL in `./scripts/test`'s PostgreSQL block.)

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{Gateway, TOKEN};

fn on_call(v: &Value) -> Vec<(String, u64, String)> {
    v["on_call"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["user"].as_str().unwrap().to_owned(),
                a["level"].as_u64().unwrap(),
                a["source"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn who(pairs: &[(&str, u64, &str)]) -> Vec<(String, u64, String)> {
    pairs
        .iter()
        .map(|(u, l, s)| ((*u).to_owned(), *l, (*s).to_owned()))
        .collect()
}

#[tokio::test]
async fn an_admin_sets_the_rota_and_a_shift_and_the_team_reads_who_is_on_call() {
    let g = Gateway::start().await;
    let api = &g.client;
    for team in ["north", "south"] {
        let (s, v) = api
            .post("/api/v1/teams", json!({"id": team, "name": team}))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    let nina = api.clinician("nina", "north").await;
    let _omar = api.clinician("omar", "north").await;
    let sven = api.clinician("sven", "south").await;

    // Nothing set: the team's clinicians are the fallback, and the gap is said.
    let (s, v) = api
        .call("GET", "/api/v1/teams/north/on-call", None, Some(&nina))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        on_call(&v),
        who(&[("nina", 1, "fallback"), ("omar", 1, "fallback")])
    );
    assert!(
        v["gap"].as_str().unwrap().contains("nobody is on call"),
        "{v}"
    );

    // Nina days, Omar nights, Chicago time.
    let rota = json!({"timezone": "America/Chicago", "fallback": "omar", "weekly": [
        {"days": ["mon","tue","wed","thu","fri","sat","sun"], "start": "08:00", "end": "20:00", "user": "nina"},
        {"days": ["mon","tue","wed","thu","fri","sat","sun"], "start": "20:00", "end": "08:00", "user": "omar"}]});
    let (s, v) = api
        .call(
            "PUT",
            "/api/v1/teams/north/rota",
            Some(rota.clone()),
            Some(&nina),
        )
        .await;
    assert_eq!(
        s,
        StatusCode::FORBIDDEN,
        "a clinician does not set cover: {v}"
    );
    let (s, v) = api
        .call("PUT", "/api/v1/teams/north/rota", Some(rota), Some(TOKEN))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["rota"]["timezone"], "America/Chicago");

    // Wednesday 2026-12-02 19:59 and 20:00 in Chicago.
    let at = |t: &str| format!("/api/v1/teams/north/on-call?at={}", t.replace('+', "%2B"));
    let (_, v) = api
        .call("GET", &at("2026-12-02T19:59:00-06:00"), None, Some(&nina))
        .await;
    assert_eq!(on_call(&v), who(&[("nina", 1, "rota")]), "{v}");
    assert_eq!(v["on_call"][0]["until"], "2026-12-03T02:00:00Z");
    assert_eq!(v["gap"], Value::Null);
    let (_, v) = api
        .call("GET", &at("2026-12-02T20:00:00-06:00"), None, Some(&nina))
        .await;
    assert_eq!(on_call(&v), who(&[("omar", 1, "rota")]), "{v}");

    // Christmas Eve night: Nina takes Omar's night (the contract's shifts).
    let shifts = json!({"shifts": [{"user": "nina", "start": "2026-12-24T20:00:00-06:00",
                                    "end": "2026-12-25T08:00:00-06:00"}]});
    let (s, v) = api
        .call(
            "PUT",
            "/api/v1/teams/north/on-call",
            Some(shifts),
            Some(TOKEN),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, v) = api
        .call("GET", &at("2026-12-24T23:00:00-06:00"), None, Some(&nina))
        .await;
    assert_eq!(on_call(&v), who(&[("nina", 1, "shift")]), "{v}");
    assert_eq!(v["rota"]["weekly"].as_array().unwrap().len(), 2, "{v}");

    // The escalation policy: the default until one is set.
    let (_, v) = api
        .call("GET", "/api/v1/teams/north/on-call", None, Some(&nina))
        .await;
    assert_eq!(v["policy_is_default"], true, "{v}");
    assert_eq!(v["policy"]["high"][1]["after_min"], 15, "{v}");
    let policy = json!({"high": [{"after_min": 0, "level": 1}, {"after_min": 10, "level": 2}],
                        "medium": [{"after_min": 0, "level": 1}]});
    let (s, v) = api
        .call(
            "PUT",
            "/api/v1/teams/north/policy",
            Some(policy),
            Some(TOKEN),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (
            v["policy_is_default"].clone(),
            v["policy"]["high"][1]["after_min"].clone()
        ),
        (json!(false), json!(10)),
        "{v}"
    );
    let (s, v) = api
        .call(
            "PUT",
            "/api/v1/teams/north/policy",
            Some(json!({"high": [{"after_min": 5, "level": 1}, {"after_min": 5, "level": 2}]})),
            Some(TOKEN),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["error"].as_str().unwrap().contains("high step 2"), "{v}");

    // Refusals, with reasons.
    let (s, v) = api
        .call(
            "PUT",
            "/api/v1/teams/north/on-call",
            Some(
                json!({"shifts": [{"user": "sven", "start": "2026-12-24T20:00:00Z",
                                    "end": "2026-12-25T08:00:00Z"}]}),
            ),
            Some(TOKEN),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("not a clinician of care team north"),
        "{v}"
    );
    let (s, v) = api
        .call(
            "PUT",
            "/api/v1/teams/north/rota",
            Some(json!({"timezone": "America/Chicago", "weekly": [
                {"days": ["mon"], "start": "8:00", "end": "20:00", "user": "nina"}]})),
            Some(TOKEN),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["error"].as_str().unwrap().contains("slot 1"), "{v}");
    let (s, _) = api
        .call(
            "PUT",
            "/api/v1/teams/nowhere/on-call",
            Some(json!({"shifts": []})),
            Some(TOKEN),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, v) = api.call("GET", &at("yesterday"), None, Some(&nina)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");

    // Another team's clinician reads nothing of it.
    let (s, v) = api
        .call("GET", "/api/v1/teams/north/on-call", None, Some(&sven))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert!(!v.to_string().contains("omar"), "{v}");

    // Each change is audited.
    let (_, v) = api.get("/api/v1/audit?limit=1000").await;
    let actions: Vec<&str> = v["audit"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["action"].as_str())
        .filter(|a| a.starts_with("rota.") || a.starts_with("oncall.") || a.starts_with("policy."))
        .collect();
    assert_eq!(
        actions,
        ["rota.update", "oncall.update", "policy.update"],
        "{v}"
    );
}

#[tokio::test]
async fn users_keep_their_own_contact_details_and_admins_anyones() {
    let g = Gateway::start().await;
    let api = &g.client;
    let nina = api.clinician("nina", "default").await;
    let _omar = api.clinician("omar", "default").await;

    let (s, v) = api
        .call(
            "PATCH",
            "/api/v1/users/nina",
            Some(
                json!({"email": "nina@clinic.example", "phone": "+13125550123",
                        "quiet": {"from": "22:00", "to": "07:00"}, "timezone": "America/Chicago"}),
            ),
            Some(&nina),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["contact"]["phone"], "+13125550123");
    // One field at a time; null clears the quiet hours.
    let (s, v) = api
        .call(
            "PATCH",
            "/api/v1/users/NINA",
            Some(json!({"quiet": null})),
            Some(&nina),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["contact"]["quiet"], Value::Null, "{v}");
    assert_eq!(v["contact"]["email"], "nina@clinic.example", "{v}");

    // Not someone else's, and not her own role.
    let (s, v) = api
        .call(
            "PATCH",
            "/api/v1/users/omar",
            Some(json!({"phone": "+13125550199"})),
            Some(&nina),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let (s, v) = api
        .call(
            "PATCH",
            "/api/v1/users/nina",
            Some(json!({"phone": "+13125550199", "role": "admin"})),
            Some(&nina),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    // Refused with the reason.
    let (s, v) = api
        .call(
            "PATCH",
            "/api/v1/users/nina",
            Some(json!({"phone": "312-555-0123"})),
            Some(&nina),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["error"].as_str().unwrap().contains("E.164"), "{v}");

    // An admin sets anyone's and sees them listed.
    let (s, v) = api
        .call(
            "PATCH",
            "/api/v1/users/omar",
            Some(json!({"email": "omar@clinic.example"})),
            Some(TOKEN),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, v) = api.get("/api/v1/users").await;
    let users = v["users"].as_array().unwrap();
    let find = |n: &str| users.iter().find(|u| u["name"] == n).unwrap().clone();
    assert_eq!(find("nina")["contact"]["phone"], "+13125550123");
    assert_eq!(find("omar")["contact"]["email"], "omar@clinic.example");
    let (_, v) = api.get("/api/v1/audit?limit=1000").await;
    let contact_lines = v["audit"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["action"] == "user.contact")
        .count();
    assert_eq!(contact_lines, 3, "{v}");
}
