//! Devices: provisioning (`POST /devices`, admin: the secret is shown once), revoking and
//! rotating their secrets, reading one, the clinic's inventory (`GET /devices`), and the
//! device profiles they may use.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
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

/// Most devices in one answer of `GET /devices`, and the default.
const LIST_MAX: usize = 5_000;
const LIST_DEFAULT: usize = 1_000;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    patient_id: Option<String>,
    profile: Option<String>,
    /// `online`, `offline` (neither online nor revoked) or `revoked`.
    status: Option<String>,
    /// Devices that last reported a battery level below this (1 to 100).
    battery_below: Option<u8>,
    /// The page: devices with ids after this one (the previous answer's `next`).
    after: Option<String>,
    /// 1 to 5,000; 1,000 by default.
    limit: Option<usize>,
}

/// `GET /devices?patient_id=&profile=&status=online|offline|revoked&battery_below=&after=&limit=`:
/// the clinic's devices the caller may see (a clinician: those of their care teams' patients;
/// an admin: all), by id, with each one's status, battery and latest reading, in pages
/// (`next`: the id to give as `after` for the next page; `null` on the last). Audited as a read
/// (`device.list`).
pub(super) async fn list_devices(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(q) = q?;
    let limit = q.limit.unwrap_or(LIST_DEFAULT);
    if !(1..=LIST_MAX).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be 1 to {LIST_MAX}"
        )));
    }
    if let Some(b) = q.battery_below
        && !(1..=100).contains(&b)
    {
        return Err(ApiError::BadRequest(
            "battery_below must be 1 to 100 (a percentage)".into(),
        ));
    }
    let status = match q.status.as_deref() {
        None | Some("") => None,
        Some(st @ ("online" | "offline" | "revoked")) => Some(st),
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "status {other:?} is not one of online, offline, revoked"
            )));
        }
    };
    if let Some(prof) = q.profile.as_deref()
        && s.registry.profiles().get(prof).is_none()
    {
        let known: Vec<&str> = s.registry.profiles().ids().collect();
        return Err(ApiError::BadRequest(format!(
            "profile {prof:?} is not one of {}",
            known.join(", ")
        )));
    }
    let after = q.after.as_deref().map(device_id).transpose()?;
    let patient = q.patient_id.as_deref().map(patient_id).transpose()?;
    let devices = match &patient {
        // One patient: the same refusal (403, audited) as every route naming a patient.
        Some(pid) => {
            check_patient(&s, &p, pid).await?;
            s.registry.patient_devices(pid.clone()).await?
        }
        None => s.registry.all_devices().await?,
    };
    // Who the caller may see, and who is discharged (their devices are listed, marked).
    let patients: std::collections::HashMap<PatientId, (Option<String>, bool)> = s
        .registry
        .patients()
        .await?
        .into_iter()
        .map(|x| {
            let discharged = x.is_discharged();
            (x.id, (x.details.care_team, discharged))
        })
        .collect();
    let mut devices: Vec<_> = devices
        .into_iter()
        .filter(|d| {
            patients
                .get(&d.patient_id)
                .is_some_and(|(team, _)| p.sees_team(team.as_deref()))
        })
        .filter(|d| q.profile.as_deref().is_none_or(|prof| d.profile == prof))
        .filter(|d| match status {
            Some("online") => d.online && !d.revoked,
            Some("offline") => !d.online && !d.revoked,
            Some("revoked") => d.revoked,
            _ => true,
        })
        .filter(|d| {
            q.battery_below
                .is_none_or(|b| d.battery.is_some_and(|level| level < b))
        })
        .filter(|d| after.as_ref().is_none_or(|a| d.id.as_str() > a.as_str()))
        .collect();
    devices.sort_by(|a, b| a.id.as_str().cmp(b.id.as_str()));
    let next = (devices.len() > limit).then(|| devices[limit - 1].id.as_str().to_owned());
    devices.truncate(limit);
    let rows: Vec<Value> = s.panel.with(|cache| {
        devices
            .iter()
            .map(|d| {
                let live = cache.get(&d.patient_id);
                // The device's newest reading among its patient's latest values.
                let last_reading = live
                    .and_then(|l| {
                        l.latest
                            .iter()
                            .filter(|(_, (_, dev))| *dev == d.id)
                            .max_by_key(|(_, (v, _))| v.time_ms)
                    })
                    .map(|(m, (v, _))| {
                        json!({"time": crate::domain::format_rfc3339(v.time_ms),
                               "metric": m.name(), "value": v.value, "unit": m.unit()})
                    });
                let seen_reading = live.and_then(|l| l.device_seen.get(&d.id)).copied();
                let seen_status = d
                    .last_seen
                    .as_deref()
                    .and_then(crate::domain::parse_rfc3339);
                let last_seen = seen_reading.max(seen_status);
                let discharged = patients.get(&d.patient_id).is_some_and(|(_, x)| *x);
                let status = if d.revoked {
                    "revoked"
                } else if d.online {
                    "online"
                } else {
                    "offline"
                };
                let mut v = json!({
                    "id": d.id, "patient_id": d.patient_id, "profile": d.profile,
                    "status": status, "online": d.online && !d.revoked,
                    "revoked": d.revoked, "battery": d.battery,
                    "battery_low": d.battery.is_some_and(|b| b <= crate::registry::BATTERY_LOW_PERCENT),
                    "last_seen": last_seen.map(crate::domain::format_rfc3339),
                    "created_at": d.created_at, "patient_discharged": discharged,
                });
                if let Some(r) = last_reading {
                    v["last_reading"] = r;
                }
                v
            })
            .collect()
    });
    audit_line(
        &s,
        &p,
        "device.list",
        patient.as_ref(),
        &match &patient {
            Some(pid) => format!("devices?patient_id={pid}"),
            None => "devices".to_owned(),
        },
    )
    .await?;
    Ok(Json(json!({ "devices": rows, "next": next })))
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
