//! Billing evidence end to end (docs/billing.md): readings published by `mosquitto_pub` with
//! the device's timestamps on 17 days of the patient's zone, a device set-up and 45 minutes of
//! the care team's time with one interactive call, then the month's statement lists 99454,
//! 99453, 99457 and 99458 × 1 with their evidence; readings typed into the patient app do not
//! count; the biller's CSV opens with Python's `csv`; another team sees nothing.
//! (Runs on SQLite, and on PostgreSQL in `./scripts/test`'s PostgreSQL block.)

use reqwest::StatusCode;
use serde_json::{Value, json};
use time::{Date, Duration, OffsetDateTime};

use crate::support::{Gateway, TOKEN, eventually, publish_readings, run};

const WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// The last complete calendar month (UTC) and a 30-day period ending on its last day: the
/// month, its first day, and the period's first day.
fn last_month() -> (String, Date, Date) {
    let today = OffsetDateTime::now_utc().date();
    let last = today.replace_day(1).unwrap() - Duration::days(1);
    let first = last.replace_day(1).unwrap();
    let month = format!("{:04}-{:02}", last.year(), u8::from(last.month()));
    (month, first, last - Duration::days(29))
}

async fn csv_of(base: &str, path: &str, token: &str) -> (StatusCode, String, String) {
    let resp = reqwest::Client::new()
        .get(format!("{base}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, ct, resp.text().await.unwrap())
}

#[tokio::test]
async fn a_months_device_days_and_minutes_support_their_codes_with_the_evidence() {
    let g = Gateway::start().await;
    let api = &g.client;
    let (month, first, start) = last_month();
    for team in ["north", "south"] {
        let (s, v) = api
            .post("/api/v1/teams", json!({"id": team, "name": team}))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    let (s, v) = api
        .post(
            "/api/v1/patients",
            json!({"id": "p-bill", "name": "Ruth Example", "mrn": "MRN-77", "care_team": "north",
                   "timezone": "America/Chicago"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = api
        .post(
            "/api/v1/patients",
            json!({"id": "p-tz", "name": "Zone", "timezone": "Mars/Olympus"}),
        )
        .await;
    assert_eq!(
        s,
        StatusCode::BAD_REQUEST,
        "an unknown zone is refused: {v}"
    );
    assert!(v.to_string().contains("IANA"), "{v}");
    let (s, v) = api
        .call(
            "PUT",
            "/api/v1/patients/p-bill/enrollment",
            Some(
                json!({"program": "hypertension", "start": start.to_string(),
                "practitioner": "Dr Okafor", "diagnoses": ["I10"],
                "consent": {"method": "verbal", "by": "nina", "at": format!("{start}T09:00:00Z")}}),
            ),
            Some(TOKEN),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let cuff = api.device("cuff-bill", "p-bill", "bp-cuff").await;
    let app = api.device("app-bill", "p-bill", "patient-app").await;

    // The cuff: 16 days at 14:00 UTC (two readings on the third), and one at 23:30 in Chicago
    // on the seventeenth day, which is the next day in UTC.
    let at = |d: Date, hh: u8, mm: u8| format!("{d}T{hh:02}:{mm:02}:00Z");
    let mut readings: Vec<Value> = (0..16)
        .map(|i| json!({"metric": "bp_systolic", "value": 128, "time": at(start + Duration::days(i), 14, 0)}))
        .collect();
    readings.push(json!({"metric": "bp_systolic", "value": 131, "time": at(start + Duration::days(2), 20, 0)}));
    let day17 = start + Duration::days(16);
    readings.push(json!({"metric": "bp_systolic", "value": 126,
        "time": at(day17 + Duration::days(1), 5, 30)}));
    publish_readings(g.mqtt, "cuff-bill", &cuff, &Value::Array(readings)).await;
    // Typed into the patient app on three other days: kept, never a device day.
    let typed: Vec<Value> = (20..23)
        .map(|i| json!({"metric": "bp_systolic", "value": 140, "time": at(start + Duration::days(i), 15, 0)}))
        .collect();
    publish_readings(g.mqtt, "app-bill", &app, &Value::Array(typed)).await;
    eventually(WAIT, "the readings stored", || async move {
        let (_, v) = api
            .get(&format!(
                "/api/v1/patients/p-bill/observations?from={start}T00:00:00Z&limit=100"
            ))
            .await;
        (v["observations"].as_array().map_or(0, Vec::len) == 21).then_some(())
    })
    .await;

    // The set-up, and 45 minutes in the month with one interactive call.
    let (s, v) = api
        .post(
            "/api/v1/patients/p-bill/setups",
            json!({"device_id": "cuff-bill", "date": start.to_string(), "note": "taught cuff placement"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let setup_id = v["id"].as_str().unwrap().to_owned();
    let (s, v) = api
        .post(
            "/api/v1/patients/p-bill/setups",
            json!({"device_id": "someone-elses", "date": start.to_string()}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let mut entry_ids = Vec::new();
    for (day, minutes, activity, interactive) in [
        (first + Duration::days(1), 20, "review", false),
        (first + Duration::days(5), 15, "call", true),
        (first + Duration::days(9), 10, "coordination", false),
    ] {
        let (s, v) = api
            .post(
                "/api/v1/patients/p-bill/time",
                json!({"date": day.to_string(), "minutes": minutes, "activity": activity,
                       "interactive": interactive}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        entry_ids.push(v["id"].as_str().unwrap().to_owned());
    }

    let (s, b) = api
        .get(&format!("/api/v1/patients/p-bill/billing?month={month}"))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["patient_id"], "p-bill");
    assert_eq!(b["month"], month.as_str());
    assert_eq!(b["timezone"], "America/Chicago");
    assert_eq!(b["minutes"], 45);
    assert_eq!(b["interactive"], true);
    let period = &b["periods"][0];
    assert_eq!(period["start"], start.to_string());
    assert_eq!(period["end"], (start + Duration::days(29)).to_string());
    assert_eq!(period["device_days"], 17, "{b:#}");
    let days: Vec<&str> = period["days"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert!(
        days.contains(&day17.to_string().as_str()),
        "23:30 in Chicago is that day: {days:?}"
    );
    assert!(!days.contains(&(day17 + Duration::days(1)).to_string().as_str()));
    let codes: Vec<(String, u64)> = b["codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["code"].as_str().unwrap().to_owned(),
                c["units"].as_u64().unwrap(),
            )
        })
        .collect();
    let want: Vec<(String, u64)> = [("99454", 1), ("99453", 1), ("99457", 1), ("99458", 1)]
        .iter()
        .map(|(c, u)| ((*c).to_owned(), *u))
        .collect();
    assert_eq!(codes, want, "{b:#}");
    let code = |c: &str| {
        b["codes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["code"] == c)
            .unwrap()
            .clone()
    };
    let device_days = code("99454")["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "device_day")
        .count();
    assert_eq!(device_days, 17);
    assert_eq!(code("99454")["practitioner"], "Dr Okafor");
    assert_eq!(code("99453")["evidence"][0]["id"], setup_id.as_str());
    let management = code("99457");
    let evidence_ids: Vec<&str> = management["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["id"].as_str())
        .collect();
    assert_eq!(
        evidence_ids,
        entry_ids.iter().map(String::as_str).collect::<Vec<_>>()
    );

    // The clinic's CSV: one row per patient and code, as a spreadsheet reads it.
    let base = format!("http://{}", g.http);
    let (s, ct, text) = csv_of(
        &base,
        &format!("/api/v1/billing?month={month}&format=csv"),
        TOKEN,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{text}");
    assert!(ct.starts_with("text/csv"), "{ct}");
    let parsed = run(
        "python3",
        &[
            "-c",
            "import csv, json, sys; print(json.dumps(list(csv.DictReader(sys.stdin))))",
        ],
        Some(text.as_bytes()),
    )
    .await;
    assert!(parsed.ok, "{}", parsed.stderr);
    let rows: Vec<Value> = serde_json::from_str(&parsed.stdout).unwrap();
    assert_eq!(rows.len(), 4, "{rows:#?}");
    for (row, (c, u)) in rows.iter().zip(&want) {
        assert_eq!(row["patient_id"], "p-bill");
        assert_eq!(row["patient_name"], "Ruth Example");
        assert_eq!(row["mrn"], "MRN-77");
        assert_eq!(row["code"], c.as_str());
        assert_eq!(row["units"], u.to_string());
        assert_eq!(row["month"], month.as_str());
    }
    assert!(
        rows[0]["evidence"]
            .as_str()
            .unwrap()
            .contains("17 device days")
    );

    // Refused with reasons.
    for (path, why) in [
        ("/api/v1/billing", "month is needed"),
        ("/api/v1/billing?month=2026-13", "YYYY-MM"),
        (
            &format!("/api/v1/billing?month={month}&format=xls") as &str,
            "json or csv",
        ),
        (
            &format!("/api/v1/billing?month={month}&program=asthma") as &str,
            "hypertension",
        ),
    ] {
        let (s, v) = api.get(path).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{path}: {v}");
        assert!(v.to_string().contains(why), "{path}: {v}");
    }

    // Audited; another team's clinician gets nothing of this patient's billing.
    let (_, audit) = api.get("/api/v1/audit?patient_id=p-bill").await;
    let text = audit.to_string();
    for action in ["billing.read", "setup.create"] {
        assert!(text.contains(action), "{action}: {audit}");
    }
    let south = api.clinician("sam-south", "south").await;
    let (s, v) = api
        .call(
            "GET",
            &format!("/api/v1/patients/p-bill/billing?month={month}"),
            None,
            Some(&south),
        )
        .await;
    assert!(!s.is_success() && v.get("codes").is_none(), "{s} {v}");
    let (s, v) = api
        .call(
            "GET",
            &format!("/api/v1/billing?month={month}"),
            None,
            Some(&south),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["patients"], json!([]), "{v}");
    let (s, _) = api
        .call("GET", "/api/v1/patients/p-bill/setups", None, Some(&south))
        .await;
    assert!(!s.is_success(), "{s}");
    let north = api.clinician("nina-north", "north").await;
    let (s, v) = api
        .call(
            "GET",
            &format!("/api/v1/billing?month={month}"),
            None,
            Some(&north),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["patients"][0]["patient_id"], "p-bill", "{v}");
}
