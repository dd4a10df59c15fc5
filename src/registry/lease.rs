//! Leases: a named piece of work — a sink's deliveries, a scheduled job, a partition of
//! patients — held by one Vigil instance at a time, for a bounded time, so that instances
//! sharing one database do each piece once.
//!
//! A lease is taken or renewed for `ttl` from now; it is free again once that time has passed
//! without a renewal (its holder died, paused or lost the database) or when its holder gives it
//! up. Each new holding gets the next **epoch**, and a holder that let its lease lapse gets a new
//! one too: work written with the epoch it was begun under can be refused once the epoch has
//! moved on (fencing), so a paused former holder that wakes up cannot act on stale state.
//!
//! Time is an input (milliseconds since the epoch, as everywhere in the registry): instances'
//! clocks must agree to well within a lease's time to live.

/// The start of every instance's heartbeat lease name: `instance:<instance id>`.
pub const INSTANCE_PREFIX: &str = "instance:";

/// How long an instance's heartbeat lasts unless renewed: how long after an instance dies the
/// others see it gone.
pub const INSTANCE_TTL_MS: i64 = 15_000;

/// The heartbeat lease of instance `id`.
pub fn instance_lease(id: &str) -> String {
    format!("{INSTANCE_PREFIX}{id}")
}

/// A write to be made only while a lease is held: by `holder`, at `epoch`, and not expired at
/// `at_ms` (the writer's clock, when it writes). The write checks it in its own transaction and
/// locks the lease's row until it commits, so the lease cannot move on in between: once another
/// instance has taken the lease, a former holder — paused, cut off, or unaware — writes nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub name: String,
    pub holder: String,
    pub epoch: i64,
    pub at_ms: i64,
}

/// A lease as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub name: String,
    pub holder: String,
    /// 1 for the first holding, one more for each new one.
    pub epoch: i64,
    /// Until when it is held, unless renewed.
    pub expires_ms: i64,
}

impl Lease {
    /// The fence for a write made under this holding at `at_ms`.
    pub fn fence(&self, at_ms: i64) -> Fence {
        Fence {
            name: self.name.clone(),
            holder: self.holder.clone(),
            epoch: self.epoch,
            at_ms,
        }
    }
}
