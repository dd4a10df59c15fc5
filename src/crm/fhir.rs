//! FHIR R4 resources for what Vigil writes back to the patient's record: a reading becomes an
//! `Observation`, an alert a `Flag`, each alert notification a `Communication`; and, where the
//! clinic wants them, the `Patient` and each `Device` those point at.
//!
//! Pure builders and readers: they take Vigil's facts (and the server's ids, found by the
//! connector) and return JSON (`serde_json::Value`), or read the server's answers back, and never
//! do I/O, read the clock or log. The connector that sends them lives beside this module.
//!
//! ## Identity and idempotence
//! Every resource carries one business `identifier` in a `urn:vigil:*` system, stable for the
//! thing it describes (`{device}/{metric}/{time_ms}` for a reading, the alert id for a flag, the
//! event id for a notification, Vigil's ids for a patient or a device). The connector sends a
//! conditional create (`If-None-Exist: identifier=…`, from [`identifier_query`]) or a
//! conditional update (`PUT Flag?identifier=…`), so a resend after a lost answer or a device
//! resending old data never makes a duplicate (the HL7 Personal Health Device (PHD)
//! implementation guide's rule for device data).
//!
//! ## References
//! A server files a resource under a patient by a literal reference (`Patient/123`): FHIR R4
//! search by `patient=`, `subject=`, `_include` and `$everything` follow `Reference.reference`,
//! and real servers do not resolve a reference that carries only an identifier. So every
//! reference here is a [`ServerRef`] — the server's own id, found by the connector — and keeps
//! the identifier it was found by beside it (`Reference.identifier`), for a reader who wants to
//! know which of Vigil's patients or devices it is.
//!
//! ## Codes
//! Readings with a LOINC code use it (and, for SpO2, also 59408-5 "by pulse oximetry" as US Core
//! asks), with the value in its canonical UCUM unit. Heart rate, respiratory rate, SpO2, blood
//! pressure, temperature and weight are `vital-signs`; glucose is `laboratory` and steps
//! `activity`, since the R4 vital-signs profile would fix codes these do not have. NEWS2-only
//! inputs (consciousness, supplemental oxygen) have no LOINC code in the contract: they are coded
//! in `urn:vigil:metric` as `survey` observations, ACVPU as a coded value and oxygen as a boolean.
//! Systolic, diastolic and mean pressure arrive as separate readings and are written as separate
//! observations, not as components of an 85354-9 panel.
//!
//! A `Device` is typed by its Vigil profile (`urn:vigil:device-profile`), and where the PHD
//! implementation guide's value set of device specializations (`DeviceTypes11073MDC`, IEEE
//! 11073-10101 codes) has the kind, by that code in `specialization.systemType`, as the guide's
//! `PhdDevice` does: pulse oximeter 528388, blood pressure 528391, thermometer 528392, scale
//! 528399, glucose meter 528401.

use serde_json::{Map, Value, json};

use crate::domain::{Metric, Observation, PatientId, format_rfc3339};

/// The identifier system of Vigil's patient ids.
pub const PATIENT_SYSTEM: &str = "urn:vigil:patient";
/// The identifier system of Vigil's device ids.
pub const DEVICE_SYSTEM: &str = "urn:vigil:device";
/// The identifier system of readings: `{device}/{metric}/{time_ms}`.
pub const OBSERVATION_SYSTEM: &str = "urn:vigil:observation";
/// The identifier system of alerts (a `Flag`): Vigil's alert id.
pub const ALERT_SYSTEM: &str = "urn:vigil:alert";
/// The identifier system of alert notifications (a `Communication`): the event id.
pub const EVENT_SYSTEM: &str = "urn:vigil:event";
/// The code system of alert rules: the rule id.
pub const RULE_SYSTEM: &str = "urn:vigil:rule";
/// The code system of Vigil's metric names, for metrics without a LOINC code.
pub const METRIC_SYSTEM: &str = "urn:vigil:metric";
/// The code system of the ACVPU scale (`A`, `C`, `V`, `P`, `U`).
pub const ACVPU_SYSTEM: &str = "urn:vigil:acvpu";
/// The code system of notification events (`alert.opened`, ...).
pub const EVENT_TYPE_SYSTEM: &str = "urn:vigil:event-type";
/// The code system of Vigil's device profiles (`pulse-oximeter`, ...).
pub const DEVICE_PROFILE_SYSTEM: &str = "urn:vigil:device-profile";

const LOINC: &str = "http://loinc.org";
const UCUM: &str = "http://unitsofmeasure.org";
const MDC: &str = "urn:iso:std:iso:11073:10101";
const OBSERVATION_CATEGORY: &str = "http://terminology.hl7.org/CodeSystem/observation-category";
const FLAG_CATEGORY: &str = "http://terminology.hl7.org/CodeSystem/flag-category";
const COMMUNICATION_CATEGORY: &str = "http://terminology.hl7.org/CodeSystem/communication-category";
/// HL7 v2 table 0203, identifier types: `MR` is a medical record number.
const IDENTIFIER_TYPE: &str = "http://terminology.hl7.org/CodeSystem/v2-0203";
/// SpO2 by pulse oximetry, which US Core asks for beside the base 2708-6.
const LOINC_SPO2_PULSE_OXIMETRY: &str = "59408-5";

