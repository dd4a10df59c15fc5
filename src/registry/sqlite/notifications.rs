//! Notifications on SQLite (`registry::notifications`): a step, its notifications and its
//! timeline entry in one `IMMEDIATE` transaction, refused whole when the step is there; claims
//! and settlements likewise. One instance writes an SQLite registry, so the claim's lease
//! only matters across a restart (a claim left by a killed process lapses).

use std::collections::HashMap;

use rusqlite::{OptionalExtension as _, Row, TransactionBehavior, params};

use super::SqliteDb;
use super::audit::append_in;
use super::record::{alert_by_id, escalate_in, timeline};
use crate::domain::format_rfc3339;
use crate::registry::audit::NewAuditLine;
use crate::registry::error::RegistryError;
use crate::registry::notifications::{
    LinkUse, Notification, NotificationStatus, Settlement, TakenStep,
};
use crate::registry::record::{Event, Sink};
use crate::registry::storage::NotificationStore;

const COLUMNS: &str = "id, alert_id, patient_id, step, username, channel, address, status, \
     attempts, next_ms, last_error, receipt, created_ms, settled_ms";

fn notification(r: &Row<'_>) -> rusqlite::Result<Notification> {
    Ok(Notification {
        id: r.get(0)?,
        alert_id: r.get(1)?,
        patient_id: r.get(2)?,
        step: r.get(3)?,
        username: r.get(4)?,
        channel: r.get(5)?,
        address: r.get(6)?,
        status: NotificationStatus::from_stored(&r.get::<_, String>(7)?),
        attempts: r.get(8)?,
        next_at: format_rfc3339(r.get(9)?),
        last_error: r.get(10)?,
        receipt: r.get(11)?,
        created_at: format_rfc3339(r.get(12)?),
        settled_at: r.get::<_, Option<i64>>(13)?.map(format_rfc3339),
    })
}

