//! Sharing work between Vigil instances on one database: which instance does a piece of work
//! (a sink's deliveries, a scheduled job) is decided by a lease in the registry
//! ([`crate::registry::lease`]), held and renewed here ([`HeldLease`]). With SQLite there is one
//! instance, which always gets its leases; the code is the same.

mod held;

pub use held::HeldLease;
