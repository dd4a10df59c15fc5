//! The FHIR write-back against a real FHIR engine nobody here wrote (Medplum's
//! `@medplum/fhir-router` in memory, [`FhirServer`]), as an EHR would see it: what Vigil writes
//! is found by the patient's reference (`Observation?patient=Patient/<id>`, `Flag?patient=`,
//! `Communication?patient=`), each resource once, through escalation, resolution, answers lost
//! after the engine carried a write out, and a restart of Vigil; with `fhir.all_readings`, every
//! stored reading is in the chart once; and a patient the engine does not know is a failed
//! delivery that names the identifier until the MRN is set and the delivery retried.
//!
//! The engine runs with `--check-references`: a write whose reference names nothing there is
//! refused, as on servers that enforce referential integrity, so a reference Vigil got wrong
//! fails the test instead of being stored.

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::alerts::{exactly, kinds, patient_with_app, publish, timeline};
use crate::fhir_chart::{MRN_SYSTEM, deliveries, fhir_config_with};
use crate::fhir_server::FhirServer;
use crate::support::{Api, Gateway, eventually, metric, publish_readings};

const WAIT: Duration = Duration::from_secs(40);
const TOKEN: &str = "fhir-ehr-token-0123";

/// `[fhir]` against the engine, with fast retries; `adjust` for the rest.
fn fhir_config(
    fs: &FhirServer,
    adjust: impl FnOnce(&mut vigil::config::FhirConfig),
) -> vigil::config::FhirConfig {
    fhir_config_with(fs.base(), TOKEN, adjust)
}

/// The clinic's chart: a Patient on the engine with an MRN; its id there.
async fn chart(fs: &FhirServer, mrn: &str) -> String {
    let patient = json!({
        "resourceType": "Patient",
        "identifier": [{"system": MRN_SYSTEM, "value": mrn}],
        "name": [{"family": "Lovelace", "given": ["Ada"]}],
    });
    let r = fs.create(&patient, None).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    r.body["id"].as_str().unwrap().to_owned()
}

