//! Moving a data directory's readings (`store.db`) into PostgreSQL, for `vigil db migrate`:
//! read as of one instant from SQLite, written in one PostgreSQL transaction into tables that
//! must be empty, so a failure leaves them empty.
//!
//! Rows travel in chunks over a bounded channel (a reader thread on SQLite, the writer here),
//! so memory stays flat however many readings there are. Each month present gets its
//! partition before the transaction begins.

use rusqlite::{OpenFlags, params};
use tokio::sync::mpsc;

use super::error::write_err;
use super::partitions::{Partitions, month_of, month_start_ms};
use crate::store::types::StoreError;

/// Rows per chunk.
const CHUNK: usize = 10_000;

/// The tables moved, in order, with their columns (the same names on both sides) and the
/// order their rows are read in (the spools keep theirs: it is the order they go out in).
const TABLES: [(&str, &str, &str); 5] = [
    (
        "observations",
        "device_id, metric, time_ms, patient_id, value, received_ms",
        "device_id, metric, time_ms",
    ),
    (
        "dead_letters",
        "time_ms, device_id, patient_id, topic, reason, payload",
        "id",
    ),
    ("influx_outbox", "line", "id"),
    ("influx_rejected", "time_ms, line, reason", "id"),
    ("fhir_spool", "device_id, metric, time_ms", "id"),
];

/// One chunk of one table's rows, column by column.
enum Chunk {
    Observations {
        device: Vec<String>,
        metric: Vec<i16>,
        time: Vec<i64>,
        patient: Vec<String>,
        value: Vec<f64>,
        received: Vec<i64>,
    },
    DeadLetters {
        time: Vec<i64>,
        device: Vec<String>,
        patient: Vec<Option<String>>,
        topic: Vec<String>,
        reason: Vec<String>,
        payload: Vec<Vec<u8>>,
    },
    InfluxOutbox {
        line: Vec<String>,
    },
    InfluxRejected {
        time: Vec<i64>,
        line: Vec<String>,
        reason: Vec<String>,
    },
    FhirSpool {
        device: Vec<String>,
        metric: Vec<i16>,
        time: Vec<i64>,
    },
}