/// A business identifier: `system|value` in FHIR search.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Ident {
    pub system: String,
    pub value: String,
}

impl Ident {
    pub fn new(system: &str, value: &str) -> Ident {
        Ident {
            system: system.to_owned(),
            value: value.to_owned(),
        }
    }

    /// `system|value`, as people read it (in a failed delivery's reason).
    pub fn token(&self) -> String {
        format!("{}|{}", self.system, self.value)
    }

    /// `identifier=system%7Cvalue`: the search parameter that finds it (for `If-None-Exist`, a
    /// conditional update or a search), with FHIR's escapes and percent-encoding.
    pub fn search(&self) -> String {
        // FHIR token search: `system|value`, with `\ | , $` inside either part escaped by `\`.
        let token = format!(
            "{}|{}",
            escape_search(&self.system),
            escape_search(&self.value)
        );
        format!("identifier={}", percent_encode(&token))
    }

    fn json(&self) -> Value {
        identifier(&self.system, &self.value)
    }
}

/// A resource on the server: its type, the server's logical id, and the identifier it was
/// found (or created) by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerRef {
    pub kind: &'static str,
    pub id: String,
    pub ident: Ident,
}

impl ServerRef {
    /// `{"reference": "Patient/123", "type": "Patient", "identifier": {...}}`.
    pub fn reference(&self) -> Value {
        json!({
            "reference": format!("{}/{}", self.kind, self.id),
            "type": self.kind,
            "identifier": self.ident.json(),
        })
    }
}

/// What the `Flag` and `Communication` of one alert are built from.
#[derive(Debug, Clone, Copy)]
pub struct AlertFacts<'a> {
    /// Vigil's alert id, e.g. `alr_3f9c…`.
    pub alert_id: &'a str,
    pub patient_id: &'a PatientId,
    pub rule_id: &'a str,
    /// `low`, `medium` or `high`.
    pub severity: &'a str,
    /// One sentence, e.g. `spo2 < 90 % for 60 s (latest 86 %)`.
    pub message: &'a str,
    pub opened_ms: i64,
    /// `Some` once the alert is resolved.
    pub resolved_ms: Option<i64>,
    /// The reading that opened the alert, if one did.
    pub trigger: Option<&'a Observation>,
}

/// What a `Patient` Vigil creates is built from: the minimum that lets a clinician recognise
/// the patient (name, birth date) and the identifiers that find them again.
#[derive(Debug, Clone, Copy)]
pub struct PatientFacts<'a> {
    pub id: &'a PatientId,
    pub name: &'a str,
    /// `YYYY-MM-DD`.
    pub birth_date: Option<&'a str>,
    /// The MRN with the clinic's system, when both are known.
    pub mrn: Option<&'a Ident>,
}

/// What a `Device` is built from.
#[derive(Debug, Clone, Copy)]
pub struct DeviceFacts<'a> {
    pub id: &'a str,
    /// The profile's id (`pulse-oximeter`) and name (`Pulse oximeter`).
    pub profile: &'a str,
    pub profile_name: &'a str,
    /// Revoked: it can no longer send readings.
    pub revoked: bool,
}

/// The business identifier of a reading: stable, so that a resend never makes a duplicate.
pub fn observation_identifier(o: &Observation) -> String {
    format!("{}/{}/{}", o.device_id, o.metric.name(), o.time_ms)
}

/// The identifier Vigil gives a patient.
pub fn patient_ident(id: &PatientId) -> Ident {
    Ident::new(PATIENT_SYSTEM, id.as_str())
}

/// The identifier Vigil gives a device.
pub fn device_ident(id: &str) -> Ident {
    Ident::new(DEVICE_SYSTEM, id)
}

/// A reading as an R4 `Observation` (vital-signs style where the metric is a vital sign), filed
/// under `patient`, measured by `device` when there is one.
pub fn observation(o: &Observation, patient: &ServerRef, device: Option<&ServerRef>) -> Value {
    let mut r = Map::new();
    r.insert("resourceType".into(), "Observation".into());
    r.insert(
        "identifier".into(),
        json!([identifier(OBSERVATION_SYSTEM, &observation_identifier(o))]),
    );
    r.insert("status".into(), "final".into());
    let (category, category_display) = category(o.metric);
    r.insert(
        "category".into(),
        json!([{"coding": [coding(OBSERVATION_CATEGORY, category, Some(category_display))]}]),
    );
    r.insert("code".into(), code(o.metric));
    r.insert("subject".into(), patient.reference());
    r.insert("effectiveDateTime".into(), format_rfc3339(o.time_ms).into());
    let (key, value) = value(o.metric, o.value);
    r.insert(key.into(), value);
    if let Some(d) = device {
        r.insert("device".into(), d.reference());
    }
    Value::Object(r)
}

