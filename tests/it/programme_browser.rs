//! The care programme's dashboard pages in a real browser (headless Chromium driven by
//! playwright-core, `tests/browser/programme.mjs`): the worklist ranks a scenario's patients,
//! moves with the keyboard, acknowledges, updates live and opens a patient; the care timer on
//! the patient's page survives a reload and logs its time; the billing evidence prints a page
//! per patient (PDF through Chromium's print); the population page's charts render.

use std::time::Duration;

use serde_json::json;
use time::OffsetDateTime;

use crate::dashboard::{assert_scenarios, created, require_tools, run_browser_script};
use crate::support::{Gateway, TOKEN, publish_readings};

const CLINICIAN: (&str, &str) = ("nurse-north", "north ward night shift 2");

async fn enrolled(g: &Gateway, id: &str, name: &str, team: &str) -> String {
    created(
        g,
        "/api/v1/patients",
        json!({"id": id, "name": name, "care_team": team}),
    )
    .await;
    let start = OffsetDateTime::now_utc().date() - time::Duration::days(10);
    let (s, v) = g
        .client
        .call(
            "PUT",
            &format!("/api/v1/patients/{id}/enrollment"),
            Some(json!({"program": "hypertension", "start": start.to_string(),
                "consent": {"method": "verbal", "by": "nurse", "at": format!("{start}T09:00:00Z")}})),
            Some(TOKEN),
        )
        .await;
    assert!(s.is_success(), "{v}");
    let (s, v) = g
        .client
        .care_plan(
            id,
            json!([{"id": "sys-high", "kind": "threshold", "metric": "bp_systolic", "op": ">",
                    "value": 180, "for_s": 0, "severity": "high"}]),
        )
        .await;
    assert!(s.is_success(), "{v}");
    g.client.device(&format!("{id}-cuff"), id, "bp-cuff").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worklist_works_in_a_real_browser() {
    require_tools();
    let g = Gateway::start().await;
    for team in ["north", "south"] {
        created(&g, "/api/v1/teams", json!({"id": team, "name": team})).await;
    }
    created(
        &g,
        "/api/v1/users",
        json!({"name": CLINICIAN.0, "password": CLINICIAN.1, "role": "clinician", "teams": ["north"]}),
    )
    .await;
    let high = enrolled(&g, "b-high", "Hana High", "north").await;
    let stable = enrolled(&g, "b-stable", "Stan Stable", "north").await;
    let other = enrolled(&g, "b-south", "Sol South", "south").await;
    publish_readings(
        g.mqtt,
        "b-stable-cuff",
        &stable,
        &json!({"metric": "bp_systolic", "value": 124}),
    )
    .await;
    publish_readings(
        g.mqtt,
        "b-south-cuff",
        &other,
        &json!({"metric": "bp_systolic", "value": 190}),
    )
    .await;
    publish_readings(
        g.mqtt,
        "b-high-cuff",
        &high,
        &json!({"metric": "bp_systolic", "value": 192}),
    )
    .await;
    crate::support::eventually(Duration::from_secs(20), "the high alert", || async {
        let (_, v) = g.client.get("/api/v1/alerts?patient_id=b-high").await;
        v["alerts"][0]["id"].as_str().map(str::to_owned)
    })
    .await;

    let base = format!("http://{}", g.http);
    let port = g.mqtt.port().to_string();
    let (lines, summary) = run_browser_script(
        "programme.mjs",
        &[
            ("BASE_URL", &base),
            ("CLIN_USER", CLINICIAN.0),
            ("CLIN_PASS", CLINICIAN.1),
            ("MQTT_PORT", &port),
            ("HIGH_PATIENT", "b-high"),
            ("STABLE_PATIENT", "b-stable"),
            ("STABLE_DEVICE", "b-stable-cuff"),
            ("STABLE_SECRET", &stable),
            ("OTHER_PATIENT", "b-south"),
        ],
        Duration::from_secs(120),
    )
    .await;
    assert_scenarios(
        &lines,
        &summary,
        &[
            "clinician_lands_on_the_worklist",
            "worklist_ranks",
            "worklist_keyboard",
            "worklist_live",
            "worklist_enter_opens_the_patient",
            "timer_survives_a_reload_and_logs_its_time",
            "billing_prints_one_page_per_patient",
            "population_charts_render",
            "programme_pages_pass_axe",
        ],
    );
    g.stop().await;
}
