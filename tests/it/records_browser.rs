//! Records a clinic can keep in the dashboard, in a real browser (headless Chromium driven by
//! playwright-core, `tests/browser/records.mjs`), on a desktop and a 390×844 phone: an admin
//! adds a patient with an MRN and demographics (a taken MRN refused beside its field) and edits
//! them on the patient's page, discharges another patient (who leaves the panel and is listed
//! as discharged), disables a clinician (who then cannot sign in) and resets a password (the
//! clinician, enabled again, must replace the temporary one at the next sign-in); the
//! device inventory filters; axe-core finds no WCAG 2.1 A/AA violation on the new views.

use std::time::Duration;

use serde_json::json;

use crate::dashboard::{assert_scenarios, created, require_tools, run_browser_script};
use crate::support::Gateway;

const ADMIN: (&str, &str) = ("ada-admin", "admin of the north ward 1");
const NURSE: (&str, &str) = ("nurse-n", "north ward day shift 1");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_work_in_a_real_browser() {
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
        json!({"name": NURSE.0, "password": NURSE.1, "role": "clinician", "teams": ["north"]}),
    )
    .await;
    created(
        &g,
        "/api/v1/patients",
        json!({"id": "p-dis", "name": "Dora Discharge", "care_team": "north"}),
    )
    .await;
    // The MRN the admin's first try collides with.
    created(
        &g,
        "/api/v1/patients",
        json!({"id": "p-mrn", "name": "Mara Taken", "care_team": "north", "mrn": "MRN-TAKEN"}),
    )
    .await;
    g.client.device("ox-dis", "p-dis", "pulse-oximeter").await;

    let base = format!("http://{}", g.http);
    let (lines, summary) = run_browser_script(
        "records.mjs",
        &[
            ("BASE_URL", &base),
            ("ADMIN_USER", ADMIN.0),
            ("ADMIN_PASS", ADMIN.1),
            ("CLIN_USER", NURSE.0),
            ("CLIN_PASS", NURSE.1),
            ("TEAM", "north"),
            ("PATIENT", "p-dis"),
            ("DEVICE", "ox-dis"),
        ],
        Duration::from_secs(240),
    )
    .await;
    assert_scenarios(
        &lines,
        &summary,
        &[
            "admin_adds_a_patient_with_mrn_and_demographics_desktop",
            "admin_edits_the_demographics_on_the_patients_page_desktop",
            "admin_discharges_a_patient_who_leaves_the_panel",
            "admin_disables_a_user_who_then_cannot_sign_in",
            "admin_resets_a_password_shown_once",
            "a_temporary_password_is_replaced_at_the_next_sign_in",
            "device_inventory_filters",
            "admin_views_on_a_phone",
            "records_pages_pass_axe",
        ],
    );
    let (_, p) = g.client.get("/api/v1/patients/p-dis").await;
    assert_eq!(p["status"], "discharged", "{p}");
    g.stop().await;
}
