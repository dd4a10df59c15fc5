//! The HTTP side: `/healthz`, `/metrics`, the JSON API under `/api/v1` (with the live
//! WebSocket at `/api/v1/live`), the clinician dashboard at `/` and the video visit page at
//! `/visit/{id}`.
//!
//! Every `/api/v1` route but sign-in sits behind [`auth::require`]; an unknown path under it
//! answers 401 to a stranger, not 404, so the route table cannot be probed. Every read of a
//! patient's data writes a line to the audit trail before the data is sent. Every response
//! carries the security headers of [`assets::security_headers`].

mod ack_links;
mod admin;
mod assets;
mod audit;
mod auth;
mod billing;
mod bootstrap;
mod conn;
mod devices;
mod discharge;
mod enrollment;
mod error;
mod extract;
mod health;
mod inbox;
mod live;
mod live_hub;
mod login_throttle;
mod news2;
mod notifications;
mod oncall;
mod panel;
mod panel_cache;
mod patients;
mod population;
mod readings;
mod recheck;
mod record;
mod relay_tls;
mod routes;
mod seen;
mod serve;
mod session;
mod signal;
mod signal_relay;
mod state;
mod summary;
mod timer;
mod visits;
mod worklist;

use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::get;
use tower_http::timeout::TimeoutLayer;

pub use assets::CSP;
pub use bootstrap::{BootstrapError, BootstrapToken};
pub use conn::Deadlines;
pub use error::ApiError;
pub use live_hub::LiveHub;
pub use login_throttle::LoginThrottle;
pub use panel_cache::PanelCache;
pub use relay_tls::{RelayTls, relay_tls};
pub use seen::SeenLedger;
pub use serve::serve;
pub(crate) use signal::end_emptied_visits;
pub use state::AppState;

/// The whole HTTP application.
pub fn router(state: AppState, max_body: usize, timeout: Duration) -> Router {
    let api = routes::api()
        .fallback(|| async { ApiError::NotFound("no such API route".into()) })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require,
        ));
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/metrics", get(health::metrics))
        .route("/", get(assets::index))
        .route("/visit/{id}", get(assets::visit_page))
        .route("/assets/{*path}", get(assets::asset))
        .nest("/api/v1", api)
        .fallback(|| async { ApiError::NotFound("not found".into()) })
        .method_not_allowed_fallback(|| async {
            (
                StatusCode::METHOD_NOT_ALLOWED,
                axum::Json(serde_json::json!({"error": "method not allowed on this route"})),
            )
        })
        .layer(axum::middleware::from_fn(assets::security_headers))
        .layer(axum::middleware::from_fn_with_state(
            state.secure_cookies,
            assets::strict_transport_security,
        ))
        // The panel of 500 patients is ~2 MB of JSON, ~10% of that gzipped.
        .layer(
            tower_http::compression::CompressionLayer::new()
                .quality(tower_http::CompressionLevel::Fastest),
        )
        .layer(DefaultBodyLimit::max(max_body))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        .with_state(state)
}
