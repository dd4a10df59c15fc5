//! `GET /healthz` and `GET /metrics` (Prometheus text), outside `/api/v1` and its sign-in.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::{Value, json};

use super::state::AppState;

/// How long `/healthz` waits for the database before calling it unreachable.
const DATABASE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// 200 `{"status":"ok"}` while this instance can take traffic; 503 with the reason while the
/// shared database (`[database] url`) cannot be reached, so a load balancer sends devices
/// and users to another instance. The embedded databases are always there.
pub(super) async fn healthz(State(s): State<AppState>) -> (StatusCode, Json<Value>) {
    let reason = match tokio::time::timeout(DATABASE_WAIT, s.registry.ping()).await {
        Ok(Ok(())) => return (StatusCode::OK, Json(json!({"status": "ok"}))),
        Ok(Err(e)) => format!("the database cannot be reached: {e}"),
        Err(_) => "the database did not answer within 2 s".to_owned(),
    };
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"status": "unavailable", "reason": reason})),
    )
}

pub(super) async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}
