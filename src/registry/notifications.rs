//! Notifications of people about alerts, as the registry stores them
//! ([`super::storage::NotificationStore`], docs/oncall.md). Two tables carry the guarantees:
//! - an alert's **escalation steps**, one row per step taken, keyed by (alert, step): whichever
//!   instance takes a step first writes it with its notifications and its timeline entry in one
//!   transaction, and any other finds the step taken and writes nothing — each step happens
//!   once however many instances schedule;
//! - the **notifications**, an outbox: one row per person and channel, claimed for a while by
//!   the instance sending it, settled (delivered, retried later, failed, cancelled) only by the
//!   holder of its claim, each attempt on the patient's timeline with the settlement.

use serde::Serialize;

use super::error::RegistryError;
use super::time_log::random_id;
use crate::domain::format_rfc3339;

/// How a notification is sent.
pub const CHANNELS: [&str; 3] = ["email", "sms", "none"];

/// A notification to create with its step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewNotification {
    /// `nt_` and 128 random bits in hex.
    pub id: String,
    pub username: String,
    /// `email`, `sms`, or `none` (the user has no way to be reached: recorded, never sent).
    pub channel: String,
    /// The address or number it goes to, as it was when the step was taken.
    pub address: Option<String>,
    /// Not before then (quiet hours hold a medium or low alert's notification).
    pub not_before_ms: i64,
}

impl NewNotification {
    /// A notification of `username` by `channel` at `address`, not before `not_before_ms`.
    pub fn new(
        username: &str,
        channel: &str,
        address: Option<&str>,
        not_before_ms: i64,
    ) -> Result<NewNotification, RegistryError> {
        if !CHANNELS.contains(&channel) {
            return Err(RegistryError::Invalid(format!(
                "channel {channel:?} is not one of {}",
                CHANNELS.join(", ")
            )));
        }
        Ok(NewNotification {
            id: random_id("nt_")?,
            username: username.to_owned(),
            channel: channel.to_owned(),
            address: address.map(str::to_owned),
            not_before_ms,
        })
    }
}

impl NewNotification {
    /// The status and error it is stored with: a notification with no channel is failed from
    /// the start, with the reason.
    pub fn initial(&self) -> (NotificationStatus, Option<&'static str>) {
        if self.channel == "none" {
            (
                NotificationStatus::Failed,
                Some("no email address or mobile number to reach them by"),
            )
        } else {
            (NotificationStatus::Pending, None)
        }
    }
}

/// An escalation step to take, with the notifications it sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakenStep {
    pub alert_id: String,
    pub patient_id: String,
    /// The step's index in the policy's steps for the alert's severity.
    pub step: u32,
    /// The on-call level it reached.
    pub level: u8,
    /// When the step fell due, and when it was taken.
    pub due_ms: i64,
    pub taken_ms: i64,
    pub notifications: Vec<NewNotification>,
    /// Set when nobody was on call at the level (the fallback was reached), in words.
    pub gap: Option<String>,
}

impl TakenStep {
    /// Whether taking it escalates the alert: every step after the first is one of its
    /// escalations (`alert.escalated`, its `level` being the step's index), as the engine's
    /// timer made them before the team's policy did.
    pub fn escalates(&self) -> bool {
        self.step >= 1
    }

    /// The `alert.escalated` event's data for this step: the escalation (the step's index) and
    /// the on-call level it reached.
    pub fn escalation_data(&self) -> serde_json::Value {
        serde_json::json!({"level": self.step, "on_call_level": self.level})
    }

    /// The timeline entry's data (`alert.notify_step`): the step, its level, whom it reached by
    /// which channel — user names and channels only, never an address.
    pub fn timeline_data(&self) -> String {
        let to: Vec<serde_json::Value> = self
            .notifications
            .iter()
            .map(|n| serde_json::json!({"user": n.username, "channel": n.channel}))
            .collect();
        serde_json::json!({
            "alert_id": self.alert_id,
            "step": self.step,
            "level": self.level,
            "due_at": format_rfc3339(self.due_ms),
            "to": to,
            "gap": self.gap,
        })
        .to_string()
    }
}

/// Where a notification stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NotificationStatus {
    Pending,
    Delivered,
    Failed,
    Cancelled,
}

impl NotificationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationStatus::Pending => "pending",
            NotificationStatus::Delivered => "delivered",
            NotificationStatus::Failed => "failed",
            NotificationStatus::Cancelled => "cancelled",
        }
    }

    /// As stored; anything unknown reads as failed, so a damaged row is never sent again.
    pub fn from_stored(s: &str) -> NotificationStatus {
        match s {
            "pending" => NotificationStatus::Pending,
            "delivered" => NotificationStatus::Delivered,
            "cancelled" => NotificationStatus::Cancelled,
            _ => NotificationStatus::Failed,
        }
    }
}

/// A notification as stored and shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Notification {
    pub id: String,
    pub alert_id: String,
    pub patient_id: String,
    pub step: u32,
    pub username: String,
    pub channel: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    pub status: NotificationStatus,
    pub attempts: u32,
    /// When it is next due (RFC 3339).
    pub next_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// What the server or provider answered on delivery.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receipt: Option<String>,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settled_at: Option<String>,
}

/// The one use of a notification's acknowledgement link (`notify::ack`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LinkUse {
    /// When (RFC 3339).
    pub at: String,
    /// By whom.
    pub by: String,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    /// Accepted by the server or provider.
    Delivered { receipt: Option<String> },
    /// Not this time: try again at `at_ms`.
    Retry { at_ms: i64, error: String },
    /// Never: the address was refused, or the attempts ran out.
    Failed { error: String },
    /// Not needed any more (the alert was acknowledged or resolved).
    Cancelled { why: String },
}

impl Settlement {
    /// The timeline kind of the attempt's entry.
    pub fn timeline_kind(&self) -> &'static str {
        match self {
            Settlement::Delivered { .. } => "notification.delivered",
            Settlement::Retry { .. } => "notification.retry",
            Settlement::Failed { .. } => "notification.failed",
            Settlement::Cancelled { .. } => "notification.cancelled",
        }
    }

    /// The timeline entry's data: the notification, its user and channel, the attempt, and
    /// what happened — never the address.
    pub fn timeline_data(&self, n: &Notification, attempt: u32) -> String {
        let mut v = serde_json::json!({
            "notification_id": n.id,
            "alert_id": n.alert_id,
            "step": n.step,
            "user": n.username,
            "channel": n.channel,
            "attempt": attempt,
        });
        match self {
            Settlement::Delivered { receipt } => v["receipt"] = serde_json::json!(receipt),
            Settlement::Retry { at_ms, error } => {
                v["error"] = serde_json::json!(error);
                v["next_at"] = serde_json::json!(format_rfc3339(*at_ms));
            }
            Settlement::Failed { error } => v["error"] = serde_json::json!(error),
            Settlement::Cancelled { why } => v["why"] = serde_json::json!(why),
        }
        v.to_string()
    }
}
