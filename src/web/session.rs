//! Sign-in, the current session and sign-out (`/api/v1/session`).
//!
//! Sign-in throttles failures per username and per address
//! ([`LoginThrottle`](super::login_throttle::LoginThrottle)): after
//! [`FREE_FAILURES`](super::login_throttle::FREE_FAILURES) failures in a row, each further
//! attempt must wait, doubling from 30 s up to 15 minutes (429 with
//! `Retry-After`). Each attempt is reserved against both keys before its password is checked,
//! so a burst from one address or for one username gets no more checks than its free failures
//! (the rest: 429 at once). The check itself runs in the registry's password hasher, which
//! bounds the checks running and waiting and serves addresses in turn; when it is full the
//! answer is 503 with `Retry-After` at once. A successful sign-in always starts a new session
//! (no fixation) and ends the one the browser brought.

use std::time::Instant;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::auth::{Principal, SESSION_COOKIE, cookie};
use super::error::ApiError;
use super::extract::ApiResult;
use super::state::AppState;
use crate::domain::now_ms;
use crate::registry::audit::NewAuditLine;
use crate::registry::{AuditEntry, Session};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SignIn {
    username: String,
    password: String,
}

/// The session as the dashboard reads it: the user with their own contact details (for the
/// "My details" form), the CSRF token and when the session ends.
async fn session_body(state: &AppState, s: &Session) -> ApiResult<serde_json::Value> {
    let contact = state.registry.contact_of(&s.user.name).await?;
    let mut user = json!(s.user);
    user["contact"] = json!(contact);
    Ok(json!({
        "user": user,
        // The clinic's display units (`[clinic]`): the dashboard converts canonical values.
        "units": state.units,
        "csrf_token": s.csrf,
        "expires_at": crate::domain::format_rfc3339(s.expires_ms),
    }))
}

fn set_cookie(state: &AppState, value: &str, max_age_s: i64) -> HeaderValue {
    let secure = if state.secure_cookies { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age_s}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("vigil_session=; Max-Age=0; Path=/"))
}

