//! The clinician's day in a real browser (headless Chromium driven by playwright-core,
//! `tests/browser/clinician.mjs`; docs/dashboard.md, "The inbox"): a nurse starting a shift finds
//! the escalated alert first although newer and more severe ones came after it, takes it,
//! acknowledges two at once, snoozes one with a reason (refused first without one), and reads
//! the resolved alerts with who resolved them and how long it took; on a 390×844 phone too; the
//! record folds a spot-check meter's comings and goings into one line a day and its filter hides
//! them; the care-plan form saves a rule and shows the API's refusal beside the field it names;
//! axe-core finds no WCAG 2.1 A/AA violation.

use std::time::Duration;

use serde_json::json;

use crate::dashboard::{assert_scenarios, created, require_tools, run_browser_script};
use crate::support::{Gateway, eventually, publish_readings};

const NURSE: (&str, &str) = ("nurse-day", "north ward day shift 1");
const WAIT: Duration = Duration::from_secs(20);

/// A north patient whose meter reads `glucose` now; the id of the alert it opens.
async fn alerted(g: &Gateway, id: &str, name: &str, glucose: f64) -> String {
    created(
        g,
        "/api/v1/patients",
        json!({"id": id, "name": name, "care_team": "north"}),
    )
    .await;
    let meter = format!("gm-{id}");
    let secret = g.client.device(&meter, id, "glucose-meter").await;
    let body = json!({"metric": "glucose", "value": glucose,
        "time": vigil::domain::format_rfc3339(vigil::domain::now_ms() - 1000)});
    publish_readings(g.mqtt, &meter, &secret, &body).await;
    let api = &g.client;
    eventually(WAIT, "the patient's alert", || async move {
        let (_, v) = api.get(&format!("/api/v1/alerts?patient_id={id}")).await;
        v["alerts"][0]["id"].as_str().map(str::to_owned)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nurse_triages_the_inbox_in_a_real_browser() {
    require_tools();
    // First a gateway that escalates at once: the oldest alert, a medium one, escalates and
    // nobody acknowledges it. Then the same data under a gateway that does not escalate, where
    // newer high alerts arrive: the escalated one must still come first.
    let g = Gateway::start_with(|c| {
        c.alerts.tick_ms = 100;
        c.alerts.escalate_after_s = 1;
        c.alerts.max_escalations = 1;
    })
    .await;
    created(
        &g,
        "/api/v1/teams",
        json!({"id": "north", "name": "North ward"}),
    )
    .await;
    created(
        &g,
        "/api/v1/users",
        json!({"name": NURSE.0, "password": NURSE.1, "role": "clinician", "teams": ["north"]}),
    )
    .await;
    let escalated = alerted(&g, "p-esc", "Edith Early", 65.0).await;
    let api = &g.client;
    eventually(WAIT, "the first alert escalated", || async {
        let (_, v) = api.get(&format!("/api/v1/alerts/{escalated}")).await;
        (v["escalations"] == 1).then_some(())
    })
    .await;
    let (mut cfg, dir) = g.stop_keeping_data().await;
    cfg.alerts.escalate_after_s = 3600;
    // This clinic reads glucose in mmol/L: the dashboard converts the stored mg/dL.
    cfg.clinic.glucose_unit = vigil::domain::display::GlucoseUnit::MmolL;
    let g = Gateway::start_again(cfg, dir).await;
    let mut later = Vec::new();
    for (id, name) in [
        ("p-two", "Tom Two"),
        ("p-three", "Thea Three"),
        ("p-four", "Fay Four"),
    ] {
        later.push(alerted(&g, id, name, 45.0).await);
    }

    // Tom's meter is a spot-check device: it connects, sends one reading and goes, twice more
    // today. Each visit leaves a device offline and online entry in his record.
    let secret = g
        .client
        .device("gm-p-two-b", "p-two", "glucose-meter")
        .await;
    for value in [110.0, 118.0] {
        let body = json!({"metric": "glucose", "value": value,
            "time": vigil::domain::format_rfc3339(vigil::domain::now_ms() - 500)});
        publish_readings(g.mqtt, "gm-p-two-b", &secret, &body).await;
    }
    let api = &g.client;
    eventually(
        WAIT,
        "the meter's comings and goings in the record",
        || async move {
            let (_, v) = api.get("/api/v1/patients/p-two/record").await;
            let n = v["timeline"]
                .as_array()?
                .iter()
                .filter(|e| e["device_id"] == "gm-p-two-b" && e["kind"] == "device.offline")
                .count();
            (n >= 2).then_some(())
        },
    )
    .await;

    let base = format!("http://{}", g.http);
    let (lines, summary) = run_browser_script(
        "clinician.mjs",
        &[
            ("BASE_URL", &base),
            ("CLIN_USER", NURSE.0),
            ("CLIN_PASS", NURSE.1),
            ("ESCALATED", &escalated),
            ("ACK_A", &later[0]),
            ("ACK_B", &later[1]),
            ("SNOOZE", &later[2]),
        ],
        Duration::from_secs(180),
    )
    .await;
    assert_scenarios(
        &lines,
        &summary,
        &[
            "escalated_alert_is_first",
            "nurse_takes_it",
            "two_acknowledged_at_once",
            "snooze_needs_a_reason_then_snoozes",
            "resolved_alerts_say_who_and_how_long",
            "inbox_on_a_phone",
            "inbox_passes_axe",
            "timeline_folds_and_filters_device_noise",
            "care_plan_form_saves_a_rule_and_shows_a_field_error",
            "out_of_range_values_are_marked_in_words_in_the_clinics_units",
        ],
    );
    // What the browser did is in the record: taken, two acknowledged, one snoozed.
    let (_, v) = g.client.get(&format!("/api/v1/alerts/{escalated}")).await;
    assert_eq!(v["assigned_to"], NURSE.0, "{v}");
    for id in &later[..2] {
        let (_, v) = g.client.get(&format!("/api/v1/alerts/{id}")).await;
        assert_eq!(v["acknowledged_by"], NURSE.0, "{v}");
    }
    let (_, v) = g.client.get(&format!("/api/v1/alerts/{}", later[2])).await;
    assert!(v["snoozed_until"].is_string(), "{v}");
    g.stop().await;
}
