//! The engine driven by hand: every rule kind, its timers, replay and restore.

use super::*;
use crate::domain::DeviceId;

const MIN: i64 = 60_000;

fn plan(json: &str) -> Arc<CarePlan> {
    Arc::new(CarePlan::parse(json.as_bytes()).unwrap())
}

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

/// An engine that does not escalate (its own test covers that).
fn engine(rules: &str) -> Engine {
    let quiet = Settings {
        escalate_after_s: u32::MAX,
        ..Settings::default()
    };
    let mut e = Engine::new(quiet, plan(r#"{"rules":[]}"#));
    e.add_patient(pid(), Some(plan(rules)), 0);
    e
}

fn feed(e: &mut Engine, m: Metric, t: i64, v: f64) -> Vec<Effect> {
    e.handle(Input::Observation(&obs(m, t, v)), t)
}

fn opened(effects: &[Effect]) -> usize {
    effects
        .iter()
        .filter(|e| matches!(e, Effect::Open { .. }))
        .count()
}

const SPO2_LOW: &str = r#"{"rules":[{"id":"spo2-low","kind":"threshold","metric":"spo2","op":"<","value":90,"for_s":60,"severity":"high","hysteresis":2}]}"#;

#[test]
fn threshold_fires_once_after_for_s_and_not_per_reading() {
    let mut e = engine(SPO2_LOW);
    assert_eq!(opened(&feed(&mut e, Metric::Spo2, 0, 88.0)), 0);
    assert_eq!(opened(&feed(&mut e, Metric::Spo2, 30_000, 87.0)), 0);
    let fx = feed(&mut e, Metric::Spo2, 60_000, 86.0);
    assert_eq!(opened(&fx), 1, "{fx:?}");
    match &fx[0] {
        Effect::Open {
            message,
            severity,
            trigger,
            ..
        } => {
            assert_eq!(message, "SpO2 86% — below 90 for 1 min");
            assert_eq!(*severity, Severity::High);
            assert_eq!(trigger.as_ref().unwrap().value, 86.0);
        }
        other => panic!("{other:?}"),
    }
    for i in 0..10 {
        assert!(feed(&mut e, Metric::Spo2, 61_000 + i * 1000, 85.0).is_empty());
    }
}

#[test]
fn threshold_run_broken_by_a_good_reading_starts_over() {
    let mut e = engine(SPO2_LOW);
    feed(&mut e, Metric::Spo2, 0, 88.0);
    feed(&mut e, Metric::Spo2, 40_000, 95.0);
    assert_eq!(opened(&feed(&mut e, Metric::Spo2, 70_000, 88.0)), 0);
    assert_eq!(opened(&feed(&mut e, Metric::Spo2, 129_000, 88.0)), 0);
    assert_eq!(opened(&feed(&mut e, Metric::Spo2, 130_000, 88.0)), 1);
}

#[test]
fn hysteresis_keeps_a_hovering_value_from_flapping() {
    let mut e = Engine::new(
        Settings {
            auto_resolve_s: 60,
            escalate_after_s: u32::MAX,
            ..Settings::default()
        },
        plan(r#"{"rules":[]}"#),
    );
    e.add_patient(pid(), Some(plan(SPO2_LOW)), 0);
    feed(&mut e, Metric::Spo2, 0, 88.0);
    assert_eq!(opened(&feed(&mut e, Metric::Spo2, MIN, 88.0)), 1);
    // Hovering between 90 and 92 (inside the band): still holding, never resolves.
    for i in 0..20 {
        let v = if i % 2 == 0 { 90.0 } else { 89.0 };
        let t = 2 * MIN + i * 10_000;
        let fx = feed(&mut e, Metric::Spo2, t, v);
        assert_eq!(opened(&fx), 0, "{fx:?}");
        assert!(e.handle(Input::Tick, t).is_empty());
    }
    // Clearly recovered: resolves after auto_resolve_s of clear.
    let t = 10 * MIN;
    feed(&mut e, Metric::Spo2, t, 93.0);
    assert!(e.handle(Input::Tick, t + 59_000).is_empty());
    let fx = e.handle(Input::Tick, t + 60_000);
    assert!(matches!(fx.as_slice(), [Effect::Resolve { .. }]), "{fx:?}");
    // A new episode is a new alert.
    feed(&mut e, Metric::Spo2, t + 2 * MIN, 85.0);
    assert_eq!(opened(&feed(&mut e, Metric::Spo2, t + 3 * MIN, 85.0)), 1);
}

#[test]
fn recurring_before_auto_resolve_is_the_same_alert() {
    let mut e = engine(
        r#"{"rules":[{"id":"hr","kind":"threshold","metric":"heart_rate","op":">","value":130,"severity":"medium"}]}"#,
    );
    assert_eq!(opened(&feed(&mut e, Metric::HeartRate, 0, 140.0)), 1);
    feed(&mut e, Metric::HeartRate, MIN, 100.0);
    assert!(e.handle(Input::Tick, 5 * MIN).is_empty());
    assert_eq!(opened(&feed(&mut e, Metric::HeartRate, 6 * MIN, 150.0)), 0);
    // Clear again: the clock starts over.
    feed(&mut e, Metric::HeartRate, 7 * MIN, 90.0);
    assert!(e.handle(Input::Tick, 21 * MIN).is_empty());
    assert!(matches!(
        e.handle(Input::Tick, 22 * MIN).as_slice(),
        [Effect::Resolve { .. }]
    ));
}

#[test]
fn rate_rule_catches_heart_failure_weight_gain_within_the_window() {
    let rule = r#"{"rules":[{"id":"hf","kind":"rate","metric":"body_weight","rise":2.0,"window_h":72,"severity":"medium"}]}"#;
    let mut e = engine(rule);
    let day = 86_400_000;
    assert!(feed(&mut e, Metric::BodyWeight, 0, 80.0).is_empty());
    assert!(feed(&mut e, Metric::BodyWeight, day, 80.9).is_empty());
    assert!(feed(&mut e, Metric::BodyWeight, 2 * day, 81.5).is_empty());
    let fx = feed(&mut e, Metric::BodyWeight, 3 * day - MIN, 82.0);
    assert_eq!(opened(&fx), 1, "{fx:?}");
    let Effect::Open { message, .. } = &fx[0] else {
        panic!()
    };
    assert_eq!(message, "Weight up 2 kg within 72 h (80 → 82 kg)");
    // The same gain spread over more than the window does not fire.
    let mut e = engine(rule);
    feed(&mut e, Metric::BodyWeight, 0, 80.0);
    feed(&mut e, Metric::BodyWeight, 2 * day, 81.0);
    assert!(feed(&mut e, Metric::BodyWeight, 3 * day + MIN, 82.0).is_empty());
}

#[test]
fn rate_fall_uses_the_highest_reading_in_the_window() {
    let mut e = engine(
        r#"{"rules":[{"id":"drop","kind":"rate","metric":"glucose","fall":60,"window_h":1,"severity":"high"}]}"#,
    );
    feed(&mut e, Metric::Glucose, 0, 150.0);
    feed(&mut e, Metric::Glucose, 5 * MIN, 180.0);
    feed(&mut e, Metric::Glucose, 10 * MIN, 140.0);
    assert_eq!(opened(&feed(&mut e, Metric::Glucose, 15 * MIN, 119.0)), 1);
}

#[test]
fn news2_opens_medium_then_raises_to_high() {
    let mut e = engine(r#"{"rules":[{"id":"news2","kind":"news2"}]}"#);
    let t = 10 * MIN;
    // RR 22 (2) + SpO2 95 (1) + HR 95 (1) = 4: nothing.
    feed(&mut e, Metric::RespiratoryRate, t, 22.0);
    feed(&mut e, Metric::Spo2, t, 95.0);
    assert!(feed(&mut e, Metric::HeartRate, t, 95.0).is_empty());
    // Temperature 38.5 (1): 5 → medium.
    let fx = feed(&mut e, Metric::BodyTemperature, t + 1000, 38.5);
    assert!(
        matches!(&fx[..], [Effect::Open { severity: Severity::Medium, message, .. }] if message.starts_with("NEWS2 5")),
        "{fx:?}"
    );
    // SpO2 91 (3): 7 → high, the same alert raised.
    let fx = feed(&mut e, Metric::Spo2, t + 2000, 91.0);
    assert!(
        matches!(
            &fx[..],
            [Effect::Raise {
                severity: Severity::High,
                ..
            }]
        ),
        "{fx:?}"
    );
}

#[test]
fn news2_single_three_is_medium_and_stale_inputs_drop_out() {
    let mut e = engine(r#"{"rules":[{"id":"news2","kind":"news2","freshness_s":3600}]}"#);
    let fx = feed(&mut e, Metric::Spo2, 0, 90.0);
    assert!(
        matches!(
            &fx[..],
            [Effect::Open {
                severity: Severity::Medium,
                ..
            }]
        ),
        "{fx:?}"
    );
    // An hour later the reading is stale: the condition clears, then resolves.
    assert!(e.handle(Input::Tick, 3_600_000 + 1000).is_empty());
    let fx = e.handle(Input::Tick, 3_600_000 + 1000 + 900_000);
    assert!(matches!(&fx[..], [Effect::Resolve { .. }]), "{fx:?}");
}

#[test]
fn news2_judges_an_uploaded_backlog_as_it_was_charted() {
    let mut e = engine(r#"{"rules":[{"id":"news2","kind":"news2","freshness_s":3600}]}"#);
    let now = 48 * 3_600_000;
    let then = 10 * 3_600_000;
    // Readings from ten hours before `now`, arriving now: fresh relative to each other.
    let mut fx = Vec::new();
    for (m, v) in [
        (Metric::RespiratoryRate, 25.0),
        (Metric::Spo2, 91.0),
        (Metric::HeartRate, 131.0),
    ] {
        fx.extend(e.handle(Input::Observation(&obs(m, then, v)), now));
    }
    assert!(
        matches!(
            &fx[..],
            [
                Effect::Open {
                    severity: Severity::Medium,
                    ..
                },
                Effect::Raise {
                    severity: Severity::High,
                    ..
                }
            ]
        ),
        "{fx:?}"
    );
}

#[test]
fn missing_fires_on_silence_and_clears_on_a_reading() {
    let mut e = engine(
        r#"{"rules":[{"id":"hr-silent","kind":"missing","metric":"heart_rate","after_s":3600,"severity":"low"}]}"#,
    );
    feed(&mut e, Metric::HeartRate, 0, 70.0);
    assert!(e.handle(Input::Tick, 59 * MIN).is_empty());
    let fx = e.handle(Input::Tick, 60 * MIN);
    assert!(
        matches!(&fx[..], [Effect::Open { message, trigger: None, .. }] if message == "No heart rate reading for 1 h"),
        "{fx:?}"
    );
    assert!(e.handle(Input::Tick, 61 * MIN).is_empty());
    feed(&mut e, Metric::HeartRate, 62 * MIN, 70.0);
    let fx = e.handle(Input::Tick, 62 * MIN + 900_000);
    assert!(matches!(&fx[..], [Effect::Resolve { .. }]), "{fx:?}");
}

#[test]
fn unacknowledged_alerts_escalate_until_acknowledged() {
    let mut e = Engine::new(Settings::default(), plan(r#"{"rules":[]}"#));
    e.add_patient(
        pid(),
        Some(plan(
            r#"{"rules":[{"id":"hr","kind":"threshold","metric":"heart_rate","op":">","value":130,"severity":"high"}]}"#,
        )),
        0,
    );
    feed(&mut e, Metric::HeartRate, 0, 150.0);
    assert!(e.handle(Input::Tick, 14 * MIN).is_empty());
    let fx = e.handle(Input::Tick, 15 * MIN);
    assert!(
        matches!(&fx[..], [Effect::Escalate { level: 1, .. }]),
        "{fx:?}"
    );
    assert!(e.handle(Input::Tick, 16 * MIN).is_empty());
    let fx = e.handle(Input::Tick, 30 * MIN);
    assert!(
        matches!(&fx[..], [Effect::Escalate { level: 2, .. }]),
        "{fx:?}"
    );
    e.handle(
        Input::Acknowledged {
            patient: &pid(),
            rule_id: "hr",
        },
        31 * MIN,
    );
    assert!(e.handle(Input::Tick, 120 * MIN).is_empty());
}

#[test]
fn resolving_while_the_condition_holds_silences_until_it_clears() {
    let mut e = engine(
        r#"{"rules":[{"id":"hr","kind":"threshold","metric":"heart_rate","op":">","value":130,"severity":"high"}]}"#,
    );
    assert_eq!(opened(&feed(&mut e, Metric::HeartRate, 0, 150.0)), 1);
    e.handle(
        Input::Resolved {
            patient: &pid(),
            rule_id: "hr",
        },
        MIN,
    );
    assert!(feed(&mut e, Metric::HeartRate, 2 * MIN, 150.0).is_empty());
    feed(&mut e, Metric::HeartRate, 3 * MIN, 80.0);
    assert_eq!(opened(&feed(&mut e, Metric::HeartRate, 4 * MIN, 150.0)), 1);
}

#[test]
fn an_alert_found_on_restart_names_the_reading_that_tripped_it() {
    let mut e = engine(
        r#"{"rules":[{"id":"hr","kind":"threshold","metric":"heart_rate","op":">","value":130,"severity":"high"}]}"#,
    );
    e.replay(&obs(Metric::HeartRate, 0, 80.0));
    e.replay(&obs(Metric::HeartRate, MIN, 150.0));
    e.replay(&obs(Metric::HeartRate, 2 * MIN, 160.0));
    let fx = e.settle(3 * MIN);
    let [Effect::Open { trigger, .. }] = &fx[..] else {
        panic!("one alert opened: {fx:?}");
    };
    let t = trigger.as_ref().expect("a trigger");
    assert_eq!((t.time_ms, t.value), (MIN, 150.0), "the first reading over");
    // An episode that ended during the replay leaves no trigger behind for the next.
    let mut e = engine(
        r#"{"rules":[{"id":"hr","kind":"threshold","metric":"heart_rate","op":">","value":130,"severity":"high"}]}"#,
    );
    e.replay(&obs(Metric::HeartRate, 0, 150.0));
    e.replay(&obs(Metric::HeartRate, MIN, 80.0));
    e.replay(&obs(Metric::HeartRate, 2 * MIN, 170.0));
    let fx = e.settle(3 * MIN);
    let [
        Effect::Open {
            trigger: Some(t), ..
        },
    ] = &fx[..]
    else {
        panic!("one alert opened with a trigger: {fx:?}");
    };
    assert_eq!(t.value, 170.0);
}

#[test]
fn a_replayed_history_with_a_restored_alert_opens_nothing_new() {
    let rules = r#"{"rules":[{"id":"hr","kind":"threshold","metric":"heart_rate","op":">","value":130,"severity":"high"}]}"#;
    let mut e = engine(rules);
    e.restore(OpenAlert {
        patient: pid(),
        rule_id: "hr".into(),
        severity: Severity::High,
        acknowledged: false,
        escalations: 0,
        since_ms: 0,
    });
    e.replay(&obs(Metric::HeartRate, 0, 150.0));
    assert!(e.settle(MIN).is_empty());
    assert!(feed(&mut e, Metric::HeartRate, 2 * MIN, 150.0).is_empty());
    // Without the alert in the record (lost in a crash), settling opens it once.
    let mut e = engine(rules);
    e.replay(&obs(Metric::HeartRate, 0, 150.0));
    assert_eq!(opened(&e.settle(MIN)), 1);
    assert!(e.settle(MIN).is_empty());
    assert!(feed(&mut e, Metric::HeartRate, 2 * MIN, 150.0).is_empty());
}

#[test]
fn removing_a_rule_resolves_its_alert() {
    let mut e = engine(
        r#"{"rules":[{"id":"hr","kind":"threshold","metric":"heart_rate","op":">","value":130,"severity":"high"}]}"#,
    );
    feed(&mut e, Metric::HeartRate, 0, 150.0);
    let fx = e.handle(
        Input::PlanChanged {
            patient: &pid(),
            plan: Some(plan(r#"{"rules":[]}"#)),
        },
        MIN,
    );
    assert!(matches!(&fx[..], [Effect::Resolve { .. }]), "{fx:?}");
}

#[test]
fn older_readings_do_not_move_the_state() {
    let mut e = engine(
        r#"{"rules":[{"id":"hr","kind":"threshold","metric":"heart_rate","op":">","value":130,"severity":"high"}]}"#,
    );
    feed(&mut e, Metric::HeartRate, 10 * MIN, 80.0);
    assert!(feed(&mut e, Metric::HeartRate, 5 * MIN, 150.0).is_empty());
}

/// An engine on the default plan (blood pressure and glucose episodes), not escalating.
fn default_engine() -> Engine {
    let quiet = Settings {
        escalate_after_s: u32::MAX,
        ..Settings::default()
    };
    let mut e = Engine::new(quiet, Arc::new(CarePlan::default_plan()));
    e.add_patient(pid(), None, 0);
    e
}

/// Feeds one cuff measurement as the shell feeds a batch: both readings, then the wording.
fn cuff(e: &mut Engine, t: i64, sys: f64, dia: f64) -> Vec<Effect> {
    let mut fx = feed(e, Metric::BpSystolic, t, sys);
    fx.extend(feed(e, Metric::BpDiastolic, t, dia));
    e.complete_messages(&mut fx);
    fx
}

#[test]
fn one_blood_pressure_measurement_past_both_limits_opens_one_alert() {
    let mut e = default_engine();
    let fx = cuff(&mut e, 0, 208.0, 124.0);
    let [
        Effect::Open {
            rule_id,
            severity,
            message,
            trigger,
            ..
        },
    ] = &fx[..]
    else {
        panic!("one alert: {fx:?}");
    };
    assert_eq!(
        rule_id, "bp-crisis-systolic",
        "the first rule past opens it"
    );
    assert_eq!(*severity, Severity::High);
    assert_eq!(message, "Blood pressure 208/124 mmHg — at or above 180/120");
    assert_eq!(trigger.as_ref().map(|t| t.value), Some(208.0));
    // The next measurement, still past both, is the same episode: nothing new.
    assert!(cuff(&mut e, 10 * MIN, 210.0, 125.0).is_empty());
    // Diastolic alone past its limit keeps the episode going; then both clear (hysteresis
    // 10) and after 15 minutes clear it resolves once, naming the rule that opened it.
    assert!(cuff(&mut e, 20 * MIN, 150.0, 122.0).is_empty());
    assert!(cuff(&mut e, 30 * MIN, 140.0, 85.0).is_empty());
    assert!(e.handle(Input::Tick, 44 * MIN).is_empty());
    let fx = e.handle(Input::Tick, 45 * MIN);
    assert!(
        matches!(&fx[..], [Effect::Resolve { rule_id, .. }] if rule_id == "bp-crisis-systolic"),
        "{fx:?}"
    );
    // Diastolic alone opens an alert of its own rule, worded for the diastolic limit.
    let fx = cuff(&mut e, 60 * MIN, 160.0, 126.0);
    assert!(
        matches!(&fx[..], [Effect::Open { rule_id, message, .. }]
            if rule_id == "bp-crisis-diastolic"
            && message == "Blood pressure 160/126 mmHg — diastolic at or above 120"),
        "{fx:?}"
    );
}

#[test]
fn glucose_low_then_very_low_is_one_alert_raised() {
    let mut e = default_engine();
    let fx = feed(&mut e, Metric::Glucose, 0, 65.0);
    assert!(
        matches!(&fx[..], [Effect::Open { rule_id, severity: Severity::Medium, .. }] if rule_id == "glucose-low"),
        "{fx:?}"
    );
    let fx = feed(&mut e, Metric::Glucose, 5 * MIN, 52.0);
    assert!(
        matches!(&fx[..], [Effect::Raise { rule_id, severity: Severity::High, message, .. }]
            if rule_id == "glucose-low" && message == "Glucose 52 mg/dL — below 54"),
        "the same alert, raised: {fx:?}"
    );
    // Back above 54 but still low: the alert stays as it is (no lowering, no second alert).
    assert!(feed(&mut e, Metric::Glucose, 10 * MIN, 66.0).is_empty());
    assert!(e.handle(Input::Tick, 20 * MIN).is_empty());
    // Clear of both (≥ 80 with the low rule's hysteresis): resolves once, 15 minutes later.
    assert!(feed(&mut e, Metric::Glucose, 30 * MIN, 95.0).is_empty());
    let fx = e.handle(Input::Tick, 45 * MIN);
    assert!(
        matches!(&fx[..], [Effect::Resolve { rule_id, .. }] if rule_id == "glucose-low"),
        "{fx:?}"
    );
}

#[test]
fn an_episode_is_acknowledged_and_resolved_by_its_alerts_rule() {
    let mut e = Engine::new(Settings::default(), Arc::new(CarePlan::default_plan()));
    e.add_patient(pid(), None, 0);
    feed(&mut e, Metric::Glucose, 0, 65.0);
    feed(&mut e, Metric::Glucose, MIN, 50.0);
    let ack = Input::Acknowledged {
        patient: &pid(),
        rule_id: "glucose-low",
    };
    e.handle(ack, 2 * MIN);
    assert!(
        e.handle(Input::Tick, 60 * MIN).is_empty(),
        "acknowledged: no escalation"
    );
    // Resolved by a clinician while very low: silent until glucose recovers.
    let resolved = Input::Resolved {
        patient: &pid(),
        rule_id: "glucose-low",
    };
    e.handle(resolved, 61 * MIN);
    assert!(feed(&mut e, Metric::Glucose, 62 * MIN, 48.0).is_empty());
    feed(&mut e, Metric::Glucose, 70 * MIN, 100.0);
    // A new episode that starts very low opens with the very-low rule, at high.
    let fx = feed(&mut e, Metric::Glucose, 80 * MIN, 50.0);
    assert!(
        matches!(&fx[..], [Effect::Open { rule_id, severity: Severity::High, .. }] if rule_id == "glucose-very-low"),
        "{fx:?}"
    );
}

#[test]
fn two_alerts_of_one_episode_restored_leave_the_first_open() {
    let mut e = default_engine();
    for (rule_id, severity) in [
        ("glucose-low", Severity::Medium),
        ("glucose-very-low", Severity::High),
    ] {
        e.restore(OpenAlert {
            patient: pid(),
            rule_id: rule_id.into(),
            severity,
            acknowledged: false,
            escalations: 0,
            since_ms: 0,
        });
    }
    let fx = e.handle(Input::Tick, MIN);
    assert!(
        matches!(&fx[..], [Effect::Resolve { rule_id, reason, .. }]
            if rule_id == "glucose-very-low" && reason == "another alert of the same episode stays open"),
        "{fx:?}"
    );
    // The one left is the episode's: a very low reading raises it.
    let fx = feed(&mut e, Metric::Glucose, 2 * MIN, 50.0);
    assert!(
        matches!(&fx[..], [Effect::Raise { rule_id, severity: Severity::High, .. }] if rule_id == "glucose-low"),
        "{fx:?}"
    );
}