/// `POST /session`: sign in.
pub(super) async fn sign_in(
    State(s): State<AppState>,
    axum::extract::ConnectInfo(addr): axum::extract::ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    body: Result<Json<SignIn>, JsonRejection>,
) -> ApiResult<Response> {
    let Json(body) = body?;
    let remote = addr.ip().to_string();
    let user_key = format!("user:{}", body.username.to_lowercase());
    let keys = [user_key.clone(), format!("addr:{remote}")];
    let throttle = s.throttle.clone();
    let attempt = throttle.begin(&keys, Instant::now()).map_err(|wait| {
        ApiError::too_many("too many failed sign-ins, or sign-ins under way", wait)
    })?;
    // Not checked (the checks are busy: 503 with Retry-After) is not a failure.
    let role = match s
        .registry
        .verify_user(&body.username, &body.password, &remote)
        .await
    {
        Ok(role) => role,
        Err(e) => {
            attempt.end(false);
            tracing::debug!(%remote, error = %e, "sign-in not checked");
            return Err(e.into());
        }
    };
    attempt.end(role.is_none());
    // The actor: the name as typed for a refusal, the account's stored spelling once known.
    let audit = |action: &'static str, name: String, target: &'static str| {
        let (s, remote) = (s.clone(), remote.clone());
        async move {
            s.registry
                .audit(
                    AuditEntry {
                        actor: &name,
                        action,
                        patient_id: None,
                        target,
                        remote: &remote,
                    },
                    now_ms(),
                )
                .await
        }
    };
    if role.is_none() {
        tracing::info!(%remote, "failed sign-in");
        // A disabled account is refused in the same words as a wrong password (the answer
        // must not tell which accounts exist or are disabled: docs/security.md); the audit
        // line, which only admins read, says so.
        let target = if s.registry.is_disabled(&body.username).await? {
            "session (account disabled)"
        } else {
            "session"
        };
        audit("session.refused", body.username.clone(), target).await?;
        return Err(ApiError::UnauthorizedBecause(
            "wrong username or password".into(),
        ));
    }
    throttle.succeeded(&user_key);
    if let Some(old) = cookie(&headers, SESSION_COOKIE) {
        s.registry.end_session(old, None).await?;
    }
    let lifetime_ms = i64::try_from(s.session_lifetime.as_millis()).unwrap_or(i64::MAX / 2);
    let (token, session) = s
        .registry
        .create_session(&body.username, now_ms(), lifetime_ms)
        .await?;
    audit("session.started", session.user.name.clone(), "session").await?;
    tracing::info!(user = %session.user.name, %remote, "signed in");
    Ok((
        [(
            header::SET_COOKIE,
            set_cookie(&s, &token, lifetime_ms / 1000),
        )],
        Json(session_body(&s, &session).await?),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PasswordChange {
    current_password: String,
    new_password: String,
}

/// `POST /session/password {"current_password","new_password"}`: the signed-in user chooses a
/// new password (the way out of a temporary one). Every session of theirs ends with the change
/// and its audit line (`user.password_change`); this one is replaced by a new session, in the
/// cookie and the answer (the same as sign-in's). A session only: an API token or the
/// bootstrap token has no password to change.
pub(super) async fn change_password(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    body: Result<Json<PasswordChange>, JsonRejection>,
) -> ApiResult<Response> {
    if p.session_token.is_none() {
        return Err(ApiError::Forbidden(
            "a password is changed from a signed-in session".into(),
        ));
    }
    let Json(b) = body?;
    let user = s
        .registry
        .change_own_password(
            &p.name,
            &b.current_password,
            &b.new_password,
            &p.remote,
            |stored| {
                NewAuditLine::of(
                    &AuditEntry {
                        actor: stored,
                        action: "user.password_change",
                        patient_id: None,
                        target: &format!("user/{stored}"),
                        remote: &p.remote,
                    },
                    now_ms(),
                )
            },
        )
        .await?;
    let lifetime_ms = i64::try_from(s.session_lifetime.as_millis()).unwrap_or(i64::MAX / 2);
    let (token, session) = s
        .registry
        .create_session(&user.name, now_ms(), lifetime_ms)
        .await?;
    tracing::info!(user = %user.name, remote = %p.remote, "password changed");
    Ok((
        [(
            header::SET_COOKIE,
            set_cookie(&s, &token, lifetime_ms / 1000),
        )],
        Json(session_body(&s, &session).await?),
    )
        .into_response())
}

/// `GET /session`: who is signed in (restores the dashboard after a reload).
pub(super) async fn current(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
) -> ApiResult<Json<serde_json::Value>> {
    match &p.session_token {
        Some(token) => {
            let session = s
                .registry
                .session(token, now_ms())
                .await?
                .ok_or(ApiError::Unauthorized)?;
            Ok(Json(session_body(&s, &session).await?))
        }
        None => Ok(Json(json!({
            "user": {"name": p.name, "role": p.role, "teams": []},
            "units": s.units,
            "csrf_token": null,
        }))),
    }
}

/// `DELETE /session`: sign out; the cookie is cleared and the session ends at once.
pub(super) async fn sign_out(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
) -> ApiResult<Response> {
    if let Some(token) = &p.session_token {
        // A running timer stops (and logs its time) when its user signs out.
        super::timer::stop_at_sign_out(&s, &p).await?;
        // The session ends with its audit line, or not at all.
        let line = NewAuditLine::of(
            &AuditEntry {
                actor: &p.name,
                action: "session.ended",
                patient_id: None,
                target: "session",
                remote: &p.remote,
            },
            now_ms(),
        );
        s.registry.end_session(token, Some(line)).await?;
        tracing::info!(user = %p.name, "signed out");
    }
    Ok((
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, set_cookie(&s, "", 0))],
    )
        .into_response())
}
