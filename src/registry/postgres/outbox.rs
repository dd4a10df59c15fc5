//! The outbox on PostgreSQL: the same two lanes and outcomes as on SQLite, with identity ids
//! (the events' order). Settling only touches a pending row, so an outcome recorded twice (by a
//! retrying worker, or by two instances that both delivered a row) is recorded once.
//!
//! There is no claim step yet: a sink's worker reads its pending rows, delivers them and then
//! settles them, and with one instance per database that is the only worker. Several instances
//! sharing the outbox will need reads that claim rows (`FOR UPDATE SKIP LOCKED`, or a lease
//! column set in the same statement) so that two workers never deliver one row.

use tokio_postgres::Row;

use super::{PgDb, PgError};
use crate::domain::format_rfc3339;
use crate::registry::error::RegistryError;
use crate::registry::outbox::{Delivery, Lane, OutboxRow, QueuedReading, READING, Settled, window};
use crate::registry::storage::OutboxStore;

const ROW_COLUMNS: &str = "id, event_id, event_type, patient_id, payload, created_ms, attempts,
    next_ms, retried_ms, attempts_before_retry";

fn count(n: i32) -> u32 {
    u32::try_from(n).unwrap_or(0)
}

fn outbox_row(r: &Row) -> (OutboxRow, i64) {
    let attempts = count(r.get(6));
    let (window_ms, window_attempts) = window(r.get(5), r.get(8), attempts, count(r.get(9)));
    (
        OutboxRow {
            id: r.get(0),
            event_id: r.get(1),
            event_type: r.get(2),
            patient_id: r.get(3),
            payload: r.get(4),
            created_ms: r.get(5),
            attempts,
            window_ms,
            window_attempts,
        },
        r.get(7),
    )
}

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[async_trait::async_trait]
impl OutboxStore for PgDb {
    async fn outbox_pending(
        &self,
        sink: &'static str,
        lane: Lane,
        n: usize,
    ) -> Result<Vec<(OutboxRow, i64)>, RegistryError> {
        let c = self.conn().await?;
        let rows = match lane {
            Lane::Events => c
                .query(
                    &format!(
                        "SELECT {ROW_COLUMNS} FROM outbox
                         WHERE sink = $1 AND status = 'pending' AND event_type <> $2
                         ORDER BY id LIMIT $3"
                    ),
                    &[&sink, &READING, &limit(n)],
                )
                .await
                .map_err(PgError::from)?,
            Lane::Readings { now_ms } => c
                .query(
                    &format!(
                        "SELECT {ROW_COLUMNS} FROM outbox
                         WHERE sink = $1 AND status = 'pending' AND event_type = $2
                           AND next_ms <= $4
                         ORDER BY id LIMIT $3"
                    ),
                    &[&sink, &READING, &limit(n), &now_ms],
                )
                .await
                .map_err(PgError::from)?,
        };
        Ok(rows.iter().map(outbox_row).collect())
    }

    async fn outbox_next_reading_ms(
        &self,
        sink: &'static str,
    ) -> Result<Option<i64>, RegistryError> {
        let c = self.conn().await?;
        let row = c
            .query_one(
                "SELECT min(next_ms) FROM outbox
                 WHERE sink = $1 AND status = 'pending' AND event_type = $2",
                &[&sink, &READING],
            )
            .await
            .map_err(PgError::from)?;
        Ok(row.get(0))
    }

