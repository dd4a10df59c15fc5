//! The care programme's routes: the programmes (`GET /programs`; admins add with `POST`), a
//! patient's enrollment (`PUT|GET /patients/{id}/enrollment`) and the care team's time with
//! them (`POST|GET /patients/{id}/time`), docs/programme.md. Reads are audited; a change writes
//! its audit line (and an enrollment its timeline entry) with it.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
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
use crate::registry::RegistryError;
use crate::registry::enrollment::{EnrollmentBody, Programme, unknown_programme};
use crate::registry::time_log::{MAX_AGE_DAYS, TimeBody, TimeChange, TimeEntry, new_entry_id};

/// Refuses (400, naming those there are) a `program` filter naming no programme.
pub(super) async fn known_programme(s: &AppState, program: Option<&str>) -> ApiResult<()> {
    if let Some(program) = program {
        let known = s.registry.programmes().await?;
        if !known.iter().any(|x| x.id == program) {
            return Err(unknown_programme(program, &known).into());
        }
    }
    Ok(())
}

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
    // The programme's care plan may now be in force for a patient without one of their own, or
    // no longer (docs/alerts.md, "Programme care plans"). With PostgreSQL the change itself
    // tells the engine holding the patient, wherever it runs.
    // (A discharged patient stays watched by no rule: `engine_plan`.)
    let plan = s.registry.engine_plan(id.clone()).await?;
    s.crm
        .tell(crate::crm::Command::PlanChanged(
            id.clone(),
            plan.map(std::sync::Arc::new),
        ))
        .await;
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

/// `POST /patients/{id}/time`: a time entry logged by the caller.
pub(super) async fn add_time(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    body: Result<Json<TimeBody>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    let id = patient_id(&id)?;
    check_patient(&s, &p, &id).await?;
    let Json(body) = body?;
    let now = now_ms();
    let entry = body.checked(new_entry_id()?, id.as_str(), &p.name, now)?;
    let line = new_audit_line(
        &p,
        "time.create",
        Some(&id),
        &format!("patient/{id}/time/{}", entry.id),
        now,
    );
    let stored = s.registry.add_time(entry, line).await?;
    Ok((StatusCode::CREATED, Json(stored)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TimeQuery {
    /// `YYYY-MM`: that calendar month.
    month: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

/// `GET /patients/{id}/time`: the entries of `month`, or dated `from` to `to` (each optional:
/// by default the last year to tomorrow).
pub(super) async fn list_time(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    q: Result<Query<TimeQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let id = patient_id(&id)?;
    let Query(q) = q?;
    check_patient(&s, &p, &id).await?;
    let (from, to) = time_range(&q, now_ms())?;
    let entries = s.registry.time_entries(&id, &from, &to).await?;
    audit_line(
        &s,
        &p,
        "time.read",
        Some(&id),
        &format!("patient/{id}/time"),
    )
    .await?;
    let minutes: u32 = entries.iter().map(|e| e.minutes).sum();
    Ok(Json(
        json!({"from": from, "to": to, "minutes": minutes, "entries": entries}),
    ))
}

/// The dates a time query asks for: a month's first and last day, or `from`/`to` (checked).
fn time_range(q: &TimeQuery, now_ms: i64) -> ApiResult<(String, String)> {
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    let day = |s: &str, what: &str| {
        time::Date::parse(s, &fmt).map_err(|_| {
            ApiError::BadRequest(format!("{what} {s:?} is not a date like 2026-11-02"))
        })
    };
    if let Some(m) = &q.month {
        if q.from.is_some() || q.to.is_some() {
            return Err(ApiError::BadRequest(
                "give month, or from and to, not both".into(),
            ));
        }
        let first = day(&format!("{m}-01"), "month").map_err(|_| {
            ApiError::BadRequest(format!("month {m:?} is not a month like 2026-11"))
        })?;
        let last = first
            .replace_day(first.month().length(first.year()))
            .unwrap_or(first);
        return Ok((first.to_string(), last.to_string()));
    }
    let today = time::OffsetDateTime::from_unix_timestamp(now_ms.div_euclid(1000))
        .map(|t| t.date())
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let from = match &q.from {
        Some(f) => day(f, "from")?,
        None => today - time::Duration::days(MAX_AGE_DAYS),
    };
    let to = match &q.to {
        Some(t) => day(t, "to")?,
        None => today + time::Duration::days(1),
    };
    if to < from {
        return Err(ApiError::BadRequest("to is before from".into()));
    }
    Ok((from.to_string(), to.to_string()))
}

/// Whether `p` may change or delete `entry`: its author, or an admin.
fn may_edit(p: &Principal, entry: &TimeEntry) -> Result<(), RegistryError> {
    if p.role == crate::registry::Role::Admin || p.name.eq_ignore_ascii_case(&entry.user) {
        Ok(())
    } else {
        Err(RegistryError::Invalid(format!(
            "only {} (who logged it) or an admin may change this entry",
            entry.user
        )))
    }
}

/// `PATCH /patients/{id}/time/{entry}`: the author (or an admin) corrects an entry.
pub(super) async fn change_time(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path((id, entry)): Path<(String, String)>,
    body: Result<Json<TimeChange>, JsonRejection>,
) -> ApiResult<Json<TimeEntry>> {
    let id = patient_id(&id)?;
    check_patient(&s, &p, &id).await?;
    let Json(change) = body?;
    let now = now_ms();
    let line = new_audit_line(
        &p,
        "time.update",
        Some(&id),
        &format!("patient/{id}/time/{entry}"),
        now,
    );
    let changed = s
        .registry
        .change_time(&id, &entry, change, &p.name, line, |e| may_edit(&p, e))
        .await
        .map_err(forbidden_if_not_author)?;
    Ok(Json(changed))
}

/// `DELETE /patients/{id}/time/{entry}`: the author (or an admin) deletes an entry; it is kept,
/// with who deleted it and when, and no longer listed or counted.
pub(super) async fn delete_time(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path((id, entry)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let id = patient_id(&id)?;
    check_patient(&s, &p, &id).await?;
    let Some(current) = s.registry.time_entry(&id, &entry).await? else {
        return Err(ApiError::NotFound(format!("time entry {entry} not found")));
    };
    may_edit(&p, &current).map_err(forbidden_if_not_author)?;
    let now = now_ms();
    let line = new_audit_line(
        &p,
        "time.delete",
        Some(&id),
        &format!("patient/{id}/time/{entry}"),
        now,
    );
    s.registry
        .delete_time(&id, &entry, &p.name, now, line)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Someone else's entry is 403, not 400.
fn forbidden_if_not_author(e: RegistryError) -> ApiError {
    match e {
        RegistryError::Invalid(m) if m.starts_with("only ") => ApiError::Forbidden(m),
        e => e.into(),
    }
}
