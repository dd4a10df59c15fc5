//! The registry's calls on notifications ([`super::notifications`]): escalation steps taken once
//! each, and the notifications' outbox (claimed, settled, listed per alert).

use std::collections::HashMap;

use super::Registry;
use super::audit::NewAuditLine;
use super::error::RegistryError;
use super::notifications::{LinkUse, Notification, Settlement, TakenStep};
use super::record::{Event, Sink};

impl Registry {
    /// Takes an escalation step with its notifications and timeline entry, and for a later
    /// step the alert's escalation (queued for `sinks`); the events to announce, or `None`
    /// when it was taken already (by this instance or another).
    pub async fn take_step(
        &self,
        step: TakenStep,
        sinks: Vec<Sink>,
    ) -> Result<Option<Vec<Event>>, RegistryError> {
        self.db.take_step(step, sinks).await
    }

    /// The steps taken of each of `alerts`.
    pub async fn steps_taken(
        &self,
        alerts: Vec<String>,
    ) -> Result<HashMap<String, Vec<u32>>, RegistryError> {
        self.db.steps_taken(alerts).await
    }

    /// Claims due notifications for this instance for `lease_ms`.
    pub async fn claim_notifications(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<Notification>, RegistryError> {
        self.db
            .claim_notifications(self.instance.to_string(), now_ms, lease_ms, limit)
            .await
    }

    /// Settles this instance's attempt on a notification it claimed.
    pub async fn settle_notification(
        &self,
        id: &str,
        settlement: Settlement,
        now_ms: i64,
    ) -> Result<bool, RegistryError> {
        self.db
            .settle_notification(id.to_owned(), self.instance.to_string(), settlement, now_ms)
            .await
    }

    /// An alert's notifications.
    pub async fn notifications_of(
        &self,
        alert_id: &str,
    ) -> Result<Vec<Notification>, RegistryError> {
        self.db.notifications_of(alert_id.to_owned()).await
    }

    /// Notification `id`, if there is one.
    pub async fn notification(&self, id: &str) -> Result<Option<Notification>, RegistryError> {
        self.db.notification(id.to_owned()).await
    }

    /// How notification `id`'s acknowledgement link was used, if it was.
    pub async fn ack_link_use(&self, id: &str) -> Result<Option<LinkUse>, RegistryError> {
        self.db.ack_link_use(id.to_owned()).await
    }

    /// Records `username`'s use of notification `id`'s acknowledgement link with `audit`;
    /// the earlier use, with nothing written, when it was used already.
    pub async fn use_ack_link(
        &self,
        id: &str,
        username: &str,
        audit: NewAuditLine,
    ) -> Result<Option<LinkUse>, RegistryError> {
        self.db
            .use_ack_link(id.to_owned(), username.to_owned(), audit.time_ms, audit)
            .await
    }
}
