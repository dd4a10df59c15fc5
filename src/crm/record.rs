//! The patient's CRM record in `registry.db`: care plans, alerts, the timeline of everything
//! that happened, and the outbox of events for the outward connectors.
//!
//! An alert, its timeline entry and its outbox rows are written in one transaction, so a crash
//! can lose none of them without losing all (and then the engine's restart finds the
//! condition again). The database also guarantees one unresolved alert per patient and rule
//! (a partial unique index), whatever the engine believes.

use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use serde::Serialize;
use serde_json::{Value, json};

use crate::alerts::engine::{Effect, OpenAlert, Resolution};
use crate::alerts::rules::{CarePlan, Severity};
use crate::domain::{Observation, PatientId, format_rfc3339};
use crate::registry::{Registry, RegistryError};

/// Where outbox events go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Sink {
    Fhir,
    Webhook,
}

impl Sink {
    pub fn as_str(self) -> &'static str {
        match self {
            Sink::Fhir => "fhir",
            Sink::Webhook => "webhook",
        }
    }

    /// Whether the sink takes this event type (FHIR has nothing to say about an
    /// acknowledgement).
    fn takes(self, event_type: &str) -> bool {
        match self {
            Sink::Webhook => true,
            Sink::Fhir => event_type != "alert.acknowledged",
        }
    }
}

/// An alert's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    Open,
    Acknowledged,
    Resolved,
}

impl AlertStatus {
    pub fn parse(s: &str) -> Option<AlertStatus> {
        match s {
            "open" => Some(AlertStatus::Open),
            "acknowledged" => Some(AlertStatus::Acknowledged),
            "resolved" => Some(AlertStatus::Resolved),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Open => "open",
            AlertStatus::Acknowledged => "acknowledged",
            AlertStatus::Resolved => "resolved",
        }
    }
}

fn severity_str(s: Severity) -> &'static str {
    match s {
        Severity::Low => "low",
        Severity::Medium => "medium",
        Severity::High => "high",
    }
}

fn parse_severity(s: &str) -> Severity {
    match s {
        "high" => Severity::High,
        "medium" => Severity::Medium,
        _ => Severity::Low,
    }
}

/// The reading that tipped an alert's condition over.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Trigger {
    pub device_id: String,
    pub metric: String,
    pub value: f64,
    pub unit: String,
    pub time: String,
}

impl Trigger {
    fn of(o: &Observation) -> Trigger {
        Trigger {
            device_id: o.device_id.as_str().to_owned(),
            metric: o.metric.name().to_owned(),
            value: o.value,
            unit: o.metric.unit().to_owned(),
            time: format_rfc3339(o.time_ms),
        }
    }
}

/// An alert as the API and the outward events show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    pub id: String,
    pub patient_id: String,
    pub rule_id: String,
    pub kind: String,
    pub severity: Severity,
    pub status: AlertStatus,
    pub opened_at: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger: Option<Trigger>,
    pub escalations: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acknowledged_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acknowledged_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ack_note: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolve_note: Option<String>,
}

/// A filter over alerts.
#[derive(Debug, Clone, Default)]
pub struct AlertQuery {
    pub status: Option<AlertStatus>,
    pub patient_id: Option<PatientId>,
    /// Only patients of these care teams (a clinician's view); `None` for all.
    pub teams: Option<Vec<String>>,
    pub limit: usize,
}

/// One outward event, as written to the outbox and delivered.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: String,
    pub event_type: &'static str,
    pub patient_id: String,
    pub time_ms: i64,
    pub alert: Alert,
}

impl Event {
    /// The Standard Webhooks body: `{"type", "timestamp", "data"}`.
    pub fn body(&self) -> String {
        json!({
            "type": self.event_type,
            "timestamp": format_rfc3339(self.time_ms),
            "data": self.alert,
        })
        .to_string()
    }
}

