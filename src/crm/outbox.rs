//! The outbox workers: one per sink delivers its rows (in `registry.db`, see
//! `registry::outbox`) to the receiver.
//!
//! Rows are written in the same transaction as the alert they describe, so a crash loses none.
//! Alert events are delivered in order (a later event never overtakes an earlier one for the
//! same receiver); with `fhir.all_readings`, the FHIR worker also delivers readings, in batches,
//! at a bounded rate, beside the events and never ahead of them ([`super::readings`]). What
//! failed is retried with exponential backoff and jitter, and given up after `give_up_after_s`,
//! leaving the row `failed` with its last error for `GET /api/v1/deliveries`. Delivery is at
//! least once; the event id travels with every attempt (`webhook-id`, FHIR identifiers) so the
//! receiver keeps exactly one.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::fhir_sink::FhirSink;
use super::readings::ReadingsLane;
use super::record::Sink;
use super::webhook::WebhookSink;
use crate::config::RetryConfig;
use crate::domain::now_ms;
pub use crate::registry::{Delivery, OutboxRow};
use crate::registry::{Lane, Registry, Settled};
use crate::telemetry::Metrics;

/// The outcome of one delivery attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Attempt {
    Delivered,
    /// Worth trying again later (network error, 408, 429, 5xx).
    Retry(String),
    /// The receiver refused it for good (another 4xx): retrying would not help.
    Refused(String),
    /// The receiver does not know the patient (or knows several): failed at once, like
    /// [`Attempt::Refused`], until someone fixes the patient's identifier and retries it. The
    /// reason names the identifier (an MRN perhaps), so it goes to the delivery's last error
    /// and never to the logs.
    Unmatched(String),
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

/// What an attempt's outcome makes of its row: delivered, failed (refused, unmatched, or
/// retried past `give_up_after_s` from the start of its delivery window), or pending until the
/// backoff has passed (growing with the attempts made in this window). `delete`: a delivered
/// row that is not kept (a reading).
pub fn settle(
    row: &OutboxRow,
    outcome: Attempt,
    retry: &RetryConfig,
    now: i64,
    jitter: f64,
    delete: bool,
) -> Settled {
    let (status, next_ms, error) = match outcome {
        Attempt::Delivered => ("delivered", now, None),
        Attempt::Refused(e) | Attempt::Unmatched(e) => ("failed", now, Some(e)),
        Attempt::Retry(e)
            if now - row.window_ms
                >= i64::try_from(retry.give_up_after_s).unwrap_or(i64::MAX / 1000) * 1000 =>
        {
            ("failed", now, Some(format!("gave up: {e}")))
        }
        Attempt::Retry(e) => (
            "pending",
            now + backoff_ms(row.window_attempts + 1, retry, jitter),
            Some(e),
        ),
    };
    Settled {
        id: row.id,
        status,
        next_ms,
        error,
        delete,
    }
}

/// An outward connector. (The FHIR one, with its reference cache and token state, is boxed: one
/// of each is made at start.)
pub enum Connector {
    Webhook(WebhookSink),
    Fhir(Box<FhirSink>),
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

pub(super) fn jitter() -> f64 {
    let mut b = [0u8; 2];
    let _ = getrandom::fill(&mut b);
    f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX)
}

/// Counts an attempt's outcome and logs it (a reason that may name a patient's identifier,
/// [`Attempt::Unmatched`]'s, stays out of the log).
fn record_outcome(
    metrics: &Metrics,
    sink: &'static str,
    event_id: &str,
    settled: &Settled,
    unmatched: bool,
) {
    metrics
        .outbox_attempts
        .get_or_create(&vec![
            ("sink", sink.to_owned()),
            ("outcome", settled.status.to_owned()),
        ])
        .inc();
    match &settled.error {
        Some(_) if unmatched => tracing::error!(
            sink, event_id = %event_id,
            "delivery failed for good: the receiver does not know the patient (or knows several); \
             see GET /api/v1/deliveries?status=failed for the identifier and what to do"
        ),
        Some(e) if settled.status == "failed" => tracing::error!(
            sink, event_id = %event_id, error = %e,
            "delivery failed for good; see GET /api/v1/deliveries?status=failed"
        ),
        Some(e) => {
            tracing::warn!(sink, event_id = %event_id, error = %e, "delivery failed; will retry")
        }
        None => tracing::debug!(sink, event_id = %event_id, "delivered"),
    }
}

