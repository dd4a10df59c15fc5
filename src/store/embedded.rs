use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use tokio::sync::{mpsc, oneshot};

use crate::domain::{DeviceId, Metric, Observation, PatientId};
use crate::telemetry::Metrics;

/// Why the store could not do what was asked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("the store is shutting down")]
    Closed,
    #[error("could not open the store at {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("store write failed: {0}")]
    Write(String),
    /// SQLite found no room on the data directory's disk; the write was rolled back whole.
    #[error("the data directory's disk is full: nothing was stored")]
    Full,
    #[error("store read failed: {0}")]
    Read(String),
}

fn write_err(e: rusqlite::Error) -> StoreError {
    if is_disk_full(&e) {
        StoreError::Full
    } else {
        StoreError::Write(e.to_string())
    }
}

/// Whether SQLite failed for want of disk space (`SQLITE_FULL`).
pub(crate) fn is_disk_full(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DiskFull)
}

fn read_err(e: rusqlite::Error) -> StoreError {
    StoreError::Read(e.to_string())
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

enum Write {
    Observations {
        rows: Vec<Observation>,
        received_ms: i64,
        done: oneshot::Sender<Result<Committed, StoreError>>,
    },
    DeadLetter {
        letter: DeadLetter,
        done: oneshot::Sender<Result<Committed, StoreError>>,
    },
    Prune {
        before_ms: i64,
        done: oneshot::Sender<Result<Committed, StoreError>>,
    },
    /// Commit what came before, then stop.
    Shutdown,
    /// Remove delivered outbox lines (ids up to `upto`); keep `rejected` ones with a reason.
    OutboxDone {
        upto: i64,
        rejected: Vec<String>,
        reason: String,
        at_ms: i64,
        done: oneshot::Sender<Result<Committed, StoreError>>,
    },
    /// Remove readings up to `upto` from the FHIR spool (they are in the outbox now).
    FhirSpoolDone {
        upto: i64,
        done: oneshot::Sender<Result<Committed, StoreError>>,
    },
}

/// A handle to the embedded store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    tx: mpsc::Sender<Write>,
    readers: Arc<ReaderPool>,
    writer: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
    /// Woken after a commit that added outbox lines.
    outbox_ready: Arc<tokio::sync::Notify>,
    /// Every batch of newly stored observations, after its commit.
    feed: tokio::sync::broadcast::Sender<FeedItem>,
}

/// Observations newly stored by one commit, and when it committed (Vigil's clock, ms).
#[derive(Debug, Clone)]
pub struct CommittedBatch {
    pub committed_ms: i64,
    pub at: Instant,
    pub observations: Vec<Observation>,
}

/// A chart's worth of one metric (see [`Store::series`]).
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

type FeedItem = Arc<CommittedBatch>;

/// Batches the feed holds for a slow subscriber before it lags (and must resync).
const FEED_CAPACITY: usize = 4096;

struct ReaderPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

const SCHEMA: &[&str] = &[
    // version 1
    "CREATE TABLE observations (
        device_id   TEXT    NOT NULL,
        metric      INTEGER NOT NULL,
        time_ms     INTEGER NOT NULL,
        patient_id  TEXT    NOT NULL,
        value       REAL    NOT NULL,
        received_ms INTEGER NOT NULL,
        PRIMARY KEY (device_id, metric, time_ms)
     ) WITHOUT ROWID;
     CREATE INDEX observations_by_patient ON observations (patient_id, metric, time_ms);
     CREATE TABLE dead_letters (
        id         INTEGER PRIMARY KEY,
        time_ms    INTEGER NOT NULL,
        device_id  TEXT    NOT NULL,
        patient_id TEXT,
        topic      TEXT    NOT NULL,
        reason     TEXT    NOT NULL,
        payload    BLOB    NOT NULL
     );
     CREATE INDEX dead_letters_by_device ON dead_letters (device_id, time_ms);
     CREATE INDEX dead_letters_by_time ON dead_letters (time_ms);",
    // version 2: the spool of lines for InfluxDB, written in the same transaction as the
    // observations, and the lines InfluxDB refused.
    "CREATE TABLE influx_outbox (
        id   INTEGER PRIMARY KEY,
        line TEXT NOT NULL
     );
     CREATE TABLE influx_rejected (
        id      INTEGER PRIMARY KEY,
        time_ms INTEGER NOT NULL,
        line    TEXT NOT NULL,
        reason  TEXT NOT NULL
     );",
    // version 3: readings on their way to the FHIR server (`fhir.all_readings`), written in the
    // same transaction as the observations, by key; the FHIR worker moves them to its outbox.
    "CREATE TABLE fhir_spool (
        id        INTEGER PRIMARY KEY,
        device_id TEXT    NOT NULL,
        metric    INTEGER NOT NULL,
        time_ms   INTEGER NOT NULL
     );",
];

