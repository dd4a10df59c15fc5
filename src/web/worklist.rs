//! `GET /worklist` (docs/worklist.md): the caseload worklist, one row per patient enrolled
//! today whom the caller may see, most urgent first, each saying why in words. The facts come
//! from the alerts, the panel cache's last readings, the billing statement of the month and
//! the time log; the ranking is `crate::worklist`'s.

use std::collections::HashMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::{Extension, Json};
use jiff::civil::Date;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Principal;
use super::billing::{automatic_devices, statement_for, zone_of};
use super::error::ApiError;
use super::extract::{ApiResult, audit_line};
use super::state::AppState;
use crate::billing::Month;
use crate::crm::record::{AlertQuery, AlertStatus};
use crate::domain::{format_rfc3339, now_ms, parse_rfc3339};
use crate::worklist::{Adherence, Facts, OpenAlert, Silence, rank};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WorklistQuery {
    /// Only patients enrolled in this programme.
    program: Option<String>,
    /// Only patients of this care team (one of the caller's).
    team: Option<String>,
}

/// How long a device may be quiet: twice its reporting interval, at least 5 minutes (as the
/// panel's "stale").
fn silent_after_ms(interval_s: u64) -> i64 {
    i64::try_from(interval_s.saturating_mul(2).max(300))
        .unwrap_or(i64::MAX)
        .saturating_mul(1000)
}

/// `GET /worklist?program=&team=`.
pub(super) async fn worklist(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    q: Result<Query<WorklistQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(q) = q?;
    super::enrollment::known_programme(&s, q.program.as_deref()).await?;
    if let Some(team) = &q.team
        && !p.sees_team(Some(team))
    {
        return Err(ApiError::BadRequest(format!(
            "team {team:?} is not one of your care teams"
        )));
    }
    let now = now_ms();
    let mut patients = s.registry.patients().await?;
    patients.retain(|x| {
        let team = x.details.care_team.as_deref();
        // Discharged patients are nobody's work any more.
        !x.is_discharged() && p.sees_team(team) && q.team.as_deref().is_none_or(|t| Some(t) == team)
    });
    let devices = s.registry.all_devices().await?;
    let mut by_patient: HashMap<&str, Vec<&crate::registry::Device>> = HashMap::new();
    for d in devices.iter().filter(|d| !d.revoked) {
        by_patient.entry(d.patient_id.as_str()).or_default().push(d);
    }
    let open = s
        .registry
        .alerts(AlertQuery {
            status: Some(AlertStatus::Open),
            patient_id: None,
            teams: p.teams.as_ref().map(|t| t.to_vec()),
            limit: 100_000,
        })
        .await?;
    let mut alerts: HashMap<&str, Vec<OpenAlert>> = HashMap::new();
    for a in &open {
        alerts
            .entry(a.patient_id.as_str())
            .or_default()
            .push(OpenAlert {
                id: a.id.clone(),
                severity: a.severity,
                opened_ms: parse_rfc3339(&a.opened_at).unwrap_or(now),
                message: a.message.clone(),
            });
    }
    let counts = automatic_devices(&s).await?;
    // When each device last sent a reading, as far as the panel cache has seen (it is kept
    // current from every instance's commit feed): a device seen lately is not silent, and
    // only the others cost a look in the store.
    let seen: HashMap<crate::domain::DeviceId, i64> = s.panel.with(|all| {
        all.values()
            .flat_map(|l| l.device_seen.iter().map(|(d, t)| (d.clone(), *t)))
            .collect()
    });
    let mut facts = Vec::new();
    for patient in &patients {
        let zone = zone_of(&s, patient);
        let Some(today) = zone.day_of(now) else {
            continue;
        };
        let episodes = s.registry.enrollments(&patient.id).await?;
        let Some(active) = episodes.iter().find(|e| {
            let start: Option<Date> = e.start.parse().ok();
            let end: Option<Date> = e.end.as_deref().and_then(|x| x.parse().ok());
            start.is_some_and(|st| st <= today) && end.is_none_or(|en| today <= en)
        }) else {
            continue;
        };
        if q.program
            .as_deref()
            .is_some_and(|want| want != active.program)
        {
            continue;
        }
        let statement =
            statement_for(&s, patient, &episodes, Month::of(today), &counts, now).await?;
        let today_s = today.to_string();
        let adherence = statement
            .periods
            .iter()
            .find(|x| x.start <= today_s && today_s <= x.end)
            .and_then(|x| {
                let end: Date = x.end.parse().ok()?;
                let after_today = i64::from(today.until(end).ok()?.get_days());
                let has_today = x.days.contains(&today_s);
                Some(Adherence {
                    period_start: x.start.clone(),
                    period_end: x.end.clone(),
                    days: x.device_days,
                    days_left: after_today + i64::from(!has_today),
                })
            });
        // Silence: the time since each device's latest reading (or, never read, since it was
        // issued) against its profile's reporting interval.
        let mut silent = Vec::new();
        for d in by_patient.get(patient.id.as_str()).into_iter().flatten() {
            // A device whose readings are typed in (the patient app) is used when there is
            // something to enter: its quiet is not silence.
            let Some(profile) = s.registry.profiles().get(&d.profile) else {
                continue;
            };
            if profile.manual_entry {
                continue;
            }
            let quiet_for = silent_after_ms(profile.reporting_interval_s);
            if seen.get(&d.id).is_some_and(|t| now - t <= quiet_for) {
                continue;
            }
            let last = s
                .store
                .last_reading(d.id.clone(), profile.metrics.clone())
                .await?;
            let issued = parse_rfc3339(&d.created_at).unwrap_or(now);
            let since = last.unwrap_or(issued);
            if now - since > quiet_for {
                silent.push(Silence {
                    device_id: d.id.to_string(),
                    last_ms: since,
                    interval_s: profile.reporting_interval_s,
                    never: last.is_none(),
                });
            }
        }
        let year_ago = today
            .checked_sub(jiff::Span::new().days(366))
            .unwrap_or(today);
        let last_interactive = s
            .registry
            .time_entries(&patient.id, &year_ago.to_string(), &today_s)
            .await?
            .into_iter()
            .filter(|t| t.interactive)
            .map(|t| t.date)
            .max();
        facts.push(Facts {
            patient_id: patient.id.to_string(),
            name: patient.name.clone(),
            care_team: patient.details.care_team.clone(),
            program: active.program.clone(),
            alerts: alerts.remove(patient.id.as_str()).unwrap_or_default(),
            silent,
            adherence,
            minutes: statement.minutes,
            interactive_this_month: statement.interactive,
            last_interactive,
        });
    }
    let clinic_today = s.clinic_zone.day_of(now);
    let (day, days) = clinic_today.map_or((1, 30), |d| (d.day(), d.days_in_month()));
    let items = rank(
        &facts,
        now,
        u8::try_from(day).unwrap_or(1),
        u8::try_from(days).unwrap_or(30),
    );
    audit_line(&s, &p, "worklist.read", None, "worklist").await?;
    Ok(Json(
        json!({"items": items, "generated_at": format_rfc3339(now)}),
    ))
}
