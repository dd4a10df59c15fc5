//! Who is asking, and what they may see.
//!
//! Two credentials get in:
//! - a dashboard session: the `vigil_session` cookie set at sign-in (HttpOnly, SameSite=Strict,
//!   Secure under TLS). A state-changing request made with it must also carry the session's
//!   CSRF token in `X-CSRF-Token`;
//! - `Authorization: Bearer <token>`: `VIGIL_BOOTSTRAP_TOKEN`, an admin token for first set-up
//!   and automation that exists only while the variable is set. The live WebSocket also takes
//!   it as `?token=`, since browsers cannot set headers on a WebSocket.
//!
//! Without one of them, nothing under `/api/v1` answers but sign-in, and checking a video
//! visit's join link (`GET /visits/{id}/join` with `Authorization: Visit <token>`). An admin sees every
//! patient; a clinician sees the patients of their care teams and is refused (403) the rest,
//! and each such refusal is audited. A read-only API token may read and nothing else, on any
//! transport ([`Principal::may_act`]).
//!
//! Failed bearer tokens lock the caller's address; a live API token is verified before the
//! lock is looked at, so it is never locked out by another client's failures, while the
//! bootstrap token (chosen by a person) is compared only while the address is not locked. A
//! principal remembers the credential it came with, so an open socket can re-check it
//! (`super::recheck`).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::Response;
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::state::AppState;
use crate::domain::{PatientId, now_ms};
use crate::registry::{AuditEntry, Role};

/// The session cookie's name.
pub(crate) const SESSION_COOKIE: &str = "vigil_session";
/// The header that carries the CSRF token.
pub(crate) const CSRF_HEADER: &str = "x-csrf-token";

/// The authenticated caller, put in the request's extensions for handlers.
#[derive(Debug, Clone)]
pub(crate) struct Principal {
    pub(crate) name: String,
    pub(crate) role: Role,
    pub(crate) remote: String,
    /// The care teams whose patients a clinician sees; `None` for an admin (everyone).
    pub(crate) teams: Option<Arc<[String]>>,
    /// The session's token, when the caller came with the cookie (for sign-out, and for an
    /// open socket to re-check).
    pub(crate) session_token: Option<String>,
    /// The API token it came with, when it did (`None`: a session or the bootstrap token).
    pub(crate) api_token: Option<crate::registry::ApiToken>,
    /// When the credential stops working by itself (ms since the epoch): the session's or API
    /// token's expiry; `None` for the bootstrap token, which lasts as long as the process.
    pub(crate) expires_ms: Option<i64>,
    /// What was asked (`GET /api/v1/patients/p1`, without the query), for the audit line of a
    /// refusal.
    pub(crate) request: String,
}

impl Principal {
    /// Whether this caller may see a patient of `team`.
    pub(crate) fn sees_team(&self, team: Option<&str>) -> bool {
        match &self.teams {
            None => true,
            Some(mine) => team.is_some_and(|t| mine.iter().any(|m| m == t)),
        }
    }

    /// Whether this caller sees every patient (an admin).
    pub(crate) fn sees_all(&self) -> bool {
        self.teams.is_none()
    }

    /// Who the audit trail names: the username, and with an API token the token too
    /// (`nina (token:tok_…)`), so that a leaked token's use can be told from its owner's.
    pub(crate) fn actor(&self) -> String {
        match &self.api_token {
            Some(t) => crate::registry::token_actor(&self.name, &t.id),
            None => self.name.clone(),
        }
    }

    /// Refuses `what` (an action: a change, or taking part in a visit) to a read-only API
    /// token. Sessions and the bootstrap token may act as their role allows.
    pub(crate) fn may_act(&self, what: &str) -> Result<(), ApiError> {
        match &self.api_token {
            Some(t) if t.scope == crate::registry::Scope::Read => Err(ApiError::Forbidden(
                format!("API token {} is read-only: it cannot {what}", t.id),
            )),
            _ => Ok(()),
        }
    }
}

