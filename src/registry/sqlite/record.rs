//! The CRM record on SQLite: `care_plans`, `alerts` (one unresolved per patient and rule: a
//! partial unique index) and `timeline`, and the `outbox` rows an alert's change queues. Changes
//! begin `IMMEDIATE`, so an alert read and the change made from it cannot interleave with
//! another writer's.

use rusqlite::{Connection, OptionalExtension as _, Transaction, TransactionBehavior, params};
use serde_json::{Value, json};

use super::SqliteDb;
use super::audit::append_in;
use crate::alerts::engine::{Effect, OpenAlert, Resolution};
use crate::alerts::rules::CarePlan;
use crate::domain::{PatientId, format_rfc3339};
use crate::registry::audit::NewAuditLine;
use crate::registry::error::RegistryError;
use crate::registry::lease::Fence;
use crate::registry::record::{
    Alert, AlertActionError, AlertQuery, AlertStatus, Event, Noticed, Sink, TimelineRow, Triage,
    Trigger, emitted, new_alert_id, note_data, parse_severity, plan_changed_data, severity_str,
    snooze_note, triage_data,
};
use crate::registry::storage::RecordStore;

const ALERT_COLUMNS: &str = "id, patient_id, rule_id, kind, severity, status, message, opened_ms,
    trigger_json, escalations, acknowledged_ms, acknowledged_by, ack_note, resolved_ms,
    resolved_by, resolve_note, assigned_to, assigned_ms, snoozed_until_ms, snooze_reason";

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
        assigned_to: r.get(16)?,
        assigned_at: r.get::<_, Option<i64>>(17)?.map(format_rfc3339),
        snoozed_until: r.get::<_, Option<i64>>(18)?.map(format_rfc3339),
        snooze_reason: r.get(19)?,
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

