//! The notification channels against real servers: email to aiosmtpd
//! (`tests/clients/smtp_sink.py`) over plain SMTP, STARTTLS and SMTPS, and SMS to the
//! receiver's form endpoint (`tests/clients/receiver.py --sms-token`); what arrives, that it
//! carries no reading or name by default, and how failures are classified. Also
//! `vigil notify test`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use vigil::alerts::rules::Severity;
use vigil::config::{Config, Overrides};
use vigil::notify::{Channel, Channels, Notice, PatientRef, SendError, message};
use vigil::registry::record::{Alert, AlertStatus, Trigger};

use crate::fhir::Receiver;
use crate::support::{Double, clients_dir, eventually, free_port, issue_cert};

const VIGIL: &str = env!("CARGO_BIN_EXE_vigil");
const FROM: &str = "Vigil <vigil@clinic.example>";
const LINK: &str = "https://vigil.clinic.example/alerts/alr_0011";
pub(crate) const SMS_TOKEN: &str = "sms-test-token-0123";

/// aiosmtpd on a port of its choosing, writing what it accepts to a file; killed when dropped.
pub(crate) struct SmtpSink {
    pub(crate) port: u16,
    out: PathBuf,
    _double: Double,
    _dir: tempfile::TempDir,
}

impl SmtpSink {
    /// Starts `smtp_sink.py` with `args` (`--tls`, `--cert`, `--key`, `--auth`, `--reject`,
    /// `--defer`).
    pub(crate) async fn start(args: &[&str]) -> SmtpSink {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("received.jsonl");
        let script = clients_dir().join("smtp_sink.py");
        let mut all = vec![script.to_str().unwrap(), "--out", out.to_str().unwrap()];
        all.extend_from_slice(args);
        let install = "aiosmtpd from tests/requirements.txt (./scripts/test installs it)";
        let double = Double::spawn("python3", &all, install).await;
        let port = double.base.rsplit(':').next().unwrap().parse().unwrap();
        SmtpSink {
            port,
            out,
            _double: double,
            _dir: dir,
        }
    }

    /// What it has accepted so far, one JSON object per message.
    pub(crate) fn received(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Waits until it has accepted `n` messages.
    pub(crate) async fn wait_for(&self, n: usize) -> Vec<Value> {
        eventually(
            Duration::from_secs(10),
            "the SMTP sink's messages",
            || async {
                let got = self.received();
                (got.len() >= n).then_some(got)
            },
        )
        .await
    }
}

/// The configuration Vigil would load from `toml` (validated as at start-up).
pub(crate) fn config(toml: &str) -> Config {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vigil.toml");
    std::fs::write(&path, toml).unwrap();
    Config::load(Some(&path), Vec::new(), &Overrides::default())
        .unwrap_or_else(|e| panic!("{e}\n{toml}"))
}

pub(crate) fn smtp_toml(url: &str, extra: &str) -> String {
    format!("[smtp]\nurl = \"{url}\"\nfrom = \"{FROM}\"\n{extra}")
}

fn channels(toml: &str) -> Channels {
    Channels::from_config(&config(toml)).unwrap()
}

/// An alert whose message and trigger hold a reading (86 %) and its limit (90 %).
fn alert() -> Alert {
    Alert {
        id: "alr_0011".into(),
        patient_id: "p-0042".into(),
        rule_id: "spo2-low".into(),
        kind: "threshold".into(),
        severity: Severity::High,
        status: AlertStatus::Open,
        opened_at: "2026-11-25T13:00:00Z".into(),
        message: "spo2 < 90 % for 1 min (latest 86 %)".into(),
        trigger: Some(Trigger {
            device_id: "ox-7".into(),
            metric: "spo2".into(),
            value: 86.0,
            unit: "%".into(),
            time: "2026-11-25T13:00:00Z".into(),
        }),
        escalations: 0,
        acknowledged_at: None,
        acknowledged_by: None,
        ack_note: None,
        resolved_at: None,
        resolved_by: None,
        resolve_note: None,
        assigned_to: None,
        assigned_at: None,
        snoozed_until: None,
        snooze_reason: None,
    }
}

const PATIENT: PatientRef<'static> = PatientRef {
    id: "p-0042",
    name: "Margaret Thompson",
};

