//! Discharging a patient from monitoring and readmitting them:
//! `POST /patients/{id}/discharge {"reason"?, "date"?}` and `POST /patients/{id}/readmit`.
//!
//! Either is a clinical decision, like a care plan: an admin, or a clinician of the patient's
//! care team. The change, the alerts it resolves (each with its audit line), its timeline entry
//! and its audit line commit together ([`crate::registry::discharge`]); then the events are
//! announced (live feed) and, on SQLite, the engine is told the plan it now judges the patient
//! by (none while discharged). With PostgreSQL the transaction itself tells the engine holding
//! the patient, wherever it runs.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{Principal, check_patient};
use super::error::ApiError;
use super::extract::{ApiResult, new_audit_line, patient_id};
use super::state::AppState;
use crate::crm::Command;
use crate::domain::{PatientId, now_ms};
use crate::registry::discharge::{DischargeChange, StoredDischarge, check_date, check_reason};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DischargeBody {
    reason: Option<String>,
    /// `YYYY-MM-DD`; today in the clinic's time zone when absent.
    date: Option<String>,
}

/// A JSON body, or the default for an empty one.
fn body_or_default<T: serde::de::DeserializeOwned + Default>(body: &Bytes) -> ApiResult<T> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("invalid body: {e}")))
}

/// `POST /patients/{id}/discharge`.
pub(super) async fn discharge(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let id = patient_id(&id)?;
    check_patient(&s, &p, &id).await?;
    p.may_act("discharge a patient")?;
    let b: DischargeBody = body_or_default(&body)?;
    let now = now_ms();
    let today = s
        .clinic_zone
        .day_of(now)
        .map(|d| d.to_string())
        .ok_or_else(|| ApiError::Internal("today's date is out of range".into()))?;
    let date = match b.date.as_deref() {
        Some(d) => check_date(d, &today)?,
        None => today,
    };
    let discharge = StoredDischarge {
        at_ms: now,
        date,
        reason: check_reason(b.reason.as_deref())?,
        by: p.name.clone(),
    };
    change(&s, &p, id, Some(discharge), "patient.discharge", now).await
}

/// `POST /patients/{id}/readmit`: monitoring resumes, with the care plan in force.
pub(super) async fn readmit(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let id = patient_id(&id)?;
    check_patient(&s, &p, &id).await?;
    p.may_act("readmit a patient")?;
    // No fields yet; an object (or nothing) is accepted, anything else named.
    let _: serde_json::Map<String, Value> = body_or_default(&body)?;
    change(&s, &p, id, None, "patient.readmit", now_ms()).await
}

async fn change(
    s: &AppState,
    p: &Principal,
    id: PatientId,
    discharge: Option<StoredDischarge>,
    action: &str,
    now: i64,
) -> ApiResult<Json<Value>> {
    let target = format!("patient/{id}");
    let change = DischargeChange {
        patient: id.as_str().to_owned(),
        discharge,
        by: p.name.clone(),
        now_ms: now,
        audit: new_audit_line(p, action, Some(&id), &target, now),
        alert_audit: new_audit_line(p, "alert.resolve", Some(&id), &target, now),
        sinks: s.crm.sinks.to_vec(),
    };
    let done = s.registry.set_discharge(change).await?;
    s.crm.announce(done.events);
    // The engine (SQLite's one instance; with PostgreSQL the notice in the transaction does
    // it) now judges the patient by no rule, or again by their plan.
    let plan = s.registry.engine_plan(id.clone()).await?;
    s.crm
        .tell(Command::PlanChanged(id, plan.map(Arc::new)))
        .await;
    let resolved: Vec<&str> = done.resolved.iter().map(|a| a.id.as_str()).collect();
    let mut out = json!(done.patient);
    out["resolved_alerts"] = json!(resolved);
    Ok(Json(out))
}