#[async_trait::async_trait]
impl NotificationStore for SqliteDb {
    async fn take_step(
        &self,
        step: TakenStep,
        sinks: Vec<Sink>,
    ) -> Result<Option<Vec<Event>>, RegistryError> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let inserted = tx.execute(
                "INSERT INTO escalation_steps (alert_id, step, level, due_ms, taken_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
                params![
                    step.alert_id,
                    step.step,
                    step.level,
                    step.due_ms,
                    step.taken_ms
                ],
            )?;
            if inserted == 0 {
                return Ok(None);
            }
            for n in &step.notifications {
                let (status, error) = n.initial();
                let settled = (status != NotificationStatus::Pending).then_some(step.taken_ms);
                tx.execute(
                    "INSERT INTO notifications (id, alert_id, patient_id, step, username,
                        channel, address, status, next_ms, last_error, created_ms, settled_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                    params![
                        n.id,
                        step.alert_id,
                        step.patient_id,
                        step.step,
                        n.username,
                        n.channel,
                        n.address,
                        status.as_str(),
                        n.not_before_ms,
                        error,
                        step.taken_ms,
                        settled
                    ],
                )?;
            }
            timeline(
                &tx,
                &step.patient_id,
                step.taken_ms,
                "alert.notify_step",
                &step.timeline_data(),
            )?;
            let mut events = Vec::new();
            if step.escalates()
                && let Some(alert) = alert_by_id(&tx, &step.alert_id)?
            {
                escalate_in(
                    &tx,
                    &sinks,
                    &alert,
                    step.step,
                    step.taken_ms,
                    step.escalation_data(),
                    &mut events,
                )?;
            }
            tx.commit()?;
            Ok(Some(events))
        })
        .await
    }

    async fn steps_taken(
        &self,
        alerts: Vec<String>,
    ) -> Result<HashMap<String, Vec<u32>>, RegistryError> {
        self.with(move |c| {
            let mut out: HashMap<String, Vec<u32>> = HashMap::new();
            let mut st =
                c.prepare_cached("SELECT step FROM escalation_steps WHERE alert_id = ?1")?;
            for a in alerts {
                let steps = st
                    .query_map([&a], |r| r.get::<_, u32>(0))?
                    .collect::<rusqlite::Result<Vec<u32>>>()?;
                if !steps.is_empty() {
                    out.insert(a, steps);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn claim_notifications(
        &self,
        holder: String,
        now_ms: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<Notification>, RegistryError> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let ids: Vec<String> = tx
                .prepare_cached(
                    "SELECT id FROM notifications
                     WHERE status = 'pending' AND next_ms <= ?1
                       AND (claim_until_ms IS NULL OR claim_until_ms < ?1)
                     ORDER BY next_ms, id LIMIT ?2",
                )?
                .query_map(
                    params![now_ms, i64::try_from(limit).unwrap_or(i64::MAX)],
                    |r| r.get(0),
                )?
                .collect::<rusqlite::Result<_>>()?;
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                tx.execute(
                    "UPDATE notifications SET claimed_by = ?2, claim_until_ms = ?3,
                        attempts = attempts + 1 WHERE id = ?1",
                    params![id, holder, now_ms.saturating_add(lease_ms)],
                )?;
                out.push(tx.query_row(
                    &format!("SELECT {COLUMNS} FROM notifications WHERE id = ?1"),
                    [&id],
                    notification,
                )?);
            }
            tx.commit()?;
            Ok(out)
        })
        .await
    }

    async fn settle_notification(
        &self,
        id: String,
        holder: String,
        settlement: Settlement,
        now_ms: i64,
    ) -> Result<bool, RegistryError> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let Some(n) = tx
                .query_row(
                    &format!(
                        "SELECT {COLUMNS} FROM notifications
                         WHERE id = ?1 AND status = 'pending' AND claimed_by = ?2"
                    ),
                    params![id, holder],
                    notification,
                )
                .optional()?
            else {
                return Ok(false);
            };
            match &settlement {
                Settlement::Delivered { receipt } => tx.execute(
                    "UPDATE notifications SET status = 'delivered', receipt = ?2, settled_ms = ?3,
                        claimed_by = NULL, claim_until_ms = NULL WHERE id = ?1",
                    params![id, receipt, now_ms],
                )?,
                Settlement::Retry { at_ms, error } => tx.execute(
                    "UPDATE notifications SET next_ms = ?2, last_error = ?3,
                        claimed_by = NULL, claim_until_ms = NULL WHERE id = ?1",
                    params![id, at_ms, error],
                )?,
                Settlement::Failed { error: why } | Settlement::Cancelled { why } => {
                    let status = if matches!(settlement, Settlement::Failed { .. }) {
                        "failed"
                    } else {
                        "cancelled"
                    };
                    tx.execute(
                        "UPDATE notifications SET status = ?2, last_error = ?3, settled_ms = ?4,
                            claimed_by = NULL, claim_until_ms = NULL WHERE id = ?1",
                        params![id, status, why, now_ms],
                    )?
                }
            };
            timeline(
                &tx,
                &n.patient_id,
                now_ms,
                settlement.timeline_kind(),
                &settlement.timeline_data(&n, n.attempts),
            )?;
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    async fn notifications_of(&self, alert_id: String) -> Result<Vec<Notification>, RegistryError> {
        self.with(move |c| {
            Ok(c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM notifications WHERE alert_id = ?1
                 ORDER BY created_ms, step, username, channel"
            ))?
            .query_map([&alert_id], notification)?
            .collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    async fn notification(&self, id: String) -> Result<Option<Notification>, RegistryError> {
        self.with(move |c| {
            Ok(c.query_row(
                &format!("SELECT {COLUMNS} FROM notifications WHERE id = ?1"),
                [&id],
                notification,
            )
            .optional()?)
        })
        .await
    }

    async fn ack_link_use(&self, id: String) -> Result<Option<LinkUse>, RegistryError> {
        self.with(move |c| Ok(link_use(c, &id)?)).await
    }

    async fn use_ack_link(
        &self,
        id: String,
        username: String,
        now_ms: i64,
        audit: NewAuditLine,
    ) -> Result<Option<LinkUse>, RegistryError> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if let Some(earlier) = link_use(&tx, &id)? {
                return Ok(Some(earlier));
            }
            tx.execute(
                "INSERT INTO ack_links_used (notification_id, username, used_ms)
                 VALUES (?1, ?2, ?3)",
                params![id, username, now_ms],
            )?;
            append_in(&tx, &audit)?;
            tx.commit()?;
            Ok(None)
        })
        .await
    }
}

fn link_use(c: &rusqlite::Connection, id: &str) -> rusqlite::Result<Option<LinkUse>> {
    c.query_row(
        "SELECT used_ms, username FROM ack_links_used WHERE notification_id = ?1",
        [id],
        |r| {
            Ok(LinkUse {
                at: format_rfc3339(r.get(0)?),
                by: r.get(1)?,
            })
        },
    )
    .optional()
}
