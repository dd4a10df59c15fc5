//! The messages table of docs/alerts.md ("Messages"), checked row by row: each case below
//! makes its message through the engine, as a live reading would, and must say exactly what
//! the table's row says.

use std::sync::Arc;

use super::{Effect, Engine, Input, Settings};
use crate::alerts::rules::CarePlan;
use crate::domain::display::{GlucoseUnit, TemperatureUnit};
use crate::domain::{DeviceId, DisplayUnits, Metric, Observation, PatientId};

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;

const DOCS: &str = include_str!("../../../docs/alerts.md");

/// The table's rows: (kind, message).
fn table() -> Vec<(String, String)> {
    let start = DOCS
        .find("<!-- messages:start -->")
        .expect("the table's start marker");
    let end = DOCS
        .find("<!-- messages:end -->")
        .expect("the table's end marker");
    DOCS[start..end]
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split(" | ").map(str::trim).collect();
            assert_eq!(cells.len(), 3, "three cells: {l}");
            let unquote = |c: &str| c.trim_matches('`').to_owned();
            (unquote(cells[0]), unquote(cells[2]))
        })
        .collect()
}

fn obs(metric: Metric, t: i64, v: f64) -> Observation {
    Observation {
        patient_id: PatientId::parse("p1").unwrap(),
        device_id: DeviceId::parse("d1").unwrap(),
        metric,
        value: v,
        time_ms: t,
    }
}

/// One case: its plan (`None`: the default plan), the clinic's units and what happens.
struct Case {
    plan: Option<&'static str>,
    units: DisplayUnits,
    /// Batches of readings, each fed as the shell feeds a committed batch.
    batches: Vec<Vec<(Metric, i64, f64)>>,
    /// Ticks after the readings.
    ticks: Vec<i64>,
}

const MGDL: DisplayUnits = DisplayUnits {
    glucose: GlucoseUnit::MgDl,
    temperature: TemperatureUnit::Celsius,
};
const MMOL: DisplayUnits = DisplayUnits {
    glucose: GlucoseUnit::MmolL,
    temperature: TemperatureUnit::Celsius,
};
const FAHRENHEIT: DisplayUnits = DisplayUnits {
    glucose: GlucoseUnit::MgDl,
    temperature: TemperatureUnit::Fahrenheit,
};

/// The last message an alert was opened or raised with.
fn run(c: Case) -> String {
    let settings = Settings {
        escalate_after_s: u32::MAX,
        units: c.units,
        ..Settings::default()
    };
    let mut e = Engine::new(settings, Arc::new(CarePlan::default_plan()));
    let plan = c
        .plan
        .map(|p| Arc::new(CarePlan::parse(p.as_bytes()).unwrap()));
    e.add_patient(PatientId::parse("p1").unwrap(), plan, 0);
    let mut said = None;
    let mut note = |fx: &[Effect]| {
        for f in fx {
            if let Effect::Open { message, .. } | Effect::Raise { message, .. } = f {
                said = Some(message.clone());
            }
        }
    };
    for batch in c.batches {
        let mut fx = Vec::new();
        for (m, t, v) in batch {
            fx.extend(e.handle(Input::Observation(&obs(m, t, v)), t));
        }
        e.complete_messages(&mut fx);
        note(&fx);
    }
    for t in c.ticks {
        note(&e.handle(Input::Tick, t));
    }
    said.expect("an alert opened or raised")
}

fn one(m: Metric, t: i64, v: f64) -> Vec<(Metric, i64, f64)> {
    vec![(m, t, v)]
}

fn cuff(t: i64, sys: f64, dia: f64) -> Vec<(Metric, i64, f64)> {
    vec![(Metric::BpSystolic, t, sys), (Metric::BpDiastolic, t, dia)]
}

fn daily(weights: &[f64]) -> Vec<Vec<(Metric, i64, f64)>> {
    weights
        .iter()
        .enumerate()
        .map(|(d, w)| one(Metric::BodyWeight, d as i64 * DAY + 7 * HOUR, *w))
        .collect()
}

