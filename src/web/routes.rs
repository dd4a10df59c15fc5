//! The `/api/v1` handlers. Each checks its input, asks the registry or store, writes the audit
//! line for any read of patient data, and answers JSON.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{Principal, check_patient};
use super::error::ApiError;
use super::extract::{ApiResult, audit_line, patient_id, require_admin, time_param};
use super::state::AppState;
use crate::domain::{DeviceId, Metric, format_rfc3339, now_ms};
use crate::registry::PatientDetails;
use crate::store::ObservationQuery;

pub(super) fn api() -> Router<AppState> {
    Router::new()
        .route("/patients", post(create_patient).get(list_patients))
        .route(
            "/patients/{id}",
            get(get_patient).patch(super::record::update_patient),
        )
        .route(
            "/patients/{id}/care-plan",
            get(super::record::get_care_plan).put(super::record::put_care_plan),
        )
        .route("/patients/{id}/notes", post(super::record::add_note))
        .route("/patients/{id}/record", get(super::record::record))
        .route("/alerts", get(super::record::list_alerts))
        .route("/alerts/{id}", get(super::record::get_alert))
        .route("/alerts/{id}/ack", post(super::record::ack_alert))
        .route("/alerts/{id}/resolve", post(super::record::resolve_alert))
        .route("/deliveries", get(super::record::deliveries))
        .route(
            "/deliveries/{id}/retry",
            post(super::record::retry_delivery),
        )
        .route("/deliveries/retry", post(super::record::retry_deliveries))
        .route("/patients/{id}/observations", get(observations))
        .route("/devices", post(create_device))
        .route("/devices/{id}", get(get_device))
        .route("/devices/{id}/revoke", post(revoke_device))
        .route("/devices/{id}/rotate", post(rotate_device))
        .route("/dead-letters", get(dead_letters))
        .route("/influxdb/rejected", get(influx_rejected))
        .route("/audit", get(audit))
        .route("/audit/export", get(audit_export))
        .route("/audit/verify", get(audit_verify))
        .route("/profiles", get(profiles))
        .route(
            "/session",
            get(super::session::current)
                .post(super::session::sign_in)
                .delete(super::session::sign_out),
        )
        .route("/live", get(super::live::live))
        .route("/panel", get(super::panel::panel))
        .route("/patients/{id}/series", get(super::panel::series))
        .route(
            "/users",
            get(super::admin::list_users).post(super::admin::create_user),
        )
        .route(
            "/users/{name}",
            axum::routing::patch(super::admin::update_user),
        )
        .route(
            "/teams",
            get(super::admin::list_teams).post(super::admin::create_team),
        )
        .route(
            "/tokens",
            get(super::admin::list_tokens).post(super::admin::create_token),
        )
        .route(
            "/tokens/{id}",
            axum::routing::delete(super::admin::revoke_token),
        )
        .route("/visits", post(super::visits::create))
        .route("/visits/{id}", get(super::visits::get))
        .route("/visits/{id}/end", post(super::visits::end))
        .route("/visits/{id}/join", get(super::visits::join))
        .route("/visits/{id}/links", post(super::visits::link))
        .route("/visits/{id}/signal", get(super::signal::signal))
}

pub(super) async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

pub(super) async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}

