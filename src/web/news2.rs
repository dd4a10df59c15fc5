//! `GET /patients/{id}/news2?from=&to=`: the patient's NEWS2 for the patient page's card — the
//! score now with each parameter's part, and its trend over the period (docs/web.md,
//! docs/alerts.md "The NEWS2 card").
//!
//! Shown only when the care plan in force has a `news2` rule: its freshness and SpO2 scale are
//! the ones the score is computed with, so the card never shows a score no alert would be
//! raised on. Without one (or while the patient is discharged, when no rule watches them) the
//! answer says so (`rule: null`) and reads no readings.
//!
//! The current score uses the latest reading of each parameter exactly as the alert engine
//! does; the trend scores bucket means ([`crate::alerts::news2_trend`]). A read of the
//! patient's data: checked against the caller's care teams and audited (`news2.read`) before
//! anything is sent.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{Principal, check_patient};
use super::error::ApiError;
use super::extract::{ApiResult, audit_line, patient_id, time_param};
use super::state::AppState;
use crate::alerts::engine::NEWS2_METRICS;
use crate::alerts::news2::{self, Inputs, PARAMETERS, Spo2Scale};
use crate::alerts::news2_trend;
use crate::alerts::rules::{CarePlan, Rule};
use crate::domain::{PatientId, format_rfc3339, now_ms};

const HOUR_MS: i64 = 3_600_000;
/// The period when none is asked for: the last 24 hours.
const DEFAULT_HOURS: i64 = 24;
/// The longest period: 31 days.
const MAX_DAYS: i64 = 31;
/// Trend points in a period: one every 15 minutes over a day.
const TREND_STEPS: i64 = 96;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct News2Params {
    from: Option<String>,
    to: Option<String>,
}

/// `[from, to]` from the parameters: `to` defaults to now, `from` to 24 hours before `to`;
/// 400 for a bad time, `from` not before `to`, or a period longer than 31 days.
fn period(q: &News2Params, now: i64) -> ApiResult<(i64, i64)> {
    let to = time_param("to", q.to.as_deref())?.unwrap_or(now);
    let from = time_param("from", q.from.as_deref())?.unwrap_or(to - DEFAULT_HOURS * HOUR_MS);
    if from >= to {
        return Err(ApiError::BadRequest("from must be before to".into()));
    }
    if to.saturating_sub(from) > MAX_DAYS * 24 * HOUR_MS {
        return Err(ApiError::BadRequest(format!(
            "the period is longer than {MAX_DAYS} days; choose a shorter one"
        )));
    }
    Ok((from, to))
}

/// The plan's NEWS2 rule (the first, should a plan have two): id, freshness, SpO2 scale.
fn news2_rule(plan: &CarePlan) -> Option<(&str, u32, Spo2Scale)> {
    plan.rules.iter().find_map(|r| match r {
        Rule::News2 {
            id,
            freshness_s,
            spo2_scale,
            ..
        } => Some((id.as_str(), *freshness_s, *spo2_scale)),
        _ => None,
    })
}

fn scale_name(s: Spo2Scale) -> u8 {
    match s {
        Spo2Scale::One => 1,
        Spo2Scale::Two => 2,
    }
}

/// `GET /patients/{id}/news2?from=&to=` (default the last 24 hours, at most 31 days).
pub(super) async fn news2(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    q: Result<Query<News2Params>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let id = patient_id(&id)?;
    let Query(q) = q?;
    let now = now_ms();
    let (from, to) = period(&q, now)?;
    check_patient(&s, &p, &id).await?;
    // The plan the engine judges by: a discharged patient's is empty (no rule watches them).
    let plan = s
        .registry
        .engine_plan(id.clone())
        .await?
        .unwrap_or_else(CarePlan::default_plan);
    let mut out = json!({
        "patient_id": id,
        "from": format_rfc3339(from), "to": format_rfc3339(to),
        "rule": null, "current": null, "trend": null,
        "source": "Royal College of Physicians. National Early Warning Score (NEWS) 2. London: RCP, 2017",
    });
    if let Some((rule_id, freshness_s, scale)) = news2_rule(&plan) {
        let fresh_ms = i64::from(freshness_s) * 1000;
        out["rule"] = json!({"id": rule_id, "freshness_s": freshness_s,
                             "spo2_scale": scale_name(scale)});
        out["current"] = current(&s, &id, fresh_ms, scale, now).await?;
        out["trend"] = trend(&s, &id, (from, to), fresh_ms, scale).await?;
    }
    audit_line(
        &s,
        &p,
        "news2.read",
        Some(&id),
        &format!("patient/{id}/news2"),
    )
    .await?;
    Ok(Json(out))
}

