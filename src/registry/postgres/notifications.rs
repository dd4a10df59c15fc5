//! Notifications on PostgreSQL (`registry::notifications`), where several instances schedule
//! and send at once: a step is inserted with `ON CONFLICT DO NOTHING` on (alert, step), so of
//! two instances taking it one writes the step, its notifications and its timeline entry and
//! the other nothing; notifications are claimed with `FOR UPDATE SKIP LOCKED`, so two
//! instances never claim the same one, and settled only by their claim's holder.

use std::collections::HashMap;

use tokio_postgres::Row;

use super::audit::append_in;
use super::record::{escalate_in, lock_alert, timeline};
use super::{PgDb, PgError};
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

fn notification(r: &Row) -> Notification {
    Notification {
        id: r.get(0),
        alert_id: r.get(1),
        patient_id: r.get(2),
        step: u32::try_from(r.get::<_, i32>(3)).unwrap_or(0),
        username: r.get(4),
        channel: r.get(5),
        address: r.get(6),
        status: NotificationStatus::from_stored(r.get(7)),
        attempts: u32::try_from(r.get::<_, i32>(8)).unwrap_or(0),
        next_at: format_rfc3339(r.get(9)),
        last_error: r.get(10),
        receipt: r.get(11),
        created_at: format_rfc3339(r.get(12)),
        settled_at: r.get::<_, Option<i64>>(13).map(format_rfc3339),
    }
}

