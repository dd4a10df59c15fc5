//! The FHIR write-back files what Vigil writes under the patient, against the test receiver
//! (`tests/clients/receiver.py`, which validates every resource with `fhir.resources` and, as a
//! strict server does, refuses a reference to nothing): the patient found by MRN, an unknown
//! patient shown as a failed delivery until the MRN is set and the delivery retried, a patient
//! merged away on the server looked up again, and every stored reading written once, in batches,
//! at the bounded rate, through a restart.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::alerts::{patient_with_app, publish};
use crate::fhir::Receiver;
use crate::support::{Api, Gateway, eventually, metric, publish_readings};

const WAIT: Duration = Duration::from_secs(30);
const TOKEN: &str = "fhir-chart-token";
/// The clinic's MRN system in these tests.
pub(crate) const MRN_SYSTEM: &str = "urn:oid:2.16.840.1.113883.3.4242";

/// `[fhir]` against the receiver, with fast retries; `adjust` for the rest.
fn fhir_config(
    base: String,
    adjust: impl FnOnce(&mut vigil::config::FhirConfig),
) -> vigil::config::FhirConfig {
    fhir_config_with(base, TOKEN, adjust)
}

/// `[fhir]` at `base` with `token`, the MRN system of these tests and fast retries; `adjust`
/// for the rest.
pub(crate) fn fhir_config_with(
    base: String,
    token: &str,
    adjust: impl FnOnce(&mut vigil::config::FhirConfig),
) -> vigil::config::FhirConfig {
    let mut f = vigil::config::FhirConfig {
        base_url: base,
        token: Some(token.into()),
        patient_identifier_system: MRN_SYSTEM.into(),
        retry: vigil::config::RetryConfig {
            retry_initial_ms: 100,
            retry_max_s: 1,
            ..Default::default()
        },
        ..Default::default()
    };
    adjust(&mut f);
    f
}

/// A Patient the clinic's server has, with an MRN; its id there.
async fn clinic_patient(rx: &Receiver, mrn: &str) -> String {
    let patient = json!({
        "resourceType": "Patient",
        "identifier": [{"system": MRN_SYSTEM, "value": mrn}],
        "name": [{"family": "Lovelace", "given": ["Ada"]}],
    });
    let (s, v) = rx.send(&patient, TOKEN, false).await;
    assert!(s.is_success(), "{v}");
    v["id"].as_str().unwrap().to_owned()
}

fn resources(state: &Value, kind: &str) -> Vec<Value> {
    state["fhir"][kind].as_array().cloned().unwrap_or_default()
}

