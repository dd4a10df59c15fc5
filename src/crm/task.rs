//! The alert engine's shell: feeds it committed observations (from the store's feed, off the
//! commit path), ticks and clinicians' actions, and writes its effects to the record.
//!
//! At start-up — and whenever it falls so far behind that the feed dropped batches — it
//! rebuilds the engine from the stores: care plans and unresolved alerts from the record, the
//! recent readings each rule needs from the store (for trend rules, the days before the latest
//! reading's day as 5-minute buckets), then opens any alert whose condition holds but which the
//! record lacks (a crash between storing a reading and recording its alert).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use super::{Applied, Command, Crm};
use crate::alerts::engine::{Effect, Engine, Input, Resolution, Settings};
use crate::alerts::rules::CarePlan;
use crate::alerts::trend::days::{BUCKET_MS, Bucket, DAY_MS, day_of};
use crate::domain::{DeviceId, Observation, PatientId, now_ms};
use crate::registry::RegistryError;
use crate::store::{CommittedBatch, ObservationQuery, Store, StoreError, StoredObservation};

#[derive(Debug, thiserror::Error)]
pub(super) enum RebuildError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Most rows replayed per metric and patient when rebuilding (the newest of the lookback).
/// Trend rules ask for at most a day of readings (their earlier days come as 5-minute
/// buckets, at most 288 a day), so a 1 Hz heart-rate stream (86,400 a day) fits.
const REPLAY_LIMIT: usize = 200_000;

/// An engine for the patients `watch` says yes to (all, with one instance; those of the alert
/// partitions taken over, with several), rebuilt from the stores as of `now`, and the alerts
/// it found that the record lacks.
pub(super) async fn rebuild(
    crm: &Crm,
    store: &Store,
    settings: Settings,
    default_plan: &Arc<CarePlan>,
    now: i64,
    watch: &(dyn Fn(&PatientId) -> bool + Sync),
) -> Result<(Engine, Vec<Effect>), RebuildError> {
    let started = std::time::Instant::now();
    let mut engine = Engine::new(settings, default_plan.clone());
    let mut plans = crm.registry.all_plans_in_force().await?;
    plans.retain(|(p, _)| watch(p));
    let patients = plans.len();
    // A clinician's resolution of an alert whose condition still held silenced its rule; it is
    // replayed among the readings, so the rebuilt engine does not reopen it.
    let mut resolutions: std::collections::HashMap<PatientId, Vec<Resolution>> =
        std::collections::HashMap::new();
    for r in crm.registry.clinician_resolutions().await? {
        if watch(&r.patient) {
            resolutions.entry(r.patient.clone()).or_default().push(r);
        }
    }
    let mut replayed = 0usize;
    let mut buckets = 0usize;
    for (patient, plan) in plans {
        let plan = plan.map(Arc::new);
        let effective = plan.clone().unwrap_or_else(|| default_plan.clone());
        engine.add_patient(patient.clone(), plan, now);
        // Trend rules' past days, before any reading: the 5-minute buckets of the days before
        // the day of each metric's latest reading (that day is replayed reading by reading with
        // the rest, below; the rules skip what the buckets already counted).
        for (metric, days) in Engine::trend_days(&effective) {
            let Some(latest) = store.latest(patient.clone(), metric).await? else {
                continue;
            };
            let before = day_of(latest.time_ms) * DAY_MS;
            let from = before - i64::from(days) * DAY_MS;
            let rows: Vec<Bucket> = store
                .buckets(patient.clone(), metric, from, before - 1, BUCKET_MS)
                .await?
                .into_iter()
                .map(|b| Bucket {
                    start_ms: b.time_ms,
                    mean: b.mean,
                    count: u64::try_from(b.count).unwrap_or(0),
                })
                .collect();
            buckets += rows.len();
            engine.replay_buckets(&patient, metric, before, &rows);
        }
        // Each reading with when Vigil received it.
        let mut rows: Vec<(i64, Observation)> = Vec::new();
        for (metric, span) in Engine::lookback_ms(&effective) {
            let to_obs = |o: &StoredObservation| {
                DeviceId::parse(&o.device_id).ok().map(|device_id| {
                    (
                        o.received_ms,
                        Observation {
                            patient_id: patient.clone(),
                            device_id,
                            metric,
                            value: o.value,
                            time_ms: o.time_ms,
                        },
                    )
                })
            };
            let Some(latest) = store.latest(patient.clone(), metric).await? else {
                continue;
            };
            let from = now.min(latest.time_ms) - span;
            if span > 0 && latest.time_ms > from {
                let window = store
                    .observations(ObservationQuery {
                        patient_id: patient.clone(),
                        metric: Some(metric),
                        from_ms: from,
                        to_ms: i64::MAX / 2,
                        limit: REPLAY_LIMIT,
                        // Beyond the limit the oldest are left out, never the newest: the
                        // rules judge the latest readings.
                        newest_first: true,
                    })
                    .await?;
                rows.extend(window.iter().filter_map(to_obs));
            } else {
                rows.extend(to_obs(&latest));
            }
        }
        replayed += rows.len();
        let resolved = resolutions.remove(&patient).unwrap_or_default();
        replay_in_arrival_order(&mut engine, rows, resolved, now);
    }
    for alert in crm.registry.unresolved_alerts().await? {
        // (`restore` skips a patient the engine does not watch.)
        engine.restore(alert);
    }
    let effects = engine.settle(now);
    tracing::info!(
        patients,
        replayed,
        buckets,
        found = effects.len(),
        ms = started.elapsed().as_millis() as u64,
        "alert engine rebuilt from the stores"
    );
    Ok((engine, effects))
}

