//! The channels the configuration turns on, in one place the notification outbox calls:
//! "send this notice to this address by this channel".

use super::email::Mailer;
use super::message::{Notice, PatientRef};
use super::outcome::{Channel, SendError, Sent, SetupError};
use super::sms::SmsSender;
use crate::config::{Config, NotifyConfig};
use crate::registry::record::Alert;

/// The configured channels (none, either or both) and what notices may say.
pub struct Channels {
    email: Option<Mailer>,
    sms: Option<SmsSender>,
    policy: NotifyConfig,
}

impl Channels {
    /// The channels `[smtp]` and `[sms]` configure (checked at load; this also reads
    /// `smtp.ca_file`), under `[notify]`'s policy.
    pub fn from_config(cfg: &Config) -> Result<Channels, SetupError> {
        Ok(Channels {
            email: cfg.smtp.as_ref().map(Mailer::new).transpose()?,
            sms: cfg.sms.as_ref().map(SmsSender::new).transpose()?,
            policy: cfg.notify.clone(),
        })
    }

    /// Whether `channel` is configured.
    pub fn has(&self, channel: Channel) -> bool {
        match channel {
            Channel::Email => self.email.is_some(),
            Channel::Sms => self.sms.is_some(),
        }
    }

    /// The channels configured, email first.
    pub fn configured(&self) -> Vec<Channel> {
        [Channel::Email, Channel::Sms]
            .into_iter()
            .filter(|c| self.has(*c))
            .collect()
    }

    /// What notices may say (`[notify]`).
    pub fn policy(&self) -> &NotifyConfig {
        &self.policy
    }

    /// The notice of notification `id` about `alert`, saying only what `[notify]` allows
    /// ([`Notice::for_alert`]).
    pub fn notice_for_alert(
        &self,
        id: &str,
        alert: &Alert,
        patient: PatientRef<'_>,
        link: &str,
    ) -> Notice {
        Notice::for_alert(id, alert, patient, link, &self.policy)
    }

    /// Sends `notice` to `to` (an email address, or a phone number in E.164 for SMS) by
    /// `channel`: [`SendError::NotConfigured`] when that channel is off.
    pub async fn send(
        &self,
        channel: Channel,
        to: &str,
        notice: &Notice,
    ) -> Result<Sent, SendError> {
        let outcome = match channel {
            Channel::Email => match &self.email {
                Some(m) => m.send(to, notice).await,
                None => Err(SendError::NotConfigured(channel)),
            },
            Channel::Sms => match &self.sms {
                Some(s) => s.send(to, notice).await,
                None => Err(SendError::NotConfigured(channel)),
            },
        };
        match &outcome {
            Ok(sent) => tracing::debug!(
                %channel, notification_id = %notice.id, receipt = ?sent.receipt, "notification sent"
            ),
            Err(e) => tracing::debug!(
                %channel, notification_id = %notice.id, error = %e, "notification not sent"
            ),
        }
        outcome
    }
}
