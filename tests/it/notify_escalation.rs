//! Alerts reaching a person (docs/oncall.md), end to end: a high alert raised by a reading
//! published with `mosquitto_pub` notifies the nurse on call by email (through a real SMTP
//! server, aiosmtpd) and SMS (a local form endpoint) at once; the messages hold no reading and
//! no name; the step and each delivery are on the patient's timeline. The email's link
//! acknowledges once and stops the escalation, which otherwise reaches the second level after
//! the policy's minutes; a mail server down, or Vigil killed, delays a notification but never
//! loses or doubles it.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::cli::spawn_vigil_with;
use crate::notify_channels::{SMS_TOKEN, SmtpSink, config, sms_receiver, sms_toml, smtp_toml};
use crate::support::{Api, Gateway, TOKEN, eventually, free_port, publish_readings};

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

/// The link in a notification: `…/#/ack/<token>`, the token alone.
fn ack_token(text: &str) -> String {
    let at = text.find("#/ack/").expect("an acknowledgement link") + "#/ack/".len();
    text[at..]
        .split(|c: char| c.is_whitespace())
        .next()
        .unwrap()
        .to_owned()
}

/// A care team `north` whose nurse Nina (level 1) and doctor Omar (level 2) are on call around
/// the clock, with email addresses; high alerts reach level 1 at once and level 2 after one
/// minute; a patient `id` named `name` with an oximeter whose SpO2 below 90 % opens a high
/// alert at once. Nina's and Omar's API tokens, and the device's secret.
struct Ward {
    nina: String,
    omar: String,
}