/// Rows moved per table, in order.
pub(in crate::store) type Moved = Vec<(&'static str, u64)>;

/// Moves `store_db` (a SQLite store) into the readings schema behind `pool`, which must be
/// empty (brought to this Vigil's schema first).
pub(in crate::store) async fn import(
    store_db: std::path::PathBuf,
    pool: deadpool_postgres::Pool,
) -> Result<Moved, StoreError> {
    let refuse = |reason: String| StoreError::Write(reason);
    crate::pg::migrate(&pool, super::schema::VERSION_TABLE, super::schema::STEPS)
        .await
        .map_err(write_err)?;
    {
        let conn = pool.get().await.map_err(write_err)?;
        for (table, _, _) in TABLES {
            let n: i64 = conn
                .query_one(
                    &format!("SELECT count(*) FROM (SELECT 1 FROM readings.{table} LIMIT 1) t"),
                    &[],
                )
                .await
                .map_err(write_err)?
                .get(0);
            if n > 0 {
                return Err(refuse(format!(
                    "the target's readings.{table} is not empty: move into a new database"
                )));
            }
        }
    }
    let source = store_db.clone();
    let span = tokio::task::spawn_blocking(move || -> Result<Option<(i64, i64)>, StoreError> {
        let c = open(&source)?;
        c.query_row(
            "SELECT min(time_ms), max(time_ms) FROM observations",
            [],
            |r| Ok(r.get::<_, Option<i64>>(0)?.zip(r.get::<_, Option<i64>>(1)?)),
        )
        .map_err(read_err)
    })
    .await
    .map_err(|e| StoreError::Read(e.to_string()))??;
    let mut partitions = Partitions::load(&pool).await?;
    if let Some((lo, hi)) = span {
        let (Some(first), Some(last)) = (month_of(lo), month_of(hi)) else {
            return Err(refuse("readings at times that cannot be dated".into()));
        };
        let months = (first..=last).filter_map(month_start_ms);
        partitions
            .ensure(&pool, months, crate::domain::now_ms())
            .await?;
    }
    let (send, mut chunks) = mpsc::channel::<(usize, Chunk)>(2);
    let reader = tokio::task::spawn_blocking(move || read_all(&store_db, &send));
    let mut conn = pool.get().await.map_err(write_err)?;
    let tx = conn.transaction().await.map_err(write_err)?;
    let mut moved: Moved = TABLES.iter().map(|(t, _, _)| (*t, 0)).collect();
    while let Some((table, chunk)) = chunks.recv().await {
        moved[table].1 += write(&tx, chunk).await?;
    }
    let read = reader.await.map_err(|e| StoreError::Read(e.to_string()))?;
    let counts = read?;
    for ((table, n), expected) in moved.iter().zip(counts) {
        if *n != expected {
            return Err(refuse(format!(
                "{table}: {n} rows written, {expected} read; nothing was moved"
            )));
        }
    }
    tx.commit().await.map_err(write_err)?;
    Ok(moved)
}

fn read_err(e: rusqlite::Error) -> StoreError {
    StoreError::Read(e.to_string())
}

fn open(path: &std::path::Path) -> Result<rusqlite::Connection, StoreError> {
    rusqlite::Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(read_err)
}

/// Reads every table in one read transaction, sending chunks; the rows read per table.
fn read_all(
    path: &std::path::Path,
    send: &mpsc::Sender<(usize, Chunk)>,
) -> Result<Vec<u64>, StoreError> {
    let mut c = open(path)?;
    let tx = c.transaction().map_err(read_err)?;
    let mut counts = Vec::new();
    for (i, (table, columns, order)) in TABLES.iter().enumerate() {
        let mut stmt = tx
            .prepare(&format!("SELECT {columns} FROM {table} ORDER BY {order}"))
            .map_err(read_err)?;
        let mut rows = stmt.query(params![]).map_err(read_err)?;
        let mut chunk = empty(i);
        let mut n = 0u64;
        while let Some(r) = rows.next().map_err(read_err)? {
            push(&mut chunk, r).map_err(read_err)?;
            n += 1;
            if n.is_multiple_of(CHUNK as u64) {
                let full = std::mem::replace(&mut chunk, empty(i));
                if send.blocking_send((i, full)).is_err() {
                    return Err(StoreError::Closed);
                }
            }
        }
        if send.blocking_send((i, chunk)).is_err() {
            return Err(StoreError::Closed);
        }
        counts.push(n);
    }
    Ok(counts)
}

fn empty(table: usize) -> Chunk {
    match table {
        0 => Chunk::Observations {
            device: Vec::new(),
            metric: Vec::new(),
            time: Vec::new(),
            patient: Vec::new(),
            value: Vec::new(),
            received: Vec::new(),
        },
        1 => Chunk::DeadLetters {
            time: Vec::new(),
            device: Vec::new(),
            patient: Vec::new(),
            topic: Vec::new(),
            reason: Vec::new(),
            payload: Vec::new(),
        },
        2 => Chunk::InfluxOutbox { line: Vec::new() },
        3 => Chunk::InfluxRejected {
            time: Vec::new(),
            line: Vec::new(),
            reason: Vec::new(),
        },
        _ => Chunk::FhirSpool {
            device: Vec::new(),
            metric: Vec::new(),
            time: Vec::new(),
        },
    }
}

fn push(chunk: &mut Chunk, r: &rusqlite::Row<'_>) -> Result<(), rusqlite::Error> {
    match chunk {
        Chunk::Observations {
            device,
            metric,
            time,
            patient,
            value,
            received,
        } => {
            device.push(r.get(0)?);
            metric.push(r.get(1)?);
            time.push(r.get(2)?);
            patient.push(r.get(3)?);
            value.push(r.get(4)?);
            received.push(r.get(5)?);
        }
        Chunk::DeadLetters {
            time,
            device,
            patient,
            topic,
            reason,
            payload,
        } => {
            time.push(r.get(0)?);
            device.push(r.get(1)?);
            patient.push(r.get(2)?);
            topic.push(r.get(3)?);
            reason.push(r.get(4)?);
            payload.push(r.get(5)?);
        }
        Chunk::InfluxOutbox { line } => line.push(r.get(0)?),
        Chunk::InfluxRejected { time, line, reason } => {
            time.push(r.get(0)?);
            line.push(r.get(1)?);
            reason.push(r.get(2)?);
        }
        Chunk::FhirSpool {
            device,
            metric,
            time,
        } => {
            device.push(r.get(0)?);
            metric.push(r.get(1)?);
            time.push(r.get(2)?);
        }
    }
    Ok(())
}

/// Writes one chunk; the rows written.
async fn write(tx: &deadpool_postgres::Transaction<'_>, chunk: Chunk) -> Result<u64, StoreError> {
    let n = match &chunk {
        Chunk::Observations {
            device,
            metric,
            time,
            patient,
            value,
            received,
        } => {
            tx.execute(
                "INSERT INTO readings.observations
                   (device_id, metric, time_ms, patient_id, value, received_ms)
                 SELECT * FROM unnest($1::text[], $2::int2[], $3::int8[], $4::text[],
                                      $5::float8[], $6::int8[])",
                &[device, metric, time, patient, value, received],
            )
            .await
        }
        Chunk::DeadLetters {
            time,
            device,
            patient,
            topic,
            reason,
            payload,
        } => {
            tx.execute(
                "INSERT INTO readings.dead_letters
                   (time_ms, device_id, patient_id, topic, reason, payload)
                 SELECT t, d, p, tp, r, pl FROM unnest($1::int8[], $2::text[], $3::text[],
                        $4::text[], $5::text[], $6::bytea[]) WITH ORDINALITY AS u(t, d, p, tp, r, pl, n)
                 ORDER BY n",
                &[time, device, patient, topic, reason, payload],
            )
            .await
        }
        Chunk::InfluxOutbox { line } => {
            tx.execute(
                "INSERT INTO readings.influx_outbox (line)
                 SELECT l FROM unnest($1::text[]) WITH ORDINALITY AS u(l, n) ORDER BY n",
                &[line],
            )
            .await
        }
        Chunk::InfluxRejected { time, line, reason } => {
            tx.execute(
                "INSERT INTO readings.influx_rejected (time_ms, line, reason)
                 SELECT t, l, r FROM unnest($1::int8[], $2::text[], $3::text[])
                   WITH ORDINALITY AS u(t, l, r, n) ORDER BY n",
                &[time, line, reason],
            )
            .await
        }
        Chunk::FhirSpool {
            device,
            metric,
            time,
        } => {
            tx.execute(
                "INSERT INTO readings.fhir_spool (device_id, metric, time_ms)
                 SELECT d, m, t FROM unnest($1::text[], $2::int2[], $3::int8[])
                   WITH ORDINALITY AS u(d, m, t, n) ORDER BY n",
                &[device, metric, time],
            )
            .await
        }
    };
    n.map_err(write_err)
}
