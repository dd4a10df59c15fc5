//! The care-management timer (docs/programme.md): `POST /patients/{id}/timer` starts the
//! caller's timer on a patient (one per user), `GET /timer` reads it (it survives a reload and
//! another browser), `POST /timer/stop` stops it and logs its minutes as a time entry; signing
//! out stops it too ([`stop_at_sign_out`]). Each start and stop is audited with it.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use serde_json::{Value, json};

use super::auth::{Principal, check_patient};
use super::error::ApiError;
use super::extract::{ApiResult, new_audit_line, patient_id};
use super::state::AppState;
use crate::domain::now_ms;
use crate::registry::timer::{TimerStart, TimerStop};

/// A JSON body that may be empty (then the default).
fn body_or_default<T: serde::de::DeserializeOwned + Default>(b: &Bytes) -> ApiResult<T> {
    if b.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(b).map_err(|e| ApiError::BadRequest(format!("body: {e}")))
}

/// `POST /patients/{id}/timer` `{"activity"?}` → 201 the timer; 409 when one runs.
pub(super) async fn start(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<impl IntoResponse> {
    let id = patient_id(&id)?;
    check_patient(&s, &p, &id).await?;
    let start: TimerStart = body_or_default(&body)?;
    let now = now_ms();
    let timer = start.checked(&p.name, id.as_str(), now)?;
    let line = new_audit_line(
        &p,
        "timer.start",
        Some(&id),
        &format!("patient/{id}/timer"),
        now,
    );
    let started = s.registry.start_timer(timer, line).await?;
    Ok((StatusCode::CREATED, Json(started)))
}

/// `GET /timer`: the caller's running timer, or `null`.
pub(super) async fn current(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
) -> ApiResult<Json<Value>> {
    let timer = s.registry.timer(&p.name).await?;
    Ok(Json(json!({ "timer": timer })))
}

/// `POST /timer/stop` `{"activity"?, "interactive"?, "note"?}` → 201 the time entry it
/// logged; 404 when no timer runs.
pub(super) async fn stop(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    body: Bytes,
) -> ApiResult<impl IntoResponse> {
    let stop: TimerStop = body_or_default(&body)?;
    stop.check()?;
    let now = now_ms();
    let line = new_audit_line(&p, "time.create", None, "timer", now);
    let entry = s
        .registry
        .stop_timer(&p.name, now, stop, &s.clinic_zone, line)
        .await?
        .ok_or_else(|| ApiError::NotFound("no timer is running".into()))?;
    Ok((StatusCode::CREATED, Json(entry)))
}

/// Stops `p`'s timer, if one runs, as they sign out: its time is logged with a note saying so.
pub(super) async fn stop_at_sign_out(s: &AppState, p: &Principal) -> ApiResult<()> {
    let now = now_ms();
    let stop = TimerStop {
        note: Some("timer stopped at sign-out".into()),
        ..TimerStop::default()
    };
    let line = new_audit_line(p, "time.create", None, "timer", now);
    s.registry
        .stop_timer(&p.name, now, stop, &s.clinic_zone, line)
        .await?;
    Ok(())
}
