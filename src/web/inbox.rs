//! The inbox's actions beyond acknowledging and resolving one alert: assigning an alert to
//! yourself or a colleague, acknowledging several at once, and snoozing with a reason and a
//! time (docs/dashboard.md, "The inbox").
//!
//! Each action is one transaction with its timeline entry and audit line
//! ([`crate::registry::storage::RecordStore::triage_alert`]); a snooze of an open alert
//! acknowledges it, so its escalation stops as for any acknowledgement.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Principal;
use super::error::ApiError;
use super::extract::{ApiResult, new_audit_line};
use super::record::{act_on, action_error, alert_id, clean_note, visible_alert};
use super::state::AppState;
use crate::crm::Command;
use crate::crm::record::{Alert, AlertStatus, Event, Triage};
use crate::domain::{format_rfc3339, now_ms, parse_rfc3339};
use crate::registry::access::Role;

/// The most alerts one request acknowledges.
const MAX_BATCH: usize = 100;
/// The longest snooze: a day. Longer, and the alert is not being watched.
const MAX_SNOOZE_MIN: i64 = 24 * 60;
/// The longest reason.
const MAX_REASON: usize = 500;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AssignBody {
    /// The user to assign it to; `null` unassigns.
    to: Option<String>,
}

/// `POST /alerts/{id}/assign` `{"to": "username" | null}`: claim an alert (`to` yourself) or
/// give it to a colleague who may see the patient.
pub(super) async fn assign(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    body: Result<Json<AssignBody>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    let id = alert_id(&id)?;
    let Json(body) = body?;
    let (_, patient) = visible_alert(&s, &p, &id).await?;
    let to = match body
        .to
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
    {
        None => None,
        Some(name) => {
            let user = s.registry.user(&name).await.map_err(|_| {
                ApiError::BadRequest(format!("there is no user {name:?} to assign it to"))
            })?;
            let team = s.registry.patient_team(patient.clone()).await?;
            let sees = user.role == Role::Admin
                || team
                    .as_deref()
                    .is_some_and(|t| user.teams.iter().any(|m| m == t));
            if !sees {
                return Err(ApiError::BadRequest(format!(
                    "{} is not on this patient's care team, so cannot take the alert",
                    user.name
                )));
            }
            Some(user.name)
        }
    };
    let triage = Triage::Assign { to };
    let (alert, events) = triage_one(&s, &p, &id, &patient, triage).await?;
    s.crm.announce(events);
    Ok(Json(json!(alert)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SnoozeBody {
    /// Snooze for this many minutes (1 to 1440)…
    minutes: Option<i64>,
    /// …or until this time (RFC 3339, within a day).
    until: Option<String>,
    /// Why: said in the inbox and on the timeline. Required to snooze.
    reason: Option<String>,
    /// `true` ends a snooze now.
    #[serde(default)]
    end: bool,
}

/// `POST /alerts/{id}/snooze` `{"minutes" | "until", "reason"}` (or `{"end": true}`): the alert
/// leaves the inbox's active list until then and comes back at the top, with its reason.
pub(super) async fn snooze(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    body: Result<Json<SnoozeBody>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    let id = alert_id(&id)?;
    let Json(body) = body?;
    let now = now_ms();
    let triage = snooze_of(body, now)?;
    let (_, patient) = visible_alert(&s, &p, &id).await?;
    let (alert, events) = triage_one(&s, &p, &id, &patient, triage).await?;
    let acknowledged = events.iter().any(|e| e.event_type == "alert.acknowledged");
    s.crm.announce(events);
    if acknowledged {
        s.crm
            .tell(Command::Acknowledged(patient, alert.rule_id.clone()))
            .await;
    }
    Ok(Json(json!(alert)))
}

/// A snooze request as the [`Triage`] it asks for, checked against `now`.
fn snooze_of(body: SnoozeBody, now: i64) -> ApiResult<Triage> {
    if body.end {
        if body.minutes.is_some() || body.until.is_some() || body.reason.is_some() {
            return Err(ApiError::BadRequest(
                "give end alone, or minutes or until with a reason".into(),
            ));
        }
        return Ok(Triage::Snooze {
            until_ms: None,
            reason: None,
        });
    }
    let until_ms = match (body.minutes, body.until.as_deref()) {
        (Some(m), None) if (1..=MAX_SNOOZE_MIN).contains(&m) => now + m * 60_000,
        (Some(_), None) => {
            return Err(ApiError::BadRequest(format!(
                "minutes must be 1 to {MAX_SNOOZE_MIN} (a day)"
            )));
        }
        (None, Some(u)) => {
            let t = parse_rfc3339(u).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "until {u:?} is not an RFC 3339 time like 2026-11-25T13:00:00Z"
                ))
            })?;
            if t <= now || t > now + MAX_SNOOZE_MIN * 60_000 {
                return Err(ApiError::BadRequest(format!(
                    "until must be later than now ({}) and within a day",
                    format_rfc3339(now)
                )));
            }
            t
        }
        (Some(_), Some(_)) => {
            return Err(ApiError::BadRequest(
                "give minutes or until, not both".into(),
            ));
        }
        (None, None) => {
            return Err(ApiError::BadRequest(
                "say how long to snooze: minutes or until".into(),
            ));
        }
    };
    let reason = body
        .reason
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty())
        .ok_or_else(|| ApiError::BadRequest("say why it is snoozed: a reason is needed".into()))?;
    if reason.chars().count() > MAX_REASON {
        return Err(ApiError::BadRequest(format!(
            "reason must be at most {MAX_REASON} characters"
        )));
    }
    Ok(Triage::Snooze {
        until_ms: Some(until_ms),
        reason: Some(reason),
    })
}