/// The deliveries `GET /api/v1/deliveries?{query}` lists.
pub(crate) async fn deliveries(api: &Api, query: &str) -> Vec<Value> {
    let (s, v) = api.get(&format!("/api/v1/deliveries?{query}")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["deliveries"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_patient_fails_naming_the_identifier_until_the_mrn_is_set_and_retried() {
    let rx = &Receiver::start(&["--fhir-token", TOKEN]).await;
    let chart_id = clinic_patient(rx, "MRN-7001").await;
    let base = rx.url("/fhir");
    let gw = Gateway::start_with(move |c| {
        c.alerts.tick_ms = 100;
        c.fhir = Some(fhir_config(base, |_| {}));
    })
    .await;
    let api = &gw.client;
    let secret = patient_with_app(api, "p-unk").await;
    publish(gw.mqtt, "p-unk-app", &secret, &[("bp_systolic", 200.0, 5)]).await;
    let failed = eventually(WAIT, "a failed FHIR delivery", || async move {
        let d = deliveries(api, "sink=fhir&status=failed").await;
        (!d.is_empty()).then_some(d)
    })
    .await;
    let reason = failed[0]["last_error"].as_str().unwrap();
    assert!(
        reason.starts_with(
            "the FHIR server has no Patient with identifier urn:vigil:patient|p-unk: set the \
             patient's MRN"
        ),
        "{reason}"
    );
    assert!(reason.contains("fhir.create_patients = true"), "{reason}");
    assert_eq!(
        failed[0]["attempts"], 1,
        "refused at once, not retried for a day"
    );
    assert_eq!(failed[0]["patient_id"], "p-unk");
    assert!(resources(&rx.state().await, "Observation").is_empty());

    // The clinic's MRN is set; the failed delivery, retried, is filed under the chart's
    // Patient.
    let (s, v) = api
        .patch("/api/v1/patients/p-unk", json!({"mrn": "MRN-7001"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let id = failed[0]["id"].as_i64().unwrap();
    let (s, v) = api
        .post(&format!("/api/v1/deliveries/{id}/retry"), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let state = eventually(WAIT, "the event delivered", || async move {
        let st = rx.state().await;
        (resources(&st, "Communication").len() == 1).then_some(st)
    })
    .await;
    let chart = format!("Patient/{chart_id}");
    for kind in ["Observation", "Flag", "Communication"] {
        let r = resources(&state, kind);
        assert_eq!(r.len(), 1, "{kind}: {r:#?}");
        assert_eq!(r[0]["subject"]["reference"], chart.as_str(), "{kind}");
        assert_eq!(
            r[0]["subject"]["identifier"],
            json!({"system": MRN_SYSTEM, "value": "MRN-7001"})
        );
    }
    assert_eq!(resources(&state, "Patient").len(), 1, "Vigil created none");
    assert_eq!(state["invalid"], json!([]));
    assert_eq!(state["dangling"], json!([]));
    let d = eventually(WAIT, "the delivery marked delivered", || async move {
        let d = deliveries(api, "sink=fhir").await;
        (d[0]["status"] == "delivered").then_some(d)
    })
    .await;
    assert_eq!(d[0]["attempts"], 2);
    assert!(d[0]["retried_at"].is_string(), "{d:?}");
    gw.stop().await;
}

/// The server merged the patient away (the Patient Vigil cached is gone, another has the MRN):
/// the next write is refused, Vigil looks the patient up again and writes under the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patient_gone_from_the_server_is_looked_up_again() {
    let rx = &Receiver::start(&["--fhir-token", TOKEN]).await;
    let first = clinic_patient(rx, "MRN-7002").await;
    let base = rx.url("/fhir");
    let gw = Gateway::start_with(move |c| {
        c.alerts.tick_ms = 100;
        c.fhir = Some(fhir_config(base, |f| f.create_devices = false));
    })
    .await;
    let api = &gw.client;
    let (s, v) = api
        .post(
            "/api/v1/patients",
            json!({"id": "p-merge", "name": "Ada", "mrn": "MRN-7002"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let secret = api.device("p-merge-app", "p-merge", "patient-app").await;
    publish(
        gw.mqtt,
        "p-merge-app",
        &secret,
        &[("bp_systolic", 200.0, 5)],
    )
    .await;
    eventually(WAIT, "the first alert's Flag", || async move {
        (resources(&rx.state().await, "Flag").len() == 1).then_some(())
    })
    .await;
    let r = reqwest::Client::new()
        .delete(rx.url(&format!("/fhir/Patient/{first}")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let second = clinic_patient(rx, "MRN-7002").await;
    // Another alert (a different rule) for the same patient.
    publish(gw.mqtt, "p-merge-app", &secret, &[("spo2", 80.0, 5)]).await;
    let state = eventually(WAIT, "the second alert's Flag", || async move {
        let st = rx.state().await;
        (resources(&st, "Flag").len() >= 2).then_some(st)
    })
    .await;
    let flags = resources(&state, "Flag");
    assert_eq!(
        flags.last().unwrap()["subject"]["reference"],
        format!("Patient/{second}")
    );
    assert!(
        !state["dangling"].as_array().unwrap().is_empty(),
        "the stale reference was tried, and refused, first"
    );
    assert!(deliveries(api, "sink=fhir&status=failed").await.is_empty());
    gw.stop().await;
}

/// With `all_readings`, every stored reading is one Observation on the server: sent in batch
/// Bundles (the receiver offers them), never faster than `readings_per_s`, and once each through
/// a restart of Vigil in the middle and a redelivery of the same readings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_reading_is_written_once_in_batches_at_the_bounded_rate() {
    let rx = &Receiver::start(&["--fhir-token", TOKEN, "--fhir-batch"]).await;
    clinic_patient(rx, "MRN-7003").await;
    let base = rx.url("/fhir");
    let gw = Gateway::start_with(move |c| {
        c.fhir = Some(fhir_config(base, |f| {
            f.all_readings = true;
            f.readings_batch_max = 10;
            f.readings_per_s = 40;
        }));
    })
    .await;
    let (s, v) = gw
        .client
        .post(
            "/api/v1/patients",
            json!({"id": "p-all", "name": "Ada", "mrn": "MRN-7003"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let secret = gw
        .client
        .device("p-all-ox", "p-all", "pulse-oximeter")
        .await;
    // 60 readings of heart rate, one a second, in the normal range (no alert).
    let now = vigil::domain::now_ms();
    let body = |from: i64, to: i64| {
        let r: Vec<Value> = (from..to)
            .map(|i| {
                json!({"metric": "heart_rate", "value": 60 + i % 20,
                       "time": vigil::domain::format_rfc3339(now - (120 - i) * 1000)})
            })
            .collect();
        Value::from(r)
    };
    let started = Instant::now();
    publish_readings(gw.mqtt, "p-all-ox", &secret, &body(0, 40)).await;
    // A restart in the middle: what was not yet written goes out after it.
    let (cfg, dir) = gw.stop_keeping_data().await;
    let gw = Gateway::start_again(cfg, dir).await;
    let api = &gw.client;
    // The first 20 again (a device resending), and 20 new.
    publish_readings(gw.mqtt, "p-all-ox", &secret, &body(20, 60)).await;
    let state = eventually(WAIT, "60 Observations", || async move {
        let st = rx.state().await;
        (resources(&st, "Observation").len() >= 60).then_some(st)
    })
    .await;
    let elapsed = started.elapsed();
    // Nothing left to send: what the receiver holds now is all it will get.
    let http = gw.http;
    eventually(WAIT, "the FHIR queue empty", || async move {
        (metric(http, r#"vigil_outbox_pending{sink="fhir"}"#).await == Some(0.0)).then_some(())
    })
    .await;
    let state_later = rx.state().await;
    let obs = resources(&state_later, "Observation");
    assert_eq!(obs.len(), 60, "each reading once");
    let mut ids: Vec<&str> = obs
        .iter()
        .map(|o| o["identifier"][0]["value"].as_str().unwrap())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 60);
    assert_eq!(state["invalid"], json!([]));
    assert_eq!(state["dangling"], json!([]));
    let device = &resources(&state, "Device")[0];
    assert!(
        obs.iter()
            .all(|o| o["device"]["reference"]
                == format!("Device/{}", device["id"].as_str().unwrap()))
    );
    assert!(
        state["batches"].as_u64().unwrap() >= 6,
        "60 readings, 10 a batch: {}",
        state["batches"]
    );
    // 40 a second: the last batch cannot go before (60 - 10) / 40 s.
    assert!(
        elapsed >= Duration::from_millis(1250),
        "60 readings in {elapsed:?}"
    );
    assert!(deliveries(api, "sink=fhir&status=failed").await.is_empty());
    gw.stop().await;
}
