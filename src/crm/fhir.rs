//! FHIR R4 resources for what Vigil writes back to the patient's record: a reading becomes an
//! `Observation`, an alert a `Flag`, and each alert notification a `Communication`.
//!
//! Pure builders: they take Vigil's facts and return JSON (`serde_json::Value`), and never do
//! I/O, read the clock or log. The connector that sends them lives beside this module.
//!
//! ## Identity and idempotence
//! Every resource carries one business `identifier` in a `urn:vigil:*` system, stable for the
//! thing it describes (`{device}/{metric}/{time_ms}` for a reading, the alert id for a flag, the
//! event id for a notification). The connector sends a conditional create
//! (`If-None-Exist: identifier=…`, from [`identifier_query`]) or a conditional update
//! (`PUT Flag?identifier=…`), so a resend after a lost answer or a device resending old data
//! never makes a duplicate (the PHD IG's rule for device data).
//!
//! ## References
//! Vigil does not know the server's resource ids, so the subject, the device and the links from a
//! notification to its flag and reading are *logical* references (`Reference.identifier`), which
//! the server may resolve or keep as they are.
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

const LOINC: &str = "http://loinc.org";
const UCUM: &str = "http://unitsofmeasure.org";
const OBSERVATION_CATEGORY: &str = "http://terminology.hl7.org/CodeSystem/observation-category";
const FLAG_CATEGORY: &str = "http://terminology.hl7.org/CodeSystem/flag-category";
const COMMUNICATION_CATEGORY: &str = "http://terminology.hl7.org/CodeSystem/communication-category";
/// SpO2 by pulse oximetry, which US Core asks for beside the base 2708-6.
const LOINC_SPO2_PULSE_OXIMETRY: &str = "59408-5";

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

/// The business identifier of a reading: stable, so that a resend never makes a duplicate.
pub fn observation_identifier(o: &Observation) -> String {
    format!("{}/{}/{}", o.device_id, o.metric.name(), o.time_ms)
}

/// A reading as an R4 `Observation` (vital-signs style where the metric is a vital sign).
pub fn observation(o: &Observation) -> Value {
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
    r.insert("subject".into(), patient_reference(&o.patient_id));
    r.insert("effectiveDateTime".into(), format_rfc3339(o.time_ms).into());
    let (key, value) = value(o.metric, o.value);
    r.insert(key.into(), value);
    r.insert(
        "device".into(),
        logical_reference("Device", DEVICE_SYSTEM, o.device_id.as_str()),
    );
    Value::Object(r)
}

/// An alert as an R4 `Flag`: `active` while open, `inactive` with `period.end` once resolved.
pub fn flag(a: &AlertFacts<'_>) -> Value {
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
        "subject": patient_reference(a.patient_id),
        "period": period,
    })
}