/// Appends a timeline entry; its id.
pub(super) fn timeline(
    tx: &Transaction<'_>,
    patient: &str,
    time_ms: i64,
    kind: &str,
    data: &str,
) -> rusqlite::Result<i64> {
    tx.prepare_cached(
        "INSERT INTO timeline (patient_id, time_ms, kind, data) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![patient, time_ms, kind, data])?;
    Ok(tx.last_insert_rowid())
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
    let (data, event) = emitted(alert, event_type, suffix, time_ms, extra);
    timeline(tx, &alert.patient_id, time_ms, event_type, &data)?;
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

/// Resolves every unresolved alert of `patient` on behalf of `by` with `note` at `now_ms`
/// inside `tx`, each with its `alert.resolved` timeline entry and outbox rows (events into
/// `events`); the alerts as they now are, oldest first.
pub(super) fn resolve_all_in(
    tx: &Transaction<'_>,
    patient: &str,
    by: &str,
    note: &str,
    now_ms: i64,
    sinks: &[Sink],
    events: &mut Vec<Event>,
) -> Result<Vec<Alert>, RegistryError> {
    let ids: Vec<String> = tx
        .prepare(
            "SELECT id FROM alerts WHERE patient_id = ?1 AND status <> 'resolved'
             ORDER BY opened_ms, id",
        )?
        .query_map([patient], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut resolved = Vec::with_capacity(ids.len());
    for id in ids {
        tx.execute(
            "UPDATE alerts SET status = 'resolved', resolved_ms = ?2, resolved_by = ?3,
                 resolve_note = ?4 WHERE id = ?1",
            params![id, now_ms, by, note],
        )?;
        let alert = reload(tx, &id)?;
        let extra = json!({"by": by, "note": note});
        emit(
            tx,
            sinks,
            &alert,
            "alert.resolved",
            "",
            now_ms,
            extra,
            events,
        )?;
        resolved.push(alert);
    }
    Ok(resolved)
}

/// Escalates `alert`, if it is still open, to escalation `level` at `at_ms`, with the
/// `alert.escalated` event (`data` joins it: at least `{"level"}`), its timeline entry and its
/// outbox rows: the engine's escalation, and a later step of the team's escalation policy
/// (`registry::notifications`, docs/oncall.md).
pub(super) fn escalate_in(
    tx: &Transaction<'_>,
    sinks: &[Sink],
    alert: &Alert,
    level: u32,
    at_ms: i64,
    data: Value,
    events: &mut Vec<Event>,
) -> Result<(), RegistryError> {
    if alert.status != AlertStatus::Open {
        return Ok(());
    }
    tx.execute(
        "UPDATE alerts SET escalations = ?2, escalated_ms = ?3 WHERE id = ?1",
        params![alert.id, level, at_ms],
    )?;
    let alert = reload(tx, &alert.id)?;
    emit(
        tx,
        sinks,
        &alert,
        "alert.escalated",
        &format!("_{level}"),
        at_ms,
        data,
        events,
    )?;
    Ok(())
}

/// Alert `id`, if there is one.
pub(super) fn alert_by_id(tx: &Transaction<'_>, id: &str) -> rusqlite::Result<Option<Alert>> {
    load_alert(tx, id)
}

pub(super) fn require_patient(
    tx: &Transaction<'_>,
    patient: &PatientId,
) -> Result<(), RegistryError> {
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

/// Acknowledges (`resolve` false) or resolves the alert `id` inside `tx`, with its timeline
/// entry and outbox rows: [`RecordStore::act_on_alert`] without its audit line.
fn act_in(
    tx: &Transaction<'_>,
    id: &str,
    resolve: bool,
    by: &str,
    note: Option<String>,
    now_ms: i64,
    sinks: &[Sink],
) -> rusqlite::Result<Result<(Alert, Vec<Event>), AlertActionError>> {
    let Some(alert) = load_alert(tx, id)? else {
        return Ok(Err(AlertActionError::NotFound(id.to_owned())));
    };
    if alert.status == AlertStatus::Resolved {
        return Ok(Err(AlertActionError::AlreadyResolved(id.to_owned())));
    }
    let (event_type, set) = if resolve {
        (
            "alert.resolved",
            "status = 'resolved', resolved_ms = ?2, resolved_by = ?3, resolve_note = ?4",
        )
    } else if alert.status == AlertStatus::Open {
        (
            "alert.acknowledged",
            "status = 'acknowledged', acknowledged_ms = ?2, acknowledged_by = ?3, ack_note = ?4",
        )
    } else {
        return Ok(Ok((alert, Vec::new())));
    };
    tx.execute(
        &format!("UPDATE alerts SET {set} WHERE id = ?1"),
        params![id, now_ms, by, note],
    )?;
    let alert = load_alert(tx, id)?.ok_or(rusqlite::Error::QueryReturnedNoRows)?;
    let mut events = Vec::new();
    let extra = json!({"by": by, "note": note});
    emit(
        tx,
        sinks,
        &alert,
        event_type,
        "",
        now_ms,
        extra,
        &mut events,
    )?;
    Ok(Ok((alert, events)))
}

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[async_trait::async_trait]
impl RecordStore for SqliteDb {
    async fn apply_effects(
        &self,
        effects: Vec<Effect>,
        sinks: Vec<Sink>,
        fence: Option<Fence>,
    ) -> Result<Vec<Event>, RegistryError> {
        if effects.is_empty() {
            return Ok(Vec::new());
        }
        let ids = effects
            .iter()
            .map(|_| new_alert_id())
            .collect::<Result<Vec<_>, _>>()?;
        self.with(move |c| {
            // The immediate transaction holds the write lock: no lease moves until it ends.
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if let Some(f) = &fence {
                let held = tx
                    .query_row(
                        "SELECT 1 FROM leases
                         WHERE name = ?1 AND holder = ?2 AND epoch = ?3 AND expires_ms > ?4",
                        params![f.name, f.holder, f.epoch, f.at_ms],
                        |_| Ok(()),
                    )
                    .optional()?
                    .is_some();
                if !held {
                    return Err(RegistryError::Fenced(f.name.clone()));
                }
            }
            let mut events = Vec::new();
            for (effect, new_id) in effects.into_iter().zip(ids) {
                apply_one(&tx, &sinks, effect, new_id, &mut events)?;
            }
            tx.commit()?;
            Ok(events)
        })
        .await
    }

    async fn engine_notices(
        &self,
        _parts: Vec<u16>,
        _from: i64,
        _until: i64,
    ) -> Result<Vec<Noticed>, RegistryError> {
        Ok(Vec::new())
    }

    async fn prune_engine_notices(&self, _before_ms: i64) -> Result<u64, RegistryError> {
        Ok(0)
    }

    async fn unresolved_alerts(&self) -> Result<Vec<OpenAlert>, RegistryError> {
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

    async fn clinician_resolutions(&self) -> Result<Vec<Resolution>, RegistryError> {
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

    async fn alerts(&self, q: AlertQuery) -> Result<Vec<Alert>, RegistryError> {
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
                    limit(q.limit),
                    teams
                ],
                alert_row,
            )?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(RegistryError::from)
        })
        .await
    }

    async fn alert(&self, id: String) -> Result<Option<Alert>, RegistryError> {
        self.with(move |c| Ok(load_alert(c, &id)?)).await
    }

    async fn act_on_alert(
        &self,
        id: String,
        resolve: bool,
        by: String,
        note: Option<String>,
        now_ms: i64,
        sinks: Vec<Sink>,
        audit: NewAuditLine,
    ) -> Result<(Alert, Vec<Event>), AlertActionError> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let acted = match act_in(&tx, &id, resolve, &by, note, now_ms, &sinks)? {
                Ok(acted) => acted,
                Err(e) => return Ok(Err(e)),
            };
            append_in(&tx, &audit)?;
            tx.commit()?;
            Ok(Ok(acted))
        })
        .await?
    }

    async fn triage_alert(
        &self,
        id: String,
        triage: Triage,
        by: String,
        now_ms: i64,
        sinks: Vec<Sink>,
        audit: NewAuditLine,
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
            match &triage {
                Triage::Assign { to } => {
                    tx.execute(
                        "UPDATE alerts SET assigned_to = ?2, assigned_ms = ?3 WHERE id = ?1",
                        params![id, to, to.as_ref().map(|_| now_ms)],
                    )?;
                }
                Triage::Snooze { until_ms, reason } => {
                    if until_ms.is_some() && alert.status == AlertStatus::Open {
                        let note = Some(snooze_note(reason.as_deref()));
                        if let Ok((_, acked)) = act_in(&tx, &id, false, &by, note, now_ms, &sinks)?
                        {
                            events = acked;
                        }
                    }
                    tx.execute(
                        "UPDATE alerts SET snoozed_until_ms = ?2, snooze_reason = ?3 WHERE id = ?1",
                        params![id, until_ms, until_ms.and(reason.as_ref())],
                    )?;
                }
            }
            let alert = reload(&tx, &id)?;
            timeline(
                &tx,
                &alert.patient_id,
                now_ms,
                triage.kind(),
                &triage_data(&alert, &triage, &by),
            )?;
            append_in(&tx, &audit)?;
            tx.commit()?;
            Ok(Ok((alert, events)))
        })
        .await?
    }

    async fn care_plan(&self, patient: PatientId) -> Result<Option<CarePlan>, RegistryError> {
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

    async fn all_plans(&self) -> Result<Vec<(PatientId, Option<CarePlan>)>, RegistryError> {
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

    async fn set_care_plan(
        &self,
        patient: PatientId,
        plan: CarePlan,
        by: String,
        now_ms: i64,
        audit: Option<NewAuditLine>,
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
            let data = plan_changed_data(&by, &rules);
            timeline(&tx, patient.as_str(), now_ms, "care_plan.updated", &data)?;
            if let Some(line) = &audit {
                append_in(&tx, line)?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn add_note(
        &self,
        patient: PatientId,
        by: String,
        text: String,
        now_ms: i64,
        audit: NewAuditLine,
    ) -> Result<TimelineRow, RegistryError> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            require_patient(&tx, &patient)?;
            let data = note_data(&by, &text);
            let id = timeline(&tx, patient.as_str(), now_ms, "note", &data)?;
            append_in(&tx, &audit)?;
            tx.commit()?;
            Ok(TimelineRow {
                id,
                time_ms: now_ms,
                kind: "note".into(),
                data,
            })
        })
        .await
    }

    async fn add_timeline(
        &self,
        patient: PatientId,
        kind: String,
        data: String,
        now_ms: i64,
    ) -> Result<(), RegistryError> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            timeline(&tx, patient.as_str(), now_ms, &kind, &data)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn timeline(
        &self,
        patient: PatientId,
        before_ms: i64,
        n: usize,
    ) -> Result<Vec<TimelineRow>, RegistryError> {
        self.with(move |c| {
            let mut stmt = c.prepare(
                "SELECT id, time_ms, kind, data FROM timeline
                 WHERE patient_id = ?1 AND time_ms < ?2 ORDER BY time_ms DESC, id DESC LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![patient.as_str(), before_ms, limit(n)], |r| {
                Ok(TimelineRow {
                    id: r.get(0)?,
                    time_ms: r.get(1)?,
                    kind: r.get(2)?,
                    data: r.get(3)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }
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
            escalate_in(
                tx,
                sinks,
                &alert,
                level,
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
