//! A listener's connection slots: how many sockets it holds at once, and who gives way at the
//! cap. The HTTP listener and the MQTT endpoint each have their own, so a flood on one cannot take
//! the file descriptors the other needs (`crate::fd_budget` makes both caps fit the process's
//! limit).
//!
//! A connection is *waiting* while Vigil waits for its client to say something: a TLS handshake,
//! an HTTP request head, an MQTT CONNECT, or the next request on a kept-alive HTTP connection. It
//! is *working* while a request is being answered, a device is connected or a WebSocket is open.
//! At the cap a new connection takes the slot of the one that has been waiting longest, which is
//! closed at once (evicted); only when every slot is working is the new connection closed instead
//! (refused).
//!
//! Why evict rather than refuse: clients that connect and then say nothing, or trickle a request
//! a byte at a time, would otherwise hold the whole cap until their deadlines, again and again,
//! and keep every real client out. A real client speaks within milliseconds of connecting, so it
//! is the newest waiting connection and the last to be evicted; what goes is whoever has held a
//! slot longest without a request — an idle or trickling client, or a kept-alive connection that
//! a browser simply opens again.
//!
//! This module never touches a socket: it hands out [`Slot`]s and cancels the token of the one it
//! evicts; that connection's task closes it. Reaching the cap is logged at most once per
//! [`LOG_EVERY`] per listener, with the evictions and refusals since the last line.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio_util::sync::CancellationToken;

/// A slot's state word: [`WORKING`], [`EVICTED`], or the time it began waiting (milliseconds
/// since its listener's epoch).
const WORKING: u64 = u64::MAX;
const EVICTED: u64 = u64::MAX - 1;

/// At most one "connection cap reached" line per listener this often.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// What a listener's slots count.
#[derive(Clone, Default)]
pub struct SlotMetrics {
    /// Slots held.
    pub open: Gauge,
    /// Waiting connections closed to admit a new one.
    pub evicted: Counter,
    /// New connections closed because every slot was working.
    pub refused: Counter,
}

/// One listener's slots; cheap to clone.
#[derive(Clone)]
pub struct Slots {
    inner: Arc<Inner>,
}

struct Inner {
    listener: &'static str,
    cap: usize,
    epoch: Instant,
    metrics: SlotMetrics,
    table: Mutex<Table>,
}

struct Table {
    next_id: u64,
    held: HashMap<u64, Arc<Shared>>,
    /// Evictions and refusals since the last log line, and when that line was.
    unlogged: (u64, u64),
    logged_at: Option<Instant>,
}

struct Shared {
    id: u64,
    /// When the connection was admitted (accepted).
    admitted: Instant,
    word: AtomicU64,
    evict: CancellationToken,
    inner: Arc<Inner>,
}

/// A held slot; dropping it frees the slot. It derefs to a [`SlotRef`].
pub struct Slot {
    r: SlotRef,
}

/// A view of a slot that does not own it: to mark it waiting or working, and to learn that it
/// was evicted.
#[derive(Clone)]
pub struct SlotRef {
    shared: Arc<Shared>,
}

impl Inner {
    fn table(&self) -> MutexGuard<'_, Table> {
        // Nothing panics while holding the lock; a poisoned table is still consistent.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn millis(&self, now: Instant) -> u64 {
        let ms = now.saturating_duration_since(self.epoch).as_millis();
        u64::try_from(ms).unwrap_or(EVICTED - 1).min(EVICTED - 1)
    }

    fn log_cap_reached(&self, t: &mut Table, now: Instant) {
        if t.logged_at
            .is_some_and(|at| now.saturating_duration_since(at) < LOG_EVERY)
        {
            return;
        }
        let (evicted, refused) = std::mem::take(&mut t.unlogged);
        t.logged_at = Some(now);
        tracing::warn!(
            listener = self.listener,
            cap = self.cap,
            evicted,
            refused,
            "connection cap reached: the longest-waiting connections are closed for new ones \
             (evicted), new ones are closed when none is waiting (refused)"
        );
    }
}

impl Slots {
    /// `cap` slots for the listener named `listener` (in logs).
    pub fn new(listener: &'static str, cap: usize, metrics: SlotMetrics) -> Slots {
        Slots {
            inner: Arc::new(Inner {
                listener,
                cap,
                epoch: Instant::now(),
                metrics,
                table: Mutex::new(Table {
                    next_id: 0,
                    held: HashMap::new(),
                    unlogged: (0, 0),
                    logged_at: None,
                }),
            }),
        }
    }

    /// A slot for a connection accepted at `now`, waiting from then; at the cap, the longest-
    /// waiting connection is evicted for it (its token cancelled), or, when none is waiting, there
    /// is no slot and the caller closes the connection. `evict` is the token cancelled if this
    /// connection is evicted in turn.
    pub fn admit(&self, now: Instant, evict: CancellationToken) -> Option<Slot> {
        let inner = &self.inner;
        let mut t = inner.table();
        if t.held.len() >= inner.cap {
            if evict_longest_waiting(&mut t) {
                inner.metrics.evicted.inc();
                t.unlogged.0 += 1;
                inner.log_cap_reached(&mut t, now);
            } else {
                inner.metrics.refused.inc();
                t.unlogged.1 += 1;
                inner.log_cap_reached(&mut t, now);
                return None;
            }
        }
        let id = t.next_id;
        t.next_id += 1;
        let shared = Arc::new(Shared {
            id,
            admitted: now,
            word: AtomicU64::new(inner.millis(now)),
            evict,
            inner: inner.clone(),
        });
        t.held.insert(id, shared.clone());
        inner
            .metrics
            .open
            .set(i64::try_from(t.held.len()).unwrap_or(i64::MAX));
        Some(Slot {
            r: SlotRef { shared },
        })
    }
}

