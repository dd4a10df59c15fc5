//! Keeping an open socket's access current. A WebSocket (the live feed, a visit's signalling)
//! is authenticated once, when it opens, and may then stay open for hours; its credential and
//! what its user may see must still be right minutes later.
//!
//! [`Rechecks`] says when to look again: soon after the registry announces a change that
//! concerns the socket ([`AccessChange`]: one of its user's sessions ended, a token of theirs was
//! revoked, their role or teams changed; for a visit's participant also the visit's patient
//! moved to another team),
//! coalescing a burst into one look; when the credential expires; and every [`SAFETY_EVERY`] in
//! any case (a change made by another process, such as `vigil user`, is not announced).
//! [`recheck`] then authenticates the credential again, as a request would: one lookup. A
//! change that concerns other users costs a socket nothing but reading the announcement, so
//! 500 open sockets do not make 500 lookups when one user signs out or an admin moves fifty
//! patients (the live feed's hub decides who sees a patient's events as it sends them).
//!
//! It must never let a socket continue on a credential it cannot confirm: a registry that
//! cannot be read closes the socket too (1011).

use std::time::Duration;

use tokio::sync::broadcast::{self, error::RecvError};
use tokio::time::{Instant, Interval, MissedTickBehavior};

use super::auth::Principal;
use super::state::AppState;
use crate::domain::now_ms;
use crate::registry::AccessChange;

/// Close code for a socket whose credential no longer holds: signed out, the session or API
/// token expired or revoked, the user's role changed (4000–4999: private use; as HTTP's 401).
pub(crate) const CLOSE_CREDENTIAL_ENDED: u16 = 4001;
/// Close code for a visit participant who may no longer see the visit's patient (as HTTP's 403).
pub(crate) const CLOSE_NOT_ALLOWED: u16 = 4003;
/// Close code for a socket whose credential could not be checked (the registry failed).
pub(crate) const CLOSE_UNCHECKED: u16 = 1011;

/// How long after an announced change a socket looks again: changes that come together (an
/// admin's script changing a user's teams, then their role) cost one look, not several.
pub(crate) const COALESCE: Duration = Duration::from_millis(200);
/// A socket looks again at least this often, announced change or not.
pub(crate) const SAFETY_EVERY: Duration = Duration::from_secs(15);

/// Which announcements concern a socket.
pub(crate) struct Concerns {
    /// The socket's user: changes of their access.
    pub(crate) user: String,
    /// A patient whose move to another team does (a visit's patient, for its participants).
    /// The live feed has none: its hub stamps each event with the patient's team as it is.
    pub(crate) patient: Option<String>,
}

impl Concerns {
    fn include(&self, change: &AccessChange) -> bool {
        match change {
            AccessChange::User(u) => *u == self.user,
            AccessChange::Patient { id, .. } => self.patient.as_ref() == Some(id),
        }
    }
}

/// When an open socket should re-check its access.
pub(crate) struct Rechecks {
    access: broadcast::Receiver<AccessChange>,
    concerns: Concerns,
    /// Whether the registry's announcements still come (they stop only at shutdown).
    announced: bool,
    /// A change that concerns the socket waits until then, gathering others.
    pending: Option<Instant>,
    expires: Option<Instant>,
    safety: Interval,
}

impl Rechecks {
    /// Starts watching for a socket opened with a credential that expires at `expires_ms`.
    /// The first re-check is due at once: a change made between the socket's authentication
    /// and this subscription would otherwise be missed.
    pub(crate) fn new(
        access: broadcast::Receiver<AccessChange>,
        concerns: Concerns,
        expires_ms: Option<i64>,
    ) -> Rechecks {
        let mut safety = tokio::time::interval_at(Instant::now() + SAFETY_EVERY, SAFETY_EVERY);
        safety.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut r = Rechecks {
            access,
            concerns,
            announced: true,
            pending: Some(Instant::now()),
            expires: None,
            safety,
        };
        r.expires_at(expires_ms);
        r
    }

    /// Sets the time the credential expires (after a re-check found it live).
    pub(crate) fn expires_at(&mut self, expires_ms: Option<i64>) {
        // A millisecond late, so the registry's `expires_ms > now` already says expired.
        self.expires = expires_ms.map(|e| {
            let left = u64::try_from(e.saturating_sub(now_ms())).unwrap_or(0);
            Instant::now() + Duration::from_millis(left.saturating_add(1))
        });
    }

