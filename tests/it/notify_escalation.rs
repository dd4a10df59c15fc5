//! Alerts reaching a person (docs/oncall.md), end to end: a high alert raised by a reading
//! published with `mosquitto_pub` notifies the nurse on call by email (through a real SMTP
//! server, aiosmtpd) and SMS (a local form endpoint) at once; the messages hold no reading and
//! no name; the step and each delivery are on the patient's timeline.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::notify_channels::{SMS_TOKEN, SmtpSink, config, sms_receiver, sms_toml, smtp_toml};
use crate::support::{Gateway, TOKEN, eventually, publish_readings};

const WAIT: Duration = Duration::from_secs(20);

/// Whether `text` holds `word` standing on its own: not inside a longer run of letters and
/// digits (a port like 35845, a message id's hex), which would hold it by chance.
fn mentions(text: &str, word: &str) -> bool {
    text.match_indices(word).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + word.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_alphanumeric())
            && !after.is_some_and(|c| c.is_ascii_alphanumeric())
    })
}

#[test]
fn mentions_finds_a_word_and_not_a_part_of_one() {
    assert!(mentions("SpO2 84 %", "84"));
    assert!(mentions("(84%)", "84"));
    assert!(!mentions("http://127.0.0.1:35845/", "84"));
    assert!(!mentions("nt_a84b", "84"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_high_alert_reaches_the_nurse_on_call_by_email_and_sms_at_once() {
    let sink = SmtpSink::start(&[]).await;
    let sms = sms_receiver().await;
    let toml = format!(
        "{}{}",
        smtp_toml(&format!("smtp://127.0.0.1:{}", sink.port), ""),
        sms_toml(&sms.url("/sms/send"), SMS_TOKEN)
    );
    let channels = config(&toml);
    let g = Gateway::start_with(|c| {
        c.smtp = channels.smtp.clone();
        c.sms = channels.sms.clone();
    })
    .await;
    let api = &g.client;
    let (s, v) = api
        .post("/api/v1/teams", json!({"id": "north", "name": "North"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let nina = api.clinician("nina", "north").await;
    let _omar = api.clinician("omar", "north").await;
    let (s, v) = api
        .call(
            "PATCH",
            "/api/v1/users/nina",
            Some(json!({"email": "nina@clinic.example", "phone": "+13125550123"})),
            Some(&nina),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // Nina is on call around the clock; Omar is not.
    let every = json!(["mon", "tue", "wed", "thu", "fri", "sat", "sun"]);
    let (s, v) = api
        .call(
            "PUT",
            "/api/v1/teams/north/rota",
            Some(json!({"timezone": "UTC", "weekly": [
                {"days": every, "start": "00:00", "end": "00:00", "user": "nina"}]})),
            Some(TOKEN),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = api
        .post(
            "/api/v1/patients",
            json!({"id": "p-7", "name": "Margaret Thompson", "care_team": "north"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let secret = api.device("ox-7", "p-7", "pulse-oximeter").await;
    let (s, v) = api
        .care_plan(
            "p-7",
            json!([{"id": "spo2-low", "kind": "threshold", "metric": "spo2", "op": "<",
                    "value": 90, "for_s": 0, "severity": "high"}]),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");

    publish_readings(
        g.mqtt,
        "ox-7",
        &secret,
        &json!({"metric": "spo2", "value": 84}),
    )
    .await;

    let mail = sink.wait_for(1).await;
    assert_eq!(mail[0]["rcpt_tos"], json!(["nina@clinic.example"]));
    let text = mail[0]["data"].as_str().unwrap();
    assert!(text.contains("HIGH") || text.contains("High"), "{text}");
    let state = eventually(WAIT, "the SMS", || async {
        let st = sms.state().await;
        (st["sms"].as_array().is_some_and(|a| !a.is_empty())).then_some(st)
    })
    .await;
    assert_eq!(state["sms"][0]["to"], "+13125550123");
    let body = state["sms"][0]["body"].as_str().unwrap();
    for leak in ["84", "Margaret", "Thompson", "ox-7"] {
        assert!(!mentions(text, leak), "{leak:?} in the email:\n{text}");
        assert!(!mentions(body, leak), "{leak:?} in the SMS: {body}");
    }

    // The step and both deliveries are on the patient's timeline, without addresses.
    let timeline = eventually(WAIT, "both deliveries on the timeline", || async {
        let (_, v) = api.get("/api/v1/patients/p-7/record").await;
        let tl = v["timeline"].as_array().cloned().unwrap_or_default();
        let delivered = tl
            .iter()
            .filter(|e| e["kind"] == "notification.delivered")
            .count();
        (delivered == 2).then_some(tl)
    })
    .await;
    let step: Vec<&Value> = timeline
        .iter()
        .filter(|e| e["kind"] == "alert.notify_step")
        .collect();
    assert_eq!(step.len(), 1, "{timeline:?}");
    let all = Value::Array(timeline.clone()).to_string();
    assert!(
        !all.contains("nina@clinic.example") && !all.contains("+1312"),
        "{all}"
    );
    // Only one email and one SMS: the step was taken once.
    assert_eq!(sink.received().len(), 1);
    assert_eq!(sms.state().await["sms"].as_array().unwrap().len(), 1);

    // The alert's view reads the step and its notifications: the nurse sees names, channels
    // and where each stands, never an address; an admin sees the addresses too; the read is
    // audited.
    let (_, v) = api.get("/api/v1/alerts?patient_id=p-7").await;
    let alert = v["alerts"][0]["id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/alerts/{alert}/notifications");
    let (s, v) = api.call("GET", &path, None, Some(&nina)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["alert_id"], alert.as_str());
    let steps = v["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 1, "{v}");
    assert_eq!(steps[0]["step"], 0);
    let mut sent: Vec<(String, String, String)> = steps[0]["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["user"].as_str().unwrap().to_owned(),
                n["channel"].as_str().unwrap().to_owned(),
                n["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    sent.sort();
    assert_eq!(
        sent,
        [
            ("nina".into(), "email".into(), "delivered".into()),
            ("nina".into(), "sms".into(), "delivered".into())
        ],
        "{v}"
    );
    let text = v.to_string();
    assert!(
        !text.contains("address")
            && !text.contains("nina@clinic.example")
            && !text.contains("+1312"),
        "{text}"
    );
    let (s, v) = api.call("GET", &path, None, Some(TOKEN)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v.to_string().contains("+13125550123"), "{v}");
    let (_, audit) = api.get("/api/v1/audit?patient_id=p-7&limit=1000").await;
    assert!(
        audit["audit"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["action"] == "alert.notifications.read" && l["patient_id"] == "p-7"),
        "{audit}"
    );
}
