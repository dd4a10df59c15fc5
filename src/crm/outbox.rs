//! The outbox: events waiting for an outward connector, in `registry.db`.
//!
//! Rows are written in the same transaction as the alert they describe, so a crash loses none.
//! One worker per sink delivers them in order (a later event never overtakes an earlier one
//! for the same receiver), retries what failed with exponential backoff and jitter, and gives
//! up after `give_up_after_s`, leaving the row `failed` with its last error for
//! `GET /api/v1/deliveries`. Delivery is at least once; the event id travels with every
//! attempt (`webhook-id`, FHIR identifiers) so the receiver keeps exactly one.

use std::sync::Arc;
use std::time::Duration;

use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::fhir_sink::FhirSink;
use super::record::Sink;
use super::webhook::WebhookSink;
use crate::config::RetryConfig;
use crate::domain::{format_rfc3339, now_ms};
use crate::registry::{Registry, RegistryError};
use crate::telemetry::Metrics;

/// One pending event for one sink.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub id: i64,
    pub event_id: String,
    pub event_type: String,
    pub payload: String,
    pub created_ms: i64,
    pub attempts: u32,
}

/// The outcome of one delivery attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Attempt {
    Delivered,
    /// Worth trying again later (network error, 408, 429, 5xx).
    Retry(String),
    /// The receiver refused it for good (another 4xx): retrying would not help.
    Refused(String),
}

impl Attempt {
    /// Classifies an HTTP status from `who`.
    pub fn from_status(status: u16, who: &str) -> Attempt {
        match status {
            200..=299 => Attempt::Delivered,
            408 | 425 | 429 | 500..=599 => Attempt::Retry(format!("{who} answered {status}")),
            _ => Attempt::Refused(format!("{who} refused it with {status}")),
        }
    }
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub done_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl Registry {
    /// The oldest pending rows of a sink, in order.
    pub async fn outbox_pending(
        &self,
        sink: Sink,
        limit: usize,
    ) -> Result<Vec<(OutboxRow, i64)>, RegistryError> {
        self.with(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, event_id, event_type, payload, created_ms, attempts, next_ms FROM outbox
                 WHERE sink = ?1 AND status = 'pending' ORDER BY id LIMIT ?2",
            )?;
            let rows = stmt.query_map(
                params![sink.as_str(), i64::try_from(limit).unwrap_or(i64::MAX)],
                |r| {
                    Ok((
                        OutboxRow {
                            id: r.get(0)?,
                            event_id: r.get(1)?,
                            event_type: r.get(2)?,
                            payload: r.get(3)?,
                            created_ms: r.get(4)?,
                            attempts: r.get(5)?,
                        },
                        r.get(6)?,
                    ))
                },
            )?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
                .map_err(RegistryError::from)
        })
        .await
    }

    /// Records the outcome of an attempt: `status` is `delivered`, `failed` or `pending`
    /// (with the time of the next attempt).
    pub async fn outbox_update(
        &self,
        id: i64,
        status: &'static str,
        next_ms: i64,
        error: Option<String>,
        now: i64,
    ) -> Result<(), RegistryError> {
        self.with(move |c| {
            let done = (status != "pending").then_some(now);
            c.execute(
                "UPDATE outbox SET status = ?2, attempts = attempts + 1, next_ms = ?3,
                 done_ms = ?4, last_error = coalesce(?5, last_error) WHERE id = ?1",
                params![id, status, next_ms, done, error],
            )?;
            Ok(())
        })
        .await
    }

    /// Deliveries, newest first.
    pub async fn deliveries(
        &self,
        status: Option<String>,
        sink: Option<String>,
        limit: usize,
    ) -> Result<Vec<Delivery>, RegistryError> {
        self.with(move |c| {
            let mut stmt = c.prepare(
                "SELECT id, sink, event_id, event_type, patient_id, status, attempts, created_ms,
                        next_ms, done_ms, last_error FROM outbox
                 WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR sink = ?2)
                 ORDER BY id DESC LIMIT ?3",
            )?;
            let rows = stmt.query_map(
                params![status, sink, i64::try_from(limit).unwrap_or(i64::MAX)],
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
                    })
                },
            )?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
                .map_err(RegistryError::from)
        })
        .await
    }

    /// Puts a failed delivery back in the queue (after the receiver was fixed). `false` when
    /// there is no failed delivery with that id.
    pub async fn retry_delivery(&self, id: i64, now: i64) -> Result<bool, RegistryError> {
        self.with(move |c| {
            let n = c.execute(
                "UPDATE outbox SET status = 'pending', next_ms = ?2, created_ms = ?2, done_ms = NULL
                 WHERE id = ?1 AND status = 'failed'",
                params![id, now],
            )?;
            Ok(n == 1)
        })
        .await
    }

    /// Pending rows per sink, for the metrics.
    pub async fn outbox_depth(&self, sink: Sink) -> Result<i64, RegistryError> {
        self.with(move |c| {
            Ok(c.query_row(
                "SELECT count(*) FROM outbox WHERE sink = ?1 AND status = 'pending'",
                [sink.as_str()],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0))
        })
        .await
    }
}