/// Opens a SQLite database with Vigil's durability settings and brings its schema up to date.
pub(crate) fn open_db(path: &Path, schema: &[&str]) -> Result<Connection, StoreError> {
    let open_err = |e: rusqlite::Error| StoreError::Open {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    // Created by us first, 0600: SQLite would create it 0644, and the `-wal` and `-shm` files
    // take its mode.
    crate::data_dir::create_private_file(path).map_err(|e| StoreError::Open {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let conn = Connection::open(path).map_err(open_err)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA foreign_keys = OFF;
         PRAGMA busy_timeout = 5000;",
    )
    .map_err(open_err)?;
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(open_err)?;
    let version = usize::try_from(version).unwrap_or(usize::MAX);
    if version > schema.len() {
        return Err(StoreError::Open {
            path: path.display().to_string(),
            reason: format!(
                "it was written by a newer Vigil (schema {version}, this one knows {})",
                schema.len()
            ),
        });
    }
    for (i, step) in schema.iter().enumerate().skip(version) {
        let tx = rusqlite::Transaction::new_unchecked(&conn, TransactionBehavior::Immediate)
            .map_err(open_err)?;
        tx.execute_batch(step).map_err(open_err)?;
        // Foreign keys are off while migrating (SQLite cannot add a column that references
        // another table with them on, nor turn them off inside a transaction); each step is
        // checked instead, and rolled back whole if it left a row pointing nowhere.
        let dangling: Option<String> = tx
            .query_row(
                "SELECT \"table\" FROM pragma_foreign_key_check LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(open_err)?;
        if let Some(table) = dangling {
            return Err(StoreError::Open {
                path: path.display().to_string(),
                reason: format!(
                    "upgrading to schema {} would leave rows of {table} pointing nowhere",
                    i + 1
                ),
            });
        }
        tx.pragma_update(None, "user_version", i as i64 + 1)
            .map_err(open_err)?;
        tx.commit().map_err(open_err)?;
    }
    conn.execute_batch("PRAGMA foreign_keys = ON;")
        .map_err(open_err)?;
    Ok(conn)
}

impl Store {
    /// Opens (or creates) `store.db` in `dir` and starts the writer thread.
    pub fn open(
        dir: &Path,
        batch_max: usize,
        queue_capacity: usize,
        metrics: Metrics,
    ) -> Result<Store, StoreError> {
        Store::open_with_outbox(dir, batch_max, queue_capacity, metrics, None, false)
    }

    /// Like [`Store::open`]; with `outbox` (an InfluxDB measurement name), every newly stored
    /// observation also gets a line-protocol line in the outbox, and with `fhir_readings` its
    /// key in the FHIR spool, in the same transaction.
    pub fn open_with_outbox(
        dir: &Path,
        batch_max: usize,
        queue_capacity: usize,
        metrics: Metrics,
        outbox: Option<String>,
        fhir_readings: bool,
    ) -> Result<Store, StoreError> {
        let path = dir.join("store.db");
        let conn = open_db(&path, SCHEMA)?;
        let (tx, rx) = mpsc::channel(queue_capacity);
        let outbox_ready = Arc::new(tokio::sync::Notify::new());
        let (feed, _) = tokio::sync::broadcast::channel(FEED_CAPACITY);
        let writer_state = WriterState {
            batch_max: batch_max.max(1),
            metrics,
            outbox,
            fhir_readings,
            outbox_ready: outbox_ready.clone(),
            feed: feed.clone(),
        };
        let writer = std::thread::Builder::new()
            .name("vigil-store-writer".into())
            .spawn(move || writer_loop(conn, rx, writer_state))
            .map_err(|e| StoreError::Open {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
        Ok(Store {
            tx,
            readers: Arc::new(ReaderPool {
                path,
                idle: Mutex::new(Vec::new()),
            }),
            writer: Arc::new(Mutex::new(Some(writer))),
            outbox_ready,
            feed,
        })
    }

    /// Subscribes to the observations each commit newly stores (redeliveries excluded), in
    /// commit order. A subscriber that falls more than a few thousand commits behind gets
    /// `Lagged` and must rebuild from the store.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<CommittedBatch>> {
        self.feed.subscribe()
    }

    /// The latest observation of a patient's metric, if any.
    pub async fn latest(
        &self,
        patient: PatientId,
        metric: Metric,
    ) -> Result<Option<StoredObservation>, StoreError> {
        self.read(move |conn| {
            use rusqlite::OptionalExtension;
            conn.prepare_cached(
                "SELECT time_ms, value, device_id, received_ms FROM observations
                 WHERE patient_id = ?1 AND metric = ?2 ORDER BY time_ms DESC LIMIT 1",
            )?
            .query_row(params![patient.as_str(), metric.code()], |r| {
                Ok(StoredObservation {
                    time_ms: r.get(0)?,
                    metric,
                    value: r.get(1)?,
                    device_id: r.get(2)?,
                    received_ms: r.get(3)?,
                })
            })
            .optional()
        })
        .await
    }

    /// Waits until a commit has added outbox lines (or returns at once if one did since the
    /// last call).
    pub async fn outbox_ready(&self) {
        self.outbox_ready.notified().await;
    }

    /// The oldest `limit` outbox lines, in order, with their ids.
    pub async fn outbox_batch(&self, limit: usize) -> Result<Vec<(i64, String)>, StoreError> {
        self.read(move |conn| {
            conn.prepare_cached("SELECT id, line FROM influx_outbox ORDER BY id LIMIT ?1")?
                .query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?
                .collect()
        })
        .await
    }

    /// How many lines wait in the outbox.
    pub async fn outbox_depth(&self) -> Result<i64, StoreError> {
        self.read(|conn| conn.query_row("SELECT count(*) FROM influx_outbox", [], |r| r.get(0)))
            .await
    }

    /// Marks outbox lines up to `upto` as handled; `rejected` lines are kept with `reason`.
    pub async fn outbox_done(
        &self,
        upto: i64,
        rejected: Vec<String>,
        reason: String,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Write::OutboxDone {
                upto,
                rejected,
                reason,
                at_ms,
                done,
            })
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?.map(|_| ())
    }

    /// Removes readings up to spool id `upto` from the FHIR spool (once they are in the
    /// outbox).
    pub async fn fhir_spool_done(&self, upto: i64) -> Result<(), StoreError> {
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Write::FhirSpoolDone { upto, done })
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?.map(|_| ())
    }

    /// Lines InfluxDB refused, newest first, with the reason it gave.
    pub async fn influx_rejected(
        &self,
        limit: usize,
    ) -> Result<Vec<(i64, String, String)>, StoreError> {
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT time_ms, line, reason FROM influx_rejected ORDER BY id DESC LIMIT ?1",
            )?
            .query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?
            .collect()
        })
        .await
    }

    /// Queues observations for the next commit; the returned receiver answers after it.
    /// Waits (backpressure) while the writer's queue is full.
    pub async fn submit(
        &self,
        rows: Vec<Observation>,
        received_ms: i64,
    ) -> Result<oneshot::Receiver<Result<Committed, StoreError>>, StoreError> {
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Write::Observations {
                rows,
                received_ms,
                done,
            })
            .await
            .map_err(|_| StoreError::Closed)?;
        Ok(rx)
    }

    /// Stores observations and waits for the commit.
    pub async fn insert(
        &self,
        rows: Vec<Observation>,
        received_ms: i64,
    ) -> Result<Committed, StoreError> {
        let rx = self.submit(rows, received_ms).await?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Queues a dead letter for the next commit.
    pub async fn submit_dead_letter(
        &self,
        letter: DeadLetter,
    ) -> Result<oneshot::Receiver<Result<Committed, StoreError>>, StoreError> {
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Write::DeadLetter { letter, done })
            .await
            .map_err(|_| StoreError::Closed)?;
        Ok(rx)
    }

    /// Deletes observations and dead letters older than `before_ms`; returns how many.
    pub async fn prune(&self, before_ms: i64) -> Result<usize, StoreError> {
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Write::Prune { before_ms, done })
            .await
            .map_err(|_| StoreError::Closed)?;
        Ok(rx.await.map_err(|_| StoreError::Closed)??.inserted)
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

    pub(super) async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, rusqlite::Error> + Send + 'static,
    ) -> Result<T, StoreError> {
        let pool = self.readers.clone();
        tokio::task::spawn_blocking(move || {
            let conn = match pool.idle.lock().ok().and_then(|mut v| v.pop()) {
                Some(c) => c,
                None => {
                    let c = Connection::open_with_flags(
                        &pool.path,
                        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                    )
                    .map_err(read_err)?;
                    c.busy_timeout(std::time::Duration::from_secs(5))
                        .map_err(read_err)?;
                    c
                }
            };
            let out = f(&conn).map_err(read_err);
            if let Ok(mut idle) = pool.idle.lock()
                && idle.len() < 8
            {
                idle.push(conn);
            }
            out
        })
        .await
        .map_err(|e| StoreError::Read(e.to_string()))?
    }

    /// Observations of one patient in `[from, to]`: the first `limit` oldest first, or the last
    /// `limit` newest first.
    pub async fn observations(
        &self,
        q: ObservationQuery,
    ) -> Result<Vec<StoredObservation>, StoreError> {
        self.read(move |conn| {
            let limit = i64::try_from(q.limit).unwrap_or(i64::MAX);
            let map = |r: &rusqlite::Row<'_>| {
                let code: u8 = r.get(1)?;
                Ok((r.get(0)?, code, r.get(2)?, r.get(3)?, r.get(4)?))
            };
            // One metric walks the (patient_id, metric, time_ms) index either way.
            let sql = match (q.metric.is_some(), q.newest_first) {
                (true, false) => {
                    "SELECT time_ms, metric, value, device_id, received_ms FROM observations
                     WHERE patient_id = ?1 AND metric = ?2 AND time_ms BETWEEN ?3 AND ?4
                     ORDER BY time_ms, device_id LIMIT ?5"
                }
                (true, true) => {
                    "SELECT time_ms, metric, value, device_id, received_ms FROM observations
                     WHERE patient_id = ?1 AND metric = ?2 AND time_ms BETWEEN ?3 AND ?4
                     ORDER BY time_ms DESC, device_id DESC LIMIT ?5"
                }
                (false, false) => {
                    "SELECT time_ms, metric, value, device_id, received_ms FROM observations
                     WHERE patient_id = ?1 AND time_ms BETWEEN ?2 AND ?3
                     ORDER BY time_ms, metric, device_id LIMIT ?4"
                }
                (false, true) => {
                    "SELECT time_ms, metric, value, device_id, received_ms FROM observations
                     WHERE patient_id = ?1 AND time_ms BETWEEN ?2 AND ?3
                     ORDER BY time_ms DESC, metric DESC, device_id DESC LIMIT ?4"
                }
            };
            let mut stmt = conn.prepare_cached(sql)?;
            let rows: Vec<(i64, u8, f64, String, i64)> = match q.metric {
                Some(m) => stmt
                    .query_map(
                        params![q.patient_id.as_str(), m.code(), q.from_ms, q.to_ms, limit],
                        map,
                    )?
                    .collect::<Result<_, _>>()?,
                None => stmt
                    .query_map(
                        params![q.patient_id.as_str(), q.from_ms, q.to_ms, limit],
                        map,
                    )?
                    .collect::<Result<_, _>>()?,
            };
            Ok(rows
                .into_iter()
                .filter_map(|(time_ms, code, value, device_id, received_ms)| {
                    Some(StoredObservation {
                        time_ms,
                        metric: Metric::from_code(code)?,
                        value,
                        device_id,
                        received_ms,
                    })
                })
                .collect())
        })
        .await
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
        self.read(move |conn| {
            let count: i64 = conn
                .prepare_cached(
                    "SELECT count(*) FROM observations
                     WHERE patient_id = ?1 AND metric = ?2 AND time_ms BETWEEN ?3 AND ?4",
                )?
                .query_row(
                    params![patient.as_str(), metric.code(), from_ms, to_ms],
                    |r| r.get(0),
                )?;
            let points_i = i64::try_from(points).unwrap_or(i64::MAX).max(1);
            if count <= points_i {
                let rows = conn
                    .prepare_cached(
                        "SELECT time_ms, value FROM observations
                         WHERE patient_id = ?1 AND metric = ?2 AND time_ms BETWEEN ?3 AND ?4
                         ORDER BY time_ms",
                    )?
                    .query_map(
                        params![patient.as_str(), metric.code(), from_ms, to_ms],
                        |r| {
                            let (t, v): (i64, f64) = (r.get(0)?, r.get(1)?);
                            Ok(SeriesPoint {
                                time_ms: t,
                                mean: v,
                                min: v,
                                max: v,
                                count: 1,
                            })
                        },
                    )?
                    .collect::<Result<Vec<_>, _>>()?;
                return Ok(Series {
                    step_ms: 0,
                    points: rows,
                });
            }
            let span = to_ms.saturating_sub(from_ms).max(1);
            let step_ms = (span / points_i).max(1000);
            let rows = conn
                .prepare_cached(
                    "SELECT ?3 + ((time_ms - ?3) / ?5) * ?5 AS bucket, avg(value), min(value),
                            max(value), count(*)
                     FROM observations
                     WHERE patient_id = ?1 AND metric = ?2 AND time_ms BETWEEN ?3 AND ?4
                     GROUP BY bucket ORDER BY bucket",
                )?
                .query_map(
                    params![patient.as_str(), metric.code(), from_ms, to_ms, step_ms],
                    |r| {
                        Ok(SeriesPoint {
                            time_ms: r.get(0)?,
                            mean: r.get(1)?,
                            min: r.get(2)?,
                            max: r.get(3)?,
                            count: r.get(4)?,
                        })
                    },
                )?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Series {
                step_ms,
                points: rows,
            })
        })
        .await
    }

    /// How many observations are stored in all (for tests, benchmarks and the operator).
    pub async fn count_observations(&self) -> Result<i64, StoreError> {
        self.read(|conn| conn.query_row("SELECT count(*) FROM observations", [], |r| r.get(0)))
            .await
    }

    /// Dead letters, newest first, optionally of one device.
    pub async fn dead_letters(
        &self,
        device_id: Option<DeviceId>,
        limit: usize,
    ) -> Result<Vec<StoredDeadLetter>, StoreError> {
        self.read(move |conn| {
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let map = |r: &rusqlite::Row<'_>| {
                Ok(StoredDeadLetter {
                    id: r.get(0)?,
                    time_ms: r.get(1)?,
                    device_id: r.get(2)?,
                    topic: r.get(3)?,
                    reason: r.get(4)?,
                    payload: r.get(5)?,
                })
            };
            let sql = "SELECT id, time_ms, device_id, topic, reason, payload FROM dead_letters";
            match device_id {
                Some(d) => conn
                    .prepare_cached(&format!(
                        "{sql} WHERE device_id = ?1 ORDER BY id DESC LIMIT ?2"
                    ))?
                    .query_map(params![d.as_str(), limit], map)?
                    .collect(),
                None => conn
                    .prepare_cached(&format!("{sql} ORDER BY id DESC LIMIT ?1"))?
                    .query_map(params![limit], map)?
                    .collect(),
            }
        })
        .await
    }
}