/// Replays one patient's readings, each with when Vigil received it, and the clinicians'
/// resolutions in the order the engine first saw them: readings by arrival (a reading that
/// arrives late is judged late, as it was live), and each resolution after the readings Vigil
/// had received when the clinician resolved it, before those that came later. Not by the
/// readings' own times: a reading taken before a resolution but received after it belongs to
/// whatever came next.
fn replay_in_arrival_order(
    engine: &mut Engine,
    mut rows: Vec<(i64, Observation)>,
    mut resolved: Vec<Resolution>,
    now: i64,
) {
    rows.sort_by_key(|(received_ms, o)| (*received_ms, o.time_ms));
    resolved.sort_by_key(|r| r.at_ms);
    let mut resolved = resolved.into_iter().peekable();
    for (received_ms, o) in &rows {
        while let Some(r) = resolved.next_if(|r| r.at_ms <= *received_ms) {
            replay_resolution(engine, &r, now);
        }
        engine.replay(o);
    }
    for r in resolved {
        replay_resolution(engine, &r, now);
    }
}

/// A clinician's resolution, replayed: the rule's alert state as it was once they resolved it.
fn replay_resolution(engine: &mut Engine, r: &Resolution, now: i64) {
    let effects = engine.handle(
        Input::Resolved {
            patient: &r.patient,
            rule_id: &r.rule_id,
        },
        now,
    );
    debug_assert!(effects.is_empty(), "a resolution has no effects");
}