/// An outward connector.
pub enum Connector {
    Webhook(WebhookSink),
    Fhir(FhirSink),
}

impl Connector {
    pub fn sink(&self) -> Sink {
        match self {
            Connector::Webhook(_) => Sink::Webhook,
            Connector::Fhir(_) => Sink::Fhir,
        }
    }

    async fn deliver(&self, row: &OutboxRow, now: i64) -> Attempt {
        match self {
            Connector::Webhook(w) => w.deliver(row, now / 1000).await,
            Connector::Fhir(f) => f.deliver(row, now).await,
        }
    }
}

/// The wait before attempt `n + 1` (n ≥ 1 attempts made): `initial · 2^(n-1)`, capped, with
/// jitter taking it down by up to half so that many senders do not retry in step.
pub fn backoff_ms(attempts: u32, retry: &RetryConfig, jitter: f64) -> i64 {
    let base = retry.retry_initial_ms as f64 * 2f64.powi(attempts.saturating_sub(1).min(30) as i32);
    let capped = base.min(retry.retry_max_s as f64 * 1000.0);
    (capped * (1.0 - 0.5 * jitter.clamp(0.0, 1.0))) as i64
}

fn jitter() -> f64 {
    let mut b = [0u8; 2];
    let _ = getrandom::fill(&mut b);
    f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX)
}

/// Delivers a sink's outbox until `stop`: woken by `ready` when new rows are written, and by
/// its own timer for retries.
pub async fn run(
    registry: Registry,
    connector: Connector,
    retry: RetryConfig,
    ready: Arc<Notify>,
    metrics: Metrics,
    stop: CancellationToken,
) {
    let sink = connector.sink();
    let name = sink.as_str();
    loop {
        let mut wait = Duration::from_secs(5);
        match registry.outbox_pending(sink, 100).await {
            Ok(rows) => {
                metrics
                    .outbox_pending
                    .get_or_create(&vec![("sink", name.to_owned())])
                    .set(rows.len() as i64);
                for (row, next_ms) in rows {
                    let now = now_ms();
                    if next_ms > now {
                        // In order: everything behind a waiting row waits with it.
                        wait = Duration::from_millis((next_ms - now) as u64);
                        break;
                    }
                    let outcome = tokio::select! {
                        o = connector.deliver(&row, now) => o,
                        _ = stop.cancelled() => return,
                    };
                    let now = now_ms();
                    let (status, next, error) = match outcome {
                        Attempt::Delivered => ("delivered", now, None),
                        Attempt::Refused(e) => ("failed", now, Some(e)),
                        Attempt::Retry(e)
                            if now - row.created_ms >= retry.give_up_after_s as i64 * 1000 =>
                        {
                            ("failed", now, Some(format!("gave up: {e}")))
                        }
                        Attempt::Retry(e) => (
                            "pending",
                            now + backoff_ms(row.attempts + 1, &retry, jitter()),
                            Some(e),
                        ),
                    };
                    metrics
                        .outbox_attempts
                        .get_or_create(&vec![
                            ("sink", name.to_owned()),
                            ("outcome", status.to_owned()),
                        ])
                        .inc();
                    match &error {
                        Some(e) if status == "failed" => tracing::error!(
                            sink = name, event_id = %row.event_id, error = %e,
                            "delivery failed for good; see GET /api/v1/deliveries?status=failed"
                        ),
                        Some(e) => tracing::warn!(
                            sink = name, event_id = %row.event_id, attempts = row.attempts + 1,
                            error = %e, "delivery failed; will retry"
                        ),
                        None => tracing::debug!(sink = name, event_id = %row.event_id, "delivered"),
                    }
                    if let Err(e) = registry
                        .outbox_update(row.id, status, next, error, now)
                        .await
                    {
                        tracing::warn!(sink = name, error = %e, "outbox update not written");
                        break;
                    }
                    if status == "pending" {
                        wait = Duration::from_millis((next - now).max(0) as u64);
                        break;
                    }
                    wait = Duration::ZERO;
                }
            }
            Err(e) => tracing::warn!(sink = name, error = %e, "outbox not readable"),
        }
        if wait.is_zero() {
            continue;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ready.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_jitter_only_shortens() {
        let r = RetryConfig {
            retry_initial_ms: 1000,
            retry_max_s: 60,
            ..RetryConfig::default()
        };
        assert_eq!(backoff_ms(1, &r, 0.0), 1000);
        assert_eq!(backoff_ms(2, &r, 0.0), 2000);
        assert_eq!(backoff_ms(4, &r, 0.0), 8000);
        assert_eq!(backoff_ms(20, &r, 0.0), 60_000);
        assert_eq!(backoff_ms(2, &r, 1.0), 1000);
        assert_eq!(backoff_ms(u32::MAX, &r, 0.5), 45_000);
    }

    #[test]
    fn statuses_are_classified() {
        assert_eq!(Attempt::from_status(204, "x"), Attempt::Delivered);
        assert!(matches!(Attempt::from_status(503, "x"), Attempt::Retry(_)));
        assert!(matches!(Attempt::from_status(429, "x"), Attempt::Retry(_)));
        assert!(matches!(
            Attempt::from_status(400, "x"),
            Attempt::Refused(_)
        ));
    }
}
