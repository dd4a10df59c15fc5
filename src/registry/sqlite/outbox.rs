//! The outbox on SQLite: the `outbox` table's two lanes (alert events in order, readings as
//! they come due), the outcomes of attempts, and the failed rows an admin puts back in the
//! queue. Each sink has one worker, which reads its pending rows, delivers them and settles
//! them, so a row is out with one worker at a time; settling touches only a pending row, so an
//! outcome recorded twice counts once.

use rusqlite::{OptionalExtension, params};

use super::SqliteDb;
use crate::domain::format_rfc3339;
use crate::registry::error::RegistryError;
use crate::registry::outbox::{Delivery, Lane, OutboxRow, QueuedReading, READING, Settled, window};
use crate::registry::storage::OutboxStore;

fn outbox_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(OutboxRow, i64)> {
    let attempts: u32 = r.get(6)?;
    let (window_ms, window_attempts) = window(r.get(5)?, r.get(8)?, attempts, r.get(9)?);
    Ok((
        OutboxRow {
            id: r.get(0)?,
            event_id: r.get(1)?,
            event_type: r.get(2)?,
            patient_id: r.get(3)?,
            payload: r.get(4)?,
            created_ms: r.get(5)?,
            attempts,
            window_ms,
            window_attempts,
        },
        r.get(7)?,
    ))
}

const ROW_COLUMNS: &str = "id, event_id, event_type, patient_id, payload, created_ms, attempts,
    next_ms, retried_ms, attempts_before_retry";

