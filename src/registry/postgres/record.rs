//! The CRM record on PostgreSQL: `care_plans`, `alerts`, `timeline`, and the `outbox` rows an
//! alert's change queues, each change in one transaction.
//!
//! Several instances may write one patient's alerts at once. Opening an alert inserts it with
//! `ON CONFLICT DO NOTHING` against the partial unique index of unresolved alerts per patient
//! and rule: of two transactions opening the same rule, the second waits for the first and then
//! opens nothing (no second alert, no second event) instead of failing. Raising, escalating,
//! resolving, acknowledging read the alert `FOR UPDATE`, so a change made from what was read
//! cannot interleave with another's: an alert is resolved once and has one `alert.resolved`.

use serde_json::{Value, json};
use tokio_postgres::{Row, Transaction};

use super::audit::append_in;
use super::{PgDb, PgError};
use crate::alerts::engine::{Effect, OpenAlert, Resolution};
use crate::alerts::rules::CarePlan;
use crate::domain::partition::alert_partition;
use crate::domain::{PatientId, format_rfc3339};
use crate::pg::listen::LIVE_CHANNEL;
use crate::registry::audit::NewAuditLine;
use crate::registry::error::RegistryError;
use crate::registry::lease::Fence;
use crate::registry::plan_in_force::PlanInForce;
use crate::registry::record::{
    Alert, AlertActionError, AlertQuery, AlertStatus, CommittedPlan, EngineNotice, Event, Noticed,
    Sink, TimelineRow, Triage, Trigger, emitted, new_alert_id, note_data, parse_severity,
    plan_changed_data, severity_str, snooze_note, triage_data,
};
use crate::registry::storage::RecordStore;

const ALERT_COLUMNS: &str = "id, patient_id, rule_id, kind, severity, status, message, opened_ms,
    trigger_json, escalations, acknowledged_ms, acknowledged_by, ack_note, resolved_ms,
    resolved_by, resolve_note, assigned_to, assigned_ms, snoozed_until_ms, snooze_reason";

fn count(n: i32) -> u32 {
    u32::try_from(n).unwrap_or(0)
}

fn alert_row(r: &Row) -> Alert {
    let trigger: Option<String> = r.get(8);
    let status: String = r.get(5);
    let severity: String = r.get(4);
    Alert {
        id: r.get(0),
        patient_id: r.get(1),
        rule_id: r.get(2),
        kind: r.get(3),
        severity: parse_severity(&severity),
        status: AlertStatus::parse(&status).unwrap_or(AlertStatus::Open),
        message: r.get(6),
        opened_at: format_rfc3339(r.get(7)),
        trigger: trigger.and_then(|t| serde_json::from_str(&t).ok()),
        escalations: count(r.get(9)),
        acknowledged_at: r.get::<_, Option<i64>>(10).map(format_rfc3339),
        acknowledged_by: r.get(11),
        ack_note: r.get(12),
        resolved_at: r.get::<_, Option<i64>>(13).map(format_rfc3339),
        resolved_by: r.get(14),
        resolve_note: r.get(15),
        assigned_to: r.get(16),
        assigned_at: r.get::<_, Option<i64>>(17).map(format_rfc3339),
        snoozed_until: r.get::<_, Option<i64>>(18).map(format_rfc3339),
        snooze_reason: r.get(19),
    }
}

/// The unresolved alert of a patient and rule, locked until the transaction ends.
async fn lock_unresolved(
    tx: &Transaction<'_>,
    patient: &str,
    rule_id: &str,
) -> Result<Option<Alert>, PgError> {
    Ok(tx
        .query_opt(
            &format!(
                "SELECT {ALERT_COLUMNS} FROM alerts
                 WHERE patient_id = $1 AND rule_id = $2 AND status <> 'resolved' FOR UPDATE"
            ),
            &[&patient, &rule_id],
        )
        .await?
        .map(|r| alert_row(&r)))
}

