//! `GET /population?month=YYYY-MM[&program=]` (docs/population.md): a programme's figures for a
//! month over the patients the caller may see. The facts come from the billing statements and
//! the alerts; the figures are `crate::population`'s.

use std::collections::HashMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::{Extension, Json};
use jiff::civil::Date;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Principal;
use super::billing::{automatic_devices, statement_for};
use super::error::ApiError;
use super::extract::{ApiResult, audit_line};
use super::state::AppState;
use crate::billing::Month;
use crate::crm::record::AlertQuery;
use crate::domain::{now_ms, parse_rfc3339};
use crate::population::{AlertFact, PatientMonth, figures};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PopulationQuery {
    /// `YYYY-MM`; the clinic's current month when absent.
    month: Option<String>,
    program: Option<String>,
}

/// `GET /population`.
pub(super) async fn population(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    q: Result<Query<PopulationQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(q) = q?;
    let now = now_ms();
    let today = s
        .clinic_zone
        .day_of(now)
        .ok_or_else(|| ApiError::Internal("the clock is out of range".into()))?;
    let month = match &q.month {
        Some(m) => Month::parse(m).map_err(ApiError::BadRequest)?,
        None => Month::of(today),
    };
    super::enrollment::known_programme(&s, q.program.as_deref()).await?;
    // Alerts opened in the month (in the clinic's zone), by patient.
    let zone = &s.clinic_zone;
    let from_ms = zone.start_of(month.first());
    let to_ms = month.last().tomorrow().ok().and_then(|d| zone.start_of(d));
    let (Some(from_ms), Some(to_ms)) = (from_ms, to_ms) else {
        return Err(ApiError::BadRequest(format!(
            "month {month} is out of range"
        )));
    };
    let all = s
        .registry
        .alerts(AlertQuery {
            status: None,
            patient_id: None,
            teams: p.teams.as_ref().map(|t| t.to_vec()),
            limit: 1_000_000,
        })
        .await?;
    let mut alerts: HashMap<&str, Vec<AlertFact>> = HashMap::new();
    for a in &all {
        let Some(opened) = parse_rfc3339(&a.opened_at) else {
            continue;
        };
        if opened < from_ms || opened >= to_ms {
            continue;
        }
        alerts
            .entry(a.patient_id.as_str())
            .or_default()
            .push(AlertFact {
                rule_id: a.rule_id.clone(),
                severity: a.severity,
                opened_ms: opened,
                acknowledged_ms: a.acknowledged_at.as_deref().and_then(parse_rfc3339),
            });
    }

    let counts = automatic_devices(&s).await?;
    let mut patients = s.registry.patients().await?;
    patients.retain(|x| p.sees_team(x.details.care_team.as_deref()));
    let last_counted = month.last().min(today);
    let mut months = Vec::new();
    for patient in &patients {
        let episodes = s.registry.enrollments(&patient.id).await?;
        let mut enrolled_days = 0u32;
        let mut in_programme = false;
        for e in &episodes {
            if q.program.as_deref().is_some_and(|want| want != e.program) {
                continue;
            }
            let (Ok(start), end) = (
                e.start.parse::<Date>(),
                e.end.as_deref().map(str::parse::<Date>),
            ) else {
                continue;
            };
            let end = match end {
                Some(Ok(d)) => d.min(last_counted),
                Some(Err(_)) => continue,
                None => last_counted,
            };
            let start = start.max(month.first());
            if start > month.last() || end < month.first() {
                continue;
            }
            in_programme = true;
            if start <= end {
                let days = start.until(end).map(|d| d.get_days()).unwrap_or(0) + 1;
                enrolled_days += u32::try_from(days).unwrap_or(0);
            }
        }
        if !in_programme {
            continue;
        }
        let st = statement_for(&s, patient, &episodes, month, &counts, now).await?;
        months.push(PatientMonth {
            patient_id: patient.id.to_string(),
            enrolled_days,
            period_days: st
                .periods
                .iter()
                .filter(|x| x.billed_this_month)
                .filter(|x| q.program.as_deref().is_none_or(|want| want == x.program))
                .map(|x| x.device_days)
                .collect(),
            minutes: st.minutes,
            interactive: st.interactive,
            alerts: alerts.remove(patient.id.as_str()).unwrap_or_default(),
        });
    }
    audit_line(
        &s,
        &p,
        "population.read",
        None,
        &format!("population/{month}"),
    )
    .await?;
    Ok(Json(json!({
        "month": month.to_string(),
        "program": q.program,
        "figures": figures(&months),
    })))
}
