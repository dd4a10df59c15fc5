//! The care programme through the API: programmes, a patient's enrollment put, changed and
//! read back — audited, on the timeline, refused with reasons, and kept to the patient's team —
//! and the care team's time log.
//! (Runs on SQLite, and on PostgreSQL in `./scripts/test`'s PostgreSQL block.)

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::Gateway;

fn enrollment(start: &str, end: Option<&str>) -> Value {
    json!({"program": "heart-failure", "start": start, "end": end, "practitioner": "Dr Rao",
        "diagnoses": ["I50.9", "i10"],
        "consent": {"method": "written", "by": "nina", "at": "2026-11-02T09:30:00Z"}})
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
    let south = api.clinician("sam-south", "south").await;
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
    let north = api.clinician("nina-north", "north").await;
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

#[tokio::test]
async fn time_is_logged_per_patient_listed_by_month_and_kept_to_the_team() {
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
            json!({"id": "p-time", "name": "Patient", "care_team": "north"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let nina = api.clinician("nina-time", "north").await;
    let sam = api.clinician("sam-time", "south").await;
    let path = "/api/v1/patients/p-time/time";
    // Today and yesterday (UTC), so the dates are never in the future nor too old.
    let today = time::OffsetDateTime::now_utc().date();
    let yesterday = today - time::Duration::days(1);
    let mut total = 0;
    for (date, minutes, activity, interactive) in [
        (yesterday, 20, "review", false),
        (today, 15, "call", true),
        (today, 10, "coordination", false),
    ] {
        let (s, v) = api
            .call(
                "POST",
                path,
                Some(
                    json!({"date": date.to_string(), "minutes": minutes, "activity": activity,
                    "interactive": interactive, "note": "checked the week's readings"}),
                ),
                Some(&nina),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        assert_eq!(v["user"], "nina-time", "{v}");
        assert!(v["id"].as_str().unwrap().starts_with("te_"), "{v}");
        total += minutes;
    }
    let (s, v) = api.call("GET", path, None, Some(&nina)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["entries"].as_array().unwrap().len(), 3, "{v}");
    assert_eq!(v["minutes"], total, "{v}");
    assert_eq!(
        v["entries"][0]["date"],
        yesterday.to_string(),
        "by date: {v}"
    );
    let month = format!("{:04}-{:02}", today.year(), u8::from(today.month()));
    let (s, v) = api
        .call("GET", &format!("{path}?month={month}"), None, Some(&nina))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(
        v["entries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["date"].as_str().unwrap().starts_with(&month)),
        "{v}"
    );

    for (body, why) in [
        (
            json!({"date": "2026-02-30", "minutes": 5, "activity": "call", "interactive": true}),
            "not a date",
        ),
        (
            json!({"date": today.to_string(), "minutes": 0, "activity": "call", "interactive": true}),
            "minutes",
        ),
        (
            json!({"date": today.to_string(), "minutes": 5, "activity": "lunch", "interactive": true}),
            "review, call, video, coordination",
        ),
        (
            json!({"date": today.to_string(), "minutes": 5, "activity": "call"}),
            "interactive",
        ),
    ] {
        let (s, v) = api.call("POST", path, Some(body), Some(&nina)).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
        assert!(v.to_string().contains(why), "{why}: {v}");
    }
    let (s, v) = api
        .call("GET", &format!("{path}?month=2026-13"), None, Some(&nina))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");

    // Another team's clinician neither reads nor logs.
    let (s, v) = api.call("GET", path, None, Some(&sam)).await;
    assert!(!s.is_success() && v.get("entries").is_none(), "{s} {v}");
    let (s, _) = api
        .call(
            "POST",
            path,
            Some(json!({"date": today.to_string(), "minutes": 5, "activity": "call", "interactive": true})),
            Some(&sam),
        )
        .await;
    assert!(!s.is_success(), "{s}");
    let (_, v) = api.call("GET", path, None, Some(&nina)).await;
    assert_eq!(
        v["entries"].as_array().unwrap().len(),
        3,
        "nothing added: {v}"
    );

    // The author corrects an entry; a colleague of the same team may not; an admin may delete.
    let (_, v) = api.call("GET", path, None, Some(&nina)).await;
    let first = v["entries"][0]["id"].as_str().unwrap().to_owned();
    let entry_path = format!("{path}/{first}");
    let (s, v) = api
        .call(
            "PATCH",
            &entry_path,
            Some(json!({"minutes": 25, "note": ""})),
            Some(&nina),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["minutes"].as_u64(), v.get("note")),
        (Some(25), None),
        "{v}"
    );
    assert_eq!(v["updated_by"], "nina-time", "{v}");
    assert_eq!(v["user"], "nina-time", "the author stays: {v}");
    let colleague = api.clinician("noor-time", "north").await;
    let (s, v) = api
        .call(
            "PATCH",
            &entry_path,
            Some(json!({"minutes": 90})),
            Some(&colleague),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let (s, v) = api
        .call(
            "PATCH",
            &entry_path,
            Some(json!({"activity": "lunch"})),
            Some(&nina),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, _) = api
        .call("DELETE", &entry_path, None, Some(&colleague))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = api
        .call("DELETE", &entry_path, None, Some(crate::support::TOKEN))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = api
        .call("DELETE", &entry_path, None, Some(crate::support::TOKEN))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "deleted once");
    let (_, v) = api.call("GET", path, None, Some(&nina)).await;
    assert_eq!(v["entries"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(v["minutes"], total - 20, "{v}");

    // Each entry, change, deletion and read is audited.
    let (_, audit) = api.get("/api/v1/audit?patient_id=p-time").await;
    let text = audit.to_string();
    assert_eq!(text.matches("\"time.create\"").count(), 3, "{audit}");
    assert_eq!(text.matches("\"time.update\"").count(), 1, "{audit}");
    assert_eq!(text.matches("\"time.delete\"").count(), 1, "{audit}");
    assert!(text.contains("\"time.read\""), "{audit}");
    g.stop().await;
}

/// The timer: one per user, read back after a "reload" (another request, another client),
/// stopped into a time entry, refused on another team's patient, and stopped by signing out.
#[tokio::test]
async fn a_users_timer_runs_once_survives_a_reload_and_stops_into_a_time_entry() {
    use crate::web::{Browser, PASSWORD as WEB_PASSWORD, clinic};
    let g = Gateway::start().await;
    clinic(&g).await;
    let mut nina = Browser::new(&g);
    let (s, v) = nina.sign_in("nina", WEB_PASSWORD).await;
    assert_eq!(s, StatusCode::OK, "{v}");

    let (s, v) = nina.call("GET", "/api/v1/timer", None).await;
    assert_eq!((s, &v["timer"]), (StatusCode::OK, &Value::Null), "{v}");
    let (s, v) = nina
        .call(
            "POST",
            "/api/v1/patients/pn1/timer",
            Some(json!({"activity": "call"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(
        (v["patient_id"].as_str(), v["user"].as_str()),
        (Some("pn1"), Some("nina"))
    );
    let started_at = v["started_at"].clone();

    // A second browser of hers (a reload) sees the same timer; a second timer is refused.
    let mut again = Browser::new(&g);
    again.sign_in("nina", WEB_PASSWORD).await;
    let (_, v) = again.call("GET", "/api/v1/timer", None).await;
    assert_eq!(v["timer"]["started_at"], started_at, "{v}");
    let (s, v) = again.call("POST", "/api/v1/patients/pn1/timer", None).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(v.to_string().contains("pn1"), "{v}");
    let (s, v) = again.call("POST", "/api/v1/patients/ps1/timer", None).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "another team's patient: {v}");
    let (s, v) = again
        .call(
            "POST",
            "/api/v1/patients/pn1/timer",
            Some(json!({"activity": "gardening"})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");

    // Stopped: a time entry of at least a minute, hers, with what she said.
    let (s, v) = nina
        .call(
            "POST",
            "/api/v1/timer/stop",
            Some(json!({"interactive": true, "note": "reviewed the weights"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["activity"], "call");
    assert_eq!(v["interactive"], true);
    assert!(v["minutes"].as_u64().unwrap() >= 1);
    let entry = v["id"].as_str().unwrap().to_owned();
    let (_, listed) = g.client.get("/api/v1/patients/pn1/time").await;
    assert_eq!(listed["entries"][0]["id"], entry.as_str(), "{listed}");
    let (s, _) = nina.call("POST", "/api/v1/timer/stop", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "nothing runs any more");
    let (_, audit) = g.client.get("/api/v1/audit?patient_id=pn1").await;
    let text = audit.to_string();
    assert!(
        text.contains("timer.start") && text.contains(&entry),
        "{audit}"
    );

    // Signing out stops a running timer and logs it.
    let (s, _) = nina.call("POST", "/api/v1/patients/pn1/timer", None).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = nina.call("DELETE", "/api/v1/session", None).await;
    assert!(s.is_success(), "{s}");
    let (_, v) = again.call("GET", "/api/v1/timer", None).await;
    assert_eq!(v["timer"], Value::Null, "{v}");
    let (_, listed) = g.client.get("/api/v1/patients/pn1/time").await;
    let entries = listed["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{listed}");
    assert!(
        entries
            .iter()
            .any(|e| e["note"] == "timer stopped at sign-out" && e["activity"] == "review"),
        "{listed}"
    );
}

/// A patient with no care plan of their own who is enrolled in the diabetes programme is judged
/// by the programme's plan (docs/alerts.md, "Programme care plans"): a falling glucose still
/// above the default plan's limits opens the programme's `glucose-forecast` alert. An ended
/// enrollment gives the default plan back; a plan of their own comes before the programme's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enrolled_patient_is_judged_by_the_programmes_care_plan() {
    use crate::support::{eventually, publish_readings};
    use std::time::Duration;
    let g = Gateway::start().await;
    let api = &g.client;
    api.patient("p-dm").await;
    let meter = api.device("gm-dm", "p-dm", "glucose-meter").await;
    let plan = |source: &'static str| async move {
        let (s, v) = api.get("/api/v1/patients/p-dm/care-plan").await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["source"], source, "{v}");
        v
    };
    plan("default").await;
    let diabetes = |end: Option<&str>| {
        json!({"program": "diabetes", "start": "2026-11-02", "end": end,
            "consent": {"method": "verbal", "by": "nina", "at": "2026-11-02T09:30:00Z"}})
    };
    let path = "/api/v1/patients/p-dm/enrollment";
    let (s, v) = api
        .call(
            "PUT",
            path,
            Some(diabetes(None)),
            Some(crate::support::TOKEN),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let v = plan("programme").await;
    assert_eq!(v["programme"], "diabetes");
    assert!(
        v["rules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["id"] == "glucose-forecast"),
        "{v}"
    );

    // 130 then 100 mg/dL five minutes apart: falling fast (AR2: below 70 within 15 minutes),
    // not yet low.
    let at =
        |min_ago: i64| vigil::domain::format_rfc3339(vigil::domain::now_ms() - min_ago * 60_000);
    let readings = json!([
        {"metric": "glucose", "value": 130, "time": at(6)},
        {"metric": "glucose", "value": 100, "time": at(1)},
    ]);
    publish_readings(g.mqtt, "gm-dm", &meter, &readings).await;
    let alert = eventually(Duration::from_secs(20), "the forecast alert", || async {
        let (_, v) = api.get("/api/v1/alerts?patient_id=p-dm").await;
        v["alerts"].as_array().and_then(|a| {
            a.iter()
                .find(|x| x["rule_id"] == "glucose-forecast")
                .cloned()
        })
    })
    .await;
    assert_eq!(alert["severity"], "medium", "{alert}");
    let (_, v) = api.get("/api/v1/alerts?patient_id=p-dm").await;
    assert!(
        v["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["rule_id"] == "glucose-forecast"),
        "nothing from the default plan's limits: {v}"
    );

    // Ended: the default plan again. A plan of their own comes first.
    let (s, v) = api
        .call(
            "PUT",
            path,
            Some(diabetes(Some("2026-12-01"))),
            Some(crate::support::TOKEN),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    plan("default").await;
    let (s, v) = api
        .call(
            "PUT",
            path,
            Some(json!({"program": "copd", "start": "2026-12-02",
            "consent": {"method": "verbal", "by": "nina", "at": "2026-12-02T09:30:00Z"}})),
            Some(crate::support::TOKEN),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(plan("programme").await["programme"], "copd");
    let (s, v) = api
        .care_plan(
            "p-dm",
            json!([{"id": "spo2-low", "kind": "threshold", "metric": "spo2", "op": "<",
                    "value": 90, "for_s": 0, "severity": "high"}]),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(plan("own").await["rules"].as_array().unwrap().len(), 1);
    g.stop().await;
}
