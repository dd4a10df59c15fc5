//! Acknowledgement links (docs/oncall.md): `GET /ack-links/{token}` says what a notification's
//! link would acknowledge; `POST /ack-links/{token}` acknowledges it, once.
//!
//! The link in an email or SMS opens the dashboard's `#/ack/{token}` page, which signs the
//! reader in (the token is in the URL's fragment, so it never reaches a server log or a
//! `Referer`) and then calls these routes with the session. The token ([`crate::notify::ack`])
//! is checked first, then that the notification exists, then that the reader may see its
//! patient — any clinician of the patient's team may use it, not only its recipient, as they
//! could acknowledge the alert on the dashboard; the page says whom it was sent to. A use is
//! recorded with its own audit line (`alert.ack_link`) before the acknowledgement (audited
//! `alert.acknowledge`, on the timeline), so a second use, by anyone, is refused with who used
//! it and when.

use axum::Extension;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::auth::{Principal, check_patient};
use super::error::ApiError;
use super::extract::{ApiResult, audit_line, new_audit_line, patient_id};
use super::state::AppState;
use crate::crm::record::AlertStatus;
use crate::domain::{PatientId, format_rfc3339, now_ms};
use crate::notify::ack::{AckClaims, AckError};
use crate::registry::notifications::{LinkUse, Notification};

/// What a link leads to, once its token, notification and the reader's access are checked.
struct Opened {
    claims: AckClaims,
    notification: Notification,
    patient: PatientId,
}

fn gone(why: String) -> ApiError {
    ApiError::Rejected(StatusCode::GONE, why)
}

fn used(u: &LinkUse) -> ApiError {
    gone(format!(
        "this link was used already, by {} at {}; the alert needs nothing more from it",
        u.by, u.at
    ))
}

async fn open(s: &AppState, p: &Principal, token: &str) -> ApiResult<Opened> {
    let claims = s
        .ack_key
        .verify(token, now_ms() / 1000)
        .map_err(|e| match e {
            AckError::Malformed => ApiError::BadRequest(e.to_string()),
            AckError::BadSignature => ApiError::Forbidden(e.to_string()),
            AckError::Expired => gone(e.to_string()),
        })?;
    let notification = s
        .registry
        .notification(&claims.notification)
        .await?
        .ok_or_else(|| ApiError::NotFound("the alert this link was for is gone".into()))?;
    let patient = patient_id(&notification.patient_id)?;
    if !p.sees_all() {
        check_patient(s, p, &patient).await?;
    }
    Ok(Opened {
        claims,
        notification,
        patient,
    })
}

/// `GET /ack-links/{token}`: the alert the link acknowledges, when it expires, whom it was
/// sent to, and whether it was used. A read of the patient's alert, audited as one.
pub(super) async fn show(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(token): Path<String>,
) -> ApiResult<Json<Value>> {
    let o = open(&s, &p, &token).await?;
    let alert = s
        .registry
        .alert(o.notification.alert_id.clone())
        .await?
        .ok_or_else(|| ApiError::NotFound("the alert this link was for is gone".into()))?;
    let target = format!("alert/{}", alert.id);
    audit_line(&s, &p, "alerts.read", Some(&o.patient), &target).await?;
    let used = s.registry.ack_link_use(&o.notification.id).await?;
    Ok(Json(json!({
        "alert": alert,
        "sent_to": o.notification.username,
        "channel": o.notification.channel,
        "expires_at": format_rfc3339(o.claims.exp_s.saturating_mul(1000)),
        "used": used,
    })))
}

/// `POST /ack-links/{token}` (optional body `{"note": "..."}`): acknowledges the link's alert
/// and records the link's one use. 410 when it was used or has expired; 409 when the alert
/// was resolved meanwhile (the link is not spent). An alert someone acknowledged meanwhile
/// stays as they left it, and the link is spent.
pub(super) async fn acknowledge(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(token): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    p.may_act("acknowledge an alert")?;
    let o = open(&s, &p, &token).await?;
    if let Some(u) = s.registry.ack_link_use(&o.notification.id).await? {
        return Err(used(&u));
    }
    let alert_id = o.notification.alert_id.clone();
    let alert = s
        .registry
        .alert(alert_id.clone())
        .await?
        .ok_or_else(|| ApiError::NotFound("the alert this link was for is gone".into()))?;
    if alert.status == AlertStatus::Resolved {
        return Err(ApiError::Conflict(format!(
            "the alert was resolved already, by {}",
            alert.resolved_by.as_deref().unwrap_or("someone")
        )));
    }
    let line = new_audit_line(
        &p,
        "alert.ack_link",
        Some(&o.patient),
        &format!("alert/{alert_id}/notification/{}", o.notification.id),
        now_ms(),
    );
    if let Some(u) = s
        .registry
        .use_ack_link(&o.notification.id, &p.name, line)
        .await?
    {
        return Err(used(&u));
    }
    super::record::act(s, p, alert_id, body, false).await
}