/// An alert as an R4 `Flag` about `patient`: `active` while open, `inactive` with `period.end`
/// once resolved.
pub fn flag(a: &AlertFacts<'_>, patient: &ServerRef) -> Value {
    let mut period = Map::new();
    period.insert("start".into(), format_rfc3339(a.opened_ms).into());
    if let Some(end) = a.resolved_ms {
        period.insert("end".into(), format_rfc3339(end).into());
    }
    json!({
        "resourceType": "Flag",
        "identifier": [identifier(ALERT_SYSTEM, a.alert_id)],
        "status": if a.resolved_ms.is_some() { "inactive" } else { "active" },
        "category": [{"coding": [coding(FLAG_CATEGORY, "clinical", Some("Clinical"))]}],
        "code": {
            "coding": [coding(RULE_SYSTEM, a.rule_id, None)],
            "text": a.message,
        },
        "subject": patient.reference(),
        "period": period,
    })
}

/// A notification about an alert as an R4 `Communication`: `event` is the event type
/// (`alert.opened`, `alert.escalated`, `alert.resolved`, ...), `event_id` its unique id (the
/// webhook id of the same event), `sent_ms` when it was sent; `about` the alert's `Flag` and
/// the reading behind it, as the server has them.
pub fn communication(
    a: &AlertFacts<'_>,
    event: &str,
    event_id: &str,
    sent_ms: i64,
    patient: &ServerRef,
    about: &[ServerRef],
) -> Value {
    let about: Vec<Value> = about.iter().map(ServerRef::reference).collect();
    let mut r = json!({
        "resourceType": "Communication",
        "identifier": [identifier(EVENT_SYSTEM, event_id)],
        "status": "completed",
        "category": [{"coding": [coding(COMMUNICATION_CATEGORY, "alert", Some("Alert"))]}],
        "priority": priority(a.severity),
        "subject": patient.reference(),
        "topic": {"coding": [coding(EVENT_TYPE_SYSTEM, event, None)], "text": event},
        "sent": format_rfc3339(sent_ms),
        "payload": [{"contentString": format!("{}: {}", event_phrase(event), a.message)}],
    });
    if !about.is_empty() {
        r["about"] = Value::Array(about);
    }
    r
}

/// A `Patient` for a server that has none with the patient's identifiers: Vigil's identifier
/// first (the one its conditional create is on), the MRN beside it as a medical record number.
pub fn patient(p: &PatientFacts<'_>) -> Value {
    let mut ids = vec![patient_ident(p.id).json()];
    if let Some(mrn) = p.mrn {
        let mut id = mrn.json();
        id["type"] = json!({
            "coding": [coding(IDENTIFIER_TYPE, "MR", Some("Medical record number"))],
        });
        ids.push(id);
    }
    let mut r = json!({
        "resourceType": "Patient",
        "identifier": ids,
        "active": true,
        "name": [{"text": p.name}],
    });
    if let Some(d) = p.birth_date {
        r["birthDate"] = d.into();
    }
    r
}

/// A `Device` for one of Vigil's devices, assigned to `patient`.
pub fn device(d: &DeviceFacts<'_>, patient: &ServerRef) -> Value {
    let mut r = json!({
        "resourceType": "Device",
        "identifier": [device_ident(d.id).json()],
        "status": if d.revoked { "inactive" } else { "active" },
        "type": {
            "coding": [coding(DEVICE_PROFILE_SYSTEM, d.profile, Some(d.profile_name))],
            "text": d.profile_name,
        },
        "patient": patient.reference(),
    });
    if let Some((code, name)) = mdc_specialization(d.profile) {
        r["specialization"] = json!([{
            "systemType": {"coding": [coding(MDC, code, Some(name))], "text": d.profile_name},
        }]);
    }
    r
}

/// The IEEE 11073-10101 device specialization of a profile, where the PHD implementation
/// guide's `DeviceTypes11073MDC` value set has it.
fn mdc_specialization(profile: &str) -> Option<(&'static str, &'static str)> {
    Some(match profile {
        "pulse-oximeter" => ("528388", "MDC_DEV_SPEC_PROFILE_PULS_OXIM"),
        "bp-cuff" => ("528391", "MDC_DEV_SPEC_PROFILE_BP"),
        "thermometer" => ("528392", "MDC_DEV_SPEC_PROFILE_TEMP"),
        "scale" => ("528399", "MDC_DEV_SPEC_PROFILE_SCALE"),
        "glucose-meter" => ("528401", "MDC_DEV_SPEC_PROFILE_GLUCOSE"),
        _ => return None,
    })
}