/// Runs an `UPDATE alerts ... RETURNING` of one alert; the alert as it now is.
async fn update_alert(
    tx: &Transaction<'_>,
    set: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Alert, PgError> {
    let row = tx
        .query_one(
            &format!("UPDATE alerts SET {set} WHERE id = $1 RETURNING {ALERT_COLUMNS}"),
            params,
        )
        .await?;
    Ok(alert_row(&row))
}

/// Appends a timeline entry; its id.
pub(super) async fn timeline(
    tx: &Transaction<'_>,
    patient: &str,
    time_ms: i64,
    kind: &str,
    data: &str,
) -> Result<i64, PgError> {
    let row = tx
        .query_one(
            "INSERT INTO timeline (patient_id, time_ms, kind, data) VALUES ($1, $2, $3, $4)
             RETURNING id",
            &[&patient, &time_ms, &kind, &data],
        )
        .await?;
    Ok(row.get(0))
}

/// Records an event on the alert's timeline and queues it for every sink that takes it.
#[allow(clippy::too_many_arguments)]
async fn emit(
    tx: &Transaction<'_>,
    sinks: &[Sink],
    alert: &Alert,
    event_type: &'static str,
    suffix: &str,
    time_ms: i64,
    extra: Value,
    out: &mut Vec<Event>,
) -> Result<(), PgError> {
    let (data, event) = emitted(alert, event_type, suffix, time_ms, extra);
    timeline(tx, &alert.patient_id, time_ms, event_type, &data).await?;
    let body = event.body();
    for sink in sinks.iter().filter(|s| s.takes(event_type)) {
        tx.execute(
            "INSERT INTO outbox (sink, event_id, event_type, patient_id, payload, created_ms, next_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $6) ON CONFLICT DO NOTHING",
            &[
                &sink.as_str(),
                &event.id,
                &event_type,
                &alert.patient_id,
                &body,
                &time_ms,
            ],
        )
        .await?;
    }
    // Every instance's live feed hears of it once it commits (`pg::listen`).
    tx.execute(
        "SELECT pg_notify($1, $2)",
        &[&LIVE_CHANNEL, &format!("alert {} {event_type}", alert.id)],
    )
    .await?;
    out.push(event);
    Ok(())
}

/// Locks alert `id` for the rest of `tx`; `None` when there is no such alert.
pub(super) async fn lock_alert(tx: &Transaction<'_>, id: &str) -> Result<Option<Alert>, PgError> {
    Ok(tx
        .query_opt(
            &format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE id = $1 FOR UPDATE"),
            &[&id],
        )
        .await?
        .map(|r| alert_row(&r)))
}

/// Escalates `alert` (locked), if it is still open, to escalation `level` at `at_ms`, with the
/// `alert.escalated` event (`data` joins it: at least `{"level"}`), its timeline entry, its
/// outbox rows and its notice to every instance's live feed: the engine's escalation, and a
/// later step of the team's escalation policy (`registry::notifications`, docs/oncall.md).
pub(super) async fn escalate_in(
    tx: &Transaction<'_>,
    sinks: &[Sink],
    alert: &Alert,
    level: u32,
    at_ms: i64,
    data: Value,
    events: &mut Vec<Event>,
) -> Result<(), PgError> {
    if alert.status != AlertStatus::Open {
        return Ok(());
    }
    let stored = i32::try_from(level).unwrap_or(i32::MAX);
    let alert = update_alert(
        tx,
        "escalations = $2, escalated_ms = $3",
        &[&alert.id, &stored, &at_ms],
    )
    .await?;
    emit(
        tx,
        sinks,
        &alert,
        "alert.escalated",
        &format!("_{level}"),
        at_ms,
        data,
        events,
    )
    .await
}

/// `NotFound` unless the patient exists. The patients table is not in this aggregate's step;
/// it is the patients and devices' (see `schema.rs`).
async fn require_patient(tx: &Transaction<'_>, patient: &PatientId) -> Result<(), RegistryError> {
    let found = tx
        .query_opt("SELECT 1 FROM patients WHERE id = $1", &[&patient.as_str()])
        .await
        .map_err(PgError::from)?;
    match found {
        Some(_) => Ok(()),
        None => Err(RegistryError::NotFound(format!("patient {patient}"))),
    }
}

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

async fn apply_one(
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
            let trigger_json = trigger
                .as_ref()
                .map(|o| serde_json::to_string(&Trigger::of(o)))
                .transpose()
                .map_err(|e| RegistryError::Db(e.to_string()))?;
            // One condition, one alert: when the record already has it (the engine restarted
            // between writing and learning of it, or another instance opened it just now, in
            // which case this waits for that one's commit), nothing is opened.
            let row = tx
                .query_opt(
                    &format!(
                        "INSERT INTO alerts (id, patient_id, rule_id, kind, severity, status,
                         message, opened_ms, trigger_json, escalated_ms)
                         VALUES ($1, $2, $3, $4, $5, 'open', $6, $7, $8, $7)
                         ON CONFLICT (patient_id, rule_id) WHERE status <> 'resolved' DO NOTHING
                         RETURNING {ALERT_COLUMNS}"
                    ),
                    &[
                        &new_id,
                        &patient.as_str(),
                        &rule_id,
                        &kind,
                        &severity_str(severity),
                        &message,
                        &at_ms,
                        &trigger_json,
                    ],
                )
                .await
                .map_err(PgError::from)?;
            let Some(row) = row else {
                return Ok(());
            };
            let alert = alert_row(&row);
            let extra = json!({"kind": kind});
            emit(tx, sinks, &alert, "alert.opened", "", at_ms, extra, events).await?;
        }
        Effect::Raise {
            patient,
            rule_id,
            severity,
            message,
            at_ms,
        } => {
            let Some(alert) = lock_unresolved(tx, patient.as_str(), &rule_id).await? else {
                return Ok(());
            };
            let alert = update_alert(
                tx,
                "severity = $2, message = $3",
                &[&alert.id, &severity_str(severity), &message],
            )
            .await?;
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
            )
            .await?;
        }
        Effect::Escalate {
            patient,
            rule_id,
            level,
            at_ms,
        } => {
            let Some(alert) = lock_unresolved(tx, patient.as_str(), &rule_id).await? else {
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
            )
            .await?;
        }
        Effect::Resolve {
            patient,
            rule_id,
            reason,
            at_ms,
        } => {
            let Some(alert) = lock_unresolved(tx, patient.as_str(), &rule_id).await? else {
                return Ok(());
            };
            let alert = update_alert(
                tx,
                "status = 'resolved', resolved_ms = $2, resolved_by = 'vigil', resolve_note = $3",
                &[&alert.id, &at_ms, &reason],
            )
            .await?;
            let extra = json!({"by": "vigil", "note": reason});
            emit(
                tx,
                sinks,
                &alert,
                "alert.resolved",
                "",
                at_ms,
                extra,
                events,
            )
            .await?;
        }
    }
    Ok(())
}

