//! A video visit in real browsers: headless Chromium (Debian's `/usr/bin/chromium`, a fake
//! camera and microphone) driven by playwright-core (`tests/browser/visit.mjs`) against a gateway
//! started here, whose relay binds 127.0.0.1 so ICE runs over the loopback interface.
//!
//! The clinician starts the visit from the patient view; the patient opens the join link on a
//! phone-sized page, waits, is admitted; both pages must play the other's video (a size, and
//! decoded frames that keep coming). Then: a tampered link is refused in words, mute shows on
//! the other side, a guest joins with the clinician's guest link (a third browser), waits, is
//! admitted, all three pages play both others' videos and the roster shows the guest, and when
//! the guest leaves the two others are back to one video each; leave removes the video, rejoin
//! works, the clinician's tab without the remembered patient link (it is forgotten, then the
//! view reloaded) signs a new patient link on request that the join API takes for the patient
//! and rejoins the call, the clinician's end reaches the patient, and a reading published during
//! the call appears beside the video. Prints the join → first remote frame times (the guest's
//! too). `VIGIL_SCREENSHOTS=DIR` writes visit-clinician.png and visit-patient.png.

use std::process::Stdio;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::dashboard::{browser_dir, require_tools};
use crate::support::Gateway;

const CLINICIAN: (&str, &str) = ("dr-video", "video visits all day 3");

async fn created(g: &Gateway, path: &str, body: Value) -> Value {
    let (s, v) = g.client.post(path, body).await;
    assert_eq!(s, StatusCode::CREATED, "POST {path}: {v}");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_video_visit_works_in_real_browsers() {
    require_tools();
    let g = Gateway::start_with(|cfg| {
        cfg.video.bind_ip = std::net::Ipv4Addr::LOCALHOST.into();
    })
    .await;
    let base = format!("http://{}", g.http);

    created(
        &g,
        "/api/v1/teams",
        json!({"id": "north", "name": "North ward"}),
    )
    .await;
    created(
        &g,
        "/api/v1/users",
        json!({"name": CLINICIAN.0, "password": CLINICIAN.1, "role": "clinician", "teams": ["north"]}),
    )
    .await;
    created(
        &g,
        "/api/v1/patients",
        json!({"id": "pat-video-1", "name": "Ada Video", "care_team": "north"}),
    )
    .await;
    let ox = created(
        &g,
        "/api/v1/devices",
        json!({"id": "ox-video-1", "patient_id": "pat-video-1", "profile": "pulse-oximeter"}),
    )
    .await;
    let ox_secret = ox["mqtt"]["password"].as_str().unwrap().to_owned();

    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(browser_dir().join("visit.mjs"))
        .current_dir(browser_dir())
        .env("BASE_URL", &base)
        .env("CLIN_USER", CLINICIAN.0)
        .env("CLIN_PASS", CLINICIAN.1)
        .env("PATIENT", "pat-video-1")
        .env("MQTT_PORT", g.mqtt.port().to_string())
        .env("DEVICE", "ox-video-1")
        .env("DEVICE_SECRET", &ox_secret)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Ok(dir) = std::env::var("VIGIL_SCREENSHOTS") {
        cmd.env("SCREENSHOT_DIR", dir);
    }
    let child = cmd.spawn().expect("node starts");
    let output = tokio::time::timeout(Duration::from_secs(240), child.wait_with_output())
        .await
        .expect("the browser test finishes within 240 s")
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
    let summary = lines
        .iter()
        .find(|l| l.get("summary").is_some())
        .cloned()
        .unwrap_or_else(|| {
            panic!("no summary from the browser test\nstdout:\n{stdout}\nstderr:\n{stderr}")
        });
    println!(
        "join → first remote frame: {}",
        summary["join_to_first_frame"]
    );
    let failed: Vec<&Value> = lines
        .iter()
        .filter(|l| l.get("scenario").is_some() && l["ok"] != json!(true))
        .collect();
    assert!(
        failed.is_empty() && output.status.success(),
        "browser scenarios failed: {failed:#?}\nproblems: {}\nstderr:\n{stderr}",
        summary["problems"]
    );
    for want in [
        "start_visit_from_patient_view",
        "tampered_link_refused",
        "patient_waits_and_is_admitted",
        "quality_indicator",
        "vitals_beside_the_video",
        "mute_shows_on_the_other_side",
        "guest_joins_a_three_way_call",
        "leave_removes_the_video",
        "rejoin_after_leaving",
        "patient_link_after_reload",
        "clinician_ends_the_visit",
    ] {
        assert!(
            lines
                .iter()
                .any(|l| l["scenario"] == want && l["ok"] == json!(true)),
            "scenario {want} did not run"
        );
    }
    // No page errors, console errors or CSP violations on either page.
    assert_eq!(
        summary["problems"],
        json!([]),
        "the pages reported problems"
    );

    g.stop().await;
}

/// The visit page is served without a session (the join link's token is in the fragment, so the
/// request carries nothing to check), with the strict CSP, and it is the embedded page.
#[tokio::test]
async fn the_visit_page_needs_no_session() {
    let g = Gateway::start().await;
    let r = reqwest::get(format!(
        "http://{}/visit/vis_0123456789abcdef0123456789abcdef",
        g.http
    ))
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let csp = r
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(csp, vigil::web::CSP);
    assert!(
        r.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/html")),
    );
    let body = r.text().await.unwrap();
    assert!(body.contains("/assets/visit.js"), "{body}");
    g.stop().await;
}