fn device_id(s: &str) -> ApiResult<DeviceId> {
    DeviceId::parse(s).map_err(|e| ApiError::BadRequest(e.to_string()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewPatient {
    id: String,
    name: String,
    birth_date: Option<String>,
    /// The clinic's medical record number (unique per clinic).
    mrn: Option<String>,
    gender: Option<String>,
    phone: Option<String>,
    email: Option<String>,
    address: Option<String>,
    care_team: Option<String>,
    contact_preference: Option<String>,
    contact_notes: Option<String>,
}

impl NewPatient {
    fn details(&self) -> PatientDetails {
        PatientDetails {
            gender: self.gender.clone(),
            phone: self.phone.clone(),
            email: self.email.clone(),
            address: self.address.clone(),
            care_team: self.care_team.clone(),
            contact_preference: self.contact_preference.clone(),
            contact_notes: self.contact_notes.clone(),
        }
    }
}

async fn create_patient(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    body: Result<Json<NewPatient>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    require_admin(&p)?;
    let Json(body) = body?;
    let id = patient_id(&body.id)?;
    let patient = s
        .registry
        .create_patient(
            id.clone(),
            body.name.clone(),
            body.birth_date.clone(),
            body.mrn.clone(),
            body.details(),
            now_ms(),
        )
        .await?;
    audit_line(
        &s,
        &p,
        "patient.create",
        Some(&id),
        &format!("patient/{id}"),
    )
    .await?;
    if patient.mrn.is_some() {
        let target = format!("patient/{id}/mrn");
        audit_line(&s, &p, "patient.mrn", Some(&id), &target).await?;
    }
    Ok((StatusCode::CREATED, Json(patient)))
}

async fn list_patients(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
) -> ApiResult<Json<Value>> {
    let mut patients = s.registry.patients().await?;
    patients.retain(|x| p.sees_team(x.details.care_team.as_deref()));
    audit_line(&s, &p, "patient.list", None, "patients").await?;
    Ok(Json(json!({ "patients": patients })))
}

async fn get_patient(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let id = patient_id(&id)?;
    check_patient(&s, &p, &id).await?;
    let patient = s.registry.patient(id.clone()).await?;
    audit_line(&s, &p, "patient.read", Some(&id), &format!("patient/{id}")).await?;
    Ok(Json(patient))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewDevice {
    id: String,
    patient_id: String,
    profile: String,
}

async fn create_device(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    body: Result<Json<NewDevice>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    require_admin(&p)?;
    let Json(body) = body?;
    let id = device_id(&body.id)?;
    let patient = patient_id(&body.patient_id)?;
    let (device, secret) = s
        .registry
        .create_device(id.clone(), patient.clone(), &body.profile, now_ms())
        .await?;
    audit_line(
        &s,
        &p,
        "device.create",
        Some(&patient),
        &format!("device/{id}"),
    )
    .await?;
    let mut out = serde_json::to_value(&device).map_err(|e| ApiError::Internal(e.to_string()))?;
    out["mqtt"] = mqtt_credentials(&s, &id, secret);
    Ok((
        StatusCode::CREATED,
        [(header::CACHE_CONTROL, "no-store")],
        Json(out),
    ))
}

/// A device's MQTT credentials, with where it connects: `host` (null: the host the API was
/// reached at), `port` and `tls`, from the endpoint's real listeners or the external broker.
fn mqtt_credentials(s: &AppState, id: &DeviceId, secret: String) -> Value {
    let a = &s.device_access;
    json!({
        "username": id.as_str(), "password": secret,
        "host": a.host, "port": a.port, "tls": a.tls,
    })
}

/// `POST /devices/{id}/revoke` (admin): the device can no longer connect, and is disconnected
/// at once.
async fn revoke_device(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    _body: axum::body::Bytes,
) -> ApiResult<impl IntoResponse> {
    require_admin(&p)?;
    let id = device_id(&id)?;
    let device = s.registry.revoke_device(id.clone(), now_ms()).await?;
    audit_line(
        &s,
        &p,
        "device.revoke",
        Some(&device.patient_id),
        &format!("device/{id}"),
    )
    .await?;
    Ok(Json(device))
}

/// `POST /devices/{id}/rotate` (admin): a new secret, shown once; the old one stops working and
/// the connections made with it are ended.
async fn rotate_device(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    _body: axum::body::Bytes,
) -> ApiResult<impl IntoResponse> {
    require_admin(&p)?;
    let id = device_id(&id)?;
    let (device, secret) = s.registry.rotate_device_secret(id.clone()).await?;
    audit_line(
        &s,
        &p,
        "device.rotate",
        Some(&device.patient_id),
        &format!("device/{id}"),
    )
    .await?;
    let mut out = serde_json::to_value(&device).map_err(|e| ApiError::Internal(e.to_string()))?;
    out["mqtt"] = mqtt_credentials(&s, &id, secret);
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(out)))
}

async fn get_device(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let id = device_id(&id)?;
    let device = s.registry.device(id.clone()).await?;
    check_patient(&s, &p, &device.patient_id).await?;
    audit_line(
        &s,
        &p,
        "device.read",
        Some(&device.patient_id),
        &format!("device/{id}"),
    )
    .await?;
    Ok(Json(device))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ObsParams {
    metric: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<usize>,
    /// `oldest` (the default: the first `limit` of the range) or `newest` (the last `limit`,
    /// newest first).
    order: Option<String>,
}

const DEFAULT_LIMIT: usize = 1000;
const MAX_LIMIT: usize = 100_000;

async fn observations(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    q: Result<Query<ObsParams>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let id = patient_id(&id)?;
    let Query(q) = q?;
    let metric = match q.metric.as_deref().filter(|m| !m.is_empty()) {
        Some(m) => Some(
            Metric::parse(m)
                .ok_or_else(|| ApiError::BadRequest(format!("unknown metric {m:?}")))?,
        ),
        None => None,
    };
    let from_ms = time_param("from", q.from.as_deref())?.unwrap_or(i64::MIN);
    let to_ms = time_param("to", q.to.as_deref())?.unwrap_or(i64::MAX);
    if from_ms > to_ms {
        return Err(ApiError::BadRequest("from is after to".into()));
    }
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be 1 to {MAX_LIMIT}"
        )));
    }
    let newest_first = newest_first(q.order.as_deref())?;
    // 404 for a patient that does not exist, rather than an empty list that looks like silence.
    check_patient(&s, &p, &id).await?;
    // One more than asked: whether the limit cut the answer.
    let mut rows = s
        .store
        .observations(ObservationQuery {
            patient_id: id.clone(),
            metric,
            from_ms,
            to_ms,
            limit: limit + 1,
            newest_first,
        })
        .await?;
    let truncated = rows.len() > limit;
    rows.truncate(limit);
    audit_line(
        &s,
        &p,
        "observations.read",
        Some(&id),
        &format!(
            "patient/{id}/observations{}",
            metric.map_or(String::new(), |m| format!("?metric={m}"))
        ),
    )
    .await?;
    let observations: Vec<Value> = rows
        .into_iter()
        .map(|o| {
            json!({
                "time": format_rfc3339(o.time_ms),
                "metric": o.metric,
                "value": o.value,
                "unit": o.metric.unit(),
                "device_id": o.device_id,
            })
        })
        .collect();
    Ok(Json(
        json!({ "observations": observations, "truncated": truncated }),
    ))
}

