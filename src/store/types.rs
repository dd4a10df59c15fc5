//! What the store takes and gives back, the same on both backends.

use std::time::Instant;

use crate::domain::{DeviceId, Metric, Observation, PatientId};

/// Why the store could not do what was asked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("the store is shutting down")]
    Closed,
    #[error("could not open the store at {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("store write failed: {0}")]
    Write(String),
    /// The database found no room on its disk; the write was rolled back whole.
    #[error("the data directory's disk is full: nothing was stored")]
    Full,
    #[error("store read failed: {0}")]
    Read(String),
}

/// What one write request achieved once committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Committed {
    /// Rows that were new.
    pub inserted: usize,
    /// Rows already stored (a redelivery), left as they were.
    pub duplicates: usize,
}

/// A payload Vigil refused, kept with the reason.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub time_ms: i64,
    pub device_id: DeviceId,
    pub patient_id: Option<PatientId>,
    pub topic: String,
    pub reason: String,
    pub payload: Vec<u8>,
}

/// A dead letter as read back.
#[derive(Debug, Clone)]
pub struct StoredDeadLetter {
    pub id: i64,
    pub time_ms: i64,
    pub device_id: String,
    pub topic: String,
    pub reason: String,
    pub payload: Vec<u8>,
}

/// An observation as read back.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredObservation {
    pub time_ms: i64,
    pub metric: Metric,
    pub value: f64,
    pub device_id: String,
    /// When Vigil received it (its own clock; `time_ms` is the device's).
    pub received_ms: i64,
}

/// A range query over one patient's observations.
#[derive(Debug, Clone)]
pub struct ObservationQuery {
    pub patient_id: PatientId,
    pub metric: Option<Metric>,
    pub from_ms: i64,
    pub to_ms: i64,
    pub limit: usize,
    /// The latest `limit` readings, newest first, instead of the earliest, oldest first.
    pub newest_first: bool,
}

/// Observations newly stored by one commit, and when it committed (Vigil's clock, ms).
#[derive(Debug, Clone)]
pub struct CommittedBatch {
    pub committed_ms: i64,
    pub at: Instant,
    pub observations: Vec<Observation>,
}

/// A chart's worth of one metric (see [`super::Store::series`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The bucket width; 0 when the points are the readings themselves.
    pub step_ms: i64,
    pub points: Vec<SeriesPoint>,
}

/// One reading, or one bucket of readings starting at `time_ms`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SeriesPoint {
    pub time_ms: i64,
    pub mean: f64,
    pub min: f64,
    pub max: f64,
    pub count: i64,
}

/// One reading in the FHIR spool: its spool id, and the reading (`None` when it is no longer
/// stored: retention removed it first).
pub type Spooled = (i64, Option<Observation>);

/// Readings in commit order (PostgreSQL; see [`super::Store::committed_in`]), and where the
/// next read starts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FedReadings {
    pub readings: Vec<FedReading>,
    pub next: i64,
}

/// One reading of [`FedReadings`]: with when Vigil received it and the transaction that wrote
/// it (to order it among other changes read up to the same horizon).
#[derive(Debug, Clone, PartialEq)]
pub struct FedReading {
    pub observation: Observation,
    pub received_ms: i64,
    pub tx: i64,
}

/// One line waiting for InfluxDB: its id and the line.
pub type InfluxLine = (i64, String);

/// How the store is set up, the same for both backends.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Most rows one commit takes.
    pub batch_max: usize,
    /// Writes queued for the writer before producers wait.
    pub queue_capacity: usize,
    /// The InfluxDB measurement: with it, every newly stored observation also gets a
    /// line-protocol line in the outbox, in the same transaction.
    pub influx_measurement: Option<String>,
    /// Whether every newly stored observation also goes to the FHIR spool, in the same
    /// transaction (`fhir.all_readings`).
    pub fhir_readings: bool,
}

impl StoreOptions {
    /// Options with no outward copies.
    pub fn new(batch_max: usize, queue_capacity: usize) -> StoreOptions {
        StoreOptions {
            batch_max,
            queue_capacity,
            influx_measurement: None,
            fhir_readings: false,
        }
    }
}
