//! Every instance's readings for this instance's displays, on PostgreSQL: the live feed and the
//! panel's cache of a clinician connected here show readings whichever instance stored them.
//!
//! It reads what committed in commit order, from one horizon to the next
//! (`Store::committed_in` over every alert partition: each reading once, none skipped), and
//! broadcasts each read as a [`CommittedBatch`]. It reads when a commit's notification wakes it
//! (the writer notifies [`READINGS_CHANNEL`] in every transaction that stored a new reading;
//! the notifications of many commits are taken as one), and every [`FALLBACK`] whatever it
//! heard — a notification only makes it read sooner, so one lost (the listening connection
//! broke) delays a reading by at most that, never loses it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};
use tokio_util::sync::CancellationToken;

use super::reads::Reads;
use super::types::CommittedBatch;
use crate::domain::now_ms;
use crate::domain::partition::ALERT_PARTITIONS;
use crate::pg::listen::{Heard, READINGS_CHANNEL};

/// How often it reads without a notification.
const FALLBACK: Duration = Duration::from_secs(1);

/// The most readings broadcast as one batch (a large backlog goes out in several).
const BATCH_MAX: usize = 4096;

pub(super) async fn run(
    store: Arc<dyn Reads>,
    tx: broadcast::Sender<Arc<CommittedBatch>>,
    mut heard: broadcast::Receiver<Heard>,
    stop: CancellationToken,
) {
    let all: Vec<u16> = (0..ALERT_PARTITIONS).collect();
    let mut from = None;
    let mut fallback = tokio::time::interval(FALLBACK);
    fallback.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut listening = true;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = fallback.tick() => {}
            h = heard.recv(), if listening => match h {
                Ok(Heard::Notification { channel, .. }) if channel != READINGS_CHANNEL => continue,
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => listening = false,
            },
        }
        // Every wake waiting now is answered by this one read.
        while let Ok(_) | Err(TryRecvError::Lagged(_)) = heard.try_recv() {}
        let until = match store.commit_horizon().await {
            Ok(Some(h)) => h,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(error = %e, "commit horizon not read; the displays' feed waits");
                continue;
            }
        };
        // From the first horizon on: what committed before this started is the stores' to show.
        let Some(start) = from.replace(until) else {
            continue;
        };
        match store.committed_in(all.clone(), start, until).await {
            Ok(Some(fed)) => {
                for chunk in fed.readings.chunks(BATCH_MAX) {
                    // No subscriber is fine: nobody is watching.
                    let _ = tx.send(Arc::new(CommittedBatch {
                        committed_ms: now_ms(),
                        at: Instant::now(),
                        observations: chunk.iter().map(|r| r.observation.clone()).collect(),
                    }));
                }
            }
            Ok(None) => return,
            Err(e) => {
                // Read again from the same place next time.
                from = Some(start);
                tracing::debug!(error = %e, "committed readings not read; the displays' feed waits");
            }
        }
    }
}