/// What the writer thread needs besides its connection.
struct WriterState {
    batch_max: usize,
    metrics: Metrics,
    /// The InfluxDB measurement, when observations also go to the outbox.
    outbox: Option<String>,
    /// Whether new observations also go to the FHIR spool.
    fhir_readings: bool,
    outbox_ready: Arc<tokio::sync::Notify>,
    feed: tokio::sync::broadcast::Sender<FeedItem>,
}

fn writer_loop(mut conn: Connection, mut rx: mpsc::Receiver<Write>, st: WriterState) {
    let (batch_max, metrics) = (st.batch_max, &st.metrics);
    let mut batch: Vec<Write> = Vec::with_capacity(batch_max);
    let mut open = true;
    while open {
        let Some(first) = rx.blocking_recv() else {
            break;
        };
        batch.push(first);
        let mut rows = batch_rows(&batch);
        while rows < batch_max {
            match rx.try_recv() {
                Ok(w) => {
                    batch.push(w);
                    rows = batch_rows(&batch);
                }
                Err(_) => break,
            }
        }
        if let Some(at) = batch.iter().position(|w| matches!(w, Write::Shutdown)) {
            // Anything queued behind the shutdown is refused (its sender sees Closed).
            batch.truncate(at);
            open = false;
        }
        if batch.is_empty() {
            continue;
        }
        let started = Instant::now();
        let mut fresh = Vec::new();
        let wanted = (st.feed.receiver_count() > 0).then_some(&mut fresh);
        let outcome = commit(&mut conn, &batch, &st, wanted);
        metrics
            .store_commit_seconds
            .observe(started.elapsed().as_secs_f64());
        match outcome {
            Ok(results) => {
                metrics.store_disk_full.set(0);
                if st.outbox.is_some() && results.iter().any(|r| r.inserted > 0) {
                    st.outbox_ready.notify_one();
                }
                if !fresh.is_empty() {
                    let _ = st.feed.send(Arc::new(CommittedBatch {
                        committed_ms: crate::domain::now_ms(),
                        at: Instant::now(),
                        observations: fresh,
                    }));
                }
                for (w, r) in batch.drain(..).zip(results) {
                    if let Some(done) = done_of(w) {
                        let _ = done.send(Ok(r));
                    }
                }
            }
            Err(e) => {
                if matches!(e, StoreError::Full) {
                    if metrics.store_disk_full.set(1) == 0 {
                        tracing::error!(
                            "the data directory's disk is full: readings are refused (not acknowledged) until space is freed"
                        );
                    }
                } else {
                    tracing::error!(error = %e, "store commit failed; the batch is not acknowledged");
                }
                metrics.store_commit_failures.inc();
                for w in batch.drain(..) {
                    if let Some(done) = done_of(w) {
                        let _ = done.send(Err(e.clone()));
                    }
                }
            }
        }
    }
    rx.close();
    // Everything accepted has been committed. Fold the WAL back into the database.
    if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);") {
        tracing::warn!(error = %e, "wal checkpoint at shutdown failed");
    }
}

