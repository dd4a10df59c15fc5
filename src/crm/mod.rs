//! The patient's record (CRM) and everything that leaves Vigil about it.
//!
//! - [`record`]: care plans, alerts, the timeline and the outbox, as the registry stores them
//!   (SQLite's `registry.db` or PostgreSQL).
//! - [`task`]: the alert engine's shell — committed observations in, effects out to the
//!   record, one transaction per batch.
//! - [`outbox`]: one worker per outward sink, delivering in order with retries ([`retry`]).
//! - [`webhook`], [`fhir_sink`] (with [`fhir`] resource builders, [`fhir_refs`] for finding
//!   the server's patients and devices, and [`smart`] credentials): the connectors;
//!   [`readings`] sends every stored reading to FHIR where the clinic wants it.
//!
//! It must never deliver an event that is not committed in the record, or drop one that is:
//! outbox rows are written with the alert, and removed from the queue only once delivered or
//! given up (visible as failed in the API).

pub mod fhir;
pub mod fhir_refs;
pub mod fhir_sink;
pub mod outbox;
pub mod partitioned;
pub mod readings;
pub mod record;
pub mod retry;
pub mod smart;
pub mod task;
pub mod webhook;

use std::sync::Arc;

use tokio::sync::{Notify, broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::alerts::engine::Effect;
use crate::alerts::rules::CarePlan;
use crate::domain::{PatientId, now_ms};
use crate::registry::lease::Lease;
use crate::registry::{Registry, RegistryError};
use crate::telemetry::Metrics;
use record::{Event, Sink};

/// What the API tells the engine (run by [`task::run`]).
#[derive(Debug)]
pub enum Command {
    PlanChanged(PatientId, Option<Arc<CarePlan>>),
    Acknowledged(PatientId, String),
    Resolved(PatientId, String),
}

/// The first wait after a failed write of alert effects; it doubles on each failure.
const APPLY_RETRY_INITIAL: std::time::Duration = std::time::Duration::from_millis(50);
/// The longest wait between attempts to write alert effects: an alarm must land within
/// seconds of the database taking writes again.
const APPLY_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(2);

/// How a write of alert effects ended ([`Crm::apply`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Written (or there was nothing to write).
    Written,
    /// Not written: stopped first.
    Stopped,
    /// Not written: the partition's lease moved on (another instance evaluates it now).
    Fenced,
}

/// A handle to the record's live side; cheap to clone.
#[derive(Clone)]
pub struct Crm {
    pub registry: Registry,
    pub metrics: Metrics,
    /// The sinks configured; events are queued for these.
    pub sinks: Arc<[Sink]>,
    commands: mpsc::Sender<Command>,
    ready: Arc<Notify>,
    fhir_ready: Arc<Notify>,
    events: broadcast::Sender<Arc<Event>>,
}

impl Crm {
    /// A handle and the receiving end of its engine commands (for [`task::run`]).
    pub fn new(
        registry: Registry,
        metrics: Metrics,
        sinks: Vec<Sink>,
    ) -> (Crm, mpsc::Receiver<Command>) {
        let (commands, rx) = mpsc::channel(1024);
        let (events, _) = broadcast::channel(1024);
        (
            Crm {
                registry,
                metrics,
                sinks: sinks.into(),
                commands,
                ready: Arc::new(Notify::new()),
                fhir_ready: Arc::new(Notify::new()),
                events,
            },
            rx,
        )
    }

    /// Woken when webhook (or FHIR) rows are queued.
    pub fn ready(&self, sink: Sink) -> Arc<Notify> {
        match sink {
            Sink::Webhook => self.ready.clone(),
            Sink::Fhir => self.fhir_ready.clone(),
        }
    }

