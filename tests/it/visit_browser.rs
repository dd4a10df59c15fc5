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

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::dashboard::{assert_scenarios, created, require_tools, run_browser_script};
use crate::support::Gateway;

const CLINICIAN: (&str, &str) = ("dr-video", "video visits all day 3");

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

    let (lines, summary) = run_browser_script(
        "visit.mjs",
        &[
            ("BASE_URL", base.as_str()),
            ("CLIN_USER", CLINICIAN.0),
            ("CLIN_PASS", CLINICIAN.1),
            ("PATIENT", "pat-video-1"),
            ("MQTT_PORT", &g.mqtt.port().to_string()),
            ("DEVICE", "ox-video-1"),
            ("DEVICE_SECRET", &ox_secret),
        ],
        Duration::from_secs(240),
    )
    .await;
    println!(
        "join → first remote frame: {}",
        summary["join_to_first_frame"]
    );
    assert_scenarios(
        &lines,
        &summary,
        &[
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
        ],
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
