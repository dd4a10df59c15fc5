//! The clinician's day in a real browser (headless Chromium through playwright-core,
//! `tests/browser/reports.mjs`): a patient with a known CGM day (the one `reports.rs` works
//! out by hand) and a note; the clinician opens the AGP page from the patient page and reads the
//! time in range, GMI and the percentile chart's text alternative; the printable summary shows
//! the vitals, the note and a Print button, and its print stylesheet hides the navigation and
//! buttons; the CSV link follows the chosen period; the NEWS2 card shows the score of seven
//! published readings with its table and chart alternative; the admin's access report names the
//! clinician's views; axe-core finds no WCAG 2.1 A/AA violation, on a desktop and a 390×844
//! phone with no sideways scrolling.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::alerts::publish;
use crate::dashboard::{assert_scenarios, created, require_tools, run_browser_script};
use crate::reports::{midnight_days_ago, patient_with_cgm_day};
use crate::support::{Gateway, TOKEN, eventually};

const ADMIN: (&str, &str) = ("ada-reports", "admin of the north ward 1");
const CLIN: (&str, &str) = ("nurse-r", "north ward day shift 1");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agp_summary_and_access_report_work_in_a_real_browser() {
    require_tools();
    let g = Gateway::start().await;
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
    created(
        &g,
        "/api/v1/users",
        json!({"name": CLIN.0, "password": CLIN.1, "role": "clinician", "teams": ["north"]}),
    )
    .await;
    let t0 = midnight_days_ago(3);
    patient_with_cgm_day(&g, "p-gl", "north", t0).await;
    // The seven NEWS2 parameters from the patient's app, a minute ago (the default plan has a
    // news2 rule): RR 25 (3), SpO2 93 on air (2, 0), systolic 120 (0), pulse 95 (1), alert (0),
    // 38.5 °C (1) = 7.
    let app = g.client.device("p-gl-app", "p-gl", "patient-app").await;
    publish(
        g.mqtt,
        "p-gl-app",
        &app,
        &[
            ("respiratory_rate", 25.0, 60),
            ("spo2", 93.0, 60),
            ("on_oxygen", 0.0, 60),
            ("bp_systolic", 120.0, 60),
            ("heart_rate", 95.0, 60),
            ("consciousness", 0.0, 60),
            ("body_temperature", 38.5, 60),
        ],
    )
    .await;
    eventually(
        Duration::from_secs(20),
        "the NEWS2 readings stored",
        || async {
            let (_, v) = g.client.get("/api/v1/patients/p-gl/news2").await;
            (v["current"]["total"] == 7).then_some(())
        },
    )
    .await;
    let (s, v) = g
        .client
        .call(
            "POST",
            "/api/v1/patients/p-gl/notes",
            Some(json!({"text": "Hypo at night: reviewed the basal dose."})),
            Some(TOKEN),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let day = vigil::domain::format_rfc3339(t0)[..10].to_owned();
    let base = format!("http://{}", g.http);
    let (lines, summary) = run_browser_script(
        "reports.mjs",
        &[
            ("BASE_URL", &base),
            ("ADMIN_USER", ADMIN.0),
            ("ADMIN_PASS", ADMIN.1),
            ("CLIN_USER", CLIN.0),
            ("CLIN_PASS", CLIN.1),
            ("PATIENT", "p-gl"),
            ("DAY", &day),
        ],
        Duration::from_secs(180),
    )
    .await;
    assert_scenarios(
        &lines,
        &summary,
        &[
            "agp_from_the_patient_page",
            "agp_on_a_phone",
            "news2_card",
            "news2_card_on_a_phone",
            "summary_prints_cleanly",
            "csv_link_follows_the_period",
            "admin_access_report",
            "reports_pass_axe",
        ],
    );
    g.stop().await;
}
