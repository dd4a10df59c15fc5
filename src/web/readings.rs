//! Stored readings and the ones refused: `GET /patients/{id}/observations` (audited),
//! `GET /dead-letters` (payloads the pipeline refused) and `GET /influxdb/rejected` (lines
//! InfluxDB refused for good).

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{Principal, check_patient};
use super::error::ApiError;
use super::extract::{
    ApiResult, DEFAULT_LIMIT, MAX_LIMIT, audit_line, device_id, newest_first, patient_id,
    require_admin, time_param,
};
use super::state::AppState;
use crate::domain::{Metric, format_rfc3339};
use crate::store::ObservationQuery;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ObsParams {
    metric: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<usize>,
    /// `oldest` (the default: the first `limit` of the range) or `newest` (the last `limit`,
    /// newest first).
    order: Option<String>,
}

pub(super) async fn observations(
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DeadLetterParams {
    device_id: Option<String>,
    limit: Option<usize>,
}

pub(super) async fn dead_letters(
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
pub(super) struct RejectedParams {
    limit: Option<usize>,
}

/// Lines InfluxDB refused for good (400/422), with its reason: the writer's dead letters.
pub(super) async fn influx_rejected(
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
