//! The patient's CRM record: care plans, alerts, notes, the timeline of everything that
//! happened, and the outbox of events for the outward connectors — the registry's methods over
//! its record and outbox stores ([`crate::registry::storage::RecordStore`],
//! [`crate::registry::storage::OutboxStore`]). The types are the registry's
//! ([`crate::registry::record`], [`crate::registry::outbox`]); the SQL is each backend's.
//!
//! An alert, its timeline entry and its outbox rows are written in one transaction, so a crash
//! can lose none of them without losing all (and then the engine's restart finds the
//! condition again). A clinician's action on an alert, a care plan's change and a note are
//! written with their audit line. The database also guarantees one unresolved alert per
//! patient and rule, whatever the engine believes.

use std::sync::Arc;

use serde_json::Value;

use crate::alerts::engine::{Effect, OpenAlert, Resolution};
use crate::alerts::rules::CarePlan;
use crate::domain::PatientId;
use crate::registry::audit::NewAuditLine;
use crate::registry::lease::Fence;
pub use crate::registry::plan_in_force::PlanInForce;
use crate::registry::{Delivery, Lane, OutboxRow, QueuedReading, Registry, RegistryError, Settled};

pub use crate::registry::record::{
    Alert, AlertActionError, AlertQuery, AlertStatus, EngineNotice, Event, Noticed, Sink, Triage,
    Trigger,
};

impl Registry {
    /// Writes the engine's effects — alerts, timeline entries and outbox rows — in one
    /// transaction, and returns the events that resulted; with a `fence`, only while its lease
    /// is held as it says (`Fenced` otherwise, nothing written).
    pub async fn apply_effects(
        &self,
        effects: Vec<Effect>,
        sinks: Arc<[Sink]>,
        fence: Option<Fence>,
    ) -> Result<Vec<Event>, RegistryError> {
        if effects.is_empty() {
            return Ok(Vec::new());
        }
        self.storage()
            .apply_effects(effects, sinks.to_vec(), fence)
            .await
    }

    /// People's changes to patients of alert partitions `parts` the engine must hear of,
    /// written by transactions in `[from, until)`; none on SQLite (see
    /// [`crate::registry::storage::RecordStore::engine_notices`]).
    pub async fn engine_notices(
        &self,
        parts: Vec<u16>,
        from: i64,
        until: i64,
    ) -> Result<Vec<Noticed>, RegistryError> {
        self.storage().engine_notices(parts, from, until).await
    }

    /// Forgets engine notices written before `before_ms`; how many.
    pub async fn prune_engine_notices(&self, before_ms: i64) -> Result<u64, RegistryError> {
        self.storage().prune_engine_notices(before_ms).await
    }

    /// Every unresolved alert, for the engine at start-up.
    pub async fn unresolved_alerts(&self) -> Result<Vec<OpenAlert>, RegistryError> {
        self.storage().unresolved_alerts().await
    }

    /// For each rule whose latest alert a person resolved (not Vigil), that resolution: the
    /// engine replays it at start-up so that a condition still holding stays silenced.
    pub async fn clinician_resolutions(&self) -> Result<Vec<Resolution>, RegistryError> {
        self.storage().clinician_resolutions().await
    }

    /// Alerts, newest first.
    pub async fn alerts(&self, q: AlertQuery) -> Result<Vec<Alert>, RegistryError> {
        self.storage().alerts(q).await
    }

    pub async fn alert(&self, id: String) -> Result<Option<Alert>, RegistryError> {
        self.storage().alert(id).await
    }

    /// Acknowledges (`resolve` false) or resolves an alert on a user's behalf and appends
    /// `audit` in the same transaction; returns the alert as it now is and the events written.
    /// Acknowledging an acknowledged alert changes nothing (and is audited); a resolved alert
    /// can be neither (and nothing is audited).
    #[allow(clippy::too_many_arguments)]
    pub async fn act_on_alert(
        &self,
        id: String,
        resolve: bool,
        by: String,
        note: Option<String>,
        now_ms: i64,
        sinks: Arc<[Sink]>,
        audit: NewAuditLine,
    ) -> Result<(Alert, Vec<Event>), AlertActionError> {
        self.storage()
            .act_on_alert(id, resolve, by, note, now_ms, sinks.to_vec(), audit)
            .await
    }

