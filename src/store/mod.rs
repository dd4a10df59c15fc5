//! The time-series store: observations and dead letters, durably.
//!
//! Two backends behind one handle, [`Store`]: SQLite (`store.db` in the data directory, WAL
//! mode, `synchronous=FULL`: the embedded default) and PostgreSQL (with `[database] url`, so
//! that several instances share every reading; observations partitioned by month, so retention
//! drops whole partitions). Either way exactly one writer per instance owns the writes:
//! producers send them over a bounded channel; the writer takes everything waiting (up to
//! `batch_max` rows), commits it in one transaction (group commit: one flush for the batch) and
//! only then answers each producer. A reading is acknowledged to its device after that answer,
//! never before.
//!
//! Observations are keyed by (device, metric, time): a redelivered reading is ignored, not
//! stored twice. Reads never go through the writer.
//!
//! It must never: acknowledge before the commit, hold a lock across an await, or buffer without
//! bound (a full channel makes producers wait, which slows the devices' acknowledgements).

mod everyone;
pub mod influx;
mod line_protocol;
mod postgres;
mod reads;
mod sqlite;
mod types;
mod writer;

use std::path::Path;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

pub(crate) use sqlite::{is_disk_full, open_db};

/// Moves a data directory's readings (`store_db`, a SQLite store) into the empty readings
/// schema of the PostgreSQL database behind `pool`, in one transaction (for `vigil db
/// migrate`); the rows moved per table.
pub async fn move_to_postgres(
    store_db: std::path::PathBuf,
    pool: deadpool_postgres::Pool,
) -> Result<Vec<(&'static str, u64)>, StoreError> {
    postgres::import::import(store_db, pool).await
}
pub use types::{
    Committed, CommittedBatch, DeadLetter, FedReading, FedReadings, InfluxLine, ObservationQuery,
    Series, SeriesPoint, Spooled, StoreError, StoreOptions, StoredDeadLetter, StoredObservation,
};

use crate::domain::{DeviceId, Metric, Observation, PatientId};
use crate::telemetry::Metrics;
use reads::Reads;
use writer::{Committer, Write, WriterState};

/// Batches the feed holds for a slow subscriber before it lags (and must resync).
const FEED_CAPACITY: usize = 4096;

/// A handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    tx: mpsc::Sender<Write>,
    reads: Arc<dyn Reads>,
    writer: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
    /// Woken after a commit that added outbox lines.
    outbox_ready: Arc<tokio::sync::Notify>,
    /// Every batch of newly stored observations, after its commit.
    feed: tokio::sync::broadcast::Sender<Arc<CommittedBatch>>,
    /// Every instance's newly stored observations: `feed` itself on SQLite; on PostgreSQL
    /// filled by [`Store::feed_everyone`].
    everyone: tokio::sync::broadcast::Sender<Arc<CommittedBatch>>,
    /// Which database holds the readings: "sqlite" or "postgresql".
    backend: &'static str,
}

impl Store {
    /// Opens (or creates) `store.db` in `dir` and starts the writer thread.
    pub fn open(
        dir: &Path,
        batch_max: usize,
        queue_capacity: usize,
        metrics: Metrics,
    ) -> Result<Store, StoreError> {
        Store::open_sqlite(dir, StoreOptions::new(batch_max, queue_capacity), metrics)
    }

    /// Opens (or creates) `store.db` in `dir` with `options` and starts the writer thread.
    pub fn open_sqlite(
        dir: &Path,
        options: StoreOptions,
        metrics: Metrics,
    ) -> Result<Store, StoreError> {
        let (committer, reads) = sqlite::open(dir, &options)?;
        Store::start(committer, Arc::new(reads), options, metrics, "sqlite")
    }

    /// The store in the PostgreSQL database behind `pool` (shared with the registry), its
    /// schema brought up to date; starts the writer thread.
    pub async fn open_postgres(
        pool: deadpool_postgres::Pool,
        options: StoreOptions,
        metrics: Metrics,
    ) -> Result<Store, StoreError> {
        let (committer, reads) = postgres::open(pool, &options).await?;
        Store::start(committer, Arc::new(reads), options, metrics, "postgresql")
    }

