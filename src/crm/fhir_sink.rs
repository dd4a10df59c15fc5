//! The FHIR R4 connector: turns an outbox event into resources on the clinic's FHIR server,
//! filed under the patient.
//!
//! First the references: the patient's `Patient/{id}` on the server (searched by identifier,
//! or created where `fhir.create_patients` says so) and the device's `Device/{id}` (conditional
//! create, unless `fhir.create_devices` is off), as [`super::fhir_refs`] decides, cached. Then:
//!
//! - `alert.opened`: the triggering `Observation`, a `Flag` (active) and a `Communication`
//!   about both, each by conditional create (`If-None-Exist` on Vigil's identifier), so a
//!   retry after a lost answer never makes a duplicate.
//! - `alert.raised` / `alert.escalated`: the `Flag` updated, and a new `Communication`
//!   (re-notification) with its own identifier, about the Flag and the reading.
//! - `alert.resolved`: the `Flag` becomes `inactive` with its period's end, by conditional
//!   update (`PUT Flag?identifier=...`).
//! - `reading` (with `fhir.all_readings`): the reading's `Observation`; several at once in a
//!   `batch` Bundle where the server's CapabilityStatement offers batches, else one request
//!   each.
//!
//! A patient the server does not know fails the delivery at once ([`Attempt::Unmatched`]) with a
//! reason that names the identifiers searched and what to do; once the MRN is set (or
//! `create_patients` turned on), `POST /api/v1/deliveries/{id}/retry` delivers it. It never
//! writes a transaction Bundle or a conditional reference (`Patient?identifier=…` inside a
//! resource): many EHR FHIR APIs accept neither, and the plain creates work everywhere.
//!
//! Authentication is a static bearer token or SMART Backend Services.

use std::collections::HashMap;
use std::sync::Mutex;

use reqwest::Method;
use serde_json::Value;

use super::fhir::{self, AlertFacts, DeviceFacts, Ident, PatientFacts, ServerRef};
use super::fhir_refs::{self, Found, Matching, PatientKey, RefCache};
use super::retry::Attempt;
use super::smart::SmartClient;
use crate::domain::{DeviceId, Metric, Observation, PatientId, parse_rfc3339};
use crate::registry::OutboxRow;
use crate::registry::{Registry, RegistryError};

/// How the connector authenticates.
pub enum FhirAuth {
    None,
    Bearer(String),
    Smart(Box<SmartClient>),
}

/// How long what the CapabilityStatement says is trusted before it is read again (and, when it
/// could not be read, how long before trying again).
const CAPABILITIES_TTL_MS: i64 = 3_600_000;
const CAPABILITIES_RETRY_MS: i64 = 300_000;

/// Writes events and readings to one FHIR server.
pub struct FhirSink {
    http: reqwest::Client,
    base_url: String,
    auth: FhirAuth,
    registry: Registry,
    matching: Matching,
    refs: Mutex<RefCache>,
    /// Whether the server takes `batch` Bundles, and until when that answer holds.
    batch: Mutex<Option<(bool, i64)>>,
}

/// Why one request (or one step of a delivery) did not succeed.
struct Fail {
    attempt: Attempt,
    /// The server refused a write in a way a stale reference would explain (see
    /// [`fhir_refs::worth_looking_up_again`]).
    maybe_stale: bool,
}

impl From<Attempt> for Fail {
    fn from(attempt: Attempt) -> Fail {
        Fail {
            attempt,
            maybe_stale: false,
        }
    }
}

fn registry_fail(e: RegistryError) -> Fail {
    match e {
        RegistryError::NotFound(what) => {
            Attempt::Refused(format!("{what} is no longer in Vigil's registry")).into()
        }
        e => Attempt::Retry(format!("the registry could not be read: {e}")).into(),
    }
}

/// An answer from the server.
struct Answer {
    status: u16,
    location: Option<String>,
    body: Value,
}

/// The parts of an alert event the resources are built from.
struct Parsed {
    event_type: String,
    alert_id: String,
    patient: PatientId,
    rule_id: String,
    severity: String,
    message: String,
    opened_ms: i64,
    resolved_ms: Option<i64>,
    trigger: Option<Observation>,
    event_ms: i64,
}