    /// Assigns or snoozes an alert on a user's behalf ([`Triage`]) and appends `audit` in the
    /// same transaction; the alert as it now is and the events written (a snooze acknowledges
    /// an open alert). A resolved alert can be neither (and nothing is audited).
    pub async fn triage_alert(
        &self,
        id: String,
        triage: Triage,
        by: String,
        now_ms: i64,
        sinks: Arc<[Sink]>,
        audit: NewAuditLine,
    ) -> Result<(Alert, Vec<Event>), AlertActionError> {
        self.storage()
            .triage_alert(id, triage, by, now_ms, sinks.to_vec(), audit)
            .await
    }

    /// The patient's own care plan, if one was set.
    pub async fn care_plan(&self, patient: PatientId) -> Result<Option<CarePlan>, RegistryError> {
        self.storage().care_plan(patient).await
    }

    /// Every patient with the plan of their own (None: the default plan).
    pub async fn all_plans(&self) -> Result<Vec<(PatientId, Option<CarePlan>)>, RegistryError> {
        self.storage().all_plans().await
    }

    /// The care plan the patient is judged by (docs/alerts.md, "Programme care plans"): their
    /// own; else, when their latest enrollment episode has no end and its programme has a
    /// shipped plan (the four built-in programmes do), that plan; else the default.
    pub async fn plan_in_force(&self, patient: PatientId) -> Result<PlanInForce, RegistryError> {
        let own = self.care_plan(patient.clone()).await?;
        let latest = self
            .storage()
            .enrollments(patient)
            .await?
            .into_iter()
            .next();
        let open = latest.filter(|e| e.end.is_none()).map(|e| e.program);
        Ok(PlanInForce::of(own, open.as_deref()))
    }

    /// The plan the alert engine judges the patient by: none at all (an empty plan) while they
    /// are discharged, else [`Registry::plan_in_force`] (`None` for the default plan).
    pub async fn engine_plan(&self, patient: PatientId) -> Result<Option<CarePlan>, RegistryError> {
        let discharged = self.patient(patient.clone()).await?.is_discharged();
        Ok(self.plan_in_force(patient).await?.for_engine(discharged))
    }

    /// Discharges a patient ([`crate::registry::discharge`]): their unresolved alerts are
    /// resolved ("patient discharged"), each with its timeline entry, outbox rows and audit
    /// line, with the discharge's own timeline entry and audit line, all in one transaction.
    /// The caller announces the events and tells the engine (on SQLite; PostgreSQL's engine
    /// learns of it from the transaction).
    pub async fn set_discharge(
        &self,
        change: crate::registry::discharge::DischargeChange,
    ) -> Result<crate::registry::patients::Discharged, RegistryError> {
        self.storage().set_discharge(change).await
    }

    /// [`Registry::plan_in_force`] of every patient, `None` for the default plan: what the
    /// alert engine is built with.
    pub async fn all_plans_in_force(
        &self,
    ) -> Result<Vec<(PatientId, Option<CarePlan>)>, RegistryError> {
        let plans = self.storage().all_plans().await?;
        // Discharged patients are watched by no rule: they raise no alerts.
        let discharged: std::collections::HashSet<PatientId> = self
            .patients()
            .await?
            .into_iter()
            .filter(|p| p.is_discharged())
            .map(|p| p.id)
            .collect();
        let open: std::collections::HashMap<PatientId, String> =
            if plans.iter().any(|(_, p)| p.is_none()) {
                self.storage()
                    .open_enrollments()
                    .await?
                    .into_iter()
                    .collect()
            } else {
                Default::default()
            };
        let plans = plans
            .into_iter()
            .map(|(patient, own)| {
                let plan = PlanInForce::of(own, open.get(&patient).map(String::as_str))
                    .for_engine(discharged.contains(&patient));
                (patient, plan)
            })
            .collect();
        Ok(plans)
    }