/// The cases, in the table's order, with the kind each row names.
fn cases() -> Vec<(&'static str, Case)> {
    let t0 = 1_000 * MIN;
    let forecast = |units| Case {
        plan: Some(r#"{"rules":[{"id":"glucose-forecast","kind":"forecast"}]}"#),
        units,
        batches: vec![
            one(Metric::Glucose, t0, 121.0),
            one(Metric::Glucose, t0 + 5 * MIN, 110.0),
            one(Metric::Glucose, t0 + 10 * MIN, 92.0),
        ],
        ticks: vec![],
    };
    // The stable weeks of `trend::drift`'s tests (mean 80.0, SD 0.3), then the rise.
    let mut drift = [79.7, 80.3, 79.7, 80.3, 79.7, 80.3, 80.0].repeat(2);
    drift.extend([80.3, 81.1, 82.0]);
    vec![
        (
            "threshold",
            Case {
                plan: Some(
                    r#"{"rules":[{"id":"spo2-low","kind":"threshold","metric":"spo2","op":"<","value":90,"for_s":60,"severity":"high"}]}"#,
                ),
                units: MGDL,
                batches: vec![
                    one(Metric::Spo2, 0, 88.0),
                    one(Metric::Spo2, 30_000, 87.0),
                    one(Metric::Spo2, MIN, 86.0),
                ],
                ticks: vec![],
            },
        ),
        (
            "threshold",
            Case {
                plan: None,
                units: MGDL,
                batches: vec![cuff(0, 208.0, 124.0)],
                ticks: vec![],
            },
        ),
        (
            "threshold",
            Case {
                plan: None,
                units: MGDL,
                batches: vec![cuff(0, 196.0, 96.0)],
                ticks: vec![],
            },
        ),
        (
            "threshold",
            Case {
                plan: None,
                units: MGDL,
                batches: vec![one(Metric::Glucose, 0, 65.0)],
                ticks: vec![],
            },
        ),
        (
            "threshold",
            Case {
                plan: None,
                units: MGDL,
                batches: vec![
                    one(Metric::Glucose, 0, 65.0),
                    one(Metric::Glucose, 5 * MIN, 52.0),
                ],
                ticks: vec![],
            },
        ),
        (
            "threshold",
            Case {
                plan: None,
                units: MMOL,
                batches: vec![one(Metric::Glucose, 0, 52.0)],
                ticks: vec![],
            },
        ),
        (
            "threshold",
            Case {
                plan: Some(
                    r#"{"rules":[{"id":"fever","kind":"threshold","metric":"body_temperature","op":">=","value":38,"severity":"medium"}]}"#,
                ),
                units: FAHRENHEIT,
                batches: vec![one(Metric::BodyTemperature, 0, 38.6)],
                ticks: vec![],
            },
        ),
        (
            "rate",
            Case {
                plan: Some(
                    r#"{"rules":[{"id":"weight-gain","kind":"rate","metric":"body_weight","rise":2,"window_h":72,"severity":"medium"}]}"#,
                ),
                units: MGDL,
                batches: vec![
                    one(Metric::BodyWeight, 0, 80.1),
                    one(Metric::BodyWeight, DAY, 82.5),
                ],
                ticks: vec![],
            },
        ),
        (
            "news2",
            Case {
                plan: Some(r#"{"rules":[{"id":"news2","kind":"news2"}]}"#),
                units: MGDL,
                batches: vec![vec![
                    (Metric::RespiratoryRate, 0, 25.0),
                    (Metric::Spo2, 0, 93.0),
                    (Metric::OnOxygen, 0, 0.0),
                    (Metric::BpSystolic, 0, 120.0),
                    (Metric::HeartRate, 0, 95.0),
                    (Metric::Consciousness, 0, 0.0),
                    (Metric::BodyTemperature, 0, 38.5),
                ]],
                ticks: vec![],
            },
        ),
        (
            "news2",
            Case {
                plan: Some(r#"{"rules":[{"id":"news2","kind":"news2"}]}"#),
                units: MGDL,
                batches: vec![one(Metric::Spo2, 0, 90.0)],
                ticks: vec![],
            },
        ),
        (
            "missing",
            Case {
                plan: Some(
                    r#"{"rules":[{"id":"hr-silent","kind":"missing","metric":"heart_rate","after_s":3600,"severity":"low"}]}"#,
                ),
                units: MGDL,
                batches: vec![],
                ticks: vec![HOUR],
            },
        ),
        (
            "drift",
            Case {
                plan: Some(
                    r#"{"rules":[{"id":"weight-drift","kind":"drift","metric":"body_weight","direction":"up","baseline_days":7,"window_days":3,"min_days":7,"k":0.5,"h":4,"min_sd":0.1,"severity":"medium"}]}"#,
                ),
                units: MGDL,
                batches: daily(&drift),
                ticks: vec![],
            },
        ),
        (
            "macd",
            Case {
                plan: Some(
                    r#"{"rules":[{"id":"weight-macd","kind":"macd","fast_days":3,"slow_days":7,"signal_days":3,"margin":0.3,"min_days":7}]}"#,
                ),
                units: MGDL,
                batches: daily(&[80.0, 80.0, 80.0, 80.0, 80.0, 81.0, 82.0, 83.5]),
                ticks: vec![],
            },
        ),
        ("forecast", forecast(MGDL)),
        ("forecast", forecast(MMOL)),
    ]
}

#[test]
fn messages_match_the_table_in_docs_alerts_md() {
    let rows = table();
    let cases = cases();
    assert_eq!(
        rows.len(),
        cases.len(),
        "one case per row of the table: {rows:#?}"
    );
    for (i, ((kind, expected), (case_kind, case))) in rows.into_iter().zip(cases).enumerate() {
        assert_eq!(kind, case_kind, "row {i}: the case is of another kind");
        assert_eq!(run(case), expected, "row {i} ({kind})");
    }
}

#[test]
fn every_rule_kind_has_a_row() {
    let kinds: Vec<String> = table().into_iter().map(|(k, _)| k).collect();
    for k in [
        "threshold",
        "rate",
        "news2",
        "missing",
        "drift",
        "macd",
        "forecast",
    ] {
        assert!(kinds.iter().any(|x| x == k), "no row for {k}");
    }
}