fn parse_reading(patient: PatientId, t: &Value) -> Option<Observation> {
    Some(Observation {
        patient_id: patient,
        device_id: DeviceId::parse(t["device_id"].as_str()?).ok()?,
        metric: Metric::parse(t["metric"].as_str()?)?,
        value: t["value"].as_f64()?,
        time_ms: parse_rfc3339(t["time"].as_str()?)?,
    })
}

fn parse(payload: &str) -> Option<Parsed> {
    let v: Value = serde_json::from_str(payload).ok()?;
    let d = &v["data"];
    let s = |k: &str| d[k].as_str().map(str::to_owned);
    let patient = PatientId::parse(d["patient_id"].as_str()?).ok()?;
    let trigger = d
        .get("trigger")
        .and_then(|t| parse_reading(patient.clone(), t));
    Some(Parsed {
        event_type: v["type"].as_str()?.to_owned(),
        alert_id: s("id")?,
        rule_id: s("rule_id")?,
        severity: s("severity")?,
        message: s("message")?,
        opened_ms: parse_rfc3339(d["opened_at"].as_str()?)?,
        resolved_ms: d["resolved_at"].as_str().and_then(parse_rfc3339),
        event_ms: v["timestamp"].as_str().and_then(parse_rfc3339)?,
        patient,
        trigger,
    })
}

/// A `reading` row's payload: `{"patient_id", "device_id", "metric", "value", "time"}`.
pub fn reading_payload(o: &Observation) -> String {
    serde_json::json!({
        "patient_id": o.patient_id.as_str(),
        "device_id": o.device_id.as_str(),
        "metric": o.metric.name(),
        "value": o.value,
        "time": crate::domain::format_rfc3339(o.time_ms),
    })
    .to_string()
}

/// A `reading` row's event id: the reading's FHIR identifier, so a reading is queued once.
pub fn reading_event_id(o: &Observation) -> String {
    format!("obs_{}", fhir::observation_identifier(o))
}

fn parse_reading_row(row: &OutboxRow) -> Option<Observation> {
    let v: Value = serde_json::from_str(&row.payload).ok()?;
    let patient = PatientId::parse(v["patient_id"].as_str()?).ok()?;
    parse_reading(patient, &v)
}

/// The server's ids a delivery used, to forget should the server refuse them.
#[derive(Default)]
struct Used {
    patients: Vec<PatientId>,
    devices: Vec<String>,
    /// Whether any came from the cache (if none did, looking up again finds the same).
    cached: bool,
}

impl FhirSink {
    pub fn new(
        http: reqwest::Client,
        base_url: String,
        auth: FhirAuth,
        registry: Registry,
        matching: Matching,
    ) -> FhirSink {
        FhirSink {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            auth,
            registry,
            matching,
            refs: Mutex::new(RefCache::default()),
            batch: Mutex::new(None),
        }
    }

    fn refs(&self) -> std::sync::MutexGuard<'_, RefCache> {
        // A panic while holding the lock cannot leave the cache wrong, only incomplete.
        self.refs.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn bearer(&self, now_ms: i64) -> Result<Option<String>, Attempt> {
        match &self.auth {
            FhirAuth::None => Ok(None),
            FhirAuth::Bearer(t) => Ok(Some(t.clone())),
            FhirAuth::Smart(c) => c
                .access_token(&self.http, now_ms / 1000)
                .await
                .map(Some)
                .map_err(|e| Attempt::Retry(format!("no SMART access token: {e}"))),
        }
    }

