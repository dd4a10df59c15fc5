//! A real FHIR R4 engine nobody here wrote, for the FHIR write-back's tests:
//! `tests/fhir-server/server.mjs`, Medplum's `@medplum/fhir-router` over its in-memory
//! repository (npm, from the committed lockfile). Unlike `tests/clients/receiver.py` it searches
//! as a FHIR server does (identifier, `patient=`/`subject=` by reference, `_include`), answers
//! batch and transaction Bundles and validates every write with Medplum's validator against the
//! R4 StructureDefinitions.
//!
//! The tests here pin down what the write-back relies on, and what the engine does not do.

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use crate::support::Double;

/// Where the engine serves FHIR, under its root.
const BASE_PATH: &str = "/fhir/R4";
const TOKEN: &str = "fhir-engine-token-0123";
const MRN: &str = "urn:oid:1.2.36.146.595.217.0.1";
const OBS_IDS: &str = "urn:vigil:observation";

/// `tests/fhir-server/server.mjs` on a port of its choosing, killed when dropped.
pub(crate) struct FhirServer {
    double: Double,
    token: Option<String>,
}

/// One answer of the engine.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Value,
}

impl FhirServer {
    /// Starts the engine; with a token it answers 401 to a FHIR request without
    /// `Authorization: Bearer <token>` (every call of this handle sends it).
    pub(crate) async fn start(token: Option<&str>) -> FhirServer {
        FhirServer::start_with(token, &[]).await
    }

    /// Starts the engine with more of its flags: `--check-references` (a write naming a
    /// resource that does not exist is refused), `--without batch`, `--without transaction`.
    pub(crate) async fn start_with(token: Option<&str>, args: &[&str]) -> FhirServer {
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fhir-server/server.mjs");
        let mut all = vec![script.to_str().unwrap()];
        if let Some(t) = token {
            all.extend(["--token", t]);
        }
        all.extend_from_slice(args);
        let install = "tests/fhir-server/node_modules (./scripts/test runs npm ci there)";
        FhirServer {
            double: Double::spawn("node", &all, install).await,
            token: token.map(str::to_owned),
        }
    }

    /// The FHIR base URL, e.g. for Vigil's `fhir.base_url`: `http://127.0.0.1:{port}/fhir/R4`.
    pub(crate) fn base(&self) -> String {
        self.double.url(BASE_PATH)
    }

    /// `method {base}/{path}` with the token, `headers` and a JSON `body`.
    pub(crate) async fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Reply {
        let url = format!("{}/{path}", self.base());
        let mut req = self.double.http.request(method.parse().unwrap(), url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        if let Some(b) = body {
            req = req
                .header("Content-Type", "application/fhir+json")
                .body(b.to_string());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {path} → {status}, not JSON ({e}): {text}"));
        Reply {
            status,
            headers,
            body,
        }
    }

    /// Creates `resource` (`POST {base}/{Type}`), conditionally when `if_none_exist` is given.
    pub(crate) async fn create(&self, resource: &Value, if_none_exist: Option<&str>) -> Reply {
        let kind = resource["resourceType"].as_str().expect("a resourceType");
        let headers: Vec<(&str, &str)> = if_none_exist
            .map(|q| vec![("If-None-Exist", q)])
            .unwrap_or_default();
        self.call("POST", kind, &headers, Some(resource)).await
    }

    /// The searchset Bundle of `query` (`Observation?patient=Patient/…`); panics unless 200.
    pub(crate) async fn search(&self, query: &str) -> Value {
        let r = self.call("GET", query, &[], None).await;
        assert_eq!(r.status, StatusCode::OK, "GET {query} → {}", r.body);
        assert_eq!(r.body["type"], "searchset", "{}", r.body);
        r.body
    }

    /// The resources `query` matches (not those it includes).
    pub(crate) async fn matches(&self, query: &str) -> Vec<Value> {
        let bundle = self.search(query).await;
        let entries = bundle["entry"].as_array().cloned().unwrap_or_default();
        entries
            .into_iter()
            .filter(|e| e["search"]["mode"] == "match")
            .map(|e| e["resource"].clone())
            .collect()
    }

    /// Everything stored and every FHIR request: `{"resources": {Type: [..]}, "requests":
    /// [{"method", "path", "query", "if_none_exist", "status"}], "control": {..}}`.
    pub(crate) async fn state(&self) -> Value {
        self.double.state().await
    }

    /// Schedules failures as the receiver does (`{"fail_next": n, "fail_status": 503}`,
    /// `{"down": true}`, `{"reset": true}`), and `{"check_references": true}`.
    pub(crate) async fn control(&self, body: Value) -> Value {
        self.double.control(body).await
    }
}

fn patient(mrn: &str) -> Value {
    json!({
        "resourceType": "Patient",
        "identifier": [{"system": MRN, "value": mrn}],
        "name": [{"family": "Testpatient"}],
    })
}

/// An SpO2 Observation filed under `subject` (a Reference), with its own identifier.
fn spo2(id: &str, subject: Value) -> Value {
    json!({
        "resourceType": "Observation",
        "identifier": [{"system": OBS_IDS, "value": id}],
        "status": "final",
        "category": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "vital-signs"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "59408-5"}]},
        "subject": subject,
        "effectiveDateTime": "2026-11-25T13:00:00Z",
        "valueQuantity": {"value": 86, "unit": "%", "system": "http://unitsofmeasure.org",
                          "code": "%"},
    })
}

