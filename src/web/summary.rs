//! One patient's period on one page: `GET /patients/{id}/summary` (vitals in figures, the
//! alerts opened, the notes: the printable summary of the dashboard) and
//! `GET /patients/{id}/agp` (the Ambulatory Glucose Profile, computed by [`crate::agp`]).
//!
//! Both are reads of the patient's data, checked against the caller's care teams and audited
//! (`summary.read`, `agp.read`) before anything is sent. Neither sends readings themselves: the
//! figures are computed here from the store, so a month of a 1 Hz stream is not shipped to the
//! browser to be counted.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{Principal, check_patient};
use super::error::ApiError;
use super::extract::{ApiResult, audit_line, patient_id, time_param};
use super::state::AppState;
use crate::agp;
use crate::alerts::rules::{CarePlan, Rule};
use crate::crm::record::{AlertQuery, PlanInForce};
use crate::domain::zone::Zone;
use crate::domain::{Metric, PatientId, format_rfc3339, now_ms, parse_rfc3339};
use crate::store::ObservationQuery;

const DAY_MS: i64 = 86_400_000;
/// The period when none is asked for: the last 14 days (the AGP's recommended span).
const DEFAULT_DAYS: i64 = 14;
/// The longest summary period: a year.
const MAX_SUMMARY_DAYS: i64 = 366;
/// The longest AGP period: 90 days (the consensus reads 14; a quarter covers an A1C's span).
const MAX_AGP_DAYS: i64 = 90;
/// Up to this many readings of a metric, its median is exact; above, it is the median of
/// bucket means weighted by their counts (`median_exact: false`).
const EXACT_MEDIAN_UP_TO: i64 = 100_000;
/// Buckets read per metric at most (a minute wide up to 34 days, wider beyond).
const MAX_BUCKETS: i64 = 50_000;
/// Glucose readings an AGP reads at most (90 days of a 1-minute CGM is 129,600).
const MAX_AGP_READINGS: usize = 200_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PeriodParams {
    from: Option<String>,
    to: Option<String>,
}

/// `[from, to)` from the parameters: `to` defaults to now, `from` to 14 days before `to`;
/// 400 for a bad time, `from` not before `to`, or a period longer than `max_days`.
fn period(q: &PeriodParams, max_days: i64) -> ApiResult<(i64, i64)> {
    let to = time_param("to", q.to.as_deref())?.unwrap_or_else(now_ms);
    let from = time_param("from", q.from.as_deref())?.unwrap_or(to - DEFAULT_DAYS * DAY_MS);
    if from >= to {
        return Err(ApiError::BadRequest("from must be before to".into()));
    }
    if to.saturating_sub(from) > max_days * DAY_MS {
        return Err(ApiError::BadRequest(format!(
            "the period is longer than {max_days} days; choose a shorter one"
        )));
    }
    Ok((from, to))
}

/// The zone a patient's days and hours are read in: their own (`timezone` on the record), else
/// the clinic's (`clinic.timezone`, UTC unless set); with where it came from.
async fn zone_of(s: &AppState, id: &PatientId) -> ApiResult<(Zone, &'static str)> {
    let patient = s.registry.patient(id.clone()).await?;
    if let Some(z) = patient
        .details
        .timezone
        .as_deref()
        .and_then(|n| Zone::parse(n).ok())
    {
        return Ok((z, "patient"));
    }
    let clinic = (*s.clinic_zone).clone();
    let source = if clinic.name() == "UTC" {
        "default"
    } else {
        "clinic"
    };
    Ok((clinic, source))
}

/// The threshold rules of a care plan on `metric`, as the summary shows them.
fn thresholds(plan: &CarePlan, metric: Metric) -> Vec<Value> {
    plan.rules
        .iter()
        .filter_map(|r| match r {
            Rule::Threshold {
                id,
                severity,
                metric: m,
                op,
                value,
                for_s,
                ..
            } if Metric::parse(m) == Some(metric) => Some(json!({
                "rule_id": id, "op": op, "value": value, "severity": severity, "for_s": for_s,
            })),
            _ => None,
        })
        .collect()
}

