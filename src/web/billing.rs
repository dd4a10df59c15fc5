//! Billing evidence routes (docs/billing.md): a patient's device set-ups
//! (`POST|GET /patients/{id}/setups`, the 99453 event), a patient's monthly statement
//! (`GET /patients/{id}/billing?month=YYYY-MM`) and the clinic's (`GET /billing?month=…`), as
//! JSON or, with `format=csv`, the biller's spreadsheet. Reads are audited; a set-up writes its
//! timeline entry and audit line with it.

use std::collections::HashMap;
use std::sync::LazyLock;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{Principal, check_patient};
use super::error::ApiError;
use super::extract::{ApiResult, audit_line, new_audit_line, patient_id};
use super::state::AppState;
use crate::billing::csv::{Row, render};
use crate::billing::{Inputs, Month, Rules, SetupEvent, Statement, days_needed, device_days};
use crate::domain::zone::Zone;
use crate::domain::{PatientId, now_ms};
use crate::registry::Patient;
use crate::registry::enrollment::Enrollment;
use crate::registry::setups::SetupBody;

/// The rules in force (`billing/cms-rpm-2026.toml`).
static RULES: LazyLock<Rules> = LazyLock::new(Rules::built_in);

/// `POST /patients/{id}/setups`: a device set up with the patient and the patient taught.
pub(super) async fn add_setup(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    body: Result<Json<SetupBody>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    let id = patient_id(&id)?;
    check_patient(&s, &p, &id).await?;
    let Json(body) = body?;
    let now = now_ms();
    let setup = body.checked(id.as_str(), &p.name, now)?;
    let line = new_audit_line(
        &p,
        "setup.create",
        Some(&id),
        &format!("patient/{id}/setups/{}", setup.id),
        now,
    );
    let stored = s.registry.add_setup(setup, line).await?;
    Ok((StatusCode::CREATED, Json(stored)))
}

