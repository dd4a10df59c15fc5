//! The sign-in throttle: failed sign-ins counted per username and per remote address, with a
//! lock that doubles after the free failures. Kept apart from the sign-in handlers so that the
//! application state can hold it without depending on them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::throttle::{Backoff, FailureThrottle};

/// Failures allowed in a row before sign-in attempts must wait.
pub(crate) const FREE_FAILURES: u32 = 5;
const FIRST_LOCK: Duration = Duration::from_secs(30);
const MAX_LOCK: Duration = Duration::from_secs(15 * 60);
/// A key with no failure for this long is forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(3600);
const MAX_KEYS: usize = 100_000;

/// Failed sign-ins, per username and per remote address.
pub struct LoginThrottle {
    failures: Arc<FailureThrottle<String>>,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        LoginThrottle {
            failures: Arc::new(FailureThrottle::new(Backoff {
                free: FREE_FAILURES,
                first: FIRST_LOCK,
                max: MAX_LOCK,
                forget_after: FORGET_AFTER,
                max_keys: MAX_KEYS,
            })),
        }
    }
}

impl LoginThrottle {
    /// The failures' throttle, to be shared with the other instances
    /// (`crate::cluster::throttles`): sign-ins and bearer tokens, per user name and address.
    pub fn failures(&self) -> Arc<FailureThrottle<String>> {
        self.failures.clone()
    }

    /// How long the caller must still wait, if any key of theirs is locked.
    pub(super) fn wait(&self, keys: &[String], now: Instant) -> Option<Duration> {
        self.failures.wait(keys, now)
    }

    /// Counts a failure against every key.
    pub(super) fn failed(&self, keys: &[String], now: Instant) {
        self.failures.failed(keys, now);
    }

    /// Clears the user's count after a sign-in that succeeded.
    pub(super) fn succeeded(&self, user_key: &str) {
        self.failures.succeeded(&user_key.to_owned());
    }

    /// Reserves a sign-in attempt for `keys` (see [`FailureThrottle::begin`]).
    pub(super) fn begin<'a>(
        &'a self,
        keys: &'a [String],
        now: Instant,
    ) -> Result<Attempt<'a>, Duration> {
        self.failures.begin(keys, now)?;
        Ok(Attempt {
            throttle: self,
            keys,
            open: true,
        })
    }
}

/// A reserved sign-in attempt. One dropped before it was ended (the client hung up during the
/// check) counts as a failure: hanging up must not be a way around the count.
pub(super) struct Attempt<'a> {
    throttle: &'a LoginThrottle,
    keys: &'a [String],
    open: bool,
}

impl Attempt<'_> {
    /// Ends the attempt, counting it as a failure or not.
    pub(super) fn end(mut self, failed: bool) {
        self.open = false;
        self.throttle
            .failures
            .end(self.keys, failed, Instant::now());
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if self.open {
            self.throttle.failures.end(self.keys, true, Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_lock_after_the_free_ones_and_the_lock_doubles() {
        let t = LoginThrottle::default();
        let keys = ["user:a".to_owned(), "addr:1".to_owned()];
        let now = Instant::now();
        for _ in 0..FREE_FAILURES {
            assert!(t.wait(&keys, now).is_none());
            t.failed(&keys, now);
        }
        assert!(t.wait(&keys, now).is_none(), "five failures are free");
        t.failed(&keys, now);
        let w = t.wait(&keys, now).unwrap();
        assert!(
            w > Duration::from_secs(25) && w <= Duration::from_secs(30),
            "{w:?}"
        );
        t.failed(&keys, now);
        assert!(t.wait(&keys, now).unwrap() > Duration::from_secs(50));
        assert!(
            t.wait(&keys, now + MAX_LOCK).is_none(),
            "capped at 15 minutes"
        );
        t.succeeded("user:a");
        assert!(
            t.wait(&["user:a".to_owned()], now).is_none(),
            "success clears the user's count"
        );
        assert!(t.wait(&keys, now).is_some(), "but not the address's");
    }
}
