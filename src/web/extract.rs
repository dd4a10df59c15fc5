//! What the `/api/v1` handlers share: parsing ids, times and a list's order from the request,
//! the limits of long lists, the admin check and the audit line (written, or made for a change that commits it). It uses no handler module and
//! the router uses none of it, so every handler module can use it without an import cycle.

use super::auth::Principal;
use super::error::ApiError;
use super::state::AppState;
use crate::domain::{DeviceId, PatientId, now_ms, parse_rfc3339};
use crate::registry::audit::NewAuditLine;
use crate::registry::{AuditEntry, Role};

/// What a handler returns: its answer, or the error the client is told.
pub(super) type ApiResult<T> = Result<T, ApiError>;

/// The patient id in a path, or 400.
pub(super) fn patient_id(s: &str) -> ApiResult<PatientId> {
    PatientId::parse(s).map_err(|e| ApiError::BadRequest(e.to_string()))
}

/// The device id in a path, or 400.
pub(super) fn device_id(s: &str) -> ApiResult<DeviceId> {
    DeviceId::parse(s).map_err(|e| ApiError::BadRequest(e.to_string()))
}

/// Ok for an admin, 403 for anyone else.
pub(super) fn require_admin(p: &Principal) -> ApiResult<()> {
    if p.role == Role::Admin {
        Ok(())
    } else {
        Err(ApiError::Forbidden("this needs the admin role".into()))
    }
}

/// Writes one audit line, naming the caller as [`Principal::actor`] does; a request whose
/// audit line cannot be written is not answered.
pub(super) async fn audit_line(
    s: &AppState,
    p: &Principal,
    action: &str,
    patient: Option<&PatientId>,
    target: &str,
) -> ApiResult<()> {
    s.registry
        .audit(
            AuditEntry {
                actor: &p.actor(),
                action,
                patient_id: patient,
                target,
                remote: &p.remote,
            },
            now_ms(),
        )
        .await
        .map_err(ApiError::from)
}

/// The audit line [`audit_line`] would write at `now_ms`, for a change that writes it in its
/// own transaction (so that the change and its line commit together).
pub(super) fn new_audit_line(
    p: &Principal,
    action: &str,
    patient: Option<&PatientId>,
    target: &str,
    now_ms: i64,
) -> NewAuditLine {
    NewAuditLine::of(
        &AuditEntry {
            actor: &p.actor(),
            action,
            patient_id: patient,
            target,
            remote: &p.remote,
        },
        now_ms,
    )
}

/// An optional RFC 3339 time parameter (empty counts as absent), or 400 naming it.
pub(super) fn time_param(name: &str, v: Option<&str>) -> ApiResult<Option<i64>> {
    v.filter(|s| !s.is_empty())
        .map(|s| {
            parse_rfc3339(s).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "{name} {s:?} is not an RFC 3339 time like 2026-11-25T13:00:00Z"
                ))
            })
        })
        .transpose()
}

/// Rows a list answers when the caller gives no `limit` (observations, dead letters, InfluxDB
/// rejections, the audit trail).
pub(super) const DEFAULT_LIMIT: usize = 1000;
/// The largest `limit` those lists take.
pub(super) const MAX_LIMIT: usize = 100_000;

/// The `order` parameter: `oldest` (the default) or `newest` first.
pub(super) fn newest_first(order: Option<&str>) -> ApiResult<bool> {
    match order {
        None | Some("oldest") => Ok(false),
        Some("newest") => Ok(true),
        Some(_) => Err(ApiError::BadRequest(
            "order must be oldest or newest".into(),
        )),
    }
}

/// Audits a read that shows many patients at once (`panel.read`, `alerts.read`, `live.open`):
/// one line for the read itself (no patient, as before), and a line naming each patient shown
/// that the user has not been shown by the same view within the ledger's window
/// ([`super::seen`]); all in one transaction. A request whose lines cannot be written is not
/// answered.
pub(super) async fn audit_shown<'a>(
    s: &AppState,
    p: &Principal,
    action: &'static str,
    target: &str,
    shown: impl IntoIterator<Item = &'a PatientId>,
) -> ApiResult<()> {
    let now = now_ms();
    let actor = p.actor();
    let due = s.seen.due(&actor, action, shown, now);
    let mut lines = Vec::with_capacity(due.len() + 1);
    lines.push(new_audit_line(p, action, None, target, now));
    lines.extend(
        due.iter()
            .map(|id| new_audit_line(p, action, Some(id), target, now)),
    );
    s.registry.audit_batch(lines).await?;
    s.seen.written(&actor, action, &due, now);
    Ok(())
}
