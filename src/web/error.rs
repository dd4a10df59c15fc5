//! The API's error type: a status and one sentence of JSON, `{"error": "..."}`. Causes of 5xx
//! are logged, never sent: no internals or patient data leave in an error.

use std::time::Duration;

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::registry::RegistryError;
use crate::store::StoreError;

/// An error answered to an API client.
#[derive(Debug)]
pub enum ApiError {
    BadRequest(String),
    Unauthorized,
    /// 401 with a reason of its own (a failed sign-in).
    UnauthorizedBecause(String),
    Forbidden(String),
    NotFound(String),
    Conflict(String),
    Unavailable(String),
    /// 503: the data directory's disk is full (said as it is: an operator must act).
    DiskFull,
    /// 429 with `Retry-After` (seconds): this caller must wait ([`ApiError::too_many`]).
    TooMany {
        retry_after_s: u64,
        message: String,
    },
    /// 503 with `Retry-After` (seconds): too much is under way for anyone to be served now.
    Busy {
        retry_after_s: u64,
        message: String,
    },
    Internal(String),
    /// An extractor's own refusal (413 too large, 415 wrong content type, 400 …).
    Rejected(StatusCode, String),
    /// 400 with where the problem is, beside the sentence: `{"error", "rule", "field"}` for a
    /// care plan, so a form can show it next to the field to blame.
    Invalid {
        message: String,
        at: serde_json::Value,
    },
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, msg) = match self {
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "authentication required: sign in, or send Authorization: Bearer <token>"
                    .to_owned(),
            ),
            ApiError::UnauthorizedBecause(m) => (StatusCode::UNAUTHORIZED, m),
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, m),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, m),
            ApiError::Conflict(m) => (StatusCode::CONFLICT, m),
            ApiError::Rejected(status, m) => (status, m),
            ApiError::Invalid { message, mut at } => {
                if let Some(o) = at.as_object_mut() {
                    o.insert("error".into(), serde_json::Value::String(message));
                }
                return (StatusCode::BAD_REQUEST, Json(at)).into_response();
            }
            ApiError::TooMany {
                retry_after_s,
                message,
            } => return retry_later(StatusCode::TOO_MANY_REQUESTS, retry_after_s, message),
            ApiError::Busy {
                retry_after_s,
                message,
            } => return retry_later(StatusCode::SERVICE_UNAVAILABLE, retry_after_s, message),
            ApiError::DiskFull => {
                tracing::warn!("request refused: the data directory's disk is full");
                (StatusCode::SERVICE_UNAVAILABLE, DISK_FULL.to_owned())
            }
            ApiError::Unavailable(m) => {
                tracing::warn!(cause = %m, "request failed: service unavailable");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the service is unavailable; try again shortly".to_owned(),
                )
            }
            ApiError::Internal(m) => {
                tracing::error!(cause = %m, "request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error; it has been logged".to_owned(),
                )
            }
        };
        let mut resp = (status, Json(serde_json::json!({ "error": msg }))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

impl ApiError {
    /// 429: `why`, and when to try again (`wait`, in whole seconds, at least 1).
    pub(crate) fn too_many(why: &str, wait: Duration) -> ApiError {
        let secs = wait.as_secs().max(1);
        ApiError::TooMany {
            retry_after_s: secs,
            message: format!("{why}; try again in {secs} s"),
        }
    }
}

/// `status` with `Retry-After` and the message.
fn retry_later(status: StatusCode, retry_after_s: u64, message: String) -> Response {
    let mut resp = (status, Json(serde_json::json!({ "error": message }))).into_response();
    if let Ok(v) = HeaderValue::from_str(&retry_after_s.to_string()) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

/// How long a caller turned away by busy password checks waits: a check takes tens of
/// milliseconds, so the queue has moved on by then.
const PASSWORDS_BUSY_RETRY_S: u64 = 1;

/// The answer while the data directory's disk is full (503: the request may succeed later).
const DISK_FULL: &str = "the gateway's disk is full: nothing can be stored or audited until an \
operator frees space; try again later";

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::Exists(m) => ApiError::Conflict(format!("{m} already exists")),
            RegistryError::NotFound(m) => ApiError::NotFound(format!("{m} not found")),
            RegistryError::Conflict(m) => ApiError::Conflict(m),
            RegistryError::Invalid(m) => ApiError::BadRequest(m),
            RegistryError::Db(m) => ApiError::Internal(m),
            // Only the alert engine writes under a lease; an API caller never meets it.
            RegistryError::Fenced(m) => ApiError::Internal(format!("lease {m} moved on")),
            RegistryError::Full => ApiError::DiskFull,
            RegistryError::Busy => ApiError::Busy {
                retry_after_s: PASSWORDS_BUSY_RETRY_S,
                message: format!(
                    "too many passwords are being checked; try again in {PASSWORDS_BUSY_RETRY_S} s"
                ),
            },
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Closed => ApiError::Unavailable(e.to_string()),
            StoreError::Full => ApiError::DiskFull,
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        // A body that parses but does not fit (422 in axum) is, for this API, a bad request.
        let status = match r.status() {
            StatusCode::UNPROCESSABLE_ENTITY => StatusCode::BAD_REQUEST,
            other => other,
        };
        ApiError::Rejected(status, format!("invalid JSON body: {}", r.body_text()))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::BadRequest(format!("invalid query: {}", r.body_text()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_password_checks_and_throttles_say_when_to_try_again() {
        for (e, status, retry) in [
            (
                ApiError::from(RegistryError::Busy),
                StatusCode::SERVICE_UNAVAILABLE,
                "1",
            ),
            (
                ApiError::too_many("too many tries", Duration::from_millis(2_500)),
                StatusCode::TOO_MANY_REQUESTS,
                "2",
            ),
            (
                ApiError::too_many("too many tries", Duration::ZERO),
                StatusCode::TOO_MANY_REQUESTS,
                "1",
            ),
        ] {
            let resp = e.into_response();
            assert_eq!(resp.status(), status);
            assert_eq!(resp.headers()[header::RETRY_AFTER], retry);
        }
    }
}
