//! The store on SQLite: `store.db` in the data directory (the embedded default).
//!
//! WAL mode with `synchronous=FULL`; the writer thread owns the one write connection; reads
//! run on `spawn_blocking` with read-only connections of their own, never on the writer.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};

use super::reads::Reads;
use super::types::{
    Committed, FedReadings, InfluxLine, ObservationQuery, SeriesPoint, Spooled, StoreError,
    StoreOptions, StoredDeadLetter, StoredObservation,
};
use super::writer::{Committer, Write};
use crate::domain::{DeviceId, Metric, Observation, PatientId};

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

/// Opens (or creates) `store.db` in `dir`: the writer's side and the readers' side.
pub(super) fn open(
    dir: &Path,
    options: &StoreOptions,
) -> Result<(SqliteWriter, SqliteReads), StoreError> {
    let path = dir.join("store.db");
    let conn = open_db(&path, SCHEMA)?;
    Ok((
        SqliteWriter {
            conn,
            influx: options.influx_measurement.clone(),
            fhir_readings: options.fhir_readings,
        },
        SqliteReads {
            path,
            idle: Mutex::new(Vec::new()),
        },
    ))
}

/// The writer's connection and what it writes besides the observations.
pub(super) struct SqliteWriter {
    conn: Connection,
    influx: Option<String>,
    fhir_readings: bool,
}

impl Committer for SqliteWriter {
    fn commit(
        &mut self,
        batch: &[Write],
        fresh: Option<&mut Vec<Observation>>,
    ) -> Result<Vec<Committed>, StoreError> {
        commit(
            &mut self.conn,
            batch,
            self.influx.as_deref(),
            self.fhir_readings,
            fresh,
        )
    }

    fn close(&mut self) {
        // Everything accepted has been committed. Fold the WAL back into the database.
        if let Err(e) = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);") {
            tracing::warn!(error = %e, "wal checkpoint at shutdown failed");
        }
    }
}

