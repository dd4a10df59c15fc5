//! On-call cover of a care team (docs/oncall.md): `PUT /teams/{id}/rota` (the weekly
//! rota in the team's zone, and its fallback), `PUT /teams/{id}/on-call` (shifts for
//! particular dates, the contract's form), `PUT /teams/{id}/policy` (the escalation policy)
//! and `GET /teams/{id}/on-call?at=` (who is on call, with the rota, shifts and policy).
//! Admins set cover; the team's clinicians read it. Every change is audited with it.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Principal;
use super::error::ApiError;
use super::extract::{ApiResult, new_audit_line, require_admin};
use super::state::AppState;
use crate::domain::{format_rfc3339, now_ms, parse_rfc3339};
use crate::oncall::policy::Policy;
use crate::oncall::{Rota, Shift};
use crate::registry::cover::Cover;

/// A clinician reads only their own teams' cover.
fn check_team(p: &Principal, team: &str) -> ApiResult<()> {
    if p.sees_team(Some(team)) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "care team {team} is not one of your care teams"
        )))
    }
}

/// The cover with who is on call at `at_ms`.
async fn answer(s: &AppState, cover: Cover, at_ms: i64) -> ApiResult<Json<Value>> {
    let on = s.registry.on_call(&cover.team, at_ms).await?;
    Ok(Json(json!({
        "team": cover.team,
        "at": format_rfc3339(at_ms),
        "on_call": on.on_call,
        "gap": on.gap,
        "rota": cover.rota,
        "shifts": cover.shifts,
        "policy": cover.policy_in_force(),
        "policy_is_default": cover.policy.is_none(),
        "updated_by": cover.updated_by,
        "updated_at": cover.updated_at,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AtQuery {
    /// RFC 3339; now when absent.
    at: Option<String>,
}

/// `GET /teams/{id}/on-call?at=`.
pub(super) async fn get_on_call(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(team): Path<String>,
    q: Result<Query<AtQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(q) = q?;
    check_team(&p, &team)?;
    let at = match q.at.as_deref() {
        None => now_ms(),
        Some(t) => parse_rfc3339(t)
            .ok_or_else(|| ApiError::BadRequest(format!("at {t:?} must be an RFC 3339 time")))?,
    };
    let cover = s.registry.cover(&team).await?;
    answer(&s, cover, at).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ShiftsBody {
    shifts: Vec<Shift>,
}

/// `PUT /teams/{id}/on-call` `{"shifts":[{"user","start","end","level"?}]}`: replaces the
/// team's shifts.
pub(super) async fn put_on_call(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(team): Path<String>,
    body: Result<Json<ShiftsBody>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    require_admin(&p)?;
    let Json(b) = body?;
    let now = now_ms();
    let line = new_audit_line(
        &p,
        "oncall.update",
        None,
        &format!("team/{team}/on-call"),
        now,
    );
    let cover = s
        .registry
        .put_shifts(&team, b.shifts, &p.name, now, line)
        .await?;
    answer(&s, cover, now).await
}

/// `PUT /teams/{id}/rota` `{"timezone","weekly":[{"days","start","end","user","level"?}],
/// "fallback"?}`.
pub(super) async fn put_rota(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(team): Path<String>,
    body: Result<Json<Rota>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    require_admin(&p)?;
    let Json(rota) = body?;
    let now = now_ms();
    let line = new_audit_line(&p, "rota.update", None, &format!("team/{team}/rota"), now);
    let cover = s.registry.put_rota(&team, rota, &p.name, now, line).await?;
    answer(&s, cover, now).await
}

/// `PUT /teams/{id}/policy` `{"high":[{"after_min","level"}],"medium":[…],"low":[…]}`.
pub(super) async fn put_policy(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(team): Path<String>,
    body: Result<Json<Policy>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    require_admin(&p)?;
    let Json(policy) = body?;
    let now = now_ms();
    let line = new_audit_line(
        &p,
        "policy.update",
        None,
        &format!("team/{team}/policy"),
        now,
    );
    let cover = s
        .registry
        .put_policy(&team, policy, &p.name, now, line)
        .await?;
    answer(&s, cover, now).await
}