fn int(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

#[async_trait::async_trait]
impl NotificationStore for PgDb {
    async fn take_step(
        &self,
        step: TakenStep,
        sinks: Vec<Sink>,
    ) -> Result<Option<Vec<Event>>, RegistryError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(PgError::from)?;
        // A later step escalates the alert: its row is locked first, as the engine's writes
        // lock it, so the two queue rather than deadlock.
        let alert = if step.escalates() {
            lock_alert(&tx, &step.alert_id).await?
        } else {
            None
        };
        let inserted = tx
            .execute(
                "INSERT INTO escalation_steps (alert_id, step, level, due_ms, taken_ms)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                &[
                    &step.alert_id,
                    &int(step.step),
                    &i32::from(step.level),
                    &step.due_ms,
                    &step.taken_ms,
                ],
            )
            .await
            .map_err(PgError::from)?;
        if inserted == 0 {
            return Ok(None);
        }
        for n in &step.notifications {
            let (status, error) = n.initial();
            let settled = (status != NotificationStatus::Pending).then_some(step.taken_ms);
            tx.execute(
                "INSERT INTO notifications (id, alert_id, patient_id, step, username, channel,
                    address, status, next_ms, last_error, created_ms, settled_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                &[
                    &n.id,
                    &step.alert_id,
                    &step.patient_id,
                    &int(step.step),
                    &n.username,
                    &n.channel,
                    &n.address,
                    &status.as_str(),
                    &n.not_before_ms,
                    &error,
                    &step.taken_ms,
                    &settled,
                ],
            )
            .await
            .map_err(PgError::from)?;
        }
        timeline(
            &tx,
            &step.patient_id,
            step.taken_ms,
            "alert.notify_step",
            &step.timeline_data(),
        )
        .await?;
        let mut events = Vec::new();
        if let Some(alert) = &alert {
            escalate_in(
                &tx,
                &sinks,
                alert,
                step.step,
                step.taken_ms,
                step.escalation_data(),
                &mut events,
            )
            .await?;
        }
        tx.commit().await.map_err(PgError::from)?;
        Ok(Some(events))
    }

    async fn steps_taken(
        &self,
        alerts: Vec<String>,
    ) -> Result<HashMap<String, Vec<u32>>, RegistryError> {
        let c = self.conn().await?;
        let rows = c
            .query(
                "SELECT alert_id, step FROM escalation_steps WHERE alert_id = ANY($1)",
                &[&alerts],
            )
            .await
            .map_err(PgError::from)?;
        let mut out: HashMap<String, Vec<u32>> = HashMap::new();
        for r in rows {
            out.entry(r.get(0))
                .or_default()
                .push(u32::try_from(r.get::<_, i32>(1)).unwrap_or(0));
        }
        Ok(out)
    }

    async fn claim_notifications(
        &self,
        holder: String,
        now_ms: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<Notification>, RegistryError> {
        let c = self.conn().await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let until = now_ms.saturating_add(lease_ms);
        let mut out: Vec<Notification> = c
            .query(
                &format!(
                    "UPDATE notifications SET claimed_by = $1, claim_until_ms = $3,
                        attempts = attempts + 1
                     WHERE id IN (
                        SELECT id FROM notifications
                        WHERE status = 'pending' AND next_ms <= $2
                          AND (claim_until_ms IS NULL OR claim_until_ms < $2)
                        ORDER BY next_ms, id LIMIT $4
                        FOR UPDATE SKIP LOCKED)
                     RETURNING {COLUMNS}"
                ),
                &[&holder, &now_ms, &until, &limit],
            )
            .await
            .map_err(PgError::from)?
            .iter()
            .map(notification)
            .collect();
        out.sort_by(|a, b| (&a.next_at, &a.id).cmp(&(&b.next_at, &b.id)));
        Ok(out)
    }

    async fn settle_notification(
        &self,
        id: String,
        holder: String,
        settlement: Settlement,
        now_ms: i64,
    ) -> Result<bool, RegistryError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(PgError::from)?;
        let Some(row) = tx
            .query_opt(
                &format!(
                    "SELECT {COLUMNS} FROM notifications
                     WHERE id = $1 AND status = 'pending' AND claimed_by = $2 FOR UPDATE"
                ),
                &[&id, &holder],
            )
            .await
            .map_err(PgError::from)?
        else {
            return Ok(false);
        };
        let n = notification(&row);
        let (status, receipt, error): (&str, Option<&String>, Option<&String>) = match &settlement {
            Settlement::Delivered { receipt } => ("delivered", receipt.as_ref(), None),
            Settlement::Retry { error, .. } => ("pending", None, Some(error)),
            Settlement::Failed { error } => ("failed", None, Some(error)),
            Settlement::Cancelled { why } => ("cancelled", None, Some(why)),
        };
        let next_ms = match &settlement {
            Settlement::Retry { at_ms, .. } => *at_ms,
            _ => crate::domain::parse_rfc3339(&n.next_at).unwrap_or(now_ms),
        };
        let settled = (status != "pending").then_some(now_ms);
        tx.execute(
            "UPDATE notifications SET status = $2, receipt = COALESCE($3, receipt),
                last_error = COALESCE($4, last_error), next_ms = $5, settled_ms = $6,
                claimed_by = NULL, claim_until_ms = NULL WHERE id = $1",
            &[&id, &status, &receipt, &error, &next_ms, &settled],
        )
        .await
        .map_err(PgError::from)?;
        timeline(
            &tx,
            &n.patient_id,
            now_ms,
            settlement.timeline_kind(),
            &settlement.timeline_data(&n, n.attempts),
        )
        .await?;
        tx.commit().await.map_err(PgError::from)?;
        Ok(true)
    }

    async fn notifications_of(&self, alert_id: String) -> Result<Vec<Notification>, RegistryError> {
        let c = self.conn().await?;
        Ok(c.query(
            &format!(
                "SELECT {COLUMNS} FROM notifications WHERE alert_id = $1
                 ORDER BY created_ms, step, username COLLATE \"C\", channel COLLATE \"C\""
            ),
            &[&alert_id],
        )
        .await
        .map_err(PgError::from)?
        .iter()
        .map(notification)
        .collect())
    }

    async fn notification(&self, id: String) -> Result<Option<Notification>, RegistryError> {
        let c = self.conn().await?;
        Ok(c.query_opt(
            &format!("SELECT {COLUMNS} FROM notifications WHERE id = $1"),
            &[&id],
        )
        .await
        .map_err(PgError::from)?
        .as_ref()
        .map(notification))
    }

    async fn ack_link_use(&self, id: String) -> Result<Option<LinkUse>, RegistryError> {
        let c = self.conn().await?;
        Ok(c.query_opt(
            "SELECT used_ms, username FROM ack_links_used WHERE notification_id = $1",
            &[&id],
        )
        .await
        .map_err(PgError::from)?
        .map(|r| link_use(&r)))
    }

    async fn use_ack_link(
        &self,
        id: String,
        username: String,
        now_ms: i64,
        audit: NewAuditLine,
    ) -> Result<Option<LinkUse>, RegistryError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(PgError::from)?;
        // Of two uses at once, the second waits on the first's row and then inserts nothing.
        let inserted = tx
            .execute(
                "INSERT INTO ack_links_used (notification_id, username, used_ms)
                 VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                &[&id, &username, &now_ms],
            )
            .await
            .map_err(PgError::from)?;
        if inserted == 0 {
            let earlier = tx
                .query_one(
                    "SELECT used_ms, username FROM ack_links_used WHERE notification_id = $1",
                    &[&id],
                )
                .await
                .map_err(PgError::from)?;
            return Ok(Some(link_use(&earlier)));
        }
        append_in(&tx, &audit).await?;
        tx.commit().await.map_err(PgError::from)?;
        Ok(None)
    }
}

fn link_use(r: &Row) -> LinkUse {
    LinkUse {
        at: format_rfc3339(r.get(0)),
        by: r.get(1),
    }
}