/// Why acknowledging or resolving was refused.
#[derive(Debug, thiserror::Error)]
pub enum AlertActionError {
    #[error("alert {0} not found")]
    NotFound(String),
    #[error("alert {0} is already resolved")]
    AlreadyResolved(String),
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

const ALERT_COLUMNS: &str = "id, patient_id, rule_id, kind, severity, status, message, opened_ms,
    trigger_json, escalations, acknowledged_ms, acknowledged_by, ack_note, resolved_ms,
    resolved_by, resolve_note";

fn alert_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Alert> {
    let trigger: Option<String> = r.get(8)?;
    let status: String = r.get(5)?;
    let severity: String = r.get(4)?;
    Ok(Alert {
        id: r.get(0)?,
        patient_id: r.get(1)?,
        rule_id: r.get(2)?,
        kind: r.get(3)?,
        severity: parse_severity(&severity),
        status: AlertStatus::parse(&status).unwrap_or(AlertStatus::Open),
        message: r.get(6)?,
        opened_at: format_rfc3339(r.get(7)?),
        trigger: trigger.and_then(|t| serde_json::from_str(&t).ok()),
        escalations: r.get(9)?,
        acknowledged_at: r.get::<_, Option<i64>>(10)?.map(format_rfc3339),
        acknowledged_by: r.get(11)?,
        ack_note: r.get(12)?,
        resolved_at: r.get::<_, Option<i64>>(13)?.map(format_rfc3339),
        resolved_by: r.get(14)?,
        resolve_note: r.get(15)?,
    })
}

fn load_alert(c: &Connection, id: &str) -> rusqlite::Result<Option<Alert>> {
    c.query_row(
        &format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE id = ?1"),
        [id],
        alert_row,
    )
    .optional()
}

fn reload(c: &Connection, id: &str) -> Result<Alert, RegistryError> {
    load_alert(c, id)?.ok_or_else(|| RegistryError::NotFound(format!("alert {id}")))
}

fn unresolved(c: &Connection, patient: &str, rule_id: &str) -> rusqlite::Result<Option<Alert>> {
    c.query_row(
        &format!(
            "SELECT {ALERT_COLUMNS} FROM alerts
             WHERE patient_id = ?1 AND rule_id = ?2 AND status <> 'resolved'"
        ),
        [patient, rule_id],
        alert_row,
    )
    .optional()
}

/// A new alert id: `alr_` and 16 random bytes in hex.
fn new_alert_id() -> Result<String, RegistryError> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| RegistryError::Db(format!("no randomness: {e}")))?;
    Ok(format!("alr_{}", hex::encode(b)))
}

fn timeline(
    tx: &Transaction<'_>,
    patient: &str,
    time_ms: i64,
    kind: &str,
    data: Value,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO timeline (patient_id, time_ms, kind, data) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![patient, time_ms, kind, data.to_string()])?;
    Ok(())
}

/// Records an event on the alert's timeline and queues it for every sink that takes it.
#[allow(clippy::too_many_arguments)]
fn emit(
    tx: &Transaction<'_>,
    sinks: &[Sink],
    alert: &Alert,
    event_type: &'static str,
    suffix: &str,
    time_ms: i64,
    extra: Value,
    out: &mut Vec<Event>,
) -> rusqlite::Result<()> {
    let mut data = json!({
        "alert_id": alert.id,
        "rule_id": alert.rule_id,
        "severity": alert.severity,
        "message": alert.message,
    });
    if let (Value::Object(d), Value::Object(x)) = (&mut data, extra) {
        d.extend(x);
    }
    timeline(tx, &alert.patient_id, time_ms, event_type, data)?;
    let event = Event {
        id: format!("evt_{}_{}{suffix}", &alert.id[4..], &event_type[6..]),
        event_type,
        patient_id: alert.patient_id.clone(),
        time_ms,
        alert: alert.clone(),
    };
    let body = event.body();
    for sink in sinks.iter().filter(|s| s.takes(event_type)) {
        tx.prepare_cached(
            "INSERT INTO outbox (sink, event_id, event_type, patient_id, payload, created_ms, next_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6) ON CONFLICT DO NOTHING",
        )?
        .execute(params![
            sink.as_str(),
            event.id,
            event_type,
            alert.patient_id,
            body,
            time_ms
        ])?;
    }
    out.push(event);
    Ok(())
}