/// Writes `notice` about `patient` inside `tx`, for the instance holding the patient's alert
/// partition (see `RecordStore::engine_notices`).
pub(super) async fn notify_engine(
    tx: &Transaction<'_>,
    patient: &PatientId,
    notice: &EngineNotice,
    now_ms: i64,
) -> Result<(), RegistryError> {
    let (kind, rule_id) = notice.parts();
    let plan = notice.plan_text()?;
    let part = i16::try_from(alert_partition(patient)).unwrap_or(0);
    tx.execute(
        "INSERT INTO engine_notices (part, patient_id, kind, rule_id, at_ms, plan)
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[&part, &patient.as_str(), &kind, &rule_id, &now_ms, &plan],
    )
    .await
    .map_err(PgError::from)?;
    Ok(())
}

/// Writes an [`EngineNotice::PlanChanged`] for `patient` carrying the plan for the engine as
/// `tx` leaves it (read in `tx`, after the change: their discharge, own plan and latest
/// enrollment, as [`PlanInForce`] judges them).
pub(super) async fn notify_plan(
    tx: &Transaction<'_>,
    patient: &PatientId,
    now_ms: i64,
) -> Result<(), RegistryError> {
    let id = patient.as_str();
    let discharged = tx
        .query_opt("SELECT discharged_ms FROM patients WHERE id = $1", &[&id])
        .await
        .map_err(PgError::from)?
        .is_some_and(|r| r.get::<_, Option<i64>>(0).is_some());
    let own = tx
        .query_opt("SELECT plan FROM care_plans WHERE patient_id = $1", &[&id])
        .await
        .map_err(PgError::from)?
        .and_then(|r| serde_json::from_str::<CarePlan>(r.get::<_, &str>(0)).ok());
    let open: Option<String> = tx
        .query_opt(
            "SELECT program, end_date FROM enrollments WHERE patient_id = $1
             ORDER BY start_date DESC LIMIT 1",
            &[&id],
        )
        .await
        .map_err(PgError::from)?
        .filter(|r| r.get::<_, Option<&str>>(1).is_none())
        .map(|r| r.get(0));
    let plan = PlanInForce::of(own, open.as_deref()).for_engine(discharged);
    let notice = EngineNotice::PlanChanged(CommittedPlan::Is(plan));
    notify_engine(tx, patient, &notice, now_ms).await
}

