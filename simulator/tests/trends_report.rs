//! The trend report's arithmetic on a case small enough to check by hand: two heart-failure
//! scenario patients, two stable patients, and a known list of alerts.

use vigil_sim::trends::cases::{DAY_MS, MONTH_MS, Programme, Subject, Truth};
use vigil_sim::trends::report::{Alert, Kind, RULES, Summary, rows};

const T: i64 = 1_767_571_200_000;
const H: i64 = 3_600_000;

fn alert(patient: &str, rule_id: &str, opened_ms: i64) -> Alert {
    Alert {
        patient: patient.into(),
        rule_id: rule_id.into(),
        opened_ms,
        message: String::new(),
    }
}

#[test]
fn sensitivity_false_alerts_and_lead_time_add_up() {
    let truth = Truth {
        onset_ms: T + 10 * DAY_MS,
        significant_ms: T + 15 * DAY_MS,
        end_ms: T + 20 * DAY_MS,
    };
    let scenario = |patient: &str| Subject {
        patient: patient.into(),
        programme: Programme::HeartFailure,
        truth: Some(truth),
        count_from_ms: T,
        end_ms: truth.end_ms,
    };
    // One patient-month each: 30.4375 days.
    let month = MONTH_MS as i64;
    let stable = |patient: &str| Subject {
        patient: patient.into(),
        programme: Programme::HeartFailure,
        truth: None,
        count_from_ms: T,
        end_ms: T + month,
    };
    let subjects = [scenario("a"), scenario("b"), stable("s1"), stable("s2")];
    let alerts = [
        // a: macd on day 12 (2 days in, 3 before significant), the fixed rule on day 14.
        alert("a", "weight-macd", T + 12 * DAY_MS),
        alert("a", "weight-gain", T + 14 * DAY_MS),
        // a: an earlier macd alert before the onset counts as neither a catch nor false.
        alert("a", "weight-macd", T + 5 * DAY_MS),
        // b: macd after the scenario's end (missed); the fixed rule on day 16 (6 days in).
        alert("b", "weight-macd", T + 21 * DAY_MS),
        alert("b", "weight-gain", T + 16 * DAY_MS),
        // Stable: three macd alerts in s1, one in s2 and one past s2's counted time.
        alert("s1", "weight-macd", T + DAY_MS),
        alert("s1", "weight-macd", T + 2 * DAY_MS),
        alert("s1", "weight-macd", T + month),
        alert("s2", "weight-macd", T + 3 * H),
        alert("s2", "weight-macd", T + month + 1),
        // Another programme's rule on these patients is not this rule's.
        alert("s2", "bp-systolic-drift", T + DAY_MS),
    ];
    let rows = rows(&RULES[..2], &subjects, &alerts);
    let (macd, gain) = (&rows[0], &rows[1]);

    assert_eq!(macd.rule_id, "weight-macd");
    assert_eq!(macd.kind, Kind::Trend);
    assert_eq!((macd.caught, macd.scenarios), (1, 2));
    assert_eq!(macd.sensitivity, 0.5);
    assert_eq!(macd.alerts_before_onset, 1);
    // 4 alerts in 2 patient-months.
    assert_eq!((macd.false_alerts, macd.stable_patients), (4, 2));
    assert!((macd.patient_months - 2.0).abs() < 1e-9);
    assert!((macd.false_per_patient_month - 2.0).abs() < 1e-9);
    let d = |days: i64| days * DAY_MS;
    assert_eq!(
        macd.detection_after_onset,
        Some(Summary {
            n: 1,
            median_ms: d(2) as f64,
            min_ms: d(2),
            max_ms: d(2)
        })
    );
    assert_eq!(macd.before_significant.unwrap().median_ms, d(3) as f64);
    // Lead over the patients both caught: a only, 2 days earlier.
    assert_eq!(macd.lead_vs_fixed.unwrap().n, 1);
    assert_eq!(macd.lead_vs_fixed.unwrap().median_ms, d(2) as f64);
    assert_eq!(
        (macd.caught_only_by_this, macd.caught_only_by_fixed),
        (0, 1)
    );

    assert_eq!((gain.caught, gain.scenarios), (2, 2));
    assert_eq!(gain.sensitivity, 1.0);
    assert_eq!((gain.false_alerts, gain.false_per_patient_month), (0, 0.0));
    // Detection 4 and 6 days after onset: median 5; before significant 1 and −1 days.
    let det = gain.detection_after_onset.unwrap();
    assert_eq!(
        (det.median_ms, det.min_ms, det.max_ms),
        (d(5) as f64, d(4), d(6))
    );
    let sig = gain.before_significant.unwrap();
    assert_eq!((sig.median_ms, sig.min_ms, sig.max_ms), (0.0, -d(1), d(1)));
    assert!(gain.lead_vs_fixed.is_none());
}
