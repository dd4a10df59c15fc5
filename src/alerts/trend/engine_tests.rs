//! The trend rules driven through the engine: one alert per episode, auto-resolve, replay and
//! the rebuild from buckets. The arithmetic itself is checked beside each rule's module.

use std::sync::Arc;

use super::days::{BUCKET_MS, Bucket, DAY_MS};
use super::{State, figure};
use crate::alerts::engine::{Effect, Engine, Input, Settings};
use crate::alerts::rules::{CarePlan, Severity};
use crate::domain::{DeviceId, Metric, Observation, PatientId};

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;

fn pid() -> PatientId {
    PatientId::parse("p1").unwrap()
}

fn obs(metric: Metric, t: i64, v: f64) -> Observation {
    Observation {
        patient_id: pid(),
        device_id: DeviceId::parse("d1").unwrap(),
        metric,
        value: v,
        time_ms: t,
    }
}

/// An engine that resolves after the default 15 minutes clear and never escalates.
fn engine(rules: &str) -> Engine {
    let settings = Settings {
        escalate_after_s: u32::MAX,
        ..Settings::default()
    };
    let mut e = Engine::new(
        settings,
        Arc::new(CarePlan::parse(br#"{"rules":[]}"#).unwrap()),
    );
    e.add_patient(
        pid(),
        Some(Arc::new(CarePlan::parse(rules.as_bytes()).unwrap())),
        0,
    );
    e
}

fn opened(fx: &[Effect]) -> Vec<&Effect> {
    fx.iter()
        .filter(|e| matches!(e, Effect::Open { .. }))
        .collect()
}

fn message(fx: &Effect) -> &str {
    match fx {
        Effect::Open { message, .. } => message,
        other => panic!("{other:?}"),
    }
}

const DRIFT: &str = r#"{"rules":[{"id":"weight-drift","kind":"drift","metric":"body_weight","direction":"up","baseline_days":7,"window_days":3,"min_days":7,"k":0.5,"h":4,"min_sd":0.1,"severity":"medium"}]}"#;

/// The series of `drift::tests`: a repeating stable week (every 7-day baseline: mean 80.0,
/// SD 0.3), a rise on days 14–16, then 80.0 again. One weighing a day at 07:00.
fn weights() -> Vec<(i64, f64)> {
    const WEEK: [f64; 7] = [79.7, 80.3, 79.7, 80.3, 79.7, 80.3, 80.0];
    let mut s: Vec<(i64, f64)> = (0..14).map(|d| (d, WEEK[d as usize % 7])).collect();
    s.extend([(14, 80.3), (15, 81.1), (16, 82.0)]);
    s.extend((17..24).map(|d| (d, 80.0)));
    s.into_iter()
        .map(|(d, w)| (d * DAY_MS + 7 * HOUR, w))
        .collect()
}

#[test]
fn drift_opens_once_on_the_day_it_holds_and_resolves_when_it_clears() {
    let mut e = engine(DRIFT);
    let mut day16 = Vec::new();
    for (t, w) in weights() {
        let fx = e.handle(Input::Observation(&obs(Metric::BodyWeight, t, w)), t);
        let day = t / DAY_MS;
        match day {
            // S on day 15 is 3.667 < 4; on day 16 9.833 (drift::tests).
            ..16 => assert!(fx.is_empty(), "day {day}: {fx:?}"),
            16 => day16 = fx,
            // Day 17 still holds (S 8.5 against a baseline now holding day 14); the same alert.
            17 => assert!(fx.is_empty(), "day 17: {fx:?}"),
            // Day 18: baseline days 9–15 (mean 80.2, SD 0.48), window 82, 80, 80: S 1.4.
            // Clear; 15 minutes later it resolves.
            18 => {
                assert!(fx.is_empty(), "{fx:?}");
                assert!(e.handle(Input::Tick, t + 14 * MIN).is_empty());
                let fx = e.handle(Input::Tick, t + 15 * MIN);
                assert!(matches!(&fx[..], [Effect::Resolve { .. }]), "{fx:?}");
            }
            _ => assert!(fx.is_empty(), "day {day}: {fx:?}"),
        }
    }
    let [open] = &opened(&day16)[..] else {
        panic!("one alert on day 16: {day16:?}")
    };
    // The window's mean (80.3 + 81.1 + 82.0) / 3 = 81.13 is 1.1 kg above 80.0.
    assert_eq!(
        message(open),
        "Weight up 1.1 kg over 3 days against a 7-day baseline of 80.0 kg"
    );
    let Effect::Open {
        kind,
        severity,
        trigger,
        ..
    } = open
    else {
        unreachable!()
    };
    assert_eq!((*kind, *severity), ("drift", Severity::Medium));
    assert_eq!(trigger.as_ref().unwrap().value, 82.0);
}

#[test]
fn drift_says_nothing_for_a_patient_without_min_days_of_baseline() {
    // The same rise, but the patient's first weighing was on day 9: day 16's baseline
    // (days 7–13) has 5 days of the 7 it needs.
    let mut e = engine(DRIFT);
    for (t, w) in weights().into_iter().filter(|(t, _)| *t >= 9 * DAY_MS) {
        let fx = e.handle(Input::Observation(&obs(Metric::BodyWeight, t, w)), t);
        assert!(fx.is_empty(), "day {}: {fx:?}", t / DAY_MS);
    }
}

#[test]
fn a_drift_found_on_replay_names_the_reading_that_tripped_it() {
    let mut e = engine(DRIFT);
    for (t, w) in weights().into_iter().filter(|(t, _)| *t < 17 * DAY_MS) {
        e.replay(&obs(Metric::BodyWeight, t, w));
    }
    let fx = e.settle(17 * DAY_MS);
    let [
        Effect::Open {
            message, trigger, ..
        },
    ] = &fx[..]
    else {
        panic!("one alert: {fx:?}")
    };
    assert_eq!(
        message,
        "Weight up 1.1 kg over 3 days against a 7-day baseline of 80.0 kg (found on restart)"
    );
    let t = trigger.as_ref().unwrap();
    assert_eq!((t.time_ms, t.value), (16 * DAY_MS + 7 * HOUR, 82.0));
}

#[test]
fn a_clinicians_resolution_replayed_after_the_buckets_keeps_a_drift_silenced() {
    // A restart on day 17: days 0–16 come as buckets (one weighing each), the drift alert a
    // clinician resolved on the evening of day 16 is replayed next, then day 17's weighing.
    let before = 17 * DAY_MS;
    let buckets: Vec<Bucket> = weights()
        .into_iter()
        .filter(|(t, _)| *t < before)
        .map(|(t, w)| Bucket {
            start_ms: t / BUCKET_MS * BUCKET_MS,
            mean: w,
            count: 1,
        })
        .collect();
    let day17 = obs(Metric::BodyWeight, before + 7 * HOUR, 80.0);
    let rebuild = |resolved: bool| {
        let mut e = engine(DRIFT);
        e.replay_buckets(&pid(), Metric::BodyWeight, before, &buckets);
        if resolved {
            let fx = e.handle(
                Input::Resolved {
                    patient: &pid(),
                    rule_id: "weight-drift",
                },
                before,
            );
            assert!(fx.is_empty());
        }
        e.replay(&day17);
        e.settle(before + 8 * HOUR)
    };
    // The condition held as of day 16 (judged from the buckets) and still holds on day 17
    // (S 8.5): the clinician's decision stands.
    assert!(rebuild(true).is_empty());
    // Without the resolution the alert is found, with day 17's weighing as its trigger.
    let fx = rebuild(false);
    let [Effect::Open { trigger, .. }] = &fx[..] else {
        panic!("{fx:?}")
    };
    assert_eq!(trigger.as_ref(), Some(&day17));
}

#[test]
fn macd_opens_on_the_crossing_and_resolves_when_the_gap_stops_widening() {
    let mut e = engine(
        r#"{"rules":[{"id":"weight-macd","kind":"macd","fast_days":3,"slow_days":7,"signal_days":3,"margin":0.3,"min_days":7}]}"#,
    );
    // macd::tests: 80 for five days, then 81, 82, 83.5, 83.5; histogram .125, .219, .320, .178.
    let w = [80.0, 80.0, 80.0, 80.0, 80.0, 81.0, 82.0, 83.5, 83.5];
    for (day, w) in w.into_iter().enumerate() {
        let t = day as i64 * DAY_MS + 7 * HOUR;
        let fx = e.handle(Input::Observation(&obs(Metric::BodyWeight, t, w)), t);
        if day == 7 {
            let [open] = &opened(&fx)[..] else {
                panic!("{fx:?}")
            };
            // fast 82.375, slow 81.390625, MACD .984375, signal .6640625.
            assert_eq!(
                message(open),
                "Weight trending up: 3-day average 82.4 kg is 1.0 kg above the 7-day average \
                 of 81.4 kg and the gap is widening (MACD 0.98 kg over its signal 0.66 kg)"
            );
        } else {
            assert!(fx.is_empty(), "day {day}: {fx:?}");
        }
        if day == 8 {
            let fx = e.handle(Input::Tick, t + 15 * MIN);
            assert!(matches!(&fx[..], [Effect::Resolve { .. }]), "{fx:?}");
        }
    }
}

#[test]
fn forecast_warns_before_the_low_and_keeps_quiet_over_a_gap() {
    let mut e = engine(r#"{"rules":[{"id":"glucose-forecast","kind":"forecast"}]}"#);
    let t0 = 1_000 * MIN;
    let mut feed = |t: i64, v: f64| e.handle(Input::Observation(&obs(Metric::Glucose, t, v)), t);
    // One reading: nothing to forecast from.
    assert!(feed(t0, 121.0).is_empty());
    // 121 → 110: forecast 103, 98, 95, 93, 92, 92: quiet.
    assert!(feed(t0 + 5 * MIN, 110.0).is_empty());
    // 110 → 92: forecast 81, 74, 70, 67 (20 min), 66, 65: below 70 within 20 minutes.
    let fx = feed(t0 + 10 * MIN, 92.0);
    let [open] = &opened(&fx)[..] else {
        panic!("{fx:?}")
    };
    assert_eq!(
        message(open),
        "Glucose 92 mg/dL and falling: forecast 67 mg/dL within 20 min"
    );
    // The CGM misses two readings: no forecast across the gap, the alert stays as it was.
    assert!(feed(t0 + 25 * MIN, 85.0).is_empty());
    assert!(e.handle(Input::Tick, t0 + 45 * MIN).is_empty());
    // 85 → 96 (exactly 5 minutes apart): rising, forecast above 70: clear, then resolved.
    let mut feed = |t: i64, v: f64| e.handle(Input::Observation(&obs(Metric::Glucose, t, v)), t);
    assert!(feed(t0 + 30 * MIN, 96.0).is_empty());
    assert!(e.handle(Input::Tick, t0 + 44 * MIN).is_empty());
    let fx = e.handle(Input::Tick, t0 + 45 * MIN);
    assert!(matches!(&fx[..], [Effect::Resolve { .. }]), "{fx:?}");
}

#[test]
fn forecast_warns_of_a_high() {
    let mut e = engine(r#"{"rules":[{"id":"glucose-forecast","kind":"forecast"}]}"#);
    e.handle(Input::Observation(&obs(Metric::Glucose, 0, 190.0)), 0);
    let fx = e.handle(
        Input::Observation(&obs(Metric::Glucose, 5 * MIN, 212.0)),
        5 * MIN,
    );
    // 190 → 212: 229, 241, 249, 254 (20 min) > 250.
    let [open] = &opened(&fx)[..] else {
        panic!("{fx:?}")
    };
    assert_eq!(
        message(open),
        "Glucose 212 mg/dL and rising: forecast 254 mg/dL within 20 min"
    );
}

/// A heart rate every minute for 35½ days: lower at night (00:00–06:00), a little different
/// each day, and 12 /min higher from day 33.
fn heart_rate_stream() -> Vec<(i64, f64)> {
    (0..35 * 1440 + 720)
        .map(|m: i64| {
            let (day, minute) = (m / 1440, m % 1440);
            let base = if minute < 360 {
                52.0 + ((m * 5) % 7) as f64
            } else {
                60.0 + ((m * 7) % 23) as f64
            };
            let lift = if day >= 33 { 12.0 } else { 0.0 };
            (m * MIN, base + (day % 3) as f64 + lift)
        })
        .collect()
}

const RESTING_HR: &str = r#"{"rules":[{"id":"rhr-drift","kind":"drift","metric":"heart_rate","direction":"up","baseline_days":28,"window_days":3,"min_days":14,"severity":"low"}]}"#;

#[test]
fn a_rebuild_from_buckets_finds_what_a_replay_of_every_reading_finds() {
    let stream = heart_rate_stream();
    let latest = stream.last().unwrap().0;
    let before = latest / DAY_MS * DAY_MS;

    // Live: every reading through the engine; one alert, on the first reading of day 34
    // (judging day 33, the first day up: resting figures are judged once the day is over).
    let mut live = engine(RESTING_HR);
    let mut opens = Vec::new();
    for &(t, v) in &stream {
        let fx = live.handle(Input::Observation(&obs(Metric::HeartRate, t, v)), t);
        opens.extend(fx.into_iter().filter(|e| matches!(e, Effect::Open { .. })));
    }
    let [Effect::Open { trigger, .. }] = &opens[..] else {
        panic!("{opens:?}")
    };
    assert_eq!(trigger.as_ref().unwrap().time_ms, 34 * DAY_MS);

    // Rebuilt as `crm::task::rebuild` does: the days before the latest reading's day as the
    // store's 5-minute buckets, then the last day's readings (and the hours of the day before
    // that a 24-hour lookback also replays, which the rule already has).
    let mut rebuilt = engine(RESTING_HR);
    let plan = CarePlan::parse(RESTING_HR.as_bytes()).unwrap();
    let days = Engine::trend_days(&plan)[&Metric::HeartRate];
    assert_eq!(
        days, 31,
        "window 3 + baseline 28, ending the day before the latest"
    );
    let from = before - i64::from(days) * DAY_MS;
    let buckets: Vec<Bucket> = stream
        .iter()
        .filter(|(t, _)| (from..before).contains(t))
        .collect::<Vec<_>>()
        .chunks(5)
        .map(|c| Bucket {
            start_ms: c[0].0,
            mean: c.iter().map(|(_, v)| v).sum::<f64>() / c.len() as f64,
            count: c.len() as u64,
        })
        .collect();
    rebuilt.replay_buckets(&pid(), Metric::HeartRate, before, &buckets);
    let lookback = Engine::lookback_ms(&plan)[&Metric::HeartRate];
    for &(t, v) in stream.iter().filter(|(t, _)| *t >= latest - lookback) {
        rebuilt.replay(&obs(Metric::HeartRate, t, v));
    }

    // The same days and figures (up to rounding).
    let figures = |e: &Engine| match e.trend_state(&pid(), "rhr-drift") {
        Some(State::Days { days, .. }) => {
            days.figures(figure(Metric::HeartRate)).collect::<Vec<_>>()
        }
        other => panic!("{other:?}"),
    };
    let (a, b) = (figures(&live), figures(&rebuilt));
    assert_eq!(a.len(), 32, "days 4 to 35");
    assert_eq!(a.len(), b.len());
    for ((da, va), (db, vb)) in a.iter().zip(&b) {
        assert_eq!(da, db);
        assert!((va - vb).abs() < 1e-9, "day {da}: {va} vs {vb}");
    }
    // A replay of every reading and the rebuild open the same alert when settling.
    let mut replayed = engine(RESTING_HR);
    for &(t, v) in &stream {
        replayed.replay(&obs(Metric::HeartRate, t, v));
    }
    let (x, y) = (replayed.settle(latest), rebuilt.settle(latest));
    assert_eq!(opened(&x).len(), 1, "{x:?}");
    assert_eq!(message(opened(&x)[0]), message(opened(&y)[0]));
    // Day 34 judged: baseline days 4–31 (resting figures 55.2 on average), window days 32–34
    // (56.2, 66.2, 67.2): the window's mean is 8.0 above.
    assert_eq!(
        message(opened(&y)[0]),
        "Resting heart rate up 8 bpm over 3 days against a 28-day baseline of 55 bpm \
         (found on restart)"
    );
}