fn commit(
    conn: &mut Connection,
    batch: &[Write],
    outbox: Option<&str>,
    fhir_readings: bool,
    mut fresh: Option<&mut Vec<Observation>>,
) -> Result<Vec<Committed>, StoreError> {
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
        let mut fhir_spool = if fhir_readings {
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
                                    .execute([super::line_protocol::line(measurement, o)])
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
                    ids,
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
                    let mut delete = tx
                        .prepare_cached("DELETE FROM influx_outbox WHERE id = ?1")
                        .map_err(write_err)?;
                    for id in ids {
                        c.inserted += delete.execute([id]).map_err(write_err)?;
                    }
                }
                Write::FhirSpoolDone { ids, .. } => {
                    let mut delete = tx
                        .prepare_cached("DELETE FROM fhir_spool WHERE id = ?1")
                        .map_err(write_err)?;
                    for id in ids {
                        c.inserted += delete.execute([id]).map_err(write_err)?;
                    }
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

/// Read-only connections, kept for reuse.
pub(super) struct SqliteReads {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl SqliteReads {
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, rusqlite::Error> + Send + 'static,
    ) -> Result<T, StoreError> {
        let path = self.path.clone();
        let conn = self.idle.lock().ok().and_then(|mut v| v.pop());
        let (conn, out) = tokio::task::spawn_blocking(move || {
            let conn = match conn {
                Some(c) => c,
                None => {
                    let c = Connection::open_with_flags(
                        &path,
                        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                    )
                    .map_err(read_err)?;
                    c.busy_timeout(std::time::Duration::from_secs(5))
                        .map_err(read_err)?;
                    c
                }
            };
            let out = f(&conn).map_err(read_err);
            Ok::<_, StoreError>((conn, out))
        })
        .await
        .map_err(|e| StoreError::Read(e.to_string()))??;
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < 8
        {
            idle.push(conn);
        }
        out
    }
}

fn observation(r: &rusqlite::Row<'_>) -> Result<Option<StoredObservation>, rusqlite::Error> {
    let code: u8 = r.get(1)?;
    let Some(metric) = Metric::from_code(code) else {
        return Ok(None);
    };
    Ok(Some(StoredObservation {
        time_ms: r.get(0)?,
        metric,
        value: r.get(2)?,
        device_id: r.get(3)?,
        received_ms: r.get(4)?,
    }))
}

#[async_trait::async_trait]
impl Reads for SqliteReads {
    async fn latest(
        &self,
        patient: PatientId,
        metric: Metric,
    ) -> Result<Option<StoredObservation>, StoreError> {
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT time_ms, metric, value, device_id, received_ms FROM observations
                 WHERE patient_id = ?1 AND metric = ?2 ORDER BY time_ms DESC LIMIT 1",
            )?
            .query_row(params![patient.as_str(), metric.code()], observation)
            .optional()
            .map(Option::flatten)
        })
        .await
    }

    async fn observations(
        &self,
        q: ObservationQuery,
    ) -> Result<Vec<StoredObservation>, StoreError> {
        self.read(move |conn| {
            let limit = i64::try_from(q.limit).unwrap_or(i64::MAX);
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
            let rows: Vec<Option<StoredObservation>> = match q.metric {
                Some(m) => stmt
                    .query_map(
                        params![q.patient_id.as_str(), m.code(), q.from_ms, q.to_ms, limit],
                        observation,
                    )?
                    .collect::<Result<_, _>>()?,
                None => stmt
                    .query_map(
                        params![q.patient_id.as_str(), q.from_ms, q.to_ms, limit],
                        observation,
                    )?
                    .collect::<Result<_, _>>()?,
            };
            Ok(rows.into_iter().flatten().collect())
        })
        .await
    }

    async fn count_in(
        &self,
        patient: PatientId,
        metric: Metric,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<i64, StoreError> {
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT count(*) FROM observations
                 WHERE patient_id = ?1 AND metric = ?2 AND time_ms BETWEEN ?3 AND ?4",
            )?
            .query_row(
                params![patient.as_str(), metric.code(), from_ms, to_ms],
                |r| r.get(0),
            )
        })
        .await
    }

    async fn last_reading(
        &self,
        device: DeviceId,
        metrics: Vec<Metric>,
    ) -> Result<Option<i64>, StoreError> {
        self.read(move |conn| {
            // One primary-key lookup per metric.
            let mut stmt = conn.prepare_cached(
                "SELECT max(time_ms) FROM observations WHERE device_id = ?1 AND metric = ?2",
            )?;
            let mut latest: Option<i64> = None;
            for m in metrics {
                let t: Option<i64> =
                    stmt.query_row(params![device.as_str(), m.code()], |r| r.get(0))?;
                latest = latest.max(t);
            }
            Ok(latest)
        })
        .await
    }

    async fn quarter_hours(
        &self,
        patient: PatientId,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT DISTINCT device_id, (time_ms / 900000) * 900000 FROM observations
                 WHERE patient_id = ?1 AND time_ms >= ?2 AND time_ms < ?3",
            )?
            .query_map(params![patient.as_str(), from_ms, to_ms], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?
            .collect()
        })
        .await
    }

    async fn points(
        &self,
        patient: PatientId,
        metric: Metric,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<SeriesPoint>, StoreError> {
        self.read(move |conn| {
            conn.prepare_cached(
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
            .collect()
        })
        .await
    }

    async fn buckets(
        &self,
        patient: PatientId,
        metric: Metric,
        from_ms: i64,
        to_ms: i64,
        step_ms: i64,
    ) -> Result<Vec<SeriesPoint>, StoreError> {
        self.read(move |conn| {
            conn.prepare_cached(
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
            .collect()
        })
        .await
    }

    async fn count_observations(&self) -> Result<i64, StoreError> {
        self.read(|conn| conn.query_row("SELECT count(*) FROM observations", [], |r| r.get(0)))
            .await
    }

    async fn dead_letters(
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

    async fn outbox_batch(&self, limit: usize) -> Result<Vec<InfluxLine>, StoreError> {
        self.read(move |conn| {
            conn.prepare_cached("SELECT id, line FROM influx_outbox ORDER BY id LIMIT ?1")?
                .query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?
                .collect()
        })
        .await
    }

    async fn outbox_depth(&self) -> Result<i64, StoreError> {
        self.read(|conn| conn.query_row("SELECT count(*) FROM influx_outbox", [], |r| r.get(0)))
            .await
    }

    async fn influx_rejected(
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

    async fn fhir_spool_batch(&self, limit: usize) -> Result<Vec<Spooled>, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT s.id, s.device_id, s.metric, s.time_ms, o.patient_id, o.value
                 FROM fhir_spool s LEFT JOIN observations o
                   ON o.device_id = s.device_id AND o.metric = s.metric AND o.time_ms = s.time_ms
                 ORDER BY s.id LIMIT ?1",
            )?;
            let rows = stmt.query_map(params![i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
                let device: String = r.get(1)?;
                let code: u8 = r.get(2)?;
                let patient: Option<String> = r.get(4)?;
                let value: Option<f64> = r.get(5)?;
                let obs = (|| {
                    Some(Observation {
                        patient_id: PatientId::parse(&patient?).ok()?,
                        device_id: DeviceId::parse(&device).ok()?,
                        metric: Metric::from_code(code)?,
                        value: value?,
                        time_ms: r.get(3).ok()?,
                    })
                })();
                Ok((r.get(0)?, obs))
            })?;
            rows.collect()
        })
        .await
    }

    async fn fhir_spool_depth(&self) -> Result<i64, StoreError> {
        self.read(|conn| conn.query_row("SELECT count(*) FROM fhir_spool", [], |r| r.get(0)))
            .await
    }

    async fn commit_horizon(&self) -> Result<Option<i64>, StoreError> {
        Ok(None)
    }

    async fn committed_in(
        &self,
        _parts: Vec<u16>,
        _from: i64,
        _until: i64,
    ) -> Result<Option<FedReadings>, StoreError> {
        Ok(None)
    }
}
