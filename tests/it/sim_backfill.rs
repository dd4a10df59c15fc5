//! `vigil-sim backfill` against a real gateway: the simulator's binary provisions a fleet, then
//! fills in a month of its past through the public API and MQTT, and the gateway's own pages
//! show it — every patient enrolled and on the worklist, and a billing month with adherent
//! patients earning the 16-day device code while others do not.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::support::{Gateway, TOKEN, eventually, run};

const PATIENTS: usize = 8;

/// The codes of each patient's statement for `month`, by patient id.
async fn codes_by_patient(gw: &Gateway, month: &str) -> Vec<(String, Vec<String>, Value)> {
    let (s, v) = gw
        .client
        .get(&format!("/api/v1/billing?month={month}"))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["patients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|st| {
            let codes = st["codes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["code"].as_str().unwrap().to_owned())
                .collect();
            (
                st["patient_id"].as_str().unwrap().to_owned(),
                codes,
                st.clone(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfilled_month_shows_on_the_worklist_and_in_billing_with_a_mix() {
    let sim = PathBuf::from(env!("CARGO_BIN_EXE_vigil")).with_file_name("vigil-sim");
    assert!(
        sim.exists(),
        "{} missing: build it (cargo build -p vigil-sim; ./scripts/test builds the workspace)",
        sim.display()
    );
    let sim = sim.to_str().unwrap();
    let gw = Gateway::start().await;
    let work = tempfile::tempdir().unwrap();
    let creds = work.path().join("fleet.json");
    let creds = creds.to_str().unwrap();
    let url = format!("http://{}", gw.http);
    let out = run(
        sim,
        &[
            "provision",
            "--url",
            &url,
            "--token",
            TOKEN,
            "--patients",
            &PATIENTS.to_string(),
            "--prefix",
            "bf",
            "--out",
            creds,
        ],
        None,
    )
    .await;
    assert!(out.ok, "provision: {}", out.stderr);
    let mqtt = format!("mqtt://{}", gw.mqtt);
    let backfill = [
        "backfill",
        "--credentials",
        creds,
        "--mqtt",
        &mqtt,
        "--token",
        TOKEN,
        "--days",
        "30",
        "--seed",
        "11",
        "--timezone",
        "America/Chicago",
    ];
    let out = run(sim, &backfill, None).await;
    assert!(out.ok, "backfill: {}", out.stderr);
    let summary: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(summary["patients"], PATIENTS);
    assert_eq!(
        summary["personas"],
        serde_json::json!({"adherent": 4, "dropout": 2, "sporadic": 1, "barely": 1}),
        "the documented mix for eight patients"
    );
    assert!(summary["readings"].as_u64().unwrap() > 1000, "{summary}");
    let start = summary["start"].as_str().unwrap().to_owned();
    let persona_of = |id: &str| {
        summary["by_patient"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == id)
            .map(|p| p["persona"].as_str().unwrap().to_owned())
            .unwrap()
    };
    let fleet: Value = serde_json::from_slice(&std::fs::read(creds).unwrap()).unwrap();
    let ids: Vec<String> = fleet["patients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), PATIENTS);

    // Every patient is enrolled from the window's first day, in their zone, with set-ups.
    for id in &ids {
        let (s, e) = gw
            .client
            .get(&format!("/api/v1/patients/{id}/enrollment"))
            .await;
        assert_eq!(s, StatusCode::OK, "{id}: {e}");
        assert_eq!(
            (e["program"].as_str(), e["start"].as_str()),
            (Some("hypertension"), Some(start.as_str())),
            "{id}: {e}"
        );
        let (_, p) = gw.client.get(&format!("/api/v1/patients/{id}")).await;
        assert_eq!(p["timezone"], "America/Chicago", "{id}: {p}");
        let (_, su) = gw
            .client
            .get(&format!("/api/v1/patients/{id}/setups"))
            .await;
        assert!(!su["setups"].as_array().unwrap().is_empty(), "{id}: {su}");
    }

    // The month in which the first 30-day device period ends (yesterday, UTC) bills it.
    let first: jiff::civil::Date = start.parse().unwrap();
    let end = first.checked_add(jiff::Span::new().days(29)).unwrap();
    let month = end.strftime("%Y-%m").to_string();
    let statements = eventually(
        Duration::from_secs(20),
        "every patient's statement, adherent ones with 99454",
        || {
            let (gw, month, ids) = (&gw, &month, &ids);
            async move {
                let st = codes_by_patient(gw, month).await;
                let adherent_billed =
                    ids.iter()
                        .filter(|id| persona_of(id) == "adherent")
                        .all(|id| {
                            st.iter().any(|(p, codes, _)| {
                                p == id.as_str() && codes.iter().any(|c| c == "99454")
                            })
                        });
                (st.len() == PATIENTS && adherent_billed).then_some(st)
            }
        },
    )
    .await;
    let supplied = |codes: &[String]| codes.iter().any(|c| c == "99454");
    assert!(
        statements.iter().any(|(_, codes, _)| supplied(codes)),
        "someone has 99454"
    );
    assert!(
        statements
            .iter()
            .any(|(_, codes, _)| !supplied(codes) || codes.iter().any(|c| c == "99445")),
        "someone has no device-supply code or 99445: {statements:?}"
    );
    for (id, codes, st) in &statements {
        match persona_of(id).as_str() {
            // At least 16 days of data in the period: the 16-day code.
            "adherent" => assert!(supplied(codes), "{id}: {st}"),
            // No day or one: no device-supply code at all.
            "barely" => assert!(
                !codes.iter().any(|c| c == "99454" || c == "99445"),
                "{id}: {st}"
            ),
            // 2 to 15 days: the 2-day code.
            "sporadic" => assert!(codes.iter().any(|c| c == "99445"), "{id}: {st}"),
            _ => {}
        }
        assert_eq!(st["timezone"], "America/Chicago");
    }

    // The worklist lists every patient.
    let (s, w) = gw.client.get("/api/v1/worklist").await;
    assert_eq!(s, StatusCode::OK, "{w}");
    let listed: Vec<&str> = w["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["patient_id"].as_str().unwrap())
        .collect();
    for id in &ids {
        assert!(listed.contains(&id.as_str()), "{id} not on {listed:?}");
    }

    // Every reading was plausible: none was refused.
    for p in fleet["patients"].as_array().unwrap() {
        for d in p["devices"].as_array().unwrap() {
            let dev = d["id"].as_str().unwrap();
            let dead = gw.client.dead_letters(dev).await;
            assert!(dead.is_empty(), "{dev}: {dead:?}");
        }
    }

    // The same run again, the same day, logs nothing twice (across midnight UTC the window
    // moves, and that is another test's business).
    let out = run(sim, &backfill, None).await;
    assert!(out.ok, "second backfill: {}", out.stderr);
    let again: Value = serde_json::from_str(&out.stdout).unwrap();
    if again["start"] == summary["start"] {
        assert_eq!(
            (again["setups"].as_u64(), again["time_entries"].as_u64()),
            (Some(0), Some(0)),
            "{again}"
        );
        assert_eq!(
            again["already_logged"].as_u64().unwrap(),
            summary["setups"].as_u64().unwrap() + summary["time_entries"].as_u64().unwrap()
        );
    }
    gw.stop().await;
}
