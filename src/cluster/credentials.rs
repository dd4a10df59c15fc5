//! Device credentials across instances: each instance keeps them in memory (every CONNECT is
//! checked there), so a device added, revoked or given a new secret through one instance must
//! reach the others' caches. On PostgreSQL every such change moves a counter (a trigger on the
//! devices table); each instance looks at it every [`CHECK_EVERY`] and reloads its cache when
//! it moved, ending the connections of devices revoked or re-keyed meanwhile. On SQLite there
//! is one instance and nothing to watch.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::registry::Registry;

/// How often the counter is read: how long a change made through another instance takes to
/// reach this one, at most.
const CHECK_EVERY: Duration = Duration::from_secs(2);

/// Watches the counter until `stop`.
pub async fn run(registry: Registry, stop: CancellationToken) {
    if let Ok(None) = registry.credentials_version().await {
        return;
    }
    // Nothing seen yet: the first look reloads, catching a change made between the cache's
    // loading at start and now.
    let mut seen = None;
    let mut tick = tokio::time::interval(CHECK_EVERY);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = match registry.credentials_version().await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "device credentials' version not read");
                continue;
            }
        };
        if now == seen {
            continue;
        }
        // Read before reloading: a change made during the reload moves it again, and is
        // picked up at the next look.
        match registry.reload_credentials().await {
            Ok(changed) => {
                tracing::debug!(changed, "device credentials reloaded");
                seen = now;
            }
            Err(e) => tracing::warn!(error = %e, "device credentials not reloaded"),
        }
    }
}
