//! What a backend answers besides the writes (the writer does those): the same questions on
//! SQLite and PostgreSQL.

use super::types::{
    FedReadings, InfluxLine, ObservationQuery, SeriesPoint, Spooled, StoreError, StoredDeadLetter,
    StoredObservation,
};
use crate::domain::{DeviceId, Metric, PatientId};

/// The reads a backend answers (the writer does the writes).
#[async_trait::async_trait]
pub(super) trait Reads: Send + Sync {
    async fn latest(
        &self,
        patient: PatientId,
        metric: Metric,
    ) -> Result<Option<StoredObservation>, StoreError>;
    async fn observations(&self, q: ObservationQuery)
    -> Result<Vec<StoredObservation>, StoreError>;
    /// How many readings of the metric lie in `[from, to]`.
    async fn count_in(
        &self,
        patient: PatientId,
        metric: Metric,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<i64, StoreError>;
    /// The readings in `[from, to]` as points, oldest first.
    async fn points(
        &self,
        patient: PatientId,
        metric: Metric,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<SeriesPoint>, StoreError>;
    /// Buckets of `step_ms` from `from_ms` (mean, min, max, count), oldest first.
    async fn buckets(
        &self,
        patient: PatientId,
        metric: Metric,
        from_ms: i64,
        to_ms: i64,
        step_ms: i64,
    ) -> Result<Vec<SeriesPoint>, StoreError>;
    async fn count_observations(&self) -> Result<i64, StoreError>;
    /// When the device's latest reading of any of `metrics` was measured.
    async fn last_reading(
        &self,
        device: DeviceId,
        metrics: Vec<Metric>,
    ) -> Result<Option<i64>, StoreError>;
    /// Which devices sent the patient's readings measured in `[from, to)`, by quarter hour:
    /// `(device, quarter-hour start)`, each once, in no order.
    async fn quarter_hours(
        &self,
        patient: PatientId,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<(String, i64)>, StoreError>;
    async fn dead_letters(
        &self,
        device_id: Option<DeviceId>,
        limit: usize,
    ) -> Result<Vec<StoredDeadLetter>, StoreError>;
    async fn outbox_batch(&self, limit: usize) -> Result<Vec<InfluxLine>, StoreError>;
    async fn outbox_depth(&self) -> Result<i64, StoreError>;
    async fn influx_rejected(&self, limit: usize)
    -> Result<Vec<(i64, String, String)>, StoreError>;
    async fn fhir_spool_batch(&self, limit: usize) -> Result<Vec<Spooled>, StoreError>;
    async fn fhir_spool_depth(&self) -> Result<i64, StoreError>;
    /// Where a commit-order read of the readings starts now; `None` where there is no
    /// shared commit order to read (SQLite: one instance, fed by its own writer).
    async fn commit_horizon(&self) -> Result<Option<i64>, StoreError>;
    /// The readings of alert partitions `parts` written by transactions in `[from, until)`.
    async fn committed_in(
        &self,
        parts: Vec<u16>,
        from: i64,
        until: i64,
    ) -> Result<Option<FedReadings>, StoreError>;
}
