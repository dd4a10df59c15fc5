//! The FHIR R4 connector: turns an outbox event into resources on the clinic's FHIR server.
//!
//! - `alert.opened`: the triggering `Observation`, a `Flag` (active) and a `Communication`
//!   about both, each by conditional create (`If-None-Exist` on Vigil's identifier), so a
//!   retry after a lost answer never makes a duplicate.
//! - `alert.raised` / `alert.escalated`: the `Flag` updated, and a new `Communication`
//!   (re-notification) with its own identifier.
//! - `alert.resolved`: the `Flag` becomes `inactive` with its period's end, by conditional
//!   update (`PUT Flag?identifier=...`).
//!
//! Authentication is a static bearer token or SMART Backend Services.

use serde_json::Value;

use super::fhir::{self, AlertFacts};
use super::outbox::{Attempt, OutboxRow};
use super::smart::SmartClient;
use crate::domain::{DeviceId, Metric, Observation, PatientId, parse_rfc3339};

/// How the connector authenticates.
pub enum FhirAuth {
    None,
    Bearer(String),
    Smart(Box<SmartClient>),
}

/// Writes alert events to one FHIR server.
pub struct FhirSink {
    pub http: reqwest::Client,
    pub base_url: String,
    pub auth: FhirAuth,
}

/// The parts of an event the resources are built from.
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

fn parse(payload: &str) -> Option<Parsed> {
    let v: Value = serde_json::from_str(payload).ok()?;
    let d = &v["data"];
    let s = |k: &str| d[k].as_str().map(str::to_owned);
    let patient = PatientId::parse(d["patient_id"].as_str()?).ok()?;
    let trigger = d.get("trigger").and_then(|t| {
        Some(Observation {
            patient_id: patient.clone(),
            device_id: DeviceId::parse(t["device_id"].as_str()?).ok()?,
            metric: Metric::parse(t["metric"].as_str()?)?,
            value: t["value"].as_f64()?,
            time_ms: parse_rfc3339(t["time"].as_str()?)?,
        })
    });
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

impl FhirSink {
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

    /// One conditional create (`put` false) or conditional update (`put` true).
    async fn send(&self, resource: &Value, put: bool, now_ms: i64) -> Result<(), Attempt> {
        let kind = resource["resourceType"].as_str().unwrap_or("Resource");
        let Some(query) = fhir::identifier_query(resource) else {
            return Err(Attempt::Refused(format!("{kind} has no identifier")));
        };
        let base = self.base_url.trim_end_matches('/');
        let req = if put {
            self.http.put(format!("{base}/{kind}?{query}"))
        } else {
            self.http
                .post(format!("{base}/{kind}"))
                .header("If-None-Exist", query)
        };
        let mut req = req
            .header("content-type", "application/fhir+json")
            .header("accept", "application/fhir+json")
            .body(resource.to_string());
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
            ));
        }
        match Attempt::from_status(status, &format!("the FHIR server ({kind})")) {
            Attempt::Delivered => Ok(()),
            Attempt::Refused(e) => {
                // The server's OperationOutcome says why; keep a little of it.
                let body = resp.text().await.unwrap_or_default();
                let detail: String = body.chars().take(300).collect();
                Err(Attempt::Refused(format!("{e}: {detail}")))
            }
            other => Err(other),
        }
    }

    /// Delivers one event (every step is idempotent, so a retry repeats it whole).
    pub async fn deliver(&self, row: &OutboxRow, now_ms: i64) -> Attempt {
        let Some(p) = parse(&row.payload) else {
            return Attempt::Refused("the event could not be read back".into());
        };
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
        let mut steps: Vec<(Value, bool)> = Vec::new();
        match p.event_type.as_str() {
            "alert.opened" => {
                if let Some(o) = &p.trigger {
                    steps.push((fhir::observation(o), false));
                }
                steps.push((fhir::flag(&facts), false));
                steps.push((
                    fhir::communication(&facts, &p.event_type, &row.event_id, p.event_ms),
                    false,
                ));
            }
            "alert.raised" | "alert.escalated" => {
                steps.push((fhir::flag(&facts), true));
                steps.push((
                    fhir::communication(&facts, &p.event_type, &row.event_id, p.event_ms),
                    false,
                ));
            }
            "alert.resolved" => steps.push((fhir::flag(&facts), true)),
            _ => return Attempt::Delivered,
        }
        for (resource, put) in steps {
            if let Err(a) = self.send(&resource, put, now_ms).await {
                return a;
            }
        }
        Attempt::Delivered
    }
}
