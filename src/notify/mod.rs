//! Notifications: how an alert reaches a person by email and SMS, what the message says, and
//! which escalation steps to take when ([`plan`]). Storing steps once each and the
//! notifications' outbox is the registry's (`registry::notifications`); the channels here only
//! send one notice to one address and say how it went.
//!
//! - [`message`]: the words — an email's subject and plain-text body, an SMS — made from an
//!   alert under `[notify]`'s policy: the minimum necessary (severity, the rule, the patient's
//!   initials, a link), never readings or full names unless the clinic turns
//!   `notify.include_details` on. Pure.
//! - [`email`]: SMTP (`[smtp]`) with `lettre` over rustls.
//! - [`sms`]: the provider's form POST (`[sms]`) over reqwest.
//! - [`outcome`]: what a send ends in — [`Sent`], or a [`SendError`] that is retryable or
//!   permanent.
//! - [`channels`]: [`Channels`], the configured channels behind one `send`.
//! - [`worker`]: the loop that takes the steps due and sends the notifications claimed, on
//!   every instance.
//! - [`plan`]: which escalation steps of an alert to take now, and whom each notifies by which
//!   channel and when (pure).
//! - [`ack`]: the signed, expiring, single-use link in a notification that acknowledges its
//!   alert after sign-in (pure).
//!
//! It must never log a message's text, a recipient's reading or a secret (the SMTP password,
//! the SMS token). See docs/notifications.md.

pub mod ack;
pub mod channels;
pub mod email;
pub mod message;
pub mod outcome;
pub mod plan;
pub mod sms;
pub mod worker;

pub use channels::Channels;
pub use message::{About, Details, EmailText, Notice, PatientRef};
pub use outcome::{Channel, SendError, Sent, SetupError};
