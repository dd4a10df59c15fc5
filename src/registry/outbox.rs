//! The outbox's rows in `registry.db`: events (and, with `fhir.all_readings`, readings) waiting
//! for an outward connector, their attempts and outcomes, and the failed ones an admin puts
//! back in the queue. The workers that deliver them are `crm::outbox`'s; alert events are
//! written here by `crm::record` in the same transaction as their alert.
//!
//! Two lanes share the table: alert events, delivered in order (a later event never overtakes
//! an earlier one), and `reading` rows, which are independent of one another and of the events
//! (each is an Observation created on its own identifier) and so are taken as they come due,
//! in batches.
//!
//! It must never lose a row that is not delivered: rows leave the queue only as `delivered` or
//! `failed` (shown by `GET /api/v1/deliveries`), except delivered readings, which are deleted
//! (the server keeps them; keeping one row per reading here as well would double the data).

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::Registry;
use super::error::RegistryError;
use crate::domain::format_rfc3339;

/// The `event_type` of a reading's row.
pub const READING: &str = "reading";

/// One pending event for one sink.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub id: i64,
    pub event_id: String,
    pub event_type: String,
    pub patient_id: String,
    pub payload: String,
    pub created_ms: i64,
    /// Attempts made, in all.
    pub attempts: u32,
    /// When the current delivery window began: the row's creation, or the last time an admin
    /// put it back in the queue. `give_up_after_s` counts from here.
    pub window_ms: i64,
    /// Attempts made since the window began (the backoff grows with these).
    pub window_attempts: u32,
}

/// Which rows a worker asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Alert events, in order, due or not (the first not due holds back those behind it).
    Events,
    /// Reading rows due at `now`, oldest first.
    Readings { now_ms: i64 },
}

/// The outcome of an attempt, to be recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct Settled {
    pub id: i64,
    /// `delivered`, `failed` or `pending` (with the time of the next attempt).
    pub status: &'static str,
    pub next_ms: i64,
    pub error: Option<String>,
    /// A delivered row that is removed rather than kept (a reading).
    pub delete: bool,
}

/// A delivery as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    pub id: i64,
    pub sink: String,
    pub event_id: String,
    pub event_type: String,
    pub patient_id: String,
    pub status: String,
    pub attempts: u32,
    pub created_at: String,
    /// When an admin last put it back in the queue.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retried_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub done_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// A reading to queue: its row's event id (unique per sink), patient and payload.
#[derive(Debug, Clone)]
pub struct QueuedReading {
    pub event_id: String,
    pub patient_id: String,
    pub payload: String,
}

fn outbox_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(OutboxRow, i64)> {
    let attempts: u32 = r.get(6)?;
    let before: u32 = r.get(9)?;
    Ok((
        OutboxRow {
            id: r.get(0)?,
            event_id: r.get(1)?,
            event_type: r.get(2)?,
            patient_id: r.get(3)?,
            payload: r.get(4)?,
            created_ms: r.get(5)?,
            attempts,
            window_ms: r.get::<_, Option<i64>>(8)?.unwrap_or(r.get(5)?),
            window_attempts: attempts.saturating_sub(before),
        },
        r.get(7)?,
    ))
}

const ROW_COLUMNS: &str = "id, event_id, event_type, patient_id, payload, created_ms, attempts,
    next_ms, retried_ms, attempts_before_retry";

impl Registry {
    /// The oldest pending rows of a sink in a lane, in order, with the time each is due.
    pub async fn outbox_pending(
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

    /// When the next pending reading of a sink is due, if one is pending.
    pub async fn outbox_next_reading_ms(
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

    /// Records the outcomes of attempts, in one transaction.
    pub async fn outbox_settle(
        &self,
        outcomes: Vec<Settled>,
        now: i64,
    ) -> Result<(), RegistryError> {
        if outcomes.is_empty() {
            return Ok(());
        }
        self.with(move |c| {
            let tx = c.transaction()?;
            {
                let mut update = tx.prepare_cached(
                    "UPDATE outbox SET status = ?2, attempts = attempts + 1, next_ms = ?3,
                     done_ms = ?4, last_error = coalesce(?5, last_error) WHERE id = ?1",
                )?;
                let mut delete = tx.prepare_cached("DELETE FROM outbox WHERE id = ?1")?;
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

    /// Queues readings for a sink (a reading already queued is left as it is); how many were
    /// new.
    pub async fn queue_readings(
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

    /// Deliveries, newest first.
    pub async fn deliveries(
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

    /// Puts a failed delivery back in the queue (after the receiver, or the patient's MRN, was
    /// fixed), due now and with a new delivery window: the backoff starts again from
    /// `retry_initial_ms`, and `give_up_after_s` counts from now. `false` when there is no
    /// failed delivery with that id.
    pub async fn retry_delivery(&self, id: i64, now: i64) -> Result<bool, RegistryError> {
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

    /// Puts every failed delivery of a patient (and of one sink, if given) back in the queue,
    /// as [`Registry::retry_delivery`] does one; how many.
    pub async fn retry_deliveries(
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

    /// Pending rows of a sink (readings among them), for the metrics.
    pub async fn outbox_depth(&self, sink: &'static str) -> Result<i64, RegistryError> {
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

    /// Pending reading rows of a sink.
    pub async fn outbox_waiting_readings(&self, sink: &'static str) -> Result<i64, RegistryError> {
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
