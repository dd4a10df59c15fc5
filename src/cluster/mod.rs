//! Sharing work between Vigil instances on one database: which instance does a piece of work
//! (a sink's deliveries, a scheduled job, a partition of patients' alert rules) is decided by a
//! lease in the registry ([`crate::registry::lease`]), held and renewed here ([`HeldLease`]);
//! which instances are live, by their heartbeats ([`membership`]); which evaluates which alert
//! partitions, by [`balance`]. With SQLite there is one instance, which always gets its leases;
//! the code is the same.

pub mod balance;
pub mod credentials;
mod held;
pub mod membership;
pub mod throttles;

pub use held::HeldLease;
