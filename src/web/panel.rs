//! The monitoring panel's data: `GET /panel` (a tile per patient) and
//! `GET /patients/{id}/series` (a chart's points, downsampled in the store).
//!
//! A tile needs each patient's latest value of every vital and a sparkline of the last hours.
//! Reading those from the store for 500 patients at every page load would scan millions of
//! rows, so [`PanelCache`](super::panel_cache::PanelCache) keeps them in memory: warmed from the
//! store at start, then kept current from the store's commit feed. It holds only derived,
//! display-only data; the store stays the truth, and a cache that falls behind the feed warms
//! again from it.

use std::collections::HashMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{Principal, check_patient};
use super::error::ApiError;
use super::extract::{ApiResult, audit_line, audit_shown, patient_id, time_param};
use super::panel_cache::SPARK_SPAN_MS;
use super::state::AppState;
use crate::alerts::limits;
use crate::alerts::rules::{CarePlan, Severity};
use crate::crm::record::{AlertQuery, AlertStatus};
use crate::domain::{Metric, PatientId, format_rfc3339, now_ms};

fn severity_rank(s: Severity) -> u8 {
    match s {
        Severity::High => 3,
        Severity::Medium => 2,
        Severity::Low => 1,
    }
}

/// `GET /panel`: a tile per patient the caller may see. A clinician's answer also names their
/// care teams (`care_teams`: empty when they are on none, so the dashboard can say so rather than
/// show an empty panel); an admin's lists the patients no clinician can see (`unseen`).
pub(super) async fn panel(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
) -> ApiResult<Json<Value>> {
    let mut patients = s.registry.patients().await?;
    // Discharged patients leave the panel (`GET /patients?status=discharged` lists them).
    patients.retain(|x| p.sees_team(x.details.care_team.as_deref()) && !x.is_discharged());
    let devices = s.registry.all_devices().await?;
    let alerts = s
        .registry
        .alerts(AlertQuery {
            status: None,
            patient_id: None,
            teams: p.teams.as_ref().map(|t| t.to_vec()),
            limit: 100_000,
        })
        .await?;
    audit_shown(
        &s,
        &p,
        "panel.read",
        "panel",
        patients.iter().map(|x| &x.id),
    )
    .await?;
    let now = now_ms();
    let mut worst: HashMap<&str, (&crate::crm::record::Alert, usize)> = HashMap::new();
    for a in alerts.iter().filter(|a| a.status != AlertStatus::Resolved) {
        let e = worst.entry(a.patient_id.as_str()).or_insert((a, 0));
        e.1 += 1;
        if severity_rank(a.severity) > severity_rank(e.0.severity) {
            e.0 = a;
        }
    }
    // Each patient's ranges, for the tiles to say a value is high or low (docs/dashboard.md,
    // "Out of range"); the default plan's are sent once, for every tile without its own.
    let default_ranges = json!(limits::ranges(&CarePlan::default_plan()));
    let ranges: HashMap<PatientId, Value> = s
        .registry
        .all_plans_in_force()
        .await?
        .into_iter()
        .filter_map(|(id, plan)| Some((id, json!(limits::ranges(&plan?)))))
        .collect();
    let mut by_patient: HashMap<&str, Vec<&crate::registry::Device>> = HashMap::new();
    for d in &devices {
        by_patient.entry(d.patient_id.as_str()).or_default().push(d);
    }
    let tiles: Vec<Value> = s.panel.with(|cache| {
        patients
            .iter()
            .map(|pt| {
                let live = cache.get(&pt.id);
                let latest: serde_json::Map<String, Value> = live
                    .map(|l| {
                        l.latest
                            .iter()
                            .map(|(m, (v, d))| {
                                (
                                    m.name().to_owned(),
                                    json!({"value": v.value, "unit": m.unit(),
                                           "time": format_rfc3339(v.time_ms), "device_id": d}),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let spark: serde_json::Map<String, Value> = live
                    .map(|l| {
                        l.spark
                            .iter()
                            .map(|(m, q)| {
                                let pts: Vec<Value> = q
                                    .iter()
                                    .filter(|(b, _, n)| *b >= now - SPARK_SPAN_MS && *n > 0)
                                    .map(|(b, sum, n)| {
                                        // A sparkline needs no more than a tenth.
                                        let mean = (sum / f64::from(*n) * 10.0).round() / 10.0;
                                        json!([b, mean])
                                    })
                                    .collect();
                                (m.name().to_owned(), Value::Array(pts))
                            })
                            .filter(|(_, v)| v.as_array().is_some_and(|a| !a.is_empty()))
                            .collect()
                    })
                    .unwrap_or_default();
                let mut stale = false;
                let devs: Vec<Value> = by_patient
                    .get(pt.id.as_str())
                    .into_iter()
                    .flatten()
                    .filter(|d| !d.revoked)
                    .map(|d| {
                        let seen_reading = live.and_then(|l| l.device_seen.get(&d.id)).copied();
                        let seen_status = d.last_seen.as_deref().and_then(crate::domain::parse_rfc3339);
                        let last_seen = seen_reading.max(seen_status);
                        let profile = s.registry.profiles().get(&d.profile);
                        let interval = profile.map_or(3600, |p| p.reporting_interval_s);
                        let spot_check = profile.is_some_and(|p| p.spot_check);
                        let limit_ms = i64::try_from(interval.saturating_mul(2).max(300))
                            .unwrap_or(i64::MAX)
                            .saturating_mul(1000);
                        let quiet = last_seen.is_some_and(|t| now - t > limit_ms);
                        stale |= quiet;
                        json!({
                            "id": d.id, "profile": d.profile, "online": d.online,
                            "battery": d.battery,
                            "last_seen": last_seen.map(format_rfc3339),
                            "stale": quiet,
                            "spot_check": spot_check,
                            "reporting_interval_s": interval,
                        })
                    })
                    .collect();
                let (alert, open) = worst.get(pt.id.as_str()).map_or((Value::Null, 0), |(a, n)| {
                    (
                        json!({"id": a.id, "severity": a.severity, "status": a.status,
                               "message": a.message, "opened_at": a.opened_at, "rule_id": a.rule_id}),
                        *n,
                    )
                });
                json!({
                    "id": pt.id, "name": pt.name, "care_team": pt.details.care_team,
                    "latest": latest, "alert": alert, "open_alerts": open,
                    "devices": devs, "stale": stale, "spark": spark,
                    "ranges": ranges.get(&pt.id),
                })
            })
            .collect()
    });
    let mut out = json!({"patients": tiles, "default_ranges": default_ranges,
                         "generated_at": format_rfc3339(now)});
    match &p.teams {
        Some(teams) => out["care_teams"] = json!(teams.as_ref()),
        None => {
            let unseen = s.registry.unseen_patients().await?;
            let open: u64 = unseen.iter().map(|u| u.open_alerts).sum();
            out["unseen"] = json!({"patients": unseen, "open_alerts": open});
        }
    }
    Ok(Json(out))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SeriesParams {
    metric: String,
    from: Option<String>,
    to: Option<String>,
    points: Option<usize>,
}

/// Points a chart asks for at most.
pub(crate) const MAX_POINTS: usize = 2000;

/// `GET /patients/{id}/series`: one metric over a range, downsampled by the store.
pub(super) async fn series(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    q: Result<Query<SeriesParams>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let id = patient_id(&id)?;
    let Query(q) = q?;
    let metric = Metric::parse(&q.metric)
        .ok_or_else(|| ApiError::BadRequest(format!("unknown metric {:?}", q.metric)))?;
    let now = now_ms();
    let to = time_param("to", q.to.as_deref())?.unwrap_or(now);
    let from = time_param("from", q.from.as_deref())?.unwrap_or(to - 24 * 3600 * 1000);
    if from >= to {
        return Err(ApiError::BadRequest("from must be before to".into()));
    }
    let points = q.points.unwrap_or(600);
    if !(2..=MAX_POINTS).contains(&points) {
        return Err(ApiError::BadRequest(format!(
            "points must be 2 to {MAX_POINTS}"
        )));
    }
    check_patient(&s, &p, &id).await?;
    let series = s.store.series(id.clone(), metric, from, to, points).await?;
    audit_line(
        &s,
        &p,
        "observations.read",
        Some(&id),
        &format!("patient/{id}/series?metric={metric}"),
    )
    .await?;
    let pts: Vec<Value> = series
        .points
        .iter()
        .map(|x| json!([x.time_ms, x.mean, x.min, x.max]))
        .collect();
    Ok(Json(json!({
        "metric": metric, "unit": metric.unit(),
        "from": format_rfc3339(from), "to": format_rfc3339(to),
        "step_ms": series.step_ms, "points": pts,
    })))
}
