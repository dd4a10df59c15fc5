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
//!
//! Instances sharing one database share the outbox: each sink's deliveries are one instance's
//! at a time, under the lease `outbox:<sink>` ([`crate::registry::lease`]). Its holder renews
//! it while it works and gives it up when it stops; the others look every few seconds and take
//! it once it is free or has lapsed. So events stay in order and no row is attempted by two
//! instances at once (a holder paused past its lease, then woken mid-delivery, is the one case
//! left to the event id's deduplication at the receiver).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::fhir_sink::FhirSink;
use super::readings::ReadingsLane;
use super::record::Sink;
use super::retry::{Attempt, jitter, settle};
use super::webhook::WebhookSink;
use crate::cluster::HeldLease;
use crate::config::RetryConfig;
use crate::domain::now_ms;
pub use crate::registry::{Delivery, OutboxRow};
use crate::registry::{Lane, Registry, Settled};
use crate::telemetry::Metrics;

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
    lease: &mut HeldLease,
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
        if !lease.ensure(registry).await {
            return Some(LEASE_RETRY);
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

/// How long a sink's lease lasts unless renewed: how long deliveries wait when their instance
/// dies without giving it up.
const LEASE_TTL_MS: i64 = 15_000;

/// How often an instance that does not hold a sink's lease asks for it.
const LEASE_RETRY: Duration = Duration::from_secs(2);

/// Delivers a sink's outbox until `stop`: woken by `ready` when new rows are written, and by
/// its own timer for retries. `readings` (FHIR with `fhir.all_readings`): the readings lane.
pub async fn run(
    registry: Registry,
    connector: Connector,
    retry: RetryConfig,
    ready: Arc<Notify>,
    metrics: Metrics,
    stop: CancellationToken,
    readings: Option<ReadingsLane>,
) {
    let mut lease = HeldLease::new(
        format!("outbox:{}", connector.sink().as_str()),
        "delivering this sink's outbox",
        LEASE_TTL_MS,
        &metrics,
    );
    work(
        &registry, &connector, &retry, &ready, &metrics, &stop, readings, &mut lease,
    )
    .await;
    lease.release(&registry).await;
}

#[expect(
    clippy::too_many_arguments,
    reason = "the worker's parts, passed down from run"
)]
async fn work(
    registry: &Registry,
    connector: &Connector,
    retry: &RetryConfig,
    ready: &Notify,
    metrics: &Metrics,
    stop: &CancellationToken,
    mut readings: Option<ReadingsLane>,
    lease: &mut HeldLease,
) {
    let name = connector.sink().as_str();
    let mut depth_at = 0i64;
    loop {
        if !lease.ensure(registry).await {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(LEASE_RETRY) => continue,
            }
        }
        let Some(mut wait) = deliver_events(registry, connector, retry, metrics, stop, lease).await
        else {
            return;
        };
        if let (Some(lane), Connector::Fhir(fhir)) = (readings.as_mut(), connector)
            && lease.ensure(registry).await
        {
            wait = wait.min(lane.step(registry, fhir, retry, metrics).await);
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