fn assert_minimum_necessary(text: &str) {
    for leak in ["86", "90 %", "Margaret", "Thompson", "ox-7", "latest"] {
        assert!(!text.contains(leak), "{leak:?} left Vigil:\n{text}");
    }
}

/// A CA and a certificate for 127.0.0.1 signed by it, in `dir`: (`ca.crt`, `smtp.crt`,
/// `smtp.key`).
async fn certificates(dir: &Path) -> (String, String, String) {
    issue_cert(
        dir,
        "ca",
        "smtp",
        "localhost",
        Some("IP:127.0.0.1,DNS:localhost"),
    )
    .await;
    let p = |f: &str| dir.join(f).to_str().unwrap().to_owned();
    (p("ca.crt"), p("smtp.crt"), p("smtp.key"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_email_over_plain_smtp_says_what_fired_for_whom_and_where_and_nothing_more() {
    let sink = SmtpSink::start(&[]).await;
    let ch = channels(&smtp_toml(&format!("smtp://127.0.0.1:{}", sink.port), ""));
    assert_eq!(ch.configured(), vec![Channel::Email]);
    let notice = ch.notice_for_alert("ntf_0011_1", &alert(), PATIENT, LINK);
    let sent = ch
        .send(Channel::Email, "nina@clinic.example", &notice)
        .await
        .unwrap();
    assert_eq!(
        sent.message_id.as_deref(),
        Some("<vigil.ntf_0011_1@clinic.example>")
    );
    let receipt = sent.receipt.unwrap();
    assert!(receipt.contains("queued as SINK1"), "{receipt}");

    let got = sink.wait_for(1).await;
    let m = &got[0];
    assert_eq!(m["mail_from"], "vigil@clinic.example");
    assert_eq!(m["rcpt_tos"], json!(["nina@clinic.example"]));
    assert_eq!(m["tls"], false);
    let h = &m["headers"];
    assert_eq!(h["from"], FROM);
    assert_eq!(h["to"], "nina@clinic.example");
    assert_eq!(
        h["subject"],
        "[Vigil] HIGH alert: SpO2 outside its limit - M.T."
    );
    assert_eq!(h["message-id"], "<vigil.ntf_0011_1@clinic.example>");
    assert_eq!(h["auto-submitted"], "auto-generated");
    assert!(
        h["content-type"]
            .as_str()
            .unwrap()
            .starts_with("text/plain"),
        "{h}"
    );
    assert!(h["date"].is_string(), "{h}");
    let body = m["body"].as_str().unwrap();
    for needed in ["HIGH alert", "Rule: spo2-low", "Patient: M.T.", LINK] {
        assert!(body.contains(needed), "{needed:?} not in\n{body}");
    }
    // SMTP lines end in CRLF.
    assert_eq!(
        body.replace("\r\n", "\n").trim_end(),
        message::email(&notice).body.trim_end()
    );
    assert_minimum_necessary(m["data"].as_str().unwrap());

    // A retried send carries the same Message-ID: the recipient can tell it is the same one.
    ch.send(Channel::Email, "nina@clinic.example", &notice)
        .await
        .unwrap();
    let got = sink.wait_for(2).await;
    assert_eq!(got[1]["headers"]["message-id"], h["message-id"]);

    // With details turned on, the name and the reading go too.
    let detailed = channels(&format!(
        "{}[notify]\ninclude_details = true\n",
        smtp_toml(&format!("smtp://127.0.0.1:{}", sink.port), "")
    ));
    let notice = detailed.notice_for_alert("ntf_0011_2", &alert(), PATIENT, LINK);
    detailed
        .send(Channel::Email, "nina@clinic.example", &notice)
        .await
        .unwrap();
    let got = sink.wait_for(3).await;
    let body = got[2]["body"].as_str().unwrap();
    assert!(
        body.contains("Margaret Thompson") && body.contains("latest 86 %"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_required_encrypts_before_logging_in_and_sending() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates(dir.path()).await;
    let sink = SmtpSink::start(&[
        "--tls",
        "starttls",
        "--cert",
        &cert,
        "--key",
        &key,
        "--auth",
        "vigil:mail-s3cret",
    ])
    .await;
    let url = format!("smtp://127.0.0.1:{}?starttls=required", sink.port);
    let creds = format!(
        "username = \"vigil\"\npassword = \"mail-s3cret\"\nca_file = \"{ca}\"\nhello_name = \"vigil.clinic.example\"\n"
    );
    let ch = channels(&smtp_toml(&url, &creds));
    let notice = ch.notice_for_alert("ntf_tls", &alert(), PATIENT, LINK);
    let sent = ch
        .send(Channel::Email, "nina@clinic.example", &notice)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(sent.receipt.unwrap().contains("queued"));
    let got = sink.wait_for(1).await;
    assert_eq!(got[0]["tls"], true, "{}", got[0]);
    assert_eq!(got[0]["auth"], "vigil");
    assert_minimum_necessary(got[0]["data"].as_str().unwrap());

    // The wrong password: the server's 535 is for good.
    let wrong = creds.replace("mail-s3cret", "guess");
    let e = channels(&smtp_toml(&url, &wrong))
        .send(Channel::Email, "nina@clinic.example", &notice)
        .await
        .unwrap_err();
    assert!(matches!(e, SendError::Permanent(_)), "{e:?}");
    assert!(!e.to_string().contains("guess"), "{e}");

    // Without the clinic's CA the certificate is not trusted: nothing is sent, and a later
    // attempt (after the CA is configured, or the certificate replaced) may succeed.
    let untrusted = channels(&smtp_toml(
        &url,
        "username = \"vigil\"\npassword = \"mail-s3cret\"\n",
    ));
    let e = untrusted
        .send(Channel::Email, "nina@clinic.example", &notice)
        .await
        .unwrap_err();
    assert!(e.is_retryable(), "{e:?}");

    // A server that offers no STARTTLS gets nothing when it is required.
    let plain = SmtpSink::start(&[]).await;
    let e = channels(&smtp_toml(
        &format!("smtp://127.0.0.1:{}?starttls=required", plain.port),
        &format!("ca_file = \"{ca}\"\n"),
    ))
    .send(Channel::Email, "nina@clinic.example", &notice)
    .await
    .unwrap_err();
    assert!(matches!(e, SendError::Permanent(_)), "{e:?}");
    assert!(e.to_string().contains("STARTTLS"), "{e}");
    assert!(plain.received().is_empty());
    assert_eq!(sink.received().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtps_is_tls_from_the_first_byte() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates(dir.path()).await;
    let sink = SmtpSink::start(&["--tls", "implicit", "--cert", &cert, "--key", &key]).await;
    let ch = channels(&smtp_toml(
        &format!("smtps://127.0.0.1:{}", sink.port),
        &format!("ca_file = \"{ca}\"\n"),
    ));
    let notice = ch.notice_for_alert("ntf_smtps", &alert(), PATIENT, LINK);
    ch.send(Channel::Email, "nina@clinic.example", &notice)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let got = sink.wait_for(1).await;
    assert_eq!(got[0]["tls"], true, "{}", got[0]);
    assert_eq!(
        got[0]["headers"]["message-id"],
        "<vigil.ntf_smtps@clinic.example>"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_failures_are_retryable_or_permanent() {
    let notice = Notice::test("ntf_fail", "http://127.0.0.1:8080");

    // Nobody listening: try again later.
    let down = channels(&smtp_toml(&format!("smtp://127.0.0.1:{}", free_port()), ""));
    let e = down
        .send(Channel::Email, "nina@clinic.example", &notice)
        .await
        .unwrap_err();
    assert!(e.is_retryable(), "{e:?}");

    let sink = SmtpSink::start(&[
        "--reject",
        "gone@clinic.example",
        "--defer",
        "busy@clinic.example",
    ])
    .await;
    let ch = channels(&smtp_toml(&format!("smtp://127.0.0.1:{}", sink.port), ""));
    // 550 for the recipient: for good.
    let e = ch
        .send(Channel::Email, "gone@clinic.example", &notice)
        .await
        .unwrap_err();
    assert!(matches!(e, SendError::Permanent(_)), "{e:?}");
    assert!(e.to_string().contains("550"), "{e}");
    // 451: later.
    let e = ch
        .send(Channel::Email, "busy@clinic.example", &notice)
        .await
        .unwrap_err();
    assert!(e.is_retryable(), "{e:?}");
    assert!(e.to_string().contains("451"), "{e}");
    // Not an address: never sent.
    let e = ch
        .send(Channel::Email, "nina at clinic", &notice)
        .await
        .unwrap_err();
    assert!(matches!(e, SendError::Permanent(_)), "{e:?}");
    assert!(sink.received().is_empty());
    // SMS is not configured here.
    let e = ch
        .send(Channel::Sms, "+4915112345678", &notice)
        .await
        .unwrap_err();
    assert_eq!(e, SendError::NotConfigured(Channel::Sms));
}

pub(crate) async fn sms_receiver() -> Receiver {
    Receiver::start(&["--sms-token", SMS_TOKEN]).await
}

pub(crate) fn sms_toml(url: &str, token: &str) -> String {
    format!("[sms]\nurl = \"{url}\"\ntoken = \"{token}\"\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sms_is_a_form_post_with_the_bearer_token_and_the_short_text() {
    let r = sms_receiver().await;
    let ch = channels(&sms_toml(&r.url("/sms/send"), SMS_TOKEN));
    assert_eq!(ch.configured(), vec![Channel::Sms]);
    let notice = ch.notice_for_alert("ntf_0011_sms", &alert(), PATIENT, LINK);
    let sent = ch
        .send(Channel::Sms, "+49 151 1234 5678", &notice)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(sent.receipt.as_deref(), Some("SM1"));
    assert_eq!(sent.message_id, None);
    let state = r.state().await;
    assert_eq!(state["sms_rejected"], json!([]));
    let sms = &state["sms"][0];
    assert_eq!(sms["to"], "+4915112345678");
    assert_eq!(sms["idempotency_key"], "ntf_0011_sms");
    let body = sms["body"].as_str().unwrap();
    assert_eq!(body, message::sms(&notice));
    assert_eq!(
        body,
        format!("Vigil HIGH alert: SpO2 outside its limit (spo2-low). Patient M.T. {LINK}")
    );
    assert!(message::sms_fits_one(body));
    assert_minimum_necessary(body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sms_failures_are_retryable_or_permanent() {
    let r = sms_receiver().await;
    let ch = channels(&sms_toml(&r.url("/sms/send"), SMS_TOKEN));
    let notice = Notice::test("ntf_sms_fail", "http://127.0.0.1:8080");
    let send = || ch.send(Channel::Sms, "+4915112345678", &notice);
    for (status, retryable) in [
        (500, true),
        (503, true),
        (429, true),
        (400, false),
        (422, false),
    ] {
        r.control(json!({"fail_next": 1, "fail_status": status}))
            .await;
        let e = send().await.unwrap_err();
        assert_eq!(e.is_retryable(), retryable, "{status}: {e:?}");
        assert!(e.to_string().contains(&status.to_string()), "{e}");
    }
    // The provider hangs up without an answer: later.
    r.control(json!({"down": true})).await;
    assert!(send().await.unwrap_err().is_retryable());
    r.control(json!({"down": false})).await;
    // Nobody listening: later.
    let down = channels(&sms_toml(
        &format!("http://127.0.0.1:{}/sms/send", free_port()),
        SMS_TOKEN,
    ));
    let e = down
        .send(Channel::Sms, "+4915112345678", &notice)
        .await
        .unwrap_err();
    assert!(e.is_retryable(), "{e:?}");
    // The wrong token: 401, for good (and the token is not in the reason).
    let wrong = channels(&sms_toml(&r.url("/sms/send"), "not-the-token"));
    let e = wrong
        .send(Channel::Sms, "+4915112345678", &notice)
        .await
        .unwrap_err();
    assert!(matches!(e, SendError::Permanent(_)), "{e:?}");
    assert!(!e.to_string().contains("not-the-token"), "{e}");
    // Not a number: never sent.
    let before = r.state().await["sms_attempts"].as_u64().unwrap();
    let e = ch
        .send(Channel::Sms, "0151 1234", &notice)
        .await
        .unwrap_err();
    assert!(matches!(e, SendError::Permanent(_)), "{e:?}");
    assert_eq!(r.state().await["sms_attempts"].as_u64().unwrap(), before);
    // Then it works again.
    send().await.unwrap();
    assert_eq!(r.state().await["sms"].as_array().unwrap().len(), 1);
}

/// Runs `vigil notify test` with `args`; its exit code and standard output and error.
async fn notify_test(config: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = tokio::process::Command::new(VIGIL)
        .args(["notify", "test", "--config", config.to_str().unwrap()])
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .await
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vigil_notify_test_sends_by_each_channel_and_says_what_happened() {
    let sink = SmtpSink::start(&["--reject", "gone@clinic.example"]).await;
    let r = sms_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("vigil.toml");
    std::fs::write(
        &file,
        format!(
            "[http]\npublic_url = \"https://vigil.clinic.example\"\n{}{}",
            smtp_toml(&format!("smtp://127.0.0.1:{}", sink.port), ""),
            sms_toml(&r.url("/sms/send"), SMS_TOKEN)
        ),
    )
    .unwrap();

    let (code, out, err) = notify_test(
        &file,
        &["--email", "nina@clinic.example", "--sms", "+4915112345678"],
    )
    .await;
    assert_eq!(code, Some(0), "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].starts_with("email to nina@clinic.example: sent, Message-ID <vigil.ntf_test_")
            && lines[0].contains("queued as SINK1"),
        "{out}"
    );
    assert_eq!(
        lines[1],
        "sms to +4915112345678: sent; the receiver answered: SM1"
    );
    let got = sink.wait_for(1).await;
    assert_eq!(got[0]["headers"]["subject"], "[Vigil] Test notification");
    assert!(
        got[0]["body"]
            .as_str()
            .unwrap()
            .contains("https://vigil.clinic.example"),
        "{}",
        got[0]
    );
    let sms = &r.state().await["sms"][0];
    assert!(
        sms["body"]
            .as_str()
            .unwrap()
            .starts_with("Vigil test message"),
        "{sms}"
    );

    // A refused recipient: exit 1, and the line says retrying will not help.
    let (code, out, _) = notify_test(&file, &["--email", "gone@clinic.example"]).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.starts_with(
            "email to gone@clinic.example: not sent (permanent: retrying will not help)"
        ) && out.contains("550"),
        "{out}"
    );

    // No channel asked for, or one that is not configured: exit 2, one line.
    let (code, _, err) = notify_test(&file, &[]).await;
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--email"), "{err}");
    let only_smtp = dir.path().join("smtp.toml");
    std::fs::write(
        &only_smtp,
        smtp_toml(&format!("smtp://127.0.0.1:{}", sink.port), ""),
    )
    .unwrap();
    let (code, _, err) = notify_test(&only_smtp, &["--sms", "+4915112345678"]).await;
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("[sms] is not configured"), "{err}");
    // A bad [smtp] stops it naming the key.
    std::fs::write(&only_smtp, "[smtp]\nurl = \"smtp://127.0.0.1:25\"\n").unwrap();
    let (code, _, err) = notify_test(&only_smtp, &["--email", "nina@clinic.example"]).await;
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("smtp.from"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_whose_smtp_ca_file_cannot_be_read_does_not_start_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let flags = Overrides {
        data_dir: Some(dir.path().join("data")),
        http_listen: Some("127.0.0.1:0".into()),
        mqtt_listen: Some("127.0.0.1:0".into()),
    };
    let file = dir.path().join("vigil.toml");
    std::fs::write(
        &file,
        smtp_toml(
            "smtps://127.0.0.1:1",
            "ca_file = \"/nonexistent/mail-ca.pem\"\n",
        ),
    )
    .unwrap();
    let cfg = Config::load(Some(&file), Vec::new(), &flags).unwrap();
    let e = vigil::app::App::build(cfg, None).await.err().unwrap();
    assert!(e.to_string().starts_with("smtp.ca_file: "), "{e}");
}
