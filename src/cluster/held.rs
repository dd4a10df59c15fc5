//! A lease as one instance holds it: taken when free, renewed at half its time to live (or
//! sooner, [`HeldLease::renewed_below`]), given up at a stop. Work is done only while
//! [`HeldLease::ensure`] says the lease is this instance's for at least that long from now, so
//! two instances never do it at once (their clocks agreeing to well within that margin).

use crate::domain::now_ms;
use crate::registry::Registry;
use crate::registry::lease::{INSTANCE_PREFIX, Lease};
use crate::telemetry::Metrics;

/// A named lease this instance holds, or asks for.
pub struct HeldLease {
    name: String,
    /// What the work is, for the log ("delivering this sink's outbox").
    what: &'static str,
    ttl_ms: i64,
    /// Renewed once less than this is left.
    renew_below_ms: i64,
    held: Option<Lease>,
    metrics: Metrics,
}

impl HeldLease {
    /// The lease `name`, held for `ttl_ms` at a time; `what` names the work in the log. Its
    /// holding is shown in `vigil_leases_held` and its changes counted in
    /// `vigil_lease_changes_total`.
    pub fn new(
        name: impl Into<String>,
        what: &'static str,
        ttl_ms: i64,
        metrics: &Metrics,
    ) -> HeldLease {
        HeldLease {
            name: name.into(),
            what,
            ttl_ms,
            renew_below_ms: ttl_ms / 2,
            held: None,
            metrics: metrics.clone(),
        }
    }

    /// Renewed once less than `ms` is left (instead of half its time to live): a lease whose
    /// renewals others watch as a heartbeat is renewed at every [`HeldLease::ensure`].
    pub fn renewed_below(mut self, ms: i64) -> HeldLease {
        self.renew_below_ms = ms.clamp(0, self.ttl_ms);
        self
    }

    /// The lease's label in the metrics: its name, but `instance` and `evaluator` for every
    /// instance's heartbeats (whose names change with each process).
    fn label(&self) -> String {
        if self.name.starts_with(INSTANCE_PREFIX) {
            "instance".into()
        } else if self.name.starts_with(super::balance::EVALUATOR_PREFIX) {
            "evaluator".into()
        } else {
            self.name.clone()
        }
    }

    fn counted(&self, held: bool, change: &str) {
        let label = self.label();
        self.metrics
            .leases_held
            .get_or_create(&vec![("lease", label.clone())])
            .set(i64::from(held));
        self.metrics
            .lease_changes
            .get_or_create(&vec![("lease", label), ("change", change.to_owned())])
            .inc();
    }

    /// The lease's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The epoch of the holding, while held.
    pub fn epoch(&self) -> Option<i64> {
        self.held.as_ref().map(|l| l.epoch)
    }

    /// The holding as last taken or renewed (for fencing the work done under it).
    pub fn held(&self) -> Option<&Lease> {
        self.held.as_ref()
    }

    /// Forgets the holding without giving it up (another instance has it now).
    pub fn forget(&mut self) {
        if self.held.take().is_some() {
            self.counted(false, "lost");
        }
    }

    /// Whether this instance holds the lease for at least its renewal margin from now,
    /// renewing or taking it when it must.
    pub async fn ensure(&mut self, registry: &Registry) -> bool {
        if let Some(l) = &self.held
            && l.expires_ms - now_ms() > self.renew_below_ms
        {
            return true;
        }
        match registry.acquire_lease(&self.name, self.ttl_ms).await {
            Ok(Some(l)) => {
                if self.epoch() != Some(l.epoch) {
                    tracing::info!(lease = %self.name, epoch = l.epoch, "{}", self.what);
                    self.counted(true, "taken");
                }
                self.held = Some(l);
                true
            }
            Ok(None) => {
                if self.held.take().is_some() {
                    tracing::warn!(lease = %self.name, "another instance holds this lease now");
                    self.counted(false, "lost");
                }
                false
            }
            Err(e) => {
                // Unsure whether it is still ours: do nothing until it is known to be.
                tracing::warn!(lease = %self.name, error = %e, "lease not renewed");
                if self.held.take().is_some() {
                    self.counted(false, "lost");
                }
                false
            }
        }
    }

    /// Gives the lease up (at a stop), so another instance takes over at once.
    pub async fn release(&mut self, registry: &Registry) {
        if let Some(l) = self.held.take() {
            self.counted(false, "released");
            if let Err(e) = registry.release_lease(&l).await {
                tracing::warn!(lease = %self.name, error = %e, "lease not given up; it lapses");
            }
        }
    }
}