async fn north_ward(api: &crate::support::Api) -> Ward {
    let (s, v) = api
        .post("/api/v1/teams", json!({"id": "north", "name": "North"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let nina = api.clinician("nina", "north").await;
    let omar = api.clinician("omar", "north").await;
    for (user, token) in [("nina", &nina), ("omar", &omar)] {
        let (s, v) = api
            .call(
                "PATCH",
                &format!("/api/v1/users/{user}"),
                Some(json!({"email": format!("{user}@clinic.example")})),
                Some(token),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    let every = json!(["mon", "tue", "wed", "thu", "fri", "sat", "sun"]);
    let (s, v) = api
        .call(
            "PUT",
            "/api/v1/teams/north/rota",
            Some(json!({"timezone": "UTC", "weekly": [
                {"days": every, "start": "00:00", "end": "00:00", "user": "nina", "level": 1},
                {"days": every, "start": "00:00", "end": "00:00", "user": "omar", "level": 2}]})),
            Some(TOKEN),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = api
        .call(
            "PUT",
            "/api/v1/teams/north/policy",
            Some(
                json!({"high": [{"after_min": 0, "level": 1}, {"after_min": 1, "level": 2}],
                        "medium": [{"after_min": 0, "level": 1}], "low": []}),
            ),
            Some(TOKEN),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    Ward { nina, omar }
}

/// A north patient `id` named `name` with oximeter `ox-<id>`, whose SpO2 below 90 % opens a
/// high alert at once; the device's secret.
async fn north_patient(api: &crate::support::Api, id: &str, name: &str) -> String {
    let (s, v) = api
        .post(
            "/api/v1/patients",
            json!({"id": id, "name": name, "care_team": "north"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let secret = api.device(&format!("ox-{id}"), id, "pulse-oximeter").await;
    let (s, v) = api
        .care_plan(
            id,
            json!([{"id": "spo2-low", "kind": "threshold", "metric": "spo2", "op": "<",
                    "value": 90, "for_s": 0, "severity": "high"}]),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    secret
}

/// The patient's timeline entries of `kind`.
async fn entries(api: &crate::support::Api, patient: &str, kind: &str) -> Vec<Value> {
    let (s, v) = api.get(&format!("/api/v1/patients/{patient}/record")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["timeline"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e["kind"] == kind)
        .collect()
}

/// The open alert of `patient`.
async fn the_alert(api: &crate::support::Api, patient: &str) -> Value {
    eventually(WAIT, "the alert", || async {
        let (_, v) = api
            .get(&format!("/api/v1/alerts?patient_id={patient}"))
            .await;
        v["alerts"].get(0).cloned()
    })
    .await
}

/// Two high alerts at once: Nina is emailed about both. She acknowledges the first from the
/// email's link, once (a second use, hers or anyone's, is refused; a clinician of another team
/// cannot use it at all); its escalation stops there. The second, unacknowledged after the
/// policy's minute, reaches Omar at level 2, and that step is the alert's escalation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_emails_link_acknowledges_once_and_stops_the_escalation_which_otherwise_reaches_level_two()
 {
    let sink = SmtpSink::start(&[]).await;
    let channels = config(&smtp_toml(&format!("smtp://127.0.0.1:{}", sink.port), ""));
    let g = Gateway::start_with(|c| c.smtp = channels.smtp.clone()).await;
    let api = &g.client;
    let ward = north_ward(api).await;
    let (s, v) = api
        .post("/api/v1/teams", json!({"id": "south", "name": "South"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let sam = api.clinician("sam", "south").await;
    let ann = north_patient(api, "p-1", "Ann Brown").await;
    let carl = north_patient(api, "p-2", "Carl Diaz").await;

    // Ann's alert first, then Carl's: Ann's would fall due for level 2 no later than Carl's.
    publish_readings(
        g.mqtt,
        "ox-p-1",
        &ann,
        &json!({"metric": "spo2", "value": 84}),
    )
    .await;
    let ann_alert = the_alert(api, "p-1").await;
    publish_readings(
        g.mqtt,
        "ox-p-2",
        &carl,
        &json!({"metric": "spo2", "value": 85}),
    )
    .await;
    let carl_alert = the_alert(api, "p-2").await;
    let mail = sink.wait_for(2).await;
    let about = |initials: &str| -> Value {
        mail.iter()
            .find(|m| m["body"].as_str().unwrap().contains(initials))
            .unwrap_or_else(|| panic!("no email about {initials}: {mail:?}"))
            .clone()
    };
    let to_ann = about("A.B.");
    assert_eq!(to_ann["rcpt_tos"], json!(["nina@clinic.example"]));
    assert_eq!(about("C.D.")["rcpt_tos"], json!(["nina@clinic.example"]));
    let body = to_ann["body"].as_str().unwrap();
    let link = &body[body.find("http").unwrap()..];
    assert!(
        link.starts_with(&format!("http://{}/#/ack/", g.http)),
        "{body}"
    );
    let token = ack_token(body);
    let path = format!("/api/v1/ack-links/{token}");

    // Another team's clinician: refused. Nina: sees what it acknowledges.
    let (s, v) = api.call("GET", &path, None, Some(&sam)).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let (s, v) = api.call("POST", &path, None, Some(&sam)).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let (s, v) = api.call("GET", &path, None, Some(&ward.nina)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["alert"]["id"], ann_alert["id"], "{v}");
    assert_eq!(
        (v["sent_to"].as_str(), &v["used"]),
        (Some("nina"), &Value::Null)
    );
    // Altered: refused as such.
    let altered = format!("/api/v1/ack-links/{}", token.replacen("nt_", "nt_f", 1));
    let (s, v) = api.call("POST", &altered, None, Some(&ward.nina)).await;
    assert!(
        s == StatusCode::FORBIDDEN || s == StatusCode::BAD_REQUEST,
        "{s} {v}"
    );

    let (s, v) = api.call("POST", &path, None, Some(&ward.nina)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["status"].as_str(), v["acknowledged_by"].as_str()),
        (Some("acknowledged"), Some("nina")),
        "{v}"
    );
    for who in [&ward.nina, &ward.omar] {
        let (s, v) = api.call("POST", &path, None, Some(who)).await;
        assert_eq!(s, StatusCode::GONE, "{v}");
        assert!(
            v["error"]
                .as_str()
                .unwrap()
                .contains("used already, by nina"),
            "{v}"
        );
    }
    let (_, v) = api.call("GET", &path, None, Some(&ward.nina)).await;
    assert_eq!(v["used"]["by"], "nina", "{v}");
    assert_eq!(entries(api, "p-1", "alert.acknowledged").await.len(), 1);

    // Carl's alert, unacknowledged, reaches Omar after the policy's minute.
    let mail = eventually(Duration::from_secs(120), "the level 2 email", || async {
        let got = sink.received();
        got.iter()
            .any(|m| m["rcpt_tos"] == json!(["omar@clinic.example"]))
            .then_some(got)
    })
    .await;
    let to_omar: Vec<&Value> = mail
        .iter()
        .filter(|m| m["rcpt_tos"] == json!(["omar@clinic.example"]))
        .collect();
    assert_eq!(to_omar.len(), 1, "{mail:?}");
    assert!(to_omar[0]["body"].as_str().unwrap().contains("C.D."));
    let steps = entries(api, "p-2", "alert.notify_step").await;
    assert_eq!(steps.len(), 2, "{steps:?}");
    let opened = vigil::domain::parse_rfc3339(carl_alert["opened_at"].as_str().unwrap()).unwrap();
    let second = steps
        .iter()
        .find(|e| e["level"] == 2)
        .expect("a level 2 step");
    let taken = vigil::domain::parse_rfc3339(second["time"].as_str().unwrap()).unwrap();
    assert!(
        taken - opened >= 60_000,
        "level 2 after the policy's minute, not {} ms",
        taken - opened
    );
    assert_eq!(second["to"], json!([{"user": "omar", "channel": "email"}]));
    // The second step is the alert's escalation, written with it.
    let escalated = entries(api, "p-2", "alert.escalated").await;
    assert_eq!(escalated.len(), 1, "{escalated:?}");
    assert_eq!(
        (&escalated[0]["level"], &escalated[0]["on_call_level"]),
        (&json!(1), &json!(2))
    );
    let (_, v) = api
        .get(&format!(
            "/api/v1/alerts/{}",
            carl_alert["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(v["escalations"], 1, "{v}");
    assert!(entries(api, "p-1", "alert.escalated").await.is_empty());
    // Ann's level 2 fell due no later than Carl's, in the same pass of the scheduler or an
    // earlier one: acknowledged, it was never taken.
    assert_eq!(entries(api, "p-1", "alert.notify_step").await.len(), 1);
    assert_eq!(sink.received().len(), 3, "two to Nina, one to Omar");
}

/// The SMTP server down when the alert opens: the notification is retried (each attempt on the
/// timeline), and delivered once when the server is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_email_waits_for_a_mail_server_that_is_down_and_is_delivered_once_when_it_is_back() {
    let port = free_port();
    let channels = config(&smtp_toml(&format!("smtp://127.0.0.1:{port}"), ""));
    let g = Gateway::start_with(|c| c.smtp = channels.smtp.clone()).await;
    let api = &g.client;
    north_ward(api).await;
    let secret = north_patient(api, "p-1", "Ann Brown").await;
    publish_readings(
        g.mqtt,
        "ox-p-1",
        &secret,
        &json!({"metric": "spo2", "value": 84}),
    )
    .await;
    let retries = eventually(WAIT, "two failed attempts", || async {
        let r = entries(api, "p-1", "notification.retry").await;
        (r.len() >= 2).then_some(r)
    })
    .await;
    assert!(
        retries[0]["error"]
            .as_str()
            .is_some_and(|e| !e.contains("nina@")),
        "{retries:?}"
    );
    let port_arg = port.to_string();
    let sink = SmtpSink::start(&["--port", &port_arg]).await;
    let mail = sink.wait_for(1).await;
    assert_eq!(mail[0]["rcpt_tos"], json!(["nina@clinic.example"]));
    eventually(WAIT, "the delivery on the timeline", || async {
        (entries(api, "p-1", "notification.delivered").await.len() == 1).then_some(())
    })
    .await;
    assert_eq!(sink.received().len(), 1, "delivered once");
    assert_eq!(entries(api, "p-1", "alert.notify_step").await.len(), 1);
}

/// Vigil killed (SIGKILL) after the alert and before its notification could be delivered (the
/// mail server was down): after restart, with the server up, it is delivered once, and the
/// step is not taken again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_pending_when_vigil_is_killed_is_delivered_once_after_restart() {
    let port = free_port();
    let url = format!("smtp://127.0.0.1:{port}");
    let env = [
        ("VIGIL_SMTP__URL", url.as_str()),
        ("VIGIL_SMTP__FROM", "Vigil <vigil@clinic.example>"),
    ];
    let dir = tempfile::tempdir().unwrap();
    let mut vigil = spawn_vigil_with(dir.path(), "127.0.0.1:0", &env).await;
    let mqtt = vigil.mqtt;
    let api = Api::new(vigil.http);
    north_ward(&api).await;
    let secret = north_patient(&api, "p-1", "Ann Brown").await;
    publish_readings(
        mqtt,
        "ox-p-1",
        &secret,
        &json!({"metric": "spo2", "value": 84}),
    )
    .await;
    eventually(WAIT, "a failed attempt", || async {
        (!entries(&api, "p-1", "notification.retry").await.is_empty()).then_some(())
    })
    .await;
    vigil.child.start_kill().unwrap(); // SIGKILL
    vigil.child.wait().await.unwrap();

    let port_arg = port.to_string();
    let sink = SmtpSink::start(&["--port", &port_arg]).await;
    let vigil = spawn_vigil_with(dir.path(), &mqtt.to_string(), &env).await;
    let api = Api::new(vigil.http);
    // A claim the killed process held lapses after a minute; then it is sent.
    let mail = eventually(
        Duration::from_secs(90),
        "the email after restart",
        || async {
            let got = sink.received();
            (!got.is_empty()).then_some(got)
        },
    )
    .await;
    assert_eq!(mail[0]["rcpt_tos"], json!(["nina@clinic.example"]));
    eventually(WAIT, "the delivery on the timeline", || async {
        (entries(&api, "p-1", "notification.delivered").await.len() == 1).then_some(())
    })
    .await;
    assert_eq!(sink.received().len(), 1, "delivered once");
    assert_eq!(entries(&api, "p-1", "alert.notify_step").await.len(), 1);
}

/// An address the mail server refuses for good: the notification fails at once (no retries),
/// and the failure on the timeline, which every clinician of the patient reads, says why
/// without the address the server echoed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_address_fails_once_and_the_timeline_does_not_repeat_it() {
    let sink = SmtpSink::start(&["--reject", "nina@clinic.example"]).await;
    let channels = config(&smtp_toml(&format!("smtp://127.0.0.1:{}", sink.port), ""));
    let g = Gateway::start_with(|c| c.smtp = channels.smtp.clone()).await;
    let api = &g.client;
    north_ward(api).await;
    let secret = north_patient(api, "p-1", "Ann Brown").await;
    publish_readings(
        g.mqtt,
        "ox-p-1",
        &secret,
        &json!({"metric": "spo2", "value": 84}),
    )
    .await;
    let failed = eventually(WAIT, "the failure on the timeline", || async {
        let f = entries(api, "p-1", "notification.failed").await;
        (!f.is_empty()).then_some(f)
    })
    .await;
    let error = failed[0]["error"].as_str().unwrap();
    assert!(error.contains("550"), "{error}");
    assert!(!error.to_lowercase().contains("nina@"), "{error}");
    assert!(entries(api, "p-1", "notification.retry").await.is_empty());
    assert!(sink.received().is_empty());
}
