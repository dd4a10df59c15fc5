//! Video visits: a clinician starts a visit; the patient (and a guest) join from signed,
//! expiring links; Vigil relays the call over WebRTC; its start and end go to the patient's
//! record. The protocol is in `docs/video.md`.
//!
//! - [`token`]: the join tokens (pure).
//! - [`visits`]: the visits and their record entries, in `registry.db`.
//! - [`relay`]: the media relay (SFU), one [`relay::Room`] per visit's call.
//! - [`outbox`]: a participant's signalling socket as the relay sees it (its message queue).
//! - [`rtc_setup`]: how the relay's peer connections are built (codecs, interceptors, ports).
//! - [`signal`]: the signalling messages (pure).
//! - [`ice`]: the STUN/TURN servers handed to browsers, with TURN REST credentials.
//!
//! The relay knows nothing of patients: the signalling socket (`web::signal`) decides who may
//! join a visit and in which role.

pub mod ice;
pub mod outbox;
pub mod relay;
pub mod rtc_setup;
pub mod signal;
pub mod token;
pub mod visits;
