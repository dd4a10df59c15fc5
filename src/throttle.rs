//! Throttles shared by sign-in, API tokens and device connects: a back-off after repeated
//! failures ([`FailureThrottle`]) and a token bucket per key ([`RateLimiter`]). Both live in
//! memory, are bounded in the number of keys they hold, and forget idle keys.
//!
//! A [`FailureThrottle`] can be shared ([`FailureThrottle::share`]): it then reports each failure
//! and success for the instances sharing the database to count together
//! (`crate::cluster::throttles`), and takes in their counts ([`FailureThrottle::merge`]).
//!
//! A check that takes long (a password) reserves its attempt before it starts
//! ([`FailureThrottle::begin`]), so that attempts made all at once are counted as they are made,
//! not only once each has failed: otherwise a burst would all pass the check before the first
//! failure was counted.

use std::collections::HashMap;
use std::fmt::Display;
use std::hash::Hash;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::registry::throttles::FailureReport;

/// How failures lock a key: `free` failures in a row cost nothing; each further one locks the
/// key for `first`, doubling per failure up to `max`. A key without a failure for
/// `forget_after` starts again from zero.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub free: u32,
    pub first: Duration,
    pub max: Duration,
    pub forget_after: Duration,
    /// Keys held at most; beyond it, forgotten keys are swept out.
    pub max_keys: usize,
}

#[derive(Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    /// Attempts begun and not yet ended.
    pending: u32,
}

/// What the caller is told to wait while other attempts of a key are under way.
const PENDING_WAIT: Duration = Duration::from_secs(1);

/// Failures per key, and the lock they earn (see [`Backoff`]).
pub struct FailureThrottle<K> {
    keys: Mutex<HashMap<K, Failures>>,
    policy: Backoff,
    shared: OnceLock<Shared>,
}

/// Where a shared throttle's reports go, and the name its keys are reported under.
struct Shared {
    scope: &'static str,
    reports: tokio::sync::mpsc::Sender<FailureReport>,
}

/// Two times closer than this are one report seen twice (a count read back as it was written).
const SAME_REPORT: Duration = Duration::from_millis(5);

impl<K: Hash + Eq + Clone + Display> FailureThrottle<K> {
    pub fn new(policy: Backoff) -> Self {
        FailureThrottle {
            keys: Mutex::new(HashMap::new()),
            policy,
            shared: OnceLock::new(),
        }
    }

    /// Reports every failure and success from now on to `reports`, each key as
    /// `<scope>/<key>`. Once: a second call changes nothing.
    pub fn share(&self, scope: &'static str, reports: tokio::sync::mpsc::Sender<FailureReport>) {
        let _ = self.shared.set(Shared { scope, reports });
    }

    /// Reports `keys`' failure (or success) if shared. A full queue drops the report: this
    /// instance still counts it, and a flood that fills the queue is being refused anyway.
    fn report(&self, keys: &[K], failed: bool) {
        let Some(shared) = self.shared.get() else {
            return;
        };
        let at_ms = crate::domain::now_ms();
        let forget_ms = i64::try_from(self.policy.forget_after.as_millis()).unwrap_or(i64::MAX);
        for k in keys {
            let _ = shared.reports.try_send(FailureReport {
                key: format!("{}/{k}", shared.scope),
                failed,
                at_ms,
                forget_ms,
            });
        }
    }

    /// Takes in a key's count as the instances sharing the database hold it, its last report
    /// made at `last`: the later of the two wins (a success reported elsewhere clears this
    /// instance's count too); one report seen twice keeps the larger count. Attempts under
    /// way here stay counted.
    pub fn merge(&self, key: K, count: u32, last: Instant) {
        let Ok(mut map) = self.keys.lock() else {
            return;
        };
        match map.get_mut(&key) {
            Some(f) => {
                let same = if f.last > last {
                    f.last - last <= SAME_REPORT
                } else {
                    last - f.last <= SAME_REPORT
                };
                if same {
                    f.count = f.count.max(count);
                } else if last > f.last {
                    f.count = count;
                    f.last = last;
                }
            }
            None if count > 0 => {
                self.sweep(&mut map, last);
                map.insert(
                    key,
                    Failures {
                        count,
                        last,
                        pending: 0,
                    },
                );
            }
            None => {}
        }
    }

    fn locked_until(&self, f: &Failures) -> Option<Instant> {
        let over = f.count.checked_sub(self.policy.free.saturating_add(1))?;
        let lock = self
            .policy
            .first
            .saturating_mul(1u32 << over.min(16))
            .min(self.policy.max);
        Some(f.last + lock)
    }

