//! The clinician dashboard in a real browser: headless Chromium (Debian's `/usr/bin/chromium`)
//! driven by playwright-core (`tests/browser/acceptance.mjs`) against a gateway started here,
//! with readings published by `mosquitto_pub` and by `vigil-sim`.
//!
//! Nothing is skipped: without Node.js, Chromium, `tests/browser/node_modules` or
//! `mosquitto_pub` the test fails and says what to install (`./scripts/test` installs them all).
//! `VIGIL_SCREENSHOTS=DIR` also writes the README's screenshots (panel, inbox, patient view).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{Gateway, TOKEN, run};

const ADMIN: (&str, &str) = ("dr-admin", "correct horse battery staple 1");
const CLINICIAN: (&str, &str) = ("nurse-north", "north ward night shift 2");
/// Created without a team: on the default team, with the simulator's patients.
const DEFAULT_CLINICIAN: (&str, &str) = ("nurse-default", "default ward day shift 3");
/// Taken off every team.
const NO_TEAM_CLINICIAN: (&str, &str) = ("nurse-none", "between wards on leave 4");
const CHROMIUM: &str = "/usr/bin/chromium";

pub(crate) fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Fails with what to install when a tool the browser test needs is missing.
pub(crate) fn require_tools() {
    let mut missing = Vec::new();
    if std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_err()
    {
        missing.push("Node.js (`node`; Debian package nodejs)");
    }
    if !Path::new(CHROMIUM).exists() {
        missing.push("Chromium at /usr/bin/chromium (Debian package chromium)");
    }
    if !browser_dir().join("node_modules/playwright-core").exists() {
        missing.push("playwright-core (`npm ci` in tests/browser)");
    }
    if std::process::Command::new("mosquitto_pub")
        .arg("--help")
        .output()
        .is_err()
    {
        missing.push("mosquitto_pub (Debian package mosquitto-clients)");
    }
    assert!(
        missing.is_empty(),
        "the dashboard's browser test needs: {} — ./scripts/test installs them",
        missing.join(", ")
    );
}

pub(crate) fn vigil_sim() -> PathBuf {
    let sim = Path::new(env!("CARGO_BIN_EXE_vigil")).with_file_name("vigil-sim");
    assert!(
        sim.exists(),
        "{} is missing: build it with `cargo build -p vigil-sim` (cargo test --workspace does)",
        sim.display()
    );
    sim
}