/// The score now from the latest reading of each parameter no older than the freshness, as the
/// engine judges at its ticks; `null` when no parameter has a fresh reading. Each part names
/// the latest reading even when it is too old to count (`score: null`, `fresh: false`), so the
/// card can say what is stale rather than only that something is.
async fn current(
    s: &AppState,
    id: &PatientId,
    fresh_ms: i64,
    scale: Spo2Scale,
    now: i64,
) -> ApiResult<Value> {
    let mut latest = Vec::with_capacity(NEWS2_METRICS.len());
    for m in NEWS2_METRICS {
        latest.push(s.store.latest(id.clone(), m).await?);
    }
    let values: [Option<f64>; 7] = std::array::from_fn(|k| {
        latest[k]
            .as_ref()
            .filter(|o| now - o.time_ms <= fresh_ms)
            .map(|o| o.value)
    });
    if values.iter().all(Option::is_none) {
        return Ok(Value::Null);
    }
    let score = news2::score(&Inputs::from_values(values), scale);
    let parts: Vec<Value> = (0..7)
        .map(|k| {
            let o = latest[k].as_ref();
            json!({
                "parameter": PARAMETERS[k],
                "metric": NEWS2_METRICS[k],
                "unit": NEWS2_METRICS[k].unit(),
                "value": o.map(|o| o.value),
                "time": o.map(|o| format_rfc3339(o.time_ms)),
                "fresh": values[k].is_some(),
                "score": score.parts[k],
            })
        })
        .collect();
    Ok(json!({
        "time": format_rfc3339(now),
        "total": score.total,
        "risk": score.risk(),
        "any_three": score.any_three,
        "missing": score.missing,
        "parts": parts,
    }))
}

/// The score at each of [`TREND_STEPS`] times from `from` + one step to `to`, from each
/// parameter's series (its readings, or bucket means about a step wide when there are more
/// readings than steps). A bucket stands at its end, so a step never sees a later reading.
async fn trend(
    s: &AppState,
    id: &PatientId,
    (from, to): (i64, i64),
    fresh_ms: i64,
    scale: Spo2Scale,
) -> ApiResult<Value> {
    let step = ((to - from) / TREND_STEPS).max(1);
    let grid: Vec<i64> = (1..=TREND_STEPS)
        .map(|k| to - (TREND_STEPS - k) * step)
        .collect();
    // Read back one freshness before the first step, so it is scored from what was fresh then.
    let read_from = from - fresh_ms;
    let points = usize::try_from((to - read_from) / step + 1).unwrap_or(usize::MAX);
    let mut series: Vec<Vec<(i64, f64)>> = Vec::with_capacity(NEWS2_METRICS.len());
    for m in NEWS2_METRICS {
        let x = s.store.series(id.clone(), m, read_from, to, points).await?;
        let end = if x.step_ms == 0 { 0 } else { x.step_ms - 1 };
        series.push(
            x.points
                .iter()
                .map(|b| ((b.time_ms + end).min(to), b.mean))
                .collect(),
        );
    }
    let view: [&[(i64, f64)]; 7] = std::array::from_fn(|k| series[k].as_slice());
    let scored = news2_trend::trend(&view, &grid, fresh_ms, scale);
    Ok(scored
        .iter()
        .map(|(t, sc)| {
            json!({
                "time": format_rfc3339(*t),
                "total": sc.map(|s| s.total),
                "missing": sc.map(|s| s.missing),
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_are_checked_with_reasons() {
        let q = |from: Option<&str>, to: Option<&str>| News2Params {
            from: from.map(str::to_owned),
            to: to.map(str::to_owned),
        };
        let now = 40 * 86_400_000;
        assert_eq!(
            period(&q(None, None), now).unwrap(),
            (now - 24 * HOUR_MS, now)
        );
        let err = |from, to| match period(&q(from, to), now) {
            Err(ApiError::BadRequest(m)) => m,
            other => panic!("{:?}", other.map(|_| ())),
        };
        assert_eq!(
            err(Some("2026-01-02T00:00:00Z"), Some("2026-01-01T00:00:00Z")),
            "from must be before to"
        );
        assert!(
            err(Some("2026-01-01T00:00:00Z"), Some("2026-02-02T00:00:00Z")).contains("31 days")
        );
        assert!(err(Some("yesterday"), None).contains("RFC 3339"));
        // Exactly 31 days is allowed.
        assert!(
            period(
                &q(Some("2026-01-01T00:00:00Z"), Some("2026-02-01T00:00:00Z")),
                now
            )
            .is_ok()
        );
    }

    #[test]
    fn the_first_news2_rule_of_the_plan_is_the_one_shown() {
        let plan = CarePlan::default_plan();
        assert_eq!(news2_rule(&plan), Some(("news2", 14_400, Spo2Scale::One)));
        assert_eq!(news2_rule(&CarePlan { rules: Vec::new() }), None);
    }
}
