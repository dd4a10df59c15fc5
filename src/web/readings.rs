//! Stored readings and the ones refused: `GET /patients/{id}/observations` (audited),
//! `GET /dead-letters` (payloads the pipeline refused) and `GET /influxdb/rejected` (lines
//! InfluxDB refused for good).

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
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
use crate::domain::{Metric, PatientId, format_rfc3339, now_ms};
use crate::store::{ObservationQuery, StoredObservation};

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

/// A validated observations query: what `GET /patients/{id}/observations` and its CSV twin
/// both take, with the same limits.
struct ObsRequest {
    metric: Option<Metric>,
    from_ms: i64,
    to_ms: i64,
    /// The `limit` asked for, if any.
    limit: Option<usize>,
    newest_first: bool,
}

impl ObsRequest {
    /// Checks the parameters: a known metric, RFC 3339 times in order, a limit within bounds,
    /// an order; 400 naming what is wrong.
    fn parse(q: ObsParams) -> ApiResult<ObsRequest> {
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
        if let Some(limit) = q.limit
            && !(1..=MAX_LIMIT).contains(&limit)
        {
            return Err(ApiError::BadRequest(format!(
                "limit must be 1 to {MAX_LIMIT}"
            )));
        }
        Ok(ObsRequest {
            metric,
            from_ms,
            to_ms,
            limit: q.limit,
            newest_first: newest_first(q.order.as_deref())?,
        })
    }

    /// The audit line's target for `path` (`observations`, `observations.csv`).
    fn target(&self, id: &PatientId, path: &str) -> String {
        format!(
            "patient/{id}/{path}{}",
            self.metric
                .map_or(String::new(), |m| format!("?metric={m}"))
        )
    }
}

/// Checks the caller may see the patient (404 for none), reads up to `limit` readings (and
/// whether there were more), then audits the read as `observations.read` of `path`.
async fn read_observations(
    s: &AppState,
    p: &Principal,
    id: &PatientId,
    r: &ObsRequest,
    limit: usize,
    path: &str,
) -> ApiResult<(Vec<StoredObservation>, bool)> {
    // 404 for a patient that does not exist, rather than an empty list that looks like silence.
    check_patient(s, p, id).await?;
    // One more than asked: whether the limit cut the answer.
    let mut rows = s
        .store
        .observations(ObservationQuery {
            patient_id: id.clone(),
            metric: r.metric,
            from_ms: r.from_ms,
            to_ms: r.to_ms,
            limit: limit + 1,
            newest_first: r.newest_first,
        })
        .await?;
    let truncated = rows.len() > limit;
    rows.truncate(limit);
    audit_line(s, p, "observations.read", Some(id), &r.target(id, path)).await?;
    Ok((rows, truncated))
}

pub(super) async fn observations(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    q: Result<Query<ObsParams>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let id = patient_id(&id)?;
    let Query(q) = q?;
    let r = ObsRequest::parse(q)?;
    let limit = r.limit.unwrap_or(DEFAULT_LIMIT);
    let (rows, truncated) = read_observations(&s, &p, &id, &r, limit, "observations").await?;
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

/// `GET /patients/{id}/observations.csv`: the same readings as
/// [`observations`], as an RFC 4180 CSV download (`time,metric,value,unit,device_id`, times in
/// RFC 3339 UTC, values in the canonical unit as stored). Without `limit` the whole range is
/// sent, up to [`MAX_LIMIT`] readings; a range holding more is refused (400) rather than cut
/// short silently. With `limit`, the first (or with `order=newest` the last) `limit` readings,
/// and `X-Vigil-Truncated: true` when there were more.
pub(super) async fn observations_csv(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    q: Result<Query<ObsParams>, QueryRejection>,
) -> ApiResult<Response> {
    let id = patient_id(&id)?;
    let Query(q) = q?;
    let r = ObsRequest::parse(q)?;
    let limit = r.limit.unwrap_or(MAX_LIMIT);
    let (rows, truncated) = read_observations(&s, &p, &id, &r, limit, "observations.csv").await?;
    if truncated && r.limit.is_none() {
        return Err(ApiError::BadRequest(format!(
            "the range holds more than {MAX_LIMIT} readings: choose a metric or a shorter \
             period (or page with limit and from)"
        )));
    }
    let mut out = String::with_capacity(64 * (rows.len() + 1));
    out.push_str("time,metric,value,unit,device_id\r\n");
    for o in &rows {
        let fields = [
            format_rfc3339(o.time_ms),
            o.metric.name().to_owned(),
            o.value.to_string(),
            o.metric.unit().to_owned(),
            o.device_id.clone(),
        ];
        csv_row(&mut out, &fields);
    }
    let day = |ms: i64, none: &str| {
        if ms == i64::MIN || ms == i64::MAX {
            none.to_owned()
        } else {
            format_rfc3339(ms).get(..10).unwrap_or(none).to_owned()
        }
    };
    // The patient's id and the dates, never their name: the file may be mailed or left in a
    // downloads folder.
    let name = format!(
        "attachment; filename=\"vigil-{id}-{}{}-to-{}.csv\"",
        r.metric.map_or(String::new(), |m| format!("{m}-")),
        day(r.from_ms, "start"),
        day(
            if r.to_ms == i64::MAX {
                now_ms()
            } else {
                r.to_ms
            },
            "now"
        ),
    );
    let mut resp = (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (header::CONTENT_DISPOSITION, name),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
        out,
    )
        .into_response();
    if truncated {
        resp.headers_mut().insert(
            "x-vigil-truncated",
            axum::http::HeaderValue::from_static("true"),
        );
    }
    Ok(resp)
}

/// Appends one CSV record to `out` (RFC 4180: comma-separated, CRLF-terminated; a field holding
/// a comma, a double quote, CR or LF is enclosed in double quotes, its quotes doubled).
pub(super) fn csv_row(out: &mut String, fields: &[String]) {
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        if f.contains([',', '"', '\r', '\n']) {
            out.push('"');
            out.push_str(&f.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(f);
        }
    }
    out.push_str("\r\n");
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

#[cfg(test)]
mod tests {
    use super::csv_row;

    #[test]
    fn fields_that_need_it_are_quoted_as_rfc_4180_says() {
        let mut out = String::new();
        let f = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        csv_row(&mut out, &f(&["a", "b,c", "say \"hi\"", "x\ny", ""]));
        assert_eq!(out, "a,\"b,c\",\"say \"\"hi\"\"\",\"x\ny\",\r\n");
    }
}
