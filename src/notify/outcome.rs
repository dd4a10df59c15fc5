//! What a send ends in, shared by the channels: delivered to the next hop ([`Sent`]), worth
//! another try later, or refused for good ([`SendError`]). The caller (the notification
//! outbox) backs off on the one and gives up on the other, as the CRM outbox does with
//! [`Attempt`].

use crate::crm::retry::Attempt;

/// A way to reach a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Email,
    Sms,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
        }
    }

    /// The config section that turns it on.
    pub fn section(self) -> &'static str {
        match self {
            Channel::Email => "smtp",
            Channel::Sms => "sms",
        }
    }
}

impl std::fmt::Display for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A message handed over: the SMTP server or the SMS provider took it. (Whether it reached the
/// person's phone or inbox is theirs to tell, later or never.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub channel: Channel,
    /// Email: the `Message-ID` it carried (`<…>`), the same on every attempt at one
    /// notification. SMS: none.
    pub message_id: Option<String>,
    /// What the receiver answered that identifies the message, for the timeline: the SMS
    /// provider's `id` or `sid`; the SMTP server's reply to the message
    /// (`2.0.0 Ok: queued as 4FxK2`).
    pub receipt: Option<String>,
}

/// Why a message was not handed over. The reasons name the server and what it said, never
/// the message's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Worth trying again later: the server could not be reached or timed out, TLS failed, an
    /// SMTP 4xx reply, HTTP 408, 425, 429 or 5xx.
    #[error("{0}")]
    Retryable(String),
    /// Refused for good: an SMTP 5xx reply (such as an unknown recipient), another HTTP 4xx,
    /// an address that is not one, a server that cannot take the message as configured.
    #[error("{0}")]
    Permanent(String),
    /// The channel is not configured (`[smtp]` or `[sms]` is absent).
    #[error("no {0} channel: [{section}] is not configured", section = .0.section())]
    NotConfigured(Channel),
}

impl SendError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, SendError::Retryable(_))
    }
}

/// The CRM outbox's words for the same outcome, for callers that settle rows with
/// [`crate::crm::retry::settle`].
impl From<&Result<Sent, SendError>> for Attempt {
    fn from(r: &Result<Sent, SendError>) -> Attempt {
        match r {
            Ok(_) => Attempt::Delivered,
            Err(e @ SendError::Retryable(_)) => Attempt::Retry(e.to_string()),
            Err(e) => Attempt::Refused(e.to_string()),
        }
    }
}

/// A channel that could not be set up from its configuration: the key and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct SetupError {
    pub key: &'static str,
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_map_onto_the_outbox_attempts() {
        let sent: Result<Sent, SendError> = Ok(Sent {
            channel: Channel::Sms,
            message_id: None,
            receipt: Some("SM1".into()),
        });
        assert_eq!(Attempt::from(&sent), Attempt::Delivered);
        let later: Result<Sent, SendError> = Err(SendError::Retryable("busy".into()));
        assert_eq!(Attempt::from(&later), Attempt::Retry("busy".into()));
        let never: Result<Sent, SendError> = Err(SendError::NotConfigured(Channel::Email));
        assert_eq!(
            Attempt::from(&never),
            Attempt::Refused("no email channel: [smtp] is not configured".into())
        );
        assert!(!SendError::Permanent("x".into()).is_retryable());
    }
}