/// 404 for no such patient, 403 for a patient of another care team. A refusal is written to
/// the audit trail (`access.refused`, what was asked as the target); if that line cannot be
/// written the request is refused all the same, and the failure logged.
pub(crate) async fn check_patient(
    s: &AppState,
    p: &Principal,
    id: &PatientId,
) -> Result<(), ApiError> {
    let team = s.registry.patient_team(id.clone()).await?;
    if p.sees_team(team.as_deref()) {
        return Ok(());
    }
    tracing::info!(user = %p.name, patient_id = %id, "patient of another care team refused");
    let entry = AuditEntry {
        actor: &p.actor(),
        action: "access.refused",
        patient_id: Some(id),
        target: &p.request,
        remote: &p.remote,
    };
    if let Err(e) = s.registry.audit(entry, now_ms()).await {
        tracing::error!(user = %p.name, error = %e, "the audit line of a refused request was not written");
    }
    Err(ApiError::Forbidden(
        "this patient is not on one of your care teams".into(),
    ))
}

/// The value of one cookie in the request.
pub(crate) fn cookie<'a>(req: &'a axum::http::HeaderMap, name: &str) -> Option<&'a str> {
    req.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The method and path asked (never the query: the live feed's token may be in it).
fn request_of(req: &Request) -> String {
    let path = req
        .extensions()
        .get::<axum::extract::OriginalUri>()
        .map_or_else(|| req.uri().path(), |u| u.0.path());
    format!("{} {path}", req.method())
}

fn remote_of(req: &Request) -> String {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "unknown".to_owned(), |c| c.0.ip().to_string())
}

fn bearer<'a>(headers: &'a HeaderMap, uri: &'a axum::http::Uri) -> Option<&'a str> {
    let header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    if header.is_some() {
        return header;
    }
    // Browsers cannot set headers on a WebSocket: the live feed takes the token in the query.
    if uri.path().ends_with("/live") {
        return uri
            .query()
            .into_iter()
            .flat_map(|q| q.split('&'))
            .find_map(|kv| kv.strip_prefix("token="));
    }
    None
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Middleware: 401 unless the request carries a valid credential; 403 for a state-changing
/// request made with the session cookie but without its CSRF token. Sign-in itself
/// (`POST /session`) is the one route that needs no credential.
pub(crate) async fn require(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if req.method() == Method::POST && req.uri().path() == "/session" {
        return Ok(next.run(req).await);
    }
    // A visit's join link authenticates this one route, and the handler checks it.
    let path = req.uri().path();
    if req.method() == Method::GET
        && path.starts_with("/visits/")
        && path.ends_with("/join")
        && req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("Visit "))
    {
        return Ok(next.run(req).await);
    }
    let signal =
        req.method() == Method::GET && path.starts_with("/visits/") && path.ends_with("/signal");
    let asked = Asked {
        remote: remote_of(&req),
        request: request_of(&req),
    };
    // A visit's signalling socket authenticates in its first message (a join link's token) when
    // the request carries no valid credential; with one, the handler gets the principal.
    if signal {
        if let Ok(p) = authenticate(&state, req.method(), req.uri(), req.headers(), asked).await {
            req.extensions_mut().insert(p);
        }
        return Ok(next.run(req).await);
    }
    let principal = authenticate(&state, req.method(), req.uri(), req.headers(), asked).await?;
    req.extensions_mut().insert(principal);
    Ok(next.run(req).await)
}

/// Where a request came from and what it asked.
struct Asked {
    remote: String,
    request: String,
}

