//! `vigil::alerts::rules::CarePlan::parse` on arbitrary bytes, and the alert engine driven by
//! every plan that parses.
//!
//! A plan that parses must validate, survive a serialise/parse round trip unchanged, and run
//! in the engine without panicking on readings across each metric's plausible range and time
//! jumps in both directions; the engine must never open a second alert for a rule whose alert
//! is still unresolved.
#![no_main]

use std::collections::HashSet;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use vigil::alerts::engine::{Effect, Engine, Input, Settings};
use vigil::alerts::rules::CarePlan;
use vigil::domain::{DeviceId, Metric, Observation, PatientId};
use vigil_fuzz::NOW_MS;

fuzz_target!(|data: &[u8]| {
    let Ok(plan) = CarePlan::parse(data) else {
        return;
    };
    plan.validate().expect("a parsed plan is valid");
    let again = CarePlan::parse(&serde_json::to_vec(&plan).unwrap()).expect("round trip");
    assert_eq!(again, plan);

    let patient = PatientId::parse("p").unwrap();
    let device = DeviceId::parse("d").unwrap();
    let mut engine = Engine::new(Settings::default(), Arc::new(CarePlan::default_plan()));
    engine.add_patient(patient.clone(), Some(Arc::new(plan)), NOW_MS);
    let mut open: HashSet<String> = HashSet::new();
    let mut check = |effects: Vec<Effect>| {
        for e in effects {
            match e {
                Effect::Open { rule_id, .. } => {
                    assert!(open.insert(rule_id), "a second alert for an unresolved rule")
                }
                Effect::Resolve { rule_id, .. } => {
                    assert!(open.remove(&rule_id), "resolving an alert that is not open")
                }
                Effect::Raise { rule_id, .. } | Effect::Escalate { rule_id, .. } => {
                    assert!(open.contains(&rule_id), "changing an alert that is not open")
                }
            }
        }
    };
    let mut now = NOW_MS;
    for (i, b) in data.iter().enumerate().take(256) {
        let metric = Metric::ALL[usize::from(*b) % Metric::ALL.len()];
        let (lo, hi) = metric.plausible_range();
        let value = lo + (hi - lo) * f64::from(b.wrapping_mul(37)) / 255.0;
        // Mostly forward in time, sometimes backward (late readings), sometimes far ahead.
        now += match b % 7 {
            0 => -30_000,
            1 => 3_600_000,
            _ => 1_000 * i64::from(*b),
        };
        let o = Observation {
            patient_id: patient.clone(),
            device_id: device.clone(),
            metric,
            value,
            time_ms: now,
        };
        check(engine.handle(Input::Observation(&o), now));
        if i % 5 == 0 {
            check(engine.handle(Input::Tick, now));
        }
    }
});
