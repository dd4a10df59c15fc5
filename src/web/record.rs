//! The CRM record's routes: care plans, alerts (list, acknowledge, resolve), clinicians'
//! notes, the whole record of a patient, and the outward deliveries.
//!
//! Reads of patient data are audited like every other; changes (care plans, acknowledgements,
//! resolutions, notes, demographics) are audited and also land on the patient's timeline.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Extension, extract::rejection::JsonRejection};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{Principal, check_patient};
use super::error::ApiError;
use super::extract::{
    ApiResult, audit_line, audit_shown, new_audit_line, patient_id, require_admin, time_param,
};
use super::state::AppState;
use crate::alerts::rules::CarePlan;
use crate::crm::Command;
use crate::crm::record::PlanInForce;
use crate::crm::record::{Alert, AlertActionError, AlertQuery, AlertStatus};
use crate::domain::{PatientId, now_ms};
use crate::registry::{NOT_CLEARED, PatientDetails};

const DEFAULT_LIMIT: usize = 200;
const MAX_LIMIT: usize = 10_000;

fn limit(l: Option<usize>) -> ApiResult<usize> {
    let l = l.unwrap_or(DEFAULT_LIMIT);
    if (1..=MAX_LIMIT).contains(&l) {
        Ok(l)
    } else {
        Err(ApiError::BadRequest(format!(
            "limit must be 1 to {MAX_LIMIT}"
        )))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PatientUpdate {
    name: Option<String>,
    birth_date: Option<String>,
    /// `null` or `""` clears the MRN.
    #[serde(default, deserialize_with = "present")]
    mrn: Option<Option<String>>,
    gender: Option<String>,
    phone: Option<String>,
    email: Option<String>,
    address: Option<String>,
    /// `Some(None)`: the field was sent as `null`, which is refused rather than ignored.
    #[serde(default, deserialize_with = "present")]
    care_team: Option<Option<String>>,
    contact_preference: Option<String>,
    contact_notes: Option<String>,
    /// IANA time-zone name (docs/billing.md).
    timezone: Option<String>,
}

/// A field that may be absent (`None`), `null` (`Some(None)`) or a value.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

pub(super) async fn update_patient(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    body: Result<Json<PatientUpdate>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    require_admin(&p)?;
    let id = patient_id(&id)?;
    let Json(b) = body?;
    // Every patient belongs to a care team: `null` does not clear it (nor does "", which the
    // registry refuses with the same words).
    let care_team = match b.care_team {
        Some(None) => return Err(ApiError::BadRequest(NOT_CLEARED.into())),
        Some(Some(t)) => Some(t),
        None => None,
    };
    let details = PatientDetails {
        gender: b.gender,
        phone: b.phone,
        email: b.email,
        address: b.address,
        care_team,
        contact_preference: b.contact_preference,
        contact_notes: b.contact_notes,
        timezone: b.timezone,
    };
    let mrn = b.mrn.map(Option::unwrap_or_default);
    let audit = super::patients::patient_audit(&p, "patient.update", &id, now_ms());
    let (patient, _mrn_changed) = s
        .registry
        .update_patient(id.clone(), b.name, b.birth_date, mrn, details, Some(audit))
        .await?;
    Ok(Json(patient))
}

/// The plan in force, whether it is the default one, and where it comes from: `source` is
/// `own`, `programme` (then `programme` names it) or `default`.
async fn plan_of(s: &AppState, id: &crate::domain::PatientId) -> ApiResult<Value> {
    let (plan, mut out) = match s.registry.plan_in_force(id.clone()).await? {
        PlanInForce::Own(plan) => {
            let v = json!({"default": false, "source": "own"});
            (plan, v)
        }
        PlanInForce::Programme { id, plan } => {
            let v = json!({"default": false, "source": "programme", "programme": id});
            (plan, v)
        }
        PlanInForce::Default => {
            let v = json!({"default": true, "source": "default"});
            (CarePlan::default_plan(), v)
        }
    };
    // The range each vital's threshold rules draw, for the dashboard to mark values outside
    // it in words (`alerts::limits`).
    out["ranges"] = json!(crate::alerts::limits::ranges(&plan));
    out["rules"] = json!(plan.rules);
    Ok(out)
}

pub(super) async fn get_care_plan(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = patient_id(&id)?;
    check_patient(&s, &p, &id).await?;
    let plan = plan_of(&s, &id).await?;
    audit_line(
        &s,
        &p,
        "care_plan.read",
        Some(&id),
        &format!("patient/{id}/care-plan"),
    )
    .await?;
    Ok(Json(plan))
}

pub(super) async fn put_care_plan(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let id = patient_id(&id)?;
    // A care plan is a clinical decision: an admin, or a clinician of the patient's team.
    check_patient(&s, &p, &id).await?;
    let plan = CarePlan::parse(&body).map_err(|e| ApiError::Invalid {
        at: json!({"rule": e.rule, "field": e.field}),
        message: e.message,
    })?;
    let now = now_ms();
    let target = format!("patient/{id}/care-plan");
    let line = new_audit_line(&p, "care_plan.update", Some(&id), &target, now);
    s.registry
        .set_care_plan(id.clone(), plan.clone(), p.name.clone(), now, Some(line))
        .await?;
    // A discharged patient's plan is kept for their readmission; until then no rule
    // watches them (`engine_plan`).
    let in_force = s.registry.engine_plan(id.clone()).await?;
    s.crm
        .tell(Command::PlanChanged(id.clone(), in_force.map(Arc::new)))
        .await;
    Ok(Json(json!({
        "rules": plan.rules, "default": false, "source": "own",
        "ranges": crate::alerts::limits::ranges(&plan),
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NoteBody {
    text: String,
}

pub(super) async fn add_note(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    body: Result<Json<NoteBody>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    let id = patient_id(&id)?;
    check_patient(&s, &p, &id).await?;
    let Json(body) = body?;
    let text = body.text.trim().to_owned();
    if text.is_empty() || text.chars().count() > 10_000 {
        return Err(ApiError::BadRequest(
            "text must be 1 to 10000 characters".into(),
        ));
    }
    let now = now_ms();
    let target = format!("patient/{id}/notes");
    let line = new_audit_line(&p, "note.create", Some(&id), &target, now);
    let entry = s
        .registry
        .add_note(id.clone(), p.name.clone(), text, now, line)
        .await?;
    Ok((StatusCode::CREATED, Json(entry)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RecordParams {
    limit: Option<usize>,
    before: Option<String>,
}

pub(super) async fn record(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    q: Result<Query<RecordParams>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let id = patient_id(&id)?;
    let Query(q) = q?;
    let limit = limit(q.limit)?;
    let before = time_param("before", q.before.as_deref())?.unwrap_or(i64::MAX);
    check_patient(&s, &p, &id).await?;
    let patient = s.registry.patient(id.clone()).await?;
    let devices = s.registry.patient_devices(id.clone()).await?;
    let plan = plan_of(&s, &id).await?;
    let mut open = s
        .registry
        .alerts(AlertQuery {
            status: None,
            patient_id: Some(id.clone()),
            teams: None,
            limit: MAX_LIMIT,
        })
        .await?;
    open.retain(|a| a.status != AlertStatus::Resolved);
    let timeline = s.registry.timeline(id.clone(), before, limit).await?;
    audit_line(
        &s,
        &p,
        "record.read",
        Some(&id),
        &format!("patient/{id}/record"),
    )
    .await?;
    Ok(Json(json!({
        "patient": patient,
        "devices": devices,
        "care_plan": plan,
        "open_alerts": open,
        "timeline": timeline,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AlertParams {
    status: Option<String>,
    patient_id: Option<String>,
    limit: Option<usize>,
}

pub(super) async fn list_alerts(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    q: Result<Query<AlertParams>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(q) = q?;
    let status = match q.status.as_deref().filter(|x| !x.is_empty()) {
        Some(x) => Some(AlertStatus::parse(x).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "status {x:?} is not one of open, acknowledged, resolved"
            ))
        })?),
        None => None,
    };
    let patient = q
        .patient_id
        .as_deref()
        .filter(|x| !x.is_empty())
        .map(patient_id)
        .transpose()?;
    if let Some(id) = &patient {
        check_patient(&s, &p, id).await?;
    }
    let alerts = s
        .registry
        .alerts(AlertQuery {
            status,
            patient_id: patient.clone(),
            teams: p.teams.as_ref().map(|t| t.to_vec()),
            limit: limit(q.limit)?,
        })
        .await?;
    match &patient {
        Some(id) => {
            let target = format!("alerts?patient_id={id}");
            audit_line(&s, &p, "alerts.read", Some(id), &target).await?;
        }
        // The list names its alerts' patients: each is audited as shown (coalesced, web/seen.rs).
        None => {
            let shown: Vec<PatientId> = alerts
                .iter()
                .filter_map(|a| PatientId::parse(&a.patient_id).ok())
                .collect();
            audit_shown(&s, &p, "alerts.read", "alerts", &shown).await?;
        }
    }
    Ok(Json(json!({ "alerts": alerts })))
}

pub(super) fn alert_id(id: &str) -> ApiResult<String> {
    let ok =
        id.len() == 36 && id.starts_with("alr_") && id[4..].bytes().all(|b| b.is_ascii_hexdigit());
    if ok {
        Ok(id.to_owned())
    } else {
        Err(ApiError::BadRequest(format!(
            "{id:?} is not an alert id like alr_<32 hex digits>"
        )))
    }
}

pub(super) async fn get_alert(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = alert_id(&id)?;
    let (alert, patient) = visible_alert(&s, &p, &id).await?;
    audit_line(&s, &p, "alert.read", Some(&patient), &format!("alert/{id}")).await?;
    Ok(Json(json!(alert)))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ActionBody {
    note: Option<String>,
}

pub(super) async fn act(
    s: AppState,
    p: Principal,
    id: String,
    body: Bytes,
    resolve: bool,
) -> ApiResult<Json<Value>> {
    let id = alert_id(&id)?;
    let body: ActionBody = if body.iter().all(u8::is_ascii_whitespace) {
        ActionBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("invalid body: {e}")))?
    };
    let note = clean_note(body.note)?;
    Ok(Json(json!(act_on(&s, &p, id, note, resolve).await?)))
}

/// A note as given: trimmed, none when blank, refused when longer than 10,000 characters.
pub(super) fn clean_note(note: Option<String>) -> ApiResult<Option<String>> {
    let note = note.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty());
    if note.as_ref().is_some_and(|n| n.chars().count() > 10_000) {
        return Err(ApiError::BadRequest(
            "note must be at most 10000 characters".into(),
        ));
    }
    Ok(note)
}

/// The alert `id` and its patient, once the caller may see it.
pub(super) async fn visible_alert(
    s: &AppState,
    p: &Principal,
    id: &str,
) -> ApiResult<(Alert, PatientId)> {
    let alert = s
        .registry
        .alert(id.to_owned())
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("alert {id} not found")))?;
    let patient = patient_id(&alert.patient_id)?;
    if !p.sees_all() {
        check_patient(s, p, &patient).await?;
    }
    Ok((alert, patient))
}

/// Maps a refused action on an alert to its answer.
pub(super) fn action_error(e: AlertActionError) -> ApiError {
    match e {
        AlertActionError::NotFound(_) => ApiError::NotFound(e.to_string()),
        AlertActionError::AlreadyResolved(_) => ApiError::Conflict(e.to_string()),
        AlertActionError::Registry(r) => ApiError::from(r),
    }
}

/// Acknowledges (`resolve` false) or resolves alert `id` for `p`, with its audit line, and
/// tells the alert engine.
pub(super) async fn act_on(
    s: &AppState,
    p: &Principal,
    id: String,
    note: Option<String>,
    resolve: bool,
) -> ApiResult<Alert> {
    // The alert's patient names the audit line written with the action (an alert never moves
    // to another patient, so it is the one the action finds).
    let (_, patient) = visible_alert(s, p, &id).await?;
    let action = if resolve {
        "alert.resolve"
    } else {
        "alert.acknowledge"
    };
    let now = now_ms();
    let line = new_audit_line(p, action, Some(&patient), &format!("alert/{id}"), now);
    let (alert, events) = s
        .registry
        .act_on_alert(
            id.clone(),
            resolve,
            p.name.clone(),
            note,
            now,
            s.crm.sinks.clone(),
            line,
        )
        .await
        .map_err(action_error)?;
    let changed = !events.is_empty();
    s.crm.announce(events);
    if changed {
        let cmd = if resolve {
            Command::Resolved(patient, alert.rule_id.clone())
        } else {
            Command::Acknowledged(patient, alert.rule_id.clone())
        };
        s.crm.tell(cmd).await;
    }
    Ok(alert)
}

pub(super) async fn ack_alert(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    act(s, p, id, body, false).await
}

pub(super) async fn resolve_alert(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    act(s, p, id, body, true).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DeliveryParams {
    status: Option<String>,
    sink: Option<String>,
    patient_id: Option<String>,
    limit: Option<usize>,
}

fn sink_param(sink: Option<String>) -> ApiResult<Option<String>> {
    let sink = sink.filter(|x| !x.is_empty());
    if let Some(x) = &sink
        && !["fhir", "webhook"].contains(&x.as_str())
    {
        return Err(ApiError::BadRequest(format!(
            "sink {x:?} is not one of fhir, webhook"
        )));
    }
    Ok(sink)
}

pub(super) async fn deliveries(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    q: Result<Query<DeliveryParams>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    require_admin(&p)?;
    let Query(q) = q?;
    let status = q.status.filter(|x| !x.is_empty());
    if let Some(x) = &status
        && !["pending", "delivered", "failed"].contains(&x.as_str())
    {
        return Err(ApiError::BadRequest(format!(
            "status {x:?} is not one of pending, delivered, failed"
        )));
    }
    let sink = sink_param(q.sink)?;
    let patient = q
        .patient_id
        .filter(|x| !x.is_empty())
        .map(|x| patient_id(&x))
        .transpose()?;
    let rows = s
        .registry
        .deliveries(
            status,
            sink,
            patient.as_ref().map(|x| x.as_str().to_owned()),
            limit(q.limit)?,
        )
        .await?;
    audit_line(&s, &p, "deliveries.read", patient.as_ref(), "deliveries").await?;
    Ok(Json(json!({ "deliveries": rows })))
}

pub(super) async fn retry_delivery(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    require_admin(&p)?;
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::BadRequest(format!("{id:?} is not a delivery id")))?;
    if !s.registry.retry_delivery(id, now_ms()).await? {
        return Err(ApiError::NotFound(format!("no failed delivery {id}")));
    }
    audit_line(&s, &p, "delivery.retry", None, &format!("delivery/{id}")).await?;
    s.crm.wake_outbox();
    Ok(Json(json!({"id": id, "status": "pending"})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RetryAll {
    patient_id: String,
    sink: Option<String>,
}

/// `POST /deliveries/retry` `{"patient_id", "sink"?}`: every failed delivery of a patient back
/// in the queue, as after their MRN was set (one patient's readings can be many deliveries).
pub(super) async fn retry_deliveries(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    body: Result<Json<RetryAll>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    require_admin(&p)?;
    let Json(b) = body?;
    let patient = patient_id(&b.patient_id)?;
    let sink = sink_param(b.sink)?;
    let n = s
        .registry
        .retry_deliveries(patient.as_str().to_owned(), sink, now_ms())
        .await?;
    audit_line(
        &s,
        &p,
        "delivery.retry",
        Some(&patient),
        &format!("patient/{patient}/deliveries"),
    )
    .await?;
    s.crm.wake_outbox();
    Ok(Json(json!({"patient_id": patient, "retried": n})))
}

/// `GET /care-plans`: the programme care plans Vigil ships (`alerts::programme_plans`), to give
/// one to a patient with `PUT /patients/{id}/care-plan`, and the default plan (`default`). No
/// patient's data: not audited.
pub(super) async fn programme_plans() -> Json<Value> {
    Json(json!({
        "plans": crate::alerts::programme_plans::programme_plans(),
        "default": CarePlan::default_plan(),
    }))
}