/// Evicts the connection that has waited longest (the lowest waiting time; the older slot on a
/// tie); false when every slot is working.
fn evict_longest_waiting(t: &mut Table) -> bool {
    loop {
        let Some((id, since)) = t
            .held
            .values()
            .filter_map(|s| {
                let w = s.word.load(Ordering::Acquire);
                (w < EVICTED).then_some((s.id, w))
            })
            .min_by_key(|&(id, w)| (w, id))
        else {
            return false;
        };
        let won = t.held.get(&id).is_some_and(|s| {
            s.word
                .compare_exchange(since, EVICTED, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        });
        if won {
            if let Some(s) = t.held.remove(&id) {
                s.evict.cancel();
            }
            return true;
        }
        // It started working or waits anew since it was read: look again.
    }
}

impl SlotRef {
    fn set(&self, word: u64) -> bool {
        self.shared
            .word
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                (w != EVICTED).then_some(word)
            })
            .is_ok()
    }

    /// The connection waits for its client from `now` (evictable). False if it was evicted.
    pub fn waiting(&self, now: Instant) -> bool {
        self.set(self.shared.inner.millis(now))
    }

    /// The connection is doing work (never evicted). False if it was evicted already.
    pub fn working(&self) -> bool {
        self.set(WORKING)
    }

    /// Resolves when the connection is evicted (or its token is cancelled otherwise).
    pub async fn evicted(&self) {
        self.shared.evict.cancelled().await;
    }

    /// When the connection was admitted (accepted).
    pub fn admitted(&self) -> Instant {
        self.shared.admitted
    }

    /// The token cancelled on eviction.
    pub fn token(&self) -> CancellationToken {
        self.shared.evict.clone()
    }
}

impl Slot {
    /// A view of this slot for other parts of the connection.
    pub fn handle(&self) -> SlotRef {
        self.r.clone()
    }
}

impl std::ops::Deref for Slot {
    type Target = SlotRef;

    fn deref(&self) -> &SlotRef {
        &self.r
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let inner = &self.r.shared.inner;
        let mut t = inner.table();
        t.held.remove(&self.r.shared.id);
        inner
            .metrics
            .open
            .set(i64::try_from(t.held.len()).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(cap: usize) -> (Slots, SlotMetrics, Instant) {
        let m = SlotMetrics::default();
        let s = Slots::new("test", cap, m.clone());
        let t0 = s.inner.epoch;
        (s, m, t0)
    }

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn at_the_cap_the_longest_waiting_connection_gives_way() {
        let (s, m, t0) = slots(3);
        let a = s.admit(at(t0, 0), CancellationToken::new()).unwrap();
        let b = s.admit(at(t0, 10), CancellationToken::new()).unwrap();
        let c = s.admit(at(t0, 20), CancellationToken::new()).unwrap();
        // `a` works (a request is answered); `b` waits longest; `c` waits anew after a response.
        assert!(a.working());
        assert!(c.waiting(at(t0, 30)));
        let d = s.admit(at(t0, 40), CancellationToken::new()).unwrap();
        assert!(
            b.token().is_cancelled(),
            "the longest-waiting slot is evicted"
        );
        assert!(!a.token().is_cancelled() && !c.token().is_cancelled());
        assert!(
            !b.waiting(at(t0, 50)) && !b.working(),
            "an evicted slot stays evicted"
        );
        assert_eq!((m.evicted.get(), m.refused.get(), m.open.get()), (1, 0, 3));
        // Next goes `c`, waiting since 30, before `d`, waiting since 40.
        let _e = s.admit(at(t0, 60), CancellationToken::new()).unwrap();
        assert!(c.token().is_cancelled() && !d.token().is_cancelled());
        drop(b);
        assert_eq!(
            m.open.get(),
            3,
            "dropping an evicted slot frees nothing twice"
        );
    }

    #[test]
    fn when_every_slot_works_a_new_connection_is_refused_until_one_is_freed() {
        let (s, m, t0) = slots(2);
        let a = s.admit(at(t0, 0), CancellationToken::new()).unwrap();
        let b = s.admit(at(t0, 1), CancellationToken::new()).unwrap();
        assert!(a.working() && b.working());
        assert!(s.admit(at(t0, 2), CancellationToken::new()).is_none());
        assert!(s.admit(at(t0, 3), CancellationToken::new()).is_none());
        assert_eq!((m.evicted.get(), m.refused.get()), (0, 2));
        drop(a);
        assert_eq!(m.open.get(), 1);
        let c = s.admit(at(t0, 4), CancellationToken::new());
        assert!(c.is_some());
        assert!(!b.token().is_cancelled());
    }

    #[test]
    fn the_cap_is_logged_at_most_once_per_interval_with_the_counts_since() {
        let (s, _, t0) = slots(1);
        let a = s.admit(at(t0, 0), CancellationToken::new()).unwrap();
        assert!(a.working());
        for ms in 0..100 {
            assert!(s.admit(at(t0, ms), CancellationToken::new()).is_none());
        }
        {
            let t = s.inner.table();
            assert_eq!(t.unlogged, (0, 99), "one line for the first refusal");
            assert_eq!(t.logged_at, Some(at(t0, 0)));
        }
        let later = LOG_EVERY.as_millis() as u64;
        assert!(s.admit(at(t0, later), CancellationToken::new()).is_none());
        let t = s.inner.table();
        assert_eq!(t.unlogged, (0, 0), "the next line carries the 100 since");
        assert_eq!(t.logged_at, Some(at(t0, later)));
    }
}
