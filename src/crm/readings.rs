//! Every stored reading to the FHIR server, as an `Observation` (`fhir.all_readings`): the FHIR
//! worker's second lane, beside the alert events.
//!
//! The way of a reading: the store's writer puts its key in the FHIR spool in the same
//! transaction that stores it (so nothing accepted is lost, and a redelivered reading, which is
//! not stored again, is not spooled again); this lane moves the oldest spooled readings into the
//! outbox (`reading` rows, one per reading, keyed by the reading's identifier so a reading is
//! queued once) and then clears them from the spool; it delivers the due rows, up to
//! `fhir.readings_batch_max` at a time, and waits `n / fhir.readings_per_s` seconds after `n`
//! readings before the next batch — the bounded rate. On the server, each Observation is a
//! conditional create on the reading's identifier, so a resend after a crash or a lost answer
//! creates nothing.
//!
//! Only a few batches' worth of readings are in the outbox at once; the rest wait in the spool
//! (on disk, in the store), so a server that is down or slower than the readings arrive grows
//! the spool, not memory or the registry. That backlog is never silent: the
//! `vigil_outbox_pending{sink="fhir"}` gauge counts the spool too, and a warning is logged
//! while it holds more than ten minutes' worth at the configured rate.
//!
//! It must never slow the ingest path: the spool insert is all the writer does; the rest runs
//! here, on the worker's own time.

use std::time::Duration;

use super::fhir_sink::{self, FhirSink};
use super::retry::{jitter, settle};
use crate::config::RetryConfig;
use crate::domain::now_ms;
use crate::registry::{Lane, QueuedReading, Registry};
use crate::store::Store;
use crate::telemetry::Metrics;

/// The sink the readings go to.
const SINK: &str = "fhir";

/// Batches' worth of readings moved into the outbox ahead of delivery.
const WINDOW_BATCHES: usize = 4;

/// How often the backlog is measured, and at most how often a warning about it is logged.
const BACKLOG_CHECK_MS: i64 = 60_000;
const BACKLOG_WARN_EVERY_MS: i64 = 600_000;

/// The wait after `n` readings so that no more than `per_s` go out per second.
pub fn pace_ms(n: usize, per_s: u32) -> i64 {
    let n = i64::try_from(n).unwrap_or(i64::MAX / 1000);
    let per_s = i64::from(per_s.max(1));
    (n * 1000 + per_s - 1) / per_s
}

/// The readings lane's state.
pub struct ReadingsLane {
    store: Store,
    batch_max: usize,
    per_s: u32,
    /// The rate: no batch before this.
    not_before_ms: i64,
    checked_ms: i64,
    warned_ms: i64,
}

impl ReadingsLane {
    pub fn new(store: Store, batch_max: usize, per_s: u32) -> ReadingsLane {
        ReadingsLane {
            store,
            batch_max: batch_max.max(1),
            per_s,
            not_before_ms: 0,
            checked_ms: 0,
            warned_ms: i64::MIN / 2,
        }
    }

    /// Readings still in the store's spool (0 if it cannot be read).
    pub async fn spooled(&self) -> i64 {
        self.store.fhir_spool_depth().await.unwrap_or(0)
    }

    /// Moves the oldest spooled readings into the outbox, up to a few batches' worth pending.
    async fn top_up(&self, registry: &Registry, now: i64) -> Result<(), String> {
        let waiting = registry
            .outbox_waiting_readings(SINK)
            .await
            .map_err(|e| e.to_string())?;
        let room = i64::try_from(self.batch_max * WINDOW_BATCHES).unwrap_or(i64::MAX) - waiting;
        if room <= 0 {
            return Ok(());
        }
        let spooled = self
            .store
            .fhir_spool_batch(usize::try_from(room).unwrap_or(0))
            .await
            .map_err(|e| e.to_string())?;
        if spooled.is_empty() {
            return Ok(());
        }
        // Exactly these are cleared after: on PostgreSQL another instance's reading with a
        // lower id may commit after this read.
        let ids: Vec<i64> = spooled.iter().map(|(id, _)| *id).collect();
        let queued: Vec<QueuedReading> = spooled
            .into_iter()
            .filter_map(|(_, o)| o)
            .map(|o| QueuedReading {
                event_id: fhir_sink::reading_event_id(&o),
                patient_id: o.patient_id.as_str().to_owned(),
                payload: fhir_sink::reading_payload(&o),
            })
            .collect();
        // Queued first, cleared after: a crash in between queues them again, which the
        // outbox's unique event id makes a no-op.
        registry
            .queue_readings(SINK, queued, now)
            .await
            .map_err(|e| e.to_string())?;
        self.store
            .fhir_spool_done(ids)
            .await
            .map_err(|e| e.to_string())
    }

