//! Where readings enter: the device endpoint, topic parsing, and the decode → validate → store
//! pipeline.
//!
//! [`Ingest`] is the one path every publish takes, whichever link brought it (the embedded
//! endpoint here; an external broker later): it decodes and validates ([`pipeline`]), hands
//! accepted observations or a dead letter to the store's writer, and returns a receiver that
//! answers after the durable commit — the moment, and the only moment, a publish may be
//! acknowledged.

pub mod access;
pub mod codec;
pub mod embedded;
pub mod external;
pub mod pipeline;
pub mod tls;
pub mod topic;

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::domain::{DeviceId, now_ms};
use crate::registry::{DeviceAuth, Registry};
use crate::store::{Committed, DeadLetter, Store, StoreError};
use crate::telemetry::Metrics;

pub use codec::PubOutcome;
use pipeline::{Accepted, Rejection, Source};
use topic::TopicKind;

/// The shared ingest path.
#[derive(Clone)]
pub struct Ingest {
    pub registry: Registry,
    pub store: Store,
    pub metrics: Metrics,
}

/// A publish handed to the store, not yet committed.
pub struct Submitted {
    pub outcome: PubOutcome,
    /// The reason, when the payload was refused (for the device's errors topic).
    pub rejection: Option<Rejection>,
    /// Answers after the commit; `None` when nothing needed storing (a status report).
    pub commit: Option<oneshot::Receiver<Result<Committed, StoreError>>>,
}

impl Ingest {
    /// Decodes, validates and queues one publish from an authenticated device.
    pub async fn submit(
        &self,
        device_id: &DeviceId,
        auth: &DeviceAuth,
        kind: TopicKind,
        topic: &str,
        payload: Bytes,
        content_type: Option<&str>,
    ) -> Result<Submitted, StoreError> {
        let now = now_ms();
        let src = Source {
            device_id,
            patient_id: &auth.patient_id,
            profile: &auth.profile,
        };
        match pipeline::process(&src, kind, &payload, content_type, now) {
            Ok(Accepted::Readings(obs)) => Ok(Submitted {
                outcome: PubOutcome::Stored,
                rejection: None,
                commit: Some(self.store.submit(obs, now).await?),
            }),
            Ok(Accepted::Status(st)) => {
                if let Err(e) = self
                    .registry
                    .set_device_status(device_id.clone(), st.online, st.battery, now, None)
                    .await
                {
                    tracing::warn!(device_id = %device_id, error = %e, "device status not recorded");
                }
                Ok(Submitted {
                    outcome: PubOutcome::Stored,
                    rejection: None,
                    commit: None,
                })
            }
            Err(rejection) => {
                self.metrics.rejected(rejection.label);
                tracing::warn!(
                    device_id = %device_id,
                    topic,
                    reason = %rejection.reason,
                    "reading rejected"
                );
                let rx = self
                    .store
                    .submit_dead_letter(DeadLetter {
                        time_ms: now,
                        device_id: device_id.clone(),
                        patient_id: Some(auth.patient_id.clone()),
                        topic: topic.to_owned(),
                        reason: rejection.reason.clone(),
                        payload: payload.to_vec(),
                    })
                    .await?;
                Ok(Submitted {
                    outcome: PubOutcome::Rejected,
                    rejection: Some(rejection),
                    commit: Some(rx),
                })
            }
        }
    }

    /// Counts what a commit achieved.
    pub fn count(&self, outcome: PubOutcome, c: &Committed) {
        if outcome == PubOutcome::Stored {
            self.metrics.readings_accepted.inc_by(c.inserted as u64);
            self.metrics.readings_duplicate.inc_by(c.duplicates as u64);
        }
    }
}
