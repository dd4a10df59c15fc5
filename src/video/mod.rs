//! Video visits: a clinician starts a visit; the patient and the clinician join it from signed,
//! expiring links; its start and end go to the patient's record.
//!
//! - [`token`]: the join tokens (pure).
//! - [`visits`]: the visits and their record entries, in `registry.db`.
//!
//! Signalling and the media relay (the `webrtc` crate) come next; see
//! `docs/design/webrtc-spike.md`. The relay will know nothing of patients: it is given a visit
//! id and peer connections, and signalling decides who may join.

pub mod token;
pub mod visits;
