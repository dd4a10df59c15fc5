//! Readings in commit order, for the instance evaluating some alert partitions: every reading
//! of those partitions that committed, each once, with no gap, whichever instance stored it.
//!
//! A sequence number is not commit order: a transaction that took number 7 may commit after one
//! that took 8, and a reader that saw 8 and moved past it would never see 7. Instead each
//! reading carries the id of the transaction that wrote it (`tx`, an `xid8`), and the reader
//! takes the **horizon** first — `pg_snapshot_xmin(pg_current_snapshot())`, the oldest
//! transaction still running anywhere: every transaction below it has ended, committed (and
//! visible from now on) or rolled back — then the readings with `from <= tx < horizon`. The
//! next read starts at this horizon. (The caller takes the horizon, so that other changes
//! fed the same way — the alert engine's inbox in the registry — are read up to the same one.) A reading whose transaction is still running when the
//! horizon is taken is at or above it and comes in a later read. The cost: one transaction
//! left open on the server holds every reader back until it ends (Vigil's own are short).

use deadpool_postgres::Pool;

use super::error::read_err;
use crate::domain::{DeviceId, Metric, Observation, PatientId};
use crate::store::types::{FedReading, FedReadings, StoreError};

/// The horizon now: every transaction below it has ended.
pub(in crate::store) async fn horizon(pool: &Pool) -> Result<i64, StoreError> {
    let conn = pool.get().await.map_err(read_err)?;
    let row = conn
        .query_one("SELECT pg_snapshot_xmin(pg_current_snapshot())::text", &[])
        .await
        .map_err(read_err)?;
    row.get::<_, &str>(0)
        .parse()
        .map_err(|e| StoreError::Read(format!("transaction horizon: {e}")))
}

/// The readings of partitions `parts` written by transactions in `[from, until)` (`until` a
/// [`horizon`]), in the order their transactions began (for a reading's place among others
/// that were running at once, none is more right than another), and `until`: where the next
/// read starts.
pub(in crate::store) async fn committed(
    pool: &Pool,
    parts: &[u16],
    from: i64,
    until: i64,
) -> Result<FedReadings, StoreError> {
    if until <= from || parts.is_empty() {
        return Ok(FedReadings {
            readings: Vec::new(),
            next: until.max(from),
        });
    }
    let parts: Vec<i16> = parts
        .iter()
        .filter_map(|p| i16::try_from(*p).ok())
        .collect();
    let conn = pool.get().await.map_err(read_err)?;
    let rows = conn
        .query(
            "SELECT device_id, metric, time_ms, patient_id, value, received_ms, tx::text
               FROM readings.observations
              WHERE part = ANY($1) AND tx >= $2::text::xid8 AND tx < $3::text::xid8
              ORDER BY tx, device_id COLLATE \"C\", metric, time_ms",
            &[&parts, &from.to_string(), &until.to_string()],
        )
        .await
        .map_err(read_err)?;
    let readings = rows
        .iter()
        .filter_map(|r| {
            Some(FedReading {
                observation: Observation {
                    device_id: DeviceId::parse(r.get::<_, &str>(0)).ok()?,
                    metric: Metric::from_code(u8::try_from(r.get::<_, i16>(1)).ok()?)?,
                    time_ms: r.get(2),
                    patient_id: PatientId::parse(r.get::<_, &str>(3)).ok()?,
                    value: r.get(4),
                },
                received_ms: r.get(5),
                tx: r.get::<_, &str>(6).parse().ok()?,
            })
        })
        .collect();
    Ok(FedReadings {
        readings,
        next: until,
    })
}
