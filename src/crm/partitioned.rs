//! The alert engine when several instances share PostgreSQL: each patient's rules are
//! evaluated by one instance at a time, the one holding the patient's alert partition.
//!
//! Patients hash into a fixed number of partitions ([`crate::domain::partition`]); which
//! instance holds which is decided each round ([`ROUND_EVERY`]) by [`crate::cluster::balance`]
//! and held through a lease per partition (`alerts:<k>`, [`PARTITION_TTL_MS`]). The engine here
//! watches the patients of the partitions held, and:
//! - **reads what committed, in commit order, with no gap**: as soon as a commit's
//!   notification wakes it (`pg::listen`), and at least every [`POLL_EVERY`], it takes the
//!   commit horizon and reads, for its partitions, the readings stored by any instance
//!   ([`Store::committed_in`]) and the people's changes the engine must hear of — care plans
//!   set, alerts acknowledged or resolved, through whichever instance —
//!   ([`crate::registry::Registry::engine_notices`]) up to it, merged by transaction;
//! - **writes under the partition's fence**: every alert write checks, in its own transaction,
//!   that this instance still holds the partition at the epoch it took it with
//!   ([`crate::registry::lease::Fence`]). A former holder that was paused, cut off from the
//!   database, or stuck writes nothing once another has taken the partition; it drops the
//!   partition instead ([`Applied::Fenced`]);
//! - **takes a partition over from the stored state**: the commit horizon first, then the
//!   engine rebuilt for the partition's patients from the record and the readings
//!   ([`super::task::rebuild`]), then reading on from that horizon — so nothing that committed
//!   while the partition moved is missed (a reading both rebuilt from and read again is judged
//!   again, which changes nothing: the same reading meets the same rule the same way, and one
//!   rule's alert is open once), an alert the former holder opened
//!   is restored, not reopened, and one whose condition holds but that nobody opened is opened.
//!   Timers (missing data, escalation, auto-resolve) run for held partitions only, from the
//!   restored state.
//!
//! With SQLite there is one instance and [`super::task::run`] evaluates everyone.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::task::{load_plan, rebuild};
use super::{Applied, Command, Crm};
use crate::alerts::engine::{Effect, Engine, Input, Settings};
use crate::alerts::rules::CarePlan;
use crate::cluster::HeldLease;
use crate::cluster::balance::{
    self, EVALUATOR_PREFIX, EVALUATOR_TTL_MS, PARTITION_PREFIX, PARTITION_TTL_MS, Seen,
};
use crate::domain::partition::alert_partition;
use crate::domain::{Observation, now_ms};
use crate::pg::listen::{Heard, READINGS_CHANNEL, recv_some};
use crate::registry::record::{CommittedPlan, EngineNotice, Noticed};
use crate::store::{FedReading, Store};

/// How often the partitions held are reconsidered and their leases renewed.
pub const ROUND_EVERY: Duration = Duration::from_secs(1);

/// How often what committed is read.
pub const POLL_EVERY: Duration = Duration::from_millis(100);

/// How long engine notices are kept (they are read within moments; the rest is for looking).
const NOTICES_KEPT_MS: i64 = 86_400_000;

/// How often the holder of partition 0 forgets old engine notices.
const PRUNE_EVERY_MS: i64 = 3_600_000;

/// A partition this instance evaluates.
struct Held {
    lease: HeldLease,
    /// Where the next read of what committed starts (a transaction id).
    from: i64,
}

/// One thing read for the engine, in the order of the transactions that wrote them.
enum Fed {
    Reading(FedReading),
    Notice(Noticed),
}

impl Fed {
    fn tx(&self) -> i64 {
        match self {
            Fed::Reading(r) => r.tx,
            Fed::Notice(n) => n.tx,
        }
    }
}

struct Partitions {
    crm: Crm,
    store: Store,
    settings: Settings,
    default_plan: Arc<CarePlan>,
    me: String,
    engine: Engine,
    held: BTreeMap<u16, Held>,
    evaluator: HeldLease,
    pruned_ms: i64,
}