/// A notification about an alert as an R4 `Communication`: `event` is the event type
/// (`alert.opened`, `alert.escalated`, `alert.resolved`, ...), `event_id` its unique id (the
/// webhook id of the same event), `sent_ms` when it was sent.
pub fn communication(a: &AlertFacts<'_>, event: &str, event_id: &str, sent_ms: i64) -> Value {
    let mut about = vec![logical_reference("Flag", ALERT_SYSTEM, a.alert_id)];
    if let Some(o) = a.trigger {
        about.push(logical_reference(
            "Observation",
            OBSERVATION_SYSTEM,
            &observation_identifier(o),
        ));
    }
    json!({
        "resourceType": "Communication",
        "identifier": [identifier(EVENT_SYSTEM, event_id)],
        "status": "completed",
        "category": [{"coding": [coding(COMMUNICATION_CATEGORY, "alert", Some("Alert"))]}],
        "priority": priority(a.severity),
        "subject": patient_reference(a.patient_id),
        "topic": {"coding": [coding(EVENT_TYPE_SYSTEM, event, None)], "text": event},
        "about": about,
        "sent": format_rfc3339(sent_ms),
        "payload": [{"contentString": format!("{}: {}", event_phrase(event), a.message)}],
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
    // FHIR token search: `system|value`, with `\ | , $` inside either part escaped by `\`.
    let token = format!("{}|{}", escape_search(system), escape_search(value));
    Some(format!("identifier={}", percent_encode(&token)))
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

fn logical_reference(kind: &str, system: &str, value: &str) -> Value {
    json!({"type": kind, "identifier": identifier(system, value)})
}

fn patient_reference(id: &PatientId) -> Value {
    logical_reference("Patient", PATIENT_SYSTEM, id.as_str())
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
        let r = observation(&reading(Metric::HeartRate, 72.0));
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
            json!({"type": "Patient",
                   "identifier": {"system": "urn:vigil:patient", "value": "p-001"}})
        );
        assert_eq!(r["device"]["identifier"]["system"], "urn:vigil:device");
        assert_eq!(r["device"]["identifier"]["value"], "ox-7");
        assert_eq!(
            r["identifier"][0],
            json!({"system": "urn:vigil:observation", "value": "ox-7/heart_rate/1795611600250"})
        );
    }

    #[test]
    fn spo2_carries_the_pulse_oximetry_code_too() {
        let r = observation(&reading(Metric::Spo2, 97.0));
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
            let r = observation(&reading(m, 1.0));
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
            observation(&reading(Metric::Steps, 4200.0))["valueQuantity"]["value"],
            json!(4200)
        );
        assert_eq!(
            observation(&reading(Metric::Glucose, 104.0))["category"][0]["coding"][0]["code"],
            "laboratory"
        );
    }

    #[test]
    fn news2_inputs_use_vigil_codes() {
        let r = observation(&reading(Metric::Consciousness, 2.0));
        assert_eq!(
            r["code"]["coding"][0],
            json!({"system": "urn:vigil:metric", "code": "consciousness"})
        );
        assert_eq!(r["category"][0]["coding"][0]["code"], "survey");
        assert_eq!(r["valueCodeableConcept"]["coding"][0]["code"], "V");
        assert_eq!(
            observation(&reading(Metric::Consciousness, 7.0))["valueInteger"],
            7
        );
        let r = observation(&reading(Metric::OnOxygen, 1.0));
        assert_eq!(r["valueBoolean"], true);
        assert_eq!(
            observation(&reading(Metric::OnOxygen, 0.0))["valueBoolean"],
            false
        );
    }

    #[test]
    fn an_open_alert_is_an_active_flag_and_a_resolved_one_inactive_with_an_end() {
        let patient = PatientId::parse("p-001").unwrap();
        let open = facts(&patient, None);
        let r = flag(&open);
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
        assert_eq!(r["subject"]["identifier"]["value"], "p-001");

        let resolved = AlertFacts {
            resolved_ms: Some(1_795_611_660_000),
            ..open
        };
        let r = flag(&resolved);
        assert_eq!(r["status"], "inactive");
        assert_eq!(r["period"]["end"], "2026-11-25T13:01:00Z");
    }

    #[test]
    fn a_notification_is_about_its_flag_and_the_reading_behind_it() {
        let patient = PatientId::parse("p-001").unwrap();
        let trigger = reading(Metric::Spo2, 86.0);
        let a = facts(&patient, Some(&trigger));
        let r = communication(&a, "alert.opened", "evt_1", 1_795_611_601_000);
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
                {"type": "Flag", "identifier": {"system": "urn:vigil:alert", "value": "alr_3f9c"}},
                {"type": "Observation",
                 "identifier": {"system": "urn:vigil:observation",
                                "value": "ox-7/spo2/1795611600250"}},
            ])
        );

        let quiet = AlertFacts {
            severity: "low",
            trigger: None,
            ..a
        };
        let r = communication(&quiet, "alert.resolved", "evt_2", 0);
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
                0
            )["priority"],
            "asap"
        );
    }

    #[test]
    fn the_identifier_query_is_percent_encoded_and_escaped() {
        let patient = PatientId::parse("p-001").unwrap();
        assert_eq!(
            identifier_query(&flag(&facts(&patient, None))).unwrap(),
            "identifier=urn%3Avigil%3Aalert%7Calr_3f9c"
        );
        assert_eq!(
            identifier_query(&observation(&reading(Metric::Spo2, 97.0))).unwrap(),
            "identifier=urn%3Avigil%3Aobservation%7Cox-7%2Fspo2%2F1795611600250"
        );
        let odd = json!({"identifier": [{"system": "urn:x", "value": "a|b c"}]});
        assert_eq!(
            identifier_query(&odd).unwrap(),
            "identifier=urn%3Ax%7Ca%5C%7Cb%20c"
        );
        assert_eq!(identifier_query(&json!({"resourceType": "Flag"})), None);
    }
}
