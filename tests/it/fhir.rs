//! Vigil's FHIR resources and SMART client against a receiver nobody here wrote the checks of:
//! `tests/clients/receiver.py` validates every resource with the `fhir.resources` R4B models and
//! verifies SMART client assertions with `cryptography`.
//!
//! [`Receiver`] is the test double for every outward connector (webhook, FHIR server, SMART
//! token endpoint); other tests start it the same way.

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use base64::Engine as _;
use reqwest::StatusCode;
use serde_json::{Value, json};
use vigil::crm::fhir::{self, AlertFacts, DeviceFacts, Ident, PatientFacts, ServerRef};
use vigil::crm::smart::SmartClient;
use vigil::domain::{DeviceId, Metric, Observation, PatientId, now_ms};

use crate::support::{Double, clients_dir};

const FHIR_TOKEN: &str = "fhir-test-token-0123";

/// `tests/clients/receiver.py` on a port of its choosing, killed when dropped.
pub(crate) struct Receiver(Double);

impl Receiver {
    /// Starts the receiver with `args` (`--webhook-secret`, `--fhir-token`, `--fhir-batch`,
    /// `--smart-public-key` + `--smart-client-id`) and waits until it listens.
    pub(crate) async fn start(args: &[&str]) -> Receiver {
        let script = clients_dir().join("receiver.py");
        let mut all = vec![script.to_str().unwrap()];
        all.extend_from_slice(args);
        let install = "tests/requirements.txt (./scripts/test installs it)";
        Receiver(Double::spawn("python3", &all, install).await)
    }

    /// The URL of `path` on the receiver, e.g. `url("/fhir")` for Vigil's `fhir.base_url`.
    pub(crate) fn url(&self, path: &str) -> String {
        self.0.url(path)
    }

    /// What arrived: `{"webhooks", "webhook_attempts", "webhook_rejected", "fhir",
    /// "fhir_requests", "invalid", "dangling", "batches", "tokens_issued", "token_errors",
    /// "control"}`.
    pub(crate) async fn state(&self) -> Value {
        self.0.state().await
    }

    /// Schedules failures: `{"fail_next": n, "fail_status": 503}`, `{"down": true}`,
    /// `{"reset": true}`.
    pub(crate) async fn control(&self, body: Value) -> Value {
        self.0.control(body).await
    }

    /// Sends `resource` as a FHIR client would: `POST {Type}` with `If-None-Exist` from its
    /// identifier, or with `put`, a conditional update `PUT {Type}?identifier=…`.
    pub(crate) async fn send(
        &self,
        resource: &Value,
        token: &str,
        put: bool,
    ) -> (StatusCode, Value) {
        let kind = resource["resourceType"].as_str().unwrap();
        let query = fhir::identifier_query(resource).expect("every resource has an identifier");
        let req = if put {
            self.0.http.put(self.url(&format!("/fhir/{kind}?{query}")))
        } else {
            self.0
                .http
                .post(self.url(&format!("/fhir/{kind}")))
                .header("If-None-Exist", query)
        };
        let resp = req
            .bearer_auth(token)
            .header("Content-Type", "application/fhir+json")
            .body(resource.to_string())
            .send()
            .await
            .unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap())
    }
}

/// Creates `resource` (conditionally) and answers it as a reference target.
async fn create(rx: &Receiver, resource: &Value, kind: &'static str) -> ServerRef {
    let (status, body) = rx.send(resource, FHIR_TOKEN, false).await;
    assert_eq!(status, StatusCode::CREATED, "{resource}\n→ {body}");
    let ident = &resource["identifier"][0];
    ServerRef {
        kind,
        id: body["id"].as_str().unwrap().to_owned(),
        ident: Ident::new(
            ident["system"].as_str().unwrap(),
            ident["value"].as_str().unwrap(),
        ),
    }
}