impl Registry {
    /// Writes the engine's effects — alerts, timeline entries and outbox rows — in one
    /// transaction, and returns the events that resulted.
    pub async fn apply_effects(
        &self,
        effects: Vec<Effect>,
        sinks: Arc<[Sink]>,
    ) -> Result<Vec<Event>, RegistryError> {
        if effects.is_empty() {
            return Ok(Vec::new());
        }
        let ids = effects
            .iter()
            .map(|_| new_alert_id())
            .collect::<Result<Vec<_>, _>>()?;
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut events = Vec::new();
            for (effect, new_id) in effects.into_iter().zip(ids) {
                apply_one(&tx, &sinks, effect, new_id, &mut events)?;
            }
            tx.commit()?;
            Ok(events)
        })
        .await
    }

    /// Every unresolved alert, for the engine at start-up.
    pub async fn unresolved_alerts(&self) -> Result<Vec<OpenAlert>, RegistryError> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT patient_id, rule_id, severity, status, escalations, escalated_ms
                 FROM alerts WHERE status <> 'resolved'",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, u32>(4)?,
                    r.get::<_, i64>(5)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (patient, rule_id, severity, status, escalations, since_ms) = row?;
                if let Ok(patient) = PatientId::parse(&patient) {
                    out.push(OpenAlert {
                        patient,
                        rule_id,
                        severity: parse_severity(&severity),
                        acknowledged: status == "acknowledged",
                        escalations,
                        since_ms,
                    });
                }
            }
            Ok(out)
        })
        .await
    }

    /// For each rule whose latest alert a person resolved (not Vigil), that resolution: the
    /// engine replays it at start-up so that a condition still holding stays silenced.
    pub async fn clinician_resolutions(&self) -> Result<Vec<Resolution>, RegistryError> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT a.patient_id, a.rule_id, a.resolved_ms FROM alerts a
                 WHERE a.status = 'resolved' AND a.resolved_ms IS NOT NULL
                   AND coalesce(a.resolved_by, 'vigil') <> 'vigil'
                   AND a.opened_ms = (SELECT max(b.opened_ms) FROM alerts b
                                      WHERE b.patient_id = a.patient_id AND b.rule_id = a.rule_id)",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (patient, rule_id, at_ms) = row?;
                if let Ok(patient) = PatientId::parse(&patient) {
                    out.push(Resolution {
                        patient,
                        rule_id,
                        at_ms,
                    });
                }
            }
            Ok(out)
        })
        .await
    }

    /// Alerts, newest first.
    pub async fn alerts(&self, q: AlertQuery) -> Result<Vec<Alert>, RegistryError> {
        self.with(move |c| {
            let teams = q
                .teams
                .as_ref()
                .map(|t| serde_json::to_string(t).unwrap_or_else(|_| "[]".into()));
            let mut stmt = c.prepare(&format!(
                "SELECT {ALERT_COLUMNS} FROM alerts
                 WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR patient_id = ?2)
                   AND (?4 IS NULL OR patient_id IN (
                        SELECT id FROM patients WHERE care_team
                        IN (SELECT value FROM json_each(?4))))
                 ORDER BY opened_ms DESC, id LIMIT ?3"
            ))?;
            stmt.query_map(
                params![
                    q.status.map(AlertStatus::as_str),
                    q.patient_id.as_ref().map(PatientId::as_str),
                    i64::try_from(q.limit).unwrap_or(i64::MAX),
                    teams
                ],
                alert_row,
            )?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(RegistryError::from)
        })
        .await
    }

    pub async fn alert(&self, id: String) -> Result<Option<Alert>, RegistryError> {
        self.with(move |c| Ok(load_alert(c, &id)?)).await
    }

    /// Acknowledges (`resolve` false) or resolves an alert on a user's behalf; returns the
    /// alert as it now is and the events written. Acknowledging an acknowledged alert changes
    /// nothing; a resolved alert can be neither.
    pub async fn act_on_alert(
        &self,
        id: String,
        resolve: bool,
        by: String,
        note: Option<String>,
        now_ms: i64,
        sinks: Arc<[Sink]>,
    ) -> Result<(Alert, Vec<Event>), AlertActionError> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let Some(alert) = load_alert(&tx, &id)? else {
                return Ok(Err(AlertActionError::NotFound(id)));
            };
            if alert.status == AlertStatus::Resolved {
                return Ok(Err(AlertActionError::AlreadyResolved(id)));
            }
            let mut events = Vec::new();
            if resolve {
                tx.execute(
                    "UPDATE alerts SET status = 'resolved', resolved_ms = ?2, resolved_by = ?3,
                         resolve_note = ?4 WHERE id = ?1",
                    params![id, now_ms, by, note],
                )?;
            } else if alert.status == AlertStatus::Open {
                tx.execute(
                    "UPDATE alerts SET status = 'acknowledged', acknowledged_ms = ?2,
                         acknowledged_by = ?3, ack_note = ?4 WHERE id = ?1",
                    params![id, now_ms, by, note],
                )?;
            } else {
                return Ok(Ok((alert, events)));
            }
            let alert = reload(&tx, &id)?;
            let (event_type, suffix) = if resolve {
                ("alert.resolved", "")
            } else {
                ("alert.acknowledged", "")
            };
            emit(
                &tx,
                &sinks,
                &alert,
                event_type,
                suffix,
                now_ms,
                json!({"by": by, "note": note}),
                &mut events,
            )?;
            tx.commit()?;
            Ok(Ok((alert, events)))
        })
        .await?
    }

    /// The patient's own care plan, if one was set.
    pub async fn care_plan(&self, patient: PatientId) -> Result<Option<CarePlan>, RegistryError> {
        self.with(move |c| {
            let plan: Option<String> = c
                .query_row(
                    "SELECT plan FROM care_plans WHERE patient_id = ?1",
                    [patient.as_str()],
                    |r| r.get(0),
                )
                .optional()?;
            Ok(plan.and_then(|p| serde_json::from_str(&p).ok()))
        })
        .await
    }

    /// Every patient with the plan of their own (None: the default plan).
    pub async fn all_plans(&self) -> Result<Vec<(PatientId, Option<CarePlan>)>, RegistryError> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT p.id, cp.plan FROM patients p LEFT JOIN care_plans cp ON cp.patient_id = p.id",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (id, plan) = row?;
                if let Ok(id) = PatientId::parse(&id) {
                    out.push((id, plan.and_then(|p| serde_json::from_str(&p).ok())));
                }
            }
            Ok(out)
        })
        .await
    }

    /// Sets a patient's care plan (validated by the caller) and notes it on the timeline.
    pub async fn set_care_plan(
        &self,
        patient: PatientId,
        plan: CarePlan,
        by: String,
        now_ms: i64,
    ) -> Result<(), RegistryError> {
        let text = serde_json::to_string(&plan).map_err(|e| RegistryError::Db(e.to_string()))?;
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            require_patient(&tx, &patient)?;
            tx.execute(
                "INSERT INTO care_plans (patient_id, plan, updated_ms, updated_by) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (patient_id) DO UPDATE SET plan = ?2, updated_ms = ?3, updated_by = ?4",
                params![patient.as_str(), text, now_ms, by],
            )?;
            let rules: Vec<&str> = plan.rules.iter().map(|r| r.id()).collect();
            timeline(
                &tx,
                patient.as_str(),
                now_ms,
                "care_plan.updated",
                json!({"by": by, "rules": rules}),
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Adds a clinician's note to the timeline and returns the entry.
    pub async fn add_note(
        &self,
        patient: PatientId,
        by: String,
        text: String,
        now_ms: i64,
    ) -> Result<Value, RegistryError> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            require_patient(&tx, &patient)?;
            let data = json!({"by": by, "text": text});
            timeline(&tx, patient.as_str(), now_ms, "note", data.clone())?;
            let id = tx.last_insert_rowid();
            tx.commit()?;
            Ok(entry_json(id, now_ms, "note", data))
        })
        .await
    }

    /// Adds an entry of any kind to the timeline (visits, device events written elsewhere).
    pub async fn add_timeline(
        &self,
        patient: PatientId,
        kind: String,
        data: Value,
        now_ms: i64,
    ) -> Result<(), RegistryError> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            timeline(&tx, patient.as_str(), now_ms, &kind, data)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// The patient's timeline, newest first, entries before `before_ms`.
    pub async fn timeline(
        &self,
        patient: PatientId,
        before_ms: i64,
        limit: usize,
    ) -> Result<Vec<Value>, RegistryError> {
        self.with(move |c| {
            let mut stmt = c.prepare(
                "SELECT id, time_ms, kind, data FROM timeline
                 WHERE patient_id = ?1 AND time_ms < ?2 ORDER BY time_ms DESC, id DESC LIMIT ?3",
            )?;
            let rows = stmt.query_map(
                params![
                    patient.as_str(),
                    before_ms,
                    i64::try_from(limit).unwrap_or(i64::MAX)
                ],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                    ))
                },
            )?;
            let mut out = Vec::new();
            for row in rows {
                let (id, time, kind, data) = row?;
                let data = serde_json::from_str(&data).unwrap_or(Value::Null);
                out.push(entry_json(id, time, &kind, data));
            }
            Ok(out)
        })
        .await
    }
}