/// Evaluates the alert partitions this instance holds until `stop`, then gives them up.
///
/// Commands from this instance's API are not needed: a person's change reaches the holder of
/// the patient's partition through the database, wherever it was made.
pub async fn run(
    crm: Crm,
    store: Store,
    mut commands: mpsc::Receiver<Command>,
    mut heard: Option<broadcast::Receiver<Heard>>,
    settings: Settings,
    tick: Duration,
    stop: CancellationToken,
) {
    let me = crm.registry.instance_id().to_owned();
    let evaluator = HeldLease::new(
        balance::evaluator_lease(&me),
        "evaluating alerts",
        EVALUATOR_TTL_MS,
        &crm.metrics,
    )
    // Renewed every round: the others count this instance while its renewals are fresh.
    .renewed_below(EVALUATOR_TTL_MS - 500);
    let default_plan = Arc::new(CarePlan::default_plan());
    let mut p = Partitions {
        engine: Engine::new(settings, default_plan.clone()),
        crm,
        store,
        settings,
        default_plan,
        me,
        held: BTreeMap::new(),
        evaluator,
        pruned_ms: 0,
    };
    let mut rounds = tokio::time::interval(ROUND_EVERY);
    let mut polls = tokio::time::interval(POLL_EVERY);
    let mut ticks = tokio::time::interval(tick);
    for i in [&mut rounds, &mut polls, &mut ticks] {
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    }
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            _ = rounds.tick() => p.round(&stop).await,
            _ = polls.tick() => p.poll(&stop).await,
            h = recv_some(&mut heard) => match h {
                Ok(Heard::Notification { channel, .. }) if channel != READINGS_CHANNEL => {}
                Err(RecvError::Closed) => heard = None,
                // Readings committed somewhere (or maybe missed): read now, not at the next
                // poll; every wake waiting is answered by this one read.
                _ => {
                    if let Some(h) = heard.as_mut() {
                        while let Ok(_) | Err(TryRecvError::Lagged(_)) = h.try_recv() {}
                    }
                    p.poll(&stop).await;
                }
            },
            _ = ticks.tick() => {
                let effects = p.engine.handle(Input::Tick, now_ms());
                p.write(effects, &stop).await;
            }
            Some(_) = commands.recv() => {}
        }
    }
    p.give_up_all().await;
}