/// A patient in Vigil with the clinic's MRN.
async fn enrolled(api: &Api, id: &str, mrn: &str) {
    let (s, v) = api
        .post(
            "/api/v1/patients",
            json!({"id": id, "name": "Ada Lovelace", "mrn": mrn}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
}

/// Waits until there are FHIR deliveries (alert events) and every one is done (none pending,
/// none failed), with the readings spool empty; returns the deliveries.
async fn all_delivered(gw: &Gateway) -> Vec<Value> {
    let (api, http) = (&gw.client, gw.http);
    eventually(WAIT, "every FHIR delivery delivered", || async move {
        let d = deliveries(api, "sink=fhir&limit=1000").await;
        let done = !d.is_empty() && d.iter().all(|d| d["status"] == "delivered");
        (done && spool_empty(http).await).then_some(d)
    })
    .await
}

/// Whether nothing waits to go to the FHIR server (events and readings).
async fn spool_empty(http: std::net::SocketAddr) -> bool {
    metric(http, r#"vigil_outbox_pending{sink="fhir"}"#).await == Some(0.0)
}

fn ids_of(resources: &[Value]) -> Vec<&str> {
    resources.iter().filter_map(|r| r["id"].as_str()).collect()
}

async fn alerts_of(api: &Api) -> Vec<Value> {
    let (s, v) = api.get("/api/v1/alerts?patient_id=p-ehr").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["alerts"].as_array().unwrap().clone()
}

/// The resources of `kind` the engine holds, all of them.
async fn stored(fs: &FhirServer, kind: &str) -> Vec<Value> {
    fs.state().await["resources"][kind]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The resources `kind?patient=Patient/<id>` finds, checked to be every one of that kind the
/// engine holds, each with a business identifier of its own.
async fn filed_under(fs: &FhirServer, kind: &str, patient_id: &str) -> Vec<Value> {
    let found = fs
        .matches(&format!("{kind}?patient=Patient/{patient_id}&_count=1000"))
        .await;
    let all = stored(fs, kind).await;
    assert_eq!(
        found.len(),
        all.len(),
        "every {kind} the engine holds is found by the patient's reference"
    );
    let idents: BTreeSet<String> = found
        .iter()
        .map(|r| r["identifier"][0]["value"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(idents.len(), found.len(), "each {kind} once: {found:#?}");
    found
}

/// Alerts with escalation, acknowledgement and resolution, answers lost after the engine
/// carried writes out (so that Vigil replays them), and a restart of Vigil with an alert not
/// yet delivered: the EHR finds every Observation, Flag and Communication under the patient's
/// chart, once, with the device they came from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_are_filed_under_the_chart_once_through_escalation_resolution_and_a_restart() {
    let fs = &FhirServer::start_with(Some(TOKEN), &["--check-references"]).await;
    let chart_id = chart(fs, "MRN-5001").await;
    let config = fhir_config(fs, |_| {});
    let gw = Gateway::start_with(move |c| {
        c.alerts.tick_ms = 100;
        c.alerts.escalate_after_s = 2;
        c.alerts.max_escalations = 1;
        c.fhir = Some(config);
    })
    .await;
    let api = &gw.client;
    enrolled(api, "p-ehr", "MRN-5001").await;
    let secret = api.device("p-ehr-app", "p-ehr", "patient-app").await;

    // The engine carries out the next two writes but their answers are lost: Vigil cannot know
    // they happened and sends them again.
    fs.control(json!({"lose_next": 2})).await;
    publish(gw.mqtt, "p-ehr-app", &secret, &[("bp_systolic", 200.0, 5)]).await;
    let a = exactly(api, "p-ehr", 1).await;
    let first = a[0]["id"].as_str().unwrap().to_owned();
    eventually(WAIT, "the escalation", || async move {
        kinds(&timeline(api, "p-ehr").await)
            .contains(&"alert.escalated")
            .then_some(())
    })
    .await;
    for action in ["ack", "resolve"] {
        let (s, v) = api
            .post(
                &format!("/api/v1/alerts/{first}/{action}"),
                json!({"note": "seen"}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{action}: {v}");
    }
    all_delivered(&gw).await;

    // The engine goes down; an alert is raised and Vigil restarts before it can deliver it.
    fs.control(json!({"down": true})).await;
    publish(gw.mqtt, "p-ehr-app", &secret, &[("spo2", 80.0, 5)]).await;
    eventually(WAIT, "an alert on the low SpO2", || async move {
        let (_, v) = api.get("/api/v1/alerts?patient_id=p-ehr").await;
        let a = v["alerts"].as_array().cloned().unwrap_or_default();
        a.iter()
            .any(|a| a["trigger"]["metric"] == "spo2")
            .then_some(())
    })
    .await;
    let (cfg, dir) = gw.stop_keeping_data().await;
    fs.control(json!({"down": false})).await;
    let gw = Gateway::start_again(cfg, dir).await;
    let api = &gw.client;
    // Every open alert acknowledged, so that no escalation comes after the count; then every
    // event delivered, and as many Communications on the engine as events that make one (all
    // but resolutions, which update the Flag; acknowledgements are not written). A duplicate,
    // or a lost one, never settles.
    let told = eventually(
        WAIT,
        "every event delivered and filed once",
        || async move {
            for a in alerts_of(api).await {
                if a["status"] == "open" {
                    let id = a["id"].as_str().unwrap();
                    api.post(&format!("/api/v1/alerts/{id}/ack"), json!({}))
                        .await;
                }
            }
            let d = deliveries(api, "sink=fhir&limit=1000").await;
            let done = !d.is_empty() && d.iter().all(|d| d["status"] == "delivered");
            let told = d
                .iter()
                .filter(|d| d["event_type"] != "alert.resolved")
                .count();
            let filed = stored(fs, "Communication").await.len();
            (done && spool_empty(gw.http).await && filed == told).then_some(told)
        },
    )
    .await;

    let requests = fs.state().await["requests"].clone();
    let lost = requests
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["answer_lost"] == true)
        .count();
    assert_eq!(lost, 2, "two answers were lost: {requests:#}");

    let flags = filed_under(fs, "Flag", &chart_id).await;
    let observations = filed_under(fs, "Observation", &chart_id).await;
    let communications = filed_under(fs, "Communication", &chart_id).await;
    let alerts = alerts_of(api).await;
    assert_eq!(flags.len(), alerts.len(), "one Flag per alert");
    for alert in &alerts {
        let flag = flags
            .iter()
            .find(|f| f["identifier"][0]["value"] == alert["id"])
            .unwrap_or_else(|| panic!("a Flag for {alert}"));
        let want = if alert["status"] == "resolved" {
            "inactive"
        } else {
            "active"
        };
        assert_eq!(flag["status"], want, "{flag}");
    }
    // The reading that opened each alert, once even where it opened two (a threshold and the
    // early-warning score).
    // (An alert the engine reopens on its tick, with no reading behind it, has none.)
    let triggers: BTreeSet<String> = alerts
        .iter()
        .filter(|a| a["trigger"].is_object())
        .map(|a| a["trigger"].to_string())
        .collect();
    assert_eq!(observations.len(), triggers.len(), "{alerts:#?}");
    assert_eq!(communications.len(), told);
    assert!(told >= 3, "opened, escalated, opened: {told}");

    // Each reference names the chart's Patient, with the identifier it was found by beside it,
    // and the Device Vigil created for the patient's app.
    let chart_ref = format!("Patient/{chart_id}");
    for r in flags.iter().chain(&observations).chain(&communications) {
        assert_eq!(r["subject"]["reference"], chart_ref.as_str(), "{r}");
        assert_eq!(
            r["subject"]["identifier"],
            json!({"system": MRN_SYSTEM, "value": "MRN-5001"}),
            "{r}"
        );
    }
    let devices = fs
        .matches("Device?identifier=urn:vigil:device|p-ehr-app")
        .await;
    assert_eq!(devices.len(), 1, "one Device: {devices:#?}");
    let device_ref = format!("Device/{}", devices[0]["id"].as_str().unwrap());
    assert!(
        observations
            .iter()
            .all(|o| o["device"]["reference"] == device_ref.as_str()),
        "{observations:#?}"
    );
    // Vigil found the chart and created no Patient of its own.
    assert_eq!(stored(fs, "Patient").await.len(), 1);
    // An EHR's search by the device also finds the readings.
    assert_eq!(
        fs.matches(&format!("Observation?device={device_ref}"))
            .await
            .len(),
        observations.len()
    );
    gw.stop().await;
}

/// With `fhir.all_readings`, every stored reading is an Observation in the chart, once: in
/// `batch` Bundles where the engine offers them (an answer lost on the way, and a restart in
/// the middle), one request each where it does not. Vigil creates the Patient here
/// (`fhir.create_patients`), as a clinic that makes Vigil the source would have it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_all_readings_every_stored_reading_is_in_the_chart_once() {
    for without_batch in [false, true] {
        let args: &[&str] = if without_batch {
            &["--check-references", "--without", "batch"]
        } else {
            &["--check-references"]
        };
        let fs = &FhirServer::start_with(Some(TOKEN), args).await;
        let config = fhir_config(fs, |f| {
            f.all_readings = true;
            f.create_patients = true;
            f.readings_batch_max = 10;
            f.readings_per_s = 200;
        });
        let gw = Gateway::start_with(move |c| c.fhir = Some(config)).await;
        enrolled(&gw.client, "p-vitals", "MRN-5002").await;
        let secret = gw
            .client
            .device("p-vitals-ox", "p-vitals", "pulse-oximeter")
            .await;
        let now = vigil::domain::now_ms();
        // Heart rate once a second, in the normal range (no alert).
        let body = |from: i64, to: i64| {
            let r: Vec<Value> = (from..to)
                .map(|i| {
                    json!({"metric": "heart_rate", "value": 60 + i % 20,
                           "time": vigil::domain::format_rfc3339(now - (120 - i) * 1000)})
                })
                .collect();
            Value::from(r)
        };
        fs.control(json!({"lose_next": 1})).await;
        publish_readings(gw.mqtt, "p-vitals-ox", &secret, &body(0, 30)).await;
        let (cfg, dir) = gw.stop_keeping_data().await;
        let gw = Gateway::start_again(cfg, dir).await;
        // The device resends ten it already sent, and twenty new.
        publish_readings(gw.mqtt, "p-vitals-ox", &secret, &body(20, 50)).await;
        let stored_readings = eventually(WAIT, "50 readings stored", || async {
            let o = gw.client.observations("p-vitals", "limit=1000").await;
            (o.len() == 50).then_some(o)
        })
        .await;
        let http = gw.http;
        eventually(
            WAIT,
            "50 Observations and nothing left to send",
            || async move {
                let n = stored(fs, "Observation").await.len();
                (n >= 50 && spool_empty(http).await).then_some(())
            },
        )
        .await;

        let patients = stored(fs, "Patient").await;
        assert_eq!(patients.len(), 1, "Vigil created the Patient once");
        let chart_id = patients[0]["id"].as_str().unwrap();
        for ident in [
            format!("{MRN_SYSTEM}|MRN-5002"),
            "urn:vigil:patient|p-vitals".into(),
        ] {
            let found = fs.matches(&format!("Patient?identifier={ident}")).await;
            assert_eq!(ids_of(&found), [chart_id], "{ident}");
        }
        let observations = filed_under(fs, "Observation", chart_id).await;
        assert_eq!(
            observations.len(),
            stored_readings.len(),
            "every stored reading, once (without batch: {without_batch})"
        );
        let requests = fs.state().await["requests"].clone();
        let requests = requests.as_array().unwrap();
        let bundles = requests
            .iter()
            .filter(|r| r["method"] == "POST" && r["path"] == "/fhir/R4")
            .count();
        let lost = requests.iter().filter(|r| r["answer_lost"] == true).count();
        assert_eq!(lost, 1);
        if without_batch {
            assert_eq!(
                bundles, 0,
                "one request per reading where batches are not offered"
            );
        } else {
            assert!(
                (5..=10).contains(&bundles),
                "50 readings, 10 a batch, one batch replayed: {bundles} batches"
            );
        }
        gw.stop().await;
    }
}

/// A patient the engine does not know: the delivery fails at once, saying which identifier was
/// searched and what to do; once the patient's MRN is set (as the clinic's record has it) and
/// the delivery retried, it is filed under the chart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_patient_fails_naming_the_identifier_until_the_mrn_is_set() {
    let fs = &FhirServer::start_with(Some(TOKEN), &["--check-references"]).await;
    let chart_id = chart(fs, "MRN-5003").await;
    let config = fhir_config(fs, |_| {});
    let gw = Gateway::start_with(move |c| {
        c.alerts.tick_ms = 100;
        c.fhir = Some(config);
    })
    .await;
    let api = &gw.client;
    let secret = patient_with_app(api, "p-nochart").await;
    publish(
        gw.mqtt,
        "p-nochart-app",
        &secret,
        &[("bp_systolic", 200.0, 5)],
    )
    .await;
    let failed = eventually(WAIT, "a failed FHIR delivery", || async move {
        let d = deliveries(api, "sink=fhir&status=failed").await;
        (!d.is_empty()).then_some(d)
    })
    .await;
    let reason = failed[0]["last_error"].as_str().unwrap();
    assert!(
        reason.contains("no Patient with identifier urn:vigil:patient|p-nochart"),
        "{reason}"
    );
    assert!(reason.contains("set the patient's MRN"), "{reason}");
    assert!(stored(fs, "Observation").await.is_empty());
    assert!(stored(fs, "Flag").await.is_empty());

    let (s, v) = api
        .patch("/api/v1/patients/p-nochart", json!({"mrn": "MRN-5003"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let id = failed[0]["id"].as_i64().unwrap();
    let (s, v) = api
        .post(&format!("/api/v1/deliveries/{id}/retry"), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    all_delivered(&gw).await;
    for kind in ["Observation", "Flag", "Communication"] {
        assert_eq!(filed_under(fs, kind, &chart_id).await.len(), 1, "{kind}");
    }
    gw.stop().await;
}
