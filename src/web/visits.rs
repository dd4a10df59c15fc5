//! Video visits' routes: start a visit (its two join links), read and end it, and check a join
//! link. The links carry a signed, expiring token in the URL's fragment (`/visit/{id}#<token>`),
//! which browsers never send to a server or put in a Referer; the visit page presents it as
//! `Authorization: Visit <token>`. Links point at the configured public URL
//! ([`AppState::public_url`]), never at the request's `Host` header: a client chooses that, and a
//! link to its host would send the patient, token and all, wherever it said.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{Principal, check_patient};
use super::error::ApiError;
use super::extract::{ApiResult, audit_line, new_audit_line, patient_id};
use super::state::AppState;
use crate::domain::{PatientId, now_ms};
use crate::registry::AuditEntry;
use crate::video::token::{Claims, JoinRole};
use crate::video::visits::is_visit_id;

fn visit_id(id: &str) -> ApiResult<String> {
    if is_visit_id(id) {
        Ok(id.to_owned())
    } else {
        Err(ApiError::BadRequest(format!(
            "{id:?} is not a visit id like vis_<32 hex digits>"
        )))
    }
}

/// The visit and its patient, 404 when there is none, 403 for another team's patient.
async fn scoped(s: &AppState, p: &Principal, id: &str) -> ApiResult<crate::video::visits::Visit> {
    let v = s
        .registry
        .visit(id.to_owned(), now_ms())
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("visit {id} not found")))?;
    check_patient(s, p, &patient_id(&v.patient_id)?).await?;
    Ok(v)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewVisit {
    patient_id: String,
}

/// `POST /visits`.
pub(super) async fn create(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    body: Result<Json<NewVisit>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    let Json(b) = body?;
    let patient: PatientId = patient_id(&b.patient_id)?;
    check_patient(&s, &p, &patient).await?;
    let now = now_ms();
    let ttl_ms = i64::try_from(s.visit_link_ttl.as_millis()).unwrap_or(i64::MAX / 2);
    let v = s
        .registry
        .create_visit(patient.clone(), p.name.clone(), now, now + ttl_ms, |id| {
            new_audit_line(
                &p,
                "visit.create",
                Some(&patient),
                &format!("visit/{id}"),
                now,
            )
        })
        .await?;
    let exp = (now + ttl_ms) / 1000;
    let link = |r: JoinRole| {
        let token = s.visit_key.sign(&Claims {
            v: v.id.clone(),
            r,
            exp,
        });
        format!("{}/visit/{}#{token}", s.public_url, v.id)
    };
    Ok((
        StatusCode::CREATED,
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({
            "id": v.id,
            "patient_id": v.patient_id,
            "status": v.status,
            "expires_at": v.expires_at,
            "patient_join_url": link(JoinRole::Patient),
            "clinician_join_url": link(JoinRole::Clinician),
        })),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewLink {
    role: JoinRole,
}

/// `POST /visits/{id}/links`: another join link, such as one for a guest (an interpreter, a
/// family member), valid as long as the visit's others.
pub(super) async fn link(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    body: Result<Json<NewLink>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    let id = visit_id(&id)?;
    let Json(b) = body?;
    let v = scoped(&s, &p, &id).await?;
    if v.status == "ended" || v.status == "expired" {
        return Err(ApiError::Conflict(format!("this visit has {}", v.status)));
    }
    let patient = patient_id(&v.patient_id)?;
    audit_line(
        &s,
        &p,
        &format!("visit.link.{}", b.role.as_str()),
        Some(&patient),
        &format!("visit/{id}"),
    )
    .await?;
    let exp_ms = crate::domain::parse_rfc3339(&v.expires_at)
        .ok_or_else(|| ApiError::Internal("the visit's expiry is unreadable".into()))?;
    let token = s.visit_key.sign(&Claims {
        v: v.id.clone(),
        r: b.role,
        exp: exp_ms / 1000,
    });
    Ok((
        StatusCode::CREATED,
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({
            "role": b.role.as_str(),
            "join_url": format!("{}/visit/{}#{token}", s.public_url, v.id),
            "expires_at": v.expires_at,
        })),
    ))
}

/// `GET /visits/{id}`.
pub(super) async fn get(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = visit_id(&id)?;
    let v = scoped(&s, &p, &id).await?;
    let patient = patient_id(&v.patient_id)?;
    audit_line(&s, &p, "visit.read", Some(&patient), &format!("visit/{id}")).await?;
    Ok(Json(json!(v)))
}

/// `POST /visits/{id}/end`.
pub(super) async fn end(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    _body: Bytes,
) -> ApiResult<Json<Value>> {
    let id = visit_id(&id)?;
    let v = scoped(&s, &p, &id).await?;
    let patient = patient_id(&v.patient_id)?;
    let now = now_ms();
    let line = new_audit_line(&p, "visit.end", Some(&patient), &format!("visit/{id}"), now);
    let v = s
        .registry
        .end_visit(v.id, p.name.clone(), now, Some(line), &s.clinic_zone)
        .await?;
    s.rooms.end(&id, "the clinician ended the visit").await;
    Ok(Json(json!(v)))
}

/// `GET /visits/{id}/join` with `Authorization: Visit <token>`: what the token admits to.
/// The one route that a join link, not a session, authenticates.
pub(super) async fn join(
    State(s): State<AppState>,
    axum::extract::ConnectInfo(addr): axum::extract::ConnectInfo<std::net::SocketAddr>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    let id = visit_id(&id)?;
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Visit "))
        .ok_or(ApiError::UnauthorizedBecause(
            "a visit link is needed: Authorization: Visit <token>".into(),
        ))?;
    let claims = s
        .visit_key
        .verify(token.trim(), &id, now_ms() / 1000)
        .map_err(|e| ApiError::UnauthorizedBecause(e.to_string()))?;
    let v = s
        .registry
        .visit(id.clone(), now_ms())
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("visit {id} not found")))?;
    if v.status == "ended" {
        return Err(ApiError::Conflict("this visit has ended".into()));
    }
    let role = claims.r.as_str();
    let patient = patient_id(&v.patient_id)?;
    s.registry
        .audit(
            AuditEntry {
                actor: &format!("visit-link:{role}"),
                action: "visit.join_link",
                patient_id: Some(&patient),
                target: &format!("visit/{id}"),
                remote: &addr.ip().to_string(),
            },
            now_ms(),
        )
        .await?;
    Ok(Json(json!({
        "visit_id": v.id,
        "role": role,
        "status": v.status,
        "expires_at": v.expires_at,
    })))
}
