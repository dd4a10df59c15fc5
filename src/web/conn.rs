//! One HTTP connection's deadlines, as a pure state machine: the connection reports what happened
//! (bytes came or went, a request head was parsed, the response began or was sent) with the time,
//! and [`Timing::deadline`] says when the connection must be closed and why. The listener
//! (`serve.rs`) moves the bytes and sleeps until the deadline; nothing here does I/O or reads a
//! clock.
//!
//! - **Request head** (`http.header_timeout_s`): the whole head, request line and headers, must
//!   arrive within this long of the connection's start (after its TLS handshake), however the
//!   bytes trickle in: a byte every few seconds does not keep a connection open. On a kept-alive
//!   connection it runs from the first byte of the next head.
//! - **Idle** (`http.idle_timeout_s`): a kept-alive connection waits this long for the first byte
//!   of its next request.
//! - **Sending** (`http.idle_timeout_s` too): while a response is sent, the client must take some
//!   of it at least this often, so a client that never reads cannot hold the connection.
//! - While a handler runs there is no deadline here: `http.request_timeout_s` answers 408. An
//!   upgraded connection (a WebSocket) is the live feed's or the visit signalling's business.

use std::time::Duration;

use tokio::time::Instant;

/// A listener's deadlines (`[http]` `header_timeout_s`, `idle_timeout_s`,
/// `tls_handshake_timeout_s`).
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    pub header: Duration,
    pub idle: Duration,
    pub tls_handshake: Duration,
}

/// Which deadline closed a connection (the `kind` label of `vigil_http_timeouts_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expiry {
    TlsHandshake,
    Header,
    Idle,
    Send,
}

impl Expiry {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Expiry::TlsHandshake => "tls_handshake",
            Expiry::Header => "header",
            Expiry::Idle => "idle",
            Expiry::Send => "send",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The first request's head is awaited.
    FirstHead,
    /// Kept alive: the next request's head is awaited.
    NextHead,
    /// A handler runs.
    Handling,
    /// The response is being sent.
    Sending,
    /// Handed over to a WebSocket.
    Upgraded,
}

/// Where a connection is and since when.
#[derive(Debug)]
pub(crate) struct Timing {
    phase: Phase,
    /// When the phase began.
    since: Instant,
    /// The first byte of the awaited head (kept-alive connections).
    head_from: Option<Instant>,
    /// The last time bytes moved either way.
    last_progress: Instant,
}

impl Timing {
    /// A connection ready for its first request at `now`.
    pub(crate) fn new(now: Instant) -> Timing {
        Timing {
            phase: Phase::FirstHead,
            since: now,
            head_from: None,
            last_progress: now,
        }
    }

    /// Bytes arrived at `now`. True when that moved the deadline earlier (the first byte of a
    /// kept-alive connection's next head starts the head deadline).
    pub(crate) fn read(&mut self, now: Instant) -> bool {
        self.last_progress = now;
        if self.phase == Phase::NextHead && self.head_from.is_none() {
            self.head_from = Some(now);
            return true;
        }
        false
    }

    /// Bytes left at `now`.
    pub(crate) fn wrote(&mut self, now: Instant) {
        self.last_progress = now;
    }

    /// A request head was parsed; its handler runs.
    pub(crate) fn request(&mut self, now: Instant) {
        self.phase = Phase::Handling;
        self.since = now;
    }

    /// The handler answered at `now`; the response is being sent.
    pub(crate) fn responding(&mut self, now: Instant) {
        self.phase = Phase::Sending;
        self.since = now;
        self.last_progress = now;
    }

    /// The response was sent at `now`; the connection is kept alive for the next request.
    pub(crate) fn sent(&mut self, now: Instant) {
        if self.phase == Phase::Upgraded {
            return;
        }
        self.phase = Phase::NextHead;
        self.since = now;
        self.head_from = None;
    }

    /// The connection became a WebSocket.
    pub(crate) fn upgraded(&mut self) {
        self.phase = Phase::Upgraded;
    }

    /// When the connection must be closed, and why; `None` while no deadline applies.
    pub(crate) fn deadline(&self, d: &Deadlines) -> Option<(Instant, Expiry)> {
        match self.phase {
            Phase::FirstHead => Some((self.since + d.header, Expiry::Header)),
            Phase::NextHead => Some(match self.head_from {
                None => (self.since + d.idle, Expiry::Idle),
                Some(first) => (first + d.header, Expiry::Header),
            }),
            Phase::Sending => Some((self.last_progress + d.idle, Expiry::Send)),
            Phase::Handling | Phase::Upgraded => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Deadlines = Deadlines {
        header: Duration::from_secs(10),
        idle: Duration::from_secs(30),
        tls_handshake: Duration::from_secs(10),
    };

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn a_request_head_has_a_total_deadline_however_its_bytes_trickle() {
        let t0 = Instant::now();
        let mut t = Timing::new(t0);
        assert_eq!(t.deadline(&D), Some((t0 + s(10), Expiry::Header)));
        // A byte every 5 s moves nothing.
        for i in 1..=3 {
            assert!(!t.read(t0 + s(5 * i)));
            assert_eq!(t.deadline(&D), Some((t0 + s(10), Expiry::Header)));
        }
    }

    #[test]
    fn a_kept_alive_connection_idles_then_has_the_head_deadline_from_its_first_byte() {
        let t0 = Instant::now();
        let mut t = Timing::new(t0);
        t.read(t0);
        t.request(t0);
        assert_eq!(t.deadline(&D), None, "the handler's own timeout applies");
        t.responding(t0 + s(1));
        t.wrote(t0 + s(1));
        t.sent(t0 + s(1));
        assert_eq!(t.deadline(&D), Some((t0 + s(31), Expiry::Idle)));
        assert!(
            t.read(t0 + s(4)),
            "the first byte of the next head moves the deadline"
        );
        assert_eq!(t.deadline(&D), Some((t0 + s(14), Expiry::Header)));
        assert!(!t.read(t0 + s(8)));
        assert_eq!(t.deadline(&D), Some((t0 + s(14), Expiry::Header)));
    }

    #[test]
    fn a_response_nobody_reads_expires_and_one_being_read_does_not() {
        let t0 = Instant::now();
        let mut t = Timing::new(t0);
        t.request(t0);
        t.responding(t0 + s(2));
        assert_eq!(t.deadline(&D), Some((t0 + s(32), Expiry::Send)));
        t.wrote(t0 + s(20));
        assert_eq!(t.deadline(&D), Some((t0 + s(50), Expiry::Send)));
    }

    #[test]
    fn an_upgraded_connection_has_no_deadline_here() {
        let t0 = Instant::now();
        let mut t = Timing::new(t0);
        t.request(t0);
        t.upgraded();
        t.sent(t0 + s(1));
        assert_eq!(t.deadline(&D), None);
    }
}