/// A value every metric accepts: the middle of its plausible range.
fn reading(metric: Metric, time_ms: i64) -> Observation {
    let (lo, hi) = metric.plausible_range();
    let mid = (lo + hi) / 2.0;
    Observation {
        patient_id: PatientId::parse("p-fhir-1").unwrap(),
        device_id: DeviceId::parse("dev-fhir-1").unwrap(),
        metric,
        value: if metric.is_integral() {
            mid.round()
        } else {
            mid
        },
        time_ms,
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// A new P-384 key pair: (PKCS#8 private key PEM, SubjectPublicKeyInfo PEM).
pub(crate) fn p384_key() -> (String, String) {
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &SystemRandom::new())
            .unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
    let spki = pair.public_key().as_der().unwrap();
    (
        pem("PRIVATE KEY", pkcs8.as_ref()),
        pem("PUBLIC KEY", spki.as_ref()),
    )
}

#[tokio::test]
async fn every_resource_validates_and_a_resend_makes_no_duplicate() {
    let rx = Receiver::start(&["--fhir-token", FHIR_TOKEN]).await;
    let t0 = 1_795_611_600_000;
    let readings: Vec<Observation> = Metric::ALL
        .iter()
        .enumerate()
        .map(|(i, &m)| reading(m, t0 + i as i64 * 1_250))
        .collect();
    let patient = readings[0].patient_id.clone();
    let spo2 = readings.iter().find(|o| o.metric == Metric::Spo2).unwrap();
    let open = AlertFacts {
        alert_id: "alr_3f9c0001",
        patient_id: &patient,
        rule_id: "spo2-low",
        severity: "high",
        message: "spo2 < 90 % for 60 s (latest 86 %)",
        opened_ms: t0,
        resolved_ms: None,
        trigger: Some(spo2),
    };
    let resolved_earlier = AlertFacts {
        alert_id: "alr_3f9c0000",
        severity: "medium",
        resolved_ms: Some(t0 + 600_000),
        trigger: None,
        ..open
    };

    // The Patient and Device first: the receiver, like a strict server, refuses a reference
    // to nothing.
    let mrn = Ident::new("urn:oid:2.16.840.1.113883.3.4242", "MRN-0042");
    let pat = create(
        &rx,
        &fhir::patient(&PatientFacts {
            id: &patient,
            name: "Ada Lovelace",
            birth_date: Some("1950-04-23"),
            mrn: Some(&mrn),
        }),
        "Patient",
    )
    .await;
    let dev = create(
        &rx,
        &fhir::device(
            &DeviceFacts {
                id: "dev-fhir-1",
                profile: "pulse-oximeter",
                profile_name: "Pulse oximeter",
                revoked: false,
            },
            &pat,
        ),
        "Device",
    )
    .await;
    let trigger = create(
        &rx,
        &fhir::observation(spo2, &pat, Some(&dev)),
        "Observation",
    )
    .await;
    let flag = create(&rx, &fhir::flag(&open, &pat), "Flag").await;
    let about = [flag, trigger];

    let mut resources: Vec<Value> = readings
        .iter()
        .filter(|o| o.metric != Metric::Spo2)
        .map(|o| fhir::observation(o, &pat, Some(&dev)))
        .collect();
    resources.push(fhir::observation(&readings[0], &pat, None));
    resources.last_mut().unwrap()["identifier"][0]["value"] = json!("without-a-device");
    resources.push(fhir::flag(&resolved_earlier, &pat));
    for (i, event) in ["alert.opened", "alert.escalated", "alert.resolved"]
        .into_iter()
        .enumerate()
    {
        let event_id = format!("evt_{i}");
        resources.push(fhir::communication(
            &open,
            event,
            &event_id,
            t0 + 1_000,
            &pat,
            &about,
        ));
    }
    resources.push(fhir::communication(
        &resolved_earlier,
        "alert.resolved",
        "evt_9",
        t0 + 600_000,
        &pat,
        &[],
    ));

    for r in &resources {
        let (status, created) = rx.send(r, FHIR_TOKEN, false).await;
        assert_eq!(status, StatusCode::CREATED, "{r}\n→ {created}");
        let (status, again) = rx.send(r, FHIR_TOKEN, false).await;
        assert_eq!(status, StatusCode::OK, "a resend of {r} → {again}");
        assert_eq!(
            again["id"], created["id"],
            "the resend finds the same resource"
        );
    }

    // The alert resolves: a conditional update replaces its Flag in place.
    let resolved = AlertFacts {
        resolved_ms: Some(t0 + 120_000),
        ..open
    };
    let (status, updated) = rx
        .send(&fhir::flag(&resolved, &pat), FHIR_TOKEN, true)
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["status"], "inactive");

    let state = rx.state().await;
    assert_eq!(state["invalid"], json!([]), "{:#}", state["invalid"]);
    assert_eq!(state["dangling"], json!([]), "{:#}", state["dangling"]);
    let count = |kind: &str| state["fhir"][kind].as_array().map_or(0, Vec::len);
    assert_eq!(count("Patient"), 1);
    assert_eq!(count("Device"), 1);
    assert_eq!(count("Observation"), Metric::ALL.len() + 1);
    assert_eq!(count("Flag"), 2);
    assert_eq!(count("Communication"), 4);
    let flag = state["fhir"]["Flag"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["identifier"][0]["value"] == "alr_3f9c0001")
        .unwrap();
    assert_eq!(flag["status"], "inactive");
    assert_eq!(flag["meta"]["versionId"], "2");

    // The receiver does refuse what R4B forbids, so a pass above means something.
    let mut bad = fhir::observation(spo2, &pat, Some(&dev));
    bad["effectiveDateTime"] = json!("yesterday");
    bad["identifier"][0]["value"] = json!("another");
    let (status, outcome) = rx.send(&bad, FHIR_TOKEN, false).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{outcome}");
    assert_eq!(rx.state().await["invalid"].as_array().unwrap().len(), 1);
    let (status, _) = rx.send(&resources[0], "wrong-token", false).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // A reference to a Patient the server does not have is refused too.
    let stranger = ServerRef {
        id: "no-such-patient".into(),
        ..pat.clone()
    };
    let mut orphan = fhir::observation(spo2, &stranger, None);
    orphan["identifier"][0]["value"] = json!("orphan");
    let (status, outcome) = rx.send(&orphan, FHIR_TOKEN, false).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{outcome}");
}