/// Delivers due alert events in order until one must wait; how long until the next is due
/// (zero: more may be ready at once).
async fn deliver_events(
    registry: &Registry,
    connector: &Connector,
    retry: &RetryConfig,
    metrics: &Metrics,
    stop: &CancellationToken,
) -> Option<Duration> {
    let name = connector.sink().as_str();
    let rows = match registry.outbox_pending(name, Lane::Events, 100).await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::warn!(sink = name, error = %e, "outbox not readable");
            return Some(IDLE);
        }
    };
    let mut wait = IDLE;
    for (row, next_ms) in rows {
        let now = now_ms();
        if next_ms > now {
            // In order: everything behind a waiting row waits with it.
            return Some(Duration::from_millis((next_ms - now) as u64));
        }
        let outcome = tokio::select! {
            o = connector.deliver(&row, now) => o,
            _ = stop.cancelled() => return None,
        };
        let now = now_ms();
        let unmatched = matches!(outcome, Attempt::Unmatched(_));
        let settled = settle(&row, outcome, retry, now, jitter(), false);
        record_outcome(metrics, name, &row.event_id, &settled, unmatched);
        let pending = (settled.status == "pending").then_some(settled.next_ms);
        if let Err(e) = registry.outbox_settle(vec![settled], now).await {
            tracing::warn!(sink = name, error = %e, "outbox update not written");
            return Some(Duration::from_secs(1));
        }
        if let Some(next) = pending {
            return Some(Duration::from_millis((next - now).max(0) as u64));
        }
        wait = Duration::ZERO;
    }
    Some(wait)
}

/// How long a worker with nothing to do sleeps before it looks again (it is woken sooner when
/// rows are written).
const IDLE: Duration = Duration::from_secs(5);

/// Delivers a sink's outbox until `stop`: woken by `ready` when new rows are written, and by
/// its own timer for retries. `readings` (FHIR with `fhir.all_readings`): the readings lane.
pub async fn run(
    registry: Registry,
    connector: Connector,
    retry: RetryConfig,
    ready: Arc<Notify>,
    metrics: Metrics,
    stop: CancellationToken,
    mut readings: Option<ReadingsLane>,
) {
    let name = connector.sink().as_str();
    let mut depth_at = 0i64;
    loop {
        let Some(mut wait) = deliver_events(&registry, &connector, &retry, &metrics, &stop).await
        else {
            return;
        };
        if let (Some(lane), Connector::Fhir(fhir)) = (readings.as_mut(), &connector) {
            wait = wait.min(lane.step(&registry, fhir, &retry, &metrics).await);
        }
        // The gauge: every pending row, and readings still in the store's spool.
        let now = now_ms();
        if now - depth_at >= 1000 {
            depth_at = now;
            let spooled = match &readings {
                Some(lane) => lane.spooled().await,
                None => 0,
            };
            if let Ok(n) = registry.outbox_depth(name).await {
                metrics
                    .outbox_pending
                    .get_or_create(&vec![("sink", name.to_owned())])
                    .set(n + spooled);
            }
        }
        if stop.is_cancelled() {
            return;
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

    fn row(window_ms: i64, window_attempts: u32) -> OutboxRow {
        OutboxRow {
            id: 7,
            event_id: "evt_1".into(),
            event_type: "alert.opened".into(),
            patient_id: "p1".into(),
            payload: "{}".into(),
            created_ms: 0,
            attempts: 40,
            window_ms,
            window_attempts,
        }
    }

    #[test]
    fn a_retried_delivery_starts_a_new_window_for_backoff_and_giving_up() {
        let r = RetryConfig {
            retry_initial_ms: 1000,
            retry_max_s: 60,
            give_up_after_s: 100,
            ..RetryConfig::default()
        };
        let retry = || Attempt::Retry("503".into());
        // Created at 0, put back by an admin at 1,000,000 ms: 40 attempts in all, none since.
        // The next wait is the first one again, and giving up counts from the retry.
        let s = settle(&row(1_000_000, 0), retry(), &r, 1_050_000, 0.0, false);
        assert_eq!((s.status, s.next_ms), ("pending", 1_051_000));
        let s = settle(&row(1_000_000, 3), retry(), &r, 1_050_000, 0.0, false);
        assert_eq!(s.next_ms, 1_050_000 + 8000);
        let s = settle(&row(1_000_000, 3), retry(), &r, 1_100_000, 0.0, false);
        assert_eq!(s.status, "failed");
        assert_eq!(s.error.as_deref(), Some("gave up: 503"));
        // Refused and unmatched fail at once; delivered readings are deleted.
        let s = settle(
            &row(0, 0),
            Attempt::Unmatched("who?".into()),
            &r,
            5,
            0.0,
            false,
        );
        assert_eq!((s.status, s.error.as_deref()), ("failed", Some("who?")));
        let s = settle(&row(0, 0), Attempt::Delivered, &r, 5, 0.0, true);
        assert_eq!((s.status, s.delete, s.error), ("delivered", true, None));
    }
}
