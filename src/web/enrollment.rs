//! The care programme's routes: the programmes (`GET /programs`; admins add with `POST`) and a
//! patient's enrollment (`PUT|GET /patients/{id}/enrollment`, docs/programme.md). Reads are
//! audited; a change writes its audit line and timeline entry with it.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{Principal, check_patient};
use super::error::ApiError;
use super::extract::{ApiResult, audit_line, new_audit_line, patient_id, require_admin};
use super::state::AppState;
use crate::domain::now_ms;
use crate::registry::enrollment::{EnrollmentBody, Programme};

/// `GET /programs`.
pub(super) async fn list_programmes(
    State(s): State<AppState>,
    Extension(_): Extension<Principal>,
) -> ApiResult<Json<Value>> {
    let programmes = s.registry.programmes().await?;
    Ok(Json(json!({ "programs": programmes })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewProgramme {
    id: String,
    name: String,
}

/// `POST /programs` (admins).
pub(super) async fn add_programme(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    body: Result<Json<NewProgramme>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    require_admin(&p)?;
    let Json(body) = body?;
    let programme = Programme::new(&body.id, &body.name)?;
    let now = now_ms();
    let line = new_audit_line(
        &p,
        "program.create",
        None,
        &format!("program/{}", programme.id),
        now,
    );
    let added = s
        .registry
        .add_programme(programme, p.name.clone(), now, line)
        .await?;
    Ok((StatusCode::CREATED, Json(added)))
}

/// `PUT /patients/{id}/enrollment`: the episode with the body's start date, changed or new.
pub(super) async fn put_enrollment(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    body: Result<Json<EnrollmentBody>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    let id = patient_id(&id)?;
    check_patient(&s, &p, &id).await?;
    let Json(body) = body?;
    let now = now_ms();
    let enrollment = body.checked(id.as_str(), &p.name, now)?;
    let line = new_audit_line(
        &p,
        "enrollment.update",
        Some(&id),
        &format!("patient/{id}/enrollment/{}", enrollment.start),
        now,
    );
    let stored = s.registry.put_enrollment(enrollment, line).await?;
    Ok(Json(json!(stored)))
}

/// `GET /patients/{id}/enrollment`: the latest episode, with every episode under `episodes`.
pub(super) async fn get_enrollment(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = patient_id(&id)?;
    check_patient(&s, &p, &id).await?;
    let episodes = s.registry.enrollments(&id).await?;
    audit_line(
        &s,
        &p,
        "enrollment.read",
        Some(&id),
        &format!("patient/{id}/enrollment"),
    )
    .await?;
    let Some(latest) = episodes.first() else {
        return Err(ApiError::NotFound(format!(
            "no enrollment for patient {id}"
        )));
    };
    let mut v = json!(latest);
    v["episodes"] = json!(episodes);
    Ok(Json(v))
}
