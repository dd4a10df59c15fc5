//! Admin routes: dashboard users and care teams. Every change is audited; passwords are never
//! returned or logged.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Principal;
use super::error::ApiError;
use super::extract::{ApiResult, audit_line, new_audit_line, require_admin};
use super::state::AppState;
use crate::domain::now_ms;
use crate::registry::contacts::{ContactChange, Quiet};
use crate::registry::{Role, UserUpdate, initial_teams};

fn role(s: &str) -> ApiResult<Role> {
    Role::parse(s)
        .ok_or_else(|| ApiError::BadRequest(format!("role {s:?} is not one of admin, clinician")))
}

pub(super) async fn list_users(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
) -> ApiResult<Json<Value>> {
    require_admin(&p)?;
    let users = s.registry.users().await?;
    let mut contacts = s.registry.contacts().await?;
    let users: Vec<Value> = users
        .into_iter()
        .map(|u| {
            let contact = contacts.remove(&u.name).unwrap_or_default();
            let mut v = json!(u);
            v["contact"] = json!(contact);
            v
        })
        .collect();
    audit_line(&s, &p, "users.read", None, "users").await?;
    Ok(Json(json!({ "users": users })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewUser {
    name: String,
    password: String,
    role: String,
    #[serde(default)]
    teams: Vec<String>,
}

pub(super) async fn create_user(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    body: Result<Json<NewUser>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    require_admin(&p)?;
    let Json(b) = body?;
    let role = role(&b.role)?;
    // A clinician given no team joins the default team, so that someone sees its patients.
    let teams = initial_teams(role, b.teams);
    // Teams are checked before the user exists, so a bad team leaves no half-made user.
    let known = s.registry.teams().await?;
    if let Some(t) = teams.iter().find(|t| !known.iter().any(|k| &k.id == *t)) {
        return Err(ApiError::BadRequest(format!(
            "no care team {t:?}; create it first"
        )));
    }
    // The user, their teams and the audit line commit together.
    let now = now_ms();
    let line = new_audit_line(&p, "user.create", None, &format!("user/{}", b.name), now);
    let user = s
        .registry
        .create_user(&b.name, role, &b.password, teams, now, Some(line))
        .await?;
    Ok((StatusCode::CREATED, Json(user)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UserPatch {
    role: Option<String>,
    teams: Option<Vec<String>>,
    password: Option<String>,
    // Contact details (docs/oncall.md): the user's own, or any user's for an admin.
    email: Option<String>,
    phone: Option<String>,
    #[serde(default, deserialize_with = "present")]
    quiet: Option<Option<Quiet>>,
    timezone: Option<String>,
    /// The name patients see; `""` or `null` clears it (admin).
    #[serde(default, deserialize_with = "present")]
    display_name: Option<Option<String>>,
    /// Disable (`true`) or enable (`false`) the user (admin).
    disabled: Option<bool>,
}

/// A field that may be given as `null` (to clear it) or left out (to keep it).
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

pub(super) async fn update_user(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(name): Path<String>,
    body: Result<Json<UserPatch>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    let Json(b) = body?;
    let contact = ContactChange {
        email: b.email,
        phone: b.phone,
        quiet: b.quiet,
        timezone: b.timezone,
    };
    let account = b.role.is_some()
        || b.teams.is_some()
        || b.password.is_some()
        || b.display_name.is_some()
        || b.disabled.is_some();
    if !contact.is_empty() {
        // Users keep their own contact details; an admin may set anyone's.
        let stored = s.registry.user(&name).await?.name;
        if stored != p.name {
            require_admin(&p)?;
        }
        if account {
            require_admin(&p)?;
        }
        let contact = s
            .registry
            .change_contact(&name, contact, |stored| {
                new_audit_line(
                    &p,
                    "user.contact",
                    None,
                    &format!("user/{stored}"),
                    now_ms(),
                )
            })
            .await?;
        if !account {
            let user = s.registry.user(&name).await?;
            let mut out = json!(user);
            out["contact"] = json!(contact);
            return Ok(Json(out));
        }
    }
    require_admin(&p)?;
    if b.disabled == Some(true) && s.registry.user(&name).await?.name == p.name {
        return Err(ApiError::BadRequest(
            "you cannot disable your own account: ask another admin".into(),
        ));
    }
    let update = UserUpdate {
        role: b.role.as_deref().map(role).transpose()?,
        teams: b.teams,
        password: b.password,
        display_name: b.display_name.map(Option::unwrap_or_default),
        disabled: b.disabled,
        // A password set here is the user's own (`vigil user add`'s way); a reset's is not.
        password_temporary: None,
    };
    let what = [
        update.role.map(|_| "role"),
        update.teams.as_ref().map(|_| "teams"),
        update.password.as_ref().map(|_| "password"),
        update.display_name.as_ref().map(|_| "display_name"),
        update
            .disabled
            .map(|d| if d { "disabled" } else { "enabled" }),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(",");
    // The change and its audit line (naming the stored spelling) commit together.
    let user = s
        .registry
        .update_user(&name, update, |stored| {
            let target = format!("user/{stored}?changed={what}");
            new_audit_line(&p, "user.update", None, &target, now_ms())
        })
        .await?;
    Ok(Json(json!(user)))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct PasswordReset {
    /// The new password, when the admin chooses it; else Vigil makes a temporary one.
    password: Option<String>,
}

/// `POST /users/{name}/password-reset` (admin): a new password for the user — the one given,
/// or a random temporary one answered once — and their sessions end. Audited
/// (`user.password_reset`) in the same transaction. The password is in this answer only.
pub(super) async fn reset_password(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<impl IntoResponse> {
    require_admin(&p)?;
    // An empty body (or `{}`) is a request for a temporary password.
    let b: PasswordReset = if body.iter().all(u8::is_ascii_whitespace) {
        PasswordReset::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("invalid body: {e}")))?
    };
    let chosen = b.password.is_some();
    let (user, password) = s
        .registry
        .reset_password(&name, b.password, |stored| {
            new_audit_line(
                &p,
                "user.password_reset",
                None,
                &format!("user/{stored}"),
                now_ms(),
            )
        })
        .await?;
    let mut out = json!({ "user": user });
    if !chosen {
        out["password"] = json!(password);
    }
    Ok(([(axum::http::header::CACHE_CONTROL, "no-store")], Json(out)))
}

pub(super) async fn list_teams(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
) -> ApiResult<Json<Value>> {
    let mut teams = s.registry.teams().await?;
    teams.retain(|t| p.sees_team(Some(&t.id)));
    Ok(Json(json!({ "teams": teams })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewTeam {
    id: String,
    name: String,
}

pub(super) async fn create_team(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    body: Result<Json<NewTeam>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    require_admin(&p)?;
    let Json(b) = body?;
    let now = now_ms();
    let line = new_audit_line(&p, "team.create", None, &format!("team/{}", b.id), now);
    let team = s
        .registry
        .create_team(&b.id, &b.name, now, Some(line))
        .await?;
    Ok((StatusCode::CREATED, Json(team)))
}

/// API tokens are managed from a signed-in session (or the bootstrap token), never with an API
/// token: a leaked token cannot mint others.
fn not_with_a_token(p: &Principal) -> ApiResult<()> {
    match &p.api_token {
        Some(t) => Err(ApiError::Forbidden(format!(
            "API tokens are managed from a signed-in session, not with token {}",
            t.id
        ))),
        None => Ok(()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewToken {
    label: String,
    scope: crate::registry::Scope,
    /// 1 to 365.
    expires_days: u32,
    /// Whose token (admin only; default: the caller).
    #[serde(default)]
    user: Option<String>,
}

/// `POST /tokens`: an API token acting as its user, `read` or `write`, expiring; the secret is
/// in this answer only.
pub(super) async fn create_token(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    body: Result<Json<NewToken>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    not_with_a_token(&p)?;
    let Json(b) = body?;
    if !(1..=365).contains(&b.expires_days) {
        return Err(ApiError::BadRequest(
            "expires_days must be 1 to 365: every token expires".into(),
        ));
    }
    let user = match b.user {
        // Usernames ignore case: one's own name in another spelling is still one's own.
        Some(u) if !u.eq_ignore_ascii_case(&p.name) => {
            require_admin(&p)?;
            u
        }
        _ if p.name == "bootstrap" => {
            return Err(ApiError::BadRequest(
                "the bootstrap token has no user: name one with \"user\"".into(),
            ));
        }
        _ => p.name.clone(),
    };
    let now = now_ms();
    let (secret, token) = s
        .registry
        .create_api_token(
            &user,
            &b.label,
            b.scope,
            now,
            now + i64::from(b.expires_days) * 86_400_000,
            |id| new_audit_line(&p, "token.create", None, &format!("token/{id}"), now_ms()),
        )
        .await?;
    let mut out = json!(token);
    out["token"] = json!(secret);
    Ok((
        StatusCode::CREATED,
        [(axum::http::header::CACHE_CONTROL, "no-store")],
        Json(out),
    ))
}

/// `GET /tokens`: the caller's tokens (an admin: everyone's), without their secrets.
pub(super) async fn list_tokens(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
) -> ApiResult<Json<Value>> {
    not_with_a_token(&p)?;
    let who = (p.role != Role::Admin).then(|| p.name.clone());
    let tokens = s.registry.api_tokens(who).await?;
    Ok(Json(json!({ "tokens": tokens })))
}

/// `DELETE /tokens/{id}`: revokes a token at once (one's own, or any for an admin).
pub(super) async fn revoke_token(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    not_with_a_token(&p)?;
    let t = s
        .registry
        .api_token_by_id(id.clone())
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("token {id} not found")))?;
    if t.user != p.name {
        require_admin(&p)?;
    }
    let line = new_audit_line(&p, "token.revoke", None, &format!("token/{id}"), now_ms());
    let t = s.registry.revoke_api_token(id, now_ms(), line).await?;
    Ok(Json(json!(t)))
}
