//! The population figures on a small known cohort.

use super::*;

fn month(
    id: &str,
    days: u32,
    periods: &[u16],
    minutes: u32,
    alerts: Vec<AlertFact>,
) -> PatientMonth {
    PatientMonth {
        patient_id: id.into(),
        enrolled_days: days,
        period_days: periods.to_vec(),
        minutes,
        interactive: minutes >= 20,
        alerts,
    }
}

fn alert(rule: &str, severity: Severity, opened_min: i64, ack_after_min: Option<i64>) -> AlertFact {
    AlertFact {
        rule_id: rule.into(),
        severity,
        opened_ms: opened_min * 60_000,
        acknowledged_ms: ack_after_min.map(|a| (opened_min + a) * 60_000),
    }
}

#[test]
fn a_cohorts_figures_add_up() {
    let cohort = [
        month(
            "a",
            30,
            &[20],
            45,
            vec![
                alert("spo2-low", Severity::High, 0, Some(4)),
                alert("spo2-low", Severity::High, 100, Some(10)),
            ],
        ),
        month(
            "b",
            30,
            &[16],
            12,
            vec![alert("weight-gain", Severity::Medium, 0, Some(60))],
        ),
        month(
            "c",
            20,
            &[3],
            0,
            vec![alert("spo2-low", Severity::High, 0, None)],
        ),
        month("d", 20, &[], 25, Vec::new()),
    ];
    let f = figures(&cohort);
    assert_eq!(f.patients, 4);
    assert_eq!(f.patient_days, 100);
    assert_eq!((f.periods, f.periods_16), (3, 2));
    assert_eq!(f.share_16, Some(0.667));
    assert_eq!(f.alerts, 4);
    assert_eq!(
        f.alert_rates,
        vec![
            RuleRate {
                rule_id: "spo2-low".into(),
                alerts: 3,
                per_100_patient_days: 3.0
            },
            RuleRate {
                rule_id: "weight-gain".into(),
                alerts: 1,
                per_100_patient_days: 1.0
            },
        ]
    );
    // Acknowledged after 4, 10 and 60 minutes: nearest-rank p50 10, p90 60.
    assert_eq!(
        f.ack_minutes,
        Percentiles {
            count: 3,
            p50: Some(10.0),
            p90: Some(60.0)
        }
    );
    assert_eq!(f.unacknowledged, 1);
    assert_eq!(
        f.risk_tiers,
        RiskTiers {
            high: 2,
            medium: 1,
            low: 0,
            none: 1
        }
    );
    assert_eq!(f.minutes_total, 82);
    assert_eq!(f.minutes_per_patient, Some(20.5));
    assert_eq!(
        f.minutes_bands,
        MinutesBands {
            under_10: 1,
            from_10_to_19: 1,
            from_20_to_39: 1,
            from_40: 1
        }
    );
    assert_eq!(f.interactive_patients, 2);
}

#[test]
fn an_empty_cohort_has_no_shares_or_percentiles() {
    let f = figures(&[]);
    assert_eq!(f.patients, 0);
    assert_eq!(f.share_16, None);
    assert_eq!(f.minutes_per_patient, None);
    assert_eq!(f.ack_minutes.p50, None);
    assert!(f.alert_rates.is_empty());
}

#[test]
fn percentiles_are_nearest_rank() {
    let v: Vec<f64> = (1..=10).map(f64::from).collect();
    assert_eq!(percentile(&v, 0.5), Some(5.0));
    assert_eq!(percentile(&v, 0.9), Some(9.0));
    assert_eq!(percentile(&[7.0], 0.9), Some(7.0));
}
