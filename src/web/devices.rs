//! Devices: provisioning (`POST /devices`, admin: the secret is shown once), revoking and
//! rotating their secrets, reading one, and the device profiles they may use.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{Principal, check_patient};
use super::error::ApiError;
use super::extract::{ApiResult, audit_line, device_id, new_audit_line, patient_id, require_admin};
use super::state::AppState;
use crate::domain::{DeviceId, PatientId, now_ms};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewDevice {
    id: String,
    patient_id: String,
    profile: String,
}

pub(super) async fn create_device(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    body: Result<Json<NewDevice>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    require_admin(&p)?;
    let Json(body) = body?;
    let id = device_id(&body.id)?;
    let patient = patient_id(&body.patient_id)?;
    // The secret is answered only once the device and its audit line are committed together.
    let now = now_ms();
    let line = new_audit_line(
        &p,
        "device.create",
        Some(&patient),
        &format!("device/{id}"),
        now,
    );
    let (device, secret) = s
        .registry
        .create_device(id.clone(), patient.clone(), &body.profile, now, Some(line))
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
pub(super) async fn revoke_device(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    _body: axum::body::Bytes,
) -> ApiResult<impl IntoResponse> {
    require_admin(&p)?;
    let id = device_id(&id)?;
    let target = format!("device/{id}");
    let now = now_ms();
    let line =
        |patient: &PatientId| new_audit_line(&p, "device.revoke", Some(patient), &target, now);
    let device = s
        .registry
        .revoke_device(id.clone(), now, Some(&line))
        .await?;
    Ok(Json(device))
}

/// `POST /devices/{id}/rotate` (admin): a new secret, shown once; the old one stops working and
/// the connections made with it are ended.
pub(super) async fn rotate_device(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    _body: axum::body::Bytes,
) -> ApiResult<impl IntoResponse> {
    require_admin(&p)?;
    let id = device_id(&id)?;
    // The new secret is answered only once its hash and the audit line are committed together;
    // until then the old secret still works.
    let target = format!("device/{id}");
    let now = now_ms();
    let line =
        |patient: &PatientId| new_audit_line(&p, "device.rotate", Some(patient), &target, now);
    let (device, secret) = s
        .registry
        .rotate_device_secret(id.clone(), Some(&line))
        .await?;
    let mut out = serde_json::to_value(&device).map_err(|e| ApiError::Internal(e.to_string()))?;
    out["mqtt"] = mqtt_credentials(&s, &id, secret);
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(out)))
}

pub(super) async fn get_device(
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

pub(super) async fn profiles(State(s): State<AppState>) -> Json<Value> {
    let list: Vec<_> = s
        .registry
        .profiles()
        .ids()
        .filter_map(|id| s.registry.profiles().get(id).map(|p| p.as_ref().clone()))
        .collect();
    Json(json!({ "profiles": list }))
}
