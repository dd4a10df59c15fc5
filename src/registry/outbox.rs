//! The outbox's rows in `registry.db`: events (and, with `fhir.all_readings`, readings) waiting
//! for an outward connector, their attempts and outcomes, and the failed ones an admin puts
//! back in the queue ([`super::storage::OutboxStore`]; the SQL is each backend's). The workers
//! that deliver them are `crm::outbox`'s; alert events are queued by the record store in the
//! same transaction as their alert.
//!
//! Two lanes share the table: alert events, delivered in order (a later event never overtakes
//! an earlier one), and `reading` rows, which are independent of one another and of the events
//! (each is an Observation created on its own identifier) and so are taken as they come due,
//! in batches.
//!
//! It must never lose a row that is not delivered: rows leave the queue only as `delivered` or
//! `failed` (shown by `GET /api/v1/deliveries`), except delivered readings, which are deleted
//! (the server keeps them; keeping one row per reading here as well would double the data).

use serde::Serialize;

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

/// The delivery window of a row: it began at `retried_ms` (when an admin last put it back in
/// the queue) or else at its creation; the attempts made since are those past
/// `attempts_before_retry`.
pub fn window(created_ms: i64, retried_ms: Option<i64>, attempts: u32, before: u32) -> (i64, u32) {
    (
        retried_ms.unwrap_or(created_ms),
        attempts.saturating_sub(before),
    )
}
