//! The failed-authentication throttles shared by the instances on one database: sign-in and
//! bearer tokens (per user name and per address), device connects (per address and device id,
//! and per address). Each instance decides at once, from its own memory, as before; what is
//! shared is the count:
//!
//! - every failure and success a shared throttle sees is queued here and written
//!   ([`crate::registry::throttles`]), the key's count as the database then holds it (every
//!   instance's failures) taken back in at once;
//! - every [`PULL_EVERY`] the counts changed since the last look are read and taken in, so a
//!   key locked through one instance is locked on all within about a second, and a success
//!   elsewhere clears the count here too;
//! - at start the counts of the last [`LOOK_BACK`] are read, so a restart keeps its locks.
//!
//! So guesses spread over the instances behind a load balancer count as guesses at one, but
//! for what several instances let through in the same second before their counts meet.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::HeldLease;
use crate::domain::now_ms;
use crate::registry::Registry;
use crate::registry::throttles::{FAILURES_PAGE, FailureCount, FailureReport};
use crate::telemetry::Metrics;
use crate::throttle::FailureThrottle;

/// Reports waiting to be written at most; beyond it they are dropped (still counted here).
const QUEUE: usize = 10_000;
/// Reports written in one transaction at most.
const BATCH: usize = 500;
/// How often the counts changed elsewhere are read.
pub const PULL_EVERY: Duration = Duration::from_secs(1);
/// Each look goes back this far before the previous one began: a count written meanwhile by
/// a transaction still open then, or by an instance whose clock is behind, is still seen.
const OVERLAP_MS: i64 = 5_000;
/// How far back the first look reads: the longest a count is remembered.
pub const LOOK_BACK: Duration = Duration::from_secs(3_600);
/// Counts unchanged this long are deleted (by the holder of the `throttle-prune` lease, hourly).
const KEEP_MS: i64 = 2 * 3_600_000;

/// The throttles to share, and the queue their reports come through.
pub struct SharedThrottles {
    reports: mpsc::Sender<FailureReport>,
    queued: mpsc::Receiver<FailureReport>,
    scopes: Vec<(&'static str, Arc<FailureThrottle<String>>)>,
}

impl Default for SharedThrottles {
    fn default() -> Self {
        let (reports, queued) = mpsc::channel(QUEUE);
        SharedThrottles {
            reports,
            queued,
            scopes: Vec::new(),
        }
    }
}

impl SharedThrottles {
    /// Shares `throttle` under `scope` (a name no other shared throttle has).
    pub fn add(&mut self, scope: &'static str, throttle: Arc<FailureThrottle<String>>) {
        throttle.share(scope, self.reports.clone());
        self.scopes.push((scope, throttle));
    }

    /// Takes a count read from the database into its throttle.
    fn merge(&self, count: FailureCount, now: Instant, now_ms: i64) {
        let Some((scope, key)) = count.key.split_once('/') else {
            return;
        };
        let Some((_, throttle)) = self.scopes.iter().find(|(s, _)| *s == scope) else {
            return;
        };
        let age = u64::try_from(now_ms.saturating_sub(count.last_ms)).unwrap_or(0);
        let Some(last) = now.checked_sub(Duration::from_millis(age)) else {
            return;
        };
        throttle.merge(key.to_owned(), count.count, last);
    }

    /// Writes reports and reads the others' counts until `stop`; writes what is queued then.
    pub async fn run(mut self, registry: Registry, metrics: Metrics, stop: CancellationToken) {
        let mut since = now_ms() - i64::try_from(LOOK_BACK.as_millis()).unwrap_or(0);
        let mut pull = tokio::time::interval(PULL_EVERY);
        pull.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut prune = HeldLease::new(
            "throttle-prune",
            "pruning failed-authentication counts",
            3 * 3_600_000,
            &metrics,
        );
        let mut pruned_at: Option<Instant> = None;
        let (mut writes_failing, mut reads_failing) = (false, false);
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                n = self.queued.recv_many(&mut batch, BATCH) => {
                    if n == 0 {
                        break;
                    }
                    let ok = self.write(&registry, std::mem::take(&mut batch)).await;
                    writes_failing = noted(writes_failing, ok.err(), "failed authentications not shared");
                }
                _ = pull.tick() => {
                    let began = now_ms();
                    let ok = self.pull(&registry, since).await;
                    if ok.is_ok() {
                        since = began - OVERLAP_MS;
                    }
                    reads_failing = noted(reads_failing, ok.err(), "others' failed authentications not read");
                    if pruned_at.is_none_or(|t| t.elapsed() >= Duration::from_secs(3_600)) {
                        pruned_at = Some(Instant::now());
                        if prune.ensure(&registry).await {
                            match registry.prune_failures(now_ms() - KEEP_MS).await {
                                Ok(n) if n > 0 => tracing::debug!(rows = n, "old failure counts deleted"),
                                Ok(_) => {}
                                Err(e) => tracing::warn!(error = %e, "failure counts not pruned"),
                            }
                        }
                    }
                }
            }
        }
        while let Ok(r) = self.queued.try_recv() {
            batch.push(r);
        }
        if let Err(e) = self.write(&registry, batch).await {
            tracing::warn!(error = %e, "failed authentications not shared at the stop");
        }
        prune.release(&registry).await;
    }

    async fn write(
        &self,
        registry: &Registry,
        reports: Vec<FailureReport>,
    ) -> Result<(), crate::registry::RegistryError> {
        let counts = registry.report_failures(reports).await?;
        let (now, now_ms) = (Instant::now(), now_ms());
        for c in counts {
            self.merge(c, now, now_ms);
        }
        Ok(())
    }

    async fn pull(
        &self,
        registry: &Registry,
        since: i64,
    ) -> Result<(), crate::registry::RegistryError> {
        let (mut at, mut key) = (since, String::new());
        loop {
            let page = registry.failures_after(at, &key).await?;
            let (now, now_ms) = (Instant::now(), now_ms());
            let full = page.len() == FAILURES_PAGE;
            if let Some(last) = page.last() {
                (at, key) = (last.last_ms, last.key.clone());
            }
            for c in page {
                self.merge(c, now, now_ms);
            }
            if !full {
                return Ok(());
            }
        }
    }
}

/// Logs a database error once when it begins and once when it ends; whether failing now.
fn noted(failing: bool, error: Option<crate::registry::RegistryError>, what: &str) -> bool {
    match (failing, error) {
        (false, Some(e)) => {
            tracing::warn!(error = %e, "{what}");
            true
        }
        (true, None) => {
            tracing::info!("{what}: working again");
            false
        }
        (failing, _) => failing,
    }
}