impl Partitions {
    /// One round: renew this instance's evaluator lease, see who evaluates and who holds
    /// what, and take, keep or give up partitions accordingly.
    async fn round(&mut self, stop: &CancellationToken) {
        let registry = self.crm.registry.clone();
        self.evaluator.ensure(&registry).await;
        let now = now_ms();
        let seen = match (
            registry.live_leases(EVALUATOR_PREFIX).await,
            registry.live_leases(PARTITION_PREFIX).await,
        ) {
            (Ok(evaluators), Ok(partitions)) => Seen {
                me: &self.me,
                fresh: evaluators
                    .into_iter()
                    .filter(|l| balance::is_fresh(l.expires_ms, now))
                    .map(|l| l.holder)
                    .collect(),
                holders: partitions
                    .into_iter()
                    .filter_map(|l| Some((balance::partition_of_lease(&l.name)?, l.holder)))
                    .collect(),
                mine: self.held.keys().copied().collect(),
            },
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "leases not readable; keeping the partitions held");
                self.renew_all().await;
                return;
            }
        };
        let moves = balance::decide(&seen);
        for k in moves.give_up {
            self.drop_partition(k, true).await;
        }
        for k in moves.keep {
            self.renew(k).await;
        }
        let mut taken = Vec::new();
        for k in moves.take {
            let mut lease = HeldLease::new(
                balance::partition_lease(k),
                "evaluating an alert partition",
                PARTITION_TTL_MS,
                &self.crm.metrics,
            );
            if lease.ensure(&registry).await {
                taken.push((k, lease));
            }
        }
        if !taken.is_empty() {
            self.take_over(taken, stop).await;
        }
        self.crm
            .metrics
            .alert_partitions_held
            .set(i64::try_from(self.held.len()).unwrap_or(0));
        self.prune_notices().await;
    }

    async fn renew(&mut self, k: u16) {
        let registry = self.crm.registry.clone();
        let renewed = match self.held.get_mut(&k) {
            Some(h) => h.lease.ensure(&registry).await,
            None => return,
        };
        if !renewed {
            self.drop_partition(k, false).await;
        }
    }

    async fn renew_all(&mut self) {
        let held: Vec<u16> = self.held.keys().copied().collect();
        for k in held {
            self.renew(k).await;
        }
    }

    /// Stops evaluating partition `k`, giving its lease up when `release` (another fresh
    /// instance owns it now) or forgetting it (it was lost).
    async fn drop_partition(&mut self, k: u16, release: bool) {
        let Some(mut h) = self.held.remove(&k) else {
            return;
        };
        self.engine.retain_patients(|p| alert_partition(p) != k);
        if release {
            h.lease.release(&self.crm.registry).await;
            tracing::info!(partition = k, "alert partition handed over");
        } else {
            h.lease.forget();
            tracing::warn!(
                partition = k,
                "alert partition lost; another instance evaluates it"
            );
        }
    }

    /// Starts evaluating partitions just taken: the horizon, then the engine rebuilt for their
    /// patients, then their alerts found on the way written.
    async fn take_over(&mut self, taken: Vec<(u16, HeldLease)>, stop: &CancellationToken) {
        let started = std::time::Instant::now();
        let registry = self.crm.registry.clone();
        let parts: HashSet<u16> = taken.iter().map(|(k, _)| *k).collect();
        let built = match self.store.commit_horizon().await {
            Ok(Some(from)) => rebuild(
                &self.crm,
                &self.store,
                self.settings,
                &self.default_plan,
                now_ms(),
                &|p| parts.contains(&alert_partition(p)),
            )
            .await
            .map(|b| (from, b))
            .map_err(|e| e.to_string()),
            Ok(None) => Err("the store keeps no commit order (SQLite)".into()),
            Err(e) => Err(e.to_string()),
        };
        let (from, (engine, effects)) = match built {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, partitions = parts.len(), "alert partitions not taken over; giving them up");
                for (_, mut lease) in taken {
                    lease.release(&registry).await;
                }
                return;
            }
        };
        let patients = engine.patient_count();
        self.engine.absorb(engine);
        for (k, lease) in taken {
            self.held.insert(k, Held { lease, from });
        }
        tracing::info!(
            partitions = ?parts.iter().collect::<BTreeSet<_>>(),
            patients,
            found = effects.len(),
            ms = started.elapsed().as_millis() as u64,
            "alert partitions taken over"
        );
        self.write(effects, stop).await;
    }

    /// Reads what committed for the partitions held, up to the horizon, and judges it.
    async fn poll(&mut self, stop: &CancellationToken) {
        if self.held.is_empty() {
            return;
        }
        let until = match self.store.commit_horizon().await {
            Ok(Some(h)) => h,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "commit horizon not read; alerts wait");
                return;
            }
        };
        // Partitions read from the same place are read together (after the first read of
        // a partition taken over, all are).
        let mut groups: BTreeMap<i64, Vec<u16>> = BTreeMap::new();
        for (k, h) in &self.held {
            if h.from < until {
                groups.entry(h.from).or_default().push(*k);
            }
        }
        for (from, parts) in groups {
            let readings = self
                .store
                .committed_in(parts.clone(), from, until)
                .await
                .map(Option::unwrap_or_default);
            let notices = self
                .crm
                .registry
                .engine_notices(parts.clone(), from, until)
                .await;
            let (readings, notices) = match (readings, notices) {
                (Ok(r), Ok(n)) => (r.readings, n),
                (Err(e), _) => {
                    tracing::warn!(error = %e, "committed readings not read; alerts wait");
                    return;
                }
                (_, Err(e)) => {
                    tracing::warn!(error = %e, "engine notices not read; alerts wait");
                    return;
                }
            };
            let mut fed: Vec<Fed> = readings
                .into_iter()
                .map(Fed::Reading)
                .chain(notices.into_iter().map(Fed::Notice))
                .collect();
            // Stable: each source is in order already.
            fed.sort_by_key(Fed::tx);
            let Some(newest) = self.judge(fed, stop).await else {
                return;
            };
            for k in parts {
                if let Some(h) = self.held.get_mut(&k) {
                    h.from = until;
                }
            }
            if let Some(received_ms) = newest {
                self.crm
                    .metrics
                    .alert_eval_lag_seconds
                    .observe((now_ms() - received_ms).max(0) as f64 / 1000.0);
            }
        }
    }

    /// Feeds `fed` to the engine and writes what it decides. `None` when stopped first;
    /// otherwise, if effects were written for readings, when the newest of them was received.
    async fn judge(&mut self, fed: Vec<Fed>, stop: &CancellationToken) -> Option<Option<i64>> {
        let now = now_ms();
        let mut effects = Vec::new();
        let mut newest = None;
        for f in fed {
            match f {
                Fed::Reading(r) => {
                    let o: &Observation = &r.observation;
                    if !self.engine.has_patient(&o.patient_id) {
                        // A patient new since the partition was taken: watched with their plan.
                        let plan = load_plan(&self.crm, &o.patient_id, stop).await?;
                        self.engine.add_patient(o.patient_id.clone(), plan, now);
                    }
                    let fx = self.engine.handle(Input::Observation(o), now);
                    if !fx.is_empty() {
                        newest = newest.max(Some(r.received_ms));
                    }
                    effects.extend(fx);
                }
                Fed::Notice(n) => {
                    let patient = &n.patient;
                    let fx = match &n.notice {
                        EngineNotice::PlanChanged(committed) => {
                            // The plan as the change committed it: readings committed after it
                            // but before a later change are judged by it, whatever is in force
                            // by now.
                            let plan = match committed {
                                CommittedPlan::Is(plan) => plan.clone().map(Arc::new),
                                CommittedPlan::Unsaid => {
                                    load_plan(&self.crm, patient, stop).await?
                                }
                            };
                            self.engine
                                .handle(Input::PlanChanged { patient, plan }, now)
                        }
                        EngineNotice::Acknowledged { rule_id } => self
                            .engine
                            .handle(Input::Acknowledged { patient, rule_id }, now),
                        EngineNotice::Resolved { rule_id } => self
                            .engine
                            .handle(Input::Resolved { patient, rule_id }, now),
                    };
                    effects.extend(fx);
                }
            }
        }
        self.engine.complete_messages(&mut effects);
        if self.write(effects, stop).await {
            Some(newest)
        } else {
            None
        }
    }

    /// Writes effects, each partition's under its fence; a partition whose lease moved on is
    /// dropped. False when stopped first.
    async fn write(&mut self, effects: Vec<Effect>, stop: &CancellationToken) -> bool {
        if effects.is_empty() {
            return true;
        }
        let mut by_part: BTreeMap<u16, Vec<Effect>> = BTreeMap::new();
        for e in effects {
            by_part
                .entry(alert_partition(e.patient()))
                .or_default()
                .push(e);
        }
        for (k, fx) in by_part {
            let Some(lease) = self.held.get(&k).and_then(|h| h.lease.held()).cloned() else {
                // Not held (dropped while these were decided): its holder decides them.
                continue;
            };
            match self.crm.apply(fx, Some(&lease), stop).await {
                Applied::Written => {}
                Applied::Fenced => self.drop_partition(k, false).await,
                Applied::Stopped => return false,
            }
        }
        true
    }

    /// Every hour, the holder of partition 0 forgets engine notices older than a day.
    async fn prune_notices(&mut self) {
        let now = now_ms();
        if !self.held.contains_key(&0) || now - self.pruned_ms < PRUNE_EVERY_MS {
            return;
        }
        self.pruned_ms = now;
        match self
            .crm
            .registry
            .prune_engine_notices(now - NOTICES_KEPT_MS)
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::debug!(notices = n, "old engine notices forgotten"),
            Err(e) => tracing::warn!(error = %e, "old engine notices not forgotten"),
        }
    }

    /// At a stop: every partition and the evaluator lease given up, so the others take over at
    /// once.
    async fn give_up_all(&mut self) {
        let held: Vec<u16> = self.held.keys().copied().collect();
        for k in held {
            self.drop_partition(k, true).await;
        }
        self.evaluator.release(&self.crm.registry).await;
        self.crm.metrics.alert_partitions_held.set(0);
    }
}