/// Whether `fence`'s lease is held as it says, locking its row (`FOR SHARE`) so that no other
/// instance takes the lease until `tx` ends.
async fn fence_holds(tx: &Transaction<'_>, fence: &Fence) -> Result<bool, RegistryError> {
    let row = tx
        .query_opt(
            "SELECT 1 FROM leases
             WHERE name = $1 AND holder = $2 AND epoch = $3 AND expires_ms > $4
             FOR SHARE",
            &[&fence.name, &fence.holder, &fence.epoch, &fence.at_ms],
        )
        .await
        .map_err(PgError::from)?;
    Ok(row.is_some())
}

/// Acknowledges or resolves the alert `id` inside `tx` (see `RecordStore::act_on_alert`).
#[allow(clippy::too_many_arguments)]
async fn act(
    tx: &Transaction<'_>,
    id: String,
    resolve: bool,
    by: String,
    note: Option<String>,
    now_ms: i64,
    sinks: &[Sink],
) -> Result<Result<(Alert, Vec<Event>), AlertActionError>, RegistryError> {
    let row = tx
        .query_opt(
            &format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE id = $1 FOR UPDATE"),
            &[&id],
        )
        .await
        .map_err(PgError::from)?;
    let Some(alert) = row.map(|r| alert_row(&r)) else {
        return Ok(Err(AlertActionError::NotFound(id)));
    };
    if alert.status == AlertStatus::Resolved {
        return Ok(Err(AlertActionError::AlreadyResolved(id)));
    }
    let mut events = Vec::new();
    let changed = if resolve {
        Some((
            "alert.resolved",
            "status = 'resolved', resolved_ms = $2, resolved_by = $3, resolve_note = $4",
        ))
    } else if alert.status == AlertStatus::Open {
        Some((
            "alert.acknowledged",
            "status = 'acknowledged', acknowledged_ms = $2, acknowledged_by = $3, ack_note = $4",
        ))
    } else {
        None
    };
    let alert = match changed {
        Some((event_type, set)) => {
            let alert = update_alert(tx, set, &[&id, &now_ms, &by, &note]).await?;
            let rule_id = alert.rule_id.clone();
            let notice = if resolve {
                EngineNotice::Resolved { rule_id }
            } else {
                EngineNotice::Acknowledged { rule_id }
            };
            if let Ok(patient) = PatientId::parse(&alert.patient_id) {
                notify_engine(tx, &patient, &notice, now_ms).await?;
            }
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
            )
            .await?;
            alert
        }
        None => alert,
    };
    Ok(Ok((alert, events)))
}

