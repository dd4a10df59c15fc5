//! The `/api/v1` route table: which handler answers each path and method. The handlers live
//! in their own modules (one per resource), with what they share in `extract`.

use axum::Router;
use axum::routing::{get, patch, post, put};

use super::state::AppState;

pub(super) fn api() -> Router<AppState> {
    Router::new()
        .route(
            "/patients",
            post(super::patients::create_patient).get(super::patients::list_patients),
        )
        .route(
            "/patients/{id}",
            get(super::patients::get_patient).patch(super::record::update_patient),
        )
        .route(
            "/patients/{id}/discharge",
            post(super::discharge::discharge),
        )
        .route("/patients/{id}/readmit", post(super::discharge::readmit))
        .route(
            "/patients/{id}/care-plan",
            get(super::record::get_care_plan).put(super::record::put_care_plan),
        )
        .route(
            "/patients/{id}/enrollment",
            get(super::enrollment::get_enrollment).put(super::enrollment::put_enrollment),
        )
        .route(
            "/patients/{id}/time",
            get(super::enrollment::list_time).post(super::enrollment::add_time),
        )
        .route(
            "/patients/{id}/time/{entry}",
            patch(super::enrollment::change_time).delete(super::enrollment::delete_time),
        )
        .route(
            "/programs",
            get(super::enrollment::list_programmes).post(super::enrollment::add_programme),
        )
        .route(
            "/patients/{id}/setups",
            get(super::billing::list_setups).post(super::billing::add_setup),
        )
        .route(
            "/patients/{id}/billing",
            get(super::billing::patient_billing),
        )
        .route("/billing", get(super::billing::clinic_billing))
        .route("/worklist", get(super::worklist::worklist))
        .route("/patients/{id}/timer", post(super::timer::start))
        .route("/timer", get(super::timer::current))
        .route("/timer/stop", post(super::timer::stop))
        .route("/population", get(super::population::population))
        .route("/patients/{id}/notes", post(super::record::add_note))
        .route("/patients/{id}/record", get(super::record::record))
        .route("/care-plans", get(super::record::programme_plans))
        .route("/alerts", get(super::record::list_alerts))
        .route("/alerts/{id}", get(super::record::get_alert))
        .route("/alerts/ack", post(super::inbox::ack_many))
        .route("/alerts/{id}/ack", post(super::record::ack_alert))
        .route("/alerts/{id}/assign", post(super::inbox::assign))
        .route("/alerts/{id}/snooze", post(super::inbox::snooze))
        .route(
            "/alerts/{id}/notifications",
            get(super::notifications::alert_notifications),
        )
        .route("/alerts/{id}/resolve", post(super::record::resolve_alert))
        .route(
            "/ack-links/{token}",
            get(super::ack_links::show).post(super::ack_links::acknowledge),
        )
        .route("/deliveries", get(super::record::deliveries))
        .route(
            "/deliveries/{id}/retry",
            post(super::record::retry_delivery),
        )
        .route("/deliveries/retry", post(super::record::retry_deliveries))
        .route(
            "/patients/{id}/observations",
            get(super::readings::observations),
        )
        .route(
            "/patients/{id}/observations.csv",
            get(super::readings::observations_csv),
        )
        .route("/patients/{id}/summary", get(super::summary::summary))
        .route("/patients/{id}/agp", get(super::summary::agp))
        .route("/patients/{id}/news2", get(super::news2::news2))
        .route(
            "/devices",
            post(super::devices::create_device).get(super::devices::list_devices),
        )
        .route("/devices/{id}", get(super::devices::get_device))
        .route("/devices/{id}/revoke", post(super::devices::revoke_device))
        .route("/devices/{id}/rotate", post(super::devices::rotate_device))
        .route("/dead-letters", get(super::readings::dead_letters))
        .route("/influxdb/rejected", get(super::readings::influx_rejected))
        .route("/audit", get(super::audit::audit))
        .route("/audit/export", get(super::audit::audit_export))
        .route("/audit/verify", get(super::audit::audit_verify))
        .route("/profiles", get(super::devices::profiles))
        .route(
            "/session",
            get(super::session::current)
                .post(super::session::sign_in)
                .delete(super::session::sign_out),
        )
        .route("/session/password", post(super::session::change_password))
        .route("/live", get(super::live::live))
        .route("/panel", get(super::panel::panel))
        .route("/patients/{id}/series", get(super::panel::series))
        .route(
            "/users",
            get(super::admin::list_users).post(super::admin::create_user),
        )
        .route(
            "/users/{name}",
            axum::routing::patch(super::admin::update_user),
        )
        .route(
            "/users/{name}/password-reset",
            post(super::admin::reset_password),
        )
        .route(
            "/teams",
            get(super::admin::list_teams).post(super::admin::create_team),
        )
        .route(
            "/teams/{id}/on-call",
            get(super::oncall::get_on_call).put(super::oncall::put_on_call),
        )
        .route("/teams/{id}/rota", put(super::oncall::put_rota))
        .route("/teams/{id}/policy", put(super::oncall::put_policy))
        .route(
            "/tokens",
            get(super::admin::list_tokens).post(super::admin::create_token),
        )
        .route(
            "/tokens/{id}",
            axum::routing::delete(super::admin::revoke_token),
        )
        .route("/visits", post(super::visits::create))
        .route("/visits/{id}", get(super::visits::get))
        .route("/visits/{id}/end", post(super::visits::end))
        .route("/visits/{id}/join", get(super::visits::join))
        .route("/visits/{id}/links", post(super::visits::link))
        .route("/visits/{id}/signal", get(super::signal::signal))
}