fn require_patient(tx: &Transaction<'_>, patient: &PatientId) -> Result<(), RegistryError> {
    let exists = tx
        .query_row(
            "SELECT 1 FROM patients WHERE id = ?1",
            [patient.as_str()],
            |_| Ok(()),
        )
        .optional()?
        .is_some();
    if exists {
        Ok(())
    } else {
        Err(RegistryError::NotFound(format!("patient {patient}")))
    }
}

/// A timeline entry as the API shows it: `{"id","time","kind", ...data}`.
fn entry_json(id: i64, time_ms: i64, kind: &str, data: Value) -> Value {
    let mut entry = json!({"id": id, "time": format_rfc3339(time_ms), "kind": kind});
    if let (Value::Object(e), Value::Object(d)) = (&mut entry, data) {
        for (k, v) in d {
            e.entry(k).or_insert(v);
        }
    }
    entry
}

fn apply_one(
    tx: &Transaction<'_>,
    sinks: &[Sink],
    effect: Effect,
    new_id: String,
    events: &mut Vec<Event>,
) -> Result<(), RegistryError> {
    match effect {
        Effect::Open {
            patient,
            rule_id,
            kind,
            severity,
            message,
            trigger,
            at_ms,
        } => {
            if unresolved(tx, patient.as_str(), &rule_id)?.is_some() {
                // The record already has it (the engine restarted between writing and
                // learning of it): one condition, one alert.
                return Ok(());
            }
            let trigger_json = trigger
                .as_ref()
                .map(|o| serde_json::to_string(&Trigger::of(o)))
                .transpose()
                .map_err(|e| RegistryError::Db(e.to_string()))?;
            tx.execute(
                "INSERT INTO alerts (id, patient_id, rule_id, kind, severity, status, message,
                 opened_ms, trigger_json, escalated_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'open', ?6, ?7, ?8, ?7)",
                params![
                    new_id,
                    patient.as_str(),
                    rule_id,
                    kind,
                    severity_str(severity),
                    message,
                    at_ms,
                    trigger_json
                ],
            )?;
            let alert = reload(tx, &new_id)?;
            emit(
                tx,
                sinks,
                &alert,
                "alert.opened",
                "",
                at_ms,
                json!({"kind": kind}),
                events,
            )?;
        }
        Effect::Raise {
            patient,
            rule_id,
            severity,
            message,
            at_ms,
        } => {
            let Some(alert) = unresolved(tx, patient.as_str(), &rule_id)? else {
                return Ok(());
            };
            tx.execute(
                "UPDATE alerts SET severity = ?2, message = ?3 WHERE id = ?1",
                params![alert.id, severity_str(severity), message],
            )?;
            let alert = reload(tx, &alert.id)?;
            let suffix = format!("_{}", severity_str(severity));
            emit(
                tx,
                sinks,
                &alert,
                "alert.raised",
                &suffix,
                at_ms,
                json!({}),
                events,
            )?;
        }
        Effect::Escalate {
            patient,
            rule_id,
            level,
            at_ms,
        } => {
            let Some(alert) = unresolved(tx, patient.as_str(), &rule_id)? else {
                return Ok(());
            };
            if alert.status != AlertStatus::Open {
                return Ok(());
            }
            tx.execute(
                "UPDATE alerts SET escalations = ?2, escalated_ms = ?3 WHERE id = ?1",
                params![alert.id, level, at_ms],
            )?;
            let alert = reload(tx, &alert.id)?;
            let suffix = format!("_{level}");
            emit(
                tx,
                sinks,
                &alert,
                "alert.escalated",
                &suffix,
                at_ms,
                json!({"level": level}),
                events,
            )?;
        }
        Effect::Resolve {
            patient,
            rule_id,
            reason,
            at_ms,
        } => {
            let Some(alert) = unresolved(tx, patient.as_str(), &rule_id)? else {
                return Ok(());
            };
            tx.execute(
                "UPDATE alerts SET status = 'resolved', resolved_ms = ?2, resolved_by = 'vigil',
                 resolve_note = ?3 WHERE id = ?1",
                params![alert.id, at_ms, reason],
            )?;
            let alert = reload(tx, &alert.id)?;
            emit(
                tx,
                sinks,
                &alert,
                "alert.resolved",
                "",
                at_ms,
                json!({"by": "vigil", "note": reason}),
                events,
            )?;
        }
    }
    Ok(())
}
