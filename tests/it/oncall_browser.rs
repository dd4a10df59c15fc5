//! On-call cover and notifications in the dashboard, in a real browser (headless Chromium
//! driven by playwright-core, `tests/browser/oncall.mjs`; docs/oncall.md): a clinician sees the
//! gap warning while nobody covers the team; an admin adds a rota slot (a refusal first, shown
//! in words) and the clinician then sees who is on call; a reading raises a high alert whose
//! notification by SMS (to a local receiver) shows as a step under the alert in the inbox and
//! on the patient's page; a user keeps their own quiet hours (on a desktop and a 390×844
//! phone); the acknowledgement link from that SMS keeps itself through sign-in, acknowledges
//! the alert, and once used (or altered, or not a link) says in words why it does not work; axe-core finds no WCAG 2.1 A/AA violation on the new views.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::dashboard::{assert_scenarios, created, require_tools, run_browser_script};
use crate::notify_channels::{SMS_TOKEN, config, sms_receiver, sms_toml};
use crate::support::{Gateway, TOKEN};

const ADMIN: (&str, &str) = ("ada-admin", "admin of the north ward 1");
const NURSE: (&str, &str) = ("nurse-a", "north ward night shift 1");
const OTHER: (&str, &str) = ("nurse-b", "north ward night shift 2");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_call_cover_and_notifications_work_in_a_real_browser() {
    require_tools();
    let sms = sms_receiver().await;
    let channels = config(&sms_toml(&sms.url("/sms/send"), SMS_TOKEN));
    let g = Gateway::start_with(|c| c.sms = channels.sms.clone()).await;
    created(
        &g,
        "/api/v1/teams",
        json!({"id": "north", "name": "North ward"}),
    )
    .await;
    created(
        &g,
        "/api/v1/users",
        json!({"name": ADMIN.0, "password": ADMIN.1, "role": "admin"}),
    )
    .await;
    for (name, pass) in [NURSE, OTHER] {
        created(
            &g,
            "/api/v1/users",
            json!({"name": name, "password": pass, "role": "clinician", "teams": ["north"]}),
        )
        .await;
    }
    // The nurse can be reached by SMS; the other nurse by no channel at all.
    let (s, v) = g
        .client
        .call(
            "PATCH",
            &format!("/api/v1/users/{}", NURSE.0),
            Some(json!({"phone": "+13125550123"})),
            Some(TOKEN),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    created(
        &g,
        "/api/v1/patients",
        json!({"id": "p-oc", "name": "Olive Cover", "care_team": "north"}),
    )
    .await;
    let secret = g.client.device("ox-oc", "p-oc", "pulse-oximeter").await;
    let (s, v) = g
        .client
        .care_plan(
            "p-oc",
            json!([{"id": "spo2-low", "kind": "threshold", "metric": "spo2", "op": "<",
                    "value": 90, "for_s": 0, "severity": "high"}]),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");

    let base = format!("http://{}", g.http);
    let port = g.mqtt.port().to_string();
    let (lines, summary) = run_browser_script(
        "oncall.mjs",
        &[
            ("BASE_URL", &base),
            ("ADMIN_USER", ADMIN.0),
            ("ADMIN_PASS", ADMIN.1),
            ("CLIN_USER", NURSE.0),
            ("CLIN_PASS", NURSE.1),
            ("OTHER_USER", OTHER.0),
            ("OTHER_PASS", OTHER.1),
            ("TEAM", "north"),
            ("PATIENT", "p-oc"),
            ("DEVICE", "ox-oc"),
            ("DEVICE_SECRET", &secret),
            ("MQTT_PORT", &port),
            ("SMS_STATE_URL", &sms.url("/_state")),
        ],
        Duration::from_secs(180),
    )
    .await;
    assert_scenarios(
        &lines,
        &summary,
        &[
            "clinician_sees_the_gap_in_cover",
            "admin_adds_a_rota_slot",
            "clinician_sees_who_is_on_call",
            "alert_shows_its_notification_steps",
            "user_keeps_their_own_quiet_hours",
            "contact_form_on_a_phone",
            "ack_link_survives_sign_in_and_acknowledges",
            "ack_link_refusals_in_words",
            "oncall_pages_pass_axe",
        ],
    );
    // The step reached the nurse by SMS, once.
    let st = sms.state().await;
    let sent = st["sms"].as_array().cloned().unwrap_or_default();
    assert_eq!(sent.len(), 1, "{st}");
    assert_eq!(sent[0]["to"], "+13125550123");
    g.stop().await;
}