    /// Resolves when a re-check is due. Cancel-safe: it is meant for a `select!` arm, and
    /// what it waits for is kept in `self` when another arm wins.
    pub(crate) async fn due(&mut self) {
        loop {
            let pending = self.pending;
            let expires = self.expires;
            tokio::select! {
                change = self.access.recv(), if self.announced => {
                    let concerned = match change {
                        Ok(c) => self.concerns.include(&c),
                        // Announcements were missed: any of them may have been ours.
                        Err(RecvError::Lagged(_)) => true,
                        Err(RecvError::Closed) => {
                            self.announced = false;
                            false
                        }
                    };
                    if concerned && pending.is_none() {
                        self.pending = Some(Instant::now() + COALESCE);
                    }
                }
                () = sleep_until(pending), if pending.is_some() => {
                    self.pending = None;
                    return;
                }
                () = sleep_until(expires), if expires.is_some() => {
                    // Once: if the credential is somehow still live, the safety tick looks again.
                    self.expires = None;
                    return;
                }
                _ = self.safety.tick() => return,
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Why an open socket must close: its close code and a reason for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ended {
    pub(crate) code: u16,
    pub(crate) reason: &'static str,
}

const fn ended(code: u16, reason: &'static str) -> Ended {
    Ended { code, reason }
}

/// Authenticates an open socket's credential again and returns its principal as it is now
/// (the user's current role and care teams), or why the socket must close. One registry lookup
/// for a session or an API token; none for the bootstrap token, which holds for as long as the
/// process runs with it.
pub(crate) async fn recheck(s: &AppState, p: &Principal) -> Result<Principal, Ended> {
    let now = now_ms();
    let expired = p.expires_ms.is_some_and(|e| e <= now);
    let unchecked = |e: crate::registry::RegistryError| {
        tracing::warn!(user = %p.name, error = %e, "an open socket's credential could not be re-checked; closing it");
        ended(
            CLOSE_UNCHECKED,
            "your access could not be checked; connect again",
        )
    };
    let user = if let Some(token) = &p.session_token {
        match s.registry.session(token, now).await.map_err(unchecked)? {
            Some(session) => session.user,
            None if expired => {
                return Err(ended(
                    CLOSE_CREDENTIAL_ENDED,
                    "the session has expired; sign in again",
                ));
            }
            // Signed out, or ended by a change of the user's role or password.
            None => {
                return Err(ended(
                    CLOSE_CREDENTIAL_ENDED,
                    "the session has ended; sign in again",
                ));
            }
        }
    } else if let Some(token) = &p.api_token {
        match s
            .registry
            .live_api_token(&token.id, now)
            .await
            .map_err(unchecked)?
        {
            Some((_, user)) => user,
            None if expired => {
                return Err(ended(CLOSE_CREDENTIAL_ENDED, "the API token has expired"));
            }
            None => return Err(ended(CLOSE_CREDENTIAL_ENDED, "the API token was revoked")),
        }
    } else {
        // The bootstrap token: read once at start, it cannot change while the process runs.
        return Ok(p.clone());
    };
    if user.role != p.role {
        // What the socket was told at its start (its hello, its role in a visit) no longer holds.
        // A change of role ends the user's sessions (the lookup may have found the session just
        // before they went): a session's socket says so, as it would a moment later.
        let reason = if p.session_token.is_some() {
            "the session has ended; sign in again"
        } else {
            "your role has changed; connect again"
        };
        return Err(ended(CLOSE_CREDENTIAL_ENDED, reason));
    }
    Ok(Principal {
        teams: (user.role != crate::registry::Role::Admin).then(|| user.teams.into()),
        ..p.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `due` resolves within `within` (paused time: instantly, in order).
    async fn due_within(r: &mut Rechecks, within: Duration) -> bool {
        tokio::time::timeout(within, r.due()).await.is_ok()
    }

    fn nina(patient: Option<&str>) -> Concerns {
        Concerns {
            user: "nina".into(),
            patient: patient.map(str::to_owned),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_changes_is_one_recheck_and_the_first_is_at_once() {
        let (tx, rx) = broadcast::channel(16);
        let mut r = Rechecks::new(rx, nina(None), None);
        assert!(
            due_within(&mut r, Duration::from_millis(1)).await,
            "at once"
        );
        assert!(
            !due_within(&mut r, Duration::from_secs(5)).await,
            "nothing changed"
        );
        for _ in 0..5 {
            tx.send(AccessChange::User("nina".into())).unwrap();
        }
        assert!(
            !due_within(&mut r, COALESCE / 2).await,
            "gathering the burst"
        );
        assert!(due_within(&mut r, COALESCE).await, "then one look");
        assert!(
            !due_within(&mut r, Duration::from_secs(5)).await,
            "the burst was covered by that look"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn changes_of_others_cost_nothing_and_missed_ones_count_as_ours() {
        let (tx, rx) = broadcast::channel(4);
        let mut live = Rechecks::new(rx, nina(None), None);
        let mut visit = Rechecks::new(tx.subscribe(), nina(Some("p1")), None);
        for r in [&mut live, &mut visit] {
            assert!(due_within(r, Duration::from_millis(1)).await);
        }
        let moved = |id: &str| AccessChange::Patient {
            id: id.into(),
            team: None,
        };
        tx.send(AccessChange::User("sam".into())).unwrap();
        tx.send(moved("p1")).unwrap();
        assert!(!due_within(&mut live, Duration::from_secs(5)).await);
        assert!(
            due_within(&mut visit, Duration::from_secs(1)).await,
            "a visit's participant cares where its patient is"
        );
        tx.send(moved("p2")).unwrap();
        assert!(
            !due_within(&mut visit, Duration::from_secs(5)).await,
            "not others"
        );
        for _ in 0..10 {
            tx.send(AccessChange::User("sam".into())).unwrap();
        }
        assert!(
            due_within(&mut live, Duration::from_secs(1)).await,
            "lagged behind: look again"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_expiry_and_the_safety_period_make_a_recheck_due() {
        let (_tx, rx) = broadcast::channel(4);
        let mut r = Rechecks::new(rx, nina(None), Some(now_ms() + 3_000));
        assert!(due_within(&mut r, Duration::from_millis(1)).await);
        assert!(!due_within(&mut r, Duration::from_millis(2_500)).await);
        assert!(
            due_within(&mut r, Duration::from_millis(1_000)).await,
            "at the expiry"
        );
        let before = Instant::now();
        assert!(
            due_within(&mut r, SAFETY_EVERY * 2).await,
            "the safety tick"
        );
        assert!(Instant::now() - before <= SAFETY_EVERY);
    }
}