    async fn outbox_settle(&self, outcomes: Vec<Settled>, now: i64) -> Result<(), RegistryError> {
        if outcomes.is_empty() {
            return Ok(());
        }
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(PgError::from)?;
        let update = tx
            .prepare(
                "UPDATE outbox SET status = $2, attempts = attempts + 1, next_ms = $3,
                 done_ms = $4, last_error = coalesce($5, last_error)
                 WHERE id = $1 AND status = 'pending'",
            )
            .await
            .map_err(PgError::from)?;
        let delete = tx
            .prepare("DELETE FROM outbox WHERE id = $1 AND status = 'pending'")
            .await
            .map_err(PgError::from)?;
        for o in outcomes {
            if o.delete && o.status == "delivered" {
                tx.execute(&delete, &[&o.id]).await.map_err(PgError::from)?;
                continue;
            }
            let done = (o.status != "pending").then_some(now);
            tx.execute(&update, &[&o.id, &o.status, &o.next_ms, &done, &o.error])
                .await
                .map_err(PgError::from)?;
        }
        tx.commit().await.map_err(PgError::from)?;
        Ok(())
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
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(PgError::from)?;
        let insert = tx
            .prepare(
                "INSERT INTO outbox (sink, event_id, event_type, patient_id, payload,
                 created_ms, next_ms) VALUES ($1, $2, $3, $4, $5, $6, $6)
                 ON CONFLICT DO NOTHING",
            )
            .await
            .map_err(PgError::from)?;
        let mut n = 0;
        for r in readings {
            n += tx
                .execute(
                    &insert,
                    &[
                        &sink,
                        &r.event_id,
                        &READING,
                        &r.patient_id,
                        &r.payload,
                        &now,
                    ],
                )
                .await
                .map_err(PgError::from)?;
        }
        tx.commit().await.map_err(PgError::from)?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    async fn deliveries(
        &self,
        status: Option<String>,
        sink: Option<String>,
        patient_id: Option<String>,
        n: usize,
    ) -> Result<Vec<Delivery>, RegistryError> {
        let c = self.conn().await?;
        let rows = c
            .query(
                "SELECT id, sink, event_id, event_type, patient_id, status, attempts, created_ms,
                        next_ms, done_ms, last_error, retried_ms FROM outbox
                 WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR sink = $2)
                   AND ($4::text IS NULL OR patient_id = $4)
                 ORDER BY id DESC LIMIT $3",
                &[&status, &sink, &limit(n), &patient_id],
            )
            .await
            .map_err(PgError::from)?;
        Ok(rows
            .iter()
            .map(|r| {
                let status: String = r.get(5);
                let next: i64 = r.get(8);
                Delivery {
                    id: r.get(0),
                    sink: r.get(1),
                    event_id: r.get(2),
                    event_type: r.get(3),
                    patient_id: r.get(4),
                    next_attempt_at: (status == "pending").then(|| format_rfc3339(next)),
                    status,
                    attempts: count(r.get(6)),
                    created_at: format_rfc3339(r.get(7)),
                    done_at: r.get::<_, Option<i64>>(9).map(format_rfc3339),
                    last_error: r.get(10),
                    retried_at: r.get::<_, Option<i64>>(11).map(format_rfc3339),
                }
            })
            .collect())
    }

    async fn retry_delivery(&self, id: i64, now: i64) -> Result<bool, RegistryError> {
        let c = self.conn().await?;
        let n = c
            .execute(
                "UPDATE outbox SET status = 'pending', next_ms = $2, retried_ms = $2,
                 attempts_before_retry = attempts, done_ms = NULL
                 WHERE id = $1 AND status = 'failed'",
                &[&id, &now],
            )
            .await
            .map_err(PgError::from)?;
        Ok(n == 1)
    }

    async fn retry_deliveries(
        &self,
        patient_id: String,
        sink: Option<String>,
        now: i64,
    ) -> Result<usize, RegistryError> {
        let c = self.conn().await?;
        let n = c
            .execute(
                "UPDATE outbox SET status = 'pending', next_ms = $3, retried_ms = $3,
                 attempts_before_retry = attempts, done_ms = NULL
                 WHERE patient_id = $1 AND ($2::text IS NULL OR sink = $2) AND status = 'failed'",
                &[&patient_id, &sink, &now],
            )
            .await
            .map_err(PgError::from)?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    async fn outbox_depth(&self, sink: &'static str) -> Result<i64, RegistryError> {
        let c = self.conn().await?;
        let row = c
            .query_one(
                "SELECT count(*) FROM outbox WHERE sink = $1 AND status = 'pending'",
                &[&sink],
            )
            .await
            .map_err(PgError::from)?;
        Ok(row.get(0))
    }

    async fn outbox_waiting_readings(&self, sink: &'static str) -> Result<i64, RegistryError> {
        let c = self.conn().await?;
        let row = c
            .query_one(
                "SELECT count(*) FROM outbox WHERE sink = $1 AND status = 'pending'
                 AND event_type = $2",
                &[&sink, &READING],
            )
            .await
            .map_err(PgError::from)?;
        Ok(row.get(0))
    }
}
