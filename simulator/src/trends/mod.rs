//! Trend rules measured on simulated patients: the series and their ground truth ([`cases`]) and
//! the arithmetic of the report ([`report`]) — sensitivity, false alerts per patient-month, lead
//! time against the fixed-threshold rule for the same condition.
//!
//! Both are pure and deterministic for a seed. Neither evaluates a rule: the figures must be
//! Vigil's own, so the harness that replays these series through the gateway's alert engine
//! lives with the gateway (`examples/trends.rs`, `cargo run --example trends`), which may
//! depend on this crate as a dev-dependency while this crate depends on the gateway only
//! through its public contract (docs/alerts.md, "Measured on the simulator", says why the
//! engine is replayed in-process rather than driven over MQTT).

pub mod cases;
pub mod report;