pub(crate) async fn created(g: &Gateway, path: &str, body: Value) -> Value {
    let (s, v) = g.client.post(path, body).await;
    assert_eq!(s, StatusCode::CREATED, "POST {path}: {v}");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_works_in_a_real_browser() {
    require_tools();
    let sim = vigil_sim();
    let g = Gateway::start().await;
    let base = format!("http://{}", g.http);

    // Two care teams, an admin, a clinician of one team (none of the other), a clinician
    // created without a team (on the default team), one on no team, a patient in each team,
    // and a pulse oximeter for the north patient (heart rate for the latency measurement).
    created(
        &g,
        "/api/v1/teams",
        json!({"id": "north", "name": "North ward"}),
    )
    .await;
    created(
        &g,
        "/api/v1/teams",
        json!({"id": "south", "name": "South ward"}),
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
        json!({"name": CLINICIAN.0, "password": CLINICIAN.1, "role": "clinician", "teams": ["north"]}),
    )
    .await;
    let on_default = created(
        &g,
        "/api/v1/users",
        json!({"name": DEFAULT_CLINICIAN.0, "password": DEFAULT_CLINICIAN.1, "role": "clinician"}),
    )
    .await;
    assert_eq!(on_default["teams"], json!(["default"]));
    created(
        &g,
        "/api/v1/users",
        json!({"name": NO_TEAM_CLINICIAN.0, "password": NO_TEAM_CLINICIAN.1, "role": "clinician"}),
    )
    .await;
    let (s, v) = g
        .client
        .patch(
            &format!("/api/v1/users/{}", NO_TEAM_CLINICIAN.0),
            json!({"teams": []}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    created(
        &g,
        "/api/v1/patients",
        json!({"id": "pat-north-1", "name": "Ada North", "care_team": "north"}),
    )
    .await;
    created(
        &g,
        "/api/v1/patients",
        json!({"id": "pat-south-1", "name": "Sam South", "care_team": "south"}),
    )
    .await;
    let ox = created(
        &g,
        "/api/v1/devices",
        json!({"id": "ox-north-1", "patient_id": "pat-north-1", "profile": "pulse-oximeter"}),
    )
    .await;
    let ox_secret = ox["mqtt"]["password"].as_str().unwrap().to_owned();

    // The simulator's patients, created without a care team: on the default team.
    let creds = g.dir.path().join("sim-credentials.json");
    let out = run(
        sim.to_str().unwrap(),
        &[
            "provision",
            "--url",
            &base,
            "--token",
            TOKEN,
            "--patients",
            "3",
            "--prefix",
            "sim",
            "--out",
            creds.to_str().unwrap(),
        ],
        None,
    )
    .await;
    assert!(out.ok, "vigil-sim provision: {}", out.stderr);

    let (lines, summary) = run_browser_script(
        "acceptance.mjs",
        &[
            ("BASE_URL", base.as_str()),
            ("ADMIN_USER", ADMIN.0),
            ("ADMIN_PASS", ADMIN.1),
            ("CLIN_USER", CLINICIAN.0),
            ("CLIN_PASS", CLINICIAN.1),
            ("DEFAULT_USER", DEFAULT_CLINICIAN.0),
            ("DEFAULT_PASS", DEFAULT_CLINICIAN.1),
            ("NOTEAM_USER", NO_TEAM_CLINICIAN.0),
            ("NOTEAM_PASS", NO_TEAM_CLINICIAN.1),
            ("OWN_PATIENT", "pat-north-1"),
            ("OTHER_PATIENT", "pat-south-1"),
            ("MQTT_PORT", &g.mqtt.port().to_string()),
            ("LAT_PATIENT", "pat-north-1"),
            ("LAT_DEVICE", "ox-north-1"),
            ("LAT_SECRET", &ox_secret),
            ("SIM_BIN", sim.to_str().unwrap()),
            ("SIM_CREDENTIALS", creds.to_str().unwrap()),
            ("SIM_PREFIX", "sim"),
        ],
        Duration::from_secs(300),
    )
    .await;
    println!("publish-to-tile latency: {}", summary["latency"]);
    assert_scenarios(
        &lines,
        &summary,
        &[
            "sign_in",
            "csrf_required",
            "live_tile_and_latency",
            "reconnect",
            "sim_readings_live",
            "alert_inbox_ack_record",
            "patient_chart",
            "admin_and_care_plan",
            "device_rotate_revoke",
            "api_tokens",
            "audit_trail",
            "clinician_scope",
            "clinician_no_admin_controls",
            "default_team_clinician",
            "no_team_clinician",
            "unseen_warning",
            "sign_out",
        ],
    );
    assert!(summary["latency"]["readings"].as_u64().unwrap_or(0) >= 50);

    g.stop().await;
}

/// Runs `tests/browser/<script>` with node and `env`; returns its JSON lines (each scenario's
/// printed) and its summary line. Fails with its output when it prints no summary.
pub(crate) async fn run_browser_script(
    script: &str,
    env: &[(&str, &str)],
    within: Duration,
) -> (Vec<Value>, Value) {
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(browser_dir().join(script))
        .current_dir(browser_dir())
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Ok(dir) = std::env::var("VIGIL_SCREENSHOTS") {
        cmd.env("SCREENSHOT_DIR", dir);
    }
    let child = cmd.spawn().expect("node starts");
    let output = tokio::time::timeout(within, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{script} finishes within {within:?}"))
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    for l in lines.iter().filter(|l| l.get("scenario").is_some()) {
        println!("{l}");
    }
    let mut summary = lines
        .iter()
        .find(|l| l.get("summary").is_some())
        .cloned()
        .unwrap_or_else(|| {
            panic!("no summary from {script}\nstdout:\n{stdout}\nstderr:\n{stderr}")
        });
    summary["exit_ok"] = json!(output.status.success());
    summary["stderr"] = json!(stderr);
    (lines, summary)
}

/// Every scenario ran and passed, the script exited 0, and the pages reported no problem (no
/// page error, console error or CSP violation).
pub(crate) fn assert_scenarios(lines: &[Value], summary: &Value, wanted: &[&str]) {
    let failed: Vec<&Value> = lines
        .iter()
        .filter(|l| l.get("scenario").is_some() && l["ok"] != json!(true))
        .collect();
    assert!(
        failed.is_empty() && summary["exit_ok"] == json!(true),
        "browser scenarios failed: {failed:#?}\nproblems: {}\nstderr:\n{}",
        summary["problems"],
        summary["stderr"].as_str().unwrap_or_default()
    );
    for want in wanted {
        assert!(
            lines
                .iter()
                .any(|l| l["scenario"] == *want && l["ok"] == json!(true)),
            "scenario {want} did not run"
        );
    }
    assert_eq!(
        summary["problems"],
        json!([]),
        "the pages reported problems"
    );
}
