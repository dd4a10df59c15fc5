//! The retry policy of outward deliveries: what an attempt's outcome makes of its outbox row
//! (delivered, failed, or pending until a backoff with jitter has passed). Pure but for
//! [`jitter`]'s random number; the connectors and the outbox workers both use it, so it depends
//! on neither.

use crate::config::RetryConfig;
use crate::registry::{OutboxRow, Settled};

/// The outcome of one delivery attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Attempt {
    Delivered,
    /// Worth trying again later (network error, 408, 429, 5xx).
    Retry(String),
    /// The receiver refused it for good (another 4xx): retrying would not help.
    Refused(String),
    /// The receiver does not know the patient (or knows several): failed at once, like
    /// [`Attempt::Refused`], until someone fixes the patient's identifier and retries it. The
    /// reason names the identifier (an MRN perhaps), so it goes to the delivery's last error
    /// and never to the logs.
    Unmatched(String),
}

impl Attempt {
    /// Classifies an HTTP status from `who`.
    pub fn from_status(status: u16, who: &str) -> Attempt {
        match status {
            200..=299 => Attempt::Delivered,
            408 | 425 | 429 | 500..=599 => Attempt::Retry(format!("{who} answered {status}")),
            _ => Attempt::Refused(format!("{who} refused it with {status}")),
        }
    }
}

/// What an attempt's outcome makes of its row: delivered, failed (refused, unmatched, or
/// retried past `give_up_after_s` from the start of its delivery window), or pending until the
/// backoff has passed (growing with the attempts made in this window). `delete`: a delivered
/// row that is not kept (a reading).
pub fn settle(
    row: &OutboxRow,
    outcome: Attempt,
    retry: &RetryConfig,
    now: i64,
    jitter: f64,
    delete: bool,
) -> Settled {
    let (status, next_ms, error) = match outcome {
        Attempt::Delivered => ("delivered", now, None),
        Attempt::Refused(e) | Attempt::Unmatched(e) => ("failed", now, Some(e)),
        Attempt::Retry(e)
            if now - row.window_ms
                >= i64::try_from(retry.give_up_after_s).unwrap_or(i64::MAX / 1000) * 1000 =>
        {
            ("failed", now, Some(format!("gave up: {e}")))
        }
        Attempt::Retry(e) => (
            "pending",
            now + backoff_ms(row.window_attempts + 1, retry, jitter),
            Some(e),
        ),
    };
    Settled {
        id: row.id,
        status,
        next_ms,
        error,
        delete,
    }
}

/// The wait before attempt `n + 1` (n ≥ 1 attempts made): `initial · 2^(n-1)`, capped, with
/// jitter taking it down by up to half so that many senders do not retry in step.
pub fn backoff_ms(attempts: u32, retry: &RetryConfig, jitter: f64) -> i64 {
    let base = retry.retry_initial_ms as f64 * 2f64.powi(attempts.saturating_sub(1).min(30) as i32);
    let capped = base.min(retry.retry_max_s as f64 * 1000.0);
    (capped * (1.0 - 0.5 * jitter.clamp(0.0, 1.0))) as i64
}

/// A random number in [0, 1] for [`backoff_ms`].
pub(super) fn jitter() -> f64 {
    let mut b = [0u8; 2];
    let _ = getrandom::fill(&mut b);
    f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_jitter_only_shortens() {
        let r = RetryConfig {
            retry_initial_ms: 1000,
            retry_max_s: 60,
            ..RetryConfig::default()
        };
        assert_eq!(backoff_ms(1, &r, 0.0), 1000);
        assert_eq!(backoff_ms(2, &r, 0.0), 2000);
        assert_eq!(backoff_ms(4, &r, 0.0), 8000);
        assert_eq!(backoff_ms(20, &r, 0.0), 60_000);
        assert_eq!(backoff_ms(2, &r, 1.0), 1000);
        assert_eq!(backoff_ms(u32::MAX, &r, 0.5), 45_000);
    }

    #[test]
    fn statuses_are_classified() {
        assert_eq!(Attempt::from_status(204, "x"), Attempt::Delivered);
        assert!(matches!(Attempt::from_status(503, "x"), Attempt::Retry(_)));
        assert!(matches!(Attempt::from_status(429, "x"), Attempt::Retry(_)));
        assert!(matches!(
            Attempt::from_status(400, "x"),
            Attempt::Refused(_)
        ));
    }

    fn row(window_ms: i64, window_attempts: u32) -> OutboxRow {
        OutboxRow {
            id: 7,
            event_id: "evt_1".into(),
            event_type: "alert.opened".into(),
            patient_id: "p1".into(),
            payload: "{}".into(),
            created_ms: 0,
            attempts: 40,
            window_ms,
            window_attempts,
        }
    }

    #[test]
    fn a_retried_delivery_starts_a_new_window_for_backoff_and_giving_up() {
        let r = RetryConfig {
            retry_initial_ms: 1000,
            retry_max_s: 60,
            give_up_after_s: 100,
            ..RetryConfig::default()
        };
        let retry = || Attempt::Retry("503".into());
        // Created at 0, put back by an admin at 1,000,000 ms: 40 attempts in all, none since.
        // The next wait is the first one again, and giving up counts from the retry.
        let s = settle(&row(1_000_000, 0), retry(), &r, 1_050_000, 0.0, false);
        assert_eq!((s.status, s.next_ms), ("pending", 1_051_000));
        let s = settle(&row(1_000_000, 3), retry(), &r, 1_050_000, 0.0, false);
        assert_eq!(s.next_ms, 1_050_000 + 8000);
        let s = settle(&row(1_000_000, 3), retry(), &r, 1_100_000, 0.0, false);
        assert_eq!(s.status, "failed");
        assert_eq!(s.error.as_deref(), Some("gave up: 503"));
        // Refused and unmatched fail at once; delivered readings are deleted.
        let s = settle(
            &row(0, 0),
            Attempt::Unmatched("who?".into()),
            &r,
            5,
            0.0,
            false,
        );
        assert_eq!((s.status, s.error.as_deref()), ("failed", Some("who?")));
        let s = settle(&row(0, 0), Attempt::Delivered, &r, 5, 0.0, true);
        assert_eq!((s.status, s.delete, s.error), ("delivered", true, None));
    }
}
