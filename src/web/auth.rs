//! Who is asking: bearer tokens. Until dashboard sessions and API tokens exist, the only
//! credential is `VIGIL_BOOTSTRAP_TOKEN`, an admin token for first set-up and automation that
//! exists only while the variable is set. Without it, nothing gets in.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{ApiError, AppState};
use crate::registry::Role;

/// The bootstrap token, kept only as its SHA-256 so it is compared in constant time and never
/// printed.
pub struct BootstrapToken([u8; 32]);

impl BootstrapToken {
    /// `None` for an empty secret: an empty token must never let anyone in.
    pub fn new(secret: &str) -> Option<BootstrapToken> {
        (!secret.is_empty()).then(|| BootstrapToken(Sha256::digest(secret.as_bytes()).into()))
    }

    fn matches(&self, presented: &str) -> bool {
        let h: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        h.ct_eq(&self.0).into()
    }
}

/// The authenticated caller, put in the request's extensions for handlers.
#[derive(Debug, Clone)]
pub(crate) struct Principal {
    pub(crate) name: String,
    pub(crate) role: Role,
    pub(crate) remote: String,
}

/// Middleware: 401 unless the request carries a valid credential.
pub(crate) async fn require(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let remote = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "unknown".to_owned(), |c| c.0.ip().to_string());
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let principal = match (token, &state.bootstrap) {
        (Some(t), Some(b)) if b.matches(t) => Principal {
            name: "bootstrap".into(),
            role: Role::Admin,
            remote,
        },
        _ => {
            tracing::debug!(%remote, path = %req.uri().path(), "unauthenticated API request refused");
            return Err(ApiError::Unauthorized);
        }
    };
    req.extensions_mut().insert(principal);
    Ok(next.run(req).await)
}