    fn start(
        committer: impl Committer,
        reads: Arc<dyn Reads>,
        options: StoreOptions,
        metrics: Metrics,
        backend: &'static str,
    ) -> Result<Store, StoreError> {
        let (tx, rx) = mpsc::channel(options.queue_capacity.max(1));
        let outbox_ready = Arc::new(tokio::sync::Notify::new());
        let (feed, _) = tokio::sync::broadcast::channel(FEED_CAPACITY);
        let state = WriterState {
            batch_max: options.batch_max.max(1),
            metrics,
            influx: options.influx_measurement.is_some(),
            outbox_ready: outbox_ready.clone(),
            feed: feed.clone(),
        };
        let writer = std::thread::Builder::new()
            .name("vigil-store-writer".into())
            .spawn(move || writer::run(committer, rx, state))
            .map_err(|e| StoreError::Open {
                path: backend.into(),
                reason: e.to_string(),
            })?;
        let everyone = if backend == "postgresql" {
            tokio::sync::broadcast::channel(FEED_CAPACITY).0
        } else {
            feed.clone()
        };
        Ok(Store {
            tx,
            reads,
            writer: Arc::new(Mutex::new(Some(writer))),
            outbox_ready,
            feed,
            everyone,
            backend,
        })
    }

    /// Which database holds the readings: "sqlite" or "postgresql".
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// Subscribes to the observations each commit of this instance newly stores
    /// (redeliveries excluded), in commit order. A subscriber that falls more than a few
    /// thousand commits behind gets `Lagged` and must rebuild from the store.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<CommittedBatch>> {
        self.feed.subscribe()
    }

    /// Subscribes to the observations every instance sharing the database newly stores, in
    /// commit order (for displays: the live feed, the panel's cache). On SQLite, this
    /// instance's ([`Store::subscribe`]); on PostgreSQL, while [`Store::feed_everyone`] runs.
    /// A subscriber that falls behind gets `Lagged`, as with [`Store::subscribe`].
    pub fn subscribe_everyone(&self) -> tokio::sync::broadcast::Receiver<Arc<CommittedBatch>> {
        self.everyone.subscribe()
    }

    /// On PostgreSQL, feeds [`Store::subscribe_everyone`] until `stop`: what every instance
    /// commits, read in commit order, woken by the database's notifications (see
    /// `src/store/everyone.rs`). Returns at once on SQLite.
    pub async fn feed_everyone(
        self,
        heard: tokio::sync::broadcast::Receiver<crate::pg::listen::Heard>,
        stop: tokio_util::sync::CancellationToken,
    ) {
        if self.backend != "postgresql" {
            return;
        }
        let tx = self.everyone.clone();
        everyone::run(self.reads.clone(), tx, heard, stop).await;
    }

    /// Waits until a commit has added outbox lines (or returns at once if one did since the
    /// last call).
    pub async fn outbox_ready(&self) {
        self.outbox_ready.notified().await;
    }

    async fn send(&self, w: Write) -> Result<(), StoreError> {
        self.tx.send(w).await.map_err(|_| StoreError::Closed)
    }

    async fn wait(
        rx: oneshot::Receiver<Result<Committed, StoreError>>,
    ) -> Result<Committed, StoreError> {
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Queues observations for the next commit; the returned receiver answers after it.
    /// Waits (backpressure) while the writer's queue is full.
    pub async fn submit(
        &self,
        rows: Vec<Observation>,
        received_ms: i64,
    ) -> Result<oneshot::Receiver<Result<Committed, StoreError>>, StoreError> {
        let (done, rx) = oneshot::channel();
        self.send(Write::Observations {
            rows,
            received_ms,
            done,
        })
        .await?;
        Ok(rx)
    }

    /// Stores observations and waits for the commit.
    pub async fn insert(
        &self,
        rows: Vec<Observation>,
        received_ms: i64,
    ) -> Result<Committed, StoreError> {
        Store::wait(self.submit(rows, received_ms).await?).await
    }

    /// Queues a dead letter for the next commit.
    pub async fn submit_dead_letter(
        &self,
        letter: DeadLetter,
    ) -> Result<oneshot::Receiver<Result<Committed, StoreError>>, StoreError> {
        let (done, rx) = oneshot::channel();
        self.send(Write::DeadLetter { letter, done }).await?;
        Ok(rx)
    }

    /// Deletes observations and dead letters older than `before_ms`; returns how many (on
    /// PostgreSQL, whole months' partitions are dropped and counted as their rows).
    pub async fn prune(&self, before_ms: i64) -> Result<usize, StoreError> {
        let (done, rx) = oneshot::channel();
        self.send(Write::Prune { before_ms, done }).await?;
        Ok(Store::wait(rx).await?.inserted)
    }

    /// Removes the InfluxDB lines `ids` (delivered or refused); `rejected` lines are kept
    /// with `reason`.
    pub async fn outbox_done(
        &self,
        ids: Vec<i64>,
        rejected: Vec<String>,
        reason: String,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        let (done, rx) = oneshot::channel();
        self.send(Write::OutboxDone {
            ids,
            rejected,
            reason,
            at_ms,
            done,
        })
        .await?;
        Store::wait(rx).await.map(|_| ())
    }

    /// Removes the readings `ids` from the FHIR spool (once they are in the outbox).
    pub async fn fhir_spool_done(&self, ids: Vec<i64>) -> Result<(), StoreError> {
        let (done, rx) = oneshot::channel();
        self.send(Write::FhirSpoolDone { ids, done }).await?;
        Store::wait(rx).await.map(|_| ())
    }

    /// Stops the writer after it has committed everything queued before this call, and waits
    /// for it. Writes submitted afterwards fail with [`StoreError::Closed`].
    pub async fn close(&self) {
        let _ = self.tx.send(Write::Shutdown).await;
        let handle = self.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(h) = handle {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
    }

    /// The latest observation of a patient's metric, if any.
    pub async fn latest(
        &self,
        patient: PatientId,
        metric: Metric,
    ) -> Result<Option<StoredObservation>, StoreError> {
        self.reads.latest(patient, metric).await
    }

    /// Observations of one patient in `[from, to]`: the first `limit` oldest first, or the last
    /// `limit` newest first.
    pub async fn observations(
        &self,
        q: ObservationQuery,
    ) -> Result<Vec<StoredObservation>, StoreError> {
        self.reads.observations(q).await
    }

    /// When `device`'s latest reading of any of `metrics` (its profile's) was measured: one
    /// index lookup per metric.
    pub async fn last_reading(
        &self,
        device: DeviceId,
        metrics: Vec<Metric>,
    ) -> Result<Option<i64>, StoreError> {
        self.reads.last_reading(device, metrics).await
    }

    /// Which devices sent the patient's readings measured in `[from, to)`, by quarter hour:
    /// `(device, quarter-hour start ms)`, each once, in no order. Every UTC offset in use is a
    /// whole number of quarter hours, so a quarter hour lies within one calendar day in any
    /// zone: the days of data a billing period has follow from these without reading every
    /// reading (docs/billing.md).
    pub async fn quarter_hours(
        &self,
        patient: PatientId,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        self.reads.quarter_hours(patient, from_ms, to_ms).await
    }

    /// A patient's metric over `[from, to]` for a chart of about `points` points, oldest first:
    /// the readings themselves when there are no more than `points`, otherwise buckets of
    /// `step` ms (mean, min, max) so the reply stays small however long the range.
    pub async fn series(
        &self,
        patient: PatientId,
        metric: Metric,
        from_ms: i64,
        to_ms: i64,
        points: usize,
    ) -> Result<Series, StoreError> {
        let count = self
            .reads
            .count_in(patient.clone(), metric, from_ms, to_ms)
            .await?;
        let points_i = i64::try_from(points).unwrap_or(i64::MAX).max(1);
        if count <= points_i {
            return Ok(Series {
                step_ms: 0,
                points: self.reads.points(patient, metric, from_ms, to_ms).await?,
            });
        }
        let span = to_ms.saturating_sub(from_ms).max(1);
        let step_ms = (span / points_i).max(1000);
        Ok(Series {
            step_ms,
            points: self
                .reads
                .buckets(patient, metric, from_ms, to_ms, step_ms)
                .await?,
        })
    }

    /// A patient's readings of `metric` in `[from, to]` summarised in buckets of `step_ms`
    /// counted from `from` (mean, min, max, count), oldest first, empty buckets left out: how
    /// a rebuild gives the trend rules their past days without reading every reading.
    pub async fn buckets(
        &self,
        patient: PatientId,
        metric: Metric,
        from_ms: i64,
        to_ms: i64,
        step_ms: i64,
    ) -> Result<Vec<SeriesPoint>, StoreError> {
        self.reads
            .buckets(patient, metric, from_ms, to_ms, step_ms.max(1))
            .await
    }

    /// How many observations are stored in all (for tests, benchmarks and the operator).
    pub async fn count_observations(&self) -> Result<i64, StoreError> {
        self.reads.count_observations().await
    }

    /// Dead letters, newest first, optionally of one device.
    pub async fn dead_letters(
        &self,
        device_id: Option<DeviceId>,
        limit: usize,
    ) -> Result<Vec<StoredDeadLetter>, StoreError> {
        self.reads.dead_letters(device_id, limit).await
    }

    /// The oldest `limit` InfluxDB outbox lines, with their ids.
    pub async fn outbox_batch(&self, limit: usize) -> Result<Vec<InfluxLine>, StoreError> {
        self.reads.outbox_batch(limit).await
    }

    /// How many lines wait in the InfluxDB outbox.
    pub async fn outbox_depth(&self) -> Result<i64, StoreError> {
        self.reads.outbox_depth().await
    }

    /// Lines InfluxDB refused, newest first, with the reason it gave.
    pub async fn influx_rejected(
        &self,
        limit: usize,
    ) -> Result<Vec<(i64, String, String)>, StoreError> {
        self.reads.influx_rejected(limit).await
    }

    /// The oldest `limit` readings in the FHIR spool (`fhir.all_readings`), waiting to be
    /// moved into the FHIR worker's outbox. The writer spools a reading's key in the same
    /// transaction as the reading, so an acknowledged reading is never lost to a crash before
    /// it reaches the outbox; the worker queues them in the outbox (where a reading already
    /// queued is ignored) and only then removes them ([`Store::fhir_spool_done`]).
    pub async fn fhir_spool_batch(&self, limit: usize) -> Result<Vec<Spooled>, StoreError> {
        self.reads.fhir_spool_batch(limit).await
    }

    /// How many readings wait in the FHIR spool.
    pub async fn fhir_spool_depth(&self) -> Result<i64, StoreError> {
        self.reads.fhir_spool_depth().await
    }

    /// The commit horizon now: every transaction below it has ended, so a read up to it in
    /// [`Store::committed_in`] leaves nothing behind; `None` on SQLite, where this instance's
    /// own writer feeds it ([`Store::subscribe`]).
    pub async fn commit_horizon(&self) -> Result<Option<i64>, StoreError> {
        self.reads.commit_horizon().await
    }

    /// Every reading of alert partitions `parts` written by a transaction in `[from, until)`
    /// (`until` a [`Store::commit_horizon`]), whichever instance stored it: read after read
    /// from one horizon to the next, each once, with no gap and in commit order (within one
    /// read, by transaction; see `src/store/postgres/feed.rs`); `None` on SQLite.
    pub async fn committed_in(
        &self,
        parts: Vec<u16>,
        from: i64,
        until: i64,
    ) -> Result<Option<FedReadings>, StoreError> {
        self.reads.committed_in(parts, from, until).await
    }
}