/// A `batch` Bundle of Vigil's readings validates as an R4B Bundle, and its answer is read
/// entry by entry (a refused entry does not hold back the others).
#[tokio::test]
async fn a_batch_of_readings_validates_and_is_answered_entry_by_entry() {
    let rx = Receiver::start(&["--fhir-token", FHIR_TOKEN, "--fhir-batch"]).await;
    let patient = PatientId::parse("p-fhir-1").unwrap();
    let pat = create(
        &rx,
        &fhir::patient(&PatientFacts {
            id: &patient,
            name: "Ada",
            birth_date: None,
            mrn: None,
        }),
        "Patient",
    )
    .await;
    let t0 = 1_795_611_600_000;
    let mut resources: Vec<Value> = Metric::ALL
        .iter()
        .enumerate()
        .map(|(i, &m)| fhir::observation(&reading(m, t0 + i as i64 * 1_000), &pat, None))
        .collect();
    let stranger = ServerRef {
        id: "gone".into(),
        ..pat.clone()
    };
    resources.push(fhir::observation(
        &reading(Metric::HeartRate, t0 - 1),
        &stranger,
        None,
    ));
    let http = reqwest::Client::new();
    let post = |bundle: Value| {
        http.post(rx.url("/fhir"))
            .bearer_auth(FHIR_TOKEN)
            .header("Content-Type", "application/fhir+json")
            .body(bundle.to_string())
            .send()
    };
    for round in 0..2 {
        let resp = post(fhir::batch(&resources)).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let answer: Value = resp.json().await.unwrap();
        let outcomes = fhir::batch_outcomes(&answer, resources.len()).unwrap();
        let (last, rest) = outcomes.split_last().unwrap();
        let want = if round == 0 { 201 } else { 200 };
        assert!(rest.iter().all(|o| o.status == want), "{outcomes:?}");
        assert_eq!(last.status, 422);
        assert!(
            last.detail.as_ref().unwrap().contains("Patient/gone"),
            "{last:?}"
        );
    }
    let state = rx.state().await;
    assert_eq!(state["invalid"], json!([]), "{:#}", state["invalid"]);
    assert_eq!(state["batches"], 2);
    assert_eq!(
        state["fhir"]["Observation"].as_array().unwrap().len(),
        Metric::ALL.len()
    );
}