/// The `order` parameter: `oldest` (the default) or `newest` first.
fn newest_first(order: Option<&str>) -> ApiResult<bool> {
    match order {
        None | Some("oldest") => Ok(false),
        Some("newest") => Ok(true),
        Some(_) => Err(ApiError::BadRequest(
            "order must be oldest or newest".into(),
        )),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeadLetterParams {
    device_id: Option<String>,
    limit: Option<usize>,
}

async fn dead_letters(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    q: Result<Query<DeadLetterParams>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(q) = q?;
    let device = q.device_id.as_deref().map(device_id).transpose()?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be 1 to {MAX_LIMIT}"
        )));
    }
    let patient = match &device {
        Some(d) => Some(s.registry.device(d.clone()).await?.patient_id),
        None => None,
    };
    match &patient {
        Some(id) => check_patient(&s, &p, id).await?,
        // Dead letters of every device name every patient: admins only.
        None => require_admin(&p)?,
    }
    let rows = s.store.dead_letters(device.clone(), limit).await?;
    audit_line(
        &s,
        &p,
        "dead_letters.read",
        patient.as_ref(),
        &device.map_or("dead-letters".to_owned(), |d| {
            format!("dead-letters?device_id={d}")
        }),
    )
    .await?;
    let out: Vec<Value> = rows
        .into_iter()
        .map(|d| {
            let (payload, encoding) = match String::from_utf8(d.payload) {
                Ok(text) => (text, "utf-8"),
                Err(e) => (
                    base64::engine::general_purpose::STANDARD.encode(e.into_bytes()),
                    "base64",
                ),
            };
            json!({
                "id": d.id,
                "time": format_rfc3339(d.time_ms),
                "device_id": d.device_id,
                "topic": d.topic,
                "reason": d.reason,
                "payload": payload,
                "payload_encoding": encoding,
            })
        })
        .collect();
    Ok(Json(json!({ "dead_letters": out })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditParams {
    patient_id: Option<String>,
    user: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<usize>,
    /// `oldest` (the default) or `newest` first.
    order: Option<String>,
}

async fn audit(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    q: Result<Query<AuditParams>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    require_admin(&p)?;
    let Query(q) = q?;
    let patient = q.patient_id.as_deref().map(patient_id).transpose()?;
    let from_ms = time_param("from", q.from.as_deref())?.unwrap_or(i64::MIN);
    let to_ms = time_param("to", q.to.as_deref())?.unwrap_or(i64::MAX);
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let newest_first = newest_first(q.order.as_deref())?;
    // Reading the trail is itself recorded, before it is read.
    audit_line(&s, &p, "audit.read", patient.as_ref(), "audit").await?;
    let records = s
        .registry
        .audit_records(
            patient.map(|p| p.as_str().to_owned()),
            q.user,
            from_ms,
            to_ms,
            limit,
            newest_first,
        )
        .await?;
    Ok(Json(json!({ "audit": records })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportParams {
    from: Option<String>,
    to: Option<String>,
}

/// Lines per page of an audit export: each page is one short read, so an export of a long trail
/// never holds the registry for long nor the whole trail in memory.
const EXPORT_PAGE: usize = 1000;

/// The audit trail as newline-delimited JSON, in chain order, with the fields needed to recompute
/// every hash (see `AuditExportLine`), streamed page by page. Exporting is itself audited.
async fn audit_export(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    q: Result<Query<ExportParams>, QueryRejection>,
) -> ApiResult<impl IntoResponse> {
    require_admin(&p)?;
    let Query(q) = q?;
    let from_ms = time_param("from", q.from.as_deref())?.unwrap_or(i64::MIN);
    let to_ms = time_param("to", q.to.as_deref())?.unwrap_or(i64::MAX);
    if from_ms > to_ms {
        return Err(ApiError::BadRequest("from must not be after to".into()));
    }
    audit_line(&s, &p, "audit.export", None, "audit").await?;
    // The first page is read before answering, so a failing registry gives an error status
    // rather than a cut-off 200.
    let first = s
        .registry
        .audit_export_page(0, from_ms, to_ms, EXPORT_PAGE)
        .await?;
    let registry = s.registry.clone();
    let pages = futures_util::stream::unfold(Some(first), move |page| {
        let registry = registry.clone();
        async move {
            let page = page?;
            if page.is_empty() {
                return None;
            }
            let mut out = Vec::with_capacity(page.len() * 256);
            for line in &page {
                // Serialising a struct of strings and integers cannot fail.
                if serde_json::to_writer(&mut out, line).is_ok() {
                    out.push(b'\n');
                }
            }
            let next = if page.len() < EXPORT_PAGE {
                Some(Vec::new())
            } else {
                let after = page.last().map_or(0, |l| l.id);
                match registry
                    .audit_export_page(after, from_ms, to_ms, EXPORT_PAGE)
                    .await
                {
                    Ok(p) => Some(p),
                    Err(e) => {
                        // Headers are gone: end the body early; the receiver sees no final
                        // newline-terminated chain end and a broken transfer.
                        tracing::error!(error = %e, "audit export stopped");
                        return Some((Err(std::io::Error::other(e.to_string())), None));
                    }
                }
            };
            Some((Ok::<_, std::io::Error>(bytes::Bytes::from(out)), next))
        }
    });
    let name = format!(
        "attachment; filename=\"vigil-audit-{}.ndjson\"",
        format_rfc3339(now_ms()).get(..10).unwrap_or("export")
    );
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-ndjson".to_owned()),
            (header::CONTENT_DISPOSITION, name),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
        // Fused: the compression layer polls the body once more after its end (for trailers),
        // and an unfused `unfold` panics when polled after it has finished.
        axum::body::Body::from_stream(futures_util::StreamExt::fuse(pages)),
    ))
}

/// Recomputes the whole audit hash chain: `{"intact": true, "lines": n}`, or `{"intact": false,
/// "error": "audit line N does not match the chain"}` when a line was changed or removed.
async fn audit_verify(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
) -> ApiResult<Json<Value>> {
    require_admin(&p)?;
    audit_line(&s, &p, "audit.verify", None, "audit").await?;
    Ok(Json(match s.registry.verify_audit_chain().await {
        Ok(n) => json!({"intact": true, "lines": n}),
        Err(crate::registry::RegistryError::Invalid(why)) => json!({"intact": false, "error": why}),
        Err(e) => return Err(e.into()),
    }))
}

async fn profiles(State(s): State<AppState>) -> Json<Value> {
    let list: Vec<_> = s
        .registry
        .profiles()
        .ids()
        .filter_map(|id| s.registry.profiles().get(id).map(|p| p.as_ref().clone()))
        .collect();
    Json(json!({ "profiles": list }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RejectedParams {
    limit: Option<usize>,
}

/// Lines InfluxDB refused for good (400/422), with its reason: the writer's dead letters.
async fn influx_rejected(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    q: Result<Query<RejectedParams>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    require_admin(&p)?;
    let Query(q) = q?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be 1 to {MAX_LIMIT}"
        )));
    }
    // The lines name patients: reading them is audited like any other patient data.
    audit_line(&s, &p, "influxdb_rejected.read", None, "influxdb/rejected").await?;
    let rows = s.store.influx_rejected(limit).await?;
    let out: Vec<Value> = rows
        .into_iter()
        .map(|(time_ms, line, reason)| json!({"time": format_rfc3339(time_ms), "line": line, "reason": reason}))
        .collect();
    Ok(Json(json!({ "rejected": out })))
}
