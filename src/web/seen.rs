//! Which patients each user has been shown on the views that show many at once — the panel
//! (`panel.read`), the alert list (`alerts.read`) and the live feed's opening (`live.open`) —
//! so that the audit trail can name every patient shown without a line per patient at every
//! poll.
//!
//! The dashboard reloads the panel every two minutes; a line per patient each time would be
//! 360 lines per patient per clinician in a 12-hour shift. The ledger coalesces: a user shown a
//! patient by one of these views gets a line naming that patient, then no other for the same
//! view and patient for [`SEEN_WINDOW_MS`]. So `GET /audit?patient_id=` lists every user who
//! was shown the patient, first at the time of a line and at most a window after its last
//! (docs/security.md, "Who was shown a patient").
//!
//! It is memory only, per instance: after a restart, or on another instance of a cluster, the
//! first view writes its lines again (more lines, never fewer). It must never decide whether a
//! request is answered: it only thins the lines written for requests already allowed.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::domain::PatientId;

/// How long one line stands for repeated views of the same patient by the same user and
/// view: 15 minutes.
pub(super) const SEEN_WINDOW_MS: i64 = 15 * 60 * 1000;

/// The last time each (user, view, patient) was written to the audit trail.
#[derive(Debug, Default)]
pub struct SeenLedger {
    inner: Mutex<Ledger>,
}

#[derive(Debug, Default)]
struct Ledger {
    last: HashMap<(String, &'static str, PatientId), i64>,
    pruned_ms: i64,
}

impl SeenLedger {
    /// An empty ledger.
    pub fn new() -> SeenLedger {
        SeenLedger::default()
    }

    /// Of `patients` shown to `actor` by `action` at `now_ms`, those that need a line now (no
    /// line within the window), each once, in the order given. Nothing is marked: call
    /// [`SeenLedger::written`] once their lines are committed, so a failed write is tried again.
    pub fn due<'a>(
        &self,
        actor: &str,
        action: &'static str,
        patients: impl IntoIterator<Item = &'a PatientId>,
        now_ms: i64,
    ) -> Vec<PatientId> {
        let l = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<PatientId> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for p in patients {
            if !seen.insert(p) {
                continue;
            }
            let key = (actor.to_owned(), action, p.clone());
            let fresh = l
                .last
                .get(&key)
                .is_some_and(|&t| now_ms.saturating_sub(t) < SEEN_WINDOW_MS && t <= now_ms);
            if !fresh {
                out.push(p.clone());
            }
        }
        out
    }

    /// Records that lines for `patients` shown to `actor` by `action` were written at `now_ms`.
    pub fn written(&self, actor: &str, action: &'static str, patients: &[PatientId], now_ms: i64) {
        let mut l = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        for p in patients {
            l.last.insert((actor.to_owned(), action, p.clone()), now_ms);
        }
        // Forget what no longer holds anything back, at most once a window.
        if now_ms.saturating_sub(l.pruned_ms) >= SEEN_WINDOW_MS {
            l.last
                .retain(|_, t| now_ms.saturating_sub(*t) < SEEN_WINDOW_MS);
            l.pruned_ms = now_ms;
        }
    }

    /// Entries held (for tests and metrics).
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last
            .len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[&str]) -> Vec<PatientId> {
        v.iter().map(|s| PatientId::parse(s).unwrap()).collect()
    }

    #[test]
    fn a_patient_is_due_again_only_after_the_window_and_per_user_and_view() {
        let l = SeenLedger::new();
        let ps = ids(&["p1", "p2", "p1"]);
        let due = l.due("nina", "panel.read", &ps, 1_000);
        assert_eq!(due, ids(&["p1", "p2"]), "each once, in order");
        // Not marked until written: a failed write is tried again.
        assert_eq!(l.due("nina", "panel.read", &ps, 2_000).len(), 2);
        l.written("nina", "panel.read", &due, 1_000);
        assert!(
            l.due("nina", "panel.read", &ps, 1_000 + SEEN_WINDOW_MS - 1)
                .is_empty()
        );
        assert_eq!(
            l.due("omar", "panel.read", &ps, 2_000).len(),
            2,
            "another user"
        );
        assert_eq!(
            l.due("nina", "live.open", &ps, 2_000).len(),
            2,
            "another view"
        );
        assert_eq!(
            l.due("nina", "panel.read", &ps, 1_000 + SEEN_WINDOW_MS),
            ids(&["p1", "p2"])
        );
        // A clock that went back does not hide a view.
        assert_eq!(l.due("nina", "panel.read", &ps, 500).len(), 2);
    }

    #[test]
    fn old_entries_are_forgotten() {
        let l = SeenLedger::new();
        l.written("nina", "panel.read", &ids(&["p1"]), 0);
        l.written("nina", "panel.read", &ids(&["p2"]), SEEN_WINDOW_MS + 1);
        assert_eq!(l.len(), 1);
    }
}
