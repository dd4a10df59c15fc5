//! The store's one writer: a thread that takes every write waiting (up to `batch_max` rows),
//! commits them in one transaction through its backend (group commit: one flush to disk for
//! the batch), and only then answers each producer and publishes what was new to the feed.
//! The backend is SQLite (the embedded default) or PostgreSQL; the batching, the answers, the
//! feed and the metrics are the same for both.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use super::types::{Committed, CommittedBatch, DeadLetter, StoreError};
use crate::domain::Observation;
use crate::telemetry::Metrics;

/// One request to the writer.
pub(super) enum Write {
    Observations {
        rows: Vec<Observation>,
        received_ms: i64,
        done: oneshot::Sender<Result<Committed, StoreError>>,
    },
    DeadLetter {
        letter: DeadLetter,
        done: oneshot::Sender<Result<Committed, StoreError>>,
    },
    Prune {
        before_ms: i64,
        done: oneshot::Sender<Result<Committed, StoreError>>,
    },
    /// Commit what came before, then stop.
    Shutdown,
    /// Remove the InfluxDB lines `ids` (delivered); keep `rejected` ones with a reason.
    OutboxDone {
        ids: Vec<i64>,
        rejected: Vec<String>,
        reason: String,
        at_ms: i64,
        done: oneshot::Sender<Result<Committed, StoreError>>,
    },
    /// Remove the readings `ids` from the FHIR spool (they are in the outbox now).
    FhirSpoolDone {
        ids: Vec<i64>,
        done: oneshot::Sender<Result<Committed, StoreError>>,
    },
}

/// A backend's side of the writer: commits one batch in one transaction.
pub(super) trait Committer: Send + 'static {
    /// Commits `batch` whole or not at all: each write's result, in order. With `fresh`, the
    /// observations newly stored (not redeliveries) are pushed to it, in the batch's order.
    fn commit(
        &mut self,
        batch: &[Write],
        fresh: Option<&mut Vec<Observation>>,
    ) -> Result<Vec<Committed>, StoreError>;

    /// After the last commit, before the writer stops.
    fn close(&mut self) {}
}

/// What the writer needs besides its backend.
pub(super) struct WriterState {
    pub batch_max: usize,
    pub metrics: Metrics,
    /// Whether new observations also go to the InfluxDB outbox (so its worker is woken).
    pub influx: bool,
    pub outbox_ready: Arc<tokio::sync::Notify>,
    pub feed: tokio::sync::broadcast::Sender<Arc<CommittedBatch>>,
}

/// Runs the writer until a [`Write::Shutdown`] or until every sender is gone.
pub(super) fn run(mut backend: impl Committer, mut rx: mpsc::Receiver<Write>, st: WriterState) {
    let (batch_max, metrics) = (st.batch_max, &st.metrics);
    let mut batch: Vec<Write> = Vec::with_capacity(batch_max);
    let mut open = true;
    while open {
        let Some(first) = rx.blocking_recv() else {
            break;
        };
        batch.push(first);
        let mut rows = batch_rows(&batch);
        while rows < batch_max {
            match rx.try_recv() {
                Ok(w) => {
                    batch.push(w);
                    rows = batch_rows(&batch);
                }
                Err(_) => break,
            }
        }
        if let Some(at) = batch.iter().position(|w| matches!(w, Write::Shutdown)) {
            // Anything queued behind the shutdown is refused (its sender sees Closed).
            batch.truncate(at);
            open = false;
        }
        if batch.is_empty() {
            continue;
        }
        let started = Instant::now();
        let mut fresh = Vec::new();
        let wanted = (st.feed.receiver_count() > 0).then_some(&mut fresh);
        let outcome = backend.commit(&batch, wanted);
        metrics
            .store_commit_seconds
            .observe(started.elapsed().as_secs_f64());
        match outcome {
            Ok(results) => {
                metrics.store_disk_full.set(0);
                if st.influx && results.iter().any(|r| r.inserted > 0) {
                    st.outbox_ready.notify_one();
                }
                if !fresh.is_empty() {
                    let _ = st.feed.send(Arc::new(CommittedBatch {
                        committed_ms: crate::domain::now_ms(),
                        at: Instant::now(),
                        observations: fresh,
                    }));
                }
                for (w, r) in batch.drain(..).zip(results) {
                    if let Some(done) = done_of(w) {
                        let _ = done.send(Ok(r));
                    }
                }
            }
            Err(e) => {
                if matches!(e, StoreError::Full) {
                    if metrics.store_disk_full.set(1) == 0 {
                        tracing::error!(
                            "the store's disk is full: readings are refused (not acknowledged) until space is freed"
                        );
                    }
                } else {
                    tracing::error!(error = %e, "store commit failed; the batch is not acknowledged");
                }
                metrics.store_commit_failures.inc();
                for w in batch.drain(..) {
                    if let Some(done) = done_of(w) {
                        let _ = done.send(Err(e.clone()));
                    }
                }
            }
        }
    }
    rx.close();
    backend.close();
}

fn batch_rows(batch: &[Write]) -> usize {
    batch
        .iter()
        .map(|w| match w {
            Write::Observations { rows, .. } => rows.len(),
            _ => 1,
        })
        .sum()
}

fn done_of(w: Write) -> Option<oneshot::Sender<Result<Committed, StoreError>>> {
    match w {
        Write::Observations { done, .. }
        | Write::DeadLetter { done, .. }
        | Write::Prune { done, .. }
        | Write::OutboxDone { done, .. }
        | Write::FhirSpoolDone { done, .. } => Some(done),
        Write::Shutdown => None,
    }
}