/// A `batch` Bundle of conditional creates, one entry per resource, each `If-None-Exist` on the
/// resource's identifier. A batch's entries succeed or fail one by one (unlike a transaction),
/// so one refused reading does not hold back the others.
pub fn batch(resources: &[Value]) -> Value {
    let entries: Vec<Value> = resources
        .iter()
        .map(|r| {
            let kind = r["resourceType"].as_str().unwrap_or("Resource");
            let mut request = json!({"method": "POST", "url": kind});
            if let Some(q) = identifier_query(r) {
                request["ifNoneExist"] = q.into();
            }
            json!({"resource": r, "request": request})
        })
        .collect();
    json!({"resourceType": "Bundle", "type": "batch", "entry": entries})
}

/// The answer to one entry of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryOutcome {
    /// The HTTP status the server gives the entry.
    pub status: u16,
    /// What the server said about a failure (its OperationOutcome's diagnostics or text).
    pub detail: Option<String>,
}

/// The outcome of each of `n` entries in a `batch-response` Bundle, in order; `None` when the
/// answer is not one (no Bundle, or not one entry per request).
pub fn batch_outcomes(response: &Value, n: usize) -> Option<Vec<EntryOutcome>> {
    if response["resourceType"] != "Bundle" {
        return None;
    }
    let entries = response["entry"].as_array()?;
    if entries.len() != n {
        return None;
    }
    entries
        .iter()
        .map(|e| {
            // `"201 Created"` as R4 says, or a bare `"201"` as some servers write it.
            let status = e["response"]["status"].as_str()?;
            let code: String = status.chars().take_while(char::is_ascii_digit).collect();
            Some(EntryOutcome {
                status: code.parse().ok()?,
                detail: outcome_detail(&e["response"]["outcome"]),
            })
        })
        .collect()
}

/// The first issue's diagnostics (or details text) of an OperationOutcome.
pub fn outcome_detail(outcome: &Value) -> Option<String> {
    let issue = &outcome["issue"][0];
    issue["diagnostics"]
        .as_str()
        .or_else(|| issue["details"]["text"].as_str())
        .map(str::to_owned)
}