/// `GET /patients/{id}/summary?from=&to=`: the patient, and over `[from, to)` (default the last
/// 14 days, at most a year) each metric's count, min, median, max and latest with its unit and
/// the care plan's thresholds on it; the alerts opened in the period; the notes written in it.
pub(super) async fn summary(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    q: Result<Query<PeriodParams>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let id = patient_id(&id)?;
    let Query(q) = q?;
    let (from, to) = period(&q, MAX_SUMMARY_DAYS)?;
    check_patient(&s, &p, &id).await?;
    let patient = s.registry.patient(id.clone()).await?;
    let (plan, plan_source) = match s.registry.plan_in_force(id.clone()).await? {
        PlanInForce::Own(plan) => (plan, "own"),
        PlanInForce::Programme { plan, .. } => (plan, "programme"),
        PlanInForce::Default => (CarePlan::default_plan(), "default"),
    };
    let last = to - 1;
    // Buckets give the exact count, min and max in one indexed query per metric: a minute
    // wide, or wider over long periods so that a year of a 1 Hz stream is at most
    // `MAX_BUCKETS` rows.
    let step = ((to - from) / MAX_BUCKETS).max(60_000);
    let mut vitals = Vec::new();
    for metric in Metric::ALL {
        let buckets = s
            .store
            .buckets(id.clone(), metric, from, last, step)
            .await?;
        let count: i64 = buckets.iter().map(|b| b.count).sum();
        if count == 0 {
            continue;
        }
        let min = buckets.iter().map(|b| b.min).fold(f64::INFINITY, f64::min);
        let max = buckets
            .iter()
            .map(|b| b.max)
            .fold(f64::NEG_INFINITY, f64::max);
        let exact = count <= EXACT_MEDIAN_UP_TO;
        let median = if exact {
            let mut values: Vec<f64> = s
                .store
                .observations(ObservationQuery {
                    patient_id: id.clone(),
                    metric: Some(metric),
                    from_ms: from,
                    to_ms: last,
                    limit: usize::try_from(count).unwrap_or(usize::MAX),
                    newest_first: false,
                })
                .await?
                .into_iter()
                .map(|o| o.value)
                .collect();
            values.sort_by(f64::total_cmp);
            agp::percentile(&values, 50.0)
        } else {
            weighted_median(&buckets)
        };
        let latest = s
            .store
            .observations(ObservationQuery {
                patient_id: id.clone(),
                metric: Some(metric),
                from_ms: from,
                to_ms: last,
                limit: 1,
                newest_first: true,
            })
            .await?
            .into_iter()
            .next();
        vitals.push(json!({
            "metric": metric, "unit": metric.unit(), "count": count,
            "min": min, "median": median, "median_exact": exact, "max": max,
            "latest": latest.map(|o| json!({"value": o.value, "time": format_rfc3339(o.time_ms)})),
            "thresholds": thresholds(&plan, metric),
        }));
    }
    let mut alerts = s
        .registry
        .alerts(AlertQuery {
            status: None,
            patient_id: Some(id.clone()),
            teams: None,
            limit: 100_000,
        })
        .await?;
    alerts.retain(|a| parse_rfc3339(&a.opened_at).is_some_and(|t| t >= from && t < to));
    alerts.sort_by(|a, b| a.opened_at.cmp(&b.opened_at));
    let (notes, notes_complete) = notes_between(&s, &id, from, to).await?;
    audit_line(
        &s,
        &p,
        "summary.read",
        Some(&id),
        &format!("patient/{id}/summary"),
    )
    .await?;
    Ok(Json(json!({
        "patient": {"id": patient.id, "name": patient.name, "birth_date": patient.birth_date,
                    "mrn": patient.mrn, "care_team": patient.details.care_team},
        "from": format_rfc3339(from), "to": format_rfc3339(to),
        "generated_at": format_rfc3339(now_ms()),
        "care_plan_source": plan_source,
        "vitals": vitals,
        "alerts": alerts,
        "notes": notes,
        "notes_complete": notes_complete,
    })))
}

