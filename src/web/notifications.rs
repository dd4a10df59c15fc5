//! `GET /alerts/{id}/notifications` (docs/oncall.md): the escalation steps taken for an alert
//! and each notification they sent — to whom, by which channel, where it stands — for the
//! alert's view on the dashboard. Whoever may see the alert's patient may read it; the read is
//! audited (`alert.notifications.read`), a refusal too (`access.refused`). Addresses (email,
//! phone) are contact details of staff: only admins get them here; everyone else sees names and
//! channels, as the patient's timeline shows them.

use axum::extract::{Path, State};
use axum::{Extension, Json};
use serde_json::{Value, json};

use super::auth::{Principal, check_patient};
use super::error::ApiError;
use super::extract::{ApiResult, audit_line, patient_id};
use super::record::alert_id;
use super::state::AppState;
use crate::registry::Role;
use crate::registry::notifications::Notification;

/// One notification as this route shows it; the address only when `with_address`.
fn shown(n: &Notification, with_address: bool) -> Value {
    let mut v = json!({
        "id": n.id,
        "step": n.step,
        "user": n.username,
        "channel": n.channel,
        "status": n.status,
        "attempts": n.attempts,
        "last_error": n.last_error,
        "created_at": n.created_at,
        "next_at": n.next_at,
        "settled_at": n.settled_at,
    });
    if with_address {
        v["address"] = json!(n.address);
    }
    v
}

/// `GET /alerts/{id}/notifications`: `{"alert_id", "steps": [{"step", "notifications": […]}]}`,
/// steps in the order taken (`step` counts from 0, as the policy's steps do), each
/// notification with `user`, `channel`, `status` (pending, delivered, failed, cancelled),
/// `attempts`, `last_error` and its times.
pub(super) async fn alert_notifications(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = alert_id(&id)?;
    let alert = s
        .registry
        .alert(id.clone())
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("alert {id} not found")))?;
    let patient = patient_id(&alert.patient_id)?;
    check_patient(&s, &p, &patient).await?;
    let mut taken = s
        .registry
        .steps_taken(vec![id.clone()])
        .await?
        .remove(&id)
        .unwrap_or_default();
    let notifications = s.registry.notifications_of(&id).await?;
    // A step with notifications is taken even if the two reads straddled the step's commit.
    taken.extend(notifications.iter().map(|n| n.step));
    taken.sort_unstable();
    taken.dedup();
    let admin = p.role == Role::Admin;
    let steps: Vec<Value> = taken
        .iter()
        .map(|&step| {
            let of_step: Vec<Value> = notifications
                .iter()
                .filter(|n| n.step == step)
                .map(|n| shown(n, admin))
                .collect();
            json!({"step": step, "notifications": of_step})
        })
        .collect();
    audit_line(
        &s,
        &p,
        "alert.notifications.read",
        Some(&patient),
        &format!("alert/{id}/notifications"),
    )
    .await?;
    Ok(Json(json!({"alert_id": id, "steps": steps})))
}