/// `GET /patients/{id}/setups`.
pub(super) async fn list_setups(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = patient_id(&id)?;
    check_patient(&s, &p, &id).await?;
    let setups = s.registry.setups(&id).await?;
    audit_line(
        &s,
        &p,
        "setup.read",
        Some(&id),
        &format!("patient/{id}/setups"),
    )
    .await?;
    Ok(Json(json!({ "setups": setups })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BillingQuery {
    /// `YYYY-MM`.
    month: Option<String>,
    /// `json` (the default) or `csv`.
    format: Option<String>,
    /// Only patients enrolled in this programme (`GET /billing`).
    program: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Csv,
}

impl BillingQuery {
    fn month(&self) -> ApiResult<Month> {
        let m = self.month.as_deref().ok_or_else(|| {
            ApiError::BadRequest("month is needed: ?month=YYYY-MM, like 2026-11".into())
        })?;
        Month::parse(m).map_err(ApiError::BadRequest)
    }

    fn format(&self) -> ApiResult<Format> {
        match self.format.as_deref() {
            None | Some("json") => Ok(Format::Json),
            Some("csv") => Ok(Format::Csv),
            Some(f) => Err(ApiError::BadRequest(format!(
                "format {f:?} must be json or csv"
            ))),
        }
    }
}

/// `GET /patients/{id}/billing?month=YYYY-MM`.
pub(super) async fn patient_billing(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    q: Result<Query<BillingQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let id = patient_id(&id)?;
    let Query(q) = q?;
    let (month, format) = (q.month()?, q.format()?);
    if q.program.is_some() {
        return Err(ApiError::BadRequest(
            "program filters GET /billing, not one patient's".into(),
        ));
    }
    check_patient(&s, &p, &id).await?;
    let patient = s.registry.patient(id.clone()).await?;
    let counts = automatic_devices(&s).await?;
    let episodes = s.registry.enrollments(&id).await?;
    let statement = statement_for(&s, &patient, &episodes, month, &counts, now_ms()).await?;
    audit_line(
        &s,
        &p,
        "billing.read",
        Some(&id),
        &format!("patient/{id}/billing/{month}"),
    )
    .await?;
    Ok(match format {
        Format::Json => Json(statement).into_response(),
        Format::Csv => csv_response(
            &format!("vigil-billing-{id}-{month}.csv"),
            &[Row {
                statement: &statement,
                name: &patient.name,
                mrn: patient.mrn.as_deref(),
            }],
        ),
    })
}

/// `GET /billing?month=YYYY-MM[&program=][&format=csv]`: every enrolled patient the caller may
/// see whose episodes touch the month, by patient id.
pub(super) async fn clinic_billing(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    q: Result<Query<BillingQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = q?;
    let (month, format) = (q.month()?, q.format()?);
    super::enrollment::known_programme(&s, q.program.as_deref()).await?;
    let counts = automatic_devices(&s).await?;
    let now = now_ms();
    let mut patients = s.registry.patients().await?;
    patients.retain(|x| p.sees_team(x.details.care_team.as_deref()));
    patients.sort_by(|a, b| a.id.cmp(&b.id));
    let mut rows: Vec<(Patient, Statement)> = Vec::new();
    for patient in patients {
        // Patients never enrolled in the month cost one query.
        let episodes = s.registry.enrollments(&patient.id).await?;
        if !episodes.iter().any(|e| touches(e, month)) {
            continue;
        }
        let st = statement_for(&s, &patient, &episodes, month, &counts, now).await?;
        let in_programme = |prog: &str| q.program.as_deref().is_none_or(|want| want == prog);
        let touches = st.periods.iter().any(|x| in_programme(&x.program))
            || st.codes.iter().any(|c| in_programme(&c.program));
        if touches {
            rows.push((patient, st));
        }
    }
    audit_line(&s, &p, "billing.list", None, &format!("billing/{month}")).await?;
    Ok(match format {
        Format::Json => {
            let patients: Vec<&Statement> = rows.iter().map(|(_, st)| st).collect();
            Json(json!({ "month": month.to_string(), "patients": patients })).into_response()
        }
        Format::Csv => {
            let csv_rows: Vec<Row<'_>> = rows
                .iter()
                .map(|(patient, st)| Row {
                    statement: st,
                    name: &patient.name,
                    mrn: patient.mrn.as_deref(),
                })
                .collect();
            csv_response(&format!("vigil-billing-{month}.csv"), &csv_rows)
        }
    })
}

/// Whether the episode's dates touch `month`.
pub(super) fn touches(e: &Enrollment, month: Month) -> bool {
    let first = month.first().to_string();
    let last = month.last().to_string();
    e.start <= last && e.end.as_deref().is_none_or(|end| end >= first.as_str())
}

fn csv_response(filename: &str, rows: &[Row<'_>]) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
        ],
        render(rows),
    )
        .into_response()
}

/// Every device by id: whether its readings count as transmitted by a device (its profile is
/// not typed in by hand).
pub(super) async fn automatic_devices(s: &AppState) -> ApiResult<HashMap<String, bool>> {
    let profiles = s.registry.profiles();
    Ok(s.registry
        .all_devices()
        .await?
        .into_iter()
        .map(|d| {
            let automatic = profiles.get(&d.profile).is_some_and(|p| !p.manual_entry);
            (d.id.to_string(), automatic)
        })
        .collect())
}

/// The zone a patient's days are counted in: their record's, else the clinic's.
pub(super) fn zone_of(s: &AppState, patient: &Patient) -> Zone {
    patient
        .details
        .timezone
        .as_deref()
        .and_then(|z| Zone::parse(z).ok())
        .unwrap_or_else(|| (*s.clinic_zone).clone())
}

/// `patient`'s statement for `month` as of `now_ms`, from their enrollment `episodes`.
pub(super) async fn statement_for(
    s: &AppState,
    patient: &Patient,
    episodes: &[Enrollment],
    month: Month,
    counts: &HashMap<String, bool>,
    now_ms: i64,
) -> ApiResult<Statement> {
    let id: &PatientId = &patient.id;
    let zone = zone_of(s, patient);
    let today = zone
        .day_of(now_ms)
        .ok_or_else(|| ApiError::Internal("the clock is out of range".into()))?;
    let setups: Vec<SetupEvent> = s
        .registry
        .setups(id)
        .await?
        .into_iter()
        .filter_map(|x| {
            Some(SetupEvent {
                date: x.date.parse().ok()?,
                id: x.id,
                device_id: x.device_id,
                by: x.user,
            })
        })
        .collect();
    let days = match days_needed(&RULES, month, episodes, &setups) {
        None => Default::default(),
        Some((first, last)) => {
            let from = zone.start_of(first);
            let to = last.tomorrow().ok().and_then(|d| zone.start_of(d));
            let (Some(from), Some(to)) = (from, to) else {
                return Err(ApiError::Internal(format!(
                    "days {first} to {last} are out of range"
                )));
            };
            let pairs = s.store.quarter_hours(id.clone(), from, to).await?;
            device_days(&pairs, |d| counts.get(d).copied().unwrap_or(false), &zone)
        }
    };
    let entries = s
        .registry
        .time_entries(id, &month.first().to_string(), &month.last().to_string())
        .await?;
    Ok(crate::billing::statement(
        &RULES,
        &Inputs {
            patient_id: id.as_str(),
            month,
            today,
            timezone: zone.name(),
            episodes,
            days: &days,
            setups: &setups,
            entries: &entries,
        },
    ))
}