    /// One request to the server; `path` is relative to the base (`""` for the base itself).
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        if_none_exist: Option<String>,
        now_ms: i64,
    ) -> Result<Answer, Fail> {
        let url = if path.is_empty() {
            self.base_url.clone()
        } else {
            format!("{}/{path}", self.base_url)
        };
        let mut req = self
            .http
            .request(method, url)
            .header("accept", "application/fhir+json");
        if let Some(b) = body {
            req = req
                .header("content-type", "application/fhir+json")
                .body(b.to_string());
        }
        if let Some(q) = if_none_exist {
            req = req.header("If-None-Exist", q);
        }
        if let Some(token) = self.bearer(now_ms).await? {
            req = req.bearer_auth(token);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| Attempt::Retry(format!("the FHIR server could not be reached: {e}")))?;
        let status = resp.status().as_u16();
        if status == 401
            && let FhirAuth::Smart(c) = &self.auth
        {
            c.forget_token().await;
            return Err(Attempt::Retry(
                "the FHIR server refused the access token (401); a new one will be asked for"
                    .into(),
            )
            .into());
        }
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = resp.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Answer {
            status,
            location,
            body,
        })
    }

    /// Classifies a failed answer about `what` (`Observation`, `Patient search`, ...).
    fn failed(&self, a: &Answer, what: &str) -> Fail {
        match Attempt::from_status(a.status, &format!("the FHIR server ({what})")) {
            Attempt::Refused(e) => {
                // The server's OperationOutcome says why; keep a little of it.
                let detail: String = fhir::outcome_detail(&a.body)
                    .or_else(|| (!a.body.is_null()).then(|| a.body.to_string()))
                    .unwrap_or_default()
                    .chars()
                    .take(300)
                    .collect();
                let reason = if detail.is_empty() {
                    e
                } else {
                    format!("{e}: {detail}")
                };
                Fail {
                    attempt: Attempt::Refused(reason),
                    maybe_stale: fhir_refs::worth_looking_up_again(a.status),
                }
            }
            other => other.into(),
        }
    }

    /// A conditional create (`put` false) or conditional update (`put` true) of `resource`,
    /// on its first identifier; the resource as the server now has it.
    async fn write(&self, resource: &Value, put: bool, now_ms: i64) -> Result<ServerRef, Fail> {
        let kind = kind_of(resource);
        let Some(query) = fhir::identifier_query(resource) else {
            return Err(Attempt::Refused(format!("{kind} has no identifier")).into());
        };
        let a = if put {
            let path = format!("{kind}?{query}");
            self.call(Method::PUT, &path, Some(resource), None, now_ms)
                .await?
        } else {
            self.call(Method::POST, kind, Some(resource), Some(query), now_ms)
                .await?
        };
        if !(200..300).contains(&a.status) {
            return Err(self.failed(&a, kind));
        }
        let id = fhir::written_id(&a.body, a.location.as_deref(), kind).ok_or_else(|| {
            Fail::from(Attempt::Retry(format!(
                "the FHIR server wrote the {kind} but said neither its id nor its Location"
            )))
        })?;
        let ident = &resource["identifier"][0];
        Ok(ServerRef {
            kind,
            id,
            ident: Ident::new(
                ident["system"].as_str().unwrap_or_default(),
                ident["value"].as_str().unwrap_or_default(),
            ),
        })
    }

    /// The Patients with `ident`.
    async fn search_patient(&self, ident: &Ident, now_ms: i64) -> Result<Found, Fail> {
        let path = format!("Patient?{}", ident.search());
        let a = self.call(Method::GET, &path, None, None, now_ms).await?;
        if !(200..300).contains(&a.status) {
            return Err(self.failed(&a, "Patient search"));
        }
        Ok(Found::of(fhir::searchset_ids(&a.body, "Patient")))
    }

    /// The patient's `Patient` on the server: cached, searched, or created.
    async fn patient_ref(
        &self,
        id: &PatientId,
        used: &mut Used,
        now_ms: i64,
    ) -> Result<ServerRef, Fail> {
        let p = self
            .registry
            .patient(id.clone())
            .await
            .map_err(registry_fail)?;
        let key = PatientKey {
            id: id.clone(),
            mrn: p.mrn.clone(),
        };
        used.patients.push(id.clone());
        if let Some(r) = self.refs().patient(&key) {
            used.cached = true;
            return Ok(r);
        }
        let order = self.matching.search_order(id, p.mrn.as_deref());
        for ident in &order {
            match self.search_patient(ident, now_ms).await? {
                Found::One(server_id) => {
                    let r = ServerRef {
                        kind: "Patient",
                        id: server_id,
                        ident: ident.clone(),
                    };
                    self.refs().put_patient(key, r.clone());
                    return Ok(r);
                }
                Found::Many(n) => {
                    return Err(Attempt::Unmatched(fhir_refs::ambiguous_patient(ident, n)).into());
                }
                Found::None => {}
            }
        }
        if !self.matching.create_patients {
            let reason = fhir_refs::unknown_patient(&self.matching, id, p.mrn.as_deref(), &order);
            return Err(Attempt::Unmatched(reason).into());
        }
        let mrn = self.matching.mrn_ident(p.mrn.as_deref());
        let resource = fhir::patient(&PatientFacts {
            id,
            name: &p.name,
            birth_date: p.birth_date.as_deref(),
            mrn: mrn.as_ref(),
        });
        let r = self.write(&resource, false, now_ms).await?;
        self.refs().put_patient(key, r.clone());
        Ok(r)
    }

    /// The device's `Device` on the server (cached, or by conditional create); `None` when
    /// devices are not written.
    async fn device_ref(
        &self,
        id: &DeviceId,
        patient: &ServerRef,
        used: &mut Used,
        now_ms: i64,
    ) -> Result<Option<ServerRef>, Fail> {
        if !self.matching.create_devices {
            return Ok(None);
        }
        used.devices.push(id.as_str().to_owned());
        if let Some(r) = self.refs().device(id.as_str()) {
            used.cached = true;
            return Ok(Some(r));
        }
        let d = self
            .registry
            .device(id.clone())
            .await
            .map_err(registry_fail)?;
        let profile_name = self
            .registry
            .profiles()
            .get(&d.profile)
            .map_or_else(|| d.profile.clone(), |p| p.name.clone());
        let resource = fhir::device(
            &DeviceFacts {
                id: id.as_str(),
                profile: &d.profile,
                profile_name: &profile_name,
                revoked: d.revoked,
            },
            patient,
        );
        let r = self.write(&resource, false, now_ms).await.map_err(|f| {
            let Attempt::Refused(e) = f.attempt else {
                return f;
            };
            Attempt::Refused(format!(
                "{e} (if the server takes no Device writes, set fhir.create_devices = false)"
            ))
            .into()
        })?;
        self.refs().put_device(id.as_str(), r.clone());
        Ok(Some(r))
    }

    /// Forgets the references a refused delivery used; whether any came from the cache (then
    /// looking them up again may help).
    fn forget(&self, used: &Used) -> bool {
        let mut refs = self.refs();
        for p in &used.patients {
            refs.forget_patient(p);
        }
        for d in &used.devices {
            refs.forget_device(d);
        }
        used.cached
    }

    /// Delivers one alert event (every step is idempotent, so a retry repeats it whole).
    pub async fn deliver(&self, row: &OutboxRow, now_ms: i64) -> Attempt {
        if row.event_type == "reading" {
            return self
                .deliver_readings(std::slice::from_ref(row), now_ms)
                .await
                .remove(0);
        }
        let Some(p) = parse(&row.payload) else {
            return Attempt::Refused("the event could not be read back".into());
        };
        if !matches!(
            p.event_type.as_str(),
            "alert.opened" | "alert.raised" | "alert.escalated" | "alert.resolved"
        ) {
            return Attempt::Delivered;
        }
        // Once with what is cached; once more, looked up afresh, if the server refused a
        // reference it may no longer have.
        for fresh in [false, true] {
            let mut used = Used::default();
            match self
                .deliver_event(&p, &row.event_id, &mut used, now_ms)
                .await
            {
                Ok(()) => return Attempt::Delivered,
                Err(f) if f.maybe_stale && !fresh && self.forget(&used) => {
                    tracing::debug!(event_id = %row.event_id, "reference refused; looking up again");
                }
                Err(f) => return f.attempt,
            }
        }
        Attempt::Retry("the FHIR server refused the references looked up again".into())
    }

    async fn deliver_event(
        &self,
        p: &Parsed,
        event_id: &str,
        used: &mut Used,
        now_ms: i64,
    ) -> Result<(), Fail> {
        let facts = AlertFacts {
            alert_id: &p.alert_id,
            patient_id: &p.patient,
            rule_id: &p.rule_id,
            severity: &p.severity,
            message: &p.message,
            opened_ms: p.opened_ms,
            resolved_ms: p.resolved_ms,
            trigger: p.trigger.as_ref(),
        };
        let patient = self.patient_ref(&p.patient, used, now_ms).await?;
        if p.event_type == "alert.resolved" {
            self.write(&fhir::flag(&facts, &patient), true, now_ms)
                .await?;
            return Ok(());
        }
        // The reading behind the alert: created by the opening event, found again (the
        // conditional create answers with the one there) by a re-notification, which is also
        // about it.
        let trigger = match &p.trigger {
            Some(o) => {
                let device = self
                    .device_ref(&o.device_id, &patient, used, now_ms)
                    .await?;
                let obs = fhir::observation(o, &patient, device.as_ref());
                Some(self.write(&obs, false, now_ms).await?)
            }
            None => None,
        };
        let update = p.event_type != "alert.opened";
        let flag = self
            .write(&fhir::flag(&facts, &patient), update, now_ms)
            .await?;
        let mut about = vec![flag];
        about.extend(trigger);
        let comm = fhir::communication(
            &facts,
            &p.event_type,
            event_id,
            p.event_ms,
            &patient,
            &about,
        );
        self.write(&comm, false, now_ms).await?;
        Ok(())
    }

    /// Whether the server takes `batch` Bundles, from its CapabilityStatement (read once an
    /// hour; when it cannot be read, one request per reading until it can).
    async fn batch_supported(&self, now_ms: i64) -> bool {
        if let Some((yes, until)) = *self.batch.lock().unwrap_or_else(|p| p.into_inner())
            && now_ms < until
        {
            return yes;
        }
        let (yes, ttl) = match self.call(Method::GET, "metadata", None, None, now_ms).await {
            Ok(a) if (200..300).contains(&a.status) => {
                (fhir::supports_batch(&a.body), CAPABILITIES_TTL_MS)
            }
            _ => (false, CAPABILITIES_RETRY_MS),
        };
        tracing::debug!(batch = yes, "FHIR server capabilities read");
        *self.batch.lock().unwrap_or_else(|p| p.into_inner()) = Some((yes, now_ms + ttl));
        yes
    }

    fn no_batches(&self, now_ms: i64) {
        *self.batch.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((false, now_ms + CAPABILITIES_TTL_MS));
    }

    /// Delivers `reading` rows: their patients and devices looked up (once each), then the
    /// Observations in one `batch` Bundle or one request each. One outcome per row, in order.
    pub async fn deliver_readings(&self, rows: &[OutboxRow], now_ms: i64) -> Vec<Attempt> {
        let mut out: Vec<Option<Attempt>> = vec![None; rows.len()];
        let mut patients: HashMap<PatientId, Result<ServerRef, Attempt>> = HashMap::new();
        let mut devices: HashMap<DeviceId, Result<Option<ServerRef>, Attempt>> = HashMap::new();
        let mut used = Used::default();
        // (row index, resource)
        let mut ready: Vec<(usize, Value)> = Vec::new();
        for (i, row) in rows.iter().enumerate() {
            let Some(o) = parse_reading_row(row) else {
                out[i] = Some(Attempt::Refused(
                    "the reading could not be read back".into(),
                ));
                continue;
            };
            if !patients.contains_key(&o.patient_id) {
                let r = self.patient_ref(&o.patient_id, &mut used, now_ms).await;
                patients.insert(o.patient_id.clone(), r.map_err(|f| f.attempt));
            }
            let patient = match &patients[&o.patient_id] {
                Ok(p) => p.clone(),
                Err(a) => {
                    out[i] = Some(a.clone());
                    continue;
                }
            };
            if !devices.contains_key(&o.device_id) {
                let r = self
                    .device_ref(&o.device_id, &patient, &mut used, now_ms)
                    .await;
                devices.insert(o.device_id.clone(), r.map_err(|f| f.attempt));
            }
            match &devices[&o.device_id] {
                Ok(d) => ready.push((i, fhir::observation(&o, &patient, d.as_ref()))),
                Err(a) => out[i] = Some(a.clone()),
            }
        }
        let outcomes = if ready.len() > 1 && self.batch_supported(now_ms).await {
            self.send_batch(&ready, now_ms).await
        } else {
            None
        };
        let outcomes = match outcomes {
            Some(o) => o,
            None => {
                let mut each = Vec::with_capacity(ready.len());
                for (_, resource) in &ready {
                    each.push(self.write(resource, false, now_ms).await.map(|_| ()));
                }
                each
            }
        };
        let mut stale = false;
        for ((i, _), outcome) in ready.iter().zip(outcomes) {
            out[*i] = Some(match outcome {
                Ok(()) => Attempt::Delivered,
                Err(f) => {
                    stale |= f.maybe_stale;
                    f.attempt
                }
            });
        }
        if stale && self.forget(&used) {
            // A reference the server may no longer have: looked up afresh at the retry,
            // which comes after the usual backoff.
            for a in out.iter_mut() {
                if let Some(Attempt::Refused(e)) = a {
                    *a = Some(Attempt::Retry(format!(
                        "{e} (looking the patient up again)"
                    )));
                }
            }
        }
        out.into_iter()
            .map(|a| a.unwrap_or_else(|| Attempt::Retry("not attempted".into())))
            .collect()
    }

    /// Sends Observations in one `batch` Bundle; `None` when the server would not take the
    /// batch as such (then they go one by one, and batches are not tried again for an hour).
    async fn send_batch(
        &self,
        ready: &[(usize, Value)],
        now_ms: i64,
    ) -> Option<Vec<Result<(), Fail>>> {
        let resources: Vec<Value> = ready.iter().map(|(_, r)| r.clone()).collect();
        let bundle = fhir::batch(&resources);
        let a = match self
            .call(Method::POST, "", Some(&bundle), None, now_ms)
            .await
        {
            Ok(a) => a,
            Err(f) => {
                return Some(
                    ready
                        .iter()
                        .map(|_| Err(Fail::from(f.attempt.clone())))
                        .collect(),
                );
            }
        };
        if !(200..300).contains(&a.status) {
            let f = self.failed(&a, "batch");
            if let Attempt::Refused(e) = &f.attempt {
                tracing::warn!(error = %e, "the FHIR server refused a batch Bundle; sending readings one by one");
                self.no_batches(now_ms);
                return None;
            }
            return Some(
                ready
                    .iter()
                    .map(|_| Err(Fail::from(f.attempt.clone())))
                    .collect(),
            );
        }
        let Some(outcomes) = fhir::batch_outcomes(&a.body, ready.len()) else {
            let e = "the FHIR server's batch-response did not answer every entry";
            return Some(
                ready
                    .iter()
                    .map(|_| Err(Attempt::Retry(e.into()).into()))
                    .collect(),
            );
        };
        Some(
            outcomes
                .into_iter()
                .map(|o| {
                    let body = o.detail.map_or(
                        Value::Null,
                        |d| serde_json::json!({"issue": [{"diagnostics": d}]}),
                    );
                    let answer = Answer {
                        status: o.status,
                        location: None,
                        body,
                    };
                    if (200..300).contains(&o.status) {
                        Ok(())
                    } else {
                        Err(self.failed(&answer, "Observation in a batch"))
                    }
                })
                .collect(),
        )
    }
}

fn kind_of(resource: &Value) -> &'static str {
    match resource["resourceType"].as_str() {
        Some("Observation") => "Observation",
        Some("Flag") => "Flag",
        Some("Communication") => "Communication",
        Some("Patient") => "Patient",
        Some("Device") => "Device",
        _ => "Resource",
    }
}