    /// Warns while the backlog holds more than ten minutes' worth at the configured rate.
    async fn watch_backlog(&mut self, registry: &Registry, now: i64) {
        if now - self.checked_ms < BACKLOG_CHECK_MS {
            return;
        }
        self.checked_ms = now;
        let waiting =
            registry.outbox_waiting_readings(SINK).await.unwrap_or(0) + self.spooled().await;
        let minutes = waiting / (i64::from(self.per_s) * 60).max(1);
        if minutes >= 10 && now - self.warned_ms >= BACKLOG_WARN_EVERY_MS {
            self.warned_ms = now;
            tracing::warn!(
                readings = waiting,
                minutes,
                per_s = self.per_s,
                "readings wait to be written to the FHIR server: it is down or slower than \
                 readings arrive; nothing is lost (they wait on disk), see \
                 vigil_outbox_pending{{sink=\"fhir\"}} and raise fhir.readings_per_s if the \
                 server allows"
            );
        }
    }

    /// Delivers one batch of due readings, if the rate allows; how long until it is worth
    /// calling again.
    pub async fn step(
        &mut self,
        registry: &Registry,
        fhir: &FhirSink,
        retry: &RetryConfig,
        metrics: &Metrics,
    ) -> Duration {
        let now = now_ms();
        if now < self.not_before_ms {
            return Duration::from_millis((self.not_before_ms - now) as u64);
        }
        if let Err(e) = self.top_up(registry, now).await {
            tracing::warn!(error = %e, "readings not moved to the FHIR outbox; will try again");
            return Duration::from_secs(1);
        }
        self.watch_backlog(registry, now).await;
        let rows = match registry
            .outbox_pending(SINK, Lane::Readings { now_ms: now }, self.batch_max)
            .await
        {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "outbox not readable");
                return Duration::from_secs(1);
            }
        };
        if rows.is_empty() {
            // Nothing due: until the first waiting one is (new ones wake the worker).
            return match registry.outbox_next_reading_ms(SINK).await {
                Ok(Some(next)) => Duration::from_millis((next - now).clamp(0, 5000) as u64),
                _ => Duration::from_secs(5),
            };
        }
        let rows: Vec<_> = rows.into_iter().map(|(row, _)| row).collect();
        let outcomes = fhir.deliver_readings(&rows, now).await;
        let now = now_ms();
        let (mut failed, mut retrying) = (0usize, 0usize);
        let mut settled = Vec::with_capacity(rows.len());
        for (row, outcome) in rows.iter().zip(outcomes) {
            let s = settle(row, outcome, retry, now, jitter(), true);
            match s.status {
                "failed" => failed += 1,
                "pending" => retrying += 1,
                _ => {}
            }
            // Counted one by one, logged once per batch below (and never with a reason, which
            // may name a patient's identifier).
            metrics
                .outbox_attempts
                .get_or_create(&vec![
                    ("sink", SINK.to_owned()),
                    ("outcome", s.status.to_owned()),
                ])
                .inc();
            settled.push(s);
        }
        if failed + retrying > 0 {
            tracing::warn!(
                sent = rows.len(),
                failed,
                retrying,
                "readings not all written to the FHIR server; see GET /api/v1/deliveries?sink=fhir \
                 for the reasons"
            );
        }
        if let Err(e) = registry.outbox_settle(settled, now).await {
            tracing::warn!(error = %e, "outbox update not written");
        }
        self.not_before_ms = now + pace_ms(rows.len(), self.per_s);
        Duration::from_millis(pace_ms(rows.len(), self.per_s) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pace_keeps_to_the_rate() {
        assert_eq!(pace_ms(100, 50), 2000);
        assert_eq!(pace_ms(1, 50), 20);
        assert_eq!(pace_ms(1, 3), 334);
        assert_eq!(pace_ms(0, 50), 0);
        assert_eq!(pace_ms(5, 0), 5000, "a rate of 0 is read as 1");
    }
}
