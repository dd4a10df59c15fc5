//! Patients: `POST /patients` (admin), `GET /patients` (those the caller may see) and
//! `GET /patients/{id}`; every read is audited.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{Principal, check_patient};
use super::error::ApiError;
use super::extract::{ApiResult, audit_line, new_audit_line, patient_id, require_admin};
use super::state::AppState;
use crate::domain::{PatientId, now_ms};
use crate::registry::{PatientAudit, PatientDetails};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewPatient {
    id: String,
    name: String,
    birth_date: Option<String>,
    /// The clinic's medical record number (unique per clinic).
    mrn: Option<String>,
    gender: Option<String>,
    phone: Option<String>,
    email: Option<String>,
    address: Option<String>,
    care_team: Option<String>,
    contact_preference: Option<String>,
    contact_notes: Option<String>,
    /// IANA time-zone name (docs/billing.md).
    timezone: Option<String>,
}

impl NewPatient {
    fn details(&self) -> PatientDetails {
        PatientDetails {
            gender: self.gender.clone(),
            phone: self.phone.clone(),
            email: self.email.clone(),
            address: self.address.clone(),
            care_team: self.care_team.clone(),
            contact_preference: self.contact_preference.clone(),
            contact_notes: self.contact_notes.clone(),
            timezone: self.timezone.clone(),
        }
    }
}

pub(super) async fn create_patient(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    body: Result<Json<NewPatient>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    require_admin(&p)?;
    let Json(body) = body?;
    let id = patient_id(&body.id)?;
    let audit = patient_audit(&p, "patient.create", &id, now_ms());
    let patient = s
        .registry
        .create_patient(
            id.clone(),
            body.name.clone(),
            body.birth_date.clone(),
            body.mrn.clone(),
            body.details(),
            audit.change.time_ms,
            Some(audit),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(patient)))
}

/// The audit lines of a change to patient `id` by `p`: `action` on the patient, and
/// `patient.mrn` on its own line (written only when the MRN is set or changed: it decides where
/// the patient's data goes outside Vigil, the FHIR server filing it under the patient the MRN
/// names, so a change is looked for on its own).
pub(super) fn patient_audit(
    p: &Principal,
    action: &str,
    id: &PatientId,
    now_ms: i64,
) -> PatientAudit {
    PatientAudit {
        change: new_audit_line(p, action, Some(id), &format!("patient/{id}"), now_ms),
        mrn: new_audit_line(
            p,
            "patient.mrn",
            Some(id),
            &format!("patient/{id}/mrn"),
            now_ms,
        ),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    /// `active` (the default: under monitoring), `discharged` or `all`.
    status: Option<String>,
    /// `discharged`: the same as `status=all`.
    include: Option<String>,
}

/// `GET /patients?status=active|discharged|all` (or `include=discharged`): the patients the
/// caller may see; discharged ones only when asked for.
pub(super) async fn list_patients(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(q) = q?;
    if let Some(i) = q.include.as_deref()
        && i != "discharged"
    {
        return Err(ApiError::BadRequest(format!(
            "include {i:?} is not discharged"
        )));
    }
    let status = match (q.status.as_deref(), q.include.is_some()) {
        (None, true) | (Some("all"), _) => "all",
        (None | Some("active"), false) => "active",
        (Some("discharged"), _) => "discharged",
        (Some("active"), true) => {
            return Err(ApiError::BadRequest(
                "status=active and include=discharged contradict each other".into(),
            ));
        }
        (Some(st), _) => {
            return Err(ApiError::BadRequest(format!(
                "status {st:?} is not one of active, discharged, all"
            )));
        }
    };
    let mut patients = s.registry.patients().await?;
    patients.retain(|x| {
        p.sees_team(x.details.care_team.as_deref())
            && match status {
                "active" => !x.is_discharged(),
                "discharged" => x.is_discharged(),
                _ => true,
            }
    });
    audit_line(&s, &p, "patient.list", None, "patients").await?;
    Ok(Json(json!({ "patients": patients })))
}

pub(super) async fn get_patient(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let id = patient_id(&id)?;
    check_patient(&s, &p, &id).await?;
    let patient = s.registry.patient(id.clone()).await?;
    audit_line(&s, &p, "patient.read", Some(&id), &format!("patient/{id}")).await?;
    Ok(Json(patient))
}