/// The median of bucket means, each weighted by its count: a stand-in for the median of more
/// readings than are worth reading one by one.
fn weighted_median(buckets: &[crate::store::SeriesPoint]) -> f64 {
    let mut b: Vec<(f64, i64)> = buckets.iter().map(|b| (b.mean, b.count)).collect();
    b.sort_by(|x, y| x.0.total_cmp(&y.0));
    let total: i64 = b.iter().map(|x| x.1).sum();
    let mut seen = 0;
    for (mean, n) in &b {
        seen += n;
        if seen * 2 >= total {
            return *mean;
        }
    }
    f64::NAN
}

/// Timeline entries read per page when looking for notes, and pages at most.
const NOTE_PAGE: usize = 500;
const NOTE_PAGES: usize = 20;

/// The notes written in `[from, to)`, oldest first, and whether all were read (at most
/// `NOTE_PAGE × NOTE_PAGES` timeline entries are looked through).
async fn notes_between(
    s: &AppState,
    id: &PatientId,
    from: i64,
    to: i64,
) -> ApiResult<(Vec<Value>, bool)> {
    let mut notes = Vec::new();
    let mut before = to;
    for _ in 0..NOTE_PAGES {
        let page = s.registry.timeline(id.clone(), before, NOTE_PAGE).await?;
        let mut oldest = before;
        for e in &page {
            let t = e["time"]
                .as_str()
                .and_then(parse_rfc3339)
                .unwrap_or(i64::MIN);
            oldest = oldest.min(t);
            if t >= from && e["kind"] == "note" {
                notes.push(e.clone());
            }
        }
        if page.len() < NOTE_PAGE || oldest < from {
            notes.reverse();
            notes.dedup_by(|a, b| a["id"] == b["id"]);
            return Ok((notes, true));
        }
        // Entries share a millisecond rarely; one that straddles a page is not lost: the next
        // page starts at the oldest millisecond seen, and repeats are dropped below.
        before = oldest + 1;
        if before >= to {
            break;
        }
    }
    notes.reverse();
    notes.dedup_by(|a, b| a["id"] == b["id"]);
    Ok((notes, false))
}