/// Runs the engine until `stop`.
pub async fn run(
    crm: Crm,
    store: Store,
    mut commands: mpsc::Receiver<Command>,
    settings: Settings,
    tick: Duration,
    stop: CancellationToken,
) {
    let default_plan = Arc::new(CarePlan::default_plan());
    // The one instance evaluates every partition.
    crm.metrics
        .alert_partitions_held
        .set(i64::from(crate::domain::partition::ALERT_PARTITIONS));
    // Subscribe first: what commits during the rebuild waits in the feed.
    let mut feed = store.subscribe();
    let mut engine = loop {
        match rebuild(&crm, &store, settings, &default_plan, now_ms(), &|_| true).await {
            Ok((engine, effects)) => {
                crm.apply(effects, None, &stop).await;
                break engine;
            }
            Err(e) => {
                tracing::error!(error = %e, "alert engine cannot rebuild; retrying in 5 s");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
            }
        }
    };
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            batch = feed.recv() => match batch {
                Ok(batch) => {
                    on_batch(&crm, &mut engine, &batch, &stop).await;
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(batches = n, "alert engine fell behind the store; rebuilding");
                    if let Ok((e, effects)) =
                        rebuild(&crm, &store, settings, &default_plan, now_ms(), &|_| true).await
                    {
                        engine = e;
                        crm.apply(effects, None, &stop).await;
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            Some(cmd) = commands.recv() => {
                let now = now_ms();
                let effects = match &cmd {
                    Command::PlanChanged(p, plan) => engine.handle(
                        Input::PlanChanged { patient: p, plan: plan.clone() },
                        now,
                    ),
                    Command::Acknowledged(p, rule_id) => engine.handle(
                        Input::Acknowledged { patient: p, rule_id },
                        now,
                    ),
                    Command::Resolved(p, rule_id) => engine.handle(
                        Input::Resolved { patient: p, rule_id },
                        now,
                    ),
                };
                crm.apply(effects, None, &stop).await;
            }
            _ = ticker.tick() => {
                let effects = engine.handle(Input::Tick, now_ms());
                crm.apply(effects, None, &stop).await;
            }
        }
    }
}

/// The first wait after a failed read of a patient's care plan; it doubles on each failure.
const PLAN_RETRY_INITIAL: Duration = Duration::from_millis(50);
/// The longest wait between reads of a care plan that failed.
const PLAN_RETRY_MAX: Duration = Duration::from_secs(2);

/// A patient's own care plan (`Some(None)`: they have none, the default plan is theirs),
/// read from the record, retried until it is read; `None` only when stopped first.
///
/// A read that fails is never taken for "no plan of their own": that would judge the patient
/// by the default plan's thresholds as if they were theirs, raising alarms their clinician
/// turned off and missing the ones they set. The engine waits instead (the error is the
/// database's, passing), and `vigil_care_plan_read_failures_total` counts the failures.
pub(super) async fn load_plan(
    crm: &Crm,
    patient: &PatientId,
    stop: &CancellationToken,
) -> Option<Option<Arc<CarePlan>>> {
    let mut delay = PLAN_RETRY_INITIAL;
    loop {
        match crm.registry.engine_plan(patient.clone()).await {
            Ok(plan) => return Some(plan.map(Arc::new)),
            Err(e) => {
                crm.metrics.care_plan_read_failures.inc();
                tracing::warn!(
                    error = %e,
                    retry_ms = delay.as_millis() as u64,
                    "care plan not read; the patient waits for it, never judged by the default plan"
                );
                tokio::select! {
                    _ = stop.cancelled() => return None,
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(PLAN_RETRY_MAX);
            }
        }
    }
}

async fn on_batch(
    crm: &Crm,
    engine: &mut Engine,
    batch: &CommittedBatch,
    stop: &CancellationToken,
) {
    let now = now_ms();
    let mut effects = Vec::new();
    for o in &batch.observations {
        if !engine.has_patient(&o.patient_id) {
            // A patient created since the engine started: watch them with their plan.
            let Some(plan) = load_plan(crm, &o.patient_id, stop).await else {
                return;
            };
            engine.add_patient(o.patient_id.clone(), plan, now);
        }
        effects.extend(engine.handle(Input::Observation(o), now));
    }
    engine.complete_messages(&mut effects);
    if effects.is_empty() {
        return;
    }
    if crm.apply(effects, None, stop).await != Applied::Written {
        return;
    }
    crm.metrics
        .alert_eval_lag_seconds
        .observe(batch.at.elapsed().as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{PatientDetails, Registry};
    use crate::telemetry::Metrics;

    /// The restart case that raced: readings stamped by the device before a clinician's
    /// resolution but received after it (the gateway was restarting) belong to the next
    /// episode, which must open its own alert, not stay silenced.
    #[test]
    fn a_resolution_is_replayed_by_when_the_readings_arrived_not_when_they_were_taken() {
        let plan = Arc::new(
            CarePlan::parse(
                br#"{"rules":[{"id":"sys","kind":"threshold","metric":"bp_systolic","op":">","value":180,"severity":"high"}]}"#,
            )
            .unwrap(),
        );
        let p = PatientId::parse("p1").unwrap();
        let reading = |time_ms, value| Observation {
            patient_id: p.clone(),
            device_id: DeviceId::parse("d1").unwrap(),
            metric: crate::domain::Metric::BpSystolic,
            value,
            time_ms,
        };
        let resolved_at = 100_000;
        let rows = vec![
            (resolved_at - 60_000, reading(resolved_at - 61_000, 200.0)),
            // After the resolution, though taken before it: still high, normal, high again.
            (resolved_at + 5_000, reading(resolved_at - 40_000, 205.0)),
            (resolved_at + 5_001, reading(resolved_at - 30_000, 120.0)),
            (resolved_at + 5_002, reading(resolved_at - 20_000, 210.0)),
        ];
        let resolution = Resolution {
            patient: p.clone(),
            rule_id: "sys".into(),
            at_ms: resolved_at,
        };
        let mut engine = Engine::new(Settings::default(), plan.clone());
        engine.add_patient(p.clone(), Some(plan.clone()), 0);
        replay_in_arrival_order(&mut engine, rows.clone(), vec![resolution.clone()], 0);
        let fx = engine.settle(resolved_at + 6_000);
        let [
            Effect::Open {
                trigger: Some(t), ..
            },
        ] = &fx[..]
        else {
            panic!("the new episode opens one alert with its reading: {fx:?}");
        };
        assert_eq!(t.value, 210.0);

        // Without the later readings the condition still holds as resolved: nothing opens.
        let mut engine = Engine::new(Settings::default(), plan.clone());
        engine.add_patient(p.clone(), Some(plan), 0);
        replay_in_arrival_order(&mut engine, rows[..2].to_vec(), vec![resolution], 0);
        assert!(engine.settle(resolved_at + 6_000).is_empty());
    }

    /// A resting-heart-rate drift rule with a 28-day baseline, fed a reading a minute, comes
    /// back from a restart as it was: the rebuild reads the 31 days before the latest reading's
    /// day as 5-minute buckets (8,928 rows instead of 44,640 readings), replays the latest day
    /// reading by reading, and holds the same daily figures and finds the same alert as an
    /// engine that judged every reading.
    #[tokio::test]
    async fn a_28_day_heart_rate_baseline_of_a_1_minute_stream_rebuilds() {
        use crate::alerts::trend::State;
        use crate::alerts::trend::days::Figure;
        const RULES: &str = r#"{"rules":[{"id":"rhr-drift","kind":"drift","metric":"heart_rate","direction":"up","baseline_days":28,"window_days":3,"min_days":14}]}"#;
        let dir = tempfile::tempdir().unwrap();
        let profiles = crate::registry::Profiles::built_in().unwrap();
        let registry = Registry::open(dir.path(), profiles).await.unwrap();
        let p = PatientId::parse("p1").unwrap();
        registry
            .create_patient(
                p.clone(),
                "Ada".into(),
                None,
                None,
                PatientDetails::default(),
                0,
                None,
            )
            .await
            .unwrap();
        let plan = CarePlan::parse(RULES.as_bytes()).unwrap();
        registry
            .set_care_plan(p.clone(), plan.clone(), "admin".into(), 0, None)
            .await
            .unwrap();
        let (crm, _commands) = Crm::new(registry, Metrics::new(), Vec::new());
        let store = Store::open(dir.path(), 10_000, 16, Metrics::new()).unwrap();

        // 35½ days of a reading a minute: lower at night, 12 /min higher from day 33.
        let stream: Vec<Observation> = (0..35 * 1440 + 720)
            .map(|m: i64| {
                let (day, minute) = (m / 1440, m % 1440);
                let base = if minute < 360 {
                    52.0 + ((m * 5) % 7) as f64
                } else {
                    60.0 + ((m * 7) % 23) as f64
                };
                let lift = if day >= 33 { 12.0 } else { 0.0 };
                Observation {
                    patient_id: p.clone(),
                    device_id: DeviceId::parse("watch").unwrap(),
                    metric: crate::domain::Metric::HeartRate,
                    value: base + (day % 3) as f64 + lift,
                    time_ms: m * 60_000,
                }
            })
            .collect();
        for chunk in stream.chunks(5_000) {
            let received = chunk.last().unwrap().time_ms;
            store.insert(chunk.to_vec(), received).await.unwrap();
        }
        let latest = stream.last().unwrap().time_ms;
        let now = latest + 60_000;
        let default_plan = Arc::new(CarePlan::default_plan());
        let (rebuilt, found) = rebuild(
            &crm,
            &store,
            Settings::default(),
            &default_plan,
            now,
            &|_| true,
        )
        .await
        .unwrap();

        let mut replayed = Engine::new(Settings::default(), default_plan.clone());
        replayed.add_patient(p.clone(), Some(Arc::new(plan)), 0);
        for o in &stream {
            replayed.replay(o);
        }
        let figures = |e: &Engine| match e.trend_state(&p, "rhr-drift") {
            Some(State::Days { days, .. }) => days.figures(Figure::Resting).collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
        let (a, b) = (figures(&replayed), figures(&rebuilt));
        assert_eq!(a.len(), 32, "the latest day and the 31 before it");
        assert_eq!(a.len(), b.len());
        for ((da, va), (db, vb)) in a.iter().zip(&b) {
            assert_eq!(da, db);
            assert!((va - vb).abs() < 1e-9, "day {da}: {va} vs {vb}");
        }
        let expected = replayed.settle(now);
        let message = |fx: &[Effect]| match fx {
            [Effect::Open { message, .. }] => message.clone(),
            other => panic!("one alert: {other:?}"),
        };
        assert_eq!(message(&found), message(&expected));
        assert_eq!(
            message(&found),
            "Resting heart rate up 8 bpm over 3 days against a 28-day baseline of 55 bpm \
             (found on restart)"
        );
        store.close().await;
    }

    #[tokio::test]
    async fn a_care_plan_that_cannot_be_read_is_waited_for_not_replaced_by_the_default() {
        let dir = tempfile::tempdir().unwrap();
        let profiles = crate::registry::Profiles::built_in().unwrap();
        let registry = Registry::open(dir.path(), profiles).await.unwrap();
        let p = PatientId::parse("p1").unwrap();
        registry
            .create_patient(
                p.clone(),
                "Ada".into(),
                None,
                None,
                PatientDetails::default(),
                0,
                None,
            )
            .await
            .unwrap();
        let mut own = CarePlan::default_plan();
        own.rules.truncate(1);
        registry
            .set_care_plan(p.clone(), own.clone(), "admin".into(), 0, None)
            .await
            .unwrap();
        let (crm, _commands) = Crm::new(registry, Metrics::new(), Vec::new());
        // The record's care plans cannot be read for a while (a real database error).
        let other = rusqlite::Connection::open(dir.path().join("registry.db")).unwrap();
        other
            .execute_batch("ALTER TABLE care_plans RENAME TO care_plans_away")
            .unwrap();
        let stop = CancellationToken::new();
        let load = tokio::spawn({
            let (crm, p, stop) = (crm.clone(), p.clone(), stop.clone());
            async move { load_plan(&crm, &p, &stop).await }
        });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while crm.metrics.care_plan_read_failures.get() < 3 {
            assert!(tokio::time::Instant::now() < deadline, "no failed read");
            assert!(!load.is_finished(), "a plan was taken without reading it");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!load.is_finished(), "a plan was taken without reading it");
        other
            .execute_batch("ALTER TABLE care_plans_away RENAME TO care_plans")
            .unwrap();
        let plan = tokio::time::timeout(Duration::from_secs(10), load)
            .await
            .expect("the plan is read once the record answers")
            .unwrap();
        assert_eq!(plan, Some(Some(Arc::new(own))));
    }
}