/// Resolves every unresolved alert of `patient` on behalf of `by` with `note` at `now_ms`
/// inside `tx`, each as a person's resolution ([`act`]: its timeline entry, outbox rows and
/// engine notice; events into `events`); the alerts as they now are, oldest first.
pub(super) async fn resolve_all_in(
    tx: &Transaction<'_>,
    patient: &str,
    by: &str,
    note: &str,
    now_ms: i64,
    sinks: &[Sink],
    events: &mut Vec<Event>,
) -> Result<Vec<Alert>, RegistryError> {
    let ids: Vec<String> = tx
        .query(
            "SELECT id FROM alerts WHERE patient_id = $1 AND status <> 'resolved'
             ORDER BY opened_ms, id COLLATE \"C\" FOR UPDATE",
            &[&patient],
        )
        .await
        .map_err(PgError::from)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut resolved = Vec::with_capacity(ids.len());
    for id in ids {
        let acted = act(
            tx,
            id,
            true,
            by.to_owned(),
            Some(note.to_owned()),
            now_ms,
            sinks,
        )
        .await?;
        match acted {
            Ok((alert, written)) => {
                events.extend(written);
                resolved.push(alert);
            }
            // Locked above: it cannot have gone or been resolved meanwhile.
            Err(e) => return Err(RegistryError::Db(e.to_string())),
        }
    }
    Ok(resolved)
}

#[async_trait::async_trait]
impl RecordStore for PgDb {
    async fn apply_effects(
        &self,
        effects: Vec<Effect>,
        sinks: Vec<Sink>,
        fence: Option<Fence>,
    ) -> Result<Vec<Event>, RegistryError> {
        if effects.is_empty() {
            return Ok(Vec::new());
        }
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(PgError::from)?;
        if let Some(f) = &fence
            && !fence_holds(&tx, f).await?
        {
            return Err(RegistryError::Fenced(f.name.clone()));
        }
        let mut events = Vec::new();
        for effect in effects {
            apply_one(&tx, &sinks, effect, new_alert_id()?, &mut events).await?;
        }
        tx.commit().await.map_err(PgError::from)?;
        Ok(events)
    }

