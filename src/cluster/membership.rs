//! Which instances share the database, and the devices of those that are gone.
//!
//! Each instance holds a heartbeat lease, `instance:<id>` ([`crate::registry::lease`]), taken
//! when its registry opens and renewed here; one that stops gives it up, one that dies lets it
//! lapse ([`INSTANCE_TTL_MS`]). A device's connection is held by one instance (the registry
//! records which); every [`SWEEP_EVERY`] the instance holding the `presence` lease marks
//! offline the devices held by instances no longer live. So a restart of one instance leaves
//! the devices connected to the others online, and the devices of an instance that died are
//! shown offline within about `INSTANCE_TTL_MS` + `SWEEP_EVERY` (25 s; up to 20 s more when
//! the instance that died was the one sweeping, until its `presence` lease lapses).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::HeldLease;
use crate::registry::Registry;
use crate::registry::lease::{INSTANCE_TTL_MS, instance_lease};
use crate::telemetry::Metrics;

/// How often the heartbeat is looked at (it is renewed once less than half its time is left).
const BEAT_EVERY: Duration = Duration::from_millis(2_500);

/// How often gone instances' devices are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// Keeps this instance's heartbeat and sweeps gone instances' devices until `stop`; gives the
/// leases up then.
pub async fn run(registry: Registry, metrics: Metrics, stop: CancellationToken) {
    let mut beat = HeldLease::new(
        instance_lease(registry.instance_id()),
        "this instance is live",
        INSTANCE_TTL_MS,
        &metrics,
    );
    let mut presence = HeldLease::new(
        "presence",
        "sweeping devices of gone instances",
        20_000,
        &metrics,
    );
    let mut beats = tokio::time::interval(BEAT_EVERY);
    let mut sweeps = tokio::time::interval(SWEEP_EVERY);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = beats.tick() => {
                beat.ensure(&registry).await;
            }
            _ = sweeps.tick() => {
                if presence.ensure(&registry).await {
                    match registry.mark_devices_of_gone_instances().await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(devices = n, "devices of instances that are gone marked offline"),
                        Err(e) => tracing::warn!(error = %e, "devices of gone instances not swept"),
                    }
                }
            }
        }
    }
    presence.release(&registry).await;
    beat.release(&registry).await;
}