/// The ids of the `kind` resources a search matched (entries of `search.mode` `include` or
/// `outcome` left out).
pub fn searchset_ids(bundle: &Value, kind: &str) -> Vec<String> {
    bundle["entry"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .filter(|e| e["search"]["mode"].as_str().is_none_or(|m| m == "match"))
                .filter(|e| e["resource"]["resourceType"] == kind)
                .filter_map(|e| e["resource"]["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The id of a resource just created or found by a conditional create or update: the body's
/// `id`, or the id in the `Location` header (`…/Kind/{id}/_history/{v}`) when the server
/// answers without a body.
pub fn written_id(body: &Value, location: Option<&str>, kind: &str) -> Option<String> {
    if body["resourceType"] == kind
        && let Some(id) = body["id"].as_str()
    {
        return Some(id.to_owned());
    }
    let location = location?;
    let mut parts = location.split('?').next()?.split('/');
    parts
        .by_ref()
        .find(|p| *p == kind)
        .and_then(|_| parts.next())
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
}

/// Whether a CapabilityStatement says the server takes `batch` Bundles (`rest.interaction`
/// `batch` in server mode).
pub fn supports_batch(capabilities: &Value) -> bool {
    capabilities["rest"].as_array().is_some_and(|rest| {
        rest.iter()
            .filter(|r| r["mode"].as_str().is_none_or(|m| m == "server"))
            .any(|r| {
                r["interaction"]
                    .as_array()
                    .is_some_and(|i| i.iter().any(|x| x["code"] == "batch"))
            })
    })
}

/// The search parameter that finds `resource` by its first identifier,
/// `identifier=urn%3Avigil%3Aalert%7Calr_…`: the value of an `If-None-Exist` header, or the query
/// of a conditional update (`Flag?identifier=…`). `None` if the resource has no identifier with
/// both a system and a value.
pub fn identifier_query(resource: &Value) -> Option<String> {
    let id = resource.get("identifier")?.get(0)?;
    let system = id.get("system")?.as_str()?;
    let value = id.get("value")?.as_str()?;
    Some(Ident::new(system, value).search())
}

fn identifier(system: &str, value: &str) -> Value {
    json!({"system": system, "value": value})
}

fn coding(system: &str, code: &str, display: Option<&str>) -> Value {
    match display {
        Some(d) => json!({"system": system, "code": code, "display": d}),
        None => json!({"system": system, "code": code}),
    }
}

/// The observation category (code, display) of a metric.
fn category(metric: Metric) -> (&'static str, &'static str) {
    match metric {
        Metric::Glucose => ("laboratory", "Laboratory"),
        Metric::Steps => ("activity", "Activity"),
        Metric::Consciousness | Metric::OnOxygen => ("survey", "Survey"),
        _ if metric.loinc().is_some() => ("vital-signs", "Vital Signs"),
        _ => ("survey", "Survey"),
    }
}

/// LOINC's display names of the codes Vigil uses; an unknown code is sent without one.
fn loinc_display(code: &str) -> Option<&'static str> {
    Some(match code {
        "8867-4" => "Heart rate",
        "2708-6" => "Oxygen saturation in Arterial blood",
        "59408-5" => "Oxygen saturation in Arterial blood by Pulse oximetry",
        "9279-1" => "Respiratory rate",
        "8480-6" => "Systolic blood pressure",
        "8462-4" => "Diastolic blood pressure",
        "8478-0" => "Mean blood pressure",
        "8310-5" => "Body temperature",
        "29463-7" => "Body weight",
        "2339-0" => "Glucose [Mass/volume] in Blood",
        "41653-7" => "Glucose [Mass/volume] in Capillary blood by Glucometer",
        "41950-7" => "Number of steps in 24 hour Measured",
        _ => return None,
    })
}

fn code(metric: Metric) -> Value {
    let mut codings = Vec::new();
    match metric.loinc() {
        Some(loinc) => {
            codings.push(coding(LOINC, loinc, loinc_display(loinc)));
            if metric == Metric::Spo2 {
                codings.push(coding(
                    LOINC,
                    LOINC_SPO2_PULSE_OXIMETRY,
                    loinc_display(LOINC_SPO2_PULSE_OXIMETRY),
                ));
            }
        }
        None => codings.push(coding(METRIC_SYSTEM, metric.name(), None)),
    }
    json!({"coding": codings, "text": metric.name()})
}

/// The human-readable unit beside the UCUM code.
fn unit_display(metric: Metric) -> &'static str {
    match metric {
        Metric::HeartRate => "beats/minute",
        Metric::RespiratoryRate => "breaths/minute",
        Metric::BpSystolic | Metric::BpDiastolic | Metric::BpMean => "mmHg",
        Metric::BodyTemperature => "°C",
        Metric::Steps => "steps",
        _ => metric.unit(),
    }
}

/// The ACVPU letter and its meaning for Vigil's code 0..=4.
fn acvpu(code: i64) -> Option<(&'static str, &'static str)> {
    Some(match code {
        0 => ("A", "Alert"),
        1 => ("C", "New confusion"),
        2 => ("V", "Responds to voice"),
        3 => ("P", "Responds to pain"),
        4 => ("U", "Unresponsive"),
        _ => return None,
    })
}

/// The `value[x]` element (name, value) of a reading.
fn value(metric: Metric, v: f64) -> (&'static str, Value) {
    match metric {
        Metric::OnOxygen => ("valueBoolean", Value::Bool(v != 0.0)),
        Metric::Consciousness => {
            // Readings are checked integral and in 0..=4 on the way in; anything else is kept
            // as the number it is rather than guessed at.
            let code = v as i64;
            match acvpu(code).filter(|_| code as f64 == v) {
                Some((letter, display)) => (
                    "valueCodeableConcept",
                    json!({
                        "coding": [coding(ACVPU_SYSTEM, letter, Some(display))],
                        "text": display,
                    }),
                ),
                None => ("valueInteger", json!(code)),
            }
        }
        _ => {
            let number = if metric.is_integral() && v.fract() == 0.0 {
                json!(v as i64)
            } else {
                json!(v)
            };
            (
                "valueQuantity",
                json!({
                    "value": number,
                    "unit": unit_display(metric),
                    "system": UCUM,
                    "code": metric.unit(),
                }),
            )
        }
    }
}

/// `high` → `urgent`, `medium` → `asap`, anything else → `routine`.
fn priority(severity: &str) -> &'static str {
    match severity {
        "high" => "urgent",
        "medium" => "asap",
        _ => "routine",
    }
}

/// `alert.opened` → `Alert opened`; an unknown event is named as it is.
fn event_phrase(event: &str) -> String {
    match event.split_once('.') {
        Some(("alert", what)) if !what.is_empty() => format!("Alert {}", what.replace('_', " ")),
        _ => event.to_owned(),
    }
}

/// Escapes the characters FHIR search gives a meaning inside a token (`\`, `|`, `,`, `$`).
fn escape_search(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | '|' | ',' | '$') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3 / 2);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::DeviceId;

    fn reading(metric: Metric, value: f64) -> Observation {
        Observation {
            patient_id: PatientId::parse("p-001").unwrap(),
            device_id: DeviceId::parse("ox-7").unwrap(),
            metric,
            value,
            time_ms: 1_795_611_600_250,
        }
    }

    fn pat() -> ServerRef {
        ServerRef {
            kind: "Patient",
            id: "pat-9".into(),
            ident: Ident::new("urn:oid:1.2.3", "MRN-1"),
        }
    }

    fn dev() -> ServerRef {
        ServerRef {
            kind: "Device",
            id: "dev-4".into(),
            ident: device_ident("ox-7"),
        }
    }

    fn obs(o: &Observation) -> Value {
        observation(o, &pat(), Some(&dev()))
    }

    fn facts<'a>(patient: &'a PatientId, trigger: Option<&'a Observation>) -> AlertFacts<'a> {
        AlertFacts {
            alert_id: "alr_3f9c",
            patient_id: patient,
            rule_id: "spo2-low",
            severity: "high",
            message: "spo2 < 90 % for 60 s (latest 86 %)",
            opened_ms: 1_795_611_600_000,
            resolved_ms: None,
            trigger,
        }
    }

    #[test]
    fn a_vital_sign_is_a_vital_signs_observation_with_loinc_and_ucum() {
        let r = obs(&reading(Metric::HeartRate, 72.0));
        assert_eq!(r["resourceType"], "Observation");
        assert_eq!(r["status"], "final");
        assert_eq!(r["category"][0]["coding"][0]["code"], "vital-signs");
        assert_eq!(r["code"]["coding"][0]["system"], "http://loinc.org");
        assert_eq!(r["code"]["coding"][0]["code"], "8867-4");
        assert_eq!(r["code"]["coding"][0]["display"], "Heart rate");
        assert_eq!(r["valueQuantity"]["value"], 72.0);
        assert_eq!(r["valueQuantity"]["system"], "http://unitsofmeasure.org");
        assert_eq!(r["valueQuantity"]["code"], "/min");
        assert_eq!(r["effectiveDateTime"], "2026-11-25T13:00:00.250Z");
        assert_eq!(
            r["subject"],
            json!({"reference": "Patient/pat-9", "type": "Patient",
                   "identifier": {"system": "urn:oid:1.2.3", "value": "MRN-1"}})
        );
        assert_eq!(r["device"]["reference"], "Device/dev-4");
        assert_eq!(r["device"]["identifier"]["system"], "urn:vigil:device");
        assert_eq!(r["device"]["identifier"]["value"], "ox-7");
        let bare = observation(&reading(Metric::HeartRate, 72.0), &pat(), None);
        assert!(
            bare.get("device").is_none(),
            "no device: no device reference"
        );
        assert_eq!(
            r["identifier"][0],
            json!({"system": "urn:vigil:observation", "value": "ox-7/heart_rate/1795611600250"})
        );
    }

    #[test]
    fn spo2_carries_the_pulse_oximetry_code_too() {
        let r = obs(&reading(Metric::Spo2, 97.0));
        let codes: Vec<_> = r["code"]["coding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["code"].as_str().unwrap())
            .collect();
        assert_eq!(codes, ["2708-6", "59408-5"]);
        assert_eq!(r["valueQuantity"]["code"], "%");
    }

    #[test]
    fn every_metric_has_a_code_a_category_and_one_value() {
        for m in Metric::ALL {
            let r = obs(&reading(m, 1.0));
            let values: Vec<_> = r
                .as_object()
                .unwrap()
                .keys()
                .filter(|k| k.starts_with("value"))
                .collect();
            assert_eq!(values.len(), 1, "{m}: {values:?}");
            assert!(r["code"]["coding"][0]["code"].is_string(), "{m}");
            assert!(r["category"][0]["coding"][0]["code"].is_string(), "{m}");
            if let Some(q) = r.get("valueQuantity") {
                assert_eq!(q["code"], m.unit(), "{m}");
            }
        }
        assert_eq!(
            obs(&reading(Metric::Steps, 4200.0))["valueQuantity"]["value"],
            json!(4200)
        );
        assert_eq!(
            obs(&reading(Metric::Glucose, 104.0))["category"][0]["coding"][0]["code"],
            "laboratory"
        );
    }

    #[test]
    fn news2_inputs_use_vigil_codes() {
        let r = obs(&reading(Metric::Consciousness, 2.0));
        assert_eq!(
            r["code"]["coding"][0],
            json!({"system": "urn:vigil:metric", "code": "consciousness"})
        );
        assert_eq!(r["category"][0]["coding"][0]["code"], "survey");
        assert_eq!(r["valueCodeableConcept"]["coding"][0]["code"], "V");
        assert_eq!(obs(&reading(Metric::Consciousness, 7.0))["valueInteger"], 7);
        let r = obs(&reading(Metric::OnOxygen, 1.0));
        assert_eq!(r["valueBoolean"], true);
        assert_eq!(obs(&reading(Metric::OnOxygen, 0.0))["valueBoolean"], false);
    }

    #[test]
    fn an_open_alert_is_an_active_flag_and_a_resolved_one_inactive_with_an_end() {
        let patient = PatientId::parse("p-001").unwrap();
        let open = facts(&patient, None);
        let r = flag(&open, &pat());
        assert_eq!(r["resourceType"], "Flag");
        assert_eq!(r["status"], "active");
        assert_eq!(r["category"][0]["coding"][0]["code"], "clinical");
        assert_eq!(r["code"]["text"], open.message);
        assert_eq!(
            r["code"]["coding"][0],
            json!({"system": "urn:vigil:rule", "code": "spo2-low"})
        );
        assert_eq!(r["period"], json!({"start": "2026-11-25T13:00:00Z"}));
        assert_eq!(
            r["identifier"][0],
            json!({"system": "urn:vigil:alert", "value": "alr_3f9c"})
        );
        assert_eq!(r["subject"]["reference"], "Patient/pat-9");

        let resolved = AlertFacts {
            resolved_ms: Some(1_795_611_660_000),
            ..open
        };
        let r = flag(&resolved, &pat());
        assert_eq!(r["status"], "inactive");
        assert_eq!(r["period"]["end"], "2026-11-25T13:01:00Z");
    }

    #[test]
    fn a_notification_is_about_its_flag_and_the_reading_behind_it() {
        let patient = PatientId::parse("p-001").unwrap();
        let trigger = reading(Metric::Spo2, 86.0);
        let a = facts(&patient, Some(&trigger));
        let flag_ref = ServerRef {
            kind: "Flag",
            id: "f-1".into(),
            ident: Ident::new(ALERT_SYSTEM, "alr_3f9c"),
        };
        let obs_ref = ServerRef {
            kind: "Observation",
            id: "o-1".into(),
            ident: Ident::new(OBSERVATION_SYSTEM, "ox-7/spo2/1795611600250"),
        };
        let about = [flag_ref.clone(), obs_ref];
        let r = communication(
            &a,
            "alert.opened",
            "evt_1",
            1_795_611_601_000,
            &pat(),
            &about,
        );
        assert_eq!(r["resourceType"], "Communication");
        assert_eq!(r["status"], "completed");
        assert_eq!(r["priority"], "urgent");
        assert_eq!(r["category"][0]["coding"][0]["code"], "alert");
        assert_eq!(r["sent"], "2026-11-25T13:00:01Z");
        assert_eq!(
            r["payload"][0]["contentString"],
            "Alert opened: spo2 < 90 % for 60 s (latest 86 %)"
        );
        assert_eq!(
            r["identifier"][0],
            json!({"system": "urn:vigil:event", "value": "evt_1"})
        );
        assert_eq!(
            r["about"],
            json!([
                {"reference": "Flag/f-1", "type": "Flag",
                 "identifier": {"system": "urn:vigil:alert", "value": "alr_3f9c"}},
                {"reference": "Observation/o-1", "type": "Observation",
                 "identifier": {"system": "urn:vigil:observation",
                                "value": "ox-7/spo2/1795611600250"}},
            ])
        );

        let quiet = AlertFacts {
            severity: "low",
            trigger: None,
            ..a
        };
        let r = communication(&quiet, "alert.resolved", "evt_2", 0, &pat(), &[flag_ref]);
        assert_eq!(r["priority"], "routine");
        assert_eq!(r["about"].as_array().unwrap().len(), 1);
        assert!(
            r["payload"][0]["contentString"]
                .as_str()
                .unwrap()
                .starts_with("Alert resolved: ")
        );
        assert_eq!(
            communication(
                &AlertFacts {
                    severity: "medium",
                    ..a
                },
                "alert.escalated",
                "e",
                0,
                &pat(),
                &[]
            )["priority"],
            "asap"
        );
    }

    #[test]
    fn the_identifier_query_is_percent_encoded_and_escaped() {
        let patient = PatientId::parse("p-001").unwrap();
        assert_eq!(
            identifier_query(&flag(&facts(&patient, None), &pat())).unwrap(),
            "identifier=urn%3Avigil%3Aalert%7Calr_3f9c"
        );
        assert_eq!(
            identifier_query(&obs(&reading(Metric::Spo2, 97.0))).unwrap(),
            "identifier=urn%3Avigil%3Aobservation%7Cox-7%2Fspo2%2F1795611600250"
        );
        let odd = json!({"identifier": [{"system": "urn:x", "value": "a|b c"}]});
        assert_eq!(
            identifier_query(&odd).unwrap(),
            "identifier=urn%3Ax%7Ca%5C%7Cb%20c"
        );
        assert_eq!(identifier_query(&json!({"resourceType": "Flag"})), None);
    }

    #[test]
    fn a_patient_carries_vigils_identifier_first_and_the_mrn_as_a_medical_record_number() {
        let id = PatientId::parse("p-001").unwrap();
        let mrn = Ident::new("urn:oid:1.2.3", "MRN-1");
        let r = patient(&PatientFacts {
            id: &id,
            name: "Ada Lovelace",
            birth_date: Some("1950-04-23"),
            mrn: Some(&mrn),
        });
        assert_eq!(r["resourceType"], "Patient");
        assert_eq!(
            r["identifier"][0],
            json!({"system": "urn:vigil:patient", "value": "p-001"})
        );
        assert_eq!(r["identifier"][1]["value"], "MRN-1");
        assert_eq!(r["identifier"][1]["type"]["coding"][0]["code"], "MR");
        assert_eq!(r["name"], json!([{"text": "Ada Lovelace"}]));
        assert_eq!(r["birthDate"], "1950-04-23");
        assert_eq!(
            identifier_query(&r).unwrap(),
            "identifier=urn%3Avigil%3Apatient%7Cp-001"
        );
        // Nothing Vigil does not need to send: no contact details, no gender.
        let keys: Vec<&String> = r.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            ["active", "birthDate", "identifier", "name", "resourceType"]
        );
        let bare = patient(&PatientFacts {
            id: &id,
            name: "Ada",
            birth_date: None,
            mrn: None,
        });
        assert_eq!(bare["identifier"].as_array().unwrap().len(), 1);
        assert!(bare.get("birthDate").is_none());
    }

    #[test]
    fn a_device_is_typed_by_its_profile_and_assigned_to_the_patient() {
        let ox = DeviceFacts {
            id: "ox-7",
            profile: "pulse-oximeter",
            profile_name: "Pulse oximeter",
            revoked: false,
        };
        let r = device(&ox, &pat());
        assert_eq!(
            r["identifier"][0],
            json!({"system": "urn:vigil:device", "value": "ox-7"})
        );
        assert_eq!(r["status"], "active");
        assert_eq!(r["type"]["coding"][0]["code"], "pulse-oximeter");
        assert_eq!(r["type"]["text"], "Pulse oximeter");
        assert_eq!(
            r["specialization"][0]["systemType"]["coding"][0],
            json!({"system": "urn:iso:std:iso:11073:10101", "code": "528388",
                   "display": "MDC_DEV_SPEC_PROFILE_PULS_OXIM"})
        );
        assert_eq!(r["patient"]["reference"], "Patient/pat-9");
        let app = device(
            &DeviceFacts {
                profile: "patient-app",
                profile_name: "Patient app",
                revoked: true,
                ..ox
            },
            &pat(),
        );
        assert!(app.get("specialization").is_none());
        assert_eq!(app["status"], "inactive");
    }

    #[test]
    fn a_batch_is_conditional_creates_and_its_answer_is_read_entry_by_entry() {
        let a = obs(&reading(Metric::HeartRate, 72.0));
        let b = obs(&reading(Metric::Spo2, 97.0));
        let bundle = batch(&[a.clone(), b]);
        assert_eq!(bundle["type"], "batch");
        assert_eq!(bundle["entry"][0]["resource"], a);
        assert_eq!(
            bundle["entry"][0]["request"],
            json!({"method": "POST", "url": "Observation",
                   "ifNoneExist": "identifier=urn%3Avigil%3Aobservation%7Cox-7%2Fheart_rate%2F1795611600250"})
        );
        let answer = json!({"resourceType": "Bundle", "type": "batch-response", "entry": [
            {"response": {"status": "201 Created", "location": "Observation/1/_history/1"}},
            {"response": {"status": "422", "outcome": {"resourceType": "OperationOutcome",
                "issue": [{"severity": "error", "code": "invalid", "diagnostics": "bad"}]}}},
        ]});
        assert_eq!(
            batch_outcomes(&answer, 2).unwrap(),
            [
                EntryOutcome {
                    status: 201,
                    detail: None
                },
                EntryOutcome {
                    status: 422,
                    detail: Some("bad".into())
                },
            ]
        );
        assert_eq!(batch_outcomes(&answer, 3), None, "an entry unanswered");
        assert_eq!(
            batch_outcomes(&json!({"resourceType": "OperationOutcome"}), 2),
            None
        );
    }

    #[test]
    fn the_servers_answers_are_read() {
        let found = json!({"resourceType": "Bundle", "type": "searchset", "entry": [
            {"resource": {"resourceType": "Patient", "id": "7"}, "search": {"mode": "match"}},
            {"resource": {"resourceType": "Patient", "id": "8"}},
            {"resource": {"resourceType": "Organization", "id": "9"}, "search": {"mode": "include"}},
            {"resource": {"resourceType": "OperationOutcome"}, "search": {"mode": "outcome"}},
        ]});
        assert_eq!(searchset_ids(&found, "Patient"), ["7", "8"]);
        assert!(searchset_ids(&json!({"resourceType": "Bundle"}), "Patient").is_empty());

        let body = json!({"resourceType": "Flag", "id": "f1"});
        assert_eq!(written_id(&body, None, "Flag").as_deref(), Some("f1"));
        let loc = Some("https://fhir.example/r4/Flag/f2/_history/1");
        assert_eq!(written_id(&Value::Null, loc, "Flag").as_deref(), Some("f2"));
        assert_eq!(
            written_id(&Value::Null, Some("Flag/f3"), "Flag").as_deref(),
            Some("f3")
        );
        assert_eq!(written_id(&Value::Null, None, "Flag"), None);
        assert_eq!(
            written_id(&Value::Null, Some("https://x/Device/d"), "Flag"),
            None
        );

        let cap = |interactions: Value| {
            json!({"resourceType": "CapabilityStatement",
                   "rest": [{"mode": "server", "interaction": interactions}]})
        };
        assert!(supports_batch(&cap(
            json!([{"code": "transaction"}, {"code": "batch"}])
        )));
        assert!(!supports_batch(&cap(json!([{"code": "transaction"}]))));
        assert!(!supports_batch(
            &json!({"resourceType": "CapabilityStatement"})
        ));
    }
}