/// `GET /patients/{id}/agp?from=&to=`: the Ambulatory Glucose Profile of `[from, to)` (default
/// the last 14 days, at most 90) from the stored `glucose` readings: see [`crate::agp`] and
/// docs/agp.md.
pub(super) async fn agp(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    q: Result<Query<PeriodParams>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let id = patient_id(&id)?;
    let Query(q) = q?;
    let (from, to) = period(&q, MAX_AGP_DAYS)?;
    check_patient(&s, &p, &id).await?;
    let rows = s
        .store
        .observations(ObservationQuery {
            patient_id: id.clone(),
            metric: Some(Metric::Glucose),
            from_ms: from,
            to_ms: to - 1,
            limit: MAX_AGP_READINGS + 1,
            newest_first: false,
        })
        .await?;
    if rows.len() > MAX_AGP_READINGS {
        return Err(ApiError::BadRequest(format!(
            "the period holds more than {MAX_AGP_READINGS} glucose readings; choose a shorter one"
        )));
    }
    let devices = s.registry.patient_devices(id.clone()).await?;
    let cgm_ids: Vec<&str> = devices
        .iter()
        .filter(|d| d.profile == "cgm")
        .map(|d| d.id.as_str())
        .collect();
    let from_cgm = rows
        .iter()
        .filter(|o| cgm_ids.contains(&o.device_id.as_str()))
        .count();
    let interval = s
        .registry
        .profiles()
        .get("cgm")
        .map_or(300, |p| p.reporting_interval_s);
    let (zone, zone_source) = zone_of(&s, &id).await?;
    let readings: Vec<(i64, f64)> = rows.iter().map(|o| (o.time_ms, o.value)).collect();
    let figures = agp::compute(
        &readings,
        &agp::Period {
            from_ms: from,
            to_ms: to,
            zone: &zone,
            cgm: (from_cgm > 0).then_some((interval, from_cgm)),
        },
    );
    audit_line(&s, &p, "agp.read", Some(&id), &format!("patient/{id}/agp")).await?;
    let mut out = json!({
        "patient_id": id,
        "from": format_rfc3339(from), "to": format_rfc3339(to),
        "timezone": zone.name(), "timezone_source": zone_source,
        "unit": Metric::Glucose.unit(),
        "readings": rows.len(),
        "thresholds": {
            "very_low_below": agp::VERY_LOW_BELOW, "low_below": agp::LOW_BELOW,
            "in_range_up_to": agp::IN_RANGE_UP_TO, "high_up_to": agp::HIGH_UP_TO,
            "cv_stable_up_to_pct": agp::CV_STABLE_UP_TO_PCT,
            "recommended_days": agp::RECOMMENDED_DAYS,
            "recommended_active_pct": agp::RECOMMENDED_ACTIVE_PCT,
            "source": "Battelino T et al. Diabetes Care 2019;42(8):1593-1603",
        },
        "gmi_source": "Bergenstal RM et al. Diabetes Care 2018;41(11):2275-2280",
        "bins": "hourly",
    });
    if let Some(a) = figures {
        let [vl, l, ir, h, vh] = a.ranges.percents();
        let r = &a.ranges;
        out["days_with_data"] = json!(a.days_with_data);
        out["period_days"] = json!(round(a.period_days, 2));
        out["cgm"] = json!(from_cgm > 0);
        out["cgm_readings"] = json!(from_cgm);
        out["cgm_interval_s"] = json!(interval);
        out["cgm_active_pct"] = json!(a.cgm_active_pct.map(|v| round(v, 1)));
        out["mean_mg_dl"] = json!(round(a.mean_mg_dl, 1));
        // The metric table's own factor (mg/dL per mmol/L), so both directions agree.
        let per_mmol = Metric::Glucose
            .to_canonical(1.0, Some("mmol/L"))
            .unwrap_or(f64::NAN);
        out["mean_mmol_l"] = json!(round(a.mean_mg_dl / per_mmol, 1));
        out["sd_mg_dl"] = json!(round(a.sd_mg_dl, 1));
        out["cv_pct"] = json!(round(a.cv_pct, 1));
        out["gmi_pct"] = json!(round(a.gmi_pct, 1));
        out["ranges"] = json!({
            "very_low": {"count": r.very_low, "pct": round(vl, 1)},
            "low": {"count": r.low, "pct": round(l, 1)},
            "in_range": {"count": r.in_range, "pct": round(ir, 1)},
            "high": {"count": r.high, "pct": round(h, 1)},
            "very_high": {"count": r.very_high, "pct": round(vh, 1)},
        });
        out["hours"] = a
            .hours
            .iter()
            .map(|b| {
                json!({"hour": b.hour, "n": b.n, "p5": round(b.p[0], 1), "p25": round(b.p[1], 1),
                       "p50": round(b.p[2], 1), "p75": round(b.p[3], 1), "p95": round(b.p[4], 1)})
            })
            .collect();
        out["sufficient"] = json!(
            a.period_days >= agp::RECOMMENDED_DAYS
                && a.cgm_active_pct
                    .is_some_and(|v| v >= agp::RECOMMENDED_ACTIVE_PCT)
        );
    }
    Ok(Json(out))
}

fn round(v: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (v * f).round() / f
}
