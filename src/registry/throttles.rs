//! Failed authentications counted across instances: the sign-in and device-connect throttles
//! ([`crate::throttle::FailureThrottle`]) of every instance sharing a database report each
//! failure and each success here, and read the others' (see `crate::cluster::throttles`), so
//! spreading guesses over the instances behind a load balancer earns no more than guessing at
//! one. With SQLite the one instance's counts outlive its restarts. The registry's calls are in
//! `failure_counts.rs`.

/// A failure or a success reported by a throttle, under its shared key (`<scope>/<key>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureReport {
    pub key: String,
    /// A failure counts one more (from zero once the last is older than `forget_ms`); a
    /// success clears the count.
    pub failed: bool,
    pub at_ms: i64,
    pub forget_ms: i64,
}

/// A key's failures in a row, as the database holds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureCount {
    pub key: String,
    pub count: u32,
    /// When the last failure or success was reported.
    pub last_ms: i64,
}

/// Rows read at a time by `Registry::failures_after`.
pub const FAILURES_PAGE: usize = 1_000;
