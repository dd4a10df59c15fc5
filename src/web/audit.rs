//! The audit trail over the API (admin): `GET /audit`, its export as newline-delimited JSON
//! and the check of its hash chain.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Principal;
use super::error::ApiError;
use super::extract::{
    ApiResult, DEFAULT_LIMIT, MAX_LIMIT, audit_line, newest_first, patient_id, require_admin,
    time_param,
};
use super::state::AppState;
use crate::domain::{format_rfc3339, now_ms};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditParams {
    patient_id: Option<String>,
    user: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<usize>,
    /// `oldest` (the default) or `newest` first.
    order: Option<String>,
}

pub(super) async fn audit(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    q: Result<Query<AuditParams>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    require_admin(&p)?;
    let Query(q) = q?;
    let patient = q.patient_id.as_deref().map(patient_id).transpose()?;
    let from_ms = time_param("from", q.from.as_deref())?.unwrap_or(i64::MIN);
    let to_ms = time_param("to", q.to.as_deref())?.unwrap_or(i64::MAX);
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let newest_first = newest_first(q.order.as_deref())?;
    // Reading the trail is itself recorded, before it is read.
    audit_line(&s, &p, "audit.read", patient.as_ref(), "audit").await?;
    let records = s
        .registry
        .audit_records(
            patient.map(|p| p.as_str().to_owned()),
            q.user,
            from_ms,
            to_ms,
            limit,
            newest_first,
        )
        .await?;
    Ok(Json(json!({ "audit": records })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ExportParams {
    from: Option<String>,
    to: Option<String>,
}

/// Lines per page of an audit export: each page is one short read, so an export of a long trail
/// never holds the registry for long nor the whole trail in memory.
const EXPORT_PAGE: usize = 1000;

/// The audit trail as newline-delimited JSON, in chain order, with the fields needed to recompute
/// every hash (see `AuditExportLine`), streamed page by page. Exporting is itself audited.
pub(super) async fn audit_export(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    q: Result<Query<ExportParams>, QueryRejection>,
) -> ApiResult<impl IntoResponse> {
    require_admin(&p)?;
    let Query(q) = q?;
    let from_ms = time_param("from", q.from.as_deref())?.unwrap_or(i64::MIN);
    let to_ms = time_param("to", q.to.as_deref())?.unwrap_or(i64::MAX);
    if from_ms > to_ms {
        return Err(ApiError::BadRequest("from must not be after to".into()));
    }
    audit_line(&s, &p, "audit.export", None, "audit").await?;
    // The first page is read before answering, so a failing registry gives an error status
    // rather than a cut-off 200.
    let first = s
        .registry
        .audit_export_page(0, from_ms, to_ms, EXPORT_PAGE)
        .await?;
    let registry = s.registry.clone();
    let pages = futures_util::stream::unfold(Some(first), move |page| {
        let registry = registry.clone();
        async move {
            let page = page?;
            if page.is_empty() {
                return None;
            }
            let mut out = Vec::with_capacity(page.len() * 256);
            for line in &page {
                // Serialising a struct of strings and integers cannot fail.
                if serde_json::to_writer(&mut out, line).is_ok() {
                    out.push(b'\n');
                }
            }
            let next = if page.len() < EXPORT_PAGE {
                Some(Vec::new())
            } else {
                let after = page.last().map_or(0, |l| l.id);
                match registry
                    .audit_export_page(after, from_ms, to_ms, EXPORT_PAGE)
                    .await
                {
                    Ok(p) => Some(p),
                    Err(e) => {
                        // Headers are gone: end the body early; the receiver sees no final
                        // newline-terminated chain end and a broken transfer.
                        tracing::error!(error = %e, "audit export stopped");
                        return Some((Err(std::io::Error::other(e.to_string())), None));
                    }
                }
            };
            Some((Ok::<_, std::io::Error>(bytes::Bytes::from(out)), next))
        }
    });
    let name = format!(
        "attachment; filename=\"vigil-audit-{}.ndjson\"",
        format_rfc3339(now_ms()).get(..10).unwrap_or("export")
    );
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-ndjson".to_owned()),
            (header::CONTENT_DISPOSITION, name),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
        // Fused: the compression layer polls the body once more after its end (for trailers),
        // and an unfused `unfold` panics when polled after it has finished.
        axum::body::Body::from_stream(futures_util::StreamExt::fuse(pages)),
    ))
}

/// Recomputes the whole audit hash chain: `{"intact": true, "lines": n}`, or `{"intact": false,
/// "error": "audit line N does not match the chain"}` when a line was changed or removed.
pub(super) async fn audit_verify(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
) -> ApiResult<Json<Value>> {
    require_admin(&p)?;
    audit_line(&s, &p, "audit.verify", None, "audit").await?;
    Ok(Json(match s.registry.verify_audit_chain().await {
        Ok(n) => json!({"intact": true, "lines": n}),
        Err(crate::registry::RegistryError::Invalid(why)) => json!({"intact": false, "error": why}),
        Err(e) => return Err(e.into()),
    }))
}