    /// Alert events as they are committed (for the live view).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.events.subscribe()
    }

    /// Tells the engine (a full queue waits: the API answers only once the engine knows).
    pub async fn tell(&self, cmd: Command) {
        if self.commands.send(cmd).await.is_err() {
            tracing::debug!("alert engine not running; command dropped");
        }
    }

    /// Writes effects to the record and announces the resulting events; a failed write is
    /// retried, backing off to [`APPLY_RETRY_MAX`], until it lands, `stop` is cancelled or —
    /// written under a `fence` — the lease has moved on.
    ///
    /// It never gives up while the gateway runs: the engine already counts these alerts as
    /// open, so an effect given up would be an alarm nobody hears until the next restart.
    /// The engine waits meanwhile (it could record nothing anyway); readings stored in the
    /// meantime are judged once the write lands. `vigil_alert_effects_waiting` shows the
    /// effects waiting. When stopped first, the next start's rebuild finds any alert whose
    /// condition still holds; when fenced, the lease's new holder does, from the stored state.
    pub async fn apply(
        &self,
        effects: Vec<Effect>,
        fence: Option<&Lease>,
        stop: &CancellationToken,
    ) -> Applied {
        if effects.is_empty() {
            return Applied::Written;
        }
        let waiting = i64::try_from(effects.len()).unwrap_or(i64::MAX);
        let mut delay = APPLY_RETRY_INITIAL;
        let mut attempt: u64 = 0;
        let written = loop {
            attempt += 1;
            match self
                .registry
                .apply_effects(
                    effects.clone(),
                    self.sinks.clone(),
                    fence.map(|l| l.fence(now_ms())),
                )
                .await
            {
                Ok(events) => {
                    if attempt > 1 {
                        tracing::info!(attempt, "alert effects written after failed attempts");
                    }
                    self.announce(events);
                    break Applied::Written;
                }
                Err(RegistryError::Fenced(lease)) => {
                    self.metrics.alert_writes_fenced.inc();
                    tracing::warn!(
                        %lease,
                        effects = effects.len(),
                        "alert effects not written: the partition's lease moved on; its new holder evaluates it"
                    );
                    break Applied::Fenced;
                }
                Err(e) => {
                    self.metrics.alert_effect_write_failures.inc();
                    if attempt == 1 {
                        self.metrics.alert_effects_waiting.inc_by(waiting);
                    }
                    tracing::warn!(
                        error = %e,
                        attempt,
                        effects = effects.len(),
                        retry_ms = delay.as_millis() as u64,
                        "alert effects not written; retrying"
                    );
                    tokio::select! {
                        _ = stop.cancelled() => {
                            tracing::error!(
                                effects = effects.len(),
                                "alert effects not written before shutdown; the next start finds any alert whose condition still holds"
                            );
                            break Applied::Stopped;
                        }
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(APPLY_RETRY_MAX);
                }
            }
        };
        if attempt > 1 {
            self.metrics.alert_effects_waiting.dec_by(waiting);
        }
        written
    }

    /// Counts, wakes the outbox workers and tells live subscribers about committed events.
    pub fn announce(&self, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        for e in events {
            let labels = vec![
                ("type", e.event_type.to_owned()),
                ("severity", format!("{:?}", e.alert.severity).to_lowercase()),
            ];
            self.metrics.alert_events.get_or_create(&labels).inc();
            if e.event_type == "alert.opened" {
                self.metrics
                    .alerts_opened
                    .get_or_create(&vec![
                        ("kind", e.alert.kind.clone()),
                        ("severity", format!("{:?}", e.alert.severity).to_lowercase()),
                    ])
                    .inc();
            }
            tracing::info!(
                alert_id = %e.alert.id,
                event = e.event_type,
                rule_id = %e.alert.rule_id,
                "alert event"
            );
            let _ = self.events.send(Arc::new(e));
        }
        self.wake_outbox();
    }

    /// Wakes the outbox workers (new rows, or a failed delivery put back in the queue).
    pub fn wake_outbox(&self) {
        self.ready.notify_one();
        self.fhir_ready.notify_one();
    }
}