    /// Sets a patient's care plan (validated by the caller), notes it on the timeline and
    /// appends `audit` (when given), all in one transaction.
    pub async fn set_care_plan(
        &self,
        patient: PatientId,
        plan: CarePlan,
        by: String,
        now_ms: i64,
        audit: Option<NewAuditLine>,
    ) -> Result<(), RegistryError> {
        self.storage()
            .set_care_plan(patient, plan, by, now_ms, audit)
            .await
    }

    /// Adds a clinician's note to the timeline with its audit line and returns the entry.
    pub async fn add_note(
        &self,
        patient: PatientId,
        by: String,
        text: String,
        now_ms: i64,
        audit: NewAuditLine,
    ) -> Result<Value, RegistryError> {
        let row = self
            .storage()
            .add_note(patient, by, text, now_ms, audit)
            .await?;
        Ok(row.to_json())
    }

    /// Adds an entry of any kind to the timeline (visits, device events written elsewhere).
    pub async fn add_timeline(
        &self,
        patient: PatientId,
        kind: String,
        data: Value,
        now_ms: i64,
    ) -> Result<(), RegistryError> {
        self.storage()
            .add_timeline(patient, kind, data.to_string(), now_ms)
            .await
    }

    /// The patient's timeline, newest first, entries before `before_ms`.
    pub async fn timeline(
        &self,
        patient: PatientId,
        before_ms: i64,
        limit: usize,
    ) -> Result<Vec<Value>, RegistryError> {
        let rows = self.storage().timeline(patient, before_ms, limit).await?;
        Ok(rows.iter().map(|r| r.to_json()).collect())
    }

    /// The oldest pending rows of a sink in a lane, in order, with the time each is due.
    pub async fn outbox_pending(
        &self,
        sink: &'static str,
        lane: Lane,
        limit: usize,
    ) -> Result<Vec<(OutboxRow, i64)>, RegistryError> {
        self.storage().outbox_pending(sink, lane, limit).await
    }

    /// When the next pending reading of a sink is due, if one is pending.
    pub async fn outbox_next_reading_ms(
        &self,
        sink: &'static str,
    ) -> Result<Option<i64>, RegistryError> {
        self.storage().outbox_next_reading_ms(sink).await
    }

    /// Records the outcomes of attempts, in one transaction (a row settled already is left as
    /// it is).
    pub async fn outbox_settle(
        &self,
        outcomes: Vec<Settled>,
        now: i64,
    ) -> Result<(), RegistryError> {
        if outcomes.is_empty() {
            return Ok(());
        }
        self.storage().outbox_settle(outcomes, now).await
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
        self.storage().queue_readings(sink, readings, now).await
    }

    /// Deliveries, newest first.
    pub async fn deliveries(
        &self,
        status: Option<String>,
        sink: Option<String>,
        patient_id: Option<String>,
        limit: usize,
    ) -> Result<Vec<Delivery>, RegistryError> {
        self.storage()
            .deliveries(status, sink, patient_id, limit)
            .await
    }

    /// Puts a failed delivery back in the queue (after the receiver, or the patient's MRN, was
    /// fixed), due now and with a new delivery window: the backoff starts again from
    /// `retry_initial_ms`, and `give_up_after_s` counts from now. `false` when there is no
    /// failed delivery with that id.
    pub async fn retry_delivery(&self, id: i64, now: i64) -> Result<bool, RegistryError> {
        self.storage().retry_delivery(id, now).await
    }

    /// Puts every failed delivery of a patient (and of one sink, if given) back in the queue,
    /// as [`Registry::retry_delivery`] does one; how many.
    pub async fn retry_deliveries(
        &self,
        patient_id: String,
        sink: Option<String>,
        now: i64,
    ) -> Result<usize, RegistryError> {
        self.storage().retry_deliveries(patient_id, sink, now).await
    }

    /// Pending rows of a sink (readings among them), for the metrics.
    pub async fn outbox_depth(&self, sink: &'static str) -> Result<i64, RegistryError> {
        self.storage().outbox_depth(sink).await
    }

    /// Pending reading rows of a sink.
    pub async fn outbox_waiting_readings(&self, sink: &'static str) -> Result<i64, RegistryError> {
        self.storage().outbox_waiting_readings(sink).await
    }
}
