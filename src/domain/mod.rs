//! The words Vigil's other modules speak: identifiers, metrics with their units and plausible
//! ranges, and the observation a reading becomes once it has been checked.
//!
//! Everything here is validated once, at the edge, and trusted inside: a [`DeviceId`] cannot
//! hold a character the contract forbids, and an [`Observation`]'s value is always in its
//! metric's canonical unit.

pub mod display;
mod ids;
mod metric;
pub mod partition;
mod time;
pub mod zone;

pub use display::DisplayUnits;
pub use ids::{DeviceId, IdError, PatientId};
pub use metric::{Metric, UnitError};
pub use time::{format_rfc3339, now_ms, parse_rfc3339};

/// A checked reading in its metric's canonical unit, ready to be stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub patient_id: PatientId,
    pub device_id: DeviceId,
    pub metric: Metric,
    pub value: f64,
    /// When it was measured, Unix milliseconds UTC.
    pub time_ms: i64,
}