    /// How long the caller must still wait, if any of `keys` is locked.
    pub fn wait(&self, keys: &[K], now: Instant) -> Option<Duration> {
        let map = self.keys.lock().ok()?;
        self.locked(&map, keys, now)
    }

    fn locked(&self, map: &HashMap<K, Failures>, keys: &[K], now: Instant) -> Option<Duration> {
        keys.iter()
            .filter_map(|k| self.locked_until(map.get(k)?))
            .filter(|until| *until > now)
            .map(|until| until - now)
            .max()
    }

    /// Begins an attempt for each of `keys`, unless one is locked or already has as many
    /// attempts under way as it has free failures left (one, once they are spent): `Err` says
    /// how long to wait. Each begun attempt must be ended with [`FailureThrottle::end`].
    pub fn begin(&self, keys: &[K], now: Instant) -> Result<(), Duration> {
        let Ok(mut map) = self.keys.lock() else {
            return Ok(());
        };
        if let Some(wait) = self.locked(&map, keys, now) {
            return Err(wait);
        }
        let forget = self.policy.forget_after;
        let busy = keys.iter().filter_map(|k| map.get(k)).any(|f| {
            let count = if now.duration_since(f.last) >= forget {
                0
            } else {
                f.count
            };
            f.pending >= self.policy.free.saturating_sub(count).max(1)
        });
        if busy {
            return Err(PENDING_WAIT);
        }
        self.sweep(&mut map, now);
        for k in keys {
            map.entry(k.clone())
                .or_insert(Failures {
                    count: 0,
                    last: now,
                    pending: 0,
                })
                .pending += 1;
        }
        Ok(())
    }

    /// Ends an attempt begun with [`FailureThrottle::begin`], counting it as a failure of every
    /// key when `failed`.
    pub fn end(&self, keys: &[K], failed: bool, now: Instant) {
        let Ok(mut map) = self.keys.lock() else {
            return;
        };
        for k in keys {
            if let Some(f) = map.get_mut(k) {
                f.pending = f.pending.saturating_sub(1);
            }
        }
        if failed {
            self.count(&mut map, keys, now);
        }
    }

    /// Forgets idle keys once the table is full (never one with attempts under way).
    fn sweep(&self, map: &mut HashMap<K, Failures>, now: Instant) {
        let forget = self.policy.forget_after;
        if map.len() >= self.policy.max_keys {
            map.retain(|_, f| f.pending > 0 || now.duration_since(f.last) < forget);
        }
    }

    /// Counts a failure against each of `keys`.
    pub fn failed(&self, keys: &[K], now: Instant) {
        let Ok(mut map) = self.keys.lock() else {
            return;
        };
        self.count(&mut map, keys, now);
    }

    fn count(&self, map: &mut HashMap<K, Failures>, keys: &[K], now: Instant) {
        self.report(keys, true);
        let forget = self.policy.forget_after;
        self.sweep(map, now);
        for k in keys {
            let f = map.entry(k.clone()).or_insert(Failures {
                count: 0,
                last: now,
                pending: 0,
            });
            if now.duration_since(f.last) >= forget {
                f.count = 0;
            }
            f.count += 1;
            f.last = now;
        }
    }

    /// Clears a key's failures (attempts still under way stay counted).
    pub fn succeeded(&self, key: &K) {
        self.report(std::slice::from_ref(key), false);
        if let Ok(mut map) = self.keys.lock() {
            match map.get_mut(key) {
                Some(f) if f.pending > 0 => f.count = 0,
                _ => {
                    map.remove(key);
                }
            }
        }
    }
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// A token bucket per key: `burst` events at once, refilled at `per_minute`.
pub struct RateLimiter<K> {
    buckets: Mutex<HashMap<K, Bucket>>,
    per_s: f64,
    burst: f64,
    max_keys: usize,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    pub fn new(per_minute: u32, burst: u32, max_keys: usize) -> Self {
        RateLimiter {
            buckets: Mutex::new(HashMap::new()),
            per_s: f64::from(per_minute) / 60.0,
            burst: f64::from(burst.max(1)),
            max_keys,
        }
    }