#[tokio::test]
async fn smart_backend_services_token_is_issued_cached_and_refused_to_a_stranger() {
    let dir = tempfile::tempdir().unwrap();
    let (private_pem, public_pem) = p384_key();
    let public_file = dir.path().join("smart-public.pem");
    std::fs::write(&public_file, public_pem).unwrap();
    let rx = Receiver::start(&[
        "--smart-public-key",
        public_file.to_str().unwrap(),
        "--smart-client-id",
        "vigil-test",
    ])
    .await;
    let client = |pem: &str, client_id: &str| {
        SmartClient::from_pem(
            rx.url("/token"),
            client_id.into(),
            "system/Observation.c system/Flag.cu system/Communication.c".into(),
            "vigil-key-1".into(),
            pem.as_bytes(),
        )
        .unwrap()
    };
    let smart = client(&private_pem, "vigil-test");
    let http = reqwest::Client::new();
    let now_s = now_ms() / 1000;

    let token = smart.access_token(&http, now_s).await.unwrap();
    assert!(!token.is_empty());
    // 269 s later the token (300 s) still has more than 30 s left: no new request.
    assert_eq!(smart.access_token(&http, now_s + 269).await.unwrap(), token);
    assert_eq!(rx.state().await["tokens_issued"], 1);

    // The token opens the FHIR server.
    let resource = fhir::patient(&PatientFacts {
        id: &PatientId::parse("p-smart").unwrap(),
        name: "Ada",
        birth_date: None,
        mrn: None,
    });
    let (status, body) = rx.send(&resource, &token, false).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // A token obtained 271 s ago (its assertion still within the receiver's window) has less
    // than 30 s left now, so it is replaced.
    let old = client(&private_pem, "vigil-test");
    let stale = old.access_token(&http, now_s - 271).await.unwrap();
    let fresh = old.access_token(&http, now_s).await.unwrap();
    assert_ne!(stale, fresh);
    smart.forget_token().await;
    assert_ne!(smart.access_token(&http, now_s).await.unwrap(), token);
    assert_eq!(rx.state().await["tokens_issued"], 4);

    // Someone else's key, or our key under another client id: refused, and the error says so.
    let (stranger_pem, _) = p384_key();
    for (pem, id) in [
        (stranger_pem.as_str(), "vigil-test"),
        (private_pem.as_str(), "someone-else"),
    ] {
        let err = client(pem, id)
            .access_token(&http, now_s)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("invalid_client") && err.contains("401"),
            "{err}"
        );
    }
    let state = rx.state().await;
    assert_eq!(state["tokens_issued"], 4);
    assert_eq!(state["token_errors"].as_array().unwrap().len(), 2);
}

/// The receiver itself: the failures other tests schedule happen, and webhook signatures are
/// checked as Standard Webhooks says (signed here with aws-lc-rs's HMAC, not Vigil's code).
#[tokio::test]
async fn the_receiver_fails_on_demand_and_checks_webhook_signatures() {
    use aws_lc_rs::hmac;

    let key = b"a-webhook-signing-key-of-32-bytes";
    let secret = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    );
    let rx = Receiver::start(&["--webhook-secret", &secret, "--fhir-token", FHIR_TOKEN]).await;
    let http = reqwest::Client::new();
    let hook = |id: &'static str, signing_key: &'static [u8]| {
        let body = json!({"type": "alert.opened", "timestamp": "2026-11-25T13:00:00Z",
                          "data": {"alert_id": "alr_1"}})
        .to_string();
        let ts = (now_ms() / 1000).to_string();
        let tag = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, signing_key),
            format!("{id}.{ts}.{body}").as_bytes(),
        );
        let sig = base64::engine::general_purpose::STANDARD.encode(tag.as_ref());
        http.post(rx.url("/hooks/vigil"))
            .header("webhook-id", id)
            .header("webhook-timestamp", ts)
            .header("webhook-signature", format!("v1,bm90IGl0 v1,{sig}"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };

    rx.control(json!({"fail_next": 1})).await;
    assert_eq!(
        hook("msg_1", key).await.unwrap().status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        hook("msg_1", key).await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        hook("msg_2", b"some-other-key-entirely-32-bytes")
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
    rx.control(json!({"down": true})).await;
    assert!(hook("msg_3", key).await.is_err(), "no answer while down");
    let id = PatientId::parse("p-control").unwrap();
    let observation = fhir::patient(&PatientFacts {
        id: &id,
        name: "Ada",
        birth_date: None,
        mrn: None,
    });
    assert!(http.post(rx.url("/fhir/Patient")).send().await.is_err());
    rx.control(json!({"down": false, "fail_next": 1, "fail_status": 500}))
        .await;
    let (status, _) = rx.send(&observation, FHIR_TOKEN, false).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    let (status, _) = rx.send(&observation, FHIR_TOKEN, false).await;
    assert_eq!(status, StatusCode::CREATED);

    let state = rx.state().await;
    let delivered = state["webhooks"].as_array().unwrap();
    assert_eq!(delivered.len(), 1, "{state:#}");
    assert_eq!(delivered[0]["id"], "msg_1");
    assert_eq!(delivered[0]["attempt_no"], 2);
    assert_eq!(delivered[0]["data"]["alert_id"], "alr_1");
    assert_eq!(state["webhook_attempts"], 4);
    assert_eq!(state["webhook_rejected"][0]["id"], "msg_2");
    let statuses: Vec<&Value> = state["fhir_requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["status"])
        .collect();
    assert_eq!(statuses, [&Value::Null, &json!(500), &json!(201)]);
}