/// The principal a request's bearer token or session cookie names (with its CSRF token on a
/// state-changing request).
///
/// Bearer tokens: an API token (`vgt_`, 256 random bits) is looked up first, by its hash, and
/// a live one is let in whatever the address's failures, so that one misconfigured client
/// behind a NAT does not lock out the others. Only failures count against the address. The
/// bootstrap token is operator-chosen and may be guessable, so it is compared only while the
/// address is not locked: a locked address gets 429 for anything but a live API token.
async fn authenticate(
    state: &AppState,
    method: &Method,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    asked: Asked,
) -> Result<Principal, ApiError> {
    let Asked { remote, request } = asked;
    let principal = if let Some(token) = bearer(headers, uri) {
        let api_token = if token.starts_with(crate::registry::TOKEN_PREFIX) {
            state.registry.api_token(token, now_ms()).await?
        } else {
            None
        };
        let key = [format!("bearer:{remote}")];
        match api_token {
            Some((t, user)) => {
                let p = Principal {
                    teams: (user.role != Role::Admin).then(|| Arc::from(user.teams.clone())),
                    name: user.name,
                    role: user.role,
                    remote,
                    session_token: None,
                    expires_ms: Some(t.expires_ms),
                    api_token: Some(t),
                    request,
                };
                if !is_safe(method) {
                    p.may_act("change anything")?;
                }
                p
            }
            None => {
                if let Some(wait) = state.throttle.wait(&key, std::time::Instant::now()) {
                    return Err(ApiError::too_many(
                        "too many requests with a bad token",
                        wait,
                    ));
                }
                match &state.bootstrap {
                    Some(b) if b.matches(token) => Principal {
                        name: "bootstrap".into(),
                        role: Role::Admin,
                        remote,
                        teams: None,
                        session_token: None,
                        api_token: None,
                        expires_ms: None,
                        request,
                    },
                    _ => {
                        tracing::info!(%remote, path = %uri.path(), "bad, expired or revoked bearer token refused");
                        state.throttle.failed(&key, std::time::Instant::now());
                        return Err(ApiError::Unauthorized);
                    }
                }
            }
        }
    } else if let Some(token) = cookie(headers, SESSION_COOKIE) {
        let Some(session) = state.registry.session(token, now_ms()).await? else {
            tracing::debug!(%remote, "expired or unknown session refused");
            return Err(ApiError::Unauthorized);
        };
        // A temporary password (a reset) must be replaced before anything else: the session may
        // say who it is, end, or change the password.
        if session.user.must_change_password
            && !matches!(
                (method.as_str(), uri.path()),
                ("GET" | "DELETE", "/session") | ("POST", "/session/password")
            )
        {
            return Err(ApiError::Forbidden(
                "choose a new password first: your password is a temporary one (POST /api/v1/session/password)".into(),
            ));
        }
        if !is_safe(method) {
            let sent = headers
                .get(CSRF_HEADER)
                .map(|v| v.as_bytes())
                .unwrap_or_default();
            if !bool::from(sent.ct_eq(session.csrf.as_bytes())) {
                tracing::info!(user = %session.user.name, %remote, "request without a valid CSRF token refused");
                return Err(ApiError::Forbidden(
                    "missing or wrong X-CSRF-Token header; reload the page".into(),
                ));
            }
        }
        Principal {
            teams: (session.user.role != Role::Admin)
                .then(|| Arc::from(session.user.teams.clone())),
            name: session.user.name,
            role: session.user.role,
            remote,
            session_token: Some(token.to_owned()),
            api_token: None,
            expires_ms: Some(session.expires_ms),
            request,
        }
    } else {
        tracing::debug!(%remote, path = %uri.path(), "unauthenticated API request refused");
        return Err(ApiError::Unauthorized);
    };
    Ok(principal)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(teams: Option<&[&str]>) -> Principal {
        Principal {
            name: "u".into(),
            role: if teams.is_some() {
                Role::Clinician
            } else {
                Role::Admin
            },
            remote: "127.0.0.1".into(),
            teams: teams.map(|t| t.iter().map(|s| (*s).to_owned()).collect()),
            session_token: None,
            api_token: None,
            expires_ms: None,
            request: "GET /api/v1/patients".into(),
        }
    }

    #[test]
    fn a_read_only_token_may_read_but_not_act_and_is_named_in_the_audit_trail() {
        let mut p = principal(Some(&["north"]));
        assert!(p.may_act("join a visit").is_ok(), "a session acts");
        assert_eq!(p.actor(), "u");
        p.api_token = Some(crate::registry::ApiToken {
            id: "tok_1".into(),
            user: "u".into(),
            label: "poller".into(),
            scope: crate::registry::Scope::Read,
            created_at: String::new(),
            expires_at: String::new(),
            revoked_at: None,
            expires_ms: 0,
        });
        match p.may_act("join a visit") {
            Err(ApiError::Forbidden(e)) => assert!(e.contains("tok_1 is read-only"), "{e}"),
            other => panic!("a read-only token acted: {other:?}"),
        }
        assert_eq!(p.actor(), "u (token:tok_1)");
    }

    #[test]
    fn a_clinician_sees_only_their_teams() {
        let c = principal(Some(&["north"]));
        assert!(c.sees_team(Some("north")));
        assert!(!c.sees_team(Some("south")));
        assert!(!c.sees_team(None), "a patient on no team is for admins");
        let a = principal(None);
        assert!(a.sees_team(Some("south")) && a.sees_team(None));
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = axum::http::HeaderMap::new();
        h.insert(
            header::COOKIE,
            "a=1; vigil_session=abc; b=2".parse().unwrap(),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&h, "c"), None);
    }
}