fn ids(resources: &[Value]) -> Vec<&str> {
    resources
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect()
}

fn issue_text(outcome: &Value) -> String {
    assert_eq!(outcome["resourceType"], "OperationOutcome", "{outcome}");
    outcome["issue"].to_string()
}

/// What the write-back does, step by step: find the patient by MRN, create an Observation under
/// `Patient/<id>` conditionally (twice: one resource), find it by the patient's reference.
#[tokio::test]
async fn the_engine_files_a_conditional_create_under_the_patient_found_by_identifier() {
    let fs = FhirServer::start(Some(TOKEN)).await;

    // The CapabilityStatement is public and says what the write-back may use.
    let meta = reqwest::get(format!("{}/metadata", fs.base()))
        .await
        .unwrap();
    assert_eq!(meta.status(), StatusCode::OK);
    let meta: Value = meta.json().await.unwrap();
    assert_eq!(meta["resourceType"], "CapabilityStatement");
    assert_eq!(meta["fhirVersion"], "4.0.1");
    assert_eq!(
        meta["rest"][0]["interaction"],
        json!([{"code": "transaction"}, {"code": "batch"}])
    );
    let observation = meta["rest"][0]["resource"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["type"] == "Observation")
        .unwrap();
    assert_eq!(observation["conditionalCreate"], true);
    assert_eq!(
        observation["referencePolicy"],
        json!(["literal", "logical"])
    );

    // The clinic's record of the patient, and Vigil finding it by MRN.
    let created = fs.create(&patient("MRN-0042"), None).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let pid = created.body["id"].as_str().unwrap().to_owned();
    let location = created.headers["location"].to_str().unwrap();
    assert!(
        location.starts_with(&format!("{}/Patient/{pid}/_history/", fs.base())),
        "{location}"
    );
    assert_eq!(
        created.headers["content-type"],
        "application/fhir+json; charset=utf-8"
    );
    let found = fs
        .matches(&format!("Patient?identifier={MRN}|MRN-0042"))
        .await;
    assert_eq!(ids(&found), [pid.as_str()]);
    assert!(
        fs.matches(&format!("Patient?identifier={MRN}|MRN-0043"))
            .await
            .is_empty()
    );

    // A conditional create, sent twice (a replay): one resource.
    let subject = json!({"reference": format!("Patient/{pid}"),
                         "identifier": {"system": MRN, "value": "MRN-0042"}});
    let obs = spo2("alr_1-trigger", subject);
    let condition = format!("identifier={OBS_IDS}|alr_1-trigger");
    let first = fs.create(&obs, Some(&condition)).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    assert!(first.headers.contains_key("location"));
    let again = fs.create(&obs, Some(&condition)).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(again.body["id"], first.body["id"]);
    assert!(!again.headers.contains_key("location"));
    let oid = first.body["id"].as_str().unwrap();
    let stored = &fs.state().await["resources"]["Observation"];
    assert_eq!(stored.as_array().unwrap().len(), 1, "{stored}");

    // Found by the patient's reference, either parameter, and with the patient included.
    for query in [
        format!("Observation?patient=Patient/{pid}"),
        format!("Observation?subject=Patient/{pid}"),
        format!("Observation?patient={pid}"),
    ] {
        assert_eq!(ids(&fs.matches(&query).await), [oid], "{query}");
    }
    let bundle = fs
        .search(&format!(
            "Observation?patient=Patient/{pid}&_include=Observation:patient"
        ))
        .await;
    let included: Vec<&Value> = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["search"]["mode"] == "include")
        .collect();
    assert_eq!(included.len(), 1, "{bundle}");
    assert_eq!(included[0]["resource"]["id"], pid.as_str());
    assert_eq!(
        included[0]["fullUrl"],
        format!("{}/Patient/{pid}", fs.base())
    );

    // An identifier-only subject (what Vigil wrote before) is stored, but never found by the
    // patient's reference; searches the engine cannot answer are refused, not answered empty.
    let logical = spo2(
        "logical",
        json!({"identifier": {"system": MRN, "value": "MRN-0042"}}),
    );
    assert_eq!(fs.create(&logical, None).await.status, StatusCode::CREATED);
    assert_eq!(
        fs.matches(&format!("Observation?patient=Patient/{pid}"))
            .await
            .len(),
        1
    );
    for query in [
        format!("Observation?subject:identifier={MRN}|MRN-0042"),
        format!("Observation?patient.identifier={MRN}|MRN-0042"),
        "Observation?no-such-parameter=1".to_owned(),
    ] {
        let r = fs.call("GET", &query, &[], None).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{query} → {}", r.body);
        assert!(issue_text(&r.body).contains("not-supported"), "{}", r.body);
    }

    // A reference to a Patient that does not exist: this engine (like the memory repository
    // under it) stores it as sent, and no search by a real patient finds it...
    let orphan = spo2("orphan", json!({"reference": "Patient/no-such-patient"}));
    let r = fs.create(&orphan, None).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let dangling = fs
        .matches("Observation?patient=Patient/no-such-patient")
        .await;
    assert_eq!(ids(&dangling), [r.body["id"].as_str().unwrap()]);
    // ...unless it enforces references, as many servers do: then it is refused, naming it.
    fs.control(json!({"check_references": true})).await;
    let refused = fs
        .create(
            &spo2("orphan-2", json!({"reference": "Patient/no-such-patient"})),
            None,
        )
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    let text = issue_text(&refused.body);
    assert!(text.contains("Patient/no-such-patient"), "{text}");
    assert!(text.contains("Observation.subject"), "{text}");
    let r = fs
        .create(
            &spo2("kept", json!({"reference": format!("Patient/{pid}")})),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);

    // It validates what it stores (Medplum's validator, R4 StructureDefinitions).
    let mut bad = spo2("bad", json!({"reference": format!("Patient/{pid}")}));
    bad["effectiveDateTime"] = json!("yesterday");
    let r = fs.create(&bad, None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert!(
        issue_text(&r.body).contains("Invalid dateTime"),
        "{}",
        r.body
    );

    // The token, the scheduled failures, the reset.
    let anonymous = reqwest::get(format!("{}/Patient", fs.base()))
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(anonymous.headers()["www-authenticate"], "Bearer");
    fs.control(json!({"fail_next": 1, "fail_status": 503}))
        .await;
    assert_eq!(
        fs.call("GET", "Patient", &[], None).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(fs.search("Patient").await["total"], 1);
    fs.control(json!({"down": true})).await;
    let url = format!("{}/Patient", fs.base());
    assert!(reqwest::get(url).await.is_err(), "no answer while down");
    fs.control(json!({"reset": true})).await;
    let state = fs.state().await;
    assert_eq!(state["resources"], json!({}));
    assert_eq!(state["control"]["check_references"], false);
    assert_eq!(fs.search("Patient").await["total"], 0);
}

/// Batch and transaction Bundles, as far as the engine takes them: conditional creates in a
/// batch (a replay creates nothing), `urn:uuid` references in a transaction, all or nothing;
/// conditional references inside a transaction are stored unresolved; without `transaction`
/// the engine says so and refuses one.
#[tokio::test]
async fn batches_and_transactions_as_far_as_the_engine_takes_them() {
    let fs = FhirServer::start(None).await;
    let pid = fs.create(&patient("MRN-7"), None).await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let reference = json!({"reference": format!("Patient/{pid}")});

    // A batch of conditional creates, sent twice: one resource per entry.
    let entry = |id: &str| {
        json!({
            "resource": spo2(id, reference.clone()),
            "request": {"method": "POST", "url": "Observation",
                        "ifNoneExist": format!("identifier={OBS_IDS}|{id}")},
        })
    };
    let batch = json!({"resourceType": "Bundle", "type": "batch",
                       "entry": [entry("r1"), entry("r2"), entry("r3")]});
    for (round, want) in [(1, "201"), (2, "200")] {
        let r = fs.call("POST", "", &[], Some(&batch)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.body["type"], "batch-response");
        let statuses: Vec<&Value> = r.body["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| &e["response"]["status"])
            .collect();
        assert_eq!(statuses, [want, want, want], "round {round}: {}", r.body);
    }
    let filed = fs
        .matches(&format!("Observation?patient=Patient/{pid}"))
        .await;
    assert_eq!(filed.len(), 3);

    // A transaction: the urn:uuid of a new Patient is rewritten to its id; a conditional
    // reference (`Patient?identifier=…`) is stored as written, not resolved.
    let tx = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:6b7d2d4e-9a43-4c57-8d1f-1f2e3d4c5b6a",
         "resource": patient("MRN-8"),
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": spo2("t1", json!({"reference": "urn:uuid:6b7d2d4e-9a43-4c57-8d1f-1f2e3d4c5b6a"})),
         "request": {"method": "POST", "url": "Observation"}},
        {"resource": spo2("t2", json!({"reference": format!("Patient?identifier={MRN}|MRN-7")})),
         "request": {"method": "POST", "url": "Observation"}},
    ]});
    let r = fs.call("POST", "", &[], Some(&tx)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["type"], "transaction-response");
    let new_patient = r.body["entry"][0]["resource"]["id"].as_str().unwrap();
    assert_eq!(
        r.body["entry"][1]["resource"]["subject"]["reference"],
        format!("Patient/{new_patient}")
    );
    assert_eq!(
        r.body["entry"][2]["resource"]["subject"]["reference"],
        format!("Patient?identifier={MRN}|MRN-7"),
        "conditional references are not resolved"
    );
    assert_eq!(
        fs.matches(&format!("Observation?patient=Patient/{pid}"))
            .await
            .len(),
        3
    );

    // A transaction with one bad entry stores none of them.
    let mut bad = spo2("t4", reference.clone());
    bad["status"] = json!(["final"]);
    let tx = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": spo2("t3", reference.clone()), "request": {"method": "POST", "url": "Observation"}},
        {"resource": bad, "request": {"method": "POST", "url": "Observation"}},
    ]});
    let r = fs.call("POST", "", &[], Some(&tx)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert!(
        fs.matches(&format!("Observation?identifier={OBS_IDS}|t3"))
            .await
            .is_empty()
    );

    // A server without transactions (many EHR APIs): the CapabilityStatement says so.
    let plain = FhirServer::start_with(None, &["--without", "transaction"]).await;
    let meta = plain.call("GET", "metadata", &[], None).await.body;
    assert_eq!(meta["rest"][0]["interaction"], json!([{"code": "batch"}]));
    let r = plain.call("POST", "", &[], Some(&tx)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert!(issue_text(&r.body).contains("not-supported"));
    let requests = plain.state().await["requests"].clone();
    assert_eq!(requests[1]["status"], 400, "{requests}");
}