    /// Takes one token for `key`: `Ok` if there was one, else how long until there is.
    pub fn take(&self, key: &K, now: Instant) -> Result<(), Duration> {
        let Ok(mut map) = self.buckets.lock() else {
            return Ok(());
        };
        if map.len() >= self.max_keys && !map.contains_key(key) {
            // Full buckets carry no state worth keeping.
            let (per_s, burst) = (self.per_s, self.burst);
            map.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * per_s < burst);
        }
        let b = map.entry(key.clone()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let refilled = now.saturating_duration_since(b.at).as_secs_f64() * self.per_s;
        b.tokens = (b.tokens + refilled).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else if self.per_s > 0.0 {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / self.per_s))
        } else {
            Err(Duration::MAX)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_gives_its_burst_then_refills_at_its_rate() {
        let r = RateLimiter::new(60, 3, 10);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(r.take(&"d", t0).is_ok());
        }
        let wait = r.take(&"d", t0).unwrap_err();
        assert!(wait > Duration::from_millis(900) && wait <= Duration::from_secs(1));
        assert!(r.take(&"other", t0).is_ok(), "keys are independent");
        assert!(r.take(&"d", t0 + Duration::from_millis(1001)).is_ok());
        assert!(r.take(&"d", t0 + Duration::from_millis(1002)).is_err());
    }

    #[test]
    fn an_allowance_as_large_as_it_gets_never_locks() {
        let t = FailureThrottle::new(Backoff {
            free: u32::MAX,
            first: Duration::from_secs(1),
            max: Duration::from_secs(2),
            forget_after: Duration::from_secs(60),
            max_keys: 4,
        });
        let now = Instant::now();
        t.failed(&["k"], now);
        assert!(t.wait(&["k"], now).is_none());
    }

    #[test]
    fn attempts_under_way_use_up_the_free_failures_before_they_fail() {
        let t = FailureThrottle::new(Backoff {
            free: 3,
            first: Duration::from_secs(30),
            max: Duration::from_secs(60),
            forget_after: Duration::from_secs(3600),
            max_keys: 100,
        });
        let now = Instant::now();
        let (user, other) = (["user:a", "addr:1"], ["user:b", "addr:1"]);
        for _ in 0..3 {
            assert!(t.begin(&user, now).is_ok());
        }
        assert_eq!(
            t.begin(&user, now),
            Err(PENDING_WAIT),
            "three free, three under way"
        );
        assert_eq!(t.begin(&other, now), Err(PENDING_WAIT), "the address's too");
        t.end(&user, true, now);
        t.end(&user, true, now);
        assert_eq!(
            t.begin(&user, now),
            Err(PENDING_WAIT),
            "one left, one under way"
        );
        t.end(&user, true, now);
        assert!(
            t.begin(&user, now).is_ok(),
            "the fourth, once the three have failed"
        );
        assert_eq!(
            t.begin(&user, now),
            Err(PENDING_WAIT),
            "one at a time after the free ones"
        );
        t.end(&user, true, now);
        let wait = t.begin(&user, now).unwrap_err();
        assert!(
            wait > Duration::from_secs(25),
            "locked after the fourth failure: {wait:?}"
        );

        let fresh = ["user:c", "addr:2"];
        assert!(t.begin(&fresh, now).is_ok());
        t.succeeded(&"user:c");
        t.end(&fresh, false, now);
        assert!(
            t.begin(&fresh, now).is_ok(),
            "a success ends the attempt without a failure"
        );
    }

    #[test]
    fn a_merged_count_wins_when_later_and_one_report_seen_twice_keeps_the_larger() {
        let t = FailureThrottle::new(Backoff {
            free: 2,
            first: Duration::from_secs(30),
            max: Duration::from_secs(60),
            forget_after: Duration::from_secs(3600),
            max_keys: 100,
        });
        let now = Instant::now();
        let later = now + Duration::from_secs(1);
        t.merge("k", 3, now);
        assert!(
            t.wait(&["k"], now).is_some(),
            "three from elsewhere lock here"
        );
        t.merge("k", 0, later);
        assert!(t.wait(&["k"], later).is_none(), "a later success clears");
        t.failed(&["k"], later);
        t.merge("k", 0, now);
        t.failed(&["k"], later);
        t.failed(&["k"], later);
        assert!(
            t.wait(&["k"], later).is_some(),
            "an earlier report does not undo later failures"
        );
        t.merge("j", 5, now);
        t.merge("j", 2, now + Duration::from_millis(2));
        assert!(
            t.wait(&["j"], now).is_some(),
            "the same report: the larger count"
        );
        t.merge("z", 0, now);
        assert!(
            t.keys.lock().unwrap().get("z").is_none(),
            "nothing kept for a zero"
        );
    }

    #[test]
    fn the_key_table_stays_bounded() {
        let r = RateLimiter::new(60, 2, 4);
        let t0 = Instant::now();
        for i in 0..100 {
            let _ = r.take(&i, t0 + Duration::from_secs(10 * i));
        }
        assert!(r.buckets.lock().unwrap().len() <= 5);
    }
}