#[async_trait::async_trait]
impl OutboxStore for SqliteDb {
    async fn outbox_pending(
        &self,
        sink: &'static str,
        lane: Lane,
        limit: usize,
    ) -> Result<Vec<(OutboxRow, i64)>, RegistryError> {
        self.with(move |c| {
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let rows = match lane {
                Lane::Events => c
                    .prepare_cached(&format!(
                        "SELECT {ROW_COLUMNS} FROM outbox
                         WHERE sink = ?1 AND status = 'pending' AND event_type <> ?2
                         ORDER BY id LIMIT ?3"
                    ))?
                    .query_map(params![sink, READING, limit], outbox_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()?,
                Lane::Readings { now_ms } => c
                    .prepare_cached(&format!(
                        "SELECT {ROW_COLUMNS} FROM outbox
                         WHERE sink = ?1 AND status = 'pending' AND event_type = ?2
                           AND next_ms <= ?4
                         ORDER BY id LIMIT ?3"
                    ))?
                    .query_map(params![sink, READING, limit, now_ms], outbox_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()?,
            };
            Ok(rows)
        })
        .await
    }

    async fn outbox_next_reading_ms(
        &self,
        sink: &'static str,
    ) -> Result<Option<i64>, RegistryError> {
        self.with(move |c| {
            Ok(c.query_row(
                "SELECT min(next_ms) FROM outbox
                 WHERE sink = ?1 AND status = 'pending' AND event_type = ?2",
                params![sink, READING],
                |r| r.get(0),
            )?)
        })
        .await
    }

    async fn outbox_settle(&self, outcomes: Vec<Settled>, now: i64) -> Result<(), RegistryError> {
        if outcomes.is_empty() {
            return Ok(());
        }
        self.with(move |c| {
            let tx = c.transaction()?;
            {
                let mut update = tx.prepare_cached(
                    "UPDATE outbox SET status = ?2, attempts = attempts + 1, next_ms = ?3,
                     done_ms = ?4, last_error = coalesce(?5, last_error)
                     WHERE id = ?1 AND status = 'pending'",
                )?;
                let mut delete =
                    tx.prepare_cached("DELETE FROM outbox WHERE id = ?1 AND status = 'pending'")?;
                for o in outcomes {
                    if o.delete && o.status == "delivered" {
                        delete.execute([o.id])?;
                        continue;
                    }
                    let done = (o.status != "pending").then_some(now);
                    update.execute(params![o.id, o.status, o.next_ms, done, o.error])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn queue_readings(
        &self,
        sink: &'static str,
        readings: Vec<QueuedReading>,
        now: i64,
    ) -> Result<usize, RegistryError> {
        if readings.is_empty() {
            return Ok(0);
        }
        self.with(move |c| {
            let tx = c.transaction()?;
            let mut n = 0;
            {
                let mut insert = tx.prepare_cached(
                    "INSERT INTO outbox (sink, event_id, event_type, patient_id, payload,
                     created_ms, next_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)
                     ON CONFLICT DO NOTHING",
                )?;
                for r in readings {
                    n += insert.execute(params![
                        sink,
                        r.event_id,
                        READING,
                        r.patient_id,
                        r.payload,
                        now
                    ])?;
                }
            }
            tx.commit()?;
            Ok(n)
        })
        .await
    }

    async fn deliveries(
        &self,
        status: Option<String>,
        sink: Option<String>,
        patient_id: Option<String>,
        limit: usize,
    ) -> Result<Vec<Delivery>, RegistryError> {
        self.with(move |c| {
            let mut stmt = c.prepare(
                "SELECT id, sink, event_id, event_type, patient_id, status, attempts, created_ms,
                        next_ms, done_ms, last_error, retried_ms FROM outbox
                 WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR sink = ?2)
                   AND (?4 IS NULL OR patient_id = ?4)
                 ORDER BY id DESC LIMIT ?3",
            )?;
            let rows = stmt.query_map(
                params![
                    status,
                    sink,
                    i64::try_from(limit).unwrap_or(i64::MAX),
                    patient_id
                ],
                |r| {
                    let status: String = r.get(5)?;
                    let next: i64 = r.get(8)?;
                    Ok(Delivery {
                        id: r.get(0)?,
                        sink: r.get(1)?,
                        event_id: r.get(2)?,
                        event_type: r.get(3)?,
                        patient_id: r.get(4)?,
                        next_attempt_at: (status == "pending").then(|| format_rfc3339(next)),
                        status,
                        attempts: r.get(6)?,
                        created_at: format_rfc3339(r.get(7)?),
                        done_at: r.get::<_, Option<i64>>(9)?.map(format_rfc3339),
                        last_error: r.get(10)?,
                        retried_at: r.get::<_, Option<i64>>(11)?.map(format_rfc3339),
                    })
                },
            )?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
                .map_err(RegistryError::from)
        })
        .await
    }

    async fn retry_delivery(&self, id: i64, now: i64) -> Result<bool, RegistryError> {
        self.with(move |c| {
            let n = c.execute(
                "UPDATE outbox SET status = 'pending', next_ms = ?2, retried_ms = ?2,
                 attempts_before_retry = attempts, done_ms = NULL
                 WHERE id = ?1 AND status = 'failed'",
                params![id, now],
            )?;
            Ok(n == 1)
        })
        .await
    }

    async fn retry_deliveries(
        &self,
        patient_id: String,
        sink: Option<String>,
        now: i64,
    ) -> Result<usize, RegistryError> {
        self.with(move |c| {
            Ok(c.execute(
                "UPDATE outbox SET status = 'pending', next_ms = ?3, retried_ms = ?3,
                 attempts_before_retry = attempts, done_ms = NULL
                 WHERE patient_id = ?1 AND (?2 IS NULL OR sink = ?2) AND status = 'failed'",
                params![patient_id, sink, now],
            )?)
        })
        .await
    }

    async fn outbox_depth(&self, sink: &'static str) -> Result<i64, RegistryError> {
        self.with(move |c| {
            Ok(c.query_row(
                "SELECT count(*) FROM outbox WHERE sink = ?1 AND status = 'pending'",
                [sink],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0))
        })
        .await
    }

    async fn outbox_waiting_readings(&self, sink: &'static str) -> Result<i64, RegistryError> {
        self.with(move |c| {
            Ok(c.query_row(
                "SELECT count(*) FROM outbox WHERE sink = ?1 AND status = 'pending'
                 AND event_type = ?2",
                params![sink, READING],
                |r| r.get(0),
            )?)
        })
        .await
    }
}