async fn triage_one(
    s: &AppState,
    p: &Principal,
    id: &str,
    patient: &crate::domain::PatientId,
    triage: Triage,
) -> ApiResult<(Alert, Vec<Event>)> {
    let now = now_ms();
    let action = match triage {
        Triage::Assign { .. } => "alert.assign",
        Triage::Snooze { .. } => "alert.snooze",
    };
    let line = new_audit_line(p, action, Some(patient), &format!("alert/{id}"), now);
    let kind = triage.kind();
    let (alert, mut events) = s
        .registry
        .triage_alert(
            id.to_owned(),
            triage,
            p.name.clone(),
            now,
            s.crm.sinks.clone(),
            line,
        )
        .await
        .map_err(action_error)?;
    // The change reaches this instance's live dashboards at once (no outward event: it is not
    // in the outbox); other instances' dashboards see it when they next read the inbox.
    events.push(Event {
        id: format!("evt_{}_{}_{now}", &alert.id[4..], &kind[6..]),
        event_type: kind,
        patient_id: alert.patient_id.clone(),
        time_ms: now,
        alert: alert.clone(),
    });
    Ok((alert, events))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BatchBody {
    ids: Vec<String>,
    note: Option<String>,
}

/// `POST /alerts/ack` `{"ids": [...], "note"?}`: acknowledges several alerts at once, each in
/// its own transaction with its audit line. Answers every alert as it now is, and for any that
/// could not be acknowledged (unknown, or resolved meanwhile) why, by id. A batch naming an
/// alert of a patient the caller may not see is refused whole.
pub(super) async fn ack_many(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    body: Result<Json<BatchBody>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    let Json(body) = body?;
    if body.ids.is_empty() || body.ids.len() > MAX_BATCH {
        return Err(ApiError::BadRequest(format!(
            "ids must name 1 to {MAX_BATCH} alerts"
        )));
    }
    let mut ids = Vec::with_capacity(body.ids.len());
    for id in &body.ids {
        let id = alert_id(id)?;
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    let note = clean_note(body.note)?;
    // Every alert must be the caller's to see before any is acknowledged: a batch naming
    // another team's patient is refused whole (and the refusal audited).
    for id in &ids {
        match visible_alert(&s, &p, id).await {
            Ok(_) | Err(ApiError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    let mut alerts = Vec::new();
    let mut failed = Vec::new();
    for id in ids {
        match act_on(&s, &p, id.clone(), note.clone(), false).await {
            Ok(a) => alerts.push(a),
            Err(ApiError::NotFound(m) | ApiError::Conflict(m)) => {
                failed.push(json!({"id": id, "error": m}))
            }
            Err(e) => return Err(e),
        }
    }
    let acknowledged = alerts
        .iter()
        .filter(|a| a.status == AlertStatus::Acknowledged)
        .count();
    Ok(Json(json!({
        "acknowledged": acknowledged,
        "alerts": alerts,
        "failed": failed,
    })))
}