    async fn engine_notices(
        &self,
        parts: Vec<u16>,
        from: i64,
        until: i64,
    ) -> Result<Vec<Noticed>, RegistryError> {
        if until <= from || parts.is_empty() {
            return Ok(Vec::new());
        }
        let parts: Vec<i16> = parts
            .iter()
            .filter_map(|p| i16::try_from(*p).ok())
            .collect();
        let rows = self
            .conn()
            .await?
            .query(
                "SELECT tx::text, patient_id, kind, rule_id, plan FROM engine_notices
                 WHERE part = ANY($1) AND tx >= $2::text::xid8 AND tx < $3::text::xid8
                 ORDER BY tx, at_ms",
                &[&parts, &from.to_string(), &until.to_string()],
            )
            .await
            .map_err(PgError::from)?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                Some(Noticed {
                    tx: r.get::<_, &str>(0).parse().ok()?,
                    patient: PatientId::parse(r.get::<_, &str>(1)).ok()?,
                    notice: EngineNotice::from_parts(r.get(2), r.get(3), r.get(4))?,
                })
            })
            .collect())
    }

    async fn prune_engine_notices(&self, before_ms: i64) -> Result<u64, RegistryError> {
        Ok(self
            .conn()
            .await?
            .execute("DELETE FROM engine_notices WHERE at_ms < $1", &[&before_ms])
            .await
            .map_err(PgError::from)?)
    }

    async fn unresolved_alerts(&self) -> Result<Vec<OpenAlert>, RegistryError> {
        let c = self.conn().await?;
        let rows = c
            .query(
                "SELECT patient_id, rule_id, severity, status, escalations, escalated_ms
                 FROM alerts WHERE status <> 'resolved'",
                &[],
            )
            .await
            .map_err(PgError::from)?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let patient = PatientId::parse(r.get::<_, &str>(0)).ok()?;
                Some(OpenAlert {
                    patient,
                    rule_id: r.get(1),
                    severity: parse_severity(r.get(2)),
                    acknowledged: r.get::<_, &str>(3) == "acknowledged",
                    escalations: count(r.get(4)),
                    since_ms: r.get(5),
                })
            })
            .collect())
    }

    async fn clinician_resolutions(&self) -> Result<Vec<Resolution>, RegistryError> {
        let c = self.conn().await?;
        let rows = c
            .query(
                "SELECT a.patient_id, a.rule_id, a.resolved_ms FROM alerts a
                 WHERE a.status = 'resolved' AND a.resolved_ms IS NOT NULL
                   AND coalesce(a.resolved_by, 'vigil') <> 'vigil'
                   AND a.opened_ms = (SELECT max(b.opened_ms) FROM alerts b
                                      WHERE b.patient_id = a.patient_id AND b.rule_id = a.rule_id)",
                &[],
            )
            .await
            .map_err(PgError::from)?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                Some(Resolution {
                    patient: PatientId::parse(r.get::<_, &str>(0)).ok()?,
                    rule_id: r.get(1),
                    at_ms: r.get(2),
                })
            })
            .collect())
    }

    async fn alerts(&self, q: AlertQuery) -> Result<Vec<Alert>, RegistryError> {
        let c = self.conn().await?;
        let status = q.status.map(AlertStatus::as_str);
        let patient = q.patient_id.as_ref().map(PatientId::as_str);
        // Only a clinician's view reads the patients' teams: the patients table is another
        // aggregate's, and a query naming it needs it even where the filter is off.
        let teams = if q.teams.is_some() {
            "AND patient_id IN (SELECT id FROM patients WHERE care_team = ANY ($4))"
        } else {
            "AND $4::text[] IS NULL"
        };
        // `COLLATE "C"`: ids in byte order, as SQLite orders them.
        let rows = c
            .query(
                &format!(
                    "SELECT {ALERT_COLUMNS} FROM alerts
                     WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR patient_id = $2)
                       {teams}
                     ORDER BY opened_ms DESC, id COLLATE \"C\" LIMIT $3"
                ),
                &[&status, &patient, &limit(q.limit), &q.teams],
            )
            .await
            .map_err(PgError::from)?;
        Ok(rows.iter().map(alert_row).collect())
    }

    async fn alert(&self, id: String) -> Result<Option<Alert>, RegistryError> {
        let c = self.conn().await?;
        let row = c
            .query_opt(
                &format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE id = $1"),
                &[&id],
            )
            .await
            .map_err(PgError::from)?;
        Ok(row.map(|r| alert_row(&r)))
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
        let mut c = self.conn().await.map_err(RegistryError::from)?;
        let tx = c
            .transaction()
            .await
            .map_err(PgError::from)
            .map_err(RegistryError::from)?;
        let acted = act(&tx, id, resolve, by, note, now_ms, &sinks).await??;
        append_in(&tx, &audit).await.map_err(RegistryError::from)?;
        tx.commit()
            .await
            .map_err(PgError::from)
            .map_err(RegistryError::from)?;
        Ok(acted)
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
        let mut c = self.conn().await.map_err(RegistryError::from)?;
        let tx = c
            .transaction()
            .await
            .map_err(PgError::from)
            .map_err(RegistryError::from)?;
        let pg = |e: tokio_postgres::Error| RegistryError::from(PgError::from(e));
        let row = tx
            .query_opt(
                &format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE id = $1 FOR UPDATE"),
                &[&id],
            )
            .await
            .map_err(pg)?;
        let Some(alert) = row.map(|r| alert_row(&r)) else {
            return Err(AlertActionError::NotFound(id));
        };
        if alert.status == AlertStatus::Resolved {
            return Err(AlertActionError::AlreadyResolved(id));
        }
        let mut events = Vec::new();
        match &triage {
            Triage::Assign { to } => {
                tx.execute(
                    "UPDATE alerts SET assigned_to = $2, assigned_ms = $3 WHERE id = $1",
                    &[&id, to, &to.as_ref().map(|_| now_ms)],
                )
                .await
                .map_err(pg)?;
            }
            Triage::Snooze { until_ms, reason } => {
                if until_ms.is_some() && alert.status == AlertStatus::Open {
                    let note = Some(snooze_note(reason.as_deref()));
                    let (_, acked) =
                        act(&tx, id.clone(), false, by.clone(), note, now_ms, &sinks).await??;
                    events = acked;
                }
                tx.execute(
                    "UPDATE alerts SET snoozed_until_ms = $2, snooze_reason = $3 WHERE id = $1",
                    &[&id, until_ms, &until_ms.and(reason.as_ref())],
                )
                .await
                .map_err(pg)?;
            }
        }
        let row = tx
            .query_one(
                &format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE id = $1"),
                &[&id],
            )
            .await
            .map_err(pg)?;
        let alert = alert_row(&row);
        timeline(
            &tx,
            &alert.patient_id,
            now_ms,
            triage.kind(),
            &triage_data(&alert, &triage, &by),
        )
        .await
        .map_err(RegistryError::from)?;
        append_in(&tx, &audit).await.map_err(RegistryError::from)?;
        tx.commit().await.map_err(pg)?;
        Ok((alert, events))
    }

    async fn care_plan(&self, patient: PatientId) -> Result<Option<CarePlan>, RegistryError> {
        let c = self.conn().await?;
        let row = c
            .query_opt(
                "SELECT plan FROM care_plans WHERE patient_id = $1",
                &[&patient.as_str()],
            )
            .await
            .map_err(PgError::from)?;
        Ok(row.and_then(|r| serde_json::from_str(r.get::<_, &str>(0)).ok()))
    }

    async fn all_plans(&self) -> Result<Vec<(PatientId, Option<CarePlan>)>, RegistryError> {
        let c = self.conn().await?;
        let rows = c
            .query(
                "SELECT p.id, cp.plan FROM patients p
                 LEFT JOIN care_plans cp ON cp.patient_id = p.id",
                &[],
            )
            .await
            .map_err(PgError::from)?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let id = PatientId::parse(r.get::<_, &str>(0)).ok()?;
                let plan = r
                    .get::<_, Option<&str>>(1)
                    .and_then(|p| serde_json::from_str(p).ok());
                Some((id, plan))
            })
            .collect())
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
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(PgError::from)?;
        require_patient(&tx, &patient).await?;
        tx.execute(
            "INSERT INTO care_plans (patient_id, plan, updated_ms, updated_by)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (patient_id) DO UPDATE
                SET plan = $2, updated_ms = $3, updated_by = $4",
            &[&patient.as_str(), &text, &now_ms, &by],
        )
        .await
        .map_err(PgError::from)?;
        let rules: Vec<&str> = plan.rules.iter().map(|r| r.id()).collect();
        let data = plan_changed_data(&by, &rules);
        timeline(&tx, patient.as_str(), now_ms, "care_plan.updated", &data).await?;
        notify_plan(&tx, &patient, now_ms).await?;
        if let Some(line) = &audit {
            append_in(&tx, line).await?;
        }
        tx.commit().await.map_err(PgError::from)?;
        Ok(())
    }

    async fn add_note(
        &self,
        patient: PatientId,
        by: String,
        text: String,
        now_ms: i64,
        audit: NewAuditLine,
    ) -> Result<TimelineRow, RegistryError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(PgError::from)?;
        require_patient(&tx, &patient).await?;
        let data = note_data(&by, &text);
        let id = timeline(&tx, patient.as_str(), now_ms, "note", &data).await?;
        append_in(&tx, &audit).await?;
        tx.commit().await.map_err(PgError::from)?;
        Ok(TimelineRow {
            id,
            time_ms: now_ms,
            kind: "note".into(),
            data,
        })
    }

    async fn add_timeline(
        &self,
        patient: PatientId,
        kind: String,
        data: String,
        now_ms: i64,
    ) -> Result<(), RegistryError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(PgError::from)?;
        timeline(&tx, patient.as_str(), now_ms, &kind, &data).await?;
        tx.commit().await.map_err(PgError::from)?;
        Ok(())
    }

    async fn timeline(
        &self,
        patient: PatientId,
        before_ms: i64,
        n: usize,
    ) -> Result<Vec<TimelineRow>, RegistryError> {
        let c = self.conn().await?;
        let rows = c
            .query(
                "SELECT id, time_ms, kind, data FROM timeline
                 WHERE patient_id = $1 AND time_ms < $2 ORDER BY time_ms DESC, id DESC LIMIT $3",
                &[&patient.as_str(), &before_ms, &limit(n)],
            )
            .await
            .map_err(PgError::from)?;
        Ok(rows
            .iter()
            .map(|r| TimelineRow {
                id: r.get(0),
                time_ms: r.get(1),
                kind: r.get(2),
                data: r.get(3),
            })
            .collect())
    }
}