fn batch_rows(batch: &[Write]) -> usize {
    batch
        .iter()
        .map(|w| match w {
            Write::Observations { rows, .. } => rows.len(),
            _ => 1,
        })
        .sum()
}

fn done_of(w: Write) -> Option<oneshot::Sender<Result<Committed, StoreError>>> {
    match w {
        Write::Observations { done, .. }
        | Write::DeadLetter { done, .. }
        | Write::Prune { done, .. }
        | Write::OutboxDone { done, .. }
        | Write::FhirSpoolDone { done, .. } => Some(done),
        Write::Shutdown => None,
    }
}

fn commit(
    conn: &mut Connection,
    batch: &[Write],
    st: &WriterState,
    mut fresh: Option<&mut Vec<Observation>>,
) -> Result<Vec<Committed>, StoreError> {
    let outbox = st.outbox.as_deref();
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(write_err)?;
    let mut results = Vec::with_capacity(batch.len());
    {
        let mut insert = tx
            .prepare_cached(
                "INSERT INTO observations (device_id, metric, time_ms, patient_id, value, received_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
            )
            .map_err(write_err)?;
        let mut dead = tx
            .prepare_cached(
                "INSERT INTO dead_letters (time_ms, device_id, patient_id, topic, reason, payload)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .map_err(write_err)?;
        let mut spool = tx
            .prepare_cached("INSERT INTO influx_outbox (line) VALUES (?1)")
            .map_err(write_err)?;
        let mut fhir_spool = if st.fhir_readings {
            Some(
                tx.prepare_cached(
                    "INSERT INTO fhir_spool (device_id, metric, time_ms) VALUES (?1, ?2, ?3)",
                )
                .map_err(write_err)?,
            )
        } else {
            None
        };
        for w in batch {
            let mut c = Committed::default();
            match w {
                Write::Observations {
                    rows, received_ms, ..
                } => {
                    for o in rows {
                        let n = insert
                            .execute(params![
                                o.device_id.as_str(),
                                o.metric.code(),
                                o.time_ms,
                                o.patient_id.as_str(),
                                o.value,
                                received_ms
                            ])
                            .map_err(write_err)?;
                        if n == 1 {
                            c.inserted += 1;
                            if let Some(f) = fresh.as_deref_mut() {
                                f.push(o.clone());
                            }
                            // Only new rows go out: a redelivery is not sent twice.
                            if let Some(measurement) = outbox {
                                spool
                                    .execute([super::influx::line(measurement, o)])
                                    .map_err(write_err)?;
                            }
                            if let Some(f) = fhir_spool.as_mut() {
                                f.execute(params![
                                    o.device_id.as_str(),
                                    o.metric.code(),
                                    o.time_ms
                                ])
                                .map_err(write_err)?;
                            }
                        } else {
                            c.duplicates += 1;
                        }
                    }
                }
                Write::DeadLetter { letter, .. } => {
                    dead.execute(params![
                        letter.time_ms,
                        letter.device_id.as_str(),
                        letter.patient_id.as_ref().map(PatientId::as_str),
                        letter.topic,
                        letter.reason,
                        letter.payload
                    ])
                    .map_err(write_err)?;
                    c.inserted = 1;
                }
                Write::Shutdown => {}
                Write::OutboxDone {
                    upto,
                    rejected,
                    reason,
                    at_ms,
                    ..
                } => {
                    for line in rejected {
                        tx.execute(
                            "INSERT INTO influx_rejected (time_ms, line, reason) VALUES (?1, ?2, ?3)",
                            params![at_ms, line, reason],
                        )
                        .map_err(write_err)?;
                    }
                    c.inserted = tx
                        .execute("DELETE FROM influx_outbox WHERE id <= ?1", [upto])
                        .map_err(write_err)?;
                }
                Write::FhirSpoolDone { upto, .. } => {
                    c.inserted = tx
                        .execute("DELETE FROM fhir_spool WHERE id <= ?1", [upto])
                        .map_err(write_err)?;
                }
                Write::Prune { before_ms, .. } => {
                    c.inserted = tx
                        .execute("DELETE FROM observations WHERE time_ms < ?1", [before_ms])
                        .map_err(write_err)?
                        + tx.execute("DELETE FROM dead_letters WHERE time_ms < ?1", [before_ms])
                            .map_err(write_err)?;
                }
            }
            results.push(c);
        }
    }
    tx.commit().map_err(write_err)?;
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(device: &str, metric: Metric, t: i64, v: f64) -> Observation {
        Observation {
            patient_id: PatientId::parse("p1").unwrap(),
            device_id: DeviceId::parse(device).unwrap(),
            metric,
            value: v,
            time_ms: t,
        }
    }

    fn query(metric: Option<Metric>) -> ObservationQuery {
        ObservationQuery {
            patient_id: PatientId::parse("p1").unwrap(),
            metric,
            from_ms: 0,
            to_ms: i64::MAX,
            limit: 100,
            newest_first: false,
        }
    }

    #[tokio::test]
    async fn stores_once_and_reads_back_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 64, 64, Metrics::new()).unwrap();
        let c = store
            .insert(
                vec![
                    obs("d1", Metric::HeartRate, 2000, 70.0),
                    obs("d1", Metric::HeartRate, 1000, 72.0),
                    obs("d1", Metric::Spo2, 1000, 97.0),
                ],
                5000,
            )
            .await
            .unwrap();
        assert_eq!(
            c,
            Committed {
                inserted: 3,
                duplicates: 0
            }
        );
        // A redelivery of the same (device, metric, time) is not stored again.
        let c = store
            .insert(vec![obs("d1", Metric::HeartRate, 1000, 72.0)], 6000)
            .await
            .unwrap();
        assert_eq!(
            c,
            Committed {
                inserted: 0,
                duplicates: 1
            }
        );

        let hr = store
            .observations(query(Some(Metric::HeartRate)))
            .await
            .unwrap();
        assert_eq!(
            hr.iter().map(|o| (o.time_ms, o.value)).collect::<Vec<_>>(),
            vec![(1000, 72.0), (2000, 70.0)]
        );
        assert_eq!(store.observations(query(None)).await.unwrap().len(), 3);
        assert_eq!(store.count_observations().await.unwrap(), 3);

        // Newest first: the latest `limit`, with and without a metric.
        let latest = |metric, limit| {
            let store = store.clone();
            async move {
                let q = ObservationQuery {
                    limit,
                    newest_first: true,
                    ..query(metric)
                };
                let rows = store.observations(q).await.unwrap();
                rows.iter()
                    .map(|o| (o.time_ms, o.metric))
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(
            latest(Some(Metric::HeartRate), 1).await,
            vec![(2000, Metric::HeartRate)]
        );
        assert_eq!(
            latest(None, 2).await,
            vec![(2000, Metric::HeartRate), (1000, Metric::Spo2)]
        );
    }

    #[tokio::test]
    async fn series_gives_readings_or_buckets() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 64, 64, Metrics::new()).unwrap();
        // 100 readings one second apart: 60..159.
        let rows = (0..100)
            .map(|i| obs("d1", Metric::HeartRate, i * 1000, 60.0 + i as f64))
            .collect();
        store.insert(rows, 0).await.unwrap();
        let p = PatientId::parse("p1").unwrap();
        let raw = store
            .series(p.clone(), Metric::HeartRate, 0, 99_000, 100)
            .await
            .unwrap();
        assert_eq!(raw.step_ms, 0);
        assert_eq!(raw.points.len(), 100);
        assert_eq!((raw.points[5].time_ms, raw.points[5].mean), (5000, 65.0));
        let b = store
            .series(p.clone(), Metric::HeartRate, 0, 100_000, 10)
            .await
            .unwrap();
        assert_eq!(b.step_ms, 10_000);
        assert_eq!(b.points.len(), 10);
        let first = b.points[0];
        assert_eq!(
            (first.time_ms, first.min, first.max, first.count),
            (0, 60.0, 69.0, 10)
        );
        assert!((first.mean - 64.5).abs() < 1e-9);
        assert_eq!(b.points[9].time_ms, 90_000);
        let none = store.series(p, Metric::Spo2, 0, 100_000, 10).await.unwrap();
        assert!(none.points.is_empty());
    }

    #[tokio::test]
    async fn survives_reopening_and_prunes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 64, 64, Metrics::new()).unwrap();
        store
            .insert(
                vec![
                    obs("d1", Metric::BodyWeight, 1000, 80.0),
                    obs("d1", Metric::BodyWeight, 9000, 81.0),
                ],
                0,
            )
            .await
            .unwrap();
        store.close().await;
        let store = Store::open(dir.path(), 64, 64, Metrics::new()).unwrap();
        assert_eq!(store.count_observations().await.unwrap(), 2);
        assert_eq!(store.prune(5000).await.unwrap(), 1);
        assert_eq!(store.count_observations().await.unwrap(), 1);
    }

    #[tokio::test]
    async fn keeps_dead_letters_with_their_reason() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 64, 64, Metrics::new()).unwrap();
        let rx = store
            .submit_dead_letter(DeadLetter {
                time_ms: 1,
                device_id: DeviceId::parse("d1").unwrap(),
                patient_id: None,
                topic: "vigil/v1/devices/d1/readings".into(),
                reason: "invalid JSON".into(),
                payload: vec![0xff, 0x00],
            })
            .await
            .unwrap();
        rx.await.unwrap().unwrap();
        let dl = store
            .dead_letters(Some(DeviceId::parse("d1").unwrap()), 10)
            .await
            .unwrap();
        assert_eq!(dl.len(), 1);
        assert_eq!(dl[0].reason, "invalid JSON");
        assert_eq!(dl[0].payload, vec![0xff, 0x00]);
    }
}
